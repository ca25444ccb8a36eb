//! The fan-out phase of `ymera bench gateway`: `--subscribers` live event
//! streams on one gateway (`--ws-share` of them `GET /v1/events/ws`, the rest
//! `GET /v1/events` SSE), all subscribed to one run-unique subject under
//! `events.bench.fanout`; events published on NATS at `--event-rate` for
//! `--seconds`, each carrying its number and its send time (µs since the
//! epoch, the host's clock); every subscriber checks that it got every
//! event once, and each (event, subscriber) pair's latency is receive time −
//! send time. Baseline in the same run: a plain NATS core subscriber of the
//! same subject, measured the same way.
//!
//! Memory per idle subscriber: the gateway's `VmRSS` (`/proc/<pid>/status`,
//! `--private` only) before any subscriber, after the WebSocket ones are
//! connected and idle, and after the SSE ones too.
//!
//! The client side is kept out of the way: a few tasks, each polling its
//! share of the subscribers as one `FuturesUnordered`; a subscriber holds its
//! socket, a bitset of the events it got and two counters; a frame is
//! searched for the event marker (no JSON parse) and its events recorded in
//! the task's histogram under one lock per frame.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use memchr::memmem;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use ymera_core::client::Credential;

use crate::bench::new_histogram;

/// Where the benchmark's events go (a run-unique last token is added).
pub const SUBJECT_PREFIX: &str = "events.bench.fanout";
/// What precedes `n,t_us]` in an event's encoding (the data is `{"bench_fanout":[n,t_us]}`).
const MARKER: &[u8] = b"\"bench_fanout\":[";
/// Tasks reading the subscribers of one kind.
const TASKS_PER_KIND: usize = 2;
/// Connections being opened at once (the gateway's listen backlog is 1024).
const CONNECTING_AT_ONCE: usize = 64;
/// How long the connections of one kind may take in all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long connected subscribers sit idle before the gateway's memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// After the last publish: give up waiting once nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(MARKER));

/// What the phase is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Subscribers in all.
    pub subscribers: usize,
    /// Share of them on the WebSocket (0.0–1.0); the rest SSE.
    pub ws_share: f64,
    /// Events per second.
    pub event_rate: f64,
    /// Seconds of publishing.
    pub seconds: u64,
    /// The gateway's base URL (`http://host:port`).
    pub base: String,
    /// The gateway's process id, when this process started it.
    pub gateway_pid: Option<u32>,
    /// The nats-server's process id, when this process started it.
    pub nats_pid: Option<u32>,
    /// What `GATEWAY_EVENTS_FLUSH_INTERVAL` is (for the report).
    pub flush_interval: String,
    /// Sent as `X-API-Key` / `Authorization` on every subscription.
    pub credential: Option<Credential>,
}

/// Which endpoint a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ws,
    Sse,
}

/// How a subscriber's stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
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
struct Tally {
    /// Bit n: event n arrived.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    /// Event numbers outside the run (never expected).
    strays: u64,
    events: u64,
}

