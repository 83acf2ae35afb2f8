//! What bounds the server under hostile traffic (issue 13): per-source rate
//! limits whose cost does not grow with the number of sources, the
//! aggregation of unauthenticated refusals in the audit trail, and the cap
//! on open connections.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vault_core::Vault;
use vault_core::audit::Channel;

use crate::{Peer, RequestContext};

/// Who a limit is kept for: an IPv4 address, an IPv6 /64 (one subscriber
/// line or host usually holds a whole /64, so keying on full addresses
/// would give one client 2^64 buckets), or a local OS user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// A local OS user on the Unix-domain socket.
    Local(u32),
    /// Every source past the aggregation table's capacity.
    Overflow,
}

impl From<Peer> for SourceKey {
    fn from(p: Peer) -> SourceKey {
        match p {
            Peer::Tcp(IpAddr::V4(a)) => SourceKey::V4(u32::from(a)),
            Peer::Tcp(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6Prefix((u128::from(a) >> 64) as u64),
            },
            Peer::Local { uid, .. } => SourceKey::Local(uid),
        }
    }
}

/// Shards of a [`RateLimiter`] (each its own lock).
const SHARDS: usize = 16;
/// Buckets one generation of a shard holds before it becomes the old one.
const GENERATION: usize = 8192;

/// One shard: buckets seen in this generation and in the previous one.
#[derive(Debug, Default)]
struct Shard {
    current: HashMap<SourceKey, (f64, Instant)>,
    previous: HashMap<SourceKey, (f64, Instant)>,
}

