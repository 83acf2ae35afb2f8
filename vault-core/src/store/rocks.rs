//! The embedded records engine: RocksDB in the vault directory's
//! `records/`, one column family per table.

use std::path::Path;

use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions,
};

use super::engine::{RowEngine, Visit};
use super::{ALL_CFS, BeaconPurge, CF_BEACONS, CF_RECORDS, WriteOp};
use crate::error::{Error, Result};

/// All memtables of the records database together (and so the WAL's
/// preallocation): see [`RocksRows::open`].
const RECORDS_MEMTABLE_BUDGET: usize = 8 * 1024 * 1024;

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

/// The RocksDB records database.
pub(crate) struct RocksRows {
    db: DB,
}

impl std::fmt::Debug for RocksRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksRows").finish_non_exhaustive()
    }
}

impl RocksRows {
    /// Opens (or creates) the records database at `path`; takes RocksDB's
    /// lock, so a vault held by another process is refused at once.
    pub(crate) fn open(path: &Path) -> Result<RocksRows> {
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
        Ok(RocksRows { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }

    fn beacon_purge_checks(&self, ranges: &[Vec<u8>], whole: bool) -> Result<BeaconPurge> {
        use rocksdb::properties as P;
        let (live, residue, wal_files) = obsolete_files(&self.db)?;
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
            ..BeaconPurge::default()
        })
    }
}

impl RowEngine for RocksRows {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(table), key)?)
    }

    /// RocksDB's batched MultiGet over the sorted keys, which reads each
    /// data block once for all the keys in it (a disposal plan over a
    /// whole collection).
    fn multi_get(&self, table: &str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&i| keys[i]);
        let mut out: Vec<Option<Vec<u8>>> = (0..keys.len()).map(|_| None).collect();
        for chunk in order.chunks(4096) {
            let ks: Vec<&[u8]> = chunk.iter().map(|&i| keys[i]).collect();
            let got = self
                .db
                .batched_multi_get_cf(self.cf(table), ks.iter(), true);
            for (&i, r) in chunk.iter().zip(got) {
                out[i] = r?.map(|b| b.to_vec());
            }
        }
        Ok(out)
    }

    fn write(&self, ops: &[WriteOp<'_>], sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (cf, k, v) in ops {
            match v {
                Some(v) => batch.put_cf(self.cf(cf), k, v),
                None => batch.delete_cf(self.cf(cf), k),
            }
        }
        let mut w = WriteOptions::default();
        w.set_sync(sync);
        self.db.write_opt(batch, &w)?;
        Ok(())
    }

    fn scan(&self, table: &str, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        for item in self.db.iterator_cf(
            self.cf(table),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn flush_records(&self) -> Result<()> {
        self.db.flush_cf(self.cf(CF_RECORDS))?;
        Ok(())
    }

    /// Every column family flushed (a WAL is released only when all that
    /// share it have flushed), each range compacted to the bottommost
    /// level (the whole column family past 64 ranges, or when `ranges` is
    /// `None`: a resumed batch no longer knows them), then polled until no
    /// obsolete table file or WAL remains.
    fn purge_beacons(&self, ranges: Option<&[Vec<u8>]>) -> Result<BeaconPurge> {
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

    /// Every non-table file, every table file outside the live set, every
    /// live beacon table file whose key range meets a range. The needles
    /// are the deleted rows' tags, which are only ever written in values.
    fn files_holding_beacons(
        &self,
        ranges: &[Vec<u8>],
        needles: &[Vec<u8>],
        _wal_after: Option<&str>,
    ) -> Result<crate::keystore::ByteScan> {
        let live = self.db.live_files()?;
        let skip: std::collections::HashSet<String> = live
            .iter()
            .filter(|f| f.column_family_name != CF_BEACONS || !covers_any(f, ranges))
            .map(|f| f.name.trim_start_matches('/').to_owned())
            .collect();
        let mut hits = Vec::new();
        let mut read = 0;
        let top = self.db.path().to_path_buf();
        let mut stack = vec![top.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                let path = e.path();
                // Subdirectories too: RocksDB makes none, so whatever is in
                // one is someone's, and a copy there is a copy. A link is
                // not followed (it could lead anywhere on the host): it is
                // an error, as in every other byte scan.
                let Some(kind) = crate::keystore::walked_kind(
                    &e,
                    &top,
                    " in the records database's directory",
                    "retry",
                )?
                else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = path
                    .strip_prefix(&top)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                if d == top && skip.contains(&name) {
                    continue;
                }
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                read += 1;
                if crate::keystore::contains_any(&bytes, needles) {
                    hits.push(name);
                }
            }
        }
        hits.sort();
        Ok(crate::keystore::ByteScan {
            copies: crate::keystore::local_copies(&hits),
            hits,
            scanned: read,
            skipped: 0,
        })
    }

    fn copies_present(
        &self,
        copies: &[crate::keystore::FoundCopy],
    ) -> Result<Vec<crate::keystore::FoundCopy>> {
        crate::keystore::local_copies_present(self.db.path(), copies)
    }

    fn kind(&self) -> &'static str {
        "rocksdb"
    }
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
