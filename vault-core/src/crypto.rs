//! Cryptographic primitives of the vault, in one place: the AEAD envelope
//! (AES-256-GCM with a random 96-bit nonce and a one-byte format version),
//! canonical associated data, key wrapping, the Argon2id key derivation for
//! the vault passphrase, and Ed25519 key fingerprints.
//!
//! Envelope v1 layout: `0x01 | nonce (12) | ciphertext | tag (16)`.
//! Anything else — another version, a short buffer, a flipped bit, the wrong
//! associated data — is an integrity error, never garbage and never a panic.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::{SecretKey, SecretString};

/// Envelope format version written by this build.
pub const ENVELOPE_V1: u8 = 1;
/// Bytes an envelope adds to its plaintext: version + nonce + tag.
pub const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Fills `buf` from the operating system's CSPRNG.
///
/// Failing to get randomness is not recoverable for a key store: panicking
/// is safer than continuing with predictable keys.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Canonical associated data: a domain label followed by length-prefixed
/// parts, so that no two different tuples encode to the same bytes and a
/// ciphertext moved to another record, subject, version or epoch fails.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Aad(Vec<u8>);

impl Aad {
    /// Starts associated data for one kind of envelope ("record", "dek", ...).
    pub fn new(label: &str) -> Self {
        let mut a = Aad(Vec::with_capacity(96));
        a.push(label.as_bytes());
        a
    }

    /// Appends one length-prefixed part.
    pub fn part(mut self, bytes: &[u8]) -> Self {
        self.push(bytes);
        self
    }

    fn push(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Encrypts `plaintext` under `key` bound to `aad`, with a fresh random nonce.
pub fn seal(key: &SecretKey, aad: &Aad, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    seal_with_nonce(key, aad, plaintext, nonce)
}

/// [`seal`] with a nonce the caller drew from the OS CSPRNG, so that a
/// record write can draw its key, nonces and ID in one system call. The
/// nonce must be fresh random bytes, never reused or derived.
pub(crate) fn seal_with_nonce(
    key: &SecretKey,
    aad: &Aad,
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key.expose()).expect("32-byte key");
    // Encrypted in place in the output buffer: one allocation, one copy.
    let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + plaintext.len());
    out.push(ENVELOPE_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::from(nonce),
            aad.as_bytes(),
            (&mut out[1 + NONCE_LEN..]).into(),
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail below 64 GiB");
    out.extend_from_slice(tag.as_slice());
    out
}

/// Decrypts an envelope; any change to it or to `aad` is an integrity error.
pub fn open(
    key: &SecretKey,
    aad: &Aad,
    envelope: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(Error::Integrity(what));
    }
    match envelope[0] {
        ENVELOPE_V1 => {}
        _ => return Err(Error::Integrity(what)),
    }
    let nonce: [u8; NONCE_LEN] = envelope[1..1 + NONCE_LEN]
        .try_into()
        .expect("length checked");
    let (ct, tag) = envelope[1 + NONCE_LEN..].split_at(envelope.len() - ENVELOPE_OVERHEAD);
    let tag = Tag::try_from(tag).map_err(|_| Error::Integrity(what))?;
    let cipher = Aes256Gcm::new_from_slice(key.expose()).expect("32-byte key");
    // The tag is checked before anything is decrypted; the buffer is wiped on drop either way.
    let mut out = Zeroizing::new(ct.to_vec());
    cipher
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            aad.as_bytes(),
            out.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| Error::Integrity(what))?;
    Ok(out)
}

/// Wraps (encrypts) a key under a key-encryption key.
pub fn wrap_key(kek: &SecretKey, aad: &Aad, key: &SecretKey) -> Vec<u8> {
    seal(kek, aad, key.expose())
}

/// Randomness for sealing one record version, drawn from the OS CSPRNG in
/// one call (each draw is a system call of about a microsecond): the data
/// key, the nonce that wraps it and the nonce of the body envelope. (Record
/// IDs come from `Uuid::now_v7`, which keeps them in creation order within
/// a millisecond: listings follow insertion order.)
pub(crate) struct RecordRandomness {
    /// The version's data key.
    pub dek: SecretKey,
    /// Nonce for wrapping the data key.
    pub wrap_nonce: [u8; NONCE_LEN],
    /// Nonce for the body envelope.
    pub body_nonce: [u8; NONCE_LEN],
}

