//! Disposal, certificates, retention, holds and contractors: the commands
//! of certified destruction. Glue only: every step runs in vault-core.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use vault_core::Vault;
use vault_core::certificate::{self, Certificate};
use vault_core::ed25519_dalek as ed25519_key;
use vault_core::ids::{CertificateId, CollectionName, DisposalId, RecordId};
use vault_core::vault::{
    ContractorScope, DisposalOutcome, DisposalParties, DisposalRequest, DisposalScope,
    RetentionPolicy, Session,
};

use crate::output::{self, Out};
use crate::{
    CertFormat, CertificateCmd, ContractorCmd, DisposalCmd, DisposeCmd, DisposeOpts, HoldCmd,
    RetentionCmd, exit, parse_time,
};

/// Asks the person at a terminal before an irreversible disposal, showing
/// what it would destroy (a dry run's counts: records, subjects,
/// Massachusetts residents, held records left out), and returns the plan
/// the disposal must match. What was shown is what is destroyed, or nothing
/// (`preview_stale`, exit 13), even when a clerk adds a record in scope
/// while the question waits. `--yes` skips the question (scripts pin what
/// they destroy with `--plan`); without a terminal and without `--yes`
/// nothing is destroyed.
pub(crate) fn confirm(
    opts: &DisposeOpts,
    what: &str,
    preview: impl FnOnce() -> anyhow::Result<Value>,
) -> anyhow::Result<Option<String>> {
    if opts.yes || opts.dry_run {
        return Ok(opts.plan.clone());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!("disposal is irreversible: pass --yes to confirm (no terminal to ask)");
    }
    let p = preview()?;
    let count = |k: &str| p[k].as_u64().unwrap_or(0);
    // Left out: held, or in another batch that disposes of it.
    let held = p["excluded"].as_array().map_or(0, Vec::len);
    let residents = match p["ma_residents"].as_u64() {
        Some(n) => format!("{n} of them Massachusetts resident(s)"),
        None => "Massachusetts residents counted by the disposal".to_owned(),
    };
    output::stderr_prompt(&format!(
        "Destroy {what}: {} record(s) of {} subject(s), {residents}; {held} record(s) left out (held, or in an unfinished batch).\n\
         This cannot be undone. Type 'yes' to continue: ",
        count("records"),
        count("subjects"),
    ));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        bail!("not confirmed; nothing was disposed");
    }
    Ok(opts
        .plan
        .clone()
        .or_else(|| p["plan"].as_str().map(str::to_owned)))
}

fn request(scope: DisposalScope, opts: &DisposeOpts) -> DisposalRequest {
    DisposalRequest {
        scope,
        dry_run: opts.dry_run,
        parties: DisposalParties {
            data_owner: opts.data_owner.clone(),
            data_owner_address: opts.data_owner_address.clone(),
            operator_title: opts.title.clone(),
            operator_organisation: None,
            contractor_organisation: opts.contractor_org.clone(),
            contract_reference: opts.contract_ref.clone(),
            contractor_certification: opts.contractor_cert.clone(),
        },
    }
}

fn outcome_json(o: &DisposalOutcome, dry_run: bool) -> Value {
    vault_core::views::outcome(o, dry_run)
}

fn run_disposal(
    out: &Out,
    vault: &Vault,
    s: &Session,
    scope: DisposalScope,
    opts: &DisposeOpts,
    what: &str,
) -> anyhow::Result<u8> {
    let req = request(scope, opts);
    let plan = confirm(opts, what, || {
        let dry = DisposalRequest {
            dry_run: true,
            ..req.clone()
        };
        Ok(outcome_json(&vault.dispose(s, &dry)?, true))
    })?;
    let started_ms = jiff::Timestamp::now().as_millisecond();
    let o = match &plan {
        Some(plan) => vault.dispose_as_previewed(s, &req, plan),
        None => vault.dispose(s, &req),
    }
    .map_err(|e| match e {
        e if opts.dry_run || is_refusal(e.code()) => anyhow::Error::from(e),
        e => with_resume_hint(vault, s, started_ms, e),
    })?;
    let v = outcome_json(&o, opts.dry_run);
    out.data("disposal-outcome", v.clone(), || output::outcome_text(&v));
    Ok(exit::OK)
}

