//! Telling people: incidents (a destination that keeps failing), reminders, recovery, expired
//! events, and the email outbox that delivers those messages reliably.
//!
//! [`Notifier::run_once_at`] is one maintenance pass, safe to run from any number of workers at
//! once: it expires events past the retention period (counted, recorded as a gap, mailed),
//! opens an incident for each newly failing destination (one email per admin), sends reminders
//! at most every [`REMINDER_INTERVAL`], closes incidents whose destination recovered (one
//! recovery email), then sends what is due from the outbox, and prunes old attempts, expired
//! sessions and stale sign-in failures. Messages are rows first, so an SMTP
//! outage only delays them; without `CLOUDPKI_SMTP_URL` they are recorded and logged instead.

use std::time::Duration;

use askama::Template;
use chrono::{DateTime, Utc};
use lettre::{
    message::{header::ContentType, Mailbox, MultiPart, SinglePart},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use sqlx::PgPool;

use store::notify::Pass;
use uuid::Uuid;

use crate::{
    domain::destination::DestinationKey,
    siem::Provider,
    store::{
        self,
        notify::{GapRow, IncidentRow, NewMessage},
    },
};

/// Longest wait for the SMTP server, per message.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Reminders while a destination stays failing: at most one per this interval.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Messages sent per pass.
const SEND_BATCH: i64 = 50;
/// How many delivery attempts the health panel keeps per destination.
pub const ATTEMPTS_KEPT: i64 = 50;

/// Sends email through the configured SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// The SMTP URL or sender could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailerError(String);

impl Mailer {
    /// From `CLOUDPKI_SMTP_URL` (`smtp://host:port` plain, `?tls=required` for STARTTLS,
    /// `smtps://` for implicit TLS, `user:pass@` for AUTH) and `CLOUDPKI_MAIL_FROM`.
    pub fn new(url: &url::Url, from: &str) -> Result<Mailer, MailerError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str())
            .map_err(|e| MailerError(format!("CLOUDPKI_SMTP_URL cannot be used: {e}")))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| MailerError(format!("CLOUDPKI_MAIL_FROM is not a mailbox: {e}")))?;
        Ok(Mailer { transport, from })
    }

    async fn send(&self, to: &str, subject: &str, text: &str, html: &str) -> Result<(), String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("bad recipient address: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text.to_owned()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html.to_owned()),
                    ),
            )
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[derive(Template)]
#[template(path = "email/message.txt")]
struct TextEmail<'a> {
    headline: &'a str,
    paragraphs: &'a [String],
    facts: &'a [(String, String)],
    action_label: &'a str,
    action_url: &'a str,
    subscription: &'a str,
}

#[derive(Template)]
#[template(path = "email/message.html")]
struct HtmlEmail<'a> {
    headline: &'a str,
    paragraphs: &'a [String],
    facts: &'a [(String, String)],
    action_label: &'a str,
    action_url: &'a str,
    subscription: &'a str,
}

/// The content of one email, before rendering.
struct EmailView {
    subject: String,
    headline: String,
    paragraphs: Vec<String>,
    facts: Vec<(String, String)>,
    action_label: String,
    action_url: String,
    subscription: String,
}

impl EmailView {
    fn render(&self) -> Result<(String, String), askama::Error> {
        let text = TextEmail {
            headline: &self.headline,
            paragraphs: &self.paragraphs,
            facts: &self.facts,
            action_label: &self.action_label,
            action_url: &self.action_url,
            subscription: &self.subscription,
        }
        .render()?;
        let html = HtmlEmail {
            headline: &self.headline,
            paragraphs: &self.paragraphs,
            facts: &self.facts,
            action_label: &self.action_label,
            action_url: &self.action_url,
            subscription: &self.subscription,
        }
        .render()?;
        Ok((text, html))
    }
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyReport {
    /// Incidents opened.
    pub opened: u64,
    /// Reminders queued (per incident).
    pub reminded: u64,
    /// Incidents closed.
    pub closed: u64,
    /// Events expired past retention.
    pub expired: u64,
    /// Messages sent (or logged).
    pub sent: u64,
    /// Messages whose sending failed this time (retried later).
    pub send_failures: u64,
}

/// Runs incidents, retention and the outbox.
#[derive(Clone)]
pub struct Notifier {
    pool: PgPool,
    mailer: Option<Mailer>,
    public_url: String,
    retention: chrono::Duration,
    on_pass: Option<store::OnPass>,
}

impl Notifier {
    /// `public_url` is the portal's base URL for links; `retention_days` from the config.
    pub fn new(
        pool: PgPool,
        mailer: Option<Mailer>,
        public_url: String,
        retention_days: u32,
    ) -> Self {
        Self {
            pool,
            mailer,
            public_url: public_url.trim_end_matches('/').to_owned(),
            retention: chrono::Duration::days(i64::from(retention_days)),
            on_pass: None,
        }
    }

