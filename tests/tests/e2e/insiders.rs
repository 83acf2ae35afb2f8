//! Issue 10, insiders and stolen credentials: no one changes their own
//! role; the last active admin and officer stay; the two-person rule for
//! the officer role, the reveal grant and an officer's password reset; your
//! own password changes only with the current one; a wrong password on a
//! locked account answers like any wrong password.

use vault_core::Error;
use vault_core::access::{Role, UserState};
use vault_core::audit::{AuditEvent, EventFilter, Outcome};
use vault_core::clock::Clock;
use vault_core::secret::SecretString;
use vault_core::vault::{APPROVAL_TTL_MS, Context, RequestKind, Session, Vault};

use crate::common::{self, Fixture, fast_vault, fresh_source, password_of};

const OFFICER2_PW: &str = "Sec0nd-Officer-Walrus-88";

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

fn events(f: &Fixture, action: &str) -> Vec<AuditEvent> {
    f.vault
        .audit_events(&f.auditor, &EventFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

fn role_of(f: &Fixture, name: &str) -> (Role, UserState) {
    role_as(f, &f.auditor, name)
}

fn role_as(f: &Fixture, s: &Session, name: &str) -> (Role, UserState) {
    let u = f
        .vault
        .list_users(s)
        .unwrap()
        .into_iter()
        .find(|u| u.username.as_str() == name)
        .unwrap_or_else(|| panic!("{name} not found"));
    (u.role, u.state)
}

fn pending(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::ApprovalRequired { request }) => request,
        other => panic!("expected a pending approval, got {other:?}"),
    }
}

/// Adds `officer2` (approved by the fixture officer) and logs them in.
fn second_officer(f: &Fixture) -> Session {
    let v = &f.vault;
    let req = pending(v.add_user(
        &f.admin,
        "officer2",
        &secret(OFFICER2_PW),
        Role::Officer,
        false,
    ));
    v.approve_request(&f.officer, &req).unwrap();
    v.login("officer2", &secret(OFFICER2_PW), Context::cli())
        .unwrap()
}

#[test]
fn no_one_changes_their_own_role() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    // A second admin, so that "last admin" is not what stops it.
    v.add_user(
        &f.admin,
        "admin2",
        &secret("Sec0nd-Admin-Heron-51"),
        Role::Admin,
        false,
    )
    .unwrap();
    for role in [Role::Officer, Role::Clerk, Role::Auditor] {
        let r = v.set_role(&f.admin, "admin", role);
        assert!(
            matches!(r, Err(Error::PermissionDenied(_))),
            "{role}: {r:?}"
        );
    }
    assert_eq!(role_of(&f, "admin").0, Role::Admin);
    // No request was made on the way (self-promotion is not approvable).
    assert!(v.pending_requests(&f.officer).unwrap().is_empty());
    let denied = events(&f, "user.role.officer");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].outcome, Outcome::Denied);
    assert_eq!(denied[0].actor, Some(f.admin.user()));
    // Someone else may change it.
    let admin2 = v
        .login("admin2", &secret("Sec0nd-Admin-Heron-51"), Context::cli())
        .unwrap();
    v.set_role(&admin2, "admin", Role::Auditor).unwrap();
    assert_eq!(role_as(&f, &admin2, "admin").0, Role::Auditor);
}

#[test]
fn the_last_active_admin_and_officer_cannot_be_disabled_or_demoted() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    // The only officer.
    let r = v.disable_user(&f.admin, "officer");
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    for role in [Role::Clerk, Role::Admin] {
        let r = v.set_role(&f.admin, "officer", role);
        assert!(
            matches!(r, Err(Error::PermissionDenied(_))),
            "{role}: {r:?}"
        );
    }
    assert_eq!(role_of(&f, "officer"), (Role::Officer, UserState::Active));
    assert!(v.has_active_officer());
    let denied: Vec<_> = events(&f, "user.disable")
        .into_iter()
        .filter(|e| e.outcome == Outcome::Denied)
        .collect();
    assert_eq!(denied.len(), 1, "audited as denied: {denied:?}");

    // With a second officer, one of them may go; then the other is the last.
    let _o2 = second_officer(&f);
    v.disable_user(&f.admin, "officer").unwrap();
    let r = v.disable_user(&f.admin, "officer2");
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    let r = v.set_role(&f.admin, "officer2", Role::Clerk);
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    assert_eq!(role_of(&f, "officer2"), (Role::Officer, UserState::Active));
    // A disabled officer does not count as the other one.
    v.enable_user(&f.admin, "officer").unwrap();
    v.set_role(&f.admin, "officer2", Role::Clerk).unwrap();
    let r = v.set_role(&f.admin, "officer", Role::Clerk);
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");

    // Admins: with two, one may demote or disable the other; the one left
    // is then the last, and cannot leave its role (nor disable itself).
    let pw = secret("Sec0nd-Admin-Heron-51");
    v.add_user(&f.admin, "admin2", &pw, Role::Admin, false)
        .unwrap();
    let admin2 = v.login("admin2", &pw, Context::cli()).unwrap();
    v.disable_user(&admin2, "admin").unwrap();
    assert!(matches!(
        v.set_role(&admin2, "admin2", Role::Clerk),
        Err(Error::PermissionDenied(_))
    ));
    assert!(v.disable_user(&admin2, "admin2").is_err());
    assert_eq!(role_of(&f, "admin2"), (Role::Admin, UserState::Active));
}

#[test]
fn officer_grant_needs_a_second_officers_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let req = pending(v.set_role(&f.admin, "clerk", Role::Officer));
    // Nothing changed yet.
    assert_eq!(role_of(&f, "clerk").0, Role::Clerk);
    let list = v.pending_requests(&f.admin).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, req);
    assert_eq!(list[0].kind, RequestKind::Role);
    assert_eq!(list[0].role, Role::Officer);
    assert_eq!(list[0].requester, f.admin.user());
    assert_eq!(list[0].expires_ms - list[0].created_ms, APPROVAL_TTL_MS);
    // The requester cannot approve their own request; nor can a non-officer.
    for s in [&f.admin, &f.clerk, &f.auditor] {
        let r = v.approve_request(s, &req);
        assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    }
    assert_eq!(role_of(&f, "clerk").0, Role::Clerk);
    // A different active officer approves: applied.
    v.approve_request(&f.officer, &req).unwrap();
    assert_eq!(role_of(&f, "clerk").0, Role::Officer);
    assert!(v.pending_requests(&f.admin).unwrap().is_empty());
    // The clerk's old session ends with the role change.
    assert!(v.whoami(&f.clerk).is_err());
    assert!(matches!(
        v.approve_request(&f.officer, &req),
        Err(Error::NotFound(_))
    ));
    // Audited: the request and its approval, by whom.
    let r = events(&f, "approval.request");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].actor, Some(f.admin.user()));
    assert!(r[0].targets.contains(&format!("request:{req}")));
    let a: Vec<_> = events(&f, "approval.approve");
    let ok: Vec<_> = a.iter().filter(|e| e.outcome == Outcome::Success).collect();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].actor, Some(f.officer.user()));
    assert!(a.iter().filter(|e| e.outcome == Outcome::Denied).count() >= 3);
}

#[test]
fn officer_password_reset_needs_approval_and_rejects_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let o2 = second_officer(&f);
    // An admin's reset of an officer's password waits; the requesting
    // admin cannot approve it.
    let req = pending(v.set_password(&f.admin, "officer", &secret("Reset-Bramble-Hollow-64")));
    assert!(matches!(
        v.approve_request(&f.admin, &req),
        Err(Error::PermissionDenied(_))
    ));
    // The old password still works until approval; the new one is nowhere in clear.
    v.login("officer", &password_of("officer"), Context::cli())
        .unwrap();
    assert!(common::files_containing(&f.dir, b"Reset-Bramble-Hollow-64").is_empty());
    v.reject_request(&o2, &req).unwrap();
    assert!(v.pending_requests(&o2).unwrap().is_empty());
    v.login("officer", &password_of("officer"), Context::cli())
        .unwrap();
    let rej = events(&f, "approval.reject");
    assert_eq!(rej.len(), 1);
    assert_eq!(rej[0].actor, Some(o2.user()));

    // Approved by the second officer: applied.
    let req = pending(v.set_password(&f.admin, "officer", &secret("Reset-Bramble-Hollow-64")));
    v.approve_request(&o2, &req).unwrap();
    assert!(matches!(
        v.login("officer", &password_of("officer"), Context::cli()),
        Err(Error::AuthFailed)
    ));
    v.login(
        "officer",
        &secret("Reset-Bramble-Hollow-64"),
        Context::cli(),
    )
    .unwrap();
}

#[test]
fn reveal_grant_and_new_officer_wait_for_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let pw = secret("Reveal-Clerk-Osprey-73");
    let req = pending(v.add_user(&f.admin, "rclerk", &pw, Role::Clerk, true));
    assert!(matches!(
        v.login("rclerk", &pw, Context::cli()),
        Err(Error::AuthFailed)
    ));
    assert!(common::files_containing(&f.dir, b"Reveal-Clerk-Osprey-73").is_empty());
    v.approve_request(&f.officer, &req).unwrap();
    v.login("rclerk", &pw, Context::cli()).unwrap();
    let u = v
        .list_users(&f.admin)
        .unwrap()
        .into_iter()
        .find(|u| u.username.as_str() == "rclerk")
        .unwrap();
    assert!(u.reveal_grant);
    // A plain clerk needs no approval.
    v.add_user(
        &f.admin,
        "pclerk",
        &secret("Plain-Clerk-Otter-19"),
        Role::Clerk,
        false,
    )
    .unwrap();
}

#[test]
fn bootstrap_first_officer_needs_no_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(vault_core::clock::ManualClock::new(common::T0));
    let (a, _, apw) = common::USERS[0];
    let v: Vault = common::create_vault(&tmp.path().join("v"), &clock, a, apw);
    let admin = common::login(&v, a);
    assert!(!v.has_active_officer());
    v.add_user(
        &admin,
        "first",
        &secret("Primary-Puffin-Tern-27"),
        Role::Officer,
        false,
    )
    .unwrap();
    assert!(v.has_active_officer());
    // The next one waits.
    pending(v.add_user(
        &admin,
        "second",
        &secret("Backup-Lynx-Marten-36"),
        Role::Officer,
        false,
    ));
}

