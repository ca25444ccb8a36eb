//! Writes: optimistic concurrency, schema validation, layering, history,
//! diff, rollback, audit and templates.

use serde_json::{Value, json};
use ymera_core::ErrorKind;
use ymera_testkit::shared_postgres;

use crate::common::*;

#[tokio::test]
async fn racing_writers_with_the_same_expected_version_one_commits_one_gets_409() {
    let s = stack().await;
    let first = set(&s.client, "billing", "base", json!({"workers": 1})).await;
    let mut version = first["version"].as_i64().unwrap();
    for round in 0..5 {
        let body = |n: i64| {
            json!({"agent": "billing", "environment": "base", "config": {"workers": n},
                   "expected_version": version, "actor": format!("writer-{n}")})
        };
        let (a, b) = tokio::join!(
            call(&s.client, "config.set", body(10 + round)),
            call(&s.client, "config.set", body(20 + round))
        );
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("expected exactly one commit, got {other:?}"),
        };
        assert_eq!(loser.kind, ErrorKind::Conflict);
        assert_eq!(loser.details["current_version"], winner["version"]);
        let now = get(&s.client, "billing", "base").await;
        assert_eq!(now["version"], winner["version"]);
        assert_eq!(now["updated_by"], winner["updated_by"]);
        version = winner["version"].as_i64().unwrap();
    }
    let history = ok(
        &s.client,
        "config.history",
        json!({"agent": "billing", "environment": "base"}),
    )
    .await;
    assert_eq!(
        history["audit"].as_array().unwrap().len(),
        6,
        "one audit row per commit"
    );
    s.replica.stop().await;
}

