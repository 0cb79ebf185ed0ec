//! The portal over HTTP: routes, middleware, sign-in, CSRF, and the pages.
//!
//! Each area has its own `router()`; they are merged here under one set of layers: request id,
//! tracing (by matched route, so tokens in paths never reach a log line), timeout, compression,
//! security headers, and one place where internal errors are logged with their request id.

mod account;
mod api;
mod auth;
mod error;
mod events;
mod health;
mod health_panel;
mod members;
pub mod metrics;
pub mod page_cache;
mod session;
mod settings;
mod siem_api;
mod subscriptions;
mod tokens;

use std::time::Duration;

use axum::{
    http::{header, HeaderValue},
    Router,
};
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    services::ServeDir,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::state::AppState;
pub use error::WebError;

/// Longest time a request may take before the portal answers 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Content-Security-Policy: same-origin resources only, no inline script, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The whole portal.
/// The form that creates a named token (ingestion or personal).
#[derive(serde::Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
}

/// The form that revokes a token by id.
#[derive(serde::Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    id: String,
}

impl RevokeForm {
    fn token_id(&self) -> Option<uuid::Uuid> {
        uuid::Uuid::parse_str(self.id.trim()).ok()
    }
}

/// A token's name: 1 to 100 characters, no control characters.
fn token_name(raw: &str) -> Result<&str, String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        Err("Give the token a name of 1 to 100 characters, e.g. what uses it.".into())
    } else {
        Ok(name)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if one is given.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

pub fn router(state: AppState) -> Router {
    let x_request_id = axum::http::HeaderName::from_static("x-request-id");
    let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/static");

    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(account::router())
        .merge(subscriptions::router())
        .merge(settings::router())
        .merge(events::router())
        .merge(tokens::router())
        .merge(members::router())
        .merge(api::router())
        .merge(siem_api::router())
        .nest_service("/static", ServeDir::new(static_dir))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            page_cache::after_writes,
        ))
        .layer(axum::middleware::from_fn(error::log_and_render_errors))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(set_header(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(set_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set_header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set_header(header::REFERRER_POLICY, "same-origin"))
        .layer(set_header(header::CACHE_CONTROL, "no-store"))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "<unmatched>".to_owned());
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                tracing::info_span!("http", method = %req.method(), route, request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

fn set_header(
    name: header::HeaderName,
    value: &'static str,
) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// The client's address: the peer's, or, when the peer is a trusted proxy
/// (`CLOUDPKI_TRUSTED_PROXIES`), the rightmost `X-Forwarded-For` entry that is not one.
pub fn client_ip(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
) -> String {
    forwarded_client(&state.config().trusted_proxies, peer.ip(), headers).to_string()
}

fn forwarded_client(
    trusted: &[ipnet::IpNet],
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// What the base layout needs: the page title and, when signed in, who and the sign-out token.
pub struct Layout {
    /// `<title>` and heading context.
    pub title: String,
    /// The signed-in user's email; `None` on sign-in and setup pages.
    pub user_email: Option<String>,
    /// CSRF token for the page's forms (and the sign-out button).
    pub csrf_token: String,
}

impl Layout {
    /// For pages before sign-in.
    pub fn anonymous(csrf_token: String, title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user_email: None,
            csrf_token,
        }
    }

    /// For a signed-in user's pages.
    pub fn signed_in(user: &session::CurrentUser, title: &str) -> Self {
        Self {
            title: title.to_owned(),
            user_email: Some(user.email.clone()),
            csrf_token: user.csrf_token.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9, 203.0.113.7, 10.1.2.3"),
        );
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // From the proxy: the rightmost address that is not a proxy of ours.
        assert_eq!(
            forwarded_client(&trusted, ip("10.0.0.1"), &headers),
            ip("203.0.113.7")
        );
        // From anyone else: the header is ignored (it could say anything).
        assert_eq!(
            forwarded_client(&trusted, ip("192.0.2.1"), &headers),
            ip("192.0.2.1")
        );
        assert_eq!(
            forwarded_client(&[], ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }
}
