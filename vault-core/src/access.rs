//! Access control: users, roles and permissions (default deny), password
//! policy and hashing, lock-out, and sessions (REQ-AUTH-01..05, REQ-ACL-01).
//!
//! The policy table is [`Role::permits`]; every operation of the [`crate::Vault`]
//! facade asks it before touching data, whatever the front end.

use std::fmt;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{UserId, Username};
use crate::secret::SecretString;

/// The fixed set of roles (DESIGN §5).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Users, collections, policies and holds; no record contents.
    Admin,
    /// The designated security officer: reports, audit, record review with reveal.
    Officer,
    /// Day-to-day staff: create, read (masked) and update records.
    Clerk,
    /// Audit trail and reports; no record contents.
    Auditor,
    /// Disposal contractor: record IDs and metadata in scope; never contents.
    Contractor,
    /// A service account's role for the nightly retention script: list what
    /// is past retention, dispose of it, read certificates; never record
    /// contents, never any other disposal. Only service accounts hold it.
    RetentionRunner,
    /// A service account's role for a log shipper: read and export the
    /// audit trail, nothing else (no record, no user list, no disposal).
    /// Only service accounts hold it.
    AuditExporter,
}

/// Everything a user can ask the vault to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum Permission {
    /// Add, disable, unlock users and change roles.
    ManageUsers,
    /// Create collections and their schemas.
    ManageCollections,
    /// Create records (one or by import).
    CreateRecord,
    /// Read a record's contents (masked).
    ReadRecord,
    /// Reveal a sensitive field with a reason.
    RevealField,
    /// Replace a record's body (new version).
    UpdateRecord,
    /// List record IDs and metadata (no contents).
    ListRecords,
    /// Read the audit trail and verify it.
    ReadAudit,
    /// Per-user activity and incident reports.
    Reports,
    /// Dispose of records (the disposal issue).
    Dispose,
    /// Record the date of the last security review.
    RecordReview,
    /// Validate another user's disposal certificate (NIST SP 800-88's
    /// second person): officers and auditors, so that a business with one
    /// officer still gets validated certificates.
    ValidateCertificate,
    /// Dispose of what is past retention, and nothing else (the retention
    /// run of a script): the narrow part of `Dispose` a service may hold.
    RunRetention,
    /// Export the audit trail to a log system and see the state of the
    /// server's stream: the narrow part of `ReadAudit` a log shipper holds
    /// (no user list, no anchors, no reports).
    ExportAudit,
    /// Look records up by a searchable field's value (`record find`): the
    /// answer is masked as `record get` is; never a reveal.
    FindRecords,
    /// Rebuild a collection's blind indexes (`collection reindex`): every
    /// record decrypted in memory, nothing shown.
    ReindexSearch,
    /// Export a subject's or a collection's records, every field in full,
    /// encrypted to a recipient (`subject export`, `collection export`;
    /// REQ-WISP-05), with a reason.
    ExportRecords,
    /// Export records without encryption (`--plaintext`): on top of
    /// `ExportRecords`, with a reason; later certificates list the copy.
    ExportPlaintext,
    /// The incident register (201 CMR 17.03(2)(j)): scope an incident from
    /// the audit trail, open it, record responsive actions and the
    /// post-incident review, draft the breach notice. Officers only: the
    /// scope classifies the records it names (residence, element types).
    Incidents,
}

impl Permission {
    /// Every permission, for the role × operation matrix.
    pub const ALL: [Permission; 19] = [
        Permission::ManageUsers,
        Permission::ManageCollections,
        Permission::CreateRecord,
        Permission::ReadRecord,
        Permission::RevealField,
        Permission::UpdateRecord,
        Permission::ListRecords,
        Permission::ReadAudit,
        Permission::Reports,
        Permission::Dispose,
        Permission::RecordReview,
        Permission::ValidateCertificate,
        Permission::RunRetention,
        Permission::ExportAudit,
        Permission::FindRecords,
        Permission::ReindexSearch,
        Permission::ExportRecords,
        Permission::ExportPlaintext,
        Permission::Incidents,
    ];

