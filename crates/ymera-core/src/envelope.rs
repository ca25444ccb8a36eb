//! The agent message envelope (DESIGN §4; JSON Schema in `proto/schemas/envelope.schema.json`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result, Violation};

/// Maximum number of recipients of one envelope.
pub const MAX_RECIPIENTS: usize = 100;
/// Maximum length of the subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 500;
/// Maximum length of an agent name.
pub const MAX_AGENT_NAME: usize = 64;
/// Maximum length of a conversation id.
pub const MAX_CONVERSATION_ID: usize = 255;
/// Maximum number of metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Maximum length of a metadata key.
pub const MAX_METADATA_KEY: usize = 128;
/// Maximum length of a metadata value.
pub const MAX_METADATA_VALUE: usize = 4096;

/// The kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Asks the recipient for something; a `response` may follow.
    Request,
    /// Answers a request (`correlation_id` names it).
    Response,
    /// Tells that something happened.
    Event,
    /// Tells the recipient to do something.
    Command,
}

/// Delivery priority.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background traffic.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal traffic.
    High,
    /// Ahead of everything.
    Critical,
}

/// A message between agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// UUID v7; assigned on send when absent. The dedupe key.
    #[serde(default = "Uuid::now_v7")]
    pub id: Uuid,
    /// The kind of message.
    #[serde(rename = "type")]
    pub message_type: MessageType,
    /// The sending agent.
    pub sender: String,
    /// The receiving agents (1..=100).
    pub recipients: Vec<String>,
    /// A short subject line (≤ 500 characters).
    pub subject: String,
    /// Any JSON value.
    #[serde(default)]
    pub payload: Value,
    /// Groups messages of one conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The id of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Delivery priority.
    #[serde(default)]
    pub priority: Priority,
    /// When the sender created it (assigned on send when absent).
    #[serde(default = "Utc::now")]
    pub created_at: DateTime<Utc>,
    /// After this instant the message is not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Free-form string metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Envelope {
    /// A new envelope with a fresh id, `created_at` now and normal priority.
    pub fn new(
        message_type: MessageType,
        sender: impl Into<String>,
        recipients: Vec<String>,
        subject: impl Into<String>,
        payload: Value,
    ) -> Self {
        Envelope {
            id: Uuid::now_v7(),
            message_type,
            sender: sender.into(),
            recipients,
            subject: subject.into(),
            payload,
            conversation_id: None,
            correlation_id: None,
            priority: Priority::Normal,
            created_at: Utc::now(),
            expires_at: None,
            metadata: BTreeMap::new(),
        }
    }

    /// A `response` to this envelope from `responder`, back to its sender.
    pub fn reply(&self, responder: impl Into<String>, payload: Value) -> Self {
        let mut reply = Envelope::new(
            MessageType::Response,
            responder,
            vec![self.sender.clone()],
            format!(
                "Re: {}",
                truncate_chars(&self.subject, MAX_SUBJECT_CHARS - 4)
            ),
            payload,
        );
        reply.correlation_id = Some(self.id);
        reply.conversation_id = self.conversation_id.clone();
        reply
    }

    /// True when `expires_at` is at or before `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Checks every rule of DESIGN §4 and reports all violations at once
    /// (422 validation_failed). Expiry is checked against `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<()> {
        let mut violations = Vec::new();
        if let Err(msg) = validate_agent_name(&self.sender) {
            violations.push(Violation::new("/sender", msg));
        }
        if self.recipients.is_empty() {
            violations.push(Violation::new(
                "/recipients",
                "at least one recipient is required",
            ));
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            violations.push(Violation::new(
                "/recipients",
                format!(
                    "{} recipients, at most {MAX_RECIPIENTS} allowed",
                    self.recipients.len()
                ),
            ));
        }
        for (i, name) in self.recipients.iter().enumerate().take(MAX_RECIPIENTS) {
            if let Err(msg) = validate_agent_name(name) {
                violations.push(Violation::new(format!("/recipients/{i}"), msg));
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.recipients.iter().find(|r| !seen.insert(r.as_str())) {
            violations.push(Violation::new(
                "/recipients",
                format!("recipient {dup:?} listed twice"),
            ));
        }
        check_text(
            &mut violations,
            "/subject",
            &self.subject,
            MAX_SUBJECT_CHARS,
        );
        if let Some(conversation) = &self.conversation_id {
            check_text(
                &mut violations,
                "/conversation_id",
                conversation,
                MAX_CONVERSATION_ID,
            );
        }
        self.validate_metadata(&mut violations);
        if let Some(expires) = self.expires_at
            && expires <= now
        {
            violations.push(Violation::new(
                "/expires_at",
                format!("message expired at {}", expires.to_rfc3339()),
            ));
        }
        if contains_nul(&self.payload) {
            violations.push(Violation::new(
                "/payload",
                "strings must not contain NUL characters",
            ));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::validation(violations))
        }
    }

    /// [`Envelope::validate_at`] with the current time.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Utc::now())
    }

    fn validate_metadata(&self, violations: &mut Vec<Violation>) {
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            violations.push(Violation::new(
                "/metadata",
                format!("at most {MAX_METADATA_ENTRIES} entries allowed"),
            ));
        }
        for (key, value) in self.metadata.iter().take(MAX_METADATA_ENTRIES) {
            let path = format!("/metadata/{}", key.replace('~', "~0").replace('/', "~1"));
            if key.is_empty() || key.chars().count() > MAX_METADATA_KEY {
                violations.push(Violation::new(
                    path.clone(),
                    format!("key must be 1..={MAX_METADATA_KEY} characters"),
                ));
            }
            check_text(violations, &path, value, MAX_METADATA_VALUE);
        }
    }
}

