//! `ymera backup create | verify | restore` (DESIGN.md §10).
//!
//! An archive is a directory `ymera-backup-<UTC time>/` (or the same packed in a `.tar`
//! with `--tar`) holding `manifest.json`, `postgres.dump` (pg_dump custom format) and
//! `streams/<stream>.snapshot` (the JetStream server's own snapshot of the stream with
//! its consumers, S2-compressed).
//!
//! Order inside `create`, and why (ARCHITECTURE.md "Backups" states it for users):
//! 1. a REPEATABLE READ transaction exports its snapshot and counts every table in it;
//!    `pg_dump --snapshot` dumps exactly that snapshot (its instant is in the manifest);
//! 2. then every platform stream is snapshotted, one after another: `YMERA_MESSAGES`
//!    first, `YMERA_DLQ` second (a copy dead-lettered in between is in both), then the
//!    rest.
//!
//! Everything committed before `create` started is in the dump, and every copy accepted
//! before it started is either in a stream snapshot or was acknowledged by its recipient
//! before that snapshot: nothing accepted before `create` started is missing. A copy
//! accepted between the two instants is in the stream but not in the dump's history;
//! a copy delivered between them is marked pending in the dump but no longer in the
//! stream (it was delivered); a copy in flight (delivered, not yet acknowledged) at the
//! stream snapshot is redelivered after a restore (at least once).

mod jetstream;
mod manifest;
mod postgres;
mod schedule;
mod verify;

use schedule::schedule;
pub use verify::verify;
use verify::{load_postgres, load_streams};

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use ymera_devstack::{StackInfo, StackOptions};

use crate::context::{Context, state_dir};
use manifest::{FORMAT_VERSION, MANIFEST_FILE, Manifest, POSTGRES_FILE, Part, Timeline};

/// The name every archive starts with (retention only ever removes these).
pub const ARCHIVE_PREFIX: &str = "ymera-backup-";
/// The status file `create` writes beside its archives after each success.
pub const LAST_GOOD_FILE: &str = "last-good.json";
/// The Prometheus textfile `create` writes beside its archives after each success.
pub const METRICS_FILE: &str = "ymera_backup.prom";
/// Most archives `--keep` may keep.
const MAX_KEEP: usize = 10_000;
/// Most entries unpacked from a `.tar`.
const MAX_TAR_ENTRIES: usize = 100_000;

/// `ymera backup …`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// Write an archive: a PostgreSQL dump and a snapshot of every platform stream with
    /// its consumers, taken while the platform keeps running.
    Create(CreateArgs),
    /// Check an archive: every checksum, and each part loaded into scratch servers
    /// (the live stack is not touched).
    Verify(VerifyArgs),
    /// Bring the platform back from an archive into an empty stack (`--replace` for a
    /// non-empty one).
    Restore(RestoreArgs),
    /// Run `create` every `--every-s` seconds (with `--keep` retention) and serve the
    /// last good backup's time as Prometheus metrics (the compose `backup` profile).
    Schedule(ScheduleArgs),
}

/// Options of `ymera backup schedule`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Seconds between two backups (the first runs at start).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=2_678_400))]
    pub every_s: u64,
    /// Serve `GET /metrics` (Prometheus text) on this address.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Where the platform is.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// State directory of a local stack (`ymera up --dir`): NATS and PostgreSQL are taken
    /// from its stack.json.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The platform's PostgreSQL URL (default: POSTGRES_URL, DATABASE_URL, else the local
    /// stack's).
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Options of `ymera backup create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Directory the archive is written into (as `ymera-backup-<UTC time>`).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Pack the archive into one `.tar` file.
    #[arg(long)]
    pub tar: bool,
    /// Milliseconds to wait before the database snapshot, so that writes the services
    /// queue asynchronously (the communication journal's history rows) for requests
    /// answered before `create` started are committed and in the dump.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub settle_ms: u64,
    /// After a successful backup, keep only the newest N archives in `--out`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_KEEP as u64))]
    pub keep: Option<u64>,
}

/// Options of `ymera backup verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The archive: a directory or a `.tar`.
    pub archive: PathBuf,
}

