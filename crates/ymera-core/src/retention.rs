//! Data retention: a periodic job deleting rows older than a configured age
//! from the tables a service owns, in batches, on one replica at a time.
//!
//! Each owning service starts it with its tables ([`start`]); the ages come
//! from the environment (`<TABLE>_RETENTION_DAYS`, `0` = keep forever):
//!
//! | table | owner | variable | default |
//! |---|---|---|---|
//! | `security_events` (audit) | security | `SECURITY_EVENTS_RETENTION_DAYS` | `0` (kept) |
//! | `config_audit` (audit) | config | `CONFIG_AUDIT_RETENTION_DAYS` | `0` (kept) |
//! | `message_history_archive` | communication | `COMM_ARCHIVE_RETENTION_DAYS` | `365` |
//! | `draft_revisions` (all but each draft's latest) | drafting | `DRAFT_REVISIONS_RETENTION_DAYS` | `365` |
//!
//! Shared by all: `YMERA_RETENTION_INTERVAL_S` (how often, default 3600, first
//! run a minute after start) and `YMERA_RETENTION_BATCH` (rows per DELETE,
//! default 1000). Each batch is one transaction that first takes
//! `pg_try_advisory_xact_lock` on the table's key: when another replica
//! holds it, this replica leaves the table to it for this round, so the
//! job runs once across replicas without a leader and a crashed replica
//! holds no lock. Deleted rows are counted in `ymera_retention_deleted_total{table}`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::env::Env;
use crate::runtime::{Runtime, RuntimeError};

/// One table under retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table (an SQL identifier written in code, never user input).
    pub table: &'static str,
    /// The `timestamptz` column compared with the age.
    pub time_column: &'static str,
    /// Extra condition a row must meet to be deleted (SQL written in code).
    pub keep_condition: Option<&'static str>,
    /// The variable holding the age in days (`0` = keep forever).
    pub variable: &'static str,
    /// The age in days when the variable is unset (`0` = keep forever).
    pub default_days: u32,
}

/// `security_events`, the security audit trail: kept unless configured.
pub const SECURITY_EVENTS: Table = Table {
    table: "security_events",
    time_column: "created_at",
    keep_condition: None,
    variable: "SECURITY_EVENTS_RETENTION_DAYS",
    default_days: 0,
};

/// `config_audit`, the configuration audit trail: kept unless configured.
pub const CONFIG_AUDIT: Table = Table {
    table: "config_audit",
    time_column: "at",
    keep_condition: None,
    variable: "CONFIG_AUDIT_RETENTION_DAYS",
    default_days: 0,
};

/// `message_history_archive`, where communication moves history older than
/// `COMM_RETENTION_DAYS`; deleted a year after it was archived.
pub const MESSAGE_ARCHIVE: Table = Table {
    table: "message_history_archive",
    time_column: "archived_at",
    keep_condition: None,
    variable: "COMM_ARCHIVE_RETENTION_DAYS",
    default_days: 365,
};

/// `draft_revisions` older than a year, except each draft's latest revision.
pub const DRAFT_REVISIONS: Table = Table {
    table: "draft_revisions",
    time_column: "created_at",
    keep_condition: Some(
        "revision < (SELECT max(latest.revision) FROM draft_revisions latest \
         WHERE latest.draft_id = draft_revisions.draft_id)",
    ),
    variable: "DRAFT_REVISIONS_RETENTION_DAYS",
    default_days: 365,
};

/// Longest configurable age (100 years).
pub const MAX_DAYS: u32 = 36_500;
/// Most rows one DELETE may remove (`YMERA_RETENTION_BATCH`).
pub const MAX_BATCH: u64 = 100_000;
/// Most batches per table and round, so one round cannot run for ever.
pub const MAX_BATCHES_PER_ROUND: u32 = 1_000;

/// A table with the age read from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The table.
    pub table: Table,
    /// Rows older than this are deleted; `None` keeps them.
    pub max_age: Option<Duration>,
}

/// The job's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The tables and their ages.
    pub rules: Vec<Rule>,
    /// How often a round runs (`YMERA_RETENTION_INTERVAL_S`).
    pub interval: Duration,
    /// Rows per DELETE (`YMERA_RETENTION_BATCH`).
    pub batch: u64,
}

impl Settings {
    /// Reads the ages of `tables` and the shared settings from `env`.
    pub fn read(env: &Env<'_>, tables: &[Table]) -> Result<Settings, ConfigError> {
        let mut rules = Vec::with_capacity(tables.len());
        for table in tables {
            check_identifier(table.table)?;
            check_identifier(table.time_column)?;
            let days = env.number(table.variable, table.default_days, 0..=MAX_DAYS)?;
            rules.push(Rule {
                table: *table,
                max_age: (days > 0).then(|| Duration::from_secs(u64::from(days) * 86_400)),
            });
        }
        Ok(Settings {
            rules,
            interval: env.seconds(
                "YMERA_RETENTION_INTERVAL_S",
                Duration::from_secs(3600),
                1..=30 * 86_400,
            )?,
            batch: env.number("YMERA_RETENTION_BATCH", 1000, 1..=MAX_BATCH)?,
        })
    }
}

fn check_identifier(name: &'static str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "retention",
            format!("{name:?} is not a plain SQL identifier"),
        ))
    }
}

