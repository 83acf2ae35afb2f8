//! The records database: one table per kind of row, on an engine behind
//! the [`engine::RowEngine`] seam (RocksDB in the vault directory by
//! default, or a PostgreSQL cluster). Row MACs, the record row's encoding
//! and the subject and collection indexes live here, above the seam.
//!
//! Nothing stored here is plaintext personal information: record bodies are
//! AES-256-GCM envelopes, everything else is IDs, names of collections and
//! users, hashes and timestamps.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId, SubjectId, UserId};

pub(crate) mod engine;
pub mod postgres;
mod rocks;

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
/// vault's secrets (`Store::row_tag`): who may sign in, and as whom. Without
/// it, someone with the files but not the passphrase could plant a session
/// row under a token they chose (a login as any user) or rewrite a role.
/// The incident register is sealed too, so that a row rewritten outside
/// the vault (an incident made smaller) fails to read.
const SEALED_CFS: [&str; 4] = [CF_USERS, CF_USERNAMES, CF_SESSIONS, CF_INCIDENTS];
/// Keys of the meta column family whose rows are sealed like those of
/// [`SEALED_CFS`]: settings an insider with the files would lower to get
/// in (the two-factor policy).
pub(crate) const SEALED_META_PREFIX: &[u8] = b"sealed/";

/// Whether a row carries a MAC.
fn sealed(cf: &str, key: &[u8]) -> bool {
    SEALED_CFS.contains(&cf) || (cf == CF_META && key.starts_with(SEALED_META_PREFIX))
}
/// Bytes of a row MAC.
const ROW_TAG_LEN: usize = 32;
/// The error of a row whose MAC fails.
const TAMPERED_ROW: &str = "a user or session row, an incident row or a sealed setting of the records database fails its MAC (written without the vault's key)";
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
        }
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
        let _ = self.row_key.set(key);
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
        if !sealed(cf, key) {
            return Ok(std::borrow::Cow::Borrowed(value));
        }
        let mut v = value.to_vec();
        v.extend_from_slice(&self.row_tag(cf, key, value)?);
        Ok(std::borrow::Cow::Owned(v))
    }

    /// A stored value without its MAC, checked (in constant time); a row
    /// whose MAC fails was written by someone without the key.
    fn open_row(&self, cf: &str, key: &[u8], mut stored: Vec<u8>) -> Result<Vec<u8>> {
        if !sealed(cf, key) {
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

    /// Seals every row of the sealed column families written without a
    /// MAC (a vault from before row MACs), in one synced batch.
    pub fn seal_legacy_rows(&self) -> Result<usize> {
        let mut ops: Vec<WriteOp<'_>> = Vec::new();
        for cf in SEALED_CFS {
            self.engine.scan(cf, &[], &mut |k, v| {
                ops.push((cf, k.to_vec(), Some(self.seal_row(cf, k, v)?.into_owned())));
                Ok(true)
            })?;
        }
        let n = ops.len();
        let r = self.engine.write(&ops, true);
        for cf in SEALED_CFS {
            self.changed(cf);
        }
        r?;
        Ok(n)
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine
            .get(cf, key)?
            .map(|v| self.open_row(cf, key, v))
            .transpose()
    }

    pub fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_synced(cf, key, value, false)
    }

    /// A put that is fsynced whatever the durability setting (disposal intents).
    pub fn put_synced(&self, cf: &str, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let value = self.seal_row(cf, key, value)?.into_owned();
        let r = self
            .engine
            .write(&[(cf, key.to_vec(), Some(value))], self.sync || sync);
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
        let r = self.engine.write(&[(cf, key.to_vec(), None)], self.sync);
        self.changed(cf);
        r
    }

    /// A delete that is not waited for on disk (nor, on a cluster, on a
    /// standby): only for a row whose loss in a crash is harmless, a write
    /// journal entry whose audit event is already in the trail (the next
    /// open finds it audited and removes it). Saves a put one synchronous
    /// commit of its three on a cluster.
    pub fn delete_lazily(&self, cf: &str, key: &[u8]) -> Result<()> {
        let r = self.engine.write_lazily(&[(cf, key.to_vec(), None)]);
        self.changed(cf);
        r
    }

    /// All (key, value) pairs of a column family whose key starts with `prefix`.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.engine.scan(cf, prefix, &mut |k, v| {
            out.push((k.to_vec(), self.open_row(cf, k, v.to_vec())?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `f` with every (key, value) pair of a column family, streaming.
    pub fn for_each(&self, cf: &str, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        self.engine.scan(cf, &[], &mut |k, v| {
            if sealed(cf, k) {
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
        let r = self
            .sealed_ops(ops)
            .and_then(|ops| self.engine.write(&ops, true));
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
        self.engine.write(&ops, self.sync)
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
        self.engine.write(&ops, self.sync)
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
