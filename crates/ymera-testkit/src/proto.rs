//! The wire contract in `proto/` for tests: [`schema`] loads a JSON Schema
//! from `proto/schemas` (resolving `https://ymera.dev/schemas/…` references
//! to the files beside it), [`assert_valid`] checks a value against one, so
//! every crate's contract test checks its requests, replies and events the
//! same way.

use std::path::PathBuf;

use serde_json::Value;

/// The workspace's `proto/` folder.
pub fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

/// Resolves `https://ymera.dev/schemas/…` to the files under `proto/schemas`.
struct ProtoFiles;

impl jsonschema::Retrieve for ProtoFiles {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let rel = uri
            .as_str()
            .strip_prefix("https://ymera.dev/schemas/")
            .ok_or_else(|| format!("not a proto schema: {uri}"))?;
        let text = std::fs::read_to_string(proto_dir().join("schemas").join(rel))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The validator of `proto/schemas/<name>` (formats checked). Panics when
/// the file is missing or not a valid schema: a test fixture.
pub fn schema(name: &str) -> jsonschema::Validator {
    let path = proto_dir().join("schemas").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(ProtoFiles)
        .build(&value)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The JSON of `proto/schemas/<name>`. Panics, naming the file, when it is missing or not
/// JSON: what a registry test asserts of every endpoint's request and reply schema.
#[track_caller]
pub fn assert_schema_file(name: &str) -> Value {
    let path = proto_dir().join("schemas").join(name);
    assert!(path.is_file(), "{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every way `value` breaks `validator`, as "message at /pointer".
pub fn violations(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Panics, naming every violation, unless `value` is valid against
/// `proto/schemas/<name>`.
#[track_caller]
pub fn assert_valid(name: &str, value: &Value) {
    let errors = violations(&schema(name), value);
    assert!(errors.is_empty(), "{name} rejects {value}: {errors:?}");
}

/// Panics unless `proto/schemas/<name>` refuses `value`: a request the code refuses must
/// be refused by its schema too.
#[track_caller]
pub fn assert_invalid(name: &str, value: &Value) {
    assert!(!schema(name).is_valid(value), "{name} accepts {value}");
}

/// Sends `body` (no body for `Value::Null`) to `subject` with `headers`;
/// returns the error code header (`None` on success) and the reply body
/// (`Null` when it is not JSON).
pub async fn request_raw(
    nats: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: &Value,
) -> (Option<String>, Value) {
    let payload = if body.is_null() {
        bytes::Bytes::new()
    } else {
        bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default())
    };
    let reply = nats
        .request_with_headers(subject.to_owned(), headers, payload)
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned());
    (
        code,
        serde_json::from_slice(&reply.payload).unwrap_or(Value::Null),
    )
}

/// Validates `request` against `<service>/<endpoint>.request.schema.json`
/// (an empty body, `Value::Null`, is not validated), calls
/// `<service>.<endpoint>`, asserts it answered without an error and that the
/// reply is valid against `<service>/<endpoint>.reply.schema.json`; returns it.
pub async fn exchange(
    nats: &async_nats::Client,
    service: &str,
    endpoint: &str,
    request: Value,
) -> Value {
    if !request.is_null() {
        assert_valid(
            &format!("{service}/{endpoint}.request.schema.json"),
            &request,
        );
    }
    let subject = format!("{service}.{endpoint}");
    let (code, reply) = request_raw(nats, &subject, async_nats::HeaderMap::new(), &request).await;
    assert!(
        code.is_none(),
        "{subject} refused {request}: {code:?} {reply}"
    );
    assert_valid(&format!("{service}/{endpoint}.reply.schema.json"), &reply);
    reply
}

/// Asserts `<service>.<endpoint>` refuses `request` with error `code` and a
/// body valid against `error.schema.json`.
pub async fn assert_refused(
    nats: &async_nats::Client,
    service: &str,
    endpoint: &str,
    request: Value,
    code: &str,
) {
    let subject = format!("{service}.{endpoint}");
    let (status, body) = request_raw(nats, &subject, async_nats::HeaderMap::new(), &request).await;
    assert!(status.is_some(), "{subject} accepted {request}: {body}");
    assert_valid("error.schema.json", &body);
    assert_eq!(body["error"]["code"], code, "{body}");
}
