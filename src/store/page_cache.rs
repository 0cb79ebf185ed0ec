//! What the settings page shows, kept in memory between requests.
//!
//! A signed-in settings page needs the session, the membership and the subscription's
//! settings, secrets (sealed), history and delivery health. Read from PostgreSQL each time they
//! cost one statement of about twenty index probes; kept here they cost a hash lookup, so the
//! page is as fast as the template renders.
//!
//! **Freshness.** Triggers (migration `page_cache`) send `NOTIFY cloudpki_page, '<subscription>'`
//! whenever anything the page shows changes, whoever writes it (the page, the REST API, the
//! forwarder, the CLI, an operator's psql), and `NOTIFY cloudpki_auth` when a session ends or a
//! user or membership changes. A listener task drops the entries concerned. The cache is used
//! only while that listener is connected: when it is not (start-up, database restart), every
//! request reads the database, and everything kept is dropped on reconnection, since
//! notifications sent meanwhile are lost. A read that raced a change is not kept: each read
//! takes a [`Ticket`] (generation numbers) before it starts, and [`PageCache::put`] refuses it
//! if a change was announced since. A subscription's entry also lives at most [`PAGE_TTL`], for
//! what the page derives from the clock.
//!
//! Sessions are checked against their expiry time at every use. Sessions and memberships are
//! also kept at most [`AUTH_TTL`], and a listener that has heard nothing for a while checks its
//! connection with a query: a connection that died without a word (NAT, failover) cannot keep a
//! revoked session or membership alive for long.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use sqlx::{postgres::PgListener, PgPool};
use uuid::Uuid;

use super::{
    accounts::{MembershipRow, SessionRow},
    page::SubscriptionPage,
};

/// Channel of subscription changes (payload: the subscription id).
pub const PAGE_CHANNEL: &str = "cloudpki_page";
/// Channel of session, user and membership changes.
pub const AUTH_CHANNEL: &str = "cloudpki_auth";
/// The longest a subscription's page data is kept, changed or not.
pub const PAGE_TTL: Duration = Duration::from_secs(1);
/// The longest a session or membership is kept, changed or not: a backstop should the
/// listener's connection die without a word (notifications are the rule).
pub const AUTH_TTL: Duration = Duration::from_secs(60);
/// With no notification for this long, the listener checks its connection with a query.
const LISTEN_PING: Duration = Duration::from_secs(30);
/// Entries kept at most per kind; beyond, the kind is emptied (a cache, not a store).
const CAPACITY: usize = 20_000;

/// Generation numbers taken before a read; the read is kept only if they still hold.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    epoch: u64,
    auth: u64,
    subscription: u64,
}

/// Sessions, memberships and subscription pages, dropped on the database's word.
#[derive(Default)]
pub struct PageCache {
    /// Whether the listener is connected (otherwise nothing is read or kept).
    live: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped when the listener connects or loses its connection.
    epoch: u64,
    /// Bumped on every `cloudpki_auth`.
    auth: u64,
    /// Bumped on every `cloudpki_page` of a subscription.
    generations: HashMap<Uuid, u64>,
    sessions: HashMap<Vec<u8>, (Instant, SessionRow)>,
    memberships: HashMap<(Uuid, Uuid), (Instant, MembershipRow)>,
    /// By subscription and destination number.
    pages: HashMap<(Uuid, i16), (Instant, Arc<SubscriptionPage>)>,
}

impl Inner {
    fn clear(&mut self) {
        self.generations.clear();
        self.sessions.clear();
        self.memberships.clear();
        self.pages.clear();
    }
}

fn live_session<'a>(inner: &'a Inner, digest: &[u8]) -> Option<&'a SessionRow> {
    inner
        .sessions
        .get(digest)
        .filter(|(at, s)| at.elapsed() < AUTH_TTL && s.expires_at > Utc::now())
        .map(|(_, s)| s)
}

fn bounded<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= CAPACITY && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

