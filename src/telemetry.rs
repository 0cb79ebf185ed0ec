//! Logging and metrics set-up, for every process (`serve`, `worker`, the CLI).
//!
//! Logs go to stderr, as text or (`CLOUDPKI_LOG_FORMAT=json`) one JSON object per line, filtered
//! by `RUST_LOG`. Metrics go to one process-wide Prometheus recorder, installed on first use and
//! served by `web::metrics` on `CLOUDPKI_METRICS_LISTEN`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::ConfigError;

/// Installs the log subscriber; a bad `CLOUDPKI_LOG_FORMAT` is a configuration error.
pub fn init_logging() -> Result<(), ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into());
    match std::env::var("CLOUDPKI_LOG_FORMAT")
        .as_deref()
        .map(str::trim)
    {
        Err(_) | Ok("" | "text") => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, for log shippers.
        Ok("json") => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        Ok(other) => {
            return Err(ConfigError::new(
                "CLOUDPKI_LOG_FORMAT",
                format!("`{other}` is neither `text` nor `json`"),
            ))
        }
    }
    Ok(())
}

/// The process-wide recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("cloudpki_send_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("cloudpki_batch_events".into()),
                    &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (several apps in one test process).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
