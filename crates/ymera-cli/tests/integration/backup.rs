//! `ymera backup create | verify | restore` against real stacks started with `ymera up`:
//! a populated stack survives the loss of every data directory; a backup taken while
//! writes go on holds everything accepted before it started; corrupted archives are
//! refused by verify and restore, which then change nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Row;

const YMERA: &str = env!("CARGO_BIN_EXE_ymera");

fn ymera(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(YMERA)
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("POSTGRES_URL")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn all_services_built() -> bool {
    let dir = Path::new(YMERA).parent().unwrap();
    ["communication", "config", "drafting", "security"]
        .iter()
        .all(|s| dir.join(format!("ymera-{s}")).is_file())
}

/// The first port of a block of `n` consecutive ports, free now and below the kernel's
/// ephemeral range: `ymera up` puts service i's side port at `--http-base-port + i`, and a
/// port after one from `free_port()` may be held by any outgoing connection (drafting at
/// `base + 3` once failed to bind for 90 s). See [`ymera_devstack::free_port_block`].
fn port_block(n: u16) -> u16 {
    ymera_devstack::free_port_block(n).unwrap()
}

/// A stack started with `ymera up --detach` in its own directory and ports.
struct UpStack {
    dir: PathBuf,
    nats_url: String,
    database_url: String,
}

/// Ports one stack may use: up to 7 nats-servers (client, monitor and route port
/// each), PostgreSQL, Redis, the gateway's public ports and the side ports of 6
/// services × up to 8 replicas.
const STACK_PORTS: u16 = 80;

impl UpStack {
    fn start(dir: &Path, services: Option<&str>, env: &[(&str, &str)]) -> UpStack {
        Self::start_with(dir, services, env, 1, 1)
    }

    /// `ymera up --cluster <cluster> --replicas <replicas>`.
    fn start_with(
        dir: &Path,
        services: Option<&str>,
        env: &[(&str, &str)],
        cluster: u16,
        replicas: u16,
    ) -> UpStack {
        let base = port_block(STACK_PORTS);
        let port = |offset: u16| (base + offset).to_string();
        let (nats, monitor, route) = (port(0), port(7), port(14));
        let (postgres, redis, gateway, http) = (port(21), port(22), port(23), port(31));
        let (cluster, replicas) = (cluster.to_string(), replicas.to_string());
        let mut args = vec![
            "up",
            "--detach",
            "--dir",
            dir.to_str().unwrap(),
            "--nats-port",
            &nats,
            "--nats-monitor-port",
            &monitor,
            "--nats-route-port",
            &route,
            "--cluster",
            &cluster,
            "--replicas",
            &replicas,
            "--postgres-port",
            &postgres,
            "--redis-port",
            &redis,
            "--gateway-port",
            &gateway,
            "--http-base-port",
            &http,
        ];
        if let Some(services) = services {
            args.extend(["--services", services]);
        }
        let out = ymera(&args, env);
        ok(
            &out,
            &format!(
                "ymera up ({})",
                std::fs::read_to_string(dir.join("logs/stack.log")).unwrap_or_default()
            ),
        );
        let info: Value =
            serde_json::from_slice(&std::fs::read(dir.join("stack.json")).unwrap()).unwrap();
        UpStack {
            dir: dir.to_owned(),
            nats_url: info["nats_url"].as_str().unwrap().to_owned(),
            database_url: info["postgres_url"].as_str().unwrap().to_owned(),
        }
    }

    fn dir_arg(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn down(&self) {
        ok(
            &ymera(&["down", "--dir", self.dir_arg()], &[]),
            "ymera down",
        );
    }

    /// Waits until every service answers its health check (each up to 90 s); a
    /// failure shows the end of the service's logs and of the stack's log.
    async fn wait_healthy(&self, client: &async_nats::Client, services: &[&str]) {
        for service in services {
            if let Err(err) =
                ymera_devstack::wait_healthy(client, service, Duration::from_secs(90)).await
            {
                let mut logs = String::new();
                let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.join("logs"))
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                    .unwrap_or_default();
                names.sort();
                for path in names {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    if name.starts_with(service) || name == "stack.log" {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(40).collect();
                        logs.push_str(&format!("--- {name} (end)\n"));
                        for line in tail.into_iter().rev() {
                            logs.push_str(line);
                            logs.push('\n');
                        }
                    }
                }
                panic!("{err}\n{logs}");
            }
        }
    }
}

impl Drop for UpStack {
    fn drop(&mut self) {
        let _ = ymera(&["down", "--dir", self.dir_arg()], &[]);
    }
}

/// A request to a Ymera endpoint; an error header fails the test.
async fn call(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    call_with(client, subject, body, HeaderMap::new()).await
}

async fn call_with(
    client: &async_nats::Client,
    subject: &str,
    body: Value,
    headers: HeaderMap,
) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers(subject.to_owned(), headers, body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    if let Some(h) = &reply.headers
        && let Some(err) = h.get("Nats-Service-Error")
    {
        panic!(
            "{subject} failed: {} {}",
            err.as_str(),
            String::from_utf8_lossy(&reply.payload)
        );
    }
    serde_json::from_slice(&reply.payload).unwrap()
}

/// Checksum (md5 of every row as text, in order) and row count per table.
async fn table_checksums(url: &str) -> BTreeMap<String, (i64, String)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for table in tables {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        out.insert(table, (row.get(0), row.get(1)));
    }
    pool.close().await;
    out
}

