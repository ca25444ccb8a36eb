//! Collaboration with two drafting processes on one nats-server and one
//! PostgreSQL: join on one, update on either, kill -9 the first, and every
//! editor converges with the stored content, nothing committed twice.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::client::ServiceClient;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, Text, Transact, Update};

use crate::common::start_servers;

/// A drafting binary.
struct Replica {
    child: tokio::process::Child,
}

impl Replica {
    async fn start(servers: &ymera_testkit::Servers, interval: &str) -> Replica {
        let port = ymera_testkit::free_port().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ymera-drafting"));
        command.env_clear();
        if let Some(url) = servers.redis_url() {
            command.env("REDIS_URL", url);
        }
        let child = command
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NATS_URL", servers.nats.url())
            .env("POSTGRES_URL", &servers.database_url)
            .env("ENVIRONMENT", "development")
            .env("YMERA_AUTH", "off")
            .env("YMERA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("AUTO_SAVE_INTERVAL", interval)
            .env("LOG_LEVEL", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let replica = Replica { child };
        ymera_testkit::eventually(Duration::from_secs(30), "the replica is ready", || async {
            matches!(
                ymera_testkit::try_http_get(port, "/ready").await,
                Some((200, _))
            )
        })
        .await;
        replica
    }

    /// kill -9, and wait until it is gone.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// `drafting.collab.update` requests each running instance answered, from
/// `$SRV.STATS.drafting` (one reply per instance).
async fn update_counts(nats: &async_nats::Client) -> Vec<u64> {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await.unwrap();
    nats.publish_with_reply("$SRV.STATS.drafting", inbox, "".into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let mut counts = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        let stats: Value = serde_json::from_slice(&msg.payload).unwrap();
        let n = stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["subject"] == "drafting.collab.update")
            .map_or(0, |e| e["num_requests"].as_u64().unwrap_or(0));
        counts.push(n);
    }
    counts
}

struct Editor {
    id: String,
    doc: Doc,
}

impl Editor {
    fn new(id: &str) -> Editor {
        Editor {
            id: id.to_owned(),
            doc: Doc::with_options(Options {
                offset_kind: OffsetKind::Utf16,
                ..Options::default()
            }),
        }
    }

    fn apply(&self, b64: &str) {
        let update = Update::decode_v1(&B64.decode(b64).unwrap()).unwrap();
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("content");
        text.get_string(&self.doc.transact())
    }

    /// Appends `s`; the update as base64 v1.
    fn append(&self, s: &str) -> String {
        let text = self.doc.get_or_insert_text("content");
        let before = self.doc.transact().state_vector();
        let end = self.text().encode_utf16().count() as u32;
        text.insert(&mut self.doc.transact_mut(), end, s);
        B64.encode(self.doc.transact().encode_state_as_update_v1(&before))
    }

    fn state_vector(&self) -> String {
        B64.encode(self.doc.transact().state_vector().encode_v1())
    }
}

async fn call(client: &ServiceClient, subject: &str, body: Value) -> Value {
    // A request that went to a replica as it died is resent (the contract
    // allows it: a Yjs update applies once however often it is sent).
    let mut last = None;
    for _ in 0..20 {
        match client.request::<_, Value>(subject, &body).await {
            Ok(v) => return v,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("{subject}: {last:?}");
}

async fn stored(db_url: &str, draft: &str) -> (String, Vec<(String, String)>) {
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let content: String = sqlx::query_scalar("SELECT content FROM drafts WHERE draft_id=$1")
        .bind(draft)
        .fetch_one(&pool)
        .await
        .unwrap();
    let revisions: Vec<(String, String)> = sqlx::query_as(
        "SELECT source, content FROM draft_revisions WHERE draft_id=$1 ORDER BY revision",
    )
    .bind(draft)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    (content, revisions)
}

#[tokio::test]
async fn collaboration_survives_the_replica_that_opened_the_session() {
    let servers = start_servers(false);
    let a = Replica::start(&servers, "300ms").await;
    let nats = async_nats::connect(servers.nats.url()).await.unwrap();
    let client = ServiceClient::new(nats.clone()).with_timeout(Duration::from_secs(5));
    call(
        &client,
        "drafting.create",
        json!({"draft_id": "ha", "title": "HA", "author_id": "ann", "content": "Start.\n"}),
    )
    .await;
    let mut updates = nats.subscribe("drafting.collab.ha.updates").await.unwrap();
    nats.flush().await.unwrap();

    // Joined while only A runs: A opens the session.
    let ann = Editor::new("ann-tab");
    let joined = call(
        &client,
        "drafting.collab.join",
        json!({"draft_id": "ha", "user_id": "ann", "client_id": ann.id}),
    )
    .await;
    ann.apply(joined["state"].as_str().unwrap());
    let u = ann.append("[a0]");
    call(
        &client,
        "drafting.collab.update",
        json!({"draft_id": "ha", "client_id": ann.id, "update": u}),
    )
    .await;

    let b = Replica::start(&servers, "300ms").await;
    let bob = Editor::new("bob-tab");
    let joined = call(
        &client,
        "drafting.collab.join",
        json!({"draft_id": "ha", "user_id": "bob", "client_id": bob.id}),
    )
    .await;
    bob.apply(joined["state"].as_str().unwrap());
    assert_eq!(bob.text(), "Start.\n[a0]");
    assert_eq!(joined["editors"].as_array().unwrap().len(), 2);

    // Both edit; the queue group spreads the updates over A and B, each
    // answering for clients that joined on the other.
    let before = update_counts(&nats).await;
    assert_eq!(before.len(), 2, "two replicas answer");
    for i in 1..=20 {
        for e in [&ann, &bob] {
            let u = e.append(&format!("[{}{i}]", &e.id[..1]));
            let reply = call(
                &client,
                "drafting.collab.update",
                json!({"draft_id": "ha", "client_id": e.id, "update": u}),
            )
            .await;
            assert_eq!(reply["editors"].as_array().unwrap().len(), 2, "{reply}");
        }
    }
    let after = update_counts(&nats).await;
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| *n >= 5),
        "both replicas answered updates: {before:?} -> {after:?}"
    );

    // A dies without a chance to flush anything.
    a.kill().await;
    for i in 21..=25 {
        for e in [&ann, &bob] {
            let u = e.append(&format!("[{}{i}]", &e.id[..1]));
            call(
                &client,
                "drafting.collab.update",
                json!({"draft_id": "ha", "client_id": e.id, "update": u}),
            )
            .await;
        }
    }
    // Every editor catches up by state vector (on B) and converges.
    let mut texts = Vec::new();
    for e in [&ann, &bob] {
        let reply = call(
            &client,
            "drafting.collab.update",
            json!({"draft_id": "ha", "client_id": e.id, "state_vector": e.state_vector()}),
        )
        .await;
        e.apply(reply["missing"].as_str().unwrap());
        assert_eq!(e.text(), reply["text"].as_str().unwrap());
        texts.push(e.text());
    }
    assert_eq!(texts[0], texts[1]);
    for i in 0..=25 {
        assert!(texts[0].contains(&format!("[a{i}]")), "{}", texts[0]);
        if i > 0 {
            assert!(texts[0].contains(&format!("[b{i}]")), "{}", texts[0]);
        }
    }
    // Every stored update was broadcast with its number.
    let mut seqs = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(300), updates.next()).await
    {
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        seqs.push(v["seq"].as_i64().unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=51).collect::<Vec<i64>>());

    // B's periodic commit stores the merged text while the editors stay.
    ymera_testkit::eventually(Duration::from_secs(10), "the merged text is stored", || {
        let (url, want) = (servers.database_url.clone(), texts[0].clone());
        async move { stored(&url, "ha").await.0 == want }
    })
    .await;
    // A third replica joins the same session.
    let c = Replica::start(&servers, "300ms").await;
    let cy = Editor::new("cy-tab");
    let joined = call(
        &client,
        "drafting.collab.join",
        json!({"draft_id": "ha", "user_id": "cy", "client_id": cy.id}),
    )
    .await;
    cy.apply(joined["state"].as_str().unwrap());
    assert_eq!(cy.text(), texts[0]);
    // Ticks of both replicas pass: nothing more is committed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for e in [&ann, &bob, &cy] {
        call(
            &client,
            "drafting.collab.update",
            json!({"draft_id": "ha", "client_id": e.id, "leave": true}),
        )
        .await;
    }
    let (content, revisions) = stored(&servers.database_url, "ha").await;
    assert_eq!(content, texts[0]);
    assert!(
        revisions.windows(2).all(|w| w[0].1 != w[1].1),
        "a text was committed twice: {revisions:?}"
    );
    assert_eq!(
        revisions.iter().filter(|r| r.1 == texts[0]).count(),
        1,
        "{revisions:?}"
    );
    assert!(revisions.iter().skip(1).all(|r| r.0 == "collab"));
    let d = call(&client, "drafting.get", json!({"draft_id": "ha"})).await;
    assert!(d["editors"].as_array().unwrap().is_empty());
    // The session is over: a REST update goes through again.
    call(
        &client,
        "drafting.update",
        json!({"draft_id": "ha", "content": "after"}),
    )
    .await;
    c.kill().await;
    b.kill().await;
}

