//! The keystore on a PostgreSQL/Patroni cluster (issue 16), against raw
//! PostgreSQL with the same client in the same run, and against the
//! embedded engine (plain `main`: a cluster set-up per run, few repetitions).
//!
//! Needs the cluster `scripts/cluster.sh start` brings up, and its
//! environment (`source "$(scripts/cluster.sh env)"`).
//!
//! * `put` / `get`: `Vault::put_record` / `get_record` (masked) of ~200-byte
//!   bodies, one at a time, on a cluster-keystore vault and on an embedded
//!   one; the raw baseline is one `INSERT` (autocommit, a 24-byte key and a
//!   61-byte value, what a vault put writes to the keystore) and one
//!   `SELECT` by key, each prepared once, through the same `postgres`
//!   client, in a scratch table of the keystore database; a vault with its
//!   keys and its records on the cluster too. `PIVAULT_BENCH_CLUSTER_OPS`
//!   (default 500) each, in rounds of 25 alternating between the paths;
//!   the ratio is the median over the rounds. A second baseline does the
//!   round trips and commits of the keys + records vault raw (`RawTrips`).
//!   `PIVAULT_BENCH_RECORDS_MEMBERS` (with `..._PASSWORD_FILE` and
//!   `..._CA_FILE`) puts that vault's records on a second cluster.
//! * clients at once: for each T in `PIVAULT_BENCH_CLUSTER_CLIENTS`
//!   (default `4`; empty skips), T threads put then get
//!   `PIVAULT_BENCH_CLUSTER_OPS` records in all on the keys + records vault,
//!   against T threads of raw `INSERT`/`SELECT`, each on its own
//!   connection, alternating `PIVAULT_BENCH_CLUSTER_CLIENT_REPS` (default 3)
//!   times; the ratio is the median over the repetitions.
//! * one-record disposal on the cluster vault at each size in
//!   `PIVAULT_BENCH_CLUSTER_SIZES` (records; default `2000`): median and
//!   max of `PIVAULT_BENCH_CLUSTER_REPS` (default 5), end to end (purge on
//!   every member, scan of every member's files, certificate). The vault is
//!   filled by `PIVAULT_BENCH_CLUSTER_FILL_THREADS` writers (default 4).
//!   After each fill, one disposal is timed alone (on a cluster it splits
//!   a search-index partition past the split size) and maintenance is run
//!   (it splits the others) before the timed ones.
//!   The vault with its records on the cluster too (searchable fields) is
//!   timed at `PIVAULT_BENCH_CLUSTER_RECORDS_SIZES` (default: the same
//!   sizes; it fills about 4× slower, so a 10^6 run may leave it out).
//! * whole-vault deletion (`vault delete`) of a fresh vault with its keys
//!   and records on the cluster at each size in
//!   `PIVAULT_BENCH_CLUSTER_DELETE_SIZES` (default `2000`; empty skips),
//!   against a one-record disposal of the same vault just before (median
//!   of 3).
//! * many vaults: the same puts and gets spread round-robin over V vaults
//!   open in one process, for each V in `PIVAULT_BENCH_CLUSTER_VAULTS`
//!   (default `1,10`), against V = 1 in the same run, with the number of
//!   connections the vaults hold on the primary, within the process's
//!   budget `PIVAULT_BENCH_CLUSTER_CONNECTIONS` (default the library's, 40).
//!   The vaults are made by `PIVAULT_BENCH_CLUSTER_FILL_THREADS` threads.
//!   With `PIVAULT_BENCH_CLUSTER_PROCESSES` = P > 1, each V is spread over
//!   P processes of this binary running at once (V/P vaults each; rates
//!   summed), compared with the first V listed (e.g. `2,100,1000` with
//!   P = 2: one vault per process first).
//!
//! Run: `cargo bench --workspace --no-run --profile dev`, then the binary
//! `target/debug/deps/cluster-*` with `--bench` (dependencies are built at
//! opt-level 3 in the dev profile).

