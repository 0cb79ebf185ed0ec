//! The wire format: one RFC 5424 message per event, its MSG as JSON or CEF, octet-counted.

use crate::domain::events::Criticality;
use crate::domain::syslog::{AppName, SyslogFormat};
use crate::siem::{wire, AuditLog};

/// RFC 5424 facility 13: log audit.
pub const FACILITY_LOG_AUDIT: u8 = 13;

/// Most bytes of one message (rsyslog's default `maxMessageSize`, 8 KiB).
pub const MAX_MESSAGE_BYTES: usize = 8192;

/// What replaces the end of details that do not fit.
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: syslog message limit]";

/// CEF's device fields: who made the events.
pub const CEF_VENDOR: &str = "Keytos";
pub const CEF_PRODUCT: &str = "EZCA";

/// Syslog severity of an event: High 3 (err), Medium 4 (warning), Low 6 (info).
pub fn severity(log: &AuditLog) -> u8 {
    match log.event_id.info().criticality {
        Criticality::High => 3,
        Criticality::Medium => 4,
        Criticality::Low => 6,
    }
}

/// CEF severity (0 to 10) of an event: High 8, Medium 6, Low 3.
pub fn cef_severity(log: &AuditLog) -> u8 {
    match log.event_id.info().criticality {
        Criticality::High => 8,
        Criticality::Medium => 6,
        Criticality::Low => 3,
    }
}

/// A header field of RFC 5424 (HOSTNAME, APP-NAME): printable US-ASCII without spaces, `-`
/// when nothing is left.
fn header_field(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '-' })
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// One event as an RFC 5424 message (without framing), at most [`MAX_MESSAGE_BYTES`].
pub fn message(log: &AuditLog, format: SyslogFormat, hostname: &str, app: &AppName) -> String {
    let pri = u16::from(FACILITY_LOG_AUDIT) * 8 + u16::from(severity(log));
    let head = format!(
        "<{pri}>1 {} {} {} - {} - ",
        wire::rfc3339(log.occurred_at),
        header_field(hostname, 255),
        header_field(app.as_str(), 48),
        log.event_id.get(),
    );
    let budget = MAX_MESSAGE_BYTES.saturating_sub(head.len());
    let body = match format {
        SyslogFormat::Rfc5424 => wire::event_object(log, budget, TRUNCATION_MARKER).to_string(),
        SyslogFormat::Cef => cef(log, budget),
    };
    head + &body
}

/// `MSG-LEN SP SYSLOG-MSG` (RFC 5425 section 4.3, RFC 6587 section 3.4.1).
pub fn frame(message: &str) -> Vec<u8> {
    let mut framed = format!("{} ", message.len()).into_bytes();
    framed.extend_from_slice(message.as_bytes());
    framed
}

/// A CEF header field: `\` and `|` escaped.
pub fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

