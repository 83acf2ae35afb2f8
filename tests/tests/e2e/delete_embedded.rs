//! Deleting a whole vault kept on one machine (`pivault vault delete` on the
//! embedded default): the business closes. The root-key slots are
//! overwritten, the signing keys wiped, every keystore row deleted and
//! compacted away, every file of the directory searched for the wrapped
//! keys; a certificate signed by the vault's key and the whole trail are
//! handed over. Stopped part-way, `--resume` gives the vault back or
//! finishes it. Openers are kept out throughout.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vault_core::Error;
use vault_core::header::{self, Place};
use vault_core::ids::RecordId;
use vault_core::secret::SecretString;
use vault_core::vault::VaultDeleted;
use vault_core::vault::decommission::{Resumed, resume_deletion};

use crate::common::{self, Fixture};
use crate::delete_cluster::reopen;
use crate::delete_resume_cluster::{delete_with_hook, killed_at, put_keyed};

fn embedded(dir: &Path) -> Fixture {
    common::fast_vault_with(dir, None, None)
}

fn place(dir: &Path) -> Place<'static> {
    Place::Files {
        header: dir.join("header"),
        signing: dir.join("signing"),
    }
}

/// A vault with `n` records: the fixture, every wrapped key of it that must
/// be in no file once it is deleted (data keys, the header's root-key
/// slots, the sealed signing keys), and its records.
fn filled(dir: &Path, n: usize) -> (Fixture, Vec<Vec<u8>>, Vec<RecordId>) {
    let fx = embedded(dir);
    let (mut needles, ids) = put_keyed(&fx, n);
    let slots = header::file_slots(&place(dir)).unwrap();
    assert_eq!(slots.len(), 1, "one root-key slot in use");
    needles.extend(slots);
    needles.push(std::fs::read(dir.join("signing")).unwrap());
    (fx, needles, ids)
}

/// Every file under `dir` holding any of `needles`.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p)
                && needles
                    .iter()
                    .any(|n| b.windows(n.len()).any(|w| w == n.as_slice()))
            {
                out.push(p);
            }
        }
    }
    out
}

/// Resumes a deletion that destroyed nothing: the vault is given back
/// and opens with every record of `ids` readable.
fn given_back(dir: &Path, pass: &SecretString, ids: &[RecordId]) -> vault_core::vault::Vault {
    let Resumed::NothingDeleted { .. } = resume_deletion(dir, pass).unwrap() else {
        panic!("nothing was destroyed")
    };
    let v = reopen(dir).expect("the vault is back");
    let clerk = common::login(&v, "clerk");
    for r in ids {
        v.get_record(&clerk, *r, &[], None).expect("still readable");
    }
    v
}

fn assert_certified(done: &VaultDeleted, key: &ed25519_dalek::VerifyingKey, records: u64) {
    let cert = &done.certificate.body;
    assert_eq!(cert["status"], "validated");
    assert_eq!(cert["sanitization"]["verification"]["result"], "PASS");
    assert_eq!(cert["target"]["record_count"], records);
    let purge = &cert["sanitization"]["details"]["keystore_purge"];
    assert_eq!(purge["engine"], "rocksdb", "{purge}");
    assert_eq!(purge["residue_files"], serde_json::json!([]), "{purge}");
    let scan = cert["sanitization"]["verification"]["byte_scan"]
        .as_str()
        .unwrap();
    assert!(scan.ends_with(": 0 file(s) hold them"), "{scan}");
    assert!(
        cert["sanitization"]["not_covered"]
            .to_string()
            .contains("copies of the vault directory made outside pivault"),
        "the certificate says what it does not reach"
    );
    assert_eq!(&done.certificate_key, key, "signed by the vault's own key");
    assert!(vault_core::certificate::verify(&done.certificate, key).ok());
    let report = vault_core::siem::verify_file(&done.audit_trail, &done.audit_key);
    assert!(report.ok(), "{}", report.proves());
    assert!(done.audit_trail.contains("\"vault.delete\""));
}

