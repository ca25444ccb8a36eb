//! The permissions the endpoints declare (checked by the runtime with
//! `ymera_core::auth::Authorizer` when `YMERA_AUTH=required`, before any
//! handler runs): `config:read` for `get`, `history`, `diff`, `schema.get`,
//! `export`; `config:write` for every write. With auth on, the audit
//! trail's actor is the verified owner of the credential (the request's
//! [`principal`](ymera_core::runtime::ServiceRequest::principal)), not the
//! request's `actor` field.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};

/// Permission to read configuration.
pub const READ: &str = "config:read";
/// Permission to change configuration, schemas and templates.
pub const WRITE: &str = "config:write";
