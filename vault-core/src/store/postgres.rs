//! The records store on a PostgreSQL cluster (issue 16): a vault's records,
//! users, sessions, disposal batches, certificates and every other table of
//! [`super::ALL_CFS`] in its own schema `pr_<vault id>` of the records
//! database named by the vault's `records.json` (the same shape as
//! `keystore.json`; in production a cluster of its own, larger than the
//! keystore's and with backups and WAL archiving allowed, since nothing in
//! it needs purging but the blind indexes).
//!
//! Two tables: `rows (t, k, v)` for every table but one, keyed by the
//! table's number and the row's key, and `beacons (p, k, v)`, the blind
//! indexes, in partitions by record that split as the vault grows
//! ([`partitions`]), derived from personal information and so purged after
//! a disposal with the keystore's recipe
//! ([`crate::keystore::postgres::Conns::purge`]): `VACUUM FULL` (or a
//! split) of the disposed records' partitions, WAL rounds on every member,
//! and a byte scan of every member for the deleted rows' tags. Record bodies are
//! AES-256-GCM envelopes whose data keys are in the keystore: destroying
//! the key is the disposal, so `rows` is never purged.
//!
//! One process at a time opens a vault (as RocksDB's lock does for the
//! embedded engine): the opener holds an `EXCLUSIVE` lock on the vault's
//! own table `holder`, in a transaction left open on a connection of its
//! own, for as long as the vault is open. Only the vault's role may lock
//! its tables, so another vault's role on the same database cannot take the
//! lock first and keep the vault from opening, as it could with an advisory
//! lock (any role may take any advisory lock in its database). The mode is
//! below `ACCESS EXCLUSIVE`, which would be logged for the standbys and
//! give the transaction an ID that holds back every purge's `VACUUM FULL`;
//! idle, the transaction holds no snapshot either. Every write checks, in
//! the same statement, that the holder's backend, named by its process ID
//! *and* its start time (a process ID alone may be reused, on another
//! member after a failover), is still in the transaction that took the
//! lock ([`held_by`]), and writes nothing
//! otherwise; after a failover closed the holder's connection, the lock is
//! taken again on the new primary and the write retried (refused if
//! another process took the vault meanwhile).
//!
//! The lock is a lease: the server ends the lock's idle session after
//! [`LEASE`] without a statement, and a thread of the holder sends one
//! every two seconds, so a holder that is stopped, hung or cut off from
//! the cluster loses the vault to a standby (`pivault-server --standby`)
//! within the lease, and a killed one at once. Every opener bumps the
//! lease's generation (a row of `lease`); a holder that finds its lock gone
//! takes it again only if the generation is still its own, and is
//! otherwise [`Error::TakenOver`]: its caches, pending set and epoch may be
//! stale, so it serves nothing more (reads renew the lease first when it
//! may have lapsed). The keystore is fenced the same way
//! (`PgKeys::fence`). The isolation locks stay in the one process that
//! holds the vault.

mod partitions;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::Client;

use super::engine::{RowEngine, Visit};
use super::{ALL_CFS, BeaconPurge, CF_BEACONS, WriteOp};
use crate::error::{Error, Result};
use crate::ids::VaultId;
use crate::keystore::postgres::{
    CheckNames, Conns, NEXT_GENERATION, Narrowed, PgConfig, PurgeControl, off_runtime, pg,
    scan_pages,
};

/// Rows per page of a scan.
const SCAN_PAGE: usize = 1000;

/// How long an opener waits for the vault's lock before calling the vault
/// busy (a killed holder's backend releases it within milliseconds).
const LOCK_PATIENCE: Duration = Duration::from_secs(1);

/// How long the vault's lock outlives a holder that stopped sending
/// statements (stopped, hung, or cut off from the cluster): its session is
/// ended after this long idle, which releases the lock to a standby.
pub const LEASE: Duration = Duration::from_secs(10);

/// How often the holder renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// A read renews the lease first when it was last renewed longer ago than
/// this (the process may have been stopped past the lease).
const READ_FRESH: Duration = Duration::from_secs(5);

/// The file naming a vault's records cluster, beside the header.
pub const RECORDS_FILE: &str = "records.json";

/// Reads the vault directory's `records.json`, if there is one.
pub fn read_config(dir: &std::path::Path) -> Result<Option<PgConfig>> {
    PgConfig::read_named(dir, RECORDS_FILE)
}

/// The schema of `vault`'s records in the records database.
fn records_schema(vault: VaultId) -> String {
    format!("pr_{}", hex::encode(vault.as_bytes()))
}

/// Where the process holding a vault listens, as it published it (read by
/// a standby, which forwards requests there; `pivault-server --standby`).
/// An address read here is only a hint: the row is writable by the
/// vault's role, so the standby trusts only a server that proves it holds
/// the servers' shared TLS key.
pub struct HolderLookup {
    conns: Conns,
    schema: String,
    vault: VaultId,
}

