//! The web page's import with a preview, the admin's collections and the
//! officer's retention policies, in a real browser against the real server
//! (issue 14): a clerk's file with bad lines stores nothing and names each
//! line's field and the core's message, never a value; the fixed file is
//! previewed, then stored once, by one confirmation, in the session that
//! uploaded it; an admin creates and changes a collection in which a clerk
//! then adds a record; an officer sets a retention policy and sees what
//! falls due. Every page visited passes axe-core and is screenshotted.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_core::ids::SubjectId;

use crate::common::PASSPHRASE;
use crate::server::{self, Server};
use crate::web::{Browser, counter_server};
use crate::web_roles::{cookie_of, sign_in};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Uploads a file from the import page and waits for the preview.
fn upload(b: &Browser, srv: &Server, file: &Path, collection: &str) {
    b.goto(&format!("{}/ui/import", srv.base));
    b.type_into("#import-file", &file.display().to_string());
    b.click(&format!("#import-collection option[value={collection}]"));
    b.press("Preview");
}

/// Records of a collection, as the API lists them.
fn count(srv: &Server, token: &str, collection: &str) -> usize {
    let a = srv.call(
        "GET",
        &format!("/v1/records?collection={collection}"),
        Some(token),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["items"].as_array().map(Vec::len).unwrap()
}

/// The CSRF token of a session (its pages' forms carry it).
fn csrf_of(srv: &Server, cookie: &str) -> String {
    let (status, _, html) = srv.raw_with("GET", "/ui/", &[("cookie", cookie)], None);
    assert_eq!(status, 200, "{html}");
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a form with the CSRF token")
        .to_owned()
}

/// A same-site form post with a session cookie: (status, body).
fn post_form(srv: &Server, path: &str, cookie: &str, form: &str) -> (u16, String) {
    let (status, _, html) = srv.raw_with(
        "POST",
        path,
        &[("cookie", cookie), ("sec-fetch-site", "same-origin")],
        Some((form.as_bytes(), "application/x-www-form-urlencoded")),
    );
    (status, html)
}

/// Signs in over plain HTTP with a password and returns the cookie.
pub(crate) fn cookie_with(srv: &Server, user: &str, password: &str) -> String {
    let form = format!("username={user}&password={password}");
    let a = srv.raw_with(
        "POST",
        "/ui/sign-in",
        &[("sec-fetch-site", "same-origin")],
        Some((form.as_bytes(), "application/x-www-form-urlencoded")),
    );
    assert_eq!(a.0, 303, "{user}: {a:?}");
    a.1.iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .expect("a session cookie")
}

/// A browser-like multipart upload of `file` with these form fields.
fn multipart(fields: &[(&str, &str)], file: &str) -> (Vec<u8>, String) {
    let b = "----pivaultTestBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{file}\r\n--{b}--\r\n"
    ));
    (
        body.into_bytes(),
        format!("multipart/form-data; boundary={b}"),
    )
}

