-- The delivery log at its edges.
-- * `replay_id`: each replay has its own id; a claim records progress only for the replay it
--   read, so a newer replay is never skipped by an older claim.
-- * `unsent_from_seq..unsent_to_seq`: the latest window of events recorded while export to
--   this destination was off. They are not owed (the panel offers Replay for them).
alter table delivery_destinations
    add column replay_id uuid,
    add column unsent_from_seq bigint,
    add column unsent_to_seq bigint;
