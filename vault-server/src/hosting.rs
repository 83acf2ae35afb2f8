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
//! only when no vault can be served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use vault_core::Vault;
use vault_core::secret::SecretString;
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
#[derive(Debug, Deserialize)]
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
            let canonical = v.dir.canonicalize().unwrap_or_else(|_| v.dir.clone());
            if !dirs.insert(canonical) {
                bail!(
                    "the hosting file names the vault {} twice",
                    v.dir.display()
                );
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
    vault: Vault,
    listener: std::net::TcpListener,
    advertise: Option<String>,
}

/// Binds the vault's address, then opens it with its own passphrase.
fn open_one(v: &Hosted, args: &Args) -> anyhow::Result<Ready> {
    let listener = std::net::TcpListener::bind(v.bind)
        .with_context(|| format!("cannot listen on {}", v.bind))?;
    listener.set_nonblocking(true)?;
    let pass = SecretString::from_private_file(&v.passphrase_file).with_context(|| {
        format!(
            "cannot use the passphrase file {}",
            v.passphrase_file.display()
        )
    })?;
    if pass.expose().is_empty() {
        bail!(
            "the passphrase file {} is empty",
            v.passphrase_file.display()
        );
    }
    let vault = Vault::open(
        &v.dir,
        &pass,
        OpenOptions {
            sync: args.sync,
            service_calls_per_minute: args.service_calls_per_minute.max(1),
            ..OpenOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
    let local = listener.local_addr()?;
    let advertise = v
        .advertise
        .clone()
        .or_else(|| (!local.ip().is_unspecified()).then(|| local.to_string()));
    Ok(Ready {
        vault,
        listener,
        advertise,
    })
}

/// Opens every vault of the plan, a few at a time (each open derives its
/// key with Argon2id): the ones that opened, in the plan's order.
fn open_all(plan: Plan, args: &Args) -> Vec<Ready> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(plan.vaults.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Ready>>> =
        plan.vaults.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(v) = plan.vaults.get(i) else { return };
                    match open_one(v, args) {
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

/// Serves every vault of `file` until SIGTERM; each closed cleanly after.
pub(crate) fn run(
    args: &Args,
    file: &Path,
    tls: Option<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let plan = Plan::read(file, tls.is_some())?;
    let wanted = plan.vaults.len();
    let ready = open_all(plan, args);
    if ready.is_empty() {
        bail!("none of the {wanted} vault(s) of {} can be served", file.display());
    }
    eprintln!(
        "pivault-server: serving {} of {wanted} vault(s) from {}",
        ready.len(),
        file.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let limits = crate::limits_from(args);
    let capacity = Capacity::new(&limits).context("cannot start the vault worker threads")?;
    let key_file = args.tls_key.as_deref().filter(|_| tls.is_some());
    let mut served = Vec::new();
    for r in ready {
        let app = App::sharing(Arc::new(r.vault), limits.clone(), capacity.clone());
        if let Some(key) = key_file {
            app.trust_standbys(vault_server::forward::ForwardingKey::from_tls_key(
                key,
                app.vault().id(),
            )?);
        }
        crate::start_timers(&rt, &app, args);
        let advertised = match r.advertise {
            Some(addr) if app.vault().records_on_cluster() => {
                rt.spawn(crate::keep_published(app.clone(), addr));
                true
            }
            _ => false,
        };
        served.push((app, r.listener, advertised));
    }
    let stop = crate::stop_on_signal(&rt);
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for (app, listener, _) in &served {
            let listener = listener.try_clone()?;
            tasks.push(tokio::spawn(crate::serve(
                app.clone(),
                listener,
                tls.clone(),
                None,
                stop.clone(),
                true,
            )));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await);
        }
        anyhow::Ok(results)
    })?;
    drop(rt);
    let mut failed = 0;
    for (((app, listener, advertised), ended), n) in served.into_iter().zip(results).zip(1..) {
        drop(listener);
        let id = app.vault().id();
        let outcome = match ended {
            Ok(Ok(())) => crate::finish(app, advertised),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("its server failed: {e}")),
        };
        if let Err(e) = outcome {
            eprintln!("pivault-server: vault {id} (#{n}): {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} vault(s) did not stop cleanly");
    }
    eprintln!("pivault-server: stopped");
    Ok(())
}
