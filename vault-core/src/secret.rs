//! Secrets as types: zeroized on drop, redacted in `Debug`, never `Clone`,
//! never `Serialize`, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A 256-bit symmetric key (unlock key, root key, bucket key, data key).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        crate::crypto::fill_random(&mut k);
        SecretKey(k)
    }

    /// Wraps raw key bytes; the caller's copy should be zeroized.
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// Takes key bytes from a slice that must be exactly 32 bytes long.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(SecretKey(arr))
    }

    /// Declassified only to feed a cipher or to wrap the key under another key.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// A passphrase, password or token in memory.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of the string; it is wiped when dropped.
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// Reads a secret from a file, dropping one trailing newline.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut s = Zeroizing::new(std::fs::read_to_string(path)?);
        while s.ends_with('\n') || s.ends_with('\r') {
            s.pop();
        }
        Ok(SecretString(s))
    }

    /// Declassified to hash or derive from it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString::new(s.to_owned())
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::from_bytes([7u8; 32]);
        assert_eq!(format!("{k:?}"), "SecretKey(***)");
        let s = SecretString::from("hunter2-correct-horse");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([1; 32])
        );
        assert_ne!(
            SecretKey::from_bytes([1; 32]),
            SecretKey::from_bytes([2; 32])
        );
    }
}
