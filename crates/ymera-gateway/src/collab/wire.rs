//! The y-websocket wire protocol (the `y-protocols` sync and awareness
//! messages, as `yrs::sync` implements them): what a frame from a client
//! means, and the frames the gateway sends.
//!
//! A frame is one message: a var-uint type (0 sync, 1 awareness, 2 auth,
//! 3 query awareness) and its body; a sync message has a sub-type (0 step 1
//! with a state vector, 1 step 2 with an update, 2 update).

use std::collections::HashMap;
use std::sync::Arc;

use yrs::StateVector;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::Encode;

/// Most clients one awareness message may describe.
pub const MAX_AWARENESS_CLIENTS: usize = 64;

/// What a client frame asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Sync step 1: the client's state vector (it wants what it lacks).
    StateVector(StateVector),
    /// Sync step 2 or update: a v1 update for the document.
    Update(Vec<u8>),
    /// An awareness update (forwarded as is) and the clients it names with their clocks.
    Awareness {
        /// The frame, unchanged.
        frame: Vec<u8>,
        /// Client id → clock of every entry.
        clients: Vec<(u64, u32)>,
    },
    /// A query for everybody's awareness.
    AwarenessQuery,
    /// An auth message (clients do not send these; ignored).
    Auth,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not a y-websocket message.
    #[error("malformed y-websocket message: {0}")]
    Malformed(String),
    /// A message type the protocol does not define.
    #[error("unsupported y-websocket message type {0}")]
    Unsupported(u8),
    /// An awareness message naming too many clients.
    #[error("an awareness message may describe at most {MAX_AWARENESS_CLIENTS} clients")]
    TooManyClients,
}

/// Decodes one client frame.
///
/// yrs asserts (in debug builds) that client ids fit 53 bits while it
/// decodes; a hostile frame must not take the connection's task down, so
/// such a panic is turned into a refusal.
pub fn decode(frame: &[u8]) -> Result<ClientFrame, FrameError> {
    std::panic::catch_unwind(|| decode_message(frame))
        .unwrap_or_else(|_| Err(FrameError::Malformed("a client id over 53 bits".to_owned())))
}

fn decode_message(frame: &[u8]) -> Result<ClientFrame, FrameError> {
    let mut decoder = DecoderV1::from(frame);
    let message =
        Message::decode(&mut decoder).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let parsed = match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => ClientFrame::StateVector(sv),
        Message::Sync(SyncMessage::SyncStep2(u)) | Message::Sync(SyncMessage::Update(u)) => {
            yrs::Update::decode_v1(&u)
                .map_err(|e| FrameError::Malformed(format!("bad update: {e}")))?;
            ClientFrame::Update(u)
        }
        Message::Awareness(update) => {
            if update.clients.len() > MAX_AWARENESS_CLIENTS {
                return Err(FrameError::TooManyClients);
            }
            let mut clients: Vec<(u64, u32)> = update
                .clients
                .iter()
                .map(|(id, e)| (id.get(), e.clock))
                .collect();
            clients.sort_unstable();
            ClientFrame::Awareness {
                frame: frame.to_vec(),
                clients,
            }
        }
        Message::AwarenessQuery => ClientFrame::AwarenessQuery,
        Message::Auth(_) => ClientFrame::Auth,
        Message::Custom(tag, _) => return Err(FrameError::Unsupported(tag)),
    };
    Ok(parsed)
}

/// Whether a v1 update carries nothing (no structs, empty delete set): what
/// a client in sync answers to sync step 1.
pub fn is_empty_update(update: &[u8]) -> bool {
    update == [0, 0]
}

/// Whether a client's document comes from an earlier collaboration session
/// of the draft: it holds content (so it would push it) yet shares no
/// client with the server's document. Every client of the current session
/// has at least the session's base text, so this is the document of a
/// session that ended — its items are not the current session's, and
/// merging them would repeat the text. (An empty server document proves
/// nothing, so it never counts.)
pub fn from_other_session(server: &StateVector, client: &StateVector) -> bool {
    !server.is_empty()
        && !client.is_empty()
        && client.iter().all(|(id, _)| !server.contains_client(id))
}

