//! End-to-end tests of the real `pivault` binary: the main job of
//! scripts/demo.sh with every exit code checked (vault-cli/src/exit.rs), an
//! all-or-nothing import, no secret on disk or on the terminal
//! (REQ-AUTH-03), and `doctor` naming an unsafe header.
//!
//! The helpers here (`pub(crate)`) are also used by `forensic.rs` and
//! `crash.rs`. Secrets are always passed as files (mode 0600) through the
//! environment, never as flags; every vault is created with
//! `--insecure-fast-kdf`.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr as _;

use serde_json::Value;
use tempfile::TempDir;

// ----- exit codes (vault-cli/src/exit.rs) -----------------------------------

pub(crate) const EXIT_OK: i32 = 0;
pub(crate) const EXIT_USAGE: i32 = 2;
pub(crate) const EXIT_INVALID_INPUT: i32 = 3;
pub(crate) const EXIT_AUTH: i32 = 4;
pub(crate) const EXIT_DENIED: i32 = 5;
pub(crate) const EXIT_NOT_FOUND: i32 = 6;
pub(crate) const EXIT_PASSPHRASE: i32 = 10;
pub(crate) const EXIT_UNSAFE_CONFIG: i32 = 12;

// ----- known test secrets (REQ-AUTH-03 scans for every one of them) ---------

/// Vault passphrase of every CLI test vault.
pub(crate) const PASSPHRASE: &str = "cli-e2e-Passphrase-Vq83#tundra";
/// A passphrase that does not open the vault.
pub(crate) const WRONG_PASSPHRASE: &str = "not-the-Passphrase-Kc55$cli";
/// A password that is nobody's.
pub(crate) const WRONG_PASSWORD: &str = "Zz0*wrong-Guess-cli-0005";
/// The users of [`CliVault::standard`]: (username, role, password). No
/// password contains its username (the password policy refuses that).
pub(crate) const USERS: [(&str, &str, &str); 4] = [
    ("admin", "admin", "Hx4!quartz-Lemur-cli-0001"),
    ("officer", "officer", "Rb7@fjord-Ocelot-cli-0002"),
    ("clerk", "clerk", "Tk2%mesa-Pangolin-cli-0003"),
    ("auditor", "auditor", "Wn9&delta-Ibis-cli-0004"),
];
/// Every secret string the CLI tests use.
pub(crate) const ALL_SECRETS: [&str; 7] = [
    PASSPHRASE,
    WRONG_PASSPHRASE,
    WRONG_PASSWORD,
    USERS[0].2,
    USERS[1].2,
    USERS[2].2,
    USERS[3].2,
];

/// The collection created by [`CliVault::standard`].
pub(crate) const CUSTOMERS: &str = "customers";

/// The repository's `examples/` directory.
pub(crate) fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
}

/// The `pivault` binary. It belongs to another package of the workspace, so
/// cargo gives no `CARGO_BIN_EXE_pivault`; it sits next to this package's
/// `crash-writer` in the same target directory (which respects
/// `CARGO_TARGET_DIR`). Build it first: `cargo build --workspace --bins`.
pub(crate) fn pivault_bin() -> PathBuf {
    let exe = format!("pivault{}", std::env::consts::EXE_SUFFIX);
    let beside_writer = Path::new(env!("CARGO_BIN_EXE_crash-writer")).with_file_name(&exe);
    if beside_writer.is_file() {
        return beside_writer;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let p = target.join("debug").join(&exe);
    if p.is_file() {
        return p;
    }
    let p = assert_cmd::cargo::cargo_bin("pivault");
    assert!(
        p.is_file(),
        "the pivault binary was not found (looked beside {} and in {}); run `cargo build --workspace --bins` first",
        beside_writer.display(),
        target.display()
    );
    p
}

/// Writes a file readable by its owner only (0600).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
}

/// Every regular file under `dir`, recursively (symlinks not followed).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Total size in bytes of the files under `dir` (0 if it does not exist).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    if !dir.is_dir() {
        return 0;
    }
    files_under(dir)
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Which of `needles` occur in `hay` (indices into `needles`). One pass over
/// `hay` with a first-byte table, so that it is fast even on a debug build
/// scanning a large binary.
pub(crate) fn find_any(hay: &[u8], needles: &[&[u8]]) -> Vec<usize> {
    let mut first = [false; 256];
    for n in needles {
        assert!(!n.is_empty(), "empty needle");
        first[n[0] as usize] = true;
    }
    let mut found = vec![false; needles.len()];
    for i in 0..hay.len() {
        if !first[hay[i] as usize] {
            continue;
        }
        let rest = &hay[i..];
        for (k, n) in needles.iter().enumerate() {
            if !found[k] && rest.starts_with(n) {
                found[k] = true;
            }
        }
    }
    (0..needles.len()).filter(|&k| found[k]).collect()
}

