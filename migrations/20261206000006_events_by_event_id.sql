-- The Events page's filter (an Event ID, or a criticality's Event IDs): the newest events of
-- each wanted Event ID by index, instead of walking the whole log for a rare one.
create index audit_events_event_id_idx on audit_events (subscription_id, event_id, seq);
