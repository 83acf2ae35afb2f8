//! The facade: one [`Vault`] type with plain methods, used by every front
//! end. Each method authorises the caller's [`Session`] against the role
//! table, does its work, and writes the audit event before returning; a
//! failed audit write fails the operation (fail closed).

use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::access::{
    self, LockoutPolicy, Permission, Role, SessionRow, UserInfo, UserRow, UserState,
};
use crate::audit::{
    self, AuditEvent, AuditLog, Channel, EventFilter, NewEvent, Outcome, UserActivity, VerifyReport,
};
use crate::clock::{Clock, SystemClock};
use crate::crypto::{self, Aad, KdfParams};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::header::{self, HeaderInfo};
use crate::ids::{CollectionName, RecordId, SubjectId, UserId, Username, VaultId};
use crate::keystore::Keystore;
use crate::schema::{Classification, Schema};
use crate::secret::{SecretKey, SecretString};
#[path = "anchor.rs"]
mod anchor;
#[path = "approvals.rs"]
mod approvals;
#[path = "audit_export.rs"]
mod audit_export;
#[path = "backup.rs"]
mod backup;
#[path = "custodian.rs"]
mod custodian;
#[path = "decommission.rs"]
pub mod decommission;
#[path = "disposal.rs"]
mod disposal;
#[path = "export.rs"]
mod export;
#[path = "housekeeping.rs"]
mod housekeeping;
#[path = "http_audit.rs"]
mod http_audit;
#[path = "incident.rs"]
mod incident;
#[path = "isolation.rs"]
mod isolation;
#[path = "maintenance.rs"]
mod maintenance;
#[path = "records.rs"]
mod records;
#[path = "search.rs"]
mod search;
#[path = "service.rs"]
mod service;
#[path = "two_factor.rs"]
mod two_factor;
#[path = "users.rs"]
mod users;
#[path = "wisp.rs"]
mod wisp;

pub use crate::store::RecordState;
use crate::store::{self, RecordRow, Store};
pub use anchor::{AnchorExport, StoredTimestamp};
pub use approvals::{APPROVAL_TTL_MS, PendingRequest, RequestKind};
pub use audit_export::ExportStart;
pub use backup::{BackupInfo, DEFAULT_BACKUP_DAYS, RestoreReport};
pub use custodian::{PassphraseChange, custodian_context};
pub use decommission::{DeletionParties, DeletionPlan, VaultDeleted};
pub use disposal::{
    CertificateSummary, ContractorInfo, ContractorScope, DisposalOutcome, DisposalParties,
    DisposalRequest, DisposalScope, DisposalSummary, Hold, IN_UNFINISHED_BATCH,
    PREVIEW_RESIDENCE_MAX, ROW_SUBJECT_CHANGED, RetentionPolicy, STEPS as DISPOSAL_STEPS,
    UNREAD_OUTSIDE_NAMED_SCOPE, plan_fingerprint,
};
pub use export::{EXPORT_FORMAT, ExportOutcome, ExportRecipient, ExportRequest, ExportScope};
pub use housekeeping::{MAX_SCHEDULE_HOURS, RetentionSchedule};
pub use http_audit::RefusedRequests;
pub use incident::{
    FTC_NOTICE_THRESHOLD, INCIDENT_TEXT_MAX, Incident, IncidentAction, IncidentReview,
    IncidentScope, REVIEW_DUE_MS, ScopeSummary, Selector, SelectorInput, TouchedRecord,
    check_incident_text,
};
pub use maintenance::{JournalReport, MaintenanceReport, MaintenanceStatus};
pub use records::{ImportColumns, RecordVersion};
pub use search::{FindQuery, FindResult, FindTarget};
pub use service::ServiceAccount;
pub use two_factor::{ENROL_ONLY_TTL_MS, TotpConfirmed, TotpEnrolment};
pub use wisp::{SecurityChecks, WispLine, WispPack, WispStatus};

/// A test hook called with each disposal step name.
pub type CrashHook = Box<dyn Fn(&str) + Send + Sync>;

/// Default number of key buckets (DESIGN §4.1).
pub const DEFAULT_BUCKETS: u32 = 1024;
/// Default lifetime of a session token.
pub const DEFAULT_SESSION_TTL_MS: i64 = 8 * 60 * 60 * 1000;
/// Idle timeout of a session token.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// A session's last-seen time is rewritten at most this often.
const SESSION_TOUCH_MS: i64 = 60 * 1000;

/// Settings for creating a vault.
#[derive(Debug)]
pub struct InitOptions {
    /// Argon2id parameters for the vault passphrase.
    pub kdf: KdfParams,
    /// Number of key buckets, fixed for the vault's life.
    pub buckets: u32,
    /// Username of the first admin.
    pub admin: Username,
    /// The first admin's password, chosen by the operator (no default exists).
    pub admin_password: SecretString,
    /// Roles that must sign in with a second factor; the default requires
    /// it of admin, officer and contractor (REQ-AUTH-07).
    pub two_factor: access::TwoFactorPolicy,
}

/// Settings for opening a vault.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// fsync every write (survives power loss); otherwise writes survive a process kill.
    pub sync: bool,
    /// Source of time.
    pub clock: Arc<dyn Clock>,
    /// Lock-out policy.
    pub lockout: LockoutPolicy,
    /// Calls a service account's token may make per minute (a token
    /// bucket of this size, refilled at this rate), so a runaway script
    /// cannot crowd out the staff.
    pub service_calls_per_minute: u32,
}

/// The default of [`OpenOptions::service_calls_per_minute`]: ample for a
/// nightly retention run, a few calls, and its certificates.
pub const DEFAULT_SERVICE_CALLS_PER_MINUTE: u32 = 120;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            sync: false,
            clock: Arc::new(SystemClock),
            lockout: LockoutPolicy::default(),
            service_calls_per_minute: DEFAULT_SERVICE_CALLS_PER_MINUTE,
        }
    }
}

/// Where a request came from, for the audit trail.
#[derive(Clone, Debug)]
pub struct Context {
    /// Front end.
    pub channel: Channel,
    /// Client address (HTTP) or `None`.
    pub source: Option<String>,
    /// Request ID (HTTP) or `None`.
    pub request_id: Option<String>,
}

impl Context {
    /// A command-line invocation.
    pub fn cli() -> Self {
        Context {
            channel: Channel::Cli,
            source: None,
            request_id: None,
        }
    }
}

/// An authenticated user acting on the vault. Every operation re-checks
/// that the user is still active, so disabling a user stops them at once.
#[derive(Clone, Debug)]
pub struct Session {
    user: UserId,
    generation: u32,
    ctx: Context,
    /// Password only, and the role requires a second factor not yet
    /// enrolled: enrolment is the one thing the session may do.
    enrol_only: bool,
}

impl Session {
    /// The acting user.
    pub fn user(&self) -> UserId {
        self.user
    }
    /// Whether the session may only enrol a second factor (the user's role
    /// requires one and they signed in with the password alone).
    pub fn enrol_only(&self) -> bool {
        self.enrol_only
    }
    /// The request context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

/// Record metadata: IDs and times, never contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// Record ID.
    pub id: RecordId,
    /// Collection.
    pub collection: CollectionName,
    /// Data subject.
    pub subject: SubjectId,
    /// Current version (1 on creation).
    pub version: u32,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last update, unix ms.
    pub updated_ms: i64,
    /// Live or disposed.
    pub state: RecordState,
}

/// A record as shown to a user: masked except for revealed fields.
#[derive(Clone, Debug)]
pub struct RecordView {
    /// Metadata.
    pub meta: RecordMeta,
    /// Field values, masked per the schema.
    pub fields: Map<String, Value>,
    /// Fields shown unmasked in this view.
    pub revealed: Vec<String>,
    /// REQ-DEF-03 classification.
    pub classification: Classification,
}

/// Filter for listing records.
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    /// Only this collection.
    pub collection: Option<CollectionName>,
    /// Only this subject.
    pub subject: Option<SubjectId>,
}

/// Format of an import file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON object a line.
    JsonLines,
    /// CSV with a header row.
    Csv,
}

/// One rejected row of an import: its line number and why (never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportRejection {
    /// 1-based line (JSON Lines) or data-row number plus one for the header (CSV).
    pub line: u64,
    /// The declared field (or the subject column) the error is about, when
    /// it is about one: what a form shows beside the message.
    pub field: Option<String>,
    /// The error.
    pub error: String,
}

