//! Human and JSON output. Every command prints one JSON value on stdout with
//! `--json` (schemas in the README); errors go to stderr, as
//! `{"error":{"code":..,"message":..}}` with `--json`.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

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

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

// The human renderings below take the `--json` document of their command,
// so that a local vault and a server (`--server`) print the same text.

/// `user list`.
pub fn users_table(users: &Value) -> String {
    let mut t = format!(
        "{:<24} {:<11} {:<9} {:<36} {}\n",
        "USERNAME", "ROLE", "STATE", "ID", "LOCKED UNTIL"
    );
    for u in rows(users) {
        t.push_str(&format!(
            "{:<24} {:<11} {:<9} {:<36} {}\n",
            text(&u["username"]),
            text(&u["role"]),
            text(&u["state"]),
            text(&u["user_id"]),
            text(&u["locked_until"])
        ));
    }
    t.trim_end().to_owned()
}

/// `record list`.
pub fn metas_table(ms: &Value) -> String {
    let mut t = format!(
        "{:<36} {:<16} {:<36} {:>3} {}\n",
        "RECORD", "COLLECTION", "SUBJECT", "VER", "STATE"
    );
    for m in rows(ms) {
        t.push_str(&format!(
            "{:<36} {:<16} {:<36} {:>3} {}\n",
            text(&m["record_id"]),
            text(&m["collection"]),
            text(&m["subject"]),
            text(&m["version"]),
            text(&m["state"])
        ));
    }
    t.push_str(&format!("{} records", rows(ms).len()));
    t
}

