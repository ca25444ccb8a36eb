//! Two replicas on the same PostgreSQL and Redis; the cache and its metrics.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use ymera_config::Settings;
use ymera_config::model::{Env, GetRequest, SetRequest};
use ymera_core::ErrorKind;
use ymera_testkit::{NatsServer, Postgres, Redis, shared_postgres};

use crate::common::*;

fn get_req(agent: &str, env: Env) -> GetRequest {
    GetRequest {
        agent: agent.into(),
        environment: env,
        pointer: None,
        raw: false,
    }
}

fn set_req(agent: &str, env: Env, config: serde_json::Value) -> SetRequest {
    SetRequest {
        agent: agent.into(),
        environment: env,
        config,
        pointer: None,
        merge: false,
        expected_version: None,
        actor: Some("test".into()),
    }
}

#[tokio::test]
async fn a_write_through_one_replica_is_seen_through_the_other_once_the_event_arrives() {
    let nats = NatsServer::start().unwrap();
    let redis = Redis::start().unwrap();
    let db = shared_postgres().create_database().unwrap();
    let a = start_replica(config(&nats, &db, Some(redis.url())), Settings::default()).await;
    let b = start_replica(config(&nats, &db, Some(redis.url())), Settings::default()).await;
    let client = client(&nats).await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut events = watcher.subscribe("config.changed.shop.>").await.unwrap();
    watcher.flush().await.unwrap();

    set(&client, "shop", "base", json!({"price": 0})).await;
    events.next().await.unwrap();
    for n in 1..=20 {
        // Both replicas have the current version cached (in process and in Redis).
        for env in [Env::Base, Env::Production] {
            a.manager.get(get_req("shop", env)).await.unwrap();
            b.manager.get(get_req("shop", env)).await.unwrap();
        }
        // Alternate the writer and the layer (a base change reaches production too).
        let (writer, reader) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let env = if n % 3 == 0 {
            Env::Production
        } else {
            Env::Base
        };
        let written = writer
            .manager
            .set(set_req("shop", env, json!({"price": n})))
            .await
            .unwrap();
        let event = events.next().await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event["version"], written.version);
        assert_eq!(event["agent"], "shop");
        assert_eq!(event["environment"], env.as_str());
        assert_eq!(event["changed_by"], "test");
        let seen = reader.manager.get(get_req("shop", env)).await.unwrap();
        assert_eq!(
            seen.version, written.version,
            "stale read after the change event (round {n})"
        );
        assert_eq!(seen.config["price"], n);
        // Through NATS (either replica answers) as well.
        let seen = get(&client, "shop", env.as_str()).await;
        assert_eq!(seen["config"]["price"], n);
    }
    let metrics = ymera_core::metrics::render();
    assert!(
        metrics.contains("ymera_config_cache_hits_total"),
        "{metrics}"
    );
    assert!(metrics.contains("ymera_config_cache_misses_total"));
    assert!(metrics.contains("ymera_config_changes_total"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn cached_reads_do_not_touch_postgresql() {
    let nats = NatsServer::start().unwrap();
    let mut pg = Postgres::start().unwrap();
    let db = pg.create_database().unwrap();
    let redis = Redis::start().unwrap();
    let cfg = config(&nats, &db, Some(redis.url()));
    let settings = Settings {
        cache_ttl: Duration::from_secs(300),
        ..Settings::default()
    };
    let replica = start_replica(cfg, settings).await;
    let client = client(&nats).await;
    set(&client, "cached", "base", json!({"a": 1})).await;
    let first = get(&client, "cached", "base").await;
    pg.kill().unwrap();
    for _ in 0..5 {
        assert_eq!(get(&client, "cached", "base").await, first);
    }
    // Writes need PostgreSQL: 503, and the cached value is still served.
    let err = call(
        &client,
        "config.set",
        json!({"agent": "cached", "environment": "base", "config": {"a": 2}}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert_eq!(get(&client, "cached", "base").await, first);
    replica.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), replica.task).await;
}
