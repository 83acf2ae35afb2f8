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
//!
//! With `--standby`, a second process over the same vaults (a provider's
//! second machine) stands by for each vault another process holds: it
//! listens at the vault's address and forwards every request to the holder
//! (as `--vault … --standby` does for one vault), and takes that vault over
//! when its holder stops or its lease lapses, while the vaults it already
//! holds go on. A vault it serves that another process takes over is stood
//! by for again, instead of ending the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// What opening a hosted vault came to.
enum Opened {
    Ready(Box<Ready>),
    /// Held by another process, and this one stands by (`--standby`):
    /// its address bound, and where to read the holder's (records on a
    /// cluster; `None` for records embedded, whose holder is on this
    /// machine).
    Busy {
        entry: Hosted,
        listener: std::net::TcpListener,
        lookup: Option<Box<vault_core::HolderLookup>>,
    },
}

/// A vault another process holds, stood by for: its requests forwarded to
/// the holder while a thread tries to open it, once a second.
struct Waiting {
    serial: u64,
    /// Stops the thread's tries.
    cancel: Arc<AtomicBool>,
    standby: Option<crate::Standby>,
    entry: Hosted,
}

impl Waiting {
    fn stop(self) {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(s) = self.standby {
            s.stop();
        }
    }
}

/// What a standing-by thread reports: the vault opened here, or a failure
/// other than another holder (reported by the thread).
enum Turn {
    Opened(Box<Ready>),
    Failed,
}

/// How every hosted vault is opened (from the flags).
#[derive(Clone, Copy)]
struct OpenWith {
    sync: bool,
    service_calls_per_minute: u32,
    /// Stand by for a vault another process holds.
    standby: bool,
    /// Forward to its holder meanwhile (TLS: the holder is pinned).
    forward: bool,
}

impl OpenWith {
    fn options(self) -> OpenOptions {
        OpenOptions {
            sync: self.sync,
            service_calls_per_minute: self.service_calls_per_minute.max(1),
            ..OpenOptions::default()
        }
    }
}

/// Binds the vault's address, then opens it with its own passphrase.
fn open_one(v: &Hosted, how: OpenWith) -> anyhow::Result<Opened> {
    let listener = std::net::TcpListener::bind(v.bind)
        .with_context(|| format!("cannot listen on {}", v.bind))?;
    listener.set_nonblocking(true)?;
    let pass = crate::passphrase(Some(&v.passphrase_file))?;
    match Vault::open(&v.dir, &pass, how.options()) {
        Ok(vault) => Ok(Opened::Ready(Box::new(Ready {
            entry: v.clone(),
            vault,
            listener,
        }))),
        Err(vault_core::Error::VaultBusy) if how.standby => Ok(Opened::Busy {
            entry: v.clone(),
            listener,
            lookup: holder_lookup(v, how)?.map(Box::new),
        }),
        Err(e) => Err(anyhow::anyhow!("{} ({})", e, e.code())),
    }
}

/// Where a standby reads the holder's address, when it forwards (TLS) and
/// the vault's records are on a cluster.
fn holder_lookup(v: &Hosted, how: OpenWith) -> anyhow::Result<Option<vault_core::HolderLookup>> {
    match how.forward {
        true => Vault::holder_lookup(&v.dir)
            .context("cannot reach the records cluster to find the holder"),
        false => Ok(None),
    }
}

/// Tries to open a vault another process holds, once a second, until it
/// opens here (sent as [`Turn::Opened`] with `listener`, or the address
/// bound anew), fails otherwise ([`Turn::Failed`]), or `cancel` is set.
/// While forwarding (`forwarder`), it holds off a live holder whose lock
/// is free for a moment ([`crate::Patience`]).
fn stand_by(
    entry: Hosted,
    listener: Option<std::net::TcpListener>,
    how: OpenWith,
    cancel: &AtomicBool,
    forwarder: Option<(
        Arc<vault_server::forward::Forwarder>,
        tokio::runtime::Handle,
    )>,
) -> Option<Turn> {
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!(
            "pivault-server: no longer standing by for the vault {}: {e}",
            entry.dir.display()
        );
        Some(Turn::Failed)
    };
    let pass = match crate::passphrase(Some(&entry.passphrase_file)) {
        Ok(p) => p,
        Err(e) => return failed(&format!("{e:#}")),
    };
    let mut failing = false;
    let lock = forwarder
        .as_ref()
        .and_then(|_| Vault::holder_lookup(&entry.dir).ok().flatten());
    let mut patience = crate::Patience::default();
    loop {
        if cancel.load(Ordering::SeqCst) {
            return None;
        }
        if let (Some((f, rt)), Some(l)) = (&forwarder, &lock)
            && patience.hold_off(l.lock_held().ok(), || crate::holder_answers(f, rt))
        {
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        match Vault::open(&entry.dir, &pass, how.options()) {
            Ok(vault) => {
                let listener = match listener {
                    Some(l) => l,
                    None => match std::net::TcpListener::bind(entry.bind)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = vault.close();
                            return failed(&format!("cannot listen on {}: {e}", entry.bind));
                        }
                    },
                };
                return Some(Turn::Opened(Box::new(Ready {
                    entry,
                    vault,
                    listener,
                })));
            }
            Err(vault_core::Error::VaultBusy) => std::thread::sleep(Duration::from_secs(1)),
            // The cluster failing over or out of reach: waited out.
            Err(e) if crate::passing(&e) => {
                if !failing {
                    eprintln!(
                        "pivault-server: standing by for the vault {}: cannot reach its cluster now ({}): {e}; trying again every second",
                        entry.dir.display(),
                        e.code()
                    );
                    failing = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return failed(&format!("{e} ({})", e.code())),
        }
    }
}

