//! Issue 10: co-signatures bound to registered keys, and a truthful outcome
//! while backups still hold the disposed records.
//!
//! - The certificate declares the fingerprint of the batch contractor's
//!   registered key; `pivault certificate verify` refuses a co-signature in
//!   a role with no declared key or by another key, while OpenSSL alone still
//!   verifies the vault's signature over the same bytes.
//! - Only the batch's own contractor co-signs (library and HTTP).
//! - Validation keeps the co-signatures made on the draft.
//! - A disposal while a backup holds the records is "pending expiry of
//!   residual copies", naming the backups and their expiry.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::certificate::{self, CertSignature, Certificate};
use vault_core::crypto::fingerprint;
use vault_core::ed25519_dalek::{Signer, SigningKey};
use vault_core::ids::{CertificateId, SubjectId};
use vault_core::secret::SecretString;
use vault_core::vault::{ContractorScope, DisposalParties, DisposalRequest, DisposalScope};

use crate::cli::{self, Run};
use crate::common::{self, CUSTOMERS, Fixture};

/// Exit code of an integrity failure (vault-cli/src/exit.rs).
const EXIT_INTEGRITY: i32 = 8;

fn customer(n: u64) -> Value {
    let given = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"][n as usize % 6];
    json!({ "given_name": given, "family_name": "Quimby" })
}

fn contractor_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Registers `key` for the fixture contractor, scope `customers`.
fn register(fx: &Fixture, user: &str, key: &SigningKey) {
    fx.vault
        .assign_contractor(
            &fx.admin,
            user,
            ContractorScope {
                collections: vec![CUSTOMERS.into()],
                records: vec![],
                public_key: Some(hex::encode(key.verifying_key().as_bytes())),
            },
        )
        .expect("assign contractor");
}

/// A disposal of record `id` for the data owner, no dry run.
fn record_request(id: vault_core::ids::RecordId) -> DisposalRequest {
    DisposalRequest {
        scope: DisposalScope::Record(id),
        parties: DisposalParties {
            data_owner: "Example Retail LLC".into(),
            ..DisposalParties::default()
        },
        dry_run: false,
    }
}

fn dispose_one(
    fx: &Fixture,
    s: &vault_core::vault::Session,
    n: u64,
) -> (vault_core::ids::RecordId, CertificateId) {
    let id = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(n))
        .expect("put");
    let o = fx
        .vault
        .dispose(
            s,
            &DisposalRequest {
                scope: DisposalScope::Record(id),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    contractor_organisation: Some("Shred and Sons".into()),
                    contract_reference: Some("PO-77-A".into()),
                    contractor_certification: None,
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .expect("dispose");
    (id, o.certificate_id.expect("certificate"))
}

fn sign_over(cert: &Certificate, role: &str, key: &SigningKey) -> CertSignature {
    let sig = key.sign(&cert.message().unwrap());
    CertSignature {
        role: role.into(),
        key_fingerprint: fingerprint(key.verifying_key().as_bytes()),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(sig.to_bytes()),
        covers_draft: false,
    }
}

/// `pivault ARGS` with no vault, no user, no secret (offline commands).
fn offline(args: &[&str]) -> Run {
    let mut c = Command::new(cli::pivault_bin());
    for var in [
        "PIVAULT_DIR",
        "PIVAULT_USER",
        "PIVAULT_PASSPHRASE_FILE",
        "PIVAULT_PASSWORD_FILE",
    ] {
        c.env_remove(var);
    }
    let out = c
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run pivault");
    Run::from_output(args.join(" "), &out)
}

/// `pivault certificate verify --json`, and the same bytes through
/// `pivault certificate payload` + `openssl pkeyutl -verify` (vault signature only).
fn verify_both(dir: &Path, name: &str, cert: &Certificate, pem: &Path) -> (Run, bool) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, cert.to_file_json()).unwrap();
    let f = file.to_str().unwrap();
    let r = offline(&[
        "--json",
        "certificate",
        "verify",
        f,
        "--key",
        pem.to_str().unwrap(),
    ]);
    let (msg, sig) = (
        dir.join(format!("{name}.msg")),
        dir.join(format!("{name}.sig")),
    );
    offline(&[
        "certificate",
        "payload",
        f,
        "--out",
        msg.to_str().unwrap(),
        "--sig-out",
        sig.to_str().unwrap(),
    ])
    .ok();
    let ossl = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(pem)
        .arg("-rawin")
        .arg("-in")
        .arg(&msg)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .expect("run openssl");
    (r, ossl.status.success())
}

