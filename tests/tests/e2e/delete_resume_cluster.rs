//! A vault's deletion stopped part-way (issue 16): the process killed, or
//! the cluster's primary lost, before or after the keystore's drop. Before
//! it, `pivault vault delete --resume` gives the vault back whole; after
//! it, the resume finishes the purge's checks and issues the certificate,
//! signed by the vault's own certificate key, that the killed process
//! could not. What an insider with the directory can do with the journal:
//! a changed byte, the wrong passphrase, a second process resuming while
//! the first still works. Run with the cluster `scripts/cluster.sh`
//! starts (see cluster.rs).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use vault_core::Error;
use vault_core::ids::SubjectId;
use vault_core::keystore::provider;
use vault_core::secret::SecretString;
use vault_core::vault::decommission::{Resumed, resume_deletion};
use vault_core::vault::{Vault, VaultDeleted};

use crate::cluster::{
    Cluster, cluster, cluster_script, primary_index, primary_member, psql_in, serial, wait_healthy,
};
use crate::common::{self, Fixture};
use crate::delete_cluster::{
    body, on_clusters, parties, reopen, schema_exists, schema_hex, top_keys,
};

/// A vault on both clusters with `n` records: the fixture, every wrapped
/// key that must be gone once it is deleted, and its records.
fn filled(dir: &Path, n: usize) -> (Fixture, Vec<Vec<u8>>, Vec<vault_core::ids::RecordId>) {
    let fx = on_clusters(dir);
    let (mut needles, ids) = put_keyed(&fx, n);
    needles.extend(top_keys(&fx.vault));
    (fx, needles, ids)
}

/// `n` records put in `fx`'s vault: their wrapped data keys, and their IDs.
pub(crate) fn put_keyed(fx: &Fixture, n: usize) -> (Vec<Vec<u8>>, Vec<vault_core::ids::RecordId>) {
    let mut keys = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let s = SubjectId::new();
        let id = fx
            .vault
            .put_record(&fx.clerk, common::CUSTOMERS, s, &body(i))
            .unwrap();
        keys.push(fx.vault.keystore().wrapped_dek(s, id, 1).unwrap().unwrap());
        ids.push(id);
    }
    (keys, ids)
}

/// Runs the deletion with `hook` at every step: what it returned, or
/// `None` if the hook "killed" it (a panic unwinds it, and drops the vault
/// with its keys and connections, as a killed process's would go).
pub(crate) fn delete_with_hook(
    vault: Vault,
    hook: Box<dyn Fn(&str) + Send + Sync>,
) -> Option<vault_core::Result<VaultDeleted>> {
    let (officer, auditor) = (
        common::login(&vault, "officer"),
        common::login(&vault, "auditor"),
    );
    vault.set_crash_hook(Some(hook));
    let id = vault.id();
    catch_unwind(AssertUnwindSafe(move || {
        vault.delete_vault(&officer, &auditor, id, &parties())
    }))
    .ok()
}

pub(crate) fn killed_at(step: &'static str) -> Box<dyn Fn(&str) + Send + Sync> {
    Box::new(move |s| {
        if s == step {
            panic!("killed at {s}");
        }
    })
}

/// `pivault --json vault delete --resume` on `dir`, its files in `work`.
fn resume_with_the_binary(dir: &Path, work: &Path) -> (i32, serde_json::Value) {
    crate::cli::write_private(&work.join("pass"), common::PASSPHRASE.as_bytes());
    let o = std::process::Command::new(crate::cli::pivault_bin())
        .arg("--json")
        .arg("--vault")
        .arg(dir)
        .args(["vault", "delete", "--resume", "--certificate"])
        .arg(work.join("cert.json"))
        .arg("--audit-out")
        .arg(work.join("trail.jsonl"))
        .env("PIVAULT_PASSPHRASE_FILE", work.join("pass"))
        .env_remove("PIVAULT_DIR")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), v)
}

fn passphrase() -> SecretString {
    SecretString::from(common::PASSPHRASE)
}

