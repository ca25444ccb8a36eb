//! ymera-core integration tests against real servers, compiled as one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod failover;
mod jetstream;
mod retention;
mod runtime;
mod schema;
mod stores;
mod telemetry;
