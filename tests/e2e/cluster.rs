//! The platform on a real 3-node JetStream cluster with 2 replicas of a service
//! (DESIGN §5 `YMERA_JS_REPLICAS`, §11): streams at R3 (an existing R1 stream scaled in
//! place), a shared durable consumer delivering each copy once across two communication
//! processes, config reads on either replica seeing every committed write, the security
//! key cache and signing-key rotation across two security processes, code analysis on
//! either replica.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_devstack::{NatsCluster, Service, ServiceOptions};
use ymera_testkit::proto::request_raw;
use ymera_testkit::shared_postgres;

use crate::services::wait_healthy;

/// A 3-node cluster, a fresh database, and the environment of a service on them.
struct Cluster {
    nats: NatsCluster,
    urls: String,
    database_url: String,
}

impl Cluster {
    fn start() -> Self {
        let nats = NatsCluster::start(3).unwrap();
        let database_url = shared_postgres().create_database().unwrap();
        Self {
            urls: nats.urls(),
            nats,
            database_url,
        }
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url_list()).await.unwrap()
    }

    /// Starts replica `instance` of `service` with authentication off.
    fn spawn(&self, service: &str, instance: usize, extra: &[(&str, &str)]) -> Service {
        let options = ServiceOptions::binary(service)
            .unwrap_or_else(|err| panic!("{err} (build the workspace binaries first)"))
            .env("NATS_URL", &self.urls)
            .env("POSTGRES_URL", &self.database_url)
            .env("ENVIRONMENT", "development")
            .env("YMERA_AUTH", "off")
            .env("LOG_LEVEL", "warn")
            .env("YMERA_HTTP_ADDR", "127.0.0.1:0")
            .envs(extra.iter().copied());
        let service = Service::start(options).unwrap();
        eprintln!(
            "{service} #{instance}: log {}",
            service.log_path().display(),
            service = service.name()
        );
        service
    }
}

