//! The vault header: a small fixed-layout file holding the vault's identity,
//! the Argon2id parameters and salt, and the current epoch root key wrapped
//! by the unlock key in one of two slots (DESIGN §4.3).
//!
//! Layout (all integers big-endian), 302 bytes:
//! ```text
//!   0  magic "PIVAULT1"            8
//!   8  format version (1)          2
//!  10  placement flags             2   bit 0 keystore on a cluster, bit 1 records on a cluster
//!  12  vault id                   16
//!  28  Argon2id m_kib, t, p       12
//!  40  salt                       16
//!  56  bucket count B              4
//!  60  created (unix ms)           8
//!  68  SHA-256 of bytes 0..68     32
//! 100  slot 0                    101   epoch (8) | envelope (61) | SHA-256(epoch | envelope) (32)
//! 201  slot 1                    101
//! ```
//! Writing epoch e+1 goes to the slot not holding e, fsync; once the keystore
//! is re-wrapped the old slot is overwritten with zeros in place, fsync. A
//! zeroed slot fails its checksum and is ignored.
//!
//! With the keystore on a cluster ([`Place::Keystore`], issue 16) the file
//! keeps only its static part (its slots are zeros) and the slots, with the
//! vault's sealed signing keys, are rows of the keystore's `header` table:
//! the vault directory then holds no wrapped root key and nothing to test a
//! guessed passphrase against offline, a lost vault machine loses neither,
//! and an old slot deleted by a ratchet is purged and byte-scanned on every
//! member with the data keys of the disposal that ratcheted.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::crypto::{self, Aad, KdfParams};
use crate::error::{Error, Result};
use crate::ids::VaultId;
use crate::keystore::Keystore;
use crate::secret::SecretKey;

/// Where a vault's root-key slots and sealed signing keys live.
#[derive(Debug)]
pub enum Place<'a> {
    /// Embedded keystore: both slots in the header file, the signing keys
    /// in the `signing` file beside it.
    Files {
        /// The header file.
        header: PathBuf,
        /// The sealed signing keys (`signing`; `signing.new` during a
        /// passphrase change).
        signing: PathBuf,
    },
    /// Keystore on a cluster: the static part in the header file (checked
    /// against the cluster's copy), the rest as rows of `keys`.
    Keystore {
        /// The header file (static part, zeroed slots).
        header: PathBuf,
        /// The vault's keystore on its cluster.
        keys: &'a Keystore,
    },
}

impl<'a> Place<'a> {
    /// The place `info`'s placement says, for the files of a vault
    /// directory and its opened keystore.
    pub fn of(header: &Path, signing: &Path, info: &HeaderInfo, keys: &'a Keystore) -> Place<'a> {
        if info.placement.keystore_on_cluster {
            Place::Keystore {
                header: header.to_path_buf(),
                keys,
            }
        } else {
            Place::Files {
                header: header.to_path_buf(),
                signing: signing.to_path_buf(),
            }
        }
    }

    fn header(&self) -> &Path {
        match self {
            Place::Files { header, .. } | Place::Keystore { header, .. } => header,
        }
    }
}

/// The header table's rows: the static part, the two slots, the signing
/// keys and, while a passphrase change runs, the signing keys under the
/// new key.
const ROW_STATIC: &str = "static";
const ROW_SLOTS: [&str; 2] = ["slot0", "slot1"];
const ROW_SIGNING: &str = "signing";
const ROW_SIGNING_NEW: &str = "signing.new";

const MAGIC: &[u8; 8] = b"PIVAULT1";
const FORMAT_VERSION: u16 = 1;
const STATIC_LEN: usize = 68;
const SLOTS_AT: usize = STATIC_LEN + 32;
const ENVELOPE_LEN: usize = crypto::ENVELOPE_OVERHEAD + 32;
const SLOT_LEN: usize = 8 + ENVELOPE_LEN + 32;
/// Total size of a header file.
pub const HEADER_LEN: usize = SLOTS_AT + 2 * SLOT_LEN;

/// Where a vault keeps its keystore and its records (header bytes 10..12,
/// reserved and zero before issue 16). Bound into every slot's AAD with the
/// rest of the static part, so that deleting a cluster file (`keystore.json`,
/// `records.json`) or adding one is refused at open instead of opening an
/// empty embedded store in the cluster's place (or redirecting a vault).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// The keystore is on a PostgreSQL cluster (`keystore.json`).
    pub keystore_on_cluster: bool,
    /// The records are on a PostgreSQL cluster (`records.json`).
    pub records_on_cluster: bool,
}