    /// What the permission allows, for error messages ("your role may not …").
    pub fn verb(&self) -> &'static str {
        match self {
            Permission::ManageUsers => "manage users",
            Permission::ManageCollections => "manage collections",
            Permission::CreateRecord => "create records",
            Permission::ReadRecord => "read record contents",
            Permission::RevealField => "reveal sensitive fields",
            Permission::UpdateRecord => "update records",
            Permission::ListRecords => "list records",
            Permission::ReadAudit => "read the audit trail",
            Permission::Reports => "run activity reports",
            Permission::Dispose => "dispose of records",
            Permission::RecordReview => "record a security review",
            Permission::ValidateCertificate => "validate disposal certificates",
            Permission::RunRetention => "dispose of records past retention",
            Permission::ExportAudit => "export the audit trail",
            Permission::FindRecords => "search records",
            Permission::ReindexSearch => "rebuild search indexes",
            Permission::ExportRecords => "export records",
            Permission::ExportPlaintext => "export records without encryption",
            Permission::Incidents => "scope and document security incidents",
        }
    }
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Officer,
        Role::Clerk,
        Role::Auditor,
        Role::Contractor,
        Role::RetentionRunner,
        Role::AuditExporter,
    ];

    /// The roles of people (who log in with a password).
    pub const PEOPLE: [Role; 5] = [
        Role::Admin,
        Role::Officer,
        Role::Clerk,
        Role::Auditor,
        Role::Contractor,
    ];

    /// A role only service accounts hold (and service accounts hold no other).
    pub fn is_service(&self) -> bool {
        matches!(self, Role::RetentionRunner | Role::AuditExporter)
    }

    /// Whether a holder of `self` may create a service account of role
    /// `service`: only when `self` already holds every permission of it,
    /// so a service account never gives its creator a power they lack
    /// (an admin, who may not dispose, cannot mint a token that may).
    pub fn may_delegate(&self, service: Role) -> bool {
        service.is_service()
            && Permission::ALL
                .iter()
                .all(|&p| !service.permits(p) || self.permits(p))
    }

    /// The policy table. Anything not listed is denied.
    pub fn permits(&self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => matches!(p, P::ManageUsers | P::ManageCollections | P::ListRecords),
            Role::Officer => matches!(
                p,
                P::ReadRecord
                    | P::RevealField
                    | P::ListRecords
                    | P::ReadAudit
                    | P::Reports
                    | P::Dispose
                    | P::RecordReview
                    | P::ValidateCertificate
                    | P::RunRetention
                    | P::ExportAudit
                    | P::FindRecords
                    | P::ReindexSearch
                    | P::ExportRecords
                    | P::ExportPlaintext
                    | P::Incidents
            ),
            Role::Clerk => matches!(
                p,
                P::CreateRecord | P::ReadRecord | P::UpdateRecord | P::ListRecords | P::FindRecords
            ),
            Role::Auditor => matches!(
                p,
                P::ReadAudit | P::Reports | P::ValidateCertificate | P::ExportAudit
            ),
            Role::Contractor => matches!(p, P::ListRecords | P::Dispose),
            Role::RetentionRunner => matches!(p, P::RunRetention),
            Role::AuditExporter => matches!(p, P::ExportAudit),
        }
    }

    /// Lowercase name used on the command line and in storage.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Officer => "officer",
            Role::Clerk => "clerk",
            Role::Auditor => "auditor",
            Role::Contractor => "contractor",
            Role::RetentionRunner => "retention-runner",
            Role::AuditExporter => "audit-exporter",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "role must be one of admin, officer, clerk, auditor, contractor \
                     (retention-runner, audit-exporter: service accounts only)",
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Account state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UserState {
    /// May log in.
    Active,
    /// Disabled by an admin (terminated employee): no login, no sessions.
    Disabled,
}

