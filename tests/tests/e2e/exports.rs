//! Exports of records out of the vault (issue 15, REQ-WISP-05): a data
//! subject's records encrypted with age, opened with the real `age` tool
//! (Debian's `age` package, scripts/setup.sh) and nothing else; who may
//! export; the audit events (count and reason, never a value); plaintext
//! exports listed on later certificates as copies outside the vault, also
//! when an export races the subject's disposal.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::audit::{AuditEvent, EventFilter, Outcome};
use vault_core::certificate;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::vault::{
    DisposalParties, DisposalRequest, DisposalScope, ExportRecipient, ExportRequest, ExportScope,
    Session, Vault,
};

use crate::cli::{CUSTOMERS, CliVault, EXIT_DENIED, EXIT_INVALID_INPUT, examples};
use crate::common::{self, Fixture};

/// The fixture values of examples/customers.jsonl that an export carries.
const ADA: [&str; 5] = [
    "Lovelace",
    "078-05-1120",
    "078051120",
    "ada@example.com",
    "4111111111111111",
];

/// Runs `age` (the Debian package); the tests need the real tool.
fn age(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut c = Command::new("age");
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("the `age` tool is needed (Debian package `age`, see scripts/setup.sh)");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A new age identity file in `dir`; returns (file, recipient `age1…`).
fn age_keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen (Debian package `age`)");
    assert!(out.status.success(), "age-keygen failed: {out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .trim()
        .to_owned();
    (path, recipient)
}

fn export_events(vault: &Vault, s: &Session) -> Vec<AuditEvent> {
    vault
        .audit_events(
            s,
            &EventFilter {
                action_prefix: Some("records.export".into()),
                ..EventFilter::default()
            },
        )
        .unwrap()
}

/// Acceptance: a subject export decrypts with `age -d -i KEY` and the
/// recipient's key, not with another key; no fixture value is in the file;
/// the export is audited with count and reason, never a value.
#[test]
fn subject_export_opens_with_the_age_tool_and_the_recipient_key_only() {
    let v = CliVault::standard();
    v.import(&examples().join("customers.jsonl")).ok();
    let (key, recipient) = age_keygen(&v.secrets, "customer.key");
    let (other_key, _) = age_keygen(&v.secrets, "other.key");
    let out = v.input.join("export.age");
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "subject",
            "export",
            "C-1001",
            "--to",
            &recipient,
            "--reason",
            "customer access request",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.ok();
    let doc = r.json();
    assert_eq!(doc["records"], 1, "{doc}");
    assert_eq!(doc["encryption"], "age-x25519", "{doc}");
    let export_id = doc["export_id"].as_str().unwrap().to_owned();

    // No fixture value in the exported bytes.
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    for pi in ADA {
        assert!(
            !bytes.windows(pi.len()).any(|w| w == pi.as_bytes()),
            "the encrypted export contains {pi}"
        );
    }

    // The recipient's key opens it; another key does not.
    let dec = age(
        &["-d", "-i", key.to_str().unwrap(), out.to_str().unwrap()],
        None,
    );
    assert!(dec.status.success(), "age -d failed: {dec:?}");
    let text = String::from_utf8(dec.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "header and one record:\n{text}");
    assert_eq!(lines[0]["format"], "pivault-export/1");
    assert_eq!(lines[0]["export_id"], export_id.as_str());
    assert_eq!(lines[0]["scope"]["kind"], "subject");
    assert_eq!(lines[1]["fields"]["family_name"], "Lovelace");
    assert_eq!(lines[1]["fields"]["email"], "ada@example.com");
    let wrong = age(
        &[
            "-d",
            "-i",
            other_key.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(!wrong.status.success(), "another key opened the export");
    assert!(wrong.stdout.is_empty());

    // Audited with count and reason, and no value anywhere in the trail.
    let log = v.run(
        Some("auditor"),
        &["--json", "audit", "log", "--action", "records.export"],
    );
    log.ok();
    let events = log.json()["items"].as_array().unwrap().clone();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["records.export", "records.exported"],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["reason"], "customer access request");
        assert_eq!(e["outcome"], "success");
        let t: Vec<&str> = e["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            t.contains(&"count:1") && t.contains(&"encryption:age-x25519"),
            "{t:?}"
        );
        assert_eq!(t[0], export_id);
    }
    for pi in ADA {
        assert!(!log.stdout.contains(pi), "the audit trail holds {pi}");
    }
    v.assert_audit_ok();
}

/// A passphrase export opens with `age -d` and the passphrase typed at its
/// prompt (run under `script` for a terminal); the passphrase is read from
/// a file, never a flag.
#[test]
fn passphrase_export_opens_with_the_age_tool_and_the_passphrase() {
    let v = CliVault::standard();
    v.import(&examples().join("customers.jsonl")).ok();
    let pass_file = v.secrets.join("export-passphrase");
    crate::cli::write_private(&pass_file, b"correct horse battery staple\n");
    let out = v.input.join("export.age");
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "collection",
            "export",
            CUSTOMERS,
            "--export-passphrase-file",
            pass_file.to_str().unwrap(),
            "--reason",
            "migration to the new shop system",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["records"], 3);
    assert_eq!(r.json()["encryption"], "age-scrypt");
    let dec_path = v.input.join("decrypted.jsonl");
    let cmd = format!(
        "age -d -o {} {}",
        dec_path.to_str().unwrap(),
        out.to_str().unwrap()
    );
    // `age` reads a passphrase from the terminal only: `script` gives it one.
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(b"correct horse battery staple\n").unwrap();
    let status = child.wait_with_output().unwrap();
    assert!(status.status.success(), "age -d: {status:?}");
    let text = std::fs::read_to_string(&dec_path).unwrap();
    assert_eq!(text.lines().count(), 4, "header and three records:\n{text}");
    assert!(text.contains("Lovelace"));
    let bytes = std::fs::read(&out).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "));
    assert!(!bytes.windows(8).any(|w| w == b"Lovelace"));
}

