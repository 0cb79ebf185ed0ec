-- Invitation emails sent before links were purged at sending keep no link either.
update notifications
set text_body = regexp_replace(text_body, 'https?://[^[:space:]"<>]*/invite/[^[:space:]"<>]+',
                               '[invitation link removed after sending]', 'g'),
    html_body = regexp_replace(html_body, 'https?://[^[:space:]"<>]*/invite/[^[:space:]"<>]+',
                               '[invitation link removed after sending]', 'g')
where kind = 'invite' and sent_at is not null;
