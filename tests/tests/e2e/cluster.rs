//! The keystore on a PostgreSQL/Patroni cluster (issue 16): three members
//! on loopback started by `scripts/cluster.sh` (`scripts/test.sh` starts
//! it and exports `PIVAULT_PG_*`). A disposal must leave no byte of a
//! destroyed key on any member: checked by the vault's own SQL scan and,
//! independently, by reading every file of every member's data directory.
//! Each negative control (a held snapshot, plain VACUUM, no WAL rounds)
//! must make that scan find the key and block the certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::keystore::PurgeControl;
use vault_core::keystore::postgres::PgConfig;
use vault_core::vault::{DisposalOutcome, DisposalParties, DisposalRequest, DisposalScope};

use crate::common::{self, Fixture};

/// The cluster `scripts/cluster.sh` started, from its environment.
pub(crate) struct Cluster {
    pub(crate) members: Vec<String>,
    pub(crate) data_dirs: Vec<PathBuf>,
}

/// The cluster's tests run one at a time: a snapshot held by one test
/// (the negative control) rightly blocks every other vault's purge in the
/// same database, and WAL rounds of one purge would clean up after another
/// test's skipped ones.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn cluster() -> Cluster {
    let cfg = common::cluster_keystore();
    let dirs = std::env::var("PIVAULT_PG_DATA_DIRS").expect("PIVAULT_PG_DATA_DIRS");
    Cluster {
        members: cfg.members,
        data_dirs: dirs.split(':').map(PathBuf::from).collect(),
    }
}

impl Cluster {
    fn config(&self) -> PgConfig {
        common::cluster_keystore()
    }

    /// Every file of every member's data directory holding any needle,
    /// read directly (the test runs where the members' files are).
    pub(crate) fn files_holding(&self, needles: &[Vec<u8>]) -> Vec<PathBuf> {
        let mut hits = Vec::new();
        for d in &self.data_dirs {
            for f in common::files_under(d) {
                let Ok(bytes) = std::fs::read(&f) else {
                    continue; // removed by a checkpoint during the walk
                };
                if vault_core::keystore::contains_any(&bytes, needles) {
                    hits.push(f);
                }
            }
        }
        hits
    }
}

pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn vault_on_cluster(dir: &Path, c: &Cluster) -> Fixture {
    common::fast_vault_on(dir, Some(c.config()))
}

fn body(n: u32) -> Value {
    json!({ "given_name": "Keystore", "family_name": "Cluster", "ssn": format!("123-45-{:04}", 1000 + n) })
}

pub(crate) fn request(scope: DisposalScope) -> DisposalRequest {
    DisposalRequest {
        scope,
        parties: DisposalParties::default(),
        dry_run: false,
    }
}

fn certificate_id(o: DisposalOutcome) -> vault_core::ids::CertificateId {
    o.certificate_id
        .expect("a completed disposal issues a certificate")
}

/// Puts one record per subject; returns (subject, record, wrapped key).
fn put_records(fx: &Fixture, n: u32) -> Vec<(SubjectId, RecordId, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let s = SubjectId::new();
            let id = fx
                .vault
                .put_record(&fx.clerk, common::CUSTOMERS, s, &body(i))
                .unwrap();
            let w = fx.vault.keystore().wrapped_dek(s, id, 1).unwrap().unwrap();
            (s, id, w)
        })
        .collect()
}

#[test]
fn a_disposal_on_the_cluster_leaves_no_key_byte_on_any_member_and_its_certificate_names_them() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    assert_eq!(fx.vault.keystore().engine_kind(), "postgresql");
    let recs = put_records(&fx, 6);
    let (s0, r0, w0) = recs[0].clone();
    // An update: the record's first key version must go too.
    fx.vault.update_record(&fx.clerk, r0, &body(99)).unwrap();
    let w0v2 = fx.vault.keystore().wrapped_dek(s0, r0, 2).unwrap().unwrap();
    let needles = vec![w0.clone(), w0v2.clone()];
    // Before: the key bytes are on the members (the scan can see them), in
    // the table's files once a checkpoint wrote them there (the scan reads
    // no WAL).
    psql(&primary_member(&c), "CHECKPOINT").expect("primary up");
    assert!(
        !fx.vault
            .keystore()
            .files_containing(&needles)
            .unwrap()
            .is_empty(),
        "the SQL scan must find the live key before the disposal"
    );

    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(s0)))
            .unwrap(),
    );
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let purge = doc.body["sanitization"]["details"]["keystore_purge"].clone();
    assert_eq!(purge["engine"], "postgresql", "{purge}");
    let members = purge["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{purge}");
    assert!(members.iter().all(|m| m["verified"] == true), "{purge}");
    let roles: Vec<&str> = members
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "primary").count(),
        1,
        "{roles:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "standby").count(),
        2,
        "{roles:?}"
    );

    // After: no member's file holds either version, by the vault's scan
    // and by reading the data directories ourselves.
    assert_eq!(
        fx.vault.keystore().files_containing(&needles).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(c.files_holding(&needles), Vec::<PathBuf>::new());
    // The other subjects' records are untouched.
    for (_, id, _) in &recs[1..] {
        fx.vault.get_record(&fx.clerk, *id, &[], None).unwrap();
    }
    assert!(matches!(
        fx.vault.get_record(&fx.clerk, r0, &[], None),
        Err(Error::Disposed { .. })
    ));
    fx.vault.close().unwrap();
}

/// ANALYZE (which autovacuum runs on its own once a table has grown)
/// samples column values into `pg_statistic` as histogram bounds: for the
/// data-key table those would be wrapped keys, in a catalog file no purge
/// rewrites, and the verification scan would then refuse every later
/// certificate of a sampled key. The vault's tables keep no statistics of
/// the wrapped keys, so after an ANALYZE a disposal still certifies and no
/// file holds the key.
#[test]
fn statistics_gathered_by_analyze_never_copy_a_wrapped_key_and_a_disposal_still_certifies() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    // Fewer rows than the default statistics target: every value would be
    // a histogram bound.
    let recs = put_records(&fx, 20);
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    let primary = &c.members[primary_index(&c) - 1];
    psql_in(
        primary,
        "pivault_keys",
        &format!("ANALYZE {schema}.deks, {schema}.buckets, {schema}.backups"),
    )
    .expect("analyze");
    let sampled = psql_in(
        primary,
        "pivault_keys",
        &format!(
            "SELECT count(*) FROM pg_stats WHERE schemaname = '{schema}' AND attname = 'v'
               AND (histogram_bounds IS NOT NULL OR most_common_vals IS NOT NULL)"
        ),
    )
    .expect("pg_stats");
    assert_eq!(sampled, "0", "statistics of the wrapped keys were gathered");
    let (s0, _, w0) = recs[7].clone();
    certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(s0)))
            .expect("the disposal certifies after an ANALYZE"),
    );
    assert_eq!(c.files_holding(&[w0]), Vec::<PathBuf>::new());
    fx.vault.close().unwrap();
}

/// Runs one disposal under a negative control: it must fail with
/// `expect` in its message, the scan from outside must find the key, and
/// no certificate may exist; the retry without the control certifies.
fn negative_control(control: Option<PurgeControl>, hold: bool, expect: &[&str], scan_finds: bool) {
    let _one = serial();
    let c = cluster();
    // Without the WAL rounds: a `.partial` segment from before the purge
    // (a timeline's last, kept at a promotion), which the vault's scan
    // does not read, is named by the purge's check like any segment, and
    // the rounds remove it; planted on every member.
    let partial: Vec<PathBuf> = if control == Some(PurgeControl::SkipWalRounds) {
        c.data_dirs
            .iter()
            .map(|d| {
                let f = d.join("pg_wal/000000010000000000000001.partial");
                std::fs::write(&f, [0x5au8; 8192]).expect("a file in the member's pg_wal");
                f
            })
            .collect()
    } else {
        Vec::new()
    };
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    // Three records of other subjects in one bucket, then the doomed one
    // in the same bucket: after the rotation re-wraps the three, a plain
    // VACUUM packs their new versions over the space of their old ones
    // (the oldest rows of the page) and leaves the doomed row, written
    // after them, where it was: the page keeps its bytes. (A partition
    // holding only the doomed row would be truncated away by VACUUM.)
    let doomed = SubjectId::new();
    let bucket = fx.vault.keystore().bucket_of(doomed);
    let mut recs = Vec::new();
    while recs.len() < 3 {
        let s = SubjectId::new();
        if fx.vault.keystore().bucket_of(s) == bucket {
            let id = fx
                .vault
                .put_record(&fx.clerk, common::CUSTOMERS, s, &body(recs.len() as u32))
                .unwrap();
            recs.push(id);
        }
    }
    let id = fx
        .vault
        .put_record(&fx.clerk, common::CUSTOMERS, doomed, &body(7))
        .unwrap();
    let w = fx
        .vault
        .keystore()
        .wrapped_dek(doomed, id, 1)
        .unwrap()
        .unwrap();
    if let Some(ctl) = control {
        fx.vault.set_purge_control(ctl);
    }
    fx.vault.set_purge_hold_snapshot(hold);
    match fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(id)))
    {
        Err(Error::DisposalFailed(msg)) => {
            for e in expect {
                assert!(
                    msg.contains(e),
                    "{control:?}/hold={hold}: {e:?} not in {msg}"
                );
            }
            if !partial.is_empty() {
                assert!(
                    msg.contains("pg_wal/000000010000000000000001.partial"),
                    "the .partial segment is named: {msg}"
                );
            }
            // The WAL control: the bytes are in a WAL segment, which the
            // vault's scan does not read (every vault's recent writes are
            // there); the segment check names every member.
            if scan_finds {
                assert!(
                    msg.contains("pre-disposal wrapped key bytes found in keystore files"),
                    "{control:?}/hold={hold}: the batch's own scan must find the key: {msg}"
                );
            }
            for m in &c.members {
                assert!(
                    msg.contains(m.as_str()),
                    "{control:?}/hold={hold}: member {m} must be named: {msg}"
                );
            }
        }
        other => panic!("{control:?}/hold={hold}: the disposal must fail: {other:?}"),
    }
    let batches = fx.vault.disposals(&fx.officer).unwrap();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].failed.is_some());
    assert!(matches!(
        fx.vault.certificate(&fx.auditor, batches[0].certificate_id),
        Err(Error::NotFound(_))
    ));
    if !hold && scan_finds {
        // Nothing holds the bytes but the skipped step: they are still
        // on the members' disks, where anyone with the files finds them.
        assert!(
            !c.files_holding(std::slice::from_ref(&w)).is_empty(),
            "{control:?}: the key's bytes must still be on a member"
        );
    }
    // The control lifted, the same batch purges, verifies and certifies.
    fx.vault.set_purge_control(PurgeControl::Full);
    fx.vault.set_purge_hold_snapshot(false);
    let cert = fx.vault.retry_disposal(&fx.officer, batches[0].id).unwrap();
    fx.vault.certificate(&fx.auditor, cert).unwrap();
    assert_eq!(
        c.files_holding(std::slice::from_ref(&w)),
        Vec::<PathBuf>::new()
    );
    for r in recs {
        fx.vault.get_record(&fx.clerk, r, &[], None).unwrap();
    }
    for f in partial {
        assert!(!f.exists(), "the rounds remove the .partial segment {f:?}");
    }
    fx.vault.close().unwrap();
}

#[test]
fn a_held_repeatable_read_snapshot_on_the_primary_blocks_the_certificate() {
    negative_control(
        None,
        true,
        &["snapshots=1", "open snapshot of backend"],
        true,
    );
}

#[test]
fn plain_vacuum_instead_of_vacuum_full_blocks_the_certificate() {
    negative_control(
        Some(PurgeControl::PlainVacuum),
        false,
        &["not rewritten"],
        true,
    );
}

#[test]
fn skipping_the_wal_rounds_blocks_the_certificate() {
    negative_control(
        Some(PurgeControl::SkipWalRounds),
        false,
        &["pg_wal/", "members_not_verified"],
        false,
    );
}

/// A connection as `cfg`'s role holding back the purge's horizon in an
/// open transaction, and its backend: with a REPEATABLE READ snapshot
/// (`sql` None), or as `sql` leaves it (a transaction ID taken under READ
/// COMMITTED holds back as much, with no snapshot). What a holder of
/// another vault's credentials can always do: any timeout its role
/// carries, a session may `SET` away.
pub(crate) fn transaction_held(cfg: &PgConfig, sql: Option<&str>) -> (postgres::Client, i32) {
    let mut c = vault_core::keystore::provider::connect_primary(cfg).expect("a connection");
    // The backend first: a later statement of the transaction would take
    // a snapshot of its own.
    let pid = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    c.batch_execute("SET idle_in_transaction_session_timeout = 0")
        .unwrap();
    c.batch_execute(sql.unwrap_or("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1"))
        .unwrap();
    (c, pid)
}

/// Where the tests of another vault's role against this vault's purge
/// start: the cluster, its primary (for the superuser's SQL), and a vault
/// with its keys there (records embedded) and two records in it.
struct KeysOnTheCluster {
    c: Cluster,
    primary: String,
    tmp: tempfile::TempDir,
    fx: Fixture,
    recs: Vec<(SubjectId, RecordId, Vec<u8>)>,
}

fn keys_on_the_cluster() -> KeysOnTheCluster {
    let c = cluster();
    let primary = primary_member(&c);
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), Some(c.config()), None);
    let recs = put_records(&fx, 2);
    KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    }
}

/// A login role of another vault (`pvr_`, in `pivault_vaults`, made by
/// the superuser's `su`), and its configuration, its password in `dir`.
pub(crate) fn another_vault_role(
    c: &Cluster,
    dir: &Path,
    su: &dyn Fn(&str) -> String,
) -> (String, PgConfig) {
    let mut suffix = [0u8; 10];
    vault_core::crypto::fill_random(&mut suffix);
    let role = format!("pvr_{}", hex::encode(suffix));
    su(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'other-Vault-pw-57' IN ROLE pivault_vaults"
    ));
    let file = dir.join("other.pw");
    crate::cli::write_private(&file, b"other-Vault-pw-57");
    let cfg = PgConfig {
        user: role.clone(),
        password_file: file,
        ..c.config()
    };
    (role, cfg)
}

