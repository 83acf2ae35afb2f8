//! Issue 12, part 3: the audit trail in the business's log system.
//!
//! A minimal syslog collector in the test (a TCP listener reading RFC 5425
//! octet-counted frames) and the real `pivault-server` streaming to it on
//! 127.0.0.1: every event arrives in order with its seq and hashes, the
//! hashes chain and match the vault's own trail, concurrent clients keep the
//! order; a collector killed and restarted gets every event it missed
//! (dropped from the bounded queue, sent from the trail), never silence; a collector that never reads does not slow the
//! vault and the queue stays bounded; `doctor` reports a failing stream.
//! `audit export` in each format verifies offline with `audit verify
//! --file`, fails on any changed byte, removed or swapped line naming the
//! seq, and holds none of the fixture's personal information; an
//! `audit-exporter` service token exports and reads nothing else.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vault_core::access::Role;
use vault_core::ids::SubjectId;

use crate::cli::{self, CliVault};
use crate::common::{self, CUSTOMERS, PASSPHRASE};
use crate::documents;
use crate::server::{self, Server};

/// A minimal syslog collector: accepts one connection at a time and sends
/// each octet-counted frame's message (RFC 5425) to the test.
struct Collector {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Listens on `port` (0: any). `read: false` accepts and never reads,
    /// with the smallest receive buffer the kernel allows, so the server's
    /// socket fills after a few events.
    fn start(port: u16, read: bool, tx: Sender<String>) -> Collector {
        let listener = if read {
            TcpListener::bind(("127.0.0.1", port)).expect("bind the collector")
        } else {
            use socket2::{Domain, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_recv_buffer_size(1).unwrap();
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                .unwrap();
            s.listen(8).unwrap();
            s.into()
        };
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) if read => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        read_frames(conn, &tx, &s2);
                    }
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Collector {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the collector like a killed process: its sockets close.
    fn kill(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A syslog collector over TLS (RFC 5425) with a fresh self-signed
/// certificate for `localhost`; returns it and the certificate's PEM.
fn tls_collector(tx: Sender<String>) -> (Collector, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap(),
    );
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_millis(50)))
                        .unwrap();
                    let tls = rustls::ServerConnection::new(config.clone()).unwrap();
                    read_frames(rustls::StreamOwned::new(tls, conn), &tx, &s2);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (
        Collector {
            port,
            stop,
            thread: Some(thread),
        },
        pem,
    )
}

/// Reads `LEN SP MSG` frames until the peer closes or the collector stops.
fn read_frames(mut conn: impl Read, tx: &Sender<String>, stop: &AtomicBool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        }
        while let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "not an octet-counted frame: {:?}",
                        String::from_utf8_lossy(&buf[..sp.min(40)])
                    )
                });
            if buf.len() < sp + 1 + len {
                break;
            }
            let msg = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).expect("UTF-8 message");
            buf.drain(..sp + 1 + len);
            let _ = tx.send(msg);
        }
    }
}

/// One syslog message received: its MSGID, structured data and JSON body.
#[derive(Clone, Debug)]
struct Msg {
    msgid: String,
    raw: String,
    body: Value,
}

fn parse_msg(raw: &str) -> Msg {
    // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG
    let parts: Vec<&str> = raw.splitn(7, ' ').collect();
    assert!(
        parts[0].starts_with("<1") && parts[0].ends_with(">1"),
        "RFC 5424 PRI and version: {raw}"
    );
    assert_eq!(parts[2], "vault-e2e", "HOSTNAME: {raw}");
    assert_eq!(parts[3], "pivault", "APP-NAME: {raw}");
    let (_, json) = raw
        .split_once('\u{feff}')
        .expect("a BOM before the JSON message");
    let body: Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("message is JSON ({e}): {raw}"));
    // Every streamed event and gap report matches the published schema.
    documents::validate_as("audit-event", &body)
        .unwrap_or_else(|e| panic!("does not match schemas/audit-event.json: {e}\n{body}"));
    Msg {
        msgid: parts[5].to_owned(),
        raw: raw.to_owned(),
        body,
    }
}

