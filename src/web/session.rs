//! Sessions and CSRF.
//!
//! A session is a random 256-bit token in an HttpOnly, SameSite=Lax cookie (Secure when the
//! public URL is https); the database keeps only its SHA-256 with the user and a CSRF token.
//! Every sign-in creates a new token and deletes the old session, so a token planted before
//! sign-in is worthless after it. Forms of a signed-in user carry the session's CSRF token; the
//! sign-in and setup forms, which have no session yet, use a double-submit cookie instead.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderValue},
    response::{IntoResponse, Redirect, Response},
};
use uuid::Uuid;

use crate::{crypto, state::AppState, store};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cloudpki_session";
/// Name of the pre-sign-in CSRF cookie.
pub const CSRF_COOKIE: &str = "cloudpki_csrf";
/// How long a session lives.
pub const SESSION_LIFETIME_HOURS: i64 = 12;

/// Finds a cookie's value in the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the house flags.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age_secs: i64,
    secure: bool,
    same_site: &str,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).expect("cookie values are base64url")
}

/// The signed-in user of this request. Extracting it from a request without a live session
/// redirects to the sign-in page.
#[derive(Clone, Debug)]
pub struct CurrentUser {
    /// User id.
    pub user_id: Uuid,
    /// Email, for the page header.
    pub email: String,
    /// The session's CSRF token.
    pub csrf_token: String,
}

impl CurrentUser {
    /// Checks a submitted CSRF token against the session's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), super::WebError> {
        if crypto::constant_time_eq(submitted, &self.csrf_token) {
            Ok(())
        } else {
            Err(super::WebError::Csrf)
        }
    }
}

/// Redirect to the sign-in page (or an internal error).
pub enum SessionRejection {
    /// No live session.
    SignIn,
    /// The database failed.
    Internal(super::WebError),
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => {
                let mut response = Redirect::to("/login").into_response();
                // Nothing was written: the page cache keeps what it has.
                response
                    .extensions_mut()
                    .insert(super::page_cache::NothingWritten);
                response
            }
            Self::Internal(e) => e.into_response(),
        }
    }
}

/// Looks up the session of a request, if it has a live one.
pub async fn current_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<CurrentUser>, store::Error> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let digest = crypto::token_digest(token);
    let cache = state.page_cache();
    let row = match cache.session(&digest) {
        Some(kept) => Some(kept),
        None => {
            let ticket = cache.ticket(None);
            let row = store::accounts::find_session(state.pool(), &digest).await?;
            if let (Some(ticket), Some(row)) = (ticket, &row) {
                cache.put_session(ticket, &digest, row);
            }
            row
        }
    };
    Ok(row.map(|r| CurrentUser {
        user_id: r.user_id,
        email: r.email,
        csrf_token: r.csrf_token,
    }))
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match current_user(state, &parts.headers).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(SessionRejection::SignIn),
            Err(e) => Err(SessionRejection::Internal(e.into())),
        }
    }
}

/// Starts a new session for `user_id`, ending the one the request carried, and returns the
/// `Set-Cookie` header value.
pub async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    user_id: Uuid,
) -> Result<HeaderValue, store::Error> {
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        store::accounts::delete_session(state.pool(), &crypto::token_digest(old)).await?;
    }
    let token = crypto::random_token();
    store::accounts::create_session(
        state.pool(),
        &crypto::token_digest(&token),
        user_id,
        &crypto::random_token(),
        chrono::Duration::hours(SESSION_LIFETIME_HOURS),
    )
    .await?;
    Ok(set_cookie(
        SESSION_COOKIE,
        &token,
        SESSION_LIFETIME_HOURS * 3600,
        state.secure_cookies(),
        "Lax",
    ))
}

/// Ends the request's session and returns the header that clears the cookie.
pub async fn end_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<HeaderValue, store::Error> {
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        store::accounts::delete_session(state.pool(), &crypto::token_digest(token)).await?;
    }
    Ok(set_cookie(
        SESSION_COOKIE,
        "",
        0,
        state.secure_cookies(),
        "Lax",
    ))
}

/// The pre-sign-in CSRF token of this request, or a new one with the cookie that sets it.
pub fn anonymous_csrf(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(token) if token.len() >= 32 => (token.to_owned(), None),
        _ => {
            let token = crypto::random_token();
            let header = set_cookie(CSRF_COOKIE, &token, 3600, state.secure_cookies(), "Strict");
            (token, Some(header))
        }
    }
}

/// Checks a pre-sign-in form's token against its cookie.
pub fn check_anonymous_csrf(headers: &HeaderMap, submitted: &str) -> Result<(), super::WebError> {
    match cookie(headers, CSRF_COOKIE) {
        Some(expected)
            if !submitted.is_empty() && crypto::constant_time_eq(expected, submitted) =>
        {
            Ok(())
        }
        _ => Err(super::WebError::Csrf),
    }
}