#[test]
fn an_expired_request_cannot_be_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let req = pending(v.set_role(&f.admin, "auditor", Role::Officer));
    f.clock.advance(APPROVAL_TTL_MS);
    let r = v.approve_request(&f.officer, &req);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    assert_eq!(role_of(&f, "auditor").0, Role::Auditor);
    assert!(v.pending_requests(&f.admin).unwrap().is_empty());
    let failed: Vec<_> = events(&f, "approval.approve");
    assert_eq!(failed.len(), 1);
    assert_ne!(failed[0].outcome, Outcome::Success);
    v.reject_request(&f.officer, &req).unwrap();
}

#[test]
fn wrong_password_on_a_locked_account_is_a_plain_auth_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let wrong = secret("Not-The-Clerk-Password-9");
    for i in 0..5 {
        let r = v.login("clerk", &wrong, fresh_source());
        assert!(matches!(r, Err(Error::AuthFailed)), "failure {i}: {r:?}");
    }
    // Locked now: a wrong password still gets AuthFailed, as an unknown user does.
    for _ in 0..3 {
        let r = v.login("clerk", &wrong, fresh_source());
        assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    }
    let r = v.login("no-such-user", &wrong, fresh_source());
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    // Only the right password learns the lock.
    let r = v.login("clerk", &password_of("clerk"), fresh_source());
    assert!(matches!(r, Err(Error::AccountLocked { .. })), "{r:?}");
    // The attempts on the locked account stay audited as denied.
    let denied = events(&f, "auth.login")
        .into_iter()
        .filter(|e| e.outcome == Outcome::Denied && e.code.as_deref() == Some("account_locked"))
        .count();
    assert_eq!(denied, 4);
    assert_eq!(events(&f, "auth.lockout").len(), 1);
}

#[test]
fn changing_your_own_password_needs_the_current_one() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let new = secret("Brand-New-Fennel-Pass-41");
    // The admin-reset path refuses your own account.
    let r = v.set_password(&f.clerk, "clerk", &new);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let r = v.set_password(&f.admin, "admin", &new);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    // A wrong current password fails and changes nothing.
    let r = v.change_own_password(&f.clerk, &secret("Wrong-Current-Pass-00"), &new);
    assert!(matches!(r, Err(Error::AuthFailed)), "{r:?}");
    v.login("clerk", &password_of("clerk"), fresh_source())
        .unwrap();
    assert!(matches!(
        v.login("clerk", &new, fresh_source()),
        Err(Error::AuthFailed)
    ));
    let failed: Vec<_> = events(&f, "user.password")
        .into_iter()
        .filter(|e| e.code.as_deref() == Some("auth_failed"))
        .collect();
    assert_eq!(failed.len(), 1);
    // The right one works; the new password logs in, the old no longer.
    v.change_own_password(&f.clerk, &password_of("clerk"), &new)
        .unwrap();
    v.login("clerk", &new, fresh_source()).unwrap();
    assert!(matches!(
        v.login("clerk", &password_of("clerk"), fresh_source()),
        Err(Error::AuthFailed)
    ));
    // An admin still resets someone else's (non-officer) password directly.
    v.set_password(&f.admin, "auditor", &secret("Reset-Plover-Pass-23"))
        .unwrap();
    v.login("auditor", &secret("Reset-Plover-Pass-23"), fresh_source())
        .unwrap();
    let _ = f.clock.now_ms();
}