/// A resumed (or completed) deletion's certificate: validated, PASS, every
/// member verified, signed by `key` (the vault's certificate key).
fn assert_certified(c: &Cluster, done: &VaultDeleted, key: &ed25519_dalek::VerifyingKey) {
    let cert = &done.certificate.body;
    assert_eq!(cert["status"], "validated");
    assert_eq!(cert["sanitization"]["verification"]["result"], "PASS");
    let members = cert["sanitization"]["details"]["keystore_purge"]["members"]
        .as_array()
        .unwrap();
    assert_eq!(members.len(), c.members.len(), "{members:?}");
    assert!(members.iter().all(|m| m["verified"] == true), "{members:?}");
    assert_eq!(&done.certificate_key, key, "signed by the vault's own key");
    assert!(vault_core::certificate::verify(&done.certificate, key).ok());
    let report = vault_core::siem::verify_file(&done.audit_trail, &done.audit_key);
    assert!(report.ok(), "{}", report.proves());
    assert!(done.audit_trail.contains("\"vault.delete\""));
}

#[test]
fn a_deletion_killed_after_the_drop_is_finished_by_resume_and_an_insider_with_the_journal_can_neither_forge_nor_race_it()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, _) = filled(&tmp.path().join("b"), 12);
    let dir = fx.dir.clone();
    let hex = schema_hex(&fx.vault);
    let cert_key = fx.vault.certificate_public_key();
    let audit_key = fx.vault.audit_public_key();
    assert!(!c.files_holding(&needles).is_empty());

    assert!(
        delete_with_hook(fx.vault, killed_at("keystore_dropped")).is_none(),
        "killed"
    );
    // The keys are dropped; the directory opens nothing.
    assert!(!schema_exists(&format!("pv_{hex}")));
    let Err(e) = reopen(&dir) else {
        panic!("a half-deleted vault opened")
    };
    assert!(e.to_string().contains("deleted"), "{e}");
    let marker = dir.join("DELETED");
    let journal = std::fs::read(&marker).unwrap();
    // No wrapped key, not even its first bytes, in the journal as stored.
    for n in &needles {
        assert!(
            !journal.windows(16).any(|w| w == &n[..16]),
            "a wrapped key's bytes in the journal"
        );
    }

    // The wrong passphrase; a changed byte of the sealed journal.
    assert!(matches!(
        resume_deletion(&dir, &SecretString::from("not the passphrase at all")),
        Err(Error::WrongPassphrase)
    ));
    let text = String::from_utf8(journal.clone()).unwrap();
    let at = text.find("\"sealed\":\"").unwrap() + 20;
    let flipped = if &text[at..at + 1] == "0" { "1" } else { "0" };
    let forged = format!("{}{}{}", &text[..at], flipped, &text[at + 1..]);
    std::fs::write(&marker, forged).unwrap();
    assert!(
        resume_deletion(&dir, &passphrase()).is_err(),
        "a changed byte"
    );
    std::fs::write(&marker, &journal).unwrap();
    // A process still working on the deletion holds the journal's lock.
    {
        let held = std::fs::File::open(&marker).unwrap();
        held.try_lock().unwrap();
        assert!(matches!(
            resume_deletion(&dir, &passphrase()),
            Err(Error::VaultBusy)
        ));
    }

    let Resumed::Deleted(done) = resume_deletion(&dir, &passphrase()).unwrap() else {
        panic!("the keys were dropped: the resume must finish the deletion")
    };
    assert_certified(&c, &done, &cert_key);
    assert_eq!(done.audit_key, audit_key);
    assert_eq!(
        done.certificate.body["sanitization"]["details"]["resumed"],
        true
    );
    assert_eq!(done.certificate.body["target"]["record_count"], 12);
    // Records on the cluster: dropped by the resume, searched.
    let records = &done.certificate.body["sanitization"]["details"]["records"];
    assert_eq!(records["clean"], true, "{records}");
    assert!(!schema_exists(&format!("pr_{hex}")));
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
    done.remove_directory().unwrap();
    assert!(matches!(
        resume_deletion(&dir, &passphrase()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn a_deletion_stopped_before_the_drop_gives_the_vault_back_and_one_whose_primary_is_lost_there_completes_on_the_new_one()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, ids) = filled(&tmp.path().join("b"), 6);
    let dir = fx.dir.clone();
    let hex = schema_hex(&fx.vault);
    let cert_key = fx.vault.certificate_public_key();
    let intact = |v: &Vault| {
        let clerk = common::login(v, "clerk");
        for r in &ids {
            v.get_record(&clerk, *r, &[], None).expect("still readable");
        }
        assert!(schema_exists(&format!("pv_{hex}")));
    };

    // Killed with the journal written, before the drop: the marker keeps
    // everyone out until the resume finds the keys there and gives the
    // vault back.
    assert!(delete_with_hook(fx.vault, killed_at("deletion_journaled")).is_none());
    assert!(reopen(&dir).is_err(), "marked deleted");
    // Kept by someone with the directory, for later.
    let stale = std::fs::read(dir.join("DELETED")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (code, doc) = resume_with_the_binary(&dir, work.path());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["document"], "vault-delete-resumed", "{doc}");
    assert_eq!(doc["deleted"], false);
    assert!(!work.path().join("cert.json").exists(), "no certificate");
    let v = reopen(&dir).expect("the vault is back");
    assert_eq!(doc["vault_id"], v.id().to_string());
    intact(&v);

    // The primary lost just before the drop: the drop waits for the new
    // primary and commits there, but the stopped member cannot be checked,
    // so no certificate; once it is back, the resume certifies.
    let old = primary_index(&c);
    let outcome = delete_with_hook(
        v,
        Box::new(move |s| {
            if s == "deletion_journaled" {
                cluster_script(&["member-stop", &old.to_string()]);
            }
        }),
    );
    cluster_script(&["member-start", &old.to_string()]);
    match outcome {
        Some(Err(Error::DisposalFailed(m))) => {
            assert!(m.contains("--resume"), "{m}");
            assert!(m.contains(&c.members[old - 1]), "the member is named: {m}");
        }
        other => panic!("a member lost before the checks must stop the certificate: {other:?}"),
    }
    assert_ne!(primary_index(&c), old, "a standby was promoted");
    wait_healthy(&c);
    assert!(reopen(&dir).is_err(), "its keys are gone");
    // The first deletion's journal put in the marker instead: the trail on
    // the records cluster went on after it, so it is not this deletion's.
    let fresh = std::fs::read(dir.join("DELETED")).unwrap();
    std::fs::write(dir.join("DELETED"), &stale).unwrap();
    match resume_deletion(&dir, &passphrase()) {
        Err(Error::Integrity(m)) => assert!(m.contains("not this deletion's"), "{m}"),
        other => panic!("an earlier deletion's journal must be refused: {other:?}"),
    }
    std::fs::write(dir.join("DELETED"), &fresh).unwrap();
    let Resumed::Deleted(done) = resume_deletion(&dir, &passphrase()).unwrap() else {
        panic!("the keys were dropped on the new primary")
    };
    assert_certified(&c, &done, &cert_key);
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
    assert!(!schema_exists(&format!("pr_{hex}")));
}

#[test]
fn a_deletion_whose_primary_is_lost_after_the_drop_is_certified_by_resume_once_the_member_is_back()
{
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, _) = filled(&tmp.path().join("b"), 6);
    let dir = fx.dir.clone();
    let hex = schema_hex(&fx.vault);
    let cert_key = fx.vault.certificate_public_key();
    let audit_key = fx.vault.audit_public_key();
    let v = fx.vault;
    // The drop and its rounds done, the primary is lost before the byte
    // scan: the error says to resume, and the resume certifies once the
    // cluster is whole again.
    let old = primary_index(&c);
    let outcome = delete_with_hook(
        v,
        Box::new(move |s| {
            if s == "keystore_dropped" {
                cluster_script(&["member-stop", &old.to_string()]);
            }
        }),
    );
    match outcome {
        Some(Err(Error::DisposalFailed(m))) => assert!(m.contains("--resume"), "{m}"),
        other => {
            cluster_script(&["member-start", &old.to_string()]);
            panic!("a member lost before the checks must stop the certificate: {other:?}")
        }
    }
    // Resumed while the member is still down: it waits, no certificate.
    let early = resume_deletion(&dir, &passphrase());
    cluster_script(&["member-start", &old.to_string()]);
    match early {
        Err(Error::DisposalFailed(m)) => {
            assert!(m.contains(&c.members[old - 1]), "the member is named: {m}")
        }
        other => panic!("a member down must stop the resumed certificate: {other:?}"),
    }
    wait_healthy(&c);
    assert!(reopen(&dir).is_err(), "its keys are gone");
    // Through the binary: the certificate and the trail written outside,
    // the directory removed.
    let work = tempfile::tempdir().unwrap();
    let (code, doc) = resume_with_the_binary(&dir, work.path());
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["document"], "vault-deleted", "{doc}");
    assert!(!dir.exists(), "the directory removed");
    let cert = vault_core::certificate::Certificate::parse(
        &std::fs::read_to_string(work.path().join("cert.json")).unwrap(),
    )
    .unwrap();
    let members = cert.body["sanitization"]["details"]["keystore_purge"]["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), c.members.len());
    assert!(members.iter().all(|m| m["verified"] == true), "{members:?}");
    assert_eq!(cert.body["sanitization"]["details"]["resumed"], true);
    assert!(vault_core::certificate::verify(&cert, &cert_key).ok());
    let trail = std::fs::read_to_string(work.path().join("trail.jsonl")).unwrap();
    assert!(trail.contains("\"vault.delete\""));
    let report = vault_core::siem::verify_file(&trail, &audit_key);
    assert!(report.ok(), "{}", report.proves());
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
    assert!(!schema_exists(&format!("pr_{hex}")));
}

