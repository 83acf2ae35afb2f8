//! Acceptance tests of the engine through its facade, [`Vault`], over real
//! RocksDB databases in temporary directories (no mocks): access control
//! (REQ-ACL-01/02), authentication (REQ-AUTH-01/02/05), the security
//! programme (REQ-WISP-02/06/07), monitoring (REQ-MON-01), classification
//! (REQ-DEF-03), tamper detection of stored records, and a model-based test
//! of record storage across reopens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use vault_core::Error;
use vault_core::access::{Role, UserState};
use vault_core::audit::{AuditEvent, Channel, EventFilter, Outcome, UserActivity};
use vault_core::clock::{Clock, ManualClock};
use vault_core::ids::{CollectionName, RecordId, SubjectId, UserId};
use vault_core::schema::{Classification, FieldSpec, FieldType, Schema};
use vault_core::secret::SecretString;
use vault_core::vault::{Context, RecordFilter, Session, Vault};

use crate::common::{self, CUSTOMERS, Fixture, T0, fast_vault, fresh_source, password_of};

const MINUTE: i64 = 60 * 1000;
const REASON: &str = "identity verification requested by the customer";

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

fn jane() -> Value {
    json!({
        "given_name": "Jane",
        "family_name": "Doe",
        "ssn": "123-45-6789",
        "card_number": "4111 1111 1111 1111",
        "drivers_license": {"state": "MA", "number": "S12345678"},
    })
}

/// Audit events matching `filter`, read by `reader` (officer or auditor).
fn trail(v: &Vault, reader: &Session, filter: EventFilter) -> Vec<AuditEvent> {
    v.audit_events(reader, &filter).expect("read audit trail")
}

/// The sequence number of the last event in the trail. The read itself
/// appends one `audit.read` event right after it.
fn last_seq(v: &Vault, reader: &Session) -> u64 {
    trail(v, reader, EventFilter::default())
        .last()
        .map_or(0, |e| e.seq)
}

fn since(seq: u64) -> EventFilter {
    EventFilter {
        from_seq: Some(seq + 1),
        ..EventFilter::default()
    }
}

fn now(f: &Fixture) -> i64 {
    f.clock.now_ms()
}

// ---------------------------------------------------------------------------
// REQ-ACL-01: role × operation matrix

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    AddUser,
    CreateCollection,
    PutRecord,
    GetRecord,
    RevealRecord,
    UpdateRecord,
    ListRecords,
    AuditEvents,
    AuditVerify,
    ActivityReport,
    SecurityReview,
    ListUsers,
}

/// Column order of [`MATRIX`].
const ROLES: [Role; 5] = [
    Role::Admin,
    Role::Officer,
    Role::Clerk,
    Role::Auditor,
    Role::Contractor,
];

/// The policy, written out by hand (DESIGN §5): may this role do this?
/// Columns: admin, officer, clerk, auditor, contractor.
#[rustfmt::skip]
const MATRIX: [(Op, [bool; 5]); 12] = [
    //                       admin  officer clerk  auditor contractor
    (Op::AddUser,          [true,  false,  false, false,  false]),
    (Op::CreateCollection, [true,  false,  false, false,  false]),
    (Op::PutRecord,        [false, false,  true,  false,  false]),
    (Op::GetRecord,        [false, true,   true,  false,  false]),
    (Op::RevealRecord,     [false, true,   false, false,  false]),
    (Op::UpdateRecord,     [false, false,  true,  false,  false]),
    (Op::ListRecords,      [true,  true,   true,  false,  true ]),
    (Op::AuditEvents,      [false, true,   false, true,   false]),
    (Op::AuditVerify,      [false, true,   false, true,   false]),
    (Op::ActivityReport,   [false, true,   false, true,   false]),
    (Op::SecurityReview,   [false, true,   false, false,  false]),
    (Op::ListUsers,        [true,  true,   false, true,   false]),
];

fn run_op(f: &Fixture, s: &Session, op: Op, n: usize, record: RecordId) -> Result<(), Error> {
    let v = &f.vault;
    match op {
        Op::AddUser => v
            .add_user(
                s,
                &format!("matrix-user-{n}"),
                &secret(&format!("Fresh-Quartz-Ladder-{n}")),
                Role::Clerk,
                false,
            )
            .map(drop),
        Op::CreateCollection => v
            .create_collection(s, &format!("matrix-coll-{n}"), &common::customers_schema())
            .map(drop),
        Op::PutRecord => v
            .put_record(s, CUSTOMERS, SubjectId::new(), &jane())
            .map(drop),
        Op::GetRecord => v.get_record(s, record, &[], None).map(|view| {
            assert_eq!(view.fields["ssn"], "***-**-6789", "a plain read is masked");
        }),
        Op::RevealRecord => v.get_record(s, record, &["ssn"], Some(REASON)).map(|view| {
            assert_eq!(view.fields["ssn"], "123-45-6789");
        }),
        Op::UpdateRecord => v.update_record(s, record, &jane()).map(drop),
        Op::ListRecords => v.list_records(s, &RecordFilter::default()).map(drop),
        Op::AuditEvents => v
            .audit_events(
                s,
                &EventFilter {
                    limit: Some(1),
                    ..EventFilter::default()
                },
            )
            .map(drop),
        Op::AuditVerify => v.audit_verify(s).map(|r| assert!(r.ok(), "{r:?}")),
        Op::ActivityReport => v.activity_report(s, T0, now(f) + 1).map(drop),
        Op::SecurityReview => v.record_security_review(s),
        Op::ListUsers => v.list_users(s).map(drop),
    }
}

#[test]
fn req_acl_01_role_operation_matrix_matches_policy_table() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let record = f
        .vault
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    let mut n = 0;
    let mut allowed_puts = 0;
    let mut allowed_users = 0;
    let mut allowed_colls = 0;
    for (op, row) in MATRIX {
        for (role, expected) in ROLES.into_iter().zip(row) {
            n += 1;
            let s = f.session(role);
            let before = last_seq(&f.vault, &f.auditor);
            let result = run_op(&f, s, op, n, record);
            let denials: Vec<AuditEvent> = trail(&f.vault, &f.auditor, since(before))
                .into_iter()
                .filter(|e| e.actor == Some(s.user()) && e.outcome == Outcome::Denied)
                .collect();
            if expected {
                assert!(
                    result.is_ok(),
                    "{role} should be allowed {op:?}: {:?}",
                    result.err()
                );
                assert!(
                    denials.is_empty(),
                    "{role} {op:?} allowed but audited as denied: {denials:?}"
                );
                match op {
                    Op::PutRecord => allowed_puts += 1,
                    Op::AddUser => allowed_users += 1,
                    Op::CreateCollection => allowed_colls += 1,
                    _ => {}
                }
            } else {
                assert!(
                    matches!(result, Err(Error::PermissionDenied(_))),
                    "{role} should be denied {op:?} with PermissionDenied, got {result:?}"
                );
                assert_eq!(
                    denials.len(),
                    1,
                    "{role} {op:?}: exactly one denied audit event, got {denials:?}"
                );
                assert_eq!(denials[0].code.as_deref(), Some("permission_denied"));
                assert_eq!(denials[0].channel, Channel::Cli);
            }
        }
    }
    // Denied operations changed nothing.
    let records = f
        .vault
        .list_records(&f.officer, &RecordFilter::default())
        .unwrap();
    assert_eq!(records.len(), 1 + allowed_puts);
    assert_eq!(
        f.vault.list_users(&f.admin).unwrap().len(),
        common::USERS.len() + allowed_users
    );
    assert_eq!(
        f.vault.collections(&f.admin).unwrap().len(),
        1 + allowed_colls
    );
    assert_eq!((allowed_puts, allowed_users, allowed_colls), (1, 1, 1));
    // The one allowed update made version 2.
    let meta = records.iter().find(|m| m.id == record).unwrap();
    assert_eq!(meta.version, 2);
}