/// Copies a directory tree, keeping file modes; directories get 0700 so that
/// the copy is a private vault directory like the original.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        let dest = to.join(e.file_name());
        if ty.is_dir() {
            copy_tree(&e.path(), &dest);
        } else if ty.is_file() {
            fs::copy(e.path(), &dest)
                .unwrap_or_else(|err| panic!("copy {}: {err}", e.path().display()));
        }
    }
}

// ----- running the binary ----------------------------------------------------

/// Exit code and output of one `pivault` run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// What was run (arguments only: no secret is ever an argument).
    pub what: String,
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The run of a finished child process.
    /// With `--json`, a document on stdout is checked against its schema
    /// whether or not the test reads it (issue 11: every `--json` output of
    /// every scenario). Output that is not a JSON object (an HTML page,
    /// completions, nothing) is left to the test.
    pub(crate) fn from_output(what: impl Into<String>, out: &std::process::Output) -> Run {
        let run = Run {
            what: what.into(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if run.what.split_whitespace().any(|a| a == "--json")
            && run.stdout.trim_start().starts_with('{')
        {
            run.json();
        }
        run
    }

    /// Asserts the exit code, showing the output otherwise.
    #[track_caller]
    pub(crate) fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "`pivault {}` exited {} (expected {expected})\nstdout:\n{}\nstderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts success.
    #[track_caller]
    pub(crate) fn ok(&self) -> &Self {
        self.code(EXIT_OK)
    }

    /// Stdout parsed as one JSON value.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        let v = serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "`pivault {}`: stdout is not JSON ({e}):\n{}",
                self.what, self.stdout
            )
        });
        crate::documents::check_any(&v, &format!("`pivault {}`", self.what));
        v
    }

    /// The `--json` error on stderr: `{"error":{"code":..,"message":..}}`;
    /// returns the code.
    #[track_caller]
    pub(crate) fn error_code(&self) -> String {
        let v: Value = serde_json::from_str(self.stderr.trim()).unwrap_or_else(|e| {
            panic!(
                "`pivault {}`: stderr is not JSON ({e}):\n{}",
                self.what, self.stderr
            )
        });
        crate::documents::check_as("error", &v, &format!("`pivault {}` stderr", self.what));
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("`pivault {}`: no error.code in {v}", self.what));
        assert!(v["error"]["message"].is_string(), "no error.message in {v}");
        code.to_owned()
    }

    /// Stdout and stderr together.
    pub(crate) fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// A vault driven through the CLI, in its own temp dir:
/// `<tmp>/vault` (the vault), `<tmp>/secrets` (0700, secret files),
/// `<tmp>/input` (data files). Every run's stdout and stderr is kept for
/// the REQ-AUTH-03 scan.
#[derive(Debug)]
pub(crate) struct CliVault {
    /// Keeps the temp dir alive (removed on drop).
    _tmp: TempDir,
    pub dir: PathBuf,
    pub secrets: PathBuf,
    pub input: PathBuf,
    pub passphrase_file: PathBuf,
    transcript: RefCell<Vec<u8>>,
}

impl CliVault {
    /// A temp dir with the passphrase and user password files, no vault yet.
    pub(crate) fn empty() -> CliVault {
        let tmp = tempfile::Builder::new()
            .prefix("pivault-cli-")
            .tempdir()
            .unwrap();
        let secrets = tmp.path().join("secrets");
        let input = tmp.path().join("input");
        fs::create_dir(&secrets).unwrap();
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(&input).unwrap();
        let passphrase_file = secrets.join("passphrase");
        write_private(&passphrase_file, format!("{PASSPHRASE}\n").as_bytes());
        for (name, _, pw) in USERS {
            write_private(&secrets.join(name), format!("{pw}\n").as_bytes());
        }
        write_private(&secrets.join("wrong-password"), WRONG_PASSWORD.as_bytes());
        write_private(
            &secrets.join("wrong-passphrase"),
            WRONG_PASSPHRASE.as_bytes(),
        );
        CliVault {
            dir: tmp.path().join("vault"),
            _tmp: tmp,
            secrets,
            input,
            passphrase_file,
            transcript: RefCell::new(Vec::new()),
        }
    }

    /// `init --insecure-fast-kdf --admin admin --two-factor none`; returns
    /// the vault ID. The staff of these tests sign in with passwords only;
    /// two_factor.rs drives the default (a second factor required of
    /// admins, officers and contractors) through the real binary.
    pub(crate) fn init(&self) -> String {
        self.init_with(&["--two-factor", "none"])
    }