#[test]
fn a_drop_whose_answer_is_lost_is_learnt_from_the_cluster_and_the_deletion_goes_on() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, _) = filled(&tmp.path().join("b"), 4);
    let dir = fx.dir.clone();
    let cert_key = fx.vault.certificate_public_key();
    // The drop commits and its answer never comes (the primary lost
    // between them): taken for a rolled-back drop, the vault would be left
    // without its keys, without its marker and without a certificate.
    fx.vault
        .keystore()
        .set_purge_control(vault_core::keystore::PurgeControl::DropAnswerLost);
    let done = delete_with_hook(fx.vault, Box::new(|_| {}))
        .expect("no panic")
        .expect("the cluster says the drop committed: the deletion goes on");
    assert_certified(&c, &done, &cert_key);
    assert!(
        dir.join("DELETED").exists(),
        "the marker stays until the directory goes"
    );
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
}

/// A superuser's event trigger in the keystore database that takes the
/// vault role's login away in the transaction of any `DROP SCHEMA`: the
/// drop and the lost login commit together. Dropped, and the login given
/// back, when this goes.
struct LoginLostAtDrop {
    role: String,
}

impl LoginLostAtDrop {
    fn armed(c: &Cluster, role: &str) -> LoginLostAtDrop {
        let sql = format!(
            "CREATE FUNCTION public.pivault_test_login_lost() RETURNS event_trigger
               LANGUAGE plpgsql SECURITY DEFINER AS $$
             BEGIN
               IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects()
                           WHERE object_type = 'schema') THEN
                 ALTER ROLE {role} NOLOGIN;
               END IF;
             END $$;
             CREATE EVENT TRIGGER pivault_test_login_lost ON sql_drop
               EXECUTE FUNCTION public.pivault_test_login_lost();"
        );
        psql_in(&primary_member(c), "pivault_keys", &sql).expect("trigger armed");
        LoginLostAtDrop {
            role: role.to_owned(),
        }
    }
}

