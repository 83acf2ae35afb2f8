//! The keystore: a second, small RocksDB instance holding only wrapped keys
//! (DESIGN §3, §4.1). Bucket keys are wrapped by the epoch root key; one data
//! key (DEK) per record version is wrapped by its subject's bucket key.
//!
//! Its options are the ones the disposal purge depends on (DESIGN §4.2): no
//! WAL recycling, no WAL archive, no compression, small SST files. Key names
//! are bucket numbers and record IDs only — never personal information,
//! because a deleted key's name lingers in the MANIFEST until reopen.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

use crate::crypto::{self, Aad};
use crate::error::{Error, Result};
use crate::ids::{RecordId, SubjectId, VaultId};
use crate::secret::SecretKey;

const CF_BUCKETS: &str = "buckets";
const CF_DEKS: &str = "deks";
/// Per-backup keys K_b (wrapped by the epoch root), keyed by backup ID.
const CF_BACKUPS: &str = "backups";

/// Storage of wrapped keys, with an in-memory cache of unwrapped bucket keys
/// (RAM only, zeroized on drop, cleared at every epoch ratchet).
pub struct Keystore {
    db: DB,
    vault: VaultId,
    buckets: u32,
    sync: bool,
    cache: RwLock<HashMap<u32, SecretKey>>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

/// The options every keystore is opened with; see the module doc for why.
pub fn keystore_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_recycle_log_file_num(0);
    o.set_wal_ttl_seconds(0);
    o.set_wal_size_limit_mb(0);
    o.set_compression_type(rocksdb::DBCompressionType::None);
    // The purge compacts the touched bucket ranges down to the last level.
    // A compaction rewrites whole files, and a flushed memtable is one L0
    // file spanning every bucket written since the last flush, which RocksDB
    // merges with every overlapping file of the level below it. So: small
    // memtables (the L0 file is bounded), a small base level (what that L0
    // file is merged with is bounded, ~1 MiB, whatever the vault size: with
    // dynamic level sizing the levels below grow ×10 each) and small table
    // files (below the base level a touched range is one or two files per
    // level, and the verification scan reads only those). The work per purge
    // is then bounded by these sizes and the number of levels (logarithmic),
    // not by the number of keys in the vault.
    o.set_write_buffer_size(2 * 1024 * 1024);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_max_bytes_for_level_base(1024 * 1024);
    o.set_target_file_size_base(256 * 1024);
    o.set_target_file_size_multiplier(1);
    // The info LOG is scanned by every verification (it is not a table
    // file): bounded, not growing with every purge.
    o.set_max_log_file_size(256 * 1024);
    o.set_keep_log_file_num(2);
    // RocksDB fallocates 4 MiB for each MANIFEST by default, and on ext4 a
    // failed fallocate keeps what it grabbed: a small volume filled up
    // before anything was written (issue 13).
    o.set_manifest_preallocation_size(SMALL_MANIFEST_PREALLOCATION);
    // The WAL is fallocated at 1.1 × the largest memtable of any column
    // family, capped by the total budget: 4 MiB, not ~70 MiB (measured on
    // a 40 MB ext4 volume: 23 MiB grabbed by a failed fallocate).
    o.set_db_write_buffer_size(4 * 1024 * 1024);
    o
}

/// The MANIFEST preallocation of both databases (RocksDB's default is 4 MiB).
pub(crate) const SMALL_MANIFEST_PREALLOCATION: usize = 256 * 1024;

/// A bucket rotation planned by [`Keystore::plan_rotation`], not yet written.
pub(crate) struct Rotation {
    batch: WriteBatch,
    buckets: Vec<u32>,
    /// Surviving data keys re-wrapped under the new bucket keys.
    pub rewrapped: u64,
    /// Data keys deleted, as (record, version).
    pub deleted: Vec<(RecordId, u32)>,
    /// The wrapped bytes of the deleted keys, as stored: what the
    /// verification byte scan must no longer find (held in memory only).
    pub deleted_wrapped: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("buckets", &self.buckets.len())
            .field("rewrapped", &self.rewrapped)
            .field("deleted", &self.deleted.len())
            .finish()
    }
}

/// What the physical purge found; recorded in the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeEvidence {
    /// Open snapshots (must be 0).
    pub snapshots: u64,
    /// `rocksdb.num-live-versions` of the DEK column family (must be 1: nothing pins old files).
    pub live_versions_deks: u64,
    /// Tombstones left in live DEK files overlapping the touched buckets (must be 0).
    pub tombstones_in_touched_ranges: u64,
    /// Files on disk outside the live set: SSTs not live, WALs below min-log-number-to-keep (must be none).
    pub residue_files: Vec<String>,
    /// Live SST files after the purge.
    pub live_sst_files: u64,
    /// WAL files present.
    pub wal_files: u64,
    /// Buckets whose key range was force-compacted.
    pub compacted_buckets: u64,
    /// Time the purge took.
    pub duration_ms: u64,
}

