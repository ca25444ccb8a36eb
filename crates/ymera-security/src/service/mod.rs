//! The endpoints of the `security` service, one typed handler each
//! (`async fn(state, Call<Open>, Request) -> Result<Reply, Error>`), by
//! domain: [`keys`] (`security.keys.*`), [`authorize`]
//! (`security.authorize`), [`tokens`] (`security.tokens.*`,
//! `security.jwks`), [`limits`] (`security.ratelimit.check`) and
//! [`report`] (`security.events.report`).
//!
//! Every endpoint is [`Open`] to the runtime: this service is where
//! credentials are checked, so each handler checks the caller against its
//! own state ([`SecurityState::require`](crate::state::SecurityState::require))
//! where it needs one, after the runtime has parsed the body.

pub mod authorize;
pub mod keys;
pub mod limits;
pub mod report;
pub mod tokens;

use std::time::Duration;

use ymera_core::Error;
use ymera_core::runtime::{Open, ServiceBuilder};

use crate::state::SharedState;

pub use authorize::{AuthorizeRequest, AuthorizeResponse, credential_of};
pub(crate) use keys::create_key;
pub use keys::{CreateKeyRequest, CreatedKey, KeyList, ListKeysRequest, RevokeKeyRequest};
pub use limits::{RateLimitReply, RateLimitRequest};
pub use report::{ActiveUser, ReportRequest, SecurityReport};
pub use tokens::{
    IssueTokenRequest, IssuedToken, MAX_REVOKED_LISTED, RevokedKeyEntry, RevokedList,
    RevokedRequest, RevokedToken, RevokedTokenEntry, TokenRequest, VerifiedToken,
};

/// The service name.
pub const NAME: &str = "security";
/// Default key lifetime (days).
pub const DEFAULT_KEY_DAYS: i64 = 30;
/// Longest key lifetime (days).
pub const MAX_KEY_DAYS: i64 = 365;
/// Most permissions on one key.
pub const MAX_PERMISSIONS: usize = 32;
/// Longest wait of `security.keys.revoke` / `security.tokens.revoke` for every live
/// replica's key table to confirm the revocation. 5 s: a replica that is merely slow
/// (a loaded node) still confirms within it, so the "refused everywhere once the call
/// returns" promise holds; only a replica that stopped answering its pings costs the wait.
pub const REVOCATION_SYNC_LIMIT: Duration = Duration::from_secs(5);
/// Tokens one key may be issued per minute.
pub const TOKENS_PER_MINUTE: u32 = 60;

/// The caller of a security endpoint: open to the runtime, checked here.
pub type Caller = ymera_core::runtime::Call<Open>;

fn db(err: sqlx::Error) -> Error {
    tracing::warn!(error = %err, "PostgreSQL query failed");
    Error::dependency_down("postgres")
}

/// `[a-z][a-z0-9_-]{0,31}:[a-z][a-z0-9_-]{0,31}`, e.g. `config:read`.
pub fn valid_permission(p: &str) -> bool {
    let Some((area, action)) = p.split_once(':') else {
        return false;
    };
    let part = |s: &str| {
        (1..=32).contains(&s.len())
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    };
    part(area) && part(action)
}

/// Tenant names: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_tenant(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && t.as_bytes()[0].is_ascii_alphanumeric()
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Owner names: 1..=128 of letters, digits, `.`, `_`, `@`, `-`.
pub fn valid_owner(o: &str) -> bool {
    (1..=128).contains(&o.len())
        && o.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b))
}

/// The service with every endpoint.
pub fn service(state: SharedState) -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "API keys, tokens, permissions, rate limits and the security audit trail",
    )
    .route("security.keys.create", &state, keys::create)
    .route("security.keys.list", &state, keys::list)
    .route("security.keys.revoke", &state, keys::revoke)
    .route("security.authorize", &state, authorize::authorize)
    .route("security.tokens.issue", &state, tokens::issue)
    .route("security.tokens.verify", &state, tokens::verify)
    .route("security.tokens.revoke", &state, tokens::revoke)
    .route("security.jwks", &state, tokens::jwks)
    .route(ymera_core::auth::REVOKED_SUBJECT, &state, tokens::revoked)
    .route("security.ratelimit.check", &state, limits::check)
    .route("security.events.report", &state, report::report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ymera_core::client::Credential;

    #[test]
    fn names_are_validated() {
        assert!(valid_permission("config:read"));
        assert!(valid_permission("security:admin"));
        assert!(!valid_permission("config"));
        assert!(!valid_permission("Config:read"));
        assert!(!valid_permission(":read"));
        assert!(!valid_permission("a:b:c"));
        assert!(valid_tenant("acme-1"));
        assert!(!valid_tenant("Acme"));
        assert!(!valid_tenant(""));
        assert!(valid_owner("alice@example.com"));
        assert!(!valid_owner("alice\n"));
    }

    #[test]
    fn credential_strings_are_classified() {
        assert_eq!(
            credential_of("Bearer abc"),
            Credential::Bearer("abc".into())
        );
        assert_eq!(credential_of("ymk_x"), Credential::ApiKey("ymk_x".into()));
        assert_eq!(
            credential_of("eyJ.x.y"),
            Credential::Bearer("eyJ.x.y".into())
        );
    }
}