/// Collects messages until none has arrived for `quiet`.
fn drain(rx: &Receiver<String>, quiet: Duration, max: Duration) -> Vec<Msg> {
    drain_at_least(rx, 0, quiet, max)
}

/// Like [`drain`], but a quiet spell ends it only once `events` audit
/// events have arrived: on a loaded machine (the whole suite on two cores)
/// the stream may pause longer than `quiet` before the last of them.
fn drain_at_least(
    rx: &Receiver<String>,
    events: usize,
    quiet: Duration,
    max: Duration,
) -> Vec<Msg> {
    let deadline = Instant::now() + max;
    let mut out: Vec<Msg> = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(quiet) {
            Ok(m) => out.push(parse_msg(&m)),
            Err(_) => {
                let seen = out
                    .iter()
                    .filter(|m| m.body["schema"] == "pivault-audit-event/1")
                    .count();
                if seen >= events {
                    break;
                }
            }
        }
    }
    out
}

/// The stored JSON the chain hashes, rebuilt from the published fields in
/// the order `audit.rs` documents (an independent reading of the spec).
fn stored_body(e: &Value) -> String {
    let j = |k: &str| serde_json::to_string(&e[k]).unwrap();
    format!(
        "{{\"seq\":{},\"time_ms\":{},\"actor\":{},\"channel\":{},\"source\":{},\"action\":{},\"targets\":{},\
         \"outcome\":{},\"code\":{},\"reason\":{},\"request_id\":{}}}",
        j("seq"),
        j("time_ms"),
        j("actor"),
        j("channel"),
        j("source"),
        j("action"),
        j("targets"),
        j("outcome"),
        j("code"),
        j("reason"),
        j("request_id")
    )
}

fn chain(prev_hex: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"pivault-audit-v1");
    h.update(hex::decode(prev_hex).unwrap());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

/// Checks each event's structured data, its hash and its link to the one
/// before; returns the events by seq.
fn check_events(msgs: &[Msg]) -> BTreeMap<u64, Value> {
    let mut by_seq = BTreeMap::new();
    for m in msgs
        .iter()
        .filter(|m| m.body["schema"] == "pivault-audit-event/1")
    {
        let e = &m.body;
        let seq = e["seq"].as_u64().unwrap();
        let hash = e["hash"].as_str().unwrap();
        assert!(
            m.raw.contains(&format!(
                "[pivault@32473 seq=\"{seq}\" hash=\"{hash}\" prev=\"{}\"]",
                e["prev"].as_str().unwrap()
            )),
            "seq and hashes in the structured data: {}",
            m.raw
        );
        assert_eq!(
            m.msgid,
            e["action"].as_str().unwrap()[..e["action"].as_str().unwrap().len().min(32)]
        );
        assert_eq!(
            chain(e["prev"].as_str().unwrap(), &stored_body(e)),
            hash,
            "hash of seq {seq}"
        );
        by_seq.insert(seq, e.clone());
    }
    for (seq, e) in &by_seq {
        if let Some(before) = by_seq.get(&(seq - 1)) {
            assert_eq!(
                e["prev"],
                before["hash"],
                "seq {seq} links to seq {}",
                seq - 1
            );
        }
    }
    by_seq
}

/// Seq → chain hash of the vault's own trail (its segment files).
fn trail_hashes(vault_dir: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for s in crate::common::segments(vault_dir) {
        for line in std::fs::read_to_string(s).unwrap().lines() {
            let (body, hash) = line.split_at(line.len() - 65);
            let v: Value = serde_json::from_str(body).unwrap();
            out.insert(v["seq"].as_u64().unwrap(), hash[1..].to_owned());
        }
    }
    out
}