impl PageCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the listener is connected.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The generations to present with what a read about to start returns (`None`: nothing
    /// may be kept now).
    pub fn ticket(&self, subscription: Option<Uuid>) -> Option<Ticket> {
        if !self.is_live() {
            return None;
        }
        let inner = self.lock();
        Some(Ticket {
            epoch: inner.epoch,
            auth: inner.auth,
            subscription: subscription
                .and_then(|s| inner.generations.get(&s).copied())
                .unwrap_or(0),
        })
    }

    /// A live session with this token digest.
    pub fn session(&self, digest: &[u8]) -> Option<SessionRow> {
        if !self.is_live() {
            return None;
        }
        let inner = self.lock();
        live_session(&inner, digest).cloned()
    }

    /// Session, membership and page of a settings page, when all three are kept.
    pub fn settings_page(
        &self,
        digest: &[u8],
        subscription: Uuid,
        destination: i16,
    ) -> Option<(SessionRow, MembershipRow, Arc<SubscriptionPage>)> {
        if !self.is_live() {
            return None;
        }
        let inner = self.lock();
        let session = live_session(&inner, digest)?;
        let membership = inner
            .memberships
            .get(&(session.user_id, subscription))
            .filter(|(at, _)| at.elapsed() < AUTH_TTL)
            .map(|(_, m)| m)?;
        let (at, page) = inner.pages.get(&(subscription, destination))?;
        if at.elapsed() >= PAGE_TTL {
            return None;
        }
        Some((session.clone(), membership.clone(), page.clone()))
    }

    /// Keeps a session read under `ticket`.
    pub fn put_session(&self, ticket: Ticket, digest: &[u8], session: &SessionRow) {
        let mut inner = self.lock();
        if self.is_live() && ticket.epoch == inner.epoch && ticket.auth == inner.auth {
            bounded(
                &mut inner.sessions,
                digest.to_vec(),
                (Instant::now(), session.clone()),
            );
        }
    }

    /// Keeps what a settings page read under `ticket`.
    pub fn put(
        &self,
        ticket: Ticket,
        digest: &[u8],
        session: &SessionRow,
        membership: Option<&MembershipRow>,
        destination: i16,
        page: &Arc<SubscriptionPage>,
    ) {
        let mut inner = self.lock();
        if !self.is_live() || ticket.epoch != inner.epoch {
            return;
        }
        if ticket.auth == inner.auth {
            let now = Instant::now();
            bounded(&mut inner.sessions, digest.to_vec(), (now, session.clone()));
            if let Some(m) = membership {
                bounded(
                    &mut inner.memberships,
                    (session.user_id, m.subscription_id),
                    (now, m.clone()),
                );
            }
        }
        if let Some(m) = membership {
            let current = inner
                .generations
                .get(&m.subscription_id)
                .copied()
                .unwrap_or(0);
            if ticket.subscription == current {
                bounded(
                    &mut inner.pages,
                    (m.subscription_id, destination),
                    (Instant::now(), page.clone()),
                );
            }
        }
    }

    /// Whether a page of `subscription` is kept (fresh or not): for tests and metrics.
    pub fn keeps_page(&self, subscription: Uuid) -> bool {
        self.lock().pages.keys().any(|(s, _)| *s == subscription)
    }

    /// The database said `subscription` changed.
    pub fn subscription_changed(&self, subscription: Uuid) {
        let mut inner = self.lock();
        *inner.generations.entry(subscription).or_insert(0) += 1;
        inner.pages.retain(|(s, _), _| *s != subscription);
    }

    /// The database said a session, user or membership changed.
    pub fn auth_changed(&self) {
        let mut inner = self.lock();
        inner.auth += 1;
        inner.sessions.clear();
        inner.memberships.clear();
    }

    /// The listener connected (`true`) or lost its connection (`false`): everything kept is
    /// dropped either way.
    pub fn set_live(&self, live: bool) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.clear();
        self.live.store(live, Ordering::Release);
    }

    /// Drops everything kept (what this process just wrote, whatever it was).
    pub fn flush(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.clear();
    }
}

