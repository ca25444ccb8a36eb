//! JavaScript rules.

use tree_sitter::Node;

use super::{Ctx, names_secret};
use crate::syntax::{descendants, named_children};

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    match kind {
        "call_expression" => check_call(ctx, node),
        "new_expression" => check_new(ctx, node),
        "assignment_expression" | "augmented_assignment_expression" => check_assignment(ctx, node),
        "variable_declarator" => {
            if let (Some(name), Some(value)) = (
                node.child_by_field_name("name"),
                node.child_by_field_name("value"),
            ) {
                secret(ctx, name, value);
            }
        }
        "pair" => {
            if let (Some(key), Some(value)) = (
                node.child_by_field_name("key"),
                node.child_by_field_name("value"),
            ) {
                secret(ctx, key, value);
            }
        }
        "catch_clause" => {
            if let Some(body) = node.child_by_field_name("body")
                && named_children(body).iter().all(|c| c.kind() == "comment")
            {
                ctx.hit("SMELL003", node);
            }
        }
        _ => {}
    }
}

fn is_string(node: Node<'_>) -> bool {
    matches!(node.kind(), "string" | "template_string")
}

fn secret(ctx: &mut Ctx<'_, '_>, name: Node<'_>, value: Node<'_>) {
    let key = ctx.text(name).trim_matches(|c| c == '"' || c == '\'');
    if names_secret(key) && is_string(value) && ctx.text(value).len() > 2 {
        ctx.hit_msg(
            "JS005",
            value,
            format!("Possible hardcoded credential in {key}."),
        );
    }
}

fn first_argument(call: Node<'_>) -> Option<Node<'_>> {
    call.child_by_field_name("arguments").and_then(|a| {
        named_children(a)
            .into_iter()
            .find(|c| c.kind() != "comment")
    })
}

fn is_dynamic_string(node: Node<'_>) -> bool {
    match node.kind() {
        "binary_expression" => true,
        "template_string" => named_children(node)
            .iter()
            .any(|c| c.kind() == "template_substitution"),
        _ => false,
    }
}

fn check_call(ctx: &mut Ctx<'_, '_>, call: Node<'_>) {
    let Some(function) = call.child_by_field_name("function") else {
        return;
    };
    let name: String = ctx
        .text(function)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    match name.as_str() {
        "eval" | "window.eval" | "globalThis.eval" => ctx.hit("JS001", call),
        "Function" => ctx.hit("JS002", call),
        "document.write" | "document.writeln" => ctx.hit("JS003", call),
        _ => {}
    }
    let last = name.rsplit('.').next().unwrap_or(&name);
    if matches!(last, "exec" | "execSync")
        && (name == "exec"
            || name == "execSync"
            || name.contains("child_process")
            || name.starts_with("cp.")
            || name.starts_with("childProcess."))
        && first_argument(call).is_some_and(is_dynamic_string)
    {
        ctx.hit("JS004", call);
    }
    if name == "RegExp" && ctx.in_loop(call) {
        ctx.hit("PERF003", call);
    }
}

fn check_new(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let Some(constructor) = node.child_by_field_name("constructor") else {
        return;
    };
    match ctx.text(constructor) {
        "Function" => ctx.hit("JS002", node),
        "RegExp" if ctx.in_loop(node) => ctx.hit("PERF003", node),
        _ => {}
    }
}

fn check_assignment(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let (Some(left), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    if left.kind() == "member_expression"
        && let Some(property) = left.child_by_field_name("property")
    {
        let prop = ctx.text(property);
        if prop == "innerHTML" || prop == "outerHTML" {
            ctx.hit_msg(
                "JS003",
                node,
                format!("Assignment to {prop} is open to cross-site scripting."),
            );
        }
        if node.kind() == "assignment_expression" {
            secret(ctx, property, right);
        }
    } else if node.kind() == "assignment_expression" {
        secret(ctx, left, right);
    }
    let op = node.child_by_field_name("operator").map(|o| ctx.text(o));
    if node.kind() == "augmented_assignment_expression" && op == Some("+=") && ctx.in_loop(node) {
        let stringy = is_string(right) || descendants(right).iter().any(|d| is_string(*d));
        if stringy {
            ctx.hit("PERF002", node);
        }
    }
}
