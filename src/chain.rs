//! The hash chain of a subscription's audit log (DESIGN.md): every event's log carries
//! `PrevHash` and `Hash`, so an export can be checked for gaps, removals and edits without
//! asking the service. [`hash`] computes an event's `Hash` when it is recorded; [`verify`] is
//! the check behind `cloudpki verify FILE`.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `PrevHash` of a subscription's first event (`Sequence` 1): 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of one event that its `Hash` covers, as they are sent.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    /// `Actor`: who did it, if anyone.
    pub actor: Option<&'a str>,
    /// `EventID`.
    pub event_id: i32,
    /// `EventUuid` (hashed as its lowercase hyphenated text).
    pub event_uuid: Uuid,
    /// `OccurredAt`, exactly the text sent (RFC 3339 UTC, milliseconds, `Z`).
    pub occurred_at: &'a str,
    /// `Sequence`: 1, 2, 3, … in the subscription.
    pub sequence: i64,
    /// `SubscriptionId` (hashed as its lowercase hyphenated text).
    pub subscription_id: Uuid,
    /// `details`.
    pub details: &'a Value,
}

/// An event's `Hash`: lowercase hex SHA-256 of the text of `prev_hash` (the previous event's
/// `Hash`, or [`GENESIS`]) followed by the RFC 8785 canonical JSON of the object
/// `{"Actor", "EventID", "EventUuid", "OccurredAt", "Sequence", "SubscriptionId", "details"}`.
/// The members are fed straight into the hasher in their canonical (UTF-16) key order, each
/// value canonicalised on its own, so no object is built.
pub fn hash(prev_hash: &str, link: &Link<'_>) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    member(&mut h, b"{\"Actor\":", &link.actor);
    member(&mut h, b",\"EventID\":", &link.event_id);
    member(&mut h, b",\"EventUuid\":", &link.event_uuid);
    member(&mut h, b",\"OccurredAt\":", &link.occurred_at);
    member(&mut h, b",\"Sequence\":", &link.sequence);
    member(&mut h, b",\"SubscriptionId\":", &link.subscription_id);
    member(&mut h, b",\"details\":", link.details);
    h.update(b"}");
    hex::encode(h.finalize())
}

fn member<T: Serialize>(h: &mut Sha256, key: &[u8], value: &T) {
    h.update(key);
    // A hasher never fails to take bytes, and these values have string keys and finite numbers.
    let written = serde_json_canonicalizer::to_writer(value, h);
    debug_assert!(written.is_ok(), "canonical JSON into a hasher failed");
}

/// What [`verify`] found in an export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Distinct `Sequence`s of chained logs (resent copies not counted).
    pub chained: usize,
    /// Extra identical copies of a log (resends, which at-least-once delivery allows).
    pub duplicates: usize,
    /// Lines or array elements holding no log of ours, and connection tests (`EventID` 0).
    pub skipped: usize,
    /// Heartbeats (`EventID` 1).
    pub heartbeats: usize,
    /// Logs marked `Truncated: true`: their `details` were cut for the SIEM, so their content
    /// cannot be checked, but their `Hash` still links the chain.
    pub truncated: usize,
    /// Lowest `Sequence` seen (above 1 for an export of a time window).
    pub first: Option<i64>,
    /// Highest `Sequence` seen.
    pub last: Option<i64>,
    /// Gaps and breaks, one line of output each.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// One line about the export, e.g.
    /// `intact: 120 logs, Sequence 1..120 (2 resent copies, 3 heartbeats)`.
    pub fn summary(&self) -> String {
        let mut out = match self.problems.len() {
            0 => "intact: ".to_string(),
            n => format!("NOT intact ({}): ", plural(n, "problem", "problems")),
        };
        out += &match (self.first, self.last) {
            (Some(first), Some(last)) => {
                let logs = plural(self.chained, "log", "logs");
                format!("{logs}, Sequence {first}..{last}")
            }
            _ => "no chained logs".to_string(),
        };
        let cut = "truncated (content not checkable)";
        let extras: Vec<String> = [
            (self.duplicates, "resent copy", "resent copies"),
            (self.heartbeats, "heartbeat", "heartbeats"),
            (self.skipped, "skipped", "skipped"),
            (self.truncated, cut, cut),
        ]
        .into_iter()
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| plural(n, one, many))
        .collect();
        if !extras.is_empty() {
            out += &format!(" ({})", extras.join(", "));
        }
        if let Some(first) = self.first.filter(|first| *first > 1) {
            out += &format!("; starts at Sequence {first}: earlier logs are not in this export");
        }
        out
    }
}

