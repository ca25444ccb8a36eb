//! Export and import: all or nothing, with dry runs.

use serde_json::json;
use ymera_core::ErrorKind;

use crate::common::*;

#[tokio::test]
async fn import_with_one_invalid_agent_applies_nothing_and_valid_bundles_apply_atomically() {
    let s = stack().await;
    ok(
        &s.client,
        "config.schema.set",
        json!({"agent": "alpha", "schema": {
        "type": "object", "properties": {"size": {"type": "integer"}}}}),
    )
    .await;
    set(&s.client, "alpha", "base", json!({"size": 1})).await;
    set(&s.client, "alpha", "production", json!({"size": 2})).await;
    set(&s.client, "beta", "base", json!({"name": "b"})).await;

    let bundle = ok(
        &s.client,
        "config.export",
        json!({"environment": "production"}),
    )
    .await;
    assert_eq!(bundle["format"], "ymera-config-bundle/1");
    let agents = bundle["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["agent"], "alpha");
    assert_eq!(
        agents[0]["layers"],
        json!({"base": {"size": 1}, "production": {"size": 2}})
    );
    assert_eq!(agents[0]["schema"]["properties"]["size"]["type"], "integer");

    // One invalid agent config (gamma breaks its own schema): nothing applied.
    let bad = json!({"format": "ymera-config-bundle/1", "agents": [
        {"agent": "alpha", "layers": {"base": {"size": 10}}},
        {"agent": "beta", "layers": {"staging": {"name": "staged"}}},
        {"agent": "gamma", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
         "layers": {"base": {"n": "one"}}},
        {"agent": "delta", "layers": {"base": {"ok": true}}}
    ]});
    let err = fails(
        &s.client,
        "config.import",
        json!({"bundle": bad}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/gamma/base/n"]);
    assert_eq!(
        get(&s.client, "alpha", "base").await["config"],
        json!({"size": 1})
    );
    fails(
        &s.client,
        "config.get",
        json!({"agent": "beta", "environment": "staging", "raw": true}),
        ErrorKind::NotFound,
    )
    .await;
    fails(
        &s.client,
        "config.get",
        json!({"agent": "delta", "environment": "base"}),
        ErrorKind::NotFound,
    )
    .await;
    fails(
        &s.client,
        "config.schema.get",
        json!({"agent": "gamma"}),
        ErrorKind::NotFound,
    )
    .await;

    // A base change that breaks a stored production layer is caught too.
    let bad = json!({"format": "ymera-config-bundle/1", "agents": [
        {"agent": "alpha", "schema": {"type": "object", "properties": {"size": {"type": "integer", "maximum": 1}}}}
    ]});
    let err = fails(
        &s.client,
        "config.import",
        json!({"bundle": bad}),
        ErrorKind::ValidationFailed,
    )
    .await;
    assert_eq!(violation_paths(&err), ["/alpha/production/size"]);

    // Dry run: the plan, nothing applied.
    let good = json!({"format": "ymera-config-bundle/1", "agents": [
        {"agent": "alpha", "layers": {"base": {"size": 10}, "production": {"size": 2}}},
        {"agent": "delta", "layers": {"base": {"ok": true}}}
    ]});
    let plan = ok(
        &s.client,
        "config.import",
        json!({"bundle": good, "dry_run": true}),
    )
    .await;
    assert_eq!(plan["applied"], false);
    assert_eq!(plan["changes"].as_array().unwrap().len(), 2);
    assert_eq!(plan["unchanged"], 1);
    assert_eq!(
        get(&s.client, "alpha", "base").await["config"],
        json!({"size": 1})
    );

    let done = ok(
        &s.client,
        "config.import",
        json!({"bundle": good, "actor": "restore"}),
    )
    .await;
    assert_eq!(done["applied"], true);
    assert_eq!(
        get(&s.client, "alpha", "base").await["config"],
        json!({"size": 10})
    );
    let delta = get(&s.client, "delta", "base").await;
    assert_eq!(delta["config"], json!({"ok": true}));
    assert_eq!(delta["updated_by"], "restore");
    let history = ok(
        &s.client,
        "config.history",
        json!({"agent": "alpha", "environment": "base"}),
    )
    .await;
    assert_eq!(history["audit"][0]["action"], "import");

    // Export → import of the same bundle changes nothing.
    let bundle = ok(
        &s.client,
        "config.export",
        json!({"environment": "production"}),
    )
    .await;
    let again = ok(&s.client, "config.import", json!({"bundle": bundle})).await;
    assert_eq!(again["changes"].as_array().unwrap().len(), 0);
    fails(
        &s.client,
        "config.import",
        json!({"bundle": {"format": "other", "agents": []}}),
        ErrorKind::InvalidRequest,
    )
    .await;
    s.replica.stop().await;
}
