//! The custodian's powers and the defences around logins (issue 10): the
//! vault passphrase change and its ratchet (library, crash children and the
//! real `pivault` binary), the break-glass unlock, the per-source login
//! throttle in front of the account lock-out, and the breached-password list.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use vault_core::Error;
use vault_core::access::{LockoutPolicy, Role};
use vault_core::audit::{AuditEvent, Channel, EventFilter, Outcome};
use vault_core::clock::{Clock, ManualClock};
use vault_core::crypto;
use vault_core::header;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::keystore::Keystore;
use vault_core::secret::SecretString;
use vault_core::vault::{Context, Vault, custodian_context};

use crate::cli::{self, CliVault};
use crate::common::{
    self, BUCKETS, CUSTOMERS, PASSPHRASE, T0, fast_vault, fresh_source, password_of,
};

/// The new passphrase of the change tests (on no breached list).
const NEW_PASSPHRASE: &str = "Custodian-Rotated-Heliotrope-48!";

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

/// Given names of the test records, by number.
const NAMES: [&str; 8] = [
    "Ada",
    "Grace",
    "Hedy",
    "Katherine",
    "Margaret",
    "Radia",
    "Barbara",
    "Frances",
];

fn body(n: usize) -> serde_json::Value {
    json!({ "given_name": NAMES[n], "family_name": "Lovelace", "ssn": "219-09-9998" })
}

/// The audit events of one action, read by the officer (the tests lock
/// other accounts out).
fn events(v: &Vault, action: &str) -> Vec<AuditEvent> {
    let officer = common::login(v, "officer");
    v.audit_events(&officer, &EventFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

fn open(dir: &Path, pass: &str, clock: &Arc<ManualClock>) -> vault_core::Result<Vault> {
    Vault::open(dir, &secret(pass), common::open_options(clock))
}

fn copy_private(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o600)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            copy_private(&p, &to.join(e.file_name()));
        }
    }
}

// ----- passphrase change --------------------------------------------------------

