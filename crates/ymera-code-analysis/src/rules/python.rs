//! Python rules (security ids follow bandit).

use tree_sitter::Node;

use super::{Ctx, looks_like_sql, names_secret};
use crate::syntax::{ancestors, descendants, named_children};

const REQUESTS_METHODS: [&str; 8] = [
    "get", "post", "put", "patch", "delete", "head", "options", "request",
];

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    match node.kind() {
        "call" => check_call(ctx, node),
        "assignment" => check_assignment(ctx, node),
        "comparison_operator" => check_comparison(ctx, node),
        "binary_operator" | "string" => check_sql_building(ctx, node),
        "for_statement" => check_range_len(ctx, node),
        "augmented_assignment" => check_concat_in_loop(ctx, node),
        "except_clause" => check_except(ctx, node),
        "import_from_statement"
            if named_children(node)
                .iter()
                .any(|c| c.kind() == "wildcard_import") =>
        {
            ctx.hit("SMELL004", node);
        }
        _ => {}
    }
}

fn keyword_args<'t>(ctx: &Ctx<'_, 't>, call: Node<'t>) -> Vec<(&'t str, Node<'t>)> {
    let Some(args) = call.child_by_field_name("arguments") else {
        return Vec::new();
    };
    named_children(args)
        .into_iter()
        .filter(|a| a.kind() == "keyword_argument")
        .filter_map(|a| {
            Some((
                ctx.text(a.child_by_field_name("name")?),
                a.child_by_field_name("value")?,
            ))
        })
        .collect()
}

