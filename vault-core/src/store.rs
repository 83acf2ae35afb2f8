//! The records database: RocksDB with one column family per kind of row.
//! All RocksDB calls for records, users, sessions and metadata live here,
//! behind a narrow interface, so another engine can be added later.
//!
//! Nothing stored here is plaintext personal information: record bodies are
//! AES-256-GCM envelopes, everything else is IDs, names of collections and
//! users, hashes and timestamps.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId, SubjectId, UserId};

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
/// The live table files of a database, the files in its directory no
/// live version needs (table files outside the live set, write-ahead logs
/// below the oldest one still needed), and how many write-ahead logs there
/// are: what a purge waits to see deleted, and calls residue otherwise.
pub(crate) fn obsolete_files(db: &DB) -> Result<(Vec<rocksdb::LiveFile>, Vec<String>, u64)> {
    let live = db.live_files()?;
    let live_names: std::collections::HashSet<String> = live
        .iter()
        .map(|f| f.name.trim_start_matches('/').to_owned())
        .collect();
    let min_log = db
        .property_int_value(rocksdb::properties::MIN_LOG_NUMBER_TO_KEEP)?
        .unwrap_or(0);
    let mut residue = Vec::new();
    let mut wal_files = 0;
    for e in std::fs::read_dir(db.path()).map_err(|e| Error::io_at(db.path(), e))? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n.ends_with(".sst") && !live_names.contains(&n) {
            residue.push(n);
        } else if let Some(num) = n.strip_suffix(".log").and_then(|x| x.parse::<u64>().ok()) {
            wal_files += 1;
            if num < min_log {
                residue.push(n);
            }
        }
    }
    Ok((live, residue, wal_files))
}