/// A clerk's plaintext export is refused (and so is any export by a clerk,
/// a contractor or an auditor), leaving no file; an officer's is audited
/// with count and reason; a missing reason is refused.
#[test]
fn a_clerk_plaintext_export_is_refused_and_an_officer_one_is_audited() {
    let v = CliVault::standard();
    v.import(&examples().join("customers.jsonl")).ok();
    let out = v.input.join("plain.jsonl");
    for user in ["clerk", "auditor", "admin"] {
        let r = v.run(
            Some(user),
            &[
                "--json",
                "collection",
                "export",
                CUSTOMERS,
                "--plaintext",
                "--reason",
                "take it home",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        r.code(EXIT_DENIED);
        assert_eq!(r.error_code(), "permission_denied");
        assert!(!out.exists(), "a refused export left {}", out.display());
    }
    // An empty reason is refused before anything is read.
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "collection",
            "export",
            CUSTOMERS,
            "--plaintext",
            "--reason",
            " ",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(!out.exists());
    // A reason holding a number of 4+ digits (personal information) is refused.
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "subject",
            "export",
            "C-1001",
            "--plaintext",
            "--reason",
            "ssn 078051120",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "collection",
            "export",
            CUSTOMERS,
            "--plaintext",
            "--reason",
            "migration to the new shop system",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["records"], 3);
    assert_eq!(r.json()["encryption"], "plaintext");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("Lovelace"),
        "the plaintext export holds the records"
    );
    let log = v.run(
        Some("auditor"),
        &["--json", "audit", "log", "--action", "records.export"],
    );
    log.ok();
    let events = log.json()["items"].as_array().unwrap().clone();
    let ok: Vec<&Value> = events
        .iter()
        .filter(|e| e["outcome"] == "success")
        .collect();
    assert_eq!(ok.len(), 2, "{events:?}");
    for e in ok {
        assert_eq!(e["reason"], "migration to the new shop system");
        let t = e["targets"].to_string();
        assert!(
            t.contains("count:3") && t.contains("encryption:plaintext"),
            "{t}"
        );
    }
    // The refusals are in the trail too (access.denied), without values.
    let denied = v.run(
        Some("auditor"),
        &["--json", "audit", "log", "--action", "access.denied"],
    );
    denied.ok();
    assert!(
        denied.stdout.contains("ExportRecords"),
        "refused exports are audited: {}",
        denied.stdout
    );
    for pi in ADA {
        assert!(!log.stdout.contains(pi) && !denied.stdout.contains(pi));
    }
}

