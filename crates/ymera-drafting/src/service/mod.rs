//! The `drafting` service: the shared [`State`], the endpoint registry
//! ([`builder`]), [`serve`] and the background work (auto-save and
//! collaboration flushing).
//!
//! Every endpoint is a typed handler `async fn(Arc<State>, Call<P>,
//! Request) -> Result<Reply, Error>` registered with
//! [`ServiceBuilder::route`]; `P` is [`Read`], [`Write`] or `Open`. The
//! handlers live by domain, each module with its request and reply types:
//! `drafts` (create, get, update, list, delete, export), `revisions`
//! (revisions, diff, restore), `comments`, `lifecycle` (transition),
//! `templates`, `collaboration` (join, update) and `analysis` (analyze).

mod analysis;
mod collaboration;
mod comments;
mod drafts;
mod lifecycle;
mod revisions;
mod stats_endpoint;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use ymera_core::auth::Authorizer;
use ymera_core::config::AuthMode;
use ymera_core::error::Violation;
use ymera_core::runtime::{Runtime, ServiceBuilder, ServiceRequest};
use ymera_core::{Error, ErrorKind};

use crate::autosave::{AutoSave, PendingSave};
use crate::collab::Collab;
use crate::store::{Change, CommitMode, Committed, DraftStore, RevisionSource};

pub use crate::store::DraftStatus;
pub use analysis::{Analysis, MAX_FINDINGS, PROCESSING_TIME_HEADER, analyze_text};

/// The service name.
pub const NAME: &str = "drafting";
/// Largest draft content (bytes).
pub const MAX_DRAFT_BYTES: usize = 10 * 1024 * 1024;

ymera_core::permission!(
    /// Reading drafts, their revisions, comments and templates.
    pub Read = "drafting:read"
);
ymera_core::permission!(
    /// Changing drafts, comments and templates, and editing collaboratively.
    pub Write = "drafting:write"
);
ymera_core::permission!(
    /// Hard delete (checked in the handler, on top of [`Write`]).
    pub Admin = "drafting:admin"
);

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct State {
    store: DraftStore,
    autosave: AutoSave,
    collab: Collab,
    /// Collaboration broadcasts (subject, payload), published in queue
    /// order by one task.
    broadcasts: mpsc::Sender<(String, bytes::Bytes)>,
    authorizer: Arc<Authorizer>,
    /// This replica's counters (`drafting.metrics`).
    stats: Arc<crate::stats::Stats>,
    expiry_check_interval: Duration,
}

type Shared = Arc<State>;

impl State {
    /// A check that depends on the request's content (hard delete needs
    /// `drafting:admin` on top of the declared `drafting:write`; analysing
    /// a stored draft needs `drafting:read`), with the process's
    /// [`ymera_core::auth::Authorizer`] when `YMERA_AUTH=required`; with
    /// auth off everything is allowed except admin actions, which need the
    /// `X-Ymera-Role: admin` header.
    async fn authorize(&self, req: &ServiceRequest, permission: &'static str) -> Result<(), Error> {
        if self.authorizer.mode() == AuthMode::Off {
            if permission == Admin::PERMISSION && req.header("X-Ymera-Role") != Some("admin") {
                return Err(Error::forbidden("hard delete needs an administrator"));
            }
            return Ok(());
        }
        self.authorizer.check(req, permission).await.map(|_| ())
    }
}

