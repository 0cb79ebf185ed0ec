-- Several destinations per subscription. A destination is a number within its subscription:
-- 1 is the one every subscription had (the seed's flow, `/siem` in the API), the others are
-- added by administrators, at most five live at once. Numbers are never reused
-- (`subscriptions.destinations_made` counts them out), so the history of a removed destination
-- never reads as another's. Everything that was keyed by the subscription (and provider) is now
-- keyed by the destination too; what existed becomes destination 1. The columns get no default:
-- a write that forgets its destination fails instead of landing on destination 1.
alter table subscriptions
    add column destinations_made smallint not null default 1;

alter table siem_settings
    add column destination smallint not null default 1,
    add column name text,
    add constraint siem_settings_destination_check check (destination >= 1),
    add constraint siem_settings_name_check check (name is null or length(btrim(name)) between 1 and 60);
alter table siem_settings drop constraint siem_settings_pkey;
alter table siem_settings add constraint siem_settings_pkey primary key (subscription_id, destination);
alter table siem_settings alter column destination drop default;

alter table siem_provider_fields add column destination smallint not null default 1;
alter table siem_provider_fields drop constraint siem_provider_fields_pkey;
alter table siem_provider_fields
    add constraint siem_provider_fields_pkey primary key (subscription_id, destination, provider);
alter table siem_provider_fields alter column destination drop default;

alter table siem_secrets add column destination smallint not null default 1;
alter table siem_secrets drop constraint siem_secrets_pkey;
alter table siem_secrets
    add constraint siem_secrets_pkey primary key (subscription_id, destination, provider, name);
alter table siem_secrets alter column destination drop default;

alter table tested_secrets add column destination smallint not null default 1;
alter table tested_secrets drop constraint tested_secrets_pkey;
alter table tested_secrets
    add constraint tested_secrets_pkey
    primary key (subscription_id, session_digest, destination, provider);
alter table tested_secrets alter column destination drop default;

alter table siem_settings_history add column destination smallint not null default 1;
alter table siem_settings_history alter column destination drop default;
alter table siem_settings_history drop constraint siem_settings_history_outcome_check;
alter table siem_settings_history add constraint siem_settings_history_outcome_check
    check (outcome in ('saved', 'denied', 'tested', 'paused', 'resumed', 'replayed', 'added', 'removed'));
drop index siem_settings_history_denied_key;
create unique index siem_settings_history_denied_key on siem_settings_history
    (subscription_id, destination, user_id, denied_minute, changes) where outcome = 'denied';

-- The delivery tables hang off a destination's delivery row.
alter table delivery_attempts drop constraint delivery_attempts_destination_fkey;
alter table delivery_gaps drop constraint delivery_gaps_destination_fkey;
alter table delivery_parked drop constraint delivery_parked_destination_fkey;
alter table incidents drop constraint incidents_destination_fkey;

alter table delivery_destinations add column destination smallint not null default 1;
alter table delivery_destinations drop constraint delivery_destinations_pkey;
alter table delivery_destinations
    add constraint delivery_destinations_pkey primary key (subscription_id, destination, provider);
alter table delivery_destinations alter column destination drop default;

alter table delivery_attempts add column destination smallint not null default 1;
alter table delivery_attempts alter column destination drop default;
drop index delivery_attempts_destination_idx;
create index delivery_attempts_destination_idx
    on delivery_attempts (subscription_id, destination, provider, at desc);
alter table delivery_attempts add constraint delivery_attempts_destination_fkey
    foreign key (subscription_id, destination, provider)
    references delivery_destinations (subscription_id, destination, provider) on delete cascade;

alter table delivery_gaps add column destination smallint not null default 1;
alter table delivery_gaps alter column destination drop default;
drop index delivery_gaps_destination_idx;
create index delivery_gaps_destination_idx
    on delivery_gaps (subscription_id, destination, provider, recorded_at desc);
alter table delivery_gaps add constraint delivery_gaps_destination_fkey
    foreign key (subscription_id, destination, provider)
    references delivery_destinations (subscription_id, destination, provider) on delete cascade;

alter table delivery_parked add column destination smallint not null default 1;
alter table delivery_parked alter column destination drop default;
alter table delivery_parked drop constraint delivery_parked_pkey;
alter table delivery_parked
    add constraint delivery_parked_pkey primary key (subscription_id, destination, provider, seq);
drop index delivery_parked_retry_idx;
create index delivery_parked_retry_idx on delivery_parked (subscription_id, destination, provider, seq)
    where state = 'retry';
alter table delivery_parked add constraint delivery_parked_destination_fkey
    foreign key (subscription_id, destination, provider)
    references delivery_destinations (subscription_id, destination, provider) on delete cascade;

alter table incidents add column destination smallint not null default 1;
alter table incidents alter column destination drop default;
drop index incidents_one_open_idx;
create unique index incidents_one_open_idx on incidents (subscription_id, destination, provider)
    where closed_at is null;
alter table incidents add constraint incidents_destination_fkey
    foreign key (subscription_id, destination, provider)
    references delivery_destinations (subscription_id, destination, provider) on delete cascade;