fn stream_status(srv: &Server, token: &str) -> Value {
    let a = srv.call("GET", "/v1/audit/stream", Some(token), None);
    assert_eq!(a.status, 200, "{a:?}");
    a.json()
}

/// `pivault --json doctor` on a stopped server's vault: the audit-stream row.
fn doctor_stream_row(vault_dir: &Path, pass: &Path) -> Value {
    let out = Command::new(cli::pivault_bin())
        .args(["--json", "--vault"])
        .arg(vault_dir)
        .arg("doctor")
        .env("PIVAULT_PASSPHRASE_FILE", pass)
        .env_remove("PIVAULT_SERVER")
        .env("PIVAULT_SOCKET", vault_dir.join("no.sock"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("doctor --json: {}", String::from_utf8_lossy(&out.stderr)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "audit-stream")
        .cloned()
        .unwrap_or(Value::Null)
}

/// A fixture vault with two customers (personal information) and an
/// `audit-exporter` service account; returns its temp dir, vault dir,
/// the service token and the audit public key (PEM).
fn vault_with_exporter() -> (tempfile::TempDir, PathBuf, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let fx = common::fast_vault(&vault_dir);
    for (given, family) in [("Ada", "Lovelace"), ("Grace", "Hopper")] {
        fx.vault
            .put_record(
                &fx.clerk,
                CUSTOMERS,
                SubjectId::new(),
                &json!({ "given_name": given, "family_name": family, "ssn": "078-05-1120" }),
            )
            .unwrap();
    }
    let (_, token) = fx
        .vault
        .add_service_account(&fx.officer, "log-shipper", Role::AuditExporter)
        .unwrap();
    let pem = vault_core::certificate::public_key_pem(&fx.vault.audit_public_key());
    let token = token.expose().to_owned();
    fx.vault.close().unwrap();
    (tmp, vault_dir, token, pem)
}

const PI: [&str; 5] = ["Ada", "Lovelace", "Grace", "Hopper", "078-05-1120"];

#[test]
fn every_event_reaches_the_collector_in_order_and_a_restarted_collector_gets_what_it_missed() {
    let (tmp, vault_dir, exporter, _) = vault_with_exporter();
    let pass = tmp.path().join("pass-copy");
    cli::write_private(&pass, PASSPHRASE.as_bytes());
    let (tx, rx) = channel();
    let c1 = Collector::start(0, true, tx.clone());
    let port = c1.port;
    let url = format!("tcp://127.0.0.1:{port}");
    let srv = server::start_on(
        tmp,
        vault_dir.clone(),
        PASSPHRASE,
        &[
            "--syslog",
            &url,
            "--syslog-queue",
            "16",
            "--syslog-hostname",
            "vault-e2e",
        ],
    );
    // No earlier stream to this target: new events only, after the head.
    let head_at_start = stream_status(&srv, &exporter)["resumed_after_seq"]
        .as_u64()
        .expect("where the stream resumed");

    // Four clients at once: the stream keeps the trail's order.
    let tokens: Vec<String> = ["admin", "officer", "auditor", "clerk"]
        .iter()
        .map(|u| srv.token(u))
        .collect();
    std::thread::scope(|s| {
        for t in &tokens {
            let srv = &srv;
            s.spawn(move || {
                for _ in 0..25 {
                    assert_eq!(srv.call("GET", "/v1/whoami", Some(t), None).status, 200);
                }
            });
        }
    });
    let first = drain_at_least(
        &rx,
        100,
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    let events = check_events(&first);
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(
        seqs.first().copied(),
        Some(head_at_start + 1),
        "starts after the head at start"
    );
    assert!(
        seqs.len() >= 100,
        "at least the 100 requests: {}",
        seqs.len()
    );
    assert_eq!(
        first[0].msgid, "audit.checkpoint",
        "the stream opens with a signed checkpoint"
    );
    let order: Vec<u64> = first
        .iter()
        .filter(|m| m.body["schema"] == "pivault-audit-event/1")
        .filter_map(|m| m.body["seq"].as_u64())
        .collect();
    assert_eq!(
        order,
        (seqs[0]..=*seqs.last().unwrap()).collect::<Vec<_>>(),
        "every event once, in seq order"
    );
    assert!(
        first
            .iter()
            .all(|m| m.body["schema"] != "pivault-audit-gap/1"),
        "no gap while the collector listens"
    );

    // The collector dies; the vault goes on (more events than the queue holds).
    c1.kill();
    let auditor = &tokens[2];
    for _ in 0..40 {
        assert_eq!(
            srv.call("GET", "/v1/whoami", Some(auditor), None).status,
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let down = loop {
        let st = stream_status(&srv, &exporter);
        if st["state"] == "down" || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(down["state"], "down", "{down}");
    assert!(
        down["queued"].as_u64().unwrap() <= 16,
        "bounded queue: {down}"
    );
    assert!(down["dropped"].as_u64().unwrap() > 0, "{down}");

    // Back again: what was dropped from the queue while it was away comes
    // from the trail, in order, before the new events; no gap.
    let c2 = Collector::start(port, true, tx);
    for _ in 0..3 {
        srv.call("GET", "/v1/whoami", Some(auditor), None);
    }
    let second = drain(&rx, Duration::from_millis(2500), Duration::from_secs(60));
    assert!(
        second
            .iter()
            .all(|m| m.body["schema"] != "pivault-audit-gap/1"),
        "no gap: the trail fills what the queue dropped: {:?}",
        second.iter().map(|m| &m.msgid).collect::<Vec<_>>()
    );
    let later = check_events(&second);
    // Every seq from the first streamed to the last arrived (some twice:
    // those written just before the loss was noticed are sent again).
    let mut covered: Vec<u64> = events.keys().chain(later.keys()).copied().collect();
    covered.sort_unstable();
    covered.dedup();
    let last = *covered.last().unwrap();
    assert_eq!(
        covered,
        (seqs[0]..=last).collect::<Vec<_>>(),
        "a seq the collector never got"
    );
    // In the trail's order: after the replayed ones, each seq follows the one before.
    let order: Vec<u64> = second
        .iter()
        .filter(|m| m.body["schema"] == "pivault-audit-event/1")
        .filter_map(|m| m.body["seq"].as_u64())
        .collect();
    assert!(
        order.windows(2).all(|w| w[1] == w[0] + 1 || w[1] <= w[0]),
        "events out of order after the reconnect: {order:?}"
    );
    let up = stream_status(&srv, &exporter);
    assert_eq!(up["state"], "up", "{up}");
    assert_eq!(up["gaps_reported"], 0, "{up}");
    assert!(
        up["caught_up_from_trail"].as_u64().unwrap() >= down["dropped"].as_u64().unwrap(),
        "what the queue dropped was sent from the trail: {up}"
    );
    assert!(up["reconnects"].as_u64().unwrap() >= 1, "{up}");

    // Everything streamed is what the vault holds, and holds no PI.
    let (status, vault_dir, tmp) = srv.stop();
    assert!(status.success());
    let trail = trail_hashes(&vault_dir);
    for (seq, e) in events.iter().chain(later.iter()) {
        assert_eq!(
            Some(e["hash"].as_str().unwrap()),
            trail.get(seq).map(String::as_str),
            "seq {seq}"
        );
    }
    for m in first.iter().chain(second.iter()) {
        for pi in PI {
            assert!(
                !m.raw.contains(pi),
                "streamed message holds {pi:?}: {}",
                m.raw
            );
        }
    }
    // Nothing was lost: doctor finds the stream healthy once the server stopped.
    let row = doctor_stream_row(&vault_dir, &pass);
    assert_eq!(row["level"], "ok", "{row}");
    assert!(!row["detail"].as_str().unwrap().contains("gap"), "{row}");

    // Restarted while the collector is away: the server says where it
    // resumes from, the stream fails, and doctor fails it afterwards.
    c2.kill();
    let state: Value =
        serde_json::from_slice(&std::fs::read(vault_dir.join("audit-stream.json")).unwrap())
            .unwrap();
    let srv = server::start_on(
        tmp,
        vault_dir,
        PASSPHRASE,
        &[
            "--syslog",
            &url,
            "--syslog-queue",
            "16",
            "--syslog-hostname",
            "vault-e2e",
        ],
    );
    let st = stream_status(&srv, &exporter);
    assert_eq!(
        st["resumed_after_seq"], state["last_sent_seq"],
        "resumes where the last run stopped: {st}"
    );
    let t = srv.token("auditor");
    assert_eq!(srv.call("GET", "/v1/whoami", Some(&t), None).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_status(&srv, &exporter)["state"] != "down" {
        assert!(
            Instant::now() < deadline,
            "the stream reports its collector down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, vault_dir, _tmp) = srv.stop();
    let row = doctor_stream_row(&vault_dir, &pass);
    assert_eq!(row["level"], "FAIL", "{row}");
    assert!(row["detail"].as_str().unwrap().contains("failing"), "{row}");
}

#[test]
fn a_collector_that_never_reads_does_not_block_the_vault() {
    let (tmp, vault_dir, exporter, _) = vault_with_exporter();
    let (tx, _rx) = channel();
    let c = Collector::start(0, false, tx);
    let url = format!("tcp://127.0.0.1:{}", c.port);
    let srv = server::start_on(
        tmp,
        vault_dir,
        PASSPHRASE,
        &[
            "--syslog",
            &url,
            "--syslog-queue",
            "100",
            "--syslog-hostname",
            "vault-e2e",
        ],
    );
    let t = srv.token("auditor");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut max_queued = 0;
    const CALLS: usize = 2000;
    for i in 0..CALLS {
        let at = Instant::now();
        assert_eq!(srv.call("GET", "/v1/whoami", Some(&t), None).status, 200);
        slowest = slowest.max(at.elapsed());
        // A call stuck behind the collector would wait for the 10 s write
        // timeout; 5 s leaves room for a loaded machine.
        assert!(
            slowest < Duration::from_secs(5),
            "call {i} waited for the collector: {slowest:?}"
        );
        if i % 500 == 499 {
            let st = stream_status(&srv, &exporter);
            max_queued = max_queued.max(st["queued"].as_u64().unwrap());
        }
    }
    let took = started.elapsed();
    let st = stream_status(&srv, &exporter);
    eprintln!(
        "never-reading collector: {CALLS} calls in {took:?}, slowest {slowest:?}, max queued {max_queued}, status {st}"
    );
    assert!(
        max_queued <= 100 && st["queued"].as_u64().unwrap() <= 100,
        "bounded queue: {st}"
    );
    // The sender was stuck on a full socket: the queue filled and dropped.
    assert!(
        st["dropped"].as_u64().unwrap() > 0,
        "the collector's socket never filled: {st}"
    );
    drop(srv);
    c.kill();
}

/// Every rendering of a export: verifies offline, then fails for a
/// changed byte, a removed line and two swapped lines, naming the seq.
fn check_export_file(v: &CliVault, file: &Path, key: &Path) {
    let verify = |f: &Path| {
        v.run(
            None,
            &[
                "--json",
                "audit",
                "verify",
                "--file",
                f.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
        )
    };
    let r = verify(file);
    r.ok();
    let doc = r.json();
    assert_eq!(doc["ok"], true, "{doc}");
    assert!(
        doc["proves"]
            .as_str()
            .unwrap()
            .contains("nothing is proven about events before"),
        "{doc}"
    );
    let text = std::fs::read_to_string(file).unwrap();
    for pi in [
        "Lovelace",
        "Hopper",
        "078-05-1120",
        "ada@example.com",
        "4111 1111",
        "C-1001",
        "S12345678",
        "Turing",
        "219-09-9999",
        "617 555",
    ] {
        assert!(
            !text.contains(pi),
            "{}: the export holds {pi:?}",
            file.display()
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 10, "{}", lines.len());
    let tampered = file.with_extension("tampered");
    let write = |l: &[&str]| {
        std::fs::write(
            &tampered,
            l.iter().map(|x| format!("{x}\n")).collect::<String>(),
        )
        .unwrap()
    };
    // One byte of an event in the middle.
    let mid = lines.len() / 2;
    let mid = (mid..lines.len())
        .find(|&i| !lines[i].contains("checkpoint"))
        .unwrap();
    let changed = lines[mid].replacen("\"outcome\":\"success\"", "\"outcome\":\"denied\"", 1);
    let changed = if changed == lines[mid] {
        lines[mid].replacen("outcome=success", "outcome=denied", 1)
    } else {
        changed
    };
    assert_ne!(
        changed, lines[mid],
        "a success event to alter: {}",
        lines[mid]
    );
    let mut l = lines.clone();
    l[mid] = &changed;
    write(&l);
    let r = verify(&tampered);
    r.code(8);
    assert!(r.json()["first_bad_seq"].as_u64().is_some(), "{}", r.stdout);
    // One line removed.
    let mut l = lines.clone();
    l.remove(mid);
    write(&l);
    let r = verify(&tampered);
    r.code(8);
    assert!(r.json()["first_bad_seq"].as_u64().is_some(), "{}", r.stdout);
    // Two lines swapped.
    let mut l = lines.clone();
    l.swap(mid, mid + 1);
    write(&l);
    verify(&tampered).code(8);
    // The last line (the closing checkpoint) removed: not vouched for.
    let mut l = lines.clone();
    l.pop();
    write(&l);
    verify(&tampered).code(8);
}

#[test]
fn exported_files_verify_offline_and_any_tampering_fails_naming_the_seq() {
    let v = CliVault::standard();
    v.import(&cli::examples().join("customers.jsonl")).ok();
    for _ in 0..3 {
        v.run(Some("clerk"), &["--json", "record", "list"]).ok();
    }
    let keys = v.input.join("keys");
    v.run(
        Some("auditor"),
        &["--json", "keys", "export", "--out", keys.to_str().unwrap()],
    )
    .ok();
    let key = keys.join("audit.pem");
    for format in ["jsonl", "syslog", "cef"] {
        let file = v.input.join(format!("audit.{format}"));
        let r = v.run(
            Some("auditor"),
            &[
                "--json",
                "audit",
                "export",
                "--format",
                format,
                "--out",
                file.to_str().unwrap(),
            ],
        );
        r.ok();
        let doc = r.json();
        assert_eq!(doc["from_seq"], 1, "{doc}");
        assert_eq!(doc["to_seq"], doc["checkpoint_seq"], "{doc}");
        check_export_file(&v, &file, &key);
    }
    // From a time: the file opens with the signed checkpoint before it.
    let file = v.input.join("since.jsonl");
    let r = v.run(
        Some("auditor"),
        &[
            "--json",
            "audit",
            "export",
            "--since",
            "2000-01-01",
            "--from-seq",
            "5",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    r.ok();
    check_export_file(&v, &file, &key);
    // A clerk may not export the audit trail.
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "audit",
            "export",
            "--out",
            v.input.join("x").to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(!v.input.join("x").exists());
}

#[test]
fn an_audit_exporter_token_exports_over_http_and_reads_nothing_else() {
    let (tmp, vault_dir, exporter, pem) = vault_with_exporter();
    let key = tmp.path().join("audit.pem");
    std::fs::write(&key, &pem).unwrap();
    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &[]);
    for format in ["jsonl", "syslog", "cef"] {
        let a = srv.call(
            "GET",
            &format!("/v1/audit/export?format={format}&since=2000-01-01"),
            Some(&exporter),
            None,
        );
        assert_eq!(a.status, 200, "{a:?}");
        let doc = a.json();
        let text = doc["text"].as_str().unwrap();
        let key = vault_core::certificate::parse_public_key(&pem).unwrap();
        let r = vault_core::siem::verify_file(text, &key);
        assert!(r.ok(), "{format}: {r:?}");
        for pi in PI.iter().skip(1) {
            assert!(!text.contains(pi), "{format} export holds {pi:?}");
        }
        if format == "jsonl" {
            for line in text.lines().filter(|l| !l.starts_with("{\"checkpoint\"")) {
                let v: Value = serde_json::from_str(line).unwrap();
                documents::validate_as("audit-event", &v).unwrap_or_else(|e| panic!("{e}: {line}"));
            }
        }
    }
    assert_eq!(
        srv.call("GET", "/v1/audit/stream", Some(&exporter), None)
            .json()["configured"],
        false
    );
    for path in [
        "/v1/users",
        "/v1/records?collection=customers",
        "/v1/audit/report",
    ] {
        let a = srv.call("GET", path, Some(&exporter), None);
        assert_eq!(a.status, 403, "{path}: {a:?}");
    }
    let clerk = srv.token("clerk");
    assert_eq!(
        srv.call("GET", "/v1/audit/export", Some(&clerk), None)
            .status,
        403
    );
    let _ = key;
}

#[test]
fn the_stream_goes_over_tls_to_a_collector_whose_ca_is_given_and_not_to_another() {
    let (tmp, vault_dir, exporter, _) = vault_with_exporter();
    let (tx, rx) = channel();
    let (c, pem) = tls_collector(tx);
    let ca = tmp.path().join("collector-ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let url = format!("tls://localhost:{}", c.port);
    let args = [
        "--syslog",
        url.as_str(),
        "--syslog-ca",
        ca.to_str().unwrap(),
        "--syslog-hostname",
        "vault-e2e",
    ];
    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &args);
    let t = srv.token("auditor");
    for _ in 0..10 {
        assert_eq!(srv.call("GET", "/v1/whoami", Some(&t), None).status, 200);
    }
    let msgs = drain(&rx, Duration::from_millis(1500), Duration::from_secs(30));
    let events = check_events(&msgs);
    assert!(events.len() >= 10, "events over TLS: {}", events.len());
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(seqs, (seqs[0]..=seqs[seqs.len() - 1]).collect::<Vec<_>>());
    let (_, vault_dir, tmp) = srv.stop();
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}

    // The same collector, but the server is given another CA: nothing is
    // sent, and the stream says why.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong = tmp.path().join("other-ca.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let args = [
        "--syslog",
        url.as_str(),
        "--syslog-ca",
        wrong.to_str().unwrap(),
        "--syslog-hostname",
        "vault-e2e",
    ];
    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &args);
    let t = srv.token("auditor");
    assert_eq!(srv.call("GET", "/v1/whoami", Some(&t), None).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = stream_status(&srv, &exporter);
        if st["state"] == "down" && !st["last_error"].is_null() {
            break st;
        }
        assert!(Instant::now() < deadline, "{st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        st["last_error"].as_str().unwrap().contains("certificate"),
        "{st}"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing reaches a collector the CA does not vouch for"
    );
    drop(srv);
    c.kill();
}

#[test]
fn a_restarted_server_first_sends_what_it_had_not_sent() {
    let (tmp, vault_dir, exporter, _) = vault_with_exporter();
    let (tx, rx) = channel();
    let c = Collector::start(0, true, tx);
    let url = format!("tcp://127.0.0.1:{}", c.port);
    let args = ["--syslog", url.as_str(), "--syslog-hostname", "vault-e2e"];
    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &args);
    let t = srv.token("auditor");
    for _ in 0..5 {
        srv.call("GET", "/v1/whoami", Some(&t), None);
    }
    let first = check_events(&drain(
        &rx,
        Duration::from_millis(1500),
        Duration::from_secs(30),
    ));
    let (_, vault_dir, tmp) = srv.stop();
    let last_sent = *first.keys().last().unwrap();

    // While the server is down the custodian works on the vault directly:
    // those events are in the trail, not in any queue.
    let clock = Arc::new(vault_core::clock::ManualClock::new(common::T0 + 86_400_000));
    let v = common::open_vault(&vault_dir, &clock);
    let auditor = common::login(&v, "auditor");
    for _ in 0..7 {
        v.audit_events(&auditor, &Default::default()).unwrap();
    }
    v.close().unwrap();
    let head = *trail_hashes(&vault_dir).keys().last().unwrap();
    assert!(head > last_sent + 7);

    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &args);
    let st = stream_status(&srv, &exporter);
    assert!(
        st["resumed_after_seq"].as_u64().unwrap() >= last_sent,
        "{st}"
    );
    let second = drain(&rx, Duration::from_millis(1500), Duration::from_secs(30));
    assert!(
        second
            .iter()
            .all(|m| m.body["schema"] != "pivault-audit-gap/1"),
        "no gap: the backlog fits the queue"
    );
    let later = check_events(&second);
    let all: Vec<u64> = first.keys().chain(later.keys()).copied().collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted,
        (first.keys().next().copied().unwrap()..=*later.keys().last().unwrap()).collect::<Vec<_>>(),
        "the events appended while the server was down arrive after a restart"
    );
    assert!(later.contains_key(&head), "up to the head at restart");
    drop(srv);
    c.kill();
}

#[test]
fn what_the_collector_keeps_verifies_like_an_export() {
    let (tmp, vault_dir, _, pem) = vault_with_exporter();
    let (tx, rx) = channel();
    let c = Collector::start(0, true, tx);
    let url = format!("tcp://127.0.0.1:{}", c.port);
    let args = [
        "--syslog",
        url.as_str(),
        "--syslog-hostname",
        "vault-e2e",
        "--checkpoint-secs",
        "1",
    ];
    let srv = server::start_on(tmp, vault_dir, PASSPHRASE, &args);
    let t = srv.token("auditor");
    for _ in 0..20 {
        assert_eq!(srv.call("GET", "/v1/whoami", Some(&t), None).status, 200);
    }
    // Quiet for a while: the server's timer signs a checkpoint of the head.
    std::thread::sleep(Duration::from_millis(2500));
    let msgs = drain(&rx, Duration::from_millis(1500), Duration::from_secs(30));
    assert_eq!(msgs[0].msgid, "audit.checkpoint", "opens with a signature");
    let last_event = *check_events(&msgs).keys().last().unwrap();
    let text: String = msgs.iter().map(|m| format!("{}\n", m.raw)).collect();
    let key = vault_core::certificate::parse_public_key(&pem).unwrap();
    let r = vault_core::siem::verify_file(&text, &key);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.to_seq, last_event);
    assert_eq!(r.last_checkpoint_seq, last_event, "{r:?}");
    assert!(r.checkpoints >= 1, "{r:?}");
    // One event altered in the collector's copy: found, and named.
    let i = msgs
        .iter()
        .rposition(|m| m.raw.contains("\"outcome\":\"success\""))
        .unwrap();
    let seq = msgs[i].body["seq"].as_u64().unwrap();
    let text: String = msgs
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let line = if j == i {
                m.raw
                    .replace("\"outcome\":\"success\"", "\"outcome\":\"denied\"")
            } else {
                m.raw.clone()
            };
            format!("{line}\n")
        })
        .collect();
    let r = vault_core::siem::verify_file(&text, &key);
    assert_eq!(r.first_bad_seq, Some(seq), "{r:?}");
    drop(srv);
    c.kill();
}