fn at(line: usize, sequence: Option<i64>, kind: ProblemKind) -> Problem {
    Problem {
        line,
        sequence,
        kind,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One gap or break found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the log in the file (for a JSON array, where its element starts); for
    /// a gap, of the first log after it; for a trailing gap, of the heartbeat.
    pub line: usize,
    /// The log's `Sequence`; for a gap, the first missing one.
    pub sequence: Option<i64>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// `Sequence` `from..=to` are missing; the last log before them is at `prev_line`.
    Gap {
        from: i64,
        to: i64,
        prev_line: usize,
    },
    /// The log's `Hash` does not match its `PrevHash` and content.
    Altered,
    /// The log's `PrevHash` is not `expected_prev`, the `Hash` of `Sequence - 1`.
    Unlinked { expected_prev: String },
    /// `Sequence` 1's `PrevHash` is not [`GENESIS`].
    BadGenesis,
    /// Another copy of this `Sequence` has a different `Hash` or `PrevHash`.
    Conflict,
    /// A log of ours lacks a field or has one of the wrong form.
    Malformed(String),
    /// The line (or the document) is not JSON.
    NotJson(String),
    /// A heartbeat's `LastSequence` says that `from..=to` exist after the export's last log.
    TrailingGap { from: i64, to: i64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = |from: i64, to: i64| match to - from + 1 {
            1 => format!("Sequence {from}: missing (1 log)"),
            n => format!("Sequence {from}..{to}: missing ({n} logs)"),
        };
        let (line, seq) = (self.line, self.sequence.unwrap_or(0));
        let at = match self.sequence {
            Some(seq) => format!("line {line}, Sequence {seq}"),
            None => format!("line {line}"),
        };
        match &self.kind {
            ProblemKind::Gap {
                from,
                to,
                prev_line,
            } => {
                let gap = missing(*from, *to);
                write!(f, "{gap}, between line {prev_line} and line {line}")
            }
            ProblemKind::TrailingGap { from, to } => {
                let gap = missing(*from, *to);
                write!(
                    f,
                    "{at}: {gap} after the export's last log (a heartbeat's LastSequence)"
                )
            }
            ProblemKind::Altered => write!(f, "{at}: altered: its Hash does not match its content"),
            ProblemKind::Unlinked { expected_prev } => {
                let short = expected_prev.get(..12).unwrap_or(expected_prev);
                let prev = seq.saturating_sub(1);
                write!(
                    f,
                    "{at}: break: does not follow Sequence {prev} (whose Hash is {short}…)"
                )
            }
            ProblemKind::BadGenesis => write!(f, "{at}: break: its PrevHash is not 64 zeros"),
            ProblemKind::Conflict => write!(f, "{at}: conflicting copies with different Hashes"),
            ProblemKind::Malformed(what) => write!(f, "{at}: malformed: {what}"),
            ProblemKind::NotJson(what) => write!(f, "{at}: not JSON: {what}"),
        }
    }
}

/// Checks an export of one subscription's logs: JSON lines, or one JSON document (an array,
/// Datadog's `{"data": [...]}`, …, pretty-printed or not). In each line or array element the
/// nearest objects with a `Sequence` or `LastSequence` key are logs of ours: at the top, under
/// `attributes.attributes` (Datadog), under `event` (Splunk HEC). `EventID` and `Sequence`
/// may be numeric strings.
///
/// The order in the file does not matter (exports are often newest-first): logs are sorted by
/// `Sequence`, so swapping two lines is not a problem, but swapping two logs' contents or their
/// `Sequence` numbers is, as the `Hash` covers both. Each `Hash` is recomputed; each `PrevHash`
/// must be the `Hash` of `Sequence - 1` when that log is in the export; missing `Sequence`s
/// between the lowest and the highest are gaps; `Sequence` 1 must follow [`GENESIS`]; a
/// heartbeat's `LastSequence` above the highest `Sequence` is a trailing gap. An export that
/// starts after `Sequence` 1 (a time window) is fine: [`Report::first`] says where it starts.
/// Identical copies of a log are resends, counted in [`Report::duplicates`]. A log marked
/// `Truncated: true` only links the chain: its content cannot be checked.
pub fn verify(text: &str) -> Report {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let newlines = text.match_indices('\n').map(|(at, _)| at).collect();
    let mut scan = Scan {
        text,
        newlines,
        entries: Vec::new(),
        beat: None,
        report: Report::default(),
    };
    scan.read();
    scan.check()
}

/// A chained log: where, its numbers, and the hash of its content (`None` if truncated).
struct Entry {
    line: usize,
    seq: i64,
    hash: String,
    prev: String,
    computed: Option<String>,
}

impl Entry {
    fn altered(&self) -> bool {
        self.computed.as_ref().is_some_and(|c| *c != self.hash)
    }
}

struct Scan<'t> {
    text: &'t str,
    newlines: Vec<usize>,
    entries: Vec<Entry>,
    /// The highest `LastSequence` of a heartbeat, and its line.
    beat: Option<(i64, usize)>,
    report: Report,
}