const PLACE_KEYSTORE: u16 = 1;
const PLACE_RECORDS: u16 = 2;

impl Placement {
    fn bits(self) -> u16 {
        (if self.keystore_on_cluster {
            PLACE_KEYSTORE
        } else {
            0
        }) | (if self.records_on_cluster {
            PLACE_RECORDS
        } else {
            0
        })
    }

    fn from_bits(bits: u16) -> Result<Placement> {
        if bits & !(PLACE_KEYSTORE | PLACE_RECORDS) != 0 {
            return Err(Error::UnsupportedFormat("header placement flags"));
        }
        Ok(Placement {
            keystore_on_cluster: bits & PLACE_KEYSTORE != 0,
            records_on_cluster: bits & PLACE_RECORDS != 0,
        })
    }
}

/// The static part of the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The vault's identity, bound into every AAD.
    pub vault_id: VaultId,
    /// Argon2id parameters for the passphrase.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// Number of key buckets, fixed at init.
    pub buckets: u32,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Which stores are on a cluster.
    pub placement: Placement,
}

/// One decoded, checksum-valid slot.
#[derive(Clone, Debug)]
struct Slot {
    index: usize,
    epoch: u64,
    envelope: Vec<u8>,
}

/// An opened header: its info, the root key of the current epoch, and
/// whether a previous ratchet was interrupted (both slots valid).
#[derive(Debug)]
pub struct OpenedHeader {
    /// Static part.
    pub info: HeaderInfo,
    /// The highest valid epoch.
    pub epoch: u64,
    /// Root key of `epoch`.
    pub root: SecretKey,
    /// The older epoch and its root key when both slots were valid: the
    /// ratchet to `epoch` did not finish and must be completed before serving.
    pub unfinished_from: Option<(u64, SecretKey)>,
    /// The older slot's epoch when that slot is valid but this unlock key
    /// cannot open it while the newer one opens: a passphrase change
    /// committed and was interrupted. Its newer slot holds the same root
    /// (`custodian.rs`), so the caller re-wraps the bucket keys from
    /// (this epoch, `root`) and erases the older slot.
    pub rekey_from: Option<u64>,
    /// The slot was written by an older build, whose AAD bound only the
    /// vault ID: the caller ratchets at once so the new slot binds the
    /// whole static part.
    pub legacy_slot: bool,
}

/// The AAD of a root-key slot: the whole static part of the header (vault
/// ID, KDF parameters, salt, bucket count, creation time) and the epoch, so
/// an edited header fails to open instead of remapping buckets.
fn root_aad(static_part: &[u8], epoch: u64) -> Aad {
    Aad::new("root-v2")
        .part(static_part)
        .part(&epoch.to_be_bytes())
}

/// The AAD of slots written before the static part was bound (read only).
fn legacy_root_aad(vault: VaultId, epoch: u64) -> Aad {
    Aad::new("root")
        .part(vault.as_bytes())
        .part(&epoch.to_be_bytes())
}

/// Upper bounds on the header's KDF parameters and bucket count: an edited
/// header must not stall the open on an absurd Argon2 cost before the slot
/// AAD can reveal the edit. Far above anything `init` writes.
const MAX_M_KIB: u32 = 4 * 1024 * 1024;
const MAX_T: u32 = 64;
const MAX_P: u32 = 64;
const MAX_BUCKETS: u32 = 1 << 20;

fn encode_static(info: &HeaderInfo) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    b.extend_from_slice(&info.placement.bits().to_be_bytes());
    b.extend_from_slice(info.vault_id.as_bytes());
    b.extend_from_slice(&info.kdf.m_kib.to_be_bytes());
    b.extend_from_slice(&info.kdf.t.to_be_bytes());
    b.extend_from_slice(&info.kdf.p.to_be_bytes());
    b.extend_from_slice(&info.salt);
    b.extend_from_slice(&info.buckets.to_be_bytes());
    b.extend_from_slice(&info.created_ms.to_be_bytes());
    debug_assert_eq!(b.len(), STATIC_LEN);
    let sum = crypto::sha256(&b);
    b.extend_from_slice(&sum);
    b
}

