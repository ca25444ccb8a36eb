//! API keys: `ymk_<key id>_<secret><checksum>`.
//!
//! - key id: 12 base62 characters (public; the database primary key);
//! - secret: 32 base62 characters (~190 bits) from the OS-seeded CSPRNG;
//! - checksum: CRC32 of `ymk_<key id>_<secret>`, 6 base62 characters, so a
//!   secret scanner recognises a real key offline (like GitHub's tokens).
//!
//! Only the key id and HMAC-SHA256(pepper, secret) are stored. Checking a
//! presented key always takes the same path (see [`PresentedKey::parse`]
//! and `SecurityState::check_api_key`): a malformed key is replaced by a
//! dummy id and secret of the right shape, the database is queried, the HMAC
//! is computed and compared in constant time against the stored digest or a
//! dummy digest, and only then are the outcomes combined.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// The prefix of every key.
pub const PREFIX: &str = "ymk_";
/// Length of the key id.
pub const KEY_ID_LEN: usize = 12;
/// Length of the secret.
pub const SECRET_LEN: usize = 32;
/// Length of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key id that can never exist (ids are base62 only); used when the
/// presented key is malformed so the lookup still happens.
pub const DUMMY_KEY_ID: &str = "!unknown-key";
const DUMMY_SECRET: &str = "00000000000000000000000000000000";

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The digest compared against when no key was found.
pub const DUMMY_DIGEST: Digest = [0u8; 32];

/// The server pepper mixed into every secret hash (kept as a keyed HMAC).
#[derive(Clone)]
pub struct Pepper(Hmac<Sha256>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

impl Pepper {
    /// A pepper from raw bytes (at least 16).
    pub fn new(bytes: Vec<u8>) -> Option<Pepper> {
        if bytes.len() < 16 {
            return None;
        }
        <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .ok()
            .map(Pepper)
    }

    /// HMAC-SHA256(pepper, secret).
    pub fn hash(&self, secret: &str) -> Digest {
        let mut mac = self.0.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Compares two digests in constant time.
pub fn digests_equal(a: &Digest, b: &Digest) -> Choice {
    a.ct_eq(b)
}

fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut buf = [0u8; 64];
        rng.fill_bytes(&mut buf);
        for b in buf {
            // 248 = 4·62: rejection sampling keeps the alphabet uniform.
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    out
}

fn base62_fixed(mut n: u64, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

fn checksum(body: &str) -> String {
    base62_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

/// `body` (`ymk_<key id>_<secret>`) followed by its checksum (CRC32 of the
/// body as [`CHECKSUM_LEN`] base62 digits). With a base62 key id and secret
/// of the right lengths the result is a well-formed key, whether or not it
/// exists (what [`generate`] returns, and what a benchmark of refused keys
/// needs).
pub fn with_checksum(body: &str) -> String {
    format!("{body}{}", checksum(body))
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A newly generated key: the full key (shown once) and its parts.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// `ymk_…`, given to the user once.
    pub full: String,
    /// The public key id.
    pub key_id: String,
    /// HMAC of the secret, the only thing stored.
    pub secret_hash: Digest,
}

/// Generates a key and its stored hash.
pub fn generate(pepper: &Pepper) -> NewKey {
    let key_id = random_base62(KEY_ID_LEN);
    let secret = random_base62(SECRET_LEN);
    let full = with_checksum(&format!("{PREFIX}{key_id}_{secret}"));
    NewKey {
        full,
        key_id,
        secret_hash: pepper.hash(&secret),
    }
}

/// Whether `s` looks like a Ymera API key with a valid checksum (what a
/// secret scanner checks offline).
pub fn looks_like_key(s: &str) -> bool {
    PresentedKey::parse(s).well_formed
}

/// A presented key split into parts. Malformed input yields the dummy id
/// and secret so the caller's path stays the same.
#[derive(Debug, Clone)]
pub struct PresentedKey {
    /// The key id (or [`DUMMY_KEY_ID`]).
    pub key_id: String,
    /// The secret (or a dummy secret of the same length).
    pub secret: String,
    /// Whether the prefix, lengths, alphabet and checksum were right.
    pub well_formed: bool,
}

impl PresentedKey {
    /// Splits a presented key. Never fails; see `well_formed`.
    pub fn parse(presented: &str) -> PresentedKey {
        let parsed = (|| {
            if presented.len() != KEY_LEN {
                return None;
            }
            let rest = presented.strip_prefix(PREFIX)?;
            let (key_id, tail) = rest.split_at_checked(KEY_ID_LEN)?;
            let tail = tail.strip_prefix('_')?;
            let (secret, sum) = tail.split_at_checked(SECRET_LEN)?;
            if !is_base62(key_id) || !is_base62(secret) || !is_base62(sum) {
                return None;
            }
            let body = &presented[..presented.len() - CHECKSUM_LEN];
            // Constant-time here too: the checksum is not secret, but this
            // keeps the comparison free of early exits.
            let ok: bool = checksum(body).as_bytes().ct_eq(sum.as_bytes()).into();
            ok.then(|| (key_id.to_owned(), secret.to_owned()))
        })();
        match parsed {
            Some((key_id, secret)) => PresentedKey {
                key_id,
                secret,
                well_formed: true,
            },
            None => PresentedKey {
                key_id: DUMMY_KEY_ID.to_owned(),
                secret: DUMMY_SECRET.to_owned(),
                well_formed: false,
            },
        }
    }
}

/// The public part of a presented credential for logs and events: the key
/// id when the key is well formed, never the secret.
pub fn redact(presented: &str) -> String {
    let parsed = PresentedKey::parse(presented);
    if parsed.well_formed {
        format!("{PREFIX}{}_…", parsed.key_id)
    } else {
        "<malformed>".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper() -> Pepper {
        Pepper::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    #[test]
    fn generated_keys_parse_and_hash() {
        let p = pepper();
        let key = generate(&p);
        assert_eq!(key.full.len(), KEY_LEN);
        assert!(key.full.starts_with("ymk_"));
        let parsed = PresentedKey::parse(&key.full);
        assert!(parsed.well_formed);
        assert_eq!(parsed.key_id, key.key_id);
        assert_eq!(p.hash(&parsed.secret), key.secret_hash);
        assert!(looks_like_key(&key.full));
    }

    #[test]
    fn bad_checksum_truncation_and_garbage_are_malformed() {
        let key = generate(&pepper()).full;
        let mut flipped = key.clone().into_bytes();
        let i = 20;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        for bad in [
            flipped.as_str(),
            &key[..key.len() - 1],
            "",
            "ymk_",
            "Bearer x",
            "ymk_ééééééééééé_ééééééééééééééééééééééééééééééé",
        ] {
            let parsed = PresentedKey::parse(bad);
            assert!(!parsed.well_formed, "{bad}");
            assert_eq!(parsed.key_id, DUMMY_KEY_ID);
            assert_eq!(parsed.secret.len(), SECRET_LEN);
        }
    }

    #[test]
    fn different_peppers_give_different_hashes() {
        let other = Pepper::new(vec![7u8; 32]).unwrap();
        assert_ne!(pepper().hash("s"), other.hash("s"));
        assert!(Pepper::new(vec![1u8; 8]).is_none());
    }

    #[test]
    fn redact_never_shows_the_secret() {
        let key = generate(&pepper());
        let shown = redact(&key.full);
        assert!(shown.contains(&key.key_id));
        assert!(!shown.contains(&key.full[17..]));
    }
}
