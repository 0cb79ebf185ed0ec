-- Provider settings are stored as each provider's typed settings (named by the provider
-- module, not by the form): form field names can change without touching stored rows, and the
-- forwarder builds destinations from them without running the form's parser.
update siem_provider_fields
set fields = jsonb_strip_nulls(jsonb_build_object(
    'site', case when fields->>'datadog_site' = 'custom' then null else fields->'datadog_site' end,
    'url', fields->'datadog_url'))
where provider = 'datadog';

update siem_provider_fields
set fields = jsonb_strip_nulls(jsonb_build_object(
    'url', fields->'splunk_url',
    'index', fields->'splunk_index',
    'sourcetype', fields->'splunk_sourcetype',
    'source', fields->'splunk_source',
    'host', fields->'splunk_host',
    'ack', case when fields->>'splunk_ack' = 'on' then to_jsonb(true) else null end))
where provider = 'splunk';

update siem_provider_fields
set fields = jsonb_strip_nulls(jsonb_build_object('url', fields->'logscale_url'))
where provider = 'logscale';

update siem_provider_fields
set fields = jsonb_strip_nulls(jsonb_build_object(
    'cloud', fields->'sentinel_cloud',
    'login_url', fields->'sentinel_login_url',
    'tenant_id', fields->'sentinel_tenant_id',
    'client_id', fields->'sentinel_client_id',
    'endpoint', fields->'sentinel_endpoint',
    'dcr_id', fields->'sentinel_dcr_id',
    'stream', fields->'sentinel_stream'))
where provider = 'sentinel';

update siem_provider_fields f
set fields = jsonb_strip_nulls(jsonb_build_object(
    'url', f.fields->'webhook_url',
    'query_sealed', case when exists (
        select 1 from siem_secrets s
        where s.subscription_id = f.subscription_id and s.provider = 'webhook' and s.name = 'url'
    ) then to_jsonb(true) else null end,
    'previous_until', f.fields->'webhook_previous_until'))
where provider = 'webhook';
