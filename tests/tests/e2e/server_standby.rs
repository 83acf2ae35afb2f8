//! Several `pivault-server` processes in front of one vault whose stores
//! are on the cluster (issue 16, high availability): one holds the vault,
//! the others stand by (`--standby`) and take it over when it is killed or
//! when it stops answering for longer than its lease; the one that lost
//! the vault serves nothing more, not even to a session it still has
//! cached, and exits with code 75. Needs the cluster of `scripts/cluster.sh`
//! (as `cluster.rs`), and runs one at a time with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{cluster, serial};
use crate::common::{self, CUSTOMERS, PASSPHRASE, USERS};
use crate::server::{self, Server};

/// One HTTP exchange that may fail at the transport (a server killed or
/// stopped mid-request): the status and the JSON body, or why none came.
fn send(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    send_with(&agent, base, method, path, token, body)
}

/// [`send`] with `agent` (one trusting the servers' certificate).
fn send_with(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let url = format!("{base}{path}");
    let auth = format!("Bearer {token}");
    let resp = match body {
        None if method == "GET" => agent.get(&url).header("Authorization", &auth).call(),
        Some(b) => agent
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b.to_string().as_bytes()),
        None => agent.post(&url).header("Authorization", &auth).send_empty(),
    };
    let mut resp = resp.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// A family name per number (names take letters only).
fn family(n: u32) -> String {
    let letter = |i: u32| char::from(b'a' + (i % 26) as u8);
    format!(
        "Standbury-{}{}{}",
        letter(n / 676),
        letter(n / 26),
        letter(n)
    )
}

fn person(n: u32) -> Value {
    json!({ "collection": CUSTOMERS,
            "data": { "given_name": "Hannah", "family_name": family(n),
                      "ssn": format!("212-{:02}-{:04}", 10 + (n / 9000) % 80, 1000 + n % 9000) } })
}

/// Three machines configured alike for one vault on the clusters (the
/// vault made on the first, closed, its directory copied to the others).
#[allow(clippy::type_complexity)] // three (machine, vault directory) pairs
fn three_machines() -> (
    (tempfile::TempDir, PathBuf),
    (tempfile::TempDir, PathBuf),
    (tempfile::TempDir, PathBuf),
) {
    let machine_a = tempfile::tempdir().unwrap();
    let vault_a = machine_a.path().join("vault");
    let fx = vault_on_clusters(&vault_a);
    fx.vault.close().expect("close the fixture vault");
    let b = copy_machine(&vault_a);
    let c = copy_machine(&vault_a);
    ((machine_a, vault_a), b, c)
}

/// A second machine configured alike: a copy of the vault directory (the
/// static header and the two cluster files).
fn copy_machine(vault: &Path) -> (tempfile::TempDir, PathBuf) {
    let machine = tempfile::tempdir().expect("tempdir");
    let to = machine.path().join("vault");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(vault)
        .arg(&to)
        .status()
        .expect("cp");
    assert!(ok.success(), "copy the vault directory");
    (machine, to)
}

/// Sends `sig` (`-KILL`, `-STOP`, `-HUP`, …) to process `pid`.
pub(crate) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

fn login(base: &str, user: &str) -> String {
    let (_, _, pw) = USERS.iter().find(|(u, _, _)| *u == user).expect("user");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("{base}/v1/sessions"))
        .header("Content-Type", "application/json")
        .send(
            json!({ "username": user, "password": pw })
                .to_string()
                .as_bytes(),
        )
        .expect("login exchange");
    assert_eq!(r.status().as_u16(), 201, "login of {user}");
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["token"].as_str().expect("token").to_owned()
}

/// Puts records through `base` from three threads until `stop`: the IDs
/// and numbers of those acknowledged (201), and how many were not.
fn write_until(
    base: &str,
    stop: &AtomicBool,
    token: &str,
    first: u32,
) -> (Vec<(String, u32)>, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    write_until_with(&agent, base, stop, token, first)
}

/// [`write_until`] with `agent`.
fn write_until_with(
    agent: &ureq::Agent,
    base: &str,
    stop: &AtomicBool,
    token: &str,
    first: u32,
) -> (Vec<(String, u32)>, usize) {
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..3u32)
            .map(|w| {
                s.spawn(move || {
                    let (mut acked, mut failed) = (Vec::new(), 0);
                    let mut n = first + w * 100_000;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        match send_with(agent, base, "POST", "/v1/records", token, Some(&person(n)))
                        {
                            Ok((201, v)) => {
                                acked.push((v["record_id"].as_str().expect("id").to_owned(), n))
                            }
                            Ok(_) | Err(_) => {
                                failed += 1;
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    (acked, failed)
                })
            })
            .collect();
        writers.into_iter().fold((Vec::new(), 0), |(mut a, f), h| {
            let (acked, failed) = h.join().expect("writer");
            a.extend(acked);
            (a, f + failed)
        })
    })
}

/// Every acknowledged record reads back through `srv`, with its own data.
fn all_read_back(srv: &Server, token: &str, acked: &[(String, u32)]) {
    for (id, n) in acked {
        let a = srv.call("GET", &format!("/v1/records/{id}"), Some(token), None);
        assert_eq!(a.status, 200, "acknowledged record {id} reads back: {a:?}");
        assert_eq!(
            a.json()["fields"]["family_name"],
            family(*n),
            "record {id} has its own data"
        );
    }
}

/// The trail verifies through `srv` (`what` says what that shows), and
/// `srv` then stops cleanly.
fn trail_verifies_then_stop(srv: Server, what: &str) {
    let auditor = srv.token("auditor");
    let v = srv.call("GET", "/v1/audit/verify", Some(&auditor), None);
    assert_eq!(v.json()["ok"], true, "{what}: {}", v.text);
    let (status, _, _keep) = srv.stop();
    assert!(status.success(), "{what}: then a clean stop");
}

/// How many live records the officer lists through `srv`.
fn live_records(srv: &Server, officer: &str) -> usize {
    srv.live_ids(officer).len()
}

