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

create function cloudpki_auth_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('cloudpki_auth', '');
    return null;
end
$$;

create trigger siem_settings_page after insert or update or delete on siem_settings
    for each row execute function cloudpki_page_changed();
create trigger siem_provider_fields_page after insert or update or delete on siem_provider_fields
    for each row execute function cloudpki_page_changed();
create trigger siem_secrets_page after insert or update or delete on siem_secrets
    for each row execute function cloudpki_page_changed();
create trigger siem_settings_history_page after insert or update or delete on siem_settings_history
    for each row execute function cloudpki_page_changed();
create trigger delivery_destinations_page after insert or update or delete on delivery_destinations
    for each row execute function cloudpki_page_changed();
create trigger delivery_parked_page after insert or update or delete on delivery_parked
    for each row execute function cloudpki_page_changed();
create trigger delivery_attempts_page after insert or update or delete on delivery_attempts
    for each row execute function cloudpki_page_changed();
create trigger delivery_gaps_page after insert or update or delete on delivery_gaps
    for each row execute function cloudpki_page_changed();
create trigger notifications_page after insert or update or delete on notifications
    for each row execute function cloudpki_page_changed();
create trigger subscriptions_page after update on subscriptions
    for each row execute function cloudpki_subscription_changed();

create trigger sessions_auth after update or delete on sessions
    for each row execute function cloudpki_auth_changed();
create trigger users_auth after update or delete on users
    for each row execute function cloudpki_auth_changed();
create trigger memberships_auth after insert or update or delete on memberships
    for each row execute function cloudpki_auth_changed();
