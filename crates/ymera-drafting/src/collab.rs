//! Real-time collaboration: one yrs document per actively edited draft
//! (text `content`, UTF-16 offsets as Yjs clients use), presence of who is
//! editing, and the merged text to commit as a revision.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
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
    /// Removed from the live sessions (committed or being committed).
    closed: bool,
    /// When the text was last committed (or loaded): the periodic commit
    /// waits a whole interval after it.
    committed_at: Instant,
    /// Share of the interval the next periodic commit waits: 0.5-1 (from
    /// the draft id) before the first, so sessions opened together do not
    /// all commit on the same tick and again together every interval; 1
    /// after it.
    wait_share: f64,
}

/// A stable number in [0.5, 1) from a draft id.
fn spread(draft_id: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    draft_id.hash(&mut h);
    0.5 + (h.finish() % 1024) as f64 / 2048.0
}

impl Session {
    fn new(draft_id: &str, content: &str) -> Session {
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
            closed: false,
            committed_at: Instant::now(),
            wait_share: spread(draft_id),
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

/// One session behind its own lock. `closed` is set (under the map's write
/// lock) when the session leaves the map, so a holder of a stale handle
/// never applies to a session nobody will commit.
type Slot = Arc<Mutex<Session>>;

/// All live sessions of this instance: a map behind a briefly held
/// read-write lock, each session behind its own mutex, so updates to
/// different drafts never wait for each other. No lock is held across an
/// await. Lock order: the map, then a session.
#[derive(Clone, Default)]
pub struct Collab {
    sessions: Arc<RwLock<HashMap<String, Slot>>>,
    /// Drafts whose session closed and whose final text is not committed
    /// yet: no new session opens from the stored content until it is.
    closing: Arc<Mutex<std::collections::HashSet<String>>>,
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

/// A poisoned lock only means a panic elsewhere; the data is still usable
/// (a yrs transaction is dropped on unwind).
fn lock(slot: &Slot) -> MutexGuard<'_, Session> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Collab {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Slot>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Slot>> {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self, draft_id: &str) -> Option<Slot> {
        self.read().get(draft_id).cloned()
    }

    fn gauge(len: usize) {
        metrics::gauge!("ymera_drafting_collab_sessions").set(len as f64);
    }

    /// Whether a draft has a live session.
    pub fn is_active(&self, draft_id: &str) -> bool {
        self.read().contains_key(draft_id)
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins (opening the session from `content` when there is none).
    /// `Ok(None)` when the draft's previous session closed and its text is
    /// not committed yet (or closes meanwhile): `content` may be stale, so
    /// the caller waits for [`Collab::is_closing`] to clear, reads the
    /// draft again and retries.
    pub fn join(
        &self,
        draft_id: &str,
        content: &str,
        client_id: &str,
        user_id: &str,
    ) -> Result<Option<JoinState>, Error> {
        {
            let Some(slot) = self.open(draft_id, content)? else {
                return Ok(None);
            };
            let mut session = lock(&slot);
            if session.closed {
                // Its last editor left meanwhile; its text is being committed.
                return Ok(None);
            }
            if !session.editors.contains_key(client_id) && session.editors.len() >= MAX_EDITORS {
                return Err(Error::conflict(format!(
                    "draft {draft_id} already has {MAX_EDITORS} editors"
                )));
            }
            session.editors.insert(
                client_id.to_owned(),
                (user_id.to_owned(), chrono::Utc::now(), Instant::now()),
            );
            let txn = session.doc.transact();
            Ok(Some(JoinState {
                state: B64.encode(txn.encode_state_as_update_v1(&StateVector::default())),
                state_vector: B64.encode(txn.state_vector().encode_v1()),
                text: session.text.get_string(&txn),
                editors: session.editors(),
            }))
        }
    }

    /// Whether a closed session's final text of `draft_id` awaits its commit.
    pub fn is_closing(&self, draft_id: &str) -> bool {
        self.closing().contains(draft_id)
    }

    /// The final text of a closed session was committed (or its commit
    /// failed): sessions may open from the stored content again.
    pub fn close_committed(&self, draft_id: &str) {
        self.closing().remove(draft_id);
    }

    fn closing(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.closing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session of a draft, opened from `content` when there is none;
    /// `None` while a closed session's text awaits its commit.
    fn open(&self, draft_id: &str, content: &str) -> Result<Option<Slot>, Error> {
        if let Some(slot) = self.slot(draft_id) {
            return Ok(Some(slot));
        }
        // Built outside any lock: loading a long text takes time.
        let fresh = Arc::new(Mutex::new(Session::new(draft_id, content)));
        let mut sessions = self.write();
        if let Some(slot) = sessions.get(draft_id) {
            return Ok(Some(slot.clone()));
        }
        // Checked under the map's write lock, where sessions close.
        if self.is_closing(draft_id) {
            return Ok(None);
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(Error::rate_limited(5_000));
        }
        sessions.insert(draft_id.to_owned(), fresh.clone());
        Self::gauge(sessions.len());
        Ok(Some(fresh))
    }

    /// Applies a client's update (base64 v1) and returns the new state
    /// (with the text when `want_text`). `on_applied` runs when an update
    /// was applied, still under the session's lock, so what it does (queue
    /// the broadcast) happens in the order updates were applied; it must
    /// not block.
    pub fn apply(
        &self,
        draft_id: &str,
        client_id: &str,
        update: Option<&str>,
        state_vector: Option<&str>,
        want_text: bool,
        on_applied: impl FnOnce(),
    ) -> Result<Applied, Error> {
        let decoded = update
            .map(|u| {
                let bytes = decode_b64("update", u)?;
                Update::decode_v1(&bytes)
                    .map_err(|e| Error::invalid_request(format!("bad update: {e}")))
            })
            .transpose()?;
        let sv = state_vector
            .map(|s| decode_b64("state_vector", s))
            .transpose()?
            .map(|b| {
                StateVector::decode_v1(&b)
                    .map_err(|e| Error::invalid_request(format!("bad state_vector: {e}")))
            })
            .transpose()?;
        let not_found = || {
            Error::not_found(format!(
                "no collaboration session for {draft_id}; join first"
            ))
        };
        let slot = self.slot(draft_id).ok_or_else(not_found)?;
        let mut session = lock(&slot);
        if session.closed {
            return Err(not_found());
        }
        let Some(editor) = session.editors.get_mut(client_id) else {
            return Err(Error::forbidden(format!(
                "client {client_id} has not joined draft {draft_id}"
            )));
        };
        editor.2 = Instant::now();
        if let Some(decoded) = decoded {
            let user = editor.0.clone();
            let mut txn = session.doc.transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| Error::invalid_request(format!("update cannot be applied: {e}")))?;
            drop(txn);
            on_applied();
            session.changed = true;
            if !session.authors.contains(&user) {
                session.authors.push(user);
            }
        }
        let txn = session.doc.transact();
        Ok(Applied {
            state_vector: B64.encode(txn.state_vector().encode_v1()),
            missing: sv.map(|sv| B64.encode(txn.encode_state_as_update_v1(&sv))),
            text: want_text.then(|| session.text.get_string(&txn)),
            editors: session.editors(),
        })
    }

    /// Closes and removes a session whose editors are all gone (under the
    /// map's write lock), returning what to commit; `None` when someone
    /// joined meanwhile or it is already closed.
    fn close_if_empty(
        &self,
        sessions: &mut HashMap<String, Slot>,
        draft_id: &str,
    ) -> Option<PendingCommit> {
        let slot = sessions.get(draft_id)?.clone();
        let mut session = lock(&slot);
        if session.closed || !session.editors.is_empty() {
            return None;
        }
        session.closed = true;
        sessions.remove(draft_id);
        self.closing().insert(draft_id.to_owned());
        Some(PendingCommit {
            draft_id: draft_id.to_owned(),
            text: session.text(),
            authors: std::mem::take(&mut session.authors),
            closed: true,
        })
    }

    /// Removes an editor; when it was the last, closes the session and
    /// returns the text to commit.
    pub fn leave(&self, draft_id: &str, client_id: &str) -> Option<PendingCommit> {
        let slot = self.slot(draft_id)?;
        {
            let mut session = lock(&slot);
            session.editors.remove(client_id);
            if session.closed || !session.editors.is_empty() {
                return None;
            }
        }
        let mut sessions = self.write();
        let commit = self.close_if_empty(&mut sessions, draft_id);
        Self::gauge(sessions.len());
        commit
    }

    /// Texts changed and last committed at least `interval` ago (marking
    /// them committed), and sessions whose editors all timed out (closed).
    /// Each session is locked only while its text is built.
    pub fn due_commits(&self, interval: Duration) -> Vec<PendingCommit> {
        let slots: Vec<(String, Slot)> = self
            .read()
            .iter()
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        let mut out = Vec::new();
        let mut idle = Vec::new();
        for (id, slot) in slots {
            let mut session = lock(&slot);
            if session.closed {
                continue;
            }
            session
                .editors
                .retain(|_, (_, _, seen)| seen.elapsed() < PRESENCE_TIMEOUT);
            if session.editors.is_empty() {
                idle.push(id);
                continue;
            }
            if !session.changed
                || session.committed_at.elapsed() < interval.mul_f64(session.wait_share)
            {
                continue;
            }
            session.changed = false;
            session.committed_at = Instant::now();
            session.wait_share = 1.0;
            let text = session.text();
            if text != session.committed {
                session.committed = text.clone();
                out.push(PendingCommit {
                    draft_id: id,
                    text,
                    authors: std::mem::take(&mut session.authors),
                    closed: false,
                });
            }
        }
        if !idle.is_empty() {
            let mut sessions = self.write();
            out.extend(
                idle.iter()
                    .filter_map(|id| self.close_if_empty(&mut sessions, id)),
            );
            Self::gauge(sessions.len());
        }
        out
    }

    /// Everything still open, for the final commit at shutdown.
    pub fn drain(&self) -> Vec<PendingCommit> {
        let mut sessions = self.write();
        let out = sessions
            .drain()
            .map(|(id, slot)| {
                let mut session = lock(&slot);
                session.closed = true;
                PendingCommit {
                    text: session.text(),
                    draft_id: id,
                    authors: std::mem::take(&mut session.authors),
                    closed: true,
                }
            })
            .collect();
        Self::gauge(0);
        out
    }

    /// Who is editing a draft.
    pub fn editors(&self, draft_id: &str) -> Vec<Editor> {
        self.slot(draft_id)
            .map(|slot| lock(&slot).editors())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A client edit as a base64 v1 update, made on `doc`.
    fn edit(doc: &Doc, at: u32, s: &str) -> String {
        let text = doc.get_or_insert_text(TEXT_NAME);
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        B64.encode(txn.encode_update_v1())
    }

    fn client(state: &JoinState) -> Doc {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let bytes = B64.decode(&state.state).unwrap();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&bytes).unwrap())
            .unwrap();
        doc
    }

    #[test]
    fn sessions_are_edited_in_parallel_and_each_commits_its_own_text() {
        let collab = Collab::default();
        let broadcasts = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for d in 0..8 {
                let (collab, broadcasts) = (collab.clone(), broadcasts.clone());
                scope.spawn(move || {
                    let id = format!("d{d}");
                    let joined = collab.join(&id, "start ", "c", "u").unwrap().unwrap();
                    let doc = client(&joined);
                    for k in 0..50 {
                        let update = edit(&doc, 0, &format!("{k}é "));
                        collab
                            .apply(&id, "c", Some(&update), None, false, || {
                                broadcasts.fetch_add(1, Ordering::Relaxed);
                            })
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(broadcasts.load(Ordering::Relaxed), 400);
        let mut commits = collab.due_commits(Duration::ZERO);
        commits.sort_by(|a, b| a.draft_id.cmp(&b.draft_id));
        assert_eq!(commits.len(), 8);
        for c in &commits {
            assert!(c.text.starts_with("49é 48é "), "{}", c.text);
            assert!(c.text.ends_with("0é start "), "{}", c.text);
            assert_eq!(c.authors, vec!["u".to_owned()]);
            assert!(!c.closed);
        }
        // Committed and unchanged since: nothing more to commit.
        assert!(collab.due_commits(Duration::ZERO).is_empty());
    }

    #[test]
    fn the_periodic_commit_waits_an_interval_after_the_last() {
        let collab = Collab::default();
        let doc = client(&collab.join("d", "", "c", "u").unwrap().unwrap());
        let update = edit(&doc, 0, "hi");
        collab
            .apply("d", "c", Some(&update), None, false, || {})
            .unwrap();
        assert!(collab.due_commits(Duration::from_secs(3600)).is_empty());
        let first = Duration::from_millis(400).mul_f64(spread("d"));
        std::thread::sleep(first + Duration::from_millis(10));
        let commits = collab.due_commits(Duration::from_millis(400));
        assert_eq!(commits.len(), 1, "the first commit waits {first:?}");
        assert_eq!(commits[0].text, "hi");
        let update = edit(&doc, 2, "!");
        collab
            .apply("d", "c", Some(&update), None, false, || {})
            .unwrap();
        // Later ones wait a whole interval.
        assert!(collab.due_commits(Duration::from_secs(3600)).is_empty());
        let commits = collab.due_commits(Duration::ZERO);
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0].text, "hi!");
    }

    #[test]
    fn a_rejected_update_is_not_broadcast_and_the_last_leave_commits() {
        let collab = Collab::default();
        let doc = client(&collab.join("d", "a", "c1", "u1").unwrap().unwrap());
        collab.join("d", "ignored", "c2", "u2").unwrap().unwrap();
        let mut called = false;
        let bad = collab.apply("d", "c1", Some("@@@"), None, false, || called = true);
        assert!(bad.is_err());
        let update = edit(&doc, 0, "x");
        let stranger = collab.apply("d", "c9", Some(&update), None, false, || called = true);
        assert!(stranger.is_err());
        assert!(!called);
        let applied = collab
            .apply("d", "c1", Some(&update), None, true, || called = true)
            .unwrap();
        assert!(called);
        assert_eq!(applied.text.as_deref(), Some("xa"));
        assert_eq!(applied.editors.len(), 2);
        assert_eq!(collab.leave("d", "c1"), None);
        let commit = collab.leave("d", "c2").unwrap();
        assert_eq!(commit.text, "xa");
        assert!(commit.closed);
        assert!(!collab.is_active("d"));
        assert!(
            collab
                .apply("d", "c2", Some(&update), None, false, || {})
                .is_err()
        );
        // Until the closed session's text is committed, no session opens
        // from (possibly stale) stored content; then a join opens it anew.
        assert!(collab.is_closing("d"));
        assert!(collab.join("d", "stale", "c3", "u3").unwrap().is_none());
        collab.close_committed("d");
        assert_eq!(
            collab.join("d", "fresh", "c3", "u3").unwrap().unwrap().text,
            "fresh"
        );
    }
}
