//! `GET /v1/collab/{draft_id}`: the y-websocket protocol (sync step 1/2,
//! updates, awareness) onto the drafting service's collaboration endpoints,
//! so a stock Yjs `WebsocketProvider` co-edits a draft with NATS-side
//! editors.
//!
//! The gateway holds no document: each connection is one drafting
//! collaborator (`drafting.collab.join` with the caller's credential, a
//! client id of its own), whose updates go to `drafting.collab.update` and
//! who receives the other editors' updates from the broadcast subject
//! `drafting.collab.<id>.updates`. A client's sync step 1 is answered with
//! what drafting says it lacks (`collab.update` with its state vector).
//! Awareness (cursors, names) is not stored anywhere: awareness frames are
//! relayed verbatim over `gateway.collab.<id>.awareness` to every
//! connection of the draft on every gateway replica. So any number of
//! gateway and drafting replicas serve the same draft.
//!
//! Credentials: `X-API-Key` or `Authorization: Bearer` on the upgrade
//! request, or — because browsers cannot set headers on a WebSocket — the
//! query parameter `token=` (an API key `ymk_…` or a JWT) or `api_key=`.
//! Refusals close the socket with 4400 + the HTTP status (4401, 4403,
//! 4404, 4413, …) and the error message as the reason; y-websocket clients
//! do not reconnect after a 44xx close. 4500/4503 are transient.

mod session;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::Semaphore;
use ymera_core::client::Credential;
use ymera_core::{Error, ErrorKind};

use crate::AppState;
use crate::reply::error_response;

/// Most collaboration connections one gateway process holds.
pub const MAX_CONNECTIONS: usize = 10_000;
/// The subject awareness frames of a draft are relayed on.
pub fn awareness_subject(draft_id: &str) -> String {
    format!("gateway.collab.{draft_id}.awareness")
}
/// The drafting service's broadcast subject of a draft's updates.
pub fn updates_subject(draft_id: &str) -> String {
    format!("drafting.collab.{draft_id}.updates")
}

/// The router's state: the gateway's, and the connection budget.
#[derive(Clone)]
struct Collab {
    app: AppState,
    slots: Arc<Semaphore>,
}

/// The collaboration routes (`/v1/collab/{draft_id}`), state applied.
pub fn router(state: AppState) -> Router {
    describe_metrics();
    Router::new()
        .route("/v1/collab/{draft_id}", get(upgrade))
        .with_state(Collab {
            app: state,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
}

/// Help texts of the collaboration metrics (deploy/METRICS.md).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        "ymera_gateway_collab_connections",
        "open y-websocket connections"
    );
    describe_counter!(
        "ymera_gateway_collab_connections_total",
        "y-websocket connections accepted"
    );
    describe_counter!(
        "ymera_gateway_collab_frames_total",
        "y-websocket frames from (in) and to (out) clients"
    );
    describe_counter!(
        "ymera_gateway_collab_closed_total",
        "y-websocket connections closed by the gateway, by close code"
    );
    describe_counter!(
        "ymera_gateway_collab_refused_total",
        "y-websocket connections refused at the upgrade, by error code"
    );
    describe_counter!(
        "ymera_gateway_collab_resyncs_total",
        "resyncs after a gap in a draft's broadcast sequence"
    );
    describe_counter!(
        "ymera_gateway_collab_slow_clients_total",
        "y-websocket clients dropped for not taking a frame in time"
    );
    describe_counter!(
        "ymera_gateway_collab_awareness_dropped_total",
        "awareness frames dropped over the per-connection rate"
    );
    describe_counter!(
        "ymera_gateway_collab_stale_documents_total",
        "connections refused for a Y.Doc of an earlier session"
    );
}

/// Query parameters of the upgrade request.
#[derive(Debug, Default, Deserialize)]
struct CollabQuery {
    /// A credential: an API key (`ymk_…`) or a JWT.
    token: Option<String>,
    /// An API key.
    api_key: Option<String>,
    /// Who edits, when authentication is off (with it on, the credential's
    /// owner is used whatever this says).
    user: Option<String>,
}

/// The largest client frame the gateway forwards: an update must fit a
/// NATS request (base64, so 3/4 of `MAX_MESSAGE_SIZE`, less room for the
/// JSON around it) and the gateway's body limit.
fn frame_limit(app: &AppState) -> usize {
    let nats = app.config.max_message_size.saturating_sub(1024) / 4 * 3;
    nats.min(app.settings.max_body).max(1024)
}