/// A token bucket per source, in shards of two generations: a bucket
/// is looked up in the current generation, then the previous one (and
/// moved up); when the current one is full it becomes the previous one and
/// the old previous one is dropped whole. Every call is O(1) under one
/// shard's lock, whatever the number of sources (the old limiter walked
/// its whole map under one mutex past 100,000 entries); memory is at most
/// `2 × SHARDS × GENERATION` buckets. A source unseen for two generations
/// of its shard starts again with a full bucket, as a returning client
/// should.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Takes a token for `key`; `Err(seconds)` to wait when there is none.
    pub(crate) fn take(&self, key: SourceKey) -> Result<(), u64> {
        let now = Instant::now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let mut s = shard.lock().expect("rate limiter lock");
        let (mut tokens, at) = match s.current.get(&key) {
            Some(b) => *b,
            None => s.previous.remove(&key).unwrap_or((self.burst, now)),
        };
        tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        let r = if tokens >= 1.0 {
            tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - tokens) / self.rate).ceil().max(1.0) as u64)
        };
        if s.current.len() >= GENERATION && !s.current.contains_key(&key) {
            s.previous = std::mem::take(&mut s.current);
        }
        s.current.insert(key, (tokens, now));
        r
    }

    /// Admits `key` for free while its bucket is full (a source that was
    /// never, or not lately, refused); otherwise takes a token like
    /// [`RateLimiter::take`]. At accept, this keeps a shut-out source to
    /// one new connection per token as its bucket refills, however many
    /// connections it has waiting, instead of letting all of them through
    /// (into TLS handshakes) the moment one token is back.
    pub(crate) fn admit(&self, key: SourceKey) -> Result<(), u64> {
        let now = Instant::now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        {
            let s = shard.lock().expect("rate limiter lock");
            let full = match s.current.get(&key).or_else(|| s.previous.get(&key)) {
                None => true,
                Some((tokens, at)) => {
                    tokens + now.duration_since(*at).as_secs_f64() * self.rate >= self.burst
                }
            };
            if full {
                return Ok(());
            }
        }
        self.take(key)
    }

    /// Whether `key` has a token left, without taking it.
    pub(crate) fn peek(&self, key: SourceKey) -> Result<(), u64> {
        let now = Instant::now();
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let s = shard.lock().expect("rate limiter lock");
        let Some((tokens, at)) = s.current.get(&key).or_else(|| s.previous.get(&key)) else {
            return Ok(());
        };
        let tokens = (tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(((1.0 - tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

/// Sources counted per minute before the rest share one `Overflow` count.
const MAX_REFUSAL_SOURCES: usize = 1024;
/// Route templates named per aggregated event.
const MAX_ROUTES: usize = 16;

/// The refusals of one source in one minute.
#[derive(Debug)]
struct RefusalCount {
    channel: Channel,
    source: String,
    count: u64,
    closed_at_accept: u64,
    first_ms: i64,
    last_ms: i64,
    statuses: BTreeMap<u16, u64>,
    routes: BTreeSet<String>,
}

/// Unauthenticated refusals (401, 404, 405, 429 without a user), counted
/// per source and minute in memory and audited as one `http.refused` event
/// per source and minute (count, first and last time, answers by status,
/// route templates). A flood then adds a few hundred bytes a minute per
/// source to the trail instead of ~330 bytes per request, which would fill
/// the disk and make the vault fail closed for everyone. Authentication
/// outcomes (`auth.login`, `auth.token`) and every authenticated request
/// keep one event each.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    counts: Mutex<HashMap<(SourceKey, i64), RefusalCount>>,
}

impl Refusals {
    /// The count of `key` in the minute of `now_ms`, created on first use
    /// (past [`MAX_REFUSAL_SOURCES`] sources, the shared `Overflow` one).
    fn with_count(
        &self,
        key: SourceKey,
        peer: Peer,
        source: &str,
        now_ms: i64,
        f: impl FnOnce(&mut RefusalCount),
    ) {
        let minute = now_ms.div_euclid(60_000);
        let mut m = self.counts.lock().expect("refusals lock");
        let key = if m.len() >= MAX_REFUSAL_SOURCES && !m.contains_key(&(key, minute)) {
            SourceKey::Overflow
        } else {
            key
        };
        let c = m.entry((key, minute)).or_insert_with(|| RefusalCount {
            channel: peer.channel(),
            source: refusal_source(key, source),
            count: 0,
            closed_at_accept: 0,
            first_ms: now_ms,
            last_ms: now_ms,
            statuses: BTreeMap::new(),
            routes: BTreeSet::new(),
        });
        c.last_ms = c.last_ms.max(now_ms);
        f(c);
    }

    /// Counts one refused request at `now_ms`.
    pub(crate) fn record(&self, key: SourceKey, rc: &RequestContext, status: u16, now_ms: i64) {
        self.with_count(key, rc.peer, &rc.source, now_ms, |c| {
            c.count += 1;
            *c.statuses.entry(status).or_insert(0) += 1;
            let route = format!("{}:{}", rc.method, rc.route);
            if c.routes.len() < MAX_ROUTES || c.routes.contains(&route) {
                c.routes.insert(route);
            }
        });
    }

    /// Counts one connection closed at accept (the source shut out, or
    /// over its connection cap) at `now_ms`.
    pub(crate) fn record_closed(&self, key: SourceKey, peer: Peer, now_ms: i64) {
        self.with_count(key, peer, &peer.source(), now_ms, |c| {
            c.closed_at_accept += 1;
        });
    }

    /// Audits the counts of ended minutes (all of them with `all`).
    pub(crate) fn flush(&self, vault: &Vault, all: bool) -> vault_core::Result<()> {
        let minute = jiff::Timestamp::now().as_millisecond().div_euclid(60_000);
        let done: Vec<RefusalCount> = {
            let mut m = self.counts.lock().expect("refusals lock");
            let keys: Vec<_> = m
                .keys()
                .filter(|(_, at)| all || *at < minute)
                .copied()
                .collect();
            let mut out: Vec<RefusalCount> = keys.iter().filter_map(|k| m.remove(k)).collect();
            out.sort_by_key(|c| c.first_ms);
            out
        };
        for c in done {
            let statuses: Vec<(u16, u64)> = c.statuses.into_iter().collect();
            let routes: Vec<String> = c.routes.into_iter().collect();
            vault.audit_http_refused(&vault_core::vault::RefusedRequests {
                channel: c.channel,
                source: &c.source,
                count: c.count,
                first_ms: c.first_ms,
                last_ms: c.last_ms,
                statuses: &statuses,
                routes: &routes,
                closed_at_accept: c.closed_at_accept,
            })?;
        }
        Ok(())
    }
}

/// The `source` of an aggregated event: what was counted, not the first
/// request's own address: an IPv6 /64 as `prefix::/64`, a local OS user
/// without a process ID (its processes are counted together).
fn refusal_source(key: SourceKey, first: &str) -> String {
    match key {
        SourceKey::V4(_) => first.to_owned(),
        SourceKey::V6Prefix(p) => format!("{}/64", std::net::Ipv6Addr::from(u128::from(p) << 64)),
        SourceKey::Local(uid) => match crate::os_user_name(uid) {
            Some(n) => format!("uid={uid}({n})"),
            None => format!("uid={uid}"),
        },
        SourceKey::Overflow => "(other sources)".to_owned(),
    }
}

/// What a connection must pass at accept, before TLS or any request is
/// read, so that turning it away costs the server almost nothing:
/// - the cap on open connections (closed past it rather than held open
///   unserved, so a crowd of idle or slow clients cannot exhaust file
///   descriptors and memory);
/// - a cap per source (IPv4 address, IPv6 /64, local OS user), so that
///   one client cannot take every slot;
/// - a source that has used up its budget of refused requests (see
///   [`crate::Limits::refusals_per_minute`]) is shut out until the budget
///   refills: its connections are held unread (a small tarpit) and closed,
///   so a flood costs the server an accept and a sleeping task per attempt
///   instead of a TLS handshake and an answer per request, and its
///   generator waits instead of reconnecting in a loop.
///
/// Connections turned away are counted in the aggregated `http.refused`
/// events (`closed_at_accept`). Each accepted stream holds its slots until
/// it is dropped.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    per_source: usize,
    open: Arc<Mutex<HashMap<SourceKey, usize>>>,
    shut_out: Option<Arc<RateLimiter>>,
    /// Connections of shut-out sources held before they are closed.
    tarpit: Arc<Semaphore>,
    refusals: Arc<Refusals>,
}

/// Connections of shut-out sources held at once, over all sources.
const TARPIT: usize = 256;

impl ConnectionLimit {
    pub(crate) fn new(
        max: usize,
        per_source: usize,
        shut_out: Option<Arc<RateLimiter>>,
        refusals: Arc<Refusals>,
    ) -> Self {
        ConnectionLimit {
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            per_source: per_source.max(1),
            open: Arc::default(),
            shut_out,
            tarpit: Arc::new(Semaphore::new(TARPIT)),
            refusals,
        }
    }

    /// Caps without a budget of refusals: a standby's front door, which
    /// refuses nothing itself (the holder answers every request).
    pub fn standalone(max: usize, per_source: usize) -> Self {
        Self::new(max, per_source, None, Arc::default())
    }

    /// Admits a connection from `peer`, or says why not (with the seconds
    /// a shut-out source has to wait).
    fn admit(&self, peer: Peer) -> Result<Slots, (&'static str, Option<u64>)> {
        let key = SourceKey::from(peer);
        let refuse = |why, wait| {
            self.refusals
                .record_closed(key, peer, jiff::Timestamp::now().as_millisecond());
            Err((why, wait))
        };
        if let Some(Err(wait)) = self.shut_out.as_ref().map(|l| l.admit(key)) {
            return refuse("source shut out for refused requests", Some(wait));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            // Past the global cap: not the source's fault; still counted.
            return refuse("connection limit reached", None);
        };
        {
            let mut open = self.open.lock().expect("connections lock");
            let n = open.entry(key).or_insert(0);
            if *n >= self.per_source {
                drop(open);
                return refuse("per-source connection limit reached", None);
            }
            *n += 1;
        }
        Ok(Slots {
            _slot: slot,
            key,
            open: self.open.clone(),
        })
    }

    /// The same limits for the local socket (no shutting out: its clients
    /// are local OS users, named in the trail and capped per user).
    pub fn local(&self) -> LocalConnections {
        LocalConnections(ConnectionLimit {
            shut_out: None,
            ..self.clone()
        })
    }
}

impl<S: Send + 'static> axum_server::accept::Accept<tokio::net::TcpStream, S> for ConnectionLimit {
    type Stream = Counted<tokio::net::TcpStream>;
    type Service = S;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Self::Stream, S)>> + Send>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let admitted = match stream.peer_addr() {
            Ok(a) => self.admit(Peer::Tcp(a.ip())),
            Err(_) => Err(("peer address unknown", None)),
        };
        if let Err((why, Some(wait))) = &admitted
            && let Ok(pit) = self.tarpit.clone().try_acquire_owned()
        {
            // A shut-out source's connection is held, unread and without
            // TLS, until its budget could refill (1 to 10 s), then closed:
            // a flood's generator waits instead of reconnecting in a loop.
            // Held connections take no slot of the connection caps, only
            // one of the tarpit's few; past those, closed at once.
            let (why, wait) = (*why, (*wait).clamp(1, 10));
            return Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                drop((stream, pit));
                Err(io::Error::other(why))
            });
        }
        Box::pin(std::future::ready(match admitted {
            // Small answers (problems, masked reads) go out at once rather
            // than waiting on Nagle's algorithm for the client's ACK.
            Ok(slots) => stream.set_nodelay(true).map(|()| {
                (
                    Counted {
                        inner: stream,
                        _slots: slots,
                    },
                    service,
                )
            }),
            // The stream is dropped: the client sees the connection closed.
            Err((why, _)) => Err(io::Error::other(why)),
        }))
    }
}

