//! The `code-analysis` service: `code-analysis.analyze` and `code-analysis.rules`
//! on the ymera-core runtime, plus the agent inbox (see [`crate::inbox`]).
//!
//! Analysis is CPU-bound, so it runs on tokio's blocking pool and the runtime
//! keeps answering health checks and other requests meanwhile.

use std::sync::Arc;

use serde::Deserialize;
use ymera_core::error::{Error, ErrorKind, Violation};
use ymera_core::runtime::{Reply, Runtime, RuntimeError, ServiceBuilder, ServiceRequest};

use crate::{AnalysisError, AnalysisRequest, Limits, MAX_REQUEST_BYTES, Report, SourceFile};

/// The service's micro name (DESIGN §3).
pub const NAME: &str = "code-analysis";

/// Output format of `code-analysis.analyze`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Sarif,
    Markdown,
}

/// Body of `code-analysis.analyze`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    #[serde(default)]
    pub files: Vec<SourceFile>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub format: Format,
}

/// Most files in one request (each is parsed separately).
pub const MAX_FILES_PER_REQUEST: usize = 1_000;

/// The engine limits for a service whose transport accepts `max_message_size`
/// bytes: the request limit is min(10 MiB, MAX_MESSAGE_SIZE).
pub fn limits_for(max_message_size: usize) -> Limits {
    Limits {
        max_request_bytes: MAX_REQUEST_BYTES.min(max_message_size),
        ..Limits::default()
    }
}

/// Maps an engine error to the platform error with the same code.
pub fn to_error(err: &AnalysisError) -> Error {
    match err {
        AnalysisError::UnsupportedLanguage {
            requested,
            supported,
        } => Error::validation(vec![Violation::new(
            "/language",
            format!(
                "unsupported language {requested:?}: supported languages are {}",
                supported.join(", ")
            ),
        )])
        .with_detail("supported", supported.clone()),
        AnalysisError::ParseTimeout { .. } => {
            Error::validation(vec![Violation::new("/files", err.to_string())])
        }
        AnalysisError::FileTooLarge { size, limit, .. }
        | AnalysisError::RequestTooLarge { size, limit } => {
            Error::new(ErrorKind::PayloadTooLarge, err.to_string())
                .with_detail("size", *size)
                .with_detail("limit", *limit)
        }
        AnalysisError::EmptyRequest(_) => Error::invalid_request(err.to_string()),
        AnalysisError::Parser { .. } => Error::internal(err),
    }
}

/// Runs the engine on the blocking pool and records the analysis metrics.
pub async fn analyze_blocking(request: AnalysisRequest, limits: Limits) -> Result<Report, Error> {
    let result = tokio::task::spawn_blocking(move || crate::analyze_with_limits(&request, &limits))
        .await
        .map_err(Error::internal)?;
    let report = result.map_err(|e| to_error(&e))?;
    record_metrics(&report);
    Ok(report)
}

fn record_metrics(report: &Report) {
    for file in &report.files {
        metrics::counter!("ymera_analysis_files_total", "language" => file.language.name())
            .increment(1);
        for finding in &file.findings {
            metrics::counter!("ymera_analysis_findings_total", "severity" => finding.severity.name())
                .increment(1);
        }
    }
}

/// The permission `code-analysis.analyze` requires with `YMERA_AUTH=required`.
pub const ANALYZE_PERMISSION: &str = "analysis:run";

async fn handle_analyze(req: ServiceRequest, limits: Limits) -> Result<Reply, Error> {
    let body: AnalyzeRequest = req.json()?;
    if body.files.len() > MAX_FILES_PER_REQUEST {
        return Err(Error::validation(vec![Violation::new(
            "/files",
            format!("at most {MAX_FILES_PER_REQUEST} files per request"),
        )]));
    }
    let format = body.format;
    let request = AnalysisRequest {
        files: body.files,
        message: body.message,
        language: body.language,
    };
    let report = analyze_blocking(request, limits).await?;
    match format {
        Format::Json => Reply::json(&report.to_json()),
        Format::Sarif => Reply::json(&report.to_sarif()),
        Format::Markdown => Reply::json(&serde_json::json!({
            "format": "markdown",
            "markdown": report.to_markdown(),
            "summary": report.summary,
        })),
    }
}

/// The service with its endpoints, for a transport limit of
/// `max_message_size`; `analyze` declares `analysis:run` (checked by the
/// runtime when auth is required), `rules` is open like health.
pub fn service(max_message_size: usize) -> ServiceBuilder {
    let limits = Arc::new(limits_for(max_message_size));
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Code analysis: complexity metrics and security, performance and smell findings",
    )
    .secured(
        "code-analysis.analyze",
        ANALYZE_PERMISSION,
        move |req: ServiceRequest| handle_analyze(req, *limits),
    )
    .endpoint("code-analysis.rules", |_req: ServiceRequest| async move {
        Reply::json(&serde_json::json!({ "rules": crate::rules() }))
    })
}

/// Starts the inbox task and serves the endpoints until shutdown.
pub async fn serve(runtime: Runtime) -> Result<(), RuntimeError> {
    let max = runtime.config().max_message_size;
    let inbox = ymera_core::agent::AgentInbox::subscribe(&runtime, NAME).await?;
    tokio::spawn(
        inbox.run(runtime.shutdown_token(), move |envelope| async move {
            crate::inbox::answer(&envelope, max).await
        }),
    );
    service(max).serve(runtime).await
}
