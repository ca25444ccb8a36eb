//! Real-time collaboration documents: yrs (Yjs-compatible, text `content`,
//! UTF-16 offsets as Yjs clients use) and this replica's cache of them.
//!
//! A session is stored in PostgreSQL (`crate::store` `collab`): the
//! document as of its last commit and the numbered updates after it. Any
//! replica rebuilds a session from there, so join and update work on every
//! replica and a session outlives the process that opened it. [`Collab`]
//! holds the documents this replica has rebuilt, each at a known `seq`,
//! advanced by the updates it appends, by the broadcasts of the other
//! replicas it sees (`drafting.collab.<id>.updates`) and, after a gap, from
//! the log. The cache is only a cache: dropping any of it loses nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use ymera_core::Error;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, OffsetKind, Options, ReadTxn, StateVector, Text, Transact, Update};

use crate::store::StoredUpdate;

/// Name of the shared text in every draft document.
pub const TEXT_NAME: &str = "content";
/// Most sessions live at once (all replicas).
pub const MAX_SESSIONS: usize = 10_000;
/// Most editors per session.
pub const MAX_EDITORS: usize = 100;
/// Editors not heard from for this long are dropped from presence; a
/// session without editors is committed and closed.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(120);
/// Updates after which a session is committed (and its log folded into
/// its base document) before its auto-save interval is up.
pub const MAX_BACKLOG: i64 = 1_000;
/// Most documents one replica caches.
pub const MAX_LOCAL_DOCS: usize = 2_000;
/// A cached document unused for this long is dropped.
pub const LOCAL_IDLE: Duration = Duration::from_secs(600);
/// How often an editor's presence is refreshed in the store at most (per
/// replica): every request is a heartbeat, but only this often a write.
pub const TOUCH_EVERY: Duration = Duration::from_secs(5);

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

/// A stable number in [0.5, 1) from a draft id: the share of the interval
/// a session's first periodic commit waits, so sessions opened together do
/// not all commit on the same tick.
pub fn spread(draft_id: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    draft_id.hash(&mut h);
    0.5 + (h.finish() % 1024) as f64 / 2048.0
}

fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

/// The document a new session starts from: `content` inserted once, as a
/// v1 update. Built by the one replica that opens the session and stored,
/// so every replica's document has the same items.
pub fn base_state(content: &str) -> Vec<u8> {
    let doc = new_doc();
    let text = doc.get_or_insert_text(TEXT_NAME);
    {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, content);
    }
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// Decodes base64 `value` of request field `field`.
pub fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, Error> {
    B64.decode(value.trim())
        .map_err(|e| Error::invalid_request(format!("{field} is not base64: {e}")))
}

/// A client's update (v1 bytes), refused (400) unless it decodes.
pub fn check_update(bytes: &[u8]) -> Result<(), Error> {
    Update::decode_v1(bytes)
        .map(|_| ())
        .map_err(|e| Error::invalid_request(format!("bad update: {e}")))
}

/// A client's state vector (v1 bytes).
pub fn decode_state_vector(bytes: &[u8]) -> Result<StateVector, Error> {
    StateVector::decode_v1(bytes)
        .map_err(|e| Error::invalid_request(format!("bad state_vector: {e}")))
}

/// Applies stored update bytes; one that does not apply is skipped (it
/// was checked when it arrived, so this is only logged).
fn apply_bytes(doc: &Doc, bytes: &[u8]) {
    let applied = Update::decode_v1(bytes)
        .map_err(|e| e.to_string())
        .and_then(|u| {
            doc.transact_mut()
                .apply_update(u)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = applied {
        tracing::warn!(error = %e, "a stored collaboration update does not apply; skipped");
    }
}

fn build(base: &[u8], updates: &[StoredUpdate]) -> Result<Doc, Error> {
    let doc = new_doc();
    let update = Update::decode_v1(base).map_err(Error::internal)?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(Error::internal)?;
    for (_, _, bytes) in updates {
        apply_bytes(&doc, bytes);
    }
    Ok(doc)
}

fn text_of(doc: &Doc) -> String {
    let text = doc.get_or_insert_text(TEXT_NAME);
    text.get_string(&doc.transact())
}

/// The merged text and the new base document (v1) of a base document and
/// the updates after it: what a commit stores.
pub fn merge(base: &[u8], updates: &[StoredUpdate]) -> Result<(String, Vec<u8>), Error> {
    let doc = build(base, updates)?;
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok((text_of(&doc), state))
}

struct LocalDoc {
    session_id: Uuid,
    doc: Doc,
    /// Every update up to this one is applied (later ones may be too).
    seq: i64,
    used: Instant,
}

type Slot = Arc<Mutex<LocalDoc>>;

fn lock(slot: &Slot) -> MutexGuard<'_, LocalDoc> {
    // A poisoned lock only means a panic elsewhere; a yrs transaction is
    // dropped on unwind, so the document is still usable.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This replica's cached session documents (bounded, evicted when idle),
/// each behind its own mutex so different drafts never wait for each
/// other; no lock is held across an await.
#[derive(Clone, Default)]
pub struct Collab {
    docs: Arc<RwLock<HashMap<String, Slot>>>,
    touched: Arc<Mutex<HashMap<(String, String), Instant>>>,
}

impl std::fmt::Debug for Collab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collab")
    }
}