fn positional_args(call: Node<'_>) -> Vec<Node<'_>> {
    call.child_by_field_name("arguments")
        .map(|args| {
            named_children(args)
                .into_iter()
                .filter(|a| {
                    !matches!(
                        a.kind(),
                        "keyword_argument" | "comment" | "list_splat" | "dictionary_splat"
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn string_value<'t>(ctx: &Ctx<'_, 't>, node: Node<'_>) -> Option<&'t str> {
    (node.kind() == "string").then(|| {
        let text = ctx.text(node);
        text.trim_start_matches(|c: char| c.is_ascii_alphabetic())
            .trim_matches(|c| c == '"' || c == '\'')
    })
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
    let kwargs = keyword_args(ctx, call);
    let texts: Vec<(&str, &str)> = kwargs.iter().map(|(k, v)| (*k, ctx.text(*v))).collect();
    let kw = |key: &str| texts.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let last = name.rsplit('.').next().unwrap_or(&name);
    match name.as_str() {
        "exec" => ctx.hit("B102", call),
        "eval" => ctx.hit("B307", call),
        "os.system"
        | "os.popen"
        | "os.popen2"
        | "os.popen3"
        | "os.popen4"
        | "commands.getoutput"
        | "commands.getstatusoutput" => ctx.hit("B605", call),
        "pickle.load" | "pickle.loads" | "pickle.Unpickler" | "cPickle.load" | "cPickle.loads"
        | "dill.load" | "dill.loads" => ctx.hit("B301", call),
        "hashlib.md5" | "hashlib.sha1" | "hashlib.new" => {
            let weak = if name == "hashlib.new" {
                positional_args(call)
                    .first()
                    .and_then(|a| string_value(ctx, *a))
                    .is_some_and(|v| {
                        matches!(
                            v.to_ascii_lowercase().as_str(),
                            "md5" | "sha1" | "md4" | "md2"
                        )
                    })
            } else {
                true
            };
            if weak && kw("usedforsecurity") != Some("False") {
                ctx.hit_msg(
                    "B324",
                    call,
                    format!("Use of weak hash {name}() for security."),
                );
            }
        }
        "yaml.load" | "yaml.load_all" => {
            let loader = kw("Loader").map(str::to_owned).or_else(|| {
                positional_args(call)
                    .get(1)
                    .map(|a| ctx.text(*a).to_owned())
            });
            if !loader.is_some_and(|l| l.contains("SafeLoader") || l.contains("BaseLoader")) {
                ctx.hit("B506", call);
            }
        }
        _ => {}
    }
    if name.starts_with("subprocess.") && kw("shell") == Some("True") {
        ctx.hit("B602", call);
    }
    let is_requests = name
        .strip_prefix("requests.")
        .or_else(|| name.strip_prefix("httpx."))
        .is_some_and(|m| REQUESTS_METHODS.contains(&m));
    if is_requests {
        if kw("verify") == Some("False") {
            ctx.hit("B501", call);
        }
        if kw("timeout").is_none() && name.starts_with("requests.") {
            ctx.hit("B113", call);
        }
    }
    if last == "run" && name.contains('.') && kw("debug") == Some("True") {
        ctx.hit("B201", call);
    }
    for (key, value) in &kwargs {
        if names_secret(key) && string_value(ctx, *value).is_some_and(|v| !v.is_empty()) {
            ctx.hit_msg(
                "B106",
                *value,
                format!("Possible hardcoded password passed as argument {key}."),
            );
        }
    }
    if matches!(name.as_str(), "re.compile" | "regex.compile") && ctx.in_loop(call) {
        ctx.hit("PERF003", call);
    }
    if name == "time.sleep" || name == "sleep" {
        let in_async = ctx
            .enclosing_function(call)
            .is_some_and(|f| f.child(0).is_some_and(|c| c.kind() == "async"));
        if in_async {
            ctx.hit("PERF004", call);
        }
    }
}

fn check_assignment(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let (Some(left), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    if matches!(left.kind(), "identifier" | "attribute")
        && names_secret(ctx.text(left))
        && string_value(ctx, right).is_some_and(|v| !v.is_empty())
    {
        ctx.hit_msg(
            "B105",
            right,
            format!(
                "Possible hardcoded password assigned to {}.",
                ctx.text(left)
            ),
        );
    }
    // s = s + "..." inside a loop
    if right.kind() == "binary_operator" && ctx.in_loop(node) {
        let mut first = right;
        while first.kind() == "binary_operator" {
            match first.child_by_field_name("left") {
                Some(l) => first = l,
                None => break,
            }
        }
        if ctx.text(first) == ctx.text(left) && builds_string(ctx, right) {
            ctx.hit("PERF002", node);
        }
    }
}

fn builds_string(ctx: &Ctx<'_, '_>, node: Node<'_>) -> bool {
    node.kind() == "string"
        || descendants(node).iter().any(|d| {
            d.kind() == "string"
                || (d.kind() == "call"
                    && d.child_by_field_name("function")
                        .is_some_and(|f| matches!(ctx.text(f), "str" | "repr" | "format")))
        })
}

fn check_comparison(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let operands = named_children(node);
    if operands.len() != 2 || !ctx.text(node).contains("==") {
        return;
    }
    let (a, b) = (operands[0], operands[1]);
    for (name, value) in [(a, b), (b, a)] {
        if matches!(name.kind(), "identifier" | "attribute")
            && names_secret(ctx.text(name))
            && string_value(ctx, value).is_some_and(|v| !v.is_empty())
        {
            ctx.hit_msg(
                "B105",
                value,
                format!(
                    "Possible hardcoded password compared with {}.",
                    ctx.text(name)
                ),
            );
        }
    }
}

/// B608: SQL text joined with values (+, %, .format, f-string interpolation).
fn check_sql_building(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let building = match node.kind() {
        "binary_operator" => {
            let op = node.child_by_field_name("operator").map(|o| ctx.text(o));
            matches!(op, Some("+" | "%"))
                && node.parent().is_none_or(|p| p.kind() != "binary_operator")
        }
        // f-string with interpolation
        "string" => named_children(node)
            .iter()
            .any(|c| c.kind() == "interpolation"),
        _ => false,
    };
    let format_call = node.kind() == "string"
        && node.parent().is_some_and(|p| {
            p.kind() == "attribute"
                && p.child_by_field_name("attribute")
                    .is_some_and(|a| ctx.text(a) == "format")
                && p.parent().is_some_and(|c| c.kind() == "call")
        });
    if !building && !format_call {
        return;
    }
    let strings: Vec<Node<'_>> = if node.kind() == "string" {
        vec![node]
    } else {
        descendants(node)
            .into_iter()
            .filter(|d| d.kind() == "string")
            .collect()
    };
    let sql = strings.iter().any(|s| {
        let content: String = named_children(*s)
            .iter()
            .filter(|c| c.kind() == "string_content")
            .map(|c| ctx.text(*c))
            .collect::<Vec<_>>()
            .join(" ");
        looks_like_sql(&content)
    });
    if sql
        && !ancestors(node)
            .any(|a| a.kind() == "binary_operator" && node.kind() == "string" && !format_call)
    {
        ctx.hit("B608", node);
    }
}

fn check_range_len(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let Some(right) = node.child_by_field_name("right") else {
        return;
    };
    if right.kind() != "call"
        || right
            .child_by_field_name("function")
            .is_none_or(|f| ctx.text(f) != "range")
    {
        return;
    }
    let args = positional_args(right);
    if args.len() == 1
        && args[0].kind() == "call"
        && args[0]
            .child_by_field_name("function")
            .is_some_and(|f| ctx.text(f) == "len")
    {
        ctx.hit("PERF001", right);
    }
}

fn check_concat_in_loop(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let op = node.child_by_field_name("operator").map(|o| ctx.text(o));
    if op == Some("+=")
        && ctx.in_loop(node)
        && node
            .child_by_field_name("right")
            .is_some_and(|r| builds_string(ctx, r))
    {
        ctx.hit("PERF002", node);
    }
}

fn check_except(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let children = named_children(node);
    let body = children.iter().find(|c| c.kind() == "block");
    let has_type = children
        .iter()
        .any(|c| c.kind() != "block" && c.kind() != "comment");
    if !has_type {
        ctx.hit("SMELL002", node);
    }
    if let Some(body) = body {
        let statements: Vec<Node<'_>> = named_children(*body)
            .into_iter()
            .filter(|c| c.kind() != "comment")
            .collect();
        if !statements.is_empty()
            && statements
                .iter()
                .all(|s| matches!(s.kind(), "pass_statement"))
        {
            ctx.hit("SMELL003", node);
        }
    }
}