#[test]
fn req_acl_01_masking_reveal_grant_and_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();

    // A clerk sees the sensitive fields masked (last four), names in clear.
    let view = v.get_record(&f.clerk, id, &[], None).unwrap();
    assert_eq!(view.fields["ssn"], "***-**-6789");
    assert_eq!(view.fields["card_number"], "**** **** **** 1111");
    assert_eq!(view.fields["drivers_license"], "MA *****5678");
    assert_eq!(view.fields["given_name"], "Jane");
    assert_eq!(view.fields["family_name"], "Doe");
    assert!(view.revealed.is_empty());

    // A clerk without the grant may not reveal, even with a reason.
    let before = last_seq(v, &f.auditor);
    let r = v.get_record(&f.clerk, id, &["ssn"], Some(REASON));
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    let ev = trail(v, &f.auditor, since(before));
    let denied: Vec<_> = ev
        .iter()
        .filter(|e| e.actor == Some(f.clerk.user()))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(
        (denied[0].action.as_str(), denied[0].outcome),
        ("record.reveal", Outcome::Denied)
    );

    // A clerk granted reveal may reveal, with a reason; each field is audited.
    let pw = secret("Reveal-Sparrow-Lattice-17");
    // The reveal grant waits for an officer's approval (two-person rule).
    let req = match v.add_user(&f.admin, "granted-clerk", &pw, Role::Clerk, true) {
        Err(Error::ApprovalRequired { request }) => request,
        other => panic!("reveal grant without approval: {other:?}"),
    };
    v.approve_request(&f.officer, &req).unwrap();
    let granted = v.login("granted-clerk", &pw, Context::cli()).unwrap();
    let granted_id = granted.user();
    let before = last_seq(v, &f.auditor);
    let view = v
        .get_record(&granted, id, &["ssn", "card_number"], Some(REASON))
        .unwrap();
    assert_eq!(view.fields["ssn"], "123-45-6789");
    assert_eq!(view.fields["card_number"], "4111 1111 1111 1111");
    assert_eq!(
        view.fields["drivers_license"], "MA *****5678",
        "fields not asked for stay masked"
    );
    assert_eq!(
        view.revealed,
        vec!["ssn".to_string(), "card_number".to_string()]
    );
    let ev: Vec<AuditEvent> = trail(v, &f.auditor, since(before))
        .into_iter()
        .filter(|e| e.actor == Some(granted_id))
        .collect();
    let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["record.read", "record.reveal", "record.reveal"]);
    assert_eq!(ev[1].targets, vec![id.to_string(), "field:ssn".to_string()]);
    assert_eq!(
        ev[2].targets,
        vec![id.to_string(), "field:card_number".to_string()]
    );
    assert!(
        ev[1..]
            .iter()
            .all(|e| e.reason.as_deref() == Some(REASON) && e.outcome == Outcome::Success)
    );

    // Reveal without a reason, with a blank one, or with a run of 4+ digits is refused.
    for reason in [
        None,
        Some(""),
        Some("   "),
        Some("ticket 12345"),
        Some("ssn ends 6789"),
    ] {
        let r = v.get_record(&granted, id, &["ssn"], reason);
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "reason {reason:?}: {r:?}"
        );
    }
    // Three digits are fine.
    assert!(
        v.get_record(&granted, id, &["ssn"], Some("ticket 123 follow-up"))
            .is_ok()
    );

    // The officer reveals by role; the grant does nothing for roles without read access.
    assert_eq!(
        v.get_record(&f.officer, id, &["ssn"], Some(REASON))
            .unwrap()
            .fields["ssn"],
        "123-45-6789"
    );
    let apw = secret("Reveal-Pelican-Quartz-29");
    let req = match v.add_user(&f.admin, "granted-auditor", &apw, Role::Auditor, true) {
        Err(Error::ApprovalRequired { request }) => request,
        other => panic!("reveal grant without approval: {other:?}"),
    };
    v.approve_request(&f.officer, &req).unwrap();
    let ga = v.login("granted-auditor", &apw, Context::cli()).unwrap();
    assert!(matches!(
        v.get_record(&ga, id, &[], None),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        v.get_record(&ga, id, &["ssn"], Some(REASON)),
        Err(Error::PermissionDenied(_))
    ));
}

// ---------------------------------------------------------------------------
// REQ-ACL-02: no default credentials

const SWEEP_USERS: [&str; 10] = [
    "admin",
    "administrator",
    "root",
    "pivault",
    "user",
    "test",
    "guest",
    "operator",
    "officer",
    "clerk",
];
const SWEEP_PASSWORDS: [&str; 11] = [
    "admin",
    "password",
    "123456",
    "changeme",
    "pivault",
    "default",
    "Password123!",
    "letmein",
    "root",
    "toor",
    "",
];

#[test]
fn req_acl_02_default_credential_sweep_fails_for_every_pair() {
    let tmp = tempfile::tempdir().unwrap();
    // A vault straight from init holds only the admin chosen at init.
    let clock = Arc::new(ManualClock::new(T0));
    let chosen = "Init-Chosen-Walnut-Signal-61";
    let bare = common::create_vault(&tmp.path().join("bare"), &clock, "admin", chosen);
    let s = bare
        .login("admin", &secret(chosen), Context::cli())
        .unwrap();
    let users = bare.list_users(&s).unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(
        (users[0].username.as_str(), users[0].role),
        ("admin", Role::Admin)
    );
    drop(bare);

    // The sweep runs against a fresh fixture vault in which several of the
    // common usernames exist (admin, officer, clerk), with chosen passwords.
    let f = fast_vault(&tmp.path().join("v"));
    assert_eq!(
        f.vault.list_users(&f.admin).unwrap().len(),
        common::USERS.len(),
        "no extra accounts"
    );
    let mut attempts = 0;
    for u in SWEEP_USERS {
        for p in SWEEP_PASSWORDS {
            attempts += 1;
            // One source, as a real sweep: past its first failures the
            // source is throttled and its guesses are not even checked.
            match f.vault.login(u, &secret(p), Context::cli()) {
                Err(
                    Error::AuthFailed | Error::AccountLocked { .. } | Error::LoginThrottled { .. },
                ) => {}
                Ok(_) => panic!("default credential pair {u:?}/{p:?} logged in"),
                Err(e) => panic!("{u:?}/{p:?}: unexpected error {e:?}"),
            }
        }
    }
    assert_eq!(attempts, 110);
    // Positive control: the real passwords still work once the lock-outs the
    // sweep caused have run out, so the sweep could have seen a success.
    f.clock.advance(24 * 60 * MINUTE);
    for (u, _, _) in common::USERS {
        f.vault.login(u, &password_of(u), Context::cli()).unwrap();
    }
}

// ---------------------------------------------------------------------------
// REQ-AUTH-01: unique usernames and IDs; tokens bound, hashed, expiring