impl std::fmt::Debug for HolderLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HolderLookup")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl HolderLookup {
    /// For `vault`, whose records are on the cluster `cfg` names
    /// ([`crate::Vault::holder_lookup`] reads both from a vault directory).
    pub(crate) fn new(cfg: PgConfig, vault: VaultId) -> Result<HolderLookup> {
        Ok(HolderLookup {
            vault,
            schema: records_schema(vault),
            conns: off_runtime(|| Conns::new(cfg))?,
        })
    }

    /// The vault's ID.
    pub fn vault_id(&self) -> VaultId {
        self.vault
    }

    /// Whether a process holds the vault's lock now (read from the
    /// primary's lock table, taking nothing): free while a holder whose
    /// lock's session a failover ended has not yet taken it again.
    pub fn lock_held(&self) -> Result<bool> {
        let holder = format!("{}.holder", self.schema);
        off_runtime(|| {
            self.conns.with_primary(|c| {
                c.query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks
                      WHERE relation = to_regclass($1) AND mode = 'ExclusiveLock' AND granted)",
                    &[&holder],
                )
                .map(|r| r.get(0))
                .map_err(pg)
            })
        })
    }

    /// The address the current holder published, if it has (none while a
    /// new holder is still opening the vault).
    pub fn address(&self) -> Result<Option<String>> {
        let sql = format!("SELECT holder_address FROM {}.lease", self.schema);
        off_runtime(|| {
            self.conns
                .with_primary(|c| match c.query_opt(sql.as_str(), &[]) {
                    Ok(row) => Ok(row.and_then(|r| r.get(0))),
                    // A vault no holder of this build has opened yet.
                    Err(e)
                        if e.code() == Some(&postgres::error::SqlState::UNDEFINED_COLUMN)
                            || e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(pg(e)),
                })
        })
    }
}

/// One vault's records on the cluster.
pub(crate) struct PgRows {
    holding: Arc<Holding>,
    control: Mutex<PurgeControl>,
    /// The size past which a purge splits a search-index partition
    /// ([`partitions::SPLIT_AT`]; tests make it small).
    split_at: AtomicU64,
}

/// The connections of one vault's records and the lease on it (shared
/// with the thread that renews the lease).
pub(crate) struct Holding {
    conns: Conns,
    schema: String,
    /// The connection holding the vault's lock (one opener at a time).
    holder: Mutex<Option<Client>>,
    /// Its backend's process ID, and [`HOLDER_TIMES`]: every write checks,
    /// in its own statement, that this backend still holds the lock.
    holder_backend: Mutex<(i32, String)>,
    /// The vault's lease generation when this process took it (bumped by
    /// every opener): a lock taken again after it lapsed is this process's
    /// only if no other process took the vault meanwhile.
    generation: Mutex<Option<i64>>,
    /// When the holder's session last answered.
    renewed: Mutex<Instant>,
    /// Another process took the vault over: nothing more is served.
    lost: AtomicBool,
    /// Dropped: the renewing thread stops, and nothing takes the lock again.
    closing: AtomicBool,
}

impl std::ops::Deref for PgRows {
    type Target = Holding;
    fn deref(&self) -> &Holding {
        &self.holding
    }
}

impl std::fmt::Debug for PgRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRows")
            .field("members", &self.conns.cfg.members)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A table's number in `rows`.
fn table_no(table: &str) -> i16 {
    ALL_CFS
        .iter()
        .position(|t| *t == table)
        .expect("a records table") as i16
}

/// The first key after every key starting with `prefix` (`None`: no bound).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut e = prefix.to_vec();
    while let Some(last) = e.pop() {
        if last < 0xff {
            e.push(last + 1);
            return Some(e);
        }
    }
    None
}

/// A page of a key range of `rel` (`$1` the table number in `cond`, `$2`
/// the start: the prefix, or the page's last key, exclusive; `$3` the
/// prefix's end, if it has one).
fn scan_sql(rel: &str, cond: &str, after: bool, end: bool) -> String {
    format!(
        "SELECT k, v FROM {rel} WHERE {cond} AND k {} $2{} ORDER BY k LIMIT {SCAN_PAGE}",
        if after { ">" } else { ">=" },
        if end { " AND k < $3" } else { "" }
    )
}

impl PgRows {
    /// Connects, takes the vault's lock (refused while another process
    /// holds the vault open), runs `live` (the vault directory still names
    /// a vault: one deleted while this waited must not get its schema back
    /// from the next line), creates the schema if it is not there
    /// (`create`: a new vault's first open; otherwise a missing schema is a
    /// deleted vault's, and an error), and starts renewing the lease.
    pub(crate) fn open(
        cfg: PgConfig,
        vault: VaultId,
        live: &(dyn Fn() -> Result<()> + Sync),
        create: bool,
    ) -> Result<PgRows> {
        off_runtime(|| {
            let rows = PgRows {
                holding: Arc::new(Holding {
                    schema: records_schema(vault),
                    conns: Conns::new(cfg)?,
                    holder: Mutex::new(None),
                    holder_backend: Mutex::new((0, String::new())),
                    generation: Mutex::new(None),
                    renewed: Mutex::new(Instant::now()),
                    lost: AtomicBool::new(false),
                    closing: AtomicBool::new(false),
                }),
                control: Mutex::new(PurgeControl::Full),
                split_at: AtomicU64::new(partitions::SPLIT_AT),
            };
            rows.take_lock(&mut rows.holder.lock().expect("holder lock"), create)?;
            live()?;
            rows.conns.with_primary(|c| rows.create_schema(c))?;
            rows.conns
                .with_primary(|c| rows.wait_for_writes_in_flight(c))?;
            let weak = Arc::downgrade(&rows.holding);
            std::thread::Builder::new()
                .name("pivault-lease".into())
                .spawn(move || Holding::keep_renewing(&weak))
                .map_err(|e| Error::Io(format!("cannot start the lease thread: {e}")))?;
            Ok(rows)
        })
    }
}

