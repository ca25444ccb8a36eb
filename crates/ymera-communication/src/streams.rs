//! The JetStream streams: `YMERA_MESSAGES` (one copy per recipient on
//! `ymera.messages.<recipient>`) and `YMERA_DLQ` (`ymera.dlq.<recipient>`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::settings::CommSettings;

/// The stream holding undelivered copies.
pub const MESSAGES_STREAM: &str = "YMERA_MESSAGES";
/// The dead-letter stream.
pub const DLQ_STREAM: &str = "YMERA_DLQ";
/// Header with the instant (RFC 3339) the copy was accepted.
pub const ACCEPTED_AT_HEADER: &str = "Ymera-Accepted-At";
/// Header on DLQ messages: the recipient.
pub const RECIPIENT_HEADER: &str = "Ymera-Recipient";
/// Header on DLQ messages: attempts spent.
pub const ATTEMPTS_HEADER: &str = "Ymera-Attempts";
/// Header on DLQ messages: the last error.
pub const LAST_ERROR_HEADER: &str = "Ymera-Last-Error";
/// How long dead letters are kept.
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(14 * 86_400);
/// Most dead letters kept.
pub const DLQ_MAX_MESSAGES: i64 = 1_000_000;

/// Subject of a recipient's copies.
pub fn message_subject(recipient: &str) -> String {
    format!("ymera.messages.{recipient}")
}

/// Subject of a recipient's dead letters.
pub fn dlq_subject(recipient: &str) -> String {
    format!("ymera.dlq.{recipient}")
}

/// The durable consumer delivering a recipient's copies.
pub fn consumer_name(recipient: &str) -> String {
    format!("deliver-{recipient}")
}

/// The recipient a consumer name belongs to.
pub fn recipient_of_consumer(name: &str) -> Option<&str> {
    name.strip_prefix("deliver-")
}

/// Creates (or updates) both streams, at the platform's replica count
/// (`ymera_core::jetstream`: `YMERA_JS_REPLICAS`, default 3 on a cluster of ≥ 3
/// servers); existing streams are scaled in place and their consumers with them.
///
/// `YMERA_MESSAGES` is a work queue: a copy leaves the stream when its
/// recipient acknowledged it (or it was dead-lettered), so the per-subject
/// message count *is* the recipient's backlog, and `max_msgs_per_subject`
/// with `discard_new_per_subject` bounds it: JetStream refuses the publish
/// past the bound, shared by every instance.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &CommSettings,
) -> Result<(), String> {
    let replicas = replicas(js).await?;
    let messages = stream::Config {
        name: MESSAGES_STREAM.to_owned(),
        subjects: vec!["ymera.messages.>".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        max_messages_per_subject: i64::from(settings.backlog_limit),
        duplicate_window: settings.duplicate_window,
        // S2 on disk (NATS ≥ 2.10); an existing stream is switched in place by the update.
        compression: Some(stream::Compression::S2),
        ..Default::default()
    };
    ymera_core::jetstream::ensure_stream(js, messages, replicas).await?;
    let dlq = stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec!["ymera.dlq.>".to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: DLQ_MAX_AGE,
        max_messages: DLQ_MAX_MESSAGES,
        allow_direct: true,
        duplicate_window: settings.duplicate_window,
        compression: Some(stream::Compression::S2),
        ..Default::default()
    };
    ymera_core::jetstream::ensure_stream(js, dlq, replicas).await?;
    Ok(())
}

/// `ymera_core::jetstream::replicas`, with the non-`Send` `Env` dropped before
/// the await so the start-up future stays `Send` (it is spawned on a runtime).
pub(crate) async fn replicas(
    js: &jetstream::Context,
) -> Result<ymera_core::jetstream::Replicas, String> {
    use ymera_core::jetstream::{Replicas, cluster_size, configured_replicas, default_replicas};
    let configured =
        configured_replicas(&ymera_core::env::Env::from_process()).map_err(|e| e.to_string())?;
    Ok(match configured {
        Some(count) => Replicas {
            count,
            explicit: true,
        },
        None => Replicas {
            count: default_replicas(cluster_size(&js.client()).await),
            explicit: false,
        },
    })
}

/// The durable pull consumer of one recipient.
pub fn consumer_config(recipient: &str, settings: &CommSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(recipient)),
        description: Some(format!("delivers copies to agent.{recipient}.inbox")),
        filter_subject: message_subject(recipient),
        ack_policy: consumer::AckPolicy::Explicit,
        // A copy whose attempt outlives the inbox timeout by far was lost
        // with its instance: JetStream hands it out again.
        ack_wait: settings.inbox_timeout + Duration::from_secs(10),
        max_deliver: -1,
        max_ack_pending: i64::try_from(settings.delivery_concurrency * 4).unwrap_or(1024),
        ..Default::default()
    }
}