fn encode_slot(epoch: u64, envelope: &[u8]) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[..8].copy_from_slice(&epoch.to_be_bytes());
    s[8..8 + ENVELOPE_LEN].copy_from_slice(envelope);
    let sum = crypto::sha256(&s[..8 + ENVELOPE_LEN]);
    s[8 + ENVELOPE_LEN..].copy_from_slice(&sum);
    s
}

fn decode_slot(index: usize, bytes: &[u8]) -> Option<Slot> {
    let (body, sum) = bytes.split_at(8 + ENVELOPE_LEN);
    if crypto::sha256(body) != sum {
        return None;
    }
    Some(Slot {
        index,
        epoch: u64::from_be_bytes(body[..8].try_into().ok()?),
        envelope: body[8..].to_vec(),
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("in bounds"))
}

/// Parses the static part of a header (no passphrase needed).
pub fn read_info(path: &Path) -> Result<HeaderInfo> {
    let bytes = read_bytes(path)?;
    parse_info(&bytes)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotAVault(format!(
            "{} is not a pivault vault (no header)",
            path.display()
        )),
        _ => Error::from(e),
    })?;
    crate::fsutil::check_private(path)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn parse_info(b: &[u8]) -> Result<HeaderInfo> {
    if b.len() < 10 || &b[..8] != MAGIC {
        return Err(Error::NotAVault("not a pivault header".into()));
    }
    if u16::from_be_bytes([b[8], b[9]]) != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat("header version"));
    }
    if b.len() != HEADER_LEN || crypto::sha256(&b[..STATIC_LEN]) != b[STATIC_LEN..SLOTS_AT] {
        return Err(Error::Integrity("vault header"));
    }
    let info = HeaderInfo {
        vault_id: VaultId::from_slice(&b[12..28])?,
        kdf: KdfParams {
            m_kib: u32_at(b, 28),
            t: u32_at(b, 32),
            p: u32_at(b, 36),
        },
        salt: b[40..56].try_into().expect("in bounds"),
        buckets: u32_at(b, 56),
        created_ms: i64::from_be_bytes(b[60..68].try_into().expect("in bounds")),
        placement: Placement::from_bits(u16::from_be_bytes([b[10], b[11]]))?,
    };
    let k = info.kdf;
    if !(8..=MAX_M_KIB).contains(&k.m_kib)
        || !(1..=MAX_T).contains(&k.t)
        || !(1..=MAX_P).contains(&k.p)
        || !(1..=MAX_BUCKETS).contains(&info.buckets)
    {
        return Err(Error::Integrity(
            "vault header (KDF parameters or bucket count out of range)",
        ));
    }
    Ok(info)
}

/// The whole header as one image: the file's, or the file's static part
/// with the slots of the cluster (refused unless the cluster holds the same
/// static part: a header of another vault, or one edited, does not open).
fn read_image(place: &Place<'_>) -> Result<Vec<u8>> {
    let mut b = read_bytes(place.header())?;
    parse_info(&b)?;
    let Place::Keystore { keys, .. } = place else {
        return Ok(b);
    };
    let mut rows = keys.header_rows()?;
    if rows.get(ROW_STATIC).map(Vec::as_slice) != Some(&b[..SLOTS_AT]) {
        return Err(Error::Integrity(
            "vault header (the keystore cluster holds another header for this vault)",
        ));
    }
    for (i, name) in ROW_SLOTS.iter().enumerate() {
        let at = SLOTS_AT + i * SLOT_LEN;
        match rows.remove(*name) {
            Some(row) if row.len() == SLOT_LEN => b[at..at + SLOT_LEN].copy_from_slice(&row),
            Some(_) => return Err(Error::Integrity("vault header (a key slot on the cluster)")),
            None => b[at..at + SLOT_LEN].fill(0),
        }
    }
    Ok(b)
}

