//! The endpoints of the `security` service.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use ymera_core::client::Credential;
use ymera_core::error::Violation;
use ymera_core::ratelimit::RateLimit;
use ymera_core::runtime::{Reply, ServiceBuilder, ServiceRequest, with_state};
use ymera_core::{Error, Result};

use crate::apikey;
use crate::events::SecurityEvent;
use crate::keys::{self, KeyInfo, KeyRow};
use crate::state::{ADMIN_PERMISSION, MAX_CREDENTIAL_LEN, Principal, SharedState, principal_of};
use crate::token::{self, Claims};

/// The service name.
pub const NAME: &str = "security";
/// Default key lifetime (days).
pub const DEFAULT_KEY_DAYS: i64 = 30;
/// Longest key lifetime (days).
pub const MAX_KEY_DAYS: i64 = 365;
/// Most permissions on one key.
pub const MAX_PERMISSIONS: usize = 32;
/// Longest wait of `security.keys.revoke` for its own key-table notification.
pub const REVOCATION_SYNC_LIMIT: Duration = Duration::from_secs(2);
/// Tokens one key may be issued per minute.
pub const TOKENS_PER_MINUTE: u32 = 60;

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
    .endpoint("security.keys.create", with_state(&state, keys_create))
    .endpoint("security.keys.list", with_state(&state, keys_list))
    .endpoint("security.keys.revoke", with_state(&state, keys_revoke))
    .endpoint("security.authorize", with_state(&state, authorize))
    .endpoint("security.tokens.issue", with_state(&state, tokens_issue))
    .endpoint("security.tokens.verify", with_state(&state, tokens_verify))
    .endpoint("security.tokens.revoke", with_state(&state, tokens_revoke))
    .endpoint("security.jwks", with_state(&state, jwks))
    .endpoint(
        ymera_core::auth::REVOKED_SUBJECT,
        with_state(&state, tokens_revoked),
    )
    .endpoint(
        "security.ratelimit.check",
        with_state(&state, ratelimit_check),
    )
    .endpoint("security.events.report", with_state(&state, events_report))
}

// ---------------------------------------------------------------- keys

/// `security.keys.create` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub owner: String,
    /// Default: the caller's tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    pub permissions: Vec<String>,
    /// 1..=365, default 30.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `security.keys.create` reply: the only time the key is shown.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The full key `ymk_…` (store it now; it cannot be shown again).
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

async fn keys_create(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let caller = state.require(&req, ADMIN_PERMISSION).await?;
    let body: CreateKeyRequest = req.json()?;
    let tenant = body.tenant.clone().unwrap_or_else(|| caller.tenant.clone());
    let days = body.expires_in_days.unwrap_or(DEFAULT_KEY_DAYS);
    let mut violations = Vec::new();
    if !valid_owner(&body.owner) {
        violations.push(Violation::new(
            "/owner",
            "1-128 letters, digits, '.', '_', '@', '-'",
        ));
    }
    if !valid_tenant(&tenant) {
        violations.push(Violation::new("/tenant", "1-64 of a-z, 0-9, '_', '-'"));
    }
    if body.permissions.len() > MAX_PERMISSIONS {
        violations.push(Violation::new("/permissions", "at most 32 permissions"));
    }
    for (i, p) in body.permissions.iter().enumerate() {
        if !valid_permission(p) {
            violations.push(Violation::new(
                format!("/permissions/{i}"),
                "must look like area:action",
            ));
        }
    }
    if !(1..=MAX_KEY_DAYS).contains(&days) {
        violations.push(Violation::new(
            "/expires_in_days",
            "must be between 1 and 365",
        ));
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        violations.push(Violation::new("/description", "at most 500 characters"));
    }
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    if !caller.in_tenant(&tenant) {
        state
            .deny_permission(&caller, ADMIN_PERMISSION, Some(&tenant))
            .await;
        return Err(Error::forbidden("cannot create keys for another tenant"));
    }
    // No escalation: a key never gets a permission its creator lacks.
    if let Some(extra) = body.permissions.iter().find(|p| !caller.has(p)) {
        state.deny_permission(&caller, extra, None).await;
        return Err(Error::forbidden(format!(
            "cannot grant {extra}: the caller lacks it"
        )));
    }
    let mut permissions = body.permissions.clone();
    permissions.sort();
    permissions.dedup();
    let created = create_key(
        &state.pool,
        &state.pepper,
        &body.owner,
        &tenant,
        permissions,
        days,
        body.description.map(|d| crate::events::scrub(&d)),
        Some(caller.owner.clone()),
    )
    .await?;
    state
        .record(
            SecurityEvent::new(
                "key_created",
                serde_json::json!({"created_by": caller.owner, "permissions": created.info.permissions}),
            )
            .with_principal(Some(&created.info.owner), Some(&created.info.tenant), Some(&created.info.key_id)),
        )
        .await;
    Reply::json(&created)
}

