//! The vault's own upkeep of its keys (DESIGN §4.1): the write journal's
//! reconciliation on open, orphaned data keys, and the maintenance ratchet
//! that bounds how long an updated record's old key survives as residue.
//!
//! - **Journal.** A record row and its journal entry are written in one
//!   batch; the entry goes once the audit event is appended. On open, an
//!   entry whose event is in the trail is finished (an update's old key is
//!   deleted); one whose event is not is rolled back (a creation removed
//!   with its key, an update's old row put back). So every stored record has
//!   its audit event, whatever instant a crash hit.
//! - **Orphans.** A data key that no live row needs (no row, another version,
//!   a disposed row) is left by a crash between a key write and its row, or
//!   between an audited update and the old key's deletion. They are found on
//!   open and by `doctor`, and destroyed like disposed keys: deleted in the
//!   bucket's rotation, then the epoch ratchet and the keystore purge.
//! - **Maintenance ratchet.** An update deletes the old version's key, but
//!   its wrapped bytes may linger in the keystore's files under the live
//!   bucket key. Every bucket an update touched is marked (in the same batch
//!   as the row); the ratchet rotates the marked buckets, ratchets the epoch
//!   and purges, so the old key is unreachable and then gone. It runs every
//!   [`MAINTENANCE_INTERVAL_HOURS`] in `pivault-server`, on open when a mark
//!   is older than that, and on demand (`pivault maintenance run`).
//!
//! This is a child module of `vault`.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Context, Session, Vault};
use crate::access::Permission;
use crate::audit::{Channel, EventFilter, Outcome};
use crate::error::{Error, Result};
use crate::ids::{RecordId, UserId};
use crate::keystore::Keystore;
use crate::store::{self, RecordRow, RecordState, WriteOp};

use super::records::JournalEntry;

/// The bound on an updated record's old key: a bucket marked by an update
/// is rotated within this many hours while the vault is in use.
pub const MAINTENANCE_INTERVAL_HOURS: u64 = 24;
const MAINTENANCE_INTERVAL_MS: i64 = MAINTENANCE_INTERVAL_HOURS as i64 * 3_600_000;

/// Meta key prefix of a bucket's dirty mark (value: first marked, unix ms).
const DIRTY_PREFIX: &[u8] = b"dirty-bucket:";

fn dirty_key(bucket: u32) -> Vec<u8> {
    let mut k = DIRTY_PREFIX.to_vec();
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// What the journal's reconciliation did on open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalReport {
    /// Changes whose audit event was in the trail: kept (and finished).
    pub kept: u64,
    /// Changes with no audit event: rolled back.
    pub rolled_back: u64,
    /// Updates with no audit event whose old version's key was already
    /// destroyed: kept, their event appended now (see
    /// [`Vault::reconcile_journal`]).
    pub rolled_forward: u64,
}

/// What a maintenance ratchet did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Buckets rotated (marked by updates, or holding orphaned keys).
    pub buckets_rotated: u64,
    /// Surviving keys re-wrapped under the new bucket keys.
    pub keys_rewrapped: u64,
    /// Orphaned keys destroyed.
    pub orphan_keys_destroyed: u64,
    /// Epochs before and after the ratchet (`None` when there was nothing to do).
    pub epochs: Option<(u64, u64)>,
    /// Whether the keystore purge checks passed and no destroyed key's
    /// wrapped bytes were found in the keystore's files.
    pub verified: bool,
    /// Partitions of the records cluster's search index split because
    /// they grew past the split size (so a disposal need not split them).
    pub search_partitions_split: u64,
}

/// The state `doctor` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceStatus {
    /// Buckets marked by updates since their last rotation.
    pub dirty_buckets: u64,
    /// When the oldest mark was made, unix ms.
    pub oldest_dirty_ms: Option<i64>,
    /// Data keys no live row needs.
    pub orphan_keys: u64,
    /// Write-journal entries outstanding (changes whose audit is unconfirmed).
    pub journal_entries: u64,
    /// The bound, hours.
    pub bound_hours: u64,
}

impl MaintenanceStatus {
    /// Whether the bound is kept at `now_ms` and nothing is orphaned.
    pub fn within_bound(&self, now_ms: i64) -> bool {
        self.orphan_keys == 0
            && self
                .oldest_dirty_ms
                .is_none_or(|t| now_ms - t <= MAINTENANCE_INTERVAL_MS)
    }
}

pub(super) fn system_ctx() -> Context {
    Context {
        channel: Channel::System,
        source: None,
        request_id: None,
    }
}