/// [`ConnectionLimit`] for the Unix-domain socket: the same caps, keyed on
/// the connecting OS user (from the kernel), and the peer's credentials
/// handed to the application as its `ConnectInfo`.
#[derive(Clone, Debug)]
pub struct LocalConnections(ConnectionLimit);

impl<S> axum_server::accept::Accept<tokio::net::UnixStream, S> for LocalConnections {
    type Stream = Counted<tokio::net::UnixStream>;
    type Service = WithPeer<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: tokio::net::UnixStream, service: S) -> Self::Future {
        let peer = crate::local_peer(&stream);
        std::future::ready(match self.0.admit(peer) {
            Ok(slots) => Ok((
                Counted {
                    inner: stream,
                    _slots: slots,
                },
                WithPeer {
                    inner: service,
                    peer,
                },
            )),
            Err((why, _)) => Err(io::Error::other(why)),
        })
    }
}

/// A connection's service that hands every request its peer (as the
/// `ConnectInfo` the framing middleware reads).
#[derive(Clone, Debug)]
pub struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> tower_service::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(req)
    }
}

/// The slots an accepted connection holds: one of the global cap, one of
/// its source's.
#[derive(Debug)]
struct Slots {
    _slot: OwnedSemaphorePermit,
    key: SourceKey,
    open: Arc<Mutex<HashMap<SourceKey, usize>>>,
}

