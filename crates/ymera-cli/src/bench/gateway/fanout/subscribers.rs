//! The subscribers of the fan-out phase: WebSocket and SSE clients of the gateway's
//! event streams, a few tasks each polling its share as one `FuturesUnordered`, and
//! the frame scanner counting each event once ([`Tally`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use memchr::memmem;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::bench::new_histogram;

/// What precedes `n,t_us]` in an event's encoding (the data is `{"bench_fanout":[n,t_us]}`).
const MARKER: &[u8] = b"\"bench_fanout\":[";
/// Tasks reading the subscribers of one kind.
const TASKS_PER_KIND: usize = 2;
/// Connections being opened at once (the gateway's listen backlog is 1024).
pub(super) const CONNECTING_AT_ONCE: usize = 64;
/// How long the connections of one kind may take in all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(MARKER));

/// Which endpoint a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Ws,
    Sse,
}

/// How a subscriber's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// Still open when the benchmark stopped it.
    Open,
    /// Ended by the gateway as `slow_consumer`.
    SlowConsumer,
    /// Closed for another reason.
    Closed(String),
    /// Never connected.
    ConnectFailed(String),
}

/// What one subscriber got.
pub(super) struct Tally {
    /// Bit n: event n arrived.
    pub(super) seen: Vec<u64>,
    pub(super) unique: u64,
    pub(super) duplicates: u64,
    /// Event numbers outside the run (never expected).
    pub(super) strays: u64,
    pub(super) events: u64,
}

impl Tally {
    pub(super) fn new(events: u64) -> Tally {
        Tally {
            seen: vec![0; events.div_ceil(64) as usize],
            unique: 0,
            duplicates: 0,
            strays: 0,
            events,
        }
    }

    fn mark(&mut self, n: u64) {
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        match self.seen.get_mut(word).filter(|_| n < self.events) {
            Some(w) if *w & bit != 0 => self.duplicates += 1,
            Some(w) => {
                *w |= bit;
                self.unique += 1;
            }
            None => self.strays += 1,
        }
    }

    /// Records every event in `frame`, received at `now_us`; returns how many.
    pub(super) fn scan(
        &mut self,
        frame: &[u8],
        now_us: u64,
        histogram: &Mutex<Histogram<u64>>,
    ) -> u64 {
        let mut found = 0;
        let mut h = histogram.lock().unwrap_or_else(|e| e.into_inner());
        for at in FINDER.find_iter(frame) {
            let Some((n, sent)) = parse_pair(&frame[at + MARKER.len()..]) else {
                continue;
            };
            self.mark(n);
            h.saturating_record(now_us.saturating_sub(sent).max(1));
            found += 1;
        }
        found
    }
}

/// `123,456]…` → (123, 456).
fn parse_pair(text: &[u8]) -> Option<(u64, u64)> {
    let (n, rest) = parse_u64(text)?;
    let rest = rest.strip_prefix(b",")?;
    let (t, rest) = parse_u64(rest)?;
    rest.starts_with(b"]").then_some((n, t))
}

fn parse_u64(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut value = 0u64;
    for b in &text[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &text[digits..]))
}

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The event body of event `n`, sent at `sent_us`.
pub(super) fn event_body(n: u64, sent_us: u64) -> Bytes {
    Bytes::from(format!("{{\"bench_fanout\":[{n},{sent_us}]}}"))
}

/// What the subscribers of one kind share.
pub(super) struct Shared {
    pub(super) kind: Kind,
    pub(super) authority: String,
    pub(super) addr: SocketAddr,
    pub(super) path: String,
    pub(super) credential: Option<(&'static str, String)>,
    pub(super) events: u64,
    pub(super) stop: CancellationToken,
    pub(super) connecting: Semaphore,
    pub(super) ready: AtomicUsize,
    pub(super) failed: AtomicUsize,
    /// Events received by all of them.
    pub(super) received: AtomicU64,
}

/// One subscriber's result.
pub(super) struct Outcome {
    pub(super) unique: u64,
    pub(super) duplicates: u64,
    pub(super) strays: u64,
    pub(super) end: End,
}

/// The subscribers of one kind, read by [`TASKS_PER_KIND`] tasks.
pub(super) struct Group {
    pub(super) shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Outcome>, Histogram<u64>)>>,
    count: usize,
}

