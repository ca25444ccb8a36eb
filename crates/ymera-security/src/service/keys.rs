//! `security.keys.create`, `security.keys.list`, `security.keys.revoke`
//! (each needs `security:admin`, within the caller's tenant).

use chrono::{Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use ymera_core::error::Violation;
use ymera_core::runtime::OrEmpty;
use ymera_core::{Error, Result};

use super::{
    Caller, DEFAULT_KEY_DAYS, MAX_KEY_DAYS, MAX_PERMISSIONS, REVOCATION_SYNC_LIMIT, db,
    valid_owner, valid_permission, valid_tenant,
};
use crate::apikey;
use crate::events::SecurityEvent;
use crate::keys::{self, KeyInfo, KeyRow};
use crate::state::{ADMIN_PERMISSION, SYSTEM_TENANT, SharedState};

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

pub(super) async fn create(
    state: SharedState,
    call: Caller,
    body: CreateKeyRequest,
) -> Result<CreatedKey> {
    let caller = state.require(&call, ADMIN_PERMISSION).await?;
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
    Ok(created)
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

/// `security.keys.list` reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyList {
    /// The keys, without their secrets.
    pub keys: Vec<KeyInfo>,
}

pub(super) async fn list(
    state: SharedState,
    call: Caller,
    OrEmpty(body): OrEmpty<ListKeysRequest>,
) -> Result<KeyList> {
    let caller = state.require(&call, ADMIN_PERMISSION).await?;
    let limit = body.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::validation(vec![Violation::new(
            "/limit",
            "must be between 1 and 1000",
        )]));
    }
    let tenant = match body.tenant.as_deref() {
        Some("*") if caller.tenant == SYSTEM_TENANT => None,
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
    Ok(KeyList {
        keys: rows.into_iter().map(KeyInfo::from).collect(),
    })
}

/// `security.keys.revoke` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeKeyRequest {
    pub key_id: String,
}

pub(super) async fn revoke(
    state: SharedState,
    call: Caller,
    body: RevokeKeyRequest,
) -> Result<KeyInfo> {
    let caller = state.require(&call, ADMIN_PERMISSION).await?;
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
    Ok(KeyInfo::from(row))
}