#[test]
fn a_cosignature_with_an_unregistered_key_fails_verify_while_openssl_still_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let key = contractor_key(9);
    register(&fx, "contractor", &key);
    let (_, cert_id) = dispose_one(&fx, &fx.contractor, 1);
    let cert = fx.vault.certificate(&fx.officer, cert_id).unwrap();
    assert_eq!(
        cert.body["schema_version"],
        certificate::SCHEMA_VERSION,
        "{}",
        cert.body
    );
    assert_eq!(
        cert.body["parties"]["contractor"]["key_fingerprint"],
        fingerprint(key.verifying_key().as_bytes()),
        "the certificate declares the contractor's registered key: {}",
        cert.body["parties"]
    );
    let pem = tmp.path().join("certificate.pem");
    std::fs::write(
        &pem,
        certificate::public_key_pem(&fx.vault.certificate_public_key()),
    )
    .unwrap();

    // The registered contractor co-signs through the vault: verifies.
    let sig = vault_core::cosign::sign(&cert, &key).unwrap();
    let good = fx
        .vault
        .cosign_certificate(&fx.contractor, cert_id, &sig)
        .unwrap();
    let (r, ossl) = verify_both(tmp.path(), "good", &good, &pem);
    r.ok();
    assert_eq!(r.json()["ok"], true, "{}", r.stdout);
    assert!(ossl, "openssl verifies the vault signature");

    // A "validator" co-signature by a fresh key the vault never saw: the
    // library refuses to add it, and a file carrying it fails verify while
    // OpenSSL still accepts the vault signature (the body is unchanged).
    let stranger = contractor_key(42);
    let msg = good.message().unwrap();
    let e = good
        .clone()
        .add_detached(
            "validator",
            &stranger.verifying_key(),
            &stranger.sign(&msg).to_bytes(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("names no key"), "{e}");
    let mut forged = good.clone();
    forged
        .signatures
        .push(sign_over(&good, "validator", &stranger));
    let (r, ossl) = verify_both(tmp.path(), "validator", &forged, &pem);
    r.code(EXIT_INTEGRITY);
    let v = r.json();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["vault_signature_ok"], true, "{v}");
    assert!(
        v["cosignature_notes"]
            .to_string()
            .contains("declares no key"),
        "{v}"
    );
    assert!(ossl, "openssl still verifies the vault signature");

    // A contractor co-signature by another key than the declared one.
    let unsigned = fx.vault.certificate(&fx.officer, {
        let (_, c) = dispose_one(&fx, &fx.contractor, 2);
        c
    });
    let mut other = unsigned.unwrap();
    other
        .signatures
        .push(sign_over(&other, "contractor", &stranger));
    let (r, ossl) = verify_both(tmp.path(), "contractor", &other, &pem);
    r.code(EXIT_INTEGRITY);
    assert!(
        r.json()["cosignature_notes"]
            .to_string()
            .contains("differs"),
        "{}",
        r.stdout
    );
    assert!(ossl);
    // Through the vault: the stranger's signature is refused.
    let e = fx
        .vault
        .cosign_certificate(
            &fx.contractor,
            other.id().unwrap().parse().unwrap(),
            &vault_core::cosign::sign(&other, &stranger).unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input", "{e}");
}