/// Errors that refuse a disposal before its batch is recorded: nothing was
/// started, so there is nothing to resume.
pub(crate) fn is_refusal(code: &str) -> bool {
    matches!(
        code,
        "invalid_input"
            | "auth_failed"
            | "account_locked"
            | "account_disabled"
            | "session_invalid"
            | "permission_denied"
            | "not_found"
            | "disposed"
            | "legal_hold"
            | "no_officer"
            | "disposal_in_progress"
            | "preview_stale"
            | "rotation_blocked"
            | "rate_limited"
            | "too_large"
    )
}

/// A disposal that failed after its batch may have been recorded: the
/// batch is not lost (it resumes on the next open, or is retried), and the
/// person at the terminal must be told so and where its certificate will
/// be. Names the batch when this run's can be found.
fn with_resume_hint(
    vault: &Vault,
    s: &Session,
    started_ms: i64,
    e: vault_core::Error,
) -> anyhow::Error {
    // The vault is ours alone (one process holds it), so an unfinished
    // batch created since this command started is this command's.
    let batch = vault.disposals(s).ok().and_then(|list| {
        list.into_iter()
            .rev()
            .find(|d| d.created_ms >= started_ms && d.step != "complete")
    });
    let mut fields = serde_json::Map::new();
    let advice = match batch {
        Some(d) => {
            fields.insert("disposal_id".into(), json!(d.id.to_string()));
            fields.insert("certificate_id".into(), json!(d.certificate_id.to_string()));
            fields.insert("step".into(), json!(d.step));
            let next = if d.failed.is_some() {
                format!(
                    "disposal {} is recorded as failed at step {} (no certificate issued); once the cause is fixed, finish it with `pivault disposal retry {}`",
                    d.id, d.step, d.id
                )
            } else {
                format!(
                    "disposal {} stopped at step {}; it resumes the next time the vault is opened (any pivault command), or run `pivault disposal retry {}`",
                    d.id, d.step, d.id
                )
            };
            format!(
                "{next}. `pivault disposal list` shows its state; its certificate, once issued, is `pivault certificate show {}`",
                d.certificate_id
            )
        }
        None => GENERIC_RESUME_ADVICE.into(),
    };
    anyhow::Error::from(e).context(output::Hint {
        message: None,
        advice,
        fields,
    })
}

/// What to do after a disposal failed when its batch cannot be named.
pub(crate) const GENERIC_RESUME_ADVICE: &str = "if the disposal batch had started, it is not lost: an interrupted batch resumes the next time the vault is opened, a failed one with `pivault disposal retry ID`. `pivault disposal list` shows every batch with its state and certificate ID; `pivault certificate show CERT` shows a certificate once issued";

/// The record IDs of a `dispose from` file ('-' for stdin): one a line;
/// blank lines and `#` comments skipped. Errors name the line, not its text.
pub(crate) fn record_ids_from(file: &Path) -> anyhow::Result<Vec<RecordId>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| {
            l.parse().map_err(|_| {
                vault_core::Error::InvalidInput(format!("line {}: not a record ID", i + 1))
            })
        })
        .collect::<Result<_, _>>()?)
}

pub fn cmd_dispose(out: &Out, vault: &Vault, s: &Session, c: &DisposeCmd) -> anyhow::Result<u8> {
    match c {
        DisposeCmd::Record { id, opts } => {
            let id: RecordId = id.parse()?;
            run_disposal(
                out,
                vault,
                s,
                DisposalScope::Record(id),
                opts,
                &format!("record {id}"),
            )
        }
        DisposeCmd::Subject { subject, opts } => {
            let sub = vault.resolve_subject(subject)?;
            run_disposal(
                out,
                vault,
                s,
                DisposalScope::Subject(sub),
                opts,
                &format!("every record of subject {sub}"),
            )
        }
        DisposeCmd::Query {
            collection,
            before,
            by_updated,
            opts,
        } => {
            let scope = DisposalScope::Query {
                collection: collection
                    .as_deref()
                    .map(CollectionName::parse)
                    .transpose()?,
                before_ms: parse_time(before)?,
                by_updated: *by_updated,
            };
            run_disposal(out, vault, s, scope, opts, "every matching record")
        }
        DisposeCmd::From { file, opts } => {
            let ids = record_ids_from(file)?;
            let what = format!("{} listed record(s)", ids.len());
            run_disposal(out, vault, s, DisposalScope::Records(ids), opts, &what)
        }
    }
}

