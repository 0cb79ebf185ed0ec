//! The Events page: the catalog of audit events a subscription sends, and the recommended alert
//! queries with a link into the SIEM's own search (the provider's `explorer`: Datadog's Log
//! Explorer of the subscription's site).

use askama::Template;
use axum::{
    extract::{Path, Query as UrlQuery, State},
    response::Html,
    routing::get,
    Router,
};

use super::{session::CurrentUser, subscriptions::membership_or_404, Layout, WebError};
use crate::{
    domain::destination::{DestinationKey, DestinationNo},
    domain::events::{alert_query, catalog, Category, Criticality, EventId},
    siem::Provider,
    state::AppState,
    store::accounts::MembershipRow,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/subscriptions/{id}/events", get(show))
}

struct Row {
    id: String,
    summary: &'static str,
    description: &'static str,
    criticality: &'static str,
}

struct Query {
    id: String,
    summary: &'static str,
    query: String,
    explorer_url: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    layout: Layout,
    membership: MembershipRow,
    sections: Vec<(&'static str, Vec<Row>)>,
    queries: Vec<Query>,
    /// Where the query links go, and their text.
    where_links_go: String,
    explorer_button: &'static str,
    completeness: Vec<Monitor>,
    recent: Vec<Recent>,
    /// The filter as chosen: Event ID and criticality ("" for any).
    chosen_event: String,
    chosen_criticality: String,
    filter_error: Option<String>,
    event_choices: Vec<(String, String)>,
    /// Link to the next (older) page, if there is one.
    older: Option<String>,
    /// Which destination the states are about.
    destination_label: Option<String>,
    /// Every destination, when there are several: (label, link, shown now).
    destination_choices: Vec<(String, String, bool)>,
}

/// Events shown per page.
const RECENT_PAGE: i64 = 50;

/// One recent event and its state for the current destination.
struct Recent {
    seq: i64,
    event_id: i32,
    summary: &'static str,
    criticality: &'static str,
    occurred: String,
    actor: String,
    state: &'static str,
    state_label: String,
}

#[derive(serde::Deserialize, Default)]
struct RecentQuery {
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    criticality: String,
    #[serde(default)]
    before: Option<i64>,
    /// The destination whose states are shown (the first when absent).
    #[serde(default)]
    destination: Option<String>,
}

/// An event's state for the destination, from the cursor (no per-event write): parked (with
/// the reason), waiting, filtered, paused, delivered, or not exported.
fn state_of(
    event: &crate::store::events::RecentEvent,
    destination: Option<&crate::store::events::DestinationCursor>,
) -> (&'static str, String) {
    let Some(d) = destination else {
        return ("none", "not exported (export was never on)".into());
    };
    match event.parked_state.as_deref() {
        Some("parked") => {
            let reason = event.parked_reason.clone().unwrap_or_default();
            return ("parked", format!("parked: {reason}"));
        }
        Some(_) => return ("waiting", "waiting (retry)".into()),
        None => {}
    }
    if d.send_event_ids
        .as_ref()
        .is_some_and(|ids| !ids.contains(&event.event_id))
    {
        return ("filtered", "not sent (filtered)".into());
    }
    let off_window = d.unsent_from_seq.zip(d.unsent_to_seq);
    if off_window.is_some_and(|(from, to)| (from..=to).contains(&event.seq)) {
        return ("none", "not exported (export was off)".into());
    }
    if event.seq <= d.cursor {
        return ("delivered", "delivered".into());
    }
    if d.off_at_seq.is_some_and(|off| event.seq > off) {
        return ("none", "not exported (export off)".into());
    }
    if d.paused {
        return ("paused", "paused: kept, not sent".into());
    }
    ("waiting", "waiting".into())
}

/// A ready-made Datadog monitor that checks the export itself.
struct Monitor {
    id: &'static str,
    title: &'static str,
    explain: &'static str,
    query: String,
}

/// Monitors that prove the export is complete: silence (no heartbeat) and a log that stops
/// short of the heartbeat's `LastSequence`.
fn completeness_monitors(subscription_id: uuid::Uuid) -> Vec<Monitor> {
    let scope = format!("service:EZCA @SubscriptionId:{subscription_id}");
    vec![
        Monitor {
            id: "monitor-heartbeat",
            title: "No heartbeat for 15 minutes",
            explain: "A log alert monitor: cloudpki sends a heartbeat (Event ID 1) every 5 minutes by default, so none for 15 minutes means logs are not arriving.",
            query: format!(
                "logs(\"{scope} @EventID:1\").index(\"*\").rollup(\"count\").last(\"15m\") < 1"
            ),
        },
        Monitor {
            id: "monitor-gap",
            title: "Sequence gap at the end of the log",
            explain: "A log monitor with two queries and a formula: a is the highest LastSequence the heartbeats reported, b the highest Sequence that arrived; above 0 means recorded events have not reached Datadog. For holes in the middle, run cloudpki verify on an export (README, Proving nothing is missing).",
            query: format!(
                "a = logs(\"{scope} @EventID:1\").rollup(\"max\", \"@LastSequence\"); b = logs(\"{scope} @Sequence:>0\").rollup(\"max\", \"@Sequence\"); alert when a - b > 0 over last(\"1h\")"
            ),
        },
    ]
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    UrlQuery(wanted): UrlQuery<RecentQuery>,
) -> Result<Html<String>, WebError> {
    let membership = membership_or_404(&state, &user, &id).await?;
    let sub = membership.subscription_id;
    // The filter: an Event ID of the catalog and/or a criticality; anything else is explained.
    let mut filter_error = None;
    let chosen_event = match wanted.event_id.trim() {
        "" => None,
        raw => match raw.parse::<u32>().ok().and_then(|n| EventId::parse(n).ok()) {
            Some(id) => Some(id),
            None => {
                filter_error = Some(format!(
                    "`{raw}` is not an Event ID of the catalog; showing every event."
                ));
                None
            }
        },
    };
    let chosen_criticality = match wanted.criticality.trim() {
        "" => None,
        raw => match [Criticality::High, Criticality::Medium, Criticality::Low]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(raw))
        {
            Some(c) => Some(c),
            None => {
                filter_error = Some(format!("`{raw}` is not a criticality (High, Medium or Low); showing every criticality."));
                None
            }
        },
    };
    let ids: Option<Vec<i32>> =
        (chosen_event.is_some() || chosen_criticality.is_some()).then(|| {
            catalog()
                .iter()
                .filter(|e| chosen_event.is_none_or(|id| id == e.id))
                .filter(|e| chosen_criticality.is_none_or(|c| c == e.criticality))
                .filter_map(|e| i32::try_from(e.id.get()).ok())
                .collect()
        });
    let number = match wanted.destination.as_deref().map(str::trim) {
        None | Some("") => DestinationNo::FIRST,
        Some(raw) => DestinationNo::parse(raw).map_err(|_| WebError::NotFound)?,
    };
    let dest = DestinationKey::new(sub, number);
    let listed = crate::store::siem::destinations(state.pool(), sub).await?;
    // This destination's saved settings (the first may have none yet).
    let settings = listed.iter().find(|d| d.number() == number);
    if settings.is_none() && !number.is_first() {
        return Err(WebError::NotFound);
    }
    let destination_choices: Vec<(String, String, bool)> = if listed.len() > 1 {
        listed
            .iter()
            .map(|d| {
                let link = match d.number().query() {
                    None => format!("/subscriptions/{sub}/events#recent"),
                    Some(query) => format!("/subscriptions/{sub}/events?{query}#recent"),
                };
                let label = crate::settings::destinations::destination_label(
                    d.number(),
                    d.name.as_deref(),
                    &d.provider,
                );
                (label, link, d.number() == number)
            })
            .collect()
    } else {
        Vec::new()
    };
    let provider = settings.map_or(crate::siem::Provider::first().id().to_owned(), |s| {
        s.provider.clone()
    });
    let (rows, destination) = crate::store::events::recent(
        state.pool(),
        dest,
        &provider,
        wanted.before,
        ids.as_deref(),
        RECENT_PAGE + 1,
    )
    .await?;
    let more = rows.len() as i64 > RECENT_PAGE;
    let recent: Vec<Recent> = rows
        .iter()
        .take(RECENT_PAGE as usize)
        .map(|e| {
            let (state, state_label) = state_of(e, destination.as_ref());
            let info = u32::try_from(e.event_id)
                .ok()
                .and_then(|id| EventId::parse(id).ok())
                .map(|id| id.info());
            Recent {
                seq: e.seq,
                event_id: e.event_id,
                summary: info.map_or("(not in the catalog)", |i| i.summary),
                criticality: info.map_or("", |i| i.criticality.as_str()),
                occurred: e.occurred_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                actor: e.actor.clone().unwrap_or_default(),
                state,
                state_label,
            }
        })
        .collect();
    let older = more.then(|| {
        let mut link = format!(
            "/subscriptions/{sub}/events?before={}",
            recent.last().map_or(0, |r| r.seq)
        );
        if let Some(query) = number.query() {
            link.push('&');
            link.push_str(&query);
        }
        if let Some(id) = chosen_event {
            link.push_str(&format!("&event_id={id}"));
        }
        if let Some(c) = chosen_criticality {
            link.push_str(&format!("&criticality={}", c.as_str()));
        }
        link + "#recent"
    });
    let destination_label = settings.map(|s| {
        crate::settings::destinations::destination_label(number, s.name.as_deref(), &s.provider)
    });
    let event_choices = catalog()
        .iter()
        .map(|e| (e.id.to_string(), format!("{} — {}", e.id, e.summary)))
        .collect();
    // The chosen provider's search page, else the first provider that has one (Datadog's).
    let chosen = settings.and_then(|s| Provider::parse(&s.provider).ok());
    let (searched, explorer) = chosen
        .into_iter()
        .chain(Provider::all())
        .find_map(|p| Some((p, p.spec().explorer?)))
        .ok_or_else(|| WebError::Internal(anyhow::anyhow!("no provider has a search page")))?;
    let stored = crate::settings::load(state.pool(), state.master_key(), dest, searched).await?;
    let explorer = explorer(&stored.settings);

