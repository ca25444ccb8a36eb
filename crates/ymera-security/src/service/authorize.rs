//! `security.authorize`: may this credential do that (in that tenant)?
//! What other services ask about API keys.

use serde::{Deserialize, Serialize};
use ymera_core::client::Credential;
use ymera_core::error::Violation;
use ymera_core::{Error, Result};

use super::{Caller, valid_permission, valid_tenant};
use crate::apikey;
use crate::state::{MAX_CREDENTIAL_LEN, Principal, SharedState};

/// `security.authorize` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// An API key, a JWT, or `Bearer <jwt>`.
    pub credential: String,
    /// The permission needed, e.g. `config:write`.
    pub permission: String,
    /// The tenant owning the resource, when it has one.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `security.authorize` reply.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizeResponse {
    pub allowed: bool,
    pub principal: Option<Principal>,
    pub permissions: Vec<String>,
    /// `granted`, or why not (`invalid_api_key`, `expired_token`,
    /// `insufficient_permissions`, `tenant_mismatch`, …).
    pub reason: String,
}

impl AuthorizeResponse {
    /// A refusal without a principal (the credential did not check out).
    fn denied(reason: &str) -> Self {
        AuthorizeResponse {
            allowed: false,
            principal: None,
            permissions: Vec::new(),
            reason: reason.to_owned(),
        }
    }

    /// The answer for a known principal.
    fn of(principal: Principal, allowed: bool, reason: &str) -> Self {
        AuthorizeResponse {
            allowed,
            permissions: principal.permissions.clone(),
            principal: Some(principal),
            reason: reason.to_owned(),
        }
    }
}

/// Reads a credential string: `Bearer <jwt>`, `ymk_…` or a bare JWT.
pub fn credential_of(text: &str) -> Credential {
    let text = text.trim();
    if let Some(jwt) = text.strip_prefix("Bearer ") {
        Credential::Bearer(jwt.trim().to_owned())
    } else if text.starts_with(apikey::PREFIX) {
        Credential::ApiKey(text.to_owned())
    } else {
        Credential::Bearer(text.to_owned())
    }
}

pub(super) async fn authorize(
    state: SharedState,
    _: Caller,
    body: AuthorizeRequest,
) -> Result<AuthorizeResponse> {
    // Size first: nothing else looks at an oversized credential.
    if body.credential.len() > MAX_CREDENTIAL_LEN {
        let denial = state.deny_too_long().await;
        return Ok(AuthorizeResponse::denied(denial.reason));
    }
    let mut violations = Vec::new();
    if !valid_permission(&body.permission) {
        violations.push(Violation::new("/permission", "must look like area:action"));
    }
    if body.tenant.as_deref().is_some_and(|t| !valid_tenant(t)) {
        violations.push(Violation::new("/tenant", "1-64 of a-z, 0-9, '_', '-'"));
    }
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let principal = match state.authenticate(&credential_of(&body.credential)).await? {
        Ok(p) => p,
        Err(denial) => return Ok(AuthorizeResponse::denied(denial.reason)),
    };
    if let Some(tenant) = body.tenant.as_deref()
        && !principal.in_tenant(tenant)
    {
        let denial = state
            .deny_permission(&principal, &body.permission, Some(tenant))
            .await;
        return Ok(AuthorizeResponse::of(principal, false, denial.reason));
    }
    if !principal.has(&body.permission) {
        let denial = state
            .deny_permission(&principal, &body.permission, None)
            .await;
        return Ok(AuthorizeResponse::of(principal, false, denial.reason));
    }
    Ok(AuthorizeResponse::of(principal, true, "granted"))
}