/// A CEF extension value: `\`, `=` and line breaks escaped.
pub fn cef_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The event in ArcSight's Common Event Format, at most `budget` bytes: the details (`msg`,
/// last) are cut with the marker when the whole does not fit.
pub fn cef(log: &AuditLog, budget: usize) -> String {
    let info = log.event_id.info();
    let mut line = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        cef_header(CEF_VENDOR),
        cef_header(CEF_PRODUCT),
        cef_header(env!("CARGO_PKG_VERSION")),
        log.event_id.get(),
        cef_header(info.summary),
        cef_severity(log),
    );
    let mut fields: Vec<(&str, String)> = vec![
        ("rt", log.occurred_at.timestamp_millis().to_string()),
        ("externalId", log.uuid.to_string()),
        ("cn1Label", "Sequence".into()),
        ("cn1", log.sequence.to_string()),
        ("cs1Label", "SubscriptionId".into()),
        ("cs1", log.subscription_id.to_string()),
        ("cs4Label", "Criticality".into()),
        ("cs4", info.criticality.as_str().into()),
    ];
    if let Some(actor) = &log.actor {
        fields.push(("suser", actor.clone()));
    }
    if let Some(chain) = &log.chain {
        fields.push(("cs2Label", "Hash".into()));
        fields.push(("cs2", chain.hash.clone()));
        fields.push(("cs3Label", "PrevHash".into()));
        fields.push(("cs3", chain.prev_hash.clone()));
    }
    if let Some(last) = log.details.get("LastSequence").and_then(|v| v.as_i64()) {
        fields.push(("cn2Label", "LastSequence".into()));
        fields.push(("cn2", last.to_string()));
    }
    let ext: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{key}={}", cef_value(value)))
        .collect();
    line.push_str(&ext.join(" "));
    let details = cef_value(&log.details.to_string());
    let room = budget.saturating_sub(line.len() + " msg=".len());
    line.push_str(" msg=");
    if details.len() <= room {
        line.push_str(&details);
    } else {
        let keep = room.saturating_sub(TRUNCATION_MARKER.len());
        // Never cut inside a character or an escape (`\=`, `\\`, `\n`).
        let mut end = keep.min(details.len());
        while end > 0 && !details.is_char_boundary(end) {
            end -= 1;
        }
        let mut cut = &details[..end];
        let trailing = cut.len() - cut.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            cut = &cut[..cut.len() - 1];
        }
        line.push_str(cut);
        line.push_str(TRUNCATION_MARKER);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventId;
    use crate::siem::ChainLink;
    use chrono::TimeZone;
    use serde_json::{json, Value};
    use uuid::Uuid;

    fn event(details: Value) -> AuditLog {
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 3, 4, 5, 6, 7)
            .single()
            .expect("a time");
        AuditLog {
            uuid: Uuid::from_u128(7),
            sequence: 42,
            subscription_id: Uuid::from_u128(9),
            event_id: EventId::parse(4888).expect("in the catalog"),
            occurred_at: at,
            recorded_at: at,
            actor: Some("ca-admin@example.com".into()),
            details,
            chain: Some(ChainLink {
                prev_hash: "aa".repeat(32),
                hash: "bb".repeat(32),
            }),
        }
    }

    fn app() -> AppName {
        AppName::parse("").expect("the default")
    }

    #[test]
    fn an_rfc5424_message_carries_the_log_as_json_with_its_sequence_hash_and_uuid() {
        let log = event(json!({"Template": "web server"}));
        let text = message(&log, SyslogFormat::Rfc5424, "pki portal", &app());
        let pri = 13 * 8 + severity(&log);
        let head = format!("<{pri}>1 2026-03-04T05:06:07.000Z pki-portal EZCA - 4888 - ");
        assert!(text.starts_with(&head), "{text}");
        let body: Value = serde_json::from_str(&text[head.len()..]).expect("one line of JSON");
        assert_eq!(body["Sequence"], 42);
        assert_eq!(body["EventID"], 4888);
        assert_eq!(body["EventUuid"], Uuid::from_u128(7).to_string());
        assert_eq!(body["Hash"], "bb".repeat(32));
        assert_eq!(body["details"]["Template"], "web server");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_cef_message_maps_the_event_id_severity_and_identifiers_and_escapes_its_values() {
        let log = event(json!({"Note": "a=b|c\nd\\e"}));
        let text = message(&log, SyslogFormat::Cef, "pki", &app());
        let cef = &text[text.find("CEF:").expect("a CEF body")..];
        let parts: Vec<&str> = cef.splitn(8, '|').collect();
        assert_eq!(parts[0], "CEF:0");
        assert_eq!(parts[1], "Keytos");
        assert_eq!(parts[2], "EZCA");
        assert_eq!(parts[4], "4888");
        assert_eq!(parts[6], cef_severity(&log).to_string());
        let ext = parts[7];
        assert!(
            ext.contains(&format!("externalId={}", Uuid::from_u128(7))),
            "{ext}"
        );
        assert!(ext.contains("cn1Label=Sequence cn1=42"), "{ext}");
        assert!(ext.contains(&format!("cs2={}", "bb".repeat(32))), "{ext}");
        assert!(ext.contains("suser=ca-admin@example.com"), "{ext}");
        // The details' `=`, `\` and line break are escaped; `|` needs none in the extension.
        assert!(ext.contains(r#"msg={"Note":"a\=b|c\\nd\\\\e"}"#), "{ext}");
        assert!(!cef.contains('\n'));
        assert_eq!(cef_header("a|b\\c"), "a\\|b\\\\c");
    }

    #[test]
    fn a_long_event_is_cut_to_the_limit_with_its_identifiers_kept() {
        let log = event(json!({"Blob": "é=\\".repeat(20_000)}));
        for format in [SyslogFormat::Rfc5424, SyslogFormat::Cef] {
            let text = message(&log, format, "pki", &app());
            assert!(
                text.len() <= MAX_MESSAGE_BYTES,
                "{format:?}: {}",
                text.len()
            );
            assert!(text.contains(TRUNCATION_MARKER), "{format:?}");
            assert!(text.contains(&Uuid::from_u128(7).to_string()), "{format:?}");
        }
        let cef = cef(&log, 600);
        let msg = &cef[cef.find(" msg=").expect("msg") + 5..];
        let kept = msg.trim_end_matches(TRUNCATION_MARKER);
        let trailing = kept.len() - kept.trim_end_matches('\\').len();
        assert_eq!(trailing % 2, 0, "no escape cut in half: {kept}");
    }

    #[test]
    fn frames_count_the_bytes_of_the_message() {
        assert_eq!(frame("<110>1 é"), "9 <110>1 é".as_bytes(), "é is two bytes");
    }
}