fn body(n: u64) -> Value {
    json!({
        "given_name": "Export",
        // Names are letters only: n in base 26, a letter a digit.
        "family_name": format!(
            "Racer{}",
            (0..4)
                .map(|i| (b'a' + (n / 26u64.pow(i) % 26) as u8) as char)
                .collect::<String>()
        ),
        "ssn": format!("{:03}-{:02}-{:04}", 120 + n % 400, 11 + n % 80, 1000 + n),
    })
}

fn store(fx: &Fixture, subject: SubjectId, from: u64, count: u64) -> Vec<RecordId> {
    (from..from + count)
        .map(|n| {
            fx.vault
                .put_record(&fx.clerk, CUSTOMERS, subject, &body(n))
                .unwrap()
        })
        .collect()
}

fn plaintext(scope: ExportScope, reason: &str) -> ExportRequest {
    ExportRequest {
        scope,
        recipient: ExportRecipient::Plaintext,
        reason: reason.into(),
        armor: false,
    }
}

fn dispose_subject(fx: &Fixture, subject: SubjectId) -> Value {
    let out = fx
        .vault
        .dispose(
            &fx.officer,
            &DisposalRequest {
                scope: DisposalScope::Subject(subject),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let cert = fx
        .vault
        .certificate(&fx.officer, out.certificate_id.unwrap())
        .unwrap();
    assert!(
        certificate::verify(&cert, &fx.vault.certificate_public_key()).ok(),
        "the certificate verifies"
    );
    cert.body
}

/// Record IDs of a plaintext export's lines.
fn exported_ids(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["record_id"].as_str().map(str::to_owned))
        .collect()
}

/// A plaintext export is listed on the certificate of a later disposal of
/// its records, with its count and encryption; an encrypted one too; a
/// disposal of records never exported lists none; a contractor cannot export.
#[test]
fn exports_are_listed_on_later_certificates_as_copies_outside_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let (a, b) = (SubjectId::new(), SubjectId::new());
    let a_ids = store(&fx, a, 0, 3);
    store(&fx, b, 10, 2);
    for s in [&fx.clerk, &fx.contractor, &fx.auditor, &fx.admin] {
        let mut sink = Vec::new();
        let e = fx
            .vault
            .export_records(s, &plaintext(ExportScope::Subject(a), "why not"), &mut sink)
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(sink.is_empty(), "a refused export wrote bytes");
    }
    let mut sink = Vec::new();
    let o = fx
        .vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(a), "records for the customer's lawyer"),
            &mut sink,
        )
        .unwrap();
    assert_eq!((o.records, o.subjects), (3, 1));
    let mut ids = exported_ids(&sink);
    ids.sort();
    let mut want: Vec<String> = a_ids.iter().map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(ids, want);
    let mut sink2 = Vec::new();
    let enc = fx
        .vault
        .export_records(
            &fx.officer,
            &ExportRequest {
                scope: ExportScope::Subject(a),
                recipient: ExportRecipient::Keys(vec![
                    "age13tgveg2z6wle99txvu9zd4qa4edng9kynlcgllteskw5pkdmyafspdj2nc".into(),
                ]),
                reason: "access request".into(),
                armor: true,
            },
            &mut sink2,
        )
        .unwrap();
    assert!(sink2.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----\n"));

    let body = dispose_subject(&fx, a);
    let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
    let find = |id: &str| {
        copies
            .iter()
            .find(|c| c["export_id"] == id)
            .unwrap_or_else(|| panic!("export {id} is not listed: {copies:?}"))
    };
    let p = find(&o.export_id);
    assert_eq!(p["encryption"], "plaintext");
    assert_eq!(p["records_of_this_batch"], 3);
    assert_eq!(p["state"], "delivered");
    assert_eq!(p["exported_by"], fx.officer.user().to_string());
    assert_eq!(find(&enc.export_id)["encryption"], "age-x25519");
    assert!(
        body["sanitization"]["not_covered"]
            .to_string()
            .contains("2 export(s) made before this disposal")
    );
    // Subject b was never exported: its certificate lists no copy.
    let body_b = dispose_subject(&fx, b);
    assert_eq!(body_b["target"]["copies_outside_vault"], json!([]));
    // After the disposal nothing of subject a can be exported.
    let e = fx
        .vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(a), "again"),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
}

