//! Python rules (security ids follow bandit).

use tree_sitter::Node;

use std::collections::{BTreeMap, BTreeSet};

use super::{Ctx, looks_like_sql, names_secret};
use crate::syntax::{Syntax, descendants, named_children};

mod tables;

use tables::*;

pub(super) fn check(ctx: &mut Ctx<'_, '_>, node: Node<'_>, kind: &str) {
    match kind {
        "call" => check_call(ctx, node),
        "assignment" => check_assignment(ctx, node),
        "comparison_operator" => check_comparison(ctx, node),
        "binary_operator" => check_sql_building(ctx, node),
        "string" => {
            check_sql_building(ctx, node);
            check_string(ctx, node);
        }
        "import_statement" | "import_from_statement" => {
            check_import(ctx, node);
            if named_children(node)
                .iter()
                .any(|c| c.kind() == "wildcard_import")
            {
                ctx.hit("SMELL004", node);
            }
        }
        "for_statement" => check_range_len(ctx, node),
        "augmented_assignment" => check_concat_in_loop(ctx, node),
        "except_clause" => check_except(ctx, node),
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

/// Python imports of one file, as bandit sees them.
#[derive(Debug, Default)]
pub(crate) struct Imports {
    /// Local name → qualified name (`import a.b as c` → c: a.b;
    /// `from a import b as c` → c: a.b; `from a import b` → b: a.b).
    aliases: BTreeMap<String, String>,
    /// Modules named by an import statement (`import a.b` → a.b, `from a import b` → a).
    modules: BTreeSet<String>,
}

/// Collects the file's imports (bandit's `import_aliases`; a relative
/// `from .m import x` counts as `m.x`, as bandit reads it).
pub(crate) fn imports(syntax: &Syntax<'_>) -> Imports {
    let mut out = Imports::default();
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        match kind {
            "import_statement" => {
                for name in named_children(*node) {
                    if name.kind() == "aliased_import" {
                        if let (Some(n), Some(a)) = (
                            name.child_by_field_name("name"),
                            name.child_by_field_name("alias"),
                        ) {
                            out.modules.insert(syntax.text(n).to_owned());
                            out.aliases
                                .insert(syntax.text(a).to_owned(), syntax.text(n).to_owned());
                        }
                    } else if name.kind() == "dotted_name" {
                        out.modules.insert(syntax.text(name).to_owned());
                    }
                }
            }
            "import_from_statement" => {
                let Some(module) = node.child_by_field_name("module_name") else {
                    continue;
                };
                let module = syntax.text(module).trim_start_matches('.').to_owned();
                if module.is_empty() {
                    continue;
                }
                out.modules.insert(module.clone());
                let mut cursor = node.walk();
                for name in node.children_by_field_name("name", &mut cursor) {
                    let (imported, local) = if name.kind() == "aliased_import" {
                        match (
                            name.child_by_field_name("name"),
                            name.child_by_field_name("alias"),
                        ) {
                            (Some(n), Some(a)) => (syntax.text(n), syntax.text(a)),
                            _ => continue,
                        }
                    } else {
                        (syntax.text(name), syntax.text(name))
                    };
                    out.aliases
                        .insert(local.to_owned(), format!("{module}.{imported}"));
                }
            }
            _ => {}
        }
    }
    out
}

/// The qualified name of a dotted call target (bandit's
/// `call_function_name_qual`): the first name and every longer prefix are
/// looked up in the aliases. Anything not a plain dotted name is returned as is.
fn qualify(imports: &Imports, name: &str) -> String {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    {
        return name.to_owned();
    }
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    let mut qualified = imports
        .aliases
        .get(first)
        .cloned()
        .unwrap_or_else(|| first.to_owned());
    for part in parts {
        qualified.push('.');
        qualified.push_str(part);
        if let Some(alias) = imports.aliases.get(&qualified) {
            qualified = alias.clone();
        }
    }
    qualified
}

/// bandit's `full_path_match` (`^(?:[A-Za-z](?=\:)|[\\\/\.])`): `/…`,
/// `\\…`, `.…` or a drive letter `C:…`.
fn is_absolute_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    match bytes.first() {
        None => false,
        Some(b'/' | b'\\' | b'.') => true,
        Some(c) => c.is_ascii_alphabetic() && bytes.get(1) == Some(&b':'),
    }
}

/// Is a `shell=` value true the way bandit's `has_shell` reads it (anything
/// but a false literal, None, an empty literal)?
fn shell_is_true(ctx: &Ctx<'_, '_>, value: Node<'_>) -> bool {
    match value.kind() {
        "false" | "none" => false,
        "integer" | "float" => {
            let text: String = ctx.text(value).chars().filter(|c| *c != '_').collect();
            text.trim_start_matches(['0', '.', 'x', 'X', 'o', 'O', 'b', 'B'])
                .chars()
                .any(|c| c.is_ascii_alphanumeric() && c != '0' && c != 'e' && c != 'E')
        }
        "list" | "dictionary" | "tuple" => {
            named_children(value).iter().any(|c| c.kind() != "comment")
        }
        "string" => string_value(ctx, value).is_some_and(|v| !v.is_empty()),
        _ => true,
    }
}

