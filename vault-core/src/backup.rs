//! Backups of the record data (REQ-DEF-02, DESIGN §4.2 "residual copies").
//!
//! A backup is one file holding the record ciphertexts, their index entries,
//! the collection schemas and the keystore's wrapped data keys — never the
//! header, never the users, the audit trail, the ledger or the certificates.
//! It is sealed under its own random backup key K_b:
//!
//! ```text
//! file   = MAGIC(16) | u32 len | preamble (JSON, IDs and times only) | frame* (the last one flagged)
//! frame  = u32 len | AEAD(K_b, entries, aad = "backup-chunk" | vault | backup | SHA-256(preamble) | index | last)
//! entry  = tag u8 | u32 len | key | u32 len | value
//! tag 1  = bucket key b:   AEAD(K_b, BK_b, aad = "backup-bucket" | vault | backup | b)
//! tags 2..5 = raw rows of collections, records, by_subject, by_collection
//! tag 6  = wrapped DEK, as stored in the keystore (under BK_b)
//! ```
//!
//! K_b lives only in the live keystore, wrapped under the epoch root and
//! re-wrapped by every ratchet like a bucket key, so the live header reaches
//! it after any number of disposals while a copy of the file alone (or with
//! an old header) reaches nothing. The catalogue row (records DB, CF
//! `backups`) holds the ID, times and location. Expiry deletes K_b, ratchets
//! the epoch and purges the keystore: the file is then crypto-erased.
//!
//! Restore replaces the record data with the backup's, replaying the
//! disposal ledger first: a record disposed before or after the backup is
//! written as a "disposed" tombstone naming its certificate and its data key
//! is never written; every other data key is re-wrapped under the *live* key
//! of its bucket (the backup's bucket keys never enter the keystore).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::disposal::{ResidualBackup, UnreadRow};
use super::{Context, Session, Vault};
use crate::access::Permission;
use crate::audit::Channel;
use crate::crypto::{self, Aad};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::ids::{BackupId, RecordId};
use crate::keystore::Keystore;
use crate::secret::SecretKey;
use crate::store::{self, RecordRow, RecordState};

const MAGIC: &[u8; 16] = b"pivault-backup\x00\x01";
/// Plaintext bytes per frame before it is sealed.
const CHUNK: usize = 1 << 20;
/// Largest frame accepted when reading (a bound for hostile files).
const MAX_FRAME: usize = 64 << 20;
const MAX_PREAMBLE: usize = 64 << 10;

const TAG_BUCKET: u8 = 1;
const TAG_COLLECTION: u8 = 2;
const TAG_RECORD: u8 = 3;
const TAG_BY_SUBJECT: u8 = 4;
const TAG_BY_COLLECTION: u8 = 5;
const TAG_DEK: u8 = 6;

/// Default lifetime of a backup (its key is destroyed at expiry).
pub const DEFAULT_BACKUP_DAYS: u32 = 90;

/// The catalogue row of a backup (no key material, no personal information).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BackupRow {
    id: String,
    created_ms: i64,
    expires_ms: i64,
    location: String,
    records: u64,
    keys: u64,
    bytes: u64,
    by: String,
    /// `creating`, `active`, `destroying`, or `destroyed` once K_b is gone.
    state: String,
    destroyed_ms: Option<i64>,
}

/// A backup as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupInfo {
    /// Backup ID.
    pub id: BackupId,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Expiry, unix ms: its key is destroyed then.
    pub expires_ms: i64,
    /// Where the file was written.
    pub location: String,
    /// Record rows in it.
    pub records: u64,
    /// Wrapped data keys in it.
    pub keys: u64,
    /// File size.
    pub bytes: u64,
    /// `active` (restorable), `creating` (being written, or left so by a
    /// failure: a residual copy until destroyed), `destroying` (its key
    /// deleted, the erasure not yet verified: still a residual copy, tried
    /// again) or `destroyed` (key destroyed: crypto-erased).
    pub state: String,
    /// When its key was destroyed.
    pub destroyed_ms: Option<i64>,
}

impl BackupRow {
    fn info(&self) -> Result<BackupInfo> {
        Ok(BackupInfo {
            id: self.id.parse()?,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            location: self.location.clone(),
            records: self.records,
            keys: self.keys,
            bytes: self.bytes,
            state: self.state.clone(),
            destroyed_ms: self.destroyed_ms,
        })
    }
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: Option<BackupId>,
    /// Live records restored (readable again).
    pub restored: u64,
    /// Records in the backup that the disposal ledger names: written as
    /// "disposed" tombstones, their keys never restored.
    pub disposed_skipped: u64,
    /// Live records that read and were kept as they are (a restore never
    /// removes or rolls back a live record).
    pub kept: u64,
    /// Live records that could not be read (key missing, tampered row) and
    /// were replaced by their backed-up version.
    pub repaired: u64,
    /// Collections the backup brought back.
    pub collections_restored: u64,
    /// Live records that could not be read and are under legal hold, or may
    /// be (a hold on a subject of their keys' bucket: an unreadable row's
    /// subject is unverified), or whose keys are in another bucket than their
    /// row's subject's (the row changed without the vault's key): left as
    /// they are, since a repair destroys the current version's key.
    pub held_unrepaired: u64,
}

