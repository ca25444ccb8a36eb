//! Real-time collaboration: simulated yrs clients and a real Yjs client.

use std::process::Stdio;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, Text, Transact, Update};

use crate::common::{Drafting, service_config, start_servers};

struct RustClient {
    id: String,
    doc: Doc,
}

impl RustClient {
    fn new(id: &str) -> RustClient {
        RustClient {
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

    fn len16(&self) -> u32 {
        self.text().encode_utf16().count() as u32
    }

    /// Inserts at a UTF-16 offset; returns the update (base64 v1).
    fn insert(&self, index: u32, s: &str) -> String {
        let text = self.doc.get_or_insert_text("content");
        let before = self.doc.transact().state_vector();
        text.insert(&mut self.doc.transact_mut(), index, s);
        B64.encode(self.doc.transact().encode_state_as_update_v1(&before))
    }

    fn state_vector(&self) -> String {
        B64.encode(self.doc.transact().state_vector().encode_v1())
    }

    async fn join(&self, svc: &Drafting, draft: &str, user: &str) {
        let joined = svc
            .ok(
                "drafting.collab.join",
                json!({"draft_id": draft, "user_id": user, "client_id": self.id}),
            )
            .await;
        self.apply(joined["state"].as_str().unwrap());
    }

    async fn sync(&self, svc: &Drafting, draft: &str) -> String {
        let reply = svc
            .ok("drafting.collab.update", json!({"draft_id": draft, "client_id": self.id, "state_vector": self.state_vector()}))
            .await;
        self.apply(reply["missing"].as_str().unwrap());
        reply["text"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn five_clients_converge_and_the_merged_text_is_committed() {
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    svc.ok(
        "drafting.create",
        json!({"draft_id": "shared", "title": "Shared", "author_id": "ann", "content": "Start.\n"}),
    )
    .await;
    let mut sub = svc
        .client
        .nats()
        .subscribe("drafting.collab.shared.updates")
        .await
        .unwrap();
    svc.client.nats().flush().await.unwrap();

    let clients: Vec<RustClient> = (0..5).map(|i| RustClient::new(&format!("c{i}"))).collect();
    for (i, c) in clients.iter().enumerate() {
        c.join(&svc, "shared", &format!("user{i}")).await;
    }
    let editors = svc.ok("drafting.get", json!({"draft_id": "shared"})).await["editors"].clone();
    assert_eq!(editors.as_array().unwrap().len(), 5);
    // REST updates are refused while a session is live.
    assert_eq!(
        svc.err(
            "drafting.update",
            json!({"draft_id": "shared", "content": "x"})
        )
        .await,
        ymera_core::ErrorKind::Conflict
    );

    assert_eq!(
        svc.err(
            "drafting.transition",
            json!({"draft_id": "shared", "to": "archived"})
        )
        .await,
        ymera_core::ErrorKind::Conflict
    );

    // Every client edits concurrently without seeing the others' edits.
    let mut sends = Vec::new();
    for round in 0..4 {
        for (i, c) in clients.iter().enumerate() {
            // At either end, so no insert splits an earlier one.
            let pos = if (i as u32 + round).is_multiple_of(2) {
                0
            } else {
                c.len16()
            };
            let update = c.insert(pos, &format!("[{i}.{round} ü]"));
            sends.push(svc.call::<Value>(
                "drafting.collab.update",
                json!({"draft_id": "shared", "client_id": c.id, "update": update}),
            ));
        }
    }
    for r in futures::future::join_all(sends).await {
        // Keystroke replies leave the (costly) merged text out.
        assert!(r.unwrap().get("text").is_none());
    }
    // Each update was broadcast.
    for _ in 0..20 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(v["draft_id"], "shared");
    }

    let mut texts = Vec::new();
    for c in &clients {
        let server_text = c.sync(&svc, "shared").await;
        assert_eq!(c.text(), server_text);
        texts.push(c.text());
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:#?}");
    for i in 0..5 {
        for round in 0..4 {
            assert!(texts[0].contains(&format!("[{i}.{round} ü]")));
        }
    }

    // The last editor leaving commits the merged text as a revision.
    for c in &clients {
        svc.ok(
            "drafting.collab.update",
            json!({"draft_id": "shared", "client_id": c.id, "leave": true}),
        )
        .await;
    }
    let d = svc.ok("drafting.get", json!({"draft_id": "shared"})).await;
    assert_eq!(d["content"].as_str().unwrap(), texts[0]);
    assert!(d["editors"].as_array().unwrap().is_empty());
    let revs = svc
        .ok("drafting.revisions", json!({"draft_id": "shared"}))
        .await;
    assert_eq!(revs["revisions"][0]["source"], "collab");
    svc.stop().await;
}

struct YjsClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl YjsClient {
    fn start() -> Option<YjsClient> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/yjs");
        if !dir.join("node_modules/yjs").exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return None;
            }
        }
        let mut child = tokio::process::Command::new("node")
            .arg("client.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let lines = BufReader::new(child.stdout.take()?).lines();
        Some(YjsClient {
            child,
            stdin,
            lines,
        })
    }

    async fn send(&mut self, msg: Value) -> Value {
        self.stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .unwrap();
        let line = self.lines.next_line().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        v
    }
}

#[tokio::test]
async fn a_real_yjs_client_and_a_rust_client_converge() {
    let Some(mut js) = YjsClient::start() else {
        panic!("node and the yjs package are needed (npm ci in tests/yjs)");
    };
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    svc.ok(
        "drafting.create",
        json!({"draft_id": "yjs", "title": "Y", "author_id": "ann", "content": "Hello"}),
    )
    .await;

    let rust = RustClient::new("rust");
    rust.join(&svc, "yjs", "ann").await;
    let joined = svc
        .ok(
            "drafting.collab.join",
            json!({"draft_id": "yjs", "user_id": "jo", "client_id": "js"}),
        )
        .await;
    js.send(json!({"op": "apply", "update": joined["state"]}))
        .await;

    // Concurrent edits, with text outside the BMP (UTF-16 surrogate pairs).
    let js_update = js
        .send(json!({"op": "insert", "index": 0, "text": "Grüße 🌍, "}))
        .await;
    let rust_update = rust.insert(rust.len16(), " — naïve café 🎉");
    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "yjs", "client_id": "js", "update": js_update["update"]}),
    )
    .await;
    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "yjs", "client_id": "rust", "update": rust_update}),
    )
    .await;
    // The JS side catches up, then edits after the emoji at a UTF-16 index.
    let state = js.send(json!({"op": "state"})).await;
    let reply = svc
        .ok(
            "drafting.collab.update",
            json!({"draft_id": "yjs", "client_id": "js", "state_vector": state["state_vector"]}),
        )
        .await;
    js.send(json!({"op": "apply", "update": reply["missing"]}))
        .await;
    let state = js.send(json!({"op": "state"})).await;
    let idx = state["text"].as_str().unwrap().encode_utf16().count();
    let js_update = js
        .send(json!({"op": "insert", "index": idx, "text": "!"}))
        .await;
    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "yjs", "client_id": "js", "update": js_update["update"]}),
    )
    .await;

    let server_text = rust.sync(&svc, "yjs").await;
    let state = js.send(json!({"op": "state"})).await;
    let reply = svc
        .ok(
            "drafting.collab.update",
            json!({"draft_id": "yjs", "client_id": "js", "state_vector": state["state_vector"]}),
        )
        .await;
    js.send(json!({"op": "apply", "update": reply["missing"]}))
        .await;
    let js_text = js.send(json!({"op": "state"})).await["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rust.text(), server_text);
    assert_eq!(js_text, server_text);
    assert_eq!(server_text, "Grüße 🌍, Hello — naïve café 🎉!");

    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "yjs", "client_id": "js", "leave": true}),
    )
    .await;
    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "yjs", "client_id": "rust", "leave": true}),
    )
    .await;
    let d = svc.ok("drafting.get", json!({"draft_id": "yjs"})).await;
    assert_eq!(d["content"], server_text);
    drop(js.stdin);
    let _ = js.child.wait().await;
    svc.stop().await;
}
