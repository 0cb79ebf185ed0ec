//! The delivery health panel of the settings page: status, last success, backlog, last error,
//! parked events, gaps, recent attempts and the emails sent about the destination.

use chrono::{DateTime, Utc};

use crate::store::page::PanelRows;

/// Parked events, attempts and emails the panel lists.
pub const PANEL_ROWS: i64 = 10;

/// The delivery health panel.
pub struct HealthView {
    /// `healthy`, `retrying`, `failing`, `disabled` or `idle` (never enabled).
    pub state: &'static str,
    pub label: &'static str,
    pub summary: String,
    pub last_success: Option<String>,
    pub waiting: String,
    pub oldest_waiting: Option<String>,
    pub last_error: Option<(String, String)>,
    pub delivered_total: i64,
    pub duplicates_total: i64,
    pub takeovers_total: i64,
    pub expired_total: i64,
    pub parked_total: i64,
    pub parked: Vec<(String, String, String, String)>,
    pub attempts: Vec<(String, String, i32, String)>,
    pub gaps: Vec<(String, i64, String, String)>,
    pub emails: Vec<(String, String, String, String)>,
    pub sends_email: bool,
    /// Events still waiting for providers the subscription no longer uses: (label, count).
    pub stranded: Vec<(String, i64)>,
    /// Events the destination's filter passed over.
    pub filtered_total: i64,
    /// While paused: when the oldest kept event expires unless export resumes.
    pub paused_expiry: Option<String>,
    /// The latest replay's progress.
    pub replay: Option<String>,
    /// Events recorded while export was off, not sent: (how many, window start and end as the
    /// replay form's UTC `datetime-local` values).
    pub unsent: Option<(i64, String, String)>,
}

fn age(since: DateTime<Utc>) -> String {
    let secs = (Utc::now() - since).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} days", secs / 86_400),
    }
}

/// The panel of the current destination, from the rows read with the page.
pub fn health_view(
    sends_email: bool,
    enabled: bool,
    retention_days: u32,
    rows: PanelRows,
) -> HealthView {
    let PanelRows {
        health,
        stranded,
        notifications,
        parked,
        attempts,
        gaps,
    } = rows;
    let stranded = stranded
        .into_iter()
        .map(|(p, n)| {
            let label = crate::siem::Provider::parse(&p)
                .map(|p| p.label().to_owned())
                .unwrap_or(p);
            (label, n)
        })
        .collect();
    let emails = notifications
        .into_iter()
        .map(|n| {
            let status = match (n.sent_via.as_deref(), n.last_error) {
                (Some("smtp"), _) => "sent".to_owned(),
                (Some(_), _) => "recorded (email not configured)".to_owned(),
                (None, Some(e)) => format!("not sent yet, retrying: {e}"),
                (None, None) => "queued".to_owned(),
            };
            (when(n.created_at), n.kind, n.recipient, status)
        })
        .collect();
    let Some(h) = health else {
        return HealthView {
            state: if enabled { "healthy" } else { "idle" },
            label: if enabled { "Healthy" } else { "Not enabled" },
            summary: if enabled {
                "No event has been sent yet.".to_owned()
            } else {
                "SIEM export has never been turned on for this subscription.".to_owned()
            },
            last_success: None,
            waiting: "0".to_owned(),
            oldest_waiting: None,
            last_error: None,
            delivered_total: 0,
            duplicates_total: 0,
            takeovers_total: 0,
            expired_total: 0,
            parked_total: 0,
            parked: Vec::new(),
            attempts: Vec::new(),
            gaps: Vec::new(),
            emails,
            sends_email,
            stranded,
            filtered_total: 0,
            paused_expiry: None,
            replay: None,
            unsent: None,
        };
    };
    let parked = parked
        .into_iter()
        .map(|p| {
            (
                p.event_id.to_string(),
                p.event_uuid.to_string(),
                when(p.occurred_at),
                p.reason,
            )
        })
        .collect();
    let attempts = attempts
        .into_iter()
        .map(|a| {
            (
                when(a.at),
                a.outcome,
                a.events,
                a.detail.unwrap_or_default(),
            )
        })
        .collect();
    let gaps = gaps
        .into_iter()
        .map(|g| {
            (
                when(g.recorded_at),
                g.expired_events,
                when(g.oldest_event_at),
                when(g.newest_event_at),
            )
        })
        .collect();
    let (state_name, label, summary) = if !enabled {
        (
            "disabled",
            "Disabled",
            format!(
                "Export is off. {} event(s) wait and will be sent when it is turned on again.",
                h.pending
            ),
        )
    } else if let Some(reason) = &h.paused_reason {
        let since = h
            .paused_at
            .map(|t| format!(" (since {})", when(t)))
            .unwrap_or_default();
        ("paused", "Paused", format!(
            "Export to this destination is paused{since}: {reason} Events are recorded and kept, not sent; press Resume export to send them."
        ))
    } else if h.status == "failing" {
        ("failing", "Failing", format!(
            "Delivery has been failing since {}. Events are kept and retried; the administrators are emailed.",
            h.failing_since.map(when).unwrap_or_else(|| "recently".into())
        ))
    } else if h.failing_since.is_some() {
        (
            "retrying",
            "Retrying",
            "The last attempt failed; cloudpki retries automatically.".to_owned(),
        )
    } else {
        (
            "healthy",
            "Healthy",
            "Events are delivered as they arrive.".to_owned(),
        )
    };
    let paused_expiry = h
        .paused_reason
        .as_ref()
        .and(h.oldest_pending)
        .map(|oldest| {
            let expires = oldest + chrono::Duration::days(i64::from(retention_days));
            format!(
                "The oldest kept event expires on {} (retention {retention_days} days) unless export resumes before.",
                when(expires)
            )
        });
    let replay = match (h.replay_from, h.replay_next, h.replay_to) {
        (Some(from), Some(next), Some(to)) => {
            let total = to - from + 1;
            let done = (next - from).clamp(0, total);
            Some(if next > to {
                format!("Last replay done: {total} event(s) resent (Sequence {from}..{to}).")
            } else {
                format!(
                    "Replay in progress: {done} of {total} event(s) resent ({} %, Sequence {from}..{to}).",
                    done * 100 / total.max(1)
                )
            })
        }
        _ => None,
    };
    // The replay window covers whole seconds: from the first one's second to past the last's.
    let local = |at: DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%S").to_string();
    let unsent = match (
        h.unsent_from_seq,
        h.unsent_to_seq,
        h.unsent_from_at,
        h.unsent_to_at,
    ) {
        (Some(from), Some(to), Some(first), Some(last)) if to >= from => Some((
            to - from + 1,
            local(first),
            local(last + chrono::Duration::seconds(1)),
        )),
        _ => None,
    };
    HealthView {
        state: state_name,
        label,
        summary,
        last_success: h.last_success_at.map(when),
        waiting: h.pending.to_string(),
        oldest_waiting: h.oldest_pending.map(age),
        last_error: h.last_error.zip(h.last_error_at.map(when)),
        delivered_total: h.delivered_total,
        duplicates_total: h.duplicates_total,
        takeovers_total: h.takeovers_total,
        expired_total: h.expired_total,
        parked_total: h.parked,
        parked,
        attempts,
        gaps,
        emails,
        sends_email,
        stranded,
        filtered_total: h.filtered_total,
        paused_expiry,
        replay,
        unsent,
    }
}

pub use crate::settings::history::when;
