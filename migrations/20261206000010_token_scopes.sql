-- Personal API tokens carry a scope: `read` (GET only) or `write`, optionally limited to one
-- subscription, and may expire. Tokens made before keep what they could do: write, every
-- subscription of their user, no end.
alter table personal_tokens
    add column scope text not null default 'write',
    add column subscription_id uuid references subscriptions (id) on delete cascade,
    add column expires_at timestamptz,
    add constraint personal_tokens_scope_check check (scope in ('read', 'write'));
