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
    /// Index in `nodes` of each node's parent (`NO_PARENT` for the root):
    /// tree-sitter's `Node::parent` walks down from the root, so a chain of
    /// `parent()` calls is quadratic in the depth.
    parents: Vec<u32>,
}

const NO_PARENT: u32 = u32::MAX;

impl<'t> Syntax<'t> {
    pub fn new(tree: &'t Tree, source: &'t str) -> Syntax<'t> {
        let mut nodes = Vec::new();
        let mut kinds = Vec::new();
        let mut parents = Vec::new();
        // Indices of the nodes on the cursor's path from the root.
        let mut path: Vec<u32> = Vec::new();
        let mut cursor = tree.walk();
        loop {
            let node = cursor.node();
            kinds.push(node.kind());
            parents.push(path.last().copied().unwrap_or(NO_PARENT));
            nodes.push(node);
            if cursor.goto_first_child() {
                path.push(u32::try_from(nodes.len() - 1).unwrap_or(NO_PARENT));
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
                        parents,
                    };
                }
                path.pop();
            }
        }
    }

    /// Where `node` sits in `nodes` (pre-order is sorted by start byte).
    fn index_of(&self, node: Node<'_>) -> Option<usize> {
        let start = node.start_byte();
        let from = self.nodes.partition_point(|n| n.start_byte() < start);
        let id = node.id();
        self.nodes
            .get(from..)?
            .iter()
            .take_while(|n| n.start_byte() == start)
            .position(|n| n.id() == id)
            .map(|i| from + i)
    }

    /// The parent of `node`, without tree-sitter's walk from the root.
    pub fn parent(&self, node: Node<'_>) -> Option<Node<'t>> {
        match self.index_of(node) {
            Some(index) => self.parent_at(index).map(|(_, p)| p),
            // Not found in `nodes` (should not happen): tree-sitter's way.
            None => node
                .parent()
                .and_then(|p| self.index_of(p))
                .and_then(|i| self.nodes.get(i).copied()),
        }
    }

    fn parent_at(&self, index: usize) -> Option<(usize, Node<'t>)> {
        let parent = usize::try_from(*self.parents.get(index)?).ok()?;
        self.nodes.get(parent).map(|n| (parent, *n))
    }

    /// Ancestors of a node, nearest first, in O(depth).
    pub fn ancestors(&self, node: Node<'_>) -> impl Iterator<Item = Node<'t>> + '_ {
        let mut next = match self.index_of(node) {
            Some(index) => self.parent_at(index),
            None => node
                .parent()
                .and_then(|p| self.index_of(p))
                .and_then(|i| self.nodes.get(i).map(|n| (i, *n))),
        };
        std::iter::from_fn(move || {
            let (index, node) = next.take()?;
            next = self.parent_at(index);
            Some(node)
        })
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
