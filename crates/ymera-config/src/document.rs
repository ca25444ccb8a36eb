//! Pure operations on configuration documents: layering (RFC 7396),
//! JSON Pointer edits, diffs (RFC 6902), schema validation, size limits and
//! template rendering.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use ymera_core::Error;
use ymera_core::error::Violation;

/// The effective document: `base` with `layer` merged over it (RFC 7396).
pub fn effective(base: Option<&Value>, layer: Option<&Value>) -> Option<Value> {
    match (base, layer) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(l)) => Some(strip_nulls(l)),
        (Some(b), Some(l)) => {
            let mut doc = b.clone();
            json_patch::merge(&mut doc, l);
            Some(doc)
        }
    }
}

/// A merge patch applied to nothing: nulls in objects mean "absent".
fn strip_nulls(value: &Value) -> Value {
    let mut doc = Value::Null;
    json_patch::merge(&mut doc, value);
    doc
}

/// The JSON Patch turning `from` into `to` (a missing document is `null`).
pub fn diff(from: Option<&Value>, to: Option<&Value>) -> Value {
    let null = Value::Null;
    let patch = json_patch::diff(from.unwrap_or(&null), to.unwrap_or(&null));
    serde_json::to_value(patch).unwrap_or(Value::Array(Vec::new()))
}

/// The value at `pointer` (`""` is the whole document).
pub fn get_pointer<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Value, Error> {
    check_pointer(pointer)?;
    doc.pointer(pointer)
        .ok_or_else(|| Error::not_found(format!("no value at {pointer}")))
}

fn check_pointer(pointer: &str) -> Result<(), Error> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(())
    } else {
        Err(Error::invalid_request(format!(
            "{pointer:?} is not a JSON Pointer (RFC 6901): it must be empty or start with '/'"
        )))
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Sets `value` at `pointer` in `doc`, creating missing parent objects.
/// In arrays, a token is an index or `-` (append).
pub fn set_pointer(doc: &mut Value, pointer: &str, value: Value) -> Result<(), Error> {
    check_pointer(pointer)?;
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let tokens: Vec<String> = pointer[1..].split('/').map(unescape).collect();
    let mut current = doc;
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        if current.is_null() {
            *current = Value::Object(Map::new());
        }
        current = match current {
            Value::Object(map) => {
                if last {
                    map.insert(token.clone(), value);
                    return Ok(());
                }
                map.entry(token.clone()).or_insert(Value::Null)
            }
            Value::Array(items) => {
                let index = if token == "-" {
                    items.len()
                } else {
                    token.parse::<usize>().map_err(|_| {
                        Error::invalid_request(format!(
                            "{token:?} in {pointer} is not an array index"
                        ))
                    })?
                };
                if index > items.len() {
                    return Err(Error::invalid_request(format!(
                        "index {index} in {pointer} is past the end of the array"
                    )));
                }
                if last {
                    if index == items.len() {
                        items.push(value);
                    } else {
                        items[index] = value;
                    }
                    return Ok(());
                }
                if index == items.len() {
                    items.push(Value::Null);
                }
                &mut items[index]
            }
            _ => {
                return Err(Error::invalid_request(format!(
                    "cannot set {pointer}: a parent is neither an object nor an array"
                )));
            }
        };
    }
    Ok(())
}

/// Removes the value at `pointer` (404 when there is none).
pub fn remove_pointer(doc: &mut Value, pointer: &str) -> Result<(), Error> {
    check_pointer(pointer)?;
    let Some(split) = pointer.rfind('/') else {
        return Err(Error::invalid_request(
            "an empty pointer names the whole layer; delete without a pointer instead",
        ));
    };
    let (parent, last) = (&pointer[..split], unescape(&pointer[split + 1..]));
    let missing = || Error::not_found(format!("no value at {pointer}"));
    match doc.pointer_mut(parent).ok_or_else(missing)? {
        Value::Object(map) => map.remove(&last).map(|_| ()).ok_or_else(missing),
        Value::Array(items) => {
            let index = last.parse::<usize>().map_err(|_| missing())?;
            if index < items.len() {
                items.remove(index);
                Ok(())
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// Compiles a JSON Schema (draft 2020-12); a bad schema is 422 at `/schema`.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, Error> {
    jsonschema::draft202012::new(schema).map_err(|e| {
        Error::validation(vec![Violation::new(
            format!("/schema{}", e.instance_path()),
            format!("not a valid JSON Schema (draft 2020-12): {e}"),
        )])
    })
}

/// Every failing path of `doc` against `validator`; `context` (e.g. "the
/// effective production config") is appended to each message when given.
pub fn violations(
    validator: &jsonschema::Validator,
    doc: &Value,
    context: Option<&str>,
) -> Vec<Violation> {
    validator
        .iter_errors(doc)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_owned()
            } else {
                path
            };
            let message = match context {
                Some(c) => format!("{e} (in {c})"),
                None => e.to_string(),
            };
            Violation::new(path, message)
        })
        .collect()
}

/// A violation when `doc` serializes to more than `limit` bytes.
pub fn size_violation(doc: &Value, limit: usize, context: &str) -> Option<Violation> {
    let size = serde_json::to_vec(doc)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    (size > limit).then(|| {
        Violation::new(
            "/",
            format!("{context} is {size} bytes, over the limit of {limit} bytes"),
        )
    })
}