/// Writes slot `i` (`None`: erases it): in place in the file (fsync), or
/// its row on the cluster (a synchronous commit; a deleted row is purged
/// by the next purge of the keystore).
fn write_slot_bytes(place: &Place<'_>, i: usize, slot: Option<&[u8; SLOT_LEN]>) -> Result<()> {
    match place {
        Place::Files { header, .. } => write_at(
            header,
            SLOTS_AT + i * SLOT_LEN,
            slot.unwrap_or(&[0u8; SLOT_LEN]),
        ),
        Place::Keystore { keys, .. } => {
            keys.write_header_rows(vec![(ROW_SLOTS[i], slot.map(|s| s.to_vec()))])
        }
    }
}

/// Creates a new header (whose file must not exist) holding `root` at
/// epoch 0. On a cluster the rows come first: a header file only ever
/// points at a complete header.
pub fn create(
    place: &Place<'_>,
    info: &HeaderInfo,
    unlock: &SecretKey,
    root: &SecretKey,
) -> Result<()> {
    let mut bytes = encode_static(info);
    let env = crypto::wrap_key(unlock, &root_aad(&bytes[..STATIC_LEN], 0), root);
    let slot = encode_slot(0, &env);
    match place {
        Place::Files { .. } => bytes.extend_from_slice(&slot),
        Place::Keystore { keys, .. } => {
            keys.write_header_rows(vec![
                (ROW_STATIC, Some(bytes.clone())),
                (ROW_SLOTS[0], Some(slot.to_vec())),
                (ROW_SLOTS[1], None),
            ])?;
            bytes.extend_from_slice(&[0u8; SLOT_LEN]);
        }
    }
    bytes.extend_from_slice(&[0u8; SLOT_LEN]);
    let path = place.header();
    let mut f = crate::fsutil::create_private_file(path)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io_at(path, e))?;
    crate::fsutil::sync_dir(path.parent().expect("header has a parent"))?;
    Ok(())
}

/// Opens the header with the unlock key.
pub fn open(place: &Place<'_>, unlock: &SecretKey) -> Result<OpenedHeader> {
    let b = read_image(place)?;
    let info = parse_info(&b)?;
    let mut slots: Vec<Slot> = (0..2)
        .filter_map(|i| {
            decode_slot(
                i,
                &b[SLOTS_AT + i * SLOT_LEN..SLOTS_AT + (i + 1) * SLOT_LEN],
            )
        })
        .collect();
    if slots.is_empty() {
        return Err(Error::Integrity("vault header (no valid key slot)"));
    }
    slots.sort_by_key(|s| std::cmp::Reverse(s.epoch));
    let legacy = std::cell::Cell::new(false);
    let unwrap = |s: &Slot| {
        crypto::unwrap_key(
            unlock,
            &root_aad(&b[..STATIC_LEN], s.epoch),
            &s.envelope,
            "header slot",
        )
        .or_else(|_| {
            let k = crypto::unwrap_key(
                unlock,
                &legacy_root_aad(info.vault_id, s.epoch),
                &s.envelope,
                "header slot",
            )?;
            legacy.set(true);
            Ok(k)
        })
    };
    // A slot whose checksum is valid but which the unlock key cannot open
    // means the wrong passphrase, or a static part edited since the slot was
    // written: both are refused the same way.
    let root = unwrap(&slots[0]).map_err(|_: Error| Error::WrongPassphrase)?;
    if legacy.get() && info.placement != Placement::default() {
        // Slots written before the placement existed do not bind it, and
        // the builds that wrote them kept every store embedded.
        return Err(Error::Integrity("vault header (placement on an old slot)"));
    }
    // Both slots valid: an interrupted ratchet (both under this key), or
    // an interrupted passphrase change (the older one under the old key).
    let (unfinished_from, rekey_from) = match slots.get(1) {
        Some(older) => match unwrap(older) {
            Ok(k) => (Some((older.epoch, k)), None),
            Err(_) => (None, Some(older.epoch)),
        },
        None => (None, None),
    };
    Ok(OpenedHeader {
        info,
        epoch: slots[0].epoch,
        root,
        unfinished_from,
        rekey_from,
        legacy_slot: legacy.get(),
    })
}

