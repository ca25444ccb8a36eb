//! The one integration-test binary of ymera-code-analysis (DESIGN §7).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

#[path = "integration/common.rs"]
mod common;
#[path = "integration/inbox.rs"]
mod inbox;
#[path = "integration/limits.rs"]
mod limits;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/proto.rs"]
mod proto;
#[path = "integration/reports.rs"]
mod reports;
#[path = "integration/robustness.rs"]
mod robustness;
#[path = "integration/rules.rs"]
mod rules;
#[path = "integration/service.rs"]
mod service;
