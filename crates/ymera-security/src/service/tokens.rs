//! `security.tokens.issue`, `.verify`, `.revoke`, the deny-list
//! `security.tokens.revoked` and the signing keys `security.jwks`.

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use ymera_core::client::Credential;
use ymera_core::error::Violation;
use ymera_core::ratelimit::RateLimit;
use ymera_core::runtime::{OrEmpty, Raw};
use ymera_core::{Error, Result};

use super::{Caller, MAX_PERMISSIONS, TOKENS_PER_MINUTE, db};
use crate::events::SecurityEvent;
use crate::signing::Jwks;
use crate::state::{ADMIN_PERMISSION, MAX_CREDENTIAL_LEN, SharedState, principal_of};
use crate::token::{self, Claims};

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

pub(super) async fn issue(
    state: SharedState,
    call: Caller,
    OrEmpty(body): OrEmpty<IssueTokenRequest>,
) -> Result<IssuedToken> {
    let ttl = body.ttl_seconds.unwrap_or(token::DEFAULT_TTL_SECONDS);
    if !(token::MIN_TTL_SECONDS..=token::MAX_TTL_SECONDS).contains(&ttl) {
        return Err(Error::validation(vec![Violation::new(
            "/ttl_seconds",
            "must be between 60 and 3600",
        )]));
    }
    let key = match call.credential() {
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
    Ok(IssuedToken {
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

/// `security.tokens.verify` reply (a token that does not verify is a 401).
#[derive(Debug, Serialize, Deserialize)]
pub struct VerifiedToken {
    /// The token's claims.
    pub claims: Claims,
    /// Always true.
    pub valid: bool,
}

pub(super) async fn verify(
    state: SharedState,
    _: Caller,
    body: TokenRequest,
) -> Result<VerifiedToken> {
    let Some(jwt) = body.token else {
        return Err(Error::validation(vec![Violation::new(
            "/token", "required",
        )]));
    };
    if jwt.len() > MAX_CREDENTIAL_LEN {
        return Err(state.deny_too_long().await.into_error());
    }
    match state.check_token(&jwt).await? {
        Ok(claims) => Ok(VerifiedToken {
            claims,
            valid: true,
        }),
        Err(rejection) => Err(state.deny_token(rejection, None).await.into_error()),
    }
}

/// `security.tokens.revoke` reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token id.
    pub jti: String,
    /// Always true.
    pub revoked: bool,
    /// When the deny-list entry lapses (after the token's expiry).
    pub until: DateTime<Utc>,
}

pub(super) async fn revoke(
    state: SharedState,
    call: Caller,
    body: TokenRequest,
) -> Result<RevokedToken> {
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
            let caller = state.require(&call, ADMIN_PERMISSION).await?;
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
    Ok(RevokedToken {
        jti,
        revoked: true,
        until,
    })
}

/// Most entries of each kind `security.tokens.revoked` lists; past it the
/// answer says `complete: false` (and services ask about tokens here).
pub const MAX_REVOKED_LISTED: i64 = 5_000;

/// `security.tokens.revoked` request: an empty body or `{}` (other fields
/// are ignored, as they always were).
#[derive(Debug, Default, Deserialize)]
pub struct RevokedRequest {}

/// `security.tokens.revoked` reply: the deny-list.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokedList {
    /// False when either list was cut at [`MAX_REVOKED_LISTED`].
    pub complete: bool,
    /// API keys whose tokens may still be unexpired.
    pub keys: Vec<RevokedKeyEntry>,
    /// Revoked token ids.
    pub tokens: Vec<RevokedTokenEntry>,
}

/// A revoked token id on the deny-list.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokedTokenEntry {
    /// The token id.
    pub jti: String,
    /// When the token has expired (the entry stops mattering).
    pub until: DateTime<Utc>,
}

/// A revoked API key on the deny-list.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokedKeyEntry {
    /// The key id.
    pub key_id: String,
    /// When every token issued from it has expired.
    pub until: DateTime<Utc>,
}

/// `security.tokens.revoked`: the deny-list services verifying tokens
/// locally follow. Revoked token ids until their tokens expire, and API
/// keys revoked recently enough that tokens issued from them may still be
/// unexpired, each with the time it stops mattering. Open, like
/// `security.jwks`: it names only ids of credentials that no longer work.
pub(super) async fn revoked(
    state: SharedState,
    _: Caller,
    _: OrEmpty<RevokedRequest>,
) -> Result<RevokedList> {
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
    Ok(RevokedList {
        complete,
        keys: keys
            .into_iter()
            .take(limit)
            .map(|(key_id, until)| RevokedKeyEntry { key_id, until })
            .collect(),
        tokens: tokens
            .into_iter()
            .take(limit)
            .map(|(jti, until)| RevokedTokenEntry { jti, until })
            .collect(),
    })
}

/// `security.jwks`: the unexpired public signing keys (the body is ignored).
pub(super) async fn jwks(state: SharedState, _: Caller, _: Raw) -> Result<Jwks> {
    Ok(state.ring.jwks())
}
