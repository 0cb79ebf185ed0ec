//! The administrators' buttons under the health panel: retry parked events, pause and resume,
//! replay a window, create monitors. Each is a thin adapter over `settings::actions`.

use super::*;

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

/// The checks of every administrator's button on the page: a member (else 404), the
/// session's CSRF token, the admin role (a reader's attempt is refused and recorded).
pub(super) async fn admin_post(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    csrf_token: &str,
    action: AdminAction,
) -> Result<MembershipRow, WebError> {
    let membership = membership_or_404(state, user, id).await?;
    user.check_csrf(csrf_token)?;
    admin_or_denied(
        state.settings(),
        (user.user_id, &user.email),
        &membership,
        action,
    )
    .await?;
    Ok(membership)
}

/// Puts the parked events back in the queue (admins only).
pub(super) async fn retry_parked(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let membership = admin_post(
        &state,
        &user,
        &id,
        &form.csrf_token,
        AdminAction::RetryParked,
    )
    .await?;
    let sub = membership.subscription_id;
    let n = retry_parked_events(state.settings(), (user.user_id, &user.email), sub).await?;
    Ok(Redirect::to(&format!("/subscriptions/{sub}/settings?retried={n}#health")).into_response())
}

/// **Pause export** (admins only): events are recorded and kept, nothing is sent.
pub(super) async fn pause(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, form, true).await
}

/// **Resume export** (admins only): what was kept meanwhile is sent.
pub(super) async fn resume(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, form, false).await
}

pub(super) async fn pause_or_resume(
    state: AppState,
    user: CurrentUser,
    id: String,
    form: CsrfOnly,
    pausing: bool,
) -> Result<Response, WebError> {
    let (what, action) = if pausing {
        ("pause", AdminAction::PauseExport)
    } else {
        ("resume", AdminAction::ResumeExport)
    };
    let membership = admin_post(&state, &user, &id, &form.csrf_token, action).await?;
    let sub = membership.subscription_id;
    match pause_or_resume_export(state.settings(), (user.user_id, &user.email), sub, pausing)
        .await?
    {
        PauseOutcome::ExportOff => Ok(Redirect::to(&format!(
            "/subscriptions/{sub}/settings?export=off#health"
        ))
        .into_response()),
        PauseOutcome::Done { .. } => Ok(Redirect::to(&format!(
            "/subscriptions/{sub}/settings?{what}d=1#health"
        ))
        .into_response()),
    }
}

#[derive(Deserialize)]
pub(super) struct ReplayForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    replay_from: String,
    #[serde(default)]
    replay_to: String,
}

/// **Replay** (admins only): resends the events recorded in a window (UTC) to the current
/// destination, at most [`REPLAY_CAP`] of them.
pub(super) async fn replay(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Result<Response, WebError> {
    let membership = admin_post(&state, &user, &id, &form.csrf_token, AdminAction::Replay).await?;
    let sub = membership.subscription_id;
    let refuse = |loaded: Loaded, field: Option<&'static str>, message: String| {
        let mut page = stored_form(membership.clone(), &loaded, None);
        page.values
            .insert("replay_from".into(), form.replay_from.clone());
        page.values
            .insert("replay_to".into(), form.replay_to.clone());
        if let Some(field) = field {
            page.errors.add(field, message.clone());
        }
        page.status = Some(Status::plain(
            "error",
            format!("Nothing was replayed. {message}"),
        ));
        (page, loaded)
    };
    let (field, message) = match ReplayWindow::parse(&form.replay_from, &form.replay_to) {
        Err((field, message)) => (Some(field), message),
        Ok(window) => {
            let plan =
                replay_events(state.settings(), (user.user_id, &user.email), sub, &window).await?;
            match (plan, replay_refusal(&plan)) {
                (store::delivery::ReplayPlan::Started { events, .. }, _) => {
                    return Ok(Redirect::to(&format!(
                        "/subscriptions/{sub}/settings?replay={events}#health"
                    ))
                    .into_response());
                }
                (_, message) => (None, message.unwrap_or_default()),
            }
        }
    };
    let loaded = Loaded::fetch(&state, sub).await?;
    let (page, loaded) = refuse(loaded, field, message);
    answer(
        &state,
        &user,
        page,
        &loaded,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// **Create monitors** (admins only): one Datadog log alert monitor per High catalog event,
/// with the stored API URL, API key and application key; pressing it again creates none twice.
pub(super) async fn create_monitors(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let membership = admin_post(
        &state,
        &user,
        &id,
        &form.csrf_token,
        AdminAction::CreateMonitors,
    )
    .await?;
    let sub = membership.subscription_id;
    let outcome = ensure_monitors(state.settings(), (user.user_id, &user.email), sub).await?;
    let loaded = Loaded::fetch(&state, sub).await?;
    let (status, code) = match outcome {
        MonitorsOutcome::InPlace(links) => {
            let created = links.iter().filter(|l| l.created).count();
            let mut status = Status::plain(
                "ok",
                format!(
                    "{} Datadog monitors are in place, one per High event ({created} created now, {} already there, tagged managed-by:cloudpki).",
                    links.len(),
                    links.len() - created
                ),
            );
            status.monitors = links
                .into_iter()
                .map(|l| {
                    (
                        format!("{} (Event ID {}): monitor {}", l.summary, l.event_id, l.id),
                        l.url,
                    )
                })
                .collect();
            (status, StatusCode::OK)
        }
        MonitorsOutcome::Refused(message) => (
            Status::plain("error", message),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    let page = stored_form(membership, &loaded, Some(status));
    answer(&state, &user, page, &loaded, code).await
}
