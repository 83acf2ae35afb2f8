//! The records database: one table per kind of row, on an engine behind
//! the [`engine::RowEngine`] seam (RocksDB in the vault directory by
//! default, or a PostgreSQL cluster). Row MACs, the record row's encoding
//! and the subject and collection indexes live here, above the seam.
//!
//! Nothing stored here is plaintext personal information: record bodies are
//! AES-256-GCM envelopes, everything else is IDs, names of collections and
//! users, hashes and timestamps.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId, SubjectId, UserId};

pub(crate) mod engine;
pub mod postgres;
mod rocks;
mod state;

pub use state::StateDigest;

use engine::RowEngine;
pub(crate) use rocks::obsolete_files;

/// Column families of the records database.
pub(crate) const CF_RECORDS: &str = "records";
pub(crate) const CF_BY_SUBJECT: &str = "by_subject";
pub(crate) const CF_BY_COLLECTION: &str = "by_collection";
pub(crate) const CF_COLLECTIONS: &str = "collections";
pub(crate) const CF_USERS: &str = "users";
pub(crate) const CF_USERNAMES: &str = "usernames";
pub(crate) const CF_SESSIONS: &str = "sessions";
pub(crate) const CF_META: &str = "meta";
/// Disposal batches (intent and progress; IDs only).
pub(crate) const CF_DISPOSALS: &str = "disposals";
/// Signed certificates of destruction.
pub(crate) const CF_CERTIFICATES: &str = "certificates";
/// The disposal ledger: (time, disposal) -> record IDs.
pub(crate) const CF_LEDGER: &str = "ledger";
/// Legal holds on records and subjects.
pub(crate) const CF_HOLDS: &str = "holds";
/// Retention policies per collection.
pub(crate) const CF_RETENTION: &str = "retention";
/// Contractors' assigned scopes and public keys.
pub(crate) const CF_CONTRACTORS: &str = "contractors";
/// The backups catalogue: backup ID -> metadata (IDs and times only; the
/// backup keys themselves are in the keystore).
pub(crate) const CF_BACKUPS: &str = "backups";
/// The write journal: a record row written whose audit event is not yet
/// known to be in the trail (record ID -> [`crate::vault::JournalEntry`]).
/// Written in the same batch as the row, removed once the event is appended;
/// reconciled with the audit trail on open.
pub(crate) const CF_JOURNAL: &str = "journal";
/// Blind indexes of searchable fields (`beacon.rs`): forward rows keyed by
/// beacon, one reverse row per record. Derived from personal information:
/// a disposal deletes a record's rows and purges this column family.
pub(crate) const CF_BEACONS: &str = "beacons";
/// Exports of records out of the vault (export.rs): one row per export
/// (`x` + export ID) and one index row per exported record (`r` + record
/// ID + export ID), read by a disposal's certificate.
pub(crate) const CF_EXPORTS: &str = "exports";
/// The incident register (`incident.rs`): incident ID -> the incident
/// (IDs, times, counts and the officer's own words; no personal information).
pub(crate) const CF_INCIDENTS: &str = "incidents";
/// Column families whose rows carry a MAC under a key derived from the
/// vault's secrets (`Store::row_tag`): who may sign in, and as whom, and
/// every row an insider with the files would edit, plant or delete to get
/// around a control. Without it, someone with the files but not the
/// passphrase could plant a session row under a token they chose (a login
/// as any user), rewrite a role, lift a legal hold, lengthen a contractor's
/// scope, shorten a retention period, drop the export or disposal
/// ledger's row a certificate or a restore relies on, or move a disposal
/// batch past the verification it failed.
const SEALED_CFS: [&str; 13] = [
    CF_USERS,
    CF_USERNAMES,
    CF_SESSIONS,
    CF_INCIDENTS,
    CF_HOLDS,
    CF_RETENTION,
    CF_CONTRACTORS,
    CF_COLLECTIONS,
    CF_EXPORTS,
    CF_BACKUPS,
    CF_LEDGER,
    CF_CERTIFICATES,
    CF_DISPOSALS,
];
/// The column families sealed since the first row MACs (`rows_sealed_v1`);
/// the disposal batches since `rows_sealed_v3`; the others since
/// `rows_sealed_v2`, which began the state digest.
const SEALED_V1_CFS: [&str; 4] = [CF_USERS, CF_USERNAMES, CF_SESSIONS, CF_INCIDENTS];
/// Keys of the meta column family whose rows are sealed like those of
/// [`SEALED_CFS`]: settings an insider with the files would lower to get
/// in (the two-factor policy).
pub(crate) const SEALED_META_PREFIX: &[u8] = b"sealed/";
/// Meta rows of requests waiting for a second admin (`approvals.rs`):
/// sealed since `rows_sealed_v2`, so none can be planted or dropped.
pub(crate) const META_PENDING_PREFIX: &[u8] = b"pending/";
/// Meta row of the retention schedule (`housekeeping.rs`): sealed since
/// `rows_sealed_v2`. Its last-run row is not (it changes at every run and
/// gates nothing).
pub(crate) const META_RETENTION_SCHEDULE: &[u8] = b"setting:retention-schedule";

/// Meta row marking that the disposal batch rows are sealed
/// (`rows_sealed_v3`): sealed and counted in the digest itself, so that
/// deleting it (to have the batches sealed again, a planted one with them)
/// leaves the rows not adding up, whether or not any batch row exists.
pub(crate) const META_ROWS_SEALED_V3: &[u8] = b"rows_sealed_v3";

fn sealed_meta(key: &[u8]) -> bool {
    key.starts_with(SEALED_META_PREFIX)
        || key.starts_with(META_PENDING_PREFIX)
        || key == META_RETENTION_SCHEDULE
        || key == META_ROWS_SEALED_V3
}

/// Bytes of a row MAC.
const ROW_TAG_LEN: usize = 32;
/// The error of a row whose MAC fails.
const TAMPERED_ROW: &str = "a user or session row or another sealed row of the records database (an incident, hold, retention, contractor, schema, export, backup, disposal batch, disposal ledger or certificate row, a pending approval or a sealed setting) fails its MAC (written without the vault's key)";
/// The error of a state digest older than this process last saw.
const STATE_GONE_BACK: &str = "the set of sealed configuration rows in the records database (put back to an older state under the running vault)";
/// The error of covered rows that no longer add up to the state digest.
const STATE_CHANGED: &str = "the set of sealed configuration rows in the records database (users, holds, retention, contractors, schemas, exports, backups, disposal batches, the ledgers, certificates, pending approvals, sealed settings: it no longer adds up to the vault's state digest, so a row was deleted, or put back from an older copy, without the vault's key)";
pub(crate) const ALL_CFS: [&str; 19] = [
    CF_RECORDS,
    CF_BY_SUBJECT,
    CF_BY_COLLECTION,
    CF_COLLECTIONS,
    CF_USERS,
    CF_USERNAMES,
    CF_SESSIONS,
    CF_META,
    CF_DISPOSALS,
    CF_CERTIFICATES,
    CF_LEDGER,
    CF_HOLDS,
    CF_RETENTION,
    CF_CONTRACTORS,
    CF_BACKUPS,
    CF_JOURNAL,
    CF_BEACONS,
    CF_EXPORTS,
    CF_INCIDENTS,
];