#[test]
fn only_the_batchs_own_contractor_cosigns() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let (k1, k2) = (contractor_key(9), contractor_key(10));
    register(&fx, "contractor", &k1);
    fx.vault
        .add_user(
            &fx.admin,
            "contractor2",
            &SecretString::from("Contr2-Walnut-Osprey-551"),
            vault_core::access::Role::Contractor,
            false,
        )
        .unwrap();
    register(&fx, "contractor2", &k2);
    let c2 = fx
        .vault
        .login(
            "contractor2",
            &SecretString::from("Contr2-Walnut-Osprey-551"),
            vault_core::vault::Context::cli(),
        )
        .unwrap();
    let (_, cert_id) = dispose_one(&fx, &fx.contractor, 1);
    let cert = fx.vault.certificate(&fx.officer, cert_id).unwrap();
    // The other contractor, with their own registered key, is refused.
    let e = fx
        .vault
        .cosign_certificate(&c2, cert_id, &vault_core::cosign::sign(&cert, &k2).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    assert!(e.to_string().contains("another user carried out"), "{e}");
    // A disposal by the officer: no contractor may co-sign it.
    let (_, by_officer) = dispose_one(&fx, &fx.officer, 2);
    let oc = fx.vault.certificate(&fx.officer, by_officer).unwrap();
    let e = fx
        .vault
        .cosign_certificate(
            &fx.contractor,
            by_officer,
            &vault_core::cosign::sign(&oc, &k1).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
    // The batch's own contractor can.
    fx.vault
        .cosign_certificate(
            &fx.contractor,
            cert_id,
            &vault_core::cosign::sign(&cert, &k1).unwrap(),
        )
        .unwrap();
    let stored = fx.vault.certificate(&fx.officer, cert_id).unwrap();
    assert!(certificate::verify(&stored, &fx.vault.certificate_public_key()).ok());
}

#[test]
fn validation_keeps_the_cosignatures_made_on_the_draft() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let key = contractor_key(9);
    register(&fx, "contractor", &key);
    let vk = fx.vault.certificate_public_key();

    // Co-signed, then validated: the co-signature stays and verifies.
    let (_, first) = dispose_one(&fx, &fx.contractor, 1);
    let draft = fx.vault.certificate(&fx.officer, first).unwrap();
    fx.vault
        .cosign_certificate(
            &fx.contractor,
            first,
            &vault_core::cosign::sign(&draft, &key).unwrap(),
        )
        .unwrap();
    // `certificate list --draft` shows what waits for a validator.
    let drafts = fx.vault.list_certificates(&fx.officer, true).unwrap();
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].id, first.to_string());
    assert_eq!(drafts[0].cosigned_by, vec!["contractor".to_owned()]);
    assert_eq!(drafts[0].record_count, 1);
    let validated = fx
        .vault
        .validate_certificate(&fx.officer, first, Some("Security Officer"))
        .unwrap();
    assert_eq!(validated.status(), Some("validated"));
    assert!(
        fx.vault
            .list_certificates(&fx.auditor, true)
            .unwrap()
            .is_empty()
    );
    let all = fx.vault.list_certificates(&fx.auditor, false).unwrap();
    assert_eq!((all.len(), all[0].status.as_str()), (1, "validated"));
    let cs = validated
        .signature("contractor")
        .expect("the contractor's co-signature survives validation");
    assert!(cs.covers_draft);
    let stored = fx.vault.certificate(&fx.auditor, first).unwrap();
    assert_eq!(stored, validated);
    let r = certificate::verify(&stored, &vk);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.status, "validated");

    // Validated, then co-signed: over the validated body.
    let (_, second) = dispose_one(&fx, &fx.contractor, 2);
    let v2 = fx
        .vault
        .validate_certificate(&fx.officer, second, None)
        .unwrap();
    let signed = fx
        .vault
        .cosign_certificate(
            &fx.contractor,
            second,
            &vault_core::cosign::sign(&v2, &key).unwrap(),
        )
        .unwrap();
    assert!(!signed.signature("contractor").unwrap().covers_draft);
    assert!(certificate::verify(&signed, &vk).ok());
}