pub fn cmd_disposal(out: &Out, vault: &Vault, s: &Session, c: &DisposalCmd) -> anyhow::Result<u8> {
    match c {
        DisposalCmd::List => {
            let list = vault.disposals(s)?;
            let v = Value::Array(list.iter().map(vault_core::views::disposal).collect());
            out.data("disposal-list", v.clone(), || output::disposals_text(&v));
            Ok(exit::OK)
        }
        DisposalCmd::Retry { id } => {
            let id: DisposalId = id.parse()?;
            let cert = vault.retry_disposal(s, id)?;
            out.data(
                "disposal-retry",
                json!({ "disposal_id": id.to_string(), "certificate_id": cert.to_string() }),
                || format!("disposal {id} completed; certificate {cert}"),
            );
            Ok(exit::OK)
        }
    }
}

/// Writes a file, or stdout (whose failure [`Out`] reports at exit).
pub(crate) fn write_out(out: &Out, path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display())),
        None => {
            out.raw(text.as_bytes());
            Ok(())
        }
    }
}

/// Writes a `certificate-proof` document to a file, or prints it
/// (`--json` or not: the proof is only useful as JSON).
pub(crate) fn write_proof(out: &Out, dest: Option<&Path>, v: &Value) -> anyhow::Result<()> {
    let doc = vault_core::views::document("certificate-proof", v.clone());
    let text = serde_json::to_string_pretty(&doc)?;
    match dest {
        Some(_) => write_out(out, dest, &format!("{text}\n")),
        None => {
            out.data("certificate-proof", v.clone(), || text);
            Ok(())
        }
    }
}

fn read_cert(file: &Path) -> anyhow::Result<Certificate> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(Certificate::parse(&text)?)
}

/// Offline verification: no vault, only the certificate and the public key.
/// Reads a record proof file (`certificate prove`).
fn read_proof(file: &Path) -> anyhow::Result<certificate::RecordProof> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| vault_core::Error::InvalidInput("the proof file is not JSON".into()))?;
    Ok(certificate::RecordProof::from_json(&v)?)
}

