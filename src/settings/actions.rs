//! An administrator's buttons, for the page and the REST API alike: retry parked events,
//! pause and resume, replay a window, create Datadog monitors; a reader's attempt is refused
//! and recorded.

use super::history::when;
use super::{Error, Service};
use crate::{
    domain::{
        destination::{DestinationKey, DestinationNo},
        events::{ReplayWindow, REPLAY_CAP},
    },
    siem::Provider,
    store::{self, accounts::MembershipRow},
};

/// Who pressed a button: the signed-in user, or the user of a personal API token.
pub type Actor<'a> = (uuid::Uuid, &'a str);

/// An administrator's button on the page, which the REST API offers too.
#[derive(Clone, Copy, Debug)]
pub enum AdminAction {
    RetryParked,
    PauseExport,
    ResumeExport,
    Replay,
    CreateMonitors,
    RemoveDestination,
}

impl AdminAction {
    /// What a reader tried to do, as the refusal and the history say it.
    fn what(self) -> &'static str {
        match self {
            Self::RetryParked => "retry parked events",
            Self::PauseExport => "pause export",
            Self::ResumeExport => "resume export",
            Self::Replay => "replay events",
            Self::CreateMonitors => "create monitors",
            Self::RemoveDestination => "remove a destination",
        }
    }
}

/// Refuses a reader ([`Error::Forbidden`], with the sentence to show) and records the
/// attempt in the history: for the page's buttons and the REST API's actions alike.
pub async fn admin_or_denied(
    svc: Service<'_>,
    actor: Actor<'_>,
    membership: &MembershipRow,
    destination: DestinationNo,
    action: AdminAction,
) -> Result<(), Error> {
    if membership.role().is_admin() {
        return Ok(());
    }
    let what = action.what();
    record(
        svc,
        actor,
        DestinationKey::new(membership.subscription_id, destination),
        "denied",
        format!("Tried to {what} without the admin role"),
    )
    .await?;
    Err(Error::Forbidden(format!(
        "Only administrators of this subscription can {what}."
    )))
}

/// Puts the current destination's parked events back in the queue and records it in the
/// history; returns how many.
pub async fn retry_parked_events(
    svc: Service<'_>,
    actor: Actor<'_>,
    dest: DestinationKey,
) -> Result<u64, Error> {
    let provider = store::siem::settings(svc.pool, dest)
        .await?
        .map_or_else(|| Provider::first().id().to_owned(), |s| s.provider);
    let n = store::delivery::retry_parked(svc.pool, dest, &provider).await?;
    record(
        svc,
        actor,
        dest,
        "saved",
        format!("Retried {n} parked event(s)"),
    )
    .await?;
    Ok(n)
}

/// Why Pause / Resume export did nothing while export is off.
pub const EXPORT_OFF_NOTHING_TO_PAUSE: &str =
    "Export is off: there is nothing to pause or resume. Switch Send Audit Logs to SIEM on first.";

/// What Pause / Resume export did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseOutcome {
    /// Export is off: there is no destination to pause or resume.
    ExportOff,
    /// The destination is now paused (or running); `changed` is false when it already was.
    Done { changed: bool },
}

/// Pauses (or resumes) the current destination and records a change in the history.
pub async fn pause_or_resume_export(
    svc: Service<'_>,
    actor: Actor<'_>,
    dest: DestinationKey,
    pausing: bool,
) -> Result<PauseOutcome, Error> {
    let Some(settings) = store::siem::settings(svc.pool, dest)
        .await?
        .filter(|s| s.enabled)
    else {
        return Ok(PauseOutcome::ExportOff);
    };
    let changed = if pausing {
        store::delivery::pause(svc.pool, dest, &settings.provider, actor.1).await?
    } else {
        store::delivery::resume(svc.pool, dest, &settings.provider).await?
    };
    if changed {
        let (outcome, change) = if pausing {
            (
                "paused",
                "Export paused: events are recorded and kept, not sent",
            )
        } else {
            ("resumed", "Export resumed: kept events are sent now")
        };
        record(svc, actor, dest, outcome, change.to_owned()).await?;
        tracing::info!(subscription_id = %dest.subscription_id, destination = %dest.number, user_id = %actor.0, outcome, "export {outcome}");
    }
    Ok(PauseOutcome::Done { changed })
}

