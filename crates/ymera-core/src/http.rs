//! The HTTP side port: `/health` (liveness), `/ready` (dependencies
//! reachable) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::health::HealthStatus;
use crate::runtime::{HealthProbe, RuntimeError};

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    probe: Arc<HealthProbe>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Http { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RuntimeError::Http { addr, source })?;
    let app = Router::new()
        .route("/health", get(liveness))
        .route("/ready", get(readiness))
        .route("/metrics", get(metrics_text))
        .with_state(probe);
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(err) = server.await {
            tracing::error!(error = %err, "HTTP side port failed");
        }
    });
    Ok(bound)
}

async fn liveness(State(probe): State<Arc<HealthProbe>>) -> Response {
    let _ = probe;
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "alive"})),
    )
        .into_response()
}

async fn readiness(State(probe): State<Arc<HealthProbe>>) -> Response {
    let report = probe.report().await;
    let code = if report.status == HealthStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(report)).into_response()
}

async fn metrics_text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}
