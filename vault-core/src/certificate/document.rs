//! The certificate as the document a business files (issue 14): one summary
//! page a person reads and signs for (the verdict first; who, what, when,
//! how; the signatures and how to check them), then an appendix with the
//! per-record list and the storage details. The same [`Document`] is
//! rendered as HTML ([`super::render_html`]) and as PDF ([`super::render_pdf`]),
//! so both say the same thing.
//!
//! The verdict is computed here, by [`super::verify`], every time a document
//! is rendered: a changed byte in the certificate makes the page say that it
//! FAILED verification, never a clean-looking page. Page 1 names people by
//! name, title and organisation; their user IDs and the vault's ID are in the
//! appendix.

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::{Certificate, ROLE_VAULT, VerifyReport, at, verify};
use crate::crypto::fingerprint;

/// Which key the verdict on the document was checked against.
#[derive(Clone, Copy, Debug)]
pub enum Check<'a> {
    /// The issuing vault's own certificate key (the server, a local vault).
    Issuer(&'a VerifyingKey),
    /// A key the reader supplied (`certificate render --key`).
    Pinned(&'a VerifyingKey),
    /// The key the file itself carries in its vault signature: proves the
    /// file is intact, not who made it; the page says to compare the
    /// fingerprint with the one in the contract.
    Carried,
}

/// One piece of a document, rendered by the HTML and the PDF writers alike.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Block {
    /// A section heading.
    Heading(String),
    /// Label / value pairs.
    Rows(Vec<(String, String)>),
    /// Signed fields by dotted path (a wider label column).
    Fields(Vec<(String, String)>),
    /// A paragraph.
    Para(String),
    /// A command or value to copy exactly (monospace).
    Code(String),
    /// A table: column heads, relative column widths, rows; `mono` sets the
    /// cells in a monospace font (IDs).
    Table {
        head: Vec<String>,
        widths: Vec<f32>,
        rows: Vec<Vec<String>>,
        mono: bool,
    },
}

/// A certificate laid out for people: the verdict, the one-page summary and
/// the appendix.
#[derive(Clone, Debug)]
pub struct Document {
    /// `certificate_id` (or a placeholder), for titles and file names.
    pub(crate) id: String,
    /// Every signature and mandatory field checked out.
    pub(crate) verified: bool,
    /// The verdict's first line ("VERIFIED ..." or "FAILED VERIFICATION ...").
    pub(crate) verdict: String,
    /// The verdict's explanation, one item a line.
    pub(crate) verdict_lines: Vec<String>,
    /// Page 1.
    pub(crate) summary: Vec<Block>,
    /// Everything else, from page 2.
    pub(crate) appendix: Vec<Block>,
}

impl Document {
    /// Whether the certificate verified when the document was made.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The file name of the attached certificate: `certificate-<id>.json`,
    /// the ID reduced to letters, digits and hyphens.
    pub fn attachment_name(&self) -> String {
        let id: String = self
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(64)
            .collect();
        format!("certificate-{id}.json")
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.into()),
        _ => None,
    }
}

fn s(body: &Value, path: &str) -> Option<String> {
    text(at(body, path))
}