/// Starts resending the events recorded in `window` to the current destination (at most
/// [`REPLAY_CAP`]) and records a started replay in the history. `NoDestination` when export
/// is off.
pub async fn replay_events(
    svc: Service<'_>,
    actor: Actor<'_>,
    dest: DestinationKey,
    window: &ReplayWindow,
) -> Result<store::delivery::ReplayPlan, Error> {
    let Some(settings) = store::siem::settings(svc.pool, dest)
        .await?
        .filter(|s| s.enabled)
    else {
        return Ok(store::delivery::ReplayPlan::NoDestination);
    };
    let plan = store::delivery::start_replay(
        svc.pool,
        dest,
        &settings.provider,
        (window.from, window.to),
        REPLAY_CAP,
    )
    .await?;
    if let store::delivery::ReplayPlan::Started { from, to, events } = plan {
        record(
            svc,
            actor,
            dest,
            "replayed",
            format!(
                "Replay of {events} event(s) recorded from {} to {} UTC (Sequence {from}..{to})",
                when(window.from),
                when(window.to)
            ),
        )
        .await?;
    }
    Ok(plan)
}

/// Why a replay did not start, in the words of the page and the API (`None`: it started).
pub fn replay_refusal(plan: &store::delivery::ReplayPlan) -> Option<String> {
    match plan {
        store::delivery::ReplayPlan::Started { .. } => None,
        store::delivery::ReplayPlan::Empty => Some("No event recorded in that window has been sent to this destination yet (events still waiting go out with the log anyway). Check the window: times are UTC.".to_owned()),
        store::delivery::ReplayPlan::TooMany { events } => Some(format!(
            "That window holds {events} events; one replay resends at most {REPLAY_CAP}. Narrow the window and replay it in parts."
        )),
        store::delivery::ReplayPlan::NoDestination => Some("Export is off: switch Send Audit Logs to SIEM on and save first.".to_owned()),
    }
}

/// What Create monitors did.
pub enum MonitorsOutcome {
    /// One monitor per High catalog event is in place (made now, or found).
    InPlace(Vec<crate::siem::datadog::monitors::MonitorLink>),
    /// None was created: the sentence says why and what to do.
    Refused(String),
}

/// Makes sure Datadog has one log alert monitor per High catalog event, with the stored API
/// URL, API key and application key, and records it in the history.
pub async fn ensure_monitors(
    svc: Service<'_>,
    actor: Actor<'_>,
    dest: DestinationKey,
) -> Result<MonitorsOutcome, Error> {
    let provider = crate::siem::datadog::provider();
    let stored = crate::settings::load(svc.pool, svc.master_key, dest, provider).await?;
    let outcome = crate::siem::datadog::monitors::ensure_from_stored(
        svc.client,
        svc.egress,
        &stored,
        dest.subscription_id,
    )
    .await;
    match outcome {
        Ok(links) => {
            let created = links.iter().filter(|l| l.created).count();
            record(
                svc,
                actor,
                dest,
                "saved",
                format!(
                    "Create monitors: {created} created, {} already there",
                    links.len() - created
                ),
            )
            .await?;
            Ok(MonitorsOutcome::InPlace(links))
        }
        Err(message) => Ok(MonitorsOutcome::Refused(format!(
            "No monitor was created. {message}"
        ))),
    }
}

/// One line in the subscription's history, by `actor`.
async fn record(
    svc: Service<'_>,
    actor: Actor<'_>,
    dest: DestinationKey,
    outcome: &str,
    line: String,
) -> Result<(), Error> {
    store::siem::record_history(svc.pool, dest, actor.0, actor.1, outcome, &[line]).await?;
    Ok(())
}
