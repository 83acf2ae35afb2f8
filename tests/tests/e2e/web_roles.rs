//! The web page's role pages in a real browser (issue 14): the clerk adds,
//! finds and corrects a record through the schema's form; the admin adds,
//! disables and unlocks users; the officer reveals, reads the trail, holds
//! a record and disposes with a preview; every page visited passes axe-core
//! (no serious or critical violation) and keeps personal information out of
//! its URL and title. Plus the policy of every page for every role, by
//! plain HTTP.

use serde_json::{Value, json};
use vault_core::secret::SecretString;

use crate::common::{PASSPHRASE, password_of};
use crate::server::{self, Server};
use crate::web::{Browser, SSN, counter_server};

pub(crate) fn sign_in(b: &Browser, srv: &Server, user: &str) {
    b.goto(&format!("{}/ui/", srv.base));
    b.type_into("#username", user);
    b.type_into("#password", password_of(user).expose());
    b.submit("button[type=submit]");
    assert_eq!(b.title(), "Home · pivault", "{user} signed in");
}

/// The clerk's customer, as typed and as the vault normalises it.
const GIVEN: &str = "Wilhelmina";
const FAMILY: &str = "Ostrowski";
const EMAIL: &str = "w.ostrowski@example.com";
const PI: [&str; 6] = [GIVEN, FAMILY, SSN, "219099999", EMAIL, "ostrowski"];

