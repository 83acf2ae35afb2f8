//! The one error type of the engine.
//!
//! Every variant has a stable [`Error::code`] that the front ends map to exit
//! codes and problem+json types. No variant carries personal information or a
//! secret: messages name the field or the kind of thing, never the value.

use std::fmt;

/// Everything that can go wrong in vault-core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Input was rejected (bad field, undeclared field, bad ID, bad schema).
    /// The message names what was wrong, never the submitted value.
    InvalidInput(String),
    /// A new password fails the password policy (length, blocklist).
    WeakPassword(&'static str),
    /// Unknown user or wrong password: deliberately the same error.
    AuthFailed,
    /// The account is locked after repeated failures until the given time (unix ms).
    AccountLocked {
        /// Unix milliseconds at which the lock ends.
        until_ms: i64,
    },
    /// Too many failed logins from this source (client address, socket
    /// peer, command line): wait before the next attempt. Checked before the
    /// password, whatever the username, and never counted against an account.
    LoginThrottled {
        /// Unix milliseconds at which the source may try again.
        retry_at_ms: i64,
    },
    /// A service account's token made more calls than its rate allows.
    RateLimited {
        /// Unix milliseconds at which the next call is allowed.
        retry_at_ms: i64,
    },
    /// The password was right and the account signs in with a second
    /// factor: ask for the code (REQ-AUTH-07).
    SecondFactorRequired,
    /// The second factor's code was wrong, outside its time window, or
    /// already used (a replay); counted toward the lock-out like a wrong
    /// password.
    SecondFactorFailed,
    /// The user's role requires two-factor sign-in and they have not
    /// enrolled: the session may enrol and nothing else.
    EnrolmentRequired,
    /// The account is disabled.
    AccountDisabled,
    /// The session or token is unknown, expired or revoked.
    SessionInvalid,
    /// The actor's role does not grant this action.
    PermissionDenied(&'static str),
    /// The thing asked for does not exist.
    NotFound(&'static str),
    /// The thing to create exists already.
    AlreadyExists(&'static str),
    /// The record was disposed of; the certificate names the disposal.
    Disposed {
        /// Certificate of destruction covering the record, if one was issued.
        certificate: Option<String>,
    },
    /// The record or subject is under legal hold; disposal is refused.
    LegalHold,
    /// A disposal batch failed its verification; no certificate was issued
    /// and the batch stays visible as failed until retried.
    DisposalFailed(String),
    /// The vault passphrase (or key file) does not open this vault.
    WrongPassphrase,
    /// Stored data failed its integrity check (tampered or corrupt).
    Integrity(&'static str),
    /// The record is named by a disposal batch that has not finished: it
    /// can be neither read nor changed, and a hold on it comes too late.
    DisposalInProgress,
    /// A disposal confirmed from a preview would destroy other records than
    /// the preview showed (one was added to the scope, held or disposed
    /// since): nothing was done.
    PreviewStale,
    /// A bucket rotation would fail because a surviving data key in a
    /// touched bucket cannot be unwrapped; nothing was deleted. The message
    /// names the record and key version (IDs only).
    RotationBlocked(String),
    /// An import stored some records and then failed: `stored` records, up
    /// to data line `last_line`, are in the vault (each audited); the rest
    /// is not. Re-running from the line after `last_line` adds no duplicate.
    ImportIncomplete {
        /// Records stored (and audited) before the failure.
        stored: u64,
        /// The line of the last stored record (0 if none).
        last_line: u64,
        /// Stable code of the failure.
        cause_code: &'static str,
        /// The failure's message (no personal information).
        cause: String,
    },
    /// An undo after a failed audit write failed too: the vault refuses
    /// every further change until it is reopened, when its write journal
    /// reconciles the rows with the audit trail.
    WritesFenced,
    /// Personal-information writes are refused while no active security officer exists (REQ-WISP-02).
    NoOfficer,
    /// The change waits for a second security officer's approval (two-person
    /// rule); nothing changed yet. `request` is the pending request's ID.
    ApprovalRequired {
        /// Pending request ID, for `approve_request` / `reject_request`.
        request: String,
    },
    /// Another process holds the vault open.
    VaultBusy,
    /// Another process took the vault over after this process's lease on
    /// it lapsed (it was stopped or cut off from the cluster for longer
    /// than the lease): this process serves nothing more and must open the
    /// vault again, as a standby.
    TakenOver,
    /// The directory is not a vault, or a vault exists where one was to be created.
    NotAVault(String),
    /// A vault file or directory is readable by group or others.
    UnsafePermissions(String),
    /// The on-disk format version is not one this build reads.
    UnsupportedFormat(&'static str),
    /// The audit trail could not be written; the operation was not performed (fail closed).
    AuditUnavailable(String),
    /// The storage engine failed.
    Storage(String),
    /// A file-system operation failed.
    Io(String),
}

impl Error {
    /// The same failure for another caller whose work failed with this one
    /// (a group of audit events written at once): errors are not `Clone`,
    /// and an audit write fails as [`Error::TakenOver`] or
    /// [`Error::AuditUnavailable`], whatever failed under it.
    pub(crate) fn again(&self) -> Error {
        match self {
            Error::TakenOver => Error::TakenOver,
            Error::AuditUnavailable(m) => Error::AuditUnavailable(m.clone()),
            e => Error::AuditUnavailable(e.to_string()),
        }
    }

    /// A stable, machine-readable code for scripts and problem+json `type`s.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::WeakPassword(_) => "weak_password",
            Error::AuthFailed => "auth_failed",
            Error::AccountLocked { .. } => "account_locked",
            Error::LoginThrottled { .. } => "login_throttled",
            Error::RateLimited { .. } => "rate_limited",
            Error::SecondFactorRequired => "second_factor_required",
            Error::SecondFactorFailed => "second_factor_failed",
            Error::EnrolmentRequired => "two_factor_enrolment_required",
            Error::AccountDisabled => "account_disabled",
            Error::SessionInvalid => "session_invalid",
            Error::PermissionDenied(_) => "permission_denied",
            Error::NotFound(_) => "not_found",
            Error::AlreadyExists(_) => "already_exists",
            Error::Disposed { .. } => "disposed",
            Error::LegalHold => "legal_hold",
            Error::DisposalFailed(_) => "disposal_failed",
            Error::WrongPassphrase => "wrong_passphrase",
            Error::Integrity(_) => "integrity",
            Error::DisposalInProgress => "disposal_in_progress",
            Error::PreviewStale => "preview_stale",
            Error::RotationBlocked(_) => "rotation_blocked",
            Error::ImportIncomplete { .. } => "import_incomplete",
            Error::WritesFenced => "writes_fenced",
            Error::NoOfficer => "no_officer",
            Error::ApprovalRequired { .. } => "approval_required",
            Error::VaultBusy => "vault_busy",
            Error::TakenOver => "taken_over",
            Error::NotAVault(_) => "not_a_vault",
            Error::UnsafePermissions(_) => "unsafe_permissions",
            Error::UnsupportedFormat(_) => "unsupported_format",
            Error::AuditUnavailable(_) => "audit_unavailable",
            Error::Storage(_) => "storage",
            Error::Io(_) => "io",
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::WeakPassword(why) => write!(f, "password rejected: {why}"),
            Error::AuthFailed => f.write_str("invalid username or password"),
            Error::AccountLocked { until_ms } => {
                let until = jiff::Timestamp::from_millisecond(*until_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| "later".into());
                write!(f, "account locked after repeated failed logins until {until}; an admin can unlock it")
            }
            Error::LoginThrottled { retry_at_ms } => {
                let at = jiff::Timestamp::from_millisecond(*retry_at_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| "later".into());
                write!(f, "too many failed logins from your address or terminal: try again after {at}")
            }
            Error::RateLimited { retry_at_ms } => {
                let at = jiff::Timestamp::from_millisecond(*retry_at_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| "later".into());
                write!(f, "this service token made more calls than its rate allows: try again after {at}")
            }
            Error::SecondFactorRequired => f.write_str(
                "this account signs in with a second factor: give the 6-digit code from its authenticator app, or one of its recovery codes",
            ),
            Error::SecondFactorFailed => f.write_str(
                "the second factor's code is wrong, expired or already used: wait for the app's next code and try again (failures count toward the lock-out)",
            ),
            Error::EnrolmentRequired => f.write_str(
                "your role requires two-factor sign-in and you have not enrolled: enrol first (`pivault two-factor enrol`); nothing else is allowed until then",
            ),
            Error::AccountDisabled => f.write_str("account disabled"),
            Error::SessionInvalid => f.write_str("session or token is invalid, expired or revoked"),
            Error::PermissionDenied(action) => write!(f, "permission denied: your role may not {action}"),
            Error::NotFound(what) => write!(f, "{what} not found"),
            Error::AlreadyExists(what) => write!(f, "{what} already exists"),
            Error::Disposed { certificate: Some(c) } => write!(f, "record was disposed of (certificate {c})"),
            Error::Disposed { certificate: None } => f.write_str("record was disposed of"),
            Error::LegalHold => f.write_str("under legal hold: disposal refused until the hold is removed"),
            Error::DisposalFailed(m) => write!(f, "disposal verification failed, no certificate issued: {m}"),
            Error::WrongPassphrase => f.write_str("the vault passphrase or key file does not open this vault"),
            Error::Integrity(what) => write!(f, "integrity check failed: {what} is tampered or corrupt"),
            Error::PreviewStale => f.write_str(
                "the records in scope changed since the preview (one was added, held or disposed of): nothing was disposed; preview again",
            ),
            Error::DisposalInProgress => f.write_str(
                "the record is in a disposal batch that has not finished: one running now, or one stopped (see `pivault disposal list`; a stopped one resumes on the next open or with `pivault disposal retry`)",
            ),
            Error::RotationBlocked(m) => write!(
                f,
                "disposal refused before any key was deleted: {m}; that record is unreadable: dispose of it on its own first, or restore it from a backup"
            ),
            Error::ImportIncomplete { stored, last_line, cause, .. } => write!(
                f,
                "import stopped: {stored} record(s) up to line {last_line} were stored and audited, the rest was not ({cause}); resume from the line after {last_line} to add no duplicate"
            ),
            Error::WritesFenced => f.write_str(
                "the vault refuses changes after a failed undo; close and reopen it (the write journal then reconciles every unaudited change)",
            ),
            Error::NoOfficer => f.write_str(
                "no active security officer: personal-information writes are refused until an admin designates one (role officer)",
            ),
            Error::ApprovalRequired { request } => write!(
                f,
                "pending approval (request {request}): a security officer other than you must approve it within 24 h (pivault user approve {request})"
            ),
            Error::VaultBusy => f.write_str(
                "the vault is held open by another process (a running pivault-server? use --server)",
            ),
            Error::TakenOver => f.write_str(
                "another process took the vault over after this process's lease on it lapsed; this process serves nothing more (restart it: it stands by)",
            ),
            Error::NotAVault(m) => write!(f, "{m}"),
            Error::UnsafePermissions(p) => {
                write!(f, "{p} is readable by group or others; chmod it to 0600 (files) or 0700 (directories)")
            }
            Error::UnsupportedFormat(what) => write!(f, "unsupported on-disk format: {what}"),
            Error::AuditUnavailable(m) => write!(f, "audit trail unavailable, operation refused: {m}"),
            Error::Storage(m) => write!(f, "storage error: {m}"),
            Error::Io(m) => write!(f, "i/o error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        storage_error(&e.into_string())
    }
}

/// The error for a message of the storage engine.
fn storage_error(msg: &str) -> Error {
    {
        let msg = vault_relative(msg);
        let lower = msg.to_ascii_lowercase();
        // Only a lock another process holds is "busy": a LOCK file the
        // vault may not open (permissions, a read-only file system) is
        // that, and says so.
        let locked = lower.contains("lock hold")
            || (lower.contains("lock") && lower.contains("resource temporarily unavailable"));
        if locked {
            return Error::VaultBusy;
        }
        Error::Storage(with_cause(&msg))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(with_cause(&e.to_string()))
    }
}

impl Error {
    /// A file-system error on `path`, named relative to the vault (never
    /// an absolute path, which would tell a client how the host is laid out)
    /// with its cause in words an operator acts on.
    pub fn io_at(path: &std::path::Path, e: std::io::Error) -> Error {
        let name = relative_name(path);
        Error::Io(with_cause(&format!("{name}: {e}")))
    }
}

/// The cause of a storage or file-system failure, from the OS's or the
/// storage engine's message: what an operator has to fix.
fn cause_of(msg: &str) -> Option<&'static str> {
    let m = msg.to_ascii_lowercase();
    [
        ("no space left", "the disk is full"),
        ("disk quota exceeded", "the disk quota is used up"),
        ("read-only file system", "the file system is read-only"),
        ("permission denied", "permission denied"),
        ("operation not permitted", "permission denied"),
        ("corruption", "the data is corrupted"),
        ("checksum mismatch", "the data is corrupted"),
        ("too many open files", "too many open files"),
        ("input/output error", "the disk reported an i/o error"),
        ("no such file", "a file is missing"),
    ]
    .iter()
    .find(|(needle, _)| m.contains(needle))
    .map(|(_, cause)| *cause)
}

/// `cause: message`, when the cause is known.
fn with_cause(msg: &str) -> String {
    match cause_of(msg) {
        Some(c) => format!("{c}: {msg}"),
        None => msg.to_owned(),
    }
}

/// The parts of a vault directory an error can be about.
const VAULT_PARTS: [&str; 8] = [
    "records", "keystore", "audit", "header", "backups", "spool", "anchors", "LOCK",
];

/// `path` named as [`vault_relative`] names a path in a message, from the
/// path's own components: a directory with a space in its name (a home
/// directory after its owner, `/home/Jane Doe/…`) is never half kept.
fn relative_name(path: &std::path::Path) -> String {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let from = parts
        .iter()
        .rposition(|p| VAULT_PARTS.iter().any(|v| p.starts_with(v)) && p != "LOCK")
        .or_else(|| parts.len().checked_sub(1));
    match from {
        Some(f) => parts[f..].join("/"),
        None => "/".to_owned(),
    }
}

/// Rewrites every absolute path in `msg` relative to the vault: from its
/// last component that is a part of a vault (`records/000012.log`,
/// `keystore/LOCK`, `audit/seg-00000001.log`), else its file name only.
pub(crate) fn vault_relative(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find('/') {
        // A path starts at a '/' that begins a word.
        let starts_word = i == 0 || {
            let b = rest.as_bytes()[i - 1];
            b == b' ' || b == b':' || b == b'(' || b == b'\'' || b == b'"'
        };
        if !starts_word {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        // RocksDB ends a path with `: ` (or the message's end), never with a
        // space: a directory named after a person (`/home/Jane Doe/…`) runs
        // on to the vault's part, and everything before that part goes.
        let end = tail
            .find(": ")
            .or_else(|| tail.ends_with(':').then(|| tail.len() - 1))
            .unwrap_or(tail.len());
        let parts: Vec<&str> = tail[..end].split('/').filter(|p| !p.is_empty()).collect();
        let end = match parts
            .iter()
            .rposition(|p| VAULT_PARTS.iter().any(|v| p.starts_with(v)) && *p != "LOCK")
        {
            Some(f) => {
                out.push_str(&parts[f..].join("/"));
                end
            }
            // Not in a vault: the file's name, up to the first space.
            None => {
                let end = tail
                    .find(|c: char| c.is_whitespace() || matches!(c, ':' | '\'' | '"' | ')'))
                    .unwrap_or(tail.len());
                let name = tail[..end].rsplit('/').find(|p| !p.is_empty());
                out.push_str(name.unwrap_or("/"));
                end
            }
        };
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Result alias used throughout vault-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod storage_error_tests {
    use super::*;

    /// Messages as RocksDB and the OS write them: the cause is named, the
    /// path is relative to the vault, and only a lock held by another
    /// process is `VaultBusy`.
    #[test]
    fn storage_errors_name_the_file_and_the_cause() {
        let busy =
            "IO error: While lock file: /srv/v/records/LOCK: Resource temporarily unavailable";
        assert!(matches!(
            storage_error(&rocksdb_error(busy)),
            Error::VaultBusy
        ));
        let held = "IO error: lock hold by current process, acquire time 1 acquiring thread 2: /srv/v/keystore/LOCK: No locks available";
        assert!(matches!(
            storage_error(&rocksdb_error(held)),
            Error::VaultBusy
        ));
        let denied = "IO error: While open a file for lock: /srv/v/records/LOCK: Permission denied";
        let e = storage_error(&rocksdb_error(denied)).to_string();
        assert_eq!(
            e,
            "storage error: permission denied: IO error: While open a file for lock: records/LOCK: Permission denied"
        );
        let full = "IO error: No space left on device: While appending to file: /tmp/.tmpAb/vault/records/000012.log: No space left on device";
        let e = storage_error(&rocksdb_error(full)).to_string();
        assert!(e.starts_with("storage error: the disk is full: "), "{e}");
        assert!(
            e.contains("records/000012.log") && !e.contains("/tmp"),
            "{e}"
        );
        let corrupt = "Corruption: block checksum mismatch: stored = 1, computed = 2 in /x/vault/keystore/000007.sst offset 0 size 10";
        let e = storage_error(&rocksdb_error(corrupt)).to_string();
        assert!(
            e.contains("the data is corrupted")
                && e.contains("keystore/000007.sst")
                && !e.contains("/x/"),
            "{e}"
        );
        let io = Error::io_at(
            std::path::Path::new("/home/o/vault/audit/seg-00000001.log"),
            std::io::Error::from_raw_os_error(28),
        )
        .to_string();
        assert!(
            io.starts_with("i/o error: the disk is full: audit/seg-00000001.log: "),
            "{io}"
        );
        // A directory named after a person is not echoed, even in part.
        for (path, named) in [
            ("/home/Jane Doe/shop/DELETED", "DELETED"),
            (
                "/home/Jane Doe/shop/records/000012.log",
                "records/000012.log",
            ),
            (
                "/srv/Jane Doe's vault/audit/seg-00000002.log",
                "audit/seg-00000002.log",
            ),
        ] {
            let io = Error::io_at(
                std::path::Path::new(path),
                std::io::Error::from_raw_os_error(28),
            )
            .to_string();
            assert_eq!(
                io,
                format!(
                    "i/o error: the disk is full: {named}: No space left on device (os error 28)"
                )
            );
        }
        // RocksDB's own messages, the vault under such a directory.
        for (msg, named) in [
            (
                "IO error: While appending to file: /home/Jane Doe/shop/records/000012.log: No space left on device",
                "IO error: While appending to file: records/000012.log: No space left on device",
            ),
            (
                "Corruption: checksum mismatch in file /srv/Jane Doe's vault/keystore/000009.sst",
                "Corruption: checksum mismatch in file keystore/000009.sst",
            ),
            (
                "IO error: While lock file: /home/Jane Doe/shop/records/LOCK: Resource busy",
                "IO error: While lock file: records/LOCK: Resource busy",
            ),
            (
                "Invalid argument: /home/Jane Doe/shop/keystore: does not exist (create_if_missing is false)",
                "Invalid argument: keystore: does not exist (create_if_missing is false)",
            ),
        ] {
            assert_eq!(vault_relative(msg), named);
            assert!(!storage_error(msg).to_string().contains("Jane"), "{msg}");
        }
        assert_eq!(vault_relative("/etc/passwd: gone"), "passwd: gone");
        assert_eq!(
            vault_relative("open /etc/passwd failed"),
            "open passwd failed"
        );
        assert_eq!(vault_relative("ends in /tmp/x:"), "ends in x:");
        assert_eq!(vault_relative("a/b and 3/4"), "a/b and 3/4");
    }

    /// RocksDB's errors have no public constructor: the conversion's
    /// body, from the message.
    fn rocksdb_error(msg: &str) -> String {
        msg.to_owned()
    }
}
