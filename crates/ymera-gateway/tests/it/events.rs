//! Event streams (SSE and WebSocket) from `YMERA_EVENTS`: permissions,
//! batches, resume without a gap, a slow client disconnected with a reason;
//! clients: reqwest, httpx-sse and websockets (Python).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Stack, venv_python};

/// One SSE message.
#[derive(Debug, Clone)]
struct SseMessage {
    event: String,
    id: Option<String>,
    data: String,
}

/// A minimal SSE reader over a reqwest response.
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    async fn open(
        url: &str,
        key: Option<&str>,
        last_event_id: Option<u64>,
    ) -> Result<SseReader, (u16, Value)> {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            return Err((status, response.json().await.unwrap_or(Value::Null)));
        }
        Ok(SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        })
    }

    async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut comment = true;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        message.event = v.trim().to_owned();
                        comment = false;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        message.id = Some(v.trim().to_owned());
                        comment = false;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        message.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        comment = false;
                    }
                }
                if comment {
                    continue;
                }
                return Some(message);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events (seq, subject) until `count` arrived.
    async fn events(&mut self, count: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while out.len() < count {
            let message = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended after {} events", out.len()));
            if message.event == "events" {
                let batch: Vec<Value> = serde_json::from_str(&message.data).unwrap();
                assert!(!batch.is_empty());
                assert_eq!(
                    message.id.as_deref(),
                    Some(batch.last().unwrap()["seq"].to_string().as_str())
                );
                for event in batch {
                    out.push((
                        event["seq"].as_u64().unwrap(),
                        event["subject"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        out
    }
}

async fn publish(client: &async_nats::Client, subject: &str, n: usize, size: usize) {
    let filler = "x".repeat(size);
    for i in 0..n {
        client
            .publish(
                subject.to_owned(),
                json!({"i": i, "filler": filler}).to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

async fn create_key(stack: &Stack, owner: &str, permissions: &[&str]) -> String {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", stack.admin.as_str());
    let body = json!({"owner": owner, "permissions": permissions});
    let reply = stack
        .client
        .request_with_headers("security.keys.create", headers, body.to_string().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    reply["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn event_streams_filter_batch_resume_and_drop_slow_clients() {
    let env = [
        ("GATEWAY_EVENTS_BATCH_SIZE", "10"),
        ("GATEWAY_EVENTS_FLUSH_INTERVAL", "20ms"),
        ("GATEWAY_EVENTS_QUEUE", "200"),
        ("GATEWAY_EVENTS_HEARTBEAT", "1s"),
    ];
    let stack = Stack::start(&[], 1, &env).await;
    let url = stack.url().to_owned();
    let admin = stack.admin.clone();
    let reader_key = create_key(&stack, "config-reader", &["config:read"]).await;
    let events_url = format!("{url}/v1/events?subjects=events.>,config.changed.>");

    // Refusals.
    let (status, body) = SseReader::open(&events_url, None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, body) = SseReader::open(
        &format!("{url}/v1/events?subjects=events.security.>"),
        Some(&reader_key),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, _) = SseReader::open(
        &format!("{url}/v1/events?subjects=agent.x.inbox"),
        Some(&admin),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(status, 400);
    let (status, _) = SseReader::open(&events_url, Some("ymk_not_a_key"), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 401);

    // Live: the admin sees everything, the config reader only config.changed.
    let mut everything = SseReader::open(&events_url, Some(&admin), None)
        .await
        .unwrap();
    let mut config_only = SseReader::open(&events_url, Some(&reader_key), None)
        .await
        .unwrap();
    for reader in [&mut everything, &mut config_only] {
        assert_eq!(reader.next().await.unwrap().event, "ready");
    }
    publish(&stack.client, "events.security.test_event", 25, 10).await;
    publish(&stack.client, "config.changed.billing.base", 15, 10).await;
    let seen = everything.events(40).await;
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let filtered = config_only.events(15).await;
    assert!(
        filtered
            .iter()
            .all(|(_, subject)| subject.starts_with("config.changed."))
    );

    // Resume: drop after the first 40, miss 20 events, come back with Last-Event-ID.
    let last = *seqs.last().unwrap();
    drop(everything);
    publish(&stack.client, "events.security.test_event", 20, 10).await;
    let mut resumed = SseReader::open(&events_url, Some(&admin), Some(last))
        .await
        .unwrap();
    assert_eq!(resumed.next().await.unwrap().event, "ready");
    let missed = resumed.events(20).await;
    let expected: Vec<u64> = (last + 1..=last + 20).collect();
    assert_eq!(missed.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expected);
    drop(resumed);

    // Python clients: websockets (with since=) and httpx-sse.
    let script = r#"
import asyncio, json, sys
mode, url, key, since = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
async def ws():
    import websockets
    try:
        sock = await websockets.connect(url + "&token=" + key + "&since=" + since, compression="deflate")
    except websockets.exceptions.InvalidStatus as e:
        print("REFUSED", e.response.status_code, e.response.body, flush=True)
        raise
    async with sock:
        got = []
        while len([s for s, subject in got if subject.endswith("test_event")]) < 5:
            msg = json.loads(await sock.recv())
            if msg["type"] == "ready":
                print("READY", flush=True)
            elif msg["type"] == "events":
                got += [(e["seq"], e["subject"]) for e in msg["events"]]
        print(json.dumps(got), flush=True)
def sse():
    import httpx
    from httpx_sse import connect_sse
    with httpx.Client(timeout=20) as client:
        with connect_sse(client, "GET", url, headers={"X-API-Key": key}) as source:
            got = []
            for event in source.iter_sse():
                if event.event == "ready":
                    print("READY", flush=True)
                elif event.event == "events":
                    got += [(e["seq"], e["subject"]) for e in json.loads(event.data)]
                    if len([s for s, subject in got if subject.endswith("test_event")]) >= 5:
                        break
            print(json.dumps(got), flush=True)
asyncio.run(ws()) if mode == "ws" else sse()
"#;
    let ws_url = format!(
        "{}/v1/events/ws?subjects=events.security.%3E",
        url.replace("http://", "ws://")
    );
    let sse_url = format!("{url}/v1/events?subjects=events.security.>");
    for (mode, target, since) in [
        ("ws", ws_url.as_str(), last + 20),
        ("sse", sse_url.as_str(), 0),
    ] {
        let mut child = Command::new(venv_python())
            .args(["-c", script, mode, target, &admin, &since.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "READY", "{mode}");
        publish(&stack.client, "events.security.test_event", 5, 10).await;
        let got: Vec<(u64, String)> =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let got: Vec<u64> = got.into_iter().map(|(seq, _)| seq).collect();
        assert!(got.len() >= 5, "{mode}: {got:?}");
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{mode}: {got:?}");
        if mode == "ws" {
            assert_eq!(got[0], last + 21, "ws resumed after since");
        }
        assert!(child.wait().unwrap().success());
    }
    std::io::stdout().flush().unwrap();

    // A client that stops reading is dropped with a reason; a reading one gets everything.
    let mut stalled = SseReader::open(&events_url, Some(&admin), None)
        .await
        .unwrap();
    let mut reading = SseReader::open(&events_url, Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(stalled.next().await.unwrap().event, "ready");
    assert_eq!(reading.next().await.unwrap().event, "ready");
    let total = 1500;
    let publisher = {
        let client = stack.client.clone();
        tokio::spawn(async move {
            for _ in 0..(total / 25) {
                publish(&client, "events.security.bulk", 25, 8 * 1024).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let all = reading.events(total).await;
    assert!(all.len() >= total);
    publisher.await.unwrap();
    let mut ended_with = None;
    while let Some(message) = stalled.next().await {
        if message.event == "error" {
            ended_with = Some(serde_json::from_str::<Value>(&message.data).unwrap());
            break;
        }
    }
    let error = ended_with.expect("the stalled client got no error event");
    assert_eq!(
        error["error"]["details"]["reason"], "slow_consumer",
        "{error}"
    );
    assert!(
        stalled.next().await.is_none(),
        "the stream ends after the error"
    );
}

/// Publishes `n` events of about `size` bytes of incompressible text (so
/// permessage-deflate cannot shrink a burst below the sockets' buffers);
/// `data.i` counts from `first`.
async fn publish_noise(
    client: &async_nats::Client,
    subject: &str,
    first: usize,
    n: usize,
    size: usize,
) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ first as u64;
    for i in first..first + n {
        let filler: String = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+/"
                        [(state % 64) as usize],
                )
            })
            .collect();
        client
            .publish(
                subject.to_owned(),
                json!({"i": i, "filler": filler}).to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
}

/// A Python `websockets` client of `/v1/events/ws` (the repo venv's), one of
/// three modes: `read` (offers permessage-deflate, prints the negotiated
/// `Sec-WebSocket-Extensions`, reads `count` events and prints
/// `[[seq, subject, i], …]`), `plain` (the same without offering deflate),
/// `stall` (offers deflate, stops reading until a line on stdin, then reads
/// to the end and prints the close code, reason, last error frame and how
/// many events it got).
const WS_CLIENT: &str = r#"
import asyncio, json, sys
mode, url, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def main():
    import websockets
    compression = None if mode == "plain" else "deflate"
    # max_queue=1: a client that stops calling recv() stops reading its socket.
    sock = await websockets.connect(url + "&token=" + key, compression=compression,
                                    max_queue=1, max_size=None)
    ext = sock.response.headers.get("Sec-WebSocket-Extensions", "")
    print("EXT " + ext, flush=True)
    got, error = [], None
    first = json.loads(await sock.recv())
    assert first["type"] == "ready", first
    print("READY", flush=True)
    if mode == "stall":
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            while True:
                msg = json.loads(await sock.recv())
                if msg["type"] == "events":
                    got += msg["events"]
                elif msg["type"] == "error":
                    error = msg["error"]
        except websockets.exceptions.ConnectionClosed as closed:
            rcvd = closed.rcvd
            print(json.dumps({"code": rcvd.code if rcvd else None,
                              "reason": rcvd.reason if rcvd else None,
                              "error": error, "events": len(got)}), flush=True)
        return
    while len(got) < count:
        msg = json.loads(await sock.recv())
        assert msg["type"] == "events", msg
        got += [[e["seq"], e["subject"], e["data"]["i"]] for e in msg["events"]]
    print(json.dumps(got), flush=True)
    await sock.close()
asyncio.run(main())
"#;

struct PyWs {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    extensions: String,
}

impl PyWs {
    /// Starts the client and waits for its `ready` frame.
    fn start(mode: &str, url: &str, key: &str, count: usize) -> PyWs {
        let mut child = Command::new(venv_python())
            .args(["-c", WS_CLIENT, mode, url, key, &count.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ext = lines.next().unwrap().unwrap();
        let extensions = ext
            .strip_prefix("EXT ")
            .unwrap_or_else(|| panic!("{ext}"))
            .to_owned();
        assert_eq!(lines.next().unwrap().unwrap(), "READY", "{mode}");
        PyWs {
            child,
            lines,
            extensions,
        }
    }

    fn result(&mut self) -> Value {
        let line = self
            .lines
            .next()
            .expect("the client printed nothing")
            .unwrap();
        assert!(self.child.wait().unwrap().success());
        serde_json::from_str(&line).unwrap()
    }
}

/// `<side port>/metrics` value of one unlabelled series.
async fn metric(side: u16, name: &str) -> f64 {
    let (_, text) = ymera_testkit::http_get(side, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn websocket_negotiates_deflate_and_closes_only_the_slow_subscriber() {
    let side = ymera_testkit::free_port().unwrap();
    let side_addr = format!("127.0.0.1:{side}");
    let env = [
        ("GATEWAY_EVENTS_BATCH_SIZE", "10"),
        ("GATEWAY_EVENTS_FLUSH_INTERVAL", "20ms"),
        ("GATEWAY_EVENTS_QUEUE", "200"),
        ("GATEWAY_EVENTS_HEARTBEAT", "1s"),
        ("YMERA_HTTP_ADDR", side_addr.as_str()),
    ];
    let stack = Stack::start(&[], 1, &env).await;
    let ws_url = format!(
        "{}/v1/events/ws?subjects=events.security.%3E",
        stack.url().replace("http://", "ws://")
    );
    let total = 1200;
    let mut readers: Vec<PyWs> = (0..2)
        .map(|_| PyWs::start("read", &ws_url, &stack.admin, total))
        .collect();
    let mut plain = PyWs::start("plain", &ws_url, &stack.admin, total);
    let mut stalled = PyWs::start("stall", &ws_url, &stack.admin, 0);
    // What the server answered the offer with (RFC 7692).
    for client in readers.iter().chain([&stalled]) {
        assert!(
            client.extensions.starts_with("permessage-deflate"),
            "negotiated: {:?}",
            client.extensions
        );
    }
    assert_eq!(plain.extensions, "", "no offer, no extension");

    // 1,200 events of 16 KiB that deflate cannot shrink much (~15 MB on
    // the wire, more than the stalled client's socket buffers take), at a
    // pace reading clients keep up with; then the stalled one reads again.
    for chunk in 0..total / 25 {
        publish_noise(
            &stack.client,
            "events.security.bulk",
            chunk * 25,
            25,
            16 * 1024,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writeln!(stalled.child.stdin.as_mut().unwrap()).unwrap();
    for client in readers.iter_mut().chain([&mut plain]) {
        let got = client.result();
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), total, "every event reaches a reading subscriber");
        for (k, event) in got.iter().enumerate() {
            assert_eq!(event[1], "events.security.bulk");
            assert_eq!(event[2].as_u64(), Some(k as u64), "in order, none lost");
            if k > 0 {
                assert_eq!(
                    event[0].as_u64().unwrap(),
                    got[k - 1][0].as_u64().unwrap() + 1
                );
            }
        }
    }
    // The stalled one got what was in flight, then the reason.
    let ended = stalled.result();
    assert_eq!(ended["code"], 4429, "{ended}");
    assert_eq!(ended["reason"], "slow_consumer", "{ended}");
    assert_eq!(
        ended["error"]["details"]["reason"], "slow_consumer",
        "{ended}"
    );
    assert!(ended["events"].as_u64().unwrap() < total as u64, "{ended}");
    assert!(metric(side, "ymera_gateway_slow_consumers_total").await >= 1.0);
}

#[tokio::test]
async fn a_stalled_sse_client_is_dropped_without_holding_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let side = ymera_testkit::free_port().unwrap();
    let side_addr = format!("127.0.0.1:{side}");
    let env = [
        ("GATEWAY_EVENTS_BATCH_SIZE", "10"),
        ("GATEWAY_EVENTS_FLUSH_INTERVAL", "20ms"),
        ("GATEWAY_EVENTS_QUEUE", "100"),
        ("YMERA_HTTP_ADDR", side_addr.as_str()),
    ];
    let stack = Stack::start(&[], 1, &env).await;
    let addr: std::net::SocketAddr = stack.url().trim_start_matches("http://").parse().unwrap();
    let pid = stack.gateways[0].pid().unwrap();
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };

    // A client that reads the headers and the ready message, then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /v1/events?subjects=events.security.%3E HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {}\r\nAccept: text/event-stream\r\n\r\n",
                stack.admin
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&head).contains("event: ready") {
        let n = stalled.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    let url = format!("{}/v1/events?subjects=events.security.>", stack.url());
    let mut reading = SseReader::open(&url, Some(&stack.admin), None)
        .await
        .unwrap();
    assert_eq!(reading.next().await.unwrap().event, "ready");
    assert_eq!(metric(side, "ymera_gateway_event_subscribers").await, 2.0);
    let before = rss();

    // Events keep coming (8 KiB each, ~2 MB/s) until the stalled client is gone.
    let mut sent = 0usize;
    let mut received = 0usize;
    let started = std::time::Instant::now();
    let mut peak = before;
    while metric(side, "ymera_gateway_event_subscribers").await > 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled client was never dropped"
        );
        publish_noise(&stack.client, "events.security.bulk", sent, 25, 8 * 1024).await;
        sent += 25;
        received += reading.events(sent - received).await.len();
        peak = peak.max(rss());
    }
    assert!(metric(side, "ymera_gateway_slow_consumers_total").await >= 1.0);
    // The reader got every event, and the stalled stream held no backlog.
    assert_eq!(received, sent);
    assert!(
        sent * 8 * 1024 > 8 << 20,
        "only {sent} events sent before the drop"
    );
    // The live ring holds the last GATEWAY_EVENTS_QUEUE (100) events, ~2.4 MB of
    // encodings here, whoever is behind: measured +14–16 MB with the allocator's
    // slack; +55 MB when the ring kept what its slowest reader had not read.
    assert!(
        peak.saturating_sub(before) < 32 * 1024,
        "gateway RSS grew from {before} kB to {peak} kB with a stalled client"
    );
    // The stalled client, reading again, finds its connection ended.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection is still open");
}

/// Two gateway replicas: each serves every live event, and a client whose gateway
/// is killed (kill -9) resumes on the other with `Last-Event-ID` — the events
/// published while it was away arrive once each, in order, with no gap.
#[tokio::test]
async fn a_client_of_a_killed_gateway_resumes_on_the_other_without_a_gap() {
    let env = [
        ("GATEWAY_EVENTS_BATCH_SIZE", "10"),
        ("GATEWAY_EVENTS_FLUSH_INTERVAL", "20ms"),
    ];
    let mut stack = Stack::start(&[], 2, &env).await;
    let admin = stack.admin.clone();
    let url_of = |i: usize| format!("{}/v1/events?subjects=events.security.>", stack.urls[i]);
    let (first_url, second_url) = (url_of(0), url_of(1));
    let mut on_first = SseReader::open(&first_url, Some(&admin), None)
        .await
        .unwrap();
    let mut on_second = SseReader::open(&second_url, Some(&admin), None)
        .await
        .unwrap();
    for reader in [&mut on_first, &mut on_second] {
        assert_eq!(reader.next().await.unwrap().event, "ready");
    }

    publish(&stack.client, "events.security.replicas", 30, 10).await;
    let seen_first = on_first.events(30).await;
    let seen_second = on_second.events(30).await;
    assert_eq!(
        seen_first, seen_second,
        "both replicas serve the same live events"
    );
    let seqs: Vec<u64> = seen_first.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    // The first gateway dies; 30 more events while its client is away.
    stack.gateways[0].kill().unwrap();
    drop(on_first);
    publish(&stack.client, "events.security.replicas", 30, 10).await;
    let live = on_second.events(30).await;
    let last = *seqs.last().unwrap();
    let expected: Vec<u64> = (last + 1..=last + 30).collect();
    assert_eq!(live.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expected);

    // Its client comes back on the second gateway from its last id.
    let mut resumed = SseReader::open(&second_url, Some(&admin), Some(last))
        .await
        .unwrap();
    assert_eq!(resumed.next().await.unwrap().event, "ready");
    let missed = resumed.events(30).await;
    assert_eq!(missed, live, "the missed events, once each, in order");
}
