//! `drafting.transition`: lifecycle moves (see [`DraftStatus::can_move_to`]).

use serde::{Deserialize, Serialize};
use ymera_core::Error;
use ymera_core::runtime::Call;

use super::drafts::status_at;
use super::{Shared, Write, author, flush_one};
use crate::store::{DraftStatus, Transition};

/// `drafting.transition` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    draft_id: String,
    /// A [`DraftStatus`] name, checked by the handler (422 naming `/to`).
    to: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// `drafting.transition` reply: the new status and every transition so far.
#[derive(Debug, Serialize)]
pub struct TransitionReply {
    draft_id: String,
    status: DraftStatus,
    transitions: Vec<Transition>,
}

pub(super) async fn transition(
    state: Shared,
    call: Call<Write>,
    body: TransitionRequest,
) -> Result<TransitionReply, Error> {
    let to = status_at("/to", &body.to)?;
    if state.store.collab_live(&body.draft_id).await? {
        return Err(Error::conflict(
            "the draft is being edited collaboratively; wait until the editors leave",
        ));
    }
    let draft = state.store.get(&body.draft_id).await?;
    if !draft.status.can_move_to(to) {
        return Err(Error::conflict(format!(
            "cannot move draft {} from {} to {to}",
            body.draft_id, draft.status
        ))
        .with_detail("status", draft.status.to_string()));
    }
    flush_one(&state, &body.draft_id).await?;
    let actor = author(&call, body.actor, || draft.author_id.clone());
    let draft = state
        .store
        .transition(
            &body.draft_id,
            draft.status,
            to,
            &actor,
            body.note.as_deref(),
        )
        .await?;
    let transitions = state.store.transitions(&body.draft_id).await?;
    Ok(TransitionReply {
        draft_id: draft.draft_id,
        status: draft.status,
        transitions,
    })
}
