//! The retention job against a real PostgreSQL: old rows go in batches,
//! recent ones, audit kept by default and each draft's latest revision stay,
//! two replicas delete each row once, and a held lock makes a replica wait.

use std::time::Duration;

use sqlx::PgPool;
use ymera_core::env::Env;
use ymera_core::retention::{self, Rule, Settings};
use ymera_testkit::Postgres;

const DAY: Duration = Duration::from_secs(86_400);

async fn migrated(pg: &Postgres) -> PgPool {
    let url = pg.create_database().unwrap();
    let pool = ymera_core::store::connect_postgres(&url, 4).await.unwrap();
    ymera_core::store::migrate(&pool).await.unwrap();
    pool
}

/// `n` security events `age_days` old.
async fn events(pool: &PgPool, n: i32, age_days: i32) {
    sqlx::query(
        "INSERT INTO security_events (id, event_type, created_at) \
         SELECT gen_random_uuid(), 'auth_failure', now() - make_interval(days => $2) \
         FROM generate_series(1, $1)",
    )
    .bind(n)
    .bind(age_days)
    .execute(pool)
    .await
    .unwrap();
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

fn rule(table: retention::Table, days: u64) -> Rule {
    Rule {
        table,
        max_age: Some(DAY * days as u32),
    }
}

#[tokio::test]
async fn old_rows_are_deleted_in_batches_and_recent_ones_kept() {
    let pg = Postgres::start().unwrap();
    let pool = migrated(&pg).await;
    events(&pool, 2_500, 100).await;
    events(&pool, 30, 10).await;

    // Defaults: the audit trail is kept.
    let defaults =
        Settings::read(&Env::from_lookup(|_| None), &[retention::SECURITY_EVENTS]).unwrap();
    assert_eq!(
        retention::prune(&pool, &defaults.rules[0], 1000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(&pool, "security_events").await, 2_530);

    // 90 days, 1000 rows per batch: three batches.
    let deleted = retention::prune(&pool, &rule(retention::SECURITY_EVENTS, 90), 1000)
        .await
        .unwrap();
    assert_eq!(deleted, 2_500);
    assert_eq!(count(&pool, "security_events").await, 30);

    // config_audit (column `at`) and the message archive (`archived_at`).
    sqlx::query(
        "INSERT INTO config_audit (agent, environment, action, actor, at, patch) VALUES \
         ('a', 'dev', 'set', 'x', now() - interval '400 days', '{}'), \
         ('a', 'dev', 'set', 'x', now(), '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO message_history_archive \
           (message_id, type, sender, recipients, subject, payload, status, created_at, archived_at) VALUES \
         ('m-old', 'request', 's', '[]', 'x', '{}', 'delivered', now() - interval '800 days', now() - interval '400 days'), \
         ('m-new', 'request', 's', '[]', 'x', '{}', 'delivered', now() - interval '40 days', now() - interval '10 days')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(
        retention::prune(&pool, &rule(retention::CONFIG_AUDIT, 365), 100)
            .await
            .unwrap(),
        1
    );
    let archive_default =
        Settings::read(&Env::from_lookup(|_| None), &[retention::MESSAGE_ARCHIVE]).unwrap();
    assert_eq!(
        retention::prune(&pool, &archive_default.rules[0], 100)
            .await
            .unwrap(),
        1
    );
    let left: String = sqlx::query_scalar("SELECT message_id FROM message_history_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, "m-new");
    assert_eq!(count(&pool, "config_audit").await, 1);
}

#[tokio::test]
async fn each_drafts_latest_revision_survives() {
    let pg = Postgres::start().unwrap();
    let pool = migrated(&pg).await;
    for draft in ["d1", "d2"] {
        sqlx::query(
            "INSERT INTO drafts (draft_id, title, document_type, author_id, status, created_at, updated_at) \
             VALUES ($1, 't', 'report', 'u', 'draft', now(), now())",
        )
        .bind(draft)
        .execute(&pool)
        .await
        .unwrap();
    }
    // d1: revisions 1-3 two years old, 4 recent; d2: one old revision only.
    for (draft, revision, age) in [
        ("d1", 1, 700),
        ("d1", 2, 700),
        ("d1", 3, 700),
        ("d1", 4, 1),
        ("d2", 1, 700),
    ] {
        sqlx::query(
            "INSERT INTO draft_revisions (draft_id, revision, author_id, created_at, source, title, content, word_count, word_delta, diff) \
             VALUES ($1, $2, 'u', now() - make_interval(days => $3), 'update', 't', 'c', 1, 0, '')",
        )
        .bind(draft)
        .bind(revision)
        .bind(age)
        .execute(&pool)
        .await
        .unwrap();
    }
    let deleted = retention::prune(&pool, &rule(retention::DRAFT_REVISIONS, 365), 2)
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let left: Vec<(String, i32)> =
        sqlx::query_as("SELECT draft_id, revision FROM draft_revisions ORDER BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("d1".into(), 4), ("d2".into(), 1)]);
}

#[tokio::test]
async fn replicas_delete_each_row_once_and_wait_for_a_held_lock() {
    let pg = Postgres::start().unwrap();
    let pool = migrated(&pg).await;
    events(&pool, 4_000, 100).await;
    let r = rule(retention::SECURITY_EVENTS, 30);

    // Another replica holds the table's lock: this one leaves the table alone.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(retention::lock_key("security_events"))
        .execute(&mut *holder)
        .await
        .unwrap();
    assert_eq!(retention::prune(&pool, &r, 500).await.unwrap(), 0);
    holder.rollback().await.unwrap();

    // Two replicas at once: every row deleted, none twice.
    let prune = |pool: PgPool| async move { retention::prune(&pool, &r, 500).await.unwrap() };
    let (a, b) = tokio::join!(
        tokio::spawn(prune(pool.clone())),
        tokio::spawn(prune(pool.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // The one that lost a batch's lock stops; the other finishes; a later
    // round (the next interval) picks up anything left.
    let rest = retention::prune(&pool, &r, 500).await.unwrap();
    assert_eq!(
        a + b + rest,
        4_000,
        "every row deleted once ({a} + {b} + {rest})"
    );
    assert_eq!(count(&pool, "security_events").await, 0);
}

/// The job a service starts: its loop prunes on the runtime's pool at the
/// interval, counts what it deleted, and stops with the runtime.
#[tokio::test]
async fn the_running_job_prunes_on_its_interval() {
    let pg = Postgres::start().unwrap();
    let nats = crate::common::nats();
    let mut config = crate::common::config_for(&nats);
    let url = pg.create_database().unwrap();
    config.postgres_url = Some(url);
    let runtime = ymera_core::runtime::Runtime::start("example", config)
        .await
        .unwrap();
    let pool = runtime.postgres().unwrap().clone();
    events(&pool, 1_500, 100).await;
    events(&pool, 5, 1).await;
    retention::start_with(
        &runtime,
        Settings {
            rules: vec![rule(retention::SECURITY_EVENTS, 30)],
            interval: Duration::from_secs(1),
            batch: 1000,
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&pool, "security_events").await != 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "not pruned within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = ymera_core::metrics::render();
    assert!(
        text.contains("ymera_retention_deleted_total{table=\"security_events\"} 1500"),
        "{text}"
    );
    runtime.shutdown_token().cancel();
}

/// A rolling upgrade: a newer binary applied a migration this one does not know; this
/// binary still starts (migrates without error) instead of crash-looping, and a
/// migration it knows whose recorded checksum differs is still refused.
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_still_starts_an_older_one() {
    let pg = Postgres::start().unwrap();
    let pool = migrated(&pg).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from a newer version', true, '\\x00', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    ymera_core::store::migrate(&pool)
        .await
        .expect("an unknown, newer migration is not an error");
    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = '\\x00' \
         WHERE version = (SELECT min(version) FROM _sqlx_migrations)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = ymera_core::store::migrate(&pool)
        .await
        .expect_err("a changed known migration is refused");
    assert!(err.to_string().contains("modified"), "{err}");
}
