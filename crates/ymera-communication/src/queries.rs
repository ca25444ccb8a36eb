//! The read endpoints: `communication.status`, `history`, `conversations`
//! (validation, keyset cursors and the read-your-own-sends barrier; the
//! SQL is in [`store`]) and `communication.metrics`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ymera_core::Error;
use ymera_core::envelope::validate_agent_name;
use ymera_core::error::Violation;
use ymera_core::runtime::{Call, OrEmpty, Raw};

use crate::Communication;
use crate::auth::ReadMessages;
use crate::model::{
    CircuitState, ConversationsPage, ConversationsRequest, CopyStatus, DEFAULT_PAGE, HistoryPage,
    HistoryRequest, MAX_PAGE, MessageStatus, MetricsReply, RecipientMetrics, StatusReply,
    StatusRequest,
};
use crate::store::{self, HistoryFilter};

/// `communication.status`: every copy of one message (404 when unknown).
pub async fn status(
    comm: Arc<Communication>,
    _: Call<ReadMessages>,
    req: StatusRequest,
) -> Result<StatusReply, Error> {
    let id = req.id.to_string();
    let pool = comm.journal().pool();
    let (mut head, mut copies) = store::message(pool, &id).await?;
    if head.is_none() {
        // Read your own send: its history row may still be queued.
        comm.journal().flush().await?;
        (head, copies) = store::message(pool, &id).await?;
    }
    if head.is_none() && copies.is_empty() {
        return Err(Error::not_found(format!("no message with id {id}")));
    }
    let Some(head) = head else {
        return Ok(StatusReply {
            id: req.id,
            status: MessageStatus::Accepted,
            sender: None,
            subject: None,
            created_at: None,
            recipients: copies,
        });
    };
    // A copy nothing happened to yet has no row: it is accepted.
    for recipient in head.recipients {
        if !copies.iter().any(|c| c.recipient == recipient) {
            copies.push(CopyStatus::accepted(recipient));
        }
    }
    copies.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    Ok(StatusReply {
        id: req.id,
        status: head.status,
        sender: Some(head.sender),
        subject: Some(head.subject),
        created_at: Some(head.created_at),
        recipients: copies,
    })
}

/// `communication.history`: a page of messages, newest first.
pub async fn history(
    comm: Arc<Communication>,
    _: Call<ReadMessages>,
    OrEmpty(req): OrEmpty<HistoryRequest>,
) -> Result<HistoryPage, Error> {
    let limit = page_limit(req.limit)?;
    let mut violations = Vec::new();
    check_name(&mut violations, "/sender", req.sender.as_deref());
    check_name(&mut violations, "/recipient", req.recipient.as_deref());
    if req.conversation_id.as_ref().is_some_and(|c| c.len() > 255) {
        violations.push(Violation::new(
            "/conversation_id",
            "longer than 255 characters",
        ));
    }
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
    // Read your own sends: their history rows may still be queued.
    comm.journal().flush().await?;
    let filter = HistoryFilter {
        sender: req.sender.as_deref(),
        recipient: req.recipient.as_deref(),
        conversation_id: req.conversation_id.as_deref(),
        since: req.since,
        until: req.until,
    };
    let mut messages = store::history(
        comm.journal().pool(),
        &filter,
        cursor.as_ref(),
        i64::from(limit) + 1,
    )
    .await?;
    let more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let next_cursor = if more {
        messages.last().map(|m| encode_cursor(m.created_at, &m.id))
    } else {
        None
    };
    Ok(HistoryPage {
        messages,
        next_cursor,
    })
}

/// `communication.conversations`: a page of conversations, most recently
/// active first.
pub async fn conversations(
    comm: Arc<Communication>,
    _: Call<ReadMessages>,
    OrEmpty(req): OrEmpty<ConversationsRequest>,
) -> Result<ConversationsPage, Error> {
    let limit = page_limit(req.limit)?;
    let mut violations = Vec::new();
    check_name(&mut violations, "/participant", req.participant.as_deref());
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
    // Read your own sends: their history rows may still be queued.
    comm.journal().flush().await?;
    let mut conversations = store::conversations(
        comm.journal().pool(),
        req.participant.as_deref(),
        cursor.as_ref(),
        i64::from(limit) + 1,
    )
    .await?;
    let more = conversations.len() > limit as usize;
    conversations.truncate(limit as usize);
    let next_cursor = if more {
        conversations
            .last()
            .map(|c| encode_cursor(c.last_activity, &c.conversation_id))
    } else {
        None
    };
    Ok(ConversationsPage {
        conversations,
        next_cursor,
    })
}

/// `communication.metrics`: this instance's counters and latency, live
/// backlogs and circuits (the body is not read).
pub async fn metrics(
    comm: Arc<Communication>,
    _: Call<ReadMessages>,
    _: Raw,
) -> Result<MetricsReply, Error> {
    let breakers: HashMap<String, CircuitState> = comm
        .breakers()
        .states()
        .into_iter()
        .map(|(k, s)| (k, s.into()))
        .collect();
    let mut recipients: Vec<RecipientMetrics> = crate::delivery::poll_backlogs(&comm)
        .await
        .into_iter()
        .map(|(recipient, backlog)| RecipientMetrics {
            breaker: breakers
                .get(&recipient)
                .copied()
                .unwrap_or(CircuitState::Closed),
            recipient,
            backlog,
        })
        .collect();
    recipients.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    Ok(MetricsReply {
        counters: comm.stats().counters(),
        delivery_latency: comm.stats().latency(),
        backlog_capacity: comm.settings().backlog_limit,
        recipients,
    })
}

/// The page size of a request: `limit` within 1..=[`MAX_PAGE`] (422
/// otherwise), [`DEFAULT_PAGE`] when absent.
pub fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Error::validation(vec![Violation::new(
            "/limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )])),
    }
}

/// Notes a violation at `path` when `name` is given and not an agent name.
pub fn check_name(violations: &mut Vec<Violation>, path: &str, name: Option<&str>) {
    if let Some(name) = name
        && let Err(msg) = validate_agent_name(name)
    {
        violations.push(Violation::new(path, msg));
    }
}

/// Cursor: `<created_at in µs since the epoch>:<id>`.
fn encode_cursor(at: DateTime<Utc>, key: &str) -> String {
    format!("{}:{key}", at.timestamp_micros())
}

fn decode_cursor(cursor: &str) -> Result<store::After, Error> {
    let bad = || {
        Error::validation(vec![Violation::new(
            "/cursor",
            "not a cursor from a previous page",
        )])
    };
    let (micros, key) = cursor.split_once(':').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    if key.is_empty() || key.len() > 255 {
        return Err(bad());
    }
    Ok((at, key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = encode_cursor(at, "abc:def");
        assert_eq!(decode_cursor(&cursor).unwrap(), (at, "abc:def".to_owned()));
        for bad in [
            "",
            "x",
            "12",
            "12:",
            "abc:def",
            &format!("1:{}", "k".repeat(300)),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_limits_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1000)).unwrap(), 1000);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(1001)).is_err());
    }
}
