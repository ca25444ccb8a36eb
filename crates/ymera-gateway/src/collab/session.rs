//! One y-websocket connection: a drafting collaborator for its lifetime.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{HeaderMap, Subscriber};
use axum::extract::ws::{Message, WebSocket};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::{Error, ErrorKind};
use yrs::StateVector;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use super::wire::{self, ClientFrame};
use super::{awareness_subject, close, close_code, updates_subject};
use crate::AppState;

/// How often the connection tells drafting its editor is still there
/// (drafting drops editors not heard from for 120 s).
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long after a connection closes its editor leaves the session: a
/// client that reconnects within this (y-websocket retries within 2.5 s)
/// finds the same session, so the document it holds stays valid.
const LEAVE_GRACE: Duration = Duration::from_secs(15);
/// The largest awareness frame relayed.
const MAX_AWARENESS_BYTES: usize = 64 * 1024;
/// Longest wait for a client to take one frame.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Awareness frames a client may send per second; more in the same second
/// are dropped (awareness is state: the client's next renewal, at most
/// 15 s later, carries its latest state).
const AWARENESS_PER_SECOND: u32 = 60;
/// Header naming the connection an awareness relay came from.
const ORIGIN_HEADER: &str = "Ymera-Collab-Origin";

/// `drafting.collab.join` reply (the fields used).
#[derive(Debug, Deserialize)]
struct JoinReply {
    state_vector: String,
}

/// `drafting.collab.update` reply (the fields used).
#[derive(Debug, Deserialize)]
struct UpdateReply {
    #[serde(default)]
    missing: Option<String>,
}

/// What drafting publishes on `drafting.collab.<id>.updates`.
#[derive(Debug, Deserialize)]
struct Broadcast {
    client_id: String,
    update: String,
    seq: i64,
    session_id: String,
}

/// Why a connection ends.
enum End {
    /// The client closed or vanished.
    Gone,
    /// The gateway closes it with a code and reason.
    Close(u16, String),
}

/// The close code after which the client reconnects and so joins again:
/// drafting no longer counts this connection as an editor (dropped after
/// its presence timeout, or the session ended). y-websocket retries after
/// 4500–4599; on the new connection the first sync step 1 shows whether
/// the client's document still belongs to the session
/// ([`wire::from_other_session`]).
pub const REJOIN: u16 = 4509;

/// Whether drafting refused because this connection is not (any more) an
/// editor of a live session — `drafting.collab.update`'s "has not joined"
/// (403) and "no collaboration session" (404) — rather than for the
/// caller's credential or the request.
fn session_lost(e: &Error) -> bool {
    (e.kind == ErrorKind::Forbidden && e.message.contains("has not joined"))
        || (e.kind == ErrorKind::NotFound && e.message.contains("collaboration session"))
}

impl From<Error> for End {
    fn from(e: Error) -> End {
        if session_lost(&e) {
            return End::Close(
                REJOIN,
                "this connection left the collaboration session; reconnect".to_owned(),
            );
        }
        End::Close(close_code(&e), e.message)
    }
}

/// A joined collaborator, not yet speaking to its client.
pub(super) struct Session {
    app: AppState,
    client: ServiceClient,
    draft_id: String,
    client_id: String,
    server_state_vector: Vec<u8>,
    updates: Subscriber,
    awareness: Subscriber,
    /// The client's last state vector (sync step 1), for resyncs.
    client_state_vector: StateVector,
    /// The broadcast session and the last update number seen.
    position: Option<(String, i64)>,
    /// Awareness clients the socket spoke for, with their last clock.
    aware: HashMap<u64, u32>,
    /// Whether the client's first state vector was checked against the
    /// session ([`wire::from_other_session`]).
    session_checked: bool,
    /// Awareness frames relayed in the current one-second window.
    awareness_window: (tokio::time::Instant, u32),
}

