//! The process's one live feed of `YMERA_EVENTS` and what a subscriber reads.
//!
//! The feed batches the events of the process's ordered consumer
//! (`GATEWAY_EVENTS_BATCH_SIZE` / `GATEWAY_EVENTS_FLUSH_INTERVAL`) and
//! encodes each batch once, as an SSE message and as a WebSocket text frame;
//! every live subscriber gets the same `Arc` from the process's ring and
//! writes those shared bytes (a subscriber whose patterns or permissions keep
//! only part of a batch builds its own from the events' shared encodings).
//!
//! The ring is the only per-subscriber queue, and it is bounded in events,
//! not by its readers: it keeps the newest batches that cover the last
//! `GATEWAY_EVENTS_QUEUE` events, whoever has read them. A subscriber is a
//! position in it; one that falls further behind (its batch left the ring)
//! is ended as `slow_consumer` when it reads next. So a stalled client —
//! whose writer is not even polled while its socket is full — holds one
//! batch at most, and the process's memory for the live feed is the ring's,
//! not a multiple of the clients'.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
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

/// The newest batches of the live feed: those covering the last `queue`
/// events (and always the newest one).
#[derive(Debug, Default)]
struct Ring {
    batches: VecDeque<Arc<HubBatch>>,
    /// Events in `batches`.
    held: u64,
    /// Events published so far (the `end` of the newest batch).
    published: u64,
}

impl Ring {
    /// Appends `events` as a batch and lets the oldest batches go.
    fn push(&mut self, events: Vec<Arc<EncodedEvent>>, queue: u64) {
        let count = events.len() as u64;
        self.published += count;
        self.held += count;
        self.batches.push_back(Arc::new(HubBatch {
            sse: sse_message(&events),
            ws: ws_message(&events),
            events,
            end: self.published,
        }));
        // Drop the oldest batch while the rest still covers `queue` events.
        while let Some(oldest) = self.batches.front() {
            let rest = self.held - oldest.events.len() as u64;
            if rest < queue {
                break;
            }
            self.held = rest;
            self.batches.pop_front();
        }
    }

    /// The first batch after position `read` (events read so far): `Ok(None)`
    /// when there is none yet, `Err` when it left the ring.
    fn after(&self, read: u64) -> Result<Option<Arc<HubBatch>>, ()> {
        if read >= self.published {
            return Ok(None);
        }
        let oldest_start = self.published - self.held;
        if read < oldest_start {
            return Err(());
        }
        // Batches are in order of `end`; few are searched (a subscriber is
        // usually one batch behind).
        let index = self.batches.partition_point(|b| b.end <= read);
        Ok(self.batches.get(index).cloned())
    }
}

/// The process's live feed and the stream.
pub struct EventHub {
    js: jetstream::Context,
    ring: RwLock<Ring>,
    /// Wakes the live subscribers when a batch is in the ring.
    live: watch::Sender<()>,
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
        let hub = Arc::new(EventHub {
            js,
            ring: RwLock::new(Ring::default()),
            live: watch::Sender::new(()),
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
        self.ring
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(events, self.queue);
        self.live.send_replace(());
    }

    /// The ring's position now: a new live subscriber reads from here.
    fn position(&self) -> u64 {
        self.ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .published
    }

    /// The first batch after `read`; `slow_consumer` when it left the ring.
    fn batch_after(&self, read: u64) -> Result<Option<Arc<HubBatch>>, Error> {
        self.ring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .after(read)
            .map_err(|()| slow_consumer())
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
            None => {
                // Subscribed to the wake-ups before reading the position: a
                // batch published in between is found by the first read.
                let wake = self.live.subscribe();
                Ok(Source::Live {
                    wake,
                    read: self.position(),
                })
            }
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
    /// A position in the shared live ring.
    Live {
        /// Changes when a batch is published.
        wake: watch::Receiver<()>,
        /// Events of the feed this subscriber has read (or skipped).
        read: u64,
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
            Source::Live { wake, read } => loop {
                wake.borrow_and_update();
                let Some(batch) = hub.batch_after(*read)? else {
                    if wake.changed().await.is_err() {
                        return Err(Error::new(ErrorKind::Unavailable, "the event feed stopped"));
                    }
                    continue;
                };
                *read = batch.end;
                if batch.events.iter().all(|e| sub.admits(&e.subject)) {
                    return Ok(Delivery::Shared(batch));
                }
                let own: Vec<_> = batch
                    .events
                    .iter()
                    .filter(|e| sub.admits(&e.subject))
                    .cloned()
                    .collect();
                if !own.is_empty() {
                    return Ok(Delivery::Own(own));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(from: u64, n: u64) -> Vec<Arc<EncodedEvent>> {
        (from..from + n)
            .map(|seq| {
                Arc::new(EncodedEvent {
                    seq,
                    subject: "events.t".to_owned(),
                    json: Bytes::from_static(b"{}"),
                })
            })
            .collect()
    }

    #[test]
    fn the_ring_keeps_the_last_queue_events_and_reports_who_fell_out() {
        let mut ring = Ring::default();
        assert!(matches!(ring.after(0), Ok(None)));
        for i in 0..10 {
            ring.push(events(i * 3 + 1, 3), 7);
        }
        // 30 published; 7 must stay covered: the batches of 22..=30 (9 events).
        assert_eq!(ring.published, 30);
        assert_eq!(ring.held, 9);
        assert_eq!(ring.batches.len(), 3);
        assert!(ring.after(20).is_err(), "8+ events behind a queue of 7");
        let next = ring.after(21).unwrap().unwrap();
        assert_eq!((next.events[0].seq, next.end), (22, 24));
        assert_eq!(
            ring.after(25).unwrap().unwrap().end,
            27,
            "mid-batch: that batch"
        );
        assert!(matches!(ring.after(30), Ok(None)));
        // A batch bigger than the queue is kept whole, and alone.
        ring.push(events(31, 20), 7);
        assert_eq!((ring.held, ring.batches.len()), (20, 1));
        assert!(ring.after(30).unwrap().is_some());
    }
}
