//! ymera-communication integration tests against real nats-server,
//! PostgreSQL and Redis, compiled as one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod attempts;
mod common;
mod failures;
mod faults;
mod outbox;
mod proto;
mod queries;
mod requests;
mod streams;
