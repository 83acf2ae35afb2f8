//! Incident scoping and the breach notice (issue 15, REQ-WISP-10/11,
//! REQ-BR-01): on a seeded fixture the scope's counts, subject IDs and
//! element types match exactly, the Massachusetts count differs from the
//! total where the fixture says so, the notice holds no personal
//! information; the register is officer-only, append-only and sealed; the
//! scope stays the same while writes and disposals race it.

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::schema::{FieldSpec, FieldType, Schema};
use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope, SelectorInput};

use crate::common::{self, Fixture, T0};

const HOUR: i64 = 3_600_000;

/// Every personal value the fixture stores: none may appear in a notice.
const FIXTURE_VALUES: [&str; 14] = [
    "Ada",
    "Lovelace",
    "078-05-1120",
    "078051120",
    "Grace",
    "Hopper",
    "4111 1111 1111 1111",
    "4111111111111111",
    "Quentin",
    "Blackwood",
    "219-09-9998",
    "219099998",
    "Beatrix",
    "S12345678",
];

/// The seeded fixture: records, subjects and what the suspect did.
struct Seeded {
    fx: Fixture,
    /// Customers (residence MA by default): Ada (SSN), Ada again (SSN, a
    /// second record of the same subject), Grace (card), Alan (no element).
    ada: vault_core::ids::RecordId,
    ada2: vault_core::ids::RecordId,
    grace: vault_core::ids::RecordId,
    alan: vault_core::ids::RecordId,
    /// Members, residence per record: Quentin in NH (SSN), Beatrix in MA (licence).
    quentin: vault_core::ids::RecordId,
    beatrix: vault_core::ids::RecordId,
    subjects: [vault_core::ids::SubjectId; 5],
}

fn members_schema() -> Schema {
    let f = |name: &str, ty: FieldType, required: bool| FieldSpec {
        name: name.into(),
        ty,
        required,
        purpose: None,
    };
    Schema::new(
        "loyalty members",
        vec![
            f("given_name", FieldType::GivenName, true),
            f("family_name", FieldType::FamilyName, true),
            f("ssn", FieldType::Ssn, false),
            f("drivers_license", FieldType::DriversLicense, false),
            f("state", FieldType::ResidenceState, true),
        ],
        None,
    )
    .expect("members schema")
}

/// The window of the incident: [T0 + 1 h, T0 + 2 h).
fn window() -> (i64, i64) {
    (T0 + HOUR, T0 + 2 * HOUR)
}

fn officer_selector() -> SelectorInput {
    SelectorInput {
        actor: Some("officer".into()),
        ..SelectorInput::default()
    }
}

