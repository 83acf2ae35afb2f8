//! A deletion's journal, and the resumption of a deletion whose process
//! was killed (or lost its primary) between the keystore's drop and the
//! certificate.
//!
//! Once the drop commits, the vault's keys are gone, and with them the key
//! that signs its certificates: a process that dies then leaves a
//! destroyed vault without a certificate. So, before the drop, the
//! deleting process writes into the `DELETED` marker everything the rest
//! needs: the certificate's body up to the drop's evidence, the trail up
//! to the checkpoint covering the deletion, what the drop removes, the
//! first bytes of the wrapped keys and ciphertexts to search for, and the
//! certificate signing key. All of it is sealed (AES-256-GCM) under a key
//! derived from the custodian's unlock key, so finishing takes the
//! custodian's passphrase, as the deletion did; the wrapped keys are
//! kept only as far as a scan needs (their first bytes), so the journal
//! is no path back to a key. The marker is locked by the process working
//! on it, so no second process resumes a deletion that is still running.

use super::*;
use std::io::Write as _;

/// How many first bytes of a wrapped key (or a ciphertext) the scans
/// search for: 12 of nonce and 12 of ciphertext, never found by chance
/// (2^-192), and too few to unwrap anything.
pub(crate) const NEEDLE_PREFIX: usize = 24;

/// `/1` held a copy of the whole trail too (so it grew with the vault's
/// trail); it is refused, naming the build to finish it with.
const FORMAT: &str = "pivault-deletion-journal/2";

/// The first [`NEEDLE_PREFIX`] bytes of each of `items`.
pub(crate) fn prefixes(items: &[Vec<u8>]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|n| n[..n.len().min(NEEDLE_PREFIX)].to_vec())
        .collect()
}

/// What a deletion keeps in its marker, sealed.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Journal {
    pub vault_id: String,
    /// The certificate's body before the drop's evidence.
    pub body: Value,
    /// The byte scan's opening words (the needles' counts).
    pub searched: String,
    /// The certificate signing key's seed, hex.
    pub certificate_key: String,
    /// The audit trail's public key, hex.
    pub audit_key: String,
    /// The last seq of the trail handed over (the checkpoint's): the trail
    /// itself is read where it is kept (the directory's files, or the
    /// records cluster), not copied here.
    pub trail_to_seq: u64,
    /// The checkpoint covering `vault.delete` (seq, head hash hex).
    pub checkpoint: (u64, String),
    /// First bytes of every wrapped key searched for, hex.
    pub needles: Vec<String>,
    /// First bytes of the sampled record ciphertexts, hex.
    pub ciphertexts: Vec<String>,
    /// What the keystore's drop removes.
    pub keystore: crate::keystore::DropTargets,
    /// The keystore's engine (`postgresql`, `rocksdb`).
    pub engine: String,
}

impl Drop for Journal {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.certificate_key);
    }
}

/// The journal's key: derived from the custodian's unlock key, bound to
/// the vault.
pub(crate) fn key(unlock: &SecretKey, vault: VaultId) -> SecretKey {
    SecretKey::from_bytes(crypto::mac(unlock, "deletion journal", vault.as_bytes()))
}

fn aad(vault_id: &str) -> crypto::Aad {
    crypto::Aad::new("deletion-journal").part(vault_id.as_bytes())
}

