//! The integration tests: one binary, one module per capability, each test spinning the app on
//! a random port with its own fresh database (see `support`). One binary links the product and
//! the harness once and starts one embedded PostgreSQL cluster when `DATABASE_URL` is unset.
//! Run one capability with `cargo test --test api <module>::`.

mod support;

mod access_matrix;
mod accessibility;
mod account;
mod api_token_scopes;
mod auth;
mod browser;
mod cli;
mod credential_expiry;
mod datadog_monitors;
mod delivery_edges;
mod delivery_log;
mod deploy_files;
mod destinations;
mod embedded_postgres;
mod embedded_recovery;
mod export_controls;
mod forwarder;
mod fuzz_inputs;
mod hash_chain;
mod heartbeat;
mod http_hygiene;
mod ingest;
mod ingestion_tokens;
mod key_rotation;
mod members;
mod notify;
mod page_cache;
mod recent_events;
mod rest_api;
mod scale_out;
mod sequencer;
mod setup;
mod siem_datadog_contract;
mod siem_hec_contract;
mod siem_kafka;
mod siem_providers;
mod siem_sentinel_contract;
mod siem_settings;
mod siem_syslog_contract;
mod siem_webhook_contract;
mod subscriptions;
mod terraform_api;
mod worker_processes;
