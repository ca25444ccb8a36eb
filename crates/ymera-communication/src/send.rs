//! `communication.send`: validate, rate-limit, store one copy per recipient
//! in JetStream, record, answer.

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use chrono::Utc;
use ymera_core::Error;
use ymera_core::envelope::Envelope;
use ymera_core::error::ErrorKind;
use ymera_core::runtime::Call;

use crate::Communication;
use crate::agents;
use crate::auth::{self, SendMessages};
use crate::model::{MessageStatus, Resolved, SendReply};
use crate::streams::{ACCEPTED_AT_HEADER, message_subject};

/// `communication.send`: the envelope's sender is checked against the
/// caller ([`auth::check_sender`]), then [`send`].
pub async fn endpoint(
    comm: Arc<Communication>,
    call: Call<SendMessages>,
    envelope: Envelope,
) -> Result<SendReply, Error> {
    send(&comm, auth::check_sender(&call, envelope)?).await
}

/// Handles one send of a parsed envelope.
pub async fn send(comm: &Arc<Communication>, mut envelope: Envelope) -> Result<SendReply, Error> {
    let resolved = resolve_skills(comm, &mut envelope)?;
    envelope.validate()?;
    agents::record_resolved(&mut envelope, &resolved)?;
    let decision = comm
        .limiter
        .check(&envelope.sender, comm.live().rate(), 1)
        .await;
    if let Err(err) = decision.into_result() {
        comm.stats.rate_limited();
        return Err(err);
    }
    check_backlog(comm, &envelope)?;
    for recipient in &envelope.recipients {
        crate::delivery::ensure_worker(comm, recipient).await?;
    }
    let accepted_at = Utc::now();
    let body = Bytes::from(serde_json::to_vec(&envelope).map_err(Error::internal)?);
    let mut acks = Vec::with_capacity(envelope.recipients.len());
    for recipient in &envelope.recipients {
        let publish = Publish::build()
            .payload(body.clone())
            .message_id(format!("{}.{recipient}", envelope.id))
            .header(ACCEPTED_AT_HEADER, accepted_at.to_rfc3339().as_str());
        let ack = comm
            .js
            .send_publish(message_subject(recipient), publish)
            .await
            .map_err(|e| store_error(recipient, &e.to_string()))?;
        acks.push((recipient, ack));
    }
    let mut duplicates = 0;
    for (recipient, ack) in acks {
        let ack = ack
            .await
            .map_err(|e| store_error(recipient, &e.to_string()))?;
        if ack.duplicate {
            duplicates += 1;
        }
    }
    let duplicate = duplicates == envelope.recipients.len();
    let envelope = Arc::new(envelope);
    comm.journal.record(envelope.clone()).await?;
    if duplicate {
        comm.stats.deduplicated();
    } else {
        comm.stats.sent();
    }
    Ok(SendReply {
        id: envelope.id,
        status: MessageStatus::Accepted,
        recipients: envelope.recipients.clone(),
        duplicate,
        resolved,
    })
}

/// Replaces each `skill:<id>` recipient by the live agent chosen for it
/// ([`agents::resolve`]); a skill resolving to an agent already listed is dropped (one
/// copy per agent).
fn resolve_skills(comm: &Communication, envelope: &mut Envelope) -> Result<Vec<Resolved>, Error> {
    if !envelope
        .recipients
        .iter()
        .any(|r| r.starts_with(agents::SKILL_PREFIX))
    {
        return Ok(Vec::new());
    }
    let pairs = agents::resolve(comm, envelope.id, &mut envelope.recipients)?;
    let mut seen = std::collections::HashSet::new();
    envelope.recipients.retain(|r| seen.insert(r.clone()));
    Ok(pairs
        .into_iter()
        .map(|(recipient, agent)| Resolved { recipient, agent })
        .collect())
}

/// 503 before anything is stored when a recipient's backlog is known full.
fn check_backlog(comm: &Communication, envelope: &Envelope) -> Result<(), Error> {
    let limit = u64::from(comm.settings.backlog_limit);
    for recipient in &envelope.recipients {
        let backlog = comm.known_backlog(recipient);
        if backlog >= limit {
            return Err(backlog_full(recipient, limit));
        }
    }
    Ok(())
}

fn backlog_full(recipient: &str, limit: u64) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "recipient {recipient} has {limit} undelivered messages, the most allowed; retry later"
        ),
    )
    .with_detail("reason", "backlog_full")
    .with_detail("recipient", recipient)
    .with_detail("limit", limit)
}

fn store_error(recipient: &str, message: &str) -> Error {
    if message.contains("maximum messages per subject") {
        return Error::new(
            ErrorKind::Unavailable,
            format!("recipient {recipient} has the most undelivered messages allowed; retry later"),
        )
        .with_detail("reason", "backlog_full")
        .with_detail("recipient", recipient);
    }
    tracing::warn!(error = %message, recipient, "JetStream did not store a copy");
    Error::dependency_down("jetstream")
}
