//! The analysis report (DESIGN §4 field names) and its JSON and Markdown forms.

use serde::{Deserialize, Serialize};

use crate::language::Language;

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Security,
    Performance,
    Smell,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Security => "security",
            Category::Performance => "performance",
            Category::Smell => "smell",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// How sure the rule is that the finding is real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// Metrics of one function (lizard 1.24.3 definitions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionMetrics {
    pub name: String,
    pub qualified_name: String,
    pub start_line: usize,
    pub end_line: usize,
    pub nloc: usize,
    pub ccn: usize,
    pub token_count: usize,
    pub parameter_count: usize,
    /// `end_line - start_line + 1`.
    pub length: usize,
    /// Radon's CC rank of `ccn` (A–F).
    pub rank: char,
}

/// One rule match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: String,
    pub category: Category,
    pub severity: Severity,
    pub confidence: Confidence,
    /// `CWE-<n>` where one applies.
    pub cwe: Option<String>,
    pub message: String,
    pub suggestion: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column in UTF-16 code units (SARIF's default column kind).
    pub column: usize,
    pub end_line: usize,
    /// The trimmed source line, for humans.
    pub snippet: String,
}

/// Totals of one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileSummary {
    pub function_count: usize,
    pub total_ccn: usize,
    pub max_ccn: usize,
    pub average_ccn: f64,
    pub average_nloc: f64,
    pub average_token_count: f64,
    pub finding_count: usize,
    pub rank: char,
}

/// The analysis of one file (or one Markdown code block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    pub path: String,
    pub language: Language,
    /// Lines with code in the whole file (lizard's file NLOC).
    pub nloc: usize,
    pub token_count: usize,
    pub functions: Vec<FunctionMetrics>,
    pub findings: Vec<Finding>,
    pub summary: FileSummary,
}

/// Finding counts per category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCounts {
    pub security: usize,
    pub performance: usize,
    pub smell: usize,
}

/// Finding counts per severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub low: usize,
    pub medium: usize,
    pub high: usize,
    pub critical: usize,
}

/// Totals over the whole request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub file_count: usize,
    pub function_count: usize,
    pub nloc: usize,
    pub total_ccn: usize,
    pub max_ccn: usize,
    pub average_ccn: f64,
    pub average_nloc: f64,
    pub rank: char,
    pub finding_count: usize,
    pub findings_by_category: CategoryCounts,
    pub findings_by_severity: SeverityCounts,
}

/// The result of one analysis request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub summary: Summary,
}

/// Radon's cyclomatic-complexity rank: A 1–5, B 6–10, C 11–20, D 21–30, E 31–40, F 41+.
pub fn rank(ccn: usize) -> char {
    match ccn {
        0..=5 => 'A',
        6..=10 => 'B',
        11..=20 => 'C',
        21..=30 => 'D',
        31..=40 => 'E',
        _ => 'F',
    }
}

fn average(total: usize, count: usize) -> f64 {
    if count == 0 {
        0.0
    } else {
        // Rounded to two decimals so reports are stable and readable.
        ((total as f64 / count as f64) * 100.0).round() / 100.0
    }
}

impl FileSummary {
    pub(crate) fn of(nloc_functions: &[FunctionMetrics], finding_count: usize) -> FileSummary {
        let n = nloc_functions.len();
        let total_ccn = nloc_functions.iter().map(|f| f.ccn).sum();
        let max_ccn = nloc_functions.iter().map(|f| f.ccn).max().unwrap_or(0);
        FileSummary {
            function_count: n,
            total_ccn,
            max_ccn,
            average_ccn: average(total_ccn, n),
            average_nloc: average(nloc_functions.iter().map(|f| f.nloc).sum(), n),
            average_token_count: average(nloc_functions.iter().map(|f| f.token_count).sum(), n),
            finding_count,
            rank: rank(max_ccn.max(1)),
        }
    }
}

impl Report {
    /// Builds a report with its request-wide summary.
    pub fn new(files: Vec<FileReport>) -> Report {
        let functions: Vec<&FunctionMetrics> = files.iter().flat_map(|f| &f.functions).collect();
        let findings: Vec<&Finding> = files.iter().flat_map(|f| &f.findings).collect();
        let total_ccn = functions.iter().map(|f| f.ccn).sum();
        let max_ccn = functions.iter().map(|f| f.ccn).max().unwrap_or(0);
        let mut by_category = CategoryCounts::default();
        let mut by_severity = SeverityCounts::default();
        for finding in &findings {
            match finding.category {
                Category::Security => by_category.security += 1,
                Category::Performance => by_category.performance += 1,
                Category::Smell => by_category.smell += 1,
            }
            match finding.severity {
                Severity::Low => by_severity.low += 1,
                Severity::Medium => by_severity.medium += 1,
                Severity::High => by_severity.high += 1,
                Severity::Critical => by_severity.critical += 1,
            }
        }
        let summary = Summary {
            file_count: files.len(),
            function_count: functions.len(),
            nloc: files.iter().map(|f| f.nloc).sum(),
            total_ccn,
            max_ccn,
            average_ccn: average(total_ccn, functions.len()),
            average_nloc: average(functions.iter().map(|f| f.nloc).sum(), functions.len()),
            rank: rank(max_ccn.max(1)),
            finding_count: findings.len(),
            findings_by_category: by_category,
            findings_by_severity: by_severity,
        };
        Report { files, summary }
    }

    /// The JSON wire form (DESIGN §4).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The seed's "Code Analysis Report" Markdown.
    pub fn to_markdown(&self) -> String {
        crate::markdown::render(self)
    }

    /// SARIF 2.1.0 log.
    pub fn to_sarif(&self) -> serde_json::Value {
        crate::sarif::render(self)
    }

    /// SARIF 2.1.0 log, as its typed document.
    pub fn sarif_log(&self) -> serde_sarif::sarif::Sarif {
        crate::sarif::log(self)
    }
}
