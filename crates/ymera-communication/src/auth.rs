//! The permissions the endpoints declare (checked by the runtime with
//! [`Authorizer`] when `YMERA_AUTH=required`, before any handler runs):
//! `comm:send` (send and dlq.replay, which re-sends), `comm:read` (status,
//! history, conversations, metrics, dlq.list). Bearer tokens are verified
//! locally; API key grants are cached for [`GRANT_TTL`] per credential and
//! permission, so a busy sender costs one security round trip per TTL;
//! refusals are never cached.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};

/// Permission to send messages (and replay dead letters).
pub const SEND: &str = "comm:send";
/// Permission to read status, history, conversations and metrics.
pub const READ: &str = "comm:read";