/// The `${name}` placeholders of a template, sorted.
pub fn template_variables(template: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    visit_strings(template, &mut |s| {
        for part in placeholders(s) {
            names.insert(part.to_owned());
        }
    });
    names
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            f(k);
            visit_strings(v, f);
        }),
        _ => {}
    }
}

/// Names inside `${…}` in `s`.
fn placeholders(s: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                names.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Renders a template: a string that is exactly `${name}` becomes the
/// variable's JSON value (any type); placeholders inside longer strings (and
/// object keys) are replaced by the value's text. Every missing variable is
/// reported as a violation at the path where it is used.
pub fn render_template(template: &Value, vars: &Map<String, Value>) -> Result<Value, Error> {
    let mut missing = Vec::new();
    let rendered = render(template, vars, "", &mut missing);
    if missing.is_empty() {
        Ok(rendered)
    } else {
        Err(Error::validation(missing))
    }
}

fn render(
    value: &Value,
    vars: &Map<String, Value>,
    path: &str,
    missing: &mut Vec<Violation>,
) -> Value {
    match value {
        Value::String(s) => render_string(s, vars, path, missing),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render(v, vars, &format!("{path}/{i}"), missing))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match render_string(k, vars, path, missing) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let child = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                    (key, render(v, vars, &child, missing))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_string(
    s: &str,
    vars: &Map<String, Value>,
    path: &str,
    missing: &mut Vec<Violation>,
) -> Value {
    let names = placeholders(s);
    if names.is_empty() {
        return Value::String(s.to_owned());
    }
    let path = if path.is_empty() { "/" } else { path };
    if let [only] = names.as_slice()
        && s.len() == only.len() + 3
    {
        return match vars.get(*only) {
            Some(v) => v.clone(),
            None => {
                missing.push(Violation::new(
                    path,
                    format!("template variable ${{{only}}} has no value"),
                ));
                Value::Null
            }
        };
    }
    let mut out = s.to_owned();
    for name in names {
        match vars.get(name) {
            Some(Value::String(text)) => out = out.replace(&format!("${{{name}}}"), text),
            Some(other) => out = out.replace(&format!("${{{name}}}"), &other.to_string()),
            None => missing.push(Violation::new(
                path,
                format!("template variable ${{{name}}} has no value"),
            )),
        }
    }
    Value::String(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn layers_merge_per_rfc_7396() {
        let base = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        let layer = json!({"b": {"c": null, "x": 9}, "e": [3]});
        assert_eq!(
            effective(Some(&base), Some(&layer)).unwrap(),
            json!({"a": 1, "b": {"d": 3, "x": 9}, "e": [3]})
        );
        assert_eq!(
            effective(None, Some(&json!({"a": null, "b": 1}))).unwrap(),
            json!({"b": 1})
        );
        assert!(effective(None, None).is_none());
    }

    #[test]
    fn pointers_set_and_remove() {
        let mut doc = json!({"a": {"b": [1, 2]}});
        set_pointer(&mut doc, "/a/c/d", json!(true)).unwrap();
        set_pointer(&mut doc, "/a/b/-", json!(3)).unwrap();
        set_pointer(&mut doc, "/a/b/0", json!(0)).unwrap();
        set_pointer(&mut doc, "/x~1y", json!("slash")).unwrap();
        assert_eq!(
            doc,
            json!({"a": {"b": [0, 2, 3], "c": {"d": true}}, "x/y": "slash"})
        );
        remove_pointer(&mut doc, "/a/b/1").unwrap();
        remove_pointer(&mut doc, "/x~1y").unwrap();
        assert_eq!(doc, json!({"a": {"b": [0, 3], "c": {"d": true}}}));
        assert_eq!(remove_pointer(&mut doc, "/nope").unwrap_err().code(), 404);
        assert_eq!(
            set_pointer(&mut doc, "nope", json!(1)).unwrap_err().code(),
            400
        );
        assert_eq!(
            set_pointer(&mut doc, "/a/b/9", json!(1))
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn schema_violations_list_every_path() {
        let v = compile_schema(&json!({
            "type": "object",
            "properties": {"port": {"type": "integer"}, "name": {"type": "string"}},
            "required": ["port"]
        }))
        .unwrap();
        let errs = violations(&v, &json!({"port": "x", "name": 3}), None);
        let mut paths: Vec<_> = errs.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["/name", "/port"]);
        assert!(violations(&v, &json!({"port": 1}), None).is_empty());
        assert_eq!(compile_schema(&json!({"type": 7})).unwrap_err().code(), 422);
    }

    #[test]
    fn templates_render_typed_and_embedded_values() {
        let t = json!({"port": "${port}", "url": "http://${host}:${port}/", "list": ["${host}"]});
        assert_eq!(
            template_variables(&t).into_iter().collect::<Vec<_>>(),
            ["host", "port"]
        );
        let vars = json!({"port": 8080, "host": "db"});
        let out = render_template(&t, vars.as_object().unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"port": 8080, "url": "http://db:8080/", "list": ["db"]})
        );
        let err = render_template(&t, &Map::new()).unwrap_err();
        assert_eq!(err.code(), 422);
    }

    #[test]
    fn diff_is_a_json_patch() {
        let p = diff(Some(&json!({"a": 1})), Some(&json!({"a": 2, "b": 3})));
        let ops: Vec<_> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["op"].clone())
            .collect();
        assert_eq!(ops.len(), 2);
        let mut doc = json!({"a": 1});
        let patch: json_patch::Patch = serde_json::from_value(p).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, json!({"a": 2, "b": 3}));
    }
}
