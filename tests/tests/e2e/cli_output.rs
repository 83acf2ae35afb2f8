//! The exit status of the real `pivault` binary agrees with what it did
//! (issue 9, "crash and fault consistency"): a command whose work is done
//! and printed never exits like a failure a script would retry, a full or
//! closed stdout or stderr never panics (exit 101), a disposal that fails
//! part-way says how it continues, and `record import --skip-lines` resumes
//! an import after a given line.
//!
//! Faults are injected into the real binary with `strace -e inject`: an
//! fsync or fdatasync of one named file fails with EIO (tests run as root,
//! so file modes cannot make a file unwritable). These tests are skipped,
//! saying so, where strace is not installed.

use std::fs::File;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cli::{CUSTOMERS, CliVault, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, EXIT_OK, Run};

/// vault-cli/src/exit.rs
const EXIT_STORAGE: i32 = 11;
const EXIT_CLOSE_FAILED: i32 = 15;
const EXIT_OUTPUT_FAILED: i32 = 16;
/// What Rust exits with when `main` panics.
const EXIT_PANIC: i32 = 101;

/// Whether `strace` can run here (installed, and ptrace permitted). It must:
/// `scripts/setup.sh` installs it, and a test that cannot inject its fault
/// fails rather than passing unseen.
fn strace_works() -> bool {
    let ok = Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "strace cannot run here: install it (scripts/setup.sh) and allow ptrace"
    );
    ok
}

/// `pivault ARGS` as `user` (as [`CliVault::run`] prepares it), run under
/// strace so that every `syscall` (fsync or fdatasync) on `file` fails with
/// EIO. Nothing else is traced or changed.
fn with_failing_sync(
    v: &CliVault,
    user: Option<&str>,
    args: &[&str],
    syscall: &str,
    file: &std::path::Path,
) -> Run {
    let inner = v.user_command(user, args);
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null"])
        .args(["-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:error=EIO")])
        .arg("-P")
        .arg(file)
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
    for (k, val) in inner.get_envs() {
        match val {
            Some(val) => c.env(k, val),
            None => c.env_remove(k),
        };
    }
    v.exec(
        c,
        &format!(
            "{} (every {syscall} of {} fails)",
            args.join(" "),
            file.display()
        ),
    )
}

/// Runs a prepared command with stdout and/or stderr on `/dev/full` (every
/// write fails with ENOSPC); the other stream is captured.
fn with_full(mut c: Command, what: &str, stdout_full: bool, stderr_full: bool) -> Run {
    let full = || Stdio::from(File::options().write(true).open("/dev/full").unwrap());
    c.stdout(if stdout_full { full() } else { Stdio::piped() });
    c.stderr(if stderr_full { full() } else { Stdio::piped() });
    let out = c.output().unwrap();
    Run {
        what: format!(
            "{what}{}{}",
            if stdout_full { " >/dev/full" } else { "" },
            if stderr_full { " 2>/dev/full" } else { "" }
        ),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The one JSON value on each stderr line.
fn stderr_json(r: &Run) -> Vec<Value> {
    r.stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("`pivault {}`: stderr line is not JSON ({e}): {l}", r.what)
            })
        })
        .collect()
}

/// The record ID after `record_id=` in a human message.
fn record_id_in(text: &str) -> String {
    let at = text
        .find("record_id=")
        .unwrap_or_else(|| panic!("no record_id= in {text:?}"))
        + "record_id=".len();
    let id = text[at..].chars().take(36).collect::<String>();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("{id:?} is not a record ID"));
    id
}

fn put_args<'a>(data: &'a str, subject: &'a str) -> Vec<&'a str> {
    vec![
        "record",
        "put",
        CUSTOMERS,
        "--subject",
        subject,
        "--data",
        data,
    ]
}