impl Group {
    pub(super) fn start(shared: Arc<Shared>, count: usize) -> Group {
        let tasks = (0..TASKS_PER_KIND)
            .map(|t| {
                let mine = count / TASKS_PER_KIND + usize::from(t < count % TASKS_PER_KIND);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let histogram = Mutex::new(new_histogram());
                    let mut set: FuturesUnordered<_> =
                        (0..mine).map(|_| subscriber(&shared, &histogram)).collect();
                    let mut outcomes = Vec::with_capacity(mine);
                    while let Some(outcome) = set.next().await {
                        outcomes.push(outcome);
                    }
                    drop(set);
                    (
                        outcomes,
                        histogram.into_inner().unwrap_or_else(|e| e.into_inner()),
                    )
                })
            })
            .collect();
        Group {
            shared,
            tasks,
            count,
        }
    }

    /// Waits until every subscriber is connected (or failed).
    pub(super) async fn connected(&self, bar: &ProgressBar) -> anyhow::Result<()> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let (ready, failed) = (
                self.shared.ready.load(Ordering::Relaxed),
                self.shared.failed.load(Ordering::Relaxed),
            );
            bar.set_position((ready + failed) as u64);
            if ready + failed >= self.count {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{ready} of {} {:?} subscribers connected within {} s",
                self.count,
                self.shared.kind,
                CONNECT_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn finish(self) -> anyhow::Result<(Vec<Outcome>, Histogram<u64>)> {
        let mut all = Vec::with_capacity(self.count);
        let mut histogram = new_histogram();
        for task in self.tasks {
            let (outcomes, h) = task.await.context("a subscriber task failed")?;
            all.extend(outcomes);
            histogram.add(&h).context("merging histograms")?;
        }
        Ok((all, histogram))
    }
}

async fn subscriber(shared: &Shared, histogram: &Mutex<Histogram<u64>>) -> Outcome {
    let mut tally = Tally::new(shared.events);
    let end = match shared.kind {
        Kind::Ws => ws_subscriber(shared, histogram, &mut tally).await,
        Kind::Sse => sse_subscriber(shared, histogram, &mut tally).await,
    };
    let end = end.unwrap_or_else(|e| {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        End::ConnectFailed(format!("{e:#}"))
    });
    Outcome {
        unique: tally.unique,
        duplicates: tally.duplicates,
        strays: tally.strays,
        end,
    }
}