impl Drop for LoginLostAtDrop {
    fn drop(&mut self) {
        let role = &self.role;
        psql_in(
            &primary_member(&cluster()),
            "pivault_keys",
            &format!(
                "DROP EVENT TRIGGER IF EXISTS pivault_test_login_lost;
                 DROP FUNCTION IF EXISTS public.pivault_test_login_lost();
                 ALTER ROLE {role} LOGIN;"
            ),
        )
        .expect("login given back");
    }
}

/// The drop commits, its answer is lost, and the cluster cannot then be
/// asked whether it committed (the vault's role may no longer log in: its
/// login went in the drop's own transaction). Taken for a rolled-back drop,
/// the marker would go and the vault be left without keys and without a
/// way to its certificate; the deletion keeps its marker and says to
/// resume, and the resume, once the role logs in again, learns the drop
/// committed and certifies.
#[test]
fn a_drop_whose_outcome_cannot_be_learnt_keeps_its_marker_and_is_certified_by_resume() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, _) = filled(&tmp.path().join("b"), 4);
    let dir = fx.dir.clone();
    let hex = schema_hex(&fx.vault);
    let cert_key = fx.vault.certificate_public_key();
    let lost = LoginLostAtDrop::armed(&c, &common::cluster_keystore().user);
    fx.vault
        .keystore()
        .set_purge_control(vault_core::keystore::PurgeControl::DropAnswerLost);
    match delete_with_hook(fx.vault, Box::new(|_| {})) {
        Some(Err(Error::DisposalFailed(m))) => {
            assert!(m.contains("outcome is not known"), "{m}");
            assert!(m.contains("pivault vault delete --resume"), "{m}");
        }
        other => panic!("an unknown outcome must keep the deletion open: {other:?}"),
    }
    drop(lost);
    assert!(
        !schema_exists(&format!("pv_{hex}")),
        "the drop had committed"
    );
    assert!(dir.join("DELETED").exists(), "the marker kept");
    assert!(reopen(&dir).is_err(), "its keys are gone");
    let Resumed::Deleted(done) = resume_deletion(&dir, &passphrase()).unwrap() else {
        panic!("the drop committed: the resume finishes it")
    };
    assert_certified(&c, &done, &cert_key);
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
}