#[test]
fn passphrase_change_old_passphrase_opens_nothing_and_earlier_records_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let v = &f.vault;
    let before = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &body(1))
        .unwrap();
    let old_header = fs::read(dir.join("header")).unwrap();
    let ctx = custodian_context(Some(4242));

    // Refused, each audited, nothing changed: a wrong current passphrase, a
    // short or breached new one, the same one again.
    let r = v.change_passphrase(
        &secret("not-the-current-passphrase"),
        &secret(NEW_PASSPHRASE),
        &ctx,
    );
    assert!(matches!(r, Err(Error::WrongPassphrase)), "{r:?}");
    for weak in ["Short-1!", "1qaz2wsx3edc", "ManchesterUnited", PASSPHRASE] {
        let r = v.change_passphrase(&secret(PASSPHRASE), &secret(weak), &ctx);
        let Err(Error::WeakPassword(why)) = &r else {
            panic!("{weak}: {r:?}")
        };
        assert!(
            !why.to_lowercase().contains(&weak.to_lowercase()),
            "the message echoes it"
        );
    }
    assert_eq!(fs::read(dir.join("header")).unwrap(), old_header);

    let e0 = v.epoch();
    let c = v
        .change_passphrase(&secret(PASSPHRASE), &secret(NEW_PASSPHRASE), &ctx)
        .unwrap();
    assert_eq!(c.epochs, (e0, e0 + 2), "{c:?}");
    assert_eq!(c.buckets_rotated, u64::from(BUCKETS));
    assert!(c.keys_rewrapped >= 1 && c.verified, "{c:?}");
    assert_eq!(v.epoch(), e0 + 2);
    assert!(!v.rekey_pending().unwrap());
    assert!(!dir.join("signing.new").exists());
    // The vault stays open under the new passphrase and keeps working.
    let after = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &body(2))
        .unwrap();
    assert_eq!(
        v.get_record(&f.clerk, before, &[], None).unwrap().fields["given_name"],
        NAMES[1]
    );

    // Audited with the epochs and the OS user, never a secret.
    let ev = events(v, "vault.passphrase.change");
    assert_eq!(ev.len(), 6, "{ev:?}");
    let ok: Vec<_> = ev
        .iter()
        .filter(|e| e.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].actor, None);
    assert_eq!(ok[0].source.as_deref(), Some("uid:4242"));
    assert!(
        ok[0].targets.contains(&format!("epoch:{e0}->{}", e0 + 2)),
        "{:?}",
        ok[0].targets
    );
    let trail = fs::read_dir(dir.join("audit"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    for s in [PASSPHRASE, NEW_PASSPHRASE, "1qaz2wsx3edc"] {
        assert!(
            !trail.windows(s.len()).any(|w| w == s.as_bytes()),
            "a secret in the trail"
        );
    }
    let clock = f.clock.clone();
    drop(f);

    // The old passphrase opens nothing; the new one opens everything.
    assert!(matches!(
        open(&dir, PASSPHRASE, &clock),
        Err(Error::WrongPassphrase)
    ));
    let v = open(&dir, NEW_PASSPHRASE, &clock).unwrap();
    let clerk = common::login(&v, "clerk");
    assert_eq!(
        v.get_record(&clerk, before, &[], None).unwrap().fields["given_name"],
        NAMES[1]
    );
    assert_eq!(
        v.get_record(&clerk, after, &[], None).unwrap().fields["given_name"],
        NAMES[2]
    );
    v.close().unwrap();

    // The old header put back, with the old passphrase: nothing opens.
    let new_header = fs::read(dir.join("header")).unwrap();
    fs::write(dir.join("header"), &old_header).unwrap();
    let r = open(&dir, PASSPHRASE, &clock);
    assert!(r.is_err(), "the old header and passphrase opened the vault");
    fs::write(dir.join("header"), &new_header).unwrap();
    open(&dir, NEW_PASSPHRASE, &clock).unwrap().close().unwrap();
}

/// The threat the ratchet answers: someone kept a copy of the whole vault
/// directory (old header, old keystore) and learns the old passphrase. They
/// can read what the copy holds, but no record written after the change:
/// its key is wrapped under a bucket key that did not exist before it.
#[test]
fn old_header_and_keystore_copy_with_the_old_passphrase_cannot_read_a_record_written_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let subject = SubjectId::new();
    let before = f
        .vault
        .put_record(&f.clerk, CUSTOMERS, subject, &body(1))
        .unwrap();
    let clock = f.clock.clone();
    let vault_id = f.vault.id();
    f.vault.close().unwrap();
    let old = tmp.path().join("old-copy");
    copy_dir(&dir, &old);

    let v = open(&dir, PASSPHRASE, &clock).unwrap();
    v.change_passphrase(
        &secret(PASSPHRASE),
        &secret(NEW_PASSPHRASE),
        &custodian_context(None),
    )
    .unwrap();
    let clerk = common::login(&v, "clerk");
    // The same subject: the same bucket as the record of the copy.
    let after = v.put_record(&clerk, CUSTOMERS, subject, &body(2)).unwrap();
    let live_after = v
        .keystore()
        .wrapped_dek(subject, after, 1)
        .unwrap()
        .expect("live key");
    let live_before = v
        .keystore()
        .wrapped_dek(subject, before, 1)
        .unwrap()
        .expect("live key");
    let bucket = v.keystore().bucket_of(subject);
    v.close().unwrap();

    // The attacker's keys: the root from the old header with the old passphrase.
    let info = header::read_info(&old.join("header")).unwrap();
    let uk = crypto::derive_unlock_key(&secret(PASSPHRASE), &info.salt, info.kdf).unwrap();
    let h = header::open(
        &header::Place::Files {
            header: old.join("header"),
            signing: old.join("signing"),
        },
        &uk,
    )
    .unwrap();
    // Graft the live wrapped keys into the old keystore copy, under the
    // names the old bucket key would open.
    {
        let path = old.join("keystore");
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, &names).unwrap();
        let deks = db.cf_handle("deks").unwrap();
        let key = |r: RecordId, version: u32| {
            let mut k = bucket.to_be_bytes().to_vec();
            k.extend_from_slice(r.as_bytes());
            k.extend_from_slice(&version.to_be_bytes());
            k
        };
        // Positive control first: the copy's own key of the earlier record opens.
        db.put_cf(deks, key(after, 1), &live_after).unwrap();
        db.put_cf(deks, key(before, 2), &live_before).unwrap();
    }
    let ks = Keystore::open(&old.join("keystore"), vault_id, info.buckets, false).unwrap();
    assert!(
        ks.dek(&h.root, h.epoch, subject, before, 1)
            .unwrap()
            .is_some(),
        "positive control: the copy opens what it held"
    );
    let r = ks.dek(&h.root, h.epoch, subject, after, 1);
    assert!(
        r.is_err(),
        "a record written after the change was readable: {r:?}"
    );
    // Version 2 here holds the live (re-wrapped) key of the earlier record.
    assert!(ks.dek(&h.root, h.epoch, subject, before, 2).is_err());
}

