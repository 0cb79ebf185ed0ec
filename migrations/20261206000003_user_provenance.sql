-- How an account was made. An operator's `admin create-user` may give an existing account a role
-- in another subscription only when an admin command (or first-run setup) made it: an account
-- made by accepting an invitation proves nothing about who controls its mailbox. Accounts made
-- before this was recorded are 'unknown' and treated like invited ones.
alter table users
    add column created_via text not null default 'unknown',
    add constraint users_created_via_check
        check (created_via in ('operator', 'setup', 'invitation', 'unknown'));
