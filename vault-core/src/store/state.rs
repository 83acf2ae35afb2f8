//! The state digest: one MAC over the whole set of sealed configuration
//! rows (users, holds, retention, contractors, schemas, exports, backups,
//! the disposal ledger, certificates, pending approvals, sealed settings).
//!
//! A row MAC stops someone with the files but not the key from forging or
//! editing a row, but not from deleting one (a legal hold, an export's
//! ledger row, a disposal's ledger row that a restore replays) or from
//! putting back an older genuine copy (a terminated employee's enabled
//! row). The digest is the count of those rows and the XOR of their MACs,
//! kept in a sealed row of its own that every write of a covered row
//! updates in the same atomic batch: deleting or rolling back any row
//! changes what the rows add up to, and the digest cannot be made to
//! match without the key. The XOR of PRF outputs over distinct keys is a
//! MAC of the set (Bellare–Guérin–Rogaway's XOR MAC): a row's MAC binds
//! its column family, key and value, so no two rows share one.
//!
//! The digest row rolled back together with every row it covers, to one
//! older genuine state of them all, adds up too: what exposes that is the
//! trail, whose first event after each change names the digest's new
//! generation (`state:<n>`), and which an open reads from the digest's
//! `checked_at` on (ARCHITECTURE.md, "The state digest").

use crate::error::{Error, Result};

/// Meta key of the digest: under the sealed prefix, so it carries a MAC.
pub(crate) const DIGEST_KEY: &[u8] = b"sealed/state-digest";
/// Format of the encoded digest.
const VERSION: u8 = 1;
/// Bytes of an encoded digest.
const ENCODED_LEN: usize = 1 + 8 + 8 + 8 + 32;

/// The count and XOR of the covered rows' MACs, and the generation (one
/// more for every write that changed a covered row).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateDigest {
    /// Writes of covered rows since the digest began. The first audit
    /// event after a change carries it (`state:<generation>`).
    pub generation: u64,
    /// The trail's seq at the last checkpoint this digest was written at:
    /// no event up to it carries a later generation, so an open reads the
    /// trail only after it. A digest put back from an older copy names an
    /// older seq, and the events after it name the generations it lacks.
    pub checked_at: u64,
    /// Covered rows.
    pub rows: u64,
    /// XOR of the covered rows' MACs.
    pub xor: [u8; 32],
}

impl StateDigest {
    /// A row with MAC `tag` added.
    pub(super) fn add(&mut self, tag: &[u8]) {
        self.rows = self.rows.wrapping_add(1);
        self.fold(tag);
    }

    /// A row with MAC `tag` removed.
    pub(super) fn remove(&mut self, tag: &[u8]) {
        self.rows = self.rows.wrapping_sub(1);
        self.fold(tag);
    }

    fn fold(&mut self, tag: &[u8]) {
        for (x, t) in self.xor.iter_mut().zip(tag) {
            *x ^= t;
        }
    }

    /// Whether `other` covers the same rows (the generation aside).
    pub(super) fn same_rows(&self, other: &StateDigest) -> bool {
        use subtle::ConstantTimeEq;
        self.rows == other.rows && bool::from(self.xor.ct_eq(&other.xor))
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENCODED_LEN);
        v.push(VERSION);
        v.extend_from_slice(&self.generation.to_be_bytes());
        v.extend_from_slice(&self.checked_at.to_be_bytes());
        v.extend_from_slice(&self.rows.to_be_bytes());
        v.extend_from_slice(&self.xor);
        v
    }

    pub(super) fn decode(b: &[u8]) -> Result<StateDigest> {
        if b.len() != ENCODED_LEN || b[0] != VERSION {
            return Err(Error::Integrity("the state digest of the records database"));
        }
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(StateDigest {
            generation: u(1),
            checked_at: u(9),
            rows: u(17),
            xor: b[25..].try_into().expect("32 bytes"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_and_removing_a_row_returns_to_the_same_rows() {
        let mut d = StateDigest::default();
        d.add(&[7; 32]);
        let one = d;
        d.add(&[9; 32]);
        assert!(!d.same_rows(&one));
        d.remove(&[9; 32]);
        assert!(d.same_rows(&one));
        d.remove(&[7; 32]);
        assert!(d.same_rows(&StateDigest::default()));
    }

    #[test]
    fn a_digest_round_trips_and_a_bad_one_is_refused() {
        let d = StateDigest {
            generation: 5,
            checked_at: 700,
            rows: 3,
            xor: [0xab; 32],
        };
        assert_eq!(StateDigest::decode(&d.encode()).unwrap(), d);
        assert!(StateDigest::decode(&d.encode()[1..]).is_err());
        let mut bad = d.encode();
        bad[0] = 2;
        assert!(StateDigest::decode(&bad).is_err());
    }
}
