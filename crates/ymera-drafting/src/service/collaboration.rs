//! Live collaboration: `drafting.collab.join` and `collab.update` on any
//! replica. Sessions live in PostgreSQL (`crate::store` `collab`), each
//! replica caches their yrs documents ([`crate::collab::Collab`]); updates
//! are stored before they are acknowledged and broadcast on
//! `drafting.collab.<id>.updates` with their number, which the other
//! replicas apply to their cached documents.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use ymera_core::Error;
use yrs::StateVector;

use super::{Shared, State, Write, author, check_id, flush_one};
use crate::collab::{self, Applied, Editor, JoinState, View};
use crate::store::{Append, CommitMode};
use ymera_core::runtime::Call;

/// Most rebuilds of a cached document one request tries (each after the
/// session was folded or evicted under it).
const MAX_REBUILDS: u32 = 5;

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
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CollabUpdateBroadcast {
    pub(super) draft_id: String,
    pub(super) client_id: String,
    pub(super) update: String,
    /// The update's number in its session (1, 2, …; consecutive).
    pub(super) seq: i64,
    /// The session (a draft's next session starts again at 1).
    pub(super) session_id: Uuid,
}

fn updates_subject(draft_id: &str) -> String {
    format!("drafting.collab.{draft_id}.updates")
}

/// Brings this replica's cached document of a session to at least `seq`:
/// from the log when it is cached and the log still has the updates it
/// lacks, else rebuilt from the stored base document.
async fn ensure(state: &State, draft_id: &str, session_id: Uuid, seq: i64) -> Result<(), Error> {
    let gone = || {
        Error::not_found(format!(
            "the collaboration session of {draft_id} ended; join again"
        ))
    };
    if let Some(at) = state.collab.position(draft_id, session_id) {
        if at >= seq {
            return Ok(());
        }
        let updates = state
            .store
            .collab_updates(draft_id, session_id, at, seq)
            .await?
            .ok_or_else(gone)?;
        if state.collab.extend(draft_id, session_id, &updates, seq) {
            return Ok(());
        }
    }
    let (session, updates) = state
        .store
        .collab_load(draft_id, session_id, seq)
        .await?
        .ok_or_else(gone)?;
    metrics::counter!("ymera_drafting_collab_rebuilds_total").increment(1);
    state.collab.install(
        draft_id,
        session_id,
        &session.base_state,
        session.base_seq,
        &updates,
    )
}

/// The cached document's view at `seq` or later, rebuilding it when it was
/// evicted meanwhile.
async fn view(
    state: &State,
    draft_id: &str,
    session_id: Uuid,
    seq: i64,
    sv: Option<&StateVector>,
    want_state: bool,
    want_text: bool,
) -> Result<View, Error> {
    for _ in 0..MAX_REBUILDS {
        ensure(state, draft_id, session_id, seq).await?;
        if let Some(v) = state
            .collab
            .view(draft_id, session_id, sv, want_state, want_text)
        {
            return Ok(v);
        }
    }
    Err(Error::new(
        ymera_core::ErrorKind::Unavailable,
        "the collaboration document is being rebuilt; try again",
    ))
}

