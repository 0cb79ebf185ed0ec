//! Destinations built from stored settings, kept per settings version.

use super::*;
use crate::{
    domain::destination::DestinationKey,
    settings::{DestinationError, Unusable},
};

impl Forwarder {
    /// The configured destination, or why it cannot be used.
    pub(super) async fn destination(
        &self,
        dest: DestinationKey,
        provider_id: &str,
    ) -> Result<Arc<dyn SiemDestination>, DestinationError> {
        let Ok(provider) = Provider::parse(provider_id) else {
            return Err(Unusable::UnknownProvider(provider_id.to_owned()).into());
        };
        let version = store::siem::settings(&self.pool, dest)
            .await?
            .map(|s| s.updated_at);
        let key = (dest, provider_id.to_owned());
        if let Some(cached) = version.and_then(|v| self.destinations.get(&key, v)) {
            return Ok(cached);
        }
        let destination: Arc<dyn SiemDestination> = crate::settings::destination(
            &self.pool,
            &self.master_key,
            dest,
            provider,
            crate::siem::provider::Context {
                hostname: &self.hostname,
                shared: &self.shared,
            },
        )
        .await?
        .into();
        if let Some(version) = version {
            self.destinations.put(key, version, destination.clone());
        }
        Ok(destination)
    }
}

/// Destinations built from stored settings, kept per settings version: the settings are read,
/// unsealed and parsed once per save, not per claim, and a destination's connections (a Kafka
/// producer, a Sentinel token) live as long as its settings.
#[derive(Default)]
pub(super) struct DestinationCache {
    entries: std::sync::Mutex<HashMap<(DestinationKey, String), CachedDestination>>,
}

pub(super) struct CachedDestination {
    version: DateTime<Utc>,
    destination: Arc<dyn SiemDestination>,
    built: std::time::Instant,
    used: std::time::Instant,
}

/// A cached destination is built again after this long, so that time-bound parts of its
/// settings (a rotated-out webhook secret's overlap window) take effect without a save.
pub(super) const DESTINATION_MAX_AGE: Duration = Duration::from_secs(300);

/// A cached destination unused for this long is dropped (its subscription stopped exporting).
pub(super) const DESTINATION_IDLE: Duration = Duration::from_secs(3600);

impl DestinationCache {
    fn get(
        &self,
        key: &(DestinationKey, String),
        version: DateTime<Utc>,
    ) -> Option<Arc<dyn SiemDestination>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .get_mut(key)
            .filter(|e| e.version == version && e.built.elapsed() < DESTINATION_MAX_AGE)?;
        entry.used = std::time::Instant::now();
        Some(entry.destination.clone())
    }

    fn put(
        &self,
        key: (DestinationKey, String),
        version: DateTime<Utc>,
        destination: Arc<dyn SiemDestination>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.used.elapsed() < DESTINATION_IDLE);
        entries.insert(
            key,
            CachedDestination {
                version,
                destination,
                built: std::time::Instant::now(),
                used: std::time::Instant::now(),
            },
        );
    }
}