/// Seeds the fixture. The suspect is the officer (the role that may
/// reveal): in the window they read Ada, Grace (revealing her card),
/// Quentin and Beatrix, dispose of Ada's second record and are refused a
/// record creation; before the window they read Alan, after it Quentin
/// again. The clerk reads Alan inside the window (another actor).
fn seeded(dir: &std::path::Path) -> Seeded {
    let fx = common::fast_vault(dir);
    let v = &fx.vault;
    v.create_collection(&fx.admin, "members", &members_schema())
        .expect("members");
    let subj = |r: &str| v.resolve_subject(r).expect("subject");
    let subjects = [
        subj("C-ada"),
        subj("C-grace"),
        subj("C-alan"),
        subj("M-quentin"),
        subj("M-beatrix"),
    ];
    let put = |c: &str, s, body: Value| v.put_record(&fx.clerk, c, s, &body).expect("put");
    let ada = put(
        common::CUSTOMERS,
        subjects[0],
        json!({"given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120"}),
    );
    let ada2 = put(
        common::CUSTOMERS,
        subjects[0],
        json!({"given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120"}),
    );
    let grace = put(
        common::CUSTOMERS,
        subjects[1],
        json!({"given_name": "Grace", "family_name": "Hopper", "card_number": "4111 1111 1111 1111"}),
    );
    let alan = put(
        common::CUSTOMERS,
        subjects[2],
        json!({"given_name": "Alan", "family_name": "Turing"}),
    );
    let quentin = put(
        "members",
        subjects[3],
        json!({"given_name": "Quentin", "family_name": "Blackwood", "ssn": "219-09-9998", "state": "NH"}),
    );
    let beatrix = put(
        "members",
        subjects[4],
        json!({"given_name": "Beatrix", "family_name": "Potter",
               "drivers_license": {"state": "MA", "number": "S12345678"}, "state": "MA"}),
    );
    let (from, to) = window();
    fx.clock.set(from - HOUR / 2);
    v.get_record(&fx.officer, alan, &[], None)
        .expect("read before");
    fx.clock.set(from);
    v.get_record(&fx.officer, ada, &[], None).expect("read");
    fx.clock.advance(60_000);
    v.get_record(&fx.officer, grace, &["card_number"], Some("fraud check"))
        .expect("reveal");
    fx.clock.advance(60_000);
    v.get_record(&fx.officer, quentin, &[], None).expect("read");
    v.get_record(&fx.officer, beatrix, &[], None).expect("read");
    v.get_record(&fx.clerk, alan, &[], None)
        .expect("the clerk's own read");
    let refused = v.put_record(
        &fx.officer,
        common::CUSTOMERS,
        subjects[2],
        &json!({"given_name": "Alan", "family_name": "Turing"}),
    );
    assert!(
        matches!(refused, Err(Error::PermissionDenied(_))),
        "{refused:?}"
    );
    fx.clock.advance(60_000);
    v.dispose(
        &fx.officer,
        &DisposalRequest {
            scope: DisposalScope::Record(ada2),
            parties: DisposalParties {
                data_owner: "Example Retail LLC".into(),
                ..DisposalParties::default()
            },
            dry_run: false,
        },
    )
    .expect("dispose");
    fx.clock.set(to);
    v.get_record(&fx.officer, quentin, &[], None)
        .expect("read at the end (excluded)");
    fx.clock.set(to + HOUR);
    Seeded {
        fx,
        ada,
        ada2,
        grace,
        alan,
        quentin,
        beatrix,
        subjects,
    }
}

fn sorted<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    v.sort();
    v
}