const ALL_CFS: [&str; 19] = [
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
    db: DB,
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
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

pub(crate) fn collection_prefix(c: &CollectionName) -> Vec<u8> {
    let mut k = c.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

/// All memtables of the records database together (and so the WAL's
/// preallocation): see [`Store::open`].
const RECORDS_MEMTABLE_BUDGET: usize = 8 * 1024 * 1024;

impl Store {
    pub fn open(path: &Path, sync: bool) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.set_recycle_log_file_num(0);
        opts.set_keep_log_file_num(4);
        // RocksDB fallocates each WAL at 1.1 × the largest memtable (64 MiB
        // by default, so ~70 MiB a WAL) and 4 MiB for each MANIFEST; on ext4
        // a failed fallocate keeps the blocks it grabbed, so `pivault init`
        // failed on a 40 MB volume with 30 MB free (issue 13). A budget of
        // 8 MiB for all memtables together caps the WAL preallocation at
        // 8 MiB and flushes a small business's writes often enough.
        opts.set_db_write_buffer_size(RECORDS_MEMTABLE_BUDGET);
        opts.set_manifest_preallocation_size(crate::keystore::SMALL_MANIFEST_PREALLOCATION);
        let cfs = ALL_CFS.map(|n| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::None);
            if n == CF_BEACONS {
                // Shaped like the keystore's (see `keystore_options`): a
                // disposal's purge compacts the ranges of the beacons it
                // deleted, and small files and a small base level bound what
                // that rewrites and what the byte scan reads.
                o.set_level_compaction_dynamic_level_bytes(true);
                o.set_max_bytes_for_level_base(1024 * 1024);
                o.set_target_file_size_base(256 * 1024);
                o.set_target_file_size_multiplier(1);
            }
            ColumnFamilyDescriptor::new(n, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Store {
            db,
            sync,
            users_gen: AtomicU64::new(0),
            collections_gen: AtomicU64::new(0),
            row_key: std::sync::OnceLock::new(),
        })
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

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn wo(&self) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.sync);
        w
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
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for cf in SEALED_CFS {
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (k, v) = item?;
                batch.put_cf(self.cf(cf), &k, self.seal_row(cf, &k, &v)?);
                n += 1;
            }
        }
        let mut w = self.wo();
        w.set_sync(true);
        self.db.write_opt(batch, &w)?;
        for cf in SEALED_CFS {
            self.changed(cf);
        }
        Ok(n)
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf), key)?
            .map(|v| self.open_row(cf, key, v))
            .transpose()
    }

    pub fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let value = self.seal_row(cf, key, value)?;
        let r = self.db.put_cf_opt(self.cf(cf), key, value, &self.wo());
        self.changed(cf);
        r?;
        Ok(())
    }

    /// A put that is fsynced whatever the durability setting (disposal intents).
    pub fn put_synced(&self, cf: &str, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let mut w = self.wo();
        w.set_sync(self.sync || sync);
        let value = self.seal_row(cf, key, value)?;
        let r = self.db.put_cf_opt(self.cf(cf), key, value, &w);
        self.changed(cf);
        r?;
        Ok(())
    }

    /// Flushes the record column family so disposed ciphertexts leave the
    /// memtable; their old SST copies are unreadable (keys destroyed) and go
    /// at the next compaction.
    pub fn flush_records(&self) -> Result<()> {
        self.db.flush_cf(self.cf(CF_RECORDS))?;
        Ok(())
    }

    pub fn delete(&self, cf: &str, key: &[u8]) -> Result<()> {
        let r = self.db.delete_cf_opt(self.cf(cf), key, &self.wo());
        self.changed(cf);
        r?;
        Ok(())
    }

    /// All (key, value) pairs of a column family whose key starts with `prefix`.
    pub fn scan_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let v = self.open_row(cf, &k, v.to_vec())?;
            out.push((k.to_vec(), v));
        }
        Ok(out)
    }

    /// Calls `f` with every (key, value) pair of a column family, streaming.
    pub fn for_each(&self, cf: &str, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            if sealed(cf, &k) {
                f(&k, &self.open_row(cf, &k, v.to_vec())?)?;
            } else {
                f(&k, &v)?;
            }
        }
        Ok(())
    }

    /// Applies puts (`Some(value)`) and deletes (`None`) atomically, synced;
    /// like `put` and `delete`, marks the caches of every touched column
    /// family stale (a restore writes schemas this way).
    pub fn write_ops(&self, ops: &[WriteOp<'_>]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (cf, k, v) in ops {
            match v {
                Some(v) => batch.put_cf(self.cf(cf), k, self.seal_row(cf, k, v)?),
                None => batch.delete_cf(self.cf(cf), k),
            }
        }
        let mut w = self.wo();
        w.set_sync(true);
        let r = self.db.write_opt(batch, &w);
        for (cf, _, _) in ops {
            self.changed(cf);
        }
        r?;
        Ok(())
    }

    pub fn record(&self, id: RecordId) -> Result<Option<RecordRow>> {
        // Pinned: decoded straight from RocksDB's buffer, one copy fewer.
        self.db
            .get_pinned_cf(self.cf(CF_RECORDS), id.as_bytes())?
            .map(|b| RecordRow::decode(&b))
            .transpose()
    }

    /// The record rows of many IDs, in the order given: RocksDB's batched
    /// MultiGet over the sorted keys, which reads each data block once for
    /// all the keys in it (a disposal plan over a whole collection).
    pub fn records(&self, ids: &[RecordId]) -> Result<Vec<Option<RecordRow>>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&i| ids[i]);
        let mut out: Vec<Option<RecordRow>> = (0..ids.len()).map(|_| None).collect();
        for chunk in order.chunks(4096) {
            let keys: Vec<&[u8]> = chunk.iter().map(|&i| &ids[i].as_bytes()[..]).collect();
            let got = self
                .db
                .batched_multi_get_cf(self.cf(CF_RECORDS), keys.iter(), true);
            for (&i, r) in chunk.iter().zip(got) {
                out[i] = r?.map(|b| RecordRow::decode(&b)).transpose()?;
            }
        }
        Ok(out)
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
        let mut batch = WriteBatch::default();
        for (cf, k, v) in extra {
            match v {
                Some(v) => batch.put_cf(self.cf(cf), k, v),
                None => batch.delete_cf(self.cf(cf), k),
            }
        }
        batch.put_cf(self.cf(CF_RECORDS), id.as_bytes(), row.encode());
        if new {
            let mut sk = row.subject.as_bytes().to_vec();
            sk.extend_from_slice(id.as_bytes());
            batch.put_cf(self.cf(CF_BY_SUBJECT), sk, []);
            let mut ck = collection_prefix(&row.collection);
            ck.extend_from_slice(id.as_bytes());
            batch.put_cf(self.cf(CF_BY_COLLECTION), ck, []);
        }
        self.db.write_opt(batch, &self.wo())?;
        Ok(())
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
        let mut batch = WriteBatch::default();
        for (cf, k, v) in extra {
            match v {
                Some(v) => batch.put_cf(self.cf(cf), k, v),
                None => batch.delete_cf(self.cf(cf), k),
            }
        }
        batch.delete_cf(self.cf(CF_JOURNAL), id.as_bytes());
        batch.delete_cf(self.cf(CF_RECORDS), id.as_bytes());
        let mut sk = row.subject.as_bytes().to_vec();
        sk.extend_from_slice(id.as_bytes());
        batch.delete_cf(self.cf(CF_BY_SUBJECT), sk);
        let mut ck = collection_prefix(&row.collection);
        ck.extend_from_slice(id.as_bytes());
        batch.delete_cf(self.cf(CF_BY_COLLECTION), ck);
        self.db.write_opt(batch, &self.wo())?;
        Ok(())
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
        for item in self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if out.len() == limit {
                return Ok(None);
            }
            out.push(v.to_vec());
        }
        Ok(Some(out))
    }

    /// Physical purge of the beacon column family after a disposal deleted
    /// rows under `ranges` (key prefixes): every column family flushed (a
    /// WAL is released only when all that share it have flushed), each range
    /// compacted to the bottommost level (the whole column family past 64
    /// ranges, or when `ranges` is `None`: a resumed batch no longer knows
    /// them), then polled until no obsolete table file or WAL remains.
    pub fn purge_beacons(&self, ranges: Option<&[Vec<u8>]>) -> Result<BeaconPurge> {
        let start = std::time::Instant::now();
        let cfs: Vec<&rocksdb::ColumnFamily> = ALL_CFS.iter().map(|n| self.cf(n)).collect();
        let mut fo = rocksdb::FlushOptions::default();
        fo.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &fo)?;
        let mut co = rocksdb::CompactOptions::default();
        co.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
        let mut sorted = ranges.unwrap_or_default().to_vec();
        sorted.sort();
        sorted.dedup();
        let whole = ranges.is_none() || sorted.len() > 64;
        if whole {
            self.db
                .compact_range_cf_opt(self.cf(CF_BEACONS), None::<&[u8]>, None::<&[u8]>, &co);
        } else {
            for r in &sorted {
                self.db
                    .compact_range_cf_opt(self.cf(CF_BEACONS), Some(r), Some(range_end(r)), &co);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pause = std::time::Duration::from_millis(1);
        let mut ev = self.beacon_purge_checks(&sorted, whole)?;
        while !ev.residue_files.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
            ev = self.beacon_purge_checks(&sorted, whole)?;
        }
        ev.ranges = sorted.len() as u64;
        ev.whole_family = whole;
        ev.duration_ms = start.elapsed().as_millis() as u64;
        Ok(ev)
    }

    fn beacon_purge_checks(&self, ranges: &[Vec<u8>], whole: bool) -> Result<BeaconPurge> {
        use rocksdb::properties as P;
        let (live, residue, wal_files) = crate::store::obsolete_files(&self.db)?;
        let tombstones = live
            .iter()
            .filter(|f| f.column_family_name == CF_BEACONS && (whole || covers_any(f, ranges)))
            .map(|f| f.num_deletions)
            .sum();
        Ok(BeaconPurge {
            snapshots: self
                .db
                .property_int_value(P::NUM_SNAPSHOTS)?
                .unwrap_or(u64::MAX),
            tombstones,
            residue_files: residue,
            wal_files,
            ranges: 0,
            whole_family: false,
            duration_ms: 0,
        })
    }

    /// The files of the records directory that can hold a beacon row under
    /// `ranges` (every non-table file, every table file outside the live
    /// set, every live beacon table file whose key range meets a range) that
    /// contain any of `needles`, and how many files were read. The needles
    /// are the deleted rows' tags, which are only ever written in values.
    pub fn files_holding_beacons(
        &self,
        ranges: &[Vec<u8>],
        needles: &[Vec<u8>],
    ) -> Result<(Vec<String>, u64)> {
        let live = self.db.live_files()?;
        let skip: std::collections::HashSet<String> = live
            .iter()
            .filter(|f| f.column_family_name != CF_BEACONS || !covers_any(f, ranges))
            .map(|f| f.name.trim_start_matches('/').to_owned())
            .collect();
        let mut hits = Vec::new();
        let mut read = 0;
        for e in std::fs::read_dir(self.db.path())? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if skip.contains(&name) || e.path().is_dir() {
                continue;
            }
            let bytes = match std::fs::read(e.path()) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            read += 1;
            if crate::keystore::contains_any(&bytes, needles) {
                hits.push(name);
            }
        }
        hits.sort();
        Ok((hits, read))
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
}

/// The last key under a beacon prefix: the prefix and a row ID of 0xff bytes.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    e.extend_from_slice(&[0xff; 20]);
    e
}

/// Whether a live table file's key range meets any of `ranges` (prefixes).
fn covers_any(f: &rocksdb::LiveFile, ranges: &[Vec<u8>]) -> bool {
    let (Some(lo), Some(hi)) = (&f.start_key, &f.end_key) else {
        return true;
    };
    ranges
        .iter()
        .any(|r| lo.as_slice() <= range_end(r).as_slice() && hi.as_slice() >= r.as_slice())
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
