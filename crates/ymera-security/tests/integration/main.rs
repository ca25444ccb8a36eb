#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the security service against real nats-server,
//! PostgreSQL and Redis.

mod callout;
mod common;
mod keys;
mod keytable;
mod local;
mod proto;
mod ratelimit;
mod revocation;
mod tokens;
