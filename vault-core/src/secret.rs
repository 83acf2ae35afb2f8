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

    /// Reads a secret file that only its owner may read or write (mode
    /// 0600 or 0400): a passphrase, password, token or key file that
    /// others on the machine can read is a secret they hold too, so it is
    /// refused rather than used (201 CMR 17.04(1)(b), secure passwords).
    /// The mode is checked on the opened file, not the path, so it cannot
    /// be swapped in between.
    pub fn from_private_file(path: &std::path::Path) -> std::io::Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        check_private(&f.metadata()?)?;
        let mut s = Zeroizing::new(String::new());
        f.read_to_string(&mut s)?;
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

/// Refuses a secret file that anyone but its owner may read or write
/// (see [`SecretString::from_private_file`]); for files read by other code,
/// such as a TLS key.
pub fn check_private_file(path: &std::path::Path) -> std::io::Result<()> {
    check_private(&std::fs::metadata(path)?)
}

fn check_private(m: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !m.is_file() {
        // A pipe (`<(pass show …)`, /dev/stdin) holds nothing at rest.
        return Ok(());
    }
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it is open to group or others (mode {mode:04o}); only its owner may read it: chmod 600 it"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_open_to_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("passphrase");
        std::fs::write(&f, "correct horse battery staple\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = SecretString::from_private_file(&f);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}");
            assert_eq!(check_private_file(&f).is_ok(), ok, "mode {mode:o}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod 600"), "{e}");
                assert!(!e.to_string().contains("horse"));
            } else {
                assert_eq!(r.unwrap().expose(), "correct horse battery staple");
            }
        }
    }

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