/// Options of `ymera backup restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The archive: a directory or a `.tar`.
    pub archive: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Overwrite a stack that holds data (its tables and platform streams are replaced).
    #[arg(long)]
    pub replace: bool,
    /// With `--dir` naming a stack that is not running: the number of nats-servers to
    /// start for the restore (as `ymera up --cluster`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
    pub cluster: u16,
}

/// `pg_dump --format=custom` alone (the baseline of `ymera bench backup`).
pub async fn pg_dump(
    bin_dir: &Path,
    url: &str,
    file: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(bin_dir.join("pg_dump"));
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--file={}", file.display()))
        .arg(format!("--dbname={url}"));
    postgres::run_plain(command, "pg_dump", bar).await
}

/// `pg_restore` alone, with the flags `restore` uses (the baseline of `ymera bench backup`).
pub async fn pg_restore(
    bin_dir: &Path,
    url: &str,
    file: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    postgres::restore(bin_dir, url, file, bar).await
}

/// Runs one backup command.
pub async fn run(command: BackupCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {
        BackupCommand::Create(args) => {
            let summary = create(&args, ctx).await?;
            print_summary(ctx, &summary)?;
        }
        BackupCommand::Verify(args) => {
            let report = verify(&args.archive, !ctx.json()).await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: ok — {} parts, {} tables ({} rows), {} streams ({} messages) loaded into scratch servers",
                    args.archive.display(),
                    report.parts,
                    report.tables,
                    report.rows,
                    report.streams.len(),
                    report.streams.iter().map(|s| s.messages).sum::<u64>()
                );
            }
        }
        BackupCommand::Schedule(args) => schedule(args, ctx).await?,
        BackupCommand::Restore(args) => {
            let report = restore(&args, ctx).await?;
            if ctx.json() {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "restored {} ({} tables, {} rows; {} streams, {} messages) in {:.1} s",
                    args.archive.display(),
                    report.tables,
                    report.rows,
                    report.streams.len(),
                    report.streams.iter().map(|s| s.messages).sum::<u64>(),
                    report.duration_s
                );
                println!(
                    "start (or restart) the platform's services now: caches in running services hold the replaced state"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The platform's NATS and PostgreSQL.
struct Endpoints {
    nats_url: String,
    database_url: String,
}

/// Where the platform is: `--dir`'s stack.json, else the global NATS URL and the
/// database from `--database-url`, POSTGRES_URL, DATABASE_URL or `.ymera/stack.json`.
/// `None` when `--dir` names a stack that is not running.
fn endpoints(target: &TargetArgs, ctx: &Context) -> anyhow::Result<Option<Endpoints>> {
    if let Some(dir) = &target.dir {
        let Some(info) = StackInfo::read(dir).filter(|i| pid_alive(i.pid)) else {
            return Ok(None);
        };
        return Ok(Some(Endpoints {
            nats_url: info.nats_url,
            database_url: target.database_url.clone().unwrap_or(info.postgres_url),
        }));
    }
    let database_url = target
        .database_url
        .clone()
        .or_else(|| std::env::var("POSTGRES_URL").ok())
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .or_else(|| StackInfo::read(&state_dir()).map(|i| i.postgres_url))
        .context("no database: pass --database-url or --dir, or set POSTGRES_URL")?;
    Ok(Some(Endpoints {
        nats_url: ctx.args.nats_url.clone(),
        database_url,
    }))
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn connect_nats(ctx: &Context, url: &str) -> anyhow::Result<async_nats::Client> {
    let mut ctx = ctx.clone();
    ctx.args.nats_url = url.to_owned();
    ctx.nats().await
}

fn bar(show: bool, len: u64, message: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:<32} {bar:30} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed:>4}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_owned());
    bar
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What `create` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CreateSummary {
    /// The archive (directory or `.tar`).
    pub archive: PathBuf,
    /// When `create` started.
    pub created_at: String,
    /// Bytes of every part.
    pub size_bytes: u64,
    /// Wall time.
    pub duration_s: f64,
    /// Of which pg_dump.
    pub dump_s: f64,
    /// Of which the stream snapshots.
    pub streams_s: f64,
    /// Rows per table at the dump's snapshot (their sum).
    pub rows: i64,
    /// Tables in the dump.
    pub tables: usize,
    /// Every stream part.
    pub streams: Vec<StreamSummary>,
    /// Archives removed by `--keep`.
    pub pruned: Vec<PathBuf>,
    /// The instants of the phases.
    pub timeline: Timeline,
}

/// One stream in a summary.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    /// Stream name.
    pub name: String,
    /// Messages.
    pub messages: u64,
    /// Consumers.
    pub consumers: u64,
    /// Snapshot bytes.
    pub snapshot_bytes: u64,
}

