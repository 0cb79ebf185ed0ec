//! The administrators' buttons under the health panel: retry parked events, pause and resume,
//! replay a window, create monitors. Each is a thin adapter over `settings::actions`.

use super::*;

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

/// The checks of every administrator's button on the page: a member (else 404), a
/// destination that exists (else 404), the session's CSRF token, the admin role (a reader's
/// attempt is refused and recorded).
pub(super) async fn admin_post(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    query: &DestinationQuery,
    csrf_token: &str,
    action: AdminAction,
) -> Result<(MembershipRow, DestinationKey), WebError> {
    let membership = membership_or_404(state, user, id).await?;
    let Which::Number(number) = Which::parse(query.destination.as_deref())? else {
        return Err(WebError::NotFound);
    };
    let dest = DestinationKey::new(membership.subscription_id, number);
    if !number.is_first() && store::siem::settings(state.pool(), dest).await?.is_none() {
        return Err(WebError::NotFound);
    }
    user.check_csrf(csrf_token)?;
    admin_or_denied(
        state.settings(),
        (user.user_id, &user.email),
        &membership,
        number,
        action,
    )
    .await?;
    Ok((membership, dest))
}

/// Puts the parked events back in the queue (admins only).
pub(super) async fn retry_parked(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<DestinationQuery>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let (_, dest) = admin_post(
        &state,
        &user,
        &id,
        &query,
        &form.csrf_token,
        AdminAction::RetryParked,
    )
    .await?;
    let n = retry_parked_events(state.settings(), (user.user_id, &user.email), dest).await?;
    Ok(Redirect::to(&back(dest, &format!("retried={n}"))).into_response())
}

/// **Pause export** (admins only): events are recorded and kept, nothing is sent.
pub(super) async fn pause(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<DestinationQuery>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, query, form, true).await
}

/// **Resume export** (admins only): what was kept meanwhile is sent.
pub(super) async fn resume(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<DestinationQuery>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, query, form, false).await
}

pub(super) async fn pause_or_resume(
    state: AppState,
    user: CurrentUser,
    id: String,
    query: DestinationQuery,
    form: CsrfOnly,
    pausing: bool,
) -> Result<Response, WebError> {
    let (what, action) = if pausing {
        ("pause", AdminAction::PauseExport)
    } else {
        ("resume", AdminAction::ResumeExport)
    };
    let (_, dest) = admin_post(&state, &user, &id, &query, &form.csrf_token, action).await?;
    match pause_or_resume_export(state.settings(), (user.user_id, &user.email), dest, pausing)
        .await?
    {
        PauseOutcome::ExportOff => Ok(Redirect::to(&back(dest, "export=off")).into_response()),
        PauseOutcome::Done { .. } => {
            Ok(Redirect::to(&back(dest, &format!("{what}d=1"))).into_response())
        }
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
    Query(query): Query<DestinationQuery>,
    Form(form): Form<ReplayForm>,
) -> Result<Response, WebError> {
    let (membership, dest) = admin_post(
        &state,
        &user,
        &id,
        &query,
        &form.csrf_token,
        AdminAction::Replay,
    )
    .await?;
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
                replay_events(state.settings(), (user.user_id, &user.email), dest, &window).await?;
            match (plan, replay_refusal(&plan)) {
                (store::delivery::ReplayPlan::Started { events, .. }, _) => {
                    return Ok(
                        Redirect::to(&back(dest, &format!("replay={events}"))).into_response()
                    );
                }
                (_, message) => (None, message.unwrap_or_default()),
            }
        }
    };
    let loaded = Loaded::fetch(&state, dest.subscription_id, Which::Number(dest.number)).await?;
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
    Query(query): Query<DestinationQuery>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let (membership, dest) = admin_post(
        &state,
        &user,
        &id,
        &query,
        &form.csrf_token,
        AdminAction::CreateMonitors,
    )
    .await?;
    let outcome = ensure_monitors(state.settings(), (user.user_id, &user.email), dest).await?;
    let loaded = Loaded::fetch(&state, dest.subscription_id, Which::Number(dest.number)).await?;
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

/// Where a button's post/redirect/get lands: its destination's page, at the health panel.
fn back(dest: DestinationKey, extra: &str) -> String {
    Which::Number(dest.number).url_at(dest.subscription_id, extra, "health")
}

#[derive(Deserialize)]
pub(super) struct RemoveForm {
    #[serde(default)]
    csrf_token: String,
    /// `yes` once the administrator confirmed.
    #[serde(default)]
    confirm: String,
}

/// **Remove destination** (admins only; not the first): asks to confirm first, then removes it.
/// What it still owed is counted as not sent, and the first destination's history says who
/// removed it.
pub(super) async fn remove_destination(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<DestinationQuery>,
    Form(form): Form<RemoveForm>,
) -> Result<Response, WebError> {
    let (_, dest) = admin_post(
        &state,
        &user,
        &id,
        &query,
        &form.csrf_token,
        AdminAction::RemoveDestination,
    )
    .await?;
    if form.confirm != "yes" {
        return Ok(Redirect::to(
            &Which::Number(dest.number).url(dest.subscription_id, "remove=confirm"),
        )
        .into_response());
    }
    let removed =
        crate::settings::destinations::remove(state.settings(), (user.user_id, &user.email), dest)
            .await?;
    Ok(Redirect::to(
        &Which::Number(DestinationNo::FIRST)
            .url(dest.subscription_id, &format!("removed={}", removed.unsent)),
    )
    .into_response())
}
