//! Exit codes, stable for scripts (also listed in the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | internal or unexpected error |
//! | 2 | usage error (bad arguments) |
//! | 3 | invalid input (bad field, bad file, weak password, bad ID) |
//! | 4 | authentication failed, account locked or disabled, session invalid, a second factor needed, wrong or replayed, or not yet enrolled |
//! | 5 | permission denied by role |
//! | 6 | not found |
//! | 7 | record disposed of |
//! | 8 | integrity failure (tampered data, audit trail verification failed) |
//! | 9 | vault busy (held by another process), rate limited, the server overloaded (`overloaded`), or failed logins from this source throttled (`login_throttled`): retry later |
//! | 10 | wrong vault passphrase |
//! | 11 | storage or file-system error, or the server's disk nearly full (`disk_low`) |
//! | 12 | `doctor` found an unsafe setting |
//! | 13 | refused by policy (no security officer; pending a second officer's approval (`approval_required`); already exists; legal hold; record in an unfinished disposal; rotation blocked by an unreadable key) |
//! | 14 | disposal verification failed: no certificate issued |
//! | 15 | completed, but the vault could not be closed cleanly: the output is valid, do not retry |
//! | 16 | completed, but the output could not be written: stderr names the result, do not retry |
//! | 17 | pivault-server unreachable: not running, socket permission denied, or the TLS connection failed (nothing was done) |
//!
//! 15 and 16 exist so that the exit status never contradicts the output: a
//! command whose work is done and audited never exits as a failure a script
//! would retry (creating a duplicate record or import).

use vault_core::Error;

pub const OK: u8 = 0;
pub const INTERNAL: u8 = 1;
pub const USAGE: u8 = 2;
pub const INVALID_INPUT: u8 = 3;
pub const AUTH: u8 = 4;
pub const DENIED: u8 = 5;
pub const NOT_FOUND: u8 = 6;
pub const DISPOSED: u8 = 7;
pub const INTEGRITY: u8 = 8;
pub const BUSY: u8 = 9;
pub const PASSPHRASE: u8 = 10;
pub const STORAGE: u8 = 11;
pub const UNSAFE_CONFIG: u8 = 12;
pub const POLICY: u8 = 13;
pub const DISPOSAL_FAILED: u8 = 14;
/// The command's work is done and its output printed, but closing the vault
/// (the signed audit checkpoint) failed.
pub const CLOSE_FAILED: u8 = 15;
/// The command's work is done, but stdout could not be written; stderr
/// names what it did.
pub const OUTPUT_FAILED: u8 = 16;
/// The server could not be reached, so nothing was done: safe to retry.
pub const UNREACHABLE: u8 = 17;

/// Maps an error to its exit code and stable error code. A server's
/// answer carries the same stable codes, so it maps the same way.
pub fn classify(e: &anyhow::Error) -> (u8, String) {
    if let Some(v) = e.downcast_ref::<Error>() {
        return (for_code(v.code()), v.code().to_owned());
    }
    if let Some(r) = e.downcast_ref::<crate::remote::RemoteError>() {
        return (for_code(&r.code), r.code.clone());
    }
    if e.downcast_ref::<crate::remote::Unreachable>().is_some() {
        return (UNREACHABLE, "unreachable".to_owned());
    }
    // Our own messages (missing --vault, unreadable secret file...) are usage-level.
    (USAGE, "usage".to_owned())
}

/// The exit code of a stable error code.
pub fn for_code(code: &str) -> u8 {
    match code {
        "invalid_input" | "weak_password" | "too_large" => INVALID_INPUT,
        "auth_failed"
        | "account_locked"
        | "account_disabled"
        | "session_invalid"
        | "second_factor_required"
        | "second_factor_failed"
        | "two_factor_enrolment_required" => AUTH,
        "permission_denied" => DENIED,
        "not_found" | "not_a_vault" => NOT_FOUND,
        "disposed" => DISPOSED,
        "integrity" | "unsupported_format" => INTEGRITY,
        "vault_busy" | "taken_over" | "rate_limited" | "login_throttled" | "timeout"
        | "unavailable" | "overloaded" | "no_holder" | "holder_lost" => BUSY,
        "wrong_passphrase" => PASSPHRASE,
        "storage" | "io" | "audit_unavailable" | "import_incomplete" | "writes_fenced"
        | "disk_low" => STORAGE,
        "unsafe_permissions" => UNSAFE_CONFIG,
        "no_officer"
        | "approval_required"
        | "already_exists"
        | "legal_hold"
        | "disposal_in_progress"
        | "preview_stale"
        | "rotation_blocked" => POLICY,
        "disposal_failed" => DISPOSAL_FAILED,
        _ => INTERNAL,
    }
}