/// A writer that breaks after `limit` bytes (a full disk, a closed pipe).
struct Breaks {
    written: Vec<u8>,
    limit: usize,
}

impl Write for Breaks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.len() + buf.len() > self.limit {
            return Err(std::io::Error::other("disk full"));
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An export that fails midway is audited with what it wrote (and the
/// record whose line the sink refused), and a later certificate still lists
/// the records it wrote.
#[test]
fn an_export_that_fails_midway_is_audited_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let s = SubjectId::new();
    store(&fx, s, 0, 6);
    let mut w = Breaks {
        written: Vec::new(),
        limit: 700,
    };
    let e = fx
        .vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(s), "backup copy"),
            &mut w,
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let wrote = exported_ids(&w.written).len();
    assert!(wrote > 0 && wrote < 6, "the sink broke midway ({wrote})");
    let events = export_events(&fx.vault, &fx.officer);
    let end = events.last().unwrap();
    assert_eq!(end.action, "records.exported");
    assert_eq!(end.outcome, Outcome::Failed);
    // And the record whose line the sink refused: part of it may be out.
    assert!(
        end.targets.contains(&format!("count:{}", wrote + 1)),
        "the end event counts the records written: {:?}",
        end.targets
    );
    let body = dispose_subject(&fx, s);
    let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0]["state"].as_str().unwrap().starts_with("failed"));
    assert!(copies[0]["records_of_this_batch"].as_u64().unwrap() >= wrote as u64);
}