/// Free text that goes into signed certificates and the audit trail (party
/// names, titles, reasons) is bounded and carries no control or
/// bidirectional formatting character: a right-to-left override could make
/// a certificate kept for years read differently from what was signed.
#[test]
fn control_and_bidi_characters_never_reach_a_certificate_or_the_trail() {
    use vault_core::ids::SubjectId;
    use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let id = fx
        .vault
        .put_record(
            &fx.clerk,
            common::CUSTOMERS,
            SubjectId::new(),
            &serde_json::json!({ "given_name": "Text", "family_name": "Checks" }),
        )
        .unwrap();
    let dispose = |owner: &str, reference: Option<&str>| {
        fx.vault.dispose(
            &fx.officer,
            &DisposalRequest {
                scope: DisposalScope::Record(id),
                parties: DisposalParties {
                    data_owner: owner.into(),
                    contract_reference: reference.map(str::to_owned),
                    contractor_certification: None,
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
    };
    for (owner, reference) in [
        ("Example Retail \u{202E}CLL", None),
        ("Example Retail LLC", Some("PO 77\nVOID")),
        ("Example\u{2066} Retail", None),
    ] {
        match dispose(owner, reference) {
            Err(vault_core::Error::InvalidInput(m)) => {
                assert!(!m.contains("Retail") && !m.contains("VOID"), "{m}")
            }
            other => panic!("{owner:?} / {reference:?}: {other:?}"),
        }
    }
    let long = "x".repeat(201);
    assert!(matches!(
        dispose(&long, None),
        Err(vault_core::Error::InvalidInput(_))
    ));
    for reason in ["audit \u{202E}review", "line\nbreak"] {
        assert!(matches!(
            fx.vault
                .get_record(&fx.officer, id, &["family_name"], Some(reason)),
            Err(vault_core::Error::InvalidInput(_)) | Err(vault_core::Error::PermissionDenied(_))
        ));
        assert!(matches!(
            fx.vault.add_hold(&fx.officer, Some(id), None, reason),
            Err(vault_core::Error::InvalidInput(_))
        ));
    }
    // Control: plain text disposes and the certificate carries it as given.
    let out = dispose("Example Retail LLC", Some("PO 77")).unwrap();
    let c = fx
        .vault
        .certificate(&fx.officer, out.certificate_id.unwrap())
        .unwrap();
    assert_eq!(
        c.body["parties"]["data_owner"]["name"],
        "Example Retail LLC"
    );
}

/// The reveal grant of an existing clerk (issue 11): given only once a
/// second officer approves, taken away at once, and only clerks have one.
#[test]
fn an_existing_clerks_reveal_grant_waits_for_a_second_officer_and_revoking_is_immediate() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let record = v
        .put_record(
            &f.clerk,
            common::CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &serde_json::json!({ "given_name": "Ada", "family_name": "Quimby", "ssn": "219-09-9998" }),
        )
        .unwrap();
    let reveal = |s: &Session| v.get_record(s, record, &["ssn"], Some("identity check"));
    assert!(matches!(reveal(&f.clerk), Err(Error::PermissionDenied(_))));
    // The admin asks; the grant waits. The requester cannot approve it.
    let req = pending(v.set_reveal_grant(&f.admin, "clerk", true));
    assert!(matches!(reveal(&f.clerk), Err(Error::PermissionDenied(_))));
    let listed = v.pending_requests(&f.officer).unwrap();
    assert!(
        listed
            .iter()
            .any(|p| p.id == req && p.kind == RequestKind::RevealGrant)
    );
    // An officer asking cannot approve their own request either.
    let officer2 = second_officer(&f);
    let own = pending(v.set_reveal_grant(&officer2, "clerk", true));
    assert!(matches!(
        v.approve_request(&officer2, &own),
        Err(Error::PermissionDenied(_))
    ));
    v.reject_request(&officer2, &own).unwrap();
    v.approve_request(&f.officer, &req).unwrap();
    let clerk = v
        .login("clerk", &password_of("clerk"), Context::cli())
        .unwrap();
    assert_eq!(reveal(&clerk).unwrap().fields["ssn"], "219-09-9998");
    // Taking it away needs no approval and holds at the next request.
    v.set_reveal_grant(&officer2, "clerk", false).unwrap();
    let clerk = v
        .login("clerk", &password_of("clerk"), Context::cli())
        .unwrap();
    assert!(matches!(reveal(&clerk), Err(Error::PermissionDenied(_))));
    // Not for officers, not for a clerk's own request, audited both ways.
    assert!(matches!(
        v.set_reveal_grant(&f.admin, "officer", true),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        v.set_reveal_grant(&clerk, "clerk", true),
        Err(Error::PermissionDenied(_))
    ));
    assert_eq!(
        events(&f, "user.reveal.revoke")
            .iter()
            .filter(|e| e.outcome == Outcome::Success)
            .count(),
        1
    );
}

/// Someone with the vault's files but not its passphrase edits the records
/// database while the vault is closed (RocksDB opened directly):
/// - a copy of the admin's session row under the SHA-256 of a token they
///   chose (before row MACs: a login as the admin, no password needed): the
///   vault opens, the planted token signs nobody in, the genuine one works;
/// - the clerk's user row rewritten to say `admin`: the vault refuses to
///   open (it reads every user row at open), naming the cause;
/// - with the row put back, the row-seal mark deleted (so that a reopen
///   would seal whatever was planted): the vault refuses to open.
#[test]
fn rows_planted_or_rewritten_in_the_records_database_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = fast_vault(&dir.path().join("vault"));
    let token = f.vault.issue_token(&f.admin, 3_600_000).expect("token");
    let (vault_dir, clock) = (f.dir.clone(), f.clock.clone());
    let (admin_id, clerk_id) = (f.admin.user(), f.clerk.user());
    f.vault.close().expect("close");

    let with_db = |edit: &dyn Fn(&rocksdb::DB)| edit_records(&vault_dir, edit);
    let open = || {
        Vault::open(
            &vault_dir,
            &secret(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    let chosen = "pv_chosen-by-the-insider-0123456789";
    with_db(&|db| {
        use sha2::Digest as _;
        let sessions = db.cf_handle("sessions").expect("sessions");
        let own = sha2::Sha256::digest(token.expose().as_bytes());
        let row = db
            .get_cf(&sessions, own)
            .unwrap()
            .expect("the admin's session row");
        let planted = sha2::Sha256::digest(chosen.as_bytes());
        db.put_cf(&sessions, planted, row).unwrap();
    });
    let vault = open().expect("opens with a planted session row");
    let planted = vault.session_from_token(&secret(chosen), fresh_source());
    assert!(
        matches!(planted, Err(Error::Integrity(_))),
        "a session row planted under a chosen token signs someone in: {:?}",
        planted.map(|s| s.user())
    );
    let genuine = vault
        .session_from_token(&token, fresh_source())
        .expect("the genuine token still works");
    assert_eq!(genuine.user(), admin_id);
    vault.close().expect("close");

    let original = std::cell::RefCell::new(Vec::new());
    with_db(&|db| {
        let users = db.cf_handle("users").expect("users");
        let row = db
            .get_cf(&users, clerk_id.as_bytes())
            .unwrap()
            .expect("clerk row");
        let text = String::from_utf8_lossy(&row).replace("\"clerk\"", "\"admin\"");
        assert_ne!(text.as_bytes(), &row[..], "the role is in the row");
        db.put_cf(&users, clerk_id.as_bytes(), text.as_bytes())
            .unwrap();
        *original.borrow_mut() = row;
    });
    let rewritten = open();
    assert!(
        matches!(&rewritten, Err(Error::Integrity(m)) if m.contains("user or session row")),
        "a rewritten user row is refused, not obeyed: {:?}",
        rewritten.as_ref().err()
    );

    with_db(&|db| {
        let users = db.cf_handle("users").expect("users");
        db.put_cf(&users, clerk_id.as_bytes(), &*original.borrow())
            .unwrap();
        let meta = db.cf_handle("meta").expect("meta");
        db.delete_cf(&meta, b"rows_sealed_v1").unwrap();
    });
    let unmarked = open();
    assert!(
        matches!(&unmarked, Err(Error::Integrity(m)) if m.contains("row-seal mark")),
        "a vault whose row-seal mark was removed does not open: {:?}",
        unmarked.as_ref().err()
    );
}

/// The header says where the keystore and the records are (its placement
/// flags, bound into the root key's AAD): an insider who drops a
/// `records.json` or a `keystore.json` into an embedded vault's directory,
/// to point it at a database of their choosing, is refused at open, before
/// any connection is tried; the file removed, the vault opens with its
/// records. (Deleting a cluster vault's file: `records_cluster.rs`.)
#[test]
fn a_cluster_file_planted_beside_an_embedded_vault_is_refused_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let f = common::fast_vault_with(&dir, None, None);
    let jane =
        serde_json::json!({"given_name": "Jane", "family_name": "Doe", "ssn": "123-45-6789"});
    let id = f
        .vault
        .put_record(
            &f.clerk,
            common::CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &jane,
        )
        .unwrap();
    let clock = f.clock.clone();
    f.vault.close().unwrap();
    // A well-formed cluster file, naming a port where nothing listens: an
    // open that tried it would fail with a storage error, not this one.
    let planted = serde_json::json!({
        "engine": "postgresql",
        "members": ["127.0.0.1:9"],
        "database": "pivault_records",
        "user": "insider",
        "password_file": tmp.path().join("pw"),
    });
    for file in ["records.json", "keystore.json"] {
        let p = dir.join(file);
        std::fs::write(&p, serde_json::to_vec(&planted).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let opened = Vault::open(
            &dir,
            &SecretString::from(common::PASSPHRASE),
            common::open_options(&clock),
        );
        match opened {
            Err(Error::Integrity(what)) => {
                assert!(what.contains(file), "{file}: {what}")
            }
            other => panic!("{file} planted: {:?}", other.map(|_| "opened")),
        }
        std::fs::remove_file(&p).unwrap();
    }
    let v = common::open_vault(&dir, &clock);
    let clerk = common::login(&v, "clerk");
    let r = v.get_record(&clerk, id, &[], None).unwrap();
    assert_eq!(r.fields["family_name"], "Doe");
    v.close().unwrap();
}

/// Runs `edit` on the records database of the (closed) vault in `dir`,
/// opened with RocksDB directly, as someone with the files would.
fn edit_records(dir: &std::path::Path, edit: &dyn Fn(&rocksdb::DB)) {
    let path = dir.join("records");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("open db");
    edit(&db);
    db.flush().expect("flush");
}

/// A copy of the (closed) vault directory `dir` at `to`.
fn copy_of(dir: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(to)
        .status()
        .expect("cp");
    assert!(copied.success(), "the vault's copy");
    to.to_path_buf()
}

/// Someone with the vault's files but not its key, with the vault stopped,
/// edits the records database with RocksDB: a row MAC stops a forged or
/// edited row, and the state digest (the count and XOR of every sealed
/// configuration row's MAC, kept with them in each batch) and the trail's
/// `state:<n>` targets stop a deleted row and an older genuine copy:
/// - a legal hold's row deleted (a disposal would go ahead): the open
///   refuses, the rows no longer add up to the digest;
/// - the hold's row edited: the open refuses, the row fails its MAC;
/// - a disabled clerk's row put back from a copy taken before the disable
///   (a terminated employee let back in): the rows no longer add up;
/// - the same with the digest's row put back too, so that they do: the
///   trail names a later generation than the digest's, and the open
///   refuses; also with the records database's copy of the last
///   checkpoint deleted; with the trail's events edited to name no later
///   generation too, its chain breaks: the vault opens, as it does
///   whenever its trail was tampered with, and `doctor` fails;
/// - a hold placed, the process killed, the hold's row deleted and the
///   digest from before it put back: refused;
/// - with every row as the vault left it, it opens and the clerk stays
///   disabled;
/// - the second row-seal mark deleted: the open refuses (sealing again
///   would bless whatever was planted); also with the digest deleted, a
///   hold forged without a MAC, and the sealing's event edited out of the
///   trail (its chain breaks, its generations show the digest began).
#[test]
fn configuration_rows_deleted_edited_or_put_back_from_an_older_copy_stop_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let f = fast_vault(&dir.path().join("vault"));
    let held = vault_core::ids::SubjectId::new();
    f.vault
        .add_hold(&f.officer, None, Some(held), "litigation")
        .expect("hold");
    let (vault_dir, clock) = (f.dir.clone(), f.clock.clone());
    let clerk_id = f.clerk.user();
    f.vault.close().expect("close");

    let with_db = |edit: &dyn Fn(&rocksdb::DB)| edit_records(&vault_dir, edit);
    // (column family, key) -> value, as stored now.
    let read = |cf: &'static str, key: &[u8]| {
        let out = std::cell::RefCell::new(Vec::new());
        with_db(&|db| {
            let h = db.cf_handle(cf).expect("column family");
            *out.borrow_mut() = db.get_cf(&h, key).unwrap().expect("row");
        });
        out.into_inner()
    };
    let write = |cf: &'static str, key: &[u8], value: Option<&[u8]>| {
        with_db(&|db| {
            let h = db.cf_handle(cf).expect("column family");
            match value {
                Some(v) => db.put_cf(&h, key, v).unwrap(),
                None => db.delete_cf(&h, key).unwrap(),
            }
        })
    };
    let open = || {
        Vault::open(
            &vault_dir,
            &secret(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    let refused = |r: Result<Vault, Error>, why: &str, what: &str| match r {
        Err(Error::Integrity(m)) => assert!(m.contains(why), "{what}: {m}"),
        Err(e) => panic!("{what}: refused for another reason: {e}"),
        Ok(_) => panic!("{what}: the vault opened"),
    };
    const DIGEST: &[u8] = b"sealed/state-digest";

    let hold_key = {
        let k = std::cell::RefCell::new(Vec::new());
        with_db(&|db| {
            let h = db.cf_handle("holds").expect("holds");
            let mut it = db.iterator_cf(&h, rocksdb::IteratorMode::Start);
            *k.borrow_mut() = it.next().expect("the hold's row").unwrap().0.to_vec();
        });
        k.into_inner()
    };
    let hold_row = read("holds", &hold_key);
    write("holds", &hold_key, None);
    refused(open(), "no longer adds up", "a deleted hold row");

    let mut edited = hold_row.clone();
    let at = edited.len() / 2;
    edited[at] ^= 1;
    write("holds", &hold_key, Some(&edited));
    refused(open(), "fails its MAC", "an edited hold row");
    write("holds", &hold_key, Some(&hold_row));

    let (clerk_before, digest_before) = (read("users", clerk_id.as_bytes()), read("meta", DIGEST));
    let v = open().expect("opens with every row as it was");
    let admin = common::login(&v, "admin");
    v.disable_user(&admin, "clerk").expect("the clerk leaves");
    v.close().expect("close");
    let (clerk_after, digest_after) = (read("users", clerk_id.as_bytes()), read("meta", DIGEST));

    write("users", clerk_id.as_bytes(), Some(&clerk_before));
    refused(
        open(),
        "no longer adds up",
        "the clerk's enabled row put back",
    );
    write("meta", DIGEST, Some(&digest_before));
    refused(
        open(),
        "put back to an older state",
        "the clerk's enabled row and the digest's row put back together",
    );
    // The records database's copy of the last checkpoint deleted too, so
    // that the open would take the trail's head for checked (it moves the
    // digest's trail position only once the digest is checked).
    const ANCHOR: &[u8] = b"audit-checkpoint";
    let anchor = read("meta", ANCHOR);
    write("meta", ANCHOR, None);
    refused(
        open(),
        "put back to an older state",
        "the rows put back and the checkpoint's copy deleted",
    );
    write("meta", ANCHOR, Some(&anchor));
    // The events after the digest's checkpoint edited in the trail so that
    // they name no later generation (in a copy of the vault, which then
    // opens): the chain
    // from the digest's checkpoint breaks, and `doctor` says so, as it
    // does for any tampering of the trail.
    let copy = copy_of(&vault_dir, &dir.path().join("copy"));
    let segment = std::fs::read_dir(copy.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"user.disable\"")))
        .expect("the segment of the disable");
    let trail = std::fs::read_to_string(&segment).unwrap();
    // Every generation the events name, put down to 0.
    let mut parts = trail.split("state:");
    let mut edited = parts.next().unwrap().to_owned();
    for rest in parts {
        edited.push_str("state:0");
        edited.push_str(rest.trim_start_matches(|c: char| c.is_ascii_digit()));
    }
    assert_ne!(edited, trail, "the events name generations");
    std::fs::write(&segment, &edited).unwrap();
    let v = Vault::open(
        &copy,
        &secret(common::PASSPHRASE),
        common::open_options(&clock),
    )
    .expect("a vault whose trail was tampered with opens, as before");
    let checks = vault_core::doctor::checks(&v, clock.now_ms()).expect("doctor");
    let sealed = checks
        .iter()
        .find(|c| c.name == "sealed-rows")
        .expect("sealed-rows");
    assert_eq!(
        sealed.level,
        vault_core::doctor::Level::Fail,
        "{}",
        sealed.detail
    );
    assert!(sealed.detail.contains("altered"), "{}", sealed.detail);
    v.close().expect("close");

    write("users", clerk_id.as_bytes(), Some(&clerk_after));
    write("meta", DIGEST, Some(&digest_after));
    // A change, then the process killed (no close, no checkpoint), then
    // the change's row deleted and the digest from before it put back:
    // the open after the crash signs the trail's tail, which names the
    // change, and refuses.
    let digest_before_crash = read("meta", DIGEST);
    let v = open().expect("opens with the rows as the vault left them");
    let officer = common::login(&v, "officer");
    v.add_hold(
        &officer,
        None,
        Some(vault_core::ids::SubjectId::new()),
        "audit",
    )
    .expect("a second hold");
    v.abandon();
    let second_hold = {
        let k = std::cell::RefCell::new(Vec::new());
        with_db(&|db| {
            let h = db.cf_handle("holds").expect("holds");
            *k.borrow_mut() = db
                .iterator_cf(&h, rocksdb::IteratorMode::Start)
                .map(|r| r.unwrap().0.to_vec())
                .find(|k| k != &hold_key)
                .expect("the second hold's row");
        });
        k.into_inner()
    };
    let (second_row, digest_after_crash) = (read("holds", &second_hold), read("meta", DIGEST));
    write("holds", &second_hold, None);
    write("meta", DIGEST, Some(&digest_before_crash));
    refused(
        open(),
        "put back to an older state",
        "a hold placed before a crash deleted with the digest put back",
    );
    write("holds", &second_hold, Some(&second_row));
    write("meta", DIGEST, Some(&digest_after_crash));
    let v = open().expect("opens with the rows as the vault left them");
    assert!(
        matches!(
            v.login("clerk", &password_of("clerk"), Context::cli()),
            Err(Error::AccountDisabled)
        ),
        "the disabled clerk stays disabled"
    );
    v.close().expect("close");

    write("meta", b"rows_sealed_v2", None);
    refused(open(), "row-seal mark", "the second row-seal mark deleted");
    write("meta", b"rows_sealed_v2", Some(b"1"));

    // Sealing again, to bless a forged row: the hold's row rewritten
    // without a MAC, the mark and the digest deleted, and the sealing's
    // event in the trail edited so that it no longer says it sealed (in a
    // copy): the trail's chain breaks, and its generations show that the
    // digest began, so the open refuses to seal again.
    let copy = copy_of(&vault_dir, &dir.path().join("copy2"));
    edit_records(&copy, &|db| {
        let holds = db.cf_handle("holds").unwrap();
        let row = db.get_cf(&holds, &hold_key).unwrap().expect("the hold");
        let forged =
            String::from_utf8_lossy(&row[..row.len() - 32]).replace("litigation", "lifted");
        db.put_cf(&holds, &hold_key, forged.as_bytes()).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(&meta, b"rows_sealed_v2").unwrap();
        db.delete_cf(&meta, DIGEST).unwrap();
    });
    for entry in std::fs::read_dir(copy.join("audit")).unwrap() {
        let p = entry.unwrap().path();
        if let Ok(t) = std::fs::read_to_string(&p)
            && t.contains("seal:v2")
        {
            std::fs::write(&p, t.replace("seal:v2", "seal:v0")).unwrap();
        }
    }
    let resealed = Vault::open(
        &copy,
        &secret(common::PASSPHRASE),
        common::open_options(&clock),
    );
    assert!(
        matches!(&resealed, Err(Error::Integrity(m)) if m.contains("row-seal mark")),
        "the vault sealed a forged hold again: {:?}",
        resealed.as_ref().err()
    );
}

/// The last line of `file`, without its newline.
fn last_line(file: &std::path::Path) -> Vec<u8> {
    common::lines(file).pop().expect("a line").into_bytes()
}

/// Appends `line` and a newline to `file`, as someone with the files would.
fn append_line(file: &std::path::Path, line: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
    std::io::Write::write_all(&mut f, &[line, b"\n"].concat()).unwrap();
}

/// Appends to the trail of the vault in `dir` a forged reveal of `record`
/// by `actor`, chained to its last event: answers the forged line and its
/// seq.
fn forge_reveal(
    dir: &std::path::Path,
    actor: vault_core::ids::UserId,
    record: vault_core::ids::RecordId,
) -> (Vec<u8>, u64) {
    let segment = common::segments(dir).pop().expect("a segment");
    let (line, seq) = common::forged_reveal(&last_line(&segment), actor, record);
    append_line(&segment, &line);
    (line, seq)
}

/// The seqs of the checkpoints in the audit directory `audit`.
fn checkpoint_seqs(audit: &std::path::Path) -> Vec<u64> {
    common::lines(&audit.join("checkpoints.log"))
        .iter()
        .map(|l| {
            vault_core::audit::SignedHead::from_line(l.as_bytes())
                .expect("a checkpoint")
                .seq
        })
        .collect()
}

/// Someone with the vault's files but not its key appends a well-formed
/// event to the trail: the clerk revealing a customer's SSN, which she
/// never did. Its chain hash links, so the chain and every checkpoint
/// verify, and once the vault signed a checkpoint over it nothing would
/// tell it from her own. So:
/// - a vault closed cleanly disowns nothing at its next open; one killed
///   disowns its own events after its last checkpoint, and no earlier one;
/// - appended to the stopped vault: the open disowns it
///   (`audit.unvouched`) before it signs, and `audit verify`, `doctor`,
///   the activity report and the offline verifier name it;
/// - appended under the running vault: its next event is refused (the
///   chain would fork there), and the reopen disowns the line;
/// - an export verified with the public key alone names both;
/// - no checkpoint lies between a forged event and its disowning;
/// - a checkpoint line added after a forged event (no key of the vault's
///   signs it) refuses the open.
#[test]
fn an_event_appended_to_the_trail_by_someone_without_the_key_is_disowned_before_the_vault_signs_it()
{
    use vault_core::doctor::Level;
    let dir = tempfile::tempdir().unwrap();
    let f = fast_vault(&dir.path().join("vault"));
    let id = a_record(&f, "Doe");
    let f = f.reopen();
    assert!(
        common::events(&f, vault_core::audit::UNVOUCHED_ACTION).is_empty(),
        "a clean close and open disowned events"
    );
    let (vault_dir, clerk, key) = (f.dir.clone(), f.clerk.user(), f.vault.audit_public_key());
    let audit = vault_dir.join("audit");

    // Killed: its own events after its last checkpoint are disowned, and
    // none its close's checkpoint covered.
    let created = common::events(&f, "record.create")[0].seq;
    f.vault
        .get_record(&f.clerk, id, &[], None)
        .expect("the clerk reads");
    let read = common::events(&f, "record.read").last().expect("read").seq;
    let f = f.reopen_after_crash(|| {});
    assert!(
        common::disowned(&f, read).is_some(),
        "the killed vault's last read is not disowned"
    );
    assert!(
        common::disowned(&f, created).is_none(),
        "an event a checkpoint covered is disowned"
    );
    // The insider's line, chained to the trail's last, appended once
    // the running vault signed a checkpoint at its head and stopped.
    f.vault.checkpoint_now().expect("checkpoint");
    let mut forged = 0;
    let f = f.reopen_after_crash(|| {
        forged = forge_reveal(&vault_dir, clerk, id).1;
        let before = vault_core::audit::verify(&audit, &key).unwrap();
        assert!(
            before.ok() && before.events == forged,
            "the forged line does not verify as an event: {before:?}"
        );
    });
    let reveal = common::events(&f, "record.reveal");
    assert_eq!(
        reveal.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![forged],
        "the forged reveal is in the trail"
    );
    assert_eq!(
        common::disowned(&f, forged),
        Some(vec![format!("events:{forged}-{forged}")]),
        "the forged reveal is not disowned"
    );
    let report = f.vault.audit_verify(&f.auditor).expect("verify");
    assert!(report.ok(), "{report:?}");
    assert!(
        report
            .unvouched
            .iter()
            .any(|u| u.from == forged && u.to == forged && u.named_by == forged + 1),
        "audit verify does not name it: {report:?}"
    );
    let (level, detail) = common::doctor_check(&f, "audit-trail");
    assert_eq!(level, Level::Warn, "{detail}");
    // The per-user activity report counts the reveal against the clerk,
    // and says the vault does not vouch for it.
    let clerk_activity = f
        .vault
        .activity_report(&f.officer, 0, i64::MAX)
        .expect("report")
        .into_iter()
        .find(|a| a.user == clerk)
        .expect("the clerk's line");
    assert_eq!(clerk_activity.reveals, 1, "{clerk_activity:?}");
    assert!(clerk_activity.unvouched >= 1, "{clerk_activity:?}");
    assert!(
        detail.contains(&format!("seq {forged}-{forged}")),
        "{detail}"
    );
    // Under the running vault: its next event meets a segment it did not
    // end and is refused (the chain would fork there); opened again, the
    // vault disowns the line and the trail verifies.
    let (_, under) = forge_reveal(&vault_dir, clerk, id);
    match f.vault.get_record(&f.clerk, id, &[], None) {
        Err(Error::AuditUnavailable(_)) => {}
        other => panic!("a read audited after a line the vault did not write: {other:?}"),
    }
    let f = f.reopen_after_crash(|| {});
    assert!(
        common::disowned(&f, under).is_some(),
        "the line appended under the running vault is not disowned"
    );
    f.vault
        .get_record(&f.clerk, id, &[], None)
        .expect("the clerk reads again");
    // A log system's copy (an export verified with the public key alone)
    // says so too.
    let export = f
        .vault
        .audit_export(&f.officer, vault_core::vault::ExportStart::default())
        .expect("export")
        .render(vault_core::siem::Format::Jsonl, "vault-host");
    let file = vault_core::siem::verify_file(&export, &key);
    assert!(file.ok(), "{file:?}");
    for seq in [forged, under] {
        assert!(
            file.unvouched.iter().any(|u| u.from <= seq && seq <= u.to),
            "the export's verification does not name {seq}: {file:?}"
        );
    }
    assert!(
        file.proves()
            .contains(&format!("does not vouch for events {forged}..{forged}")),
        "{}",
        file.proves()
    );

    // Signed over now, with the vault's word before it: no checkpoint
    // between a forged event and its disowning.
    f.vault.close().expect("close");
    let after = vault_core::audit::verify(&audit, &key).unwrap();
    assert!(after.ok() && after.last_checkpoint_seq > under, "{after:?}");
    for seq in [forged, under] {
        assert!(
            after.unvouched.iter().any(|u| u.from <= seq && seq <= u.to),
            "the offline verifier does not name {seq}: {after:?}"
        );
        assert!(
            !checkpoint_seqs(&audit).contains(&seq),
            "a checkpoint signed over the forged event {seq} before its disowning"
        );
    }

    // With a checkpoint line added after a forged event (no key of the
    // vault's signs it), the vault would find nothing to disown: the open
    // refuses.
    let copy = copy_of(&vault_dir, &dir.path().join("copy"));
    let copy_audit = copy.join("audit");
    let (line, _) = forge_reveal(&copy, clerk, id);
    let cps = copy_audit.join("checkpoints.log");
    append_line(&cps, &common::forged_checkpoint(&last_line(&cps), &line));
    let clock = std::sync::Arc::new(vault_core::clock::ManualClock::new(common::T0));
    match Vault::open(
        &copy,
        &secret(common::PASSPHRASE),
        common::open_options(&clock),
    ) {
        Err(Error::Integrity(m)) => assert!(m.contains("not signed"), "{m}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the vault opened on a checkpoint it did not sign"),
    }
}

/// Puts another file in place of the last segment of the vault's trail in
/// `dir`, as someone holding the files would: `copy` (the segment's bytes
/// as they read them, cut after its last complete line) and `forged`
/// reveals of `record` by `actor` chained to its last line, renamed over
/// the segment. Answers the first forged seq.
fn replace_segment(
    dir: &std::path::Path,
    copy: &[u8],
    forged: usize,
    actor: vault_core::ids::UserId,
    record: vault_core::ids::RecordId,
) -> u64 {
    let segment = common::segments(dir).pop().expect("a segment");
    let mut bytes = copy[..copy.iter().rposition(|b| *b == b'\n').expect("a line") + 1].to_vec();
    let mut first = None;
    for _ in 0..forged {
        let last = bytes[..bytes.len() - 1]
            .split(|b| *b == b'\n')
            .next_back()
            .expect("a line")
            .to_vec();
        let (line, seq) = common::forged_reveal(&last, actor, record);
        first.get_or_insert(seq);
        bytes.extend_from_slice(&line);
        bytes.push(b'\n');
    }
    let tmp = segment.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &segment).unwrap();
    first.expect("a forged line")
}

/// Someone holding the trail's files puts another file in place of the
/// running vault's segment: a copy of it, renamed over it, with a forged
/// reveal at its end. The vault's handle still writes the old file, which
/// no one reads, so its events would vanish unseen, and the forged line
/// would be left for it to sign. It checks the segment's path before each
/// line:
/// - a read after the rename is refused, and every read of four clerks
///   reading at once that starts after it;
/// - with nothing of the vault's lost, the next open disowns the forged
///   line and every read it acknowledged is in the trail;
/// - with a read it acknowledged between the copy and the rename (written
///   to the old file), the next open refuses, whether a forged line took
///   the read's seq or more follow it: before refusing, the vault signed
///   its own head, which the trail no longer has.
#[test]
fn a_segment_replaced_under_the_running_vault_takes_no_event_away_unseen() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = |name: &str| {
        let f = fast_vault(&tmp.path().join(name));
        let id = f
            .vault
            .put_record(
                &f.clerk,
                common::CUSTOMERS,
                vault_core::ids::SubjectId::new(),
                &serde_json::json!({"given_name": "Ann", "family_name": "Doe", "ssn": "212-34-5678"}),
            )
            .expect("put");
        (f, id)
    };
    let reads = |f: &Fixture| common::events(f, "record.read").len();
    let segment_bytes =
        |dir: &std::path::Path| std::fs::read(common::segments(dir).pop().unwrap()).unwrap();

    // Nothing of the vault's lost: refused after the rename, then disowned.
    let (f, id) = fixture("whole");
    for _ in 0..2 {
        f.vault.get_record(&f.clerk, id, &[], None).expect("read");
    }
    let forged = replace_segment(&f.dir, &segment_bytes(&f.dir), 1, f.clerk.user(), id);
    match f.vault.get_record(&f.clerk, id, &[], None) {
        Err(Error::AuditUnavailable(m)) => assert!(m.contains("another file"), "{m}"),
        other => panic!("a read audited into a segment no one reads: {other:?}"),
    }
    let f = f.reopen_after_crash(|| {});
    assert_eq!(
        common::disowned(&f, forged),
        Some(vec![format!("events:{forged}-{forged}")]),
        "the forged line is not disowned"
    );
    assert_eq!(reads(&f), 2, "an acknowledged read is missing");
    f.vault
        .get_record(&f.clerk, id, &[], None)
        .expect("the clerk reads again");

    // A read acknowledged between the copy and the rename: the open
    // refuses, whether a forged line takes the read's seq or more follow.
    for forged in [1, 3] {
        let (f, id) = fixture(&format!("lost-{forged}"));
        let copy = segment_bytes(&f.dir);
        f.vault
            .get_record(&f.clerk, id, &[], None)
            .expect("a read after the copy");
        replace_segment(&f.dir, &copy, forged, f.clerk.user(), id);
        assert!(matches!(
            f.vault.get_record(&f.clerk, id, &[], None),
            Err(Error::AuditUnavailable(_))
        ));
        match f.try_reopen_after_crash() {
            Err(Error::Integrity(m)) => assert!(m.contains("audit trail"), "{m}"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!(
                "the vault opened on a trail that lost a read it acknowledged ({forged} forged)"
            ),
        }
    }

    // Four clerks reading at once while the segment is replaced.
    let (f, id) = fixture("racing");
    let before = reads(&f);
    let renamed = std::sync::OnceLock::<std::time::Instant>::new();
    let (acknowledged, forged): (usize, u64) = std::thread::scope(|s| {
        let clerks: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut acknowledged = 0;
                    loop {
                        let started = std::time::Instant::now();
                        match f.vault.get_record(&f.clerk, id, &[], None) {
                            Ok(_) => {
                                assert!(
                                    renamed.get().is_none_or(|r| started < *r),
                                    "a read that started after the rename was acknowledged"
                                );
                                acknowledged += 1;
                            }
                            Err(Error::AuditUnavailable(_)) => return acknowledged,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let forged = replace_segment(&f.dir, &segment_bytes(&f.dir), 1, f.clerk.user(), id);
        renamed.set(std::time::Instant::now()).unwrap();
        let acknowledged = clerks.into_iter().map(|c| c.join().unwrap()).sum();
        (acknowledged, forged)
    });
    assert!(acknowledged > 0, "the clerks read before the rename");
    let in_files = common::segments(&f.dir)
        .iter()
        .flat_map(|s| common::lines(s))
        .filter(|l| l.contains("\"record.read\""))
        .count();
    match f.try_reopen_after_crash() {
        Ok(f) => {
            assert_eq!(
                reads(&f),
                before + acknowledged,
                "an acknowledged read is missing"
            );
            assert!(
                common::disowned(&f, forged).is_some(),
                "the forged line is not disowned"
            );
        }
        Err(Error::Integrity(_)) => assert!(
            in_files < before + acknowledged,
            "the open refused though every acknowledged read is in the trail"
        ),
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

/// A vault with one record, and a copy of its wrapped data key that an
/// insider keeps in `keystore/<name>`; the request that disposes of the
/// record.
struct KeyCopy {
    fx: Fixture,
    wrapped: Vec<u8>,
    copy: std::path::PathBuf,
    req: vault_core::vault::DisposalRequest,
}

fn a_key_copy_aside(tmp: &std::path::Path, name: &std::ffi::OsStr) -> KeyCopy {
    use vault_core::ids::SubjectId;
    use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
    let fx = fast_vault(&tmp.join("vault"));
    let body =
        serde_json::json!({ "given_name": "Ann", "family_name": "Aside", "ssn": "123-45-6789" });
    let sub = SubjectId::new();
    let id = fx
        .vault
        .put_record(&fx.clerk, common::CUSTOMERS, sub, &body)
        .unwrap();
    let wrapped = fx
        .vault
        .keystore()
        .wrapped_dek(sub, id, 1)
        .unwrap()
        .unwrap();
    let copy = fx.dir.join("keystore").join(name);
    std::fs::write(&copy, [&b"aside"[..], &wrapped, b"kept"].concat()).unwrap();
    let req = DisposalRequest {
        scope: DisposalScope::Record(id),
        parties: DisposalParties::default(),
        dry_run: false,
    };
    KeyCopy {
        fx,
        wrapped,
        copy,
        req,
    }
}

/// An insider keeps a copy of a record's wrapped data key in a file of the
/// keystore's directory. The disposal's byte scan finds it and the batch
/// fails; a retry used to certify without scanning again (a run that no
/// longer deleted the keys held no needles: "not repeated"), so the copy
/// found once passed the retry unseen. The needles of a batch whose run
/// failed are kept in the process's memory for its retry: two retries
/// racing while the copy is there both fail naming it, and once it is
/// gone the retry scans again and certifies.
#[test]
fn a_key_copy_the_byte_scan_found_is_looked_for_again_by_every_retry() {
    let tmp = tempfile::tempdir().unwrap();
    let KeyCopy {
        fx,
        wrapped: _,
        copy,
        req,
    } = a_key_copy_aside(tmp.path(), "keys-aside.bak".as_ref());
    let names_the_copy = |r: Result<vault_core::ids::CertificateId, Error>, what: &str| match r {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains("keys-aside.bak") && msg.contains("wrapped key bytes found"),
            "{what}: {msg}"
        ),
        other => panic!("{what}: a copy of the key must block the certificate: {other:?}"),
    };
    names_the_copy(
        fx.vault.dispose(&fx.officer, &req).map(|o| {
            o.certificate_id
                .expect("a completed disposal issues a certificate")
        }),
        "the disposal",
    );
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| fx.vault.retry_disposal(&fx.officer, batch));
        let b = sc.spawn(|| fx.vault.retry_disposal(&fx.officer, batch));
        (a.join().unwrap(), b.join().unwrap())
    });
    names_the_copy(a, "a retry");
    names_the_copy(b, "the retry racing it");
    std::fs::remove_file(&copy).unwrap();
    let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let text = doc.body.to_string();
    assert!(
        !text.contains("not repeated: the batch resumed after its keys were deleted"),
        "the retry scanned again: {text}"
    );
    assert!(text.contains("0 file(s) hold them"), "{text}");
    fx.vault.close().unwrap();
}

/// The copy of the test above, found by a run in a process that then
/// ended (here: the vault closed and opened again): the needles went with
/// that process, so no retry after it can scan again. A retry used to
/// certify ("not repeated") over the copy it had been shown; the batch now
/// keeps the files its latest scan read the key in, and a retry certifies
/// only once each is gone, saying so in the certificate (by count: the
/// file's name is the insider's to choose). Two retries at once while the
/// copy is there both wait.
#[test]
fn a_key_copy_found_before_a_restart_keeps_the_batch_waiting_while_its_file_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let KeyCopy {
        fx,
        wrapped,
        copy,
        req,
    } = a_key_copy_aside(
        tmp.path(),
        // Not UTF-8: the scan reports it with U+FFFD in its place, and
        // the check must still find the file.
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"keys-aside\xff.bak"),
    );
    match fx.vault.dispose(&fx.officer, &req) {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains("keys-aside") && msg.contains("wrapped key bytes found"),
            "{msg}"
        ),
        other => panic!("a copy of the key must block the certificate: {other:?}"),
    }
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
    let fx = fx.reopen();
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| fx.vault.retry_disposal(&fx.officer, batch));
        let b = sc.spawn(|| fx.vault.retry_disposal(&fx.officer, batch));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (r, what) in [(a, "a retry"), (b, "the retry beside it")] {
        match r {
            Err(Error::DisposalFailed(msg)) => assert!(
                msg.contains("keys-aside")
                    && msg.contains("still there")
                    && !msg.contains(&hex::encode(&wrapped[..8]))
                    && !msg.contains(format!("{:?}", &wrapped[..8]).trim_end_matches(']')),
                "{what}: {msg}"
            ),
            other => panic!("{what}: a retry without needles certified over a copy: {other:?}"),
        }
    }
    std::fs::remove_file(&copy).unwrap();
    let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let text = doc.body.to_string();
    assert!(
        text.contains("not repeated: the batch resumed after its keys were deleted")
            && text.contains("found the pre-disposal wrapped keys in 1 file(s), each gone since"),
        "the certificate says what the retry could and could not check: {text}"
    );
    assert!(
        !text.contains("keys-aside"),
        "the certificate names no file (an insider chooses the names): {text}"
    );
    fx.vault.close().unwrap();
}

