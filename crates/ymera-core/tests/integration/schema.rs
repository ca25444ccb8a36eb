//! Code and `proto/` cannot drift apart: what the code produces validates
//! against the hand-written schemas, and what the schemas reject the code rejects.

use std::path::PathBuf;

use serde_json::{Value, json};
use ymera_core::envelope::{Envelope, MessageType};
use ymera_core::error::{Error, ErrorKind, Violation};
use ymera_testkit::proto::schema;

fn examples() -> Vec<Envelope> {
    let minimal = Envelope::new(MessageType::Event, "a", vec!["b".into()], "", Value::Null);
    let mut full = Envelope::new(
        MessageType::Request,
        "code-reviewer_2",
        (0..100).map(|i| format!("agent-{i}")).collect(),
        "é".repeat(500),
        json!({"message": "review this", "nested": [1, {"x": null}]}),
    );
    full.conversation_id = Some("conv-1".into());
    full.correlation_id = Some(uuid::Uuid::now_v7());
    full.priority = ymera_core::envelope::Priority::Critical;
    full.expires_at = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    full.metadata.insert("trace".into(), "x".repeat(4096));
    let reply = minimal.reply("b", json!({"success": true}));
    vec![minimal, full, reply]
}

#[test]
fn envelopes_from_code_validate_against_the_schema() {
    let validator = schema("envelope.schema.json");
    for envelope in examples() {
        envelope.validate().unwrap();
        let value = serde_json::to_value(&envelope).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}

#[test]
fn schema_and_code_reject_the_same_bad_envelopes() {
    let validator = schema("envelope.schema.json");
    let good = serde_json::to_value(&examples()[0]).unwrap();
    let mutations: Vec<(&str, Value)> = vec![
        ("sender", json!("Bad Name")),
        ("sender", json!("-lead")),
        ("recipients", json!([])),
        (
            "recipients",
            json!((0..101).map(|i| format!("a{i}")).collect::<Vec<_>>()),
        ),
        ("recipients", json!(["x", "x"])),
        ("subject", json!("s".repeat(501))),
        ("type", json!("shout")),
        ("priority", json!("urgent")),
        ("unknown_field", json!(1)),
        ("metadata", json!({"k": 1})),
    ];
    for (field, value) in mutations {
        let mut bad = good.clone();
        bad[field] = value.clone();
        assert!(!validator.is_valid(&bad), "schema accepted {field}={value}");
        let code_accepts = serde_json::from_value::<Envelope>(bad)
            .map(|e| e.validate().is_ok())
            .unwrap_or(false);
        assert!(!code_accepts, "code accepted {field}={value}");
    }
}

#[test]
fn error_bodies_validate_against_the_schema() {
    let validator = schema("error.schema.json");
    let mut errors: Vec<Error> = ErrorKind::ALL.iter().map(|k| Error::new(*k, "m")).collect();
    errors.push(Error::rate_limited(250));
    errors.push(Error::circuit_open("bob", 1000));
    errors.push(Error::validation(vec![Violation::new("/a", "bad")]));
    errors.push(Error::payload_too_large("request", 10, 5));
    for err in errors {
        let body: Value = serde_json::from_slice(&err.to_body()).unwrap();
        assert!(validator.is_valid(&body), "{body}");
    }
}

#[test]
fn asyncapi_document_references_existing_schemas() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let text = std::fs::read_to_string(root.join("asyncapi.yaml")).unwrap();
    assert!(text.starts_with("asyncapi: 3."));
    for line in text.lines().filter(|l| l.contains("schemas/")) {
        let start = line.find("schemas/").unwrap();
        let file: String = line[start..]
            .chars()
            .take_while(|c| !matches!(c, '\'' | '"' | ' '))
            .collect();
        let file = file.trim_end_matches(['.', ',', ';']);
        assert!(root.join(file).is_file(), "{file} referenced but missing");
    }
}

pub fn health_validator() -> jsonschema::Validator {
    schema("health.schema.json")
}
