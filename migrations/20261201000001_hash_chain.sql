-- The hash chain of each subscription's log (DESIGN.md): every event recorded from now on
-- stores the SHA-256 of its predecessor's hash and its own, computed when it is recorded.
-- Events recorded before this migration have none (their logs carry no PrevHash/Hash); a
-- subscription's chain starts at its first event recorded after it, with PrevHash 64 zeros.
alter table audit_events
    add column prev_hash bytea,
    add column hash bytea;

-- The hash of the subscription's latest chained event, read under the counter row lock.
alter table subscriptions add column last_hash bytea;

-- When each destination's next heartbeat log is due (null: at once). Whichever worker moves
-- it forward sends the heartbeat.
alter table delivery_destinations add column heartbeat_at timestamptz;
