//! Issue 11: service accounts. A nightly retention script runs with its own
//! token through the real `pivault-server`: no user, no password, no
//! terminal; it may dispose of what is past retention and read
//! certificates, never read a record or dispose of anything else; it is
//! outside the password lock-out but inside a per-token rate limit; a
//! revoked or rotated token fails its next call, also while calls race the
//! rotation. Only someone who holds every permission of the service's role
//! may mint one (an officer, not an admin, not another service).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde_json::json;
use vault_core::access::Role;
use vault_core::audit::EventFilter;
use vault_core::clock::Clock;
use vault_core::ids::SubjectId;
use vault_core::secret::SecretString;
use vault_core::vault::{Context, OpenOptions, RetentionPolicy, Vault};

use crate::cli::{self, Run};
use crate::common::{self, CUSTOMERS, PASSPHRASE, USERS};
use crate::server;

const EXIT_AUTH: i32 = 4;
const EXIT_DENIED: i32 = 5;
const EXIT_BUSY: i32 = 9;

/// Runs `pivault` with only the given environment (no terminal on stdin):
/// as a cron job would.
fn run(home: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut c = std::process::Command::new(cli::pivault_bin());
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.args(args).output().expect("run pivault");
    Run::from_output(args.join(" "), &out)
}

fn password_file(dir: &Path, user: &str) -> PathBuf {
    let (_, _, pw) = USERS.iter().find(|(u, _, _)| *u == user).unwrap();
    let p = dir.join(format!("{user}-pw"));
    cli::write_private(&p, pw.as_bytes());
    p
}

