//! deploy/MULTI-REGION.md, checked: two 1-node "regions" (`a`, `b`) joined by a NATS
//! gateway into one super-cluster, `YMERA_MESSAGES` (the platform's configuration: work
//! queue, file store, S2) placed in region a, and its mirror `YMERA_MESSAGES_B` in region
//! b. Publishes acknowledged by region a run at full speed, then region a is killed with
//! SIGKILL: the messages acknowledged in a but missing in b's mirror are what a region
//! failover loses (RPO). The figures are printed (`--no-capture`) for the doc.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use ymera_devstack::{NatsOptions, NatsServer, free_port};

/// One region: a 1-node cluster with a gateway to every region.
struct Region {
    name: &'static str,
    route: u16,
    gateway: u16,
}

fn region_config(dir: &std::path::Path, me: &Region, all: &[&Region]) -> std::path::PathBuf {
    let gateways: Vec<String> = all
        .iter()
        .map(|r| {
            format!(
                "    {{ name: {}, urls: [\"nats://127.0.0.1:{}\"] }}",
                r.name, r.gateway
            )
        })
        .collect();
    // A JetStream cluster needs configured routes: a 1-node region routes to itself
    // (a server ignores its own route).
    let text = format!(
        "server_name: {name}\n\
         cluster {{\n  name: {name}\n  listen: \"127.0.0.1:{route}\"\n  routes: [\"nats://127.0.0.1:{route}\"]\n}}\n\
         gateway {{\n  name: {name}\n  listen: \"127.0.0.1:{gateway}\"\n  gateways: [\n{list}\n  ]\n}}\n",
        name = me.name,
        route = me.route,
        gateway = me.gateway,
        list = gateways.join("\n"),
    );
    let path = dir.join(format!("{}.conf", me.name));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts both regions at once (each waits for a JetStream meta leader, which needs both).
fn start_regions(dir: &std::path::Path) -> (NatsServer, NatsServer) {
    let a = Region {
        name: "a",
        route: free_port().unwrap(),
        gateway: free_port().unwrap(),
    };
    let b = Region {
        name: "b",
        route: free_port().unwrap(),
        gateway: free_port().unwrap(),
    };
    let configs = [
        region_config(dir, &a, &[&a, &b]),
        region_config(dir, &b, &[&a, &b]),
    ];
    let spawn = |config: std::path::PathBuf| {
        std::thread::spawn(move || {
            NatsServer::start_with(NatsOptions {
                config_file: Some(config),
                ..NatsOptions::default()
            })
            .unwrap()
        })
    };
    let (ta, tb) = (spawn(configs[0].clone()), spawn(configs[1].clone()));
    (ta.join().unwrap(), tb.join().unwrap())
}

async fn until<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_joined_by_a_gateway_mirror_ymera_messages_and_failover_loses_the_mirror_lag() {
    let dir = tempdir();
    let (mut a, b) = start_regions(dir.path());
    let client_a = async_nats::connect(a.url()).await.unwrap();
    let client_b = async_nats::connect(b.url()).await.unwrap();
    let (js_a, js_b) = (
        jetstream::new(client_a.clone()),
        jetstream::new(client_b.clone()),
    );

    // The platform's YMERA_MESSAGES (crates/ymera-communication/src/streams.rs), in region a.
    let messages = stream::Config {
        name: "YMERA_MESSAGES".into(),
        subjects: vec!["ymera.messages.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        compression: Some(stream::Compression::S2),
        placement: Some(stream::Placement {
            cluster: Some("a".into()),
            tags: Vec::new(),
        }),
        ..Default::default()
    };
    until("YMERA_MESSAGES in region a", || {
        let (js, config) = (js_a.clone(), messages.clone());
        async move { js.create_stream(config).await.ok() }
    })
    .await;
    // A delivery consumer as communication makes them (filtered, durable): the mirror's
    // own consumer must not conflict with it on the work queue.
    js_a.get_stream("YMERA_MESSAGES")
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some("deliver-agent-x".into()),
            filter_subject: "ymera.messages.agent-x".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    // The mirror in region b (read-only, limits retention: it keeps copies that were
    // already delivered and removed in a).
    let mirror = stream::Config {
        name: "YMERA_MESSAGES_B".into(),
        storage: stream::StorageType::File,
        compression: Some(stream::Compression::S2),
        max_age: Duration::from_secs(24 * 3600),
        mirror: Some(stream::Source {
            name: "YMERA_MESSAGES".into(),
            ..Default::default()
        }),
        placement: Some(stream::Placement {
            cluster: Some("b".into()),
            tags: Vec::new(),
        }),
        ..Default::default()
    };
    js_b.create_stream(mirror).await.unwrap();

    // Steady state: 2,000 messages mirrored.
    for i in 0..2_000u32 {
        js_a.publish("ymera.messages.agent-x", i.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let caught_up = Instant::now();
    until("the mirror catches up", || {
        let js = js_b.clone();
        async move {
            let mut stream = js.get_stream("YMERA_MESSAGES_B").await.ok()?;
            let info = stream.info().await.ok()?;
            (info.state.last_sequence >= 2_000).then_some(())
        }
    })
    .await;
    let catch_up = caught_up.elapsed();

    // Full speed (256 acknowledged publishes in flight), then SIGKILL of region a.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = tokio::task::JoinSet::new();
    for worker in 0..256u32 {
        let (js, stop) = (js_a.clone(), stop.clone());
        publishers.spawn(async move {
            let mut acked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(pending) = js
                    .publish("ymera.messages.agent-x", worker.to_string().into())
                    .await
                else {
                    break;
                };
                match pending.await {
                    Ok(ack) => acked.push(ack.sequence),
                    Err(_) => break,
                }
            }
            acked
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut mirror_stream = js_b.get_stream("YMERA_MESSAGES_B").await.unwrap();
    let lag_before = mirror_stream
        .info()
        .await
        .unwrap()
        .mirror
        .as_ref()
        .map_or(0, |m| m.lag);
    a.kill().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked: Vec<u64> = Vec::new();
    while let Some(result) = publishers.join_next().await {
        acked.extend(result.unwrap());
    }
    let acked_total = acked.len() as u64 + 2_000;
    let last_acked = acked.iter().copied().max().unwrap_or(2_000);

    // What region b holds after region a is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let info = until("the mirror answers in region b", || {
        let js = js_b.clone();
        async move {
            let mut stream = js.get_stream("YMERA_MESSAGES_B").await.ok()?;
            stream.info().await.ok().cloned()
        }
    })
    .await;
    let mirrored = info.state.last_sequence;
    let lost = acked.iter().filter(|seq| **seq > mirrored).count();
    // Sequences are contiguous in a: everything up to `mirrored` is in b.
    assert!(mirrored <= last_acked, "{mirrored} > {last_acked}");
    assert_eq!(info.state.messages, mirrored, "the mirror has gaps");

    // Can region b take writes alone? The super-cluster's JetStream meta group spans both
    // regions: with a gone it has no quorum, so b cannot create or promote a stream.
    let created = tokio::time::timeout(
        Duration::from_secs(5),
        js_b.create_stream(stream::Config {
            name: "FAILOVER_PROBE".into(),
            subjects: vec!["probe.>".into()],
            ..Default::default()
        }),
    )
    .await;
    let b_alone_creates = matches!(created, Ok(Ok(_)));

    eprintln!(
        "multi-region: catch-up of 2,000 messages {:.0} ms; under load {} acknowledged in a \
         ({} in the load phase, last seq {last_acked}), mirror lag before the kill {lag_before}, \
         mirrored in b {mirrored}: RPO {lost} messages ({:.1} % of the load phase); \
         region b alone can create a stream: {b_alone_creates}",
        catch_up.as_secs_f64() * 1e3,
        acked_total,
        acked.len(),
        100.0 * lost as f64 / acked.len().max(1) as f64,
    );
    assert!(mirrored >= 2_000, "the steady-state messages are in b");
    drop(b);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
