-- Test Connection attempts are recorded in the settings history too (who, provider, target
-- host, result): a test sends a stored secret somewhere, so it is an event worth a trace.
alter table siem_settings_history
    drop constraint siem_settings_history_outcome_check,
    add constraint siem_settings_history_outcome_check
        check (outcome in ('saved', 'denied', 'tested'));
