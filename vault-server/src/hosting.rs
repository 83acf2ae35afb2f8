//! `pivault-server --hosting FILE`: many vaults served by one process (a
//! service provider's server, issue 16).
//!
//! Each vault keeps everything that is its own: its passphrase or key
//! file, its listener (address and port, so each business reaches its own
//! vault at its own origin and no request names another's), its users and
//! tokens, its rate limits and audit trail. What the vaults share is what
//! bounds the process: the worker threads (each vault on a lane of its own,
//! served in turn), the password checks (Argon2id's memory), long work and
//! buffered bodies ([`vault_server::Capacity`]), and the connections to a
//! cluster (`--cluster-connections`).
//!
//! A vault that cannot be served (a wrong passphrase, a busy vault, an
//! address taken) is reported by its directory and skipped, so one
//! business's problem never keeps the others offline; the process fails
//! only when no vault can be served at start.
//!
//! SIGHUP reads the file again: a vault added is opened and served, one
//! removed stops (its requests in flight finish) and is closed cleanly, one
//! whose line changed is stopped and served anew; the others go on
//! untouched, their clients' tokens and connections with them. A file that
//! no longer reads is reported and changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use vault_core::Vault;
use vault_core::vault::OpenOptions;
use vault_server::{App, Capacity};

use crate::Args;

/// The hosting file: the vaults this process serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    vaults: Vec<Hosted>,
}

/// One vault of the hosting file. Relative paths are taken from the
/// hosting file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hosted {
    /// The vault directory.
    dir: PathBuf,
    /// The file holding its passphrase or key file (owner-only mode).
    passphrase_file: PathBuf,
    /// Where its clients reach it.
    bind: SocketAddr,
    /// The address its standbys elsewhere forward to (records on a cluster).
    #[serde(default)]
    advertise: Option<String>,
    /// The directory's canonical path: which vault this is, across reloads.
    #[serde(skip)]
    key: PathBuf,
}

