//! Unit tests of Microsoft Sentinel: request bytes, answers classified, settings parsed.

use super::*;
use chrono::TimeZone;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 4, h, m, 0)
        .single()
        .expect("valid time")
}

fn config() -> SentinelConfig {
    SentinelConfig {
        cloud: AzureCloud::Public,
        login_base: AzureCloud::Public.default_login_base(),
        tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("tenant"),
        client_id: ClientId::parse("0d3c8e5a-1b2f-4c6d-9e8f-123456789abc").expect("client"),
        client_secret: ClientSecret::parse("abc8Q~topsecretvalue.WXYZ").expect("secret"),
        endpoint: IngestionEndpoint::parse("https://x.eastus-1.ingest.monitor.azure.com")
            .expect("endpoint"),
        dcr_id: DcrImmutableId::parse("dcr-000a00a000a00000a000000aa000a0aa").expect("dcr"),
        stream: StreamName::parse("Custom-EzcaAudit_CL").expect("stream"),
    }
}

#[test]
fn log_object_has_time_generated_and_the_datadog_attributes() {
    let log = audit(4888, at(10, 0), json!({"template": "Web Server"}));
    let value = log_object(&log, "pki.example.com", at(10, 5));
    assert_eq!(
        value,
        json!({
            "TimeGenerated": "2025-03-04T10:00:00.000Z",
            "OccurredAt": "2025-03-04T10:00:00.000Z",
            "Sequence": 0,
            "EventID": 4888,
            "EventSummary": "Certificate request denied due to insufficient permissions",
            "Criticality": "High",
            "SubscriptionId": log.subscription_id.to_string(),
            "EventUuid": log.uuid.to_string(),
            "Actor": "alice@example.com",
            "details": {"template": "Web Server"},
            "message": "Certificate request denied due to insufficient permissions (Event ID 4888) by alice@example.com",
            "Hostname": "pki.example.com",
        })
    );
    let names: Vec<&str> = STREAM_COLUMNS.iter().map(|(name, _)| *name).collect();
    for key in value.as_object().expect("object").keys() {
        assert!(names.contains(&key.as_str()), "{key} is a declared column");
    }
}

#[test]
fn an_event_azure_would_redate_is_sent_now_with_its_original_time() {
    let now = Utc
        .with_ymd_and_hms(2025, 3, 7, 0, 0, 0)
        .single()
        .expect("t");
    let value = log_object(&audit(19, at(0, 0), json!({})), "h", now);
    assert_eq!(value["TimeGenerated"], "2025-03-07T00:00:00.000Z");
    assert_eq!(value["OriginalTime"], "2025-03-04T00:00:00.000Z");
    let recent = log_object(&audit(19, at(0, 0), json!({})), "h", at(20, 0));
    assert_eq!(recent["TimeGenerated"], "2025-03-04T00:00:00.000Z");
    assert!(recent.get("OriginalTime").is_none());
}

#[test]
fn details_over_64_kilobytes_are_cut_and_marked_never_dropped() {
    let log = audit(4887, at(10, 0), json!({ "blob": "x\"".repeat(40_000) }));
    let value = log_object(&log, "h", at(10, 0));
    let details = value["details"].as_str().expect("details became text");
    assert!(details.ends_with(TRUNCATION_MARKER));
    let size = json!(details).to_string().len();
    assert!(size < MAX_FIELD_BYTES, "{size}");
    assert!(size > MAX_FIELD_BYTES - 10, "uses the room it has: {size}");
    assert_eq!(value["Truncated"], true);
    assert_eq!(value["EventUuid"], log.uuid.to_string());
    assert_eq!(value["EventID"], 4887);

    let mut huge_actor = audit(4887, at(10, 0), json!({}));
    huge_actor.actor = Some("a".repeat(100_000));
    let value = log_object(&huge_actor, "h", at(10, 0));
    assert_eq!(value["Truncated"], true);
    for field in ["Actor", "message"] {
        assert!(value[field].to_string().len() < MAX_FIELD_BYTES, "{field}");
    }

    let small = log_object(&audit(4887, at(10, 0), json!({"a": 1})), "h", at(10, 0));
    assert!(small.get("Truncated").is_none());
}

