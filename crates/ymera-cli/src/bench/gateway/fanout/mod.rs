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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use ymera_core::client::Credential;
use ymera_core::metrics::ProcessStats;

use crate::bench::{new_histogram, progress};

use self::report::{Cpu, Memory, Report, report_endings, row};
use self::subscribers::{
    CONNECTING_AT_ONCE, End, Group, Kind, Outcome, Shared, Tally, event_body, now_us,
};

mod report;
mod subscribers;

pub use self::report::print;

/// Where the benchmark's events go (a run-unique last token is added).
pub const SUBJECT_PREFIX: &str = "events.bench.fanout";
/// How long connected subscribers sit idle before the gateway's memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// After the last publish: give up waiting once nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(5);
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

/// The gateway's resident memory in KiB.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    ProcessStats::of(pid?).map(|p| p.resident_bytes / 1024)
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
    let connecting = progress(ws_count as u64, "connecting WebSocket subscribers");
    ws.connected(&connecting).await?;
    connecting.finish_and_clear();
    tokio::time::sleep(IDLE_SETTLE).await;
    let rss_idle_ws = rss_kib(plan.gateway_pid);
    let sse = Group::start(shared(Kind::Sse, "/v1/events"), sse_count);
    let connecting = progress(sse_count as u64, "connecting SSE subscribers");
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
    let publishing = progress(events, &format!("publishing {events} events on {subject}"));
    let period = Duration::from_secs_f64(1.0 / plan.event_rate.max(0.001));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu_pids = [plan.gateway_pid, Some(std::process::id()), plan.nats_pid];
    let cpu_before = cpu_pids.map(|pid| pid.and_then(ProcessStats::of).map(|p| p.cpu_seconds));
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
    let draining = progress(want, "waiting for the last events");
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
    let cpu_after = cpu_pids.map(|pid| pid.and_then(ProcessStats::of).map(|p| p.cpu_seconds));
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