#[test]
fn req_auth_01_unique_usernames_ids_and_tokens_never_stored_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let v = &f.vault;
    let pw = secret("Another-Teller-Harbor-88");
    // Duplicate usernames are refused, case- and whitespace-insensitively.
    for name in ["clerk", "CLERK", " Clerk "] {
        let r = v.add_user(&f.admin, name, &pw, Role::Clerk, false);
        assert!(matches!(r, Err(Error::AlreadyExists(_))), "{name:?}: {r:?}");
    }
    // A disabled user keeps their username: it is never handed to another ID.
    // (The facade has no user deletion, so a username, once taken, stays bound
    // to its first ID for the vault's life.)
    v.disable_user(&f.admin, "auditor").unwrap();
    let r = v.add_user(&f.admin, "auditor", &pw, Role::Auditor, false);
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    let users = v.list_users(&f.admin).unwrap();
    assert_eq!(users.len(), common::USERS.len());
    let auditor = users
        .iter()
        .find(|u| u.username.as_str() == "auditor")
        .unwrap();
    assert_eq!(
        (auditor.id, auditor.state),
        (f.auditor.user(), UserState::Disabled)
    );

    // User IDs are unique UUIDv7s, and a new user gets a new one.
    let new_id = v
        .add_user(&f.admin, "second-clerk", &pw, Role::Clerk, false)
        .unwrap();
    let ids: BTreeSet<UserId> = v
        .list_users(&f.admin)
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids.len(), common::USERS.len() + 1);
    assert!(ids.contains(&new_id));
    assert!(ids.iter().all(|id| id.uuid().get_version_num() == 7));

    // Tokens: `pvt_` + 64 hex digits, one user each, distinct.
    let token = v.issue_token(&f.clerk, 8 * 60 * MINUTE).unwrap();
    let t = token.expose().to_owned();
    let hex_part = t.strip_prefix("pvt_").expect("pvt_ prefix");
    assert_eq!(hex_part.len(), 64);
    assert!(
        hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let other = v.issue_token(&f.clerk, 8 * 60 * MINUTE).unwrap();
    assert_ne!(other.expose(), t);
    let s = v.session_from_token(&token, Context::cli()).unwrap();
    assert_eq!(s.user(), f.clerk.user());
    v.list_records(&s, &RecordFilter::default()).unwrap();

    // Tokens expire (TTL) and die when idle.
    let short = v.issue_token(&f.officer, MINUTE).unwrap();
    let idle = v.issue_token(&f.officer, 8 * 60 * MINUTE).unwrap();
    f.clock.advance(MINUTE + 1);
    assert!(matches!(
        v.session_from_token(&short, Context::cli()),
        Err(Error::SessionInvalid)
    ));
    v.session_from_token(&token, Context::cli()).unwrap();
    f.clock.advance(30 * MINUTE);
    assert!(matches!(
        v.session_from_token(&idle, Context::cli()),
        Err(Error::SessionInvalid)
    ));
    v.session_from_token(&other, Context::cli()).unwrap_err();

    // No token, nor its raw bytes, is in any file of the vault, before or after close.
    let raw = hex_decode(hex_part);
    let tokens = [
        t.clone(),
        other.expose().to_owned(),
        short.expose().to_owned(),
        idle.expose().to_owned(),
    ];
    let scan = |dir: &Path| {
        for tok in &tokens {
            for needle in [tok.as_bytes(), &tok.as_bytes()[4..]] {
                let hits = common::files_containing(dir, needle);
                assert!(hits.is_empty(), "token in clear in {hits:?}");
            }
        }
        assert!(
            common::files_containing(dir, &raw).is_empty(),
            "raw token bytes stored"
        );
    };
    scan(&dir);
    let Fixture { vault, .. } = f;
    vault.close().unwrap();
    scan(&dir);
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// REQ-AUTH-02: password policy and Argon2id hashes

#[test]
fn req_auth_02_password_policy_and_argon2id_hashes_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let v = &f.vault;
    for bad in ["Password123!", "Xk9#mQ2$vL7", "short", ""] {
        match v.add_user(&f.admin, "dana", &secret(bad), Role::Clerk, false) {
            Err(e @ Error::WeakPassword(_)) => {
                if !bad.is_empty() {
                    assert!(
                        !e.to_string().contains(bad),
                        "error echoes the password: {e}"
                    );
                }
            }
            other => panic!("{bad:?} accepted or wrong error: {other:?}"),
        }
    }
    assert_eq!(
        v.list_users(&f.admin).unwrap().len(),
        common::USERS.len(),
        "no user created by a refused add"
    );
    // Exactly 12 characters is enough.
    v.add_user(
        &f.admin,
        "dana",
        &secret("Xk9#mQ2$vL7p"),
        Role::Clerk,
        false,
    )
    .unwrap();
    // A new password is held to the same policy.
    assert!(matches!(
        v.set_password(&f.admin, "dana", &secret("Password123!")),
        Err(Error::WeakPassword(_))
    ));

    let phc = b"$argon2id$v=19$m=19456,t=2,p=1$";
    let check = |dir: &Path| {
        let hits = common::files_containing(&dir.join("records"), phc);
        assert!(
            !hits.is_empty(),
            "no Argon2id hash found in the records database"
        );
        for (_, _, pw) in common::USERS {
            let hits = common::files_containing(dir, pw.as_bytes());
            assert!(hits.is_empty(), "a password in clear in {hits:?}");
        }
        assert!(common::files_containing(dir, b"Xk9#mQ2$vL7p").is_empty());
        assert!(common::files_containing(dir, common::PASSPHRASE.as_bytes()).is_empty());
    };
    check(&dir);
    let f = f.reopen();
    check(&dir);
    // The stored hashes still verify after the reopen.
    f.vault
        .login("dana", &secret("Xk9#mQ2$vL7p"), Context::cli())
        .unwrap();
    common::login(&f.vault, "clerk");
}

// ---------------------------------------------------------------------------
// REQ-AUTH-05: lock-out

#[test]
fn req_auth_05_lockout_after_five_failures_audit_and_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let clerk = f.clerk.user();
    let wrong = secret("Not-The-Clerk-Password-1");
    let start = last_seq(v, &f.auditor);

    for i in 1..=4 {
        f.clock.advance(1000);
        let r = v.login("clerk", &wrong, fresh_source());
        assert!(matches!(r, Err(Error::AuthFailed)), "failure {i}: {r:?}");
    }
    f.clock.advance(1000);
    let t5 = now(&f);
    // The 5th failure locks, but answers like any wrong password (uniform 401).
    let r = v.login("clerk", &wrong, fresh_source());
    assert!(matches!(r, Err(Error::AuthFailed)), "5th failure: {r:?}");
    let until = t5 + 15 * MINUTE;
    // The 6th attempt, with the correct password, is refused and learns the lock.
    f.clock.advance(1000);
    let t6 = now(&f);
    let r = v.login("clerk", &password_of("clerk"), fresh_source());
    assert!(
        matches!(r, Err(Error::AccountLocked { until_ms }) if until_ms == until),
        "5th failure must lock: {r:?}"
    );
    let info = v
        .list_users(&f.admin)
        .unwrap()
        .into_iter()
        .find(|u| u.id == clerk)
        .unwrap();
    assert_eq!(info.locked_until_ms, Some(until));

    // Audit: 5 failures, 1 lock-out, 1 denial, each with user, time, channel, outcome.
    let ev: Vec<AuditEvent> = trail(v, &f.auditor, since(start))
        .into_iter()
        .filter(|e| e.action.starts_with("auth."))
        .collect();
    assert!(
        ev.iter()
            .all(|e| e.actor == Some(clerk) && e.channel == Channel::Cli),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .all(|e| common::ids(&e.targets) == vec![clerk.to_string()]),
        "{ev:?}"
    );
    let failed: Vec<_> = ev
        .iter()
        .filter(|e| e.action == "auth.login" && e.outcome == Outcome::Failed)
        .collect();
    assert_eq!(failed.len(), 5);
    assert!(
        failed
            .iter()
            .all(|e| e.code.as_deref() == Some("auth_failed"))
    );
    assert_eq!(
        failed.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        (1..=5).map(|i| T0 + i * 1000).collect::<Vec<_>>()
    );
    let lockouts: Vec<_> = ev.iter().filter(|e| e.action == "auth.lockout").collect();
    assert_eq!(lockouts.len(), 1);
    assert_eq!(lockouts[0].time_ms, t5);
    let denied: Vec<_> = ev.iter().filter(|e| e.outcome == Outcome::Denied).collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].action, "auth.login");
    assert_eq!(denied[0].code.as_deref(), Some("account_locked"));
    assert_eq!(denied[0].time_ms, t6);
    assert_eq!(ev.len(), 7, "{ev:?}");

    // Still locked 1 ms before the end; a correct login succeeds 1 ms after.
    f.clock.set(t5 + 15 * MINUTE - 1);
    assert!(matches!(
        v.login("clerk", &password_of("clerk"), fresh_source()),
        Err(Error::AccountLocked { .. })
    ));
    f.clock.set(t5 + 15 * MINUTE + 1);
    let s = v
        .login("clerk", &password_of("clerk"), fresh_source())
        .unwrap();
    assert_eq!(s.user(), clerk);
}

