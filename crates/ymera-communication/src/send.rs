//! `communication.send`: validate, rate-limit, store one copy per recipient
//! in JetStream (or, while JetStream cannot acknowledge it, in the PostgreSQL
//! outbox: [`crate::outbox`]), record, answer.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use tokio::time::Instant;
use ymera_core::Error;
use ymera_core::envelope::Envelope;
use ymera_core::error::ErrorKind;
use ymera_core::runtime::Call;

use crate::Communication;
use crate::agents;
use crate::auth::{self, SendMessages};
use crate::model::{MessageStatus, Resolved, SendReply};
use crate::outbox::{self, CopyResult};

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
    // One bound for everything JetStream must answer (consumers, acknowledgements):
    // past it the copies go to the outbox rather than keep the sender waiting.
    let deadline = Instant::now() + comm.settings.publish_timeout;
    let consumers = ensure_workers(comm, &envelope.recipients, deadline).await?;
    let accepted_at = Utc::now();
    let body = Bytes::from(serde_json::to_vec(&envelope).map_err(Error::internal)?);
    let id = envelope.id.to_string();
    let results = match consumers {
        Ok(()) => {
            let copies = envelope
                .recipients
                .iter()
                .map(|r| (r.clone(), outbox::copy(&id, r, body.clone(), accepted_at)))
                .collect();
            outbox::publish_all(&comm.js, copies, deadline).await
        }
        Err(reason) => envelope
            .recipients
            .iter()
            .map(|_| CopyResult::Pending(reason.clone()))
            .collect(),
    };
    let mut duplicates = 0;
    let mut pending = Vec::new();
    let mut reason = String::new();
    for (recipient, result) in envelope.recipients.iter().zip(results) {
        match result {
            CopyResult::Stored { duplicate } => duplicates += usize::from(duplicate),
            CopyResult::Pending(why) => {
                pending.push(recipient.clone());
                reason = why;
            }
            CopyResult::Refused(err) => return Err(err),
        }
    }
    if !pending.is_empty() {
        let waiting = comm
            .outbox
            .store(
                &id,
                &body,
                &pending,
                accepted_at,
                &reason,
                comm.settings.outbox_limit,
            )
            .await?;
        // A resend of an id whose copies all wait in the outbox already: the same as a
        // resend JetStream dropped as a duplicate.
        if waiting {
            duplicates += pending.len();
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

/// Starts the delivery consumer of every recipient this instance has none for, by
/// `deadline`. `Ok(Err(reason))` when JetStream did not answer in time (no meta or stream
/// leader now): the copies then wait in the outbox, whose relay creates the consumers.
async fn ensure_workers(
    comm: &Arc<Communication>,
    recipients: &[String],
    deadline: Instant,
) -> Result<Result<(), String>, Error> {
    for recipient in recipients {
        match tokio::time::timeout_at(deadline, crate::delivery::ensure_worker(comm, recipient))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(err))
                if err.details.get("reason").and_then(|r| r.as_str())
                    == Some("too_many_recipients") =>
            {
                return Err(err);
            }
            Ok(Err(err)) => return Ok(Err(err.message)),
            Err(_) => {
                return Ok(Err(format!(
                    "no answer creating the delivery consumer of {recipient}"
                )));
            }
        }
    }
    Ok(Ok(()))
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
            return Err(backlog_full(recipient, Some(limit)));
        }
    }
    Ok(())
}

/// 503 `backlog_full` for `recipient`: seen by this instance's backlog poll (`limit`
/// known), or JetStream's own refusal of a copy over `max_msgs_per_subject`.
pub(crate) fn backlog_full(recipient: &str, limit: Option<u64>) -> Error {
    let message = match limit {
        Some(limit) => format!(
            "recipient {recipient} has {limit} undelivered messages, the most allowed; retry later"
        ),
        None => {
            format!("recipient {recipient} has the most undelivered messages allowed; retry later")
        }
    };
    let err = Error::new(ErrorKind::Unavailable, message)
        .with_detail("reason", "backlog_full")
        .with_detail("recipient", recipient);
    match limit {
        Some(limit) => err.with_detail("limit", limit),
        None => err,
    }
}
