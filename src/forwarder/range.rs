//! Delivering one range: batches, answers classified, bisection, and parking only with proof.

use super::*;

/// The outcome of a range task; a panic or an abort still accounts for every event.
pub(super) fn range_outcome(
    joined: Result<RangeOutcome, tokio::task::JoinError>,
    n: usize,
    provider: &str,
) -> RangeOutcome {
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_cancelled() => RangeOutcome::all(n, Fate::MaybeSent, Trouble::Interrupted),
        Err(e) => RangeOutcome::all(
            n,
            Fate::MaybeSent,
            Trouble::Failing {
                reason: crash_reason(provider, e),
            },
        ),
    }
}

/// Plain words for a task that panicked.
pub(super) fn crash_reason(provider: &str, e: tokio::task::JoinError) -> String {
    let detail = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into()),
        Err(e) => e.to_string(),
    };
    let provider = Provider::parse(provider).map_or("the provider", |p| p.label());
    format!("cloudpki's code for {provider} failed unexpectedly ({detail}). The events are kept; this was logged for the cloudpki team and delivery is retried.")
}

/// The most requests one range may take while isolating refused events: `2·log2(n) + 8`.
pub(super) fn bisection_cap(n: usize) -> usize {
    let log2 = usize::BITS - n.max(1).next_power_of_two().leading_zeros() - 1;
    2 * log2 as usize + 8
}

