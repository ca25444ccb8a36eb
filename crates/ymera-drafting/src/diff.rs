//! Revision diffs (crate `similar`): unified line diffs, word-level diffs,
//! and remapping of character offsets through a change (comment anchors).

use serde::{Deserialize, Serialize};
use similar::{ChangeTag, DiffOp, TextDiff};

/// Granularity of a diff between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DiffLevel {
    /// Lines (unified diff).
    #[default]
    Line,
    /// Words (inline changes).
    Word,
}

/// One change of a word-level diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordChange {
    /// "equal", "insert" or "delete".
    pub op: String,
    /// The text.
    pub text: String,
}

/// A unified diff of `old` → `new` with three lines of context.
pub fn unified(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// A word-level diff; runs of the same operation are merged.
pub fn words(old: &str, new: &str) -> Vec<WordChange> {
    let diff = TextDiff::from_words(old, new);
    let mut out: Vec<WordChange> = Vec::new();
    for change in diff.iter_all_changes() {
        let op = match change.tag() {
            ChangeTag::Equal => "equal",
            ChangeTag::Insert => "insert",
            ChangeTag::Delete => "delete",
        };
        match out.last_mut() {
            Some(last) if last.op == op => last.text.push_str(change.value()),
            _ => out.push(WordChange {
                op: op.to_owned(),
                text: change.value().to_owned(),
            }),
        }
    }
    out
}

/// Maps character offsets of `old` to offsets of `new`: text kept keeps its
/// anchor; an offset inside replaced or deleted text moves to the start
/// (`prefer_end = false`) or the end (`true`) of what replaced it.
pub struct OffsetMap {
    ops: Vec<DiffOp>,
}

impl OffsetMap {
    /// Computes the character-level change `old` → `new`.
    pub fn new(old: &str, new: &str) -> OffsetMap {
        let old: Vec<char> = old.chars().collect();
        let new: Vec<char> = new.chars().collect();
        let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new);
        OffsetMap { ops }
    }

    /// The offset in the new text for `offset` in the old one.
    pub fn map(&self, offset: usize, prefer_end: bool) -> usize {
        let mut last_new_end = 0;
        for op in &self.ops {
            let (old_range, new_range) = (op.old_range(), op.new_range());
            match op {
                DiffOp::Equal { .. } if old_range.contains(&offset) => {
                    return new_range.start + (offset - old_range.start);
                }
                DiffOp::Delete { .. } | DiffOp::Replace { .. } if old_range.contains(&offset) => {
                    return if prefer_end {
                        new_range.end
                    } else {
                        new_range.start
                    };
                }
                _ => {}
            }
            if old_range.end <= offset {
                last_new_end = new_range.end;
            }
        }
        last_new_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_has_headers_and_changes() {
        let d = unified("a\nb\n", "a\nc\n", "r1", "r2");
        assert!(d.contains("--- r1") && d.contains("+++ r2"));
        assert!(d.contains("-b") && d.contains("+c"));
    }

    #[test]
    fn offsets_follow_edits() {
        let old = "hello world";
        let new = "oh, hello big world";
        let map = OffsetMap::new(old, new);
        assert_eq!(map.map(0, false), 4); // "hello"
        assert_eq!(map.map(6, false), 14); // "world"
        assert_eq!(map.map(11, true), 19); // end
    }
}
