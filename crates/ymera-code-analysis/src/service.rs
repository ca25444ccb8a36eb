//! The `code-analysis` service: `code-analysis.analyze` and `code-analysis.rules`
//! on the ymera-core runtime, plus the agent inbox (see [`crate::inbox`]).
//!
//! Analysis is CPU-bound, so it runs on tokio's blocking pool and the runtime
//! keeps answering health checks and other requests meanwhile.

use serde::{Deserialize, Serialize};
use serde_sarif::sarif::Sarif;
use ymera_core::error::{Error, ErrorKind, Violation};
use ymera_core::runtime::{Call, Open, Raw, Runtime, RuntimeError, ServiceBuilder};

use crate::{
    AnalysisError, AnalysisRequest, Limits, MAX_REQUEST_BYTES, Report, RuleInfo, SourceFile,
    Summary,
};

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

ymera_core::permission!(
    /// Running an analysis (`code-analysis.analyze`, checked by the runtime
    /// with `YMERA_AUTH=required`).
    pub Analyze = "analysis:run"
);

/// The permission `code-analysis.analyze` requires with `YMERA_AUTH=required`.
pub const ANALYZE_PERMISSION: &str = Analyze::PERMISSION;

/// Reply of `code-analysis.analyze`, in the request's [`Format`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AnalyzeReply {
    /// `json`: the report.
    Report(Report),
    /// `sarif`: a SARIF 2.1.0 log.
    Sarif(Box<Sarif>),
    /// `markdown`: the seed's Markdown report with the summary.
    Markdown(MarkdownReply),
}

/// The `markdown` form of `code-analysis.analyze`'s reply.
#[derive(Debug, Clone, Serialize)]
pub struct MarkdownReply {
    /// Always `markdown`.
    pub format: MarkdownFormat,
    /// The seed's "Code Analysis Report" Markdown.
    pub markdown: String,
    /// The report's summary.
    pub summary: Summary,
}

/// The tag of a [`MarkdownReply`] (`"markdown"` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkdownFormat {
    /// `markdown`.
    Markdown,
}

/// Reply of `code-analysis.rules`: the rule catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct RulesReply {
    /// Every rule.
    pub rules: &'static [RuleInfo],
}

async fn analyze(
    limits: Limits,
    _: Call<Analyze>,
    body: AnalyzeRequest,
) -> Result<AnalyzeReply, Error> {
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
    Ok(match format {
        Format::Json => AnalyzeReply::Report(report),
        Format::Sarif => AnalyzeReply::Sarif(Box::new(report.sarif_log())),
        Format::Markdown => AnalyzeReply::Markdown(MarkdownReply {
            format: MarkdownFormat::Markdown,
            markdown: report.to_markdown(),
            summary: report.summary,
        }),
    })
}

/// The rule catalogue (the body is ignored).
async fn rules(_: (), _: Call<Open>, _: Raw) -> Result<RulesReply, Error> {
    Ok(RulesReply {
        rules: crate::rules(),
    })
}

/// The service with its endpoints, for a transport limit of
/// `max_message_size`; `analyze` declares [`Analyze`] (`analysis:run`,
/// checked by the runtime when auth is required), `rules` is open like health.
pub fn service(max_message_size: usize) -> ServiceBuilder {
    ServiceBuilder::new(
        NAME,
        env!("CARGO_PKG_VERSION"),
        "Code analysis: complexity metrics and security, performance and smell findings",
    )
    .route(
        "code-analysis.analyze",
        &limits_for(max_message_size),
        analyze,
    )
    .route("code-analysis.rules", &(), rules)
}

/// Starts the inbox task and serves the endpoints until shutdown.
pub async fn serve(runtime: Runtime) -> Result<(), RuntimeError> {
    let max = runtime.config().max_message_size;
    ymera_core::agent_card::serve_inbox(
        &runtime,
        NAME,
        crate::inbox::card(),
        move |envelope| async move { crate::inbox::answer(&envelope, max).await },
    )
    .await?;
    service(max).serve(runtime).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_both_endpoints_with_their_types() {
        let endpoints = service(1024 * 1024).endpoints();
        let listed: Vec<_> = endpoints
            .iter()
            .map(|e| {
                (
                    e.subject.as_str(),
                    e.permission,
                    e.request.as_str(),
                    e.reply.as_str(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "code-analysis.analyze",
                    Some("analysis:run"),
                    "AnalyzeRequest",
                    "AnalyzeReply"
                ),
                ("code-analysis.rules", None, "bytes", "RulesReply"),
            ]
        );
    }
}