impl Plan {
    /// Reads and checks the hosting file: at least one vault, no directory
    /// or fixed address twice (a copied line would otherwise serve one
    /// vault under another's passphrase file or fail at bind).
    fn read(file: &Path, tls: bool) -> anyhow::Result<Plan> {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read the hosting file {}", file.display()))?;
        let mut plan: Plan = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a hosting file ({{\"vaults\": [{{\"dir\", \"passphrase_file\", \"bind\"}}, …]}})",
                file.display()
            )
        })?;
        if plan.vaults.is_empty() {
            bail!("the hosting file {} names no vault", file.display());
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let mut dirs = std::collections::HashSet::new();
        let mut binds = std::collections::HashSet::new();
        for v in &mut plan.vaults {
            v.dir = base.join(&v.dir);
            v.passphrase_file = base.join(&v.passphrase_file);
            v.key = v.dir.canonicalize().unwrap_or_else(|_| v.dir.clone());
            if !dirs.insert(v.key.clone()) {
                bail!("the hosting file names the vault {} twice", v.dir.display());
            }
            if v.bind.port() != 0 && !binds.insert(v.bind) {
                bail!("the hosting file gives the address {} twice", v.bind);
            }
            if !tls && !v.bind.ip().is_loopback() {
                bail!(
                    "refusing to serve the vault {} on {} without TLS: give --tls-cert and --tls-key (or bind it to 127.0.0.1)",
                    v.dir.display(),
                    v.bind
                );
            }
        }
        Ok(plan)
    }
}

/// A vault opened and its listener bound, ready to serve.
struct Ready {
    entry: Hosted,
    vault: Vault,
    listener: std::net::TcpListener,
}

/// How every hosted vault is opened (from the flags).
#[derive(Clone, Copy)]
struct OpenWith {
    sync: bool,
    service_calls_per_minute: u32,
}

/// Binds the vault's address, then opens it with its own passphrase.
fn open_one(v: &Hosted, how: OpenWith) -> anyhow::Result<Ready> {
    let listener = std::net::TcpListener::bind(v.bind)
        .with_context(|| format!("cannot listen on {}", v.bind))?;
    listener.set_nonblocking(true)?;
    let pass = crate::passphrase(Some(&v.passphrase_file))?;
    let vault = Vault::open(
        &v.dir,
        &pass,
        OpenOptions {
            sync: how.sync,
            service_calls_per_minute: how.service_calls_per_minute.max(1),
            ..OpenOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
    Ok(Ready {
        entry: v.clone(),
        vault,
        listener,
    })
}

/// Opens `vaults` a few at a time (each open derives its key with
/// Argon2id): the ones that opened, in the given order; the others are
/// reported by their directory.
fn open_all(vaults: &[Hosted], how: OpenWith) -> Vec<Ready> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(vaults.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Ready>>> =
        vaults.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(v) = vaults.get(i) else { return };
                    match open_one(v, how) {
                        Ok(r) => *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r),
                        Err(e) => eprintln!(
                            "pivault-server: not serving the vault {}: {e:#}",
                            v.dir.display()
                        ),
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

/// A vault being served.
struct Running {
    entry: Hosted,
    app: Arc<App>,
    /// Stops this vault's server alone.
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Tells [`Host::supervise`] which server ended by itself.
    serial: u64,
    advertised: bool,
}

/// The hosting process: what every vault's server is started with.
struct Host<'a> {
    args: &'a Args,
    file: &'a Path,
    tls: Option<rustls::ServerConfig>,
    limits: vault_server::Limits,
    capacity: Arc<Capacity>,
    /// A server that ended by itself (taken over, failed) sends its serial.
    ended: tokio::sync::mpsc::UnboundedSender<(PathBuf, u64)>,
    serials: u64,
}

impl Host<'_> {
    /// Opens and serves `vaults` (none of them served yet).
    async fn start(&mut self, vaults: Vec<Hosted>, running: &mut HashMap<PathBuf, Running>) {
        if vaults.is_empty() {
            return;
        }
        let how = OpenWith {
            sync: self.args.sync,
            service_calls_per_minute: self.args.service_calls_per_minute,
        };
        let ready = tokio::task::spawn_blocking(move || open_all(&vaults, how))
            .await
            .unwrap_or_default();
        let key_file = self.args.tls_key.as_deref().filter(|_| self.tls.is_some());
        let rt = tokio::runtime::Handle::current();
        for r in ready {
            let app = App::sharing(
                Arc::new(r.vault),
                self.limits.clone(),
                self.capacity.clone(),
            );
            if let Some(key) = key_file {
                match vault_server::forward::ForwardingKey::from_tls_key(key, app.vault().id()) {
                    Ok(k) => app.trust_standbys(k),
                    Err(e) => eprintln!(
                        "{} standbys' forwarded client addresses not trusted: {e:#}",
                        app.log()
                    ),
                }
            }
            crate::start_timers(&rt, &app, self.args);
            let advertise =
                r.listener.local_addr().ok().and_then(|local| {
                    crate::advertised_address(r.entry.advertise.as_deref(), local)
                });
            let advertised = match advertise {
                Some(addr) if app.vault().records_on_cluster() => {
                    rt.spawn(crate::keep_published(app.clone(), addr));
                    true
                }
                _ => false,
            };
            self.serials += 1;
            let (serial, key, ended) = (self.serials, r.entry.key.clone(), self.ended.clone());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let served = crate::serve(
                app.clone(),
                r.listener,
                self.tls.clone(),
                None,
                stopped,
                true,
            );
            let task = tokio::spawn(async move {
                let r = served.await;
                let _ = ended.send((key, serial));
                r
            });
            running.insert(
                r.entry.key.clone(),
                Running {
                    entry: r.entry,
                    app,
                    stop,
                    task,
                    serial,
                    advertised,
                },
            );
        }
    }

    /// Stops a vault's server (its requests in flight finish), waits until
    /// nothing else holds the vault, and closes it cleanly.
    async fn retire(&self, r: Running) -> anyhow::Result<()> {
        let _ = r.stop.send(true);
        let served = r.task.await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (Arc::strong_count(&r.app) > 1 || Arc::strong_count(r.app.vault()) > 1)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (app, advertised) = (r.app, r.advertised);
        match served {
            Ok(Ok(())) => tokio::task::spawn_blocking(move || crate::finish(app, advertised))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("closing it failed: {e}"))),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("its server failed: {e}")),
        }
    }

    /// Retires a vault and reports how it went; `Err` when it did not close
    /// cleanly.
    async fn retire_reported(&self, r: Running, why: &str) -> Result<(), ()> {
        let log = r.app.log().to_owned();
        match self.retire(r).await {
            Ok(()) => {
                eprintln!("{log} stopped and closed ({why})");
                Ok(())
            }
            Err(e) => {
                eprintln!("{log} {e:#}");
                Err(())
            }
        }
    }

    /// SIGHUP: serves what the file says now (module doc).
    async fn reload(&mut self, running: &mut HashMap<PathBuf, Running>) {
        let plan = match Plan::read(self.file, self.tls.is_some()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!(
                    "pivault-server: not reloading {}: {e:#}; serving as before",
                    self.file.display()
                );
                return;
            }
        };
        let wanted: HashMap<PathBuf, Hosted> = plan
            .vaults
            .iter()
            .map(|v| (v.key.clone(), v.clone()))
            .collect();
        let gone: Vec<PathBuf> = running
            .iter()
            .filter(|(k, r)| wanted.get(*k) != Some(&r.entry))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(r) = running.remove(&k) {
                let why = if wanted.contains_key(&k) {
                    "its line in the hosting file changed"
                } else {
                    "removed from the hosting file"
                };
                let _ = self.retire_reported(r, why).await;
            }
        }
        let new: Vec<Hosted> = plan
            .vaults
            .into_iter()
            .filter(|v| !running.contains_key(&v.key))
            .collect();
        let wanted = wanted.len();
        self.start(new, running).await;
        eprintln!(
            "pivault-server: reloaded {}: serving {} of {wanted} vault(s)",
            self.file.display(),
            running.len()
        );
    }
}

