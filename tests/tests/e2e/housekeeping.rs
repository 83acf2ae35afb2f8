//! Issue 10: the server's own maintenance, with the real `pivault-server`:
//! due backups expired, expired sessions removed, and retention run on the
//! schedule an admin stores in the vault (off by default), each audited as
//! a system action. `--housekeeping-secs 1` keeps the tests to seconds.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vault_core::audit::{Channel, EventFilter};
use vault_core::certificate::{self, Certificate};
use vault_core::clock::ManualClock;
use vault_core::ed25519_dalek::SigningKey;
use vault_core::ids::SubjectId;
use vault_core::secret::SecretString;
use vault_core::vault::{
    ContractorScope, DisposalParties, DisposalRequest, DisposalScope, RetentionPolicy,
};

use crate::common::{self, CUSTOMERS, PASSPHRASE};
use crate::server;

const DAY_MS: i64 = 86_400_000;

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn customer(n: u64) -> Value {
    let given = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"][n as usize % 6];
    json!({ "given_name": given, "family_name": "Quimby" })
}

/// System events of `action` in the trail, read with the library after the server stopped.
fn system_events(dir: &std::path::Path, action: &str) -> Vec<vault_core::audit::AuditEvent> {
    let clock = Arc::new(ManualClock::new(real_now_ms()));
    let v = common::open_vault(dir, &clock);
    let officer = common::login(&v, "officer");
    let evs = v
        .audit_events(
            &officer,
            &EventFilter {
                action_prefix: Some(action.into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    v.close().unwrap();
    evs.into_iter()
        .filter(|e| e.channel == Channel::System && e.actor.is_none())
        .collect()
}

#[test]
fn the_server_expires_due_backups_and_removes_expired_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    // A backup that falls due a few seconds after the server starts, and
    // one that does not.
    let now = real_now_ms();
    fx.clock.set(now - DAY_MS + 4_000);
    let due = fx
        .vault
        .create_backup(&fx.officer, &tmp.path().join("due.pvb"), 1)
        .unwrap();
    let kept = fx
        .vault
        .create_backup(&fx.officer, &tmp.path().join("kept.pvb"), 30)
        .unwrap();
    // A token that expires in 3 s and one that lives an hour.
    fx.clock.set(now);
    let short = fx.vault.issue_token(&fx.clerk, 3_000).unwrap();
    let long = fx.vault.issue_token(&fx.clerk, 3_600_000).unwrap();
    assert_eq!(fx.vault.stored_sessions().unwrap(), 2);
    drop((short, long));
    fx.vault.close().unwrap();

    let srv = server::start_on(
        tmp,
        vault_dir.clone(),
        PASSPHRASE,
        &["--housekeeping-secs", "1"],
    );
    let lines = srv.wait_stderr(&["session sweep", "backup expiry"], Duration::from_secs(30));
    assert!(
        lines[0].contains("1 expired session(s) removed"),
        "{lines:?}"
    );
    assert!(lines[1].contains("1 backup(s) expired"), "{lines:?}");
    let (status, dir, keep) = srv.stop();
    assert!(status.success());

    // The row is gone; the live token's row stays. The backup's key was
    // destroyed by the server (read at a time before its expiry, so that
    // the library's own expiry-on-list cannot have done it).
    let clock = Arc::new(ManualClock::new(now));
    let v = common::open_vault(&dir, &clock);
    assert_eq!(
        v.stored_sessions().unwrap(),
        1,
        "only the live token's row is left"
    );
    let officer = common::login(&v, "officer");
    let list = v.backups(&officer).unwrap();
    let state = |id| list.iter().find(|b| b.id == id).unwrap().state.clone();
    assert_eq!(state(due.id), "destroyed");
    assert_eq!(state(kept.id), "active");
    v.close().unwrap();
    assert!(!system_events(&dir, "session.expire").is_empty());
    let expired = system_events(&dir, "backup.expire");
    assert!(
        expired
            .iter()
            .any(|e| e.targets.contains(&due.id.to_string())),
        "{expired:?}"
    );
    drop(keep);
}

#[test]
fn scheduled_retention_runs_only_once_an_officer_turns_it_on() {
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    // Records created at T0 (2025-01-01): long past a 30-day retention now.
    for n in 0..3 {
        fx.vault
            .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(n))
            .unwrap();
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
    // Off by default; a clerk cannot turn it on, nor can an admin (who may
    // not dispose, so may not schedule disposals), nor shorten the policy.
    assert_eq!(fx.vault.retention_schedule(&fx.admin).unwrap(), None);
    assert!(fx.vault.set_retention_schedule(&fx.clerk, Some(1)).is_err());
    assert!(matches!(
        fx.vault.set_retention_schedule(&fx.admin, Some(1)),
        Err(vault_core::Error::PermissionDenied(_))
    ));
    assert!(
        fx.vault
            .set_retention_schedule(&fx.officer, Some(0))
            .is_err()
    );
    let shorter = |days| RetentionPolicy {
        days,
        from_updated: false,
    };
    assert!(matches!(
        fx.vault.set_retention(&fx.admin, CUSTOMERS, shorter(1)),
        Err(vault_core::Error::PermissionDenied(_))
    ));
    fx.vault
        .set_retention(&fx.admin, CUSTOMERS, shorter(3650))
        .expect("an admin may lengthen");
    fx.vault
        .set_retention(&fx.officer, CUSTOMERS, shorter(30))
        .unwrap();
    let officer_id = fx.officer.user();
    fx.vault.close().unwrap();

    // CLI (custodian, on the directory): shows it off.
    let pass = tmp.path().join("pp");
    crate::cli::write_private(&pass, PASSPHRASE.as_bytes());
    let pw = tmp.path().join("admin-pw");
    crate::cli::write_private(&pw, common::USERS[1].2.as_bytes());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(crate::cli::pivault_bin())
            .env("PIVAULT_DIR", &vault_dir)
            .env("PIVAULT_PASSPHRASE_FILE", &pass)
            .env("PIVAULT_USER", "officer")
            .env("PIVAULT_PASSWORD_FILE", &pw)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = serde_json::from_slice::<Value>(&out.stdout).unwrap();
        crate::documents::check(&v, "pivault retention schedule");
        v
    };
    assert_eq!(cli(&["--json", "retention", "schedule"])["enabled"], false);
    let on = cli(&["--json", "retention", "schedule", "--every-hours", "12"]);
    assert_eq!(on["every_hours"], 12, "{on}");
    assert_eq!(on["set_by"], officer_id.to_string(), "{on}");
    let off = cli(&["--json", "retention", "schedule", "--off"]);
    assert_eq!(off["enabled"], false, "{off}");

    let srv = server::start_on(
        tmp,
        vault_dir.clone(),
        PASSPHRASE,
        &["--housekeeping-secs", "1"],
    );
    let officer = srv.token("officer");
    // Several checks pass with the schedule off: nothing is disposed.
    std::thread::sleep(Duration::from_secs(3));
    let list = srv
        .call("GET", "/v1/disposals", Some(&officer), None)
        .json();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let due = srv
        .call("GET", "/v1/retention/due", Some(&officer), None)
        .json();
    assert_eq!(due["records"], 3, "{due}");

    let clerk = srv.token("clerk");
    let a = srv.call(
        "PUT",
        "/v1/retention-schedule",
        Some(&clerk),
        Some(&json!({ "every_hours": 24 })),
    );
    assert_eq!(a.status, 403, "{a:?}");
    let admin = srv.token("admin");
    let a = srv.call(
        "PUT",
        "/v1/retention-schedule",
        Some(&admin),
        Some(&json!({ "every_hours": 24 })),
    );
    assert_eq!(a.status, 403, "an admin may not schedule disposals: {a:?}");
    let a = srv.call(
        "PUT",
        "/v1/retention-schedule",
        Some(&officer),
        Some(&json!({ "every_hours": 24 })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["every_hours"], 24);
    let lines = srv.wait_stderr(&["scheduled retention"], Duration::from_secs(60));
    assert!(
        lines[0].contains("3 record(s) disposed, certificate"),
        "{lines:?}"
    );
    let list = srv
        .call("GET", "/v1/disposals", Some(&officer), None)
        .json();
    let batches = list["items"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{list}");
    let cert_id = batches[0]["certificate_id"].as_str().unwrap().to_owned();
    let file = srv.call(
        "GET",
        &format!("/v1/certificates/{cert_id}/file"),
        Some(&officer),
        None,
    );
    assert_eq!(file.status, 200, "{file:?}");
    let cert = Certificate::parse(&file.text).unwrap();
    assert_eq!(cert.body["operator"]["user_id"], officer_id.to_string());
    assert_eq!(cert.body["target"]["record_count"], 3);
    let s = srv
        .call("GET", "/v1/retention-schedule", Some(&officer), None)
        .json();
    assert!(s["last_run_at"].is_string(), "{s}");
    // Turned off again.
    let a = srv.call(
        "PUT",
        "/v1/retention-schedule",
        Some(&officer),
        Some(&json!({ "every_hours": null })),
    );
    assert_eq!(a.json()["enabled"], false, "{a:?}");
    let (status, dir, keep) = srv.stop();
    assert!(status.success());

    let clock = Arc::new(ManualClock::new(real_now_ms()));
    let v = common::open_vault(&dir, &clock);
    assert!(certificate::verify(&cert, &v.certificate_public_key()).ok());
    v.close().unwrap();
    let runs = system_events(&dir, "retention.scheduled_run");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].targets.contains(&cert_id), "{runs:?}");
    drop(keep);
}

#[test]
fn a_contractor_outside_the_batch_cannot_cosign_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    let (k1, k2) = (
        SigningKey::from_bytes(&[9; 32]),
        SigningKey::from_bytes(&[10; 32]),
    );
    let pw2 = "Contr2-Walnut-Osprey-551";
    fx.vault
        .add_user(
            &fx.admin,
            "contractor2",
            &SecretString::from(pw2),
            vault_core::access::Role::Contractor,
            false,
        )
        .unwrap();
    for (user, k) in [("contractor", &k1), ("contractor2", &k2)] {
        fx.vault
            .assign_contractor(
                &fx.admin,
                user,
                ContractorScope {
                    collections: vec![CUSTOMERS.into()],
                    records: vec![],
                    public_key: Some(hex::encode(k.verifying_key().as_bytes())),
                },
            )
            .unwrap();
    }
    let id = fx
        .vault
        .put_record(&fx.clerk, CUSTOMERS, SubjectId::new(), &customer(1))
        .unwrap();
    let o = fx
        .vault
        .dispose(
            &fx.contractor,
            &DisposalRequest {
                scope: DisposalScope::Record(id),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    contract_reference: Some("PO-1".into()),
                    contractor_certification: None,
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let cert_id = o.certificate_id.unwrap();
    let cert = fx.vault.certificate(&fx.officer, cert_id).unwrap();
    fx.vault.close().unwrap();

    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &[]);
    let a = srv.call(
        "POST",
        "/v1/sessions",
        None,
        Some(&json!({ "username": "contractor2", "password": pw2 })),
    );
    let t2 = a.json()["token"].as_str().unwrap().to_owned();
    let path = format!("/v1/certificates/{cert_id}/cosign");
    let sig = |k: &SigningKey| json!({ "signature": hex::encode(vault_core::cosign::sign(&cert, k).unwrap()) });
    let a = srv.call("POST", &path, Some(&t2), Some(&sig(&k2)));
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.json()["code"], "permission_denied", "{a:?}");
    let t1 = srv.token("contractor");
    let a = srv.call("POST", &path, Some(&t1), Some(&sig(&k1)));
    assert_eq!(a.status, 200, "{a:?}");
    let started = Instant::now();
    let (status, _, _keep) = srv.stop();
    assert!(status.success(), "{:?}", started.elapsed());
}

