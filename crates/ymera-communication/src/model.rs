//! The wire types of the endpoints (requests and replies, as in
//! `proto/schemas/communication/`) and the delivery states they carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use ymera_core::resilience::BreakerState;

use crate::stats::{Counters, Latency};

/// Most rows one history, conversations or DLQ page holds.
pub const MAX_PAGE: u32 = 1000;
/// Rows per page when the request gives no limit.
pub const DEFAULT_PAGE: u32 = 100;

// ----------------------------------------------------------------- states

/// Where a copy of a message (one recipient) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stored in JetStream, not yet attempted.
    Accepted,
    /// The recipient acknowledged it.
    Delivered,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// Waiting for the recipient's circuit to close; no attempt spent.
    Deferred,
    /// Moved to `YMERA_DLQ` after the last attempt failed.
    DeadLettered,
    /// Its `expires_at` passed before delivery.
    Expired,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Accepted,
        DeliveryState::Delivered,
        DeliveryState::Retrying,
        DeliveryState::Deferred,
        DeliveryState::DeadLettered,
        DeliveryState::Expired,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Deferred => "deferred",
            DeliveryState::DeadLettered => "dead_lettered",
            DeliveryState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Final states never change again (except by an explicit DLQ replay).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::DeadLettered | DeliveryState::Expired
        )
    }
}

/// A message's overall status: `accepted` until every copy is final, then
/// `delivered` when all were, else `dead_lettered` when one was, else
/// `expired` (`journal::STATUS_SQL` computes it from the stored rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// In progress (a send's reply is always this).
    Accepted,
    /// Every copy was delivered.
    Delivered,
    /// Every copy is final and one was dead-lettered.
    DeadLettered,
    /// Every copy is final, none dead-lettered, one expired.
    Expired,
}

impl MessageStatus {
    /// Every status.
    pub const ALL: [MessageStatus; 4] = [
        MessageStatus::Accepted,
        MessageStatus::Delivered,
        MessageStatus::DeadLettered,
        MessageStatus::Expired,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Accepted => "accepted",
            MessageStatus::Delivered => "delivered",
            MessageStatus::DeadLettered => "dead_lettered",
            MessageStatus::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The status of a message to `recipients` recipients whose copies have
    /// reached the final states `finals` (one per final copy), as
    /// `journal::STATUS_SQL` computes it.
    pub fn of(recipients: usize, finals: &[DeliveryState]) -> Self {
        if finals.len() < recipients {
            MessageStatus::Accepted
        } else if finals.iter().all(|s| *s == DeliveryState::Delivered) {
            MessageStatus::Delivered
        } else if finals.contains(&DeliveryState::DeadLettered) {
            MessageStatus::DeadLettered
        } else {
            MessageStatus::Expired
        }
    }
}

/// Decodes a text column holding one of the names of `$ty` (`as_str`).
macro_rules! text_column {
    ($ty:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                <$ty>::parse(text)
                    .ok_or_else(|| format!("{text:?} is not a {}", stringify!($ty)).into())
            }
        }
    };
}

text_column!(DeliveryState);
text_column!(MessageStatus);

/// A recipient's circuit, as `communication.metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Nothing is pulled until the open period ends.
    Open,
    /// One probe delivery is in flight.
    HalfOpen,
}

impl From<BreakerState> for CircuitState {
    fn from(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => CircuitState::Closed,
            BreakerState::Open => CircuitState::Open,
            BreakerState::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

// ------------------------------------------------------------------- send

/// `communication.send` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SendReply {
    /// The message id (assigned when the envelope had none).
    pub id: Uuid,
    /// Always `accepted`.
    pub status: MessageStatus,
    /// The recipients a copy was stored for.
    pub recipients: Vec<String>,
    /// True when every copy was a resend of a known id inside the duplicate
    /// window: nothing new will be delivered.
    #[serde(default)]
    pub duplicate: bool,
    /// The `skill:` recipients and the agent each was resolved to (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<Resolved>,
}

/// One `skill:` recipient resolved at send time (DESIGN §9).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resolved {
    /// As written: `skill:<id>`.
    pub recipient: String,
    /// The live agent chosen.
    pub agent: String,
}

// ----------------------------------------------------------------- status

/// `communication.status` request.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The message id.
    pub id: Uuid,
}

/// One recipient's copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct CopyStatus {
    /// The recipient.
    pub recipient: String,
    /// Where the copy stands.
    pub state: DeliveryState,
    /// Attempts spent.
    pub attempts: i32,
    /// When the first attempt was made.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the recipient acknowledged it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Accept-to-acknowledgement time.
    pub latency_ms: Option<f64>,
}

impl CopyStatus {
    /// A copy nothing happened to yet (it has no row): accepted.
    pub fn accepted(recipient: String) -> Self {
        CopyStatus {
            recipient,
            state: DeliveryState::Accepted,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            last_error: None,
            delivered_at: None,
            latency_ms: None,
        }
    }
}

/// `communication.status` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReply {
    /// The message id.
    pub id: Uuid,
    /// Overall: accepted (in progress), delivered, dead_lettered or expired.
    pub status: MessageStatus,
    /// The sender.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// When the sender created it.
    pub created_at: Option<DateTime<Utc>>,
    /// One entry per recipient.
    pub recipients: Vec<CopyStatus>,
}

// ---------------------------------------------------------------- history