impl RecordRandomness {
    pub(crate) fn draw() -> RecordRandomness {
        let mut b = Zeroizing::new([0u8; 32 + 2 * NONCE_LEN]);
        fill_random(b.as_mut());
        let part = |r: std::ops::Range<usize>| -> &[u8] { &b[r] };
        RecordRandomness {
            dek: SecretKey::from_bytes(part(0..32).try_into().expect("32 bytes")),
            wrap_nonce: part(32..44).try_into().expect("12 bytes"),
            body_nonce: part(44..56).try_into().expect("12 bytes"),
        }
    }
}

/// Unwraps a key; the wrong KEK or AAD is an integrity error.
pub fn unwrap_key(
    kek: &SecretKey,
    aad: &Aad,
    wrapped: &[u8],
    what: &'static str,
) -> Result<SecretKey> {
    let plain = open(kek, aad, wrapped, what)?;
    SecretKey::from_slice(&plain).ok_or(Error::Integrity(what))
}

/// Argon2id cost parameters, stored in the vault header so they can be raised later.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The vault passphrase default (DESIGN §4.1): derived once per unlock, so it can afford 256 MiB.
    pub const VAULT_DEFAULT: KdfParams = KdfParams {
        m_kib: 256 * 1024,
        t: 3,
        p: 4,
    };
    /// Cheap parameters for tests and demos only; never a default. `doctor` flags them.
    pub const INSECURE_FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    /// The floor below which `doctor` reports the unlock KDF as weak (OWASP minimum).
    pub const FLOOR: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// Whether these parameters meet the OWASP floor.
    pub fn meets_floor(&self) -> bool {
        self.m_kib >= Self::FLOOR.m_kib && self.t >= Self::FLOOR.t
    }

    pub(crate) fn argon2(&self) -> Result<argon2::Argon2<'static>> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|_| Error::invalid("Argon2id parameters out of range"))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }
}

/// Derives the unlock key from the vault passphrase (or key-file contents).
pub fn derive_unlock_key(
    passphrase: &SecretString,
    salt: &[u8; 16],
    params: KdfParams,
) -> Result<SecretKey> {
    let mut out = Zeroizing::new([0u8; 32]);
    params
        .argon2()?
        .hash_password_into(passphrase.expose().as_bytes(), salt, out.as_mut())
        .map_err(|_| Error::invalid("Argon2id key derivation failed"))?;
    Ok(SecretKey::from_bytes(*out))
}

/// SHA-256 of the input.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A short, stable fingerprint of a public key: "SHA256:" + hex of the first 16 bytes.
pub fn fingerprint(public_key: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(&sha256(public_key)[..16]))
}

/// A key derived from secret material of any length (a TLS private key):
/// HMAC-SHA-256 of `label` under the material's SHA-256.
pub fn derived_key(material: &[u8], label: &str) -> SecretKey {
    let seed = SecretKey::from_bytes(sha256(material));
    SecretKey::from_bytes(mac(&seed, label, b""))
}

