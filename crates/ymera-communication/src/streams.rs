//! The JetStream streams: `YMERA_MESSAGES` (one copy per recipient on
//! `ymera.messages.<recipient>`) and `YMERA_DLQ` (`ymera.dlq.<recipient>`).
//!
//! Both are stored S2-compressed unless `YMERA_STREAM_COMPRESSION=none`
//! ([`configured_compression`]); an existing stream is switched in place at start.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use ymera_core::config::ConfigError;
use ymera_core::env::Env;

use crate::settings::CommSettings;

/// The variable choosing the platform streams' on-disk compression: `s2` (default) or `none`.
pub const COMPRESSION_ENV: &str = "YMERA_STREAM_COMPRESSION";

/// The stream holding undelivered copies.
pub const MESSAGES_STREAM: &str = "YMERA_MESSAGES";
/// The dead-letter stream.
pub const DLQ_STREAM: &str = "YMERA_DLQ";
/// Header with the instant (RFC 3339) the copy was accepted.
pub const ACCEPTED_AT_HEADER: &str = "Ymera-Accepted-At";
/// Header on copies the send outbox relay published (`1`): the delivery worker checks the
/// journal before trying one, as it does for a redelivery (see [`crate::outbox`]).
pub const RELAYED_HEADER: &str = "Ymera-Relayed";
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
    let compression = configured_compression(&Env::from_process()).map_err(|e| e.to_string())?;
    ensure_streams_with(js, settings, compression).await
}

/// `YMERA_STREAM_COMPRESSION` from `env`: `s2` (the default) or `none`, in any case.
/// Anything else is a malformed setting.
pub fn configured_compression(env: &Env<'_>) -> Result<stream::Compression, ConfigError> {
    env.one_of_any_case(
        COMPRESSION_ENV,
        &[
            ("s2", stream::Compression::S2),
            ("none", stream::Compression::None),
        ],
        stream::Compression::S2,
    )
}

/// [`ensure_streams`] with the compression given instead of read from
/// `YMERA_STREAM_COMPRESSION`.
pub async fn ensure_streams_with(
    js: &jetstream::Context,
    settings: &CommSettings,
    compression: stream::Compression,
) -> Result<(), String> {
    // Spelled out also for `none`, so an update switches an S2 stream back.
    let compression = Some(compression);
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
        // S2 on disk by default (NATS ≥ 2.10); an existing stream is switched in place by
        // the update (nats-server applies it to the blocks it seals afterwards).
        compression: compression.clone(),
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
        compression,
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

/// Copies a recipient's consumer may have unacknowledged per inbox slot
/// (`COMM_DELIVERY_CONCURRENCY`).
pub const ACK_PENDING_PER_SLOT: usize = 16;

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
        // Copies pulled and not yet acknowledged: in an inbox attempt (at most
        // `delivery_concurrency`) or awaiting their journal write and ack. 16× leaves the
        // journal big batches (BENCHMARKS.md, "Sending or delivering?": 4× capped a
        // recipient near 11,000 msg/s, 16× reached 14,800–16,500).
        max_ack_pending: i64::try_from(settings.delivery_concurrency * ACK_PENDING_PER_SLOT)
            .unwrap_or(i64::MAX),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Option<&'static str>) -> Env<'static> {
        Env::from_lookup(move |name| (name == COMPRESSION_ENV).then(|| value.map(str::to_owned))?)
    }

    #[test]
    fn compression_is_s2_unless_turned_off() {
        assert_eq!(
            configured_compression(&env(None)).unwrap(),
            stream::Compression::S2
        );
        assert_eq!(
            configured_compression(&env(Some("S2"))).unwrap(),
            stream::Compression::S2
        );
        assert_eq!(
            configured_compression(&env(Some("none"))).unwrap(),
            stream::Compression::None
        );
        let err = configured_compression(&env(Some("gzip"))).unwrap_err();
        assert_eq!(err.variable, COMPRESSION_ENV);
    }
}