/// Creates and stores a key (shared by the endpoint and the bootstrap).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_key(
    pool: &sqlx::PgPool,
    pepper: &apikey::Pepper,
    owner: &str,
    tenant: &str,
    permissions: Vec<String>,
    days: i64,
    description: Option<String>,
    created_by: Option<String>,
) -> Result<CreatedKey> {
    let generated = apikey::generate(pepper);
    let now = Utc::now();
    let row = KeyRow {
        key_id: generated.key_id.clone(),
        secret_hash: generated.secret_hash.to_vec(),
        owner: owner.to_owned(),
        tenant: tenant.to_owned(),
        permissions,
        description,
        created_by,
        created_at: now,
        expires_at: now + ChronoDuration::days(days),
        revoked_at: None,
        last_used: None,
        usage_count: 0,
    };
    keys::insert(pool, &row).await.map_err(db)?;
    Ok(CreatedKey {
        key: generated.full,
        info: KeyInfo::from(row),
    })
}

/// `security.keys.list` request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListKeysRequest {
    /// Default: the caller's tenant (`system` admins may name any, or `*` for all).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub include_revoked: bool,
    /// 1..=1000, default 100.
    #[serde(default)]
    pub limit: Option<i64>,
}

async fn keys_list(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let caller = state.require(&req, ADMIN_PERMISSION).await?;
    let body: ListKeysRequest = req.json_or_default()?;
    let limit = body.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::validation(vec![Violation::new(
            "/limit",
            "must be between 1 and 1000",
        )]));
    }
    let tenant = match body.tenant.as_deref() {
        Some("*") if caller.tenant == crate::state::SYSTEM_TENANT => None,
        Some(t) => Some(t.to_owned()),
        None => Some(caller.tenant.clone()),
    };
    if let Some(t) = &tenant {
        if !valid_tenant(t) {
            return Err(Error::validation(vec![Violation::new(
                "/tenant",
                "1-64 of a-z, 0-9, '_', '-'",
            )]));
        }
        if !caller.in_tenant(t) {
            state
                .deny_permission(&caller, ADMIN_PERMISSION, Some(t))
                .await;
            return Err(Error::forbidden("cannot list another tenant's keys"));
        }
    }
    let rows = keys::list(&state.pool, tenant.as_deref(), body.include_revoked, limit)
        .await
        .map_err(db)?;
    let keys: Vec<KeyInfo> = rows.into_iter().map(KeyInfo::from).collect();
    Reply::json(&serde_json::json!({ "keys": keys }))
}

/// `security.keys.revoke` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    pub key_id: String,
}