#[test]
fn batches_split_below_one_megabyte_and_at_the_row_count() {
    let logs: Vec<AuditLog> = (0..40)
        .map(|_| audit(4887, at(10, 0), json!({ "blob": "y".repeat(60_000) })))
        .collect();
    let batches = build_batches(&logs, "h", at(10, 0));
    assert!(batches.len() >= 3, "{}", batches.len());
    for batch in &batches {
        assert!(batch.body.len() < MAX_BATCH_BYTES);
        let rows: Vec<Value> = serde_json::from_slice(&batch.body).expect("json array");
        assert_eq!(rows.len(), batch.len());
        assert!(rows.iter().all(|row| row["TimeGenerated"].is_string()));
    }
    let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
    assert_eq!(uuids, logs.iter().map(|l| l.uuid).collect::<Vec<_>>());

    let many: Vec<AuditLog> = (0..2500).map(|_| audit(12, at(10, 0), json!({}))).collect();
    let sizes: Vec<usize> = build_batches(&many, "h", at(10, 0))
        .iter()
        .map(Batch::len)
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(build_batches(&[], "h", at(10, 0)).is_empty());
}

#[test]
fn even_the_largest_rows_fit_a_batch_whole() {
    let mut log = audit(4887, at(10, 0), json!({ "blob": "z".repeat(2_000_000) }));
    log.actor = Some("b".repeat(2_000_000));
    let batches = build_batches(&[log], &"h".repeat(100_000), at(10, 0));
    assert_eq!(batches.len(), 1);
    assert!(batches[0].body.len() < MAX_BATCH_BYTES);
}

use crate::siem::test_table::{assert_classifies, audit, Expect};

#[test]
fn classify_maps_every_status_row() {
    use Expect::*;
    let table = [
        (204, None, Delivered),
        (200, None, Delivered),
        (301, None, AuthFailed),
        (307, None, AuthFailed),
        (400, None, Rejected),
        (401, None, AuthFailed),
        (403, None, AuthFailed),
        (404, None, AuthFailed),
        (405, None, AuthFailed),
        (408, None, Retry(None)),
        (413, None, Split),
        (415, None, AuthFailed),
        (429, Some("17"), Retry(Some(17))),
        (429, Some("Tue, 04 Mar 2025 10:00:00 GMT"), Retry(Some(0))),
        (429, Some("soon"), Retry(None)),
        (500, None, Retry(None)),
        (501, None, AuthFailed),
        (502, Some("5"), Unconfirmed(Some(5))),
        (503, Some("120"), Retry(Some(120))),
        (504, None, Unconfirmed(None)),
        (100, None, Retry(None)),
        (600, None, Retry(None)),
    ];
    assert_classifies(classify, &table);
}

#[test]
fn classify_explains_with_azures_own_message_and_the_hints() {
    let Disposition::Rejected { reason } = classify(
        400,
        None,
        r#"{"error":{"code":"InvalidRequest","message":"Unable to parse the payload."}}"#,
    ) else {
        panic!("400 is Rejected");
    };
    assert!(
        reason.contains("InvalidRequest: Unable to parse the payload"),
        "{reason}"
    );
    let Disposition::AuthFailed { reason } = classify(
        403,
        None,
        r#"{"error":{"code":"OperationFailed","message":"The authentication token provided does not have access to ingest data for the data collection rule"}}"#,
    ) else {
        panic!("403 is AuthFailed");
    };
    assert!(
        reason.contains(
            "grant the app the Monitoring Metrics Publisher role on the DCR (can take 30 minutes)"
        ),
        "{reason}"
    );
    assert!(reason.contains("OperationFailed"), "{reason}");
    let Disposition::AuthFailed { reason } = classify(404, None, "") else {
        panic!("404 is AuthFailed");
    };
    assert!(
        reason.contains("wrong endpoint, DCR immutable id or stream"),
        "{reason}"
    );
}