fn outcome_of(c: &Certificate) -> (String, String, String) {
    (
        c.body["outcome"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        c.body["outcome_statement"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        c.body["target"]["classification"]["after"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn a_disposal_while_a_backup_holds_the_records_is_pending_expiry_of_residual_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let vk = fx.vault.certificate_public_key();
    let full = |c: &Certificate| {
        let (state, statement, after) = outcome_of(c);
        assert_eq!(state, "complete", "{}", c.body);
        assert_eq!(statement, certificate::OUTCOME_STATEMENT);
        assert_eq!(after, "no personal information recoverable");
        assert!(certificate::verify(c, &vk).ok());
    };
    // No backup: the full outcome.
    let (_, none) = dispose_one(&fx, &fx.officer, 1);
    full(&fx.vault.certificate(&fx.officer, none).unwrap());

    // A backup holding the record: pending, naming the backup and its expiry.
    let held = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(2))
        .unwrap();
    fx.clock.advance(60_000);
    let b = fx
        .vault
        .create_backup(&fx.officer, &tmp.path().join("backup-1.pvb"), 30)
        .unwrap();
    fx.clock.advance(60_000);
    let o = fx
        .vault
        .dispose(
            &fx.officer,
            &DisposalRequest {
                scope: DisposalScope::Record(held),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let c = fx
        .vault
        .certificate(&fx.officer, o.certificate_id.unwrap())
        .unwrap();
    let (state, statement, after) = outcome_of(&c);
    let expiry = vault_core::clock::format_ms(b.expires_ms);
    assert_eq!(state, certificate::PENDING_PHRASE, "{}", c.body);
    assert!(
        statement.contains(certificate::PENDING_PHRASE),
        "{statement}"
    );
    assert!(
        statement.contains(&b.id.to_string()) && statement.contains(&expiry),
        "{statement}"
    );
    assert!(statement.contains(certificate::OUTCOME_PHRASE));
    assert!(after.starts_with(certificate::PENDING_PHRASE), "{after}");
    assert_ne!(after, "no personal information recoverable");
    assert_eq!(c.body["outcome"]["complete_at"], expiry.as_str());
    assert_eq!(
        c.body["outcome"]["residual_copies"][0]["backup_id"],
        b.id.to_string()
    );
    assert!(certificate::verify(&c, &vk).ok());

    // A record created a minute after the backup: within the wall clock's
    // slack (an hour: a clock stepped back, a standby's machine), so the
    // backup may hold it.
    fx.clock.advance(60_000);
    let (_, near) = dispose_one(&fx, &fx.officer, 5);
    let nc = fx.vault.certificate(&fx.officer, near).unwrap();
    assert_eq!(
        nc.body["target"]["backups"]["copies"][0]["holds_records"],
        true
    );
    assert_eq!(outcome_of(&nc).0, certificate::PENDING_PHRASE);

    // A record created two hours after the backup: the backup does not hold it.
    fx.clock.advance(2 * 3_600_000);
    let (_, later) = dispose_one(&fx, &fx.officer, 3);
    let lc = fx.vault.certificate(&fx.officer, later).unwrap();
    full(&lc);
    assert_eq!(
        lc.body["target"]["backups"]["copies"][0]["holds_records"],
        false
    );

    // A backup holding the record, expired (its key destroyed) before the
    // disposal: the full outcome again.
    let old = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(4))
        .unwrap();
    fx.clock.advance(60_000);
    let b2 = fx
        .vault
        .create_backup(&fx.officer, &tmp.path().join("backup-2.pvb"), 1)
        .unwrap();
    fx.clock.advance(2 * 86_400_000);
    assert_eq!(
        fx.vault.run_backup_expiry().unwrap(),
        1,
        "the one-day backup is due"
    );
    let o = fx
        .vault
        .dispose(
            &fx.officer,
            &DisposalRequest {
                scope: DisposalScope::Record(old),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let ac = fx
        .vault
        .certificate(&fx.officer, o.certificate_id.unwrap())
        .unwrap();
    full(&ac);
    let copies = ac.body["target"]["backups"]["copies"].to_string();
    assert!(
        copies.contains(&b.id.to_string()) && !copies.contains(&b2.id.to_string()),
        "{copies}"
    );
}

/// A record that cannot be read has a creation time nobody checked (an
/// insider may have moved it later): every backup counts as holding it,
/// however long before that time it was taken. Before, a backup two hours
/// older than the row's stated creation was said to hold none of it.
#[test]
fn every_backup_counts_as_holding_a_record_whose_creation_time_cannot_be_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let b = fx
        .vault
        .create_backup(&fx.officer, &tmp.path().join("backup.pvb"), 30)
        .unwrap();
    fx.clock.advance(2 * 3_600_000);
    let subject = SubjectId::new();
    let id = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, subject, &customer(1))
        .unwrap();
    for (v, _) in fx.vault.keystore().record_keys(subject, id).unwrap() {
        fx.vault
            .keystore()
            .delete_dek(subject, id, v, true)
            .unwrap();
    }
    let o = fx.vault.dispose(&fx.officer, &record_request(id)).unwrap();
    let c = fx
        .vault
        .certificate(&fx.officer, o.certificate_id.unwrap())
        .unwrap();
    let copies = &c.body["target"]["backups"]["copies"];
    assert_eq!(copies[0]["backup_id"], b.id.to_string(), "{copies}");
    assert_eq!(copies[0]["holds_records"], true, "{copies}");
    assert_eq!(outcome_of(&c).0, certificate::PENDING_PHRASE);
}

/// `contractor list` names each contractor's scope and key fingerprint;
/// `contractor revoke` takes both away at once: the next disposal by that
/// contractor is refused and nothing else changes (issue 11).
#[test]
fn a_revoked_contractor_disposes_of_nothing_and_the_list_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&dir.path().join("vault"));
    let key = contractor_key(21);
    register(&fx, "contractor", &key);
    let listed = fx.vault.list_contractors(&fx.officer).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].username, "contractor");
    assert_eq!(listed[0].collections, vec![CUSTOMERS.to_owned()]);
    assert_eq!(
        listed[0].key_fingerprint.as_deref(),
        Some(vault_core::crypto::fingerprint(key.verifying_key().as_bytes()).as_str())
    );
    // In scope, the contractor disposes of a record.
    dispose_one(&fx, &fx.contractor, 1);
    // A clerk may not see the list; only an admin revokes.
    assert!(fx.vault.list_contractors(&fx.clerk).is_err());
    assert!(
        fx.vault
            .revoke_contractor(&fx.officer, "contractor")
            .is_err()
    );
    assert!(fx.vault.revoke_contractor(&fx.admin, "clerk").is_err());
    fx.vault.revoke_contractor(&fx.admin, "contractor").unwrap();
    let listed = fx.vault.list_contractors(&fx.admin).unwrap();
    assert_eq!(listed[0].key_fingerprint, None);
    assert!(listed[0].collections.is_empty());
    let id = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(2))
        .unwrap();
    let refused = fx.vault.dispose(&fx.contractor, &record_request(id));
    assert!(
        refused.is_err(),
        "a revoked contractor disposed: {refused:?}"
    );
    assert!(
        fx.vault.get_record(&fx.officer, id, &[], None).is_ok(),
        "the record stays"
    );
    let events = fx
        .vault
        .audit_events(
            &fx.auditor,
            &vault_core::audit::EventFilter {
                action_prefix: Some("contractor.revoke".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome == vault_core::audit::Outcome::Success)
            .count(),
        1
    );
}

