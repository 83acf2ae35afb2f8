//! Backups (REQ-DEF-02, DESIGN §4.2): a backup never holds the header, a
//! restore needs the vault's live header and replays the disposal ledger, so
//! a restore never brings a disposed record back; certificates list the
//! backups that existed at disposal time as residual copies.
//!
//! Every test has a control that shows it could fail: the same restore with
//! the ledger replay switched off (a test-only hook) does bring the disposed
//! record back, the tampered file is the same file with one byte changed, etc.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use tempfile::TempDir;
use vault_core::Error;
use vault_core::certificate;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope, RecordState};

use crate::cli::{self, CliVault};
use crate::common::{self, Fixture};

const DAY_MS: i64 = 86_400_000;
/// Exit codes (vault-cli/src/exit.rs).
const EXIT_NOT_FOUND: i32 = 6;
const EXIT_DISPOSED: i32 = 7;
const EXIT_INTEGRITY: i32 = 8;

fn temp() -> TempDir {
    tempfile::Builder::new()
        .prefix("pivault-backup-")
        .tempdir()
        .unwrap()
}

/// A synthetic SSN, distinct for each `n < 400`.
fn ssn(n: u64) -> String {
    format!("{:03}-{:02}-{:04}", 130 + n, 21 + n % 70, 2000 + n)
}

/// A family name distinct for each `n` (letters only: names may hold no digits).
fn family(n: u64) -> String {
    let a = |k: u64| char::from(b'a' + (k % 26) as u8);
    format!("Person{}{}", a(n / 26), a(n))
}

fn body(n: u64) -> Value {
    json!({ "given_name": "Backup", "family_name": family(n), "ssn": ssn(n) })
}

#[derive(Clone, Copy, Debug)]
struct Stored {
    id: RecordId,
    n: u64,
}

fn put(fx: &Fixture, subject: SubjectId, n: u64) -> Stored {
    let id = fx
        .vault
        .put_record(&fx.clerk, common::CUSTOMERS, subject, &body(n))
        .expect("put");
    Stored { id, n }
}

fn dispose(fx: &Fixture, scope: DisposalScope) -> String {
    let out = fx
        .vault
        .dispose(
            &fx.officer,
            &DisposalRequest {
                scope,
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .expect("dispose");
    out.certificate_id.expect("certificate").to_string()
}

#[track_caller]
fn assert_reads(fx: &Fixture, r: Stored) {
    let v = fx
        .vault
        .get_record(&fx.officer, r.id, &[], None)
        .unwrap_or_else(|e| panic!("record n={} should read: {e}", r.n));
    assert_eq!(body(r.n)["family_name"], v.fields["family_name"]);
    assert_eq!(v.meta.state, RecordState::Live);
}

#[track_caller]
fn assert_disposed(fx: &Fixture, r: Stored, cert: &str) {
    match fx.vault.get_record(&fx.officer, r.id, &[], None) {
        Err(Error::Disposed {
            certificate: Some(c),
        }) => assert_eq!(c, cert),
        other => panic!("record n={} must answer disposed: {other:?}", r.n),
    }
}

/// Files under `dir` holding any needle.
fn pi_hits(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for f in common::files_under(dir) {
        let bytes = fs::read(&f).unwrap_or_default();
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                out.push(format!("{n} in {}", f.display()));
            }
        }
    }
    out
}