#[test]
fn a_failed_close_after_completed_work_prints_the_result_and_exits_15() {
    if !strace_works() {
        return;
    }
    let v = CliVault::standard();
    // Only the closing checkpoint writes (and fdatasyncs) this file here.
    let checkpoints = v.dir.join("audit").join("checkpoints.log");
    let data = v.input_file(
        "ada.json",
        r#"{"given_name": "Ada", "family_name": "Lovelace"}"#,
    );
    let data = data.to_str().unwrap();

    // record put, --json: the ID on stdout, a warning on stderr, exit 15.
    let mut args = vec!["--json"];
    args.extend(put_args(data, "C-2001"));
    let r = with_failing_sync(&v, Some("clerk"), &args, "fdatasync", &checkpoints);
    r.code(EXIT_CLOSE_FAILED);
    let id = r.json()["record_id"]
        .as_str()
        .expect("record_id")
        .to_owned();
    let warning = &stderr_json(&r)[0]["warning"];
    assert_eq!(warning["code"], "close_failed", "{}", r.stderr);
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("do not retry"),
        "{}",
        r.stderr
    );
    assert_eq!(v.record_ids(), vec![id.clone()], "stored once, as printed");

    // The same in human form: the ID alone on stdout.
    let r = with_failing_sync(
        &v,
        Some("clerk"),
        &put_args(data, "C-2002"),
        "fdatasync",
        &checkpoints,
    );
    r.code(EXIT_CLOSE_FAILED);
    let id2 = r.stdout.trim().to_owned();
    assert!(
        r.stderr.starts_with("pivault: warning:") && r.stderr.contains("do not retry"),
        "{}",
        r.stderr
    );
    let mut ids = v.record_ids();
    ids.sort();
    let mut want = vec![id, id2];
    want.sort();
    assert_eq!(ids, want);

    // An import: {"imported":2} and exit 15.
    let file = v.input_file(
        "two.jsonl",
        "{\"subject\": \"C-2003\", \"given_name\": \"Grace\", \"family_name\": \"Hopper\"}\n\
         {\"subject\": \"C-2004\", \"given_name\": \"Alan\", \"family_name\": \"Turing\"}\n",
    );
    let r = with_failing_sync(
        &v,
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            CUSTOMERS,
            file.to_str().unwrap(),
        ],
        "fdatasync",
        &checkpoints,
    );
    r.code(EXIT_CLOSE_FAILED);
    assert_eq!(r.json()["imported"], 2, "{}", r.stdout);
    assert_eq!(v.record_ids().len(), 4);

    // A read: "audit trail OK" and exit 15, not 11 beside an OK.
    let r = with_failing_sync(
        &v,
        Some("auditor"),
        &["audit", "verify"],
        "fdatasync",
        &checkpoints,
    );
    r.code(EXIT_CLOSE_FAILED);
    assert!(r.stdout.starts_with("audit trail OK"), "{}", r.stdout);

    // The next clean close signs the checkpoint the failed ones could not.
    v.assert_audit_ok();
}

#[test]
fn put_with_an_unwritable_stdout_names_the_stored_record_and_exits_16() {
    let v = CliVault::standard();
    let data = v.input_file(
        "ada.json",
        r#"{"given_name": "Ada", "family_name": "Lovelace"}"#,
    );
    let data = data.to_str().unwrap();

    // Human: stderr names the stored record.
    let args = put_args(data, "C-3001");
    let r = with_full(
        v.user_command(Some("clerk"), &args),
        &args.join(" "),
        true,
        false,
    );
    r.code(EXIT_OUTPUT_FAILED);
    let id = record_id_in(&r.stderr);
    assert!(r.stderr.contains("Do not run it again"), "{}", r.stderr);
    assert_eq!(v.record_ids(), vec![id.clone()]);

    // --json: an output_failed error carrying the result.
    let mut args = vec!["--json"];
    args.extend(put_args(data, "C-3002"));
    let r = with_full(
        v.user_command(Some("clerk"), &args),
        &args.join(" "),
        true,
        false,
    );
    r.code(EXIT_OUTPUT_FAILED);
    let err = &stderr_json(&r)[0]["error"];
    assert_eq!(err["code"], "output_failed", "{}", r.stderr);
    assert_eq!(err["completed"], true, "{}", r.stderr);
    let id2 = err["result"]["record_id"]
        .as_str()
        .expect("result.record_id");
    let ids = v.record_ids();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id) && ids.iter().any(|i| i == id2), "{ids:?}");

    // A closed pipe (`| head -0`) is not a failure: exit 0, as before.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = v.user_command(Some("clerk"), &put_args(data, "C-3003"));
    c.stdout(writer).stderr(Stdio::piped());
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(EXIT_OK),
        "record put | (closed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v.record_ids().len(), 3);
}