/// Another vault's role ([`another_vault_role`]) with a table of its own,
/// `{role}.{name}` made by `CREATE TABLE ... {definition}` in a schema
/// named after the role: the role, its configuration, the table's name
/// and the role's session on the primary.
fn another_vaults_table(
    c: &Cluster,
    dir: &Path,
    su: &dyn Fn(&str) -> String,
    name: &str,
    definition: &str,
) -> (String, PgConfig, String, postgres::Client) {
    let (role, other) = another_vault_role(c, dir, su);
    let table = format!("{role}.{name}");
    let mut session = vault_core::keystore::provider::connect_primary(&other).unwrap();
    session
        .batch_execute(&format!(
            "CREATE SCHEMA {role}; CREATE TABLE {table} {definition}"
        ))
        .unwrap();
    (role, other, table, session)
}

/// Many businesses' keystores share one database, where a session's
/// snapshot holds back what `VACUUM FULL` may drop from every table, and a
/// transaction ID does from any database. A holder of another vault's
/// credentials who keeps a transaction open could so keep every other
/// vault's disposals from ever certifying. Such a session is waited for
/// until it has held the same snapshot or transaction ID for 30 s, then
/// ended, and the disposal certifies, saying so in the primary's evidence:
/// idle in its transaction, running statement after statement in it (its
/// state always fresh), or holding an ID in the other database. Only that:
/// a younger hold of another vault, one of the vault's own role (the
/// negative control), the superuser's and a snapshot in another database
/// (which holds nothing back here) are never ended, nor a transaction idle
/// for its life whose statements take snapshots of their own (a vault's
/// records lock).
#[test]
fn another_vaults_transaction_held_past_the_limit_is_ended_and_the_disposal_certifies() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    // Keys on the cluster, records embedded: only `pivault_keys` is purged.
    let fx = common::fast_vault_with(&tmp.path().join("vault"), Some(c.config()), None);
    let recs = put_records(&fx, 2);
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let other_records = PgConfig {
        database: "pivault_records".into(),
        ..other.clone()
    };
    let take_id = Some("BEGIN; SELECT txid_current()");
    let (mut snapshot, _) = transaction_held(&other, None);
    let (mut id, _) = transaction_held(&other, take_id);
    let (mut id_elsewhere, _) = transaction_held(&other_records, take_id);
    // Statement after statement in one REPEATABLE READ transaction: its
    // state and statement start always fresh, its snapshot the same.
    let (mut busy, _) = transaction_held(&other, None);
    let busy = std::thread::spawn(
        move || {
            while busy.batch_execute("SELECT pg_sleep(0.5)").is_ok() {}
        },
    );
    // One snapshot handed from session to session every 8 s (a role the
    // provider let export snapshots; no vault role may): its age is the
    // snapshot's, not a session's.
    su(&format!(
        "GRANT EXECUTE ON FUNCTION pg_export_snapshot() TO {role}"
    ));
    let relay = {
        let other = other.clone();
        std::thread::spawn(move || {
            let open =
                |snapshot: Option<&str>| -> Result<(postgres::Client, String), postgres::Error> {
                    let mut c = vault_core::keystore::provider::connect_primary(&other).unwrap();
                    c.batch_execute(
                        "SET idle_in_transaction_session_timeout = 0;
                     BEGIN ISOLATION LEVEL REPEATABLE READ",
                    )?;
                    if let Some(s) = snapshot {
                        c.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{s}'"))?;
                    }
                    let id = c.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
                    Ok((c, id))
                };
            let (mut holder, mut id) = open(None).expect("the first holder");
            let mut handovers = 0u32;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(8));
                // Once a holder is ended, its snapshot cannot be taken.
                let Ok((next, next_id)) = open(Some(&id)) else {
                    return handovers;
                };
                drop(std::mem::replace(&mut holder, next));
                id = next_id;
                handovers += 1;
            }
        })
    };
    // The vault's own role's snapshot in the records database: not this
    // purge's.
    let (mut elsewhere, _) = transaction_held(&common::cluster_records(), None);
    // Another vault's transaction that holds nothing back but for its
    // statements' own snapshots (as its records' lock does, idle for the
    // vault's life, renewed by a statement now and then), asked to be
    // ended every 100 ms all along: never ended.
    let stop = Arc::new(AtomicBool::new(false));
    let (mut lock, lock_pid) = transaction_held(&other, Some("BEGIN"));
    let renewals = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                lock.batch_execute("SELECT pg_sleep(0.2)")
                    .expect("the lock's session lives");
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            lock
        })
    };
    let end = |mine: &mut postgres::Client, pid: i32| -> String {
        mine.query_one("SELECT pivault_verify.end_stranger_snapshot($1)", &[&pid])
            .unwrap()
            .get(0)
    };
    let asked = {
        let stop = stop.clone();
        let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
        std::thread::spawn(move || {
            let mut answers = std::collections::BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                answers.insert(end(&mut mine, lock_pid));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            answers
        })
    };
    let started = std::time::Instant::now();
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("another vault's transaction keeps no disposal from certifying"),
    );
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut lock = renewals.join().expect("the lock's renewals");
    lock.simple_query("SELECT 1")
        .expect("the lock's session lives");
    let answers = asked.join().unwrap();
    let benign: std::collections::BTreeSet<String> = [
        "held under 30 s",
        "holds nothing back here",
        "a snapshot an older running transaction ID explains",
    ]
    .map(str::to_owned)
    .into();
    assert!(
        answers.is_subset(&benign) && answers.contains("held under 30 s"),
        "the lock's session, seen in and between its statements for {took:?}: {answers:?}"
    );
    for (what, s) in [
        ("snapshot", &mut snapshot),
        ("transaction ID", &mut id),
        ("transaction ID in the other database", &mut id_elsewhere),
    ] {
        assert!(
            s.simple_query("SELECT 1").is_err(),
            "the other vault's session holding a {what} is ended"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !busy.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(busy.is_finished(), "the busy transaction is ended");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !relay.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(relay.is_finished(), "the handed-on snapshot is ended");
    let handovers = relay.join().unwrap();
    assert!(
        handovers >= 3,
        "handed over {handovers} times before it was ended"
    );
    assert!(
        elsewhere.simple_query("SELECT 1").is_ok(),
        "a snapshot in another database is left alone"
    );
    // Not ended before it was held 30 s: the transaction IDs first, then
    // the snapshots that they explained (taken while they ran).
    assert!(took >= std::time::Duration::from_secs(58), "{took:?}");
    let (purge, members) = every_member_verified(&fx, cert);
    // Five at least: the relay's holder may be ended as it hands over.
    let said: Vec<(u64, &Value)> = members
        .iter()
        .filter_map(|m| {
            let detail = m["detail"].as_str().unwrap();
            let (_, rest) = detail.split_once("; ended ")?;
            let (n, rest) = rest.split_once(' ')?;
            rest.starts_with("transactions another vault's role held")
                .then(|| (n.parse().unwrap(), m))
        })
        .collect();
    assert_eq!(said.len(), 1, "the primary's evidence says so: {purge}");
    assert!(said[0].0 >= 5, "{purge}");
    assert_eq!(said[0].1["role"], "primary", "{purge}");
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    fx.vault
        .get_record(&fx.clerk, recs[1].1, &[], None)
        .unwrap();
    drop(elsewhere);
    let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();

    // What a vault's role may end: nothing held under the limit, not its
    // own role's, not the superuser's, no snapshot in another database.
    let superuser = PgConfig {
        user: "postgres".into(),
        password_file: std::env::var("PIVAULT_PG_SUPERUSER_PASSWORD_FILE")
            .expect("superuser password file")
            .into(),
        ..c.config()
    };
    let mut held = vec![
        (transaction_held(&other, None), "held under 30 s"),
        (
            transaction_held(&c.config(), None),
            "the caller's own role's",
        ),
        (transaction_held(&superuser, None), "a superuser's"),
        (
            transaction_held(&other_records, None),
            "holds nothing back here",
        ),
    ];
    assert_eq!(end(&mut mine, 0), "no such session");
    // Nor may a vault's role hand its snapshot on.
    mine.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    let refused = mine
        .query_one("SELECT pg_export_snapshot()", &[])
        .expect_err("a vault role exports no snapshot");
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    mine.batch_execute("ROLLBACK").unwrap();
    for ((_, pid), why) in &held {
        assert_eq!(end(&mut mine, *pid), *why, "backend {pid}");
    }
    for ((h, pid), _) in held.iter_mut() {
        assert!(h.simple_query("SELECT 1").is_ok(), "backend {pid} lives");
    }
    drop(held);
    drop(lock);
    drop(mine);
    fx.vault.close().unwrap();
    su(&format!(
        "REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM {role}; DROP ROLE {role}"
    ));
}

/// Two other vaults' roles in league (one person holding two businesses'
/// credentials) shield each other's holds: each keeps an open transaction
/// in which it asked to end the other's, so that the hold's first sighting,
/// written by the function, stays uncommitted. Were a hold's sighting a
/// row others must wait for, every purge's ask would find it locked and
/// answer `busy` for ever, and no vault's disposal would certify. A
/// sighting nobody else can see holds nobody back: the purge's own is
/// written beside it, and each of the three holds is ended after 30 s.
#[test]
fn other_vaults_shielding_each_others_holds_keep_no_disposal_from_certifying() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir(&dir_a).unwrap();
    std::fs::create_dir(&dir_b).unwrap();
    let (role_a, a) = another_vault_role(&c, &dir_a, &su);
    let (role_b, b) = another_vault_role(&c, &dir_b, &su);
    let ask = |s: &mut postgres::Client, pid: i32| -> String {
        s.query_one("SELECT pivault_verify.end_stranger_snapshot($1)", &[&pid])
            .unwrap()
            .get(0)
    };
    // A transaction reads the sessions' statistics once and keeps that
    // copy: a session of A's that held an ID for a moment, seen then by
    // an idle transaction of B's (and asked about once, so that its ID's
    // sighting is written), must not be ended on that old look 30 s on.
    let (mut brief, brief_pid) = transaction_held(&a, Some("BEGIN; SELECT txid_current()"));
    let (mut stale, _) = transaction_held(&b, Some("BEGIN; SELECT count(*) FROM pg_stat_activity"));
    let mut b_now = vault_core::keystore::provider::connect_primary(&b).unwrap();
    assert_eq!(ask(&mut b_now, brief_pid), "held under 30 s");
    brief.batch_execute("COMMIT").unwrap();
    let (mut held, held_pid) = transaction_held(&a, Some("BEGIN; SELECT txid_current()"));
    // Each shield holds a transaction ID of its own (as its ask takes
    // one), which the other shield's ask covers in turn.
    let (mut shield_b, shield_b_pid) = transaction_held(&b, Some("BEGIN; SELECT txid_current()"));
    let (mut shield_a, shield_a_pid) = transaction_held(&a, Some("BEGIN; SELECT txid_current()"));
    assert_eq!(ask(&mut shield_b, held_pid), "held under 30 s");
    assert_eq!(ask(&mut shield_a, shield_b_pid), "held under 30 s");
    assert_eq!(ask(&mut shield_b, shield_a_pid), "held under 30 s");
    let started = std::time::Instant::now();
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("shielded holds keep no disposal from certifying"),
    );
    let took = started.elapsed();
    for (what, s) in [
        ("the held transaction ID", &mut held),
        ("the first shield", &mut shield_b),
        ("the second shield", &mut shield_a),
    ] {
        assert!(s.simple_query("SELECT 1").is_err(), "{what} is ended");
    }
    assert!(took >= std::time::Duration::from_secs(28), "{took:?}");
    assert_eq!(ask(&mut stale, brief_pid), "holds nothing back here");
    brief
        .simple_query("SELECT 1")
        .expect("a session seen holding an ID long ago lives");
    let (purge, members) = every_member_verified(&fx, cert);
    assert!(
        members.iter().any(|m| m["detail"]
            .as_str()
            .unwrap()
            .contains("; ended 3 transactions another vault's role held")),
        "{purge}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    drop((held, shield_a, shield_b, brief, stale, b_now));
    fx.vault.close().unwrap();
    su(&format!("DROP ROLE {role_a}; DROP ROLE {role_b}"));
}

/// The WAL's evidence is its segments' names (a vault's scan reads no
/// WAL): a member that recycles segments (renamed ahead with their old
/// bytes) could hold a destroyed key under a later name. Every purge reads
/// the setting on every member, not only `doctor`: such a member is not
/// verified and the batch waits, then certifies once it is set back.
#[test]
fn a_member_that_recycles_its_wal_is_not_verified_and_the_batch_waits_for_it() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let recs = put_records(&fx, 2);
    let standby = c.members[primary_index(&c) % c.members.len()].clone();
    let set = |value: &str| {
        let sql = match value {
            "default" => "ALTER SYSTEM RESET wal_recycle".to_owned(),
            v => format!("ALTER SYSTEM SET wal_recycle = {v}"),
        };
        psql(&standby, &sql).expect("the standby up");
        psql(&standby, "SELECT pg_reload_conf()").expect("the standby up");
        let want = if value == "default" { "off" } else { value };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while psql(&standby, "SHOW wal_recycle").as_deref() != Some(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "wal_recycle not {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    /// Sets the member back however the test ends.
    struct Back<'a>(&'a dyn Fn(&str));
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            (self.0)("default");
        }
    }
    set("on");
    let back = Back(&set);
    match fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
    {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains(&format!("{standby}: wal_recycle=on")),
            "the member and its setting are named: {msg}"
        ),
        other => panic!("a recycling member must not be verified: {other:?}"),
    }
    drop(back);
    let batches = fx.vault.disposals(&fx.officer).unwrap();
    let cert = fx.vault.retry_disposal(&fx.officer, batches[0].id).unwrap();
    fx.vault.certificate(&fx.auditor, cert).unwrap();
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    fx.vault.close().unwrap();
}