#[test]
fn restore_replays_the_ledger_and_never_resurrects_disposed_records() {
    let tmp = temp();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let (s1, s2, s3) = (SubjectId::new(), SubjectId::new(), SubjectId::new());
    let keep = [put(&fx, s1, 1), put(&fx, s1, 2), put(&fx, s3, 3)];
    let lone = put(&fx, s1, 4); // disposed alone
    let subject_recs = [put(&fx, s2, 5), put(&fx, s2, 6)]; // disposed as a subject
    let early = put(&fx, s3, 7); // disposed before the backup

    let cert_early = dispose(&fx, DisposalScope::Record(early.id));
    let file = tmp.path().join("b1.pvb");
    let info = fx
        .vault
        .create_backup(&fx.admin, &file, 30)
        .expect("backup");
    assert_eq!(info.records, 7);
    assert_eq!(info.state, "active");
    // Only admins and officers may take or restore backups.
    for s in [&fx.clerk, &fx.auditor, &fx.contractor] {
        assert!(matches!(
            fx.vault.create_backup(s, &tmp.path().join("x.pvb"), 30),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            fx.vault.restore_backup(s, &file),
            Err(Error::PermissionDenied(_))
        ));
    }
    assert!(!tmp.path().join("x.pvb").exists());

    // The backup holds no header bytes and no plaintext PI.
    let header = fs::read(fx.dir.join("header")).unwrap();
    let backup_bytes = fs::read(&file).unwrap();
    for w in header.chunks(16).filter(|w| w.len() == 16) {
        if w.iter().all(|b| *b == w[0]) {
            continue; // an erased slot: runs of one byte say nothing
        }
        assert!(
            !backup_bytes.windows(16).any(|x| x == w),
            "header bytes found in the backup file"
        );
    }
    for n in 1..=7 {
        let s = ssn(n);
        assert!(
            !backup_bytes.windows(s.len()).any(|w| w == s.as_bytes()),
            "plaintext SSN in the backup file"
        );
    }

    // After the backup: dispose one record and one subject, add and update records.
    let cert_lone = dispose(&fx, DisposalScope::Record(lone.id));
    let cert_subject = dispose(&fx, DisposalScope::Subject(s2));
    let late = put(&fx, s3, 8);
    fx.vault
        .update_record(&fx.clerk, keep[2].id, &body(33))
        .expect("update");

    // The certificates list the backup as a residual copy with its expiry.
    let c = fx
        .vault
        .certificate(&fx.auditor, cert_lone.parse().unwrap())
        .unwrap();
    assert!(certificate::verify(&c, &fx.vault.certificate_public_key()).ok());
    let backups = &c.body["target"]["backups"];
    assert_eq!(backups["exist"], true, "{backups}");
    assert_eq!(backups["copies"][0]["backup_id"], info.id.to_string());
    assert_eq!(
        backups["copies"][0]["expiry"],
        vault_core::clock::format_ms(info.expires_ms)
    );
    assert!(
        c.body["sanitization"]["not_covered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x.as_str().unwrap().contains(&info.id.to_string()))
    );
    // The certificate issued before the backup existed lists none.
    let c0 = fx
        .vault
        .certificate(&fx.auditor, cert_early.parse().unwrap())
        .unwrap();
    assert_eq!(c0.body["target"]["backups"]["exist"], false);

    // Restore.
    let rep = fx.vault.restore_backup(&fx.admin, &file).expect("restore");
    // A restore merges: the three live records read and are kept as they
    // are, nothing is restored or removed.
    assert_eq!((rep.restored, rep.kept, rep.repaired), (0, 3, 0), "{rep:?}");
    assert_eq!(rep.disposed_skipped, 4, "{rep:?}");
    let check = |fx: &Fixture| {
        assert_reads(fx, keep[0]);
        assert_reads(fx, keep[1]);
        // The update made after the backup stands.
        assert_reads(fx, Stored { n: 33, ..keep[2] });
        assert_disposed(fx, lone, &cert_lone);
        for r in subject_recs {
            assert_disposed(fx, r, &cert_subject);
        }
        assert_disposed(fx, early, &cert_early);
        // Created after the backup: never removed by a restore.
        assert_reads(fx, late);
        // No key path from the live header reaches a disposed record's key.
        for (r, sub) in [(lone, s1), (subject_recs[0], s2), (subject_recs[1], s2)] {
            assert!(
                fx.vault
                    .keystore()
                    .wrapped_dek(sub, r.id, 1)
                    .unwrap()
                    .is_none()
            );
        }
    };
    check(&fx);
    // No PI of the disposed records anywhere in the restored vault.
    let disposed_pi = vec![ssn(4), ssn(5), ssn(6), ssn(7), ssn(4).replace('-', "")];
    assert_eq!(pi_hits(&fx.dir, &disposed_pi), Vec::<String>::new());
    let v = fx.vault.audit_verify(&fx.officer).unwrap();
    assert!(v.ok(), "{v:?}");
    let fx = fx.reopen();
    check(&fx);

    // Control: without the ledger replay the same restore brings the
    // disposed records back, readable — the checks above can see a resurrection.
    fx.vault.set_restore_skip_ledger(true);
    fx.vault.restore_backup(&fx.admin, &file).expect("restore");
    fx.vault.set_restore_skip_ledger(false);
    assert_reads(&fx, lone);
    assert_reads(&fx, subject_recs[0]);
    fx.vault.close().unwrap();
}

/// A restore repairs a live record it cannot read (its key gone) from the
/// backed-up version, destroying what is left of the current one: never
/// under a legal hold, whose record is left as it is and counted. Before,
/// the held record was rolled back to its backed-up version.
#[test]
fn restore_leaves_a_damaged_record_under_legal_hold_as_it_is() {
    let tmp = temp();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let subject = SubjectId::new();
    let r = put(&fx, subject, 1);
    let file = tmp.path().join("b.pvb");
    fx.vault.create_backup(&fx.admin, &file, 30).unwrap();
    fx.vault.update_record(&fx.clerk, r.id, &body(2)).unwrap();
    fx.vault
        .add_hold(&fx.officer, Some(r.id), None, "litigation notice received")
        .unwrap();
    for (v, _) in fx.vault.keystore().record_keys(subject, r.id).unwrap() {
        fx.vault
            .keystore()
            .delete_dek(subject, r.id, v, true)
            .unwrap();
    }
    let version = |fx: &Fixture| {
        fx.vault
            .list_records(
                &fx.officer,
                &vault_core::vault::RecordFilter {
                    subject: Some(subject),
                    ..Default::default()
                },
            )
            .unwrap()[0]
            .version
    };
    let rep = fx.vault.restore_backup(&fx.admin, &file).unwrap();
    assert_eq!((rep.repaired, rep.held_unrepaired), (0, 1), "{rep:?}");
    assert_eq!(version(&fx), 2, "the held record was rolled back");
    // The hold lifted, the same restore repairs it.
    fx.vault.remove_hold(&fx.officer, Some(r.id), None).unwrap();
    let rep = fx.vault.restore_backup(&fx.admin, &file).unwrap();
    assert_eq!((rep.repaired, rep.held_unrepaired), (1, 0), "{rep:?}");
    assert_eq!(version(&fx), 1);
    assert_reads(&fx, r);
}

/// A backup whose key's erasure cannot be verified (the purge skipped, so
/// the old wrapped key is still in the keystore's files) stays
/// `destroying`: a disposal meanwhile names it as a residual copy, listing
/// the backups does not fail on it, and expiry tries again until the
/// erasure is verified. Before, it was `destroyed` at once and never tried
/// again.
#[test]
fn a_backup_whose_erasure_is_not_verified_stays_destroying_and_is_tried_again() {
    let tmp = temp();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), None, None);
    let r = put(&fx, SubjectId::new(), 1);
    let b = fx
        .vault
        .create_backup(&fx.admin, &tmp.path().join("b.pvb"), 30)
        .unwrap();
    fx.vault.set_purge_skip_flush(true);
    let e = fx.vault.expire_backup(&fx.admin, b.id);
    assert!(matches!(e, Err(Error::DisposalFailed(_))), "{e:?}");
    let state = |fx: &Fixture| {
        fx.vault
            .backups(&fx.admin)
            .unwrap()
            .into_iter()
            .find(|x| x.id == b.id)
            .unwrap()
            .state
    };
    assert_eq!(state(&fx), "destroying");
    fx.vault.set_purge_skip_flush(false);
    let cert = dispose(&fx, DisposalScope::Record(r.id));
    let c = fx
        .vault
        .certificate(&fx.officer, cert.parse().unwrap())
        .unwrap();
    let copies = &c.body["target"]["backups"]["copies"];
    assert_eq!(copies[0]["backup_id"], json!(b.id.to_string()), "{copies}");
    assert_eq!(copies[0]["holds_records"], json!(true), "{copies}");
    assert_eq!(fx.vault.run_backup_expiry().unwrap(), 1);
    assert_eq!(state(&fx), "destroyed");
    assert!(fx.vault.audit_verify(&fx.auditor).unwrap().ok());
}

