//! Human and JSON output. Every command prints one JSON document on stdout
//! with `--json`, named by [`vault_core::views::document`] and described by
//! `schemas/<document>.json` (README, "Output documents"); errors go to
//! stderr, as `{"error":{"code":..,"message":..}}` with `--json`
//! (`schemas/error.json`).

use std::cell::RefCell;
use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

pub struct Out {
    json: bool,
    /// The first stdout write that failed, and the non-personal part of the
    /// document it was writing (see [`receipt`]). Kept rather than returned:
    /// by the time a command prints, its work is done and audited, so a
    /// full disk or a closed terminal must not turn it into a failure that a
    /// script retries (exit 16 instead, with the receipt on stderr).
    stdout_failed: RefCell<Option<OutputFailure>>,
}

/// A result that could not be written to stdout.
#[derive(Debug)]
pub struct OutputFailure {
    pub error: std::io::Error,
    /// IDs, counts and states of what the command did; never field values.
    pub receipt: Map<String, Value>,
}

impl OutputFailure {
    /// A closed pipe (`pivault … | head`): the reader left on purpose.
    pub fn is_broken_pipe(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Advice attached to an error as its outermost context: what already
/// happened and what to run next. Rendered after the error on stderr, and
/// as extra members of the `--json` error object.
#[derive(Debug)]
pub struct Hint {
    /// Replaces the error's own message (which then only classifies it).
    pub message: Option<String>,
    /// What to do next.
    pub advice: String,
    /// Extra members of the JSON error object (IDs and counts only).
    pub fields: Map<String, Value>,
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.advice)
    }
}

/// Writes one line on stderr. Never panics (unlike `eprintln!`): a full or
/// closed stderr must not turn a completed command into exit 101.
pub fn stderr_line(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

/// Writes a prompt on stderr, without a newline. Never panics.
pub fn stderr_prompt(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes()).and_then(|()| e.flush());
}

impl Out {
    pub fn new(json: bool) -> Self {
        Out {
            json,
            stdout_failed: RefCell::new(None),
        }
    }

    /// Prints the result: JSON, or the human rendering. A write error is
    /// kept for [`Out::take_output_failure`], not returned; once stdout has
    /// failed nothing more is written to it.
    /// `document` names the JSON document (`schemas/<document>.json`); the
    /// naming is [`vault_core::views::document`]'s, so a local command and
    /// the server's answer relayed by `--server` print the same document.
    pub fn data(&self, document: &str, v: Value, human: impl FnOnce() -> String) {
        if self.stdout_failed.borrow().is_some() {
            return;
        }
        let v = vault_core::views::document(document, v);
        let res = if self.json {
            let mut text = v.to_string();
            text.push('\n');
            write_stdout(text.as_bytes())
        } else {
            let text = human();
            if text.is_empty() {
                Ok(())
            } else {
                write_stdout(format!("{text}\n").as_bytes())
            }
        };
        if let Err(error) = res {
            *self.stdout_failed.borrow_mut() = Some(OutputFailure {
                error,
                receipt: receipt(&v),
            });
        }
    }

    /// Writes text as it is (a certificate file, an HTML page, shell
    /// completions), with the same failure handling as [`Out::data`].
    pub fn raw(&self, text: &[u8]) {
        if self.stdout_failed.borrow().is_some() {
            return;
        }
        if let Err(error) = write_stdout(text) {
            *self.stdout_failed.borrow_mut() = Some(OutputFailure {
                error,
                receipt: Map::new(),
            });
        }
    }

    /// The stdout failure of this run, if any.
    pub fn take_output_failure(&self) -> Option<OutputFailure> {
        self.stdout_failed.borrow_mut().take()
    }

