//! The certificate as the document a contractor hands over (issue 14): the
//! PDF made by the real server (`GET /v1/certificates/{id}/pdf`, over HTTPS)
//! and by the real CLI (`pivault certificate render --pdf`), opened with
//! poppler (`pdfinfo`, `pdftotext`, `pdfdetach`, an independent PDF
//! library), its attached certificate extracted and verified with the real
//! `pivault certificate verify`; a changed byte, a tampered file and a
//! disposal racing the downloads.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::cli::{CUSTOMERS, CliVault, examples};
use crate::server::Server;

const EXIT_INTEGRITY: i32 = 8;
/// Personal information of the fixture customers: never on the page.
const PI: [&str; 6] = [
    "Zelda",
    "Quartermaine",
    "078-05-1120",
    "4111111111111111",
    "Lovelace",
    "Hopper",
];

/// Runs a poppler tool; panics with its output when it fails.
fn poppler(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (apt-get install poppler-utils): {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A PDF that poppler had to repair is not a correct PDF.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Syntax Error") && !err.contains("Syntax Warning"),
        "{tool} {args:?} complained: {err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What poppler finds in a PDF: the page count, the text of page 1, the
/// text of the rest, the attached files' names and the extracted certificate.
struct Opened {
    pages: usize,
    page1: String,
    rest: String,
    attached: Vec<String>,
    json: PathBuf,
}

fn open_pdf(pdf: &Path, work: &Path) -> Opened {
    let info = poppler("pdfinfo", &[pdf.to_str().unwrap()]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("PDF version:") && l.trim_end().ends_with(" 1.7")),
        "{info}"
    );
    let pages: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("page count");
    let page1 = poppler(
        "pdftotext",
        &["-f", "1", "-l", "1", pdf.to_str().unwrap(), "-"],
    );
    let rest = if pages > 1 {
        poppler("pdftotext", &["-f", "2", pdf.to_str().unwrap(), "-"])
    } else {
        String::new()
    };
    let list = poppler("pdfdetach", &["-list", pdf.to_str().unwrap()]);
    let attached: Vec<String> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": ").map(|(_, n)| n.to_owned()))
        .collect();
    assert!(
        list.starts_with(&format!("{} embedded files", attached.len())),
        "{list}"
    );
    let dir = work.join(format!(
        "detached-{}",
        pdf.file_stem().unwrap().to_str().unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    poppler(
        "pdfdetach",
        &[
            "-saveall",
            "-o",
            dir.to_str().unwrap(),
            pdf.to_str().unwrap(),
        ],
    );
    let json = dir.join(attached.first().expect("an attached file"));
    assert!(json.is_file(), "pdfdetach wrote no {}", json.display());
    Opened {
        pages,
        page1,
        rest,
        attached,
        json,
    }
}

/// `pivault certificate verify FILE --key KEY`, offline (no vault).
fn verify(v: &CliVault, file: &Path, key: &Path) -> crate::cli::Run {
    v.run(
        None,
        &[
            "--json",
            "certificate",
            "verify",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
}

/// Changes one byte of a value in the file (a letter of the data owner).
fn changed_byte(file: &Path, out: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"Example")
        .expect("the data owner's name in the file");
    bytes[at + 1] ^= 0x01;
    std::fs::write(out, bytes).unwrap();
}

fn assert_summary_page(page1: &str, records: &str) {
    for needle in [
        "Certificate of Destruction",
        "VERIFIED",
        "Who",
        "Example Retail LLC",
        "Shred Right Inc.",
        "PO-77",
        "Records destroyed",
        records,
        "Data subjects",
        "Cryptographic erase",
        "PASS",
        "How to check this certificate",
        "pdfdetach -saveall",
        "pivault certificate verify certificate-",
        "--key certificate.pem",
    ] {
        assert!(page1.contains(needle), "page 1 lacks {needle:?}:\n{page1}");
    }
    assert!(!page1.contains("FAILED"), "{page1}");
    // Page 1 precedes the per-record list.
    assert!(!page1.contains("Appendix A"), "{page1}");
}

fn assert_no_personal_information(what: &str, text: &str) {
    for pi in PI {
        assert!(!text.contains(pi), "{what} holds {pi:?}");
    }
}

/// A CLI vault with the example customers and `n` more records of one
/// subject (Zelda Quartermaine), disposed of in one batch by a contractor's
/// organisation; returns the vault, the certificate ID and the key file.
fn disposed(n: usize) -> (CliVault, String, PathBuf) {
    let v = CliVault::standard();
    v.import(&examples().join("customers.jsonl")).ok();
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&format!(
            "{{\"subject\": \"C-2000\", \"given_name\": \"Zelda\", \"family_name\": \"Quartermaine\", \"ssn\": \"078-05-1120\", \"email\": \"z{i}@example.com\"}}\n"
        ));
    }
    v.import(&v.input_file("more.jsonl", &lines)).ok();
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "subject",
            "C-2000",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--contractor-org",
            "Shred Right Inc.",
            "--contract-ref",
            "PO-77",
        ],
    );
    r.ok();
    let id = r.json()["certificate_id"].as_str().unwrap().to_owned();
    let keys = v.input.join("keys");
    v.run(
        Some("officer"),
        &["keys", "export", "--out", keys.to_str().unwrap()],
    )
    .ok();
    (v, id, keys.join("certificate.pem"))
}

