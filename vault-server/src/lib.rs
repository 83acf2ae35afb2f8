//! # vault-server — the HTTP API of pivault
//!
//! A thin front end over the same [`vault_core::Vault`] facade as the CLI:
//! every handler authenticates a bearer token, calls one facade method on a
//! vault thread ([`pool`]; long operations on their own blocking lane) and
//! answers with the same JSON document `pivault --json`
//! prints for that command ([`vault_core::views`]). Authorisation, validation
//! and auditing stay in vault-core; this crate adds what only a network
//! service needs: TLS, request IDs, problem+json errors (RFC 9457), body
//! limits, timeouts, per-address rate limits in front of the account
//! lock-out, bounded concurrency for Argon2 and RocksDB work, and an audit
//! trace of every request (the operation's own event, or `http.request`),
//! and one-record disposals arriving together grouped into one batch.
#![forbid(unsafe_code)]

mod coalesce;
pub mod documents;
pub mod forward;
pub mod limits;
pub mod pool;
pub mod problem;
pub mod routes;
pub mod syslog;
pub mod web;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use vault_core::Vault;
use vault_core::audit::Channel;
use vault_core::ids::UserId;
use vault_core::secret::SecretString;
use vault_core::vault::{Context, Session};

pub use limits::{ConnectionLimit, LocalConnections, SourceKey};
use limits::{RateLimiter, Refusals};
pub use problem::ApiError;

/// Limits and policies of a running server (flags of `pivault-server`).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest JSON body, bytes.
    pub body_bytes: usize,
    /// Largest import body, bytes.
    pub import_bytes: usize,
    /// A request taking longer is answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Threads running short vault operations (RocksDB and AES work).
    pub vault_threads: usize,
    /// Short vault operations admitted at once (running or queued for a
    /// thread); more wait asynchronously.
    pub vault_queue: usize,
    /// Concurrent long operations (disposal batches, imports, audit scans,
    /// password hashing for new users), on their own threads.
    pub long_concurrency: usize,
    /// Concurrent password checks (Argon2id, memory-hard): kept below the
    /// core count so that a login flood cannot starve other requests.
    pub login_concurrency: usize,
    /// Login attempts per client address per minute, before the account lock-out.
    pub logins_per_minute: u32,
    /// Requests per client address per second (all endpoints).
    pub requests_per_second: u32,
    /// Lifetime of a bearer token.
    pub token_ttl: Duration,
    /// How long a one-record disposal waits for others by the same user to
    /// share its batch (zero: every request is its own batch).
    pub disposal_window: Duration,
    /// Most records in one shared batch.
    pub disposal_batch_max: usize,
    /// One line per request on stderr (request ID, user ID, method, route
    /// template, status, milliseconds, client): never a concrete path,
    /// query or body, so never personal information.
    pub access_log: bool,
    /// Request body bytes held in memory at once, over all requests: a
    /// request whose body would pass it is answered 503 with Retry-After
    /// (at least the import limit, so that one import always fits).
    pub body_budget: usize,
    /// Open TCP connections at once; more are closed at accept.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a
    /// keep-alive connection may sit idle between requests; also bounds
    /// the TLS handshake.
    pub header_timeout: Duration,
    /// Free bytes the vault's file system must keep: below, the server
    /// refuses new work with 503 `disk_low` and `/readyz` answers 503,
    /// before an audit append can fail (0: no guard).
    pub min_free_bytes: u64,
    /// Refused bearer tokens per source per minute (burst: half of it):
    /// past it, requests from that source carrying a token are answered
    /// 429 without a look-up. Each refused token is one audit event, so
    /// this bounds what a stream of made-up tokens writes.
    pub bad_tokens_per_minute: u32,
    /// Requests per source per minute that may be refused before anyone
    /// authenticated (401, 404, 405, 429), burst half of it; past it the
    /// source is shut out: its requests without a token are answered 429
    /// with `Connection: close`, and its new connections are held unread
    /// at accept and closed until the budget refills (0: never shut out).
    /// Authenticated requests are never charged.
    pub refusals_per_minute: u32,
    /// Open connections per source (IPv4 address, IPv6 /64, local OS user).
    pub max_connections_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1 << 20,
            import_bytes: 64 << 20,
            request_timeout: Duration::from_secs(30),
            vault_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .max(2),
            vault_queue: 1024,
            long_concurrency: 2,
            login_concurrency: 1,
            logins_per_minute: 30,
            requests_per_second: 20_000,
            token_ttl: Duration::from_secs(8 * 3600),
            disposal_window: Duration::from_millis(20),
            disposal_batch_max: 10_000,
            access_log: true,
            body_budget: 256 << 20,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            min_free_bytes: 64 << 20,
            bad_tokens_per_minute: 60,
            refusals_per_minute: 600,
            max_connections_per_source: 256,
        }
    }
}

