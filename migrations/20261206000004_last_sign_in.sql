-- When an account last proved its password: such accounts keep a share of the hashing slots
-- while anonymous guesses flood the sign-in page.
alter table users add column last_sign_in_at timestamptz;