/// Lock-out policy (REQ-AUTH-05), with the per-source throttle in front of it.
///
/// Failed logins are first throttled per *source* (the client address over
/// HTTP, the peer over a local socket, the command line itself): a source
/// gets [`LockoutPolicy::source_free_failures`] free failures, then must wait
/// a doubling backoff before each further attempt, and an attempt made while
/// it waits is refused ([`crate::Error::LoginThrottled`]) without checking
/// the password and without counting against the account. An account locks
/// only after failures from [`LockoutPolicy::max_failures`] *distinct*
/// sources since its last successful login, so one hostile source, however
/// patient, can slow its own guessing but cannot lock the owner out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures from this many distinct sources (since the last successful
    /// login) lock the account.
    pub max_failures: u32,
    /// First lock-out duration; doubles on each repeat.
    pub base_lock_ms: i64,
    /// Upper bound of the doubling.
    pub max_lock_ms: i64,
    /// Failed logins a source may make before its backoff starts.
    pub source_free_failures: u32,
    /// The first backoff of a source past its free failures; doubles with each further failure.
    pub source_base_backoff_ms: i64,
    /// Upper bound of a source's backoff.
    pub source_max_backoff_ms: i64,
    /// A source with no failure for this long starts afresh.
    pub source_forget_ms: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            base_lock_ms: 15 * 60 * 1000,
            max_lock_ms: 24 * 60 * 60 * 1000,
            source_free_failures: 3,
            source_base_backoff_ms: 1000,
            source_max_backoff_ms: 15 * 60 * 1000,
            source_forget_ms: 60 * 60 * 1000,
        }
    }
}

/// A source's failed-login state, kept in the records database so that
/// neither a restart of the server nor a new command-line process resets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceRow {
    /// Failed logins since the source last started afresh.
    pub failures: u32,
    /// Time of the last failure, unix ms.
    pub last_failure_ms: i64,
}

impl SourceRow {
    /// The failures that still count at `now` (all of them are forgotten
    /// after [`LockoutPolicy::source_forget_ms`] without a failure).
    pub fn current(self, policy: &LockoutPolicy, now_ms: i64) -> SourceRow {
        if now_ms - self.last_failure_ms >= policy.source_forget_ms {
            SourceRow::default()
        } else {
            self
        }
    }

    /// Until when (unix ms) the source must wait before its next attempt,
    /// if it must: after the free failures, 1×, 2×, 4×… the base backoff
    /// from its last failure, bounded.
    pub fn throttled_until(self, policy: &LockoutPolicy, now_ms: i64) -> Option<i64> {
        let s = self.current(policy, now_ms);
        let past = s.failures.checked_sub(policy.source_free_failures)?;
        let wait = policy
            .source_base_backoff_ms
            .saturating_mul(1i64 << past.min(30))
            .min(policy.source_max_backoff_ms);
        Some(s.last_failure_ms + wait).filter(|&t| t > now_ms)
    }

    /// The state after one more failure at `now`.
    pub fn fail(self, policy: &LockoutPolicy, now_ms: i64) -> SourceRow {
        let s = self.current(policy, now_ms);
        SourceRow {
            failures: s.failures.saturating_add(1),
            last_failure_ms: now_ms,
        }
    }
}

/// A stored user. The password is only ever held as an Argon2id PHC string.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserRow {
    pub id: String,
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub reveal: bool,
    pub password_phc: String,
    pub created_ms: i64,
    pub last_login_ms: Option<i64>,
    pub failures: u32,
    pub lockouts: u32,
    pub locked_until_ms: Option<i64>,
    /// Bumped on disable or password change: sessions of older generations die.
    pub generation: u32,
    /// The sources (short hashes, see [`source_tag`]) whose failures count
    /// in `failures` since the last successful login: each source counts
    /// once, so one source alone never locks the account.
    #[serde(default)]
    pub failure_sources: Vec<String>,
    /// A service account (a script's credential): no password, no login,
    /// only long-lived tokens; never subject to the password lock-out.
    #[serde(default)]
    pub service: bool,
    /// A service account's: who was shown its current token (at creation
    /// or the last rotation). If that person is later disabled, the token
    /// left with them: `doctor` says to rotate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued_to: Option<String>,
    /// The second factor (REQ-AUTH-07), once enrolment began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpRow>,
    /// The person's full name, as a certificate names its operator and
    /// validator (NIST SP 800-88 App. G asks for names, not logins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
}

