//! The Ymera gateway: the HTTP edge (DESIGN §8). It holds no state of its
//! own beyond caches and speaks to the services only through their NATS
//! endpoints, with the caller's credentials.
//!
//! - [`settings`]: `GATEWAY_*` settings.
//! - [`collab`]: `GET /v1/collab/{draft_id}`, the y-websocket protocol.
//!
//! Invariants: the gateway never depends on another service's crate; every
//! request body, queue and cache it holds is bounded.

pub mod collab;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::{Runtime, RuntimeError, ServiceBuilder};

pub use crate::settings::Settings;

/// The micro-service name.
pub const NAME: &str = "gateway";

/// What every HTTP handler of the gateway shares (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The NATS connection (the gateway's own; callers' credentials travel
    /// in request headers).
    pub nats: async_nats::Client,
    /// The gateway's settings.
    pub settings: Arc<Settings>,
    /// The process configuration (`MAX_MESSAGE_SIZE`, `YMERA_AUTH`, …).
    pub config: Arc<ServiceConfig>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The whole public HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        )
        .merge(collab::router(state))
}

/// Runs the gateway until shutdown: the public HTTP API on `GATEWAY_ADDR`,
/// and the service runtime (`gateway.health`, the side port).
pub async fn run(config: ServiceConfig, settings: Settings) -> Result<(), RuntimeError> {
    let runtime = Runtime::start(NAME, config.clone()).await?;
    let state = AppState {
        nats: runtime.client().clone(),
        settings: Arc::new(settings.clone()),
        config: Arc::new(config),
    };
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|source| RuntimeError::Http {
            addr: settings.addr,
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(settings.addr);
    tracing::info!(addr = %bound, "gateway listening");
    let shutdown = runtime.shutdown_token();
    let app = router(state);
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(err) = server.await {
            tracing::error!(error = %err, "gateway HTTP server failed");
        }
    });
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Gateway: the HTTP edge (REST, OpenAPI, webhooks, event streams, collaboration)",
    )
    .serve(runtime)
    .await
}
