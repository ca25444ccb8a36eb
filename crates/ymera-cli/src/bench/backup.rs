//! `ymera bench backup`: `ymera backup create` and `restore` beside plain `pg_dump` and
//! `pg_restore` of the same database, in the same run, on private servers.
//!
//! A private PostgreSQL gets the platform's schema and `--size-mb` of history rows
//! (1 KiB of varied JSON each); a private nats-server gets a `YMERA_MESSAGES` stream of
//! `--stream-mb` of 1 KiB copies with a consumer. Then, each timed:
//!
//! 1. `pg_dump --format=custom` alone (the baseline);
//! 2. `ymera backup create` (the same dump at an exported snapshot, the row counts, the
//!    stream snapshots, the checksums, the manifest);
//! 3. `pg_restore` alone into a fresh database (the baseline);
//! 4. `ymera backup restore` into another fresh database and a fresh nats-server.
//!
//! `--rounds` (2) repeat the four, each on fresh targets, even rounds with the baseline
//! first and odd rounds with Ymera first (whichever reads the data first after the fill
//! reads colder pages); the best round of each is reported. MB/s is the database's size
//! (`pg_database_size`) plus, for Ymera, the streams' stored bytes, over the wall time;
//! the ratio is Ymera's MB/s over the baseline's.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;

use crate::backup::{self, CreateArgs, RestoreArgs, TargetArgs};
use crate::context::Context;