#[test]
fn an_embedded_vault_is_deleted_with_a_certificate_and_no_byte_of_its_keys_left_in_its_directory_while_openers_are_kept_out()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, _) = filled(&dir, 25);
    let cert_key = fx.vault.certificate_public_key();
    let before = files_holding(&dir, &needles);
    assert!(
        before.contains(&dir.join("header")) && before.contains(&dir.join("signing")),
        "before: the header, the signing file and the keystore hold them: {before:?}"
    );

    // A second opener (a server started on the directory) loops
    // throughout; it never gets in.
    let deleting = AtomicBool::new(true);
    let opened = AtomicUsize::new(0);
    let done = std::thread::scope(|s| {
        let intruder = s.spawn(|| {
            while deleting.load(Ordering::SeqCst) {
                if reopen(&dir).is_ok() {
                    opened.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let done = delete_with_hook(fx.vault, Box::new(|_| {}));
        deleting.store(false, Ordering::SeqCst);
        intruder.join().unwrap();
        done
    });
    let done = done.expect("no panic").expect("deleted");
    assert_eq!(opened.load(Ordering::SeqCst), 0, "no one opened it");
    assert_certified(&done, &cert_key, 25);
    // Read from the files directly: no slot, no signing file, no wrapped
    // key anywhere in the directory, which opens nothing.
    assert!(header::file_slots(&place(&dir)).unwrap().is_empty());
    assert!(!dir.join("signing").exists());
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
    let Err(e) = reopen(&dir) else {
        panic!("a deleted vault opened")
    };
    assert!(e.to_string().contains("deleted"), "{e}");
    // Nor without its marker: its slots are gone.
    std::fs::remove_file(dir.join("DELETED")).unwrap();
    assert!(reopen(&dir).is_err());
    done.remove_directory().unwrap();
    assert!(!dir.exists());
}

#[test]
fn an_embedded_deletion_stopped_before_its_slots_go_gives_the_vault_back_and_one_stopped_after_is_finished_by_resume()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, ids) = filled(&dir, 8);
    let cert_key = fx.vault.certificate_public_key();
    let pass = SecretString::from(common::PASSPHRASE);

    assert!(delete_with_hook(fx.vault, killed_at("deletion_journaled")).is_none());
    assert!(reopen(&dir).is_err(), "marked deleted");
    // Kept by someone with the directory, for later.
    let stale = std::fs::read(dir.join("DELETED")).unwrap();
    let v = given_back(&dir, &pass, &ids);

    assert!(delete_with_hook(v, killed_at("keystore_dropped")).is_none());
    assert!(reopen(&dir).is_err());
    assert!(matches!(
        resume_deletion(&dir, &SecretString::from("not the passphrase at all")),
        Err(Error::WrongPassphrase)
    ));
    // The first deletion's journal put in the marker instead: sealed under
    // the same passphrase, for the same vault, but the vault's trail went
    // on after it (it was given back and used), so it is refused.
    let fresh = std::fs::read(dir.join("DELETED")).unwrap();
    std::fs::write(dir.join("DELETED"), &stale).unwrap();
    match resume_deletion(&dir, &pass) {
        Err(Error::Integrity(m)) => assert!(m.contains("not this deletion's"), "{m}"),
        other => panic!("an earlier deletion's journal must be refused: {other:?}"),
    }
    std::fs::write(dir.join("DELETED"), &fresh).unwrap();
    let Resumed::Deleted(done) = resume_deletion(&dir, &pass).unwrap() else {
        panic!("the slots were overwritten: the resume must finish")
    };
    assert_certified(&done, &cert_key, 8);
    assert_eq!(
        done.certificate.body["sanitization"]["details"]["resumed"],
        true
    );
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
}

#[test]
fn a_deletion_holds_its_journal_until_the_directory_goes_and_a_certificate_lost_before_is_issued_again_with_its_id()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, _) = filled(&dir, 5);
    let cert_key = fx.vault.certificate_public_key();
    let pass = SecretString::from(common::PASSPHRASE);
    let done = delete_with_hook(fx.vault, Box::new(|_| {}))
        .expect("no panic")
        .expect("deleted");
    let first = done.certificate.clone();
    assert_eq!(
        first.body["validator"]["time"], first.body["issued_at"],
        "the validator, signed in throughout, validates the result"
    );
    // The certificate not kept yet: a resume now would sign a second one.
    assert!(matches!(
        resume_deletion(&dir, &pass),
        Err(Error::VaultBusy)
    ));
    // The certificate could not be written (a full disk): the deletion
    // is let go with the directory still there; a resume issues it again,
    // the same certificate, not a second deletion's.
    drop(done);
    let Resumed::Deleted(again) = resume_deletion(&dir, &pass).unwrap() else {
        panic!("the slots were overwritten: the resume must finish")
    };
    assert_certified(&again, &cert_key, 5);
    let body = &again.certificate.body;
    assert_eq!(body["certificate_id"], first.body["certificate_id"]);
    assert_eq!(
        body["target"]["commitment"],
        first.body["target"]["commitment"]
    );
    // The validator took no part in the resume: said, and not stamped.
    let validator = &body["validator"];
    assert!(
        validator["note"]
            .as_str()
            .is_some_and(|n| n.contains("without the validator")),
        "{validator}"
    );
    assert_ne!(validator["time"], body["issued_at"], "{validator}");
    assert!(
        validator["time"].as_str().unwrap() <= first.body["validator"]["time"].as_str().unwrap(),
        "the time the validator signed in, from the journal: {validator}"
    );
    assert!(matches!(
        resume_deletion(&dir, &pass),
        Err(Error::VaultBusy)
    ));
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
    again.remove_directory().unwrap();
    assert!(!dir.exists());
}