async fn keys_revoke(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let caller = state.require(&req, ADMIN_PERMISSION).await?;
    let body: RevokeKeyRequest = req.json()?;
    if body.key_id.len() != apikey::KEY_ID_LEN
        || !body.key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(Error::validation(vec![Violation::new(
            "/key_id",
            "a 12-character key id",
        )]));
    }
    let Some(existing) = keys::find(&state.pool, &body.key_id).await.map_err(db)? else {
        return Err(Error::not_found("no such key"));
    };
    if !caller.in_tenant(&existing.tenant) {
        // Same answer as an unknown key: do not reveal other tenants' keys.
        state
            .deny_permission(&caller, ADMIN_PERMISSION, Some(&existing.tenant))
            .await;
        return Err(Error::not_found("no such key"));
    }
    // The statement notifies every replica's key table at commit; the
    // answer waits until every replica with a working key table has
    // applied it (see keycache.rs), so the key is refused everywhere once
    // this call returns.
    let payload = crate::keycache::revocation_payload(&body.key_id);
    state.key_table.expect(&payload);
    let row = match keys::revoke(&state.pool, &body.key_id, &payload).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            state.key_table.forget(&payload);
            return Err(Error::not_found("no such key"));
        }
        Err(err) => {
            state.key_table.forget(&payload);
            return Err(db(err));
        }
    };
    if !state
        .key_table
        .wait_seen(&payload, REVOCATION_SYNC_LIMIT)
        .await
    {
        tracing::warn!(key_id = %row.key_id, "not every replica confirmed the revocation in time");
    }
    if existing.revoked_at.is_none() {
        state
            .record(
                SecurityEvent::new(
                    "key_revoked",
                    serde_json::json!({"revoked_by": caller.owner}),
                )
                .with_principal(
                    Some(&row.owner),
                    Some(&row.tenant),
                    Some(&row.key_id),
                ),
            )
            .await;
    }
    // Tokens issued from the key stop at once too (PostgreSQL has
    // `revoked_at`; replicas asking Redis need the marker). Written on every
    // call, so retrying after a Redis failure completes the revocation.
    state.revoke_key_tokens(&row.key_id).await?;
    Reply::json(&KeyInfo::from(row))
}

// ---------------------------------------------------------------- authorize

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

fn denied(reason: &str) -> Result<Reply> {
    Reply::json(&AuthorizeResponse {
        allowed: false,
        principal: None,
        permissions: Vec::new(),
        reason: reason.to_owned(),
    })
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

async fn authorize(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let body: AuthorizeRequest = req.json()?;
    // Size first: nothing else looks at an oversized credential.
    if body.credential.len() > MAX_CREDENTIAL_LEN {
        let denial = state.deny_too_long().await;
        return denied(denial.reason);
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
        Err(denial) => return denied(denial.reason),
    };
    if let Some(tenant) = body.tenant.as_deref()
        && !principal.in_tenant(tenant)
    {
        let denial = state
            .deny_permission(&principal, &body.permission, Some(tenant))
            .await;
        return Reply::json(&AuthorizeResponse {
            allowed: false,
            permissions: principal.permissions.clone(),
            principal: Some(principal),
            reason: denial.reason.to_owned(),
        });
    }
    if !principal.has(&body.permission) {
        let denial = state
            .deny_permission(&principal, &body.permission, None)
            .await;
        return Reply::json(&AuthorizeResponse {
            allowed: false,
            permissions: principal.permissions.clone(),
            principal: Some(principal),
            reason: denial.reason.to_owned(),
        });
    }
    Reply::json(&AuthorizeResponse {
        allowed: true,
        permissions: principal.permissions.clone(),
        principal: Some(principal),
        reason: "granted".to_owned(),
    })
}

// ---------------------------------------------------------------- tokens

/// `security.tokens.issue` request (the API key travels in `X-API-Key`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// A subset of the key's permissions (default: all of them).
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// 60..=3600 seconds, default 900.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

/// `security.tokens.issue` reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub expires_at: chrono::DateTime<Utc>,
    pub jti: String,
    pub permissions: Vec<String>,
}

