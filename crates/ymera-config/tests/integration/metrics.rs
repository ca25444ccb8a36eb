//! `config.metrics`: the cache hit rate, hits and misses, and the versions
//! served, as the seed's `_get_agent_metrics` reads them.

use serde_json::json;

use crate::common::*;
use ymera_testkit::proto::exchange;

#[tokio::test]
async fn metrics_count_cache_hits_misses_and_versions_served() {
    let stack = stack().await;
    let nats = stack.client.nats().clone();
    let before = exchange(&nats, "config", "metrics", json!({})).await;
    assert_eq!(before["cache_hits"], 0);
    assert_eq!(before["cache_hit_rate_percent"], 0.0);
    assert_eq!(before["shared_cache"], false);

    set(&stack.client, "svc", "base", json!({"pool": 5})).await;
    for _ in 0..3 {
        assert_eq!(get(&stack.client, "svc", "production").await["version"], 1);
    }
    let m = exchange(&nats, "config", "metrics", json!({})).await;
    // The first read loads from PostgreSQL, the next two are cached.
    assert_eq!(m["cache_misses"], 1, "{m}");
    assert_eq!(m["cache_hits"], 2, "{m}");
    assert_eq!(m["cache_hit_rate_percent"], 66.7);
    assert_eq!(m["gets_served"], 3);
    assert_eq!(m["versions_served"], 1);
    assert_eq!(m["agents"], 1);
    assert_eq!(m["stored_versions"], 1);

    // A new version: the next read misses, and a second version is served.
    set(&stack.client, "svc", "base", json!({"pool": 6})).await;
    assert_eq!(get(&stack.client, "svc", "production").await["version"], 2);
    get(&stack.client, "svc", "production").await;
    let m = exchange(&nats, "config", "metrics", json!({})).await;
    assert_eq!(m["cache_misses"], 2, "{m}");
    assert_eq!(m["cache_hits"], 3, "{m}");
    assert_eq!(m["cache_hit_rate_percent"], 60.0);
    assert_eq!(m["gets_served"], 5);
    assert_eq!(m["versions_served"], 2);
    assert_eq!(m["stored_versions"], 2);
    stack.replica.stop().await;
}