#[test]
fn another_vaults_journal_under_the_same_passphrase_is_refused_whether_or_not_its_outer_name_is_changed()
 {
    let tmp = tempfile::tempdir().unwrap();
    let pass = SecretString::from(common::PASSPHRASE);
    // Two vaults of one owner, one passphrase; both deletions stopped.
    let (ours, _, _) = filled(&tmp.path().join("ours"), 3);
    let (theirs, _, _) = filled(&tmp.path().join("theirs"), 3);
    let (dir, other) = (ours.dir.clone(), theirs.dir.clone());
    let our_id = ours.vault.id().to_string();
    assert!(delete_with_hook(ours.vault, killed_at("keystore_dropped")).is_none());
    assert!(delete_with_hook(theirs.vault, killed_at("deletion_journaled")).is_none());
    let own = std::fs::read(dir.join("DELETED")).unwrap();
    let foreign = std::fs::read(other.join("DELETED")).unwrap();

    // Their journal as it is: it names their vault.
    std::fs::write(dir.join("DELETED"), &foreign).unwrap();
    match resume_deletion(&dir, &pass) {
        Err(Error::Integrity(m)) => assert!(m.contains("another vault"), "{m}"),
        other => panic!("another vault's journal must be refused: {other:?}"),
    }
    // Renamed for ours on the outside: the seal is bound to their vault.
    let mut outer: serde_json::Value = serde_json::from_slice(&foreign).unwrap();
    outer["vault_id"] = serde_json::json!(our_id);
    std::fs::write(dir.join("DELETED"), serde_json::to_vec(&outer).unwrap()).unwrap();
    assert!(
        resume_deletion(&dir, &pass).is_err(),
        "a journal sealed for another vault opened for ours"
    );
    // Ours back: finished, and theirs given back untouched.
    std::fs::write(dir.join("DELETED"), &own).unwrap();
    let Resumed::Deleted(done) = resume_deletion(&dir, &pass).unwrap() else {
        panic!("our keys were destroyed: the resume must finish")
    };
    assert_eq!(done.certificate.body["vault"]["id"], our_id.as_str());
    let Resumed::NothingDeleted { vault_id } = resume_deletion(&other, &pass).unwrap() else {
        panic!("their deletion stopped before anything went")
    };
    assert_ne!(vault_id, our_id);
    reopen(&other).expect("their vault opens");
}

/// What `pivault vault delete` is given and hands over: the passphrase
/// and the two people's passwords in files, and where the certificate and
/// the trail go.
struct Handover {
    work: PathBuf,
}

