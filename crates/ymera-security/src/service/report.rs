//! `security.events.report`: the seed's security report (needs
//! `security:admin`; a tenant's own, or every tenant's for `system`).

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use ymera_core::runtime::OrEmpty;
use ymera_core::{Error, Result};

use super::{Caller, db};
use crate::state::{ADMIN_PERMISSION, SYSTEM_TENANT, SharedState};

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

pub(super) async fn report(
    state: SharedState,
    call: Caller,
    OrEmpty(body): OrEmpty<ReportRequest>,
) -> Result<SecurityReport> {
    let caller = state.require(&call, ADMIN_PERMISSION).await?;
    let tenant = match body.tenant.as_deref() {
        Some("*") if caller.tenant == SYSTEM_TENANT => None,
        None if caller.tenant == SYSTEM_TENANT => None,
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
    Ok(SecurityReport {
        tenant,
        total_api_keys: total,
        active_api_keys: active,
        security_events_24h: breakdown.iter().map(|(_, n)| n).sum(),
        event_breakdown: breakdown.into_iter().collect(),
        most_active_users: users,
        generated_at: Utc::now(),
    })
}