/// A lazy `VACUUM` shows a snapshot that no horizon counts (PostgreSQL
/// flags it as vacuuming): however long it runs, it holds no deleted row
/// back. Another vault's, slowed to a crawl by its cost settings, as a
/// tenant's table's autovacuum can be, is neither waited for nor ended:
/// the disposal certifies around it, and no member's file keeps the key.
#[test]
fn another_vaults_slow_lazy_vacuum_holds_no_disposal_back_and_is_not_ended() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, _, table, mut v) = another_vaults_table(
        &c,
        tmp.path(),
        &su,
        "big",
        "AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g",
    );
    v.batch_execute(&format!("DELETE FROM {table} WHERE g % 2 = 0"))
        .unwrap();
    let pid: i32 = v.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let vacuum = std::thread::spawn(move || {
        v.batch_execute("SET vacuum_cost_delay = 100; SET vacuum_cost_limit = 1")
            .unwrap();
        v.batch_execute(&format!("VACUUM {table}"))
    });
    let vacuuming = || {
        su(&format!(
            "SELECT count(*) FROM pg_stat_progress_vacuum WHERE pid = {pid}"
        )) == "1"
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !vacuuming() {
        assert!(std::time::Instant::now() < deadline, "the VACUUM began");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_ne!(
        su(&format!(
            "SELECT coalesce(backend_xmin::text, 'none') FROM pg_stat_activity WHERE pid = {pid}"
        )),
        "none",
        "the VACUUM shows a snapshot"
    );
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("a lazy VACUUM holds no disposal back"),
    );
    assert!(vacuuming(), "the VACUUM runs on, not ended");
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let purge = doc.body["sanitization"]["details"]["keystore_purge"].clone();
    assert!(!purge.to_string().contains("; ended "), "{purge}");
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    su(&format!("SELECT pg_cancel_backend({pid})"));
    assert!(vacuum.join().unwrap().is_err(), "cancelled, not finished");
    fx.vault.close().unwrap();
    su(&format!("DROP SCHEMA {role} CASCADE; DROP ROLE {role}"));
}

/// Another vault's role owns its tables, and so their storage parameters
/// and index expressions, which the cluster's own autovacuum worker
/// evaluates as it analyses the table: an expression that sleeps, and
/// catches a cancel, keeps the worker's snapshot for as long as the role
/// likes (a table's autovacuum throttled to a page every 100 ms holds it
/// for minutes alike). Waited for as the cluster's own passing work, it
/// failed every vault's disposal after 10 s; cancelled, it went on. Such
/// a worker is ended once its snapshot has been held 30 s (autovacuum
/// comes back to the table), the primary's evidence says so, and the
/// disposal certifies; the `ANALYZE` of a table of no vault's is never
/// ended by a vault's role.
#[test]
fn another_vaults_autovacuum_analyze_held_past_the_limit_is_ended_and_the_disposal_certifies() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let scratch = format!("scratch_{role}");
    // A table whose index expression sleeps, catching cancels, for as long
    // as the test holds the advisory lock named by the schema (which,
    // unlike a row, the worker's snapshot does not hide); its autovacuum,
    // which analyses it at its first change, is turned on once it is
    // filled and the lock held (`enable`).
    let trapped = |schema: &str| {
        format!(
            "CREATE SCHEMA {schema};
             CREATE FUNCTION {schema}.slow(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
             BEGIN
               WHILE NOT pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtext('{schema}')) LOOP
                 BEGIN
                   PERFORM pg_catalog.pg_sleep(0.1);
                 EXCEPTION WHEN query_canceled THEN NULL;
                 END;
               END LOOP;
               RETURN i;
             END $f$;
             CREATE TABLE {schema}.stats (g int) WITH (autovacuum_enabled = off,
               autovacuum_analyze_threshold = 1, autovacuum_analyze_scale_factor = 0,
               autovacuum_vacuum_threshold = 2000000000, autovacuum_vacuum_insert_threshold = -1);
             CREATE INDEX ON {schema}.stats ({schema}.slow(g));
             INSERT INTO {schema}.stats SELECT generate_series(1, 1000);"
        )
    };
    let enable = |schema: &str| format!("ALTER TABLE {schema}.stats SET (autovacuum_enabled = on)");
    let superuser = PgConfig {
        user: "postgres".into(),
        password_file: std::env::var("PIVAULT_PG_SUPERUSER_PASSWORD_FILE")
            .expect("superuser password file")
            .into(),
        ..c.config()
    };
    let arm = |schema: &str| {
        let mut a = vault_core::keystore::provider::connect_primary(&superuser).unwrap();
        a.execute("SELECT pg_advisory_lock(hashtext($1))", &[&schema])
            .unwrap();
        a
    };
    /// Disarms (the connections holding the locks go first) and ends the
    /// workers, sets the cluster back and drops what the test made,
    /// however the test ends (errors ignored: a panic here would abort).
    struct Back(String, String);
    impl Drop for Back {
        fn drop(&mut self) {
            let (role, scratch) = (&self.0, &self.1);
            let primary = primary_member(&cluster());
            for q in [
                "ALTER SYSTEM RESET autovacuum_naptime".to_owned(),
                "SELECT pg_reload_conf()".to_owned(),
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                  WHERE backend_type = 'autovacuum worker'"
                    .to_owned(),
                format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {scratch} CASCADE;
                     DROP SCHEMA IF EXISTS {role} CASCADE; DROP ROLE IF EXISTS {role}"
                ),
            ] {
                let _ = psql_in(&primary, "pivault_keys", &q);
            }
        }
    }
    let _back = Back(role.clone(), scratch.clone());
    // Autovacuum looks every second for the test, not every minute.
    su("ALTER SYSTEM SET autovacuum_naptime = 1");
    su("SELECT pg_reload_conf()");
    let analyzing = |table: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match su(&format!(
                "SELECT coalesce(min(pid)::text, 'none') FROM pg_stat_activity
                  WHERE backend_type = 'autovacuum worker' AND backend_xmin IS NOT NULL
                    AND query = 'autovacuum: ANALYZE {table}'"
            ))
            .as_str()
            {
                "none" => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "autovacuum began on {table}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                pid => break pid.parse::<i32>().unwrap(),
            }
        }
    };
    // A table of no vault's (the superuser's), held the same way: a vault's
    // role may not end its ANALYZE, however long held.
    su(&trapped(&scratch));
    let armed = arm(&scratch);
    su(&enable(&scratch));
    let theirs = analyzing(&format!("{scratch}.stats"));
    let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
    let answer: String = mine
        .query_one(
            "SELECT pivault_verify.end_stranger_snapshot($1)",
            &[&theirs],
        )
        .unwrap()
        .get(0);
    assert_eq!(answer, "an autovacuum ANALYZE of a table of no vault's");
    drop(armed);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while su(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {theirs} AND query LIKE '%{scratch}%'"
    )) != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the disarmed ANALYZE ends"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Another vault's table.
    let mut v = vault_core::keystore::provider::connect_primary(&other).unwrap();
    v.batch_execute(&trapped(&role)).unwrap();
    let _armed = arm(&role);
    v.batch_execute(&enable(&role)).unwrap();
    drop(v);
    let worker = analyzing(&format!("{role}.stats"));
    let started = std::time::Instant::now();
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("an autovacuum worker held by another vault keeps no disposal from certifying"),
    );
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(25), "{took:?}");
    assert_eq!(
        su(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = {worker}"
        )),
        "0",
        "the worker is ended"
    );
    let (purge, members) = every_member_verified(&fx, cert);
    assert!(
        members.iter().any(|m| m["detail"]
            .as_str()
            .unwrap()
            .contains("; ended 1 autovacuum worker(s) whose snapshot was held 30 s")),
        "{purge}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    drop(mine);
    fx.vault.close().unwrap();
}

/// A vault's role reads on the standbys too (its byte scans run on every
/// member), and a standby query whose snapshot conflicts with the WAL to
/// replay holds that standby's replay back until the standby cancels it,
/// `max_standby_streaming_delay` after the WAL came. Another vault's role
/// holds a snapshot of its own table on a standby and cleans the table on
/// the primary: with the default 30 s, longer than a purge waits for a
/// standby's replay (20 s), every vault's disposal failed meanwhile, for
/// as long as that role kept it up. The clusters are set to 5 s (`doctor`
/// fails a member above 10 s): the standby cancels the query, and the
/// disposal certifies.
#[test]
fn another_vaults_query_on_a_standby_holds_no_purge_past_its_replay_wait() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, other, table, mut p) = another_vaults_table(
        &c,
        tmp.path(),
        &su,
        "t",
        "AS SELECT g FROM generate_series(1, 10000) g",
    );
    let standby = c.members[primary_index(&c) % c.members.len()].clone();
    let mut s = vault_core::keystore::postgres::connect_member(&other, &standby).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "the table replayed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s.batch_execute(&format!(
        "SET idle_in_transaction_session_timeout = 0;
         BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT count(*) FROM {table}"
    ))
    .unwrap();
    let conflicts = || snapshot_conflicts(&standby);
    let conflicts_before = conflicts();
    p.batch_execute(&format!("DELETE FROM {table}")).unwrap();
    p.batch_execute(&format!("VACUUM {table}")).unwrap();
    // The standby has the cleanup's WAL and waits to replay it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while psql(
        &standby,
        "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()",
    )
    .as_deref()
        != Some("t")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby's replay is held back"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("a standby's conflicting query holds no purge past its wait"),
    );
    assert!(
        s.simple_query("SELECT 1").is_err(),
        "the standby cancelled the conflicting query"
    );
    assert!(conflicts() > conflicts_before, "a snapshot conflict");
    every_member_verified(&fx, cert);
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    drop((s, p));
    fx.vault.close().unwrap();
    su(&format!("DROP SCHEMA {role} CASCADE; DROP ROLE {role}"));
}