/// Sends `logs` (one range), splitting on 413 and isolating 400s depth first. Every event
/// gets a fate; the trouble says why the range stopped short.
///
/// Parking needs proof: an event the SIEM refused on its own is parked only when the same
/// destination accepted a different event *after* that refusal, within this range (another
/// event of it, tried at once from the far end, or, when none is left, one probe record: the
/// connection-test record, Event ID 0). Without that proof the refusal is the destination's failure: the events
/// stay unsent, the cursor stays, and the destination fails until it accepts again. Two
/// refusals alike with nothing accepted between them, or more requests than
/// [`bisection_cap`], end the search the same way.
pub(super) async fn deliver_range(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    logs: &[AuditLog],
    clock: Clock,
    probe_first: bool,
) -> RangeOutcome {
    let n = logs.len();
    let mut fates = vec![Fate::Unsent; n];
    let index: HashMap<Uuid, usize> = logs.iter().enumerate().map(|(i, l)| (l.uuid, i)).collect();
    let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
    if probe_first && n > 1 {
        groups.push_back(vec![0]);
        groups.push_back((1..n).collect());
    } else if n > 0 {
        groups.push_back((0..n).collect());
    }
    let cap = bisection_cap(n);
    let mut requests = 0usize;
    // The number of the latest request that had an event accepted, and the events refused
    // alone: (event, number of the refusing request, reason). A refusal is proven by an
    // acceptance in a later request.
    let mut accepted_at: Option<usize> = None;
    let mut refusals: Vec<(usize, usize, String)> = Vec::new();
    let mut trouble = None;
    'groups: while let Some(group) = groups.pop_front() {
        // Groups are contiguous runs but for a probe: borrow them instead of copying logs.
        let contiguous = group.windows(2).all(|w| w[1] == w[0] + 1);
        let copied: Vec<AuditLog>;
        let group_logs: &[AuditLog] = match (contiguous, group.first(), group.last()) {
            (true, Some(&first), Some(&last)) => &logs[first..=last],
            _ => {
                copied = group.iter().map(|&i| logs[i].clone()).collect();
                &copied
            }
        };
        // Late events are re-timed here, right before sending (Datadog's age limit).
        let mut batches = match build_batches(destination, group_logs, clock) {
            Ok(batches) => VecDeque::from(batches),
            Err(reason) => {
                trouble = Some(Trouble::Failing { reason });
                break;
            }
        };
        while let Some(batch) = batches.pop_front() {
            let ids: Vec<usize> = batch
                .event_uuids
                .iter()
                .filter_map(|u| index.get(u).copied())
                .collect();
            if requests >= cap {
                trouble = Some(Trouble::Refused {
                    reason: format!("more than {cap} requests were refused while looking for the events at fault."),
                });
                break 'groups;
            }
            requests += 1;
            let disposition = match send_batch(destination, client, egress, provider, &batch).await
            {
                Ok(d) => d,
                Err(e) => {
                    // No answer: the SIEM may have stored the batch.
                    for &i in &ids {
                        fates[i] = Fate::MaybeSent;
                    }
                    trouble = Some(Trouble::Retry {
                        after: None,
                        reason: e.to_string(),
                    });
                    break 'groups;
                }
            };
            // An event refused on its own: its fault, or the destination's.
            let (refused, reason) = match disposition {
                Disposition::Delivered => {
                    for &i in &ids {
                        fates[i] = Fate::Delivered;
                    }
                    if !ids.is_empty() {
                        accepted_at = Some(requests);
                    }
                    continue;
                }
                Disposition::SplitBatch | Disposition::Rejected { .. } if ids.len() > 1 => {
                    requeue(&mut groups, std::mem::take(&mut batches), &index);
                    let half = ids.len() / 2;
                    groups.push_front(ids[half..].to_vec());
                    groups.push_front(ids[..half].to_vec());
                    continue 'groups;
                }
                Disposition::SplitBatch => (
                    ids.first().copied(),
                    "The SIEM refused this event as too large even on its own (HTTP 413)."
                        .to_owned(),
                ),
                Disposition::Rejected { reason } => (ids.first().copied(), reason),
                Disposition::PartialAccept { accepted, reason } => {
                    // The events before the refused one were stored by the same request: they
                    // prove earlier refusals, not this one.
                    let accepted = accepted.min(ids.len());
                    for &i in &ids[..accepted] {
                        fates[i] = Fate::Delivered;
                    }
                    if accepted > 0 {
                        accepted_at = Some(requests);
                    }
                    requeue(&mut groups, std::mem::take(&mut batches), &index);
                    let rest: Vec<usize> = ids.iter().skip(accepted + 1).copied().collect();
                    if !rest.is_empty() {
                        groups.push_front(rest);
                    }
                    (ids.get(accepted).copied(), reason)
                }
                Disposition::PartlyAcknowledged {
                    acknowledged,
                    reason,
                } => {
                    // Stored for certain up to `acknowledged`; perhaps stored after that.
                    let acknowledged = acknowledged.min(ids.len());
                    for (k, &i) in ids.iter().enumerate() {
                        fates[i] = if k < acknowledged {
                            Fate::Delivered
                        } else {
                            Fate::MaybeSent
                        };
                    }
                    if acknowledged > 0 {
                        accepted_at = Some(requests);
                    }
                    trouble = Some(Trouble::Retry {
                        after: None,
                        reason,
                    });
                    break 'groups;
                }
                Disposition::Unconfirmed { after, reason } => {
                    // A gateway gave up waiting, or the SIEM stored part of the batch.
                    for &i in &ids {
                        fates[i] = Fate::MaybeSent;
                    }
                    trouble = Some(Trouble::Retry { after, reason });
                    break 'groups;
                }
                Disposition::Retry { after, reason } => {
                    trouble = Some(Trouble::Retry { after, reason });
                    break 'groups;
                }
                Disposition::AuthFailed { reason } => {
                    trouble = Some(Trouble::Failing { reason });
                    break 'groups;
                }
                Disposition::Gone { reason } => {
                    trouble = Some(Trouble::Gone { reason });
                    break 'groups;
                }
            };
            let Some(i) = refused else { continue };
            let alike = refusals
                .iter()
                .any(|(_, at, r)| *r == reason && accepted_at.is_none_or(|a| a < *at));
            if alike {
                // Refused alike twice with nothing accepted between: the destination's fault.
                trouble = Some(Trouble::Refused { reason });
                break 'groups;
            }
            refusals.push((i, requests, reason));
            // Proof, or its absence, at once: one event from the far end of the range, alone.
            requeue(&mut groups, std::mem::take(&mut batches), &index);
            if let Some(probe) = take_last(&mut groups) {
                groups.push_front(vec![probe]);
            }
            continue 'groups;
        }
    }
    let (proven, unproven): (Vec<_>, Vec<_>) = refusals
        .into_iter()
        .partition(|(_, at, _)| accepted_at.is_some_and(|a| a > *at));
    for (i, _, reason) in proven {
        fates[i] = Fate::Parked(reason);
    }
    if trouble.is_none() && !unproven.is_empty() {
        // Nothing of the range is left to prove them with: the connection-test record (Event ID
        // 0) as a probe; it carries no Sequence a SIEM's gap monitor would read, and goes out
        // whether or not heartbeats are on.
        let probe = crate::siem::wire::test_log(logs[0].subscription_id, clock.now());
        metrics::counter!("cloudpki_probes_total", "provider" => provider.to_owned()).increment(1);
        match send_probe(destination, client, egress, provider, probe, clock).await {
            Ok(()) => {
                for (i, _, reason) in unproven {
                    fates[i] = Fate::Parked(reason);
                }
            }
            Err(Some(t)) => trouble = Some(t),
            Err(None) => {
                let reason = unproven
                    .last()
                    .map(|(_, _, r)| r.clone())
                    .unwrap_or_default();
                trouble = Some(Trouble::Refused { reason });
            }
        }
    }
    RangeOutcome { fates, trouble }
}