#[test]
fn req_auth_05_repeat_lockout_doubles_admin_unlock_and_uniform_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let wrong = secret("Definitely-Wrong-Pass-5");
    let lock = |user: &str| -> i64 {
        for _ in 0..4 {
            assert!(matches!(
                v.login(user, &wrong, fresh_source()),
                Err(Error::AuthFailed)
            ));
        }
        // The locking failure answers AuthFailed like the others; the lock
        // shows in the user list.
        assert!(matches!(
            v.login(user, &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
        v.list_users(&f.admin)
            .unwrap()
            .into_iter()
            .find(|u| u.username.as_str() == user)
            .and_then(|u| u.locked_until_ms)
            .unwrap_or_else(|| panic!("{user}: expected a lock-out"))
    };

    // First lock-out 15 min; the next one, with no successful login in
    // between, 30 min. (A successful login resets the doubling.)
    let t1 = now(&f);
    let until1 = lock("auditor");
    assert_eq!(until1 - t1, 15 * MINUTE);
    f.clock.set(until1 + 1);
    let t2 = now(&f);
    let until2 = lock("auditor");
    assert_eq!(until2 - t2, 30 * MINUTE, "second lock-out doubles");
    f.clock.set(until2 - 1);
    assert!(matches!(
        v.login("auditor", &password_of("auditor"), fresh_source()),
        Err(Error::AccountLocked { .. })
    ));
    f.clock.set(until2 + 1);
    v.login("auditor", &password_of("auditor"), fresh_source())
        .unwrap();

    // An admin can lift a lock-out at once; other roles cannot.
    lock("contractor");
    assert!(matches!(
        v.unlock_user(&f.officer, "contractor"),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        v.login("contractor", &password_of("contractor"), fresh_source()),
        Err(Error::AccountLocked { .. })
    ));
    let before = last_seq(v, &f.auditor);
    let id = v.unlock_user(&f.admin, "contractor").unwrap();
    assert_eq!(id, f.contractor.user());
    v.login("contractor", &password_of("contractor"), fresh_source())
        .unwrap();
    let ev = trail(v, &f.auditor, since(before));
    assert!(ev.iter().any(|e| e.action == "user.unlock"
        && e.actor == Some(f.admin.user())
        && common::ids(&e.targets) == vec![id.to_string()]
        && e.outcome == Outcome::Success));

    // Unknown user and wrong password: the same error, variant and message.
    let unknown = v
        .login("nobody-by-this-name", &wrong, fresh_source())
        .unwrap_err();
    let invalid_name = v
        .login("not a valid name!", &wrong, fresh_source())
        .unwrap_err();
    let bad_password = v.login("officer", &wrong, fresh_source()).unwrap_err();
    for e in [&unknown, &invalid_name, &bad_password] {
        assert!(matches!(e, Error::AuthFailed), "{e:?}");
        assert_eq!(e.to_string(), bad_password.to_string());
        assert_eq!(e.code(), "auth_failed");
    }

    // Over HTTP the client address and request ID are recorded with the failure.
    let http = Context {
        channel: Channel::Http,
        source: Some("198.51.100.7".into()),
        request_id: Some("req-42".into()),
    };
    let before = last_seq(v, &f.auditor);
    assert!(matches!(
        v.login("officer", &wrong, http),
        Err(Error::AuthFailed)
    ));
    let ev = trail(v, &f.auditor, since(before));
    let failed = ev
        .iter()
        .find(|e| e.action == "auth.login")
        .expect("login event");
    assert_eq!(failed.actor, Some(f.officer.user()));
    assert_eq!(
        (failed.channel, failed.outcome),
        (Channel::Http, Outcome::Failed)
    );
    assert_eq!(failed.source.as_deref(), Some("198.51.100.7"));
    assert_eq!(failed.request_id.as_deref(), Some("req-42"));
}

// ---------------------------------------------------------------------------
// REQ-WISP-07: disabling a user revokes sessions and tokens at once

#[test]
fn req_wisp_07_disable_revokes_tokens_and_live_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let clerk = f.clerk.user();
    let token = v.issue_token(&f.clerk, 8 * 60 * MINUTE).unwrap();
    let via_token = v.session_from_token(&token, Context::cli()).unwrap();
    assert_eq!(via_token.user(), clerk);
    v.list_records(&via_token, &RecordFilter::default())
        .unwrap();
    v.list_records(&f.clerk, &RecordFilter::default()).unwrap();

    let before = last_seq(v, &f.auditor);
    assert_eq!(v.disable_user(&f.admin, "clerk").unwrap(), clerk);
    assert!(matches!(
        v.session_from_token(&token, Context::cli()),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.list_records(&f.clerk, &RecordFilter::default()),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.list_records(&via_token, &RecordFilter::default()),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane()),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.login("clerk", &password_of("clerk"), Context::cli()),
        Err(Error::AccountDisabled)
    ));

    let ev = trail(v, &f.auditor, since(before));
    let disable: Vec<_> = ev.iter().filter(|e| e.action == "user.disable").collect();
    assert_eq!(disable.len(), 1);
    assert_eq!(disable[0].actor, Some(f.admin.user()));
    assert_eq!(common::ids(&disable[0].targets), vec![clerk.to_string()]);
    assert!(
        disable[0].targets.iter().any(|t| t.starts_with("state:")),
        "the disable names the sealed rows' new state: {:?}",
        disable[0].targets
    );
    assert_eq!(disable[0].outcome, Outcome::Success);
    let denied = |action: &str, code: &str| {
        ev.iter()
            .filter(|e| {
                e.action == action && e.actor == Some(clerk) && e.outcome == Outcome::Denied
            })
            .filter(|e| e.code.as_deref() == Some(code))
            .count()
    };
    assert_eq!(denied("auth.token", "session_invalid"), 1, "{ev:?}");
    assert_eq!(denied("auth.session", "session_invalid"), 3, "{ev:?}");
    assert_eq!(denied("auth.login", "account_disabled"), 1, "{ev:?}");
    assert!(
        !ev.iter()
            .any(|e| e.actor == Some(clerk) && e.outcome == Outcome::Success),
        "{ev:?}"
    );

    // Re-enabling does not revive old sessions or tokens; a fresh login works.
    v.enable_user(&f.admin, "clerk").unwrap();
    assert!(matches!(
        v.session_from_token(&token, Context::cli()),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.list_records(&f.clerk, &RecordFilter::default()),
        Err(Error::SessionInvalid)
    ));
    let fresh = common::login(v, "clerk");
    v.list_records(&fresh, &RecordFilter::default()).unwrap();
}

// ---------------------------------------------------------------------------
// REQ-WISP-02: no personal-information writes without an active officer

