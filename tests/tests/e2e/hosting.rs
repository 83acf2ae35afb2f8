//! One `pivault-server` process serving many vaults (`--hosting`, a
//! service provider's server, issue 16): each vault at its own address
//! with its own passphrase, users, tokens, records, certificates and
//! trail; clients of two vaults working at once, a disposal in one among
//! them; an insider's swapped or exposed passphrase file and a copied line
//! in the hosting file; vaults added, removed and changed at SIGHUP while
//! another's clerk writes; a clean stop that closes every vault.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use vault_core::secret::SecretString;
use vault_core::vault::{OpenOptions, Vault};

use crate::cli::write_private;
use crate::common::{self, CUSTOMERS, PASSPHRASE, USERS};
use crate::server::{self, Server};

pub(crate) const PASSPHRASE_B: &str = "second-business-passphrase-Hw4!far";
const CLERK_B_PASSWORD: &str = "Larkspur-Tangent-Orbit-93";
/// Customers' names, put by each of four clerks at once.
const GIVEN: [&str; 8] = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"];
const WRITER: [&str; 4] = ["Alpha", "Beta", "Gamma", "Delta"];

/// A fixture vault in `dir`, closed; its passphrase changed to `pass` and
/// its clerk's password to `clerk_pw` when given. Returns its ID.
fn business(dir: &Path, pass: Option<&str>, clerk_pw: Option<&str>) -> String {
    business_on(common::fast_vault(dir), pass, clerk_pw)
}

/// [`business`] with its keys and records on the cluster of the
/// environment (`scripts/cluster.sh`).
pub(crate) fn business_on_clusters(dir: &Path, pass: Option<&str>) -> String {
    let fx = common::fast_vault_with(
        dir,
        Some(common::cluster_keystore()),
        Some(common::cluster_records()),
    );
    business_on(fx, pass, None)
}

fn business_on(fx: common::Fixture, pass: Option<&str>, clerk_pw: Option<&str>) -> String {
    if let Some(p) = pass {
        fx.vault
            .change_passphrase(
                &SecretString::from(PASSPHRASE),
                &SecretString::from(p),
                &common::fresh_source(),
            )
            .expect("the second business's own passphrase");
    }
    if let Some(pw) = clerk_pw {
        fx.vault
            .set_password(&fx.admin, "clerk", &SecretString::from(pw))
            .expect("the second business's clerk password");
    }
    let id = fx.vault.id().to_string();
    fx.vault.close().expect("close");
    id
}

/// The address at which a hosting server serves the vault `id`, among the
/// `(id, base)` pairs it printed.
#[track_caller]
pub(crate) fn base_of(bases: &[(String, String)], id: &str) -> String {
    bases
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| panic!("vault {id} served: {bases:?}"))
}

/// The vault in `dir` opened in this process with `pass`: its server
/// must have closed it (and let go of its lock).
pub(crate) fn reopened(dir: &Path, pass: &str) -> Vault {
    Vault::open(dir, &SecretString::from(pass), OpenOptions::default())
        .unwrap_or_else(|e| panic!("{} reopens: {e}", dir.display()))
}

/// The live records of `v`, as its admin lists them.
pub(crate) fn live_count(v: &Vault) -> usize {
    let admin = common::login(v, "admin");
    v.list_records(&admin, &Default::default())
        .expect("records")
        .iter()
        .filter(|r| r.state == vault_core::vault::RecordState::Live)
        .count()
}

/// A's clerk's token and A's record `record_a` mean nothing at B's address.
#[track_caller]
pub(crate) fn a_is_not_reached_at_b(b: &Server, clerk_a: &str, officer_b: &str, record_a: &str) {
    let crossed = b.call("GET", "/v1/records", Some(clerk_a), None);
    assert_eq!(crossed.status, 401, "A's token at B: {crossed:?}");
    let crossed = b.call(
        "GET",
        &format!("/v1/records/{record_a}"),
        Some(officer_b),
        None,
    );
    assert_eq!(crossed.status, 404, "A's record at B: {crossed:?}");
}

fn login(srv: &Server, user: &str, password: &str) -> (u16, Option<String>) {
    let a = srv.call(
        "POST",
        "/v1/sessions",
        None,
        Some(&json!({ "username": user, "password": password })),
    );
    let token = a.json()["token"].as_str().map(str::to_owned);
    (a.status, token)
}

