//! Sending: the client-credentials token (renewed once on 401), the ingestion call, and how
//! each answer is classified.

use super::*;

impl ClientCredentials for SentinelConfig {
    fn identity(&self) -> Identity<'_> {
        Identity {
            issuer: self.login_base.as_str(),
            tenant: self.tenant_id.as_str(),
            client_id: self.client_id.as_str(),
            scope: self.scope(),
            secret: self.client_secret.expose_secret(),
        }
    }

    fn request<'a>(
        &'a self,
        client: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(AccessToken, Duration), TokenError>> {
        Box::pin(request_token(client, self))
    }
}

/// One client-credentials request. Never logs the secret or the token.
pub(super) async fn request_token(
    client: &reqwest::Client,
    cfg: &SentinelConfig,
) -> Result<(AccessToken, Duration), TokenError> {
    let form = serde_urlencoded::to_string([
        ("client_id", cfg.client_id.as_str()),
        ("client_secret", cfg.client_secret.expose_secret()),
        ("grant_type", "client_credentials"),
        ("scope", cfg.scope()),
    ])
    .map_err(|err| SendError::Other {
        detail: format!("could not encode the token request: {err}"),
    })?;
    let response = client
        .post(cfg.token_url())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(response).await.map_err(TokenError::Transport)?;
    if status == 200 {
        return parse_token_answer(&body).ok_or_else(|| TokenError::Unavailable {
            after: None,
            reason: "Microsoft Entra ID answered the token request without a usable access token; this is usually temporary. Delivery will be retried.".into(),
        });
    }
    Err(explain_token_error(
        status,
        retry_after.as_deref(),
        &body,
        cfg,
    ))
}

pub(super) fn parse_token_answer(body: &str) -> Option<(AccessToken, Duration)> {
    let answer: Value = serde_json::from_str(body).ok()?;
    if !answer["token_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return None;
    }
    let token = answer["access_token"].as_str().filter(|t| !t.is_empty())?;
    // v2.0 sends a number; older endpoints sent a string.
    let expires_in = match &answer["expires_in"] {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    // Entra ID issues tokens for about an hour; an absurd lifetime from a hostile or broken
    // endpoint is clamped, so it can neither overflow a clock nor pin a token for years.
    Some((
        AccessToken::new(token),
        Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME.as_secs())),
    ))
}

/// Maps a refused token request to a plain message, by AADSTS code, then OAuth2 error, then
/// HTTP status.
pub(super) fn explain_token_error(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    cfg: &SentinelConfig,
) -> TokenError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed["error"].as_str().unwrap_or_default();
    let description = parsed["error_description"].as_str().unwrap_or_default();
    let mut codes: Vec<u64> = parsed["error_codes"]
        .as_array()
        .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if let Some(code) = aadsts_code(description) {
        codes.push(code);
    }
    let summary = description_summary(description);
    let detail = if summary.is_empty() {
        body_excerpt(body)
    } else {
        format!(": {summary}")
    };
    let tenant = cfg.tenant_id.as_str();
    let client_id = cfg.client_id.as_str();
    let refused = |kind: TokenRefusal, reason: String| TokenError::Refused {
        kind,
        status,
        reason,
    };
    let has = |code: u64| codes.contains(&code);

    if matches!(status, 408 | 429) || (500..=599).contains(&status) {
        return TokenError::Unavailable {
            after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            reason: format!("The Microsoft Entra sign-in service is unavailable (HTTP {status}); delivery will be retried."),
        };
    }
    if has(90002) || has(900023) || has(90072) || has(50128) || has(50059) {
        return refused(
            TokenRefusal::WrongTenant,
            format!("Microsoft Entra ID does not know the tenant {tenant} (HTTP {status}){detail}. Copy the Directory (tenant) ID from the app registration's Overview page and check that the Azure cloud setting is the tenant's cloud."),
        );
    }
    if has(700016) || error == "unauthorized_client" {
        return refused(
            TokenRefusal::WrongClientId,
            format!("No application with client ID {client_id} exists in tenant {tenant} (HTTP {status}){detail}. Copy the Application (client) ID from the Overview page of the app registration in that same tenant."),
        );
    }
    if has(7000222) {
        return refused(
            TokenRefusal::ExpiredSecret,
            format!("The client secret has expired (HTTP {status}){detail}. Create a new secret under the app registration's Certificates & secrets and paste its Value here."),
        );
    }
    if has(7000215) || error == "invalid_client" {
        return refused(
            TokenRefusal::WrongSecret,
            format!("Microsoft Entra ID refused the client secret (HTTP {status}){detail}. Paste the secret's Value (not its Secret ID) from the app registration's Certificates & secrets, or create a new secret."),
        );
    }
    if has(500011)
        || has(70011)
        || has(1002012)
        || error == "invalid_scope"
        || error == "invalid_resource"
    {
        return refused(
            TokenRefusal::WrongScope,
            format!("Microsoft Entra ID does not offer the Azure Monitor audience {} in this tenant (HTTP {status}){detail}. Check that the Azure cloud setting matches the cloud of the tenant and workspace.", cfg.scope()),
        );
    }
    let url = cfg.token_url();
    match status {
        300..=399 | 404 | 405 => refused(
            TokenRefusal::WrongLoginUrl,
            format!("The sign-in URL {url} is not a Microsoft Entra token endpoint (HTTP {status}); use the default sign-in URL of the chosen Azure cloud."),
        ),
        400 | 401 | 403 => refused(
            TokenRefusal::Other,
            format!("Microsoft Entra ID refused the token request (HTTP {status}){detail}. Check the tenant ID, client ID and client secret."),
        ),
        _ => TokenError::Unavailable {
            after: None,
            reason: format!("The Microsoft Entra sign-in service gave an unexpected answer (HTTP {status}){detail}; delivery will be retried."),
        },
    }
}