/// Outcome of an import (or of its check pass).
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Rows stored (0 on a check pass).
    pub imported: u64,
    /// Rows that passed validation.
    pub valid: u64,
    /// Rows that failed, in order (at most 1,000 kept).
    pub rejected: Vec<ImportRejection>,
    /// Total rejected rows.
    pub rejected_count: u64,
    /// IDs of the stored records, in file order.
    pub records: Vec<RecordId>,
}

/// Security configuration, for `doctor` (REQ-WISP-01).
#[derive(Clone, Debug)]
pub struct SecurityStatus {
    /// Vault ID.
    pub vault_id: VaultId,
    /// Current key epoch.
    pub epoch: u64,
    /// Unlock KDF parameters.
    pub kdf: KdfParams,
    /// Number of key buckets.
    pub buckets: u32,
    /// Lock-out policy in force.
    pub lockout: LockoutPolicy,
    /// Users per role (active only).
    pub active_by_role: Vec<(Role, usize)>,
    /// Last recorded security review, unix ms.
    pub last_review_ms: Option<i64>,
    /// Whether every write is fsynced.
    pub sync: bool,
}

const META_LAST_REVIEW: &[u8] = b"last_review_ms";
/// Set once the user and session rows carry MACs (`seal_rows_once`).
const META_ROWS_SEALED: &[u8] = b"rows_sealed_v1";
/// Set once the configuration rows carry MACs and the state digest began.
const META_ROWS_SEALED_V2: &[u8] = b"rows_sealed_v2";
/// The `vault.rows_sealed` event's target naming the second sealing.
const SEAL_V2_TARGET: &str = "seal:v2";
/// The `vault.rows_sealed` event's target naming the third sealing.
const SEAL_V3_TARGET: &str = "seal:v3";
/// Plaintext of the `signing` file: audit key | certificate key | subject-reference key.
const SIGNING_LEN: usize = 96;

/// Long-lived secrets other than the key hierarchy, wrapped by the unlock key
/// in `<vault>/signing`.
struct Signing {
    audit: ed25519_dalek::SigningKey,
    certificate: ed25519_dalek::SigningKey,
    subject: SecretKey,
}

impl Signing {
    fn generate() -> Signing {
        Signing {
            audit: ed25519_dalek::SigningKey::from_bytes(SecretKey::generate().expose()),
            certificate: ed25519_dalek::SigningKey::from_bytes(SecretKey::generate().expose()),
            subject: SecretKey::generate(),
        }
    }

    fn aad(vault: VaultId) -> Aad {
        Aad::new("signing").part(vault.as_bytes())
    }

    fn seal(&self, unlock: &SecretKey, vault: VaultId) -> Vec<u8> {
        let mut plain = Zeroizing::new([0u8; SIGNING_LEN]);
        plain[..32].copy_from_slice(self.audit.as_bytes());
        plain[32..64].copy_from_slice(self.certificate.as_bytes());
        plain[64..].copy_from_slice(self.subject.expose());
        crypto::seal(unlock, &Self::aad(vault), plain.as_ref())
    }

    fn open(unlock: &SecretKey, vault: VaultId, env: &[u8]) -> Result<Signing> {
        let plain = crypto::open(unlock, &Self::aad(vault), env, "signing keys")?;
        if plain.len() != SIGNING_LEN {
            return Err(Error::Integrity("signing keys"));
        }
        let part =
            |r: std::ops::Range<usize>| -> [u8; 32] { plain[r].try_into().expect("32 bytes") };
        Ok(Signing {
            audit: ed25519_dalek::SigningKey::from_bytes(&part(0..32)),
            certificate: ed25519_dalek::SigningKey::from_bytes(&part(32..64)),
            subject: SecretKey::from_bytes(part(64..96)),
        })
    }
}

/// Parsed rows (user rows, schemas) kept in RAM, valid for one generation
/// of their column family ([`Store::users_generation`],
/// [`Store::collections_generation`]): any write there makes the whole cache
/// stale, so a change (a user disabled, say) is seen by the very next call.
/// Holds no key material and no personal information.
struct GenCache<K, V> {
    generation: u64,
    map: HashMap<K, Arc<V>>,
}

impl<K: Hash + Eq, V> GenCache<K, V> {
    fn new() -> RwLock<Self> {
        RwLock::new(GenCache {
            generation: 0,
            map: HashMap::new(),
        })
    }

    fn get(lock: &RwLock<Self>, generation: u64, k: &K) -> Option<Arc<V>> {
        let c = lock.read().ok()?;
        if c.generation != generation {
            return None;
        }
        c.map.get(k).cloned()
    }

    /// Stores a value read from the store at `generation` (read before the
    /// row itself), unless a newer generation is cached already.
    fn insert(lock: &RwLock<Self>, generation: u64, k: K, v: Arc<V>) {
        let Ok(mut c) = lock.write() else { return };
        if c.generation < generation {
            c.map.clear();
            c.generation = generation;
        }
        if c.generation == generation {
            c.map.insert(k, v);
        }
    }
}

/// The current epoch and its root key.
struct Epoch {
    number: u64,
    root: SecretKey,
}

/// An open, unlocked vault.
pub struct Vault {
    dir: PathBuf,
    info: HeaderInfo,
    /// The unlock key (RAM only); replaced by a passphrase change.
    unlock: RwLock<SecretKey>,
    epoch: RwLock<Epoch>,
    store: Store,
    keystore: Keystore,
    audit: Mutex<AuditLog>,
    /// The events waiting for the trail, written a group at a time.
    audit_group: audit::group::GroupCommit,
    /// The highest state-digest generation an event in the trail names
    /// (`check_sealed_state`): the next event names a later one.
    state_noted: AtomicU64,
    /// The copy of the latest checkpoint in the records database (`anchor.rs`).
    anchor: Mutex<anchor::AnchorState>,
    signing: Signing,
    opts: OpenOptions,
    /// Serialises login bookkeeping (failure counters) and user changes.
    users_lock: Mutex<()>,
    /// Active officers, kept current by user changes (one process owns the vault).
    active_officers: AtomicUsize,
    /// A real Argon2id hash verified for unknown usernames, so that their cost equals a wrong password's.
    dummy_phc: String,
    /// One disposal batch (or restore, backup, maintenance ratchet) at a time.
    disposal_lock: Mutex<()>,
    /// One change of a stored certificate at a time (a validation, a
    /// co-signature): each reads, signs and writes the whole file.
    certificate_lock: Mutex<()>,
    /// The byte scan's needles of each batch whose keys a run in this
    /// process deleted and that is not yet verified, so that its retry here
    /// scans again (`disposal.rs`).
    kept_needles: Mutex<std::collections::HashMap<String, disposal::Needles>>,
    /// The wrapped bytes of each backup key this process deleted and whose
    /// erasure is not yet verified, by backup: a retry here scans for them
    /// again (in memory only, as the disposals' needles).
    kept_backup_keys: Mutex<std::collections::HashMap<[u8; 16], zeroize::Zeroizing<Vec<u8>>>>,
    /// Bucket locks, the pending set and the write fence (`isolation.rs`).
    isolation: isolation::Isolation,
    /// Buckets holding residue of updated records' old keys, with the time
    /// each was first marked; rotated by the next maintenance ratchet.
    dirty: Mutex<std::collections::BTreeMap<u32, i64>>,
    /// Test hook called at each disposal step (crash tests).
    crash_hook: Mutex<Option<CrashHook>>,
    /// Negative control for forensic tests: skip the keystore flush in the purge.
    purge_skip_flush: AtomicBool,
    /// Negative control for backup tests: restore without replaying the ledger.
    restore_skip_ledger: AtomicBool,
    /// Negative control for forensic tests: hold a keystore snapshot through a batch.
    purge_hold_snapshot: AtomicBool,
    /// Parsed user rows (password hash removed), for `authorize`.
    user_cache: RwLock<GenCache<UserId, UserRow>>,
    /// Parsed collection schemas.
    schema_cache: RwLock<GenCache<CollectionName, Schema>>,
    /// Test hook: every audit append fails (fail-closed tests).
    audit_fail: AtomicBool,
    /// Test hook: every undo after a failed audit append fails too.
    undo_fail: AtomicBool,
    /// Negative control for WISP tests: `user disable` leaves the user's
    /// generation as it was (their sessions are refused by the flag alone).
    disable_keeps_generation: AtomicBool,
    /// Serialises changes to the incident register (append-only rows).
    incident_lock: Mutex<()>,
    /// The rate limit of each service token in use (`service.rs`).
    service_calls: Mutex<std::collections::HashMap<[u8; 32], service::CallBucket>>,
    /// The beacon secret of the blind indexes (`beacon.rs`, `search.rs`).
    beacons: crate::beacon::BeaconSecret,
    /// Closed, or given up as a killed process would leave it: a drop signs
    /// nothing more.
    ended: AtomicBool,
}