#[test]
fn a_retention_runner_token_runs_retention_from_a_script_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    // Three records created at the fixture's T0, long past a 30-day retention.
    let mut ids = Vec::new();
    for given in ["Ada", "Grace", "Alan"] {
        ids.push(
            fx.vault
                .put_record(
                    &fx.clerk,
                    CUSTOMERS,
                    SubjectId::new(),
                    &json!({ "given_name": given, "family_name": "Quimby", "ssn": "123-45-6789" }),
                )
                .unwrap()
                .to_string(),
        );
    }
    fx.vault
        .set_retention(
            &fx.officer,
            CUSTOMERS,
            RetentionPolicy {
                days: 30,
                from_updated: false,
            },
        )
        .unwrap();
    fx.vault.close().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let srv = server::start_on(
        tmp,
        vault_dir,
        PASSPHRASE,
        &["--service-calls-per-minute", "16"],
    );
    let socket = srv.vault_dir.parent().unwrap().join("pivault.sock");
    let staff = |user: &str| -> Vec<(&'static str, PathBuf)> {
        vec![
            ("PIVAULT_SOCKET", socket.clone()),
            ("PIVAULT_USER", PathBuf::from(user)),
            ("PIVAULT_PASSWORD_FILE", password_file(home, user)),
        ]
    };
    let env = |v: &[(&'static str, PathBuf)]| -> Vec<(&'static str, PathBuf)> { v.to_vec() };
    let as_staff = |user: &str, args: &[&str]| {
        let e = env(&staff(user));
        let e: Vec<(&str, &Path)> = e.iter().map(|(k, v)| (*k, v.as_path())).collect();
        run(home, &e, args)
    };

    // Insiders: an admin (who may not dispose) cannot mint a token that
    // may; a clerk cannot either. Nothing is created.
    for who in ["admin", "clerk"] {
        as_staff(who, &["--json", "service", "add", "nightly"]).code(EXIT_DENIED);
    }
    // The officer mints it into a file only they can read.
    let token_file = home.join("nightly.token");
    let add = as_staff(
        "officer",
        &[
            "--json",
            "service",
            "add",
            "nightly",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    add.ok();
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert!(token.starts_with("pvs_"), "a service token");
    assert!(!add.stdout.contains(&token), "the token is not printed");
    assert_eq!(add.json()["role"], "retention-runner", "{}", add.stdout);
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The script: only the socket and its token file, no user, no terminal.
    let script = [
        ("PIVAULT_SOCKET", socket.as_path()),
        ("PIVAULT_SERVICE_TOKEN_FILE", token_file.as_path()),
    ];
    let due = run(home, &script, &["--json", "retention", "due"]);
    due.ok();
    assert_eq!(due.json()["records"], 3, "{}", due.stdout);
    // It reads no record, lists none, disposes of nothing but what is due,
    // reads no audit trail and mints no other service account.
    for args in [
        vec!["record", "get", ids[0].as_str()],
        vec!["record", "list"],
        vec!["dispose", "record", ids[0].as_str(), "--yes"],
        vec!["audit", "log"],
        vec!["service", "add", "another"],
    ] {
        run(home, &script, &args).code(EXIT_DENIED);
    }
    // The script pins what it destroys to what it was shown due: a made-up
    // plan is refused (exit 13) and destroys nothing; the due list's plan
    // disposes of exactly those records.
    let plan = due.json()["plan"].as_str().expect("a plan").to_owned();
    let stale = "0".repeat(64);
    let refused = run(
        home,
        &script,
        &["--json", "retention", "run", "--yes", "--plan", &stale],
    );
    refused.code(13);
    assert!(
        refused.stderr.contains("preview_stale"),
        "{}",
        refused.stderr
    );
    // (Nothing was destroyed: the run below still finds all three.)
    let ran = run(
        home,
        &script,
        &["--json", "retention", "run", "--yes", "--plan", &plan],
    );
    ran.ok();
    let outcome = ran.json();
    assert_eq!(outcome["records"], 3, "{outcome}");
    let mut disposed: Vec<&str> = outcome["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    disposed.sort();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(disposed, expected);
    let cert = outcome["certificate_id"].as_str().expect("a certificate");
    let shown = run(home, &script, &["--json", "certificate", "show", cert]);
    shown.ok();
    assert!(shown.stdout.contains(cert), "{}", shown.stdout);

    // Not subject to the password lock-out: failed logins under its name
    // are an unknown user's, and the token still works.
    let officer = srv.token("officer");
    for _ in 0..6 {
        let a = srv.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({ "username": "nightly", "password": "wrong wrong wrong" })),
        );
        assert!(matches!(a.status, 401 | 429), "{a:?}");
    }
    run(home, &script, &["--json", "whoami"]).ok();

    // The officer sees it and its last use; an admin may list it too.
    let list = as_staff("officer", &["--json", "service", "list"]);
    list.ok();
    let entry = list.json()["items"][0].clone();
    assert_eq!(entry["username"], "nightly", "{}", list.stdout);
    assert!(entry["last_used"].is_string(), "{entry}");
    assert_eq!(entry["has_token"], true);
    assert!(!list.stdout.contains("pvs_"), "no token in a listing");

    // Per-token rate limit (16 a minute here): a runaway loop is refused
    // with 429 and Retry-After, and writes one audit event, not one per call.
    let mut refused = 0;
    for _ in 0..30 {
        let a = srv.call("GET", "/v1/whoami", Some(&token), None);
        match a.status {
            200 => {}
            429 => {
                refused += 1;
                assert_eq!(a.json()["code"], "rate_limited", "{a:?}");
            }
            s => panic!("unexpected {s}: {a:?}"),
        }
    }
    assert!(refused >= 14, "{refused} of 30 refused");
    let r = run(home, &script, &["--json", "whoami"]);
    r.code(EXIT_BUSY);
    assert!(r.stderr.contains("rate_limited"), "{}", r.stderr);
    let events = srv
        .call(
            "GET",
            "/v1/audit/events?action=auth.token",
            Some(&officer),
            None,
        )
        .json();
    let limited = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains("rate_limited"))
        .count();
    assert_eq!(limited, 1, "one audit event per refused run: {events}");

    // Revoked: the next call fails (exit 4) with advice, whatever the rate.
    as_staff("officer", &["--json", "service", "revoke", "nightly"]).ok();
    let r = run(home, &script, &["--json", "retention", "due"]);
    r.code(EXIT_AUTH);
    assert!(r.stderr.contains("revoked or rotated"), "{}", r.stderr);
    let list = as_staff("admin", &["--json", "service", "list"]);
    assert_eq!(
        list.json()["items"][0]["state"],
        "revoked",
        "{}",
        list.stdout
    );
    let (status, _, _keep) = srv.stop();
    assert!(status.success());
}