/// Hostile timing: officers export a subject over and over while another
/// disposes of it. Every record an export wrote is covered by the
/// certificate's list of copies (under that export's ID); an export that
/// lost the race fails cleanly; every export is audited start and end.
#[test]
fn an_export_racing_the_subjects_disposal_never_hides_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Arc::new(common::fast_vault(&tmp.path().join("vault")));
    let seed = common::model_seed();
    eprintln!("seed {seed}");
    let mut rng = common::Rng(seed);
    for round in 0..4u64 {
        let s = SubjectId::new();
        store(&fx, s, round * 100, 30);
        let done = Arc::new(AtomicBool::new(false));
        let exporter = {
            let fx = fx.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let mut sink = Vec::new();
                    let r = fx.vault.export_records(
                        &fx.officer,
                        &plaintext(ExportScope::Subject(s), "racing export"),
                        &mut sink,
                    );
                    let gone = matches!(&r, Err(e) if e.code() == "not_found");
                    results.push((r.map(|o| o.export_id), exported_ids(&sink)));
                    if gone {
                        break;
                    }
                }
                results
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(rng.below(40)));
        let body = dispose_subject(&fx, s);
        done.store(true, Ordering::SeqCst);
        let results = exporter.join().unwrap();
        let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
        eprintln!(
            "round {round}: {} export(s) delivered, {} failed after writing records, {} listed",
            results.iter().filter(|(r, _)| r.is_ok()).count(),
            results
                .iter()
                .filter(|(r, ids)| r.is_err() && !ids.is_empty())
                .count(),
            copies.len()
        );
        for (r, ids) in &results {
            match r {
                Ok(id) => {
                    let c = copies
                        .iter()
                        .find(|c| c["export_id"] == id.as_str())
                        .unwrap_or_else(|| panic!("round {round}: export {id} not listed"));
                    assert_eq!(c["records_of_this_batch"], ids.len() as u64);
                }
                Err(e) => {
                    assert!(
                        ["disposed", "disposal_in_progress", "not_found"].contains(&e.code()),
                        "round {round}: unclean failure {e:?}"
                    );
                    if !ids.is_empty() {
                        // Written before the failure: listed by the failed export.
                        let n: u64 = copies
                            .iter()
                            .filter(|c| c["state"].as_str().unwrap().starts_with("failed"))
                            .map(|c| c["records_of_this_batch"].as_u64().unwrap())
                            .max()
                            .unwrap_or(0);
                        assert!(n >= ids.len() as u64, "round {round}: {copies:?}");
                    }
                }
            }
        }
        // Every export that started has its end event.
        let events = export_events(&fx.vault, &fx.officer);
        let starts = events
            .iter()
            .filter(|e| e.action == "records.export" && e.outcome == Outcome::Success)
            .count();
        let ends = events
            .iter()
            .filter(|e| e.action == "records.exported")
            .count();
        assert_eq!(starts, ends, "round {round}");
    }
}

/// A sink that, once the header and the first record are written, tells
/// the test and waits for its go-ahead (a slow disk, a slow network).
struct Pauses {
    written: Vec<u8>,
    paused: Option<std::sync::mpsc::Sender<()>>,
    go: std::sync::mpsc::Receiver<()>,
}

impl Write for Pauses {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        if self.written.iter().filter(|&&b| b == b'\n').count() >= 2
            && let Some(tx) = self.paused.take()
        {
            tx.send(()).unwrap();
            self.go.recv().unwrap();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deterministic interleaving: an export has written one record of a
/// subject when the subject is disposed of. The export then fails cleanly
/// at the next record, and the certificate lists it as a copy (it was in
/// progress when the certificate was issued) with every record it could
/// have written.
#[test]
fn an_export_paused_by_its_subjects_disposal_fails_and_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Arc::new(common::fast_vault(&tmp.path().join("vault")));
    let s = SubjectId::new();
    store(&fx, s, 0, 5);
    let (paused_tx, paused_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let exporter = {
        let fx = fx.clone();
        std::thread::spawn(move || {
            let mut sink = Pauses {
                written: Vec::new(),
                paused: Some(paused_tx),
                go: go_rx,
            };
            let r = fx.vault.export_records(
                &fx.officer,
                &plaintext(ExportScope::Subject(s), "slow export"),
                &mut sink,
            );
            (r, exported_ids(&sink.written))
        })
    };
    paused_rx.recv().unwrap();
    let body = dispose_subject(&fx, s);
    go_tx.send(()).unwrap();
    let (r, ids) = exporter.join().unwrap();
    assert_eq!(ids.len(), 1, "one record was written before the disposal");
    let e = r.unwrap_err();
    assert_eq!(e.code(), "disposed", "{e:?}");
    let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]["state"]
            .as_str()
            .unwrap()
            .starts_with("in progress"),
        "{copies:?}"
    );
    assert_eq!(copies[0]["records_of_this_batch"], 5);
    let events = export_events(&fx.vault, &fx.officer);
    let end = events.last().unwrap();
    assert_eq!(end.action, "records.exported");
    assert_eq!(end.outcome, Outcome::Failed);
    assert!(
        end.targets.contains(&"count:1".to_string()),
        "{:?}",
        end.targets
    );
}

