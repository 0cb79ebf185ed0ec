-- Delivery health: attempts history, incidents (failing periods), the email outbox, and gap
-- records for events that expired undelivered.

alter table delivery_destinations
    add column expired_total bigint not null default 0;

create table delivery_attempts (
    id bigserial primary key,
    subscription_id uuid not null,
    provider text not null,
    at timestamptz not null,
    outcome text not null,
    events integer not null,
    detail text,
    constraint delivery_attempts_destination_fkey foreign key (subscription_id, provider)
        references delivery_destinations (subscription_id, provider) on delete cascade
);

create index delivery_attempts_destination_idx on delivery_attempts (subscription_id, provider, at desc);

-- One open incident per destination at most: the unique index is what makes "one email per
-- incident" hold across any number of workers.
create table incidents (
    id uuid primary key,
    subscription_id uuid not null,
    provider text not null,
    opened_at timestamptz not null,
    reason text not null,
    delivered_at_open bigint not null,
    last_reminder_at timestamptz not null,
    reminders integer not null default 0,
    closed_at timestamptz,
    constraint incidents_destination_fkey foreign key (subscription_id, provider)
        references delivery_destinations (subscription_id, provider) on delete cascade
);

create unique index incidents_one_open_idx on incidents (subscription_id, provider) where closed_at is null;

create table notifications (
    id bigserial primary key,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    -- e.g. "<incident>/failing/<recipient>": a message is queued once, whatever retries happen
    dedupe_key text not null,
    kind text not null,
    recipient text not null,
    subject text not null,
    text_body text not null,
    html_body text not null,
    created_at timestamptz not null,
    next_attempt_at timestamptz not null,
    sending_until timestamptz,
    attempts integer not null default 0,
    last_error text,
    -- 'sent' through SMTP, or 'logged' when no SMTP server is configured
    sent_at timestamptz,
    sent_via text,
    constraint notifications_dedupe_key unique (dedupe_key),
    constraint notifications_kind_check check (kind in ('failing', 'reminder', 'recovered', 'expired'))
);

create index notifications_due_idx on notifications (next_attempt_at) where sent_at is null;

create table delivery_gaps (
    id bigserial primary key,
    subscription_id uuid not null,
    provider text not null,
    expired_events bigint not null,
    oldest_event_at timestamptz not null,
    newest_event_at timestamptz not null,
    recorded_at timestamptz not null,
    constraint delivery_gaps_destination_fkey foreign key (subscription_id, provider)
        references delivery_destinations (subscription_id, provider) on delete cascade
);

create index delivery_gaps_destination_idx on delivery_gaps (subscription_id, provider, recorded_at desc);