/// One officer plus one auditor (issue 11): the auditor validates the
/// officer's certificate, and the contractor's earlier co-signature is still
/// there and verifies; the operator may not validate their own, and an
/// admin's attempt is a plain permission error.
#[test]
fn an_auditor_validates_the_only_officers_certificate_and_cosignatures_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let key = contractor_key(33);
    register(&fx, "contractor", &key);
    // The officer disposes (the operator).
    let (_, cert_id) = dispose_one(&fx, &fx.officer, 7);
    assert!(
        fx.vault
            .validate_certificate(&fx.officer, cert_id, None)
            .is_err(),
        "the operator may not validate their own"
    );
    assert!(matches!(
        fx.vault.validate_certificate(&fx.admin, cert_id, None),
        Err(vault_core::Error::PermissionDenied(_))
    ));
    let validated = fx
        .vault
        .validate_certificate(&fx.auditor, cert_id, None)
        .unwrap();
    assert_eq!(validated.status(), Some("validated"));
    assert_eq!(validated.body["validator"]["title"], "auditor");
    let r = certificate::verify(&validated, &fx.vault.certificate_public_key());
    assert!(r.ok(), "{r:?}");

    // A contractor's batch: co-signed by the contractor, validated by the
    // auditor; the co-signature is still there and verifies.
    let (_, second) = dispose_one(&fx, &fx.contractor, 8);
    let draft = fx.vault.certificate(&fx.auditor, second).unwrap();
    fx.vault
        .cosign_certificate(
            &fx.contractor,
            second,
            &vault_core::cosign::sign(&draft, &key).unwrap(),
        )
        .unwrap();
    let validated = fx
        .vault
        .validate_certificate(&fx.auditor, second, None)
        .unwrap();
    assert!(validated.signature("contractor").is_some());
    let r = certificate::verify(&validated, &fx.vault.certificate_public_key());
    assert!(r.ok(), "{r:?}");
    assert!(
        r.cosignatures.iter().any(|c| c.0 == "contractor" && c.2),
        "{r:?}"
    );
}

