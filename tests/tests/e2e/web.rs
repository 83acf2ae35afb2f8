//! The web page in a real browser: Debian's headless Chromium driven over
//! the W3C WebDriver protocol by chromedriver (both installed by
//! `scripts/setup.sh`), against the real server over TLS. The WebDriver
//! client is the few calls these tests need, over `ureq`. Screenshots go to
//! `target/ui-screenshots/` (or `PIVAULT_SCREENSHOTS`), which CI keeps.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_core::totp;

use crate::common::{PASSPHRASE, password_of};
use crate::server::{self, Server};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver key codes.
pub(crate) const KEY_TAB: &str = "\u{e004}";
pub(crate) const KEY_ENTER: &str = "\u{e007}";
pub(crate) const KEY_CONTROL: &str = "\u{e009}";

/// A headless Chromium under chromedriver, one WebDriver session.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup.sh installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get(format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--window-size=1000,1200",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile: profile,
        };
        let v = b.post("/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> Value {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body)
            .expect("WebDriver call");
        let v: Value = r.body_mut().read_json().expect("WebDriver JSON");
        v["value"].clone()
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .expect("WebDriver call");
        let v: Value = r.body_mut().read_json().expect("WebDriver JSON");
        v["value"].clone()
    }

    pub(crate) fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub(crate) fn goto(&self, url: &str) {
        self.post(&self.s("/url"), json!({ "url": url }));
    }

    pub(crate) fn find(&self, css: &str) -> String {
        let v = self.post(
            &self.s("/element"),
            json!({ "using": "css selector", "value": css }),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css} on {}: {v}", self.url()))
            .to_owned()
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.post(
            &self.s(&format!("/element/{e}/value")),
            json!({ "text": text }),
        );
    }

    /// Clicks a submit button and waits for the answer's page (the click
    /// may return before the browser has the new page).
    pub(crate) fn submit(&self, css: &str) {
        let before = self.source();
        self.click(css);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.source() == before {
            assert!(
                Instant::now() < deadline,
                "no new page after clicking {css}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses keys on whatever has the focus (WebDriver actions, no
    /// element targeted): what a person at a keyboard does. Each char is a
    /// key; `KEY_*` are the WebDriver codes of Tab, Enter and so on.
    pub(crate) fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({ "type": "keyDown", "value": c.to_string() }),
                    json!({ "type": "keyUp", "value": c.to_string() }),
                ]
            })
            .collect();
        self.post(
            &self.s("/actions"),
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] }),
        );
    }

    /// Presses Tab until the focused element matches `css` (at most 80
    /// times), and checks the focus is visible there (WCAG 2.4.7).
    pub(crate) fn tab_to(&self, css: &str) {
        for _ in 0..80 {
            let focused = self.post(
                &self.s("/execute/sync"),
                json!({ "script": "const e = document.activeElement; \
                    return e && e.matches(arguments[0]) ? getComputedStyle(e).outlineStyle : null;",
                        "args": [css] }),
            );
            if let Some(outline) = focused.as_str() {
                assert_ne!(outline, "none", "{css} has the focus but shows no outline");
                return;
            }
            self.keys(KEY_TAB);
        }
        panic!("Tab never reaches {css} on {}", self.url());
    }

    /// Presses Enter on the focused element and waits for the new page.
    pub(crate) fn enter(&self) {
        let before = self.source();
        self.keys(KEY_ENTER);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.source() == before {
            assert!(Instant::now() < deadline, "no new page after Enter");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Selects the focused field's text and types over it (Ctrl+A).
    pub(crate) fn type_over(&self, text: &str) {
        self.post(
            &self.s("/actions"),
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": KEY_CONTROL },
                { "type": "keyDown", "value": "a" },
                { "type": "keyUp", "value": "a" },
                { "type": "keyUp", "value": KEY_CONTROL }] }] }),
        );
        self.keys(text);
    }

    pub(crate) fn clear(&self, css: &str) {
        let e = self.find(css);
        self.post(&self.s(&format!("/element/{e}/clear")), json!({}));
    }

    pub(crate) fn click(&self, css: &str) {
        let e = self.find(css);
        self.post(&self.s(&format!("/element/{e}/click")), json!({}));
    }

    pub(crate) fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.get(&self.s(&format!("/element/{e}/text")))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element's text, or `None` when the page has none; for a page
    /// that reloads itself, where the element may go between two calls.
    pub(crate) fn try_text(&self, css: &str) -> Option<String> {
        let v = self.post(
            &self.s("/element"),
            json!({ "using": "css selector", "value": css }),
        );
        let e = v[ELEMENT].as_str()?.to_owned();
        let t = self.get(&self.s(&format!("/element/{e}/text")));
        t.as_str().map(str::to_owned)
    }

    pub(crate) fn title(&self) -> String {
        self.get(&self.s("/title")).as_str().unwrap().to_owned()
    }

    pub(crate) fn url(&self) -> String {
        self.get(&self.s("/url")).as_str().unwrap_or("").to_owned()
    }

    pub(crate) fn source(&self) -> String {
        self.get(&self.s("/source")).as_str().unwrap().to_owned()
    }

    /// Writes a PNG of the page to the screenshots folder.
    pub(crate) fn screenshot(&self, name: &str) {
        use std::io::Write as _;
        let b64 = self.get(&self.s("/screenshot"));
        let bytes = base64_decode(b64.as_str().unwrap());
        let dir = std::env::var_os("PIVAULT_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = std::fs::File::create(dir.join(format!("{name}.png"))).unwrap();
        f.write_all(&bytes).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
    }

    /// Finds an element by XPath (a button by its text).
    pub(crate) fn find_xpath(&self, xpath: &str) -> String {
        let v = self.post(
            &self.s("/element"),
            json!({ "using": "xpath", "value": xpath }),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {xpath} on {}: {v}", self.url()))
            .to_owned()
    }

    /// Clicks the button with this text and waits for the answer's page.
    pub(crate) fn press(&self, label: &str) {
        let before = self.source();
        let e = self.find_xpath(&format!("//button[normalize-space()='{label}']"));
        self.post(&self.s(&format!("/element/{e}/click")), json!({}));
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.source() == before {
            assert!(
                Instant::now() < deadline,
                "no new page after pressing {label}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// An element's current value (what a user typed or the page filled in).
    pub(crate) fn value(&self, css: &str) -> String {
        let e = self.find(css);
        self.get(&self.s(&format!("/element/{e}/property/value")))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether an element matching `css` is on the page.
    pub(crate) fn has(&self, css: &str) -> bool {
        let v = self.post(
            &self.s("/elements"),
            json!({ "using": "css selector", "value": css }),
        );
        v.as_array().is_some_and(|a| !a.is_empty())
    }

    /// The session cookie's `name=value` (HttpOnly cookies are visible to
    /// WebDriver, not to the page).
    pub(crate) fn session_cookie(&self) -> String {
        let v = self.get(&self.s("/cookie/__Host-pivault"));
        format!(
            "__Host-pivault={}",
            v["value"].as_str().expect("session cookie")
        )
    }

    /// Runs axe-core (installed by `scripts/setup.sh` into `target/axe`) in
    /// the page through WebDriver and fails on any serious or critical
    /// violation, naming each rule and the elements it found.
    pub(crate) fn axe(&self, name: &str) {
        let source = axe_source();
        let script = format!(
            "{source}\n;const done = arguments[arguments.length - 1];\
             axe.run(document, {{ resultTypes: ['violations'] }})\
             .then(r => done(JSON.stringify(r.violations.map(v => ({{ id: v.id, impact: v.impact, help: v.help,\
                nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ')) }})))))\
             .catch(e => done('axe failed: ' + e));"
        );
        let v = self.post(
            &self.s("/execute/async"),
            json!({ "script": script, "args": [] }),
        );
        let text = v
            .as_str()
            .unwrap_or_else(|| panic!("{name}: axe did not run: {v}"));
        let found: Vec<Value> =
            serde_json::from_str(text).unwrap_or_else(|_| panic!("{name}: {text}"));
        // Moderate and minor findings are reported, not failed on.
        for v in &found {
            eprintln!("axe {name}: {} {} ({})", v["impact"], v["id"], v["help"]);
        }
        let bad: Vec<&Value> = found
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(
            bad.is_empty(),
            "{name} ({}): serious or critical accessibility violations: {}",
            self.url(),
            serde_json::to_string_pretty(&bad).unwrap()
        );
        AXE_PAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every page a journey visits: a screenshot, the axe-core check, and
    /// no fixture personal information in its URL or title (what the
    /// browser's history keeps).
    pub(crate) fn check(&self, name: &str, personal: &[&str]) {
        self.screenshot(name);
        self.axe(name);
        // Readable at 200 % zoom: at half the width, nothing needs a
        // sideways scroll.
        self.post(
            &self.s("/window/rect"),
            json!({ "width": 500, "height": 1200 }),
        );
        let fits = self.post(
            &self.s("/execute/sync"),
            json!({ "script": "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;", "args": [] }),
        );
        self.post(
            &self.s("/window/rect"),
            json!({ "width": 1000, "height": 1200 }),
        );
        assert_eq!(
            fits,
            json!(true),
            "{name}: the page is wider than a 200 % zoomed window"
        );
        let (url, title) = (self.url(), self.title());
        for p in personal {
            assert!(
                !url.contains(p),
                "{name}: personal information in the URL {url}"
            );
            assert!(
                !title.contains(p),
                "{name}: personal information in the title {title}"
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Pages checked by axe-core in this run (the report counts them).
pub(crate) static AXE_PAGES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// axe-core's script, from `target/axe` (or `PIVAULT_AXE`): installed from
/// the npm registry by `scripts/setup.sh`.
fn axe_source() -> &'static str {
    static SRC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRC.get_or_init(|| {
        let path = std::env::var_os("PIVAULT_AXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target/axe/node_modules/axe-core/axe.min.js")
            });
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("axe-core at {} ({e}): run scripts/setup.sh", path.display())
        })
    })
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        bits = (bits << 6) | A.iter().position(|&a| a == c).expect("base64") as u32;
        n += 6;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

pub(crate) fn base32_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0u32, Vec::new());
    for c in s.trim().bytes() {
        bits = (bits << 5) | A.iter().position(|&a| a == c).expect("base32") as u64;
        n += 5;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

/// The server over a vault with the search tests' `counter` collection.
pub(crate) fn counter_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let f = crate::search::counter_vault(&vault_dir);
    f.vault.close().unwrap();
    server::start_on(dir, vault_dir, PASSPHRASE, &[])
}

pub(crate) const SSN: &str = "219-09-9999";

/// The first journey's customer, as typed or stored.
const PI_WILHELMINA: [&str; 4] = ["Wilhelmina", "Ostrowski", SSN, "219099999"];

#[test]
fn a_clerk_enrols_finds_a_customer_masked_and_a_visitor_verifies_a_certificate() {
    let srv = counter_server();
    let admin = srv.token("admin");
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    // Clerks must use a second factor here; a stored customer to find.
    let a = srv.call(
        "PUT",
        "/v1/policy/two-factor",
        Some(&admin),
        Some(&json!({ "required": ["admin", "officer", "contractor", "clerk"] })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(&json!({ "collection": "counter", "data": {
            "given_name": "Wilhelmina", "family_name": "Ostrowski", "ssn": SSN } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let record = a.json()["record_id"].as_str().unwrap().to_owned();

    let b = Browser::start();
    let home = format!("{}/ui/", srv.base);
    b.goto(&home);
    assert_eq!(b.title(), "Sign in · pivault");
    b.check("sign-in", &PI_WILHELMINA);
    b.type_into("#username", "clerk");
    b.type_into("#password", password_of("clerk").expose());
    b.submit("button[type=submit]");
    // The role requires a second factor: the only page is the enrolment.
    assert!(b.url().ends_with("/ui/two-factor"), "{}", b.url());
    b.check("two-factor-enrolment", &PI_WILHELMINA);
    assert!(
        b.source().contains("data:image/svg+xml;base64,"),
        "the QR code is on the page"
    );
    let secret = base32_decode(&b.text("code.secret"));
    assert_eq!(secret.len(), 20);
    let code = totp::code_at(
        &secret,
        totp::step_at(jiff::Timestamp::now().as_millisecond()),
    );
    b.type_into("#code", &code);
    b.submit("main button[type=submit]");
    let page = b.source();
    assert!(page.contains("Two-factor sign-in is set up"), "{page}");
    assert_eq!(page.matches("<li><code>").count(), 10, "ten recovery codes");
    b.check("two-factor-recovery-codes", &PI_WILHELMINA);

    // Find the customer by SSN typed without dashes: masked, never revealed.
    b.goto(&format!("{}/ui/find", srv.base));
    assert_eq!(b.title(), "Find a customer · pivault");
    b.clear("#collection");
    b.type_into("#collection", "counter");
    b.type_into("#value", &SSN.replace('-', ""));
    b.submit("main button[type=submit]");
    let page = b.source();
    assert!(page.contains(&record), "the record is found: {page}");
    assert!(page.contains("***-**-9999"), "masked: {page}");
    assert!(
        !page.contains(SSN) && !page.contains("219099999"),
        "an SSN on the page"
    );
    // No more than the API's masked answer to the same find shows.
    let api = srv.call(
        "POST",
        "/v1/collections/counter/find",
        Some(&officer),
        Some(&json!({ "type": "ssn", "value": SSN })),
    );
    assert_eq!(api.status, 200, "{api:?}");
    for (field, value) in api.json()["records"][0]["fields"].as_object().unwrap() {
        let shown = format!(
            "<dt>{field}</dt><dd>{}</dd>",
            value.as_str().unwrap_or_default()
        );
        assert!(page.contains(&shown), "{shown} not on the page");
    }
    // Nothing personal in the URL or the title (the search was a POST).
    assert!(b.url().ends_with("/ui/find"), "{}", b.url());
    assert_eq!(b.title(), "Find a customer · pivault");
    b.check("find-masked", &PI_WILHELMINA);

    // The admin disables the clerk: the open page fails its next click.
    let a = srv.call("POST", "/v1/users/clerk/disable", Some(&admin), None);
    assert_eq!(a.status, 200, "{a:?}");
    b.goto(&format!("{}/ui/find", srv.base));
    assert_eq!(
        b.title(),
        "Sign in · pivault",
        "a disabled user's page stays open"
    );

    // A visitor who is signed in nowhere verifies a certificate.
    let a = srv.call(
        "POST",
        "/v1/disposals",
        Some(&officer),
        Some(&json!({ "scope": "record", "record": record, "data_owner": "Counter Shop" })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let cert_id = a.json()["certificate_id"].as_str().unwrap().to_owned();
    let file = srv.call(
        "GET",
        &format!("/v1/certificates/{cert_id}/file"),
        Some(&officer),
        None,
    );
    assert_eq!(file.status, 200);
    let key = srv.call("GET", "/v1/keys", None, None).json()["certificate_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let check = |text: &str| {
        b.goto(&format!("{}/ui/verify", srv.base));
        b.type_into("#certificate", text);
        b.type_into("#key", &key);
        b.submit("#verify-paste button[type=submit]");
        b.source()
    };
    let page = check(&file.text);
    assert!(page.contains("VALID: certificate"), "{page}");
    assert!(page.contains(&cert_id));
    b.check("verify-valid", &PI_WILHELMINA);
    // One changed byte in the signed body: rejected.
    let tampered = file.text.replacen("Counter Shop", "Counter Shoq", 1);
    assert_ne!(tampered, file.text, "the data owner is in the certificate");
    let page = check(&tampered);
    assert!(page.contains("INVALID"), "{page}");
    assert!(!page.contains("VALID: certificate"));
    b.check("verify-tampered", &PI_WILHELMINA);
    // The same two checks with the files uploaded, as a contractor's
    // customer would: the certificate file and the vault's key file.
    let files = tempfile::tempdir().unwrap();
    let upload = |name: &str, text: &str| {
        let cert = files.path().join(name);
        std::fs::write(&cert, text).unwrap();
        let pem = files.path().join("certificate.pem");
        std::fs::write(&pem, &key).unwrap();
        b.goto(&format!("{}/ui/verify", srv.base));
        b.type_into("#certificate_file", cert.to_str().unwrap());
        b.type_into("#key_file", pem.to_str().unwrap());
        b.submit("#verify-upload button[type=submit]");
        b.source()
    };
    let page = upload("certificate.json", &file.text);
    assert!(page.contains("VALID: certificate"), "{page}");
    assert!(page.contains(&cert_id));
    b.check("verify-upload-valid", &PI_WILHELMINA);
    let page = upload("tampered.json", &tampered);
    assert!(page.contains("INVALID"), "{page}");
    assert!(!page.contains("VALID: certificate"));
    // Nothing chosen (a browser enforces `required`; a script need not).
    let (status, _, html) = srv.raw_with(
        "POST",
        "/ui/verify/upload",
        &[("sec-fetch-site", "same-origin")],
        Some((b"--x--\r\n".as_slice(), "multipart/form-data; boundary=x")),
    );
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("Choose both files"), "{html}");
    // And from another site: refused before anything is read.
    let (status, _, _) = srv.raw_with(
        "POST",
        "/ui/verify/upload",
        &[("sec-fetch-site", "cross-site")],
        Some((b"--x--\r\n".as_slice(), "multipart/form-data; boundary=x")),
    );
    assert_eq!(status, 403);
}

#[test]
fn pages_carry_the_policy_and_cross_site_or_tokenless_posts_are_refused() {
    let srv = server::start(&[]);
    // Every page, signed in or not, carries the headers.
    for path in ["/ui/", "/ui/verify", "/ui/find", "/ui/two-factor"] {
        let a = srv.call("GET", path, None, None);
        assert!(a.status == 200 || a.status == 303, "{path}: {a:?}");
        let h = srv.raw_headers("GET", path, None);
        let csp = h
            .get("content-security-policy")
            .cloned()
            .unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: CSP {csp:?}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            h.get("cache-control").map(String::as_str),
            Some("no-store"),
            "{path}"
        );
        assert_eq!(
            h.get("x-frame-options").map(String::as_str),
            Some("DENY"),
            "{path}"
        );
    }
    // A sign-in posted by another site's page is refused before the
    // password is looked at (no audit event of a login, no cookie).
    let form = format!("username=clerk&password={}", password_of("clerk").expose());
    let a = srv.raw_with(
        "POST",
        "/ui/sign-in",
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ],
        Some((form.as_bytes(), "application/x-www-form-urlencoded")),
    );
    assert_eq!(a.0, 403, "a cross-site sign-in was accepted");
    assert!(!a.1.iter().any(|(k, _)| k == "set-cookie"));
    // The same form from the page itself signs in and sets the cookie.
    let a = srv.raw_with(
        "POST",
        "/ui/sign-in",
        &[("sec-fetch-site", "same-origin")],
        Some((form.as_bytes(), "application/x-www-form-urlencoded")),
    );
    assert_eq!(a.0, 303);
    let cookie =
        a.1.iter()
            .find(|(k, _)| k == "set-cookie")
            .map(|(_, v)| v.clone())
            .expect("a session cookie");
    for attr in [
        "__Host-pivault=",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "cookie without {attr}: {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    // A same-site POST with the cookie but without the session's CSRF
    // token changes nothing.
    let a = srv.raw_with(
        "POST",
        "/ui/find",
        &[("sec-fetch-site", "same-origin"), ("cookie", &pair)],
        Some((
            b"csrf=00&collection=customers&type=ssn&value=123456789",
            "application/x-www-form-urlencoded",
        )),
    );
    assert_eq!(a.0, 403, "a form without the CSRF token was accepted");
}

#[test]
fn an_officer_reveals_one_field_with_a_reason_and_the_trail_shows_it_a_clerk_cannot() {
    let srv = counter_server();
    let clerk = srv.token("clerk");
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(&json!({ "collection": "counter", "data": {
            "given_name": "Bartholomew", "family_name": "Quayle", "ssn": SSN } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let b = Browser::start();
    let sign_in = |user: &str| {
        b.goto(&format!("{}/ui/", srv.base));
        b.type_into("#username", user);
        b.type_into("#password", password_of(user).expose());
        b.submit("button[type=submit]");
        assert_eq!(b.title(), "Home · pivault", "{user} signed in");
    };
    let find = || {
        b.goto(&format!("{}/ui/find", srv.base));
        b.clear("#collection");
        b.type_into("#collection", "counter");
        b.type_into("#value", SSN);
        b.submit("main form[action='/ui/find'] button[type=submit]");
        b.source()
    };
    sign_in("officer");
    let page = find();
    assert!(page.contains("1 record(s) found"), "{page}");
    assert!(!page.contains(SSN), "a find never reveals");
    b.click("option[value=ssn]");
    b.type_into(
        "input[name=reason]",
        "customer asked us to confirm identity",
    );
    b.submit("form[action='/ui/reveal'] button[type=submit]");
    assert_eq!(b.text("dd.revealed"), SSN, "the SSN revealed in full");
    assert!(b.url().ends_with("/ui/reveal"), "{}", b.url());
    assert_eq!(b.title(), "Reveal a field · pivault");
    b.check(
        "reveal-officer",
        &["Bartholomew", "Quayle", SSN, "219099999"],
    );
    // The trail names the officer's reveal and the reason, never the value.
    let auditor = srv.token("auditor");
    let a = srv.call(
        "GET",
        "/v1/audit/events?action=record.reveal",
        Some(&auditor),
        None,
    );
    assert_eq!(a.status, 200, "{a:?}");
    let log = a.json();
    let events = log["items"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "customer asked us to confirm identity"),
        "{log}"
    );
    assert!(!a.text.contains(SSN) && !a.text.contains("219099999"));
    // A clerk without the reveal grant gets no reveal form.
    b.submit("nav button[type=submit]");
    sign_in("clerk");
    let page = find();
    assert!(page.contains("1 record(s) found"), "{page}");
    assert!(!page.contains("/ui/reveal"), "a clerk was offered a reveal");
}
