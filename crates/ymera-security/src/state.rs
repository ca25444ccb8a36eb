//! The service's shared state and its security decisions.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use subtle::Choice;
use ymera_core::Error;
use ymera_core::client::Credential;
use ymera_core::ratelimit::RateLimiter;

use crate::apikey::{self, Pepper, PresentedKey};
use crate::events::{EventRecorder, SecurityEvent};
use crate::keycache::{CachedKey, KeyCache, TokenStatus};
use crate::keys::{self, UsageCounter};
use crate::signing::KeyRing;
use crate::token::{self, Claims, TokenRejection};

/// The tenant whose admins manage every tenant (the bootstrap admin's).
pub const SYSTEM_TENANT: &str = "system";
/// The permission of the admin endpoints.
pub const ADMIN_PERMISSION: &str = "security:admin";
/// Permissions of the platform (the bootstrap admin gets all of them).
pub const ALL_PERMISSIONS: &[&str] = &[
    "comm:send",
    // Send envelopes whose `sender` is not the credential's owner (the
    // platform's own agents answering with the service credential).
    "comm:send_as",
    "comm:read",
    "config:read",
    "config:write",
    "drafting:read",
    "drafting:write",
    // Hard delete of drafts.
    "drafting:admin",
    "analysis:run",
    "security:admin",
];
/// Largest credential accepted anywhere (same as the header limit).
pub const MAX_CREDENTIAL_LEN: usize = ymera_core::limits::MAX_CREDENTIAL_HEADER;
const REVOKED_PREFIX: &str = "ymera:security:revoked:";
const REVOKED_KEY_PREFIX: &str = "ymera:security:revoked-key:";

/// Who a credential belongs to: what every service's authorizer knows
/// ([`ymera_core::auth::Principal`]: kind, owner, tenant, key id,
/// permissions; reached through `Deref`), plus the token id and expiry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Principal {
    /// Kind, owner, tenant, key id and permissions.
    #[serde(flatten)]
    pub who: ymera_core::auth::Principal,
    /// The token id, for tokens.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jti: Option<String>,
    /// When the credential expires.
    pub expires_at: DateTime<Utc>,
}

impl std::ops::Deref for Principal {
    type Target = ymera_core::auth::Principal;

    fn deref(&self) -> &Self::Target {
        &self.who
    }
}

impl Principal {
    /// Whether it may act on `tenant`'s resources.
    pub fn in_tenant(&self, tenant: &str) -> bool {
        self.tenant == tenant || self.tenant == SYSTEM_TENANT
    }
}

/// Why a credential was refused: the reason slug (wire and metric label)
/// and the event recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// e.g. `invalid_api_key`, `expired_token`.
    pub reason: &'static str,
}

impl Denial {
    /// As a 401 error naming the reason (also in `details.reason`), as the
    /// other services' authorizer words it.
    pub fn into_error(self) -> Error {
        ymera_core::auth::credential_refused(self.reason)
    }
}

/// Shared state of one replica.
#[derive(Debug)]
pub struct SecurityState {
    pub(crate) pool: PgPool,
    pub(crate) redis: Option<redis::aio::ConnectionManager>,
    pub(crate) pepper: Pepper,
    pub(crate) ring: KeyRing,
    pub(crate) events: EventRecorder,
    pub(crate) limiter: RateLimiter,
    pub(crate) usage: UsageCounter,
    pub(crate) key_table: Arc<KeyCache>,
}

/// A shared handle.
pub type SharedState = Arc<SecurityState>;

/// What the deny-list says about a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Neither the token nor its API key is revoked.
    None,
    /// The token's `jti` is on the deny-list.
    Token,
    /// The API key the token was issued from is revoked.
    Key,
}

impl Revocation {
    fn of(token: bool, key: bool) -> Revocation {
        match (token, key) {
            (true, _) => Revocation::Token,
            (false, true) => Revocation::Key,
            (false, false) => Revocation::None,
        }
    }
}

fn db(err: sqlx::Error) -> Error {
    tracing::warn!(error = %err, "PostgreSQL query failed");
    Error::dependency_down("postgres")
}

impl SecurityState {
    /// The key ring (for rotation in tests and operations).
    pub fn key_ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The PostgreSQL pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records an event.
    pub async fn record(&self, event: SecurityEvent) {
        self.events.record(event).await;
    }

    pub(crate) async fn deny(
        &self,
        reason: &'static str,
        event_type: &'static str,
        event: SecurityEvent,
    ) -> Denial {
        metrics::counter!("ymera_auth_failures_total", "reason" => reason).increment(1);
        let mut event = event;
        event.event_type = event_type;
        if let Some(map) = event.details.as_object_mut() {
            map.insert("reason".into(), reason.into());
        }
        self.record(event).await;
        Denial { reason }
    }

