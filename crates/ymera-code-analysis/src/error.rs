//! The engine's one error type. The service maps each variant to a wire code.

/// Why an analysis request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    /// The language could not be determined or is not supported (wire: 422).
    #[error("unsupported language {requested:?}: supported languages are {}", supported.join(", "))]
    UnsupportedLanguage {
        requested: String,
        supported: Vec<&'static str>,
    },
    /// One file is larger than the per-file limit (wire: 413).
    #[error("file {path:?} is {size} bytes, over the {limit}-byte limit per file")]
    FileTooLarge {
        path: String,
        size: usize,
        limit: usize,
    },
    /// The request as a whole is larger than the per-request limit (wire: 413).
    #[error("request is {size} bytes, over the {limit}-byte limit per request")]
    RequestTooLarge { size: usize, limit: usize },
    /// The parser did not finish within the time limit (wire: 422).
    #[error("parsing {path:?} took longer than {limit_ms} ms")]
    ParseTimeout { path: String, limit_ms: u64 },
    /// The request had nothing to analyse (wire: 400).
    #[error("nothing to analyse: {0}")]
    EmptyRequest(String),
    /// The parser could not be set up (wire: 500).
    #[error("parser failure for {language}: {message}")]
    Parser {
        language: &'static str,
        message: String,
    },
}

impl AnalysisError {
    /// The error slug of DESIGN §4 this error maps to.
    pub fn code(&self) -> &'static str {
        match self {
            AnalysisError::UnsupportedLanguage { .. } | AnalysisError::ParseTimeout { .. } => {
                "validation_failed"
            }
            AnalysisError::FileTooLarge { .. } | AnalysisError::RequestTooLarge { .. } => {
                "payload_too_large"
            }
            AnalysisError::EmptyRequest(_) => "invalid_request",
            AnalysisError::Parser { .. } => "internal",
        }
    }

    /// The numeric status of DESIGN §4 this error maps to.
    pub fn status(&self) -> u16 {
        match self.code() {
            "validation_failed" => 422,
            "payload_too_large" => 413,
            "invalid_request" => 400,
            _ => 500,
        }
    }
}
