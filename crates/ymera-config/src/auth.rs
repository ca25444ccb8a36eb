//! The permissions the endpoints declare, as types (checked by the runtime
//! with `ymera_core::auth::Authorizer` when `YMERA_AUTH=required`, before
//! the body is parsed): [`Read`] for `get`, `history`, `diff`, `schema.get`,
//! `export`; [`Write`] for every write. With auth on, the audit trail's actor
//! is the verified owner of the credential
//! ([`Call::owner`](ymera_core::runtime::Call::owner)), not the request's
//! `actor` field.

pub use ymera_core::auth::{Authorizer, GRANT_TTL};

ymera_core::permission!(
    /// Reading configuration (`config:read`).
    pub Read = "config:read"
);

ymera_core::permission!(
    /// Changing configuration, schemas and templates (`config:write`).
    pub Write = "config:write"
);