/// `record get`.
pub fn record_text(v: &Value) -> String {
    let meta = &v["record"];
    let mut t = format!(
        "record {}  collection {}  subject {}  version {}\n",
        text(&meta["record_id"]),
        text(&meta["collection"]),
        text(&meta["subject"]),
        text(&meta["version"])
    );
    let revealed = rows(&v["revealed"]);
    if let Some(fields) = v["fields"].as_object() {
        for (k, val) in fields {
            let mark = if revealed.iter().any(|r| r.as_str() == Some(k)) {
                "  (revealed)"
            } else {
                ""
            };
            t.push_str(&format!("  {k}: {}{mark}\n", text(val)));
        }
    }
    let class = &v["classification"];
    let elems: Vec<String> = rows(&class["sensitive_elements"])
        .iter()
        .map(text)
        .collect();
    t.push_str(&format!(
        "classification: {}{}",
        if class["ma_personal_information"] == Value::Bool(true) {
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

/// `audit log`.
pub fn events_text(events: &Value) -> String {
    rows(events)
        .iter()
        .map(|e| {
            let targets: Vec<String> = rows(&e["targets"]).iter().map(text).collect();
            format!(
                "{:>6} {} {:<6} {:<36} {:<18} {:<7} {}{}",
                text(&e["seq"]),
                text(&e["time"]),
                text(&e["channel"]),
                e["actor"].as_str().unwrap_or("-"),
                text(&e["action"]),
                text(&e["outcome"]),
                targets.join(","),
                e["code"]
                    .as_str()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `audit verify`.
pub fn verify_text(r: &Value) -> String {
    if r["ok"] == Value::Bool(true) {
        format!(
            "audit trail OK: {} events, {} signed checkpoints (last at seq {})",
            text(&r["events"]),
            text(&r["checkpoints"]),
            text(&r["last_checkpoint_seq"])
        )
    } else {
        format!(
            "audit trail FAILED at seq {}: {}",
            r["first_bad_seq"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into()),
            r["problem"].as_str().unwrap_or("unknown problem")
        )
    }
}

/// `audit report`.
pub fn activity_text(report: &Value) -> String {
    let mut t = format!(
        "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8}\n",
        "USER", "READS", "REVEALS", "EXPORTS", "WRITES", "DENIALS", "LOGINS", "FAILED", "LOCKOUTS"
    );
    for a in rows(&report["users"]) {
        t.push_str(&format!(
            "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8}\n",
            text(&a["username"]),
            text(&a["reads"]),
            text(&a["reveals"]),
            text(&a["exports"]),
            text(&a["writes"]),
            text(&a["denials"]),
            text(&a["logins"]),
            text(&a["failed_logins"]),
            text(&a["lockouts"])
        ));
    }
    t.trim_end().to_owned()
}

/// A disposal's outcome, its dry run, or `retention due`.
pub fn outcome_text(o: &Value) -> String {
    let records = rows(&o["record_ids"]).len();
    let subjects = text(&o["subjects"]);
    let mut t = if o["dry_run"] == Value::Bool(true) {
        format!("would dispose of {records} record(s) of {subjects} subject(s)")
    } else if let Some(c) = o["certificate_id"].as_str() {
        format!(
            "disposed of {records} record(s) of {subjects} subject(s); certificate {c}\n(draft until an officer other than you runs `pivault certificate validate {c}`)"
        )
    } else {
        "nothing to dispose of".to_owned()
    };
    for x in rows(&o["excluded"]) {
        t.push_str(&format!(
            "\n  excluded {}: {}",
            text(&x["record_id"]),
            text(&x["reason"])
        ));
    }
    t
}

/// `maintenance run`.
pub fn maintenance_text(v: &Value) -> String {
    if v["epoch_after"].is_null() {
        return "nothing to do: no bucket holds an updated record's old key, no key is orphaned"
            .into();
    }
    format!(
        "rotated {} bucket(s) ({} key(s) re-wrapped), destroyed {} orphaned key(s), epoch {} -> {}; purge {}",
        text(&v["buckets_rotated"]),
        text(&v["keys_rewrapped"]),
        text(&v["orphan_keys_destroyed"]),
        text(&v["epoch_before"]),
        text(&v["epoch_after"]),
        if v["verified"] == true {
            "verified"
        } else {
            "NOT verified"
        }
    )
}

/// `disposal list`.
pub fn disposals_text(ds: &Value) -> String {
    rows(ds)
        .iter()
        .map(|d| {
            format!(
                "{}  {}  {:<20} {:>6} records  {}{}",
                text(&d["disposal_id"]),
                text(&d["created"]),
                text(&d["step"]),
                text(&d["records"]),
                text(&d["certificate_id"]),
                d["failed"]
                    .as_str()
                    .map(|f| format!("  FAILED: {f}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `hold list`.
pub fn holds_text(hs: &Value) -> String {
    rows(hs)
        .iter()
        .map(|h| {
            format!(
                "{:<7} {}  {}  {}",
                text(&h["kind"]),
                text(&h["target"]),
                text(&h["created"]),
                text(&h["reason"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `retention show` (and one line of `retention set`).
pub fn retention_line(p: &Value) -> String {
    format!(
        "{}\t{} days from {}",
        text(&p["collection"]),
        text(&p["days"]),
        if p["from_updated"] == Value::Bool(true) {
            "last update"
        } else {
            "creation"
        }
    )
}

/// `collection list`.
pub fn collections_text(cs: &Value) -> String {
    rows(cs)
        .iter()
        .map(|c| {
            format!(
                "{}\t{} fields\t{}",
                text(&c["collection"]),
                text(&c["fields"]),
                text(&c["purpose"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An import refused by its check pass.
pub fn import_refused_text(v: &Value) -> String {
    let rejected = v["rejected"].as_u64().unwrap_or(0);
    let valid = v["valid"].as_u64().unwrap_or(0);
    let mut t = format!(
        "nothing imported: {rejected} of {} rows are invalid\n",
        valid + rejected
    );
    for r in rows(&v["errors"]).iter().take(20) {
        t.push_str(&format!(
            "  line {}: {}\n",
            text(&r["line"]),
            text(&r["error"])
        ));
    }
    t
}
