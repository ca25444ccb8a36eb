//! The permission map: which NATS subjects a Ymera credential's permissions open to the
//! connection it logs in (README, "NATS login with Ymera credentials").
//!
//! Every credential whose owner is a valid agent name `<name>` may
//! - subscribe to its own inbox `agent.<name>.inbox` and answer what arrives there (one
//!   reply per request: `resp`), and to `_INBOX.<name>.>`, the replies to its own requests
//!   (the client must use the inbox prefix `_INBOX.<name>`, so agents never see each other's
//!   replies);
//! - publish `$SRV.PING`/`$SRV.INFO` (discovery), `*.health`, `security.tokens.issue`,
//!   `security.tokens.verify` and `security.jwks`.
//!
//! Each permission adds the subjects of [`MAP`]. The services still check every request's
//! credential themselves: the map keeps a connection from even reaching an endpoint its
//! key cannot use, and from listening where it has no business.

use serde_json::{Value, json};

/// Subjects one permission adds: (permission, publish, subscribe).
pub type Grant = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// Subjects every logged-in credential may publish.
pub const BASE_PUBLISH: &[&str] = &[
    "$SRV.PING",
    "$SRV.PING.>",
    "$SRV.INFO",
    "$SRV.INFO.>",
    "*.health",
    "security.tokens.issue",
    "security.tokens.verify",
    "security.jwks",
];

/// What each platform permission opens.
pub const MAP: &[Grant] = &[
    (
        "comm:send",
        &["communication.send", "communication.agents.>"],
        &[],
    ),
    (
        "comm:read",
        &[
            "communication.status",
            "communication.history",
            "communication.conversations",
            "communication.metrics",
            "communication.agents.list",
            "communication.agents.get",
        ],
        &["events.communication.>"],
    ),
    (
        "config:read",
        &[
            "config.get",
            "config.history",
            "config.diff",
            "config.schema.get",
            "config.export",
        ],
        &["config.changed.>"],
    ),
    (
        "config:write",
        &[
            "config.set",
            "config.delete",
            "config.rollback",
            "config.schema.set",
            "config.import",
            "config.template.set",
            "config.template.apply",
        ],
        &[],
    ),
    (
        "drafting:read",
        &[
            "drafting.get",
            "drafting.list",
            "drafting.export",
            "drafting.revisions",
            "drafting.diff",
            "drafting.analyze",
            "drafting.template.list",
        ],
        &["drafting.collab.*.updates"],
    ),
    (
        "drafting:write",
        &[
            "drafting.create",
            "drafting.update",
            "drafting.delete",
            "drafting.restore",
            "drafting.comment",
            "drafting.transition",
            "drafting.template.set",
            "drafting.collab.join",
            "drafting.collab.update",
        ],
        &[],
    ),
    (
        "analysis:run",
        &["code-analysis.analyze", "code-analysis.rules"],
        &[],
    ),
    ("security:admin", &["security.>"], &["events.security.>"]),
];

/// The `pub`, `sub` and `resp` parts of the user claims for agent `name` holding
/// `permissions` (unknown permissions open nothing). Subjects are sorted and unique.
pub fn nats_permissions(name: &str, permissions: &[String]) -> Value {
    let mut publish: Vec<String> = BASE_PUBLISH.iter().map(|s| (*s).to_owned()).collect();
    let mut subscribe = vec![format!("agent.{name}.inbox"), format!("_INBOX.{name}.>")];
    for (permission, publishes, subscribes) in MAP {
        if permissions.iter().any(|p| p == permission) {
            publish.extend(publishes.iter().map(|s| (*s).to_owned()));
            subscribe.extend(subscribes.iter().map(|s| (*s).to_owned()));
        }
    }
    for list in [&mut publish, &mut subscribe] {
        list.sort();
        list.dedup();
    }
    json!({
        "pub": {"allow": publish},
        "sub": {"allow": subscribe},
        // Answer each request delivered to the inbox once, within two minutes.
        "resp": {"max": 1, "ttl": 120_000_000_000_i64},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_open_their_subjects_only() {
        let p = nats_permissions("reviewer", &["comm:send".into(), "made:up".into()]);
        let publish: Vec<&str> = p["pub"]["allow"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(publish.contains(&"communication.send"));
        assert!(!publish.contains(&"config.get"));
        assert_eq!(
            p["sub"]["allow"],
            json!(["_INBOX.reviewer.>", "agent.reviewer.inbox"])
        );
        let all: Vec<String> = crate::state::ALL_PERMISSIONS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let admin = nats_permissions("admin", &all);
        assert!(
            admin["sub"]["allow"]
                .as_array()
                .unwrap()
                .contains(&json!("config.changed.>"))
        );
    }

    #[test]
    fn every_mapped_permission_is_a_platform_permission() {
        for (permission, _, _) in MAP {
            assert!(
                crate::state::ALL_PERMISSIONS.contains(permission),
                "{permission}"
            );
        }
    }
}
