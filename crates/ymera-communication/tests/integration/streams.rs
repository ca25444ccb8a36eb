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