/// A contractor reads only the certificates and batches of disposals they
/// carried out: another disposal's certificate names records, collections
/// and exclusions outside their scope (REQ-DISP-02). Before, any signed-in
/// user read every certificate, its record proofs and the batch list.
#[test]
fn a_contractor_reads_only_the_certificates_and_batches_of_their_own_disposals() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    register(&fx, "contractor", &contractor_key(31));
    let (officers_record, officers) = dispose_one(&fx, &fx.officer, 1);
    let (_, own) = dispose_one(&fx, &fx.contractor, 2);
    match fx.vault.certificate(&fx.contractor, officers) {
        Err(vault_core::Error::NotFound(_)) => {}
        other => panic!("a contractor read another disposal's certificate: {other:?}"),
    }
    assert!(
        fx.vault
            .certificate_proof(&fx.contractor, officers, officers_record)
            .is_err(),
        "a contractor proved a record of another disposal"
    );
    fx.vault.certificate(&fx.contractor, own).unwrap();
    let listed: Vec<String> = fx
        .vault
        .list_certificates(&fx.contractor, false)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, vec![own.to_string()]);
    let batches: Vec<CertificateId> = fx
        .vault
        .disposals(&fx.contractor)
        .unwrap()
        .into_iter()
        .map(|b| b.certificate_id)
        .collect();
    assert_eq!(batches, vec![own]);
    assert_eq!(
        fx.vault
            .list_certificates(&fx.officer, false)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(fx.vault.disposals(&fx.officer).unwrap().len(), 2);
}

/// A contractor's batch checks their account and scope again once it holds
/// the batch lock: an admin who revokes the scope, or disables the account,
/// while the batch waits for the lock (another batch running) stops it.
/// Before, the scope was checked only at the plan, before the wait.
#[test]
fn a_contractor_revoked_or_disabled_while_their_batch_waits_disposes_of_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = std::sync::Arc::new(common::fast_vault(&tmp.path().join("vault")));
    for (cut, expect) in [("revoke", "permission"), ("disable", "session")] {
        register(&fx, "contractor", &contractor_key(32));
        let contractor = common::login(&fx.vault, "contractor");
        let id = fx
            .vault
            .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(7))
            .unwrap();
        let weak = std::sync::Arc::downgrade(&fx);
        fx.vault.set_crash_hook(Some(Box::new(move |step: &str| {
            if step == "planned"
                && let Some(fx) = weak.upgrade()
            {
                match cut {
                    "revoke" => fx
                        .vault
                        .revoke_contractor(&fx.admin, "contractor")
                        .map(|_| ()),
                    _ => fx.vault.disable_user(&fx.admin, "contractor").map(|_| ()),
                }
                .expect("the admin's change");
            }
        })));
        let r = fx.vault.dispose(&contractor, &record_request(id));
        fx.vault.set_crash_hook(None);
        match (expect, &r) {
            ("permission", Err(vault_core::Error::PermissionDenied(_)))
            | ("session", Err(vault_core::Error::SessionInvalid)) => {}
            _ => panic!("{cut}: the batch went on: {r:?}"),
        }
        assert!(
            fx.vault.get_record(&fx.officer, id, &[], None).is_ok(),
            "{cut}: the record stays"
        );
    }
    assert!(fx.vault.disposals(&fx.officer).unwrap().is_empty());
}

/// A contractor asking to dispose of a record outside their scope learns
/// nothing of it: a record of another collection, one disposed of there
/// (whose answer named its certificate) and an ID that names nothing all
/// answer `permission_denied`. Before, the three answers differed. A record
/// of their own collection disposed of still answers `disposed`.
#[test]
fn a_contractor_learns_nothing_of_records_outside_their_scope_by_asking() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    register(&fx, "contractor", &contractor_key(33));
    fx.vault
        .create_collection(&fx.admin, "suppliers", &common::customers_schema())
        .unwrap();
    let put = |collection: &str, n| {
        fx.vault
            .put_record(&fx.clerk, collection, SubjectId::new(), &customer(n))
            .unwrap()
    };
    let (other, other_disposed, own_disposed) =
        (put("suppliers", 1), put("suppliers", 2), put(CUSTOMERS, 3));
    let by = |s: &vault_core::vault::Session, id| fx.vault.dispose(s, &record_request(id));
    by(&fx.officer, other_disposed).unwrap();
    by(&fx.officer, own_disposed).unwrap();
    for (what, id) in [
        ("another collection's record", other),
        ("another collection's disposed record", other_disposed),
        ("no record", vault_core::ids::RecordId::new()),
    ] {
        match by(&fx.contractor, id) {
            Err(Error::PermissionDenied(_)) => {}
            r => panic!("{what}: {r:?}"),
        }
    }
    assert!(matches!(
        by(&fx.contractor, own_disposed),
        Err(Error::Disposed { .. })
    ));
}