    let sections = [Category::CaOperation, Category::CertificateOperation]
        .into_iter()
        .map(|category| {
            let rows = catalog()
                .iter()
                .filter(|e| e.category == category)
                .map(|e| Row {
                    id: e.id.to_string(),
                    summary: e.summary,
                    description: e.description,
                    criticality: e.criticality.as_str(),
                })
                .collect();
            (category.label(), rows)
        })
        .collect();
    let queries = catalog()
        .iter()
        .filter(|e| e.criticality == Criticality::High)
        .map(|e| {
            let query = alert_query(e.id);
            Query {
                id: e.id.to_string(),
                summary: e.summary,
                explorer_url: (explorer.link)(&query),
                query,
            }
        })
        .collect();
    let completeness = completeness_monitors(membership.subscription_id);
    let page = EventsPage {
        layout: Layout::signed_in(&user, &format!("Events — {}", membership.name)),
        membership,
        sections,
        queries,
        where_links_go: explorer.where_links_go,
        explorer_button: explorer.button,
        completeness,
        recent,
        chosen_event: chosen_event.map(|id| id.to_string()).unwrap_or_default(),
        chosen_criticality: chosen_criticality
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
        filter_error,
        event_choices,
        older,
        destination_label,
        destination_choices,
    };
    Ok(Html(page.render()?))
}
