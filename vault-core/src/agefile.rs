//! Writing the age v1 file format (<https://age-encryption.org/v1>), so an
//! export opens with the `age` command-line tool and the recipient's key
//! and with nothing pivault holds.
//!
//! Only encryption, to X25519 recipients (`age1…`) or one passphrase
//! (scrypt), binary or ASCII-armored. The primitives are RustCrypto's
//! (ChaCha20-Poly1305, scrypt, HMAC-SHA-256) and curve25519-dalek's X25519;
//! this module puts them together as the specification says:
//!
//! - a random 16-byte file key, wrapped once per recipient in a stanza:
//!   X25519: `-> X25519 base64(epk)`, body ChaCha20-Poly1305 under
//!   HKDF-SHA-256(ikm = shared secret, salt = epk || recipient, info =
//!   "age-encryption.org/v1/X25519"), zero nonce; scrypt: `-> scrypt
//!   base64(salt) logN`, body under scrypt(passphrase, "age-encryption.org/v1/scrypt"
//!   || salt, N = 2^logN, r = 8, p = 1), the only stanza of its file;
//! - the header MAC: HMAC-SHA-256 under HKDF(file key, "", "header") over
//!   the header through `---`;
//! - the payload: a 16-byte nonce, then the STREAM of 64 KiB chunks, each
//!   ChaCha20-Poly1305 under HKDF(file key, nonce, "payload") with nonce =
//!   11-byte big-endian counter || 0x01 on the last chunk, 0x00 otherwise.
//!
//! The tests decrypt what this writes with the real `age` tool.

use std::io::{self, Write};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hmac::Mac;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::fill_random;
use crate::error::{Error, Result};

/// Plaintext bytes per STREAM chunk.
const CHUNK: usize = 64 * 1024;
/// The scrypt work factor of passphrase files (2^18, as `age` uses).
pub const SCRYPT_LOG_N: u8 = 18;

/// An age X25519 recipient: a Curve25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient([u8; 32]);

const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(*v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

impl Recipient {
    /// Parses `age1…` (Bech32, BIP 173, human-readable part "age").
    pub fn parse(text: &str) -> Result<Recipient> {
        let bad = || {
            Error::invalid("a recipient is not an age X25519 public key (age1…, from age-keygen)")
        };
        let t = text.trim();
        if t.len() > 90 || t != t.to_ascii_lowercase() {
            return Err(bad());
        }
        let (hrp, data) = t.rsplit_once('1').ok_or_else(bad)?;
        if hrp != "age" || data.len() < 6 {
            return Err(bad());
        }
        let values: Vec<u8> = data
            .bytes()
            .map(|c| BECH32.iter().position(|&b| b == c).map(|p| p as u8))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let mut check: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
        check.push(0);
        check.extend(hrp.bytes().map(|c| c & 31));
        check.extend_from_slice(&values);
        if bech32_polymod(&check) != 1 {
            return Err(bad());
        }
        // 5-bit groups to bytes, no padding left over.
        let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
        for v in &values[..values.len() - 6] {
            acc = (acc << 5) | u32::from(*v);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits >= 5 || (acc & ((1 << bits) - 1)) != 0 {
            return Err(bad());
        }
        let key: [u8; 32] = out.try_into().map_err(|_| bad())?;
        Ok(Recipient(key))
    }
}

/// Standard base64 without padding (the encoding age uses throughout).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// HKDF-SHA-256 (RFC 5869) with 32 bytes of output.
fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut extract = <hmac::Hmac<Sha256>>::new_from_slice(salt).expect("any key length");
    extract.update(ikm);
    let prk: Zeroizing<[u8; 32]> = Zeroizing::new(extract.finalize().into_bytes().into());
    let mut expand = <hmac::Hmac<Sha256>>::new_from_slice(prk.as_ref()).expect("any key length");
    expand.update(info);
    expand.update(&[1]);
    Zeroizing::new(expand.finalize().into_bytes().into())
}

/// ChaCha20-Poly1305 of `msg` under `key` and a nonce; ciphertext || tag.
fn seal(key: &[u8; 32], nonce: [u8; 12], msg: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(key.into());
    let mut buf = msg.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), &[], buf.as_mut_slice().into())
        .expect("ChaCha20-Poly1305 of an in-memory buffer cannot fail");
    buf.extend_from_slice(tag.as_slice());
    buf
}

/// Who can open the file.
#[derive(Debug)]
pub enum To<'a> {
    /// X25519 recipients.
    Keys(&'a [Recipient]),
    /// A passphrase (its bytes).
    Passphrase(&'a [u8]),
}

/// A writer that encrypts to an age file: the header is written at
/// creation, the payload as chunks fill, the last chunk by [`AgeWriter::finish`]
/// (without which the file does not decrypt).
pub struct AgeWriter<W: Write> {
    inner: Armor<W>,
    key: Zeroizing<[u8; 32]>,
    buf: Zeroizing<Vec<u8>>,
    counter: u64,
}

impl<W: Write> std::fmt::Debug for AgeWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgeWriter(..)")
    }
}