#[test]
fn req_wisp_02_no_active_officer_refuses_record_writes() {
    let tmp = tempfile::tempdir().unwrap();
    // The last active officer cannot be disabled (issue 10), so a vault
    // has no active officer only before the first one is designated.
    let f = fast_vault(&tmp.path().join("f"));
    assert!(matches!(
        f.vault.disable_user(&f.admin, "officer"),
        Err(Error::PermissionDenied(_))
    ));
    assert!(f.vault.has_active_officer());
    drop(f);

    let dir = tmp.path().join("v");
    let clock = Arc::new(ManualClock::new(T0));
    let (admin_name, _, admin_pw) = common::USERS[0];
    let vault = common::create_vault(&dir, &clock, admin_name, admin_pw);
    let admin = common::login(&vault, admin_name);
    vault
        .create_collection(&admin, CUSTOMERS, &common::customers_schema())
        .unwrap();
    for (name, role) in [("clerk", Role::Clerk), ("auditor", Role::Auditor)] {
        vault
            .add_user(&admin, name, &password_of(name), role, false)
            .unwrap();
    }
    let clerk = common::login(&vault, "clerk");
    let auditor = common::login(&vault, "auditor");
    assert!(!vault.has_active_officer());
    let before = last_seq(&vault, &auditor);
    let r = vault.put_record(&clerk, CUSTOMERS, SubjectId::new(), &jane());
    assert!(matches!(r, Err(Error::NoOfficer)), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("officer"));
    let ev = trail(&vault, &auditor, since(before));
    assert!(
        ev.iter().any(|e| e.action == "record.create"
            && e.outcome == Outcome::Failed
            && e.code.as_deref() == Some("no_officer")),
        "{ev:?}"
    );
    // Reads are not personal-information writes.
    assert!(
        vault
            .list_records(&clerk, &RecordFilter::default())
            .unwrap()
            .is_empty()
    );

    // The rule holds across a reopen (the count is rebuilt from storage).
    vault.close().unwrap();
    let vault = common::open_vault(&dir, &clock);
    let admin = common::login(&vault, admin_name);
    let clerk = common::login(&vault, "clerk");
    assert!(!vault.has_active_officer());
    assert!(matches!(
        vault.put_record(&clerk, CUSTOMERS, SubjectId::new(), &jane()),
        Err(Error::NoOfficer)
    ));

    // Bootstrap: the admin designates the first officer without approval.
    vault.set_role(&admin, "auditor", Role::Officer).unwrap();
    assert!(vault.has_active_officer());
    let id = vault
        .put_record(&clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    assert_eq!(vault.update_record(&clerk, id, &jane()).unwrap(), 2);
}

// ---------------------------------------------------------------------------
// REQ-MON-01: one read event per read; the trail verifies across reopen

#[test]
fn req_mon_01_one_read_event_per_read_and_trail_verifies_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();

    // A plain read: exactly one record.read event (after the audit.read of the query).
    let before = last_seq(v, &f.auditor);
    v.get_record(&f.clerk, id, &[], None).unwrap();
    let ev = trail(v, &f.auditor, since(before));
    let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["audit.read", "record.read"], "{ev:?}");
    let read = &ev[1];
    assert_eq!(read.seq, before + 2);
    assert_eq!(
        (read.actor, read.outcome, read.channel),
        (Some(f.clerk.user()), Outcome::Success, Channel::Cli)
    );
    assert_eq!(read.targets, vec![id.to_string()]);
    assert_eq!(read.time_ms, now(&f));

    // A read with two reveals: one read event plus one reveal event per field.
    let before = last_seq(v, &f.auditor);
    v.get_record(&f.officer, id, &["ssn", "drivers_license"], Some(REASON))
        .unwrap();
    let ev = trail(v, &f.auditor, since(before));
    let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "audit.read",
            "record.read",
            "record.reveal",
            "record.reveal"
        ],
        "{ev:?}"
    );

    // A read of a missing record: one failed read event.
    let before = last_seq(v, &f.auditor);
    assert!(matches!(
        v.get_record(&f.clerk, RecordId::new(), &[], None),
        Err(Error::NotFound(_))
    ));
    let ev = trail(v, &f.auditor, since(before));
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(
        (ev[1].action.as_str(), ev[1].outcome, ev[1].code.as_deref()),
        ("record.read", Outcome::Failed, Some("not_found"))
    );

    // A mixed workload, with denials and failures, then verify.
    for i in 0..20 {
        f.clock.advance(10);
        let rid = v
            .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
            .unwrap();
        if i % 3 == 0 {
            v.update_record(&f.clerk, rid, &jane()).unwrap();
        }
        v.get_record(&f.officer, rid, &["ssn"], Some(REASON))
            .unwrap();
        let _ = v.get_record(&f.contractor, rid, &[], None);
        let _ = v.login("clerk", &secret("Wrong-Password-Here-0"), Context::cli());
    }
    v.list_records(&f.contractor, &RecordFilter::default())
        .unwrap();
    let report = v.audit_verify(&f.officer).unwrap();
    assert!(report.ok(), "{report:?}");
    let events_before_close = report.events;
    assert!(events_before_close > 100);

    let f = f.reopen();
    let report = f.vault.audit_verify(&f.auditor).unwrap();
    assert!(report.ok(), "{report:?}");
    // Everything before the close, plus the verify event, and the close checkpoint covers it all.
    assert_eq!(report.events, events_before_close + 1);
    assert!(report.checkpoints >= 1);
    assert_eq!(report.last_checkpoint_seq, report.events);
    // Offline verification with only the public key agrees.
    let offline =
        vault_core::audit::verify(&dir.join("audit"), &f.vault.audit_public_key()).unwrap();
    assert!(offline.ok(), "{offline:?}");
    // Work after reopen keeps the chain.
    f.vault.get_record(&f.clerk, id, &[], None).unwrap();
    let f = f.reopen();
    assert!(f.vault.audit_verify(&f.officer).unwrap().ok());
}

// ---------------------------------------------------------------------------
// REQ-WISP-06: activity report equals the seeded fixture

