//! `GET /v1/collab/{draft_id}` end to end: real nats-server and PostgreSQL,
//! the security, drafting and gateway binaries (authentication required),
//! stock `yjs` + `y-websocket` clients in node and in headless Chromium
//! (tests/collab-js), and a NATS-side editor using `drafting.collab.*`
//! directly with yrs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use ymera_devstack::{Service, ServiceOptions};
use ymera_testkit::Servers;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, Text, Transact, Update};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(20);

// ---- the stack ----

fn options(name: &str, env: &[(String, String)]) -> ServiceOptions {
    ServiceOptions::binary(name)
        .unwrap_or_else(|e| {
            panic!("{e} (build the binaries first: cargo build -p ymera-security -p ymera-drafting -p ymera-gateway)")
        })
        .envs(env.iter().cloned())
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "required")
        .env("LOG_LEVEL", "warn")
}

struct Stack {
    servers: Servers,
    nats: async_nats::Client,
    admin: String,
    _security: Service,
    _drafting: Vec<Service>,
    /// Each gateway: process, options (to start it again), public port, side port.
    gateways: Vec<(Service, ServiceOptions, u16, u16)>,
    _keys: tempfile::TempDir,
}

impl Stack {
    /// Security, `drafting` replicas of drafting and `gateways` gateways.
    async fn start(drafting: usize, gateways: usize) -> Stack {
        let servers = Servers::start();
        let nats = servers.client().await;
        let base: Vec<(String, String)> = servers
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let keys = tempfile::tempdir().unwrap();
        let key_path = keys.path().join("admin.key");
        let mut security_env = base.clone();
        security_env.push((
            "YMERA_BOOTSTRAP_ADMIN_KEY".into(),
            key_path.display().to_string(),
        ));
        let security = Service::start(options("security", &security_env)).unwrap();
        security.wait_healthy(&nats, HEALTH_TIMEOUT).await.unwrap();
        let admin = std::fs::read_to_string(&key_path)
            .unwrap()
            .trim()
            .to_owned();
        let mut drafting_env = base.clone();
        drafting_env.push(("AUTO_SAVE_INTERVAL".into(), "300ms".into()));
        let drafting: Vec<Service> = (0..drafting)
            .map(|_| Service::start(options("drafting", &drafting_env)).unwrap())
            .collect();
        for d in &drafting {
            d.wait_healthy(&nats, HEALTH_TIMEOUT).await.unwrap();
        }
        let mut stack = Stack {
            servers,
            nats,
            admin,
            _security: security,
            _drafting: drafting,
            gateways: Vec::new(),
            _keys: keys,
        };
        for _ in 0..gateways {
            let port = ymera_testkit::free_port().unwrap();
            let side = ymera_testkit::free_port().unwrap();
            let mut env: Vec<(String, String)> = vec![
                ("NATS_URL".into(), stack.servers.nats_url().to_owned()),
                ("GATEWAY_ADDR".into(), format!("127.0.0.1:{port}")),
                ("YMERA_HTTP_ADDR".into(), format!("127.0.0.1:{side}")),
            ];
            env.push(("MAX_MESSAGE_SIZE".into(), "1MiB".into()));
            let opts = options("gateway", &env);
            let service = Service::start(opts.clone()).unwrap();
            stack.gateways.push((service, opts, port, side));
        }
        for i in 0..gateways {
            stack.wait_gateway(i).await;
        }
        stack
    }

