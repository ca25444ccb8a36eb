//! Per-function metrics with lizard 1.24.3's definitions: functions are found
//! on the syntax tree; CCN, NLOC and token counts come from the token stream
//! (see `tokens`), each token counted for the innermost function around it.

use std::collections::BTreeSet;

use tree_sitter::Node;

use crate::language::Language;
use crate::report::{FunctionMetrics, rank};
use crate::syntax::{Syntax, children, named_children};
use crate::tokens::{Token, TokenKind, is_condition};

/// A function found on the tree, before counting.
#[derive(Debug, Clone)]
pub(crate) struct FunctionSite<'t> {
    pub node: Node<'t>,
    pub name: String,
    pub qualified_name: String,
    /// Byte where lizard starts counting for this function.
    pub start_byte: usize,
    pub start_row: usize,
    pub parameter_count: usize,
}

/// Metrics of one file: functions plus whole-file NLOC and tokens.
pub(crate) struct FileMetrics<'t> {
    pub functions: Vec<FunctionMetrics>,
    pub sites: Vec<FunctionSite<'t>>,
    pub nloc: usize,
    pub token_count: usize,
}

pub(crate) fn is_function_kind(language: Language, kind: &str) -> bool {
    match language {
        Language::Python => kind == "function_definition",
        Language::JavaScript => matches!(
            kind,
            "function_declaration"
                | "function_expression"
                | "generator_function_declaration"
                | "generator_function"
                | "arrow_function"
                | "method_definition"
        ),
        Language::Java => matches!(
            kind,
            "method_declaration" | "constructor_declaration" | "compact_constructor_declaration"
        ),
        Language::Go => matches!(
            kind,
            "function_declaration" | "method_declaration" | "func_literal"
        ),
        Language::Rust => kind == "function_item",
    }
}

fn has_body(language: Language, node: Node<'_>) -> bool {
    match language {
        Language::Java | Language::Go | Language::Rust => {
            node.child_by_field_name("body").is_some()
        }
        _ => true,
    }
}

/// Finds every function with a body, with names and parameter counts.
pub(crate) fn function_sites<'t>(language: Language, syntax: &Syntax<'t>) -> Vec<FunctionSite<'t>> {
    let mut sites = Vec::new();
    let mut anonymous = 0usize;
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if !is_function_kind(language, kind) || !has_body(language, *node) {
            continue;
        }
        let name = function_name(language, syntax, *node).unwrap_or_else(|| {
            let n = format!("anonymous__{anonymous}");
            anonymous += 1;
            if language == Language::Go {
                n
            } else {
                "(anonymous)".to_owned()
            }
        });
        let mut scope: Vec<String> = syntax
            .ancestors(*node)
            .filter_map(|a| scope_name(language, syntax, a))
            .collect();
        scope.reverse();
        scope.push(name.clone());
        let start = start_node(language, *node);
        sites.push(FunctionSite {
            node: *node,
            qualified_name: scope.join("."),
            name,
            start_byte: start.start_byte(),
            start_row: start.start_position().row,
            parameter_count: parameter_count(language, syntax, *node),
        });
    }
    if language == Language::Rust {
        sites.extend(token_tree_sites(syntax));
        absorb_trait_declarations(syntax, &mut sites);
    }
    sites
}

/// lizard reads a trait method declaration without a body
/// (`fn remaining(&self) -> usize;`) as a function that runs on to the end of
/// the next `{ … }` block, whatever comes between: the functions that start
/// before that `{` are part of it and not reported on their own.
fn absorb_trait_declarations<'t>(syntax: &Syntax<'t>, sites: &mut Vec<FunctionSite<'t>>) {
    let mut absorbed_until = 0usize;
    for (decl, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if kind != "function_signature_item"
            || !syntax.ancestors(*decl).any(|a| a.kind() == "trait_item")
        {
            continue;
        }
        let Some(fn_token) = children(*decl).into_iter().find(|c| c.kind() == "fn") else {
            continue;
        };
        if fn_token.start_byte() < absorbed_until {
            continue;
        }
        let from = syntax
            .nodes
            .partition_point(|n| n.start_byte() < decl.end_byte());
        let Some(brace) = syntax
            .nodes
            .get(from..)
            .and_then(|rest| rest.iter().find(|n| n.kind() == "{"))
        else {
            continue;
        };
        let Some(block) = syntax.parent(*brace) else {
            continue;
        };
        let (start, end) = (fn_token.start_byte(), brace.start_byte());
        sites.retain(|s| s.start_byte <= start || s.start_byte >= end);
        let name = decl
            .child_by_field_name("name")
            .map_or_else(String::new, |n| syntax.text(n).to_owned());
        let mut scope: Vec<String> = syntax
            .ancestors(*decl)
            .filter_map(|a| scope_name(Language::Rust, syntax, a))
            .collect();
        scope.reverse();
        scope.push(name.clone());
        sites.push(FunctionSite {
            node: block,
            qualified_name: scope.join("."),
            name,
            start_byte: start,
            start_row: fn_token.start_position().row,
            parameter_count: parameter_count(Language::Rust, syntax, *decl),
        });
        absorbed_until = end;
    }
}

