-- Invitations can be revoked, and carry who sent them: removing or demoting that administrator
-- revokes them, and accepting one checks that its sender is still an administrator.
alter table invites
    add column invited_by uuid,
    add column revoked_at timestamptz,
    add constraint invites_invited_by_fkey foreign key (invited_by)
        references users (id) on delete set null;
update invites i set invited_by = u.id from users u where u.email = i.invited_by_email;
