//! `skill:<id>` recipients: resolution at send time and the choice among capable agents.

use chrono::Utc;
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::error::{ErrorKind, Violation};

use super::card::{SKILL_PREFIX, validate_skill_id};
use crate::Communication;

/// Resolves every `skill:<id>` recipient of `recipients` to one live agent with the skill
/// (least backlog first, ties by a hash of `id`); named recipients stay. A malformed skill
/// id is a 422 naming the recipient; no live agent with the skill → 422 with
/// `details.reason = "no_capable_agent"` and the live agents.
pub fn resolve(
    comm: &Communication,
    id: Uuid,
    recipients: &mut [String],
) -> Result<Vec<(String, String)>, Error> {
    let mut resolved = Vec::new();
    for (i, recipient) in recipients.iter_mut().enumerate() {
        let Some(skill) = recipient.strip_prefix(SKILL_PREFIX) else {
            continue;
        };
        validate_skill_id(skill).map_err(|msg| {
            Error::validation(vec![Violation::new(format!("/recipients/{i}"), msg)])
        })?;
        let Some(registry) = comm.agents.as_ref() else {
            return Err(Error::dependency_down("jetstream"));
        };
        let now = Utc::now();
        let capable = registry.capable(skill, now);
        if capable.is_empty() {
            let live: Vec<serde_json::Value> = registry
                .live(now)
                .into_iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.card.name,
                        "skills": e.card.skills.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let names: Vec<String> = live
                .iter()
                .take(20)
                .filter_map(|a| a["name"].as_str().map(str::to_owned))
                .collect();
            let available = if names.is_empty() {
                "no agent is live".to_owned()
            } else {
                format!("live agents: {}", names.join(", "))
            };
            return Err(Error::new(
                ErrorKind::ValidationFailed,
                format!(
                    "no capable agent found: no live agent has the skill {skill:?}; {available}"
                ),
            )
            .with_detail("reason", "no_capable_agent")
            .with_detail("skill", skill)
            .with_detail("live_agents", live));
        }
        let chosen = choose(&capable, id, |name| comm.routing_backlog(name));
        comm.count_backlog(&chosen);
        resolved.push((recipient.clone(), chosen.clone()));
        *recipient = chosen;
    }
    Ok(resolved)
}

/// Least backlog first; among the least, the one a hash of `id` picks.
pub fn choose(capable: &[String], id: Uuid, backlog: impl Fn(&str) -> u64) -> String {
    let backlogs: Vec<u64> = capable.iter().map(|n| backlog(n)).collect();
    let least = backlogs.iter().copied().min().unwrap_or(0);
    let ties: Vec<&String> = capable
        .iter()
        .zip(&backlogs)
        .filter(|(_, b)| **b == least)
        .map(|(n, _)| n)
        .collect();
    // FNV-1a over the id's bytes (UUID v7: the low bits are random).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let index = usize::try_from(hash % ties.len().max(1) as u64).unwrap_or(0);
    ties.get(index)
        .map(|n| (*n).clone())
        .unwrap_or_else(|| capable[0].clone())
}

/// The envelope metadata keys that record a `skill:` resolution: `ymera.resolved.skill:<id>`
/// → the agent chosen. Set by [`record_resolved`], so the copy each agent receives, the
/// stored message and `communication.history` (its `resolved`) all say which skill was
/// asked for; a sender may not write them itself.
pub const RESOLVED_KEY_PREFIX: &str = "ymera.resolved.";

/// Refuses sender-written [`RESOLVED_KEY_PREFIX`] keys (422 naming each), then records each
/// resolution of `resolved` in the envelope's metadata.
pub fn record_resolved(
    envelope: &mut ymera_core::envelope::Envelope,
    resolved: &[crate::model::Resolved],
) -> Result<(), Error> {
    let forged: Vec<Violation> = envelope
        .metadata
        .keys()
        .filter(|k| k.starts_with(RESOLVED_KEY_PREFIX))
        .take(10)
        .map(|k| {
            Violation::new(
                format!("/metadata/{}", k.replace('~', "~0").replace('/', "~1")),
                format!("keys starting with {RESOLVED_KEY_PREFIX:?} are set by the platform"),
            )
        })
        .collect();
    if !forged.is_empty() {
        return Err(Error::validation(forged));
    }
    for r in resolved {
        envelope.metadata.insert(
            format!("{RESOLVED_KEY_PREFIX}{}", r.recipient),
            r.agent.clone(),
        );
    }
    Ok(())
}

/// The resolutions recorded in a stored message's metadata ([`record_resolved`]), by
/// requested recipient.
pub fn resolved_from(metadata: Option<&serde_json::Value>) -> Vec<crate::model::Resolved> {
    let Some(map) = metadata.and_then(|m| m.as_object()) else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(key, agent)| {
            let recipient = key.strip_prefix(RESOLVED_KEY_PREFIX)?;
            Some(crate::model::Resolved {
                recipient: recipient.to_owned(),
                agent: agent.as_str()?.to_owned(),
            })
        })
        .collect()
}
