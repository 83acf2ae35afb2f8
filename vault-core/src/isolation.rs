//! Isolation of record operations from disposal batches (DESIGN §9,
//! invariant 6), so a certificate can never name a destruction that an
//! interleaved write undid, and no acknowledged write is lost to a rotation.
//!
//! Four mechanisms, each with one job:
//! - **bucket locks** (a reader-writer lock per bucket stripe): every record
//!   read and write holds its subject's bucket lock shared; a disposal batch
//!   holds the touched buckets' locks exclusively from re-reading its records
//!   through the rotation that deletes their keys and re-wraps the survivors.
//!   Writes and reads of other buckets never wait; those of a touched bucket
//!   wait for that bucket's rotation only, not for the batch.
//! - **the pending set**: records named by a batch that has not reached its
//!   tombstones. Entered under the exclusive locks, so once a batch is under
//!   way an update, a read or a hold on one of its records is refused with
//!   [`Error::DisposalInProgress`] instead of writing a key the batch would
//!   not destroy.
//! - **record locks** (striped mutexes): two updates of one record are
//!   serialised, so they cannot both write version v+1.
//! - **the creating set**: new records whose key and row are being written
//!   at once (records on a cluster); no reader finds them until both are
//!   in, so none meets a row without its key.
//!
//! Lock order, everywhere: disposal lock → bucket locks (ascending) → record
//! lock → epoch lock → audit lock. The epoch ratchet takes only the epoch
//! lock; a restore and a backup take the disposal lock and then the epoch
//! lock exclusively, which already excludes every record operation.
//!
//! This is a child module of `vault`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::ids::{RecordId, SubjectId};

/// At most this many bucket-lock stripes (bucket `b` uses stripe `b % n`).
const MAX_BUCKET_STRIPES: u32 = 4096;
/// Record-lock stripes.
const RECORD_STRIPES: usize = 256;

/// The locks and the pending set of one open vault.
pub(crate) struct Isolation {
    buckets: Vec<RwLock<()>>,
    records: Vec<Mutex<()>>,
    pending: Mutex<HashMap<RecordId, SubjectId>>,
    /// Records whose key and row are being written at once (records on a
    /// cluster): not found by any reader until both are in. Every read
    /// of a record looks here, so readers share the lock.
    creating: RwLock<HashSet<RecordId>>,
    fenced: AtomicBool,
}

/// A record's "being created" mark, removed when dropped.
pub(crate) struct Creating<'a> {
    isolation: &'a Isolation,
    id: RecordId,
}

impl Creating<'_> {
    /// Keeps the mark for the life of this process: the record's row may
    /// be in without its key, and only the next open's journal
    /// reconciliation can tell and roll it back.
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.isolation.creating_set_mut().remove(&self.id);
    }
}

impl std::fmt::Debug for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolation")
            .field("bucket_stripes", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl Isolation {
    pub(crate) fn new(bucket_count: u32) -> Isolation {
        let n = bucket_count.clamp(1, MAX_BUCKET_STRIPES) as usize;
        Isolation {
            buckets: (0..n).map(|_| RwLock::new(())).collect(),
            records: (0..RECORD_STRIPES).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
            creating: RwLock::new(HashSet::new()),
            fenced: AtomicBool::new(false),
        }
    }

    fn stripe(&self, bucket: u32) -> usize {
        bucket as usize % self.buckets.len()
    }

    /// Bucket `b`'s lock, shared: held by every record read and write.
    pub(crate) fn shared(&self, bucket: u32) -> RwLockReadGuard<'_, ()> {
        // The locks guard no data, so a panic elsewhere poisons nothing.
        self.buckets[self.stripe(bucket)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The locks of `buckets`, exclusive, taken in ascending stripe order
    /// (the one order every batch uses, so two never deadlock).
    pub(crate) fn exclusive(&self, buckets: &[u32]) -> Vec<RwLockWriteGuard<'_, ()>> {
        let mut stripes: Vec<usize> = buckets.iter().map(|b| self.stripe(*b)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.buckets[i].write().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Record `id`'s update lock.
    pub(crate) fn record(&self, id: RecordId) -> MutexGuard<'_, ()> {
        let b = id.as_bytes();
        let i = (usize::from(b[15]) | usize::from(b[14]) << 8) % self.records.len();
        self.records[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending_map(&self) -> MutexGuard<'_, HashMap<RecordId, SubjectId>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a record named by an unfinished batch.
    pub(crate) fn check_not_pending(&self, id: RecordId) -> Result<()> {
        if self.pending_map().contains_key(&id) {
            return Err(Error::DisposalInProgress);
        }
        Ok(())
    }

    fn creating_set_mut(&self) -> RwLockWriteGuard<'_, HashSet<RecordId>> {
        self.creating.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks record `id` as being created until the mark is dropped.
    pub(crate) fn creating(&self, id: RecordId) -> Creating<'_> {
        self.creating_set_mut().insert(id);
        Creating {
            isolation: self,
            id,
        }
    }

    /// Whether record `id`'s key and row are still being written.
    pub(crate) fn is_creating(&self, id: RecordId) -> bool {
        self.creating
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Whether any record of `subject` is named by an unfinished batch.
    pub(crate) fn subject_pending(&self, subject: SubjectId) -> bool {
        self.pending_map().values().any(|s| *s == subject)
    }

    /// Marks records as named by an unfinished batch (under the batch's
    /// exclusive bucket locks, or on open before the vault serves).
    pub(crate) fn add_pending(&self, records: impl IntoIterator<Item = (RecordId, SubjectId)>) {
        self.pending_map().extend(records);
    }

    /// Ends the pending state once the records are tombstones.
    pub(crate) fn remove_pending(&self, records: impl IntoIterator<Item = RecordId>) {
        let mut m = self.pending_map();
        for r in records {
            m.remove(&r);
        }
    }

    /// Stops every further change: an undo after a failed audit write
    /// failed, so a change may stand unaudited until the journal reconciles
    /// it on the next open.
    pub(crate) fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    /// Whether changes are fenced.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Refuses a change while fenced.
    pub(crate) fn check_fence(&self) -> Result<()> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(Error::WritesFenced);
        }
        Ok(())
    }
}