/// Listens for the triggers' notifications and applies them to `cache`, reconnecting after
/// errors; ends when `stop` turns true.
pub async fn listen(
    pool: PgPool,
    cache: Arc<PageCache>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        cache.set_live(false);
        if *stop.borrow() {
            return;
        }
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([PAGE_CHANNEL, AUTH_CHANNEL]).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match connected.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "page cache: cannot LISTEN; pages read the database until it can");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        cache.set_live(true);
        loop {
            tokio::select! {
                n = tokio::time::timeout(LISTEN_PING, listener.try_recv()) => match n {
                    // Quiet for a while: a half-open connection says nothing, so ask.
                    Err(_) => {
                        let ping = sqlx::query_scalar!("select 1").fetch_one(&mut listener);
                        if let Err(e) = ping.await {
                            tracing::warn!(error = %e, "page cache: LISTEN connection does not answer");
                            break;
                        }
                    }
                    Ok(n) => match n {
                    Ok(Some(n)) => match n.channel() {
                        PAGE_CHANNEL => match Uuid::parse_str(n.payload()) {
                            Ok(sub) => cache.subscription_changed(sub),
                            Err(_) => cache.flush(),
                        },
                        _ => cache.auth_changed(),
                    },
                    Ok(None) => {
                        tracing::warn!("page cache: LISTEN connection lost");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "page cache: LISTEN failed");
                        break;
                    }
                    },
                },
                _ = stop.changed() => {
                    cache.set_live(false);
                    return;
                }
            }
        }
        // Not straight back: a connection that fails at once would spin.
        cache.set_live(false);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: Uuid, expires_in: chrono::Duration) -> SessionRow {
        SessionRow {
            user_id: user,
            email: "a@example.com".into(),
            csrf_token: "t".into(),
            expires_at: Utc::now() + expires_in,
        }
    }

    fn member(sub: Uuid) -> MembershipRow {
        MembershipRow {
            subscription_id: sub,
            name: "s".into(),
            role: "admin".into(),
        }
    }

    fn kept(cache: &PageCache, user: Uuid, sub: Uuid, expires_in: chrono::Duration) {
        let ticket = cache.ticket(Some(sub)).expect("live");
        cache.put(
            ticket,
            b"d",
            &session(user, expires_in),
            Some(&member(sub)),
            1,
            &Arc::new(SubscriptionPage::default()),
        );
    }

    #[test]
    fn nothing_is_kept_or_served_while_the_listener_is_not_connected() {
        let cache = PageCache::default();
        assert!(cache.ticket(None).is_none());
        cache.set_live(true);
        let (user, sub) = (Uuid::new_v4(), Uuid::new_v4());
        kept(&cache, user, sub, chrono::Duration::hours(1));
        assert!(cache.settings_page(b"d", sub, 1).is_some());
        cache.set_live(false);
        assert!(cache.settings_page(b"d", sub, 1).is_none());
        cache.set_live(true);
        assert!(
            cache.settings_page(b"d", sub, 1).is_none(),
            "dropped on reconnection"
        );
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = PageCache::default();
        cache.set_live(true);
        let (user, sub) = (Uuid::new_v4(), Uuid::new_v4());
        let ticket = cache.ticket(Some(sub)).expect("live");
        cache.subscription_changed(sub);
        cache.put(
            ticket,
            b"d",
            &session(user, chrono::Duration::hours(1)),
            Some(&member(sub)),
            1,
            &Arc::new(SubscriptionPage::default()),
        );
        assert!(cache.settings_page(b"d", sub, 1).is_none());
        assert!(cache.session(b"d").is_some(), "the session did not change");
        let ticket = cache.ticket(Some(sub)).expect("live");
        cache.auth_changed();
        cache.put_session(ticket, b"e", &session(user, chrono::Duration::hours(1)));
        assert!(cache.session(b"e").is_none());
    }

    #[test]
    fn changes_drop_what_they_concern_and_expired_sessions_are_never_served() {
        let cache = PageCache::default();
        cache.set_live(true);
        let (user, sub, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        kept(&cache, user, sub, chrono::Duration::hours(1));
        cache.subscription_changed(other);
        assert!(cache.settings_page(b"d", sub, 1).is_some());
        cache.subscription_changed(sub);
        assert!(cache.settings_page(b"d", sub, 1).is_none());
        kept(&cache, user, sub, chrono::Duration::hours(1));
        cache.auth_changed();
        assert!(cache.session(b"d").is_none());
        kept(&cache, user, sub, chrono::Duration::seconds(-1));
        assert!(cache.session(b"d").is_none());
        assert!(cache.settings_page(b"d", sub, 1).is_none());
    }

    #[test]
    fn each_destination_has_its_own_page_and_a_change_drops_them_all() {
        let cache = PageCache::default();
        cache.set_live(true);
        let (user, sub) = (Uuid::new_v4(), Uuid::new_v4());
        kept(&cache, user, sub, chrono::Duration::hours(1));
        assert!(cache.settings_page(b"d", sub, 1).is_some());
        assert!(
            cache.settings_page(b"d", sub, 2).is_none(),
            "destination 2's page is not destination 1's"
        );
        cache.subscription_changed(sub);
        assert!(!cache.keeps_page(sub));
    }
}
