//! A subscription's Tokens page (admins): ingestion tokens for the PKI core — create one with a
//! name (shown once), list them with when they were created, by whom and last used, revoke.

use askama::Template;
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Form, Router,
};

use super::{health_panel::when, session::CurrentUser, Layout, WebError};
use crate::{crypto, state::AppState, store, store::accounts::MembershipRow};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/subscriptions/{id}/tokens", get(show).post(create))
        .route("/subscriptions/{id}/tokens/revoke", post(revoke))
}

struct TokenView {
    id: String,
    name: String,
    created: String,
    created_by: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    membership: MembershipRow,
    tokens: Vec<TokenView>,
    status: Option<String>,
    new_token: Option<String>,
    name_error: Option<String>,
}

/// The membership, if the user administers the subscription.
async fn admin_of(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<MembershipRow, WebError> {
    super::subscriptions::admin_of(state, user, id, "see and manage its ingestion tokens").await
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    membership: MembershipRow,
    code: StatusCode,
    status: Option<String>,
    new_token: Option<String>,
    name_error: Option<String>,
) -> Result<Response, WebError> {
    let tokens = store::events::tokens(state.pool(), membership.subscription_id)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id.to_string(),
            name: t.name,
            created: when(t.created_at),
            created_by: t
                .created_by_email
                .unwrap_or_else(|| "the command line".to_owned()),
            last_used: t.last_used_at.map_or_else(|| "never".to_owned(), when),
        })
        .collect();
    let page = TokensPage {
        layout: Layout::signed_in(user, &format!("Ingestion tokens — {}", membership.name)),
        membership,
        tokens,
        status,
        new_token,
        name_error,
    };
    Ok((code, Html(page.render()?)).into_response())
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    render(&state, &user, membership, StatusCode::OK, None, None, None).await
}

async fn create(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<super::TokenForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let name = match super::token_name(&form.name) {
        Ok(name) => name,
        Err(e) => {
            return render(
                &state,
                &user,
                membership,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                None,
                Some(e),
            )
            .await
        }
    };
    let token = crypto::random_token();
    store::events::create_named_token(
        state.pool(),
        membership.subscription_id,
        &crypto::token_digest(&token),
        name,
        &user.email,
    )
    .await?;
    tracing::info!(subscription_id = %membership.subscription_id, user_id = %user.user_id, "ingestion token created");
    render(
        &state,
        &user,
        membership,
        StatusCode::OK,
        Some("Token created. Copy it into the PKI core now: it is shown only this once.".into()),
        Some(token),
        None,
    )
    .await
}

async fn revoke(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<super::RevokeForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let revoked = match form.token_id() {
        Some(token) => {
            store::events::revoke_subscription_token(
                state.pool(),
                membership.subscription_id,
                token,
            )
            .await?
        }
        None => false,
    };
    let (code, status) = if revoked {
        tracing::info!(subscription_id = %membership.subscription_id, user_id = %user.user_id, "ingestion token revoked");
        (
            StatusCode::OK,
            "Token revoked: requests with it are refused from now on.",
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "No such token in this subscription (it may be revoked already).",
        )
    };
    render(
        &state,
        &user,
        membership,
        code,
        Some(status.into()),
        None,
        None,
    )
    .await
}