/// A record of a new subject, stored by the clerk.
fn a_record(f: &Fixture, family: &str) -> vault_core::ids::RecordId {
    f.vault
        .put_record(
            &f.clerk,
            common::CUSTOMERS,
            vault_core::ids::SubjectId::new(),
            &serde_json::json!({"given_name": "Ann", "family_name": family, "ssn": "212-34-5678"}),
        )
        .expect("put")
}

/// The stored row of disposal batch `batch` in the records database of the
/// vault in `dir`, read with RocksDB directly (read-only: the vault may be
/// running), as someone with the files would.
fn batch_row(dir: &std::path::Path, batch: &[u8]) -> Vec<u8> {
    let path = dir.join("records");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &path, cfs, false)
        .expect("open db read-only");
    let h = db.cf_handle("disposals").expect("disposals");
    db.get_cf(&h, batch).unwrap().expect("the batch's row")
}

/// A disposal batch whose verification found a copy of a key it destroyed
/// fails, and no certificate may be signed for it until the copy is gone.
/// Its row (step, failure, the files its scan read the copy in) was the
/// one thing of a disposal an insider with the files could change unseen:
/// with the vault stopped, the row edited to say the batch was verified,
/// or a copy of it from before the verification put back, was resumed at
/// the next open and certified. The rows are now sealed and counted in the
/// state digest (`rows_sealed_v3`), so each of these stops the open:
/// - the failed row edited (its failure and copies cleared, its step moved
///   to `verified`), its MAC kept: it fails its MAC;
/// - the row as it was before its verification (a genuine copy, taken
///   while the disposal ran) put back: the rows no longer add up;
/// - the row deleted (the `disposal.start` would stand without its batch):
///   the same;
/// - the mark of their sealing deleted (sealing again would bless an
///   edited row): the trail names the sealing.
///
/// With the row as the vault left it, the vault opens, the batch still
/// waits for the copy to go, and then certifies.
#[test]
fn a_failed_disposal_batch_edited_put_back_or_deleted_with_the_vault_stopped_stops_the_open() {
    let tmp = tempfile::tempdir().unwrap();
    let KeyCopy {
        fx,
        wrapped: _,
        copy,
        req,
    } = a_key_copy_aside(tmp.path(), "keys-aside.bak".as_ref());
    let (vault_dir, clock) = (fx.dir.clone(), fx.clock.clone());
    // The batch stopped after its ciphertexts went, before its
    // verification: its row then, as an insider would copy it.
    let (reached_tx, reached) = std::sync::mpsc::channel::<()>();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let (reached_tx, go_rx) = (
        std::sync::Mutex::new(reached_tx),
        std::sync::Mutex::new(go_rx),
    );
    fx.vault.set_crash_hook(Some(Box::new(move |s: &str| {
        if s == "ciphertexts_deleted" {
            let _ = reached_tx.lock().unwrap().send(());
            let _ = go_rx
                .lock()
                .unwrap()
                .recv_timeout(std::time::Duration::from_secs(30));
        }
    })));
    let (before_verify, outcome) = std::thread::scope(|sc| {
        let run = sc.spawn(|| fx.vault.dispose(&fx.officer, &req));
        reached
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the batch reached its verification");
        let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
        let row = batch_row(&vault_dir, batch.as_bytes());
        go.send(()).unwrap();
        ((batch, row), run.join().unwrap())
    });
    fx.vault.set_crash_hook(None);
    let (batch, before_verify) = before_verify;
    assert!(
        matches!(&outcome, Err(Error::DisposalFailed(m)) if m.contains("wrapped key bytes found")),
        "the copy fails the batch: {outcome:?}"
    );
    let failed = batch_row(&vault_dir, batch.as_bytes());
    assert_ne!(failed, before_verify, "the verification changed the row");
    let fx = fx.reopened_after(|vault| {
        vault.close().expect("close");
        the_batch_row_changed_stops_the_open(&vault_dir, &clock, batch, &failed, &before_verify);
    });
    match fx.vault.retry_disposal(&fx.officer, batch) {
        Err(Error::DisposalFailed(m)) => assert!(m.contains("still there"), "{m}"),
        other => panic!("the batch certified over the copy: {other:?}"),
    }
    std::fs::remove_file(&copy).unwrap();
    let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
    assert!(fx.vault.certificate(&fx.auditor, cert).is_ok());
    let (level, found) = common::sealed_rows(&fx);
    assert_eq!(level, vault_core::doctor::Level::Ok, "{found}");
    fx.vault.close().unwrap();
}

