-- Subscriptions, users, their memberships, sign-in sessions, login throttling and first-run setup.

create table subscriptions (
    id uuid primary key,
    name text not null,
    created_at timestamptz not null default now(),
    constraint subscriptions_name_not_blank check (length(btrim(name)) > 0)
);

create table users (
    id uuid primary key,
    -- stored lower-cased by the application
    email text not null,
    password_hash text not null,
    created_at timestamptz not null default now(),
    constraint users_email_key unique (email)
);

create table memberships (
    user_id uuid not null references users (id) on delete cascade,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    role text not null,
    created_at timestamptz not null default now(),
    constraint memberships_pkey primary key (user_id, subscription_id),
    constraint memberships_role_check check (role in ('admin', 'reader'))
);

create index memberships_subscription_idx on memberships (subscription_id);

-- The cookie carries a random token; only its SHA-256 is stored, so a database leak does not
-- hand out live sessions.
create table sessions (
    token_digest bytea primary key,
    user_id uuid not null references users (id) on delete cascade,
    csrf_token text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);

create index sessions_expires_idx on sessions (expires_at);
create index sessions_user_idx on sessions (user_id);

create table login_failures (
    id bigserial primary key,
    email text not null,
    client_ip text not null,
    failed_at timestamptz not null default now()
);

create index login_failures_email_idx on login_failures (email, failed_at);
create index login_failures_ip_idx on login_failures (client_ip, failed_at);

create table setup_tokens (
    token_digest bytea primary key,
    created_at timestamptz not null default now(),
    used_at timestamptz
);