/// Waits until two readings of the checksums 1 s apart agree (no write in flight).
async fn quiescent_checksums(url: &str) -> BTreeMap<String, (i64, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = table_checksums(url).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = table_checksums(url).await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the database never settled");
        last = now;
    }
}

/// An agent answering its inbox; records every envelope id it was given, with counts.
fn spawn_agent(
    client: async_nats::Client,
    name: &str,
) -> (
    Arc<Mutex<HashMap<String, u32>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let seen2 = seen.clone();
    let subject = format!("agent.{name}.inbox");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = tokio::spawn(async move {
        let mut sub = client.subscribe(subject).await.unwrap();
        client.flush().await.unwrap();
        ready_tx.send(()).unwrap();
        while let Some(message) = sub.next().await {
            if let Ok(envelope) = serde_json::from_slice::<Value>(&message.payload)
                && let Some(id) = envelope["id"].as_str()
            {
                *seen2.lock().unwrap().entry(id.to_owned()).or_default() += 1;
            }
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, "{}".into()).await;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (seen, handle)
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends `count` messages to `recipient` (64 in flight); returns their ids.
async fn send_many(client: &async_nats::Client, recipient: &str, count: usize) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let recipient = recipient.to_owned();
            async move {
                let id = uuid::Uuid::now_v7().to_string();
                let envelope = json!({"id": id, "type": "event", "sender": format!("sender-{}", i % 10),
                    "recipients": [recipient], "subject": format!("m{i}"), "payload": {"i": i}});
                call(&client, "communication.send", envelope).await;
                id
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

async fn stream_messages(client: &async_nats::Client, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream(stream).await.unwrap();
    s.info().await.unwrap().state.messages
}

/// Every envelope id stored in `stream` (read from a restored stack's stream).
async fn ids_in_stream(client: &async_nats::Client, stream: &str) -> HashSet<String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut s = js.get_stream(stream).await.unwrap();
    let info = s.info().await.unwrap().state.clone();
    let mut ids = HashSet::new();
    if info.messages == 0 {
        return ids;
    }
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(message) = s.get_raw_message(seq).await {
            let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
            ids.insert(envelope["id"].as_str().unwrap().to_owned());
        }
    }
    ids
}

/// Writers that keep the platform busy: `senders` tasks sending copies to `recipient`
/// and one writing config versions of `agent`, each recording what was accepted when.
struct Writers {
    accepted: Arc<Mutex<Vec<(Instant, String)>>>,
    versions: Arc<Mutex<Vec<(Instant, i64)>>>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(client: &async_nats::Client, senders: usize, recipient: &str, agent: &str) -> Self {
        let accepted: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let versions: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut tasks = Vec::new();
        for w in 0..senders {
            let (client, accepted, stop) = (client.clone(), accepted.clone(), stop.clone());
            let recipient = recipient.to_owned();
            tasks.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let id = uuid::Uuid::now_v7().to_string();
                    let envelope = json!({"id": id, "type": "event", "sender": format!("writer-{w}"),
                        "recipients": [recipient], "subject": "load", "payload": {"w": w}});
                    call(&client, "communication.send", envelope).await;
                    accepted.lock().unwrap().push((Instant::now(), id));
                }
            }));
        }
        {
            let (client, versions, stop) = (client.clone(), versions.clone(), stop.clone());
            let agent = agent.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    let r = call(
                        &client,
                        "config.set",
                        json!({"agent": agent, "environment": "production",
                        "config": {"i": i}, "actor": "writer"}),
                    )
                    .await;
                    versions
                        .lock()
                        .unwrap()
                        .push((Instant::now(), r["version"].as_i64().unwrap_or(-1)));
                    i += 1;
                }
            }));
        }
        Self {
            accepted,
            versions,
            stop,
            tasks,
        }
    }

    /// Stops every writer and waits for it.
    async fn finish(self) -> Self {
        self.stop.cancel();
        for t in self.tasks {
            t.await.unwrap();
        }
        Self {
            tasks: Vec::new(),
            ..self
        }
    }

    /// The ids accepted before `t`.
    fn accepted_before(&self, t: Instant) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at < t)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The highest config version accepted before `t`.
    fn last_version_before(&self, t: Instant) -> i64 {
        self.versions
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at < t)
            .map(|(_, v)| *v)
            .max()
            .unwrap()
    }
}