impl Vault {
    fn dirty_map(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u32, i64>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the dirty marks (on open).
    pub(crate) fn load_dirty(&self) -> Result<()> {
        let mut m = self.dirty_map();
        for (k, v) in self.store.scan_prefix(store::CF_META, DIRTY_PREFIX)? {
            let b = k[DIRTY_PREFIX.len()..]
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| Error::Integrity("dirty-bucket mark"))?;
            let t = v[..]
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| Error::Integrity("dirty-bucket mark"))?;
            m.insert(b, t);
        }
        Ok(())
    }

    /// The write that marks `bucket` dirty, if it is not marked yet (to go in
    /// the same batch as the row whose update leaves residue).
    pub(crate) fn dirty_mark_op(&self, bucket: u32) -> Option<WriteOp<'static>> {
        if self.dirty_map().contains_key(&bucket) {
            return None;
        }
        Some((
            store::CF_META,
            dirty_key(bucket),
            Some(self.now().to_be_bytes().to_vec()),
        ))
    }

    /// Notes in memory a mark written by [`Vault::dirty_mark_op`].
    pub(crate) fn note_dirty(&self, bucket: u32) {
        let now = self.now();
        self.dirty_map().entry(bucket).or_insert(now);
    }

    /// Marks `bucket` dirty on its own (a deleted key outside an update).
    pub(crate) fn mark_dirty(&self, bucket: u32) -> Result<()> {
        if let Some(op) = self.dirty_mark_op(bucket) {
            self.store.write_ops(&[op])?;
            self.note_dirty(bucket);
        }
        Ok(())
    }

    /// Clears the marks of freshly rotated buckets (under their exclusive locks).
    pub(crate) fn clear_dirty(&self, buckets: &[u32]) -> Result<()> {
        let marked: Vec<u32> = {
            let m = self.dirty_map();
            buckets
                .iter()
                .copied()
                .filter(|b| m.contains_key(b))
                .collect()
        };
        if marked.is_empty() {
            return Ok(());
        }
        let ops: Vec<WriteOp<'_>> = marked
            .iter()
            .map(|b| (store::CF_META, dirty_key(*b), None))
            .collect();
        self.store.write_ops(&ops)?;
        let mut m = self.dirty_map();
        for b in &marked {
            m.remove(b);
        }
        Ok(())
    }

    /// Reconciles the write journal with the audit trail (on open, before
    /// the vault serves): audited changes are finished, unaudited ones
    /// rolled back, but for an update whose old key is already destroyed,
    /// which is proof its event had been appended: that one is kept and its
    /// event written again. Audited as `journal.reconcile` when it changed
    /// anything.
    pub(crate) fn reconcile_journal(&self) -> Result<JournalReport> {
        let entries = self.store.scan_prefix(store::CF_JOURNAL, &[])?;
        let mut report = JournalReport::default();
        if entries.is_empty() {
            return Ok(report);
        }
        let decoded: Vec<(RecordId, JournalEntry)> = entries
            .iter()
            .map(|(k, v)| Ok((RecordId::from_slice(k)?, JournalEntry::decode(v)?)))
            .collect::<Result<_>>()?;
        let from = decoded.iter().map(|(_, e)| e.time_ms).min().unwrap_or(0);
        self.settle_audit();
        let events = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?
            .events(&EventFilter {
                from_ms: Some(from),
                action_prefix: Some("record.".into()),
                ..EventFilter::default()
            })?;
        let mut audited: HashSet<(bool, String, Option<String>)> = HashSet::new();
        for ev in events.iter().filter(|e| e.outcome == Outcome::Success) {
            let id = ev.targets.first().cloned().unwrap_or_default();
            match ev.action.as_str() {
                "record.create" => {
                    audited.insert((false, id, None));
                }
                "record.update" => {
                    audited.insert((true, id, ev.targets.get(1).cloned()));
                }
                _ => {}
            }
        }
        for (id, e) in decoded {
            let key = if e.is_update() {
                (true, id.to_string(), Some(format!("version:{}", e.version)))
            } else {
                (false, id.to_string(), None)
            };
            let row = self.store.record(id)?;
            let forward = !audited.contains(&key) && self.old_key_gone(id, &e)?;
            if forward || audited.contains(&key) {
                let live = row
                    .as_ref()
                    .is_some_and(|r| r.state == RecordState::Live && r.version == e.version);
                if forward && live {
                    // The update's event was acknowledged and lost (a trail
                    // line without its fsync lost with the machine, or a lazy
                    // commit with a failed-over primary and the process, where
                    // the trail and the keys are on separate WAL streams): its
                    // old key is destroyed only after the event's append
                    // returned, so rolling back would bring back a row nothing
                    // can read, losing the record whole. The change stays, and
                    // its event is written now, by the system, saying so; no
                    // earlier than the entry, so that the next reconciliation,
                    // reading events from the entry's time, finds it. (With no
                    // live row at that version the row has moved on: nothing to
                    // put back and no change to record; the entry goes.)
                    let mut ev = self.new_event(
                        None,
                        &system_ctx(),
                        "record.update",
                        vec![
                            id.to_string(),
                            format!("version:{}", e.version),
                            "recovered:journal".into(),
                        ],
                        Ok(()),
                        None,
                    );
                    ev.time_ms = ev.time_ms.max(e.time_ms);
                    self.append_event(ev)?;
                    report.rolled_forward += 1;
                } else {
                    report.kept += 1;
                }
                // Kept: an update's older keys go now.
                if let Some(row) = &row {
                    for (v, _) in self.keystore.record_keys(row.subject, id)? {
                        if v != row.version {
                            self.keystore.delete_dek(row.subject, id, v, true)?;
                        }
                    }
                    self.mark_dirty(self.keystore.bucket_of(row.subject))?;
                }
                self.store.delete(store::CF_JOURNAL, id.as_bytes())?;
            } else if e.is_update() {
                let old = RecordRow::decode(&e.old_row)?;
                let mut ops = vec![(store::CF_JOURNAL, id.as_bytes().to_vec(), None)];
                ops.extend(self.restored_index(id, &old)?);
                self.store.put_record_with(id, &old, false, &ops)?;
                self.keystore.delete_dek(old.subject, id, e.version, true)?;
                self.mark_dirty(self.keystore.bucket_of(old.subject))?;
                report.rolled_back += 1;
            } else {
                match &row {
                    Some(row) => {
                        let index = self.index_change(id, &row.collection, None, None)?;
                        self.store.delete_new_record(id, row, &index.ops)?;
                        for (v, _) in self.keystore.record_keys(row.subject, id)? {
                            self.keystore.delete_dek(row.subject, id, v, true)?;
                        }
                        self.mark_dirty(self.keystore.bucket_of(row.subject))?;
                    }
                    None => self.store.delete(store::CF_JOURNAL, id.as_bytes())?,
                }
                report.rolled_back += 1;
            }
        }
        self.audit(
            None,
            &system_ctx(),
            "journal.reconcile",
            vec![
                format!("kept:{}", report.kept),
                format!("rolled_back:{}", report.rolled_back),
                format!("rolled_forward:{}", report.rolled_forward),
            ],
            Ok(()),
            None,
        )?;
        Ok(report)
    }

    /// Whether journal entry `e` is an update whose old version's key is
    /// no longer stored: destroyed after the update's event was appended
    /// (a failed append's undo keeps it; a fenced vault runs no
    /// maintenance, which could otherwise take it as an orphan).
    fn old_key_gone(&self, id: RecordId, e: &JournalEntry) -> Result<bool> {
        if !e.is_update() {
            return Ok(false);
        }
        let old = RecordRow::decode(&e.old_row)?;
        Ok(!self
            .keystore
            .record_keys(old.subject, id)?
            .iter()
            .any(|(v, _)| *v == old.version))
    }

    /// Whether a stored key (record, version) is needed: its record is live
    /// at that version, or an unfinished disposal batch still owns it.
    fn key_needed(&self, id: RecordId, version: u32, row: Option<&RecordRow>) -> bool {
        if self.isolation.check_not_pending(id).is_err() {
            return true;
        }
        matches!(row, Some(r) if r.state == RecordState::Live && r.version == version)
    }

    /// Data keys no live row needs, as (bucket, record, version). A scan of
    /// the keystore with one row lookup per record; without the buckets'
    /// locks a write in flight may show up, so [`Vault::maintenance`]
    /// checks every candidate again under them.
    pub(crate) fn orphan_keys(&self) -> Result<Vec<(u32, RecordId, u32)>> {
        let mut out = Vec::new();
        let mut last: Option<(RecordId, Option<RecordRow>)> = None;
        self.keystore.for_each_wrapped_dek(|k, _| {
            let (b, id, v) = Keystore::parse_dek_key(k)?;
            if last.as_ref().is_none_or(|(r, _)| *r != id) {
                last = Some((id, self.store.record(id)?));
            }
            let row = last.as_ref().and_then(|(_, r)| r.as_ref());
            if !self.key_needed(id, v, row) {
                out.push((b, id, v));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// On open: destroys orphaned keys, and runs the maintenance ratchet
    /// when a dirty mark has passed the bound (a vault used only through
    /// the CLI has no server timer).
    pub(crate) fn destroy_orphans_on_open(&self) -> Result<()> {
        let overdue = self
            .dirty_map()
            .values()
            .any(|t| self.now() - t > MAINTENANCE_INTERVAL_MS);
        if overdue || !self.orphan_keys()?.is_empty() {
            self.maintenance(&system_ctx(), None)?;
        }
        Ok(())
    }

    /// Runs the maintenance ratchet now (officer): rotates every bucket
    /// marked by updates and every bucket holding orphaned keys (which are
    /// destroyed), ratchets the epoch and purges the keystore.
    pub fn run_maintenance(&self, s: &Session) -> Result<MaintenanceReport> {
        self.authorize(s, Some(Permission::Dispose))?;
        self.maintenance(&s.ctx, Some(s.user))
    }

    /// The maintenance ratchet of the server's timer (no user acts).
    pub fn run_scheduled_maintenance(&self) -> Result<MaintenanceReport> {
        self.maintenance(&system_ctx(), None)
    }

    pub(crate) fn maintenance(
        &self,
        ctx: &Context,
        actor: Option<UserId>,
    ) -> Result<MaintenanceReport> {
        self.isolation.check_fence()?;
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        let candidates = self.orphan_keys()?;
        let mut buckets: BTreeSet<u32> = self.dirty_map().keys().copied().collect();
        buckets.extend(candidates.iter().map(|(b, _, _)| *b));
        let mut report = MaintenanceReport::default();
        // Under the disposal lock: no purge is rewriting a partition. A
        // split that fails is audited and the keys' upkeep still runs: the
        // bound on an updated record's old key does not wait on the index.
        match self.store.split_beacons() {
            Ok(split) => {
                report.search_partitions_split = split.len() as u64;
                if !split.is_empty() {
                    self.audit(
                        actor,
                        ctx,
                        "index.split",
                        vec![format!("partitions:{}", split.len())],
                        Ok(()),
                        None,
                    )?;
                }
            }
            Err(e) => {
                self.audit(actor, ctx, "index.split", Vec::new(), Err(&e), None)?;
            }
        }
        if buckets.is_empty() {
            return Ok(report);
        }
        let buckets: Vec<u32> = buckets.into_iter().collect();
        let r = (|| {
            let guards = self.isolation.exclusive(&buckets);
            // Under the locks no write is in flight in these buckets: check
            // each candidate again.
            let mut orphans: HashSet<(RecordId, u32)> = HashSet::new();
            let mut rows: HashMap<RecordId, Option<RecordRow>> = HashMap::new();
            for (_, id, v) in &candidates {
                if !rows.contains_key(id) {
                    rows.insert(*id, self.store.record(*id)?);
                }
                if !self.key_needed(*id, *v, rows[id].as_ref()) {
                    orphans.insert((*id, *v));
                }
            }
            let epoch = self.epoch.read().expect("epoch lock");
            let rotation =
                self.keystore
                    .plan_rotation(&epoch.root, epoch.number, &buckets, |r, v| {
                        orphans.contains(&(r, v))
                    })?;
            drop(epoch);
            let wrapped = rotation.deleted_wrapped.clone();
            report.keys_rewrapped = rotation.rewrapped;
            report.orphan_keys_destroyed = rotation.deleted.len() as u64;
            report.buckets_rotated = buckets.len() as u64;
            self.keystore.commit_rotation(rotation)?;
            self.clear_dirty(&buckets)?;
            drop(guards);
            let before = self.epoch();
            let after = self.ratchet()?;
            report.epochs = Some((before, after));
            let ev = self.keystore.purge(
                &buckets,
                self.purge_skip_flush
                    .load(std::sync::atomic::Ordering::SeqCst),
            )?;
            let hits = self
                .keystore
                .files_containing_for_buckets(&buckets, &wrapped, ev.wal_floor.as_deref())?
                .hits;
            report.verified = ev.clean() && hits.is_empty();
            Ok(())
        })();
        let targets = vec![
            format!("buckets:{}", report.buckets_rotated),
            format!("orphans:{}", report.orphan_keys_destroyed),
            report
                .epochs
                .map(|(a, b)| format!("epoch:{a}->{b}"))
                .unwrap_or_default(),
            format!("verified:{}", report.verified),
        ];
        self.audit(
            actor,
            ctx,
            "key.maintenance",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r.map(|()| report)
    }

    /// The maintenance state, for `doctor`.
    pub fn maintenance_status(&self) -> Result<MaintenanceStatus> {
        let m = self.dirty_map().clone();
        Ok(MaintenanceStatus {
            dirty_buckets: m.len() as u64,
            oldest_dirty_ms: m.values().min().copied(),
            orphan_keys: self.orphan_keys()?.len() as u64,
            journal_entries: self.store.scan_prefix(store::CF_JOURNAL, &[])?.len() as u64,
            bound_hours: MAINTENANCE_INTERVAL_HOURS,
        })
    }

    /// Current time, for callers outside the facade (doctor).
    pub fn now_ms(&self) -> i64 {
        self.now()
    }
}