/// `record.import` events in the trail.
fn imports_audited(srv: &Server) -> Vec<serde_json::Value> {
    let auditor = srv.token("auditor");
    let a = srv.call(
        "GET",
        "/v1/audit/events?action=record.import",
        Some(&auditor),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["items"].as_array().unwrap().clone()
}

const BAD_CSV: &str = "subject,given_name,family_name,ssn,email\n\
C-2001,Rosalind,Featherstone,219-09-9999,r.featherstone@example.com\n\
C-2002,Ignatius,Blackwood,078-05-112,i.blackwood@example.com\n\
C-2003,Cordelia,,,cordelia.at.example\n";

const GOOD_CSV: &str = "subject,given_name,family_name,ssn,email\n\
C-2001,Rosalind,Featherstone,219-09-9999,r.featherstone@example.com\n\
C-2002,Ignatius,Blackwood,078-05-1120,i.blackwood@example.com\n\
C-2003,Cordelia,Ashdown,,cordelia@example.org\n";

/// Every value of the import fixtures, as typed in the files.
const FILE_PI: [&str; 19] = [
    "Rosalind",
    "Featherstone",
    "219-09-9999",
    "219099999",
    "r.featherstone",
    "Ignatius",
    "Blackwood",
    "078-05-112",
    "07805112",
    "i.blackwood",
    "Cordelia",
    "Ashdown",
    "cordelia",
    "C-2001",
    "C-2002",
    "C-2003",
    "Thaddeus",
    "Wrenfield",
    "Oona",
];

fn assert_no_file_values(page: &str, what: &str) {
    for p in FILE_PI {
        assert!(
            !page.contains(p),
            "{what}: a value of the file ({p}) on the page"
        );
    }
}

#[test]
fn a_clerk_imports_a_file_with_bad_lines_fixes_it_previews_and_stores_it() {
    let srv = counter_server();
    let clerk = srv.token("clerk");
    let files = tempfile::tempdir().unwrap();
    let b = Browser::start();
    sign_in(&b, &srv, "clerk");
    assert!(b.source().contains("href=\"/ui/import\""), "the menu");
    b.goto(&format!("{}/ui/import", srv.base));
    assert_eq!(b.title(), "Import records · pivault");
    for id in [
        "import-file",
        "import-collection",
        "import-format",
        "import-subject",
        "import-map",
    ] {
        assert!(b.has(&format!("label[for='{id}']")), "no label for {id}");
    }
    b.check("import-form", &FILE_PI);

    // Two bad lines: each named with its field and the core's message;
    // nothing stored, no value of the file on the page.
    let bad = write(files.path(), "customers.csv", BAD_CSV);
    upload(&b, &srv, &bad, "counter");
    assert_eq!(b.title(), "Import records: lines to fix · pivault");
    assert!(b.url().ends_with("/ui/import"), "{}", b.url());
    let page = b.source();
    assert_no_file_values(&page, "the preview of a bad file");
    assert!(
        b.text("[role=alert]")
            .contains("Nothing was stored: 2 lines"),
        "{page}"
    );
    assert_eq!(b.text("#count-rows"), "3");
    assert_eq!(
        b.text("#count-valid"),
        "0",
        "a file with an error stores nothing"
    );
    assert_eq!(b.text("#count-rejected"), "2");
    let schema = crate::search::counter_schema();
    let first_error = |body: serde_json::Value| schema.field_errors(&body).remove(0);
    let expected = [
        (
            "3",
            first_error(
                json!({ "given_name": "Ignatius", "family_name": "Blackwood",
                "ssn": "078-05-112", "email": "i.blackwood@example.com" }),
            ),
        ),
        (
            "4",
            first_error(json!({ "given_name": "Cordelia", "email": "cordelia.at.example" })),
        ),
    ];
    assert_eq!(expected[0].1.field.as_deref(), Some("ssn"));
    assert_eq!(expected[1].1.field.as_deref(), Some("family_name"));
    for (i, (line, e)) in expected.iter().enumerate() {
        let row = format!("table.lines tbody tr:nth-child({})", i + 1);
        assert_eq!(b.text(&format!("{row} th")), *line);
        assert_eq!(
            b.text(&format!("{row} td:nth-child(2)")),
            e.field.clone().unwrap()
        );
        let said = b.text(&format!("{row} td:nth-child(3)"));
        assert!(
            said.contains(&e.message),
            "line {line}: {said:?} is not the core's {:?}",
            e.message
        );
    }
    assert!(
        !b.has("form[action='/ui/import/confirm']"),
        "a bad file offered for storing"
    );
    b.check("import-lines-to-fix", &FILE_PI);
    assert_eq!(
        count(&srv, &clerk, "counter"),
        0,
        "a bad file stored records"
    );

    // JSON Lines, told from the name: a malformed line is named as a line.
    let jsonl = write(
        files.path(),
        "more.jsonl",
        "{\"subject\": \"C-2004\", \"given_name\": \"Thaddeus\", \"family_name\": \"Wrenfield\"}\n{\"subject\": \"C-2005\", \"given_name\": \"Oona\"\n",
    );
    upload(&b, &srv, &jsonl, "counter");
    assert_eq!(b.text("table.lines tbody tr th"), "2", "{}", b.source());
    assert_eq!(b.text("table.lines tbody tr td:nth-child(2)"), "(the line)");
    assert!(
        b.text("table.lines tbody tr td:nth-child(3)")
            .contains("malformed JSON")
    );
    assert!(b.text("dl.counts").contains("JSON Lines"));
    assert_no_file_values(&b.source(), "the preview of a JSON Lines file");

    // Fixed: a preview (nothing stored yet), then stored on confirmation.
    let good = write(files.path(), "customers-fixed.csv", GOOD_CSV);
    upload(&b, &srv, &good, "counter");
    assert_eq!(
        b.title(),
        "Import records: preview · pivault",
        "{}",
        b.source()
    );
    assert!(b.text("[role=status]").contains("nothing is stored yet"));
    assert_eq!(b.text("#count-valid"), "3");
    assert_no_file_values(&b.source(), "the preview of a good file");
    assert_eq!(
        count(&srv, &clerk, "counter"),
        0,
        "a preview stored records"
    );
    b.check("import-preview", &FILE_PI);
    b.press("Store 3 records");
    assert_eq!(b.title(), "Records imported · pivault", "{}", b.source());
    assert_eq!(b.text("#count-imported"), "3");
    assert_no_file_values(&b.source(), "the import's result");
    b.check("import-done", &FILE_PI);
    assert_eq!(count(&srv, &clerk, "counter"), 3);
    let ids = b.text("ul.ids");
    // The core audited the import (and each record).
    let events = imports_audited(&srv);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].to_string().contains("count:3"), "{}", events[0]);

    // An imported customer is found, masked.
    b.goto(&format!("{}/ui/find", srv.base));
    b.clear("#collection");
    b.type_into("#collection", "counter");
    b.type_into("#value", "078-05-1120");
    b.submit("main button[type=submit]");
    let page = b.source();
    assert!(page.contains("1 record(s) found"), "{page}");
    let found = b.text("ul.records li p code");
    assert!(
        ids.contains(&found),
        "{found} is not one of the imported {ids}"
    );
    assert!(page.contains("***-**-1120") && !page.contains("078-05-1120"));
}