/// Lifecycle state of a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Readable with its key.
    Live,
    /// Keys destroyed; the row remains as a tombstone naming the certificate.
    Disposed {
        /// Certificate of destruction, when issued.
        certificate: Option<String>,
    },
}

/// One record row: metadata in clear (IDs and times only) and the body envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordRow {
    /// Row format: [`ROW_V1`] (envelope AAD binds collection, record,
    /// version, subject) or [`ROW_V2`] (also the times and the creator).
    pub format: u8,
    pub collection: CollectionName,
    pub subject: SubjectId,
    pub version: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub created_by: UserId,
    pub state: RecordState,
    pub envelope: Vec<u8>,
}

/// Rows written before the times and creator were bound into the AAD; still read.
pub(crate) const ROW_V1: u8 = 1;
/// Rows whose envelope AAD also binds `created_ms`, `updated_ms` and `created_by`
/// (the metadata fixed for a version); written by this build.
pub(crate) const ROW_V2: u8 = 2;

impl RecordRow {
    /// `format | state | version | subject | created | updated | created_by | len(collection) | collection | (cert len | cert) | envelope`
    /// (the same layout for v1 and v2; they differ in what the envelope's AAD binds).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(80 + self.collection.as_str().len() + self.envelope.len());
        b.push(self.format);
        b.push(match self.state {
            RecordState::Live => 0,
            RecordState::Disposed { .. } => 1,
        });
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(self.subject.as_bytes());
        b.extend_from_slice(&self.created_ms.to_be_bytes());
        b.extend_from_slice(&self.updated_ms.to_be_bytes());
        b.extend_from_slice(self.created_by.as_bytes());
        let c = self.collection.as_str().as_bytes();
        b.push(c.len() as u8);
        b.extend_from_slice(c);
        if let RecordState::Disposed { certificate } = &self.state {
            let cert = certificate.as_deref().unwrap_or("").as_bytes();
            b.push(cert.len() as u8);
            b.extend_from_slice(cert);
        }
        b.extend_from_slice(&self.envelope);
        b
    }

    pub fn decode(b: &[u8]) -> Result<RecordRow> {
        let bad = || Error::Integrity("record row");
        let mut r = Reader(b);
        let format = r.u8().ok_or_else(bad)?;
        if format != ROW_V1 && format != ROW_V2 {
            return Err(Error::UnsupportedFormat("record row"));
        }
        let state = r.u8().ok_or_else(bad)?;
        let version = u32::from_be_bytes(r.take(4).ok_or_else(bad)?.try_into().expect("4"));
        let subject = SubjectId::from_slice(r.take(16).ok_or_else(bad)?)?;
        let created_ms = i64::from_be_bytes(r.take(8).ok_or_else(bad)?.try_into().expect("8"));
        let updated_ms = i64::from_be_bytes(r.take(8).ok_or_else(bad)?.try_into().expect("8"));
        let created_by = UserId::from_slice(r.take(16).ok_or_else(bad)?)?;
        let clen = r.u8().ok_or_else(bad)? as usize;
        let collection = std::str::from_utf8(r.take(clen).ok_or_else(bad)?).map_err(|_| bad())?;
        let collection = CollectionName::parse(collection).map_err(|_| bad())?;
        let state = match state {
            0 => RecordState::Live,
            1 => {
                let n = r.u8().ok_or_else(bad)? as usize;
                let cert = std::str::from_utf8(r.take(n).ok_or_else(bad)?).map_err(|_| bad())?;
                RecordState::Disposed {
                    certificate: (!cert.is_empty()).then(|| cert.to_owned()),
                }
            }
            _ => return Err(bad()),
        };
        Ok(RecordRow {
            format,
            collection,
            subject,
            version,
            created_ms,
            updated_ms,
            created_by,
            state,
            envelope: r.0.to_vec(),
        })
    }
}

struct Reader<'a>(&'a [u8]);
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

/// What [`Store::each_sealed_row`] calls with each sealed row: its column
/// family, key and stored value.
type SealedRowVisit<'f> = dyn FnMut(&'static str, &[u8], &[u8]) -> Result<()> + 'f;

/// The state digest as a process keeps it (see [`Store::state`]).
#[derive(Default)]
struct Kept {
    /// `None` until begun or checked at open.
    digest: Option<StateDigest>,
    /// Set by [`Store::check_state`] alone: only then may the digest's
    /// trail position move (the trail was read up to it).
    checked: bool,
    /// Each covered row's MAC, by table number and key.
    rows: KeptRows,
}

/// Covered rows' MACs by table number and key.
type KeptRows = std::collections::BTreeMap<(u8, Vec<u8>), [u8; ROW_TAG_LEN]>;

/// A stored sealed row whose MAC was checked, without it.
fn without_tag(mut stored: Vec<u8>) -> Vec<u8> {
    stored.truncate(stored.len() - ROW_TAG_LEN);
    stored
}

/// A table's number in [`ALL_CFS`] (the key of [`Kept::rows`]).
fn cf_no(cf: &str) -> u8 {
    ALL_CFS
        .iter()
        .position(|t| *t == cf)
        .expect("a records table") as u8
}

/// The error of a covered row changed under the running vault.
const ROW_CHANGED: &str = "a sealed row of the records database (deleted, added or put back from an older copy under the running vault, without the vault's key)";

/// One write of [`Store::write_ops`]: column family, key, and the value to
/// put (`Some`) or `None` to delete.
pub(crate) type WriteOp<'a> = (&'a str, Vec<u8>, Option<Vec<u8>>);