/// A kill at every step of the change: the vault then opens with exactly
/// one of the two passphrases (the old one before the commit, the new one
/// from the commit on), finishes the change on that open, and loses nothing.
#[test]
fn an_interrupted_passphrase_change_opens_with_exactly_one_passphrase() {
    let steps = [
        ("passphrase.signing-written", false),
        ("passphrase.slot-written", true),
        ("passphrase.buckets-rewrapped", true),
        ("passphrase.signing-renamed", true),
        ("passphrase.slot-erased", true),
        ("passphrase.rotated", true),
        ("passphrase.ratcheted", true),
    ];
    for (step, committed) in steps {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        let f = fast_vault(&dir);
        let id = f
            .vault
            .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &body(7))
            .unwrap();
        let clock = f.clock.clone();
        let e0 = f.vault.epoch();
        f.vault.close().unwrap();
        let old_file = tmp.path().join("old");
        let new_file = tmp.path().join("new");
        cli::write_private(&old_file, PASSPHRASE.as_bytes());
        cli::write_private(&new_file, NEW_PASSPHRASE.as_bytes());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_passphrase-crash"))
            .args([dir.as_os_str(), old_file.as_os_str(), new_file.as_os_str()])
            .arg(step)
            .output()
            .unwrap();
        assert!(
            out.status.code().is_none(),
            "{step}: the child did not crash: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let (good, bad) = if committed {
            (NEW_PASSPHRASE, PASSPHRASE)
        } else {
            (PASSPHRASE, NEW_PASSPHRASE)
        };
        let r = open(&dir, bad, &clock);
        assert!(r.is_err(), "{step}: the other passphrase opened the vault");
        let v = open(&dir, good, &clock).unwrap_or_else(|e| panic!("{step}: {e}"));
        assert!(!v.rekey_pending().unwrap(), "{step}");
        assert!(!dir.join("signing.new").exists(), "{step}");
        let clerk = common::login(&v, "clerk");
        assert_eq!(
            v.get_record(&clerk, id, &[], None).unwrap().fields["given_name"],
            NAMES[7],
            "{step}"
        );
        assert!(v.epoch() > e0, "{step}: no ratchet");
        if committed {
            assert_eq!(events(&v, "vault.passphrase.resume").len(), 1, "{step}");
        }
        v.close().unwrap();
        // Once finished, still exactly the one passphrase.
        assert!(open(&dir, bad, &clock).is_err(), "{step}");
        open(&dir, good, &clock).unwrap().close().unwrap();
    }
}

