//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the JSON
//! Schemas of `proto/schemas/` (embedded at build time) and the live route
//! table — never written by hand. Each schema file is one component
//! (`config/get.request.schema.json` → `config.get.request`), with its
//! references rewritten to component references.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::registry::Endpoint;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/schemas.rs"));
}

/// The error statuses every operation may answer (DESIGN §4).
const ERROR_STATUSES: [(&str, &str); 10] = [
    ("400", "invalid_request: malformed JSON or a bad field"),
    ("401", "unauthenticated: no or an invalid credential"),
    ("403", "forbidden: the credential lacks the permission"),
    ("404", "not_found"),
    ("409", "conflict"),
    ("413", "payload_too_large"),
    ("422", "validation_failed"),
    ("429", "rate_limited (Retry-After, details.retry_after_ms)"),
    ("500", "internal"),
    (
        "503",
        "unavailable: dependency down, circuit open or timeout",
    ),
];

/// The component name of a schema file.
pub fn component_name(file: &str) -> String {
    file.trim_end_matches(".schema.json").replace('/', ".")
}

/// Every embedded schema as an OpenAPI component.
pub fn components() -> Map<String, Value> {
    let mut out = Map::new();
    for (file, text) in embedded::SCHEMAS {
        let Ok(mut schema) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let name = component_name(file);
        let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        if let Some(obj) = schema.as_object_mut() {
            obj.remove("$schema");
            obj.remove("$id");
        }
        rewrite_refs(&mut schema, &name, dir);
        out.insert(name, schema);
    }
    out
}

/// `#/…` → `#/components/schemas/<self>/…`; `other.schema.json#/…` →
/// `#/components/schemas/<other>/…` (relative to the schema's directory).
fn rewrite_refs(value: &mut Value, own: &str, dir: &str) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(reference)) = obj.get_mut("$ref") {
                *reference = rewrite_ref(reference, own, dir);
            }
            for (_, v) in obj.iter_mut() {
                rewrite_refs(v, own, dir);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, own, dir)),
        _ => {}
    }
}

fn rewrite_ref(reference: &str, own: &str, dir: &str) -> String {
    let (file, fragment) = reference.split_once('#').unwrap_or((reference, ""));
    let target = if file.is_empty() {
        own.to_owned()
    } else {
        component_name(&resolve(dir, file))
    };
    format!("#/components/schemas/{target}{fragment}")
}

/// `dir` joined with a relative `file` (`..` allowed).
fn resolve(dir: &str, file: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in file.split('/') {
        match part {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The document for `endpoints`.
pub fn document(endpoints: &[Endpoint]) -> Value {
    let components = components();
    let mut paths = BTreeMap::new();
    for endpoint in endpoints {
        paths.insert(
            endpoint.path(),
            json!({"post": operation(endpoint, &components)}),
        );
    }
    let mut schemas = components;
    schemas.insert(
        "ErrorReply".to_owned(),
        json!({"$ref": "#/components/schemas/error"}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Ymera gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST for every request/reply endpoint of the Ymera services \
                (POST /v1/<subject with dots as slashes>), generated from the endpoint registry \
                ($SRV.INFO) and the JSON Schemas in proto/schemas. Errors: DESIGN §4 body with the \
                code as the HTTP status.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    })
}

fn schema_ref(file: Option<&String>, components: &Map<String, Value>) -> Value {
    match file.map(|f| component_name(f)) {
        Some(name) if components.contains_key(&name) => {
            json!({"$ref": format!("#/components/schemas/{name}")})
        }
        _ => json!({}),
    }
}

fn operation(endpoint: &Endpoint, components: &Map<String, Value>) -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": "the reply",
            "content": {"application/json": {"schema": schema_ref(endpoint.reply_schema.as_ref(), components)}},
        }),
    );
    for (code, description) in ERROR_STATUSES {
        responses.insert(
            code.to_owned(),
            json!({
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/error"}}},
            }),
        );
    }
    let security = match &endpoint.permission {
        Some(_) => json!([{"apiKey": []}, {"bearer": []}]),
        None => json!([{}, {"apiKey": []}, {"bearer": []}]),
    };
    let permission = endpoint
        .permission
        .as_deref()
        .map(|p| format!(" Permission: `{p}`."))
        .unwrap_or_else(|| " Open (no credential needed).".to_owned());
    json!({
        "operationId": endpoint.subject,
        "tags": [endpoint.service],
        "summary": format!("NATS request {}", endpoint.subject),
        "description": format!("{}.{permission}", endpoint.description),
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": schema_ref(endpoint.request_schema.as_ref(), components)}},
        },
        "responses": responses,
        "security": security,
    })
}

/// The handler of `GET /openapi.json`.
pub async fn serve(State(state): State<AppState>) -> Response {
    let doc = document(&state.registry.endpoints());
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_component_references() {
        assert_eq!(
            rewrite_ref("#/$defs/count", "drafting.analyze.reply", "drafting"),
            "#/components/schemas/drafting.analyze.reply/$defs/count"
        );
        assert_eq!(
            rewrite_ref(
                "../envelope.schema.json",
                "communication.send.request",
                "communication"
            ),
            "#/components/schemas/envelope"
        );
        assert_eq!(
            rewrite_ref("set.reply.schema.json", "config.delete.reply", "config"),
            "#/components/schemas/config.set.reply"
        );
    }

    #[test]
    fn every_schema_is_embedded_and_parses() {
        assert!(embedded::SCHEMAS.len() > 50);
        assert_eq!(components().len(), embedded::SCHEMAS.len());
    }
}