/// `communication.history` request: every filter optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// Only messages from this sender.
    pub sender: Option<String>,
    /// Only messages to this recipient.
    pub recipient: Option<String>,
    /// Only messages of this conversation.
    pub conversation_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One message in history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct HistoryEntry {
    /// The id.
    #[sqlx(rename = "message_id")]
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub message_type: String,
    /// The sender.
    pub sender: String,
    /// The recipients.
    #[sqlx(json)]
    pub recipients: Value,
    /// The subject.
    pub subject: String,
    /// The payload.
    #[sqlx(json)]
    pub payload: Value,
    /// Overall status.
    pub status: MessageStatus,
    /// When the sender created it.
    pub created_at: DateTime<Utc>,
    /// The conversation.
    pub conversation_id: Option<String>,
    /// The id it answers.
    pub correlation_id: Option<String>,
    /// The priority.
    pub priority: Option<String>,
    /// The metadata.
    #[sqlx(json(nullable))]
    pub metadata: Option<Value>,
    /// The `skill:` recipients of the send and the agent each was resolved to (empty for
    /// a send naming its recipients); read from the metadata keys the send recorded
    /// (`agents::RESOLVED_KEY_PREFIX`).
    #[sqlx(skip)]
    #[serde(default)]
    pub resolved: Vec<Resolved>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryPage {
    /// The messages.
    pub messages: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------- conversations

/// `communication.conversations` request.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsRequest {
    /// Only conversations this agent takes part in.
    pub participant: Option<String>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Conversation {
    /// The id.
    pub conversation_id: String,
    /// Every sender and recipient seen.
    #[sqlx(json)]
    pub participants: Value,
    /// The subject of its first message.
    pub topic: Option<String>,
    /// Messages in it.
    pub message_count: i32,
    /// Its first message.
    pub created_at: DateTime<Utc>,
    /// Its latest message.
    pub last_activity: DateTime<Utc>,
}

/// A page of conversations, most recently active first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationsPage {
    /// The conversations.
    pub conversations: Vec<Conversation>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- metrics

/// One recipient's queue and circuit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecipientMetrics {
    /// The recipient.
    pub recipient: String,
    /// Undelivered copies (pending + in flight).
    pub backlog: u64,
    /// Its circuit breaker.
    pub breaker: CircuitState,
}

/// `communication.metrics` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsReply {
    /// Counters of this instance since it started.
    pub counters: Counters,
    /// Delivery latency (accept to acknowledgement) of this instance.
    pub delivery_latency: Latency,
    /// Per-recipient backlog bound.
    pub backlog_capacity: u32,
    /// Every recipient this instance delivers to.
    pub recipients: Vec<RecipientMetrics>,
}

// -------------------------------------------------------------------- DLQ

/// `communication.dlq.list` request.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlqListRequest {
    /// Only dead letters of this recipient.
    pub recipient: Option<String>,
    /// Start at this DLQ sequence (default: the oldest).
    pub from_sequence: Option<u64>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Its sequence in `YMERA_DLQ` (the handle for replay).
    pub sequence: u64,
    /// The recipient that never acknowledged it.
    pub recipient: String,
    /// Attempts spent.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// The message.
    pub envelope: Value,
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DlqPage {
    /// The dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `from_sequence` for the next page.
    pub next_sequence: Option<u64>,
}

/// `communication.dlq.replay` request: the dead letters to deliver again.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlqReplayRequest {
    /// These DLQ sequences (from `dlq.list`), at most 1000.
    #[serde(default)]
    pub sequences: Vec<u64>,
    /// Or every dead letter of this recipient (up to `limit`).
    pub recipient: Option<String>,
    /// Most replayed by a recipient-wide replay (default 100, ≤ 1000).
    pub limit: Option<u32>,
}

/// One copy put back by a replay.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayedCopy {
    /// The message id.
    pub id: Uuid,
    /// The recipient it goes to again.
    pub recipient: String,
    /// Its former sequence in `YMERA_DLQ`.
    pub sequence: u64,
}

/// `communication.dlq.replay` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DlqReplayReply {
    /// Copies put back into `YMERA_MESSAGES` (attempts reset to 0).
    pub replayed: u32,
    /// Their message ids and recipients.
    pub messages: Vec<ReplayedCopy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_and_finality() {
        for state in [
            DeliveryState::Accepted,
            DeliveryState::Delivered,
            DeliveryState::Retrying,
            DeliveryState::Deferred,
            DeliveryState::DeadLettered,
            DeliveryState::Expired,
        ] {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        assert!(DeliveryState::Delivered.is_final());
        assert!(!DeliveryState::Retrying.is_final());
        assert_eq!(DeliveryState::parse("lost"), None);
    }

    #[test]
    fn overall_status_matches_the_stored_definition() {
        use DeliveryState::*;
        assert_eq!(MessageStatus::of(2, &[Delivered]).as_str(), "accepted");
        assert_eq!(
            MessageStatus::of(2, &[Delivered, Delivered]).as_str(),
            "delivered"
        );
        assert_eq!(
            MessageStatus::of(2, &[Expired, DeadLettered]).as_str(),
            "dead_lettered"
        );
        assert_eq!(
            MessageStatus::of(2, &[Delivered, Expired]).as_str(),
            "expired"
        );
    }

    #[test]
    fn states_serialise_as_their_stored_names() {
        for state in DeliveryState::ALL {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::from(state.as_str())
            );
        }
        for status in MessageStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::from(status.as_str())
            );
            assert_eq!(MessageStatus::parse(status.as_str()), Some(status));
        }
        for (state, name) in [
            (BreakerState::Closed, "closed"),
            (BreakerState::Open, "open"),
            (BreakerState::HalfOpen, "half_open"),
        ] {
            assert_eq!(
                serde_json::to_value(CircuitState::from(state)).unwrap(),
                Value::from(name)
            );
            assert_eq!(state.as_str(), name);
        }
    }
}
