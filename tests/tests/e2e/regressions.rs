//! Regression tests for gaps found after the first release of the engine,
//! each failing on the code before its fix: fail-closed auditing of updates
//! and of user and collection changes, the REQ-AUTH-05 lock-out doubling and
//! admin unlock, the import write count in the activity report, and the
//! in-memory caches of user rows and schemas seeing every change at once.

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::access::Role;
use vault_core::clock::Clock;
use vault_core::ids::SubjectId;
use vault_core::secret::SecretString;
use vault_core::vault::{ImportFormat, RecordFilter};

use crate::common::{
    CUSTOMERS, USERS, customers_schema, fast_vault, fresh_source, login, password_of,
};

const MINUTE: i64 = 60 * 1000;

fn jane() -> Value {
    json!({"given_name": "Jane", "family_name": "Doe", "ssn": "123-45-6789"})
}

fn audit_unavailable<T: std::fmt::Debug>(r: vault_core::Result<T>) {
    assert!(matches!(r, Err(Error::AuditUnavailable(_))), "{r:?}");
}

#[test]
fn update_record_is_undone_when_its_audit_event_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    let corrected = json!({"given_name": "Janet", "family_name": "Doe", "ssn": "123-45-6789"});

    v.set_audit_failure(true);
    audit_unavailable(v.update_record(&f.clerk, id, &corrected));
    v.set_audit_failure(false);

    // The old version is still there and readable (its key was not deleted).
    let view = v.get_record(&f.clerk, id, &[], None).unwrap();
    assert_eq!(view.meta.version, 1);
    assert_eq!(view.fields["given_name"], "Jane");
    // And a later, audited update works normally.
    assert_eq!(v.update_record(&f.clerk, id, &corrected).unwrap(), 2);
    let view = v.get_record(&f.clerk, id, &[], None).unwrap();
    assert_eq!(view.fields["given_name"], "Janet");
}

#[test]
fn user_changes_are_undone_when_their_audit_event_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;

    v.set_audit_failure(true);
    audit_unavailable(v.disable_user(&f.admin, "clerk"));
    audit_unavailable(v.set_role(&f.admin, "clerk", Role::Auditor));
    audit_unavailable(v.set_password(
        &f.admin,
        "clerk",
        &SecretString::from("Brand-New-Meadow-Pass-77"),
    ));
    audit_unavailable(v.add_user(
        &f.admin,
        "newhire",
        &SecretString::from("Quartz-Fjord-Lantern-12"),
        Role::Clerk,
        false,
    ));
    audit_unavailable(v.create_collection(&f.admin, "suppliers", &customers_schema()));
    v.set_audit_failure(false);

    // The clerk is still an active clerk with the old password and session.
    v.put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    login(v, "clerk");
    let users = v.list_users(&f.admin).unwrap();
    assert!(users.iter().all(|u| u.username.as_str() != "newhire"));
    let clerk = users
        .iter()
        .find(|u| u.username.as_str() == "clerk")
        .unwrap();
    assert_eq!(clerk.role, Role::Clerk);
    // Neither the user nor the collection half-exists: both can be created now.
    v.add_user(
        &f.admin,
        "newhire",
        &SecretString::from("Quartz-Fjord-Lantern-12"),
        Role::Clerk,
        false,
    )
    .unwrap();
    v.create_collection(&f.admin, "suppliers", &customers_schema())
        .unwrap();
}