/// What the vaults of one process share: the worker threads (each vault
/// on a lane of its own, served in turn), and the bounds on long work,
/// password checks (Argon2id's memory) and buffered request bodies, so that
/// a process serving a thousand vaults (`pivault-server --hosting`) holds
/// those threads and that memory once, not a thousand times.
pub struct Capacity {
    workers: Arc<pool::WorkerPool>,
    long: Semaphore,
    logins: Semaphore,
    body_budget: Arc<Semaphore>,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Capacity {
    /// Starts the worker threads; sizes from `limits`.
    pub fn new(limits: &Limits) -> std::io::Result<Arc<Capacity>> {
        Ok(Arc::new(Capacity {
            workers: Arc::new(pool::WorkerPool::new(
                limits.vault_threads,
                "pivault-vault",
            )?),
            long: Semaphore::new(limits.long_concurrency.max(1)),
            logins: Semaphore::new(limits.login_concurrency.max(1)),
            body_budget: Arc::new(Semaphore::new(
                limits
                    .body_budget
                    .max(limits.import_bytes)
                    .max(limits.body_bytes)
                    .min(Semaphore::MAX_PERMITS),
            )),
        }))
    }
}

/// Shared state of one vault's server.
pub struct App {
    vault: Arc<Vault>,
    /// What starts this vault's stderr lines: the vault's ID too when the
    /// process serves many.
    log: String,
    limits: Limits,
    /// This vault's requests admitted at once (each vault its own bound).
    work: Semaphore,
    /// This vault's lane of the process's worker threads.
    workers: pool::Lane,
    capacity: Arc<Capacity>,
    groups: coalesce::OpenGroups,
    login_buckets: RateLimiter,
    request_buckets: RateLimiter,
    bad_token_buckets: RateLimiter,
    refusal_buckets: Option<Arc<RateLimiter>>,
    refusals: Arc<Refusals>,
    draining: AtomicBool,
    /// Turns true with `draining`, for the timers to stop at once.
    drained: tokio::sync::watch::Sender<bool>,
    disk_low: AtomicBool,
    /// The syslog stream of the audit trail, when `--syslog` is given.
    stream: std::sync::OnceLock<Arc<syslog::Stream>>,
    /// Uploaded import files between their preview and its confirmation
    /// (the web page's `/ui/import`), in memory only.
    import_previews: web::ImportPreviews,
    /// The web page's disposals running past their request (`web/progress.rs`).
    web_jobs: web::Jobs,
    /// The key under which standbys vouch for the client of a forwarded
    /// request (set with TLS; [`forward::ForwardingKey`]).
    forwarding: std::sync::OnceLock<forward::ForwardingKey>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Wraps an open vault, with worker threads of its own.
    pub fn new(vault: Arc<Vault>, limits: Limits) -> std::io::Result<Arc<App>> {
        let capacity = Capacity::new(&limits)?;
        Ok(App::build(
            vault,
            limits,
            capacity,
            "pivault-server:".to_owned(),
        ))
    }

    /// Wraps an open vault served beside others in this process, on
    /// `capacity` shared with them; its stderr lines name it.
    pub fn sharing(vault: Arc<Vault>, limits: Limits, capacity: Arc<Capacity>) -> Arc<App> {
        let log = format!("pivault-server: vault {}:", vault.id());
        App::build(vault, limits, capacity, log)
    }

    fn build(vault: Arc<Vault>, limits: Limits, capacity: Arc<Capacity>, log: String) -> Arc<App> {
        Arc::new(App {
            log,
            work: Semaphore::new(limits.vault_queue.max(1)),
            workers: capacity.workers.lane(),
            capacity,
            groups: coalesce::OpenGroups::default(),
            login_buckets: RateLimiter::new(
                f64::from(limits.logins_per_minute.max(1)) / 60.0,
                f64::from(limits.logins_per_minute.clamp(1, 10)),
            ),
            request_buckets: RateLimiter::new(
                f64::from(limits.requests_per_second.max(1)),
                f64::from(limits.requests_per_second.max(1)),
            ),
            bad_token_buckets: RateLimiter::new(
                f64::from(limits.bad_tokens_per_minute.max(1)) / 60.0,
                f64::from((limits.bad_tokens_per_minute / 2).max(1)),
            ),
            refusal_buckets: (limits.refusals_per_minute > 0).then(|| {
                Arc::new(RateLimiter::new(
                    f64::from(limits.refusals_per_minute) / 60.0,
                    f64::from((limits.refusals_per_minute / 2).max(1)),
                ))
            }),
            refusals: Arc::default(),
            draining: AtomicBool::new(false),
            drained: tokio::sync::watch::Sender::new(false),
            disk_low: AtomicBool::new(false),
            stream: std::sync::OnceLock::new(),
            import_previews: web::ImportPreviews::default(),
            web_jobs: web::Jobs::default(),
            forwarding: std::sync::OnceLock::new(),
            vault,
            limits,
        })
    }