#[allow(dead_code)]
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_core::ids::SubjectId;
use vault_core::keystore::postgres::PgConfig;
use vault_core::secret::SecretString;
use vault_core::vault::{Context, DisposalParties, DisposalRequest, DisposalScope};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn body(i: u64) -> Value {
    Value::Object(common::body_with_padding(i, 0))
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// One path measured: its `i`-th put, and later its `i`-th get.
trait Measured {
    fn put(&mut self, i: u64);
    fn get(&mut self, i: u64);
}

/// Raw PostgreSQL: autocommit INSERTs and SELECTs by key of keystore-shaped
/// rows, over a connection made as the engine makes its own (TLS when the
/// cluster's CA is set, as `scripts/cluster.sh` sets it), each statement
/// prepared once, as the engines prepare theirs once per connection: one
/// round trip per operation on both sides.
struct Raw {
    c: postgres::Client,
    insert: postgres::Statement,
    select: postgres::Statement,
    keys: Vec<Vec<u8>>,
    value: Vec<u8>,
}

impl Raw {
    /// `n` keys for rows of `value_len` bytes in scratch table `table` of
    /// `cfg`'s database, on its primary.
    fn new(cfg: &PgConfig, n: u64, table: &str, value_len: usize) -> Raw {
        let mut primary = None;
        for m in &cfg.members {
            let mut c = vault_core::keystore::postgres::connect_member(cfg, m).expect("connect");
            let standby: bool = c
                .query_one("SELECT pg_is_in_recovery()", &[])
                .expect("role")
                .get(0);
            if !standby {
                primary = Some(c);
                break;
            }
        }
        let mut c = primary.expect("a primary");
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS pivault_bench;
             DROP TABLE IF EXISTS pivault_bench.{table};
             CREATE TABLE pivault_bench.{table} (k bytea PRIMARY KEY, v bytea NOT NULL);"
        ))
        .expect("scratch table");
        let keys = (0..n)
            .map(|i| {
                let mut k = vec![0u8; 24];
                k[..8].copy_from_slice(&i.to_be_bytes());
                k[8..24].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
                k
            })
            .collect();
        let insert = c
            .prepare(&format!(
                "INSERT INTO pivault_bench.{table} (k, v) VALUES ($1, $2)"
            ))
            .expect("prepare insert");
        let select = c
            .prepare(&format!("SELECT v FROM pivault_bench.{table} WHERE k = $1"))
            .expect("prepare select");
        Raw {
            c,
            insert,
            select,
            keys,
            value: vec![0x5au8; value_len],
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.c.batch_execute("DROP SCHEMA pivault_bench CASCADE");
    }
}

impl Measured for Raw {
    fn put(&mut self, i: u64) {
        let k = &self.keys[i as usize];
        self.c
            .execute(&self.insert, &[k, &self.value])
            .expect("insert");
    }

    fn get(&mut self, i: u64) {
        let k = &self.keys[i as usize];
        let r = self.c.query_one(&self.select, &[k]).expect("select");
        std::hint::black_box(r.get::<_, Vec<u8>>(0));
    }
}

/// Raw PostgreSQL making the round trips and commits of a vault with its
/// keys and records on the cluster, and nothing else: a put's key
/// (keystore database, 61 bytes) and row (records database, 300 bytes)
/// inserted at once, each a synchronous commit, then an audit line (350
/// bytes) with a lazy commit; a get's row, then its key (the key's bucket
/// comes from the row), then the audit line. Against it, what the vault's
/// own work costs; against [`Raw`], what the design's round trips cost.
struct RawTrips {
    keys: Raw,
    rows: Raw,
    audit: Raw,
    n: u64,
}

impl RawTrips {
    fn new(keys: &PgConfig, records: &PgConfig, n: u64) -> RawTrips {
        let mut audit = Raw::new(records, 2 * n, "trip_audit", 350);
        audit
            .c
            .batch_execute("SET synchronous_commit = off")
            .expect("lazy commits");
        RawTrips {
            keys: Raw::new(keys, n, "trip_keys", 61),
            rows: Raw::new(records, n, "trip_rows", 300),
            audit,
            n,
        }
    }
}

impl Measured for RawTrips {
    fn put(&mut self, i: u64) {
        let (keys, rows) = (&mut self.keys, &mut self.rows);
        std::thread::scope(|sc| {
            sc.spawn(|| keys.put(i));
            rows.put(i);
        });
        self.audit.put(i);
    }

    fn get(&mut self, i: u64) {
        self.rows.get(i);
        self.keys.get(i);
        self.audit.put(self.n + i);
    }
}

/// `Vault::put_record` and `get_record` (masked) through a fixture vault.
struct VaultPath<'a> {
    fx: &'a common::Fixture,
    ids: Vec<vault_core::ids::RecordId>,
}

impl Measured for VaultPath<'_> {
    fn put(&mut self, i: u64) {
        let id = self
            .fx
            .vault
            .put_record(
                &self.fx.clerk,
                common::COLLECTION,
                SubjectId::new(),
                &body(i),
            )
            .expect("put");
        self.ids.push(id);
    }

    fn get(&mut self, i: u64) {
        let id = self.ids[i as usize];
        std::hint::black_box(
            self.fx
                .vault
                .get_record(&self.fx.clerk, id, &[], None)
                .expect("get"),
        );
    }
}