/// The caller's credential: headers first, then the query.
fn credential(headers: &HeaderMap, query: &CollabQuery) -> Option<Credential> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Credential::ApiKey(key.trim().to_owned()));
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    if let Some(token) = bearer {
        return Some(Credential::Bearer(token.trim().to_owned()));
    }
    if let Some(key) = query.api_key.as_deref().filter(|k| !k.is_empty()) {
        return Some(Credential::ApiKey(key.to_owned()));
    }
    query
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| match t.starts_with("ymk_") {
            true => Credential::ApiKey(t.to_owned()),
            false => Credential::Bearer(t.to_owned()),
        })
}

/// A draft id as drafting accepts them (they become NATS subject tokens).
fn check_draft_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_request(
            "draft id: 1-128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':'",
        ))
    }
}

async fn upgrade(
    State(collab): State<Collab>,
    Path(draft_id): Path<String>,
    query: Result<Query<CollabQuery>, QueryRejection>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return error_response(&Error::invalid_request(format!(
                "GET /v1/collab/{{draft_id}} is a WebSocket endpoint speaking y-websocket \
                 (connect with a Yjs WebsocketProvider): {rejection}"
            )));
        }
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(rejection) => {
            return error_response(&Error::invalid_request(format!(
                "bad query string: {rejection}"
            )));
        }
    };
    let limit = frame_limit(&collab.app);
    // Frames up to twice the limit are read and refused with a reason;
    // larger ones end the connection at the protocol level.
    let ws = ws
        .max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2));
    let opened = open(&collab, &draft_id, &query, &headers).await;
    ws.on_upgrade(move |socket| async move {
        match opened {
            Ok((session, _slot)) => session.run(socket, limit).await,
            Err(e) => {
                tracing::debug!(draft_id, error = %e, "collaboration connection refused");
                metrics::counter!("ymera_gateway_collab_refused_total", "code" => e.kind.slug())
                    .increment(1);
                close(socket, close_code(&e), &e.message).await;
            }
        }
    })
}

async fn open(
    collab: &Collab,
    draft_id: &str,
    query: &CollabQuery,
    headers: &HeaderMap,
) -> Result<(session::Session, tokio::sync::OwnedSemaphorePermit), Error> {
    check_draft_id(draft_id)?;
    let slot = collab.slots.clone().try_acquire_owned().map_err(|_| {
        Error::new(
            ErrorKind::Unavailable,
            "this gateway holds as many collaboration connections as it may; try again",
        )
    })?;
    let user = query.user.clone().unwrap_or_else(|| "anonymous".to_owned());
    let session = session::Session::join(
        collab.app.clone(),
        credential(headers, query),
        draft_id.to_owned(),
        user,
    )
    .await?;
    Ok((session, slot))
}

/// The close code for a refusal: 4000 + the HTTP status of the error.
pub fn close_code(e: &Error) -> u16 {
    4000 + e.kind.code()
}

/// The close reason: at most 123 bytes (the WebSocket limit), cut on a
/// character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Closes the socket with a code and reason (best effort: a client that is
/// gone is not an error).
async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    metrics::counter!("ymera_gateway_collab_closed_total", "code" => code.to_string()).increment(1);
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    // Briefly: send the close, then wait for the client's close so the
    // reason is delivered; a client that takes neither is dropped.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_headers_then_the_query() {
        let mut headers = HeaderMap::new();
        let q = CollabQuery {
            token: Some("ymk_a_b".into()),
            ..Default::default()
        };
        assert_eq!(
            credential(&headers, &q),
            Some(Credential::ApiKey("ymk_a_b".into()))
        );
        let q = CollabQuery {
            token: Some("eyJ.x.y".into()),
            ..Default::default()
        };
        assert_eq!(
            credential(&headers, &q),
            Some(Credential::Bearer("eyJ.x.y".into()))
        );
        headers.insert("authorization", "Bearer t".parse().unwrap());
        assert_eq!(
            credential(&headers, &q),
            Some(Credential::Bearer("t".into()))
        );
        headers.insert("x-api-key", "k".parse().unwrap());
        assert_eq!(
            credential(&headers, &q),
            Some(Credential::ApiKey("k".into()))
        );
        assert_eq!(credential(&HeaderMap::new(), &CollabQuery::default()), None);
    }

    #[test]
    fn draft_ids_that_are_not_subject_tokens_are_refused() {
        assert!(check_draft_id("draft-1:a_b.c").is_ok());
        for bad in ["", "a b", "a.*", "a.>", ".a", "a..b", &"x".repeat(129)] {
            assert!(check_draft_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn close_reasons_fit_the_frame() {
        let long = "é".repeat(100);
        let r = close_reason(&long);
        assert!(r.len() <= 123 && long.starts_with(&r));
        assert_eq!(close_code(&Error::not_found("x")), 4404);
    }
}