/// Step 1 of an epoch ratchet or passphrase change: writes `root` for
/// `epoch` into the slot not holding `keep_epoch`, and fsyncs. The old slot
/// stays valid until [`erase_other_slots`] so a crash in between can finish.
pub fn write_slot(
    place: &Place<'_>,
    vault: VaultId,
    unlock: &SecretKey,
    epoch: u64,
    root: &SecretKey,
) -> Result<()> {
    let b = read_image(place)?;
    if parse_info(&b)?.vault_id != vault {
        return Err(Error::Integrity("vault header (another vault)"));
    }
    // Reuse a slot that holds neither a valid older epoch nor the new one:
    // prefer an invalid (zeroed) slot, else the one with the lower epoch.
    let slot_epoch = |i: usize| {
        decode_slot(
            i,
            &b[SLOTS_AT + i * SLOT_LEN..SLOTS_AT + (i + 1) * SLOT_LEN],
        )
        .map(|s| (s.index, s.epoch))
    };
    let target = match (slot_epoch(0), slot_epoch(1)) {
        (None, _) => 0,
        (_, None) => 1,
        (Some((_, e0)), Some((_, e1))) => usize::from(e1 < e0),
    };
    let env = crypto::wrap_key(unlock, &root_aad(&b[..STATIC_LEN], epoch), root);
    write_slot_bytes(place, target, Some(&encode_slot(epoch, &env)))
}

/// Step 2: overwrites in place (or deletes) every slot not holding
/// `keep_epoch`, durably.
pub fn erase_other_slots(place: &Place<'_>, keep_epoch: u64) -> Result<()> {
    let b = read_image(place)?;
    for i in 0..2 {
        let at = SLOTS_AT + i * SLOT_LEN;
        let keep = decode_slot(i, &b[at..at + SLOT_LEN]).is_some_and(|s| s.epoch == keep_epoch);
        if !keep && b[at..at + SLOT_LEN].iter().any(|&x| x != 0) {
            write_slot_bytes(place, i, None)?;
        }
    }
    Ok(())
}

/// Every root-key slot overwritten in place (or deleted), durably: a whole
/// vault's deletion, after which the passphrase unwraps nothing.
pub fn erase_all_slots(place: &Place<'_>) -> Result<()> {
    // No slot holds this epoch.
    erase_other_slots(place, u64::MAX)
}

/// The wrapped root keys of a header file's slots, as stored (none for a
/// cluster's, see [`slot_rows`]): what a whole vault's deletion searches
/// the directory for once they are overwritten.
pub fn file_slots(place: &Place<'_>) -> Result<Vec<Vec<u8>>> {
    let Place::Files { header, .. } = place else {
        return Ok(Vec::new());
    };
    let b = read_bytes(header)?;
    parse_info(&b)?;
    Ok((0..2)
        .filter_map(|i| {
            decode_slot(
                i,
                &b[SLOTS_AT + i * SLOT_LEN..SLOTS_AT + (i + 1) * SLOT_LEN],
            )
        })
        .map(|slot| slot.envelope)
        .collect())
}

/// The sealed signing keys of a header file's vault overwritten with
/// random bytes, synced and removed (on a cluster they are rows, dropped
/// with the keystore): a whole vault's deletion.
pub fn wipe_signing(place: &Place<'_>) -> Result<()> {
    let Place::Files { signing, .. } = place else {
        return Ok(());
    };
    for pending in [false, true] {
        let path = signing_file(signing, pending);
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len() as usize,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_at(&path, e)),
        };
        let mut noise = vec![0u8; len];
        crypto::fill_random(&mut noise);
        write_at(&path, 0, &noise)?;
        std::fs::remove_file(&path).map_err(|e| Error::io_at(&path, e))?;
        if let Some(dir) = path.parent() {
            crate::fsutil::sync_dir(dir)?;
        }
    }
    Ok(())
}

/// The slots held as rows on a cluster, as stored (none for a header
/// file, whose slots are overwritten in place): before a ratchet, what its
/// purge must then take off every member, for the disposal's byte scan.
pub fn slot_rows(place: &Place<'_>) -> Result<Vec<Vec<u8>>> {
    let Place::Keystore { keys, .. } = place else {
        return Ok(Vec::new());
    };
    let mut rows = keys.header_rows()?;
    Ok(ROW_SLOTS.iter().filter_map(|n| rows.remove(*n)).collect())
}