#[test]
fn a_standby_server_takes_over_a_killed_or_stopped_one_and_the_stopped_one_serves_nothing_after() {
    let _one = serial();
    let _c = cluster();
    let ((machine_a, vault_a), (machine_b, vault_b), (machine_c, vault_c)) = three_machines();

    // A holds the vault; B, started after it, stands by and does not listen.
    let a = server::start_plain_on(machine_a, vault_a, &[]);
    let mut b = server::spawn_with(machine_b, vault_b, PASSPHRASE, &["--standby"], false);
    b.wait_line("standing by", Duration::from_secs(60));
    let clerk = login(&a.base, "clerk");

    // 1. A killed while three clerks write through it: B takes over, and
    // every write A acknowledged reads back through B, with the session
    // the clerk opened on A.
    let stop = AtomicBool::new(false);
    let (acked, _) = std::thread::scope(|s| {
        let w = s.spawn(|| write_until(&a.base, &stop, &clerk, 0));
        std::thread::sleep(Duration::from_millis(1500));
        signal(a.pid(), "-KILL");
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        w.join().expect("writers")
    });
    assert!(
        acked.len() >= 3,
        "writes were acknowledged before the kill: {}",
        acked.len()
    );
    let killed_at = Instant::now();
    let b = b.listening(Duration::from_secs(60));
    let takeover = killed_at.elapsed();
    all_read_back(&b, &clerk, &acked);
    let officer = b.token("officer");

    // The new holder's keystore writes are its own: a disposal certifies.
    let (doomed, _) = &acked[0];
    let d = b.call(
        "POST",
        "/v1/disposals",
        Some(&officer),
        Some(&json!({ "scope": "record", "record": doomed, "data_owner": "Quimby Hardware" })),
    );
    assert_eq!(
        d.status, 200,
        "disposal through the server that took over: {d:?}"
    );
    assert!(d.json()["certificate_id"].is_string(), "certified: {d:?}");

    // 2. B stopped (SIGSTOP: hung, or cut off from the cluster), with a
    // write and a read of the clerk sent to it while it cannot answer. C,
    // a standby, takes the vault over once B's lease lapses; the admin
    // disables the clerk through C.
    let mut c = server::spawn_with(machine_c, vault_c, PASSPHRASE, &["--standby"], false);
    c.wait_line("standing by", Duration::from_secs(60));
    let kept = acked[1].0.clone();
    let live_before = live_records(&b, &officer);
    signal(b.pid(), "-STOP");
    let stopped_at = Instant::now();
    let b_base = b.base.clone();
    let (late_write, late_read, c, c_up) = std::thread::scope(|s| {
        let w = s.spawn(|| {
            send(
                &b_base,
                "POST",
                "/v1/records",
                &clerk,
                Some(&person(999_999)),
            )
        });
        let r = s.spawn(|| send(&b_base, "GET", &format!("/v1/records/{kept}"), &clerk, None));
        let c = c.listening(Duration::from_secs(90));
        let c_up = stopped_at.elapsed();
        let admin = c.token("admin");
        let off = c.call("POST", "/v1/users/clerk/disable", Some(&admin), None);
        assert!(
            off.status < 300,
            "the admin disables the clerk through C: {off:?}"
        );
        // B wakes up: what it received meanwhile is answered now.
        signal(b.pid(), "-CONT");
        (w.join().unwrap(), r.join().unwrap(), c, c_up)
    });
    assert!(
        c_up >= Duration::from_secs(8),
        "C took over only after B's lease lapsed, not while B held it: {c_up:?}"
    );
    assert!(
        c_up < vault_core::CLUSTER_LEASE + Duration::from_secs(20),
        "C took over within the lease and its open: {c_up:?}"
    );
    let (status, lines) = b.wait_exit(Duration::from_secs(30));
    for (what, r) in [("write", &late_write), ("read", &late_read)] {
        // A connection closed as B stopped is no answer either: nothing
        // was served.
        if let Ok((status, body)) = r {
            assert!(
                *status == 503 && body["code"] == "taken_over",
                "the {what} B received while stopped is refused as taken over, not served: {status} {body}; B said {:?}",
                lines
                    .iter()
                    .filter(|l| !l.contains(" 200 "))
                    .collect::<Vec<_>>()
            );
        }
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(75),
        "the server that lost the vault exits 75: {:?}",
        lines
            .iter()
            .filter(|l| !l.contains(" 200 "))
            .collect::<Vec<_>>()
    );
    assert!(
        lines.iter().any(|l| l.contains("took the vault over")),
        "and says why"
    );

    // Nothing B received while stopped was written; C has every
    // acknowledged record but the disposed one, and the trail verifies.
    let officer = c.token("officer");
    assert_eq!(
        live_records(&c, &officer),
        live_before,
        "no write of the stopped server landed"
    );
    let auditor = c.token("auditor");
    let v = c.call("GET", "/v1/audit/verify", Some(&auditor), None);
    assert_eq!(
        v.json()["ok"],
        true,
        "one unbroken trail across three servers: {}",
        v.text
    );
    let refused = c.call("GET", &format!("/v1/records/{kept}"), Some(&clerk), None);
    assert!(
        refused.status == 401 || refused.status == 403,
        "the disabled clerk's session is refused by C too: {refused:?}"
    );
    eprintln!(
        "standby took over a killed server in {takeover:?}, a stopped one in {c_up:?} (lease {:?})",
        vault_core::CLUSTER_LEASE
    );
    let (status, _, _keep) = c.stop();
    assert!(status.success());
}

/// A fixture vault with its keystore and its records on the cluster.
fn vault_on_clusters(dir: &Path) -> common::Fixture {
    common::fast_vault_with(
        dir,
        Some(common::cluster_keystore()),
        Some(common::cluster_records()),
    )
}