/// Keyed MAC (HMAC-SHA-256), used for token hashes and subject references.
pub fn mac(key: &SecretKey, label: &str, data: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    let mut m =
        hmac::Hmac::<Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    m.update(&(label.len() as u32).to_be_bytes());
    m.update(label.as_bytes());
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, Payload};
    use proptest::prelude::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; 32])
    }

    /// NIST SP 800-38D / GCM spec test case 16 (AES-256, 96-bit IV, with AAD),
    /// and test case 13/14 (empty and one-block plaintext, zero key), run
    /// through the same cipher the envelope uses.
    #[test]
    fn aes_256_gcm_known_answer_vectors() {
        struct Kat {
            key: &'static str,
            iv: &'static str,
            pt: &'static str,
            aad: &'static str,
            ct: &'static str,
            tag: &'static str,
        }
        let kats = [
            Kat {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                pt: "",
                aad: "",
                ct: "",
                tag: "530f8afbc74536b9a963b4f1c4cb738b",
            },
            Kat {
                key: "0000000000000000000000000000000000000000000000000000000000000000",
                iv: "000000000000000000000000",
                pt: "00000000000000000000000000000000",
                aad: "",
                ct: "cea7403d4d606b6e074ec5d3baf39d18",
                tag: "d0d1c8a799996bf0265b98b5d48ab919",
            },
            Kat {
                key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
                iv: "cafebabefacedbaddecaf888",
                pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                tag: "76fc6ece0f4e1768cddf8853bb2d551b",
            },
        ];
        for k in kats {
            let cipher = Aes256Gcm::new_from_slice(&hex::decode(k.key).unwrap()).unwrap();
            let iv: [u8; 12] = hex::decode(k.iv).unwrap().try_into().unwrap();
            let pt = hex::decode(k.pt).unwrap();
            let aad = hex::decode(k.aad).unwrap();
            let out = cipher
                .encrypt(
                    &Nonce::from(iv),
                    Payload {
                        msg: &pt,
                        aad: &aad,
                    },
                )
                .unwrap();
            let (ct, tag) = out.split_at(out.len() - 16);
            assert_eq!(hex::encode(ct), k.ct);
            assert_eq!(hex::encode(tag), k.tag);
            let back = cipher
                .decrypt(
                    &Nonce::from(iv),
                    Payload {
                        msg: &out,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(back, pt);
        }
    }

    #[test]
    fn every_single_byte_flip_is_an_integrity_error() {
        let k = key(3);
        let aad = Aad::new("record").part(b"id-1");
        let env = seal(&k, &aad, b"Jane Doe 123-45-6789");
        for i in 0..env.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = env.clone();
                t[i] ^= bit;
                assert!(
                    matches!(open(&k, &aad, &t, "x"), Err(Error::Integrity(_))),
                    "byte {i}"
                );
            }
        }
        for n in 0..env.len() {
            assert!(open(&k, &aad, &env[..n], "x").is_err(), "truncated to {n}");
        }
        let mut longer = env.clone();
        longer.push(0);
        assert!(open(&k, &aad, &longer, "x").is_err(), "trailing byte");
    }

    #[test]
    fn moved_ciphertext_fails() {
        let k = key(4);
        let env = seal(&k, &Aad::new("record").part(b"a"), b"secret");
        assert!(open(&k, &Aad::new("record").part(b"b"), &env, "x").is_err());
        // Length prefixes keep ("ab","") apart from ("a","b").
        let env2 = seal(&k, &Aad::new("r").part(b"ab").part(b""), b"s");
        assert!(open(&k, &Aad::new("r").part(b"a").part(b"b"), &env2, "x").is_err());
    }

    #[test]
    fn unlock_key_depends_on_passphrase_and_salt() {
        let p = KdfParams::INSECURE_FAST;
        let a = derive_unlock_key(&"correct horse".into(), &[1; 16], p).unwrap();
        let b = derive_unlock_key(&"correct horse".into(), &[1; 16], p).unwrap();
        let c = derive_unlock_key(&"correct horsf".into(), &[1; 16], p).unwrap();
        let d = derive_unlock_key(&"correct horse".into(), &[2; 16], p).unwrap();
        assert!(a == b && a != c && a != d);
    }

    proptest! {
        #[test]
        fn envelope_round_trips(pt in proptest::collection::vec(any::<u8>(), 0..2048),
                                label in "[a-z]{1,8}", part in proptest::collection::vec(any::<u8>(), 0..40)) {
            let k = SecretKey::generate();
            let aad = Aad::new(&label).part(&part);
            let env = seal(&k, &aad, &pt);
            prop_assert_eq!(env.len(), pt.len() + ENVELOPE_OVERHEAD);
            prop_assert_eq!(&open(&k, &aad, &env, "x").unwrap()[..], &pt[..]);
        }

        #[test]
        fn key_wrap_round_trips(kb in any::<[u8; 32]>(), kek in any::<[u8; 32]>(), epoch in any::<u64>()) {
            let kek = SecretKey::from_bytes(kek);
            let aad = Aad::new("bucket").part(&epoch.to_be_bytes());
            let w = wrap_key(&kek, &aad, &SecretKey::from_bytes(kb));
            prop_assert!(unwrap_key(&kek, &aad, &w, "k").unwrap() == SecretKey::from_bytes(kb));
            let other = Aad::new("bucket").part(&epoch.wrapping_add(1).to_be_bytes());
            prop_assert!(unwrap_key(&kek, &other, &w, "k").is_err());
        }
    }
}
