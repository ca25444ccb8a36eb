//! The local stack's side of `ymera health`: when `ymera up` runs (its `stack.json` is in
//! the state directory), every nats-server's `/healthz` and every service instance's own
//! HTTP `/health` port, so each replica of a `--cluster 3 --replicas 2` stack shows.

use std::time::Duration;

use comfy_table::{Cell, Color, Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ymera_devstack::StackInfo;

use crate::context::state_dir;

/// How long one HTTP probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes read of a probe's answer (the status line is all that is used).
const MAX_ANSWER: usize = 4096;

/// One probed process of the local stack.
#[derive(Debug, Serialize)]
pub struct StackProbe {
    /// `nats-server n1`, `ymera-config #2`, …
    pub component: String,
    /// What was asked.
    pub url: String,
    /// `healthy` (200), or what went wrong.
    pub status: String,
}

impl StackProbe {
    /// True when the probe answered 200.
    pub fn healthy(&self) -> bool {
        self.status == "healthy"
    }
}

/// Probes the stack described in the state directory; `None` without a running stack.
pub async fn probe_local_stack() -> Option<Vec<StackProbe>> {
    let info = StackInfo::read(&state_dir())?;
    if !std::path::Path::new(&format!("/proc/{}", info.pid)).exists() {
        return None;
    }
    let mut probes = Vec::new();
    for node in &info.nats_servers {
        let label = if node.name.is_empty() {
            "nats-server".to_owned()
        } else {
            format!("nats-server {}", node.name)
        };
        probes.push(probe(label, node.monitor_port, "/healthz").await);
    }
    let several = |name: &str| info.services.iter().filter(|(n, _)| n == name).count() > 1;
    let mut seen: Vec<&str> = Vec::new();
    for (name, port) in &info.services {
        seen.push(name);
        let label = if several(name) {
            let instance = seen.iter().filter(|n| **n == name.as_str()).count();
            format!("ymera-{name} #{instance}")
        } else {
            format!("ymera-{name}")
        };
        probes.push(probe(label, *port, "/health").await);
    }
    Some(probes)
}

async fn probe(component: String, port: u16, path: &str) -> StackProbe {
    let url = format!("http://127.0.0.1:{port}{path}");
    let status = match tokio::time::timeout(PROBE_TIMEOUT, http_status(port, path)).await {
        Ok(Ok(200)) => "healthy".to_owned(),
        Ok(Ok(code)) => format!("HTTP {code}"),
        Ok(Err(err)) => format!("unreachable: {err}"),
        Err(_) => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
    };
    StackProbe {
        component,
        url,
        status,
    }
}

/// The status code of `GET <path>` on 127.0.0.1:`port`.
async fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Prints the probes as a table.
pub fn print(probes: &[StackProbe]) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["local stack process", "probe", "status"]);
    for probe in probes {
        let color = if probe.healthy() {
            Color::Green
        } else {
            Color::Red
        };
        table.add_row(vec![
            Cell::new(&probe.component),
            Cell::new(&probe.url),
            Cell::new(&probe.status).fg(color),
        ]);
    }
    println!("{table}");
}
