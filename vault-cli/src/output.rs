//! Human and JSON output. Every command prints one JSON value on stdout with
//! `--json` (schemas in the README); errors go to stderr, as
//! `{"error":{"code":..,"message":..}}` with `--json`.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use vault_core::access::UserInfo;
use vault_core::audit::{AuditEvent, UserActivity, VerifyReport};
use vault_core::clock::format_ms;
use vault_core::vault::RecordState;
use vault_core::vault::{RecordMeta, RecordView};

pub struct Out {
    json: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out { json }
    }

    /// Prints the result: JSON, or the human rendering.
    pub fn data(&self, v: Value, human: impl FnOnce() -> String) -> std::io::Result<()> {
        let mut o = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut o, &v)?;
            writeln!(o)
        } else {
            let text = human();
            if text.is_empty() {
                Ok(())
            } else {
                writeln!(o, "{text}")
            }
        }
    }

    pub fn error(&self, code: &str, e: &anyhow::Error) {
        let msg = format!("{e:#}");
        if self.json {
            eprintln!("{}", json!({ "error": { "code": code, "message": msg } }));
        } else {
            eprintln!("pivault: {msg}");
        }
    }

    /// A progress bar on stderr, hidden when stderr is not a terminal or with `--json`.
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_message(what.to_owned());
        b
    }
}

pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn state_str(s: &RecordState) -> &'static str {
    match s {
        RecordState::Live => "live",
        RecordState::Disposed { .. } => "disposed",
    }
}

pub fn user_json(u: &UserInfo) -> Value {
    json!({
        "user_id": u.id.to_string(), "username": u.username.as_str(), "role": u.role.as_str(),
        "state": match u.state { vault_core::access::UserState::Active => "active", vault_core::access::UserState::Disabled => "disabled" },
        "reveal": u.reveal_grant, "created": format_ms(u.created_ms),
        "last_login": u.last_login_ms.map(format_ms), "locked_until": u.locked_until_ms.map(format_ms),
    })
}

pub fn users_table(users: &[UserInfo]) -> String {
    let mut t = format!(
        "{:<24} {:<11} {:<9} {:<36} {}\n",
        "USERNAME", "ROLE", "STATE", "ID", "LOCKED UNTIL"
    );
    for u in users {
        let state = match u.state {
            vault_core::access::UserState::Active => "active",
            vault_core::access::UserState::Disabled => "disabled",
        };
        t.push_str(&format!(
            "{:<24} {:<11} {:<9} {:<36} {}\n",
            u.username.as_str(),
            u.role.as_str(),
            state,
            u.id,
            u.locked_until_ms.map(format_ms).unwrap_or_default()
        ));
    }
    t.trim_end().to_owned()
}

pub fn meta_json(m: &RecordMeta) -> Value {
    let cert = match &m.state {
        RecordState::Disposed { certificate } => certificate.clone(),
        RecordState::Live => None,
    };
    json!({
        "record_id": m.id.to_string(), "collection": m.collection.as_str(), "subject": m.subject.to_string(),
        "version": m.version, "created": format_ms(m.created_ms), "updated": format_ms(m.updated_ms),
        "state": state_str(&m.state), "certificate": cert,
    })
}

pub fn metas_table(ms: &[RecordMeta]) -> String {
    let mut t = format!(
        "{:<36} {:<16} {:<36} {:>3} {}\n",
        "RECORD", "COLLECTION", "SUBJECT", "VER", "STATE"
    );
    for m in ms {
        t.push_str(&format!(
            "{:<36} {:<16} {:<36} {:>3} {}\n",
            m.id,
            m.collection.as_str(),
            m.subject,
            m.version,
            state_str(&m.state)
        ));
    }
    t.push_str(&format!("{} records", ms.len()));
    t
}

pub fn record_json(v: &RecordView) -> Value {
    json!({
        "record": meta_json(&v.meta),
        "fields": Value::Object(v.fields.clone()),
        "revealed": v.revealed,
        "classification": {
            "ma_personal_information": v.classification.ma_personal_information,
            "sensitive_elements": v.classification.sensitive_elements.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        },
    })
}

pub fn record_text(v: &RecordView) -> String {
    let mut t = format!(
        "record {}  collection {}  subject {}  version {}\n",
        v.meta.id,
        v.meta.collection.as_str(),
        v.meta.subject,
        v.meta.version
    );
    for (k, val) in &v.fields {
        let shown = match val {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mark = if v.revealed.iter().any(|r| r == k) {
            "  (revealed)"
        } else {
            ""
        };
        t.push_str(&format!("  {k}: {shown}{mark}\n"));
    }
    let elems: Vec<&str> = v
        .classification
        .sensitive_elements
        .iter()
        .map(|t| t.as_str())
        .collect();
    t.push_str(&format!(
        "classification: {}{}",
        if v.classification.ma_personal_information {
            "MA personal information"
        } else {
            "not MA personal information"
        },
        if elems.is_empty() {
            String::new()
        } else {
            format!(" (sensitive: {})", elems.join(", "))
        }
    ));
    t
}

pub fn event_json(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq, "time": format_ms(e.time_ms), "actor": e.actor.map(|a| a.to_string()),
        "channel": e.channel.as_str(), "source": e.source, "action": e.action, "targets": e.targets,
        "outcome": e.outcome.as_str(), "code": e.code, "reason": e.reason, "request_id": e.request_id,
    })
}

pub fn event_text(e: &AuditEvent) -> String {
    format!(
        "{:>6} {} {:<6} {:<36} {:<18} {:<7} {}{}",
        e.seq,
        format_ms(e.time_ms),
        e.channel.as_str(),
        e.actor.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
        e.action,
        e.outcome.as_str(),
        e.targets.join(","),
        e.code
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default()
    )
}

pub fn verify_json(r: &VerifyReport) -> Value {
    json!({
        "ok": r.ok(), "events": r.events, "checkpoints": r.checkpoints,
        "last_checkpoint_seq": r.last_checkpoint_seq, "first_bad_seq": r.first_bad_seq, "problem": r.problem,
    })
}

pub fn verify_text(r: &VerifyReport) -> String {
    if r.ok() {
        format!(
            "audit trail OK: {} events, {} signed checkpoints (last at seq {})",
            r.events, r.checkpoints, r.last_checkpoint_seq
        )
    } else {
        format!(
            "audit trail FAILED at seq {}: {}",
            r.first_bad_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into()),
            r.problem.as_deref().unwrap_or("unknown problem")
        )
    }
}

pub fn activity_json(a: &UserActivity, name: &str) -> Value {
    json!({
        "user_id": a.user.to_string(), "username": name, "reads": a.reads, "reveals": a.reveals,
        "exports": a.exports, "writes": a.writes, "denials": a.denials, "logins": a.logins,
        "failed_logins": a.failed_logins, "lockouts": a.lockouts,
    })
}

pub fn activity_text(
    report: &[UserActivity],
    name_of: &dyn Fn(vault_core::ids::UserId) -> String,
) -> String {
    let mut t = format!(
        "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8}\n",
        "USER", "READS", "REVEALS", "EXPORTS", "WRITES", "DENIALS", "LOGINS", "FAILED", "LOCKOUTS"
    );
    for a in report {
        t.push_str(&format!(
            "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8}\n",
            name_of(a.user),
            a.reads,
            a.reveals,
            a.exports,
            a.writes,
            a.denials,
            a.logins,
            a.failed_logins,
            a.lockouts
        ));
    }
    t.trim_end().to_owned()
}