#[test]
fn restore_refuses_tampered_files_and_other_vaults() {
    let tmp = temp();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let sub = SubjectId::new();
    let a = put(&fx, sub, 10);
    let file = tmp.path().join("b.pvb");
    fx.vault.create_backup(&fx.officer, &file, 30).unwrap();
    // The backup may not be written inside the vault directory, nor over a file.
    assert!(matches!(
        fx.vault
            .create_backup(&fx.officer, &fx.dir.join("inside.pvb"), 30),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        fx.vault.create_backup(&fx.officer, &file, 30),
        Err(Error::AlreadyExists(_))
    ));
    let b = put(&fx, sub, 11);
    let good = fs::read(&file).unwrap();

    // Tampered: one byte in the sealed body, in the clear preamble, or a cut tail.
    let pre_len = u32::from_be_bytes(good[16..20].try_into().unwrap()) as usize;
    let mut cases = Vec::new();
    let mut t = good.clone();
    let mid = 20 + pre_len + (good.len() - 20 - pre_len) / 2;
    t[mid] ^= 1;
    cases.push(("body byte", t));
    let mut t = good.clone();
    let pos = 20
        + String::from_utf8_lossy(&good[20..20 + pre_len])
            .find("expires_ms\":")
            .unwrap()
        + 13;
    t[pos] = if t[pos] == b'9' { b'8' } else { b'9' };
    cases.push(("preamble byte", t));
    cases.push(("truncated", good[..good.len() - 10].to_vec()));
    for (what, bytes) in cases {
        let f = tmp.path().join("tampered.pvb");
        fs::write(&f, &bytes).unwrap();
        match fx.vault.restore_backup(&fx.admin, &f) {
            Err(Error::Integrity(_)) => {}
            other => panic!("{what}: a tampered backup must fail integrity: {other:?}"),
        }
        fs::remove_file(&f).unwrap();
        // Nothing changed: the record created after the backup is still there.
        assert_reads(&fx, a);
        assert_reads(&fx, b);
    }

    // Another vault (its own live header) cannot restore it, even with the
    // vault ID in the preamble rewritten to its own.
    let other = common::fast_vault(&tmp.path().join("other"));
    let c = put(&other, SubjectId::new(), 12);
    match other.vault.restore_backup(&other.admin, &file) {
        Err(Error::InvalidInput(_)) => {}
        r => panic!("a backup of another vault must be refused: {r:?}"),
    }
    let forged_text = String::from_utf8_lossy(&good[20..20 + pre_len])
        .replace(&fx.vault.id().to_string(), &other.vault.id().to_string());
    assert_eq!(forged_text.len(), pre_len);
    let mut forged = good.clone();
    forged[20..20 + pre_len].copy_from_slice(forged_text.as_bytes());
    let f = tmp.path().join("forged.pvb");
    fs::write(&f, &forged).unwrap();
    match other.vault.restore_backup(&other.admin, &f) {
        Err(Error::NotFound(_)) => {}
        r => panic!("a forged backup must find no key: {r:?}"),
    }
    assert_reads(&other, c);
    // Control: the untouched file restores into its own vault.
    let rep = fx.vault.restore_backup(&fx.admin, &file).unwrap();
    assert_eq!((rep.restored, rep.kept), (0, 1), "{rep:?}");
    assert_reads(&fx, a);
    assert_reads(&fx, b);
    other.vault.close().unwrap();
    fx.vault.close().unwrap();
}

