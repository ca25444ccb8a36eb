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
//! | `communication.agents.register` | `comm:send` | [`agents::register`] |
//! | `communication.agents.heartbeat` | `comm:send` | [`agents::heartbeat`] |
//! | `communication.agents.deregister` | `comm:send` | [`agents::deregister`] |
//! | `communication.agents.list` | `comm:read` | [`agents::list`] |
//! | `communication.agents.get` | `comm:read` | [`agents::get`] |
//!
//! Requests and replies are the types of [`model`](crate::model).

use std::sync::Arc;

use ymera_core::runtime::ServiceBuilder;

use crate::{Communication, agents, dlq, queries, send};

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
        .route("communication.agents.register", comm, agents::register)
        .route("communication.agents.heartbeat", comm, agents::heartbeat)
        .route("communication.agents.deregister", comm, agents::deregister)
        .route("communication.agents.list", comm, agents::list)
        .route("communication.agents.get", comm, agents::get)
}