/// A user's TOTP second factor. The secret is sealed under a key only the
/// vault passphrase opens, so a copy of the records database signs no one
/// in; recovery codes are kept as keyed MACs, each removed once used.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TotpRow {
    /// The secret (AES-256-GCM envelope, hex), bound to the user's ID.
    pub sealed: String,
    /// Confirmed with a code from the app. Until then the factor signs no
    /// one in and can be replaced by a new enrolment.
    pub confirmed: bool,
    /// When enrolment began (unix ms); when confirmed, `confirmed_ms`.
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_ms: Option<i64>,
    /// The last time step a code was accepted for: that code and every
    /// earlier one are replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    /// MACs (hex) of the recovery codes not yet used.
    #[serde(default)]
    pub recovery: Vec<String>,
}

/// A user's two-factor state, as callers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoFactorState {
    /// No second factor.
    None,
    /// Enrolment begun, not confirmed with a code.
    Pending,
    /// Signs in with a password and a code.
    Enrolled,
}

impl TwoFactorState {
    /// Stable name in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            TwoFactorState::None => "none",
            TwoFactorState::Pending => "pending",
            TwoFactorState::Enrolled => "enrolled",
        }
    }
}

/// Which roles must sign in with a second factor (REQ-AUTH-07).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwoFactorPolicy {
    /// Roles whose users cannot sign in without a second factor.
    pub required: std::collections::BTreeSet<Role>,
}

impl Default for TwoFactorPolicy {
    /// Required for the roles that change who may do what, read revealed
    /// values, or destroy records: admin, officer and contractor.
    fn default() -> Self {
        TwoFactorPolicy {
            required: [Role::Admin, Role::Officer, Role::Contractor].into(),
        }
    }
}

impl TwoFactorPolicy {
    /// No role required (an explicit choice; `doctor` reports it).
    pub fn none() -> Self {
        TwoFactorPolicy {
            required: Default::default(),
        }
    }

    /// Whether users of `role` must sign in with a second factor.
    pub fn requires(&self, role: Role) -> bool {
        self.required.contains(&role)
    }

    /// Parses a comma-separated role list, or `none`.
    pub fn parse(list: &str) -> Result<Self> {
        let list = list.trim();
        if list.eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        let mut required = std::collections::BTreeSet::new();
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let role = Role::parse(r)?;
            if matches!(role, Role::RetentionRunner | Role::AuditExporter) {
                return Err(Error::invalid(
                    "service roles sign in with tokens, not passwords: a second factor cannot be required of them",
                ));
            }
            required.insert(role);
        }
        Ok(TwoFactorPolicy { required })
    }

    /// The role names, in order.
    pub fn roles(&self) -> Vec<&'static str> {
        self.required.iter().map(|r| r.as_str()).collect()
    }
}

/// What callers may see of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// Immutable, never-reused ID.
    pub id: UserId,
    /// Unique login name.
    pub username: Username,
    /// Role.
    pub role: Role,
    /// Active or disabled.
    pub state: UserState,
    /// Granted reveal of sensitive fields (clerks; officers have it by role).
    pub reveal_grant: bool,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last successful login, unix ms.
    pub last_login_ms: Option<i64>,
    /// Locked until (unix ms), if locked now.
    pub locked_until_ms: Option<i64>,
    /// A service account (token only, no password), not a person.
    pub service: bool,
    /// The second factor's state.
    pub two_factor: TwoFactorState,
    /// The person's full name, if set.
    pub full_name: Option<String>,
}

