//! The Ymera gateway: the HTTP edge (DESIGN §8). It holds no state of its
//! own beyond caches and speaks to the services only through their NATS
//! endpoints, with the caller's credentials.
//!
//! - [`settings`]: `GATEWAY_*` settings.
//! - [`registry`]: the route table from `$SRV.INFO` (the typed endpoint registry).
//! - [`rest`]: `POST /v1/<subject>`.
//! - [`events`]: `GET /v1/events` (SSE) and `/v1/events/ws` from `YMERA_EVENTS`.
//! - [`webhooks`]: `POST /v1/webhooks/{source}`.
//! - [`openapi`]: `/openapi.json` from `proto/schemas` and the registry.
//! - [`reply`]: NATS replies and errors as HTTP responses (DESIGN §4).
//! - [`collab`]: `GET /v1/collab/{draft_id}`, the y-websocket protocol.
//!
//! Invariants: the gateway never depends on another service's crate; every
//! request body, queue and cache it holds is bounded.

pub mod collab;
pub mod events;
pub mod openapi;
pub mod registry;
pub mod reply;
pub mod rest;
pub mod settings;
pub mod webhooks;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use ymera_core::Error;
use ymera_core::client::ServiceClient;
use ymera_core::config::ServiceConfig;
use ymera_core::config_watch::{ConfigWatcher, WatchOptions};
use ymera_core::ratelimit::RateLimiter;
use ymera_core::runtime::{Runtime, RuntimeError, ServiceBuilder};

pub use crate::settings::Settings;

use crate::registry::Registry;

/// The micro-service name.
pub const NAME: &str = "gateway";

/// What every HTTP handler of the gateway shares: one `Arc`, so the clone
/// axum makes per request is one reference count (the NATS client alone is
/// several).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of `shared`.
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The NATS connection (the gateway's own; callers' credentials travel
    /// in request headers).
    pub nats: async_nats::Client,
    /// The gateway's settings.
    pub settings: Arc<Settings>,
    /// The process configuration (`MAX_MESSAGE_SIZE`, `YMERA_AUTH`, …).
    pub config: Arc<ServiceConfig>,
    /// The route table.
    pub registry: Arc<Registry>,
    /// The per-client GCRA limiter (shared through Redis when configured).
    pub limiter: Arc<RateLimiter>,
    /// Webhook intake (`None` until it started: 503).
    pub webhooks: Option<Arc<webhooks::Webhooks>>,
    /// The event hub (`None`: event streams answer 503).
    pub events: Option<Arc<events::EventHub>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.0.settings)
            .finish_non_exhaustive()
    }
}

/// The whole public HTTP API.
pub fn router(state: AppState) -> Router {
    let cors =
        (!state.settings.cors_origins.is_empty()).then(|| cors_layer(&state.settings.cors_origins));
    let router = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/webhooks/{source}", post(webhooks::intake))
        .route("/v1/events", get(events::sse))
        .route("/v1/events/ws", get(events::websocket))
        .route("/v1/{*path}", post(rest::call))
        .with_state(state.clone())
        .merge(collab::router(state))
        .fallback(not_found)
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .br(true)
                .compress_when(compression_predicate()),
        );
    // No origins configured: no CORS layer at all (no per-request work).
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Smallest response body worth compressing: below it gzip/br framing and
/// the CPU cost outweigh the bytes saved (a small JSON reply is one packet
/// either way).
pub const COMPRESS_MIN_BYTES: u64 = 1024;

/// Compress bodies of at least [`COMPRESS_MIN_BYTES`], never event streams,
/// gRPC or images (tower-http's default predicate with a larger size).
fn compression_predicate() -> impl tower_http::compression::Predicate {
    use tower_http::compression::Predicate as _;
    use tower_http::compression::predicate::{NotForContentType, SizeAbove};
    SizeAbove::new(COMPRESS_MIN_BYTES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE)
}

async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    reply::error_response(&Error::not_found(format!(
        "no route {}: see GET /openapi.json for the API",
        uri.path()
    )))
}

/// CORS for `GATEWAY_CORS_ORIGINS` (`*`: any origin; empty: none).
fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            HeaderName::from_static("content-type"),
            HeaderName::from_static("authorization"),
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([HeaderName::from_static("retry-after")])
        .max_age(std::time::Duration::from_secs(600))
}

/// Help texts of the gateway's own metrics (deploy/METRICS.md).
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "ymera_gateway_routes",
        "endpoints in the route table (from $SRV.INFO)"
    );
    describe_counter!(
        "ymera_gateway_requests_total",
        "HTTP requests of POST /v1/<subject> by status"
    );
    describe_histogram!(
        "ymera_gateway_request_duration_seconds",
        Unit::Seconds,
        "HTTP to NATS to HTTP time of a REST call"
    );
    describe_counter!(
        "ymera_gateway_webhooks_total",
        "webhook deliveries by outcome"
    );
    describe_counter!(
        "ymera_gateway_webhook_refusals_total",
        "webhook deliveries refused, by reason"
    );
    describe_gauge!(
        "ymera_gateway_event_subscribers",
        "open SSE/WebSocket event streams"
    );
    describe_counter!(
        "ymera_gateway_slow_consumers_total",
        "event-stream clients disconnected as slow_consumer"
    );
}

/// Runs the gateway until shutdown: the public HTTP API on `GATEWAY_ADDR`,
/// and the service runtime (`gateway.health`, the side port).
pub async fn run(config: ServiceConfig, settings: Settings) -> Result<(), RuntimeError> {
    let runtime = Runtime::start(NAME, config.clone()).await?;
    describe_metrics();
    let registry = Arc::new(Registry::new(runtime.client().clone()));
    let service_client = ServiceClient::new(runtime.client().clone())
        .with_credential(config.service_credential.clone())
        .with_timeout(settings.request_timeout);
    let document = ConfigWatcher::<webhooks::GatewayDocument>::start_with_default(
        service_client.clone(),
        &settings.config_agent,
        config.environment.as_str(),
        WatchOptions::from_env(&ymera_core::env::Env::from_process())?,
        webhooks::GatewayDocument::default(),
    )
    .await
    .map_err(|e| RuntimeError::Register(format!("following the gateway's configuration: {e}")))?;
    let webhooks = webhooks::Webhooks::start(
        service_client,
        document.receiver(),
        settings.webhook_dedupe_ttl,
    )
    .await
    .map_err(RuntimeError::Register)?;
    let hub = events::EventHub::start(
        runtime.client().clone(),
        &settings,
        runtime.shutdown_token(),
    )
    .await
    .map_err(RuntimeError::Register)?;
    let state = AppState::new(Shared {
        nats: runtime.client().clone(),
        settings: Arc::new(settings.clone()),
        config: Arc::new(config),
        registry: registry.clone(),
        limiter: Arc::new(RateLimiter::new(
            "ymera:rl:gateway:",
            runtime.redis().cloned(),
        )),
        webhooks: Some(Arc::new(webhooks)),
        events: Some(hub),
    });
    tokio::spawn(registry.refresh_loop(settings.registry_refresh, runtime.shutdown_token()));
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
        let server = axum::serve(
            axum::serve::ListenerExt::tap_io(listener, events::tune_connection),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
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
