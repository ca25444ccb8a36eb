//! The token stream that the metrics count, built from the syntax tree's leaves
//! so that strings and comments are single opaque units (or dropped), and then
//! re-split the way lizard 1.24.3 splits operator runs (so `||` of an empty Rust
//! closure or `||=` in JavaScript count as lizard counts them).

use crate::language::Language;
use crate::syntax::Syntax;

/// What a token is, as far as the metrics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Word,
    Punct,
    Str,
}

#[derive(Debug, Clone)]
pub(crate) struct Token<'s> {
    pub text: &'s str,
    pub kind: TokenKind,
    pub start_byte: usize,
    pub end_byte: usize,
    pub start_row: usize,
    pub end_row: usize,
    /// A condition-looking token that lizard does not count here.
    pub exempt: bool,
}

pub(crate) fn is_comment_kind(kind: &str) -> bool {
    matches!(
        kind,
        "comment" | "line_comment" | "block_comment" | "html_comment"
    )
}

pub(crate) fn is_string_kind(language: Language, kind: &str) -> bool {
    match language {
        Language::Python => matches!(kind, "string"),
        Language::JavaScript => matches!(kind, "string" | "template_string" | "regex"),
        Language::Java => matches!(kind, "string_literal" | "character_literal" | "text_block"),
        Language::Go => matches!(
            kind,
            "interpreted_string_literal" | "raw_string_literal" | "rune_literal"
        ),
        Language::Rust => matches!(
            kind,
            "string_literal" | "raw_string_literal" | "char_literal"
        ),
    }
}

/// A Python string with `{…}` interpolations (an f-string that has some).
fn has_interpolation(node: tree_sitter::Node<'_>) -> bool {
    let mut cursor = node.walk();
    node.children(&mut cursor)
        .any(|c| c.kind() == "interpolation")
}

/// The separator between a `token_repetition`'s `)` and its `*`/`+`/`?`.
fn repetition_separator<'s>(syntax: &Syntax<'s>, op: tree_sitter::Node<'_>) -> Option<Token<'s>> {
    if syntax.parent(op)?.kind() != "token_repetition" {
        return None;
    }
    let close = op.prev_sibling().filter(|p| p.kind() == ")")?;
    let gap = syntax.source.get(close.end_byte()..op.start_byte())?;
    let text = gap.trim();
    if text.is_empty() {
        return None;
    }
    let start = close.end_byte() + (gap.len() - gap.trim_start().len());
    Some(Token {
        text: syntax.source.get(start..start + text.len())?,
        kind: TokenKind::Punct,
        start_byte: start,
        end_byte: start + text.len(),
        start_row: op.start_position().row,
        end_row: op.start_position().row,
        exempt: false,
    })
}