/// After a deletion's drop committed and before its resume, someone who
/// may create schemas (another vault's role; here the superuser) makes one
/// under the dropped schema's name, open to the vault's role. Taken for the
/// vault's keys still there, the resume would report nothing deleted,
/// remove the marker and leave a vault without keys and without a way to
/// its certificate; it is not the vault's, so the resume certifies, and the
/// vault's directory opens nothing.
#[test]
fn a_schema_made_under_a_deleted_vaults_name_is_not_taken_for_its_keys() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, needles, _) = filled(&tmp.path().join("b"), 3);
    let dir = fx.dir.clone();
    let schema = format!("pv_{}", schema_hex(&fx.vault));
    let cert_key = fx.vault.certificate_public_key();
    assert!(delete_with_hook(fx.vault, killed_at("keystore_dropped")).is_none());
    let role = common::cluster_keystore().user;
    struct Squatted(String);
    impl Drop for Squatted {
        fn drop(&mut self) {
            psql_in(
                &primary_member(&cluster()),
                "pivault_keys",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            )
            .expect("the squatted schema dropped");
        }
    }
    psql_in(
        &primary_member(&c),
        "pivault_keys",
        &format!("CREATE SCHEMA {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};"),
    )
    .expect("a schema under the deleted vault's name");
    let _squatted = Squatted(schema.clone());
    assert!(
        schema_exists(&schema),
        "there, and visible to the vault's role"
    );
    match reopen(&dir) {
        Err(e) => assert!(!e.to_string().contains("opens again"), "{e}"),
        Ok(_) => panic!("a schema made by someone else is not the vault's keystore"),
    }
    let resumed = resume_deletion(&dir, &passphrase()).unwrap();
    let Resumed::Deleted(done) = resumed else {
        panic!("the keys were dropped: a schema under their name is not them: {resumed:?}")
    };
    assert_certified(&c, &done, &cert_key);
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_killed_deletions_drop_still_running_when_resume_looks_is_stopped_and_the_vault_given_back_whole()
 {
    let _one = serial();
    let _c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, _, ids) = filled(&tmp.path().join("b"), 5);
    let dir = fx.dir.clone();
    let schema = format!("pv_{}", schema_hex(&fx.vault));
    assert!(delete_with_hook(fx.vault, killed_at("deletion_journaled")).is_none());

    // The killed process's drop, sent before it died and still running
    // on the primary: held part-way by a session's lock on one of the
    // schema's tables (the drop has the schema's lock and some tables').
    let cfg = common::cluster_keystore();
    let mut blocker = provider::connect_primary(&cfg).unwrap();
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.backups IN ACCESS SHARE MODE"
        ))
        .unwrap();
    let straggler = std::thread::spawn({
        let (cfg, schema) = (cfg.clone(), schema.clone());
        move || {
            let mut c = provider::connect_primary(&cfg).unwrap();
            c.batch_execute(&format!("BEGIN; DROP SCHEMA {schema} CASCADE; COMMIT;"))
                .is_ok()
        }
    });
    let mut watch = provider::connect_primary(&cfg).unwrap();
    let mut waiting = || -> i64 {
        watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND position('DROP SCHEMA' in query) > 0",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let until = Instant::now() + Duration::from_secs(20);
    while waiting() == 0 {
        assert!(Instant::now() < until, "the drop never reached the lock");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The resume must not take the schema for whole while the drop may
    // still commit, nor give the vault back and let the drop land after.
    let resume = std::thread::spawn({
        let dir = dir.clone();
        move || resume_deletion(&dir, &passphrase())
    });
    let until = Instant::now() + Duration::from_secs(15);
    while !resume.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The blocking session lets go: a drop still alive now commits.
    blocker.batch_execute("ROLLBACK").unwrap();
    let outcome = resume.join().unwrap();
    let committed = straggler.join().unwrap();
    assert!(
        !committed,
        "the killed process's drop was stopped, not let commit"
    );
    match outcome {
        Ok(Resumed::NothingDeleted { .. }) => {}
        other => panic!("the drop never committed: the vault must come back, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(schema_exists(&schema), "no drop landed after the resume");
    let v = reopen(&dir).expect("the vault is back");
    let clerk = common::login(&v, "clerk");
    for r in &ids {
        v.get_record(&clerk, *r, &[], None)
            .expect("every record readable");
    }
}