/// With the vault in `vault_dir` stopped, its batch `batch`'s row
/// (`failed` as the vault left it, `before_verify` a genuine older copy)
/// edited, put back and deleted: each stops the open. The row is left as
/// the vault left it.
fn the_batch_row_changed_stops_the_open(
    vault_dir: &std::path::Path,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    batch: vault_core::ids::DisposalId,
    failed: &[u8],
    before_verify: &[u8],
) {
    let write = |value: Option<&[u8]>| {
        edit_records(vault_dir, &|db| {
            let h = db.cf_handle("disposals").expect("disposals");
            match value {
                Some(v) => db.put_cf(&h, batch.as_bytes(), v).unwrap(),
                None => db.delete_cf(&h, batch.as_bytes()).unwrap(),
            }
        })
    };
    let open = || {
        Vault::open(
            vault_dir,
            &secret(common::PASSPHRASE),
            common::open_options(clock),
        )
    };
    let refused = |why: &str, what: &str| match open() {
        Err(Error::Integrity(m)) => assert!(m.contains(why), "{what}: {m}"),
        Err(e) => panic!("{what}: refused for another reason: {e}"),
        Ok(v) => {
            let officer = common::login(&v, "officer");
            let step = v
                .disposals(&officer)
                .unwrap()
                .into_iter()
                .find(|d| d.id == batch)
                .map(|d| d.step);
            panic!("{what}: the vault opened (the batch's step: {step:?})")
        }
    };

    // Edited: failure and copies cleared, the step moved on, the MAC kept.
    // The row is its JSON and then its MAC.
    let mut json = serde_json::Deserializer::from_slice(failed).into_iter::<serde_json::Value>();
    let mut row = json.next().expect("a row").expect("the row is JSON");
    let tag = &failed[json.byte_offset()..];
    assert!(
        row["key_copies"].is_array() && row["failed"].is_string(),
        "{row}"
    );
    row["failed"] = serde_json::Value::Null;
    row.as_object_mut().unwrap().remove("key_copies");
    row["step"] = "verified".into();
    let edited = [serde_json::to_vec(&row).unwrap(), tag.to_vec()].concat();
    write(Some(&edited));
    refused(
        "fails its MAC",
        "the failed batch's row edited to say it was verified",
    );
    // The same edit without the MAC.
    write(Some(&serde_json::to_vec(&row).unwrap()));
    refused("fails its MAC", "the row edited and its MAC dropped");
    // Put back from before the verification.
    write(Some(before_verify));
    refused(
        "no longer adds up",
        "the row put back from before its verification",
    );
    // Deleted.
    write(None);
    refused("no longer adds up", "the batch's row deleted");
    write(Some(failed));
    // The mark of the batches' sealing deleted: sealing them again would
    // bless an edited row. (The mark is a sealed row: put back as stored.)
    let stored_mark = std::cell::RefCell::new(Vec::new());
    edit_records(vault_dir, &|db| {
        let h = db.cf_handle("meta").expect("meta");
        *stored_mark.borrow_mut() = db.get_cf(&h, b"rows_sealed_v3").unwrap().expect("the mark");
    });
    let mark = |value: Option<&[u8]>| {
        edit_records(vault_dir, &|db| {
            let h = db.cf_handle("meta").expect("meta");
            match value {
                Some(v) => db.put_cf(&h, b"rows_sealed_v3", v).unwrap(),
                None => db.delete_cf(&h, b"rows_sealed_v3").unwrap(),
            }
        })
    };
    mark(None);
    refused("row-seal mark", "the batches' row-seal mark deleted");
    mark(Some(&stored_mark.borrow()));
}

