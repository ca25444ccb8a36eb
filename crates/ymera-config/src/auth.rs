//! Authorization of callers through the security service when
//! `YMERA_AUTH=required` (the client is `ymera_core::auth::Authorizer`).
//!
//! Permissions (the security service's catalogue): `config:read` for
//! `get`, `history`, `diff`, `schema.get`, `export`; `config:write` for every
//! write. With auth on, the audit trail's actor is the credential's verified
//! owner that [`Authorizer::check`] returns, not the request's `actor` field.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};

/// Permission to read configuration.
pub const READ: &str = "config:read";
/// Permission to change configuration, schemas and templates.
pub const WRITE: &str = "config:write";
