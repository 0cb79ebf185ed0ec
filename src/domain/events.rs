//! The audit event catalog: the eleven events a Cloud PKI subscription records and exports, plus
//! the connection-test event that only the SIEM settings page sends.
//!
//! Ids, summaries, descriptions and criticalities are the ones published in "How-To: Export your
//! Cloud PKI Logs to Datadog"; customers build alerts on them (`service:EZCA @EventID:4888`), so
//! they are an outside contract and change only with the catalog.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much attention an event deserves; decides the SIEM severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Criticality {
    High,
    Medium,
    Low,
}

impl Criticality {
    /// The label shown to people and sent as the `Criticality` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::High => "High",
            Criticality::Medium => "Medium",
            Criticality::Low => "Low",
        }
    }

    /// The Datadog `status` (log level) for this criticality.
    pub fn datadog_status(self) -> &'static str {
        match self {
            Criticality::High => "error",
            Criticality::Medium => "warning",
            Criticality::Low => "info",
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The table of the catalog an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    CaOperation,
    CertificateOperation,
    /// Not a catalog table: the connection test sent from the settings page.
    Diagnostic,
}

impl Category {
    /// The heading of the category as the catalog shows it.
    pub fn label(self) -> &'static str {
        match self {
            Category::CaOperation => "CA Operation Events",
            Category::CertificateOperation => "Certificate Operation Events",
            Category::Diagnostic => "Diagnostic Events",
        }
    }
}

/// Everything the catalog says about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub id: EventId,
    pub summary: &'static str,
    pub description: &'static str,
    pub criticality: Criticality,
    pub category: Category,
}

/// An audit event id that is known to the catalog (or the connection-test id 0).
///
/// The only ways to get one are [`EventId::parse`] and [`EventId::CONNECTION_TEST`], so
/// [`EventId::info`] always finds its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct EventId(u32);

/// An event id that the catalog does not list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Event ID {0} is not in the audit event catalog; use one of 4882, 92, 23, 19, 28, 22, 12, 4888, 4870, 4872 or 4887."
)]
pub struct UnknownEventId(pub u32);

impl EventId {
    /// The event sent by "Test Connection"; never recorded, never part of [`catalog`].
    pub const CONNECTION_TEST: EventId = EventId(0);
    /// The export heartbeat sent to every enabled destination (never recorded either).
    pub const HEARTBEAT: EventId = EventId(1);

    /// Accepts exactly the eleven catalog ids (not the connection-test id 0).
    pub fn parse(id: u32) -> Result<EventId, UnknownEventId> {
        if CATALOG.iter().any(|info| info.id.0 == id) {
            Ok(EventId(id))
        } else {
            Err(UnknownEventId(id))
        }
    }

    /// The numeric id, as sent in the `EventID` attribute.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The catalog entry of this event.
    pub fn info(self) -> &'static EventInfo {
        CATALOG
            .iter()
            .find(|info| info.id == self)
            // Only `CONNECTION_TEST` and `HEARTBEAT` are constructible outside the catalog.
            .unwrap_or(if self == Self::HEARTBEAT {
                &HEARTBEAT_INFO
            } else {
                &CONNECTION_TEST_INFO
            })
    }

    /// The Datadog search recommended for alerting on this event.
    pub fn alert_query(self) -> String {
        alert_query(self)
    }
}

impl TryFrom<u32> for EventId {
    type Error = UnknownEventId;

    fn try_from(id: u32) -> Result<Self, Self::Error> {
        EventId::parse(id)
    }
}

impl From<EventId> for u32 {
    fn from(id: EventId) -> u32 {
        id.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The Datadog log search that finds one event: `service:EZCA @EventID:<id>`.
pub fn alert_query(id: EventId) -> String {
    format!("service:EZCA @EventID:{id}")
}

/// The Event IDs a destination is sent: every catalog event (the default), or some of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter(Option<Vec<i32>>);

impl EventFilter {
    /// Every event, including events the catalog gains later.
    pub fn all() -> Self {
        Self(None)
    }

    /// The ticked `send_event_ids` checkboxes: each must be a catalog Event ID; ticking none is
    /// refused (switching export off says that more plainly); ticking all means every event.
    pub fn parse<S: AsRef<str>>(ticked: &[S]) -> Result<Self, String> {
        let mut ids = Vec::new();
        for raw in ticked {
            let raw = raw.as_ref().trim();
            let id = raw
                .parse::<u32>()
                .ok()
                .and_then(|n| EventId::parse(n).ok())
                .ok_or_else(|| format!("`{raw}` is not an Event ID of the catalog."))?;
            let id = i32::try_from(id.get()).unwrap_or(i32::MAX);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(
                "Tick at least one event to send, or switch Send Audit Logs to SIEM off.".into(),
            );
        }
        if ids.len() == CATALOG.len() {
            return Ok(Self(None));
        }
        ids.sort_unstable();
        Ok(Self(Some(ids)))
    }

    /// From the stored column (`None`: every event).
    pub fn from_stored(ids: Option<Vec<i32>>) -> Self {
        Self(ids)
    }

    /// The stored form: `None` for every event.
    pub fn ids(&self) -> Option<&[i32]> {
        self.0.as_deref()
    }

    /// Whether events with this id are sent.
    pub fn sends(&self, id: EventId) -> bool {
        self.0
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i64::from(*i) == i64::from(id.get())))
    }

