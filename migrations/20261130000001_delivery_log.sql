-- The delivery log: events carry a gap-free `seq` per subscription, and each destination keeps a
-- cursor (the last `seq` it has settled) instead of one queue row per event and destination.
-- Every delivery table is keyed by `subscription_id` first, so the schema can be distributed by
-- subscription (Citus) when one primary is no longer enough.

-- The per-subscription counter: recording takes this row's lock, so `seq` order is commit order.
alter table subscriptions
    add column last_seq bigint not null default 0;

-- Number the events already recorded, in recording order.
alter table audit_events
    add column seq bigint;

with numbered as (
    select id, row_number() over (partition by subscription_id order by recorded_at, id) as n
    from audit_events
)
update audit_events e set seq = numbered.n from numbered where numbered.id = e.id;

update subscriptions s
set last_seq = coalesce((select max(e.seq) from audit_events e where e.subscription_id = s.id), 0);

alter table audit_events
    alter column seq set not null;

-- Each destination's cursor and the work a holder has in flight beyond it.
alter table delivery_destinations
    -- every event with seq <= cursor is settled (delivered, parked or expired)
    add column cursor bigint not null default 0,
    -- the highest seq a holder handed to the SIEM; above the cursor it marks possible duplicates
    add column inflight_to bigint not null default 0,
    -- the subscription's last seq when export to this destination was switched off: what was
    -- recorded after it is not owed to this destination
    add column off_at_seq bigint,
    -- the destination asked to stop (webhook 410): nothing is sent, events are kept
    add column paused_reason text,
    -- resends after a takeover and rejections that were the destination's fault
    add column takeovers_total bigint not null default 0,
    add column refusals_total bigint not null default 0,
    add constraint delivery_destinations_inflight_check check (inflight_to >= 0 and cursor >= 0);

-- Events the log cannot deliver in order: refused by the SIEM (parked) or waiting to be sent out
-- of order (retry of parked events, rows carried over from the old queue).
create table delivery_parked (
    subscription_id uuid not null,
    provider text not null,
    seq bigint not null,
    state text not null,
    reason text,
    parked_at timestamptz,
    -- a holder is sending this row; still true at the next read means that holder died mid-send
    in_flight boolean not null default false,
    constraint delivery_parked_pkey primary key (subscription_id, provider, seq),
    constraint delivery_parked_state_check check (state in ('parked', 'retry')),
    constraint delivery_parked_destination_fkey foreign key (subscription_id, provider)
        references delivery_destinations (subscription_id, provider) on delete cascade
);

create index delivery_parked_retry_idx on delivery_parked (subscription_id, provider, seq)
    where state = 'retry';

-- Carry the old queue over: nothing pending is lost, nothing delivered is sent again. Pending
-- rows become out-of-order retries, parked rows stay parked, and each cursor starts at the
-- subscription's last seq.
insert into delivery_parked (subscription_id, provider, seq, state, reason, parked_at)
select q.subscription_id, q.provider, e.seq,
       case when q.state = 'parked' then 'parked' else 'retry' end,
       q.parked_reason, q.parked_at
from delivery_queue q join audit_events e on e.id = q.event_uuid;

update delivery_destinations d
set cursor = s.last_seq, inflight_to = s.last_seq,
    off_at_seq = case when coalesce(ss.enabled and ss.provider = d.provider, false)
                      then null else s.last_seq end,
    paused_reason = d.disabled_reason
from subscriptions s left join siem_settings ss on ss.subscription_id = s.id
where s.id = d.subscription_id;

-- A destination that said it is gone is paused now, with export left on.
update siem_settings ss set enabled = true
from delivery_destinations d
where d.subscription_id = ss.subscription_id and d.provider = ss.provider
  and d.disabled_reason is not null;

update delivery_destinations set off_at_seq = null where paused_reason is not null;

alter table delivery_destinations
    drop column inflight_ids,
    drop column disabled_reason;

drop table delivery_queue;

-- Ids are idempotency keys within a subscription; the log is read by (subscription, seq).
alter table audit_events
    drop constraint audit_events_pkey,
    add constraint audit_events_pkey primary key (subscription_id, seq),
    add constraint audit_events_subscription_id_key unique (subscription_id, id);

-- A gap record names the range of the log that expired.
alter table delivery_gaps
    add column from_seq bigint,
    add column to_seq bigint;
