//! The stored-bytes phase of `ymera bench comm --compression …`: with the
//! recipient's delivery consumer paused, envelopes are parked in `YMERA_MESSAGES`
//! and the stream's size is read (JetStream's `state.bytes` and its files on disk),
//! then the consumer is resumed and every message must arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Serialize;

use super::comm::{BodySize, CommBenchArgs, YmeraPath, send_all, wait_received};
use super::progress;
use crate::context::Context;

/// The stored-bytes phase of one run.
#[derive(Debug, Serialize)]
pub(super) struct StoredResult {
    pub(super) compression: String,
    pub(super) messages: u64,
    /// JetStream's `state.bytes` growth (the messages' own size).
    pub(super) stream_bytes: u64,
    /// Growth of the stream's files on disk.
    pub(super) disk_bytes: u64,
    /// Messages received after the consumer was resumed.
    pub(super) received: u64,
}

/// The stored-bytes phase: `args.stored_messages` envelopes parked in `YMERA_MESSAGES`
/// (the recipient's delivery consumer paused), the stream's growth in `state.bytes` and
/// on disk, then resumed: every message must arrive.
pub(super) async fn stored_bytes(
    args: &CommBenchArgs,
    ctx: &Context,
    client: &async_nats::Client,
    store_dir: &std::path::Path,
    epoch: Instant,
    body: Arc<BodySize>,
    mode: &str,
) -> anyhow::Result<StoredResult> {
    const STREAM: &str = "YMERA_MESSAGES";
    let js = jetstream::new(client.clone());
    let path = YmeraPath::new(client.clone(), epoch, ctx, body).await?;
    let stream = js.get_stream(STREAM).await?;
    let consumer = format!("deliver-{}", path.agent);
    let until = async_nats::datetime::add_std_duration(
        async_nats::datetime::now(),
        Duration::from_secs(600),
    )
    .map_err(|e| anyhow::anyhow!("pause_until: {e}"))?;
    stream
        .pause_consumer(&consumer, until)
        .await
        .map_err(|e| anyhow::anyhow!("pausing {consumer}: {e}"))?;
    let dir = store_dir
        .join("jetstream")
        .join("$G")
        .join("streams")
        .join(STREAM)
        .join("msgs");
    let before_disk = dir_bytes(&dir);
    let before = js.get_stream(STREAM).await?.info().await?.state.clone();
    path.receiver.reset();
    let bar = progress(args.stored_messages, &format!("stored bytes ({mode})"));
    let errors = send_all(args.stored_messages, args.concurrency, &bar, |i| {
        path.send(i)
    })
    .await;
    anyhow::ensure!(
        errors == 0,
        "{errors} sends of the stored-bytes phase failed"
    );
    let after = js.get_stream(STREAM).await?.info().await?.state.clone();
    // Sealed blocks are compressed in the background: wait until the files stop shrinking.
    let mut disk = dir_bytes(&dir);
    let settle = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = dir_bytes(&dir);
        if now == disk || settle.elapsed() > Duration::from_secs(15) {
            break;
        }
        disk = now;
    }
    stream
        .resume_consumer(&consumer)
        .await
        .map_err(|e| anyhow::anyhow!("resuming {consumer}: {e}"))?;
    let received = wait_received(&path.receiver, args.stored_messages, &bar).await;
    bar.finish_and_clear();
    Ok(StoredResult {
        compression: mode.to_owned(),
        messages: args.stored_messages,
        stream_bytes: after.bytes.saturating_sub(before.bytes),
        disk_bytes: disk.saturating_sub(before_disk),
        received,
    })
}

/// Total size of the files in `dir` (0 when it cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub(super) fn print_stored(stored: &[&StoredResult]) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header([
            "YMERA_STREAM_COMPRESSION",
            "messages",
            "state.bytes",
            "on disk",
            "on disk per message",
            "received after resume",
        ]);
    for s in stored {
        table.add_row(vec![
            s.compression.clone(),
            s.messages.to_string(),
            s.stream_bytes.to_string(),
            s.disk_bytes.to_string(),
            format!("{:.0} B", s.disk_bytes as f64 / s.messages.max(1) as f64),
            s.received.to_string(),
        ]);
    }
    println!("{table}");
    if let (Some(none), Some(s2)) = (
        stored.iter().find(|s| s.compression == "none"),
        stored.iter().find(|s| s.compression == "s2"),
    ) {
        println!(
            "S2 stores the same {} messages in {:.1} % of the uncompressed files ({} vs {} bytes on disk)",
            s2.messages,
            100.0 * s2.disk_bytes as f64 / none.disk_bytes.max(1) as f64,
            s2.disk_bytes,
            none.disk_bytes
        );
    }
}