async fn autosaves(db_url: &str, draft: &str) -> Vec<String> {
    stored(db_url, draft)
        .await
        .1
        .into_iter()
        .filter(|(source, _)| source == "autosave")
        .map(|(_, content)| content)
        .collect()
}

#[tokio::test]
async fn a_buffered_autosave_outlives_the_replica_that_took_it() {
    let servers = start_servers(true);
    let a = Replica::start(&servers, "3s").await;
    let b = Replica::start(&servers, "3s").await;
    let nats = async_nats::connect(servers.nats.url()).await.unwrap();
    let client = ServiceClient::new(nats).with_timeout(Duration::from_secs(5));
    call(
        &client,
        "drafting.create",
        json!({"draft_id": "as", "title": "AS", "author_id": "ann", "content": "v0"}),
    )
    .await;
    let save = |content: &str| json!({"draft_id": "as", "content": content, "autosave": true});
    let ack = call(&client, "drafting.update", save("v1")).await;
    assert_eq!(ack["buffered"], "redis");
    ymera_testkit::eventually(Duration::from_secs(10), "v1 is persisted", || {
        let url = servers.database_url.clone();
        async move { stored(&url, "as").await.0 == "v1" }
    })
    .await;
    // Both replicas keep the interval of the draft's last persist (in
    // Redis), whichever persisted it: v2 waits.
    call(&client, "drafting.update", save("v2")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(stored(&servers.database_url, "as").await.0, "v1");
    // The replicas die one after the other; what they buffered is persisted
    // by the ones left, once, after the interval.
    a.kill().await;
    ymera_testkit::eventually(Duration::from_secs(15), "v2 is persisted by B", || {
        let url = servers.database_url.clone();
        async move { stored(&url, "as").await.0 == "v2" }
    })
    .await;
    call(&client, "drafting.update", save("v3")).await;
    b.kill().await;
    let c = Replica::start(&servers, "3s").await;
    ymera_testkit::eventually(Duration::from_secs(15), "v3 is persisted by C", || {
        let url = servers.database_url.clone();
        async move { stored(&url, "as").await.0 == "v3" }
    })
    .await;
    assert_eq!(
        autosaves(&servers.database_url, "as").await,
        ["v1", "v2", "v3"]
    );
    c.kill().await;
}

#[tokio::test]
async fn concurrent_updates_on_two_replicas_are_numbered_once_and_converge() {
    let servers = start_servers(false);
    let a = Replica::start(&servers, "30s").await;
    let b = Replica::start(&servers, "30s").await;
    let nats = async_nats::connect(servers.nats.url()).await.unwrap();
    let client = ServiceClient::new(nats.clone()).with_timeout(Duration::from_secs(10));
    let mut subs = Vec::new();
    let mut editors = Vec::new();
    for d in 0..4 {
        let draft = format!("cc{d}");
        call(
            &client,
            "drafting.create",
            json!({"draft_id": draft, "title": "C", "author_id": "ann", "content": "|"}),
        )
        .await;
        subs.push(
            nats.subscribe(format!("drafting.collab.{draft}.updates"))
                .await
                .unwrap(),
        );
        for e in 0..3 {
            let editor = Editor::new(&format!("{draft}-e{e}"));
            let joined = call(
                &client,
                "drafting.collab.join",
                json!({"draft_id": draft, "user_id": format!("u{e}"), "client_id": editor.id}),
            )
            .await;
            editor.apply(joined["state"].as_str().unwrap());
            editors.push((draft.clone(), editor));
        }
    }
    nats.flush().await.unwrap();
    // 12 editors × 20 edits, all in flight at once, over both replicas.
    let mut requests = Vec::new();
    for round in 0..20 {
        for (draft, e) in &editors {
            let update = e.append(&format!("<{}.{round}>", e.id));
            let body = json!({"draft_id": draft, "client_id": e.id, "update": update});
            let client = client.clone();
            requests.push(async move {
                client
                    .request::<_, Value>("drafting.collab.update", &body)
                    .await
            });
        }
    }
    for reply in futures::future::join_all(requests).await {
        reply.unwrap();
    }
    assert!(update_counts(&nats).await.iter().all(|n| *n > 0));
    for (d, sub) in subs.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        while seqs.len() < 60 {
            let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap_or_else(|_| panic!("cc{d}: {} broadcasts", seqs.len()))
                .unwrap();
            let v: Value = serde_json::from_slice(&msg.payload).unwrap();
            seqs.push(v["seq"].as_i64().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=60).collect::<Vec<i64>>(), "cc{d}");
    }
    // Every editor of a draft converges on the same text with every edit.
    for d in 0..4 {
        let draft = format!("cc{d}");
        let mut texts = Vec::new();
        for (_, e) in editors.iter().filter(|(id, _)| *id == draft) {
            let reply = call(
                &client,
                "drafting.collab.update",
                json!({"draft_id": draft, "client_id": e.id, "state_vector": e.state_vector()}),
            )
            .await;
            e.apply(reply["missing"].as_str().unwrap());
            texts.push(e.text());
        }
        assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:?}");
        assert_eq!(texts[0].matches('<').count(), 60, "{}", texts[0]);
    }
    a.kill().await;
    b.kill().await;
}