/// A vault dropped without [`Vault::close`] (a command that failed, a
/// caller's early return) ends as cleanly as it can: the events it wrote
/// are its own, so it signs a checkpoint over them, as close does, and the
/// next open has nothing to disown. Not while panicking (a second panic in
/// the drop would abort the process), not once its writes are fenced (an
/// unaudited change may stand) or another process took it over, and not
/// with its records on a cluster: a cluster that is down would hold the
/// drop for up to a minute (a lease renewed, a primary waited for); the
/// server closes such vaults, and a command that fails there leaves its
/// events to the next open's disowning.
impl Drop for Vault {
    fn drop(&mut self) {
        if std::thread::panicking()
            || self.store.on_a_cluster()
            || self.lease_lost()
            || self.isolation.is_fenced()
        {
            return;
        }
        let _ = self.end_cleanly();
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("vault_id", &self.info.vault_id)
            .finish_non_exhaustive()
    }
}

/// Paths inside a vault directory (DESIGN §3).
struct Layout {
    header: PathBuf,
    records: PathBuf,
    keystore: PathBuf,
    audit: PathBuf,
    signing: PathBuf,
}

impl Layout {
    fn of(dir: &Path) -> Layout {
        Layout {
            header: dir.join("header"),
            records: dir.join("records"),
            keystore: dir.join("keystore"),
            audit: dir.join("audit"),
            signing: dir.join("signing"),
        }
    }
}

/// Opens the signing keys with `unlock`: the current ones, or, when a
/// passphrase change committed but had not yet replaced them, the pending
/// ones (which then replace them). Pending keys that the current key does
/// not need are a change that never committed: removed.
fn load_signing(place: &header::Place<'_>, unlock: &SecretKey, vault: VaultId) -> Result<Signing> {
    let current = header::read_signing(place, false)?
        .ok_or_else(|| Error::NotAVault("the vault's signing keys are missing".into()))?;
    match Signing::open(unlock, vault, &current) {
        Ok(s) => {
            if header::read_signing(place, true)?.is_some() {
                header::discard_pending_signing(place)?;
            }
            Ok(s)
        }
        Err(e) => {
            let Some(env) = header::read_signing(place, true)? else {
                return Err(e);
            };
            let s = Signing::open(unlock, vault, &env)?;
            header::commit_signing(place)?;
            Ok(s)
        }
    }
}

/// The associated data of a record body's envelope. Row format v2 binds,
/// besides the record's identity, every piece of row metadata that is fixed
/// for a version (creation and update times, creator), so an edit of those
/// bytes in the records database makes the read fail; v1 rows (written
/// before) bind only the identity. The label differs, so a v2 row relabelled
/// v1 fails too. The live/disposed state is not bound: it changes at disposal,
/// when the key is gone and nothing can be re-sealed.
fn record_aad(vault: VaultId, id: RecordId, row: &RecordRow) -> Aad {
    let label = if row.format == store::ROW_V1 {
        "record"
    } else {
        "record-v2"
    };
    let aad = Aad::new(label)
        .part(vault.as_bytes())
        .part(row.collection.as_str().as_bytes())
        .part(id.as_bytes())
        .part(&row.version.to_be_bytes())
        .part(row.subject.as_bytes());
    if row.format == store::ROW_V1 {
        return aad;
    }
    aad.part(&row.created_ms.to_be_bytes())
        .part(&row.updated_ms.to_be_bytes())
        .part(row.created_by.as_bytes())
}

/// Meta key of a login source's throttle row (the source only as a hash).
fn source_key(tag: &[u8; 16]) -> Vec<u8> {
    let mut k = b"login-source:".to_vec();
    k.extend_from_slice(tag);
    k
}

fn token_hash(token: &str) -> [u8; 32] {
    crypto::sha256(token.as_bytes())
}

/// Opens the vault's keystore: on the cluster its `keystore.json` names,
/// or the embedded one in `keystore/`.
/// `create`: the vault is being made now, its tables with it; otherwise a
/// keystore missing from its cluster is a deleted vault's, never made again.
fn open_keystore(
    dir: &Path,
    l: &Layout,
    info: &HeaderInfo,
    sync: bool,
    create: bool,
) -> Result<Keystore> {
    let cfg = crate::keystore::postgres::PgConfig::read(dir)?;
    check_placement(
        cfg.is_some(),
        info.placement.keystore_on_cluster,
        "the vault directory (keystore.json is missing where the header places the keystore on a cluster)",
        "the vault directory (keystore.json is there where the header keeps the keystore embedded)",
    )?;
    match cfg {
        Some(cfg) => Keystore::on_cluster(cfg, info.vault_id, info.buckets, sync, create),
        None => Keystore::open(&l.keystore, info.vault_id, info.buckets, sync),
    }
}

/// Refuses a vault directory whose cluster file (`keystore.json`,
/// `records.json`) is there or not against what the header, bound into its
/// slots' AAD, says: a deleted file would otherwise open an empty embedded
/// store in the cluster's place (no users, no anchor of the audit trail,
/// no certificates), and an added one would point the vault elsewhere.
fn check_placement(
    found: bool,
    placed: bool,
    missing: &'static str,
    added: &'static str,
) -> Result<()> {
    match (placed, found) {
        (true, false) => Err(Error::Integrity(missing)),
        (false, true) => Err(Error::Integrity(added)),
        _ => Ok(()),
    }
}

impl Vault {
    /// Creates a new vault in `dir` (absent or empty) with its first admin.
    pub fn create(
        dir: &Path,
        passphrase: &SecretString,
        init: InitOptions,
        opts: OpenOptions,
    ) -> Result<Vault> {
        Vault::create_with_keystore(dir, passphrase, init, opts, None)
    }

    /// Creates a new vault whose keystore is on a PostgreSQL cluster
    /// (`keystore`), or embedded (`None`). The cluster's location is kept
    /// in `keystore.json` beside the header; it holds no secret.
    pub fn create_with_keystore(
        dir: &Path,
        passphrase: &SecretString,
        init: InitOptions,
        opts: OpenOptions,
        keystore: Option<crate::keystore::postgres::PgConfig>,
    ) -> Result<Vault> {
        Self::create_in(dir, passphrase, init, opts, keystore, None, &[])
    }

    /// Creates a new vault whose keystore (`keystore`) and records store
    /// (`records`: records, users, sessions, disposals, certificates, the
    /// blind indexes) are each on a PostgreSQL cluster, or embedded
    /// (`None`). The records cluster's location is kept in `records.json`
    /// beside the header; it holds no secret.
    pub fn create_on_clusters(
        dir: &Path,
        passphrase: &SecretString,
        init: InitOptions,
        opts: OpenOptions,
        keystore: Option<crate::keystore::postgres::PgConfig>,
        records: Option<crate::keystore::postgres::PgConfig>,
    ) -> Result<Vault> {
        Self::create_in(dir, passphrase, init, opts, keystore, records, &[])
    }

