-- The portal keeps what the settings page shows in memory (web::page_cache) and drops it when
-- the database says it changed. These triggers say so at commit, whoever writes: the page, the
-- REST API, the forwarder, the notifier, the CLI or an operator's psql.
--
--   cloudpki_page  payload: a subscription id. Its settings, secrets, history or delivery
--                  state changed (including a new event: subscriptions.last_seq moved).
--   cloudpki_auth  no payload. A session ended, a user or a membership changed: every cached
--                  session and membership is dropped (rare: sign-in, sign-out, invites, roles).
--
-- NOTIFY with the same channel and payload is sent once per transaction, so a statement that
-- touches many rows of one subscription costs one message.

create function cloudpki_page_changed() returns trigger
language plpgsql as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        perform pg_notify('cloudpki_page', old.subscription_id::text);
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        perform pg_notify('cloudpki_page', new.subscription_id::text);
    end if;
    return null;
end
$$;

create function cloudpki_subscription_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('cloudpki_page', new.id::text);
    return null;
end
$$;

-- TRUNCATE fires no row trigger: a payload that is not a subscription id drops every page.
create function cloudpki_page_truncated() returns trigger
language plpgsql as $$
begin
    perform pg_notify('cloudpki_page', '*');
    return null;
end
$$;

create function cloudpki_auth_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('cloudpki_auth', '');
    return null;
end
$$;

-- One list of the tables the settings page reads by subscription id: each gets a row trigger,
-- and a statement trigger for TRUNCATE (which fires no row trigger).
do $$
declare
    t text;
begin
    foreach t in array array['siem_settings', 'siem_provider_fields', 'siem_secrets',
                             'siem_settings_history', 'delivery_destinations', 'delivery_parked',
                             'delivery_attempts', 'delivery_gaps', 'notifications']
    loop
        execute format('create trigger %I after insert or update or delete on %I
                            for each row execute function cloudpki_page_changed()',
                       t || '_page', t);
        execute format('create trigger %I after truncate on %I
                            for each statement execute function cloudpki_page_truncated()',
                       t || '_truncated', t);
    end loop;
    foreach t in array array['sessions', 'users', 'memberships']
    loop
        execute format('create trigger %I after truncate on %I
                            for each statement execute function cloudpki_auth_changed()',
                       t || '_truncated', t);
    end loop;
end
$$;

create trigger subscriptions_page after update on subscriptions
    for each row execute function cloudpki_subscription_changed();
-- Kept memberships carry the subscription's name.
create trigger subscriptions_renamed_auth after update of name on subscriptions
    for each row when (old.name is distinct from new.name)
    execute function cloudpki_auth_changed();
create trigger subscriptions_truncated after truncate on subscriptions
    for each statement execute function cloudpki_page_truncated();
create trigger audit_events_truncated after truncate on audit_events
    for each statement execute function cloudpki_page_truncated();

create trigger sessions_auth after update or delete on sessions
    for each row execute function cloudpki_auth_changed();
create trigger users_auth after update or delete on users
    for each row execute function cloudpki_auth_changed();
create trigger memberships_auth after insert or update or delete on memberships
    for each row execute function cloudpki_auth_changed();