fn print_summary(ctx: &Context, summary: &CreateSummary) -> anyhow::Result<()> {
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    println!(
        "backup {} — {:.1} MB in {:.1} s (dump {:.1} s, streams {:.1} s)",
        summary.archive.display(),
        summary.size_bytes as f64 / 1e6,
        summary.duration_s,
        summary.dump_s,
        summary.streams_s
    );
    println!(
        "  postgres: {} tables, {} rows at {}",
        summary.tables, summary.rows, summary.timeline.dump_snapshot_at
    );
    for s in &summary.streams {
        println!(
            "  stream {}: {} messages, {} consumers ({:.1} MB)",
            s.name,
            s.messages,
            s.consumers,
            s.snapshot_bytes as f64 / 1e6
        );
    }
    for p in &summary.pruned {
        println!("  removed old archive {}", p.display());
    }
    Ok(())
}

/// `ymera backup create`.
pub async fn create(args: &CreateArgs, ctx: &Context) -> anyhow::Result<CreateSummary> {
    let started = Instant::now();
    let created_at = now_rfc3339();
    let show = !ctx.json();
    let endpoints = endpoints(&args.target, ctx)?.with_context(|| {
        format!(
            "no stack is running from {}",
            args.target
                .dir
                .as_deref()
                .unwrap_or(Path::new("."))
                .display()
        )
    })?;
    let client = connect_nats(ctx, &endpoints.nats_url).await?;
    let mut streams = jetstream::platform_streams(&client).await?;
    // Copies move from YMERA_MESSAGES to YMERA_DLQ on their own (dead-lettering): the
    // source first, so a copy moving between the two snapshots is in both, never in
    // neither. (A DLQ replay moves the other way: see ARCHITECTURE.md "Backups".)
    streams.sort_by_key(|n| (n != "YMERA_MESSAGES", n != "YMERA_DLQ", n.clone()));

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let name = format!(
        "{ARCHIVE_PREFIX}{}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let work = args.out.join(format!("{name}.partial"));
    std::fs::create_dir_all(work.join("streams"))
        .with_context(|| format!("creating {}", work.display()))?;
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let result = create_parts(&work, &endpoints, &client, &streams, show).await;
    let (mut parts, snapshot, timeline, dump_s, streams_s) = match result {
        Ok(done) => done,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(err);
        }
    };
    parts.sort_by_key(|p| p.kind != "postgres");
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        created_at: created_at.clone(),
        ymera_version: env!("CARGO_PKG_VERSION").to_owned(),
        timeline: timeline.clone(),
        parts,
        tables: snapshot.0.clone(),
        postgres_server_version: snapshot.1,
    };
    manifest.write(&work)?;
    let archive = if args.tar {
        let tar = args.out.join(format!("{name}.tar"));
        pack_tar(&work, &name, &tar).await?;
        std::fs::remove_dir_all(&work)?;
        tar
    } else {
        let dir = args.out.join(&name);
        std::fs::rename(&work, &dir)?;
        dir
    };
    let size_bytes: u64 = manifest.parts.iter().map(|p| p.size).sum();
    let duration = started.elapsed();
    write_status(&args.out, &archive, &manifest, size_bytes, duration)?;
    let pruned = match args.keep {
        Some(keep) => prune(&args.out, keep as usize)?,
        None => Vec::new(),
    };
    Ok(CreateSummary {
        archive,
        created_at,
        size_bytes,
        duration_s: duration.as_secs_f64(),
        dump_s,
        streams_s,
        rows: manifest.tables.values().sum(),
        tables: manifest.tables.len(),
        streams: manifest
            .streams()
            .map(|(p, s)| StreamSummary {
                name: s.name.clone(),
                messages: s.messages,
                consumers: s.consumers,
                snapshot_bytes: p.size,
            })
            .collect(),
        pruned,
        timeline,
    })
}

