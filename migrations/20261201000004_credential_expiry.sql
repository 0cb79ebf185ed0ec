-- An optional "expires on" date per sealed secret (a Sentinel client secret lasts 6 to 24
-- months); administrators are reminded 30, 7 and 1 days before.
alter table siem_secrets add column expires_on date;

alter table notifications drop constraint notifications_kind_check;
alter table notifications add constraint notifications_kind_check
    check (kind in ('failing', 'reminder', 'recovered', 'expired', 'invite', 'credential_expiry'));
