-- A URL's query may carry a credential (a webhook's `?token=…`): the history keeps URLs with
-- their query values hidden from now on, and earlier rows are redacted the same way.
update siem_settings_history
set changes = regexp_replace(changes::text, '(https?://[^"\s?]+)\?[^"\s]*', '\1?…', 'g')::jsonb
where changes::text ~ 'https?://[^"\s?]+\?';
