//! The account page of the signed-in user: change the password (which ends every other
//! session) and sign out everywhere.

use askama::Template;
use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Form, Router,
};
use serde::Deserialize;
use std::net::SocketAddr;

use super::{
    auth::{Guess, THROTTLE_WINDOW_MINUTES},
    session::{self, CurrentUser},
    Layout, WebError,
};
use crate::{
    crypto,
    domain::account::NewPassword,
    domain::account::{parse_token_expiry, parse_token_scope},
    state::AppState,
    store,
    store::personal_tokens::TokenGrant,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account_page))
        .route("/account/password", post(change_password))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/revoke", post(revoke_token))
}

/// A personal API token as the page lists it.
struct TokenView {
    id: String,
    name: String,
    /// "read" or "write", and where: "all your subscriptions" or one by name.
    scope: String,
    /// "never", "until 2027-01-31" or "expired on 2027-01-31".
    expires: String,
    created: String,
    last_used: String,
}

/// The form that creates a personal API token: a name, and the current password again (a
/// session alone, such as a stolen cookie, must not mint a credential that outlives it).
#[derive(Deserialize)]
struct ApiTokenForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    current_password: String,
    /// `read` or `write` (absent: write).
    #[serde(default)]
    scope: String,
    /// A subscription id, or empty for every subscription of the user.
    #[serde(default)]
    subscription: String,
    /// The last day it works (`YYYY-MM-DD`), or empty.
    #[serde(default)]
    expires_on: String,
}

/// Sign out everywhere: API tokens go too unless `keep_api_tokens` is ticked.
#[derive(Deserialize)]
struct SignOutForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    keep_api_tokens: Option<String>,
}

/// What is wrong with a token request, per field.
#[derive(Default)]
struct TokenErrors {
    name: Option<String>,
    current_password: Option<String>,
    scope: Option<String>,
    subscription: Option<String>,
    expires_on: Option<String>,
}

#[derive(Default)]
struct PasswordErrors {
    current_password: Option<String>,
    new_password: Option<String>,
    new_password_confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    email: String,
    sessions: i64,
    status: Option<String>,
    errors: PasswordErrors,
    tokens: Vec<TokenView>,
    /// A token just created: shown on this answer only.
    new_token: Option<String>,
    token_name_error: Option<String>,
    token_password_error: Option<String>,
    token_scope_error: Option<String>,
    token_subscription_error: Option<String>,
    token_expires_error: Option<String>,
    /// The subscriptions a new token can be limited to: (id, name).
    subscriptions: Vec<(String, String)>,
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    status_code: StatusCode,
    status: Option<String>,
    errors: PasswordErrors,
) -> Result<Response, WebError> {
    render_with_token(
        state,
        user,
        status_code,
        status,
        errors,
        None,
        TokenErrors::default(),
    )
    .await
}

async fn render_with_token(
    state: &AppState,
    user: &CurrentUser,
    status_code: StatusCode,
    status: Option<String>,
    errors: PasswordErrors,
    new_token: Option<String>,
    token_errors: TokenErrors,
) -> Result<Response, WebError> {
    let tokens = store::personal_tokens::list(state.pool(), user.user_id)
        .await?
        .into_iter()
        .map(|t| TokenView {
            id: t.id.to_string(),
            name: t.name,
            scope: format!(
                "{}, {}",
                t.scope,
                t.subscription_name
                    .unwrap_or_else(|| "all your subscriptions".to_owned())
            ),
            expires: match t.expires_at {
                None => "never".to_owned(),
                // Stored as the end of the last day: the list names that day.
                Some(at) => {
                    let last_day = (at - chrono::Duration::days(1)).date_naive();
                    if at <= chrono::Utc::now() {
                        format!("expired on {last_day}")
                    } else {
                        format!("until {last_day}")
                    }
                }
            },
            created: super::health_panel::when(t.created_at),
            last_used: t
                .last_used_at
                .map_or_else(|| "never".to_owned(), super::health_panel::when),
        })
        .collect();
    let page = AccountPage {
        layout: Layout::signed_in(user, "Your account"),
        email: user.email.clone(),
        sessions: store::accounts::count_sessions(state.pool(), user.user_id).await?,
        status,
        errors,
        tokens,
        new_token,
        token_name_error: token_errors.name,
        token_password_error: token_errors.current_password,
        token_scope_error: token_errors.scope,
        token_subscription_error: token_errors.subscription,
        token_expires_error: token_errors.expires_on,
        subscriptions: store::accounts::memberships(state.pool(), user.user_id)
            .await?
            .into_iter()
            .map(|m| (m.subscription_id.to_string(), m.name))
            .collect(),
    };
    Ok((status_code, Html(page.render()?)).into_response())
}