/// Writes the journal as the marker (new, private, synced, the directory
/// synced) and returns the file, locked until it is dropped.
pub(crate) fn write(marker: &Path, j: &Journal, key: &SecretKey) -> Result<std::fs::File> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(j).map_err(|_| Error::Integrity("deletion journal"))?,
    );
    let sealed = crypto::seal(key, &aad(&j.vault_id), &plain);
    let text = serde_json::to_vec(&json!({
        "format": FORMAT,
        "vault_id": j.vault_id,
        "sealed": hex::encode(sealed),
    }))
    .map_err(|_| Error::Integrity("deletion journal"))?;
    // Names the file (relative to the vault) and what did not happen.
    let not_written = |e: Error| match e {
        Error::Io(m) => Error::Io(format!(
            "{m}; the deletion's journal could not be written, so nothing was deleted"
        )),
        e => e,
    };
    let io = |e: std::io::Error| not_written(Error::io_at(marker, e));
    let mut f = fsutil::create_private_file(marker).map_err(not_written)?;
    let written = (|| -> Result<()> {
        f.try_lock().map_err(|_| Error::VaultBusy)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        if let Some(dir) = marker.parent() {
            fsutil::sync_dir(dir).map_err(not_written)?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        // Nothing is destroyed yet: a half-written marker would only keep
        // the vault shut.
        let _ = std::fs::remove_file(marker);
        return Err(e);
    }
    Ok(f)
}

/// Whether `path` is still the file `f` is open on: not removed, nor
/// another file put in its place (a lock is on the open file, the marker
/// is found by its name).
pub(crate) fn is_at(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// What [`resume_deletion`] found.
#[derive(Debug)]
pub enum Resumed {
    /// The drop had not committed: nothing was destroyed, the marker is
    /// removed and the vault opens again.
    NothingDeleted { vault_id: String },
    /// The drop had committed: its purge and checks finished now, and the
    /// certificate issued.
    Deleted(Box<VaultDeleted>),
}

/// Finishes the deletion of the vault in `dir` that a killed process (or
/// one that lost its primary) began: `passphrase` the custodian's. If the
/// keystore's drop never committed, nothing was destroyed and the vault
/// is given back ([`Resumed::NothingDeleted`]). Otherwise the purge's
/// rounds and checks run on every member, every member's files are
/// searched, the records go (on a records cluster: dropped and searched),
/// and the certificate is signed with the journal's key. The trail handed
/// over ends at the checkpoint taken before the drop: the verification
/// is the certificate's.
pub fn resume_deletion(dir: &Path, passphrase: &SecretString) -> Result<Resumed> {
    let marker = dir.join(DELETED_MARKER);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&marker)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound("a deletion to resume (no DELETED marker)"));
        }
        Err(e) => return Err(Error::io_at(&marker, e)),
    };
    // Held by a deletion still running in another process.
    file.try_lock().map_err(|_| Error::VaultBusy)?;
    // Removed (a resume that gave the vault back) or replaced between
    // the open and the lock: what was locked is not the marker.
    if !is_at(&file, &marker) {
        return Err(Error::VaultBusy);
    }
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut text)?;
    let outer: Value =
        serde_json::from_slice(&text).map_err(|_| Error::Integrity("deletion journal"))?;
    if outer["format"] == "pivault-deletion-journal/1" {
        return Err(Error::Integrity(
            "deletion journal (written by an earlier build of pivault: finish the deletion with that build's pivault vault delete --resume)",
        ));
    }
    let (Some(FORMAT), Some(vault_id), Some(sealed)) = (
        outer["format"].as_str(),
        outer["vault_id"].as_str(),
        outer["sealed"].as_str().and_then(|h| hex::decode(h).ok()),
    ) else {
        return Err(Error::Integrity("deletion journal"));
    };
    let info = header::read_info(&Layout::of(dir).header)?;
    if info.vault_id.to_string() != vault_id {
        return Err(Error::Integrity("deletion journal (another vault's)"));
    }
    let unlock = crypto::derive_unlock_key(passphrase, &info.salt, info.kdf)?;
    let plain = crypto::open(
        &key(&unlock, info.vault_id),
        &aad(vault_id),
        &sealed,
        "journal",
    )
    .map_err(|_| Error::WrongPassphrase)?;
    let j: Journal =
        serde_json::from_slice(&plain).map_err(|_| Error::Integrity("deletion journal"))?;
    drop(plain);
    let records_cfg = crate::store::postgres::read_config(dir)?;
    let trail = crate::audit::TrailReader::at(
        &Layout::of(dir).audit,
        records_cfg.clone().map(|c| (c, info.vault_id)),
    )?;
    check_bound(&trail, &j)?;
    let unhex = |v: &[String]| -> Result<Vec<Vec<u8>>> {
        v.iter()
            .map(|h| hex::decode(h).map_err(|_| Error::Integrity("deletion journal")))
            .collect()
    };
    let needles = unhex(&j.needles)?;
    let ciphertexts = unhex(&j.ciphertexts)?;
    let embedded = j.engine == "rocksdb";
    let finished = if embedded {
        finish_embedded(dir, &info, &j, &needles)?
    } else {
        let cfg = crate::keystore::postgres::PgConfig::read(dir)?
            .ok_or_else(|| Error::NotAVault("the vault's keystore.json is missing".into()))?;
        crate::keystore::postgres::resume_deletion(cfg, &j.keystore, &needles)?
    };
    let Some((purge, scan)) = finished else {
        // Nothing was destroyed (the process died before the point of no
        // return): the vault is as it was. The marker goes while its lock
        // is held, so a second resume finds either the lock or no marker.
        if !is_at(&file, &marker) {
            return Err(Error::Integrity(
                "the DELETED marker was replaced during the resume: it is left as it is",
            ));
        }
        std::fs::remove_file(&marker).map_err(|e| Error::io_at(&marker, e))?;
        fsutil::sync_dir(dir)?;
        drop(file);
        return Ok(Resumed::NothingDeleted {
            vault_id: vault_id.to_owned(),
        });
    };
    let problems = keystore_problems(&purge, scan.as_ref());
    if !problems.is_empty() {
        return Err(Error::DisposalFailed(format!(
            "the vault's keys were dropped but their removal is not verified, so no certificate was issued: {}; once what is named here is fixed (a cluster member back), resume again",
            problems.join("; ")
        )));
    }
    let scan = scan.unwrap_or_default();
    let records = match records_cfg {
        None => records_json(&Ok(None), &Ok(None), 0),
        Some(rcfg) => {
            match Store::on_cluster(rcfg, info.vault_id, true, &|| Ok(()), false) {
                Ok(store) => {
                    let p = store.destroy();
                    let scan = match &p {
                        Ok(Some(p)) => store.scan_everything(&ciphertexts, p.wal_floor.as_deref()),
                        _ => Ok(None),
                    };
                    records_json(&p, &scan, ciphertexts.len())
                }
                // Dropped by the process that was killed, after the keys.
                Err(Error::NotAVault(_)) => json!({
                    "engine": "postgresql",
                    "removal": "the vault's records schema was dropped before this deletion was resumed; its ciphertexts' keys were destroyed first",
                }),
                Err(e) => records_json(&Err(e), &Ok(None), 0),
            }
        }
    };
    let seed: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        zeroize::Zeroizing::new(
            hex::decode(&j.certificate_key).map_err(|_| Error::Integrity("deletion journal"))?,
        )
        .as_slice()
        .try_into()
        .map_err(|_| Error::Integrity("deletion journal"))?,
    );
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let head: [u8; 32] = hex::decode(&j.checkpoint.1)
        .ok()
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Integrity("deletion journal"))?;
    let audit_key = hex::decode(&j.audit_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
        .ok_or(Error::Integrity("deletion journal"))?;
    let mut body = finish_body(
        j.body.clone(),
        crate::clock::Clock::now_ms(&crate::clock::SystemClock),
        embedded,
        &j.searched,
        &purge,
        &scan,
        records,
        (j.checkpoint.0, &head),
        "the whole trail up to this checkpoint, taken before the keys were dropped, is handed over with this certificate (pivault audit verify --file); the process that dropped them was stopped, and this certificate's verification was made by pivault vault delete --resume",
    );
    body["sanitization"]["details"]["resumed"] = json!(true);
    // The validator signed in for the deletion (validator.time, as the
    // journal kept it) and took no part in this resume: said, not stamped.
    body["validator"]["note"] = json!(
        "signed in and validated this deletion when it began (time); the deletion's process was stopped after the keys were dropped, and its verification was finished without the validator by pivault vault delete --resume, with the custodian's passphrase"
    );
    // Read where the trail is kept: the directory's files, which go only
    // with the directory, or the records cluster, where it stays.
    let audit_trail = render_trail(&crate::vault::audit_export::backlog(
        &trail,
        0,
        j.trail_to_seq,
    )?);
    let certificate = Certificate::sign(body, &signing)?;
    let done = VaultDeleted {
        certificate,
        audit_trail,
        audit_to_seq: j.trail_to_seq,
        audit_key,
        certificate_key: signing.verifying_key(),
        dir: dir.to_path_buf(),
        _journal: file,
    };
    Ok(Resumed::Deleted(Box::new(done)))
}

