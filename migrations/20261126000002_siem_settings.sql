-- SIEM export settings of a subscription: the switch and the chosen provider, each provider's
-- plain fields, its sealed secrets, and the history of every change (never a secret).

create table siem_settings (
    subscription_id uuid primary key references subscriptions (id) on delete cascade,
    enabled boolean not null default false,
    provider text not null,
    updated_at timestamptz not null default now(),
    updated_by uuid references users (id) on delete set null,
    updated_by_email text not null
);

create table siem_provider_fields (
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    provider text not null,
    fields jsonb not null,
    constraint siem_provider_fields_pkey primary key (subscription_id, provider)
);

-- AES-256-GCM under the master key `key_id`; associated data "<subscription>/<provider>/<name>".
create table siem_secrets (
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    provider text not null,
    name text not null,
    key_id text not null,
    nonce bytea not null,
    ciphertext bytea not null,
    -- the last 4 characters, shown so people can tell keys apart
    hint text not null,
    updated_at timestamptz not null default now(),
    constraint siem_secrets_pkey primary key (subscription_id, provider, name)
);

create table siem_settings_history (
    id bigserial primary key,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    user_id uuid references users (id) on delete set null,
    user_email text not null,
    outcome text not null,
    changes jsonb not null,
    at timestamptz not null default now(),
    constraint siem_settings_history_outcome_check check (outcome in ('saved', 'denied'))
);

create index siem_settings_history_subscription_idx on siem_settings_history (subscription_id, at desc);
