//! The keystore on a PostgreSQL cluster (issue 16): one primary and its
//! streaming standbys, run by Patroni, configured as
//! `scripts/cluster.sh` does (`archive_mode=off`, `wal_recycle=off`,
//! `wal_keep_size=16MB`, terse logs that never carry a parameter).
//!
//! Each vault has its own schema `pv_<vault id>` with three tables; the
//! data-key table is range-partitioned by bucket, so a disposal's purge
//! rewrites (`VACUUM FULL`) only the partitions it touched, whatever the
//! size of the vault.
//!
//! A deleted row's bytes survive in PostgreSQL in four places, and the
//! purge ([`PgKeys::purge`]) deals with each on every member:
//! - the heap page (a dead tuple; plain `VACUUM` leaves its bytes):
//!   `VACUUM FULL` writes a new file, and the old one is unlinked at the
//!   next checkpoint (restartpoint on a standby);
//! - a snapshot older than the delete (a long transaction, a standby's
//!   `hot_standby_feedback`, a replication slot's `xmin`, a prepared
//!   transaction) makes `VACUUM FULL` keep the tuple: checked first, on
//!   every member, and waited out for a bounded time;
//! - the WAL: segments holding the delete are unlinked (never recycled)
//!   once a checkpoint no longer needs them: rounds of `pg_switch_wal();
//!   CHECKPOINT` on the primary and, once each standby has replayed them,
//!   `CHECKPOINT` on it, until no segment at or before the purge's remains
//!   on any member;
//! - the standbys: all of the above reaches them through replication and
//!   their own restartpoints, and each is checked on its own.
//!
//! The verification scan ([`PgKeys::scan_for`]) asks every member, over
//! SQL, to search every file of its data directory for the pre-disposal
//! wrapped keys: `pivault_verify.scan`, a `SECURITY DEFINER` function the
//! cluster's superuser installs (`scripts/keystore-cluster.sql`), which
//! answers a file name and a yes/no, never a byte, so the vault's role
//! never holds the right to read the server's files. A member that cannot
//! be reached is never skipped: it makes the purge unclean and the scan
//! report it, so the batch waits and no certificate is issued.
//!
//! The client is the blocking `postgres` crate. With `ca_file` in the
//! configuration every connection is TLS (rustls, `tokio-postgres-rustls`)
//! and each member's certificate is verified against that CA and its
//! address (verify-full); without it, only loopback members are accepted:
//! [`PgConfig::validate`] refuses another host rather than send keys in
//! clear. `scripts/cluster.sh` makes a CA and a certificate per member and
//! its `pg_hba` rejects every vault role's and the provider's connection
//! that is not TLS, so the tests and the benchmark run over TLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls, Statement};
use serde::{Deserialize, Serialize};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::engine::{ByteScan, DropTargets, FoundCopy, Held, KeyEngine, KeyOp, Table, Visit};
use super::{MemberEvidence, PurgeEvidence};
use crate::doctor::Level;
use crate::error::{Error, Result};
use crate::ids::VaultId;
use crate::secret::SecretString;

mod budget;
use budget::Budget;
pub use budget::{DEFAULT_CLUSTER_CONNECTIONS, cluster_connections, set_cluster_connections};

/// Which negative control, if any, the purge runs (tests only; the
/// default is the full purge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PurgeControl {
    /// Every step.
    #[default]
    Full,
    /// No physical step at all (the engine-independent control).
    SkipPhysical,
    /// Plain `VACUUM` instead of `VACUUM FULL`: dead tuples keep their bytes.
    PlainVacuum,
    /// No WAL switch-and-checkpoint rounds: the segments keep the bytes.
    SkipWalRounds,
    /// Not a control but a fault: a whole vault's drop commits and its
    /// answer is lost, as when the primary dies between the commit and the
    /// reply (the deletion must learn the outcome from the cluster).
    DropAnswerLost,
}

