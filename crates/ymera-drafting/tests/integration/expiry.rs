//! Drafts that expire (archived by the expiry job, with its event and
//! metric) and `drafting.metrics`, against real nats-server and PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_testkit::proto::{assert_valid, exchange};

use crate::common::{Drafting, service_config, start_servers};

fn settings(auto_save: Duration) -> ymera_drafting::Settings {
    ymera_drafting::Settings {
        auto_save_interval: auto_save,
        expiry_check_interval: Duration::from_millis(200),
        ..ymera_drafting::Settings::default()
    }
}

fn in_ms(ms: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

#[tokio::test]
async fn expired_drafts_are_archived_with_an_event_and_a_metric() {
    let servers = start_servers(false);
    let svc = Drafting::start_with(
        service_config(&servers),
        settings(Duration::from_millis(200)),
    )
    .await;
    let nats = svc.client.nats().clone();
    let mut events = nats.subscribe("events.drafting.expired").await.unwrap();
    nats.flush().await.unwrap();

    let soon = in_ms(1500);
    let created = exchange(
        &nats,
        "drafting",
        "create",
        json!({"draft_id": "soon", "title": "Soon", "author_id": "ann", "content": "Kept text.", "expires_at": soon}),
    )
    .await;
    assert!(created["expires_at"].is_string());
    exchange(
        &nats,
        "drafting",
        "create",
        json!({"draft_id": "later", "title": "Later", "author_id": "ann", "expires_at": in_ms(1500)}),
    )
    .await;
    exchange(
        &nats,
        "drafting",
        "create",
        json!({"draft_id": "live", "title": "Live", "author_id": "ann", "content": "x", "expires_at": in_ms(1000)}),
    )
    .await;
    // An expiry in the past is refused, naming the field.
    let err = svc
        .call::<Value>(
            "drafting.create",
            json!({"title": "Past", "author_id": "ann", "expires_at": in_ms(-1000)}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ymera_core::ErrorKind::ValidationFailed);
    // `null` clears an expiry.
    let cleared = exchange(
        &nats,
        "drafting",
        "update",
        json!({"draft_id": "later", "expires_at": null}),
    )
    .await;
    assert!(cleared.get("expires_at").is_none(), "{cleared}");
    // A draft being edited collaboratively is not archived under its editors.
    svc.ok(
        "drafting.collab.join",
        json!({"draft_id": "live", "user_id": "bob", "client_id": "tab"}),
    )
    .await;

    let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an expiry event")
        .unwrap();
    let event: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_valid("drafting/event.expired.schema.json", &event);
    assert_eq!(event["draft_id"], "soon");
    assert_eq!(event["from_status"], "draft");
    // Archived, not deleted: the content and the reason are kept.
    let d = svc
        .ok(
            "drafting.get",
            json!({"draft_id": "soon", "include": ["transitions"]}),
        )
        .await;
    assert_eq!(d["status"], "archived");
    assert_eq!(d["content"], "Kept text.");
    let last = d["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"], "expiry");
    assert_eq!(last["to_status"], "archived");
    assert_eq!(
        svc.ok("drafting.get", json!({"draft_id": "later"})).await["status"],
        "draft"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        svc.ok("drafting.get", json!({"draft_id": "live"})).await["status"],
        "draft"
    );
    let m = exchange(&nats, "drafting", "metrics", json!({})).await;
    assert_eq!(m["expiry"]["archived"], 1, "{m}");
    assert_eq!(m["drafts"]["by_status"]["archived"], 1, "{m}");
    assert_eq!(m["drafts"]["expiring"], 1, "{m}");
    // The last editor leaves: the next run archives it too.
    svc.ok(
        "drafting.collab.update",
        json!({"draft_id": "live", "client_id": "tab", "leave": true}),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a second expiry event")
        .unwrap();
    let event: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(event["draft_id"], "live");
    let m = exchange(&nats, "drafting", "metrics", json!({})).await;
    assert_eq!(m["expiry"]["archived"], 2, "{m}");
    assert_eq!(m["drafts"]["expiring"], 0, "{m}");
    svc.stop().await;
}

#[tokio::test]
async fn metrics_report_drafts_sessions_backlog_and_analysis_latency() {
    let servers = start_servers(false);
    let svc = Drafting::start_with(
        service_config(&servers),
        settings(Duration::from_secs(3600)),
    )
    .await;
    let nats = svc.client.nats().clone();
    let empty = exchange(&nats, "drafting", "metrics", json!({})).await;
    assert_eq!(empty["drafts"]["total"], 0);
    assert_eq!(empty["analysis"]["count"], 0);
    assert_eq!(empty["autosave"]["buffer"], "memory");
    for id in ["m1", "m2"] {
        svc.ok(
            "drafting.create",
            json!({"draft_id": id, "title": "M", "author_id": "ann", "content": "Some words here."}),
        )
        .await;
    }
    for _ in 0..2 {
        svc.ok(
            "drafting.analyze",
            json!({"text": "The quick brown fox jumps over the lazy dog. It was seen."}),
        )
        .await;
    }
    // The first save of a draft goes out at the next tick; the second
    // waits for the (hour-long) interval: a backlog of one.
    svc.ok(
        "drafting.update",
        json!({"draft_id": "m1", "content": "typed", "autosave": true}),
    )
    .await;
    ymera_testkit::eventually(
        Duration::from_secs(10),
        "the first save is persisted",
        || async {
            exchange(&nats, "drafting", "metrics", json!({})).await["autosave"]["backlog"] == 0
        },
    )
    .await;
    svc.ok(
        "drafting.update",
        json!({"draft_id": "m1", "content": "typed more", "autosave": true}),
    )
    .await;
    let joined = svc
        .ok(
            "drafting.collab.join",
            json!({"draft_id": "m2", "user_id": "bob", "client_id": "tab"}),
        )
        .await;
    assert_eq!(joined["text"], "Some words here.");
    let m = exchange(&nats, "drafting", "metrics", json!({})).await;
    assert_eq!(m["drafts"]["total"], 2, "{m}");
    assert_eq!(m["drafts"]["by_status"]["draft"], 2, "{m}");
    assert_eq!(m["collaboration"]["active_sessions"], 1, "{m}");
    assert_eq!(m["collaboration"]["editors"], 1, "{m}");
    assert_eq!(m["collaboration"]["cached_documents"], 1, "{m}");
    assert_eq!(m["autosave"]["backlog"], 1, "{m}");
    assert_eq!(m["autosave"]["interval_ms"], 3_600_000, "{m}");
    assert_eq!(m["analysis"]["count"], 2, "{m}");
    assert!(m["analysis"]["mean_ms"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["analysis"]["p99_ms"].as_f64().unwrap() >= m["analysis"]["p50_ms"].as_f64().unwrap());
    svc.stop().await;
}