#[test]
fn passphrase_change_through_the_real_binary() {
    let v = CliVault::standard();
    let data = v.input_file("a.json", &body(3).to_string());
    let put = |who: &CliVault| {
        let r = who.run(
            Some("clerk"),
            &[
                "record",
                "put",
                CUSTOMERS,
                "--subject",
                "C-77",
                "--data",
                data.to_str().unwrap(),
            ],
        );
        r.ok();
        r.stdout.trim().to_owned()
    };
    let before = put(&v);
    let old_header = fs::read(v.dir.join("header")).unwrap();
    let new_file = v.secrets.join("new-passphrase");

    // A breached new passphrase is refused (exit 3), never echoed.
    cli::write_private(&new_file, b"qwertyuiop123\n");
    let mut c = v.command(&["--json", "passphrase", "change"]);
    c.env("PIVAULT_NEW_PASSPHRASE_FILE", &new_file);
    let r = v.exec(c, "--json passphrase change");
    r.code(cli::EXIT_INVALID_INPUT);
    assert_eq!(r.error_code(), "weak_password");
    assert!(!r.all_output().contains("qwertyuiop123"));
    // Never through a server.
    let r = v.run(
        None,
        &["passphrase", "change", "--server", "https://127.0.0.1:9"],
    );
    r.code(cli::EXIT_USAGE);

    cli::write_private(&new_file, format!("{NEW_PASSPHRASE}\n").as_bytes());
    let mut c = v.command(&["--json", "passphrase", "change", "--new-passphrase-file"]);
    c.arg(&new_file);
    let r = v.exec(c, "--json passphrase change --new-passphrase-file FILE");
    r.ok();
    let out = r.json();
    assert_eq!(out["passphrase_changed"], true, "{out}");
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(
        out["buckets_rotated"],
        vault_core::vault::DEFAULT_BUCKETS,
        "{out}"
    );
    assert!(!r.all_output().contains(NEW_PASSPHRASE) && !r.all_output().contains(cli::PASSPHRASE));

    // The old passphrase opens nothing.
    let r = v.run(Some("clerk"), &["--json", "record", "get", &before]);
    r.code(cli::EXIT_PASSPHRASE);
    assert_eq!(r.error_code(), "wrong_passphrase");
    // The new one opens everything, old and new.
    cli::write_private(&v.passphrase_file, format!("{NEW_PASSPHRASE}\n").as_bytes());
    v.run(Some("clerk"), &["record", "get", &before]).ok();
    let after = put(&v);
    v.run(Some("clerk"), &["record", "get", &after]).ok();
    // The audit names the change and the OS user who made it.
    let r = v.run(
        Some("auditor"),
        &[
            "--json",
            "audit",
            "log",
            "--action",
            "vault.passphrase.change",
        ],
    );
    r.ok();
    let log = r.json();
    let evs = log["items"].as_array().expect("events");
    assert_eq!(evs.len(), 2, "{log}");
    assert!(
        evs.iter().any(|e| e["outcome"] == "success"
            && e["source"].as_str().is_some_and(|s| s.starts_with("uid:"))),
        "{log}"
    );

    // The old header copy with the old passphrase cannot read what came after.
    let new_header = fs::read(v.dir.join("header")).unwrap();
    fs::write(v.dir.join("header"), &old_header).unwrap();
    cli::write_private(
        &v.passphrase_file,
        format!("{}\n", cli::PASSPHRASE).as_bytes(),
    );
    let r = v.run(Some("clerk"), &["--json", "record", "get", &after]);
    assert_ne!(r.code, 0, "old header + old passphrase read a later record");
    fs::write(v.dir.join("header"), &new_header).unwrap();
}

// ----- break-glass --------------------------------------------------------------

