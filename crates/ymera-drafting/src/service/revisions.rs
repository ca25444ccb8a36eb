//! Revisions: `drafting.revisions`, `diff` and `restore`.

use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::error::Violation;
use ymera_core::runtime::Call;

use super::drafts::Committed;
use super::{Read, Shared, Write, author};
use crate::diff::{DiffLevel, WordChange, unified, words};
use crate::store::{Change, Revision, RevisionSource};

/// `drafting.revisions` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionsRequest {
    draft_id: String,
    #[serde(default)]
    before: Option<i32>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    include_diff: bool,
}

/// `drafting.diff` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    draft_id: String,
    from: i32,
    #[serde(default)]
    to: Option<i32>,
    #[serde(default)]
    level: DiffLevel,
}

/// `drafting.restore` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    draft_id: String,
    revision: i32,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    expected_version: Option<i32>,
}

/// `drafting.revisions` reply: a page, newest first.
#[derive(Debug, Serialize)]
pub struct RevisionsReply {
    draft_id: String,
    revisions: Vec<Revision>,
    /// `before` of the next page, when this one is full.
    next_before: Option<i32>,
}

/// `drafting.restore` reply: the draft after the restore and its revision.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct RestoreReply(Committed);

/// `drafting.diff` reply.
#[derive(Debug, Serialize)]
pub struct DiffReply {
    draft_id: String,
    from: i32,
    to: i32,
    #[serde(flatten)]
    changes: Changes,
}

/// The changes of a diff at its level (`level` on the wire).
#[derive(Debug, Serialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Changes {
    /// A unified line diff.
    Line {
        /// The diff.
        unified: String,
    },
    /// Word changes.
    Word {
        /// The changes, in order.
        changes: Vec<WordChange>,
    },
}

pub(super) async fn revisions(
    state: Shared,
    _call: Call<Read>,
    body: RevisionsRequest,
) -> Result<RevisionsReply, Error> {
    let limit = body.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::validation(vec![Violation::new("/limit", "1-500")]));
    }
    state.store.get(&body.draft_id).await?;
    let mut revs = state
        .store
        .revisions(&body.draft_id, body.before, limit, body.include_diff)
        .await?;
    for r in &mut revs {
        r.content = None;
    }
    let next_before = if i64::try_from(revs.len()).unwrap_or(0) == limit {
        revs.last().map(|r| r.revision)
    } else {
        None
    };
    Ok(RevisionsReply {
        draft_id: body.draft_id,
        revisions: revs,
        next_before,
    })
}

pub(super) async fn diff(
    state: Shared,
    _call: Call<Read>,
    body: DiffRequest,
) -> Result<DiffReply, Error> {
    let to_rev = match body.to {
        Some(t) => t,
        None => state.store.get(&body.draft_id).await?.version,
    };
    let from = state.store.revision(&body.draft_id, body.from).await?;
    let to = state.store.revision(&body.draft_id, to_rev).await?;
    let (a, b) = (
        from.content.unwrap_or_default(),
        to.content.unwrap_or_default(),
    );
    let from_rev = body.from;
    let changes = tokio::task::spawn_blocking(move || match body.level {
        DiffLevel::Line => Changes::Line {
            unified: unified(&a, &b, &format!("r{from_rev}"), &format!("r{to_rev}")),
        },
        DiffLevel::Word => Changes::Word {
            changes: words(&a, &b),
        },
    })
    .await
    .map_err(Error::internal)?;
    Ok(DiffReply {
        draft_id: body.draft_id,
        from: from_rev,
        to: to_rev,
        changes,
    })
}

/// Commits an old revision's title and content as a new revision.
pub(super) async fn restore(
    state: Shared,
    call: Call<Write>,
    body: RestoreRequest,
) -> Result<RestoreReply, Error> {
    if state.store.collab_live(&body.draft_id).await? {
        return Err(Error::conflict("the draft is being edited collaboratively"));
    }
    let old = state.store.revision(&body.draft_id, body.revision).await?;
    let draft = state.store.get(&body.draft_id).await?;
    let (draft, revision) = state
        .store
        .commit(
            &body.draft_id,
            Change {
                title: Some(old.title),
                content: old.content,
                tags: None,
                metadata: None,
                tone: None,
                target_audience: None,
                document_type: None,
                author_id: author(&call, body.author_id, || draft.author_id),
                source: RevisionSource::Restore,
                message: Some(format!("restore revision {}", body.revision)),
                expected_version: body.expected_version,
            },
        )
        .await?;
    state.autosave.discard(&body.draft_id).await?;
    Ok(RestoreReply(Committed { draft, revision }))
}
