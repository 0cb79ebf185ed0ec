//! Sign-in, sign-out and the first-run setup page.

use std::net::SocketAddr;

use askama::Template;
use axum::{
    extract::{ConnectInfo, Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::{
    session::{self, CurrentUser},
    Layout, WebError,
};
use crate::{
    crypto,
    domain::account::{Email, NewPassword, SubscriptionName},
    state::AppState,
    store,
};

/// Failed sign-ins per account within [`THROTTLE_WINDOW_MINUTES`] before it is throttled.
pub const MAX_FAILURES_PER_ACCOUNT: i64 = 5;
/// Failed sign-ins per client address within the window before it is throttled.
pub const MAX_FAILURES_PER_ADDRESS: i64 = 20;
/// The throttling window.
pub const THROTTLE_WINDOW_MINUTES: i64 = 15;

/// The one message a failed sign-in shows, whatever failed.
pub const WRONG_CREDENTIALS: &str = "Wrong email or password.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/setup/{token}", get(setup_page).post(setup))
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Result<Redirect, WebError> {
    Ok(match session::current_user(&state, &headers).await? {
        Some(_) => Redirect::to("/subscriptions"),
        None => Redirect::to("/login"),
    })
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    email: String,
    error: Option<String>,
}

fn with_cookie(
    body: Html<String>,
    status: StatusCode,
    cookie: Option<header::HeaderValue>,
) -> Response {
    let mut response = (status, body).into_response();
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if session::current_user(&state, &headers).await?.is_some() {
        return Ok(Redirect::to("/subscriptions").into_response());
    }
    let (csrf, cookie) = session::anonymous_csrf(&state, &headers);
    let page = LoginPage {
        layout: Layout::anonymous(csrf, "Sign in"),
        email: String::new(),
        error: None,
    };
    Ok(with_cookie(Html(page.render()?), StatusCode::OK, cookie))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    session::check_anonymous_csrf(&headers, &form.csrf_token)?;
    let (csrf, _) = session::anonymous_csrf(&state, &headers);
    let email = form.email.trim().to_lowercase();
    let client_ip = super::client_ip(&state, peer, &headers);

    let device = session::cookie(&headers, KNOWN_DEVICE_COOKIE);
    let user = match check_password(
        &state,
        &email,
        &client_ip,
        form.password,
        Trust::Device(device),
    )
    .await?
    {
        Guess::Right(user) => user,
        Guess::Throttled => {
            tracing::warn!(client_ip, "sign-in throttled after repeated failures");
            let page = LoginPage {
                layout: Layout::anonymous(csrf, "Sign in"),
                email: form.email,
                error: Some(format!(
                    "Too many failed sign-in attempts. Wait {THROTTLE_WINDOW_MINUTES} minutes, then try again."
                )),
            };
            return Ok(with_cookie(
                Html(page.render()?),
                StatusCode::TOO_MANY_REQUESTS,
                None,
            ));
        }
        Guess::Wrong => {
            let page = LoginPage {
                layout: Layout::anonymous(csrf, "Sign in"),
                email: form.email,
                error: Some(WRONG_CREDENTIALS.into()),
            };
            return Ok(with_cookie(
                Html(page.render()?),
                StatusCode::UNAUTHORIZED,
                None,
            ));
        }
    };

    store::accounts::clear_login_failures(state.pool(), &email).await?;
    let cookie = session::start_session(&state, &headers, user.id).await?;
    tracing::info!(user_id = %user.id, "signed in");
    let mut response = Redirect::to("/subscriptions").into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .append(header::SET_COOKIE, known_device_cookie(&state, user.id));
    Ok(response)
}

/// What checking a password guess found.
pub(super) enum Guess {
    /// The allowance of failures is used up: nothing was checked.
    Throttled,
    /// Wrong email or password (counted as a failure).
    Wrong,
    /// Right: the user.
    Right(store::accounts::UserRow),
}

/// Checks a password guess for `email`. The guess takes a failure slot before any hashing,
/// atomically, so a burst of parallel guesses gets at most the allowance evaluated; hashing is
/// bounded (busy: 503). A right guess gives its slot back.
pub(super) async fn check_password(
    state: &AppState,
    email: &str,
    client_ip: &str,
    password: String,
    trust: Trust<'_>,
) -> Result<Guess, WebError> {
    let since = Utc::now() - Duration::minutes(THROTTLE_WINDOW_MINUTES);
    let Some(attempt) = store::accounts::reserve_login_attempt(
        state.pool(),
        email,
        &throttle_key(client_ip),
        since,
        MAX_FAILURES_PER_ACCOUNT,
        MAX_FAILURES_PER_ADDRESS,
    )
    .await?
    else {
        return Ok(Guess::Throttled);
    };
    let user = store::accounts::find_user_by_email(state.pool(), email).await?;
    // A signed-in user, or a browser that signed in to this account before, keeps a share of
    // the hashing slots that a flood of guesses cannot take. The trust comes from what the
    // request holds, never from the account alone: answers for unknown and known accounts stay
    // alike.
    let caller = match (trust, &user) {
        (Trust::SignedIn, _) => crypto::Caller::Trusted,
        (Trust::Device(Some(cookie)), Some(user)) if known_device(state, user.id, cookie) => {
            crypto::Caller::Trusted
        }
        _ => crypto::Caller::Anyone,
    };
    let verified = crypto::verify_password_blocking(
        password,
        user.as_ref().map(|u| u.password_hash.clone()),
        caller,
    )
    .await;
    match (verified, user) {
        (Ok(true), Some(user)) => {
            store::accounts::release_login_attempt(state.pool(), attempt).await?;
            Ok(Guess::Right(user))
        }
        (Ok(_), _) => Ok(Guess::Wrong),
        (Err(busy), _) => {
            // Not evaluated: the slot goes back.
            store::accounts::release_login_attempt(state.pool(), attempt).await?;
            Err(busy.into())
        }
    }
}

/// What a password check may trust about the request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Trust<'a> {
    /// The request has a live session (the account page).
    SignedIn,
    /// Anonymous; the known-device cookie, if it sent one.
    Device(Option<&'a str>),
}

/// The cookie a browser gets at a successful sign-in: it marks that browser as one that knew
/// the account's password, for [`KNOWN_DEVICE_DAYS`].
pub const KNOWN_DEVICE_COOKIE: &str = "cloudpki_device";
/// How long a known-device cookie is kept.
pub const KNOWN_DEVICE_DAYS: i64 = 30;

fn device_value(state: &AppState, user_id: uuid::Uuid) -> String {
    hex::encode(state.master_key().mac("known-device", user_id.as_bytes()))
}

fn known_device(state: &AppState, user_id: uuid::Uuid, cookie: &str) -> bool {
    crypto::constant_time_eq(&device_value(state, user_id), cookie)
}

/// The known-device cookie for `user_id`.
pub(super) fn known_device_cookie(state: &AppState, user_id: uuid::Uuid) -> header::HeaderValue {
    session::set_cookie(
        KNOWN_DEVICE_COOKIE,
        &device_value(state, user_id),
        KNOWN_DEVICE_DAYS * 86_400,
        state.secure_cookies(),
        "Strict",
    )
}

/// What failures are counted against: an IPv4 address, or an IPv6 address's /64 (one host
/// usually holds a whole /64, so counting single addresses would count nothing).
pub fn throttle_key(client_ip: &str) -> String {
    match client_ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ipnet::Ipv6Net::new(v6, 64)
                .map(|net| net.trunc().to_string())
                .unwrap_or_else(|_| client_ip.to_owned()),
        },
        _ => client_ip.to_owned(),
    }
}

