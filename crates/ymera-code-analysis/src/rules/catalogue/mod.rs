//! The rule catalogue: every rule's stable id and metadata (the tables
//! are in `python.rs` and `others.rs`).

use serde::Serialize;

use crate::language::Language;
use crate::report::{Category, Confidence, Severity};

/// A rule's metadata, as served by `code-analysis.rules`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub languages: &'static [Language],
    pub category: Category,
    pub severity: Severity,
    pub confidence: Confidence,
    pub cwe: Option<&'static str>,
    pub description: &'static str,
    pub suggestion: &'static str,
}

use Category::{Performance as P, Security as S, Smell as M};
use Confidence::{High as CH, Low as CL, Medium as CM};
use Language::{Go as GO, Java as JAVA, JavaScript as JS, Python as PY, Rust as RS};
use Severity::{High as H, Low as L, Medium as MED};

const ALL: &[Language] = &[PY, JS, JAVA, GO, RS];

macro_rules! rule {
    ($id:literal, $name:literal, $langs:expr, $cat:expr, $sev:expr, $conf:expr, $cwe:expr, $desc:literal, $sugg:literal) => {
        RuleInfo {
            id: $id,
            name: $name,
            languages: $langs,
            category: $cat,
            severity: $sev,
            confidence: $conf,
            cwe: $cwe,
            description: $desc,
            suggestion: $sugg,
        }
    };
}

mod others;
mod python;

/// Every rule, Python's first (the order `code-analysis.rules` lists them in).
static RULES: std::sync::LazyLock<Vec<RuleInfo>> =
    std::sync::LazyLock::new(|| [python::PYTHON, others::OTHERS].concat());

/// The rule catalogue (for the `code-analysis.rules` endpoint).
pub fn rules() -> &'static [RuleInfo] {
    &RULES
}

pub(crate) fn rule(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}