#[test]
fn break_glass_unlocks_the_last_admin_with_the_passphrase_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let wrong = secret("Not-The-Admin-Pass-77");
    for _ in 0..5 {
        assert!(matches!(
            v.login("admin", &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
    }
    assert!(matches!(
        v.login("admin", &password_of("admin"), fresh_source()),
        Err(Error::AccountLocked { .. })
    ));
    // No other admin exists; the custodian unlocks with the open vault alone.
    let ctx = custodian_context(Some(1001));
    assert!(matches!(
        v.break_glass_unlock("nobody-here", &ctx),
        Err(Error::NotFound(_))
    ));
    let id = v.break_glass_unlock("admin", &ctx).unwrap();
    assert_eq!(id, f.admin.user());
    v.login("admin", &password_of("admin"), fresh_source())
        .unwrap();
    let ev = events(v, "user.unlock.break_glass");
    let ok: Vec<_> = ev
        .iter()
        .filter(|e| e.outcome == Outcome::Success)
        .collect();
    assert_eq!(ok.len(), 1, "{ev:?}");
    assert_eq!(ok[0].actor, None);
    assert_eq!(ok[0].channel, Channel::Cli);
    assert_eq!(ok[0].source.as_deref(), Some("uid:1001"));
    assert_eq!(
        common::ids(&ok[0].targets),
        vec![id.to_string(), "os-user:uid:1001".to_owned()]
    );
}

#[test]
fn break_glass_through_the_real_binary_needs_no_login() {
    let v = CliVault::standard();
    let wrong = v.secrets.join("wrong-password");
    // Lock the admin out from five terminals' worth of sources: the library
    // path (the CLI's own source is one source and only gets throttled).
    {
        // The system clock: the lock must still hold for the CLI runs below.
        let vault = Vault::open(
            &v.dir,
            &secret(cli::PASSPHRASE),
            vault_core::vault::OpenOptions::default(),
        )
        .unwrap();
        let w = SecretString::from_file(&wrong).unwrap();
        for _ in 0..5 {
            let _ = vault.login("admin", &w, fresh_source());
        }
        vault.close().unwrap();
    }
    let r = v.run(Some("admin"), &["--json", "user", "list"]);
    r.code(cli::EXIT_AUTH);
    assert_eq!(r.error_code(), "account_locked");
    // No PIVAULT_USER: the passphrase alone.
    let r = v.run(
        None,
        &["--json", "user", "unlock", "admin", "--break-glass"],
    );
    r.ok();
    assert_eq!(r.json()["break_glass"], true);
    v.run(Some("admin"), &["--json", "user", "list"]).ok();
    let r = v.run(
        Some("auditor"),
        &[
            "--json",
            "audit",
            "log",
            "--action",
            "user.unlock.break_glass",
        ],
    );
    r.ok();
    let log = r.json();
    let uid = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == format!("uid:{uid}")),
        "{log}"
    );
    // Not through a server, and the plain unlock still needs an admin.
    v.run(
        None,
        &[
            "user",
            "unlock",
            "admin",
            "--break-glass",
            "--server",
            "https://127.0.0.1:9",
        ],
    )
    .code(cli::EXIT_USAGE);
    v.run(Some("clerk"), &["user", "unlock", "admin"])
        .code(cli::EXIT_DENIED);
}

// ----- per-source throttling before the account lock ---------------------------------

fn from(addr: &str) -> Context {
    Context {
        channel: Channel::Http,
        source: Some(addr.to_owned()),
        request_id: None,
    }
}

#[test]
fn one_hostile_source_cannot_lock_the_owner_out() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let policy = LockoutPolicy::default();
    let wrong = secret("Hostile-Guess-Number-0");
    let (mut checked, mut throttled) = (0, 0);
    // A patient attacker from one address: waits out every backoff.
    for _ in 0..40 {
        match v.login("clerk", &wrong, from("203.0.113.66")) {
            Err(Error::AuthFailed) => checked += 1,
            Err(Error::LoginThrottled { retry_at_ms }) => {
                throttled += 1;
                assert!(retry_at_ms > f.clock.now_ms());
                f.clock.set(retry_at_ms);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        checked >= 2 * policy.max_failures as usize,
        "{checked} checked"
    );
    assert!(throttled >= 10, "{throttled} throttled");
    // Without waiting, the next attempt after a checked failure is refused.
    let r = loop {
        match v.login("clerk", &wrong, from("203.0.113.66")) {
            Err(Error::AuthFailed) => checked += 1,
            other => break other,
        }
    };
    assert!(matches!(r, Err(Error::LoginThrottled { .. })), "{r:?}");
    // Even the right password from that address waits (nothing is checked).
    let r = v.login("clerk", &password_of("clerk"), from("203.0.113.66"));
    assert!(matches!(r, Err(Error::LoginThrottled { .. })), "{r:?}");
    // The owner, from elsewhere, logs in at once: the account is not locked.
    v.login("clerk", &password_of("clerk"), from("198.51.100.5"))
        .unwrap();
    assert!(events(v, "auth.lockout").is_empty());
    // A throttled attempt is audited as denied, with the code.
    let throttled_events = events(v, "auth.login")
        .into_iter()
        .filter(|e| e.code.as_deref() == Some("login_throttled"))
        .count();
    assert_eq!(throttled_events, throttled + 2, "{checked} checked");
}

#[test]
fn failures_from_distinct_sources_still_lock_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let wrong = secret("Distributed-Guess-9");
    for i in 0..4 {
        let r = v.login("auditor", &wrong, from(&format!("192.0.2.{i}")));
        assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
        // A second failure from the same source counts no further.
        let r = v.login("auditor", &wrong, from(&format!("192.0.2.{i}")));
        assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    }
    v.login("auditor", &password_of("auditor"), from("192.0.2.200"))
        .expect("four sources do not lock");
    // The success starts the count again: five distinct sources lock it.
    for i in 10..15 {
        let r = v.login("auditor", &wrong, from(&format!("192.0.2.{i}")));
        assert!(matches!(r, Err(Error::AuthFailed)), "uniform 401: {r:?}");
    }
    assert_eq!(events(v, "auth.lockout").len(), 1);
    let r = v.login("auditor", &password_of("auditor"), from("192.0.2.201"));
    assert!(matches!(r, Err(Error::AccountLocked { .. })), "{r:?}");
    // A wrong password on the locked account still answers like any other.
    let r = v.login("auditor", &wrong, from("192.0.2.202"));
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
}

