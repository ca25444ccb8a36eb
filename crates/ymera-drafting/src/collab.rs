//! Real-time collaboration: one yrs document per actively edited draft
//! (text `content`, UTF-16 offsets as Yjs clients use), presence of who is
//! editing, and the merged text to commit as a revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use ymera_core::Error;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

/// Name of the shared text in every draft document.
pub const TEXT_NAME: &str = "content";
/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Most editors per session.
pub const MAX_EDITORS: usize = 100;
/// Editors not heard from for this long are dropped from presence.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(120);

/// Someone editing a draft.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Editor {
    /// The connection (client) id.
    pub client_id: String,
    /// Who.
    pub user_id: String,
    /// Since when (RFC 3339).
    pub joined_at: chrono::DateTime<chrono::Utc>,
    /// Seconds since last heard from.
    pub idle_seconds: f64,
}

struct Session {
    doc: Doc,
    text: yrs::TextRef,
    editors: BTreeMap<String, (String, chrono::DateTime<chrono::Utc>, Instant)>,
    /// Text last committed (or loaded).
    committed: String,
    /// Editors who changed the text since the last commit.
    authors: Vec<String>,
    /// Whether an update was applied since the last commit check (so the
    /// periodic check only builds the text of sessions that changed).
    changed: bool,
}

impl Session {
    fn new(content: &str) -> Session {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let text = doc.get_or_insert_text(TEXT_NAME);
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, content);
        }
        Session {
            doc,
            text,
            editors: BTreeMap::new(),
            committed: content.to_owned(),
            authors: Vec::new(),
            changed: false,
        }
    }

    fn text(&self) -> String {
        let txn = self.doc.transact();
        self.text.get_string(&txn)
    }

    fn editors(&self) -> Vec<Editor> {
        self.editors
            .iter()
            .map(|(client, (user, joined, seen))| Editor {
                client_id: client.clone(),
                user_id: user.clone(),
                joined_at: *joined,
                idle_seconds: seen.elapsed().as_secs_f64(),
            })
            .collect()
    }
}

/// What a joining client gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinState {
    /// The whole document as a v1 update, base64.
    pub state: String,
    /// The server's state vector, base64 (v1).
    pub state_vector: String,
    /// The text now.
    pub text: String,
    /// Who is editing.
    pub editors: Vec<Editor>,
}

/// After an applied update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The server's state vector, base64 (v1).
    pub state_vector: String,
    /// What the client lacks (v1 update, base64) when it sent its state vector.
    pub missing: Option<String>,
    /// The text now, when asked for (building it costs time proportional
    /// to the document, so keystroke replies leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Who is editing.
    pub editors: Vec<Editor>,
}

/// Text to commit for a draft.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommit {
    /// The draft.
    pub draft_id: String,
    /// The merged text.
    pub text: String,
    /// Who changed it.
    pub authors: Vec<String>,
    /// Whether the session ended (last editor left).
    pub closed: bool,
}

/// All live sessions of this instance.
#[derive(Clone, Default)]
pub struct Collab {
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl std::fmt::Debug for Collab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collab")
    }
}

fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, Error> {
    B64.decode(value.trim())
        .map_err(|e| Error::invalid_request(format!("{field} is not base64: {e}")))
}

impl Collab {
    /// Whether a draft has a live session.
    pub async fn is_active(&self, draft_id: &str) -> bool {
        self.sessions.lock().await.contains_key(draft_id)
    }

    /// Number of live sessions.
    pub async fn len(&self) -> usize {
        self.sessions.lock().await.len()
    }

    /// Whether there are no sessions.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Joins (opening the session from `content` when there is none).
    pub async fn join(
        &self,
        draft_id: &str,
        content: &str,
        client_id: &str,
        user_id: &str,
    ) -> Result<JoinState, Error> {
        let mut sessions = self.sessions.lock().await;
        if !sessions.contains_key(draft_id) && sessions.len() >= MAX_SESSIONS {
            return Err(Error::rate_limited(5_000));
        }
        let session = sessions
            .entry(draft_id.to_owned())
            .or_insert_with(|| Session::new(content));
        if !session.editors.contains_key(client_id) && session.editors.len() >= MAX_EDITORS {
            return Err(Error::conflict(format!(
                "draft {draft_id} already has {MAX_EDITORS} editors"
            )));
        }
        session.editors.insert(
            client_id.to_owned(),
            (user_id.to_owned(), chrono::Utc::now(), Instant::now()),
        );
        metrics::gauge!("ymera_drafting_collab_sessions").set(sessions.len() as f64);
        let session = sessions
            .get(draft_id)
            .ok_or_else(|| Error::internal("session vanished"))?;
        let txn = session.doc.transact();
        Ok(JoinState {
            state: B64.encode(txn.encode_state_as_update_v1(&StateVector::default())),
            state_vector: B64.encode(txn.state_vector().encode_v1()),
            text: session.text.get_string(&txn),
            editors: session.editors(),
        })
    }

