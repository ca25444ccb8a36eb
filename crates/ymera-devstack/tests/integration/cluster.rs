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

/// Acceptance: `ymera up --cluster 3 --replicas 2` runs a 3-node JetStream cluster and two
/// instances of every service, each on its own HTTP port, and `ymera health` shows (and
/// passes) every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ymera_up_cluster_3_replicas_2_and_health_shows_every_instance() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    use ymera_devstack::{StackInfo, beside_current_exe, pid_alive};

    use crate::up::{descendants, free_port_range};

    let ymera = beside_current_exe("ymera").unwrap_or_else(|err| {
        panic!(
            "{err}: this test runs the `ymera` binary that `cargo build --workspace --bins` makes"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("stack");
    let out = dir.path().join("up.out");
    let err = dir.path().join("up.err");
    let nats_port = free_port_range(3);
    let mut up = Command::new(&ymera)
        .arg("up")
        .arg("--dir")
        .arg(&state)
        .args(["--cluster", "3", "--replicas", "2"])
        .args(["--nats-port", &nats_port.to_string()])
        .args(["--nats-monitor-port", &free_port_range(3).to_string()])
        .args(["--nats-route-port", &free_port_range(3).to_string()])
        .args(["--postgres-port", &free_port_range(1).to_string()])
        .args(["--redis-port", &free_port_range(1).to_string()])
        // 6 services × 2 replicas.
        .args(["--http-base-port", &free_port_range(12).to_string()])
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let report = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    };
    struct KillOnDrop(Vec<u32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            for pid in self.0.iter().filter(|&&pid| pid_alive(pid)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    let mut guard = KillOnDrop(vec![up.id()]);

    let deadline = Instant::now() + Duration::from_secs(240);
    let info = loop {
        if let Some(info) = StackInfo::read(&state) {
            break info;
        }
        assert!(
            up.try_wait().unwrap().is_none(),
            "ymera up exited\n{}",
            report()
        );
        assert!(Instant::now() < deadline, "no stack.json\n{}", report());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    guard.0.extend(descendants(up.id()));
    assert_eq!(info.nats_servers.len(), 3, "{info:?}");
    assert_eq!(info.nats_url.split(',').count(), 3);
    let mut ports: Vec<u16> = info.services.iter().map(|(_, port)| *port).collect();
    let instances = ports.len();
    assert!(instances >= 2 && instances.is_multiple_of(2), "{info:?}");
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        instances,
        "every instance has its own HTTP port"
    );

    // `ymera health` passes once every instance answers (discovery + HTTP side ports).
    let deadline = Instant::now() + Duration::from_secs(120);
    let output = loop {
        let output = Command::new(&ymera)
            .args([
                "health",
                "--expect",
                &instances.to_string(),
                "--wait-ms",
                "1000",
            ])
            .env("NATS_URL", &info.nats_url)
            .env("YMERA_HOME", &state)
            .output()
            .unwrap();
        if output.status.success() || Instant::now() >= deadline {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}\n{}", report());
    for node in ["nats-server n1", "nats-server n2", "nats-server n3"] {
        assert!(text.contains(node), "{node} missing:\n{text}");
    }
    for (name, _) in &info.services {
        assert!(
            text.contains(&format!("ymera-{name} #2")),
            "{name} #2 missing:\n{text}"
        );
    }

    // Stop: SIGTERM to ymera up stops everything.
    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while up.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "ymera up did not stop\n{}",
            report()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while guard.0.iter().any(|&pid| pid_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "processes left after ymera up stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn node_groups_give_every_node_its_own_gid() {
    // Switching groups needs root (the chaos suite's partition runs as root).
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        eprintln!("skipped: not root");
        return;
    }
    let cluster = NatsCluster::start_with(NatsClusterOptions {
        node_group_base: Some(61_000),
        ..NatsClusterOptions::new(3)
    })
    .unwrap();
    for i in 0..3 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", cluster.nodes()[i].pid())).unwrap();
        let gid = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
        let expected = 61_000 + i as u32;
        assert_eq!(cluster.node_group(i), Some(expected));
        assert!(
            gid.split_whitespace()
                .skip(1)
                .all(|g| g == expected.to_string()),
            "node {i}: {gid}"
        );
    }
    assert_eq!(cluster.node_group(3), None);
}
