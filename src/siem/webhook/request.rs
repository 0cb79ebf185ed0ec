//! The request: the `ezca.audit_events` envelope, its `webhook-id`, and the Standard Webhooks
//! signature (and its verification, for receivers and tests).

use super::*;

/// The JSON object of one audit event (see the module doc), at most [`MAX_EVENT_BYTES`].
pub fn event_object(log: &AuditLog) -> Value {
    wire::event_object(log, MAX_EVENT_BYTES, TRUNCATION_MARKER)
}

/// Packs logs, in order, into signed-webhook bodies of at most [`MAX_BATCH_EVENTS`] events and
/// [`MAX_BATCH_BYTES`] bytes. Every log lands in exactly one batch.
///
/// `now` is not used: the body depends on the events alone, so rebuilding a batch for a retry
/// gives the same bytes and the same [`webhook_id`].
pub fn build_batches(logs: &[AuditLog], _now: DateTime<Utc>) -> Vec<Batch> {
    pack(logs, EVENT_TYPE)
}

pub(super) fn pack(logs: &[AuditLog], kind: &str) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut open = OpenBatch::default();
    for log in logs {
        let text = event_object(log).to_string();
        let latest = open
            .latest
            .map_or(log.occurred_at, |t| t.max(log.occurred_at));
        let overhead = envelope(kind, latest, &[]).len();
        let grown = overhead + open.text_bytes + open.texts.len() + text.len();
        if !open.texts.is_empty()
            && (open.texts.len() >= MAX_BATCH_EVENTS || grown > MAX_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut open).close(kind));
        }
        open.push(log, text);
    }
    if !open.texts.is_empty() {
        batches.push(open.close(kind));
    }
    batches
}

#[derive(Default)]
pub(super) struct OpenBatch {
    pub(super) texts: Vec<String>,
    pub(super) text_bytes: usize,
    pub(super) uuids: Vec<Uuid>,
    pub(super) latest: Option<DateTime<Utc>>,
}

impl OpenBatch {
    fn push(&mut self, log: &AuditLog, text: String) {
        self.text_bytes += text.len();
        self.texts.push(text);
        self.uuids.push(log.uuid);
        self.latest = Some(
            self.latest
                .map_or(log.occurred_at, |t| t.max(log.occurred_at)),
        );
    }

    fn close(self, kind: &str) -> Batch {
        let latest = self.latest.unwrap_or_default();
        Batch {
            body: envelope(kind, latest, &self.texts),
            event_uuids: self.uuids,
        }
    }
}

/// `{"type":…,"timestamp":…,"data":{"events":[…]}}` around already serialized events.
pub(super) fn envelope(kind: &str, timestamp: DateTime<Utc>, events: &[String]) -> Vec<u8> {
    let mut body = String::with_capacity(64 + events.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push_str("{\"type\":");
    body.push_str(&json!(kind).to_string());
    body.push_str(",\"timestamp\":");
    body.push_str(&json!(rfc3339(timestamp)).to_string());
    body.push_str(",\"data\":{\"events\":[");
    body.push_str(&events.join(","));
    body.push_str("]}}");
    body.into_bytes()
}

/// The `webhook-id` of a batch: `msg_` + the first 32 hex digits of SHA-256 over the 16-byte
/// UUIDs of its events, in order. The same events give the same id on every retry.
pub fn webhook_id(event_uuids: &[Uuid]) -> String {
    let mut hasher = Sha256::new();
    for uuid in event_uuids {
        hasher.update(uuid.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    format!("msg_{}", &digest[..ID_HEX_DIGITS])
}

pub(super) fn mac(secret: &SigningSecret, id: &str, timestamp: i64) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(secret.hmac_key())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per
/// secret, space-separated, in the order given (current secret first). Empty without secrets.
pub fn sign(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut header = String::new();
    for secret in secrets {
        let mut mac = mac(secret, id, timestamp);
        mac.update(body);
        let signature = BASE64.encode(mac.finalize().into_bytes());
        if !header.is_empty() {
            header.push(' ');
        }
        let _ = write!(header, "{SIGNATURE_VERSION},{signature}");
    }
    header
}

/// Why a receiver refuses a request (see [`verify`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the {0} header is missing or empty")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a whole number of unix seconds")]
    InvalidTimestamp,
    #[error("webhook-timestamp is {skew_secs} s away from now, outside the tolerance (replay?)")]
    OutsideTolerance { skew_secs: i64 },
    #[error("no v1 signature in webhook-signature matches this secret")]
    NoMatchingSignature,
}

/// Checks a request as a Standard Webhooks receiver does: `webhook-id` present, the
/// `webhook-timestamp` within `tolerance` of `now`, and one `v1` signature of
/// `webhook-signature` equal (constant-time) to the HMAC of `"{id}.{timestamp}.{body}"`
/// under `secret`. Signatures of other versions are skipped.
pub fn verify(
    secret: &SigningSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingHeader(name))
    };
    let id = header(HEADER_ID)?;
    let timestamp_text = header(HEADER_TIMESTAMP)?;
    let signatures = header(HEADER_SIGNATURE)?;
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    let skew_secs = now.timestamp().saturating_sub(timestamp);
    let tolerance_secs = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if skew_secs.unsigned_abs() > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::OutsideTolerance { skew_secs });
    }
    let mut expected = mac(secret, id, timestamp);
    expected.update(body);
    for entry in signatures.split(' ') {
        let Some((version, encoded)) = entry.split_once(',') else {
            continue;
        };
        if version != SIGNATURE_VERSION {
            continue;
        }
        let Ok(candidate) = BASE64.decode(encoded) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if expected.clone().verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatchingSignature)
}
