//! A standby's front door (issue 16, high availability). Every
//! `pivault-server` in front of one vault listens and answers every request:
//! the one holding the vault serves it, and a standby (`--standby`) forwards
//! it to the holder and relays the answer, as HashiCorp Vault's standbys
//! forward to their active node. A load balancer may then send any client to
//! any server; the isolation locks, the caches and the trail's sequencing stay
//! in the one holder (see ARCHITECTURE.md, "Several servers in front of one
//! vault").
//!
//! The holder publishes its address in the records cluster (`lease` row,
//! [`vault_core::HolderLookup`]), which the vault's role can write, so the
//! address is only a hint: the standby forwards only to a server presenting
//! the servers' shared TLS certificate (pinned, whatever name it is reached
//! by), and only over TLS (a plain-HTTP server on loopback does not forward:
//! it could not tell the holder from any local listener). The client's address
//! travels in [`FORWARDED_FOR`] under a MAC keyed from the shared TLS private
//! key ([`ForwardingKey`]), so the holder's per-address limits, lock-outs and
//! audit `source` name the client, and a client cannot name another address.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use vault_core::crypto;
use vault_core::ids::VaultId;
use vault_core::secret::SecretKey;

use crate::Peer;
use crate::problem::ApiError;

/// The client's address, as the standby saw it.
pub const FORWARDED_FOR: &str = "pivault-forwarded-for";
/// When the standby forwarded the request (Unix seconds).
pub const FORWARDED_AT: &str = "pivault-forwarded-at";
/// HMAC-SHA-256 of the two, hex, under the [`ForwardingKey`].
pub const FORWARDED_MAC: &str = "pivault-forwarded-mac";

/// How far a forwarded request's time may be from the holder's clock.
const SKEW_SECS: i64 = 60;
/// How long a standby tries to reach the holder.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);
/// A pooled connection idle for longer is not reused (the holder closes
/// idle connections after its header timeout).
const IDLE_REUSE: Duration = Duration::from_secs(2);
/// Idle connections kept to the holder.
const IDLE_KEPT: usize = 32;
/// Connections open to the holder at most: well under its default cap of
/// connections per address (256), which counts the standby as one client.
const UPSTREAM_CONNECTIONS: usize = 128;

/// The key the servers of one vault share to vouch for a forwarded
/// client's address: derived from their shared TLS private key, which is
/// already the secret that makes a process one of the vault's servers (it
/// can answer the vault's clients), so no further secret is configured.
pub struct ForwardingKey(SecretKey);

impl std::fmt::Debug for ForwardingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardingKey(redacted)")
    }
}

