//! The wire contract in `proto/`: every endpoint is called with valid
//! requests, and each request sent and each reply received must validate
//! against `proto/schemas/drafting/<endpoint>.{request,reply}.schema.json`
//! (the reply schemas list every field, so a field added or renamed in the
//! code fails here); refused requests carry a body valid against
//! `error.schema.json`, and requests the schemas reject the service refuses.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::StreamExt;
use serde_json::{Value, json};
use yrs::updates::encoder::Encode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, Text, Transact};

use crate::common::{Drafting, service_config, start_servers};
use ymera_testkit::proto::{assert_invalid, assert_valid};

struct Wire<'a> {
    nats: &'a async_nats::Client,
}

impl Wire<'_> {
    async fn raw(&self, endpoint: &str, body: &Value, admin: bool) -> async_nats::Message {
        let mut headers = async_nats::HeaderMap::new();
        if admin {
            headers.insert("X-Ymera-Role", "admin");
        }
        let payload = bytes::Bytes::from(serde_json::to_vec(body).unwrap());
        tokio::time::timeout(
            Duration::from_secs(10),
            self.nats
                .request_with_headers(format!("drafting.{endpoint}"), headers, payload),
        )
        .await
        .expect("reply in time")
        .expect("request")
    }

    /// Sends a schema-valid request and returns the schema-valid reply.
    async fn ok(&self, endpoint: &str, body: Value) -> Value {
        self.ok_as(endpoint, body, false).await
    }

    async fn ok_as(&self, endpoint: &str, body: Value, admin: bool) -> Value {
        assert_valid(&format!("drafting/{endpoint}.request.schema.json"), &body);
        let msg = self.raw(endpoint, &body, admin).await;
        let error = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error"));
        assert!(
            error.is_none(),
            "drafting.{endpoint} {body}: {error:?} {}",
            String::from_utf8_lossy(&msg.payload)
        );
        let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_valid(&format!("drafting/{endpoint}.reply.schema.json"), &reply);
        reply
    }

    /// Sends a request the service refuses; the body is a valid error
    /// body; returns its code.
    async fn refused(&self, endpoint: &str, body: Value, admin: bool) -> String {
        let msg = self.raw(endpoint, &body, admin).await;
        let headers = msg.headers.as_ref().expect("error headers");
        assert!(headers.get("Nats-Service-Error").is_some());
        assert!(headers.get("Nats-Service-Error-Code").is_some());
        let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_valid("error.schema.json", &reply);
        reply["error"]["code"].as_str().unwrap().to_owned()
    }

    /// A request the request schema rejects, and the service refuses.
    async fn rejected_by_both(&self, endpoint: &str, body: Value) -> String {
        assert_invalid(&format!("drafting/{endpoint}.request.schema.json"), &body);
        self.refused(endpoint, body, false).await
    }
}

fn yjs_insert(doc: &Doc, index: u32, s: &str) -> String {
    let text = doc.get_or_insert_text("content");
    let before = doc.transact().state_vector();
    text.insert(&mut doc.transact_mut(), index, s);
    B64.encode(doc.transact().encode_state_as_update_v1(&before))
}

