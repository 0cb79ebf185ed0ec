-- Replay a window: the destination resends the events `replay_from..replay_to` (seq) it had
-- already been sent, with their Sequence, Hash and EventUuid; `replay_next` is how far it got.
alter table delivery_destinations
    add column replay_from bigint,
    add column replay_next bigint,
    add column replay_to bigint,
    add column replayed_total bigint not null default 0;

alter table siem_settings_history
    drop constraint siem_settings_history_outcome_check,
    add constraint siem_settings_history_outcome_check
        check (outcome in ('saved', 'denied', 'tested', 'paused', 'resumed', 'replayed'));