/// Through `pivault-server`: an officer's export answers age ASCII armor
/// that `age -d` opens with the recipient's key; a clerk gets 403; the
/// certificate of the subject's disposal lists the export, its VC form
/// verifies offline and a record's inclusion proof comes over HTTP too.
#[test]
fn an_export_through_the_server_opens_with_the_age_tool() {
    let srv = crate::server::start(&["--logins-per-minute", "10000"]);
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let a = srv.call(
        "POST",
        "/v1/records",
        Some(&clerk),
        Some(&json!({ "collection": CUSTOMERS, "subject": "C-77",
                      "data": { "given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120" } })),
    );
    assert_eq!(a.status, 201, "{a:?}");
    let record = a.json()["record_id"].as_str().unwrap().to_owned();
    let keys = tempfile::tempdir().unwrap();
    let (key, recipient) = age_keygen(keys.path(), "k.txt");
    let req = json!({ "subject": "C-77", "to": [recipient], "reason": "customer access request" });
    let denied = srv.call("POST", "/v1/exports", Some(&clerk), Some(&req));
    assert_eq!(denied.status, 403, "{denied:?}");
    let a = srv.call("POST", "/v1/exports", Some(&officer), Some(&req));
    assert_eq!(a.status, 200, "{a:?}");
    let doc = a.json();
    assert_eq!(doc["records"], 1);
    let data = doc["data"].as_str().unwrap();
    assert!(data.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
    assert!(!data.contains("Lovelace") && !a.text.contains("078-05-1120"));
    let file = keys.path().join("export.age");
    std::fs::write(&file, data).unwrap();
    let dec = age(
        &["-d", "-i", key.to_str().unwrap(), file.to_str().unwrap()],
        None,
    );
    assert!(dec.status.success(), "age -d: {dec:?}");
    assert!(String::from_utf8_lossy(&dec.stdout).contains("\"family_name\":\"Lovelace\""));

    let d = srv.call(
        "POST",
        "/v1/disposals",
        Some(&officer),
        Some(&json!({ "scope": "subject", "subject": "C-77", "data_owner": "Example Retail LLC" })),
    );
    assert_eq!(d.status, 200, "{d:?}");
    let cert = d.json()["certificate_id"].as_str().unwrap().to_owned();
    let file = srv.call(
        "GET",
        &format!("/v1/certificates/{cert}/file"),
        Some(&officer),
        None,
    );
    let body: Value = serde_json::from_str(&file.text).unwrap();
    let copies = &body["certificate"]["target"]["copies_outside_vault"];
    assert_eq!(copies[0]["export_id"], doc["export_id"], "{copies}");
    let vc = srv.call(
        "GET",
        &format!("/v1/certificates/{cert}/vc"),
        Some(&officer),
        None,
    );
    assert_eq!(vc.status, 200, "{vc:?}");
    let vc_doc: Value = serde_json::from_str(&vc.text).unwrap();
    crate::documents::check_any(&vc_doc, "GET /v1/certificates/{id}/vc");
    let keys_doc = srv.call("GET", "/v1/keys", Some(&officer), None).json();
    let pem = keys_doc["certificate_key"].as_str().unwrap();
    let key = certificate::parse_public_key(pem).unwrap();
    let report = certificate::verify_credential(&vc.text, &key).unwrap();
    assert!(report.ok(), "{report:?}");
    let p = srv.call(
        "GET",
        &format!("/v1/certificates/{cert}/proof/{record}"),
        Some(&officer),
        None,
    );
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.json()["record_id"], record.as_str());
    let missing = srv.call(
        "GET",
        &format!("/v1/certificates/{cert}/proof/{}", RecordId::new()),
        Some(&officer),
        None,
    );
    assert_eq!(missing.status, 404, "{missing:?}");
}

