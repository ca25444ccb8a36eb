//! `drafting.comment`: comments anchored to a character range of the
//! committed content (add, resolve, reopen, list).

use chrono::Utc;
use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::error::Violation;
use ymera_core::runtime::Call;

use super::{Shared, Write, author, flush_one};
use crate::store::{Comment, CommentStatus, Named};

/// What `drafting.comment` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommentAction {
    /// Adds a comment (the default).
    Add,
    /// Resolves a comment.
    Resolve,
    /// Reopens a resolved comment.
    Reopen,
    /// Lists the comments with the text now at their anchors.
    List,
}

impl Named for CommentAction {
    const ALL: &'static [Self] = &[
        CommentAction::Add,
        CommentAction::Resolve,
        CommentAction::Reopen,
        CommentAction::List,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CommentAction::Add => "add",
            CommentAction::Resolve => "resolve",
            CommentAction::Reopen => "reopen",
            CommentAction::List => "list",
        }
    }
}

/// `drafting.comment` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    draft_id: String,
    /// A [`CommentAction`] name, checked by the handler (422 naming
    /// `/action`); `add` when absent.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    comment_id: Option<String>,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    start: Option<usize>,
    #[serde(default)]
    end: Option<usize>,
}

/// A comment with the text now at its anchor.
#[derive(Debug, Serialize)]
pub struct AnchoredComment {
    #[serde(flatten)]
    comment: Comment,
    anchored_text: String,
}

/// `drafting.comment` reply.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CommentReply {
    /// The comment added, resolved or reopened.
    Comment(Comment),
    /// The draft's comments (`list`).
    List {
        /// The draft.
        draft_id: String,
        /// Its comments, oldest first.
        comments: Vec<AnchoredComment>,
    },
}

/// The characters `[start, end)` of `text`.
fn chars(text: &str, start: usize, end: usize) -> String {
    text.chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect()
}

pub(super) async fn comment(
    state: Shared,
    call: Call<Write>,
    body: CommentRequest,
) -> Result<CommentReply, Error> {
    let action = match body.action.as_deref() {
        None => CommentAction::Add,
        Some(name) => CommentAction::parse(name).ok_or_else(|| {
            Error::validation(vec![Violation::new(
                "/action",
                format!("'{name}' is not one of {}", CommentAction::names()),
            )])
        })?,
    };
    match action {
        CommentAction::Add => {
            // Anchors refer to committed text: persist pending typing first.
            flush_one(&state, &body.draft_id).await?;
            let draft = state.store.get(&body.draft_id).await?;
            let author = author(&call, body.author_id, || draft.author_id.clone());
            let text = body.body.unwrap_or_default();
            if text.trim().is_empty() || text.chars().count() > 10_000 {
                return Err(Error::validation(vec![Violation::new(
                    "/body",
                    "1-10000 characters",
                )]));
            }
            let len = draft.content.chars().count();
            let start = body.start.unwrap_or(0);
            let end = body.end.unwrap_or(start);
            if start > end || end > len {
                return Err(Error::validation(vec![Violation::new(
                    "/start",
                    format!("0 <= start <= end <= {len} (characters of the content)"),
                )]));
            }
            let now = Utc::now();
            let c = Comment {
                comment_id: uuid::Uuid::now_v7().to_string(),
                draft_id: body.draft_id,
                author_id: author,
                body: text,
                anchor_start: i32::try_from(start).unwrap_or(i32::MAX),
                anchor_end: i32::try_from(end).unwrap_or(i32::MAX),
                quote: chars(&draft.content, start, end),
                status: CommentStatus::Open,
                created_at: now,
                updated_at: now,
                resolved_by: None,
            };
            state.store.add_comment(&c).await?;
            Ok(CommentReply::Comment(c))
        }
        CommentAction::Resolve | CommentAction::Reopen => {
            let id = body.comment_id.ok_or_else(|| {
                Error::validation(vec![Violation::new("/comment_id", "required")])
            })?;
            let status = if action == CommentAction::Resolve {
                CommentStatus::Resolved
            } else {
                CommentStatus::Open
            };
            let actor = author(&call, body.author_id, || "unknown".to_owned());
            let c = state
                .store
                .set_comment_status(&body.draft_id, &id, status, &actor)
                .await?;
            Ok(CommentReply::Comment(c))
        }
        CommentAction::List => {
            let draft = state.store.get(&body.draft_id).await?;
            let comments = state.store.comments(&body.draft_id).await?;
            let comments = comments
                .into_iter()
                .map(|comment| {
                    let s = usize::try_from(comment.anchor_start).unwrap_or(0);
                    let e = usize::try_from(comment.anchor_end).unwrap_or(0);
                    AnchoredComment {
                        anchored_text: chars(&draft.content, s, e),
                        comment,
                    }
                })
                .collect();
            Ok(CommentReply::List {
                draft_id: body.draft_id,
                comments,
            })
        }
    }
}