/// The catalogue state of a backup whose key is being destroyed: its
/// erasure not yet verified.
const DESTROYING: &str = "destroying";

/// The catalogue state of a backup being written. Its row is written
/// before its file and its key, so that from the moment a copy can exist
/// a disposal counts it as a residual copy: before, a key stored whose row's
/// write then failed was a copy no certificate named, deleted by the next
/// sweep without a purge. A row left `creating` (a failure or a crash
/// before the backup was complete) is destroyed as an expired one is.
const CREATING: &str = "creating";

/// Where a backup whose key had no catalogue row was written: unknown (an
/// insider's, or a build's from before [`CREATING`]).
const UNKNOWN_LOCATION: &str = "unknown (a backup key found without its catalogue row)";

/// The clear preamble of a backup file (IDs and times only).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Preamble {
    format: String,
    vault_id: String,
    backup_id: String,
    created_ms: i64,
    expires_ms: i64,
    buckets: u32,
    note: String,
}

fn chunk_aad(vault: &[u8; 16], backup: &[u8; 16], pre_hash: &[u8; 32], i: u64, last: bool) -> Aad {
    Aad::new("backup-chunk")
        .part(vault)
        .part(backup)
        .part(pre_hash)
        .part(&i.to_be_bytes())
        .part(&[u8::from(last)])
}

fn bucket_aad(vault: &[u8; 16], backup: &[u8; 16], b: u32) -> Aad {
    Aad::new("backup-bucket")
        .part(vault)
        .part(backup)
        .part(&b.to_be_bytes())
}

/// Streams entries into sealed frames.
struct FrameWriter<'a, W: Write> {
    out: W,
    key: &'a SecretKey,
    vault: [u8; 16],
    backup: [u8; 16],
    pre_hash: [u8; 32],
    buf: zeroize::Zeroizing<Vec<u8>>,
    index: u64,
    bytes: u64,
}

impl<W: Write> FrameWriter<'_, W> {
    fn entry(&mut self, tag: u8, k: &[u8], v: &[u8]) -> Result<()> {
        self.buf.push(tag);
        self.buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(k);
        self.buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(v);
        if self.buf.len() >= CHUNK {
            self.frame(false)?;
        }
        Ok(())
    }

    fn frame(&mut self, last: bool) -> Result<()> {
        let aad = chunk_aad(&self.vault, &self.backup, &self.pre_hash, self.index, last);
        let sealed = crypto::seal(self.key, &aad, &self.buf);
        self.out.write_all(&(sealed.len() as u32).to_be_bytes())?;
        self.out.write_all(&sealed)?;
        self.bytes += 4 + sealed.len() as u64;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }
}

/// Reads the preamble of a backup file.
fn read_preamble(r: &mut impl Read) -> Result<(Preamble, [u8; 32])> {
    let bad = || Error::Integrity("backup file");
    let mut magic = [0u8; 16];
    r.read_exact(&mut magic).map_err(|_| bad())?;
    if &magic != MAGIC {
        return Err(Error::UnsupportedFormat("backup file"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| bad())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_PREAMBLE {
        return Err(bad());
    }
    let mut pre = vec![0u8; len];
    r.read_exact(&mut pre).map_err(|_| bad())?;
    let p: Preamble = serde_json::from_slice(&pre).map_err(|_| bad())?;
    Ok((p, crypto::sha256(&pre)))
}

/// Decrypts every frame of a backup file in order and calls `f` with each
/// entry. Any changed, missing, reordered or extra byte is an integrity error.
fn read_entries(
    path: &Path,
    key: &SecretKey,
    vault: &[u8; 16],
    backup: &[u8; 16],
    mut f: impl FnMut(u8, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let bad = || Error::Integrity("backup file");
    let mut r = BufReader::new(std::fs::File::open(path)?);
    let (_, pre_hash) = read_preamble(&mut r)?;
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).map_err(|_| bad())?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(bad());
        }
        let mut sealed = vec![0u8; len];
        r.read_exact(&mut sealed).map_err(|_| bad())?;
        // A frame opens under exactly one of the two flags; the last one ends the file.
        let (plain, last) = match crypto::open(
            key,
            &chunk_aad(vault, backup, &pre_hash, index, false),
            &sealed,
            "backup file",
        ) {
            Ok(p) => (p, false),
            Err(_) => (
                crypto::open(
                    key,
                    &chunk_aad(vault, backup, &pre_hash, index, true),
                    &sealed,
                    "backup file",
                )?,
                true,
            ),
        };
        let mut p: &[u8] = &plain;
        while !p.is_empty() {
            let take = |p: &mut &[u8], n: usize| -> Result<Vec<u8>> {
                if p.len() < n {
                    return Err(bad());
                }
                let s: &[u8] = p;
                let (h, t) = s.split_at(n);
                *p = t;
                Ok(h.to_vec())
            };
            let tag = take(&mut p, 1)?[0];
            let kl = u32::from_be_bytes(take(&mut p, 4)?.try_into().expect("4")) as usize;
            let k = take(&mut p, kl)?;
            let vl = u32::from_be_bytes(take(&mut p, 4)?.try_into().expect("4")) as usize;
            let v = zeroize::Zeroizing::new(take(&mut p, vl)?);
            f(tag, &k, &v)?;
        }
        index += 1;
        if last {
            let mut extra = [0u8; 1];
            return match r.read(&mut extra)? {
                0 => Ok(()),
                _ => Err(bad()),
            };
        }
    }
}