    /// Plain words for the history: "every event" or "4 of 11 events (4888, …)".
    pub fn describe(&self) -> String {
        match &self.0 {
            None => "every event".into(),
            Some(ids) => format!(
                "{} of {} events ({})",
                ids.len(),
                CATALOG.len(),
                ids.iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Most events one replay may resend.
pub const REPLAY_CAP: i64 = 1_000_000;

/// A window of recording times to replay, from the page's `replay_from` and `replay_to`
/// (`datetime-local` values, read as UTC): `from` included, `to` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

impl ReplayWindow {
    /// Parses both ends; an error names the field (`replay_from` or `replay_to`) and says why.
    pub fn parse(from: &str, to: &str) -> Result<Self, (&'static str, String)> {
        fn one(
            name: &'static str,
            raw: &str,
        ) -> Result<chrono::DateTime<chrono::Utc>, (&'static str, String)> {
            let raw = raw.trim();
            if raw.is_empty() {
                return Err((name, "Enter a date and time (UTC).".into()));
            }
            [
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%dT%H:%M:%S%.f",
            ]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(raw, f).ok())
            .map(|t| t.and_utc())
            .ok_or_else(|| {
                (
                    name,
                    format!("`{raw}` is not a date and time such as 2026-12-01T09:30 (UTC)."),
                )
            })
        }
        let window = Self {
            from: one("replay_from", from)?,
            to: one("replay_to", to)?,
        };
        if window.to <= window.from {
            return Err(("replay_to", "The end must be after the start.".into()));
        }
        Ok(window)
    }
}

/// The eleven catalog events, in the order of the published tables.
pub fn catalog() -> &'static [EventInfo] {
    &CATALOG
}

static CONNECTION_TEST_INFO: EventInfo = EventInfo {
    id: EventId::CONNECTION_TEST,
    summary: "SIEM connection test",
    description: "Sent by Test Connection on the settings page to check that logs reach the SIEM",
    criticality: Criticality::Low,
    category: Category::Diagnostic,
};

static HEARTBEAT_INFO: EventInfo = EventInfo {
    id: EventId::HEARTBEAT,
    summary: "Export heartbeat",
    description: "Sent to every enabled destination every CLOUDPKI_HEARTBEAT_SECONDS with the subscription's latest Sequence, so the SIEM can alert on silence and on gaps",
    criticality: Criticality::Low,
    category: Category::Diagnostic,
};

static CATALOG: [EventInfo; 11] = [
    EventInfo {
        id: EventId(4882),
        summary: "The security permissions for Certificate Services changed",
        description: "A change in CA settings that might give or remove critical permissions",
        criticality: Criticality::High,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(92),
        summary: "CA change denied due to insufficient permissions",
        description: "A user attempted to change CA settings without the proper permissions",
        criticality: Criticality::High,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(23),
        summary: "Intermediate CA request rejected",
        description: "A new Intermediate CA request has been rejected",
        criticality: Criticality::High,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(19),
        summary: "CA deleted",
        description: "This indicates that a CA was deleted",
        criticality: Criticality::High,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(28),
        summary: "Intermediate CA was imported",
        description: "A new Intermediate CA has been created chaining to an external CA",
        criticality: Criticality::Medium,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(22),
        summary: "Intermediate CA created with EZCA Root",
        description: "A new Intermediate CA has been created chaining to an EZCA CA",
        criticality: Criticality::Medium,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(12),
        summary: "CA was renewed",
        description: "A CA has been renewed",
        criticality: Criticality::Low,
        category: Category::CaOperation,
    },
    EventInfo {
        id: EventId(4888),
        summary: "Certificate request denied due to insufficient permissions",
        description: "A user attempted to request a certificate without the proper permissions",
        criticality: Criticality::High,
        category: Category::CertificateOperation,
    },
    EventInfo {
        id: EventId(4870),
        summary: "A certificate has been revoked",
        description: "This can cause an outage if was done by mistake or the new certificate is not added to all the endpoints that use the certificate",
        criticality: Criticality::Medium,
        category: Category::CertificateOperation,
    },
    EventInfo {
        id: EventId(4872),
        summary: "Publish CRL",
        description: "This is an even that the CRL has been published, this does not have to be tracked as we take care of it for you.",
        criticality: Criticality::Low,
        category: Category::CertificateOperation,
    },
    EventInfo {
        id: EventId(4887),
        summary: "Certificate was created",
        description: "This event indicates a certificate was created successfully",
        criticality: Criticality::Low,
        category: Category::CertificateOperation,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lists_the_eleven_events_in_document_order() {
        let ids: Vec<u32> = catalog().iter().map(|info| info.id.get()).collect();
        assert_eq!(ids, [4882, 92, 23, 19, 28, 22, 12, 4888, 4870, 4872, 4887]);
    }

    #[test]
    fn categories_follow_the_two_tables() {
        for info in catalog() {
            let expected = if [4888, 4870, 4872, 4887].contains(&info.id.get()) {
                Category::CertificateOperation
            } else {
                Category::CaOperation
            };
            assert_eq!(info.category, expected, "event {}", info.id);
        }
    }

    #[test]
    fn parse_accepts_catalog_ids_and_rejects_others_including_zero() {
        for info in catalog() {
            assert_eq!(EventId::parse(info.id.get()), Ok(info.id));
        }
        for bad in [0, 1, 4889, u32::MAX] {
            assert_eq!(EventId::parse(bad), Err(UnknownEventId(bad)));
        }
        assert!(UnknownEventId(5).to_string().contains("Event ID 5"));
    }

    #[test]
    fn info_returns_the_published_texts() {
        let denied = EventId::parse(4888).expect("catalog id").info();
        assert_eq!(
            denied.summary,
            "Certificate request denied due to insufficient permissions"
        );
        assert_eq!(denied.criticality, Criticality::High);
        let crl = EventId::parse(4872).expect("catalog id").info();
        assert_eq!(crl.summary, "Publish CRL");
        assert_eq!(crl.criticality, Criticality::Low);
    }

    #[test]
    fn connection_test_is_low_and_outside_the_catalog() {
        let info = EventId::CONNECTION_TEST.info();
        assert_eq!(info.summary, "SIEM connection test");
        assert_eq!(info.criticality, Criticality::Low);
        assert!(catalog().iter().all(|i| i.id != EventId::CONNECTION_TEST));
    }

    #[test]
    fn criticality_maps_to_datadog_status() {
        assert_eq!(Criticality::High.datadog_status(), "error");
        assert_eq!(Criticality::Medium.datadog_status(), "warning");
        assert_eq!(Criticality::Low.datadog_status(), "info");
        assert_eq!(Criticality::Medium.as_str(), "Medium");
    }

    #[test]
    fn an_event_filter_takes_catalog_ids_refuses_none_and_unknown_and_all_means_every_event() {
        let some = EventFilter::parse(&["4888", "12", "4888"]).unwrap();
        assert_eq!(some.ids(), Some(&[12, 4888][..]));
        assert!(some.sends(EventId::parse(4888).unwrap()));
        assert!(!some.sends(EventId::parse(4887).unwrap()));
        assert!(EventFilter::parse::<&str>(&[]).is_err());
        assert!(EventFilter::parse(&["4899"]).unwrap_err().contains("4899"));
        assert!(EventFilter::parse(&["x"]).is_err());
        let all: Vec<String> = catalog().iter().map(|e| e.id.to_string()).collect();
        assert_eq!(EventFilter::parse(&all).unwrap(), EventFilter::all());
        assert_eq!(EventFilter::all().describe(), "every event");
    }

    #[test]
    fn a_replay_window_reads_datetime_local_values_as_utc_and_names_the_bad_field() {
        let w = ReplayWindow::parse("2026-11-30T09:30", "2026-11-30T10:00:30").unwrap();
        assert_eq!(w.from.to_rfc3339(), "2026-11-30T09:30:00+00:00");
        assert_eq!(w.to.to_rfc3339(), "2026-11-30T10:00:30+00:00");
        assert_eq!(
            ReplayWindow::parse("", "2026-11-30T10:00").unwrap_err().0,
            "replay_from"
        );
        assert_eq!(
            ReplayWindow::parse("2026-11-30T10:00", "yesterday")
                .unwrap_err()
                .0,
            "replay_to"
        );
        let (field, why) = ReplayWindow::parse("2026-11-30T10:00", "2026-11-30T09:00").unwrap_err();
        assert_eq!(field, "replay_to");
        assert!(why.contains("after the start"));
    }

    #[test]
    fn alert_query_matches_the_documented_search() {
        let id = EventId::parse(4882).expect("catalog id");
        assert_eq!(id.alert_query(), "service:EZCA @EventID:4882");
        assert_eq!(
            alert_query(EventId::CONNECTION_TEST),
            "service:EZCA @EventID:0"
        );
    }

    #[test]
    fn event_id_serializes_as_a_number_and_rejects_unknown_ids() {
        let id: EventId = serde_json::from_str("4888").expect("known id");
        assert_eq!(serde_json::to_string(&id).expect("serializes"), "4888");
        assert!(serde_json::from_str::<EventId>("7").is_err());
    }
}
