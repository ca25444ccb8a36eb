//! The drafting agent of the Ymera platform: people and agents write
//! documents together. Drafts with optimistic concurrency and revisions
//! (unified diffs, restore), auto-save buffering, textstat-compatible
//! readability and Vale/write-good-style checks, Markdown/HTML/JSON/text
//! export, lifecycle, anchored comments, templates and real-time
//! collaboration over yrs (Yjs-compatible) documents.
//!
//! - [`service`]: endpoints `drafting.*` and background flushing.
//! - [`store`]: PostgreSQL persistence.
//! - [`readability`], [`style`]: analysis.
//! - [`inbox`]: chat-style requests on `agent.drafting.inbox`.
//! - [`diff`], [`export`], [`collab`], [`autosave`].
//! - [`settings`]: `AUTO_SAVE_INTERVAL`, `CONFIG_CACHE_TTL`, `DRAFT_EXPIRY_CHECK_INTERVAL`.
//! - [`stats`]: this replica's counters for `drafting.metrics`.

pub mod autosave;
pub mod collab;
pub mod diff;
pub mod export;
pub mod inbox;
pub mod readability;
pub mod service;
pub mod settings;
pub mod stats;
pub mod store;
pub mod style;

use ymera_core::config::ServiceConfig;
use ymera_core::runtime::{Runtime, RuntimeError};

pub use settings::Settings;

/// Starts the runtime and serves until SIGTERM, flushing buffered work.
pub async fn run(config: ServiceConfig, settings: Settings) -> Result<(), RuntimeError> {
    let runtime = Runtime::start(service::NAME, config).await?;
    ymera_core::retention::start(&runtime, &[ymera_core::retention::DRAFT_REVISIONS])?;
    service::serve(runtime, settings).await
}
