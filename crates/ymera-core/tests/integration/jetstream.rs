//! `ymera_core::jetstream::ensure_stream` on a real 3-node JetStream cluster.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use ymera_core::jetstream::{Replicas, ensure_stream};
use ymera_testkit::NatsCluster;

/// A service started while the cluster has no quorum (two of three servers down) waits for
/// it instead of failing: the R3 stream is created once the servers are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_stream_waits_for_a_cluster_without_quorum() {
    let mut cluster = NatsCluster::start(3).expect("3-node cluster");
    let client = async_nats::connect(cluster.node(0).unwrap().url())
        .await
        .unwrap();
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    let js = jetstream::new(client.clone());
    let config = stream::Config {
        name: "ENSURE_WAITS".into(),
        subjects: vec!["ensure.waits.>".into()],
        ..Default::default()
    };
    let three = Replicas {
        count: 3,
        explicit: true,
    };
    let task = tokio::spawn(async move { ensure_stream(&js, config, three).await });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !task.is_finished(),
        "ensure_stream gave up while the cluster had no quorum"
    );
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    let info = tokio::time::timeout(Duration::from_secs(40), task)
        .await
        .expect("ensure_stream finished within its deadline")
        .unwrap()
        .expect("stream created once the cluster is whole");
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.config.name, "ENSURE_WAITS");
}

/// A refusal that waiting cannot cure (an invalid configuration) comes back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_stream_returns_a_refusal_at_once() {
    let cluster = NatsCluster::start(3).expect("3-node cluster");
    let client = async_nats::connect(cluster.node(0).unwrap().url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    // Two streams may not share subjects.
    let first = stream::Config {
        name: "OVERLAP_A".into(),
        subjects: vec!["overlap.>".into()],
        ..Default::default()
    };
    let one = Replicas {
        count: 1,
        explicit: true,
    };
    ensure_stream(&js, first, one).await.unwrap();
    let second = stream::Config {
        name: "OVERLAP_B".into(),
        subjects: vec!["overlap.x".into()],
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = ensure_stream(&js, second, one).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(err.contains("OVERLAP_B"), "{err}");
}