/// A standby cancels a statement whose snapshot a replayed cleanup
/// conflicts with once replay has waited `max_standby_streaming_delay`
/// (at once while it lags that far), and the verification's byte scan is
/// one statement a member that reads files as long as they take. On CI's
/// busy cluster (two lanes purging at once) disposals stopped short of
/// their certificate on such cancels (stops 42 and 43); running the whole
/// scan again (stop 43's fix) did not get through, as each run was
/// canceled again. Here the standbys cancel after 1 s, their scans take
/// about three times that (64 files of zeros, 512 MiB, in each standby's
/// data directory, which a scan reads as it reads any file no relation
/// names; while the primary's scan runs, its snapshot keeps every
/// cleanup's horizon older than the standbys' scans), and another vault's
/// role makes a cleanup every 200 ms while a standby scans and the primary
/// does not. The canceled scans run again in shorter parts. First with a
/// copy of the key in a file on each standby: the parts find it and the
/// disposal does not certify (a part dropped or skipped would certify).
/// Then without it, the other record's disposal certifies with every
/// member verified. Then the parts, checked on a standby: each file answered
/// once, none of the whole scan's missed, a file holding a needle found
/// once, bad part counts refused.
#[test]
fn a_members_scan_canceled_by_replay_runs_again_in_shorter_parts_and_the_disposal_certifies() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, _, table, mut p) = another_vaults_table(&c, tmp.path(), &su, "t", "(g int)");
    let standbys: Vec<(String, PathBuf)> = c
        .members
        .iter()
        .zip(&c.data_dirs)
        .filter(|(m, _)| **m != primary)
        .map(|(m, d)| (m.clone(), d.clone()))
        .collect();
    assert_eq!(standbys.len(), 2, "{:?}", c.members);
    let ballast = Ballast(
        standbys
            .iter()
            .flat_map(|(_, d)| {
                (0..64).map(move |i| {
                    let f = d.join(format!("pivault_test_replay_ballast_{i}"));
                    std::fs::write(&f, vec![0u8; 8 << 20]).unwrap();
                    f
                })
            })
            .collect(),
    );
    let before: Vec<i64> = standbys
        .iter()
        .map(|(m, _)| snapshot_conflicts(m))
        .collect();
    let delays: Vec<MemberSetting> = standbys
        .iter()
        .map(|(m, _)| MemberSetting::set(m, "max_standby_streaming_delay", "'1s'"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let scanning = |m: &str| {
        psql(
            m,
            "SELECT count(*) FROM pg_stat_activity
              WHERE state = 'active' AND pid <> pg_backend_pid()
                AND query LIKE '%pivault_verify.scan%'",
        )
        .is_some_and(|n| n != "0")
    };
    let copies = Ballast(
        standbys
            .iter()
            .map(|(_, d)| {
                let f = d.join("pivault_test_parts_key_copy");
                std::fs::write(&f, [&b"kept"[..], &recs[0].2, b"aside"].concat()).unwrap();
                f
            })
            .collect(),
    );
    let scans_before = scans_canceled_by_replay();
    let done = AtomicBool::new(false);
    let (first, canceled_first, second, cleanups) = std::thread::scope(|sc| {
        let churn = sc.spawn(|| {
            let mut cleanups = 0;
            while !done.load(Ordering::SeqCst) {
                if !standbys.iter().any(|(m, _)| scanning(m)) || scanning(&primary) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                // Three transactions: a row inserted and deleted by one
                // gives its cleanup no conflict horizon.
                for sql in [
                    "INSERT INTO {t} VALUES (1)",
                    "DELETE FROM {t}",
                    "VACUUM {t}",
                ] {
                    p.batch_execute(&sql.replace("{t}", &table)).unwrap();
                }
                cleanups += 1;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            cleanups
        });
        let first = fx
            .vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)));
        let canceled_first = scans_canceled_by_replay() - scans_before;
        drop(copies);
        // The other record's disposal (a retry of the first batch would
        // not scan again: it no longer holds the keys' bytes).
        let second = fx
            .vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[1].0)));
        done.store(true, Ordering::SeqCst);
        (first, canceled_first, second, churn.join().unwrap())
    });
    let after: Vec<i64> = standbys
        .iter()
        .map(|(m, _)| snapshot_conflicts(m))
        .collect();
    let canceled = scans_canceled_by_replay() - scans_before;
    eprintln!(
        "scans canceled by replay: {canceled_first} in the first disposal, {} in the second (cleanups {cleanups})",
        canceled - canceled_first
    );
    assert!(
        canceled_first > 0 && canceled > canceled_first,
        "a standby canceled scans of both runs: {canceled_first}, {canceled} (cleanups {cleanups}, \
         conflicts {before:?} -> {after:?})"
    );
    match first {
        Err(Error::DisposalFailed(msg)) => {
            for (m, _) in &standbys {
                assert!(
                    msg.contains(&format!("{m}: pivault_test_parts_key_copy")),
                    "the copy on {m} is named: {msg}"
                );
            }
        }
        other => panic!("a copy of the key on the standbys must block the certificate: {other:?}"),
    }
    let cert = certificate_id(second.expect("a scan canceled by replay runs again in parts"));
    let (_, members) = every_member_verified(&fx, cert);
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(
        c.files_holding(&[recs[0].2.clone(), recs[1].2.clone()]),
        Vec::<PathBuf>::new()
    );
    drop((delays, ballast, p));

    // The parts, as the superuser on a standby (the vault's own schema).
    let (standby, dir) = &standbys[0];
    let mut needle = vec![0u8; 24];
    vault_core::crypto::fill_random(&mut needle);
    let needle_file = Ballast(vec![dir.join("pivault_test_parts_needle")]);
    std::fs::write(
        &needle_file.0[0],
        [&b"before"[..], &needle, b"after"].concat(),
    )
    .unwrap();
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    // One part as the superuser: its rows, or psql's error. A standby may
    // cancel it to replay (at its usual delay): run again.
    let scan = |part: i32, parts: i32| -> Result<Vec<(String, String)>, String> {
        let mut err = String::new();
        for _ in 0..10 {
            let out = superuser_psql(standby, "pivault_keys")
                .args([
                    "-tAc",
                    &format!(
                        "SELECT path || '|' || coalesce(hit::text, 'unread') FROM pivault_verify.scan_vault(\
                         ARRAY['\\x{}'::bytea], '{schema}', NULL, NULL, {part}, {parts})",
                        hex::encode(&needle)
                    ),
                ])
                .env("PGCONNECT_TIMEOUT", "2")
                .env("PGOPTIONS", "-c lc_messages=C")
                .env("PG_COLOR", "never")
                .output()
                .expect("psql");
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| {
                        let (path, hit) = l.rsplit_once('|').unwrap();
                        (path.to_owned(), hit.to_owned())
                    })
                    .collect());
            }
            err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !err.contains("conflict with recovery") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Err(err)
    };
    // Refused: a part count that is not a power of two up to 64, a part
    // outside it.
    for (part, parts) in [(0, 3), (0, 0), (0, 128), (4, 4), (-1, 4)] {
        let refused = scan(part, parts).expect_err("a bad part refused");
        assert!(
            refused.contains("a power of two up to 64"),
            "part {part} of {parts}: {refused}"
        );
    }
    let whole = || -> std::collections::BTreeMap<String, String> {
        scan(0, 1).expect("the whole scan").into_iter().collect()
    };
    let first = whole();
    let mut by_parts = Vec::new();
    for parts in [4, 16, 64] {
        let mut answered: Vec<(String, String)> = Vec::new();
        for part in 0..parts {
            answered.extend(scan(part, parts).expect("a part"));
        }
        by_parts.push((parts, answered));
    }
    let last = whole();
    for (parts, answered) in &by_parts {
        let mut paths: Vec<&str> = answered.iter().map(|(p, _)| p.as_str()).collect();
        paths.sort_unstable();
        let n = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), n, "{parts} parts: a file answered twice");
        // A file both whole scans answered alike (not one made, written or
        // removed meanwhile) is answered by the parts.
        for (path, hit) in &first {
            if last.get(path) == Some(hit) {
                assert!(
                    paths.binary_search(&path.as_str()).is_ok(),
                    "{parts} parts: {path} missed"
                );
            }
        }
        let needle_hits = answered
            .iter()
            .filter(|(p, hit)| p == "pivault_test_parts_needle" && hit == "true")
            .count();
        assert_eq!(needle_hits, 1, "{parts} parts: {answered:?}");
    }
    assert_eq!(
        first.get("pivault_test_parts_needle").map(String::as_str),
        Some("true")
    );
    drop(needle_file);
    fx.vault.close().unwrap();
    su(&format!("DROP SCHEMA {role} CASCADE; DROP ROLE {role}"));
}

/// A copy of a wrapped key in a standby's data directory, found by a
/// disposal's scan there, and the vault then closed and opened again (the
/// needles go with the process that deleted the keys): the retry cannot
/// scan, asks the member (`pivault_verify.present`) whether the file it
/// was shown is still there, and waits while it is; once it is gone it
/// certifies, and the certificate counts the file as gone and says a copy
/// elsewhere could not be looked for.
#[test]
fn a_copy_a_members_scan_found_keeps_a_retry_after_a_restart_waiting_until_its_file_is_gone() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp: _tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let (standby, dir) = c
        .members
        .iter()
        .zip(&c.data_dirs)
        .find(|(m, _)| **m != primary)
        .map(|(m, d)| (m.clone(), d.clone()))
        .expect("a standby");
    let copy = Ballast(vec![dir.join("pivault_test_restart_key_copy")]);
    std::fs::write(&copy.0[0], [&b"kept"[..], &recs[0].2, b"aside"].concat()).unwrap();
    match fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
    {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains(&format!("{standby}: pivault_test_restart_key_copy")),
            "{msg}"
        ),
        other => panic!("a copy on a standby must block the certificate: {other:?}"),
    }
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
    let fx = fx.reopen();
    match fx.vault.retry_disposal(&fx.officer, batch) {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains("still there")
                && msg.contains(&format!("{standby}: pivault_test_restart_key_copy")),
            "{msg}"
        ),
        other => panic!("a retry without needles certified over a copy on a member: {other:?}"),
    }
    drop(copy);
    let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
    let text = fx
        .vault
        .certificate(&fx.auditor, cert)
        .unwrap()
        .body
        .to_string();
    assert!(
        text.contains("not repeated: the batch resumed after its keys were deleted")
            && text.contains("found the pre-disposal wrapped keys in 1 file(s), each gone since")
            && !text.contains("pivault_test_restart_key_copy"),
        "{text}"
    );
    fx.vault.close().unwrap();
}

/// How many statements of the keystore's database standby `m` canceled
/// because their snapshot conflicted with a cleanup to replay.
fn snapshot_conflicts(m: &str) -> i64 {
    psql_in(
        m,
        "pivault_keys",
        "SELECT confl_snapshot FROM pg_stat_database_conflicts WHERE datname = 'pivault_keys'",
    )
    .expect("the standby answers")
    .parse()
    .unwrap()
}

/// How many byte scans the members have canceled to replay, from their
/// logs (the error, then the statement it canceled).
fn scans_canceled_by_replay() -> usize {
    let dir = std::env::var("PIVAULT_PG_CLUSTER_DIR").expect("PIVAULT_PG_CLUSTER_DIR");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("patroni") && name.ends_with(".log")
        })
        .map(|log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines
                .windows(2)
                .filter(|w| {
                    w[0].contains("canceling statement due to conflict with recovery")
                        && w[1].contains("pivault_verify.scan")
                })
                .count()
        })
        .sum()
}

/// Files put in members' data directories, removed when dropped.
struct Ballast(Vec<PathBuf>);

