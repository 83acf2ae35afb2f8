//! The keystore: wrapped keys only (DESIGN §3, §4.1). Bucket keys are
//! wrapped by the epoch root key; one data key (DEK) per record version is
//! wrapped by its subject's bucket key. Where the wrapped keys live is an
//! [`engine::KeyEngine`]: a small RocksDB instance beside the records
//! ([`rocks`], the default) or a PostgreSQL cluster ([`postgres`]). This
//! module does the wrapping and naming; an engine sees only ciphertext and IDs.

mod engine;
pub mod postgres;
pub mod provider;
mod rocks;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::RwLock;

pub use engine::{ByteScan, DropTargets, FoundCopy};
pub(crate) use engine::{KeyEngine, KeyOp, Table};
pub use postgres::PurgeControl;
pub(crate) use rocks::SMALL_MANIFEST_PREALLOCATION;
pub use rocks::keystore_options;

use crate::crypto::{self, Aad};
use crate::error::{Error, Result};
use crate::ids::{RecordId, SubjectId, VaultId};
use crate::secret::SecretKey;

/// Storage of wrapped keys, with an in-memory cache of unwrapped bucket keys
/// (RAM only, zeroized on drop, cleared at every epoch ratchet).
pub struct Keystore {
    engine: Box<dyn KeyEngine>,
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

/// A bucket rotation planned by [`Keystore::plan_rotation`], not yet written.
pub(crate) struct Rotation {
    batch: Vec<KeyOp>,
    buckets: Vec<u32>,
    /// Surviving data keys re-wrapped under the new bucket keys.
    pub rewrapped: u64,
    /// Data keys deleted, as (record, version).
    pub deleted: Vec<(RecordId, u32)>,
    /// The wrapped bytes of the deleted keys, as stored: what the
    /// verification byte scan must no longer find (held in memory only).
    pub deleted_wrapped: Vec<Vec<u8>>,
    /// Each rotated bucket's key before the rotation, by its one-way name
    /// ([`one_way_name`]): a disposal keeps these to find one put back.
    pub replaced: Vec<(u32, [u8; 32])>,
}

/// A one-way name of bucket `b`'s key: a SHA-256 over the key itself, the
/// vault and the bucket, which tells keys apart without revealing them.
fn one_way_name(vault: &[u8], b: u32, key: &SecretKey) -> [u8; 32] {
    let mut m = zeroize::Zeroizing::new(b"pivault bucket key name v1".to_vec());
    m.extend_from_slice(vault);
    m.extend_from_slice(&b.to_be_bytes());
    m.extend_from_slice(key.expose());
    crypto::sha256(&m)
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
    /// The engine purged (`rocksdb`, `postgresql`).
    pub engine: &'static str,
    /// Each database member the purge reached and verified (a cluster
    /// engine; empty for the embedded one, whose one directory is it).
    pub members: Vec<MemberEvidence>,
    /// A cluster's WAL segment that held the purge's last write (`None`
    /// when embedded): no segment at or before it is left on a verified
    /// member, and none after it can hold a purged byte, so the byte scan
    /// reads no later one.
    pub wal_floor: Option<String>,
}

/// One member of a cluster keystore, as the purge left it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberEvidence {
    /// `host:port`.
    pub name: String,
    /// `primary` or `standby`, or `unreachable`.
    pub role: String,
    /// Whether every purge step ran on it and its checks passed.
    pub verified: bool,
    /// What was checked, or why it was not (no key bytes, no personal information).
    pub detail: String,
}

/// How many rows a vault's keystore held when it was deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Root-key slots and sealed signing keys.
    pub header_rows: u64,
    /// Bucket keys and the search secret.
    pub bucket_rows: u64,
    /// Bucket keys whose wrapped bytes the scan searched for.
    pub bucket_rows_searched: u64,
    /// Backup keys.
    pub backup_keys: u64,
    /// Data keys (one per record version still held).
    pub data_keys: u64,
    /// Data keys whose wrapped bytes the scan searched for.
    pub data_keys_searched: u64,
}

