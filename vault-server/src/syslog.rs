//! The audit trail streamed to the business's syslog collector (issue 12):
//! RFC 5424 messages over TCP or TLS, framed by octet counting (RFC 5425).
//!
//! The vault never waits for the collector. Each appended event is put on a
//! bounded in-memory queue by the trail's [`AuditSink`] hook (a short lock,
//! no I/O, under the audit lock so the queue is in seq order); one thread
//! renders and sends. When the queue is full the oldest unsent event is
//! dropped from memory, not from the stream: when the sender next moves
//! past a hole in the seqs it reads the missing events (and the signed
//! checkpoints among them) back from the vault's own trail, in chunks of
//! [`CATCH_UP_CHUNK`], and sends them first. So a collector that is slow,
//! down for a while or restarted still gets every event, in order, while
//! the memory the stream holds stays bounded. Only when the trail cannot
//! be read (the vault is closing, a storage error) does the sender send a
//! gap report instead (`audit.gap`, first and last missing seq), so a
//! collector sees a gap, never silence, and `audit export --since` fills it
//! from the vault. A lost connection is retried with exponential back-off
//! (100 ms doubling to 10 s); before each write the sender checks that the
//! collector has not closed the connection, and after a reconnect it sends
//! again the events written in the 2 s before the failure was noticed
//! (TCP accepts writes a dead peer never reads; the socket's send buffer
//! is kept small, 64 KiB, for the same reason): delivery is at least
//! once, a collector may see a seq twice and the hash shows it is the same
//! event. A collector that stops reading fills the socket buffer; writes
//! time out after 10 s and count as a failed connection.
//!
//! State survives a restart: `<vault>/audit-stream.json` (0600, no
//! secrets, no personal information) holds the target and the last seq
//! written; at start the server sends what it had not (from the trail, up
//! to a queue's worth, the rest as a gap) and says where it resumes. The
//! same file tells `pivault doctor` that a stream is failing
//! (`vault_core::doctor::file_checks`), and `GET /v1/audit/stream` tells
//! it live.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use vault_core::audit::{AuditEvent, AuditSink, SignedHead};
use vault_core::siem::{self, Format};

/// Name of the stream's state file inside the vault directory.
pub const STATE_FILE: &str = vault_core::doctor::STREAM_STATE_FILE;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A write that takes longer (a collector that stopped reading) fails.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events written this long before a failure was noticed are sent again.
const REPLAY_WINDOW: Duration = Duration::from_secs(2);
/// At most this many recently written events are kept for replay.
const REPLAY_MAX: usize = 1024;
/// Most events read back from the trail at once to fill a hole (the audit
/// lock is held while they are read).
const CATCH_UP_CHUNK: u64 = 512;
/// The socket's send buffer: small, so that what a dead or stalled
/// collector has not taken sits in the stream's own bounded, accounted
/// queue rather than in megabytes of kernel buffer.
const SEND_BUFFER: usize = 64 * 1024;

/// Where to send.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// `tcp://host:port` or `tls://host:port`.
    pub url: String,
    /// The CA certificate(s) that sign the collector's (TLS), PEM.
    pub ca: Option<PathBuf>,
    /// Events the queue holds before the oldest is dropped.
    pub queue: usize,
    /// HOSTNAME of each message.
    pub hostname: String,
    /// The vault directory (for the state file).
    pub vault_dir: PathBuf,
}

#[derive(Clone, Debug)]
enum Target {
    Tcp(String),
    Tls {
        addr: String,
        name: rustls::pki_types::ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    },
}