    async fn wait_gateway(&self, i: usize) {
        let (service, _, port, _) = &self.gateways[i];
        service
            .wait_healthy(&self.nats, HEALTH_TIMEOUT)
            .await
            .unwrap();
        ymera_testkit::eventually(HEALTH_TIMEOUT, "the gateway listens", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .is_ok()
        })
        .await;
    }

    /// `ws://…/v1/collab` of gateway `i` (y-websocket appends `/<room>`).
    fn collab_url(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}/v1/collab", self.gateways[i].2)
    }

    /// A call as the admin; panics on an error reply.
    async fn admin(&self, subject: &str, body: Value) -> Value {
        call(&self.nats, &self.admin, subject, body)
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"))
    }

    /// A new API key of `owner` with `permissions`.
    async fn key(&self, owner: &str, permissions: &[&str]) -> String {
        let created = self
            .admin(
                "security.keys.create",
                json!({"owner": owner, "permissions": permissions}),
            )
            .await;
        created["key"].as_str().unwrap().to_owned()
    }

    async fn create_draft(&self, id: &str, content: &str) {
        self.admin(
            "drafting.create",
            json!({"draft_id": id, "title": id, "author_id": "ann", "content": content}),
        )
        .await;
    }

    /// The stored content (`drafting.get`).
    async fn stored(&self, id: &str) -> String {
        self.admin("drafting.get", json!({"draft_id": id})).await["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn wait_stored(&self, id: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let now = self.stored(id).await;
            if now == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stored content is {now:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn call(
    nats: &async_nats::Client,
    key: &str,
    subject: &str,
    body: Value,
) -> Result<Value, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", key);
    let (code, reply) = ymera_testkit::proto::request_raw(nats, subject, headers, &body).await;
    match code {
        None => Ok(reply),
        Some(code) => Err(format!("{code}: {reply}")),
    }
}

// ---- the NATS-side editor (yrs, drafting.collab.* directly) ----

struct NatsEditor {
    nats: async_nats::Client,
    key: String,
    draft: String,
    id: String,
    doc: Doc,
    updates: async_nats::Subscriber,
}

impl NatsEditor {
    async fn join(stack: &Stack, key: &str, draft: &str, id: &str) -> NatsEditor {
        let updates = stack
            .nats
            .subscribe(format!("drafting.collab.{draft}.updates"))
            .await
            .unwrap();
        stack.nats.flush().await.unwrap();
        let editor = NatsEditor {
            nats: stack.nats.clone(),
            key: key.to_owned(),
            draft: draft.to_owned(),
            id: id.to_owned(),
            doc: Doc::with_options(Options {
                offset_kind: OffsetKind::Utf16,
                ..Options::default()
            }),
            updates,
        };
        let joined = editor
            .call(
                "drafting.collab.join",
                json!({"draft_id": draft, "user_id": id, "client_id": id}),
            )
            .await;
        editor.apply(joined["state"].as_str().unwrap());
        editor
    }

    async fn call(&self, subject: &str, body: Value) -> Value {
        call(&self.nats, &self.key, subject, body)
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"))
    }

    fn apply(&self, b64: &str) {
        let update = Update::decode_v1(&B64.decode(b64).unwrap()).unwrap();
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("content");
        text.get_string(&self.doc.transact())
    }

    /// Appends `s` and sends the update.
    async fn append(&self, s: &str) {
        let text = self.doc.get_or_insert_text("content");
        let before = self.doc.transact().state_vector();
        let len = text.len(&self.doc.transact());
        text.insert(&mut self.doc.transact_mut(), len, s);
        let update = B64.encode(self.doc.transact().encode_state_as_update_v1(&before));
        self.call(
            "drafting.collab.update",
            json!({"draft_id": self.draft, "client_id": self.id, "update": update}),
        )
        .await;
    }

    /// Applies broadcasts until the text is `expected`.
    async fn wait_text(&mut self, expected: &str) {
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while self.text() != expected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.updates.next()).await {
                Ok(Some(m)) => {
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    self.apply(v["update"].as_str().unwrap());
                }
                _ => panic!(
                    "the NATS editor has {:?}, expected {expected:?}",
                    self.text()
                ),
            }
        }
    }

    async fn leave(&self) {
        self.call(
            "drafting.collab.update",
            json!({"draft_id": self.draft, "client_id": self.id, "leave": true}),
        )
        .await;
    }
}

// ---- the JS clients (tests/collab-js) ----

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/collab-js")
}

/// `npm ci` once when the packages are missing (scripts/setup.d/collab-js.sh
/// installs them on CI).
fn ensure_js() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = js_dir();
        if !dir.join("node_modules/y-websocket").exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (scripts/setup.d/collab-js.sh)");
            assert!(status.success(), "npm ci in tests/collab-js failed");
        }
    });
}

/// One JS client process: `client.mjs` (node) or `browser.mjs` (Chromium).
struct JsClient {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl JsClient {
    async fn start(script: &str) -> JsClient {
        ensure_js();
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut client = JsClient {
            _child: child,
            stdin,
            lines,
        };
        if script == "browser.mjs" {
            let ready = client.read().await;
            assert_eq!(ready["ready"], true, "{ready}");
        }
        client
    }