/// A machine with a fixture vault on the clusters: its directory, its
/// vault's path and the vault.
fn machine_with_vault() -> (tempfile::TempDir, PathBuf, common::Fixture) {
    let machine = tempfile::tempdir().unwrap();
    let dir = machine.path().join("vault");
    let fx = vault_on_clusters(&dir);
    (machine, dir, fx)
}

/// `stale`'s lease lapses and a second process opens the vault from
/// `other_dir` (the stale one's renewing thread may win the lock back
/// first: then the lease lapses again).
fn take_over(
    c: &crate::cluster::Cluster,
    stale: &common::Fixture,
    other_dir: &Path,
) -> vault_core::Vault {
    let id = hex::encode(stale.vault.id().as_bytes());
    take_over_of(c, &id, &stale.clock, other_dir)
}

/// [`take_over`] of the vault whose ID (hex) is `id`, opened with `clock`.
fn take_over_of(
    c: &crate::cluster::Cluster,
    id: &str,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    other_dir: &Path,
) -> vault_core::Vault {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        lapse_lease_of(c, id);
        let opened = vault_core::Vault::open(
            other_dir,
            &vault_core::secret::SecretString::from(PASSPHRASE),
            common::open_options(clock),
        );
        match opened {
            Ok(v) => return v,
            Err(vault_core::Error::VaultBusy) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("the second process opens the vault: {e}"),
        }
    }
}

/// The superuser ends the session holding `vault`'s lock, as the server
/// does when the holder sent nothing for the lease (stopped, hung, cut off).
fn lapse_lease(c: &crate::cluster::Cluster, vault: &vault_core::Vault) {
    lapse_lease_of(c, &hex::encode(vault.id().as_bytes()));
}

/// The vault ID (hex) of the vault directory `vault`, from its header.
fn id_of(vault: &Path) -> String {
    let id = vault_core::header::read_info(&vault.join("header"))
        .expect("header")
        .vault_id;
    hex::encode(id.as_bytes())
}

/// [`lapse_lease`] of the vault whose ID (hex) is `id`.
fn lapse_lease_of(c: &crate::cluster::Cluster, id: &str) {
    let s = format!("pr_{id}");
    let ended = crate::cluster::psql_in(
        &crate::cluster::primary_member(c),
        "pivault_records",
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks
              WHERE relation = '{s}.holder'::regclass AND mode = 'ExclusiveLock' AND granted"
        ),
    )
    .expect("primary up");
    assert_eq!(ended.trim(), "1", "one session held the vault's lock");
}

fn dek_rows(c: &crate::cluster::Cluster, vault: &vault_core::Vault) -> u64 {
    let s = format!("pv_{}", hex::encode(vault.id().as_bytes()));
    crate::cluster::psql_in(
        &crate::cluster::primary_member(c),
        "pivault_keys",
        &format!("SELECT count(*) FROM {s}.deks"),
    )
    .expect("primary up")
    .trim()
    .parse()
    .unwrap()
}

/// A failover ends the holder's lock session while the holder is alive
/// and answering (the primary stopped, twice): the standby, which tries
/// every second, leaves the vault to it, for only the
/// holder can send again the audit events it committed lazily (taken from
/// it, the new holder would find those writes without their events and roll
/// them back). The holder takes its lock again and serves on, and the
/// standby stands by and relays.
#[test]
fn a_standby_leaves_the_vault_to_a_live_holder_whose_lock_a_failover_ended() {
    let _one = serial();
    let c = cluster();
    let (a, _vault_a, mut b, front) = holder_and_standby();
    let clerk = a.token("clerk");
    for round in 0..2u32 {
        let old = crate::cluster::primary_index(&c);
        crate::cluster::cluster_script(&["member-stop", &old.to_string()]);
        crate::cluster::wait_primary_other_than(&c, old);
        std::thread::sleep(Duration::from_secs(6));
        crate::cluster::cluster_script(&["member-start", &old.to_string()]);
        crate::cluster::wait_healthy(&c);
        let put = a.call("POST", "/v1/records", Some(&clerk), Some(&person(round)));
        assert_eq!(
            put.status,
            201,
            "round {round}: the holder serves on: {put:?}; the standby said {:?}",
            b.printed_so_far()
        );
        let said = b.printed_so_far();
        assert!(
            b.running() && !said.iter().any(|l| l.contains("took the vault over")),
            "round {round}: the standby stands by: {said:?}"
        );
        let record = put.json()["record_id"].as_str().expect("id").to_owned();
        let relayed = front.call("GET", &format!("/v1/records/{record}"), Some(&clerk), None);
        assert_eq!(relayed.status, 200, "{relayed:?}");
        assert!(relayed.via, "relayed by the standby: {relayed:?}");
    }
    trail_verifies_then_stop(a, "the holder kept the vault");
}

/// The vault's role refused at login by the cluster until dropped (as
/// during a failover, or with the network cut): existing sessions go on.
pub(crate) struct LoginRefused(String);

impl LoginRefused {
    pub(crate) fn now(c: &crate::cluster::Cluster) -> LoginRefused {
        let role = common::cluster_keystore().user;
        crate::cluster::psql_in(
            &crate::cluster::primary_member(c),
            "postgres",
            &format!("ALTER ROLE {role} NOLOGIN"),
        )
        .expect("login refused");
        LoginRefused(role)
    }
}

impl Drop for LoginRefused {
    fn drop(&mut self) {
        crate::cluster::psql_in(
            &crate::cluster::primary_member(&cluster()),
            "postgres",
            &format!("ALTER ROLE {} LOGIN", self.0),
        )
        .expect("login given back");
    }
}