/// The number of the first `AADSTS<n>` in an error description.
pub(super) fn aadsts_code(description: &str) -> Option<u64> {
    let start = description.find("AADSTS")? + "AADSTS".len();
    let digits: String = description[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first line of an Entra error description (trace and correlation ids dropped).
pub(super) fn description_summary(description: &str) -> String {
    let line = description
        .split(['\r', '\n'])
        .next()
        .unwrap_or_default()
        .trim();
    line.chars()
        .take(MAX_REASON_BODY_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Which leg of a delivery failed to get an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leg {
    Token,
    Ingestion,
}

/// The outcome of one delivery attempt, with what Test Connection needs to explain it.
pub(super) enum Outcome {
    /// Azure Monitor answered (after at most one token refresh).
    Answer { status: u16, body: String },
    /// No token could be had.
    Token(TokenError),
}

pub(super) struct Failure {
    pub(super) leg: Leg,
    pub(super) error: SendError,
}

pub(super) async fn deliver(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    batch: &Batch,
    fresh_token: bool,
) -> Result<(Outcome, Option<String>), Failure> {
    let token_url = cfg.token_url();
    let ingestion_url = cfg.ingestion_url();
    // Both legs are checked before either is called, so a refusal sends nothing at all.
    egress.check_url(&token_url).map_err(|err| Failure {
        leg: Leg::Token,
        error: err.into(),
    })?;
    egress.check_url(&ingestion_url).map_err(|err| Failure {
        leg: Leg::Ingestion,
        error: err.into(),
    })?;
    let body = batch.gzip_body().map_err(|err| Failure {
        leg: Leg::Ingestion,
        error: SendError::Other {
            detail: format!("could not compress the batch: {err}"),
        },
    })?;
    let key = tokens.key(cfg);
    let mut refreshed = false;
    let mut token = if fresh_token {
        tokens.refresh(client, cfg).await
    } else {
        tokens.get(client, cfg).await
    };
    loop {
        let access = match token {
            Ok(access) => access,
            Err(TokenError::Transport(error)) => {
                return Err(Failure {
                    leg: Leg::Token,
                    error,
                })
            }
            Err(other) => return Ok((Outcome::Token(other), None)),
        };
        let (status, retry_after, answer) =
            post_rows(client, &ingestion_url, &access, body.clone())
                .await
                .map_err(|error| Failure {
                    leg: Leg::Ingestion,
                    error,
                })?;
        if status == 401 && !refreshed {
            // The token may have been revoked or rotated early: renew once, then believe Azure.
            tracing::info!(dcr = %cfg.dcr_id, "Azure Monitor refused the token (401); renewing it once");
            tokens.invalidate_if_current(&key, &access);
            refreshed = true;
            token = tokens.get(client, cfg).await;
            continue;
        }
        return Ok((
            Outcome::Answer {
                status,
                body: answer,
            },
            retry_after,
        ));
    }
}

pub(super) async fn post_rows(
    client: &reqwest::Client,
    url: &Url,
    token: &AccessToken,
    gzipped: Vec<u8>,
) -> Result<(u16, Option<String>, String), SendError> {
    let mut bearer =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            SendError::Other {
                detail: "the access token is not a valid header value".into(),
            }
        })?;
    bearer.set_sensitive(true);
    let response = client
        .post(url.clone())
        .header(AUTHORIZATION, bearer)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .header("x-ms-client-request-id", Uuid::new_v4().to_string())
        .body(gzipped);
    let reply = wire::send(response).await?;
    Ok((reply.status, reply.retry_after, reply.body))
}

/// Sends one batch and classifies the answer. Checks the token URL and the ingestion URL
/// against the egress policy first; on 401 renews the token once and resends.
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    batch: &Batch,
) -> Result<Disposition, SendError> {
    match deliver(client, egress, tokens, cfg, batch, false).await {
        Err(failure) => Err(failure.error),
        Ok((Outcome::Token(err), _)) => Ok(token_disposition(err)),
        Ok((Outcome::Answer { status, body }, retry_after)) => {
            Ok(classify(status, retry_after.as_deref(), &body))
        }
    }
}

pub(super) fn token_disposition(err: TokenError) -> Disposition {
    match err {
        TokenError::Refused { reason, .. } => Disposition::AuthFailed { reason },
        TokenError::Unavailable { after, reason } => Disposition::Retry { after, reason },
        // Transport errors are returned as `SendError` before this point.
        TokenError::Transport(err) => Disposition::Retry {
            after: None,
            reason: err.to_string(),
        },
    }
}

/// Maps an Azure Monitor answer to what the forwarder does with the batch. A 401 reaching this
/// function has already survived one token renewal.
///
/// | status | disposition |
/// |---|---|
/// | 2xx (204, 200) | `Delivered` |
/// | 3xx | `AuthFailed` (redirects are not followed: fix the endpoint) |
/// | 400 | `Rejected` with Azure's error message |
/// | 401 | `AuthFailed` (token refused after one renewal: cloud/audience or app) |
/// | 403 | `AuthFailed`: grant Monitoring Metrics Publisher on the DCR |
/// | 404 | `AuthFailed`: wrong endpoint, DCR immutable id or stream |
/// | 413 | `SplitBatch` |
/// | 408, 429, 5xx except 501 | `Retry`, honouring `Retry-After` (seconds or HTTP date) |
/// | 501, other 4xx | `AuthFailed` (configuration error, shown to the user) |
/// | 1xx, ≥ 600 | `Retry` (unknown answers must not lose events) |
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Disposition {
    let detail = azure_error(body);
    let refused = format!("The ingestion endpoint refused the request (HTTP {status}){detail}; check the endpoint URL, DCR immutable id and stream.");
    let wording = crate::siem::HttpWording {
        name: "Azure Monitor",
        detail: &detail,
        redirect: format!("The ingestion endpoint answered with a redirect (HTTP {status}), which is not followed; enter the DCR's logs ingestion endpoint or the DCE URL itself."),
        too_many: "is throttling this DCR",
        other_4xx: Some(refused.clone()),
    };
    crate::siem::classify_http(status, retry_after, wording, |status| {
        match status {
        400 => Some(Disposition::Rejected {
            reason: format!("Azure Monitor rejected the rows (HTTP 400){detail}."),
        }),
        401 => Some(Disposition::AuthFailed {
            reason: format!("Azure Monitor refused the access token even after renewing it (HTTP 401){detail}; check that the Azure cloud setting matches the ingestion endpoint's cloud."),
        }),
        403 => Some(Disposition::AuthFailed {
            reason: format!("Azure Monitor refused the app (HTTP 403){detail}; grant the app the Monitoring Metrics Publisher role on the DCR (can take 30 minutes)."),
        }),
        404 => Some(Disposition::AuthFailed {
            reason: format!("Azure Monitor did not find the target (HTTP 404){detail}; wrong endpoint, DCR immutable id or stream."),
        }),
        // Not implemented: the endpoint is not an ingestion endpoint.
        501 => Some(Disposition::AuthFailed { reason: refused }),
        _ => None,
    }
    })
}

/// `: <code>: <message>` from Azure's `{"error":{"code","message"}}`, else a body excerpt.
pub(super) fn azure_error(body: &str) -> String {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    let text = match (code.is_empty(), message.is_empty()) {
        (true, true) => return body_excerpt(body),
        (false, true) => code.to_owned(),
        (true, false) => message.to_owned(),
        (false, false) => format!("{code}: {message}"),
    };
    let text: String = text
        .chars()
        .take(MAX_REASON_BODY_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(": {}", text.trim_end_matches('.'))
}

pub(super) fn body_excerpt(body: &str) -> String {
    wire::body_excerpt(body, MAX_REASON_BODY_CHARS)
}