impl<W: Write> AgeWriter<W> {
    /// Starts an age file on `out`; `armor` writes the PEM-like ASCII form.
    pub fn new(out: W, to: To<'_>, armor: bool) -> Result<AgeWriter<W>> {
        let mut file_key = Zeroizing::new([0u8; 16]);
        fill_random(file_key.as_mut());
        let mut header = String::from("age-encryption.org/v1\n");
        match to {
            To::Keys(keys) => {
                if keys.is_empty() {
                    return Err(Error::invalid("an encrypted export needs a recipient"));
                }
                for r in keys {
                    let mut e = Zeroizing::new([0u8; 32]);
                    fill_random(e.as_mut());
                    let epk = MontgomeryPoint::mul_base_clamped(*e).to_bytes();
                    let shared = Zeroizing::new(MontgomeryPoint(r.0).mul_clamped(*e).to_bytes());
                    if shared.iter().all(|&b| b == 0) {
                        return Err(Error::invalid("an age recipient key is not usable"));
                    }
                    let mut salt = epk.to_vec();
                    salt.extend_from_slice(&r.0);
                    let wrap = hkdf(shared.as_ref(), &salt, b"age-encryption.org/v1/X25519");
                    let body = seal(&wrap, [0; 12], file_key.as_ref());
                    header.push_str(&format!("-> X25519 {}\n{}\n", b64(&epk), b64(&body)));
                }
            }
            To::Passphrase(p) => {
                let mut salt = [0u8; 16];
                fill_random(&mut salt);
                let mut full = b"age-encryption.org/v1/scrypt".to_vec();
                full.extend_from_slice(&salt);
                let params = scrypt::Params::new(SCRYPT_LOG_N, 8, 1)
                    .map_err(|_| Error::invalid("scrypt parameters"))?;
                let mut wrap = Zeroizing::new([0u8; 32]);
                scrypt::scrypt(p, &full, &params, wrap.as_mut())
                    .map_err(|_| Error::invalid("scrypt output length"))?;
                let body = seal(&wrap, [0; 12], file_key.as_ref());
                header.push_str(&format!(
                    "-> scrypt {} {SCRYPT_LOG_N}\n{}\n",
                    b64(&salt),
                    b64(&body)
                ));
            }
        }
        header.push_str("---");
        let mac_key = hkdf(file_key.as_ref(), b"", b"header");
        let mut mac =
            <hmac::Hmac<Sha256>>::new_from_slice(mac_key.as_ref()).expect("any key length");
        mac.update(header.as_bytes());
        header.push_str(&format!(" {}\n", b64(&mac.finalize().into_bytes())));
        let mut nonce = [0u8; 16];
        fill_random(&mut nonce);
        let key = hkdf(file_key.as_ref(), &nonce, b"payload");
        let mut inner = Armor::new(out, armor)?;
        inner.write_all(header.as_bytes())?;
        inner.write_all(&nonce)?;
        Ok(AgeWriter {
            inner,
            key,
            buf: Zeroizing::new(Vec::with_capacity(CHUNK)),
            counter: 0,
        })
    }

    fn chunk(&mut self, last: bool) -> io::Result<()> {
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&self.counter.to_be_bytes());
        nonce[11] = u8::from(last);
        let n = self.buf.len().min(CHUNK);
        let sealed = seal(&self.key, nonce, &self.buf[..n]);
        self.buf.drain(..n);
        self.counter += 1;
        self.inner.write_all(&sealed)
    }

    /// Writes the last chunk (and the armor's end line); returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.chunk(true)?;
        self.inner.finish()
    }
}

impl<W: Write> Write for AgeWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        // A full chunk goes out only once more follows: the last chunk must
        // carry the final flag, and may be full.
        while self.buf.len() > CHUNK {
            self.chunk(false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The output, raw or in age's ASCII armor (RFC 7468 strict: 64-column
/// standard base64 with padding between BEGIN and END lines).
struct Armor<W: Write> {
    out: W,
    armor: bool,
    pending: Vec<u8>,
    column: usize,
}

const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----\n";
const ARMOR_END: &str = "-----END AGE ENCRYPTED FILE-----\n";

impl<W: Write> Armor<W> {
    fn new(mut out: W, armor: bool) -> io::Result<Armor<W>> {
        if armor {
            out.write_all(ARMOR_BEGIN.as_bytes())?;
        }
        Ok(Armor {
            out,
            armor,
            pending: Vec::new(),
            column: 0,
        })
    }

    fn emit(&mut self, text: &str) -> io::Result<()> {
        for c in text.bytes() {
            self.out.write_all(&[c])?;
            self.column += 1;
            if self.column == 64 {
                self.out.write_all(b"\n")?;
                self.column = 0;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        if self.armor {
            let rest = std::mem::take(&mut self.pending);
            let mut text = b64(&rest);
            while !text.len().is_multiple_of(4) {
                text.push('=');
            }
            self.emit(&text)?;
            if self.column != 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(ARMOR_END.as_bytes())?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Armor<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.armor {
            return self.out.write(data);
        }
        self.pending.extend_from_slice(data);
        let whole = self.pending.len() / 3 * 3;
        let text = b64(&self.pending[..whole]);
        self.pending.drain(..whole);
        self.emit(&text)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bech32_recipients_parse_and_reject_a_changed_character() {
        // A recipient made by age-keygen (Debian age 1.1.1).
        let good = "age13tgveg2z6wle99txvu9zd4qa4edng9kynlcgllteskw5pkdmyafspdj2nc";
        assert!(Recipient::parse(good).is_ok());
        let bad = good.replace("3tgv", "3tgw");
        assert!(Recipient::parse(&bad).is_err());
        assert!(Recipient::parse("age-secret-key-1xyz").is_err());
        assert!(Recipient::parse(&good.to_uppercase()).is_err());
    }

    #[test]
    fn base64_without_padding() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg");
        assert_eq!(b64(b"fo"), "Zm8");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg");
    }

    #[test]
    fn hkdf_matches_rfc_5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        // RFC 5869 A.1, first 32 bytes of OKM (T(1)).
        assert_eq!(
            hex::encode(hkdf(&ikm, &salt, &info).as_ref()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }
}
