//! The settings page: showing it, and drawing it again with a status or field errors.

use super::*;

pub(super) async fn show(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, WebError> {
    // One statement reads the session, the membership, the settings and the panel, or the
    // page cache has them (kept until the database announces a change).
    let Some(token) = crate::web::session::cookie(&headers, crate::web::session::SESSION_COOKIE)
    else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Ok(sub) = uuid::Uuid::parse_str(&id) else {
        // The session still decides between sign-in and not found.
        return match crate::web::session::current_user(&state, &headers).await? {
            Some(_) => Err(WebError::NotFound),
            None => Ok(Redirect::to("/login").into_response()),
        };
    };
    let which = Which::parse(query.destination.as_deref())?;
    // A destination being added is read under the number it will get: nothing is stored there.
    let number = match which {
        Which::Number(n) => n,
        Which::New => match store::siem::next_destination(state.pool(), sub).await {
            Ok(n) => n,
            Err(store::Error::NotFound) => {
                return match crate::web::session::current_user(&state, &headers).await? {
                    Some(_) => Err(WebError::NotFound),
                    None => Ok(Redirect::to("/login").into_response()),
                };
            }
            Err(e) => return Err(e.into()),
        },
    };
    let key = DestinationKey::new(sub, number);
    let digest = crate::crypto::token_digest(token);
    let cache = state.page_cache();
    let kept = match which {
        Which::Number(n) => cache.settings_page(&digest, sub, n.get()),
        Which::New => None,
    };
    let (session, membership, page) = match kept {
        Some(kept) => {
            metrics::counter!("cloudpki_page_cache_total", "outcome" => "hit").increment(1);
            kept
        }
        None => {
            metrics::counter!("cloudpki_page_cache_total", "outcome" => "miss").increment(1);
            // The generations before the read: a change announced meanwhile is not kept.
            let ticket = cache.ticket(Some(sub)).filter(|_| which != Which::New);
            let Some(snapshot) = store::page::settings_page(
                state.pool(),
                &digest,
                key,
                Provider::first().id(),
                PANEL_ROWS,
                HISTORY_SHOWN,
            )
            .await?
            else {
                return Ok(Redirect::to("/login").into_response());
            };
            let page = std::sync::Arc::new(snapshot.page);
            if let Some(ticket) = ticket {
                cache.put(
                    ticket,
                    &digest,
                    &snapshot.session,
                    snapshot.membership.as_ref(),
                    number.get(),
                    &page,
                );
            }
            let membership = snapshot.membership.ok_or(WebError::NotFound)?;
            (snapshot.session, membership, page)
        }
    };
    let user = CurrentUser {
        user_id: session.user_id,
        email: session.email,
        csrf_token: session.csrf_token,
    };
    if which != Which::New && !number.is_first() && page.settings.is_none() {
        // Never added, or removed.
        return Err(WebError::NotFound);
    }
    let loaded = Loaded {
        which,
        key,
        destinations: page.destinations.clone(),
        stored: crate::settings::open_all(state.master_key(), key, &page.fields, &page.secrets),
        settings: page.settings.clone(),
        history: page.history.clone(),
        panel: page.panel.clone(),
    };
    let status = match (query.saved, query.retried) {
        (Some(_), _) => Some(Status::plain("ok", "Settings saved.")),
        (None, None) if query.removed.is_some() => Some(Status::plain(
            "ok",
            match query.removed.unwrap_or_default() {
                0 => "Destination removed. Nothing was waiting to be sent to it.".to_owned(),
                owed => format!(
                    "Destination removed. {owed} event(s) it had not been sent yet will not be sent to it."
                ),
            },
        )),
        (None, Some(n)) => Some(Status::plain(
            "ok",
            format!("{n} parked event(s) are queued again and will be retried now."),
        )),
        (None, None) if query.paused.is_some() => Some(Status::plain(
            "ok",
            "Export paused. Events are recorded and kept (the retention period still applies); nothing is sent until you resume.",
        )),
        (None, None) if query.resumed.is_some() => Some(Status::plain(
            "ok",
            "Export resumed. The events kept meanwhile are being sent now.",
        )),
        (None, None) if query.replay.is_some() => Some(Status::plain(
            "ok",
            format!(
                "Replay started: {} event(s) will be resent with their Sequence, Hash and EventUuid. Progress is shown under Delivery health.",
                query.replay.unwrap_or_default()
            ),
        )),
        (None, None) if query.export.is_some() => {
            Some(Status::plain("error", EXPORT_OFF_NOTHING_TO_PAUSE))
        }
        (None, None) => None,
    };
    let mut form = stored_form(membership, &loaded, status);
    if query.remove.is_some() && !number.is_first() && which != Which::New {
        form.confirm_remove = Some(
            loaded
                .destinations
                .iter()
                .find(|d| d.number() == number)
                .map_or(0, |d| d.owed),
        );
    }
    Ok(Html(render(&state, &user, form, loaded)?).into_response())
}

/// What the panel says of the current provider's credential expiry dates.
pub(super) fn credential_expiries(
    stored: &[(Provider, StoredProvider)],
    current: Option<&str>,
) -> Vec<(String, bool)> {
    let today = chrono::Utc::now().date_naive();
    stored
        .iter()
        .filter(|(p, _)| Some(p.id()) == current)
        .flat_map(|(p, s)| {
            s.expiries.iter().map(move |(field, date)| {
                let label = p.field(field).map_or(field.as_str(), |f| f.label);
                let days = (*date - today).num_days();
                let when = match days {
                    ..=-1 => format!("expired on {date}"),
                    0 => format!("expires today ({date})"),
                    1 => format!("expires tomorrow ({date})"),
                    n => format!("expires on {date}, in {n} days"),
                };
                (format!("{label} {when}."), days <= 30)
            })
        })
        .collect()
}

/// The form as stored, with a status.
pub(super) fn stored_form(
    membership: MembershipRow,
    loaded: &Loaded,
    status: Option<Status>,
) -> FormState {
    let mut values = FormValues::new();
    if let Some(name) = loaded.settings.as_ref().and_then(|s| s.name.clone()) {
        values.insert("destination_name".to_owned(), name);
    }
    for (provider, stored) in &loaded.stored {
        values.extend(stored.fields.clone());
        for (field, date) in &stored.expiries {
            values.insert(expiry_field(field), date.to_string());
        }
        for field in provider.fields().iter().filter(|f| !f.default.is_empty()) {
            values
                .entry(field.name.to_owned())
                .or_insert_with(|| field.default.to_owned());
        }
    }
    FormState {
        membership,
        filter: loaded.filter(),
        enabled: loaded.settings.as_ref().is_some_and(|s| s.enabled),
        provider: loaded
            .settings
            .as_ref()
            .map_or_else(|| Provider::first().id().to_owned(), |s| s.provider.clone()),
        values,
        errors: FieldErrors::default(),
        status,
        version: store::siem::SettingsVersion::of(loaded.settings.as_ref()).token(),
        confirm_remove: None,
    }
}

pub(super) fn render(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: Loaded,
) -> Result<String, WebError> {
    let FormState {
        membership,
        enabled,
        provider,
        filter,
        mut values,
        errors,
        status,
        version,
        confirm_remove,
    } = form;
    let paused = loaded
        .panel
        .health
        .as_ref()
        .is_some_and(|h| h.paused_reason.is_some());
    let filter_error = errors.get("send_event_ids").map(str::to_owned);
    let settings = loaded.settings.as_ref();
    let owed = loaded.panel.health.as_ref().map_or(0, |h| h.pending);
    let carry_from = settings
        .filter(|s| s.enabled && owed > 0)
        .and_then(|s| Provider::parse(&s.provider).ok())
        .map(|p| (owed, p.label()));
    let health = health_view(
        state.sends_email(),
        settings.is_some_and(|s| s.enabled),
        state.config().retention_days,
        loaded.panel,
    );
    let history = loaded
        .history
        .into_iter()
        .map(|h| HistoryEntry {
            who: h.user_email,
            outcome: h.outcome,
            changes: serde_json::from_value(h.changes).unwrap_or_default(),
            at: when(h.at),
        })
        .collect();
    // A URL sealed for its query (the webhook's) may carry a credential there: its values are
    // never shown (rows saved before the query was sealed included).
    for field in Provider::all().flat_map(|p| p.sealed_fields()) {
        if !matches!(field.kind, FieldKind::Url) {
            continue;
        }
        if let Some(shown) = values
            .get(field.name)
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| provider::hide_query_values(&u))
        {
            values.insert(field.name.into(), shown);
        }
    }
    // Secrets are write-only: whatever was typed is never sent back.
    let mut secret_hints = BTreeMap::new();
    for (provider, stored) in &loaded.stored {
        for field in provider.sealed_fields() {
            if matches!(field.kind, FieldKind::Url) {
                // A URL sealed for its query is shown with the query's values hidden.
                continue;
            }
            values.remove(field.name);
            if let Some(secret) = stored.secrets.get(field.name) {
                secret_hints.insert(
                    field.name.to_owned(),
                    (
                        secret.hint().to_owned(),
                        matches!(secret, StoredSecret::Unreadable(_)),
                    ),
                );
            }
        }
    }
    let open = status.is_some()
        || errors.count() > 0
        || loaded.which != Which::Number(DestinationNo::FIRST);
    let sub = membership.subscription_id;
    let is_admin = membership.role().is_admin();
    let number = match loaded.which {
        Which::Number(n) => Some(n),
        Which::New => None,
    };
    let destination_title = match (number, settings) {
        (None, _) => "New destination".to_owned(),
        (Some(n), Some(s)) => destination_label(n, s.name.as_deref(), &s.provider),
        (Some(n), None) => destination_label(n, None, Provider::first().id()),
    };
    let mut destinations: Vec<DestinationItem> = loaded
        .destinations
        .iter()
        .map(|d| DestinationItem {
            number: d.number(),
            label: destination_label(d.number(), d.name.as_deref(), &d.provider),
            state: destination_state(d),
            current: number == Some(d.number()),
            url: Which::Number(d.number()).url(sub, ""),
        })
        .collect();
    if !destinations.iter().any(|d| d.number.is_first()) {
        // The first destination exists before its first save.
        destinations.insert(
            0,
            DestinationItem {
                number: DestinationNo::FIRST,
                label: destination_label(DestinationNo::FIRST, None, Provider::first().id()),
                state: "Off",
                current: number == Some(DestinationNo::FIRST),
                url: Which::Number(DestinationNo::FIRST).url(sub, ""),
            },
        );
    }
    let can_add = is_admin && destinations.len() < MAX_DESTINATIONS;
    let show_name = number != Some(DestinationNo::FIRST)
        || destinations.len() > 1
        || settings.is_some_and(|s| s.name.is_some());
    let providers: Vec<ProviderView> = Provider::all()
        .map(|p| ProviderView {
            id: p.id(),
            label: p.label(),
            fields: p
                .fields()
                .iter()
                // An internal value shows as its state, when it is a sealed one.
                .filter(|f| !matches!(f.kind, FieldKind::Internal) || f.sealed_as.is_some())
                .map(|field| FieldView {
                    name: field.name,
                    label: field.label,
                    kind: match field.kind {
                        FieldKind::Text => "text",
                        FieldKind::Internal => "state",
                        FieldKind::Url => "url",
                        FieldKind::Secret => "password",
                        FieldKind::Check => "checkbox",
                        FieldKind::Select(_) => "select",
                        FieldKind::SecretLines => "textarea",
                        FieldKind::Lines => "lines",
                    },
                    value: values.get(field.name).cloned().unwrap_or_default(),
                    options: match field.kind {
                        FieldKind::Select(choices) => choices(),
                        _ => Vec::new(),
                    },
                    fills_focus: match field.kind {
                        FieldKind::Select(choices) => fills_focus(&choices()).unwrap_or(""),
                        _ => "",
                    },
                    hint: field.hint,
                    placeholder: field.placeholder,
                    error: errors.get(field.name).map(str::to_owned),
                    stored_hint: secret_hints.get(field.name).map(|(h, _)| h.clone()),
                    unreadable: secret_hints.get(field.name).is_some_and(|(_, u)| *u),
                    expiry: matches!(field.kind, FieldKind::Secret).then(|| {
                        let name = expiry_field(field.name);
                        let value = values.get(&name).cloned().unwrap_or_default();
                        let error = errors.get(&name).map(str::to_owned);
                        (name, value, error)
                    }),
                })
                .collect(),
        })
        .collect();
    let page = SettingsPage {
        layout: Layout::signed_in(user, &format!("Settings — {}", membership.name)),
        is_admin,
        filter_groups: filter_groups(&filter),
        filter_error,
        paused,
        expiries: credential_expiries(&loaded.stored, settings.map(|s| s.provider.as_str())),
        replay_from: values.get("replay_from").cloned().unwrap_or_default(),
        replay_to: values.get("replay_to").cloned().unwrap_or_default(),
        enabled,
        provider_actions: Provider::parse(&provider).map_or(&[], |p| p.spec().actions),
        version,
        provider,
        errors,
        status,
        open,
        last_change: settings.map(|s| (s.updated_by_email.clone(), when(s.updated_at))),
        providers,
        health,
        history,
        carry_from,
        suffix: loaded.which.suffix(),
        number,
        destination_title,
        destinations,
        can_add,
        show_name,
        confirm_remove,
        removable: is_admin && number.is_some_and(|n| !n.is_first()),
        destination_name: values.get("destination_name").cloned().unwrap_or_default(),
        membership,
    };
    Ok(page.render()?)
}

/// Answers with the page re-rendered for `form`.
pub(super) async fn answer(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: &Loaded,
    code: StatusCode,
) -> Result<Response, WebError> {
    Ok((code, Html(render(state, user, form, loaded.clone())?)).into_response())
}
