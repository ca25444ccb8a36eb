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