    /// Called after each pass (the process's page cache is dropped, so that a page read right
    /// after it shows its outcome).
    pub fn with_on_pass(mut self, hook: store::OnPass) -> Self {
        self.on_pass = Some(hook);
        self
    }

    /// Whether emails really go out (an SMTP server is configured).
    pub fn sends_email(&self) -> bool {
        self.mailer.is_some()
    }

    /// One maintenance pass at `now`.
    pub async fn run_once_at(&self, now: DateTime<Utc>) -> Result<NotifyReport, store::Error> {
        let outcome = self.pass_at(now).await;
        if let Some(hook) = &self.on_pass {
            hook();
        }
        outcome
    }

    async fn pass_at(&self, now: DateTime<Utc>) -> Result<NotifyReport, store::Error> {
        let mut report = NotifyReport::default();
        // Expiry commits on its own: the destinations it moves stay locked only this long.
        let mut tx = Pass::begin(&self.pool).await?;
        for gap in tx.expire(now - self.retention, now).await? {
            report.expired += u64::try_from(gap.expired_events).unwrap_or_default();
            tracing::warn!(subscription_id = %gap.subscription_id, expired = gap.expired_events, "undelivered events expired past retention");
            self.queue_expired(&mut tx, &gap, now).await?;
        }
        tx.commit().await?;
        let mut tx = Pass::begin(&self.pool).await?;
        for incident in tx.open_incidents(now).await? {
            report.opened += 1;
            tracing::warn!(subscription_id = %incident.subscription_id, reason = %incident.reason, "delivery incident opened");
            self.queue_incident(&mut tx, &incident, "failing", now)
                .await?;
        }
        let switched_off = tx.close_switched_off(now).await?;
        if switched_off > 0 {
            tracing::info!(
                incidents = switched_off,
                "incidents closed: export switched off by an administrator"
            );
        }
        let every =
            chrono::Duration::from_std(REMINDER_INTERVAL).unwrap_or(chrono::Duration::days(1));
        for incident in tx.due_reminders(now, every).await? {
            report.reminded += 1;
            self.queue_incident(&mut tx, &incident, "reminder", now)
                .await?;
        }
        let today = now.date_naive();
        for secret in tx.expiring_secrets(today + chrono::Days::new(30)).await? {
            self.queue_expiry(&mut tx, &secret, today, now).await?;
        }
        for incident in tx.close_incidents(now).await? {
            report.closed += 1;
            tracing::info!(subscription_id = %incident.subscription_id, delivered = incident.count, "delivery incident closed");
            self.queue_incident(&mut tx, &incident, "recovered", now)
                .await?;
        }
        tx.commit().await?;
        let (sent, failed) = self.send_due(now).await?;
        report.sent = sent;
        report.send_failures = failed;
        store::notify::prune_attempts(&self.pool, ATTEMPTS_KEPT).await?;
        // Expired sessions and day-old sign-in failures: nothing reads them any more.
        store::accounts::purge_expired(&self.pool).await?;
        Ok(report)
    }

    fn settings_link(&self, dest: DestinationKey) -> String {
        let sub = dest.subscription_id;
        let query = dest
            .number
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!(
            "{}/subscriptions/{sub}/settings{query}#advanced",
            self.public_url
        )
    }

    /// How emails name a destination: its provider, after the name an administrator gave it
    /// ("Archive (Kafka)"); "Destination 2 (Kafka)" for an unnamed one after the first.
    async fn destination_label(
        &self,
        tx: &mut Pass,
        dest: DestinationKey,
        provider: &str,
    ) -> Result<String, store::Error> {
        let name = tx.destination_name(dest).await?;
        Ok(dest.number.label(name.as_deref(), provider))
    }

    async fn subscription_name(&self, tx: &mut Pass, id: Uuid) -> Result<String, store::Error> {
        Ok(tx
            .subscription_name(id)
            .await?
            .unwrap_or_else(|| id.to_string()))
    }

