//! Size and shape limits shared by every service, and a JSON parser that
//! enforces them before any allocation-heavy work.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Default request size limit (`MAX_MESSAGE_SIZE`): 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// Maximum nesting of arrays and objects in any JSON request.
pub const MAX_JSON_DEPTH: usize = 64;
/// Maximum number of requests a service handles at once; more wait in NATS.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1024;
/// Maximum length of an `Authorization` or `X-API-Key` header, checked
/// before any cryptography runs.
pub const MAX_CREDENTIAL_HEADER: usize = 8 * 1024;

/// Parses a JSON request body into `T` after checking it is within `max_size`
/// bytes, valid UTF-8 with no NUL byte, and nested no deeper than
/// [`MAX_JSON_DEPTH`]. Failures are 413 or 400 with a clear message.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], max_size: usize) -> Result<T> {
    check_json_shape(body, max_size)?;
    serde_json::from_slice(body).map_err(|e| Error::invalid_request(format!("malformed JSON: {e}")))
}

/// The checks of [`parse_json`] without deserializing.
pub fn check_json_shape(body: &[u8], max_size: usize) -> Result<()> {
    if body.len() > max_size {
        return Err(Error::payload_too_large("request", body.len(), max_size));
    }
    if body.is_empty() {
        return Err(Error::invalid_request("empty request body, expected JSON"));
    }
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Error::invalid_request(format!(
            "request is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        )));
    }
    if let Some(pos) = body.iter().position(|&b| b == 0) {
        return Err(Error::invalid_request(format!(
            "request contains a NUL byte at offset {pos}"
        )));
    }
    let depth = json_depth(body);
    if depth > MAX_JSON_DEPTH {
        return Err(Error::invalid_request(format!(
            "JSON nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
        ))
        .with_detail("limit", MAX_JSON_DEPTH));
    }
    Ok(())
}

/// Maximum nesting depth of arrays/objects in a JSON text (strings skipped).
pub fn json_depth(body: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::Value;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":"[[[[{{{"}"#), 1);
        assert_eq!(json_depth(br#"[[[]]]"#), 3);
        assert_eq!(json_depth(br#""\"[""#), 0);
    }

    #[test]
    fn rejects_too_deep_too_large_nul_and_bad_utf8() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let err = parse_json::<Value>(deep.as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidRequest);
        let err = parse_json::<Value>(b"[1,2,3]", 3).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PayloadTooLarge);
        let err = parse_json::<Value>(b"{\"a\":\"\0\"}", 100).unwrap_err();
        assert!(err.message.contains("NUL"));
        let err = parse_json::<Value>(&[b'"', 0xff, b'"'], 100).unwrap_err();
        assert!(err.message.contains("UTF-8"));
        assert!(parse_json::<Value>(b"{\"a\":[1]}", 100).is_ok());
    }
}