/// The counter journey with the keyboard alone: no click, no element
/// targeted, only Tab, typing and Enter on whatever has the focus, whose
/// outline is visible at every stop. A clerk signs in, opens the find page
/// from the menu, finds a customer by SSN (masked), follows the record's
/// link, corrects the e-mail and signs out.
#[test]
fn a_clerk_finds_and_corrects_a_customer_with_the_keyboard_alone() {
    let srv = counter_server();
    let clerk = srv.token("clerk");
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(&json!({ "collection": "counter", "data": {
            "given_name": GIVEN, "family_name": FAMILY, "ssn": SSN, "email": EMAIL } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let record = a.json()["record_id"].as_str().unwrap().to_owned();

    let b = Browser::start();
    b.goto(&format!("{}/ui/", srv.base));
    b.tab_to("#username");
    b.keys("clerk");
    b.tab_to("#password");
    b.keys(password_of("clerk").expose());
    b.enter();
    assert_eq!(b.title(), "Home · pivault", "{}", b.source());
    b.tab_to("nav a[href='/ui/find']");
    b.enter();
    assert_eq!(b.title(), "Find a customer · pivault");
    b.tab_to("#collection");
    b.type_over("counter");
    b.tab_to("#value");
    b.keys(&SSN.replace('-', " "));
    b.enter();
    let page = b.source();
    assert!(page.contains(&record), "found: {page}");
    assert!(
        page.contains("***-**-9999") && !page.contains(SSN),
        "masked"
    );
    b.tab_to(&format!("main a[href='/ui/records/{record}/correct']"));
    b.enter();
    assert_eq!(b.title(), "Correct a record · pivault");
    b.tab_to("#f-email");
    b.type_over("wil@example.org");
    b.enter();
    assert_eq!(b.title(), "Record corrected · pivault", "{}", b.source());
    b.check("keyboard-corrected", &PI);
    let officer = srv.token("officer");
    let r = srv.call(
        "GET",
        &format!("/v1/records/{record}"),
        Some(&officer),
        None,
    );
    assert_eq!(r.json()["fields"]["email"], "wil@example.org", "{r:?}");
    b.tab_to("nav button[type=submit]");
    b.enter();
    assert_eq!(b.title(), "Sign in · pivault", "{}", b.source());
}

#[test]
fn a_clerk_adds_a_record_from_the_schema_form_finds_it_masked_and_corrects_it() {
    let srv = counter_server();
    let b = Browser::start();
    sign_in(&b, &srv, "clerk");
    b.check("home-clerk", &PI);
    b.goto(&format!("{}/ui/records/new", srv.base));
    b.check("record-new-choose", &PI);
    b.click("option[value=counter]");
    b.submit("main button[type=submit]");
    assert_eq!(b.title(), "Add a record · pivault");
    // A labelled field for each of the schema's fields.
    let schema = crate::search::counter_schema();
    for f in &schema.fields {
        assert!(
            b.has(&format!("label[for='f-{}']", f.name)),
            "no label for {}",
            f.name
        );
    }
    b.check("record-new-form", &PI);

    // First try: the family name missing, an SSN one digit short, an
    // e-mail without @. Refused as a whole, each message beside its field.
    b.type_into("#f-given_name", GIVEN);
    b.type_into("#f-ssn", "219-09-999");
    b.type_into("#f-email", "w.ostrowski-at-example");
    b.submit("main button[type=submit]");
    assert_eq!(b.title(), "Add a record · pivault");
    let expected = schema.field_errors(&json!({
        "given_name": GIVEN, "ssn": "219-09-999", "email": "w.ostrowski-at-example" }));
    assert_eq!(expected.len(), 3, "{expected:?}");
    for e in &expected {
        let field = e.field.as_deref().expect("a field's error");
        let shown = b.text(&format!("#e-{field}"));
        assert!(
            shown.contains(&e.message),
            "{field}: {shown:?} is not the core's {:?}",
            e.message
        );
        assert!(
            b.has(&format!("#f-{field}[aria-invalid=true]")),
            "{field} not marked"
        );
    }
    assert!(!b.has("#e-given_name"), "a good field marked bad");
    assert!(b.text("[role=alert]").contains("3 field(s) need a change"));
    // What was typed is still there (on this no-store page, never in a URL).
    assert_eq!(b.value("#f-given_name"), GIVEN);
    assert_eq!(b.value("#f-ssn"), "219-09-999");
    b.check("record-new-errors", &PI);
    let clerk = srv.token("clerk");
    let listed = srv.call("GET", "/v1/records?collection=counter", Some(&clerk), None);
    assert_eq!(
        listed.json()["items"].as_array().map(Vec::len),
        Some(0),
        "stored: {listed:?}"
    );

    // Fixed: stored.
    b.type_into("#f-family_name", FAMILY);
    b.clear("#f-ssn");
    b.type_into("#f-ssn", SSN);
    b.clear("#f-email");
    b.type_into("#f-email", EMAIL);
    b.submit("main button[type=submit]");
    assert_eq!(b.title(), "Record added · pivault", "{}", b.source());
    let record = b.text("main dd code");
    let page = b.source();
    assert!(
        !page.contains(SSN) && !page.contains("219099999"),
        "the SSN echoed"
    );
    b.check("record-added", &PI);

    // Found by its SSN, masked.
    b.goto(&format!("{}/ui/find", srv.base));
    b.clear("#collection");
    b.type_into("#collection", "counter");
    b.type_into("#value", SSN);
    b.submit("main button[type=submit]");
    let page = b.source();
    assert!(page.contains(&record), "{page}");
    assert!(page.contains("***-**-9999") && !page.contains(SSN));
    b.check("find-added", &PI);

    // Corrected: the e-mail, first mistyped (the core's message beside it),
    // then right; the SSN, not retyped, is kept.
    b.click(&format!("a[href='/ui/records/{record}/correct']"));
    assert_eq!(b.title(), "Correct a record · pivault");
    assert!(
        b.text("#h-ssn").contains("***-**-9999"),
        "the current SSN, masked"
    );
    assert!(!b.source().contains(SSN));
    b.check("record-correct", &PI);
    b.type_into("#f-email", "nobody-at-all");
    b.submit("main button[type=submit]");
    let expected = schema.patch_errors(&json!({ "email": "nobody-at-all" }));
    assert_eq!(expected.len(), 1);
    assert!(b.text("#e-email").contains(&expected[0].message));
    assert_eq!(b.value("#f-email"), "nobody-at-all");
    b.check("record-correct-error", &PI);
    b.clear("#f-email");
    b.type_into("#f-email", "wil@example.org");
    b.submit("main button[type=submit]");
    assert_eq!(b.title(), "Record corrected · pivault", "{}", b.source());
    assert!(b.text("[role=status]").contains("version 2"));
    b.check("record-corrected", &PI);
    let officer = srv.token("officer");
    let r = srv.call(
        "GET",
        &format!("/v1/records/{record}"),
        Some(&officer),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = r.json();
    assert_eq!(r["fields"]["email"], "wil@example.org", "{r}");
    assert_eq!(r["fields"]["ssn"], "***-**-9999", "the SSN kept: {r}");
    assert_eq!(r["fields"]["family_name"], FAMILY);
    // A contractor cannot open the record's page (the core refuses it).
    let b2 = Browser::start();
    sign_in(&b2, &srv, "contractor");
    b2.goto(&format!("{}/ui/records/{record}/correct", srv.base));
    assert_eq!(b2.title(), "Not done · pivault");
    assert!(!b2.source().contains(FAMILY));
    b2.check("contractor-refused", &PI);
}

#[test]
fn an_admin_adds_disables_and_unlocks_users_and_a_disabled_users_open_page_fails() {
    // The auditor is locked out (failures from distinct sources) before the
    // server starts, at the real time, so the lock is current.
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let f = crate::search::counter_vault(&vault_dir);
    f.clock.set(jiff::Timestamp::now().as_millisecond());
    for i in 0..20 {
        let ctx = vault_core::vault::Context {
            channel: vault_core::audit::Channel::Http,
            source: Some(format!("192.0.2.{i}")),
            request_id: None,
        };
        let r = f
            .vault
            .login("auditor", &SecretString::from("wrong password here"), ctx);
        if matches!(r, Err(vault_core::Error::AccountLocked { .. })) {
            break;
        }
    }
    f.vault.close().unwrap();
    let srv = server::start_on(dir, vault_dir, PASSPHRASE, &[]);
    let locked = srv.call(
        "POST",
        "/v1/sessions",
        None,
        Some(&json!({ "username": "auditor", "password": password_of("auditor").expose() })),
    );
    assert_eq!(locked.status, 423, "the auditor is locked: {locked:?}");

    let a = Browser::start();
    sign_in(&a, &srv, "admin");
    a.goto(&format!("{}/ui/users", srv.base));
    assert_eq!(a.title(), "Users · pivault");
    a.check("users", &[]);
    // A weak initial password: refused beside the field, the name kept,
    // the password not.
    a.type_into("#new-username", "dora");
    a.click("#new-role option[value=clerk]");
    a.type_into("#new-password", "short");
    a.submit("main form[action='/ui/users'] button[type=submit]");
    assert!(a.has("#e-password"), "{}", a.source());
    assert_eq!(a.value("#new-username"), "dora");
    assert_eq!(a.value("#new-password"), "");
    a.check("users-add-refused", &[]);
    let pw = "Thistle-Harbour-Lantern-61";
    a.type_into("#new-password", pw);
    a.type_into("#new-full-name", "Dora Maar");
    a.submit("main form[action='/ui/users'] button[type=submit]");
    let page = a.source();
    assert!(
        page.contains("User <strong>dora</strong> added as clerk"),
        "{page}"
    );
    assert!(
        page.contains("Dora Maar"),
        "the full name is listed: {page}"
    );
    a.check("users-added", &[]);
    let login = |user: &str, pw: &str| {
        srv.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({ "username": user, "password": pw })),
        )
    };
    assert_eq!(login("dora", pw).status, 201, "the new user signs in");

    // Dora's own browser, open on the find page.
    let d = Browser::start();
    d.goto(&format!("{}/ui/", srv.base));
    d.type_into("#username", "dora");
    d.type_into("#password", pw);
    d.submit("button[type=submit]");
    assert_eq!(d.title(), "Home · pivault");
    d.goto(&format!("{}/ui/find", srv.base));
    d.clear("#collection");
    d.type_into("#collection", "counter");
    d.type_into("#value", SSN);
    // The admin disables her; her next click lands on the sign-in page.
    a.press("Disable dora");
    assert!(
        a.text("[role=status]").contains("disabled"),
        "{}",
        a.source()
    );
    a.check("users-disabled", &[]);
    d.submit("main button[type=submit]");
    assert_eq!(
        d.title(),
        "Sign in · pivault",
        "a disabled user's open page still works"
    );
    assert_eq!(login("dora", pw).status, 403);
    // Enabled again, she signs in; the auditor, unlocked, too.
    a.press("Enable dora");
    assert_eq!(login("dora", pw).status, 201);
    // A role change from the page is the core's `set_role`.
    a.click("#role-dora option[value=auditor]");
    a.press("Change the role of dora");
    assert!(
        a.text("[role=status]").contains("dora is now auditor"),
        "{}",
        a.source()
    );
    a.check("users-role-changed", &[]);
    let admin = srv.token("admin");
    let users = srv.call("GET", "/v1/users", Some(&admin), None).json();
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "dora" && u["role"] == "auditor"),
        "{users}"
    );
    // The full name certificates print: set from the page, the API's
    // `set_full_name`; an officer's token may not name anyone.
    a.clear("#full-dora");
    a.type_into("#full-dora", "Dora Markovitch");
    a.press("Set the full name of dora");
    assert!(
        a.text("[role=status]")
            .contains("dora is now named Dora Markovitch"),
        "{}",
        a.source()
    );
    let named = |who: &str| {
        srv.call("GET", "/v1/users", Some(who), None).json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "dora")
            .map(|u| u["full_name"].clone())
            .unwrap()
    };
    assert_eq!(named(&admin), "Dora Markovitch");
    let officer = srv.token("officer");
    let body = json!({ "full_name": "Someone Else" });
    let r = srv.call(
        "PUT",
        "/v1/users/dora/full-name",
        Some(&officer),
        Some(&body),
    );
    assert_eq!(r.status, 403, "{r:?}");
    let r = srv.call(
        "PUT",
        "/v1/users/dora/full-name",
        Some(&admin),
        Some(&json!({ "full_name": null })),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(named(&admin), Value::Null);
    // A new officer waits for a second officer's approval (the two-person
    // rule) and keeps the full name typed with them: the approver sees it,
    // and the approved officer has it.
    a.type_into("#new-username", "olga");
    a.click("#new-role option[value=officer]");
    a.type_into("#new-password", "Quarry-Meadow-Falcon-83");
    a.type_into("#new-full-name", "Olga Petrova");
    a.submit("main form[action='/ui/users'] button[type=submit]");
    assert!(
        a.text("#pending")
            .contains("olga waits for a second officer's approval"),
        "{}",
        a.source()
    );
    a.check("users-pending", &[]);
    let requests = srv
        .call("GET", "/v1/approvals", Some(&officer), None)
        .json();
    let request = requests["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["username"] == "olga")
        .unwrap_or_else(|| panic!("no request for olga: {requests}"))
        .clone();
    assert_eq!(request["full_name"], "Olga Petrova", "{request}");
    let r = srv.call(
        "POST",
        &format!(
            "/v1/approvals/{}/approve",
            request["request"].as_str().unwrap()
        ),
        Some(&officer),
        Some(&json!({})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let olga = srv.call("GET", "/v1/users", Some(&admin), None).json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "olga")
        .cloned()
        .expect("olga, approved");
    assert_eq!(
        (&olga["role"], &olga["full_name"]),
        (&json!("officer"), &json!("Olga Petrova")),
        "{olga}"
    );
    a.click("#role-dora option[value=clerk]");
    a.press("Change the role of dora");
    a.press("Unlock auditor");
    assert!(
        a.text("[role=status]").contains("unlocked"),
        "{}",
        a.source()
    );
    assert_eq!(
        login("auditor", password_of("auditor").expose()).status,
        201
    );
    // A clerk has no users page: the core refuses the list.
    d.goto(&format!("{}/ui/", srv.base));
    d.type_into("#username", "dora");
    d.type_into("#password", pw);
    d.submit("button[type=submit]");
    assert!(
        !d.source().contains("/ui/users"),
        "a clerk is offered the users page"
    );
    d.goto(&format!("{}/ui/users", srv.base));
    assert_eq!(d.title(), "Not done · pivault");
}

const OTHER_SSN: &str = "078-05-1120";

#[test]
fn an_officer_reveals_reads_the_trail_holds_a_record_and_disposes_with_a_preview() {
    let srv = counter_server();
    let clerk = srv.token("clerk");
    let mut ids = Vec::new();
    for (given, family, ssn) in [
        ("Bartholomew", "Quayle", SSN),
        ("Philippa", "Dunmore", OTHER_SSN),
    ] {
        let a = srv.call(
            "POST",
            "/v1/records",
            Some(&clerk),
            Some(&json!({ "collection": "counter", "data": {
                "given_name": given, "family_name": family, "ssn": ssn } })),
        );
        assert_eq!(a.status, 201, "{a:?}");
        ids.push(a.json()["record_id"].as_str().unwrap().to_owned());
    }
    let (held, other) = (ids[0].clone(), ids[1].clone());
    let pi = [
        "Bartholomew",
        "Quayle",
        "Philippa",
        "Dunmore",
        SSN,
        OTHER_SSN,
        "219099999",
        "078051120",
    ];
    let b = Browser::start();
    sign_in(&b, &srv, "officer");
    b.check("home-officer", &pi);
    // Reveal with a reason.
    b.goto(&format!("{}/ui/find", srv.base));
    b.clear("#collection");
    b.type_into("#collection", "counter");
    b.type_into("#value", SSN);
    b.submit("main form[action='/ui/find'] button[type=submit]");
    b.click("option[value=ssn]");
    b.type_into(
        "input[name=reason]",
        "customer asked us to confirm identity",
    );
    b.submit("form[action='/ui/reveal'] button[type=submit]");
    assert_eq!(b.text("dd.revealed"), SSN);
    b.check("officer-reveal", &pi);

    // The trail, filtered by the form, shows the reveal and its reason.
    b.goto(&format!("{}/ui/audit", srv.base));
    b.check("audit-trail", &pi);
    b.type_into("#actor", "officer");
    b.type_into("#action", "record.reveal");
    b.submit("main form.filters button[type=submit]");
    let page = b.source();
    assert!(page.contains("1 event(s) match"), "{page}");
    assert!(
        page.contains("customer asked us to confirm identity"),
        "{page}"
    );
    assert!(page.contains(&held), "the revealed record named");
    for p in pi {
        assert!(!page.contains(p), "personal information on the trail page");
    }
    b.check("audit-trail-filtered", &pi);
    b.goto(&format!("{}/ui/audit?action=record.create", srv.base));
    assert!(b.source().contains("2 event(s) match"), "{}", b.source());
    b.goto(&format!("{}/ui/audit/report", srv.base));
    let page = b.source();
    assert!(page.contains("<h2 class=\"user\">officer</h2>"), "{page}");
    assert!(
        page.contains("<dt>Reveals</dt><dd>1</dd>"),
        "the officer's reveal counted: {page}"
    );
    b.check("audit-report", &pi);
    b.goto(&format!("{}/ui/audit/verify", srv.base));
    assert!(
        b.text("[role=status]").starts_with("INTACT"),
        "{}",
        b.source()
    );
    b.check("audit-verify", &pi);

    // A hold on the first record.
    b.goto(&format!("{}/ui/holds", srv.base));
    b.check("holds", &pi);
    b.click("#hold-kind option[value=record]");
    b.type_into("#hold-target", &held);
    b.type_into("#hold-reason", "litigation hold pending a court order");
    b.submit("main form[action='/ui/holds'] button[type=submit]");
    assert!(
        b.text("[role=status]").contains("Hold placed"),
        "{}",
        b.source()
    );
    assert!(b.source().contains(&held));
    b.check("holds-placed", &pi);

    // The retention policies and what is due.
    let officer = srv.token("officer");
    let a = srv.call(
        "PUT",
        "/v1/retention/counter",
        Some(&officer),
        Some(&json!({ "days": 30 })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    b.goto(&format!("{}/ui/retention", srv.base));
    let page = b.source();
    assert!(
        page.contains("<strong>counter</strong>: kept 30 day(s) from its creation"),
        "{page}"
    );
    assert!(
        page.contains("Nothing is past its retention period now."),
        "{page}"
    );
    b.check("retention", &pi);

    // The hold blocks disposing of that record.
    let dispose = |scope: &str, target: &str| {
        b.goto(&format!("{}/ui/disposals", srv.base));
        b.click(&format!("#scope option[value={scope}]"));
        b.type_into("#target", target);
        b.type_into("#data_owner", "Counter Shop");
        b.submit("main button[type=submit]");
    };
    b.goto(&format!("{}/ui/disposals", srv.base));
    b.check("disposal-form", &pi);
    dispose("record", &held);
    assert!(
        b.text("[role=alert]").contains("Not done"),
        "{}",
        b.source()
    );
    assert!(
        !b.has("input[name=confirm]"),
        "a held record offered for disposal"
    );
    b.check("disposal-held-refused", &pi);
    // The whole collection: the preview counts one record of one customer
    // and names the held one as left out.
    dispose("collection", "counter");
    assert_eq!(b.title(), "Dispose: preview · pivault");
    assert_eq!(b.text("#count-records"), "1");
    assert_eq!(b.text("#count-subjects"), "1");
    assert_eq!(b.text("#count-excluded"), "1");
    assert!(
        b.source().contains(&held),
        "the held record is listed as left out"
    );
    b.check("disposal-preview", &pi);
    // Nothing changed yet.
    let still = srv.call("GET", &format!("/v1/records/{other}"), Some(&officer), None);
    assert_eq!(still.status, 200, "a preview disposed: {still:?}");
    // Confirmed: the certificate.
    b.click("input[name=confirm]");
    b.submit("main button[type=submit]");
    crate::web_officer::until_ended(&b, &srv, "disposal-running", &pi);
    assert_eq!(b.title(), "Disposal done · pivault", "{}", b.source());
    let cert = b.text("#certificate-id");
    b.check("disposal-done", &pi);
    let gone = srv.call("GET", &format!("/v1/records/{other}"), Some(&officer), None);
    assert_eq!(gone.status, 410, "{gone:?}");
    let kept = srv.call("GET", &format!("/v1/records/{held}"), Some(&officer), None);
    assert_eq!(
        kept.status, 200,
        "the held record was disposed of: {kept:?}"
    );
    // The download link gives the signed file, which verifies.
    let link = format!("/ui/disposals/certificate/{cert}");
    assert!(b.has(&format!("a[href='{link}']")));
    let cookie = b.session_cookie();
    let (status, headers, file) = srv.raw_with("GET", &link, &[("cookie", &cookie)], None);
    assert_eq!(status, 200, "{file}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-disposition" && v.contains("attachment"))
    );
    assert!(headers.iter().any(|(k, _)| k == "content-security-policy"));
    let key = srv.call("GET", "/v1/keys", None, None).json()["certificate_key"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto(&format!("{}/ui/verify", srv.base));
    b.type_into("#certificate", &file);
    b.type_into("#key", &key);
    b.submit("#verify-paste button[type=submit]");
    assert!(b.source().contains("VALID: certificate"), "{}", b.source());
    // Released, the hold is gone from the list.
    b.goto(&format!("{}/ui/holds", srv.base));
    b.press(&format!("Release the hold on record {held}"));
    assert!(b.text("[role=status]").contains("Hold released"));
    assert!(b.source().contains("No legal hold is in force"));
}

/// Signs in over plain HTTP (same-origin form post) and returns the cookie.
pub(crate) fn cookie_of(srv: &Server, user: &str) -> String {
    crate::web_import::cookie_with(srv, user, password_of(user).expose())
}

#[test]
fn every_page_for_every_role_carries_the_policy_and_no_personal_information() {
    // Many sign-ins and refusals from one address, on purpose: the
    // address's budgets (tested elsewhere) are lifted.
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    crate::search::counter_vault(&vault_dir)
        .vault
        .close()
        .unwrap();
    let srv = server::start_on(
        dir,
        vault_dir,
        PASSPHRASE,
        &["--refusals-per-minute", "0", "--logins-per-minute", "1000"],
    );
    let clerk = srv.token("clerk");
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(&json!({ "collection": "counter", "data": {
            "given_name": "Wilhelmina", "family_name": "Ostrowski", "ssn": SSN,
            "licence": "MA S87654321", "email": "w.ostrowski@example.com" } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let record = a.json()["record_id"].as_str().unwrap().to_owned();
    let sensitive = [SSN, "219099999", "S87654321"];
    let names = ["Wilhelmina", "Ostrowski", "w.ostrowski"];
    let pages = [
        "/ui/",
        "/ui/verify",
        "/ui/find",
        "/ui/two-factor",
        "/ui/records/new",
        "/ui/records/new?collection=counter",
        &format!("/ui/records/{record}/correct"),
        "/ui/holds",
        "/ui/disposals",
        "/ui/audit",
        "/ui/audit?action=record.",
        "/ui/audit/verify",
        "/ui/audit/report",
        "/ui/users",
        "/ui/scope",
        "/ui/retention",
        "/ui/import",
        "/ui/collections",
        "/ui/status",
        "/ui/review",
        "/ui/certificates",
        "/ui/cosign",
    ];
    // Who may open what: the core refuses the rest (403). Pages that only
    // show a form (or read what any user may: schemas, holds) answer all;
    // the form's action is refused by the core.
    let allowed = |user: &str, page: &str| -> bool {
        match page.split('?').next().unwrap() {
            "/ui/audit" | "/ui/audit/verify" | "/ui/audit/report" => {
                matches!(user, "officer" | "auditor")
            }
            "/ui/users" => matches!(user, "admin" | "officer" | "auditor"),
            "/ui/scope" => user != "auditor",
            "/ui/retention" => matches!(user, "officer" | "contractor"),
            "/ui/import" => user == "clerk",
            "/ui/collections" => user == "admin",
            // doctor's checks: whoever may build the WISP pack (Reports).
            "/ui/status" | "/ui/review" => matches!(user, "officer" | "auditor"),
            "/ui/certificates" => matches!(user, "officer" | "auditor"),
            // Their own batches (`Vault::disposals`: Dispose or ReadAudit).
            "/ui/cosign" => matches!(user, "officer" | "auditor" | "contractor"),
            p if p.ends_with("/correct") => matches!(user, "clerk" | "officer"),
            _ => true,
        }
    };
    for user in ["clerk", "officer", "auditor", "admin", "contractor", ""] {
        let cookie = if user.is_empty() {
            String::new()
        } else {
            cookie_of(&srv, user)
        };
        for page in &pages {
            let (status, headers, html) = srv.raw_with("GET", page, &[("cookie", &cookie)], None);
            let h = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let csp = h("content-security-policy");
            assert!(
                csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
                "{user} {page}: CSP {csp:?}"
            );
            assert_eq!(h("cache-control"), "no-store", "{user} {page}");
            assert_eq!(h("x-frame-options"), "DENY", "{user} {page}");
            if user.is_empty() {
                assert!(status == 200 || status == 303, "{page}: {status}");
                continue;
            }
            if allowed(user, page) {
                assert_eq!(status, 200, "{user} {page}: {html}");
            } else {
                assert_eq!(status, 403, "{user} {page}: {html}");
            }
            for s in sensitive {
                assert!(
                    !html.contains(s),
                    "{user} {page}: a sensitive value in the HTML"
                );
            }
            // Names only on the record's own correction page (masked fields).
            if !page.ends_with("/correct") {
                for n in names {
                    assert!(!html.contains(n), "{user} {page}: a name in the HTML");
                }
            }
            let title = html
                .split("<title>")
                .nth(1)
                .and_then(|t| t.split("</title>").next())
                .unwrap_or_default();
            for p in sensitive.iter().chain(names.iter()) {
                assert!(
                    !title.contains(p) && !page.contains(p),
                    "{user} {page}: {title}"
                );
            }
        }
    }
    // State-changing forms: refused cross-site or without the session's
    // CSRF token, and nothing changed.
    let admin = cookie_of(&srv, "admin");
    let officer = cookie_of(&srv, "officer");
    let clerk_cookie = cookie_of(&srv, "clerk");
    let posts: [(&str, &str, String); 11] = [
        (
            &admin,
            "/ui/users",
            "username=mallory&role=admin&password=Mallory-Lantern-Orchid-9".into(),
        ),
        (
            &admin,
            "/ui/users/action",
            "username=officer&action=disable".into(),
        ),
        (
            &officer,
            "/ui/holds",
            format!("action=place&kind=record&target={record}&reason=nothing"),
        ),
        (
            &officer,
            "/ui/disposals",
            format!("step=confirm&confirm=1&scope=record&target={record}&data_owner=X"),
        ),
        (
            &clerk_cookie,
            "/ui/records/new",
            "collection=counter&f.given_name=Eve&f.family_name=Evil".into(),
        ),
        (
            &clerk_cookie,
            "/ui/import",
            "collection=counter&format=csv&file=subject,given_name".into(),
        ),
        (
            &clerk_cookie,
            "/ui/import/confirm",
            format!("preview={}", "0".repeat(32)),
        ),
        (
            &admin,
            "/ui/collections",
            "action=create&name=evil&schema={\"purpose\":\"x\",\"fields\":[]}".into(),
        ),
        (
            &officer,
            "/ui/retention",
            "collection=counter&days=1&from=created".into(),
        ),
        (&officer, "/ui/review", "confirm=1".into()),
        (
            &officer,
            "/ui/certificates",
            "id=00000000-0000-0000-0000-000000000000&title=x".into(),
        ),
    ];
    for (cookie, path, form) in &posts {
        for headers in [
            vec![
                ("cookie", *cookie),
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
            vec![("cookie", *cookie), ("sec-fetch-site", "same-origin")],
        ] {
            let body = format!("{form}&csrf=0000");
            let a = srv.raw_with(
                "POST",
                path,
                &headers,
                Some((body.as_bytes(), "application/x-www-form-urlencoded")),
            );
            assert_eq!(a.0, 403, "{path} {headers:?} accepted");
        }
    }
    let admin_t = srv.token("admin");
    let users = srv.call("GET", "/v1/users", Some(&admin_t), None).json();
    let users: &Vec<Value> = users["items"].as_array().expect("users");
    assert!(!users.iter().any(|u| u["username"] == "mallory"));
    assert!(
        users
            .iter()
            .any(|u| u["username"] == "officer" && u["state"] == "active")
    );
    let officer_t = srv.token("officer");
    let reviews = srv
        .call(
            "GET",
            "/v1/audit/events?action=security.review",
            Some(&officer_t),
            None,
        )
        .json();
    assert_eq!(
        reviews["items"].as_array().map(Vec::len),
        Some(0),
        "a review recorded by a refused form: {reviews}"
    );
    let holds = srv.call("GET", "/v1/holds", Some(&officer_t), None).json();
    assert_eq!(holds["items"].as_array().map(Vec::len), Some(0), "{holds}");
    let retention = srv
        .call("GET", "/v1/retention", Some(&officer_t), None)
        .json();
    assert_eq!(
        retention["items"].as_array().map(Vec::len),
        Some(0),
        "{retention}"
    );
    let collections = srv.call("GET", "/v1/collections", Some(&admin_t), None);
    assert!(!collections.text.contains("evil"), "{collections:?}");
    let r = srv.call(
        "GET",
        &format!("/v1/records/{record}"),
        Some(&officer_t),
        None,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let listed = srv
        .call("GET", "/v1/records?collection=counter", Some(&clerk), None)
        .json();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[test]
fn a_contractor_sees_only_the_scope_cannot_open_a_record_and_disposes_in_scope() {
    let srv = counter_server();
    let clerk = srv.token("clerk");
    let admin = srv.token("admin");
    let mut ids = Vec::new();
    for (given, family, ssn) in [
        ("Bartholomew", "Quayle", SSN),
        ("Philippa", "Dunmore", OTHER_SSN),
    ] {
        let a = srv.call(
            "POST",
            "/v1/records",
            Some(&clerk),
            Some(&json!({ "collection": "counter", "data": {
                "given_name": given, "family_name": family, "ssn": ssn } })),
        );
        assert_eq!(a.status, 201, "{a:?}");
        ids.push(a.json()["record_id"].as_str().unwrap().to_owned());
    }
    let (mine, theirs) = (ids[0].clone(), ids[1].clone());
    let a = srv.call(
        "PUT",
        "/v1/contractors/contractor",
        Some(&admin),
        Some(&json!({ "records": [mine] })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let pi = [
        "Bartholomew",
        "Quayle",
        "Philippa",
        "Dunmore",
        SSN,
        OTHER_SSN,
        "219099999",
        "078051120",
    ];
    let b = Browser::start();
    sign_in(&b, &srv, "contractor");
    assert!(
        !b.source().contains("/ui/find"),
        "a contractor is offered the find page"
    );
    b.goto(&format!("{}/ui/scope", srv.base));
    assert_eq!(b.title(), "Your scope · pivault");
    let page = b.source();
    assert!(
        page.contains(&mine) && !page.contains(&theirs),
        "the scope: {page}"
    );
    assert!(page.contains("1 record(s)"), "{page}");
    for p in pi {
        assert!(!page.contains(p), "personal information on the scope page");
    }
    b.check("contractor-scope", &pi);
    // The record itself stays closed, in scope or not.
    b.goto(&format!("{}/ui/records/{mine}/correct", srv.base));
    assert_eq!(b.title(), "Not done · pivault");
    assert!(!b.source().contains("Quayle"));
    // Out of scope: refused by the core. In scope: previewed, confirmed.
    let dispose = |target: &str| {
        b.goto(&format!("{}/ui/disposals", srv.base));
        b.click("#scope option[value=record]");
        b.type_into("#target", target);
        b.type_into("#data_owner", "Counter Shop");
        b.submit("main button[type=submit]");
    };
    dispose(&theirs);
    assert!(
        b.text("[role=alert]").contains("Not done"),
        "{}",
        b.source()
    );
    assert!(!b.has("input[name=confirm]"));
    b.check("contractor-out-of-scope", &pi);
    dispose(&mine);
    assert_eq!(b.text("#count-records"), "1", "{}", b.source());
    b.click("input[name=confirm]");
    b.submit("main button[type=submit]");
    crate::web_officer::until_ended(&b, &srv, "contractor-disposal-running-one", &pi);
    assert_eq!(b.title(), "Disposal done · pivault", "{}", b.source());
    let cert = b.text("#certificate-id");
    b.check("contractor-disposal-done-one", &pi);
    let officer = srv.token("officer");
    let r = srv.call(
        "GET",
        &format!("/v1/records/{theirs}"),
        Some(&officer),
        None,
    );
    assert_eq!(
        r.status, 200,
        "an out-of-scope record was disposed of: {r:?}"
    );
    let r = srv.call("GET", &format!("/v1/records/{mine}"), Some(&officer), None);
    assert_eq!(r.status, 410, "{r:?}");
    // The scope page now links the record's certificate, which downloads.
    b.goto(&format!("{}/ui/scope", srv.base));
    let link = format!("/ui/disposals/certificate/{cert}");
    assert!(b.has(&format!("a[href='{link}']")), "{}", b.source());
    b.check("contractor-scope-after", &pi);
    let (status, _, file) = srv.raw_with("GET", &link, &[("cookie", &b.session_cookie())], None);
    assert_eq!(status, 200, "{file}");
    assert!(file.contains(&cert));
}
