//! The PostgreSQL part: `pg_dump` (custom format) of the platform database taken inside
//! a snapshot this process exports, `pg_restore` into the target or a scratch database,
//! and the row counts both sides are compared by.
//!
//! The client tools must be at least the server's major version: they are looked up as
//! `$YMERA_PG_BIN_DIR`, `/usr/lib/postgresql/<server major>/bin` (Debian), the lowest
//! `/usr/lib/postgresql/<n>/bin` with n ≥ the server's major, then `PATH` (checked with
//! `--version`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use indicatif::ProgressBar;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, Row as _};

/// Tables never compared or required empty: sqlx's migration ledger.
const LEDGER: &str = "public._sqlx_migrations";
/// Most tables listed (the platform has a few dozen).
const MAX_TABLES: usize = 10_000;
/// How long pg_dump / pg_restore may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// A connection kept open while pg_dump reads the snapshot it exported.
pub struct ExportedSnapshot {
    conn: PgConnection,
    /// `pg_export_snapshot()`, passed to `pg_dump --snapshot`.
    pub id: String,
    /// `now()` of the exporting transaction (RFC 3339).
    pub at: String,
    /// Rows per table in that snapshot.
    pub tables: BTreeMap<String, i64>,
    /// `server_version_num`.
    pub server_version: i64,
}

/// Opens a REPEATABLE READ transaction, exports its snapshot and counts every table in it.
pub async fn export_snapshot(url: &str) -> anyhow::Result<ExportedSnapshot> {
    let mut conn = connect(url).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await?;
    let row = sqlx::query(
        "SELECT pg_export_snapshot(), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), current_setting('server_version_num')::bigint",
    )
    .fetch_one(&mut conn)
    .await
    .context("exporting a database snapshot")?;
    let id: String = row.get(0);
    let at: String = row.get(1);
    let server_version: i64 = row.get(2);
    let tables = count_tables(&mut conn).await?;
    Ok(ExportedSnapshot {
        conn,
        id,
        at,
        tables,
        server_version,
    })
}

impl ExportedSnapshot {
    /// Ends the exporting transaction (after pg_dump is done with the snapshot).
    pub async fn finish(mut self) -> anyhow::Result<()> {
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        self.conn.close().await?;
        Ok(())
    }
}

/// A connection to `url`, with a clear error.
pub async fn connect(url: &str) -> anyhow::Result<PgConnection> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| "the PostgreSQL URL is malformed".to_owned())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 10 s"))
    .and_then(|r| r.map_err(anyhow::Error::from))
    .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))
}

/// Every user table (`schema.table`), sorted.
pub async fn list_tables(conn: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT schemaname || '.' || tablename FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
         AND schemaname NOT LIKE 'pg_toast%' ORDER BY 1 LIMIT $1",
    )
    .bind(i64::try_from(MAX_TABLES).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
}

/// `"schema"."table"` for `schema.table`.
pub fn quoted(table: &str) -> String {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    format!(
        "\"{}\".\"{}\"",
        schema.replace('"', "\"\""),
        name.replace('"', "\"\"")
    )
}

/// Rows per table.
pub async fn count_tables(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for table in list_tables(conn).await? {
        // The name comes from pg_tables and is quoted as an identifier.
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quoted(&table)
        )))
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("counting {table}"))?;
        counts.insert(table, n);
    }
    Ok(counts)
}

/// The tables holding rows, apart from the migration ledger (a migrated, never used
/// database has none).
pub async fn tables_with_rows(url: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = connect(url).await?;
    let mut found = Vec::new();
    for table in list_tables(&mut conn).await? {
        if table == LEDGER {
            continue;
        }
        // The name comes from pg_tables and is quoted as an identifier.
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            quoted(&table)
        )))
        .fetch_one(&mut conn)
        .await?;
        if any {
            found.push(table);
        }
    }
    conn.close().await?;
    Ok(found)
}