#[test]
fn scope_of_a_seeded_fixture_matches_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(&dir.path().join("vault"));
    let (from, to) = window();
    let sc =
        s.fx.vault
            .incident_scope(&s.fx.officer, &officer_selector(), from, to)
            .expect("scope");
    let doc = vault_core::views::document("incident-scope", vault_core::views::incident_scope(&sc));
    crate::documents::check(&doc, "incident scope");

    // Records: Ada, Grace, Quentin, Beatrix read; Ada's second record
    // disposed. Not Alan (read before the window, and by the clerk).
    assert_eq!(
        sorted(sc.records.iter().map(|r| r.record)),
        sorted([s.ada, s.ada2, s.grace, s.quentin, s.beatrix]),
        "records touched"
    );
    assert!(!sc.records.iter().any(|r| r.record == s.alan));
    // Subjects: Ada (two records), Grace, Quentin, Beatrix.
    assert_eq!(
        sorted(&sc.subjects),
        sorted([s.subjects[0], s.subjects[1], s.subjects[3], s.subjects[4]]),
        "distinct subjects"
    );
    // Massachusetts: all but Quentin (NH by his record's residence field).
    assert_eq!(
        sorted(&sc.ma_resident_subjects),
        sorted([s.subjects[0], s.subjects[1], s.subjects[4]]),
    );
    assert_eq!(sc.ma_resident_subjects.len(), 3);
    assert_ne!(sc.ma_resident_subjects.len(), sc.subjects.len());
    assert_eq!(sc.ma_personal_information_subjects, 3);
    // Kinds: 4 reads (the reveal's read included), 1 reveal, 1 disposal;
    // 6 events in the window plus the denied creation and the disposal's
    // own step events are the officer's; the read at `until` is outside.
    assert_eq!(sc.by_kind.get("read"), Some(&4), "{:?}", sc.by_kind);
    assert_eq!(sc.by_kind.get("reveal"), Some(&1), "{:?}", sc.by_kind);
    assert_eq!(sc.by_kind.get("disposal"), Some(&1), "{:?}", sc.by_kind);
    assert_eq!(sc.denied, 1);
    let how = |id| {
        sc.records
            .iter()
            .find(|r| r.record == id)
            .map(|r| r.how.clone())
            .unwrap()
    };
    assert_eq!(how(s.ada), ["read"]);
    assert_eq!(how(s.grace), ["read", "reveal"]);
    assert_eq!(how(s.ada2), ["disposal"]);
    // Element types: from the bodies (SSN, card, licence) and, for the
    // disposed record, every sensitive type its schema declares.
    let rec = |id| sc.records.iter().find(|r| r.record == id).unwrap();
    assert_eq!(rec(s.ada).elements, ["ssn"]);
    assert_eq!(rec(s.grace).elements, ["card_number"]);
    assert_eq!(rec(s.grace).revealed, ["card_number"]);
    assert_eq!(rec(s.beatrix).elements, ["drivers_license"]);
    assert!(!rec(s.quentin).ma_resident);
    assert_eq!(rec(s.ada2).basis, "schema");
    assert_eq!(rec(s.ada).basis, "record");
    assert_eq!(
        sc.element_types,
        ["card_number", "drivers_license", "ssn"],
        "element types"
    );
    assert_eq!(sc.revealed_types, ["card_number"]);

    // The same scope by client address finds nothing (CLI events carry none).
    let by_source =
        s.fx.vault
            .incident_scope(
                &s.fx.officer,
                &SelectorInput {
                    source: Some("203.0.113.9".into()),
                    ..SelectorInput::default()
                },
                from,
                to,
            )
            .expect("scope by source");
    assert!(by_source.records.is_empty());
    // Selectors: exactly one.
    let two = s.fx.vault.incident_scope(
        &s.fx.officer,
        &SelectorInput {
            actor: Some("officer".into()),
            source: Some("203.0.113.9".into()),
            ..SelectorInput::default()
        },
        from,
        to,
    );
    assert!(matches!(two, Err(Error::InvalidInput(_))), "{two:?}");
}

#[test]
fn the_notice_counts_residents_flags_credit_monitoring_and_holds_no_personal_information() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(&dir.path().join("vault"));
    let (v, officer) = (&s.fx.vault, &s.fx.officer);
    let (from, to) = window();
    let inc = v
        .open_incident(
            officer,
            &officer_selector(),
            from,
            to,
            "records read and a card revealed without a business reason",
            false,
        )
        .expect("open");
    let id: vault_core::ids::IncidentId = inc.id.parse().unwrap();
    assert_eq!(
        inc.scope
            .as_ref()
            .map(|x| (x.records, x.subjects, x.ma_residents)),
        Some((5, 4, 3))
    );
    v.incident_action(officer, id, "account disabled and password reset", false)
        .expect("action");
    let (inc, sc) = v.incident_notice(officer, id).expect("notice");
    let notice = vault_core::views::incident_notice(&inc, &sc, v.now_ms());
    assert_eq!(notice["ma_residents_affected"], 3);
    assert_eq!(notice["subjects_affected"], 4);
    assert_eq!(notice["records_affected"], 5);
    assert_eq!(
        notice["credit_monitoring"]["required"], true,
        "SSNs are involved"
    );
    assert_eq!(notice["credit_monitoring"]["offered"], false);
    assert_eq!(notice["credit_monitoring"]["attention"], true);
    assert_eq!(
        notice["ftc_safeguards_notice"]["required"], false,
        "4 < 500"
    );
    assert_eq!(
        notice["steps_taken"][0]["text"],
        "account disabled and password reset"
    );
    let doc = vault_core::views::document("incident-notice", notice.clone());
    crate::documents::check(&doc, "incident notice");
    // Offering credit monitoring clears the flag.
    v.incident_action(officer, id, "credit monitoring offered for two years", true)
        .expect("action");
    let (inc, sc) = v.incident_notice(officer, id).expect("notice");
    let notice = vault_core::views::incident_notice(&inc, &sc, v.now_ms());
    assert_eq!(notice["credit_monitoring"]["attention"], false);

    // No personal information in the notice, its page, or the register.
    let html = vault_core::printable::notice_html(&notice);
    assert!(
        html.starts_with("<!DOCTYPE html>") && !html.contains("<script") && !html.contains("http")
    );
    let shown = v.incident(officer, id).expect("show");
    let register = vault_core::views::incident(&shown).to_string();
    for hay in [notice.to_string(), html, register] {
        for needle in FIXTURE_VALUES {
            assert!(!hay.contains(needle), "the notice holds {needle:?}");
        }
    }
    // A negative control of the scan: the records really hold the values.
    let grace = v
        .get_record(officer, s.grace, &["card_number"], Some("control"))
        .unwrap();
    assert!(
        grace
            .fields
            .values()
            .any(|x| x == "4111 1111 1111 1111" || x == "4111111111111111")
    );
}

