//! A 3-node JetStream cluster on loopback: routes, distinct stores, R3 streams that
//! survive a `kill -9` of their leader.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use ymera_devstack::{NatsCluster, NatsClusterOptions};

async fn r3_stream(js: &jetstream::Context, name: &str) -> stream::Info {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let created = js
            .create_or_update_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![format!("{}.>", name.to_lowercase())],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match created {
            Ok(info) => return info,
            Err(err) if Instant::now() < deadline => {
                eprintln!("stream not created yet: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("creating {name}: {err}"),
        }
    }
}

async fn leader(js: &jetstream::Context, name: &str) -> Option<String> {
    js.get_stream(name)
        .await
        .ok()?
        .info()
        .await
        .ok()?
        .cluster
        .as_ref()?
        .leader
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_hold_an_r3_stream_through_a_kill_9_of_its_leader() {
    let mut cluster = NatsCluster::start(3).unwrap();
    assert_eq!(cluster.len(), 3);
    let stores: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|n| n.store_dir().to_owned())
        .collect();
    assert_ne!(stores[0], stores[1]);
    assert_ne!(stores[1], stores[2]);
    assert_eq!(cluster.urls().split(',').count(), 3);

    let client = async_nats::connect(cluster.url_list()).await.unwrap();
    // Every server of the cluster is announced to clients (what the replica default reads).
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.server_info().connect_urls.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "INFO connect_urls: {:?}",
            client.server_info().connect_urls
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let js = jetstream::new(client.clone());
    let info = r3_stream(&js, "ORDERS").await;
    assert_eq!(info.config.num_replicas, 3);
    for i in 0..100 {
        js.publish(format!("orders.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let leader_name = leader(&js, "ORDERS").await.expect("a stream leader");
    let index = cluster
        .index_of(&leader_name)
        .expect("the leader is a node");

    cluster.kill(index).unwrap();
    // Another node takes over; the acknowledged messages are all there.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_leader = loop {
        if let Some(name) = leader(&js, "ORDERS").await
            && name != leader_name
        {
            break name;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader after killing {leader_name}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(new_leader, leader_name);
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 100);

    cluster.restart(index).unwrap();
    assert!(cluster.wait_healthy(Duration::from_secs(20)));
}

#[test]
fn sync_always_is_written_to_every_node_config() {
    let cluster = NatsCluster::start_with(NatsClusterOptions {
        sync_always: true,
        ..NatsClusterOptions::new(3)
    })
    .unwrap();
    for node in cluster.nodes() {
        let config = node.log_path().with_file_name("cluster.conf");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("sync_interval: always"), "{text}");
        assert!(text.contains("routes"), "{text}");
    }
}

#[test]
fn a_cluster_of_zero_or_eight_is_refused() {
    assert!(NatsCluster::start(0).is_err());
    assert!(NatsCluster::start(8).is_err());
}