/// The sealed signing keys (`pending`: those under a passphrase change's
/// new key), if there.
pub fn read_signing(place: &Place<'_>, pending: bool) -> Result<Option<Vec<u8>>> {
    match place {
        Place::Files { signing, .. } => {
            let path = signing_file(signing, pending);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io_at(&path, e)),
            }
        }
        Place::Keystore { keys, .. } => keys.header_row(signing_row(pending)),
    }
}

/// Stores the sealed signing keys durably (`pending`: beside the current
/// ones, until [`commit_signing`]).
pub fn write_signing(place: &Place<'_>, pending: bool, sealed: &[u8]) -> Result<()> {
    match place {
        Place::Files { signing, .. } => {
            let path = signing_file(signing, pending);
            if pending {
                let _ = std::fs::remove_file(&path);
            }
            let mut f = crate::fsutil::create_private_file(&path)?;
            f.write_all(sealed)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io_at(&path, e))?;
            crate::fsutil::sync_dir(path.parent().expect("in the vault"))
        }
        Place::Keystore { keys, .. } => {
            keys.write_header_rows(vec![(signing_row(pending), Some(sealed.to_vec()))])
        }
    }
}

/// The pending signing keys replace the current ones (a rename, or one
/// commit of both rows).
pub fn commit_signing(place: &Place<'_>) -> Result<()> {
    match place {
        Place::Files { signing, .. } => {
            std::fs::rename(signing_file(signing, true), signing)?;
            crate::fsutil::sync_dir(signing.parent().expect("in the vault"))
        }
        Place::Keystore { keys, .. } => {
            let pending = keys
                .header_row(ROW_SIGNING_NEW)?
                .ok_or(Error::Integrity("vault signing keys (nothing pending)"))?;
            keys.write_header_rows(vec![(ROW_SIGNING, Some(pending)), (ROW_SIGNING_NEW, None)])
        }
    }
}

/// Removes pending signing keys that are not needed (a passphrase change
/// that never committed).
pub fn discard_pending_signing(place: &Place<'_>) -> Result<()> {
    match place {
        Place::Files { signing, .. } => {
            let path = signing_file(signing, true);
            if path.exists() {
                std::fs::remove_file(&path)?;
                crate::fsutil::sync_dir(signing.parent().expect("in the vault"))?;
            }
            Ok(())
        }
        Place::Keystore { keys, .. } => keys.write_header_rows(vec![(ROW_SIGNING_NEW, None)]),
    }
}

fn signing_file(signing: &Path, pending: bool) -> PathBuf {
    if pending {
        signing.with_file_name("signing.new")
    } else {
        signing.to_path_buf()
    }
}

fn signing_row(pending: bool) -> &'static str {
    if pending {
        ROW_SIGNING_NEW
    } else {
        ROW_SIGNING
    }
}

/// Moves the slots and the signing keys of a vault whose keystore is on a
/// cluster from its files onto the cluster (a vault made by an earlier
/// build, or an open interrupted mid-move), in one commit, the same bytes;
/// then zeroes the file's slots and removes the signing files. Once the
/// cluster holds the header, it alone counts: slots or signing files found
/// in the directory later (planted, or left by a crash after the commit)
/// are erased unread. Refuses a cluster holding another header for this
/// vault, and a directory with no slots whose cluster holds none (the
/// header's rows are not on this cluster).
pub fn move_to_keystore(header: &Path, signing: &Path, keys: &Keystore) -> Result<()> {
    let local = read_bytes(header)?;
    parse_info(&local)?;
    match keys.header_row(ROW_STATIC)? {
        Some(row) if row != local[..SLOTS_AT] => {
            return Err(Error::Integrity(
                "vault header (the keystore cluster holds another header for this vault)",
            ));
        }
        Some(_) => {}
        None => {
            let mut rows = vec![(ROW_STATIC, Some(local[..SLOTS_AT].to_vec()))];
            for (i, name) in ROW_SLOTS.iter().enumerate() {
                let at = SLOTS_AT + i * SLOT_LEN;
                let slot = &local[at..at + SLOT_LEN];
                if slot.iter().any(|&x| x != 0) {
                    rows.push((name, Some(slot.to_vec())));
                }
            }
            if rows.len() == 1 {
                return Err(Error::Integrity(
                    "vault header (its key slots are not on the keystore cluster)",
                ));
            }
            for pending in [false, true] {
                let path = signing_file(signing, pending);
                if let Ok(b) = std::fs::read(&path) {
                    rows.push((signing_row(pending), Some(b)));
                }
            }
            keys.write_header_rows(rows)?;
        }
    }
    if local[SLOTS_AT..].iter().any(|&x| x != 0) {
        write_at(header, SLOTS_AT, &[0u8; 2 * SLOT_LEN])?;
    }
    for pending in [false, true] {
        let path = signing_file(signing, pending);
        if path.exists() {
            std::fs::remove_file(&path)?;
            crate::fsutil::sync_dir(signing.parent().expect("in the vault"))?;
        }
    }
    Ok(())
}

