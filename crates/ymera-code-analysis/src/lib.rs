//! Ymera's code-analysis engine.
//!
//! Parses Python, JavaScript, Java, Go and Rust with tree-sitter, measures every
//! function with lizard 1.24.3's definitions (CCN, NLOC, token count, parameter
//! count), runs rules on the syntax tree (security, performance, smells), and
//! renders the result as the JSON of DESIGN §4, SARIF 2.1.0 or the seed's
//! Markdown "Code Analysis Report".
//!
//! ```
//! use ymera_code_analysis::{analyze_source, Language};
//! let file = analyze_source("app.py", None, "def f(x):\n    return eval(x)\n").unwrap();
//! assert_eq!(file.language, Language::Python);
//! assert_eq!(file.functions[0].ccn, 1);
//! assert_eq!(file.findings[0].rule_id, "B307");
//! ```
//!
//! [`service`] serves the engine as the `code-analysis` service
//! (`code-analysis.analyze`, `code-analysis.rules`) and [`inbox`] answers chat
//! messages routed to the agent `code-analysis`; [`run`] starts both.
//!
//! Invariants: no input panics or hangs (parsing has a time limit and every
//! walk is iterative); the engine modules never touch NATS, and this crate
//! never depends on another service's crate.

mod error;
pub mod inbox;
mod language;
mod markdown;
mod metrics;
mod report;
mod rules;
mod sarif;
pub mod service;
mod syntax;
mod tokens;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::AnalysisError;
pub use language::Language;
pub use markdown::{
    CODE_MARKERS, CodeBlock, REVIEW_KEYWORDS, asks_for_review, can_handle, extract_code_blocks,
    has_code,
};
pub use report::{
    Category, CategoryCounts, Confidence, FileReport, FileSummary, Finding, FunctionMetrics,
    Report, Severity, SeverityCounts, Summary, rank,
};
pub use rules::{RuleInfo, rules};

/// Starts the runtime (NATS only) and serves until shutdown. Code analysis stores
/// nothing, so it opens no PostgreSQL pool even when `POSTGRES_URL` is set (DESIGN §5).
pub async fn run(
    mut config: ymera_core::config::ServiceConfig,
) -> Result<(), ymera_core::runtime::RuntimeError> {
    config.postgres_url = None;
    let runtime = ymera_core::runtime::Runtime::start(service::NAME, config).await?;
    service::serve(runtime).await
}

/// Largest file (or code block) accepted: 1 MiB.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Largest request accepted (all files plus the message): 10 MiB.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// Default time limit for parsing one file.
pub const DEFAULT_PARSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Size and time limits of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_file_bytes: usize,
    pub max_request_bytes: usize,
    pub parse_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: MAX_FILE_BYTES,
            max_request_bytes: MAX_REQUEST_BYTES,
            parse_timeout: DEFAULT_PARSE_TIMEOUT,
        }
    }
}

/// One file to analyse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: String,
    /// Language name; when absent it comes from the path's extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    pub content: String,
}

/// An analysis request: files, and/or a Markdown chat message with fenced code
/// blocks (the seed's request shape).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisRequest {
    #[serde(default)]
    pub files: Vec<SourceFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Default language for files and untagged code blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

fn unsupported(requested: &str) -> AnalysisError {
    AnalysisError::UnsupportedLanguage {
        requested: requested.to_owned(),
        supported: Language::supported_names(),
    }
}

fn parse_language(name: &str) -> Result<Language, AnalysisError> {
    Language::from_name(name).ok_or_else(|| unsupported(name))
}

/// Analyses a request with the default [`Limits`].
pub fn analyze(request: &AnalysisRequest) -> Result<Report, AnalysisError> {
    analyze_with_limits(request, &Limits::default())
}

/// Analyses a request: every file, then every code block of the message.
pub fn analyze_with_limits(
    request: &AnalysisRequest,
    limits: &Limits,
) -> Result<Report, AnalysisError> {
    let size = request
        .files
        .iter()
        .map(|f| f.content.len() + f.path.len())
        .sum::<usize>()
        + request.message.as_ref().map_or(0, String::len);
    if size > limits.max_request_bytes {
        return Err(AnalysisError::RequestTooLarge {
            size,
            limit: limits.max_request_bytes,
        });
    }
    let default_language = request
        .language
        .as_deref()
        .map(parse_language)
        .transpose()?;
    let mut jobs: Vec<(String, Language, &str)> = Vec::new();
    for file in &request.files {
        let language = match file.language.as_deref() {
            Some(name) => parse_language(name)?,
            None => Language::from_path(&file.path)
                .or(default_language)
                .ok_or_else(|| unsupported(&file.path))?,
        };
        jobs.push((file.path.clone(), language, file.content.as_str()));
    }
    let blocks = request
        .message
        .as_deref()
        .map(extract_code_blocks)
        .unwrap_or_default();
    {
        for (index, block) in blocks.iter().enumerate() {
            let language = match (&block.tag, block.language) {
                (_, Some(language)) => language,
                (None, None) => {
                    default_language.ok_or_else(|| unsupported("(untagged code block)"))?
                }
                (Some(tag), None) => return Err(unsupported(tag)),
            };
            jobs.push((
                format!("block-{}", index + 1),
                language,
                block.code.as_str(),
            ));
        }
    }
    if jobs.is_empty() {
        return Err(AnalysisError::EmptyRequest(
            "no files and no fenced code blocks".to_owned(),
        ));
    }
    let mut files = Vec::with_capacity(jobs.len());
    for (path, language, content) in jobs {
        files.push(analyze_file(&path, language, content, limits)?);
    }
    Ok(Report::new(files))
}

/// Analyses one source text. The language is the given one, else the one the
/// path's extension names.
pub fn analyze_source(
    path: &str,
    language: Option<Language>,
    source: &str,
) -> Result<FileReport, AnalysisError> {
    let language = language
        .or_else(|| Language::from_path(path))
        .ok_or_else(|| unsupported(path))?;
    analyze_file(path, language, source, &Limits::default())
}

/// Analyses one source text under explicit limits.
pub fn analyze_file(
    path: &str,
    language: Language,
    source: &str,
    limits: &Limits,
) -> Result<FileReport, AnalysisError> {
    if source.len() > limits.max_file_bytes {
        return Err(AnalysisError::FileTooLarge {
            path: path.to_owned(),
            size: source.len(),
            limit: limits.max_file_bytes,
        });
    }
    let tree = syntax::parse(language, path, source, limits.parse_timeout)?;
    let syntax = syntax::Syntax::new(&tree, source);
    let tokens = tokens::tokens(language, &syntax);
    let measured = metrics::measure(language, &syntax, &tokens);
    let findings = rules::check(language, &syntax, &measured);
    let summary = FileSummary::of(&measured.functions, findings.len());
    Ok(FileReport {
        path: path.to_owned(),
        language,
        nloc: measured.nloc,
        token_count: measured.token_count,
        functions: measured.functions,
        findings,
        summary,
    })
}
