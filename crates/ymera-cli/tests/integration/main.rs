//! ymera-cli integration tests: the real `ymera` binary against real servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod analyze;
mod backup;
mod bench;
mod rollout;
mod stack;
