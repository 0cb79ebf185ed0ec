-- Ingest that never waits on another writer: the API inserts events into the inbox, one plain
-- insert with no lock shared with other writers and no NOTIFY; a sequencer per subscription
-- (serialised by the subscription's counter row lock) moves them into audit_events in batches,
-- assigning seq (gap-free, in the order they are taken), the hash chain and recorded_at.
--
-- Existing events, cursors and chains stay as they are: audit_events keeps its rows, keys and
-- columns (every row sequenced), and subscriptions keep last_seq / last_hash, which the
-- sequencer continues from.
create table audit_inbox (
    subscription_id uuid not null,
    -- The event's id: the idempotency key, also against an id still waiting here.
    id uuid not null,
    -- Ingest order; the sequencer takes the visible rows of a subscription in this order.
    ingest_no bigint generated always as identity,
    event_id integer not null,
    occurred_at timestamptz not null,
    actor text,
    details jsonb not null,
    received_at timestamptz not null default now(),
    primary key (subscription_id, id)
);
-- No foreign key to subscriptions: its check would key-share lock the subscription row for
-- every ingested row (a multixact hot spot under concurrent ingest). The sequencer drops the
-- rows of a subscription that no longer exists.
create index audit_inbox_order_idx on audit_inbox (subscription_id, ingest_no);
-- A queue table: every row is deleted within moments. Vacuum it by dead rows, not by a share of
-- a table that is nearly always empty, so scans of its index do not walk dead entries.
alter table audit_inbox set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                             autovacuum_vacuum_cost_delay = 0);

-- recorded_at is assigned by the sequencer and never goes backwards within a subscription, so
-- retention by recorded_at always cuts a prefix of the log.
alter table subscriptions add column last_recorded_at timestamptz;
update subscriptions s
set last_recorded_at = (select max(e.recorded_at) from audit_events e where e.subscription_id = s.id);

-- Uncontended ingest numbers its events in its own transaction (one write per event instead of
-- two) and must not NOTIFY there: it sets cloudpki.quiet_page for that transaction and
-- announces the change after commit.
create or replace function cloudpki_subscription_changed() returns trigger
language plpgsql as $$
begin
    if current_setting('cloudpki.quiet_page', true) = 'on' then
        return null;
    end if;
    perform pg_notify('cloudpki_page', new.id::text);
    return null;
end
$$;
