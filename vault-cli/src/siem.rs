//! `audit export`, `audit verify --file` and `audit stream`: the audit
//! trail in the business's log system (issue 12; the formats and the
//! offline check are `vault_core::siem`).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};
use vault_core::Vault;
use vault_core::siem::{self, Format};
use vault_core::vault::{ExportStart, Session};

use crate::exit;
use crate::output::Out;
use crate::remote::{Remote, url_part};

/// Writes the export file (0600: the trail holds no personal information,
/// but who did what when is still the business's own).
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn report(out: &Out, path: &Path, v: Value) {
    let doc = json!({
        "file": path.display().to_string(),
        "format": v["format"], "from_seq": v["from_seq"], "to_seq": v["to_seq"],
        "events": v["events"], "checkpoint_seq": v["checkpoint_seq"],
    });
    out.data("audit-export-file", doc.clone(), || {
        format!(
            "exported events {} to {} ({} events, {}) to {}, closed by the checkpoint signed at seq {}\n\
             verify it with: pivault audit verify --file {} --key audit.pem",
            doc["from_seq"], doc["to_seq"], doc["events"], doc["format"].as_str().unwrap_or(""),
            path.display(), doc["checkpoint_seq"], path.display()
        )
    });
}

/// `audit export` on a vault opened here.
pub fn export_local(
    out: &Out,
    vault: &Vault,
    s: &Session,
    start: ExportStart,
    format: &str,
    path: &Path,
) -> anyhow::Result<u8> {
    let format = Format::parse(format)?;
    let b = vault.audit_export(s, start)?;
    write_file(path, &b.render(format, &siem::default_hostname()))?;
    report(
        out,
        path,
        json!({
            "format": format.as_str(), "from_seq": b.from_seq(), "to_seq": b.to_seq(),
            "events": b.events.len(), "checkpoint_seq": b.checkpoints.last().map_or(0, |c| c.seq),
        }),
    );
    Ok(exit::OK)
}

/// `audit export` through the server (`GET /v1/audit/export`).
pub fn export_remote(
    out: &Out,
    r: &Remote,
    since: Option<&str>,
    from_seq: Option<u64>,
    format: &str,
    path: &Path,
) -> anyhow::Result<u8> {
    let format = Format::parse(format)?;
    let mut q = format!("?format={}", format.as_str());
    if let Some(s) = since {
        q.push_str(&format!("&since={}", url_part(s)));
    }
    if let Some(n) = from_seq {
        q.push_str(&format!("&from_seq={n}"));
    }
    let v = r.get(&format!("/v1/audit/export{q}"))?;
    write_file(path, v["text"].as_str().unwrap_or_default())?;
    report(out, path, v);
    Ok(exit::OK)
}

/// `audit verify --file F --key audit.pem`: offline, no vault, no login.
pub fn verify_file(out: &Out, file: &Path, key: &Path) -> anyhow::Result<u8> {
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key = vault_core::certificate::parse_public_key(&key_text)?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let r = match String::from_utf8(bytes) {
        Ok(text) => siem::verify_file(&text, &key),
        Err(_) => siem::FileReport {
            problem: Some("the file is not UTF-8 text (a byte was changed)".into()),
            ..siem::FileReport::default()
        },
    };
    let v = json!({
        "file": file.display().to_string(), "ok": r.ok(), "events": r.events, "from_seq": r.from_seq,
        "to_seq": r.to_seq, "checkpoints": r.checkpoints, "last_checkpoint_seq": r.last_checkpoint_seq,
        "first_bad_seq": r.first_bad_seq, "problem": r.problem, "proves": r.proves(),
    });
    out.data("audit-file-verify", v, || match &r.problem {
        None => format!("ok: {}", r.proves()),
        Some(p) => format!(
            "FAILED{}: {p}",
            r.first_bad_seq
                .map(|s| format!(" at seq {s}"))
                .unwrap_or_default()
        ),
    });
    Ok(if r.ok() { exit::OK } else { exit::INTEGRITY })
}

/// `audit stream`: the server's syslog stream (`GET /v1/audit/stream`).
pub fn stream_remote(out: &Out, r: &Remote) -> anyhow::Result<u8> {
    let v = r.get("/v1/audit/stream")?;
    out.data("audit-stream", v.clone(), || stream_text(&v));
    Ok(if v["configured"] == true && v["state"] != "up" {
        exit::UNSAFE_CONFIG
    } else {
        exit::OK
    })
}

/// `audit stream` without a server: nothing streams.
pub fn stream_local(out: &Out) -> anyhow::Result<u8> {
    let v = json!({ "configured": false });
    out.data("audit-stream", v.clone(), || stream_text(&v));
    Ok(exit::OK)
}

fn stream_text(v: &Value) -> String {
    if v["configured"] != true {
        return "no audit stream (start pivault-server with --syslog tcp://HOST:PORT or tls://HOST:PORT)".into();
    }
    format!(
        "audit stream to {}: {}; last seq sent {}, {} queued of {}, {} dropped, {} gap(s) reported{}",
        v["target"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["last_sent_seq"],
        v["queued"],
        v["queue_capacity"],
        v["dropped"],
        v["gaps_reported"],
        v["last_error"]
            .as_str()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    )
}
