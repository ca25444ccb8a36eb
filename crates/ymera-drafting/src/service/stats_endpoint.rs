//! `drafting.metrics`: drafts, collaboration sessions, the auto-save
//! backlog, analysis latency and the expiry job, as the seed's
//! `_get_agent_metrics` reads them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::runtime::{Call, OrEmpty};

use super::{Read, Shared};
use crate::autosave::BufferKind;
use crate::stats::LatencySummary;

/// Drafts in the store (all replicas).
#[derive(Debug, Serialize)]
pub struct DraftMetrics {
    total: i64,
    by_status: BTreeMap<String, i64>,
    /// Not archived, with an `expires_at`.
    expiring: i64,
}

/// Collaboration (sessions, editors and pending updates: all replicas).
#[derive(Debug, Serialize)]
pub struct CollabMetrics {
    active_sessions: i64,
    editors: i64,
    /// Updates stored but not yet committed as a revision.
    pending_updates: i64,
    /// Session documents this replica caches.
    cached_documents: usize,
}

/// The auto-save buffer.
#[derive(Debug, Serialize)]
pub struct AutoSaveMetrics {
    /// Saves waiting (every replica's when the buffer is Redis).
    backlog: u64,
    /// Saves this replica is committing now.
    in_flight: u64,
    buffer: BufferKind,
    interval_ms: u64,
}

/// The expiry job of this replica.
#[derive(Debug, Serialize)]
pub struct ExpiryMetrics {
    /// Drafts it archived since start.
    archived: u64,
    check_interval_seconds: u64,
    last_check_at: Option<DateTime<Utc>>,
}

/// `drafting.metrics` request: nothing (an empty body is `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftingMetricsRequest {}

/// `drafting.metrics` reply.
#[derive(Debug, Serialize)]
pub struct DraftingMetricsReply {
    drafts: DraftMetrics,
    collaboration: CollabMetrics,
    autosave: AutoSaveMetrics,
    /// `drafting.analyze` on this replica since start.
    analysis: LatencySummary,
    expiry: ExpiryMetrics,
}

pub(super) async fn metrics(
    state: Shared,
    _call: Call<Read>,
    OrEmpty(_): OrEmpty<DraftingMetricsRequest>,
) -> Result<DraftingMetricsReply, Error> {
    let counts = state.store.counts().await?;
    let (backlog, in_flight) = state.autosave.backlog().await?;
    let (archived, last_check_at) = state.stats.expiry();
    Ok(DraftingMetricsReply {
        drafts: DraftMetrics {
            total: counts.by_status.values().sum(),
            by_status: counts.by_status,
            expiring: counts.expiring,
        },
        collaboration: CollabMetrics {
            active_sessions: counts.sessions,
            editors: counts.editors,
            pending_updates: counts.pending_updates,
            cached_documents: state.collab.len(),
        },
        autosave: AutoSaveMetrics {
            backlog,
            in_flight,
            buffer: state.autosave.backend(),
            interval_ms: u64::try_from(state.autosave.interval().as_millis()).unwrap_or(u64::MAX),
        },
        analysis: state.stats.analysis_latency(),
        expiry: ExpiryMetrics {
            archived,
            check_interval_seconds: state.expiry_check_interval.as_secs(),
            last_check_at,
        },
    })
}