#[test]
fn one_preview_is_stored_once_and_only_from_the_session_that_uploaded_it() {
    let srv = counter_server();
    let admin = srv.token("admin");
    let clerk = srv.token("clerk");
    let pw = "Juniper-Foundry-Mistral-84";
    let a = srv.call(
        "POST",
        "/v1/users",
        Some(&admin),
        Some(&json!({ "username": "clerk2", "role": "clerk", "password": pw })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let files = tempfile::tempdir().unwrap();
    let file = write(
        files.path(),
        "two.csv",
        "subject,given_name,family_name\nC-3001,Rosalind,Featherstone\nC-3002,Ignatius,Blackwood\n",
    );
    let b = Browser::start();
    sign_in(&b, &srv, "clerk");
    upload(&b, &srv, &file, "counter");
    assert_eq!(
        b.title(),
        "Import records: preview · pivault",
        "{}",
        b.source()
    );
    let preview = b.value("input[name=preview]");
    assert_eq!(preview.len(), 32, "a random preview ID: {preview}");
    let csrf = b.value("form[action='/ui/import/confirm'] input[name=csrf]");
    let cookie = b.session_cookie();
    let confirm = |cookie: &str, csrf: &str, preview: &str| {
        post_form(
            &srv,
            "/ui/import/confirm",
            cookie,
            &format!("csrf={csrf}&preview={preview}"),
        )
    };

    // Another user's session, and the same clerk's other session, each
    // with its own valid CSRF token: nothing stored, the preview kept.
    let theirs = cookie_with(&srv, "clerk2", pw);
    let (status, html) = confirm(&theirs, &csrf_of(&srv, &theirs), &preview);
    assert_eq!(status, 410, "another user confirmed the preview: {html}");
    assert!(html.contains("no longer available"), "{html}");
    let other = cookie_of(&srv, "clerk");
    assert_ne!(other, cookie);
    let (status, html) = confirm(&other, &csrf_of(&srv, &other), &preview);
    assert_eq!(status, 410, "another session confirmed the preview: {html}");
    // Forged: the owner's cookie without the session's token, or sent from
    // another site; a made-up preview ID.
    assert_eq!(confirm(&cookie, "0000", &preview).0, 403);
    let (status, _, _) = srv.raw_with(
        "POST",
        "/ui/import/confirm",
        &[
            ("cookie", &cookie),
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        Some((
            format!("csrf={csrf}&preview={preview}").as_bytes(),
            "application/x-www-form-urlencoded",
        )),
    );
    assert_eq!(status, 403);
    assert_eq!(confirm(&cookie, &csrf, &"0".repeat(32)).0, 410);
    // An upload without the session's token is refused before it is read.
    let (body, ct) = multipart(
        &[
            ("csrf", "0000"),
            ("collection", "counter"),
            ("format", "csv"),
        ],
        "subject,given_name,family_name\nC-9,Eve,Evil\n",
    );
    let (status, _, _) = srv.raw_with(
        "POST",
        "/ui/import",
        &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
        Some((&body, &ct)),
    );
    assert_eq!(
        status, 403,
        "an upload without the CSRF token was previewed"
    );
    assert_eq!(count(&srv, &clerk, "counter"), 0);

    // The preview's page, as a browser gets it: no-store, the policy.
    let (body, ct) = multipart(
        &[
            ("csrf", &csrf),
            ("collection", "counter"),
            ("format", "auto"),
        ],
        "subject,given_name,family_name\nC-3003,Cordelia,Ashdown\n",
    );
    let (status, headers, html) = srv.raw_with(
        "POST",
        "/ui/import",
        &[("cookie", &cookie), ("sec-fetch-site", "same-origin")],
        Some((&body, &ct)),
    );
    assert_eq!(status, 200, "{html}");
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(h("cache-control"), "no-store");
    assert!(h("content-security-policy").contains("default-src 'none'"));
    assert_no_file_values(&html, "a raw preview");
    assert_eq!(count(&srv, &clerk, "counter"), 0);

    // Two tabs of the session confirm the first preview at once: one
    // stores, the others are told.
    let barrier = std::sync::Barrier::new(4);
    let results: Vec<(u16, String)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    barrier.wait();
                    confirm(&cookie, &csrf, &preview)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        stored,
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for (status, html) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409, "{html}");
        assert!(
            html.contains("already stored") || html.contains("being stored"),
            "{html}"
        );
    }
    assert_eq!(count(&srv, &clerk, "counter"), 2, "stored more than once");
    // The browser's own tab, confirming last, is told and stores nothing.
    b.press("Store 2 records");
    assert_eq!(b.title(), "Import records · pivault");
    assert!(
        b.text("[role=alert]")
            .contains("already stored (2 records)"),
        "{}",
        b.source()
    );
    b.check("import-already-stored", &FILE_PI);
    assert_eq!(count(&srv, &clerk, "counter"), 2);
    assert_eq!(imports_audited(&srv).len(), 1, "one import in the trail");
    // The second preview is still its owner's to confirm.
    let second = html
        .split("name=\"preview\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let (status, page) = confirm(&cookie, &csrf, &second);
    assert_eq!(status, 200, "{page}");
    assert_eq!(count(&srv, &clerk, "counter"), 3);
}

#[test]
fn a_clerk_cannot_open_collections_an_admin_creates_and_changes_one_and_a_clerk_adds_to_it() {
    let srv = counter_server();
    let admin_t = srv.token("admin");
    let clerk_t = srv.token("clerk");
    let c = Browser::start();
    sign_in(&c, &srv, "clerk");
    assert!(
        !c.source().contains("/ui/collections"),
        "a clerk is offered the collections page"
    );
    c.goto(&format!("{}/ui/collections", srv.base));
    assert_eq!(c.title(), "Not done · pivault");
    c.check("collections-refused-to-a-clerk", &[]);
    let (status, _, _) = srv.raw_with(
        "GET",
        "/ui/collections",
        &[("cookie", &c.session_cookie())],
        None,
    );
    assert_eq!(status, 403);

    let a = Browser::start();
    sign_in(&a, &srv, "admin");
    a.goto(&format!("{}/ui/collections", srv.base));
    assert_eq!(a.title(), "Collections · pivault");
    let page = a.text("main");
    assert!(
        page.contains(
            "ssn, type ssn: optional, sensitive: shown masked, each reveal audited, searchable."
        ),
        "{page}"
    );
    assert!(
        page.contains("given_name, type given_name: required, searchable."),
        "{page}"
    );
    a.check("collections", &[]);

    // A schema the core refuses: its message beside the schema, the
    // typed text kept, nothing created.
    let bad = r#"{"purpose": "Loyalty programme members", "fields": [{"name": "given_name", "type": "given_name", "required": true}, {"name": "cvv", "type": "text"}]}"#;
    let expected = vault_core::schema::Schema::from_json(bad)
        .unwrap_err()
        .to_string();
    a.type_into("#new-name", "loyalty");
    a.type_into("#new-schema", bad);
    a.press("Create the collection");
    assert_eq!(a.text("#e-new-schema"), expected);
    assert!(a.has("#new-schema[aria-invalid=true]"));
    assert_eq!(a.value("#new-name"), "loyalty");
    assert_eq!(a.value("#new-schema"), bad);
    a.check("collections-create-refused", &[]);
    let listed = srv.call("GET", "/v1/collections", Some(&admin_t), None);
    assert!(!listed.text.contains("loyalty"), "{listed:?}");

    let good = r#"{"purpose": "Loyalty programme members", "fields": [{"name": "given_name", "type": "given_name", "required": true}, {"name": "family_name", "type": "family_name", "required": true}]}"#;
    a.clear("#new-schema");
    a.type_into("#new-schema", good);
    a.press("Create the collection");
    assert!(
        a.text("[role=status]")
            .contains("Collection loyalty created with 2 field(s)"),
        "{}",
        a.source()
    );
    a.check("collections-created", &[]);

    // Changed: a new required field is refused (records without it may
    // exist), a new optional one is accepted.
    let change = |schema: &str| {
        a.click("#schema-loyalty");
        a.clear("#schema-loyalty");
        a.type_into("#schema-loyalty", schema);
        a.press("Save the schema of loyalty");
    };
    a.click("details:has(#schema-loyalty) summary");
    let required = r#"{"purpose": "Loyalty programme members", "fields": [{"name": "given_name", "type": "given_name", "required": true}, {"name": "family_name", "type": "family_name", "required": true}, {"name": "phone", "type": "phone", "required": true}]}"#;
    change(required);
    assert!(
        a.text("#e-schema-loyalty")
            .contains("a new field must be optional"),
        "{}",
        a.source()
    );
    a.check("collections-change-refused", &[]);
    change(&required.replace("\"phone\", \"required\": true", "\"phone\""));
    assert!(
        a.text("[role=status]")
            .contains("Collection loyalty changed with 3 field(s)"),
        "{}",
        a.source()
    );
    let schema = srv.call("GET", "/v1/collections/loyalty", Some(&admin_t), None);
    assert!(schema.text.contains("phone"), "{schema:?}");

    // The clerk adds a record to it, through the form made from its schema.
    c.goto(&format!("{}/ui/records/new?collection=loyalty", srv.base));
    assert!(c.has("label[for='f-phone']"), "{}", c.source());
    c.type_into("#f-given_name", "Perpetua");
    c.type_into("#f-family_name", "Hollowell");
    c.type_into("#f-phone", "+1 617 555 0142");
    c.submit("main button[type=submit]");
    assert_eq!(c.title(), "Record added · pivault", "{}", c.source());
    assert_eq!(count(&srv, &clerk_t, "loyalty"), 1);
}

#[test]
fn an_officer_sets_a_retention_policy_and_the_page_shows_what_is_due() {
    // Two customers stored on the fixture clock's 2025-01-01, one held.
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let f = crate::search::counter_vault(&vault_dir);
    let mut ids = Vec::new();
    for (given, family) in [("Bartholomew", "Quayle"), ("Philippa", "Dunmore")] {
        ids.push(
            f.vault
                .put_record(
                    &f.clerk,
                    "counter",
                    SubjectId::new(),
                    &json!({ "given_name": given, "family_name": family }),
                )
                .unwrap(),
        );
    }
    f.vault
        .add_hold(&f.officer, Some(ids[0]), None, "litigation hold pending")
        .unwrap();
    f.vault.close().unwrap();
    let srv = server::start_on(dir, vault_dir, PASSPHRASE, &[]);
    let pi = ["Bartholomew", "Quayle", "Philippa", "Dunmore"];

    let b = Browser::start();
    sign_in(&b, &srv, "officer");
    b.goto(&format!("{}/ui/retention", srv.base));
    assert!(
        b.text("#policy-counter").contains("no policy"),
        "{}",
        b.source()
    );
    assert_eq!(b.text("#due"), "Nothing is past its retention period now.");
    assert!(b.has("label[for='days-counter']") && b.has("label[for='from-counter']"));
    b.check("retention-no-policy", &pi);

    // Zero days: the core's refusal beside the days, nothing set.
    b.type_into("#days-counter", "0");
    b.press("Set the policy of counter");
    assert!(
        b.text("#e-days-counter")
            .contains("retention must be at least one day"),
        "{}",
        b.source()
    );
    assert!(b.has("#days-counter[aria-invalid=true]"));
    b.check("retention-refused", &pi);
    let officer = srv.token("officer");
    let policies = || {
        srv.call("GET", "/v1/retention", Some(&officer), None)
            .json()
    };
    assert_eq!(policies()["items"].as_array().map(Vec::len), Some(0));

    // A year from creation: the unheld record is due, the held one left out.
    b.clear("#days-counter");
    b.type_into("#days-counter", "365");
    b.click("#from-counter option[value=created]");
    b.press("Set the policy of counter");
    assert!(
        b.text("[role=status]")
            .contains("The policy of counter is set"),
        "{}",
        b.source()
    );
    assert!(
        b.text("#policy-counter")
            .contains("kept 365 day(s) from its creation")
    );
    assert_eq!(
        b.text("#due"),
        "1 record(s) of 1 customer(s) are past retention; 1 held."
    );
    assert!(
        b.source().contains(&ids[0].to_string()),
        "the held record left out"
    );
    assert_eq!(b.value("#days-counter"), "365");
    b.check("retention-set", &pi);
    let p = policies();
    assert_eq!(p["items"][0]["days"], 365, "{p}");
    assert_eq!(p["items"][0]["from_updated"], false, "{p}");
    // Longer, from the last update.
    b.clear("#days-counter");
    b.type_into("#days-counter", "400");
    b.click("#from-counter option[value=updated]");
    b.press("Set the policy of counter");
    assert!(
        b.text("#policy-counter")
            .contains("kept 400 day(s) from its last update")
    );
    assert_eq!(policies()["items"][0]["from_updated"], true);

    // A clerk's forged form, with her own valid token: refused by the core.
    let clerk = cookie_of(&srv, "clerk");
    let (status, _) = post_form(
        &srv,
        "/ui/retention",
        &clerk,
        &format!(
            "csrf={}&collection=counter&days=1&from=created",
            csrf_of(&srv, &clerk)
        ),
    );
    assert_eq!(status, 403);
    assert_eq!(policies()["items"][0]["days"], 400);
}