impl PurgeEvidence {
    /// Whether every purge check passed.
    pub fn clean(&self) -> bool {
        self.snapshots == 0
            && self.live_versions_deks == 1
            && self.tombstones_in_touched_ranges == 0
            && self.residue_files.is_empty()
    }
}

/// Hasher for the 8-byte prefixes of [`contains_any`]: one multiply (the
/// keys are random ciphertext bytes, so no hash flooding to defend against;
/// SipHash made the scan of a batch's files ~10x slower).
#[derive(Default, Clone, Copy)]
struct PrefixHash;

#[derive(Default)]
struct PrefixHasher(u64);

impl std::hash::BuildHasher for PrefixHash {
    type Hasher = PrefixHasher;
    fn build_hasher(&self) -> PrefixHasher {
        PrefixHasher(0)
    }
}

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 32;
    }
}

/// Whether `hay` contains any of `needles`, in one pass per needle length:
/// the 8-byte prefix of every window is looked up in a hash set, and only a
/// prefix hit is compared in full. A batch of 10,000 wrapped keys is then
/// searched in time proportional to the file, not to file × keys.
pub fn contains_any(hay: &[u8], needles: &[Vec<u8>]) -> bool {
    use std::collections::{BTreeMap, HashMap};
    let mut by_len: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
    for n in needles.iter().filter(|n| !n.is_empty()) {
        by_len.entry(n.len()).or_default().push(n);
    }
    for (len, group) in by_len {
        if len > hay.len() {
            continue;
        }
        if len < 8 || group.len() < 4 {
            if group.iter().any(|n| hay.windows(len).any(|w| w == *n)) {
                return true;
            }
            continue;
        }
        let mut prefixes: HashMap<u64, Vec<&[u8]>, PrefixHash> = HashMap::default();
        for n in group {
            prefixes
                .entry(u64::from_le_bytes(n[..8].try_into().expect("8 bytes")))
                .or_default()
                .push(n);
        }
        for w in hay.windows(len) {
            if let Some(c) = prefixes.get(&u64::from_le_bytes(w[..8].try_into().expect("8 bytes")))
                && c.contains(&w)
            {
                return true;
            }
        }
    }
    false
}

/// Recursively scans `dir` for files holding any needle; files that vanish
/// mid-scan (obsolete-file deletion) are skipped.
pub fn scan_dir(dir: &Path, needles: &[Vec<u8>]) -> Result<Vec<String>> {
    let mut hits = Vec::new();
    if needles.is_empty() {
        return Ok(hits);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if contains_any(&bytes, needles) {
                hits.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    hits.sort();
    Ok(hits)
}

fn bucket_aad(vault: VaultId, bucket: u32, epoch: u64) -> Aad {
    Aad::new("bucket")
        .part(vault.as_bytes())
        .part(&bucket.to_be_bytes())
        .part(&epoch.to_be_bytes())
}

/// The beacon secret's name in the bucket-key column family (bucket keys are
/// 4-byte numbers, so it cannot clash): compacted by every purge and
/// re-wrapped by every ratchet with the bucket keys.
const BEACON_SECRET: &[u8] = b"beacon-secret";

fn beacon_aad(vault: VaultId, epoch: u64) -> Aad {
    Aad::new("beacon-secret")
        .part(vault.as_bytes())
        .part(&epoch.to_be_bytes())
}

fn dek_aad(vault: VaultId, record: RecordId, version: u32) -> Aad {
    Aad::new("dek")
        .part(vault.as_bytes())
        .part(record.as_bytes())
        .part(&version.to_be_bytes())
}

fn backup_aad(vault: VaultId, backup: &[u8; 16], epoch: u64) -> Aad {
    Aad::new("backup-key")
        .part(vault.as_bytes())
        .part(backup)
        .part(&epoch.to_be_bytes())
}

fn dek_key(bucket: u32, record: RecordId, version: u32) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..4].copy_from_slice(&bucket.to_be_bytes());
    k[4..20].copy_from_slice(record.as_bytes());
    k[20..].copy_from_slice(&version.to_be_bytes());
    k
}

