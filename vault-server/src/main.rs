//! `pivault-server`: unlocks a vault once at start and serves the `/v1` API.
//!
//! Loopback by default; any other address needs TLS (rustls, TLS 1.2+).
//! The passphrase comes from `PIVAULT_PASSPHRASE_FILE` (or
//! `--passphrase-file`), or a no-echo prompt on a terminal — never a flag.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use vault_core::Vault;
use vault_core::secret::SecretString;
use vault_core::vault::OpenOptions;
use vault_server::{App, Limits};

mod hosting;

/// pivault-server — the pivault HTTP API over TLS.
#[derive(Parser, Debug)]
#[command(name = "pivault-server", version)]
struct Args {
    /// Vault directory.
    #[arg(
        long,
        env = "PIVAULT_DIR",
        value_name = "DIR",
        required_unless_present_any = ["print_openapi", "hosting"],
        conflicts_with = "hosting"
    )]
    vault: Option<PathBuf>,
    /// Serve many vaults from this one process (a service provider's
    /// server): FILE lists each vault's directory, passphrase file and
    /// address (see README, "Many vaults in one server process"). The vaults share
    /// the worker threads (a lane each, served in turn) and the bounds on
    /// password checks, long work and buffered bodies; the other limits
    /// apply to each vault. SIGHUP reads FILE again. With --standby, stands
    /// by for each vault another process holds (a second machine over the
    /// same vaults). No local socket, no syslog stream in this mode.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["syslog", "passphrase_file", "advertise", "socket", "socket_group", "socket_owner"]
    )]
    hosting: Option<PathBuf>,
    /// Address to listen on. Anything but loopback requires --tls-cert and --tls-key.
    #[arg(long, default_value = "127.0.0.1:8443")]
    bind: SocketAddr,
    /// TLS certificate chain, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Create a self-signed certificate at --tls-cert/--tls-key if they do
    /// not exist, for localhost, 127.0.0.1, ::1 and every --tls-name (give
    /// clients the certificate with `pivault --ca-cert`).
    #[arg(long, requires = "tls_cert")]
    self_signed: bool,
    /// A host name or IP address the self-signed certificate also covers
    /// (repeatable), so that clients on other machines can reach the
    /// server by that name: `--tls-name vault.shop.lan --tls-name 192.168.1.20`.
    #[arg(long, value_name = "NAME", requires = "self_signed")]
    tls_name: Vec<String>,
    /// File holding the vault passphrase (or key file).
    #[arg(long, env = "PIVAULT_PASSPHRASE_FILE", value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// fsync every write.
    #[arg(long, env = "PIVAULT_SYNC")]
    sync: bool,
    /// While another server holds the vault (its stores on a cluster),
    /// wait and take it over once that server stops or its lease lapses,
    /// instead of failing with `vault_busy`. Meanwhile the standby listens
    /// and forwards every request to the holder (at the address it
    /// published, and only to a server presenting the same TLS
    /// certificate), so a load balancer may send clients to any server. A
    /// server whose vault is taken over exits with code 75; restarted, it
    /// stands by again. With --hosting, for each vault of the file another
    /// process holds, and a vault taken over is stood by for again.
    #[arg(long, env = "PIVAULT_STANDBY")]
    standby: bool,
    /// The address (HOST:PORT) other servers of this vault reach this one
    /// at, published while it holds the vault so that standbys forward to
    /// it. Default: the address it listens on, unless that is 0.0.0.0 or
    /// [::] (then nothing is published and standbys answer 503).
    #[arg(long, env = "PIVAULT_ADVERTISE", value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Bearer token lifetime, seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    token_ttl_secs: u64,
    /// Login attempts per client address per minute (in front of the account lock-out).
    #[arg(long, default_value_t = 30)]
    logins_per_minute: u32,
    /// Requests per client address per second.
    #[arg(long, default_value_t = 20_000)]
    requests_per_second: u32,
    /// Calls each service account's token may make per minute (a runaway
    /// script must not crowd out the staff).
    #[arg(long, default_value_t = vault_core::vault::DEFAULT_SERVICE_CALLS_PER_MINUTE)]
    service_calls_per_minute: u32,
    /// Concurrent password checks (Argon2id).
    #[arg(long, default_value_t = 1)]
    login_concurrency: usize,
    /// Threads running short vault operations (default: one per core, at least 2).
    #[arg(long, value_name = "N")]
    vault_threads: Option<usize>,
    /// How long a one-record disposal waits for others by the same user to
    /// share its batch and certificate, milliseconds (0: no sharing).
    #[arg(long, default_value_t = 20, value_name = "MS")]
    disposal_window_ms: u64,
    /// Largest JSON request body, and the largest file the web page's
    /// import takes (held in memory until confirmed), bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Request timeout, seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Request body bytes held in memory at once over all requests, MiB;
    /// past it a request is answered 503 with Retry-After (never less than
    /// one import, 64 MiB).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    body_budget_mib: usize,
    /// Connections to a cluster's primary this process holds at most, idle
    /// or working, for the vault's keystore and records on that cluster
    /// (the records store's lock and a purge's connection to every member
    /// come on top). Keep the sum over the cluster's server processes under
    /// the members' `max_connections`.
    #[arg(long, default_value_t = vault_core::keystore::postgres::DEFAULT_CLUSTER_CONNECTIONS, value_name = "N")]
    cluster_connections: usize,
    /// Open TCP connections at once; more are closed at accept.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Seconds a client has to finish the TLS handshake and then to send a
    /// request's headers; also the longest a keep-alive connection may sit
    /// idle between requests.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    header_timeout_secs: u64,
    /// Free space the vault's file system must keep, MiB: below it the
    /// server refuses new work (503 disk_low) and /readyz answers not
    /// ready, before an audit write could fail; 0 turns the guard off.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    min_free_mib: u64,
    /// Refused bearer tokens per client address per minute; past it the
    /// address's requests with a token get 429 until it slows down (each
    /// refused token is an audit event).
    #[arg(long, default_value_t = 60, value_name = "N")]
    bad_tokens_per_minute: u32,
    /// Requests per client address per minute that may be refused before
    /// anyone authenticated (401, 404, 405, 429); past it the address is
    /// shut out (429 and the connection closed; new connections held unread
    /// at accept, before TLS, then closed) until it slows down; 0: never. Authenticated
    /// requests never count. Raise it behind a proxy that shares one address.
    #[arg(long, default_value_t = 600, value_name = "N")]
    refusals_per_minute: u32,
    /// Open connections per client address (IPv6: per /64; socket: per OS
    /// user); more are closed at accept.
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_connections_per_source: usize,
    /// Hours between maintenance ratchets (old keys of updated records and
    /// orphaned keys destroyed by rotation, ratchet and purge); 0: off.
    #[arg(long, default_value_t = 24, value_name = "HOURS")]
    maintenance_hours: u64,
    /// Seconds between time-based audit checkpoints (signed, and copied
    /// into the records database) when events were appended; 0: off.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    checkpoint_secs: u64,
    /// The local Unix-domain socket staff's `pivault` talks to (plain HTTP;
    /// the kernel tells the server which OS user connects). Created at
    /// start, removed at stop.
    #[arg(
        long,
        env = "PIVAULT_SOCKET",
        value_name = "PATH",
        default_value = DEFAULT_SOCKET,
        conflicts_with = "no_socket"
    )]
    socket: PathBuf,
    /// Do not create the local socket (TCP only).
    #[arg(long)]
    no_socket: bool,
    /// Permissions of the socket, octal: who may connect (0660: the owner
    /// and the group; 0666: every local user).
    #[arg(long, default_value = "0660", value_name = "MODE", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group of the socket (name or number), e.g. the group of the staff
    /// who may use the vault.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Owner of the socket (name or number); the server's own user by default.
    #[arg(long, value_name = "USER")]
    socket_owner: Option<String>,
    /// No access log (one stderr line per request: request ID, user ID,
    /// route template, status, time, client; never paths, queries or bodies).
    #[arg(long)]
    no_access_log: bool,
    /// Seconds between the server's housekeeping checks: expire due backups,
    /// remove expired sessions and tokens, and run retention when the
    /// schedule an admin set in the vault (`pivault retention schedule`) is
    /// due; 0 turns the checks off. Each job is audited as a system action.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    housekeeping_secs: u64,
    /// Stream every audit event to a syslog collector as RFC 5424 messages
    /// (octet-counted frames, RFC 5425): `tcp://HOST:PORT` or
    /// `tls://HOST:PORT`. The vault never waits for it: a bounded queue,
    /// reconnects with back-off, a gap report for what was dropped.
    #[arg(long, value_name = "URL")]
    syslog: Option<String>,
    /// The CA certificate (PEM) that signs the collector's TLS certificate.
    #[arg(long, value_name = "FILE", requires = "syslog")]
    syslog_ca: Option<PathBuf>,
    /// Events the stream holds while the collector is away; past it the
    /// oldest are dropped and reported as a gap.
    #[arg(long, default_value_t = 10_000, value_name = "N", requires = "syslog")]
    syslog_queue: usize,
    /// HOSTNAME of the syslog messages (default: this machine's name).
    #[arg(long, value_name = "NAME", requires = "syslog")]
    syslog_hostname: Option<String>,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

