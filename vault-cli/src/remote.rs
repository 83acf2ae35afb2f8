//! `pivault` through a running `pivault-server`: over its local Unix-domain
//! socket (staff on the vault's machine, the default) or `--server URL`
//! (HTTPS). Each command becomes one or two HTTP calls whose
//! answers are the documents `--json` prints locally, rendered by the same
//! functions ([`crate::output`]), so output and exit codes match.
//!
//! A token from `pivault login` is kept in a file readable only by you
//! (mode 0600); without one, a command logs in with your password and logs
//! out when done, like a local command.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use vault_core::certificate::{self, Certificate};
use vault_core::ed25519_dalek as ed25519_key;
use vault_core::ids::{CertificateId, DisposalId, RecordId};
use vault_core::secret::SecretString;
use vault_core::vault::ImportFormat;

use crate::output::{self, Out};
use crate::{
    AuditCmd, CertFormat, CertificateCmd, Cli, CollectionCmd, Command, ContractorCmd, DisposalCmd,
    DisposeCmd, DisposeOpts, HoldCmd, KeysCmd, RecordCmd, RetentionCmd, SubjectCmd, UserCmd,
    dispose, exit,
};

/// An error answered by the server: its stable code and message.
#[derive(Debug)]
pub struct RemoteError {
    /// The problem's `code` (the same codes as local errors).
    pub code: String,
    /// The problem's `detail`.
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

/// The server could not be reached (no request was answered).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// How requests reach the server.
enum Transport {
    /// HTTPS (or plain HTTP to loopback) with ureq.
    Https { agent: ureq::Agent, base: String },
    /// Plain HTTP/1.1 over the server's local Unix-domain socket: no TLS to
    /// set up, and the server learns the caller's OS user from the kernel.
    Local(PathBuf),
}

/// Where a command goes: `--server URL`, or the local socket.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `--server URL`.
    Url(String),
    /// The server's Unix-domain socket.
    Socket(PathBuf),
}

impl Endpoint {
    /// The name the login token is kept under.
    fn token_key(&self) -> String {
        match self {
            Endpoint::Url(u) => u.clone(),
            Endpoint::Socket(p) => format!("unix://{}", p.display()),
        }
    }
}

/// A connection to a server.
pub struct Remote {
    transport: Transport,
    token: Option<SecretString>,
    /// Calls answered without a problem so far (a command that failed on
    /// its first call changed nothing and may be run again).
    answered: std::cell::Cell<u32>,
    /// Where the login token in use is kept (`pivault login`), if it is.
    kept_token: Option<PathBuf>,
}

impl Remote {
    fn new(endpoint: &Endpoint, ca_cert: Option<&Path>) -> anyhow::Result<Remote> {
        let url = match endpoint {
            Endpoint::Socket(p) => {
                return Ok(Remote {
                    transport: Transport::Local(p.clone()),
                    token: None,
                    answered: Default::default(),
                    kept_token: None,
                });
            }
            Endpoint::Url(u) => u,
        };
        use ureq::tls::{Certificate as Pem, RootCerts, TlsConfig};
        let base = url.trim_end_matches('/').to_owned();
        if let Err(why) = check_server_url(&base) {
            bail!(
                "--server must be an https:// URL (plain http only to 127.0.0.1 or localhost): {why}"
            );
        }
        let mut tls = TlsConfig::builder();
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let cert = Pem::from_pem(&pem)
                .map_err(|_| anyhow!("{} is not a PEM certificate", ca.display()))?
                .to_owned();
            tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![cert])));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Ok(Remote {
            transport: Transport::Https { agent, base },
            token: None,
            answered: Default::default(),
            kept_token: None,
        })
    }

    /// One call; a problem answer becomes a [`RemoteError`].
    fn text(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> anyhow::Result<(u16, String)> {
        let auth = self
            .token
            .as_ref()
            .map(|t| SecretString::new(format!("Bearer {}", t.expose())));
        let (status, content_type, text) = match &self.transport {
            Transport::Https { agent, base } => {
                https_call(agent, &format!("{base}{path}"), method, auth.as_ref(), body)?
            }
            Transport::Local(socket) => {
                use crate::local::{Failure, call, explain};
                call(socket, method, path, auth.as_ref(), body).map_err(|f| match f {
                    Failure::Connect(e) => anyhow!(Unreachable(explain(socket, &e))),
                    Failure::Exchange(e) => anyhow!(vault_core::Error::Io(format!(
                        "the connection to pivault-server on {} broke off ({e}): \
                         the command may have been carried out; check before retrying",
                        socket.display()
                    ))),
                })?
            }
        };
        let problem = content_type.starts_with("application/problem+json");
        if problem || (status >= 400 && status != 422) {
            let p: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(RemoteError {
                code: p["code"].as_str().unwrap_or("internal").to_owned(),
                message: p["detail"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("the server answered HTTP {status}")),
            }
            .into());
        }
        self.answered.set(self.answered.get() + 1);
        Ok((status, text))
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (_, text) = self.text(
            method,
            path,
            body.map(|b| (b.to_string().into_bytes(), "application/json")),
        )?;
        serde_json::from_str(&text).map_err(|_| anyhow!("the server's answer is not JSON"))
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, None)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call("POST", path, Some(body))
    }
}

