//! The process's one live feed of `YMERA_EVENTS` and what a subscriber reads.
//!
//! The feed batches the events of the process's ordered consumer
//! (`GATEWAY_EVENTS_BATCH_SIZE` / `GATEWAY_EVENTS_FLUSH_INTERVAL`) and
//! encodes each batch once, as an SSE message and as a WebSocket text frame;
//! every live subscriber gets the same `Arc` from a broadcast ring and writes
//! those shared bytes (a subscriber whose patterns or permissions keep only
//! part of a batch builds its own from the events' shared encodings). The
//! ring is the only per-subscriber queue: a subscriber more than
//! `GATEWAY_EVENTS_QUEUE` events behind the feed is ended as `slow_consumer`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use ymera_core::{Error, ErrorKind};

use super::{STREAM, STREAM_SUBJECTS, StoredEvent, Subscription, slow_consumer};

/// Largest stream size.
const MAX_STREAM_BYTES: i64 = 1024 * 1024 * 1024;
/// How long a replaying subscriber's producer waits for its writer.
const REPLAY_STALL: Duration = Duration::from_secs(10);

/// One event, encoded once (`{"seq","subject","time","data"}`).
#[derive(Debug)]
pub struct EncodedEvent {
    /// The stream sequence.
    pub seq: u64,
    /// The NATS subject.
    pub subject: String,
    /// The JSON object clients get.
    pub json: Bytes,
}

impl EncodedEvent {
    fn new(event: &StoredEvent) -> EncodedEvent {
        let json = serde_json::to_vec(event).unwrap_or_else(|_| b"null".to_vec());
        EncodedEvent {
            seq: event.seq,
            subject: event.subject.clone(),
            json: Bytes::from(json),
        }
    }
}

/// A batch of the live feed, encoded once for every subscriber.
#[derive(Debug)]
pub struct HubBatch {
    events: Vec<Arc<EncodedEvent>>,
    /// Events the feed had published when this batch was complete.
    end: u64,
    sse: Bytes,
    ws: Bytes,
}

/// `[e1,e2,…]`.
fn json_array(events: &[Arc<EncodedEvent>]) -> BytesMut {
    let size: usize = events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 2);
    out.put_u8(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(&event.json);
    }
    out.put_u8(b']');
    out
}

/// The SSE message of `events`: `id: <last seq>`, `event: events`, `data: [...]`.
pub fn sse_message(events: &[Arc<EncodedEvent>]) -> Bytes {
    let last = events.last().map(|e| e.seq).unwrap_or(0);
    let array = json_array(events);
    let mut out = BytesMut::with_capacity(array.len() + 48);
    out.extend_from_slice(format!("id: {last}\nevent: events\ndata: ").as_bytes());
    out.extend_from_slice(&array);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The WebSocket text of `events`: `{"type":"events","events":[...],"last_seq":N}`.
pub fn ws_message(events: &[Arc<EncodedEvent>]) -> Bytes {
    let last = events.last().map(|e| e.seq).unwrap_or(0);
    let array = json_array(events);
    let mut out = BytesMut::with_capacity(array.len() + 64);
    out.extend_from_slice(b"{\"type\":\"events\",\"events\":");
    out.extend_from_slice(&array);
    out.extend_from_slice(format!(",\"last_seq\":{last}}}").as_bytes());
    out.freeze()
}

/// What a subscriber writes next.
#[derive(Debug)]
pub enum Delivery {
    /// A whole batch of the live feed: its shared encodings.
    Shared(Arc<HubBatch>),
    /// The subscriber's own selection.
    Own(Vec<Arc<EncodedEvent>>),
}

impl Delivery {
    /// The SSE message.
    pub fn sse(&self) -> Bytes {
        match self {
            Delivery::Shared(batch) => batch.sse.clone(),
            Delivery::Own(events) => sse_message(events),
        }
    }

    /// The WebSocket text frame.
    pub fn ws(&self) -> Bytes {
        match self {
            Delivery::Shared(batch) => batch.ws.clone(),
            Delivery::Own(events) => ws_message(events),
        }
    }
}

/// The process's live feed and the stream.
pub struct EventHub {
    js: jetstream::Context,
    live: broadcast::Sender<Arc<HubBatch>>,
    /// Events published on `live` so far.
    published: AtomicU64,
    batch_size: usize,
    flush: Duration,
    queue: u64,
    /// Deflate state shared by the WebSocket connections (no context takeover).
    pub(super) deflate: yawc::DeflatePool,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").finish_non_exhaustive()
    }
}