/// Serves every vault of `file` until SIGTERM (SIGHUP reads it again);
/// each closed cleanly after.
pub(crate) fn run(
    args: &Args,
    file: &Path,
    tls: Option<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let plan = Plan::read(file, tls.is_some())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let limits = crate::limits_from(args);
    let capacity = Capacity::new(&limits).context("cannot start the vault worker threads")?;
    let (ended, mut ended_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut host = Host {
        args,
        file,
        tls,
        limits,
        capacity,
        ended,
        serials: 0,
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut running = HashMap::new();
        let wanted = plan.vaults.len();
        host.start(plan.vaults, &mut running).await;
        if running.is_empty() {
            bail!(
                "none of the {wanted} vault(s) of {} can be served",
                file.display()
            );
        }
        eprintln!(
            "pivault-server: serving {} of {wanted} vault(s) from {}",
            running.len(),
            file.display()
        );
        let term = crate::shutdown_signal();
        tokio::pin!(term);
        loop {
            tokio::select! {
                () = &mut term => break,
                _ = hup.recv() => host.reload(&mut running).await,
                Some((key, serial)) = ended_rx.recv() => {
                    // A server that ended by itself: its vault was taken
                    // over by another process, or the server failed.
                    if running.get(&key).is_some_and(|r| r.serial == serial) {
                        let r = running.remove(&key).expect("just found");
                        let _ = host.retire_reported(r, "its server ended").await;
                    }
                }
            }
        }
        eprintln!("pivault-server: shutting down; finishing requests in flight");
        for r in running.values() {
            let _ = r.stop.send(true);
        }
        let mut failed = 0;
        for (_, r) in running.drain() {
            if host.retire_reported(r, "shut down").await.is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} vault(s) did not stop cleanly");
        }
        eprintln!("pivault-server: stopped");
        Ok(())
    })
}