pub fn cmd_verify(
    out: &Out,
    file: &Path,
    key: &Path,
    record: Option<(&str, &Path)>,
) -> anyhow::Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key = certificate::parse_public_key(&key_text)?;
    // The VC form (certificate export --format vc): its eddsa-jcs-2022
    // proof, then the certificate it carries, as a certificate file.
    let credential = match serde_json::from_str::<Value>(&text) {
        Ok(v) if certificate::is_credential(&v) => {
            let c = certificate::verify_credential(&text, &key)?;
            let inner = json!({ "certificate": v["credentialSubject"]["certificate"],
                                "signatures": v["credentialSubject"]["signatures"] });
            Some((c, inner.to_string()))
        }
        _ => None,
    };
    let cert = match &credential {
        Some((_, inner)) => Certificate::parse(inner)?,
        None => Certificate::parse(&text)?,
    };
    let r = certificate::verify(&cert, &key);
    // The record's inclusion counts only under a valid signature.
    let included = match record {
        Some((id, proof)) => {
            let id: RecordId = id.parse()?;
            let proof = read_proof(proof)?;
            Some((
                id,
                certificate::verify_record_proof(&cert.body, id.as_bytes(), &proof),
            ))
        }
        None => None,
    };
    let ok = r.ok()
        && included.is_none_or(|(_, inc)| inc)
        && credential
            .as_ref()
            .is_none_or(|(c, _)| c.proof_ok && c.key_matches);
    let cos: Vec<Value> = r
        .cosignatures
        .iter()
        .map(|(role, fp, ok)| json!({ "role": role, "key_fingerprint": fp, "ok": ok }))
        .collect();
    let mut doc = json!({ "ok": ok, "certificate_id": cert.id(), "status": r.status, "vault_signature_ok": r.vault_signature_ok,
                "cosignatures": cos, "cosignature_notes": r.cosignature_notes, "legacy": r.legacy,
                "fields_ok": r.fields_ok, "missing_fields": r.missing_fields });
    if let Some((id, inc)) = included {
        doc["record"] = json!({ "record_id": id.to_string(), "included": inc });
    }
    if let Some((c, _)) = &credential {
        doc["credential"] = json!({ "cryptosuite": certificate::VC_CRYPTOSUITE,
                                    "proof_ok": c.proof_ok, "key_matches": c.key_matches });
    }
    out.data("certificate-verification", doc,
        || {
            let record_line = match included {
                Some((id, true)) => format!("\n  record {id} is in the batch (inclusion proof OK)"),
                Some((id, false)) => format!("\n  record {id}: inclusion proof FAILS (not in this batch, or a proof for another certificate)"),
                None => String::new(),
            };
            let record_line = match &credential {
                Some((c, _)) => format!(
                    "\n  verifiable credential: {} proof {}{}",
                    certificate::VC_CRYPTOSUITE,
                    if c.proof_ok { "OK" } else { "BAD" },
                    if c.key_matches { "" } else { " (not by this vault's key)" }
                ) + &record_line,
                None => record_line,
            };
            let mut notes: String = r
                .cosignature_notes
                .iter()
                .map(|n| format!("\n  co-signature {n}"))
                .collect();
            if r.legacy {
                notes.push_str("\n  legacy certificate (pivault-certificate/1): co-signatures are not bound to registered keys");
            }
            let verdict = if r.ok() {
                format!(
                    "certificate {} VALID ({}): vault signature OK{}",
                    cert.id().unwrap_or("?"),
                    r.status,
                    r.cosignatures
                        .iter()
                        .map(|(role, fp, ok)| format!(", {role} co-signature {fp} {}", if *ok { "OK" } else { "BAD" }))
                        .collect::<String>()
                )
            } else {
                format!(
                    "certificate INVALID: vault signature {}, co-signatures {}, missing fields {:?}",
                    if r.vault_signature_ok { "ok" } else { "BAD" },
                    if r.cosignatures.iter().all(|c| c.2) { "ok" } else { "BAD" },
                    r.missing_fields
                )
            };
            verdict + &notes + &record_line
        },
    );
    Ok(if ok { exit::OK } else { exit::INTEGRITY })
}

pub fn cmd_payload(out: &Out, file: &Path, msg_out: &Path, sig_out: &Path) -> anyhow::Result<u8> {
    let cert = read_cert(file)?;
    let msg = certificate::signed_message(&cert.body)?;
    let sig =
        cert.signatures
            .iter()
            .find(|s| s.role == "vault")
            .ok_or(vault_core::Error::Integrity(
                "certificate (no vault signature)",
            ))?;
    let sig = hex::decode(&sig.signature)
        .map_err(|_| vault_core::Error::Integrity("certificate signature"))?;
    std::fs::write(msg_out, &msg)?;
    std::fs::write(sig_out, &sig)?;
    out.data("certificate-payload", json!({ "message": msg_out.display().to_string(), "signature": sig_out.display().to_string() }), || {
        format!(
            "wrote {} and {}; verify with:\n  openssl pkeyutl -verify -pubin -inkey certificate.pem -rawin -in {} -sigfile {}",
            msg_out.display(),
            sig_out.display(),
            msg_out.display(),
            sig_out.display()
        )
    });
    Ok(exit::OK)
}

/// The most a payload file may hold (a certificate's message is a few KiB).
const MAX_PAYLOAD_BYTES: u64 = 4 << 20;

