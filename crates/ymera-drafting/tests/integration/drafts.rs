//! Drafts: CRUD, concurrency, revisions, export, analysis, comments,
//! lifecycle, templates.

use serde_json::{Value, json};
use ymera_core::ErrorKind;

use crate::common::{Drafting, service_config, start_servers};

#[tokio::test]
async fn create_update_list_and_conflicts() {
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    let d = svc
        .ok(
            "drafting.create",
            json!({"title": "Plan", "author_id": "ann", "content": "One two three.", "tags": ["q3"], "document_type": "report"}),
        )
        .await;
    let id = d["draft_id"].as_str().unwrap().to_owned();
    assert_eq!(d["version"], 1);
    assert_eq!(d["word_count"], 3);
    assert_eq!(d["status"], "draft");

    // Racing updates with the same expected_version: one wins, one 409.
    let a = svc.call::<Value>(
        "drafting.update",
        json!({"draft_id": id, "expected_version": 1, "content": "A wins.", "author_id": "ann"}),
    );
    let b = svc.call::<Value>(
        "drafting.update",
        json!({"draft_id": id, "expected_version": 1, "content": "B wins.", "author_id": "bob"}),
    );
    let (a, b) = tokio::join!(a, b);
    let outcomes = [a.is_ok(), b.is_ok()];
    assert_eq!(outcomes.iter().filter(|x| **x).count(), 1, "{outcomes:?}");
    let loser = a.err().or(b.err()).unwrap();
    assert_eq!(loser.kind, ErrorKind::Conflict);
    let got = svc.ok("drafting.get", json!({"draft_id": id})).await;
    assert_eq!(got["version"], 2);

    // Over the 10 MB draft limit: 413.
    let big = "x".repeat(10 * 1024 * 1024 + 1);
    assert_eq!(
        svc.err("drafting.update", json!({"draft_id": id, "content": big}))
            .await,
        ErrorKind::PayloadTooLarge
    );
    assert_eq!(
        svc.err("drafting.get", json!({"draft_id": "nope"})).await,
        ErrorKind::NotFound
    );
    assert_eq!(
        svc.err("drafting.create", json!({"title": "x"})).await,
        ErrorKind::InvalidRequest
    );

    // List: filters and cursor pagination.
    for i in 0..5 {
        svc.ok(
            "drafting.create",
            json!({"title": format!("Memo {i}"), "author_id": "bob", "content": "Hi.", "tags": ["memo"]}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = svc
            .ok(
                "drafting.list",
                json!({"author_id": "bob", "limit": 2, "cursor": cursor}),
            )
            .await;
        for d in page["drafts"].as_array().unwrap() {
            seen.push(d["title"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["Memo 0", "Memo 1", "Memo 2", "Memo 3", "Memo 4"]);
    let tagged = svc.ok("drafting.list", json!({"tag": "q3"})).await;
    assert_eq!(tagged["drafts"].as_array().unwrap().len(), 1);
    let searched = svc.ok("drafting.list", json!({"q": "memo 3"})).await;
    assert_eq!(searched["drafts"][0]["title"], "Memo 3");

    // Delete archives; hard delete needs an admin.
    let del = svc.ok("drafting.delete", json!({"draft_id": id})).await;
    assert_eq!(del["status"], "archived");
    assert!(
        svc.ok("drafting.list", json!({"tag": "q3"})).await["drafts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        svc.err("drafting.delete", json!({"draft_id": id, "hard": true}))
            .await,
        ErrorKind::Forbidden
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Ymera-Role", "admin");
    let reply = svc
        .client
        .nats()
        .request_with_headers(
            "drafting.delete",
            headers,
            serde_json::to_vec(&json!({"draft_id": id, "hard": true}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    assert!(
        reply
            .headers
            .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none())
    );
    assert_eq!(
        svc.err("drafting.get", json!({"draft_id": id})).await,
        ErrorKind::NotFound
    );
    svc.stop().await;
}

#[tokio::test]
async fn revisions_diff_restore_export_and_analysis() {
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    let d = svc
        .ok("drafting.create", json!({"draft_id": "doc-1", "title": "Doc", "author_id": "ann", "content": "alpha\nbeta\n"}))
        .await;
    assert_eq!(d["version"], 1);
    svc.ok("drafting.update", json!({"draft_id": "doc-1", "content": "alpha\ngamma delta\n", "author_id": "bob", "expected_version": 1})).await;
    let revs = svc
        .ok(
            "drafting.revisions",
            json!({"draft_id": "doc-1", "include_diff": true}),
        )
        .await;
    let revs = revs["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["revision"], 2);
    assert_eq!(revs[0]["author_id"], "bob");
    assert_eq!(revs[0]["word_delta"], 1);
    assert!(
        revs[0]["diff"]
            .as_str()
            .unwrap()
            .contains("-beta\n+gamma delta")
    );

    let line = svc
        .ok(
            "drafting.diff",
            json!({"draft_id": "doc-1", "from": 1, "to": 2}),
        )
        .await;
    assert!(line["unified"].as_str().unwrap().contains("+gamma delta"));
    let word = svc
        .ok(
            "drafting.diff",
            json!({"draft_id": "doc-1", "from": 1, "to": 2, "level": "word"}),
        )
        .await;
    let changes = word["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["op"] == "delete" && c["text"].as_str().unwrap().contains("beta"))
    );

    let restored = svc
        .ok(
            "drafting.restore",
            json!({"draft_id": "doc-1", "revision": 1, "author_id": "ann"}),
        )
        .await;
    assert_eq!(restored["version"], 3);
    assert_eq!(restored["content"], "alpha\nbeta\n");
    assert_eq!(restored["revision"]["source"], "restore");

    // Hostile Markdown exports to HTML with nothing executable.
    svc.ok("drafting.update", json!({"draft_id": "doc-1", "title": "<script>alert('t')</script>", "content": "# Hi\n\n<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[click](javascript:alert(1))\n\n<a href=\"https://ok.example\" onmouseover=\"x()\">ok</a>\n\n<svg onload=alert(1)></svg><iframe src=\"https://evil\"></iframe>\n"})).await;
    let html = svc
        .ok(
            "drafting.export",
            json!({"draft_id": "doc-1", "format": "html"}),
        )
        .await;
    let html = html["content"].as_str().unwrap().to_lowercase();
    for bad in [
        "<script",
        "onerror",
        "onmouseover",
        "onload",
        "href=\"javascript",
        "<iframe",
        "<svg",
    ] {
        assert!(!html.contains(bad), "{bad} in {html}");
    }
    assert!(html.contains("https://ok.example"));
    let md = svc
        .ok(
            "drafting.export",
            json!({"draft_id": "doc-1", "format": "markdown", "revision": 1}),
        )
        .await;
    assert_eq!(md["content"], "# Doc\n\nalpha\nbeta\n");
    let text = svc
        .ok(
            "drafting.export",
            json!({"draft_id": "doc-1", "format": "text"}),
        )
        .await;
    assert!(text["content"].as_str().unwrap().contains("Hi"));
    let j = svc
        .ok(
            "drafting.export",
            json!({"draft_id": "doc-1", "format": "json"}),
        )
        .await;
    let parsed: Value = serde_json::from_str(j["content"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["draft_id"], "doc-1");

    // Analysis of raw text and of a draft.
    let a = svc
        .ok("drafting.analyze", json!({"text": "The cat sat on the mat. It was a sunny day. The dog ran in the park and played with a red ball.", "tone": "formal"}))
        .await;
    assert_eq!(a["words"], 23);
    assert_eq!(a["sentences"], 3);
    let fre = a["readability"]["flesch_reading_ease"].as_f64().unwrap();
    assert!((fre - 110.775).abs() < 0.1, "{fre}");
    for key in [
        "flesch_kincaid_grade",
        "gunning_fog",
        "smog_index",
        "coleman_liau_index",
        "automated_readability_index",
        "dale_chall_readability_score",
    ] {
        assert!(a["readability"][key].is_number(), "{key}");
    }
    let a = svc.ok("drafting.analyze", json!({"text": "There are many reasons. Mistakes were made by the the team in order to win."})).await;
    let ids: Vec<&str> = a["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule_id"].as_str().unwrap())
        .collect();
    for id in [
        "there-is",
        "weasel-words",
        "passive-voice",
        "repeated-word",
        "wordy",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let f = &a["findings"][0];
    for key in ["start", "end", "line", "column", "message", "suggestion"] {
        assert!(!f[key].is_null(), "{key}");
    }
    svc.ok("drafting.analyze", json!({"draft_id": "doc-1"}))
        .await;
    assert_eq!(
        svc.err("drafting.analyze", json!({})).await,
        ErrorKind::InvalidRequest
    );
    svc.stop().await;
}

#[tokio::test]
async fn comments_lifecycle_and_templates() {
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    let t = svc
        .ok("drafting.template.set", json!({"template_id": "memo", "name": "Memo", "document_type": "memo", "content": "To: {{recipient}}\n\nDear {{recipient}}, about {{topic}}."}))
        .await;
    assert_eq!(t["placeholders"], json!(["recipient", "topic"]));
    let list = svc.ok("drafting.template.list", json!({})).await;
    assert_eq!(list["templates"].as_array().unwrap().len(), 1);
    assert_eq!(
        svc.err(
            "drafting.create",
            json!({"author_id": "ann", "template_id": "memo", "variables": {"recipient": "Bo"}})
        )
        .await,
        ErrorKind::ValidationFailed
    );
    let d = svc
        .ok("drafting.create", json!({"draft_id": "m1", "author_id": "ann", "template_id": "memo", "variables": {"recipient": "Bo", "topic": "lunch"}}))
        .await;
    assert_eq!(d["content"], "To: Bo\n\nDear Bo, about lunch.");
    assert_eq!(d["document_type"], "memo");

    // A comment on "lunch" keeps pointing at it after edits before it.
    let content = d["content"].as_str().unwrap();
    let start = content.chars().count() - "lunch.".chars().count();
    let c = svc
        .ok("drafting.comment", json!({"draft_id": "m1", "author_id": "bob", "body": "Which day?", "start": start, "end": start + 5}))
        .await;
    assert_eq!(c["quote"], "lunch");
    svc.ok("drafting.update", json!({"draft_id": "m1", "content": "To: Bo Ekberg\n\nDear Bo, about the long lunch.", "expected_version": 1})).await;
    let list = svc
        .ok(
            "drafting.comment",
            json!({"draft_id": "m1", "action": "list"}),
        )
        .await;
    assert_eq!(list["comments"][0]["anchored_text"], "lunch");
    let cid = c["comment_id"].as_str().unwrap();
    let r = svc
        .ok(
            "drafting.comment",
            json!({"draft_id": "m1", "action": "resolve", "comment_id": cid, "author_id": "ann"}),
        )
        .await;
    assert_eq!(r["status"], "resolved");
    let r = svc
        .ok(
            "drafting.comment",
            json!({"draft_id": "m1", "action": "reopen", "comment_id": cid}),
        )
        .await;
    assert_eq!(r["status"], "open");
    assert_eq!(
        svc.err(
            "drafting.comment",
            json!({"draft_id": "m1", "body": "x", "start": 0, "end": 10_000})
        )
        .await,
        ErrorKind::ValidationFailed
    );

    // Lifecycle: valid moves recorded, invalid ones 409.
    assert_eq!(
        svc.err(
            "drafting.transition",
            json!({"draft_id": "m1", "to": "published"})
        )
        .await,
        ErrorKind::Conflict
    );
    for to in ["in_review", "approved", "published"] {
        let r = svc
            .ok(
                "drafting.transition",
                json!({"draft_id": "m1", "to": to, "actor": "lead"}),
            )
            .await;
        assert_eq!(r["status"], to);
    }
    let r = svc
        .ok(
            "drafting.transition",
            json!({"draft_id": "m1", "to": "archived"}),
        )
        .await;
    let history: Vec<(String, String)> = r["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from_status"].as_str().unwrap().to_owned(),
                t["to_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(history.len(), 4);
    assert_eq!(history[0], ("draft".to_owned(), "in_review".to_owned()));
    assert_eq!(
        svc.err("drafting.update", json!({"draft_id": "m1", "content": "x"}))
            .await,
        ErrorKind::Conflict
    );
    assert_eq!(
        svc.err(
            "drafting.transition",
            json!({"draft_id": "m1", "to": "nonsense"})
        )
        .await,
        ErrorKind::ValidationFailed
    );
    svc.stop().await;
}

#[tokio::test]
async fn chat_requests_on_the_inbox_are_answered_through_communication() {
    use futures::StreamExt;
    let servers = start_servers(false);
    let svc = Drafting::start(service_config(&servers)).await;
    let nats = svc.client.nats().clone();
    // Stand-in for the communication agent's send endpoint.
    let mut sends = nats.subscribe("communication.send").await.unwrap();
    nats.flush().await.unwrap();
    let envelope = ymera_core::envelope::Envelope::new(
        ymera_core::envelope::MessageType::Request,
        "alice",
        vec!["drafting".to_owned()],
        "review",
        json!({"message": "Please review:\n```\nThere are many reasons why this was done.\n```"}),
    );
    let ack = nats
        .request(
            "agent.drafting.inbox",
            serde_json::to_vec(&envelope).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(&ack.payload[..], b"{}");
    let sent = tokio::time::timeout(std::time::Duration::from_secs(10), sends.next())
        .await
        .unwrap()
        .unwrap();
    let response: Value = serde_json::from_slice(&sent.payload).unwrap();
    assert_eq!(response["type"], "response");
    assert_eq!(response["recipients"], json!(["alice"]));
    assert_eq!(response["correlation_id"], json!(envelope.id));
    assert_eq!(response["payload"]["success"], true);
    let md = response["payload"]["response"].as_str().unwrap();
    assert!(
        md.contains("Flesch reading ease") && md.contains("there-is"),
        "{md}"
    );
    if let Some(reply) = sent.reply {
        nats.publish(reply, "{}".into()).await.unwrap();
    }
    svc.stop().await;
}