/// The cached document's answer to a request.
#[derive(Debug, Clone)]
pub struct View {
    /// State vector (v1).
    pub state_vector: Vec<u8>,
    /// What a client with the given state vector lacks (v1).
    pub missing: Option<Vec<u8>>,
    /// The whole document (v1), when asked for.
    pub state: Option<Vec<u8>>,
    /// The text, when asked for.
    pub text: Option<String>,
}

impl Collab {
    fn slot(&self, draft_id: &str, session_id: Uuid) -> Option<Slot> {
        let docs = self.docs.read().unwrap_or_else(PoisonError::into_inner);
        let slot = docs.get(draft_id)?.clone();
        let same = lock(&slot).session_id == session_id;
        same.then_some(slot)
    }

    /// Cached documents.
    pub fn len(&self) -> usize {
        self.docs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seq the cached document of this session is at, if cached.
    pub fn position(&self, draft_id: &str, session_id: Uuid) -> Option<i64> {
        self.slot(draft_id, session_id).map(|s| lock(&s).seq)
    }

    /// Caches a session rebuilt from its base document (at `base_seq`) and
    /// the updates after it, replacing an older one.
    pub fn install(
        &self,
        draft_id: &str,
        session_id: Uuid,
        base: &[u8],
        base_seq: i64,
        updates: &[StoredUpdate],
    ) -> Result<(), Error> {
        let doc = build(base, updates)?;
        let seq = updates.last().map_or(base_seq, |u| u.0.max(base_seq));
        let fresh = Arc::new(Mutex::new(LocalDoc {
            session_id,
            doc,
            seq,
            used: Instant::now(),
        }));
        let mut docs = self.docs.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = docs.get(draft_id) {
            let old = lock(old);
            // A concurrent rebuild of the same session got further.
            if old.session_id == session_id && old.seq >= seq {
                return Ok(());
            }
        }
        if docs.len() >= MAX_LOCAL_DOCS && !docs.contains_key(draft_id) {
            let oldest = docs
                .iter()
                .min_by_key(|(_, s)| lock(s).used)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                docs.remove(&id);
            }
        }
        docs.insert(draft_id.to_owned(), fresh);
        Ok(())
    }

    /// Applies consecutive updates from the log to the cached document;
    /// whether it is then at `upto` (false: not cached, or a gap — the
    /// caller rebuilds it).
    pub fn extend(
        &self,
        draft_id: &str,
        session_id: Uuid,
        updates: &[StoredUpdate],
        upto: i64,
    ) -> bool {
        let Some(slot) = self.slot(draft_id, session_id) else {
            return false;
        };
        let mut local = lock(&slot);
        for (seq, _, bytes) in updates {
            if *seq == local.seq + 1 {
                apply_bytes(&local.doc, bytes);
                local.seq = *seq;
            }
        }
        local.used = Instant::now();
        local.seq >= upto
    }

    /// Applies update `seq` of a session (this replica's own, or one seen
    /// on the broadcast subject) when the cached document is at `seq - 1`;
    /// whether the document is then at `seq` or further.
    pub fn advance(&self, draft_id: &str, session_id: Uuid, seq: i64, bytes: &[u8]) -> bool {
        let Some(slot) = self.slot(draft_id, session_id) else {
            return false;
        };
        let mut local = lock(&slot);
        if local.seq + 1 == seq {
            apply_bytes(&local.doc, bytes);
            local.seq = seq;
        }
        local.used = Instant::now();
        local.seq >= seq
    }