#[test]
fn a_full_stdout_or_stderr_never_panics() {
    let v = CliVault::standard();
    let data = v.input_file(
        "ada.json",
        r#"{"given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120"}"#,
    );
    let r = v.run(Some("clerk"), &put_args(data.to_str().unwrap(), "C-4001"));
    r.ok();
    let id = r.stdout.trim().to_owned();
    let missing = vault_core::ids::RecordId::new().to_string();
    let cases: Vec<(Option<&str>, Vec<&str>)> = vec![
        (Some("clerk"), vec!["record", "get", &id]),
        (Some("clerk"), vec!["--json", "record", "get", &id]),
        (Some("clerk"), vec!["record", "get", &missing]),
        (Some("clerk"), vec!["--json", "record", "get", &missing]),
        (Some("clerk"), vec!["record", "get", "not-an-id"]),
        (Some("clerk"), vec!["record", "list"]),
        (Some("auditor"), vec!["audit", "verify"]),
        (Some("officer"), vec!["dispose", "record", &id]),
        (Some("officer"), vec!["certificate", "export", &missing]),
        (None, vec!["completions", "bash"]),
        (None, vec!["--help"]),
        (None, vec!["no-such-command"]),
    ];
    for (user, args) in &cases {
        for (out_full, err_full) in [(true, false), (false, true)] {
            let r = with_full(
                v.user_command(*user, args),
                &args.join(" "),
                out_full,
                err_full,
            );
            assert!(
                r.code != EXIT_PANIC && r.code >= 0,
                "`pivault {}` exited {}:\n{}{}",
                r.what,
                r.code,
                r.stdout,
                r.stderr
            );
            assert!(!r.all_output().contains("panicked"), "{}", r.all_output());
        }
    }
    // With stderr full, the outcome is still in the exit code.
    let get = ["record", "get", id.as_str()];
    with_full(
        v.user_command(Some("clerk"), &get),
        "record get",
        false,
        true,
    )
    .ok();
    let get = ["record", "get", missing.as_str()];
    with_full(
        v.user_command(Some("clerk"), &get),
        "record get",
        false,
        true,
    )
    .code(EXIT_NOT_FOUND);
}

#[test]
fn a_disposal_that_fails_part_way_says_how_it_continues() {
    if !strace_works() {
        return;
    }
    let v = CliVault::standard();
    let data = v.input_file(
        "ada.json",
        r#"{"given_name": "Ada", "family_name": "Lovelace"}"#,
    );
    let data = data.to_str().unwrap();
    let mut ids = Vec::new();
    for subject in ["C-5001", "C-5002"] {
        let r = v.run(Some("clerk"), &put_args(data, subject));
        r.ok();
        ids.push(r.stdout.trim().to_owned());
    }
    // The epoch ratchet fsyncs the header after the batch is recorded: the
    // disposal fails part-way, at its step `buckets_rotated`.
    let header = v.dir.join("header");

    let r = with_failing_sync(
        &v,
        Some("officer"),
        &["dispose", "record", &ids[0], "--yes"],
        "fsync",
        &header,
    );
    r.code(EXIT_STORAGE);
    for words in [
        "resumes the next time the vault is opened",
        "pivault disposal retry ",
        "pivault disposal list",
        "pivault certificate show ",
    ] {
        assert!(r.stderr.contains(words), "no {words:?} in:\n{}", r.stderr);
    }
    // As promised: the next open finishes the batch.
    assert_complete(&v, 1);

    // --json: the batch and its certificate are named in the error.
    let r = with_failing_sync(
        &v,
        Some("officer"),
        &["--json", "dispose", "record", &ids[1], "--yes"],
        "fsync",
        &header,
    );
    r.code(EXIT_STORAGE);
    let err = &stderr_json(&r)[0]["error"];
    let disposal = err["disposal_id"].as_str().expect("disposal_id").to_owned();
    let cert = err["certificate_id"]
        .as_str()
        .expect("certificate_id")
        .to_owned();
    let hint = err["hint"].as_str().expect("hint");
    assert!(
        hint.contains(&format!("pivault disposal retry {disposal}"))
            && hint.contains(&format!("pivault certificate show {cert}")),
        "{hint}"
    );
    let list = assert_complete(&v, 2);
    assert!(
        list.iter()
            .any(|b| b["disposal_id"] == disposal.as_str() && b["certificate_id"] == cert.as_str()),
        "{list:?}"
    );
    v.run(Some("officer"), &["--json", "certificate", "show", &cert])
        .ok();
    for id in &ids {
        let r = v.run(Some("clerk"), &["record", "get", id]);
        assert_ne!(r.code, EXIT_OK, "{id} was disposed of: {}", r.stdout);
    }
}