fn or_dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn list(v: Option<&Value>) -> Option<String> {
    let items: Vec<String> = v?
        .as_array()?
        .iter()
        .filter_map(|x| text(Some(x)))
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

fn count(v: Option<&Value>) -> usize {
    v.and_then(Value::as_array).map_or(0, Vec::len)
}

/// "Name, Title, Organisation" from a person object (either spelling of
/// organisation), never the user ID.
fn person(p: Option<&Value>) -> Option<String> {
    let p = p.filter(|p| p.is_object())?;
    let mut parts: Vec<String> = Vec::new();
    for k in ["name", "title", "organisation", "organization"] {
        if let Some(t) = text(p.get(k))
            && !parts.contains(&t)
        {
            parts.push(t);
        }
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn contractor(body: &Value) -> String {
    let Some(c) = at(body, "parties.contractor").filter(|c| c.is_object()) else {
        return "none named (the data owner's own staff)".into();
    };
    let mut out = or_dash(person(Some(c)));
    if let Some(r) = text(c.get("contract_reference")) {
        out.push_str(&format!("; contract {r}"));
    }
    if let Some(r) = text(c.get("certification")) {
        out.push_str(&format!("; certification: {r}"));
    }
    out
}

/// The method and technique in plain words.
fn how(body: &Value) -> String {
    let method = s(body, "sanitization.method").unwrap_or_default();
    let technique = s(body, "sanitization.technique").unwrap_or_default();
    if technique.eq_ignore_ascii_case("Cryptographic Erase") {
        let keys = count(at(body, "sanitization.details.keys_destroyed"));
        format!(
            "Cryptographic erase ({method}): each record's own encryption key was destroyed ({keys} \
             key(s)); the key store's affected keys were replaced, and the key store was flushed, \
             compacted and byte-scanned for the old key bytes. The encrypted records can no longer \
             be decrypted by anyone."
        )
    } else {
        format!("{method}: {technique}")
    }
}

fn verdict(cert: &Certificate, check: Check<'_>) -> (bool, String, Vec<String>) {
    let carried = cert
        .signature(ROLE_VAULT)
        .and_then(super::CertSignature::verifying_key);
    let key = match check {
        Check::Issuer(k) | Check::Pinned(k) => Some(*k),
        Check::Carried => carried,
    };
    let Some(key) = key else {
        return (
            false,
            "FAILED VERIFICATION - do not rely on this certificate".into(),
            vec!["The file carries no usable vault key.".into()],
        );
    };
    let r: VerifyReport = verify(cert, &key);
    let fp = fingerprint(key.as_bytes());
    let against = match check {
        Check::Issuer(_) => {
            format!("Checked by the issuing vault against its certificate key {fp}.")
        }
        Check::Pinned(_) => format!("Checked against the vault certificate key {fp} you supplied."),
        Check::Carried => format!(
            "Checked against the key the file carries, {fp}: compare this fingerprint with the one in your contract."
        ),
    };
    let mut lines = Vec::new();
    if !r.ok() {
        if !r.vault_signature_ok {
            lines.push("The vault signature does not verify: the certificate was changed after signing, or was not signed by this key.".into());
        }
        for note in &r.cosignature_notes {
            lines.push(format!("Co-signature {note}."));
        }
        if !r.missing_fields.is_empty() {
            lines.push(format!(
                "Missing or invalid fields: {}.",
                r.missing_fields.join(", ")
            ));
        }
        lines.push(against);
        return (
            false,
            "FAILED VERIFICATION - do not rely on this certificate".into(),
            lines,
        );
    }
    let headline = if r.status == "validated" {
        "VERIFIED - signatures valid; validated by a second person".to_owned()
    } else {
        "VERIFIED DRAFT - signatures valid; NOT YET VALIDATED by a second person".to_owned()
    };
    match (
        s(&cert.body, "outcome.state"),
        s(&cert.body, "outcome.complete_at"),
    ) {
        (Some(state), Some(until)) if state != "complete" => {
            lines.push(format!("Outcome: {state}; complete at {until}."));
        }
        _ => lines.push(
            "Outcome: complete - the personal information cannot practicably be read or reconstructed."
                .into(),
        ),
    }
    lines.push(against);
    (true, headline, lines)
}

/// Lays the certificate out as a [`Document`], verifying it with `check`.
pub fn document(cert: &Certificate, check: Check<'_>) -> Document {
    let b = &cert.body;
    let id = cert.id().unwrap_or("(no certificate ID)").to_owned();
    let (verified, verdict, verdict_lines) = verdict(cert, check);
    let mut summary = Vec::new();

    summary.push(Block::Heading("Who".into()));
    let data_owner = match (
        s(b, "parties.data_owner.name"),
        s(b, "parties.data_owner.address"),
    ) {
        (Some(n), Some(a)) => format!("{n}, {a}"),
        (n, _) => or_dash(n),
    };
    summary.push(Block::Rows(vec![
        ("Data owner".into(), data_owner),
        (
            "Performed by (operator)".into(),
            or_dash(person(at(b, "operator"))),
        ),
        (
            "Validated by".into(),
            person(at(b, "validator")).unwrap_or_else(|| "not yet validated (draft)".into()),
        ),
        ("Disposal contractor".into(), contractor(b)),
    ]));

    summary.push(Block::Heading("What".into()));
    let mut what = vec![
        (
            "Collections".into(),
            or_dash(list(at(b, "target.collections"))),
        ),
        (
            "Records destroyed".into(),
            or_dash(s(b, "target.record_count")),
        ),
        (
            "Data subjects".into(),
            or_dash(s(b, "target.subject_count")),
        ),
    ];
    for path in [
        "target.ma_resident_count",
        "target.classification.ma_residents",
    ] {
        if let Some(n) = s(b, path) {
            let basis = s(b, "target.ma_resident_basis")
                .and_then(|t| t.split_once("; ").map(|(_, rest)| format!(" ({rest})")))
                .unwrap_or_default();
            what.push(("Massachusetts residents".into(), format!("{n}{basis}")));
        }
    }
    let before = s(b, "target.classification.before").or_else(|| {
        at(b, "target.classification.ma_personal_information")
            .and_then(Value::as_bool)
            .map(|pi| {
                if pi {
                    "MA personal information (M.G.L. c. 93H section 1)".into()
                } else {
                    "confidential".into()
                }
            })
    });
    what.push(("Information destroyed".into(), or_dash(before)));
    what.push((
        "Personal-information types".into(),
        or_dash(
            list(at(b, "target.classification.elements"))
                .or_else(|| list(at(b, "target.classification.element_types"))),
        ),
    ));
    let excluded = count(at(b, "sanitization.exclusions"));
    if excluded > 0 {
        what.push((
            "Kept back".into(),
            format!("{excluded} record(s) excluded (e.g. a legal hold); listed in the appendix"),
        ));
    }
    let mut copies = Vec::new();
    let held: Vec<&Value> = at(b, "target.backups.copies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|c| c["holds_records"].as_bool() == Some(true))
                .collect()
        })
        .unwrap_or_default();
    if !held.is_empty() {
        copies.push(format!(
            "{} backup(s) hold encrypted copies until {} (crypto-erased at expiry)",
            held.len(),
            or_dash(s(b, "target.backups.expiry"))
        ));
    }
    let exports = count(at(b, "target.copies_outside_vault"));
    if exports > 0 {
        copies.push(format!(
            "{exports} export(s) made before the disposal hold copies outside the vault"
        ));
    }
    what.push((
        "Copies elsewhere".into(),
        if copies.is_empty() {
            "none known to the vault".into()
        } else {
            copies.join("; ")
        },
    ));
    summary.push(Block::Rows(what));

    summary.push(Block::Heading("When".into()));
    let mut when = vec![
        ("Disposal performed".into(), or_dash(s(b, "operator.time"))),
        ("Certificate issued".into(), or_dash(s(b, "issued_at"))),
        ("Validated".into(), or_dash(s(b, "validator.time"))),
    ];
    if let Some(t) = s(b, "outcome.complete_at") {
        when.push(("Complete (backups expire)".into(), t));
    }
    summary.push(Block::Rows(when));

    summary.push(Block::Heading("How".into()));
    let standard = match s(b, "sanitization.standards.method") {
        Some(m) => match s(b, "sanitization.standards.technique_vocabulary") {
            Some(t) => format!("{m}; {t}"),
            None => m,
        },
        None => "NIST SP 800-88 (Purge: Cryptographic Erase)".into(),
    };
    let mut how_rows = vec![("Method".into(), how(b)), ("Standards".into(), standard)];
    if let Some(scope) = s(b, "sanitization.standards.scope_statement") {
        how_rows.push(("Scope".into(), scope));
    }
    how_rows.push((
        "Verification".into(),
        format!(
            "{}: {}",
            or_dash(s(b, "sanitization.verification.result")),
            or_dash(s(b, "sanitization.verification.method"))
        ),
    ));
    summary.push(Block::Rows(how_rows));
    if let Some(stmt) = s(b, "outcome_statement") {
        summary.push(Block::Para(stmt));
    }

    summary.push(Block::Heading("Signatures".into()));
    let report_key = match check {
        Check::Issuer(k) | Check::Pinned(k) => Some(*k),
        Check::Carried => cert
            .signature(ROLE_VAULT)
            .and_then(super::CertSignature::verifying_key),
    };
    let report = report_key.map(|k| verify(cert, &k));
    let mut rows = Vec::new();
    for sig in &cert.signatures {
        let signer = match sig.role.as_str() {
            ROLE_VAULT => "the vault (pivault)".to_owned(),
            "contractor" => or_dash(person(at(b, "parties.contractor"))),
            role => or_dash(person(at(b, role))),
        };
        let ok = match (&report, sig.role.as_str()) {
            (Some(r), ROLE_VAULT) => r.vault_signature_ok,
            (Some(r), role) => r.cosignatures.iter().any(|c| c.0 == role && c.2),
            (None, _) => false,
        };
        let state = match (ok, sig.covers_draft) {
            (true, true) => "valid (made on the draft)",
            (true, false) => "valid",
            (false, _) => "INVALID",
        };
        rows.push(vec![
            sig.role.clone(),
            signer,
            sig.key_fingerprint.clone(),
            state.into(),
        ]);
    }
    if let Some(r) = &report {
        for (role, fp, _) in r
            .cosignatures
            .iter()
            .filter(|c| !cert.signatures.iter().any(|s| s.role == c.0))
        {
            rows.push(vec![
                role.clone(),
                or_dash(person(at(b, "parties.contractor"))),
                fp.clone(),
                "NOT SIGNED YET".into(),
            ]);
        }
    }
    summary.push(Block::Table {
        head: vec![
            "Role".into(),
            "Signer".into(),
            "Key fingerprint".into(),
            "Check".into(),
        ],
        widths: vec![0.14, 0.36, 0.36, 0.14],
        rows,
        mono: false,
    });

    let doc_name = format!("certificate-{id}");
    summary.push(Block::Heading("How to check this certificate".into()));
    summary.push(Block::Para(format!(
        "This page is a rendering, not the proof. The proof is the signed JSON file attached \
         inside the PDF form of this document ({doc_name}.json; also pivault certificate export). \
         Save it from your PDF reader or with pdfdetach, and check it offline with the vault's \
         certificate key, whose fingerprint must be {} (as in your contract):",
        or_dash(s(b, "vault.key_fingerprint"))
    )));
    summary.push(Block::Code(format!("pdfdetach -saveall {doc_name}.pdf")));
    summary.push(Block::Code(format!(
        "pivault certificate verify {doc_name}.json --key certificate.pem"
    )));

    Document {
        appendix: appendix(cert),
        id,
        verified,
        verdict,
        verdict_lines,
        summary,
    }
}

fn appendix(cert: &Certificate) -> Vec<Block> {
    let b = &cert.body;
    let mut out = vec![Block::Heading("Appendix A. Records destroyed".into())];
    let rows: Vec<Vec<String>> = at(b, "sanitization.details.keys_destroyed")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, k)| {
                    let versions = match k.get("key_versions").and_then(Value::as_array) {
                        Some(v) => v
                            .iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        None => or_dash(text(k.get("key_version"))),
                    };
                    vec![
                        (i + 1).to_string(),
                        or_dash(text(k.get("record_id"))),
                        versions,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push(Block::Table {
        head: vec![
            "#".into(),
            "Record ID".into(),
            "Key versions destroyed".into(),
        ],
        widths: vec![0.08, 0.52, 0.40],
        rows,
        mono: true,
    });
    let exclusions: Vec<Vec<String>> = at(b, "sanitization.exclusions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    vec![
                        or_dash(text(e.get("record_id"))),
                        or_dash(text(e.get("reason"))),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !exclusions.is_empty() {
        out.push(Block::Heading("Appendix B. Records kept back".into()));
        out.push(Block::Table {
            head: vec!["Record ID".into(), "Reason".into()],
            widths: vec![0.5, 0.5],
            rows: exclusions,
            mono: true,
        });
    }

    out.push(Block::Heading("Appendix C. Signature values".into()));
    for sig in &cert.signatures {
        out.push(Block::Rows(vec![
            (
                "Role".into(),
                if sig.covers_draft {
                    format!("{} (made on the draft, before validation)", sig.role)
                } else {
                    sig.role.clone()
                },
            ),
            ("Key fingerprint".into(), sig.key_fingerprint.clone()),
            ("Public key".into(), sig.public_key.clone()),
            ("Signature".into(), sig.signature.clone()),
        ]));
    }
    out.push(Block::Heading(
        "Appendix D. Checking without pivault".into(),
    ));
    out.push(Block::Para(format!(
        "Compute the RFC 8785 canonical JSON of the certificate member, prefix it with the 23 bytes \
         pivault-certificate-v1 and one zero byte, and save that as msg.bin (pivault certificate \
         payload does this); hex-decode the vault signature above into sig.bin; then run the \
         command below with the vault's key as PEM. Check every co-signature the same way. A \
         record's inclusion in the batch is proven by a Merkle path to target.commitment ({}).",
        super::MERKLE_ALGORITHM
    )));
    out.push(Block::Code(
        "openssl pkeyutl -verify -pubin -inkey certificate.pem -rawin -in msg.bin -sigfile sig.bin"
            .into(),
    ));

    out.push(Block::Heading(
        "Appendix E. Storage, purge and every other signed field".into(),
    ));
    let mut rows = Vec::new();
    flatten("", b, &mut rows);
    out.push(Block::Fields(rows));
    out
}

/// Every leaf of the body as (dotted path, value), except the lists the
/// appendix already shows as tables.
fn flatten(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    if path == "sanitization.details.keys_destroyed" || path == "sanitization.exclusions" {
        return;
    }
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                flatten(&child(k), x, out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().any(|x| x.is_object() || x.is_array()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), x, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let items: Vec<String> = a.iter().map(|x| or_dash(text(Some(x)))).collect();
            out.push((path.to_owned(), items.join("; ")));
        }
        other => out.push((
            path.to_owned(),
            text(Some(other)).unwrap_or_else(|| "none".into()),
        )),
    }
}

const DOC_CSS: &str = "\
.verdict{border:3px solid #000;padding:.5rem .8rem;margin:.6rem 0}.verdict p{margin:.2rem 0}\
.verdict.failed{border-color:#b00000;color:#b00000}.verdict .headline{font-size:1.15rem;font-weight:700}\
.appendix{break-before:page;page-break-before:always}table.list th{width:auto}\
pre{white-space:pre-wrap;word-break:break-all;margin:.2rem 0 .4rem;padding:.3rem .5rem;background:#f4f4f4}\
@media print{.summary{font-size:9.5pt}.summary h2{margin:.6rem 0 .3rem}}\n";

fn html_blocks(out: &mut String, blocks: &[Block]) {
    use super::esc;
    use std::fmt::Write as _;
    for block in blocks {
        match block {
            Block::Heading(t) => {
                let _ = writeln!(out, "<h2>{}</h2>", esc(t));
            }
            Block::Rows(rows) | Block::Fields(rows) => {
                out.push_str("<table>");
                for (k, v) in rows {
                    let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
                }
                out.push_str("</table>\n");
            }
            Block::Para(t) => {
                let _ = writeln!(out, "<p>{}</p>", esc(t));
            }
            Block::Code(t) => {
                let _ = writeln!(out, "<pre><code>{}</code></pre>", esc(t));
            }
            Block::Table {
                head, rows, mono, ..
            } => {
                out.push_str("<table class=\"list\"><tr>");
                for h in head {
                    let _ = write!(out, "<th>{}</th>", esc(h));
                }
                out.push_str("</tr>");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        if *mono {
                            let _ = write!(out, "<td class=\"mono\">{}</td>", esc(c));
                        } else {
                            let _ = write!(out, "<td>{}</td>", esc(c));
                        }
                    }
                    out.push_str("</tr>");
                }
                out.push_str("</table>\n");
            }
        }
    }
}

/// The document as a self-contained HTML page (inline style, no script, no
/// external resource, every value escaped): the summary, then the appendix
/// from a new printed page.
pub(crate) fn html(doc: &Document) -> String {
    use super::{CSS, esc};
    use std::fmt::Write as _;
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Certificate of Destruction {}</title>\n<style>\n{CSS}{DOC_CSS}</style>\n</head>\n<body>\n\
         <section class=\"summary\">\n<h1>Certificate of Destruction</h1>\n\
         <p class=\"sub\">Personal information destroyed by cryptographic erase (M.G.L. c. 93I &sect;2). \
         Certificate <code>{}</code></p>\n",
        esc(&doc.id),
        esc(&doc.id)
    );
    let _ = write!(
        out,
        "<div class=\"verdict{}\" role=\"{}\"><p class=\"headline\">{}</p>",
        if doc.verified { "" } else { " failed" },
        if doc.verified { "status" } else { "alert" },
        esc(&doc.verdict)
    );
    for l in &doc.verdict_lines {
        let _ = write!(out, "<p>{}</p>", esc(l));
    }
    out.push_str("</div>\n");
    html_blocks(&mut out, &doc.summary);
    out.push_str("</section>\n<section class=\"appendix\">\n");
    html_blocks(&mut out, &doc.appendix);
    out.push_str("</section>\n</body>\n</html>\n");
    out
}
