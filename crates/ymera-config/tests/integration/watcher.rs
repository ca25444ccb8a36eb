//! ConfigWatcher (ymera-core) against real config-manager replicas.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use ymera_config::Settings;
use ymera_core::config_watch::{ConfigWatcher, WatchOptions};

use crate::common::*;

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct WorkerSettings {
    workers: u32,
    #[serde(default)]
    mode: Option<String>,
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<WorkerSettings>, workers: u32) {
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| s.workers == workers),
    )
    .await
    .expect("the watcher never saw the change")
    .unwrap();
}

#[tokio::test]
async fn watcher_follows_changes_keeps_the_last_good_value_and_catches_up() {
    let s = stack().await;
    set(&s.client, "crawler", "base", json!({"workers": 1})).await;
    let options = WatchOptions {
        resync_interval: Duration::from_secs(3600),
    };
    let watcher = ConfigWatcher::<WorkerSettings>::start_with(
        s.client.clone(),
        "crawler",
        "production",
        options,
    )
    .await
    .unwrap();
    let mut rx = watcher.receiver();
    assert_eq!(rx.borrow().workers, 1);

    // A production layer and a base change both reach it.
    set(&s.client, "crawler", "production", json!({"workers": 2})).await;
    wait_for(&mut rx, 2).await;
    set(
        &s.client,
        "crawler",
        "base",
        json!({"workers": 1, "mode": "fast"}),
    )
    .await;
    tokio::time::timeout(
        Duration::from_secs(30),
        rx.wait_for(|s| s.mode.as_deref() == Some("fast")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rx.borrow().workers, 2);

    // A document that does not fit the type is not applied.
    let version = watcher.version();
    set(
        &s.client,
        "crawler",
        "production",
        json!({"workers": "many"}),
    )
    .await;
    // The good value survives; a later good change is applied.
    set(&s.client, "crawler", "production", json!({"workers": 3})).await;
    wait_for(&mut rx, 3).await;
    assert!(watcher.version() > version);

    // The manager stops: a change event arrives, the refetch fails, the last
    // good value stays.
    let Stack {
        nats,
        db,
        replica,
        client,
    } = s;
    replica.stop().await;
    let before = watcher.version();
    client
        .nats()
        .publish(
            "config.changed.crawler.production",
            json!({"agent": "crawler", "environment": "production", "version": before + 100})
                .to_string()
                .into(),
        )
        .await
        .unwrap();
    client.nats().flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.borrow().workers, 3);
    assert_eq!(watcher.version(), before);

    // While it is down the stored config changes (e.g. restored from a
    // backup); when a manager returns, the watcher catches up by itself.
    let pool = ymera_core::store::connect_postgres(&db, 1).await.unwrap();
    sqlx::query("UPDATE config_layers SET document = '{\"workers\": 4}', version = version + 1000 WHERE agent = 'crawler' AND environment = 'production'")
        .execute(&pool)
        .await
        .unwrap();
    let replica = start_replica(config(&nats, &db, None), Settings::default()).await;
    wait_for(&mut rx, 4).await;
    assert!(watcher.version() > before);
    replica.stop().await;
}

#[tokio::test]
async fn watcher_started_with_a_default_picks_up_the_first_config() {
    let s = stack().await;
    let default = WorkerSettings {
        workers: 9,
        mode: None,
    };
    let watcher = ConfigWatcher::start_with_default(
        s.client.clone(),
        "fresh",
        "staging",
        WatchOptions::default(),
        default.clone(),
    )
    .await
    .unwrap();
    let mut rx = watcher.receiver();
    assert_eq!(*rx.borrow(), default);
    assert_eq!(watcher.version(), 0);
    set(&s.client, "fresh", "base", json!({"workers": 5})).await;
    wait_for(&mut rx, 5).await;
    assert!(watcher.version() > 0);
    // Without a default, a missing config is an error.
    let err = ConfigWatcher::<WorkerSettings>::start(s.client.clone(), "absent", "base")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ymera_core::ErrorKind::NotFound);
    s.replica.stop().await;
}