impl Drop for Ballast {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Two vaults dispose at once while a third vault's role holds a
/// transaction ID open: both purges watch the same hold (each writes its
/// own sighting, or reads the other's), the hold is ended after 30 s by
/// one or both (each that signalled it says so), and both disposals
/// certify with every member verified and none of either vault's keys
/// left in any file.
#[test]
fn two_vaults_purging_at_once_past_another_vaults_hold_both_certify() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    let vaults: Vec<Fixture> = ["one", "two"]
        .iter()
        .map(|v| common::fast_vault_with(&tmp.path().join(v), Some(c.config()), None))
        .collect();
    let recs: Vec<_> = vaults.iter().map(|fx| put_records(fx, 2)).collect();
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let (mut held, _) = transaction_held(&other, Some("BEGIN; SELECT txid_current()"));
    let started = std::time::Instant::now();
    let outcomes: Vec<_> = std::thread::scope(|sc| {
        let running: Vec<_> = vaults
            .iter()
            .zip(&recs)
            .map(|(fx, recs)| {
                sc.spawn(move || {
                    let cert = certificate_id(
                        fx.vault
                            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
                            .expect("each vault's disposal certifies"),
                    );
                    (cert, started.elapsed())
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(held.simple_query("SELECT 1").is_err(), "the hold is ended");
    let mut ended = 0;
    for ((fx, recs), (cert, took)) in vaults.iter().zip(&recs).zip(&outcomes) {
        assert!(*took >= std::time::Duration::from_secs(28), "{took:?}");
        let (_, members) = every_member_verified(fx, *cert);
        ended += members
            .iter()
            .filter(|m| {
                m["detail"]
                    .as_str()
                    .unwrap()
                    .contains("; ended 1 transaction another vault's role held")
            })
            .count();
        assert_eq!(
            c.files_holding(std::slice::from_ref(&recs[0].2)),
            Vec::<PathBuf>::new()
        );
        fx.vault
            .get_record(&fx.clerk, recs[1].1, &[], None)
            .unwrap();
    }
    // Both may have signalled it before it was gone: each says so.
    assert!(
        (1..=2).contains(&ended),
        "ended, by one purge or both: {ended}"
    );
    drop(held);
    for fx in vaults {
        fx.vault.close().unwrap();
    }
    su(&format!("DROP ROLE {role}"));
}

/// What holds the purge's horizon back but another vault's hold, the
/// vault's own role's snapshot taken while that hold ran, is still there
/// when the hold is ended at 30 s, and lets go 3 s later: the purge waits
/// for it (its own 10 s from when the last stranger was seen) and
/// certifies. Before, the 10 s counted from the purge's start, and the
/// purge failed the moment the hold was gone (CI's two-purge race: the
/// other vault, on the same role, still showed the hold's ID as its
/// snapshot while its own ask to end the hold returned).
#[test]
fn the_vaults_own_snapshot_left_after_another_vaults_hold_is_ended_is_waited_for_and_the_disposal_certifies()
 {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let (mut held, held_pid) = transaction_held(&other, Some("BEGIN; SELECT txid_current()"));
    // The vault's own role's snapshot: its xmin is the hold's ID.
    let (mut own, own_pid) = transaction_held(&c.config(), None);
    let own_xmin = su(&format!(
        "SELECT backend_xmin FROM pg_stat_activity WHERE pid = {own_pid}"
    ));
    let held_xid = su(&format!(
        "SELECT backend_xid FROM pg_stat_activity WHERE pid = {held_pid}"
    ));
    assert_eq!(own_xmin, held_xid, "the own snapshot starts at the hold");
    let released = std::thread::spawn({
        let su_primary = primary.clone();
        move || {
            let gone = || {
                psql_in(
                    &su_primary,
                    "pivault_keys",
                    &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {held_pid}"),
                )
                .as_deref()
                    == Some("0")
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
            while !gone() {
                assert!(std::time::Instant::now() < deadline, "the hold is ended");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::thread::sleep(std::time::Duration::from_secs(3));
            own.batch_execute("COMMIT")
                .expect("the vault's own session is never ended");
            std::time::Instant::now()
        }
    });
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("the own snapshot left after the hold gets its own patience"),
    );
    let certified = std::time::Instant::now();
    let let_go = released.join().expect("the own session let go");
    assert!(certified >= let_go, "the purge waited for the own snapshot");
    assert!(held.simple_query("SELECT 1").is_err(), "the hold is ended");
    let (purge, members) = every_member_verified(&fx, cert);
    assert!(
        members.iter().any(|m| m["detail"]
            .as_str()
            .unwrap()
            .contains("; ended 1 transaction another vault's role held")),
        "{purge}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    drop(held);
    fx.vault.close().unwrap();
    su(&format!("DROP ROLE {role}"));
}

/// Another vault's role may create schemas. It makes one named after this
/// vault's role (its `"$user"` schema) and one named `postgres` (the
/// superuser's), each with an `unnest(text[])`, which PostgreSQL prefers
/// to the catalog's `unnest(anyarray)` on a path that holds the schema and
/// which every purge calls with a `text[]`; it writes who ran it. A
/// disposal (the purge's lock check calls it) and the superuser's set-up
/// script run again (the documented upgrade path) run none of it: every connection
/// of the vault's sets the catalog alone as its path, and both databases
/// do for every session, the superuser's `psql` too; and neither database
/// is a vault role's (whose owner may change that default). Before, the
/// function ran as this vault's role in the purge, with its privileges
/// over its keys and records.
#[test]
fn another_vaults_role_runs_no_code_as_this_vaults_role_or_the_superuser_through_the_search_path() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let victim = c.config().user;
    let mut attacker = vault_core::keystore::provider::connect_primary(&other).unwrap();
    for schema in [victim.as_str(), "postgres"] {
        attacker
            .batch_execute(&format!(
                "CREATE SCHEMA {schema};
                 GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
                 CREATE TABLE {schema}.caught (who text);
                 GRANT INSERT ON {schema}.caught TO PUBLIC;
                 CREATE FUNCTION {schema}.unnest(text[]) RETURNS SETOF text
                 LANGUAGE plpgsql AS $$
                 BEGIN
                   INSERT INTO {schema}.caught VALUES (current_user);
                   RETURN QUERY SELECT pg_catalog.unnest($1);
                 END $$;"
            ))
            .expect("a vault's role may create a schema of any name");
    }
    let caught = || {
        su(&format!(
            "SELECT (SELECT count(*) FROM {victim}.caught) + (SELECT count(*) FROM postgres.caught)"
        ))
    };
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("the disposal certifies"),
    );
    every_member_verified(&fx, cert);
    // The upgrade path, run by the superuser over the schemas.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-scan-vault.sql");
    let rerun = superuser_psql(&primary, "pivault_keys")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&script)
        .output()
        .expect("psql");
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    fx.vault
        .get_record(&fx.clerk, recs[1].1, &[], None)
        .expect("the vault still reads");
    assert_eq!(
        caught(),
        "0",
        "no code of another vault's role ran as this one's"
    );
    // And the superuser's own sessions: the databases' default path.
    assert_eq!(
        su(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
            WHERE d.datname IN ('pivault_keys', 'pivault_records') \
              AND 'search_path=pg_catalog, pg_temp' = ANY (s.setconfig)"
        ),
        "2",
        "both databases set the catalog alone as every session's path"
    );
    for db in ["pivault_keys", "pivault_records"] {
        assert_eq!(
            psql_in(&primary, db, "SHOW search_path").as_deref(),
            Some("pg_catalog, pg_temp"),
            "the superuser's psql in {db}"
        );
        assert_eq!(
            psql_in(
                &primary,
                db,
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            )
            .as_deref(),
            Some("postgres"),
            "{db} is the superuser's"
        );
    }
    drop(attacker);
    su(&format!(
        "DROP SCHEMA {victim} CASCADE; DROP SCHEMA postgres CASCADE; DROP ROLE {role}"
    ));
    fx.vault.close().unwrap();
}

/// The byte scan under another vault's role's own tables and files:
/// - a file is read in pieces (a relation's file segment is up to 1 GiB,
///   more than one value holds, and read whole it failed every scan): a
///   needle that spans two pieces is found, in pieces of 1,000 bytes, in
///   a row laid across such a boundary;
/// - a table another vault's role made in a schema named as it liked, which
///   this vault's role may not write, is not read by this vault's scan
///   (answered unread); once its owner grants this role INSERT it is read,
///   as a copy of this vault's could be there;
/// - a vault's role may not create large objects (in `pg_largeobject`,
///   which every vault's scan reads).
#[test]
fn another_vaults_own_tables_and_big_files_neither_fail_nor_fill_a_vaults_scan() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    // A row of 1,500 random bytes, stored inline and uncompressed.
    let mut row = vec![0u8; 1500];
    vault_core::crypto::fill_random(&mut row);
    su(&format!(
        "DROP TABLE IF EXISTS pivault_verify.piece_probe;
         CREATE TABLE pivault_verify.piece_probe (v bytea);
         ALTER TABLE pivault_verify.piece_probe ALTER COLUMN v SET STORAGE PLAIN;
         INSERT INTO pivault_verify.piece_probe VALUES ('\\x{}'::bytea);
         CHECKPOINT;",
        hex::encode(&row)
    ));
    let path = su("SELECT pg_relation_filepath('pivault_verify.piece_probe')");
    let at: usize = su(&format!(
        "SELECT position('\\x{}'::bytea IN pg_read_binary_file('{path}'))",
        hex::encode(&row[..16])
    ))
    .parse::<usize>()
    .unwrap()
        - 1;
    assert!(at > 0, "the row is in its file");
    // A boundary of 1,000-byte pieces inside the row, a needle across it.
    let piece = 1000;
    let boundary = (at + 30).div_ceil(piece) * piece;
    assert!(boundary + 30 <= at + row.len());
    let needle = &row[boundary - at - 30..boundary - at + 30];
    let walked = |piece: usize| {
        su(&format!(
            "SELECT count(*) FROM pivault_verify.walk(ARRAY['\\x{}'::bytea], '{{}}'::jsonb, \
             (SELECT oid::text FROM pg_database WHERE datname = current_database()), '', {piece}) \
             WHERE path = '{path}' AND hit",
            hex::encode(needle)
        ))
    };
    assert_eq!(walked(piece), "1", "a needle across two pieces is found");
    assert_eq!(walked(64 << 20), "1", "and in one piece");
    su("DROP TABLE pivault_verify.piece_probe");

    // Another vault's role's own table, in a schema of any name.
    su("DROP SCHEMA IF EXISTS elsewhere CASCADE");
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let mut attacker = vault_core::keystore::provider::connect_primary(&other).unwrap();
    attacker
        .batch_execute(
            "CREATE SCHEMA elsewhere;
             CREATE TABLE elsewhere.filler AS SELECT g FROM generate_series(1, 1000) g;
             CHECKPOINT;",
        )
        .unwrap();
    let filler = su("SELECT pg_relation_filepath('elsewhere.filler')");
    let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
    let mut read_by_mine = || -> Option<bool> {
        mine.query_one(
            &format!(
                "SELECT hit FROM pivault_verify.scan_vault(ARRAY['\\x00ff00ff'::bytea], \
                 'pv_{}', NULL) WHERE path = $1",
                "0".repeat(32)
            ),
            &[&filler],
        )
        .expect("the file is answered")
        .get(0)
    };
    assert_eq!(read_by_mine(), None, "another role's table is not read");
    attacker
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA elsewhere TO {0}; GRANT INSERT ON elsewhere.filler TO {0}",
            c.config().user
        ))
        .unwrap();
    assert_eq!(
        read_by_mine(),
        Some(false),
        "one this vault's role may write is read"
    );
    // Whether a file is there: a relation's only.
    let there = |p: &str| {
        let mut role = vault_core::keystore::provider::connect_primary(&other).unwrap();
        role.query_one("SELECT pivault_verify.file_exists($1)", &[&p])
            .map(|r| r.get::<_, bool>(0))
            .map_err(|e| e.code().cloned())
    };
    assert_eq!(there(&filler), Ok(true));
    for elsewhere in [
        "/etc/passwd",
        "global/pg_control",
        "postmaster.pid",
        "base/1/../../x",
    ] {
        assert_eq!(
            there(elsewhere),
            Err(Some(postgres::error::SqlState::INVALID_PARAMETER_VALUE)),
            "{elsewhere}"
        );
    }
    let refused = attacker
        .simple_query("SELECT lo_from_bytea(0, '\\x00'::bytea)")
        .expect_err("no large object for a vault's role");
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    drop((attacker, mine));
    su(&format!("DROP SCHEMA elsewhere CASCADE; DROP ROLE {role}"));
}

/// Another vault's role names a vault's relation or schema by its OID
/// (which checks no privilege) in a view, a column default, a check
/// constraint, one added later, or a function's body, each of which would
/// record a dependency: a partition so pinned could not be dropped by its
/// split (every disposal touching it failed), and the schema's drop at the
/// vault's deletion had to lock the pinning view, which that role could
/// hold locked. Each is refused, in both databases, under the role's own
/// name or the vault roles' group's; the same objects over its own
/// relations are made, and the vault's own DDL (its partitions, made at
/// set-up) is untouched.
#[test]
fn another_vaults_role_cannot_pin_a_vaults_relations_or_schema() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs: _,
    } = keys_on_the_cluster();
    let su = |db: &str, q: &str| psql_in(&primary, db, q).expect("the superuser's SQL");
    let (role, other) = another_vault_role(&c, tmp.path(), &|q| su("pivault_keys", q));
    // This vault's relations: its keys' partitions here, and in the records
    // database a schema and table its role made.
    let victim = c.config().user;
    let mut s = [0u8; 16];
    vault_core::crypto::fill_random(&mut s);
    let records_schema = format!("pr_{}", hex::encode(s));
    let mut mine =
        vault_core::keystore::provider::connect_primary(&common::cluster_records()).unwrap();
    mine.batch_execute(&format!(
        "CREATE SCHEMA {records_schema}; CREATE TABLE {records_schema}.rows (k bytea)"
    ))
    .unwrap();
    let pinned = [
        (
            "pivault_keys",
            su(
                "pivault_keys",
                &format!(
                    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspowner = '{victim}'::regrole AND c.relname = 'deks_0' LIMIT 1"
                ),
            ),
            su(
                "pivault_keys",
                &format!(
                    "SELECT n.oid FROM pg_namespace n WHERE n.nspowner = '{victim}'::regrole \
                     AND n.nspname ~ '^pv_' LIMIT 1"
                ),
            ),
        ),
        (
            "pivault_records",
            su(
                "pivault_records",
                &format!("SELECT '{records_schema}.rows'::regclass::oid"),
            ),
            su(
                "pivault_records",
                &format!("SELECT '{records_schema}'::regnamespace::oid"),
            ),
        ),
    ];
    for (db, rel, ns) in &pinned {
        assert!(!rel.is_empty() && !ns.is_empty(), "{db}: {rel} {ns}");
        let mut attacker = vault_core::keystore::provider::connect_primary(&PgConfig {
            database: (*db).into(),
            ..other.clone()
        })
        .unwrap();
        attacker
            .batch_execute(
                "CREATE SCHEMA pins; CREATE TABLE pins.own (x int); CREATE TABLE pins.later (x oid)",
            )
            .unwrap();
        let own = "'pins.own'::regclass";
        for make in [
            "CREATE VIEW pins.v AS SELECT {rel}::regclass AS r",
            "CREATE VIEW pins.n AS SELECT {ns}::regnamespace AS n",
            "CREATE TABLE pins.d (r regclass DEFAULT {rel}::regclass)",
            "CREATE TABLE pins.k (r oid CHECK (r <> {rel}::regclass))",
            "ALTER TABLE pins.later ADD CONSTRAINT k CHECK (x <> {rel}::regclass)",
            "CREATE FUNCTION pins.f() RETURNS regclass LANGUAGE sql BEGIN ATOMIC SELECT {rel}::regclass; END",
            "SET ROLE pivault_vaults; CREATE SCHEMA pins_group; \
             CREATE VIEW pins_group.v AS SELECT {rel}::regclass AS r",
        ] {
            let sql = make
                .replace("{rel}", &format!("'{rel}'"))
                .replace("{ns}", &format!("'{ns}'"));
            let refused = attacker
                .batch_execute(&format!("BEGIN; {sql}"))
                .expect_err(&sql);
            assert_eq!(
                refused.code(),
                Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{db}: {sql}: {refused}"
            );
            attacker.batch_execute("ROLLBACK").unwrap();
            // The same over its own relation is made.
            let sql = make
                .replace("{rel}", own)
                .replace("{ns}", "'pins'")
                .replace("SET ROLE pivault_vaults; CREATE SCHEMA pins_group; ", "")
                .replace("pins_group.v", "pins.g");
            attacker
                .batch_execute(&format!("BEGIN; {sql}; ROLLBACK"))
                .unwrap_or_else(|e| panic!("{db}: {sql}: {e}"));
        }
        drop(attacker);
        su(db, "DROP SCHEMA pins CASCADE");
    }
    mine.batch_execute(&format!("DROP SCHEMA {records_schema} CASCADE"))
        .unwrap();
    drop(mine);
    fx.vault.close().unwrap();
    su("pivault_keys", &format!("DROP ROLE {role}"));
}

/// A vault's role sees what holds back its purge, and no more of the other
/// vaults' sessions than PostgreSQL shows every role: not their
/// statements' text (which may carry a client's literals), state, client
/// address or transaction start; and its purge's residue names another
/// role's session by its backend alone, never by the application name
/// that role chose. Before, every vault role was in `pg_monitor` and read
/// all of it.
#[test]
fn a_vaults_role_sees_nothing_of_another_vaults_sessions_but_what_holds_its_purge_back() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let (mut held, pid) = transaction_held(
        &other,
        Some(
            "SET application_name = 'client 078-05-1120'; BEGIN; SELECT txid_current(), 'Jane Roe 078-05-1120'",
        ),
    );
    let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
    let seen = mine
        .query_one(
            "SELECT query, state, client_addr::text, xact_start::text FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap();
    assert_eq!(
        seen.get::<_, Option<String>>(0).as_deref(),
        Some("<insufficient privilege>")
    );
    for i in 1..4 {
        assert_eq!(seen.get::<_, Option<String>>(i), None, "column {i}");
    }
    let blockers = mine
        .query(
            "SELECT what, pid, stranger FROM pivault_verify.horizon_blockers(pg_current_xact_id()::text::xid)",
            &[],
        )
        .unwrap();
    let theirs: Vec<(String, bool)> = blockers
        .iter()
        .filter(|r| r.get::<_, Option<i32>>(1) == Some(pid))
        .map(|r| (r.get(0), r.get(2)))
        .collect();
    assert_eq!(
        theirs,
        vec![(
            format!("open snapshot of backend {pid} (another role's)"),
            true
        )]
    );
    assert!(
        blockers
            .iter()
            .all(|r| !r.get::<_, String>(0).contains("078-05-1120")),
        "no other role's application name"
    );
    // What the purge still reads: the WAL segments' names and the standbys.
    let segments: i64 = mine
        .query_one("SELECT count(*) FROM pg_ls_waldir()", &[])
        .unwrap()
        .get(0);
    assert!(segments > 0);
    let standbys: i64 = mine
        .query_one("SELECT pivault_verify.streaming_standbys()", &[])
        .unwrap()
        .get(0);
    assert_eq!(standbys, c.members.len() as i64 - 1);
    held.batch_execute("ROLLBACK").unwrap();
    drop((held, mine));
    su(&format!("DROP ROLE {role}"));
}