/// `disposal list` (whose open resumes unfinished batches) shows `n`
/// batches, all complete; returns them.
#[track_caller]
fn assert_complete(v: &CliVault, n: usize) -> Vec<Value> {
    let r = v.run(Some("officer"), &["--json", "disposal", "list"]);
    r.ok();
    let batches = r.json()["items"].as_array().expect("array").clone();
    assert_eq!(batches.len(), n, "{}", r.stdout);
    assert!(
        batches.iter().all(|b| b["step"] == "complete"),
        "{}",
        r.stdout
    );
    batches
}

#[test]
fn import_skip_lines_resumes_after_a_line() {
    let v = CliVault::standard();
    let row = |n: u32, ssn: &str| {
        format!(
            "{{\"subject\": \"C-6{n:03}\", \"given_name\": \"Ada\", \"family_name\": \"Lovelace\", \"ssn\": \"{ssn}\"}}\n"
        )
    };
    // Line 2 is invalid, but it is skipped, so neither pass reads it.
    let mut jsonl = String::new();
    for n in 1..=5 {
        jsonl.push_str(&row(n, if n == 2 { "000-00-0000" } else { "078-05-1120" }));
    }
    let file = v.input_file("five.jsonl", &jsonl);
    let file = file.to_str().unwrap();
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            CUSTOMERS,
            file,
            "--skip-lines",
            "3",
        ],
    );
    r.ok();
    assert_eq!(r.json()["imported"], 2, "{}", r.stdout);
    let subjects_with_records = |refs: &[&str]| -> Vec<usize> {
        refs.iter()
            .map(|s| {
                let r = v.run(Some("clerk"), &["--json", "record", "list", "--subject", s]);
                r.ok();
                r.json()["items"].as_array().unwrap().len()
            })
            .collect()
    };
    assert_eq!(
        subjects_with_records(&["C-6001", "C-6002", "C-6003", "C-6004", "C-6005"]),
        vec![0, 0, 0, 1, 1]
    );

    // Errors after the skipped lines name the file's line numbers.
    let mut bad = jsonl.clone();
    bad.push_str(&row(6, "000-00-0000"));
    let file = v.input_file("six.jsonl", &bad);
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            CUSTOMERS,
            file.to_str().unwrap(),
            "--skip-lines",
            "4",
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    let errors = r.json()["errors"].clone();
    assert_eq!(errors.as_array().unwrap().len(), 1, "{errors}");
    assert_eq!(errors[0]["line"], 6, "{errors}");

    // CSV: line 1 is the header (always read); a record is one line even
    // with a quoted line break in it.
    let csv = "subject,given_name,family_name,ssn\n\
               C-6101,Ada,\"Love\nlace\",000-00-0000\n\
               C-6102,Grace,Hopper,078-05-1120\n\
               C-6103,Alan,Turing,078-05-1120\n\
               C-6104,Edsger,Dijkstra,078-05-1120\n";
    let file = v.input_file("four.csv", csv);
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            CUSTOMERS,
            file.to_str().unwrap(),
            "--skip-lines",
            "3",
        ],
    );
    r.ok();
    assert_eq!(r.json()["imported"], 2, "{}", r.stdout);
    assert_eq!(
        subjects_with_records(&["C-6101", "C-6102", "C-6103", "C-6104"]),
        vec![0, 0, 1, 1]
    );

    // Past the end: nothing to import, nothing stored.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            CUSTOMERS,
            file.to_str().unwrap(),
            "--skip-lines",
            "99",
        ],
    );
    r.ok();
    assert_eq!(r.json()["imported"], 0, "{}", r.stdout);
    assert_eq!(v.record_ids().len(), 4);
}
