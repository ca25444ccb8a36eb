//! The auth client every service uses when `YMERA_AUTH=required`: asks the
//! security service (`security.authorize`) whether a request's credential
//! holds a permission. Grants are cached for [`GRANT_TTL`] per credential and
//! permission (at most 10,000 entries); refusals never are. An unreachable
//! security service is 503 `dependency_down`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::{Credential, ServiceClient};
use crate::config::AuthMode;
use crate::error::{Error, ErrorKind};
use crate::runtime::ServiceRequest;
use serde::Deserialize;
use serde_json::json;

/// How long a grant is reused.
pub const GRANT_TTL: Duration = Duration::from_secs(10);
const MAX_GRANTS: usize = 10_000;

#[derive(Deserialize)]
struct Answer {
    allowed: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    principal: Option<Principal>,
}

#[derive(Deserialize)]
struct Principal {
    owner: String,
}

/// (credential, permission).
type GrantKey = (String, &'static str);
/// (valid until, verified owner).
type Grant = (Instant, Option<String>);

/// Checks callers' permissions with the security service.
pub struct Authorizer {
    mode: AuthMode,
    client: ServiceClient,
    grants: Mutex<HashMap<GrantKey, Grant>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer asking over `nats`.
    pub fn new(mode: AuthMode, nats: async_nats::Client) -> Self {
        Authorizer {
            mode,
            client: ServiceClient::new(nats).with_timeout(Duration::from_secs(5)),
            grants: Mutex::new(HashMap::new()),
        }
    }

    /// Ok(None) when auth is off; Ok(Some(owner)) when the caller's
    /// credential holds `permission`; 401/403/503 otherwise.
    pub async fn check(
        &self,
        req: &ServiceRequest,
        permission: &'static str,
    ) -> Result<Option<String>, Error> {
        if self.mode == AuthMode::Off {
            return Ok(None);
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
        if let Some(owner) = self.granted(&key) {
            return Ok(owner);
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
        let owner = answer.principal.map(|p| p.owner);
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        if grants.len() >= MAX_GRANTS {
            let now = Instant::now();
            grants.retain(|_, (until, _)| *until > now);
            if grants.len() >= MAX_GRANTS {
                grants.clear();
            }
        }
        grants.insert(key, (Instant::now() + GRANT_TTL, owner.clone()));
        Ok(owner)
    }

    fn granted(&self, key: &(String, &'static str)) -> Option<Option<String>> {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, owner)| owner.clone())
    }
}