    async fn read(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the JS client answers")
            .unwrap()
            .expect("the JS client is running");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends a command; the reply (which may be `{"error": …}`).
    async fn try_send(&mut self, cmd: Value) -> Value {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        self.read().await
    }

    /// Sends a command; panics on an error reply.
    async fn send(&mut self, cmd: Value) -> Value {
        let reply = self.try_send(cmd.clone()).await;
        assert!(reply.get("error").is_none(), "{cmd} → {reply}");
        reply
    }

    async fn connect(&mut self, url: &str, draft: &str, token: &str) -> Value {
        self.send(json!({"op": "connect", "url": url, "room": draft, "params": {"token": token}, "timeout_ms": 30000}))
            .await
    }

    async fn wait_text(&mut self, expected: &str) {
        self.send(
            json!({"op": "waitText", "text": expected, "timeout_ms": CONVERGE.as_millis() as u64}),
        )
        .await;
    }
}

/// A JS client and the NATS editor co-edit `draft` (non-ASCII text from
/// both sides); both converge on the stored content.
async fn co_edit(stack: &Stack, js: &mut JsClient, draft: &str, gateway: usize) {
    let key = stack
        .key("writer", &["drafting:read", "drafting:write"])
        .await;
    stack.create_draft(draft, "Start: ").await;
    let mut editor = NatsEditor::join(stack, &key, draft, "nats-editor").await;
    let synced = js.connect(&stack.collab_url(gateway), draft, &key).await;
    assert_eq!(synced["text"], "Start: ", "{synced}");

    js.send(json!({"op": "insert", "text": "héllo — 世界 🎉"}))
        .await;
    editor.wait_text("Start: héllo — 世界 🎉").await;
    editor.append(" ünïcødé ✓ 𝄞").await;
    let expected = "Start: héllo — 世界 🎉 ünïcødé ✓ 𝄞";
    js.wait_text(expected).await;
    // Concurrent edits at the same moment from both sides.
    js.send(json!({"op": "insert", "index": 0, "text": "«JS» "}))
        .await;
    editor.append(" [nats]").await;
    let expected = "«JS» Start: héllo — 世界 🎉 ünïcødé ✓ 𝄞 [nats]";
    js.wait_text(expected).await;
    editor.wait_text(expected).await;
    stack.wait_stored(draft, expected).await;
    editor.leave().await;
}

#[tokio::test]
async fn a_node_yjs_client_co_edits_through_two_gateways_and_two_drafting_replicas() {
    let stack = Stack::start(2, 2).await;
    let mut js = JsClient::start("client.mjs").await;
    co_edit(&stack, &mut js, "node-draft", 0).await;

    // A second client on the other gateway sees the text and the first
    // client's awareness (relayed between gateways), and edits reach both.
    // This one with a JWT in `?token=` (sent on as a Bearer token).
    let key = stack
        .key("second", &["drafting:read", "drafting:write"])
        .await;
    let issued = call(
        &stack.nats,
        &key,
        "security.tokens.issue",
        json!({"permissions": ["drafting:read", "drafting:write"]}),
    )
    .await
    .unwrap();
    let key = issued["token"].as_str().unwrap().to_owned();
    assert!(!key.starts_with("ymk_"));
    let mut other = JsClient::start("client.mjs").await;
    let expected = "«JS» Start: héllo — 世界 🎉 ünïcødé ✓ 𝄞 [nats]";
    let synced = other
        .connect(&stack.collab_url(1), "node-draft", &key)
        .await;
    assert_eq!(synced["text"], expected, "{synced}");
    js.send(json!({"op": "setAwareness", "state": {"user": {"name": "Zoë"}}}))
        .await;
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let peers = other.send(json!({"op": "peers"})).await;
        let names: Vec<&Value> = peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["state"]["user"]["name"])
            .collect();
        if names.contains(&&json!("Zoë")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{peers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    other
        .send(json!({"op": "insert", "index": 0, "text": "2nd "}))
        .await;
    js.wait_text(&format!("2nd {expected}")).await;
    stack
        .wait_stored("node-draft", &format!("2nd {expected}"))
        .await;
}

#[tokio::test]
async fn concurrent_edit_bursts_through_two_gateways_and_from_nats_converge() {
    let stack = Stack::start(2, 2).await;
    let key = stack
        .key("writer", &["drafting:read", "drafting:write"])
        .await;
    stack.create_draft("burst", "base 🎉 ").await;
    let mut editor = NatsEditor::join(&stack, &key, "burst", "nats-editor").await;
    let mut a = JsClient::start("client.mjs").await;
    let mut b = JsClient::start("client.mjs").await;
    a.connect(&stack.collab_url(0), "burst", &key).await;
    b.connect(&stack.collab_url(1), "burst", &key).await;
    let nats_side = async {
        for i in 0..40 {
            editor.append(&format!("⟨{i}⟩")).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (_, _, ()) = tokio::join!(
        a.send(json!({"op": "burst", "count": 150, "interval_ms": 2, "seed": 7})),
        b.send(json!({"op": "burst", "count": 150, "interval_ms": 2, "seed": 11})),
        nats_side,
    );
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let text = loop {
        let ta = a.send(json!({"op": "text"})).await["text"].clone();
        let tb = b.send(json!({"op": "text"})).await["text"].clone();
        if ta == tb {
            break ta.as_str().unwrap().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clients differ: {ta} / {tb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    editor.wait_text(&text).await;
    a.wait_text(&text).await;
    stack.wait_stored("burst", &text).await;
}

#[tokio::test]
async fn a_yjs_client_in_headless_chromium_co_edits_with_a_nats_editor() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian chromium is needed (scripts/setup.d/collab-js.sh)"
    );
    let stack = Stack::start(1, 1).await;
    let mut browser = JsClient::start("browser.mjs").await;
    co_edit(&stack, &mut browser, "browser-draft", 0).await;
}

#[tokio::test]
async fn the_client_reconnects_and_converges_after_the_gateway_restarts() {
    let mut stack = Stack::start(1, 1).await;
    let key = stack
        .key("writer", &["drafting:read", "drafting:write"])
        .await;
    stack.create_draft("restart", "one").await;
    let mut editor = NatsEditor::join(&stack, &key, "restart", "nats-editor").await;
    let mut js = JsClient::start("client.mjs").await;
    js.connect(&stack.collab_url(0), "restart", &key).await;
    js.send(json!({"op": "insert", "text": " two"})).await;
    editor.wait_text("one two").await;

    // The gateway dies; both sides keep editing.
    stack.gateways[0].0.kill().unwrap();
    js.send(json!({"op": "insert", "text": " — offline ✈"}))
        .await;
    editor.append(" three").await;
    let status = js.send(json!({"op": "status"})).await;
    assert_eq!(status["connected"], false, "{status}");

    // Started again on the same port, the provider reconnects by itself.
    let opts = stack.gateways[0].1.clone();
    stack.gateways[0].0 = Service::start(opts).unwrap();
    stack.wait_gateway(0).await;
    js.send(json!({"op": "waitSynced", "timeout_ms": 30000}))
        .await;
    let expected_a = "one two — offline ✈ three";
    let expected_b = "one two three — offline ✈";
    let text = js
        .send(
            json!({"op": "waitText", "contains": [" three", " — offline ✈"], "timeout_ms": 20000}),
        )
        .await["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text == expected_a || text == expected_b, "{text}");
    editor.wait_text(&text).await;
    stack.wait_stored("restart", &text).await;

    // A graceful stop (SIGTERM) and start: the same.
    let stopping = std::time::Instant::now();
    stack.gateways[0].0.stop().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the gateway took {:?} to stop with a connection open",
        stopping.elapsed()
    );
    js.send(json!({"op": "insert", "index": 0, "text": "¡"}))
        .await;
    let opts = stack.gateways[0].1.clone();
    stack.gateways[0].0 = Service::start(opts).unwrap();
    stack.wait_gateway(0).await;
    js.send(json!({"op": "waitSynced", "timeout_ms": 30000}))
        .await;
    let text = format!("¡{text}");
    editor.wait_text(&text).await;
    stack.wait_stored("restart", &text).await;
}

#[tokio::test]
async fn a_connection_dropped_from_the_session_reconnects_and_loses_nothing() {
    let stack = Stack::start(1, 1).await;
    let key = stack
        .key("writer", &["drafting:read", "drafting:write"])
        .await;
    stack.create_draft("evicted", "abc").await;
    let mut editor = NatsEditor::join(&stack, &key, "evicted", "nats-editor").await;
    let mut js = JsClient::start("client.mjs").await;
    js.connect(&stack.collab_url(0), "evicted", &key).await;
    // Drafting forgets the gateway's editor (as after its presence timeout).
    let draft = stack
        .admin("drafting.get", json!({"draft_id": "evicted"}))
        .await;
    let gateway_editor = draft["editors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["client_id"].as_str().unwrap().to_owned())
        .find(|id| id.starts_with("yws-"))
        .unwrap_or_else(|| panic!("{draft}"));
    stack
        .admin(
            "drafting.collab.update",
            json!({"draft_id": "evicted", "client_id": gateway_editor, "leave": true}),
        )
        .await;
    // The next edit is refused by drafting; the client is told to
    // reconnect, joins again and sends it then.
    js.send(json!({"op": "insert", "text": "X"})).await;
    editor.wait_text("abcX").await;
    let status = js.send(json!({"op": "status"})).await;
    let codes: Vec<&Value> = status["closes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["code"])
        .collect();
    assert!(codes.contains(&&json!(4509)), "{status}");
    stack.wait_stored("evicted", "abcX").await;
}

#[tokio::test]
async fn bad_connections_and_frames_are_closed_with_a_reason() {
    let stack = Stack::start(1, 1).await;
    let writer = stack
        .key("writer", &["drafting:read", "drafting:write"])
        .await;
    let reader = stack.key("reader", &["drafting:read"]).await;
    stack.create_draft("guarded", "text").await;
    let mut js = JsClient::start("client.mjs").await;
    let base = stack.collab_url(0);
    let raw = |url: String, extra: Value| {
        let mut cmd = json!({"op": "raw", "url": url});
        for (k, v) in extra.as_object().unwrap() {
            cmd[k] = v.clone();
        }
        cmd
    };
    let expect_close = |reply: &Value, code: u64, words: &str| {
        assert_eq!(reply["code"], code, "{reply}");
        let reason = reply["reason"].as_str().unwrap_or_default().to_lowercase();
        assert!(reason.contains(words), "{reply}");
    };

    // Unknown draft, no credential, a key without drafting:write, a bad id.
    let r = js
        .send(raw(
            format!("{base}/no-such-draft?token={writer}"),
            json!({}),
        ))
        .await;
    expect_close(&r, 4404, "no-such-draft");
    let r = js.send(raw(format!("{base}/guarded"), json!({}))).await;
    assert_eq!(r["code"], 4401, "{r}");
    let r = js
        .send(raw(format!("{base}/guarded?token={reader}"), json!({})))
        .await;
    assert_eq!(r["code"], 4403, "{r}");
    let r = js
        .send(raw(
            format!("{base}/guarded?token=ymk_forged_key"),
            json!({}),
        ))
        .await;
    assert_eq!(r["code"], 4401, "{r}");
    let r = js
        .send(raw(format!("{base}/a..b?token={writer}"), json!({})))
        .await;
    expect_close(&r, 4400, "draft id");
    // The header works as well as the query parameter (refused the same way).
    let r = js
        .send(raw(
            format!("{base}/guarded"),
            json!({"headers": {"X-API-Key": reader}}),
        ))
        .await;
    assert_eq!(r["code"], 4403, "{r}");

    // A plain GET (no upgrade) gets the platform's JSON error.
    let (status, body) = ymera_testkit::http_get(stack.gateways[0].2, "/v1/collab/guarded").await;
    assert_eq!(status, 400, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    // Malformed, unsupported, text and oversized frames.
    let ok = format!("{base}/guarded?token={writer}");
    let cases: Vec<(Value, u64, &str)> = vec![
        (json!({"frames": [B64.encode([0u8, 9])]}), 4400, "malformed"),
        (
            json!({"frames": [B64.encode([0u8, 2, 5, 1, 2])]}),
            4400,
            "malformed",
        ),
        (
            json!({"frames": [B64.encode([9u8, 0])]}),
            4400,
            "unsupported",
        ),
        (json!({"texts": ["hello"]}), 4400, "binary"),
        (
            json!({"frames": [B64.encode(vec![0u8; 900 * 1024])]}),
            4413,
            "exceeds",
        ),
    ];
    for (frames, code, words) in cases {
        let r = js.send(raw(ok.clone(), frames)).await;
        expect_close(&r, code, words);
    }
    // An update whose client id is over 53 bits (a debug assertion in yrs).
    let mut sv = vec![1u8];
    sv.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1]);
    let mut frame = vec![0u8, 0, sv.len() as u8];
    frame.extend(sv);
    let r = js
        .send(raw(ok.clone(), json!({"frames": [B64.encode(frame)]})))
        .await;
    expect_close(&r, 4400, "malformed");

    // The gateway is unharmed: a real client still co-edits.
    let synced = js.connect(&base, "guarded", &writer).await;
    assert_eq!(synced["text"], "text");
    js.send(json!({"op": "insert", "text": "!"})).await;
    stack.wait_stored("guarded", "text!").await;
    let (_, metrics) = ymera_testkit::http_get(stack.gateways[0].3, "/metrics").await;
    for line in [
        "ymera_gateway_collab_refused_total{code=\"not_found\"} 1",
        "ymera_gateway_collab_refused_total{code=\"forbidden\"} 2",
        "ymera_gateway_collab_connections 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // That Y.Doc taken to another draft (as a client that kept its document
    // past the end of a session would) is refused: merging its items would
    // repeat the text.
    stack.create_draft("elsewhere", "other").await;
    let r = js
        .try_send(json!({"op": "connect", "url": base, "room": "elsewhere",
            "params": {"token": writer}, "keepDoc": true}))
        .await;
    let error = r["error"].as_str().unwrap_or_default();
    assert!(error.contains("4409") && error.contains("new Y.Doc"), "{r}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(stack.stored("elsewhere").await, "other");
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn percentiles(mut v: Vec<i64>) -> Value {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    json!({"n": v.len(), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

/// Broadcast latency through the gateway (BENCHMARKS.md), with its baseline
/// in the same run: a NATS-side editor sends `COLLAB_BENCH_EDITS` (500)
/// updates at `COLLAB_BENCH_RATE` (50) per second; for each, the time from
/// the `drafting.collab.update` request until (baseline) a NATS subscriber
/// of `drafting.collab.<id>.updates` has the broadcast and (gateway) a stock
/// y-websocket client in node connected through the gateway has applied it.
/// A measurement, not a check: `cargo nextest run -p ymera-gateway
/// --run-ignored only collab::broadcast_latency --no-capture`.
#[tokio::test]
#[ignore = "benchmark: run on demand"]
async fn broadcast_latency() {
    let edits: usize = std::env::var("COLLAB_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rate: u64 = std::env::var("COLLAB_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let stack = Stack::start(1, 1).await;
    let key = stack
        .key("bench", &["drafting:read", "drafting:write"])
        .await;
    stack.create_draft("bench", "").await;
    let editor = NatsEditor::join(&stack, &key, "bench", "nats-editor").await;
    let mut js = JsClient::start("client.mjs").await;
    js.connect(&stack.collab_url(0), "bench", &key).await;
    js.send(json!({"op": "recordUpdates"})).await;

    // The baseline: a NATS subscriber of the broadcasts.
    let mut broadcasts = stack
        .nats
        .subscribe("drafting.collab.bench.updates")
        .await
        .unwrap();
    stack.nats.flush().await.unwrap();
    let baseline = tokio::spawn(async move {
        let mut at = Vec::new();
        while at.len() < edits {
            match tokio::time::timeout(Duration::from_secs(30), broadcasts.next()).await {
                Ok(Some(_)) => at.push(now_us()),
                _ => break,
            }
        }
        at
    });
    let mut sent = Vec::with_capacity(edits);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    for i in 0..edits {
        tick.tick().await;
        sent.push(now_us());
        editor.append(&format!("{}", i % 10)).await;
    }
    let baseline = baseline.await.unwrap();
    let deadline = tokio::time::Instant::now() + CONVERGE;
    let mut through_gateway: Vec<i64> = Vec::new();
    while through_gateway.len() < edits && tokio::time::Instant::now() < deadline {
        let taken = js.send(json!({"op": "takeRecords"})).await;
        through_gateway.extend(
            taken["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap()),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(baseline.len(), edits, "broadcasts seen");
    assert_eq!(
        through_gateway.len(),
        edits,
        "updates applied by the y-websocket client"
    );
    let delta = |at: &[i64]| sent.iter().zip(at).map(|(s, a)| a - s).collect::<Vec<_>>();
    let report = json!({
        "edits": edits,
        "rate_per_s": rate,
        "nats_broadcast": percentiles(delta(&baseline)),
        "through_gateway": percentiles(delta(&through_gateway)),
    });
    println!("COLLAB_BENCH {report}");
}
