#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Integration tests of the drafting service against real nats-server,
//! PostgreSQL and Redis.

mod auth;
mod autosave;
mod collab;
mod common;
mod drafts;
mod expiry;
mod proto;
mod replicas;