#[test]
fn req_wisp_06_activity_report_matches_seeded_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();

    f.clock.advance(MINUTE);
    let from = now(&f);
    for _ in 0..3 {
        v.get_record(&f.clerk, id, &[], None).unwrap();
    }
    for _ in 0..2 {
        v.get_record(&f.officer, id, &["ssn"], Some(REASON))
            .unwrap();
    }
    assert!(matches!(
        v.get_record(&f.contractor, id, &[], None),
        Err(Error::PermissionDenied(_))
    ));
    let wrong = secret("Not-The-Auditor-Pass-3");
    for _ in 0..4 {
        assert!(matches!(
            v.login("auditor", &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
    }
    assert!(matches!(
        v.login("auditor", &wrong, fresh_source()),
        Err(Error::AuthFailed)
    ));
    // (The 5th failure locks: the report below counts the lock-out.)
    f.clock.advance(MINUTE);
    let to = now(&f);
    // At `to` itself: outside the half-open window [from, to).
    v.get_record(&f.clerk, id, &[], None).unwrap();

    let mut expected = vec![
        UserActivity {
            user: f.clerk.user(),
            reads: 3,
            reveals: 0,
            exports: 0,
            writes: 0,
            denials: 0,
            logins: 0,
            failed_logins: 0,
            lockouts: 0,
            unvouched: 0,
        },
        UserActivity {
            user: f.officer.user(),
            reads: 2,
            reveals: 2,
            exports: 0,
            writes: 0,
            denials: 0,
            logins: 0,
            failed_logins: 0,
            lockouts: 0,
            unvouched: 0,
        },
        UserActivity {
            user: f.contractor.user(),
            reads: 0,
            reveals: 0,
            exports: 0,
            writes: 0,
            denials: 1,
            logins: 0,
            failed_logins: 0,
            lockouts: 0,
            unvouched: 0,
        },
        UserActivity {
            user: f.auditor.user(),
            reads: 0,
            reveals: 0,
            exports: 0,
            writes: 0,
            denials: 0,
            logins: 0,
            failed_logins: 5,
            lockouts: 1,
            unvouched: 0,
        },
    ];
    expected.sort_by_key(|a| a.user);
    let report = v.activity_report(&f.officer, from, to).unwrap();
    assert_eq!(report, expected);

    // The fixture's own set-up (logins, the record write) lies before the window.
    let setup = v.activity_report(&f.officer, T0, from).unwrap();
    let clerk = setup.iter().find(|a| a.user == f.clerk.user()).unwrap();
    assert_eq!((clerk.logins, clerk.writes, clerk.reads), (1, 1, 0));
    assert!(
        v.activity_report(&f.officer, T0 - MINUTE, T0)
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// Tamper detection of stored records

/// Offset of the envelope in a live record row (store.rs `RecordRow::encode`):
/// v1 | state | version(4) | subject(16) | created(8) | updated(8) | created_by(16) | len | collection.
fn envelope_offset(collection: &str) -> usize {
    1 + 1 + 4 + 16 + 8 + 8 + 16 + 1 + collection.len()
}

/// Opens the records database of a closed vault directly, with every column
/// family it has (records, by_subject, by_collection, collections, users,
/// usernames, sessions, meta, and whatever later versions add).
fn raw_records_db(vault_dir: &Path) -> rocksdb::DB {
    let path = vault_dir.join("records");
    let uncompressed = || {
        let mut o = rocksdb::Options::default();
        o.set_compression_type(rocksdb::DBCompressionType::None);
        o
    };
    let names = rocksdb::DB::list_cf(&uncompressed(), &path).expect("list column families");
    for cf in [
        "records",
        "by_subject",
        "by_collection",
        "collections",
        "users",
        "usernames",
        "sessions",
        "meta",
    ] {
        assert!(
            names.iter().any(|n| n == cf),
            "column family {cf} missing: {names:?}"
        );
    }
    let cfs = names
        .iter()
        .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, uncompressed()));
    rocksdb::DB::open_cf_descriptors(&uncompressed(), &path, cfs).expect("open records DB")
}

#[test]
fn tampered_record_rows_fail_with_integrity_never_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let body = json!({"given_name": "Jo", "family_name": "Li", "ssn": "123-45-6789"});
    let normalised = common::customers_schema().validate(&body).unwrap();
    let env_len = serde_json::to_vec(&normalised).unwrap().len() + 1 + 12 + 16;
    let subject = SubjectId::new();
    // One record per (envelope byte, bit mask), plus metadata flips, moves and controls.
    let flips: Vec<(usize, u8)> = [0x01u8, 0x80]
        .iter()
        .flat_map(|&m| (0..env_len).map(move |i| (i, m)))
        .collect();
    let put = || {
        f.vault
            .put_record(&f.clerk, CUSTOMERS, subject, &body)
            .unwrap()
    };
    let flipped: Vec<RecordId> = flips.iter().map(|_| put()).collect();
    let version_flip = put();
    let subject_flips: Vec<RecordId> = (0..4).map(|_| put()).collect();
    let (a, b) = (put(), put());
    let c = f
        .vault
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &body)
        .unwrap();
    let controls: Vec<RecordId> = (0..3).map(|_| put()).collect();
    let Fixture { vault, clock, .. } = f;
    vault.close().unwrap();

    {
        let db = raw_records_db(&dir);
        let cf = db.cf_handle("records").unwrap();
        let get = |id: RecordId| db.get_cf(cf, id.as_bytes()).unwrap().expect("row exists");
        let off = envelope_offset(CUSTOMERS);
        for (id, (pos, mask)) in flipped.iter().zip(&flips) {
            let mut row = get(*id);
            assert_eq!(
                row.len() - off,
                env_len,
                "row layout as documented in store.rs"
            );
            assert_eq!(row[off], 1, "envelope version byte");
            row[off + pos] ^= mask;
            db.put_cf(cf, id.as_bytes(), row).unwrap();
        }
        // Metadata bound by the AAD: version and subject.
        let mut row = get(version_flip);
        row[5] ^= 0x01;
        db.put_cf(cf, version_flip.as_bytes(), row).unwrap();
        for (k, id) in subject_flips.iter().enumerate() {
            let mut row = get(*id);
            row[6 + 4 * k] ^= 0x10;
            db.put_cf(cf, id.as_bytes(), row).unwrap();
        }
        // Record A's row under B's key (same subject) and C's key (another subject).
        let row_a = get(a);
        db.put_cf(cf, b.as_bytes(), &row_a[..]).unwrap();
        db.put_cf(cf, c.as_bytes(), row_a).unwrap();
        db.flush_cf(cf).unwrap();
    }

    let vault = common::open_vault(&dir, &clock);
    let officer = common::login(&vault, "officer");
    let auditor = common::login(&vault, "auditor");
    let expect_integrity = |id: RecordId, what: &str| {
        for reveal in [&[][..], &["ssn"][..]] {
            match vault.get_record(&officer, id, reveal, Some(REASON)) {
                Err(Error::Integrity(_)) => {}
                Ok(view) => panic!(
                    "{what}: tampered record {id} read back as {:?}",
                    view.fields
                ),
                Err(e) => panic!("{what}: expected Integrity, got {e:?}"),
            }
        }
    };
    for (id, (pos, mask)) in flipped.iter().zip(&flips) {
        expect_integrity(*id, &format!("envelope byte {pos} ^ {mask:#04x}"));
    }
    expect_integrity(version_flip, "version flipped");
    for id in &subject_flips {
        expect_integrity(*id, "subject flipped");
    }
    expect_integrity(b, "A's row under B's key");
    expect_integrity(c, "A's row under C's key");
    // Untouched records still read correctly, the vault stays usable, and the
    // failures are in a trail that still verifies.
    for id in controls.iter().chain([&a]) {
        let view = vault
            .get_record(&officer, *id, &["ssn"], Some(REASON))
            .unwrap();
        assert_eq!(view.fields["ssn"], "123-45-6789");
    }
    let failed = trail(
        &vault,
        &auditor,
        EventFilter {
            action_prefix: Some("record.".into()),
            ..EventFilter::default()
        },
    )
    .into_iter()
    .filter(|e| e.code.as_deref() == Some("integrity"))
    .count();
    assert_eq!(failed, 2 * (flips.len() + 1 + subject_flips.len() + 2));
    assert!(vault.audit_verify(&auditor).unwrap().ok());
}

// ---------------------------------------------------------------------------
// Model-based test of record storage with reopens

/// Record bodies as submitted, and the officer's fully revealed view of each.
fn model_bodies() -> Vec<(Value, Value)> {
    vec![
        (
            json!({"given_name": "Jane", "family_name": "Doe", "ssn": "123-45-6789"}),
            json!({"given_name": "Jane", "family_name": "Doe", "ssn": "123-45-6789"}),
        ),
        (
            json!({"given_name": " Ana ", "family_name": "O'Neil", "ssn": "219099999", "card_number": "4111-1111-1111-1111"}),
            json!({"given_name": "Ana", "family_name": "O'Neil", "ssn": "219-09-9999", "card_number": "4111 1111 1111 1111"}),
        ),
        (
            json!({"given_name": "J.", "family_name": "Smith", "drivers_license": "ma:s12345678"}),
            json!({"given_name": "J.", "family_name": "Smith", "drivers_license": "MA S12345678"}),
        ),
        (
            json!({"given_name": "Li", "family_name": "Wei", "card_number": "378282246310005",
                   "drivers_license": {"state": "ny", "number": "ab-123 456"}}),
            json!({"given_name": "Li", "family_name": "Wei", "card_number": "3782 822463 10005",
                   "drivers_license": "NY AB123456"}),
        ),
        (
            json!({"given_name": "Zoë", "family_name": "Müller-Lüdenscheidt", "ssn": "078-05-1120",
                   "card_number": "5555555555554444", "drivers_license": {"state": "MA", "number": "SA1234567"}}),
            json!({"given_name": "Zoë", "family_name": "Müller-Lüdenscheidt", "ssn": "078-05-1120",
                   "card_number": "5555 5555 5555 4444", "drivers_license": "MA SA1234567"}),
        ),
    ]
}

#[derive(Clone, Debug)]
enum ModelOp {
    Put { subject: usize, body: usize },
    Update { record: Index, body: usize },
    Get { record: Index },
    List,
    Reopen { clean: bool },
}

const MODEL_SUBJECTS: usize = 3;

