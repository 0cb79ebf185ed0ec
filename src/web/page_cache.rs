//! The web side of the page cache ([`crate::store::page_cache`]): a write through the portal
//! drops this process's cache at once.

/// Marks a response whose request wrote nothing although it answered with a redirect (a post
/// without a session, sent to sign in).
#[derive(Debug, Clone, Copy)]
pub struct NothingWritten;

/// Middleware: after a request that wrote (not `GET`, `HEAD` or `OPTIONS`, and answered with
/// success or a redirect), this process's cache is dropped at once, so the page that follows a
/// form post shows what was just saved, without waiting for the notification. A refused post
/// (401, 403, 404, 422, 429: an anonymous flood, a bad token) changed nothing the cache keeps
/// and drops nothing; what it did record (a reader's "denied" row) reaches the cache through
/// the notification. Recording events, the one frequent write, drops its subscription's page
/// only (in its handler).
pub async fn after_writes(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    let writes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && request.uri().path() != "/api/v1/events";
    let response = next.run(request).await;
    let status = response.status();
    let refused = !(status.is_success() || status.is_redirection())
        || response.extensions().get::<NothingWritten>().is_some();
    if writes && !refused {
        state.page_cache().flush();
    }
    response
}
