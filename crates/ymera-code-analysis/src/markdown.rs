//! Chat-style requests: code-block extraction, request detection, and the
//! seed's "Code Analysis Report" Markdown.

use serde::{Deserialize, Serialize};

use crate::language::Language;
use crate::report::{Category, FileReport, Report};

/// A fenced code block taken from a Markdown message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeBlock {
    /// The fence's info string (first word), if any: `py`, `rust`, …
    pub tag: Option<String>,
    /// The language the tag names, if it names a supported one.
    pub language: Option<Language>,
    pub code: String,
    /// 1-based line of the opening fence in the message.
    pub line: usize,
}

/// A fence being read: its char, length, tag, opening line and body lines.
type OpenFence<'m> = (char, usize, Option<String>, usize, Vec<&'m str>);

/// Fenced code blocks (``` or ~~~) in a Markdown message, in order. An
/// unclosed fence runs to the end of the message.
pub fn extract_code_blocks(markdown: &str) -> Vec<CodeBlock> {
    let mut blocks = Vec::new();
    let mut open: Option<OpenFence<'_>> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match open.as_mut() {
            None => {
                if let (Some(c), true) = (fence_char, fence_len >= 3) {
                    let info = trimmed.get(fence_len..).unwrap_or("").trim();
                    let tag = info
                        .split_whitespace()
                        .next()
                        .map(|t| t.trim_matches('{').trim_matches('.').to_owned());
                    open = Some((
                        c,
                        fence_len,
                        tag.filter(|t| !t.is_empty()),
                        index + 1,
                        Vec::new(),
                    ));
                }
            }
            Some((c, len, _, _, body)) => {
                let closes = fence_char == Some(*c)
                    && fence_len >= *len
                    && trimmed
                        .get(fence_len..)
                        .is_some_and(|r| r.trim().is_empty());
                if closes {
                    if let Some((_, _, tag, start, body)) = open.take() {
                        blocks.push(block(tag, start, &body));
                    }
                } else {
                    body.push(line);
                }
            }
        }
    }
    if let Some((_, _, tag, start, body)) = open {
        blocks.push(block(tag, start, &body));
    }
    blocks
}

fn block(tag: Option<String>, line: usize, body: &[&str]) -> CodeBlock {
    let language = tag.as_deref().and_then(Language::from_name);
    let mut code = body.join("\n");
    code.push('\n');
    CodeBlock {
        tag,
        language,
        code,
        line,
    }
}

/// Words that make a message a review request (the seed's `can_handle`
/// list, with spelling variants and a few more).
pub const REVIEW_KEYWORDS: [&str; 15] = [
    "review",
    "analyze",
    "analyse",
    "check",
    "optimize",
    "optimise",
    "debug",
    "complexity",
    "performance",
    "security",
    "bug",
    "code quality",
    "audit",
    "lint",
    "refactor",
];

/// What shows a message carries code: a fence (the seed: ```` ``` ````),
/// or a definition (the seed: `def `, `function `, `class `).
pub const CODE_MARKERS: [&str; 7] = ["```", "~~~", "def ", "function ", "class ", "func ", "fn "];

/// Whether a message carries code ([`CODE_MARKERS`]).
pub fn has_code(message: &str) -> bool {
    CODE_MARKERS.iter().any(|m| message.contains(m))
}

/// Whether a message asks for a review ([`REVIEW_KEYWORDS`], any case;
/// "bug" covers "bugs").
pub fn asks_for_review(message: &str) -> bool {
    let lower = message.to_lowercase();
    REVIEW_KEYWORDS.iter().any(|k| lower.contains(k))
}

/// Whether a chat message asks for a code review (the seed's detection: a
/// review-style keyword and some code).
pub fn can_handle(message: &str) -> bool {
    asks_for_review(message) && has_code(message)
}

fn heading(index: usize, file: &FileReport) -> String {
    if file.path.starts_with("block-") {
        format!("### Code Block {} ({})", index + 1, file.language)
    } else {
        format!("### `{}` ({})", file.path, file.language)
    }
}

pub(crate) fn render(report: &Report) -> String {
    let mut out = vec!["## Code Analysis Report".to_owned(), String::new()];
    for (index, file) in report.files.iter().enumerate() {
        out.push(heading(index, file));
        out.push(format!("- **Lines of Code**: {}", file.nloc));
        out.push(format!(
            "- **Complexity Score**: {} (max CCN, rank {}; {} function(s), average CCN {:.2})",
            file.summary.max_ccn.max(1),
            file.summary.rank,
            file.summary.function_count,
            file.summary.average_ccn
        ));
        if !file.functions.is_empty() {
            out.push(String::new());
            out.push("| Function | Lines | NLOC | CCN | Rank | Params |".to_owned());
            out.push("|---|---|---|---|---|---|".to_owned());
            for f in &file.functions {
                out.push(format!(
                    "| `{}` | {}–{} | {} | {} | {} | {} |",
                    f.qualified_name.replace('|', "\\|"),
                    f.start_line,
                    f.end_line,
                    f.nloc,
                    f.ccn,
                    f.rank,
                    f.parameter_count
                ));
            }
        }
        for (category, title) in [
            (Category::Security, "Security Issues"),
            (Category::Performance, "Performance Issues"),
            (Category::Smell, "Code Smells"),
        ] {
            let issues: Vec<_> = file
                .findings
                .iter()
                .filter(|f| f.category == category)
                .collect();
            if issues.is_empty() {
                continue;
            }
            out.push(String::new());
            out.push(format!("**{title}:**"));
            for issue in issues {
                let cwe = issue
                    .cwe
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default();
                out.push(format!(
                    "- Line {}: `{}` — {} ({}, {}{})",
                    issue.line,
                    issue.snippet.replace('`', "'"),
                    issue.message,
                    issue.rule_id,
                    issue.severity.name(),
                    cwe
                ));
            }
        }
        let mut suggestions: Vec<&str> = Vec::new();
        for finding in &file.findings {
            if !suggestions.contains(&finding.suggestion.as_str()) {
                suggestions.push(&finding.suggestion);
            }
        }
        if !suggestions.is_empty() {
            out.push(String::new());
            out.push("**Suggestions:**".to_owned());
            for s in suggestions {
                out.push(format!("- {s}"));
            }
        }
        if file.findings.is_empty() {
            out.push(String::new());
            out.push("No issues found.".to_owned());
        }
        out.push(String::new());
    }
    if report.files.len() > 1 {
        let s = &report.summary;
        out.push(format!(
            "**Summary:** {} block(s), {} function(s), {} lines of code, max CCN {} (rank {}), {} finding(s) ({} security, {} performance, {} smell).",
            s.file_count,
            s.function_count,
            s.nloc,
            s.max_ccn.max(1),
            s.rank,
            s.finding_count,
            s.findings_by_category.security,
            s.findings_by_category.performance,
            s.findings_by_category.smell
        ));
    }
    out.join("\n")
}