pub(super) async fn join(
    state: Shared,
    call: Call<Write>,
    mut body: CollabJoinRequest,
) -> Result<CollabJoinReply, Error> {
    check_id("/draft_id", &body.draft_id)?;
    body.user_id = author(&call, Some(body.user_id), String::new);
    check_id("/user_id", &body.user_id)?;
    let client_id = body
        .client_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    check_id("/client_id", &client_id)?;
    // Typing buffered before the session starts belongs in its base text.
    flush_one(&state, &body.draft_id).await?;
    let (draft, session_id, seq) = state
        .store
        .collab_join(
            &body.draft_id,
            &client_id,
            &body.user_id,
            collab::spread(&body.draft_id),
            collab::base_state,
        )
        .await?;
    state.collab.should_touch(&body.draft_id, &client_id);
    let v = view(&state, &body.draft_id, session_id, seq, None, true, true).await?;
    let editors = state.store.collab_editors(&body.draft_id).await?;
    Ok(CollabJoinReply {
        state: JoinState {
            state: collab::b64(&v.state.unwrap_or_default()),
            state_vector: collab::b64(&v.state_vector),
            text: v.text.unwrap_or_default(),
            editors,
        },
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
    check_id("/client_id", &body.client_id)?;
    let update = body
        .update
        .as_deref()
        .map(|u| {
            let bytes = collab::decode_b64("update", u)?;
            collab::check_update(&bytes)?;
            Ok::<_, Error>(bytes)
        })
        .transpose()?;
    let sv = body
        .state_vector
        .as_deref()
        .map(|s| {
            collab::decode_b64("state_vector", s).and_then(|b| collab::decode_state_vector(&b))
        })
        .transpose()?;
    // The broadcast's queue slot is reserved before the update is stored,
    // so a stored update is always broadcast.
    let permit = match update {
        Some(_) => Some(
            state
                .broadcasts
                .reserve()
                .await
                .map_err(|_| Error::dependency_down("nats"))?,
        ),
        None => None,
    };
    let (session_id, seq, mut editors) = match state
        .store
        .collab_append(&body.draft_id, &body.client_id, update.as_deref())
        .await?
    {
        Append::Done {
            session_id,
            seq,
            editors,
        } => (session_id, seq, editors),
        Append::NotJoined => {
            return Err(Error::forbidden(format!(
                "client {} has not joined draft {}",
                body.client_id, body.draft_id
            )));
        }
        Append::NoSession => {
            return Err(Error::not_found(format!(
                "no collaboration session for {}; join first",
                body.draft_id
            )));
        }
    };
    if let (Some(bytes), Some(permit)) = (&update, permit) {
        if !state.collab.advance(&body.draft_id, session_id, seq, bytes) {
            ensure(&state, &body.draft_id, session_id, seq).await?;
        }
        let event = CollabUpdateBroadcast {
            draft_id: body.draft_id.clone(),
            client_id: body.client_id.clone(),
            update: collab::b64(bytes),
            seq,
            session_id,
        };
        let payload = serde_json::to_vec(&event).map_err(Error::internal)?;
        permit.send((updates_subject(&body.draft_id), payload.into()));
    }
    if state.collab.should_touch(&body.draft_id, &body.client_id) {
        state
            .store
            .collab_touch(&body.draft_id, &body.client_id)
            .await?;
    }
    let want_text = body
        .text
        .unwrap_or(body.update.is_none() || body.state_vector.is_some());
    let v = view(
        &state,
        &body.draft_id,
        session_id,
        seq,
        sv.as_ref(),
        false,
        want_text,
    )
    .await?;
    let mut committed_version = None;
    if body.leave {
        let done = super::commit_session(
            &state,
            &body.draft_id,
            CommitMode::Leave(body.client_id.clone()),
        )
        .await?;
        if done.closed {
            committed_version = Some(done.version);
            editors.clear();
        } else {
            editors.retain(|e: &Editor| e.client_id != body.client_id);
        }
    }
    Ok(CollabUpdateReply {
        applied: Applied {
            state_vector: collab::b64(&v.state_vector),
            missing: v.missing.map(|m| collab::b64(&m)),
            text: v.text,
            editors,
        },
        committed_version,
    })
}

/// Applies what another replica broadcast to this replica's cached
/// document (when it is the next update; a gap is filled from the log on
/// the next request).
pub(super) fn observe(state: &State, payload: &[u8]) {
    let Ok(event) = serde_json::from_slice::<CollabUpdateBroadcast>(payload) else {
        return;
    };
    if let Ok(bytes) = collab::decode_b64("update", &event.update) {
        state
            .collab
            .advance(&event.draft_id, event.session_id, event.seq, &bytes);
    }
}
