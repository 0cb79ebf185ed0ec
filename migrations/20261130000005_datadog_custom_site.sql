-- The settings page now renders Datadog from the provider registry like every provider: a
-- stored intake URL without a site is a custom URL, and says so.
update siem_provider_fields
set fields = fields || '{"datadog_site": "custom"}'::jsonb
where provider = 'datadog' and fields ? 'datadog_url' and not fields ? 'datadog_site';