fn write_at(path: &Path, at: usize, bytes: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).open(path)?;
        f.seek(SeekFrom::Start(at as u64))?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io_at(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &Path) -> Place<'static> {
        Place::Files {
            header: p.to_path_buf(),
            signing: p.with_file_name("signing"),
        }
    }

    fn info() -> HeaderInfo {
        HeaderInfo {
            vault_id: VaultId::new(),
            kdf: KdfParams::INSECURE_FAST,
            salt: [9; 16],
            buckets: 1024,
            created_ms: 1,
            placement: Placement::default(),
        }
    }

    /// A header at `p` whose slot 0 is written as builds before the static
    /// part was bound wrote it; returns its info and bytes.
    fn legacy_header(p: &Path, uk: &SecretKey, r0: &SecretKey) -> (HeaderInfo, Vec<u8>) {
        let i = info();
        create(&file(p), &i, uk, r0).unwrap();
        let mut b = std::fs::read(p).unwrap();
        let env = crypto::wrap_key(uk, &legacy_root_aad(i.vault_id, 0), r0);
        b[SLOTS_AT..SLOTS_AT + SLOT_LEN].copy_from_slice(&encode_slot(0, &env));
        std::fs::write(p, &b).unwrap();
        (i, b)
    }

    /// Writes `b` with its static checksum recomputed, as an insider would.
    fn write_with_checksum(p: &Path, b: &mut [u8]) {
        let sum = crypto::sha256(&b[..STATIC_LEN]);
        b[STATIC_LEN..SLOTS_AT].copy_from_slice(&sum);
        std::fs::write(p, b).unwrap();
    }

    #[test]
    fn create_open_ratchet_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        let i = info();
        create(&file(&p), &i, &uk, &r0).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len() as usize, HEADER_LEN);
        let h = open(&file(&p), &uk).unwrap();
        assert_eq!((h.epoch, h.info.clone()), (0, i.clone()));
        assert!(h.root == r0 && h.unfinished_from.is_none());
        assert!(matches!(
            open(&file(&p), &SecretKey::generate()),
            Err(Error::WrongPassphrase)
        ));

        let r1 = SecretKey::generate();
        write_slot(&file(&p), i.vault_id, &uk, 1, &r1).unwrap();
        let h = open(&file(&p), &uk).unwrap();
        assert_eq!(h.epoch, 1);
        assert!(
            h.root == r1
                && h.unfinished_from
                    .as_ref()
                    .is_some_and(|(e, k)| *e == 0 && *k == r0)
        );
        erase_other_slots(&file(&p), 1).unwrap();
        let h = open(&file(&p), &uk).unwrap();
        assert!(h.unfinished_from.is_none() && h.root == r1);
        // The old wrapped root is gone from the file.
        let bytes = std::fs::read(&p).unwrap();
        assert!(bytes[SLOTS_AT..SLOTS_AT + SLOT_LEN].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_slot_under_another_unlock_key_is_an_interrupted_passphrase_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (old_uk, new_uk, r0) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let i = info();
        create(&file(&p), &i, &old_uk, &r0).unwrap();
        // The commit of a passphrase change: the same root, the new key, e+1.
        write_slot(&file(&p), i.vault_id, &new_uk, 1, &r0).unwrap();
        // The old key no longer opens (the newest slot is not its).
        assert!(matches!(
            open(&file(&p), &old_uk),
            Err(Error::WrongPassphrase)
        ));
        let h = open(&file(&p), &new_uk).unwrap();
        assert_eq!((h.epoch, h.rekey_from), (1, Some(0)));
        assert!(h.root == r0 && h.unfinished_from.is_none());
        erase_other_slots(&file(&p), 1).unwrap();
        let h = open(&file(&p), &new_uk).unwrap();
        assert!(h.rekey_from.is_none() && h.unfinished_from.is_none());
        assert!(matches!(
            open(&file(&p), &old_uk),
            Err(Error::WrongPassphrase)
        ));
    }

    #[test]
    fn an_edited_static_part_with_a_fixed_checksum_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        create(&file(&p), &info(), &uk, &r0).unwrap();
        let good = std::fs::read(&p).unwrap();
        // Bucket count, salt, creation time, KDF cost and the placement (the
        // keystore moved onto a cluster): each edited with the static
        // checksum recomputed, as an insider would.
        for at in [59usize, 45, 67, 30, 11] {
            let mut t = good.clone();
            t[at] ^= 0x01;
            write_with_checksum(&p, &mut t);
            assert!(
                read_info(&p).is_ok(),
                "the edit at {at} keeps a valid checksum"
            );
            assert!(open(&file(&p), &uk).is_err(), "the edit at {at} opened");
        }
        // An absurd Argon2 cost is refused before any key derivation.
        let mut t = good.clone();
        t[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        write_with_checksum(&p, &mut t);
        assert!(matches!(read_info(&p), Err(Error::Integrity(_))));
        std::fs::write(&p, &good).unwrap();
        assert!(open(&file(&p), &uk).is_ok());
    }

    #[test]
    fn a_legacy_slot_opens_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        let (i, _) = legacy_header(&p, &uk, &r0);
        let h = open(&file(&p), &uk).unwrap();
        assert!(h.legacy_slot && h.root == r0);
        write_slot(&file(&p), i.vault_id, &uk, 1, &r0).unwrap();
        erase_other_slots(&file(&p), 1).unwrap();
        assert!(!open(&file(&p), &uk).unwrap().legacy_slot);
    }

    #[test]
    fn every_byte_flip_is_detected_or_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        create(&file(&p), &info(), &uk, &r0).unwrap();
        let good = std::fs::read(&p).unwrap();
        for i in 0..SLOTS_AT + SLOT_LEN {
            let mut t = good.clone();
            t[i] ^= 0x20;
            std::fs::write(&p, &t).unwrap();
            // Never a panic, never the wrong key.
            assert!(open(&file(&p), &uk).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn the_placement_round_trips_and_unknown_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        let mut i = info();
        i.placement = Placement {
            keystore_on_cluster: false,
            records_on_cluster: true,
        };
        create(&file(&p), &i, &uk, &r0).unwrap();
        assert_eq!(read_info(&p).unwrap().placement, i.placement);
        assert_eq!(open(&file(&p), &uk).unwrap().info, i);
        // A ratchet keeps it.
        write_slot(&file(&p), i.vault_id, &uk, 1, &r0).unwrap();
        erase_other_slots(&file(&p), 1).unwrap();
        assert_eq!(open(&file(&p), &uk).unwrap().info.placement, i.placement);
        // A flag this build does not know is refused, not ignored.
        let mut t = std::fs::read(&p).unwrap();
        t[10] |= 0x80;
        write_with_checksum(&p, &mut t);
        assert!(matches!(read_info(&p), Err(Error::UnsupportedFormat(_))));
    }

    #[test]
    fn a_placement_beside_a_legacy_slot_is_refused() {
        // A legacy slot binds only the vault ID, so an insider could set
        // the flags freely there: the builds that wrote such slots kept
        // every store embedded, so any flag on one is an edit.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("header");
        let (uk, r0) = (SecretKey::generate(), SecretKey::generate());
        let (_, mut b) = legacy_header(&p, &uk, &r0);
        assert!(open(&file(&p), &uk).unwrap().legacy_slot);
        b[11] |= PLACE_RECORDS as u8;
        write_with_checksum(&p, &mut b);
        assert!(read_info(&p).unwrap().placement.records_on_cluster);
        assert!(matches!(open(&file(&p), &uk), Err(Error::Integrity(_))));
    }
}