    /// What the cached document answers (`None`: not cached any more).
    pub fn view(
        &self,
        draft_id: &str,
        session_id: Uuid,
        state_vector: Option<&StateVector>,
        want_state: bool,
        want_text: bool,
    ) -> Option<View> {
        let slot = self.slot(draft_id, session_id)?;
        let mut local = lock(&slot);
        local.used = Instant::now();
        let text = local.doc.get_or_insert_text(TEXT_NAME);
        let txn = local.doc.transact();
        Some(View {
            state_vector: txn.state_vector().encode_v1(),
            missing: state_vector.map(|sv| txn.encode_state_as_update_v1(sv)),
            state: want_state.then(|| txn.encode_state_as_update_v1(&StateVector::default())),
            text: want_text.then(|| text.get_string(&txn)),
        })
    }

    /// Forgets a draft's document (its session closed).
    pub fn remove(&self, draft_id: &str) {
        let mut docs = self.docs.write().unwrap_or_else(PoisonError::into_inner);
        docs.remove(draft_id);
    }

    /// Drops documents unused for [`LOCAL_IDLE`] and old presence marks.
    pub fn sweep(&self) {
        let mut docs = self.docs.write().unwrap_or_else(PoisonError::into_inner);
        docs.retain(|_, s| lock(s).used.elapsed() < LOCAL_IDLE);
        drop(docs);
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        touched.retain(|_, t| t.elapsed() < TOUCH_EVERY * 2);
    }

    /// Whether this replica should refresh the editor's presence in the
    /// store now (at most every [`TOUCH_EVERY`]).
    pub fn should_touch(&self, draft_id: &str, client_id: &str) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (draft_id.to_owned(), client_id.to_owned());
        match touched.get(&key) {
            Some(t) if t.elapsed() < TOUCH_EVERY => false,
            _ => {
                if touched.len() >= 100_000 {
                    touched.clear();
                }
                touched.insert(key, Instant::now());
                true
            }
        }
    }
}

/// Base64 of bytes, as the wire carries them.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client edit as v1 update bytes, made on `doc`.
    fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text(TEXT_NAME);
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, at, s);
        txn.encode_update_v1()
    }

    fn client(state: &[u8]) -> Doc {
        let doc = new_doc();
        doc.transact_mut()
            .apply_update(Update::decode_v1(state).unwrap())
            .unwrap();
        doc
    }

    #[test]
    fn replicas_rebuilding_from_the_log_converge_with_a_cached_document() {
        let base = base_state("start ");
        let session = Uuid::now_v7();
        let a = client(&base);
        let b = client(&base);
        let log: Vec<StoredUpdate> = vec![
            (1, "ann".into(), edit(&a, 0, "A1 ")),
            (2, "bob".into(), edit(&b, 6, "B1 ")),
            (3, "ann".into(), edit(&a, 0, "A2 ")),
        ];
        // One replica follows update by update, another rebuilds at once.
        let r1 = Collab::default();
        r1.install("d", session, &base, 0, &[]).unwrap();
        for (seq, _, bytes) in &log {
            assert!(r1.advance("d", session, *seq, bytes));
        }
        // A gap is not applied out of order.
        assert!(!r1.advance("d", session, 5, &log[0].2));
        let r2 = Collab::default();
        r2.install("d", session, &base, 0, &log).unwrap();
        let t1 = r1.view("d", session, None, false, true).unwrap().text;
        let t2 = r2.view("d", session, None, false, true).unwrap().text;
        assert_eq!(t1, t2);
        let (merged, folded) = merge(&base, &log).unwrap();
        assert_eq!(Some(merged.clone()), t1);
        assert!(merged.contains("A1 ") && merged.contains("B1 ") && merged.contains("A2 "));
        // The folded base holds the same document.
        let r3 = Collab::default();
        r3.install("d", session, &folded, 3, &[]).unwrap();
        assert_eq!(
            r3.view("d", session, None, false, true).unwrap().text,
            Some(merged)
        );
        // Another opening of the same draft is another document.
        assert!(r3.view("d", Uuid::now_v7(), None, false, true).is_none());
        assert_eq!(r3.position("d", session), Some(3));
    }

    #[test]
    fn bad_input_is_refused_and_the_cache_is_bounded() {
        assert!(check_update(b"@@@").is_err());
        assert!(decode_b64("update", "@@@").is_err());
        let c = Collab::default();
        let base = base_state("");
        for i in 0..MAX_LOCAL_DOCS + 5 {
            c.install(&format!("d{i}"), Uuid::now_v7(), &base, 0, &[])
                .unwrap();
        }
        assert_eq!(c.len(), MAX_LOCAL_DOCS);
        assert!(c.should_touch("d", "c"));
        assert!(!c.should_touch("d", "c"));
    }
}