    /// What a new connection must pass at accept (caps, and the shutting
    /// out of sources past their refusals): TCP, and with
    /// [`ConnectionLimit::local`] the socket.
    pub fn connection_limit(&self) -> ConnectionLimit {
        ConnectionLimit::new(
            self.limits.max_connections,
            self.limits.max_connections_per_source,
            self.refusal_buckets.clone(),
            self.refusals.clone(),
        )
    }

    /// `Err(seconds to wait)` when `key` has used up its budget of
    /// refused requests.
    fn shut_out(&self, key: SourceKey) -> Result<(), u64> {
        self.refusal_buckets
            .as_ref()
            .map_or(Ok(()), |l| l.peek(key))
    }

    /// Trusts the client address that standbys name on a forwarded request
    /// under `key` (once; servers with TLS).
    pub fn trust_standbys(&self, key: forward::ForwardingKey) {
        let _ = self.forwarding.set(key);
    }

    /// Starts streaming the audit trail to a syslog collector (once).
    pub fn start_stream(&self, cfg: syslog::StreamConfig) -> anyhow::Result<()> {
        let stream = syslog::Stream::start(&self.vault, cfg)?;
        self.stream
            .set(stream)
            .map_err(|_| anyhow::anyhow!("the audit stream is already running"))
    }

    /// The audit stream, when one runs.
    pub fn stream(&self) -> Option<&Arc<syslog::Stream>> {
        self.stream.get()
    }

    /// Marks the server as shutting down: `/readyz` answers 503.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drained.send_replace(true);
    }

    /// Checks the free space of the vault's file system against
    /// [`Limits::min_free_bytes`] (run every few seconds, and at start):
    /// below it the server refuses new work until space is freed. Returns
    /// whether the disk is low. A failed check (unknown free space) counts
    /// as enough, so that an odd file system never stops the server.
    pub fn check_disk(&self) -> bool {
        let min = self.limits.min_free_bytes;
        let low = min > 0
            && rustix::fs::statvfs(self.vault.dir())
                .is_ok_and(|st| st.f_bavail.saturating_mul(st.f_frsize) < min);
        let was = self.disk_low.swap(low, Ordering::SeqCst);
        if low != was {
            eprintln!(
                "{} {}",
                self.log,
                if low {
                    "the vault's disk is nearly full: refusing new work (503 disk_low) until space is freed"
                } else {
                    "the vault's disk has room again: serving"
                }
            );
        }
        low
    }

    /// Whether the vault's file system can take `bytes` more and still
    /// keep [`Limits::min_free_bytes`] free (an unknown free space counts
    /// as enough, like [`App::check_disk`]).
    pub fn has_room_for(&self, bytes: u64) -> bool {
        let min = self.limits.min_free_bytes;
        min == 0
            || rustix::fs::statvfs(self.vault.dir()).map_or(true, |st| {
                st.f_bavail.saturating_mul(st.f_frsize) >= min.saturating_add(bytes)
            })
    }

    /// Whether the last disk check found too little free space.
    pub fn is_disk_low(&self) -> bool {
        self.disk_low.load(Ordering::SeqCst)
    }

    /// What starts this vault's stderr lines (`pivault-server:`, and the
    /// vault's ID when the process serves many).
    pub fn log(&self) -> &str {
        &self.log
    }