#[tokio::test]
async fn every_endpoint_speaks_the_documented_schemas() {
    let servers = start_servers(true);
    let svc = Drafting::start(service_config(&servers)).await;
    let wire = Wire {
        nats: svc.client.nats(),
    };

    // Templates.
    let template = wire
        .ok(
            "template.set",
            json!({"name": "Memo", "document_type": "memo", "description": "A memo",
                   "content": "Dear {{name}},\n\n{{body}}"}),
        )
        .await;
    let template_id = template["template_id"].as_str().unwrap().to_owned();
    wire.ok(
        "template.set",
        json!({"template_id": "plain", "name": "Plain", "content": "no placeholders"}),
    )
    .await;
    let listed = wire
        .ok("template.list", json!({"document_type": "memo"}))
        .await;
    assert_eq!(listed["templates"].as_array().unwrap().len(), 1);
    wire.ok("template.list", json!({})).await;

    // Drafts.
    let memo = wire
        .ok(
            "create",
            json!({"author_id": "alice", "template_id": template_id, "tags": ["q1"],
                   "variables": {"name": "Bob", "body": "The report was written by the the team."},
                   "tone": "formal", "target_audience": "general"}),
        )
        .await;
    let memo_id = memo["draft_id"].as_str().unwrap().to_owned();
    let note = wire
        .ok(
            "create",
            json!({"draft_id": "note-1", "author_id": "alice", "title": "Note",
                   "content": "There are many reasons. We should go.", "metadata": {"k": [1, null]},
                   "collaborators": ["bob"], "document_type": "article"}),
        )
        .await;
    assert_eq!(note["version"], 1);

    let updated = wire
        .ok(
            "update",
            json!({"draft_id": memo_id, "expected_version": 1, "content": "Dear Bob,\n\nThe team wrote the report.",
                   "title": "Memo to Bob", "tags": ["q1", "memo"], "message": "rewrite"}),
        )
        .await;
    assert_eq!(updated["revision"]["revision"], 2);
    let unchanged = wire
        .ok(
            "update",
            json!({"draft_id": memo_id, "title": "Memo to Bob"}),
        )
        .await;
    assert!(unchanged["revision"].is_null(), "{unchanged}");
    let buffered = wire
        .ok(
            "update",
            json!({"draft_id": "note-1", "content": "There are many reasons. We should go now.", "autosave": true}),
        )
        .await;
    assert_eq!(buffered["accepted"], true);

    let got = wire
        .ok(
            "get",
            json!({"draft_id": memo_id, "include": ["comments", "transitions"]}),
        )
        .await;
    assert_eq!(got["version"], 2);
    wire.ok("get", json!({"draft_id": "note-1"})).await;

    let page = wire.ok("list", json!({"limit": 1})).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    wire.ok(
        "list",
        json!({"limit": 1, "cursor": cursor, "author_id": "alice", "status": "draft"}),
    )
    .await;
    wire.ok("list", json!({"tag": "q1", "q": "memo"})).await;

    let analysis = wire
        .ok(
            "analyze",
            json!({"text": "There are many reasons. The report was written by the the team in order to win.",
                   "tone": "formal"}),
        )
        .await;
    assert!(!analysis["findings"].as_array().unwrap().is_empty());
    wire.ok("analyze", json!({"draft_id": memo_id})).await;
    wire.ok("analyze", json!({"text": ""})).await;

    for format in ["markdown", "html", "json", "text"] {
        wire.ok("export", json!({"draft_id": memo_id, "format": format}))
            .await;
    }
    wire.ok("export", json!({"draft_id": memo_id, "revision": 1}))
        .await;

    let revs = wire
        .ok(
            "revisions",
            json!({"draft_id": memo_id, "include_diff": true}),
        )
        .await;
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2);
    let first = wire
        .ok("revisions", json!({"draft_id": memo_id, "limit": 1}))
        .await;
    wire.ok(
        "revisions",
        json!({"draft_id": memo_id, "before": first["next_before"]}),
    )
    .await;

    wire.ok("diff", json!({"draft_id": memo_id, "from": 1}))
        .await;
    wire.ok(
        "diff",
        json!({"draft_id": memo_id, "from": 1, "to": 2, "level": "word"}),
    )
    .await;

    let restored = wire
        .ok(
            "restore",
            json!({"draft_id": memo_id, "revision": 1, "author_id": "bob", "expected_version": 2}),
        )
        .await;
    assert_eq!(restored["revision"]["source"], "restore");

    let comment = wire
        .ok(
            "comment",
            json!({"draft_id": memo_id, "body": "Who is Bob?", "start": 5, "end": 8, "author_id": "carol"}),
        )
        .await;
    let comment_id = comment["comment_id"].as_str().unwrap().to_owned();
    wire.ok(
        "comment",
        json!({"draft_id": memo_id, "action": "resolve", "comment_id": comment_id, "author_id": "alice"}),
    )
    .await;
    wire.ok(
        "comment",
        json!({"draft_id": memo_id, "action": "reopen", "comment_id": comment_id}),
    )
    .await;
    let comments = wire
        .ok("comment", json!({"draft_id": memo_id, "action": "list"}))
        .await;
    assert_eq!(comments["comments"][0]["anchored_text"], "Bob");

    wire.ok(
        "transition",
        json!({"draft_id": memo_id, "to": "in_review", "actor": "alice", "note": "please review"}),
    )
    .await;
    wire.ok(
        "get",
        json!({"draft_id": memo_id, "include": ["comments", "transitions"]}),
    )
    .await;

    // Collaboration, with the broadcast on the subject the join names.
    let joined = wire
        .ok(
            "collab.join",
            json!({"draft_id": "note-1", "user_id": "bob", "client_id": "tab-1"}),
        )
        .await;
    assert_eq!(joined["updates_subject"], "drafting.collab.note-1.updates");
    let mut updates = wire
        .nats
        .subscribe("drafting.collab.note-1.updates")
        .await
        .unwrap();
    wire.nats.flush().await.unwrap();
    let carol = wire
        .ok(
            "collab.join",
            json!({"draft_id": "note-1", "user_id": "carol"}),
        )
        .await;
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    {
        let state = B64.decode(joined["state"].as_str().unwrap()).unwrap();
        let update = <yrs::Update as yrs::updates::decoder::Decode>::decode_v1(&state).unwrap();
        doc.transact_mut().apply_update(update).unwrap();
    }
    let update = yjs_insert(&doc, 0, "Hi. ");
    wire.ok(
        "collab.update",
        json!({"draft_id": "note-1", "client_id": "tab-1", "update": update}),
    )
    .await;
    let broadcast = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("broadcast in time")
        .unwrap();
    let event: Value = serde_json::from_slice(&broadcast.payload).unwrap();
    assert_valid("drafting/event.collab.updates.schema.json", &event);
    assert_eq!(event["update"], update);
    let sv = B64.encode(doc.transact().state_vector().encode_v1());
    let resync = wire
        .ok(
            "collab.update",
            json!({"draft_id": "note-1", "client_id": "tab-1", "state_vector": sv, "text": true}),
        )
        .await;
    assert!(resync["text"].as_str().unwrap().starts_with("Hi. "));
    wire.ok(
        "collab.update",
        json!({"draft_id": "note-1", "client_id": "tab-1", "leave": true}),
    )
    .await;
    let left = wire
        .ok(
            "collab.update",
            json!({"draft_id": "note-1", "client_id": carol["client_id"], "leave": true}),
        )
        .await;
    // The last editor's leave commits (null when the periodic commit
    // already stored the same text).
    assert!(left.get("committed_version").is_some(), "{left}");
    assert_eq!(left["editors"], json!([]));

    // Deletes: archive, then hard delete as an administrator.
    let archived = wire.ok("delete", json!({"draft_id": memo_id})).await;
    assert_eq!(archived["status"], "archived");
    wire.ok("delete", json!({"draft_id": memo_id, "actor": "alice"}))
        .await;
    let gone = wire
        .ok_as("delete", json!({"draft_id": "note-1", "hard": true}), true)
        .await;
    assert_eq!(gone["deleted"], true);

    // Refusals: each body is a valid error body; where the schema can
    // tell, it rejects the same request.
    assert_eq!(
        wire.refused("delete", json!({"draft_id": memo_id, "hard": true}), false)
            .await,
        "forbidden"
    );
    assert_eq!(
        wire.refused("get", json!({"draft_id": "nope"}), false)
            .await,
        "not_found"
    );
    assert_eq!(
        wire.refused(
            "transition",
            json!({"draft_id": memo_id, "to": "published"}),
            false
        )
        .await,
        "conflict"
    );
    let rejected = [
        ("create", json!({"title": "t"})),
        (
            "create",
            json!({"author_id": "a", "title": "t", "colour": "red"}),
        ),
        ("create", json!({"author_id": "bad id", "title": "t"})),
        ("create", json!({"author_id": "a", "title": " "})),
        (
            "create",
            json!({"author_id": "a", "title": "t", "tags": [""]}),
        ),
        ("list", json!({"limit": 0})),
        ("list", json!({"status": "lost"})),
        ("list", json!({"q": "x".repeat(201)})),
        ("revisions", json!({"draft_id": memo_id, "limit": 501})),
        ("transition", json!({"draft_id": memo_id, "to": "gone"})),
        ("analyze", json!({})),
        ("analyze", json!({"text": "a", "draft_id": memo_id})),
        ("export", json!({"draft_id": memo_id, "format": "pdf"})),
        (
            "diff",
            json!({"draft_id": memo_id, "from": 1, "level": "char"}),
        ),
        ("comment", json!({"draft_id": memo_id, "action": "delete"})),
        ("template.set", json!({"name": "n"})),
        (
            "collab.join",
            json!({"draft_id": memo_id, "user_id": "a b"}),
        ),
        (
            "collab.update",
            json!({"draft_id": "a b", "client_id": "c"}),
        ),
    ];
    for (endpoint, body) in rejected {
        let code = wire.rejected_by_both(endpoint, body).await;
        assert!(
            matches!(code.as_str(), "invalid_request" | "validation_failed"),
            "{endpoint}: {code}"
        );
    }

    svc.stop().await;
}

