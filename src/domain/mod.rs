//! Domain types: parsed, validated values that the rest of the program trusts.
//!
//! Nothing here knows about HTTP or SQL.

pub mod account;
pub mod datadog;
pub mod events;
pub mod hec;
pub mod ingest;
pub mod kafka;
pub mod sentinel;
pub mod webhook;