async fn tcp(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket subscriber: `Err` only when it never connected.
async fn ws_subscriber(
    shared: &Shared,
    histogram: &Mutex<Histogram<u64>>,
    tally: &mut Tally,
) -> anyhow::Result<End> {
    use tungstenite::client::IntoClientRequest as _;
    let mut ws = {
        let _permit = shared.connecting.acquire().await?;
        let url = format!("ws://{}{}", shared.authority, shared.path);
        let mut request = url.as_str().into_client_request()?;
        if let Some((name, value)) = &shared.credential {
            request.headers_mut().insert(*name, value.parse()?);
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            tcp(shared.addr).await?,
            Some(config),
        )
        .await
        .context("WebSocket handshake")?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.as_str().contains("\"ready\"") => {}
            other => anyhow::bail!("expected the ready frame, got {other:?}"),
        }
        ws
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    let mut slow = false;
    loop {
        let next = tokio::select! {
            biased;
            () = &mut stopped => {
                let _ = ws.close(None).await;
                return Ok(End::Open);
            }
            next = ws.next() => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                let bytes = text.as_str().as_bytes();
                let found = tally.scan(bytes, now_us(), histogram);
                if found > 0 {
                    shared.received.fetch_add(found, Ordering::Relaxed);
                } else if memmem::find(bytes, b"slow_consumer").is_some() {
                    slow = true;
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map(|f| u16::from(f.code));
                return Ok(if slow || code == Some(4429) {
                    End::SlowConsumer
                } else {
                    End::Closed(format!("close frame {code:?}"))
                });
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Ok(End::Closed(err.to_string())),
            None => return Ok(End::Closed("connection closed".to_owned())),
        }
    }
}

/// An SSE subscriber: `Err` only when it never connected.
async fn sse_subscriber(
    shared: &Shared,
    histogram: &Mutex<Histogram<u64>>,
    tally: &mut Tally,
) -> anyhow::Result<End> {
    let permit = shared.connecting.acquire().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(
        TokioIo::new(tcp(shared.addr).await?),
    )
    .await
    .context("HTTP handshake")?;
    tokio::pin!(connection);
    let mut request = hyper::Request::get(shared.path.as_str())
        .header(hyper::header::HOST, shared.authority.as_str())
        .header(hyper::header::ACCEPT, "text/event-stream");
    if let Some((name, value)) = &shared.credential {
        request = request.header(*name, value.as_str());
    }
    let request = request.body(Empty::new())?;
    let response = tokio::select! {
        response = sender.send_request(request) => response.context("GET /v1/events")?,
        closed = &mut connection => anyhow::bail!("connection ended before the response: {closed:?}"),
    };
    anyhow::ensure!(
        response.status().is_success(),
        "GET /v1/events: HTTP {}",
        response.status()
    );
    let mut body = response.into_body();
    // Bytes after the last complete SSE message ("\n\n") of what was read.
    let mut carry: Vec<u8> = Vec::new();
    let mut permit = Some(permit);
    let stopped = shared.stop.cancelled();
    tokio::pin!(stopped);
    let end = loop {
        let frame = tokio::select! {
            biased;
            () = &mut stopped => break End::Open,
            closed = &mut connection => break End::Closed(format!("connection ended: {closed:?}")),
            frame = body.frame() => frame,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(err)) => break End::Closed(err.to_string()),
            None => break End::Closed("the stream ended".to_owned()),
        };
        let now = now_us();
        let owned: Vec<u8>;
        let complete: &[u8] = if carry.is_empty() && data.ends_with(b"\n\n") {
            &data
        } else {
            carry.extend_from_slice(&data);
            let Some(last) = memmem::rfind(&carry, b"\n\n") else {
                continue;
            };
            let rest = carry.split_off(last + 2);
            owned = std::mem::replace(&mut carry, rest);
            &owned
        };
        if permit.is_some() && memmem::find(complete, b"event: ready").is_some() {
            permit = None;
            shared.ready.fetch_add(1, Ordering::Relaxed);
        }
        let found = tally.scan(complete, now, histogram);
        if found > 0 {
            shared.received.fetch_add(found, Ordering::Relaxed);
        }
        if memmem::find(complete, b"event: error").is_some() {
            break if memmem::find(complete, b"slow_consumer").is_some() {
                End::SlowConsumer
            } else {
                End::Closed("event: error".to_owned())
            };
        }
    };
    anyhow::ensure!(permit.is_none(), "ended before the ready event: {end:?}");
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_in_both_encodings_and_counted_once() {
        let histogram = Mutex::new(new_histogram());
        let mut tally = Tally::new(3);
        let ws = br#"{"type":"events","events":[{"seq":7,"subject":"events.bench.fanout.x","time":"t","data":{"bench_fanout":[0,100]}},{"seq":8,"subject":"events.bench.fanout.x","time":"t","data":{"bench_fanout":[1,150]}}],"last_seq":8}"#;
        assert_eq!(tally.scan(ws, 1100, &histogram), 2);
        let sse = b"id: 9\nevent: events\ndata: [{\"seq\":9,\"data\":{\"bench_fanout\":[1,150]}},{\"seq\":10,\"data\":{\"bench_fanout\":[9,1]}}]\n\n";
        assert_eq!(tally.scan(sse, 1100, &histogram), 2);
        assert_eq!((tally.unique, tally.duplicates, tally.strays), (2, 1, 1));
        let h = histogram.lock().unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.max(), 1099);
    }

    #[test]
    fn malformed_pairs_are_skipped() {
        assert_eq!(parse_pair(b"12,34]"), Some((12, 34)));
        assert_eq!(parse_pair(b"12,34"), None);
        assert_eq!(parse_pair(b"x,34]"), None);
        assert_eq!(parse_pair(b"99999999999999999999,1]"), None);
    }
}
