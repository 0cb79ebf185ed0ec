-- Ingestion tokens get a name, who created them and when they were last used (the Tokens page).
alter table api_tokens
    add column name text not null default 'unnamed',
    add column created_by_email text,
    add column last_used_at timestamptz;