    /// The server's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the server drains: a timer waiting for its next tick
    /// lets go of the vault at once (a vault removed from a hosting
    /// process is then closed without waiting for its hourly jobs).
    pub async fn drained(&self) {
        let mut rx = self.drained.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Writes the aggregated events of refused unauthenticated requests
    /// (one per source and minute): those of minutes that have ended, or
    /// all of them (`all`, at shutdown). Blocking (audit appends); a failed
    /// write is reported on stderr, the counts are then lost.
    pub fn flush_refusals(&self, all: bool) {
        if let Err(e) = self.refusals.flush(&self.vault, all) {
            eprintln!(
                "{} could not audit refused requests ({}): {e}",
                self.log,
                e.code()
            );
        }
    }

    /// Checks a request's bearer token before its body is read (so that an
    /// unauthenticated upload is never buffered): on a vault thread, like
    /// every token check. A refused token has been audited (`auth.token`,
    /// one event), and the request is then marked audited.
    async fn check_token(
        &self,
        rc: &RequestContext,
        token: SecretString,
        needs: &'static [vault_core::access::Permission],
    ) -> Result<(), ApiError> {
        let _permit = self
            .work
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        let vault = self.vault.clone();
        let rc = rc.clone();
        self.workers
            .run(move || {
                let before = vault_core::audit::appended_on_this_thread();
                match vault
                    .session_from_token(&token, rc.context())
                    .and_then(|s| {
                        let _ = rc.actor.set(s.user());
                        if needs.is_empty() {
                            Ok(())
                        } else {
                            vault.authorize_any(&s, needs)
                        }
                    }) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        if vault_core::audit::appended_on_this_thread() > before {
                            rc.audited.store(true, Ordering::SeqCst);
                        }
                        Err(ApiError::from(e))
                    }
                }
            })
            .await
            .map_err(|_| ApiError::internal())?
    }

    /// The vault.
    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Gives the vault back at shutdown, to close it.
    pub fn into_vault(self) -> Arc<Vault> {
        self.vault
    }

    /// Runs a short `op` as the token's user on a vault worker thread
    /// (admission bounded by the work semaphore), then audits the request
    /// with its outcome on the same thread; a failed audit write fails the
    /// request (fail closed).
    async fn as_user<T, F>(&self, rc: &RequestContext, token: Bearer, op: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Vault, &Session) -> vault_core::Result<T> + Send + 'static,
    {
        let _permit = self
            .work
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        let job = authenticated(self.vault.clone(), rc.clone(), token, op);
        self.workers
            .run(job)
            .await
            .map_err(|_| ApiError::internal())?
    }

    /// Like [`App::as_user`] for an operation that may run for long (a
    /// disposal batch, an import, a scan of the audit trail, hashing a new
    /// password): on its own blocking thread, bounded by the long-work
    /// semaphore, so that it never holds a vault worker.
    async fn as_user_long<T, F>(
        &self,
        rc: &RequestContext,
        token: Bearer,
        op: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Vault, &Session) -> vault_core::Result<T> + Send + 'static,
    {
        let _permit = self
            .capacity
            .long
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        let job = authenticated(self.vault.clone(), rc.clone(), token, op);
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|_| ApiError::internal())?
    }

    /// Confirms the token's pending two-factor enrolment with `code`, issues
    /// a full token in its place and revokes the enrolling one: the API's
    /// and the web page's confirmation alike. Returns the new token, the
    /// recovery codes and the token's life (ms).
    async fn confirm_enrolment(
        &self,
        rc: &RequestContext,
        token: Bearer,
        code: SecretString,
    ) -> Result<(SecretString, Vec<SecretString>, i64), ApiError> {
        let ttl_ms = i64::try_from(self.limits.token_ttl.as_millis()).unwrap_or(i64::MAX);
        let old = SecretString::new(token.0.expose().to_owned());
        self.as_user(rc, token, move |v, s| {
            let c = v.confirm_two_factor_enrolment(s, &code)?;
            let token = v.issue_token(&c.session, ttl_ms)?;
            v.revoke_token(&old)?;
            Ok((token, c.recovery_codes, ttl_ms))
        })
        .await
    }

    /// Like [`App::as_user`] for the one unauthenticated operation that does
    /// Argon2 work: logging in. Bounded by the (small) login semaphore.
    async fn login(
        &self,
        rc: &RequestContext,
        username: String,
        password: SecretString,
        code: Option<SecretString>,
    ) -> Result<(Session, SecretString, i64), ApiError> {
        let _permit = self
            .capacity
            .logins
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        let vault = self.vault.clone();
        let rc = rc.clone();
        let ttl_ms = i64::try_from(self.limits.token_ttl.as_millis()).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            let before = vault_core::audit::appended_on_this_thread();
            let r = vault
                .login_with_code(&username, &password, code.as_ref(), rc.context())
                .and_then(|s| {
                    let _ = rc.actor.set(s.user());
                    // A session that may only enrol gets a short token.
                    let ttl_ms = if s.enrol_only() {
                        ttl_ms.min(vault_core::vault::ENROL_ONLY_TTL_MS)
                    } else {
                        ttl_ms
                    };
                    let t = vault.issue_token(&s, ttl_ms)?;
                    Ok((s, t, ttl_ms))
                })
                .map_err(ApiError::from);
            // The login's own event (`auth.login`, success or failure) is
            // the request's trace: one event per authentication outcome.
            if vault_core::audit::appended_on_this_thread() > before {
                rc.audited.store(true, Ordering::SeqCst);
            }
            rc.audit(&vault, r.as_ref().err())?;
            r
        })
        .await
        .map_err(|_| ApiError::internal())?
    }
}