impl UserRow {
    /// A fresh, active account: no logins, no failures, generation 0.
    pub fn new(id: UserId, username: &str, role: &str, password_phc: String, now_ms: i64) -> Self {
        UserRow {
            id: id.to_string(),
            username: username.to_owned(),
            role: role.to_owned(),
            disabled: false,
            reveal: false,
            password_phc,
            created_ms: now_ms,
            last_login_ms: None,
            failures: 0,
            lockouts: 0,
            locked_until_ms: None,
            generation: 0,
            failure_sources: Vec::new(),
            service: false,
            token_issued_to: None,
            totp: None,
            full_name: None,
        }
    }

    /// How a certificate names the user: the full name, else the username.
    pub fn display_name(&self) -> String {
        self.full_name
            .clone()
            .unwrap_or_else(|| self.username.clone())
    }

    /// The user's two-factor state.
    pub fn two_factor(&self) -> TwoFactorState {
        match &self.totp {
            None => TwoFactorState::None,
            Some(t) if t.confirmed => TwoFactorState::Enrolled,
            Some(_) => TwoFactorState::Pending,
        }
    }

    pub fn info(&self, now_ms: i64) -> Result<UserInfo> {
        Ok(UserInfo {
            id: self.id.parse()?,
            username: Username::parse(&self.username)?,
            role: Role::parse(&self.role)?,
            state: if self.disabled {
                UserState::Disabled
            } else {
                UserState::Active
            },
            reveal_grant: self.reveal,
            created_ms: self.created_ms,
            last_login_ms: self.last_login_ms,
            locked_until_ms: self.locked_until_ms.filter(|&t| t > now_ms),
            service: self.service,
            two_factor: self.two_factor(),
            full_name: self.full_name.clone(),
        })
    }
}

/// Longest full name a person may give (as long as a certificate's other
/// party fields may be).
pub const FULL_NAME_MAX_CHARS: usize = 200;

/// Whether `name` (trimmed) may be a person's full name: not empty, at
/// most [`FULL_NAME_MAX_CHARS`], no control or bidirectional characters.
pub fn check_full_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid(
            "the full name is empty (to clear it, give none)",
        ));
    }
    crate::audit::check_text("full name", name.trim(), FULL_NAME_MAX_CHARS)
}

/// Users' password hashing parameters: OWASP minimum (m=19 MiB, t=2, p=1).
fn password_hasher() -> argon2::Argon2<'static> {
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(32)).expect("valid OWASP parameters");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Local additions to the breached-password list ([`crate::breached`]):
/// words anyone would try first against this product and this state.
/// Checked the same way as the list.
const LOCAL_BLOCKLIST: &[&str] = &[
    "pivault",
    "vault",
    "masskey",
    "massachusetts",
    "redsox",
    "patriots",
    "correcthorsebatterystaple",
    "123456789012",
    "qwertyuiopas",
    "1q2w3e4r5t6y",
];

/// Shortest vault passphrase accepted (at init and at a change).
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Shortest user password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Whether a password or passphrase is on the breached-password list:
/// compared after normalisation (surrounding white space trimmed, lower
/// case), and again with trailing digits and punctuation stripped, so
/// `Sunshine2024!` is caught by `sunshine`.
pub fn is_breached(password: &SecretString) -> bool {
    let lower = crate::breached::normalise(password.expose());
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let listed =
        |w: &str| !w.is_empty() && (crate::breached::contains(w) || LOCAL_BLOCKLIST.contains(&w));
    listed(&lower) || listed(stem)
}

/// The checks shared by passwords and the vault passphrase: length,
/// breached list, variety. Errors name the rule, never the value. Both
/// minimums are 12 (the message says so); `min` keeps them apart in code.
fn check_secret_policy(p: &SecretString, min: usize, breached: &'static str) -> Result<()> {
    let s = p.expose();
    let n = s.chars().count();
    if n < min {
        return Err(Error::WeakPassword("must be at least 12 characters"));
    }
    if n > 1024 {
        return Err(Error::WeakPassword("must be at most 1024 characters"));
    }
    if is_breached(p) {
        return Err(Error::WeakPassword(breached));
    }
    if s.chars().collect::<std::collections::HashSet<_>>().len() < 4 {
        return Err(Error::WeakPassword("uses too few distinct characters"));
    }
    Ok(())
}