/// The records database handle.
pub(crate) struct Store {
    engine: Box<dyn RowEngine>,
    sync: bool,
    /// Bumped after every write to the user column families, so that the
    /// facade's in-memory user cache can tell it is stale (one process owns
    /// the database, so every write passes through here).
    users_gen: AtomicU64,
    /// The same for the collections (schemas) column family.
    collections_gen: AtomicU64,
    /// The key of the MACs on the rows of [`SEALED_CFS`], set once the
    /// vault is unlocked ([`Store::set_row_key`]).
    row_key: std::sync::OnceLock<crate::secret::SecretKey>,
    /// The state digest as this process keeps it, and every covered row's
    /// MAC: written across the read and the write of every covered row, so
    /// that writes racing each other each fold into it; read across every
    /// read of a covered row, which must find the row this process last
    /// wrote (a row deleted or put back under a running vault, by a
    /// cluster's superuser, fails its read at once).
    state: std::sync::RwLock<Kept>,
    /// The key of the digest's PRF and seal (from the row key).
    state_key: std::sync::OnceLock<crate::secret::SecretKey>,
    /// The digest's generation as last written or checked (read by every
    /// audit append without waiting for [`Self::state`]).
    state_generation: AtomicU64,
    /// The disposal batch rows are still as a build before
    /// `rows_sealed_v3` wrote them (no MAC, not in the digest): set by the
    /// open that seals them ([`Self::seal_disposals`]) only while it checks
    /// the digest they are not yet in.
    disposals_unsealed: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

pub(crate) fn collection_prefix(c: &CollectionName) -> Vec<u8> {
    let mut k = c.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    /// The embedded records database at `path` (RocksDB's lock: a vault
    /// held by another process is refused at once).
    pub fn open(path: &Path, sync: bool) -> Result<Store> {
        Ok(Store::on(Box::new(rocks::RocksRows::open(path)?), sync))
    }

    /// The records store on the PostgreSQL cluster `cfg` names (the vault
    /// directory's `records.json`).
    /// `live` runs once the vault's lock is held, before anything is
    /// made on the cluster (see [`postgres::PgRows::open`]).
    pub fn on_cluster(
        cfg: crate::keystore::postgres::PgConfig,
        vault: crate::ids::VaultId,
        sync: bool,
        live: &(dyn Fn() -> Result<()> + Sync),
        create: bool,
    ) -> Result<Store> {
        Ok(Store::on(
            Box::new(postgres::PgRows::open(cfg, vault, live, create)?),
            sync,
        ))
    }

    /// The records store on `engine`.
    pub(crate) fn on(engine: Box<dyn RowEngine>, sync: bool) -> Store {
        Store {
            engine,
            sync,
            users_gen: AtomicU64::new(0),
            collections_gen: AtomicU64::new(0),
            row_key: std::sync::OnceLock::new(),
            state: std::sync::RwLock::new(Kept::default()),
            state_key: std::sync::OnceLock::new(),
            state_generation: AtomicU64::new(0),
            disposals_unsealed: AtomicBool::new(false),
        }
    }

    /// Whether a row carries a MAC.
    fn sealed(&self, cf: &str, key: &[u8]) -> bool {
        (SEALED_CFS.contains(&cf)
            && !(cf == CF_DISPOSALS && self.disposals_unsealed.load(Ordering::SeqCst)))
            || (cf == CF_META && sealed_meta(key))
    }

    /// Whether a row counts in the state digest (`state.rs`): every sealed
    /// row but a session (one per sign-in; a deleted one signs out, and a
    /// copy put back needs its token, which only its user had) and the
    /// digest itself.
    fn digested(&self, cf: &str, key: &[u8]) -> bool {
        self.sealed(cf, key) && cf != CF_SESSIONS && !(cf == CF_META && key == state::DIGEST_KEY)
    }

    /// Whether a table holds rows the state digest covers.
    fn covered_table(&self, cf: &str) -> bool {
        (self.sealed(cf, b"") && cf != CF_SESSIONS) || cf == CF_META
    }

    /// The engine's name (`rocksdb`, `postgresql`).
    pub fn engine_kind(&self) -> &'static str {
        self.engine.kind()
    }

    /// Whole-vault deletion: what would keep a byte past it (a cluster).
    pub(crate) fn destroy_precheck(&self) -> Result<Vec<String>> {
        self.engine.destroy_precheck()
    }

    /// Whole-vault deletion: the vault's tables dropped and purged from
    /// every member (a cluster; `None` embedded).
    pub(crate) fn destroy(&self) -> Result<Option<crate::keystore::PurgeEvidence>> {
        self.engine.destroy()
    }

