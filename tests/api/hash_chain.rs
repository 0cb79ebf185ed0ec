//! The hash chain (DESIGN.md): every log carries `PrevHash` and `Hash`, computed when the event
//! is recorded; `cloudpki verify FILE` checks an export for gaps and breaks.

use std::{path::Path, process::Command};

use crate::support::{fake_datadog::FakeDatadog, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_cloudpki");
const KEY: &str = "0123456789abcdef0123456789abcdef";
const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records `n` events through the API, delivers them to the fake Datadog intake and returns
/// the logs it received, in `Sequence` order.
async fn delivered_logs(n: usize) -> (TestApp, Uuid, String, FakeDatadog, Vec<Value>) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let body: Vec<Value> = (0..n)
        .map(|i| {
            let event_id = [4888, 4887, 4870, 12][i % 4];
            json!({
                "event_id": event_id,
                "actor": format!("operator{i}@example.com"),
                "details": {"serial": format!("{i:04x}"), "ratio": 1.50, "nested": {"b": 1, "a": [true, null]}}
            })
        })
        .collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(body)).await.status(),
        202
    );
    app.state.forwarder().forward_once().await.unwrap();
    let mut logs = intake.logs();
    logs.sort_by_key(|l| l["Sequence"].as_i64());
    assert_eq!(logs.len(), n);
    (app, sub, token, intake, logs)
}

fn verify(dir: &Path, name: &str, text: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN).arg("verify").arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn lines(logs: &[Value]) -> String {
    logs.iter().map(|l| format!("{l}\n")).collect()
}

#[tokio::test]
async fn every_log_carries_a_chain_that_starts_at_zeros_and_links_each_to_the_one_before() {
    let (_app, _sub, _token, _intake, logs) = delivered_logs(5).await;
    assert_eq!(logs[0]["Sequence"], 1);
    assert_eq!(logs[0]["PrevHash"], ZEROS);
    for pair in logs.windows(2) {
        assert_eq!(pair[1]["PrevHash"], pair[0]["Hash"]);
    }
    for log in &logs {
        let hash = log["Hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}

#[tokio::test]
async fn the_hash_is_sha256_of_prev_hash_and_the_rfc8785_form_of_the_event() {
    let (_app, _sub, _token, _intake, logs) = delivered_logs(1).await;
    let log = &logs[0];
    // RFC 8785 by hand: keys sorted, no spaces, 1.50 written as 1.5.
    let details = format!(
        r#"{{"nested":{{"a":[true,null],"b":1}},"ratio":1.5,"serial":"{}"}}"#,
        log["details"]["serial"].as_str().unwrap()
    );
    let canonical = format!(
        r#"{{"Actor":"{}","EventID":{},"EventUuid":"{}","OccurredAt":"{}","Sequence":1,"SubscriptionId":"{}","details":{}}}"#,
        log["Actor"].as_str().unwrap(),
        log["EventID"],
        log["EventUuid"].as_str().unwrap(),
        log["OccurredAt"].as_str().unwrap(),
        log["SubscriptionId"].as_str().unwrap(),
        details
    );
    use sha2::{Digest, Sha256};
    let expected = hex::encode(Sha256::digest(format!("{ZEROS}{canonical}").as_bytes()));
    assert_eq!(log["Hash"], expected);
}

#[tokio::test]
async fn a_retried_request_does_not_advance_the_chain() {
    let (app, _sub, token, intake, logs) = delivered_logs(2).await;
    let id = Uuid::new_v4();
    let body = json!({"id": id, "event_id": 4888});
    assert_eq!(app.post_events(&token, &body).await.status(), 202);
    assert_eq!(app.post_events(&token, &body).await.status(), 202);
    let more = json!({"event_id": 4887});
    assert_eq!(app.post_events(&token, &more).await.status(), 202);
    app.state.forwarder().forward_once().await.unwrap();
    let mut all = intake.logs();
    all.sort_by_key(|l| l["Sequence"].as_i64());
    assert_eq!(all.len(), 4);
    assert_eq!(all[2]["PrevHash"], logs[1]["Hash"]);
    assert_eq!(all[3]["PrevHash"], all[2]["Hash"]);
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(dir.path(), "all.jsonl", &lines(&all));
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn verify_passes_an_intact_export_in_any_order_and_as_a_json_array() {
    let (_app, _sub, _token, _intake, logs) = delivered_logs(6).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(dir.path(), "intact.jsonl", &lines(&logs));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");
    // Log Explorer exports come newest first, as one (pretty-printed) JSON array.
    let mut newest_first = logs.clone();
    newest_first.reverse();
    let array = serde_json::to_string_pretty(&newest_first).unwrap();
    let (code, out) = verify(dir.path(), "export.json", &array);
    assert_eq!(code, 0, "{out}");
    // The shape of Datadog's API answer: our fields under attributes.attributes.
    let api: Vec<Value> = logs
        .iter()
        .map(|l| json!({"id": "AQAAAY", "type": "log", "attributes": {"service": "EZCA", "attributes": l}}))
        .collect();
    let (code, out) = verify(dir.path(), "api.json", &json!({ "data": api }).to_string());
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn verify_reports_a_missing_log_with_its_sequence() {
    let (_app, _sub, _token, _intake, mut logs) = delivered_logs(6).await;
    logs.remove(3); // Sequence 4
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(dir.path(), "gap.jsonl", &lines(&logs));
    assert_eq!(code, 1, "{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.contains("Sequence")).collect();
    assert!(
        problems
            .iter()
            .any(|l| l.contains("Sequence 4") && l.contains("missing")),
        "{out}"
    );
}

#[tokio::test]
async fn verify_reports_an_altered_field_with_its_line_and_sequence() {
    let (_app, _sub, _token, _intake, mut logs) = delivered_logs(6).await;
    logs[2]["details"]["serial"] = json!("ffff");
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = verify(dir.path(), "altered.jsonl", &lines(&logs));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("line 3") && l.contains("Sequence 3") && l.contains("altered")),
        "{out}"
    );
    // The actor too.
    let (_app, _sub, _token, _intake, mut logs) = delivered_logs(3).await;
    logs[1]["Actor"] = json!("someone-else@example.com");
    let (code, out) = verify(dir.path(), "actor.jsonl", &lines(&logs));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Sequence 2"), "{out}");
}

#[tokio::test]
async fn verify_reports_two_logs_swapped() {
    let (_app, _sub, _token, _intake, logs) = delivered_logs(6).await;
    let dir = tempfile::tempdir().unwrap();
    // Their places in the log exchanged: each keeps its content and hash, the numbers swap.
    let mut swapped = logs.clone();
    let (a, b) = (
        swapped[2]["Sequence"].clone(),
        swapped[3]["Sequence"].clone(),
    );
    swapped[2]["Sequence"] = b;
    swapped[3]["Sequence"] = a;
    let (code, out) = verify(dir.path(), "swapped.jsonl", &lines(&swapped));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Sequence 3") || out.contains("Sequence 4"),
        "{out}"
    );
    // Their contents exchanged under the same numbers and hashes.
    let mut swapped = logs.clone();
    for key in ["EventUuid", "EventID", "Actor", "details"] {
        let tmp = swapped[2][key].clone();
        swapped[2][key] = swapped[3][key].clone();
        swapped[3][key] = tmp;
    }
    let (code, out) = verify(dir.path(), "contents.jsonl", &lines(&swapped));
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn verify_explains_an_unreadable_file_with_exit_status_2() {
    let out = Command::new(BIN)
        .arg("verify")
        .arg("/nonexistent/export.jsonl")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