/// Options of `ymera bench backup`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Megabytes of history rows in the database.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub size_mb: u64,
    /// Megabytes of messages in the stream.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub stream_mb: u64,
    /// Rounds (each target's best is reported).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Where the archives and dumps go (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    target: &'static str,
    megabytes: f64,
    seconds: f64,
    mb_per_s: f64,
    ratio_to_baseline: f64,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let work = match &args.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("ymera-bench-backup-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("ymera-bench-backup-")
            .tempdir()?,
    };
    eprintln!("starting private PostgreSQL and nats-server …");
    let (pg, source, nats) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let pg = ymera_devstack::Postgres::start()?;
        let url = pg.create_database()?;
        let nats = ymera_devstack::NatsServer::start_with(ymera_devstack::NatsOptions {
            max_payload: Some(8 * 1024 * 1024),
            ..Default::default()
        })?;
        Ok((pg, url, nats))
    })
    .await??;
    eprintln!("filling the database with {} MB …", args.size_mb);
    let db_bytes = fill_database(&source, args.size_mb).await?;
    eprintln!("filling YMERA_MESSAGES with {} MB …", args.stream_mb);
    let stream_bytes = fill_stream(&nats.url(), args.stream_mb).await?;
    let db_mb = db_bytes as f64 / 1e6;
    let all_mb = (db_bytes + stream_bytes) as f64 / 1e6;

    let bin_dir = pg.bin_dir().to_owned();
    let hidden = ProgressBar::hidden();
    let mut quiet = ctx.clone();
    quiet.args.json = true;
    quiet.args.nats_url = nats.url();
    // Rounds alternate which of baseline and Ymera runs first (a first, cold read
    // favours neither); each target's best round is reported.
    let (mut dump_s, mut create_s, mut restore_s, mut ymera_restore_s) =
        (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    let mut last = None;
    let mut pg = pg;
    for round in 0..args.rounds {
        // Even rounds run the baseline first, odd rounds Ymera first: whichever runs
        // first after the fill (or after the other's writes) reads colder pages.
        let ymera_first = round % 2 == 1;
        eprintln!(
            "round {} of {} ({} first) …",
            round + 1,
            args.rounds,
            if ymera_first { "ymera" } else { "baseline" }
        );
        let dump = work.path().join(format!("baseline-{round}.dump"));
        let archives = work.path().join(format!("archives-{round}"));
        let mut created = None;
        for ymera_turn in [ymera_first, !ymera_first] {
            if ymera_turn {
                // 2. ymera backup create.
                let summary = backup::create(
                    &CreateArgs {
                        target: TargetArgs {
                            dir: None,
                            database_url: Some(source.clone()),
                        },
                        out: archives.clone(),
                        tar: false,
                        settle_ms: 0,
                        keep: None,
                    },
                    &quiet,
                )
                .await?;
                eprintln!("  ymera backup create {:.2} s", summary.duration_s);
                create_s = create_s.min(summary.duration_s);
                created = Some(summary);
            } else {
                // 1. pg_dump alone.
                let started = Instant::now();
                backup::pg_dump(&bin_dir, &source, &dump, &hidden).await?;
                let took = started.elapsed().as_secs_f64();
                eprintln!("  pg_dump -Fc {took:.2} s");
                dump_s = dump_s.min(took);
            }
        }
        let created = created.context("create did not run")?;

        // Fresh databases for both restores.
        let (fresh_a, fresh_b, back) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            Ok((pg.create_database()?, pg.create_database()?, pg))
        })
        .await??;
        pg = back;
        let mut restored = None;
        for ymera_turn in [ymera_first, !ymera_first] {
            if ymera_turn {
                // 4. ymera backup restore into a fresh database and nats-server.
                let target_nats =
                    tokio::task::spawn_blocking(ymera_devstack::NatsServer::start).await??;
                let mut target = ctx.clone();
                target.args.json = true;
                target.args.nats_url = target_nats.url();
                let report = backup::restore(
                    &RestoreArgs {
                        archive: created.archive.clone(),
                        target: TargetArgs {
                            dir: None,
                            database_url: Some(fresh_b.clone()),
                        },
                        replace: false,
                        cluster: 1,
                    },
                    &target,
                )
                .await?;
                eprintln!("  ymera backup restore {:.2} s", report.duration_s);
                ymera_restore_s = ymera_restore_s.min(report.duration_s);
                drop(target_nats);
                restored = Some(report);
            } else {
                // 3. pg_restore alone into a fresh database.
                let started = Instant::now();
                backup::pg_restore(&bin_dir, &fresh_a, &dump, &hidden).await?;
                let took = started.elapsed().as_secs_f64();
                eprintln!("  pg_restore {took:.2} s");
                restore_s = restore_s.min(took);
            }
        }
        let restored = restored.context("restore did not run")?;
        // Not timed: the round's copies go, so a few-GB run does not fill the disk.
        drop_databases(&source, &[&fresh_a, &fresh_b]).await?;
        let _ = std::fs::remove_file(&dump);
        if round + 1 < args.rounds {
            let _ = std::fs::remove_dir_all(&archives);
        }
        last = Some((created, restored));
    }
    let (created, restored) = last.context("no round ran")?;

    let rows = vec![
        row("pg_dump -Fc (baseline)", db_mb, dump_s, None),
        row(
            "ymera backup create",
            all_mb,
            create_s,
            Some(db_mb / dump_s.max(1e-9)),
        ),
        row("pg_restore (baseline)", db_mb, restore_s, None),
        row(
            "ymera backup restore",
            all_mb,
            ymera_restore_s,
            Some(db_mb / restore_s.max(1e-9)),
        ),
    ];
    let archive_mb = created.size_bytes as f64 / 1e6;
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "database_mb": db_mb, "stream_mb": stream_bytes as f64 / 1e6,
                "archive_mb": archive_mb, "results": rows,
                "create": created, "restore": restored,
            }))?
        );
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "target",
            "MB",
            "seconds",
            "MB/s",
            "× baseline",
        ]);
        for r in &rows {
            table.add_row(vec![
                r.target.to_owned(),
                format!("{:.0}", r.megabytes),
                format!("{:.2}", r.seconds),
                format!("{:.1}", r.mb_per_s),
                if r.ratio_to_baseline > 0.0 {
                    format!("{:.2}", r.ratio_to_baseline)
                } else {
                    "—".to_owned()
                },
            ]);
        }
        println!("{table}");
        println!(
            "database {db_mb:.0} MB, stream {:.0} MB, archive {archive_mb:.0} MB (dump {:.2} s + streams {:.2} s of create; pg_restore {:.2} s + streams {:.2} s of restore)",
            stream_bytes as f64 / 1e6,
            created.dump_s,
            created.streams_s,
            restored.postgres_s,
            restored.streams_s
        );
    }
    drop((nats, pg));
    Ok(ExitCode::SUCCESS)
}

