//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP) and
//! recovery codes: the arithmetic of the second factor, with no storage.
//! The vault's side (enrolment, replay, lock-out, policy) is in
//! `two_factor.rs`.
//!
//! The parameters are the ones every authenticator app understands when
//! it scans an `otpauth://` URI: HMAC-SHA-1, 6 digits, 30-second steps, a
//! 160-bit secret (RFC 4226 §4 recommends 160 bits). SHA-1's collision
//! weakness does not touch HMAC-SHA-1 as a PRF. SHA-256 and SHA-512 are
//! implemented for RFC 6238's own test vectors only.

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Seconds per time step (RFC 6238's default X).
pub const PERIOD_S: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a TOTP secret (160 bits, RFC 4226 §4).
pub const SECRET_LEN: usize = 20;
/// Steps either side of now that are accepted: a phone's clock a little
/// off, or a code typed as it changed. One step each way is RFC 6238
/// §5.2's recommendation.
pub const SKEW_STEPS: u64 = 1;
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;

/// The HMAC of RFC 6238 (the app's `algorithm=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-1: what pivault issues (every authenticator app reads it).
    Sha1,
    /// HMAC-SHA-256 (test vectors).
    Sha256,
    /// HMAC-SHA-512 (test vectors).
    Sha512,
}

/// HOTP (RFC 4226 §5.3): HMAC of the counter, dynamic truncation, the
/// low `digits` decimal digits.
pub fn hotp(secret: &[u8], counter: u64, digits: u32, alg: Algorithm) -> u32 {
    let msg = counter.to_be_bytes();
    let mac: Zeroizing<Vec<u8>> = Zeroizing::new(match alg {
        Algorithm::Sha1 => {
            let mut m = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha256 => {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha512 => {
            let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(secret).expect("any key length");
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
    });
    let offset = (mac[mac.len() - 1] & 0x0f) as usize;
    let bin =
        u32::from_be_bytes(mac[offset..offset + 4].try_into().expect("4 bytes")) & 0x7fff_ffff;
    bin % 10u32.pow(digits)
}

/// The time step of a moment (unix ms): floor(T / X) with T0 = 0.
pub fn step_at(now_ms: i64) -> u64 {
    (now_ms.max(0) / 1000 / PERIOD_S) as u64
}

/// The code of one step, as the app shows it (zero-padded).
pub fn code_at(secret: &[u8], step: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, step, DIGITS, Algorithm::Sha1),
        width = DIGITS as usize
    )
}

/// What a submitted code turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid for this step, which was not used before: record it.
    Accepted(u64),
    /// Valid, but for a step at or before the last one used: a replay
    /// (someone saw the code, or it was typed twice).
    Replayed,
    /// Not a code of any step in the window.
    Wrong,
}

/// Checks a code against the steps around `now_ms`. `last_used` is the
/// last step a code was accepted for: a code of that step or an earlier
/// one is a replay (RFC 6238 §5.2: "the verifier MUST NOT accept the
/// second attempt of the OTP after the successful validation"). Every
/// step of the window is compared, in constant time, whatever matches.
pub fn verify(secret: &[u8], submitted: &str, now_ms: i64, last_used: Option<u64>) -> Verdict {
    let submitted: String = submitted.chars().filter(|c| !c.is_whitespace()).collect();
    if submitted.len() != DIGITS as usize || !submitted.bytes().all(|b| b.is_ascii_digit()) {
        return Verdict::Wrong;
    }
    let now = step_at(now_ms);
    let mut verdict = Verdict::Wrong;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        let expected = Zeroizing::new(code_at(secret, step));
        if bool::from(expected.as_bytes().ct_eq(submitted.as_bytes())) {
            let fresh = last_used.is_none_or(|last| step > last);
            verdict = match (verdict, fresh) {
                (Verdict::Accepted(s), _) => Verdict::Accepted(s),
                (_, true) => Verdict::Accepted(step),
                (_, false) => Verdict::Replayed,
            };
        }
    }
    verdict
}

/// RFC 4648 base32 without padding: the form authenticator apps take.
pub fn base32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// The `otpauth://` URI an authenticator app scans or imports (Google
/// Authenticator's key-URI format). The label is the issuer and the
/// username, which are not personal information of a customer; the vault
/// label lets a clerk with two vaults tell the entries apart.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_S}",
        base32(secret),
        issuer = percent(issuer),
        account = percent(account),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh recovery code: 80 random bits as 16 base32 characters in
/// groups of four (`ABCD-EFGH-IJKL-MNOP`), easy to read off paper. 80 bits
/// is out of reach of guessing even if the stored hashes leaked with the
/// key that keys them.
pub fn new_recovery_code() -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 10]);
    crate::crypto::fill_random(raw.as_mut());
    let flat = Zeroizing::new(base32(raw.as_ref()));
    let groups: Vec<&str> = (0..4).map(|i| &flat[i * 4..i * 4 + 4]).collect();
    Zeroizing::new(groups.join("-"))
}