/// Where the server creates its socket and `pivault` looks for it by
/// default (a systemd unit gives the service `RuntimeDirectory=pivault`).
const DEFAULT_SOCKET: &str = vault_core::DEFAULT_SOCKET;

fn parse_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{s} is not an octal mode like 0660"))?;
    if m & !0o777 != 0 {
        return Err(format!("{s} is not a permission mode (0000 to 0777)"));
    }
    Ok(m)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_openapi {
        print!("{}", vault_server::openapi_json());
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.is::<TakenOver>()
                || matches!(
                    e.downcast_ref::<vault_core::Error>(),
                    Some(vault_core::Error::TakenOver)
                ) =>
        {
            eprintln!("pivault-server: {e:#}");
            ExitCode::from(75)
        }
        Err(e) => {
            eprintln!("pivault-server: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The vault was taken over by another process: exit code 75 (EX_TEMPFAIL),
/// so a supervisor restarts this one, which then stands by.
#[derive(Debug)]
struct TakenOver;

impl std::fmt::Display for TakenOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another process took the vault over")
    }
}

impl std::error::Error for TakenOver {}

fn passphrase(file: Option<&Path>) -> anyhow::Result<SecretString> {
    if let Some(f) = file {
        let s = SecretString::from_private_file(f)
            .with_context(|| format!("cannot use the passphrase file {}", f.display()))?;
        if s.expose().is_empty() {
            bail!("the passphrase file {} is empty", f.display());
        }
        return Ok(s);
    }
    if std::io::stdin().is_terminal() {
        return Ok(SecretString::new(rpassword::prompt_password(
            "Vault passphrase: ",
        )?));
    }
    bail!("no vault passphrase: set PIVAULT_PASSPHRASE_FILE or run in a terminal")
}

/// Writes a self-signed certificate for localhost/127.0.0.1/::1 and
/// `names` (key 0600).
fn self_signed(cert: &Path, key: &Path, names: &[String]) -> anyhow::Result<()> {
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for n in names {
        let ok = n.parse::<std::net::IpAddr>().is_ok()
            || (!n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !ok {
            bail!("--tls-name {n:?} is not a host name or an IP address");
        }
        sans.push(n.to_ascii_lowercase());
    }
    let ck = rcgen::generate_simple_self_signed(sans)
        .context("cannot generate a self-signed certificate")?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("cannot create {}", key.display()))?;
    f.write_all(ck.signing_key.serialize_pem().as_bytes())?;
    f.sync_all()?;
    std::fs::write(cert, ck.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    eprintln!(
        "pivault-server: created a self-signed certificate {} (give it to clients with --ca-cert)",
        cert.display()
    );
    Ok(())
}

fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    vault_core::secret::check_private_file(key)
        .with_context(|| format!("cannot use the TLS key {}", key.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn run(args: Args) -> anyhow::Result<()> {
    vault_core::keystore::postgres::set_cluster_connections(args.cluster_connections);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            if args.self_signed {
                self_signed(c, k, &args.tls_name)?;
            }
            Some(tls_config(c, k)?)
        }
        _ => None,
    };
    if let Some(file) = &args.hosting {
        return hosting::run(&args, file, tls);
    }
    let dir = args.vault.clone().expect("required by clap");
    if tls.is_none() && !args.bind.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without TLS: give --tls-cert and --tls-key (or bind 127.0.0.1)",
            args.bind
        );
    }
    let pass = passphrase(args.passphrase_file.as_deref())?;
    // The socket is bound once: a standby forwards on it while it waits,
    // and the same socket serves once it holds the vault, so no client is
    // refused at the switch (connections wait in its backlog). A standby
    // forwards only over TLS (without it, plain HTTP on loopback, it could
    // not tell the holder from any local listener) and only with the
    // records on a cluster (where the holder publishes its address; with
    // them embedded the holder is on this machine); otherwise it binds
    // once it holds the vault.
    let mut lookup = match (&tls, args.standby) {
        (Some(_), true) => Vault::holder_lookup(&dir)
            .context("cannot reach the records cluster to find the holder")?,
        _ => None,
    };
    let bind_now = !args.standby || lookup.is_some();
    let early = match std::net::TcpListener::bind(args.bind) {
        _ if !bind_now => None,
        Ok(l) => {
            // Shared with the standby's copy (one open file description).
            l.set_nonblocking(true)?;
            Some(l)
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", args.bind)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tls_files = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
    let mut standing_by: Option<Standby> = None;
    let mut waited = false;
    let mut failing = false;
    // The lock's state, read apart from the forwarding's lookup.
    let lock_lookup = lookup
        .as_ref()
        .and_then(|_| Vault::holder_lookup(&dir).ok().flatten());
    let mut patience = Patience::default();
    let vault = loop {
        if let (Some(s), Some(l)) = (&standing_by, &lock_lookup)
            && patience.hold_off(l.lock_held().ok(), || {
                holder_answers(&s.forwarder, rt.handle())
            })
        {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        let opened = Vault::open(
            &dir,
            &pass,
            OpenOptions {
                sync: args.sync,
                service_calls_per_minute: args.service_calls_per_minute.max(1),
                ..OpenOptions::default()
            },
        );
        match opened {
            Err(vault_core::Error::VaultBusy) if args.standby => {
                if !waited {
                    eprintln!(
                        "pivault-server: standing by: another process holds the vault; taking it over once that process stops or its {}s lease lapses",
                        vault_core::CLUSTER_LEASE.as_secs()
                    );
                    waited = true;
                }
                if let (None, Some(listener), Some(l)) = (&standing_by, &early, lookup.take()) {
                    let s =
                        Standby::start(rt.handle(), listener, tls.clone(), tls_files, l, &args)?;
                    eprintln!(
                        "pivault-server: standing by on https://{}: forwarding requests to the holder",
                        listener.local_addr()?
                    );
                    standing_by = Some(s);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            // The cluster failing over, or out of reach for a while: a
            // standby is there for exactly that, so it waits it out.
            Err(e) if args.standby && passing(&e) => {
                if !failing {
                    eprintln!(
                        "pivault-server: standing by: cannot reach the vault's cluster now ({}): {e}; trying again every second",
                        e.code()
                    );
                    failing = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            r => break r?,
        }
    };
    if let Some(s) = standing_by {
        // Requests still being forwarded finish (the old holder answers
        // them, or they fail); new connections wait for the vault's server.
        s.stop();
    }
    if waited {
        eprintln!("pivault-server: took the vault over");
    }
    let listener = match early {
        Some(l) => l,
        None => std::net::TcpListener::bind(args.bind)
            .with_context(|| format!("cannot listen on {}", args.bind))?,
    };
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    drop(pass);
    let vault = Arc::new(vault);
    let limits = limits_from(&args);
    let app = App::new(vault, limits).context("cannot start the vault worker threads")?;
    if let Some((_, key)) = tls_files {
        app.trust_standbys(vault_server::forward::ForwardingKey::from_tls_key(
            key,
            app.vault().id(),
        )?);
    }
    if let Some(url) = &args.syslog {
        app.start_stream(vault_server::syslog::StreamConfig {
            url: url.clone(),
            ca: args.syslog_ca.clone(),
            queue: args.syslog_queue,
            hostname: args
                .syslog_hostname
                .clone()
                .unwrap_or_else(vault_core::siem::default_hostname),
            vault_dir: dir.clone(),
        })
        .context("cannot start the audit stream")?;
    }

    start_timers(rt.handle(), &app, &args);
    let socket = (!args.no_socket).then(|| SocketSpec {
        path: args.socket.clone(),
        mode: args.socket_mode,
        owner: args.socket_owner.clone(),
        group: args.socket_group.clone(),
    });
    // Standbys forward here once the address is published (a vault with
    // its records embedded has no standbys, and nothing is written).
    let advertise = advertised_address(args.advertise.as_deref(), local);
    if let Some(addr) = advertise
        .clone()
        .filter(|_| app.vault().records_on_cluster())
    {
        rt.spawn(keep_published(app.clone(), addr));
    } else if app.vault().records_on_cluster() {
        eprintln!(
            "pivault-server: listening on {local}, which standbys cannot reach: give --advertise HOST:PORT so that they forward here"
        );
    }
    let stop = stop_on_signal(&rt);
    rt.block_on(serve(app.clone(), listener, tls, socket, stop, false))?;
    // Every request has finished; blocking work (a disposal step) too once
    // the runtime is gone. Then the refusals still counted are audited and
    // the vault is closed cleanly.
    drop(rt);
    finish(app, advertise.is_some())?;
    eprintln!("pivault-server: stopped");
    Ok(())
}

/// After its server stopped and its blocking work is done (the runtime is
/// gone, or nothing else holds the vault): audits the refusals still counted, withdraws the published
/// address, gives the audit stream a few seconds, and closes the vault
/// cleanly. `Err(TakenOver)` when another process holds the vault now.
fn finish(app: Arc<App>, advertised: bool) -> anyhow::Result<()> {
    let taken_over = app.vault().lease_lost();
    if !taken_over {
        // Taken over, nothing more is written: the trail and the refusal
        // counts belong to the process that holds the vault now.
        app.flush_refusals(true);
        if advertised {
            // Standbys stop forwarding to a server that no longer listens.
            let _ = app.vault().publish_holder_address(None);
        }
    }
    if let Some(stream) = app.stream() {
        // The events still queued get a few seconds to leave; what is left
        // is sent at the next start (the state file keeps the last seq sent).
        stream.stop(Duration::from_secs(5));
    }
    if taken_over {
        return Err(TakenOver.into());
    }
    let vault = Arc::try_unwrap(app)
        .ok()
        .map(|a| a.into_vault())
        .and_then(|v| Arc::try_unwrap(v).ok());
    match vault {
        Some(v) => v.close()?,
        None => eprintln!("pivault-server: vault still referenced at exit; closed by drop"),
    }
    Ok(())
}

/// Whether an error opening a vault another process held may pass (the
/// cluster failing over, unreachable, a connection refused), so that a
/// standby tries again instead of ending; a wrong passphrase, a directory
/// that is not a vault, an unsafe file or a damaged one do not pass.
pub(crate) fn passing(e: &vault_core::Error) -> bool {
    matches!(
        e,
        vault_core::Error::Storage(_)
            | vault_core::Error::Io(_)
            | vault_core::Error::AuditUnavailable(_)
            | vault_core::Error::TakenOver
    )
}

/// The address standbys forward to: the one given, else the one this
/// server listens on, unless that is 0.0.0.0 or [::].
fn advertised_address(given: Option<&str>, local: SocketAddr) -> Option<String> {
    given
        .map(str::to_owned)
        .or_else(|| (!local.ip().is_unspecified()).then(|| local.to_string()))
}

/// The limits the flags set (each vault's own in `--hosting`).
fn limits_from(args: &Args) -> Limits {
    let defaults = Limits::default();
    Limits {
        body_bytes: args.max_body,
        vault_threads: args.vault_threads.unwrap_or(defaults.vault_threads).max(1),
        request_timeout: Duration::from_secs(args.timeout_secs.max(1)),
        login_concurrency: args.login_concurrency,
        logins_per_minute: args.logins_per_minute,
        requests_per_second: args.requests_per_second,
        token_ttl: Duration::from_secs(args.token_ttl_secs.max(1)),
        disposal_window: Duration::from_millis(args.disposal_window_ms),
        access_log: !args.no_access_log,
        body_budget: args.body_budget_mib.saturating_mul(1 << 20),
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        min_free_bytes: args.min_free_mib.saturating_mul(1 << 20),
        bad_tokens_per_minute: args.bad_tokens_per_minute,
        refusals_per_minute: args.refusals_per_minute,
        max_connections_per_source: args.max_connections_per_source.max(1),
        ..defaults
    }
}

/// Starts the vault's timers on `rt`: maintenance, checkpoints, the
/// refusal counts, the disk guard and housekeeping, each as its flag says.
fn start_timers(rt: &tokio::runtime::Handle, app: &Arc<App>, args: &Args) {
    if args.maintenance_hours > 0 {
        let every = Duration::from_secs(args.maintenance_hours * 3600);
        rt.spawn(maintenance_timer(app.clone(), every));
    }
    if args.checkpoint_secs > 0 {
        let every = Duration::from_secs(args.checkpoint_secs);
        rt.spawn(checkpoint_timer(app.clone(), every));
    }
    rt.spawn(repeat_blocking(app.clone(), Duration::from_secs(5), |a| {
        a.flush_refusals(false)
    }));
    app.check_disk();
    rt.spawn(repeat_blocking(app.clone(), Duration::from_secs(2), |a| {
        a.check_disk();
    }));
    if args.housekeeping_secs > 0 {
        let every = Duration::from_secs(args.housekeeping_secs);
        rt.spawn(backup_expiry_timer(app.clone(), every));
        rt.spawn(session_sweep_timer(app.clone(), every));
        rt.spawn(retention_schedule_timer(app.clone(), every));
    }
}

/// How often the holder checks its address in the lease row.
const REPUBLISH_EVERY: Duration = Duration::from_secs(2);

/// Keeps this server's address in the lease row for the standbys to
/// forward to, until the server drains: written at once, then checked
/// every [`REPUBLISH_EVERY`] and written again when it is missing or
/// another (a failover lost the write, or an insider cleared or changed
/// it; the standbys' certificate pin keeps them from a planted address
/// meanwhile). A failure is reported once, and its end.
async fn keep_published(app: Arc<App>, addr: String) {
    let mut tick = tokio::time::interval(REPUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.drained() => return,
        }
        if app.is_draining() {
            return;
        }
        let (a, at) = (app.clone(), addr.clone());
        let published =
            tokio::task::spawn_blocking(move || a.vault().publish_holder_address(Some(&at))).await;
        match published {
            Ok(Ok(())) if failing => {
                eprintln!(
                    "{} this server's address is published for the standbys again",
                    app.log()
                );
                failing = false;
            }
            Ok(Err(e)) if !failing => {
                eprintln!(
                    "{} cannot publish this server's address for the standbys ({}): {e}",
                    app.log(),
                    e.code()
                );
                failing = true;
            }
            _ => {}
        }
    }
}

/// Runs `job` on a blocking thread every `period` until the server drains:
/// the refusal counts of each minute audited once it has ended (a few
/// seconds late at most, so a flood shows in the trail while it lasts),
/// and the disk-space guard.
async fn repeat_blocking(app: Arc<App>, period: Duration, job: fn(&App)) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.drained() => return,
        }
        if app.is_draining() {
            return;
        }
        let a = app.clone();
        let _ = tokio::task::spawn_blocking(move || job(&a)).await;
    }
}

/// Runs `job` on the vault every `every` (on the blocking pool, so RocksDB
/// and fsyncs never hold an async thread) until the server drains; a failure
/// is reported on stderr and the job runs again at the next tick.
async fn every_interval<T: Send + 'static>(
    app: Arc<App>,
    every: Duration,
    what: &'static str,
    job: fn(&vault_core::vault::Vault) -> vault_core::Result<T>,
    report: fn(&T) -> Option<String>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.drained() => return,
        }
        if app.is_draining() {
            return;
        }
        let vault = app.vault().clone();
        match tokio::task::spawn_blocking(move || job(&vault)).await {
            Ok(Ok(r)) => {
                if let Some(line) = report(&r) {
                    eprintln!("{} {what}: {line}", app.log());
                }
            }
            Ok(Err(e)) => eprintln!("{} {what} failed ({}): {e}", app.log(), e.code()),
            Err(_) => eprintln!("{} {what} panicked", app.log()),
        }
    }
}