/// The directory of client tools (`pg_dump`, `pg_restore`) for a server of
/// `server_version` (`server_version_num`).
pub fn client_bin_dir(server_version: i64) -> anyhow::Result<PathBuf> {
    let major = server_version / 10_000;
    if let Some(dir) = std::env::var_os(ymera_devstack::PG_BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if tool_major(&dir.join("pg_dump")).is_some_and(|m| m >= major) {
            return Ok(dir);
        }
        bail!(
            "{}={} holds no pg_dump of PostgreSQL {major} or newer",
            ymera_devstack::PG_BIN_DIR_ENV,
            dir.display()
        );
    }
    let exact = Path::new(DEBIAN_PG_ROOT)
        .join(major.to_string())
        .join("bin");
    if exact.join("pg_dump").is_file() {
        return Ok(exact);
    }
    let mut newer: Vec<(i64, PathBuf)> = std::fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: i64 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (n >= major && bin.join("pg_dump").is_file()).then_some((n, bin))
        })
        .collect();
    newer.sort();
    if let Some((_, dir)) = newer.into_iter().next() {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if tool_major(&dir.join("pg_dump")).is_some_and(|m| m >= major) {
                return Ok(dir);
            }
        }
    }
    bail!(
        "no pg_dump for PostgreSQL {major} or newer: install postgresql-client-{major} (or point {} at its bin directory)",
        ymera_devstack::PG_BIN_DIR_ENV
    )
}

fn tool_major(tool: &Path) -> Option<i64> {
    let out = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?;
    version.split('.').next()?.parse().ok()
}

/// `pg_dump --format=custom` of `url` at `snapshot` into `file`; the bar shows bytes written.
/// The dump streams through this process, which hashes it on the way: returns its sha256
/// and size.
pub async fn dump(
    bin_dir: &Path,
    url: &str,
    snapshot: Option<&str>,
    file: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<(String, u64)> {
    use sha2::Digest as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut command = tokio::process::Command::new(bin_dir.join("pg_dump"));
    command.arg("--format=custom").arg("--no-password");
    if let Some(id) = snapshot {
        command.arg(format!("--snapshot={id}"));
    }
    command
        .arg(format!("--dbname={url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("starting pg_dump")?;
    let errors = collect_stderr(child.stderr.take());
    let mut stdout = child.stdout.take().context("pg_dump has no stdout")?;
    let mut out = tokio::fs::File::create(file)
        .await
        .with_context(|| format!("creating {}", file.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let copy = async {
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await?;
            size += n as u64;
            bar.set_position(size);
        }
        out.flush().await?;
        out.sync_all().await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(TOOL_TIMEOUT, copy)
        .await
        .map_err(|_| anyhow::anyhow!("pg_dump ran longer than {} s", TOOL_TIMEOUT.as_secs()))??;
    let status = child.wait().await?;
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("pg_dump failed ({status}): {}", first_lines(&stderr));
    }
    Ok((super::manifest::hex(&hasher.finalize()), size))
}

fn collect_stderr(stderr: Option<tokio::process::ChildStderr>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(64 * 1024).read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn first_lines(text: &str) -> String {
    text.trim().lines().take(10).collect::<Vec<_>>().join(" | ")
}

/// `pg_restore` of `file` into `url` in one transaction (a failure changes nothing),
/// dropping the dump's objects first (`--clean --if-exists`), owned by the connecting role.
pub async fn restore(
    bin_dir: &Path,
    url: &str,
    file: &Path,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(bin_dir.join("pg_restore"));
    command
        .args([
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
        ])
        .arg(format!("--dbname={url}"))
        .arg(file);
    run_tool(command, "pg_restore", bar).await
}

/// Runs `command` (pg_dump or pg_restore as given), with its errors in the message.
pub async fn run_plain(
    command: tokio::process::Command,
    name: &str,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    run_tool(command, name, bar).await
}

async fn run_tool(
    mut command: tokio::process::Command,
    name: &str,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let errors = collect_stderr(child.stderr.take());
    let deadline = tokio::time::Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                bar.tick();
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill().await;
                    bail!("{name} ran longer than {} s", TOOL_TIMEOUT.as_secs());
                }
            }
        }
    };
    let stderr = errors.await.unwrap_or_default();
    if !status.success() {
        bail!(
            "{name} failed ({status}): {}",
            stderr
                .trim()
                .lines()
                .take(10)
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((auth, host)) => {
                let user = auth.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