/// A literal constant (bandit's `ast.Constant`): strings without
/// interpolation, numbers, True/False/None.
fn is_constant(node: Node<'_>) -> bool {
    match node.kind() {
        "string" => !named_children(node)
            .iter()
            .any(|c| c.kind() == "interpolation"),
        "concatenated_string" => named_children(node).iter().all(|c| is_constant(*c)),
        "integer" | "float" | "true" | "false" | "none" => true,
        _ => false,
    }
}

/// An integer literal's value (0o777, 0x1ff, 511, 0b1, with underscores).
fn integer_value(ctx: &Ctx<'_, '_>, node: Node<'_>) -> Option<u64> {
    if node.kind() != "integer" {
        return None;
    }
    let text: String = ctx
        .text(node)
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = text.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = text.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = text.strip_prefix("0b") {
        (d, 2)
    } else {
        (text.as_str(), 10)
    };
    u64::from_str_radix(digits, radix).ok()
}

fn check_call(ctx: &mut Ctx<'_, '_>, call: Node<'_>) {
    let Some(function) = call.child_by_field_name("function") else {
        return;
    };
    let raw: String = ctx
        .text(function)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let name = qualify(&ctx.imports, &raw);
    let kwargs = keyword_args(ctx, call);
    let texts: Vec<(&str, &str)> = kwargs.iter().map(|(k, v)| (*k, ctx.text(*v))).collect();
    let kw = |key: &str| texts.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let kw_node = |key: &str| kwargs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let positional = positional_args(call);
    let parts: Vec<&str> = name.split('.').collect();
    let last = parts.last().copied().unwrap_or_default();
    match name.as_str() {
        "exec" => ctx.hit("B102", call),
        "eval" => ctx.hit("B307", call),
        "yaml.load" | "yaml.load_all" => {
            let loader = kw("Loader")
                .map(str::to_owned)
                .or_else(|| positional.get(1).map(|a| ctx.text(*a).to_owned()));
            if !loader.is_some_and(|l| l.contains("SafeLoader") || l.contains("BaseLoader")) {
                ctx.hit("B506", call);
            }
        }
        _ if SHELL.contains(&name.as_str()) && !positional.is_empty() => ctx.hit("B605", call),
        _ => {
            if let Some((id, _)) = BLACKLISTED_CALLS
                .iter()
                .find(|(_, names)| names.contains(&name.as_str()))
            {
                ctx.hit(id, call);
            }
        }
    }
    // B324: weak hashlib hashes unless usedforsecurity is given and not True.
    if parts.contains(&"hashlib") && matches!(kw("usedforsecurity"), None | Some("True")) {
        let weak = if last == "new" {
            positional
                .first()
                .copied()
                .or_else(|| kw_node("name"))
                .and_then(|a| string_value(ctx, a))
                .is_some_and(|v| WEAK_HASHES.contains(&v.to_ascii_lowercase().as_str()))
        } else {
            WEAK_HASHES.contains(&last)
        };
        if weak {
            ctx.hit_msg(
                "B324",
                call,
                format!("Use of weak hash {name}() for security."),
            );
        }
    }
    // B602 (subprocess) / B604 (any other function) with a true shell=.
    let shell_true = kw_node("shell").filter(|shell| shell_is_true(ctx, *shell));
    if let Some(shell) = shell_true {
        let rule = if SUBPROCESS.contains(&name.as_str()) || raw.starts_with("subprocess.") {
            "B602"
        } else {
            "B604"
        };
        ctx.hit(rule, shell);
    }
    // B603: a subprocess call without a true shell= (low: check the input).
    if shell_true.is_none() && SUBPROCESS.contains(&name.as_str()) {
        ctx.hit("B603", call);
    }
    // B607: a process started by a relative executable name (first
    // argument, or the first item of an argument list, a literal).
    if (SUBPROCESS.contains(&name.as_str())
        || SHELL.contains(&name.as_str())
        || NO_SHELL.contains(&name.as_str()))
        && let Some(first) = positional.first()
    {
        let program = if first.kind() == "list" {
            named_children(*first)
                .into_iter()
                .find(|c| c.kind() != "comment")
        } else {
            Some(*first)
        };
        if let Some(program) = program
            && is_constant(program)
            && let Some(text) = string_value(ctx, program)
            && !is_absolute_path(text)
        {
            ctx.hit("B607", call);
        }
    }
    // PY001: input() prompting for a password echoes what is typed.
    if name == "input"
        && let Some(prompt) = positional.first().copied().or_else(|| kw_node("prompt"))
        && matches!(prompt.kind(), "string" | "concatenated_string")
    {
        let text = ctx.text(prompt).to_lowercase();
        if SECRET_PROMPTS.iter().any(|w| text.contains(w)) {
            ctx.hit("PY001", call);
        }
    }
    let head = parts.first().copied().unwrap_or_default();
    if matches!(head, "requests" | "httpx") && (HTTP_VERBS.contains(&last) || last == "request") {
        if kw("verify") == Some("False") {
            ctx.hit("B501", call);
        }
        let timeout = kw("timeout");
        if (head == "requests" && timeout.is_none()) || timeout == Some("None") {
            ctx.hit("B113", call);
        }
    }
    if last == "run"
        && name.contains('.')
        && let Some(debug) = kw_node("debug")
        && ctx.text(debug) == "True"
    {
        ctx.hit("B201", debug);
    }
    // B103: chmod with a literal group/other-writable or executable mode.
    if last.contains("chmod")
        && positional.len() == 2
        && integer_value(ctx, positional[1]).is_some_and(|mode| mode & 0o033 != 0)
    {
        ctx.hit("B103", call);
    }
    // B202: tarfile extractall without filter='data' or a members= function.
    if last.contains("extractall")
        && ctx.imports.modules.contains("tarfile")
        && kw_node("filter").and_then(|f| string_value(ctx, f)) != Some("data")
        && kw_node("members").is_none_or(|m| m.kind() != "call")
    {
        ctx.hit("B202", call);
    }
    // B701: jinja2.Environment without autoescape=True / select_autoescape().
    if parts.contains(&"jinja2") && last == "Environment" {
        let safe = kw_node("autoescape").is_some_and(|v| {
            ctx.text(v) == "True"
                || (v.kind() == "call"
                    && v.child_by_field_name("function").is_some_and(|f| {
                        ctx.text(f).rsplit('.').next() == Some("select_autoescape")
                    }))
        });
        if !safe {
            ctx.hit("B701", call);
        }
    }
    // B704: Markup() of something that is not a literal.
    if matches!(name.as_str(), "markupsafe.Markup" | "flask.Markup")
        && positional.first().is_some_and(|a| !is_constant(*a))
    {
        ctx.hit("B704", call);
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

/// B401/B402/B411/B412/B413/B415: imports bandit blacklists at HIGH.
fn check_import(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let prefix = if node.kind() == "import_from_statement" {
        match node.child_by_field_name("module_name") {
            Some(m) => format!("{}.", ctx.text(m).trim_start_matches('.')),
            None => return,
        }
    } else {
        String::new()
    };
    let mut cursor = node.walk();
    let names: Vec<String> = node
        .children_by_field_name("name", &mut cursor)
        .filter_map(|n| {
            let n = if n.kind() == "aliased_import" {
                n.child_by_field_name("name")?
            } else {
                n
            };
            Some(format!("{prefix}{}", ctx.text(n)))
        })
        .collect();
    for (id, modules) in BLACKLISTED_IMPORTS {
        if names
            .iter()
            .any(|n| modules.iter().any(|m| n.starts_with(m)))
        {
            ctx.hit(id, node);
            return;
        }
    }
}

/// B104 ("0.0.0.0") and B108 (/tmp, /var/tmp, /dev/shm) on string literals,
/// docstrings and bytes excepted (as bandit).
fn check_string(ctx: &mut Ctx<'_, '_>, node: Node<'_>) {
    let prefix = ctx.text(node);
    let prefix = &prefix[..prefix.find(['\'', '"']).unwrap_or(0)];
    if prefix.contains(['b', 'B']) {
        return;
    }
    let mut holder = ctx.syntax.parent(node);
    if holder.is_some_and(|p| p.kind() == "concatenated_string") {
        holder = holder.and_then(|p| ctx.syntax.parent(p));
    }
    if holder.is_some_and(|p| p.kind() == "expression_statement") {
        return;
    }
    // The literal pieces between interpolations (bandit sees each as a string).
    let mut pieces = vec![String::new()];
    for child in named_children(node) {
        match child.kind() {
            "string_content" | "escape_sequence" => {
                if let Some(last) = pieces.last_mut() {
                    last.push_str(ctx.text(child));
                }
            }
            "interpolation" => pieces.push(String::new()),
            _ => {}
        }
    }
    if pieces.len() == 1 && pieces[0] == "0.0.0.0" {
        ctx.hit("B104", node);
    }
    if pieces.iter().any(|p| {
        ["/tmp", "/var/tmp", "/dev/shm"]
            .iter()
            .any(|t| p.starts_with(t))
    }) {
        ctx.hit("B108", node);
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
                && ctx
                    .syntax
                    .parent(node)
                    .is_none_or(|p| p.kind() != "binary_operator")
        }
        // f-string with interpolation
        "string" => named_children(node)
            .iter()
            .any(|c| c.kind() == "interpolation"),
        _ => false,
    };
    let format_call = node.kind() == "string"
        && ctx.syntax.parent(node).is_some_and(|p| {
            p.kind() == "attribute"
                && p.child_by_field_name("attribute")
                    .is_some_and(|a| ctx.text(a) == "format")
                && ctx.syntax.parent(p).is_some_and(|c| c.kind() == "call")
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
        && !ctx
            .syntax
            .ancestors(node)
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
