//! The wire contract in `proto/`: what a client sends to and gets back from
//! the running service validates against `proto/schemas/code-analysis/*`, so
//! the schemas and the code cannot drift apart.

use serde_json::{Value, json};

use crate::common::start_service;
use ymera_testkit::proto::{request_raw, schema, violations};

fn assert_valid(validator: &jsonschema::Validator, value: &Value, what: &str) {
    let errors = violations(validator, value);
    assert!(errors.is_empty(), "{what}: {errors:?}\n{value}");
}

/// Sends `body` raw and returns (error code header, reply body).
async fn call(
    svc: &crate::common::RunningService,
    subject: &str,
    body: &Value,
) -> (Option<String>, Value) {
    request_raw(
        svc.client.nats(),
        subject,
        async_nats::HeaderMap::new(),
        body,
    )
    .await
}

const SOURCE: &str = "import hashlib\n\ndef run(cmd, n):\n    if n > 1 and cmd:\n        return eval(cmd)\n    return hashlib.md5(cmd).hexdigest()\n";

#[tokio::test]
async fn analyze_and_rules_follow_the_schemas() {
    let svc = start_service(4 * 1024 * 1024).await;
    let request_schema = schema("code-analysis/analyze.request.schema.json");
    let reply_schema = schema("code-analysis/analyze.reply.schema.json");

    let requests = vec![
        json!({"files": [{"path": "app.py", "content": SOURCE}]}),
        json!({"files": [
            {"path": "app.py", "content": SOURCE},
            {"path": "main", "language": "go", "content": "package main\nfunc f(a int) int { if a > 0 { return a }; return 0 }\n"},
        ], "format": "json"}),
        json!({"files": [{"path": "app.py", "content": SOURCE}], "format": "sarif"}),
        json!({"files": [{"path": "lib.rs", "content": "fn f() { let x: Option<u8> = None; x.unwrap(); }\n"}], "format": "markdown"}),
        json!({"message": format!("review\n```python\n{SOURCE}```\n```\nfunction g(a) {{ return a && a.b; }}\n```\n"), "language": "javascript"}),
    ];
    let mut kinds = Vec::new();
    for request in &requests {
        assert_valid(&request_schema, request, "analyze request");
        let (error, reply) = call(&svc, "code-analysis.analyze", request).await;
        assert_eq!(error, None, "{reply}");
        assert_valid(&reply_schema, &reply, "analyze reply");
        kinds.push(if reply.get("runs").is_some() {
            "sarif"
        } else if reply.get("markdown").is_some() {
            "markdown"
        } else {
            assert!(
                reply["summary"]["finding_count"].as_u64().unwrap() > 0,
                "{reply}"
            );
            "json"
        });
    }
    assert_eq!(kinds, ["json", "json", "sarif", "markdown", "json"]);

    let rules_request = json!({});
    assert_valid(
        &schema("code-analysis/rules.request.schema.json"),
        &rules_request,
        "rules request",
    );
    let (error, rules) = call(&svc, "code-analysis.rules", &rules_request).await;
    assert_eq!(error, None, "{rules}");
    assert_valid(
        &schema("code-analysis/rules.reply.schema.json"),
        &rules,
        "rules reply",
    );
}

#[tokio::test]
async fn refused_requests_are_refused_by_the_schema_too() {
    let svc = start_service(4 * 1024 * 1024).await;
    let request_schema = schema("code-analysis/analyze.request.schema.json");
    let error_schema = schema("error.schema.json");
    // The schema rejects what the code rejects (deny_unknown_fields, formats).
    let refused = [
        (json!({"files": [], "colour": "red"}), "400"),
        (
            json!({"files": [{"path": "a.py", "content": "x = 1\n"}], "format": "html"}),
            "400",
        ),
        (json!({"files": [{"path": "a.py"}]}), "400"),
    ];
    for (request, code) in refused {
        assert!(
            !request_schema.is_valid(&request),
            "schema accepted {request}"
        );
        let (error, body) = call(&svc, "code-analysis.analyze", &request).await;
        assert_eq!(error.as_deref(), Some(code), "{request} -> {body}");
        assert_valid(&error_schema, &body, "error body");
    }
    // Valid by shape, refused by content: the error body still follows error.schema.json.
    let request = json!({"files": [{"path": "main.cob", "language": "cobol", "content": "x"}]});
    assert!(request_schema.is_valid(&request));
    let (error, body) = call(&svc, "code-analysis.analyze", &request).await;
    assert_eq!(error.as_deref(), Some("422"), "{body}");
    assert_valid(&error_schema, &body, "error body");
    assert_eq!(body["error"]["code"], "validation_failed");
}