/// A vault written by a build from before the disposal batch rows were
/// sealed (`tests/fixtures/vault-before-v3.tar.gz`, made by its script
/// with that build: one record disposed of and certified, one kept). Its
/// first open by this build checks the state digest without the batch's
/// row, then seals the row and folds it in, and the trail says so
/// (`seal:v3`, once); the certificate and the kept record read as before
/// and `doctor` finds the rows adding up; the next open seals nothing
/// again, and from then on the row edited stops the open.
#[test]
fn a_vault_from_before_its_disposal_batches_were_sealed_seals_them_once_at_its_first_open() {
    use vault_core::ids::{CertificateId, DisposalId, RecordId};
    use vault_core::vault::OpenOptions;
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault-before-v3.tar.gz");
    let unpacked = std::process::Command::new("tar")
        .arg("-C")
        .arg(tmp.path())
        .arg("-xzf")
        .arg(&fixture)
        .status()
        .expect("tar");
    assert!(unpacked.success(), "the fixture unpacks");
    let dir = tmp.path().join("vault");
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("disposal.json")).unwrap()).unwrap();
    let cert: CertificateId = outcome["certificate_id"].as_str().unwrap().parse().unwrap();
    let batch: DisposalId = outcome["disposal_id"].as_str().unwrap().parse().unwrap();
    let kept: RecordId = std::fs::read_to_string(tmp.path().join("kept.id"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let open = || {
        Vault::open(
            &dir,
            &secret(crate::cli::PASSPHRASE),
            OpenOptions::default(),
        )
    };
    let login = |v: &Vault, user: &str| {
        let pw = crate::cli::USERS.iter().find(|u| u.0 == user).unwrap().2;
        v.login(user, &secret(pw), Context::cli()).expect("login")
    };
    let sealings = |v: &Vault| -> Vec<Vec<String>> {
        v.audit_events(&login(v, "auditor"), &EventFilter::default())
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "vault.rows_sealed")
            .map(|e| e.targets)
            .collect()
    };
    let row_before = batch_row(&dir, batch.as_bytes());
    assert!(
        serde_json::from_slice::<serde_json::Value>(&row_before).is_ok(),
        "the older build's row is bare JSON"
    );

    let v = open().expect("the older build's vault opens");
    let seals = sealings(&v);
    assert_eq!(seals.len(), 2, "the first sealing and this one: {seals:?}");
    assert!(
        seals[0].iter().any(|t| t == "seal:v2") && !seals[0].iter().any(|t| t == "seal:v3"),
        "{seals:?}"
    );
    assert!(
        seals[1].iter().any(|t| t == "rows:1") && seals[1].iter().any(|t| t == "seal:v3"),
        "the batch's one row sealed: {seals:?}"
    );
    let sealed = batch_row(&dir, batch.as_bytes());
    assert_eq!(
        sealed.len(),
        row_before.len() + 32,
        "the row carries its MAC"
    );
    assert!(sealed.starts_with(&row_before));
    let auditor = login(&v, "auditor");
    let doc = v
        .certificate(&auditor, cert)
        .expect("the certificate reads");
    assert!(doc.body.to_string().contains(&batch.to_string()));
    let clerk = login(&v, "clerk");
    assert_eq!(
        v.get_record(&clerk, kept, &[], None).unwrap().fields["given_name"],
        "Kept"
    );
    let checks = v.security_checks(&login(&v, "officer")).unwrap();
    let sealed_rows = checks
        .checks
        .iter()
        .find(|c| c.name == "sealed-rows")
        .expect("sealed-rows");
    assert_eq!(
        sealed_rows.level,
        vault_core::doctor::Level::Ok,
        "{}",
        sealed_rows.detail
    );
    v.close().unwrap();

    let v = open().expect("reopens");
    assert_eq!(sealings(&v).len(), 2, "sealed once");
    v.close().unwrap();
    // The older build's bare row put back: it no longer passes.
    edit_records(&dir, &|db| {
        let h = db.cf_handle("disposals").unwrap();
        db.put_cf(&h, batch.as_bytes(), &row_before).unwrap();
    });
    match open() {
        Err(Error::Integrity(m)) => assert!(m.contains("fails its MAC"), "{m}"),
        other => panic!("the bare row put back: {:?}", other.map(|_| ())),
    }
}

