//! Deleting a whole vault on the cluster (`pivault vault delete`, issue
//! 16): a business leaves its provider. Its keys go from every member
//! while another business's vault is written beside it; what a second
//! opener, an insider's lock, a legal hold or one person alone can do
//! about it; and the binary's run from `vault create` to a removed role.
//! Run with the cluster `scripts/cluster.sh` starts (see cluster.rs).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use vault_core::ids::SubjectId;
use vault_core::keystore::provider;
use vault_core::secret::SecretString;
use vault_core::vault::{DeletionParties, OpenOptions, Vault};

use crate::cli::{pivault_bin, write_private};
use crate::cluster::{cluster, serial};
use crate::common::{self, Fixture};

pub(crate) fn on_clusters(dir: &Path) -> Fixture {
    common::fast_vault_with(
        dir,
        Some(common::cluster_keystore()),
        Some(common::cluster_records()),
    )
}

pub(crate) fn body(n: usize) -> Value {
    json!({ "given_name": "Leaving", "family_name": "Business", "ssn": format!("123-45-{:04}", 1000 + n) })
}

pub(crate) fn schema_hex(v: &Vault) -> String {
    v.id().to_string().replace('-', "")
}

/// The wrapped bytes at the top of `v`'s key hierarchy (root-key slots,
/// sealed signing keys, bucket keys, backup keys), read as the vault's
/// own role: what must be on no member once the vault is deleted.
pub(crate) fn top_keys(v: &Vault) -> Vec<Vec<u8>> {
    let mut c = provider::connect_primary(&common::cluster_keystore()).expect("vault role");
    let s = format!("pv_{}", schema_hex(v));
    c.query(
        &format!(
            "SELECT v FROM {s}.header UNION ALL SELECT v FROM {s}.buckets UNION ALL SELECT v FROM {s}.backups"
        ),
        &[],
    )
    .expect("the vault's keystore rows")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Whether the schema still exists on the primary: `pv_…` in the
/// keystore database, `pr_…` in the records database.
pub(crate) fn schema_exists(name: &str) -> bool {
    let cfg = if name.starts_with("pr_") {
        common::cluster_records()
    } else {
        common::cluster_keystore()
    };
    let mut c = provider::connect_primary(&cfg).expect("vault role");
    c.query_one(
        "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
        &[&name],
    )
    .expect("catalog")
    .get::<_, i64>(0)
        == 1
}

pub(crate) fn reopen(dir: &Path) -> vault_core::Result<Vault> {
    Vault::open(
        dir,
        &SecretString::from(common::PASSPHRASE),
        OpenOptions::default(),
    )
}

pub(crate) fn parties() -> DeletionParties {
    DeletionParties {
        data_owner: "Quimby Hardware".into(),
        data_owner_address: Some("1 Example Street, Boston, MA 02108".into()),
        reason: Some("the business closed".into()),
    }
}

#[test]
fn a_vault_deleted_while_another_is_written_leaves_none_of_its_keys_on_any_member_and_a_certificate_that_verifies_offline()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let a = on_clusters(&tmp.path().join("a"));
    let b = on_clusters(&tmp.path().join("b"));
    let b_dir = b.dir.clone();
    let b_schema = schema_hex(&b.vault);
    let mut needles_b = Vec::new();
    for i in 0..20 {
        let s = SubjectId::new();
        let id = b
            .vault
            .put_record(&b.clerk, common::CUSTOMERS, s, &body(i))
            .unwrap();
        needles_b.push(b.vault.keystore().wrapped_dek(s, id, 1).unwrap().unwrap());
    }
    needles_b.extend(top_keys(&b.vault));
    let mut needles_a = Vec::new();
    let mut kept_a = Vec::new();
    for i in 0..5 {
        let s = SubjectId::new();
        let id = a
            .vault
            .put_record(&a.clerk, common::CUSTOMERS, s, &body(i))
            .unwrap();
        needles_a.push(a.vault.keystore().wrapped_dek(s, id, 1).unwrap().unwrap());
        kept_a.push(id);
    }
    assert!(
        !c.files_holding(&needles_b).is_empty(),
        "before: B's keys are in the members' files (the scan can see them)"
    );
    let plan = b.vault.plan_deletion(&b.officer).unwrap();
    assert_eq!((plan.records, plan.holds), (20, 0));
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);

    // A's clerk writes and reads all through B's deletion; a second
    // opener (a server started on B's directory) tries to take B.
    let deleting = AtomicBool::new(true);
    let opened = AtomicUsize::new(0);
    let vault_id = b.vault.id();
    let Fixture {
        vault: b_vault,
        officer,
        auditor,
        ..
    } = b;
    let (done, written) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut mine = Vec::new();
            let mut i = 100;
            while deleting.load(Ordering::SeqCst) || mine.len() < 5 {
                let id = a
                    .vault
                    .put_record(&a.clerk, common::CUSTOMERS, SubjectId::new(), &body(i))
                    .expect("A's put while B is deleted");
                a.vault
                    .get_record(&a.clerk, id, &[], None)
                    .expect("A's get");
                mine.push(id);
                i += 1;
            }
            mine
        });
        let intruder = s.spawn(|| {
            while deleting.load(Ordering::SeqCst) {
                if let Ok(v) = reopen(&b_dir) {
                    opened.fetch_add(1, Ordering::SeqCst);
                    drop(v);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let done = b_vault.delete_vault(&officer, &auditor, vault_id, &parties());
        deleting.store(false, Ordering::SeqCst);
        intruder.join().expect("intruder");
        (done, writer.join().expect("A's clerk"))
    });
    let done = done.expect("B deleted");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        0,
        "no one opened B while it was deleted"
    );

    // Not a byte of B's keys on any member, read from the files directly.
    assert_eq!(
        c.files_holding(&needles_b),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!schema_exists(&format!("pv_{b_schema}")));
    assert!(!schema_exists(&format!("pr_{b_schema}")));
    assert!(
        reopen(&b_dir).is_err(),
        "B's directory opens nothing: its key slots are gone"
    );
    // Nor without its marker (an insider deleted it): no opener makes B's
    // schemas again on the cluster.
    std::fs::remove_file(b_dir.join("DELETED")).unwrap();
    let Err(e) = reopen(&b_dir) else {
        panic!("B opened without its marker")
    };
    assert!(e.to_string().contains("deleted"), "{e}");
    assert!(!schema_exists(&format!("pv_{b_schema}")));
    assert!(!schema_exists(&format!("pr_{b_schema}")));
    // A lost nothing and its keys are where they were.
    assert!(
        !c.files_holding(&needles_a).is_empty(),
        "A's keys untouched"
    );
    kept_a.extend(written);
    for id in &kept_a {
        a.vault
            .get_record(&a.clerk, *id, &[], None)
            .expect("every A record reads");
    }
    assert!(a.vault.audit_verify(&a.auditor).unwrap().ok());

    // The certificate: validated, every member verified, verifiable
    // offline with the key printed, and any changed byte fails.
    let cert = &done.certificate.body;
    assert_eq!(cert["status"], "validated");
    assert_eq!(cert["target"]["scope"], "vault");
    assert_eq!(cert["target"]["record_count"], 20);
    assert_eq!(cert["sanitization"]["verification"]["result"], "PASS");
    let members = cert["sanitization"]["details"]["keystore_purge"]["members"]
        .as_array()
        .unwrap();
    assert_eq!(members.len(), c.members.len());
    assert!(members.iter().all(|m| m["verified"] == true), "{members:?}");
    assert_eq!(
        cert["sanitization"]["details"]["records"]["clean"], true,
        "{}",
        cert["sanitization"]["details"]["records"]
    );
    assert_ne!(cert["operator"]["user_id"], cert["validator"]["user_id"]);
    let work = tmp.path();
    let cert_file = work.join("b.cert.json");
    std::fs::write(&cert_file, done.certificate.to_file_json()).unwrap();
    let key_file = work.join("b.cert.pem");
    std::fs::write(
        &key_file,
        vault_core::certificate::public_key_pem(&done.certificate_key),
    )
    .unwrap();
    let verify = |f: &Path| {
        Command::new(pivault_bin())
            .args(["certificate", "verify"])
            .arg(f)
            .arg("--key")
            .arg(&key_file)
            .env_remove("PIVAULT_DIR")
            .output()
            .unwrap()
    };
    let o = verify(&cert_file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tampered = work.join("b.tampered.json");
    std::fs::write(
        &tampered,
        done.certificate
            .to_file_json()
            .replacen("\"record_count\": 20", "\"record_count\": 19", 1),
    )
    .unwrap();
    assert!(!verify(&tampered).status.success(), "a changed byte fails");
    // The whole trail, verifiable with the audit key alone, names the deletion.
    let trail = &done.audit_trail;
    assert!(trail.contains("\"vault.delete\"") && trail.contains("\"vault.delete.verified\""));
    let report = vault_core::siem::verify_file(trail, &done.audit_key);
    assert!(report.ok(), "{}", report.proves());
    done.remove_directory().unwrap();
    assert!(!b_dir.exists());
    a.vault.close().unwrap();
}

#[test]
fn a_vault_delete_refused_by_a_hold_an_insiders_lock_or_one_person_destroys_nothing_and_its_retry_deletes()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = on_clusters(&tmp.path().join("b"));
    let dir = fx.dir.clone();
    let hex = schema_hex(&fx.vault);
    let id = fx.vault.id();
    let mut records = Vec::new();
    for i in 0..6 {
        let s = SubjectId::new();
        let r = fx
            .vault
            .put_record(&fx.clerk, common::CUSTOMERS, s, &body(i))
            .unwrap();
        records.push((s, r));
    }
    let needles = top_keys(&fx.vault);
    fx.vault
        .add_hold(&fx.officer, Some(records[2].1), None, "litigation")
        .unwrap();
    let plan = fx.vault.plan_deletion(&fx.officer).unwrap();
    assert_eq!(plan.holds, 1);
    assert!(!plan.problems.is_empty());
    // Each refusal: the vault opens again with every record readable.
    let intact = |v: &Vault| {
        let clerk = common::login(v, "clerk");
        for (_, r) in &records {
            v.get_record(&clerk, *r, &[], None).expect("still readable");
        }
        assert!(schema_exists(&format!("pv_{hex}")));
    };
    let Fixture { vault, officer, .. } = fx;
    // One person as both officer and validator.
    let e = vault
        .delete_vault(&officer, &officer, id, &parties())
        .unwrap_err();
    assert!(e.to_string().contains("different user"), "{e}");
    let v = reopen(&dir).unwrap();
    intact(&v);
    // A clerk may not delete; the wrong vault ID is refused.
    let (clerk, auditor) = (common::login(&v, "clerk"), common::login(&v, "auditor"));
    assert!(matches!(
        v.delete_vault(&clerk, &auditor, id, &parties()),
        Err(vault_core::Error::PermissionDenied(_))
    ));
    let v = reopen(&dir).unwrap();
    let (officer, auditor) = (common::login(&v, "officer"), common::login(&v, "auditor"));
    assert!(
        v.delete_vault(
            &officer,
            &auditor,
            vault_core::ids::VaultId::new(),
            &parties()
        )
        .is_err()
    );
    // The legal hold.
    let v = reopen(&dir).unwrap();
    let (officer, auditor) = (common::login(&v, "officer"), common::login(&v, "auditor"));
    assert!(matches!(
        v.delete_vault(&officer, &auditor, id, &parties()),
        Err(vault_core::Error::LegalHold)
    ));
    let v = reopen(&dir).unwrap();
    intact(&v);
    let officer = common::login(&v, "officer");
    v.remove_hold(&officer, Some(records[2].1), None).unwrap();
    // An insider with the vault host's credentials holds a lock on a
    // table of the keystore: the drop waits 5 s, gives up, is rolled back.
    let mut insider = provider::connect_primary(&common::cluster_keystore()).unwrap();
    insider
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE pv_{hex}.deks_0 IN ACCESS SHARE MODE"
        ))
        .unwrap();
    let auditor = common::login(&v, "auditor");
    let e = v
        .delete_vault(&officer, &auditor, id, &parties())
        .unwrap_err();
    assert!(
        e.to_string().contains("lock"),
        "the drop timed out on the insider's lock: {e}"
    );
    insider.batch_execute("ROLLBACK").unwrap();
    let v = reopen(&dir).unwrap();
    intact(&v);
    assert!(
        !c.files_holding(&needles).is_empty(),
        "nothing was destroyed: the keys are still on the members"
    );
    // The retry deletes; the trail handed over holds every refusal.
    let (officer, auditor) = (common::login(&v, "officer"), common::login(&v, "auditor"));
    let done = v.delete_vault(&officer, &auditor, id, &parties()).unwrap();
    assert!(c.files_holding(&needles).is_empty());
    let trail = &done.audit_trail;
    let refused = trail
        .lines()
        .filter(|l| l.contains("\"vault.delete\"") && !l.contains("\"success\""))
        .count();
    assert!(
        refused >= 4,
        "the refusals are in the trail: {refused}\n{trail}"
    );
    done.remove_directory().unwrap();
}

