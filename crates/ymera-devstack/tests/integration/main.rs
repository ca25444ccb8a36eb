//! Integration tests of ymera-devstack against the real servers (run `scripts/setup` first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod binaries;
mod cluster;
mod common;
mod lifecycle;
mod nats;
mod placement;
mod postgres;
mod redis;
mod regions;
mod service;
mod up;