/// The throttle lives in the vault, not the process: each `pivault` run is
/// a new process, and the fourth wrong password in a row from the command
/// line is refused with exit 9 and `login_throttled`.
#[test]
fn the_cli_is_throttled_across_processes() {
    let v = CliVault::standard();
    let wrong = v.secrets.join("wrong-password");
    let run_wrong = || {
        let mut c = v.command(&["--json", "user", "list"]);
        c.env("PIVAULT_USER", "admin")
            .env("PIVAULT_PASSWORD_FILE", &wrong);
        v.exec(c, "--json user list (wrong password)")
    };
    for _ in 0..3 {
        let r = run_wrong();
        r.code(cli::EXIT_AUTH);
        assert_eq!(r.error_code(), "auth_failed");
    }
    // The next attempt waits 1 s after the third failure, the one after a
    // checked failure 2 s: within a few tries one lands inside a backoff
    // however slow this machine is.
    let throttled = (0..4)
        .map(|_| run_wrong())
        .find(|r| r.code == 9)
        .expect("throttled");
    assert_eq!(throttled.error_code(), "login_throttled");
    assert!(
        throttled.stderr.contains("try again after"),
        "{}",
        throttled.stderr
    );
}

// ----- the breached-password list ------------------------------------------------------

#[test]
fn breached_passwords_are_refused_for_users_and_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    assert!(vault_core::breached::len() >= 100_000);
    // On the list (exact, or after lower-casing, trimming, or with trailing
    // digits and symbols stripped); none of these was refused before the list.
    for bad in [
        "1qaz2wsx3edc",
        "QazWsxEdcRfv",
        " 123qweasdzxc ",
        "manchesterunited",
        "Abcdefghijkl",
        "passwordpassword",
        "StarWars1234!!",
    ] {
        let r = v.add_user(&f.admin, "newclerk", &secret(bad), Role::Clerk, false);
        let Err(Error::WeakPassword(why)) = &r else {
            panic!("{bad:?} accepted: {r:?}")
        };
        assert!(why.contains("breached"), "{why}");
        let msg = r.unwrap_err().to_string();
        assert!(
            !msg.to_lowercase()
                .contains(bad.trim().to_lowercase().as_str()),
            "{msg}"
        );
        let r = v.set_password(&f.admin, "auditor", &secret(bad));
        assert!(
            matches!(r, Err(Error::WeakPassword(_))),
            "reset {bad:?}: {r:?}"
        );
        let r = v.change_own_password(&f.clerk, &password_of("clerk"), &secret(bad));
        assert!(
            matches!(r, Err(Error::WeakPassword(_))),
            "change {bad:?}: {r:?}"
        );
    }
    // Not on it.
    for good in [
        "Xk9#mQ2$vL7p",
        "Tundra-Violet-Kettle-81",
        "quiet otter harvests 7 plums",
    ] {
        v.add_user(
            &f.admin,
            &format!("u{}", good.len()),
            &secret(good),
            Role::Clerk,
            false,
        )
        .unwrap_or_else(|e| panic!("{good:?} refused: {e}"));
    }
    // The vault passphrase at init.
    let clock = Arc::new(ManualClock::new(T0));
    let r = Vault::create(
        &tmp.path().join("w"),
        &secret("qwertyuiop123"),
        vault_core::vault::InitOptions {
            kdf: vault_core::crypto::KdfParams::INSECURE_FAST,
            buckets: BUCKETS,
            admin: vault_core::ids::Username::parse("admin").unwrap(),
            admin_password: password_of("admin"),
            two_factor: vault_core::access::TwoFactorPolicy::none(),
        },
        common::open_options(&clock),
    );
    let Err(Error::WeakPassword(why)) = &r else {
        panic!("{:?}", r.map(|_| ()))
    };
    assert!(
        why.contains("vault passphrase") && why.contains("breached"),
        "{why}"
    );
}

