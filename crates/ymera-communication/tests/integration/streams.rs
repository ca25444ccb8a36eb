//! Stream configuration against a real nats-server.

use async_nats::jetstream::{self, stream};
use ymera_communication::settings::CommSettings;
use ymera_communication::streams::{DLQ_STREAM, MESSAGES_STREAM, ensure_streams};

use crate::common::nats;

/// Both streams are S2-compressed, and a pre-existing uncompressed
/// `YMERA_MESSAGES` (an older deployment) is switched in place, keeping its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_s2_compressed_and_existing_ones_updated_in_place() {
    let server = nats();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let settings = CommSettings::default();
    js.create_stream(stream::Config {
        name: MESSAGES_STREAM.to_owned(),
        subjects: vec!["ymera.messages.>".to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("ymera.messages.old", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    ensure_streams(&js, &settings).await.unwrap();
    for name in [MESSAGES_STREAM, DLQ_STREAM] {
        let info = js
            .get_stream(name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(
            info.config.compression,
            Some(stream::Compression::S2),
            "{name}"
        );
    }
    let mut messages = js.get_stream(MESSAGES_STREAM).await.unwrap();
    assert_eq!(messages.info().await.unwrap().state.messages, 1);
    // Idempotent: a second start changes nothing.
    ensure_streams(&js, &settings).await.unwrap();
}

/// `YMERA_STREAM_COMPRESSION=none` makes both streams uncompressed; switching the setting
/// back to `s2` updates the existing streams in place (config shows S2, messages kept),
/// and `none` again turns it off in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compression_setting_takes_effect_and_switches_existing_streams() {
    use ymera_communication::streams::ensure_streams_with;
    let server = nats();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let settings = CommSettings::default();
    async fn compression(js: &jetstream::Context, name: &str) -> Option<stream::Compression> {
        let mut stream = js.get_stream(name).await.unwrap();
        stream.info().await.unwrap().config.compression.clone()
    }
    ensure_streams_with(&js, &settings, stream::Compression::None)
        .await
        .unwrap();
    for name in [MESSAGES_STREAM, DLQ_STREAM] {
        assert_ne!(
            compression(&js, name).await,
            Some(stream::Compression::S2),
            "{name} created uncompressed"
        );
    }
    js.publish("ymera.messages.someone", "kept".into())
        .await
        .unwrap()
        .await
        .unwrap();
    ensure_streams_with(&js, &settings, stream::Compression::S2)
        .await
        .unwrap();
    for name in [MESSAGES_STREAM, DLQ_STREAM] {
        assert_eq!(
            compression(&js, name).await,
            Some(stream::Compression::S2),
            "{name} switched to S2 in place"
        );
    }
    ensure_streams_with(&js, &settings, stream::Compression::None)
        .await
        .unwrap();
    for name in [MESSAGES_STREAM, DLQ_STREAM] {
        assert_ne!(
            compression(&js, name).await,
            Some(stream::Compression::S2),
            "{name} switched off in place"
        );
    }
    let mut messages = js.get_stream(MESSAGES_STREAM).await.unwrap();
    assert_eq!(messages.info().await.unwrap().state.messages, 1, "kept");
}