/// Checks a new password against the policy (REQ-AUTH-02): at least 12
/// characters, at most 1024, not on the breached-password list, not the username.
pub fn check_password_policy(password: &SecretString, username: &Username) -> Result<()> {
    check_secret_policy(
        password,
        MIN_PASSWORD_CHARS,
        "is a common or breached password (it is on the breached-password list)",
    )?;
    if password.expose().to_lowercase().contains(username.as_str()) {
        return Err(Error::WeakPassword("must not contain the username"));
    }
    Ok(())
}

/// Checks a new vault passphrase (init and change): the same rules as a
/// password, with its own messages.
pub fn check_passphrase_policy(passphrase: &SecretString) -> Result<()> {
    check_secret_policy(
        passphrase,
        MIN_PASSPHRASE_CHARS,
        "the vault passphrase is a common or breached password (it is on the breached-password list)",
    )
    .map_err(|e| match e {
        Error::WeakPassword("must be at least 12 characters") => {
            Error::WeakPassword("the vault passphrase must be at least 12 characters")
        }
        Error::WeakPassword("must be at most 1024 characters") => {
            Error::WeakPassword("the vault passphrase must be at most 1024 characters")
        }
        Error::WeakPassword("uses too few distinct characters") => {
            Error::WeakPassword("the vault passphrase uses too few distinct characters")
        }
        other => other,
    })
}

/// A short, stable tag of a login source (channel and address): the key of
/// its throttle row and its entry in an account's `failure_sources`. A hash,
/// so neither holds the address itself.
///
/// Only the part of `Context.source` before its first comma names the
/// source: the server's socket writes `uid=1001(carol),pid=42`, and the
/// process ID is audit detail — were it part of the key, every new process
/// of one OS user would be a fresh source, escaping the throttle and
/// counting as another source toward an account's lock-out.
pub(crate) fn source_tag(channel: &str, source: Option<&str>) -> [u8; 16] {
    let source = source
        .map(|s| s.split(',').next().unwrap_or(s))
        .unwrap_or("local");
    let mut key = channel.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(source.as_bytes());
    crate::crypto::sha256(&key)[..16]
        .try_into()
        .expect("16 bytes")
}

/// Hashes a password to an Argon2id PHC string.
pub(crate) fn hash_password(password: &SecretString) -> Result<String> {
    password_hasher()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| Error::invalid("password hashing failed"))
}

/// Verifies a password against a PHC string in constant time (the crate
/// compares the outputs with `subtle`).
pub(crate) fn verify_password(password: &SecretString, phc: &str) -> bool {
    password_hasher()
        .verify_password(password.expose().as_bytes(), phc)
        .is_ok()
}

/// Next lock duration after `lockouts` previous lock-outs: doubling, bounded.
pub(crate) fn lock_duration(policy: &LockoutPolicy, lockouts: u32) -> i64 {
    let factor = 1i64 << lockouts.min(20);
    policy
        .base_lock_ms
        .saturating_mul(factor)
        .min(policy.max_lock_ms)
}

/// A stored session (server tokens and CLI logins): only the token's hash is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SessionRow {
    pub user: String,
    pub generation: u32,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub last_seen_ms: i64,
    /// A service account's token: no expiry and no idle timeout; it lives
    /// until it is rotated or the account is revoked.
    #[serde(default)]
    pub service: bool,
    /// Signed in with the password only, by a user whose role requires a
    /// second factor they have not enrolled: the session may enrol and do
    /// nothing else.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enrol_only: bool,
}

