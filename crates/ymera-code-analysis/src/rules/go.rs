//! Go rules.

use tree_sitter::Node;

use super::{Ctx, looks_like_sql};
use crate::syntax::{descendants, named_children};

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    match kind {
        "call_expression" => check_call(ctx, node),
        "keyed_element" => {
            let parts = named_children(node);
            if let (Some(key), Some(value)) = (parts.first(), parts.last())
                && ctx.text(*key).trim() == "InsecureSkipVerify"
                && ctx.text(*value).trim() == "true"
            {
                ctx.hit("GO004", node);
            }
        }
        "assignment_statement" => {
            let op = node.child_by_field_name("operator").map(|o| ctx.text(o));
            if op == Some("+=")
                && ctx.in_loop(node)
                && node.child_by_field_name("right").is_some_and(|r| {
                    descendants(r).iter().any(|d| {
                        matches!(
                            d.kind(),
                            "interpreted_string_literal" | "raw_string_literal"
                        )
                    })
                })
            {
                ctx.hit("PERF002", node);
            }
        }
        "import_spec"
            if node
                .child_by_field_name("name")
                .is_some_and(|n| n.kind() == "dot") =>
        {
            ctx.hit("SMELL004", node);
        }
        _ => {}
    }
}

fn string_content<'t>(ctx: &Ctx<'_, 't>, node: Node<'_>) -> Option<&'t str> {
    matches!(
        node.kind(),
        "interpreted_string_literal" | "raw_string_literal"
    )
    .then(|| ctx.text(node).trim_matches(|c| c == '"' || c == '`'))
}

fn check_call(ctx: &mut Ctx<'_, '_>, call: Node<'_>) {
    let Some(function) = call.child_by_field_name("function") else {
        return;
    };
    let name = ctx.text(function);
    let args: Vec<Node<'_>> = call
        .child_by_field_name("arguments")
        .map(|a| {
            named_children(a)
                .into_iter()
                .filter(|c| c.kind() != "comment")
                .collect()
        })
        .unwrap_or_default();
    match name {
        "exec.Command" | "exec.CommandContext" => {
            let strings: Vec<&str> = args
                .iter()
                .filter_map(|a| string_content(ctx, *a))
                .collect();
            let shell = strings.iter().position(|s| {
                matches!(
                    *s,
                    "sh" | "bash" | "/bin/sh" | "/bin/bash" | "zsh" | "cmd" | "cmd.exe"
                )
            });
            if shell.is_some_and(|i| {
                strings
                    .get(i + 1)
                    .is_some_and(|f| *f == "-c" || f.eq_ignore_ascii_case("/c"))
            }) {
                ctx.hit("GO001", call);
            }
        }
        "fmt.Sprintf"
            if args
                .first()
                .and_then(|a| string_content(ctx, *a))
                .is_some_and(looks_like_sql) =>
        {
            ctx.hit("GO002", call);
        }
        "md5.New" | "md5.Sum" | "sha1.New" | "sha1.Sum" => {
            ctx.hit_msg("GO003", call, format!("Use of weak hash {name}."))
        }
        "regexp.MustCompile"
        | "regexp.Compile"
        | "regexp.MustCompilePOSIX"
        | "regexp.CompilePOSIX"
            if ctx.in_loop(call) =>
        {
            ctx.hit("PERF003", call)
        }
        _ => {}
    }
}