#[test]
fn pivault_vault_delete_from_vault_create_to_a_dropped_role() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    write_private(&work.join("pass"), b"leaving-vault-passphrase-83Lm!");
    write_private(&work.join("admin.pw"), b"Leaving-Pike-Harrow-Quill-51");
    let shared = common::cluster_keystore();
    let provider_cfg = vault_core::keystore::postgres::PgConfig {
        user: "pivault_provider".into(),
        password_file: std::env::var("PIVAULT_PG_PROVIDER_PASSWORD_FILE")
            .expect("PIVAULT_PG_PROVIDER_PASSWORD_FILE (scripts/cluster.sh)")
            .into(),
        ..shared
    };
    let provider = work.join("provider.json");
    std::fs::write(&provider, serde_json::to_vec(&provider_cfg).unwrap()).unwrap();
    let dir = work.join("leaving");
    let run = |args: &[&str], password: &str| {
        Command::new(pivault_bin())
            .arg("--vault")
            .arg(&dir)
            .args(args)
            .env("PIVAULT_PASSPHRASE_FILE", work.join("pass"))
            .env("PIVAULT_PASSWORD_FILE", work.join(password))
            .env("PIVAULT_VALIDATOR_PASSWORD_FILE", work.join("auditor.pw"))
            .env_remove("PIVAULT_DIR")
            .output()
            .unwrap()
    };
    let o = run(
        &[
            "--json",
            "vault",
            "create",
            "--provider",
            provider.to_str().unwrap(),
            "--admin",
            "owner",
            "--insecure-fast-kdf",
            "--two-factor",
            "none",
        ],
        "admin.pw",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vault_id = serde_json::from_slice::<Value>(&o.stdout).unwrap()["vault_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let role = serde_json::from_slice::<Value>(&std::fs::read(dir.join("keystore.json")).unwrap())
        .unwrap()["user"]
        .as_str()
        .unwrap()
        .to_owned();
    // An officer and an auditor, and records, added in the library.
    {
        let v = Vault::open(
            &dir,
            &SecretString::from("leaving-vault-passphrase-83Lm!"),
            OpenOptions::default(),
        )
        .unwrap();
        let owner = v
            .login(
                "owner",
                &SecretString::from("Leaving-Pike-Harrow-Quill-51"),
                vault_core::vault::Context::cli(),
            )
            .unwrap();
        for (name, role, pw) in [
            (
                "olive",
                vault_core::access::Role::Officer,
                "Harbour-Kestrel-Granite-77",
            ),
            (
                "audrey",
                vault_core::access::Role::Auditor,
                "Lantern-Meadow-Tungsten-39",
            ),
        ] {
            v.add_user(&owner, name, &SecretString::from(pw), role, false)
                .unwrap();
            write_private(&work.join(format!("{name}.pw")), pw.as_bytes());
        }
        v.close().unwrap();
    }
    std::fs::copy(work.join("audrey.pw"), work.join("auditor.pw")).unwrap();
    let cert = work.join("leaving.cert.json");
    let trail = work.join("leaving.audit.jsonl");
    let delete = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "--user",
            "olive",
            "vault",
            "delete",
            "--provider",
            provider.to_str().unwrap(),
            "--validator",
            "audrey",
            "--certificate",
            cert.to_str().unwrap(),
            "--audit-out",
            trail.to_str().unwrap(),
            "--data-owner",
            "Quimby Hardware",
        ];
        args.extend_from_slice(extra);
        run(&args, "olive.pw")
    };
    let o = delete(&["--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::documents::check(&plan, "vault delete --dry-run");
    assert_eq!(plan["can_delete"], true, "{plan}");
    // No confirmation, no deletion; a certificate inside the vault, refused.
    let o = delete(&[]);
    assert!(!o.status.success());
    assert!(dir.join("keystore.json").exists());
    let inside = dir.join("c.json");
    let o = run(
        &[
            "--user",
            "olive",
            "vault",
            "delete",
            "--validator",
            "audrey",
            "--certificate",
            inside.to_str().unwrap(),
            "--audit-out",
            trail.to_str().unwrap(),
            "--confirm",
            &vault_id,
        ],
        "olive.pw",
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("inside the vault directory"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = delete(&["--confirm", &vault_id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::documents::check(&v, "vault delete");
    assert_eq!(v["role_dropped"], role.as_str());
    assert!(!dir.exists(), "the directory is removed");
    let key = work.join("cert.pem");
    std::fs::write(&key, v["certificate_public_key"].as_str().unwrap()).unwrap();
    let o = Command::new(pivault_bin())
        .args(["certificate", "verify"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let audit_key = work.join("audit.pem");
    std::fs::write(&audit_key, v["audit_public_key"].as_str().unwrap()).unwrap();
    let o = Command::new(pivault_bin())
        .args(["audit", "verify", "--file"])
        .arg(&trail)
        .arg("--key")
        .arg(&audit_key)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The role is gone, and the provider lists no such vault.
    let mut p = provider::connect_primary(&provider_cfg).unwrap();
    let n: i64 = p
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let listed = provider::list(&provider_cfg).unwrap();
    assert!(
        !listed.iter().any(|h| h.vault_id.to_string() == vault_id),
        "{listed:?}"
    );
}

#[test]
fn a_vault_with_embedded_records_is_deleted_from_the_keystore_cluster_and_its_directory_opens_nothing()
 {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_on(&tmp.path().join("e"), Some(common::cluster_keystore()));
    assert!(!fx.vault.records_on_cluster());
    let hex = schema_hex(&fx.vault);
    let id = fx.vault.id();
    let mut needles = Vec::new();
    for i in 0..3 {
        let s = SubjectId::new();
        let r = fx
            .vault
            .put_record(&fx.clerk, common::CUSTOMERS, s, &body(i))
            .unwrap();
        needles.push(fx.vault.keystore().wrapped_dek(s, r, 1).unwrap().unwrap());
    }
    needles.extend(top_keys(&fx.vault));
    let dir = fx.dir.clone();
    let Fixture {
        vault,
        officer,
        auditor,
        ..
    } = fx;
    let done = vault
        .delete_vault(&officer, &auditor, id, &parties())
        .unwrap();
    let records = &done.certificate.body["sanitization"]["details"]["records"];
    assert_eq!(records["engine"], "rocksdb", "{records}");
    assert_eq!(c.files_holding(&needles), Vec::<std::path::PathBuf>::new());
    assert!(!schema_exists(&format!("pv_{hex}")));
    // An insider removes the marker: the keystore is still not made again
    // (the records here are embedded, so it is the keystore that refuses).
    std::fs::remove_file(dir.join("DELETED")).unwrap();
    let Err(e) = reopen(&dir) else {
        panic!("the deleted vault opened")
    };
    assert!(e.to_string().contains("deleted"), "{e}");
    assert!(!schema_exists(&format!("pv_{hex}")));
    done.remove_directory().unwrap();
    assert!(!dir.exists());
}

/// Another vault's role holding a lock on this vault's keystore schema
/// (through `pg_get_object_address`, here one the provider let it call;
/// taken from PUBLIC), which the drop waits for, keeps no whole-vault
/// deletion from completing: the drop waits until the role has held it
/// 30 s, ends that session, and drops.
#[test]
fn another_vaults_lock_on_the_vaults_schema_keeps_no_deletion_from_completing() {
    let _one = serial();
    let c = cluster();
    let primary = crate::cluster::primary_member(&c);
    let su = |q: &str| {
        crate::cluster::psql_in(&primary, "pivault_keys", q).expect("the superuser's SQL")
    };
    let tmp = tempfile::tempdir().unwrap();
    let fx = on_clusters(&tmp.path().join("v"));
    for i in 0..3 {
        fx.vault
            .put_record(&fx.clerk, common::CUSTOMERS, SubjectId::new(), &body(i))
            .unwrap();
    }
    let needles = top_keys(&fx.vault);
    let hex = schema_hex(&fx.vault);
    let id = fx.vault.id();
    let (role, other) = crate::cluster::another_vault_role(&c, tmp.path(), &su);
    su(&format!(
        "GRANT EXECUTE ON FUNCTION pg_get_object_address(text, text[], text[]) TO {role}"
    ));
    let (mut locker, _) = crate::cluster::transaction_held(
        &other,
        Some(&format!(
            "BEGIN; SELECT pg_get_object_address('schema', '{{pv_{hex}}}', '{{}}')"
        )),
    );
    let started = std::time::Instant::now();
    let done = fx
        .vault
        .delete_vault(&fx.officer, &fx.auditor, id, &parties())
        .expect("another vault's lock keeps no deletion from completing");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(28), "{took:?}");
    assert!(
        locker.simple_query("SELECT 1").is_err(),
        "the lock's session is ended"
    );
    assert!(!schema_exists(&format!("pv_{hex}")));
    assert!(c.files_holding(&needles).is_empty());
    done.remove_directory().unwrap();
    drop(locker);
    su(&format!(
        "REVOKE EXECUTE ON FUNCTION pg_get_object_address(text, text[], text[]) FROM {role}; DROP ROLE {role}"
    ));
}