/// Starts the retention job of `tables` on `runtime`'s PostgreSQL pool
/// (nothing without `POSTGRES_URL`, or when every table is kept forever).
/// A malformed age is a configuration error (exit 64).
pub fn start(runtime: &Runtime, tables: &[Table]) -> Result<(), RuntimeError> {
    start_with(runtime, Settings::read(&Env::from_process(), tables)?);
    Ok(())
}

/// [`start`] with settings already read: the job's loop, until the
/// runtime's shutdown token is cancelled.
pub fn start_with(runtime: &Runtime, settings: Settings) {
    let Some(pool) = runtime.postgres().cloned() else {
        return;
    };
    for rule in &settings.rules {
        metrics::counter!("ymera_retention_deleted_total", "table" => rule.table.table).absolute(0);
    }
    if settings.rules.iter().all(|r| r.max_age.is_none()) {
        tracing::info!(tables = ?settings.rules.iter().map(|r| r.table.table).collect::<Vec<_>>(), "retention: every table kept");
        return;
    }
    tokio::spawn(run(pool, settings, runtime.shutdown_token()));
}

async fn run(pool: PgPool, settings: Settings, shutdown: CancellationToken) {
    // The first round a minute after start, not in the start-up rush.
    let first = settings.interval.min(Duration::from_secs(60));
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + settings.interval;
        for rule in &settings.rules {
            match prune(&pool, rule, settings.batch).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(
                        table = rule.table.table,
                        deleted,
                        "retention: old rows deleted"
                    )
                }
                Err(err) => {
                    tracing::warn!(table = rule.table.table, error = %err, "retention job failed")
                }
            }
        }
    }
}

/// The advisory-lock key of `table` (stable across processes and builds).
pub fn lock_key(table: &str) -> i64 {
    // FNV-1a, 64 bit.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("ymera.retention.{table}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Deletes the rows of `rule` older than its age, `batch` rows per
/// transaction, until none is left, another replica holds the table's lock,
/// or [`MAX_BATCHES_PER_ROUND`]; returns how many rows this call deleted.
pub async fn prune(pool: &PgPool, rule: &Rule, batch: u64) -> Result<u64, sqlx::Error> {
    let Some(max_age) = rule.max_age else {
        return Ok(0);
    };
    let table = rule.table;
    let extra = table
        .keep_condition
        .map(|c| format!(" AND {c}"))
        .unwrap_or_default();
    let sql = format!(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY(\
           SELECT ctid FROM {t} \
           WHERE {c} < now() - make_interval(secs => $1){extra} \
           LIMIT $2 FOR UPDATE SKIP LOCKED))",
        t = table.table,
        c = table.time_column,
    );
    let limit = i64::try_from(batch).unwrap_or(i64::MAX);
    let mut total = 0;
    for _ in 0..MAX_BATCHES_PER_ROUND {
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(lock_key(table.table))
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            // Another replica is pruning this table now.
            break;
        }
        // Table, column and condition are constants of this crate, checked
        // by `check_identifier`; the age and limit are bound.
        let deleted = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(max_age.as_secs_f64())
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        total += deleted;
        if deleted > 0 {
            metrics::counter!("ymera_retention_deleted_total", "table" => table.table)
                .increment(deleted);
        }
        if deleted < batch {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_come_from_the_environment_with_audit_kept_by_default() {
        let env = Env::from_lookup(|_| None);
        let s = Settings::read(
            &env,
            &[
                SECURITY_EVENTS,
                CONFIG_AUDIT,
                MESSAGE_ARCHIVE,
                DRAFT_REVISIONS,
            ],
        )
        .unwrap();
        assert_eq!(s.rules[0].max_age, None);
        assert_eq!(s.rules[1].max_age, None);
        assert_eq!(s.rules[2].max_age, Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(s.rules[3].max_age, Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert_eq!(s.batch, 1000);

        let env = Env::from_lookup(|name| match name {
            "SECURITY_EVENTS_RETENTION_DAYS" => Some("90".into()),
            "COMM_ARCHIVE_RETENTION_DAYS" => Some("0".into()),
            _ => None,
        });
        let s = Settings::read(&env, &[SECURITY_EVENTS, MESSAGE_ARCHIVE]).unwrap();
        assert_eq!(s.rules[0].max_age, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(s.rules[1].max_age, None);

        let env = Env::from_lookup(|name| {
            (name == "SECURITY_EVENTS_RETENTION_DAYS").then(|| "-1".to_owned())
        });
        let err = Settings::read(&env, &[SECURITY_EVENTS]).unwrap_err();
        assert_eq!(err.variable, "SECURITY_EVENTS_RETENTION_DAYS");
        let env =
            Env::from_lookup(|name| (name == "YMERA_RETENTION_BATCH").then(|| "0".to_owned()));
        assert!(Settings::read(&env, &[SECURITY_EVENTS]).is_err());
    }

    #[test]
    fn table_names_must_be_plain_identifiers() {
        let bad = Table {
            table: "x; DROP TABLE y",
            ..SECURITY_EVENTS
        };
        assert!(Settings::read(&Env::from_lookup(|_| None), &[bad]).is_err());
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("security_events"), lock_key("security_events"));
    }
}
