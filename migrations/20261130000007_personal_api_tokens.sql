-- Personal API tokens for the REST API: each acts as its user, with that user's roles.
create table personal_tokens (
    id uuid primary key,
    user_id uuid not null references users (id) on delete cascade,
    name text not null,
    -- SHA-256 of the token; the token itself is shown once and never stored
    token_digest bytea not null,
    created_at timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at timestamptz,
    constraint personal_tokens_digest_key unique (token_digest)
);
create index personal_tokens_user_idx on personal_tokens (user_id);