/// Waits until `$SRV.PING.<service>` gets `count` answers.
async fn wait_instances(client: &async_nats::Client, service: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if instance_stats(client, service).await.len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} instances of {service} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `$SRV.STATS.<service>` of every instance: instance id → requests per endpoint subject.
async fn instance_stats(
    client: &async_nats::Client,
    service: &str,
) -> HashMap<String, HashMap<String, u64>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(format!("$SRV.STATS.{service}"), inbox, Bytes::new())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut found = HashMap::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await
    {
        let stats: Value = serde_json::from_slice(&message.payload).unwrap();
        let endpoints = stats["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["subject"].as_str().unwrap_or_default().to_owned(),
                    e["num_requests"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        found.insert(
            stats["id"].as_str().unwrap_or_default().to_owned(),
            endpoints,
        );
    }
    found
}

/// Asserts that every instance of `service` answered `subject` at least once.
async fn assert_every_instance_served(client: &async_nats::Client, service: &str, subject: &str) {
    let stats = instance_stats(client, service).await;
    assert_eq!(stats.len(), 2, "{stats:?}");
    for (id, endpoints) in &stats {
        assert!(
            endpoints.get(subject).copied().unwrap_or(0) > 0,
            "instance {id} of {service} never served {subject}: {stats:?}"
        );
    }
}

async fn request(client: &async_nats::Client, subject: &str, body: &Value) -> Value {
    let (code, reply) = request_raw(client, subject, async_nats::HeaderMap::new(), body).await;
    assert_eq!(code, None, "{subject}: {reply}");
    reply
}

async fn replicas_of(js: &jetstream::Context, name: &str) -> (usize, usize) {
    let mut stream = js.get_stream(name).await.unwrap();
    let info = stream.info().await.unwrap();
    let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
    (info.config.num_replicas, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_r3_an_r1_stream_is_scaled_and_two_replicas_deliver_each_copy_once() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let js = jetstream::new(client.clone());
    // YMERA_MESSAGES made before, at R1 (as every earlier version did).
    js.create_stream(stream::Config {
        name: "YMERA_MESSAGES".into(),
        subjects: vec!["ymera.messages.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(replicas_of(&js, "YMERA_MESSAGES").await.0, 1);

    let _a = cluster.spawn("communication", 1, &[]);
    let _b = cluster.spawn("communication", 2, &[]);
    wait_healthy(&client, "communication").await;
    wait_instances(&client, "communication", 2).await;

    // Default on 3 servers: R3, the old stream scaled in place, the new one created at R3.
    for name in ["YMERA_MESSAGES", "YMERA_DLQ"] {
        let (replicas, peers) = replicas_of(&js, name).await;
        assert_eq!(replicas, 3, "{name}");
        assert_eq!(peers, 2, "{name}: two followers besides the leader");
    }

    // An outside agent acknowledges every copy; 60 sends spread over both replicas.
    let mut inbox = client.subscribe("agent.outside.inbox").await.unwrap();
    client.flush().await.unwrap();
    let mut sent = Vec::new();
    for i in 0..60 {
        let envelope = json!({"type": "event", "sender": "tester", "recipients": ["outside"],
                              "subject": format!("m{i}"), "payload": {"i": i}});
        let accepted = request(&client, "communication.send", &envelope).await;
        sent.push(accepted["id"].as_str().unwrap().to_owned());
    }
    let mut received: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() && Instant::now() < deadline {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), inbox.next()).await
        else {
            continue;
        };
        if let Some(reply) = message.reply.clone() {
            client
                .publish(reply, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        *received
            .entry(envelope["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // Anything more that arrives within a second would be a duplicate.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), inbox.next()).await {
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        *received
            .entry(envelope["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &sent {
        assert_eq!(
            received.get(id),
            Some(&1),
            "copy {id} delivered {:?} times",
            received.get(id)
        );
    }
    assert_every_instance_served(&client, "communication", "communication.send").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_replica_count_is_used_exactly() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let _a = cluster.spawn("communication", 1, &[("YMERA_JS_REPLICAS", "2")]);
    wait_healthy(&client, "communication").await;
    let js = jetstream::new(client.clone());
    assert_eq!(replicas_of(&js, "YMERA_MESSAGES").await.0, 2);

    // A malformed value stops the process at start, naming the variable.
    let bad = cluster.spawn("communication", 2, &[("YMERA_JS_REPLICAS", "9")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while bad.exit_status().is_none() {
        assert!(
            Instant::now() < deadline,
            "YMERA_JS_REPLICAS=9 was accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bad.log_tail().contains("YMERA_JS_REPLICAS"),
        "{}",
        bad.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reads_on_either_replica_see_every_committed_write() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    // The shared version floor lives in Redis, as compose and k8s ship it: without
    // Redis a replica learns of a change only from the change event, which a read sent
    // after the write's reply can overtake on another route of the cluster (seen in CI).
    let redis = ymera_devstack::Redis::start().unwrap();
    let redis_url = redis.url();
    let with_redis = [("REDIS_URL", redis_url.as_str())];
    let _a = cluster.spawn("config", 1, &with_redis);
    let _b = cluster.spawn("config", 2, &with_redis);
    wait_healthy(&client, "config").await;
    wait_instances(&client, "config", 2).await;

    for version in 1..=5 {
        request(
            &client,
            "config.set",
            &json!({"agent": "shop", "environment": "base", "config": {"round": version}}),
        )
        .await;
        // Every read after the write's reply, on whichever replica, sees it (both caches
        // were warmed with the previous value by the reads of the round before).
        for _ in 0..12 {
            let got = request(
                &client,
                "config.get",
                &json!({"agent": "shop", "environment": "base"}),
            )
            .await;
            assert_eq!(got["config"]["round"], version, "stale read: {got}");
        }
    }
    assert_every_instance_served(&client, "config", "config.get").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_analysis_answers_on_either_replica() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let _a = cluster.spawn("code-analysis", 1, &[]);
    let _b = cluster.spawn("code-analysis", 2, &[]);
    wait_healthy(&client, "code-analysis").await;
    wait_instances(&client, "code-analysis", 2).await;
    for _ in 0..16 {
        let reply = request(
            &client,
            "code-analysis.analyze",
            &json!({"files": [{"path": "a.py", "content": "def run(cmd):\n    return eval(cmd)\n"}]}),
        )
        .await;
        assert!(reply.to_string().contains("B307"), "{reply}");
    }
    assert_every_instance_served(&client, "code-analysis", "code-analysis.analyze").await;
}

/// `psql -c sql` on the shared cluster's database `url`.
fn psql(url: &str, sql: &str) -> String {
    let database = url.rsplit('/').next().unwrap();
    let output = shared_postgres()
        .client_command("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-At", "-d", database, "-c", sql])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_key_cache_and_signing_key_rotation_across_two_replicas() {
    let cluster = Cluster::start();
    let client = cluster.client().await;
    let master = (
        "YMERA_MASTER_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("admin.key").display().to_string();
    let a = cluster.spawn(
        "security",
        1,
        &[master, ("YMERA_BOOTSTRAP_ADMIN_KEY", key_path.as_str())],
    );
    a.wait_healthy(&client, Duration::from_secs(60))
        .await
        .unwrap();
    let admin = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    let mut b = cluster.spawn("security", 2, &[master]);
    wait_instances(&client, "security", 2).await;
    let as_admin = |subject: &'static str, body: Value| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("X-API-Key", admin.as_str());
            let (code, reply) = request_raw(&client, subject, headers, &body).await;
            assert_eq!(code, None, "{subject}: {reply}");
            reply
        }
    };

    let created = as_admin(
        "security.keys.create",
        json!({"owner": "alice", "permissions": ["config:read"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let authorize = json!({"credential": key, "permission": "config:read"});
    // Both replicas allow it (and cache it).
    for _ in 0..12 {
        let reply = request(&client, "security.authorize", &authorize).await;
        assert_eq!(reply["allowed"], true, "{reply}");
    }
    // Revoked on one replica: no replica allows it any more.
    as_admin("security.keys.revoke", json!({"key_id": created["key_id"]})).await;
    for _ in 0..12 {
        let reply = request(&client, "security.authorize", &authorize).await;
        assert_eq!(
            reply["allowed"], false,
            "a replica still allows a revoked key: {reply}"
        );
    }
    assert_every_instance_served(&client, "security", "security.authorize").await;

    // Signing-key rotation by one replica: tokens of the old key and of the new one
    // verify on both.
    let bearer = as_admin(
        "security.keys.create",
        json!({"owner": "bob", "permissions": ["config:read"]}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let issue = |client: async_nats::Client, bearer: String| async move {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-API-Key", bearer.as_str());
        let (code, reply) =
            request_raw(&client, "security.tokens.issue", headers, &json!({})).await;
        assert_eq!(code, None, "{reply}");
        reply["token"].as_str().unwrap().to_owned()
    };
    let old_token = issue(client.clone(), bearer.clone()).await;
    let old_kid = kid_of(&old_token);
    // Retire the current key (it still verifies until it expires) and restart replica 2:
    // at start it finds no key that can sign and rotates.
    psql(
        &cluster.database_url,
        "UPDATE signing_keys SET retire_at = now() - interval '1 second'",
    );
    b.kill().unwrap();
    let _b = cluster.spawn("security", 2, &[master]);
    wait_instances(&client, "security", 2).await;
    let rotated = psql(&cluster.database_url, "SELECT count(*) FROM signing_keys");
    assert_eq!(rotated.trim(), "2", "replica 2 made a new signing key");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_token = loop {
        let token = issue(client.clone(), bearer.clone()).await;
        if kid_of(&token) != old_kid {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "no token signed with the new key"
        );
    };
    for token in [&old_token, &new_token] {
        for _ in 0..12 {
            let reply = request(&client, "security.tokens.verify", &json!({"token": token})).await;
            assert_eq!(reply["valid"], true, "{reply}");
        }
    }
    assert_every_instance_served(&client, "security", "security.tokens.verify").await;
}