fn decode_b64(what: &str, value: &str) -> Result<Vec<u8>, Error> {
    B64.decode(value.trim())
        .map_err(|e| Error::internal(format!("drafting sent a {what} that is not base64: {e}")))
}

impl Session {
    /// Subscribes to the draft's broadcasts (first, so no update falls
    /// between the joined state and the subscription) and joins.
    pub(super) async fn join(
        app: AppState,
        credential: Option<Credential>,
        draft_id: String,
        user_id: String,
    ) -> Result<Session, Error> {
        let nats = app.nats.clone();
        let down = |_| Error::dependency_down("nats");
        let updates = nats
            .subscribe(updates_subject(&draft_id))
            .await
            .map_err(down)?;
        let awareness = nats
            .subscribe(awareness_subject(&draft_id))
            .await
            .map_err(down)?;
        nats.flush()
            .await
            .map_err(|_| Error::dependency_down("nats"))?;
        let client = ServiceClient::new(nats)
            .with_timeout(app.settings.request_timeout)
            .with_credential(credential);
        let client_id = format!("yws-{}", uuid::Uuid::now_v7());
        let joined: JoinReply = client
            .request(
                "drafting.collab.join",
                &json!({"draft_id": draft_id, "user_id": user_id, "client_id": client_id}),
            )
            .await?;
        Ok(Session {
            server_state_vector: decode_b64("state vector", &joined.state_vector)?,
            app,
            client,
            draft_id,
            client_id,
            updates,
            awareness,
            client_state_vector: StateVector::default(),
            position: None,
            aware: HashMap::new(),
            awareness_window: (tokio::time::Instant::now(), 0),
            session_checked: false,
        })
    }

    /// Speaks y-websocket on `socket` until either side ends it, then
    /// withdraws the client's awareness and (after [`LEAVE_GRACE`]) leaves.
    pub(super) async fn run(mut self, mut socket: WebSocket, limit: usize) {
        metrics::counter!("ymera_gateway_collab_connections_total").increment(1);
        metrics::gauge!("ymera_gateway_collab_connections").increment(1.0);
        let end = self.serve(&mut socket, limit).await;
        metrics::gauge!("ymera_gateway_collab_connections").decrement(1.0);
        if !self.aware.is_empty() {
            let removal = wire::awareness_removal(&self.aware);
            self.relay(removal.into()).await;
        }
        match end {
            End::Gone => {}
            End::Close(code, reason) => {
                tracing::debug!(draft_id = %self.draft_id, code, reason, "collaboration connection closed");
                close(socket, code, &reason).await;
            }
        }
        let (client, draft_id, client_id) = (self.client, self.draft_id, self.client_id);
        tokio::spawn(async move {
            tokio::time::sleep(LEAVE_GRACE).await;
            let leave =
                json!({"draft_id": draft_id, "client_id": client_id, "leave": true, "text": false});
            if let Err(e) = client
                .request::<_, Value>("drafting.collab.update", &leave)
                .await
            {
                tracing::debug!(draft_id, error = %e, "leaving the collaboration session failed");
            }
        });
    }

