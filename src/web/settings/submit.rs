//! The settings form's two buttons: Test Connection and Save changes.

use super::*;

pub(super) async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<DestinationQuery>,
    headers: axum::http::HeaderMap,
    Form(raw): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    // Secrets that pass Test Connection are held for this session (see `hold_tested`).
    let session_digest = crate::web::session::cookie(&headers, crate::web::session::SESSION_COOKIE)
        .map(crate::crypto::token_digest);
    let membership = membership_or_404(&state, &user, &id).await?;
    let which = Which::parse(query.destination.as_deref())?;
    // The event filter's checkboxes repeat one name: taken before the fields become a map.
    let filter_shown = raw.iter().any(|(k, _)| k == FILTER_SHOWN);
    let ticked: Vec<String> = raw
        .iter()
        .filter(|(k, _)| k == "send_event_ids")
        .map(|(_, v)| v.clone())
        .collect();
    let mut values: FormValues = raw
        .into_iter()
        .filter(|(k, _)| k != "send_event_ids" && k != FILTER_SHOWN)
        .collect();
    let csrf = values.remove("csrf_token").unwrap_or_default();
    user.check_csrf(&csrf)?;
    let action = values.remove("action").unwrap_or_default();
    let sub = membership.subscription_id;

    if !membership.role().is_admin() {
        let attempted = if action == "test" {
            "Tried to run Test Connection without the admin role"
        } else {
            "Tried to save SIEM settings without the admin role"
        };
        // Under the destination asked for when it exists (else the first, whose history shows
        // the subscription's additions): a number not in use gets no rows.
        let number = match which {
            Which::Number(n)
                if n.is_first()
                    || store::siem::settings(state.pool(), DestinationKey::new(sub, n))
                        .await?
                        .is_some() =>
            {
                n
            }
            _ => DestinationNo::FIRST,
        };
        store::siem::record_history(
            state.pool(),
            DestinationKey::new(sub, number),
            user.user_id,
            &user.email,
            "denied",
            &[attempted.to_owned()],
        )
        .await?;
        tracing::warn!(subscription_id = %sub, user_id = %user.user_id, "reader tried to change SIEM settings");
        return Err(WebError::Forbidden(
            "Only administrators of this subscription can change or test its SIEM settings.".into(),
        ));
    }

    let enabled = values.remove("siem_enabled").is_some();
    // The checkbox is on the page only while the current destination owes events; without
    // it (nothing owed when the page was drawn) a switch carries whatever is owed by then.
    let carry_ticked = values.remove("carry_backlog").is_some();
    let carry_offered = values.remove("carry_backlog_offered").is_some();
    let carry_backlog = carry_ticked || !carry_offered;
    let provider_raw = values.remove("provider").unwrap_or_default();
    // The version the page was drawn from (absent: a form from before versions, no check).
    let version = values.remove("settings_version");
    let loaded = Loaded::fetch(&state, sub, which).await?;
    // Absent from the form (an old page): unchanged.
    let filter = if filter_shown {
        EventFilter::parse(&ticked)
    } else {
        Ok(loaded.filter())
    };
    let shown_filter = filter.clone().unwrap_or_else(|_| {
        EventFilter::parse(&ticked).unwrap_or_else(|_| EventFilter::from_stored(Some(Vec::new())))
    });
    let s = Submission {
        state,
        user,
        membership,
        session_digest,
        enabled,
        carry_backlog,
        provider_raw,
        loaded,
        filter,
        shown_filter,
        version,
    };
    let provider = match Provider::parse(&s.provider_raw) {
        Ok(p) => p,
        Err(e) => {
            let mut errors = FieldErrors::default();
            errors.add("provider", e);
            let status = Status::plain("error", "Nothing was saved. Fix the field marked below.");
            let form = s.again(values, errors, status);
            return s.answer(form, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let stored = s
        .loaded
        .stored
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    // Blank secret fields take what this session just tested (see `hold_tested`).
    if let Some(digest) = &s.session_digest {
        reuse_tested(
            s.state.settings(),
            s.loaded.key,
            digest,
            provider,
            &mut values,
        )
        .await?;
    }

    match action.as_str() {
        "test" => test(&s, provider, &stored, values).await,
        "save" => save_changes(&s, provider, &stored, values).await,
        _ => {
            let status = Status::plain("error", "Use Test Connection or Save changes.");
            let form = s.again(values, FieldErrors::default(), status);
            s.answer(form, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

/// Test Connection: a real test log with the values in the form; nothing is saved. A green test
/// holds the typed secrets for Save changes (see `hold_tested`).
async fn test(
    s: &Submission,
    provider: Provider,
    stored: &StoredProvider,
    mut values: FormValues,
) -> Result<Response, WebError> {
    let (state, user, session_digest, sub) = (&s.state, &s.user, &s.session_digest, s.sub());
    let dest = s.loaded.key;
    let context = Context {
        hostname: state.hostname(),
        shared: state.shared(),
    };
    let validated =
        match provider::validate(provider, &values, stored, state.egress(), true, context) {
            Ok(v) => v,
            Err(errors) => {
                let status = Status::plain(
                    "error",
                    format!(
                        "Fix the {} marked below, then test again.",
                        plural(errors.count(), "field", "fields")
                    ),
                );
                let form = s.again(values, errors, status);
                return s.answer(form, StatusCode::UNPROCESSABLE_ENTITY).await;
            }
        };
    if !state.allow_test_connection(user.user_id) {
        let status = Status::plain(
                    "error",
                    format!(
                        "You ran Test Connection {} times in the last minute. Wait a minute, then try again.",
                        crate::state::TEST_CONNECTION_LIMIT
                    ),
                );
        let form = s.again(values, FieldErrors::default(), status);
        return s.answer(form, StatusCode::TOO_MANY_REQUESTS).await;
    }
    let Some(destination) = &validated.destination else {
        return Err(WebError::Internal(anyhow::anyhow!(
            "a complete validation produced no destination"
        )));
    };
    let outcome = destination
        .test_connection(state.siem_client(), state.egress(), sub)
        .await;
    let result = match &outcome {
        Ok(_) => "succeeded".to_owned(),
        Err(failure) => format!("failed ({:?})", failure.kind),
    };
    let target = provider
        .address_fields()
        .filter_map(|field| validated.fields.get(field.name))
        .filter_map(|v| url::Url::parse(v).ok())
        .filter_map(|u| u.host_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(", ");
    // A destination not added yet has no history: its tests are not recorded under a number
    // it may never get.
    if s.loaded.which != Which::New {
        store::siem::record_history(
            state.pool(),
            dest,
            user.user_id,
            &user.email,
            "tested",
            &[format!(
                "Test Connection to {} ({}) {result}",
                provider.label(),
                if target.is_empty() {
                    "default address".to_owned()
                } else {
                    target
                }
            )],
        )
        .await?;
    }
    // A signing secret generated for this test comes back with the page (shown once),
    // so that Save changes keeps the secret the receiver was just tested with.
    let generated = validated.generated_secret.clone();
    let generated_field = provider.generated().map(|g| g.field);
    if let (Some(secret), Some(field)) = (&generated, generated_field) {
        values.insert(field.into(), secret.clone());
    }
    // A green test holds what was typed; a red one still holds a secret it generated,
    // which is shown now so the receiver can be set up with it.
    let held = match (&outcome, &session_digest) {
        (Ok(_), Some(digest)) => {
            hold_tested(state.settings(), dest, digest, provider, &values).await?
        }
        (Err(_), Some(digest)) if generated.is_some() => {
            let mut only_generated: FormValues = provider
                .address_fields()
                .filter_map(|f| values.get(f.name).map(|v| (f.name.to_owned(), v.clone())))
                .collect();
            only_generated.extend(
                generated_field
                    .and_then(|field| values.get(field).map(|v| (field.to_owned(), v.clone()))),
            );
            hold_tested(state.settings(), dest, digest, provider, &only_generated).await?
        }
        _ => false,
    };
    if let Some(field) = generated_field {
        values.remove(field);
    }
    let generated = generated.filter(|_| held);
    let status = match outcome {
        Ok(ok) => Status {
            kind: "ok",
            message: format!(
                "{} Nothing was saved: press Save changes to keep these settings{}.",
                ok.message,
                if held {
                    " (the secrets you just typed are kept for 10 minutes for that, so leave their fields blank)"
                } else {
                    ""
                }
            ),
            query: Some(ok.query),
            link: ok.explorer_url,
            secret: generated,
            monitors: Vec::new(),
        },
        Err(failure) => {
            tracing::info!(subscription_id = %sub, kind = ?failure.kind, "test connection failed");
            match generated {
                        Some(secret) => Status {
                            kind: "error",
                            message: format!(
                                "{} The test was signed with a new signing secret, ending in {}, shown below once: set it up in your receiver, then test again. Save changes keeps this secret.",
                                failure.message,
                                // ASCII (prefix and base64): any byte index is a boundary.
                                &secret[secret.len().saturating_sub(4)..]
                            ),
                            query: None,
                            link: None,
                            secret: Some(secret),
                            monitors: Vec::new(),
                        },
                        None => Status::plain("error", failure.message),
                    }
        }
    };
    let form = s.again(values, FieldErrors::default(), status);
    s.answer(form, StatusCode::OK).await
}

/// Save changes: validated settings stored through the settings service, then the page again
/// (post/redirect/get), or once with a newly generated signing secret.
async fn save_changes(
    s: &Submission,
    provider: Provider,
    stored: &StoredProvider,
    mut values: FormValues,
) -> Result<Response, WebError> {
    let (state, user, loaded, session_digest, sub) =
        (&s.state, &s.user, &s.loaded, &s.session_digest, s.sub());
    let (enabled, filter, carry_backlog) = (s.enabled, &s.filter, s.carry_backlog);
    let context = Context {
        hostname: state.hostname(),
        shared: state.shared(),
    };
    let mut expiry_errors = FieldErrors::default();
    // The name field is on the page for every destination but a lone first one; absent,
    // the stored name stays.
    let name = match values
        .get("destination_name")
        .map(|v| DestinationName::parse(v))
    {
        None => Ok(None),
        Some(Ok(name)) => Ok(Some(name)),
        Some(Err(e)) => Err(e),
    };
    if let Err(e) = &name {
        expiry_errors.add("destination_name", e.clone());
    }
    let expiries = parse_expiries(
        provider,
        &values,
        AbsentExpiry::Clears,
        chrono::Utc::now().date_naive(),
        &mut expiry_errors,
    );
    let validated = match (
        provider::validate(provider, &values, stored, state.egress(), enabled, context),
        &filter,
    ) {
        (Ok(v), Ok(_)) if expiry_errors.count() == 0 => v,
        (result, filter) => {
            let mut errors = result.err().unwrap_or_default();
            errors.extend(expiry_errors);
            if let Err(e) = filter {
                errors.add("send_event_ids", e.clone());
            }
            let status = Status::plain(
                "error",
                format!(
                    "Nothing was saved. Fix the {} marked below.",
                    plural(errors.count(), "field", "fields")
                ),
            );
            let form = s.again(values, errors, status);
            return s.answer(form, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let generated = validated.generated_secret.clone();
    let name = name.ok().flatten();
    let saved = save(
        state.settings(),
        (user.user_id, &user.email),
        Target {
            subscription_id: sub,
            slot: match loaded.which {
                Which::Number(n) => Slot::Existing(n),
                // The number the page was read under (its tested secrets too).
                Which::New => Slot::Added(loaded.key.number),
            },
            name: name.as_ref().map(Option::as_ref),
        },
        Export {
            enabled,
            filter: filter.as_ref().ok(),
            expiries: Some(expiries),
            carry_backlog,
            expected: s
                .version
                .as_deref()
                .and_then(store::siem::SettingsVersion::parse),
        },
        loaded.settings.as_ref(),
        stored,
        validated,
    )
    .await;
    if let Err(crate::settings::Error::Stale { by, at }) = &saved {
        // The page as stored now (the other admin's settings), saying what happened.
        let status = Status::plain(
            "error",
            format!(
                "Your changes were not saved: {by} saved these settings at {} after you opened this page. The page now shows their settings; make your change again and save.",
                at.format("%Y-%m-%d %H:%M UTC")
            ),
        );
        let current = Loaded::fetch(state, sub, loaded.which).await?;
        let form = stored_form(s.membership.clone(), &current, Some(status));
        return answer(state, user, form, &current, StatusCode::CONFLICT).await;
    }
    let saved = saved?;
    if let Some(digest) = &session_digest {
        store::siem::drop_tested_secrets(state.pool(), saved, digest).await?;
    }
    let which = Which::Number(saved.number);
    match generated {
        // A new signing secret is shown exactly once, on this answer (never stored in
        // a URL or a session); the page is not cached.
        Some(secret) => {
            let status = Status {
                        kind: "ok",
                        message: "Settings saved. Copy the new signing secret into your receiver now: it is shown only this once.".to_owned(),
                        query: None,
                        link: None,
                        secret: Some(secret),
                        monitors: Vec::new(),
                    };
            for field in provider.generated().map_or(&[][..], |g| g.one_shot) {
                values.remove(*field);
            }
            let form = s.again(values, FieldErrors::default(), status);
            let saved = Loaded::fetch(state, sub, which).await?;
            answer(state, user, form, &saved, StatusCode::OK).await
        }
        None => Ok(Redirect::to(&which.url(sub, "saved=1")).into_response()),
    }
}

/// A submitted settings form, checked (member, CSRF, admin) and read: what Test Connection and
/// Save changes share.
struct Submission {
    state: AppState,
    user: CurrentUser,
    membership: MembershipRow,
    session_digest: Option<Vec<u8>>,
    enabled: bool,
    carry_backlog: bool,
    provider_raw: String,
    loaded: Loaded,
    filter: Result<EventFilter, String>,
    shown_filter: EventFilter,
    /// The `settings_version` the form was drawn from.
    version: Option<String>,
}

impl Submission {
    fn sub(&self) -> uuid::Uuid {
        self.membership.subscription_id
    }

    /// The page again, as submitted, with field errors and a status.
    fn again(&self, values: FormValues, errors: FieldErrors, status: Status) -> FormState {
        FormState {
            membership: self.membership.clone(),
            filter: self.shown_filter.clone(),
            enabled: self.enabled,
            provider: self.provider_raw.trim().to_owned(),
            values,
            errors,
            status: Some(status),
            // Shown again as submitted: its values are still those of the version it came from.
            version: self.version.clone().unwrap_or_else(|| {
                store::siem::SettingsVersion::of(self.loaded.settings.as_ref()).token()
            }),
            confirm_remove: None,
        }
    }

    async fn answer(&self, form: FormState, code: StatusCode) -> Result<Response, WebError> {
        answer(&self.state, &self.user, form, &self.loaded, code).await
    }
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}
