//! A subscription's Members page (admins): invite by email with a role (a one-time link, valid
//! 7 days, emailed when SMTP is configured and shown once otherwise), change a role, remove a
//! member; the last administrator can be neither demoted nor removed. Every change is a
//! history row. The invitee accepts at `/invite/{token}`: signing in with their password, or
//! choosing one when they have no account yet.

use askama::Template;
use axum::{
    extract::{ConnectInfo, Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use chrono::Utc;
use serde::Deserialize;
use std::net::SocketAddr;
use uuid::Uuid;

use super::{
    auth::{check_password, Guess},
    health_panel::when,
    session::{self, CurrentUser},
    Layout, WebError,
};
use crate::{
    crypto,
    domain::account::{Email, NewPassword, Role},
    state::AppState,
    store::{self, accounts::MembershipRow, members::Change},
};

/// How long an invitation link works.
pub const INVITE_DAYS: i64 = 7;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/subscriptions/{id}/members", get(show))
        .route("/subscriptions/{id}/members/invite", post(invite))
        .route("/subscriptions/{id}/members/role", post(change_role))
        .route("/subscriptions/{id}/members/remove", post(remove))
        .route(
            "/subscriptions/{id}/members/invites/revoke",
            post(revoke_invite),
        )
        .route("/invite/{token}", get(invite_page).post(accept))
}

struct MemberView {
    user_id: String,
    email: String,
    role: String,
    is_you: bool,
}

struct InviteView {
    id: String,
    email: String,
    role: String,
    by: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    layout: Layout,
    membership: MembershipRow,
    members: Vec<MemberView>,
    invites: Vec<InviteView>,
    status: Option<(&'static str, String)>,
    link: Option<String>,
    email_error: Option<String>,
    sends_email: bool,
}

async fn admin_of(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
) -> Result<MembershipRow, WebError> {
    super::subscriptions::admin_of(state, user, id, "manage its members").await
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    membership: MembershipRow,
    code: StatusCode,
    status: Option<(&'static str, String)>,
    link: Option<String>,
    email_error: Option<String>,
) -> Result<Response, WebError> {
    let sub = membership.subscription_id;
    let members = store::members::members(state.pool(), sub)
        .await?
        .into_iter()
        .map(|m| MemberView {
            user_id: m.user_id.to_string(),
            is_you: m.user_id == user.user_id,
            email: m.email,
            role: m.role,
        })
        .collect();
    let invites = store::members::open_invites(state.pool(), sub, Utc::now())
        .await?
        .into_iter()
        .map(|i| InviteView {
            id: i.id.to_string(),
            email: i.email,
            role: i.role,
            by: i.invited_by_email,
            expires: when(i.expires_at),
        })
        .collect();
    let page = MembersPage {
        layout: Layout::signed_in(user, &format!("Members — {}", membership.name)),
        membership,
        members,
        invites,
        status,
        link,
        email_error,
        sends_email: state.sends_email(),
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

async fn history(
    state: &AppState,
    user: &CurrentUser,
    sub: Uuid,
    what: String,
) -> Result<(), WebError> {
    store::siem::record_history(
        state.pool(),
        crate::domain::destination::DestinationKey::first(sub),
        user.user_id,
        &user.email,
        "saved",
        &[what],
    )
    .await?;
    Ok(())
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

async fn invite(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<InviteForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let sub = membership.subscription_id;
    let (email, role) = match (Email::parse(&form.email), Role::parse(&form.role)) {
        (Ok(email), Ok(role)) => (email, role),
        (Err(e), _) | (_, Err(e)) => {
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
    let expires_at = Utc::now() + chrono::Duration::days(INVITE_DAYS);
    let invite_id = store::members::create_invite(
        state.pool(),
        sub,
        email.as_str(),
        role,
        &crypto::token_digest(&token),
        (user.user_id, &user.email),
        expires_at,
    )
    .await?;
    let link = state.link(&format!("/invite/{token}"));
    history(
        &state,
        &user,
        sub,
        format!("Invited {} as {}", email.as_str(), role.as_str()),
    )
    .await?;
    // Without SMTP the link is shown once here; it never goes to the outbox or a log line.
    if state.sends_email() {
        let text = format!(
            "{} invites you to the Cloud PKI subscription \"{}\" as {}.\n\nAccept within {INVITE_DAYS} days: {link}\n\nIf you did not expect this, ignore this email.",
            user.email,
            membership.name,
            role.as_str()
        );
        let html = format!(
            "<p>{} invites you to the Cloud PKI subscription <strong>{}</strong> as {}.</p><p><a href=\"{link}\">Accept the invitation</a> within {INVITE_DAYS} days.</p><p>If you did not expect this, ignore this email.</p>",
            html_escape(&user.email),
            html_escape(&membership.name),
            role.as_str()
        );
        store::notify::enqueue(
            state.pool(),
            &store::notify::NewMessage {
                subscription_id: sub,
                dedupe_key: format!("invite/{invite_id}"),
                kind: "invite",
                recipient: email.as_str().to_owned(),
                subject: format!("Invitation to {}", membership.name),
                text_body: text,
                html_body: html,
            },
            Utc::now(),
        )
        .await?;
        let status = format!(
            "Invitation emailed to {}; the link works for {INVITE_DAYS} days.",
            email.as_str()
        );
        return render(
            &state,
            &user,
            membership,
            StatusCode::OK,
            Some(("ok", status)),
            None,
            None,
        )
        .await;
    }
    let status = format!(
        "Invitation created for {}. No email server is configured: send them this link yourself. It is shown only now and works once, for {INVITE_DAYS} days.",
        email.as_str()
    );
    render(
        &state,
        &user,
        membership,
        StatusCode::OK,
        Some(("ok", status)),
        Some(link),
        None,
    )
    .await
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
struct MemberForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    role: String,
}

async fn member_change(
    state: &AppState,
    user: &CurrentUser,
    membership: MembershipRow,
    change: Change,
    done: String,
) -> Result<Response, WebError> {
    let sub = membership.subscription_id;
    match change {
        Change::Done => {
            history(state, user, sub, done.clone()).await?;
            render(
                state,
                user,
                membership,
                StatusCode::OK,
                Some(("ok", format!("{done}."))),
                None,
                None,
            )
            .await
        }
        Change::LastAdmin => {
            let message = "A subscription needs at least one administrator: make someone else an administrator first.".to_owned();
            render(
                state,
                user,
                membership,
                StatusCode::CONFLICT,
                Some(("error", message)),
                None,
                None,
            )
            .await
        }
        Change::NotMember => {
            render(
                state,
                user,
                membership,
                StatusCode::NOT_FOUND,
                Some(("error", "No such member.".to_owned())),
                None,
                None,
            )
            .await
        }
    }
}

async fn change_role(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let (Ok(member), Ok(role)) = (
        Uuid::parse_str(form.user_id.trim()),
        Role::parse(&form.role),
    ) else {
        return member_change(&state, &user, membership, Change::NotMember, String::new()).await;
    };
    let email = member_email(&state, membership.subscription_id, member).await?;
    let change =
        store::members::set_role(state.pool(), membership.subscription_id, member, role).await?;
    member_change(
        &state,
        &user,
        membership,
        change,
        format!("Role of {email} set to {}", role.as_str()),
    )
    .await
}

async fn remove(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<MemberForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let Ok(member) = Uuid::parse_str(form.user_id.trim()) else {
        return member_change(&state, &user, membership, Change::NotMember, String::new()).await;
    };
    let email = member_email(&state, membership.subscription_id, member).await?;
    let change = store::members::remove(state.pool(), membership.subscription_id, member).await?;
    member_change(
        &state,
        &user,
        membership,
        change,
        format!("Removed {email}"),
    )
    .await
}

#[derive(Deserialize)]
struct RevokeInviteForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    invite_id: String,
}

/// Revokes an open invitation: its link stops working at once.
async fn revoke_invite(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<RevokeInviteForm>,
) -> Result<Response, WebError> {
    let membership = admin_of(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let sub = membership.subscription_id;
    let revoked = match Uuid::parse_str(form.invite_id.trim()) {
        Ok(invite) => store::members::revoke_invite(state.pool(), sub, invite).await?,
        Err(_) => None,
    };
    let Some(email) = revoked else {
        return render(
            &state,
            &user,
            membership,
            StatusCode::NOT_FOUND,
            Some((
                "error",
                "No such open invitation (it may be accepted, expired or revoked already).".into(),
            )),
            None,
            None,
        )
        .await;
    };
    let done = format!("Revoked the invitation of {email}");
    history(&state, &user, sub, done.clone()).await?;
    render(
        &state,
        &user,
        membership,
        StatusCode::OK,
        Some(("ok", format!("{done}: its link no longer works."))),
        None,
        None,
    )
    .await
}

async fn member_email(state: &AppState, sub: Uuid, member: Uuid) -> Result<String, WebError> {
    Ok(store::members::members(state.pool(), sub)
        .await?
        .into_iter()
        .find(|m| m.user_id == member)
        .map_or_else(|| member.to_string(), |m| m.email))
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    layout: Layout,
    subscription: String,
    email: String,
    role: String,
    error: Option<String>,
}

async fn invite_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some(invite) =
        store::members::invite(state.pool(), &crypto::token_digest(&token), Utc::now()).await?
    else {
        return Err(WebError::NotFound);
    };
    // One form whether or not the address has an account: the page reveals neither.
    let (csrf, cookie) = session::anonymous_csrf(&state, &headers);
    let page = InvitePage {
        layout: Layout::anonymous(csrf, "Accept the invitation"),
        subscription: invite.subscription_name,
        email: invite.email,
        role: invite.role,
        error: None,
    };
    let mut response = Html(page.render()?).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct AcceptForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

async fn accept(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> Result<Response, WebError> {
    session::check_anonymous_csrf(&headers, &form.csrf_token)?;
    let now = Utc::now();
    let Some(invite) =
        store::members::invite(state.pool(), &crypto::token_digest(&token), now).await?
    else {
        return Err(WebError::NotFound);
    };
    let existing = store::accounts::find_user_by_email(state.pool(), &invite.email).await?;
    let again = |error: String| {
        let (csrf, _) = session::anonymous_csrf(&state, &headers);
        let page = InvitePage {
            layout: Layout::anonymous(csrf, "Accept the invitation"),
            subscription: invite.subscription_name.clone(),
            email: invite.email.clone(),
            role: invite.role.clone(),
            error: Some(error),
        };
        page.render()
            .map(|html| (StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response())
            .map_err(WebError::from)
    };
    // One wording whether or not the address has an account: the answer tells nothing more
    // than the page did.
    const NOT_ACCEPTED: &str = "That password was not accepted. If you have a cloudpki account with this email, enter its password; otherwise choose one of at least 12 characters and type it twice.";
    let joining = match existing {
        Some(_) => {
            let ip = super::client_ip(&state, peer, &headers);
            let device = session::cookie(&headers, super::auth::KNOWN_DEVICE_COOKIE);
            match check_password(
                &state,
                &invite.email,
                &ip,
                form.password.clone(),
                super::auth::Trust::Device(device),
            )
            .await?
            {
                Guess::Right(user) => store::accounts::Account::Existing(user.id),
                Guess::Throttled => {
                    return again(
                        "Too many wrong passwords: wait a few minutes, then try again.".into(),
                    )
                }
                Guess::Wrong => return again(NOT_ACCEPTED.into()),
            }
        }
        None => {
            let Ok(password) = NewPassword::parse(&form.password) else {
                return again(NOT_ACCEPTED.into());
            };
            if form.password != form.password_confirm {
                return again(NOT_ACCEPTED.into());
            }
            let hash = crypto::hash_password_blocking(password.expose_secret().to_owned()).await?;
            let email =
                Email::parse(&invite.email).map_err(|e| WebError::Internal(anyhow::anyhow!(e)))?;
            store::accounts::Account::New {
                email,
                hash,
                via: store::accounts::CreatedVia::Invitation,
            }
        }
    };
    let Some(user_id) =
        store::members::accept_invitation(state.pool(), &invite, joining, now).await?
    else {
        return Err(WebError::NotFound);
    };
    tracing::info!(%user_id, subscription_id = %invite.subscription_id, "invitation accepted");
    let cookie = session::start_session(&state, &headers, user_id).await?;
    let mut response = Redirect::to(&format!(
        "/subscriptions/{}/settings",
        invite.subscription_id
    ))
    .into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}
