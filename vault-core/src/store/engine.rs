//! The records store's storage seam: what [`super::Store`] needs from the
//! place its rows live. Named tables (RocksDB column families, PostgreSQL
//! rows keyed by table) of opaque rows, atomic batches, prefix scans in key
//! order, batched reads, and for the one table derived from personal
//! information (the blind indexes, `beacons`) a purge that leaves no old
//! copy of a deleted row with evidence, and a byte scan. Record bodies are
//! AES-256-GCM envelopes whose keys are in the keystore: they need no
//! purge (crypto-shredding). Row MACs, record encoding and the indexes
//! stay in [`super::Store`]: an engine sees bytes only.
//!
//! Engines: [`super::rocks::RocksRows`] (the embedded default, the vault
//! directory's `records/`) and [`super::postgres::PgRows`] (a PostgreSQL
//! cluster named by the vault's `records.json`).

use crate::error::Result;

use super::{BeaconPurge, WriteOp};

/// A scan's visitor: called with each (key, value) in key order; `false` stops.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Where the records store's rows live. Every method is safe to call from
/// many threads; the vault's locks order conflicting writes.
pub(crate) trait RowEngine: Send + Sync + std::fmt::Debug {
    /// One row.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Many rows of one table, in the order of `keys`.
    fn multi_get(&self, table: &str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>>;
    /// All of `ops` or none; durable on return when `sync`.
    fn write(&self, ops: &[WriteOp<'_>], sync: bool) -> Result<()>;
    /// All of `ops` or none, not waited for on disk: only for rows whose
    /// loss in a crash is harmless (`Store::delete_lazily`).
    fn write_lazily(&self, ops: &[WriteOp<'_>]) -> Result<()> {
        self.write(ops, false)
    }
    /// Rows of `table` whose key starts with `prefix`, in key order, until
    /// `f` returns `false`.
    fn scan(&self, table: &str, prefix: &[u8], f: &mut Visit<'_>) -> Result<()>;
    /// Moves disposed record ciphertexts out of memory buffers (their keys
    /// are destroyed; a no-op where rows are never buffered).
    fn flush_records(&self) -> Result<()>;
    /// No copy of a deleted beacon row under `ranges` (key prefixes; `None`:
    /// anywhere in the table) left where the engine keeps bytes.
    fn purge_beacons(&self, ranges: Option<&[Vec<u8>]>) -> Result<BeaconPurge>;
    /// The places that can hold a beacon row under `ranges` that contain
    /// any of `needles`, how many places were read and how many skipped.
    /// `wal_after`: the purge's [`BeaconPurge::wal_floor`].
    fn files_holding_beacons(
        &self,
        ranges: &[Vec<u8>],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<crate::keystore::ByteScan>;
    /// Which of `copies` (files an earlier beacon scan found tags in) are
    /// still there: what a retry that no longer knows the tags can check.
    fn copies_present(
        &self,
        copies: &[crate::keystore::FoundCopy],
    ) -> Result<Vec<crate::keystore::FoundCopy>>;
    /// Another process took the vault over (a cluster's lease lapsed
    /// here): nothing more is served.
    fn lease_lost(&self) -> bool {
        false
    }
    /// Publishes where this process serves the vault (`None`: nowhere),
    /// for standbys to forward to; only a cluster has standbys.
    fn publish_holder(&self, _address: Option<&str>) -> Result<()> {
        Ok(())
    }
    /// `TakenOver` once another process took the vault over (checked
    /// before an audit event is appended).
    fn check_lease(&self) -> Result<()> {
        Ok(())
    }
    /// [`Self::check_lease`] with the lease renewed now (after a refusal
    /// that another holder would explain).
    fn confirm_lease(&self) -> Result<()> {
        Ok(())
    }
    /// On a cluster, what the audit trail there checks before it appends.
    fn fence(&self) -> Option<std::sync::Arc<dyn super::postgres::Fence>> {
        None
    }
    /// The engine's name (certificates, `doctor`).
    fn kind(&self) -> &'static str;
    /// Sets a negative control of the beacon purge (tests).
    fn set_control(&self, _c: crate::keystore::PurgeControl) {}
    /// Sets the size past which a purge splits a search-index partition
    /// (tests; a cluster only).
    fn set_beacon_split_at(&self, _bytes: u64) {}
    /// Splits every search-index partition past the split size, ahead of
    /// the disposal that would otherwise split it (a cluster only); the
    /// partitions split. One a session holds locked is left for next time.
    fn split_beacons(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Whole-vault deletion: what would keep a byte of the records past
    /// it if it ran now (a cluster's member down or lagging). Embedded
    /// rows go with the vault directory: nothing to check.
    fn destroy_precheck(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Whole-vault deletion: every table of the vault's records dropped at
    /// once and its bytes removed from every member, with evidence (a
    /// cluster). `None` for an embedded engine, whose rows go with the
    /// vault directory once the vault is closed.
    fn destroy(&self) -> Result<Option<crate::keystore::PurgeEvidence>> {
        Ok(None)
    }
    /// After [`Self::destroy`]: every member's files that can hold a byte
    /// of the vault searched for `needles`, no WAL begun after `wal_after`
    /// (a cluster; `None` embedded).
    fn scan_everything(
        &self,
        _needles: &[Vec<u8>],
        _wal_after: Option<&str>,
    ) -> Result<Option<crate::keystore::ByteScan>> {
        Ok(None)
    }
    /// The engine's own settings the beacon purge depends on, for
    /// `doctor`: (check name, level, what was found).
    fn doctor(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        Ok(Vec::new())
    }
}
