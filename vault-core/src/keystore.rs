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
        f.debug_struct("Keystore").field("buckets", &self.buckets).finish_non_exhaustive()
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
        self.db.cf_handle(name).expect("keystore column family exists")
    }

    /// Creates every bucket key for a new vault, wrapped under the epoch-0 root.
    pub fn init_buckets(&self, root: &SecretKey, epoch: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        for b in 0..self.buckets {
            let wrapped = crypto::wrap_key(root, &bucket_aad(self.vault, b, epoch), &SecretKey::generate());
            batch.put_cf(self.cf(CF_BUCKETS), b.to_be_bytes(), wrapped);
        }
        self.db.write_opt(batch, &self.wo(true))?;
        Ok(())
    }

    /// The unwrapped key of bucket `b`, from the cache or the store.
    fn with_bucket_key<T>(&self, root: &SecretKey, epoch: u64, b: u32, f: impl FnOnce(&SecretKey) -> T) -> Result<T> {
        if let Some(k) = self.cache.read().expect("cache lock").get(&b) {
            return Ok(f(k));
        }
        let wrapped = self
            .db
            .get_cf(self.cf(CF_BUCKETS), b.to_be_bytes())?
            .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
        let key = crypto::unwrap_key(root, &bucket_aad(self.vault, b, epoch), &wrapped, "bucket key")?;
        let out = f(&key);
        self.cache.write().expect("cache lock").insert(b, key);
        Ok(out)
    }

    /// Generates, wraps and stores a new DEK for one record version.
    pub fn new_dek(&self, root: &SecretKey, epoch: u64, subject: SubjectId, record: RecordId, version: u32) -> Result<SecretKey> {
        let b = self.bucket_of(subject);
        let dek = SecretKey::generate();
        let wrapped = self.with_bucket_key(root, epoch, b, |bk| {
            crypto::wrap_key(bk, &dek_aad(self.vault, record, version), &dek)
        })?;
        self.db
            .put_cf_opt(self.cf(CF_DEKS), dek_key(b, record, version), wrapped, &self.wo(false))?;
        Ok(dek)
    }

    /// The DEK of one record version, or `None` if it was deleted.
    pub fn dek(&self, root: &SecretKey, epoch: u64, subject: SubjectId, record: RecordId, version: u32) -> Result<Option<SecretKey>> {
        let b = self.bucket_of(subject);
        let Some(wrapped) = self.db.get_cf(self.cf(CF_DEKS), dek_key(b, record, version))? else {
            return Ok(None);
        };
        self.with_bucket_key(root, epoch, b, |bk| {
            crypto::unwrap_key(bk, &dek_aad(self.vault, record, version), &wrapped, "data key")
        })?
        .map(Some)
    }

    /// Deletes the wrapped DEK of one record version (`Delete`, never
    /// `SingleDelete`: a key may have been `Put` more than once by re-wraps).
    pub fn delete_dek(&self, subject: SubjectId, record: RecordId, version: u32, sync: bool) -> Result<()> {
        let b = self.bucket_of(subject);
        self.db
            .delete_cf_opt(self.cf(CF_DEKS), dek_key(b, record, version), &self.wo(sync))?;
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
            if crypto::unwrap_key(to.1, &bucket_aad(self.vault, b, to.0), &wrapped, "bucket key").is_ok() {
                continue;
            }
            let key = crypto::unwrap_key(from.1, &bucket_aad(self.vault, b, from.0), &wrapped, "bucket key")?;
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

    /// Number of wrapped DEKs stored (for `doctor` and tests).
    pub fn dek_count(&self) -> Result<u64> {
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(CF_DEKS), rocksdb::IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// The raw wrapped DEK bytes of one record version, for forensic tests
    /// that scan files for them after disposal.
    pub fn wrapped_dek(&self, subject: SubjectId, record: RecordId, version: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_DEKS), dek_key(self.bucket_of(subject), record, version))?)
    }
}