/// Rust functions written inside macro bodies and invocations, which
/// tree-sitter keeps as token trees but lizard reads as code: `fn NAME`
/// followed (after generics, `->` and `where` tokens) by a `( … )` and a
/// `{ … }` tree. A `$name` metavariable is not a name to lizard, and a `;`
/// before the body makes it a declaration, so neither is a function here.
fn token_tree_sites<'t>(syntax: &Syntax<'t>) -> Vec<FunctionSite<'t>> {
    let mut sites = Vec::new();
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if kind != "fn"
            || syntax
                .parent(*node)
                .is_none_or(|p| p.kind() != "token_tree")
        {
            continue;
        }
        let Some(name) = node.next_sibling().filter(|n| n.kind() == "identifier") else {
            continue;
        };
        let mut params = None;
        let mut body = None;
        let mut next = name.next_sibling();
        while let Some(sibling) = next {
            let text = syntax.text(sibling);
            match sibling.kind() {
                "token_tree" if params.is_none() && text.starts_with('(') => params = Some(sibling),
                "token_tree" if params.is_some() && text.starts_with('{') => {
                    body = Some(sibling);
                    break;
                }
                ";" | "fn" | "=>" => break,
                _ => {}
            }
            next = sibling.next_sibling();
        }
        let (Some(params), Some(body)) = (params, body) else {
            continue;
        };
        let name = syntax.text(name).to_owned();
        let mut scope: Vec<String> = syntax
            .ancestors(*node)
            .filter_map(|a| scope_name(Language::Rust, syntax, a))
            .collect();
        scope.reverse();
        scope.push(name.clone());
        sites.push(FunctionSite {
            node: body,
            qualified_name: scope.join("."),
            name,
            start_byte: node.start_byte(),
            start_row: node.start_position().row,
            parameter_count: token_tree_parameters(syntax, params),
        });
    }
    sites
}

/// Parameters in a `( … )` token tree: top-level comma-separated items.
fn token_tree_parameters(syntax: &Syntax<'_>, params: Node<'_>) -> usize {
    let inner: Vec<Node<'_>> = children(params)
        .into_iter()
        .filter(|c| !matches!(syntax.text(*c), "(" | ")"))
        .collect();
    if inner.is_empty() {
        return 0;
    }
    let commas = inner.iter().filter(|c| c.kind() == ",").count();
    let trailing = inner.last().is_some_and(|c| c.kind() == ",");
    commas + 1 - usize::from(trailing)
}