#[tokio::test]
async fn schema_violations_are_listed_path_by_path_and_nothing_changes() {
    let s = stack().await;
    let schema = json!({
        "type": "object",
        "properties": {
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "log_level": {"enum": ["debug", "info", "warn", "error"]},
            "db": {"type": "object", "properties": {"pool": {"type": "integer"}}}
        },
        "required": ["port"]
    });
    let resp = ok(
        &s.client,
        "config.schema.set",
        json!({"agent": "api", "schema": schema}),
    )
    .await;
    assert_eq!(resp["version"], 1);
    let got = ok(&s.client, "config.schema.get", json!({"agent": "api"})).await;
    assert_eq!(got["schema"], schema);

    let good = set(
        &s.client,
        "api",
        "base",
        json!({"port": 8080, "log_level": "info"}),
    )
    .await;
    let err = fails(
        &s.client,
        "config.set",
        json!({"agent": "api", "environment": "base",
               "config": {"port": 70000, "log_level": "loud", "db": {"pool": "x"}}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/db/pool", "/log_level", "/port"]);
    // An environment layer is validated merged over base.
    let err = fails(
        &s.client,
        "config.set",
        json!({"agent": "api", "environment": "production", "config": {"port": null}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/"]);
    // Deleting a required key is refused too.
    fails(
        &s.client,
        "config.delete",
        json!({"agent": "api", "environment": "base", "pointer": "/port"}),
        ErrorKind::ValidationFailed,
    )
    .await;
    let now = get(&s.client, "api", "base").await;
    assert_eq!(now["version"], good["version"]);
    assert_eq!(now["config"], json!({"port": 8080, "log_level": "info"}));
    let history = ok(
        &s.client,
        "config.history",
        json!({"agent": "api", "environment": "base"}),
    )
    .await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 1);

    // A schema the stored config violates is refused; an invalid schema too.
    let err = fails(
        &s.client,
        "config.schema.set",
        json!({"agent": "api", "schema": {"type": "object", "required": ["host"]}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/"]);
    fails(
        &s.client,
        "config.schema.set",
        json!({"agent": "api", "schema": {"type": 12}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    // Each layer fits the 1 MiB limit, but the effective document would not.
    let half = "x".repeat(600 * 1024);
    set(&s.client, "api", "base", json!({"port": 1, "a": half})).await;
    let err = fails(
        &s.client,
        "config.set",
        json!({"agent": "api", "environment": "production", "config": {"b": half}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert!(err.message.contains("over the limit"), "{err}");
    s.replica.stop().await;
}

#[tokio::test]
async fn environments_layer_over_base_and_pointers_read_and_edit_one_value() {
    let s = stack().await;
    set(
        &s.client,
        "search",
        "base",
        json!({"db": {"host": "db", "pool": 5}, "debug": false}),
    )
    .await;
    set(
        &s.client,
        "search",
        "production",
        json!({"db": {"pool": 50}, "debug": null}),
    )
    .await;
    let eff = get(&s.client, "search", "production").await;
    assert_eq!(eff["config"], json!({"db": {"host": "db", "pool": 50}}));
    let raw = ok(
        &s.client,
        "config.get",
        json!({"agent": "search", "environment": "production", "raw": true}),
    )
    .await;
    assert_eq!(raw["config"], json!({"db": {"pool": 50}, "debug": null}));
    let one = ok(
        &s.client,
        "config.get",
        json!({"agent": "search", "environment": "production", "pointer": "/db/pool"}),
    )
    .await;
    assert_eq!(one["config"], 50);
    // staging has no layer: it is base.
    assert_eq!(
        get(&s.client, "search", "staging").await["config"]["db"]["pool"],
        5
    );

    // A base change shows through production, with a higher effective version.
    let before = eff["version"].as_i64().unwrap();
    ok(
        &s.client,
        "config.set",
        json!({"agent": "search", "environment": "base", "pointer": "/db/host", "config": "db2"}),
    )
    .await;
    let eff = get(&s.client, "search", "production").await;
    assert_eq!(eff["config"]["db"]["host"], "db2");
    assert!(eff["version"].as_i64().unwrap() > before);

    ok(&s.client, "config.set", json!({"agent": "search", "environment": "base", "merge": true, "config": {"debug": true, "new": 1}})).await;
    assert_eq!(
        get(&s.client, "search", "base").await["config"],
        json!({"db": {"host": "db2", "pool": 5}, "debug": true, "new": 1})
    );
    ok(
        &s.client,
        "config.delete",
        json!({"agent": "search", "environment": "base", "pointer": "/new"}),
    )
    .await;
    ok(
        &s.client,
        "config.delete",
        json!({"agent": "search", "environment": "production"}),
    )
    .await;
    assert_eq!(
        get(&s.client, "search", "production").await["config"]["db"]["pool"],
        5
    );
    // The seed table agent_configurations mirrors the current layers.
    let pool = ymera_core::store::connect_postgres(&s.db, 1).await.unwrap();
    let mirrored: serde_json::Value = sqlx::query_scalar(
        "SELECT config_data FROM agent_configurations WHERE agent_name = 'search'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        mirrored,
        json!({"base": {"db": {"host": "db2", "pool": 5}, "debug": true}})
    );
    fails(
        &s.client,
        "config.get",
        json!({"agent": "nobody", "environment": "base"}),
        ErrorKind::NotFound,
    )
    .await;
    fails(
        &s.client,
        "config.get",
        json!({"agent": "Bad Name", "environment": "base"}),
        ErrorKind::InvalidRequest,
    )
    .await;
    fails(
        &s.client,
        "config.get",
        json!({"agent": "search", "environment": "qa"}),
        ErrorKind::InvalidRequest,
    )
    .await;
    fails(
        &s.client,
        "config.get",
        json!({"agent": "search", "environment": "base", "pointer": "/missing"}),
        ErrorKind::NotFound,
    )
    .await;
    s.replica.stop().await;
}

#[tokio::test]
async fn rollback_restores_earlier_content_as_a_new_version_and_audit_has_every_patch() {
    let s = stack().await;
    let v1 = set(
        &s.client,
        "mailer",
        "staging",
        json!({"retries": 1, "from": "a@x"}),
    )
    .await;
    let v2 = set(
        &s.client,
        "mailer",
        "staging",
        json!({"retries": 2, "from": "a@x"}),
    )
    .await;
    let v3 = set(&s.client, "mailer", "staging", json!({"retries": 3})).await;
    let (v1, v2, v3) = (
        v1["version"].as_i64().unwrap(),
        v2["version"].as_i64().unwrap(),
        v3["version"].as_i64().unwrap(),
    );
    assert!(v1 < v2 && v2 < v3);

    let diff = ok(
        &s.client,
        "config.diff",
        json!({"agent": "mailer", "environment": "staging", "from_version": v1, "to_version": v3}),
    )
    .await;
    let mut doc = json!({"retries": 1, "from": "a@x"});
    let patch: json_patch::Patch = serde_json::from_value(diff["patch"].clone()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc, json!({"retries": 3}));

    let rb = ok(
        &s.client,
        "config.rollback",
        json!({"agent": "mailer", "environment": "staging", "to_version": v1, "actor": "ops"}),
    )
    .await;
    let v4 = rb["version"].as_i64().unwrap();
    assert!(v4 > v3);
    let now = ok(
        &s.client,
        "config.get",
        json!({"agent": "mailer", "environment": "staging", "raw": true}),
    )
    .await;
    assert_eq!(now["config"], json!({"retries": 1, "from": "a@x"}));
    assert_eq!(now["version"], v4);
    assert_eq!(now["updated_by"], "ops");

    let history = ok(
        &s.client,
        "config.history",
        json!({"agent": "mailer", "environment": "staging", "documents": true}),
    )
    .await;
    let versions: Vec<i64> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [v4, v3, v2, v1]);
    assert_eq!(history["versions"][0]["action"], "rollback");
    let audit = history["audit"].as_array().unwrap();
    assert_eq!(audit.len(), 4);
    let actions: Vec<&str> = audit
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rollback", "set", "set", "set"]);
    assert_eq!(audit[0]["from_version"], v3);
    assert_eq!(audit[0]["to_version"], v4);
    assert_eq!(audit[0]["actor"], "ops");
    // Replaying every audit patch from nothing gives the current document.
    let mut doc = Value::Null;
    for row in audit.iter().rev() {
        let patch: json_patch::Patch = serde_json::from_value(row["patch"].clone()).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
    }
    assert_eq!(doc, now["config"]);

    // Stale expected_version is a conflict; an unknown version is 404.
    fails(&s.client, "config.rollback", json!({"agent": "mailer", "environment": "staging", "to_version": v2, "expected_version": v3}), ErrorKind::Conflict).await;
    fails(
        &s.client,
        "config.rollback",
        json!({"agent": "mailer", "environment": "staging", "to_version": 999}),
        ErrorKind::NotFound,
    )
    .await;
    s.replica.stop().await;
}

#[tokio::test]
async fn only_the_last_n_versions_are_kept() {
    let nats = ymera_testkit::NatsServer::start().unwrap();
    let db = shared_postgres().create_database().unwrap();
    let settings = ymera_config::Settings {
        keep_versions: 3,
        ..Default::default()
    };
    let replica = start_replica(config(&nats, &db, None), settings).await;
    let client = client(&nats).await;
    for n in 0..6 {
        set(&client, "keeper", "base", json!({"n": n})).await;
    }
    let history = ok(
        &client,
        "config.history",
        json!({"agent": "keeper", "environment": "base"}),
    )
    .await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
    assert_eq!(
        history["audit"].as_array().unwrap().len(),
        6,
        "the audit trail is never pruned"
    );
    replica.stop().await;
}

#[tokio::test]
async fn templates_render_validate_and_write() {
    let s = stack().await;
    ok(
        &s.client,
        "config.schema.set",
        json!({"agent": "worker", "schema": {
        "type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]}}),
    )
    .await;
    let t = ok(
        &s.client,
        "config.template.set",
        json!({"name": "service", "template": {
        "port": "${port}", "url": "http://${host}:${port}/", "tags": ["${env}"]}}),
    )
    .await;
    assert_eq!(t["variables"], json!(["env", "host", "port"]));
    let w = ok(
        &s.client,
        "config.template.apply",
        json!({"template": "service", "agent": "worker",
        "environment": "base", "vars": {"port": 9000, "host": "w1", "env": "dev"}}),
    )
    .await;
    assert_eq!(w["changed"], true);
    assert_eq!(
        get(&s.client, "worker", "base").await["config"],
        json!({"port": 9000, "url": "http://w1:9000/", "tags": ["dev"]})
    );
    // Missing variables are listed; a rendered document that breaks the schema is refused.
    let err = fails(
        &s.client,
        "config.template.apply",
        json!({"template": "service", "agent": "worker",
        "environment": "base", "vars": {"port": 1}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/tags/0", "/url"]);
    fails(
        &s.client,
        "config.template.apply",
        json!({"template": "service", "agent": "worker",
        "environment": "base", "vars": {"port": "not a number", "host": "h", "env": "e"}}),
        ErrorKind::ValidationFailed,
    )
    .await;
    fails(
        &s.client,
        "config.template.apply",
        json!({"template": "nope", "agent": "worker",
        "environment": "base"}),
        ErrorKind::NotFound,
    )
    .await;
    s.replica.stop().await;
}