/// Checks an agent name against `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn validate_agent_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("agent name must not be empty".into());
    };
    if name.len() > MAX_AGENT_NAME {
        return Err(format!(
            "agent name longer than {MAX_AGENT_NAME} characters"
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "agent name {:?} must start with a lowercase letter or digit",
            truncate_chars(name, 80)
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "agent name {:?} contains {bad:?}; allowed: a-z 0-9 _ -",
            truncate_chars(name, 80)
        ));
    }
    Ok(())
}

fn check_text(violations: &mut Vec<Violation>, path: &str, text: &str, max_chars: usize) {
    if text.chars().count() > max_chars {
        violations.push(Violation::new(
            path,
            format!("longer than {max_chars} characters"),
        ));
    }
    if text.contains('\0') {
        violations.push(Violation::new(path, "must not contain NUL characters"));
    }
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((idx, _)) => &text[..idx],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn sample() -> Envelope {
        Envelope::new(
            MessageType::Request,
            "alice",
            vec!["bob".into(), "code-analysis".into()],
            "hello",
            json!({"message": "hi"}),
        )
    }

    #[test]
    fn valid_envelope_passes_and_round_trips() {
        let env = sample();
        env.validate().unwrap();
        let text = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn defaults_are_assigned() {
        let env: Envelope = serde_json::from_value(json!({
            "type": "event", "sender": "a", "recipients": ["b"], "subject": "s"
        }))
        .unwrap();
        assert_eq!(env.id.get_version_num(), 7);
        assert_eq!(env.priority, Priority::Normal);
        assert_eq!(env.payload, Value::Null);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_value::<Envelope>(json!({
            "type": "event", "sender": "a", "recipients": ["b"], "subject": "s", "evil": 1
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"));
    }

    #[test]
    fn every_violation_is_listed() {
        let mut env = sample();
        env.sender = "Alice!".into();
        env.recipients = vec!["ok".into(), "".into(), "ok".into()];
        env.subject = "x".repeat(501);
        env.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        let err = env.validate().unwrap_err();
        assert_eq!(err.kind, ErrorKind::ValidationFailed);
        let violations = err.details["violations"].as_array().unwrap();
        let paths: Vec<&str> = violations
            .iter()
            .map(|v| v["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/sender",
                "/recipients/1",
                "/recipients",
                "/subject",
                "/expires_at"
            ]
        );
    }

    #[test]
    fn recipient_count_is_bounded() {
        let mut env = sample();
        env.recipients = (0..101).map(|i| format!("a{i}")).collect();
        assert!(env.validate().is_err());
        env.recipients.truncate(100);
        env.validate().unwrap();
    }

    #[test]
    fn agent_names() {
        for ok in ["a", "0", "code-analysis", "a_b-c", &"a".repeat(64)] {
            assert!(validate_agent_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a.b", "a b", "ä", &"a".repeat(65)] {
            assert!(validate_agent_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_correlates() {
        let req = sample();
        let resp = req.reply("bob", json!({"ok": true}));
        assert_eq!(resp.correlation_id, Some(req.id));
        assert_eq!(resp.recipients, vec!["alice".to_string()]);
        assert_eq!(resp.message_type, MessageType::Response);
    }
}