/// The blocking body of [`App::as_user`]: check the token, run `op`, audit.
fn authenticated<T, F>(
    vault: Arc<Vault>,
    rc: RequestContext,
    token: Bearer,
    op: F,
) -> impl FnOnce() -> Result<T, ApiError> + Send + 'static
where
    T: Send + 'static,
    F: FnOnce(&Vault, &Session) -> vault_core::Result<T> + Send + 'static,
{
    move || {
        let ctx = rc.context();
        let before = vault_core::audit::appended_on_this_thread();
        let r = match vault.session_from_token(&token.0, ctx) {
            Ok(s) => {
                let _ = rc.actor.set(s.user());
                op(&vault, &s)
            }
            Err(e) => {
                // A refused token was audited (`auth.token`): that event
                // is the request's only one.
                if vault_core::audit::appended_on_this_thread() > before {
                    rc.audited.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
        }
        .map_err(ApiError::from);
        // A successful operation that wrote its own event (with the user,
        // address, request ID and outcome) has audited the request; anything
        // else gets the request's own event.
        if r.is_ok() && vault_core::audit::appended_on_this_thread() > before {
            rc.audited.store(true, Ordering::SeqCst);
        }
        rc.audit(&vault, r.as_ref().err())?;
        r
    }
}

/// Who is at the other end of a connection: a TCP client address, or a
/// local process on the server's Unix-domain socket, identified by the
/// credentials the kernel reports for it (`SO_PEERCRED`), which the client
/// cannot forge. Rate limits and login throttling are kept per peer: per
/// address over TCP, per OS user on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP client.
    Tcp(IpAddr),
    /// A local process on the Unix-domain socket.
    Local {
        /// Its OS user ID.
        uid: u32,
        /// Its OS group ID.
        gid: u32,
        /// Its process ID, when the kernel tells.
        pid: Option<i32>,
    },
}

impl Peer {
    /// The audit channel of requests from this peer.
    pub fn channel(&self) -> Channel {
        match self {
            Peer::Tcp(_) => Channel::Http,
            Peer::Local { .. } => Channel::Local,
        }
    }

    /// The audit trail's `source`: the address, or `uid=1001(carol),pid=42`
    /// (a token without spaces), so that an event names the OS user beside
    /// the vault user.
    pub fn source(&self) -> String {
        match self {
            Peer::Tcp(ip) => ip.to_string(),
            Peer::Local { uid, pid, .. } => {
                let name = os_user_name(*uid)
                    .map(|n| format!("({n})"))
                    .unwrap_or_default();
                match pid {
                    Some(p) => format!("uid={uid}{name},pid={p}"),
                    None => format!("uid={uid}{name}"),
                }
            }
        }
    }
}

impl axum::extract::connect_info::Connected<SocketAddr> for Peer {
    fn connect_info(addr: SocketAddr) -> Peer {
        Peer::Tcp(addr.ip())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Peer {
        local_peer(stream.io())
    }
}

/// Who is on the other end of a socket connection, from the kernel.
pub(crate) fn local_peer(stream: &tokio::net::UnixStream) -> Peer {
    match stream.peer_cred() {
        Ok(c) => Peer::Local {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        // Never the case on Linux; an unknown peer is nobody's.
        Err(_) => Peer::Local {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: None,
        },
    }
}

/// The login name of an OS user from `/etc/passwd` (names only: printable
/// ASCII without spaces or parentheses, at most 32 characters, so that the
/// audit source stays a token). Looked up once per uid and kept for the
/// server's life: every request on the socket names its OS user, and
/// reading `/etc/passwd` for each would put file I/O on the request path.
pub fn os_user_name(uid: u32) -> Option<String> {
    static NAMES: OnceLock<Mutex<HashMap<u32, Option<String>>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(n) = names.lock().expect("names lock").get(&uid) {
        return n.clone();
    }
    let found = read_os_user_name(uid);
    names.lock().expect("names lock").insert(uid, found.clone());
    found
}

fn read_os_user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid
            && !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b',')))
        .then(|| name.to_owned())
    })
}

/// A bearer token from the `Authorization` header (Debug redacted by SecretString).
#[derive(Debug)]
pub struct Bearer(pub SecretString);

/// Per-request facts, set by the outer middleware and read by handlers;
/// shared (one allocation per request), since the middleware, the handler
/// and the vault thread each hold it.
#[derive(Clone, Debug)]
pub struct RequestContext(Arc<RequestFacts>);

/// What [`RequestContext`] holds.
#[derive(Debug)]
pub struct RequestFacts {
    /// Request ID (also in the `x-request-id` response header).
    pub request_id: String,
    /// The client: address, or local OS user.
    pub peer: Peer,
    /// [`Peer::source`], worked out once per request.
    pub source: String,
    /// HTTP method.
    pub method: String,
    /// Route template, e.g. `/v1/records/{id}` (never the concrete path).
    pub route: String,
    actor: OnceLock<UserId>,
    audited: AtomicBool,
}

impl std::ops::Deref for RequestContext {
    type Target = RequestFacts;
    fn deref(&self) -> &RequestFacts {
        &self.0
    }
}

