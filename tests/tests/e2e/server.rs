//! Acceptance tests of `pivault-server` (DESIGN §7): the real binary on a
//! loopback port with TLS (a self-signed certificate it generates), driven
//! by a real HTTPS client (ureq + rustls) that trusts only that certificate.
//!
//! REQ-TLS-01 (refuses a public bind without TLS), REQ-ACL-01 role ×
//! endpoint matrix, REQ-AUTH-05 lock-out over HTTP with its audit events,
//! REQ-WISP-07 (a disabled user's token fails on the next request),
//! REQ-MON-01 (every request audited with user, address, request ID,
//! outcome), contractor scope, reveal with reason, disposal and the
//! certificate downloaded and verified offline, bad input answered with
//! problem+json that echoes nothing, expired tokens, graceful shutdown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use vault_core::secret::SecretString;
use vault_core::vault::Vault;

use crate::cli::{self, CliVault, Run};
use crate::common::{self, CUSTOMERS, PASSPHRASE, USERS};

/// A running `pivault-server` child and a client that trusts its certificate.
pub(crate) struct Server {
    /// The process; `None` in a [`Server::view`] of another of its vaults.
    child: Option<Child>,
    pub(crate) base: String,
    agent: ureq::Agent,
    dir: Option<TempDir>,
    pub(crate) vault_dir: PathBuf,
    pub(crate) cert: PathBuf,
    stderr: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    content_type: String,
    request_id: String,
    cache_control: String,
    pub(crate) retry_after: String,
    /// The `Via` header (`pivault-standby` when a standby relayed it).
    pub(crate) via: String,
    pub(crate) text: String,
}

impl Answer {
    /// The body as JSON (`Null` if it is not JSON). A JSON answer that is
    /// not a problem document is checked against its schema.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        let v = serde_json::from_str(&self.text).unwrap_or(Value::Null);
        if self.content_type.starts_with("application/json") && !v.is_null() {
            crate::documents::check_any(&v, &format!("HTTP {} answer", self.status));
        }
        v
    }

    /// Asserts a problem+json answer with this status and code.
    fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "status of {self:?}");
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "problem content type: {self:?}"
        );
        let p = self.json();
        assert_eq!(p["code"], code, "problem code: {p}");
        assert_eq!(p["status"], status);
        p
    }
}

/// `pivault-server`, beside this package's own binaries in the target dir.
fn server_bin() -> PathBuf {
    let p = cli::pivault_bin().with_file_name("pivault-server");
    assert!(
        p.is_file(),
        "build first: cargo build --workspace --all-targets"
    );
    p
}

fn pivault_bin() -> PathBuf {
    cli::pivault_bin()
}

/// A fixture vault (one user per role, `customers`) closed and served.
pub(crate) fn start(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    fx.vault.close().expect("close fixture vault");
    start_on(dir, vault_dir, PASSPHRASE, extra)
}

pub(crate) fn start_on(
    dir: TempDir,
    vault_dir: PathBuf,
    passphrase: &str,
    extra: &[&str],
) -> Server {
    start_with(dir, vault_dir, passphrase, extra, true)
}

/// Like [`start`], but plain HTTP on loopback (no TLS): for the tests that
/// speak raw HTTP/1.1 over a TCP socket (slow clients, floods, streamed
/// uploads), where TLS would only cost client CPU.
pub(crate) fn start_plain(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault_dir = dir.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    fx.vault.close().expect("close fixture vault");
    start_with(dir, vault_dir, PASSPHRASE, extra, false)
}

/// Like [`start_on`], plain HTTP on loopback.
pub(crate) fn start_plain_on(dir: TempDir, vault_dir: PathBuf, extra: &[&str]) -> Server {
    start_with(dir, vault_dir, PASSPHRASE, extra, false)
}

fn start_with(
    dir: TempDir,
    vault_dir: PathBuf,
    passphrase: &str,
    extra: &[&str],
    tls: bool,
) -> Server {
    spawn_with(dir, vault_dir, passphrase, extra, tls).listening(Duration::from_secs(60))
}

/// A `pivault-server` started and not yet listening (a standby waits for
/// its vault before it listens).
pub(crate) struct Starting {
    child: Option<Child>,
    dir: Option<TempDir>,
    vault_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    tls: bool,
    rx: std::sync::mpsc::Receiver<String>,
    /// Lines already read from stderr.
    seen: Vec<String>,
}

