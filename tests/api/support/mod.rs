//! Test harness: the real server on `127.0.0.1:0` with a fresh database per test.
//!
//! The database comes from `DATABASE_URL` when it is set; otherwise the test binary starts one
//! embedded PostgreSQL cluster (the product's own embedded code) under the target dir and every
//! test creates its own database in it.

pub mod app;
pub mod browser;
pub mod fake_datadog;
pub mod fake_datadog_api;
pub mod fake_hec;
pub mod fake_sentinel;
pub mod fake_webhook;
pub mod hot_queries;
pub mod kafka;
pub mod portal;
pub mod ports;
pub mod rsyslog;
pub mod smtp;

#[allow(unused_imports)]
pub use app::*;