impl PurgeEvidence {
    /// Whether every purge check passed.
    pub fn clean(&self) -> bool {
        self.snapshots == 0
            && self.live_versions_deks == 1
            && self.tombstones_in_touched_ranges == 0
            && self.residue_files.is_empty()
            && self.members.iter().all(|m| m.verified)
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

/// An embedded engine's hits (paths under its directory, each a file a
/// needle was read in) as the copies a failed batch keeps.
pub(crate) fn local_copies(hits: &[String]) -> Vec<FoundCopy> {
    hits.iter()
        .map(|h| FoundCopy {
            member: None,
            path: h.clone(),
        })
        .collect()
}

/// Which of `copies` (paths under `dir`, from an earlier scan) are still
/// there. A path that is not a plain relative one under `dir` came from
/// no scan: the batch's row was altered.
pub(crate) fn local_copies_present(dir: &Path, copies: &[FoundCopy]) -> Result<Vec<FoundCopy>> {
    let mut present = Vec::new();
    for c in copies {
        let rel = Path::new(&c.path);
        let plain = c.member.is_none()
            && rel
                .components()
                .all(|p| matches!(p, std::path::Component::Normal(_)));
        if !plain {
            return Err(Error::Integrity("disposal batch"));
        }
        if exists_by_name(dir, rel)? {
            present.push(c.clone());
        }
    }
    Ok(present)
}

/// Whether `rel` (a path as a scan reported it) names something under
/// `dir`. Gone only when the file system says so: a directory made
/// unreadable hides a file without removing it, and is an error. A name
/// that was not UTF-8 was reported with U+FFFD in place of its bytes:
/// such a component matches any entry of its directory that reads the
/// same, so an insider cannot hide a copy behind a name the report alters.
fn exists_by_name(dir: &Path, rel: &Path) -> Result<bool> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut at = vec![dir.to_path_buf()];
    for part in rel.components() {
        let part = part.as_os_str();
        let lossy = part.to_string_lossy();
        let mut next = Vec::new();
        for d in &at {
            if !lossy.contains('\u{FFFD}') {
                next.push(d.join(part));
                continue;
            }
            let entries = match std::fs::read_dir(d) {
                Ok(e) => e,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            for e in entries {
                let e = e?;
                if e.file_name().to_string_lossy() == lossy {
                    next.push(e.path());
                }
            }
        }
        at = next;
    }
    for p in at {
        match std::fs::symlink_metadata(&p) {
            Ok(_) => return Ok(true),
            Err(e) if gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// The kind of an entry a byte scan's walk under `top` meets, without
/// following a link: `None` when it vanished meanwhile. A link is an error
/// naming it (`place` says whose directory, `then` what to do after): what
/// it points to is outside what the scan can vouch for, and one to a
/// directory above would lead the walk round.
pub(crate) fn walked_kind(
    e: &std::fs::DirEntry,
    top: &Path,
    place: &str,
    then: &str,
) -> Result<Option<std::fs::FileType>> {
    let kind = match e.file_type() {
        Ok(k) => k,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    if kind.is_symlink() {
        let p = e.path();
        return Err(Error::Storage(format!(
            "{} is a symbolic link{place}: the scan does not follow it; put what it points to in its place, then {then}",
            p.strip_prefix(top).unwrap_or(&p).display()
        )));
    }
    Ok(Some(kind))
}

/// Recursively scans `dir` for files holding any needle; files that vanish
/// mid-scan (obsolete-file deletion) are skipped.
pub fn scan_dir(dir: &Path, needles: &[Vec<u8>]) -> Result<Vec<String>> {
    scan_dir_counted(dir, needles).map(|s| s.hits)
}

/// [`scan_dir`], with the number of files read. A symbolic link is an
/// error, not followed: what it points to is outside what the scan can
/// vouch for (and may hold what the vault wrote through it), and a link to
/// a directory above would have the scan go round for ever.
pub fn scan_dir_counted(dir: &Path, needles: &[Vec<u8>]) -> Result<ByteScan> {
    let mut scan = ByteScan::default();
    if needles.is_empty() {
        return Ok(scan);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let Some(kind) = walked_kind(&e, dir, "", "scan again")? else {
                continue;
            };
            if kind.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            scan.scanned += 1;
            if contains_any(&bytes, needles) {
                scan.hits
                    .push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            }
        }
    }
    scan.hits.sort();
    Ok(scan)
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
    /// Opens (or creates) the embedded keystore at `path`.
    pub fn open(path: &Path, vault: VaultId, buckets: u32, sync: bool) -> Result<Keystore> {
        Ok(Keystore::with_engine(
            Box::new(rocks::RocksKeys::open(path, sync)?),
            vault,
            buckets,
            sync,
        ))
    }

    /// A keystore on `engine`.
    pub(crate) fn with_engine(
        engine: Box<dyn KeyEngine>,
        vault: VaultId,
        buckets: u32,
        sync: bool,
    ) -> Keystore {
        Keystore {
            engine,
            vault,
            buckets,
            sync,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// A keystore on the PostgreSQL cluster `cfg` names.
    pub fn on_cluster(
        cfg: postgres::PgConfig,
        vault: VaultId,
        buckets: u32,
        sync: bool,
        create: bool,
    ) -> Result<Keystore> {
        Ok(Keystore::with_engine(
            Box::new(postgres::PgKeys::open(cfg, vault, buckets, create)?),
            vault,
            buckets,
            sync,
        ))
    }

    /// Sets the purge's negative control (tests; the embedded engine knows
    /// only [`PurgeControl::SkipPhysical`], set through the purge's flag).
    pub fn set_purge_control(&self, c: PurgeControl) {
        self.engine.set_control(c);
    }

    /// The engine's settings the purge depends on, for `doctor`:
    /// (check name, safe, what was found).
    pub fn engine_checks(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        self.engine.doctor()
    }

    /// The engine's name (`rocksdb`, `postgresql`).
    pub fn engine_kind(&self) -> &'static str {
        self.engine.kind()
    }

    /// Another process took the vault over (on a cluster: this process's
    /// lease lapsed and a standby opened the vault).
    pub fn lease_lost(&self) -> bool {
        self.engine.lease_lost()
    }

    /// Whole-vault deletion (`pivault vault delete`): what the scan after
    /// the destruction looks for. Every row of the header table (the
    /// root-key slots and sealed signing keys: without a slot nothing below
    /// can be unwrapped with the passphrase) and every backup key; up to
    /// `sample` bucket keys and `sample` data keys drawn at random (all of
    /// them in a smaller vault): the scan's cost is its needles times the
    /// members' bytes (`pivault_verify.walk`), and the rows of every table
    /// went by the same drop, whose files are checked gone one by one.
    /// With how many rows each table held.
    pub(crate) fn destruction_needles(&self, sample: usize) -> Result<(Vec<Vec<u8>>, KeyCounts)> {
        let mut needles = Vec::new();
        let mut counts = KeyCounts::default();
        for t in [Table::Header, Table::Backups] {
            self.engine.scan(t, &[], &mut |_, v| {
                needles.push(v.to_vec());
                match t {
                    Table::Header => counts.header_rows += 1,
                    _ => counts.backup_keys += 1,
                }
                Ok(true)
            })?;
        }
        let buckets = self.draw(Table::Buckets, sample, &mut counts.bucket_rows)?;
        counts.bucket_rows_searched = buckets.len() as u64;
        needles.extend(buckets);
        let deks = self.draw(Table::Deks, sample, &mut counts.data_keys)?;
        counts.data_keys_searched = deks.len() as u64;
        needles.extend(deks);
        Ok((needles, counts))
    }

    /// Up to `n` values of `t`, each equally likely (reservoir sampling),
    /// counting the rows into `seen`.
    fn draw(&self, t: Table, n: usize, seen: &mut u64) -> Result<Vec<Vec<u8>>> {
        let mut drawn: Vec<Vec<u8>> = Vec::new();
        self.engine.scan(t, &[], &mut |_, v| {
            *seen += 1;
            if drawn.len() < n {
                drawn.push(v.to_vec());
            } else {
                let mut r = [0u8; 8];
                crypto::fill_random(&mut r);
                if let Some(slot) = drawn.get_mut((u64::from_le_bytes(r) % *seen) as usize) {
                    *slot = v.to_vec();
                }
            }
            Ok(true)
        })?;
        Ok(drawn)
    }

    /// Whole-vault deletion: what would keep a byte past it (checked
    /// before anything is destroyed; an embedded one has nothing to check).
    pub(crate) fn destroy_precheck(&self) -> Result<Vec<String>> {
        self.engine.destroy_precheck()
    }

    /// Whole-vault deletion: what the drop removes (read before it).
    pub(crate) fn drop_targets(&self) -> Result<DropTargets> {
        self.engine.drop_targets()
    }

    /// Whole-vault deletion: every table dropped, every member purged.
    pub(crate) fn destroy(&self, targets: &DropTargets) -> Result<PurgeEvidence> {
        self.cache.write().expect("cache lock").clear();
        self.engine.destroy(targets)
    }

    /// After [`Self::destroy`]: everything the engine keeps that can hold
    /// a byte of the vault, searched (`wal_after`: the drop's
    /// [`PurgeEvidence::wal_floor`]).
    pub(crate) fn scan_everything(
        &self,
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<ByteScan> {
        self.engine.scan_everything(needles, wal_after)
    }

    /// One row of the header table (a cluster's keystore only; see
    /// `header.rs`): a root-key slot or the sealed signing keys.
    pub(crate) fn header_row(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.engine.get(Table::Header, name.as_bytes())
    }

    /// Every row of the header table, by name, in one read.
    pub(crate) fn header_rows(&self) -> Result<HashMap<String, Vec<u8>>> {
        let mut rows = HashMap::new();
        self.engine.scan(Table::Header, &[], &mut |k, v| {
            rows.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
            Ok(true)
        })?;
        Ok(rows)
    }

    /// Writes and deletes (`None`) header rows in one synchronous commit.
    pub(crate) fn write_header_rows(&self, rows: Vec<(&str, Option<Vec<u8>>)>) -> Result<()> {
        let ops = rows
            .into_iter()
            .map(|(name, v)| match v {
                Some(v) => KeyOp::Put(Table::Header, name.as_bytes().to_vec(), v),
                None => KeyOp::Delete(Table::Header, name.as_bytes().to_vec()),
            })
            .collect();
        self.engine.write(ops, true)
    }

    /// The bucket a subject's keys live in: `H(subject) mod B`, so all keys
    /// of one subject share one bucket and a subject disposal touches one.
    pub fn bucket_of(&self, subject: SubjectId) -> u32 {
        let h = crypto::sha256(subject.as_bytes());
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % self.buckets
    }

    fn write(&self, ops: Vec<KeyOp>, force_sync: bool) -> Result<()> {
        self.engine.write(ops, self.sync || force_sync)
    }

    /// Creates every bucket key for a new vault, wrapped under the epoch-0 root.
    pub fn init_buckets(&self, root: &SecretKey, epoch: u64) -> Result<()> {
        let ops = (0..self.buckets)
            .map(|b| {
                let wrapped = crypto::wrap_key(
                    root,
                    &bucket_aad(self.vault, b, epoch),
                    &SecretKey::generate(),
                );
                KeyOp::Put(Table::Buckets, b.to_be_bytes().to_vec(), wrapped)
            })
            .collect();
        self.write(ops, true)
    }

    /// The vault's beacon secret (blind indexes, `beacon.rs`), created on
    /// first use (a vault of an older build gets one at its first open of
    /// this build) and written synced before anything is indexed under it.
    pub(crate) fn beacon_secret(&self, root: &SecretKey, epoch: u64) -> Result<SecretKey> {
        if let Some(wrapped) = self.engine.get(Table::Buckets, BEACON_SECRET)? {
            return crypto::unwrap_key(
                root,
                &beacon_aad(self.vault, epoch),
                &wrapped,
                "beacon secret",
            );
        }
        let key = SecretKey::generate();
        self.write(
            vec![KeyOp::Put(
                Table::Buckets,
                BEACON_SECRET.to_vec(),
                crypto::wrap_key(root, &beacon_aad(self.vault, epoch), &key),
            )],
            true,
        )?;
        Ok(key)
    }

    /// Reads bucket `b`'s key from the keystore and unwraps it with the
    /// epoch root (no cache).
    fn unwrap_bucket_key(&self, root: &SecretKey, epoch: u64, b: u32) -> Result<SecretKey> {
        let wrapped = self
            .engine
            .get(Table::Buckets, &b.to_be_bytes())?
            .ok_or(Error::Integrity("keystore (bucket key missing)"))?;
        crypto::unwrap_key(
            root,
            &bucket_aad(self.vault, b, epoch),
            &wrapped,
            "bucket key",
        )
    }

    /// Unwraps every bucket key into the cache in one scan (on open): on a
    /// cluster each bucket's first use would otherwise be a round trip of
    /// its own, and subjects spread over all buckets. A key that does not
    /// unwrap is left to its first use, which reports it.
    pub(crate) fn warm_bucket_keys(&self, root: &SecretKey, epoch: u64) -> Result<()> {
        let mut keys = HashMap::new();
        self.engine.scan(Table::Buckets, &[], &mut |k, v| {
            if let Ok(b) = <[u8; 4]>::try_from(k).map(u32::from_be_bytes)
                && b < self.buckets
                && let Ok(key) =
                    crypto::unwrap_key(root, &bucket_aad(self.vault, b, epoch), v, "bucket key")
            {
                keys.insert(b, key);
            }
            Ok(true)
        })?;
        self.cache.write().expect("cache lock").extend(keys);
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
        dek: &SecretKey,
        nonce: [u8; 12],
    ) -> Result<()> {
        let b = self.bucket_of(subject);
        let wrapped = self.with_bucket_key(root, epoch, b, |bk| {
            crypto::seal_with_nonce(
                bk,
                &dek_aad(self.vault, record, version),
                dek.expose(),
                nonce,
            )
        })?;
        self.write(
            vec![KeyOp::Put(
                Table::Deks,
                dek_key(b, record, version).to_vec(),
                wrapped,
            )],
            false,
        )
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
        let Some(wrapped) = self.engine.get(Table::Deks, &dek_key(b, record, version))? else {
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
        self.write(
            vec![KeyOp::Delete(
                Table::Deks,
                dek_key(b, record, version).to_vec(),
            )],
            sync,
        )
    }

    /// Re-wraps every bucket key from `from` (epoch, root) to `to` (epoch,
    /// root) in one synced batch. Bucket keys already under `to` are left as
    /// they are, so an interrupted ratchet can be finished by running it again.
    pub fn rewrap_buckets(&self, from: (u64, &SecretKey), to: (u64, &SecretKey)) -> Result<()> {
        let mut ops = Vec::new();
        // Every bucket key in one scan: on a cluster, 1,024 reads one at a
        // time were most of a disposal's ratchet step (about 0.25 s).
        let mut stored = HashMap::new();
        self.engine.scan(Table::Buckets, &[], &mut |k, v| {
            if let Ok(b) = <[u8; 4]>::try_from(k).map(u32::from_be_bytes)
                && b < self.buckets
            {
                stored.insert(b, v.to_vec());
            }
            Ok(true)
        })?;
        for b in 0..self.buckets {
            let wrapped = stored
                .remove(&b)
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
            ops.push(KeyOp::Put(
                Table::Buckets,
                b.to_be_bytes().to_vec(),
                crypto::wrap_key(to.1, &bucket_aad(self.vault, b, to.0), &key),
            ));
        }
        // Per-backup keys are carried across the ratchet the same way.
        let mut backups = Vec::new();
        self.engine.scan(Table::Backups, &[], &mut |k, v| {
            backups.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        for (k, wrapped) in backups {
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
            ops.push(KeyOp::Put(
                Table::Backups,
                id.to_vec(),
                crypto::wrap_key(to.1, &backup_aad(self.vault, &id, to.0), &key),
            ));
        }
        // The beacon secret too: it must outlive every ratchet (beacons
        // written under it stay valid), so it is never derived from a root.
        if let Some(wrapped) = self.engine.get(Table::Buckets, BEACON_SECRET)?
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
            ops.push(KeyOp::Put(
                Table::Buckets,
                BEACON_SECRET.to_vec(),
                crypto::wrap_key(to.1, &beacon_aad(self.vault, to.0), &key),
            ));
        }
        self.write(ops, true)?;
        self.cache.write().expect("cache lock").clear();
        Ok(())
    }

    /// Deletes the wrapped DEKs of many record versions in one synced batch
    /// (disposal step 2).
    pub fn delete_deks(&self, keys: &[(SubjectId, RecordId, u32)]) -> Result<()> {
        let ops = keys
            .iter()
            .map(|(subject, record, version)| {
                KeyOp::Delete(
                    Table::Deks,
                    dek_key(self.bucket_of(*subject), *record, *version).to_vec(),
                )
            })
            .collect();
        self.write(ops, true)
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
        self.engine.scan(Table::Deks, &prefix, &mut |k, v| {
            if k.len() == 24 {
                out.push((
                    u32::from_be_bytes(k[20..24].try_into().expect("4 bytes")),
                    v.to_vec(),
                ));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every stored key of each of `records`, whatever bucket it is in, as
    /// (bucket, whether it unwraps under that bucket's live key). A row that
    /// does not read names a subject nothing verified, and a changed one
    /// sends every lookup of its keys to the wrong bucket; a key row moved
    /// to another bucket does not unwrap there. For a few records, one prefix
    /// read a bucket each; for more, one scan of every key.
    pub(crate) fn keys_anywhere(
        &self,
        root: &SecretKey,
        epoch: u64,
        records: &BTreeSet<RecordId>,
    ) -> Result<HashMap<RecordId, Vec<(u32, bool)>>> {
        let mut found: Vec<(u32, RecordId, u32, Vec<u8>)> = Vec::new();
        let mut visit = |k: &[u8], v: &[u8]| -> Result<bool> {
            if k.len() == 24 {
                let (b, r, version) = Self::parse_dek_key(k)?;
                if records.contains(&r) {
                    found.push((b, r, version, v.to_vec()));
                }
            }
            Ok(true)
        };
        if records.len() <= 4 {
            for r in records {
                for b in 0..self.buckets {
                    let mut prefix = [0u8; 20];
                    prefix[..4].copy_from_slice(&b.to_be_bytes());
                    prefix[4..].copy_from_slice(r.as_bytes());
                    self.engine.scan(Table::Deks, &prefix, &mut visit)?;
                }
            }
        } else {
            self.engine.scan(Table::Deks, &[], &mut visit)?;
        }
        let mut out: HashMap<RecordId, Vec<(u32, bool)>> = HashMap::new();
        for (b, r, version, wrapped) in found {
            let unwraps = self.with_bucket_key(root, epoch, b, |bk| {
                crypto::unwrap_key(bk, &dek_aad(self.vault, r, version), &wrapped, "data key")
                    .is_ok()
            })?;
            out.entry(r).or_default().push((b, unwraps));
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
        let mut batch = Vec::new();
        let mut rewrapped = 0;
        let mut deleted = Vec::new();
        let mut deleted_wrapped = Vec::new();
        let mut replaced = Vec::new();
        for &b in buckets {
            let old = self.unwrap_bucket_key(root, epoch, b)?;
            replaced.push((b, one_way_name(self.vault.as_bytes(), b, &old)));
            let new = SecretKey::generate();
            let mut rows = Vec::new();
            self.engine
                .scan(Table::Deks, &b.to_be_bytes(), &mut |k, v| {
                    rows.push((k.to_vec(), v.to_vec()));
                    Ok(true)
                })?;
            for (k, v) in rows {
                if k.len() != 24 {
                    return Err(Error::Integrity("data key name"));
                }
                let record = RecordId::from_slice(&k[4..20])?;
                let version = u32::from_be_bytes(k[20..24].try_into().expect("4 bytes"));
                if destroy(record, version) {
                    batch.push(KeyOp::Delete(Table::Deks, k));
                    deleted.push((record, version));
                    deleted_wrapped.push(v);
                    continue;
                }
                let aad = dek_aad(self.vault, record, version);
                let dek = crypto::unwrap_key(&old, &aad, &v, "data key").map_err(|_| {
                    Error::RotationBlocked(format!(
                        "the data key of record {record} version {version} (bucket {b}) cannot be unwrapped"
                    ))
                })?;
                batch.push(KeyOp::Put(
                    Table::Deks,
                    k,
                    crypto::wrap_key(&new, &aad, &dek),
                ));
                rewrapped += 1;
            }
            batch.push(KeyOp::Put(
                Table::Buckets,
                b.to_be_bytes().to_vec(),
                crypto::wrap_key(root, &bucket_aad(self.vault, b, epoch), &new),
            ));
        }
        Ok(Rotation {
            batch,
            buckets: buckets.to_vec(),
            rewrapped,
            deleted,
            deleted_wrapped,
            replaced,
        })
    }

    /// The one-way name of bucket `b`'s key as its row holds it now (read
    /// from the engine, not the cache), for a disposal's check that no key
    /// its rotation replaced is back.
    pub(crate) fn bucket_key_name(&self, root: &SecretKey, epoch: u64, b: u32) -> Result<[u8; 32]> {
        let key = self.unwrap_bucket_key(root, epoch, b)?;
        Ok(one_way_name(self.vault.as_bytes(), b, &key))
    }

    /// Writes a planned rotation in one synced batch and drops the rotated
    /// buckets' cached keys.
    pub(crate) fn commit_rotation(&self, r: Rotation) -> Result<()> {
        self.write(r.batch, true)?;
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

    /// Physical purge (disposal step 5) by the engine: no old copy of a
    /// deleted or re-wrapped key of `buckets`, or of any bucket or backup
    /// key, left where the engine keeps bytes (see each engine).
    pub fn purge(&self, buckets: &[u32], skip_physical: bool) -> Result<PurgeEvidence> {
        self.engine.purge(buckets, skip_physical)
    }

    /// Every place of the keystore (every file, on every member of a
    /// cluster) that contains any of `needles`.
    pub fn files_containing(&self, needles: &[Vec<u8>]) -> Result<Vec<String>> {
        self.engine.files_containing(needles)
    }

    /// The places that can hold a wrapped DEK of one of `buckets` that
    /// contain any of `needles`, and how many places were scanned: the
    /// verification byte scan of disposal step 7 (each engine says which).
    /// `wal_after`: the purge's [`PurgeEvidence::wal_floor`].
    pub fn files_containing_for_buckets(
        &self,
        buckets: &[u32],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<ByteScan> {
        self.engine.scan_for(buckets, needles, wal_after)
    }

    /// Which of `copies` (files an earlier byte scan found needles in)
    /// are still there.
    pub(crate) fn copies_present(&self, copies: &[FoundCopy]) -> Result<Vec<FoundCopy>> {
        self.engine.copies_present(copies)
    }

    /// Number of wrapped DEKs stored (for `doctor` and tests).
    pub fn dek_count(&self) -> Result<u64> {
        let mut n = 0;
        self.engine.scan(Table::Deks, &[], &mut |_, _| {
            n += 1;
            Ok(true)
        })?;
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
        self.engine.get(
            Table::Deks,
            &dek_key(self.bucket_of(subject), record, version),
        )
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
        self.write(
            vec![KeyOp::Put(
                Table::Backups,
                id.to_vec(),
                crypto::wrap_key(root, &backup_aad(self.vault, id, epoch), key),
            )],
            true,
        )
    }

    /// A backup's key K_b, or `None` once it was destroyed.
    pub(crate) fn backup_key(
        &self,
        root: &SecretKey,
        epoch: u64,
        id: &[u8; 16],
    ) -> Result<Option<SecretKey>> {
        let Some(wrapped) = self.engine.get(Table::Backups, id)? else {
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
        self.engine.get(Table::Backups, id)
    }

    /// Deletes a backup key (synced); the ratchet and purge that follow make
    /// every older copy of it useless and then absent.
    pub(crate) fn delete_backup_key(&self, id: &[u8; 16]) -> Result<()> {
        self.write(vec![KeyOp::Delete(Table::Backups, id.to_vec())], true)
    }

    /// IDs of every stored backup key.
    pub(crate) fn backup_key_ids(&self) -> Result<Vec<[u8; 16]>> {
        let mut out = Vec::new();
        self.engine.scan(Table::Backups, &[], &mut |k, _| {
            out.push(
                k.try_into()
                    .map_err(|_| Error::Integrity("keystore (backup key name)"))?,
            );
            Ok(true)
        })?;
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
        self.engine.scan(Table::Deks, &[], &mut |k, v| {
            f(k, v)?;
            Ok(true)
        })
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
        let mut ops = Vec::new();
        for (b, record, version, dek) in items {
            if *b >= self.buckets {
                return Err(Error::Integrity("backup (bucket out of range)"));
            }
            let wrapped = self.with_bucket_key(root, epoch, *b, |bk| {
                crypto::wrap_key(bk, &dek_aad(self.vault, *record, *version), dek)
            })?;
            ops.push(KeyOp::Put(
                Table::Deks,
                dek_key(*b, *record, *version).to_vec(),
                wrapped,
            ));
        }
        self.write(ops, true)
    }

    /// A snapshot of the keystore (the negative control of the purge:
    /// while it is held, old versions stay pinned and the purge must fail).
    pub(crate) fn snapshot(&self) -> Result<Box<dyn engine::Held + '_>> {
        self.engine.hold_snapshot()
    }

    /// Number of key buckets.
    pub fn bucket_count(&self) -> u32 {
        self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::{contains_any, scan_dir_counted};

    #[test]
    fn the_directory_scan_finds_a_needle_in_any_file_and_follows_no_symbolic_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, outside) = (tmp.path().join("vault"), tmp.path().join("outside"));
        std::fs::create_dir_all(dir.join("keystore")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let needle = b"0123456789abcdef01234567".to_vec();
        let mut held = b"head".to_vec();
        held.extend(&needle);
        std::fs::write(dir.join("keystore/000009.log"), &held).unwrap();
        std::fs::write(dir.join("header"), b"nothing").unwrap();
        let scan = scan_dir_counted(&dir, std::slice::from_ref(&needle)).unwrap();
        assert_eq!(scan.hits, vec!["keystore/000009.log".to_owned()]);
        assert_eq!(scan.scanned, 2);
        // The key bytes moved out through a link: not vouched for.
        std::fs::rename(dir.join("keystore/000009.log"), outside.join("log")).unwrap();
        std::os::unix::fs::symlink(outside.join("log"), dir.join("keystore/000009.log")).unwrap();
        let e = scan_dir_counted(&dir, std::slice::from_ref(&needle)).unwrap_err();
        assert!(e.to_string().contains("000009.log"), "{e}");
        // A link to a directory above: an error, not a scan for ever.
        std::fs::remove_file(dir.join("keystore/000009.log")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("keystore/up")).unwrap();
        assert!(scan_dir_counted(&dir, std::slice::from_ref(&needle)).is_err());
    }

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