impl SessionRow {
    /// Whether the token is still within its lifetime (the user's state
    /// and generation are checked apart).
    pub fn alive(&self, now_ms: i64, idle_ms: i64) -> bool {
        self.service || (now_ms < self.expires_ms && now_ms - self.last_seen_ms < idle_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        let u = Username::parse("alice").unwrap();
        for bad in [
            "Password123!",
            "short-pass1",
            "password1234",
            "aaaaaaaaaaaaaaa",
            "alice-is-great-2024",
            "Welcome1!!!!",
        ] {
            assert!(
                check_password_policy(&bad.into(), &u).is_err(),
                "{bad} accepted"
            );
        }
        // Any 11-character password is refused.
        assert!(check_password_policy(&"Xk9#mQ2$vL7".into(), &u).is_err());
        assert!(check_password_policy(&"Xk9#mQ2$vL7p".into(), &u).is_ok());
        // Errors never echo the password.
        let e = check_password_policy(&"Password123!".into(), &u)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("Password123"));
    }

    #[test]
    fn breached_passwords_and_passphrases_are_refused_without_echo() {
        let u = Username::parse("alice").unwrap();
        // On the list: exact, in another case, padded, or with a suffix.
        for bad in [
            "1qaz2wsx3edc",
            "QAZWSXEDCRFV",
            " manchesterunited ",
            "Starwars1234!",
        ] {
            let e = check_password_policy(&bad.into(), &u).unwrap_err();
            assert!(matches!(e, Error::WeakPassword(_)), "{bad}: {e:?}");
            assert!(
                !e.to_string()
                    .to_lowercase()
                    .contains(bad.trim().to_lowercase().as_str())
            );
            let e = check_passphrase_policy(&bad.into()).unwrap_err();
            assert!(e.to_string().contains("vault passphrase"), "{e}");
        }
        assert!(check_passphrase_policy(&"Custodian-Heliotrope-48".into()).is_ok());
        assert!(matches!(
            check_passphrase_policy(&"Short-pass1".into()),
            Err(Error::WeakPassword(
                "the vault passphrase must be at least 12 characters"
            ))
        ));
    }

    #[test]
    fn a_source_gets_free_failures_then_a_doubling_wait_then_forgets() {
        let p = LockoutPolicy::default();
        let mut s = SourceRow::default();
        for t in 0..3 {
            assert_eq!(s.throttled_until(&p, t), None);
            s = s.fail(&p, t);
        }
        // After the third failure (at 2): wait 1 s, then 2 s, 4 s …
        assert_eq!(s.throttled_until(&p, 2), Some(1002));
        assert_eq!(s.throttled_until(&p, 1002), None);
        s = s.fail(&p, 1002);
        assert_eq!(s.throttled_until(&p, 1002), Some(3002));
        for _ in 0..30 {
            s = s.fail(&p, 3002);
        }
        assert_eq!(
            s.throttled_until(&p, 3002),
            Some(3002 + p.source_max_backoff_ms)
        );
        // An hour without a failure: a fresh start.
        assert_eq!(s.throttled_until(&p, 3002 + p.source_forget_ms), None);
        assert_eq!(s.fail(&p, 3002 + p.source_forget_ms).failures, 1);
    }

    #[test]
    fn a_local_peer_is_one_source_whatever_its_process() {
        let a = source_tag("local", Some("uid=1001(carol),pid=42"));
        assert_eq!(a, source_tag("local", Some("uid=1001(carol),pid=43")));
        assert_eq!(a, source_tag("local", Some("uid=1001(carol)")));
        assert_ne!(a, source_tag("local", Some("uid=1002(dave),pid=42")));
        assert_ne!(a, source_tag("http", Some("uid=1001(carol)")));
        assert_ne!(
            source_tag("http", Some("192.0.2.1")),
            source_tag("http", Some("192.0.2.2"))
        );
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password(&"a long enough passphrase".into()).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password(&"a long enough passphrase".into(), &h));
        assert!(!verify_password(&"a long enough passphrasf".into(), &h));
    }

    #[test]
    fn lock_duration_doubles_and_is_bounded() {
        let p = LockoutPolicy::default();
        assert_eq!(lock_duration(&p, 0), 15 * 60 * 1000);
        assert_eq!(lock_duration(&p, 1), 30 * 60 * 1000);
        assert_eq!(lock_duration(&p, 30), p.max_lock_ms);
    }
}
