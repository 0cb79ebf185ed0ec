//! The user's subscriptions and each subscription's Settings page.
//!
//! A subscription the user does not belong to answers 404, exactly like one that does not
//! exist, so its id, name and data never leak.

use askama::Template;
use axum::{extract::State, response::Html, routing::get, Router};
use uuid::Uuid;

use super::{session::CurrentUser, Layout, WebError};
use crate::{state::AppState, store, store::accounts::MembershipRow};

pub fn router() -> Router<AppState> {
    Router::new().route("/subscriptions", get(list))
}

/// Resolves the subscription in the path to the user's membership, or 404.
pub async fn membership_or_404(
    state: &AppState,
    user: &CurrentUser,
    raw_id: &str,
) -> Result<MembershipRow, WebError> {
    let id = Uuid::parse_str(raw_id).map_err(|_| WebError::NotFound)?;
    store::accounts::membership(state.pool(), user.user_id, id)
        .await?
        .ok_or(WebError::NotFound)
}

/// The membership, if the user administers the subscription: 404 for strangers, 403 (saying
/// that only administrators can `what`) for readers.
pub async fn admin_of(
    state: &AppState,
    user: &CurrentUser,
    raw_id: &str,
    what: &str,
) -> Result<MembershipRow, WebError> {
    let membership = membership_or_404(state, user, raw_id).await?;
    if !membership.role().is_admin() {
        return Err(WebError::Forbidden(format!(
            "Only administrators of this subscription can {what}."
        )));
    }
    Ok(membership)
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct ListPage {
    layout: Layout,
    memberships: Vec<MembershipRow>,
}

async fn list(State(state): State<AppState>, user: CurrentUser) -> Result<Html<String>, WebError> {
    let memberships = store::accounts::memberships(state.pool(), user.user_id).await?;
    let page = ListPage {
        layout: Layout::signed_in(&user, "Subscriptions"),
        memberships,
    };
    Ok(Html(page.render()?))
}
