//! Java rules.

use tree_sitter::Node;

use super::Ctx;
use crate::syntax::{descendants, named_children};

const QUERY_METHODS: [&str; 9] = [
    "execute",
    "executeQuery",
    "executeUpdate",
    "executeLargeUpdate",
    "addBatch",
    "prepareStatement",
    "prepareCall",
    "createQuery",
    "createNativeQuery",
];

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    match kind {
        "method_invocation" => check_invocation(ctx, node),
        "object_creation_expression" => {
            if let Some(ty) = node.child_by_field_name("type") {
                let name = ctx.text(ty);
                if name == "ObjectInputStream" || name.ends_with(".ObjectInputStream") {
                    ctx.hit("JAVA004", node);
                }
            }
        }
        "assignment_expression" => {
            let op = node.child_by_field_name("operator").map(|o| ctx.text(o));
            if op == Some("+=")
                && ctx.in_loop(node)
                && node.child_by_field_name("right").is_some_and(|r| {
                    r.kind() == "string_literal"
                        || descendants(r).iter().any(|d| d.kind() == "string_literal")
                })
            {
                ctx.hit("PERF002", node);
            }
        }
        "catch_clause" => {
            if let Some(body) = node.child_by_field_name("body")
                && named_children(body)
                    .iter()
                    .all(|c| matches!(c.kind(), "line_comment" | "block_comment"))
            {
                ctx.hit("SMELL003", node);
            }
        }
        "import_declaration" if named_children(node).iter().any(|c| c.kind() == "asterisk") => {
            ctx.hit("SMELL004", node);
        }
        _ => {}
    }
}

fn arguments(node: Node<'_>) -> Vec<Node<'_>> {
    node.child_by_field_name("arguments")
        .map(|a| {
            named_children(a)
                .into_iter()
                .filter(|c| !c.kind().ends_with("comment"))
                .collect()
        })
        .unwrap_or_default()
}

fn check_invocation(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let Some(name) = node.child_by_field_name("name").map(|n| ctx.text(n)) else {
        return;
    };
    let object: String = node
        .child_by_field_name("object")
        .map(|o| ctx.text(o))
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let args = arguments(node);
    if name == "exec"
        && (object.ends_with("Runtime.getRuntime()") || object.ends_with("getRuntime()"))
    {
        ctx.hit("JAVA001", node);
    }
    if QUERY_METHODS.contains(&name)
        && args.first().is_some_and(|a| {
            a.kind() == "binary_expression"
                && descendants(*a).iter().any(|d| d.kind() == "string_literal")
        })
    {
        ctx.hit("JAVA002", node);
    }
    if name == "getInstance" && object.ends_with("MessageDigest") {
        let algorithm = args
            .first()
            .map(|a| ctx.text(*a).trim_matches('"').to_ascii_uppercase());
        if algorithm
            .is_some_and(|a| matches!(a.as_str(), "MD5" | "MD2" | "MD4" | "SHA-1" | "SHA1" | "SHA"))
        {
            ctx.hit("JAVA003", node);
        }
    }
    if name == "compile" && object.ends_with("Pattern") && ctx.in_loop(node) {
        ctx.hit("PERF003", node);
    }
}