/// The token where lizard opens the function.
fn start_node(language: Language, node: Node<'_>) -> Node<'_> {
    let by_name = || node.child_by_field_name("name").unwrap_or(node);
    match language {
        Language::Python | Language::Java => by_name(),
        Language::Rust => children(node)
            .into_iter()
            .find(|c| c.kind() == "fn")
            .unwrap_or(node),
        Language::JavaScript => {
            if node.kind() == "method_definition" {
                by_name()
            } else {
                node
            }
        }
        Language::Go => node,
    }
}

fn function_name(language: Language, syntax: &Syntax<'_>, node: Node<'_>) -> Option<String> {
    if let Some(name) = node.child_by_field_name("name") {
        return Some(syntax.text(name).to_owned());
    }
    let parent = syntax.parent(node)?;
    let named = match (language, parent.kind()) {
        (Language::JavaScript, "variable_declarator") => parent.child_by_field_name("name"),
        (Language::JavaScript, "assignment_expression") => parent
            .child_by_field_name("left")
            .map(|l| l.child_by_field_name("property").unwrap_or(l)),
        (Language::JavaScript, "pair") => parent.child_by_field_name("key"),
        (Language::JavaScript, "field_definition" | "public_field_definition") => {
            parent.child_by_field_name("property")
        }
        (Language::Go, "var_spec" | "short_var_declaration" | "assignment_statement") => None,
        _ => None,
    }?;
    Some(syntax.text(named).to_owned())
}

/// The name an enclosing node contributes to a qualified name, if any.
fn scope_name(language: Language, syntax: &Syntax<'_>, node: Node<'_>) -> Option<String> {
    let kind = node.kind();
    let named = |field: &str| {
        node.child_by_field_name(field)
            .map(|n| syntax.text(n).to_owned())
    };
    match language {
        Language::Python => matches!(kind, "class_definition" | "function_definition")
            .then(|| named("name"))
            .flatten(),
        Language::JavaScript => {
            if matches!(kind, "class_declaration" | "class") || is_function_kind(language, kind) {
                named("name").or_else(|| function_name(language, syntax, node))
            } else {
                None
            }
        }
        Language::Java => matches!(
            kind,
            "class_declaration"
                | "interface_declaration"
                | "enum_declaration"
                | "record_declaration"
                | "method_declaration"
                | "constructor_declaration"
        )
        .then(|| named("name"))
        .flatten(),
        Language::Go => None,
        Language::Rust => match kind {
            "impl_item" => node.child_by_field_name("type").map(|t| {
                let text = syntax.text(t);
                text.split('<').next().unwrap_or(text).to_owned()
            }),
            "trait_item" | "mod_item" | "function_item" => named("name"),
            _ => None,
        },
    }
}

fn go_receiver_type(syntax: &Syntax<'_>, node: Node<'_>) -> Option<String> {
    let receiver = node.child_by_field_name("receiver")?;
    let decl = named_children(receiver)
        .into_iter()
        .find(|c| c.kind() == "parameter_declaration")?;
    let ty = decl.child_by_field_name("type")?;
    let text = syntax.text(ty).trim_start_matches('*');
    Some(text.split('[').next().unwrap_or(text).to_owned())
}

fn parameter_count(language: Language, syntax: &Syntax<'_>, node: Node<'_>) -> usize {
    let params = match language {
        Language::JavaScript => node
            .child_by_field_name("parameters")
            .or_else(|| node.child_by_field_name("parameter")),
        _ => node.child_by_field_name("parameters"),
    };
    let Some(params) = params else { return 0 };
    if params.kind() == "identifier" {
        return 1;
    }
    let items = named_children(params).into_iter().filter(|c| {
        !matches!(
            c.kind(),
            "comment"
                | "line_comment"
                | "block_comment"
                | "keyword_separator"
                | "positional_separator"
                | "attribute_item"
        )
    });
    match language {
        Language::Go => items
            .map(|p| {
                let mut cursor = p.walk();
                p.children_by_field_name("name", &mut cursor).count().max(1)
            })
            .sum(),
        // lizard drops JavaScript parameters spelled like TypeScript type keywords.
        Language::JavaScript => items
            .filter(|p| {
                !matches!(
                    syntax.text(*p),
                    "string"
                        | "number"
                        | "boolean"
                        | "void"
                        | "any"
                        | "object"
                        | "unknown"
                        | "never"
                )
            })
            .count(),
        _ => items.count(),
    }
}

/// Extra decision points that are structural rather than single tokens:
/// Rust match arms beyond the first and `let … else`.
fn structural_conditions(
    language: Language,
    syntax: &Syntax<'_>,
    node: Node<'_>,
    kind: &str,
) -> usize {
    match (language, kind) {
        (Language::Rust, "match_block") => named_children(node)
            .iter()
            .filter(|c| c.kind() == "match_arm")
            .count()
            .saturating_sub(1),
        (Language::Rust, "let_declaration") => {
            usize::from(node.child_by_field_name("alternative").is_some())
        }
        // Inside a macro (token trees) there is no `match_block`: lizard counts
        // the `=>` of the first `{ … }` after `match`, beyond the first.
        (Language::Rust, "match")
            if syntax
                .parent(node)
                .is_some_and(|p| p.kind() == "token_tree") =>
        {
            let mut next = node.next_sibling();
            while let Some(sibling) = next {
                if sibling.kind() == "token_tree"
                    && sibling.child(0).is_some_and(|c| c.kind() == "{")
                {
                    return children(sibling)
                        .iter()
                        .filter(|c| c.kind() == "=>")
                        .count()
                        .saturating_sub(1);
                }
                if matches!(sibling.kind(), ";" | "match") {
                    break;
                }
                next = sibling.next_sibling();
            }
            0
        }
        _ => 0,
    }
}

/// Python: triple-quoted strings standing as statements (docstrings and
/// string "comments") are not code lines for lizard.
fn excluded_from_nloc(language: Language, tokens: &[Token<'_>], index: usize) -> bool {
    if language != Language::Python {
        return false;
    }
    let Some(token) = tokens.get(index) else {
        return false;
    };
    if token.kind != TokenKind::Str {
        return false;
    }
    let body = token
        .text
        .trim_start_matches(|c: char| c.is_ascii_alphabetic());
    if !(body.starts_with("\"\"\"") || body.starts_with("'''")) || body.len() < 6 {
        return false;
    }
    let previous = index
        .checked_sub(1)
        .and_then(|i| tokens.get(i))
        .map(|t| t.text);
    !matches!(
        previous,
        Some(
            "=" | "+="
                | "-="
                | "*="
                | "/="
                | "%="
                | "//="
                | "**="
                | "&="
                | "|="
                | "^="
                | "<<="
                | ">>="
                | "("
                | "return"
                | ","
                | "["
                | "+"
                | "-"
                | "*"
                | "/"
                | "//"
                | "%"
        )
    )
}

struct Accumulator {
    lines: BTreeSet<usize>,
    tokens: usize,
    ccn: usize,
    last_row: usize,
}

/// Computes per-function and whole-file metrics.
pub(crate) fn measure<'t>(
    language: Language,
    syntax: &Syntax<'t>,
    tokens: &[Token<'_>],
) -> FileMetrics<'t> {
    let mut sites = function_sites(language, syntax);
    if language == Language::Go {
        for site in &mut sites {
            if let Some(receiver) = go_receiver_type(syntax, site.node) {
                site.qualified_name = format!("{receiver}.{}", site.name);
            }
        }
    }
    sites.sort_by_key(|s| (s.start_byte, std::cmp::Reverse(s.node.end_byte())));
    let mut accs: Vec<Accumulator> = sites
        .iter()
        .map(|s| Accumulator {
            lines: BTreeSet::new(),
            tokens: 0,
            ccn: 1,
            last_row: s.start_row,
        })
        .collect();
    let mut file_lines = BTreeSet::new();
    // Like lizard, a line counts for the function owning its first counted
    // token (and each function for its own start line), so a line where a
    // nested function closes and its parent goes on (`}()`, `})`) counts
    // for the nested one only.
    let mut line_owner: std::collections::HashMap<usize, Option<usize>> =
        std::collections::HashMap::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut next_site = 0usize;
    let innermost_at =
        |byte: usize, stack: &mut Vec<usize>, next_site: &mut usize| -> Option<usize> {
            while let Some(&top) = stack.last() {
                if sites.get(top).is_some_and(|s| byte >= s.node.end_byte()) {
                    stack.pop();
                } else {
                    break;
                }
            }
            while let Some(site) = sites.get(*next_site) {
                if site.start_byte > byte {
                    break;
                }
                if byte < site.node.end_byte() {
                    stack.push(*next_site);
                }
                *next_site += 1;
            }
            stack.last().copied()
        };
    for (index, token) in tokens.iter().enumerate() {
        let owner = innermost_at(token.start_byte, &mut stack, &mut next_site);
        let counted = !excluded_from_nloc(language, tokens, index);
        if counted {
            file_lines.extend(token.start_row..=token.end_row);
        }
        // The opening token (`fn`, `func`, a name) also counts for the enclosing function.
        if counted
            && let Some(o) = owner
            && sites
                .get(o)
                .is_some_and(|s| s.start_byte == token.start_byte)
            && let Some(parent) = stack
                .len()
                .checked_sub(2)
                .and_then(|i| stack.get(i))
                .and_then(|p| accs.get_mut(*p))
        {
            parent.lines.extend(token.start_row..=token.end_row);
        }
        if counted {
            for row in token.start_row..=token.end_row {
                line_owner.entry(row).or_insert(owner);
            }
        }
        if let Some(o) = owner
            && let Some(acc) = accs.get_mut(o)
        {
            acc.tokens += 1;
            if counted {
                let start_row = sites.get(o).map(|s| s.start_row);
                acc.lines.extend(
                    (token.start_row..=token.end_row).filter(|row| {
                        line_owner.get(row) == Some(&owner) || Some(*row) == start_row
                    }),
                );
            }
            if is_condition(language, token.text) && token.kind != TokenKind::Str && !token.exempt {
                acc.ccn += 1;
            }
        }
        for &open in &stack {
            if let Some(acc) = accs.get_mut(open) {
                acc.last_row = acc.last_row.max(token.end_row);
            }
        }
    }
    // Structural decision points go to the innermost function around them.
    let mut structural: Vec<(usize, usize)> = Vec::new();
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        let extra = structural_conditions(language, syntax, *node, kind);
        if extra > 0 {
            structural.push((node.start_byte(), extra));
        }
    }
    let mut stack2 = Vec::new();
    let mut next2 = 0usize;
    for (byte, extra) in structural {
        if let Some(acc) = innermost_at(byte, &mut stack2, &mut next2).and_then(|o| accs.get_mut(o))
        {
            acc.ccn += extra;
        }
    }
    let functions = sites
        .iter()
        .zip(&accs)
        .map(|(site, acc)| {
            let start_line = site.start_row + 1;
            let end_line = acc.last_row + 1;
            FunctionMetrics {
                name: site.name.clone(),
                qualified_name: site.qualified_name.clone(),
                start_line,
                end_line,
                nloc: acc.lines.len().max(1),
                ccn: acc.ccn,
                token_count: acc.tokens,
                parameter_count: site.parameter_count,
                length: end_line + 1 - start_line,
                rank: rank(acc.ccn),
            }
        })
        .collect();
    FileMetrics {
        functions,
        sites,
        nloc: file_lines.len(),
        token_count: tokens.len(),
    }
}
