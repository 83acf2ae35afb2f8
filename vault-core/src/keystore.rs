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
    o.set_target_file_size_base(4 * 1024 * 1024);
    o.set_write_buffer_size(8 * 1024 * 1024);
    o.set_keep_log_file_num(2);
    o
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

/// Recursively scans `dir` for files holding any needle; files that vanish
/// mid-scan (obsolete-file deletion) are skipped.
pub fn scan_dir(dir: &Path, needles: &[Vec<u8>]) -> Result<Vec<String>> {
    let mut hits = Vec::new();
    if needles.is_empty() {
        return Ok(hits);
    }
    let contains = |hay: &[u8], needle: &[u8]| {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
    };
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
            if needles.iter().any(|n| contains(&bytes, n)) {
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

fn dek_aad(vault: VaultId, record: RecordId, version: u32) -> Aad {
    Aad::new("dek")
        .part(vault.as_bytes())
        .part(record.as_bytes())
        .part(&version.to_be_bytes())
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
        let cfs = [CF_BUCKETS, CF_DEKS].map(|n| ColumnFamilyDescriptor::new(n, keystore_options()));
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
        let wrapped = self
            .db
            .get_cf(self.cf(CF_BUCKETS), b.to_be_bytes())?
            .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
        let key = crypto::unwrap_key(
            root,
            &bucket_aad(self.vault, b, epoch),
            &wrapped,
            "bucket key",
        )?;
        let out = f(&key);
        self.cache.write().expect("cache lock").insert(b, key);
        Ok(out)
    }

    /// Generates, wraps and stores a new DEK for one record version.
    pub fn new_dek(
        &self,
        root: &SecretKey,
        epoch: u64,
        subject: SubjectId,
        record: RecordId,
        version: u32,
    ) -> Result<SecretKey> {
        let mut nonce = [0u8; 12];
        crypto::fill_random(&mut nonce);
        self.store_dek(
            root,
            epoch,
            subject,
            record,
            version,
            SecretKey::generate(),
            nonce,
        )
    }

    /// Wraps (with a fresh random `nonce`) and stores `dek`, a new key from
    /// the OS CSPRNG, as the DEK of one record version.
    #[allow(clippy::too_many_arguments)] // new_dek's inputs plus the key and nonce drawn by the caller
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

    /// Bucket rotation (disposal step 3): for each bucket, a new bucket key,
    /// and every surviving DEK of the bucket re-wrapped under it, all in one
    /// synced batch. Returns how many DEKs were re-wrapped.
    pub fn rotate_buckets(&self, root: &SecretKey, epoch: u64, buckets: &[u32]) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let mut rewrapped = 0;
        for &b in buckets {
            let wrapped_bk = self
                .db
                .get_cf(self.cf(CF_BUCKETS), b.to_be_bytes())?
                .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
            let old = crypto::unwrap_key(
                root,
                &bucket_aad(self.vault, b, epoch),
                &wrapped_bk,
                "bucket key",
            )?;
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
                let aad = dek_aad(self.vault, record, version);
                let dek = crypto::unwrap_key(&old, &aad, &v, "data key")?;
                batch.put_cf(self.cf(CF_DEKS), &k, crypto::wrap_key(&new, &aad, &dek));
                rewrapped += 1;
            }
            batch.put_cf(
                self.cf(CF_BUCKETS),
                b.to_be_bytes(),
                crypto::wrap_key(root, &bucket_aad(self.vault, b, epoch), &new),
            );
        }
        self.db.write_opt(batch, &self.wo(true))?;
        let mut cache = self.cache.write().expect("cache lock");
        for b in buckets {
            cache.remove(b);
        }
        Ok(rewrapped)
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
        let cfs = [self.cf("default"), self.cf(CF_BUCKETS), self.cf(CF_DEKS)];
        // `compact_range` flushes the memtable it covers by itself, so the
        // negative control skips flush and compaction together.
        if !skip_physical {
            let mut fo = rocksdb::FlushOptions::default();
            fo.set_wait(true);
            self.db.flush_cfs_opt(&cfs, &fo)?;
            let mut co = rocksdb::CompactOptions::default();
            co.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            co.set_exclusive_manual_compaction(true);
            for &b in buckets {
                let end = (b as u64 + 1).to_be_bytes();
                // Range [b, b+1) over the 4-byte bucket prefix; the end key is the
                // 4 low bytes of b+1, or unbounded for the last bucket.
                let end = (b != u32::MAX).then(|| end[4..].to_vec());
                self.db
                    .compact_range_cf_opt(self.cf(CF_DEKS), Some(b.to_be_bytes()), end, &co);
            }
            self.db
                .compact_range_cf_opt(self.cf(CF_BUCKETS), None::<&[u8]>, None::<&[u8]>, &co);
        }
        let mut evidence = self.purge_checks(buckets)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !evidence.clean() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            evidence = self.purge_checks(buckets)?;
        }
        evidence.duration_ms = start.elapsed().as_millis() as u64;
        Ok(evidence)
    }

    fn purge_checks(&self, buckets: &[u32]) -> Result<PurgeEvidence> {
        use rocksdb::properties as P;
        let live = self.db.live_files()?;
        let live_names: std::collections::HashSet<String> = live
            .iter()
            .map(|f| f.name.trim_start_matches('/').to_owned())
            .collect();
        let min_log = self
            .db
            .property_int_value(P::MIN_LOG_NUMBER_TO_KEEP)?
            .unwrap_or(0);
        let mut residue = Vec::new();
        let mut wal_files = 0;
        for e in std::fs::read_dir(self.db.path())? {
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
}