#[test]
fn the_register_is_officer_only_append_only_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(&dir.path().join("vault"));
    let fx = &s.fx;
    let v = &fx.vault;
    let (from, to) = window();
    // A clerk (or an admin, or the auditor) cannot scope or open.
    for who in [&fx.clerk, &fx.admin, &fx.auditor, &fx.contractor] {
        let r = v.incident_scope(who, &officer_selector(), from, to);
        assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
        let r = v.open_incident(who, &officer_selector(), from, to, "nature", false);
        assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    }
    let inc = v
        .open_incident(
            &fx.officer,
            &officer_selector(),
            from,
            to,
            "unusual reads",
            false,
        )
        .expect("open");
    let id: vault_core::ids::IncidentId = inc.id.parse().unwrap();
    // The auditor reads the register; the clerk does not.
    assert_eq!(v.incidents(&fx.auditor).expect("auditor lists").len(), 1);
    assert!(matches!(
        v.incidents(&fx.clerk),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        v.incident_action(&fx.auditor, id, "closing it quietly", false),
        Err(Error::PermissionDenied(_))
    ));
    // Free text holding an SSN (or any 4+ digit run) is refused, and nothing changes.
    for bad in [
        "subject 078-05-1120 affected",
        "card 4111 1111 1111 1111",
        "078051120",
    ] {
        let r = v.incident_action(&fx.officer, id, bad, false);
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{bad}: {r:?}");
    }
    let r = v.review_incident(&fx.officer, id, "", "none");
    assert!(
        matches!(r, Err(Error::InvalidInput(_))),
        "an empty review: {r:?}"
    );
    assert!(v.incident(&fx.officer, id).unwrap().actions.is_empty());
    // The review happens once; a second one is refused, the first stays.
    v.review_incident(
        &fx.officer,
        id,
        "reads were outside the job",
        "quarterly access review added",
    )
    .expect("review");
    let again = v.review_incident(&fx.officer, id, "nothing happened", "none");
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    let shown = v.incident(&fx.officer, id).unwrap();
    assert_eq!(
        shown.review.as_ref().unwrap().notes,
        "reads were outside the job"
    );
    assert_eq!(shown.status(), "reviewed");
    // Every change and refusal is in the trail, under the incident's ID.
    let events = v
        .audit_events(
            &fx.officer,
            &vault_core::audit::EventFilter {
                action_prefix: Some("incident.".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let ok = |a: &str| {
        events
            .iter()
            .filter(|e| e.action == a && e.outcome == vault_core::audit::Outcome::Success)
            .count()
    };
    assert_eq!(ok("incident.open"), 1);
    assert_eq!(ok("incident.review"), 1);
    assert!(events.iter().any(|e| e.action == "incident.review"
        && e.outcome == vault_core::audit::Outcome::Failed
        && e.code.as_deref() == Some("already_exists")));
    // The refusals of the clerk, admin, auditor and contractor (scope and open each).
    let denied = v
        .audit_events(
            &fx.officer,
            &vault_core::audit::EventFilter {
                action_prefix: Some("access.denied".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let refused = denied
        .iter()
        .filter(|e| e.targets == ["permission:Incidents"])
        .count();
    assert_eq!(
        refused, 10,
        "4 users x (scope, open), the clerk's list, the auditor's action"
    );
    // Audit failure: the change is undone (fail closed).
    v.set_audit_failure(true);
    let r = v.incident_action(&fx.officer, id, "an unaudited step", false);
    v.set_audit_failure(false);
    assert!(r.is_err());
    assert!(v.incident(&fx.officer, id).unwrap().actions.is_empty());
}

/// A hostile insider with the files but not the vault's key: with a
/// rewritten incident row the vault does not open (the row fails its MAC),
/// nor with a deleted one (the sealed rows no longer add up to the state
/// digest). `doctor`'s `incident-register` check, which names an
/// incident the trail opened and the register lacks, stays as a second
/// line behind the digest.
#[test]
fn an_incident_row_rewritten_or_deleted_outside_the_vault_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(&dir.path().join("vault"));
    let (from, to) = window();
    let inc =
        s.fx.vault
            .open_incident(
                &s.fx.officer,
                &officer_selector(),
                from,
                to,
                "unusual reads",
                true,
            )
            .expect("open");
    let id: vault_core::ids::IncidentId = inc.id.parse().unwrap();
    let (vault_dir, clock) = (s.fx.dir.clone(), s.fx.clock.clone());
    s.fx.vault.close().unwrap();
    let with_db = |edit: &dyn Fn(&rocksdb::DB, &rocksdb::ColumnFamily)| {
        let path = vault_dir.join("records");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).expect("cfs");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).expect("db");
        edit(
            &db,
            db.cf_handle("incidents").expect("incidents column family"),
        );
        db.flush().unwrap();
    };
    // Make the incident look harmless.
    with_db(&|db, cf| {
        let row = db.get_cf(cf, id.as_bytes()).unwrap().expect("row");
        let text = String::from_utf8_lossy(&row).replace("unusual reads", "routine check");
        assert_ne!(text.as_bytes(), &row[..], "the count is in the row");
        db.put_cf(cf, id.as_bytes(), text.as_bytes()).unwrap();
    });
    let open = || {
        vault_core::vault::Vault::open(
            &vault_dir,
            &vault_core::secret::SecretString::from(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    let r = open();
    assert!(
        matches!(&r, Err(Error::Integrity(m)) if m.contains("fails its MAC")),
        "a rewritten incident row: {:?}",
        r.as_ref().err()
    );
    with_db(&|db, cf| db.delete_cf(cf, id.as_bytes()).unwrap());
    let r = open();
    assert!(
        matches!(&r, Err(Error::Integrity(m)) if m.contains("no longer adds up")),
        "a deleted incident row: {:?}",
        r.as_ref().err()
    );
}

/// The scope reads the trail to a fixed end and classifies what it names:
/// run again and again while the clerk writes records and the officer
/// disposes of one the scope names, it gives the same records, subjects
/// and Massachusetts residents every time.
#[test]
fn scope_racing_writes_and_a_disposal_gives_one_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(&dir.path().join("vault"));
    let (from, to) = window();
    let v = &s.fx.vault;
    let first = v
        .incident_scope(&s.fx.officer, &officer_selector(), from, to)
        .unwrap();
    let key = |sc: &vault_core::vault::IncidentScope| {
        (
            sorted(sc.records.iter().map(|r| r.record)),
            sorted(&sc.subjects),
            sorted(&sc.ma_resident_subjects),
            sc.element_types.clone(),
            sc.by_kind.clone(),
        )
    };
    let expected = key(&first);
    let done = std::sync::atomic::AtomicBool::new(false);
    let runs = std::thread::scope(|t| {
        let writer = t.spawn(|| {
            for i in 0..30 {
                let subject = v.resolve_subject(&format!("C-new-{i}")).unwrap();
                v.put_record(
                    &s.fx.clerk,
                    common::CUSTOMERS,
                    subject,
                    &json!({"given_name": "Nia", "family_name": "Newcomer"}),
                )
                .unwrap();
                if i == 10 {
                    v.dispose(
                        &s.fx.officer,
                        &DisposalRequest {
                            scope: DisposalScope::Record(s.ada),
                            parties: DisposalParties {
                                data_owner: "Example Retail LLC".into(),
                                ..DisposalParties::default()
                            },
                            dry_run: false,
                        },
                    )
                    .unwrap();
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut runs = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) || runs < 3 {
            let sc = v
                .incident_scope(&s.fx.officer, &officer_selector(), from, to)
                .unwrap();
            assert_eq!(key(&sc), expected, "run {runs}");
            runs += 1;
        }
        writer.join().unwrap();
        runs
    });
    assert!(runs >= 3);
    // The disposed record is now classified from its schema, and still counted.
    let last = v
        .incident_scope(&s.fx.officer, &officer_selector(), from, to)
        .unwrap();
    let ada = last.records.iter().find(|r| r.record == s.ada).unwrap();
    assert_eq!(ada.basis, "schema");
    assert!(ada.ma_resident);
    assert_eq!(key(&last), expected);
}

/// The CLI: `incident open`, `action`, `review`, `list`, `show`, `notice
/// --html` and `scope`, each document checked against its schema; the
/// printable page holds no fixture value; a clerk is refused.
#[test]
fn the_cli_opens_reviews_and_drafts_the_notice() {
    use crate::cli::CliVault;
    let v = CliVault::standard();
    v.import(&crate::cli::examples().join("customers.jsonl"))
        .ok();
    let ids = v.record_ids();
    for id in &ids {
        v.run(Some("officer"), &["--json", "record", "get", id])
            .ok();
    }
    let since = "2000-01-01";
    let r = v.run(
        Some("clerk"),
        &[
            "--json", "incident", "scope", "--actor", "officer", "--since", since,
        ],
    );
    assert_eq!(r.error_code(), "permission_denied");
    let sc = v
        .run(
            Some("officer"),
            &[
                "--json", "incident", "scope", "--actor", "officer", "--since", since,
            ],
        )
        .json();
    assert_eq!(sc["record_count"], ids.len());
    assert_eq!(sc["by_kind"]["read"], ids.len());
    let inc = v
        .run(
            Some("officer"),
            &[
                "--json",
                "incident",
                "open",
                "--actor",
                "officer",
                "--since",
                since,
                "--nature",
                "a test of the register",
            ],
        )
        .json();
    let id = inc["incident_id"].as_str().unwrap().to_owned();
    v.run(
        Some("officer"),
        &[
            "--json",
            "incident",
            "action",
            &id,
            "--text",
            "passwords reset",
            "--credit-monitoring",
        ],
    )
    .ok();
    v.run(
        Some("officer"),
        &[
            "--json",
            "incident",
            "review",
            &id,
            "--notes",
            "reviewed",
            "--wisp-changes",
            "none",
        ],
    )
    .ok();
    let list = v
        .run(Some("auditor"), &["--json", "incident", "list"])
        .json();
    assert_eq!(list["items"][0]["status"], "reviewed");
    let shown = v
        .run(Some("auditor"), &["--json", "incident", "show", &id])
        .json();
    assert_eq!(shown["credit_monitoring"], true);
    let page = v.input.join("notice.html");
    let notice = v
        .run(
            Some("officer"),
            &[
                "--json",
                "incident",
                "notice",
                &id,
                "--html",
                page.to_str().unwrap(),
            ],
        )
        .json();
    assert_eq!(notice["records_affected"], ids.len());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Massachusetts residents affected"));
    let examples = std::fs::read_to_string(crate::cli::examples().join("customers.jsonl")).unwrap();
    for value in [
        "078-05-1120",
        "Lovelace",
        "4111 1111 1111 1111",
        "Hopper",
        "S12345678",
    ] {
        assert!(
            examples.contains(value),
            "the control value {value} is in the fixture"
        );
        assert!(
            !html.contains(value) && !notice.to_string().contains(value),
            "{value}"
        );
    }
    v.assert_audit_ok();
}

/// Over HTTP: the officer scopes, opens, documents and drafts the notice;
/// the clerk is refused (403) and the auditor reads the register and the
/// WISP pack; every answer checked against its schema.
#[test]
fn the_server_offers_the_register_the_notice_and_the_wisp_pack() {
    let srv = crate::server::start(&[]);
    let officer = srv.token("officer");
    let clerk = srv.token("clerk");
    let auditor = srv.token("auditor");
    let put = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(
            &json!({"collection": common::CUSTOMERS, "subject": "C-http",
            "data": {"given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120"}}),
        ),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let id = put.json()["record_id"].as_str().unwrap().to_owned();
    assert_eq!(
        srv.call("GET", &format!("/v1/records/{id}"), Some(&officer), None)
            .status,
        200
    );
    let scope = "/v1/incidents/scope?actor=officer&since=2000-01-01";
    assert_eq!(srv.call("GET", scope, Some(&clerk), None).status, 403);
    let sc = srv.call("GET", scope, Some(&officer), None);
    assert_eq!(sc.status, 200, "{sc:?}");
    let sc = sc.json();
    assert_eq!(sc["record_count"], 1);
    assert_eq!(sc["ma_resident_count"], 1);
    assert_eq!(sc["element_types"], json!(["ssn"]));
    let body = json!({"actor": "officer", "since": "2000-01-01", "nature": "a test over HTTP"});
    assert_eq!(
        srv.call("POST", "/v1/incidents", Some(&clerk), Some(&body))
            .status,
        403
    );
    let opened = srv.call("POST", "/v1/incidents", Some(&officer), Some(&body));
    assert_eq!(opened.status, 201, "{opened:?}");
    let inc = opened.json()["incident_id"].as_str().unwrap().to_owned();
    let bad = srv.call(
        "POST",
        &format!("/v1/incidents/{inc}/actions"),
        Some(&officer),
        Some(&json!({"text": "customer 078-05-1120 called"})),
    );
    assert_eq!(bad.status, 422, "{bad:?}");
    let act = srv.call(
        "POST",
        &format!("/v1/incidents/{inc}/actions"),
        Some(&officer),
        Some(&json!({"text": "token revoked", "credit_monitoring": true})),
    );
    assert_eq!(act.status, 200, "{act:?}");
    assert_eq!(act.json()["credit_monitoring"], true);
    let rev = json!({"notes": "reviewed", "wisp_changes": "none"});
    let path = format!("/v1/incidents/{inc}/review");
    assert_eq!(
        srv.call("POST", &path, Some(&officer), Some(&rev)).status,
        200
    );
    assert_eq!(
        srv.call("POST", &path, Some(&officer), Some(&rev)).status,
        409
    );
    let notice = srv.call(
        "GET",
        &format!("/v1/incidents/{inc}/notice"),
        Some(&officer),
        None,
    );
    assert_eq!(notice.status, 200, "{notice:?}");
    let n = notice.json();
    assert_eq!(n["ma_residents_affected"], 1);
    assert_eq!(n["credit_monitoring"]["required"], true);
    for v in FIXTURE_VALUES {
        assert!(!notice.text.contains(v), "{v}");
    }
    let list = srv.call("GET", "/v1/incidents", Some(&auditor), None);
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["items"][0]["status"], "reviewed");
    assert_eq!(
        srv.call("GET", &format!("/v1/incidents/{inc}"), Some(&clerk), None)
            .status,
        403
    );
    assert_eq!(srv.call("GET", "/v1/wisp", Some(&clerk), None).status, 403);
    let w = srv.call("GET", "/v1/wisp", Some(&auditor), None);
    assert_eq!(w.status, 200, "{w:?}");
    assert_eq!(w.json()["document"], "wisp-pack");
}