/// The maintenance ratchet (DESIGN §4.1), audited by the vault as a system action.
async fn maintenance_timer(app: Arc<App>, every: Duration) {
    every_interval(
        app,
        every,
        "maintenance ratchet",
        |v| v.run_scheduled_maintenance(),
        |r| {
            r.epochs.is_some().then(|| {
                format!(
                    "{} bucket(s) rotated, {} orphaned key(s) destroyed, verified {}",
                    r.buckets_rotated, r.orphan_keys_destroyed, r.verified
                )
            })
        },
    )
    .await
}

/// Signs an audit checkpoint when events were appended since the last one,
/// so a quiet vault's latest events are covered (and anchored in the records
/// database) without waiting for 256 more or a clean stop.
async fn checkpoint_timer(app: Arc<App>, every: Duration) {
    every_interval(
        app,
        every,
        "audit checkpoint",
        |v| v.checkpoint_now(),
        |_| None,
    )
    .await
}

/// The local socket to create.
#[derive(Debug)]
struct SocketSpec {
    path: PathBuf,
    mode: u32,
    owner: Option<String>,
    group: Option<String>,
}

/// A user or group given by name (looked up in `file`, `/etc/passwd` or
/// `/etc/group`) or by number.
fn os_id(file: &str, what: &str, name: &str) -> anyhow::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let table = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    table
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name))
                .then(|| f.nth(1).and_then(|id| id.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| anyhow::anyhow!("no {what} named {name:?} in {file}"))
}

