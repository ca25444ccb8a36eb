//! `ymera backup verify`: every checksum, and each part loaded into scratch servers.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::*;
use manifest::Manifest;

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The manifest's format version.
    pub format_version: u32,
    /// When the archive was created.
    pub created_at: String,
    /// Parts checked.
    pub parts: usize,
    /// Tables restored into the scratch database.
    pub tables: usize,
    /// Their rows.
    pub rows: i64,
    /// Streams restored into the scratch server.
    pub streams: Vec<StreamSummary>,
    /// Wall time.
    pub duration_s: f64,
}

/// `ymera backup verify`: checksums, then the dump restored into a scratch PostgreSQL and
/// every stream snapshot into a scratch nats-server, each compared with the manifest.
pub async fn verify(archive: &Path, show: bool) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let opened = open_archive(archive).await?;
    let manifest = read_manifest(&opened.root).await?;
    let (pg, database_url, nats) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let pg = ymera_devstack::Postgres::start().context("starting a scratch PostgreSQL")?;
        let url = pg.create_database()?;
        let nats = ymera_devstack::NatsServer::start().context("starting a scratch nats-server")?;
        Ok((pg, url, nats))
    })
    .await??;
    let rows = load_postgres(&opened.root, &manifest, &database_url, show).await?;
    let client = async_nats::connect(nats.url()).await?;
    let streams = load_streams(&opened.root, &manifest, &client, 1, show).await?;
    drop(client);
    drop((pg, nats));
    Ok(VerifyReport {
        format_version: manifest.format_version,
        created_at: manifest.created_at.clone(),
        parts: manifest.parts.len(),
        tables: manifest.tables.len(),
        rows,
        streams,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// pg_restore of the archive's dump into `url`, then every table's rows compared with
/// the manifest. Returns the rows.
pub(super) async fn load_postgres(
    root: &Path,
    manifest: &Manifest,
    url: &str,
    show: bool,
) -> anyhow::Result<i64> {
    let part = manifest
        .postgres()
        .context("the manifest lists no PostgreSQL dump")?;
    let mut conn = postgres::connect(url).await?;
    let target_version: i64 =
        sqlx::query_scalar("SELECT current_setting('server_version_num')::bigint")
            .fetch_one(&mut conn)
            .await?;
    let bin_dir = postgres::client_bin_dir(target_version.max(manifest.postgres_server_version))?;
    let pg_bar = bar(show, part.size, "postgres: pg_restore");
    pg_bar.enable_steady_tick(Duration::from_millis(200));
    postgres::restore(
        &bin_dir,
        url,
        &manifest::part_path(root, &part.file)?,
        &pg_bar,
    )
    .await?;
    pg_bar.finish();
    let counts = postgres::count_tables(&mut conn).await?;
    for (table, expected) in &manifest.tables {
        let found = counts.get(table).copied().unwrap_or(-1);
        if found != *expected {
            bail!("table {table} has {found} rows after the restore, the manifest says {expected}");
        }
    }
    Ok(counts.values().sum())
}

/// How long a restored stream's consumers may take to be listed (a cluster assigns them
/// after the restore answered).
const CONSUMERS_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Every stream snapshot restored into `client`'s server and compared with the manifest.
pub(super) async fn load_streams(
    root: &Path,
    manifest: &Manifest,
    client: &async_nats::Client,
    max_replicas: usize,
    show: bool,
) -> anyhow::Result<Vec<StreamSummary>> {
    let mut out = Vec::new();
    for (part, stream) in manifest.streams() {
        let stream_bar = bar(show, part.size, &format!("stream {}", stream.name));
        let file = manifest::part_path(root, &part.file)?;
        let info = jetstream::restore(client, stream, &file, max_replicas, &stream_bar).await?;
        stream_bar.finish();
        let (messages, all_consumers) = jetstream::counts(&info);
        let mut consumers = jetstream::durable_consumers(client, &stream.name).await?;
        // On a cluster the restored consumers are assigned through the meta leader after
        // the restore answered: a short count is looked at again for a while.
        let deadline = std::time::Instant::now() + CONSUMERS_SETTLE;
        while consumers < stream.consumers
            && all_consumers < stream.consumers
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            consumers = jetstream::durable_consumers(client, &stream.name).await?;
        }
        // A stream with max_age (dead letters) or per-message TTLs (agent cards) drops
        // what aged out since the snapshot: fewer messages is expected there, never more.
        let ages = stream.config["max_age"].as_u64().unwrap_or(0) > 0
            || stream.config["allow_msg_ttl"].as_bool().unwrap_or(false);
        let messages_ok = messages == stream.messages || (ages && messages < stream.messages);
        // The manifest counts durable consumers (ephemeral ones, watchers of the backed-up
        // stack's processes, are dropped by the server once nobody reads them); an
        // archive written before counted every consumer, so its figure is met by all of
        // them. More is not a loss (a service of the target stack may open a watcher as
        // soon as the bucket exists); fewer is one.
        let consumers_ok = consumers >= stream.consumers || all_consumers >= stream.consumers;
        if !messages_ok || !consumers_ok {
            bail!(
                "stream {} restored with {messages} messages and {consumers} consumers, the manifest says {} and {}",
                stream.name,
                stream.messages,
                stream.consumers
            );
        }
        out.push(StreamSummary {
            name: stream.name.clone(),
            messages,
            consumers,
            snapshot_bytes: part.size,
        });
    }
    Ok(out)
}
