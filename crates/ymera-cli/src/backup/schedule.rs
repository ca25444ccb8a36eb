//! `ymera backup schedule`: create every interval with retention, and the metrics of the last good backup.

use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use super::*;
use crate::context::Context;

/// What the scheduler reports on `/metrics`.
#[derive(Debug, Default)]
struct ScheduleStatus {
    /// Unix time of the last success (from `last-good.json` at start; the scheduler's
    /// start when there is none, so a fresh deployment is not stale at once).
    last_success: i64,
    last_attempt: i64,
    last_size: u64,
    last_duration_s: f64,
    failures: u64,
    successes: u64,
}

impl ScheduleStatus {
    fn render(&self) -> String {
        format!(
            "# HELP ymera_backup_last_success_timestamp_seconds When the last successful backup finished (the scheduler's start before the first).\n\
             # TYPE ymera_backup_last_success_timestamp_seconds gauge\n\
             ymera_backup_last_success_timestamp_seconds {}\n\
             # HELP ymera_backup_last_attempt_timestamp_seconds When the last backup attempt ended.\n\
             # TYPE ymera_backup_last_attempt_timestamp_seconds gauge\n\
             ymera_backup_last_attempt_timestamp_seconds {}\n\
             # HELP ymera_backup_last_size_bytes Bytes of the last successful archive.\n\
             # TYPE ymera_backup_last_size_bytes gauge\n\
             ymera_backup_last_size_bytes {}\n\
             # HELP ymera_backup_last_duration_seconds Wall time of the last successful backup.\n\
             # TYPE ymera_backup_last_duration_seconds gauge\n\
             ymera_backup_last_duration_seconds {:.3}\n\
             # HELP ymera_backup_runs_total Backups attempted by this scheduler, by outcome.\n\
             # TYPE ymera_backup_runs_total counter\n\
             ymera_backup_runs_total{{outcome=\"success\"}} {}\n\
             ymera_backup_runs_total{{outcome=\"failure\"}} {}\n",
            self.last_success,
            self.last_attempt,
            self.last_size,
            self.last_duration_s,
            self.successes,
            self.failures
        )
    }
}

/// `ymera backup schedule`.
pub(super) async fn schedule(args: ScheduleArgs, ctx: &Context) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let last_good = std::fs::read(args.create.out.join(LAST_GOOD_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["finished_at"].as_str().map(str::to_owned))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp());
    let status = Arc::new(Mutex::new(ScheduleStatus {
        last_success: last_good.unwrap_or_else(|| Utc::now().timestamp()),
        ..ScheduleStatus::default()
    }));
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let status = status.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = status.lock().unwrap_or_else(|p| p.into_inner()).render();
                tokio::spawn(serve_metrics(stream, body));
            }
        });
        eprintln!("serving backup metrics on http://{addr}/metrics");
    }
    let mut quiet = ctx.clone();
    quiet.args.json = true;
    loop {
        let outcome = create(&args.create, &quiet).await;
        {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.last_attempt = Utc::now().timestamp();
            match &outcome {
                Ok(summary) => {
                    s.successes += 1;
                    s.last_success = s.last_attempt;
                    s.last_size = summary.size_bytes;
                    s.last_duration_s = summary.duration_s;
                }
                Err(_) => s.failures += 1,
            }
        }
        match outcome {
            Ok(summary) => println!(
                "{} backup {} ({:.1} MB in {:.1} s; {} old archives removed)",
                now_rfc3339(),
                summary.archive.display(),
                summary.size_bytes as f64 / 1e6,
                summary.duration_s,
                summary.pruned.len()
            ),
            Err(err) => eprintln!("{} backup failed: {err:#}", now_rfc3339()),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.every_s)) => {}
            _ = shutdown_signal() => return Ok(()),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Answers one HTTP request with the metrics text (any path; at most 8 KiB read).
async fn serve_metrics(mut stream: tokio::net::TcpStream, body: String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