/// A two-person request no one approved in time is deleted by the sweep:
/// none can be approved any more, and a new user's request holds their
/// password's hash and full name. One still in its window stays.
#[test]
fn requests_past_their_approval_window_are_swept_with_what_they_held() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let v = &fx.vault;
    let ask = |name: &str| match v.add_person(
        &fx.admin,
        name,
        &vault_core::secret::SecretString::from("Quarry-Meadow-Falcon-83"),
        vault_core::access::Role::Officer,
        false,
        Some("Olga Petrova"),
    ) {
        Err(vault_core::Error::ApprovalRequired { request }) => request,
        other => panic!("expected a pending approval: {other:?}"),
    };
    let old = ask("olga");
    fx.clock
        .advance(vault_core::vault::APPROVAL_TTL_MS - 60_000);
    let fresh = ask("oskar");
    fx.clock.advance(120_000);
    assert_eq!(v.sweep_expired_requests().unwrap(), 1);
    assert_eq!(
        v.sweep_expired_requests().unwrap(),
        0,
        "nothing left to sweep"
    );
    // The expired one is gone (not merely refused as expired); the fresh
    // one is approved, full name and all.
    let gone = v.approve_request(&fx.officer, &old);
    assert!(
        matches!(gone, Err(vault_core::Error::NotFound(_))),
        "{gone:?}"
    );
    v.approve_request(&fx.officer, &fresh).unwrap();
    let users = v.list_users(&fx.admin).unwrap();
    assert!(users.iter().all(|u| u.username.as_str() != "olga"));
    let oskar = users
        .iter()
        .find(|u| u.username.as_str() == "oskar")
        .expect("oskar approved");
    assert_eq!(oskar.full_name.as_deref(), Some("Olga Petrova"));
    let swept = v
        .audit_events(
            &fx.officer,
            &EventFilter {
                action_prefix: Some("approval.expire".into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(common::ids(&swept[0].targets), vec!["removed:1".to_owned()]);
}