/// What the audit trail in the same database needs to append only while
/// this process holds the vault: the holder's backend (process ID, and its
/// start and its transaction's start, [`HOLDER_TIMES`]), and the lock taken
/// again.
pub(crate) trait Fence: Send + Sync {
    /// Process ID and [`HOLDER_TIMES`] of the lock's backend.
    fn holder(&self) -> (i32, String);
    /// After an append under `seen` found the lock gone: taken again
    /// (unless another thread already did), or `TakenOver`.
    fn retake(&self, seen: &(i32, String)) -> Result<()>;
    /// The statement that removes the write-journal entries whose keys are
    /// in the array `keys` (a parameter the caller names) of the vault's
    /// records, in the same database: the trail folds new records' entry
    /// removals into the append of their audit events.
    fn forget_journal_entries(&self, keys: &str) -> String;
}

impl Fence for Holding {
    fn holder(&self) -> (i32, String) {
        self.holder_backend.lock().expect("holder backend").clone()
    }

    fn retake(&self, seen: &(i32, String)) -> Result<()> {
        // The blocking client must not run on an async runtime's thread.
        off_runtime(|| self.retake_unless_moved(seen))
    }

    fn forget_journal_entries(&self, keys: &str) -> String {
        format!(
            "DELETE FROM {}.rows WHERE t = {} AND k = ANY({keys})",
            self.schema,
            table_no(crate::store::CF_JOURNAL)
        )
    }
}

/// A backend's start time and its transaction's, from its status entry
/// `a`: the lock's backend, in the transaction that took the lock.
const HOLDER_TIMES: &str = "a.backend_start::text || ' ' || a.xact_start::text";

/// Whether table `name` (a partition of `parent`) is one this engine
/// makes in a vault's records schema: its tables and the search index's
/// partitions (as named by [`partitions::Part`]).
fn own_table(name: &str, parent: Option<&str>) -> bool {
    match parent {
        None => matches!(name, "holder" | "lease" | "rows" | "beacons"),
        Some("beacons") => partitions::Part::parse(name).is_some(),
        Some(_) => false,
    }
}

/// The statement's condition that the vault's lock is still held: the
/// backend `$pid` (a parameter the caller names) is still in the
/// transaction that took it (`$times`, [`HOLDER_TIMES`]). A table lock is
/// released only when its transaction ends.
pub(crate) fn held_by(pid: &str, times: &str) -> String {
    format!("EXISTS (SELECT 1 FROM pg_stat_get_activity({pid}) a WHERE {HOLDER_TIMES} = {times})")
}