impl Handover {
    fn new(tmp: &Path) -> Handover {
        let work = tmp.join("handed-over");
        std::fs::create_dir(&work).unwrap();
        for (name, value) in [
            ("pass", common::PASSPHRASE.to_owned()),
            (
                "officer.pw",
                common::password_of("officer").expose().to_owned(),
            ),
            (
                "auditor.pw",
                common::password_of("auditor").expose().to_owned(),
            ),
        ] {
            crate::cli::write_private(&work.join(name), value.as_bytes());
        }
        Handover { work }
    }

    /// `pivault --json … vault delete ARGS` on `dir` by the officer with
    /// the auditor validating, run by `wrap` (a program and its arguments,
    /// such as strace) when it is not empty.
    fn run(&self, dir: &Path, wrap: &[String], args: &[&str]) -> std::process::Output {
        let w = &self.work;
        self.command(
            dir,
            wrap,
            &[
                "--user",
                "officer",
                "vault",
                "delete",
                "--validator",
                "auditor",
            ],
        )
        .args(args)
        .env("PIVAULT_PASSWORD_FILE", w.join("officer.pw"))
        .env("PIVAULT_VALIDATOR_PASSWORD_FILE", w.join("auditor.pw"))
        .output()
        .unwrap()
    }

    /// `pivault --json … vault delete --resume` on `dir` (the custodian's
    /// passphrase alone), run by `wrap`, started and not waited for.
    fn resume(&self, dir: &Path, wrap: &[String]) -> std::process::Child {
        self.command(dir, wrap, &["vault", "delete", "--resume"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `pivault --json --vault DIR COMMAND… --certificate … --audit-out …`
    /// with the passphrase's file, run by `wrap` when it is not empty.
    fn command(&self, dir: &Path, wrap: &[String], command: &[&str]) -> std::process::Command {
        let w = &self.work;
        let mut c = match wrap.split_first() {
            Some((program, rest)) => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(crate::cli::pivault_bin());
                c
            }
            None => std::process::Command::new(crate::cli::pivault_bin()),
        };
        c.args(["--json", "--vault"])
            .arg(dir)
            .args(command)
            .arg("--certificate")
            .arg(w.join("cert.json"))
            .arg("--audit-out")
            .arg(w.join("trail.jsonl"))
            .env("PIVAULT_PASSPHRASE_FILE", w.join("pass"))
            .env_remove("PIVAULT_DIR");
        c
    }
}

/// strace running a command with the first `syscall(2)` on `path` changed
/// as `inject` says (`error=ENOSPC`, `delay_enter=3000000`), traced into `log`.
fn strace(log: &Path, syscall: &str, inject: &str, path: &Path) -> Vec<String> {
    const STRACE: &str = "/usr/bin/strace";
    assert!(
        Path::new(STRACE).exists(),
        "{STRACE} is missing: the fault tests need strace (scripts/setup.sh installs it)"
    );
    [
        STRACE,
        "-f",
        "-qq",
        "-y",
        "-o",
        log.to_str().unwrap(),
        "-e",
        &format!("trace={syscall}"),
        "-e",
        &format!("inject={syscall}:{inject}:when=1"),
        "-P",
        path.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Whether a process has `path` open (any of `/proc/*/fd`).
fn held_open(path: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path))
        })
    })
}