    /// `init --insecure-fast-kdf --admin admin` with more arguments.
    pub(crate) fn init_with(&self, more: &[&str]) -> String {
        let mut args = vec!["--json", "init", "--admin", "admin", "--insecure-fast-kdf"];
        args.extend_from_slice(more);
        // Conformance (scripts/test.sh): the same CLI tests with the
        // keystore and the records on the cluster.
        let mut files = Vec::new();
        for (flag, cfg, name) in [
            (
                "--keystore-cluster",
                super::common::conformance_keystore(),
                "keystore.json",
            ),
            (
                "--records-cluster",
                super::common::conformance_records(),
                "records.json",
            ),
        ] {
            if let Some(cfg) = cfg.filter(|_| !more.contains(&flag)) {
                let f = self.input.join(format!("conformance-{name}"));
                fs::write(&f, serde_json::to_vec(&cfg).unwrap()).unwrap();
                files.push((flag, f.to_str().unwrap().to_owned()));
            }
        }
        for (flag, f) in &files {
            args.push(flag);
            args.push(f);
        }
        let mut c = self.command(&args);
        c.env("PIVAULT_PASSWORD_FILE", self.password_file("admin"));
        let r = self.exec(c, &args.join(" "));
        r.ok();
        let v = r.json();
        let id = v["vault_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no vault_id in {v}"));
        uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("vault_id {id} is not a UUID"));
        assert_eq!(v["admin"], "admin", "{v}");
        id.to_owned()
    }

    /// A vault with admin, officer, clerk and auditor and the `customers`
    /// collection of examples/customers.schema.json.
    pub(crate) fn standard() -> CliVault {
        let v = CliVault::empty();
        v.init();
        for (name, role, _) in &USERS[1..] {
            v.add_user(name, role);
        }
        let schema = examples().join("customers.schema.json");
        let r = v.run(
            Some("admin"),
            &[
                "--json",
                "collection",
                "create",
                CUSTOMERS,
                "--schema",
                schema.to_str().unwrap(),
            ],
        );
        r.ok();
        assert_eq!(r.json()["collection"], CUSTOMERS);
        v
    }

    /// `user add NAME --role ROLE` as admin, the password from the secrets dir.
    pub(crate) fn add_user(&self, name: &str, role: &str) {
        self.add_user_with(name, role, &[]);
    }

    /// [`Self::add_user`] with more arguments (`--full-name NAME`).
    pub(crate) fn add_user_with(&self, name: &str, role: &str, more: &[&str]) {
        let mut args = vec!["--json", "user", "add", name, "--role", role];
        args.extend(more);
        let mut c = self.user_command(Some("admin"), &args);
        c.env("PIVAULT_NEW_PASSWORD_FILE", self.password_file(name));
        let r = self.exec(c, &args.join(" "));
        if role == "officer" && r.code == 13 {
            // A second officer waits for the first officer's approval
            // (two-person rule): exit 13, the request ID on stderr.
            let i = r
                .stderr
                .find("req_")
                .unwrap_or_else(|| panic!("no request ID: {}", r.stderr));
            let id = &r.stderr[i..i + 36];
            let a = ["--json", "user", "approve", id];
            self.run(Some("officer"), &a).ok();
            return;
        }
        r.ok();
        let v = r.json();
        assert_eq!(v["username"], name, "{v}");
        assert_eq!(v["role"], role, "{v}");
    }

    /// The password file of a user of [`USERS`].
    pub(crate) fn password_file(&self, user: &str) -> PathBuf {
        self.secrets.join(user)
    }

    /// Writes a data file under `<tmp>/input` (0600) and returns its path.
    pub(crate) fn input_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.input.join(name);
        write_private(&p, content.as_bytes());
        p
    }

    /// A `pivault` command with the vault and passphrase set, no user, stdin
    /// closed (so no prompt is possible) and no inherited `PIVAULT_*` setting.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(pivault_bin());
        for var in [
            "PIVAULT_DIR",
            "PIVAULT_USER",
            "PIVAULT_PASSPHRASE_FILE",
            "PIVAULT_PASSWORD_FILE",
            "PIVAULT_NEW_PASSWORD_FILE",
            "PIVAULT_SYNC",
            "PIVAULT_SERVER",
            "PIVAULT_TOKEN_FILE",
            "PIVAULT_SERVICE_TOKEN_FILE",
            "PIVAULT_PROFILE",
            "PIVAULT_CA_CERT",
            "PIVAULT_CODE_FILE",
        ] {
            c.env_remove(var);
        }
        // Never the machine's own server: a socket path where none runs;
        // never the machine's own profiles either.
        c.env("PIVAULT_SOCKET", self.secrets.join("no-server.sock"))
            .env("PIVAULT_CONFIG", self.secrets.join("config.toml"))
            .env("PIVAULT_DIR", &self.dir)
            .env("PIVAULT_PASSPHRASE_FILE", &self.passphrase_file)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// [`Self::command`] logged in as `user` (password file from the secrets dir).
    pub(crate) fn user_command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut c = self.command(args);
        if let Some(u) = user {
            c.env("PIVAULT_USER", u)
                .env("PIVAULT_PASSWORD_FILE", self.password_file(u));
        }
        c
    }

    /// Runs `pivault ARGS` as `user`.
    pub(crate) fn run(&self, user: Option<&str>, args: &[&str]) -> Run {
        self.exec(self.user_command(user, args), &args.join(" "))
    }

    /// Runs a prepared command to completion, keeping its output.
    pub(crate) fn exec(&self, mut c: Command, what: &str) -> Run {
        let out = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", pivault_bin().display()));
        let mut t = self.transcript.borrow_mut();
        t.extend_from_slice(&out.stdout);
        t.extend_from_slice(&out.stderr);
        Run::from_output(what, &out)
    }

    /// Everything every run printed so far.
    pub(crate) fn transcript(&self) -> Vec<u8> {
        self.transcript.borrow().clone()
    }

    /// `record import customers FILE --json` as clerk; returns the run.
    pub(crate) fn import(&self, file: &Path) -> Run {
        self.run(
            Some("clerk"),
            &[
                "--json",
                "record",
                "import",
                CUSTOMERS,
                file.to_str().unwrap(),
            ],
        )
    }

    /// `record list --json` as clerk: the record IDs.
    pub(crate) fn record_ids(&self) -> Vec<String> {
        let r = self.run(Some("clerk"), &["--json", "record", "list"]);
        r.ok();
        r.json()["items"]
            .as_array()
            .unwrap_or_else(|| panic!("record list is not an array: {}", r.stdout))
            .iter()
            .map(|m| m["record_id"].as_str().expect("record_id").to_owned())
            .collect()
    }

    /// `audit verify --json` as auditor must exit 0 and report ok.
    #[track_caller]
    pub(crate) fn assert_audit_ok(&self) {
        let r = self.run(Some("auditor"), &["--json", "audit", "verify"]);
        r.ok();
        let v = r.json();
        assert_eq!(v["ok"], true, "audit verify: {v}");
        assert!(v["events"].as_u64().unwrap() > 0, "{v}");
    }
}