/// A server standing by while the cluster refuses the vault's role for a
/// while (a failover, the network cut): the standby waits it out, saying
/// so once, instead of ending; once the cluster answers again and the
/// holder is killed, it takes the vault over with the record written
/// through the holder.
#[test]
fn a_standby_waits_out_a_cluster_it_cannot_reach_and_still_takes_over() {
    let _one = serial();
    let c = cluster();
    let ((machine_a, vault_a), (machine_b, vault_b), _) = three_machines();
    let a = server::start_plain_on(machine_a, vault_a, &[]);
    let clerk = a.token("clerk");
    let (status, put) = send(&a.base, "POST", "/v1/records", &clerk, Some(&person(7))).unwrap();
    assert_eq!(status, 201, "{put}");
    let mut b = server::spawn_with(machine_b, vault_b, PASSPHRASE, &["--standby"], false);
    b.wait_line("standing by", Duration::from_secs(60));
    let refused = LoginRefused::now(&c);
    b.wait_line(
        "cannot reach the vault's cluster now",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.running(), "the standby waits: {:?}", b.printed_so_far());
    drop(refused);
    let _ = a.kill();
    let b = b.listening(Duration::from_secs(60));
    let clerk = b.token("clerk");
    let id = put["record_id"].as_str().expect("id");
    let (status, got) = send(&b.base, "GET", &format!("/v1/records/{id}"), &clerk, None).unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["fields"]["family_name"], family(7));
    trail_verifies_then_stop(b, "after the cluster came back");
}

/// A vault's deletion stalled after it wrote its journal, past its lease:
/// a second process (another machine's copy of the directory) takes the
/// vault over and a clerk puts a record there. When the stalled deletion
/// goes on, its drop is fenced by the keystore's lease generation: it
/// destroys nothing, says the vault was taken over, and leaves no marker;
/// the second process's records, old and new, all read.
#[test]
fn a_stalled_vault_deletion_whose_lease_lapsed_drops_nothing_of_the_process_that_took_it_over() {
    use std::sync::{Arc, Mutex};
    let _one = serial();
    let _c = cluster();
    let (_machine, dir, fx) = machine_with_vault();
    let (_, before) = crate::delete_resume_cluster::put_keyed(&fx, 3);
    let (_other_machine, other_dir) = copy_machine(&dir);
    let id = hex::encode(fx.vault.id().as_bytes());
    let hook_id = id.clone();
    let taker: Arc<Mutex<Option<(vault_core::Vault, vault_core::ids::RecordId)>>> = Arc::default();
    let hook = {
        let (taker, other_dir, clock) = (taker.clone(), other_dir.clone(), fx.clock.clone());
        Box::new(move |step: &str| {
            if step != "deletion_journaled" {
                return;
            }
            let v = take_over_of(&cluster(), &hook_id, &clock, &other_dir);
            let clerk = common::login(&v, "clerk");
            let r = v
                .put_record(
                    &clerk,
                    CUSTOMERS,
                    vault_core::ids::SubjectId::new(),
                    &json!({ "given_name": "Taken", "family_name": "Over", "ssn": "212-55-1234" }),
                )
                .expect("a put in the vault taken over");
            *taker.lock().unwrap() = Some((v, r));
        }) as Box<dyn Fn(&str) + Send + Sync>
    };
    let outcome = crate::delete_resume_cluster::delete_with_hook(fx.vault, hook);
    match outcome {
        Some(Err(vault_core::Error::TakenOver)) => {}
        other => panic!("the stalled deletion must destroy nothing: {other:?}"),
    }
    assert!(
        crate::delete_cluster::schema_exists(&format!("pv_{id}")),
        "the keys of the vault taken over are all there"
    );
    assert!(!dir.join("DELETED").exists(), "no marker left");
    let (v, put) = taker.lock().unwrap().take().expect("taken over");
    let clerk = common::login(&v, "clerk");
    for r in before.iter().chain([&put]) {
        v.get_record(&clerk, *r, &[], None)
            .expect("every record of the vault taken over reads");
    }
    let auditor = common::login(&v, "auditor");
    assert!(v.audit_verify(&auditor).unwrap().ok());
    v.close().expect("close");
}

/// A holder whose lease lapsed while another process had the vault (which
/// disposed of a record, rotating its bucket and ratcheting the epoch, and
/// then closed) must not carry on once the lock is free again: its bucket
/// keys and epoch are stale, so a data key it wrapped would be unreadable
/// (an acknowledged write lost). Its keystore writes are fenced by the
/// lease's generation, and it does not take the lock again. Nor can it
/// publish its address for the standbys to forward to.
/// Two standbys racing for a killed server: exactly one takes the vault and
/// listens; the other keeps standing by, and its tries every second neither
/// refuse nor fence a single write of the first; when the first is killed
/// in turn, the other takes over. Every acknowledged write reads back
/// through the last server, and the trail verifies across the three.
#[test]
fn two_standbys_racing_for_a_killed_server_one_takes_over_and_the_other_waits_its_turn() {
    let _one = serial();
    let _c = cluster();
    let ((machine_a, vault_a), (machine_b, vault_b), (machine_c, vault_c)) = three_machines();
    let a = server::start_plain_on(machine_a, vault_a, &[]);
    let mut b = server::spawn_with(machine_b, vault_b, PASSPHRASE, &["--standby"], false);
    let mut c = server::spawn_with(machine_c, vault_c, PASSPHRASE, &["--standby"], false);
    b.wait_line("standing by", Duration::from_secs(60));
    c.wait_line("standing by", Duration::from_secs(60));
    let clerk = login(&a.base, "clerk");
    let stop = AtomicBool::new(false);
    let (mut acked, _) = std::thread::scope(|s| {
        let w = s.spawn(|| write_until(&a.base, &stop, &clerk, 0));
        std::thread::sleep(Duration::from_millis(1000));
        signal(a.pid(), "-KILL");
        stop.store(true, Ordering::SeqCst);
        w.join().expect("writers")
    });
    assert!(
        !acked.is_empty(),
        "writes were acknowledged before the kill"
    );

    // The race: whichever listens first holds the vault.
    let deadline = Instant::now() + Duration::from_secs(60);
    let b_won = loop {
        assert!(Instant::now() < deadline, "no standby took the vault over");
        if b.printed("listening on http", Duration::from_millis(100)) {
            break true;
        }
        if c.printed("listening on http", Duration::from_millis(100)) {
            break false;
        }
    };
    let (winner, mut loser) = if b_won { (b, c) } else { (c, b) };
    let winner = winner.listening(Duration::from_secs(1));

    // The loser keeps trying (every second) while three clerks write through
    // the winner: not one write is refused, and the loser does not listen.
    stop.store(false, Ordering::SeqCst);
    let (more, failed) = std::thread::scope(|s| {
        let w = s.spawn(|| write_until(&winner.base, &stop, &clerk, 1_000_000));
        let listened = loser.printed("listening on http", Duration::from_secs(4));
        stop.store(true, Ordering::SeqCst);
        assert!(
            !listened,
            "the other standby listens while the first holds the vault"
        );
        w.join().expect("writers")
    });
    assert_eq!(
        failed, 0,
        "a write through the new holder refused while the other standby tried"
    );
    assert!(!more.is_empty(), "writes through the new holder");
    assert!(loser.running(), "the other standby still stands by");
    acked.extend(more);
    all_read_back(&winner, &clerk, &acked);

    // Its turn: the first is killed, the other takes over.
    signal(winner.pid(), "-KILL");
    let last = loser.listening(Duration::from_secs(60));
    all_read_back(&last, &clerk, &acked);
    trail_verifies_then_stop(last, "one unbroken trail across three servers");
}