type Parts = (
    Vec<Part>,
    (std::collections::BTreeMap<String, i64>, i64),
    Timeline,
    f64,
    f64,
);

async fn create_parts(
    work: &Path,
    endpoints: &Endpoints,
    client: &async_nats::Client,
    streams: &[String],
    show: bool,
) -> anyhow::Result<Parts> {
    let mut parts = Vec::new();
    // 1. The database, at one exported snapshot.
    let dump_started = Instant::now();
    let snapshot = postgres::export_snapshot(&endpoints.database_url).await?;
    let bin_dir = postgres::client_bin_dir(snapshot.server_version)?;
    let dump_file = work.join(POSTGRES_FILE);
    let pg_bar = bar(show, 0, "postgres: pg_dump");
    pg_bar.set_style(
        ProgressStyle::with_template("{msg:<32} {spinner} {bytes:>10} {elapsed:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pg_bar.enable_steady_tick(Duration::from_millis(200));
    let (sha256, size) = postgres::dump(
        &bin_dir,
        &endpoints.database_url,
        Some(&snapshot.id),
        &dump_file,
        &pg_bar,
    )
    .await?;
    pg_bar.finish();
    let dump_finished_at = now_rfc3339();
    let dump_snapshot_at = snapshot.at.clone();
    let tables = (snapshot.tables.clone(), snapshot.server_version);
    snapshot.finish().await?;
    let dump_s = dump_started.elapsed().as_secs_f64();
    parts.push(Part {
        file: POSTGRES_FILE.to_owned(),
        kind: "postgres".to_owned(),
        size,
        sha256,
        stream: None,
    });

    // 2. Every platform stream, after the database snapshot.
    let streams_started = Instant::now();
    let streams_started_at = now_rfc3339();
    for stream in streams {
        let info = jetstream::stream_info(client, stream).await?;
        let bytes = info
            .as_ref()
            .and_then(|i| i["state"]["bytes"].as_u64())
            .unwrap_or(0);
        let file = format!("streams/{stream}.snapshot");
        let stream_bar = bar(show, bytes, &format!("stream {stream}"));
        let (part, sha256, size) =
            jetstream::snapshot(client, stream, &work.join(&file), &stream_bar).await?;
        stream_bar.finish();
        parts.push(Part {
            file,
            kind: "jetstream".to_owned(),
            size,
            sha256,
            stream: Some(part),
        });
    }
    let timeline = Timeline {
        dump_snapshot_at,
        dump_finished_at,
        streams_started_at,
        streams_finished_at: now_rfc3339(),
    };
    Ok((
        parts,
        tables,
        timeline,
        dump_s,
        streams_started.elapsed().as_secs_f64(),
    ))
}

async fn pack_tar(work: &Path, name: &str, tar: &Path) -> anyhow::Result<()> {
    let (work, name, tar) = (work.to_owned(), name.to_owned(), tar.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let partial = tar.with_extension("tar.partial");
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
        builder.follow_symlinks(false);
        builder.append_dir_all(&name, &work)?;
        let writer = builder.into_inner()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&partial, &tar)?;
        Ok(())
    })
    .await?
}

