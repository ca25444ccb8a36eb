//! Auto-save: acknowledged at once, persisted later, nothing lost at
//! shutdown (in-process token and a real SIGTERM to the binary).

use std::time::Duration;

use serde_json::json;

use crate::common::{Drafting, service_config, start_servers};

async fn content_in_db(db_url: &str, draft: &str) -> (String, i32) {
    let pool = sqlx::PgPool::connect(db_url).await.unwrap();
    let row: (String, i32) =
        sqlx::query_as("SELECT content, version FROM drafts WHERE draft_id=$1")
            .bind(draft)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    row
}

async fn shutdown_flushes(with_redis: bool) {
    let servers = start_servers(with_redis);
    let settings = ymera_drafting::Settings {
        auto_save_interval: Duration::from_secs(3600),
        ..ymera_drafting::Settings::default()
    };
    let svc = Drafting::start_with(service_config(&servers), settings).await;
    svc.ok(
        "drafting.create",
        json!({"draft_id": "a1", "title": "A", "author_id": "ann", "content": "v0"}),
    )
    .await;
    let ack = svc
        .ok(
            "drafting.update",
            json!({"draft_id": "a1", "content": "v1", "autosave": true}),
        )
        .await;
    assert_eq!(ack["accepted"], true);
    assert_eq!(ack["buffered"], if with_redis { "redis" } else { "memory" });
    // The first save of a draft is persisted at the next tick.
    let mut persisted = false;
    for _ in 0..100 {
        if content_in_db(&servers.database_url, "a1").await.0 == "v1" {
            persisted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(persisted);
    // Later ones wait for the interval (an hour here)...
    for i in 2..=5 {
        svc.ok(
            "drafting.update",
            json!({"draft_id": "a1", "content": format!("v{i}"), "autosave": true}),
        )
        .await;
    }
    assert_eq!(
        svc.ok("drafting.get", json!({"draft_id": "a1"})).await["autosave_pending"],
        true
    );
    // ...and are flushed at shutdown.
    svc.stop().await;
    let (content, version) = content_in_db(&servers.database_url, "a1").await;
    assert_eq!(content, "v5");
    assert_eq!(version, 3);
}

#[tokio::test]
async fn shutdown_flushes_memory_buffer() {
    shutdown_flushes(false).await;
}

#[tokio::test]
async fn shutdown_flushes_redis_buffer() {
    shutdown_flushes(true).await;
}

#[tokio::test]
async fn sigterm_to_the_binary_loses_no_autosave() {
    let servers = start_servers(false);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ymera-drafting"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NATS_URL", servers.nats.url())
        .env("POSTGRES_URL", &servers.database_url)
        .env("ENVIRONMENT", "development")
        .env("YMERA_AUTH", "off")
        .env("YMERA_HTTP_ADDR", "127.0.0.1:0")
        .env("AUTO_SAVE_INTERVAL", "3600s")
        .env("LOG_LEVEL", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let nats = async_nats::connect(servers.nats.url()).await.unwrap();
    let client = ymera_core::client::ServiceClient::new(nats).with_timeout(Duration::from_secs(10));
    // Panics unless the binary answers.
    ymera_testkit::wait_until_serving(client.nats(), "drafting.health").await;
    let _: serde_json::Value = client
        .request(
            "drafting.create",
            &json!({"draft_id": "s1", "title": "S", "author_id": "ann", "content": "start"}),
        )
        .await
        .unwrap();
    let _: serde_json::Value = client
        .request(
            "drafting.create",
            &json!({"draft_id": "s2", "title": "S", "author_id": "ann", "content": "start"}),
        )
        .await
        .unwrap();
    // First saves go out at the next tick; wait for them so the later ones
    // are held by the one-hour interval.
    for id in ["s1", "s2"] {
        let _: serde_json::Value = client
            .request(
                "drafting.update",
                &json!({"draft_id": id, "content": "first", "autosave": true}),
            )
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if content_in_db(&servers.database_url, "s1").await.0 == "first"
            && content_in_db(&servers.database_url, "s2").await.0 == "first"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ["s1", "s2"] {
        let _: serde_json::Value = client
            .request(
                "drafting.update",
                &json!({"draft_id": id, "content": format!("{id} typed last"), "autosave": true}),
            )
            .await
            .unwrap();
    }
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(
        content_in_db(&servers.database_url, "s1").await.0,
        "s1 typed last"
    );
    assert_eq!(
        content_in_db(&servers.database_url, "s2").await.0,
        "s2 typed last"
    );
}