/// A recovery code as typed, in the one form that is hashed: upper case,
/// no dashes or spaces. `None` when it cannot be a recovery code.
pub fn normalise_recovery_code(typed: &str) -> Option<Zeroizing<String>> {
    let flat: Zeroizing<String> = Zeroizing::new(
        typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    let ok = flat.len() == 16
        && flat
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    ok.then_some(flat)
}

/// Whether a submitted second factor looks like a recovery code rather
/// than a 6-digit code.
pub fn looks_like_recovery_code(typed: &str) -> bool {
    normalise_recovery_code(typed).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the seeds are the ASCII digits repeated to the
    /// hash's length; codes of 8 digits at the listed times.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890";
        let sha256 = b"12345678901234567890123456789012";
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234";
        let table: [(i64, u32, u32, u32); 6] = [
            (59, 94287082, 46119246, 90693936),
            (1111111109, 7081804, 68084774, 25091201),
            (1111111111, 14050471, 67062674, 99943326),
            (1234567890, 89005924, 91819424, 93441116),
            (2000000000, 69279037, 90698825, 38618901),
            (20000000000, 65353130, 77737706, 47863826),
        ];
        for (t, c1, c256, c512) in table {
            let step = step_at(t * 1000);
            assert_eq!(hotp(sha1, step, 8, Algorithm::Sha1), c1, "SHA1 at {t}");
            assert_eq!(
                hotp(sha256, step, 8, Algorithm::Sha256),
                c256,
                "SHA256 at {t}"
            );
            assert_eq!(
                hotp(sha512, step, 8, Algorithm::Sha512),
                c512,
                "SHA512 at {t}"
            );
        }
        // RFC 6238 lists the step of the 1111111109 row as 0x00000000023523EC.
        assert_eq!(step_at(1_111_111_109_000), 0x023523EC);
    }

    /// RFC 4226 Appendix D: HOTP of the counter 0..9, 6 digits.
    #[test]
    fn rfc4226_appendix_d_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(
                hotp(b"12345678901234567890", i as u64, 6, Algorithm::Sha1),
                want
            );
        }
        assert_eq!(code_at(b"12345678901234567890", 1), "287082");
    }

    #[test]
    fn a_code_is_accepted_once_within_the_window_and_never_again() {
        let s = b"12345678901234567890";
        let now = 1_234_567_890_000;
        let step = step_at(now);
        assert_eq!(
            verify(s, &code_at(s, step), now, None),
            Verdict::Accepted(step)
        );
        // The neighbours in the window are accepted; two steps off is not.
        assert_eq!(
            verify(s, &code_at(s, step - 1), now, None),
            Verdict::Accepted(step - 1)
        );
        assert_eq!(
            verify(s, &code_at(s, step + 1), now, None),
            Verdict::Accepted(step + 1)
        );
        assert_eq!(verify(s, &code_at(s, step - 2), now, None), Verdict::Wrong);
        assert_eq!(verify(s, &code_at(s, step + 2), now, None), Verdict::Wrong);
        // Used once: the same code, or an older one, is a replay.
        assert_eq!(
            verify(s, &code_at(s, step), now, Some(step)),
            Verdict::Replayed
        );
        assert_eq!(
            verify(s, &code_at(s, step - 1), now, Some(step)),
            Verdict::Replayed
        );
        assert_eq!(
            verify(s, &code_at(s, step + 1), now, Some(step)),
            Verdict::Accepted(step + 1)
        );
        // Not digits, too short, too long, spaces tolerated.
        for bad in ["", "12345", "1234567", "abcdef"] {
            assert_eq!(verify(s, bad, now, None), Verdict::Wrong, "{bad}");
        }
        let c = code_at(s, step);
        assert_eq!(
            verify(s, &format!("{} {}", &c[..3], &c[3..]), now, None),
            Verdict::Accepted(step)
        );
    }

    #[test]
    fn the_uri_carries_the_secret_in_base32_and_escapes_the_label() {
        let uri = otpauth_uri("pivault Main St", "alice", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/pivault%20Main%20St:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=pivault%20Main%20St&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalise() {
        let a = new_recovery_code();
        let b = new_recovery_code();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), 19);
        let flat = normalise_recovery_code(&a.to_lowercase()).unwrap();
        assert_eq!(*flat, a.replace('-', ""));
        assert!(looks_like_recovery_code(&a));
        assert!(!looks_like_recovery_code("123456"));
        assert!(normalise_recovery_code("ABCD-EFGH-IJKL-MNO1").is_none());
    }
}
