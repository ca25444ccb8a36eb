//! `connect_nats`'s failover watcher against real nats-servers: a client of a server cut off
//! from the other two of a 3-node cluster moves to one of them; it never moves on a healthy
//! cluster, on a cluster that lost a server it is not on, or on a single server; it lets its
//! connection go once the caller dropped the client.
//!
//! The partition test cuts a server off as `ymera chaos` does: nftables rules on the
//! loopback of a network namespace the test makes for itself (`unshare --net`: it runs
//! itself again in there), never on the host, never an address outside 127.0.0.0/8. Without
//! root, `unshare` or `nft` it is skipped with a printed reason.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ymera_core::client::{ServiceClient, connect_nats};
use ymera_core::config::NatsSettings;
use ymera_testkit::{NatsCluster, NatsClusterOptions, NatsServer};

/// Set for the run inside the test's own network namespace, to the namespace of the run
/// that made it.
const NETNS_ENV: &str = "YMERA_FAILOVER_TEST_NETNS";
/// Node i of the partition test's cluster runs with group `NODE_GROUP_BASE + i`.
const NODE_GROUP_BASE: u32 = 62_000;
const TABLE: &str = "ymera_failover_test";
const MARK: u32 = 0x5946;
/// How long the client may take to reach the majority: the servers drop the dead routes
/// after ~4–6 s (route keep-alive 2 s × 2), the watcher needs two checks 0.5 s apart.
const MOVE_WITHIN: Duration = Duration::from_secs(15);

fn settings(url: String) -> NatsSettings {
    NatsSettings {
        url,
        ..NatsSettings::default()
    }
}

/// Answers `failover.echo` with the request's payload, on `url`.
async fn echo_service(url: String) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt as _;
    let client = async_nats::connect(url).await.unwrap();
    let mut requests = client.subscribe("failover.echo").await.unwrap();
    client.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = client.publish(reply, request.payload).await;
            }
        }
    })
}

async fn echo(client: &ServiceClient) -> bool {
    client
        .request_bytes("failover.echo", "ping".into())
        .await
        .is_ok_and(|reply| reply.as_ref() == b"ping")
}

/// The server (by name) `client` is on.
fn server_of(client: &async_nats::Client) -> String {
    client.server_info().server_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_a_client_of_a_cut_off_server_moves_to_the_majority() {
    if std::env::var_os(NETNS_ENV).is_none() {
        match skip_reason() {
            Some(reason) => {
                println!("SKIPPED: the partition needs {reason}");
                return;
            }
            None => return rerun_in_own_netns(),
        }
    }
    assert!(
        in_private_netns(),
        "{NETNS_ENV} names this process's own network namespace: no rule written"
    );
    run_checked("ip", &["link", "set", "lo", "up"]);
    let cluster = NatsCluster::start_with(NatsClusterOptions {
        node_group_base: Some(NODE_GROUP_BASE),
        ..NatsClusterOptions::new(3)
    })
    .unwrap();
    let urls = cluster.url_list();
    // The services are on the majority side (n2), the client under test on n1.
    let _echo = echo_service(urls[1].clone()).await;
    let client = connect_nats(&settings(urls[0].clone()), "failover-test")
        .await
        .unwrap();
    let service = ServiceClient::new(client.clone()).with_timeout(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !echo(&service).await {
        assert!(Instant::now() < deadline, "no echo before the partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_off = server_of(&client);
    assert_eq!(cut_off, "n1");

    let others: Vec<u16> = (1..3).filter_map(|i| cluster.route_port(i)).collect();
    cut(
        cluster.route_port(0).unwrap(),
        cluster.node_group(0).unwrap(),
        &others,
    );
    let cut_at = Instant::now();
    // While the partition lasts: the client leaves n1, and its requests are answered again.
    let mut answered = None;
    while cut_at.elapsed() < MOVE_WITHIN {
        if server_of(&client) != cut_off && echo(&service).await {
            answered = Some(cut_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on = server_of(&client);
    heal();
    let answered = answered.unwrap_or_else(|| {
        panic!(
            "still on {on} {} s after the partition (n1 cut off), requests unanswered",
            MOVE_WITHIN.as_secs()
        )
    });
    println!(
        "moved from {cut_off} to {on}; answered again {:.2} s after the cut",
        answered.as_secs_f64()
    );
    assert!(on == "n2" || on == "n3", "on {on}");
    // Once there it stays (the new server reaches a majority).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server_of(&client), on);
    assert!(echo(&service).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_never_moves_on_a_healthy_cluster_nor_when_another_server_dies() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let urls = cluster.url_list();
    let client = connect_nats(&settings(urls.join(",")), "failover-test")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.server_info().server_name.is_empty() {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on = server_of(&client);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server_of(&client), on);
    // A server the client is not on dies: the two left are still a majority of three.
    let other = (0..3)
        .find(|i| cluster.server_name(*i) != Some(on.as_str()))
        .unwrap();
    cluster.kill(other).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(server_of(&client), on, "moved off a majority server");
    assert_eq!(
        client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_watcher_stays_put_on_a_single_server_and_lets_the_connection_go() {
    let server = NatsServer::start().unwrap();
    let client = connect_nats(&settings(server.url()), "failover-test")
        .await
        .unwrap();
    let service = ServiceClient::new(client.clone());
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(connections(server.monitor_port()), 1);
    drop(service);
    drop(client);
    // The watcher held a clone: it lets it go within a check or two.
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections(server.monitor_port()) != 0 {
        assert!(
            Instant::now() < deadline,
            "the connection outlived the client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of client connections of the server with monitoring port `port`.
fn connections(port: u16) -> u64 {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /connz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let connz: serde_json::Value = serde_json::from_str(body).unwrap();
    connz["num_connections"].as_u64().unwrap()
}

/// Why the partition test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Some("root (unshare --net, one group per nats-server)".to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["unshare", "nft", "ip", "setpriv"] {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            return Some(format!(
                "{tool} (scripts/setup.d/chaos-netns.sh installs it)"
            ));
        }
    }
    None
}

/// Runs this test again inside `unshare --net` and fails when that run fails.
fn rerun_in_own_netns() {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args([
            "failover::failover_a_client_of_a_cut_off_server_moves_to_the_majority",
            "--exact",
            "--nocapture",
        ])
        .env(NETNS_ENV, own_netns())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the run inside unshare --net failed: {status}"
    );
}

fn own_netns() -> OsString {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .into_os_string()
}

fn in_private_netns() -> bool {
    std::env::var_os(NETNS_ENV).is_some_and(|outer| !outer.is_empty() && own_netns() != outer)
}

/// Cuts the node with route port `route` and group `group` off from the route ports
/// `others` (the rules of `ymera chaos`'s partition, crates/ymera-cli/src/chaos/partition.rs).
fn cut(route: u16, group: u32, others: &[u16]) {
    assert!(
        in_private_netns(),
        "not in the test's own network namespace"
    );
    let others = others
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let lo = "oifname \"lo\" ip daddr 127.0.0.0/8";
    let rules = format!(
        "table inet {TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    \
         {lo} tcp dport {route} drop\n    \
         {lo} tcp sport {route} drop\n    \
         {lo} meta skgid {group} tcp dport {{ {others} }} ct mark set {MARK} drop\n    \
         {lo} ct mark {MARK} drop\n  }}\n}}\n"
    );
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed");
}

fn heal() {
    assert!(in_private_netns());
    run_checked("nft", &["delete", "table", "inet", TABLE]);
}

fn run_checked(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}
