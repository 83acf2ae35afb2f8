//! The state digest: one MAC over the whole set of sealed configuration
//! rows (users, holds, retention, contractors, schemas, exports, backups,
//! the disposal ledger, certificates, pending approvals, sealed settings).
//!
//! A row MAC stops someone with the files but not the key from forging or
//! editing a row, but not from deleting one (a legal hold, an export's
//! ledger row, a disposal's ledger row that a restore replays) or from
//! putting back an older genuine copy (a terminated employee's enabled
//! row). The digest is the count of those rows and the XOR of a keyed PRF
//! of each row's MAC, kept by the store with every write of a covered row:
//! deleting or rolling back any row changes what the rows add up to, and no
//! one without the key can make them match (the XOR MAC of Bellare, Guérin
//! and Rogaway). The PRF is not the row MAC itself: those are stored in
//! clear beside their rows, and a XOR of public values could be matched by
//! solving for a set of older copies whose differences cancel.
//!
//! Only the count, the generation, the trail position and a seal (a MAC
//! over them and the XOR) are stored; the XOR itself lives in the
//! process, recomputed from the rows at open, so watching the stored row
//! change teaches nothing about the PRF's values either.
//!
//! The digest row put back together with every row it covers adds up;
//! what exposes that is the trail, whose first event after each change
//! names the digest's new generation (`state:<n>`), and which an open
//! reads from the digest's `checked_at` on, chain-checked from its
//! `checked_hash` (ARCHITECTURE.md, "The state digest").

use crate::crypto;
use crate::error::{Error, Result};
use crate::secret::SecretKey;

/// Meta key of the digest: under the sealed prefix, so it carries a row MAC.
pub(crate) const DIGEST_KEY: &[u8] = b"sealed/state-digest";
/// Format of the stored digest.
const VERSION: u8 = 1;
/// Bytes of a stored digest.
const STORED_LEN: usize = 1 + 8 + 8 + 32 + 8 + 32;

/// The digest as the store keeps it in memory.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct StateDigest {
    /// Writes of covered rows since the digest began. The first audit
    /// event after a change names it (`state:<generation>`).
    pub generation: u64,
    /// The seq of the last durable checkpoint the digest was written at:
    /// no event up to it names a later generation, so an open reads the
    /// trail only after it. A digest put back from an older copy names an
    /// older seq, and the events after it name the generations it lacks.
    pub checked_at: u64,
    /// The chain hash at `checked_at` (zeros for 0): the trail after it is
    /// chain-checked from here, so an event's `state:` cannot be edited.
    pub checked_hash: [u8; 32],
    /// Covered rows.
    pub rows: u64,
    /// XOR of the keyed PRF of each covered row's MAC (never stored).
    xor: [u8; 32],
}

impl std::fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDigest")
            .field("generation", &self.generation)
            .field("checked_at", &self.checked_at)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl StateDigest {
    /// A row with MAC `tag` added.
    pub(super) fn add(&mut self, key: &SecretKey, tag: &[u8]) {
        self.rows = self.rows.wrapping_add(1);
        self.fold(key, tag);
    }

    /// A row with MAC `tag` removed.
    pub(super) fn remove(&mut self, key: &SecretKey, tag: &[u8]) {
        self.rows = self.rows.wrapping_sub(1);
        self.fold(key, tag);
    }

    fn fold(&mut self, key: &SecretKey, tag: &[u8]) {
        let term = crypto::mac(key, "pivault-state-row-v1", tag);
        for (x, t) in self.xor.iter_mut().zip(term) {
            *x ^= t;
        }
    }

    /// The seal over everything the digest says, the XOR included.
    fn seal(&self, key: &SecretKey) -> [u8; 32] {
        let mut m = Vec::with_capacity(STORED_LEN);
        m.extend_from_slice(&self.generation.to_be_bytes());
        m.extend_from_slice(&self.checked_at.to_be_bytes());
        m.extend_from_slice(&self.checked_hash);
        m.extend_from_slice(&self.rows.to_be_bytes());
        m.extend_from_slice(&self.xor);
        crypto::mac(key, "pivault-state-seal-v1", &m)
    }

    /// The stored form: everything but the XOR, and the seal.
    pub(super) fn encode(&self, key: &SecretKey) -> Vec<u8> {
        let mut v = Vec::with_capacity(STORED_LEN);
        v.push(VERSION);
        v.extend_from_slice(&self.generation.to_be_bytes());
        v.extend_from_slice(&self.checked_at.to_be_bytes());
        v.extend_from_slice(&self.checked_hash);
        v.extend_from_slice(&self.rows.to_be_bytes());
        v.extend_from_slice(&self.seal(key));
        v
    }

    /// The stored digest `b`, which must seal the rows `found` (folded
    /// from the rows as they are now) to be believed: the digest, with the
    /// stored generation and trail position.
    pub(super) fn decode_over(
        b: &[u8],
        found: &StateDigest,
        key: &SecretKey,
    ) -> Result<StateDigest> {
        if b.len() != STORED_LEN || b[0] != VERSION {
            return Err(Error::Integrity("the state digest of the records database"));
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let d = StateDigest {
            generation: u(1),
            checked_at: u(9),
            checked_hash: b[17..49].try_into().expect("32 bytes"),
            rows: u(49),
            xor: found.xor,
        };
        use subtle::ConstantTimeEq;
        if d.rows != found.rows || !bool::from(d.seal(key).ct_eq(&b[57..])) {
            return Err(Error::Integrity(super::STATE_CHANGED));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes([3; 32])
    }

    #[test]
    fn adding_and_removing_a_row_returns_to_the_same_digest() {
        let k = key();
        let mut d = StateDigest::default();
        d.add(&k, &[7; 32]);
        let one = d;
        d.add(&k, &[9; 32]);
        assert_ne!(d, one);
        d.remove(&k, &[9; 32]);
        assert_eq!(d, one);
    }

    #[test]
    fn a_stored_digest_is_believed_only_over_the_rows_it_sealed() {
        let k = key();
        let mut d = StateDigest {
            generation: 5,
            checked_at: 700,
            checked_hash: [4; 32],
            ..StateDigest::default()
        };
        d.add(&k, &[1; 32]);
        d.add(&k, &[2; 32]);
        let stored = d.encode(&k);
        let mut rows = StateDigest::default();
        rows.add(&k, &[2; 32]);
        rows.add(&k, &[1; 32]);
        assert_eq!(StateDigest::decode_over(&stored, &rows, &k).unwrap(), d);
        // A row gone, or another in its place, or the wrong key: refused.
        let mut one = StateDigest::default();
        one.add(&k, &[1; 32]);
        assert!(StateDigest::decode_over(&stored, &one, &k).is_err());
        one.add(&k, &[3; 32]);
        assert!(StateDigest::decode_over(&stored, &one, &k).is_err());
        assert!(StateDigest::decode_over(&stored, &rows, &SecretKey::from_bytes([5; 32])).is_err());
        assert!(StateDigest::decode_over(&stored[1..], &rows, &k).is_err());
        // The XOR is not in the stored form.
        assert!(!stored.windows(32).any(|w| w == rows.xor));
    }
}