/// A backup taken before a passphrase change still restores after it: its
/// key is carried across the ratchet (re-wrapped, not lost), and the records
/// it holds read with the new passphrase.
#[test]
fn a_backup_taken_before_a_passphrase_change_restores_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let id = f
        .vault
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &body(5))
        .unwrap();
    let file = tmp.path().join("before.pvb");
    f.vault.create_backup(&f.admin, &file, 30).unwrap();
    f.vault
        .change_passphrase(
            &secret(PASSPHRASE),
            &secret(NEW_PASSPHRASE),
            &custodian_context(None),
        )
        .unwrap();
    let clock = f.clock.clone();
    f.vault.close().unwrap();
    let v = open(&dir, NEW_PASSPHRASE, &clock).unwrap();
    let admin = common::login(&v, "admin");
    let r = v.restore_backup(&admin, &file).unwrap();
    assert_eq!((r.kept, r.repaired), (1, 0), "{r:?}");
    let clerk = common::login(&v, "clerk");
    assert_eq!(
        v.get_record(&clerk, id, &[], None).unwrap().fields["given_name"],
        NAMES[5]
    );
}

/// Over the server's Unix-domain socket a source is the peer's OS user,
/// whatever its process: a new `pivault` process per guess (a new pid each
/// time) is still one source, so it is throttled and cannot lock the
/// account; the owner, from another source (here HTTPS), logs in at once.
#[test]
fn socket_guesses_from_one_os_user_are_one_source_whatever_the_process() {
    let run_dir = tempfile::tempdir().unwrap();
    let socket = run_dir.path().join("pivault.sock");
    let srv = crate::server::start(&[
        "--logins-per-minute",
        "10000",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    let home = tempfile::tempdir().unwrap();
    let wrong = home.path().join("wrong");
    cli::write_private(&wrong, b"Not-The-Clerk-Pass-Sock-1");
    let guess = || {
        let mut c = std::process::Command::new(cli::pivault_bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("PIVAULT_") {
                c.env_remove(k);
            }
        }
        let out = c
            .env("HOME", home.path())
            .env("PIVAULT_USER", "clerk")
            .env("PIVAULT_PASSWORD_FILE", &wrong)
            .env("PIVAULT_SOCKET", &socket)
            .env("PIVAULT_TOKEN_FILE", home.path().join("token"))
            .args(["--json", "record", "list"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(guess());
    }
    assert!(
        codes[..3]
            .iter()
            .all(|(c, e)| *c == 4 && e.contains("auth_failed")),
        "{codes:?}"
    );
    let throttled = codes
        .iter()
        .filter(|(c, e)| *c == 9 && e.contains("login_throttled"))
        .count();
    assert!(throttled >= 5, "{codes:?}");
    // Not locked: the owner logs in from another source.
    let _ = srv.token("clerk");
    let officer = srv.token("officer");
    let ev = srv
        .call(
            "GET",
            "/v1/audit/events?action=auth.lockout",
            Some(&officer),
            None,
        )
        .json();
    assert_eq!(ev["items"].as_array().map(Vec::len), Some(0), "{ev}");
}