/// Operations per path before the next path takes its turn.
const ROUND: u64 = 25;

/// What [`interleaved`] measured of one path.
struct Rates {
    put: f64,
    get: f64,
    /// Median over the rounds of the first path's time over this path's
    /// (this path's rate as a fraction of the first's), for puts and gets.
    put_ratio: f64,
    get_ratio: f64,
}

/// Each path's rates: `n` puts, then `n` gets, taken in rounds of [`ROUND`]
/// operations that alternate between the paths, so that a checkpoint, an
/// autovacuum or a busy neighbour hits every path alike; the ratios are
/// medians over the rounds, so that one slow round (a commit waiting on a
/// standby's checkpoint) does not decide them. Measured one path after the
/// other, the put ratio ranged 0.2–0.4 from run to run on this machine.
fn interleaved(paths: &mut [&mut dyn Measured], n: u64) -> Vec<Rates> {
    let mut rounds: [Vec<Vec<Duration>>; 2] = [vec![], vec![]];
    for (op, per_round) in rounds.iter_mut().enumerate() {
        let mut from = 0;
        while from < n {
            let to = (from + ROUND).min(n);
            let mut spent = Vec::with_capacity(paths.len());
            for p in paths.iter_mut() {
                let t = Instant::now();
                for i in from..to {
                    if op == 0 {
                        p.put(i);
                    } else {
                        p.get(i);
                    }
                }
                spent.push(t.elapsed());
            }
            per_round.push(spent);
            from = to;
        }
    }
    let total = |op: usize, p: usize| per_s(n, rounds[op].iter().map(|r| r[p]).sum());
    let median_ratio = |op: usize, p: usize| {
        let mut r: Vec<f64> = rounds[op]
            .iter()
            .map(|r| r[0].as_secs_f64() / r[p].as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    (0..paths.len())
        .map(|p| Rates {
            put: total(0, p),
            get: total(1, p),
            put_ratio: median_ratio(0, p),
            get_ratio: median_ratio(1, p),
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` runs bench binaries without --bench.
    }
    let cfg = common::cluster_config();
    if let Ok(v) = std::env::var("PIVAULT_BENCH_CLUSTER_WORKER") {
        worker(
            &cfg,
            v.parse()
                .expect("PIVAULT_BENCH_CLUSTER_WORKER: a number of vaults"),
        );
        return;
    }
    let n = env_u64("PIVAULT_BENCH_CLUSTER_OPS", 500);
    let reps = env_u64("PIVAULT_BENCH_CLUSTER_REPS", 5);
    let fill_threads = env_u64("PIVAULT_BENCH_CLUSTER_FILL_THREADS", 4);
    let sizes: Vec<u64> = std::env::var("PIVAULT_BENCH_CLUSTER_SIZES")
        .unwrap_or_else(|_| "2000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();

    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = common::fixture_on(&tmp.path().join("cluster"), Some(cfg.clone()));
    let embedded = common::fixture(&tmp.path().join("embedded"));
    // Keys and records on the cluster (`--records-cluster`): the records
    // database of the same cluster, or with `PIVAULT_BENCH_RECORDS_MEMBERS`
    // (and `PIVAULT_BENCH_RECORDS_PASSWORD_FILE`, `PIVAULT_BENCH_RECORDS_CA_FILE`)
    // of a second cluster, as production keeps them.
    let records = match std::env::var("PIVAULT_BENCH_RECORDS_MEMBERS") {
        Ok(members) => PgConfig {
            database: "pivault_records".into(),
            members: members.split(',').map(str::to_owned).collect(),
            password_file: std::env::var("PIVAULT_BENCH_RECORDS_PASSWORD_FILE")
                .expect("PIVAULT_BENCH_RECORDS_PASSWORD_FILE")
                .into(),
            ca_file: std::env::var_os("PIVAULT_BENCH_RECORDS_CA_FILE").map(Into::into),
            ..cfg.clone()
        },
        Err(_) => PgConfig {
            database: "pivault_records".into(),
            ..cfg.clone()
        },
    };
    let both = common::fixture_on_clusters(
        &tmp.path().join("both"),
        Some(cfg.clone()),
        Some(records.clone()),
    );
    let rates = {
        let mut raw = Raw::new(&cfg, n, "raw", 61);
        let mut trips = RawTrips::new(&cfg, &records, n);
        let mut c = VaultPath {
            fx: &cluster,
            ids: Vec::new(),
        };
        let mut e = VaultPath {
            fx: &embedded,
            ids: Vec::new(),
        };
        let mut b = VaultPath {
            fx: &both,
            ids: Vec::new(),
        };
        interleaved(&mut [&mut raw, &mut c, &mut e, &mut b, &mut trips], n)
    };
    let [raw, c, e, b, t] = &rates[..] else {
        unreachable!("five paths")
    };
    drop(embedded);
    println!(
        "## keystore on a 3-member Patroni cluster: {n} operations each, one at a time, in rounds of {ROUND} alternating between the paths"
    );
    println!("(ratio: the median over the rounds of the vault's rate over raw PostgreSQL's)");
    println!(
        "| op | raw PostgreSQL /s | vault, cluster keystore /s | ratio | vault, embedded /s | cluster / embedded |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| put | {:.0} | {:.0} | {:.2} | {:.0} | {:.3} |",
        raw.put,
        c.put,
        c.put_ratio,
        e.put,
        c.put / e.put
    );
    println!(
        "| get | {:.0} | {:.0} | {:.2} | {:.0} | {:.3} |",
        raw.get,
        c.get,
        c.get_ratio,
        e.get,
        c.get / e.get
    );
    println!();
    println!(
        "## keystore and records on the cluster: {n} operations each, one at a time, same rounds"
    );
    println!(
        "(raw, the same trips: the vault's round trips and commits without its work, see `RawTrips`)"
    );
    println!(
        "| op | raw PostgreSQL /s | vault, keys + records on the cluster /s | ratio | raw, the same trips /s | its ratio to raw | vault's ratio to it | cluster keystore only / s | vault, embedded /s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| put | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
        raw.put,
        b.put,
        b.put_ratio,
        t.put,
        t.put_ratio,
        b.put / t.put,
        c.put,
        e.put
    );
    println!(
        "| get | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
        raw.get,
        b.get,
        b.get_ratio,
        t.get,
        t.get_ratio,
        b.get / t.get,
        c.get,
        e.get
    );

    // Clients at once: T threads on the keys + records vault against T
    // connections of raw PostgreSQL, as a server's clerks and scripts use it.
    let clients: Vec<u64> = std::env::var("PIVAULT_BENCH_CLUSTER_CLIENTS")
        .unwrap_or_else(|_| "4".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|&t| t > 0)
        .collect();
    if !clients.is_empty() {
        let reps = env_u64("PIVAULT_BENCH_CLUSTER_CLIENT_REPS", 3).max(1);
        println!();
        println!(
            "## keys and records on the cluster, T clients at once: {n} operations per repetition, {reps} repetitions alternating raw and vault"
        );
        println!(
            "(ratio: the median over the repetitions of the vault's rate over raw PostgreSQL's with T connections)"
        );
        println!(
            "| clients | raw INSERT /s | put /s | put ratio | raw SELECT /s | get /s | get ratio |"
        );
        println!("|---|---|---|---|---|---|---|");
        for t in clients {
            at_once(&both, &cfg, t, n, reps);
        }
    }

    // One-record disposals at growing vault sizes: the keystore-only vault,
    // then the keys + records vault with two searchable fields (each record
    // then has blind-index rows on the records cluster that its disposal
    // purges from every member).
    println!();
    println!("## one-record disposal on the cluster keystore ({reps} each)");
    disposals(&cluster, common::COLLECTION, &sizes, reps, fill_threads, n);
    searched_collection(&both);
    println!();
    println!(
        "## one-record disposal, keys and records on the cluster, family name and SSN searchable ({reps} each)"
    );
    let records_sizes: Vec<u64> = match std::env::var("PIVAULT_BENCH_CLUSTER_RECORDS_SIZES") {
        Ok(v) => v
            .split(',')
            .filter_map(|v| v.trim().replace('_', "").parse().ok())
            .collect(),
        Err(_) => sizes.clone(),
    };
    disposals(&both, SEARCHED, &records_sizes, reps, fill_threads, 0);
    drop(both);

    let delete_sizes: Vec<u64> = std::env::var("PIVAULT_BENCH_CLUSTER_DELETE_SIZES")
        .unwrap_or_else(|_| "2000".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    if !delete_sizes.is_empty() {
        deletions(tmp.path(), &cfg, &records, &delete_sizes, fill_threads);
    }

    // Many vaults in one process on one cluster: puts and gets spread
    // round-robin over V vaults, against V = 1 in the same run, within the
    // process's connection budget.
    let counts: Vec<u64> = std::env::var("PIVAULT_BENCH_CLUSTER_VAULTS")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect();
    let budget = env_u64(
        "PIVAULT_BENCH_CLUSTER_CONNECTIONS",
        vault_core::keystore::postgres::DEFAULT_CLUSTER_CONNECTIONS as u64,
    );
    vault_core::keystore::postgres::set_cluster_connections(budget as usize);
    let makers = env_u64("PIVAULT_BENCH_CLUSTER_FILL_THREADS", 4).max(1);
    drop(cluster);
    let processes = env_u64("PIVAULT_BENCH_CLUSTER_PROCESSES", 1).max(1);
    if processes > 1 {
        many_processes(&counts, processes, n, budget);
        return;
    }
    println!();
    println!(
        "## {n} puts then {n} gets spread round-robin over V vaults on the cluster (one process, \
         a budget of {budget} connections to the primary)"
    );
    println!(
        "| vaults | created in | put /s | get /s | put vs 1 vault | get vs 1 vault | put, {HOT} busy of V, vs 1 vault | get, {HOT} busy of V, vs 1 vault | connections |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut one = None;
    for v in counts {
        let t = Instant::now();
        let (vaults, _dir) = match make_vaults(&cfg, v, makers) {
            Ok(made) => made,
            Err(e) => {
                println!(
                    "| {v} | — | — | — | — | — | — | — | creating the vaults failed: {} |",
                    e.lines().next().unwrap_or("")
                );
                continue;
            }
        };
        let created = t.elapsed().as_secs_f64();
        eprintln!(
            "{v} vaults created in {created:.1} s; {} files open in this process",
            std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
        );
        // Every vault in turn (each switch likely needs a connection taken
        // over from another vault once V passes the budget), then only the
        // first HOT of them, the others open and idle.
        let (put, get) = spread(&vaults, v, n);
        let conns = backends(&cfg);
        let hot = HOT.min(v);
        let (hot_put, hot_get) = spread(&vaults, hot, n);
        let (p1, g1) = *one.get_or_insert((put, get));
        println!(
            "| {v} | {created:.0} s | {put:.0} | {get:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {conns} |",
            put / p1,
            get / g1,
            hot_put / p1,
            hot_get / g1,
        );
        drop(vaults);
    }
}

/// `v` fixture vaults with their keystores on the cluster, made by
/// `makers` threads at once (each vault is a schema of 20-odd tables on the
/// cluster and a RocksDB directory here), in the returned directory.
fn make_vaults(
    cfg: &PgConfig,
    v: u64,
    makers: u64,
) -> Result<(Vec<common::Fixture>, tempfile::TempDir), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let next = std::sync::atomic::AtomicU64::new(0);
    let made: Result<Vec<(u64, common::Fixture)>, String> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..makers.min(v))
            .map(|_| {
                sc.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= v {
                            return Ok::<_, String>(mine);
                        }
                        let fx = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            common::fixture_on(&dir.path().join(format!("v{i}")), Some(cfg.clone()))
                        }))
                        .map_err(|e| {
                            e.downcast_ref::<String>()
                                .cloned()
                                .unwrap_or_else(|| "vault creation failed".into())
                        })?;
                        mine.push((i, fx));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().expect("maker thread")?);
        }
        Ok(all)
    });
    let mut made = made?;
    made.sort_by_key(|(i, _)| *i);
    Ok((made.into_iter().map(|(_, fx)| fx).collect(), dir))
}

/// One process of [`many_processes`]: makes its `v` vaults, says `READY`,
/// waits for a line on stdin (every process then starts at once), runs
/// both patterns of `spread` and says `RESULT` with the rates and the
/// role's connections on the primary.
fn worker(cfg: &PgConfig, v: u64) {
    let n = env_u64("PIVAULT_BENCH_CLUSTER_OPS", 500);
    let makers = env_u64("PIVAULT_BENCH_CLUSTER_FILL_THREADS", 4).max(1);
    vault_core::keystore::postgres::set_cluster_connections(env_u64(
        "PIVAULT_BENCH_CLUSTER_CONNECTIONS",
        vault_core::keystore::postgres::DEFAULT_CLUSTER_CONNECTIONS as u64,
    ) as usize);
    let t = Instant::now();
    let (vaults, _dir) = match make_vaults(cfg, v, makers) {
        Ok(made) => made,
        Err(e) => {
            println!("FAILED {}", e.lines().next().unwrap_or(""));
            return;
        }
    };
    println!("READY {:.1}", t.elapsed().as_secs_f64());
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go");
    let (put, get) = spread(&vaults, v, n);
    let (hot_put, hot_get) = spread(&vaults, HOT.min(v), n);
    println!("RESULT {put} {get} {hot_put} {hot_get} {}", backends(cfg));
    // Closed before their directory goes.
    drop(vaults);
}

/// The many-vaults benchmark over `processes` processes at once (one
/// process cannot hold 1,000 vaults here: its open files or, with the
/// records on the cluster, its connections): each makes its share of V
/// vaults and runs the same operations at the same moment; the rates are
/// summed, and compared with the first row (its V the baseline, e.g. one
/// vault per process) of the same run.
fn many_processes(counts: &[u64], processes: u64, n: u64, budget: u64) {
    use std::io::{BufRead, Write};
    println!();
    println!(
        "## {n} puts then {n} gets in each of {processes} processes at once, spread round-robin over its share of V vaults (a budget of {budget} connections to the primary per process)"
    );
    println!(
        "| vaults | per process | created in | put /s (sum) | get /s (sum) | put vs first row | get vs first row | put, {HOT} busy per process, vs first row | get, {HOT} busy, vs first row | connections |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("this benchmark's binary");
    let mut first = None;
    for &v in counts {
        let share = (v / processes).max(1);
        let t = Instant::now();
        let mut children: Vec<_> = (0..processes)
            .map(|_| {
                let mut c = std::process::Command::new(&exe)
                    .arg("--bench")
                    .env("PIVAULT_BENCH_CLUSTER_WORKER", share.to_string())
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("a worker process");
                let out = std::io::BufReader::new(c.stdout.take().expect("stdout"));
                (c, out.lines())
            })
            .collect();
        let mut failed = None;
        for (_, lines) in &mut children {
            let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            if !line.starts_with("READY") {
                failed = Some(line);
            }
        }
        if let Some(why) = failed {
            println!("| {v} | {share} | — | — | — | — | — | — | — | a worker failed: {why} |");
            for (c, _) in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            continue;
        }
        let created = t.elapsed().as_secs_f64();
        for (c, _) in &mut children {
            writeln!(c.stdin.as_mut().expect("stdin"), "go").expect("start a worker");
        }
        let mut sum = [0f64; 4];
        let mut conns = 0i64;
        for (c, lines) in &mut children {
            let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let f: Vec<f64> = line
                .strip_prefix("RESULT ")
                .unwrap_or_else(|| panic!("a worker's result: {line:?}"))
                .split(' ')
                .map(|x| x.parse().expect("a number"))
                .collect();
            for (s, x) in sum.iter_mut().zip(&f) {
                *s += x;
            }
            conns = conns.max(f[4] as i64);
            c.wait().expect("worker exit");
        }
        let [put, get, hot_put, hot_get] = sum;
        let (p1, g1) = *first.get_or_insert((put, get));
        println!(
            "| {v} | {share} | {created:.0} s | {put:.0} | {get:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {conns} |",
            put / p1,
            get / g1,
            hot_put / p1,
            hot_get / g1,
        );
    }
}

/// The keys + records vault's collection with searchable fields.
const SEARCHED: &str = "searched_customers";

/// Fills `fx`'s `collection` to each of `sizes` records (it holds `have`
/// there now) and times `reps` one-record disposals at each.
fn disposals(
    fx: &common::Fixture,
    collection: &str,
    sizes: &[u64],
    reps: u64,
    fill_threads: u64,
    mut have: u64,
) {
    let officer = common::officer(&fx.vault);
    let dispose = |id| {
        fx.vault
            .dispose(
                &officer,
                &DisposalRequest {
                    scope: DisposalScope::Record(id),
                    parties: DisposalParties::default(),
                    dry_run: false,
                },
            )
            .expect("dispose")
    };
    println!("| records in the vault | median ms | max ms |");
    println!("|---|---|---|");
    for &size in sizes {
        // Filled by several writers at once (one put commits at a time per
        // writer; the cluster groups their commits).
        if have < size {
            let t = Instant::now();
            let next = std::sync::atomic::AtomicU64::new(have);
            std::thread::scope(|sc| {
                for _ in 0..fill_threads {
                    sc.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= size {
                                break;
                            }
                            fx.vault
                                .put_record(&fx.clerk, collection, SubjectId::new(), &body(i))
                                .expect("fill");
                        }
                    });
                }
            });
            eprintln!(
                "filled {} records in {:.0} s ({fill_threads} writers)",
                size - have,
                t.elapsed().as_secs_f64()
            );
            have = size;
            // The first disposal after the fill: on a cluster, a search-index
            // partition past the split size is split by its purge. Then
            // maintenance splits the others, as the server's schedule does,
            // and the disposals timed below rewrite small partitions.
            let id = fx
                .vault
                .put_record(&fx.clerk, collection, SubjectId::new(), &body(have))
                .expect("put");
            let t = Instant::now();
            dispose(id);
            eprintln!(
                "first disposal after the fill: {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
            let t = Instant::now();
            let report = fx.vault.run_maintenance(&officer).expect("maintenance");
            eprintln!(
                "maintenance: {} search-index partition(s) split in {:.1} s",
                report.search_partitions_split,
                t.elapsed().as_secs_f64()
            );
        }
        let mut times = Vec::new();
        for _ in 0..reps {
            let id = fx
                .vault
                .put_record(&fx.clerk, collection, SubjectId::new(), &body(have))
                .expect("put");
            let t = Instant::now();
            dispose(id);
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "| {size} | {:.0} | {:.0} |",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}

/// Makes the [`SEARCHED`] collection (family name and SSN searchable) in
/// `fx`'s vault; the admin's session.
fn searched_collection(fx: &common::Fixture) -> vault_core::vault::Session {
    let admin = fx
        .vault
        .login(
            common::ADMIN.0,
            &SecretString::from(common::ADMIN.1),
            Context::cli(),
        )
        .expect("admin login");
    let mut searched = common::schema();
    searched
        .set_searchable(vec!["family_name".into(), "ssn".into()])
        .expect("searchable fields");
    fx.vault
        .create_collection(&admin, SEARCHED, &searched)
        .expect("searchable collection");
    admin
}

/// Whole-vault deletion (`pivault vault delete`) of a vault with its keys
/// and records on the cluster, at each size, against a one-record disposal
/// (median of 3) of the same vault just before, in the same run.
fn deletions(
    dir: &std::path::Path,
    cfg: &PgConfig,
    records: &PgConfig,
    sizes: &[u64],
    fill_threads: u64,
) {
    println!(
        "## whole-vault deletion against a one-record disposal of the same vault, keys and records on the cluster"
    );
    println!(
        "| records in the vault | one-record disposal, median ms | vault delete ms | ratio | keystore drop and rounds ms | files scanned |"
    );
    println!("|---|---|---|---|---|---|");
    for (k, &size) in sizes.iter().enumerate() {
        let fx = common::fixture_on_clusters(
            &dir.join(format!("deleted-{k}")),
            Some(cfg.clone()),
            Some(records.clone()),
        );
        let admin = searched_collection(&fx);
        let validator_pw = SecretString::from("Vx4&bench-validator-pass");
        fx.vault
            .add_user(
                &admin,
                "vera",
                &validator_pw,
                vault_core::access::Role::Auditor,
                false,
            )
            .expect("validator");
        let next = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|sc| {
            for _ in 0..fill_threads {
                sc.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= size {
                            break;
                        }
                        fx.vault
                            .put_record(&fx.clerk, SEARCHED, SubjectId::new(), &body(i))
                            .expect("fill");
                    }
                });
            }
        });
        let officer = fx
            .vault
            .login(
                common::OFFICER.0,
                &SecretString::from(common::OFFICER.1),
                Context::cli(),
            )
            .expect("officer login");
        let mut times = Vec::new();
        for i in 0..3 {
            let id = fx
                .vault
                .put_record(&fx.clerk, SEARCHED, SubjectId::new(), &body(size + i))
                .expect("put");
            let t = Instant::now();
            fx.vault
                .dispose(
                    &officer,
                    &DisposalRequest {
                        scope: DisposalScope::Record(id),
                        parties: DisposalParties::default(),
                        dry_run: false,
                    },
                )
                .expect("dispose");
            times.push(t.elapsed());
        }
        times.sort();
        let one = times[1];
        let vera = fx
            .vault
            .login("vera", &validator_pw, Context::cli())
            .expect("validator login");
        let common::Fixture { vault, .. } = fx;
        let id = vault.id();
        let t = Instant::now();
        let done = vault
            .delete_vault(
                &officer,
                &vera,
                id,
                &vault_core::vault::DeletionParties::default(),
            )
            .expect("vault delete");
        let whole = t.elapsed();
        let d = &done.certificate.body["sanitization"]["details"];
        println!(
            "| {size} | {:.0} | {:.0} | {:.1} | {} | {} |",
            one.as_secs_f64() * 1e3,
            whole.as_secs_f64() * 1e3,
            whole.as_secs_f64() / one.as_secs_f64(),
            d["keystore_purge"]["duration_ms"],
            done.certificate.body["sanitization"]["verification"]["byte_scan"],
        );
        done.remove_directory().expect("remove");
    }
}

/// `n` puts then `n` gets by `t` threads at once, raw (each thread its own
/// connection and scratch table) and through the vault `fx`, alternating
/// `reps` times; prints the rates of the last repetition and the median
/// ratios.
fn at_once(fx: &common::Fixture, cfg: &PgConfig, t: u64, n: u64, reps: u64) {
    let per = (n / t).max(1);
    let mut raws: Vec<Raw> = (0..t)
        .map(|c| Raw::new(cfg, per * reps, &format!("at_once_{c}"), 61))
        .collect();
    // Each phase: the seconds `t` threads took for `per` operations each.
    fn timed(t: u64, work: impl Fn(u64) + Sync) -> Duration {
        let start = Instant::now();
        std::thread::scope(|sc| {
            for c in 0..t {
                let work = &work;
                sc.spawn(move || work(c));
            }
        });
        start.elapsed()
    }
    let total = per * t;
    let mut rates: Vec<[f64; 4]> = Vec::new();
    for rep in 0..reps {
        let from = rep * per;
        // Each raw thread's operations `from..from + per` on its own connection.
        let raw = |raws: &mut Vec<Raw>, op: fn(&mut Raw, u64)| {
            let start = Instant::now();
            std::thread::scope(|sc| {
                for r in raws.iter_mut() {
                    sc.spawn(move || (from..from + per).for_each(|i| op(r, i)));
                }
            });
            start.elapsed()
        };
        let raw_put = raw(&mut raws, <Raw as Measured>::put);
        let ids: Vec<Mutex<Vec<vault_core::ids::RecordId>>> =
            (0..t).map(|_| Mutex::new(Vec::new())).collect();
        let put = timed(t, |c| {
            let mine: Vec<_> = (0..per)
                .map(|i| {
                    fx.vault
                        .put_record(&fx.clerk, common::COLLECTION, SubjectId::new(), &body(i))
                        .expect("put")
                })
                .collect();
            *ids[c as usize].lock().expect("ids") = mine;
        });
        let raw_get = raw(&mut raws, <Raw as Measured>::get);
        let get = timed(t, |c| {
            for id in ids[c as usize].lock().expect("ids").iter() {
                std::hint::black_box(fx.vault.get_record(&fx.clerk, *id, &[], None).expect("get"));
            }
        });
        rates.push([
            per_s(total, raw_put),
            per_s(total, put),
            per_s(total, raw_get),
            per_s(total, get),
        ]);
    }
    let median = |f: &dyn Fn(&[f64; 4]) -> f64| {
        let mut v: Vec<f64> = rates.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let last = rates.last().expect("a repetition");
    println!(
        "| {t} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
        last[0],
        last[1],
        median(&|r| r[1] / r[0]),
        last[2],
        last[3],
        median(&|r| r[3] / r[2]),
    );
}

/// Vaults busy at once in the many-vaults benchmark's second pattern.
const HOT: u64 = 20;

/// `n` puts, then a get of each, spread round-robin over the first `v` of
/// `vaults`: (puts /s, gets /s).
fn spread(vaults: &[common::Fixture], v: u64, n: u64) -> (f64, f64) {
    let t = Instant::now();
    let ids: Vec<_> = (0..n)
        .map(|i| {
            let fx = &vaults[(i % v) as usize];
            (
                fx,
                fx.vault
                    .put_record(&fx.clerk, common::COLLECTION, SubjectId::new(), &body(i))
                    .expect("put"),
            )
        })
        .collect();
    let put = per_s(n, t.elapsed());
    let t = Instant::now();
    for (fx, id) in &ids {
        std::hint::black_box(fx.vault.get_record(&fx.clerk, *id, &[], None).expect("get"));
    }
    (put, per_s(n, t.elapsed()))
}

/// Connections of the vaults' role to the primary now.
fn backends(cfg: &PgConfig) -> i64 {
    for m in &cfg.members {
        let Ok(mut c) = vault_core::keystore::postgres::connect_member(cfg, m) else {
            continue;
        };
        let r = c
            .query_one(
                "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user) - 1",
                &[],
            )
            .expect("count");
        if !r.get::<_, bool>(0) {
            return r.get(1);
        }
    }
    -1
}