impl Keystore {
    /// Opens (or creates) the keystore at `path`.
    pub fn open(path: &Path, vault: VaultId, buckets: u32, sync: bool) -> Result<Keystore> {
        let opts = keystore_options();
        let cfs = [CF_BUCKETS, CF_DEKS, CF_BACKUPS]
            .map(|n| ColumnFamilyDescriptor::new(n, keystore_options()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Keystore {
            db,
            vault,
            buckets,
            sync,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The bucket a subject's keys live in: `H(subject) mod B`, so all keys
    /// of one subject share one bucket and a subject disposal touches one.
    pub fn bucket_of(&self, subject: SubjectId) -> u32 {
        let h = crypto::sha256(subject.as_bytes());
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % self.buckets
    }

    fn wo(&self, force_sync: bool) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(self.sync || force_sync);
        w
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("keystore column family exists")
    }

    /// Creates every bucket key for a new vault, wrapped under the epoch-0 root.
    pub fn init_buckets(&self, root: &SecretKey, epoch: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        for b in 0..self.buckets {
            let wrapped = crypto::wrap_key(
                root,
                &bucket_aad(self.vault, b, epoch),
                &SecretKey::generate(),
            );
            batch.put_cf(self.cf(CF_BUCKETS), b.to_be_bytes(), wrapped);
        }
        self.db.write_opt(batch, &self.wo(true))?;
        Ok(())
    }

    /// The vault's beacon secret (blind indexes, `beacon.rs`), created on
    /// first use (a vault of an older build gets one at its first open of
    /// this build) and written synced before anything is indexed under it.
    pub(crate) fn beacon_secret(&self, root: &SecretKey, epoch: u64) -> Result<SecretKey> {
        if let Some(wrapped) = self.db.get_cf(self.cf(CF_BUCKETS), BEACON_SECRET)? {
            return crypto::unwrap_key(
                root,
                &beacon_aad(self.vault, epoch),
                &wrapped,
                "beacon secret",
            );
        }
        let key = SecretKey::generate();
        self.db.put_cf_opt(
            self.cf(CF_BUCKETS),
            BEACON_SECRET,
            crypto::wrap_key(root, &beacon_aad(self.vault, epoch), &key),
            &self.wo(true),
        )?;
        Ok(key)
    }

    /// Reads bucket `b`'s key from the keystore and unwraps it with the
    /// epoch root (no cache).
    fn unwrap_bucket_key(&self, root: &SecretKey, epoch: u64, b: u32) -> Result<SecretKey> {
        let wrapped = self
            .db
            .get_cf(self.cf(CF_BUCKETS), b.to_be_bytes())?
            .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
        crypto::unwrap_key(
            root,
            &bucket_aad(self.vault, b, epoch),
            &wrapped,
            "bucket key",
        )
    }

    /// The unwrapped key of bucket `b`, from the cache or the store.
    fn with_bucket_key<T>(
        &self,
        root: &SecretKey,
        epoch: u64,
        b: u32,
        f: impl FnOnce(&SecretKey) -> T,
    ) -> Result<T> {
        if let Some(k) = self.cache.read().expect("cache lock").get(&b) {
            return Ok(f(k));
        }
        let key = self.unwrap_bucket_key(root, epoch, b)?;
        let out = f(&key);
        self.cache.write().expect("cache lock").insert(b, key);
        Ok(out)
    }

    /// Wraps (with a fresh random `nonce`) and stores `dek`, a new key from
    /// the OS CSPRNG, as the DEK of one record version.
    #[allow(clippy::too_many_arguments)] // the version's identity plus the key and nonce drawn by the caller
    pub(crate) fn store_dek(
        &self,
        root: &SecretKey,
        epoch: u64,
        subject: SubjectId,
        record: RecordId,
        version: u32,
        dek: SecretKey,
        nonce: [u8; 12],
    ) -> Result<SecretKey> {
        let b = self.bucket_of(subject);
        let wrapped = self.with_bucket_key(root, epoch, b, |bk| {
            crypto::seal_with_nonce(
                bk,
                &dek_aad(self.vault, record, version),
                dek.expose(),
                nonce,
            )
        })?;
        self.db.put_cf_opt(
            self.cf(CF_DEKS),
            dek_key(b, record, version),
            wrapped,
            &self.wo(false),
        )?;
        Ok(dek)
    }

    /// The DEK of one record version, or `None` if it was deleted.
    pub fn dek(
        &self,
        root: &SecretKey,
        epoch: u64,
        subject: SubjectId,
        record: RecordId,
        version: u32,
    ) -> Result<Option<SecretKey>> {
        let b = self.bucket_of(subject);
        let Some(wrapped) = self
            .db
            .get_pinned_cf(self.cf(CF_DEKS), dek_key(b, record, version))?
        else {
            return Ok(None);
        };
        self.with_bucket_key(root, epoch, b, |bk| {
            crypto::unwrap_key(
                bk,
                &dek_aad(self.vault, record, version),
                &wrapped,
                "data key",
            )
        })?
        .map(Some)
    }

    /// Deletes the wrapped DEK of one record version (`Delete`, never
    /// `SingleDelete`: a key may have been `Put` more than once by re-wraps).
    pub fn delete_dek(
        &self,
        subject: SubjectId,
        record: RecordId,
        version: u32,
        sync: bool,
    ) -> Result<()> {
        let b = self.bucket_of(subject);
        self.db.delete_cf_opt(
            self.cf(CF_DEKS),
            dek_key(b, record, version),
            &self.wo(sync),
        )?;
        Ok(())
    }

    /// Re-wraps every bucket key from `from` (epoch, root) to `to` (epoch,
    /// root) in one synced batch. Bucket keys already under `to` are left as
    /// they are, so an interrupted ratchet can be finished by running it again.
    pub fn rewrap_buckets(&self, from: (u64, &SecretKey), to: (u64, &SecretKey)) -> Result<()> {
        let mut batch = WriteBatch::default();
        for b in 0..self.buckets {
            let wrapped = self
                .db
                .get_cf(self.cf(CF_BUCKETS), b.to_be_bytes())?
                .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
            if crypto::unwrap_key(
                to.1,
                &bucket_aad(self.vault, b, to.0),
                &wrapped,
                "bucket key",
            )
            .is_ok()
            {
                continue;
            }
            let key = crypto::unwrap_key(
                from.1,
                &bucket_aad(self.vault, b, from.0),
                &wrapped,
                "bucket key",
            )?;
            batch.put_cf(
                self.cf(CF_BUCKETS),
                b.to_be_bytes(),
                crypto::wrap_key(to.1, &bucket_aad(self.vault, b, to.0), &key),
            );
        }
        // Per-backup keys are carried across the ratchet the same way.
        for item in self
            .db
            .iterator_cf(self.cf(CF_BACKUPS), rocksdb::IteratorMode::Start)
        {
            let (k, wrapped) = item?;
            let id: [u8; 16] = k[..]
                .try_into()
                .map_err(|_| Error::Integrity("keystore (backup key name)"))?;
            if crypto::unwrap_key(
                to.1,
                &backup_aad(self.vault, &id, to.0),
                &wrapped,
                "backup key",
            )
            .is_ok()
            {
                continue;
            }
            let key = crypto::unwrap_key(
                from.1,
                &backup_aad(self.vault, &id, from.0),
                &wrapped,
                "backup key",
            )?;
            batch.put_cf(
                self.cf(CF_BACKUPS),
                id,
                crypto::wrap_key(to.1, &backup_aad(self.vault, &id, to.0), &key),
            );
        }
        // The beacon secret too: it must outlive every ratchet (beacons
        // written under it stay valid), so it is never derived from a root.
        if let Some(wrapped) = self.db.get_cf(self.cf(CF_BUCKETS), BEACON_SECRET)?
            && crypto::unwrap_key(
                to.1,
                &beacon_aad(self.vault, to.0),
                &wrapped,
                "beacon secret",
            )
            .is_err()
        {
            let key = crypto::unwrap_key(
                from.1,
                &beacon_aad(self.vault, from.0),
                &wrapped,
                "beacon secret",
            )?;
            batch.put_cf(
                self.cf(CF_BUCKETS),
                BEACON_SECRET,
                crypto::wrap_key(to.1, &beacon_aad(self.vault, to.0), &key),
            );
        }
        self.db.write_opt(batch, &self.wo(true))?;
        self.cache.write().expect("cache lock").clear();
        Ok(())
    }

    /// Deletes the wrapped DEKs of many record versions in one synced batch
    /// (disposal step 2).
    pub fn delete_deks(&self, keys: &[(SubjectId, RecordId, u32)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (subject, record, version) in keys {
            batch.delete_cf(
                self.cf(CF_DEKS),
                dek_key(self.bucket_of(*subject), *record, *version),
            );
        }
        self.db.write_opt(batch, &self.wo(true))?;
        Ok(())
    }

    /// Every stored key version of one record, with its wrapped bytes, in
    /// version order: a prefix scan of `bucket | record`. A disposal destroys
    /// all of them, not only the version its plan saw (an update, an
    /// interrupted update or a failed undo can leave another).
    pub fn record_keys(&self, subject: SubjectId, record: RecordId) -> Result<Vec<(u32, Vec<u8>)>> {
        let b = self.bucket_of(subject);
        let mut prefix = [0u8; 20];
        prefix[..4].copy_from_slice(&b.to_be_bytes());
        prefix[4..].copy_from_slice(record.as_bytes());
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_DEKS),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, v) = item?;
            if k.len() != 24 || k[..20] != prefix {
                break;
            }
            out.push((
                u32::from_be_bytes(k[20..24].try_into().expect("4 bytes")),
                v.to_vec(),
            ));
        }
        Ok(out)
    }

    /// Plans a bucket rotation (disposal steps 2 and 3 as one write): for each
    /// bucket, a new bucket key; every data key for which `destroy(record,
    /// version)` holds is deleted, every other one is unwrapped under the old
    /// bucket key and re-wrapped under the new one. Nothing is written: a key
    /// that cannot be unwrapped is reported as [`Error::RotationBlocked`]
    /// before any key is deleted. The caller holds the buckets' exclusive
    /// locks from the plan through [`Keystore::commit_rotation`], so no key
    /// is written in between.
    pub(crate) fn plan_rotation(
        &self,
        root: &SecretKey,
        epoch: u64,
        buckets: &[u32],
        destroy: impl Fn(RecordId, u32) -> bool,
    ) -> Result<Rotation> {
        let mut batch = WriteBatch::default();
        let mut rewrapped = 0;
        let mut deleted = Vec::new();
        let mut deleted_wrapped = Vec::new();
        for &b in buckets {
            let old = self.unwrap_bucket_key(root, epoch, b)?;
            let new = SecretKey::generate();
            for item in self.db.iterator_cf(
                self.cf(CF_DEKS),
                rocksdb::IteratorMode::From(&b.to_be_bytes(), rocksdb::Direction::Forward),
            ) {
                let (k, v) = item?;
                if k.len() != 24 || k[..4] != b.to_be_bytes() {
                    break;
                }
                let record = RecordId::from_slice(&k[4..20])?;
                let version = u32::from_be_bytes(k[20..24].try_into().expect("4 bytes"));
                if destroy(record, version) {
                    batch.delete_cf(self.cf(CF_DEKS), &k);
                    deleted.push((record, version));
                    deleted_wrapped.push(v.to_vec());
                    continue;
                }
                let aad = dek_aad(self.vault, record, version);
                let dek = crypto::unwrap_key(&old, &aad, &v, "data key").map_err(|_| {
                    Error::RotationBlocked(format!(
                        "the data key of record {record} version {version} (bucket {b}) cannot be unwrapped"
                    ))
                })?;
                batch.put_cf(self.cf(CF_DEKS), &k, crypto::wrap_key(&new, &aad, &dek));
                rewrapped += 1;
            }
            batch.put_cf(
                self.cf(CF_BUCKETS),
                b.to_be_bytes(),
                crypto::wrap_key(root, &bucket_aad(self.vault, b, epoch), &new),
            );
        }
        Ok(Rotation {
            batch,
            buckets: buckets.to_vec(),
            rewrapped,
            deleted,
            deleted_wrapped,
        })
    }

    /// Writes a planned rotation in one synced batch and drops the rotated
    /// buckets' cached keys.
    pub(crate) fn commit_rotation(&self, r: Rotation) -> Result<()> {
        self.db.write_opt(r.batch, &self.wo(true))?;
        let mut cache = self.cache.write().expect("cache lock");
        for b in &r.buckets {
            cache.remove(b);
        }
        Ok(())
    }

    /// Bucket rotation with nothing destroyed: every data key of `buckets`
    /// re-wrapped under a new bucket key. Returns how many were re-wrapped.
    pub fn rotate_buckets(&self, root: &SecretKey, epoch: u64, buckets: &[u32]) -> Result<u64> {
        let r = self.plan_rotation(root, epoch, buckets, |_, _| false)?;
        let n = r.rewrapped;
        self.commit_rotation(r)?;
        Ok(n)
    }

    /// Physical purge (disposal step 5): flush every column family (a WAL
    /// is released only when all column families sharing it have flushed),
    /// force a bottommost compaction of the touched DEK ranges and of the
    /// whole bucket-key column family (every bucket key was re-wrapped by
    /// the ratchet), then check that nothing outside the live set remains.
    /// `compact_range` reports nothing and obsolete files are deleted on a
    /// background thread, so the checks are polled briefly.
    pub fn purge(&self, buckets: &[u32], skip_physical: bool) -> Result<PurgeEvidence> {
        let start = std::time::Instant::now();
        let cfs = [
            self.cf("default"),
            self.cf(CF_BUCKETS),
            self.cf(CF_DEKS),
            self.cf(CF_BACKUPS),
        ];
        // `compact_range` flushes the memtable it covers by itself, so the
        // negative control skips flush and compaction together.
        let trace = std::env::var_os("PIVAULT_DISPOSAL_TRACE").is_some();
        let mut lap = std::time::Instant::now();
        let mut tr = |what: &str| {
            if trace {
                eprintln!(
                    "    purge {what}: {:.1} ms",
                    lap.elapsed().as_secs_f64() * 1e3
                );
            }
            lap = std::time::Instant::now();
        };
        if !skip_physical {
            let mut fo = rocksdb::FlushOptions::default();
            fo.set_wait(true);
            self.db.flush_cfs_opt(&cfs, &fo)?;
            tr("flush");
            let mut co = rocksdb::CompactOptions::default();
            // ForceOptimized: the bottommost level is compacted over the range,
            // except the files this same compaction just wrote into it (an
            // output of a compaction into the last level keeps no tombstone
            // and no older version when no snapshot is open, which the checks
            // below verify); Force would rewrite those files a second time.
            co.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::ForceOptimized);
            co.set_exclusive_manual_compaction(true);
            // Touched buckets merged into runs of consecutive numbers: one
            // manual compaction per run, not per bucket (a 10,000-record batch
            // touches most buckets, and each compaction rewrites whole files).
            let mut sorted = buckets.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for b in sorted {
                match runs.last_mut() {
                    Some((_, hi)) if u64::from(*hi) + 1 == u64::from(b) => *hi = b,
                    _ => runs.push((b, b)),
                }
            }
            for (lo, hi) in runs {
                let end = (hi as u64 + 1).to_be_bytes();
                // Range [lo, hi+1) over the 4-byte bucket prefix; the end key is the
                // 4 low bytes of hi+1, or unbounded for the last bucket.
                let end = (hi != u32::MAX).then(|| end[4..].to_vec());
                self.db
                    .compact_range_cf_opt(self.cf(CF_DEKS), Some(lo.to_be_bytes()), end, &co);
            }
            tr("compact deks");
            self.db
                .compact_range_cf_opt(self.cf(CF_BUCKETS), None::<&[u8]>, None::<&[u8]>, &co);
            // Backup keys: a handful of rows, re-wrapped by every ratchet.
            self.db
                .compact_range_cf_opt(self.cf(CF_BACKUPS), None::<&[u8]>, None::<&[u8]>, &co);
            tr("compact buckets+backups");
        }
        let mut evidence = self.purge_checks(buckets)?;
        // 10 s, not 3: on a loaded 2-core machine (the whole test suite, or a
        // nearly full disk) the deletion lagged past 3 s twice in a day, and
        // the batch then failed verification with obsolete files as residue.
        // Failing was safe (no certificate), but spurious; the wait ends as
        // soon as the checks are clean.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut polls = 0;
        // Obsolete files are deleted by a background thread right after the
        // compaction returns: poll from 1 ms, doubling up to 20 ms.
        let mut pause = std::time::Duration::from_millis(1);
        while !evidence.clean() && std::time::Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(20));
            if !evidence.residue_files.is_empty() && polls >= 8 {
                // RocksDB deletes obsolete files when a background job ends.
                // A file whose last version a concurrent read released after
                // the compaction ended waits for the next job, which may be
                // far off. A balanced disable/enable pair makes RocksDB scan
                // for obsolete files at once (EnableFileDeletions' full scan
                // when its counter returns to zero); files a snapshot or a
                // live WAL still needs are not obsolete and stay, so the
                // checks below still see them.
                self.db.disable_file_deletions()?;
                self.db.enable_file_deletions()?;
            }
            evidence = self.purge_checks(buckets)?;
            polls += 1;
        }
        tr(&format!(
            "checks ({polls} polls, {} live sst)",
            evidence.live_sst_files
        ));
        evidence.duration_ms = start.elapsed().as_millis() as u64;
        Ok(evidence)
    }

    fn purge_checks(&self, buckets: &[u32]) -> Result<PurgeEvidence> {
        use rocksdb::properties as P;
        let (live, residue, wal_files) = crate::store::obsolete_files(&self.db)?;
        let in_touched = |f: &rocksdb::LiveFile| {
            let (Some(lo), Some(hi)) = (&f.start_key, &f.end_key) else {
                return true;
            };
            buckets.iter().any(|b| {
                let p = b.to_be_bytes();
                lo.get(..4).is_none_or(|x| x <= &p[..]) && hi.get(..4).is_none_or(|x| x >= &p[..])
            })
        };
        let tombstones = live
            .iter()
            .filter(|f| f.column_family_name == CF_DEKS && in_touched(f))
            .map(|f| f.num_deletions)
            .sum();
        Ok(PurgeEvidence {
            snapshots: self
                .db
                .property_int_value(P::NUM_SNAPSHOTS)?
                .unwrap_or(u64::MAX),
            live_versions_deks: self
                .db
                .property_int_value_cf(self.cf(CF_DEKS), P::NUM_LIVE_VERSIONS)?
                .unwrap_or(u64::MAX),
            tombstones_in_touched_ranges: tombstones,
            residue_files: residue,
            live_sst_files: live.len() as u64,
            wal_files,
            compacted_buckets: buckets.len() as u64,
            duration_ms: 0,
        })
    }

    /// Every file of the keystore directory that contains any of `needles`
    /// (the wrapped DEK bytes that existed before a disposal).
    pub fn files_containing(&self, needles: &[Vec<u8>]) -> Result<Vec<String>> {
        scan_dir(self.db.path(), needles)
    }

    /// The files of the keystore directory that can hold a wrapped DEK of
    /// one of `buckets`, for the verification byte scan: every file that is
    /// not a table file (WALs, MANIFEST, logs, options, temporaries), every
    /// table file outside the live set, and every live table file of the DEK
    /// column family whose key range covers a touched bucket. A wrapped DEK
    /// is only ever written as the value of its own key `bucket | record |
    /// version` in that column family, so the live table files left out
    /// (other column families, other key ranges) cannot hold it. This keeps
    /// the scan proportional to the touched buckets, not to the vault.
    pub fn files_for_buckets(&self, buckets: &[u32]) -> Result<Vec<std::path::PathBuf>> {
        let live = self.db.live_files()?;
        let mut skip = std::collections::HashSet::new();
        for f in &live {
            let covers = f.column_family_name == CF_DEKS
                && match (&f.start_key, &f.end_key) {
                    (Some(lo), Some(hi)) => buckets.iter().any(|b| {
                        let p = b.to_be_bytes();
                        lo.get(..4).is_none_or(|x| x <= &p[..])
                            && hi.get(..4).is_none_or(|x| x >= &p[..])
                    }),
                    _ => true,
                };
            if !covers {
                skip.insert(f.name.trim_start_matches('/').to_owned());
            }
        }
        let mut out = Vec::new();
        let mut stack = vec![self.db.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if !skip.contains(&*e.file_name().to_string_lossy()) {
                    out.push(p);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The files among [`Keystore::files_for_buckets`] that contain any of
    /// `needles`, and how many files were scanned.
    pub fn files_containing_for_buckets(
        &self,
        buckets: &[u32],
        needles: &[Vec<u8>],
    ) -> Result<(Vec<String>, u64)> {
        let files = self.files_for_buckets(buckets)?;
        if std::env::var_os("PIVAULT_DISPOSAL_TRACE").is_some() {
            for p in &files {
                let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                eprintln!("      scan {} {len}", p.display());
            }
        }
        let mut hits = Vec::new();
        for p in &files {
            let bytes = match std::fs::read(p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if contains_any(&bytes, needles) {
                hits.push(
                    p.strip_prefix(self.db.path())
                        .unwrap_or(p)
                        .display()
                        .to_string(),
                );
            }
        }
        Ok((hits, files.len() as u64))
    }

    /// Number of wrapped DEKs stored (for `doctor` and tests).
    pub fn dek_count(&self) -> Result<u64> {
        let mut n = 0;
        for item in self
            .db
            .iterator_cf(self.cf(CF_DEKS), rocksdb::IteratorMode::Start)
        {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// The raw wrapped DEK bytes of one record version, for forensic tests
    /// that scan files for them after disposal.
    pub fn wrapped_dek(
        &self,
        subject: SubjectId,
        record: RecordId,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(
            self.cf(CF_DEKS),
            dek_key(self.bucket_of(subject), record, version),
        )?)
    }

    // ----- backups (see vault/backup.rs) ------------------------------------

    /// Stores a backup's key K_b wrapped under the epoch root (synced).
    pub(crate) fn put_backup_key(
        &self,
        root: &SecretKey,
        epoch: u64,
        id: &[u8; 16],
        key: &SecretKey,
    ) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(CF_BACKUPS),
            id,
            crypto::wrap_key(root, &backup_aad(self.vault, id, epoch), key),
            &self.wo(true),
        )?;
        Ok(())
    }

    /// A backup's key K_b, or `None` once it was destroyed.
    pub(crate) fn backup_key(
        &self,
        root: &SecretKey,
        epoch: u64,
        id: &[u8; 16],
    ) -> Result<Option<SecretKey>> {
        let Some(wrapped) = self.db.get_cf(self.cf(CF_BACKUPS), id)? else {
            return Ok(None);
        };
        crypto::unwrap_key(
            root,
            &backup_aad(self.vault, id, epoch),
            &wrapped,
            "backup key",
        )
        .map(Some)
    }

    /// The raw wrapped bytes of a backup key (for the destruction byte scan).
    pub fn wrapped_backup_key(&self, id: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_BACKUPS), id)?)
    }

    /// Deletes a backup key (synced); the ratchet and purge that follow make
    /// every older copy of it useless and then absent.
    pub(crate) fn delete_backup_key(&self, id: &[u8; 16]) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_BACKUPS), id, &self.wo(true))?;
        Ok(())
    }

    /// IDs of every stored backup key.
    pub(crate) fn backup_key_ids(&self) -> Result<Vec<[u8; 16]>> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BACKUPS), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item?;
            out.push(
                k[..]
                    .try_into()
                    .map_err(|_| Error::Integrity("keystore (backup key name)"))?,
            );
        }
        Ok(out)
    }

    /// Calls `f` with every bucket number and its unwrapped key (backup creation).
    pub(crate) fn for_each_bucket_key(
        &self,
        root: &SecretKey,
        epoch: u64,
        mut f: impl FnMut(u32, &SecretKey) -> Result<()>,
    ) -> Result<()> {
        for b in 0..self.buckets {
            f(b, &self.unwrap_bucket_key(root, epoch, b)?)?;
        }
        Ok(())
    }

    /// Calls `f` with every (key name, wrapped DEK) pair, in key order.
    pub(crate) fn for_each_wrapped_dek(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        for item in self
            .db
            .iterator_cf(self.cf(CF_DEKS), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Splits a DEK key name into (bucket, record, version).
    pub(crate) fn parse_dek_key(k: &[u8]) -> Result<(u32, RecordId, u32)> {
        if k.len() != 24 {
            return Err(Error::Integrity("data key name"));
        }
        let bucket = u32::from_be_bytes(k[..4].try_into().expect("4 bytes"));
        let record = RecordId::from_slice(&k[4..20])?;
        let version = u32::from_be_bytes(k[20..24].try_into().expect("4 bytes"));
        Ok((bucket, record, version))
    }

    /// Unwraps a DEK under a given bucket key (a backup's bucket key on restore).
    pub(crate) fn unwrap_dek_with(
        &self,
        bucket_key: &SecretKey,
        record: RecordId,
        version: u32,
        wrapped: &[u8],
    ) -> Result<SecretKey> {
        crypto::unwrap_key(
            bucket_key,
            &dek_aad(self.vault, record, version),
            wrapped,
            "data key",
        )
    }

    /// Stores DEKs restored from a backup, each wrapped under the *live* key
    /// of its bucket, in one synced batch. A backup's own bucket keys never
    /// enter the live keystore.
    pub(crate) fn put_restored_deks(
        &self,
        root: &SecretKey,
        epoch: u64,
        items: &[(u32, RecordId, u32, SecretKey)],
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (b, record, version, dek) in items {
            if *b >= self.buckets {
                return Err(Error::Integrity("backup (bucket out of range)"));
            }
            let wrapped = self.with_bucket_key(root, epoch, *b, |bk| {
                crypto::wrap_key(bk, &dek_aad(self.vault, *record, *version), dek)
            })?;
            batch.put_cf(self.cf(CF_DEKS), dek_key(*b, *record, *version), wrapped);
        }
        self.db.write_opt(batch, &self.wo(true))?;
        Ok(())
    }

    /// A RocksDB snapshot of the keystore (the negative control of the purge:
    /// while it is held, old versions stay pinned and the purge must fail).
    pub(crate) fn snapshot(&self) -> rocksdb::Snapshot<'_> {
        self.db.snapshot()
    }

    /// Number of key buckets.
    pub fn bucket_count(&self) -> u32 {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::contains_any;

    #[test]
    fn contains_any_finds_every_needle_and_nothing_else() {
        let hay: Vec<u8> = (0..5000u32)
            .flat_map(|i| i.wrapping_mul(2654435761).to_be_bytes())
            .collect();
        let needles: Vec<Vec<u8>> = (0..50).map(|i| hay[i * 97..i * 97 + 61].to_vec()).collect();
        for n in &needles {
            assert!(contains_any(&hay, std::slice::from_ref(n)));
        }
        assert!(contains_any(&hay, &needles));
        let mut absent = needles.clone();
        for n in &mut absent {
            n[60] ^= 0xff;
            n[0] ^= 0x55;
        }
        assert!(!contains_any(&hay, &absent));
        absent.push(hay[4000..4003].to_vec());
        assert!(contains_any(&hay, &absent));
        assert!(!contains_any(&hay[..10], &needles));
    }
}