impl Scan<'_> {
    fn line_of(&self, at: usize) -> usize {
        self.newlines.partition_point(|n| *n < at) + 1
    }

    fn problem(&mut self, line: usize, sequence: Option<i64>, kind: ProblemKind) {
        self.report.problems.push(at(line, sequence, kind));
    }

    /// Reads the file as a stream of JSON values (JSON lines or one document); if that fails
    /// but the first line is JSON on its own, line by line, so a bad line costs one problem.
    fn read(&mut self) {
        let text = self.text;
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let (mut values, mut end) = (Vec::new(), 0);
        let failure = loop {
            match stream.next() {
                None => break None,
                Some(Ok(value)) => values.push((skip_ws(text, end), value)),
                Some(Err(e)) => break Some(e),
            }
            end = stream.byte_offset();
        };
        if let Some(e) = failure {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if serde_json::from_str::<Value>(first).is_err() {
                self.problem(e.line(), None, not_json(&e));
            } else {
                values.clear();
                let mut start = 0;
                for raw in text.split('\n') {
                    let at = skip_ws(text, start);
                    start += raw.len() + 1;
                    match serde_json::from_str::<Value>(raw) {
                        _ if raw.trim().is_empty() => {}
                        Ok(value) => values.push((at, value)),
                        Err(e) => self.problem(self.line_of(at), None, not_json(&e)),
                    }
                }
            }
        }
        for (at, value) in values {
            self.unit(&value, at);
        }
    }

    /// Walks a line or an array element starting at byte `at`; one holding no log of ours
    /// counts as skipped.
    fn unit(&mut self, value: &Value, at: usize) -> usize {
        let skipped = self.report.skipped;
        let found = self.walk(value, at, self.line_of(at));
        if found == 0 && self.report.skipped == skipped {
            self.report.skipped += 1;
        }
        found
    }

    /// Takes the logs of ours in `value`, which starts at byte `at`.
    fn walk(&mut self, value: &Value, at: usize, line: usize) -> usize {
        match value {
            Value::Object(map)
                if map.contains_key("Sequence") || map.contains_key("LastSequence") =>
            {
                self.take(map, line);
                1
            }
            Value::Object(map) => children(self.text, at)
                .into_iter()
                .filter_map(|(key, at)| Some((map.get(&key?)?, at)))
                .map(|(child, at)| self.walk(child, at, line))
                .sum(),
            Value::Array(items) => items
                .iter()
                .zip(children(self.text, at))
                .filter(|(item, _)| item.is_object() || item.is_array())
                .map(|(item, (_, at))| self.unit(item, at))
                .sum(),
            _ => 0,
        }
    }

    /// Takes one log of ours: a chained log, a heartbeat or a connection test.
    fn take(&mut self, log: &Map<String, Value>, line: usize) {
        let (event_id, sequence) = (int(log.get("EventID")), int(log.get("Sequence")));
        if event_id == Some(0) {
            self.report.skipped += 1;
        } else if event_id == Some(1) || (event_id.is_none() && log.contains_key("LastSequence")) {
            self.report.heartbeats += 1;
            match int(log.get("LastSequence")) {
                Some(last) if self.beat.is_none_or(|(max, _)| last > max) => {
                    self.beat = Some((last, line));
                }
                Some(_) => {}
                None => {
                    let what = "heartbeat without a numeric LastSequence".to_string();
                    self.problem(line, sequence, ProblemKind::Malformed(what));
                }
            }
        } else {
            match entry(log, line) {
                Ok(entry) => self.entries.push(entry),
                Err(what) => self.problem(line, sequence, ProblemKind::Malformed(what)),
            }
        }
    }

    fn check(mut self) -> Report {
        let mut r = std::mem::take(&mut self.report);
        let unreadable = r.problems.len();
        self.entries.sort_by_key(|e| (e.seq, e.line));
        let mut reps: Vec<&Entry> = Vec::new();
        for copies in self.entries.chunk_by(|a, b| a.seq == b.seq) {
            // The first checked and unaltered copy stands for its Sequence.
            let rank = |e: &&Entry| (e.altered(), e.computed.is_none());
            let Some(rep) = copies.iter().min_by_key(rank) else {
                continue;
            };
            for e in copies {
                let kind = if e.altered() {
                    ProblemKind::Altered
                } else if std::ptr::eq(e, rep) {
                    continue;
                } else if e.hash == rep.hash && e.prev == rep.prev {
                    r.duplicates += 1;
                    continue;
                } else {
                    ProblemKind::Conflict
                };
                r.problems.push(at(e.line, Some(e.seq), kind));
            }
            r.truncated += usize::from(rep.computed.is_none());
            reps.push(rep);
        }
        r.chained = reps.len();
        (r.first, r.last) = (reps.first().map(|e| e.seq), reps.last().map(|e| e.seq));
        if let Some(first) = reps.first().filter(|e| e.seq == 1 && e.prev != GENESIS) {
            r.problems
                .push(at(first.line, Some(1), ProblemKind::BadGenesis));
        }
        for pair in reps.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (sequence, kind) = if b.seq > a.seq + 1 {
                let (from, to, prev_line) = (a.seq + 1, b.seq - 1, a.line);
                (
                    from,
                    ProblemKind::Gap {
                        from,
                        to,
                        prev_line,
                    },
                )
            } else if b.prev != a.hash {
                (
                    b.seq,
                    ProblemKind::Unlinked {
                        expected_prev: a.hash.clone(),
                    },
                )
            } else {
                continue;
            };
            r.problems.push(at(b.line, Some(sequence), kind));
        }
        if let (Some(last), Some((to, line))) = (r.last, self.beat) {
            if to > last {
                let kind = ProblemKind::TrailingGap { from: last + 1, to };
                r.problems.push(at(line, None, kind));
            }
        }
        // Problems of unreadable logs in file order, then those of the chain by Sequence.
        r.problems[unreadable..].sort_by_key(|p| p.sequence.unwrap_or(i64::MAX));
        r
    }
}

