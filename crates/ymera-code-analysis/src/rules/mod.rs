//! Rules on the syntax tree. Each language module looks at node kinds and
//! fields, never at raw lines, so text inside strings and comments cannot
//! match (except the TODO rule, which is about comments).

mod catalogue;
mod common;
mod go;
mod java;
mod javascript;
mod nosec;
mod python;
mod rust;

use std::collections::{BTreeMap, BTreeSet};

use tree_sitter::Node;

pub use catalogue::{RuleInfo, rules};

use crate::language::Language;
use crate::metrics::FileMetrics;
use crate::report::Finding;
use crate::syntax::Syntax;
use crate::tokens::is_comment_kind;

/// One raw rule match before it becomes a [`Finding`].
struct Hit {
    rule: &'static str,
    start_byte: usize,
    row: usize,
    column_byte: usize,
    end_row: usize,
    message: Option<String>,
}

/// What a rule sees: the language, the tree, and where to put matches.
pub(crate) struct Ctx<'a, 't> {
    pub language: Language,
    pub syntax: &'a Syntax<'t>,
    /// Python: import aliases (local name → qualified name, bandit's
    /// `import_aliases`) and the modules imported; empty for other languages.
    pub imports: python::Imports,
    hits: Vec<Hit>,
}

impl<'t> Ctx<'_, 't> {
    pub fn text(&self, node: Node<'_>) -> &'t str {
        self.syntax.text(node)
    }

    pub fn hit(&mut self, rule: &'static str, node: Node<'_>) {
        self.push(rule, node, None);
    }

    pub fn hit_msg(&mut self, rule: &'static str, node: Node<'_>, message: String) {
        self.push(rule, node, Some(message));
    }

    fn push(&mut self, rule: &'static str, node: Node<'_>, message: Option<String>) {
        self.hits.push(Hit {
            rule,
            start_byte: node.start_byte(),
            row: node.start_position().row,
            column_byte: node.start_position().column,
            end_row: node.end_position().row,
            message,
        });
    }

    /// Is `node` inside a loop of its own function?
    pub fn in_loop(&self, node: Node<'_>) -> bool {
        for a in self.syntax.ancestors(node) {
            if crate::metrics::is_function_kind(self.language, a.kind()) {
                return false;
            }
            if is_loop_kind(self.language, a.kind()) {
                return true;
            }
        }
        false
    }

    /// The innermost function around `node`.
    pub fn enclosing_function(&self, node: Node<'t>) -> Option<Node<'t>> {
        self.syntax
            .ancestors(node)
            .find(|a| crate::metrics::is_function_kind(self.language, a.kind()))
    }
}

pub(crate) fn is_loop_kind(language: Language, kind: &str) -> bool {
    match language {
        Language::Python => matches!(kind, "for_statement" | "while_statement"),
        Language::JavaScript => matches!(
            kind,
            "for_statement" | "for_in_statement" | "while_statement" | "do_statement"
        ),
        Language::Java => matches!(
            kind,
            "for_statement" | "enhanced_for_statement" | "while_statement" | "do_statement"
        ),
        Language::Go => kind == "for_statement",
        Language::Rust => matches!(
            kind,
            "for_expression" | "while_expression" | "loop_expression"
        ),
    }
}

/// Lowercased identifier that names a password or secret.
pub(crate) fn names_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let last = lower.rsplit(['.', '-']).next().unwrap_or(&lower);
    [
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "private_key",
        "access_key",
    ]
    .iter()
    .any(|k| last.contains(k))
        || last == "pass"
}

/// Whether a string's content reads like an SQL statement.
pub(crate) fn looks_like_sql(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '*')
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let first = words.first().copied().unwrap_or("");
    (matches!(first, "select" | "with") && has("from"))
        || (first == "insert" && has("into"))
        || (first == "update" && has("set"))
        || (first == "delete" && has("from"))
        || (has("select") && has("from") && has("where"))
}

/// Rule ids suppressed per 0-based line by `ymera: ignore[ID, …]` comments
/// (Python's `# nosec` is read by `nosec`).
fn suppressions(syntax: &Syntax<'_>) -> BTreeMap<usize, BTreeSet<String>> {
    let mut map: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if !is_comment_kind(kind) {
            continue;
        }
        let text = syntax.text(*node);
        let mut rest = text;
        while let Some(at) = rest.find("ymera: ignore[") {
            let after = rest.get(at + "ymera: ignore[".len()..).unwrap_or("");
            let Some(close) = after.find(']') else { break };
            let ids = after.get(..close).unwrap_or("");
            let row = node.start_position().row;
            map.entry(row).or_default().extend(
                ids.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
            );
            rest = after.get(close..).unwrap_or("");
        }
    }
    map
}

fn utf16_column(source: &str, line_start: usize, byte: usize) -> usize {
    source
        .get(line_start..byte)
        .map_or(byte.saturating_sub(line_start), |s| {
            s.encode_utf16().count()
        })
        + 1
}

/// Runs every rule of the language over a parsed file.
pub(crate) fn check(
    language: Language,
    syntax: &Syntax<'_>,
    metrics: &FileMetrics<'_>,
) -> Vec<Finding> {
    let imports = if language == Language::Python {
        python::imports(syntax)
    } else {
        python::Imports::default()
    };
    let mut ctx = Ctx {
        language,
        syntax,
        imports,
        hits: Vec::new(),
    };
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        match language {
            Language::Python => python::check(&mut ctx, *node, kind),
            Language::JavaScript => javascript::check(&mut ctx, *node, kind),
            Language::Java => java::check(&mut ctx, *node, kind),
            Language::Go => go::check(&mut ctx, *node, kind),
            Language::Rust => rust::check(&mut ctx, *node, kind),
        }
        common::check_node(&mut ctx, *node, kind);
    }
    common::check_functions(&mut ctx, metrics);
    let ignored = suppressions(syntax);
    let nosec = if language == Language::Python {
        nosec::lines(syntax)
    } else {
        BTreeMap::new()
    };
    let source = syntax.source;
    let lines: Vec<&str> = source.lines().collect();
    let mut seen = BTreeSet::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut hits = std::mem::take(&mut ctx.hits);
    hits.sort_by_key(|h| (h.row, h.column_byte, h.rule));
    for hit in hits {
        if !seen.insert((hit.rule, hit.start_byte)) {
            continue;
        }
        if ignored
            .get(&hit.row)
            .is_some_and(|ids| ids.contains(hit.rule) || ids.contains("*"))
        {
            continue;
        }
        if nosec::suppresses(&nosec, hit.rule, hit.row, hit.end_row) {
            continue;
        }
        let Some(info) = catalogue::rule(hit.rule) else {
            continue;
        };
        let line_start = hit.start_byte.saturating_sub(hit.column_byte);
        findings.push(Finding {
            rule_id: info.id.to_owned(),
            category: info.category,
            severity: info.severity,
            confidence: info.confidence,
            cwe: info.cwe.map(str::to_owned),
            message: hit.message.unwrap_or_else(|| info.description.to_owned()),
            suggestion: info.suggestion.to_owned(),
            line: hit.row + 1,
            column: utf16_column(source, line_start, hit.start_byte),
            end_line: hit.end_row + 1,
            snippet: lines
                .get(hit.row)
                .map(|l| l.trim().chars().take(200).collect())
                .unwrap_or_default(),
        });
    }
    findings
}