/// The main job of scripts/demo.sh, run as the REQ-AUTH-03 scenario too:
/// returns the vault and the ID of the record stored with `record put`.
fn scenario() -> (CliVault, String) {
    let v = CliVault::standard();

    // Import the three example customers.
    let r = v.import(&examples().join("customers.jsonl"));
    r.ok();
    let imp = r.json();
    assert_eq!(imp["imported"], 3, "{imp}");
    assert_eq!(imp["rejected"], 0, "{imp}");
    assert_eq!(v.record_ids().len(), 3);

    // `record put` prints only the new record's ID.
    let data = v.input_file(
        "new.json",
        r#"{"given_name": "Katherine", "family_name": "Johnson", "ssn": "219-09-9998", "card": "5500 0000 0000 0004"}"#,
    );
    let r = v.run(
        Some("clerk"),
        &[
            "record",
            "put",
            CUSTOMERS,
            "--subject",
            "C-1004",
            "--data",
            data.to_str().unwrap(),
        ],
    );
    r.ok();
    let id = r.stdout.trim().to_owned();
    vault_core::ids::RecordId::from_str(&id)
        .unwrap_or_else(|_| panic!("record put printed {:?}, not a record ID", r.stdout));
    assert_eq!(
        r.stdout,
        format!("{id}\n"),
        "record put prints the ID and nothing else"
    );

    // Listed with its metadata.
    let r = v.run(Some("clerk"), &["--json", "record", "list"]);
    r.ok();
    let list = r.json();
    let rows = list["items"].as_array().expect("array");
    assert_eq!(rows.len(), 4, "{list}");
    let mine = rows
        .iter()
        .find(|m| m["record_id"] == id.as_str())
        .expect("the put record is listed");
    assert_eq!(mine["collection"], CUSTOMERS);
    assert_eq!(mine["version"], 1);
    assert_eq!(mine["state"], "live");
    // The subject is the same ID that `subject id C-1004` names.
    let sid = v.run(None, &["--json", "subject", "id", "C-1004"]);
    sid.ok();
    assert_eq!(mine["subject"], sid.json()["subject"]);
    // No contents in the listing.
    assert!(
        !r.stdout.contains("Johnson") && !r.stdout.contains("9998"),
        "{}",
        r.stdout
    );

    // A clerk reads it masked.
    let r = v.run(Some("clerk"), &["record", "get", &id]);
    r.ok();
    assert!(
        r.stdout.contains("***-**-9998"),
        "masked SSN missing:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("**** **** **** 0004"),
        "masked card missing:\n{}",
        r.stdout
    );
    for plain in [
        "219-09-9998",
        "219099998",
        "5500 0000 0000 0004",
        "5500000000000004",
    ] {
        assert!(
            !r.stdout.contains(plain),
            "masked view shows {plain}:\n{}",
            r.stdout
        );
    }
    let r = v.run(Some("clerk"), &["--json", "record", "get", &id]);
    r.ok();
    let view = r.json();
    assert_eq!(view["fields"]["ssn"], "***-**-9998", "{view}");
    assert_eq!(view["fields"]["family_name"], "Johnson", "{view}");
    assert_eq!(view["revealed"], serde_json::json!([]), "{view}");
    assert_eq!(
        view["classification"]["ma_personal_information"], true,
        "{view}"
    );

    // The officer reveals the SSN, with a reason.
    let r = v.run(
        Some("officer"),
        &[
            "record",
            "get",
            &id,
            "--reveal",
            "ssn",
            "--reason",
            "identity check requested by customer",
        ],
    );
    r.ok();
    assert!(
        r.stdout.contains("219-09-9998"),
        "revealed SSN missing:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("(revealed)"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("5500 0000 0000 0004"),
        "the card was not asked for:\n{}",
        r.stdout
    );

    // A clerk may not reveal.
    let r = v.run(
        Some("clerk"),
        &[
            "--json", "record", "get", &id, "--reveal", "ssn", "--reason", "curious",
        ],
    );
    r.code(EXIT_DENIED);
    assert_eq!(r.error_code(), "permission_denied");
    assert!(!r.all_output().contains("219-09-9998") && !r.all_output().contains("219099998"));

    // Update: a new version.
    let upd = v.input_file(
        "upd.json",
        r#"{"given_name": "Katherine", "family_name": "Goble Johnson", "ssn": "219-09-9998", "card": "5500 0000 0000 0004"}"#,
    );
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "update",
            &id,
            "--data",
            upd.to_str().unwrap(),
        ],
    );
    r.ok();
    let u = r.json();
    assert_eq!(u["record_version"], 2, "{u}");
    assert_eq!(u["record_id"], id.as_str(), "{u}");
    let r = v.run(Some("clerk"), &["--json", "record", "get", &id]);
    r.ok();
    let view = r.json();
    assert_eq!(view["record"]["version"], 2, "{view}");
    assert_eq!(view["fields"]["family_name"], "Goble Johnson", "{view}");

    // The audit trail verifies.
    let r = v.run(Some("officer"), &["audit", "verify"]);
    r.ok();
    assert!(r.stdout.contains("audit trail OK"), "{}", r.stdout);
    v.assert_audit_ok();
    (v, id)
}