/// `VACUUM FULL` waits for every lock on the relation it rewrites and on
/// its indexes, and a few functions that check no privilege take a lock
/// on any relation and keep it to the end of the transaction
/// (`pg_get_partition_constraintdef` of another vault's index partition,
/// named by its OID, which any role can read). Another vault's role so
/// kept this vault's partitions from ever being rewritten, even once such
/// a session was ended after 30 s, by taking the locks again in short
/// transactions, one after another. The functions are taken from PUBLIC;
/// another vault role that holds a lock on what the purge rewrites (here
/// one the provider let call one, in sessions of 20 s opened every 8 s)
/// is ended once that role has held one for 30 s, and at once after that,
/// and the disposal certifies, saying so.
#[test]
fn another_vaults_lock_on_a_vaults_relations_is_ended_and_the_disposal_certifies() {
    let _one = serial();
    let KeysOnTheCluster {
        c,
        primary,
        tmp,
        fx,
        recs,
    } = keys_on_the_cluster();
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    let mut mine = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
    let deks = su(&format!("SELECT '{schema}.deks'::regclass::oid"));
    for call in [
        format!("SELECT count(*) FROM pg_partition_tree({deks})"),
        format!("SELECT pg_get_partition_constraintdef({deks})"),
        format!("SELECT pg_get_object_address('schema', '{{{schema}}}', '{{}}')"),
    ] {
        let refused = mine
            .simple_query(&call)
            .expect_err("a vault role may not take another's locks");
        assert_eq!(
            refused.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{call}: {refused}"
        );
    }
    su(&format!(
        "GRANT EXECUTE ON FUNCTION pg_get_partition_constraintdef(oid) TO {role}"
    ));
    // Every index partition of the vault's tables, locked for 20 s, by a
    // new session every 8 s.
    let lock = format!(
        "SELECT count(pg_get_partition_constraintdef(c.oid)) FROM pg_class c
          WHERE c.relnamespace = '{schema}'::regnamespace AND c.relkind = 'i' AND c.relispartition"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let lockers = churning_lockers(&other, &lock, &stop);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let locked: i64 = su(&format!(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE a.usename = '{role}' AND l.granted
            AND l.relation IN (SELECT oid FROM pg_class WHERE relnamespace = '{schema}'::regnamespace
                                                          AND relkind = 'i')"
    ))
    .parse()
    .unwrap();
    assert!(locked >= 16, "the index partitions are locked: {locked}");
    let started = std::time::Instant::now();
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .expect("another vault's locks keep no disposal from certifying"),
    );
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let ended = lockers.join().unwrap();
    assert!(took >= std::time::Duration::from_secs(25), "{took:?}");
    assert!(ended >= 1, "a locking session is ended");
    let (purge, members) = every_member_verified(&fx, cert);
    assert!(
        members
            .iter()
            .any(|m| m["detail"].as_str().unwrap().contains(
                "session(s) of another vault's role that held a lock on this vault's relations"
            )),
        "{purge}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&recs[0].2)),
        Vec::<PathBuf>::new()
    );
    drop(mine);
    fx.vault.close().unwrap();
    su(&format!(
        "REVOKE EXECUTE ON FUNCTION pg_get_partition_constraintdef(oid) FROM {role}; DROP ROLE {role}"
    ));
}

/// The keystore purge's evidence in certificate `cert` of `fx`, and its
/// members, each of which must be verified.
fn every_member_verified(
    fx: &Fixture,
    cert: vault_core::ids::CertificateId,
) -> (Value, Vec<Value>) {
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let purge = doc.body["sanitization"]["details"]["keystore_purge"].clone();
    let members = purge["members"].as_array().expect("members").clone();
    assert!(members.iter().all(|m| m["verified"] == true), "{purge}");
    (purge, members)
}

/// Sessions of `other` that each run `lock` in a transaction held 20 s, a
/// new one every 8 s until `stop`: how many were ended.
fn churning_lockers(
    other: &PgConfig,
    lock: &str,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    let (other, lock, stop) = (other.clone(), lock.to_owned(), stop.clone());
    std::thread::spawn(move || {
        let mut sessions = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let (s, _) = transaction_held(&other, Some(&format!("BEGIN; {lock}")));
            sessions.push(std::thread::spawn(move || {
                let mut s = s;
                std::thread::sleep(std::time::Duration::from_secs(20));
                s.batch_execute("COMMIT").is_ok()
            }));
            std::thread::sleep(std::time::Duration::from_secs(8));
        }
        sessions
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|lived| !lived)
            .count()
    })
}

/// A purge of several key partitions while another vault's role keeps
/// each of them locked by sessions of its own (20 s each, a new one every
/// 8 s): the role is timed by one clock over all of the vault's relations,
/// started at the purge's first look at all of them, not by one per
/// relation started when the rewrites come to it (30 s for each relation
/// in turn, minutes for a purge of many: first sightings 60.7 s apart
/// and the disposal 110 s for three partitions). A session of each
/// locker is ended, and the disposal certifies.
#[test]
fn another_vaults_locks_on_many_partitions_are_timed_by_one_clock_from_the_purges_first_look() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), Some(c.config()), None);
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    // Records until three key partitions hold one.
    let mut recs = Vec::new();
    while su(&format!(
        "SELECT count(DISTINCT tableoid) FROM {schema}.deks"
    )) != "3"
    {
        recs.extend(put_records(&fx, 1));
    }
    let (role, other) = another_vault_role(&c, tmp.path(), &su);
    // Each touched partition locked by sessions of its own, and nothing
    // else (`LOCK TABLE` of the partition alone, as the provider let this
    // role: whatever way a role may find to lock one relation), so that
    // ending the one that locks the first relation leaves the others'.
    let partitions = su(&format!(
        "SELECT string_agg(DISTINCT tableoid::regclass::text, ' ') FROM {schema}.deks"
    ));
    su(&format!("GRANT USAGE ON SCHEMA {schema} TO {role}"));
    let stop = Arc::new(AtomicBool::new(false));
    let lockers: Vec<_> = partitions
        .split(' ')
        .map(|p| {
            su(&format!("GRANT SELECT ON {p} TO {role}"));
            churning_lockers(
                &other,
                &format!("LOCK TABLE {p} IN ACCESS SHARE MODE"),
                &stop,
            )
        })
        .collect();
    assert_eq!(lockers.len(), 3);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let doomed: Vec<RecordId> = recs.iter().map(|r| r.1).collect();
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Records(doomed)))
            .expect("another vault's locks keep no disposal from certifying"),
    );
    stop.store(true, Ordering::SeqCst);
    for l in lockers {
        assert!(l.join().unwrap() >= 1, "a locking session of each is ended");
    }
    // The role's clocks on this vault's relations: one.
    let clocks = su(&format!(
        "SELECT count(DISTINCT held) FROM pivault_verify.holds WHERE held LIKE 'lock on %by role {role}'"
    ));
    assert_eq!(clocks, "1", "one clock for the role over every relation");
    every_member_verified(&fx, cert);
    let keys: Vec<Vec<u8>> = recs.iter().map(|r| r.2.clone()).collect();
    assert_eq!(c.files_holding(&keys), Vec::<PathBuf>::new());
    fx.vault.close().unwrap();
    su(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn writes_racing_disposals_on_the_cluster_lose_nothing_and_every_certificate_holds() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = Arc::new(vault_on_cluster(&tmp.path().join("vault"), &c));
    let doomed = put_records(&fx, 4);
    let stop = Arc::new(AtomicBool::new(false));
    // Two clerks write and update other subjects' records while the
    // officer disposes of four subjects one by one (the same buckets are
    // likely touched by both: 8 buckets in the test vaults).
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let fx = fx.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) || n < 5 {
                    let s = SubjectId::new();
                    let id = fx
                        .vault
                        .put_record(&fx.clerk, common::CUSTOMERS, s, &body(1000 * t + n))
                        .unwrap();
                    fx.vault
                        .update_record(&fx.clerk, id, &body(2000 * t + n))
                        .unwrap();
                    acked.push((id, body(2000 * t + n)));
                    n += 1;
                }
                acked
            })
        })
        .collect();
    let mut needles = Vec::new();
    for (s, _, w) in &doomed {
        needles.push(w.clone());
        certificate_id(
            fx.vault
                .dispose(&fx.officer, &request(DisposalScope::Subject(*s)))
                .unwrap(),
        );
    }
    stop.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        for (id, want) in w.join().unwrap() {
            let got = fx.vault.get_record(&fx.clerk, id, &[], None).unwrap();
            // Masked, but the last four digits tell the versions apart.
            let ssn = want["ssn"].as_str().unwrap();
            let shown = got.fields["ssn"].as_str().unwrap();
            assert!(
                shown.ends_with(&ssn[7..]),
                "an acknowledged update was lost: {shown} vs {ssn}"
            );
            written += 1;
        }
    }
    assert!(written >= 10, "{written}");
    assert_eq!(c.files_holding(&needles), Vec::<PathBuf>::new());
    Arc::try_unwrap(fx).unwrap().vault.close().unwrap();
}

/// A disposal's byte scan reads what a row of its vault can reach, not the
/// files of other vaults' relations (`pivault_verify.scan_vault`): with
/// many vaults on a cluster, each disposal read every vault's bytes. The
/// skip holds only for schemas of *another* role (which cannot read this
/// vault's rows): the same bytes in a schema of the vault's own role (an
/// insider copying its rows under a made-up vault's name) are found. A
/// vault's whole scan (`files_containing`) does not read the other role's
/// either, and the vault's role may not run the superuser's whole scan
/// (`pivault_verify.scan`), which finds the bytes: otherwise any vault's
/// role could test chosen bytes against every vault's files. The
/// certificate says how many files the scan did not read.
#[test]
fn a_disposal_scan_skips_other_roles_vaults_files_but_not_its_own_roles() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let primary = primary_member(&c);
    let mut rnd = [0u8; 64];
    vault_core::crypto::fill_random(&mut rnd);
    let (other_bytes, own_bytes) = (rnd[..32].to_vec(), rnd[32..].to_vec());
    let name = |b: &[u8]| format!("pv_{}", hex::encode(&b[..16]));
    let (other, own) = (name(&other_bytes), name(&own_bytes));
    /// Drops what the test planted, whatever happens to it.
    struct Planted(String, String, String);
    impl Drop for Planted {
        fn drop(&mut self) {
            let _ = psql_in(
                &self.0,
                "pivault_keys",
                &format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS pv_test_other",
                    self.1, self.2
                ),
            );
        }
    }
    let _planted = Planted(primary.clone(), other.clone(), own.clone());
    psql_in(
        &primary,
        "pivault_keys",
        &format!(
            "CREATE ROLE pv_test_other NOLOGIN;
             CREATE SCHEMA {other} AUTHORIZATION pv_test_other;
             CREATE TABLE {other}.t (v bytea); ALTER TABLE {other}.t OWNER TO pv_test_other;
             ALTER TABLE {other}.t ALTER COLUMN v SET STORAGE PLAIN;
             INSERT INTO {other}.t VALUES ('\\x{}');
             CREATE SCHEMA {own} AUTHORIZATION pivault;
             CREATE TABLE {own}.t (v bytea); ALTER TABLE {own}.t OWNER TO pivault;
             ALTER TABLE {own}.t ALTER COLUMN v SET STORAGE PLAIN;
             INSERT INTO {own}.t VALUES ('\\x{}');
             CHECKPOINT",
            hex::encode(&other_bytes),
            hex::encode(&own_bytes)
        ),
    )
    .expect("planted");
    wait_healthy(&c);
    for m in &c.members {
        psql(m, "CHECKPOINT");
    }
    // In a table file (not only the WAL), on a member.
    let in_tables = |hits: &[String]| hits.iter().filter(|h| h.contains(": base/")).count();
    let keys = fx.vault.keystore();
    let full = keys
        .files_containing(std::slice::from_ref(&other_bytes))
        .unwrap();
    assert_eq!(in_tables(&full), 0, "{full:?}");
    let whole = format!(
        "SELECT count(*) FROM pivault_verify.scan(ARRAY['\\x{}'::bytea]) WHERE hit AND path LIKE 'base/%'",
        hex::encode(&other_bytes)
    );
    assert_ne!(
        psql_in(&primary, "pivault_keys", &whole).as_deref(),
        Some("0"),
        "the superuser's whole scan finds the other role's table"
    );
    whole_scan_refused(&common::cluster_keystore(), &whole);
    let narrowed = keys
        .files_containing_for_buckets(&[], std::slice::from_ref(&other_bytes), None)
        .unwrap();
    assert_eq!(in_tables(&narrowed.hits), 0, "{narrowed:?}");
    assert!(
        narrowed.skipped >= 3,
        "a file a member at least: {narrowed:?}"
    );
    let own_copy = keys
        .files_containing_for_buckets(&[], std::slice::from_ref(&own_bytes), None)
        .unwrap();
    assert!(
        in_tables(&own_copy.hits) > 0,
        "a schema of the vault's own role is read: {own_copy:?}"
    );

    // The certificate names what was not read.
    let recs = put_records(&fx, 2);
    let cert = certificate_id(
        fx.vault
            .dispose(&fx.officer, &request(DisposalScope::Subject(recs[0].0)))
            .unwrap(),
    );
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let body = doc.body.to_string();
    assert!(
        body.contains(
            "file(s) and directories of other databases and of other vaults' relations, of this vault's relations the purge did not rewrite"
        ),
        "{body}"
    );
}

/// The keystore's partition of `bucket` (`keystore/postgres.rs`: 16
/// partitions of consecutive buckets, fewer when there are fewer buckets).
fn key_partition(bucket: u32, buckets: u32) -> u32 {
    let n = 16.min(buckets.max(1));
    (0..n)
        .find(|p| p * buckets / n <= bucket && bucket < (p + 1) * buckets / n)
        .unwrap_or(0)
}

/// A disposal's key scan reads, of the vault's own relations, only those
/// its purge rewrote (the touched buckets' data-key partitions and the
/// small key tables), as the embedded engine reads only the touched
/// buckets' table files: a live wrapped key in an untouched partition's
/// table file is not read; scanning for its own bucket, it is found.
#[test]
fn a_key_scan_reads_the_touched_buckets_partitions_and_not_the_others() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let keys = fx.vault.keystore();
    let buckets = keys.bucket_count();
    let recs = put_records(&fx, 1);
    let (subject, id, _) = &recs[0];
    let bucket = keys.bucket_of(*subject);
    let other = (0..buckets)
        .find(|b| key_partition(*b, buckets) != key_partition(bucket, buckets))
        .expect("a bucket in another partition");
    let w = keys.wrapped_dek(*subject, *id, 1).unwrap().unwrap();
    for m in &c.members {
        psql(m, "CHECKPOINT");
    }
    let in_tables = |hits: &[String]| hits.iter().filter(|h| h.contains(": base/")).count();
    let own = keys
        .files_containing_for_buckets(&[bucket], std::slice::from_ref(&w), None)
        .unwrap();
    assert!(
        in_tables(&own.hits) > 0,
        "its own partition's file is read: {own:?}"
    );
    let untouched = keys
        .files_containing_for_buckets(&[other], std::slice::from_ref(&w), None)
        .unwrap();
    assert_eq!(in_tables(&untouched.hits), 0, "{untouched:?}");
    fx.vault.close().unwrap();
}