/// Reads a chained log's fields and recomputes its hash.
fn entry(log: &Map<String, Value>, line: usize) -> Result<Entry, String> {
    let positive = int(log.get("Sequence")).filter(|s| *s >= 1);
    let seq = positive.ok_or("Sequence is not a positive integer")?;
    let event_id = int(log.get("EventID")).and_then(|n| i32::try_from(n).ok());
    let event_id = event_id.ok_or("EventID is not a number")?;
    let (hash_, prev) = (text(log, "Hash")?, text(log, "PrevHash")?);
    for (key, value) in [("Hash", hash_), ("PrevHash", prev)] {
        let hex = |b| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if value.len() != 64 || !value.bytes().all(hex) {
            return Err(format!("{key} is not 64 lowercase hex digits"));
        }
    }
    let uuid = |key| Uuid::parse_str(text(log, key)?).map_err(|_| format!("{key} is not a uuid"));
    let actor = match log.get("Actor") {
        None | Some(Value::Null) => None,
        Some(Value::String(actor)) => Some(actor.as_str()),
        Some(_) => return Err("Actor is neither a string nor null".into()),
    };
    let details = log.get("details").ok_or("details missing")?;
    // Some SIEMs (Sentinel's dynamic columns) export an object as its JSON text.
    let parsed = details.as_str().and_then(|s| serde_json::from_str(s).ok());
    let link = Link {
        actor,
        event_id,
        event_uuid: uuid("EventUuid")?,
        occurred_at: text(log, "OccurredAt")?,
        sequence: seq,
        subscription_id: uuid("SubscriptionId")?,
        details: parsed
            .as_ref()
            .filter(|v: &&Value| v.is_object())
            .unwrap_or(details),
    };
    let truncated = log.get("Truncated") == Some(&Value::Bool(true));
    let computed = (!truncated).then(|| hash(prev, &link));
    Ok(Entry {
        line,
        seq,
        hash: hash_.to_string(),
        prev: prev.to_string(),
        computed,
    })
}