impl Target {
    fn parse(url: &str, ca: Option<&Path>) -> anyhow::Result<Target> {
        if let Some(addr) = url.strip_prefix("tcp://") {
            return Ok(Target::Tcp(addr.to_owned()));
        }
        let Some(addr) = url.strip_prefix("tls://") else {
            bail!("--syslog must be tcp://HOST:PORT or tls://HOST:PORT");
        };
        let Some(ca) = ca else {
            bail!("--syslog tls://… needs --syslog-ca (the CA certificate of the collector)");
        };
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read {}", ca.display()))?
        {
            roots
                .add(c.with_context(|| format!("{} is not PEM", ca.display()))?)
                .context("not a usable CA certificate")?;
        }
        if roots.is_empty() {
            bail!("{} holds no certificate", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .context("--syslog tls://HOST:PORT needs a port")?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .context("--syslog: not a host name or address")?;
        Ok(Target::Tls {
            addr: addr.to_owned(),
            name,
            config: Arc::new(config),
        })
    }

    fn connect(&self) -> anyhow::Result<Conn> {
        let addr = match self {
            Target::Tcp(a) | Target::Tls { addr: a, .. } => a,
        };
        let sock = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())?
            .next()
            .context("no address")?;
        let tcp = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER)?;
        match self {
            Target::Tcp(_) => Ok(Conn::Tcp(tcp)),
            Target::Tls { name, config, .. } => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone())?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                tcp_of(&s).set_read_timeout(Some(Duration::from_secs(5)))?;
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Ok(Conn::Tls(Box::new(s)))
            }
        }
    }
}