    async fn serve(&mut self, socket: &mut WebSocket, limit: usize) -> End {
        // As a y-websocket server: our state vector first, then ask the
        // other connections for their awareness.
        let step1 = match wire::sync_step1(&self.server_state_vector) {
            Ok(f) => f,
            Err(e) => return End::Close(4500, e.to_string()),
        };
        if send(socket, step1).await.is_err() {
            return End::Gone;
        }
        self.relay(wire::awareness_query().into()).await;
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            let step = tokio::select! {
                incoming = socket.recv() => match incoming {
                    Some(Ok(message)) => self.on_client_frame(socket, message, limit).await,
                    Some(Err(e)) => Err(End::Close(1009, format!("unreadable frame: {e}"))),
                    None => Err(End::Gone),
                },
                Some(message) = self.updates.next() => self.on_broadcast(socket, &message.payload).await,
                Some(message) = self.awareness.next() => self.on_relay(socket, message).await,
                _ = heartbeat.tick() => self.heartbeat().await,
                else => Err(End::Close(4503, "the gateway lost its NATS subscriptions".to_owned())),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn on_client_frame(
        &mut self,
        socket: &mut WebSocket,
        message: Message,
        limit: usize,
    ) -> Result<(), End> {
        let frame = match message {
            Message::Binary(b) => b,
            Message::Close(_) => return Err(End::Gone),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Text(_) => {
                return Err(End::Close(4400, "y-websocket frames are binary".to_owned()));
            }
        };
        if frame.len() > limit {
            return Err(End::Close(
                4413,
                format!(
                    "frame of {} bytes exceeds the limit of {limit} bytes",
                    frame.len()
                ),
            ));
        }
        metrics::counter!("ymera_gateway_collab_frames_total", "direction" => "in").increment(1);
        let parsed = wire::decode(&frame).map_err(|e| End::Close(4400, e.to_string()))?;
        match parsed {
            ClientFrame::StateVector(sv) => {
                if !self.session_checked {
                    self.session_checked = true;
                    let server = StateVector::decode_v1(&self.server_state_vector)
                        .map_err(|e| Error::internal(format!("drafting's state vector: {e}")))?;
                    if wire::from_other_session(&server, &sv) {
                        metrics::counter!("ymera_gateway_collab_stale_documents_total")
                            .increment(1);
                        return Err(End::Close(
                            4409,
                            "this Y.Doc is from an earlier collaboration session of the draft; \
                             connect with a new Y.Doc"
                                .to_owned(),
                        ));
                    }
                }
                let missing = self.missing(&sv).await?;
                self.client_state_vector = sv;
                send(socket, wire::sync_step2(missing))
                    .await
                    .map_err(|_| End::Gone)
            }
            ClientFrame::Update(update) if wire::is_empty_update(&update) => Ok(()),
            ClientFrame::Update(update) => {
                let body = json!({
                    "draft_id": self.draft_id, "client_id": self.client_id,
                    "update": B64.encode(&update), "text": false,
                });
                self.client
                    .request::<_, Value>("drafting.collab.update", &body)
                    .await?;
                Ok(())
            }
            ClientFrame::Awareness { frame, clients } => {
                if frame.len() > MAX_AWARENESS_BYTES {
                    return Err(End::Close(
                        4413,
                        format!("awareness frames are limited to {MAX_AWARENESS_BYTES} bytes"),
                    ));
                }
                for (id, clock) in clients {
                    if self.aware.len() >= wire::MAX_AWARENESS_CLIENTS
                        && !self.aware.contains_key(&id)
                    {
                        return Err(End::Close(
                            4400,
                            "too many awareness clients on one connection".to_owned(),
                        ));
                    }
                    self.aware.insert(id, clock);
                }
                if self.awareness_allowed() {
                    self.relay(frame.into()).await;
                }
                Ok(())
            }
            ClientFrame::AwarenessQuery => {
                self.relay(wire::awareness_query().into()).await;
                Ok(())
            }
            ClientFrame::Auth => Ok(()),
        }
    }

    /// Whether one more awareness frame fits this second's budget.
    fn awareness_allowed(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.awareness_window.0) >= Duration::from_secs(1) {
            self.awareness_window = (now, 0);
        }
        self.awareness_window.1 += 1;
        let allowed = self.awareness_window.1 <= AWARENESS_PER_SECOND;
        if !allowed {
            metrics::counter!("ymera_gateway_collab_awareness_dropped_total").increment(1);
        }
        allowed
    }

    /// What a client with state vector `sv` lacks, from drafting.
    async fn missing(&self, sv: &StateVector) -> Result<Vec<u8>, Error> {
        let body = json!({
            "draft_id": self.draft_id, "client_id": self.client_id,
            "state_vector": B64.encode(sv.encode_v1()), "text": false,
        });
        let reply: UpdateReply = self.client.request("drafting.collab.update", &body).await?;
        match reply.missing {
            Some(m) => decode_b64("missing update", &m),
            None => Err(Error::internal("drafting sent no missing update")),
        }
    }

    async fn on_broadcast(&mut self, socket: &mut WebSocket, payload: &Bytes) -> Result<(), End> {
        let Ok(event) = serde_json::from_slice::<Broadcast>(payload) else {
            tracing::warn!(draft_id = %self.draft_id, "an unreadable collaboration broadcast; ignored");
            return Ok(());
        };
        let gap = match &self.position {
            // A new session: this connection's ended without it.
            Some((session, _)) if *session != event.session_id => {
                return Err(End::Close(
                    REJOIN,
                    "the collaboration session changed; reconnect".to_owned(),
                ));
            }
            Some((_, seq)) => event.seq > seq + 1,
            None => false,
        };
        let last = self
            .position
            .as_ref()
            .map_or(event.seq, |(_, s)| (*s).max(event.seq));
        self.position = Some((event.session_id, last));
        if gap {
            // A broadcast was lost (NATS core is at most once): send the
            // client whatever it may lack since its last state vector.
            metrics::counter!("ymera_gateway_collab_resyncs_total").increment(1);
            let sv = self.client_state_vector.clone();
            let missing = self.missing(&sv).await?;
            return send(socket, wire::sync_update(missing))
                .await
                .map_err(|_| End::Gone);
        }
        if event.client_id == self.client_id {
            return Ok(());
        }
        let update = decode_b64("update", &event.update)?;
        send(socket, wire::sync_update(update))
            .await
            .map_err(|_| End::Gone)
    }

    async fn on_relay(
        &mut self,
        socket: &mut WebSocket,
        message: async_nats::Message,
    ) -> Result<(), End> {
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(ORIGIN_HEADER))
            .map(|v| v.as_str().to_owned());
        let frame = message.payload;
        if frame.len() > MAX_AWARENESS_BYTES {
            return Ok(());
        }
        // Our own query is for the others; our own awareness is echoed, as
        // y-websocket servers do (it also keeps the client's idle timer fed).
        if origin.as_deref() == Some(self.client_id.as_str())
            && frame.as_ref() == wire::awareness_query()
        {
            return Ok(());
        }
        send(socket, frame.to_vec()).await.map_err(|_| End::Gone)
    }

