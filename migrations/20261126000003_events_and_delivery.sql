-- Audit events, ingestion tokens, the delivery queue and each destination's delivery state.

create table api_tokens (
    id uuid primary key,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    -- SHA-256 of the token; the token itself is shown once and never stored
    token_digest bytea not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    constraint api_tokens_digest_key unique (token_digest)
);

-- The audit trail: every recorded event, kept whether or not it is exported.
create table audit_events (
    id uuid primary key,
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    event_id integer not null,
    occurred_at timestamptz not null,
    recorded_at timestamptz not null default now(),
    actor text,
    details jsonb not null default '{}'::jsonb
);

create index audit_events_subscription_idx on audit_events (subscription_id, recorded_at);

-- One row per destination that was enabled when the subscription's SIEM export was saved on.
create table delivery_destinations (
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    provider text not null,
    status text not null default 'healthy',
    -- the destination is not tried again before this time (backoff, Retry-After)
    next_attempt_at timestamptz not null default now(),
    -- a worker holds the destination until then; no transaction spans the HTTP call
    leased_until timestamptz,
    lease_owner uuid,
    consecutive_failures integer not null default 0,
    failing_since timestamptz,
    last_error text,
    last_error_at timestamptz,
    last_success_at timestamptz,
    delivered_total bigint not null default 0,
    duplicates_total bigint not null default 0,
    constraint delivery_destinations_pkey primary key (subscription_id, provider),
    constraint delivery_destinations_status_check check (status in ('healthy', 'failing'))
);

create index delivery_destinations_due_idx on delivery_destinations (next_attempt_at);

-- Work still to do: a row per (event, destination) until the SIEM accepted it.
-- Delivered rows are deleted (the event stays in audit_events), so the queue holds the backlog
-- only and its cost does not grow with history.
create table delivery_queue (
    id bigserial primary key,
    event_uuid uuid not null references audit_events (id) on delete cascade,
    subscription_id uuid not null,
    provider text not null,
    state text not null default 'pending',
    attempts integer not null default 0,
    -- true while a worker sends it; still true at the next claim means that worker died
    -- mid-send, so the SIEM may already have it: the resend is counted as a possible duplicate
    in_flight boolean not null default false,
    parked_reason text,
    parked_at timestamptz,
    enqueued_at timestamptz not null default now(),
    constraint delivery_queue_state_check check (state in ('pending', 'parked')),
    constraint delivery_queue_destination_fkey foreign key (subscription_id, provider)
        references delivery_destinations (subscription_id, provider) on delete cascade,
    constraint delivery_queue_event_destination_key unique (event_uuid, provider)
);

create index delivery_queue_pending_idx on delivery_queue (subscription_id, provider, id)
    where state = 'pending';