/// Refuses a journal that is not this deletion's own: the vault's trail
/// must hold, at the journal's checkpoint, the head the journal names, and
/// after it nothing but this deletion's events. A journal kept from an
/// earlier deletion that gave the vault back, put in the marker again by
/// someone with the directory, would have the certificate describe the
/// vault as it was then (its records, its commitments) and search for
/// its keys of then. On a records cluster the trail is out of that
/// person's reach; in files it is as far as the directory is (its anchors
/// outside show a trail rolled back).
fn check_bound(trail: &crate::audit::TrailReader, j: &Journal) -> Result<()> {
    let stale = || {
        Error::Integrity(
            "deletion journal (not this deletion's: the vault's trail went on after it; remove the DELETED marker only if no deletion of this vault is under way)",
        )
    };
    // A trail that does not reach the checkpoint (its files removed or cut
    // short by someone with the directory) cannot bind the journal: the
    // deletion waits for it to be put back, uncertified, rather than be
    // certified from a journal that may be an earlier deletion's.
    let missing = || {
        Error::Integrity(
            "deletion journal (the vault's audit trail does not hold the event the journal was made at: its files were removed or cut short; no certificate is issued without it: put the audit directory back from a copy of the vault directory and resume again)",
        )
    };
    let events = match trail.events(j.checkpoint.0, u64::MAX >> 1) {
        // Only a file or directory that is not there: another failure
        // (permissions, the disk) is what it is.
        Err(Error::Io(m)) if m.starts_with("a file is missing") => return Err(missing()),
        r => r?,
    };
    let Some((first, rest)) = events.split_first() else {
        return Err(missing());
    };
    if first.seq != j.checkpoint.0 {
        return Err(missing());
    }
    if hex::encode(first.hash) != j.checkpoint.1 {
        return Err(stale());
    }
    if rest
        .iter()
        .any(|e| !matches!(e.action.as_str(), "vault.delete" | "vault.delete.verified"))
    {
        return Err(stale());
    }
    Ok(())
}

/// An embedded keystore's destruction, finished: `None` if a root-key slot
/// is still in the header (the point of no return was not passed), else the
/// signing keys' file wiped, every keystore row deleted and compacted away,
/// and the directory searched.
fn finish_embedded(
    dir: &Path,
    info: &header::HeaderInfo,
    j: &Journal,
    needles: &[Vec<u8>],
) -> Result<Option<(PurgeEvidence, Result<ByteScan>)>> {
    let l = Layout::of(dir);
    let place = header::Place::Files {
        header: l.header.clone(),
        signing: l.signing.clone(),
    };
    if !header::file_slots(&place)?.is_empty() {
        return Ok(None);
    }
    header::wipe_signing(&place)?;
    let keystore = crate::keystore::Keystore::open(&l.keystore, info.vault_id, info.buckets, true)?;
    let purge = keystore.destroy(&j.keystore)?;
    drop(keystore);
    Ok(Some((
        purge,
        crate::keystore::scan_dir_counted(dir, needles),
    )))
}