impl Drop for Slots {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("connections lock");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A stream holding its [`ConnectionLimit`] slots.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    _slots: Slots,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6 clients are limited per /64: another address in the same /64
    /// shares the bucket, one in another /64 does not.
    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let l = RateLimiter::new(1.0, 2.0);
        let a = |s: &str| SourceKey::from(Peer::Tcp(s.parse().unwrap()));
        assert_eq!(l.take(a("2001:db8:1:2::1")), Ok(()));
        assert_eq!(l.take(a("2001:db8:1:2:ffff::9")), Ok(()));
        assert!(l.take(a("2001:db8:1:2:abcd::1")).is_err(), "same /64");
        assert_eq!(l.take(a("2001:db8:1:3::1")), Ok(()), "another /64");
        assert_eq!(a("::ffff:192.0.2.1"), a("192.0.2.1"));
    }

    /// At accept, a source that was never refused passes for free; once
    /// refused, each admitted connection costs a token, so a shut-out
    /// source gets one connection per refilled token, not all its waiting
    /// ones at once.
    #[test]
    fn connections_cost_a_token_once_a_source_was_refused() {
        let l = RateLimiter::new(0.001, 2.0);
        let k = SourceKey::V4(7);
        for _ in 0..10 {
            assert_eq!(l.admit(k), Ok(()), "a full bucket admits for free");
        }
        assert_eq!(l.take(k), Ok(()), "one refusal");
        assert_eq!(l.admit(k), Ok(()), "pays the last token");
        assert!(l.admit(k).is_err(), "then shut out");
        assert_eq!(l.admit(SourceKey::V4(8)), Ok(()), "others are not");
    }

    /// Aggregated events name what they count.
    #[test]
    fn refusal_sources_name_the_counted_unit() {
        let k = SourceKey::from(Peer::Tcp("2001:db8:1:2:abcd::1".parse().unwrap()));
        assert_eq!(
            refusal_source(k, "2001:db8:1:2:abcd::1"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(refusal_source(SourceKey::V4(1), "0.0.0.1"), "0.0.0.1");
        assert_eq!(
            refusal_source(SourceKey::Local(4_000_000), "uid=4000000,pid=7"),
            "uid=4000000"
        );
        assert_eq!(refusal_source(SourceKey::Overflow, "x"), "(other sources)");
    }

    /// A million distinct sources: the limiter's size stays bounded (no
    /// walk, no growth), and a source still being limited keeps its bucket
    /// while it is active.
    #[test]
    fn the_limiter_stays_bounded_under_address_churn() {
        // One token per 1000 s: the heavy source cannot refill during the run.
        let l = RateLimiter::new(0.001, 1.0);
        let heavy = SourceKey::V4(1);
        assert_eq!(l.take(heavy), Ok(()));
        for i in 0..1_000_000u64 {
            let _ = l.take(SourceKey::V6Prefix(i));
            if i % 1000 == 0 {
                assert!(l.take(heavy).is_err(), "the active source stays limited");
            }
        }
        assert!(l.buckets() <= 2 * SHARDS * GENERATION, "{}", l.buckets());
    }
}
