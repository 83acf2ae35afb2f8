//! The keystore's storage seam: what the key hierarchy needs from the
//! place its wrapped keys live. Three tables of opaque rows (bucket keys,
//! data keys, backup keys), atomic batches, prefix scans in key order, and
//! the two things crypto-shredding depends on: a purge that leaves no old
//! copy of a deleted row anywhere the engine keeps bytes, with evidence, and
//! a byte scan of everything the engine keeps. The wrapping, unwrapping and
//! naming of keys stay in [`super::Keystore`]: an engine only ever sees
//! ciphertext and IDs.
//!
//! Engines: [`super::rocks::RocksKeys`] (the embedded default, one
//! directory beside the records) and [`super::postgres::PgKeys`] (a
//! PostgreSQL cluster, every member purged and scanned).

use crate::error::Result;

use super::PurgeEvidence;

/// The keystore's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    /// Bucket keys (4-byte bucket number) and the beacon secret.
    Buckets,
    /// Data keys: `bucket | record | version` (24 bytes).
    Deks,
    /// Per-backup keys K_b, by 16-byte backup ID.
    Backups,
    /// The root-key header's slots and the sealed signing keys, by name
    /// (`header.rs`). Only on a cluster: embedded, they are the files
    /// beside the keystore.
    Header,
}

impl Table {
    /// The tables of every engine.
    pub(crate) const ALL: [Table; 3] = [Table::Buckets, Table::Deks, Table::Backups];
    /// The tables of a cluster's keystore.
    pub(crate) const ON_CLUSTER: [Table; 4] =
        [Table::Buckets, Table::Deks, Table::Backups, Table::Header];

    /// The table's name in every engine (a RocksDB column family, a
    /// PostgreSQL table).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Buckets => "buckets",
            Table::Deks => "deks",
            Table::Backups => "backups",
            Table::Header => "header",
        }
    }
}

/// One write of an atomic batch.
#[derive(Clone)]
pub(crate) enum KeyOp {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

impl std::fmt::Debug for KeyOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names are IDs; values are wrapped keys, never printed.
        match self {
            KeyOp::Put(t, k, _) => write!(f, "Put({t:?}, {})", hex::encode(k)),
            KeyOp::Delete(t, k) => write!(f, "Delete({t:?}, {})", hex::encode(k)),
        }
    }
}

/// Something a negative control holds across a purge (an open snapshot or
/// transaction); dropping it releases it.
pub(crate) trait Held {}
impl<T> Held for T {}

/// Result of a byte scan: the places holding a needle, how many places
/// (files) were read, and how many were deliberately not read (on a
/// cluster: other databases' and other vaults' relation files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteScan {
    /// The places holding a needle (on a cluster, `member: path`).
    pub hits: Vec<String>,
    /// Places read.
    pub scanned: u64,
    /// Places not read because no row of this vault can be there.
    pub skipped: u64,
    /// The files among `hits` in which a needle's bytes were read (not
    /// those counted as hits unread, nor a member not reached): what a
    /// failed batch keeps, so that a retry without its needles can still
    /// tell whether a copy it saw is there.
    pub copies: Vec<FoundCopy>,
}

/// A file a byte scan read a needle's bytes in: its path under the
/// engine's directory (a member's data directory on a cluster, with the
/// member's name). Kept in a failed batch's row (a path, never bytes).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct FoundCopy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    pub path: String,
}

