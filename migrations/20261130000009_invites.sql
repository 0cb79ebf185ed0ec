-- Invitations to a subscription: a one-time link (its SHA-256 stored), valid 7 days.
create table invites (
    id uuid primary key,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    email text not null,
    role text not null check (role in ('admin', 'reader')),
    token_digest bytea not null,
    invited_by_email text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    accepted_at timestamptz,
    constraint invites_digest_key unique (token_digest)
);
create index invites_subscription_idx on invites (subscription_id);

alter table notifications drop constraint notifications_kind_check;
alter table notifications add constraint notifications_kind_check
    check (kind in ('failing', 'reminder', 'recovered', 'expired', 'invite'));
