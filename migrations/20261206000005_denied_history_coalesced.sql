-- A reader's refused attempts are one history row per actor, attempt and minute, with a count:
-- a flood of refused posts cannot grow the history without bound.
alter table siem_settings_history
    add column repeats integer not null default 1,
    add column denied_minute timestamptz;
create unique index siem_settings_history_denied_key
    on siem_settings_history (subscription_id, user_id, denied_minute, changes)
    where outcome = 'denied';
