//! The audit trail of a vault whose records are on a cluster (issue 16):
//! the same canonical lines as the files (see the parent module), kept as
//! rows of the records database's `pivault_audit` schema, which
//! `scripts/keystore-cluster.sql` makes append-only.
//!
//! Why rows, not files beside the header: a vault machine that is lost
//! takes its files with it, and whoever holds that machine can rewrite
//! files (then only the anchors show it). On the cluster the trail is
//! replicated with the records, and the vault's database role may only
//! call `pivault_audit.append`/`add_checkpoint` (next sequence number of
//! its own trail, checked under the trail's row lock) and read its own
//! trail back: no role but the cluster's superuser can change, remove or
//! reorder a line, and a second process writing the same trail is refused
//! a sequence number instead of forking the chain.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{CHECKPOINTS_FILE, SEGMENT_MAX_BYTES, create_private_file, segment_path, sync_dir};
use crate::error::{Error, Result};
use crate::ids::VaultId;
use crate::keystore::postgres::{Conns, PgConfig, Pooled, off_runtime, pg};
use crate::store::postgres::{Fence, held_by};

/// Events per page when a trail is read back.
const READ_PAGE: u64 = 10_000;

/// One vault's trail on the records cluster.
pub(super) struct ClusterTrail {
    conns: Conns,
    /// The vault's ID as the functions take it (32 hex digits, a `uuid`).
    vault: String,
    /// `synchronous_commit` of an event's append: `on` with the vault's
    /// `sync`; otherwise `off`, as a file line without its fsync: the event
    /// outlives the vault's process, and a primary's crash within a
    /// fraction of a second may lose it unless a later synchronous commit
    /// (any record write, any checkpoint: the WAL is flushed in order)
    /// came first. `pivault_audit.append` turns it `on` for any event but
    /// a record's (those alone the write journal covers or change nothing).
    commit: &'static str,
    /// The events appended with a lazy commit since the last synchronous
    /// one (seq and line): what a failover or a primary's crash may have
    /// lost. A refused append or checkpoint sends them again first (the
    /// same bytes: those that survived pass as retries), so an event
    /// acknowledged to the vault's process is lost only if that process
    /// dies too, as a file line without its fsync is lost only with the
    /// machine. At most [`super::CHECKPOINT_EVERY`] or so: a checkpoint's
    /// synchronous commit makes them durable and empties the list.
    unsure: Mutex<Unsure>,
    /// The vault's lock in the same database: with it, an append or a
    /// checkpoint is written only while this process holds the vault (a
    /// process whose lease lapsed cannot take a number from the process that
    /// took the vault over).
    fence: std::sync::OnceLock<Arc<dyn Fence>>,
}

/// Events (seq and line) not yet known to be on a standby.
type Unsure = Vec<(u64, Vec<u8>)>;

/// SQLSTATE 40001: the trail's functions refusing a sequence number.
fn refused(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
}

const APPEND: &str = "SELECT pivault_audit.append($1::text::uuid, $2, $3)
     FROM (SELECT set_config('synchronous_commit', $4::text, true)) AS sc";

const CHECKPOINT: &str = "SELECT pivault_audit.add_checkpoint($1::text::uuid, $2, $3)";

/// A failure to reach or write the trail: the audited operation must not
/// happen (fail closed), and the message names no row.
fn unavailable(e: Error) -> Error {
    Error::AuditUnavailable(format!("the audit trail on the records cluster: {e}"))
}