/// The WAL holds every vault's recent writes, so a scan of it answers for
/// other vaults' bytes: a vault's byte scan reads no WAL segment, whatever
/// segment it names (a purge needs none read: its rounds leave no segment
/// at or before its last write's on a verified member, checked by name,
/// and no later one can hold a purged byte). The superuser's scan reads
/// every segment at or before the one named (where a purge that skipped
/// its WAL rounds leaves the key) and none after it; without one named,
/// every one. The needles go into the WAL alone (logical messages, three in
/// a row: one crossing a WAL page boundary is split by the page header).
#[test]
fn a_vaults_scan_reads_no_wal_and_the_superusers_reads_it_up_to_the_purges_segment() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let keys = fx.vault.keystore();
    let primary = primary_member(&c);
    let sql = |q: &str| psql_in(&primary, "pivault_keys", q).expect("primary up");
    let mut rnd = [0u8; 64];
    vault_core::crypto::fill_random(&mut rnd);
    let (before, after) = (rnd[..32].to_vec(), rnd[32..].to_vec());
    let emit = |n: &[u8]| {
        let m = format!(
            "pg_logical_emit_message(true, 'pivault-test', '\\x{}'::bytea)",
            hex::encode(n)
        );
        sql(&format!("SELECT {m}, {m}, {m}"));
    };
    emit(&before);
    let segment = sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    sql("SELECT pg_switch_wal()");
    emit(&after);
    let later = sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(later[8..] > segment[8..], "{later} after {segment}");
    // The superuser's scan on the primary: the WAL files holding `needle`.
    let superusers = |needle: &[u8], wal_after: Option<&str>| -> Vec<String> {
        let got = sql(&format!(
            "SELECT path FROM pivault_verify.scan_vault(ARRAY['\\x{}'::bytea], 'pv_{}', NULL, {}) \
              WHERE hit AND path LIKE 'pg_wal/%'",
            hex::encode(needle),
            "0".repeat(32),
            wal_after.map_or("NULL".to_owned(), |w| format!("'{w}'")),
        ));
        got.lines().map(str::to_owned).collect()
    };
    assert_eq!(superusers(&before, Some(&segment)).len(), 1);
    assert_eq!(superusers(&after, Some(&segment)).len(), 0);
    assert_eq!(superusers(&after, None).len(), 1);
    // The vault's role: no WAL segment read, whatever it names.
    let in_wal = |hits: &[String]| hits.iter().filter(|h| h.contains(": pg_wal/")).count();
    for (needle, wal_after) in [
        (&before, Some(segment.as_str())),
        (&before, None),
        (&after, Some(later.as_str())),
        (&after, None),
    ] {
        let scan = keys
            .files_containing_for_buckets(&[], std::slice::from_ref(needle), wal_after)
            .unwrap();
        assert_eq!(in_wal(&scan.hits), 0, "{wal_after:?}: {scan:?}");
    }
    // Not read and missed: skipped, the directory answered unread and no
    // segment named.
    let mut role = vault_core::keystore::provider::connect_primary(&c.config()).unwrap();
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    for wal_after in [None, Some(segment.as_str()), Some(later.as_str())] {
        let row = role
            .query_one(
                "SELECT count(*) FILTER (WHERE path = 'pg_wal' AND hit IS NULL),
                        count(*) FILTER (WHERE path LIKE 'pg_wal/%')
                   FROM pivault_verify.scan_vault($1, $2, NULL, $3)",
                &[&vec![before.clone()], &schema, &wal_after],
            )
            .unwrap();
        let (unread, segments): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!((unread, segments), (1, 0), "{wal_after:?}");
    }
    fx.vault.close().unwrap();
}

#[test]
fn two_vaults_on_one_cluster_dispose_independently() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let a = vault_on_cluster(&tmp.path().join("a"), &c);
    let b = vault_on_cluster(&tmp.path().join("b"), &c);
    let ra = put_records(&a, 2);
    let rb = put_records(&b, 2);
    // Same subject IDs cannot collide, but the same bucket numbers do: a
    // disposal in A must not touch B's keys in the same bucket.
    certificate_id(
        a.vault
            .dispose(&a.officer, &request(DisposalScope::Subject(ra[0].0)))
            .unwrap(),
    );
    for (s, id, w) in &rb {
        assert_eq!(
            b.vault.keystore().wrapped_dek(*s, *id, 1).unwrap().as_ref(),
            Some(w)
        );
        b.vault.get_record(&b.clerk, *id, &[], None).unwrap();
    }
    // B's key store does not hold A's keys, nor A's B's (one schema each).
    assert_eq!(
        b.vault.keystore().wrapped_dek(ra[1].0, ra[1].1, 1).unwrap(),
        None
    );
    assert_eq!(
        a.vault.keystore().wrapped_dek(rb[0].0, rb[0].1, 1).unwrap(),
        None
    );
    // A record of A is not readable through B by its ID.
    assert!(b.vault.get_record(&b.clerk, ra[1].1, &[], None).is_err());
    a.vault.close().unwrap();
    b.vault.close().unwrap();
}

/// Restores the process's connection budget when a test that lowered it ends.
struct BudgetReset;

impl Drop for BudgetReset {
    fn drop(&mut self) {
        vault_core::keystore::postgres::set_cluster_connections(
            vault_core::keystore::postgres::DEFAULT_CLUSTER_CONNECTIONS,
        );
    }
}

/// Working connections of the fixtures' role on the primary now: not the
/// records stores' one-opener locks (outside the budget by design; each
/// holds an `EXCLUSIVE` lock on its vault's `holder` table).
fn working_backends(c: &Cluster) -> Option<usize> {
    let m = &c.members[primary_index(c) - 1];
    psql(
        m,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'pivault' AND pid NOT IN \
         (SELECT pid FROM pg_locks WHERE locktype = 'relation' AND mode = 'ExclusiveLock' AND granted)",
    )?
    .parse()
    .ok()
}

#[test]
fn many_vaults_in_one_process_share_a_budget_of_connections_and_lose_nothing() {
    const VAULTS: usize = 24;
    const BUDGET: usize = 10;
    let _one = serial();
    let c = Arc::new(cluster());
    let _reset = BudgetReset;
    vault_core::keystore::postgres::set_cluster_connections(BUDGET);
    let tmp = tempfile::tempdir().unwrap();
    let vaults: Arc<Vec<Fixture>> = Arc::new(
        (0..VAULTS)
            .map(|i| vault_on_cluster(&tmp.path().join(format!("v{i}")), &c))
            .collect(),
    );
    let doomed = put_records(&vaults[0], 2);
    let stop = Arc::new(AtomicBool::new(false));
    // The primary's own count, sampled while 8 clerks write to every vault
    // and an officer disposes in one of them.
    let sampler = {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !stop.load(Ordering::SeqCst) {
                most = most.max(working_backends(&c).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            most
        })
    };
    let clerks: Vec<_> = (0..8)
        .map(|t| {
            let vaults = vaults.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for n in 0..3 * VAULTS {
                    let v = (t * 5 + n) % VAULTS;
                    let fx = &vaults[v];
                    let b = body((100 * t + n) as u32);
                    let id = fx
                        .vault
                        .put_record(&fx.clerk, common::CUSTOMERS, SubjectId::new(), &b)
                        .unwrap();
                    acked.push((v, id, b));
                }
                acked
            })
        })
        .collect();
    let officer = {
        let vaults = vaults.clone();
        let doomed = doomed.clone();
        std::thread::spawn(move || {
            let fx = &vaults[0];
            certificate_id(
                fx.vault
                    .dispose(&fx.officer, &request(DisposalScope::Subject(doomed[0].0)))
                    .unwrap(),
            )
        })
    };
    let acked: Vec<_> = clerks.into_iter().flat_map(|t| t.join().unwrap()).collect();
    officer.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let most = sampler.join().unwrap();
    // Every acknowledged write reads back from its own vault, and from no
    // other: the vaults took over each other's places, never their
    // connections.
    assert_eq!(acked.len(), 8 * 3 * VAULTS);
    for (v, id, b) in &acked {
        let got = vaults[*v]
            .vault
            .get_record(&vaults[*v].clerk, *id, &[], None)
            .unwrap();
        let ssn = b["ssn"].as_str().unwrap();
        assert!(got.fields["ssn"].as_str().unwrap().ends_with(&ssn[7..]));
        let other = &vaults[(*v + 1) % VAULTS];
        assert!(
            other
                .vault
                .get_record(&other.clerk, *id, &[], None)
                .is_err()
        );
    }
    assert!(
        fx_gone(&vaults[0], &doomed[0]),
        "the disposed record still reads"
    );
    // The budget held on the primary: without it each of the 24 vaults
    // keeps up to 8 connections. A closed connection's backend takes a
    // moment to leave pg_stat_activity, and a purge opens one per member
    // outside the budget: a little slack for both.
    assert!(
        most <= BUDGET + 3,
        "{most} working connections on the primary, budget {BUDGET}"
    );
    assert!(most > 0, "the sampler saw no connection at all");
    for fx in Arc::try_unwrap(vaults).ok().unwrap() {
        fx.vault.close().unwrap();
    }
}

/// Whether a disposed record now answers as disposed.
fn fx_gone(fx: &Fixture, (_, id, _): &(SubjectId, RecordId, Vec<u8>)) -> bool {
    matches!(
        fx.vault.get_record(&fx.clerk, *id, &[], None),
        Err(Error::Disposed { .. })
    )
}

