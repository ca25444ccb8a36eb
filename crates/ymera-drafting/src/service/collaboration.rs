//! Live collaboration: `drafting.collab.join` and `collab.update` (yrs
//! documents in [`crate::collab`], updates broadcast on
//! `drafting.collab.<id>.updates`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ymera_core::runtime::Call;
use ymera_core::{Error, ErrorKind};

use super::{Shared, Write, author, check_id, commit_collab, flush_one};
use crate::collab::{Applied, JoinState};
use crate::store::DraftStatus;

/// Most waits of one join for a closing session's commit (10 ms each).
const MAX_JOIN_ATTEMPTS: u32 = 1000;

/// `drafting.collab.join` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabJoinRequest {
    draft_id: String,
    user_id: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// `drafting.collab.update` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollabUpdateRequest {
    draft_id: String,
    client_id: String,
    #[serde(default)]
    update: Option<String>,
    #[serde(default)]
    state_vector: Option<String>,
    #[serde(default)]
    leave: bool,
    /// Include the merged text in the reply; by default only replies to
    /// requests without an update or with a state vector (a resync) carry
    /// it, so keystroke replies stay small and cheap.
    #[serde(default)]
    text: Option<bool>,
}

/// `drafting.collab.join` reply: the document and where its updates go.
#[derive(Debug, Serialize)]
pub struct CollabJoinReply {
    #[serde(flatten)]
    state: JoinState,
    draft_id: String,
    client_id: String,
    /// The committed version the session started from.
    version: i32,
    updates_subject: String,
}

/// `drafting.collab.update` reply.
#[derive(Debug, Serialize)]
pub struct CollabUpdateReply {
    #[serde(flatten)]
    applied: Applied,
    /// On leave by the last editor: the version the merged text was
    /// committed as (`null` when unchanged); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    committed_version: Option<Option<i32>>,
}

/// What is published on `drafting.collab.<id>.updates`.
#[derive(Debug, Serialize)]
struct CollabUpdateBroadcast<'a> {
    draft_id: &'a str,
    client_id: &'a str,
    update: &'a str,
}

fn updates_subject(draft_id: &str) -> String {
    format!("drafting.collab.{draft_id}.updates")
}

pub(super) async fn join(
    state: Shared,
    call: Call<Write>,
    mut body: CollabJoinRequest,
) -> Result<CollabJoinReply, Error> {
    body.user_id = author(&call, Some(body.user_id), String::new);
    check_id("/user_id", &body.user_id)?;
    let client_id = body
        .client_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/client_id", &client_id)?;
    // A session that just closed opens again only from its committed text.
    let mut attempt = 0;
    let (draft, joined) = loop {
        attempt += 1;
        if attempt > MAX_JOIN_ATTEMPTS {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the previous collaboration session is still being committed; try again",
            ));
        }
        if state.collab.is_closing(&body.draft_id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // Typing buffered before the session starts belongs in its base text.
        flush_one(&state, &body.draft_id).await?;
        let draft = state.store.get(&body.draft_id).await?;
        if draft.status == DraftStatus::Archived {
            return Err(Error::conflict("the draft is archived"));
        }
        if let Some(joined) =
            state
                .collab
                .join(&body.draft_id, &draft.content, &client_id, &body.user_id)?
        {
            break (draft, joined);
        }
    };
    Ok(CollabJoinReply {
        state: joined,
        updates_subject: updates_subject(&body.draft_id),
        draft_id: body.draft_id,
        client_id,
        version: draft.version,
    })
}

pub(super) async fn update(
    state: Shared,
    _call: Call<Write>,
    body: CollabUpdateRequest,
) -> Result<CollabUpdateReply, Error> {
    check_id("/draft_id", &body.draft_id)?;
    // The broadcast is queued while the session's lock is held, so each
    // draft's updates go out in the order they were applied; the queue
    // slot is reserved first so nothing waits under that lock.
    let broadcast = match body.update.as_deref() {
        Some(update) => {
            let event = CollabUpdateBroadcast {
                draft_id: &body.draft_id,
                client_id: &body.client_id,
                update: update.trim(),
            };
            let payload = serde_json::to_vec(&event).map_err(Error::internal)?;
            let permit = state
                .broadcasts
                .reserve()
                .await
                .map_err(|_| Error::dependency_down("nats"))?;
            Some((permit, payload))
        }
        None => None,
    };
    let subject = updates_subject(&body.draft_id);
    let mut applied = state.collab.apply(
        &body.draft_id,
        &body.client_id,
        body.update.as_deref(),
        body.state_vector.as_deref(),
        body.text
            .unwrap_or(body.update.is_none() || body.state_vector.is_some()),
        || {
            if let Some((permit, payload)) = broadcast {
                permit.send((subject, payload.into()));
            }
        },
    )?;
    let mut committed_version = None;
    if body.leave
        && let Some(commit) = state.collab.leave(&body.draft_id, &body.client_id)
    {
        committed_version = Some(commit_collab(&state, commit).await?);
        applied.editors.clear();
    }
    Ok(CollabUpdateReply {
        applied,
        committed_version,
    })
}