fn model_op() -> impl Strategy<Value = ModelOp> {
    let bodies = model_bodies().len();
    prop_oneof![
        4 => (0..MODEL_SUBJECTS, 0..bodies).prop_map(|(subject, body)| ModelOp::Put { subject, body }),
        3 => (any::<Index>(), 0..bodies).prop_map(|(record, body)| ModelOp::Update { record, body }),
        3 => any::<Index>().prop_map(|record| ModelOp::Get { record }),
        1 => Just(ModelOp::List),
        1 => any::<bool>().prop_map(|clean| ModelOp::Reopen { clean }),
    ]
}

/// (subject index, body index, version) per record.
type Model = BTreeMap<RecordId, (usize, usize, u32)>;

/// A closed vault with an admin, an officer, a clerk and the `customers`
/// collection, copied for each case; the officer and the clerk hold API
/// tokens, so opening a copy costs no password hashing beyond the open.
struct ModelTemplate {
    dir: std::path::PathBuf,
    officer_token: String,
    clerk_token: String,
}

impl ModelTemplate {
    fn create(dir: &Path) -> ModelTemplate {
        let clock = Arc::new(ManualClock::new(T0));
        let (admin_name, _, admin_pw) = common::USERS[0];
        let vault = common::create_vault(dir, &clock, admin_name, admin_pw);
        let admin = common::login(&vault, admin_name);
        vault
            .create_collection(&admin, CUSTOMERS, &common::customers_schema())
            .unwrap();
        vault
            .add_user(
                &admin,
                "officer",
                &password_of("officer"),
                Role::Officer,
                false,
            )
            .unwrap();
        vault
            .add_user(&admin, "clerk", &password_of("clerk"), Role::Clerk, false)
            .unwrap();
        let officer = common::login(&vault, "officer");
        let clerk = common::login(&vault, "clerk");
        let officer_token = vault
            .issue_token(&officer, 8 * 60 * MINUTE)
            .unwrap()
            .expose()
            .to_owned();
        let clerk_token = vault
            .issue_token(&clerk, 8 * 60 * MINUTE)
            .unwrap()
            .expose()
            .to_owned();
        vault.close().unwrap();
        ModelTemplate {
            dir: dir.to_path_buf(),
            officer_token,
            clerk_token,
        }
    }

    /// A private copy of the template vault at `dir`, opened.
    fn instantiate(&self, dir: &Path) -> ModelVault {
        copy_private_dir(&self.dir, dir);
        ModelVault::open(
            dir,
            Arc::new(ManualClock::new(T0)),
            &self.officer_token,
            &self.clerk_token,
        )
    }
}

/// Copies a closed vault directory, keeping it private (0700 dirs, 0600 files).
fn copy_private_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_private_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

struct ModelVault {
    vault: Vault,
    clock: Arc<ManualClock>,
    officer_token: SecretString,
    clerk_token: SecretString,
    officer: Session,
    clerk: Session,
}

impl ModelVault {
    fn open(
        dir: &Path,
        clock: Arc<ManualClock>,
        officer_token: &str,
        clerk_token: &str,
    ) -> ModelVault {
        let vault = common::open_vault(dir, &clock);
        let (officer_token, clerk_token) = (secret(officer_token), secret(clerk_token));
        let officer = vault
            .session_from_token(&officer_token, Context::cli())
            .unwrap();
        let clerk = vault
            .session_from_token(&clerk_token, Context::cli())
            .unwrap();
        ModelVault {
            vault,
            clock,
            officer_token,
            clerk_token,
            officer,
            clerk,
        }
    }

    fn reopen(self, dir: &Path, clean: bool) -> ModelVault {
        let ModelVault {
            vault,
            clock,
            officer_token,
            clerk_token,
            ..
        } = self;
        if clean {
            vault.close().unwrap();
        } else {
            vault.abandon();
        }
        ModelVault::open(dir, clock, officer_token.expose(), clerk_token.expose())
    }

    fn check_record(
        &self,
        id: RecordId,
        expected: &(usize, usize, u32),
        subjects: &[SubjectId],
    ) -> Result<(), TestCaseError> {
        let (subject, body, version) = *expected;
        let revealed = &model_bodies()[body].1;
        let all = ["ssn", "card_number", "drivers_license"];
        let view = self
            .vault
            .get_record(&self.officer, id, &all, Some("model check"))
            .unwrap();
        prop_assert_eq!(&Value::Object(view.fields.clone()), revealed);
        prop_assert_eq!(view.meta.version, version);
        prop_assert_eq!(view.meta.subject, subjects[subject]);
        prop_assert_eq!(view.meta.collection.as_str(), CUSTOMERS);
        // The clerk's view has the same keys and never a sensitive value in clear.
        let masked = self.vault.get_record(&self.clerk, id, &[], None).unwrap();
        let keys = |m: &Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
        prop_assert_eq!(keys(&masked.fields), keys(&view.fields));
        for f in all {
            if let Some(v) = masked.fields.get(f) {
                prop_assert_ne!(Some(v), revealed.get(f));
                prop_assert!(v.as_str().unwrap().contains('*'));
            }
        }
        Ok(())
    }

    fn check_list(&self, model: &Model, subjects: &[SubjectId]) -> Result<(), TestCaseError> {
        let listed: BTreeMap<RecordId, (SubjectId, u32)> = self
            .vault
            .list_records(&self.officer, &RecordFilter::default())
            .unwrap()
            .into_iter()
            .map(|m| (m.id, (m.subject, m.version)))
            .collect();
        let expected: BTreeMap<RecordId, (SubjectId, u32)> = model
            .iter()
            .map(|(id, (s, _, v))| (*id, (subjects[*s], *v)))
            .collect();
        prop_assert_eq!(listed, expected);
        // Filter by subject and collection agree too.
        for (k, sub) in subjects.iter().enumerate() {
            let filter = RecordFilter {
                subject: Some(*sub),
                collection: None,
            };
            let ids: BTreeSet<RecordId> = self
                .vault
                .list_records(&self.clerk, &filter)
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            let want: BTreeSet<RecordId> = model
                .iter()
                .filter(|(_, (s, _, _))| *s == k)
                .map(|(id, _)| *id)
                .collect();
            prop_assert_eq!(ids, want);
        }
        let filter = RecordFilter {
            collection: Some(CollectionName::parse(CUSTOMERS).unwrap()),
            subject: None,
        };
        prop_assert_eq!(
            self.vault.list_records(&self.clerk, &filter).unwrap().len(),
            model.len()
        );
        Ok(())
    }
}

fn run_model(
    template: &ModelTemplate,
    root: &Path,
    ops: Vec<ModelOp>,
) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir_in(root).unwrap();
    let dir = tmp.path().join("v");
    let mut mv = template.instantiate(&dir);
    let subjects: Vec<SubjectId> = (0..MODEL_SUBJECTS).map(|_| SubjectId::new()).collect();
    let bodies = model_bodies();
    let mut model = Model::new();
    for op in ops {
        mv.clock.advance(1000);
        match op {
            ModelOp::Put { subject, body } => {
                let id = mv
                    .vault
                    .put_record(&mv.clerk, CUSTOMERS, subjects[subject], &bodies[body].0)
                    .unwrap();
                prop_assert!(model.insert(id, (subject, body, 1)).is_none());
                mv.check_record(id, &model[&id], &subjects)?;
            }
            ModelOp::Update { record, body } => {
                if model.is_empty() {
                    let r = mv
                        .vault
                        .update_record(&mv.clerk, RecordId::new(), &bodies[body].0);
                    prop_assert!(matches!(r, Err(Error::NotFound(_))));
                    continue;
                }
                let id = *model.keys().nth(record.index(model.len())).unwrap();
                let version = mv
                    .vault
                    .update_record(&mv.clerk, id, &bodies[body].0)
                    .unwrap();
                let entry = model.get_mut(&id).unwrap();
                entry.1 = body;
                entry.2 += 1;
                prop_assert_eq!(version, entry.2);
                mv.check_record(id, &model[&id], &subjects)?;
            }
            ModelOp::Get { record } => {
                if model.is_empty() {
                    let r = mv.vault.get_record(&mv.officer, RecordId::new(), &[], None);
                    prop_assert!(matches!(r, Err(Error::NotFound(_))));
                    continue;
                }
                let id = *model.keys().nth(record.index(model.len())).unwrap();
                mv.check_record(id, &model[&id], &subjects)?;
            }
            ModelOp::List => mv.check_list(&model, &subjects)?,
            ModelOp::Reopen { clean } => {
                mv = mv.reopen(&dir, clean);
                for (id, expected) in &model {
                    mv.check_record(*id, expected, &subjects)?;
                }
            }
        }
    }
    mv.check_list(&model, &subjects)?;
    for (id, expected) in &model {
        mv.check_record(*id, expected, &subjects)?;
    }
    prop_assert!(mv.vault.audit_verify(&mv.officer).unwrap().ok());
    Ok(())
}