// ----- 1. the full scenario and every exit code -------------------------------

#[test]
fn full_scenario_and_exit_codes() {
    let (v, id) = scenario();

    // audit log --json: events with IDs, never contents.
    let r = v.run(Some("auditor"), &["--json", "audit", "log"]);
    r.ok();
    let log = r.json();
    let events = log["items"].as_array().expect("audit log is an array");
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    for a in [
        "vault.init",
        "user.create",
        "collection.create",
        "record.create",
        "record.import",
        "record.read",
        "record.reveal",
        "record.update",
        "auth.login",
    ] {
        assert!(
            actions.contains(&a),
            "no {a} event in the audit log: {actions:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "record.reveal" && e["outcome"] == "denied"),
        "the clerk's refused reveal is audited as denied"
    );
    assert!(
        events.iter().any(|e| e["action"] == "record.read"
            && e["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == id.as_str())),
        "the read of {id} is audited with its ID"
    );
    for pi in [
        "219-09-9998",
        "219099998",
        "Katherine",
        "Johnson",
        "Lovelace",
        "078-05-1120",
        "078051120",
    ] {
        assert!(!r.stdout.contains(pi), "the audit log holds {pi}");
    }
    let r = v.run(
        Some("auditor"),
        &[
            "--json", "audit", "log", "--action", "record.", "--limit", "3",
        ],
    );
    r.ok();
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 3);

    // audit report --json: one row per user with counters.
    let r = v.run(Some("officer"), &["--json", "audit", "report"]);
    r.ok();
    let rep = r.json();
    let users = rep["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {rep}"));
    let officer = users
        .iter()
        .find(|u| u["username"] == "officer")
        .unwrap_or_else(|| panic!("{rep}"));
    assert!(officer["reveals"].as_u64().unwrap() >= 1, "{officer}");
    let clerk = users
        .iter()
        .find(|u| u["username"] == "clerk")
        .unwrap_or_else(|| panic!("{rep}"));
    assert!(clerk["denials"].as_u64().unwrap() >= 1, "{clerk}");
    assert!(clerk["writes"].as_u64().unwrap() >= 5, "{clerk}");

    // doctor: the fast KDF is unsafe (exit 12) and named.
    let r = v.run(None, &["doctor"]);
    r.code(EXIT_UNSAFE_CONFIG);
    assert!(r.stdout.contains("unlock-kdf"), "{}", r.stdout);
    let r = v.run(None, &["--json", "doctor"]);
    r.code(EXIT_UNSAFE_CONFIG);
    let d = r.json();
    assert_eq!(d["ok"], false);
    let checks = d["checks"].as_array().unwrap();
    let kdf = checks
        .iter()
        .find(|c| c["check"] == "unlock-kdf")
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(kdf["level"], "FAIL", "{d}");
    let failing: Vec<&Value> = checks.iter().filter(|c| c["level"] == "FAIL").collect();
    assert_eq!(failing.len(), 1, "only the KDF is unsafe: {d}");
    for name in ["header-permissions", "security-officer", "audit-trail"] {
        let c = checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} in {d}"));
        assert_eq!(c["level"], "ok", "{c}");
    }

    // --- error paths: exit codes and --json errors on stderr ---

    // Wrong password: 4.
    let mut c = v.command(&["--json", "record", "list"]);
    c.env("PIVAULT_USER", "clerk")
        .env("PIVAULT_PASSWORD_FILE", v.secrets.join("wrong-password"));
    let r = v.exec(c, "--json record list (wrong password)");
    r.code(EXIT_AUTH);
    assert_eq!(r.error_code(), "auth_failed");
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    // An unknown user gets the same answer.
    let mut c = v.command(&["--json", "record", "list"]);
    c.env("PIVAULT_USER", "mallory")
        .env("PIVAULT_PASSWORD_FILE", v.secrets.join("wrong-password"));
    let r2 = v.exec(c, "--json record list (unknown user)");
    r2.code(EXIT_AUTH);
    assert_eq!(
        r2.stderr, r.stderr,
        "unknown user and wrong password must look the same"
    );

    // Wrong passphrase: 10.
    let mut c = v.user_command(Some("clerk"), &["--json", "record", "list"]);
    c.env(
        "PIVAULT_PASSPHRASE_FILE",
        v.secrets.join("wrong-passphrase"),
    );
    let r = v.exec(c, "--json record list (wrong passphrase)");
    r.code(EXIT_PASSPHRASE);
    assert_eq!(r.error_code(), "wrong_passphrase");

    // Unknown record ID: 6.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "get",
            "01900000-0000-7000-8000-000000000000",
        ],
    );
    r.code(EXIT_NOT_FOUND);
    assert_eq!(r.error_code(), "not_found");

    // Malformed ID: 3.
    let r = v.run(
        Some("clerk"),
        &["--json", "record", "get", "not-a-record-id"],
    );
    r.code(EXIT_INVALID_INPUT);
    assert_eq!(r.error_code(), "invalid_input");

    // Invalid SSN: 3, and the digits are not echoed.
    let bad = v.input_file(
        "bad-ssn.json",
        r#"{"given_name": "Eve", "family_name": "Example", "ssn": "666-12-3456"}"#,
    );
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "put",
            CUSTOMERS,
            "--data",
            bad.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    assert_eq!(r.error_code(), "invalid_input");
    assert!(
        r.stderr.contains("ssn"),
        "the error names the field: {}",
        r.stderr
    );
    for echo in ["666-12-3456", "666123456", "3456"] {
        assert!(
            !r.all_output().contains(echo),
            "the error echoes {echo}: {}",
            r.stderr
        );
    }
    let r = v.run(
        Some("clerk"),
        &["record", "put", CUSTOMERS, "--data", bad.to_str().unwrap()],
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(
        !r.all_output().contains("666-12-3456") && !r.all_output().contains("666123456"),
        "{}",
        r.stderr
    );

    // Undeclared field: 3.
    let undeclared = v.input_file(
        "undeclared.json",
        r#"{"given_name": "Eve", "family_name": "Example", "favourite_colour": "teal"}"#,
    );
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "put",
            CUSTOMERS,
            "--data",
            undeclared.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    assert_eq!(r.error_code(), "invalid_input");
    assert!(
        r.stderr.contains("favourite_colour"),
        "names the undeclared field: {}",
        r.stderr
    );
    assert!(!r.stderr.contains("teal"), "{}", r.stderr);

    // Malformed JSON: 3.
    let broken = v.input_file(
        "broken.json",
        r#"{"given_name": "Eve", "ssn": "078-05-1120""#,
    );
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "put",
            CUSTOMERS,
            "--data",
            broken.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);
    assert_eq!(r.error_code(), "invalid_input");
    assert!(!r.all_output().contains("078-05-1120"), "{}", r.stderr);

    // No passphrase file: a staff command goes to pivault-server's socket;
    // with no server there, 17 (nothing done) and what to do.
    let mut c = v.user_command(Some("clerk"), &["--json", "record", "list"]);
    c.env_remove("PIVAULT_PASSPHRASE_FILE")
        .env("PIVAULT_SOCKET", v.secrets.join("no-server.sock"));
    let r = v.exec(c, "--json record list (no passphrase file, no server)");
    r.code(17);
    assert_eq!(r.error_code(), "unreachable");
    assert!(r.stderr.contains("not running"), "{}", r.stderr);
    assert!(r.stderr.contains("PIVAULT_PASSPHRASE_FILE"), "{}", r.stderr);
    // A custodian's command without a passphrase file and no terminal: 2
    // (secrets are never prompted for without a TTY).
    let mut c = v.user_command(Some("admin"), &["--json", "doctor"]);
    c.env_remove("PIVAULT_PASSPHRASE_FILE");
    let r = v.exec(c, "--json doctor (no passphrase file)");
    r.code(EXIT_USAGE);
    assert_eq!(r.error_code(), "usage");
    assert!(r.stderr.contains("PIVAULT_PASSPHRASE_FILE"), "{}", r.stderr);
    // A passphrase file others can read is refused (2), and doctor says so.
    let open_pass = v.secrets.join("open-passphrase");
    fs::write(&open_pass, PASSPHRASE).unwrap();
    fs::set_permissions(&open_pass, fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = v.user_command(Some("clerk"), &["--json", "record", "list"]);
    c.env("PIVAULT_PASSPHRASE_FILE", &open_pass);
    let r = v.exec(c, "--json record list (passphrase file mode 0644)");
    r.code(EXIT_USAGE);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    let mut c = v.user_command(None, &["--json", "doctor"]);
    c.env("PIVAULT_PASSPHRASE_FILE", &open_pass);
    let r = v.exec(c, "--json doctor (passphrase file mode 0644)");
    r.code(EXIT_UNSAFE_CONFIG);
    let checks = r.json()["checks"].as_array().cloned().unwrap_or_default();
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "passphrase-file" && c["level"] == "FAIL"),
        "{}",
        r.stdout
    );
    // A passphrase file that does not exist: also 2.
    let mut c = v.user_command(Some("clerk"), &["--json", "record", "list"]);
    c.env("PIVAULT_PASSPHRASE_FILE", v.secrets.join("no-such-file"));
    let r = v.exec(c, "--json record list (missing passphrase file)");
    r.code(EXIT_USAGE);
    assert_eq!(r.error_code(), "usage");

    // None of the failures changed anything: still 4 records, trail intact.
    assert_eq!(v.record_ids().len(), 4);
    v.assert_audit_ok();
}

