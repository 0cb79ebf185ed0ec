-- The page cache's triggers announce only what a page shows. A lease renewal, the in-flight
-- mark a range read writes, a heartbeat's schedule and a sign-in's timestamp change nothing a
-- page shows, and a NOTIFY in those transactions serialises their commits with every other
-- notifying transaction of the cluster.
drop trigger delivery_destinations_page on delivery_destinations;
create trigger delivery_destinations_page after insert or delete on delivery_destinations
    for each row execute function cloudpki_page_changed();
create trigger delivery_destinations_page_update after update on delivery_destinations
    for each row when (
        (old.status, old.next_attempt_at, old.failing_since, old.last_error, old.last_error_at,
         old.last_success_at, old.delivered_total, old.duplicates_total, old.expired_total,
         old.cursor, old.off_at_seq, old.paused_reason, old.takeovers_total, old.send_event_ids,
         old.filtered_total, old.paused_at, old.paused_by_email, old.replay_from,
         old.replay_next, old.replay_to, old.unsent_from_seq, old.unsent_to_seq)
        is distinct from
        (new.status, new.next_attempt_at, new.failing_since, new.last_error, new.last_error_at,
         new.last_success_at, new.delivered_total, new.duplicates_total, new.expired_total,
         new.cursor, new.off_at_seq, new.paused_reason, new.takeovers_total, new.send_event_ids,
         new.filtered_total, new.paused_at, new.paused_by_email, new.replay_from,
         new.replay_next, new.replay_to, new.unsent_from_seq, new.unsent_to_seq))
    execute function cloudpki_page_changed();

-- Cached sessions carry the user's email; nothing else of a user row is kept.
drop trigger users_auth on users;
create trigger users_auth after update of email or delete on users
    for each row execute function cloudpki_auth_changed();