fn tcp_of(s: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> &TcpStream {
    &s.sock
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(frame),
            Conn::Tls(s) => s.write_all(frame).and_then(|()| s.flush()),
        }
    }

    /// False when the collector has closed the connection (or it failed):
    /// a non-blocking read sees the end of the stream.
    fn alive(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let tcp = match self {
            Conn::Tcp(s) => &*s,
            Conn::Tls(s) => tcp_of(s),
        };
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let r = match self {
            Conn::Tcp(s) => s.read(&mut buf),
            Conn::Tls(s) => s.read(&mut buf),
        };
        let tcp = match self {
            Conn::Tcp(s) => &*s,
            Conn::Tls(s) => tcp_of(s),
        };
        let back = tcp.set_nonblocking(false).is_ok();
        back && match r {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// One message to send: an event (with the chain hash before it) or a
/// signed checkpoint, so that what a collector keeps can be verified like
/// an export (`audit verify --file`).
#[derive(Clone, Debug)]
enum Item {
    Event(AuditEvent, [u8; 32]),
    Checkpoint(SignedHead),
}

impl Item {
    fn seq(&self) -> u64 {
        match self {
            Item::Event(e, _) => e.seq,
            Item::Checkpoint(c) => c.seq,
        }
    }
}

/// What is waiting to be sent.
struct Queue {
    items: VecDeque<Item>,
    cap: usize,
    /// Events dropped because the queue was full (all time).
    dropped: u64,
    stop: bool,
}

/// The stream's state, as `GET /v1/audit/stream` and the state file show it.
#[derive(Clone, Debug, Default)]
struct Status {
    connected: bool,
    /// Seq of the last event written to the collector (0: none yet).
    last_sent_seq: u64,
    /// Seq the stream started after (the trail's head at start, or the
    /// state file's last sent seq).
    resumed_after: u64,
    /// Events dropped from the queue and sent from the trail instead.
    caught_up: u64,
    gaps_reported: u64,
    /// The last gap reported: first and last missing seq.
    last_gap: Option<(u64, u64)>,
    reconnects: u64,
    last_error: Option<String>,
    /// Since when the collector has been unreachable (unix ms).
    down_since_ms: Option<i64>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    status: Mutex<Status>,
    url: String,
    hostname: String,
    state_path: PathBuf,
}

/// The running stream: the sink the vault calls and the sender thread.
pub struct Stream {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

struct Sink(Arc<Shared>);

impl AuditSink for Sink {
    fn appended(&self, event: AuditEvent, prev: [u8; 32]) {
        let Ok(mut q) = self.0.queue.lock() else {
            return;
        };
        q.push(Item::Event(event, prev));
        drop(q);
        self.0.wake.notify_one();
    }

    fn checkpointed(&self, head: &SignedHead) {
        let Ok(mut q) = self.0.queue.lock() else {
            return;
        };
        q.push(Item::Checkpoint(head.clone()));
        drop(q);
        self.0.wake.notify_one();
    }
}

impl Queue {
    /// Appends, dropping the oldest item when full (a dropped event becomes
    /// part of a gap report).
    fn push(&mut self, item: Item) {
        if self.items.len() >= self.cap {
            self.drop_oldest();
        }
        self.items.push_back(item);
    }

    fn drop_oldest(&mut self) {
        if let Some(Item::Event(..)) = self.items.pop_front() {
            self.dropped += 1;
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The last seq a previous run wrote to the same target, from the state file.
fn resume_point(path: &Path, url: &str) -> Option<u64> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (v.get("target")?.as_str()? == url)
        .then(|| v.get("last_sent_seq")?.as_u64())
        .flatten()
}

impl Stream {
    /// Hooks the stream onto the vault's trail and starts the sender. The
    /// events a previous run to the same target had not sent are queued
    /// first (the newest `queue` of them; older ones become a gap report).
    pub fn start(vault: &Arc<vault_core::Vault>, cfg: StreamConfig) -> anyhow::Result<Arc<Stream>> {
        let target = Target::parse(&cfg.url, cfg.ca.as_deref())?;
        let state_path = cfg.vault_dir.join(STATE_FILE);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                cap: cfg.queue.max(1),
                dropped: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            status: Mutex::new(Status::default()),
            url: cfg.url.clone(),
            hostname: siem::syslog_hostname(&cfg.hostname),
            state_path: state_path.clone(),
        });
        let head = vault.set_audit_sink(Some(Arc::new(Sink(shared.clone()))));
        let resume = resume_point(&state_path, &cfg.url).filter(|s| *s <= head);
        let after = resume.unwrap_or(head);
        // From the last signed checkpoint at or before `after`: the
        // collector's copy opens with a signature (a few events may come
        // twice). What the sink queued meanwhile follows, without repeats.
        let backlog = vault.audit_backlog(after, head)?;
        let opened = backlog.opening.as_ref().map_or(0, |h| h.seq);
        let last_cp = backlog.checkpoints.last().map_or(opened, |c| c.seq);
        let mut items: Vec<Item> = backlog.opening.into_iter().map(Item::Checkpoint).collect();
        let mut cps = backlog.checkpoints.into_iter().peekable();
        for (e, p) in backlog.events {
            let seq = e.seq;
            items.push(Item::Event(e, p));
            while let Some(c) = cps.next_if(|c| c.seq <= seq) {
                items.push(Item::Checkpoint(c));
            }
        }
        {
            let mut q = shared.queue.lock().expect("stream queue");
            let meanwhile: Vec<Item> = q.items.drain(..).collect();
            let newer = meanwhile.into_iter().filter(|i| match i {
                Item::Event(e, _) => e.seq > head,
                Item::Checkpoint(c) => c.seq > last_cp,
            });
            for i in items.into_iter().chain(newer) {
                q.push(i);
            }
        }
        {
            let mut st = shared.status.lock().expect("stream status");
            st.last_sent_seq = opened;
            st.resumed_after = opened;
        }
        eprintln!(
            "pivault-server: audit stream to {}: resuming after seq {opened}, the signed checkpoint at or before \
             seq {after} ({}; the trail's head is seq {head})",
            cfg.url,
            if resume.is_some() {
                "the last seq sent before the last stop"
            } else {
                "no earlier stream to this target"
            }
        );
        shared.save();
        let s2 = shared.clone();
        // Weak: the server closes the vault after it stopped the stream,
        // and needs the last reference to do so.
        let trail = Arc::downgrade(vault);
        let catch_up = move |after: u64, upto: u64| match trail.upgrade() {
            Some(v) => from_trail(&v, after, upto),
            None => bail!("the vault is closed"),
        };
        let thread = std::thread::Builder::new()
            .name("pivault-syslog".into())
            .spawn(move || sender(s2, target, catch_up))?;
        Ok(Arc::new(Stream {
            shared,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The stream's state (the `audit-stream` document).
    pub fn status(&self) -> Value {
        let queued = self.shared.queue.lock().map_or(0, |q| q.items.len());
        let (cap, dropped) = self
            .shared
            .queue
            .lock()
            .map_or((0, 0), |q| (q.cap, q.dropped));
        self.shared.status_json(queued, cap, dropped)
    }

    /// Stops the sender after it has tried to send what is queued (at most
    /// `grace`), and saves the state file.
    pub fn stop(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let empty = self.shared.queue.lock().is_ok_and(|q| q.items.is_empty());
            let up = self.shared.status.lock().is_ok_and(|s| s.connected);
            if empty || !up {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(mut q) = self.shared.queue.lock() {
            q.stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        self.shared.save();
    }
}

impl Shared {
    fn status_json(&self, queued: usize, cap: usize, dropped: u64) -> Value {
        let st = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        json!({
            "configured": true,
            "target": self.url,
            "state": if st.connected { "up" } else { "down" },
            "last_sent_seq": st.last_sent_seq,
            "resumed_after_seq": st.resumed_after,
            "queued": queued,
            "queue_capacity": cap,
            "dropped": dropped,
            "caught_up_from_trail": st.caught_up,
            "gaps_reported": st.gaps_reported,
            "last_gap": st.last_gap.map(|(a, b)| json!({ "first_missing_seq": a, "last_missing_seq": b })),
            "reconnects": st.reconnects,
            "last_error": st.last_error,
            "down_since": st.down_since_ms.map(siem::rfc3339_ms),
            "updated": siem::rfc3339_ms(now_ms()),
        })
    }

    /// Writes the state file (fresh file renamed over the old, 0600).
    fn save(&self) {
        let (queued, cap, dropped) = self
            .queue
            .lock()
            .map_or((0, 0, 0), |q| (q.items.len(), q.cap, q.dropped));
        let v = self.status_json(queued, cap, dropped);
        let tmp = self.state_path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(v.to_string().as_bytes())?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.state_path)
        };
        if let Err(e) = write() {
            eprintln!("pivault-server: audit stream: cannot save its state: {e}");
        }
    }

    fn set_down(&self, why: String) {
        if let Ok(mut st) = self.status.lock() {
            if st.connected || st.last_error.as_deref() != Some(&why) {
                eprintln!("pivault-server: audit stream to {}: {why}", self.url);
            }
            st.connected = false;
            st.last_error = Some(why);
            st.down_since_ms.get_or_insert_with(now_ms);
        }
        self.save();
    }
}

/// Octet-counting frame (RFC 5425 §4.3 / RFC 6587 §3.4.1): `LEN SP MSG`.
fn frame(msg: &str) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg.as_bytes());
    f
}

/// The events after seq `after` up to `upto` from the vault's trail, each
/// with its chain hash, and the signed checkpoints among them, in the order
/// the trail wrote them.
fn from_trail(vault: &vault_core::Vault, after: u64, upto: u64) -> anyhow::Result<Vec<Item>> {
    let backlog = vault.audit_backlog(after, upto)?;
    let mut cps = backlog
        .checkpoints
        .into_iter()
        .filter(|c| c.seq > after)
        .peekable();
    let mut items = Vec::new();
    for (e, p) in backlog.events.into_iter().filter(|(e, _)| e.seq > after) {
        let seq = e.seq;
        items.push(Item::Event(e, p));
        while let Some(c) = cps.next_if(|c| c.seq <= seq) {
            items.push(Item::Checkpoint(c));
        }
    }
    if items
        .iter()
        .filter(|i| matches!(i, Item::Event(..)))
        .count() as u64
        != upto - after
    {
        bail!("the trail does not hold seq {} to {upto}", after + 1);
    }
    Ok(items)
}

/// The frame of one item (with the hostname of the stream).
fn render(item: &Item, hostname: &str) -> Vec<u8> {
    match item {
        Item::Event(event, prev) => frame(&siem::event_line(Format::Syslog, event, prev, hostname)),
        Item::Checkpoint(c) => frame(&siem::checkpoint_line(Format::Syslog, c, hostname)),
    }
}

/// The sender thread: connect (with back-off), then send queued events in
/// order; a hole left by events dropped from the queue is first filled
/// from the trail (`catch_up(after, upto)`), or, when that fails, reported
/// as a gap.
fn sender(
    shared: Arc<Shared>,
    target: Target,
    catch_up: impl Fn(u64, u64) -> anyhow::Result<Vec<Item>>,
) {
    let mut conn: Option<Conn> = None;
    let mut backoff = BASE_BACKOFF;
    // Recently written events, replayed after a reconnect.
    let mut recent: VecDeque<(Instant, Item)> = VecDeque::new();
    let mut last_save = Instant::now();
    loop {
        // Wait for work (or stop).
        let next = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.items.is_empty() && !q.stop {
                let (g, _) = shared
                    .wake
                    .wait_timeout(q, Duration::from_secs(1))
                    .expect("stream queue");
                q = g;
                if q.items.is_empty() && last_save.elapsed() > Duration::from_secs(5) {
                    break;
                }
            }
            if q.stop {
                return;
            }
            q.items.front().cloned()
        };
        if last_save.elapsed() > Duration::from_secs(1) {
            shared.save();
            last_save = Instant::now();
        }
        let Some(item) = next else {
            // Idle: notice a collector that went away, so the status says so.
            if conn.as_mut().is_some_and(|c| !c.alive()) {
                conn = None;
                shared.set_down("the collector closed the connection".into());
                requeue_recent(&shared, &mut recent);
            }
            continue;
        };
        if conn.as_mut().is_some_and(|c| !c.alive()) {
            conn = None;
            shared.set_down("the collector closed the connection".into());
            requeue_recent(&shared, &mut recent);
            continue;
        }
        if conn.is_none() {
            match target.connect() {
                Ok(c) => {
                    conn = Some(c);
                    backoff = BASE_BACKOFF;
                    if let Ok(mut st) = shared.status.lock() {
                        if st.down_since_ms.is_some()
                            || st.reconnects > 0
                            || st.last_error.is_some()
                        {
                            st.reconnects += 1;
                        }
                        st.connected = true;
                        st.down_since_ms = None;
                    }
                    eprintln!("pivault-server: audit stream to {}: connected", shared.url);
                    shared.save();
                }
                Err(e) => {
                    shared.set_down(format!("cannot connect: {e}"));
                    let stop = shared.queue.lock().map(|q| q.stop).unwrap_or(true);
                    if stop {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let last_sent = shared.status.lock().map_or(0, |s| s.last_sent_seq);
        let seq = item.seq();
        // The last seq that must be out before this item: a checkpoint
        // follows the event of its own seq.
        let before = match &item {
            Item::Event(..) => seq.saturating_sub(1),
            Item::Checkpoint(_) => seq,
        };
        let mut gap = None;
        if before > last_sent {
            let upto = before.min(last_sent + CATCH_UP_CHUNK);
            match catch_up(last_sent, upto) {
                Ok(items) => {
                    // The checkpoint about to be sent from the queue is not
                    // sent twice.
                    let items = items
                        .into_iter()
                        .filter(|i| !(matches!(i, Item::Checkpoint(_)) && same(i, &item)));
                    if let Err(e) = send_caught_up(c, &shared, &mut recent, items) {
                        conn = None;
                        shared.set_down(format!("send failed: {e}"));
                        requeue_recent(&shared, &mut recent);
                    }
                    // The next round sends the item itself (or the next chunk).
                    continue;
                }
                Err(e) => {
                    eprintln!(
                        "pivault-server: audit stream to {}: cannot read seq {} to {before} back from the trail: {e:#}",
                        shared.url,
                        last_sent + 1
                    );
                    if matches!(item, Item::Event(..)) {
                        gap = Some((last_sent + 1, before));
                    }
                }
            }
        }
        let mut frames = Vec::new();
        if let Some((first, last)) = gap {
            frames.push((
                None,
                frame(&siem::gap_syslog(first, last, now_ms(), &shared.hostname)),
            ));
        }
        frames.push((
            // A checkpoint moves no seq (`Some(0)` leaves the last sent as it is).
            Some(if matches!(item, Item::Event(..)) {
                seq
            } else {
                0
            }),
            render(&item, &shared.hostname),
        ));
        let mut failed = None;
        for (sent, f) in &frames {
            if let Err(e) = c.send(f) {
                failed = Some(e);
                break;
            }
            let mut st = shared.status.lock().expect("stream status");
            match sent {
                Some(s) => st.last_sent_seq = (*s).max(st.last_sent_seq),
                None => {
                    st.gaps_reported += 1;
                    st.last_gap = Some((last_sent + 1, seq - 1));
                    eprintln!(
                        "pivault-server: audit stream to {}: reported a gap: seq {} to {} were dropped",
                        shared.url,
                        last_sent + 1,
                        seq - 1
                    );
                }
            }
        }
        match failed {
            None => {
                if let Ok(mut q) = shared.queue.lock()
                    && q.items.front().is_some_and(|i| same(i, &item))
                {
                    q.items.pop_front();
                }
                recent.push_back((Instant::now(), item));
                while recent.len() > REPLAY_MAX {
                    recent.pop_front();
                }
            }
            Some(e) => {
                conn = None;
                shared.set_down(format!("send failed: {e}"));
                requeue_recent(&shared, &mut recent);
            }
        }
    }
}

/// Sends items read back from the trail, moving the last sent seq and
/// keeping them for replay like queued ones.
fn send_caught_up(
    c: &mut Conn,
    shared: &Shared,
    recent: &mut VecDeque<(Instant, Item)>,
    items: impl Iterator<Item = Item>,
) -> std::io::Result<()> {
    for item in items {
        c.send(&render(&item, &shared.hostname))?;
        if let (Item::Event(e, _), Ok(mut st)) = (&item, shared.status.lock()) {
            st.last_sent_seq = st.last_sent_seq.max(e.seq);
            st.caught_up += 1;
        }
        recent.push_back((Instant::now(), item));
        while recent.len() > REPLAY_MAX {
            recent.pop_front();
        }
    }
    Ok(())
}

/// Whether two items are the same message (the queue's front is the one
/// just sent unless something was dropped meanwhile).
fn same(a: &Item, b: &Item) -> bool {
    match (a, b) {
        (Item::Event(x, _), Item::Event(y, _)) => x.seq == y.seq,
        (Item::Checkpoint(x), Item::Checkpoint(y)) => x.seq == y.seq,
        _ => false,
    }
}

/// After a lost connection: what was written in the last
/// [`REPLAY_WINDOW`] goes back to the front of the queue (the collector may
/// never have read it; nothing in the queue was sent yet), and the last
/// sent seq moves back with it.
fn requeue_recent(shared: &Shared, recent: &mut VecDeque<(Instant, Item)>) {
    let cutoff = Instant::now().checked_sub(REPLAY_WINDOW);
    let replay: Vec<Item> = recent
        .drain(..)
        .filter(|(t, _)| cutoff.is_none_or(|c| *t >= c))
        .map(|(_, i)| i)
        .collect();
    let first = replay.iter().find_map(|i| match i {
        Item::Event(e, _) => Some(e.seq),
        Item::Checkpoint(_) => None,
    });
    if let Ok(mut q) = shared.queue.lock() {
        for i in replay.into_iter().rev() {
            q.items.push_front(i);
        }
        while q.items.len() > q.cap {
            q.drop_oldest();
        }
    }
    if let (Some(first), Ok(mut st)) = (first, shared.status.lock()) {
        st.last_sent_seq = st.last_sent_seq.min(first - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::BufRead;
    use vault_core::audit::{Channel, Outcome};

    fn event(seq: u64) -> Item {
        let e = AuditEvent {
            seq,
            time_ms: 1_764_000_000_000,
            actor: None,
            channel: Channel::Http,
            source: None,
            action: "auth.whoami".into(),
            targets: Vec::new(),
            outcome: Outcome::Success,
            code: None,
            reason: None,
            request_id: None,
            hash: [seq as u8; 32],
        };
        Item::Event(e, [seq as u8 - 1; 32])
    }

    /// Runs the sender against a listener on loopback with seq 1 and 5
    /// queued (2 to 4 dropped), and returns the MSGIDs and seqs it wrote,
    /// and its status.
    fn send_with_hole(
        catch_up: impl Fn(u64, u64) -> anyhow::Result<Vec<Item>> + Send + 'static,
    ) -> (Vec<String>, Value) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let state_path = std::env::temp_dir().join(format!(
            "pivault-syslog-test-{}-{}.json",
            std::process::id(),
            url.rsplit(':').next().unwrap()
        ));
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::from([event(1), event(5)]),
                cap: 2,
                dropped: 3,
                stop: false,
            }),
            wake: Condvar::new(),
            status: Mutex::new(Status::default()),
            url: url.clone(),
            hostname: "test".into(),
            state_path: state_path.clone(),
        });
        let s2 = shared.clone();
        let target = Target::parse(&url, None).unwrap();
        let thread = std::thread::spawn(move || sender(s2, target, catch_up));
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = std::io::BufReader::new(conn);
        let mut seen = Vec::new();
        while !seen.iter().any(|m: &String| m.ends_with(" 5")) {
            let mut len = Vec::new();
            r.read_until(b' ', &mut len).unwrap();
            let n: usize = std::str::from_utf8(&len).unwrap().trim().parse().unwrap();
            let mut msg = vec![0; n];
            r.read_exact(&mut msg).unwrap();
            let msg = String::from_utf8(msg).unwrap();
            let msgid = msg.split(' ').nth(5).unwrap().to_owned();
            let seq = msg
                .split_once("seq=\"")
                .and_then(|(_, rest)| rest.split('"').next())
                .unwrap_or("-")
                .to_owned();
            seen.push(format!("{msgid} {seq}"));
        }
        shared.queue.lock().unwrap().stop = true;
        shared.wake.notify_all();
        thread.join().unwrap();
        let st = shared.status_json(0, 2, 3);
        let _ = std::fs::remove_file(&state_path);
        (seen, st)
    }

    #[test]
    fn events_dropped_from_the_queue_are_sent_from_the_trail_in_order() {
        let (seen, st) = send_with_hole(|after, upto| Ok((after + 1..=upto).map(event).collect()));
        assert_eq!(
            seen,
            [
                "auth.whoami 1",
                "auth.whoami 2",
                "auth.whoami 3",
                "auth.whoami 4",
                "auth.whoami 5"
            ]
        );
        assert_eq!(st["caught_up_from_trail"], 3, "{st}");
        assert_eq!(st["gaps_reported"], 0, "{st}");
    }

    #[test]
    fn a_hole_the_trail_cannot_fill_is_reported_as_a_gap() {
        let (seen, st) = send_with_hole(|_, _| bail!("the vault is closed"));
        assert_eq!(seen, ["auth.whoami 1", "audit.gap -", "auth.whoami 5"]);
        assert_eq!(st["gaps_reported"], 1, "{st}");
        assert_eq!(
            st["last_gap"],
            json!({ "first_missing_seq": 2, "last_missing_seq": 4 }),
            "{st}"
        );
    }

    #[test]
    fn frames_are_octet_counted() {
        assert_eq!(frame("<110>1 x"), b"8 <110>1 x".to_vec());
        let m = "é";
        assert_eq!(frame(m), b"2 \xc3\xa9".to_vec());
    }
}