    /// After [`Self::destroy`]: every member's files searched (a cluster).
    pub(crate) fn scan_everything(
        &self,
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<Option<crate::keystore::ByteScan>> {
        self.engine.scan_everything(needles, wal_after)
    }

    /// Whether the rows live on a database cluster (each write a network
    /// round trip and a synchronous commit) rather than embedded.
    pub(crate) fn on_a_cluster(&self) -> bool {
        self.engine.kind() == "postgresql"
    }

    /// Another process took the vault over (on a cluster: this process's
    /// lease lapsed and a standby opened the vault).
    pub fn lease_lost(&self) -> bool {
        self.engine.lease_lost()
    }

    /// Publishes where this process serves the vault, for standbys.
    pub(crate) fn publish_holder(&self, address: Option<&str>) -> Result<()> {
        self.engine.publish_holder(address)
    }

    /// `TakenOver` once another process took the vault over; on a cluster,
    /// the lease renewed first when it may have lapsed.
    pub(crate) fn check_lease(&self) -> Result<()> {
        self.engine.check_lease()
    }

    /// `TakenOver` once another process took the vault over; on a cluster,
    /// the lease renewed now, however recently it was.
    pub(crate) fn confirm_lease(&self) -> Result<()> {
        self.engine.confirm_lease()
    }

    /// On a cluster, what the audit trail there checks before it appends.
    pub(crate) fn fence(&self) -> Option<std::sync::Arc<dyn postgres::Fence>> {
        self.engine.fence()
    }

    /// The engine's settings the beacon purge depends on, for `doctor`.
    pub fn engine_checks(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        self.engine.doctor()
    }

    /// Marks the caches of `cf` stale. Called after the write (whether or not
    /// it succeeded): a reader that sees the new generation reads the new row.
    fn changed(&self, cf: &str) {
        match cf {
            CF_USERS | CF_USERNAMES => {
                self.users_gen.fetch_add(1, Ordering::SeqCst);
            }
            CF_COLLECTIONS => {
                self.collections_gen.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Generation of the user rows: changes after every user write.
    pub fn users_generation(&self) -> u64 {
        self.users_gen.load(Ordering::SeqCst)
    }

    /// Generation of the collection schemas: changes after every schema write.
    pub fn collections_generation(&self) -> u64 {
        self.collections_gen.load(Ordering::SeqCst)
    }

    /// Sets the key of the row MACs (derived from a secret only the
    /// passphrase opens); before it, sealed rows can be neither read nor
    /// written.
    pub fn set_row_key(&self, key: crate::secret::SecretKey) {
        let state = crate::secret::SecretKey::from_bytes(crate::crypto::mac(
            &key,
            "pivault-state-key-v1",
            b"",
        ));
        let _ = self.row_key.set(key);
        let _ = self.state_key.set(state);
    }

    /// The MAC of one row of a sealed column family: bound to the column
    /// family, the key and the value, so a row can be neither forged nor
    /// moved to another key (a session row planted under a chosen token's
    /// hash, a user row copied over another user's ID).
    fn row_tag(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<[u8; ROW_TAG_LEN]> {
        let k = self
            .row_key
            .get()
            .ok_or(Error::Integrity("row key not set"))?;
        let data = crate::crypto::Aad::new(cf).part(key).part(value);
        Ok(crate::crypto::mac(k, "pivault-row-v1", data.as_bytes()))
    }

    /// `value` as stored: with its MAC appended in a sealed column family.
    fn seal_row<'v>(
        &self,
        cf: &str,
        key: &[u8],
        value: &'v [u8],
    ) -> Result<std::borrow::Cow<'v, [u8]>> {
        if !self.sealed(cf, key) {
            return Ok(std::borrow::Cow::Borrowed(value));
        }
        let mut v = value.to_vec();
        v.extend_from_slice(&self.row_tag(cf, key, value)?);
        Ok(std::borrow::Cow::Owned(v))
    }

    /// A stored value without its MAC, checked (in constant time); a row
    /// whose MAC fails was written by someone without the key.
    fn open_row(&self, cf: &str, key: &[u8], mut stored: Vec<u8>) -> Result<Vec<u8>> {
        if !self.sealed(cf, key) {
            return Ok(stored);
        }
        use subtle::ConstantTimeEq;
        let n = stored
            .len()
            .checked_sub(ROW_TAG_LEN)
            .ok_or(Error::Integrity(TAMPERED_ROW))?;
        let want = self.row_tag(cf, key, &stored[..n])?;
        if !bool::from(want.ct_eq(&stored[n..])) {
            return Err(Error::Integrity(TAMPERED_ROW));
        }
        stored.truncate(n);
        Ok(stored)
    }

    /// Seals every row of the column families and meta rows sealed since
    /// `v1` (all of them when `v1` is false) written without a MAC (a vault
    /// from before those row MACs) and starts the state digest over every
    /// covered row, with `marks` (the row-seal marks), in one synced batch:
    /// a crash leaves either all of it or none, never rows sealed twice.
    /// The rows sealed.
    pub fn seal_rows(&self, v1: bool, marks: &[&[u8]]) -> Result<usize> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let key = self.state_key()?;
        let legacy = |cf: &str, k: &[u8]| -> bool {
            if cf == CF_META {
                sealed_meta(k) && !k.starts_with(SEALED_META_PREFIX)
            } else {
                self.sealed(cf, k) && !(v1 && SEALED_V1_CFS.contains(&cf))
            }
        };
        let mut ops: Vec<WriteOp<'_>> = Vec::new();
        let mut digest = StateDigest::default();
        let mut rows = std::collections::BTreeMap::new();
        self.each_sealed_row(!v1, &mut |cf, k, v| {
            let stored = if legacy(cf, k) {
                let s = self.seal_row(cf, k, v)?.into_owned();
                ops.push((cf, k.to_vec(), Some(s.clone())));
                s
            } else {
                v.to_vec()
            };
            if self.digested(cf, k) {
                let tag = self.stored_tag(cf, k, &stored)?;
                digest.add(key, &tag);
                rows.insert((cf_no(cf), k.to_vec()), tag);
            }
            Ok(())
        })?;
        let n = ops.len();
        for m in marks {
            ops.push(self.mark_op(m, &mut digest, &mut rows)?);
        }
        ops.push(self.digest_op(&digest)?);
        let r = self.engine.write(&ops, true);
        for cf in SEALED_CFS {
            self.changed(cf);
        }
        r?;
        *state = Kept {
            digest: Some(digest),
            checked: false,
            rows,
        };
        Ok(n)
    }

    /// The write of a row-seal mark `m`: sealed and folded into `digest`
    /// (and `rows`) when it is a sealed row ([`META_ROWS_SEALED_V3`]).
    fn mark_op(
        &self,
        m: &[u8],
        digest: &mut StateDigest,
        rows: &mut KeptRows,
    ) -> Result<WriteOp<'static>> {
        let v = self.seal_row(CF_META, m, b"1")?.into_owned();
        if self.digested(CF_META, m) {
            let tag: [u8; ROW_TAG_LEN] = v[v.len() - ROW_TAG_LEN..].try_into().expect("sealed");
            if let Some(old) = rows.insert((cf_no(CF_META), m.to_vec()), tag) {
                digest.remove(self.state_key()?, &old);
            }
            digest.add(self.state_key()?, &tag);
        }
        Ok((CF_META, m.to_vec(), Some(v)))
    }

    /// Takes the disposal batch rows as a build before `rows_sealed_v3`
    /// wrote them (no MAC, not in the state digest), until
    /// [`Self::seal_disposals`]: the open that seals them checks the digest
    /// without them first.
    pub fn disposals_unsealed_until_sealed(&self) {
        self.disposals_unsealed.store(true, Ordering::SeqCst);
    }

    /// Seals every disposal batch row (a vault sealed before they were)
    /// and folds them into the state digest, which [`Self::check_state`]
    /// checked without them just before, as one more generation, with
    /// `mark`, in one synced batch: a crash leaves all of it or none. The
    /// rows sealed.
    pub fn seal_disposals(&self, mark: &[u8]) -> Result<usize> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let key = self.state_key()?;
        let (Some(mut digest), true) = (state.digest, state.checked) else {
            return Err(Error::Integrity(
                "the records database's state digest (not yet checked)",
            ));
        };
        if !self.disposals_unsealed.load(Ordering::SeqCst) {
            return Err(Error::Integrity("the disposal batch rows (sealed already)"));
        }
        self.same_as_stored(&digest)?;
        let mut ops: Vec<WriteOp<'_>> = Vec::new();
        let mut tags = Vec::new();
        self.engine.scan(CF_DISPOSALS, &[], &mut |k, v| {
            let mut sealed = v.to_vec();
            let tag = self.row_tag(CF_DISPOSALS, k, v)?;
            sealed.extend_from_slice(&tag);
            ops.push((CF_DISPOSALS, k.to_vec(), Some(sealed)));
            tags.push((k.to_vec(), tag));
            Ok(true)
        })?;
        for (_, tag) in &tags {
            digest.add(key, tag);
        }
        digest.generation += 1;
        let n = ops.len();
        // Kept in memory only once written.
        let mut rows = state.rows.clone();
        ops.push(self.mark_op(mark, &mut digest, &mut rows)?);
        ops.push(self.digest_op(&digest)?);
        self.engine.write(&ops, true)?;
        self.disposals_unsealed.store(false, Ordering::SeqCst);
        for (k, tag) in tags {
            rows.insert((cf_no(CF_DISPOSALS), k), tag);
        }
        state.rows = rows;
        state.digest = Some(digest);
        self.state_generation
            .fetch_max(digest.generation, Ordering::SeqCst);
        Ok(n)
    }