#[test]
fn imported_records_are_removed_when_their_audit_event_cannot_be_written() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let file = "{\"subject\": \"C-1\", \"given_name\": \"Ann\", \"family_name\": \"Lee\"}\n";
    v.set_audit_failure(true);
    audit_unavailable(v.import_records(
        &f.clerk,
        CUSTOMERS,
        file.as_bytes(),
        ImportFormat::JsonLines,
        "subject",
        false,
        &mut |_| {},
    ));
    v.set_audit_failure(false);
    let left = v.list_records(&f.clerk, &RecordFilter::default()).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn login_success_keeps_the_lockout_doubling_and_admin_unlock_resets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let wrong = SecretString::from("Definitely-Wrong-Pass-5");
    let lock = || -> i64 {
        for _ in 0..4 {
            assert!(matches!(
                v.login("auditor", &wrong, fresh_source()),
                Err(Error::AuthFailed)
            ));
        }
        // The locking failure answers AuthFailed (uniform 401); the lock
        // shows in the user list.
        assert!(matches!(
            v.login("auditor", &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
        let until = v
            .list_users(&f.admin)
            .unwrap()
            .into_iter()
            .find(|u| u.username.as_str() == "auditor")
            .and_then(|u| u.locked_until_ms)
            .expect("expected a lock-out");
        until - f.clock.now_ms()
    };

    assert_eq!(lock(), 15 * MINUTE);
    f.clock.advance(15 * MINUTE + 1);
    // The owner logs in successfully in between: the next lock-out still doubles.
    v.login("auditor", &password_of("auditor"), fresh_source())
        .unwrap();
    assert_eq!(lock(), 30 * MINUTE, "a successful login reset the doubling");
    // Four failures, then a success, then four more: not five consecutive.
    f.clock.advance(30 * MINUTE + 1);
    for _ in 0..4 {
        assert!(v.login("auditor", &wrong, fresh_source()).is_err());
    }
    v.login("auditor", &password_of("auditor"), fresh_source())
        .unwrap();
    for _ in 0..4 {
        assert!(matches!(
            v.login("auditor", &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
    }
    v.login("auditor", &password_of("auditor"), fresh_source())
        .unwrap();

    // An admin's unlock resets the lock, the failure count and the doubling.
    assert_eq!(lock(), 60 * MINUTE);
    for _ in 0..3 {
        assert!(v.login("auditor", &wrong, fresh_source()).is_err());
    }
    v.unlock_user(&f.admin, "auditor").unwrap();
    v.login("auditor", &password_of("auditor"), fresh_source())
        .unwrap();
    assert_eq!(
        lock(),
        15 * MINUTE,
        "admin unlock did not reset the doubling"
    );
    v.unlock_user(&f.admin, "auditor").unwrap();
    // Failures before the unlock do not count towards the next lock-out.
    for _ in 0..3 {
        assert!(v.login("auditor", &wrong, fresh_source()).is_err());
    }
    v.unlock_user(&f.admin, "auditor").unwrap();
    for _ in 0..4 {
        assert!(matches!(
            v.login("auditor", &wrong, fresh_source()),
            Err(Error::AuthFailed)
        ));
    }
}

#[test]
fn activity_report_counts_one_write_per_imported_record() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    f.clock.advance(MINUTE);
    let from = f.clock.now_ms();
    let file = (1..=3)
        .map(|i| {
            format!(
                "{{\"subject\": \"C-{i}\", \"given_name\": \"Ann\", \"family_name\": \"Lee\"}}\n"
            )
        })
        .collect::<String>();
    let report = v
        .import_records(
            &f.clerk,
            CUSTOMERS,
            file.as_bytes(),
            ImportFormat::JsonLines,
            "subject",
            false,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(report.imported, 3);
    f.clock.advance(MINUTE);
    let activity = v
        .activity_report(&f.officer, from, f.clock.now_ms())
        .unwrap();
    let clerk = activity.iter().find(|a| a.user == f.clerk.user()).unwrap();
    assert_eq!(clerk.writes, 3, "{clerk:?}");
}

#[test]
fn cached_user_rows_and_schemas_see_every_change_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    // Warm the caches, then change the user: the very next call sees it.
    for _ in 0..3 {
        v.get_record(&f.clerk, id, &[], None).unwrap();
    }
    v.set_role(&f.admin, "clerk", Role::Auditor).unwrap();
    assert!(matches!(
        v.get_record(&f.clerk, id, &[], None),
        Err(Error::SessionInvalid)
    ));
    let clerk = login(v, "clerk");
    assert!(matches!(
        v.get_record(&f.clerk, id, &[], None),
        Err(Error::SessionInvalid)
    ));
    assert!(matches!(
        v.get_record(&clerk, id, &[], None),
        Err(Error::PermissionDenied(_))
    ));
    v.set_role(&f.admin, "clerk", Role::Clerk).unwrap();
    let clerk = login(v, "clerk");
    v.get_record(&clerk, id, &[], None).unwrap();
    v.disable_user(&f.admin, "clerk").unwrap();
    assert!(matches!(
        v.get_record(&clerk, id, &[], None),
        Err(Error::SessionInvalid)
    ));

    // A collection created after the schema cache was filled is found.
    v.get_record(&f.officer, id, &["ssn"], Some("identity check by phone"))
        .unwrap();
    v.create_collection(&f.admin, "suppliers", &customers_schema())
        .unwrap();
    v.enable_user(&f.admin, "clerk").unwrap();
    let clerk = login(v, USERS[2].0);
    let sid = v
        .put_record(&clerk, "suppliers", SubjectId::new(), &jane())
        .unwrap();
    assert_eq!(
        v.get_record(&clerk, sid, &[], None)
            .unwrap()
            .meta
            .collection
            .as_str(),
        "suppliers"
    );
}

#[test]
fn holds_retention_contractor_and_review_are_undone_when_their_audit_event_cannot_be_written() {
    use vault_core::vault::{ContractorScope, RetentionPolicy};
    let tmp = tempfile::tempdir().unwrap();
    let f = fast_vault(&tmp.path().join("v"));
    let v = &f.vault;
    let id = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    let policy = |days| RetentionPolicy {
        days,
        from_updated: false,
    };
    // A hold and a policy that exist before the failures.
    let held = v
        .put_record(&f.clerk, CUSTOMERS, SubjectId::new(), &jane())
        .unwrap();
    v.add_hold(&f.officer, Some(held), None, "pending litigation")
        .unwrap();
    v.set_retention(&f.officer, CUSTOMERS, policy(30)).unwrap();

    v.set_audit_failure(true);
    audit_unavailable(v.add_hold(&f.officer, Some(id), None, "pending litigation"));
    audit_unavailable(v.remove_hold(&f.officer, Some(held), None));
    audit_unavailable(v.set_retention(&f.officer, CUSTOMERS, policy(7)));
    audit_unavailable(v.assign_contractor(
        &f.admin,
        "contractor",
        ContractorScope {
            collections: vec![CUSTOMERS.into()],
            ..ContractorScope::default()
        },
    ));
    audit_unavailable(v.record_security_review(&f.officer));
    v.set_audit_failure(false);

    // Nothing of the five changes stands.
    let holds = v.holds(&f.officer).unwrap();
    assert_eq!(holds.len(), 1, "only the earlier hold: {holds:?}");
    assert_eq!(holds[0].target, held.to_string());
    assert_eq!(v.retention(&f.officer).unwrap()[CUSTOMERS].days, 30);
    assert!(
        v.list_records(&f.contractor, &RecordFilter::default())
            .unwrap()
            .is_empty(),
        "the contractor has no scope"
    );
    assert_eq!(v.security_status().unwrap().last_review_ms, None);

    // Audited, each change stands.
    v.add_hold(&f.officer, Some(id), None, "pending litigation")
        .unwrap();
    v.remove_hold(&f.officer, Some(held), None).unwrap();
    v.set_retention(&f.officer, CUSTOMERS, policy(7)).unwrap();
    v.assign_contractor(
        &f.admin,
        "contractor",
        ContractorScope {
            collections: vec![CUSTOMERS.into()],
            ..ContractorScope::default()
        },
    )
    .unwrap();
    v.record_security_review(&f.officer).unwrap();
    let holds = v.holds(&f.officer).unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].target, id.to_string());
    assert_eq!(v.retention(&f.officer).unwrap()[CUSTOMERS].days, 7);
    assert_eq!(
        v.list_records(&f.contractor, &RecordFilter::default())
            .unwrap()
            .len(),
        2
    );
    assert!(v.security_status().unwrap().last_review_ms.is_some());
}