impl EventHub {
    /// Makes sure `YMERA_EVENTS` exists (updated in place) and starts the live feed.
    pub async fn start(
        nats: async_nats::Client,
        settings: &crate::Settings,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<EventHub>, String> {
        let js = jetstream::new(nats.clone());
        let replicas = ymera_core::jetstream::replicas(&nats)
            .await
            .map_err(|e| e.to_string())?;
        let config = stream::Config {
            name: STREAM.to_owned(),
            description: Some("platform events for the gateway's event streams".to_owned()),
            subjects: STREAM_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
            max_age: settings.events_max_age,
            max_bytes: MAX_STREAM_BYTES,
            discard: stream::DiscardPolicy::Old,
            compression: Some(stream::Compression::S2),
            ..Default::default()
        };
        ymera_core::jetstream::ensure_stream(&js, config, replicas).await?;
        let queue = settings.events_queue.max(1);
        // Every batch holds at least one event, so a ring of `queue` batches
        // never drops one a subscriber within `queue` events still needs.
        let (live, _) = broadcast::channel(queue);
        let hub = Arc::new(EventHub {
            js,
            live,
            published: AtomicU64::new(0),
            batch_size: settings.events_batch_size.max(1),
            flush: settings.events_flush_interval,
            queue: queue as u64,
            deflate: yawc::DeflatePool::new(8),
        });
        tokio::spawn(hub.clone().feed(shutdown));
        Ok(hub)
    }

    fn publish(&self, events: Vec<Arc<EncodedEvent>>) {
        if events.is_empty() {
            return;
        }
        let end = self
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed)
            + events.len() as u64;
        let batch = HubBatch {
            sse: sse_message(&events),
            ws: ws_message(&events),
            events,
            end,
        };
        let _ = self.live.send(Arc::new(batch));
    }

    /// The live feed: one ordered consumer from now on, batched into the ring.
    async fn feed(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.consumer(None, &[]).await {
                Ok(messages) => {
                    let mut messages = Box::pin(messages);
                    let mut batch: Vec<Arc<EncodedEvent>> = Vec::new();
                    let flush = tokio::time::sleep(self.flush);
                    tokio::pin!(flush);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = &mut flush, if !batch.is_empty() => {
                                self.publish(std::mem::take(&mut batch));
                            }
                            next = messages.next() => match next {
                                Some(Ok(event)) => {
                                    if batch.is_empty() {
                                        flush.as_mut().reset(tokio::time::Instant::now() + self.flush);
                                    }
                                    batch.push(Arc::new(EncodedEvent::new(&event)));
                                    if batch.len() >= self.batch_size {
                                        self.publish(std::mem::take(&mut batch));
                                    }
                                }
                                Some(Err(err)) => {
                                    self.publish(std::mem::take(&mut batch));
                                    tracing::warn!(error = %err, "event feed failed; restarting");
                                    break;
                                }
                                None => {
                                    self.publish(std::mem::take(&mut batch));
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "event feed cannot start; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// An ordered consumer from `start` (`None`: new events only) on `filters`.
    async fn consumer(
        &self,
        start: Option<u64>,
        filters: &[String],
    ) -> Result<impl Stream<Item = Result<StoredEvent, String>> + Send + use<>, String> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let deliver_policy = match start {
            Some(seq) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq.max(1),
            },
            None => consumer::DeliverPolicy::New,
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: filters.to_vec(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let messages = consumer.messages().await.map_err(|e| e.to_string())?;
        Ok(messages.map(|next| {
            let message = next.map_err(|e| e.to_string())?;
            let info = message.info().map_err(|e| e.to_string())?;
            let nanos = info.published.unix_timestamp_nanos();
            let time = chrono::DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(0))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let seq = info.stream_sequence;
            let data = serde_json::from_slice(&message.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&message.payload).into_owned())
            });
            Ok(StoredEvent {
                seq,
                subject: message.subject.to_string(),
                time,
                data,
            })
        }))
    }

    /// The last sequence in the stream.
    pub(super) async fn last_seq(&self) -> u64 {
        match self.js.get_stream(STREAM).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|i| i.state.last_sequence)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// A subscriber's source: the live ring, or (`since`) its own ordered
    /// consumer from the next sequence. Subscribed before it returns, so
    /// nothing published after `last_seq()` is missed.
    pub(super) async fn source(&self, sub: &Subscription) -> Result<Source, Error> {
        match sub.since {
            None => Ok(Source::Live {
                rx: self.live.subscribe(),
                queue: self.queue,
            }),
            Some(since) => {
                let source = self
                    .consumer(Some(since + 1), &sub.patterns)
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Unavailable, format!("cannot read {STREAM}: {e}"))
                    })?;
                let capacity = (self.queue as usize).div_ceil(self.batch_size).max(1);
                let (tx, rx) = mpsc::channel(capacity);
                tokio::spawn(replay(
                    Box::pin(source),
                    sub.clone(),
                    tx,
                    self.batch_size,
                    self.flush,
                ));
                Ok(Source::Replay { rx })
            }
        }
    }
}