/// `certificate sign-payload`: the contractor's co-signature made on their
/// own machine. Says on stderr which certificate it signs; the signature
/// (hex) is the only thing on stdout, or in `--out`.
pub fn cmd_sign_payload(
    out: &Out,
    file: &Path,
    key_file: &Path,
    dest: Option<&Path>,
) -> anyhow::Result<u8> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if len > MAX_PAYLOAD_BYTES {
        bail!(vault_core::Error::InvalidInput(
            "not a pivault certificate payload (too large)".into()
        ));
    }
    let payload = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let key = vault_core::cosign::load(key_file)?;
    let (sig, body) = vault_core::cosign::sign_payload(&payload, &key)?;
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    output::stderr_line(&format!(
        "signed certificate {} ({}, {} record(s), data owner {}) with the key {}",
        text(&body["certificate_id"]),
        text(&body["status"]),
        body["target"]["record_count"].as_u64().unwrap_or(0),
        text(&body["parties"]["data_owner"]["name"]),
        vault_core::crypto::fingerprint(key.verifying_key().as_bytes())
    ));
    write_out(out, dest, &format!("{}\n", hex::encode(sig)))?;
    Ok(exit::OK)
}

pub fn cmd_render_file(
    out: &Out,
    file: &Path,
    dest: Option<&Path>,
    pdf: bool,
    key: Option<&Path>,
) -> anyhow::Result<u8> {
    let cert = read_cert(file)?;
    let key = match key {
        Some(k) => {
            let text = std::fs::read_to_string(k)
                .with_context(|| format!("cannot read {}", k.display()))?;
            Some(certificate::parse_public_key(&text)?)
        }
        None => None,
    };
    let check = match &key {
        Some(k) => certificate::Check::Pinned(k),
        None => certificate::Check::Carried,
    };
    write_rendering(out, dest, &cert, check, pdf)
}

/// Writes the certificate document (HTML, or PDF with the file attached) to
/// `dest` or stdout; with `dest`, prints a `certificate-html` or
/// `certificate-pdf` document naming the file and the verification verdict.
pub(crate) fn write_rendering(
    out: &Out,
    dest: Option<&Path>,
    cert: &Certificate,
    check: certificate::Check<'_>,
    pdf: bool,
) -> anyhow::Result<u8> {
    if !pdf {
        write_out(out, dest, &certificate::render_html(cert, check))?;
        if let Some(d) = dest {
            out.data(
                "certificate-html",
                json!({ "html": d.display().to_string() }),
                || format!("wrote {}", d.display()),
            );
        }
        return Ok(exit::OK);
    }
    let verified = certificate::document(cert, check).verified();
    let bytes = certificate::render_pdf(cert, check);
    match dest {
        Some(d) => {
            std::fs::write(d, &bytes).with_context(|| format!("cannot write {}", d.display()))?;
            out.data(
                "certificate-pdf",
                json!({ "pdf": d.display().to_string(), "bytes": bytes.len(), "verified": verified }),
                || {
                    format!(
                        "wrote {} ({} bytes; the certificate {})",
                        d.display(),
                        bytes.len(),
                        if verified { "verified" } else { "FAILED verification: the PDF says so" }
                    )
                },
            );
        }
        None => out.raw(&bytes),
    }
    Ok(exit::OK)
}

pub fn cmd_keygen(out: &Out, path: &Path) -> anyhow::Result<u8> {
    let pem = vault_core::cosign::generate(path)?;
    let pub_path = path.with_extension("pub.pem");
    std::fs::write(&pub_path, &pem)?;
    out.data("cosign-keypair", json!({ "private_key": path.display().to_string(), "public_key": pub_path.display().to_string() }), || {
        format!(
            "private key in {} (keep it; mode 0600), public key in {} (give it to the vault admin)",
            path.display(),
            pub_path.display()
        )
    });
    Ok(exit::OK)
}