impl RequestContext {
    fn context(&self) -> Context {
        Context {
            channel: self.peer.channel(),
            source: Some(self.source.clone()),
            request_id: Some(self.request_id.clone()),
        }
    }

    /// Writes the request's audit event (once) from a blocking thread.
    fn audit(&self, vault: &Vault, err: Option<&ApiError>) -> Result<(), ApiError> {
        let (status, code) = match err {
            None => (200, None),
            Some(e) => (e.status.as_u16(), Some(e.code)),
        };
        self.audit_status(vault, status, code)
            .map_err(ApiError::from)
    }

    /// Writes the request's `http.request` event, unless the request was
    /// audited already.
    fn audit_status(
        &self,
        vault: &Vault,
        status: u16,
        code: Option<&str>,
    ) -> vault_core::Result<()> {
        if self.audited.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        vault.audit_http_request(
            self.actor.get().copied(),
            &self.context(),
            &self.method,
            &self.route,
            status,
            code,
        )
    }
}

/// The bearer token of an `Authorization` header, if well formed.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
}

/// Routes answered without a bearer token.
fn is_public(method: &str, route: &str) -> bool {
    matches!(
        route,
        "/healthz" | "/readyz" | "/v1/openapi.json" | "/v1/keys"
    ) || (method == "POST" && route == "/v1/sessions")
        // The web page reads its own session cookie (`web.rs`).
        || web::is_web(route)
}

/// The permissions (any one of them) a route with a large body always
/// needs, checked with the token before the body is read, so that a user
/// whose role may not import cannot make the server read (and hold, within
/// the body budget) 64 MiB to refuse it. Only routes whose operation
/// checks exactly this in the core are listed; the core checks again.
fn body_permissions(method: &str, route: &str) -> &'static [vault_core::access::Permission] {
    use vault_core::access::Permission as P;
    match (method, route) {
        ("POST", "/v1/collections/{name}/import") | ("POST", "/v1/records") => &[P::CreateRecord],
        _ => &[],
    }
}

/// Answers that refuse an unauthenticated request; aggregated in the audit
/// trail instead of one event each.
fn is_aggregated_refusal(status: u16) -> bool {
    matches!(status, 401 | 404 | 405 | 429)
}

/// How far past its limit the body of an authenticated request is read
/// (and dropped, never kept) so that its client hears 413 rather than a
/// reset connection. Unauthenticated bodies are never drained.
const DRAIN_BYTES: usize = 8 << 20;

/// Reads a request body into memory, within `limit` bytes and within the
/// server-wide budget of body bytes in flight: a declared length is
/// reserved whole before anything is read, a chunked body chunk by chunk.
/// The permit holds the bytes' share of the budget until the response is
/// made. A body over the limit is read on, and dropped, up to `drain`
/// bytes past it, then answered 413.
async fn read_body(
    budget: &Arc<Semaphore>,
    mut body: axum::body::Body,
    limit: usize,
    declared: Option<usize>,
    drain: usize,
) -> Result<(axum::body::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), ApiError> {
    use axum::body::HttpBody;
    let mut permit: Option<tokio::sync::OwnedSemaphorePermit> = None;
    let mut take = |n: usize| -> Result<(), ApiError> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| ApiError::too_large())?;
        let p = budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| ApiError::overloaded())?;
        match &mut permit {
            Some(q) => q.merge(p),
            None => permit = Some(p),
        }
        Ok(())
    };
    let mut over = declared.is_some_and(|n| n > limit);
    if drain == 0 && over {
        return Err(ApiError::too_large());
    }
    if let Some(n) = declared.filter(|_| !over) {
        take(n)?;
    }
    let mut buf = Vec::with_capacity(declared.filter(|_| !over).unwrap_or(0));
    let mut seen = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| ApiError::from_status(StatusCode::BAD_REQUEST))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if over || buf.len() + data.len() > limit {
                over = true;
                buf = Vec::new();
                if seen > limit.saturating_add(drain) {
                    break;
                }
                continue;
            }
            if declared.is_none() {
                take(data.len())?;
            }
            buf.extend_from_slice(&data);
        }
    }
    if over {
        return Err(ApiError::too_large());
    }
    Ok((axum::body::Bytes::from(buf), permit))
}

