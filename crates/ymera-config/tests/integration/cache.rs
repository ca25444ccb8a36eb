//! The shared cache's version floors in Redis keep replicas fresh even when
//! a replica never receives the change event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use ymera_config::cache::{ConfigCache, Layer, Snapshot};
use ymera_config::model::Env;
use ymera_testkit::Redis;

fn snapshot(version: i64, x: i64) -> Snapshot {
    let layer = Layer {
        document: Some(json!({"x": x})),
        version,
        updated_at: chrono::Utc::now(),
        updated_by: "t".into(),
    };
    Snapshot::new(Some(layer), None)
}

async fn read(cache: &ConfigCache, env: Env, loads: &Arc<AtomicUsize>, from_db: Snapshot) -> i64 {
    let loads = loads.clone();
    cache
        .get_or_load("agent", env, move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(from_db)
        })
        .await
        .unwrap()
        .version()
}

#[tokio::test]
async fn a_replica_that_missed_the_event_does_not_serve_the_old_version() {
    let redis = Redis::start().unwrap();
    let conn = || async {
        ymera_core::store::connect_redis(&redis.url())
            .await
            .unwrap()
    };
    let ttl = Duration::from_secs(300);
    let writer = ConfigCache::new(Some(conn().await), ttl);
    let reader = ConfigCache::new(Some(conn().await), ttl);
    let slow = ConfigCache::new(Some(conn().await), ttl);
    let loads = Arc::new(AtomicUsize::new(0));

    // The reader caches version 1 (in process and in Redis).
    assert_eq!(
        read(&reader, Env::Production, &loads, snapshot(1, 1)).await,
        1
    );
    assert_eq!(
        read(&reader, Env::Production, &loads, snapshot(1, 1)).await,
        1
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1, "second read is a hit");

    // Version 2 of base commits elsewhere; no event reaches the reader.
    writer.committed("agent", Env::Base, 2).await;
    // A slow replica that read PostgreSQL before the commit stores version 1 again.
    slow.get_or_load("agent", Env::Production, || async { Ok(snapshot(1, 1)) })
        .await
        .unwrap();
    // The reader's local and Redis copies are both below the floor: it reloads.
    assert_eq!(
        read(&reader, Env::Production, &loads, snapshot(2, 2)).await,
        2
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    assert_eq!(
        read(&reader, Env::Production, &loads, snapshot(2, 2)).await,
        2
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2, "and then hits again");
}
