//! ymera-config integration tests against real nats-server, PostgreSQL and
//! Redis, compiled as one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod binary;
mod cache;
mod common;
mod import_export;
mod metrics;
mod proto;
mod replicas;
mod watcher;
mod writes;