async fn tokens_issue(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let body: IssueTokenRequest = req.json_or_default()?;
    let ttl = body.ttl_seconds.unwrap_or(token::DEFAULT_TTL_SECONDS);
    if !(token::MIN_TTL_SECONDS..=token::MAX_TTL_SECONDS).contains(&ttl) {
        return Err(Error::validation(vec![Violation::new(
            "/ttl_seconds",
            "must be between 60 and 3600",
        )]));
    }
    let key = match req.credential() {
        Ok(Some(Credential::ApiKey(key))) => key,
        Ok(_) => {
            let event = SecurityEvent::new(
                "missing_credential",
                serde_json::json!({"endpoint": "security.tokens.issue"}),
            );
            let denial = state
                .deny("api_key_required", "missing_credential", event)
                .await;
            return Err(Error::unauthenticated(
                "an API key (X-API-Key) is required to issue a token",
            )
            .with_detail("reason", denial.reason));
        }
        Err(err) => {
            state.deny_too_long().await;
            return Err(err);
        }
    };
    let principal = match state.check_api_key(&key).await? {
        Ok(p) => p,
        Err(denial) => return Err(denial.into_error()),
    };
    let permissions = match body.permissions {
        None => principal.permissions.clone(),
        Some(asked) => {
            if asked.len() > MAX_PERMISSIONS {
                return Err(Error::validation(vec![Violation::new(
                    "/permissions",
                    "at most 32 permissions",
                )]));
            }
            if let Some(extra) = asked.iter().find(|p| !principal.has(p)) {
                state.deny_permission(&principal, extra, None).await;
                return Err(Error::forbidden(format!("the key lacks {extra}")));
            }
            let mut asked = asked;
            asked.sort();
            asked.dedup();
            asked
        }
    };
    let limit = RateLimit::new(TOKENS_PER_MINUTE, Duration::from_secs(60));
    let decision = state
        .limiter
        .check(&format!("issue:{}", principal.key_id), limit, 1)
        .await;
    if !decision.allowed {
        metrics::counter!("ymera_rate_limited_total", "scope" => "tokens_issue").increment(1);
        state
            .record(
                SecurityEvent::new(
                    "rate_limit_exceeded",
                    serde_json::json!({"scope": "tokens.issue", "limit": TOKENS_PER_MINUTE}),
                )
                .with_principal(
                    Some(&principal.owner),
                    Some(&principal.tenant),
                    Some(&principal.key_id),
                ),
            )
            .await;
        return Err(Error::rate_limited(decision.retry_after_ms.max(1)));
    }
    let now = Utc::now().timestamp();
    // A token never outlives its key.
    let exp = (now + ttl).min(principal.expires_at.timestamp());
    let claims = Claims {
        iss: token::ISSUER.into(),
        aud: token::AUDIENCE.into(),
        sub: principal.owner.clone(),
        tenant: principal.tenant.clone(),
        key_id: principal.key_id.clone(),
        permissions: permissions.clone(),
        iat: now,
        nbf: now,
        exp,
        jti: uuid::Uuid::now_v7().to_string(),
    };
    if state.ring.signer().is_none()
        && let Err(err) = state.ring.refresh().await
    {
        tracing::warn!(error = %err, "cannot refresh the signing keys");
    }
    let jwt = token::sign(&state.ring, &claims).map_err(Error::internal)?;
    state
        .record(
            SecurityEvent::new(
                "token_issued",
                serde_json::json!({"jti": claims.jti, "ttl_seconds": exp - now}),
            )
            .with_principal(
                Some(&principal.owner),
                Some(&principal.tenant),
                Some(&principal.key_id),
            ),
        )
        .await;
    Reply::json(&IssuedToken {
        token: jwt,
        token_type: "Bearer".into(),
        expires_in: exp - now,
        expires_at: Utc.timestamp_opt(exp, 0).single().unwrap_or_else(Utc::now),
        jti: claims.jti,
        permissions,
    })
}

/// `security.tokens.verify` / `security.tokens.revoke` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default)]
    pub token: Option<String>,
    /// Revoke only: a token id (needs `security:admin`).
    #[serde(default)]
    pub jti: Option<String>,
}

async fn tokens_verify(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let body: TokenRequest = req.json()?;
    let Some(jwt) = body.token else {
        return Err(Error::validation(vec![Violation::new(
            "/token", "required",
        )]));
    };
    if jwt.len() > MAX_CREDENTIAL_LEN {
        return Err(state.deny_too_long().await.into_error());
    }
    match state.check_token(&jwt).await? {
        Ok(claims) => Reply::json(&serde_json::json!({"valid": true, "claims": claims})),
        Err(rejection) => Err(state.deny_token(rejection, None).await.into_error()),
    }
}