impl Holding {
    /// Takes the vault's lock on a new connection to the primary
    /// (`VaultBusy` while another process holds it). The first time, the
    /// lease's generation is bumped; after the lock lapsed, it must be the
    /// one this process bumped, else another process held the vault
    /// meanwhile and this one is `TakenOver`.
    /// `create`: the schema and its lock table are made if missing (a new
    /// vault); otherwise only the lock table of an existing schema (made by
    /// an earlier build), and a missing schema is a deleted vault's.
    fn take_lock(&self, holder: &mut Option<Client>, create: bool) -> Result<()> {
        // A new connection: after a failover the pool's may all be dead,
        // and trying each in turn would keep the vault unheld meanwhile.
        let mut c = self.conns.fresh_primary()?;
        let s = &self.schema;
        // The lock lives in a transaction left idle, which the server ends
        // after LEASE without a statement: a process stopped, hung or cut
        // off from the cluster that long loses the vault to a standby. The
        // renewing thread sends a statement every RENEW_EVERY.
        c.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {};",
            LEASE.as_millis()
        ))
        .map_err(pg)?;
        use crate::keystore::postgres::{SchemaIs, claim_schema, schema_is};
        if create {
            claim_schema(&mut c, s)?;
            c.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {s}.holder ();"))
                .map_err(pg)?;
        } else if schema_is(&mut c, s)? == SchemaIs::Ours {
            c.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {s}.holder ();"))
                .map_err(pg)?;
        } else {
            return Err(Error::NotAVault(
                "the vault's records are not on their cluster (the vault was deleted)".into(),
            ));
        }
        // A process that was just killed still holds the lock until its
        // backend reads the closed socket and exits (milliseconds): a
        // second's patience, then the holder is a live process.
        let deadline = Instant::now() + LOCK_PATIENCE;
        loop {
            match c.batch_execute(&format!(
                "BEGIN; LOCK TABLE {s}.holder IN EXCLUSIVE MODE NOWAIT"
            )) {
                Ok(()) => break,
                Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                    c.batch_execute("ROLLBACK").map_err(pg)?;
                }
                Err(e) => return Err(pg(e)),
            }
            if Instant::now() >= deadline {
                return Err(Error::VaultBusy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The lock's holder: this backend (its process ID and start time:
        // an ID alone may be reused, by another member's backend after a
        // failover) in this transaction (its start time), which holds the
        // lock until it ends. A check of these is one backend's status
        // entry, where a look into `pg_locks` gathers every lock of the
        // server.
        let me = c
            .query_one(
                &format!(
                    "SELECT pid, {HOLDER_TIMES} FROM pg_stat_get_activity(pg_backend_pid()) a"
                ),
                &[],
            )
            .map_err(pg)?;
        let pid: i32 = me.get(0);
        // Without `track_activities` a backend's transaction start is not
        // reported, and no write could prove the lock held.
        let start: String = me.get::<_, Option<String>>(1).ok_or_else(|| {
            Error::Storage(
                "the records cluster does not report transaction starts (track_activities = off): the vault's lock cannot be checked; turn track_activities on".into(),
            )
        })?;
        // Under the lock: the lease's generation (a row of its own, so the
        // lock's transaction writes nothing and holds no transaction ID).
        let mine = *self.generation.lock().expect("generation lock");
        let now: i64 = self.conns.with_primary(|p| {
            p.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {s}.lease (one boolean PRIMARY KEY DEFAULT true CHECK (one),
                     generation bigint NOT NULL, holder_address text);
                 ALTER TABLE {s}.lease ADD COLUMN IF NOT EXISTS holder_address text;
                 INSERT INTO {s}.lease (generation) VALUES (0) ON CONFLICT DO NOTHING;"
            ))
            .map_err(pg)?;
            // A new holder listens only once it has opened the vault: until
            // it publishes its address, standbys have nowhere to forward.
            let sql = if mine.is_none() {
                format!("UPDATE {s}.lease SET generation = {NEXT_GENERATION}, holder_address = NULL RETURNING generation")
            } else {
                format!("SELECT generation FROM {s}.lease")
            };
            Ok(p.query_one(sql.as_str(), &[]).map_err(pg)?.get(0))
        })?;
        if mine.is_some_and(|g| g != now) {
            // Another process held the vault since this one lost its lock:
            // what this process knows (caches, the pending set, the epoch)
            // may be stale, so it serves nothing more.
            self.lost.store(true, Ordering::SeqCst);
            return Err(Error::TakenOver);
        }
        *self.generation.lock().expect("generation lock") = Some(now);
        *self.holder_backend.lock().expect("holder backend") = (pid, start);
        *self.renewed.lock().expect("renewed lock") = Instant::now();
        *holder = Some(c.client);
        Ok(())
    }

    /// After the lock was found gone (a failover closed the holder's
    /// connection, or the lease lapsed): the lock is taken again on the
    /// primary, or `TakenOver` because another process has had the vault
    /// since.
    fn retake_lock(&self, holder: &mut Option<Client>) -> Result<()> {
        drop(holder.take());
        match self.take_lock(holder, false) {
            Err(Error::VaultBusy) => {
                self.lost.store(true, Ordering::SeqCst);
                Err(Error::TakenOver)
            }
            r => r,
        }
    }

    /// After a statement under the lock's backend `seen` found the lock
    /// gone: the lock taken again, unless another thread already did (the
    /// backend is no longer `seen`: the statement is then only retried), or
    /// `TakenOver`. Two writers failing at once after a failover must not
    /// both take it, the second dropping the first's new lock.
    fn retake_unless_moved(&self, seen: &(i32, String)) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::TakenOver);
        }
        let mut holder = self.holder.lock().expect("holder lock");
        if self.holder_backend.lock().expect("holder backend").clone() != *seen {
            return Ok(());
        }
        self.retake_lock(&mut holder)
    }

    /// Renews the lease: a statement on the holder's connection (which
    /// resets the server's idle timer), or, when that connection is gone,
    /// the lock taken again.
    fn renew(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::TakenOver);
        }
        let mut holder = self.holder.lock().expect("holder lock");
        if self.closing.load(Ordering::SeqCst) {
            return Ok(());
        }
        let alive = holder
            .as_mut()
            .is_some_and(|c| c.simple_query("SELECT 1").is_ok());
        if !alive {
            self.retake_lock(&mut holder)?;
        }
        *self.renewed.lock().expect("renewed lock") = Instant::now();
        Ok(())
    }

    /// The renewing thread: every RENEW_EVERY until the rows are dropped or
    /// the vault taken over.
    fn keep_renewing(weak: &std::sync::Weak<Holding>) {
        loop {
            std::thread::sleep(RENEW_EVERY);
            let Some(h) = weak.upgrade() else { return };
            if h.closing.load(Ordering::SeqCst) {
                return;
            }
            // A failure (no primary during a failover) is tried again at
            // the next tick; a takeover ends the thread.
            if matches!(h.renew(), Err(Error::TakenOver)) {
                return;
            }
        }
    }

    /// Refuses a read once the vault was taken over, or while the lease
    /// may have lapsed (not renewed for READ_FRESH, as after this process
    /// was stopped): this process's caches could then be stale, so the
    /// lease is renewed first.
    fn check_lease(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::TakenOver);
        }
        if self.renewed.lock().expect("renewed lock").elapsed() < READ_FRESH {
            return Ok(());
        }
        // The blocking client must not run on an async runtime's thread.
        off_runtime(|| self.renew())
    }
}