/// The batches' sealing cannot be had again to bless a planted batch. In a
/// vault that has disposed of nothing yet (so no batch row counts in the
/// digest), an insider with the files and the vault stopped plants a
/// genuine-looking batch row (a real one from another vault, its MAC taken
/// off), deletes the sealing's mark and edits the sealing's event in the
/// trail to name another one (the open reads the trail's older events
/// without their chain): the mark itself is sealed and counted in the
/// digest, so the rows no longer add up and the open refuses; the planted
/// row alone fails its MAC. (Found by a hostile review: with a bare mark,
/// the open sealed the planted row and resumed it.)
#[test]
fn a_batch_row_planted_with_the_sealings_mark_deleted_and_its_event_edited_stops_the_open() {
    use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
    let tmp = tempfile::tempdir().unwrap();
    // A real batch row, from another vault.
    let other = fast_vault(&tmp.path().join("other"));
    let id = a_record(&other, "Else");
    let out = other
        .vault
        .dispose(
            &other.officer,
            &DisposalRequest {
                scope: DisposalScope::Record(id),
                parties: DisposalParties::default(),
                dry_run: false,
            },
        )
        .unwrap();
    let batch = out.disposal_id.expect("a batch");
    let stored = batch_row(&other.dir, batch.as_bytes());
    let planted = stored[..stored.len() - 32].to_vec();
    other.vault.close().unwrap();

    let fx = fast_vault(&tmp.path().join("vault"));
    let (dir, clock) = (fx.dir.clone(), fx.clock.clone());
    fx.vault.close().unwrap();
    let open = || {
        Vault::open(
            &dir,
            &secret(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    let refused = |why: &str, what: &str| match open() {
        Err(Error::Integrity(m)) => assert!(m.contains(why), "{what}: {m}"),
        Err(e) => panic!("{what}: refused for another reason: {e}"),
        Ok(_) => panic!("{what}: the vault opened"),
    };
    edit_records(&dir, &|db| {
        let h = db.cf_handle("disposals").unwrap();
        db.put_cf(&h, batch.as_bytes(), &planted).unwrap();
    });
    refused("fails its MAC", "a batch row planted");
    edit_records(&dir, &|db| {
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(&meta, b"rows_sealed_v3").unwrap();
    });
    let mut edited = 0;
    for entry in std::fs::read_dir(dir.join("audit")).unwrap() {
        let p = entry.unwrap().path();
        if let Ok(t) = std::fs::read_to_string(&p)
            && t.contains("seal:v3")
        {
            std::fs::write(&p, t.replace("seal:v3", "seal:v9")).unwrap();
            edited += 1;
        }
    }
    assert_eq!(edited, 1, "the sealing's event is in one segment");
    refused(
        "no longer adds up",
        "a batch row planted, the mark deleted and the sealing's event edited",
    );
}

/// An insider with the keystore's directory puts a link in it. The
/// disposal's key scan, narrowed to the files that can hold the touched
/// buckets' keys, walked the directory following links: one to a
/// directory above took it `up/up/…` till the system refused ("Too many
/// levels of symbolic links", naming nothing), one to a file elsewhere was
/// read through as if it were the vault's. A link now fails the batch,
/// naming it, before anything is certified; with it removed, the retry
/// certifies.
#[test]
fn a_link_in_the_keystore_directory_fails_the_disposal_instead_of_leading_the_scan_out() {
    use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
    let tmp = tempfile::tempdir().unwrap();
    let fx = fast_vault(&tmp.path().join("vault"));
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"not the vault's").unwrap();
    for (name, target) in [("up", fx.dir.clone()), ("elsewhere.log", outside)] {
        let id = a_record(&fx, "Linked");
        let link = fx.dir.join("keystore").join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let req = DisposalRequest {
            scope: DisposalScope::Record(id),
            parties: DisposalParties::default(),
            dry_run: false,
        };
        match fx.vault.dispose(&fx.officer, &req) {
            Err(Error::DisposalFailed(m) | Error::Storage(m)) => assert!(
                m.contains(name) && m.contains("symbolic link"),
                "{name}: {m}"
            ),
            other => panic!("{name}: the scan followed the link: {other:?}"),
        }
        std::fs::remove_file(&link).unwrap();
        let batch = fx
            .vault
            .disposals(&fx.officer)
            .unwrap()
            .into_iter()
            .find(|b| b.step != "complete")
            .expect("the failed batch")
            .id;
        let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
        assert!(fx.vault.certificate(&fx.auditor, cert).is_ok());
    }
    fx.vault.close().unwrap();
}

/// A disposed record's live row put back with the vault stopped refuses a
/// restore before it writes anything. Before, the restore wrote the records
/// it brought back (here one whose row the insider deleted), then failed its
/// final check, leaving them.
#[test]
fn a_restore_over_a_disposed_record_put_back_live_writes_nothing() {
    use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), None, None);
    let disposed = a_record(&fx, "Doe");
    let missing = a_record(&fx, "Roe");
    let vault_dir = fx.dir.clone();
    let live_row = {
        let path = vault_dir.join("records");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db =
            rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &path, cfs, false)
                .expect("open db read-only");
        let h = db.cf_handle("records").expect("records");
        db.get_cf(&h, disposed.as_bytes())
            .unwrap()
            .expect("the record's row")
    };
    let file = tmp.path().join("b.pvb");
    fx.vault.create_backup(&fx.admin, &file, 30).unwrap();
    fx.vault
        .dispose(
            &fx.officer,
            &DisposalRequest {
                scope: DisposalScope::Record(disposed),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let fx = fx.reopened_after(|vault| {
        vault.close().expect("close");
        edit_records(&vault_dir, &|db| {
            let h = db.cf_handle("records").unwrap();
            db.put_cf(&h, disposed.as_bytes(), &live_row).unwrap();
            db.delete_cf(&h, missing.as_bytes()).unwrap();
        });
    });
    match fx.vault.restore_backup(&fx.admin, &file) {
        Err(Error::Integrity(m)) => assert!(m.contains("is live"), "{m}"),
        other => panic!("the restore went over a disposed record put back live: {other:?}"),
    }
    assert!(
        matches!(
            fx.vault.get_record(&fx.clerk, missing, &[], None),
            Err(Error::NotFound(_))
        ),
        "the failed restore wrote a record back"
    );
    fx.vault.close().unwrap();
}

/// A subject in bucket `bucket` (`same`) or outside it.
fn subject_by_bucket(f: &Fixture, bucket: u32, same: bool) -> vault_core::ids::SubjectId {
    loop {
        let s = vault_core::ids::SubjectId::new();
        if (f.vault.keystore().bucket_of(s) == bucket) == same {
            return s;
        }
    }
}

/// A disposal of `scope` for the data owner, no dry run.
fn request_for(scope: vault_core::vault::DisposalScope) -> vault_core::vault::DisposalRequest {
    vault_core::vault::DisposalRequest {
        scope,
        parties: vault_core::vault::DisposalParties {
            data_owner: "Example Retail LLC".into(),
            ..Default::default()
        },
        dry_run: false,
    }
}

/// A record of `subject`, stored by the clerk.
fn a_record_of(f: &Fixture, subject: vault_core::ids::SubjectId) -> vault_core::ids::RecordId {
    f.vault
        .put_record(
            &f.clerk,
            common::CUSTOMERS,
            subject,
            &serde_json::json!({"given_name": "Ann", "family_name": "Doe", "ssn": "212-34-5678"}),
        )
        .expect("put")
}

/// A record row's subject is in clear beside its envelope, which binds it:
/// a row an insider changed no longer reads, and the subject it names is
/// unverified. A disposal checked holds against that subject and deleted
/// keys in its bucket, so, with the vault stopped and a row's subject
/// changed:
/// - to a subject of the held subject's bucket, a disposal went past the
///   hold on the true subject: now refused as held (a hold on any subject
///   of that bucket may be its own);
/// - to a subject of another bucket, the disposal certified a record whose
///   keys it never touched (they are in the true subject's bucket): now
///   refused by name, left out of a wider scope, saying why;
/// - a held record's to a subject of a bucket no hold touches, its key
///   deleted too (so no key shows its true bucket): now refused as held
///   (with no key to go by, a hold on any subject may be its own);
/// - a restore's repair of either (it deletes the current keys) leaves it
///   as it is.
///
/// A record whose envelope was damaged, in a bucket no hold touches, is
/// still disposed of (the check must not stop every damaged record).
#[test]
fn a_record_row_whose_subject_was_changed_is_neither_disposed_past_a_hold_nor_certified_with_its_keys_left()
 {
    use vault_core::vault::{DisposalScope, ROW_SUBJECT_CHANGED};
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), None, None);
    let ks = |s| fx.vault.keystore().bucket_of(s);
    let held_subject = vault_core::ids::SubjectId::new();
    let held = a_record_of(&fx, held_subject);
    fx.vault
        .add_hold(&fx.officer, None, Some(held_subject), "litigation")
        .unwrap();
    let moved_subject = subject_by_bucket(&fx, ks(held_subject), false);
    let moved = a_record_of(&fx, moved_subject);
    let gone_subject = subject_by_bucket(&fx, ks(held_subject), false);
    let gone = a_record_of(&fx, gone_subject);
    fx.vault
        .add_hold(&fx.officer, None, Some(gone_subject), "litigation")
        .unwrap();
    let held_buckets = [ks(held_subject), ks(gone_subject)];
    let unheld = |avoid: u32| loop {
        let s = vault_core::ids::SubjectId::new();
        if !held_buckets.contains(&ks(s)) && ks(s) != avoid {
            break s;
        }
    };
    let damaged = a_record_of(&fx, unheld(ks(moved_subject)));
    let gone_dek = {
        let mut name = ks(gone_subject).to_be_bytes().to_vec();
        name.extend_from_slice(gone.as_bytes());
        name.extend_from_slice(&1u32.to_be_bytes());
        name
    };
    let backup = tmp.path().join("b.pvb");
    fx.vault.create_backup(&fx.admin, &backup, 30).unwrap();
    // The held record's row names another subject of its bucket; the
    // moved one's a subject of a third bucket; the other held one's a
    // subject of a bucket no hold touches, its key deleted; the damaged
    // one's envelope has a byte flipped.
    let same_bucket = subject_by_bucket(&fx, ks(held_subject), true);
    let elsewhere = loop {
        let s = subject_by_bucket(&fx, ks(moved_subject), false);
        if ks(s) != ks(held_subject) {
            break s;
        }
    };
    let nowhere = unheld(ks(gone_subject));
    let vault_dir = fx.dir.clone();
    let fx = fx.reopened_after(|vault| {
        vault.close().expect("close");
        let path = vault_dir.join("keystore");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("keystore");
        db.delete_cf(&db.cf_handle("deks").unwrap(), &gone_dek)
            .unwrap();
        db.flush().unwrap();
        drop(db);
        edit_records(&vault_dir, &|db| {
            let h = db.cf_handle("records").unwrap();
            for (id, to) in [
                (held, Some(same_bucket)),
                (moved, Some(elsewhere)),
                (gone, Some(nowhere)),
                (damaged, None),
            ] {
                let mut row = db.get_cf(&h, id.as_bytes()).unwrap().expect("row");
                match to {
                    Some(s) => row[6..22].copy_from_slice(s.as_bytes()),
                    None => *row.last_mut().unwrap() ^= 1,
                }
                db.put_cf(&h, id.as_bytes(), &row).unwrap();
            }
        });
    });
    match fx
        .vault
        .dispose(&fx.officer, &request_for(DisposalScope::Record(held)))
    {
        Err(Error::LegalHold) => {}
        other => panic!("a disposal went past the hold on the true subject: {other:?}"),
    }
    match fx
        .vault
        .dispose(&fx.officer, &request_for(DisposalScope::Record(gone)))
    {
        Err(Error::LegalHold) => {}
        other => {
            panic!("a disposal went past the hold on a keyless record's true subject: {other:?}")
        }
    }
    match fx
        .vault
        .dispose(&fx.officer, &request_for(DisposalScope::Record(moved)))
    {
        Err(Error::Integrity(m)) => assert!(m.contains("another subject's bucket"), "{m}"),
        other => panic!("a record whose keys are in another bucket was disposed of: {other:?}"),
    }
    let out = fx
        .vault
        .dispose(
            &fx.officer,
            &request_for(DisposalScope::Records(vec![held, moved, gone, damaged])),
        )
        .expect("the damaged record is disposed of");
    assert_eq!(out.records, vec![damaged], "{out:?}");
    let why: std::collections::HashMap<_, _> = out.excluded.iter().cloned().collect();
    assert!(why[&held].starts_with("legal hold"), "{why:?}");
    assert!(why[&gone].starts_with("legal hold"), "{why:?}");
    assert_eq!(why[&moved], ROW_SUBJECT_CHANGED, "{why:?}");
    // Their keys are where they were: nothing touched them.
    for (id, s) in [(held, held_subject), (moved, moved_subject)] {
        assert_eq!(
            fx.vault.keystore().record_keys(s, id).unwrap().len(),
            1,
            "record {id}'s key"
        );
    }
    let rep = fx.vault.restore_backup(&fx.admin, &backup).unwrap();
    assert_eq!((rep.repaired, rep.held_unrepaired), (0, 3), "{rep:?}");
    for (id, s) in [(held, held_subject), (moved, moved_subject)] {
        assert_eq!(
            fx.vault.keystore().record_keys(s, id).unwrap().len(),
            1,
            "the restore's repair deleted record {id}'s key"
        );
    }
    fx.vault.close().unwrap();
}

