//! Rules shared by every language: TODO comments, empty functions, nesting,
//! and the metric thresholds (parameters, NLOC, CCN).

use tree_sitter::Node;

use super::Ctx;
use crate::language::Language;
use crate::metrics::{FileMetrics, is_function_kind};
use crate::syntax::{Syntax, named_children};
use crate::tokens::is_comment_kind;

const MAX_PARAMETERS: usize = 5;
const MAX_NLOC: usize = 60;
const MAX_CCN: usize = 10;
const MAX_NESTING: usize = 4;

pub(super) fn check_node(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    if is_comment_kind(kind) {
        let text = ctx.text(node);
        if has_word(text, "TODO") || has_word(text, "FIXME") {
            ctx.hit("SMELL009", node);
        }
        return;
    }
    if is_function_kind(ctx.language, kind) && is_empty_function(ctx, node) {
        ctx.hit("SMELL001", node.child_by_field_name("name").unwrap_or(node));
    }
    if is_control_kind(ctx.language, kind)
        && !is_else_if(ctx.syntax, node)
        && nesting_depth(ctx.language, ctx.syntax, node) == MAX_NESTING + 1
    {
        ctx.hit_msg(
            "SMELL008",
            node,
            format!(
                "Control flow nested {} levels deep (more than {MAX_NESTING}).",
                MAX_NESTING + 1
            ),
        );
    }
}

pub(super) fn check_functions(ctx: &mut Ctx<'_, '_>, metrics: &FileMetrics<'_>) {
    for (site, f) in metrics.sites.iter().zip(&metrics.functions) {
        let at = site.node.child_by_field_name("name").unwrap_or(site.node);
        if f.parameter_count > MAX_PARAMETERS {
            ctx.hit_msg(
                "SMELL005",
                at,
                format!(
                    "`{}` has {} parameters (more than {MAX_PARAMETERS}).",
                    f.qualified_name, f.parameter_count
                ),
            );
        }
        if f.nloc > MAX_NLOC {
            ctx.hit_msg(
                "SMELL006",
                at,
                format!(
                    "`{}` has {} lines of code (more than {MAX_NLOC}).",
                    f.qualified_name, f.nloc
                ),
            );
        }
        if f.ccn > MAX_CCN {
            ctx.hit_msg(
                "SMELL007",
                at,
                format!(
                    "`{}` has cyclomatic complexity {} (rank {}; more than {MAX_CCN}).",
                    f.qualified_name, f.ccn, f.rank
                ),
            );
        }
    }
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text.get(..at).and_then(|s| s.chars().next_back());
        let after = text.get(at + word.len()..).and_then(|s| s.chars().next());
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

fn is_empty_function(ctx: &Ctx<'_, '_>, node: Node<'_>) -> bool {
    let Some(body) = node.child_by_field_name("body") else {
        return false;
    };
    let statements: Vec<Node<'_>> = named_children(body)
        .into_iter()
        .filter(|c| !is_comment_kind(c.kind()))
        .collect();
    match ctx.language {
        Language::Python => {
            !statements.is_empty()
                && statements.iter().any(|s| s.kind() == "pass_statement")
                && statements.iter().all(|s| {
                    s.kind() == "pass_statement"
                        || (s.kind() == "expression_statement"
                            && named_children(*s).iter().all(|e| e.kind() == "string"))
                })
        }
        Language::JavaScript => {
            matches!(
                node.kind(),
                "function_declaration" | "method_definition" | "generator_function_declaration"
            ) && body.kind() == "statement_block"
                && statements.is_empty()
                && node
                    .child_by_field_name("name")
                    .is_none_or(|n| ctx.text(n) != "constructor")
        }
        Language::Java => {
            node.kind() == "method_declaration" && body.kind() == "block" && statements.is_empty()
        }
        Language::Go => node.kind() != "func_literal" && statements.is_empty(),
        Language::Rust => statements.is_empty(),
    }
}

fn is_control_kind(language: Language, kind: &str) -> bool {
    match language {
        Language::Python => {
            matches!(
                kind,
                "if_statement"
                    | "for_statement"
                    | "while_statement"
                    | "try_statement"
                    | "with_statement"
                    | "match_statement"
            )
        }
        Language::JavaScript => matches!(
            kind,
            "if_statement"
                | "for_statement"
                | "for_in_statement"
                | "while_statement"
                | "do_statement"
                | "try_statement"
                | "switch_statement"
        ),
        Language::Java => matches!(
            kind,
            "if_statement"
                | "for_statement"
                | "enhanced_for_statement"
                | "while_statement"
                | "do_statement"
                | "try_statement"
                | "try_with_resources_statement"
                | "switch_expression"
        ),
        Language::Go => matches!(
            kind,
            "if_statement"
                | "for_statement"
                | "expression_switch_statement"
                | "type_switch_statement"
                | "select_statement"
        ),
        Language::Rust => {
            matches!(
                kind,
                "if_expression"
                    | "for_expression"
                    | "while_expression"
                    | "loop_expression"
                    | "match_expression"
            )
        }
    }
}

fn is_if_kind(kind: &str) -> bool {
    matches!(kind, "if_statement" | "if_expression")
}

/// `else if` continues a chain; it does not nest.
fn is_else_if(syntax: &Syntax<'_>, node: Node<'_>) -> bool {
    is_if_kind(node.kind())
        && syntax
            .parent(node)
            .is_some_and(|p| p.kind() == "else_clause" || is_if_kind(p.kind()))
}

fn nesting_depth(language: Language, syntax: &Syntax<'_>, node: Node<'_>) -> usize {
    let mut depth = 1;
    for a in syntax.ancestors(node) {
        if is_function_kind(language, a.kind()) {
            break;
        }
        if is_control_kind(language, a.kind()) && !is_else_if(syntax, a) {
            depth += 1;
        }
    }
    depth
}