impl ForwardingKey {
    /// From the TLS private key (PEM) at `path`, for the vault `vault`
    /// (servers of two vaults sharing a certificate do not vouch for each
    /// other's clients).
    pub fn from_tls_key(path: &Path, vault: VaultId) -> anyhow::Result<ForwardingKey> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let der = PrivateKeyDer::from_pem_file(path)
            .with_context(|| format!("cannot read a PEM private key from {}", path.display()))?;
        let label = format!(
            "pivault-forwarding-key-v1 {}",
            hex::encode(vault.as_bytes())
        );
        Ok(ForwardingKey(crypto::derived_key(der.secret_der(), &label)))
    }

    fn tag(&self, ip: &str, at: i64) -> [u8; 32] {
        crypto::mac(
            &self.0,
            "pivault-forwarded-for-v1",
            format!("{ip}\n{at}").as_bytes(),
        )
    }

    /// The headers vouching that `client` sent the request, at `now`.
    fn vouch(&self, client: IpAddr, now: i64, headers: &mut HeaderMap) {
        let ip = client.to_string();
        let mac = hex::encode(self.tag(&ip, now));
        for (name, value) in [
            (FORWARDED_FOR, ip),
            (FORWARDED_AT, now.to_string()),
            (FORWARDED_MAC, mac),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// The client a forwarded request names, when its MAC checks (in
    /// constant time) and it was forwarded within [`SKEW_SECS`] of `now`.
    pub fn source(&self, headers: &HeaderMap, now: i64) -> Option<IpAddr> {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let ip = get(FORWARDED_FOR)?;
        let at: i64 = get(FORWARDED_AT)?.parse().ok()?;
        let mac = hex::decode(get(FORWARDED_MAC)?).ok()?;
        if (now - at).abs() > SKEW_SECS {
            return None;
        }
        let ok: bool = self.tag(ip, at).as_slice().ct_eq(&mac).into();
        if ok { ip.parse().ok() } else { None }
    }
}

/// Accepts exactly one certificate, the servers' own: a holder address
/// planted in the cluster cannot draw the clients' tokens to another server.
#[derive(Debug)]
struct SameCertificate {
    pinned: rustls::pki_types::CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the published holder does not present this vault's server certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An idle connection to the holder.
struct Idle {
    addr: String,
    since: Instant,
    sender: SendRequest<Body>,
}

/// A standby's forwarding to the holder.
pub struct Forwarder {
    /// The address the holder published (read again twice a second).
    holder: RwLock<Option<String>>,
    /// The last address the holder published, kept when a read fails (the
    /// cluster failing over): where [`Forwarder::holder_answers`] asks.
    last_known: RwLock<Option<String>>,
    /// TLS to the holder, pinned to the shared certificate.
    tls: Arc<rustls::ClientConfig>,
    key: ForwardingKey,
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection open to the holder ([`UPSTREAM_CONNECTIONS`]),
    /// held until the connection closes.
    upstream: Arc<tokio::sync::Semaphore>,
    /// How long the holder may take to answer.
    answer_within: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// With the servers' shared TLS certificate and key, for the vault
    /// `vault`; the holder may take `answer_within` to answer.
    pub fn new(
        (cert, key): (&Path, &Path),
        vault: VaultId,
        answer_within: Duration,
    ) -> anyhow::Result<Forwarder> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pinned = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("cannot read {}", cert.display()))?
            .next()
            .with_context(|| format!("{} holds no certificate", cert.display()))?
            .with_context(|| format!("{} is not a PEM certificate", cert.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = SameCertificate {
            pinned,
            algorithms: provider.signature_verification_algorithms,
        };
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Forwarder {
            holder: RwLock::new(None),
            last_known: RwLock::new(None),
            tls: Arc::new(cfg),
            key: ForwardingKey::from_tls_key(key, vault)?,
            idle: Mutex::new(Vec::new()),
            upstream: Arc::new(tokio::sync::Semaphore::new(UPSTREAM_CONNECTIONS)),
            answer_within,
        })
    }

    /// The holder's address as last published (`None`: none yet).
    pub fn set_holder(&self, address: Option<String>) {
        if address.is_some() {
            self.last_known
                .write()
                .expect("holder lock")
                .clone_from(&address);
        }
        let mut h = self.holder.write().expect("holder lock");
        if *h != address {
            self.idle.lock().expect("idle lock").clear();
            *h = address;
        }
    }

    /// A kept connection to `addr` ready for a request, if there is one.
    /// Connections still relaying an answer are kept for later; closed
    /// ones, and ready ones idle past [`IDLE_REUSE`] (closed on dropping,
    /// which frees their permit), are dropped.
    fn pooled(&self, addr: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().expect("idle lock");
        idle.retain(|i| {
            let stale = i.sender.is_ready() && i.since.elapsed() >= IDLE_REUSE;
            !(i.sender.is_closed() || stale)
        });
        let at = idle.iter().position(|i| {
            i.addr == addr && i.sender.is_ready() && i.since.elapsed() < IDLE_REUSE
        })?;
        Some(idle.swap_remove(at).sender)
    }

    fn give_back(&self, addr: &str, sender: SendRequest<Body>) {
        let mut idle = self.idle.lock().expect("idle lock");
        if idle.len() < IDLE_KEPT && !sender.is_closed() {
            idle.push(Idle {
                addr: addr.to_owned(),
                since: Instant::now(),
                sender,
            });
        }
    }

    /// A new connection to the holder at `addr`, over TLS pinned to the
    /// shared certificate.
    async fn connect(&self, addr: &str) -> Result<SendRequest<Body>, String> {
        let permit = tokio::time::timeout(CONNECT_PATIENCE, self.upstream.clone().acquire_owned())
            .await
            .map_err(|_| "too many requests are in flight to it".to_owned())?
            .map_err(|_| "the standby is stopping".to_owned())?;
        let at: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|_| "its published address does not resolve".to_owned())?
            .collect();
        let tcp = tokio::time::timeout(CONNECT_PATIENCE, tokio::net::TcpStream::connect(&*at))
            .await
            .map_err(|_| "it does not answer".to_owned())?
            .map_err(|_| "it refuses connections".to_owned())?;
        let _ = tcp.set_nodelay(true);
        // The name is not checked (the certificate is pinned); the holder
        // serves one certificate whatever name is asked.
        let name = rustls::pki_types::ServerName::try_from("pivault-holder.invalid")
            .expect("a valid DNS name");
        let tls = tokio::time::timeout(
            CONNECT_PATIENCE,
            tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| "its TLS handshake did not finish".to_owned())?
        .map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|r| r.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::General(_) | rustls::Error::InvalidCertificate(_)
                    )
                });
            if certificate {
                "it is not one of this vault's servers (another certificate)".to_owned()
            } else {
                "its TLS handshake failed".to_owned()
            }
        })?;
        handshake(TokioIo::new(tls), permit).await
    }

    /// Whether the holder, at the address it last published, completes a
    /// TLS handshake with the vault's servers' certificate within
    /// `within`: it is alive and serving (a holder that died refuses the
    /// connection; one stopped or hung does not finish the handshake).
    pub async fn holder_answers(&self, within: Duration) -> bool {
        let Some(addr) = self.last_known.read().expect("holder lock").clone() else {
            return false;
        };
        matches!(
            tokio::time::timeout(within, self.connect(&addr)).await,
            Ok(Ok(_))
        )
    }

    /// Sends `req` (from `client`) to the holder and relays its answer.
    async fn relay(&self, client: Option<IpAddr>, req: Request) -> Result<Response, ApiError> {
        if req.headers().contains_key(FORWARDED_MAC) || req.headers().contains_key(FORWARDED_FOR) {
            // A request another standby forwarded here (the published
            // address is stale, or points at a standby): never a loop.
            return Err(ApiError::no_holder("the published holder is a standby"));
        }
        let addr = self
            .holder
            .read()
            .expect("holder lock")
            .clone()
            .ok_or_else(|| {
                ApiError::no_holder("no server has published that it holds the vault")
            })?;
        let (mut parts, body) = req.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| ApiError::from_status(StatusCode::BAD_REQUEST))?;
        parts.uri = target;
        parts.extensions = Default::default();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(ip) = client {
            self.key
                .vouch(ip, jiff::Timestamp::now().as_second(), &mut parts.headers);
        }
        let req = hyper::Request::from_parts(parts, body);
        let (sender, resp) = match self.pooled(&addr) {
            Some(mut sender) => {
                match tokio::time::timeout(self.answer_within, sender.try_send_request(req)).await {
                    Ok(Ok(resp)) => (sender, resp),
                    Ok(Err(mut e)) => match e.take_message() {
                        // The idle connection was closed before the request
                        // left: nothing was sent, so a new one may carry it.
                        Some(req) => self.send_fresh(&addr, req).await?,
                        None => return Err(ApiError::holder_lost()),
                    },
                    // Sent, and no answer: whether it was carried out is unknown.
                    Err(_) => return Err(ApiError::holder_lost()),
                }
            }
            None => self.send_fresh(&addr, req).await?,
        };
        self.give_back(&addr, sender);
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static("1.1 pivault-standby"));
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    async fn send_fresh(
        &self,
        addr: &str,
        req: hyper::Request<Body>,
    ) -> Result<(SendRequest<Body>, hyper::Response<hyper::body::Incoming>), ApiError> {
        let mut sender = self
            .connect(addr)
            .await
            .map_err(|why| ApiError::no_holder(&why))?;
        match tokio::time::timeout(self.answer_within, sender.send_request(req)).await {
            Ok(Ok(resp)) => Ok((sender, resp)),
            // Sent, and no answer: whether it was carried out is unknown.
            _ => Err(ApiError::holder_lost()),
        }
    }
}