#[test]
fn token_errors_become_plain_messages_by_aadsts_code() {
    let cfg = config();
    let body = |code: u64, error: &str, text: &str| {
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 1\r\nCorrelation ID: 2"),
            "error_codes": [code],
        })
        .to_string()
    };
    let table = [
        (
            400,
            body(90002, "invalid_request", "Tenant 'x' not found."),
            TokenRefusal::WrongTenant,
        ),
        (
            400,
            body(
                700016,
                "unauthorized_client",
                "Application with identifier 'y' was not found in the directory.",
            ),
            TokenRefusal::WrongClientId,
        ),
        (
            401,
            body(7000215, "invalid_client", "Invalid client secret provided."),
            TokenRefusal::WrongSecret,
        ),
        (
            401,
            body(
                7000222,
                "invalid_client",
                "The provided client secret keys are expired.",
            ),
            TokenRefusal::ExpiredSecret,
        ),
        (
            400,
            body(
                500011,
                "invalid_resource",
                "The resource principal named https://monitor.azure.com was not found.",
            ),
            TokenRefusal::WrongScope,
        ),
        (404, String::new(), TokenRefusal::WrongLoginUrl),
        (400, "garbage".into(), TokenRefusal::Other),
    ];
    for (status, body, expected) in table {
        match explain_token_error(status, None, &body, &cfg) {
            TokenError::Refused { kind, reason, .. } => {
                assert_eq!(kind, expected, "{reason}");
                assert!(!reason.contains("Trace ID"), "{reason}");
                assert!(!reason.contains("topsecret"), "{reason}");
            }
            other => panic!("{status} {body}: {other:?}"),
        }
    }
    assert!(matches!(
        explain_token_error(503, Some("9"), "", &cfg),
        TokenError::Unavailable { after: Some(d), .. } if d == Duration::from_secs(9)
    ));
}

#[test]
fn token_answers_are_parsed_strictly() {
    let (token, life) = parse_token_answer(
        r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
    )
    .expect("valid answer");
    assert_eq!(token.expose_secret(), "eyJ0");
    assert_eq!(life, Duration::from_secs(3599));
    assert!(
        parse_token_answer(r#"{"token_type":"Bearer","expires_in":"60","access_token":"a"}"#)
            .is_some()
    );
    assert!(
        parse_token_answer(r#"{"token_type":"mac","expires_in":60,"access_token":"a"}"#).is_none()
    );
    assert!(
        parse_token_answer(r#"{"token_type":"Bearer","expires_in":60,"access_token":""}"#)
            .is_none()
    );
    assert!(parse_token_answer("<html>").is_none());
}

#[test]
fn secrets_and_tokens_never_show_in_debug_output() {
    let cfg = config();
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("topsecret"), "{debug}");
    assert!(debug.contains("****WXYZ"));
    let token = AccessToken::new("eyJ0eXAiOiJKV1Qi.secret-part");
    assert_eq!(format!("{token:?}"), "AccessToken(****)");
    let cache = TokenCache::with_margin(TOKEN_REFRESH_MARGIN);
    let key = cache.key(&cfg);
    assert!(!format!("{key:?}").contains("topsecret"));
    assert_eq!(format!("{cache:?}"), "TokenCache { cached: 0, .. }");
}

#[test]
fn the_cache_key_changes_with_the_secret() {
    let cache = TokenCache::with_margin(TOKEN_REFRESH_MARGIN);
    let cfg = config();
    let mut rotated = cfg.clone();
    rotated.client_secret = ClientSecret::parse("another-secret-value-0000").expect("secret");
    assert_eq!(cache.key(&cfg), cache.key(&cfg.clone()));
    assert_ne!(cache.key(&cfg), cache.key(&rotated));
}

#[test]
fn the_query_names_the_table_of_the_stream() {
    let mut cfg = config();
    assert_eq!(cfg.query_for(4888), "EzcaAudit_CL | where EventID == 4888");
    cfg.stream = StreamName::parse("Custom-EzcaAudit").expect("stream");
    assert_eq!(cfg.query_for(4888), "EzcaAudit_CL | where EventID == 4888");
}