    async fn heartbeat(&mut self) -> Result<(), End> {
        let body = json!({"draft_id": self.draft_id, "client_id": self.client_id, "text": false});
        match self
            .client
            .request::<_, Value>("drafting.collab.update", &body)
            .await
        {
            Ok(_) => Ok(()),
            // Drafting briefly away: the next heartbeat tries again.
            Err(e) if e.kind == ErrorKind::Unavailable => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Publishes a frame to every connection of the draft (all replicas).
    async fn relay(&self, frame: Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN_HEADER, self.client_id.as_str());
        if let Err(e) = self
            .app
            .nats
            .publish_with_headers(awareness_subject(&self.draft_id), headers, frame)
            .await
        {
            tracing::debug!(error = %e, "relaying awareness failed");
        }
    }
}

/// Sends a frame; a client that takes longer than [`SEND_TIMEOUT`] to take
/// it is given up on (what waits for it meanwhile is bounded by the NATS
/// subscriptions' capacity, and the connection then ends).
async fn send(socket: &mut WebSocket, frame: Vec<u8>) -> Result<(), SendError> {
    metrics::counter!("ymera_gateway_collab_frames_total", "direction" => "out").increment(1);
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Binary(frame.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SendError),
        Err(_) => {
            metrics::counter!("ymera_gateway_collab_slow_clients_total").increment(1);
            Err(SendError)
        }
    }
}

/// The client did not take a frame (gone, or too slow).
#[derive(Debug)]
struct SendError;