/// The code tokens of a file in source order (no comments, strings whole).
pub(crate) fn tokens<'s>(language: Language, syntax: &Syntax<'s>) -> Vec<Token<'s>> {
    let mut raw: Vec<Token<'s>> = Vec::new();
    let mut skip_end = 0usize;
    for (node, &kind) in syntax.nodes.iter().zip(&syntax.kinds) {
        if node.start_byte() < skip_end {
            continue;
        }
        if is_comment_kind(kind) {
            skip_end = node.end_byte();
            continue;
        }
        // Python f-string interpolations are code to lizard (its tokenizer
        // re-reads each `{…}`): the string's pieces stay opaque, the
        // expressions inside are tokens like any other.
        if language == Language::Python && kind == "string" && has_interpolation(*node) {
            continue;
        }
        if language == Language::Python && kind == "interpolation" {
            continue;
        }
        let is_string = is_string_kind(language, kind)
            || (language == Language::Python
                && matches!(
                    kind,
                    "string_start" | "string_content" | "string_end" | "format_specifier"
                ));
        if language == Language::Python
            && matches!(kind, "{" | "}")
            && syntax
                .parent(*node)
                .is_some_and(|p| p.kind() == "interpolation")
        {
            continue;
        }
        if !is_string && node.child_count() > 0 {
            continue;
        }
        if is_string {
            skip_end = node.end_byte();
        }
        if node.is_missing() || node.end_byte() <= node.start_byte() {
            continue;
        }
        let text = syntax.text(*node);
        if text.trim().is_empty() {
            continue;
        }
        // Rust: tree-sitter keeps no node for a macro repetition's separator
        // (the `&&` of `$( … ) && *`); lizard reads it as a token.
        if language == Language::Rust
            && matches!(kind, "*" | "+" | "?")
            && let Some(separator) = repetition_separator(syntax, *node)
        {
            raw.push(separator);
        }
        let kind = if is_string {
            TokenKind::Str
        } else if text.chars().any(|c| c.is_alphanumeric() || c == '_') {
            TokenKind::Word
        } else {
            TokenKind::Punct
        };
        // Java: the `?` of a wildcard (`List<?>`) is lizard's generic token.
        let exempt = language == Language::Java
            && text == "?"
            && syntax.parent(*node).is_some_and(|p| p.kind() == "wildcard");
        raw.push(Token {
            text,
            kind,
            exempt,
            start_byte: node.start_byte(),
            end_byte: node.end_byte(),
            start_row: node.start_position().row,
            end_row: node.end_position().row,
        });
    }
    let mut tokens = resplit_operator_runs(language, syntax.source, raw);
    if language == Language::JavaScript {
        // Only an object key's `:` opens a binding candidate; a ternary's or a
        // `case`'s does not.
        let key_colons: std::collections::BTreeSet<usize> = syntax
            .nodes
            .iter()
            .zip(&syntax.kinds)
            .filter(|(n, kind)| {
                **kind == ":"
                    && syntax
                        .parent(**n)
                        .is_some_and(|p| matches!(p.kind(), "pair" | "pair_pattern"))
            })
            .map(|(n, _)| n.start_byte())
            .collect();
        exempt_binding_candidates(&mut tokens, &key_colons);
    }
    tokens
}