#[test]
fn a_holder_whose_lease_lapsed_is_fenced_out_even_once_the_lock_is_free() {
    use vault_core::Error;
    use vault_core::ids::SubjectId;
    use vault_core::secret::SecretString;
    let _one = serial();
    let c = cluster();
    let (_machine, dir, stale) = machine_with_vault();
    let body = |n: u32| person(n)["data"].clone();
    let ids: Vec<_> = (0..4)
        .map(|n| {
            stale
                .vault
                .put_record(&stale.clerk, CUSTOMERS, SubjectId::new(), &body(n))
                .unwrap()
        })
        .collect();
    let (_other_machine, other_dir) = copy_machine(&dir);

    // The stale holder's lease lapses and a second process opens the vault.
    let second = take_over(&c, &stale, &other_dir);
    // The second publishes its address; the stale one cannot send the
    // standbys back to itself, while the second holds the vault or after.
    let id = hex::encode(second.id().as_bytes());
    let published = || published_address(&c, &id);
    second
        .publish_holder_address(Some("127.0.0.1:4001"))
        .expect("the holder publishes its address");
    let stale_publish = stale.vault.publish_holder_address(Some("127.0.0.1:4666"));
    assert!(
        matches!(stale_publish, Err(Error::TakenOver)),
        "{stale_publish:?}"
    );
    assert_eq!(published(), "127.0.0.1:4001");
    let officer = common::login(&second, "officer");
    second
        .dispose(
            &officer,
            &crate::cluster::request(vault_core::vault::DisposalScope::Record(ids[0])),
        )
        .expect("the second process disposes");
    assert!(second.epoch() > stale.vault.epoch(), "the epoch moved on");
    drop(second);
    let deks = dek_rows(&c, &stale.vault);
    let stale_publish = stale.vault.publish_holder_address(Some("127.0.0.1:4666"));
    assert!(
        matches!(stale_publish, Err(Error::TakenOver)),
        "with the lock free: {stale_publish:?}"
    );
    assert_ne!(published(), "127.0.0.1:4666", "no stale address published");

    // The lock is free now. The stale process's put is refused at its
    // first keystore write, and writes no data key.
    let put = stale
        .vault
        .put_record(&stale.clerk, CUSTOMERS, SubjectId::new(), &body(10));
    assert!(matches!(put, Err(Error::TakenOver)), "stale put: {put:?}");
    assert_eq!(dek_rows(&c, &stale.vault), deks, "no data key written");
    // A change of the records alone: the lock is not taken again.
    let add = stale.vault.add_user(
        &stale.admin,
        "latecomer",
        &SecretString::from("Late-Comer-Orchard-Basil-61"),
        vault_core::access::Role::Clerk,
        false,
    );
    assert!(
        matches!(add, Err(Error::TakenOver)),
        "stale user add: {add:?}"
    );
    assert!(matches!(
        stale.vault.get_record(&stale.clerk, ids[1], &[], None),
        Err(Error::TakenOver)
    ));
    assert!(stale.vault.lease_lost());
    let clock = stale.clock.clone();
    drop(stale);

    // The vault, opened again, has every record but the disposed one and
    // no trace of the stale process's attempts; its trail verifies.
    let v = common::open_vault(&dir, &clock);
    let clerk = common::login(&v, "clerk");
    for id in &ids[1..] {
        v.get_record(&clerk, *id, &[], None).unwrap();
    }
    let admin = common::login(&v, "admin");
    assert!(
        v.list_users(&admin)
            .unwrap()
            .iter()
            .all(|u| u.username.to_string() != "latecomer"),
        "the stale process added no user"
    );
    let auditor = common::login(&v, "auditor");
    assert!(v.audit_verify(&auditor).unwrap().ok(), "the trail verifies");
}