/// An incident scoped to the officer who exported finds every exported
/// record, counted as an export (the export events carry the export's ID;
/// the records come from the ledger).
#[test]
fn an_incident_scope_counts_the_records_an_export_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let (a, b) = (SubjectId::new(), SubjectId::new());
    let a_ids = store(&fx, a, 0, 3);
    store(&fx, b, 10, 2);
    let since = vault_core::clock::Clock::now_ms(&*fx.clock);
    let mut sink = Vec::new();
    fx.vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(a), "a customer's access request"),
            &mut sink,
        )
        .unwrap();
    fx.clock.advance(1000);
    let until = vault_core::clock::Clock::now_ms(&*fx.clock) + 1;
    let sc = fx
        .vault
        .incident_scope(
            &fx.officer,
            &vault_core::vault::SelectorInput {
                actor: Some("officer".into()),
                token: None,
                source: None,
            },
            since,
            until,
        )
        .expect("scope");
    let mut touched: Vec<String> = sc.records.iter().map(|r| r.record.to_string()).collect();
    touched.sort();
    let mut want: Vec<String> = a_ids.iter().map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(touched, want, "the exported records, and only them");
    assert!(
        sc.records
            .iter()
            .all(|r| r.how.iter().any(|h| h == "export")),
        "each counted as an export"
    );
    assert_eq!(sc.subjects.len(), 1);
}

/// The affected-subject list of an incident is an encrypted export (issue
/// 15): every record of the subjects the incident's scope touched, and no
/// other, opened by the real `age` tool with the recipient's key; only an
/// officer (who holds `Incidents` and `ExportRecords`) may take it.
#[test]
fn an_incident_export_holds_the_affected_subjects_records_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let (a, b, c) = (SubjectId::new(), SubjectId::new(), SubjectId::new());
    let a_ids = store(&fx, a, 0, 2);
    let b_ids = store(&fx, b, 10, 1);
    store(&fx, c, 20, 1);
    // The window starts after the clerk stored the records.
    fx.clock.advance(1000);
    let since = vault_core::clock::Clock::now_ms(&*fx.clock);
    // The clerk reads a's first record and b's: a and b are affected.
    for id in [a_ids[0], b_ids[0]] {
        fx.vault.get_record(&fx.clerk, id, &[], None).unwrap();
    }
    fx.clock.advance(1000);
    let until = vault_core::clock::Clock::now_ms(&*fx.clock);
    let inc = fx
        .vault
        .open_incident(
            &fx.officer,
            &vault_core::vault::SelectorInput {
                actor: Some("clerk".into()),
                token: None,
                source: None,
            },
            since,
            until,
            "a clerk's laptop was stolen while signed in",
            false,
        )
        .expect("open incident");
    let id: vault_core::ids::IncidentId = inc.id.parse().unwrap();
    let (key, recipient) = age_keygen(tmp.path(), "notify.key");
    let req = |who: &str| ExportRequest {
        scope: ExportScope::Incident(id),
        recipient: ExportRecipient::Keys(vec![recipient.clone()]),
        reason: format!("notification letters ({who})"),
        armor: false,
    };
    for s in [&fx.clerk, &fx.admin, &fx.auditor, &fx.contractor] {
        let mut sink = Vec::new();
        let e = fx
            .vault
            .export_records(s, &req("refused"), &mut sink)
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
        assert!(sink.is_empty());
    }
    let mut sink = Vec::new();
    let o = fx
        .vault
        .export_records(&fx.officer, &req("officer"), &mut sink)
        .expect("incident export");
    assert_eq!((o.records, o.subjects), (3, 2));
    // Not readable as it stands; `age -d` with the key opens it.
    assert!(!String::from_utf8_lossy(&sink).contains("Export"));
    let enc = tmp.path().join("notify.age");
    std::fs::write(&enc, &sink).unwrap();
    let out = age(
        &["-d", "-i", key.to_str().unwrap(), enc.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "age -d: {out:?}");
    let mut ids = exported_ids(&out.stdout);
    ids.sort();
    let mut want: Vec<String> = a_ids.iter().chain(&b_ids).map(|r| r.to_string()).collect();
    want.sort();
    assert_eq!(ids, want, "the affected subjects' records, and only them");
    let events = export_events(&fx.vault, &fx.officer);
    assert!(
        events.iter().any(|e| e.outcome == Outcome::Success
            && e.targets.iter().any(|t| t == &format!("incident:{id}"))
            && e.targets.iter().any(|t| t == "count:3")),
        "audited with the incident and the count"
    );
}