/// Batches a replaying subscriber's own consumer into its bounded queue.
async fn replay(
    mut source: std::pin::Pin<Box<dyn Stream<Item = Result<StoredEvent, String>> + Send>>,
    sub: Subscription,
    tx: mpsc::Sender<Result<Vec<Arc<EncodedEvent>>, Error>>,
    batch_size: usize,
    flush: Duration,
) {
    let mut batch = Vec::new();
    loop {
        let next = if batch.is_empty() {
            tokio::select! {
                () = tx.closed() => return,
                next = source.next() => next.map(Some),
            }
        } else {
            match tokio::time::timeout(flush, source.next()).await {
                Ok(next) => next.map(Some),
                Err(_) => Some(None),
            }
        };
        let failure = match next {
            Some(Some(Ok(event))) => {
                if sub.admits(&event.subject) {
                    batch.push(Arc::new(EncodedEvent::new(&event)));
                }
                if batch.len() < batch_size {
                    continue;
                }
                None
            }
            Some(None) => None,
            Some(Some(Err(err))) => Some(Error::new(
                ErrorKind::Unavailable,
                format!("{STREAM}: {err}"),
            )),
            None => Some(Error::new(ErrorKind::Unavailable, "the event stream ended")),
        };
        if !batch.is_empty() {
            match tokio::time::timeout(REPLAY_STALL, tx.send(Ok(std::mem::take(&mut batch)))).await
            {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let _ = tx.try_send(Err(slow_consumer()));
                    return;
                }
            }
        }
        if let Some(err) = failure {
            let _ = tx.send(Err(err)).await;
            return;
        }
    }
}

/// Where a subscriber's batches come from.
#[derive(Debug)]
pub(super) enum Source {
    /// The shared live ring.
    Live {
        rx: broadcast::Receiver<Arc<HubBatch>>,
        queue: u64,
    },
    /// Its own consumer (a resume), through a bounded queue.
    Replay {
        rx: mpsc::Receiver<Result<Vec<Arc<EncodedEvent>>, Error>>,
    },
}

impl Source {
    /// The next non-empty delivery for `sub`; an error ends the stream
    /// (`slow_consumer`, or the stream unavailable). Cancel safe.
    pub(super) async fn next(
        &mut self,
        hub: &EventHub,
        sub: &Subscription,
    ) -> Result<Delivery, Error> {
        match self {
            Source::Live { rx, queue, .. } => loop {
                match rx.recv().await {
                    Ok(batch) => {
                        let behind = hub
                            .published
                            .load(Ordering::Relaxed)
                            .saturating_sub(batch.end);
                        if behind > *queue {
                            return Err(slow_consumer());
                        }
                        let admitted = batch
                            .events
                            .iter()
                            .filter(|e| sub.admits(&e.subject))
                            .count();
                        if admitted == batch.events.len() {
                            return Ok(Delivery::Shared(batch));
                        }
                        if admitted > 0 {
                            return Ok(Delivery::Own(
                                batch
                                    .events
                                    .iter()
                                    .filter(|e| sub.admits(&e.subject))
                                    .cloned()
                                    .collect(),
                            ));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(slow_consumer()),
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(Error::new(ErrorKind::Unavailable, "the event feed stopped"));
                    }
                }
            },
            Source::Replay { rx } => match rx.recv().await {
                Some(Ok(events)) => Ok(Delivery::Own(events)),
                Some(Err(err)) => Err(err),
                None => Err(Error::new(ErrorKind::Unavailable, "the event stream ended")),
            },
        }
    }
}