/// A holder stopped past its lease, after an insider with the vault's
/// database role set both lease rows back by one, so that the next opener
/// would be handed the stopped holder's own generation. The server that
/// takes the vault over disposes of a record (the bucket rotated, the
/// epoch ratcheted) and stops cleanly, freeing the lock. The stopped
/// holder, woken, finds the lock free but not its generation (a generation
/// never repeats: `NEXT_GENERATION`), so it serves nothing more and exits
/// 75, instead of taking the lock again and writing data keys under its
/// stale bucket keys as if nobody had had the vault in between.
#[test]
fn a_stopped_holder_stays_fenced_out_when_an_insider_sets_the_lease_back() {
    let _one = serial();
    let c = cluster();
    let ((machine_a, vault_a), (machine_b, vault_b), _) = three_machines();
    let id = id_of(&vault_a);
    let a = server::start_plain_on(machine_a, vault_a, &[]);
    let clerk = login(&a.base, "clerk");
    let put = |base: &str, n: u32| send(base, "POST", "/v1/records", &clerk, Some(&person(n)));
    let ids: Vec<String> = (0..3)
        .map(|n| {
            let (status, v) = put(&a.base, n).expect("put through A");
            assert_eq!(status, 201, "{v}");
            v["record_id"].as_str().expect("id").to_owned()
        })
        .collect();
    let mut b = server::spawn_with(machine_b, vault_b, PASSPHRASE, &["--standby"], false);
    b.wait_line("standing by", Duration::from_secs(60));

    // A is stopped; the insider sets both generations back by one; A's
    // lease lapses; B takes the vault over.
    signal(a.pid(), "-STOP");
    let primary = crate::cluster::primary_member(&c);
    for (db, schema) in [("pivault_records", "pr"), ("pivault_keys", "pv")] {
        crate::cluster::psql_in(
            &primary,
            db,
            &format!("UPDATE {schema}_{id}.lease SET generation = generation - 1"),
        )
        .expect("the insider rewrites the lease row");
    }
    lapse_lease_of(&c, &id);
    let b = b.listening(Duration::from_secs(60));
    let officer = b.token("officer");
    let d = b.call(
        "POST",
        "/v1/disposals",
        Some(&officer),
        Some(&json!({ "scope": "record", "record": ids[0], "data_owner": "Quimby Hardware" })),
    );
    assert_eq!(d.status, 200, "B disposes: {d:?}");
    let (stopped, machine_b_vault, machine_b) = b.stop();
    assert!(stopped.success(), "B stops cleanly, freeing the lock");

    // A wakes up with the lock free: a write sent to it is not served.
    signal(a.pid(), "-CONT");
    let late = put(&a.base, 10);
    if let Ok((status, body)) = &late {
        assert!(
            *status == 503 && body["code"] == "taken_over",
            "the woken holder refuses the write as taken over: {status} {body}"
        );
    }
    let (status, lines) = a.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(75),
        "the woken holder exits 75: {:?}",
        lines
            .iter()
            .filter(|l| !l.contains(" 200 ") && !l.contains(" 201 "))
            .collect::<Vec<_>>()
    );

    // The vault, opened again, has the two records not disposed of, no
    // record of the woken holder, and its trail verifies.
    let v = server::start_plain_on(machine_b, machine_b_vault, &[]);
    let officer = v.token("officer");
    assert_eq!(
        live_records(&v, &officer),
        2,
        "nothing of A's after the wake"
    );
    for id in &ids[1..] {
        let r = v.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    trail_verifies_then_stop(v, "the trail verifies");
}

/// The trail's sequence on the cluster is shared by every process that
/// ever holds the vault: a holder whose lease lapsed, still believing its
/// lease fresh (it has not renewed yet), must not take the next number
/// while the process that took the vault over has appended nothing since
/// its open. It would leave the new holder's head stale, and every later
/// event of the new holder refused. Its append is fenced by the vault's
/// lock, in the same statement.
#[test]
fn an_audit_event_of_a_holder_whose_lease_lapsed_takes_no_number_from_the_new_holder() {
    use vault_core::Error;
    use vault_core::ids::SubjectId;
    let _one = serial();
    let c = cluster();
    let (_machine, dir, stale) = machine_with_vault();
    let body = |n: u32| person(n)["data"].clone();
    let id = stale
        .vault
        .put_record(&stale.clerk, CUSTOMERS, SubjectId::new(), &body(1))
        .unwrap();
    let (_other_machine, other_dir) = copy_machine(&dir);
    let second = take_over(&c, &stale, &other_dir);
    // A read is audited before it is answered: refused, and unanswered.
    let read = stale.vault.get_record(&stale.clerk, id, &[], None);
    assert!(
        matches!(read, Err(Error::TakenOver)),
        "stale read: {read:?}"
    );
    assert!(stale.vault.lease_lost());
    // The new holder's trail goes on.
    let clerk = common::login(&second, "clerk");
    second.get_record(&clerk, id, &[], None).unwrap();
    second
        .put_record(&clerk, CUSTOMERS, SubjectId::new(), &body(2))
        .expect("the new holder writes on");
    let auditor = common::login(&second, "auditor");
    assert!(second.audit_verify(&auditor).unwrap().ok());
}

/// The lock lost while four clerks write and no other process wants the
/// vault (a failover's closed session, a lease ended early): the writers
/// that fail at the same moment take it again once between them, and none
/// is told the vault was taken over. Before, each took it again in turn,
/// dropping the lock the one before had just taken, and the first one's
/// retry then declared the vault lost.
#[test]
fn a_lock_lost_under_concurrent_writers_is_taken_again_once_and_no_writer_is_taken_over() {
    use vault_core::ids::SubjectId;
    let _one = serial();
    let c = cluster();
    let machine = tempfile::tempdir().unwrap();
    let dir = machine.path().join("vault");
    let fx = vault_on_clusters(&dir);
    let stop = AtomicBool::new(false);
    let (acked, refused) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let (fx, stop) = (&fx, &stop);
                s.spawn(move || {
                    let (mut acked, mut refused) = (Vec::new(), Vec::new());
                    let mut n = w * 10_000;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        match fx.vault.put_record(
                            &fx.clerk,
                            CUSTOMERS,
                            SubjectId::new(),
                            &person(n)["data"],
                        ) {
                            Ok(id) => acked.push((id, n)),
                            Err(e) => refused.push(e.to_string()),
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(400));
            lapse_lease(&c, &fx.vault);
        }
        std::thread::sleep(Duration::from_millis(400));
        stop.store(true, Ordering::SeqCst);
        writers
            .into_iter()
            .fold((Vec::new(), Vec::new()), |(mut a, mut r), h| {
                let (acked, refused) = h.join().expect("writer");
                a.extend(acked);
                r.extend(refused);
                (a, r)
            })
    });
    assert!(
        !fx.vault.lease_lost(),
        "no other process took the vault: {refused:?}"
    );
    assert!(refused.is_empty(), "no write refused: {refused:?}");
    assert!(acked.len() > 20, "the clerks wrote on: {}", acked.len());
    for (id, n) in &acked {
        let r = fx.vault.get_record(&fx.clerk, *id, &[], None).unwrap();
        assert_eq!(r.fields["family_name"], family(*n));
    }
}

