-- The events a worker has in flight are recorded once per batch on the destination row instead
-- of once per queue row: a batch then costs one row write per event (its delete), and the queue
-- produces half the dead rows. The queue is a hot insert/delete table: vacuum it early so
-- claims never walk long runs of dead index entries.

alter table delivery_destinations
    add column inflight_ids bigint[] not null default '{}';

alter table delivery_queue
    drop column in_flight,
    drop column attempts;

alter table delivery_queue set (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.05
);