/// The first object field named `key` anywhere in `v`.
fn find(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .cloned()
            .or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

#[test]
fn the_server_on_a_cluster_keystore_serves_racing_clerks_and_disposals_and_certifies_every_member()
{
    let _one = serial();
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let fx = vault_on_cluster(&vault_dir, &c);
    fx.vault.close().unwrap();
    // The real server: its disposals run on tokio's blocking threads, where
    // the blocking PostgreSQL client must not start its runtime.
    let srv = crate::server::start_on(
        dir,
        vault_dir,
        common::PASSPHRASE,
        &["--logins-per-minute", "10000"],
    );
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let put = |n: u32| -> String {
        let a = srv.call(
            "POST",
            "/v1/records",
            Some(&clerk),
            Some(&json!({ "collection": common::CUSTOMERS, "data": body(n) })),
        );
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["record_id"].as_str().expect("id").to_owned()
    };
    let doomed: Vec<String> = (0..3).map(put).collect();
    // Two clerks' writes race three one-record disposals.
    let (kept, certs) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|t| s.spawn(move || (0..6).map(|n| put(100 * (t + 1) + n)).collect::<Vec<_>>()))
            .collect();
        let disposals: Vec<_> = doomed
            .iter()
            .map(|id| {
                let officer = &officer;
                let srv = &srv;
                s.spawn(move || {
                    let d = srv.call(
                        "POST",
                        "/v1/disposals",
                        Some(officer),
                        Some(&json!({ "scope": "record", "record": id, "data_owner": "Quimby Hardware" })),
                    );
                    assert_eq!(d.status, 200, "{d:?}");
                    d.json()["certificate_id"].as_str().expect("certificate").to_owned()
                })
            })
            .collect();
        (
            writers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect::<Vec<_>>(),
            disposals
                .into_iter()
                .map(|d| d.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    for id in &kept {
        let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
        assert_eq!(a.status, 200, "an acknowledged write is unreadable: {a:?}");
    }
    for id in &doomed {
        let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
        assert_eq!(a.status, 410, "{a:?}");
    }
    for cert in certs {
        let file = srv.call(
            "GET",
            &format!("/v1/certificates/{cert}/file"),
            Some(&officer),
            None,
        );
        assert_eq!(file.status, 200, "{file:?}");
        let v: Value = serde_json::from_str(&file.text).unwrap();
        let purge = find(&v, "keystore_purge").expect("keystore_purge");
        assert_eq!(purge["engine"], "postgresql", "{purge}");
        let members = purge["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "{purge}");
        assert!(members.iter().all(|m| m["verified"] == true), "{purge}");
    }
}

/// `scripts/cluster.sh` with `args` (a member down or back).
pub(crate) fn cluster_script(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
    let st = std::process::Command::new(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("scripts/cluster.sh");
    assert!(st.success(), "cluster.sh {args:?}");
}

/// One SQL answer from member `m` as the superuser, or `None` if it is down.
fn psql(m: &str, sql: &str) -> Option<String> {
    psql_in(m, "postgres", sql)
}

/// [`psql`] in database `db`.
pub(crate) fn psql_in(m: &str, db: &str, sql: &str) -> Option<String> {
    let out = superuser_psql(m, db)
        .args(["-tAc", sql])
        .env("PGCONNECT_TIMEOUT", "2")
        .output()
        .expect("psql");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `psql` as the cluster's superuser on member `m`, in database `db`.
fn superuser_psql(m: &str, db: &str) -> std::process::Command {
    let (host, port) = m.rsplit_once(':').unwrap();
    let pw = std::fs::read_to_string(
        std::env::var("PIVAULT_PG_SUPERUSER_PASSWORD_FILE").expect("superuser password file"),
    )
    .unwrap();
    let mut psql = std::process::Command::new("psql");
    psql.args(["-h", host, "-p", port, "-U", "postgres", "-d", db])
        .env("PGPASSWORD", pw.trim());
    psql
}

/// Connected as the vault role of `cfg`: the superuser's whole scan
/// (`whole`, a query of `pivault_verify.scan`) is refused it, which would
/// answer for chosen bytes in every vault's files. The connection, for more.
pub(crate) fn whole_scan_refused(cfg: &PgConfig, whole: &str) -> postgres::Client {
    let mut role = vault_core::keystore::provider::connect_primary(cfg).expect("the vault's role");
    let refused = role
        .simple_query(whole)
        .expect_err("the whole scan refused");
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    role
}

/// The index (1-based, as cluster.sh counts) of the primary.
/// The member that is the primary now (`host:port`).
pub(crate) fn primary_member(c: &Cluster) -> String {
    c.members[primary_index(c) - 1].clone()
}

pub(crate) fn primary_index(c: &Cluster) -> usize {
    c.members
        .iter()
        .position(|m| psql(m, "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
        .expect("a primary")
        + 1
}

/// Waits until a member other than `old` (1-based) is the primary.
pub(crate) fn wait_primary_other_than(c: &Cluster, old: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let p = c
            .members
            .iter()
            .position(|m| psql(m, "SELECT pg_is_in_recovery()").as_deref() == Some("f"));
        if p.is_some_and(|i| i + 1 != old) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no new primary");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Waits until a primary streams to both standbys again.
pub(crate) fn wait_healthy(c: &Cluster) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let ok = c.members.iter().any(|m| {
            psql(
                m,
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            )
            .as_deref()
                == Some("2")
        });
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster did not heal within 90 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_standby_that_is_down_makes_the_batch_wait_and_it_completes_once_the_member_is_back() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let recs = put_records(&fx, 3);
    let (_, id, w) = recs[0].clone();
    let p = primary_index(&c);
    let standby = if p == 3 { 2 } else { 3 };
    let down = c.members[standby - 1].clone();
    let doctor = |fx: &Fixture, name: &str| {
        vault_core::doctor::checks(&fx.vault, common::T0)
            .unwrap()
            .into_iter()
            .find(|ch| ch.name == name)
            .unwrap_or_else(|| panic!("doctor has no {name} check"))
    };
    let members = doctor(&fx, "keystore-cluster-members");
    assert_eq!(members.level, vault_core::doctor::Level::Ok, "{members:?}");
    assert_eq!(
        doctor(&fx, "keystore-cluster-settings").level,
        vault_core::doctor::Level::Ok
    );
    cluster_script(&["member-stop", &standby.to_string()]);
    let members = doctor(&fx, "keystore-cluster-members");
    assert_eq!(
        members.level,
        vault_core::doctor::Level::Fail,
        "{members:?}"
    );
    assert!(members.detail.contains(&down), "{members:?}");
    let outcome = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(id)));
    // Back before any assertion, so a failure here leaves a whole cluster.
    cluster_script(&["member-start", &standby.to_string()]);
    match outcome {
        Err(Error::DisposalFailed(msg)) => {
            assert!(msg.contains("members_not_verified"), "{msg}");
            assert!(msg.contains(&down), "the member down must be named: {msg}");
            assert!(
                msg.contains(&format!("{down}: unreachable, its files were not scanned")),
                "{msg}"
            );
        }
        other => panic!("a member down must fail the batch: {other:?}"),
    }
    let batches = fx.vault.disposals(&fx.officer).unwrap();
    assert!(batches[0].failed.is_some());
    assert!(matches!(
        fx.vault.certificate(&fx.auditor, batches[0].certificate_id),
        Err(Error::NotFound(_))
    ));
    wait_healthy(&c);
    let cert = fx.vault.retry_disposal(&fx.officer, batches[0].id).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let purge = &doc.body["sanitization"]["details"]["keystore_purge"];
    let members = purge["members"].as_array().unwrap();
    assert!(
        members
            .iter()
            .any(|m| m["member"] == down.as_str() && m["verified"] == true),
        "{purge}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&w)),
        Vec::<PathBuf>::new()
    );
    fx.vault.close().unwrap();
}

#[test]
fn the_primary_killed_in_the_middle_of_a_disposal_fails_over_and_the_batch_completes_on_the_new_one()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let recs = put_records(&fx, 8);
    let (_, id, w) = recs[0].clone();
    // The keys are deleted and the buckets rotated (acknowledged by the
    // old primary and its synchronous standby); then the primary dies.
    let failover = Failover::at_ratchet(&c, &fx);
    let outcome = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(id)));
    failover.finish(&c, &fx, outcome);
    // Nothing acknowledged before the failover is lost; the old primary,
    // rejoined as a standby, holds no byte of the destroyed key.
    for (_, r, _) in &recs[1..] {
        fx.vault.get_record(&fx.clerk, *r, &[], None).unwrap();
    }
    assert_eq!(
        c.files_holding(std::slice::from_ref(&w)),
        Vec::<PathBuf>::new()
    );
    fx.vault.close().unwrap();
}

/// The primary stopped when a disposal batch reaches `epoch_ratcheted` (its
/// keys deleted and its buckets rotated, acknowledged by the primary and
/// its synchronous standby): the choreography of the failover tests.
pub(crate) struct Failover {
    old: usize,
    killed: Arc<AtomicBool>,
}

impl Failover {
    /// Arms the crash hook of `fx`'s vault.
    pub(crate) fn at_ratchet(c: &Cluster, fx: &Fixture) -> Failover {
        let old = primary_index(c);
        let killed = Arc::new(AtomicBool::new(false));
        let k = killed.clone();
        fx.vault.set_crash_hook(Some(Box::new(move |step| {
            if step == "epoch_ratcheted" && !k.swap(true, Ordering::SeqCst) {
                cluster_script(&["member-stop", &old.to_string()]);
            }
        })));
        Failover { old, killed }
    }

    /// After the batch: the hook ran, the old primary is back and a
    /// standby was promoted; the purge, which ran on the new primary, could
    /// not verify the dead member, so the batch failed naming it and waits;
    /// once every member is back, a retry certifies with all three
    /// verified. Returns the certificate.
    pub(crate) fn finish(
        self,
        c: &Cluster,
        fx: &Fixture,
        outcome: vault_core::Result<DisposalOutcome>,
    ) -> vault_core::ids::CertificateId {
        fx.vault.set_crash_hook(None);
        assert!(self.killed.load(Ordering::SeqCst), "the hook ran");
        cluster_script(&["member-start", &self.old.to_string()]);
        assert_ne!(primary_index(c), self.old, "a standby was promoted");
        let cert = match outcome {
            Ok(o) => panic!("the dead member cannot have been verified: {o:?}"),
            Err(Error::DisposalFailed(msg)) => {
                assert!(msg.contains(&c.members[self.old - 1]), "{msg}");
                wait_healthy(c);
                let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
                fx.vault.retry_disposal(&fx.officer, batch).unwrap()
            }
            Err(e) => panic!("the batch must wait for the member, not error: {e:?}"),
        };
        let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
        let purge = &doc.body["sanitization"]["details"]["keystore_purge"];
        let members = purge["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{purge}");
        assert!(members.iter().all(|m| m["verified"] == true), "{purge}");
        cert
    }
}

#[test]
fn doctor_fails_a_member_whose_settings_would_keep_destroyed_keys() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_cluster(&tmp.path().join("vault"), &c);
    let settings = || {
        vault_core::doctor::checks(&fx.vault, common::T0)
            .unwrap()
            .into_iter()
            .find(|ch| ch.name == "keystore-cluster-settings")
            .expect("keystore-cluster-settings check")
    };
    assert_eq!(
        settings().level,
        vault_core::doctor::Level::Ok,
        "{:?}",
        settings()
    );
    // An operator turns WAL recycling back on on one standby (ALTER SYSTEM
    // outlives Patroni's own configuration): recycled segments keep old
    // bytes, and doctor must say so, naming the member.
    let standby = c
        .members
        .iter()
        .find(|m| psql(m, "SELECT pg_is_in_recovery()").as_deref() == Some("t"))
        .expect("a standby")
        .clone();
    let set = MemberSetting::set(&standby, "wal_recycle", "on");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let found = settings();
    drop(set);
    assert_eq!(found.level, vault_core::doctor::Level::Fail, "{found:?}");
    assert!(
        found.detail.contains(&format!("{standby}: wal_recycle=on")),
        "{found:?}"
    );
    // Replay held back by a conflicting standby query (any vault's role
    // can run one) for PostgreSQL's default 30 s: longer than a purge
    // waits for a standby.
    let set = MemberSetting::set(&standby, "max_standby_streaming_delay", "'30s'");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let found = settings();
    drop(set);
    assert_eq!(found.level, vault_core::doctor::Level::Fail, "{found:?}");
    assert!(
        found
            .detail
            .contains(&format!("{standby}: max_standby_streaming_delay=30s")),
        "{found:?}"
    );
    fx.vault.close().unwrap();
}

/// A setting of one member's (`ALTER SYSTEM`, reloaded), reset and
/// reloaded again when dropped, whatever the test's outcome: left behind
/// (CI's `psql` once missed its 2 s connect timeout on the reset's reload
/// under load), `wal_recycle = on` failed the next five tests' disposals.
/// Each statement is tried for up to 10 s.
struct MemberSetting<'a> {
    member: &'a str,
    name: &'static str,
}

impl<'a> MemberSetting<'a> {
    fn set(member: &'a str, name: &'static str, value: &str) -> MemberSetting<'a> {
        let setting = MemberSetting { member, name };
        setting.run(&format!("ALTER SYSTEM SET {name} = {value}"));
        setting
    }

    fn run(&self, sql: &str) {
        for statement in [sql, "SELECT pg_reload_conf()"] {
            let ran = (0..40).any(|_| {
                psql(self.member, statement).is_some() || {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    false
                }
            });
            assert!(
                ran || std::thread::panicking(),
                "{statement} on {}",
                self.member
            );
        }
    }
}

impl Drop for MemberSetting<'_> {
    fn drop(&mut self) {
        self.run(&format!("ALTER SYSTEM RESET {}", self.name));
    }
}

/// With the keystore on the cluster and the records embedded, two copies
/// of one vault directory opened at once share the keystore, and only the
/// lease's generation fences the first opener's key writes once the second
/// has opened. An insider with the vault's role sets the keystore's lease
/// back by one before the second opens, so that a counter would hand it
/// the first opener's generation: the first opener's put is refused all
/// the same, and writes no data key (`NEXT_GENERATION`).
#[test]
fn a_keystore_lease_set_back_by_an_insider_still_fences_the_first_opener() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = common::fast_vault_with(&dir, Some(c.config()), None);
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    let copy = tmp.path().join("copy");
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(ok.success(), "copy the vault directory");

    let first = common::open_vault(&dir, &clock);
    let clerk = common::login(&first, "clerk");
    first
        .put_record(&clerk, common::CUSTOMERS, SubjectId::new(), &body(1))
        .expect("the first opener writes");
    let keys = format!("pv_{}", hex::encode(first.id().as_bytes()));
    let primary = primary_member(&c);
    let deks = || -> u64 {
        psql_in(
            &primary,
            "pivault_keys",
            &format!("SELECT count(*) FROM {keys}.deks"),
        )
        .expect("primary up")
        .trim()
        .parse()
        .unwrap()
    };
    psql_in(
        &primary,
        "pivault_keys",
        &format!("UPDATE {keys}.lease SET generation = generation - 1"),
    )
    .expect("the insider sets the lease back");

    let second = common::open_vault(&copy, &clock);
    let before = deks();
    let put = first.put_record(&clerk, common::CUSTOMERS, SubjectId::new(), &body(2));
    assert!(
        matches!(put, Err(Error::TakenOver)),
        "the first opener's put after the second opened: {put:?}"
    );
    assert_eq!(deks(), before, "no data key written by the first opener");
    let clerk2 = common::login(&second, "clerk");
    second
        .put_record(&clerk2, common::CUSTOMERS, SubjectId::new(), &body(3))
        .expect("the second opener writes");
}

/// A disposed record's key planted back into the keystore on the cluster
/// (its row as it was before the disposal, by the superuser, under the
/// running vault: with the vault stopped, the open's orphan sweep would
/// destroy it) refuses a restore of a backup holding the record before it
/// writes anything, also with its tombstone deleted (the key is looked for
/// in every bucket). Before, the restore wrote the records it brought back
/// (here one whose row was deleted with the vault stopped), then failed its
/// final check ("a disposed record has a key"), leaving them written.
#[test]
fn a_restore_with_a_disposed_records_key_planted_back_writes_nothing() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL");
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), Some(c.config()), None);
    let recs = put_records(&fx, 2);
    let ((subject, disposed, dek), (_, missing, _)) = (recs[0].clone(), recs[1].clone());
    let bucket = fx.vault.keystore().bucket_of(subject);
    let mut name = bucket.to_be_bytes().to_vec();
    name.extend_from_slice(disposed.as_bytes());
    name.extend_from_slice(&1u32.to_be_bytes());
    let file = tmp.path().join("b.pvb");
    fx.vault.create_backup(&fx.admin, &file, 30).unwrap();
    fx.vault
        .dispose(&fx.officer, &request(DisposalScope::Record(disposed)))
        .unwrap();
    let dir = fx.dir.clone();
    let fx = fx.reopened_after(|vault| {
        vault.close().expect("close");
        let path = dir.join("records");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("records");
        // The tombstone goes too: the key's search cannot rest on its subject.
        for gone in [missing, disposed] {
            db.delete_cf(&db.cf_handle("records").unwrap(), gone.as_bytes())
                .unwrap();
        }
        db.flush().unwrap();
    });
    let schema = format!("pv_{}", hex::encode(fx.vault.id().as_bytes()));
    su(&format!(
        "INSERT INTO {schema}.deks VALUES ({bucket}, '\\x{}', '\\x{}')",
        hex::encode(&name),
        hex::encode(&dek)
    ));
    match fx.vault.restore_backup(&fx.admin, &file) {
        Err(Error::Integrity(m)) => assert!(m.contains("has a key"), "{m}"),
        other => panic!("the restore went over a disposed record's key planted back: {other:?}"),
    }
    assert!(
        matches!(
            fx.vault.get_record(&fx.clerk, missing, &[], None),
            Err(Error::NotFound(_))
        ),
        "the failed restore wrote a record back"
    );
    su(&format!(
        "DELETE FROM {schema}.deks WHERE k = '\\x{}'",
        hex::encode(&name)
    ));
    fx.vault.close().unwrap();
}