/// lizard reads `= (…)` and `: (…)` in JavaScript as a possible arrow-function
/// parameter list: decisions inside, and a decision token (`?`, `||`, `&&`,
/// `??`) right after the `)`, are not counted. The `=` must follow a plain
/// name (`a = (`, not `a.b = (` or `a[0] = (`), the `:` must be an object
/// key's (not a ternary's or a `case`'s).
fn exempt_binding_candidates(
    tokens: &mut [Token<'_>],
    key_colons: &std::collections::BTreeSet<usize>,
) {
    let mut i = 1;
    while i < tokens.len() {
        let opens = tokens.get(i).is_some_and(|t| t.text == "(")
            && tokens.get(i - 1).is_some_and(|t| {
                (t.text == ":" && key_colons.contains(&t.start_byte))
                    || (t.text == "="
                        && i.checked_sub(2)
                            .and_then(|k| tokens.get(k))
                            .is_some_and(|p| p.kind == TokenKind::Word)
                        && i.checked_sub(3)
                            .and_then(|k| tokens.get(k))
                            .is_none_or(|q| q.text != "." && q.text != "?."))
            });
        if !opens {
            i += 1;
            continue;
        }
        let mut depth = 0usize;
        let mut close = i;
        while let Some(t) = tokens.get(close) {
            match t.text {
                "(" => depth += 1,
                ")" => depth = depth.saturating_sub(1),
                _ => {}
            }
            close += 1;
            if depth == 0 {
                break;
            }
        }
        // A parenthesised function (IIFE, callback) is real code to lizard.
        if tokens
            .get(i..close)
            .unwrap_or(&[])
            .iter()
            .any(|t| t.text == "function" || t.text == "=>")
        {
            i += 1;
            continue;
        }
        let mut j = i;
        while let Some(t) = tokens.get_mut(j) {
            match t.text {
                "(" => depth += 1,
                ")" => depth = depth.saturating_sub(1),
                _ => t.exempt = true,
            }
            j += 1;
            if depth == 0 {
                break;
            }
        }
        if let Some(t) = tokens
            .get_mut(j)
            .filter(|t| matches!(t.text, "?" | "||" | "&&" | "??"))
        {
            t.exempt = true;
        }
        i = j.max(i + 1);
    }
}

/// Joins adjacent punctuation leaves and splits the run again with lizard's
/// combined-symbol table.
fn resplit_operator_runs<'s>(
    language: Language,
    source: &'s str,
    raw: Vec<Token<'s>>,
) -> Vec<Token<'s>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let Some(first) = raw.get(i) else { break };
        if first.kind != TokenKind::Punct {
            out.push(first.clone());
            i += 1;
            continue;
        }
        let start = first.start_byte;
        let mut end = first.end_byte;
        let mut j = i + 1;
        while let Some(next) = raw.get(j) {
            if next.kind == TokenKind::Punct
                && next.start_byte == end
                && next.start_row == first.start_row
            {
                end = next.end_byte;
                j += 1;
            } else {
                break;
            }
        }
        let run = source.get(start..end).unwrap_or("");
        let exempt_at: Vec<usize> = raw
            .get(i..j)
            .unwrap_or(&[])
            .iter()
            .filter(|t| t.exempt)
            .map(|t| t.start_byte)
            .collect();
        let mut offset = 0;
        while offset < run.len() {
            let rest = run.get(offset..).unwrap_or("");
            let len = symbol_len(language, rest).max(1);
            let len = (offset + len..=run.len())
                .find(|e| run.is_char_boundary(*e))
                .unwrap_or(run.len())
                - offset;
            out.push(Token {
                text: run.get(offset..offset + len).unwrap_or(""),
                kind: TokenKind::Punct,
                start_byte: start + offset,
                end_byte: start + offset + len,
                start_row: first.start_row,
                end_row: first.start_row,
                exempt: exempt_at.contains(&(start + offset)),
            });
            offset += len;
        }
        i = j;
    }
    out
}

const COMBINED: [&str; 26] = [
    "<<=", ">>=", "||", "&&", "===", "!==", "==", "!=", "<=", ">=", "->", "=>", "++", "--", "+=",
    "-=", "+", "-", "*", "/", "*=", "/=", "^=", "&=", "|=", "...",
];

/// Length of the symbol lizard's tokenizer takes at the start of `rest`.
fn symbol_len(language: Language, rest: &str) -> usize {
    let prefixes: &[&str] = match language {
        Language::Python => &["//=", "//"],
        Language::JavaScript => &["??", "?."],
        _ => &[],
    };
    for p in prefixes {
        if rest.starts_with(p) {
            if *p == "?." && rest[2..].starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            return p.len();
        }
    }
    for p in [":=", "::", "**"].iter().chain(COMBINED.iter()) {
        if rest.starts_with(p) {
            return p.len();
        }
    }
    rest.chars().next().map_or(1, char::len_utf8)
}

/// The tokens lizard counts as decision points, per language.
pub(crate) fn is_condition(language: Language, text: &str) -> bool {
    match language {
        Language::Python => matches!(
            text,
            "if" | "elif" | "for" | "while" | "except" | "finally" | "and" | "or" | "case"
        ),
        Language::JavaScript => matches!(
            text,
            "if" | "for" | "while" | "catch" | "&&" | "||" | "??" | "case" | "?"
        ),
        Language::Java | Language::Go => matches!(
            text,
            "if" | "for" | "while" | "catch" | "&&" | "||" | "case" | "?"
        ),
        Language::Rust => matches!(
            text,
            "if" | "for" | "while" | "catch" | "where" | "&&" | "||" | "?"
        ),
    }
}