#[test]
fn expiry_destroys_the_backup_key_and_survives_ratchets() {
    let tmp = temp();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let sub = SubjectId::new();
    let a = put(&fx, sub, 20);
    let gone = put(&fx, SubjectId::new(), 21);
    let f1 = tmp.path().join("short.pvb");
    let f2 = tmp.path().join("long.pvb");
    let short = fx.vault.create_backup(&fx.admin, &f1, 1).unwrap();
    let long = fx.vault.create_backup(&fx.admin, &f2, 10).unwrap();
    // Several ratchets (disposals) later, the live header still reaches K_b.
    let epoch0 = fx.vault.epoch();
    let cert = dispose(&fx, DisposalScope::Record(gone.id));
    fx.vault.ratchet_epoch(&fx.officer).unwrap();
    assert!(fx.vault.epoch() >= epoch0 + 2);
    let wrapped_short = fx
        .vault
        .keystore()
        .wrapped_backup_key(short.id.as_bytes())
        .unwrap()
        .expect("the short backup's key is stored");

    // Two days on: the short backup's key is destroyed on open.
    fx.clock.advance(2 * DAY_MS);
    let fx = fx.reopen();
    let list = fx.vault.backups(&fx.officer).unwrap();
    let state = |id| {
        list.iter()
            .find(|b| b.id == id)
            .map(|b| b.state.clone())
            .unwrap()
    };
    assert_eq!(list.len(), 2);
    assert_eq!(state(short.id), "destroyed");
    assert_eq!(state(long.id), "active");
    assert!(
        fx.vault
            .keystore()
            .wrapped_backup_key(short.id.as_bytes())
            .unwrap()
            .is_none()
    );
    assert_eq!(
        vault_core::keystore::scan_dir(&fx.dir.join("keystore"), &[wrapped_short]).unwrap(),
        Vec::<String>::new(),
        "the destroyed backup key's wrapped bytes remain in the keystore"
    );
    match fx.vault.restore_backup(&fx.admin, &f1) {
        Err(Error::NotFound(_)) => {}
        r => panic!("an expired backup must not restore: {r:?}"),
    }
    // The long one still restores, and the disposal stays a disposal.
    let rep = fx.vault.restore_backup(&fx.admin, &f2).unwrap();
    assert_eq!(rep.disposed_skipped, 1);
    assert_reads(&fx, a);
    assert_disposed(&fx, gone, &cert);
    // Expire it by hand: now no backup is active and a new certificate lists none.
    fx.vault.expire_backup(&fx.admin, long.id).unwrap();
    assert!(matches!(
        fx.vault.expire_backup(&fx.admin, long.id),
        Err(Error::AlreadyExists(_))
    ));
    let cert2 = dispose(&fx, DisposalScope::Record(a.id));
    let c = fx
        .vault
        .certificate(&fx.auditor, cert2.parse().unwrap())
        .unwrap();
    assert_eq!(c.body["target"]["backups"]["exist"], false);
    assert!(matches!(
        fx.vault.restore_backup(&fx.admin, &f2),
        Err(Error::NotFound(_))
    ));
    fx.vault.close().unwrap();
}

