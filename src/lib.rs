//! cloudpki: the settings portal and audit-log exporter of a Cloud PKI.
//!
//! `main.rs` parses the command line and calls [`cli::run`]; everything else lives here.

pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod forwarder;
pub mod notify;
pub mod sequencer;
pub mod settings;
pub mod siem;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod web;