/// The outermost layer: request ID, rate limit, timeout, problem+json for
/// every error (including the router's own 404/405/413), security headers,
/// and the audit event for requests that no handler audited.
///
/// Nothing of a body is read before the request is known to be wanted:
/// rate-limited, unknown-route and token-less requests are answered at
/// once, and a request with a body to an authenticated route has its token
/// checked first. Such a refusal closes the connection (`Connection:
/// close`) instead of draining the body, so a hostile upload costs the
/// server neither memory nor the time to read it. Accepted bodies count
/// against [`Limits::body_budget`].
async fn frame(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // A request a standby forwarded is the client's, when the standby
    // vouches for it under the servers' shared key (else the headers are
    // a client's own, and ignored).
    let peer = match (peer, app.forwarding.get()) {
        (Peer::Tcp(_), Some(k)) => k
            .source(req.headers(), jiff::Timestamp::now().as_second())
            .map_or(peer, Peer::Tcp),
        _ => peer,
    };
    let request_id = uuid::Uuid::now_v7().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "(unmatched)".to_owned());
    let rc = RequestContext(Arc::new(RequestFacts {
        request_id: request_id.clone(),
        peer,
        source: peer.source(),
        method: req.method().as_str().to_owned(),
        route,
        actor: OnceLock::new(),
        audited: AtomicBool::new(false),
    }));
    let mut req = req;
    req.extensions_mut().insert(rc.clone());
    let health = rc.route == "/healthz" || rc.route == "/readyz";
    let public = is_public(&rc.method, &rc.route);
    let import = rc.route.ends_with("/import");
    let limit = if import {
        app.limits.import_bytes
    } else {
        app.limits.body_bytes
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let has_body =
        declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    let token = bearer_token(req.headers()).map(|t| SecretString::new(t.to_owned()));
    let had_token = token.is_some();

    let (mut resp, close) =
        if let (false, Err(wait)) = (health, app.request_buckets.take(SourceKey::from(peer))) {
            (ApiError::rate_limited(wait).into_response(), has_body)
        } else if !health && app.is_disk_low() {
            // Before anything could write: answered (and counted in
            // memory) while the disk is nearly full, so that the audit
            // trail never runs out of room under the vault's feet.
            (ApiError::disk_low().into_response(), has_body)
        } else if let (false, true, Err(wait)) =
            (health, token.is_none(), app.shut_out(SourceKey::from(peer)))
        {
            // A source past its refusals: answered at once and the
            // connection closed; its reconnections are turned away at accept.
            (ApiError::rate_limited(wait).into_response(), true)
        } else if rc.route == "(unmatched)" {
            (
                ApiError::from_status(StatusCode::NOT_FOUND).into_response(),
                has_body,
            )
        } else if let (false, true, Err(wait)) = (
            public,
            had_token,
            app.bad_token_buckets.peek(SourceKey::from(peer)),
        ) {
            // This source has sent too many refused tokens of late: no
            // look-up (and no `auth.token` event) until its bucket refills.
            (ApiError::rate_limited(wait).into_response(), has_body)
        } else if !public && token.is_none() {
            (ApiError::unauthenticated().into_response(), has_body)
        } else {
            let work = async {
                if has_body
                    && !public
                    && let Some(t) = token
                    && let Err(e) = app
                        .check_token(&rc, t, body_permissions(&rc.method, &rc.route))
                        .await
                {
                    return (e.into_response(), true);
                }
                // Only a client that proved who it is may make the server
                // read past the limit (and only to answer it 413 cleanly).
                let drain = if rc.actor.get().is_some() {
                    DRAIN_BYTES
                } else {
                    0
                };
                let declared = declared.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
                if import {
                    // Streamed by the handler into an encrypted spool, never
                    // held whole (`routes::import`).
                    if declared.is_some_and(|n| n > limit) {
                        return (ApiError::too_large().into_response(), true);
                    }
                    let r = next.run(req).await;
                    let unread = r.status().is_client_error() || r.status().is_server_error();
                    return (r, unread);
                }
                let (parts, body) = req.into_parts();
                match read_body(&app.capacity.body_budget, body, limit, declared, drain).await {
                    Ok((bytes, permit)) => {
                        let r = next
                            .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                            .await;
                        drop(permit);
                        (r, false)
                    }
                    Err(e) => (e.into_response(), true),
                }
            };
            match tokio::time::timeout(app.limits.request_timeout, work).await {
                Ok(r) => r,
                Err(_) => (ApiError::timeout().into_response(), true),
            }
        };

    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let ours = resp.extensions().get::<problem::Code>().is_some();
    if (status.is_client_error() || status.is_server_error()) && !is_problem && !ours {
        // The router's and extractors' own rejections: replace their text
        // bodies (which may quote input) by a problem document.
        resp = ApiError::from_status(status).into_response();
    }
    if let Some(problem::Internal(detail, public)) =
        resp.extensions_mut().remove::<problem::Internal>()
    {
        // The client gets the stable code and the request ID, the operator
        // the message (a storage error can name files and quote the
        // database's own text).
        eprintln!(
            "{} internal error in request {}: {detail}",
            app.log, rc.request_id
        );
        let mut public = *public;
        public.set_request_id(&rc.request_id);
        resp = public.into_response();
    }
    let code = resp.extensions().get::<problem::Code>().map(|c| c.0);
    let mut close = close;
    if !health
        && rc.actor.get().is_none()
        && is_aggregated_refusal(resp.status().as_u16())
        && let Some(l) = &app.refusal_buckets
        && (l.take(SourceKey::from(peer)).is_err() || l.peek(SourceKey::from(peer)).is_err())
    {
        // The source has used up its refusals (with this one, or before):
        // shut it out (see `Limits::refusals_per_minute`).
        close = true;
    }
    if had_token && !public && resp.status() == StatusCode::UNAUTHORIZED && rc.actor.get().is_none()
    {
        // A refused token (audited as `auth.token`): charge its source.
        let _ = app.bad_token_buckets.take(SourceKey::from(peer));
    }
    let quiet = health || web::is_quiet(&rc.method, &rc.route);
    if !quiet && !rc.audited.load(Ordering::SeqCst) {
        let status = resp.status().as_u16();
        if rc.actor.get().is_none() && (is_aggregated_refusal(status) || code == Some("disk_low")) {
            // Unauthenticated refusals are counted, per source and minute,
            // and audited as one `http.refused` event each minute: a flood
            // cannot fill the disk with one event per request.
            rc.audited.store(true, Ordering::SeqCst);
            app.refusals
                .record(SourceKey::from(rc.peer), &rc, status, jiff_now_ms());
        } else {
            let vault = app.vault.clone();
            let rc2 = rc.clone();
            let audit = app
                .workers
                .run(move || rc2.audit_status(&vault, status, code))
                .await;
            match audit {
                Ok(Ok(())) => {}
                // Another process holds the vault now: that, not the trail,
                // is why nothing was served.
                Ok(Err(vault_core::Error::TakenOver)) => {
                    resp = ApiError::from(vault_core::Error::TakenOver).into_response();
                }
                _ => {
                    resp = ApiError::from(vault_core::Error::AuditUnavailable(
                        "the request could not be audited".into(),
                    ))
                    .into_response();
                    resp.extensions_mut().remove::<problem::Internal>();
                }
            }
        }
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if close {
        // The body was not (fully) read: the connection cannot carry
        // another request, and hyper closes it after this answer.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if app.limits.access_log && !health {
        eprintln!(
            "{} access {} user={} {} {} {} {}ms {} {}",
            app.log,
            rc.request_id,
            rc.actor.get().map_or("-".to_owned(), |u| u.to_string()),
            rc.method,
            rc.route,
            resp.status().as_u16(),
            started.elapsed().as_millis(),
            rc.peer.channel().as_str(),
            rc.source,
        );
    }
    resp
}

/// Wall-clock unix milliseconds (for the refusal counts' first and last times).
fn jiff_now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The whole application: the API routes inside the framing middleware.
pub fn app(state: Arc<App>) -> Router {
    routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(state, frame))
}