impl Vault {
    fn authorize_backup(&self, s: &Session) -> Result<()> {
        // Admin or officer (the same pair that places legal holds).
        self.authorize_any(s, &[Permission::ManageUsers, Permission::RecordReview])
    }

    fn backup_row(&self, id: BackupId) -> Result<Option<BackupRow>> {
        self.store
            .get(store::CF_BACKUPS, id.as_bytes())?
            .map(|b| serde_json::from_slice(&b).map_err(|_| Error::Integrity("backup catalogue")))
            .transpose()
    }

    fn put_backup_row(&self, row: &BackupRow) -> Result<()> {
        let id: BackupId = row.id.parse()?;
        self.store.put_synced(
            store::CF_BACKUPS,
            id.as_bytes(),
            &serde_json::to_vec(row).expect("serialisable"),
            true,
        )
    }

    fn backup_rows(&self) -> Result<Vec<BackupRow>> {
        let mut rows: Vec<BackupRow> = self
            .store
            .scan_prefix(store::CF_BACKUPS, &[])?
            .into_iter()
            .map(|(_, v)| {
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("backup catalogue"))
            })
            .collect::<Result<_>>()?;
        rows.sort_by_key(|r| r.created_ms);
        Ok(rows)
    }

    /// The backups that hold copies now (active), for certificates.
    pub(crate) fn residual_backups(&self) -> Result<Vec<ResidualBackup>> {
        Ok(self
            .backup_rows()?
            .into_iter()
            // One being written, or whose erasure is not yet verified, may
            // exist and be read.
            .filter(|r| r.state == "active" || r.state == DESTROYING || r.state == CREATING)
            .map(|r| ResidualBackup {
                id: r.id,
                created_ms: r.created_ms,
                expires_ms: r.expires_ms,
                location: r.location,
                holds_records: None,
            })
            .collect())
    }

    /// For `doctor`: the active backups whose key is gone from the keystore
    /// (deleted without the vault: the catalogue says restorable, the file
    /// is not), those whose erasure is not yet verified (`destroying`, or
    /// `creating` left by a failure: residual copies until the next expiry
    /// run), and how many are active.
    pub(crate) fn backup_check(&self) -> Result<(usize, Vec<String>, Vec<String>)> {
        let (mut active, mut keyless, mut unverified) = (0, Vec::new(), Vec::new());
        for r in self.backup_rows()? {
            let id: BackupId = r.id.parse()?;
            match r.state.as_str() {
                "active" if self.keystore.wrapped_backup_key(id.as_bytes())?.is_none() => {
                    keyless.push(r.id)
                }
                "active" => active += 1,
                DESTROYING | CREATING => unverified.push(r.id),
                _ => {}
            }
        }
        Ok((active, keyless, unverified))
    }

    /// Writes a backup of the record data to `out` (a new file outside the
    /// vault directory), valid for `days` days. Admin or officer; audited.
    pub fn create_backup(&self, s: &Session, out: &Path, days: u32) -> Result<BackupInfo> {
        self.authorize_backup(s)?;
        let id = BackupId::new();
        let r = self.create_backup_inner(s, id, out, days);
        if r.is_err() {
            // Its row may be there, and its key: erased as an expiry would.
            // If that fails too, the row stays `creating` (a residual copy)
            // for the next sweep.
            let _ = self.abandon_backup(id, &s.ctx);
        }
        self.audit(
            Some(s.user),
            &s.ctx,
            "backup.create",
            vec![
                id.to_string(),
                format!(
                    "records:{}",
                    r.as_ref().map(|i| i.records).unwrap_or_default()
                ),
            ],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    fn create_backup_inner(
        &self,
        s: &Session,
        id: BackupId,
        out: &Path,
        days: u32,
    ) -> Result<BackupInfo> {
        if days == 0 {
            return Err(Error::invalid("a backup must be kept at least one day"));
        }
        let abs = |p: &Path| -> Result<PathBuf> {
            let parent = p
                .parent()
                .filter(|x| !x.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Ok(std::fs::canonicalize(parent)?.join(p.file_name().unwrap_or_default()))
        };
        let out_abs = abs(out)?;
        if out_abs.starts_with(std::fs::canonicalize(&self.dir)?) {
            return Err(Error::invalid(
                "write backups outside the vault directory (a copy beside the keystore would outlive disposals)",
            ));
        }
        // One batch at a time, and no record writes while the copy is taken,
        // so records and their keys are consistent. No write in flight
        // either: a record's write holds its bucket's lock until its event
        // is appended or the write undone, so every bucket's lock waits for
        // those; and none stranded by a failed undo (the fence), whose row
        // a restore after the next open's rollback would bring back live
        // without its event.
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        self.isolation.check_fence()?;
        let every_bucket: Vec<u32> = (0..self.info.buckets).collect();
        let _writes = self.isolation.exclusive(&every_bucket);
        let epoch = self.epoch.write().expect("epoch lock");
        let now = self.now();
        let expires_ms = now + i64::from(days) * 86_400_000;
        let preamble = Preamble {
            format: "pivault-backup/1".into(),
            vault_id: self.info.vault_id.to_string(),
            backup_id: id.to_string(),
            created_ms: now,
            expires_ms,
            buckets: self.info.buckets,
            note: "record ciphertexts and wrapped keys sealed under a backup key held only in this vault's keystore; no header; restorable only into this vault with its live header".into(),
        };
        let pre = serde_json::to_vec(&preamble).expect("serialisable");
        let mut row = BackupRow {
            id: id.to_string(),
            created_ms: now,
            expires_ms,
            location: out_abs.display().to_string(),
            records: 0,
            keys: 0,
            bytes: 0,
            by: s.user.to_string(),
            state: CREATING.into(),
            destroyed_ms: None,
        };
        let file = fsutil::create_private_file(out)?;
        if let Err(e) = self.put_backup_row(&row) {
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
        let kb = SecretKey::generate();
        let written = self.write_backup_file(file, &kb, id, &pre, &epoch);
        let (records, keys, bytes) = match written {
            Ok(x) => x,
            Err(e) => {
                // Never leave a half-written file behind (its key was never stored).
                let _ = std::fs::remove_file(out);
                return Err(e);
            }
        };
        if let Some(parent) = out_abs.parent() {
            fsutil::sync_dir(parent)?;
        }
        // The file is useless until its key is stored; from here it is restorable.
        self.keystore
            .put_backup_key(&epoch.root, epoch.number, id.as_bytes(), &kb)?;
        self.at_step("backup_key_stored");
        drop(epoch);
        row.records = records;
        row.keys = keys;
        row.bytes = bytes;
        row.state = "active".into();
        self.put_backup_row(&row)?;
        row.info()
    }

    /// After a failed creation: a row left `creating` whose key was never
    /// stored goes (its file is gone, or useless without the key); one
    /// whose key was stored is destroyed as an expired one is.
    fn abandon_backup(&self, id: BackupId, ctx: &Context) -> Result<()> {
        let row = {
            // Read under the batch lock: an expiry run may have destroyed it.
            let _batch = self.disposal_lock.lock().expect("disposal lock");
            match self.backup_row(id)? {
                Some(row) if row.state == CREATING => {
                    if self.keystore.wrapped_backup_key(id.as_bytes())?.is_none() {
                        return self.store.delete(store::CF_BACKUPS, id.as_bytes());
                    }
                    row
                }
                _ => return Ok(()),
            }
        };
        self.destroy_backup_key(row, None, ctx).map(|_| ())
    }

    /// Writes the body of a backup file; returns (records, keys, bytes).
    fn write_backup_file(
        &self,
        file: std::fs::File,
        kb: &SecretKey,
        id: BackupId,
        pre: &[u8],
        epoch: &super::Epoch,
    ) -> Result<(u64, u64, u64)> {
        let mut w = FrameWriter {
            out: BufWriter::new(file),
            key: kb,
            vault: *self.info.vault_id.as_bytes(),
            backup: *id.as_bytes(),
            pre_hash: crypto::sha256(pre),
            buf: zeroize::Zeroizing::new(Vec::with_capacity(CHUNK + 4096)),
            index: 0,
            bytes: (MAGIC.len() + 4 + pre.len()) as u64,
        };
        w.out.write_all(MAGIC)?;
        w.out.write_all(&(pre.len() as u32).to_be_bytes())?;
        w.out.write_all(pre)?;
        let (vault, backup) = (w.vault, w.backup);
        self.keystore
            .for_each_bucket_key(&epoch.root, epoch.number, |b, bk| {
                let wrapped = crypto::wrap_key(kb, &bucket_aad(&vault, &backup, b), bk);
                w.entry(TAG_BUCKET, &b.to_be_bytes(), &wrapped)
            })?;
        let mut records = 0u64;
        for (cf, tag) in [
            (store::CF_COLLECTIONS, TAG_COLLECTION),
            (store::CF_RECORDS, TAG_RECORD),
            (store::CF_BY_SUBJECT, TAG_BY_SUBJECT),
            (store::CF_BY_COLLECTION, TAG_BY_COLLECTION),
        ] {
            self.store.for_each(cf, |k, v| {
                if tag == TAG_RECORD {
                    records += 1;
                }
                w.entry(tag, k, v)
            })?;
        }
        let mut keys = 0u64;
        self.keystore.for_each_wrapped_dek(|k, v| {
            keys += 1;
            w.entry(TAG_DEK, k, v)
        })?;
        w.frame(true)?;
        let bytes = w.bytes;
        let file = w.out.into_inner().map_err(|e| Error::Io(e.to_string()))?;
        file.sync_all()?;
        Ok((records, keys, bytes))
    }

    /// Every backup in the catalogue (admin, officer), oldest first. Expired
    /// ones are destroyed first.
    pub fn backups(&self, s: &Session) -> Result<Vec<BackupInfo>> {
        self.authorize_backup(s)?;
        self.expire_due_backups(&s.ctx)?;
        self.backup_rows()?.iter().map(BackupRow::info).collect()
    }

    /// Destroys a backup's key now (admin, officer): the file is crypto-erased.
    pub fn expire_backup(&self, s: &Session, id: BackupId) -> Result<BackupInfo> {
        self.authorize_backup(s)?;
        let r = (|| {
            let row = self.backup_row(id)?.ok_or(Error::NotFound("backup"))?;
            // One whose erasure was not verified, or left `creating` by a
            // failure, is tried (again).
            if row.state != "active" && row.state != DESTROYING && row.state != CREATING {
                return Err(Error::AlreadyExists("backup destruction"));
            }
            self.destroy_backup_key(row, Some(s.user), &s.ctx)?
                .ok_or(Error::AlreadyExists("backup destruction"))
        })();
        if r.is_err() {
            self.audit(
                Some(s.user),
                &s.ctx,
                "backup.expire",
                vec![id.to_string()],
                r.as_ref().map(|_| ()),
                None,
            )?;
        }
        r
    }

    /// Destroys the key of every backup past its expiry, of every backup
    /// left `creating` (a failure or a crash before it was complete), and
    /// of any backup key without a catalogue row (an insider's, or a crash
    /// of a build that stored the key first): that one is given a
    /// `destroying` row first, so that it is a residual copy until its
    /// erasure is verified, not a key deleted without a purge. Called on
    /// open, before listing and before a restore.
    pub(crate) fn expire_due_backups(&self, ctx: &Context) -> Result<u64> {
        {
            // Under the batch lock: a creation writes its row, its key and
            // its row again under it.
            let _batch = self.disposal_lock.lock().expect("disposal lock");
            let known: std::collections::HashSet<[u8; 16]> = self
                .backup_rows()?
                .iter()
                .filter_map(|r| r.id.parse::<BackupId>().ok().map(|i| *i.as_bytes()))
                .collect();
            for id in self.keystore.backup_key_ids()? {
                if !known.contains(&id) {
                    let now = self.now();
                    self.put_backup_row(&BackupRow {
                        id: BackupId::from_bytes(id).to_string(),
                        // Taken now for all anyone can tell: it holds every record.
                        created_ms: now,
                        expires_ms: now,
                        location: UNKNOWN_LOCATION.into(),
                        records: 0,
                        keys: 0,
                        bytes: 0,
                        by: String::new(),
                        state: DESTROYING.into(),
                        destroyed_ms: None,
                    })?;
                }
            }
        }
        let now = self.now();
        let mut expired = 0;
        for row in self.backup_rows()? {
            if (row.state == "active" && row.expires_ms <= now)
                || row.state == DESTROYING
                || row.state == CREATING
            {
                match self.destroy_backup_key(row, None, ctx) {
                    Ok(Some(_)) => expired += 1,
                    // Completed, or destroyed, by another thread meanwhile.
                    Ok(None) => {}
                    // Not verified (audited): it stays `destroying`, counted
                    // as a residual copy, and is tried again next time.
                    Err(Error::DisposalFailed(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(expired)
    }

    /// Deletes K_b, ratchets the epoch (every older wrapping of K_b becomes
    /// useless), purges the keystore and checks that no keystore file still
    /// holds the wrapped K_b bytes. The catalogue row says `destroying`
    /// from before the key's deletion until that check passes, and only
    /// then `destroyed`: until then a disposal counts the backup as a
    /// residual copy and expiry tries again. A retry in this process scans
    /// for the bytes it kept; one after a restart has none and rests on the
    /// ratchet and the purge's checks.
    ///
    /// `seen` is the row as the caller read it; under the batch lock the
    /// row is read again, and `None` answers if it changed meanwhile (a
    /// creation completed, or another thread destroyed it).
    fn destroy_backup_key(
        &self,
        seen: BackupRow,
        actor: Option<crate::ids::UserId>,
        ctx: &Context,
    ) -> Result<Option<BackupInfo>> {
        let id: BackupId = seen.id.parse()?;
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        let Some(mut row) = self.backup_row(id)? else {
            return Ok(None);
        };
        let still = match seen.state.as_str() {
            CREATING => row.state == CREATING,
            _ => row.state == "active" || row.state == DESTROYING,
        };
        if !still {
            return Ok(None);
        }
        let wrapped = {
            let mut kept = self.kept_backup_keys.lock().expect("backup keys lock");
            match self.keystore.wrapped_backup_key(id.as_bytes())? {
                Some(w) => {
                    kept.insert(*id.as_bytes(), zeroize::Zeroizing::new(w.clone()));
                    Some(w)
                }
                None => kept.get(id.as_bytes()).map(|w| w.to_vec()),
            }
        };
        if row.state != DESTROYING {
            row.state = DESTROYING.into();
            self.put_backup_row(&row)?;
        }
        self.keystore.delete_backup_key(id.as_bytes())?;
        let before = self.epoch();
        let after = self.ratchet()?;
        self.audit(
            actor,
            ctx,
            "key.epoch",
            vec![
                format!("epoch:{before}"),
                format!("epoch:{after}"),
                id.to_string(),
            ],
            Ok(()),
            None,
        )?;
        let ev = self.keystore.purge(
            &[],
            self.purge_skip_flush
                .load(std::sync::atomic::Ordering::SeqCst),
        )?;
        let hits = match &wrapped {
            Some(w) => self.keystore.files_containing(std::slice::from_ref(w))?,
            None => Vec::new(),
        };
        let r = if ev.clean() && hits.is_empty() {
            self.kept_backup_keys
                .lock()
                .expect("backup keys lock")
                .remove(id.as_bytes());
            row.state = "destroyed".into();
            row.destroyed_ms = Some(self.now());
            self.put_backup_row(&row)
        } else {
            Err(Error::DisposalFailed(format!(
                "backup key destruction not verified: purge clean={} files holding the old key={hits:?}",
                ev.clean()
            )))
        };
        self.audit(
            actor,
            ctx,
            "backup.expire",
            vec![id.to_string(), format!("epoch:{after}")],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r?;
        row.info().map(Some)
    }

    /// Restores the record data from a backup of this vault (admin, officer).
    ///
    /// Needs this vault's live header (K_b is reached only through the live
    /// root). The whole file is authenticated before anything changes. The
    /// disposal ledger is replayed: a disposed record comes back only as a
    /// "disposed" tombstone, without its key. A restore merges: records
    /// missing from the vault come back, records that cannot be read are
    /// repaired from their backed-up version, and every live record that
    /// reads stays as it is — none is removed or rolled back, so a restore
    /// can never destroy a record (held or not) without a disposal's
    /// permission, holds and certificate. Users, holds, policies,
    /// certificates, the ledger and the audit trail stay as they are.
    /// Interrupted, it can be run again.
    pub fn restore_backup(&self, s: &Session, file: &Path) -> Result<RestoreReport> {
        self.authorize_backup(s)?;
        let mut id_target = "backup:unknown".to_owned();
        let r = (|| {
            let mut f = BufReader::new(std::fs::File::open(file)?);
            let (pre, _) = read_preamble(&mut f)?;
            drop(f);
            let id: BackupId = pre
                .backup_id
                .parse()
                .map_err(|_| Error::Integrity("backup file"))?;
            id_target = id.to_string();
            if pre.vault_id != self.info.vault_id.to_string() {
                return Err(Error::invalid("the backup belongs to another vault"));
            }
            self.expire_due_backups(&s.ctx)?;
            self.restore_inner(id, file)
        })();
        self.audit(
            Some(s.user),
            &s.ctx,
            "backup.restore",
            match &r {
                Ok(rep) => vec![
                    id_target,
                    format!("restored:{}", rep.restored),
                    format!("disposed_skipped:{}", rep.disposed_skipped),
                    format!("kept:{}", rep.kept),
                    format!("repaired:{}", rep.repaired),
                    format!("held_unrepaired:{}", rep.held_unrepaired),
                ],
                Err(_) => vec![id_target],
            },
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    fn restore_inner(&self, id: BackupId, file: &Path) -> Result<RestoreReport> {
        self.isolation.check_fence()?;
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        let epoch = self.epoch.write().expect("epoch lock");
        let kb = self
            .keystore
            .backup_key(&epoch.root, epoch.number, id.as_bytes())?
            .ok_or(Error::NotFound(
                "backup (its key was destroyed or it belongs to another vault)",
            ))?;
        let (vault, backup) = (*self.info.vault_id.as_bytes(), *id.as_bytes());
        // The ledger replay set: every record any disposal batch named, with its certificate.
        let skip_ledger = self
            .restore_skip_ledger
            .load(std::sync::atomic::Ordering::SeqCst);
        let disposed = if skip_ledger {
            HashMap::new()
        } else {
            self.disposed_records()?
        };
        // Pass 1: authenticate every frame, unwrap the backup's bucket keys,
        // note the disposed records the backup holds (pass 2 writes them as
        // tombstones; the checks before and after it read them), and find
        // which of its other records' live rows do not read (pass 2 repairs
        // them, where nothing stands against it).
        let mut bucket_keys: HashMap<u32, SecretKey> = HashMap::new();
        let mut disposed_in_backup: BTreeSet<RecordId> = BTreeSet::new();
        let mut unread_live: HashMap<RecordId, RecordRow> = HashMap::new();
        read_entries(file, &kb, &vault, &backup, |tag, k, v| {
            match tag {
                TAG_RECORD => {
                    let rid = RecordId::from_slice(k)?;
                    if disposed.contains_key(&rid)
                        || (!skip_ledger
                            && matches!(RecordRow::decode(v)?.state, RecordState::Disposed { .. }))
                    {
                        disposed_in_backup.insert(rid);
                    } else if let Some(l) = self.store.record(rid)?
                        && l.state == RecordState::Live
                    {
                        // Damaged: its row or key fails authentication, or
                        // its key is gone. Any other error (the keystore
                        // unreachable) is the restore's, not the record's.
                        match self.decrypt_with(&epoch.root, epoch.number, rid, &l) {
                            Ok(_) => {}
                            Err(Error::Integrity(_)) => {
                                unread_live.insert(rid, l);
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                TAG_BUCKET => {
                    let b = u32::from_be_bytes(
                        k.try_into().map_err(|_| Error::Integrity("backup file"))?,
                    );
                    let key =
                        crypto::unwrap_key(&kb, &bucket_aad(&vault, &backup, b), v, "backup file")?;
                    bucket_keys.insert(b, key);
                }
                TAG_COLLECTION..=TAG_DEK => {}
                _ => return Err(Error::Integrity("backup file")),
            }
            Ok(())
        })?;
        // A disposed record already live again (its row put back by someone
        // with the files), or one the backup holds with a key planted back,
        // refuses the restore before anything is written, as the check
        // after it would, but with the vault unchanged. A record of a batch
        // stopped before its tombstones is live until that batch disposes
        // of it.
        for rid in disposed.keys() {
            if matches!(self.store.record(*rid)?, Some(row) if row.state == RecordState::Live)
                && self.isolation.check_not_pending(*rid).is_ok()
            {
                return Err(Error::Integrity("restore (a disposed record is live)"));
            }
        }
        // Its key looked for in every bucket: a tombstone's subject is in
        // clear, and one deleted has none (pass 2 writes the backup's). A
        // record still live is a stopped batch's (refused above otherwise),
        // whose keys that batch destroys.
        let tombstoned: BTreeSet<RecordId> = disposed_in_backup
            .iter()
            .copied()
            .filter(|rid| {
                !matches!(self.store.record(*rid), Ok(Some(r)) if r.state == RecordState::Live)
            })
            .collect();
        if !self
            .keystore
            .keys_anywhere(&epoch.root, epoch.number, &tombstoned)?
            .is_empty()
        {
            return Err(Error::Integrity("restore (a disposed record has a key)"));
        }
        let unread_checks = self.unread_rows_check(
            &epoch.root,
            epoch.number,
            &unread_live
                .iter()
                .map(|(id, r)| (*id, r))
                .collect::<Vec<_>>(),
        )?;
        let mut report = RestoreReport {
            backup_id: Some(id),
            ..RestoreReport::default()
        };
        // A restore merges: it brings back what is missing or unreadable and
        // never removes a live record (removing is a disposal, with its
        // holds, its permission and its certificate). A live record that
        // reads is newer than or equal to its backed-up copy and stays.
        let mut ops: Vec<store::WriteOp<'_>> = Vec::new();
        let mut deks: Vec<(u32, RecordId, u32, SecretKey)> = Vec::new();
        let mut restored_versions: HashMap<RecordId, u32> = HashMap::new();
        let mut disposed_seen: Vec<RecordId> = Vec::new();
        read_entries(file, &kb, &vault, &backup, |tag, k, v| {
            match tag {
                TAG_COLLECTION if self.store.get(store::CF_COLLECTIONS, k)?.is_none() => {
                    ops.push((store::CF_COLLECTIONS, k.to_vec(), Some(v.to_vec())));
                    report.collections_restored += 1;
                }
                TAG_COLLECTION => {}
                TAG_RECORD => {
                    let rid = RecordId::from_slice(k)?;
                    let mut row = RecordRow::decode(v)?;
                    let live = self.store.record(rid)?;
                    let cert = disposed.get(&rid).cloned().or_else(|| match &row.state {
                        _ if skip_ledger => None,
                        RecordState::Disposed { certificate } => {
                            Some(certificate.clone().unwrap_or_default())
                        }
                        RecordState::Live => None,
                    });
                    if let Some(cert) = cert {
                        // Disposed (before or after the backup): a tombstone, never the data.
                        disposed_seen.push(rid);
                        report.disposed_skipped += 1;
                        if live.is_none() {
                            row.state = RecordState::Disposed {
                                certificate: (!cert.is_empty()).then_some(cert),
                            };
                            row.envelope.clear();
                            ops.push((store::CF_RECORDS, k.to_vec(), Some(row.encode())));
                        }
                        return Ok(());
                    }
                    let unreadable = match &live {
                        None => true,
                        // Without the ledger replay (the negative control),
                        // a tombstone is "repaired" too: that is the
                        // resurrection the replay prevents.
                        Some(l) if l.state != RecordState::Live => skip_ledger,
                        // Found in pass 1.
                        Some(_) => unread_live.contains_key(&rid),
                    };
                    if !unreadable || row.state != RecordState::Live {
                        report.kept += 1;
                        return Ok(());
                    }
                    // A repair destroys the current version's key: never
                    // under a legal hold (the damage may be undone), nor
                    // where one may apply: the row does not read, so the
                    // subject it names is unverified; nor when its keys are
                    // in another bucket than that subject's.
                    let blocked = match &live {
                        Some(l) if l.state == RecordState::Live => {
                            !matches!(unread_checks.get(&rid), Some(UnreadRow::Clear))
                        }
                        Some(l) => self.hold_on(rid, l.subject)?.is_some(),
                        None => false,
                    };
                    if blocked {
                        report.held_unrepaired += 1;
                        return Ok(());
                    }
                    if let Some(l) = &live {
                        // Repair: the damaged live row and every key of it go;
                        // the backed-up version and its key come back.
                        for (v, _) in self.keystore.record_keys(l.subject, rid)? {
                            self.keystore.delete_dek(l.subject, rid, v, true)?;
                        }
                        report.repaired += 1;
                    } else {
                        report.restored += 1;
                    }
                    restored_versions.insert(rid, row.version);
                    ops.push((store::CF_RECORDS, k.to_vec(), Some(v.to_vec())));
                }
                TAG_BY_SUBJECT => ops.push((store::CF_BY_SUBJECT, k.to_vec(), Some(v.to_vec()))),
                TAG_BY_COLLECTION => {
                    ops.push((store::CF_BY_COLLECTION, k.to_vec(), Some(v.to_vec())))
                }
                TAG_DEK => {
                    let (b, rid, version) = Keystore::parse_dek_key(k)?;
                    // Only the key of a record restored above, at its version:
                    // never a disposed record's key.
                    if restored_versions.get(&rid) == Some(&version) && !disposed.contains_key(&rid)
                    {
                        let bk = bucket_keys.get(&b).ok_or(Error::Integrity("backup file"))?;
                        let dek = self.keystore.unwrap_dek_with(bk, rid, version, v)?;
                        deks.push((b, rid, version, dek));
                    }
                }
                _ => {}
            }
            if ops.len() >= 30_000 {
                self.store.write_ops(&ops)?;
                ops.clear();
            }
            if deks.len() >= 10_000 {
                self.keystore
                    .put_restored_deks(&epoch.root, epoch.number, &deks)?;
                deks.clear();
            }
            Ok(())
        })?;
        self.store.write_ops(&ops)?;
        self.keystore
            .put_restored_deks(&epoch.root, epoch.number, &deks)?;
        // Verify before serving: no disposed record is live or has a key.
        // (Checked before the writes too; kept after them as a safeguard.)
        for rid in disposed_seen {
            match self.store.record(rid)? {
                Some(RecordRow {
                    state: RecordState::Disposed { .. },
                    subject,
                    ..
                }) if !self.keystore.record_keys(subject, rid)?.is_empty() => {
                    return Err(Error::Integrity("restore (a disposed record has a key)"));
                }
                Some(RecordRow {
                    state: RecordState::Disposed { .. },
                    ..
                })
                | None => {}
                // In a batch stopped before its tombstones: live until that
                // batch disposes of it (none runs during a restore, which
                // holds the batch lock). The restore skipped it, keys and all.
                Some(_) if self.isolation.check_not_pending(rid).is_err() => {}
                Some(_) => return Err(Error::Integrity("restore (a disposed record is live)")),
            }
        }
        drop(epoch);
        Ok(report)
    }
}

/// The `Context` of automatic expiry on open.
pub(crate) fn system_context() -> Context {
    Context {
        channel: Channel::System,
        source: None,
        request_id: None,
    }
}
