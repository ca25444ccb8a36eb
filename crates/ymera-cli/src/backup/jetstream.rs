//! The JetStream parts: a server-side snapshot of each platform stream with its consumers
//! (`$JS.API.STREAM.SNAPSHOT`, what `nats stream backup` uses) and its restore
//! (`$JS.API.STREAM.RESTORE`), spoken with raw requests.
//!
//! Snapshot: the request names an inbox; the server (the stream leader in a cluster)
//! answers with the stream's configuration and state, then sends the snapshot (an S2
//! compressed tar of the stream's store and consumer state) to the inbox in chunks. A
//! chunk with a reply subject is acknowledged by publishing to that subject (the server
//! keeps a window of unacknowledged bytes); an empty message ends the snapshot, its
//! status header telling success (none or 204) from failure (408).
//!
//! Restore: the request carries the configuration and state; the server answers with a
//! subject the client sends the chunks to as requests (each answered once stored), then an
//! empty request, answered with the created stream's info or an error.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::manifest::StreamPart;

/// Stream names a platform stream starts with: `YMERA_MESSAGES`, `YMERA_DLQ`,
/// `YMERA_EVENTS`, and the platform's KV buckets (`KV_YMERA_AGENTS`, the agent cards) and
/// object stores.
pub const PLATFORM_PREFIXES: [&str; 3] = ["YMERA_", "KV_YMERA_", "OBJ_YMERA_"];
/// Bytes per snapshot chunk asked for, and per restore chunk sent (at most the server's
/// max_payload).
const CHUNK: usize = 256 * 1024;
/// Longest silence between two snapshot chunks.
const CHUNK_IDLE: Duration = Duration::from_secs(30);
/// How long the server may take to answer an API request.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restore chunk is sent again while the restoring server's deliver subject
/// has no interest on this client's server yet (`send_chunk`).
const DELIVER_INTEREST_WAIT: Duration = Duration::from_secs(10);
/// How long the server may take to load a restored stream after the last chunk.
const RESTORE_FINISH_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest snapshot written (bounds a misbehaving server).
const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024 * 1024;
/// Most streams listed.
const MAX_STREAMS: usize = 10_000;