/// Opens `vaults` a few at a time (each open derives its key with
/// Argon2id): the ones that opened (or, standing by, that another process
/// holds), in the given order; the others are reported by their directory.
fn open_all(vaults: &[Hosted], how: OpenWith) -> Vec<Opened> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(vaults.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Opened>>> =
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
    /// The vaults stood by for (`--standby`), by directory.
    standing: HashMap<PathBuf, Waiting>,
    /// A standing-by thread's report, with the serial of its [`Waiting`].
    turns: tokio::sync::mpsc::UnboundedSender<(PathBuf, u64, Turn)>,
}

impl Host<'_> {
    fn how(&self) -> OpenWith {
        OpenWith {
            sync: self.args.sync,
            service_calls_per_minute: self.args.service_calls_per_minute,
            standby: self.args.standby,
            forward: self.tls.is_some(),
        }
    }

    /// Opens and serves `vaults` (none of them served or stood by for yet);
    /// with `--standby`, stands by for those another process holds.
    async fn start(&mut self, vaults: Vec<Hosted>, running: &mut HashMap<PathBuf, Running>) {
        if vaults.is_empty() {
            return;
        }
        let how = self.how();
        let opened = tokio::task::spawn_blocking(move || open_all(&vaults, how))
            .await
            .unwrap_or_default();
        for o in opened {
            match o {
                Opened::Ready(r) => self.serve(*r, running),
                Opened::Busy {
                    entry,
                    listener,
                    lookup,
                } => self.wait_for(entry, Some(listener), lookup.map(|l| *l)),
            }
        }
    }

    /// Stands by for the vault of `entry`, which another process holds:
    /// forwards its requests to the holder on `listener` (given `lookup`;
    /// else the address waits unbound), and tries to open it once a second.
    fn wait_for(
        &mut self,
        entry: Hosted,
        listener: Option<std::net::TcpListener>,
        lookup: Option<vault_core::HolderLookup>,
    ) {
        let rt = tokio::runtime::Handle::current();
        let tls_files = self
            .args
            .tls_cert
            .as_deref()
            .zip(self.args.tls_key.as_deref());
        let dir = entry.dir.display().to_string();
        let standby = match (&listener, lookup) {
            (Some(l), Some(lookup)) => {
                let vault = lookup.vault_id();
                match crate::Standby::start(&rt, l, self.tls.clone(), tls_files, lookup, self.args)
                {
                    Ok(s) => {
                        let at = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                        eprintln!(
                            "pivault-server: vault {vault} ({dir}) standing by on https://{at}: forwarding requests to the holder"
                        );
                        Some(s)
                    }
                    Err(e) => {
                        eprintln!(
                            "pivault-server: vault {vault} ({dir}) standing by without forwarding: {e:#}"
                        );
                        None
                    }
                }
            }
            _ => {
                eprintln!(
                    "pivault-server: vault ({dir}) standing by: another process holds it; taking it over once that process stops or its lease lapses"
                );
                None
            }
        };
        // Unbound until the vault is held here, when nothing forwards on it.
        let listener = listener.filter(|_| standby.is_some());
        self.serials += 1;
        let (serial, key, turns) = (self.serials, entry.key.clone(), self.turns.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        let how = self.how();
        let (e, c) = (entry.clone(), cancel.clone());
        let forwarder = standby.as_ref().map(|s| (s.forwarder(), rt.clone()));
        let spawned = std::thread::Builder::new()
            .name("pivault-standby".into())
            .spawn(move || {
                if let Some(turn) = stand_by(e, listener, how, &c, forwarder) {
                    let _ = turns.send((key, serial, turn));
                }
            });
        if let Err(e) = spawned {
            eprintln!("pivault-server: not standing by for the vault {dir}: {e}");
            return;
        }
        self.standing.insert(
            entry.key.clone(),
            Waiting {
                serial,
                cancel,
                standby,
                entry,
            },
        );
    }

    /// A standing-by thread's report: the vault opened here is served (the
    /// forwarding stops first; its connections finish), unless it was
    /// removed or changed meanwhile.
    async fn turn(
        &mut self,
        key: PathBuf,
        serial: u64,
        turn: Turn,
        running: &mut HashMap<PathBuf, Running>,
    ) {
        let current = self.standing.get(&key).is_some_and(|w| w.serial == serial);
        match turn {
            Turn::Opened(r) if current => {
                if let Some(w) = self.standing.remove(&key) {
                    w.stop();
                }
                eprintln!(
                    "pivault-server: vault {} ({}) taken over",
                    r.vault.id(),
                    r.entry.dir.display()
                );
                self.serve(*r, running);
            }
            Turn::Opened(r) => {
                let _ = tokio::task::spawn_blocking(move || r.vault.close()).await;
            }
            Turn::Failed if current => {
                if let Some(w) = self.standing.remove(&key) {
                    w.stop();
                }
            }
            Turn::Failed => {}
        }
    }

    /// Serves a vault opened here.
    fn serve(&mut self, r: Ready, running: &mut HashMap<PathBuf, Running>) {
        let key_file = self.args.tls_key.as_deref().filter(|_| self.tls.is_some());
        let rt = tokio::runtime::Handle::current();
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
        let advertise = r
            .listener
            .local_addr()
            .ok()
            .and_then(|local| crate::advertised_address(r.entry.advertise.as_deref(), local));
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

    /// A vault whose server ended by itself: retired, and with `--standby`
    /// stood by for again when another process took it over and the file
    /// still names it.
    async fn ended(&mut self, r: Running) {
        let entry = r.entry.clone();
        let taken_over = r.app.vault().lease_lost();
        let _ = self.retire_reported(r, "its server ended").await;
        if !(self.args.standby && taken_over) {
            return;
        }
        let how = self.how();
        let bound = tokio::task::spawn_blocking(move || {
            let listener = std::net::TcpListener::bind(entry.bind)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| format!("cannot listen on {}", entry.bind))?;
            let lookup = holder_lookup(&entry, how)?;
            anyhow::Ok((entry, listener, lookup))
        })
        .await;
        match bound {
            Ok(Ok((entry, listener, lookup))) => self.wait_for(entry, Some(listener), lookup),
            Ok(Err(e)) => eprintln!("pivault-server: not standing by again: {e:#}"),
            Err(e) => eprintln!("pivault-server: not standing by again: {e}"),
        }
    }

    /// `, standing by for N` when this process stands by for any vault.
    fn standing_by(&self) -> String {
        match self.standing.len() {
            0 => String::new(),
            n => format!(", standing by for {n}"),
        }
    }

    /// Stops standing by for the vaults `keep` does not keep (forwarding
    /// and tries).
    fn stop_standing(&mut self, keep: impl Fn(&Waiting) -> bool) {
        let gone: Vec<PathBuf> = self
            .standing
            .iter()
            .filter(|(_, w)| !keep(w))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(w) = self.standing.remove(&k) {
                eprintln!(
                    "pivault-server: no longer standing by for the vault {}",
                    w.entry.dir.display()
                );
                w.stop();
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
        self.stop_standing(|w| wanted.get(&w.entry.key) == Some(&w.entry));
        let new: Vec<Hosted> = plan
            .vaults
            .into_iter()
            .filter(|v| !running.contains_key(&v.key) && !self.standing.contains_key(&v.key))
            .collect();
        let wanted = wanted.len();
        self.start(new, running).await;
        eprintln!(
            "pivault-server: reloaded {}: serving {} of {wanted} vault(s){}",
            self.file.display(),
            running.len(),
            self.standing_by()
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
    let (turns, mut turns_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut host = Host {
        args,
        file,
        tls,
        limits,
        capacity,
        ended,
        serials: 0,
        standing: HashMap::new(),
        turns,
    };
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let mut running = HashMap::new();
        let wanted = plan.vaults.len();
        host.start(plan.vaults, &mut running).await;
        if running.is_empty() && host.standing.is_empty() {
            bail!(
                "none of the {wanted} vault(s) of {} can be served",
                file.display()
            );
        }
        eprintln!(
            "pivault-server: serving {} of {wanted} vault(s) from {}{}",
            running.len(),
            file.display(),
            host.standing_by()
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
                        host.ended(r).await;
                    }
                }
                Some((key, serial, turn)) = turns_rx.recv() => {
                    host.turn(key, serial, turn, &mut running).await;
                }
            }
        }
        eprintln!("pivault-server: shutting down; finishing requests in flight");
        host.stop_standing(|_| false);
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
