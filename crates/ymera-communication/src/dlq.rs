//! The DLQ tools: `communication.dlq.list` reads dead letters from the
//! `YMERA_DLQ` stream, `communication.dlq.replay` puts them back into
//! `YMERA_MESSAGES` with their attempts reset.

use std::sync::Arc;

use async_nats::jetstream::message::{PublishMessage as Publish, StreamMessage};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use chrono::Utc;
use serde_json::Value;
use ymera_core::Error;
use ymera_core::envelope::{Envelope, validate_agent_name};
use ymera_core::error::Violation;
use ymera_core::runtime::{Call, OrEmpty};

use crate::Communication;
use crate::auth::{ReadMessages, SendMessages};
use crate::model::{
    DeadLetter, DlqListRequest, DlqPage, DlqReplayReply, DlqReplayRequest, MAX_PAGE, ReplayedCopy,
};
use crate::queries::{check_name, page_limit};
use crate::store::db_error;
use crate::streams::{self, ATTEMPTS_HEADER, DLQ_STREAM, LAST_ERROR_HEADER, RECIPIENT_HEADER};

/// `communication.dlq.list`: a page of dead letters, oldest first.
pub async fn list(
    comm: Arc<Communication>,
    _: Call<ReadMessages>,
    OrEmpty(req): OrEmpty<DlqListRequest>,
) -> Result<DlqPage, Error> {
    let page = PageRequest::check(req)?;
    let stream = dlq_stream(&comm).await?;
    page.read(&stream).await
}

/// `communication.dlq.replay`: the given dead letters (or a recipient's)
/// go back to `YMERA_MESSAGES` with their attempts reset to 0 and leave
/// the DLQ (a replay re-sends, so it needs the send permission).
pub async fn replay(
    comm: Arc<Communication>,
    _: Call<SendMessages>,
    req: DlqReplayRequest,
) -> Result<DlqReplayReply, Error> {
    if req.sequences.len() > MAX_PAGE as usize {
        return Err(Error::validation(vec![Violation::new(
            "/sequences",
            "at most 1000",
        )]));
    }
    if req.sequences.is_empty() && req.recipient.is_none() {
        return Err(Error::validation(vec![Violation::new(
            "/sequences",
            "give sequences or a recipient",
        )]));
    }
    let stream = dlq_stream(&comm).await?;
    let mut letters = Vec::new();
    if req.sequences.is_empty() {
        let request = DlqListRequest {
            recipient: req.recipient.clone(),
            from_sequence: None,
            limit: req.limit,
        };
        letters = PageRequest::check(request)?
            .read(&stream)
            .await?
            .dead_letters;
    } else {
        for seq in &req.sequences {
            match stream.get_raw_message(*seq).await {
                Ok(message) => letters.push(dead_letter_of(&message)),
                Err(_) => {
                    return Err(Error::not_found(format!(
                        "no dead letter with sequence {seq}"
                    )));
                }
            }
        }
    }
    let mut messages = Vec::new();
    for letter in letters {
        let Ok(envelope) = serde_json::from_value::<Envelope>(letter.envelope.clone()) else {
            continue;
        };
        if validate_agent_name(&letter.recipient).is_err() {
            continue;
        }
        crate::delivery::ensure_worker(&comm, &letter.recipient).await?;
        crate::journal::reset_for_replay(
            comm.journal().pool(),
            &envelope.id.to_string(),
            &letter.recipient,
        )
        .await
        .map_err(db_error)?;
        let body = serde_json::to_vec(&envelope).map_err(Error::internal)?;
        let publish = Publish::build()
            .payload(body.into())
            .message_id(format!(
                "{}.{}.replay.{}",
                envelope.id, letter.recipient, letter.sequence
            ))
            .header(
                streams::ACCEPTED_AT_HEADER,
                Utc::now().to_rfc3339().as_str(),
            );
        let ack = comm
            .js
            .send_publish(streams::message_subject(&letter.recipient), publish)
            .await
            .map_err(|_| Error::dependency_down("jetstream"))?;
        ack.await.map_err(|_| Error::dependency_down("jetstream"))?;
        let _ = stream.delete_message(letter.sequence).await;
        messages.push(ReplayedCopy {
            id: envelope.id,
            recipient: letter.recipient,
            sequence: letter.sequence,
        });
    }
    Ok(DlqReplayReply {
        replayed: u32::try_from(messages.len()).unwrap_or(u32::MAX),
        messages,
    })
}

async fn dlq_stream(comm: &Communication) -> Result<Stream<()>, Error> {
    comm.js
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))
}

/// A checked `dlq.list` request.
struct PageRequest {
    subject: String,
    from_sequence: u64,
    limit: usize,
}

impl PageRequest {
    /// 422 for a bad limit or recipient name.
    fn check(req: DlqListRequest) -> Result<Self, Error> {
        let limit = page_limit(req.limit)?;
        let mut violations = Vec::new();
        check_name(&mut violations, "/recipient", req.recipient.as_deref());
        if !violations.is_empty() {
            return Err(Error::validation(violations));
        }
        Ok(PageRequest {
            subject: req
                .recipient
                .as_deref()
                .map(streams::dlq_subject)
                .unwrap_or_else(|| "ymera.dlq.>".to_owned()),
            from_sequence: req.from_sequence.unwrap_or(1).max(1),
            limit: limit as usize,
        })
    }

    /// The page, read from `stream`.
    async fn read(self, stream: &Stream<()>) -> Result<DlqPage, Error> {
        let mut next = self.from_sequence;
        let mut dead_letters = Vec::new();
        let mut more = false;
        loop {
            let message = match stream
                .direct_get_next_for_subject(self.subject.as_str(), Some(next))
                .await
            {
                Ok(message) => message,
                Err(err) if matches!(err.kind(), DirectGetErrorKind::NotFound) => break,
                Err(_) => return Err(Error::dependency_down("jetstream")),
            };
            if dead_letters.len() >= self.limit {
                more = true;
                next = message.sequence;
                break;
            }
            next = message.sequence + 1;
            dead_letters.push(dead_letter_of(&message));
        }
        Ok(DlqPage {
            dead_letters,
            next_sequence: more.then_some(next),
        })
    }
}

fn dead_letter_of(message: &StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    DeadLetter {
        sequence: message.sequence,
        recipient: header(RECIPIENT_HEADER).unwrap_or_default(),
        attempts: header(ATTEMPTS_HEADER)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        last_error: header(LAST_ERROR_HEADER),
        envelope: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
    }
}
