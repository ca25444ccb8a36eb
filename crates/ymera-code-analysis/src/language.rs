//! Supported languages and how a language is recognised (name, file extension,
//! Markdown fence tag).

use serde::{Deserialize, Serialize};

/// A language the engine can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    JavaScript,
    Java,
    Go,
    Rust,
}

impl Language {
    /// Every supported language, in a stable order.
    pub const ALL: [Language; 5] = [
        Language::Python,
        Language::JavaScript,
        Language::Java,
        Language::Go,
        Language::Rust,
    ];

    /// The canonical lowercase name (`python`, `javascript`, `java`, `go`, `rust`).
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::Java => "java",
            Language::Go => "go",
            Language::Rust => "rust",
        }
    }

    /// Recognises a language name or Markdown fence tag, case-insensitively
    /// (`py`, `python`, `js`, `javascript`, `java`, `go`, `golang`, `rust`, `rs`, …).
    pub fn from_name(name: &str) -> Option<Language> {
        let lower = name.trim().to_ascii_lowercase();
        let tag = lower
            .split(|c: char| c.is_whitespace() || c == ',' || c == '{')
            .next()?;
        match tag {
            "py" | "python" | "python3" | "py3" => Some(Language::Python),
            "js" | "javascript" | "node" | "nodejs" | "mjs" | "cjs" | "jsx" => {
                Some(Language::JavaScript)
            }
            "java" => Some(Language::Java),
            "go" | "golang" => Some(Language::Go),
            "rust" | "rs" => Some(Language::Rust),
            _ => None,
        }
    }

    /// Recognises a language from a file name's extension.
    pub fn from_path(path: &str) -> Option<Language> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "py" | "pyw" => Some(Language::Python),
            "js" | "mjs" | "cjs" | "jsx" => Some(Language::JavaScript),
            "java" => Some(Language::Java),
            "go" => Some(Language::Go),
            "rs" => Some(Language::Rust),
            _ => None,
        }
    }

    /// The names accepted in requests, for error messages and the rules endpoint.
    pub fn supported_names() -> Vec<&'static str> {
        Language::ALL.iter().map(|l| l.name()).collect()
    }

    pub(crate) fn grammar(self) -> tree_sitter::Language {
        match self {
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::Java => tree_sitter_java::LANGUAGE.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