/// A client of a standby that is still standing by (not a [`Server`]: it
/// holds no vault).
struct Front {
    base: String,
    agent: ureq::Agent,
}

/// A standby's answer: the status, whether a standby relayed it (its `Via`
/// header), and the JSON body.
#[derive(Debug)]
struct Relayed {
    status: u16,
    via: bool,
    json: Value,
}

impl Front {
    /// Signs `user` in through the standby (relayed to the holder): the token.
    fn login(&self, user: &str, standby: &mut server::Starting) -> String {
        let (_, _, pw) = USERS.iter().find(|(u, _, _)| *u == user).expect("user");
        let login = self.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({ "username": user, "password": pw })),
        );
        assert_eq!(
            login.status,
            201,
            "login through the standby: {login:?}; the standby said {:?}",
            standby.printed_so_far()
        );
        assert!(login.via, "relayed by the standby: {login:?}");
        login.json["token"].as_str().expect("token").to_owned()
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Relayed {
        self.try_call(method, path, token, body)
            .expect("an answer from the standby")
    }

    /// [`Front::call`], or why no answer came (a connection closed as the
    /// standby switched to serving the vault itself).
    fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Relayed, String> {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let resp = if method == "GET" {
            let mut r = self.agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        } else {
            let mut r = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.map(Value::to_string).unwrap_or_default().as_bytes())
        };
        let mut resp = resp.map_err(|e| e.to_string())?;
        let via = resp
            .headers()
            .get("via")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("pivault-standby"));
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(Relayed {
            status: resp.status().as_u16(),
            via,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }
}

/// A vault on the clusters held by a server over TLS (its directory
/// returned) and a second server standing by with the same certificate
/// and key (servers of one vault share them: clients trust one
/// certificate, whichever server a load balancer picks), and a client of
/// the standby.
fn holder_and_standby() -> (Server, PathBuf, server::Starting, Front) {
    let ((machine_a, vault_a), (machine_b, vault_b), _) = three_machines();
    let a = server::start_on(machine_a, vault_a.clone(), PASSPHRASE, &[]);
    for f in ["server.crt", "server.key"] {
        std::fs::copy(a.cert.with_file_name(f), machine_b.path().join(f)).expect("copy");
    }
    let mut b = server::spawn_with(machine_b, vault_b, PASSPHRASE, &["--standby"], true);
    let (base, agent) = b.standing_by(Duration::from_secs(60));
    (a, vault_a, b, Front { base, agent })
}

/// Sets the holder address published in `vault`'s lease row, as an insider
/// with the records database could.
fn plant_holder_address(c: &crate::cluster::Cluster, vault: &Path, address: &str) {
    let s = format!("pr_{}", id_of(vault));
    crate::cluster::psql_in(
        &crate::cluster::primary_member(c),
        "pivault_records",
        &format!("UPDATE {s}.lease SET holder_address = '{address}'"),
    )
    .expect("the superuser rewrites the lease row");
}

/// The holder address published in the lease row of the vault whose ID
/// (hex) is `id` (`none` if none).
fn published_address(c: &crate::cluster::Cluster, id: &str) -> String {
    let s = format!("pr_{id}");
    crate::cluster::psql_in(
        &crate::cluster::primary_member(c),
        "pivault_records",
        &format!("SELECT coalesce(holder_address, 'none') FROM {s}.lease"),
    )
    .expect("primary up")
    .trim()
    .to_owned()
}

/// Clears the holder address published in `vault`'s lease row, as an
/// insider with the records database could.
fn clear_holder_address(c: &crate::cluster::Cluster, vault: &Path) {
    let s = format!("pr_{}", id_of(vault));
    crate::cluster::psql_in(
        &crate::cluster::primary_member(c),
        "pivault_records",
        &format!("UPDATE {s}.lease SET holder_address = NULL"),
    )
    .expect("the superuser clears the lease row's address");
}

