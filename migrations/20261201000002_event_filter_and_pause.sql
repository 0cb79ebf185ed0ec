-- Event filter per destination: the Event IDs it is sent (null: every event). Filtered events
-- are passed over by the cursor and counted, never sent and never counted as delivered.
alter table delivery_destinations
    add column send_event_ids int[],
    add column filtered_total bigint not null default 0;

-- Pause / Resume export by an administrator (a webhook's 410 pauses too): who paused and when.
alter table delivery_destinations
    add column paused_at timestamptz,
    add column paused_by_email text;

alter table siem_settings_history
    drop constraint siem_settings_history_outcome_check,
    add constraint siem_settings_history_outcome_check
        check (outcome in ('saved', 'denied', 'tested', 'paused', 'resumed'));