    async fn queue_incident(
        &self,
        tx: &mut Pass,
        incident: &IncidentRow,
        kind: &'static str,
        now: DateTime<Utc>,
    ) -> Result<(), store::Error> {
        let dest = DestinationKey::stored(incident.subscription_id, incident.destination);
        let provider = Provider::parse(&incident.provider)
            .map(Provider::label)
            .unwrap_or("SIEM");
        let provider = &self.destination_label(tx, dest, provider).await?;
        let name = self.subscription_name(tx, incident.subscription_id).await?;
        let (waiting, oldest) = tx.waiting(dest, &incident.provider).await?;
        let (expired, parked) = tx
            .losses_since(dest, &incident.provider, incident.opened_at)
            .await?;
        let since = fmt_time(incident.opened_at);
        let mut facts = vec![
            ("Destination".to_owned(), provider.to_owned()),
            ("Failing since".to_owned(), since.clone()),
            ("Events waiting".to_owned(), waiting.to_string()),
        ];
        if let Some(oldest) = oldest {
            facts.push(("Oldest waiting event queued".to_owned(), fmt_time(oldest)));
        }
        if expired > 0 {
            facts.push(("Events expired undelivered".to_owned(), expired.to_string()));
        }
        let view = match kind {
            "recovered" => {
                let lost = if expired == 0 && parked == 0 {
                    "No event was lost.".to_owned()
                } else {
                    format!("During the outage {expired} event(s) expired past the retention period and {parked} were refused by {provider} (parked); see the delivery health panel.")
                };
                EmailView {
                    subject: format!("Resolved: audit logs of {name} reach {provider} again"),
                    headline: format!("Audit logs of {name} reach {provider} again"),
                    paragraphs: vec![
                        format!("Delivery works again. cloudpki delivered {} waiting event(s) since the problem started on {since}. {lost}", incident.count),
                    ],
                    facts,
                    action_label: "Open the settings".into(),
                    action_url: self.settings_link(dest),
                    subscription: name,
                }
            }
            _ => EmailView {
                subject: if kind == "reminder" {
                    format!("Still failing: audit logs of {name} are not reaching {provider}")
                } else {
                    format!("Action needed: audit logs of {name} are not reaching {provider}")
                },
                headline: format!("Audit logs of {name} are not reaching {provider}"),
                paragraphs: vec![
                    format!("cloudpki cannot deliver audit events to {provider}: {}", incident.reason),
                    format!("No event is lost yet: {waiting} event(s) wait in the queue and are sent as soon as delivery works. Undelivered events are kept for {} days.", self.retention.num_days()),
                    "What to do: open the settings, check the API key and the intake URL, press Test Connection, then Save changes. A fixed key or URL takes effect at once.".to_owned(),
                ],
                facts,
                action_label: "Fix the settings".into(),
                action_url: self.settings_link(dest),
                subscription: name,
            },
        };
        let key_part = match kind {
            "reminder" => format!("reminder/{}", incident.count),
            other => other.to_owned(),
        };
        self.queue_for_admins(
            tx,
            incident.subscription_id,
            &format!("{}/{key_part}", incident.id),
            kind,
            &view,
            now,
        )
        .await
    }

    async fn queue_expired(
        &self,
        tx: &mut Pass,
        gap: &GapRow,
        now: DateTime<Utc>,
    ) -> Result<(), store::Error> {
        let dest = DestinationKey::stored(gap.subscription_id, gap.destination);
        let provider = Provider::parse(&gap.provider)
            .map(Provider::label)
            .unwrap_or("SIEM");
        let provider = &self.destination_label(tx, dest, provider).await?;
        let name = self.subscription_name(tx, gap.subscription_id).await?;
        let view = EmailView {
            subject: format!("{} audit event(s) of {name} expired undelivered", gap.expired_events),
            headline: format!("{} audit event(s) of {name} were never delivered to {provider}", gap.expired_events),
            paragraphs: vec![
                format!(
                    "These events waited longer than the retention period of {} days and were removed from the delivery queue. They remain in cloudpki's audit trail; your SIEM does not have them.",
                    self.retention.num_days()
                ),
                "Fix the destination so that newer events arrive, and look up the missing period in cloudpki if you need it.".to_owned(),
            ],
            facts: vec![
                ("Destination".to_owned(), provider.to_owned()),
                ("Events expired".to_owned(), gap.expired_events.to_string()),
                ("Oldest".to_owned(), fmt_time(gap.oldest_event_at)),
                ("Newest".to_owned(), fmt_time(gap.newest_event_at)),
            ],
            action_label: "Open the settings".into(),
            action_url: self.settings_link(dest),
            subscription: name,
        };
        self.queue_for_admins(
            tx,
            gap.subscription_id,
            &format!("gap/{}", gap.id),
            "expired",
            &view,
            now,
        )
        .await
    }