/// One HTTPS call with ureq: status, content type and body.
fn https_call(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    auth: Option<&SecretString>,
    body: Option<(Vec<u8>, &str)>,
) -> anyhow::Result<(u16, String, String)> {
    let resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            if let Some(a) = auth {
                r = r.header("Authorization", a.expose());
            }
            r.call()
        }
        _ => {
            let mut r = match method {
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                _ => agent.post(url),
            };
            if let Some(a) = auth {
                r = r.header("Authorization", a.expose());
            }
            match body {
                Some((b, ct)) => r.header("Content-Type", ct).send(&b[..]),
                None => r.send_empty(),
            }
        }
    };
    let mut resp = resp.map_err(|e| {
        // Failures before any request was sent are "unreachable" (exit 17,
        // nothing done); a broken exchange may have been carried out.
        let before_sending = match &e {
            ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_) => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
            _ => false,
        } || {
            // A TLS handshake failure (ureq reports rustls's as I/O) comes
            // before the request.
            let t = e.to_string();
            t.contains("invalid peer certificate") || t.contains("not valid for name")
        };
        if before_sending && e.to_string().contains("not valid for name") {
            anyhow!(Unreachable(format!(
                "the server's certificate does not name the host in --server ({e}): use a name \
                 it was issued for, or give the server a certificate that covers this one \
                 (pivault-server --self-signed --tls-name HOST, or one from your CA)"
            )))
        } else if before_sending {
            anyhow!(Unreachable(format!("cannot reach the server: {e}")))
        } else {
            anyhow!(vault_core::Error::Io(format!(
                "the exchange with the server broke off ({e}): \
                 the command may have been carried out; check before retrying"
            )))
        }
    })?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .map_err(|e| anyhow!(vault_core::Error::Io(format!("reading the answer: {e}"))))?;
    Ok((status, content_type, text))
}

/// Checks a `--server` URL by parsing its authority rather than matching a
/// prefix: `http://127.0.0.1:1@otherhost` starts like a loopback URL but
/// sends the request (and the password) in clear to `otherhost`, with
/// `127.0.0.1:1` as user information. So: scheme `https` or `http`, no user
/// information, a host name or IP literal and an optional numeric port; and
/// plain `http` only when the host is loopback (`localhost`, `127.0.0.0/8`,
/// `[::1]`). The error names what is wrong, never the URL (it could hold a
/// password).
fn check_server_url(url: &str) -> Result<(), &'static str> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err("the scheme must be https"),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err("user information (user:password@) is not allowed in the URL");
    }
    if authority.contains('%') || authority.contains('\\') {
        return Err("the host is malformed");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("the host is malformed")?;
        h.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "the host is malformed")?;
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or("the host is malformed")?)
        };
        (h, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || p.parse::<u16>().is_err())
    {
        return Err("the port is not a number");
    }
    let host_ok = host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if !host_ok {
        return Err("the host is malformed");
    }
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !https && !loopback {
        return Err("plain http is allowed only to a loopback host");
    }
    Ok(())
}

/// Where the token of `user` on `server` is kept.
fn token_file(server: &str, user: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PIVAULT_TOKEN_FILE") {
        return Ok(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| anyhow!("set HOME or PIVAULT_TOKEN_FILE to keep a login token"))?;
    let host: String = server
        .split("://")
        .nth(1)
        .unwrap_or(server)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(base.join("pivault").join(format!("token-{user}@{host}")))
}