/// An HTTP/1.1 connection over `io`, which holds `permit` until it closes.
async fn handshake<T>(
    io: TokioIo<T>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<SendRequest<Body>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|_| "its HTTP connection failed".to_owned())?;
    tokio::spawn(async move {
        let _ = conn.await;
        drop(permit);
    });
    sender
        .ready()
        .await
        .map_err(|_| "its HTTP connection closed".to_owned())?;
    Ok(sender)
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1),
/// those the `Connection` header names, and any forwarding headers a client
/// sent itself.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        FORWARDED_FOR,
        FORWARDED_AT,
        FORWARDED_MAC,
    ] {
        h.remove(n);
    }
}

/// Every request to a standby: forwarded to the holder, or `503
/// no_holder` (with `Retry-After`) while there is none to reach.
async fn forward(
    State(f): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let client = match peer {
        Peer::Tcp(ip) => Some(ip),
        Peer::Local { .. } => None,
    };
    match f.relay(client, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// The standby's whole application: everything is forwarded.
pub fn router(f: Arc<Forwarder>) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> ForwardingKey {
        ForwardingKey(crypto::derived_key(&[seed; 32], "test"))
    }

    #[test]
    fn a_vouched_address_is_believed_and_a_changed_late_or_foreign_one_is_not() {
        let k = key(1);
        let now = 1_800_000_000;
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let mut h = HeaderMap::new();
        k.vouch(client, now, &mut h);
        assert_eq!(k.source(&h, now), Some(client));
        assert_eq!(
            k.source(&h, now + SKEW_SECS),
            Some(client),
            "clocks a little apart"
        );
        assert_eq!(k.source(&h, now + SKEW_SECS + 1), None, "too old: replayed");
        assert_eq!(key(2).source(&h, now), None, "another vault's servers' key");
        let mut other = h.clone();
        other.insert(FORWARDED_FOR, HeaderValue::from_static("198.51.100.8"));
        assert_eq!(k.source(&other, now), None, "another address under the MAC");
        let mut later = h.clone();
        later.insert(
            FORWARDED_AT,
            HeaderValue::from_str(&(now + 1).to_string()).unwrap(),
        );
        assert_eq!(k.source(&later, now), None, "another time under the MAC");
        let mut short = h.clone();
        short.insert(FORWARDED_MAC, HeaderValue::from_static("00"));
        assert_eq!(k.source(&short, now), None, "a short MAC");
        let mut none = h;
        none.remove(FORWARDED_MAC);
        assert_eq!(k.source(&none, now), None, "no MAC");
    }

    #[test]
    fn connection_headers_and_a_clients_own_forwarding_headers_are_not_relayed() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            (FORWARDED_FOR, "203.0.113.1"),
            (FORWARDED_MAC, "00"),
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ] {
            h.insert(
                axum::http::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-type"]);
    }
}