/// Creates the socket: refuses to take over one a running server answers
/// on, removes a stale one, then sets owner, group and mode. Connecting
/// needs write permission on the socket, which the umask's mode (0755 under
/// the usual 022) grants no one but the server's user until the mode is
/// set; the server accepts nothing before that.
async fn bind_socket(spec: &SocketSpec) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = &spec.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: refusing to replace it",
                path.display()
            );
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another pivault-server is listening on {}: stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| {
        format!(
            "cannot create the socket {} (give --socket PATH, or --no-socket)",
            path.display()
        )
    })?;
    let uid = spec
        .owner
        .as_deref()
        .map(|o| os_id("/etc/passwd", "user", o))
        .transpose()?;
    let gid = spec
        .group
        .as_deref()
        .map(|g| os_id("/etc/group", "group", g))
        .transpose()?;
    let setup = || -> anyhow::Result<()> {
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid)
                .with_context(|| format!("cannot change the owner of {}", path.display()))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(spec.mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Destroys the keys of backups past their expiry (the copies are then
/// crypto-erased), without waiting for the next open or `backup list`.
async fn backup_expiry_timer(app: Arc<App>, every: Duration) {
    every_interval(
        app,
        every,
        "backup expiry",
        |v| v.run_backup_expiry(),
        |n| (*n > 0).then(|| format!("{n} backup(s) expired")),
    )
    .await
}

/// Deletes the rows of sessions and tokens that can no longer be used, and
/// the two-person requests that can no longer be approved.
async fn session_sweep_timer(app: Arc<App>, every: Duration) {
    every_interval(
        app,
        every,
        "session sweep",
        |v| Ok((v.sweep_sessions()?, v.sweep_expired_requests()?)),
        |(n, r)| {
            (*n > 0 || *r > 0)
                .then(|| format!("{n} expired session(s) removed, {r} expired request(s) removed"))
        },
    )
    .await
}

/// Runs retention when the schedule stored in the vault is on and due; the
/// schedule is the admin's setting, not a flag of the server.
async fn retention_schedule_timer(app: Arc<App>, every: Duration) {
    every_interval(
        app,
        every,
        "scheduled retention",
        |v| v.run_scheduled_retention(),
        |o| {
            o.as_ref().map(|o| match o.certificate_id {
                Some(c) => format!("{} record(s) disposed, certificate {c}", o.records.len()),
                None => "nothing past retention".to_owned(),
            })
        },
    )
    .await
}

/// Reads the holder's published address into `f` twice a second while
/// `watching`. A failed read (the cluster failing over) leaves nowhere to
/// forward until it answers again, and is reported once.
fn watch_holder(
    lookup: &vault_core::HolderLookup,
    f: &vault_server::forward::Forwarder,
    watching: &std::sync::atomic::AtomicBool,
) {
    let mut failing = false;
    while watching.load(std::sync::atomic::Ordering::SeqCst) {
        match lookup.address() {
            Ok(a) => {
                failing = false;
                f.set_holder(a);
            }
            Err(e) => {
                if !failing {
                    eprintln!(
                        "pivault-server: cannot read the holder's address ({}): {e}",
                        e.code()
                    );
                    failing = true;
                }
                f.set_holder(None);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A standby's front door while it waits for the vault: every request
/// forwarded to the holder (`vault_server::forward`), on a copy of the
/// socket the vault's server will use; the holder's published address is
/// read again twice a second.
pub(crate) struct Standby {
    handle: axum_server::Handle<SocketAddr>,
    watching: Arc<std::sync::atomic::AtomicBool>,
    forwarder: Arc<vault_server::forward::Forwarder>,
}

impl Standby {
    pub(crate) fn start(
        rt: &tokio::runtime::Handle,
        listener: &std::net::TcpListener,
        tls: Option<rustls::ServerConfig>,
        tls_files: Option<(&Path, &Path)>,
        lookup: vault_core::HolderLookup,
        args: &Args,
    ) -> anyhow::Result<Standby> {
        // The holder's own timeout, and time to reach it.
        let answer_within = Duration::from_secs(args.timeout_secs.max(1) + 10);
        let header_timeout = Duration::from_secs(args.header_timeout_secs.max(1));
        let forwarder = Arc::new(vault_server::forward::Forwarder::new(
            tls_files.context("a standby forwards only over TLS")?,
            lookup.vault_id(),
            answer_within,
        )?);
        // The address is read on a thread of its own, not between the
        // (slow) tries to open the vault: a holder that died leaves its
        // address behind, and the standby must stop using it at once.
        let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // Read once before the first request is taken.
        forwarder.set_holder(lookup.address().ok().flatten());
        {
            let (f, w) = (forwarder.clone(), watching.clone());
            std::thread::Builder::new()
                .name("pivault-holder-watch".into())
                .spawn(move || watch_holder(&lookup, &f, &w))?;
        }
        let cap = vault_server::limits::ConnectionLimit::standalone(
            args.max_connections.max(1),
            args.max_connections_per_source.max(1),
        );
        let handle = axum_server::Handle::new();
        let _guard = rt.enter();
        let forwarder_kept = forwarder.clone();
        let svc = vault_server::forward::router(forwarder)
            .into_make_service_with_connect_info::<vault_server::Peer>();
        let mut server = axum_server::from_tcp(listener.try_clone()?)?.http1_only();
        http1_timeouts(server.http_builder(), header_timeout);
        let server = server.handle(handle.clone());
        let cfg = tls.context("a standby forwards only over TLS")?;
        let cfg = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg));
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(cfg)
            .handshake_timeout(header_timeout)
            .acceptor(cap);
        rt.spawn(server.acceptor(acceptor).serve(svc));
        Ok(Standby {
            handle,
            watching,
            forwarder: forwarder_kept,
        })
    }

    pub(crate) fn forwarder(&self) -> Arc<vault_server::forward::Forwarder> {
        self.forwarder.clone()
    }

    pub(crate) fn stop(self) {
        self.watching
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
    }
}

/// Whether the holder `f` forwards to answers, within 1 s.
pub(crate) fn holder_answers(
    f: &vault_server::forward::Forwarder,
    rt: &tokio::runtime::Handle,
) -> bool {
    rt.block_on(f.holder_answers(Duration::from_secs(1)))
}

/// A standby's patience with a holder whose lock is free but which still
/// answers: a failover ended the lock's session, and the holder takes the
/// lock again itself within its renewal. Opening the vault meanwhile would
/// take it from a live holder, which alone can send again the audit events
/// it committed lazily before the failover (taken from it, the new holder
/// would find those writes without their events and roll them back). Past
/// the lease since the lock was first seen free, a holder that still has
/// not taken it is cut off from the cluster, and the vault is taken over.
#[derive(Default)]
pub(crate) struct Patience {
    free_since: Option<Instant>,
}

impl Patience {
    /// Whether to hold off opening now, given whether the lock is held
    /// (`None`: not known) and, asked only when the lock is free, whether
    /// the holder answers.
    pub(crate) fn hold_off(&mut self, held: Option<bool>, answers: impl FnOnce() -> bool) -> bool {
        self.hold_off_at(Instant::now(), held, answers)
    }

    fn hold_off_at(
        &mut self,
        now: Instant,
        held: Option<bool>,
        answers: impl FnOnce() -> bool,
    ) -> bool {
        match held {
            Some(false) => {
                let since = *self.free_since.get_or_insert(now);
                now.duration_since(since) < vault_core::CLUSTER_LEASE && answers()
            }
            _ => {
                self.free_since = None;
                false
            }
        }
    }
}

/// A watch that turns true at SIGTERM or Ctrl-C: the server stops.
fn stop_on_signal(rt: &tokio::runtime::Runtime) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        shutdown_signal().await;
        eprintln!("pivault-server: shutting down; finishing requests in flight");
        let _ = tx.send(true);
    });
    rx
}

/// Serves `app` on `listener` (and the socket) until `stop` turns true or
/// another process takes the vault over.
async fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    socket: Option<SocketSpec>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    hosted: bool,
) -> anyhow::Result<()> {
    use vault_server::Peer;
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    let app2 = app.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let grace = tokio::select! {
            _ = stop.wait_for(|s| *s) => Duration::from_secs(60),
            () = taken_over(&app2) => {
                // Every request from now on is refused by the vault itself
                // (`taken_over`); those in flight end with the same answer.
                eprintln!(
                    "pivault-server: another process took the vault {} over; stopping its server{}",
                    app2.vault().id(),
                    if hosted { "" } else { " (exit code 75)" }
                );
                Duration::from_secs(5)
            }
        };
        app2.drain();
        let _ = stop_tx.send(true);
        h2.graceful_shutdown(Some(grace));
    });
    let limits = app.limits().clone();
    let cap = app.connection_limit();
    let local_handle = axum_server::Handle::new();
    let local_server = match &socket {
        Some(spec) => {
            let listener = bind_socket(spec).await?.into_std()?;
            // The socket gets the same caps and timeouts as TCP (a local
            // client cannot hold connections open unserved either); the
            // kernel's peer credentials become each request's `Peer`.
            let mut server = axum_server::from_unix(listener)?.http1_only();
            http1_timeouts(server.http_builder(), limits.header_timeout);
            let svc = vault_server::app(app.clone()).into_make_service();
            let server = server.acceptor(cap.local()).handle(local_handle.clone());
            let mut stop = stop_rx.clone();
            let h = local_handle.clone();
            tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                h.graceful_shutdown(Some(Duration::from_secs(60)));
            });
            eprintln!(
                "pivault-server: listening on unix:{} (mode {:04o})",
                spec.path.display(),
                spec.mode
            );
            Some(tokio::spawn(async move { server.serve(svc).await }))
        }
        None => None,
    };
    // The line tests and scripts wait for (the port may be 0 = chosen by the
    // OS); with many vaults, the vault's ID and directory first.
    let vault = if hosted {
        format!(
            "vault {} ({}) ",
            app.vault().id(),
            app.vault().dir().display()
        )
    } else {
        String::new()
    };
    let svc = vault_server::app(app).into_make_service_with_connect_info::<Peer>();
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("pivault-server: {vault}listening on {scheme}://{local}");
    // At most `max_connections` open at once, and `max_connections_per_source`
    // per source, closed at accept past them, before TLS; so are sources
    // shut out for refusals. The handshake and every request's headers within
    // `header_timeout`, which also ends idle keep-alive connections
    // (hyper's header-read timer runs while it waits for the next request).
    let mut server = axum_server::from_tcp(listener)?.http1_only();
    http1_timeouts(server.http_builder(), limits.header_timeout);
    match tls {
        Some(cfg) => {
            let cfg = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(cfg));
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(cfg)
                .handshake_timeout(limits.header_timeout)
                .acceptor(cap);
            server.acceptor(acceptor).handle(handle).serve(svc).await?
        }
        None => server.acceptor(cap).handle(handle).serve(svc).await?,
    }
    if let (Some(task), Some(spec)) = (local_server, &socket) {
        // Requests in flight on the socket finish too (bounded like TCP's).
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        let _ = std::fs::remove_file(&spec.path);
    }
    Ok(())
}