pub fn cmd_keys_export(out: &Out, vault: &Vault, dir: &Path) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir)?;
    let cert = dir.join("certificate.pem");
    let audit = dir.join("audit.pem");
    std::fs::write(
        &cert,
        certificate::public_key_pem(&vault.certificate_public_key()),
    )?;
    std::fs::write(
        &audit,
        certificate::public_key_pem(&vault.audit_public_key()),
    )?;
    let fp = |k: ed25519_key::VerifyingKey| vault_core::crypto::fingerprint(k.as_bytes());
    out.data("keys-export", 
        json!({ "certificate_key": cert.display().to_string(), "certificate_fingerprint": fp(vault.certificate_public_key()),
                "audit_key": audit.display().to_string(), "audit_fingerprint": fp(vault.audit_public_key()) }),
        || {
            format!(
                "certificate key: {} ({})\naudit key:       {} ({})",
                cert.display(),
                fp(vault.certificate_public_key()),
                audit.display(),
                fp(vault.audit_public_key())
            )
        },
    );
    Ok(exit::OK)
}

pub fn cmd_certificate(
    out: &Out,
    vault: &Vault,
    s: &Session,
    c: &CertificateCmd,
) -> anyhow::Result<u8> {
    match c {
        CertificateCmd::List { draft } => {
            let v = vault_core::views::certificates(&vault.list_certificates(s, *draft)?);
            out.data("certificate-list", v.clone(), || {
                output::certificates_text(&v)
            });
        }
        CertificateCmd::Show { id } => {
            let cert = vault.certificate(s, id.parse()?)?;
            let v = vault_core::views::certificate(&cert);
            out.data("certificate", v.clone(), || {
                serde_json::to_string_pretty(&v).unwrap_or_default()
            });
        }
        CertificateCmd::Export {
            id,
            out: dest,
            format,
        } => {
            let text = match format {
                CertFormat::Json => vault.certificate(s, id.parse()?)?.to_file_json(),
                CertFormat::Vc => {
                    let vc = vault.certificate_credential(s, id.parse()?)?;
                    format!("{}\n", serde_json::to_string_pretty(&vc)?)
                }
            };
            write_out(out, dest.as_deref(), &text)?;
        }
        CertificateCmd::Render {
            cert,
            out: dest,
            pdf,
            key: _,
        } => {
            let id: CertificateId = cert.parse()?;
            let cert = vault.certificate(s, id)?;
            let key = vault.certificate_public_key();
            write_rendering(
                out,
                dest.as_deref(),
                &cert,
                certificate::Check::Issuer(&key),
                *pdf,
            )?;
        }
        CertificateCmd::Prove {
            id,
            record,
            out: dest,
        } => {
            let p = vault.certificate_proof(s, id.parse()?, record.parse()?)?;
            write_proof(out, dest.as_deref(), &p.to_json())?;
        }
        CertificateCmd::Validate { id, title } => {
            let id: CertificateId = id.parse()?;
            vault.validate_certificate(s, id, title.as_deref())?;
            out.data(
                "certificate-change",
                json!({ "certificate_id": id.to_string(), "status": "validated" }),
                || format!("certificate {id} validated"),
            );
        }
        CertificateCmd::Cosign { id, key_file } => {
            let id: CertificateId = id.parse()?;
            let key = vault_core::cosign::load(key_file)?;
            let cert = vault.certificate(s, id)?;
            let sig = vault_core::cosign::sign(&cert, &key)?;
            vault.cosign_certificate(s, id, &sig)?;
            out.data(
                "certificate-change",
                json!({ "certificate_id": id.to_string(), "cosigned": true }),
                || format!("certificate {id} co-signed"),
            );
        }
        CertificateCmd::Verify { .. }
        | CertificateCmd::Payload { .. }
        | CertificateCmd::SignPayload { .. } => {
            unreachable!("handled without a vault")
        }
    }
    Ok(exit::OK)
}