impl ClusterTrail {
    /// Runs `f` on a connection to the primary, off the server's async
    /// runtime, retried once after a failover; any failure is the trail's.
    fn on_primary<T: Send>(&self, f: impl Fn(&mut Pooled) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| self.conns.with_primary(f)).map_err(unavailable)
    }

    /// Connects to the records cluster of `cfg` (a pool of its own, within
    /// the process's budget of connections to that cluster).
    pub(super) fn open(cfg: PgConfig, vault: VaultId, sync: bool) -> Result<ClusterTrail> {
        Ok(ClusterTrail {
            conns: Conns::new(cfg)?,
            vault: hex::encode(vault.as_bytes()),
            commit: if sync { "on" } else { "off" },
            unsure: Mutex::new(Vec::new()),
            fence: std::sync::OnceLock::new(),
        })
    }

    /// Appends and checkpoints from now on only while `fence`'s lock is
    /// held by this process.
    pub(super) fn fence_with(&self, fence: Arc<dyn Fence>) {
        let _ = self.fence.set(fence);
    }

    /// `sql` (whose answer is a row of the function's result) run only
    /// while the vault's lock is held, by the backend given as parameters
    /// `$n` and `$n + 1`: the row's first column says whether it was. With
    /// `forget`, the same statement removes the write-journal entries of
    /// the array `$n + 2` (see [`Self::append`]), also only while the lock
    /// is held.
    fn fenced_sql(&self, sql: &str, n: usize, forget: bool) -> String {
        if let Some(f) = self.fence.get() {
            let held = held_by(&format!("${n}::int"), &format!("${}::text", n + 1));
            let fj = if forget {
                let delete = f.forget_journal_entries(&format!("${}::bytea[]", n + 2));
                format!(", fj AS ({delete} AND (SELECT held FROM lk))")
            } else {
                String::new()
            };
            format!(
                "WITH lk AS (SELECT {held} AS held){fj} SELECT lk.held, CASE WHEN lk.held THEN ({sql})::text END FROM lk"
            )
        } else {
            format!(
                "SELECT true, ({sql})::text WHERE $1::text IS NOT NULL AND ${n}::int IS NOT NULL AND ${}::text IS NOT NULL",
                n + 1
            )
        }
    }

    /// Runs `write` under the lock's backend (which it answers whether
    /// still held); when it was not, the lock is taken again (or this
    /// process was `TakenOver`) and `write` runs once more.
    fn fenced(&self, write: impl Fn(&(i32, String)) -> Result<bool>) -> Result<()> {
        let Some(f) = self.fence.get() else {
            return if write(&(0, String::new()))? {
                Ok(())
            } else {
                Err(Error::TakenOver)
            };
        };
        let seen = f.holder();
        if write(&seen)? {
            return Ok(());
        }
        f.retake(&seen)?;
        if write(&f.holder())? {
            return Ok(());
        }
        Err(Error::TakenOver)
    }

    /// Appends `lines` (without newlines) as events `first`, `first + 1`,
    /// ... in one transaction. Retried once on a new primary after a
    /// failover: a line that did reach the trail passes as the same line.
    /// Refused (a gap: the new primary lost lazily committed events), it
    /// is sent again after the events that may have been lost.
    ///
    /// With `forget` (new records' IDs), those records' write-journal
    /// entries go in the same statement, and so in the same commit as the
    /// events: one round trip less for a put, and never an event without
    /// its entry's removal or the other way round. Answers whether they
    /// did (`false`: no records store in this database to fence with, and
    /// the callers remove the entries themselves).
    pub(super) fn append(&self, first: u64, lines: &[&[u8]], forget: &[&[u8]]) -> Result<bool> {
        let forget = Some(forget).filter(|f| !f.is_empty() && self.fence.get().is_some());
        let mut unsure = self.unsure()?;
        let again = again(&unsure, lines);
        self.fenced(|(pid, start)| {
            let sql = self.fenced_sql(APPEND, 5, forget.is_some());
            self.on_primary(|c| {
                let st = c.prepared(&sql)?;
                // The entry's key is a parameter only of the statement that
                // removes it.
                let n = if forget.is_some() { 7 } else { 6 };
                let mut run = |from: &i64, all: &[&[u8]]| {
                    let params: [&(dyn postgres::types::ToSql + Sync); 7] =
                        [&self.vault, from, &all, &self.commit, &pid, &start, &forget];
                    c.query_one(&st, &params[..n])
                };
                match run(&(first as i64), lines) {
                    Err(e) if refused(&e) && again.is_some() => {
                        let (from, all) = again.as_ref().expect("checked");
                        Ok(run(from, all).map_err(pg)?.get(0))
                    }
                    r => Ok(r.map_err(pg)?.get(0)),
                }
            })
        })?;
        if self.commit == "off" {
            unsure.extend((first..).zip(lines.iter().map(|l| l.to_vec())));
        }
        Ok(forget.is_some())
    }

    fn unsure(&self) -> Result<std::sync::MutexGuard<'_, Unsure>> {
        self.unsure
            .lock()
            .map_err(|_| Error::AuditUnavailable("the audit trail's lock is poisoned".into()))
    }

    /// Adds `events` from seq 1 and the checkpoints `lines` at `seqs`, in
    /// one transaction: a trail moved from files is there whole or not at
    /// all.
    pub(super) fn import(&self, events: &[Vec<u8>], seqs: &[u64], lines: &[Vec<u8>]) -> Result<()> {
        self.on_primary(|c| {
            let mut tx = c.transaction().map_err(pg)?;
            tx.query_one(
                "SELECT pivault_audit.append($1::text::uuid, 1, $2)",
                &[&self.vault, &events],
            )
            .map_err(pg)?;
            for (seq, line) in seqs.iter().zip(lines) {
                tx.query_one(
                    "SELECT pivault_audit.add_checkpoint($1::text::uuid, $2, $3)",
                    &[&self.vault, &(*seq as i64), line],
                )
                .map_err(pg)?;
            }
            tx.commit().map_err(pg)
        })
    }

    /// Adds the checkpoint `line` (without its newline) at event `seq`:
    /// always a synchronous commit, which also makes every event before it
    /// durable on the standbys. Refused (its event lost with a primary),
    /// the unsure events are sent again and the checkpoint once more.
    pub(super) fn add_checkpoint(&self, seq: u64, line: &[u8]) -> Result<()> {
        let mut unsure = self.unsure()?;
        let again = again(&unsure, &[]);
        let seq = seq as i64;
        self.fenced(|(pid, start)| {
            let add = self.fenced_sql(CHECKPOINT, 4, false);
            let append = self.fenced_sql(APPEND, 5, false);
            self.on_primary(|c| {
                let st = c.prepared(&add)?;
                let add =
                    |c: &mut Pooled| c.query_one(&st, &[&self.vault, &seq, &line, &pid, &start]);
                match add(c) {
                    Err(e) if refused(&e) && again.is_some() => {
                        let (from, all) = again.as_ref().expect("checked");
                        let append = c.prepared(&append)?;
                        let held: bool = c
                            .query_one(
                                &append,
                                &[&self.vault, from, all, &self.commit, &pid, &start],
                            )
                            .map_err(pg)?
                            .get(0);
                        if !held {
                            return Ok(false);
                        }
                        Ok(add(c).map_err(pg)?.get(0))
                    }
                    r => Ok(r.map_err(pg)?.get(0)),
                }
            })
        })?;
        unsure.retain(|(s, _)| *s as i64 > seq);
        Ok(())
    }

    /// Events `from` to `to` (inclusive), in order, one page of at most
    /// [`READ_PAGE`] from `from`: the caller pages on.
    fn page(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let (from, to) = (
            from as i64,
            to.min(from.saturating_add(READ_PAGE - 1)) as i64,
        );
        self.on_primary(|c| {
            let st =
                c.prepared("SELECT seq, line FROM pivault_audit.events($1::text::uuid, $2, $3)")?;
            let rows = c.query(&st, &[&self.vault, &from, &to]).map_err(pg)?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1)))
                .collect())
        })
    }

    /// Visits events `from` to `to` in order, a page at a time, until
    /// `visit` says it has enough (returns true).
    pub(super) fn each_event(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut next = from.max(1);
        while next <= to {
            let page = self.page(next, to)?;
            let Some(&(last, _)) = page.last() else {
                return Ok(());
            };
            for (seq, line) in &page {
                if visit(*seq, line)? {
                    return Ok(());
                }
            }
            next = last + 1;
        }
        Ok(())
    }

    /// The last event (its seq and line), if any: where appending resumes.
    /// A records database without the audit functions (set up by an
    /// earlier build) is named as such, with the script that adds them.
    pub(super) fn last_event(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.read_last_event().map_err(|e| match e {
            Error::AuditUnavailable(m) if m.contains("(3F000)") || m.contains("(42883)") => {
                Error::AuditUnavailable(
                    "the records database has no audit trails (schema pivault_audit): \
                     run scripts/records-audit.sql on it as the cluster's superuser"
                        .into(),
                )
            }
            e => e,
        })
    }

    fn read_last_event(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let row = self.on_primary(|c| {
            // With whether `append` is there: a file of the scripts run
            // without the other leaves the trail readable but not writable.
            let st = c.prepared(
                "SELECT to_regprocedure('pivault_audit.append(uuid,bigint,bytea[])') IS NOT NULL, l.seq, l.line
                   FROM (SELECT 1) one LEFT JOIN pivault_audit.last_event($1::text::uuid) l ON true",
            )?;
            c.query_one(&st, &[&self.vault]).map_err(pg)
        })?;
        if !row.get::<_, bool>(0) {
            return Err(Error::AuditUnavailable(
                "the records database's audit trails have no append function (pivault_audit.append): \
                 run scripts/records-audit-append.sql on it as the cluster's superuser"
                    .into(),
            ));
        }
        Ok(row
            .get::<_, Option<i64>>(1)
            .map(|seq| (seq as u64, row.get::<_, Vec<u8>>(2))))
    }

    /// Every checkpoint line, in order.
    pub(super) fn checkpoints(&self) -> Result<Vec<Vec<u8>>> {
        self.on_primary(|c| {
            let st = c.prepared("SELECT line FROM pivault_audit.checkpoints($1::text::uuid)")?;
            let rows = c.query(&st, &[&self.vault]).map_err(pg)?;
            Ok(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
        })
    }

    /// Writes the trail into `dir` (new, private) in the files' format:
    /// segments of at most [`SEGMENT_MAX_BYTES`] and `checkpoints.log`,
    /// which `audit::verify` and any third party's verifier read.
    pub(super) fn write_files(&self, dir: &Path) -> Result<()> {
        use std::io::Write;
        crate::fsutil::create_private_dir(dir)?;
        let mut segment_no = 1;
        let mut segment = std::io::BufWriter::new(create_private_file(&segment_path(dir, 1))?);
        let mut segment_len = 0u64;
        self.each_event(1, u64::MAX >> 1, |_, line| {
            let len = line.len() as u64 + 1;
            if segment_len > 0 && segment_len + len > SEGMENT_MAX_BYTES {
                segment.flush()?;
                segment_no += 1;
                segment =
                    std::io::BufWriter::new(create_private_file(&segment_path(dir, segment_no))?);
                segment_len = 0;
            }
            segment.write_all(line)?;
            segment.write_all(b"\n")?;
            segment_len += len;
            Ok(false)
        })?;
        segment.flush()?;
        let mut cps = create_private_file(&dir.join(CHECKPOINTS_FILE))?;
        for line in self.checkpoints()? {
            cps.write_all(&line)?;
            cps.write_all(b"\n")?;
        }
        cps.sync_all()?;
        sync_dir(dir)?;
        Ok(())
    }
}

/// The unsure events followed by `lines`, from the first unsure seq: what
/// to send again after a refusal; `None` when nothing is unsure.
fn again<'a>(unsure: &'a [(u64, Vec<u8>)], lines: &[&'a [u8]]) -> Option<(i64, Vec<&'a [u8]>)> {
    let (from, _) = unsure.first()?;
    let all = unsure
        .iter()
        .map(|(_, l)| &l[..])
        .chain(lines.iter().copied());
    Some((*from as i64, all.collect()))
}