/// Where a vault's keystore cluster is: written as `keystore.json` in the
/// vault directory. It holds no secret: the password is read from
/// `password_file` (mode 0600, like every secret file of the vault).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// `"postgresql"`.
    pub engine: String,
    /// Every member of the cluster, `host:port` (the primary is found among them).
    pub members: Vec<String>,
    /// The database holding every vault's keystore schema.
    pub database: String,
    /// The vault's login role.
    pub user: String,
    /// File holding that role's password.
    pub password_file: PathBuf,
    /// The CA (PEM) that signed every member's certificate. With it, every
    /// connection is TLS and each member's certificate must name its host;
    /// without it, members must be on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl PgConfig {
    /// The file name of the configuration in a vault directory.
    pub const FILE: &'static str = "keystore.json";

    /// Reads `dir/keystore.json`, if the vault has one.
    pub fn read(dir: &Path) -> Result<Option<PgConfig>> {
        Self::read_named(dir, Self::FILE)
    }

    /// Reads `dir/name` (a cluster file of this shape: `keystore.json`,
    /// `records.json`), if the vault has one.
    pub fn read_named(dir: &Path, name: &str) -> Result<Option<PgConfig>> {
        let p = dir.join(name);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let c: PgConfig = serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", p.display())))?;
        c.validate()?;
        Ok(Some(c))
    }

    /// Refuses what this engine cannot do safely.
    pub fn validate(&self) -> Result<()> {
        if self.engine != "postgresql" {
            return Err(Error::InvalidInput(format!(
                "keystore engine {:?}: only \"postgresql\" is known",
                self.engine
            )));
        }
        if self.members.is_empty() {
            return Err(Error::InvalidInput("keystore cluster: no members".into()));
        }
        for m in &self.members {
            let (host, _port) = split_member(m)?;
            let loopback = host == "127.0.0.1" || host == "::1" || host == "localhost";
            if !loopback && self.ca_file.is_none() {
                return Err(Error::InvalidInput(format!(
                    "keystore cluster member {m}: a member off this machine needs TLS: set ca_file to the CA that signed the members' certificates (keys never cross a network in clear)"
                )));
            }
        }
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ident(&self.database) || !ident(&self.user) {
            return Err(Error::InvalidInput(
                "keystore cluster: database and user must be lower-case identifiers".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn password(&self) -> Result<SecretString> {
        SecretString::from_private_file(&self.password_file).map_err(|e| {
            Error::InvalidInput(format!(
                "keystore cluster password file {}: {e}",
                self.password_file.display()
            ))
        })
    }
}

fn split_member(m: &str) -> Result<(&str, u16)> {
    let (h, p) = m.rsplit_once(':').ok_or_else(|| {
        Error::InvalidInput(format!("keystore cluster member {m:?}: want host:port"))
    })?;
    let port = p
        .parse()
        .map_err(|_| Error::InvalidInput(format!("keystore cluster member {m:?}: bad port")))?;
    Ok((h.trim_start_matches('[').trim_end_matches(']'), port))
}

/// The TLS client configuration for `ca_file`: its certificates are the
/// only roots; the member's certificate must name the host connected to.
fn tls_to(ca_file: &Path) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| {
        Error::InvalidInput(format!(
            "keystore cluster CA file {}: {why}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A connection to one member as `cfg`'s role: TLS, the member's
/// certificate verified, when `cfg` names a CA.
pub(super) fn connect_as(cfg: &PgConfig, password: &SecretString, member: &str) -> Result<Client> {
    let (host, port) = split_member(member)?;
    let mut c = postgres::Config::new();
    c.host(host)
        .port(port)
        .user(&cfg.user)
        .password(password.expose().as_bytes())
        .dbname(&cfg.database)
        .application_name("pivault")
        // No JIT compilation, whatever the cluster's `jit`: every statement
        // of ours is short, and on a big vault a generic plan's estimate
        // (the search index's delete across 16 partitions, estimated at
        // 0.2 M rows at 10^6 records) passes `jit_above_cost`, so that each
        // put compiled its statement first: 23 puts a second instead of
        // 470–680 (benches/README.md run 15). Sent with the start-up
        // packet, so it costs no round trip. And a search path of the
        // catalog alone: with the default (`"$user", public`) another
        // vault's role, which may create schemas, made one named after this
        // vault's role with an `unnest(text[])` that PostgreSQL preferred
        // to the catalog's `unnest(anyarray)`, and its code ran as this
        // vault's role in every purge (CVE-2018-1058's pattern). Every
        // statement of ours names its schema.
        .options("-c jit=off -c search_path=pg_catalog,pg_temp")
        .connect_timeout(Duration::from_secs(3))
        // A member that vanished without closing the connection (its host
        // or the network died) is noticed within the lease, not after the
        // kernel's quarter of an hour: the lease's renewal must fail in time.
        .tcp_user_timeout(crate::store::postgres::LEASE)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    match &cfg.ca_file {
        Some(ca) => {
            c.ssl_mode(postgres::config::SslMode::Require);
            c.connect(tls_to(ca)?).map_err(pg)
        }
        None => c.connect(NoTls).map_err(pg),
    }
}

/// A connection to `member` exactly as the engine makes it (TLS and its
/// checks when `cfg` names a CA): for tools and tests that speak SQL to a
/// member as a vault's role.
pub fn connect_member(cfg: &PgConfig, member: &str) -> Result<Client> {
    cfg.validate()?;
    connect_as(cfg, &cfg.password()?, member)
}

/// A connection to whichever member is the primary now. During a failover
/// no member is (Patroni promotes a standby within its TTL, about 10 s
/// here): waited for, up to [`PRIMARY_PATIENCE`].
pub(super) fn primary_of(cfg: &PgConfig, password: &SecretString) -> Result<Client> {
    let deadline = Instant::now() + PRIMARY_PATIENCE;
    loop {
        let mut last = None;
        let mut refused = 0;
        for m in &cfg.members {
            match connect_as(cfg, password, m) {
                Ok(mut c) => match c.query_one("SELECT pg_is_in_recovery()", &[]) {
                    Ok(r) if !r.get::<_, bool>(0) => return Ok(c),
                    Ok(_) => {}
                    Err(e) => last = Some(pg(e)),
                },
                Err(e) => {
                    // A standby may not have replayed a role made a moment
                    // ago; a login every member refuses will not change by
                    // waiting.
                    refused += usize::from(is_auth_failure(&e));
                    last = Some(e);
                }
            }
        }
        if refused == cfg.members.len()
            && let Some(e) = last
        {
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Err(last.unwrap_or_else(|| {
                Error::Storage(format!(
                    "keystore cluster: no member has been the primary for {}s",
                    PRIMARY_PATIENCE.as_secs()
                ))
            }));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A login the server refused (a wrong password, an unknown or removed role).
fn is_auth_failure(e: &Error) -> bool {
    matches!(e, Error::Storage(m) if m.contains("(28P01)") || m.contains("(28000)"))
}

pub(crate) fn pg(e: postgres::Error) -> Error {
    // The server's message and code only: its `detail` can quote a row
    // ("Failing row contains ..."), and a row here is a wrapped key.
    match e.as_db_error() {
        Some(d) => Error::Storage(format!(
            "keystore cluster: {} ({})",
            d.message(),
            d.code().code()
        )),
        None => {
            // A TLS or connection failure says why only in its sources
            // ("invalid peer certificate: UnknownIssuer").
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why.push_str(&format!(": {s}"));
                source = s.source();
            }
            Error::Storage(format!("keystore cluster: {why}"))
        }
    }
}

/// A lease's next generation: past the last one and past the database's
/// clock in microseconds (issue 16), so that neither a deleted row nor one
/// set back hands the next opener a generation a stopped holder still
/// keeps; with a counter, that holder, woken once the opener closed, would
/// take the lock again and carry on with stale keys and epoch. An insider
/// who writes a chosen value into the row (the vault's role may) can still
/// fence holders out or make one current again: only lease rows the role
/// cannot write, like the trail's, would close that.
pub(crate) const NEXT_GENERATION: &str =
    "greatest(generation + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)";

/// How many range partitions a vault's data-key table has.
const PARTITIONS: u32 = 16;

/// How long the purge waits for an old snapshot to end before reporting it.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(10);
/// How long another vault's role may hold back a purge's horizon before
/// the purge ends its session (as `pivault_verify.end_stranger_snapshot`
/// in scripts/verify-scan-vault.sql checks; change both together).
const STRANGER_SNAPSHOT_LIMIT: Duration = Duration::from_secs(30);
/// How long it waits for a standby to replay the primary's checkpoint.
const REPLAY_PATIENCE: Duration = Duration::from_secs(20);

/// The most a member's `max_standby_streaming_delay` may be (`doctor`):
/// well within [`REPLAY_PATIENCE`], so that a query conflicting with
/// replay on a standby, which any vault's role can run, is cancelled
/// before a purge gives up on that standby (`scripts/cluster.sh` sets 5 s).
const STANDBY_DELAY_CAP: Duration = Duration::from_secs(10);
/// How long an operation waits for a primary during a failover.
const PRIMARY_PATIENCE: Duration = Duration::from_secs(40);
/// Switch-and-checkpoint rounds at most (2 are needed with `wal_keep_size=16MB`).
const WAL_ROUNDS: usize = 5;

/// Connections to the primary one vault uses at once for its reads and
/// writes, per cluster store (its keystore's, and its records' when they
/// are on the cluster too); more callers wait for one to come free. A
/// hosted vault's role may hold [`ROLE_CONNECTION_LIMIT`] on each member
/// (`scripts/keystore-cluster.sql`): both stores' working connections
/// (16), the records store's lock (1) and a purge's connection to every
/// member (3) fit under it with room for doctor's checks; so a busy vault
/// waits on itself instead of being refused, and a stolen credential
/// cannot take the connections every other vault on the cluster needs.
pub const WORKING_CONNECTIONS: usize = 8;

/// The `CONNECTION LIMIT` of a hosted vault's role on each member (set by
/// `pivault_provision.create_vault_role`).
pub const ROLE_CONNECTION_LIMIT: usize = 24;

/// Bounds the connections in use at once to [`WORKING_CONNECTIONS`].
#[derive(Default)]
struct Gate {
    busy: Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One of the [`Gate`]'s places, given back on drop.
struct Place<'a>(&'a Gate);

impl Gate {
    fn enter(&self) -> Place<'_> {
        let mut busy = self.busy.lock().expect("gate lock");
        while *busy >= WORKING_CONNECTIONS {
            busy = self.freed.wait(busy).expect("gate lock");
        }
        *busy += 1;
        Place(self)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().expect("gate lock") -= 1;
        self.0.freed.notify_one();
    }
}

/// One vault's connections to a cluster (its keystore's or its records'):
/// a bounded pool to the primary, connections to every member, and the
/// purge recipe over a list of relations.
pub(crate) struct Conns {
    pub(crate) cfg: PgConfig,
    password: SecretString,
    /// Idle connections to the primary (at most [`WORKING_CONNECTIONS`]),
    /// the one idle longest first; other vaults' [`Budget`] may close it.
    pool: Arc<Mutex<Vec<Pooled>>>,
    gate: Gate,
    /// This process's connections to the cluster, shared with its other vaults.
    budget: Arc<Budget>,
}

/// Statements kept prepared on one connection; past this the cache starts
/// over (a vault's engines use about a dozen shapes).
const PREPARED_PER_CONNECTION: usize = 64;

/// A connection to the primary with the statements prepared on it. A
/// statement is parsed once per connection, so a hot query (a record or a
/// data key by its key, a write) is one round trip instead of two
/// (prepare, then execute). Derefs to the client for everything else.
pub(crate) struct Pooled {
    pub(crate) client: Client,
    prepared: std::collections::HashMap<String, Statement>,
    /// Its place in the process's budget: given back when the connection
    /// is dropped or its client taken out of the pool's reach.
    slot: Option<budget::Slot>,
    /// When it was last given back to its pool.
    idle_since: Instant,
}

impl Pooled {
    fn new(client: Client, slot: budget::Slot) -> Pooled {
        Pooled {
            client,
            prepared: std::collections::HashMap::new(),
            slot: Some(slot),
            idle_since: Instant::now(),
        }
    }

    /// `sql` prepared on this connection (once).
    pub(crate) fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).map_err(pg)?;
        if self.prepared.len() >= PREPARED_PER_CONNECTION {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// What the purge recipe found on the cluster.
pub(crate) struct Purged {
    /// Blockers still there after the wait (each also in `residue`).
    pub snapshots: u64,
    /// What is left that should not be: old relation files and WAL
    /// segments per member, relations not rewritten, blockers.
    pub residue: Vec<String>,
    /// One entry per member.
    pub members: Vec<MemberEvidence>,
    /// The WAL segment that held the purge's last write: none at or before
    /// it is left on a verified member, and none after it can hold a
    /// purged byte (`pivault_verify.walk`), so a byte scan reads only
    /// those at or before it.
    pub wal_segment: String,
}

impl Purged {
    /// As a disposal's or a deletion's evidence (begun at `start`, over
    /// `buckets` buckets' keys).
    pub(crate) fn evidence(self, start: Instant, buckets: u64) -> PurgeEvidence {
        PurgeEvidence {
            snapshots: self.snapshots,
            live_versions_deks: 1,
            tombstones_in_touched_ranges: 0,
            residue_files: self.residue,
            live_sst_files: 0,
            wal_files: 0,
            compacted_buckets: buckets,
            duration_ms: start.elapsed().as_millis() as u64,
            engine: "postgresql",
            members: self.members,
            wal_floor: Some(self.wal_segment),
        }
    }
}

/// The PostgreSQL keystore of one vault.
pub struct PgKeys {
    conns: Conns,
    schema: String,
    buckets: u32,
    control: Mutex<PurgeControl>,
    /// The lease generation this process fenced the keystore at: every
    /// write checks, in its own statement, that it is still the current one.
    generation: i64,
    /// A write found a newer generation: another process took the vault.
    lost: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PgKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKeys")
            .field("members", &self.conns.cfg.members)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgKeys {
    /// Connects to the cluster's primary, creates the vault's schema if
    /// it is not there (`create`: a new vault; otherwise a missing schema
    /// is a deleted vault's, and an error), and fences out every process
    /// that opened the vault before this one ([`Self::fence`]).
    pub(crate) fn open(
        cfg: PgConfig,
        vault: VaultId,
        buckets: u32,
        create: bool,
    ) -> Result<PgKeys> {
        let mut keys = PgKeys {
            schema: format!("pv_{}", hex::encode(vault.as_bytes())),
            conns: Conns::new(cfg)?,
            buckets,
            control: Mutex::new(PurgeControl::Full),
            generation: 0,
            lost: std::sync::atomic::AtomicBool::new(false),
        };
        if !create {
            match keys.conns.with_primary(|c| schema_is(c, &keys.schema))? {
                SchemaIs::Ours => {}
                SchemaIs::Absent => {
                    return Err(Error::NotAVault(
                        "the vault's keystore is not on its cluster (the vault was deleted)".into(),
                    ));
                }
                SchemaIs::Others => {
                    return Err(Error::NotAVault(
                        "the vault's keystore is not on its cluster (the vault was deleted; a schema under its name is another role's)".into(),
                    ));
                }
            }
        }
        keys.conns.with_primary(|c| keys.create_schema(c))?;
        keys.generation = keys.conns.with_primary(|c| keys.fence(c))?;
        Ok(keys)
    }

    /// Takes the keystore for this process, which holds the vault's lock
    /// (the records store's, taken first): the lease generation is bumped
    /// once every write in flight has ended (a `SHARE` lock on the tables
    /// waits for every write's `ROW EXCLUSIVE` one, and holds new ones off
    /// until the bump commits). Every write checks the generation in its
    /// own statement, so no write of a process that held the vault before
    /// (stopped past its lease, then woken) lands after this.
    fn fence(&self, c: &mut Client) -> Result<i64> {
        let s = &self.schema;
        let mut tx = c.transaction().map_err(pg)?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.lease (one boolean PRIMARY KEY DEFAULT true CHECK (one),
                 generation bigint NOT NULL);
             INSERT INTO {s}.lease (generation) VALUES (0) ON CONFLICT DO NOTHING;
             SET LOCAL lock_timeout = '{}ms';
             LOCK TABLE {s}.buckets, {s}.deks, {s}.backups, {s}.header IN SHARE MODE;",
            (crate::store::postgres::LEASE * 3).as_millis()
        ))
        .map_err(pg)?;
        let g: i64 = tx
            .query_one(
                &format!(
                    "UPDATE {s}.lease SET generation = {NEXT_GENERATION} RETURNING generation"
                ),
                &[],
            )
            .map_err(pg)?
            .get(0);
        tx.commit().map_err(pg)?;
        Ok(g)
    }

    /// Sets the purge's negative control (tests).
    pub(crate) fn set_control(&self, c: PurgeControl) {
        *self.control.lock().expect("control lock") = c;
    }

    fn create_schema(&self, c: &mut Client) -> Result<()> {
        let s = &self.schema;
        claim_schema(c, s)?;
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {s}.buckets (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.backups (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.header (k bytea PRIMARY KEY, v bytea NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.deks (bucket integer NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
                 PRIMARY KEY (bucket, k)) PARTITION BY RANGE (bucket);"
        );
        for p in 0..self.partitions() {
            let (lo, hi) = self.partition_range(p);
            sql.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {s}.deks_{p} PARTITION OF {s}.deks FOR VALUES FROM ({lo}) TO ({hi});"
            ));
        }
        // No planner statistics of the wrapped keys: ANALYZE (autovacuum
        // runs it) copies sampled values into `pg_statistic` as histogram
        // bounds, a catalog table the purge does not rewrite, where a
        // destroyed key would outlive its disposal. Also run on every open,
        // for a schema made before this.
        sql.push_str(&format!(
            "ALTER TABLE {s}.buckets ALTER COLUMN v SET STATISTICS 0;
             ALTER TABLE {s}.backups ALTER COLUMN v SET STATISTICS 0;
             ALTER TABLE {s}.header ALTER COLUMN v SET STATISTICS 0;
             ALTER TABLE {s}.deks ALTER COLUMN v SET STATISTICS 0;"
        ));
        c.batch_execute(&sql).map_err(pg)
    }

    fn partitions(&self) -> u32 {
        PARTITIONS.min(self.buckets.max(1))
    }

    /// Whether table `name` (a partition of `parent`) is one this engine
    /// makes in the vault's schema (`create_schema`, the lease): its tables
    /// and the data keys' partitions.
    fn own_table(&self, name: &str, parent: Option<&str>) -> bool {
        match parent {
            None => matches!(name, "lease" | "buckets" | "backups" | "header" | "deks"),
            Some("deks") => (0..self.partitions()).any(|p| name == format!("deks_{p}")),
            Some(_) => false,
        }
    }

    /// Buckets `[lo, hi)` of partition `p`.
    fn partition_range(&self, p: u32) -> (u64, u64) {
        let n = u64::from(self.partitions());
        let b = u64::from(self.buckets);
        (u64::from(p) * b / n, (u64::from(p) + 1) * b / n)
    }

    fn partition_of(&self, bucket: u32) -> u32 {
        (0..self.partitions())
            .find(|&p| {
                let (lo, hi) = self.partition_range(p);
                (lo..hi).contains(&u64::from(bucket))
            })
            .unwrap_or(0)
    }

    fn table(&self, t: Table) -> String {
        format!("{}.{}", self.schema, t.name())
    }

    /// The relations a purge rewrites: the touched data-key partitions and
    /// the three small tables (every bucket key is re-wrapped by the
    /// ratchet, whose old root-key slot is deleted from `header`).
    fn purge_relations(&self, buckets: &[u32]) -> Vec<String> {
        let mut parts: Vec<u32> = buckets.iter().map(|&b| self.partition_of(b)).collect();
        parts.sort_unstable();
        parts.dedup();
        let mut out: Vec<String> = parts
            .into_iter()
            .map(|p| format!("{}.deks_{p}", self.schema))
            .collect();
        out.push(self.table(Table::Buckets));
        out.push(self.table(Table::Backups));
        out.push(self.table(Table::Header));
        out
    }

    fn purge_pg(&self, buckets: &[u32]) -> Result<PurgeEvidence> {
        let start = Instant::now();
        let control = *self.control.lock().expect("control lock");
        let p = self
            .conns
            .purge(&self.purge_relations(buckets), &[], control)?;
        Ok(p.evidence(start, buckets.len() as u64))
    }
}

/// Every relation of `schema` that has files of its own: its tables and
/// indexes (partitions included, their partitioned parents have none),
/// their TOAST tables and TOAST indexes. By OID (as text, which `regclass`
/// reads without a name lookup): a vault's role may not look names up in
/// `pg_toast`, and a dropped OID then reads as no relation.
pub(crate) fn storage_relations(c: &mut Client, schema: &str) -> Result<Vec<String>> {
    let rows = c
        .query(
            "WITH own AS (SELECT oid, reltoastrelid FROM pg_class
                           WHERE relnamespace = to_regnamespace($1)::oid AND relkind IN ('r', 'i', 'm', 'S'))
             SELECT oid::text FROM own
             UNION ALL
             SELECT reltoastrelid::text FROM own WHERE reltoastrelid <> 0
             UNION ALL
             SELECT i.indexrelid::text FROM own JOIN pg_index i ON i.indrelid = own.reltoastrelid
              WHERE own.reltoastrelid <> 0
             ORDER BY 1",
            &[&schema],
        )
        .map_err(pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether `schema` exists on the connection's server.
/// A deletion's keystore drop, finished by a process other than the one
/// that began it ([`Conns::resume_drop`]), and every member's files
/// searched for `needles` as after a deletion: `None` if nothing was
/// dropped.
pub(crate) fn resume_deletion(
    cfg: PgConfig,
    targets: &DropTargets,
    needles: &[Vec<u8>],
) -> Result<Option<(PurgeEvidence, Result<ByteScan>)>> {
    off_runtime(|| {
        let start = Instant::now();
        let conns = Conns::new(cfg)?;
        let Some(p) = conns.resume_drop(targets)? else {
            return Ok(None);
        };
        let evidence = p.evidence(start, 0);
        let scan = conns.scan_members(
            needles,
            Some((&targets.schema, None)),
            evidence.wal_floor.as_deref(),
        );
        Ok(Some((evidence, scan)))
    })
}

/// Whether a vault's schema is there, and whose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SchemaIs {
    Absent,
    /// Owned by the role this connection is (the vault's).
    Ours,
    /// Made by another role under the vault's name: never the vault's (a
    /// deleted vault's name taken by another vault's role, say), so never
    /// read as its keys still there, nor written into.
    Others,
}

pub(crate) fn schema_is(c: &mut Client, schema: &str) -> Result<SchemaIs> {
    let owned: Option<bool> = c
        .query_opt(
            "SELECT nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
               FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .map_err(pg)?
        .map(|r| r.get(0));
    Ok(match owned {
        None => SchemaIs::Absent,
        Some(true) => SchemaIs::Ours,
        Some(false) => SchemaIs::Others,
    })
}

/// Creates the vault's schema if it is not there, and refuses one another
/// role made under its name.
pub(crate) fn claim_schema(c: &mut Client, schema: &str) -> Result<()> {
    c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .map_err(pg)?;
    match schema_is(c, schema)? {
        SchemaIs::Ours => Ok(()),
        _ => Err(Error::Integrity(
            "the vault's schema on the cluster was made by another role: it is not the vault's",
        )),
    }
}

/// The SQLSTATE of a drop refused because the lease's generation moved.
const TAKEN_OVER: &str = "PVTKO";

/// A whole vault's schema dropped in one transaction, waiting at most 5 s
/// for a lock a session holds on one of its tables, and only while the
/// lease is still at `generation`: a deleting process stalled past its
/// lease drops nothing of the process that took the vault over (its keys,
/// its held records). The key tables are locked first, in the order a
/// takeover's fence locks them, so the two never deadlock: a fence that
/// committed first is seen here, and one that comes after finds the
/// schema gone.
pub(crate) fn drop_schema_sql(schema: &str, generation: i64) -> String {
    format!(
        "BEGIN; SET LOCAL lock_timeout = '5s';
         LOCK TABLE {schema}.buckets, {schema}.deks, {schema}.backups, {schema}.header IN ACCESS EXCLUSIVE MODE;
         DO $$ BEGIN
           IF (SELECT generation FROM {schema}.lease) IS DISTINCT FROM {generation} THEN
             RAISE EXCEPTION 'the vault was taken over' USING ERRCODE = '{TAKEN_OVER}';
           END IF;
         END $$;
         DROP SCHEMA {schema} CASCADE; COMMIT;"
    )
}

/// Whether `e` says the statement's connection is no longer to the
/// primary, so that it is run again on the new one: after a failover a
/// pooled connection may reach the old primary, now a standby (a
/// read-only transaction), or one whose server ended it as it went down
/// (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect
/// now), which the connection itself may not yet report as closed.
fn left_the_primary(e: &Error) -> bool {
    matches!(e, Error::Storage(m) if m.contains("read-only transaction")
        || ["(57P01)", "(57P02)", "(57P03)"].iter().any(|c| m.ends_with(c)))
}

fn in_recovery(c: &mut Client) -> Result<bool> {
    Ok(c.query_one("SELECT pg_is_in_recovery()", &[])
        .map_err(pg)?
        .get(0))
}

/// Waits until every reachable standby of `members` has replayed the
/// primary's WAL up to where it is now; then, with `checkpoint`, runs a
/// `CHECKPOINT` (a restartpoint) on each.
fn standbys_replayed(
    primary: &mut Client,
    members: &mut [(String, Result<Member<'_>>)],
    checkpoint: bool,
) -> Result<()> {
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .map_err(pg)?
        .get(0);
    for (_, c) in members.iter_mut() {
        let Ok(c) = c else { continue };
        if c.run(in_recovery)? {
            // One deadline, however often a standby cancels the wait.
            let deadline = Instant::now() + REPLAY_PATIENCE;
            c.run(|c| wait_replay(c, &lsn, deadline))?;
            if checkpoint {
                c.run(|c| c.batch_execute("CHECKPOINT").map_err(pg))?;
            }
        }
    }
    Ok(())
}

/// Waits until a standby has replayed the primary's WAL up to `lsn`, until
/// `deadline`.
fn wait_replay(c: &mut Client, lsn: &str, deadline: Instant) -> Result<()> {
    loop {
        let done: bool = c
            .query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .map_err(pg)?
            .get(0);
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Storage(format!(
                "keystore cluster: a standby has not replayed {lsn} after {}s (a query there \
                 conflicting with replay holds it back up to the member's max_standby_streaming_delay)",
                REPLAY_PATIENCE.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// WAL segments on this member at or before `segment` (compared without
/// the timeline, which a failover changes).
fn segments_at_or_before(c: &mut Client, segment: &str) -> Result<Vec<String>> {
    // A `.partial` segment (a timeline's last, kept at a promotion) counts
    // like any other: the vault's byte scan reads no WAL, so these names
    // are the whole of the WAL's evidence.
    let rows = c
        .query(
            "SELECT name FROM pg_ls_waldir()
              WHERE name ~ '^[0-9A-F]{24}(\\.partial)?$' AND substr(name, 9, 16) <= substr($1, 9)
              ORDER BY name",
            &[&segment],
        )
        .map_err(pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What on the primary could keep a row deleted before `horizon` (an xid)
/// from being removed: a session's snapshot, a standby's feedback, a
/// replication slot, a prepared transaction.
fn blockers(c: &mut Client, horizon: &str) -> Result<Vec<Blocker>> {
    // The query is `pivault_verify.horizon_blockers` (verify-scan-vault.sql):
    // a session's snapshot in its own database only, a transaction ID in
    // every database (the purge's own snapshot counts every running ID),
    // standby feedback, slots and prepared transactions everywhere, no
    // lazy VACUUM (whose snapshot no horizon counts: a tenant's or
    // autovacuum's, throttled by a table's storage parameters, kept every
    // purge waiting and failing). It runs as the superuser so that a vault
    // role need not read every session's statistics.
    let rows = c
        .query(
            "SELECT what, pid, stranger FROM pivault_verify.horizon_blockers($1::text::xid)",
            &[&horizon],
        )
        .map_err(|e| {
            if undefined_function(&e) {
                Error::Storage(
                    "cluster: pivault_verify.horizon_blockers is missing (set up by an earlier \
                     build); run scripts/verify-scan-vault.sql in pivault_keys and pivault_records \
                     on it as the cluster's superuser"
                        .into(),
                )
            } else {
                pg(e)
            }
        })?;
    Ok(rows
        .iter()
        .map(|r| Blocker {
            what: r.get(0),
            pid: r.get(1),
            stranger: r.get(2),
        })
        .collect())
}

/// How many standbys stream from the primary `c`. Through
/// `pivault_verify.streaming_standbys`: a vault role does not read the WAL
/// senders' statistics. A cluster set up by an earlier build, where vault
/// roles still read every session's statistics, answers directly.
fn streaming_standbys(c: &mut Client) -> Result<i64> {
    match c.query_one("SELECT pivault_verify.streaming_standbys()", &[]) {
        Ok(r) => Ok(r.get(0)),
        Err(e) if undefined_function(&e) => Ok(c
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .map_err(pg)?
            .get(0)),
        Err(e) => Err(pg(e)),
    }
}

/// What holds back the purge's horizon.
struct Blocker {
    what: String,
    /// The session's backend, when it is one.
    pid: Option<i32>,
    /// Another vault role's session, which the purge may end once what it
    /// holds back has been held [`STRANGER_SNAPSHOT_LIMIT`], or an
    /// autovacuum worker, which it may end then if a vault's role could
    /// have made it hold that long.
    stranger: bool,
}

/// What the purge's wait for old transactions left, and what it ended.
#[derive(Default)]
struct Waited {
    /// Blockers still there (each also in the residue).
    left: Vec<String>,
    /// Other vaults' sessions ended.
    ended: u64,
    /// Autovacuum workers ended (an `ANALYZE` of a vault's table, a work
    /// item).
    autovacuum: u64,
    /// Other vaults' sessions ended for a lock on a relation to rewrite.
    lock_holders: u64,
}

impl Waited {
    /// What the primary's evidence says of the sessions and autovacuum
    /// workers ended: nothing when none were.
    fn said(&self) -> String {
        let limit = STRANGER_SNAPSHOT_LIMIT.as_secs();
        let mut said = String::new();
        if self.ended > 0 {
            let n = match self.ended {
                1 => "1 transaction".to_owned(),
                n => format!("{n} transactions"),
            };
            said += &format!("; ended {n} another vault's role held open {limit} s or more");
        }
        if self.lock_holders > 0 {
            said += &format!(
                "; ended {} session(s) of another vault's role that held a lock on this vault's \
                 relations {limit} s or more",
                self.lock_holders
            );
        }
        if self.autovacuum > 0 {
            said += &format!(
                "; ended {} autovacuum worker(s) whose snapshot was held {limit} s or more",
                self.autovacuum
            );
        }
        said
    }
}

/// Waits for the transactions that hold back `horizon` to end: the
/// vault's own, the provider's and the cluster's for [`SNAPSHOT_PATIENCE`];
/// another vault role's until it has held the same transaction ID or
/// snapshot [`STRANGER_SNAPSHOT_LIMIT`] as seen from here, then ends it
/// (`pivault_verify.end_stranger_snapshot`, which checks all of that
/// itself and keeps the holds' ages), so that one vault cannot keep the
/// others' disposals from certifying; an autovacuum worker likewise, when
/// it analyses a vault's table (which that vault's role can slow by the
/// table's storage parameters or hold by its index expressions) or runs a
/// work item. Strangers are seen from the first look, whatever
/// else is waited for (another passing snapshot must not stop their
/// clock); what is left once they are gone gets its own
/// [`SNAPSHOT_PATIENCE`] from then: a statement that ran while a
/// stranger's ID did (another purge's own ask to end it, of a vault that
/// shares this one's role) still shows that ID as its snapshot for a
/// moment after, and once failed a purge that had waited 30 s already.
fn wait_for_blockers(c: &mut Client, horizon: &str) -> Result<Waited> {
    let start = Instant::now();
    // When the last stranger was last seen: the rest's patience runs
    // from then.
    let mut strangers_seen = start;
    let mut waited = Waited::default();
    // A cluster set up before the function existed: waited for, not ended.
    let mut may_end = true;
    loop {
        let found = blockers(c, horizon)?;
        let strangers = may_end && found.iter().any(|b| b.stranger);
        // A snapshot taken while another's old transaction ID ran is only
        // counted once that ID has gone (which explained it): two limits,
        // the IDs' holders' and then the snapshots', and the polls' time.
        let out_of_patience = if strangers {
            strangers_seen = Instant::now();
            start.elapsed() >= STRANGER_SNAPSHOT_LIMIT * 2 + Duration::from_secs(10)
        } else {
            strangers_seen.elapsed() >= SNAPSHOT_PATIENCE
        };
        if found.is_empty() || out_of_patience {
            waited.left = found.into_iter().map(|b| b.what).collect();
            return Ok(waited);
        }
        if strangers {
            for pid in found.iter().filter(|b| b.stranger).filter_map(|b| b.pid) {
                match c.query_one("SELECT pivault_verify.end_stranger_snapshot($1)", &[&pid]) {
                    Ok(r) => match r.get::<_, &str>(0) {
                        "ended" => waited.ended += 1,
                        "ended autovacuum" => waited.autovacuum += 1,
                        _ => {}
                    },
                    Err(e) if undefined_function(&e) => {
                        may_end = false;
                    }
                    Err(e) => return Err(pg(e)),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What [`lock_holders`] saw still under its 30 s.
#[derive(Default)]
struct LockHeld {
    /// Another vault role's session holds a lock that it has held, as a
    /// role, under [`STRANGER_SNAPSHOT_LIMIT`].
    vault_roles: bool,
    /// An autovacuum worker does.
    autovacuum: bool,
}

/// One look at the locks other sessions hold on `relations` (names, or
/// OIDs as text) and on what a rewrite or a drop of them takes too (their
/// indexes, TOAST relations and partition parents), and on `schema`:
/// another vault role's session, or an autovacuum worker, that has held
/// such a lock [`STRANGER_SNAPSHOT_LIMIT`] is ended (counted in `ended`)
/// by `pivault_verify.end_stranger_lock`, which checks all of that
/// itself. Functions that check no privilege took a lock on any relation
/// or schema and kept it, and one vault's role could so keep another's
/// relations from ever being rewritten or dropped; what holds them under
/// the limit is answered. The vault's own, the provider's and the
/// superuser's locks are left to the rewrite's own lock wait, as before.
fn lock_holders(
    c: &mut Client,
    relations: &[&str],
    schema: Option<&str>,
    ended: &mut u64,
) -> Result<LockHeld> {
    let holders = c
        .query(
            "WITH RECURSIVE given AS (
               -- A name that is gone (a partition its split replaced)
               -- is none.
               SELECT CASE WHEN r ~ '^[0-9]+$' THEN r::oid ELSE to_regclass(r)::oid END AS oid
                 FROM unnest($1::text[]) r),
             up AS (SELECT oid FROM given
                    UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid),
             rels AS (SELECT oid FROM up
                      UNION SELECT i.indexrelid FROM pg_index i JOIN up ON i.indrelid = up.oid
                      UNION SELECT c.reltoastrelid FROM pg_class c JOIN up ON c.oid = up.oid
                             WHERE c.reltoastrelid <> 0
                      UNION SELECT i.indexrelid FROM pg_class c JOIN up ON c.oid = up.oid
                              JOIN pg_index i ON i.indrelid = c.reltoastrelid)
             SELECT DISTINCT l.pid, coalesce(l.relation, l.objid)
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               LEFT JOIN pg_roles r ON r.oid = a.usesysid
              WHERE l.granted AND l.pid <> pg_backend_pid()
                -- Only what the function may end: another vault role's
                -- session, or a process of no role (an autovacuum worker).
                AND (a.usesysid IS NULL
                     OR (NOT r.rolsuper AND r.rolname <> session_user
                         AND pg_has_role(a.usesysid, 'pivault_vaults', 'MEMBER')))
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND ((l.locktype = 'relation' AND l.relation IN (SELECT oid FROM rels))
                  OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass
                      AND l.objid = to_regnamespace($2)::oid))",
            &[&relations, &schema],
        )
        .map_err(pg)?;
    let mut held = LockHeld::default();
    for h in &holders {
        let (pid, rel): (i32, postgres::types::Oid) = (h.get(0), h.get(1));
        match c.query_one(
            "SELECT pivault_verify.end_stranger_lock($1, $2)",
            &[&pid, &rel],
        ) {
            Ok(r) => match r.get::<_, &str>(0) {
                "ended" => *ended += 1,
                "held under 30 s" | "busy" => held.vault_roles = true,
                "autovacuum held under 30 s" => held.autovacuum = true,
                _ => {}
            },
            // A cluster set up before the function: the rewrite's own
            // lock wait, as before.
            Err(e) if undefined_function(&e) => {
                return Ok(LockHeld::default());
            }
            Err(e) => return Err(pg(e)),
        }
    }
    Ok(held)
}

/// [`lock_holders`] again and again while another vault's role holds a
/// lock under its limit (queueing behind it gains nothing), until
/// [`LOCK_STRANGER_PATIENCE`] from `start`: what was left at the last look.
fn lock_holders_waited(
    c: &mut Client,
    relations: &[&str],
    schema: Option<&str>,
    ended: &mut u64,
    start: Instant,
) -> Result<LockHeld> {
    loop {
        let held = lock_holders(c, relations, schema, ended)?;
        if !held.vault_roles || start.elapsed() >= LOCK_STRANGER_PATIENCE {
            return Ok(held);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long a rewrite or a drop may wait on other vaults' locks: their
/// limit, the polls', and one more lock timeout.
const LOCK_STRANGER_PATIENCE: Duration = Duration::from_secs(45);

/// Runs `rewrite` of `relation`, which waits at most its lock timeout
/// (5 s) for a lock, until it has run: while another vault's role holds
/// a lock on what it takes it is not tried (queueing behind that lock
/// gains nothing) until [`lock_holders`] ends it; after a lock timeout it
/// is tried again, three times, and for as long as an autovacuum worker
/// holding such a lock is under its limit (one that catches the cancel a
/// waiting lock sends it), within [`LOCK_STRANGER_PATIENCE`]. Answers
/// whether it ran; errors other than a lock timeout are returned.
fn rewrite_past_strangers(
    c: &mut Client,
    relation: &str,
    ended: &mut u64,
    rewrite: &mut dyn FnMut(&mut Client) -> std::result::Result<(), postgres::Error>,
) -> Result<bool> {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        let held = lock_holders_waited(c, &[relation], None, ended, start)?;
        match rewrite(c) {
            Ok(()) => return Ok(true),
            Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                tries += 1;
                let young = held.vault_roles || held.autovacuum;
                if (tries >= 3 && !young) || start.elapsed() >= LOCK_STRANGER_PATIENCE {
                    return Ok(false);
                }
            }
            Err(e) => return Err(pg(e)),
        }
    }
}

/// The negative control's snapshot: a REPEATABLE READ transaction on its
/// own connection, held until dropped.
struct HeldSnapshot(Option<Client>);

impl Drop for HeldSnapshot {
    fn drop(&mut self) {
        // Closing a client runs its runtime too.
        if let Some(c) = self.0.take() {
            off_runtime(move || drop(c));
        }
    }
}

impl Conns {
    pub(crate) fn new(cfg: PgConfig) -> Result<Conns> {
        cfg.validate()?;
        let password = cfg.password()?;
        let pool = Arc::new(Mutex::new(Vec::new()));
        let budget = Budget::join(&cfg.members, &pool);
        Ok(Conns {
            cfg,
            password,
            pool,
            gate: Gate::default(),
            budget,
        })
    }

    fn connect(&self, member: &str) -> Result<Client> {
        connect_as(&self.cfg, &self.password, member)
    }

    /// A connection to whichever member is the primary now: an idle one
    /// from the pool first, else a new one within the process's budget.
    pub(crate) fn primary(&self) -> Result<Pooled> {
        if let Some(c) = self.pool.lock().expect("pool lock").pop() {
            return Ok(c);
        }
        let slot = self.budget.admit()?;
        let mut c = primary_of(&self.cfg, &self.password)?;
        // A transaction left open by a process that was stopped mid-write
        // ends after the lease, so it cannot keep a standby that took the
        // vault over from fencing the keystore (`PgKeys::fence`).
        // The fence's argument needs READ COMMITTED: a write blocked by the
        // fence's lock takes its snapshot after the wait, and sees the bump.
        // Statements are prepared once per connection and run with a
        // generic plan: planning a write's statement again at every call
        // (PostgreSQL's custom plans) cost 0.4 ms of its 0.55 (benches run 11).
        c.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {};
             SET default_transaction_isolation = 'read committed';
             SET plan_cache_mode = force_generic_plan",
            crate::store::postgres::LEASE.as_millis()
        ))
        .map_err(pg)?;
        Ok(Pooled::new(c, slot))
    }

    /// A new connection to the primary, never one from the pool (which
    /// may all be dead after a failover), within the budget.
    pub(crate) fn fresh_primary(&self) -> Result<Pooled> {
        let slot = self.budget.admit()?;
        Ok(Pooled::new(primary_of(&self.cfg, &self.password)?, slot))
    }

    /// Runs `f` on a primary connection. A connection that broke (a
    /// failover) is dropped and `f` retried once on the new primary: every
    /// write here is idempotent (upserts and deletes of whole rows).
    pub(crate) fn with_primary<T>(&self, f: impl Fn(&mut Pooled) -> Result<T>) -> Result<T> {
        let _place = self.gate.enter();
        let mut attempt = 0;
        loop {
            let mut c = self.primary()?;
            match f(&mut c) {
                Ok(v) => {
                    self.give_back(c);
                    return Ok(v);
                }
                Err(e) if attempt == 0 && (c.is_closed() || left_the_primary(&e)) => {
                    attempt += 1;
                    self.pool.lock().expect("pool lock").clear();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts a working connection back in the pool, unless it broke or the
    /// pool is full.
    pub(crate) fn give_back(&self, mut c: Pooled) {
        let mut pool = self.pool.lock().expect("pool lock");
        if !c.is_closed() && pool.len() < WORKING_CONNECTIONS {
            c.idle_since = Instant::now();
            pool.push(c);
            drop(pool);
            self.budget.idled();
        }
    }

    /// Every member, each with a connection or why there is none.
    pub(crate) fn members(&self) -> Vec<(String, Result<Member<'_>>)> {
        self.cfg
            .members
            .iter()
            .map(|m| (m.clone(), self.member(m)))
            .collect()
    }

    /// The purge recipe (module doc) over `relations` on every member.
    /// Each of `replaced` (a relation, and the SQL of one transaction that
    /// drops it and moves its live rows elsewhere) is rewritten by its SQL
    /// instead of `VACUUM FULL`, except under the negative controls: the
    /// search index's partitions split (`store/postgres/partitions.rs`).
    pub(crate) fn purge(
        &self,
        relations: &[String],
        replaced: &[(String, String)],
        control: PurgeControl,
    ) -> Result<Purged> {
        // A fresh connection: a pooled one may reach a primary that died
        // (the purge is where a failover in the middle of a batch lands).
        self.pool.lock().expect("pool lock").clear();
        let mut primary = self.primary()?;
        // Anything that could still see a row deleted before now.
        let horizon: String = primary
            .query_one("SELECT (txid_current() % 4294967296)::text", &[])
            .map_err(pg)?
            .get(0);
        // Every relation's lock holders looked at once, first: another
        // vault role's clock (kept by `end_stranger_lock` over all of this
        // vault's relations at once) starts now, not when the rewrites
        // reach the first relation it locked.
        let mut ended_first = 0;
        if control != PurgeControl::SkipPhysical {
            let every: Vec<&str> = relations
                .iter()
                .chain(replaced.iter().map(|(r, _)| r))
                .map(String::as_str)
                .collect();
            lock_holders(&mut primary, &every, None, &mut ended_first)?;
        }
        let mut blockers = wait_for_blockers(&mut primary, &horizon)?;
        blockers.lock_holders += ended_first;
        let mut residue = Vec::new();
        let (mut relations, mut replaced) = (relations.to_vec(), replaced.to_vec());
        if control != PurgeControl::Full && control != PurgeControl::SkipWalRounds {
            relations.extend(replaced.drain(..).map(|(r, _)| r));
        }
        let all: Vec<&String> = relations
            .iter()
            .chain(replaced.iter().map(|(r, _)| r))
            .collect();
        let mut before = Vec::new();
        for r in &all {
            let path: String = primary
                .query_one("SELECT pg_relation_filepath($1::text::regclass)", &[r])
                .map_err(pg)?
                .get(0);
            before.push(path);
        }
        if control != PurgeControl::SkipPhysical {
            primary
                .batch_execute("SET lock_timeout = '5s'")
                .map_err(pg)?;
            for (r, sql) in &replaced {
                // Its lock timeout is its own (`SET LOCAL`); a timed-out
                // attempt is rolled back and retried.
                let done = rewrite_past_strangers(
                    &mut primary,
                    r,
                    &mut blockers.lock_holders,
                    &mut |c| {
                        c.batch_execute(sql).inspect_err(|_| {
                            let _ = c.batch_execute("ROLLBACK");
                        })
                    },
                )?;
                if !done {
                    residue.push(format!(
                        "{r}: not replaced (a session held a lock on the search index)"
                    ));
                }
            }
            for r in &relations {
                let verb = if control == PurgeControl::PlainVacuum {
                    "VACUUM"
                } else {
                    "VACUUM FULL"
                };
                // Not rewritten is reported below: the batch fails cleanly
                // and a retry purges.
                rewrite_past_strangers(&mut primary, r, &mut blockers.lock_holders, &mut |c| {
                    c.batch_execute(&format!("{verb} {r}"))
                })?;
            }
            // The connection goes back to the pool: other work waits for
            // locks as usual.
            primary.batch_execute("RESET lock_timeout").map_err(pg)?;
        }
        self.settle(primary, &all, &before, residue, control, blockers)
    }

    /// Whole-vault deletion: the relations of `schema` that have storage
    /// (named by OID) and their files, read before the drop.
    pub(crate) fn drop_targets(&self, schema: &str) -> Result<DropTargets> {
        self.with_primary(|c| {
            let relations = storage_relations(c, schema)?;
            let mut files = Vec::new();
            for r in &relations {
                let path: String = c
                    .query_one("SELECT pg_relation_filepath($1::text::oid)", &[r])
                    .map_err(pg)?
                    .get(0);
                files.push(path);
            }
            Ok(DropTargets {
                schema: schema.to_owned(),
                relations,
                files,
            })
        })
    }

    /// Whole-vault deletion: runs `drop` (one transaction dropping every
    /// one of `targets`), then the purge's WAL rounds and checks on every
    /// member, as for a batch: each relation's file gone from every member,
    /// no WAL segment from before the drop left. A drop that fails (a
    /// session holding a lock past its timeout) is an error, and nothing is
    /// gone; a failure after it is [`Error::DisposalFailed`], as is a drop
    /// whose outcome cannot be learnt (the primary lost at its commit).
    /// `drop` runs the drop, given the primary (a records store drops on
    /// the connection holding the vault's lock instead).
    pub(crate) fn drop_and_settle(
        &self,
        targets: &DropTargets,
        drop: &mut dyn FnMut(&mut Client) -> Result<()>,
    ) -> Result<Purged> {
        self.pool.lock().expect("pool lock").clear();
        let mut primary = self.primary()?;
        // Every relation of the schema (its partitioned parents too) and
        // its TOAST relations: a lock another vault's role keeps on any of
        // them would keep the drop waiting.
        let mut locked: Vec<String> = primary
            .query(
                "SELECT oid::text FROM pg_class WHERE relnamespace = to_regnamespace($1)::oid",
                &[&targets.schema],
            )
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        locked.extend(targets.relations.iter().cloned());
        let locked: Vec<&str> = locked.iter().map(String::as_str).collect();
        // The drop is tried once (a refused deletion is retried by its
        // caller, when any such lock is older than the limit and ended at
        // once): other vaults' locks under the limit are waited out first.
        let mut lock_holders_ended = 0;
        lock_holders_waited(
            &mut primary,
            &locked,
            Some(&targets.schema),
            &mut lock_holders_ended,
            Instant::now(),
        )?;
        if let Err(e) = drop(&mut primary) {
            // Rolled back, or committed just before the connection broke
            // (a failover at the commit): the cluster says which.
            match self.dropped(&targets.schema) {
                Ok(false) => return Err(e),
                // Committed: from here every failure keeps the marker.
                Ok(true) => {
                    primary = self.fresh_primary().map_err(|e| {
                        Error::DisposalFailed(format!(
                            "dropped, but no primary for the purge's rounds ({e}): finish it with pivault vault delete --resume"
                        ))
                    })?
                }
                Err(again) => {
                    return Err(Error::DisposalFailed(format!(
                        "the drop's outcome is not known ({e}; then {again}): finish it with pivault vault delete --resume"
                    )));
                }
            }
        }
        self.settle_dropped(primary, targets, lock_holders_ended)
            .map_err(|e| {
                Error::DisposalFailed(format!(
                    "dropped, but the purge's rounds and checks did not finish: {e}"
                ))
            })
    }

    /// The purge's rounds and checks after a whole vault's drop committed
    /// (`lock_holders`: other vaults' sessions ended for locks first).
    fn settle_dropped(
        &self,
        primary: Pooled,
        targets: &DropTargets,
        lock_holders: u64,
    ) -> Result<Purged> {
        // Named by OID, the relations read as no relation in `settle`'s
        // name check: the evidence is each file checked gone on every
        // member.
        self.settle(
            primary,
            &[],
            &targets.files,
            Vec::new(),
            PurgeControl::Full,
            Waited {
                lock_holders,
                ..Waited::default()
            },
        )
    }

    /// Whether `schema` is gone, once no transaction can still be dropping
    /// it. A killed process's drop runs on in its backend (the statements
    /// were sent in one message) and may commit after the process died:
    /// such a backend of this role is stopped first, and its end waited
    /// for (a drop it had not committed is rolled back, so nothing is
    /// gone). Then a table created in the schema and rolled back waits on
    /// the schema's own lock, which `DROP SCHEMA` takes before any of its
    /// tables', so a drop from anywhere else that has begun ends first.
    /// (A lock on one of its tables would not do: the drop takes those one
    /// by one, and one it has not reached yet is granted at once.)
    pub(crate) fn dropped(&self, schema: &str) -> Result<bool> {
        self.pool.lock().expect("pool lock").clear();
        let mut c = self.fresh_primary()?;
        let stuck: Vec<i32> = c
            .query(
                "SELECT pid FROM pg_stat_activity
                  WHERE usename = current_user AND pid <> pg_backend_pid()
                    AND state IS DISTINCT FROM 'idle' AND position($1 in query) > 0",
                &[&format!("DROP SCHEMA {schema} CASCADE")],
            )
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for pid in stuck {
            // Waits up to 60 s for the backend to be gone.
            let gone: bool = c
                .query_one("SELECT pg_terminate_backend($1, 60000)", &[&pid])
                .map_err(pg)?
                .get(0);
            let listed: bool = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                    &[&pid],
                )
                .map_err(pg)?
                .get(0);
            if !gone && listed {
                return Err(Error::Storage(format!(
                    "a drop of the vault's schema is still running on the primary (backend {pid}) and did not stop"
                )));
            }
        }
        // Only the vault's own schema is its keys: one another role made
        // under the name after the drop is not (taken for the keys still
        // there, the resume would give back a vault without keys).
        if schema_is(&mut c, schema)? != SchemaIs::Ours {
            return Ok(true);
        }
        let probe = c.batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '60s'; CREATE TABLE {schema}.pivault_drop_probe (); ROLLBACK"
        ));
        if let Err(e) = probe {
            let _ = c.batch_execute("ROLLBACK");
            let gone = [
                postgres::error::SqlState::INVALID_SCHEMA_NAME,
                postgres::error::SqlState::UNDEFINED_OBJECT,
            ];
            if !e.code().is_some_and(|code| gone.contains(code)) {
                return Err(pg(e));
            }
        }
        Ok(schema_is(&mut c, schema)? != SchemaIs::Ours)
    }

    /// A deletion's drop, finished by another process after the one that
    /// began it was killed: `None` if the schema is still there (nothing
    /// was dropped), else the purge's rounds and checks over `targets`.
    pub(crate) fn resume_drop(&self, targets: &DropTargets) -> Result<Option<Purged>> {
        if !self.dropped(&targets.schema)? {
            return Ok(None);
        }
        let primary = self.fresh_primary()?;
        self.settle_dropped(primary, targets, 0).map(Some)
    }

    /// What would keep a dropped relation's bytes on some member if it
    /// were dropped now: a member that cannot be reached, a standby that
    /// is not streaming from the primary.
    pub(crate) fn drop_precheck(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut standbys = 0i64;
        let mut primaries = Vec::new();
        for (name, c) in self.members() {
            match c {
                Err(e) => problems.push(format!("member {name} cannot be reached ({e})")),
                Ok(mut c) => {
                    if c.run(in_recovery)? {
                        standbys += 1;
                    } else {
                        primaries.push((name, c));
                    }
                }
            }
        }
        match primaries.as_mut_slice() {
            [(_, p)] => {
                let streaming = p.run(streaming_standbys)?;
                if streaming < standbys {
                    problems.push(format!(
                        "{} of {standbys} standby(s) not streaming from the primary",
                        standbys - streaming
                    ));
                }
            }
            [] => problems.push("no primary among the members".into()),
            _ => problems.push("more than one member answers as primary".into()),
        }
        Ok(problems)
    }

    /// The purge's second half, shared by a batch's purge and a whole
    /// vault's drop: each of `all` rewritten or gone, the WAL rounds, and
    /// every member's evidence.
    fn settle(
        &self,
        mut primary: Pooled,
        all: &[&String],
        before: &[String],
        mut residue: Vec<String>,
        control: PurgeControl,
        blockers: Waited,
    ) -> Result<Purged> {
        for (r, old) in all.iter().zip(before) {
            // `None`: the relation was replaced (dropped), its file with it.
            let now: Option<String> = primary
                .query_one("SELECT pg_relation_filepath(to_regclass($1::text))", &[r])
                .map_err(pg)?
                .get(0);
            if now.as_ref() == Some(old) {
                residue.push(format!(
                    "{r}: not rewritten (still {old}; a session may hold a lock on it)"
                ));
            }
        }
        // The segment holding the purge's last write: every segment at or
        // before it must go from every member.
        let purge_segment: String = primary
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .map_err(pg)?
            .get(0);
        let mut members = self.members();
        let rounds = if matches!(
            control,
            PurgeControl::SkipWalRounds | PurgeControl::SkipPhysical
        ) {
            0
        } else {
            WAL_ROUNDS
        };
        let mut old_segments = Vec::new();
        for round in 0..=rounds {
            old_segments.clear();
            if round == 1 {
                // No segment is removed before every standby has received
                // what the primary holds now. Right after a failover the
                // new primary has no replication slot for a standby that
                // is still switching over to it; the rounds' checkpoints
                // (two purges' at once, when the keystore and the records
                // share a cluster) would remove the segments that standby
                // needs, and it could only be cloned again.
                standbys_replayed(&mut primary, &mut members, false)?;
            }
            if round > 0 {
                primary
                    .batch_execute("SELECT pg_switch_wal(); CHECKPOINT")
                    .map_err(pg)?;
                standbys_replayed(&mut primary, &mut members, true)?;
            }
            for (name, c) in members.iter_mut() {
                let Ok(c) = c else { continue };
                for seg in c.run(|c| segments_at_or_before(c, &purge_segment))? {
                    old_segments.push(format!("{name}: pg_wal/{seg}"));
                }
            }
            if old_segments.is_empty() && round > 0 {
                break;
            }
        }
        residue.extend(old_segments.iter().cloned());
        let mut evidence_members = Vec::new();
        for (name, c) in members.iter_mut() {
            let m = match c {
                Err(e) => MemberEvidence {
                    name: name.clone(),
                    role: "unreachable".into(),
                    verified: false,
                    detail: format!("not verified: {e}"),
                },
                Ok(c) => {
                    let role = if c.run(in_recovery)? {
                        "standby"
                    } else {
                        "primary"
                    };
                    let mut gone = true;
                    for p in before {
                        let exists: bool =
                            c.value("SELECT pivault_verify.file_exists($1)", &[p])?;
                        if exists {
                            gone = false;
                            residue.push(format!(
                                "{name}: {p} (a relation file from before the purge)"
                            ));
                        }
                    }
                    // The WAL's evidence is its segments' names (the vault's
                    // byte scan reads none): sound only if no segment is
                    // recycled (renamed ahead with its old bytes) or
                    // archived (copied where no check reaches). Checked at
                    // every purge, not only by doctor.
                    let mut settings_ok = true;
                    for (setting, want, why) in &MEMBER_SETTINGS[..2] {
                        let have: String = c.value("SELECT current_setting($1)", &[setting])?;
                        if have != *want {
                            settings_ok = false;
                            residue.push(format!("{name}: {setting}={have} ({why})"));
                        }
                    }
                    let segments_gone = !old_segments
                        .iter()
                        .any(|s| s.starts_with(&format!("{name}:")));
                    let wal_clean = settings_ok && segments_gone;
                    let replay = if role == "standby" {
                        let lag: String = c.value(
                            "SELECT coalesce(pg_last_wal_replay_lsn()::text, 'none')",
                            &[],
                        )?;
                        format!(", replayed to {lag}")
                    } else {
                        blockers.said()
                    };
                    MemberEvidence {
                        name: name.clone(),
                        role: role.into(),
                        verified: gone && wal_clean,
                        detail: format!(
                            "{} relation file(s) from before the purge {}; WAL segments at or before {purge_segment} {}{replay}",
                            before.len(),
                            if gone { "gone" } else { "still present" },
                            match (segments_gone, settings_ok) {
                                (true, true) => "gone",
                                (true, false) =>
                                    "gone by name, but a recycled or archived copy is not ruled out",
                                (false, _) => "still present",
                            },
                        ),
                    }
                }
            };
            evidence_members.push(m);
        }
        let snapshots = blockers.left.len() as u64;
        residue.extend(blockers.left);
        self.give_back(primary);
        Ok(Purged {
            snapshots,
            residue,
            members: evidence_members,
            wal_segment: purge_segment,
        })
    }

    /// Every member's files, through `pivault_verify.scan` (a cluster set
    /// up before `scan_vault` existed: today the superuser's); with `vault`
    /// (its schema, and the name prefixes of its tables that can hold the
    /// needles, `None` for all), narrowed to what a row of that vault can
    /// reach (`pivault_verify.scan_vault`: not other databases' nor other
    /// vaults' relation files, nor the vault's other tables), or the whole
    /// scan on a cluster set up before that function existed. With
    /// `wal_after` (the segment of the purge's last write, see
    /// [`Purged::wal_segment`]) the WAL segments past it are not read;
    /// on a cluster whose functions predate that, every segment is.
    ///
    /// A narrowed scan also reads every relation of the vault's schema
    /// that the catalog does not show as pivault's own
    /// ([`Narrowed::strangers`]): a table someone made there (a copy of the
    /// keys "to be safe", a materialized view, a partition or index of
    /// their own), so that such a copy's bytes block the certificate
    /// instead of going unread.
    pub(crate) fn scan_members(
        &self,
        needles: &[Vec<u8>],
        vault: Option<(&str, Option<Narrowed<'_>>)>,
        wal_after: Option<&str>,
    ) -> Result<ByteScan> {
        let mut out = ByteScan::default();
        if needles.is_empty() {
            return Ok(out);
        }
        // Each member reads its own files, all at once (a thread each): on
        // separate machines the scan takes the slowest member's time, not
        // the sum of all. `None`: the member could not be reached.
        type Found = Option<ScanRows>;
        let found: Vec<Result<Found>> = std::thread::scope(|sc| {
            let scans: Vec<_> = self
                .cfg
                .members
                .iter()
                .map(|m| {
                    sc.spawn(move || -> Result<Found> {
                        let Ok(mut c) = self.member(m) else {
                            return Ok(None);
                        };
                        // The named tables and the strangers of the
                        // vault's schema, as this member's catalog has them.
                        let narrowed = vault.and_then(|(v, n)| n.map(|n| (v, n)));
                        let strangers: Option<Vec<String>> = match narrowed {
                            Some((v, n)) => Some(c.run(|c| n.strangers(c, v))?),
                            None => None,
                        };
                        let read: Option<Vec<&str>> = match (narrowed, &strangers) {
                            (Some((_, n)), Some(st)) => Some(
                                n.tables
                                    .iter()
                                    .copied()
                                    .chain(st.iter().map(String::as_str))
                                    .collect(),
                            ),
                            _ => None,
                        };
                        let vault = vault.map(|(v, _)| (v, read.as_deref()));
                        let Some(mut found) = c.scan(needles, vault, wal_after)? else {
                            return Ok(None);
                        };
                        // A stranger made while the scan ran may have been
                        // skipped (the scan's own catalog read came after
                        // ours): it counts as a hit, never as read.
                        if let (Some((v, n)), Some(before)) = (narrowed, &strangers) {
                            for late in c.run(|c| n.strangers(c, v))? {
                                if !before.contains(&late) {
                                    found.push((
                                        format!("{late} (a relation made in the vault's schema while it was scanned, not read)"),
                                        Seen::Unread,
                                    ));
                                }
                            }
                        }
                        Ok(Some(found))
                    })
                })
                .collect();
            scans
                .into_iter()
                .map(|h| h.join().expect("a member's scan thread"))
                .collect()
        });
        for (name, member) in self.cfg.members.iter().zip(found) {
            let Some(rows) = member? else {
                out.hits
                    .push(format!("{name}: unreachable, its files were not scanned"));
                continue;
            };
            for (path, seen) in rows {
                if seen == Seen::Skipped {
                    out.skipped += 1;
                    continue;
                }
                out.scanned += 1;
                if seen == Seen::Read {
                    continue;
                }
                out.hits.push(format!("{name}: {path}"));
                if seen == Seen::Holds {
                    out.copies.push(FoundCopy {
                        member: Some(name.clone()),
                        path,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Which of `copies` (files an earlier scan read a needle in) are
    /// still on their members, each asked by `pivault_verify.present`.
    /// A member not in the configuration now, or one that cannot answer,
    /// is an error: the copy seen there cannot be checked gone.
    pub(crate) fn copies_present(&self, copies: &[FoundCopy]) -> Result<Vec<FoundCopy>> {
        let mut by_member: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for c in copies {
            let Some(m) = c.member.as_deref() else {
                return Err(Error::Integrity("disposal batch"));
            };
            by_member.entry(m).or_default().push(c.path.clone());
        }
        let mut present = Vec::new();
        for (name, paths) in by_member {
            if !self.cfg.members.iter().any(|m| m == name) {
                return Err(Error::Storage(format!(
                    "keystore cluster: {name} is not a member now, so the copy an earlier scan found there cannot be checked"
                )));
            }
            let mut m = self.member(name)?;
            for some in paths.chunks(1000) {
                let there: Vec<String> = m
                    .value("SELECT pivault_verify.present($1::text[])", &[&some])
                    .map_err(|e| match e {
                        Error::Storage(msg) if msg.ends_with("(42883)") => Error::Storage(format!(
                            "keystore cluster: {name} lacks pivault_verify.present (a cluster set up by an earlier build): run scripts/verify-scan-vault.sql in pivault_keys and pivault_records"
                        )),
                        e => e,
                    })?;
                present.extend(there.into_iter().map(|path| FoundCopy {
                    member: Some(name.to_owned()),
                    path,
                }));
            }
        }
        Ok(present)
    }

    /// A session with `member` for a purge's rounds and checks.
    fn member(&self, member: &str) -> Result<Member<'_>> {
        Ok(Member {
            conns: self,
            name: member.to_owned(),
            client: Some(self.session(member)?),
            canceled: 0,
        })
    }

    /// A new session with `member`. A login reads the catalog with a
    /// snapshot, and a standby cancels it like any statement (seen here
    /// as the answer to a reconnect after a cancel): tried again.
    fn session(&self, member: &str) -> Result<Client> {
        let mut tries = 0;
        loop {
            match self.connect(member) {
                Err(e) if replay_canceled(&e) && tries < LOGIN_CANCELS => {
                    tries += 1;
                    std::thread::sleep(REPLAY_PAUSE);
                }
                r => return r,
            }
        }
    }
}

/// A statement a standby cancels to go on replaying the WAL: it holds a
/// snapshot that a cleanup being replayed conflicts with (any session of
/// its database, another vault's purge or an update's pruning, sends
/// replay one), and replay has waited `max_standby_streaming_delay` since
/// the WAL arrived, or lags that far already. A busy cluster cancels some
/// (CI's, two lanes purging at once: stops 42 and 43); a purge's rounds,
/// checks and scans run each again, in a new session.
///
/// The cancels a member may have in one purge's rounds and checks or one
/// scan, all statements together: each waits [`REPLAY_PAUSE`], so the
/// most one member adds is about REPLAY_CANCELS × REPLAY_PAUSE and its
/// statements' time. Past it the error stands and the batch waits at its
/// step for a retry.
const REPLAY_CANCELS: u32 = 64;
/// The pause before a canceled statement runs again: replay, freed of it,
/// catches up, and a standby that no longer lags waits its full delay
/// before it cancels the next.
const REPLAY_PAUSE: Duration = Duration::from_millis(200);
/// The logins a member may cancel in a row.
const LOGIN_CANCELS: u32 = 8;
/// The most parts a canceled scan is split into (a part of `n` canceled
/// runs again as 4 parts of `4n`): each part still walks every directory
/// and reads the catalog once, so more parts stop getting shorter (and
/// `pivault_verify.walk` refuses more).
const SCAN_PARTS: i32 = 64;
/// The times a whole scan runs again on a cluster whose functions predate
/// the parts (stop 42's budget: the same statement canceled again and again
/// only adds its time).
const WHOLE_RERUNS: u32 = 4;

/// Whether a standby canceled the statement (or ended the session) to go
/// on replaying: SQLSTATE 40001 ("conflict with recovery" in English; a
/// member's `lc_messages` may say it otherwise). No statement run on a
/// member here is in a serializable transaction, so on a primary, where
/// 40001 is a serialization failure, none answers it; and a read run
/// again is harmless.
///
/// A session the standby ended between statements, or whose `FATAL` did
/// not reach the client before the socket closed, answers only
/// "connection closed" (seen with two clusters under load: the log says
/// "terminating connection due to conflict with recovery"); it is run
/// again the same way, in a new session that fails if the member is down.
fn canceled_by_replay(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) || e.is_closed()
}

/// Whether the cluster lacks the function called: one set up by an earlier
/// build (the caller falls back to what that build had).
fn undefined_function(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNDEFINED_FUNCTION)
}

/// [`canceled_by_replay`], on the error [`pg`] made of it (the code last,
/// in parentheses).
fn replay_canceled(e: &Error) -> bool {
    matches!(e, Error::Storage(m) if m.ends_with("(40001)") || m == CONNECTION_CLOSED)
}

/// What [`pg`] makes of a closed connection (`postgres::Error::is_closed`).
const CONNECTION_CLOSED: &str = "keystore cluster: connection closed";

/// A session with one member for what a purge runs there, opened again
/// when a standby cancels a statement of it to go on replaying
/// ([`REPLAY_CANCELS`]; the standby may end the session rather than the
/// statement, and one seen here answered "connection closed" next).
pub(crate) struct Member<'a> {
    conns: &'a Conns,
    name: String,
    /// `None` only while a new session is being opened.
    client: Option<Client>,
    canceled: u32,
}

impl Member<'_> {
    /// The member's session.
    fn client(&mut self) -> Result<&mut Client> {
        self.client.as_mut().ok_or_else(|| {
            Error::Storage(format!(
                "keystore cluster: no session with member {}",
                self.name
            ))
        })
    }

    /// `f` on the member's session; run again in a new one, after
    /// [`REPLAY_PAUSE`], while the standby cancels it to replay and the
    /// member's budget lasts (`f` must be safe to run again: a read, a
    /// wait, a restartpoint).
    fn run<T>(&mut self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        loop {
            match f(self.client()?) {
                Err(e) if replay_canceled(&e) && self.canceled < REPLAY_CANCELS => {
                    self.reopen()?;
                }
                r => return r,
            }
        }
    }

    /// The one value a one-row read answers, through [`Self::run`].
    fn value<T: for<'r> postgres::types::FromSql<'r>>(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<T> {
        self.run(|c| Ok(c.query_one(sql, params).map_err(pg)?.get(0)))
    }

    /// A new session after a cancel, the old one closed first (the role's
    /// connection limit counts it).
    fn reopen(&mut self) -> Result<()> {
        self.canceled += 1;
        drop(self.client.take());
        std::thread::sleep(REPLAY_PAUSE);
        self.client = Some(self.conns.session(&self.name)?);
        Ok(())
    }

    /// This member's answer to a vault's byte scan (see
    /// [`Conns::scan_members`]), `None` if it could not be reached again
    /// after a cancel. A scan is one statement that reads files for as
    /// long as they take, so a busy standby's replay cancels it more than
    /// any other: a canceled part of `n` runs again as its 4 parts of
    /// `4n` (`pivault_verify.scan_vault`'s `part` of `parts`), down to
    /// [`SCAN_PARTS`], then as it is; a relation the role could rewrite
    /// that has a new file after a split scan counts as a hit. On a cluster
    /// whose functions predate the parts, the whole scan runs again, up to
    /// [`WHOLE_RERUNS`] times.
    fn scan(
        &mut self,
        needles: &[Vec<u8>],
        vault: Option<(&str, Option<&[&str]>)>,
        wal_after: Option<&str>,
    ) -> Result<Option<ScanRows>> {
        let mut parted = vault.is_some();
        // The files of the relations this role can rewrite, read when a
        // scan is first split, before any part reads: see below.
        let mut before = None;
        let mut split = false;
        let mut whole_reruns = 0;
        let mut todo = vec![(0i32, 1i32)];
        let mut found = Vec::new();
        while let Some((part, parts)) = todo.pop() {
            let c = self.client()?;
            let mut rows = Err(None);
            if parted && let Some((v, tables)) = vault {
                let r = c.query(
                    "SELECT path, hit FROM pivault_verify.scan_vault($1::bytea[], $2, $3, $4, $5, $6)",
                    &[&needles, &v, &tables, &wal_after, &part, &parts],
                );
                // The narrowest function the cluster has: one set up by an
                // earlier build lacks the newer ones.
                if r.as_ref().is_err_and(undefined_function) {
                    // Functions that predate the parts: one whole scan,
                    // whatever ran before.
                    parted = false;
                    split = false;
                    before = None;
                    found.clear();
                    todo.clear();
                } else {
                    rows = r.map_err(Some);
                }
            }
            if !parted {
                rows = whole_scan(c, needles, vault, wal_after).map_err(Some);
            }
            match rows {
                Ok(rows) => found.extend(rows.iter().map(|r| {
                    let hit: Option<bool> = r.get(1);
                    let seen = match hit {
                        None => Seen::Skipped,
                        Some(false) => Seen::Read,
                        Some(true) => Seen::Holds,
                    };
                    (r.get(0), seen)
                })),
                Err(Some(e))
                    if canceled_by_replay(&e)
                        && self.canceled < REPLAY_CANCELS
                        && (parted || whole_reruns < WHOLE_RERUNS) =>
                {
                    if self.reopen().is_err() {
                        return Ok(None);
                    }
                    if !parted {
                        whole_reruns += 1;
                        todo.push((0, 1));
                    } else if parts < SCAN_PARTS {
                        if !split && let Some((v, _)) = vault {
                            before = Some(self.run(|c| rewritable_files(c, v))?);
                        }
                        split = true;
                        todo.extend((0..4).map(|k| (part + k * parts, parts * 4)));
                    } else {
                        todo.push((part, parts));
                    }
                }
                Err(e) => {
                    return Err(e.map_or_else(
                        || Error::Storage("keystore cluster: no scan ran".into()),
                        pg,
                    ));
                }
            }
        }
        // Each part walks the directories afresh, seconds apart: a relation
        // rewritten meanwhile (`VACUUM FULL`, `TRUNCATE`, `CLUSTER` by a
        // role that owns or may write it, as the vault's own role may a
        // copy of its keys) could have had its old file in a part read
        // after the file went and its new one in a part read before it
        // came. Any such relation, or one made meanwhile, counts as a hit,
        // never as read.
        if let (Some(before), Some((v, _))) = (before, vault) {
            for (oid, path) in self.run(|c| rewritable_files(c, v))? {
                if before.get(&oid) != Some(&path) {
                    found.push((
                        format!("{path} (a relation's file made while the scan ran in parts, not read whole)"),
                        Seen::Unread,
                    ));
                }
            }
        }
        Ok(Some(found))
    }
}

/// The file of every relation with storage that the session's role owns
/// or may write (and so rewrite into a new file), by OID: in `vault`'s
/// schema and in any schema that is not a vault's. Other vaults' schemas
/// are left out: where vaults share one role (`pivault`) every other
/// vault's purge rewrites its own relations, and those rewrites, which make
/// standbys cancel scans in the first place, would fail every split scan.
/// (Their files are read, as the role's own, but a copy moved there during
/// a split scan is not looked for again.)
fn rewritable_files(c: &mut Client, vault: &str) -> Result<std::collections::HashMap<u32, String>> {
    let rows = c
        .query(
            "SELECT x.oid, pg_relation_filepath(x.oid) FROM (
               SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE (n.nspname = $1 OR n.nspname !~ '^p[vr]_[0-9a-f]{32}$')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                  AND (c.relowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)
                       OR (c.relkind NOT IN ('i', 'I', 't', 'S')
                           AND has_table_privilege(session_user, c.oid, 'INSERT, UPDATE, TRUNCATE')))
             ) x",
            &[&vault],
        )
        .map_err(pg)?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r.get::<_, u32>(0), r.get::<_, Option<String>>(1)?)))
        .collect())
}

/// A member's scan's answer: each file (or skipped entry) and what the
/// scan saw of it.
type ScanRows = Vec<(String, Seen)>;

/// What a member's scan saw of one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Not read: no row of the vault can be there.
    Skipped,
    /// Read, no needle in it.
    Read,
    /// Read, a needle's bytes in it: a copy.
    Holds,
    /// Counted as a hit without being read (made or rewritten while the
    /// scan ran): it may hold a copy, none was seen.
    Unread,
}

/// A member's scan with the functions of a cluster set up before the
/// parts: `scan_vault` with `wal_after`, without, or the whole `scan`.
fn whole_scan(
    c: &mut Client,
    needles: &[Vec<u8>],
    vault: Option<(&str, Option<&[&str]>)>,
    wal_after: Option<&str>,
) -> std::result::Result<Vec<postgres::Row>, postgres::Error> {
    let undefined = |r: &Option<std::result::Result<_, postgres::Error>>| match r {
        None => true,
        Some(Err(e)) => undefined_function(e),
        Some(Ok(_)) => false,
    };
    let mut rows = None;
    if let (Some((v, tables)), Some(after)) = (vault, wal_after) {
        rows = Some(c.query(
            "SELECT path, hit FROM pivault_verify.scan_vault($1::bytea[], $2, $3, $4)",
            &[&needles, &v, &tables, &after],
        ));
    }
    if undefined(&rows)
        && let Some((v, tables)) = vault
    {
        rows = Some(c.query(
            "SELECT path, hit FROM pivault_verify.scan_vault($1::bytea[], $2, $3)",
            &[&needles, &v, &tables],
        ));
    }
    if undefined(&rows) {
        rows = Some(c.query(
            "SELECT path, hit FROM pivault_verify.scan($1::bytea[])",
            &[&needles],
        ));
    }
    rows.expect("a scan ran")
}

/// What a narrowed scan reads of a vault's own schema: the relations in
/// `tables` (and those named after one of them and `_`: its partitions,
/// its indexes), and every relation that is not pivault's own there.
/// `own_table(name, parent)` says whether a table (`parent`: the table it
/// is a partition of, a default partition never) is one pivault makes.
#[derive(Clone, Copy)]
pub(crate) struct Narrowed<'a> {
    pub(crate) tables: &'a [&'a str],
    pub(crate) own_table: &'a (dyn Fn(&str, Option<&str>) -> bool + Sync),
}

impl Narrowed<'_> {
    /// The relations of `schema` that are not pivault's own, from `c`'s
    /// catalog, which says what each is and not only its name: a table
    /// `own_table` accepts with its partition parent, or the primary key
    /// of such a table (a partitioned index's children included). Anything
    /// else is someone else's however it is named (a copy called
    /// `beacons_64_3`, a default partition, an index called `holder_pkey`).
    fn strangers(&self, c: &mut Client, schema: &str) -> Result<Vec<String>> {
        let rels = c
            .query(
                "SELECT c.relname::text, c.relkind IN ('r', 'p'),
                        (SELECT p.relname::text FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                          WHERE i.inhrelid = c.oid AND c.relispartition
                            AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'),
                        c.relispartition,
                        (SELECT t.relname::text FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
                          WHERE x.indexrelid = c.oid AND x.indisprimary)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1",
                &[&schema],
            )
            .map_err(pg)?;
        let own_tables: std::collections::HashSet<String> = rels
            .iter()
            .filter(|r| {
                let (table, parent, partition) = (
                    r.get::<_, bool>(1),
                    r.get::<_, Option<&str>>(2),
                    r.get::<_, bool>(3),
                );
                // A partition counts only with its parent (not a default one).
                table && (partition == parent.is_some()) && (self.own_table)(r.get(0), parent)
            })
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok(rels
            .iter()
            .filter(|r| {
                let name: &str = r.get(0);
                !own_tables.contains(name)
                    && !r
                        .get::<_, Option<&str>>(4)
                        .is_some_and(|t| own_tables.contains(t))
            })
            .map(|r| r.get::<_, String>(0))
            .collect())
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        let pool = std::mem::take(&mut *self.pool.lock().unwrap_or_else(|e| e.into_inner()));
        off_runtime(move || drop(pool));
    }
}

/// A scan in pages of `page` rows, each fetched (off the runtime) after
/// the last key of the one before; `f` runs on the caller's thread, in key
/// order, until it returns `false`.
pub(crate) fn scan_pages(
    page: usize,
    fetch: impl Fn(Option<&[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> + Sync,
    f: &mut Visit<'_>,
) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = off_runtime(|| fetch(after.as_deref()))?;
        let n = rows.len();
        for (k, v) in &rows {
            if !f(k, v)? {
                return Ok(());
            }
        }
        if n < page {
            return Ok(());
        }
        after = rows.last().map(|(k, _)| k.clone());
    }
}

/// Runs `f` where the blocking client may run: the client drives its own
/// tokio runtime and panics inside another one, which is where the
/// server's blocking jobs run (`spawn_blocking` threads are inside the
/// server's runtime). There it runs on a short-lived thread of its own.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(f).join().expect("keystore cluster thread"))
    } else {
        f()
    }
}

impl KeyEngine for PgKeys {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        off_runtime(|| self.get_row(t, key))
    }

    fn write(&self, ops: Vec<KeyOp>, sync: bool) -> Result<()> {
        off_runtime(|| self.write_rows(ops, sync))
    }

    fn scan(&self, t: Table, prefix: &[u8], f: &mut Visit<'_>) -> Result<()> {
        scan_pages(SCAN_PAGE, |after| self.scan_page(t, prefix, after), f)
    }

    fn purge(&self, buckets: &[u32], skip_physical: bool) -> Result<PurgeEvidence> {
        off_runtime(|| {
            if skip_physical {
                self.set_control(PurgeControl::SkipPhysical);
            }
            let out = self.purge_pg(buckets);
            if skip_physical {
                self.set_control(PurgeControl::Full);
            }
            out
        })
    }

    /// Every file of every member but other databases' and other vaults'
    /// relation files, and of the vault's own relations only those the
    /// purge rewrote: the touched buckets' data-key partitions, `buckets`,
    /// `backups` and `header`. As the embedded engine reads only the table
    /// files of the touched buckets' ranges: a wrapped data key is written
    /// only in its bucket's row, and its bucket's partition never changes
    /// (the bucket count is fixed at creation). The other partitions held
    /// 15/16 of a big vault's scan (benches/README run 16).
    fn scan_for(
        &self,
        buckets: &[u32],
        needles: &[Vec<u8>],
        wal_after: Option<&str>,
    ) -> Result<ByteScan> {
        let rels = self.purge_relations(buckets);
        let tables: Vec<&str> = rels
            .iter()
            .map(|r| r.rsplit('.').next().unwrap_or(r))
            .collect();
        let own = |name: &str, parent: Option<&str>| self.own_table(name, parent);
        let narrowed = Narrowed {
            tables: &tables,
            own_table: &own,
        };
        off_runtime(|| {
            self.conns
                .scan_members(needles, Some((&self.schema, Some(narrowed))), wal_after)
        })
    }

    /// What the vault's role may scan: every file but other vaults' and
    /// other databases' (`scan_vault` with no table named; the whole scan
    /// is the superuser's).
    fn files_containing(&self, needles: &[Vec<u8>]) -> Result<Vec<String>> {
        off_runtime(|| {
            Ok(self
                .conns
                .scan_members(needles, Some((&self.schema, None)), None)?
                .hits)
        })
    }

    fn copies_present(&self, copies: &[FoundCopy]) -> Result<Vec<FoundCopy>> {
        off_runtime(|| self.conns.copies_present(copies))
    }

    fn destroy_precheck(&self) -> Result<Vec<String>> {
        off_runtime(|| self.conns.drop_precheck())
    }

    /// The vault's schema dropped whole (the header's slots, the sealed
    /// signing keys, every bucket, data and backup key, the lease), then
    /// the purge's rounds on every member. A drop leaves no dead tuple: the
    /// relation files are emptied at commit and unlinked at the next
    /// checkpoint (a restartpoint on a standby), whatever snapshot is open,
    /// so only the WAL rounds and the members' checks are needed.
    fn drop_targets(&self) -> Result<DropTargets> {
        off_runtime(|| {
            let t = self.conns.drop_targets(&self.schema)?;
            if t.relations.is_empty() {
                return Err(Error::NotFound("vault keystore on the cluster"));
            }
            Ok(t)
        })
    }

    fn destroy(&self, targets: &DropTargets) -> Result<PurgeEvidence> {
        off_runtime(|| {
            let start = Instant::now();
            if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::TakenOver);
            }
            let sql = drop_schema_sql(&self.schema, self.generation);
            let lose_answer =
                *self.control.lock().expect("control lock") == PurgeControl::DropAnswerLost;
            let p = self.conns.drop_and_settle(targets, &mut |c| {
                c.batch_execute(&sql).map_err(|e| {
                    let _ = c.batch_execute("ROLLBACK");
                    if e.code().map(|c| c.code()) == Some(TAKEN_OVER) {
                        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                        return Error::TakenOver;
                    }
                    pg(e)
                })?;
                if lose_answer {
                    return Err(Error::Io(
                        "the connection to the primary broke at the drop's commit".into(),
                    ));
                }
                Ok(())
            })?;
            Ok(p.evidence(start, u64::from(self.buckets)))
        })
    }

    /// The vault's schema is gone, so nothing of it is skipped: every file
    /// of the keystore's database but other roles' vaults' relations,
    /// `global/`, and the WAL up to the drop's segment (as a batch's scan,
    /// `pivault_verify.scan_vault` with no table named).
    fn scan_everything(&self, needles: &[Vec<u8>], wal_after: Option<&str>) -> Result<ByteScan> {
        off_runtime(|| {
            self.conns
                .scan_members(needles, Some((&self.schema, None)), wal_after)
        })
    }

    fn hold_snapshot(&self) -> Result<Box<dyn Held + '_>> {
        off_runtime(|| {
            let mut c = self.conns.primary()?;
            // The snapshot is taken at the first statement and holds back
            // what VACUUM may remove in the whole database; it takes no lock
            // on the keystore's tables (which would only make VACUUM FULL wait).
            c.batch_execute(
                "SET idle_in_transaction_session_timeout = 0;
                 BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1",
            )
            .map_err(pg)?;
            Ok(HeldSnapshot(Some(c.client)))
        })
        .map(|h| Box::new(h) as Box<dyn Held + '_>)
    }

    fn lease_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn set_control(&self, c: PurgeControl) {
        PgKeys::set_control(self, c);
    }

    fn doctor(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        off_runtime(|| self.doctor_checks())
    }
}

/// The settings of every member a purge depends on, with the value it needs
/// (the first two also checked by every purge, on every member).
const MEMBER_SETTINGS: [(&str, &str, &str); 8] = [
    (
        "archive_mode",
        "off",
        "an archived WAL segment is a copy the purge cannot reach",
    ),
    (
        "wal_recycle",
        "off",
        "a recycled segment keeps its old bytes until overwritten",
    ),
    (
        "hot_standby_feedback",
        "off",
        "a standby's snapshot would hold deleted rows on the primary",
    ),
    (
        "log_parameter_max_length",
        "0",
        "statement logs would carry the scan's needles",
    ),
    (
        "log_parameter_max_length_on_error",
        "0",
        "error logs would carry the scan's needles",
    ),
    ("log_statement", "none", "statement logs would carry rows"),
    (
        "max_prepared_transactions",
        "0",
        "a prepared transaction keeps its locks and its snapshot with no session to end",
    ),
    // A session setting, which `connect_as` sends: checked as this
    // process's connections see it.
    (
        "jit",
        "off",
        "on a big vault each put would compile its statement first",
    ),
];

/// The names of the three member checks of one cluster store (`doctor`).
pub(crate) struct CheckNames {
    pub settings: &'static str,
    pub members: &'static str,
    pub tls: &'static str,
}

impl Conns {
    /// Every member's settings the purge depends on, whether every member
    /// is up and streaming, and whether each connection is TLS.
    pub(crate) fn member_checks(
        &self,
        names: &CheckNames,
    ) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        let mut out = Vec::new();
        let mut reachable = Vec::new();
        let mut down = Vec::new();
        let mut bad = Vec::new();
        let mut primary_standbys = None;
        let mut in_clear = Vec::new();
        for (name, c) in self.members() {
            let Ok(mut member) = c else {
                down.push(name);
                continue;
            };
            let c = member.client()?;
            let tls: bool = c
                .query_one(
                    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if !tls {
                in_clear.push(name.clone());
            }
            for (setting, want, why) in MEMBER_SETTINGS {
                let got: String = c
                    .query_one("SELECT current_setting($1)", &[&setting])
                    .map_err(pg)?
                    .get(0);
                if got != want {
                    bad.push(format!("{name}: {setting}={got} (needs {want}: {why})"));
                }
            }
            // A standby query whose snapshot conflicts with the WAL to
            // replay holds the replay back this long before the standby
            // cancels it; any vault's role can run one, and past the
            // purge's wait for a standby it fails every disposal.
            let delay = c
                .query_one(
                    "SELECT setting::int, current_setting(name) FROM pg_settings
                      WHERE name = 'max_standby_streaming_delay'",
                    &[],
                )
                .map_err(pg)?;
            let (delay_ms, shown): (i32, String) = (delay.get(0), delay.get(1));
            if !(0..=STANDBY_DELAY_CAP.as_millis() as i32).contains(&delay_ms) {
                bad.push(format!(
                    "{name}: max_standby_streaming_delay={shown} (needs 0 to {} s: a standby query \
                     conflicting with replay holds it back that long, and a purge waits {} s for a \
                     standby's replay)",
                    STANDBY_DELAY_CAP.as_secs(),
                    REPLAY_PATIENCE.as_secs()
                ));
            }
            let logical: i64 = c
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical') + (SELECT count(*) FROM pg_publication)",
                    &[],
                )
                .map_err(pg)?
                .get(0);
            if logical > 0 {
                bad.push(format!(
                    "{name}: {logical} logical replication slot(s) or publication(s): a copy of every change leaves the cluster"
                ));
            }
            if !in_recovery(c)? {
                let n = streaming_standbys(c)?;
                primary_standbys = Some((name.clone(), n));
            }
            reachable.push(name);
        }
        let ok_or_fail = |ok: bool| if ok { Level::Ok } else { Level::Fail };
        out.push((
            names.settings,
            ok_or_fail(bad.is_empty()),
            if bad.is_empty() {
                format!(
                    "every reachable member: {}; no logical slots or publications",
                    MEMBER_SETTINGS
                        .iter()
                        .map(|(s, v, _)| format!("{s}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                bad.join("; ")
            },
        ));
        let want = self.cfg.members.len() as i64 - 1;
        let members_ok =
            down.is_empty() && primary_standbys.as_ref().is_some_and(|(_, n)| *n == want);
        out.push((
            names.members,
            ok_or_fail(members_ok),
            match (&primary_standbys, down.is_empty()) {
                (Some((p, n)), true) => format!(
                    "{} member(s) reachable; primary {p} streams to {n} of {want} standby(s){}",
                    reachable.len(),
                    if *n == want {
                        ""
                    } else {
                        ": a disposal now cannot be verified on every member and waits"
                    }
                ),
                (_, false) => format!(
                    "unreachable: {}: a disposal now cannot be verified on every member and waits",
                    down.join(", ")
                ),
                (None, true) => "no member is the primary".into(),
            },
        ));
        // Keys in clear on loopback are only as private as this machine; a
        // member elsewhere is refused in clear (`PgConfig::validate`).
        out.push((
            names.tls,
            if in_clear.is_empty() { Level::Ok } else { Level::Warn },
            if in_clear.is_empty() {
                "every reachable member: TLS, its certificate verified against ca_file".to_owned()
            } else {
                format!(
                    "in clear to {} (loopback): set ca_file and ssl=on on the members, and reject vault roles without TLS in pg_hba.conf",
                    in_clear.join(", ")
                )
            },
        ));
        Ok(out)
    }
}

impl PgKeys {
    fn doctor_checks(&self) -> Result<Vec<(&'static str, crate::doctor::Level, String)>> {
        let mut out = self.conns.member_checks(&CheckNames {
            settings: "keystore-cluster-settings",
            members: "keystore-cluster-members",
            tls: "keystore-cluster-tls",
        })?;
        // One role per vault (`pivault vault create`): a role shared with
        // other vaults reads their wrapped keys and can delete them. Not
        // unsafe for this vault's records (the keys are wrapped), so a warning.
        let others = self
            .conns
            .with_primary(|c| super::provider::reachable_others(c, &self.schema))?;
        out.push((
            "keystore-cluster-isolation",
            if others.is_empty() { Level::Ok } else { Level::Warn },
            if others.is_empty() {
                format!("the vault's role {} reaches no other vault's keystore", self.conns.cfg.user)
            } else {
                format!(
                    "the vault's role {} also reaches {} other vault keystore(s): give each vault its own role (pivault vault create)",
                    self.conns.cfg.user,
                    others.len()
                )
            },
        ));
        Ok(out)
    }
}

/// Rows per page of a scan.
const SCAN_PAGE: usize = 1000;

impl PgKeys {
    fn get_row(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = match t {
            Table::Deks => format!(
                "SELECT v FROM {} WHERE bucket = $2 AND k = $1",
                self.table(t)
            ),
            _ => format!(
                "SELECT v FROM {} WHERE k = $1 AND $2::int IS NOT NULL",
                self.table(t)
            ),
        };
        let bucket = bucket_of_key(t, key);
        self.conns.with_primary(|c| {
            let st = c.prepared(&sql)?;
            Ok(c.query_opt(&st, &[&key, &bucket])
                .map_err(pg)?
                .map(|r| r.get(0)))
        })
    }

    fn write_rows(&self, ops: Vec<KeyOp>, _sync: bool) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // The last write of each row wins, as in a RocksDB batch.
        let mut last: std::collections::BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for op in ops {
            match op {
                KeyOp::Put(t, k, v) => last.insert((t as u8, k), Some(v)),
                KeyOp::Delete(t, k) => last.insert((t as u8, k), None),
            };
        }
        // Each table's deletes, then its upserts: one statement each.
        let mut steps: Vec<WriteStep> = Vec::new();
        for t in Table::ON_CLUSTER {
            let (mut put_b, mut put_k, mut put_v) = (Vec::new(), Vec::new(), Vec::new());
            let (mut del_b, mut del_k) = (Vec::new(), Vec::new());
            for ((tt, k), v) in &last {
                if *tt != t as u8 {
                    continue;
                }
                let b = bucket_of_key(t, k);
                match v {
                    Some(v) => {
                        put_b.push(b);
                        put_k.push(k.clone());
                        put_v.push(v.clone());
                    }
                    None => {
                        del_b.push(b);
                        del_k.push(k.clone());
                    }
                }
            }
            let name = self.table(t);
            // Each statement writes only under this process's lease
            // generation, and answers whether it was.
            let lease = format!(
                "WITH f AS (SELECT coalesce((SELECT generation = $4 FROM {}.lease), false) AS ok)",
                self.schema
            );
            if !del_k.is_empty() {
                let sql = if t == Table::Deks {
                    format!(
                        "{lease}, w AS (DELETE FROM {name} d USING unnest($1::int[], $2::bytea[]) AS x(b, k) WHERE d.bucket = x.b AND d.k = x.k AND $3::bytea[] IS NOT NULL AND (SELECT ok FROM f)) SELECT ok FROM f"
                    )
                } else {
                    format!(
                        "{lease}, w AS (DELETE FROM {name} WHERE k = ANY($2::bytea[]) AND $1::int[] IS NOT NULL AND $3::bytea[] IS NOT NULL AND (SELECT ok FROM f)) SELECT ok FROM f"
                    )
                };
                steps.push((sql, del_b, del_k, None));
            }
            if !put_k.is_empty() {
                let sql = if t == Table::Deks {
                    format!(
                        "{lease}, w AS (INSERT INTO {name} (bucket, k, v) SELECT * FROM unnest($1::int[], $2::bytea[], $3::bytea[]) WHERE (SELECT ok FROM f) ON CONFLICT (bucket, k) DO UPDATE SET v = EXCLUDED.v) SELECT ok FROM f"
                    )
                } else {
                    format!(
                        "{lease}, w AS (INSERT INTO {name} (k, v) SELECT k, v FROM unnest($2::bytea[], $3::bytea[]) AS x(k, v) WHERE $1::int[] IS NOT NULL AND (SELECT ok FROM f) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v) SELECT ok FROM f"
                    )
                };
                steps.push((sql, put_b, put_k, Some(put_v)));
            }
        }
        if self.lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::TakenOver);
        }
        // Every commit is synchronous (`synchronous_commit=on`, and with
        // Patroni's synchronous mode a standby has it too): `sync` is always
        // true here. One step (a record's new data key, the commonest
        // write) is one statement in its own commit: one round trip.
        // Several are one transaction: once its first statement holds its
        // table's lock, a fence waits for the commit, so either every step
        // sees this process's generation or the first one already does not.
        let generation = self.generation;
        let held = self.conns.with_primary(|c| {
            let prepared = steps
                .iter()
                .map(|(sql, ..)| c.prepared(sql))
                .collect::<Result<Vec<_>>>()?;
            if let [one] = steps.as_slice() {
                return run_step(&mut c.client, &prepared[0], one, generation);
            }
            let mut tx = c.transaction().map_err(pg)?;
            for (st, step) in prepared.iter().zip(&steps) {
                if !run_step(&mut tx, st, step, generation)? {
                    // Dropped uncommitted: rolled back.
                    return Ok(false);
                }
            }
            tx.commit().map_err(pg)?;
            Ok(true)
        })?;
        if held {
            Ok(())
        } else {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(Error::TakenOver)
        }
    }

    fn scan_page(
        &self,
        t: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let bucket = (t == Table::Deks && prefix.len() >= 4).then(|| bucket_of_key(t, prefix));
        // The start (the prefix, or past the page's last key), the prefix's
        // end and the DEK's bucket each in the SQL only when there is one
        // (no `$n IS NULL OR`): a generic plan (every pooled connection's)
        // then bounds the index scan and prunes the DEK table's partitions
        // as a custom plan does, instead of filtering every partition.
        let end = crate::store::postgres::prefix_end(prefix);
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
        let start = after.unwrap_or(prefix);
        params.push(&start);
        let mut conds = vec![format!("k {} $1", if after.is_some() { ">" } else { ">=" })];
        if let Some(e) = &end {
            params.push(e);
            conds.push(format!("k < ${}", params.len()));
        }
        if let Some(b) = &bucket {
            params.push(b);
            conds.push(format!("bucket = ${}", params.len()));
        }
        let sql = format!(
            "SELECT k, v FROM {} WHERE {} ORDER BY k LIMIT {SCAN_PAGE}",
            self.table(t),
            conds.join(" AND ")
        );
        self.conns.with_primary(|c| {
            let st = c.prepared(&sql)?;
            Ok(c.query(&st, &params)
                .map_err(pg)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }
}

/// One statement of a keystore write: its SQL, and the buckets, keys and
/// (for an upsert) values it takes.
type WriteStep = (String, Vec<i32>, Vec<Vec<u8>>, Option<Vec<Vec<u8>>>);

/// Runs one step under `generation`: whether it was still the lease's.
fn run_step<C: postgres::GenericClient>(
    c: &mut C,
    st: &Statement,
    step: &WriteStep,
    generation: i64,
) -> Result<bool> {
    let (_, b, k, v) = step;
    let v = v.as_ref().map_or_else(Vec::new, Clone::clone);
    c.query_one(st, &[b, k, &v, &generation])
        .map(|r| r.get(0))
        .map_err(pg)
}

/// The bucket column of a data-key row (its name's first 4 bytes); 0 in
/// the other tables, which have no such column.
fn bucket_of_key(t: Table, k: &[u8]) -> i32 {
    if t == Table::Deks && k.len() >= 4 {
        u32::from_be_bytes(k[..4].try_into().expect("4 bytes")) as i32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Many callers at once: never more than [`WORKING_CONNECTIONS`] inside,
    /// every caller gets in, and the places all come back.
    #[test]
    fn the_gate_lets_at_most_the_working_connections_in_at_once() {
        let gate = Gate::default();
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 * WORKING_CONNECTIONS {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _place = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 4 * WORKING_CONNECTIONS);
        let most = most.load(Ordering::SeqCst);
        assert!(most <= WORKING_CONNECTIONS, "{most} inside at once");
        assert!(most > 1, "the callers never overlapped: {most}");
        assert_eq!(*gate.busy.lock().unwrap(), 0);
    }
}

#[cfg(test)]
mod failover_tests {
    use super::*;

    /// A statement is run again on the new primary when its connection
    /// reached a standby or was ended by its server going down; not for
    /// any other error (a refused write is not retried).
    #[test]
    fn a_statement_is_run_again_only_when_its_connection_left_the_primary() {
        for m in [
            "keystore cluster: cannot execute INSERT in a read-only transaction (25006)",
            "keystore cluster: terminating connection due to unexpected postmaster exit (57P01)",
            "keystore cluster: terminating connection due to administrator command (57P01)",
            "keystore cluster: the database system is shutting down (57P03)",
        ] {
            assert!(left_the_primary(&Error::Storage(m.into())), "{m}");
        }
        for m in [
            "keystore cluster: duplicate key value violates unique constraint (23505)",
            "keystore cluster: the vault was taken over (PVTKO)",
        ] {
            assert!(!left_the_primary(&Error::Storage(m.into())), "{m}");
        }
        assert!(!left_the_primary(&Error::TakenOver));
    }
}