/// The endpoint registry (what the gateway generates routes from): every
/// subject with its permission, typed request and reply, and their schemas
/// in `proto/`.
#[tokio::test]
async fn the_registry_lists_every_endpoint_with_its_permission_and_schemas() {
    use ymera_drafting::service::{Read, Write};
    let servers = start_servers(false);
    let runtime = ymera_core::runtime::Runtime::start("drafting", service_config(&servers))
        .await
        .unwrap();
    let state = ymera_drafting::service::state(&runtime, &ymera_drafting::Settings::default())
        .await
        .unwrap();
    let endpoints = ymera_drafting::service::builder(&state).endpoints();
    let writes = [
        "create",
        "update",
        "delete",
        "restore",
        "comment",
        "transition",
        "template.set",
        "collab.join",
        "collab.update",
    ];
    let reads = [
        "get",
        "list",
        "export",
        "revisions",
        "diff",
        "template.list",
        "metrics",
    ];
    // Text-only analysis is open; a stored draft's is checked in the handler.
    let open = ["analyze"];
    assert_eq!(endpoints.len(), writes.len() + reads.len() + open.len());
    for info in &endpoints {
        let name = info.subject.strip_prefix("drafting.").unwrap();
        let expected = if writes.contains(&name) {
            Some(Write::PERMISSION)
        } else if reads.contains(&name) {
            Some(Read::PERMISSION)
        } else {
            assert!(open.contains(&name), "{}", info.subject);
            None
        };
        assert_eq!(info.permission, expected, "{}", info.subject);
        assert!(
            !["untyped", "bytes"].contains(&info.request.as_str()),
            "{info:?}"
        );
        assert!(
            !["untyped", "bytes"].contains(&info.reply.as_str()),
            "{info:?}"
        );
        // The request and reply types are named as their schemas are titled.
        for (file, name) in [
            (info.request_schema(), &info.request),
            (info.reply_schema(), &info.reply),
        ] {
            let file = file.unwrap();
            let schema = ymera_testkit::proto::assert_schema_file(&file);
            assert_eq!(schema["title"], json!(name), "{file}");
        }
    }
}

/// `drafting.analyze` replies say how long the service spent on them.
#[tokio::test]
async fn analyze_replies_carry_the_processing_time() {
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    let msg = svc
        .client
        .nats()
        .request("drafting.analyze", r#"{"text": "Short text here."}"#.into())
        .await
        .unwrap();
    let micros = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(ymera_drafting::service::PROCESSING_TIME_HEADER))
        .map(|v| v.as_str().parse::<u64>().unwrap());
    assert!(micros.is_some_and(|us| us > 0), "{:?}", msg.headers);
    svc.stop().await;
}