    /// Calls `f` with every sealed row as stored (its MAC not yet checked):
    /// the sealed column families and the sealed meta rows (read by
    /// prefix, not the whole of `meta`, which holds a row per sign-in source).
    /// Sessions only `with_sessions` (sealing a vault from before row
    /// MACs): no session counts in the digest.
    fn each_sealed_row(&self, with_sessions: bool, f: &mut SealedRowVisit<'_>) -> Result<()> {
        for cf in SEALED_CFS {
            if (cf == CF_SESSIONS && !with_sessions) || !self.sealed(cf, b"") {
                continue;
            }
            self.engine.scan(cf, &[], &mut |k, v| {
                f(cf, k, v)?;
                Ok(true)
            })?;
        }
        for prefix in [
            SEALED_META_PREFIX,
            META_PENDING_PREFIX,
            META_RETENTION_SCHEDULE,
            META_ROWS_SEALED_V3,
        ] {
            self.engine.scan(CF_META, prefix, &mut |k, v| {
                if self.sealed(CF_META, k) {
                    f(CF_META, k, v)?;
                }
                Ok(true)
            })?;
        }
        Ok(())
    }

    /// Checks that the covered rows add up to the state digest (each row's
    /// MAC checked on the way) and, in a process that kept it already,
    /// that it is the digest this process last wrote; from then on the
    /// digest is kept with every write. At open, and by `doctor` (covered
    /// writes wait for it).
    pub fn check_state(&self) -> Result<StateDigest> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let key = self.state_key()?;
        let stored = self
            .engine
            .get(CF_META, state::DIGEST_KEY)?
            .map(|v| self.open_row(CF_META, state::DIGEST_KEY, v))
            .transpose()?
            .ok_or(Error::Integrity(
                "the records database's state digest (it is missing)",
            ))?;
        let mut found = StateDigest::default();
        let mut rows = std::collections::BTreeMap::new();
        self.each_sealed_row(false, &mut |cf, k, v| {
            if self.digested(cf, k) {
                let tag = self.stored_tag(cf, k, v)?;
                found.add(key, &tag);
                rows.insert((cf_no(cf), k.to_vec()), tag);
            }
            Ok(())
        })?;
        let kept = StateDigest::decode_over(&stored, &found, key)?;
        if state.digest.is_some_and(|s| s != kept) {
            return Err(Error::Integrity(STATE_GONE_BACK));
        }
        *state = Kept {
            digest: Some(kept),
            checked: true,
            rows,
        };
        self.state_generation
            .fetch_max(kept.generation, Ordering::SeqCst);
        Ok(kept)
    }

    /// Refuses a stored digest other than the one this process last wrote
    /// or checked: put back under a running vault (a cluster's superuser),
    /// it must not be written forward over (that would bless the rows put
    /// back with it under a generation the trail already names).
    fn same_as_stored(&self, kept: &StateDigest) -> Result<()> {
        let key = self.state_key()?;
        let stored = self
            .engine
            .get(CF_META, state::DIGEST_KEY)?
            .map(|v| self.open_row(CF_META, state::DIGEST_KEY, v))
            .transpose()
            .map_err(|_| Error::Integrity(STATE_GONE_BACK))?;
        match stored {
            Some(s) if s == kept.encode(key) => Ok(()),
            _ => Err(Error::Integrity(STATE_GONE_BACK)),
        }
    }

    /// The write of digest `d` (sealed, and its row MAC).
    fn digest_op(&self, d: &StateDigest) -> Result<WriteOp<'static>> {
        let v = d.encode(self.state_key()?);
        Ok((
            CF_META,
            state::DIGEST_KEY.to_vec(),
            Some(self.seal_row(CF_META, state::DIGEST_KEY, &v)?.into_owned()),
        ))
    }

    /// The key of the state digest's PRF and seal: derived from the row
    /// key, set with it.
    fn state_key(&self) -> Result<&crate::secret::SecretKey> {
        self.state_key
            .get()
            .ok_or(Error::Integrity("row key not set"))
    }

    /// The MAC a stored sealed row carries, checked.
    fn stored_tag(&self, cf: &str, key: &[u8], stored: &[u8]) -> Result<[u8; ROW_TAG_LEN]> {
        let n = stored.len().saturating_sub(ROW_TAG_LEN);
        self.open_row(cf, key, stored.to_vec())?;
        Ok(stored[n..].try_into().expect("a row tag"))
    }

    /// Writes `ops` (sealed already) atomically; when any covers a row of
    /// the state digest, the digest moves with them in the same batch,
    /// under [`Self::state`], from each row's MAC before and after.
    fn commit(&self, mut ops: Vec<WriteOp<'_>>, sync: bool) -> Result<()> {
        if !ops.iter().any(|(cf, k, _)| self.digested(cf, k)) {
            return self.engine.write(&ops, sync);
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let Some(mut digest) = state.digest else {
            if self.engine.get(CF_META, state::DIGEST_KEY)?.is_some() {
                // The open checks the digest before anything writes a
                // covered row; a write before it would go unfolded.
                return Err(Error::Integrity(
                    "the records database's state digest (not yet checked)",
                ));
            }
            // Before the digest begins (the first open's sealing starts it).
            return self.engine.write(&ops, sync);
        };
        self.same_as_stored(&digest)?;
        let key = self.state_key()?;
        // Each covered key's MAC as the batch goes: first as stored, read
        // in one batch per column family.
        let mut now: std::collections::HashMap<(&str, Vec<u8>), Option<[u8; ROW_TAG_LEN]>> =
            std::collections::HashMap::new();
        let mut by_cf: std::collections::BTreeMap<&str, Vec<&[u8]>> = Default::default();
        for (cf, k, _) in &ops {
            if self.digested(cf, k) {
                by_cf.entry(*cf).or_default().push(k);
            }
        }
        for (cf, keys) in by_cf {
            for (k, v) in keys.iter().zip(self.engine.multi_get(cf, &keys)?) {
                let tag = v.map(|v| self.stored_tag(cf, k, &v)).transpose()?;
                if tag != state.rows.get(&(cf_no(cf), k.to_vec())).copied() {
                    return Err(Error::Integrity(ROW_CHANGED));
                }
                now.insert((cf, k.to_vec()), tag);
            }
        }
        for (cf, k, v) in &ops {
            if !self.digested(cf, k) {
                continue;
            }
            let slot = now.get_mut(&(*cf, k.clone())).expect("read above");
            if let Some(old) = slot.take() {
                digest.remove(key, &old);
            }
            if let Some(v) = v {
                let tag: [u8; ROW_TAG_LEN] = v[v.len() - ROW_TAG_LEN..].try_into().expect("sealed");
                digest.add(key, &tag);
                *slot = Some(tag);
            }
        }
        digest.generation += 1;
        ops.push(self.digest_op(&digest)?);
        // Durable whatever was asked: an audit event will name this
        // generation, and a trail naming one the database lost after a
        // power cut would read as a rollback.
        if let Err(e) = self.engine.write(&ops, true) {
            // A commit whose answer was lost (a connection cut after the
            // cluster committed) stands: the digest says which it was.
            let written = ops.last().and_then(|(_, _, v)| v.clone());
            if self.engine.get(CF_META, state::DIGEST_KEY).ok().flatten() != written {
                return Err(e);
            }
        }
        for ((cf, k), tag) in now {
            match tag {
                Some(t) => state.rows.insert((cf_no(cf), k), t),
                None => state.rows.remove(&(cf_no(cf), k)),
            };
        }
        state.digest = Some(digest);
        self.state_generation
            .fetch_max(digest.generation, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the state digest's row is there (whatever it says).
    pub fn state_digest_exists(&self) -> Result<bool> {
        Ok(self.engine.get(CF_META, state::DIGEST_KEY)?.is_some())
    }

    /// The state digest's generation as last written (the next audit
    /// event names it if no event has yet).
    pub fn state_generation(&self) -> u64 {
        self.state_generation.load(Ordering::SeqCst)
    }

    /// Records in the digest that the trail up to `seq` (a durable
    /// checkpoint's, chain hash `hash`) names no later generation than the
    /// digest's: the next open reads the trail only after it. Only once
    /// this process checked the digest (before, the trail was not read)
    /// and only over the digest it keeps; only forward.
    pub fn note_trail_checked(&self, seq: u64, hash: [u8; 32]) -> Result<()> {
        // Only a step ahead: when a check or a write holds the digest, the
        // next checkpoint moves it.
        let Ok(mut state) = self.state.try_write() else {
            return Ok(());
        };
        let (Some(mut digest), true) = (state.digest, state.checked) else {
            return Ok(());
        };
        if seq <= digest.checked_at {
            return Ok(());
        }
        self.same_as_stored(&digest)?;
        digest.checked_at = seq;
        digest.checked_hash = hash;
        self.engine.write(&[self.digest_op(&digest)?], self.sync)?;
        state.digest = Some(digest);
        Ok(())
    }

    /// A covered row must be the one this process last wrote.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.digested(cf, key) {
            return self
                .engine
                .get(cf, key)?
                .map(|v| self.open_row(cf, key, v))
                .transpose();
        }
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let stored = self.engine.get(cf, key)?;
        if state.digest.is_some() {
            let tag = stored
                .as_deref()
                .map(|v| self.stored_tag(cf, key, v))
                .transpose()?;
            if tag != state.rows.get(&(cf_no(cf), key.to_vec())).copied() {
                return Err(Error::Integrity(ROW_CHANGED));
            }
            // Its MAC was checked just now: only taken off.
            return Ok(stored.map(without_tag));
        }
        stored.map(|v| self.open_row(cf, key, v)).transpose()
    }

    pub fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_synced(cf, key, value, false)
    }

    /// A put that is fsynced whatever the durability setting (disposal intents).
    pub fn put_synced(&self, cf: &str, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let value = self.seal_row(cf, key, value)?.into_owned();
        let r = self.commit(vec![(cf, key.to_vec(), Some(value))], self.sync || sync);
        self.changed(cf);
        r
    }

    /// Sets a negative control of the beacon purge (tests; cluster only).
    pub fn set_purge_control(&self, c: crate::keystore::PurgeControl) {
        self.engine.set_control(c);
    }

    /// Sets the size past which a purge splits a search-index partition
    /// (tests; cluster only).
    pub fn set_beacon_split_at(&self, bytes: u64) {
        self.engine.set_beacon_split_at(bytes);
    }

    /// Splits every search-index partition past the split size (a
    /// cluster only; maintenance): the partitions split.
    pub fn split_beacons(&self) -> Result<Vec<String>> {
        self.engine.split_beacons()
    }

    /// Moves disposed ciphertexts out of the engine's memory buffers; their
    /// old copies on disk are unreadable (keys destroyed).
    pub fn flush_records(&self) -> Result<()> {
        self.engine.flush_records()
    }

    pub fn delete(&self, cf: &str, key: &[u8]) -> Result<()> {
        let r = self.commit(vec![(cf, key.to_vec(), None)], self.sync);
        self.changed(cf);
        r
    }

    /// A delete that is not waited for on disk (nor, on a cluster, on a
    /// standby): only for a row whose loss in a crash is harmless, a write
    /// journal entry whose audit event is already in the trail (the next
    /// open finds it audited and removes it). Saves a put one synchronous
    /// commit of its three on a cluster.
    pub fn delete_lazily(&self, cf: &str, key: &[u8]) -> Result<()> {
        if self.digested(cf, key) {
            return self.delete(cf, key);
        }
        let r = self.engine.write_lazily(&[(cf, key.to_vec(), None)]);
        self.changed(cf);
        r
    }

    /// All (key, value) pairs of a column family whose key starts with `prefix`.
    /// In a covered table, the rows must be those this process last wrote:
    /// each one's MAC as kept, and none missing.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let state = self
            .covered_table(cf)
            .then(|| self.state.read().unwrap_or_else(|e| e.into_inner()));
        let kept = state.as_deref().filter(|s| s.digest.is_some());
        let mut out = Vec::new();
        let mut seen = 0usize;
        self.engine.scan(cf, prefix, &mut |k, v| {
            if let Some(kept) = kept.filter(|_| self.digested(cf, k)) {
                let tag = self.stored_tag(cf, k, v)?;
                if kept.rows.get(&(cf_no(cf), k.to_vec())) != Some(&tag) {
                    return Err(Error::Integrity(ROW_CHANGED));
                }
                seen += 1;
                out.push((k.to_vec(), without_tag(v.to_vec())));
                return Ok(true);
            }
            out.push((k.to_vec(), self.open_row(cf, k, v.to_vec())?));
            Ok(true)
        })?;
        if let Some(kept) = kept {
            let n = cf_no(cf);
            let expected = kept
                .rows
                .range((n, prefix.to_vec())..)
                .take_while(|((t, k), _)| *t == n && k.starts_with(prefix))
                .count();
            if expected != seen {
                return Err(Error::Integrity(ROW_CHANGED));
            }
        }
        Ok(out)
    }

    /// Calls `f` with every (key, value) pair of a column family, streaming.
    /// A covered table is read whole first and checked as
    /// [`Self::scan_prefix`] does, so that `f` runs with no lock held.
    pub fn for_each(&self, cf: &str, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        if self.covered_table(cf) {
            for (k, v) in self.scan_prefix(cf, &[])? {
                f(&k, &v)?;
            }
            return Ok(());
        }
        self.engine.scan(cf, &[], &mut |k, v| {
            if self.sealed(cf, k) {
                f(k, &self.open_row(cf, k, v.to_vec())?)?;
            } else {
                f(k, v)?;
            }
            Ok(true)
        })
    }

    /// `ops` with the rows of sealed column families sealed.
    fn sealed_ops<'o>(&self, ops: &[WriteOp<'o>]) -> Result<Vec<WriteOp<'o>>> {
        ops.iter()
            .map(|(cf, k, v)| {
                let v = match v {
                    Some(v) => Some(self.seal_row(cf, k, v)?.into_owned()),
                    None => None,
                };
                Ok((*cf, k.clone(), v))
            })
            .collect()
    }

    /// Applies puts (`Some(value)`) and deletes (`None`) atomically, synced;
    /// like `put` and `delete`, marks the caches of every touched column
    /// family stale (a restore writes schemas this way).
    pub fn write_ops(&self, ops: &[WriteOp<'_>]) -> Result<()> {
        let r = self.sealed_ops(ops).and_then(|ops| self.commit(ops, true));
        for (cf, _, _) in ops {
            self.changed(cf);
        }
        r
    }

    pub fn record(&self, id: RecordId) -> Result<Option<RecordRow>> {
        self.engine
            .get(CF_RECORDS, id.as_bytes())?
            .map(|b| RecordRow::decode(&b))
            .transpose()
    }

    /// The record rows of many IDs, in the order given, read in batches.
    pub fn records(&self, ids: &[RecordId]) -> Result<Vec<Option<RecordRow>>> {
        let keys: Vec<&[u8]> = ids.iter().map(|i| &i.as_bytes()[..]).collect();
        self.engine
            .multi_get(CF_RECORDS, &keys)?
            .into_iter()
            .map(|r| r.map(|b| RecordRow::decode(&b)).transpose())
            .collect()
    }

    /// Writes a record row, its index entries (`new`) and `extra` writes
    /// (the journal entry, a dirty-bucket mark) in one atomic batch.
    pub fn put_record_with(
        &self,
        id: RecordId,
        row: &RecordRow,
        new: bool,
        extra: &[WriteOp<'_>],
    ) -> Result<()> {
        let mut ops = self.sealed_ops(extra)?;
        ops.push((CF_RECORDS, id.as_bytes().to_vec(), Some(row.encode())));
        if new {
            let mut sk = row.subject.as_bytes().to_vec();
            sk.extend_from_slice(id.as_bytes());
            ops.push((CF_BY_SUBJECT, sk, Some(Vec::new())));
            let mut ck = collection_prefix(&row.collection);
            ck.extend_from_slice(id.as_bytes());
            ops.push((CF_BY_COLLECTION, ck, Some(Vec::new())));
        }
        self.commit(ops, self.sync)
    }

    /// Removes a record row, its index entries and its journal entry
    /// atomically (undoing a creation whose audit event could not be written),
    /// with `extra` writes (its beacon rows).
    pub fn delete_new_record(
        &self,
        id: RecordId,
        row: &RecordRow,
        extra: &[WriteOp<'_>],
    ) -> Result<()> {
        let mut ops = self.sealed_ops(extra)?;
        ops.push((CF_JOURNAL, id.as_bytes().to_vec(), None));
        ops.push((CF_RECORDS, id.as_bytes().to_vec(), None));
        let mut sk = row.subject.as_bytes().to_vec();
        sk.extend_from_slice(id.as_bytes());
        ops.push((CF_BY_SUBJECT, sk, None));
        let mut ck = collection_prefix(&row.collection);
        ck.extend_from_slice(id.as_bytes());
        ops.push((CF_BY_COLLECTION, ck, None));
        self.commit(ops, self.sync)
    }

    /// Values of the rows whose key starts with `prefix`, at most `limit`
    /// (`None` past it): a beacon lookup reads only its own rows.
    pub fn values_under(
        &self,
        cf: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let mut out = Vec::new();
        let mut over = false;
        self.engine.scan(cf, prefix, &mut |_, v| {
            if out.len() == limit {
                over = true;
                return Ok(false);
            }
            out.push(v.to_vec());
            Ok(true)
        })?;
        Ok((!over).then_some(out))
    }

    /// Physical purge of the beacon rows a disposal deleted under `ranges`
    /// (key prefixes; `None`: a resumed batch no longer knows them).
    pub fn purge_beacons(&self, ranges: Option<&[Vec<u8>]>) -> Result<BeaconPurge> {
        self.engine.purge_beacons(ranges)
    }

    /// The places that can hold a beacon row under `ranges` that contain
    /// any of `needles`, and how many were read. The needles are the
    /// deleted rows' tags, which are only ever written in values.
    /// `wal_after`: the purge's [`BeaconPurge::wal_floor`].
    pub fn files_holding_beacons(
        &self,
        ranges: &[Vec<u8>],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<crate::keystore::ByteScan> {
        self.engine
            .files_holding_beacons(ranges, needles, wal_after)
    }

    /// Which of `copies` (files an earlier beacon scan found tags in) are
    /// still there.
    pub(crate) fn copies_present(
        &self,
        copies: &[crate::keystore::FoundCopy],
    ) -> Result<Vec<crate::keystore::FoundCopy>> {
        self.engine.copies_present(copies)
    }

    pub fn records_of_subject(&self, s: SubjectId) -> Result<Vec<RecordId>> {
        self.scan_prefix(CF_BY_SUBJECT, s.as_bytes())?
            .into_iter()
            .map(|(k, _)| RecordId::from_slice(&k[16..]))
            .collect()
    }

    pub fn records_of_collection(&self, c: &CollectionName) -> Result<Vec<RecordId>> {
        let p = collection_prefix(c);
        self.scan_prefix(CF_BY_COLLECTION, &p)?
            .into_iter()
            .map(|(k, _)| RecordId::from_slice(&k[p.len()..]))
            .collect()
    }

    pub fn all_records(&self) -> Result<Vec<RecordId>> {
        self.scan_prefix(CF_RECORDS, &[])?
            .into_iter()
            .map(|(k, _)| RecordId::from_slice(&k))
            .collect()
    }
}

/// What the purge of the beacon column family found (certificate evidence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BeaconPurge {
    /// Open snapshots of the records database.
    pub snapshots: u64,
    /// Deletion markers left in live beacon table files meeting the ranges
    /// (keys only, never a tag or a record ID; reported, not a failure).
    pub tombstones: u64,
    /// Obsolete table files and WALs still on disk (must be none).
    pub residue_files: Vec<String>,
    /// WAL files present.
    pub wal_files: u64,
    /// Key ranges compacted.
    pub ranges: u64,
    /// Whether the whole column family was compacted instead.
    pub whole_family: bool,
    /// Time the purge took.
    pub duration_ms: u64,
    /// A cluster's members as the purge left them (empty when embedded).
    pub members: Vec<crate::keystore::MemberEvidence>,
    /// A cluster's WAL segment that held the purge's last write (`None`
    /// when embedded): the byte scan reads no later segment.
    pub wal_floor: Option<String>,
    /// A cluster's search-index partitions the purge split instead of
    /// rewriting (each "`name` into `n` partitions").
    pub split: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A vault sealed by the first row MACs (its user rows sealed, its
    /// holds and pending requests not): the second sealing seals those
    /// once, leaves the rest alone (a user row sealed twice would fail),
    /// and starts a digest that adds up; a later covered write keeps it,
    /// and a row deleted behind the store's back is caught.
    #[test]
    fn a_vault_sealed_before_the_configuration_rows_is_sealed_once_and_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        store.set_row_key(crate::secret::SecretKey::from_bytes([7; 32]));
        let user = store.seal_row(CF_USERS, b"u", b"{}").unwrap().into_owned();
        store
            .engine
            .write(
                &[
                    (CF_USERS, b"u".to_vec(), Some(user)),
                    (CF_HOLDS, b"h".to_vec(), Some(b"hold".to_vec())),
                    (CF_META, b"pending/1".to_vec(), Some(b"req".to_vec())),
                    (CF_META, b"source/x".to_vec(), Some(b"t".to_vec())),
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.seal_rows(true, &[b"rows_sealed_v2"]).unwrap(), 2);
        assert_eq!(store.get(CF_USERS, b"u").unwrap().unwrap(), b"{}");
        assert_eq!(store.get(CF_HOLDS, b"h").unwrap().unwrap(), b"hold");
        assert_eq!(store.get(CF_META, b"pending/1").unwrap().unwrap(), b"req");
        assert_eq!(store.get(CF_META, b"source/x").unwrap().unwrap(), b"t");
        assert_eq!(store.check_state().unwrap().rows, 3);
        store.put(CF_HOLDS, b"h2", b"another").unwrap();
        store.delete(CF_META, b"pending/1").unwrap();
        let d = store.check_state().unwrap();
        assert_eq!((d.rows, d.generation), (3, 2));
        store
            .engine
            .write(&[(CF_HOLDS, b"h".to_vec(), None)], true)
            .unwrap();
        assert!(
            matches!(store.check_state(), Err(Error::Integrity(m)) if m.contains("no longer adds up"))
        );
    }

    /// A vault sealed before its disposal batches were (`rows_sealed_v2`):
    /// the digest is checked without their rows, then they are sealed and
    /// folded in as one more generation, once; from then on a batch row
    /// edited or deleted behind the store's back is caught.
    #[test]
    fn disposal_batches_of_a_vault_sealed_before_them_are_sealed_once_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), false).unwrap();
        store.set_row_key(crate::secret::SecretKey::from_bytes([7; 32]));
        // As a build before `rows_sealed_v3` left it.
        store.disposals_unsealed_until_sealed();
        let (b1, b2) = (
            &b"{\"step\":\"complete\"}"[..],
            &b"{\"step\":\"intent\"}"[..],
        );
        store
            .engine
            .write(
                &[
                    (CF_HOLDS, b"h".to_vec(), Some(b"hold".to_vec())),
                    (CF_DISPOSALS, b"b1".to_vec(), Some(b1.to_vec())),
                    (CF_DISPOSALS, b"b2".to_vec(), Some(b2.to_vec())),
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.seal_rows(true, &[b"rows_sealed_v2"]).unwrap(), 1);
        assert_eq!(store.get(CF_DISPOSALS, b"b1").unwrap().unwrap(), b1);
        assert!(
            store.seal_disposals(META_ROWS_SEALED_V3).is_err(),
            "sealed before the digest without them was checked"
        );
        let before = store.check_state().unwrap();
        assert_eq!((before.rows, before.generation), (1, 0));
        assert_eq!(store.seal_disposals(META_ROWS_SEALED_V3).unwrap(), 2);
        assert!(store.get(CF_META, META_ROWS_SEALED_V3).unwrap().is_some());
        assert_eq!(store.get(CF_DISPOSALS, b"b1").unwrap().unwrap(), b1);
        // The hold, the two batches and the mark itself.
        let after = store.check_state().unwrap();
        assert_eq!((after.rows, after.generation), (4, 1));
        assert!(
            store.seal_disposals(META_ROWS_SEALED_V3).is_err(),
            "sealed twice"
        );
        store
            .put(CF_DISPOSALS, b"b2", b"{\"step\":\"keys_deleted\"}")
            .unwrap();
        assert_eq!(store.check_state().unwrap().generation, 2);
        store
            .engine
            .write(&[(CF_DISPOSALS, b"b2".to_vec(), Some(b2.to_vec()))], true)
            .unwrap();
        assert!(
            matches!(store.check_state(), Err(Error::Integrity(m)) if m.contains("fails its MAC"))
        );
        let sealed_b1 = store.engine.get(CF_DISPOSALS, b"b1").unwrap().unwrap();
        store
            .engine
            .write(&[(CF_DISPOSALS, b"b2".to_vec(), None)], true)
            .unwrap();
        assert!(
            matches!(store.check_state(), Err(Error::Integrity(m)) if m.contains("no longer adds up"))
        );
        assert!(sealed_b1.ends_with(&store.row_tag(CF_DISPOSALS, b"b1", b1).unwrap()));
        // The mark deleted, the batch rows whole again: still not adding up.
        let put_back = store.seal_row(CF_DISPOSALS, b"b2", b"{\"step\":\"keys_deleted\"}");
        store
            .engine
            .write(
                &[
                    (
                        CF_DISPOSALS,
                        b"b2".to_vec(),
                        Some(put_back.unwrap().into_owned()),
                    ),
                    (CF_META, META_ROWS_SEALED_V3.to_vec(), None),
                ],
                true,
            )
            .unwrap();
        assert!(
            matches!(store.check_state(), Err(Error::Integrity(m)) if m.contains("no longer adds up"))
        );
    }

    proptest! {
        #[test]
        fn record_rows_round_trip(version in any::<u32>(), created in any::<i64>(), updated in any::<i64>(),
                                  env in proptest::collection::vec(any::<u8>(), 0..300), disposed in any::<bool>(),
                                  coll in "[a-z][a-z0-9_-]{0,20}") {
            let row = RecordRow {
                format: if disposed { ROW_V1 } else { ROW_V2 },
                collection: CollectionName::parse(&coll).unwrap(),
                subject: SubjectId::new(),
                version, created_ms: created, updated_ms: updated,
                created_by: UserId::new(),
                state: if disposed { RecordState::Disposed { certificate: Some(RecordId::new().to_string()) } } else { RecordState::Live },
                envelope: env,
            };
            prop_assert_eq!(RecordRow::decode(&row.encode()).unwrap(), row);
        }

        #[test]
        fn record_row_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RecordRow::decode(&bytes);
        }
    }
}