/// Builds a group's requests; a panic in provider code becomes the destination's failure.
pub(super) fn build_batches(
    destination: &dyn SiemDestination,
    logs: &[AuditLog],
    clock: Clock,
) -> Result<Vec<crate::siem::Batch>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        destination.build_batches(logs, clock.now())
    }))
    .map_err(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("cloudpki could not build a request for {} ({detail}). The events are kept; delivery is retried.", destination.provider())
    })
}

/// Sends one request, timed; a call the egress policy blocks is a settings problem.
pub(super) async fn send_batch(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    batch: &crate::siem::Batch,
) -> Result<Disposition, SendError> {
    metrics::histogram!("cloudpki_batch_events").record(batch.len() as f64);
    let started = std::time::Instant::now();
    let answer = destination.send(client, egress, batch).await;
    metrics::histogram!("cloudpki_send_seconds", "provider" => provider.to_owned())
        .record(started.elapsed().as_secs_f64());
    match answer {
        Err(SendError::EgressDenied { reason }) => Ok(Disposition::AuthFailed {
            reason: format!("The call was blocked by this server's outbound policy. {reason}"),
        }),
        other => other,
    }
}

/// Sends a probe record. `Ok` when the SIEM accepted it; `Err(None)` when it refused it as
/// it refused the events; `Err(Some(trouble))` when it answered some other way.
pub(super) async fn send_probe(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    probe: AuditLog,
    clock: Clock,
) -> Result<(), Option<Trouble>> {
    let batches = build_batches(destination, &[probe], clock)
        .map_err(|reason| Some(Trouble::Failing { reason }))?;
    for batch in batches {
        match send_batch(destination, client, egress, provider, &batch).await {
            Ok(Disposition::Delivered) => {}
            Ok(
                Disposition::Rejected { .. }
                | Disposition::SplitBatch
                | Disposition::PartialAccept { .. },
            ) => return Err(None),
            Ok(
                Disposition::Retry { after, reason } | Disposition::Unconfirmed { after, reason },
            ) => return Err(Some(Trouble::Retry { after, reason })),
            Ok(Disposition::PartlyAcknowledged { reason, .. }) => {
                return Err(Some(Trouble::Retry {
                    after: None,
                    reason,
                }))
            }
            Ok(Disposition::AuthFailed { reason }) => {
                return Err(Some(Trouble::Failing { reason }))
            }
            Ok(Disposition::Gone { reason }) => return Err(Some(Trouble::Gone { reason })),
            Err(e) => {
                return Err(Some(Trouble::Retry {
                    after: None,
                    reason: e.to_string(),
                }))
            }
        }
    }
    Ok(())
}

