use ymera_code_analysis::{FileReport, Language, analyze_source};

pub fn analyze(language: Language, source: &str) -> FileReport {
    let path = match language {
        Language::Python => "snippet.py",
        Language::JavaScript => "snippet.js",
        Language::Java => "Snippet.java",
        Language::Go => "snippet.go",
        Language::Rust => "snippet.rs",
    };
    analyze_source(path, Some(language), source).expect("snippet analyses")
}

pub fn rule_ids(report: &FileReport) -> Vec<String> {
    report.findings.iter().map(|f| f.rule_id.clone()).collect()
}

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A running `code-analysis` service (endpoints and inbox) on a private nats-server.
pub struct RunningService {
    pub _nats_server: ymera_testkit::NatsServer,
    pub client: ymera_core::client::ServiceClient,
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts nats-server (8 MiB max_payload) and the service with MAX_MESSAGE_SIZE
/// = `max_message_size`, and waits until it answers.
pub async fn start_service(max_message_size: usize) -> RunningService {
    start_service_with(max_message_size, ymera_core::config::AuthMode::Off).await
}

/// [`start_service`] with authentication `auth` (no security service runs).
pub async fn start_service_with(
    max_message_size: usize,
    auth: ymera_core::config::AuthMode,
) -> RunningService {
    let nats_server = ymera_testkit::nats_large_payload();
    let mut config = ymera_core::config::ServiceConfig::default();
    config.nats.url = nats_server.url();
    config.max_message_size = max_message_size;
    config.auth = auth;
    let runtime = ymera_core::runtime::Runtime::start(ymera_code_analysis::service::NAME, config)
        .await
        .expect("runtime starts");
    let shutdown = runtime.shutdown_token();
    tokio::spawn(ymera_code_analysis::service::serve(runtime));
    let nats = async_nats::connect(nats_server.url())
        .await
        .expect("client connects");
    let client = ymera_core::client::ServiceClient::new(nats)
        .with_timeout(std::time::Duration::from_secs(10));
    ymera_testkit::wait_until_serving(client.nats(), "code-analysis.health").await;
    RunningService {
        _nats_server: nats_server,
        client,
        shutdown,
    }
}
