//! Typed identifiers. Every ID is a UUID (v7 for things the vault creates, so
//! they sort by creation time) validated at the boundary; none carries
//! personal information, so IDs may appear in logs, the audit trail, URLs and
//! RocksDB keys.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new time-ordered ID (UUIDv7).
            pub fn new() -> Self {
                $name(uuid::Uuid::now_v7())
            }
            /// The 16 raw bytes, used in storage keys and AAD.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
            /// From the 16 raw bytes of a storage key.
            pub fn from_bytes(b: [u8; 16]) -> Self {
                $name(uuid::Uuid::from_bytes(b))
            }
            #[allow(dead_code)] // not every ID type is read back from a storage key
            pub(crate) fn from_slice(b: &[u8]) -> Result<Self, Error> {
                let arr: [u8; 16] = b
                    .try_into()
                    .map_err(|_| Error::Integrity(concat!($what, " key")))?;
                Ok(Self::from_bytes(arr))
            }
            /// The underlying UUID.
            pub fn uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                uuid::Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| Error::InvalidInput(concat!("not a valid ", $what, " ID (expected a UUID)").into()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

typed_id!(
    /// A stored record (one customer record in one collection).
    RecordId, "record"
);
typed_id!(
    /// A data subject: the person (customer) records are about.
    SubjectId, "subject"
);
typed_id!(
    /// A user of the vault. Never reused, even if a username is.
    UserId, "user"
);
typed_id!(
    /// A vault instance.
    VaultId, "vault"
);
typed_id!(
    /// A certificate of destruction.
    CertificateId, "certificate"
);
typed_id!(
    /// A disposal batch.
    DisposalId, "disposal"
);
typed_id!(
    /// A backup of the vault's record data (never its header).
    BackupId, "backup"
);
typed_id!(
    /// An incident in the register (201 CMR 17.03(2)(j)).
    IncidentId, "incident"
);

impl SubjectId {
    /// A subject ID derived from a business's own customer reference with a
    /// vault-secret HMAC key, so the same reference always names the same
    /// subject but the reference itself is never stored.
    pub(crate) fn from_reference_mac(mac: [u8; 16]) -> Self {
        SubjectId(uuid::Builder::from_custom_bytes(mac).into_uuid())
    }
}

/// A collection name: lowercase letters, digits, `_` and `-`, 1 to 64
/// characters, starting with a letter. Collection names are metadata and
/// appear in keys and the audit trail, so they are kept to a safe alphabet.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct CollectionName(String);

impl CollectionName {
    /// Validates a collection name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if ok {
            Ok(CollectionName(s.to_owned()))
        } else {
            Err(Error::invalid(
                "collection name must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
            ))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username: 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Username(String);

impl Username {
    /// Validates a username. Usernames are compared case-insensitively (stored lowercase).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let s = s.trim().to_ascii_lowercase();
        let ok = (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok {
            Ok(Username(s))
        } else {
            Err(Error::invalid(
                "username must be 1-64 characters of a-z, 0-9, '.', '_', '-' or '@'",
            ))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = RecordId::new();
        assert_eq!(id.to_string().parse::<RecordId>().unwrap(), id);
        assert!("not-a-uuid".parse::<RecordId>().is_err());
        let e = "123-45-6789".parse::<SubjectId>().unwrap_err().to_string();
        assert!(!e.contains("6789"), "error must not echo input: {e}");
    }

    #[test]
    fn names_are_validated() {
        assert!(CollectionName::parse("customers").is_ok());
        assert!(CollectionName::parse("Customers").is_err());
        assert!(CollectionName::parse("").is_err());
        assert!(CollectionName::parse("a b").is_err());
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert!(Username::parse("a b").is_err());
    }
}