/// A record whose line an export's sink cut midway (its fields may be in
/// the output already) is counted as exported: a later certificate lists
/// the failed export holding it. Before, a record was counted only once its
/// whole line was written, so an export cut inside its first record's line
/// was left off the certificate.
#[test]
fn a_record_cut_midway_by_the_sink_counts_as_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let s = SubjectId::new();
    store(&fx, s, 0, 1);
    // The whole export's length, and its header's, to cut inside the record.
    let mut whole = Breaks {
        written: Vec::new(),
        limit: usize::MAX,
    };
    fx.vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(s), "sizing"),
            &mut whole,
        )
        .unwrap();
    let header = whole.written.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut w = Breaks {
        written: Vec::new(),
        limit: header + (whole.written.len() - header) / 2,
    };
    fx.vault
        .export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(s), "backup copy"),
            &mut w,
        )
        .unwrap_err();
    let body = dispose_subject(&fx, s);
    let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
    let failed: Vec<&Value> = copies
        .iter()
        .filter(|c| c["state"].as_str().unwrap_or("").starts_with("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "the cut export is listed: {copies:?}");
    assert_eq!(failed[0]["records_of_this_batch"], 1, "{copies:?}");
}

/// An export whose first audit event cannot be written read nothing: its
/// ledger row says it failed with nothing written, and a later certificate
/// does not list it as "in progress" (before, the row stayed `started`, and
/// every later certificate counted its plan as a copy in progress).
#[test]
fn an_export_stopped_by_its_first_audit_event_is_no_copy_on_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let s = SubjectId::new();
    store(&fx, s, 0, 2);
    fx.vault.set_audit_failure(true);
    let mut out = Vec::new();
    let r = fx.vault.export_records(
        &fx.officer,
        &plaintext(ExportScope::Subject(s), "backup copy"),
        &mut out,
    );
    fx.vault.set_audit_failure(false);
    assert!(r.is_err(), "{r:?}");
    assert!(out.is_empty(), "nothing was written");
    let body = dispose_subject(&fx, s);
    assert_eq!(body["target"]["copies_outside_vault"], json!([]), "{body}");
}

/// A sink that fails the process (a panic) once the header is out.
struct Dies;

impl Write for Dies {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.starts_with(b"{\"format\"") || buf == b"\n" {
            return Ok(buf.len());
        }
        panic!("the export's process ends");
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An export cut short by its process's end stays `started` in the ledger;
/// the next open marks it `interrupted` (and audits that), and a later
/// certificate says it was interrupted, counting every planned record,
/// instead of "in progress when this certificate was issued" for ever.
#[test]
fn an_export_whose_process_ended_is_interrupted_not_in_progress_on_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = common::fast_vault(&tmp.path().join("vault"));
    let s = SubjectId::new();
    store(&fx, s, 0, 3);
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = fx.vault.export_records(
            &fx.officer,
            &plaintext(ExportScope::Subject(s), "backup copy"),
            &mut Dies,
        );
    }));
    assert!(died.is_err(), "the sink ended the export");
    let fx = fx.reopen_after_crash(|| {});
    let body = dispose_subject(&fx, s);
    let copies = body["target"]["copies_outside_vault"].as_array().unwrap();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0]["state"]
            .as_str()
            .unwrap()
            .starts_with("interrupted"),
        "{copies:?}"
    );
    assert_eq!(copies[0]["records_of_this_batch"], 3);
    let ended = export_events(&fx.vault, &fx.officer);
    assert!(
        ended.iter().any(|e| e.action == "records.exported"
            && e.outcome == Outcome::Failed
            && e.targets.iter().any(|t| t == "state:interrupted")),
        "{ended:?}"
    );
}
