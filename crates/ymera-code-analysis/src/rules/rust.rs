//! Rust rules.

use tree_sitter::Node;

use super::Ctx;
use crate::syntax::{children, descendants};

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    match kind {
        "unsafe_block" => ctx.hit("RS001", node),
        "call_expression" => check_call(ctx, node),
        "use_declaration" => {
            let wildcard = descendants(node).iter().any(|d| d.kind() == "use_wildcard");
            let text = ctx.text(node);
            if wildcard
                && !text.contains("super::*")
                && !text.contains("prelude::*")
                && !in_test_context(ctx, node)
            {
                ctx.hit("SMELL004", node);
            }
        }
        _ => {}
    }
}

fn check_call(ctx: &mut Ctx<'_, '_>, call: Node<'_>) {
    let Some(function) = call.child_by_field_name("function") else {
        return;
    };
    if function.kind() == "field_expression" {
        if let Some(field) = function.child_by_field_name("field") {
            let method = ctx.text(field);
            if (method == "unwrap" || method == "expect") && !in_test_context(ctx, call) {
                ctx.hit_msg(
                    "RS003",
                    field,
                    format!(".{method}() panics on error outside tests."),
                );
            }
        }
        return;
    }
    let name: String = ctx
        .text(function)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if name.ends_with("Command::new") && is_shell_command(ctx, call) {
        ctx.hit("RS002", call);
    }
    if (name == "Regex::new" || name.ends_with("regex::Regex::new")) && ctx.in_loop(call) {
        ctx.hit("PERF003", call);
    }
    if matches!(name.as_str(), "std::thread::sleep" | "thread::sleep") && in_async(ctx, call) {
        ctx.hit("PERF004", call);
    }
}

fn string_content<'t>(ctx: &Ctx<'_, 't>, node: Node<'_>) -> Option<&'t str> {
    matches!(node.kind(), "string_literal" | "raw_string_literal").then(|| {
        ctx.text(node)
            .trim_matches(|c| c == '"' || c == 'r' || c == '#')
    })
}

/// `Command::new("sh")` whose builder chain passes `"-c"`.
fn is_shell_command(ctx: &Ctx<'_, '_>, call: Node<'_>) -> bool {
    let program = call
        .child_by_field_name("arguments")
        .and_then(|a| {
            descendants(a)
                .into_iter()
                .find(|d| d.kind() == "string_literal")
        })
        .and_then(|s| string_content(ctx, s));
    if !program.is_some_and(|p| {
        matches!(
            p,
            "sh" | "bash" | "/bin/sh" | "/bin/bash" | "zsh" | "cmd" | "cmd.exe"
        )
    }) {
        return false;
    }
    let mut top = call;
    while let Some(parent) = ctx.syntax.parent(top) {
        if matches!(
            parent.kind(),
            "call_expression" | "field_expression" | "arguments"
        ) {
            top = parent;
        } else {
            break;
        }
    }
    descendants(top)
        .iter()
        .any(|d| string_content(ctx, *d).is_some_and(|s| s == "-c" || s.eq_ignore_ascii_case("/c")))
}

fn in_async(ctx: &Ctx<'_, '_>, node: Node<'_>) -> bool {
    for a in ctx.syntax.ancestors(node) {
        match a.kind() {
            "async_block" => return true,
            "function_item" => {
                return children(a).iter().any(|c| {
                    c.kind() == "function_modifiers"
                        && children(*c).iter().any(|m| m.kind() == "async")
                });
            }
            "closure_expression" => {}
            _ => {}
        }
    }
    false
}

fn has_test_attribute(ctx: &Ctx<'_, '_>, item: Node<'_>) -> bool {
    let mut sibling = item.prev_named_sibling();
    while let Some(s) = sibling {
        match s.kind() {
            "attribute_item" => {
                let text: String = ctx.text(s).chars().filter(|c| !c.is_whitespace()).collect();
                if text.contains("test") {
                    return true;
                }
            }
            "line_comment" | "block_comment" => {}
            _ => return false,
        }
        sibling = s.prev_named_sibling();
    }
    false
}

/// Inside a `#[test]` function or a `#[cfg(test)]` module.
fn in_test_context(ctx: &Ctx<'_, '_>, node: Node<'_>) -> bool {
    ctx.syntax
        .ancestors(node)
        .any(|a| matches!(a.kind(), "function_item" | "mod_item") && has_test_attribute(ctx, a))
}
