-- A destination that answered "gone for good" (webhook 410) is switched off with its reason,
-- so the admins are told and nothing is sent until someone turns export on again.
alter table delivery_destinations
    add column disabled_reason text;
