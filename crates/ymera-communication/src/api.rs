//! The endpoints of service `communication`, each with the permission its
//! handler's [`Call`](ymera_core::runtime::Call) declares ([`auth`](crate::auth)):
//!
//! | subject | permission | handler |
//! |---|---|---|
//! | `communication.send` | `comm:send` | [`send::endpoint`] |
//! | `communication.status` | `comm:read` | [`queries::status`] |
//! | `communication.history` | `comm:read` | [`queries::history`] |
//! | `communication.conversations` | `comm:read` | [`queries::conversations`] |
//! | `communication.metrics` | `comm:read` | [`queries::metrics`] |
//! | `communication.dlq.list` | `comm:read` | [`dlq::list`] |
//! | `communication.dlq.replay` | `comm:send` | [`dlq::replay`] |
//!
//! Requests and replies are the types of [`model`](crate::model).

use std::sync::Arc;

use ymera_core::runtime::ServiceBuilder;

use crate::{Communication, dlq, queries, send};

/// Registers every endpoint on `builder`.
pub fn endpoints(builder: ServiceBuilder, comm: Arc<Communication>) -> ServiceBuilder {
    let comm = &comm;
    builder
        .route("communication.send", comm, send::endpoint)
        .route("communication.status", comm, queries::status)
        .route("communication.history", comm, queries::history)
        .route("communication.conversations", comm, queries::conversations)
        .route("communication.metrics", comm, queries::metrics)
        .route("communication.dlq.list", comm, dlq::list)
        .route("communication.dlq.replay", comm, dlq::replay)
}