/// A form that carries only its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf_token: String,
}

async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    user.check_csrf(&form.csrf_token)?;
    signed_out(&state, &headers).await
}

/// Ends the request's session and sends the visitor to the sign-in page.
pub(super) async fn signed_out(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let cookie = session::end_session(state, headers).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    layout: Layout,
    form: SetupForm,
    errors: SetupErrors,
}

#[derive(Deserialize, Default)]
struct SetupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
    #[serde(default)]
    subscription_name: String,
    #[serde(default)]
    csrf_token: String,
}

#[derive(Default)]
struct SetupErrors {
    email: Option<String>,
    password: Option<String>,
    password_confirm: Option<String>,
    subscription_name: Option<String>,
}

impl SetupErrors {
    fn any(&self) -> bool {
        self.email.is_some()
            || self.password.is_some()
            || self.password_confirm.is_some()
            || self.subscription_name.is_some()
    }
}

async fn setup_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if !store::accounts::setup_token_is_valid(state.pool(), &crypto::token_digest(&token)).await? {
        return Err(WebError::NotFound);
    }
    let (csrf, cookie) = session::anonymous_csrf(&state, &headers);
    let page = SetupPage {
        layout: Layout::anonymous(csrf, "Set up cloudpki"),
        form: SetupForm {
            subscription_name: "Default".into(),
            ..SetupForm::default()
        },
        errors: SetupErrors::default(),
    };
    Ok(with_cookie(Html(page.render()?), StatusCode::OK, cookie))
}

async fn setup(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(mut form): Form<SetupForm>,
) -> Result<Response, WebError> {
    session::check_anonymous_csrf(&headers, &form.csrf_token)?;
    let digest = crypto::token_digest(&token);
    if !store::accounts::setup_token_is_valid(state.pool(), &digest).await? {
        return Err(WebError::NotFound);
    }

    let mut errors = SetupErrors::default();
    let email = Email::parse(&form.email)
        .map_err(|e| errors.email = Some(e))
        .ok();
    let password = NewPassword::parse(&form.password)
        .map_err(|e| errors.password = Some(e))
        .ok();
    if form.password != form.password_confirm {
        errors.password_confirm =
            Some("The two passwords differ; type the same password twice.".into());
    }
    let name = SubscriptionName::parse(&form.subscription_name)
        .map_err(|e| errors.subscription_name = Some(e))
        .ok();

    let (Some(email), Some(password), Some(name), false) = (email, password, name, errors.any())
    else {
        let (csrf, _) = session::anonymous_csrf(&state, &headers);
        form.password.clear();
        form.password_confirm.clear();
        let page = SetupPage {
            layout: Layout::anonymous(csrf, "Set up cloudpki"),
            form,
            errors,
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page.render()?)).into_response());
    };

    let hash = crypto::hash_password_blocking(password.expose_secret().to_owned()).await?;
    let Some((subscription_id, user_id)) =
        store::accounts::complete_setup(state.pool(), &digest, &name, &email, &hash).await?
    else {
        return Err(WebError::NotFound);
    };
    tracing::info!(%user_id, %subscription_id, "first administrator created through the setup link");

    let cookie = session::start_session(&state, &headers, user_id).await?;
    let mut response =
        Redirect::to(&format!("/subscriptions/{subscription_id}/settings")).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}
