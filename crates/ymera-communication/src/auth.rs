//! Authorization of callers through the security service
//! (`security.authorize`) when `YMERA_AUTH=required`.
//!
//! Permissions (the security service's catalogue): `comm:send` (send and
//! dlq.replay, which re-sends), `comm:read` (status, history, conversations,
//! metrics, dlq.list). Grants are cached for [`GRANT_TTL`] per credential and
//! permission, so a busy sender costs one security round trip per TTL;
//! refusals are never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use ymera_core::Error;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::AuthMode;
use ymera_core::error::ErrorKind;
use ymera_core::runtime::ServiceRequest;

/// Permission to send (and to replay dead letters, which re-sends them).
pub const SEND: &str = "comm:send";
/// Permission to read status, history, conversations, metrics and the DLQ.
pub const READ: &str = "comm:read";
/// How long a grant is reused.
pub const GRANT_TTL: Duration = Duration::from_secs(10);
/// Most grants cached.
const MAX_GRANTS: usize = 10_000;

/// Checks callers' permissions.
pub struct Authorizer {
    mode: AuthMode,
    client: ServiceClient,
    grants: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Deserialize)]
struct Answer {
    allowed: bool,
    #[serde(default)]
    reason: String,
}

impl Authorizer {
    /// An authorizer asking the security service over `nats`.
    pub fn new(mode: AuthMode, nats: async_nats::Client) -> Self {
        Authorizer {
            mode,
            client: ServiceClient::new(nats).with_timeout(Duration::from_secs(5)),
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// Ok when auth is off or the caller's credential holds `permission`.
    pub async fn check(&self, req: &ServiceRequest, permission: &'static str) -> Result<(), Error> {
        if self.mode == AuthMode::Off {
            return Ok(());
        }
        let credential = match req.credential()? {
            Some(Credential::Bearer(token)) => format!("Bearer {token}"),
            Some(Credential::ApiKey(key)) => key,
            None => {
                return Err(Error::unauthenticated(
                    "a credential is required (Authorization: Bearer or X-API-Key)",
                ));
            }
        };
        let key = (credential, permission);
        if self.granted(&key) {
            return Ok(());
        }
        let answer: Answer = self
            .client
            .request(
                "security.authorize",
                &json!({"credential": key.0, "permission": permission}),
            )
            .await
            .map_err(|e| match e.kind {
                ErrorKind::Internal | ErrorKind::Unavailable => Error::dependency_down("security"),
                _ => e,
            })?;
        if !answer.allowed {
            return match answer.reason.as_str() {
                "insufficient_permissions" | "tenant_mismatch" => Err(Error::forbidden(format!(
                    "{permission} denied: {}",
                    answer.reason
                ))),
                _ => Err(Error::unauthenticated(format!(
                    "credential refused: {}",
                    answer.reason
                ))),
            };
        }
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.len() >= MAX_GRANTS {
            let now = Instant::now();
            grants.retain(|_, until| *until > now);
            if grants.len() >= MAX_GRANTS {
                grants.clear();
            }
        }
        grants.insert(key, Instant::now() + GRANT_TTL);
        Ok(())
    }

    fn granted(&self, key: &(String, &'static str)) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.get(key).is_some_and(|until| *until > Instant::now())
    }
}