/// A contractor's scope by collection rests on the collection a record's
/// row names, which is in clear beside the envelope that binds it: an
/// insider with the files who changed an out-of-scope record's row to name
/// the contractor's collection put it in their scope (the row then no
/// longer reads, and nothing else stopped the disposal). Now a row that
/// does not read is disposed of by a contractor only when their scope names
/// it by ID: refused by name, left out of a wider scope, saying why.
#[test]
fn a_record_moved_into_a_contractors_collection_by_its_row_is_not_theirs_to_dispose() {
    use vault_core::vault::{ContractorScope, DisposalScope, UNREAD_OUTSIDE_NAMED_SCOPE};
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault_with(&tmp.path().join("vault"), None, None);
    // Same length as `customers`, so only the name's bytes change.
    fx.vault
        .create_collection(&fx.admin, "suppliers", &common::customers_schema())
        .unwrap();
    fx.vault
        .assign_contractor(
            &fx.admin,
            "contractor",
            ContractorScope {
                collections: vec![common::CUSTOMERS.into()],
                records: vec![],
                public_key: None,
            },
        )
        .unwrap();
    let outside = fx
        .vault
        .put_record(
            &fx.clerk,
            "suppliers",
            vault_core::ids::SubjectId::new(),
            &serde_json::json!({"given_name": "Ann", "family_name": "Doe", "ssn": "212-34-5678"}),
        )
        .unwrap();
    let inside = a_record(&fx, "Roe");
    let vault_dir = fx.dir.clone();
    let fx = fx.reopened_after(|vault| {
        vault.close().expect("close");
        edit_records(&vault_dir, &|db| {
            let h = db.cf_handle("records").unwrap();
            let mut row = db.get_cf(&h, outside.as_bytes()).unwrap().expect("row");
            let at = row
                .windows(9)
                .position(|w| w == b"suppliers")
                .expect("the collection's name");
            row[at..at + 9].copy_from_slice(b"customers");
            db.put_cf(&h, outside.as_bytes(), &row).unwrap();
        });
    });
    match fx
        .vault
        .dispose(&fx.contractor, &request_for(DisposalScope::Record(outside)))
    {
        Err(Error::PermissionDenied(_)) => {}
        other => panic!("a contractor disposed of a record moved into their scope: {other:?}"),
    }
    let out = fx
        .vault
        .dispose(
            &fx.contractor,
            &request_for(DisposalScope::Records(vec![outside, inside])),
        )
        .expect("the record in scope is disposed of");
    assert_eq!(out.records, vec![inside], "{out:?}");
    assert_eq!(
        out.excluded,
        vec![(outside, UNREAD_OUTSIDE_NAMED_SCOPE.to_owned())]
    );
    fx.vault.close().unwrap();
}