/// The checked-in OpenAPI document's path, relative to this crate.
pub const OPENAPI_FILE: &str = "openapi.json";

/// The OpenAPI 3.1 document, pretty-printed with a final newline.
/// The answers' schemas are the files in `schemas/`, placed by
/// [`documents::describe_answers`].
pub fn openapi_json() -> String {
    let mut doc = serde_json::to_value(routes::openapi()).expect("the OpenAPI document serialises");
    documents::describe_answers(&mut doc);
    let mut s = serde_json::to_string_pretty(&doc).expect("a Value serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// The framing middleware's list of routes answered without a token
    /// (it refuses a token-less request to any other before reading its
    /// body) is exactly the OpenAPI document's operations without a
    /// security requirement.
    #[test]
    fn public_routes_match_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).expect("JSON");
        let mut checked = 0;
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let public = op.get("security").is_none();
                assert_eq!(
                    super::is_public(&method.to_ascii_uppercase(), path),
                    public,
                    "{method} {path}"
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "{checked} operations");
    }

    /// The checked-in `openapi.json` is the document the code generates.
    /// Regenerate with `cargo run --bin pivault-server -- --print-openapi >
    /// vault-server/openapi.json` (or `PIVAULT_UPDATE_OPENAPI=1 cargo test`).
    #[test]
    fn checked_in_openapi_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(super::OPENAPI_FILE);
        let generated = super::openapi_json();
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != generated && std::env::var_os("PIVAULT_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write openapi.json");
            return;
        }
        assert!(
            on_disk == generated,
            "{} is stale: regenerate it with `pivault-server --print-openapi`",
            path.display()
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        // Every route of the API is documented.
        for p in [
            "/v1/sessions",
            "/v1/records/{id}",
            "/v1/disposals",
            "/v1/certificates/{id}/file",
            "/healthz",
        ] {
            assert!(
                doc["paths"].get(p).is_some(),
                "{p} missing from the document"
            );
        }
    }
}
