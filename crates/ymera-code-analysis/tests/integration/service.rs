//! The `code-analysis` service over a real nats-server: formats, rules,
//! error codes and discovery.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{start_service, start_service_with};

const EVAL_PY: &str = "def run(cmd):\n    return eval(cmd)\n";

fn eval_request(format: &str) -> Value {
    json!({"files": [{"path": "app.py", "content": EVAL_PY}], "format": format})
}

#[tokio::test]
async fn analyze_answers_json_sarif_and_markdown() {
    let svc = start_service(1024 * 1024).await;

    let report: Value = svc
        .client
        .request("code-analysis.analyze", &eval_request("json"))
        .await
        .unwrap();
    assert_eq!(report["files"][0]["path"], "app.py");
    assert_eq!(report["files"][0]["language"], "python");
    assert_eq!(report["files"][0]["functions"][0]["name"], "run");
    assert_eq!(report["files"][0]["findings"][0]["rule_id"], "B307");
    assert_eq!(report["summary"]["file_count"], 1);

    // Without "format" the answer is the JSON report too.
    let default: Value = svc
        .client
        .request(
            "code-analysis.analyze",
            &json!({"files": [{"path": "app.py", "content": EVAL_PY}]}),
        )
        .await
        .unwrap();
    assert_eq!(default["files"][0]["findings"][0]["rule_id"], "B307");

    let sarif: Value = svc
        .client
        .request("code-analysis.analyze", &eval_request("sarif"))
        .await
        .unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "B307");

    let markdown: Value = svc
        .client
        .request("code-analysis.analyze", &eval_request("markdown"))
        .await
        .unwrap();
    let text = markdown["markdown"].as_str().unwrap();
    assert!(text.contains("Code Analysis Report"), "{text}");
    assert!(text.contains("B307"), "{text}");

    // A chat message with a fenced block is analysed like a file.
    let chat: Value = svc
        .client
        .request(
            "code-analysis.analyze",
            &json!({"message": format!("please review\n```python\n{EVAL_PY}```\n")}),
        )
        .await
        .unwrap();
    assert_eq!(chat["files"][0]["path"], "block-1");
    assert_eq!(chat["files"][0]["findings"][0]["rule_id"], "B307");
}

#[tokio::test]
async fn rules_lists_the_catalogue() {
    let svc = start_service(1024 * 1024).await;
    let rules: Value = svc
        .client
        .request("code-analysis.rules", &json!({}))
        .await
        .unwrap();
    let rules = rules["rules"].as_array().unwrap();
    assert!(rules.len() > 10);
    let b307 = rules.iter().find(|r| r["id"] == "B307").unwrap();
    assert_eq!(b307["category"], "security");
    assert!(
        b307["languages"]
            .as_array()
            .unwrap()
            .contains(&json!("python"))
    );
}

#[tokio::test]
async fn errors_carry_the_right_codes() {
    let svc = start_service(4 * 1024 * 1024).await;

    let err = svc
        .client
        .request::<_, Value>(
            "code-analysis.analyze",
            &json!({"files": [{"path": "main.cob", "language": "cobol", "content": "x"}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 422, "{err}");
    let text = err.to_string();
    for language in ["python", "javascript", "java", "go", "rust"] {
        assert!(text.contains(language), "{text}");
    }
    assert_eq!(err.details["supported"].as_array().unwrap().len(), 5);

    // 1.5 MiB fits MAX_MESSAGE_SIZE (4 MiB) but not the 1 MiB per-file limit.
    let big = "x = 1\n".repeat(256 * 1024);
    let err = svc
        .client
        .request::<_, Value>(
            "code-analysis.analyze",
            &json!({"files": [{"path": "big.py", "content": big}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 413, "{err}");

    let err = svc
        .client
        .request_bytes(
            "code-analysis.analyze",
            bytes::Bytes::from_static(b"{\"files\": ["),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400, "{err}");

    let err = svc
        .client
        .request::<_, Value>("code-analysis.analyze", &json!({"files": []}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400, "{err}");

    let err = svc
        .client
        .request::<_, Value>(
            "code-analysis.analyze",
            &json!({"files": [{"path": "a.py", "content": "x"}], "format": "pdf"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 400, "{err}");

    // The service is still healthy after all of that.
    let report: Value = svc
        .client
        .request("code-analysis.analyze", &eval_request("json"))
        .await
        .unwrap();
    assert_eq!(report["summary"]["file_count"], 1);
}

#[tokio::test]
async fn request_limit_is_max_message_size() {
    // MAX_MESSAGE_SIZE 64 KiB: a 100 KiB file is refused with 413 (by the
    // runtime's size check before the engine's own request limit).
    let svc = start_service(64 * 1024).await;
    let body = "y = 2\n".repeat(100 * 1024 / 6);
    let err = svc
        .client
        .request::<_, Value>(
            "code-analysis.analyze",
            &json!({"files": [{"path": "mid.py", "content": body}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 413, "{err}");
}

#[tokio::test]
async fn srv_ping_finds_code_analysis() {
    let svc = start_service(1024 * 1024).await;
    let nats = svc.client.nats().clone();
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await.unwrap();
    nats.publish_with_reply("$SRV.PING", inbox, bytes::Bytes::new())
        .await
        .unwrap();
    let mut names = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        let ping: Value = serde_json::from_slice(&msg.payload).unwrap();
        names.push(ping["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names, ["code-analysis"]);
}

#[tokio::test]
async fn analyze_requires_a_credential_when_auth_is_required() {
    let svc = start_service_with(1024 * 1024, ymera_core::config::AuthMode::Required).await;
    // No credential: 401 before any work (no security service is needed).
    let err = svc
        .client
        .request::<_, Value>("code-analysis.analyze", &eval_request("json"))
        .await
        .expect_err("an anonymous analyze must be refused");
    assert_eq!(
        err.kind,
        ymera_core::error::ErrorKind::Unauthenticated,
        "{err}"
    );
    // A credential the service cannot check (security is down): 503, not a report.
    let err = svc
        .client
        .clone()
        .with_credential(Some(ymera_core::client::Credential::ApiKey(
            "ymk_abc_def".into(),
        )))
        .request::<_, Value>("code-analysis.analyze", &eval_request("json"))
        .await
        .expect_err("an unverifiable credential must be refused");
    assert_eq!(err.kind, ymera_core::error::ErrorKind::Unavailable, "{err}");
    // The rule catalogue stays open, like health.
    let rules: Value = svc
        .client
        .request("code-analysis.rules", &json!({}))
        .await
        .unwrap();
    assert!(rules["rules"].as_array().is_some_and(|r| r.len() >= 30));
}