impl Starting {
    /// Waits until the server printed a line containing `needle`.
    pub(crate) fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "the server printed no {needle:?} within {timeout:?}: {:?}",
                    self.seen
                )
            });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Whether the server prints a line containing `needle` within
    /// `timeout` (the line is kept: [`Starting::listening`] finds it).
    pub(crate) fn printed(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            if line.contains(needle) {
                return true;
            }
        }
        false
    }

    /// The lines printed so far (without waiting), for a failure's message.
    pub(crate) fn printed_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    /// The process ID (signals to a process not yet serving).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the process").id()
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until a standby listens to forward requests to the holder,
    /// within `timeout`: its base URL (`localhost` with TLS, which the
    /// certificate names) and a client trusting its certificate.
    pub(crate) fn standing_by(&mut self, timeout: Duration) -> (String, ureq::Agent) {
        let line = self.wait_line("forwarding requests to the holder", timeout);
        let addr = line
            .split("standing by on ")
            .nth(1)
            .and_then(|r| r.split(": forwarding").next())
            .expect("the standby's address")
            .to_owned();
        if !self.tls {
            assert!(addr.starts_with("http://127.0.0.1:"), "loopback: {addr}");
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into();
            return (addr, agent);
        }
        let pem = std::fs::read(&self.cert).expect("certificate");
        (addr.replace("127.0.0.1", "localhost"), agent_trusting(&pem))
    }

    /// Waits until a `--hosting` server listens for `vaults` vaults, within
    /// `timeout`: the server (at the first vault's address), each vault's
    /// ID with its base URL in the order they listened, and the lines
    /// printed until then.
    pub(crate) fn hosting(
        mut self,
        vaults: usize,
        timeout: Duration,
    ) -> (Server, Vec<(String, String)>, Vec<String>) {
        let mut bases = Vec::new();
        while bases.len() < vaults {
            let line = self.wait_line(" listening on https://", timeout);
            let (id, addr) = line
                .split("vault ")
                .nth(1)
                .and_then(|r| r.split_once(" listening on https://"))
                .and_then(|(named, addr)| Some((named.split_once(" (")?.0, addr)))
                .unwrap_or_else(|| panic!("a hosted vault's line: {line}"));
            bases.push((
                id.to_owned(),
                format!("https://localhost{}", &addr.trim()["127.0.0.1".len()..]),
            ));
        }
        let seen = self.seen.clone();
        (self.listening(timeout), bases, seen)
    }

    /// Waits until a `--hosting --standby` server stands by for `vaults`
    /// vaults, forwarding their requests to the holder, within `timeout`:
    /// each vault's ID with its base URL (`localhost`, which the
    /// certificate names), in the order printed.
    pub(crate) fn hosting_standing_by(
        &mut self,
        vaults: usize,
        timeout: Duration,
    ) -> Vec<(String, String)> {
        let mut bases = Vec::new();
        while bases.len() < vaults {
            let line = self.wait_line(" standing by on https://", timeout);
            let (id, addr) = line
                .split("vault ")
                .nth(1)
                .and_then(|r| r.split_once(" standing by on https://"))
                .and_then(|(named, addr)| {
                    Some((
                        named.split_once(" (")?.0,
                        addr.split(": forwarding").next()?,
                    ))
                })
                .unwrap_or_else(|| panic!("a vault stood by for: {line}"));
            bases.push((
                id.to_owned(),
                format!("https://localhost{}", &addr.trim()["127.0.0.1".len()..]),
            ));
        }
        bases
    }

    /// Waits until the server listens, within `timeout`.
    pub(crate) fn listening(mut self, timeout: Duration) -> Server {
        let needle = "listening on http";
        let line = match self.seen.iter().find(|l| l.contains(needle)) {
            Some(l) => l.clone(),
            None => self.wait_line(needle, timeout),
        };
        let base = match (
            line.split("listening on https://").nth(1),
            line.split("listening on http://").nth(1),
        ) {
            (Some(rest), _) => format!("https://{}", rest.trim()),
            (None, Some(rest)) => format!("http://{}", rest.trim()),
            (None, None) => unreachable!("matched above"),
        };
        let (child, dir) = (self.child.take().expect("child"), self.dir.take());
        let rx = std::mem::replace(&mut self.rx, std::sync::mpsc::channel().1);
        if !self.tls {
            assert!(base.starts_with("http://127.0.0.1:"), "loopback: {base}");
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into();
            return Server {
                child: Some(child),
                base,
                agent,
                dir,
                vault_dir: self.vault_dir.clone(),
                cert: self.cert.clone(),
                stderr: std::sync::Mutex::new(rx),
            };
        }
        assert!(
            base.starts_with("https://127.0.0.1:"),
            "TLS on loopback: {base}"
        );
        let pem = std::fs::read(&self.cert).expect("self-signed certificate written");
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&self.key).expect("key").permissions(),
        );
        assert_eq!(key_mode & 0o077, 0, "the TLS key is private to its owner");
        let agent = agent_trusting(&pem);
        Server {
            child: Some(child),
            base: base.replace("127.0.0.1", "localhost"),
            agent,
            dir,
            vault_dir: self.vault_dir.clone(),
            cert: self.cert.clone(),
            stderr: std::sync::Mutex::new(rx),
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `pivault-server` on `vault_dir` without waiting for it to listen.
pub(crate) fn spawn_with(
    dir: TempDir,
    vault_dir: PathBuf,
    passphrase: &str,
    extra: &[&str],
    tls: bool,
) -> Starting {
    let pass = dir.path().join("passphrase");
    cli::write_private(&pass, passphrase.as_bytes());
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    // Each server its own socket (never the shared default), unless the
    // test chose one.
    let socket = match extra.iter().position(|a| *a == "--socket") {
        Some(i) => PathBuf::from(extra[i + 1]),
        None => dir.path().join("pivault.sock"),
    };
    let own_socket = !extra
        .iter()
        .any(|a| *a == "--socket" || *a == "--no-socket");
    let child = Command::new(server_bin())
        .arg("--vault")
        .arg(&vault_dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(if tls {
            vec![
                "--self-signed".as_ref(),
                "--tls-cert".as_ref(),
                cert.as_os_str(),
                "--tls-key".as_ref(),
                key.as_os_str(),
            ]
        } else {
            vec![]
        })
        .args(if own_socket {
            vec!["--socket".as_ref(), socket.as_os_str()]
        } else {
            vec![]
        })
        .args(extra)
        .env("PIVAULT_PASSPHRASE_FILE", &pass)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pivault-server");
    reading_stderr(child, dir, vault_dir, cert, key, tls)
}

/// Starts `pivault-server --hosting FILE` (TLS, a self-signed certificate
/// in `dir`) without waiting for it to listen; `vault_dir` is the hosting
/// file's directory.
pub(crate) fn spawn_hosting(dir: TempDir, hosting: &Path, extra: &[&str]) -> Starting {
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let child = Command::new(server_bin())
        .arg("--hosting")
        .arg(hosting)
        .arg("--self-signed")
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(extra)
        .env_remove("PIVAULT_PASSPHRASE_FILE")
        .env_remove("PIVAULT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pivault-server --hosting");
    let vault_dir = hosting.parent().expect("the hosting file's dir").to_owned();
    reading_stderr(child, dir, vault_dir, cert, key, true)
}

fn reading_stderr(
    mut child: Child,
    dir: TempDir,
    vault_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    tls: bool,
) -> Starting {
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Starting {
        child: Some(child),
        dir: Some(dir),
        vault_dir,
        cert,
        key,
        tls,
        rx,
        seen: Vec::new(),
    }
}

pub(crate) fn agent_trusting(pem: &[u8]) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let cert = Certificate::from_pem(pem)
        .expect("PEM certificate")
        .to_owned();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![cert])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

impl Server {
    /// The server's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a view of a vault has no process of its own")
            .id()
    }

    fn process(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("a view of a vault has no process of its own")
    }

    /// The same process's vault served at `base` (`--hosting`), with the
    /// same client; stopping or killing stays with `self`.
    pub(crate) fn view(&self, base: &str) -> Server {
        Server {
            child: None,
            base: base.replace("127.0.0.1", "localhost"),
            agent: self.agent.clone(),
            dir: None,
            vault_dir: self.vault_dir.clone(),
            cert: self.cert.clone(),
            stderr: std::sync::Mutex::new(std::sync::mpsc::channel().1),
        }
    }

    /// `host:port` of the server's TCP listener.
    pub(crate) fn addr(&self) -> String {
        self.base
            .split("://")
            .nth(1)
            .expect("base URL")
            .replace("localhost", "127.0.0.1")
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let raw = body.map(|b| (b.to_string().into_bytes(), "application/json"));
        self.raw(
            method,
            path,
            token,
            raw.as_ref().map(|(b, t)| (b.as_slice(), *t)),
        )
    }

    /// One request with the given headers, no redirect followed: (status,
    /// response headers with lower-case names, body).
    pub(crate) fn raw_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&[u8], &str)>,
    ) -> (u16, Vec<(String, String)>, String) {
        let url = format!("{}{}", self.base, path);
        let resp = if method == "GET" {
            let mut r = self.agent.get(&url).config().max_redirects(0).build();
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        } else {
            let mut r = self.agent.post(&url).config().max_redirects(0).build();
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match body {
                Some((bytes, ct)) => r.header("Content-Type", ct).send(bytes),
                None => r.send_empty(),
            }
        };
        let mut resp = resp.expect("HTTP exchange");
        let hs = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (resp.status().as_u16(), hs, text)
    }

    /// The response headers of a GET (no redirect followed).
    pub(crate) fn raw_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> std::collections::HashMap<String, String> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        self.raw_with(method, path, &h, None)
            .1
            .into_iter()
            .collect()
    }

    pub(crate) fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&[u8], &str)>,
    ) -> Answer {
        let url = format!("{}{}", self.base, path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    other => panic!("method {other}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match b {
                    Some((bytes, ct)) => r.header("Content-Type", ct).send(bytes),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = resp.expect("HTTP exchange");
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, request_id, cache_control, retry_after, via) = (
            h("content-type"),
            h("x-request-id"),
            h("cache-control"),
            h("retry-after"),
            h("via"),
        );
        let a = Answer {
            status: resp.status().as_u16(),
            content_type,
            request_id,
            cache_control,
            retry_after,
            via,
            text: resp.body_mut().read_to_string().unwrap_or_default(),
        };
        // Every JSON answer of every scenario, read by the test or not, is
        // checked against its schema (problem documents are not JSON here:
        // application/problem+json).
        if a.content_type.starts_with("application/json") {
            let v: Value = serde_json::from_str(&a.text)
                .unwrap_or_else(|e| panic!("{method} {path}: the JSON answer is not JSON ({e})"));
            crate::documents::check_any(&v, &format!("{method} {path} {}", a.status));
        }
        a
    }

    /// A GET whose answer is bytes (a PDF): status, content type, content
    /// disposition and the body.
    pub(crate) fn get_bytes(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, String, String, Vec<u8>) {
        let auth = token.map(|t| format!("Bearer {t}"));
        match &auth {
            Some(a) => self.get_bytes_with(path, &[("Authorization", a)]),
            None => self.get_bytes_with(path, &[]),
        }
    }

    /// [`Self::get_bytes`] with the given headers, no redirect followed.
    pub(crate) fn get_bytes_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String, Vec<u8>) {
        let mut r = self
            .agent
            .get(format!("{}{}", self.base, path))
            .config()
            .max_redirects(0)
            .build();
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let mut resp = r.call().expect("HTTP exchange");
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (ct, cd) = (h("content-type"), h("content-disposition"));
        let body = resp.body_mut().read_to_vec().expect("body");
        (resp.status().as_u16(), ct, cd, body)
    }

    fn login(&self, user: &str, password: &str) -> Answer {
        self.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({ "username": user, "password": password })),
        )
    }

    /// The IDs of the live records the officer lists, sorted.
    pub(crate) fn live_ids(&self, officer: &str) -> Vec<String> {
        let list = self.call(
            "GET",
            &format!("/v1/records?collection={CUSTOMERS}"),
            Some(officer),
            None,
        );
        assert_eq!(list.status, 200, "{list:?}");
        let mut ids: Vec<String> = list.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|m| m["state"] == "live")
            .map(|m| m["record_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    }

    pub(crate) fn token(&self, user: &str) -> String {
        let (_, _, pw) = USERS.iter().find(|(u, _, _)| *u == user).expect("user");
        let a = self.login(user, pw);
        assert_eq!(a.status, 201, "login of {user}: {a:?}");
        a.json()["token"].as_str().expect("token").to_owned()
    }

    /// The server's stderr lines printed since the last call.
    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr").try_iter().collect()
    }

    /// Waits until the server has printed, on stderr, a line containing
    /// each of `needles` (timer jobs report there); returns those lines.
    pub(crate) fn wait_stderr(&self, needles: &[&str], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let rx = self.stderr.lock().expect("stderr");
        let mut found: Vec<Option<String>> = vec![None; needles.len()];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("the server did not print all of {needles:?} within {timeout:?}: {found:?}");
            };
            for (i, n) in needles.iter().enumerate() {
                if found[i].is_none() && line.contains(n) {
                    found[i] = Some(line.clone());
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    /// Waits, up to `timeout`, for the server to exit by itself: its status
    /// and the stderr lines not read before.
    pub(crate) fn wait_exit(
        mut self,
        timeout: Duration,
    ) -> (Option<std::process::ExitStatus>, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.process().try_wait().expect("wait") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends with the pipe; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.stderr.lock().expect("stderr").try_iter().collect();
        (status, lines)
    }

    /// SIGKILL, as a power cut or the OOM killer would: no graceful stop.
    /// The vault directory and its temp dir are kept for a restart.
    pub(crate) fn kill(mut self) -> (PathBuf, TempDir) {
        self.process().kill().expect("kill");
        self.process().wait().expect("wait");
        let dir = self.dir.take().expect("temp dir");
        (self.vault_dir.clone(), dir)
    }

    /// SIGTERM, then wait: a graceful stop exits 0.
    pub(crate) fn stop(mut self) -> (std::process::ExitStatus, PathBuf, TempDir) {
        let pid = self.process().id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.process().try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let lines: Vec<String> = self.stderr.lock().expect("stderr").try_iter().collect();
        assert!(
            lines.iter().any(|l| l.contains("stopped")),
            "graceful stop reported: {lines:?}"
        );
        let dir = self.dir.take().expect("temp dir");
        (status, self.vault_dir.clone(), dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const SSN: &str = "123-45-6789";
const CARD: &str = "4111111111111111";

fn customer(given: &str) -> Value {
    json!({ "given_name": given, "family_name": "Quimby", "ssn": SSN, "card_number": CARD })
}

// ----- REQ-TLS-01 -------------------------------------------------------------

#[test]
fn server_refuses_a_public_bind_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(server_bin())
        .arg("--vault")
        .arg(dir.path())
        .args(["--bind", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .expect("run pivault-server");
    assert!(!out.status.success(), "a public bind without TLS must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without TLS"), "clear message: {err}");
    // Control: the same vault directory on loopback gets past the bind check
    // (and fails later for another reason: it is not a vault).
    let out = Command::new(server_bin())
        .arg("--vault")
        .arg(dir.path())
        .args(["--bind", "127.0.0.1:0"])
        .env("PIVAULT_PASSPHRASE_FILE", dir.path().join("none"))
        .stdin(Stdio::null())
        .output()
        .expect("run pivault-server");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("without TLS"));
}

// ----- REQ-ACL-01 over HTTP, reveal, bad input, REQ-MON-01 --------------------------

/// Who may call what, per DESIGN §5, written out rather than derived from
/// the core's table so that a change there shows here.
#[test]
fn role_endpoint_matrix_reveal_and_bad_input_over_tls() {
    let srv = start(&["--logins-per-minute", "10000"]);
    let roles = ["admin", "officer", "clerk", "auditor", "contractor"];
    let tokens: Vec<(String, String)> = roles
        .iter()
        .map(|r| (r.to_string(), srv.token(r)))
        .collect();
    let tok = |r: &str| -> &str { &tokens.iter().find(|(n, _)| n == r).expect("role").1 };

    // A record to read, as the clerk.
    let put = srv.call(
        "POST",
        "/v1/records",
        Some(tok("clerk")),
        Some(&json!({ "collection": CUSTOMERS, "data": customer("Ada") })),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let id = put.json()["record_id"].as_str().expect("id").to_owned();

    let schema = json!({ "purpose": "matrix", "fields": [ { "name": "note", "type": "text" } ] });
    let mut n = 0;
    let mut uniq = || {
        n += 1;
        n
    };
    // (method, path, body, roles allowed)
    type Case = (&'static str, String, Option<Value>, &'static [&'static str]);
    let cases = |u: &mut dyn FnMut() -> i32| -> Vec<Case> {
        vec![
            (
                "GET",
                "/v1/users".into(),
                None,
                &["admin", "officer", "auditor"],
            ),
            (
                "POST",
                "/v1/users".into(),
                Some(
                    json!({ "username": format!("newuser{}", u()), "role": "clerk", "password": "Quartz-Ribbon-Falcon-71" }),
                ),
                &["admin"],
            ),
            (
                "POST",
                "/v1/collections".into(),
                Some(json!({ "name": format!("coll{}", u()), "schema": schema })),
                &["admin"],
            ),
            (
                "POST",
                "/v1/records".into(),
                Some(json!({ "collection": CUSTOMERS, "data": customer("Bo") })),
                &["clerk"],
            ),
            (
                "GET",
                format!("/v1/records/{id}"),
                None,
                &["officer", "clerk"],
            ),
            (
                "PUT",
                format!("/v1/records/{id}"),
                Some(json!({ "data": customer("Ada") })),
                &["clerk"],
            ),
            (
                "GET",
                "/v1/records".into(),
                None,
                &["admin", "officer", "clerk", "contractor"],
            ),
            (
                "GET",
                "/v1/audit/verify".into(),
                None,
                &["officer", "auditor"],
            ),
            (
                "GET",
                "/v1/audit/report".into(),
                None,
                &["officer", "auditor"],
            ),
            ("POST", "/v1/review".into(), None, &["officer"]),
        ]
    };
    let mut checked = 0;
    for role in roles {
        for (method, path, body, allowed) in cases(&mut uniq) {
            let a = srv.call(method, &path, Some(tok(role)), body.as_ref());
            if allowed.contains(&role) {
                assert!(
                    (200..300).contains(&a.status),
                    "{role} {method} {path} must be allowed: {a:?}"
                );
            } else {
                a.problem(403, "permission_denied");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 50);

    // Masked read: the SSN is not in the answer; responses are no-store.
    let get = srv.call(
        "GET",
        &format!("/v1/records/{id}"),
        Some(tok("officer")),
        None,
    );
    assert_eq!(get.status, 200);
    assert!(
        !get.text.contains(SSN) && !get.text.contains("123456789"),
        "masked: {}",
        get.text
    );
    assert_eq!(get.cache_control, "no-store");
    // Reveal with a reason (officer): the SSN in full, audited with the reason.
    let rev = srv.call(
        "POST",
        &format!("/v1/records/{id}/reveal"),
        Some(tok("officer")),
        Some(&json!({ "fields": ["ssn"], "reason": "customer called to verify identity" })),
    );
    assert_eq!(rev.status, 200, "{rev:?}");
    assert_eq!(rev.json()["fields"]["ssn"], SSN);
    assert_eq!(rev.cache_control, "no-store");
    // Without a reason: refused; a clerk without the grant: refused.
    srv.call(
        "POST",
        &format!("/v1/records/{id}/reveal"),
        Some(tok("officer")),
        Some(&json!({ "fields": ["ssn"], "reason": "" })),
    )
    .problem(422, "invalid_input");
    srv.call(
        "POST",
        &format!("/v1/records/{id}/reveal"),
        Some(tok("clerk")),
        Some(&json!({ "fields": ["ssn"], "reason": "curious" })),
    )
    .problem(403, "permission_denied");

    // Bad input: each a 4xx problem that echoes nothing submitted.
    let secret_ssn = "078-05-1120";
    let bad: Vec<(Answer, u16, &str)> = vec![
        (
            srv.raw("POST", "/v1/records", Some(tok("clerk")), Some((b"{\"collection\": \"customers\", \"data\": {\"ssn\": \"078-05-1120\"", "application/json"))),
            400,
            "invalid_input",
        ),
        (
            srv.call("POST", "/v1/records", Some(tok("clerk")), Some(&json!({ "collection": 42, "data": secret_ssn }))),
            400,
            "invalid_input",
        ),
        (
            srv.call("POST", "/v1/records", Some(tok("clerk")), Some(&json!({ "collection": CUSTOMERS, "data": customer("Cy"), secret_ssn: 1 }))),
            400,
            "invalid_input",
        ),
        (
            srv.call("POST", "/v1/records", Some(tok("clerk")), Some(&json!({ "collection": CUSTOMERS, "data": { "given_name": "Di", "family_name": "Q", "ssn": "000-12-3456" } }))),
            422,
            "invalid_input",
        ),
        (
            srv.call("POST", "/v1/records", Some(tok("clerk")), Some(&json!({ "collection": CUSTOMERS, "data": { "given_name": "Di", "family_name": "Q", "card_number": "4111111111111112" } }))),
            422,
            "invalid_input",
        ),
        (
            srv.raw("POST", "/v1/records", Some(tok("clerk")), Some((secret_ssn.as_bytes(), "text/plain"))),
            415,
            "invalid_input",
        ),
        (srv.call("GET", "/v1/records/078-05-1120", Some(tok("clerk")), None), 400, "invalid_input"),
        (
            srv.call("GET", &format!("/v1/records/{}", uuid::Uuid::now_v7()), Some(tok("clerk")), None),
            404,
            "not_found",
        ),
        (srv.call("GET", "/v1/records", None, None), 401, "session_invalid"),
        (srv.call("GET", "/v1/records", Some("pvt_078051120"), None), 401, "session_invalid"),
        (srv.call("GET", "/v1/no-such-thing", Some(tok("clerk")), None), 404, "not_found"),
        (srv.call("DELETE", "/v1/records", Some(tok("clerk")), None), 405, "method_not_allowed"),
        (
            srv.raw("POST", "/v1/records", Some(tok("clerk")), Some((&vec![b' '; 2 << 20], "application/json"))),
            413,
            "too_large",
        ),
    ];
    for (a, status, code) in &bad {
        a.problem(*status, code);
        for needle in [
            secret_ssn,
            "078051120",
            "0000-12-3456",
            "4111111111111112",
            "000-12-3456",
        ] {
            assert!(!a.text.contains(needle), "the problem echoes input: {a:?}");
        }
        assert!(!a.request_id.is_empty(), "request ID on every answer");
    }
    // Import over HTTP: one invalid row stores nothing (422, line numbers,
    // no value); a clean file stores every row.
    let bad_ssn = "000-12-9876";
    let lines = |third: &str| {
        format!(
            "{}\n{}\n{}\n",
            json!({ "subject": "C-9001", "given_name": "Ida", "family_name": "Q", "ssn": "123-45-6781" }),
            json!({ "subject": "C-9002", "given_name": "Jo", "family_name": "Q" }),
            json!({ "subject": "C-9003", "given_name": "Kit", "family_name": "Q", "ssn": third }),
        )
    };
    let refused = srv.raw(
        "POST",
        &format!("/v1/collections/{CUSTOMERS}/import"),
        Some(tok("clerk")),
        Some((lines(bad_ssn).as_bytes(), "text/plain")),
    );
    assert_eq!(refused.status, 422, "{refused:?}");
    let r = refused.json();
    assert_eq!(
        (r["imported"].as_u64(), r["rejected"].as_u64()),
        (Some(0), Some(1)),
        "{r}"
    );
    assert_eq!(r["errors"][0]["line"], 3);
    assert!(!refused.text.contains(bad_ssn) && !refused.text.contains("123-45-6781"));
    let stored = srv.raw(
        "POST",
        &format!("/v1/collections/{CUSTOMERS}/import"),
        Some(tok("clerk")),
        Some((lines("123-45-6782").as_bytes(), "text/plain")),
    );
    assert_eq!(stored.status, 200, "{stored:?}");
    assert_eq!(stored.json()["imported"], 3);
    let bad_with_status = |a: &Answer, status: &str| {
        let evs = srv
            .call(
                "GET",
                "/v1/audit/events?action=http.request",
                Some(tok("auditor")),
                None,
            )
            .json();
        evs["items"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["request_id"] == a.request_id.as_str() && e["targets"][1] == status)
    };
    assert!(
        bad_with_status(&refused, "422"),
        "the refused import is audited as 422"
    );

    // The server is still up.
    assert_eq!(srv.call("GET", "/healthz", None, None).status, 200);

    // REQ-MON-01: every request is audited with user, address, request ID and outcome.
    let events = srv.call(
        "GET",
        "/v1/audit/events?action=http.request",
        Some(tok("auditor")),
        None,
    );
    assert_eq!(events.status, 200);
    let events = events.json();
    let evs = events["items"].as_array().expect("events");
    let auth_events = srv
        .call(
            "GET",
            "/v1/audit/events?action=auth.token",
            Some(tok("auditor")),
            None,
        )
        .json();
    for (i, (a, status, _)) in bad.iter().enumerate() {
        // Issue 13: refusals before anyone authenticated (no token: #8,
        // unknown route: #10, a method no handler takes: #11) are counted
        // per source and minute, in one `http.refused` event each minute;
        // a refused token (#9) is audited by its `auth.token` event alone.
        if matches!(i, 8 | 10 | 11) {
            assert!(
                !evs.iter().any(|e| e["request_id"] == a.request_id.as_str()),
                "request {i} is counted, not audited alone"
            );
            continue;
        }
        if i == 9 {
            let ev = auth_events["items"]
                .as_array()
                .expect("events")
                .iter()
                .find(|e| e["request_id"] == a.request_id.as_str())
                .unwrap_or_else(|| panic!("refused token {} not audited", a.request_id));
            assert_eq!(ev["outcome"], "denied");
            assert!(
                !evs.iter().any(|e| e["request_id"] == a.request_id.as_str()),
                "a refused token writes one event, not two"
            );
            continue;
        }
        let ev = evs
            .iter()
            .find(|e| e["request_id"] == a.request_id.as_str())
            .unwrap_or_else(|| panic!("request {} not audited", a.request_id));
        assert_eq!(ev["source"], "127.0.0.1");
        assert_eq!(ev["targets"][1], status.to_string());
        assert_ne!(ev["outcome"], "success");
    }
    // A successful request is audited by its operation's own events, which
    // carry the user, the address and the request ID.
    let all = srv
        .call("GET", "/v1/audit/events", Some(tok("auditor")), None)
        .json();
    let all = all["items"].as_array().expect("events");
    let ev = all
        .iter()
        .find(|e| e["request_id"] == rev.request_id.as_str() && e["action"] == "record.reveal")
        .expect("reveal request audited");
    assert_eq!(ev["outcome"], "success");
    assert_eq!(ev["source"], "127.0.0.1");
    assert!(
        ev["actor"].is_string(),
        "authenticated requests name the user"
    );
    // Every answered request is in the trail under its request ID.
    for a in [&get, &rev, &put] {
        assert!(
            all.iter().any(|e| e["request_id"] == a.request_id.as_str()),
            "request {} not audited",
            a.request_id
        );
    }
    let reveal_ev = srv.call(
        "GET",
        "/v1/audit/events?action=record.reveal",
        Some(tok("auditor")),
        None,
    );
    assert!(
        reveal_ev
            .text
            .contains("customer called to verify identity"),
        "reveal audited with its reason"
    );
    // No personal information in the audit trail's answers.
    assert!(!events.to_string().contains(SSN) && !events.to_string().contains(secret_ssn));

    let (status, dir, _keep) = srv.stop();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
    // The audit trail verifies after the server's run.
    let vault = Vault::open(
        &dir,
        &SecretString::from(PASSPHRASE),
        vault_core::vault::OpenOptions::default(),
    )
    .expect("reopen");
    let s = common::login(&vault, "auditor");
    assert!(vault.audit_verify(&s).expect("verify").ok());
    vault.close().expect("close");
}

// ----- REQ-AUTH-05, REQ-WISP-07, token expiry, login rate limit ----------------------

#[test]
fn lockout_disable_and_expiry_over_http() {
    let srv = start(&["--logins-per-minute", "10000", "--token-ttl-secs", "2"]);
    // Per-source throttling before the per-account lock: from one address,
    // the first three wrong passwords answer 401; the next attempt, right
    // or wrong, is refused with 429 and Retry-After before any password is
    // checked, and counts against no account.
    for i in 0..3 {
        srv.login("auditor", &format!("wrong-password-attempt-{i}"))
            .problem(401, "auth_failed");
    }
    let throttled = srv.login("auditor", "wrong-password-attempt-3");
    throttled.problem(429, "login_throttled");
    assert_eq!(throttled.retry_after, "1", "{throttled:?}");
    // The same for an unknown username: nothing tells accounts apart.
    srv.login("nobody-at-all", "wrong-password-attempt-4")
        .problem(429, "login_throttled");
    // Waiting out each backoff lets one more guess through (1 s, then 2 s):
    // five checked failures from this address, which used to lock the
    // account, and many throttled ones.
    for (i, wait) in [(5, 1100), (6, 2100)] {
        std::thread::sleep(Duration::from_millis(wait));
        srv.login("auditor", &format!("wrong-password-attempt-{i}"))
            .problem(401, "auth_failed");
        srv.login("auditor", &format!("wrong-password-attempt-{i}b"))
            .problem(429, "login_throttled");
    }
    // The owner, once the backoff has passed, is not locked out.
    std::thread::sleep(Duration::from_millis(4100));
    assert_eq!(srv.login("auditor", USERS[3].2).status, 201);
    let officer = srv.token("officer");
    let ev = srv
        .call("GET", "/v1/audit/events?action=auth.", Some(&officer), None)
        .json();
    let evs = ev["items"].as_array().expect("events");
    let count = |code: &str| {
        evs.iter()
            .filter(|e| e["action"] == "auth.login" && e["code"] == code && e["channel"] == "http")
            .count()
    };
    assert_eq!(count("auth_failed"), 5, "each checked failure audited");
    assert_eq!(
        count("login_throttled"),
        4,
        "each throttled attempt audited"
    );
    assert!(
        !evs.iter().any(|e| e["action"] == "auth.lockout"),
        "one address cannot lock the account"
    );
    // Tokens live 2 s here: taken after the waits above.
    let admin = srv.token("admin");
    let clerk = srv.token("clerk");
    // An admin's unlock still answers (nothing to lift).
    assert_eq!(
        srv.call("POST", "/v1/users/auditor/unlock", Some(&admin), None)
            .status,
        200
    );

    // REQ-WISP-07: disabling the clerk stops their token at the next request.
    assert_eq!(
        srv.call("GET", "/v1/whoami", Some(&clerk), None).status,
        200
    );
    assert_eq!(
        srv.call("POST", "/v1/users/clerk/disable", Some(&admin), None)
            .status,
        200
    );
    srv.call("GET", "/v1/whoami", Some(&clerk), None)
        .problem(401, "session_invalid");
    srv.login("clerk", USERS[2].2)
        .problem(403, "account_disabled");

    // Logout revokes; expiry ends a token.
    let t = srv.token("officer");
    assert_eq!(
        srv.call("DELETE", "/v1/sessions/current", Some(&t), None)
            .status,
        200
    );
    srv.call("GET", "/v1/whoami", Some(&t), None)
        .problem(401, "session_invalid");
    std::thread::sleep(Duration::from_millis(2500));
    srv.call("GET", "/v1/whoami", Some(&admin), None)
        .problem(401, "session_invalid");
    drop(srv);

    // Per-address login rate limit in front of the lock-out (default policy).
    let srv = start(&["--logins-per-minute", "6"]);
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(
            srv.login("officer", &format!("guess-{i}-wrong-password"))
                .status,
        );
    }
    assert!(statuses.contains(&429), "rate limited: {statuses:?}");
    let limited = srv.login("officer", "another-wrong-guess-here");
    let p = limited.problem(429, "rate_limited");
    assert!(p["detail"].as_str().is_some());
}

// ----- contractor scope, disposal, certificate verified offline --------------------------

#[test]
fn contractor_disposes_in_scope_and_the_certificate_verifies_offline() {
    let srv = start(&["--logins-per-minute", "10000"]);
    let admin = srv.token("admin");
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let contractor = srv.token("contractor");
    // A second collection outside the contractor's scope.
    let schema = json!({ "purpose": "marketing", "fields": [
        { "name": "given_name", "type": "given_name", "required": true },
        { "name": "ssn", "type": "ssn" } ] });
    assert_eq!(
        srv.call(
            "POST",
            "/v1/collections",
            Some(&admin),
            Some(&json!({ "name": "leads", "schema": schema }))
        )
        .status,
        201
    );
    let put = |coll: &str, data: Value| -> String {
        let a = srv.call(
            "POST",
            "/v1/records",
            Some(&clerk),
            Some(&json!({ "collection": coll, "data": data })),
        );
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["record_id"].as_str().expect("id").to_owned()
    };
    let in_scope = put(CUSTOMERS, customer("Eve"));
    let kept = put(CUSTOMERS, customer("Fay"));
    let out_of_scope = put("leads", json!({ "given_name": "Gus", "ssn": SSN }));

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
    // The contractor sees IDs in scope but never contents.
    srv.call(
        "GET",
        &format!("/v1/records/{in_scope}"),
        Some(&contractor),
        None,
    )
    .problem(403, "permission_denied");
    let listed = srv
        .call("GET", "/v1/records", Some(&contractor), None)
        .json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["record_id"].as_str())
        .collect();
    assert!(
        ids.contains(&in_scope.as_str()) && !ids.contains(&out_of_scope.as_str()),
        "{ids:?}"
    );
    // Out of scope: refused.
    srv.call(
        "POST",
        "/v1/disposals",
        Some(&contractor),
        Some(
            &json!({ "scope": "record", "record": out_of_scope, "data_owner": "Quimby Hardware" }),
        ),
    )
    .problem(403, "permission_denied");
    // In scope: disposed, with a certificate.
    let d = srv.call("POST", "/v1/disposals", Some(&contractor),
                     Some(&json!({ "scope": "record", "record": in_scope, "data_owner": "Quimby Hardware",
                                   "contractor_org": "Shred-It Right LLC", "contract_ref": "PO-7" })));
    assert_eq!(d.status, 200, "{d:?}");
    let cert_id = d.json()["certificate_id"]
        .as_str()
        .expect("certificate")
        .to_owned();
    // The disposed record answers 410 with its certificate; the others still read.
    let gone = srv.call(
        "GET",
        &format!("/v1/records/{in_scope}"),
        Some(&officer),
        None,
    );
    let p = gone.problem(410, "disposed");
    assert_eq!(p["certificate"], cert_id.as_str());
    assert_eq!(
        srv.call("GET", &format!("/v1/records/{kept}"), Some(&officer), None)
            .status,
        200
    );
    // The officer validates (a different user from the operator).
    assert_eq!(
        srv.call(
            "POST",
            &format!("/v1/certificates/{cert_id}/validate"),
            Some(&officer),
            Some(&json!({ "title": "Security officer" }))
        )
        .status,
        200
    );
    // Download the certificate and the public key; verify offline with the CLI, no vault.
    let file = srv.call(
        "GET",
        &format!("/v1/certificates/{cert_id}/file"),
        Some(&officer),
        None,
    );
    assert_eq!(file.status, 200);
    let keys = srv.call("GET", "/v1/keys", None, None).json();
    let html = srv.call(
        "GET",
        &format!("/v1/certificates/{cert_id}/html"),
        Some(&officer),
        None,
    );
    assert!(html.content_type.starts_with("text/html") && html.text.contains(&cert_id));
    let work = tempfile::tempdir().expect("tempdir");
    let cert_path = work.path().join("cert.json");
    let key_path = work.path().join("cert.pem");
    std::fs::write(&cert_path, &file.text).expect("write cert");
    std::fs::write(&key_path, keys["certificate_key"].as_str().expect("pem")).expect("write key");
    let verify = |cert: &Path| {
        Command::new(pivault_bin())
            .args(["certificate", "verify"])
            .arg(cert)
            .arg("--key")
            .arg(&key_path)
            .env_remove("PIVAULT_DIR")
            .output()
            .expect("pivault certificate verify")
    };
    let ok = verify(&cert_path);
    assert!(
        ok.status.success(),
        "offline verify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Control: one changed byte fails.
    let tampered = work.path().join("tampered.json");
    std::fs::write(
        &tampered,
        file.text.replacen("Quimby Hardware", "Quimby Hardwarf", 1),
    )
    .expect("write");
    assert!(
        !verify(&tampered).status.success(),
        "a changed certificate must not verify"
    );
    let _ = srv.cert.exists();
}

// ----- the same CLI scenario, local and through the server ------------------------------

// ----- DESIGN §4.2: disposals arriving together share one batch ---------------

/// Disposes of each record in its own concurrent request; the answers.
fn dispose_concurrently(srv: &Server, token: &str, ids: &[String]) -> Vec<Answer> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                s.spawn(move || {
                    srv.call(
                        "POST",
                        "/v1/disposals",
                        Some(token),
                        Some(&json!({ "scope": "record", "record": id, "data_owner": "Quimby Bakery" })),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    })
}

#[test]
fn one_record_disposals_arriving_together_share_one_batch() {
    let srv = start(&[
        "--logins-per-minute",
        "10000",
        "--disposal-window-ms",
        "500",
    ]);
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let put = |given: &str| -> String {
        let a = srv.call(
            "POST",
            "/v1/records",
            Some(&clerk),
            Some(&json!({ "collection": CUSTOMERS, "data": customer(given) })),
        );
        assert_eq!(a.status, 201, "{a:?}");
        a.json()["record_id"].as_str().expect("id").to_owned()
    };
    let live: Vec<String> = ["Ann", "Bea", "Cal", "Dot", "Eli", "Flo"]
        .iter()
        .map(|g| put(g))
        .collect();
    let held = put("Hal");
    assert_eq!(
        srv.call(
            "POST",
            "/v1/holds",
            Some(&officer),
            Some(&json!({ "record": held, "reason": "pending litigation" }))
        )
        .status,
        200
    );
    let unknown = vault_core::ids::RecordId::new().to_string();
    let mut ids = live.clone();
    ids.push(held.clone());
    ids.push(unknown.clone());

    let answers = dispose_concurrently(&srv, &officer, &ids);
    // Each refused request keeps its own answer, as if it had been alone.
    answers[6].problem(409, "legal_hold");
    answers[7].problem(404, "not_found");
    // The others share one batch and one certificate covering all of them.
    let mut certificates = std::collections::BTreeSet::new();
    for a in &answers[..6] {
        assert_eq!(a.status, 200, "{a:?}");
        let o = a.json();
        assert_eq!(o["records"], 6, "one shared batch: {o}");
        certificates.insert(
            o["certificate_id"]
                .as_str()
                .expect("certificate")
                .to_owned(),
        );
    }
    assert_eq!(certificates.len(), 1, "one certificate: {certificates:?}");
    let cert = certificates.pop_first().expect("certificate");
    let doc = srv
        .call(
            "GET",
            &format!("/v1/certificates/{cert}/file"),
            Some(&officer),
            None,
        )
        .json();
    let text = doc.to_string();
    for id in &live {
        assert!(text.contains(id.as_str()), "the certificate names {id}");
        srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None)
            .problem(410, "disposed");
    }
    assert!(
        !text.contains(held.as_str()),
        "the held record is not on it"
    );
    // The held record is untouched.
    assert_eq!(
        srv.call("GET", &format!("/v1/records/{held}"), Some(&clerk), None)
            .status,
        200
    );
    // Every request is in the audit trail under its own request ID, with
    // its final outcome.
    let auditor = srv.token("auditor");
    let events = srv
        .call("GET", "/v1/audit/events", Some(&auditor), None)
        .json();
    let events = events["items"].as_array().expect("events");
    for a in &answers {
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["request_id"] == a.request_id.as_str())
            .collect();
        assert!(!mine.is_empty(), "request {} audited", a.request_id);
        assert!(
            mine.iter()
                .all(|e| e["source"] == "127.0.0.1" && e["actor"].is_string())
        );
        let last = mine.last().expect("event");
        let ok = last["outcome"] == "success";
        assert_eq!(ok, a.status == 200, "final outcome of {a:?}: {last}");
    }
    drop(srv);

    // Control: with no window, the same concurrent requests are separate batches.
    let srv = start(&["--logins-per-minute", "10000", "--disposal-window-ms", "0"]);
    let clerk = srv.token("clerk");
    let officer = srv.token("officer");
    let ids: Vec<String> = ["Gil", "Hob", "Ida"]
        .iter()
        .map(|g| {
            let a = srv.call(
                "POST",
                "/v1/records",
                Some(&clerk),
                Some(&json!({ "collection": CUSTOMERS, "data": customer(g) })),
            );
            a.json()["record_id"].as_str().expect("id").to_owned()
        })
        .collect();
    let answers = dispose_concurrently(&srv, &officer, &ids);
    let certificates: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{a:?}");
            assert_eq!(a.json()["records"], 1);
            a.json()["certificate_id"]
                .as_str()
                .expect("certificate")
                .to_owned()
        })
        .collect();
    assert_eq!(
        certificates.len(),
        3,
        "one batch per request without a window"
    );
}

/// Replaces what legitimately differs between two runs (IDs, times, audit
/// counts, durations) so that the rest can be compared exactly.
fn normalize(v: &Value) -> Value {
    match v {
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => json!("<id>"),
        Value::String(s) if s.parse::<jiff::Timestamp>().is_ok() => json!("<time>"),
        Value::String(s) => json!(normalize_text(s)),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "duration_ms"
                        | "events"
                        | "checkpoints"
                        | "last_checkpoint_seq"
                        | "anchored_seq"
                        | "seq"
                        | "from"
                        | "to" => json!(0),
                        // A fingerprint of record IDs, which differ.
                        "plan" if v.is_string() => json!("<plan>"),
                        _ => normalize(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// UUIDs and RFC 3339 times in human output, and the audit counts.
fn normalize_text(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(k, c)| {
                if [8, 13, 18, 23].contains(&k) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
            out.push_str("<id>");
            i += 36;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    if let Some(rest) = out.strip_prefix("audit trail OK: ") {
        let _ = rest;
        return "audit trail OK".into();
    }
    out
}

/// The scenario: put, read masked, reveal, refused reveal, correct, list,
/// refused read, bad input, unknown ID, dispose, read a disposed record,
/// verify the audit trail. Returns, per step: exit code, normalized
/// stdout (human, then `--json`).
fn scenario(
    input: &Path,
    run: &dyn Fn(Option<&str>, &[&str]) -> Run,
) -> Vec<(String, i32, String)> {
    let rec = input.join("rec.json");
    let rec2 = input.join("rec2.json");
    let bad = input.join("bad.json");
    // examples/customers.schema.json names the card field `card`.
    let body = |given: &str| json!({ "given_name": given, "family_name": "Quimby", "ssn": SSN, "card": CARD });
    std::fs::write(&rec, body("Ada").to_string()).expect("write");
    std::fs::write(&rec2, body("Adah").to_string()).expect("write");
    std::fs::write(&bad, "{\"given_name\": \"Ada\", \"ssn\": \"078-05-11").expect("write");
    let (rec, rec2, bad) = (
        rec.to_str().unwrap(),
        rec2.to_str().unwrap(),
        bad.to_str().unwrap(),
    );
    let put = run(
        Some("clerk"),
        &["--json", "record", "put", CUSTOMERS, "--data", rec],
    );
    put.ok();
    let id = put.json()["record_id"].as_str().expect("id").to_owned();
    let missing = uuid::Uuid::now_v7().to_string();
    // A list for `dispose from`: two records (one named twice), a comment.
    let listed: Vec<String> = (0..2)
        .map(|_| {
            let r = run(
                Some("clerk"),
                &["--json", "record", "put", CUSTOMERS, "--data", rec],
            );
            r.ok();
            r.json()["record_id"].as_str().expect("id").to_owned()
        })
        .collect();
    let list = input.join("dispose.list");
    std::fs::write(
        &list,
        format!(
            "# to destroy\n{}\n{}\n{}\n",
            listed[0], listed[1], listed[0]
        ),
    )
    .expect("write");
    let unknown_list = input.join("unknown.list");
    std::fs::write(&unknown_list, format!("{}\n{missing}\n", listed[0])).expect("write");
    let (list, unknown_list) = (list.to_str().unwrap(), unknown_list.to_str().unwrap());

    let steps: Vec<(&str, Option<&str>, Vec<&str>)> = vec![
        ("read masked", Some("clerk"), vec!["record", "get", &id]),
        (
            "read masked json",
            Some("clerk"),
            vec!["--json", "record", "get", &id],
        ),
        (
            "reveal",
            Some("officer"),
            vec![
                "record",
                "get",
                &id,
                "--reveal",
                "ssn",
                "--reason",
                "identity check by phone",
            ],
        ),
        (
            "clerk reveal refused",
            Some("clerk"),
            vec![
                "record", "get", &id, "--reveal", "ssn", "--reason", "curious",
            ],
        ),
        (
            "update",
            Some("clerk"),
            vec!["record", "update", &id, "--data", rec2],
        ),
        (
            "list",
            Some("clerk"),
            vec!["record", "list", "--collection", CUSTOMERS],
        ),
        (
            "list json",
            Some("officer"),
            vec!["--json", "record", "list"],
        ),
        (
            "auditor read refused",
            Some("auditor"),
            vec!["record", "get", &id],
        ),
        (
            "bad json",
            Some("clerk"),
            vec!["record", "put", CUSTOMERS, "--data", bad],
        ),
        ("unknown id", Some("clerk"), vec!["record", "get", &missing]),
        ("users", Some("admin"), vec!["user", "list"]),
        (
            "dispose",
            Some("officer"),
            vec![
                "--json",
                "dispose",
                "record",
                &id,
                "--yes",
                "--data-owner",
                "Quimby Hardware",
            ],
        ),
        ("read disposed", Some("clerk"), vec!["record", "get", &id]),
        (
            "dispose from a list with an unknown ID: nothing disposed",
            Some("officer"),
            vec!["dispose", "from", unknown_list, "--yes"],
        ),
        (
            "dispose from a list: one batch, one certificate",
            Some("officer"),
            vec![
                "--json",
                "dispose",
                "from",
                list,
                "--yes",
                "--data-owner",
                "Quimby Hardware",
            ],
        ),
        (
            "read a listed record",
            Some("clerk"),
            vec!["record", "get", &listed[1]],
        ),
        (
            "the same list again: nothing left to dispose",
            Some("officer"),
            vec!["--json", "dispose", "from", list, "--yes"],
        ),
        ("verify", Some("auditor"), vec!["audit", "verify"]),
        (
            "verify json",
            Some("auditor"),
            vec!["--json", "audit", "verify"],
        ),
    ];
    steps
        .into_iter()
        .map(|(name, user, args)| {
            let r = run(user, &args);
            let out = if args[0] == "--json" {
                let v = serde_json::from_str(r.stdout.trim()).unwrap_or(Value::Null);
                if r.code == 0 {
                    crate::documents::check_any(&v, &format!("step {name:?}"));
                }
                normalize(&v).to_string()
            } else {
                normalize_text(&r.stdout)
            };
            (name.to_owned(), r.code, out)
        })
        .collect()
}

#[test]
fn the_same_cli_scenario_runs_locally_and_through_the_server() {
    let local = CliVault::standard();
    // The server serves a copy of the same starting vault.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("vault");
    cli::copy_tree(&local.dir, &copy);
    let srv = start_on(
        dir,
        copy,
        cli::PASSPHRASE,
        &["--logins-per-minute", "10000"],
    );
    let home = tempfile::tempdir().expect("home");

    let remote = |user: Option<&str>, args: &[&str]| -> Run {
        // The local command's user and password, but the server instead of
        // the vault directory and its passphrase.
        let mut c = local.user_command(user, args);
        c.env_remove("PIVAULT_DIR")
            .env_remove("PIVAULT_PASSPHRASE_FILE")
            .env_remove("PIVAULT_TOKEN_FILE")
            .env_remove("XDG_CONFIG_HOME")
            .env("PIVAULT_SERVER", &srv.base)
            .env("PIVAULT_CA_CERT", &srv.cert)
            .env("HOME", home.path());
        local.exec(c, &args.join(" "))
    };
    // `pivault login` keeps each user's token in a 0600 file.
    for (u, _, _) in cli::USERS {
        let r = remote(Some(u), &["--json", "login"]);
        r.ok();
        let f = PathBuf::from(r.json()["token_file"].as_str().expect("token file"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&f).expect("token file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "token file mode");
    }

    let input = local.input.clone();
    let here = scenario(&input, &|u, a| local.run(u, a));
    let there = scenario(&input, &remote);
    assert_eq!(here.len(), there.len());
    let expected_codes = [0, 0, 0, 5, 0, 0, 0, 5, 3, 6, 0, 0, 7, 6, 0, 7, 0, 0, 0];
    let batch: Value = serde_json::from_str(
        &here
            .iter()
            .find(|s| s.0.starts_with("dispose from a list:"))
            .expect("step")
            .2,
    )
    .expect("JSON");
    assert_eq!(
        batch["records"], 2,
        "the list's two records in one batch: {batch}"
    );
    assert_eq!(batch["certificate_id"], "<id>", "one certificate: {batch}");
    let again: Value = serde_json::from_str(
        &here
            .iter()
            .find(|s| s.0.starts_with("the same list again"))
            .expect("step")
            .2,
    )
    .expect("JSON");
    assert_eq!(again["records"], 0, "{again}");
    for ((a, b), want) in here.iter().zip(&there).zip(expected_codes) {
        assert_eq!(a.1, want, "local step {}: {a:?}", a.0);
        assert_eq!(
            a, b,
            "step {} differs between the local vault and the server",
            a.0
        );
    }
    // Logged-out tokens stop working.
    remote(Some("clerk"), &["logout"]).ok();
    let r = remote(Some("clerk"), &["--json", "record", "list"]);
    r.ok(); // no token file any more: logs in with the password for this one command
    // Secrets never appear in any output.
    let t = String::from_utf8_lossy(&local.transcript()).into_owned();
    for (_, _, pw) in cli::USERS {
        assert!(!t.contains(pw), "a password was printed");
    }
}

// ----- issue 10: the audit trail anchored outside its directory ----------------------

/// `POST /v1/audit/anchor` exports the signed head and a time-stamp request;
/// `POST /v1/audit/timestamp` refuses what is no response for an exported
/// head (422; the openssl round trip is in `audit_anchor.rs`); and
/// `--checkpoint-secs` signs a checkpoint of a quiet server's latest events.
#[test]
fn audit_anchor_over_http_and_the_time_based_checkpoint() {
    let srv = start(&["--checkpoint-secs", "1"]);
    let officer = srv.token("officer");
    let clerk = srv.token("clerk");
    let a = srv.call("POST", "/v1/audit/anchor", Some(&officer), None);
    assert_eq!(a.status, 200, "{a:?}");
    let v = a.json();
    let head: Value = serde_json::from_str(v["head"].as_str().unwrap()).unwrap();
    assert_eq!(head["seq"], v["seq"]);
    let request = hex::decode(v["request_hex"].as_str().unwrap()).unwrap();
    assert_eq!(request[0], 0x30, "a DER TimeStampReq");
    srv.call("POST", "/v1/audit/anchor", Some(&clerk), None)
        .problem(403, "permission_denied");
    let not_for_us = vault_core::timestamp::request(&[3u8; 32], 1);
    srv.call(
        "POST",
        "/v1/audit/timestamp",
        Some(&officer),
        Some(&serde_json::json!({ "tsr_hex": hex::encode(not_for_us) })),
    )
    .problem(422, "invalid_input");

    // Events after the anchor, then quiet: the timer covers them.
    srv.call("GET", "/v1/whoami", Some(&officer), None);
    let cp = srv.vault_dir.join("audit").join("checkpoints.log");
    let count = || std::fs::read_to_string(&cp).unwrap().lines().count();
    let before = count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() == before {
        assert!(Instant::now() < deadline, "no time-based checkpoint");
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = srv.call("GET", "/v1/audit/verify", Some(&officer), None);
    assert_eq!(r.json()["ok"], true, "{}", r.text);
    assert!(r.json()["anchored_seq"].as_u64().unwrap() > v["seq"].as_u64().unwrap());
    let (status, _, _keep) = srv.stop();
    assert!(status.success());
}

// ----- issue 10: own password with the current one, two-person rule over HTTP ------

#[test]
fn own_password_needs_the_current_one_and_approvals_over_http() {
    let srv = start(&["--logins-per-minute", "10000"]);
    let clerk = srv.token("clerk");
    let admin = srv.token("admin");
    let new = "Http-Fresh-Bittern-Pass-62";
    // Your own password: without the current one, refused; a wrong one, 401.
    srv.call(
        "PUT",
        "/v1/users/clerk/password",
        Some(&clerk),
        Some(&json!({ "password": new })),
    )
    .problem(422, "invalid_input");
    srv.call(
        "PUT",
        "/v1/users/clerk/password",
        Some(&clerk),
        Some(&json!({ "password": new, "current_password": "Not-The-Current-One-7" })),
    )
    .problem(401, "auth_failed");
    assert_eq!(
        srv.call(
            "PUT",
            "/v1/users/clerk/password",
            Some(&clerk),
            Some(&json!({ "password": new, "current_password": USERS[2].2 })),
        )
        .status,
        200
    );
    assert_eq!(srv.login("clerk", new).status, 201);
    // An admin's reset of the officer's password waits for a second officer.
    let p = srv
        .call(
            "PUT",
            "/v1/users/officer/password",
            Some(&admin),
            Some(&json!({ "password": "Http-Reset-Gannet-Pass-35" })),
        )
        .problem(409, "approval_required");
    let detail = p["detail"].as_str().unwrap_or_default().to_owned();
    let officer = srv.token("officer");
    let list = srv
        .call("GET", "/v1/approvals", Some(&officer), None)
        .json();
    let reqs = list["items"].as_array().expect("requests");
    assert_eq!(reqs.len(), 1, "{list}");
    let id = reqs[0]["request"].as_str().expect("request id").to_owned();
    assert!(detail.contains(&id), "{detail}");
    assert_eq!(reqs[0]["kind"], "password_reset");
    // The requesting admin cannot approve.
    srv.call(
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        Some(&admin),
        None,
    )
    .problem(403, "permission_denied");
    assert_eq!(
        srv.call(
            "POST",
            &format!("/v1/approvals/{id}/reject"),
            Some(&officer),
            None
        )
        .status,
        200
    );
    assert_eq!(srv.login("officer", USERS[1].2).status, 201);
}