pub(crate) fn put(srv: &Server, clerk: &str, given: &str) -> String {
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(clerk),
        Some(&json!({ "collection": CUSTOMERS, "data": {
            "given_name": given, "family_name": "Quimby", "ssn": "123-45-6789",
            "card_number": "4111111111111111" } })),
    );
    assert_eq!(a.status, 201, "put: {a:?}");
    a.json()["record_id"].as_str().expect("id").to_owned()
}

#[test]
fn one_process_serves_each_vault_at_its_own_address_and_nothing_crosses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let id_a = business(&work.join("a"), None, None);
    let id_b = business(&work.join("b"), Some(PASSPHRASE_B), Some(CLERK_B_PASSWORD));
    let _id_c = business(&work.join("c"), None, None);
    write_private(&work.join("a.pass"), PASSPHRASE.as_bytes());
    write_private(&work.join("b.pass"), PASSPHRASE_B.as_bytes());
    // The insider's doing: C's file swapped for B's; D's readable by all.
    write_private(&work.join("c.pass"), PASSPHRASE_B.as_bytes());
    std::fs::write(work.join("d.pass"), PASSPHRASE).expect("d.pass");
    let vault = |dir: &str, pass: &str| json!({ "dir": dir, "passphrase_file": pass, "bind": "127.0.0.1:0" });
    let hosting = work.join("hosting.json");

    // A copied line would serve one vault twice: refused before anything opens.
    let copied = json!({ "vaults": [vault("a", "a.pass"), vault("./a", "b.pass")] });
    std::fs::write(&hosting, copied.to_string()).expect("hosting file");
    let mut refused = server::spawn_hosting(tempfile::tempdir().expect("tempdir"), &hosting, &[]);
    let err = refused.wait_line("twice", Duration::from_secs(30));
    assert!(err.contains("names the vault"), "{err}");
    let exited = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !refused.running()
    });
    assert!(exited, "the server exits: {:?}", refused.printed_so_far());
    assert!(
        !refused
            .printed_so_far()
            .iter()
            .any(|l| l.contains("listening")),
        "nothing served"
    );

    let plan = json!({ "vaults": [
        vault("a", "a.pass"), vault("b", "b.pass"), vault("c", "c.pass"), vault("d", "d.pass"),
    ] });
    std::fs::write(&hosting, plan.to_string()).expect("hosting file");
    let starting = server::spawn_hosting(tempfile::tempdir().expect("tempdir"), &hosting, &[]);
    let (srv, bases, opened) = starting.hosting(2, Duration::from_secs(60));
    let said = |dir: &str, why: &str| {
        let dir = format!("not serving the vault {}:", work.join(dir).display());
        assert!(
            opened.iter().any(|l| l.contains(&dir) && l.contains(why)),
            "{dir} {why}: {opened:?}"
        );
    };
    said("c", "wrong_passphrase");
    said("d", "open to group or others");
    assert!(
        opened.iter().any(|l| l.contains("serving 2 of 4 vault(s)")),
        "{opened:?}"
    );
    for l in &opened {
        for secret in [PASSPHRASE, PASSPHRASE_B] {
            assert!(!l.contains(secret), "a passphrase on stderr: {l}");
        }
    }
    let base_of = |id: &str| base_of(&bases, id);
    let (a, b) = (srv.view(&base_of(&id_a)), srv.view(&base_of(&id_b)));
    assert_eq!(bases.len(), 2, "only A and B are served: {bases:?}");
    assert_ne!(base_of(&id_a), base_of(&id_b));

    let clerk_pw = USERS.iter().find(|u| u.0 == "clerk").expect("clerk").2;
    let (_, clerk_a) = login(&a, "clerk", clerk_pw);
    let clerk_a = clerk_a.expect("A's clerk signs in");
    let (_, clerk_b) = login(&b, "clerk", CLERK_B_PASSWORD);
    let clerk_b = clerk_b.expect("B's clerk signs in with B's password");
    let (officer_a, officer_b) = (a.token("officer"), b.token("officer"));

    // Both businesses at work at once; A disposes of a record meanwhile.
    let doomed = put(&a, &clerk_a, "Doomed");
    let (kept_a, kept_b, disposal) = std::thread::scope(|s| {
        let writers: Vec<_> = [
            (&a, &clerk_a),
            (&a, &clerk_a),
            (&b, &clerk_b),
            (&b, &clerk_b),
        ]
        .into_iter()
        .enumerate()
        .map(|(w, (srv, clerk))| {
            s.spawn(move || {
                (0..GIVEN.len())
                    .map(|i| put(srv, clerk, &format!("{} {}", GIVEN[i], WRITER[w])))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
        let d = s.spawn(|| {
            a.call(
                "POST",
                "/v1/disposals",
                Some(&officer_a),
                Some(&json!({ "scope": "record", "record": doomed, "data_owner": "Quimby Hardware" })),
            )
        });
        let mut ids: Vec<Vec<String>> = writers
            .into_iter()
            .map(|w| w.join().expect("writer"))
            .collect();
        let (b2, b1, a2, a1) = (ids.pop(), ids.pop(), ids.pop(), ids.pop());
        let mut ka: Vec<String> = a1.into_iter().chain(a2).flatten().collect();
        let mut kb: Vec<String> = b1.into_iter().chain(b2).flatten().collect();
        ka.sort();
        kb.sort();
        (ka, kb, d.join().expect("disposal"))
    });
    assert_eq!(disposal.status, 200, "A's disposal: {disposal:?}");
    let cert = disposal.json()["certificate_id"]
        .as_str()
        .expect("certificate")
        .to_owned();
    assert_eq!(
        a.live_ids(&officer_a),
        kept_a,
        "A holds what its clerks put, less the disposed"
    );
    assert_eq!(
        b.live_ids(&officer_b),
        kept_b,
        "B holds exactly what its clerks put"
    );

    // Nothing crosses: A's credentials, token, records and certificate mean
    // nothing at B's address, and the other way round.
    assert_eq!(
        login(&b, "clerk", clerk_pw).0,
        401,
        "A's clerk password at B"
    );
    a_is_not_reached_at_b(&b, &clerk_a, &officer_b, &kept_a[0]);
    let crossed = a.call("GET", "/v1/records", Some(&clerk_b), None);
    assert_eq!(crossed.status, 401, "B's token at A: {crossed:?}");
    let crossed = b.call(
        "GET",
        &format!("/v1/certificates/{cert}"),
        Some(&officer_b),
        None,
    );
    assert_eq!(crossed.status, 404, "A's certificate at B: {crossed:?}");
    let own = a.call(
        "GET",
        &format!("/v1/certificates/{cert}"),
        Some(&officer_a),
        None,
    );
    assert_eq!(own.status, 200, "A's certificate at A: {own:?}");

    for (srv, what) in [(&a, "A"), (&b, "B")] {
        let auditor = srv.token("auditor");
        let v = srv.call("GET", "/v1/audit/verify", Some(&auditor), None);
        assert_eq!(v.json()["ok"], true, "{what}'s trail: {}", v.text);
    }
    drop((a, b));
    let (status, _, _keep) = srv.stop();
    assert!(status.success(), "a clean stop of every vault");

    // Each vault closed cleanly and opens with its own passphrase alone.
    for (d, pass, n) in [
        ("a", PASSPHRASE, kept_a.len()),
        ("b", PASSPHRASE_B, kept_b.len()),
    ] {
        let v = reopened(&work.join(d), pass);
        assert_eq!(live_count(&v), n, "vault {d}'s records after the stop");
        v.close().expect("close");
    }
    let wrong = Vault::open(
        &work.join("a"),
        &SecretString::from(PASSPHRASE_B),
        OpenOptions::default(),
    );
    assert!(wrong.is_err(), "B's passphrase does not open A");
}

/// The port in a `vault ID (DIR) listening on https://127.0.0.1:PORT` line.
fn port_in(line: &str) -> String {
    line.rsplit(':').next().expect("port").trim().to_owned()
}

pub(crate) fn hup(srv: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -HUP");
}

#[test]
fn a_vault_added_removed_or_changed_at_sighup_leaves_the_others_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path();
    let id_a = business(&work.join("a"), None, None);
    let id_b = business(&work.join("b"), Some(PASSPHRASE_B), None);
    let id_c = business(&work.join("c"), None, None);
    for (f, p) in [
        ("a.pass", PASSPHRASE),
        ("b.pass", PASSPHRASE_B),
        ("c.pass", PASSPHRASE),
        ("c2.pass", PASSPHRASE),
    ] {
        write_private(&work.join(f), p.as_bytes());
    }
    let line = |dir: &str, pass: &str| json!({ "dir": dir, "passphrase_file": pass, "bind": "127.0.0.1:0" });
    let hosting = work.join("hosting.json");
    let write = |vaults: Vec<serde_json::Value>| {
        std::fs::write(&hosting, json!({ "vaults": vaults }).to_string()).expect("hosting file");
    };
    write(vec![line("a", "a.pass"), line("b", "b.pass")]);
    let (srv, bases, _) =
        server::spawn_hosting(tempfile::tempdir().expect("tempdir"), &hosting, &[])
            .hosting(2, Duration::from_secs(60));
    let base_of = |id: &str| base_of(&bases, id);
    let (a, b_base) = (srv.view(&base_of(&id_a)), base_of(&id_b));
    let clerk_a = a.token("clerk");
    let b_addr = b_base.replace("https://localhost", "127.0.0.1");

    // A's clerk keeps putting while B is removed and C added.
    let busy = std::sync::atomic::AtomicBool::new(true);
    let (put_by_a, c_line) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut ids = Vec::new();
            while busy.load(std::sync::atomic::Ordering::SeqCst) || ids.len() < 3 {
                ids.push(put(&a, &clerk_a, GIVEN[ids.len() % GIVEN.len()]));
            }
            ids
        });
        write(vec![line("a", "a.pass"), line("c", "c.pass")]);
        hup(&srv);
        let said = srv.wait_stderr(
            &[
                &format!("vault {id_b}: stopped and closed (removed from the hosting file)"),
                &format!("vault {id_c} ("),
                "reloaded",
            ],
            Duration::from_secs(60),
        );
        busy.store(false, std::sync::atomic::Ordering::SeqCst);
        (writer.join().expect("A's clerk"), said[1].clone())
    });
    assert!(c_line.contains("listening on https://"), "{c_line}");
    assert_eq!(
        a.live_ids(&a.token("officer")).len(),
        put_by_a.len(),
        "every put of A's during the reload kept"
    );
    assert!(
        std::net::TcpStream::connect(&b_addr).is_err(),
        "B's address closed"
    );
    // B was closed cleanly: it opens at once elsewhere and its trail verifies.
    let b = reopened(&work.join("b"), PASSPHRASE_B);
    let auditor = common::login(&b, "auditor");
    assert!(b.audit_verify(&auditor).expect("verify").ok(), "B's trail");
    b.close().expect("close B");

    let c = srv.view(&format!("https://localhost:{}", port_in(&c_line)));
    let clerk_c = c.token("clerk");
    put(&c, &clerk_c, "Ivy");
    let crossed = c.call("GET", "/v1/records", Some(&clerk_a), None);
    assert_eq!(crossed.status, 401, "A's token at C: {crossed:?}");

    // A file that no longer reads changes nothing.
    std::fs::write(&hosting, "{ \"vaults\": [").expect("broken file");
    hup(&srv);
    srv.wait_stderr(
        &["not reloading", "serving as before"],
        Duration::from_secs(30),
    );
    put(&a, &clerk_a, "Jo");
    put(&c, &clerk_c, "Kit");

    // C's line changed: C is served anew (its clients' tokens stay good);
    // A is untouched.
    write(vec![line("a", "a.pass"), line("c", "c2.pass")]);
    hup(&srv);
    let said = srv.wait_stderr(
        &[
            &format!("vault {id_c}: stopped and closed (its line in the hosting file changed)"),
            &format!("vault {id_c} ("),
        ],
        Duration::from_secs(60),
    );
    let c = srv.view(&format!("https://localhost:{}", port_in(&said[1])));
    put(&c, &clerk_c, "Lu");
    // At its first address: A was never stopped.
    put(&a, &clerk_a, "Mo");

    for (srv, what) in [(&a, "A"), (&c, "C")] {
        let auditor = srv.token("auditor");
        let v = srv.call("GET", "/v1/audit/verify", Some(&auditor), None);
        assert_eq!(v.json()["ok"], true, "{what}'s trail: {}", v.text);
    }
    drop((a, c));
    let (status, _, _keep) = srv.stop();
    assert!(status.success(), "a clean stop");
}