impl PgRows {
    /// Waits for the writes of an earlier holder still in flight (checked
    /// at their statement's start, committing later, e.g. waiting for a
    /// synchronous standby): a `SHARE` lock on both tables waits for every
    /// write's `ROW EXCLUSIVE`. Any later write of that holder finds the
    /// lock no longer its own; so this opener's reads (the journal's
    /// reconciliation, the disposals it resumes) see all of them.
    fn wait_for_writes_in_flight(&self, c: &mut Client) -> Result<()> {
        let s = &self.schema;
        c.batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms';
             LOCK TABLE {s}.rows, {s}.beacons IN SHARE MODE; COMMIT;",
            (LEASE * 3).as_millis()
        ))
        .map_err(pg)
    }

    fn create_schema(&self, c: &mut Client) -> Result<()> {
        let s = &self.schema;
        // No planner statistics of keys or values: ANALYZE would copy
        // sampled beacon rows (derived from personal information) into
        // `pg_statistic`, which no purge rewrites.
        let beacons: Option<bool> = c
            .query_one(
                "SELECT (SELECT relkind = 'r' FROM pg_class WHERE oid = to_regclass($1))",
                &[&format!("{s}.beacons")],
            )
            .map_err(pg)?
            .get(0);
        let parent = format!(
            "CREATE TABLE {s}.beacons (p smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                 PRIMARY KEY (k, p)) PARTITION BY LIST (p);
             ALTER TABLE {s}.beacons ALTER COLUMN k SET STATISTICS 0;
             ALTER TABLE {s}.beacons ALTER COLUMN v SET STATISTICS 0;"
        );
        let first = partitions::create_first(s);
        let place = partitions::PLACEMENT_OF;
        let beacons = match beacons {
            // A new vault.
            None => format!("{parent}{first}"),
            // A vault made before the partitions keeps its rows: moved into
            // the partitioned table in one transaction (the old table held
            // live rows only; each disposal had purged its own).
            Some(true) => format!(
                "ALTER TABLE {s}.beacons RENAME TO beacons_unpartitioned;
                 {parent}{first}
                 INSERT INTO {s}.beacons (p, k, v) SELECT {place}, k, v FROM {s}.beacons_unpartitioned;
                 DROP TABLE {s}.beacons_unpartitioned;"
            ),
            // Partitioned: a vault from before partitions could split has
            // its first ones widened (split ones are never made again).
            Some(false) => partitions::migrate_single_valued(c, s)?,
        };
        c.batch_execute(&format!(
            "BEGIN;
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.rows (t smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                 PRIMARY KEY (t, k));
             {beacons}
             ALTER TABLE {s}.rows ALTER COLUMN v SET STATISTICS 0;
             ALTER TABLE {s}.rows ALTER COLUMN k SET STATISTICS 0;
             COMMIT;"
        ))
        .map_err(pg)
    }

    /// Partitions' sizes, heap, indexes and TOAST (`None`: gone).
    fn partition_sizes(&self, names: &[String]) -> Result<Vec<Option<i64>>> {
        let rels: Vec<String> = names
            .iter()
            .map(|n| format!("{}.{n}", self.schema))
            .collect();
        off_runtime(|| {
            self.conns.with_primary(|c| {
                Ok(c.query(
                    "SELECT pg_total_relation_size(to_regclass(r)) FROM unnest($1::text[]) WITH ORDINALITY AS x(r, i) ORDER BY i",
                    &[&rels],
                )
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect())
            })
        })
    }

    /// `name`'s split, when it is one of ours and past the split size.
    fn split_of(&self, name: &str, size: Option<i64>) -> Option<(String, String)> {
        let part = partitions::Part::parse(name)?;
        let size = size.unwrap_or(0).max(0) as u64;
        let kids = part.split(size, self.split_at.load(Ordering::SeqCst))?;
        Some((
            format!("{name} into {} partitions", kids.len()),
            partitions::split_sql(&self.schema, part, &kids, 5_000),
        ))
    }

    /// The search index's partitions now.
    fn beacon_layout(&self) -> Result<Vec<String>> {
        off_runtime(|| {
            self.conns
                .with_primary(|c| partitions::layout(c, &self.schema))
        })
    }

    /// The relation holding `table`, and the condition selecting its rows
    /// (with `$1` the table number).
    fn relation(&self, table: &str) -> (String, &'static str) {
        if table == CF_BEACONS {
            (
                format!("{}.beacons", self.schema),
                "$1::smallint IS NOT NULL",
            )
        } else {
            (format!("{}.rows", self.schema), "t = $1")
        }
    }

    /// One statement (one round trip, one synchronous commit): the deletes
    /// and upserts of both tables, applied only while this process's lock
    /// holder still holds the vault's lock (`held`; `false` when a failover
    /// closed it: nothing was written).
    fn write_rows(&self, ops: &[WriteOp<'_>], lazy: bool, holder: &(i32, String)) -> Result<bool> {
        if ops.is_empty() {
            return Ok(true);
        }
        // The last write of each row wins, as in a RocksDB batch: every row
        // is then either deleted or upserted, never both, as one statement's
        // data-modifying parts (on one snapshot) require.
        let mut last: std::collections::BTreeMap<(i16, &[u8]), Option<&[u8]>> =
            std::collections::BTreeMap::new();
        for (t, k, v) in ops {
            last.insert((table_no(t), k), v.as_deref());
        }
        let beacons = table_no(CF_BEACONS);
        let (mut dt, mut dk, mut dbk) =
            (Vec::<i16>::new(), Vec::<&[u8]>::new(), Vec::<&[u8]>::new());
        let (mut pt, mut pk, mut pv) =
            (Vec::<i16>::new(), Vec::<&[u8]>::new(), Vec::<&[u8]>::new());
        let (mut pbk, mut pbv) = (Vec::<&[u8]>::new(), Vec::<&[u8]>::new());
        for (&(t, k), v) in &last {
            match (t == beacons, v) {
                (false, None) => {
                    dt.push(t);
                    dk.push(k);
                }
                (true, None) => dbk.push(k),
                (false, Some(v)) => {
                    pt.push(t);
                    pk.push(k);
                    pv.push(*v);
                }
                (true, Some(v)) => {
                    pbk.push(k);
                    pbv.push(*v);
                }
            }
        }
        let s = &self.schema;
        let sql = format!(
            "WITH lk AS (SELECT {} AS held),
              sc AS (SELECT set_config('synchronous_commit', coalesce($10::text, current_setting('synchronous_commit')), true) AS v),
              dr AS (DELETE FROM {s}.rows r USING unnest($1::smallint[], $2::bytea[]) AS x(t, k)
                      WHERE r.t = x.t AND r.k = x.k AND (SELECT held FROM lk)),
              db AS (DELETE FROM {s}.beacons WHERE k = ANY($3::bytea[]) AND (SELECT held FROM lk)),
              ir AS (INSERT INTO {s}.rows (t, k, v) SELECT x.t, x.k, x.v FROM unnest($4::smallint[], $5::bytea[], $6::bytea[]) AS x(t, k, v)
                      WHERE (SELECT held FROM lk) ON CONFLICT (t, k) DO UPDATE SET v = EXCLUDED.v),
              ib AS (INSERT INTO {s}.beacons (p, k, v) SELECT {place}, x.k, x.v FROM unnest($7::bytea[], $8::bytea[]) AS x(k, v)
                      WHERE (SELECT held FROM lk) ON CONFLICT (k, p) DO UPDATE SET v = EXCLUDED.v)
             SELECT held FROM lk, sc",
            held_by("$9", "$11"),
            place = partitions::PLACEMENT_OF,
        );
        let (pid, start) = holder;
        // A commit is synchronous (`synchronous_commit=on`; with Patroni's
        // synchronous mode a standby has it too), except a lazy one
        // (`Store::delete_lazily`), which does not wait for the WAL flush:
        // later synchronous commits flush it with theirs, in order.
        let lazy: Option<&str> = lazy.then_some("off");
        self.conns.with_primary(|c| {
            let st = c.prepared(&sql)?;
            Ok(c.query_one(
                &st,
                &[
                    &dt, &dk, &dbk, &pt, &pk, &pv, &pbk, &pbv, &pid, &lazy, &start,
                ],
            )
            .map_err(pg)?
            .get(0))
        })
    }

    /// [`Self::write_rows`], and after a failover closed the lock's
    /// connection (and with it the lock, which another process may then
    /// take) or the lease lapsed: the lock taken again and the write made
    /// once more, or `TakenOver` because another process has had the vault
    /// since.
    fn write_locked(&self, ops: &[WriteOp<'_>], lazy: bool) -> Result<()> {
        off_runtime(|| {
            if self.lost.load(Ordering::SeqCst) {
                return Err(Error::TakenOver);
            }
            let seen = self.holder();
            if self.write_rows(ops, lazy, &seen)? {
                return Ok(());
            }
            self.retake_unless_moved(&seen)?;
            if self.write_rows(ops, lazy, &self.holder())? {
                Ok(())
            } else {
                self.lost.store(true, Ordering::SeqCst);
                Err(Error::TakenOver)
            }
        })
    }

    fn scan_page(
        &self,
        table: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (rel, cond) = self.relation(table);
        // A range on the key (never a filter past it): the index scan
        // starts past the last page and ends at the prefix's end. Each
        // bound is in the SQL only when there is one (no `$n IS NULL OR`),
        // so a generic plan (every pooled connection's) bounds the index
        // scan too instead of filtering the rest of the table.
        let end = prefix_end(prefix);
        let sql = scan_sql(&rel, cond, after.is_some(), end.is_some());
        let start = after.unwrap_or(prefix);
        let t = table_no(table);
        self.holding.check_lease()?;
        self.conns.with_primary(|c| {
            let st = c.prepared(&sql)?;
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&t, &start];
            if let Some(e) = &end {
                params.push(e);
            }
            Ok(c.query(&st, &params)
                .map_err(pg)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }
}

impl Drop for PgRows {
    fn drop(&mut self) {
        // Closing the connection releases the vault's lock.
        self.closing.store(true, Ordering::SeqCst);
        let holder = self.holder.lock().unwrap_or_else(|e| e.into_inner()).take();
        off_runtime(move || drop(holder));
    }
}

impl PgRows {
    fn destroy_pg(&self) -> Result<crate::keystore::PurgeEvidence> {
        let start = Instant::now();
        let targets = self.conns.drop_targets(&self.schema)?;
        if targets.relations.is_empty() {
            return Err(Error::NotFound("vault records on the cluster"));
        }
        // The lease lives in the schema: its renewal ends first. The drop
        // runs in the transaction holding the vault's lock (which the
        // drop's own lock would otherwise wait for), and its commit lets
        // the lock go with the schema: no opener gets in between.
        self.closing.store(true, Ordering::SeqCst);
        let s = &self.schema;
        let p = self.conns.drop_and_settle(&targets, &mut |_| {
            let mut holder = self.holder.lock().expect("holder lock");
            let c = holder.as_mut().ok_or(Error::TakenOver)?;
            c.batch_execute(&format!(
                "SET LOCAL lock_timeout = '5s'; DROP SCHEMA {s} CASCADE; COMMIT;"
            ))
            .map_err(|e| {
                let _ = c.batch_execute("ROLLBACK");
                pg(e)
            })?;
            // The transaction is over: the connection holds nothing more.
            let gone = holder.take();
            drop(gone);
            Ok(())
        });
        if p.is_err() && self.holder.lock().expect("holder lock").is_some() {
            // Nothing was dropped: the vault stays held and renewed.
            self.closing.store(false, Ordering::SeqCst);
        }
        let p = p?;
        Ok(p.evidence(start, 0))
    }
}

impl RowEngine for PgRows {
    fn destroy_precheck(&self) -> Result<Vec<String>> {
        off_runtime(|| self.conns.drop_precheck())
    }

    fn destroy(&self) -> Result<Option<crate::keystore::PurgeEvidence>> {
        off_runtime(|| self.destroy_pg().map(Some))
    }

    fn scan_everything(
        &self,
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<Option<crate::keystore::ByteScan>> {
        off_runtime(|| {
            self.conns
                .scan_members(needles, Some((&self.schema, None)), wal_after)
                .map(Some)
        })
    }

    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (rel, cond) = self.relation(table);
        let sql = format!("SELECT v FROM {rel} WHERE {cond} AND k = $2");
        let t = table_no(table);
        off_runtime(|| {
            self.holding.check_lease()?;
            self.conns.with_primary(|c| {
                let st = c.prepared(&sql)?;
                Ok(c.query_opt(&st, &[&t, &key]).map_err(pg)?.map(|r| r.get(0)))
            })
        })
    }

    fn multi_get(&self, table: &str, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let (rel, cond) = self.relation(table);
        let sql = format!("SELECT k, v FROM {rel} WHERE {cond} AND k = ANY($2::bytea[])");
        let t = table_no(table);
        let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            std::collections::HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(4096) {
            let rows = off_runtime(|| {
                self.holding.check_lease()?;
                self.conns.with_primary(|c| {
                    let st = c.prepared(&sql)?;
                    c.query(&st, &[&t, &chunk]).map_err(pg)
                })
            })?;
            for r in rows {
                found.insert(r.get(0), r.get(1));
            }
        }
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    /// Synchronous whatever `sync` says: the vault's `sync` option (off
    /// in tests) is about the embedded engine's fsyncs, and an acknowledged
    /// write on a cluster must survive a failover.
    fn write(&self, ops: &[WriteOp<'_>], _sync: bool) -> Result<()> {
        self.write_locked(ops, false)
    }

    fn write_lazily(&self, ops: &[WriteOp<'_>]) -> Result<()> {
        self.write_locked(ops, true)
    }

    fn scan(&self, table: &str, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        scan_pages(SCAN_PAGE, |after| self.scan_page(table, prefix, after), f)
    }

    fn flush_records(&self) -> Result<()> {
        Ok(())
    }

    /// The keystore's purge recipe over the search index's partitions that
    /// held the deleted rows, on every member; one larger than the split
    /// size is split instead of rewritten ([`partitions`]). A member not
    /// verified is residue (the batch fails and waits).
    fn purge_beacons(&self, ranges: Option<&[Vec<u8>]>) -> Result<BeaconPurge> {
        let start = std::time::Instant::now();
        let control = *self.control.lock().expect("control lock");
        let touched = partitions::touched(&self.beacon_layout()?, ranges);
        let sizes = self.partition_sizes(&touched)?;
        let (mut rewritten, mut replaced) = (Vec::new(), Vec::new());
        let mut split = Vec::new();
        // Under the negative controls that leave bytes, nothing is split.
        let may_split = matches!(control, PurgeControl::Full | PurgeControl::SkipWalRounds);
        for (name, size) in touched.iter().zip(sizes) {
            let rel = format!("{}.{name}", self.schema);
            match self.split_of(name, size).filter(|_| may_split) {
                Some((what, sql)) => {
                    split.push(what);
                    replaced.push((rel, sql));
                }
                None => rewritten.push(rel),
            }
        }
        let p = off_runtime(|| self.conns.purge(&rewritten, &replaced, control))?;
        let mut residue = p.residue;
        for m in p.members.iter().filter(|m| !m.verified) {
            residue.push(format!(
                "{} ({}): not verified: {}",
                m.name, m.role, m.detail
            ));
        }
        Ok(BeaconPurge {
            snapshots: p.snapshots,
            tombstones: 0,
            residue_files: residue,
            wal_files: 0,
            ranges: ranges.map_or(0, |r| r.len() as u64),
            whole_family: ranges.is_none(),
            duration_ms: start.elapsed().as_millis() as u64,
            members: p.members,
            wal_floor: Some(p.wal_segment),
            split,
        })
    }

    /// Every file of every member but other databases' and other vaults'
    /// relation files and the vault's own tables other than the search
    /// index's partitions that held the deleted rows (after a split, the
    /// children that took the split partition's rows;
    /// `pivault_verify.scan_vault`): as the embedded engine skips the live
    /// table files of other column families and of other ranges, since a
    /// tag is only ever written in a beacon row, and a record's beacon rows
    /// are all in its partition. A member that cannot be reached is a hit.
    fn files_holding_beacons(
        &self,
        ranges: &[Vec<u8>],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<crate::keystore::ByteScan> {
        let mut tables = partitions::touched(&self.beacon_layout()?, Some(ranges));
        if tables.is_empty() {
            tables.push(CF_BEACONS.to_owned());
        }
        let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
        let narrowed = Narrowed {
            tables: &tables,
            own_table: &own_table,
        };
        off_runtime(|| {
            self.conns
                .scan_members(needles, Some((&self.schema, Some(narrowed))), wal_after)
        })
    }

    fn copies_present(
        &self,
        copies: &[crate::keystore::FoundCopy],
    ) -> Result<Vec<crate::keystore::FoundCopy>> {
        off_runtime(|| self.conns.copies_present(copies))
    }

    fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Written only while this process holds the lock and the generation
    /// is its own (in the same statement), so a holder that lost the vault
    /// cannot send the standbys back to itself. The row is written only
    /// when it says otherwise: the server calls this every 2 s, to put
    /// back an address a failover lost or an insider cleared or changed.
    fn publish_holder(&self, address: Option<&str>) -> Result<()> {
        let s = &self.schema;
        let held = held_by("$3", "$4");
        let sql = format!(
            "WITH up AS (UPDATE {s}.lease SET holder_address = $1
                          WHERE generation = $2 AND {held} AND holder_address IS DISTINCT FROM $1)
             SELECT count(*) FROM {s}.lease WHERE generation = $2 AND {held}"
        );
        let generation = *self.generation.lock().expect("generation lock");
        off_runtime(|| {
            let (pid, start) = self.holder();
            let n: i64 = self.conns.with_primary(|c| {
                let st = c.prepared(&sql)?;
                Ok(c.query_one(&st, &[&address, &generation, &pid, &start])
                    .map_err(pg)?
                    .get(0))
            })?;
            if n == 1 {
                Ok(())
            } else {
                Err(Error::TakenOver)
            }
        })
    }

    fn check_lease(&self) -> Result<()> {
        self.holding.check_lease()
    }

    fn fence(&self) -> Option<Arc<dyn Fence>> {
        Some(self.holding.clone())
    }

    fn confirm_lease(&self) -> Result<()> {
        off_runtime(|| self.holding.renew())
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn set_control(&self, c: PurgeControl) {
        *self.control.lock().expect("control lock") = c;
    }

    fn set_beacon_split_at(&self, bytes: u64) {
        self.split_at.store(bytes, Ordering::SeqCst);
    }

    /// Each partition past the split size replaced by its children, one
    /// transaction each. Nothing is purged here: the rows copied are live,
    /// and what a dropped partition's file held of disposed records, their
    /// disposals purged already.
    fn split_beacons(&self) -> Result<Vec<String>> {
        let layout = self.beacon_layout()?;
        let sizes = self.partition_sizes(&layout)?;
        let mut split = Vec::new();
        for (name, size) in layout.iter().zip(sizes) {
            let Some((what, sql)) = self.split_of(name, size) else {
                continue;
            };
            let done = off_runtime(|| {
                self.conns.with_primary(|c| match c.batch_execute(&sql) {
                    Ok(()) => Ok(true),
                    Err(e) => {
                        let _ = c.batch_execute("ROLLBACK");
                        if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                            Ok(false)
                        } else {
                            Err(pg(e))
                        }
                    }
                })
            })?;
            if done {
                split.push(what);
            }
        }
        Ok(split)
    }

    /// The keystore cluster's member checks, for the records cluster: its
    /// beacon purge depends on the same settings (an archived WAL segment
    /// or a logical slot keeps deleted search-index rows). And the search
    /// index's partitions past the split size: the next disposal in one
    /// splits it, which takes seconds in a big vault and holds its puts.
    fn doctor(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        let mut out = off_runtime(|| {
            self.conns.member_checks(&CheckNames {
                settings: "records-cluster-settings",
                members: "records-cluster-members",
                tls: "records-cluster-tls",
            })
        })?;
        let layout = self.beacon_layout()?;
        let sizes = self.partition_sizes(&layout)?;
        let big = layout
            .iter()
            .zip(sizes)
            .filter(|(name, size)| self.split_of(name, *size).is_some())
            .count();
        out.push(if big == 0 {
            (
                "records-index-partitions",
                crate::doctor::Level::Ok,
                format!(
                    "{} search-index partition(s), none past the split size",
                    layout.len()
                ),
            )
        } else {
            (
                "records-index-partitions",
                crate::doctor::Level::Warn,
                format!(
                    "{big} of {} search-index partition(s) past the split size: the next disposal in one splits it first (seconds in a big vault, its puts and searches waiting); `pivault maintenance run` splits them now",
                    layout.len()
                ),
            )
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_the_next_key_that_does_not_start_with_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