pub fn cmd_retention(
    out: &Out,
    vault: &Vault,
    s: &Session,
    c: &RetentionCmd,
) -> anyhow::Result<u8> {
    match c {
        RetentionCmd::Set {
            collection,
            days,
            from_updated,
        } => {
            vault.set_retention(
                s,
                collection,
                RetentionPolicy {
                    days: *days,
                    from_updated: *from_updated,
                },
            )?;
            out.data(
                "retention-policy",
                json!({ "collection": collection, "days": days, "from_updated": from_updated }),
                || {
                    format!(
                        "{collection}: keep {days} days from {}",
                        if *from_updated {
                            "last update"
                        } else {
                            "creation"
                        }
                    )
                },
            );
        }
        RetentionCmd::Show => {
            let p = vault.retention(s)?;
            let rows: Vec<Value> = p
                .iter()
                .map(|(c, p)| vault_core::views::retention(c, p))
                .collect();
            let text = rows
                .iter()
                .map(output::retention_line)
                .collect::<Vec<_>>()
                .join("\n");
            out.data("retention-list", Value::Array(rows), || text);
        }
        RetentionCmd::Schedule { every_hours, off } => {
            if *off || every_hours.is_some() {
                vault.set_retention_schedule(s, *every_hours)?;
            }
            let v = vault_core::views::retention_schedule(vault.retention_schedule(s)?.as_ref());
            out.data("retention-schedule", v.clone(), || {
                output::retention_schedule_text(&v)
            });
        }
        RetentionCmd::Due => {
            let o = vault.retention_due(s)?;
            let v = outcome_json(&o, true);
            out.data("disposal-outcome", v.clone(), || output::outcome_text(&v));
        }
        RetentionCmd::Run { opts } => {
            return run_disposal(
                out,
                vault,
                s,
                DisposalScope::PastRetention,
                opts,
                "every record past retention",
            );
        }
    }
    Ok(exit::OK)
}

pub fn cmd_hold(out: &Out, vault: &Vault, s: &Session, c: &HoldCmd) -> anyhow::Result<u8> {
    let target = |record: &Option<String>, subject: &Option<String>| -> anyhow::Result<_> {
        Ok((
            record.as_deref().map(str::parse::<RecordId>).transpose()?,
            subject
                .as_deref()
                .map(|t| vault.resolve_subject(t))
                .transpose()?,
        ))
    };
    match c {
        HoldCmd::Add {
            record,
            subject,
            reason,
        } => {
            let (r, sub) = target(record, subject)?;
            vault.add_hold(s, r, sub, reason)?;
            out.data("hold-change", json!({ "held": true }), || {
                "legal hold placed".into()
            });
        }
        HoldCmd::Remove { record, subject } => {
            let (r, sub) = target(record, subject)?;
            vault.remove_hold(s, r, sub)?;
            out.data("hold-change", json!({ "held": false }), || {
                "legal hold lifted".into()
            });
        }
        HoldCmd::List => {
            let hs = vault.holds(s)?;
            let v = Value::Array(hs.iter().map(vault_core::views::hold).collect());
            out.data("hold-list", v.clone(), || output::holds_text(&v));
        }
    }
    Ok(exit::OK)
}

pub fn cmd_contractor(
    out: &Out,
    vault: &Vault,
    s: &Session,
    c: &ContractorCmd,
) -> anyhow::Result<u8> {
    match c {
        ContractorCmd::Assign {
            name,
            collection,
            record,
            public_key,
        } => {
            let public_key = match public_key {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    Some(hex::encode(
                        certificate::parse_public_key(&text)?.as_bytes(),
                    ))
                }
                None => None,
            };
            let id = vault.assign_contractor(
                s,
                name,
                ContractorScope {
                    collections: collection.clone(),
                    records: record.clone(),
                    public_key,
                },
            )?;
            out.data("contractor-assignment", json!({ "user_id": id.to_string(), "collections": collection, "records": record.len() }), || {
                format!("{name} may dispose in {} collection(s) and {} listed record(s)", collection.len(), record.len())
            });
        }
        ContractorCmd::List => {
            let v = vault_core::views::contractors(&vault.list_contractors(s)?);
            out.data("contractor-list", v.clone(), || {
                output::contractors_text(&v)
            });
        }
        ContractorCmd::Revoke { name } => {
            let id = vault.revoke_contractor(s, name)?;
            out.data("contractor-revocation", json!({ "user_id": id.to_string(), "revoked": name }), || {
                format!("{name} may no longer list or dispose of anything; their key co-signs nothing new")
            });
        }
        ContractorCmd::Keygen { .. } => unreachable!("handled without a vault"),
    }
    Ok(exit::OK)
}