/// Acceptance (issue 14): a 199-record disposal in a real vault; the PDF
/// rendered by the real CLI, from the vault and offline from the exported
/// file, opens in poppler; page 1 is the summary (verdict, counts, how to
/// verify) without personal information; the attached certificate comes
/// out byte-identical to the export and verifies; a changed byte in it does
/// not.
#[test]
fn the_cli_renders_a_pdf_whose_attached_certificate_verifies() {
    let (v, id, key) = disposed(199);
    let work = v.input.clone();
    let exported = work.join("cert.json");
    v.run(
        Some("auditor"),
        &[
            "certificate",
            "export",
            &id,
            "--out",
            exported.to_str().unwrap(),
        ],
    )
    .ok();

    // From the vault (checked by the vault's own key).
    let from_vault = work.join("from-vault.pdf");
    let r = v.run(
        Some("auditor"),
        &[
            "--json",
            "certificate",
            "render",
            &id,
            "--pdf",
            "--out",
            from_vault.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["document"], "certificate-pdf");
    assert_eq!(r.json()["verified"], true);
    // Offline from the file, against the pinned key; and to stdout.
    let offline = work.join("offline.pdf");
    let r = v.run(
        None,
        &[
            "--json",
            "certificate",
            "render",
            exported.to_str().unwrap(),
            "--pdf",
            "--key",
            key.to_str().unwrap(),
            "--out",
            offline.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["verified"], true);
    let mut c = v.command(&["certificate", "render", exported.to_str().unwrap(), "--pdf"]);
    let stdout = c.output().unwrap();
    assert!(stdout.status.success());
    assert!(stdout.stdout.starts_with(b"%PDF-1.7") && stdout.stdout.ends_with(b"%%EOF\n"));

    for pdf in [&from_vault, &offline] {
        let o = open_pdf(pdf, &work);
        assert_eq!(o.attached, vec![format!("certificate-{id}.json")]);
        assert_summary_page(&o.page1, "199");
        assert!(o.pages >= 4, "199 records fit no fewer pages: {}", o.pages);
        // Every record is listed in the appendix, none on page 1.
        let cert: Value = serde_json::from_slice(&std::fs::read(&o.json).unwrap()).unwrap();
        let records = cert["certificate"]["sanitization"]["details"]["keys_destroyed"]
            .as_array()
            .unwrap();
        assert_eq!(records.len(), 199);
        // People by name on page 1; their user IDs only in the appendix.
        let uid = cert["certificate"]["operator"]["user_id"].as_str().unwrap();
        assert!(!o.page1.contains(uid) && o.rest.contains(uid), "{uid}");
        for r in records {
            let rid = r["record_id"].as_str().unwrap();
            assert!(!o.page1.contains(rid));
            assert!(o.rest.contains(rid), "appendix lacks {rid}");
        }
        // The attached file is the certificate, byte for byte.
        assert_eq!(
            std::fs::read(&o.json).unwrap(),
            std::fs::read(&exported).unwrap()
        );
        verify(&v, &o.json, &key).ok();
        let changed = work.join("changed.json");
        changed_byte(&o.json, &changed);
        let r = verify(&v, &changed, &key);
        r.code(EXIT_INTEGRITY);
        assert_eq!(r.json()["ok"], false);
        assert_no_personal_information("the PDF text", &format!("{}{}", o.page1, o.rest));
        assert_no_personal_information(
            "the PDF file",
            &String::from_utf8_lossy(&std::fs::read(pdf).unwrap()),
        );
    }
}

/// Hostile: a certificate file with a changed byte given to `render --pdf`
/// renders a document that says FAILED VERIFICATION on page 1 and on every
/// page, never a clean-looking one; so does a genuine file checked against
/// another vault's key. A file that no longer parses is refused with a
/// clear error and no PDF.
#[test]
fn a_tampered_certificate_renders_as_failed_or_is_refused() {
    let (v, id, key) = disposed(2);
    let work = v.input.clone();
    let exported = work.join("cert.json");
    v.run(
        Some("officer"),
        &[
            "certificate",
            "export",
            &id,
            "--out",
            exported.to_str().unwrap(),
        ],
    )
    .ok();
    let tampered = work.join("tampered.json");
    changed_byte(&exported, &tampered);
    let other = CliVault::standard();
    let other_keys = other.input.join("keys");
    other
        .run(
            Some("officer"),
            &["keys", "export", "--out", other_keys.to_str().unwrap()],
        )
        .ok();
    let other_key = other_keys.join("certificate.pem");
    let cases: [(&str, &Path, Option<&Path>); 3] = [
        ("tampered-carried", &tampered, None),
        ("tampered-pinned", &tampered, Some(&key)),
        ("foreign-key", &exported, Some(&other_key)),
    ];
    for (name, file, key) in cases {
        let pdf = work.join(format!("{name}.pdf"));
        let mut args = vec![
            "--json",
            "certificate",
            "render",
            file.to_str().unwrap(),
            "--pdf",
            "--out",
            pdf.to_str().unwrap(),
        ];
        if let Some(k) = key {
            args.extend(["--key", k.to_str().unwrap()]);
        }
        let r = v.run(None, &args);
        r.ok();
        assert_eq!(r.json()["verified"], false, "{name}");
        let o = open_pdf(&pdf, &work);
        assert!(
            o.page1
                .contains("FAILED VERIFICATION - do not rely on this certificate"),
            "{name}: {}",
            o.page1
        );
        assert!(!o.page1.contains("VERIFIED -"), "{name}: {}", o.page1);
        let footers = format!("{}{}", o.page1, o.rest)
            .matches("FAILED VERIFICATION: do not rely on this certificate")
            .count();
        assert_eq!(footers, o.pages, "{name}: a FAILED footer on every page");
        // The HTML page says the same.
        let mut html_args = vec!["certificate", "render", file.to_str().unwrap()];
        if let Some(k) = key {
            html_args.extend(["--key", k.to_str().unwrap()]);
        }
        let html = v.run(None, &html_args);
        html.ok();
        assert!(html.stdout.contains("FAILED VERIFICATION"), "{name}");
    }
    // Broken JSON: a clear error, exit 3, no file written.
    let broken = work.join("broken.json");
    let text = std::fs::read_to_string(&exported).unwrap();
    std::fs::write(&broken, text.replacen('{', "[", 1)).unwrap();
    let pdf = work.join("broken.pdf");
    let r = v.run(
        None,
        &[
            "certificate",
            "render",
            broken.to_str().unwrap(),
            "--pdf",
            "--out",
            pdf.to_str().unwrap(),
        ],
    );
    r.code(crate::cli::EXIT_INVALID_INPUT);
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
    assert!(!pdf.exists());
}

fn put(srv: &Server, clerk: &str, given: &str) -> String {
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(clerk),
        Some(&json!({ "collection": CUSTOMERS, "subject": "C-3000",
                      "data": { "given_name": given, "family_name": "Quartermaine",
                                "ssn": "078-05-1120", "card_number": "4111111111111111" } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    a.json()["record_id"].as_str().expect("id").to_owned()
}

fn server_key(srv: &Server, dir: &Path) -> PathBuf {
    let keys = srv.call("GET", "/v1/keys", None, None).json();
    let path = dir.join("server-certificate.pem");
    std::fs::write(&path, keys["certificate_key"].as_str().unwrap()).unwrap();
    path
}

/// Acceptance, the contractor journey over HTTPS: the contractor disposes
/// of records in its scope, downloads the PDF (`application/pdf`, an
/// attachment), opens it: page 1 the summary, the certificate attached and
/// verified offline with the vault's published key. The route answers
/// every role as the certificate file does; no token, no PDF.
#[test]
fn the_contractor_downloads_the_pdf_from_the_server_and_verifies_it() {
    let srv = crate::server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let (admin, clerk, contractor) = (
        srv.token("admin"),
        srv.token("clerk"),
        srv.token("contractor"),
    );
    let ids: Vec<String> = ["Zelda", "Zelda", "Zelda"]
        .iter()
        .map(|g| put(&srv, &clerk, g))
        .collect();
    assert_eq!(
        srv.call(
            "PUT",
            "/v1/contractors/contractor",
            Some(&admin),
            Some(&json!({ "collections": [CUSTOMERS] }))
        )
        .status,
        200
    );
    let d = srv.call(
        "POST",
        "/v1/disposals",
        Some(&contractor),
        Some(
            &json!({ "scope": "records", "records": ids, "data_owner": "Example Retail LLC",
                      "contractor_org": "Shred Right Inc.", "contract_ref": "PO-77" }),
        ),
    );
    assert_eq!(d.status, 200, "{d:?}");
    let cert_id = d.json()["certificate_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/certificates/{cert_id}/pdf");

    let (status, ct, cd, body) = srv.get_bytes(&path, Some(&contractor));
    assert_eq!(status, 200);
    assert_eq!(ct, "application/pdf");
    assert_eq!(
        cd,
        format!("attachment; filename=\"certificate-{cert_id}.pdf\"")
    );
    let pdf = work.path().join(format!("certificate-{cert_id}.pdf"));
    std::fs::write(&pdf, &body).unwrap();
    let o = open_pdf(&pdf, work.path());
    assert_summary_page(&o.page1, "3");
    assert!(
        o.page1.contains("Checked by the issuing vault"),
        "{}",
        o.page1
    );
    assert_no_personal_information("the PDF text", &format!("{}{}", o.page1, o.rest));
    assert_no_personal_information("the PDF file", &String::from_utf8_lossy(&body));
    let file = srv.get_bytes(
        &format!("/v1/certificates/{cert_id}/file"),
        Some(&contractor),
    );
    assert_eq!(std::fs::read(&o.json).unwrap(), file.3);
    let key = server_key(&srv, work.path());
    let cli = CliVault::empty();
    verify(&cli, &o.json, &key).ok();
    let changed = work.path().join("changed.json");
    changed_byte(&o.json, &changed);
    verify(&cli, &changed, &key).code(EXIT_INTEGRITY);

    // Same permission as the certificate file, for every role.
    for role in ["admin", "officer", "clerk", "auditor", "contractor"] {
        let t = srv.token(role);
        let (pdf_status, ..) = srv.get_bytes(&path, Some(&t));
        let (file_status, ..) =
            srv.get_bytes(&format!("/v1/certificates/{cert_id}/file"), Some(&t));
        assert_eq!(pdf_status, file_status, "{role}");
    }
    assert_eq!(srv.get_bytes(&path, None).0, 401);
    // The web page's download: the same bytes for the signed-in visitor
    // (the session cookie), the sign-in page for anyone else.
    let cookie = format!("__Host-pivault={contractor}");
    let (status, ct, cd, web) = srv.get_bytes_with(
        &format!("/ui/certificates/{cert_id}/pdf"),
        &[("Cookie", &cookie)],
    );
    assert_eq!((status, ct.as_str()), (200, "application/pdf"));
    assert!(cd.starts_with("attachment;"), "{cd}");
    assert_eq!(web, body, "the web download is the API's PDF");
    let (status, ..) = srv.get_bytes_with(&format!("/ui/certificates/{cert_id}/pdf"), &[]);
    assert_eq!(status, 303);
    let unknown = format!("/v1/certificates/{}/pdf", uuid::Uuid::now_v7());
    assert_eq!(srv.get_bytes(&unknown, Some(&admin)).0, 404);
    assert_eq!(
        srv.get_bytes("/v1/certificates/not-an-id/pdf", Some(&admin))
            .0,
        400
    );
}

/// Concurrency: four clients download certificate PDFs over HTTPS while
/// disposals run; every answer is a whole PDF whose attached certificate
/// verifies (or a clean problem answer), including the PDFs of
/// certificates issued moments before.
#[test]
fn pdf_downloads_racing_disposals_are_all_valid() {
    let srv = Arc::new(crate::server::start(&[]));
    let work = Arc::new(tempfile::tempdir().unwrap());
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let records: Vec<String> = (0..8u8)
        .map(|i| put(&srv, &clerk, &format!("Zelda {}", char::from(b'A' + i))))
        .collect();
    let first = srv.call(
        "POST",
        "/v1/disposals",
        Some(&officer),
        Some(
            &json!({ "scope": "record", "record": records[0], "data_owner": "Example Retail LLC" }),
        ),
    );
    assert_eq!(first.status, 200, "{first:?}");
    let certs = Arc::new(Mutex::new(vec![
        first.json()["certificate_id"].as_str().unwrap().to_owned(),
    ]));
    let key = server_key(&srv, work.path());
    let done = Arc::new(AtomicBool::new(false));
    let fetched = Arc::new(Mutex::new(0usize));

    let readers: Vec<_> = (0..4)
        .map(|t| {
            let (srv, certs, done, work, fetched) = (
                srv.clone(),
                certs.clone(),
                done.clone(),
                work.clone(),
                fetched.clone(),
            );
            let token = srv.token(if t % 2 == 0 { "auditor" } else { "officer" });
            std::thread::spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) || n < 2 {
                    let id = {
                        let c = certs.lock().unwrap();
                        c[n % c.len()].clone()
                    };
                    let (status, ct, _, body) =
                        srv.get_bytes(&format!("/v1/certificates/{id}/pdf"), Some(&token));
                    n += 1;
                    if status != 200 {
                        assert!(
                            status == 503 && ct.starts_with("application/problem+json"),
                            "reader {t}: {status} {ct} {}",
                            String::from_utf8_lossy(&body)
                        );
                        continue;
                    }
                    assert!(body.starts_with(b"%PDF-1.7") && body.ends_with(b"%%EOF\n"));
                    let dir = work.path().join(format!("r{t}-{n}"));
                    std::fs::create_dir_all(&dir).unwrap();
                    let pdf = dir.join(format!("certificate-{id}.pdf"));
                    std::fs::write(&pdf, &body).unwrap();
                    let o = open_pdf(&pdf, &dir);
                    assert!(o.page1.contains("VERIFIED"), "reader {t}: {}", o.page1);
                    let cert = vault_core::certificate::Certificate::parse(
                        &std::fs::read_to_string(&o.json).unwrap(),
                    )
                    .expect("the attached certificate parses");
                    assert_eq!(cert.id(), Some(id.as_str()));
                    *fetched.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for r in &records[1..] {
        let d = srv.call(
            "POST",
            "/v1/disposals",
            Some(&officer),
            Some(&json!({ "scope": "record", "record": r, "data_owner": "Example Retail LLC" })),
        );
        assert_eq!(d.status, 200, "{d:?}");
        certs
            .lock()
            .unwrap()
            .push(d.json()["certificate_id"].as_str().unwrap().to_owned());
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().expect("a reader failed");
    }
    assert!(*fetched.lock().unwrap() >= 8);
    // Every certificate's PDF, fetched after the race, verifies offline.
    let cli = CliVault::empty();
    for id in certs.lock().unwrap().iter() {
        let (status, _, _, body) =
            srv.get_bytes(&format!("/v1/certificates/{id}/pdf"), Some(&officer));
        assert_eq!(status, 200);
        let pdf = work.path().join(format!("after-{id}.pdf"));
        std::fs::write(&pdf, &body).unwrap();
        let o = open_pdf(&pdf, work.path());
        verify(&cli, &o.json, &key).ok();
    }
}
