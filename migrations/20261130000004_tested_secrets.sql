-- Secrets that just passed Test Connection, held so that Save changes needs no retyping: sealed,
-- bound to the session that tested them and to the addresses they were tested against, and
-- only for ten minutes.
create table tested_secrets (
    subscription_id uuid not null references subscriptions (id) on delete cascade,
    session_digest bytea not null,
    provider text not null,
    -- address field -> value, as tested
    addresses jsonb not null,
    -- a JSON object field -> secret, sealed under the master key
    key_id text not null,
    nonce bytea not null,
    ciphertext bytea not null,
    expires_at timestamptz not null,
    constraint tested_secrets_pkey primary key (subscription_id, session_digest, provider)
);