#[test]
fn pivault_vault_delete_of_an_embedded_vault_writes_what_it_hands_over_outside_and_removes_the_directory()
 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, _) = filled(&dir, 3);
    let vault_id = fx.vault.id().to_string();
    drop(fx);
    let handover = Handover::new(tmp.path());
    let work = &handover.work;
    let run = |args: &[&str]| handover.run(&dir, &[], args);
    let o = run(&["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["keystore_engine"], "rocksdb", "{plan}");
    assert_eq!(plan["problems"], serde_json::json!([]), "{plan}");
    let o = run(&["--confirm", &vault_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["document"], "vault-deleted", "{doc}");
    assert_eq!(doc["records"], 3);
    assert!(!dir.exists(), "the directory removed");
    let key_file = work.join("cert.pem");
    crate::cli::write_private(
        &key_file,
        doc["certificate_public_key"].as_str().unwrap().as_bytes(),
    );
    let o = std::process::Command::new(crate::cli::pivault_bin())
        .args(["certificate", "verify"])
        .arg(work.join("cert.json"))
        .arg("--key")
        .arg(&key_file)
        .env_remove("PIVAULT_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Nothing handed over holds a key.
    assert_eq!(files_holding(work, &needles), Vec::<PathBuf>::new());
}

/// A full disk (`write(2)` of the marker failing with ENOSPC) or a lost
/// flush (`fsync(2)` of it failing with EIO) while the deletion's journal is
/// written, by the real binary under strace: the deletion stops before
/// anything is destroyed, no marker is left to keep the vault shut, the
/// error says so (a full disk called one, exit 11), and the vault opens
/// with every record and a trail that verifies and names the failure.
/// The deletion then goes through.
#[test]
fn a_full_disk_or_a_lost_flush_while_the_journal_is_written_destroys_nothing_and_leaves_no_marker()
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, ids) = filled(&dir, 3);
    let vault_id = fx.vault.id().to_string();
    drop(fx);
    let handover = Handover::new(tmp.path());
    let marker = dir.join("DELETED");
    for (round, (sc, errno)) in [("write", "ENOSPC"), ("fsync", "EIO")]
        .into_iter()
        .enumerate()
    {
        let log = tmp.path().join(format!("strace-{sc}.log"));
        let wrap = strace(&log, sc, &format!("error={errno}"), &marker);
        let o = handover.run(&dir, &wrap, &["--confirm", &vault_id]);
        let trace = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            trace.contains("(INJECTED)"),
            "strace injected nothing into the marker ({sc}): {trace}"
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        eprintln!("{sc} -> {errno}: {}", stderr.trim());
        assert_eq!(o.status.code(), Some(11), "{sc} {errno}: {stderr}");
        if errno == "ENOSPC" {
            assert!(stderr.contains("the disk is full"), "{stderr}");
        }
        assert!(
            stderr.contains("DELETED") && stderr.contains("nothing was deleted"),
            "the error names the file and what did not happen: {stderr}"
        );
        assert!(
            !stderr.contains(tmp.path().to_str().unwrap()),
            "no absolute path: {stderr}"
        );
        assert!(
            !marker.exists(),
            "{sc} {errno}: a marker left keeps the vault shut"
        );
        let v = reopen(&dir).expect("the vault opens");
        let clerk = common::login(&v, "clerk");
        for r in &ids {
            v.get_record(&clerk, *r, &[], None).expect("still readable");
        }
        let auditor = common::login(&v, "auditor");
        assert!(v.audit_verify(&auditor).unwrap().ok());
        let failed = v
            .audit_events(
                &auditor,
                &vault_core::audit::EventFilter {
                    action_prefix: Some("vault.delete".into()),
                    ..Default::default()
                },
            )
            .unwrap()
            .into_iter()
            .filter(|e| e.outcome != vault_core::audit::Outcome::Success)
            .count();
        assert_eq!(failed, round + 1, "each failed deletion is in the trail");
    }
    let o = handover.run(&dir, &[], &["--confirm", &vault_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.exists(), "the directory removed");
    assert_eq!(
        files_holding(&handover.work, &needles),
        Vec::<PathBuf>::new()
    );
}

/// The `DELETED` marker replaced by a copy of itself (a new file under
/// the same name) after a resume opened it and before it took its lock
/// (the real binary under strace, its `flock(2)` on the marker held back
/// 3 s): what it would lock is not the marker, which a second resume could
/// lock and work on at the same time, so it stops (busy, exit 9) and
/// destroys nothing; a resume after it finishes the deletion, with one
/// certificate.
#[test]
fn a_marker_replaced_between_a_resumes_open_and_its_lock_is_not_worked_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, _) = filled(&dir, 4);
    assert!(delete_with_hook(fx.vault, killed_at("keystore_dropped")).is_none());
    let handover = Handover::new(tmp.path());
    let marker = dir.join("DELETED");
    let log = tmp.path().join("strace-flock.log");
    let wrap = strace(&log, "flock", "delay_enter=3000000", &marker);
    let first = handover.resume(&dir, &wrap);
    let opened = std::time::Instant::now();
    while !held_open(&marker) {
        assert!(
            opened.elapsed() < std::time::Duration::from_secs(60),
            "the resume never opened the marker"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The same bytes, another file.
    let copy = tmp.path().join("DELETED.copy");
    std::fs::copy(&marker, &copy).unwrap();
    std::fs::rename(&copy, &marker).unwrap();
    let o = first.wait_with_output().unwrap();
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        trace.contains("DELETED") && trace.contains("flock("),
        "the lock taken on the marker was traced: {trace}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(9),
        "a replaced marker is not worked on: {stderr} {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(stderr.contains("held open by another process"), "{stderr}");
    assert!(marker.exists() && reopen(&dir).is_err(), "still shut");
    assert!(!handover.work.join("cert.json").exists(), "no certificate");

    let o = handover
        .resume(&dir, &[])
        .wait_with_output()
        .expect("the second resume");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["document"], "vault-deleted", "{doc}");
    assert!(handover.work.join("cert.json").exists());
    assert!(!dir.exists(), "the directory removed");
    assert_eq!(
        files_holding(&handover.work, &needles),
        Vec::<PathBuf>::new()
    );
}

/// Someone with the directory but not the passphrase removes the audit
/// trail's files, or cuts its last segment short, while a deletion waits
/// for its resume (the keys already gone): the journal can no longer be
/// bound to the trail, so the resume issues no certificate and gives
/// nothing back, saying what is missing; with the trail put back from a
/// copy, it certifies.
#[test]
fn a_trail_removed_or_cut_short_before_the_resume_gets_no_certificate_until_it_is_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (fx, needles, ids) = filled(&dir, 5);
    let cert_key = fx.vault.certificate_public_key();
    let pass = SecretString::from(common::PASSPHRASE);
    let audit = dir.join("audit");
    let kept = tmp.path().join("audit-copy");
    // Stopped before anything went: without its trail the vault is not
    // given back either (the journal cannot be told from an earlier one);
    // with the trail back, it is, whole.
    assert!(delete_with_hook(fx.vault, killed_at("deletion_journaled")).is_none());
    copy_dir(&audit, &kept);
    std::fs::remove_dir_all(&audit).unwrap();
    match resume_deletion(&dir, &pass) {
        Err(Error::Integrity(m)) => assert!(m.contains("does not hold the event"), "{m}"),
        other => panic!("a resume without the trail must be refused: {other:?}"),
    }
    assert!(
        dir.join("DELETED").exists() && reopen(&dir).is_err(),
        "still shut"
    );
    copy_dir(&kept, &audit);
    let v = given_back(&dir, &pass, &ids);
    std::fs::remove_dir_all(&kept).unwrap();

    // Stopped after the keys went.
    assert!(delete_with_hook(v, killed_at("keystore_dropped")).is_none());
    copy_dir(&audit, &kept);
    let refused = |what: &str| match resume_deletion(&dir, &pass) {
        Err(Error::Integrity(m)) => {
            assert!(m.contains("does not hold the event"), "{what}: {m}");
            assert!(dir.join("DELETED").exists(), "{what}: the marker stays");
            assert!(reopen(&dir).is_err(), "{what}: nothing given back");
        }
        other => panic!("{what}: a resume without the trail must be refused: {other:?}"),
    };
    std::fs::remove_dir_all(&audit).unwrap();
    refused("the audit directory removed");
    std::fs::create_dir(&audit).unwrap();
    refused("the audit directory emptied");
    // The segments put back, the newest cut to its first line.
    copy_dir(&kept, &audit);
    let last = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .max()
        .unwrap();
    let whole = std::fs::read(&last).unwrap();
    let first_line = whole.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert!(
        first_line < whole.len(),
        "the segment has more than one line"
    );
    std::fs::write(&last, &whole[..first_line]).unwrap();
    refused("the last segment cut short");
    std::fs::remove_dir_all(&audit).unwrap();
    copy_dir(&kept, &audit);
    let Resumed::Deleted(done) = resume_deletion(&dir, &pass).unwrap() else {
        panic!("with the trail back the resume finishes")
    };
    assert_certified(&done, &cert_key, 5);
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
}

/// Copies the files of `from` (no subdirectories) into `to`, made if missing.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        assert!(p.is_file(), "{p:?}: a file");
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}