fn create_archive(stack: &UpStack, out: &Path, tar: bool) -> (PathBuf, Value) {
    let mut args = vec![
        "--json",
        "backup",
        "create",
        "--dir",
        stack.dir_arg(),
        "--out",
        out.to_str().unwrap(),
    ];
    if tar {
        args.push("--tar");
    }
    let summary: Value = serde_json::from_str(&ok(&ymera(&args, &[]), "backup create")).unwrap();
    (PathBuf::from(summary["archive"].as_str().unwrap()), summary)
}

/// ≥ 10,000 messages (1,500 to an absent agent, some dead-lettered), 100 agents'
/// config with versions, keys and tokens, drafts with revisions, comments and templates
/// → create → every data directory deleted → restore into a fresh stack → every table
/// equal, undelivered copies delivered once the agent is back, dead letters replayable,
/// a token issued before the backup still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trip_survives_losing_every_data_directory() {
    if !all_services_built() {
        eprintln!("skipped: service binaries not built beside {YMERA}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (dir_a, dir_b, out) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("backups"),
    );
    // One attempt per copy: the absent agent's first copies are dead-lettered, then its
    // circuit opens (the rest stay undelivered; one probe per 20 s is dead-lettered).
    // Copies deferred by the open circuit are NAKed with a delay of up to 20 s, which
    // the consumer state in the snapshot keeps.
    let env_a = [
        ("COMM_MAX_ATTEMPTS", "1"),
        ("COMM_BREAKER_FAILURES", "5"),
        ("COMM_BREAKER_OPEN_MS", "20000"),
        ("COMM_RATE_LIMIT", "1000000"),
        ("LOG_LEVEL", "warn"),
    ];
    let a = UpStack::start(&dir_a, None, &env_a);
    let client = async_nats::connect(&a.nats_url).await.unwrap();
    a.wait_healthy(
        &client,
        &["communication", "config", "drafting", "security"],
    )
    .await;

    // Messages: 8,500 delivered, 1,500 to an agent that is not there.
    let (present, present_task) = spawn_agent(client.clone(), "present");
    let sent_present = send_many(&client, "present", 8_500).await;
    let sent_absent = send_many(&client, "absent", 1_500).await;
    wait_until("8,500 deliveries", Duration::from_secs(120), async || {
        present.lock().unwrap().len() == sent_present.len()
    })
    .await;
    present_task.abort();

    // Config: 100 agents, 3 versions each (audit rows with them).
    futures::stream::iter(0..300)
        .map(|i| {
            let client = client.clone();
            async move {
                let agent = format!("agent-{}", i % 100);
                call(
                    &client,
                    "config.set",
                    json!({"agent": agent, "environment": "production",
                    "config": {"round": i / 100, "name": agent}, "actor": "backup-test"}),
                )
                .await;
            }
        })
        .buffered(1)
        .collect::<Vec<_>>()
        .await;

    // Keys and a token.
    let admin = std::fs::read_to_string(dir_a.join("admin.key")).unwrap();
    let mut admin_headers = HeaderMap::new();
    admin_headers.insert("X-API-Key", admin.trim());
    let created = call_with(
        &client,
        "security.keys.create",
        json!({"owner": "backup-test", "permissions": ["config:read"]}),
        admin_headers,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    headers.insert("X-API-Key", key.as_str());
    let issued = call_with(
        &client,
        "security.tokens.issue",
        json!({"ttl_seconds": 3600}),
        headers.clone(),
    )
    .await;
    let token = issued["token"].as_str().unwrap().to_owned();

    // Drafts with revisions and comments, and a template.
    call(
        &client,
        "drafting.template.set",
        json!({"name": "Backup memo", "content": "# {{title}}\n\nBody."}),
    )
    .await;
    let mut drafts = Vec::new();
    for i in 0..20 {
        let d = call(
            &client,
            "drafting.create",
            json!({"title": format!("Draft {i}"),
            "content": format!("First text of draft {i}."), "author_id": "alice"}),
        )
        .await;
        let id = d["draft_id"].as_str().unwrap().to_owned();
        call(&client, "drafting.update", json!({"draft_id": id, "author_id": "alice",
            "content": format!("Second text of draft {i}, longer."), "expected_version": d["version"]}))
        .await;
        call(
            &client,
            "drafting.comment",
            json!({"draft_id": id, "action": "add",
            "body": "Looks good", "start": 0, "end": 5, "author_id": "bob"}),
        )
        .await;
        drafts.push(id);
    }

    // Settled: every copy to the absent agent is either waiting or dead-lettered.
    wait_until(
        "the absent agent's copies to settle",
        Duration::from_secs(60),
        async || {
            let dead = stream_messages(&client, "YMERA_DLQ").await;
            let waiting = stream_messages(&client, "YMERA_MESSAGES").await;
            dead > 0 && dead + waiting == 1_500
        },
    )
    .await;
    // The archive must hold exactly the tables as they were: retried if a circuit probe
    // (a dead-lettered copy) changed the database while `create` ran.
    let mut attempt = 0;
    let (before, archive, summary) = loop {
        let before = quiescent_checksums(&a.database_url).await;
        let (archive, summary) = create_archive(&a, &out, true);
        if table_checksums(&a.database_url).await == before {
            break (before, archive, summary);
        }
        attempt += 1;
        assert!(attempt < 5, "the database kept changing during create");
        std::fs::remove_file(&archive).unwrap();
    };
    assert!(before["config_versions"].0 >= 300, "{before:?}");
    let streams: HashMap<String, u64> = summary["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    // A copy dead-lettered between the two stream snapshots is in both.
    let in_archive = streams["YMERA_MESSAGES"] + streams["YMERA_DLQ"];
    assert!((1_500..=1_502).contains(&in_archive), "{summary}");
    ok(
        &ymera(&["backup", "verify", archive.to_str().unwrap()], &[]),
        "backup verify",
    );

    // Disaster: the stack and every data directory are gone.
    drop(client);
    a.down();
    std::fs::remove_dir_all(&dir_a).unwrap();

    // A fresh stack with its servers only (code-analysis stores nothing) → restore.
    let b = UpStack::start(&dir_b, Some("code-analysis"), &[]);
    let restored: Value = serde_json::from_str(&ok(
        &ymera(
            &[
                "--json",
                "backup",
                "restore",
                archive.to_str().unwrap(),
                "--dir",
                b.dir_arg(),
            ],
            &[],
        ),
        "backup restore",
    ))
    .unwrap();
    assert_eq!(restored["replaced"], json!([]), "{restored}");
    let after = table_checksums(&b.database_url).await;
    assert_eq!(after, before, "every table equal row for row");
    b.down();

    // The whole platform on the restored data; the absent agent comes back.
    let env_b = [
        ("COMM_MAX_ATTEMPTS", "100"),
        ("COMM_BREAKER_OPEN_MS", "200"),
        ("COMM_RETRY_BASE_MS", "20"),
        ("COMM_RETRY_CAP_MS", "300"),
        ("LOG_LEVEL", "warn"),
    ];
    let b = UpStack::start(&dir_b, None, &env_b);
    let client = async_nats::connect(&b.nats_url).await.unwrap();
    let (absent, _absent_task) = spawn_agent(client.clone(), "absent");
    b.wait_healthy(
        &client,
        &["communication", "config", "drafting", "security"],
    )
    .await;
    let waiting = streams["YMERA_MESSAGES"] as usize;
    let dead = streams["YMERA_DLQ"];
    let deadline = Instant::now() + Duration::from_secs(120);
    while absent.lock().unwrap().len() < waiting {
        if Instant::now() > deadline {
            let js = async_nats::jetstream::new(client.clone());
            let mut stream = js.get_stream("YMERA_MESSAGES").await.unwrap();
            let state = stream.info().await.unwrap().state.clone();
            let consumer = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>("deliver-absent")
                .await
                .map(|c| format!("{:?}", c.cached_info()));
            panic!(
                "{} of {waiting} undelivered copies arrived; stream {state:?}; consumer {consumer:?}\n{}",
                absent.lock().unwrap().len(),
                std::fs::read_to_string(dir_b.join("logs/communication.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Dead letters can be replayed.
    let replay = call(
        &client,
        "communication.dlq.replay",
        json!({"recipient": "absent", "limit": 1000}),
    )
    .await;
    assert_eq!(replay["replayed"].as_u64().unwrap(), dead, "{replay}");
    wait_until(
        "the replayed dead letters",
        Duration::from_secs(60),
        async || absent.lock().unwrap().len() == 1_500,
    )
    .await;
    {
        let seen = absent.lock().unwrap();
        let expected: HashSet<&String> = sent_absent.iter().collect();
        assert_eq!(seen.keys().collect::<HashSet<_>>(), expected);
        // Only a copy that was in both snapshots may arrive twice.
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.len() as u64 <= in_archive - 1_500,
            "delivered more than once: {twice:?}"
        );
    }

    // Keys and tokens from before the backup still verify.
    let verified = call(&client, "security.tokens.verify", json!({"token": token})).await;
    assert_eq!(verified["claims"]["sub"], "backup-test", "{verified}");
    call_with(
        &client,
        "security.tokens.issue",
        json!({"ttl_seconds": 60}),
        headers,
    )
    .await;
    // Config versions, drafts with revisions and comments are served again.
    let history = call(
        &client,
        "config.history",
        json!({"agent": "agent-7", "environment": "production"}),
    )
    .await;
    assert!(
        history.to_string().matches("\"version\"").count() >= 3,
        "{history}"
    );
    let draft = call(
        &client,
        "drafting.get",
        json!({"draft_id": drafts[3], "include": ["comments"]}),
    )
    .await;
    assert!(
        draft.to_string().contains("Second text of draft 3"),
        "{draft}"
    );
    assert!(draft.to_string().contains("Looks good"), "{draft}");
    let revisions = call(
        &client,
        "drafting.revisions",
        json!({"draft_id": drafts[3]}),
    )
    .await;
    assert!(
        revisions.to_string().contains("First text of draft 3")
            || revisions.to_string().matches("revision").count() >= 2,
        "{revisions}"
    );
}

/// Writes keep going during `create`; after a restore nothing accepted before `create`
/// started is missing (history rows in the dump, undelivered copies in the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_concurrent_writes_keeps_everything_accepted_before_it() {
    if !all_services_built() {
        eprintln!("skipped: service binaries not built beside {YMERA}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let env = [
        ("COMM_MAX_ATTEMPTS", "100"),
        ("COMM_BREAKER_FAILURES", "1"),
        ("COMM_BREAKER_OPEN_MS", "3600000"),
        ("COMM_RATE_LIMIT", "1000000"),
        ("LOG_LEVEL", "warn"),
    ];
    let a = UpStack::start(&root.path().join("a"), None, &env);
    let client = async_nats::connect(&a.nats_url).await.unwrap();
    a.wait_healthy(&client, &["communication", "config"]).await;

    // Writers: messages to an absent agent and config versions, recording what was
    // accepted and when.
    let writers = Writers::start(&client, 4, "sink", "loaded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let (archive, _) = create_archive(&a, &root.path().join("out"), false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writers = writers.finish().await;
    let before_create = writers.accepted_before(started);
    let during = writers.accepted.lock().unwrap().len() - before_create.len();
    assert!(
        before_create.len() > 100 && during > 0,
        "{} before, {during} during",
        before_create.len()
    );
    let last_version = writers.last_version_before(started);
    drop(client);
    a.down();

    let b = UpStack::start(&root.path().join("b"), Some("code-analysis"), &[]);
    ok(
        &ymera(
            &[
                "backup",
                "restore",
                archive.to_str().unwrap(),
                "--dir",
                b.dir_arg(),
            ],
            &[],
        ),
        "backup restore",
    );
    let client = async_nats::connect(&b.nats_url).await.unwrap();
    let in_stream = ids_in_stream(&client, "YMERA_MESSAGES").await;
    let missing: Vec<_> = before_create
        .iter()
        .filter(|id| !in_stream.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted before create are not in the stream",
        missing.len()
    );
    let pool = sqlx::PgPool::connect(&b.database_url).await.unwrap();
    let history: HashSet<String> =
        sqlx::query_scalar("SELECT message_id::text FROM message_history")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let missing: Vec<_> = before_create
        .iter()
        .filter(|id| !history.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted before create are not in the history",
        missing.len()
    );
    let max_version: Option<i64> = sqlx::query_scalar(
        "SELECT max(version) FROM config_versions WHERE agent = 'loaded' AND environment = 'production'",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(None);
    assert!(
        max_version.unwrap_or(0) >= last_version,
        "{max_version:?} < {last_version}"
    );
}

/// A flipped byte, a missing part or a wrong format version: verify and restore refuse
/// the archive with a clear message, and restore (even with --replace) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_archives_are_refused_and_change_nothing() {
    if !all_services_built() {
        eprintln!("skipped: service binaries not built beside {YMERA}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let a = UpStack::start(
        &root.path().join("a"),
        Some("communication,config"),
        &[("LOG_LEVEL", "warn")],
    );
    let client = async_nats::connect(&a.nats_url).await.unwrap();
    a.wait_healthy(&client, &["communication", "config"]).await;
    for i in 0..5 {
        call(
            &client,
            "config.set",
            json!({"agent": "victim", "environment": "production",
            "config": {"i": i}, "actor": "test"}),
        )
        .await;
    }
    send_many(&client, "nobody", 20).await;
    let out = root.path().join("out");
    let (good, _) = create_archive(&a, &out, false);
    let (good_tar, _) = create_archive(&a, &out, true);
    ok(
        &ymera(&["backup", "verify", good.to_str().unwrap()], &[]),
        "verify good",
    );
    let before = quiescent_checksums(&a.database_url).await;
    let messages_before = stream_messages(&client, "YMERA_MESSAGES").await;

    let copy = |name: &str| {
        let dst = root.path().join(name);
        Command::new("cp")
            .arg("-r")
            .arg(&good)
            .arg(&dst)
            .status()
            .unwrap();
        dst
    };
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    };
    let flipped = copy("flipped");
    flip(&flipped.join("postgres.dump"));
    let missing = copy("missing");
    std::fs::remove_file(missing.join("streams/YMERA_MESSAGES.snapshot")).unwrap();
    let wrong_version = copy("wrong-version");
    let manifest_path = wrong_version.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["format_version"] = json!(99);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let flipped_tar = root.path().join("flipped.tar");
    std::fs::copy(&good_tar, &flipped_tar).unwrap();
    flip(&flipped_tar);

    let cases: [(&Path, &str); 4] = [
        (&flipped, "part postgres.dump fails its checksum"),
        (
            &missing,
            "part streams/YMERA_MESSAGES.snapshot is missing from the archive",
        ),
        (&wrong_version, "unsupported backup format_version 99"),
        (&flipped_tar, "fails its checksum"),
    ];
    for (archive, message) in cases {
        let archive = archive.to_str().unwrap();
        for args in [
            vec!["backup", "verify", archive],
            vec![
                "backup",
                "restore",
                archive,
                "--dir",
                a.dir_arg(),
                "--replace",
            ],
        ] {
            let out = ymera(&args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "{args:?} accepted a corrupted archive"
            );
            assert!(stderr.contains(message), "{args:?}: {stderr}");
        }
    }
    // A good archive into the non-empty stack without --replace is refused too.
    let out = ymera(
        &[
            "backup",
            "restore",
            good.to_str().unwrap(),
            "--dir",
            a.dir_arg(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the target stack is not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table_checksums(&a.database_url).await,
        before,
        "restore changed the database"
    );
    assert_eq!(
        stream_messages(&client, "YMERA_MESSAGES").await,
        messages_before
    );
}

/// Replicas and peers of every platform stream on a stack: name → (num_replicas of its
/// configuration, servers holding it: leader + replicas).
async fn stream_placement(client: &async_nats::Client) -> BTreeMap<String, (usize, usize)> {
    let js = async_nats::jetstream::new(client.clone());
    let mut names = js.stream_names();
    let mut out = BTreeMap::new();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        if !name.starts_with("YMERA_") && !name.starts_with("KV_YMERA_") {
            continue;
        }
        let info = js
            .get_stream(&name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        let peers = info
            .cluster
            .as_ref()
            .map(|c| usize::from(c.leader.is_some()) + c.replicas.len())
            .unwrap_or(1);
        out.insert(name, (info.config.num_replicas, peers));
    }
    out
}

/// The cluster stack (`ymera up --cluster 3 --replicas 2`: 3-node JetStream, R3
/// streams, 2 replicas of every service) with writes going on during `create`, then a
/// restore into a fresh cluster stack: every stream back at R3 on 3 servers, every copy
/// accepted before `create` started delivered once its agent is back, config versions,
/// API keys and tokens back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_stack_round_trip_under_writes() {
    if !all_services_built() {
        eprintln!("skipped: service binaries not built beside {YMERA}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (dir_a, dir_b, out) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("backups"),
    );
    let services = "security,communication,config";
    // Copies to the absent agent stay undelivered: the circuit opens at the first failure
    // and stays open for the whole test, so no copy runs out of attempts (the same
    // settings as `backup_under_concurrent_writes_keeps_everything_accepted_before_it`).
    let env_a = [
        ("COMM_MAX_ATTEMPTS", "100"),
        ("COMM_BREAKER_FAILURES", "1"),
        ("COMM_BREAKER_OPEN_MS", "3600000"),
        ("COMM_RATE_LIMIT", "1000000"),
        ("LOG_LEVEL", "warn"),
    ];
    let a = UpStack::start_with(&dir_a, Some(services), &env_a, 3, 2);
    let client = async_nats::connect(a.nats_url.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    a.wait_healthy(&client, &["security", "communication", "config"])
        .await;

    // A key and a token issued with it; config versions; copies to an absent agent.
    let admin = std::fs::read_to_string(dir_a.join("admin.key")).unwrap();
    let mut admin_headers = HeaderMap::new();
    admin_headers.insert("X-API-Key", admin.trim());
    let created = call_with(
        &client,
        "security.keys.create",
        json!({"owner": "cluster-test", "permissions": ["config:read"]}),
        admin_headers,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    headers.insert("X-API-Key", key.as_str());
    let issued = call_with(
        &client,
        "security.tokens.issue",
        json!({"ttl_seconds": 3600}),
        headers.clone(),
    )
    .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let mut sent = send_many(&client, "absent", 300).await;

    // Writers during `create`: copies to the absent agent and config versions.
    let writers = Writers::start(&client, 2, "absent", "clustered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let placement_a = stream_placement(&client).await;
    assert_eq!(
        placement_a.get("YMERA_MESSAGES"),
        Some(&(3, 3)),
        "{placement_a:?}"
    );
    let started = Instant::now();
    let (archive, summary) = create_archive(&a, &out, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writers = writers.finish().await;
    let during = writers.accepted.lock().unwrap().len();
    sent.extend(writers.accepted_before(started));
    let all_accepted: HashSet<String> = writers
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .chain(sent.iter().cloned())
        .collect();
    assert!(
        sent.len() > 300 && during > sent.len() - 300,
        "no writes during create: {} before, {during} in all",
        sent.len() - 300
    );
    let last_version = writers.last_version_before(started);
    let in_archive = summary["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "YMERA_MESSAGES")
        .map(|s| s["messages"].as_u64().unwrap())
        .unwrap();

    // Disaster: the whole cluster stack and its data directories are gone.
    drop(client);
    a.down();
    std::fs::remove_dir_all(&dir_a).unwrap();

    // A fresh cluster stack (servers only) → restore: every stream at R3 on 3 servers.
    let b = UpStack::start_with(&dir_b, Some("code-analysis"), &[], 3, 1);
    let restored: Value = serde_json::from_str(&ok(
        &ymera(
            &[
                "--json",
                "backup",
                "restore",
                archive.to_str().unwrap(),
                "--dir",
                b.dir_arg(),
            ],
            &[],
        ),
        "backup restore into the cluster",
    ))
    .unwrap();
    assert_eq!(restored["replaced"], json!([]), "{restored}");
    let client = async_nats::connect(b.nats_url.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let mut placement_b = BTreeMap::new();
    wait_until(
        "every restored stream on 3 servers",
        Duration::from_secs(30),
        async || {
            placement_b = stream_placement(&client).await;
            placement_b == placement_a
        },
    )
    .await;
    assert_eq!(stream_messages(&client, "YMERA_MESSAGES").await, in_archive);
    drop(client);
    b.down();

    // The cluster stack with 2 replicas of every service on the restored data; the absent
    // agent comes back.
    let env_b = [
        ("COMM_MAX_ATTEMPTS", "100"),
        ("COMM_BREAKER_OPEN_MS", "200"),
        ("COMM_RETRY_BASE_MS", "20"),
        ("COMM_RETRY_CAP_MS", "300"),
        ("LOG_LEVEL", "warn"),
    ];
    let b = UpStack::start_with(&dir_b, Some(services), &env_b, 3, 2);
    let client = async_nats::connect(b.nats_url.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let (absent, _absent_task) = spawn_agent(client.clone(), "absent");
    b.wait_healthy(&client, &["security", "communication", "config"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let seen = absent.lock().unwrap();
            sent.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 && absent.lock().unwrap().len() as u64 >= in_archive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} copies accepted before create were not delivered; {} of {in_archive} in the archive arrived\n{}",
            sent.len(),
            absent.lock().unwrap().len(),
            std::fs::read_to_string(dir_b.join("logs/communication-1.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    {
        let seen = absent.lock().unwrap();
        let unknown: Vec<_> = seen
            .keys()
            .filter(|id| !all_accepted.contains(*id))
            .collect();
        assert!(
            unknown.is_empty(),
            "delivered copies never sent: {unknown:?}"
        );
    }
    let placement = stream_placement(&client).await;
    assert_eq!(
        placement.get("YMERA_MESSAGES"),
        Some(&(3, 3)),
        "{placement:?}"
    );

    // Keys, tokens and config versions from before the backup.
    let verified = call(&client, "security.tokens.verify", json!({"token": token})).await;
    assert_eq!(verified["claims"]["sub"], "cluster-test", "{verified}");
    call_with(
        &client,
        "security.tokens.issue",
        json!({"ttl_seconds": 60}),
        headers,
    )
    .await;
    let history = call(
        &client,
        "config.history",
        json!({"agent": "clustered", "environment": "production"}),
    )
    .await;
    let restored_max = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .max()
        .unwrap_or(0);
    assert!(
        restored_max >= last_version,
        "config history ends at version {restored_max}, {last_version} was accepted before create: {history}"
    );
}