fn text<'m>(log: &'m Map<String, Value>, key: &str) -> Result<&'m str, String> {
    let value = log.get(key).ok_or_else(|| format!("{key} missing"))?;
    value
        .as_str()
        .ok_or_else(|| format!("{key} is not a string"))
}

/// A whole number, also from a numeric string or a float without a fraction.
fn int(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn not_json(e: &serde_json::Error) -> ProblemKind {
    let message = e.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(&message[..], |at| &message[..at]);
    ProblemKind::NotJson(format!("{message} (column {})", e.column()))
}

/// Byte offset of the first non-whitespace byte at or after `from`.
fn skip_ws(text: &str, from: usize) -> usize {
    let rest = text.get(from..).unwrap_or("");
    text.len() - rest.trim_start_matches([' ', '\t', '\n', '\r']).len()
}

/// Where each member of the JSON array or object opening at byte `open` starts, with its key
/// for an object. The text there is valid JSON (serde_json has read it).
fn children(text: &str, open: usize) -> Vec<(Option<String>, usize)> {
    let b = text.as_bytes();
    let (mut out, mut depth, mut i, mut next) = (Vec::new(), 0usize, open, false);
    while let Some(&c) = b.get(i) {
        if next && !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b']' | b'}') {
            next = false;
            let mut key = None;
            if b.get(open) == Some(&b'{') {
                let end = string_end(b, i);
                key = text.get(i..end).and_then(|k| serde_json::from_str(k).ok());
                i = skip_ws(text, skip_ws(text, end) + 1); // past the colon
            }
            out.push((key, i));
            continue;
        }
        match c {
            b'"' => i = string_end(b, i) - 1,
            b'[' | b'{' => (depth, next) = (depth + 1, depth == 0),
            b']' | b'}' if depth <= 1 => break,
            b']' | b'}' => depth -= 1,
            b',' => next = depth == 1,
            _ => {}
        }
        i += 1;
    }
    out
}