#[test]
fn cli_backup_create_restore_list_with_disposal_in_between() {
    let v = CliVault::standard();
    v.import(&cli::examples().join("customers.jsonl")).ok();
    let ids = v.record_ids();
    assert!(ids.len() >= 3, "{ids:?}");
    let backup = v.input.join("vault.pvb");
    let r = v.run(
        Some("admin"),
        &[
            "--json",
            "backup",
            "create",
            "--out",
            backup.to_str().unwrap(),
        ],
    );
    r.ok();
    let created = r.json();
    let bid = created["backup_id"].as_str().unwrap().to_owned();
    assert_eq!(created["records"], ids.len() as u64, "{created}");
    // A clerk may not.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "backup",
            "create",
            "--out",
            v.input.join("c.pvb").to_str().unwrap(),
        ],
    );
    r.code(5);

    let victim = &ids[0];
    let r = v.run(
        Some("officer"),
        &["--json", "dispose", "record", victim, "--yes"],
    );
    r.ok();
    let cert = r.json()["certificate_id"].as_str().unwrap().to_owned();
    let r = v.run(Some("auditor"), &["--json", "certificate", "show", &cert]);
    r.ok();
    let body = &r.json()["certificate"];
    assert_eq!(
        body["target"]["backups"]["copies"][0]["backup_id"], bid,
        "{body}"
    );

    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "backup",
            "restore",
            backup.to_str().unwrap(),
            "--yes",
        ],
    );
    r.ok();
    let rep = r.json();
    assert_eq!(rep["disposed_skipped"], 1, "{rep}");
    // Merged: the live records read and are kept, nothing is removed.
    assert_eq!(rep["restored"], 0, "{rep}");
    assert_eq!(rep["kept"], ids.len() as u64 - 1, "{rep}");
    v.run(Some("officer"), &["record", "get", victim])
        .code(EXIT_DISPOSED);
    v.run(Some("officer"), &["record", "get", &ids[1]]).ok();

    // A tampered copy fails with exit 8 and changes nothing.
    let mut bytes = fs::read(&backup).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x20;
    let bad = v.input.join("bad.pvb");
    fs::write(&bad, &bytes).unwrap();
    let r = v.run(
        Some("admin"),
        &[
            "--json",
            "backup",
            "restore",
            bad.to_str().unwrap(),
            "--yes",
        ],
    );
    r.code(EXIT_INTEGRITY);
    assert_eq!(r.error_code(), "integrity");
    v.run(Some("officer"), &["record", "get", &ids[1]]).ok();

    let r = v.run(Some("admin"), &["--json", "backup", "list"]);
    r.ok();
    let list = r.json();
    assert_eq!(list["items"][0]["backup_id"], bid, "{list}");
    assert_eq!(list["items"][0]["state"], "active", "{list}");
    let r = v.run(
        Some("admin"),
        &["--json", "backup", "expire", &bid, "--yes"],
    );
    r.ok();
    assert_eq!(r.json()["state"], "destroyed");
    v.run(
        Some("admin"),
        &[
            "--json",
            "backup",
            "restore",
            backup.to_str().unwrap(),
            "--yes",
        ],
    )
    .code(EXIT_NOT_FOUND);
    v.assert_audit_ok();
}