async fn tokens_revoke(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let body: TokenRequest = req.json()?;
    let (jti, until, who) = match (body.token, body.jti) {
        (Some(jwt), _) => {
            if jwt.len() > MAX_CREDENTIAL_LEN {
                return Err(state.deny_too_long().await.into_error());
            }
            // Holding a valid token is enough to revoke it.
            let claims = match token::verify(&state.ring, &jwt).await {
                Ok(c) => c,
                Err(rejection) => return Err(state.deny_token(rejection, None).await.into_error()),
            };
            let until = Utc
                .timestamp_opt(claims.exp, 0)
                .single()
                .unwrap_or_else(Utc::now)
                + ChronoDuration::seconds(token::LEEWAY_SECONDS as i64);
            let who = principal_of(claims.clone());
            (claims.jti, until, who)
        }
        (None, Some(jti)) => {
            let caller = state.require(&req, ADMIN_PERMISSION).await?;
            if jti.is_empty()
                || jti.len() > 64
                || !jti.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::validation(vec![Violation::new(
                    "/jti",
                    "a token id",
                )]));
            }
            let until = Utc::now()
                + ChronoDuration::seconds(token::MAX_TTL_SECONDS + token::LEEWAY_SECONDS as i64);
            (jti, until, caller)
        }
        (None, None) => {
            return Err(Error::validation(vec![Violation::new(
                "/token",
                "token or jti required",
            )]));
        }
    };
    state.revoke_jti(&jti, until).await?;
    state
        .record(
            SecurityEvent::new("token_revoked", serde_json::json!({"jti": jti})).with_principal(
                Some(&who.owner),
                Some(&who.tenant),
                Some(&who.key_id),
            ),
        )
        .await;
    Reply::json(&serde_json::json!({"revoked": true, "jti": jti, "until": until}))
}

/// Most entries of each kind `security.tokens.revoked` lists; past it the
/// answer says `complete: false` (and services ask about tokens here).
pub const MAX_REVOKED_LISTED: i64 = 5_000;

/// `security.tokens.revoked`: the deny-list services verifying tokens
/// locally follow. Revoked token ids until their tokens expire, and API
/// keys revoked recently enough that tokens issued from them may still be
/// unexpired, each with the time it stops mattering. Open, like
/// `security.jwks`: it names only ids of credentials that no longer work.
async fn tokens_revoked(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let _: serde_json::Map<String, serde_json::Value> = req.json_or_default()?;
    let tokens: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > now() \
         ORDER BY expires_at DESC LIMIT $1",
    )
    .bind(MAX_REVOKED_LISTED + 1)
    .fetch_all(&state.pool)
    .await
    .map_err(db)?;
    let window = (token::MAX_TTL_SECONDS + 2 * token::LEEWAY_SECONDS as i64) as f64;
    let keys: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT key_id, revoked_at + make_interval(secs => $2) FROM api_keys \
         WHERE revoked_at > now() - make_interval(secs => $2) ORDER BY revoked_at DESC LIMIT $1",
    )
    .bind(MAX_REVOKED_LISTED + 1)
    .bind(window)
    .fetch_all(&state.pool)
    .await
    .map_err(db)?;
    let limit = MAX_REVOKED_LISTED as usize;
    let complete = tokens.len() <= limit && keys.len() <= limit;
    Reply::json(&serde_json::json!({
        "tokens": tokens.iter().take(limit).map(|(jti, until)| serde_json::json!({"jti": jti, "until": until})).collect::<Vec<_>>(),
        "keys": keys.iter().take(limit).map(|(key_id, until)| serde_json::json!({"key_id": key_id, "until": until})).collect::<Vec<_>>(),
        "complete": complete,
    }))
}

async fn jwks(state: SharedState, _req: ServiceRequest) -> Result<Reply> {
    Reply::json(&state.ring.jwks())
}

// ---------------------------------------------------------------- rate limits

/// `security.ratelimit.check` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRequest {
    /// What is limited, e.g. `user:alice` (≤ 256 characters).
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
    /// Units taken (1..=limit; default 1).
    #[serde(default = "one")]
    pub cost: i64,
}