impl Tally {
    fn new(events: u64) -> Tally {
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
    fn scan(&mut self, frame: &[u8], now_us: u64, histogram: &Mutex<Histogram<u64>>) -> u64 {
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

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The event body of event `n`, sent at `sent_us`.
fn event_body(n: u64, sent_us: u64) -> Bytes {
    Bytes::from(format!("{{\"bench_fanout\":[{n},{sent_us}]}}"))
}

/// What the subscribers of one kind share.
struct Shared {
    kind: Kind,
    authority: String,
    addr: SocketAddr,
    path: String,
    credential: Option<(&'static str, String)>,
    events: u64,
    stop: CancellationToken,
    connecting: Semaphore,
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// Events received by all of them.
    received: AtomicU64,
}

/// One subscriber's result.
struct Outcome {
    unique: u64,
    duplicates: u64,
    strays: u64,
    end: End,
}

/// The subscribers of one kind, read by [`TASKS_PER_KIND`] tasks.
struct Group {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Outcome>, Histogram<u64>)>>,
    count: usize,
}

impl Group {
    fn start(shared: Arc<Shared>, count: usize) -> Group {
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
    async fn connected(&self, bar: &ProgressBar) -> anyhow::Result<()> {
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

    async fn finish(self) -> anyhow::Result<(Vec<Outcome>, Histogram<u64>)> {
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

/// The gateway's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) of a process so far, in seconds
/// (`/proc/<pid>/stat` fields 14 and 15, in USER_HZ = 100 ticks a second on Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU used by the processes of the run while the events were published and
/// delivered, in cores (CPU seconds / wall seconds).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// Wall seconds from the first publish until the last event arrived (or the wait ended).
    pub seconds: f64,
    /// The gateway.
    pub gateway_cores: Option<f64>,
    /// This process: the subscribers, the publisher and the baseline.
    pub client_cores: Option<f64>,
    /// The nats-server.
    pub nats_server_cores: Option<f64>,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (the
/// services a private stack spawns inherit it); returns the soft limit now.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .context("raising RLIMIT_NOFILE")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Latency and delivery of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub target: String,
    /// Subscribers of this target.
    pub subscribers: usize,
    /// Receive − send time percentiles in microseconds, over every (event, subscriber).
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// P99 relative to the baseline's.
    pub p99_vs_baseline: f64,
    /// Events × subscribers.
    pub expected: u64,
    /// (event, subscriber) pairs received at least once.
    pub received: u64,
    /// Pairs never received (including subscribers that never connected).
    pub missing: u64,
    /// Repeated receipts.
    pub duplicates: u64,
    /// Subscribers the gateway ended as `slow_consumer`.
    pub dropped_slow_consumer: usize,
    /// Subscribers whose stream ended otherwise before the end of the run.
    pub closed_early: usize,
    /// Subscribers that never connected.
    pub connect_failures: usize,
}

/// The gateway's resident memory (KiB) and what an idle subscriber costs.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Before any subscriber connected.
    pub rss_before_kib: Option<u64>,
    /// With the WebSocket subscribers connected and idle.
    pub rss_idle_ws_kib: Option<u64>,
    /// With every subscriber connected and idle.
    pub rss_idle_all_kib: Option<u64>,
    /// After the events, subscribers still connected.
    pub rss_end_kib: Option<u64>,
    /// (idle with WebSockets − before) / WebSocket subscribers.
    pub kib_per_idle_ws: Option<f64>,
    /// (idle with all − idle with WebSockets) / SSE subscribers.
    pub kib_per_idle_sse: Option<f64>,
    /// (idle with all − before) / subscribers.
    pub kib_per_idle_subscriber: Option<f64>,
}

/// The phase's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub subscribers: usize,
    pub websocket_subscribers: usize,
    pub sse_subscribers: usize,
    /// Events published.
    pub events: u64,
    /// Asked rate.
    pub event_rate_per_s: f64,
    /// Achieved publish rate.
    pub published_per_s: f64,
    pub subject: String,
    /// The gateway's `GATEWAY_EVENTS_FLUSH_INTERVAL`.
    pub flush_interval: String,
    /// How long connecting every subscriber took, in seconds.
    pub connect_seconds: f64,
    /// Baseline first, then WebSocket, SSE, and every gateway subscriber.
    pub results: Vec<Row>,
    pub memory: Memory,
    pub cpu: Cpu,
    /// Every event reached every subscriber (none missing, none connected late).
    pub every_event_delivered: bool,
    /// The gateway subscribers' P99 ≤ 50 ms.
    pub p99_target_met: bool,
}

fn bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:48} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

fn row(target: &str, outcomes: &[Outcome], histogram: &Histogram<u64>, events: u64) -> Row {
    let expected = events * outcomes.len() as u64;
    let received: u64 = outcomes.iter().map(|o| o.unique).sum();
    Row {
        target: target.to_owned(),
        subscribers: outcomes.len(),
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        p99_vs_baseline: 1.0,
        expected,
        received,
        missing: expected.saturating_sub(received),
        duplicates: outcomes.iter().map(|o| o.duplicates + o.strays).sum(),
        dropped_slow_consumer: outcomes
            .iter()
            .filter(|o| o.end == End::SlowConsumer)
            .count(),
        closed_early: outcomes
            .iter()
            .filter(|o| matches!(o.end, End::Closed(_)))
            .count(),
        connect_failures: outcomes
            .iter()
            .filter(|o| matches!(o.end, End::ConnectFailed(_)))
            .count(),
    }
}

/// The baseline: one NATS core subscriber of the subject.
async fn baseline(
    nats_url: &str,
    subject: &str,
    events: u64,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<(Outcome, Histogram<u64>, u64)>> {
    let client = crate::bench::connect(nats_url).await?;
    let mut sub = client.subscribe(subject.to_owned()).await?;
    client.flush().await?;
    Ok(tokio::spawn(async move {
        let histogram = Mutex::new(new_histogram());
        let mut tally = Tally::new(events);
        let mut received = 0;
        loop {
            let msg = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                msg = sub.next() => msg,
            };
            let Some(msg) = msg else { break };
            received += tally.scan(&msg.payload, now_us(), &histogram);
        }
        drop(client);
        let outcome = Outcome {
            unique: tally.unique,
            duplicates: tally.duplicates,
            strays: tally.strays,
            end: End::Open,
        };
        (
            outcome,
            histogram.into_inner().unwrap_or_else(|e| e.into_inner()),
            received,
        )
    }))
}

/// Runs the phase against the gateway at `plan.base`; events go through `nats`.
pub async fn run(plan: &Plan, nats: &async_nats::Client, nats_url: &str) -> anyhow::Result<Report> {
    let authority = plan
        .base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{}: only http:// URLs", plan.base))?
        .trim_end_matches('/')
        .to_owned();
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&authority)
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority} resolves to nothing"))?;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("{SUBJECT_PREFIX}.{}", &run_id[run_id.len() - 12..]);
    let events = ((plan.event_rate * plan.seconds as f64).round() as u64).max(1);
    let ws_count = ((plan.subscribers as f64) * plan.ws_share.clamp(0.0, 1.0)).round() as usize;
    let sse_count = plan.subscribers - ws_count.min(plan.subscribers);
    let credential = plan.credential.clone().map(|c| match c {
        Credential::ApiKey(key) => ("x-api-key", key),
        Credential::Bearer(token) => ("authorization", format!("Bearer {token}")),
    });
    let stop = CancellationToken::new();
    let shared = |kind: Kind, path: &str| {
        Arc::new(Shared {
            kind,
            authority: authority.clone(),
            addr,
            path: format!("{path}?subjects={subject}"),
            credential: credential.clone(),
            events,
            stop: stop.clone(),
            connecting: Semaphore::new(CONNECTING_AT_ONCE),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            received: AtomicU64::new(0),
        })
    };

    let rss_before = rss_kib(plan.gateway_pid);
    let started = Instant::now();
    let ws = Group::start(shared(Kind::Ws, "/v1/events/ws"), ws_count);
    let connecting = bar(ws_count as u64, "connecting WebSocket subscribers");
    ws.connected(&connecting).await?;
    connecting.finish_and_clear();
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle_ws = rss_kib(plan.gateway_pid);
    let sse = Group::start(shared(Kind::Sse, "/v1/events"), sse_count);
    let connecting = bar(sse_count as u64, "connecting SSE subscribers");
    sse.connected(&connecting).await?;
    connecting.finish_and_clear();
    let connect_seconds = started.elapsed().as_secs_f64()
        - if ws_count > 0 {
            IDLE_SETTLE.as_secs_f64()
        } else {
            0.0
        };
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle_all = rss_kib(plan.gateway_pid);

    let base = baseline(nats_url, &subject, events, stop.clone()).await?;
    let publishing = bar(events, &format!("publishing {events} events on {subject}"));
    let period = Duration::from_secs_f64(1.0 / plan.event_rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu_pids = [plan.gateway_pid, Some(std::process::id()), plan.nats_pid];
    let cpu_before = cpu_pids.map(|pid| pid.and_then(cpu_seconds));
    let published_from = Instant::now();
    for n in 0..events {
        ticker.tick().await;
        nats.publish(subject.clone(), event_body(n, now_us()))
            .await
            .context("publishing an event")?;
        publishing.inc(1);
    }
    nats.flush().await.context("flushing the events")?;
    let published_per_s = events as f64 / published_from.elapsed().as_secs_f64().max(1e-9);
    publishing.finish_and_clear();

    // Until every connected subscriber has every event, or nothing arrives for a while.
    let connected =
        (ws.shared.ready.load(Ordering::Relaxed) + sse.shared.ready.load(Ordering::Relaxed)) as u64;
    let want = connected * events;
    let draining = bar(want, "waiting for the last events");
    let mut last = (0u64, Instant::now());
    loop {
        let got = ws.shared.received.load(Ordering::Relaxed)
            + sse.shared.received.load(Ordering::Relaxed);
        draining.set_position(got.min(want));
        if got >= want || last.1.elapsed() >= DRAIN_QUIET {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late duplicates would come right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    draining.finish_and_clear();
    let busy = published_from.elapsed().as_secs_f64();
    let cpu_after = cpu_pids.map(|pid| pid.and_then(cpu_seconds));
    let cores = |i: usize| match (cpu_before[i], cpu_after[i]) {
        (Some(b), Some(a)) if busy > 0.0 => Some((a - b) / busy),
        _ => None,
    };
    let cpu = Cpu {
        seconds: busy,
        gateway_cores: cores(0),
        client_cores: cores(1),
        nats_server_cores: cores(2),
    };
    let rss_end = rss_kib(plan.gateway_pid);
    stop.cancel();
    let (base_outcome, base_histogram, _) = base.await.context("the baseline subscriber failed")?;
    let (ws_outcomes, ws_histogram) = ws.finish().await?;
    let (sse_outcomes, sse_histogram) = sse.finish().await?;
    let mut all_histogram = ws_histogram.clone();
    all_histogram
        .add(&sse_histogram)
        .context("merging histograms")?;

    let mut results = vec![
        row(
            "NATS core subscriber (baseline)",
            std::slice::from_ref(&base_outcome),
            &base_histogram,
            events,
        ),
        row("gateway WebSocket", &ws_outcomes, &ws_histogram, events),
        row("gateway SSE", &sse_outcomes, &sse_histogram, events),
    ];
    let all: Vec<Outcome> = ws_outcomes.into_iter().chain(sse_outcomes).collect();
    report_endings(&all);
    results.push(row(
        "gateway, every subscriber",
        &all,
        &all_histogram,
        events,
    ));
    let base_p99 = results[0].p99_us.max(1) as f64;
    for r in &mut results {
        r.p99_vs_baseline = r.p99_us as f64 / base_p99;
    }
    let per = |after: Option<u64>, before: Option<u64>, n: usize| match (after, before) {
        (Some(a), Some(b)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    let memory = Memory {
        rss_before_kib: rss_before,
        rss_idle_ws_kib: rss_idle_ws,
        rss_idle_all_kib: rss_idle_all,
        rss_end_kib: rss_end,
        kib_per_idle_ws: per(rss_idle_ws, rss_before, ws_count),
        kib_per_idle_sse: per(rss_idle_all, rss_idle_ws, sse_count),
        kib_per_idle_subscriber: per(rss_idle_all, rss_before, plan.subscribers),
    };
    let gateway = &results[3];
    let every_event_delivered = gateway.missing == 0 && results[0].missing == 0;
    let p99_target_met = gateway.p99_us <= 50_000;
    Ok(Report {
        subscribers: plan.subscribers,
        websocket_subscribers: ws_count,
        sse_subscribers: sse_count,
        events,
        event_rate_per_s: plan.event_rate,
        published_per_s,
        subject,
        flush_interval: plan.flush_interval.clone(),
        connect_seconds,
        results,
        memory,
        cpu,
        every_event_delivered,
        p99_target_met,
    })
}

/// Names on stderr the first few reasons subscribers failed or ended early.
fn report_endings(outcomes: &[Outcome]) {
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for outcome in outcomes {
        let reason = match &outcome.end {
            End::Open => continue,
            End::SlowConsumer => "ended as slow_consumer".to_owned(),
            End::Closed(why) => format!("closed early: {why}"),
            End::ConnectFailed(why) => format!("never connected: {why}"),
        };
        match reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((reason, 1)),
        }
    }
    for (reason, n) in reasons.iter().take(5) {
        eprintln!("{n} subscriber(s) {reason}");
    }
}

/// Prints the report as tables (JSON is printed by the caller).
pub fn print(report: &Report) {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "target",
        "subs",
        "p50",
        "p90",
        "p99",
        "max",
        "p99 vs base",
        "received / expected",
        "missing",
        "dup",
        "slow_consumer",
        "closed",
        "failed",
    ]);
    for r in &report.results {
        table.add_row(vec![
            r.target.clone(),
            r.subscribers.to_string(),
            ms(r.p50_us),
            ms(r.p90_us),
            ms(r.p99_us),
            ms(r.max_us),
            format!("{:.1}x", r.p99_vs_baseline),
            format!("{} / {}", r.received, r.expected),
            r.missing.to_string(),
            r.duplicates.to_string(),
            r.dropped_slow_consumer.to_string(),
            r.closed_early.to_string(),
            r.connect_failures.to_string(),
        ]);
    }
    println!("{table}");
    let kib = |v: Option<u64>| {
        v.map_or("n/a".to_owned(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        })
    };
    let per = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} KiB"));
    let m = &report.memory;
    println!(
        "{} subscribers ({} WebSocket, {} SSE) connected in {:.1} s; {} events at {:.0}/s (asked {:.0}/s) on {}; flush interval {}",
        report.subscribers,
        report.websocket_subscribers,
        report.sse_subscribers,
        report.connect_seconds,
        report.events,
        report.published_per_s,
        report.event_rate_per_s,
        report.subject,
        report.flush_interval
    );
    println!(
        "gateway RSS: {} before, {} with the WebSockets idle, {} with all idle, {} at the end; per idle subscriber: {} (WebSocket {}, SSE {})",
        kib(m.rss_before_kib),
        kib(m.rss_idle_ws_kib),
        kib(m.rss_idle_all_kib),
        kib(m.rss_end_kib),
        per(m.kib_per_idle_subscriber),
        per(m.kib_per_idle_ws),
        per(m.kib_per_idle_sse)
    );
    let cores = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    println!(
        "CPU while publishing and delivering ({:.1} s), in cores: gateway {}, this client {}, nats-server {} (of {} on this machine)",
        report.cpu.seconds,
        cores(report.cpu.gateway_cores),
        cores(report.cpu.client_cores),
        cores(report.cpu.nats_server_cores),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "targets: every event reaches every subscriber: {}; fan-out P99 ≤ 50 ms: {}",
        crate::bench::verdict(report.every_event_delivered),
        crate::bench::verdict(report.p99_target_met)
    );
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