async fn account_page(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Response, WebError> {
    render(
        &state,
        &user,
        StatusCode::OK,
        None,
        PasswordErrors::default(),
    )
    .await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirm: String,
    #[serde(default)]
    keep_api_tokens: Option<String>,
}

async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<PasswordForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf_token)?;
    let mut errors = PasswordErrors::default();
    let new = NewPassword::parse(&form.new_password)
        .map_err(|e| errors.new_password = Some(e))
        .ok();
    if form.new_password != form.new_password_confirm {
        errors.new_password_confirm = Some("The two new passwords differ.".into());
    }
    errors.current_password =
        wrong_current_password(&state, &user, peer, &headers, form.current_password).await?;
    let Some(new) = new.filter(|_| {
        errors.current_password.is_none()
            && errors.new_password.is_none()
            && errors.new_password_confirm.is_none()
    }) else {
        return render(
            &state,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            errors,
        )
        .await;
    };
    let hash = crypto::hash_password_blocking(new.expose_secret().to_owned()).await?;
    store::accounts::update_password(state.pool(), user.user_id, &hash).await?;
    let keep = session::cookie(&headers, session::SESSION_COOKIE).map(crypto::token_digest);
    let ended =
        store::accounts::end_sessions_of(state.pool(), user.user_id, keep.as_deref()).await?;
    let revoked = if form.keep_api_tokens.is_some() {
        0
    } else {
        store::personal_tokens::revoke_all_of(state.pool(), user.user_id).await?
    };
    tracing::info!(user_id = %user.user_id, other_sessions_ended = ended, api_tokens_revoked = revoked, "password changed");
    render(
        &state,
        &user,
        StatusCode::OK,
        Some(format!(
            "Password changed. {ended} other session(s) were signed out and {revoked} API token(s) revoked."
        )),
        PasswordErrors::default(),
    )
    .await
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf_token)?;
    let ended = store::accounts::end_sessions_of(state.pool(), user.user_id, None).await?;
    let revoked = if form.keep_api_tokens.is_some() {
        0
    } else {
        store::personal_tokens::revoke_all_of(state.pool(), user.user_id).await?
    };
    tracing::info!(user_id = %user.user_id, sessions_ended = ended, api_tokens_revoked = revoked, "signed out everywhere");
    super::auth::signed_out(&state, &headers).await
}

/// Checks the signed-in user's current password, a guess like any other (same allowance and
/// bound as signing in): the field's error when it is wrong; too many wrong ones are a 429.
async fn wrong_current_password(
    state: &AppState,
    user: &CurrentUser,
    peer: SocketAddr,
    headers: &HeaderMap,
    password: String,
) -> Result<Option<String>, WebError> {
    let client_ip = super::client_ip(state, peer, headers);
    match super::auth::check_password(
        state,
        &user.email,
        &client_ip,
        password,
        super::auth::Trust::SignedIn,
    )
    .await?
    {
        Guess::Right(_) => Ok(None),
        Guess::Wrong => Ok(Some("This is not your current password.".into())),
        Guess::Throttled => Err(WebError::TooManyRequests(format!(
            "Too many wrong passwords. Wait {THROTTLE_WINDOW_MINUTES} minutes, then try again."
        ))),
    }
}

/// Creates a personal API token and shows it once, after the current password.
async fn create_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<ApiTokenForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf_token)?;
    let mut errors = TokenErrors::default();
    let name = super::token_name(&form.name)
        .map_err(|e| errors.name = Some(e))
        .ok();
    let writes = parse_token_scope(&form.scope)
        .map_err(|e| errors.scope = Some(e))
        .ok();
    let expires_at = parse_token_expiry(&form.expires_on, chrono::Utc::now().date_naive())
        .map_err(|e| errors.expires_on = Some(e))
        .ok();
    let memberships = store::accounts::memberships(state.pool(), user.user_id).await?;
    let subscription_id = match form.subscription.trim() {
        "" => Some(None),
        raw => {
            let found = memberships
                .iter()
                .find(|m| m.subscription_id.to_string() == raw)
                .map(|m| Some(m.subscription_id));
            if found.is_none() {
                errors.subscription =
                    Some("Choose one of your subscriptions, or all of them.".to_owned());
            }
            found
        }
    };
    if form.current_password.is_empty() {
        errors.current_password = Some("Enter your current password to create a token.".into());
    } else {
        errors.current_password =
            wrong_current_password(&state, &user, peer, &headers, form.current_password).await?;
    }
    let grant = match (writes, subscription_id, expires_at) {
        (Some(writes), Some(subscription_id), Some(expires_at)) => Some(TokenGrant {
            writes,
            subscription_id,
            expires_at,
        }),
        _ => None,
    };
    let (Some(name), Some(grant), None) = (name, grant, &errors.current_password) else {
        return render_with_token(
            &state,
            &user,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            PasswordErrors::default(),
            None,
            errors,
        )
        .await;
    };
    let token = crypto::random_token();
    store::personal_tokens::create(
        state.pool(),
        user.user_id,
        name,
        &crypto::token_digest(&token),
        grant,
    )
    .await?;
    tracing::info!(user_id = %user.user_id, writes = grant.writes, limited = grant.subscription_id.is_some(), expires = ?grant.expires_at, "personal API token created");
    render_with_token(
        &state,
        &user,
        StatusCode::OK,
        Some("Token created. Copy it now: it is shown only this once.".into()),
        PasswordErrors::default(),
        Some(token),
        TokenErrors::default(),
    )
    .await
}

/// Revokes one of the user's own tokens.
async fn revoke_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Form(form): Form<super::RevokeForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf_token)?;
    let revoked = match form.token_id() {
        Some(id) => store::personal_tokens::revoke(state.pool(), id, Some(user.user_id)).await?,
        None => false,
    };
    let (code, status) = if revoked {
        (StatusCode::OK, "Token revoked: it no longer works.")
    } else {
        (
            StatusCode::NOT_FOUND,
            "No such token of yours (it may be revoked already).",
        )
    };
    render(
        &state,
        &user,
        code,
        Some(status.into()),
        PasswordErrors::default(),
    )
    .await
}