    /// The in-memory API key table.
    pub fn key_table(&self) -> &KeyCache {
        &self.key_table
    }

    /// Checks an API key. A valid key is answered from the in-memory key
    /// table (kept current by PostgreSQL notifications, see
    /// [`crate::keycache`]); every refused key takes one and the same path:
    /// parse (malformed → dummy id/secret), table lookup, one HMAC, a
    /// constant-time comparison against the table's digest or a dummy
    /// digest, then — because that did not match — one PostgreSQL lookup
    /// and a second constant-time comparison against the stored or a dummy
    /// digest (which also accepts a key created on another replica a moment
    /// ago, before its notification arrived). Outcomes are combined as
    /// `subtle::Choice`s before any branch; unknown ids, wrong secrets, bad
    /// checksums and truncated keys all end in the same refusal.
    pub async fn check_api_key(&self, presented: &str) -> Result<Result<Principal, Denial>, Error> {
        let parsed = PresentedKey::parse(presented);
        let actual = self.pepper.hash(&parsed.secret);
        let well_formed = Choice::from(u8::from(parsed.well_formed));
        let cached = self.key_table.get(&parsed.key_id);
        let expected = cached
            .as_ref()
            .map_or(apikey::DUMMY_DIGEST, |k| k.secret_hash);
        let matches = apikey::digests_equal(&actual, &expected)
            & well_formed
            & Choice::from(u8::from(cached.is_some()));
        let key = match cached {
            Some(key) if bool::from(matches) => key,
            _ => {
                let row = keys::find(&self.pool, &parsed.key_id).await.map_err(db)?;
                let expected: apikey::Digest = row
                    .as_ref()
                    .and_then(|r| <[u8; 32]>::try_from(r.secret_hash.as_slice()).ok())
                    .unwrap_or(apikey::DUMMY_DIGEST);
                let matches = apikey::digests_equal(&actual, &expected)
                    & well_formed
                    & Choice::from(u8::from(row.is_some()));
                match row.filter(|_| bool::from(matches)).and_then(CachedKey::of) {
                    Some(key) => Arc::new(key),
                    None => {
                        let event = SecurityEvent::new(
                            "invalid_api_key",
                            serde_json::json!({"key": apikey::redact(presented)}),
                        );
                        return Ok(Err(self
                            .deny("invalid_api_key", "invalid_api_key", event)
                            .await));
                    }
                }
            }
        };
        let who = |t: &'static str| {
            SecurityEvent::new(t, serde_json::json!({})).with_principal(
                Some(&key.owner),
                Some(&key.tenant),
                Some(&key.key_id),
            )
        };
        if key.revoked_at.is_some() {
            return Ok(Err(self
                .deny("revoked_key", "revoked_key", who("revoked_key"))
                .await));
        }
        if key.expires_at <= Utc::now() {
            return Ok(Err(self
                .deny("expired_key", "expired_key", who("expired_key"))
                .await));
        }
        if self.usage.record(&key.key_id) {
            let _ = self.usage.flush(&self.pool).await;
        }
        Ok(Ok(Principal {
            who: ymera_core::auth::Principal {
                kind: "api_key".into(),
                owner: key.owner.clone(),
                tenant: key.tenant.clone(),
                key_id: key.key_id.clone(),
                permissions: key.permissions.clone(),
            },
            jti: None,
            expires_at: key.expires_at,
        }))
    }

    /// Verifies a token, deny-list included.
    pub async fn check_token(&self, token: &str) -> Result<Result<Claims, TokenRejection>, Error> {
        let claims = match token::verify(&self.ring, token).await {
            Ok(claims) => claims,
            Err(rejection) => return Ok(Err(rejection)),
        };
        // From the key table when it can tell (live, the key held, the
        // deny-list fits in memory); else one Redis / PostgreSQL round trip.
        let status = match self.key_table.token_status(&claims.jti, &claims.key_id) {
            Some(TokenStatus::Valid) => Revocation::None,
            Some(TokenStatus::TokenRevoked) => Revocation::Token,
            Some(TokenStatus::KeyRevoked) => Revocation::Key,
            None => self.revocation(&claims.jti, &claims.key_id).await?,
        };
        match status {
            Revocation::None => Ok(Ok(claims)),
            Revocation::Token => Ok(Err(TokenRejection::Revoked)),
            Revocation::Key => Ok(Err(TokenRejection::KeyRevoked)),
        }
    }

    /// Records a refused token (event + metric) and returns the denial.
    pub async fn deny_token(&self, rejection: TokenRejection, claims: Option<&Claims>) -> Denial {
        let mut event = SecurityEvent::new(rejection.event_type(), serde_json::json!({}));
        if let Some(c) = claims {
            event = event.with_principal(Some(&c.sub), Some(&c.tenant), Some(&c.key_id));
        }
        self.deny(rejection.as_str(), rejection.event_type(), event)
            .await
    }

    /// Authenticates a credential (API key or bearer token).
    pub async fn authenticate(
        &self,
        credential: &Credential,
    ) -> Result<Result<Principal, Denial>, Error> {
        match credential {
            Credential::ApiKey(key) => {
                if key.len() > MAX_CREDENTIAL_LEN {
                    return Ok(Err(self.deny_too_long().await));
                }
                self.check_api_key(key).await
            }
            Credential::Bearer(jwt) => {
                if jwt.len() > MAX_CREDENTIAL_LEN {
                    return Ok(Err(self.deny_too_long().await));
                }
                match self.check_token(jwt).await? {
                    Ok(claims) => Ok(Ok(principal_of(claims))),
                    Err(rejection) => Ok(Err(self.deny_token(rejection, None).await)),
                }
            }
        }
    }

    /// Records a credential over the size limit (refused before any crypto).
    pub async fn deny_too_long(&self) -> Denial {
        let event = SecurityEvent::new("invalid_credential", serde_json::json!({}));
        self.deny("credential_too_long", "invalid_credential", event)
            .await
    }

    /// The caller of `req` must hold `permission`; records the refusal.
    pub async fn require(
        &self,
        req: &ymera_core::runtime::ServiceRequest,
        permission: &str,
    ) -> Result<Principal, Error> {
        let credential = match req.credential() {
            Ok(Some(c)) => c,
            Ok(None) => {
                let event = SecurityEvent::new(
                    "missing_credential",
                    serde_json::json!({"endpoint": req.subject}),
                );
                return Err(self
                    .deny("missing_credential", "missing_credential", event)
                    .await
                    .into_error());
            }
            Err(err) => {
                // Header over 8 KiB or not `Bearer …`: refused before any crypto.
                self.deny_too_long_or_malformed(&req.subject).await;
                return Err(err);
            }
        };
        let principal = match self.authenticate(&credential).await? {
            Ok(p) => p,
            Err(denial) => return Err(denial.into_error()),
        };
        if !principal.has(permission) {
            self.deny_permission(&principal, permission, None).await;
            return Err(Error::forbidden(format!(
                "requires the permission {permission}"
            )));
        }
        Ok(principal)
    }

    async fn deny_too_long_or_malformed(&self, endpoint: &str) {
        let event = SecurityEvent::new(
            "invalid_credential",
            serde_json::json!({"endpoint": endpoint}),
        );
        self.deny("malformed_credential_header", "invalid_credential", event)
            .await;
    }

    /// Records an `insufficient_permissions` refusal.
    pub async fn deny_permission(
        &self,
        principal: &Principal,
        permission: &str,
        tenant: Option<&str>,
    ) -> Denial {
        let reason = if tenant.is_some() {
            "tenant_mismatch"
        } else {
            "insufficient_permissions"
        };
        let event = SecurityEvent::new(
            "insufficient_permissions",
            serde_json::json!({"required": permission, "resource_tenant": tenant, "available": principal.permissions}),
        )
        .with_principal(Some(&principal.owner), Some(&principal.tenant), Some(&principal.key_id));
        self.deny(reason, "insufficient_permissions", event).await
    }

    /// Puts `jti` on the deny-list until `until` (PostgreSQL always, Redis too when present).
    pub async fn revoke_jti(&self, jti: &str, until: DateTime<Utc>) -> Result<(), Error> {
        // Every replica's table learns it at commit (same statement); this
        // replica answers once its own listener has it.
        let payload = format!("{}{}:{jti}", crate::keycache::JTI_PREFIX, until.timestamp());
        self.key_table.expect(&payload);
        sqlx::query(
            "WITH revoked AS (INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(revoked_tokens.expires_at, EXCLUDED.expires_at) \
             RETURNING jti) SELECT pg_notify($3, $4) FROM revoked",
        )
        .bind(jti)
        .bind(until)
        .bind(crate::keycache::CHANNEL)
        .bind(&payload)
        .execute(&self.pool)
        .await
        .map_err(|err| {
            self.key_table.forget(&payload);
            db(err)
        })?;
        if !self
            .key_table
            .wait_seen(&payload, crate::service::REVOCATION_SYNC_LIMIT)
            .await
        {
            tracing::warn!(jti, "token revocation notification not seen in time");
        }
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let at_ms = until
                .timestamp_millis()
                .max(Utc::now().timestamp_millis() + 1000);
            let result: Result<(), redis::RedisError> = redis::cmd("SET")
                .arg(format!("{REVOKED_PREFIX}{jti}"))
                .arg(1)
                .arg("PXAT")
                .arg(at_ms)
                .query_async(&mut conn)
                .await;
            if let Err(err) = result {
                tracing::warn!(error = %err, "cannot write the revocation to Redis; PostgreSQL has it");
            }
        }
        Ok(())
    }

    /// Marks the tokens of API key `key_id` revoked in Redis (when present)
    /// until every token issued from it has expired; PostgreSQL already has
    /// the key's `revoked_at`. Err when Redis is configured and the write
    /// fails: tokens would otherwise keep passing on replicas that ask Redis.
    pub async fn revoke_key_tokens(&self, key_id: &str) -> Result<(), Error> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let mut conn = redis.clone();
        let until = Utc::now()
            + chrono::Duration::seconds(token::MAX_TTL_SECONDS + 2 * token::LEEWAY_SECONDS as i64);
        let result: Result<(), redis::RedisError> = redis::cmd("SET")
            .arg(format!("{REVOKED_KEY_PREFIX}{key_id}"))
            .arg(1)
            .arg("PXAT")
            .arg(until.timestamp_millis())
            .query_async(&mut conn)
            .await;
        result.map_err(|err| {
            tracing::warn!(error = %err, "cannot write a key revocation to Redis");
            Error::dependency_down("redis")
        })
    }

    /// Whether `jti` is revoked: Redis when present (PostgreSQL when Redis fails).
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, Error> {
        Ok(self.revocation(jti, "").await? == Revocation::Token)
    }

    /// Whether the token `jti` or the API key `key_id` it was issued from is
    /// revoked, in one round trip: Redis when present (PostgreSQL when Redis
    /// fails), else PostgreSQL (`revoked_tokens` and `api_keys.revoked_at`).
    pub async fn revocation(&self, jti: &str, key_id: &str) -> Result<Revocation, Error> {
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let result: Result<(Option<String>, Option<String>), redis::RedisError> =
                redis::cmd("MGET")
                    .arg(format!("{REVOKED_PREFIX}{jti}"))
                    .arg(format!("{REVOKED_KEY_PREFIX}{key_id}"))
                    .query_async(&mut conn)
                    .await;
            match result {
                Ok((token, key)) => return Ok(Revocation::of(token.is_some(), key.is_some())),
                Err(err) => {
                    tracing::warn!(error = %err, "Redis deny-list check failed; asking PostgreSQL")
                }
            }
        }
        let (token, key): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $1 AND expires_at > now()), \
                    EXISTS (SELECT 1 FROM api_keys WHERE key_id = $2 AND revoked_at IS NOT NULL)",
        )
        .bind(jti)
        .bind(key_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(Revocation::of(token, key))
    }

    /// Writes buffered usage counts.
    pub async fn flush_usage(&self) {
        if let Err(err) = self.usage.flush(&self.pool).await {
            tracing::warn!(error = %err, "cannot write API key usage; will retry");
        }
    }

    /// Background upkeep until shutdown: usage flush (2 s), key ring
    /// refresh and rotation (60 s), deny-list cleanup (10 min).
    pub async fn run_upkeep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut usage = tokio::time::interval(Duration::from_secs(2));
        let mut ring = tokio::time::interval(Duration::from_secs(60));
        let mut cleanup = tokio::time::interval(Duration::from_secs(600));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = usage.tick() => self.flush_usage().await,
                _ = ring.tick() => {
                    if let Err(err) = self.ring.refresh().await {
                        tracing::warn!(error = %err, "cannot refresh the signing keys");
                    }
                }
                _ = cleanup.tick() => {
                    if let Err(err) = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < now()")
                        .execute(&self.pool)
                        .await
                    {
                        tracing::warn!(error = %err, "cannot clean the token deny-list");
                    }
                }
            }
        }
        self.flush_usage().await;
    }
}

/// The principal of verified claims.
pub fn principal_of(claims: Claims) -> Principal {
    let (jti, exp) = (claims.jti.clone(), claims.exp);
    Principal {
        who: ymera_core::auth::Principal::of_token(claims),
        jti: Some(jti),
        expires_at: Utc.timestamp_opt(exp, 0).single().unwrap_or_else(Utc::now),
    }
}