/// A backup's catalogue row is written (`creating`) before its file and its
/// key, so a creation stopped once its key is stored (the process killed;
/// the same holds for a failed write of the row after it) leaves a row that
/// every disposal counts as a residual copy, and the next open destroys it
/// as an expired one: the key deleted, the epoch ratcheted, the keystore
/// purged, the wrapped key's bytes in no keystore file. Before, the key
/// was stored first and the row after: the open found a key without a row
/// and deleted it without a purge (its bytes, wrapped under the live root,
/// stayed in the keystore's files), and no listing ever showed the backup.
#[test]
fn a_backup_stopped_once_its_key_is_stored_is_listed_and_erased_at_the_next_open() {
    let tmp = temp();
    let dir = tmp.path().join("vault");
    let fx = common::fast_vault_with(&dir, None, None);
    put(&fx, SubjectId::new(), 1);
    fx.vault.close().unwrap();
    let file = tmp.path().join("stopped.pvb");
    crate::disposal::crash_at(
        tmp.path(),
        &dir,
        file.to_str().unwrap(),
        "backup_key_stored",
    );
    // The stored key, read with RocksDB as someone with the files would.
    let wrapped = {
        let path = dir.join("keystore");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db =
            rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &path, cfs, false)
                .expect("open keystore read-only");
        let h = db.cf_handle("backups").expect("backups");
        let mut keys = db.iterator_cf(&h, rocksdb::IteratorMode::Start);
        let (_, v) = keys.next().expect("the backup's key was stored").unwrap();
        assert!(keys.next().is_none());
        v.to_vec()
    };
    // As the child opened it: the wall clock.
    let vault = vault_core::vault::Vault::open(
        &dir,
        &vault_core::secret::SecretString::from(common::PASSPHRASE),
        vault_core::vault::OpenOptions::default(),
    )
    .expect("the vault reopens");
    let admin = common::login(&vault, "admin");
    let list = vault.backups(&admin).unwrap();
    assert_eq!(list.len(), 1, "the stopped backup is listed: {list:?}");
    assert_eq!(list[0].state, "destroyed", "{list:?}");
    assert_eq!(
        list[0].location,
        file.canonicalize().unwrap().display().to_string()
    );
    assert!(
        vault
            .keystore()
            .wrapped_backup_key(list[0].id.as_bytes())
            .unwrap()
            .is_none(),
        "its key is gone"
    );
    assert_eq!(
        common::files_containing(&dir.join("keystore"), &wrapped),
        Vec::<std::path::PathBuf>::new(),
        "the stopped backup's wrapped key is still in the keystore's files"
    );
    vault.close().unwrap();
}

/// A backup's key deleted from the keystore with the vault stopped (by
/// someone with the files, not the vault) leaves the catalogue saying
/// `active` over a file that can no longer be restored: `doctor` fails
/// naming it. Before, nothing said so until a restore was tried.
#[test]
fn doctor_fails_an_active_backup_whose_key_is_gone() {
    let tmp = temp();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), None, None);
    put(&fx, SubjectId::new(), 1);
    let b = fx
        .vault
        .create_backup(&fx.admin, &tmp.path().join("b.pvb"), 30)
        .unwrap();
    let (level, detail) = common::doctor_check(&fx, "backups");
    assert_eq!(level, vault_core::doctor::Level::Ok, "{detail}");
    let dir = fx.dir.clone();
    let fx = fx.reopened_after(|vault| {
        vault.close().unwrap();
        let path = dir.join("keystore");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("keystore");
        let h = db.cf_handle("backups").unwrap();
        db.delete_cf(&h, b.id.as_bytes()).unwrap();
        db.flush().unwrap();
    });
    let (level, detail) = common::doctor_check(&fx, "backups");
    assert_eq!(level, vault_core::doctor::Level::Fail, "{detail}");
    assert!(detail.contains(&b.id.to_string()), "{detail}");
    fx.vault.close().unwrap();
}