    /// Applies a client's update (base64 v1). Returns the raw update bytes
    /// to broadcast and the new state (with the text when `want_text`).
    pub async fn apply(
        &self,
        draft_id: &str,
        client_id: &str,
        update: Option<&str>,
        state_vector: Option<&str>,
        want_text: bool,
    ) -> Result<(Option<Vec<u8>>, Applied), Error> {
        let raw = update.map(|u| decode_b64("update", u)).transpose()?;
        let sv = state_vector
            .map(|s| decode_b64("state_vector", s))
            .transpose()?
            .map(|b| {
                StateVector::decode_v1(&b)
                    .map_err(|e| Error::invalid_request(format!("bad state_vector: {e}")))
            })
            .transpose()?;
        let mut sessions = self.sessions.lock().await;
        let session = sessions.get_mut(draft_id).ok_or_else(|| {
            Error::not_found(format!(
                "no collaboration session for {draft_id}; join first"
            ))
        })?;
        let Some(editor) = session.editors.get_mut(client_id) else {
            return Err(Error::forbidden(format!(
                "client {client_id} has not joined draft {draft_id}"
            )));
        };
        editor.2 = Instant::now();
        let user = editor.0.clone();
        if let Some(bytes) = &raw {
            let decoded = Update::decode_v1(bytes)
                .map_err(|e| Error::invalid_request(format!("bad update: {e}")))?;
            let mut txn = session.doc.transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| Error::invalid_request(format!("update cannot be applied: {e}")))?;
            drop(txn);
            session.changed = true;
            if !session.authors.contains(&user) {
                session.authors.push(user);
            }
        }
        let txn = session.doc.transact();
        let applied = Applied {
            state_vector: B64.encode(txn.state_vector().encode_v1()),
            missing: sv.map(|sv| B64.encode(txn.encode_state_as_update_v1(&sv))),
            text: want_text.then(|| session.text.get_string(&txn)),
            editors: session.editors(),
        };
        Ok((raw, applied))
    }

    /// Removes an editor; when it was the last, closes the session and
    /// returns the text to commit.
    pub async fn leave(&self, draft_id: &str, client_id: &str) -> Option<PendingCommit> {
        let mut sessions = self.sessions.lock().await;
        let session = sessions.get_mut(draft_id)?;
        session.editors.remove(client_id);
        if !session.editors.is_empty() {
            return None;
        }
        let session = sessions.remove(draft_id)?;
        metrics::gauge!("ymera_drafting_collab_sessions").set(sessions.len() as f64);
        Some(PendingCommit {
            draft_id: draft_id.to_owned(),
            text: session.text(),
            authors: session.authors,
            closed: true,
        })
    }

    /// Texts changed since their last commit (marking them committed), and
    /// sessions whose editors all timed out (closed).
    pub async fn due_commits(&self) -> Vec<PendingCommit> {
        let mut sessions = self.sessions.lock().await;
        let mut out = Vec::new();
        let mut closed = Vec::new();
        for (id, session) in sessions.iter_mut() {
            session
                .editors
                .retain(|_, (_, _, seen)| seen.elapsed() < PRESENCE_TIMEOUT);
            let idle = session.editors.is_empty();
            if !session.changed && !idle {
                continue;
            }
            session.changed = false;
            let text = session.text();
            if text != session.committed || idle {
                session.committed = text.clone();
                out.push(PendingCommit {
                    draft_id: id.clone(),
                    text,
                    authors: std::mem::take(&mut session.authors),
                    closed: idle,
                });
            }
            if idle {
                closed.push(id.clone());
            }
        }
        for id in closed {
            sessions.remove(&id);
        }
        metrics::gauge!("ymera_drafting_collab_sessions").set(sessions.len() as f64);
        out
    }

    /// Everything still open, for the final commit at shutdown.
    pub async fn drain(&self) -> Vec<PendingCommit> {
        let mut sessions = self.sessions.lock().await;
        sessions
            .drain()
            .map(|(id, s)| PendingCommit {
                text: s.text(),
                draft_id: id,
                authors: s.authors,
                closed: true,
            })
            .collect()
    }

    /// Who is editing a draft.
    pub async fn editors(&self, draft_id: &str) -> Vec<Editor> {
        self.sessions
            .lock()
            .await
            .get(draft_id)
            .map(Session::editors)
            .unwrap_or_default()
    }
}