#[test]
fn model_based_records_agree_with_model_across_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let template = ModelTemplate::create(&tmp.path().join("template"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 30,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ops = proptest::collection::vec(model_op(), 5..40);
    if let Err(e) = runner.run(&ops, |ops| run_model(&template, tmp.path(), ops)) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// REQ-DEF-03: classification through the facade

#[test]
fn req_def_03_classification_flags_through_the_facade() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let optional = |name: &str, ty: FieldType| FieldSpec {
        name: name.into(),
        ty,
        required: false,
        purpose: None,
    };
    let fields = || {
        vec![
            optional("given_name", FieldType::GivenName),
            optional("family_name", FieldType::FamilyName),
            optional("ssn", FieldType::Ssn),
            optional("drivers_license", FieldType::DriversLicense),
        ]
    };
    v.create_collection(
        &f.admin,
        "people",
        &Schema::new("identity checks", fields(), None).unwrap(),
    )
    .unwrap();
    v.create_collection(
        &f.admin,
        "ny-people",
        &Schema::new("identity checks (NY office)", fields(), Some("NY".into())).unwrap(),
    )
    .unwrap();
    let classify = |collection: &str, body: Value| -> Classification {
        let id = v
            .put_record(&f.clerk, collection, SubjectId::new(), &body)
            .unwrap();
        let by_clerk = v
            .get_record(&f.clerk, id, &[], None)
            .unwrap()
            .classification;
        let by_officer = v
            .get_record(&f.officer, id, &["ssn"], Some(REASON))
            .unwrap()
            .classification;
        assert_eq!(
            by_clerk, by_officer,
            "classification does not depend on masking"
        );
        by_clerk
    };
    let ssn = "123-45-6789";
    let licence = json!({"state": "MA", "number": "S12345678"});

    let c = classify(
        "people",
        json!({"given_name": "Jane", "family_name": "Doe", "ssn": ssn}),
    );
    assert!(
        c.ma_personal_information && c.has_name && c.ma_resident,
        "{c:?}"
    );
    assert_eq!(c.sensitive_elements, vec![FieldType::Ssn]);

    let c = classify("people", json!({"ssn": ssn}));
    assert!(!c.ma_personal_information && !c.has_name, "{c:?}");
    assert_eq!(
        c.sensitive_elements,
        vec![FieldType::Ssn],
        "SSN alone is sensitive"
    );

    let c = classify(
        "people",
        json!({"given_name": "J.", "family_name": "Doe", "drivers_license": licence.clone()}),
    );
    assert!(c.ma_personal_information && c.has_name, "{c:?}");
    assert_eq!(c.sensitive_elements, vec![FieldType::DriversLicense]);

    let c = classify(
        "people",
        json!({"given_name": "Jane", "family_name": "Doe", "ssn": ssn, "drivers_license": licence.clone()}),
    );
    assert!(c.ma_personal_information);
    assert_eq!(
        c.sensitive_elements,
        vec![FieldType::Ssn, FieldType::DriversLicense]
    );

    // Negative controls: a name alone, a given name without family name, a non-MA resident.
    let c = classify(
        "people",
        json!({"given_name": "Jane", "family_name": "Doe"}),
    );
    assert!(
        !c.ma_personal_information && c.sensitive_elements.is_empty(),
        "{c:?}"
    );
    let c = classify("people", json!({"given_name": "Jane", "ssn": ssn}));
    assert!(!c.ma_personal_information && !c.has_name, "{c:?}");
    let c = classify(
        "ny-people",
        json!({"given_name": "Jane", "family_name": "Doe", "ssn": ssn}),
    );
    assert!(
        !c.ma_personal_information && !c.ma_resident && c.has_name,
        "{c:?}"
    );
    assert_eq!(c.sensitive_elements, vec![FieldType::Ssn]);
    // The customers fixture collection: name + SSN + card + licence.
    let c = classify(CUSTOMERS, jane());
    assert!(c.ma_personal_information);
    assert_eq!(
        c.sensitive_elements,
        vec![
            FieldType::Ssn,
            FieldType::DriversLicense,
            FieldType::CardNumber
        ]
    );
}

/// Row format v2 binds the metadata fixed for a version (creation and update
/// times, creator) into the envelope's AAD: editing those bytes of a stored
/// row, or relabelling the row as format v1, makes the read fail.
#[test]
fn tampered_record_row_metadata_fails_with_integrity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = fast_vault(&dir);
    let put = || {
        f.vault
            .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
            .unwrap()
    };
    // (what, byte offset in the row, xor mask); layout in store.rs.
    let edits: [(&str, usize, u8); 6] = [
        ("format v2 -> v1", 0, 0x03),
        ("created_ms", 1 + 1 + 4 + 16 + 7, 0x01),
        ("created_ms (high byte)", 1 + 1 + 4 + 16, 0x40),
        ("updated_ms", 1 + 1 + 4 + 16 + 8 + 7, 0x01),
        ("created_by", 1 + 1 + 4 + 16 + 8 + 8, 0x01),
        ("created_by (last byte)", 1 + 1 + 4 + 16 + 8 + 8 + 15, 0x80),
    ];
    let tampered: Vec<RecordId> = edits.iter().map(|_| put()).collect();
    let updated = put();
    f.vault.update_record(&f.clerk, updated, &jane()).unwrap();
    let control = put();
    let Fixture { vault, clock, .. } = f;
    vault.close().unwrap();
    {
        let db = raw_records_db(&dir);
        let cf = db.cf_handle("records").unwrap();
        for (id, (_, pos, mask)) in tampered.iter().zip(&edits) {
            let mut row = db.get_cf(cf, id.as_bytes()).unwrap().unwrap();
            assert_eq!(row[0], 2, "new rows are written in format v2");
            row[*pos] ^= mask;
            db.put_cf(cf, id.as_bytes(), row).unwrap();
        }
        // An updated (version 2) row: its update time is bound too.
        let mut row = db.get_cf(cf, updated.as_bytes()).unwrap().unwrap();
        assert_eq!(row[0], 2);
        row[1 + 1 + 4 + 16 + 8 + 7] ^= 0x01;
        db.put_cf(cf, updated.as_bytes(), row).unwrap();
        db.flush_cf(cf).unwrap();
    }
    let vault = common::open_vault(&dir, &clock);
    let clerk = common::login(&vault, "clerk");
    for (id, (what, _, _)) in tampered
        .iter()
        .zip(&edits)
        .chain([(&updated, &("updated_ms of version 2", 0, 0))])
    {
        match vault.get_record(&clerk, *id, &[], None) {
            Err(Error::Integrity(_)) => {}
            other => panic!("{what}: expected Integrity, got {other:?}"),
        }
    }
    let view = vault.get_record(&clerk, control, &[], None).unwrap();
    assert_eq!(view.fields["family_name"], "Doe");
}