    pub fn error(&self, code: &str, e: &anyhow::Error) {
        let hint = e.downcast_ref::<Hint>();
        // With a hint as the outermost context, the message is the cause
        // below it; the advice follows.
        let msg = match hint {
            Some(Hint {
                message: Some(m), ..
            }) => m.clone(),
            Some(_) => e
                .chain()
                .skip(1)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": "),
            None => format!("{e:#}"),
        };
        if self.json {
            let mut obj = Map::new();
            obj.insert("code".into(), json!(code));
            obj.insert("message".into(), json!(msg));
            if let Some(h) = hint {
                obj.insert("hint".into(), json!(h.advice));
                for (k, v) in &h.fields {
                    obj.insert(k.clone(), v.clone());
                }
            }
            stderr_line(&json!({ "error": obj }).to_string());
        } else {
            stderr_line(&format!("pivault: {msg}"));
            if let Some(h) = hint {
                stderr_line(&format!("pivault: {}", h.advice));
            }
        }
    }

    /// A warning after a completed command: on stderr, one line (with
    /// `--json`, `{"warning":{"code":..,"message":..}}`).
    pub fn warn(&self, code: &str, msg: &str) {
        if self.json {
            stderr_line(&json!({ "warning": { "code": code, "message": msg } }).to_string());
        } else {
            stderr_line(&format!("pivault: warning: {msg}"));
        }
    }

    /// Reports a result that could not be written to stdout, naming what
    /// the command did so that nothing has to be guessed or retried.
    pub fn output_failed(&self, f: &OutputFailure) {
        let what = if f.receipt.is_empty() {
            String::new()
        } else {
            format!(
                " Its result: {}.",
                f.receipt
                    .iter()
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        let msg = format!(
            "the command completed, but its output could not be written to stdout ({}).{what} Do not run it again to see the output: what it did is done",
            f.error
        );
        if self.json {
            stderr_line(
                &json!({ "error": { "code": "output_failed", "message": msg, "completed": true, "result": f.receipt } })
                    .to_string(),
            );
        } else {
            stderr_line(&format!("pivault: {msg}"));
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

/// Writes and flushes stdout, so that a full disk is seen here and not at
/// exit (where Rust ignores the error).
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(bytes).and_then(|()| o.flush())
}

/// The members of a command's document that may be repeated on stderr when
/// stdout fails: IDs, counts and states, which are never personal
/// information. Anything else (record fields, reasons, schemas) is left out.
fn receipt(v: &Value) -> Map<String, Value> {
    const KEYS: &[&str] = &[
        "imported",
        "record_version",
        "state",
        "status",
        "role",
        "collection",
        "subject",
        "username",
        "held",
        "reviewed",
        "cosigned",
        "password_changed",
        "locked",
        "records",
        "restored",
        "removed",
        "disposed_skipped",
        "days",
        "from_updated",
        "logged_in",
        "logged_out",
    ];
    let mut r = Map::new();
    let Some(obj) = v.as_object() else {
        return r;
    };
    for (k, val) in obj {
        let keep = match val {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                k.ends_with("_id") || KEYS.contains(&k.as_str())
            }
            Value::Array(a) => k == "record_ids" && a.iter().all(Value::is_string),
            _ => false,
        };
        if keep {
            r.insert(k.clone(), val.clone());
        }
    }
    r
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

/// The items of a list document (`{"document", "version", "items"}`).
fn rows(v: &Value) -> &[Value] {
    vault_core::views::items(v)
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
/// `record find`: how many matched, then each record as `record get` shows it.
pub fn find_text(v: &Value) -> String {
    let records = rows(&v["records"]);
    let mut t = format!(
        "{} record(s) in {} match ({} on {})\n",
        records.len(),
        text(&v["collection"]),
        text(&v["match"]),
        rows(&v["fields"])
            .iter()
            .map(text)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in records {
        t.push_str(&record_text(r));
        t.push('\n');
    }
    t.trim_end().to_owned()
}

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
    let mut t = if r["ok"] == Value::Bool(true) {
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
    };
    for u in rows(&r["unvouched"]) {
        t.push_str(&format!(
            "\nnot vouched for by the vault: seq {}-{} (event {}: found after its last checkpoint \
             when it opened, after an unclean stop or appended by someone else)",
            text(&u["from_seq"]),
            text(&u["to_seq"]),
            text(&u["named_by_seq"])
        ));
    }
    t
}

/// `audit report`.
pub fn activity_text(report: &Value) -> String {
    let mut t = format!(
        "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8} {:>9}\n",
        "USER",
        "READS",
        "REVEALS",
        "EXPORTS",
        "WRITES",
        "DENIALS",
        "LOGINS",
        "FAILED",
        "LOCKOUTS",
        "UNVOUCHED"
    );
    for a in rows(&report["users"]) {
        t.push_str(&format!(
            "{:<24} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8} {:>9}\n",
            text(&a["username"]),
            text(&a["reads"]),
            text(&a["reveals"]),
            text(&a["exports"]),
            text(&a["writes"]),
            text(&a["denials"]),
            text(&a["logins"]),
            text(&a["failed_logins"]),
            text(&a["lockouts"]),
            text(&a["unvouched"])
        ));
    }
    t.trim_end().to_owned()
}

/// A disposal's outcome, its dry run, or `retention due`.
pub fn outcome_text(o: &Value) -> String {
    let records = rows(&o["record_ids"]).len();
    let subjects = match o["ma_residents"].as_u64() {
        Some(n) => format!(
            "{} subject(s) ({n} Massachusetts resident(s))",
            text(&o["subjects"])
        ),
        None => format!("{} subject(s)", text(&o["subjects"])),
    };
    let mut t = if o["dry_run"] == Value::Bool(true) {
        format!("would dispose of {records} record(s) of {subjects}")
    } else if let Some(c) = o["certificate_id"].as_str() {
        format!(
            "disposed of {records} record(s) of {subjects}; certificate {c}\n(draft until an officer other than you runs `pivault certificate validate {c}`)"
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
        "rotated {} bucket(s) ({} key(s) re-wrapped), destroyed {} orphaned key(s), epoch {} -> {}; purge {}; {} search-index partition(s) split",
        text(&v["buckets_rotated"]),
        text(&v["keys_rewrapped"]),
        text(&v["orphan_keys_destroyed"]),
        text(&v["epoch_before"]),
        text(&v["epoch_after"]),
        if v["verified"] == true {
            "verified"
        } else {
            "NOT verified"
        },
        text(&v["search_partitions_split"]),
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
/// The retention schedule of `views::retention_schedule`.
pub fn retention_schedule_text(v: &Value) -> String {
    if v["enabled"] == Value::Bool(true) {
        format!(
            "scheduled retention: every {} hour(s), set by {} at {}; last run {}",
            text(&v["every_hours"]),
            text(&v["set_by"]),
            text(&v["set_at"]),
            if v["last_run_at"].is_null() {
                "not yet (at the server's next check)".to_owned()
            } else {
                text(&v["last_run_at"])
            }
        )
    } else {
        "scheduled retention: off".to_owned()
    }
}

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

/// `record history`: one line per version.
pub fn history_text(v: &Value) -> String {
    let mut lines = vec![format!(
        "{:>7}  {:<24}  {:<16}  fields changed",
        "version", "time", "by"
    )];
    for ver in v["versions"].as_array().into_iter().flatten() {
        let fields = strs(&ver["fields_changed"]);
        lines.push(format!(
            "{:>7}  {:<24}  {:<16}  {}",
            ver["version"],
            ver["time"].as_str().unwrap_or(""),
            ver["username"].as_str().unwrap_or("-"),
            if ver["version"] == 1 {
                "(created)".to_owned()
            } else {
                fields.join(", ")
            }
        ));
    }
    lines.join("\n")
}

/// `whoami`: one line.
pub fn whoami_text(v: &Value) -> String {
    format!(
        "{} ({}{}), user ID {}, last login {}",
        v["username"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?"),
        if v["reveal"] == true {
            ", may reveal"
        } else {
            ""
        },
        v["user_id"].as_str().unwrap_or("?"),
        v["last_login"].as_str().unwrap_or("never"),
    )
}

/// `contractor list`: one line per contractor.
pub fn profiles_text(v: &Value) -> String {
    let mut s = String::new();
    for p in rows(v) {
        let place = p["server"]
            .as_str()
            .or(p["socket"].as_str())
            .unwrap_or("the local socket");
        s.push_str(&format!(
            "{} {:<16} {} at {}\n",
            if p["current"] == true { "*" } else { " " },
            text(&p["name"]),
            p["user"].as_str().unwrap_or("(no user)"),
            place,
        ));
    }
    if s.is_empty() {
        s.push_str("no profiles: `pivault login` remembers one\n");
    }
    s
}

pub fn services_text(v: &Value) -> String {
    let mut s = String::new();
    for a in rows(v) {
        s.push_str(&format!(
            "{:<24} {:<18} {:<8} created {}  last used {}\n",
            text(&a["username"]),
            text(&a["role"]),
            text(&a["state"]),
            text(&a["created"]),
            a["last_used"].as_str().unwrap_or("never"),
        ));
    }
    if s.is_empty() {
        s.push_str("no service accounts\n");
    }
    s
}

pub fn contractors_text(v: &Value) -> String {
    let rows: Vec<String> = rows(v)
        .iter()
        .map(|c| {
            let cols = strs(&c["collections"]);
            format!(
                "{:<16} {:<8} key {:<20} collections [{}], {} record(s)",
                c["username"].as_str().unwrap_or("?"),
                c["state"].as_str().unwrap_or("?"),
                c["key_fingerprint"].as_str().unwrap_or("none"),
                cols.join(", "),
                c["records"]
            )
        })
        .collect();
    if rows.is_empty() {
        "no contractors".to_owned()
    } else {
        rows.join("\n")
    }
}

/// `certificate list`: one line per certificate.
pub fn certificates_text(v: &Value) -> String {
    let rows: Vec<String> = rows(v)
        .iter()
        .map(|c| {
            let cos = strs(&c["cosigned_by"]);
            format!(
                "{}  {:<9}  {}  {:>6} record(s)  operator {}{}",
                c["certificate_id"].as_str().unwrap_or("?"),
                c["status"].as_str().unwrap_or("?"),
                c["issued_at"].as_str().unwrap_or("?"),
                c["record_count"],
                c["operator"].as_str().unwrap_or("-"),
                if cos.is_empty() {
                    String::new()
                } else {
                    format!(", co-signed by {}", cos.join(", "))
                }
            )
        })
        .collect();
    if rows.is_empty() {
        "no certificates".to_owned()
    } else {
        rows.join("\n")
    }
}

/// The strings of a JSON array (nothing for anything else).
fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}