fn one() -> i64 {
    1
}

async fn ratelimit_check(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let body: RateLimitRequest = req.json()?;
    let limit = RateLimit::new(body.limit, Duration::from_millis(body.period_ms));
    let mut violations = Vec::new();
    if body.key.is_empty()
        || body.key.chars().count() > 256
        || body.key.chars().any(char::is_control)
    {
        violations.push(Violation::new(
            "/key",
            "1-256 characters, no control characters",
        ));
    }
    let cost = match limit.validate(body.cost) {
        Ok(cost) => Some(cost),
        Err(err) => {
            if violations.is_empty() {
                return Err(err);
            }
            None
        }
    };
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cost = cost.unwrap_or(1);
    let decision = state.limiter.check(&body.key, limit, cost).await;
    if !decision.allowed {
        metrics::counter!("ymera_rate_limited_total", "scope" => "check").increment(1);
        state
            .record(SecurityEvent::new(
                "rate_limit_exceeded",
                serde_json::json!({"key": body.key, "limit": body.limit, "period_ms": body.period_ms}),
            ))
            .await;
    }
    Reply::json(&serde_json::json!({
        "key": body.key,
        "allowed": decision.allowed,
        "remaining": decision.remaining,
        "retry_after_ms": decision.retry_after_ms,
        "reset_after_ms": decision.reset_after_ms,
        "shared": state.limiter.is_shared(),
    }))
}

// ---------------------------------------------------------------- report

/// `security.events.report` request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Default: the caller's tenant (`*` = all, for `system` admins).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The seed's security report.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecurityReport {
    pub tenant: Option<String>,
    pub total_api_keys: i64,
    /// Keys used in the last 7 days.
    pub active_api_keys: i64,
    pub security_events_24h: i64,
    pub event_breakdown: BTreeMap<String, i64>,
    /// Top 5 owners by API key usage.
    pub most_active_users: Vec<ActiveUser>,
    pub generated_at: chrono::DateTime<Utc>,
}

/// An owner and their key usage.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct ActiveUser {
    pub user: String,
    pub usage_count: i64,
}

async fn events_report(state: SharedState, req: ServiceRequest) -> Result<Reply> {
    let caller = state.require(&req, ADMIN_PERMISSION).await?;
    let body: ReportRequest = req.json_or_default()?;
    let tenant = match body.tenant.as_deref() {
        Some("*") if caller.tenant == crate::state::SYSTEM_TENANT => None,
        None if caller.tenant == crate::state::SYSTEM_TENANT => None,
        Some(t) => Some(t.to_owned()),
        None => Some(caller.tenant.clone()),
    };
    if let Some(t) = &tenant
        && !caller.in_tenant(t)
    {
        state
            .deny_permission(&caller, ADMIN_PERMISSION, Some(t))
            .await;
        return Err(Error::forbidden("cannot report on another tenant"));
    }
    // Include this replica's pending usage counts.
    state.flush_usage().await;
    let pool = &state.pool;
    let (total, active): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE last_used > now() - interval '7 days') \
         FROM api_keys WHERE ($1::text IS NULL OR tenant = $1)",
    )
    .bind(&tenant)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let breakdown: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_type, count(*) FROM security_events \
         WHERE created_at > now() - interval '24 hours' AND ($1::text IS NULL OR tenant = $1) \
         GROUP BY event_type ORDER BY event_type",
    )
    .bind(&tenant)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let users: Vec<ActiveUser> = sqlx::query_as(
        "SELECT owner AS user, sum(usage_count)::bigint AS usage_count FROM api_keys \
         WHERE ($1::text IS NULL OR tenant = $1) GROUP BY owner \
         ORDER BY usage_count DESC, owner LIMIT 5",
    )
    .bind(&tenant)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let report = SecurityReport {
        tenant,
        total_api_keys: total,
        active_api_keys: active,
        security_events_24h: breakdown.iter().map(|(_, n)| n).sum(),
        event_breakdown: breakdown.into_iter().collect(),
        most_active_users: users,
        generated_at: Utc::now(),
    };
    Reply::json(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