/// Every server of a vault answers every request: a standby forwards it
/// to the holder and relays the answer, so a client (or a load balancer)
/// may use either, with one session. The address the holder publishes is
/// only a hint: planted by an insider to point at another server, the
/// standby sends nothing there (that server's certificate is not the
/// vault's servers' one), and the holder soon puts its own back, as it
/// does when the address is cleared. A client's own forwarding headers are not
/// believed by the holder. Once the holder stops, the standby serves the
/// vault itself, on the same address.
#[test]
fn a_standby_forwards_every_request_to_the_holder_and_only_to_a_server_with_the_vaults_certificate()
{
    let _one = serial();
    let c = cluster();
    let (a, vault_a, mut b, front) = holder_and_standby();

    // 1. The clerk signs in through the standby, writes there, and the
    // holder serves the same session; a write through the holder reads
    // back through the standby.
    let clerk = front.login("clerk", &mut b);
    let put = front.call("POST", "/v1/records", Some(&clerk), Some(&person(1)));
    assert_eq!(put.status, 201, "a write through the standby: {put:?}");
    let id1 = put.json["record_id"].as_str().expect("id").to_owned();
    let got = a.call("GET", &format!("/v1/records/{id1}"), Some(&clerk), None);
    assert_eq!(got.status, 200, "the holder serves it: {got:?}");
    assert_eq!(got.json()["fields"]["family_name"], family(1));
    let put = a.call("POST", "/v1/records", Some(&clerk), Some(&person(2)));
    assert_eq!(put.status, 201, "{put:?}");
    let id2 = put.json()["record_id"].as_str().expect("id").to_owned();
    let got = front.call("GET", &format!("/v1/records/{id2}"), Some(&clerk), None);
    assert_eq!(got.status, 200, "read through the standby: {got:?}");
    assert!(got.via);
    assert_eq!(got.json["fields"]["family_name"], family(2));

    // 2. A client naming another address in the forwarding headers is
    // not believed: the holder audits the connection's address.
    let (status, headers, _) = a.raw_with(
        "POST",
        "/v1/sessions",
        &[
            ("pivault-forwarded-for", "203.0.113.77"),
            (
                "pivault-forwarded-at",
                &jiff::Timestamp::now().as_second().to_string(),
            ),
            ("pivault-forwarded-mac", &"00".repeat(32)),
        ],
        Some((
            json!({ "username": "clerk", "password": "not the password" })
                .to_string()
                .as_bytes(),
            "application/json",
        )),
    );
    assert_eq!(status, 401, "a wrong password");
    let request_id = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, v)| v.clone())
        .expect("request ID");
    let auditor = a.token("auditor");
    let events = a
        .call("GET", "/v1/audit/events", Some(&auditor), None)
        .json();
    let ev = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["request_id"] == request_id.as_str())
        .cloned()
        .expect("the refused login is audited");
    assert_eq!(
        ev["source"], "127.0.0.1",
        "the client's own forwarding header is ignored: {ev}"
    );

    // 3. An insider points the standbys at another server (another
    // vault's, with its own certificate): the standby refuses to forward,
    // so the clerk's token never reaches it (that server would answer 401).
    let rogue = server::start(&[]);
    let rogue_addr = rogue.base.replace("https://localhost", "127.0.0.1");
    // The holder puts its own address back within 2 s: the insider keeps
    // planting the rogue's until the standby has refused.
    let planting = AtomicBool::new(true);
    let refused = std::thread::scope(|s| {
        s.spawn(|| {
            while planting.load(Ordering::SeqCst) {
                plant_holder_address(&c, &vault_a, &rogue_addr);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            let r = front.call("GET", &format!("/v1/records/{id1}"), Some(&clerk), None);
            if r.status != 200 || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        planting.store(false, Ordering::SeqCst);
        refused
    });
    assert_eq!(
        (refused.status, refused.json["code"].as_str()),
        (503, Some("no_holder")),
        "nothing forwarded to a server without the vault's certificate: {refused:?}"
    );
    assert!(
        refused.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("certificate")),
        "and it says why: {refused:?}"
    );
    drop(rogue);
    // The insider stops: the holder's address is back, put there by the
    // holder itself, and the standby forwards again. So it is after an
    // insider cleared it (or a failover lost it).
    let back = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = front.call("GET", &format!("/v1/records/{id1}"), Some(&clerk), None);
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "forwarding again after {what}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    back("the rogue address");
    clear_holder_address(&c, &vault_a);
    let cleared_at = Instant::now();
    let holder_addr = a.base.replace("https://localhost", "127.0.0.1");
    let id = id_of(&vault_a);
    while published_address(&c, &id) != holder_addr {
        assert!(
            cleared_at.elapsed() < Duration::from_secs(10),
            "the holder publishes its address again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the holder's address back {:?} after the insider cleared it",
        cleared_at.elapsed()
    );
    back("the address cleared");

    // 4. The holder stops: the standby takes the vault over and serves it
    // itself on the same address, to the same session.
    let (status, _, _keep) = a.stop();
    assert!(status.success());
    b.wait_line("took the vault over", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    let served = loop {
        // A keep-alive connection to the forwarding front is closed at
        // the switch: the client sends again, as after any closed one.
        match front.try_call("GET", &format!("/v1/records/{id1}"), Some(&clerk), None) {
            Ok(r) if r.status == 200 && !r.via => break r,
            r => assert!(Instant::now() < deadline, "the standby serves: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(served.json["fields"]["family_name"], family(1));
    let b = b.listening(Duration::from_secs(1));
    assert_eq!(
        b.base.replace("localhost", "127.0.0.1"),
        front.base.replace("localhost", "127.0.0.1"),
        "the same address"
    );
    let (status, _, _keep) = b.stop();
    assert!(status.success());
}

/// Clerks writing through a standby while the holder is killed: each
/// write the standby acknowledged (relayed from the holder, or its own
/// once it took over) reads back; the others were answered 503 (no holder
/// to reach), 502 (the holder died mid-request: outcome unknown), or not
/// at all, never a false 201.
#[test]
fn writes_through_a_standby_while_the_holder_is_killed_lose_nothing_acknowledged() {
    let _one = serial();
    let _c = cluster();
    let (a, _, mut b, front) = holder_and_standby();
    let clerk = front.login("clerk", &mut b);
    let (base, agent) = (front.base.clone(), front.agent.clone());
    let stop = AtomicBool::new(false);
    let ((acked, failed), b, unanswered) = std::thread::scope(|s| {
        let w = s.spawn(|| write_until_with(&agent, &base, &stop, &clerk, 0));
        // What a client of the standby sees: the longest time without a
        // `200` to `/healthz` (reported, not asserted: it is the standby's
        // open after the kill).
        let probe = s.spawn(|| {
            let (mut last_ok, mut longest) = (Instant::now(), Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                if front
                    .try_call("GET", "/healthz", None, None)
                    .is_ok_and(|r| r.status == 200)
                {
                    longest = longest.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            longest
        });
        std::thread::sleep(Duration::from_millis(1500));
        signal(a.pid(), "-KILL");
        b.wait_line("took the vault over", Duration::from_secs(60));
        let b = b.listening(Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        (w.join().expect("writers"), b, probe.join().expect("probe"))
    });
    assert_eq!(
        b.base, base,
        "the standby serves on the address it forwarded on"
    );
    assert!(
        acked.len() >= 6,
        "writes acknowledged around the kill: {}",
        acked.len()
    );
    all_read_back(&b, &clerk, &acked);
    eprintln!(
        "through the standby: {} writes acknowledged, {failed} refused or unanswered around the kill; no 200 for {unanswered:?} at most",
        acked.len()
    );
    trail_verifies_then_stop(b, "one unbroken trail");
}