    /// Creates a vault on a service provider's keystore cluster with a
    /// database role of its own (`pivault vault create`): `provider` is the
    /// provider's `keystore.json`, whose role may only have the cluster make
    /// a vault's role (`pivault_provision.create_vault_role`) and reaches no
    /// vault's keys. The new role's password is written beside the
    /// vault (`keystore.password`, mode 0600); a creation that fails takes
    /// its role off the cluster again. With `records` (a file of the
    /// `records.json` shape naming the records database of the same
    /// cluster), the vault's records go there too, in a schema its own role
    /// makes and owns.
    pub fn create_hosted(
        dir: &Path,
        passphrase: &SecretString,
        init: InitOptions,
        opts: OpenOptions,
        provider: &crate::keystore::postgres::PgConfig,
        records: Option<&crate::keystore::postgres::PgConfig>,
    ) -> Result<Vault> {
        use crate::keystore::provider;
        // The passphrase, the password and the provider file are refused
        // before the cluster is touched (the rest by `create_in`, after
        // which `withdraw` takes the role off again).
        access::check_passphrase_policy(passphrase)?;
        access::check_password_policy(&init.admin_password, &init.admin)?;
        provider.validate()?;
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(Error::NotAVault(format!(
                "{} exists and is not empty; choose a new directory",
                dir.display()
            )));
        }
        if let Some(r) = records {
            r.validate()?;
            // The vault's role is made on the provider's cluster: its
            // records database must be there too.
            if r.members != provider.members {
                return Err(Error::invalid(
                    "a hosted vault's records database must be on its keystore's cluster (the same members): its role is made there",
                ));
            }
        }
        fsutil::create_private_dir(dir)?;
        let role = provider::provision(provider, dir)?;
        let records = records.map(|r| crate::keystore::postgres::PgConfig {
            user: role.cfg.user.clone(),
            password_file: role.cfg.password_file.clone(),
            ..r.clone()
        });
        match Self::create_in(
            dir,
            passphrase,
            init,
            opts,
            Some(role.cfg.clone()),
            records.clone(),
            &[provider::PASSWORD_FILE],
        ) {
            Ok(v) => Ok(v),
            Err(e) => {
                provider::withdraw(provider, &role, records.as_ref());
                Err(e)
            }
        }
    }

    /// Creation proper; `present` names the files a caller put in `dir` first.
    fn create_in(
        dir: &Path,
        passphrase: &SecretString,
        init: InitOptions,
        opts: OpenOptions,
        keystore: Option<crate::keystore::postgres::PgConfig>,
        records: Option<crate::keystore::postgres::PgConfig>,
        present: &[&str],
    ) -> Result<Vault> {
        access::check_passphrase_policy(passphrase)?;
        for c in keystore.iter().chain(&records) {
            c.validate()?;
        }
        if !(1..=1 << 20).contains(&init.buckets) {
            return Err(Error::invalid("bucket count must be between 1 and 1048576"));
        }
        access::check_password_policy(&init.admin_password, &init.admin)?;
        if dir.exists()
            && std::fs::read_dir(dir)?
                .any(|e| e.map_or(true, |e| !present.iter().any(|p| e.file_name() == *p)))
        {
            return Err(Error::NotAVault(format!(
                "{} exists and is not empty; choose a new directory",
                dir.display()
            )));
        }
        fsutil::create_private_dir(dir)?;
        let l = Layout::of(dir);
        for d in [&l.records, &l.keystore] {
            fsutil::create_private_dir(d)?;
        }
        if records.is_none() {
            // With the records on a cluster, the trail is there too.
            fsutil::create_private_dir(&l.audit)?;
        }
        let mut salt = [0u8; 16];
        crypto::fill_random(&mut salt);
        let info = HeaderInfo {
            vault_id: VaultId::new(),
            kdf: init.kdf,
            salt,
            buckets: init.buckets,
            created_ms: opts.clock.now_ms(),
            placement: header::Placement {
                keystore_on_cluster: keystore.is_some(),
                records_on_cluster: records.is_some(),
            },
        };
        let unlock = crypto::derive_unlock_key(passphrase, &salt, init.kdf)?;
        let root = SecretKey::generate();
        for (cfg, file) in [
            (&keystore, crate::keystore::postgres::PgConfig::FILE),
            (&records, crate::store::postgres::RECORDS_FILE),
        ] {
            if let Some(k) = cfg {
                let mut f = fsutil::create_private_file(&dir.join(file))?;
                let json = serde_json::to_vec_pretty(k).map_err(|e| Error::Io(e.to_string()))?;
                std::io::Write::write_all(&mut f, &json)?;
                f.sync_all()?;
            }
        }
        // Keystore first: a header only ever points at a complete keystore.
        let keys = open_keystore(dir, &l, &info, true, true)?;
        keys.init_buckets(&root, 0)?;
        let signing = Signing::generate();
        let place = header::Place::of(&l.header, &l.signing, &info, &keys);
        header::write_signing(&place, false, &signing.seal(&unlock, info.vault_id))?;
        header::create(&place, &info, &unlock, &root)?;
        drop(place);
        drop((root, signing, keys));

        let vault = Vault::open_as(dir, passphrase, opts, true)?;
        let id = vault.insert_user(&init.admin, &init.admin_password, Role::Admin, false, None)?;
        vault.store_two_factor_policy(&init.two_factor)?;
        vault.audit(
            None,
            &Context::cli(),
            "vault.init",
            vec![vault.info.vault_id.to_string()],
            Ok(()),
            None,
        )?;
        vault.audit(
            Some(id),
            &Context::cli(),
            "user.create",
            vec![id.to_string(), "role:admin".into()],
            Ok(()),
            None,
        )?;
        Ok(vault)
    }

    /// Opens and unlocks an existing vault.
    pub fn open(dir: &Path, passphrase: &SecretString, opts: OpenOptions) -> Result<Vault> {
        Vault::open_as(dir, passphrase, opts, false)
    }

    /// [`Vault::open`]; `creating`: the first open, by [`Vault::create`],
    /// which makes the records' tables on a cluster.
    fn open_as(
        dir: &Path,
        passphrase: &SecretString,
        opts: OpenOptions,
        creating: bool,
    ) -> Result<Vault> {
        let l = Layout::of(dir);
        decommission::refuse_if_deleted(dir)?;
        let info = header::read_info(&l.header)?;
        fsutil::check_private(dir)?;
        // Take the store's lock (RocksDB's, or the records cluster's
        // holder lock) before the (slow) key derivation, so a vault held
        // by a server is reported at once.
        let records = crate::store::postgres::read_config(dir)?;
        check_placement(
            records.is_some(),
            info.placement.records_on_cluster,
            "the vault directory (records.json is missing where the header places the records on a cluster)",
            "the vault directory (records.json is there where the header keeps the records embedded)",
        )?;
        let store = match &records {
            Some(cfg) => Store::on_cluster(
                cfg.clone(),
                info.vault_id,
                opts.sync,
                &|| decommission::refuse_if_deleted(dir),
                creating,
            )?,
            None => Store::open(&l.records, opts.sync)?,
        };
        // Again under the lock: a deletion that held it meanwhile is over.
        decommission::refuse_if_deleted(dir)?;
        let keystore = open_keystore(dir, &l, &info, opts.sync, false)?;
        if info.placement.keystore_on_cluster {
            // The slots and signing keys of an earlier build's vault move
            // onto the keystore cluster (once), and the directory keeps none.
            header::move_to_keystore(&l.header, &l.signing, &keystore)?;
        }
        let place = header::Place::of(&l.header, &l.signing, &info, &keystore);
        let unlock = crypto::derive_unlock_key(passphrase, &info.salt, info.kdf)?;
        let opened = header::open(&place, &unlock)?;
        // Import spools a killed process left (ciphertext whose key died
        // with it): this process holds the lock, so none is in use.
        crate::spool::remove_leftovers(dir)?;
        if let Some((old_epoch, old_root)) = &opened.unfinished_from {
            // A ratchet was interrupted after the new slot was written: finish it.
            keystore.rewrap_buckets((*old_epoch, old_root), (opened.epoch, &opened.root))?;
            header::erase_other_slots(&place, opened.epoch)?;
        }
        if let Some(old_epoch) = opened.rekey_from {
            // A passphrase change committed (its slot holds the same root
            // under the new key) and was interrupted: finish its re-wrap.
            keystore.rewrap_buckets((old_epoch, &opened.root), (opened.epoch, &opened.root))?;
            header::erase_other_slots(&place, opened.epoch)?;
        }
        let beacons =
            crate::beacon::BeaconSecret::new(keystore.beacon_secret(&opened.root, opened.epoch)?);
        let signing = load_signing(&place, &unlock, info.vault_id)?;
        drop(place);
        store.set_row_key(SecretKey::from_bytes(crypto::mac(
            &signing.subject,
            "pivault-row-key-v1",
            info.vault_id.as_bytes(),
        )));
        let mut audit = match records {
            Some(cfg) => AuditLog::open_on_cluster(
                cfg,
                info.vault_id,
                &l.audit,
                signing.audit.clone(),
                opts.sync,
            )?,
            None => AuditLog::open(&l.audit, signing.audit.clone(), opts.sync)?,
        };
        audit.fence_with(store.fence());
        let anchor_state = anchor::AnchorState::load(&store, &audit)?;
        if audit.undisowned().is_some() {
            // Events after the last checkpoint: the process ended without a
            // clean close, or someone holding the files or the database role
            // appended well-formed lines. This process cannot tell which, so
            // it disowns them before it signs over them (the log refuses to
            // sign until then); a failed disowning fails the open. Then
            // cover them now, so that crash after crash never leaves more
            // than MAX_UNCHECKPOINTED events without one; a failed
            // checkpoint is retried by the next append, which fails closed.
            let now = opts.clock.now_ms();
            audit.disown_tail(now)?;
            let _ = audit.checkpoint(now);
        }
        let dummy_phc =
            access::hash_password(&SecretString::from("pivault-dummy-password-for-timing"))?;
        let vault = Vault {
            dir: dir.to_path_buf(),
            info: info.clone(),
            unlock: RwLock::new(unlock),
            epoch: RwLock::new(Epoch {
                number: opened.epoch,
                root: opened.root,
            }),
            store,
            keystore,
            audit: Mutex::new(audit),
            anchor: Mutex::new(anchor_state),
            signing,
            opts,
            users_lock: Mutex::new(()),
            active_officers: AtomicUsize::new(0),
            dummy_phc,
            disposal_lock: Mutex::new(()),
            certificate_lock: Mutex::new(()),
            kept_needles: Mutex::new(std::collections::HashMap::new()),
            kept_backup_keys: Mutex::new(std::collections::HashMap::new()),
            isolation: isolation::Isolation::new(info.buckets),
            dirty: Mutex::new(std::collections::BTreeMap::new()),
            crash_hook: Mutex::new(None),
            purge_skip_flush: AtomicBool::new(false),
            restore_skip_ledger: AtomicBool::new(false),
            purge_hold_snapshot: AtomicBool::new(false),
            user_cache: GenCache::new(),
            schema_cache: GenCache::new(),
            audit_fail: AtomicBool::new(false),
            audit_group: Default::default(),
            state_noted: AtomicU64::new(0),
            undo_fail: AtomicBool::new(false),
            disable_keeps_generation: AtomicBool::new(false),
            incident_lock: Mutex::new(()),
            service_calls: Mutex::new(std::collections::HashMap::new()),
            beacons,
            // Until the open completes: a refused open (a row put back, a
            // trail that does not add up) signs nothing on its way out.
            ended: AtomicBool::new(true),
        };
        // Before anything writes a sealed row or moves the digest's trail
        // position: the digest is checked against the rows and the trail.
        vault.seal_rows_once()?;
        if opened.legacy_slot {
            // A slot of an older build binds only the vault ID: replace it
            // with one that binds the whole static part of the header.
            vault.ratchet()?;
        }
        if let Ok(log) = vault.audit.lock() {
            vault.sync_anchor(&log);
        }
        {
            let epoch = vault.epoch.read().expect("epoch lock");
            vault.keystore.warm_bucket_keys(&epoch.root, epoch.number)?;
        }
        vault.recount_officers()?;
        vault.load_dirty()?;
        // Rows written without their audit event (a crash between the two)
        // are rolled back; audited ones keep their change.
        vault.reconcile_journal()?;
        // A disposal interrupted by a crash finishes before the vault serves.
        vault.resume_disposals()?;
        // Keys no row needs (an interrupted update, a failed undo) are
        // destroyed through the same rotation, ratchet and purge as a disposal.
        vault.destroy_orphans_on_open()?;
        // Backups past their expiry lose their key before the vault serves.
        vault.expire_due_backups(&backup::system_context())?;
        // Exports cut short by their process's end say so on certificates.
        vault.mark_interrupted_exports(&backup::system_context())?;
        // A passphrase change interrupted after its mark: fresh bucket keys,
        // a new root and a purge before the vault serves.
        vault.resume_rekey()?;
        vault.ended.store(false, Ordering::SeqCst);
        Ok(vault)
    }

    /// Row MACs start once per vault: the first open by a build with them
    /// seals the rows already there (none in a new vault), marks the
    /// records database and audits `vault.rows_sealed`. A later open that
    /// finds the mark gone refuses: sealing again would bless whatever
    /// someone with the files planted meanwhile, and the audit event
    /// (hash-chained, anchored) cannot be removed unseen. The second
    /// mark (`rows_sealed_v2`, its event naming `seal:v2`) sealed the
    /// configuration rows beyond users and sessions and began the state
    /// digest (`store/state.rs`), which every open then checks. The third
    /// (`rows_sealed_v3`, `seal:v3`) sealed the disposal batch rows and
    /// folded them into the digest, checked without them first.
    fn seal_rows_once(&self) -> Result<()> {
        let mark = |m: &[u8]| -> Result<bool> { Ok(self.store.get(store::CF_META, m)?.is_some()) };
        let (v1, v2, v3) = (
            mark(META_ROWS_SEALED)?,
            mark(META_ROWS_SEALED_V2)?,
            mark(store::META_ROWS_SEALED_V3)?,
        );
        let lost = || {
            Error::Integrity(
                "the records database lost a row-seal mark: the rows it sealed may have been changed by someone without the vault's key",
            )
        };
        // The sealings the trail records: whether any, and the targets.
        let sealed_before = || -> Result<(bool, Vec<String>)> {
            let events = self
                .audit
                .lock()
                .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?
                .events(&EventFilter {
                    action_prefix: Some("vault.rows_sealed".into()),
                    ..EventFilter::default()
                })?;
            Ok((
                !events.is_empty(),
                events.into_iter().flat_map(|e| e.targets).collect(),
            ))
        };
        if v1 && v2 && !v3 {
            // A vault sealed before its disposal batches were: the digest
            // is checked without them, then they are sealed and folded in.
            if sealed_before()?.1.iter().any(|t| t == SEAL_V3_TARGET) {
                return Err(lost());
            }
            self.store.disposals_unsealed_until_sealed();
            if let (_, Some(why)) = self.check_sealed_state()? {
                // Sealing blesses the rows as they are: not over a trail
                // that no longer shows what happened since the digest's
                // last checkpoint (the sealing's own event may be in it).
                return Err(Error::Integrity(why));
            }
            let n = self.store.seal_disposals(store::META_ROWS_SEALED_V3)?;
            self.audit(
                None,
                &Context::cli(),
                "vault.rows_sealed",
                vec![format!("rows:{n}"), SEAL_V3_TARGET.into()],
                Ok(()),
                None,
            )?;
        } else if !(v1 && v2) {
            let (any_before, targets) = sealed_before()?;
            let v2_before = targets.iter().any(|t| t == SEAL_V2_TARGET);
            // Sealing again would bless whatever was planted: refused once
            // the digest began, whatever a damaged trail says (its chain is
            // read whole and checked; an event edited to hide the sealing
            // breaks it, and a digest's generations show it began).
            let (reader, head, signed) = self.trail_head()?;
            let began = match reader.highest_state_since(0, [0; 32], head, signed.as_ref()) {
                Ok((named, None)) => named > 0,
                _ => true,
            };
            if (!v1 && any_before)
                || (!v2 && (v2_before || v3 || began || self.store.state_digest_exists()?))
            {
                return Err(lost());
            }
            let marks: &[&[u8]] = if v1 {
                &[META_ROWS_SEALED_V2, store::META_ROWS_SEALED_V3]
            } else {
                &[
                    META_ROWS_SEALED,
                    META_ROWS_SEALED_V2,
                    store::META_ROWS_SEALED_V3,
                ]
            };
            let n = self.store.seal_rows(v1, marks)?;
            self.audit(
                None,
                &Context::cli(),
                "vault.rows_sealed",
                vec![
                    format!("rows:{n}"),
                    SEAL_V2_TARGET.into(),
                    SEAL_V3_TARGET.into(),
                ],
                Ok(()),
                None,
            )?;
        }
        self.check_sealed_state().map(|_| ())
    }

    /// Checks the sealed configuration rows against the state digest, and
    /// the digest against the trail: no event after the digest's
    /// `checked_at` may name a later generation than the digest's (a
    /// digest put back from an older copy with every row it covers adds
    /// up, but the trail names the generations it lacks), and the trail is
    /// chain-checked from the digest's `checked_hash` through the last
    /// signed checkpoint, so no event's name can be edited unseen. At open
    /// and by `doctor`; audited operations wait only for the head's read.
    /// Answers the digest and, when the trail after its checkpoint could
    /// not be checked whole (an event altered, removed or planted, the
    /// trail cut), what: the open goes on, as it does for any tampering of
    /// the trail, which `doctor` and `audit verify` name, and `doctor`'s
    /// `sealed-rows` fails with it.
    pub(crate) fn check_sealed_state(&self) -> Result<(store::StateDigest, Option<&'static str>)> {
        let (reader, mut head, mut signed) = self.trail_head()?;
        // Read after the head: every event up to it was appended before,
        // so it names no later generation than this digest's.
        let kept = self.store.check_state()?;
        if signed.as_ref().map_or(0, |h| h.seq) < kept.checked_at {
            // A checkpoint moved the digest on since (a running vault):
            // the head again, and the generations written since count.
            (_, head, signed) = self.trail_head()?;
        }
        // A line that does not even parse is a break too: the open goes on.
        let (named, unchecked) = match reader.highest_state_since(
            kept.checked_at,
            kept.checked_hash,
            head,
            signed.as_ref(),
        ) {
            Err(Error::Integrity(m)) => (0, Some(m)),
            r => r?,
        };
        if named > kept.generation.max(self.store.state_generation()) {
            return Err(Error::Integrity(
                "the set of sealed configuration rows in the records database (put back to an older state: the audit trail names a later generation of them than the database holds)",
            ));
        }
        self.state_noted.fetch_max(named, Ordering::SeqCst);
        Ok((kept, unchecked))
    }

    /// A reader of the trail, its head's seq and its last checkpoint (when
    /// signed with the vault's key), read under the log's lock.
    fn trail_head(&self) -> Result<(audit::TrailReader, u64, Option<audit::SignedHead>)> {
        let log = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
        let (head, signed) = log.head_and_last_signed();
        let signed = signed.filter(|h| h.signature_ok(&self.audit_public_key()));
        Ok((log.reader(), head, signed))
    }

    /// Names the state digest's generation in the trail (`vault.state`)
    /// when no event has named it yet: before a checkpoint that a close
    /// or the server's timer signs, so a change written after the last
    /// event (a certificate's row, an approved request's row removed) is
    /// named before the digest's `checked_at` moves past it.
    pub(crate) fn name_state(&self) -> Result<()> {
        if self.store.state_generation() > self.state_noted.load(Ordering::SeqCst) {
            self.audit(
                None,
                &backup::system_context(),
                "vault.state",
                Vec::new(),
                Ok(()),
                None,
            )?;
        }
        Ok(())
    }

    /// The vault's ID.
    pub fn id(&self) -> VaultId {
        self.info.vault_id
    }

    /// Whether another process took this vault over (its stores on a
    /// cluster, this process's lease lapsed and a standby opened it): the
    /// vault then refuses everything with [`Error::TakenOver`], and its
    /// process should end and start again as a standby (`pivault-server`
    /// exits with code 75).
    pub fn lease_lost(&self) -> bool {
        self.store.lease_lost() || self.keystore.lease_lost()
    }

    /// Whether the records are on a cluster (then other machines can hold
    /// the vault, and standbys forward to the holder).
    pub fn records_on_cluster(&self) -> bool {
        self.store.on_a_cluster()
    }

    /// Where a standby finds the address the holder of the vault in `dir`
    /// published; `None` when its records are embedded (only a process on
    /// this machine can hold it, and nothing is forwarded).
    pub fn holder_lookup(dir: &Path) -> Result<Option<crate::HolderLookup>> {
        let Some(cfg) = crate::store::postgres::read_config(dir)? else {
            return Ok(None);
        };
        let info = header::read_info(&Layout::of(dir).header)?;
        crate::HolderLookup::new(cfg, info.vault_id).map(Some)
    }

    /// Publishes the address other `pivault-server` processes reach this
    /// one at (`None`: withdrawn), so that standbys forward requests here;
    /// with the records embedded there are no standbys and nothing is
    /// written. `TakenOver` if another process holds the vault now.
    pub fn publish_holder_address(&self, address: Option<&str>) -> Result<()> {
        self.store.publish_holder(address)
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current key epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.read().expect("epoch lock").number
    }

    /// The audit checkpoint public key (Ed25519), for offline verification.
    pub fn audit_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing.audit.verifying_key()
    }

    /// The certificate public key (Ed25519).
    pub fn certificate_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing.certificate.verifying_key()
    }

    fn now(&self) -> i64 {
        self.opts.clock.now_ms()
    }

    // ----- audit ---------------------------------------------------------

    fn audit(
        &self,
        actor: Option<UserId>,
        ctx: &Context,
        action: &str,
        targets: Vec<String>,
        outcome: std::result::Result<(), &Error>,
        reason: Option<&str>,
    ) -> Result<u64> {
        self.append_event(self.new_event(actor, ctx, action, targets, outcome, reason))
    }

    /// The event [`Self::audit`] appends.
    pub(crate) fn new_event(
        &self,
        actor: Option<UserId>,
        ctx: &Context,
        action: &str,
        targets: Vec<String>,
        outcome: std::result::Result<(), &Error>,
        reason: Option<&str>,
    ) -> NewEvent {
        let (outcome, code) = match outcome {
            Ok(()) => (Outcome::Success, None),
            Err(e @ Error::PermissionDenied(_)) => (Outcome::Denied, Some(e.code().to_owned())),
            Err(
                e @ (Error::AccountLocked { .. }
                | Error::LoginThrottled { .. }
                | Error::AccountDisabled
                | Error::SecondFactorRequired
                | Error::EnrolmentRequired
                | Error::SessionInvalid),
            ) => (Outcome::Denied, Some(e.code().to_owned())),
            Err(e) => (Outcome::Failed, Some(e.code().to_owned())),
        };
        NewEvent {
            time_ms: self.now(),
            actor,
            channel: ctx.channel,
            source: ctx.source.clone(),
            action: action.to_owned(),
            targets,
            outcome,
            code,
            reason: reason.map(str::to_owned),
            request_id: ctx.request_id.clone(),
        }
    }

    /// Appends one event to the trail (fail closed: the caller must not keep
    /// an unaudited change).
    fn append_event(&self, ev: NewEvent) -> Result<u64> {
        self.append_event_forgetting(ev, None).map(|(seq, _)| seq)
    }

    /// [`Self::append_event`], and with `forget` (a new record's ID) the
    /// record's write-journal entry removed with the event where the trail
    /// can (`AuditLog::append_forgetting`): answers whether it was.
    pub(crate) fn append_event_forgetting(
        &self,
        ev: NewEvent,
        forget: Option<&[u8]>,
    ) -> Result<(u64, bool)> {
        if self.audit_fail.load(Ordering::Relaxed) {
            return Err(Error::AuditUnavailable(
                "audit failure injected by a test".into(),
            ));
        }
        // A process whose lease lapsed appends nothing (a standby may have
        // the vault, and its trail's head, by now).
        self.store.check_lease()?;
        // The first event after a change of the sealed configuration rows
        // names the state digest's generation, so that the trail exposes
        // those rows put back to an older state (`check_sealed_state`).
        let mut ev = ev;
        let state = self.store.state_generation();
        if state > self.state_noted.load(Ordering::SeqCst) {
            ev.targets.push(format!("{}{state}", audit::STATE_TARGET));
        }
        // Written in a group with the events of operations running beside
        // this one (`audit/group.rs`); returns once this one is written.
        let appended = self
            .audit_group
            .append(&self.audit, ev, forget, |log| self.sync_anchor(log));
        let appended = match appended {
            Ok(appended) => appended,
            Err(e @ Error::AuditUnavailable(_)) => {
                // Refused on the cluster (another writer's event holds the
                // number) because another process took the vault over?
                // Then that is the answer, and this process serves no more.
                if let Err(Error::TakenOver) = self.store.confirm_lease() {
                    return Err(Error::TakenOver);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        audit::note_appended_here();
        self.state_noted.fetch_max(state, Ordering::SeqCst);
        Ok(appended)
    }

    /// Audits a change that has been written and, if the audit write fails,
    /// undoes the change before returning the error (fail closed: no change
    /// stays without its audit event).
    fn audit_or_undo(
        &self,
        s: &Session,
        action: &str,
        targets: Vec<String>,
        undo: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if let Err(e) = self.audit(Some(s.user), &s.ctx, action, targets, Ok(()), None) {
            // An undo that fails too would leave an unaudited change
            // standing: the vault then refuses every change until reopened.
            if self.undo_hook().and_then(|()| undo()).is_err() {
                self.isolation.fence();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Writes (`Some`) or deletes (`None`) one row, then audits the change;
    /// if the event cannot be written the row goes back to what it was, so
    /// no change stands without its audit event (fail closed).
    pub(crate) fn write_audited(
        &self,
        s: &Session,
        cf: &str,
        key: &[u8],
        value: Option<&[u8]>,
        event: (&str, Vec<String>, Option<&str>),
    ) -> Result<()> {
        self.isolation.check_fence()?;
        let before = self.store.get(cf, key)?;
        match value {
            Some(v) => self.store.put(cf, key, v)?,
            None => self.store.delete(cf, key)?,
        }
        let (action, targets, reason) = event;
        if let Err(e) = self.audit(Some(s.user), &s.ctx, action, targets, Ok(()), reason) {
            let undone = self.undo_hook().and_then(|()| match &before {
                Some(b) => self.store.put(cf, key, b),
                None => self.store.delete(cf, key),
            });
            if undone.is_err() {
                self.isolation.fence();
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits for an audit checkpoint being written in the background, so
    /// that the trail's files can be read whole (verification).
    pub(crate) fn settle_audit(&self) {
        if let Ok(mut log) = self.audit.lock() {
            log.wait_for_checkpoint();
        }
    }

    /// Closes the vault cleanly: signs a final audit checkpoint.
    pub fn close(self) -> Result<()> {
        self.end_cleanly()
    }

    /// Ends the vault as a process killed at this point would: no final
    /// checkpoint, so the next open disowns the events after the last one
    /// (tests of unclean stops; a real process killed runs no drop).
    #[doc(hidden)]
    pub fn abandon(self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    /// What [`Vault::close`] does, once: the state named and a checkpoint
    /// signed over this process's events.
    fn end_cleanly(&self) -> Result<()> {
        if self.ended.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // A process that lost the vault to a standby signs nothing more.
        if self.lease_lost() {
            return Err(Error::TakenOver);
        }
        self.store.check_lease()?;
        self.name_state()?;
        let now = self.now();
        let mut log = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
        log.checkpoint(now)?;
        self.sync_anchor(&log);
        Ok(())
    }

    // ----- collections ----------------------------------------------------

    /// Changes a collection's schema without losing or invalidating a
    /// stored record ([`Schema::check_evolution`]): new optional fields,
    /// retired fields (records keep them until their next update or their
    /// disposal; no new value is accepted), purposes and residence. Admin.
    pub fn update_collection(&self, s: &Session, name: &str, next: &Schema) -> Result<()> {
        self.authorize(s, Some(Permission::ManageCollections))?;
        let r = (|| {
            let name = CollectionName::parse(name)?;
            let current = self.schema(&name)?;
            current.check_evolution(next)?;
            let before = current.to_json();
            self.store.put(
                store::CF_COLLECTIONS,
                name.as_str().as_bytes(),
                next.to_json().as_bytes(),
            )?;
            Ok((name, before))
        })();
        match r {
            Ok((name, before)) => {
                let mut targets = vec![format!("collection:{name}")];
                targets.extend(next.retired.iter().map(|f| format!("retired:{f}")));
                self.audit_or_undo(s, "collection.update", targets, || {
                    self.store.put(
                        store::CF_COLLECTIONS,
                        name.as_str().as_bytes(),
                        before.as_bytes(),
                    )
                })
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "collection.update",
                    vec![],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Creates a collection with its schema (admin).
    pub fn create_collection(
        &self,
        s: &Session,
        name: &str,
        schema: &Schema,
    ) -> Result<CollectionName> {
        self.authorize(s, Some(Permission::ManageCollections))?;
        let r = (|| {
            let name = CollectionName::parse(name)?;
            if self
                .store
                .get(store::CF_COLLECTIONS, name.as_str().as_bytes())?
                .is_some()
            {
                return Err(Error::AlreadyExists("collection"));
            }
            self.store.put(
                store::CF_COLLECTIONS,
                name.as_str().as_bytes(),
                schema.to_json().as_bytes(),
            )?;
            Ok(name)
        })();
        match r {
            Ok(name) => {
                let targets = vec![format!("collection:{name}")];
                self.audit_or_undo(s, "collection.create", targets, || {
                    self.store
                        .delete(store::CF_COLLECTIONS, name.as_str().as_bytes())
                })?;
                Ok(name)
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "collection.create",
                    vec![],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// A collection's schema, parsed once and cached until the next write
    /// to the collections column family.
    fn schema(&self, name: &CollectionName) -> Result<Arc<Schema>> {
        let generation = self.store.collections_generation();
        if let Some(schema) = GenCache::get(&self.schema_cache, generation, name) {
            return Ok(schema);
        }
        let bytes = self
            .store
            .get(store::CF_COLLECTIONS, name.as_str().as_bytes())?
            .ok_or(Error::NotFound("collection"))?;
        let schema = Arc::new(Schema::from_json(
            std::str::from_utf8(&bytes).map_err(|_| Error::Integrity("collection schema"))?,
        )?);
        GenCache::insert(&self.schema_cache, generation, name.clone(), schema.clone());
        Ok(schema)
    }

    /// Lists collections and their schemas (any active user: schemas hold no personal information).
    pub fn collections(&self, s: &Session) -> Result<Vec<(CollectionName, Schema)>> {
        self.authorize(s, None)?;
        self.store
            .scan_prefix(store::CF_COLLECTIONS, &[])?
            .into_iter()
            .map(|(k, v)| {
                let name = CollectionName::parse(
                    std::str::from_utf8(&k).map_err(|_| Error::Integrity("collection"))?,
                )?;
                let schema = Schema::from_json(
                    std::str::from_utf8(&v).map_err(|_| Error::Integrity("collection"))?,
                )?;
                Ok((name, schema))
            })
            .collect()
    }

    // ----- subjects -------------------------------------------------------

    /// Resolves a subject given on the command line or in an import: a UUID
    /// is taken as a subject ID; anything else is the business's own customer
    /// reference, mapped to a stable subject ID by a keyed MAC so the
    /// reference itself is never stored.
    pub fn resolve_subject(&self, text: &str) -> Result<SubjectId> {
        let t = text.trim();
        if t.is_empty() || t.len() > 256 {
            return Err(Error::invalid(
                "subject must be a UUID or a customer reference of 1-256 characters",
            ));
        }
        if let Ok(id) = t.parse::<SubjectId>() {
            return Ok(id);
        }
        let mac = crypto::mac(&self.signing.subject, "subject-reference", t.as_bytes());
        Ok(SubjectId::from_reference_mac(
            mac[..16].try_into().expect("16 bytes"),
        ))
    }

    // ----- records --------------------------------------------------------

    fn require_officer(&self) -> Result<()> {
        if self.active_officers.load(Ordering::SeqCst) == 0 {
            return Err(Error::NoOfficer);
        }
        Ok(())
    }

    // ----- audit and reports ----------------------------------------------

    /// Audit events matching a filter (officer, auditor).
    pub fn audit_events(&self, s: &Session, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
        self.authorize(s, Some(Permission::ReadAudit))?;
        let events = self.audit.lock().expect("audit lock").events(filter)?;
        self.audit(
            Some(s.user),
            &s.ctx,
            "audit.read",
            vec![format!("count:{}", events.len())],
            Ok(()),
            None,
        )?;
        Ok(events)
    }

    /// Verifies the whole audit trail (officer, auditor).
    pub fn audit_verify(&self, s: &Session) -> Result<VerifyReport> {
        self.authorize(s, Some(Permission::ReadAudit))?;
        let report = self.verify_trail()?;
        let outcome = if report.ok() {
            Ok(())
        } else {
            Err(&Error::Integrity("audit trail"))
        };
        self.audit(Some(s.user), &s.ctx, "audit.verify", vec![], outcome, None)?;
        Ok(report)
    }

    /// Per-user activity over `[from_ms, to_ms)` (REQ-WISP-06).
    pub fn activity_report(
        &self,
        s: &Session,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<UserActivity>> {
        self.authorize(s, Some(Permission::Reports))?;
        let events = self
            .audit
            .lock()
            .expect("audit lock")
            .events(&EventFilter {
                from_ms: Some(from_ms),
                to_ms: Some(to_ms),
                ..EventFilter::default()
            })?;
        let mut report = audit::activity_report(&events);
        let disowning = self
            .audit
            .lock()
            .expect("audit lock")
            .events(&EventFilter {
                action_prefix: Some(audit::UNVOUCHED_ACTION.into()),
                ..EventFilter::default()
            })?;
        audit::mark_unvouched(&mut report, &events, &audit::unvouched_ranges(&disowning));
        self.audit(
            Some(s.user),
            &s.ctx,
            "report.activity",
            vec![],
            Ok(()),
            None,
        )?;
        Ok(report)
    }

    /// Records that the annual security review took place (REQ-WISP-09).
    pub fn record_security_review(&self, s: &Session) -> Result<()> {
        self.authorize(s, Some(Permission::RecordReview))?;
        self.write_audited(
            s,
            store::CF_META,
            META_LAST_REVIEW,
            Some(&self.now().to_be_bytes()),
            ("security.review", vec![], None),
        )
    }

    /// The live security configuration, for `doctor`.
    pub fn security_status(&self) -> Result<SecurityStatus> {
        let users = self.all_user_rows()?;
        let active_by_role = Role::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    users
                        .iter()
                        .filter(|u| !u.disabled && u.role == r.as_str())
                        .count(),
                )
            })
            .collect();
        let last_review_ms = self
            .store
            .get(store::CF_META, META_LAST_REVIEW)?
            .and_then(|b| b.try_into().ok().map(i64::from_be_bytes));
        Ok(SecurityStatus {
            vault_id: self.info.vault_id,
            epoch: self.epoch(),
            kdf: self.info.kdf,
            buckets: self.info.buckets,
            lockout: self.opts.lockout,
            active_by_role,
            last_review_ms,
            sync: self.opts.sync,
        })
    }

    // ----- keys -----------------------------------------------------------

    /// Epoch ratchet (DESIGN §4.2 step 4): a new root key, every bucket key
    /// re-wrapped under it, the old header slot overwritten. After this no
    /// copy of a wrapped bucket key from an older epoch can be opened.
    pub fn ratchet_epoch(&self, s: &Session) -> Result<u64> {
        self.authorize(s, Some(Permission::Dispose))?;
        let r = self.ratchet();
        let targets = r
            .as_ref()
            .map(|e| vec![format!("epoch:{}", e - 1), format!("epoch:{e}")])
            .unwrap_or_default();
        self.audit(
            Some(s.user),
            &s.ctx,
            "key.epoch",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// Where this vault's root-key slots and signing keys live.
    pub(crate) fn header_place(&self) -> header::Place<'_> {
        let l = Layout::of(&self.dir);
        header::Place::of(&l.header, &l.signing, &self.info, &self.keystore)
    }

    pub(crate) fn ratchet(&self) -> Result<u64> {
        let mut epoch = self.epoch.write().expect("epoch lock");
        let next = epoch.number + 1;
        let root = SecretKey::generate();
        let place = self.header_place();
        // 1. New slot first (durable): a crash from here on finishes on open.
        let unlock = self.unlock.read().expect("unlock lock");
        header::write_slot(&place, self.info.vault_id, &unlock, next, &root)?;
        drop(unlock);
        // 2. Re-wrap every bucket key (one synced batch).
        self.keystore
            .rewrap_buckets((epoch.number, &epoch.root), (next, &root))?;
        // 3. Overwrite (or delete) the old slot; the old root is then gone
        // (on a cluster, from the files too once the keystore is purged).
        header::erase_other_slots(&place, next)?;
        *epoch = Epoch { number: next, root };
        Ok(next)
    }

    /// Test hook for fail-closed tests: while set, every audit append fails
    /// with `AuditUnavailable`, as a full or unwritable disk would.
    #[doc(hidden)]
    pub fn set_audit_failure(&self, fail: bool) {
        self.audit_fail.store(fail, Ordering::SeqCst);
    }

    /// Test hook for fence tests: while set, every undo after a failed
    /// audit append fails as well, so the vault must fence itself.
    #[doc(hidden)]
    pub fn set_undo_failure(&self, fail: bool) {
        self.undo_fail.store(fail, Ordering::SeqCst);
    }

    /// Negative control for WISP tests: while set, `user disable` does not
    /// move the user's generation on, so their session rows stay bound to
    /// the account (refused by the disabled flag alone) for the checks to find.
    #[doc(hidden)]
    pub fn set_disable_keeps_generation(&self, keep: bool) {
        self.disable_keeps_generation.store(keep, Ordering::SeqCst);
    }

    /// The undo-failure test hook, checked first by every undo.
    pub(crate) fn undo_hook(&self) -> Result<()> {
        if self.undo_fail.load(Ordering::SeqCst) {
            return Err(Error::Storage("undo failure injected by a test".into()));
        }
        Ok(())
    }

    /// Negative control for forensic tests: make the next purges skip the
    /// physical purge (flush and compaction), so residue must be detected.
    #[doc(hidden)]
    pub fn set_purge_skip_flush(&self, skip: bool) {
        self.purge_skip_flush.store(skip, Ordering::SeqCst);
    }

    /// Negative controls of a cluster keystore's purge (tests): plain
    /// `VACUUM`, or no WAL rounds, for the next purges.
    #[doc(hidden)]
    pub fn set_purge_control(&self, c: crate::keystore::PurgeControl) {
        self.keystore.set_purge_control(c);
        self.store.set_purge_control(c);
    }

    /// The same control for the records cluster's beacon purge only, the
    /// keystore's purge left whole (tests).
    #[doc(hidden)]
    pub fn set_records_purge_control(&self, c: crate::keystore::PurgeControl) {
        self.store.set_purge_control(c);
    }

    /// The size past which a disposal's purge splits a partition of the
    /// records cluster's search index (tests: a small vault splits too).
    #[doc(hidden)]
    pub fn set_records_beacon_split_at(&self, bytes: u64) {
        self.store.set_beacon_split_at(bytes);
    }

    /// Negative control for forensic tests: the next disposal batches hold a
    /// RocksDB snapshot of the keystore from before their key deletion until
    /// their verification, pinning the old wrapped keys, so the purge checks
    /// and the byte scan must find residue and the batch must fail.
    #[doc(hidden)]
    pub fn set_purge_hold_snapshot(&self, hold: bool) {
        self.purge_hold_snapshot.store(hold, Ordering::SeqCst);
    }

    /// Negative control for backup tests: the next restores skip the
    /// disposal-ledger replay (disposed records come back), so a test can
    /// show it would see a resurrection.
    #[doc(hidden)]
    pub fn set_restore_skip_ledger(&self, skip: bool) {
        self.restore_skip_ledger.store(skip, Ordering::SeqCst);
    }

    /// Where the records store is: `rocksdb` (the vault directory) or
    /// `postgresql` (the records cluster).
    pub fn records_engine(&self) -> &'static str {
        self.store.engine_kind()
    }

    /// The records engine's settings its purge depends on (`doctor`).
    pub fn records_engine_checks(
        &self,
    ) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        self.store.engine_checks()
    }

    /// Direct access to the keystore for forensic tests and benchmarks.
    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// Whether the vault would accept personal-information writes now.
    pub fn has_active_officer(&self) -> bool {
        self.active_officers.load(Ordering::SeqCst) > 0
    }

    /// The state of a user, by name (any active user may ask about their own; admins about anyone).
    pub fn user_state(&self, s: &Session, username: &str) -> Result<UserState> {
        Ok(self
            .list_users(s)?
            .into_iter()
            .find(|u| u.username.as_str() == username)
            .ok_or(Error::NotFound("user"))?
            .state)
    }
}