/// Rotation under fire: threads keep calling with the old token while the
/// officer rotates it. Once `rotate_service_token` has returned, no call
/// with the old token that starts afterwards succeeds, and the new token
/// works at once. Run against the library (real RocksDB).
#[test]
fn no_call_with_the_old_token_succeeds_once_rotation_has_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    fx.vault.close().unwrap();
    // The manual clock stands still: without a rate that never runs out,
    // the per-token limit would refuse the old token and hide the race.
    let opts = OpenOptions {
        service_calls_per_minute: u32::MAX,
        ..common::open_options(&fx.clock)
    };
    let vault = Arc::new(Vault::open(&fx.dir, &SecretString::from(PASSPHRASE), opts).unwrap());
    let (_, old) = vault
        .add_service_account(&fx.officer, "nightly", Role::RetentionRunner)
        .unwrap();
    let rotated = Arc::new(AtomicBool::new(false));
    let late_successes = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (vault, rotated, late, calls) = (
                vault.clone(),
                rotated.clone(),
                late_successes.clone(),
                calls.clone(),
            );
            let old = SecretString::new(old.expose().to_owned());
            std::thread::spawn(move || {
                for _ in 0..400 {
                    let after = rotated.load(Ordering::SeqCst);
                    let ok = vault
                        .session_from_token(&old, Context::cli())
                        .and_then(|s| vault.retention_due(&s))
                        .is_ok();
                    calls.fetch_add(1, Ordering::SeqCst);
                    if after && ok {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    while calls.load(Ordering::SeqCst) < 40 {
        std::thread::yield_now();
    }
    let new = vault.rotate_service_token(&fx.officer, "nightly").unwrap();
    rotated.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        late_successes.load(Ordering::SeqCst),
        0,
        "the old token worked after rotation returned"
    );
    let s = vault.session_from_token(&new, Context::cli()).unwrap();
    vault.retention_due(&s).unwrap();
    // Neither a person's role nor a password is open to a service account.
    assert!(vault.set_role(&fx.admin, "nightly", Role::Officer).is_err());
    assert!(
        vault
            .set_password(
                &fx.admin,
                "nightly",
                &SecretString::from("a long new passphrase 42")
            )
            .is_err()
    );
    assert!(
        vault
            .add_user(
                &fx.admin,
                "sneaky",
                &SecretString::from("a long new passphrase 42"),
                Role::RetentionRunner,
                false
            )
            .is_err()
    );
    // The trail names the rotation; no token text appears in it.
    let evs = vault
        .audit_events(
            &fx.officer,
            &EventFilter {
                action_prefix: Some("service.".into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    let actions: Vec<&str> = evs.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"service.create"), "{actions:?}");
    assert!(actions.contains(&"service.rotate"), "{actions:?}");
    let dump = format!("{evs:?}");
    assert!(!dump.contains(new.expose()) && !dump.contains(old.expose()));

    // `doctor` lists it and its last use, and warns once it has been
    // idle for 90 days (a credential no script needs any more).
    let service_check = |vault: &Vault| {
        vault_core::doctor::checks(vault, fx.clock.now_ms())
            .unwrap()
            .into_iter()
            .find(|c| c.name == "service-accounts")
            .expect("a service-accounts check")
    };
    let c = service_check(&vault);
    assert_eq!(c.level, vault_core::doctor::Level::Ok, "{}", c.detail);
    assert!(
        c.detail.contains("nightly (retention-runner, last used 20"),
        "{}",
        c.detail
    );
    fx.clock.advance(91 * 86_400_000);
    let c = service_check(&vault);
    assert_eq!(c.level, vault_core::doctor::Level::Warn, "{}", c.detail);
    assert!(c.detail.contains("unused for 90 days"), "{}", c.detail);

    // A terminated employee: the token left with the officer who was
    // shown it. `doctor` fails until someone else rotates it.
    let pw = SecretString::from("Second-officer-Quartz-88");
    let request = match vault.add_user(&fx.admin, "officer2", &pw, Role::Officer, false) {
        Err(vault_core::Error::ApprovalRequired { request }) => request,
        other => panic!("a second officer waits for approval: {other:?}"),
    };
    vault.approve_request(&fx.officer, &request).unwrap();
    let second = vault.login("officer2", &pw, Context::cli()).unwrap();
    vault.rotate_service_token(&second, "nightly").unwrap();
    vault.disable_user(&fx.admin, "officer2").unwrap();
    let c = service_check(&vault);
    assert_eq!(c.level, vault_core::doctor::Level::Fail, "{}", c.detail);
    assert!(
        c.detail
            .contains("nightly was issued to a user now disabled"),
        "{}",
        c.detail
    );
    vault.rotate_service_token(&fx.officer, "nightly").unwrap();
    let c = service_check(&vault);
    assert_ne!(c.level, vault_core::doctor::Level::Fail, "{}", c.detail);
}