/// One JetStream API request; an `error` member in the reply is an error.
pub async fn api(client: &async_nats::Client, subject: &str, body: Value) -> anyhow::Result<Value> {
    let reply = tokio::time::timeout(
        API_TIMEOUT,
        client.request(subject.to_owned(), body.to_string().into()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{subject}: no answer within {} s", API_TIMEOUT.as_secs()))?
    .map_err(|e| anyhow::anyhow!("{subject}: {e} (is JetStream enabled?)"))?;
    answer(subject, &reply.payload)
}

/// A JetStream API answer as JSON, or its error as one naming `what`.
fn answer(what: &str, payload: &[u8]) -> anyhow::Result<Value> {
    let value: Value = serde_json::from_slice(payload)
        .with_context(|| format!("{what}: the answer is not JSON"))?;
    if let Some(err) = value.get("error") {
        bail!(
            "{what}: {} (JetStream error {})",
            err["description"].as_str().unwrap_or("unknown error"),
            err["err_code"]
        );
    }
    Ok(value)
}

/// The platform's streams present on the server, sorted.
pub async fn platform_streams(client: &async_nats::Client) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    loop {
        let page = api(
            client,
            "$JS.API.STREAM.NAMES",
            json!({"offset": names.len()}),
        )
        .await?;
        let batch: Vec<String> = page["streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        let empty = batch.is_empty();
        names.extend(batch);
        if empty || names.len() >= total || names.len() >= MAX_STREAMS {
            break;
        }
    }
    names.retain(|n| is_platform_stream(n));
    names.sort();
    Ok(names)
}

/// Whether `name` is a platform stream.
pub fn is_platform_stream(name: &str) -> bool {
    PLATFORM_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The stream's info, `None` if it does not exist.
pub async fn stream_info(client: &async_nats::Client, name: &str) -> anyhow::Result<Option<Value>> {
    match api(client, &format!("$JS.API.STREAM.INFO.{name}"), json!({})).await {
        Ok(info) => Ok(Some(info)),
        Err(err) if err.to_string().contains("10059") => Ok(None),
        Err(err) => Err(err),
    }
}

/// Deletes a stream (and its consumers).
pub async fn delete_stream(client: &async_nats::Client, name: &str) -> anyhow::Result<()> {
    api(client, &format!("$JS.API.STREAM.DELETE.{name}"), json!({})).await?;
    Ok(())
}

/// The durable consumers of `stream`. The manifest counts only these: an ephemeral one
/// (a service's key-value watcher) belongs to a process of the stack that was backed
/// up, and a restored copy of it is dropped by the server once nobody reads it.
pub async fn durable_consumers(client: &async_nats::Client, stream: &str) -> anyhow::Result<u64> {
    let mut durable = 0u64;
    let mut offset = 0u64;
    loop {
        let page = api(
            client,
            &format!("$JS.API.CONSUMER.LIST.{stream}"),
            json!({ "offset": offset }),
        )
        .await?;
        let consumers = page["consumers"].as_array().cloned().unwrap_or_default();
        durable += consumers
            .iter()
            .filter(|c| {
                c["config"]["durable_name"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty())
            })
            .count() as u64;
        offset += consumers.len() as u64;
        if consumers.is_empty() || offset >= page["total"].as_u64().unwrap_or(0) {
            return Ok(durable);
        }
    }
}

/// Snapshots `stream` with its consumers into `file`; returns the part's description
/// and the file's sha256 and size.
pub async fn snapshot(
    client: &async_nats::Client,
    stream: &str,
    file: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<(StreamPart, String, u64)> {
    // Counted before the snapshot: a durable consumer made meanwhile is in it too.
    let durable = durable_consumers(client, stream)
        .await
        .with_context(|| format!("listing the consumers of {stream}"))?;
    let inbox = client.new_inbox();
    let mut chunks = client.subscribe(inbox.clone()).await?;
    client.flush().await?;
    let reply = api(
        client,
        &format!("$JS.API.STREAM.SNAPSHOT.{stream}"),
        json!({"deliver_subject": inbox, "no_consumers": false, "chunk_size": CHUNK}),
    )
    .await
    .with_context(|| format!("snapshot of {stream}"))?;
    let config = reply["config"].clone();
    let state = reply["state"].clone();
    let mut out = tokio::fs::File::create(file)
        .await
        .with_context(|| format!("creating {}", file.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let message = tokio::time::timeout(CHUNK_IDLE, chunks.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "snapshot of {stream}: no chunk for {} s",
                    CHUNK_IDLE.as_secs()
                )
            })?
            .with_context(|| format!("snapshot of {stream}: the subscription ended"))?;
        if message.payload.is_empty() {
            if let Some(status) = message.status
                && status.as_u16() >= 400
            {
                bail!(
                    "snapshot of {stream} failed: status {status} {}",
                    message.description.unwrap_or_default()
                );
            }
            break;
        }
        size += message.payload.len() as u64;
        if size > MAX_SNAPSHOT_BYTES {
            bail!("snapshot of {stream} is larger than {MAX_SNAPSHOT_BYTES} bytes");
        }
        hasher.update(&message.payload);
        out.write_all(&message.payload).await?;
        bar.inc(message.payload.len() as u64);
        if let Some(ack) = message.reply {
            client.publish(ack, Bytes::new()).await?;
        }
    }
    out.flush().await?;
    out.sync_all().await?;
    drop(chunks);
    let part = StreamPart {
        name: stream.to_owned(),
        messages: state["messages"].as_u64().unwrap_or(0),
        bytes: state["bytes"].as_u64().unwrap_or(0),
        consumers: durable,
        config,
        state,
    };
    Ok((part, super::manifest::hex(&hasher.finalize()), size))
}

/// Restores the snapshot in `file` as stream `part.name` with at most `max_replicas`
/// replicas; returns the created stream's info. The stream must not exist.
pub async fn restore(
    client: &async_nats::Client,
    part: &StreamPart,
    file: &Path,
    max_replicas: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Value> {
    let name = &part.name;
    let mut config = part.config.clone();
    let replicas = config["num_replicas"].as_u64().unwrap_or(1).max(1);
    config["num_replicas"] = json!(replicas.min(max_replicas.max(1) as u64));
    let reply = api(
        client,
        &format!("$JS.API.STREAM.RESTORE.{name}"),
        json!({"config": config, "state": part.state}),
    )
    .await
    .with_context(|| format!("restore of {name}"))?;
    let deliver = reply["deliver_subject"]
        .as_str()
        .with_context(|| format!("restore of {name}: the server named no deliver subject"))?
        .to_owned();
    let max_payload = client.server_info().max_payload.max(1024);
    let chunk_size = CHUNK.min(max_payload - 512);
    let mut input = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; chunk_size];
    loop {
        let n = read_full(&mut input, &mut buf).await?;
        if n == 0 {
            break;
        }
        let answer = send_chunk(
            client,
            &deliver,
            Bytes::copy_from_slice(&buf[..n]),
            API_TIMEOUT,
        )
        .await
        .with_context(|| format!("restore of {name}"))?;
        if !answer.payload.is_empty()
            && let Ok(value) = serde_json::from_slice::<Value>(&answer.payload)
            && let Some(err) = value.get("error")
        {
            bail!(
                "restore of {name}: {}",
                err["description"].as_str().unwrap_or("refused")
            );
        }
        bar.inc(n as u64);
    }
    // The empty message ends the upload; the answer is the restored stream's info.
    let done = send_chunk(client, &deliver, Bytes::new(), RESTORE_FINISH_TIMEOUT)
        .await
        .with_context(|| format!("restore of {name}"))?;
    answer(&format!("restore of {name}"), &done.payload)
}

/// Sends one snapshot chunk to the restoring server and waits for its acknowledgement.
/// On a cluster the server that answered `STREAM.RESTORE` may not be the one this client
/// is connected to, and the deliver subject's interest reaches the client's server over
/// the route a moment after the answer: until then a chunk gets "no responders". Such a
/// chunk was received by nobody, so it is sent again (every 100 ms, for up to
/// `DELIVER_INTEREST_WAIT`); any other failure ends the restore.
async fn send_chunk(
    client: &async_nats::Client,
    deliver: &str,
    chunk: Bytes,
    timeout: Duration,
) -> anyhow::Result<async_nats::Message> {
    let deadline = tokio::time::Instant::now() + DELIVER_INTEREST_WAIT;
    loop {
        let sent = tokio::time::timeout(timeout, client.request(deliver.to_owned(), chunk.clone()))
            .await
            .map_err(|_| anyhow::anyhow!("no acknowledgement within {} s", timeout.as_secs()))?;
        match sent {
            Ok(answer) => return Ok(answer),
            Err(e)
                if e.kind() == async_nats::client::RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("{e}"),
        }
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// The stream's message and consumer counts from its info.
pub fn counts(info: &Value) -> (u64, u64) {
    (
        info["state"]["messages"].as_u64().unwrap_or(0),
        info["state"]["consumer_count"].as_u64().unwrap_or(0),
    )
}