// ----- 2. an import with one bad row stores nothing ---------------------------

#[test]
fn import_with_one_bad_row_imports_nothing() {
    let v = CliVault::standard();
    let file = v.input_file(
        "three.jsonl",
        concat!(
            r#"{"subject": "C-2001", "given_name": "Ada", "family_name": "Lovelace", "ssn": "078-05-1120"}"#,
            "\n",
            r#"{"subject": "C-2002", "given_name": "Grace", "family_name": "Hopper", "ssn": "123-00-4567"}"#,
            "\n",
            r#"{"subject": "C-2003", "given_name": "Alan", "family_name": "Turing", "ssn": "219-09-9999"}"#,
            "\n",
        ),
    );
    let r = v.import(&file);
    r.code(EXIT_INVALID_INPUT);
    let rep = r.json();
    assert_eq!(rep["imported"], 0, "{rep}");
    assert_eq!(rep["rejected"], 1, "{rep}");
    assert_eq!(rep["valid"], 2, "{rep}");
    let errors = rep["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{rep}");
    assert_eq!(errors[0]["line"], 2, "{rep}");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("ssn"),
        "{rep}"
    );
    for echo in [
        "123-00-4567",
        "123004567",
        "Hopper",
        "Lovelace",
        "078-05-1120",
        "219-09-9999",
    ] {
        assert!(
            !r.all_output().contains(echo),
            "the import error echoes {echo}:\n{}",
            r.all_output()
        );
    }
    // Human output names the line too.
    let r = v.run(
        Some("clerk"),
        &["record", "import", CUSTOMERS, file.to_str().unwrap()],
    );
    r.code(EXIT_INVALID_INPUT);
    assert!(r.all_output().contains("line 2"), "{}", r.all_output());
    assert!(!r.all_output().contains("123-00-4567") && !r.all_output().contains("123004567"));

    assert!(v.record_ids().is_empty(), "nothing may be imported");
    v.assert_audit_ok();
}