/// Sync step 1 with the server's state vector (v1 bytes).
pub fn sync_step1(state_vector: &[u8]) -> Result<Vec<u8>, FrameError> {
    let sv = StateVector::decode_v1(state_vector)
        .map_err(|e| FrameError::Malformed(format!("bad state vector: {e}")))?;
    Ok(Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1())
}

/// Sync step 2 carrying `update` (v1).
pub fn sync_step2(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()
}

/// A sync update carrying `update` (v1).
pub fn sync_update(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

/// The awareness query (clients answer with their whole awareness state).
pub fn awareness_query() -> Vec<u8> {
    Message::AwarenessQuery.encode_v1()
}

/// An awareness update marking `clients` (id, last clock) as gone, as
/// y-websocket servers send when a connection closes.
pub fn awareness_removal(clients: &HashMap<u64, u32>) -> Vec<u8> {
    let clients = clients
        .iter()
        .map(|(id, clock)| {
            (
                yrs::block::ClientID::new(*id),
                AwarenessUpdateEntry {
                    clock: clock.saturating_add(1),
                    json: Arc::from("null"),
                },
            )
        })
        .collect();
    Message::Awareness(AwarenessUpdate { clients }).encode_v1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Doc, ReadTxn, Text, Transact};

    fn edit() -> (Vec<u8>, Vec<u8>) {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        text.insert(&mut doc.transact_mut(), 0, "héllo — 世界 🎉");
        let txn = doc.transact();
        (
            txn.encode_state_as_update_v1(&StateVector::default()),
            txn.state_vector().encode_v1(),
        )
    }

    #[test]
    fn sync_frames_round_trip() {
        let (update, sv) = edit();
        let step1 = sync_step1(&sv).unwrap();
        assert_eq!(step1[0], 0);
        assert_eq!(step1[1], 0);
        assert_eq!(
            decode(&step1).unwrap(),
            ClientFrame::StateVector(StateVector::decode_v1(&sv).unwrap())
        );
        assert_eq!(
            decode(&sync_step2(update.clone())).unwrap(),
            ClientFrame::Update(update.clone())
        );
        assert_eq!(
            decode(&sync_update(update.clone())).unwrap(),
            ClientFrame::Update(update)
        );
        assert_eq!(
            decode(&awareness_query()).unwrap(),
            ClientFrame::AwarenessQuery
        );
    }

    #[test]
    fn a_document_of_another_session_is_recognised() {
        let sv = |pairs: &[(u64, u32)]| {
            StateVector::from_iter(
                pairs
                    .iter()
                    .map(|(c, k)| (yrs::block::ClientID::new(*c), *k)),
            )
        };
        let server = sv(&[(1, 10), (2, 3)]);
        assert!(!from_other_session(&server, &sv(&[])));
        assert!(!from_other_session(&server, &sv(&[(1, 4)])));
        assert!(!from_other_session(&server, &sv(&[(1, 10), (9, 2)])));
        assert!(from_other_session(&server, &sv(&[(8, 10), (9, 2)])));
        assert!(!from_other_session(&sv(&[]), &sv(&[(9, 2)])));
    }

    #[test]
    fn awareness_removal_names_each_client_with_the_next_clock() {
        let frame = awareness_removal(&HashMap::from([(7, 3)]));
        match decode(&frame).unwrap() {
            ClientFrame::Awareness { clients, .. } => assert_eq!(clients, vec![(7, 4)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bad in [
            &[][..],
            &[0][..],
            &[0, 9][..],
            &[0, 2, 5, 1, 2][..],
            &[0, 1, 3, 255, 255, 255][..],
            &[1, 200, 1][..],
            &[255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1][..],
        ] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
        assert_eq!(decode(&[7, 0]), Err(FrameError::Unsupported(7)));
    }

    fn var(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    #[test]
    fn client_ids_over_53_bits_are_refused_not_a_panic() {
        let mut sv = Vec::new();
        var(1, &mut sv);
        var(1 << 60, &mut sv);
        var(1, &mut sv);
        let mut frame = vec![0, 0];
        var(sv.len() as u64, &mut frame);
        frame.extend(sv);
        assert!(matches!(decode(&frame), Err(FrameError::Malformed(_))));
    }
}