/// Puts the batches not sent yet back at the front of the work, in order.
pub(super) fn requeue(
    groups: &mut VecDeque<Vec<usize>>,
    mut batches: VecDeque<crate::siem::Batch>,
    index: &HashMap<Uuid, usize>,
) {
    while let Some(batch) = batches.pop_back() {
        groups.push_front(
            batch
                .event_uuids
                .iter()
                .filter_map(|u| index.get(u).copied())
                .collect(),
        );
    }
}

/// Takes the last event of the remaining work (the far end of the range).
pub(super) fn take_last(groups: &mut VecDeque<Vec<usize>>) -> Option<usize> {
    let last = groups.back_mut()?.pop();
    if groups.back().is_some_and(Vec::is_empty) {
        groups.pop_back();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_is_capped_at_twice_log2_plus_eight() {
        assert_eq!(bisection_cap(1), 8);
        assert_eq!(bisection_cap(100), 22);
        assert_eq!(bisection_cap(1000), 28);
    }

    #[tokio::test]
    async fn a_panic_in_provider_code_becomes_that_destinations_failure_with_the_reason() {
        let handle = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("boom in the provider");
            }
            RangeOutcome {
                fates: Vec::new(),
                trouble: None,
            }
        });
        let outcome = range_outcome(handle.await, 3, "datadog");
        assert_eq!(outcome.fates, vec![Fate::MaybeSent; 3]);
        match outcome.trouble {
            Some(Trouble::Failing { reason }) => {
                assert!(reason.contains("boom in the provider"), "{reason}");
                assert!(reason.contains("Datadog"), "{reason}");
                assert!(reason.contains("The events are kept"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A SIEM in memory that answers each request with `answer(request number, event ids in
    /// it)`; the probe has Event ID 0. Records what it was sent.
    type Answer = Box<dyn Fn(usize, &[u32]) -> Disposition + Send + Sync>;

    struct Scripted {
        answer: Answer,
        sent: std::sync::Mutex<Vec<Vec<u32>>>,
    }

    impl Scripted {
        fn new(answer: impl Fn(usize, &[u32]) -> Disposition + Send + Sync + 'static) -> Self {
            Self {
                answer: Box::new(answer),
                sent: std::sync::Mutex::default(),
            }
        }

        fn requests(&self) -> usize {
            self.sent.lock().map(|s| s.len()).unwrap_or_default()
        }
    }

    impl SiemDestination for Scripted {
        fn provider(&self) -> &'static str {
            "Scripted"
        }

        fn build_batches(&self, logs: &[AuditLog], _now: DateTime<Utc>) -> Vec<crate::siem::Batch> {
            let ids: Vec<u32> = logs.iter().map(|l| l.event_id.get()).collect();
            vec![crate::siem::Batch {
                event_uuids: logs.iter().map(|l| l.uuid).collect(),
                body: serde_json::to_vec(&ids).unwrap_or_default(),
            }]
        }

        fn send<'a>(
            &'a self,
            _client: &'a reqwest::Client,
            _egress: &'a EgressPolicy,
            batch: &'a crate::siem::Batch,
        ) -> crate::siem::egress::BoxFuture<'a, Result<Disposition, SendError>> {
            let ids: Vec<u32> = serde_json::from_slice(&batch.body).unwrap_or_default();
            let n = {
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.push(ids.clone());
                sent.len()
            };
            let answer = (self.answer)(n, &ids);
            Box::pin(async move { Ok(answer) })
        }

        fn test_connection<'a>(
            &'a self,
            _client: &'a reqwest::Client,
            _egress: &'a EgressPolicy,
            _subscription_id: Uuid,
        ) -> crate::siem::egress::BoxFuture<
            'a,
            Result<crate::siem::TestSuccess, crate::siem::TestFailure>,
        > {
            // The forwarder never tests a connection; a call here is a test's mistake.
            Box::pin(async {
                Err(crate::siem::TestFailure {
                    kind: crate::siem::TestFailureKind::Other,
                    message: "the scripted SIEM has no connection test".into(),
                })
            })
        }
    }

    /// `n` events with Event ID 12, but those at `poison` have 4888.
    fn logs(n: usize, poison: &[usize]) -> Vec<AuditLog> {
        let sub = Uuid::new_v4();
        (0..n)
            .map(|i| {
                let id = if poison.contains(&i) { 4888 } else { 12 };
                let mut log = crate::siem::test_table::audit_with(
                    id,
                    Uuid::new_v4(),
                    sub,
                    Utc::now(),
                    serde_json::json!({}),
                );
                log.sequence = i as i64 + 1;
                log
            })
            .collect()
    }

    async fn deliver(siem: &Scripted, logs: &[AuditLog]) -> RangeOutcome {
        let egress = EgressPolicy::parse("127.0.0.1").expect("policy");
        deliver_range(
            siem,
            &reqwest::Client::new(),
            &egress,
            "datadog",
            logs,
            Clock::at(Utc::now()),
            false,
        )
        .await
    }

    fn refused(reason: String) -> Disposition {
        Disposition::Rejected { reason }
    }

    #[tokio::test]
    async fn a_lone_event_refused_is_not_parked_when_the_probe_is_refused_too() {
        // A sparse tenant: one event per range, a proxy that answers 400 to everything.
        let siem = Scripted::new(|_, _| refused("HTTP 400".into()));
        let outcome = deliver(&siem, &logs(1, &[])).await;
        assert_eq!(outcome.fates, vec![Fate::Unsent]);
        assert!(
            matches!(outcome.trouble, Some(Trouble::Refused { .. })),
            "{:?}",
            outcome.trouble
        );
        let sent = siem.sent.lock().expect("sent").clone();
        assert_eq!(
            sent,
            vec![vec![12], vec![0]],
            "the event, then the connection-test record as a probe"
        );
    }

    #[tokio::test]
    async fn a_lone_event_refused_is_parked_once_the_probe_is_accepted() {
        let siem = Scripted::new(|_, ids| {
            if ids.contains(&4888) {
                refused("bad event".into())
            } else {
                Disposition::Delivered
            }
        });
        let outcome = deliver(&siem, &logs(1, &[0])).await;
        assert_eq!(outcome.fates, vec![Fate::Parked("bad event".into())]);
        assert_eq!(outcome.trouble, None);
    }

    #[tokio::test]
    async fn refusals_whose_bodies_differ_park_nothing() {
        // A proxy that puts a request id in every answer.
        let siem = Scripted::new(|n, _| refused(format!("HTTP 400 (request id {n})")));
        for n in [1, 2, 7, 100] {
            let outcome = deliver(&siem, &logs(n, &[])).await;
            assert!(
                outcome.fates.iter().all(|f| *f == Fate::Unsent),
                "{n}: {:?}",
                outcome.fates
            );
            assert!(
                matches!(outcome.trouble, Some(Trouble::Refused { .. })),
                "{n}"
            );
        }
    }

    #[tokio::test]
    async fn a_single_event_413_or_a_partial_accept_of_zero_needs_proof() {
        for answer in [
            Disposition::SplitBatch,
            Disposition::PartialAccept {
                accepted: 0,
                reason: "code 6".into(),
            },
        ] {
            let siem = Scripted::new(move |_, _| answer.clone());
            for n in [1, 3] {
                let outcome = deliver(&siem, &logs(n, &[])).await;
                assert!(
                    outcome.fates.iter().all(|f| *f == Fate::Unsent),
                    "{n}: {:?}",
                    outcome.fates
                );
                assert!(outcome.trouble.is_some());
            }
        }
    }

    #[tokio::test]
    async fn an_acceptance_before_a_refusal_proves_nothing() {
        // The destination accepts the first request, then refuses everything (an outage that
        // starts mid-range): nothing refused after the last acceptance is parked.
        let siem = Scripted::new(|n, _| {
            if n == 2 {
                Disposition::Delivered
            } else {
                refused(format!("HTTP 400 #{n}"))
            }
        });
        let outcome = deliver(&siem, &logs(8, &[])).await;
        assert!(
            !outcome.fates.iter().any(|f| matches!(f, Fate::Parked(_))),
            "{:?}",
            outcome.fates
        );
        assert!(outcome.fates.contains(&Fate::Delivered));
        assert!(outcome.trouble.is_some());
    }

    #[tokio::test]
    async fn a_poison_event_at_the_end_of_a_range_is_parked_with_the_probes_proof() {
        let siem = Scripted::new(|_, ids| {
            if ids.contains(&4888) {
                refused("bad event".into())
            } else {
                Disposition::Delivered
            }
        });
        let outcome = deliver(&siem, &logs(10, &[9])).await;
        assert_eq!(outcome.trouble, None);
        assert_eq!(outcome.fates[9], Fate::Parked("bad event".into()));
        assert!(outcome.fates[..9].iter().all(|f| *f == Fate::Delivered));
        assert!(siem.requests() <= bisection_cap(10) + 1);
    }

    #[tokio::test]
    async fn a_gateway_timeout_leaves_the_batch_maybe_sent() {
        let siem = Scripted::new(|_, _| crate::siem::gateway_gave_up(504, None, "Datadog", ""));
        let outcome = deliver(&siem, &logs(3, &[])).await;
        assert_eq!(outcome.fates, vec![Fate::MaybeSent; 3]);
        assert!(matches!(outcome.trouble, Some(Trouble::Retry { .. })));
    }

    fn acknowledged(acknowledged: usize) -> Disposition {
        Disposition::PartlyAcknowledged {
            acknowledged,
            reason: "the connection broke".into(),
        }
    }

    #[tokio::test]
    async fn a_partly_acknowledged_batch_keeps_its_prefix_delivered_and_the_rest_maybe_sent() {
        let siem = Scripted::new(|_, _| acknowledged(2));
        let outcome = deliver(&siem, &logs(4, &[])).await;
        use Fate::{Delivered, MaybeSent};
        assert_eq!(
            outcome.fates,
            vec![Delivered, Delivered, MaybeSent, MaybeSent]
        );
        assert!(matches!(outcome.trouble, Some(Trouble::Retry { .. })));
        assert_eq!(siem.requests(), 1, "the rest waits for the next claim");

        // More acknowledgements than events counts the batch, never beyond it.
        let siem = Scripted::new(|_, _| acknowledged(9));
        let outcome = deliver(&siem, &logs(3, &[])).await;
        assert_eq!(outcome.fates, vec![Delivered; 3]);
    }

    #[tokio::test]
    async fn an_acknowledged_event_proves_an_earlier_refusal() {
        // The poison event is refused, alone too; the far end's event is then acknowledged.
        let siem = Scripted::new(|_, ids| {
            if ids.contains(&4888) {
                refused("bad event".into())
            } else {
                acknowledged(1)
            }
        });
        let outcome = deliver(&siem, &logs(3, &[0])).await;
        assert_eq!(
            outcome.fates,
            vec![
                Fate::Parked("bad event".into()),
                Fate::Unsent,
                Fate::Delivered
            ]
        );
        assert!(matches!(outcome.trouble, Some(Trouble::Retry { .. })));
    }
}