impl std::fmt::Display for FoundCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.member {
            Some(m) => write!(f, "{m}: {}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

/// What a whole vault's drop removes on a cluster: the schema, and each of
/// its relations that has storage (named by OID) with its file's path
/// under a member's data directory, each checked gone on every member.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropTargets {
    pub schema: String,
    pub relations: Vec<String>,
    pub files: Vec<String>,
}

/// A scan's visitor: called with each (key, value) in key order; `false` stops.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Where the keystore's rows live. Every method is safe to call from many
/// threads; the caller ([`super::Keystore`] under the vault's bucket locks)
/// orders conflicting writes.
pub(crate) trait KeyEngine: Send + Sync + std::fmt::Debug {
    /// One row.
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All of `ops` or none; durable on return when `sync`.
    fn write(&self, ops: Vec<KeyOp>, sync: bool) -> Result<()>;
    /// Rows of `t` whose key starts with `prefix`, in key order, until `f`
    /// returns `false`.
    fn scan(&self, t: Table, prefix: &[u8], f: &mut Visit<'_>) -> Result<()>;
    /// Disposal step 5: no copy of a deleted or overwritten row of the
    /// touched `buckets` (and of any bucket or backup key row) left
    /// anywhere the engine keeps bytes. `skip_physical` is the negative
    /// control that leaves them.
    fn purge(&self, buckets: &[u32], skip_physical: bool) -> Result<PurgeEvidence>;
    /// Every place the engine keeps bytes that can hold a data key of
    /// `buckets`, searched for `needles`. `wal_after`: the purge's
    /// [`PurgeEvidence::wal_floor`], where the engine's log written after
    /// the purge need not be read.
    fn scan_for(
        &self,
        buckets: &[u32],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<ByteScan>;
    /// Every place the engine keeps bytes, searched for `needles`.
    fn files_containing(&self, needles: &[Vec<u8>]) -> Result<Vec<String>>;
    /// Which of `copies` (files an earlier scan found needles in) are
    /// still there: all that a retry whose needles went with an ended
    /// process can check of them.
    fn copies_present(&self, copies: &[FoundCopy]) -> Result<Vec<FoundCopy>>;
    /// Whole-vault deletion (`pivault vault delete`): what would keep a
    /// byte of the keystore past its destruction if it ran now (a member
    /// down or lagging, an old snapshot), checked before anything is
    /// destroyed. An engine that cannot destroy a whole vault says so.
    fn destroy_precheck(&self) -> Result<Vec<String>> {
        Err(crate::error::Error::invalid(
            "this keystore engine cannot delete a whole vault",
        ))
    }
    /// Whole-vault deletion: what the drop will remove (read before it,
    /// kept in the deletion's journal so that another process can finish
    /// the purge and its checks after a kill).
    fn drop_targets(&self) -> Result<DropTargets> {
        Err(crate::error::Error::invalid(
            "this keystore engine cannot delete a whole vault",
        ))
    }
    /// Whole-vault deletion: every table of the vault's keystore (`targets`,
    /// from [`Self::drop_targets`]) dropped at once, and its bytes removed
    /// from every place the engine keeps them, with evidence (as
    /// [`Self::purge`] gives for a batch).
    fn destroy(&self, _targets: &DropTargets) -> Result<PurgeEvidence> {
        Err(crate::error::Error::invalid(
            "this keystore engine cannot delete a whole vault",
        ))
    }
    /// After [`Self::destroy`]: every place the engine keeps bytes that
    /// can hold a byte of the vault (on a cluster, every member's files but
    /// other databases' and other vaults' relations, and no WAL begun after
    /// `wal_after`), searched for `needles`.
    fn scan_everything(&self, needles: &[Vec<u8>], _wal_after: Option<&str>) -> Result<ByteScan> {
        Ok(ByteScan {
            hits: self.files_containing(needles)?,
            ..ByteScan::default()
        })
    }
    /// A snapshot that keeps old row versions readable while held (the
    /// purge's negative control).
    fn hold_snapshot(&self) -> Result<Box<dyn Held + '_>>;
    /// The engine's name in certificates and `doctor`.
    fn kind(&self) -> &'static str;
    /// Another process took the vault over (it fenced this process's
    /// writes out): nothing more is served.
    fn lease_lost(&self) -> bool {
        false
    }
    /// Sets a negative control of the purge (tests).
    fn set_control(&self, _c: super::PurgeControl) {}
    /// The engine's own settings that the purge depends on, for `doctor`:
    /// (check name, safe, what was found).
    fn doctor(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        Ok(Vec::new())
    }
}