/// Byte offset just past the JSON string starting at `start`.
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUB: &str = "2b4e6c8a-1d3f-4a5b-9c7d-0e1f2a3b4c5d";

    /// One event's log as the service sends it, following `prev`.
    fn event(seq: i64, prev: &str) -> Value {
        let details = json!({ "serial": format!("4f:{seq:02x}"), "n": seq * 10 });
        let occurred_at = format!("2026-11-30T12:00:0{seq}.123Z");
        let (uuid, sub) = (Uuid::from_u128(seq as u128), Uuid::parse_str(SUB).unwrap());
        let actor = (seq % 2 == 0).then_some("alice@example.com");
        let link = Link {
            actor,
            event_id: 4870,
            event_uuid: uuid,
            occurred_at: &occurred_at,
            sequence: seq,
            subscription_id: sub,
            details: &details,
        };
        json!({
            "OccurredAt": occurred_at, "Sequence": seq, "EventID": 4870,
            "EventSummary": "A certificate has been revoked", "Criticality": "Medium",
            "SubscriptionId": sub, "EventUuid": uuid, "Actor": actor, "details": details,
            "PrevHash": prev, "Hash": hash(prev, &link),
        })
    }

    fn chain(n: i64) -> Vec<Value> {
        let mut prev = GENESIS.to_string();
        let mut next = |seq| {
            let log = event(seq, &prev);
            prev = log["Hash"].as_str().unwrap().to_string();
            log
        };
        (1..=n).map(&mut next).collect()
    }

    fn lines(logs: &[Value]) -> String {
        logs.iter().map(|log| format!("{log}\n")).collect()
    }

    fn heartbeat(last: i64) -> Value {
        json!({ "OccurredAt": "2026-11-30T13:00:00.000Z", "Sequence": 0, "EventID": 1,
                "EventSummary": "Export heartbeat", "SubscriptionId": SUB, "LastSequence": last })
    }

    #[test]
    fn known_answer() {
        // sha256 of GENESIS followed by this text, computed with python3's hashlib (`\n` is the
        // two characters backslash and n):
        // {"Actor":"alice@example.com","EventID":4870,"EventUuid":"6f9619ff-8b86-4011-b42d-00c04fc964ff","OccurredAt":"2026-11-30T12:00:00.123Z","Sequence":1,"SubscriptionId":"2b4e6c8a-1d3f-4a5b-9c7d-0e1f2a3b4c5d","details":{"ca":"Zürich €","ratio":2.5,"reason":"key\ncompromise","serial":"4f:1a"}}
        let details = json!({ "serial": "4f:1a", "reason": "key\ncompromise", "ratio": 2.50, "ca": "Zürich €" });
        let link = Link {
            actor: Some("alice@example.com"),
            event_id: 4870,
            event_uuid: "6F9619FF-8B86-4011-B42D-00C04FC964FF".parse().unwrap(),
            occurred_at: "2026-11-30T12:00:00.123Z",
            sequence: 1,
            subscription_id: SUB.parse().unwrap(),
            details: &details,
        };
        let expected = "441ecb794a8a71117247737ef4858190a01d0890c5281b56e98d6d28d9f9b7ac";
        assert_eq!(hash(GENESIS, &link), expected);
    }

    #[test]
    fn hash_is_sha256_of_prev_and_canonical_object() {
        let details = json!({ "z": [1.0, 1e21, -0.0, 0.000001], "é": null, "a": { "b": true } });
        let (uuid, sub, seq) = (Uuid::new_v4(), Uuid::new_v4(), 9_007_199_254_740_991_i64);
        for actor in [None, Some("a\"\\\u{1}\u{7f}\u{2028}é😀/\t")] {
            let link = Link {
                actor,
                event_id: -7,
                event_uuid: uuid,
                occurred_at: "x\ny",
                sequence: seq,
                subscription_id: sub,
                details: &details,
            };
            let object = json!({ "Actor": actor, "EventID": -7, "EventUuid": uuid, "OccurredAt": "x\ny",
                "Sequence": seq, "SubscriptionId": sub, "details": details });
            let mut bytes = GENESIS.as_bytes().to_vec();
            bytes.extend(serde_json_canonicalizer::to_vec(&object).unwrap());
            assert_eq!(hash(GENESIS, &link), hex::encode(Sha256::digest(&bytes)));
        }
    }

    #[test]
    fn canonicalizer_is_rfc8785() {
        let pipe = |text: &str| serde_json_canonicalizer::pipe(text).unwrap();
        // Numbers of RFC 8785 appendix B. Integers go through f64 as in ECMAScript, so
        // 2^53 + 1 comes out as 2^53.
        let numbers = "[1.0, 1e21, 1e20, -0.0, 5e-324, 0.000001, 9.999999999999997e-7, \
                       333333333.3333333, 1e23, 1.7976931348623157e308, 9007199254740993]";
        let canonical = "[1,1e+21,100000000000000000000,0,5e-324,0.000001,9.999999999999997e-7,\
                         333333333.3333333,1e+23,1.7976931348623157e+308,9007199254740992]";
        assert_eq!(pipe(numbers), canonical);
        // Section 3.2.3: keys sorted by UTF-16 code units (the emoji's surrogates before U+FB33).
        let keys = r#"{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}"#;
        assert_eq!(
            pipe(keys),
            "{\"\\r\":2,\"1\":4,\"\u{80}\":6,\"\u{f6}\":7,\"\u{20ac}\":1,\"\u{1f600}\":5,\"\u{fb33}\":3}"
        );
        // Section 3.2.2's example.
        let input = r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#;
        let output = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(pipe(input), output);
    }

    #[test]
    fn order_of_lines_does_not_matter_but_swapped_contents_do() {
        let mut logs = chain(6);
        let report = verify(&lines(&logs));
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(
            (report.chained, report.first, report.last),
            (6, Some(1), Some(6))
        );
        assert_eq!(report.summary(), "intact: 6 logs, Sequence 1..6");
        logs.reverse();
        assert!(verify(&lines(&logs)).is_intact());
        // Logs 3 and 4 swap their contents but keep their Sequence numbers...
        logs.swap(2, 3);
        (logs[2]["Sequence"], logs[3]["Sequence"]) = (json!(4), json!(3));
        assert!(!verify(&lines(&logs)).is_intact());
        // ...or swap their Sequence numbers only.
        logs.swap(2, 3);
        let problems = verify(&lines(&logs)).problems;
        assert_eq!(
            problems
                .iter()
                .filter(|p| p.kind == ProblemKind::Altered)
                .count(),
            2
        );
    }

    #[test]
    fn gaps_and_alterations_are_named() {
        let mut logs = chain(6);
        logs.remove(2);
        let report = verify(&lines(&logs));
        let gap = ProblemKind::Gap {
            from: 3,
            to: 3,
            prev_line: 2,
        };
        assert_eq!(report.problems, vec![at(3, Some(3), gap)]);
        let text = "Sequence 3: missing (1 log), between line 2 and line 3";
        assert_eq!(report.problems[0].to_string(), text);
        assert!(report
            .summary()
            .starts_with("NOT intact (1 problem): 5 logs, Sequence 1..6"));
        logs[3]["details"]["serial"] = json!("ff:ff");
        let report = verify(&lines(&logs));
        assert_eq!(report.problems[1], at(4, Some(5), ProblemKind::Altered));
        let text = "line 4, Sequence 5: altered: its Hash does not match its content";
        assert_eq!(report.problems[1].to_string(), text);
    }

    #[test]
    fn datadog_exports_are_read() {
        let wrap = |mut log: Value| {
            log["EventID"] = json!("4870");
            log["Sequence"] = json!(log["Sequence"].to_string());
            let attributes =
                json!({ "service": "cloudpki", "tags": ["env:prod"], "attributes": log });
            json!({ "id": "AQAAAY", "type": "log", "attributes": attributes })
        };
        let items: Vec<Value> = chain(6).into_iter().map(wrap).collect();
        for doc in [
            json!({ "data": items.clone(), "meta": {} }),
            Value::Array(items),
        ] {
            let report = verify(&serde_json::to_string_pretty(&doc).unwrap());
            assert!(report.is_intact(), "{:?}", report.problems);
            assert_eq!((report.chained, report.skipped), (6, 0));
        }
        // In a pretty-printed array a problem names the line where its element starts.
        let mut logs = chain(3);
        logs[1]["Actor"] = json!("mallory");
        let text = serde_json::to_string_pretty(&logs).unwrap();
        let start = text.match_indices("\n  {").nth(1).unwrap().0;
        let line = text[..=start].matches('\n').count() + 1;
        assert_eq!(
            verify(&text).problems,
            vec![at(line, Some(2), ProblemKind::Altered)]
        );
    }

    #[test]
    fn resends_are_duplicates_but_forged_copies_conflict() {
        let mut logs = chain(6);
        logs.push(logs[2].clone());
        let report = verify(&lines(&logs));
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!((report.chained, report.duplicates), (6, 1));
        assert_eq!(
            report.summary(),
            "intact: 6 logs, Sequence 1..6 (1 resent copy)"
        );
        logs.push(event(3, &"ab".repeat(32)));
        assert_eq!(
            verify(&lines(&logs)).problems,
            vec![at(8, Some(3), ProblemKind::Conflict)]
        );
    }

    #[test]
    fn heartbeats_reveal_trailing_gaps() {
        let mut logs = chain(6);
        logs.push(heartbeat(6));
        let report = verify(&lines(&logs));
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.heartbeats, 1);
        logs[6] = heartbeat(9);
        let problems = verify(&lines(&logs)).problems;
        let gap = ProblemKind::TrailingGap { from: 7, to: 9 };
        assert_eq!(problems, vec![at(7, None, gap)]);
        let text = "line 7: Sequence 7..9: missing (3 logs) after the export's last log \
                    (a heartbeat's LastSequence)";
        assert_eq!(problems[0].to_string(), text);
    }

    #[test]
    fn windows_noise_and_bad_input() {
        let logs = chain(6);
        let test = json!({ "Sequence": 0, "EventID": 0, "EventSummary": "SIEM connection test" });
        let other = r#"{"message": "not ours"}"#;
        let text = format!(
            "{}{other}\n{test}\n\n{}",
            lines(&logs[3..4]),
            lines(&logs[4..])
        );
        let report = verify(&text);
        assert!(report.is_intact(), "{:?}", report.problems);
        let summary = "intact: 3 logs, Sequence 4..6 (2 skipped); \
                       starts at Sequence 4: earlier logs are not in this export";
        assert_eq!(report.summary(), summary);
        let problems = verify(&format!("{text}{{\"Sequence\": 7,\n")).problems;
        assert_eq!(problems.len(), 1);
        let message = problems[0].to_string();
        assert!(
            message.starts_with("line 7: not JSON: EOF while parsing"),
            "{message}"
        );
        let mut first = event(1, &"11".repeat(32));
        let problems = verify(&lines(&[first.clone()])).problems;
        assert_eq!(problems, vec![at(1, Some(1), ProblemKind::BadGenesis)]);
        first["Hash"] = json!("ABC");
        let malformed = ProblemKind::Malformed("Hash is not 64 lowercase hex digits".into());
        assert_eq!(
            verify(&lines(&[first])).problems,
            vec![at(1, Some(1), malformed)]
        );
    }

    #[test]
    fn stringified_details_and_truncated_logs() {
        let mut logs = chain(3);
        logs[0]["details"] = json!(logs[0]["details"].to_string());
        logs[1]["details"] = json!("{\"serial\":\"4f:0…[truncated]");
        logs[1]["Truncated"] = json!(true);
        let report = verify(&lines(&logs));
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.truncated, 1);
        logs[1]["Truncated"] = json!(false);
        assert_eq!(
            verify(&lines(&logs)).problems,
            vec![at(2, Some(2), ProblemKind::Altered)]
        );
    }
}
