-- Every unique key of the tables distributed by subscription leads with `subscription_id`: a
-- distributed table (Citus) can only enforce a unique constraint that holds its distribution
-- column. The ids stay unique by their sequences.
alter table delivery_attempts drop constraint delivery_attempts_pkey,
    add constraint delivery_attempts_pkey primary key (subscription_id, id);
alter table delivery_gaps drop constraint delivery_gaps_pkey,
    add constraint delivery_gaps_pkey primary key (subscription_id, id);
alter table incidents drop constraint incidents_pkey,
    add constraint incidents_pkey primary key (subscription_id, id);
alter table siem_settings_history drop constraint siem_settings_history_pkey,
    add constraint siem_settings_history_pkey primary key (subscription_id, id);
