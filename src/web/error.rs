//! One error type for every handler, rendered as a plain-language page.
//!
//! Internal errors are not logged by handlers: the error travels in the response's extensions
//! and [`log_and_render_errors`] logs its cause chain once, with the request id that the page
//! shows the user.

use askama::Template;
use axum::{
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use std::sync::Arc;

/// What went wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The page does not exist, or the user may not know that it does.
    #[error("not found")]
    NotFound,
    /// The user is signed in but their role does not allow this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A form arrived without the right CSRF token.
    #[error("the form's security token is missing or wrong")]
    Csrf,
    /// The request conflicts with the state of things (a sixth destination): the sentence.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Too many attempts.
    #[error("too many requests: {0}")]
    TooManyRequests(String),
    /// The server is saturated (password hashing): come back after `Retry-After`.
    #[error("busy")]
    Busy,
    /// The database cannot be reached right now: come back after `Retry-After`, nothing was
    /// recorded.
    #[error("the database is unavailable")]
    Unavailable,
    /// Anything else: a bug or an outage.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::crypto::HashingBusy> for WebError {
    fn from(_: crate::crypto::HashingBusy) -> Self {
        Self::Busy
    }
}

impl From<crate::store::Error> for WebError {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::NotFound => Self::NotFound,
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database is unreachable; answering 503");
                Self::Unavailable
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<crate::settings::Error> for WebError {
    fn from(e: crate::settings::Error) -> Self {
        match e {
            crate::settings::Error::Forbidden(why) => Self::Forbidden(why),
            crate::settings::Error::Store(e) => e.into(),
            crate::settings::Error::Refused(why) => Self::Conflict(why),
            crate::settings::Error::NoDestination(_) => Self::NotFound,
            // A handler that passes a version answers a stale save itself (409 or 412).
            stale @ crate::settings::Error::Stale { .. } => Self::Internal(stale.into()),
            crate::settings::Error::Internal(e) => Self::Internal(e),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Marker carried by an internal error's response until the middleware logs it.
#[derive(Clone)]
struct InternalError(Arc<anyhow::Error>);

fn page(status: StatusCode, title: &str, message: &str, request_id: &str) -> Response {
    let body = ErrorPage {
        title,
        message,
        request_id,
    }
    .render()
    .unwrap_or_else(|_| format!("{title}: {message}"));
    (status, Html(body)).into_response()
}

/// A 503 page that says when to come back (`Retry-After`, in seconds).
fn retry_later(title: &str, message: &str, seconds: &'static str) -> Response {
    let mut response = page(StatusCode::SERVICE_UNAVAILABLE, title, message, "");
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static(seconds),
    );
    response
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            Self::NotFound => page(
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here, or you do not have access to it. Check the address, or go back to your subscriptions.",
                "",
            ),
            Self::Forbidden(why) => page(StatusCode::FORBIDDEN, "Not allowed", &why, ""),
            Self::Csrf => page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was missing its security token or it no longer matches your session. Reload the page and submit it again.",
                "",
            ),
            Self::TooManyRequests(why) => page(StatusCode::TOO_MANY_REQUESTS, "Slow down", &why, ""),
            Self::Conflict(why) => page(StatusCode::CONFLICT, "Not done", &why, ""),
            Self::Busy => retry_later(
                "Busy",
                "The portal is busy checking other sign-ins. Try again in a few seconds.",
                "2",
            ),
            Self::Unavailable => retry_later(
                "Temporarily unavailable",
                "The portal cannot reach its database right now. Nothing was changed; try again in a few seconds.",
                "5",
            ),
            Self::Internal(err) => {
                let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
                response
                    .extensions_mut()
                    .insert(InternalError(Arc::new(err)));
                response
            }
        }
    }
}

/// Logs internal errors once, with the request id, and renders the error page that shows it.
pub async fn log_and_render_errors(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let response = next.run(request).await;
    match response.extensions().get::<InternalError>() {
        Some(InternalError(err)) => {
            tracing::error!(request_id, error = ?err, "request failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The portal could not finish this request. Try again in a moment; if it keeps happening, give your operator this request id.",
                &request_id,
            )
        }
        None => response,
    }
}

/// The fallback for unknown paths.
pub async fn not_found() -> WebError {
    WebError::NotFound
}
