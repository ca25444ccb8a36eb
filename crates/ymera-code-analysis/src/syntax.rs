//! Parsing with a time limit, and the flattened view of a syntax tree that the
//! metrics and the rules walk (iteratively: no recursion, so deep input cannot
//! overflow the stack).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tree_sitter::{Node, Parser, Tree};

use crate::error::AnalysisError;
use crate::language::Language;

/// Parses `source` as `language`, giving up after `limit`.
pub(crate) fn parse(
    language: Language,
    path: &str,
    source: &str,
    limit: Duration,
) -> Result<Tree, AnalysisError> {
    let mut parser = Parser::new();
    parser
        .set_language(&language.grammar())
        .map_err(|e| AnalysisError::Parser {
            language: language.name(),
            message: e.to_string(),
        })?;
    let started = Instant::now();
    let mut timed_out = false;
    let mut progress = |_: &tree_sitter::ParseState| {
        if started.elapsed() > limit {
            timed_out = true;
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let bytes = source.as_bytes();
    let mut input =
        |offset: usize, _: tree_sitter::Point| -> &[u8] { bytes.get(offset..).unwrap_or(&[]) };
    let options = tree_sitter::ParseOptions::new().progress_callback(&mut progress);
    let tree = parser.parse_with_options(&mut input, None, Some(options));
    match tree {
        Some(tree) => Ok(tree),
        None if timed_out => Err(AnalysisError::ParseTimeout {
            path: path.to_owned(),
            limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
        None => Err(AnalysisError::Parser {
            language: language.name(),
            message: "parser returned no tree".to_owned(),
        }),
    }
}

/// A parsed file: source, tree and every node in pre-order.
pub(crate) struct Syntax<'t> {
    pub source: &'t str,
    pub nodes: Vec<Node<'t>>,
    /// `nodes[i].kind()`, computed once (tree-sitter's `kind()` converts the C
    /// string on every call).
    pub kinds: Vec<&'t str>,
}

impl<'t> Syntax<'t> {
    pub fn new(tree: &'t Tree, source: &'t str) -> Syntax<'t> {
        let mut nodes = Vec::new();
        let mut kinds = Vec::new();
        let mut cursor = tree.walk();
        loop {
            let node = cursor.node();
            kinds.push(node.kind());
            nodes.push(node);
            if cursor.goto_first_child() {
                continue;
            }
            loop {
                if cursor.goto_next_sibling() {
                    break;
                }
                if !cursor.goto_parent() {
                    return Syntax {
                        source,
                        nodes,
                        kinds,
                    };
                }
            }
        }
    }

    /// The source text of a node (empty if the range is not on char boundaries).
    pub fn text(&self, node: Node<'_>) -> &'t str {
        self.source.get(node.byte_range()).unwrap_or("")
    }
}

/// All direct children of a node.
pub(crate) fn children<'t>(node: Node<'t>) -> Vec<Node<'t>> {
    let mut cursor = node.walk();
    node.children(&mut cursor).collect()
}

/// All named direct children of a node.
pub(crate) fn named_children<'t>(node: Node<'t>) -> Vec<Node<'t>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).collect()
}

/// Ancestors of a node, nearest first.
pub(crate) fn ancestors<'t>(node: Node<'t>) -> impl Iterator<Item = Node<'t>> {
    std::iter::successors(node.parent(), |n| n.parent())
}

/// Every node under `node` (inclusive), pre-order, iteratively.
pub(crate) fn descendants<'t>(node: Node<'t>) -> Vec<Node<'t>> {
    let mut out = Vec::new();
    let mut cursor = node.walk();
    loop {
        out.push(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.node() == node {
                return out;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return out;
            }
        }
    }
}