/// HTTP/1.1 with keep-alive, and hyper's header-read timeout on a Tokio
/// timer: a client must send each request's headers within `header`, and
/// an idle keep-alive connection is closed after it.
fn http1_timeouts(
    b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    header: Duration,
) {
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header)
        .keep_alive(true);
}

/// Resolves once another process took the vault over (this process's
/// lease on its cluster lapsed).
async fn taken_over(app: &App) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if app.vault().lease_lost() {
            return;
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod patience_tests {
    use super::*;

    /// A standby holds off only while the lock is free and the holder
    /// answers, and for no longer than the lease since it saw the lock
    /// free; a lock held again starts the count afresh.
    #[test]
    fn a_standby_holds_off_a_live_holder_for_at_most_the_lease() {
        let lease = vault_core::CLUSTER_LEASE;
        let t0 = Instant::now();
        let mut p = Patience::default();
        assert!(!p.hold_off_at(t0, Some(true), || panic!("not asked while held")));
        assert!(!p.hold_off_at(t0, None, || panic!("not asked when unknown")));
        assert!(
            p.hold_off_at(t0, Some(false), || true),
            "free, the holder answers"
        );
        assert!(!p.hold_off_at(t0, Some(false), || false), "free, no answer");
        let late = t0 + lease - Duration::from_millis(1);
        assert!(p.hold_off_at(late, Some(false), || true));
        assert!(
            !p.hold_off_at(t0 + lease, Some(false), || true),
            "past the lease: cut off from the cluster, taken over"
        );
        // Held again, then free again: a new count.
        assert!(!p.hold_off_at(t0 + lease, Some(true), || true));
        assert!(p.hold_off_at(
            t0 + lease * 2 - Duration::from_millis(1),
            Some(false),
            || true
        ));
    }
}