    /// One reminder per threshold (30, 7 and 1 days before, and once expired) and date.
    async fn queue_expiry(
        &self,
        tx: &mut Pass,
        secret: &store::notify::ExpiringSecret,
        today: chrono::NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), store::Error> {
        let days = (secret.expires_on - today).num_days();
        let Some(threshold) = [0, 1, 7, 30].into_iter().find(|t| days <= *t) else {
            return Ok(());
        };
        let dest = DestinationKey::stored(secret.subscription_id, secret.destination);
        let provider = Provider::parse(&secret.provider).ok();
        let destination = provider.map(Provider::label).unwrap_or("SIEM");
        let destination = &self.destination_label(tx, dest, destination).await?;
        let label = provider
            .and_then(|p| {
                p.fields()
                    .iter()
                    .find(|f| f.sealed_as == Some(secret.name.as_str()))
            })
            .map_or(secret.name.as_str(), |f| f.label);
        let name = self.subscription_name(tx, secret.subscription_id).await?;
        let when = match days {
            ..=-1 => format!("expired on {}", secret.expires_on),
            0 => "expires today".to_owned(),
            1 => "expires tomorrow".to_owned(),
            n => format!("expires in {n} days"),
        };
        let view = EmailView {
            subject: format!("The {destination} {label} of {name} {when}"),
            headline: format!("The {label} {name} uses for {destination} {when}"),
            paragraphs: vec![
                "When it expires, the SIEM refuses the logs: they are kept and retried, but nothing arrives until the credential is replaced.".to_owned(),
                "Create a new one in the SIEM, enter it on the settings page with its new expiry date, press Test Connection, then Save changes.".to_owned(),
            ],
            facts: vec![
                ("Destination".to_owned(), destination.to_owned()),
                ("Credential".to_owned(), label.to_owned()),
                ("Expires on".to_owned(), secret.expires_on.to_string()),
            ],
            action_label: "Open the settings".into(),
            action_url: self.settings_link(dest),
            subscription: name,
        };
        self.queue_for_admins(
            tx,
            secret.subscription_id,
            &format!(
                // Keys are unique across subscriptions: an administrator of two subscriptions
                // gets each one's reminder.
                "expiry/{}/{}/{}/{}/{}/{threshold}",
                dest.subscription_id, dest.number, secret.provider, secret.name, secret.expires_on
            ),
            "credential_expiry",
            &view,
            now,
        )
        .await
    }

    async fn queue_for_admins(
        &self,
        tx: &mut Pass,
        subscription_id: Uuid,
        key: &str,
        kind: &'static str,
        view: &EmailView,
        now: DateTime<Utc>,
    ) -> Result<(), store::Error> {
        let (text_body, html_body) = view
            .render()
            .map_err(|e| store::Error::Database(sqlx::Error::Protocol(e.to_string())))?;
        for recipient in tx.admin_emails(subscription_id).await? {
            let message = NewMessage {
                subscription_id,
                dedupe_key: format!("{key}/{recipient}"),
                kind,
                recipient,
                subject: view.subject.clone(),
                text_body: text_body.clone(),
                html_body: html_body.clone(),
            };
            tx.enqueue(&message, now).await?;
        }
        Ok(())
    }

    /// Sends (or logs) what is due; failures are retried with backoff.
    async fn send_due(&self, now: DateTime<Utc>) -> Result<(u64, u64), store::Error> {
        let mut sent = 0;
        let mut failed = 0;
        let lease = chrono::Duration::seconds(120);
        for message in store::notify::claim_due(&self.pool, now, lease, SEND_BATCH).await? {
            match &self.mailer {
                None => {
                    tracing::info!(to = %message.recipient, subject = %message.subject, "email recorded, not sent: CLOUDPKI_SMTP_URL is not set");
                    store::notify::mark_sent(&self.pool, message.id, now, "logged").await?;
                    sent += 1;
                }
                Some(mailer) => match mailer
                    .send(
                        &message.recipient,
                        &message.subject,
                        &message.text_body,
                        &message.html_body,
                    )
                    .await
                {
                    Ok(()) => {
                        store::notify::mark_sent(&self.pool, message.id, now, "smtp").await?;
                        sent += 1;
                    }
                    Err(error) => {
                        failed += 1;
                        let delay = 30i64
                            .saturating_mul(1 << message.attempts.clamp(0, 7))
                            .min(3600);
                        tracing::warn!(to = %message.recipient, %error, retry_in_s = delay, "email not sent; will retry");
                        store::notify::mark_failed(
                            &self.pool,
                            message.id,
                            now + chrono::Duration::seconds(delay),
                            &error,
                        )
                        .await?;
                    }
                },
            }
        }
        Ok((sent, failed))
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