// ----- 3. REQ-AUTH-03: no secret anywhere ---------------------------------------

#[test]
fn secrets_never_reach_files_output_or_binary() {
    let (v, _id) = scenario();
    // Failed attempts with the wrong secrets belong to the scenario too.
    let mut c = v.command(&["record", "list"]);
    c.env("PIVAULT_USER", "officer")
        .env("PIVAULT_PASSWORD_FILE", v.secrets.join("wrong-password"));
    v.exec(c, "record list (wrong password)").code(EXIT_AUTH);
    let mut c = v.user_command(Some("officer"), &["record", "list"]);
    c.env(
        "PIVAULT_PASSPHRASE_FILE",
        v.secrets.join("wrong-passphrase"),
    );
    v.exec(c, "record list (wrong passphrase)")
        .code(EXIT_PASSPHRASE);
    v.run(Some("auditor"), &["audit", "log"]).ok();
    v.run(None, &["doctor"]).code(EXIT_UNSAFE_CONFIG);
    let weak = v.input_file("weak-password", "Password123!");
    let mut c = v.user_command(
        Some("admin"),
        &["user", "add", "weakling", "--role", "clerk"],
    );
    c.env("PIVAULT_NEW_PASSWORD_FILE", &weak);
    let r = v.exec(c, "user add weakling (weak password)");
    r.code(EXIT_INVALID_INPUT);
    assert!(!r.stderr.contains("Password123!"), "{}", r.stderr);

    let needles: Vec<&[u8]> = ALL_SECRETS.iter().map(|s| s.as_bytes()).collect();

    // Every file of the vault.
    let files = files_under(&v.dir);
    assert!(files.len() > 10, "the vault has its files: {files:?}");
    let mut scanned = 0u64;
    for f in &files {
        let bytes = fs::read(f).unwrap();
        scanned += bytes.len() as u64;
        let hits = find_any(&bytes, &needles);
        assert!(
            hits.is_empty(),
            "{} holds secret(s) {:?}",
            f.display(),
            hits.iter().map(|&k| ALL_SECRETS[k]).collect::<Vec<_>>()
        );
    }
    assert!(scanned > 0);

    // Everything printed.
    let t = v.transcript();
    assert!(!t.is_empty());
    let hits = find_any(&t, &needles);
    assert!(
        hits.is_empty(),
        "output shows secret(s) {:?}",
        hits.iter().map(|&k| ALL_SECRETS[k]).collect::<Vec<_>>()
    );

    // The binary holds neither these secrets nor a default credential pair.
    let bin = fs::read(pivault_bin()).unwrap();
    let mut bin_needles = needles.clone();
    let defaults: [&[u8]; 6] = [
        b"admin:admin",
        b"admin:password",
        b"root:root",
        b"admin/admin",
        b"admin:changeme",
        b"pivault:pivault",
    ];
    bin_needles.extend(defaults);
    let hits = find_any(&bin, &bin_needles);
    assert!(
        hits.is_empty(),
        "the pivault binary holds {:?}",
        hits.iter()
            .map(|&k| String::from_utf8_lossy(bin_needles[k]))
            .collect::<Vec<_>>()
    );
    // Control: the scan does see strings that are in the binary.
    assert_eq!(
        find_any(
            &bin,
            &[
                b"unlock-kdf".as_slice(),
                b"PIVAULT_PASSPHRASE_FILE".as_slice()
            ]
        ),
        vec![0, 1]
    );
    // Control: the scan does see the secrets where they are (the secret files).
    let pf = fs::read(&v.passphrase_file).unwrap();
    assert_eq!(find_any(&pf, &needles), vec![0]);
}