/// Writes `last-good.json` and the Prometheus textfile beside the archives.
fn write_status(
    out: &Path,
    archive: &Path,
    manifest: &Manifest,
    size: u64,
    duration: Duration,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let status = serde_json::json!({
        "archive": archive,
        "created_at": manifest.created_at,
        "finished_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "size_bytes": size,
        "duration_s": duration.as_secs_f64(),
    });
    let tmp = out.join(format!("{LAST_GOOD_FILE}.partial"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&status)?)?;
    std::fs::rename(&tmp, out.join(LAST_GOOD_FILE))?;
    let metrics = format!(
        "# HELP ymera_backup_last_success_timestamp_seconds When the last successful `ymera backup create` finished.\n\
         # TYPE ymera_backup_last_success_timestamp_seconds gauge\n\
         ymera_backup_last_success_timestamp_seconds {}\n\
         # HELP ymera_backup_last_size_bytes Bytes of the last successful archive.\n\
         # TYPE ymera_backup_last_size_bytes gauge\n\
         ymera_backup_last_size_bytes {size}\n\
         # HELP ymera_backup_last_duration_seconds Wall time of the last successful backup.\n\
         # TYPE ymera_backup_last_duration_seconds gauge\n\
         ymera_backup_last_duration_seconds {:.3}\n",
        now.timestamp(),
        duration.as_secs_f64()
    );
    let tmp = out.join(format!("{METRICS_FILE}.partial"));
    std::fs::write(&tmp, metrics)?;
    std::fs::rename(&tmp, out.join(METRICS_FILE))?;
    Ok(())
}

/// Removes all but the newest `keep` archives in `out` (names sort by time).
pub fn prune(out: &Path, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut archives: Vec<(String, PathBuf)> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let is_archive = name.starts_with(ARCHIVE_PREFIX) && !name.ends_with(".partial");
            is_archive.then(|| (name, e.path()))
        })
        .collect();
    archives.sort();
    let excess = archives.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (_, path) in archives.into_iter().take(excess) {
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed.push(path);
    }
    Ok(removed)
}

/// An archive opened for reading: its root directory (a `.tar` is unpacked into a
/// temporary directory removed on drop).
struct OpenArchive {
    root: PathBuf,
    _unpacked: Option<tempfile::TempDir>,
}

async fn open_archive(path: &Path) -> anyhow::Result<OpenArchive> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("no archive at {}", path.display()))?;
    if meta.is_dir() {
        return Ok(OpenArchive {
            root: path.to_owned(),
            _unpacked: None,
        });
    }
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || unpack_tar(&path)).await?
}

fn unpack_tar(path: &Path) -> anyhow::Result<OpenArchive> {
    let temp = tempfile::Builder::new()
        .prefix("ymera-backup-unpacked-")
        .tempdir()?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut count = 0usize;
    let mut top: Option<String> = None;
    let entries = archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("{} is not a valid tar", path.display()))?;
        count += 1;
        if count > MAX_TAR_ENTRIES {
            bail!(
                "{} holds more than {MAX_TAR_ENTRIES} entries",
                path.display()
            );
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let target = manifest::part_path(temp.path(), &name)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target)?,
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut out = std::fs::File::create(&target)?;
                std::io::copy(&mut entry, &mut out)?;
            }
            other => bail!(
                "{}: entry {name} is a {other:?}, not a file",
                path.display()
            ),
        }
        if let Some(first) = Path::new(&name).components().next() {
            top.get_or_insert_with(|| first.as_os_str().to_string_lossy().into_owned());
        }
    }
    let root = match top {
        Some(top) if !temp.path().join(MANIFEST_FILE).exists() => temp.path().join(top),
        _ => temp.path().to_owned(),
    };
    Ok(OpenArchive {
        root,
        _unpacked: Some(temp),
    })
}

async fn read_manifest(root: &Path) -> anyhow::Result<Manifest> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || Manifest::read_checked(&root)).await?
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// When the archive was created.
    pub created_at: String,
    /// Tables restored.
    pub tables: usize,
    /// Their rows.
    pub rows: i64,
    /// Streams restored.
    pub streams: Vec<StreamSummary>,
    /// What the target held before (`--replace`).
    pub replaced: Vec<String>,
    /// Wall time.
    pub duration_s: f64,
    /// Of which pg_restore.
    pub postgres_s: f64,
    /// Of which the streams.
    pub streams_s: f64,
}