fn row(target: &'static str, megabytes: f64, seconds: f64, baseline: Option<f64>) -> Row {
    let mb_per_s = megabytes / seconds.max(1e-9);
    Row {
        target,
        megabytes,
        seconds,
        mb_per_s,
        ratio_to_baseline: baseline.map(|b| mb_per_s / b).unwrap_or(0.0),
    }
}

/// Drops the databases of `urls` (on the server of `admin_url`).
async fn drop_databases(admin_url: &str, urls: &[&str]) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to the benchmark's PostgreSQL")?;
    for url in urls {
        let name = url
            .rsplit('/')
            .next()
            .and_then(|n| n.split('?').next())
            .unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        // The name is one devstack made (`create_database`), quoted as an identifier.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "\"\"")
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    }
    Ok(())
}

/// The platform's schema plus `size_mb` of history rows; returns the database's bytes.
async fn fill_database(url: &str, size_mb: u64) -> anyhow::Result<u64> {
    let pool = ymera_core::store::connect_postgres(url, 2).await?;
    ymera_core::store::migrate(&pool).await?;
    // ~1.2 KiB per row on disk (row + TOAST + index).
    let rows = size_mb * 1_000_000 / 1_200;
    let batch = 20_000u64;
    let mut done = 0;
    while done < rows {
        let n = batch.min(rows - done);
        sqlx::query(
            "INSERT INTO message_history (message_id, type, sender, recipients, subject, payload, status, created_at) \
             SELECT 'bench-' || i, 'event', 'bench-sender', '[\"bench\"]'::jsonb, 'backup bench ' || i, \
                    jsonb_build_object('text', (SELECT string_agg(md5(i::text || '.' || g::text), ' ') FROM generate_series(1, 24) g)), \
                    'delivered', now() \
             FROM generate_series($1::bigint, $2::bigint) i",
        )
        .bind(i64::try_from(done).unwrap_or(i64::MAX))
        .bind(i64::try_from(done + n - 1).unwrap_or(i64::MAX))
        .execute(&pool)
        .await
        .context("filling message_history")?;
        done += n;
    }
    sqlx::query("VACUUM ANALYZE message_history")
        .execute(&pool)
        .await?;
    // The fill's dirty pages are written now, not during the first timed read.
    if let Err(err) = sqlx::query("CHECKPOINT").execute(&pool).await {
        eprintln!("CHECKPOINT after the fill failed ({err}); continuing");
    }
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// A `YMERA_MESSAGES` stream with `size_mb` of 1 KiB copies and a consumer; returns its
/// stored bytes.
async fn fill_stream(url: &str, size_mb: u64) -> anyhow::Result<u64> {
    use async_nats::jetstream::{self, stream};
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let mut s = js
        .create_stream(stream::Config {
            name: "YMERA_MESSAGES".to_owned(),
            subjects: vec!["ymera.messages.>".to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            compression: Some(stream::Compression::S2),
            ..Default::default()
        })
        .await?;
    s.create_consumer(jetstream::consumer::pull::Config {
        durable_name: Some("deliver-bench".to_owned()),
        filter_subject: "ymera.messages.bench".to_owned(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    })
    .await?;
    let count = size_mb * 1_000;
    let mut acks = Vec::with_capacity(1024);
    for i in 0..count {
        let body: String = (0..32)
            .map(|g| format!("{:08x}", (i * 31 + g).wrapping_mul(2_654_435_761) as u32))
            .collect::<Vec<_>>()
            .join(" ");
        acks.push(
            js.publish("ymera.messages.bench", Bytes::from(body))
                .await?,
        );
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(s.info().await?.state.bytes)
}