// ----- 4. doctor names a world-readable header ---------------------------------

#[test]
fn doctor_names_world_readable_header() {
    let v = CliVault::standard();
    let header = v.dir.join("header");
    assert_eq!(
        fs::metadata(&header).unwrap().permissions().mode() & 0o777,
        0o600,
        "header is created 0600"
    );
    fs::set_permissions(&header, fs::Permissions::from_mode(0o644)).unwrap();
    let r = v.run(None, &["doctor"]);
    r.code(EXIT_UNSAFE_CONFIG);
    assert!(r.stdout.contains("header-permissions"), "{}", r.stdout);
    let r = v.run(None, &["--json", "doctor"]);
    r.code(EXIT_UNSAFE_CONFIG);
    let d = r.json();
    let c = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "header-permissions")
        .unwrap_or_else(|| panic!("{d}"))
        .clone();
    assert_eq!(c["level"], "FAIL", "{d}");
    // The check needs no passphrase: it fails even without one.
    let mut c = v.command(&["doctor"]);
    c.env_remove("PIVAULT_PASSPHRASE_FILE");
    let r = v.exec(c, "doctor (no passphrase)");
    r.code(EXIT_UNSAFE_CONFIG);
    assert!(r.stdout.contains("header-permissions"), "{}", r.stdout);
}

/// Issue 10: `user passwd` on yourself checks the current password (from
/// PIVAULT_PASSWORD_FILE); an admin's officer grant waits for approval (13).
#[test]
fn cli_own_passwd_and_pending_officer_grant() {
    let v = CliVault::standard();
    let new = "Cli-Fresh-Pintail-Pass-48";
    let nf = v.input_file("new-pw", &format!("{new}\n"));
    let args = ["--json", "user", "passwd"];
    let mut c = v.user_command(Some("clerk"), &args);
    c.env("PIVAULT_NEW_PASSWORD_FILE", &nf);
    v.exec(c, "user passwd").ok();
    write_private(&v.password_file("clerk"), format!("{new}\n").as_bytes());
    v.run(Some("clerk"), &["--json", "collection", "list"]).ok();

    let r = v.run(
        Some("admin"),
        &["--json", "user", "role", "clerk", "officer"],
    );
    r.code(13);
    assert!(r.stderr.contains("approval_required"), "{}", r.stderr);
    let list = v.run(Some("officer"), &["--json", "user", "requests"]);
    list.ok();
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(1));
}
