//! End-to-end suites across processes, against real servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bearer;
mod chat;
mod cluster;
mod live_settings;
mod process;
mod seed_review;
mod sender;
mod services;
