//! A simulated editor: a yrs document that makes local edits and applies
//! the others' broadcast updates.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use ymera_core::client::ServiceClient;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, Text, Transact, Update};

use super::document::Rng;

/// Send times of a session's updates not yet received by every other
/// editor, keyed by a hash of the broadcast update.
pub(super) type Pending = Arc<Mutex<HashMap<u64, (Instant, u32)>>>;

pub(super) struct Editor {
    pub(super) draft_id: String,
    pub(super) client_id: String,
    pub(super) doc: Arc<Mutex<Doc>>,
    pub(super) pending: Pending,
    pub(super) client: ServiceClient,
    pub(super) rng: Rng,
}

#[derive(Deserialize)]
pub(super) struct Broadcast<'a> {
    #[serde(borrow)]
    pub(super) client_id: &'a str,
    #[serde(borrow)]
    pub(super) update: &'a str,
}

pub(super) fn key_of(update_b64: &str) -> u64 {
    let mut h = DefaultHasher::new();
    update_b64.hash(&mut h);
    h.finish()
}

pub(super) fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

pub(super) fn doc_text(doc: &Arc<Mutex<Doc>>) -> String {
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    text.get_string(&txn)
}

pub(super) fn apply_b64(doc: &Arc<Mutex<Doc>>, b64: &str) -> anyhow::Result<()> {
    let bytes = B64.decode(b64)?;
    let update = Update::decode_v1(&bytes)?;
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    doc.transact_mut().apply_update(update)?;
    Ok(())
}

/// Where an editor's cursor may be: the first `CURSOR_REGION` UTF-16
/// units. yrs finds an index by walking the document's blocks from the
/// start, so random positions in a long document would make this load
/// generator measure itself; the editors typing in one shared region also
/// makes concurrent inserts and deletes interleave as often as possible.
const CURSOR_REGION: usize = 64;

/// One local edit (insert mostly, sometimes a short delete) → the update.
pub(super) fn local_edit(doc: &Arc<Mutex<Doc>>, rng: &mut Rng, label: &str) -> String {
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    let len = text.len(&txn) as usize;
    if len > 40 && rng.below(5) == 0 {
        let at = rng.below((len - 3).min(CURSOR_REGION)) as u32;
        text.remove_range(&mut txn, at, 1 + rng.below(3) as u32);
    } else {
        let at = rng.below(len.min(CURSOR_REGION) + 1) as u32;
        text.insert(&mut txn, at, label);
    }
    B64.encode(txn.encode_update_v1())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn edits_converge_between_two_docs() {
        let (a, b) = (
            Arc::new(Mutex::new(new_doc())),
            Arc::new(Mutex::new(new_doc())),
        );
        let mut rng = Rng::new(1);
        for k in 0..50 {
            let ua = local_edit(&a, &mut rng, &format!("a{k} "));
            let ub = local_edit(&b, &mut rng, &format!("«b{k}» "));
            apply_b64(&b, &ua).unwrap();
            apply_b64(&a, &ub).unwrap();
        }
        assert_eq!(doc_text(&a), doc_text(&b));
        assert!(doc_text(&a).contains('«'));
    }
}