pub(crate) fn url_part(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url_part(v))))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn parties(o: &DisposeOpts) -> Value {
    json!({
        "dry_run": o.dry_run, "data_owner": o.data_owner, "data_owner_address": o.data_owner_address,
        "title": o.title, "contractor_org": o.contractor_org, "contract_ref": o.contract_ref, "contractor_cert": o.contractor_cert,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Keeps a login token in `path`, created afresh with mode 0600 (an
/// older file, whatever its mode, is replaced, never reused).
pub(crate) fn keep_token(path: &Path, token: &SecretString) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(token.expose().as_bytes())?;
    Ok(())
}

/// Runs a command against the server.
pub fn run(cli: &Cli, out: &Out, endpoint: &Endpoint) -> anyhow::Result<u8> {
    let mut r = Remote::new(endpoint, cli.ca_cert.as_deref())?;
    let server = &endpoint.token_key();
    let user = || {
        cli.user
            .as_deref()
            .ok_or_else(|| anyhow!("no user given: use --user NAME or set PIVAULT_USER"))
    };
    let password = |u: &str| {
        crate::secret(
            cli.password_file.as_deref(),
            &format!("Password for {u}: "),
            "password",
            "PIVAULT_PASSWORD_FILE",
        )
    };
    let code_file = cli.code_file.as_deref();
    // Signs in: with the code from --code-file when given, else asking for
    // one only when the server says the account needs it. Returns the token
    // and whether it may only enrol a second factor.
    let sign_in = |r: &Remote, u: &str| -> anyhow::Result<(SecretString, bool)> {
        let pw = password(u)?;
        let given = crate::two_factor::code_from_file(code_file)?;
        let body = |code: Option<&SecretString>| json!({ "username": u, "password": pw.expose(), "code": code.map(|c| c.expose()) });
        let v = match r.post("/v1/sessions", body(given.as_ref())) {
            Err(e)
                if given.is_none()
                    && e.downcast_ref::<RemoteError>()
                        .is_some_and(|e| e.code == "second_factor_required") =>
            {
                let code = crate::two_factor::prompt_code(None)?;
                r.post("/v1/sessions", body(Some(&code)))?
            }
            other => other?,
        };
        let token = SecretString::new(
            v["token"]
                .as_str()
                .ok_or_else(|| anyhow!("no token in the answer"))?
                .to_owned(),
        );
        Ok((token, v["enrol_only"] == true))
    };
    let login = |r: &Remote, u: &str| -> anyhow::Result<SecretString> { Ok(sign_in(r, u)?.0) };
    if let Some(file) = &cli.service_token_file {
        return run_as_service(cli, out, r, file);
    }
    match &cli.command {
        Command::Login => {
            let u = user()?;
            let (token, enrol_only) = sign_in(&r, u)?;
            let path = token_file(server, u)?;
            keep_token(&path, &token)?;
            // Remembered, so that later commands need no PIVAULT_USER,
            // PIVAULT_SERVER or PIVAULT_CA_CERT.
            let (server_url, socket) = match endpoint {
                Endpoint::Url(url) => (Some(url.clone()), None),
                Endpoint::Socket(p) => (
                    None,
                    (p.as_path() != Path::new(vault_core::DEFAULT_SOCKET))
                        .then(|| std::path::absolute(p))
                        .transpose()?,
                ),
            };
            let remembered = crate::profile::Profile {
                server: server_url,
                socket,
                user: Some(u.to_owned()),
                ca_cert: cli
                    .ca_cert
                    .as_deref()
                    .map(std::path::absolute)
                    .transpose()?,
            };
            let (profile, config) = crate::profile::remember(cli.profile.as_deref(), &remembered)
                .context("logged in, but the profile could not be saved")?;
            out.data(
                "login",
                json!({ "logged_in": u, "token_file": path.display().to_string(),
                        "profile": profile, "config_file": config.display().to_string(),
                        "enrol_only": enrol_only }),
                || {
                    let mut t = format!(
                        "logged in as {u}; token kept in {} (mode 0600); profile {profile} remembers where and as whom",
                        path.display()
                    );
                    if enrol_only {
                        t.push_str(
                            "\nyour role requires two-factor sign-in and you have not enrolled: \
                             this login may only enrol, for 10 minutes. Run `pivault two-factor enrol`, \
                             then `pivault two-factor confirm`",
                        );
                    }
                    t
                },
            );
            return Ok(exit::OK);
        }
        Command::Logout => {
            let u = user()?;
            let path = token_file(server, u)?;
            if let Ok(t) = SecretString::from_private_file(&path) {
                r.token = Some(t);
                let _ = r.call("DELETE", "/v1/sessions/current", None);
            }
            let _ = std::fs::remove_file(&path);
            out.data("logout", json!({ "logged_out": u }), || {
                format!("logged out {u}")
            });
            return Ok(exit::OK);
        }
        Command::Init(_) | Command::Vault(_) | Command::Doctor | Command::Backup(_) => {
            // They read or write files beside the vault (a backup file never
            // travels over the network).
            bail!(
                "this command is the custodian's: it opens the vault directory directly \
                 (with PIVAULT_PASSPHRASE_FILE), not through a server"
            )
        }
        _ => {}
    }
    let u = user()?;
    let stored = match token_file(server, u) {
        Ok(p) if p.exists() => Some(SecretString::from_private_file(&p).with_context(|| {
            format!(
                "cannot use the login token {} (run `pivault login` again)",
                p.display()
            )
        })?),
        _ => None,
    }
    .filter(|t| !t.expose().is_empty());
    let mut ephemeral = stored.is_none();
    if !ephemeral {
        r.kept_token = token_file(server, u).ok();
    }
    r.token = Some(match stored {
        Some(t) => t,
        None => login(&r, u)?,
    });
    let mut result = command(cli, out, &r);
    let stale = |res: &anyhow::Result<u8>| {
        res.as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<RemoteError>())
            .is_some_and(|e| e.code == "session_invalid")
    };
    if !ephemeral && stale(&result) {
        if cli.password_file.is_some() && r.answered.get() == 0 {
            // The kept token expired or was revoked, and the first call
            // said so before doing anything: a script with a password file
            // logs in afresh and runs the command once more.
            r.token = Some(login(&r, u)?);
            ephemeral = true;
            result = command(cli, out, &r);
        } else {
            result = result.map_err(|e| {
                e.context(output::Hint {
                    message: None,
                    advice:
                        "your login token has expired or was revoked: run `pivault login` again"
                            .into(),
                    fields: serde_json::Map::new(),
                })
            });
        }
    }
    if ephemeral {
        let _ = r.call("DELETE", "/v1/sessions/current", None);
    }
    result
}

/// Runs a command with a service account's token (PIVAULT_SERVICE_TOKEN_FILE):
/// no user, no password, no login; a revoked or rotated token is exit 4
/// with advice, never a retry with some other credential.
fn run_as_service(cli: &Cli, out: &Out, mut r: Remote, file: &Path) -> anyhow::Result<u8> {
    if matches!(cli.command, Command::Login | Command::Logout) {
        bail!(
            "a service account does not log in: its token file (PIVAULT_SERVICE_TOKEN_FILE) is its credential"
        );
    }
    let token = SecretString::from_private_file(file)
        .with_context(|| format!("cannot use the service token file {}", file.display()))?;
    if token.expose().is_empty() {
        bail!("the service token file {} is empty", file.display());
    }
    r.token = Some(token);
    command(cli, out, &r).map_err(|e| {
        let revoked = e
            .downcast_ref::<RemoteError>()
            .is_some_and(|e| e.code == "session_invalid");
        if revoked {
            e.context(output::Hint {
                message: None,
                advice: "the service token was revoked or rotated: an officer can issue a new one \
                         with `pivault service rotate NAME --token-file FILE`"
                    .into(),
                fields: serde_json::Map::new(),
            })
        } else {
            e
        }
    })
}

fn resolve(r: &Remote, reference: &str) -> anyhow::Result<String> {
    let v = r.post("/v1/subjects/resolve", json!({ "reference": reference }))?;
    Ok(v["subject"].as_str().unwrap_or_default().to_owned())
}

fn dispose(r: &Remote, out: &Out, scope: Value, o: &DisposeOpts, what: &str) -> anyhow::Result<u8> {
    let plan = dispose::confirm(o, what, || {
        r.post(
            "/v1/disposals",
            merge(merge(scope.clone(), parties(o)), json!({ "dry_run": true })),
        )
    })?;
    let v = r
        .post(
            "/v1/disposals",
            merge(merge(scope, parties(o)), json!({ "plan": plan })),
        )
        .map_err(|e| {
            // The server may have recorded the batch before failing; say how
            // it continues (the server's answer does not name it).
            let refused = e
                .downcast_ref::<RemoteError>()
                .is_some_and(|re| dispose::is_refusal(&re.code));
            let started = !o.dry_run && !refused;
            if started {
                e.context(output::Hint {
                    message: None,
                    advice: dispose::GENERIC_RESUME_ADVICE.into(),
                    fields: serde_json::Map::new(),
                })
            } else {
                e
            }
        })?;
    out.data("disposal-outcome", v.clone(), || output::outcome_text(&v));
    Ok(exit::OK)
}

fn command(cli: &Cli, out: &Out, r: &Remote) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Service(c) => return crate::service::cmd_remote(out, r, c),
        Command::TwoFactor(c) => {
            return crate::two_factor::cmd_remote(
                out,
                r,
                cli.code_file.as_deref(),
                r.kept_token.as_deref(),
                c,
            );
        }
        Command::Whoami => {
            let v = r.get("/v1/whoami")?;
            out.data("user", v.clone(), || output::whoami_text(&v));
        }
        Command::User(c) => match c {
            UserCmd::Add {
                name,
                role,
                reveal,
                full_name,
                new_password_file,
            } => {
                let pw = crate::new_secret(
                    new_password_file.as_deref(),
                    &format!("password for {name}"),
                    "PIVAULT_NEW_PASSWORD_FILE",
                )?;
                let v = r.post("/v1/users", json!({ "username": name, "role": role, "password": pw.expose(), "reveal": reveal, "full_name": full_name }))?;
                let (role, id) = (
                    v["role"].as_str().unwrap_or_default().to_owned(),
                    v["user_id"].as_str().unwrap_or_default().to_owned(),
                );
                out.data("user-added", v, || format!("added {role} {name} ({id})"));
            }
            UserCmd::List => {
                let v = r.get("/v1/users")?;
                out.data("user-list", v.clone(), || output::users_table(&v));
            }
            UserCmd::Disable { name } => {
                let v = r.post(&format!("/v1/users/{}/disable", url_part(name)), json!({}))?;
                out.data("user-change", v, || {
                    format!("disabled {name}; their sessions and tokens are revoked")
                });
            }
            UserCmd::Enable { name } => {
                let v = r.post(&format!("/v1/users/{}/enable", url_part(name)), json!({}))?;
                out.data("user-change", v, || format!("enabled {name}"));
            }
            UserCmd::Reveal { name, grant, .. } => {
                let v = r.call(
                    "PUT",
                    &format!("/v1/users/{}/reveal", url_part(name)),
                    Some(json!({ "grant": grant })),
                )?;
                out.data("user-change", v, || {
                    format!("{name} may no longer reveal sensitive fields")
                });
            }
            UserCmd::Unlock { name, .. } => {
                let v = r.post(&format!("/v1/users/{}/unlock", url_part(name)), json!({}))?;
                out.data("user-change", v, || format!("unlocked {name}"));
            }
            UserCmd::ResetTwoFactor { name } => {
                let v = r.call(
                    "DELETE",
                    &format!("/v1/users/{}/two-factor", url_part(name)),
                    None,
                )?;
                out.data("user-change", v, || {
                    format!(
                        "removed {name}'s second factor; they enrol again at their next sign-in"
                    )
                });
            }
            UserCmd::Name {
                name, full_name, ..
            } => {
                let v = r.call(
                    "PUT",
                    &format!("/v1/users/{}/full-name", url_part(name)),
                    Some(json!({ "full_name": full_name })),
                )?;
                let shown = v["full_name"].as_str().map(str::to_owned);
                out.data("user-change", v, || match shown {
                    Some(n) => format!("{name}'s full name is now {n}"),
                    None => format!("{name} has no full name: certificates print the username"),
                });
            }
            UserCmd::Role { name, role } => {
                let v = r.call(
                    "PUT",
                    &format!("/v1/users/{}/role", url_part(name)),
                    Some(json!({ "role": role })),
                )?;
                let role = v["role"].as_str().unwrap_or_default().to_owned();
                out.data("user-change", v, || format!("{name} is now {role}"));
            }
            UserCmd::Passwd {
                name,
                new_password_file,
            } => {
                let name = name
                    .clone()
                    .or_else(|| cli.user.clone())
                    .unwrap_or_default();
                let pw = crate::new_secret(
                    new_password_file.as_deref(),
                    "password",
                    "PIVAULT_NEW_PASSWORD_FILE",
                )?;
                let mut body = json!({ "password": pw.expose() });
                if Some(&name) == cli.user.as_ref() {
                    let current = crate::secret(
                        cli.password_file.as_deref(),
                        "Current password: ",
                        "current password",
                        "PIVAULT_PASSWORD_FILE",
                    )?;
                    body["current_password"] = json!(current.expose());
                }
                let v = r.call(
                    "PUT",
                    &format!("/v1/users/{}/password", url_part(&name)),
                    Some(body),
                )?;
                out.data("password-change", v, || {
                    format!("password of {name} changed")
                });
            }
            UserCmd::Requests => {
                let v = r.get("/v1/approvals")?;
                out.data("request-list", v.clone(), || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                });
            }
            UserCmd::Approve { id } => {
                let v = r.post(
                    &format!("/v1/approvals/{}/approve", url_part(id)),
                    json!({}),
                )?;
                out.data("request-decision", v, || {
                    format!("approved and applied {id}")
                });
            }
            UserCmd::Reject { id } => {
                let v = r.post(&format!("/v1/approvals/{}/reject", url_part(id)), json!({}))?;
                out.data("request-decision", v, || format!("rejected {id}"));
            }
        },
        Command::Collection(c) => match c {
            CollectionCmd::Update { name, schema } => {
                let schema = crate::read_json(schema)?;
                let v = r.call(
                    "PUT",
                    &format!("/v1/collections/{}", url_part(name)),
                    Some(json!({ "schema": schema })),
                )?;
                let (f, n) = (
                    v["fields"].clone(),
                    v["retired"].as_array().map_or(0, Vec::len),
                );
                out.data("collection-change", v, || {
                    format!("updated collection {name}: {f} fields, {n} retired")
                });
            }
            CollectionCmd::Create { name, schema } => {
                let schema = crate::read_json(schema)?;
                let v = r.post("/v1/collections", json!({ "name": name, "schema": schema }))?;
                let (n, f) = (
                    v["collection"].as_str().unwrap_or_default().to_owned(),
                    v["fields"].clone(),
                );
                out.data("collection-change", v, || {
                    format!("created collection {n} with {f} fields")
                });
            }
            CollectionCmd::List => {
                let v = r.get("/v1/collections")?;
                out.data("collection-list", v.clone(), || {
                    output::collections_text(&v)
                });
            }
            CollectionCmd::Export { name, opts } => {
                crate::export::run_remote(out, r, json!({ "collection": name }), opts)?;
            }
            CollectionCmd::Reindex { name } => {
                let v = r.post(
                    &format!("/v1/collections/{}/reindex", url_part(name)),
                    json!({}),
                )?;
                let n = v["indexed"].clone();
                out.data("collection-reindex", v, || {
                    format!("reindexed {n} records of {name}")
                });
            }
            CollectionCmd::Show { name } => {
                let v = r.get(&format!("/v1/collections/{}", url_part(name)))?;
                out.data("collection-schema", v.clone(), || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                });
            }
        },
        Command::Record(c) => {
            match c {
                RecordCmd::Put {
                    collection,
                    subject,
                    data,
                } => {
                    let body = crate::read_json(data)?;
                    let v = r.post(
                        "/v1/records",
                        json!({ "collection": collection, "subject": subject, "data": body }),
                    )?;
                    let id = v["record_id"].as_str().unwrap_or_default().to_owned();
                    out.data("record-stored", v, || id);
                }
                RecordCmd::Import {
                    collection,
                    file,
                    format,
                    subject_column,
                    skip_lines,
                    map,
                    map_file,
                    check,
                } => {
                    // Checked here first, so a bad mapping fails before upload.
                    let (_, map_spec) = crate::import_columns(map, map_file.as_deref())?;
                    let source = crate::ImportSource {
                        file,
                        format: crate::import_format(file, *format),
                        skip_lines: *skip_lines,
                    };
                    let csv = matches!(source.format, ImportFormat::Csv);
                    // The server imports what it is sent: the skipped lines stay here.
                    let input = source.open()?;
                    let mut body = Vec::new();
                    let mut reader = input.reader;
                    reader
                        .read_to_end(&mut body)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let path = format!(
                        "/v1/collections/{}/import{}",
                        url_part(collection),
                        query(&[
                            ("format", Some(if csv { "csv" } else { "jsonl" }.to_owned())),
                            ("subject_column", Some(subject_column.clone())),
                            ("map", (!map_spec.is_empty()).then_some(map_spec)),
                            ("check", check.then(|| "true".to_owned())),
                        ])
                    );
                    let ct = if csv {
                        "text/csv"
                    } else {
                        "application/x-ndjson"
                    };
                    let (status, text) = r.text("POST", &path, Some((body, ct)))?;
                    let mut v: Value = serde_json::from_str(&text)
                        .map_err(|_| anyhow!("the server's answer is not JSON"))?;
                    if status == 422 {
                        // The check pass refused rows: nothing stored, as locally.
                        if let Some(errors) = v["errors"].as_array_mut() {
                            for e in errors {
                                if let Some(l) = e["line"].as_u64() {
                                    e["line"] = json!(l + input.line_offset);
                                }
                            }
                        }
                        out.data("import-report", v.clone(), || {
                            output::import_refused_text(&v)
                        });
                        return Ok(exit::INVALID_INPUT);
                    }
                    if *check {
                        let n = v["valid"].clone();
                        out.data("import-report", v, || {
                            format!("checked {n} rows: all valid; nothing stored")
                        });
                    } else {
                        let n = v["imported"].clone();
                        out.data("import-report", v, || {
                            format!("imported {n} records into {collection}")
                        });
                    }
                }
                RecordCmd::Get { id, reveal, reason } => {
                    let id: RecordId = id.parse()?;
                    let v = if reveal.is_empty() {
                        r.get(&format!("/v1/records/{id}"))?
                    } else {
                        r.post(&format!("/v1/records/{id}/reveal"), json!({ "fields": reveal, "reason": reason.clone().unwrap_or_default() }))?
                    };
                    out.data("record", v.clone(), || output::record_text(&v));
                }
                RecordCmd::Update {
                    id,
                    data,
                    set,
                    unset,
                } => {
                    let id: RecordId = id.parse()?;
                    let patch = crate::record_patch(data.as_deref(), set, unset)?;
                    let v = r.call("PATCH", &format!("/v1/records/{id}"), Some(patch))?;
                    let ver = v["record_version"].clone();
                    out.data("record-version", v, || {
                        format!("updated {id} to version {ver}")
                    });
                }
                RecordCmd::Replace { id, data } => {
                    let id: RecordId = id.parse()?;
                    let body = crate::read_json(data)?;
                    let v = r.call(
                        "PUT",
                        &format!("/v1/records/{id}"),
                        Some(json!({ "data": body })),
                    )?;
                    let ver = v["record_version"].clone();
                    out.data("record-version", v, || {
                        format!("replaced {id}: version {ver}")
                    });
                }
                RecordCmd::Find {
                    collection,
                    ssn,
                    licence,
                    state_id,
                    email,
                    phone,
                    name,
                    field,
                    prefix,
                } => {
                    let a = crate::find_args(
                        ssn, licence, state_id, email, phone, name, field, *prefix,
                    )?;
                    let mut body = json!({
                        "value": a.value.expose(),
                        "match": if a.prefix { "prefix" } else { "exact" },
                    });
                    match (a.ty, a.field) {
                        (Some(t), _) => body["type"] = json!(t),
                        (None, f) => body["field"] = json!(f),
                    }
                    let v = r.post(
                        &format!("/v1/collections/{}/find", url_part(collection)),
                        body,
                    )?;
                    out.data("record-find", v.clone(), || output::find_text(&v));
                }
                RecordCmd::History { id } => {
                    let id: RecordId = id.parse()?;
                    let v = r.get(&format!("/v1/records/{id}/history"))?;
                    out.data("record-history", v.clone(), || output::history_text(&v));
                }
                RecordCmd::List {
                    collection,
                    subject,
                } => {
                    let subject = subject.as_deref().map(|s| resolve(r, s)).transpose()?;
                    let v = r.get(&format!(
                        "/v1/records{}",
                        query(&[("collection", collection.clone()), ("subject", subject)])
                    ))?;
                    out.data("record-list", v.clone(), || output::metas_table(&v));
                }
            }
        }
        Command::Subject(SubjectCmd::Id { reference }) => {
            let id = resolve(r, reference)?;
            out.data("subject", json!({ "subject": id }), || id.clone());
        }
        Command::Subject(SubjectCmd::Export { reference, opts }) => {
            crate::export::run_remote(out, r, json!({ "subject": reference }), opts)?;
        }
        Command::Audit(c) => match c {
            AuditCmd::Log {
                actor,
                since,
                until,
                action,
                limit,
            } => {
                let v = r.get(&format!(
                    "/v1/audit/events{}",
                    query(&[
                        ("actor", actor.clone()),
                        ("since", since.clone()),
                        ("until", until.clone()),
                        ("action", action.clone()),
                        ("limit", limit.map(|n| n.to_string()))
                    ])
                ))?;
                out.data("audit-log", v.clone(), || output::events_text(&v));
            }
            AuditCmd::Export {
                since,
                from_seq,
                format,
                out: path,
            } => {
                return crate::siem::export_remote(
                    out,
                    r,
                    since.as_deref(),
                    *from_seq,
                    format,
                    path,
                );
            }
            AuditCmd::Stream => return crate::siem::stream_remote(out, r),
            AuditCmd::Verify { .. } => {
                let v = r.get("/v1/audit/verify")?;
                out.data("audit-verify", v.clone(), || output::verify_text(&v));
                if v["ok"] != Value::Bool(true) {
                    return Ok(exit::INTEGRITY);
                }
            }
            AuditCmd::Anchor {
                out: path,
                response,
            } => {
                if let Some(p) = response {
                    let tsr = std::fs::read(p)?;
                    let v = r.post(
                        "/v1/audit/timestamp",
                        json!({ "tsr_hex": hex::encode(tsr) }),
                    )?;
                    out.data("audit-timestamp", v.clone(), || {
                        format!(
                            "time-stamp response stored for the head at seq {}",
                            v["seq"]
                        )
                    });
                } else {
                    let v = r.post("/v1/audit/anchor", json!({}))?;
                    let seq = v["seq"].as_u64().unwrap_or(0);
                    let (head, tsq) = crate::anchor_paths(path.as_deref(), seq);
                    std::fs::write(&head, v["head"].as_str().unwrap_or_default())?;
                    std::fs::write(
                        &tsq,
                        hex::decode(v["request_hex"].as_str().unwrap_or_default())?,
                    )?;
                    out.data("audit-anchor", 
                        json!({ "seq": seq, "head": head.display().to_string(), "request": tsq.display().to_string() }),
                        || format!("signed head at seq {seq} written to {}; time-stamp request to {}", head.display(), tsq.display()),
                    );
                }
            }
            AuditCmd::Report { since, until } => {
                let v = r.get(&format!(
                    "/v1/audit/report{}",
                    query(&[("since", since.clone()), ("until", until.clone())])
                ))?;
                out.data("audit-report", v.clone(), || output::activity_text(&v));
            }
        },
        Command::Dispose(c) => match c {
            DisposeCmd::Record { id, opts } => {
                let id: RecordId = id.parse()?;
                return dispose(
                    r,
                    out,
                    json!({ "scope": "record", "record": id.to_string() }),
                    opts,
                    &format!("record {id}"),
                );
            }
            DisposeCmd::Subject { subject, opts } => {
                let sub = resolve(r, subject)?;
                return dispose(
                    r,
                    out,
                    json!({ "scope": "subject", "subject": sub }),
                    opts,
                    &format!("every record of subject {sub}"),
                );
            }
            DisposeCmd::Query {
                collection,
                before,
                by_updated,
                opts,
            } => {
                return dispose(
                    r,
                    out,
                    json!({ "scope": "query", "collection": collection, "before": before, "by_updated": by_updated }),
                    opts,
                    "every matching record",
                );
            }
            DisposeCmd::From { file, opts } => {
                let ids = dispose::record_ids_from(file)?;
                let what = format!("{} listed record(s)", ids.len());
                let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                return dispose(
                    r,
                    out,
                    json!({ "scope": "records", "records": ids }),
                    opts,
                    &what,
                );
            }
        },
        Command::Disposal(c) => match c {
            DisposalCmd::List => {
                let v = r.get("/v1/disposals")?;
                out.data("disposal-list", v.clone(), || output::disposals_text(&v));
            }
            DisposalCmd::Retry { id } => {
                let id: DisposalId = id.parse()?;
                let v = r.post(&format!("/v1/disposals/{id}/retry"), json!({}))?;
                let cert = v["certificate_id"].as_str().unwrap_or_default().to_owned();
                out.data("disposal-retry", v, || {
                    format!("disposal {id} completed; certificate {cert}")
                });
            }
        },
        Command::Certificate(c) => match c {
            CertificateCmd::List { draft } => {
                let v = r.get(&format!(
                    "/v1/certificates{}",
                    query(&[("draft", draft.then(|| "true".to_owned()))])
                ))?;
                out.data("certificate-list", v.clone(), || {
                    output::certificates_text(&v)
                });
            }
            CertificateCmd::Show { id } => {
                let id: CertificateId = id.parse()?;
                let v = r.get(&format!("/v1/certificates/{id}"))?;
                out.data("certificate", v.clone(), || {
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                });
            }
            CertificateCmd::Export {
                id,
                out: dest,
                format,
            } => {
                let id: CertificateId = id.parse()?;
                let path = match format {
                    CertFormat::Json => format!("/v1/certificates/{id}/file"),
                    CertFormat::Vc => format!("/v1/certificates/{id}/vc"),
                };
                let (_, text) = r.text("GET", &path, None)?;
                dispose::write_out(out, dest.as_deref(), &text)?;
            }
            CertificateCmd::Render {
                cert,
                out: dest,
                pdf: false,
                ..
            } => {
                let id: CertificateId = cert.parse()?;
                let (_, text) = r.text("GET", &format!("/v1/certificates/{id}/html"), None)?;
                dispose::write_out(out, dest.as_deref(), &text)?;
            }
            CertificateCmd::Render {
                cert,
                out: dest,
                pdf: true,
                ..
            } => {
                // The same bytes as GET /v1/certificates/{id}/pdf (the
                // rendering is deterministic), over the text transport.
                let id: CertificateId = cert.parse()?;
                let (_, text) = r.text("GET", &format!("/v1/certificates/{id}/file"), None)?;
                let cert = vault_core::certificate::Certificate::parse(&text)?;
                let keys = r.get("/v1/keys")?;
                let key = vault_core::certificate::parse_public_key(
                    keys["certificate_key"].as_str().unwrap_or_default(),
                )?;
                dispose::write_rendering(
                    out,
                    dest.as_deref(),
                    &cert,
                    vault_core::certificate::Check::Issuer(&key),
                    true,
                )?;
            }
            CertificateCmd::Prove {
                id,
                record,
                out: dest,
            } => {
                let id: CertificateId = id.parse()?;
                let record: RecordId = record.parse()?;
                let mut v = r.get(&format!("/v1/certificates/{id}/proof/{record}"))?;
                if let Some(m) = v.as_object_mut() {
                    m.remove("document");
                    m.remove("version");
                }
                dispose::write_proof(out, dest.as_deref(), &v)?;
            }
            CertificateCmd::Validate { id, title } => {
                let id: CertificateId = id.parse()?;
                let v = r.post(
                    &format!("/v1/certificates/{id}/validate"),
                    json!({ "title": title }),
                )?;
                out.data("certificate-change", v, || {
                    format!("certificate {id} validated")
                });
            }
            CertificateCmd::Cosign { id, key_file } => {
                let id: CertificateId = id.parse()?;
                let key = vault_core::cosign::load(key_file)?;
                let (_, text) = r.text("GET", &format!("/v1/certificates/{id}/file"), None)?;
                let cert = Certificate::parse(&text)?;
                let sig = vault_core::cosign::sign(&cert, &key)?;
                let v = r.post(
                    &format!("/v1/certificates/{id}/cosign"),
                    json!({ "signature": hex::encode(sig) }),
                )?;
                out.data("certificate-change", v, || {
                    format!("certificate {id} co-signed")
                });
            }
            CertificateCmd::Verify { .. }
            | CertificateCmd::Payload { .. }
            | CertificateCmd::SignPayload { .. } => {
                unreachable!("offline")
            }
        },
        Command::Keys(KeysCmd::Export { out: dir }) => {
            let k = r.get("/v1/keys")?;
            std::fs::create_dir_all(dir)?;
            let cert = dir.join("certificate.pem");
            let audit = dir.join("audit.pem");
            std::fs::write(&cert, k["certificate_key"].as_str().unwrap_or_default())?;
            std::fs::write(&audit, k["audit_key"].as_str().unwrap_or_default())?;
            // The fingerprints are recomputed from the keys written, not taken on trust.
            let fp = |p: &Path| -> anyhow::Result<String> {
                let key: ed25519_key::VerifyingKey =
                    certificate::parse_public_key(&std::fs::read_to_string(p)?)?;
                Ok(vault_core::crypto::fingerprint(key.as_bytes()))
            };
            let (cf, af) = (fp(&cert)?, fp(&audit)?);
            out.data("keys-export", 
                json!({ "certificate_key": cert.display().to_string(), "certificate_fingerprint": cf,
                        "audit_key": audit.display().to_string(), "audit_fingerprint": af }),
                || format!("certificate key: {} ({cf})\naudit key:       {} ({af})", cert.display(), audit.display()),
            );
        }
        Command::Retention(c) => match c {
            RetentionCmd::Set {
                collection,
                days,
                from_updated,
            } => {
                let v = r.call(
                    "PUT",
                    &format!("/v1/retention/{}", url_part(collection)),
                    Some(json!({ "days": days, "from_updated": from_updated })),
                )?;
                out.data("retention-policy", v, || {
                    format!(
                        "{collection}: keep {days} days from {}",
                        if *from_updated {
                            "last update"
                        } else {
                            "creation"
                        }
                    )
                });
            }
            RetentionCmd::Show => {
                let v = r.get("/v1/retention")?;
                let text = vault_core::views::items(&v)
                    .iter()
                    .map(output::retention_line)
                    .collect::<Vec<_>>()
                    .join("\n");
                out.data("retention-list", v, || text);
            }
            RetentionCmd::Schedule { every_hours, off } => {
                let v = if *off || every_hours.is_some() {
                    r.call(
                        "PUT",
                        "/v1/retention-schedule",
                        Some(json!({ "every_hours": every_hours })),
                    )?
                } else {
                    r.get("/v1/retention-schedule")?
                };
                out.data("retention-schedule", v.clone(), || {
                    output::retention_schedule_text(&v)
                });
            }
            RetentionCmd::Due => {
                let v = r.get("/v1/retention/due")?;
                out.data("disposal-outcome", v.clone(), || output::outcome_text(&v));
            }
            RetentionCmd::Run { opts } => {
                let plan = dispose::confirm(opts, "every record past retention", || {
                    r.get("/v1/retention/due")
                })?;
                let v = r.post(
                    "/v1/retention/run",
                    merge(parties(opts), json!({ "plan": plan })),
                )?;
                out.data("disposal-outcome", v.clone(), || output::outcome_text(&v));
            }
        },
        Command::Hold(c) => match c {
            HoldCmd::Add {
                record,
                subject,
                reason,
            } => {
                let v = r.post(
                    "/v1/holds",
                    json!({ "record": record, "subject": subject, "reason": reason }),
                )?;
                out.data("hold-change", v, || "legal hold placed".into());
            }
            HoldCmd::Remove { record, subject } => {
                let v = r.post(
                    "/v1/holds/remove",
                    json!({ "record": record, "subject": subject }),
                )?;
                out.data("hold-change", v, || "legal hold lifted".into());
            }
            HoldCmd::List => {
                let v = r.get("/v1/holds")?;
                out.data("hold-list", v.clone(), || output::holds_text(&v));
            }
        },
        Command::Contractor(ContractorCmd::List) => {
            let v = r.get("/v1/contractors")?;
            out.data("contractor-list", v.clone(), || {
                output::contractors_text(&v)
            });
        }
        Command::Contractor(ContractorCmd::Revoke { name }) => {
            let v = r.call(
                "DELETE",
                &format!("/v1/contractors/{}", url_part(name)),
                None,
            )?;
            out.data("contractor-revocation", v, || {
                format!("{name} may no longer list or dispose of anything; their key co-signs nothing new")
            });
        }
        Command::Contractor(ContractorCmd::Assign {
            name,
            collection,
            record,
            public_key,
        }) => {
            let pem = public_key
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .transpose()?;
            let v = r.call(
                "PUT",
                &format!("/v1/contractors/{}", url_part(name)),
                Some(
                    json!({ "collections": collection, "records": record, "public_key_pem": pem }),
                ),
            )?;
            out.data("contractor-assignment", v, || {
                format!(
                    "{name} may dispose in {} collection(s) and {} listed record(s)",
                    collection.len(),
                    record.len()
                )
            });
        }
        Command::Review => {
            let v = r.post("/v1/review", json!({}))?;
            out.data("review", v, || "security review recorded".into());
        }
        Command::Maintenance(crate::MaintenanceCmd::Run) => {
            let v = r.post("/v1/maintenance", json!({}))?;
            let text = crate::output::maintenance_text(&v);
            out.data("maintenance-report", v, || text);
        }
        Command::Incident(c) => {
            crate::incident::cmd_remote(out, r, c)?;
        }
        Command::Wisp(a) => {
            crate::incident::wisp_remote(out, r, a)?;
        }
        Command::Init(_)
        | Command::Vault(_)
        | Command::Doctor
        | Command::Backup(_)
        | Command::Passphrase(_)
        | Command::Login
        | Command::Logout
        | Command::Profile(_)
        | Command::Completions { .. }
        | Command::Contractor(ContractorCmd::Keygen { .. }) => unreachable!("handled before"),
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::check_server_url;

    /// Issue 13: a URL that starts like loopback but whose host is another
    /// machine (user information before `@`) is refused, and plain HTTP is
    /// allowed only to a loopback host.
    #[test]
    fn server_urls_are_parsed_not_prefix_matched() {
        for ok in [
            "https://vault.shop.lan",
            "https://vault.shop.lan:8443",
            "https://192.168.1.20:8443/",
            "https://[2001:db8::1]:8443",
            "http://127.0.0.1:8443",
            "http://127.0.0.2",
            "http://localhost:8443/",
            "http://[::1]:8443",
            "HTTP://LOCALHOST",
        ] {
            assert_eq!(check_server_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:1@otherhost",
            "http://127.0.0.1@otherhost:8443",
            "https://user:pw@vault.shop.lan",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://otherhost",
            "http://[::1]x",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:",
            "ftp://127.0.0.1",
            "127.0.0.1:8443",
            "http://[::1",
            "https://",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad} must be refused");
        }
    }
}