// ---- checks shared by the handlers ----

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn check_id(path: &str, id: &str) -> Result<(), Error> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(Error::validation(vec![Violation::new(
            path,
            "1-128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        )]))
    }
}

fn check_size(content: &str) -> Result<(), Error> {
    if content.len() > MAX_DRAFT_BYTES {
        return Err(Error::payload_too_large(
            "draft content",
            content.len(),
            MAX_DRAFT_BYTES,
        ));
    }
    Ok(())
}

fn check_tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > 50 || tags.iter().any(|t| t.is_empty() || t.chars().count() > 64) {
        return Err(Error::validation(vec![Violation::new(
            "/tags",
            "at most 50 tags of 1-64 characters",
        )]));
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), Error> {
    if title.trim().is_empty() || title.chars().count() > 500 {
        return Err(Error::validation(vec![Violation::new(
            "/title",
            "1-500 characters",
        )]));
    }
    Ok(())
}

/// Who made a change: with `YMERA_AUTH=required`, the verified owner of the
/// request's credential (whatever the request's own field says);
/// otherwise that field, or `fallback`.
fn author(
    req: &ServiceRequest,
    given: Option<String>,
    fallback: impl FnOnce() -> String,
) -> String {
    match req.principal() {
        Some(principal) => principal.owner.clone(),
        None => given.unwrap_or_else(fallback),
    }
}

// ---- background ----

/// Commits (or, on leave by the last editor and when idle, closes) a
/// collaboration session, on whichever replica calls it; the stored
/// session, not this process, decides what is left to commit.
async fn commit_session(
    state: &State,
    draft_id: &str,
    mode: CommitMode,
) -> Result<Committed, Error> {
    let done = state
        .store
        .collab_commit(draft_id, &mode, &crate::collab::merge)
        .await?;
    if done.closed {
        state.collab.remove(draft_id);
    }
    Ok(done)
}

/// Commits a save taken from the buffer; it stops being in flight once
/// committed, dropped or put back.
async fn persist_save(state: &State, save: PendingSave) -> Result<(), Error> {
    let draft_id = save.draft_id.clone();
    let result = commit_save(state, save).await;
    state.autosave.settled(&draft_id);
    result
}

async fn commit_save(state: &State, save: PendingSave) -> Result<(), Error> {
    let draft_id = save.draft_id.clone();
    let result = state
        .store
        .commit(
            &draft_id,
            Change {
                title: save.title.clone(),
                content: Some(save.content.clone()),
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: save.author_id.clone(),
                source: RevisionSource::Autosave,
                message: None,
                expected_version: None,
            },
        )
        .await;
    match result {
        Ok(_) => {
            state.autosave.persisted(&draft_id).await;
            Ok(())
        }
        // The draft is gone or archived: nothing to save it into.
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => {
            tracing::info!(draft_id = %draft_id, error = %e, "auto-save dropped");
            Ok(())
        }
        Err(e) => {
            state.autosave.restore(save).await?;
            Err(e)
        }
    }
}

/// Persists a draft's buffered auto-save now (before a lifecycle change,
/// a comment anchor or a collaboration session reads the content).
async fn flush_one(state: &State, draft_id: &str) -> Result<(), Error> {
    if let Some(save) = state.autosave.take(draft_id).await? {
        persist_save(state, save).await?;
    }
    Ok(())
}

/// Persists due auto-saves and collaboration texts; with `force`, all of
/// them (shutdown).
pub async fn flush(state: &State, force: bool) -> Result<usize, Error> {
    let mut done = 0;
    let mut failed = None;
    // Every taken save is committed or put back, even after a failure.
    for save in state.autosave.due(force).await? {
        match persist_save(state, save).await {
            Ok(()) => done += 1,
            Err(e) => failed = Some(e),
        }
    }
    done += flush_sessions(state, force).await;
    match failed {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Most sessions one flush commits or closes.
const FLUSH_BATCH: i64 = 500;

/// Commits the collaboration sessions that are due (with `force`, every
/// changed one), and closes those whose editors all left or timed out.
/// Every replica runs it; the session rows decide who commits what.
async fn flush_sessions(state: &State, force: bool) -> usize {
    let interval = state.autosave.interval().as_secs_f64();
    let mode = if force {
        CommitMode::Changed
    } else {
        CommitMode::Due(interval)
    };
    let due = state
        .store
        .collab_due(if force { 0.0 } else { interval }, FLUSH_BATCH)
        .await;
    let idle = state.store.collab_idle(FLUSH_BATCH).await;
    let mut done = 0;
    let work = due
        .into_iter()
        .flatten()
        .map(|id| (id, mode.clone()))
        .chain(idle.into_iter().flatten().map(|id| (id, CommitMode::Idle)));
    for (draft_id, mode) in work {
        match commit_session(state, &draft_id, mode).await {
            Ok(c) if c.version.is_some() || c.closed => done += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(draft_id = %draft_id, error = %e, "collaboration commit failed")
            }
        }
    }
    state.collab.sweep();
    match state.store.collab_sessions().await {
        Ok(n) => metrics::gauge!("ymera_drafting_collab_sessions").set(n as f64),
        Err(e) => tracing::debug!(error = %e, "counting collaboration sessions"),
    }
    done
}

/// Applies the other replicas' collaboration broadcasts to this replica's
/// cached documents until shutdown.
async fn follow_broadcasts(
    state: Arc<State>,
    nats: async_nats::Client,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut sub = match nats.subscribe("drafting.collab.*.updates").await {
        Ok(sub) => sub,
        Err(e) => {
            // Only a cache optimisation: requests fill gaps from the log.
            tracing::warn!(error = %e, "cannot follow collaboration broadcasts");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = futures::StreamExt::next(&mut sub) => match msg {
                Some(msg) => collaboration::observe(&state, &msg.payload),
                None => break,
            },
        }
    }
}

/// Subject of the event the expiry job publishes for each archived draft.
pub const EXPIRED_SUBJECT: &str = "events.drafting.expired";
/// Most drafts one expiry run archives (it runs again at once while full).
const EXPIRY_BATCH: i64 = 500;

/// Archives every draft whose `expires_at` passed, in batches, publishing
/// `events.drafting.expired` for each; returns how many. Any replica may
/// run it at the same time as another: each draft is archived once.
pub async fn expire_drafts(state: &State, nats: &async_nats::Client) -> Result<usize, Error> {
    let mut total = 0;
    loop {
        let batch = state.store.archive_expired(EXPIRY_BATCH).await?;
        let n = batch.len();
        for expired in &batch {
            state.autosave.discard(&expired.draft_id).await.ok();
            tracing::info!(draft_id = %expired.draft_id, expires_at = %expired.expires_at, "expired draft archived");
            match serde_json::to_vec(expired) {
                Ok(payload) => {
                    if let Err(e) = nats.publish(EXPIRED_SUBJECT, payload.into()).await {
                        tracing::warn!(error = %e, "expiry event not published");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "expiry event not encoded"),
            }
        }
        metrics::counter!("ymera_drafting_drafts_expired_total").increment(n as u64);
        state.stats.expired(n as u64);
        total += n;
        if n < EXPIRY_BATCH as usize {
            return Ok(total);
        }
    }
}

/// Queued collaboration broadcasts before `drafting.collab.update` waits.
const BROADCAST_QUEUE: usize = 8_192;

/// The sending end of the broadcast queue; a task publishes what arrives,
/// in order, until every sender is gone.
fn broadcaster(nats: async_nats::Client) -> mpsc::Sender<(String, bytes::Bytes)> {
    let (tx, mut rx) = mpsc::channel::<(String, bytes::Bytes)>(BROADCAST_QUEUE);
    tokio::spawn(async move {
        while let Some((subject, payload)) = rx.recv().await {
            if let Err(e) = nats.publish(subject, payload).await {
                metrics::counter!("ymera_drafting_collab_broadcast_failures_total").increment(1);
                tracing::warn!(error = %e, "collaboration broadcast failed");
            }
        }
    });
    tx
}

/// The service's state from a started runtime (PostgreSQL is required).
/// The auto-save interval follows agent `drafting`'s document in the config
/// manager (`auto_save_interval_ms`) over `AUTO_SAVE_INTERVAL`.
pub async fn state(
    runtime: &Runtime,
    settings: &crate::Settings,
) -> Result<Arc<State>, ymera_core::runtime::RuntimeError> {
    let pool = runtime
        .postgres()
        .cloned()
        .ok_or(ymera_core::runtime::RuntimeError::Config {
            variable: "POSTGRES_URL",
            reason: "the drafting service stores drafts in PostgreSQL; set POSTGRES_URL".to_owned(),
        })?;
    let interval = ymera_core::config_watch::follow_settings(
        runtime,
        NAME,
        settings.watch.clone(),
        settings.auto_save_interval,
        crate::autosave::live_interval,
    )
    .await;
    Ok(Arc::new(State {
        store: DraftStore::new(pool),
        autosave: AutoSave::following(runtime.redis().cloned(), interval),
        collab: Collab::default(),
        broadcasts: broadcaster(runtime.client().clone()),
        authorizer: runtime.authorizer(),
        stats: Arc::default(),
        expiry_check_interval: settings.expiry_check_interval,
    }))
}

/// The service with its endpoints; the permission of each is the `Call`
/// type of its handler ([`Read`], [`Write`], or open for text-only
/// `drafting.analyze`).
pub fn builder(state: &Arc<State>) -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Drafting agent: documents with revisions, analysis and real-time collaboration",
    )
    .route("drafting.create", state, drafts::create)
    .route("drafting.get", state, drafts::get)
    .route("drafting.update", state, drafts::update)
    .route("drafting.list", state, drafts::list)
    .route("drafting.delete", state, drafts::delete)
    .route("drafting.analyze", state, analysis::analyze)
    .route("drafting.export", state, drafts::export)
    .route("drafting.revisions", state, revisions::revisions)
    .route("drafting.diff", state, revisions::diff)
    .route("drafting.restore", state, revisions::restore)
    .route("drafting.comment", state, comments::comment)
    .route("drafting.transition", state, lifecycle::transition)
    .route("drafting.template.set", state, templates::set)
    .route("drafting.template.list", state, templates::list)
    .route("drafting.collab.join", state, collaboration::join)
    .route("drafting.collab.update", state, collaboration::update)
    .route("drafting.metrics", state, stats_endpoint::metrics)
}

/// Serves until shutdown, then flushes every buffered auto-save and open
/// collaboration text before returning. The flush runs after `serve`
/// returns, i.e. after in-flight requests finished, so nothing acknowledged
/// is left behind.
pub async fn serve(
    runtime: Runtime,
    settings: crate::Settings,
) -> Result<(), ymera_core::runtime::RuntimeError> {
    let state = state(&runtime, &settings).await?;
    let shutdown = runtime.shutdown_token();
    // Saves a previous instance left in Redis.
    if let Err(e) = flush(&state, false).await {
        tracing::warn!(error = %e, "initial auto-save flush failed");
    }
    let max = runtime.config().max_message_size;
    ymera_core::agent_card::serve_inbox(
        &runtime,
        NAME,
        crate::inbox::card(),
        move |envelope| async move { crate::inbox::answer(&envelope, max).await },
    )
    .await?;
    tokio::spawn(follow_broadcasts(
        state.clone(),
        runtime.client().clone(),
        runtime.shutdown_token(),
    ));
    let (expiry_state, expiry_nats, expiry_stop) = (
        state.clone(),
        runtime.client().clone(),
        runtime.shutdown_token(),
    );
    tokio::spawn(async move {
        loop {
            if let Err(e) = expire_drafts(&expiry_state, &expiry_nats).await {
                tracing::warn!(error = %e, "draft expiry failed");
            }
            tokio::select! {
                _ = expiry_stop.cancelled() => break,
                _ = tokio::time::sleep(expiry_state.expiry_check_interval) => {}
            }
        }
    });
    let ticker_state = state.clone();
    // Ticks at a quarter of the interval, and at once when the config
    // manager changes the interval.
    let mut interval = ticker_state.autosave.interval_receiver();
    let ticker = tokio::spawn(async move {
        // False once nothing can change the interval any more.
        let mut live = true;
        loop {
            let tick = (*interval.borrow_and_update() / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
                changed = interval.changed(), if live => live = changed.is_ok(),
            }
            if let Err(e) = flush(&ticker_state, false).await {
                tracing::warn!(error = %e, "auto-save flush failed");
            }
        }
    });
    let result = builder(&state).serve(runtime).await;
    let _ = ticker.await;
    match flush(&state, true).await {
        Ok(n) => tracing::info!(saved = n, "flushed buffered drafts at shutdown"),
        Err(e) => tracing::error!(error = %e, "flushing buffered drafts at shutdown failed"),
    }
    result
}