/// `ymera backup restore`.
pub async fn restore(args: &RestoreArgs, ctx: &Context) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    let show = !ctx.json();
    // Nothing is touched before the archive passed every check.
    let opened = open_archive(&args.archive).await?;
    let manifest = read_manifest(&opened.root).await?;
    let mut servers = None;
    let endpoints = match endpoints(&args.target, ctx)? {
        Some(endpoints) => endpoints,
        None => {
            let dir = args.target.dir.clone().unwrap_or_else(state_dir);
            let cluster = usize::from(args.cluster);
            let stack = tokio::task::spawn_blocking(move || {
                ymera_devstack::Stack::start(StackOptions {
                    nats_cluster: cluster,
                    ..StackOptions::new(dir)
                })
            })
            .await?
            .context("starting the stack's servers for the restore")?;
            let endpoints = Endpoints {
                nats_url: stack.nats_url(),
                database_url: args
                    .target
                    .database_url
                    .clone()
                    .unwrap_or_else(|| stack.database_url().to_owned()),
            };
            servers = Some(stack);
            endpoints
        }
    };
    let result = restore_into(&opened.root, &manifest, &endpoints, args.replace, ctx, show).await;
    if let Some(stack) = servers {
        let failures = tokio::task::spawn_blocking(move || stack.stop()).await?;
        for (component, err) in failures {
            eprintln!("stopping {component}: {err}");
        }
    }
    let mut report = result?;
    report.duration_s = started.elapsed().as_secs_f64();
    report.created_at = manifest.created_at.clone();
    Ok(report)
}

async fn restore_into(
    root: &Path,
    manifest: &Manifest,
    endpoints: &Endpoints,
    replace: bool,
    ctx: &Context,
    show: bool,
) -> anyhow::Result<RestoreReport> {
    let client = connect_nats(ctx, &endpoints.nats_url).await?;
    // What the target holds.
    let mut held: Vec<String> = postgres::tables_with_rows(&endpoints.database_url)
        .await?
        .into_iter()
        .map(|t| format!("table {t} has rows"))
        .collect();
    let mut existing = Vec::new();
    let mut names: Vec<String> = jetstream::platform_streams(&client).await?;
    for (_, s) in manifest.streams() {
        if !names.contains(&s.name) {
            names.push(s.name.clone());
        }
    }
    for name in &names {
        if let Some(info) = jetstream::stream_info(&client, name).await? {
            let (messages, consumers) = jetstream::counts(&info);
            if messages > 0 || consumers > 0 {
                held.push(format!(
                    "stream {name} holds {messages} messages and {consumers} consumers"
                ));
            }
            existing.push(name.clone());
        }
    }
    if !held.is_empty() && !replace {
        bail!(
            "the target stack is not empty ({}); restore into an empty stack, or pass --replace to overwrite it",
            summarize(&held)
        );
    }
    let postgres_started = Instant::now();
    let rows = load_postgres(root, manifest, &endpoints.database_url, show).await?;
    let postgres_s = postgres_started.elapsed().as_secs_f64();
    let streams_started = Instant::now();
    for name in &existing {
        jetstream::delete_stream(&client, name)
            .await
            .with_context(|| format!("removing the existing stream {name}"))?;
    }
    let replicas = ymera_core::jetstream::cluster_size(&client).await;
    let streams = load_streams(root, manifest, &client, replicas, show).await?;
    Ok(RestoreReport {
        created_at: String::new(),
        tables: manifest.tables.len(),
        rows,
        streams,
        replaced: held,
        duration_s: 0.0,
        postgres_s,
        streams_s: streams_started.elapsed().as_secs_f64(),
    })
}

fn summarize(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > 5 {
        text.push_str(&format!("; and {} more", items.len() - 5));
    }
    text
}
