//! Issue 13: `pivault-server` under hostile traffic, through the real binary
//! on loopback (plain HTTP, raw HTTP/1.1 over TCP: TLS would only cost the
//! client CPU, and the framing middleware under test is the same).
//!
//! * Unauthenticated uploads are refused before their body is read: many
//!   concurrent 60 MB uploads leave the server's peak RSS (VmHWM) bounded.
//! * Unauthenticated and rate-limited answers are audited as one aggregated
//!   event per source and minute, not one event each: a flood adds a few
//!   kilobytes to the trail, and the events still say who, when, how many.
//! * Slow clients are disconnected by the header-read timeout, and reads
//!   keep working while many of them are connected.
//! * A source that floods the server with refused requests is shut out at
//!   accept (before any request is read), while other clients keep reading;
//!   connections are capped per source, on TCP and on the local socket.
//!
//! Knobs (defaults prove the point on 2 cores in seconds):
//! `PIVAULT_HOSTILE_UPLOADS` (32 concurrent uploads),
//! `PIVAULT_HOSTILE_UPLOAD_MB` (60 MB each), `PIVAULT_HOSTILE_REQUESTS`
//! (100,000 flood requests), `PIVAULT_HOSTILE_SLOW_CLIENTS` (200),
//! `PIVAULT_HOSTILE_IMPORTS` (6 concurrent streamed imports),
//! `PIVAULT_HOSTILE_IMPORT_MB` (32 MB each).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vault_core::audit::EventFilter;
use vault_core::secret::SecretString;
use vault_core::vault::{OpenOptions, Vault};

use crate::common::{self, PASSPHRASE};
use crate::server;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set of a process, KiB (`VmHWM` in `/proc/<pid>/status`).
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Total size of the audit trail's files, bytes.
fn audit_bytes(vault_dir: &Path) -> u64 {
    std::fs::read_dir(vault_dir.join("audit"))
        .expect("audit dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

/// Reads one HTTP/1.1 response (status line, headers, a Content-Length
/// body); `None` when the connection ended first.
fn read_response(r: &mut BufReader<TcpStream>) -> Option<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((status, headers))
}

/// One unauthenticated upload of `bytes` bytes to the import route,
/// streamed from a 64 KiB buffer (never allocated whole). The status the
/// server answered, or `None` if it closed the connection without one.
fn upload(addr: &str, bytes: u64) -> Option<u16> {
    upload_as(addr, bytes, None)
}

/// [`upload`] with a bearer token.
fn upload_as(addr: &str, bytes: u64, token: Option<&str>) -> Option<u16> {
    post_import(addr, token, "", bytes, &vec![b'x'; 64 << 10])
}

/// POSTs a body of `total` bytes to the import route (`query` appended),
/// streamed as repeats of `chunk` (never allocated whole); the status the
/// server answered, or `None` if it closed the connection without one.
fn post_import(
    addr: &str,
    token: Option<&str>,
    query: &str,
    total: u64,
    chunk: &[u8],
) -> Option<u16> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST /v1/collections/customers/import{query} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: text/plain\r\n{auth}Content-Length: {total}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("request head");
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if s.write_all(&chunk[..n]).is_err() {
            break; // refused: the server closed the connection
        }
        left -= n as u64;
    }
    read_response(&mut BufReader::new(s)).map(|(status, _)| status)
}

/// Concurrent unauthenticated 60 MB uploads are all refused (401 before the
/// body is read, or the connection closed), and the server's peak RSS stays
/// under 300 MB: before the fix each body was read into memory (up to the
/// import limit plus an 8 MiB drain) before the token was looked at.
#[test]
fn unauthenticated_uploads_are_refused_before_their_body_is_read() {
    let uploads = knob("PIVAULT_HOSTILE_UPLOADS", 32);
    let mb = knob("PIVAULT_HOSTILE_UPLOAD_MB", 60);
    let srv = server::start_plain(&["--no-access-log"]);
    let addr = srv.addr();
    let pid = srv.pid();
    let started = Instant::now();
    let answers: Vec<Option<u16>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..uploads)
            .map(|_| s.spawn(|| upload(&addr, mb << 20)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("upload")).collect()
    });
    let peak_mib = vm_hwm_kib(pid) / 1024;
    eprintln!(
        "hostile uploads: {uploads} x {mb} MB unauthenticated: answers {answers:?}, \
         server peak RSS {peak_mib} MiB, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for a in &answers {
        assert!(
            matches!(a, None | Some(401)),
            "an unauthenticated upload is refused: {answers:?}"
        );
    }
    assert!(
        peak_mib < 300,
        "server peak RSS {peak_mib} MiB after {uploads} unauthenticated {mb} MB uploads"
    );
    // The server still serves, and an authenticated import still works.
    let clerk = srv.token("clerk");
    let row = r#"{"subject":"c-1","given_name":"Ann","family_name":"Quimby"}"#;
    let a = srv.raw(
        "POST",
        "/v1/collections/customers/import",
        Some(&clerk),
        Some((row.as_bytes(), "text/plain")),
    );
    assert_eq!(a.status, 200, "authenticated import after the flood: {a:?}");
}

/// A signed-in user whose role may not import (an auditor) is refused
/// before the body is read: concurrent 60 MB uploads are all answered 403
/// (or the connection closed), none takes a share of the body budget (no
/// 503 `overloaded`), and the server's peak RSS stays far below the
/// budget. Before the check, each body was read within the 256 MiB budget
/// and only then refused by the import itself.
#[test]
fn uploads_by_a_role_that_may_not_import_are_refused_before_their_body_is_read() {
    let uploads = knob("PIVAULT_HOSTILE_UPLOADS", 32);
    let mb = knob("PIVAULT_HOSTILE_UPLOAD_MB", 60);
    let srv = server::start_plain(&["--no-access-log"]);
    let addr = srv.addr();
    let pid = srv.pid();
    let auditor = srv.token("auditor");
    let answers: Vec<Option<u16>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..uploads)
            .map(|_| s.spawn(|| upload_as(&addr, mb << 20, Some(&auditor))))
            .collect();
        hs.into_iter().map(|h| h.join().expect("upload")).collect()
    });
    let peak_mib = vm_hwm_kib(pid) / 1024;
    eprintln!(
        "auditor uploads: {uploads} x {mb} MB: answers {answers:?}, server peak RSS {peak_mib} MiB"
    );
    assert!(
        answers.iter().all(|a| matches!(a, None | Some(403))),
        "refused for the role, never read into the budget: {answers:?}"
    );
    assert!(
        answers.contains(&Some(403)),
        "the refusal is answered: {answers:?}"
    );
    assert!(
        peak_mib < 150,
        "server peak RSS {peak_mib} MiB after {uploads} refused {mb} MB uploads"
    );
    // The refusal is audited as a denial of the auditor, once per request.
    let ev = srv.call(
        "GET",
        "/v1/audit/events?action=access.denied",
        Some(&auditor),
        None,
    );
    let n = ev.json()["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["targets"].to_string().contains("CreateRecord"))
        .count();
    let answered = answers.iter().filter(|a| a.is_some()).count();
    assert!(
        n >= answered && n <= uploads as usize,
        "{n} access.denied events for {answered} answered uploads"
    );
}

/// Sends `count` unauthenticated requests on one keep-alive connection,
/// pipelined in batches; returns the answers by status.
fn flood(addr: &str, count: u64, worker: u64) -> std::collections::BTreeMap<u16, u64> {
    flood_with(addr, count, worker, "")
}

/// [`flood`] with `extra` header lines (each ending in CRLF) on every request.
fn flood_with(
    addr: &str,
    count: u64,
    worker: u64,
    extra: &str,
) -> std::collections::BTreeMap<u16, u64> {
    let mut seen = std::collections::BTreeMap::new();
    let mut sent = 0;
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    while sent < count {
        let (w, r) = conn.get_or_insert_with(|| {
            let s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.set_nodelay(true).unwrap();
            (s.try_clone().expect("clone"), BufReader::new(s))
        });
        let batch = (count - sent).min(32);
        let mut out = String::new();
        for i in 0..batch {
            // No token, an unknown route: 401, 404, or 429 once the
            // address is over its rate.
            let path = if (sent + i + worker).is_multiple_of(4) {
                "/v1/no-such-thing"
            } else {
                "/v1/whoami"
            };
            out.push_str(&format!(
                "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"
            ));
        }
        w.write_all(out.as_bytes()).expect("send batch");
        let mut closed = false;
        for _ in 0..batch {
            match read_response(r) {
                Some((status, headers)) => {
                    *seen.entry(status).or_insert(0) += 1;
                    sent += 1;
                    if headers
                        .iter()
                        .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
                    {
                        closed = true;
                        break;
                    }
                }
                None => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            conn = None;
        }
    }
    seen
}

/// Opens a stopped server's vault; the auditor's session and the events
/// whose action starts with `prefix`.
fn reopen_with_events(
    vault_dir: &Path,
    prefix: &str,
) -> (
    Vault,
    vault_core::vault::Session,
    Vec<vault_core::audit::AuditEvent>,
) {
    let vault = Vault::open(
        vault_dir,
        &SecretString::from(PASSPHRASE),
        OpenOptions::default(),
    )
    .expect("reopen");
    let auditor = common::login(&vault, "auditor");
    let evs = vault
        .audit_events(
            &auditor,
            &EventFilter {
                action_prefix: Some(prefix.into()),
                ..EventFilter::default()
            },
        )
        .expect("audit events");
    (vault, auditor, evs)
}

/// 100,000 unauthenticated or rate-limited requests add a few kilobytes to
/// the audit trail (one aggregated `http.refused` event per source and
/// minute), not one ~330-byte event each; the events still tell who, when
/// and how many, and the trail verifies.
#[test]
fn an_unauthenticated_flood_is_audited_in_aggregate() {
    let total = knob("PIVAULT_HOSTILE_REQUESTS", 100_000);
    let threads = 4;
    // A low per-address rate, so that part of the flood is answered 429.
    // Shutting out (`--refusals-per-minute`) off: this test counts what
    // the aggregation sees of a flood answered in full.
    let srv = server::start_plain(&[
        "--no-access-log",
        "--requests-per-second",
        "2000",
        "--refusals-per-minute",
        "0",
    ]);
    let addr = srv.addr();
    let before = audit_bytes(&srv.vault_dir);
    let t0 = jiff::Timestamp::now().as_millisecond();
    let started = Instant::now();
    let per = total / threads;
    let seen: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|w| {
                let addr = &addr;
                s.spawn(move || flood(addr, per, w))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("flood")).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let t1 = jiff::Timestamp::now().as_millisecond();
    let mut by_status = std::collections::BTreeMap::new();
    for m in &seen {
        for (k, v) in m {
            *by_status.entry(*k).or_insert(0u64) += v;
        }
    }
    let sent: u64 = by_status.values().sum();
    assert_eq!(sent, per * threads);
    assert!(
        by_status.keys().all(|s| matches!(s, 401 | 404 | 429)),
        "only refusals: {by_status:?}"
    );
    let (status, vault_dir, _tmp) = srv.stop();
    assert!(status.success(), "graceful stop: {status:?}");
    let grown = audit_bytes(&vault_dir) - before;
    eprintln!(
        "hostile flood: {sent} requests in {secs:.1} s ({:.0}/s), answers {by_status:?}, \
         audit trail grew by {grown} bytes",
        sent as f64 / secs
    );
    assert!(
        grown < 8 << 10,
        "{sent} refused requests grew the audit trail by {grown} bytes"
    );

    let (vault, auditor, evs) = reopen_with_events(&vault_dir, "http.");
    assert!(
        evs.iter().all(|e| e.action == "http.refused"),
        "no per-request events: {:?}",
        evs.iter().map(|e| &e.action).collect::<Vec<_>>()
    );
    let target = |e: &vault_core::audit::AuditEvent, k: &str| -> Option<String> {
        e.targets
            .iter()
            .find_map(|t| t.strip_prefix(&format!("{k}=")).map(str::to_owned))
    };
    let mut counted = 0;
    for e in &evs {
        assert_eq!(e.source.as_deref(), Some("127.0.0.1"), "who: {e:?}");
        assert!(e.actor.is_none());
        counted += target(e, "count")
            .and_then(|c| c.parse::<u64>().ok())
            .expect("count");
        for k in ["first", "last"] {
            let ms = vault_core::clock::parse_time(&target(e, k).expect(k)).expect("time");
            assert!(
                ms >= t0 - 1000 && ms <= t1 + 1000,
                "{k} within the flood: {e:?}"
            );
        }
        assert!(
            e.targets.iter().any(|t| t == "GET:/v1/whoami"),
            "routes named: {e:?}"
        );
    }
    assert_eq!(counted, sent, "how many: {evs:?}");
    for (status, n) in &by_status {
        let total: u64 = evs
            .iter()
            .filter_map(|e| target(e, &status.to_string()))
            .filter_map(|c| c.parse::<u64>().ok())
            .sum();
        assert_eq!(total, *n, "answers {status} counted");
    }
    let report = vault.audit_verify(&auditor).expect("verify");
    assert!(report.ok(), "the trail verifies: {report:?}");
    vault.close().expect("close");
}

/// Whether the server has closed `s` (EOF, reset, or a failed write), without blocking.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 512];
    let mut r = s;
    let closed = match r.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false, // an answer (e.g. 408): EOF follows
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}

/// Slow clients (request headers sent one byte a second) are disconnected
/// by the header-read timeout, an idle keep-alive connection too, and
/// masked reads keep working while 200 of them are connected; connections
/// past `--max-connections` are closed at accept.
#[test]
fn slow_clients_are_cut_off_and_reads_keep_working() {
    let slow = knob("PIVAULT_HOSTILE_SLOW_CLIENTS", 200) as usize;
    let timeout_s = 2;
    let cap = slow + 40;
    let srv = server::start_plain(&[
        "--no-access-log",
        "--header-timeout-secs",
        &timeout_s.to_string(),
        "--max-connections",
        &cap.to_string(),
    ]);
    let addr = srv.addr();
    let clerk = srv.token("clerk");
    let body = serde_json::json!({ "collection": common::CUSTOMERS, "data": {
        "given_name": "Ada", "family_name": "Quimby", "ssn": "123-45-6789" } });
    let put = srv.call("POST", "/v1/records", Some(&clerk), Some(&body));
    assert_eq!(put.status, 201, "{put:?}");
    let id = put.json()["record_id"].as_str().expect("id").to_owned();

    // An idle keep-alive connection, after one request.
    let mut idle = TcpStream::connect(&addr).expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut r).map(|a| a.0), Some(200));

    let started = Instant::now();
    let mut conns: Vec<Option<TcpStream>> = (0..slow)
        .map(|_| Some(TcpStream::connect(&addr).expect("connect a slow client")))
        .collect();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: yes\r\n\r\n";
    let mut cut_after = Vec::new();
    let mut reads_ok = 0;
    for second in 0..(timeout_s * 10) as usize {
        // One byte a second on every slow connection still open.
        for c in conns.iter_mut() {
            if let Some(s) = c {
                let gone = s
                    .write_all(&request[second % request.len()..][..1])
                    .is_err()
                    || closed_by_server(s);
                if gone {
                    *c = None;
                    cut_after.push(started.elapsed().as_secs_f64());
                }
            }
        }
        // Masked reads meanwhile (a fresh agent each time: a new
        // connection, as a new client would open).
        if second < 3 {
            for _ in 0..10 {
                let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
                assert_eq!(
                    a.status, 200,
                    "a read while slow clients are connected: {a:?}"
                );
                assert!(!a.text.contains("123-45-6789"), "masked");
                reads_ok += 1;
            }
        }
        if conns.iter().all(Option::is_none) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let open = conns.iter().filter(|c| c.is_some()).count();
    let latest = cut_after.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "hostile slow clients: {slow} connected, {reads_ok} reads answered meanwhile, \
         all cut off after {latest:.1} s (header timeout {timeout_s} s), {open} still open"
    );
    assert_eq!(open, 0, "every slow client is disconnected by the timeout");
    let mut b = [0u8; 16];
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(
        matches!(idle.read(&mut b), Ok(0) | Err(_)),
        "an idle keep-alive connection is closed by the timeout"
    );

    // Past the connection cap, new connections are closed at once.
    let held: Vec<TcpStream> = (0..cap + 10)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let refused = held.iter().filter(|s| closed_by_server(s)).count();
    assert!(
        refused >= 10,
        "{refused} of {} connections refused past the cap {cap}",
        cap + 10
    );
    drop(held);
    // And the server serves again once they are gone.
    std::thread::sleep(Duration::from_millis(300));
    let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
    assert_eq!(a.status, 200, "{a:?}");
}

/// `/readyz` says ready or not and nothing else: no vault ID, no epoch.
#[test]
fn readyz_tells_nothing_but_readiness() {
    let srv = server::start_plain(&["--no-access-log"]);
    let a = srv.call("GET", "/readyz", None, None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.json(),
        serde_json::json!({ "document": "health", "status": "ready", "version": 1 }),
        "{a:?}"
    );
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct SmallVolume(std::path::PathBuf);

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Free bytes on the file system holding `p` (`df`).
fn free_bytes(p: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Polls `/readyz` until it answers `status` (the guard checks every 2 s).
fn wait_ready(srv: &server::Server, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = srv.call("GET", "/readyz", None, None);
        if a.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {a:?}, waiting for {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A vault on a 40 MB volume: it is created and served there (RocksDB's
/// preallocations fit), and when the volume is nearly full the server
/// refuses new work with 503 `disk_low` and `/readyz` says not ready,
/// before an audit append could fail; freeing space brings it back.
/// Needs root to mount a tmpfs; skipped, saying so, where that is refused.
#[test]
fn a_nearly_full_disk_stops_new_work_before_the_audit_trail_fails() {
    let mount_dir = tempfile::tempdir().expect("tempdir");
    let mnt = mount_dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "SKIPPED a_nearly_full_disk_stops_new_work_before_the_audit_trail_fails: \
             cannot mount a tmpfs here (needs root)"
        );
        return;
    }
    let _volume = SmallVolume(mnt.clone());
    nearly_full_disk(&mnt);
}

/// The same on a 40 MB ext4 loop image: there a failed `fallocate` keeps
/// the blocks it grabbed, so RocksDB's default preallocations (~70 MiB per
/// WAL, 4 MiB per MANIFEST) made creating a vault fail with "No space left
/// on device" while `df` showed 30 MB free. Skipped, saying so, where
/// mkfs.ext4 or a loop mount is not available.
#[test]
fn on_a_small_ext4_volume_the_vault_is_created_and_the_disk_guard_holds() {
    let mount_dir = tempfile::tempdir().expect("tempdir");
    let image = mount_dir.path().join("volume.img");
    let mnt = mount_dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mount point");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(40 << 20))
        .expect("image");
    let quiet = |c: &mut std::process::Command| {
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mounted = quiet(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image),
    ) && quiet(
        std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt),
    );
    if !mounted {
        eprintln!(
            "SKIPPED on_a_small_ext4_volume_the_vault_is_created_and_the_disk_guard_holds: \
             no mkfs.ext4 or no loop mount here (needs root)"
        );
        return;
    }
    let _volume = SmallVolume(mnt.clone());
    nearly_full_disk(&mnt);
}

/// A vault created on the small volume `mnt`, served with an 8 MiB guard;
/// the volume filled to 4 MiB free, then freed.
fn nearly_full_disk(mnt: &Path) {
    let vault_dir = mnt.join("vault");
    let fx = common::fast_vault(&vault_dir);
    fx.vault.close().expect("close fixture vault");
    let srv = server::start_plain_on(
        tempfile::tempdir().expect("tempdir"),
        vault_dir,
        &["--no-access-log", "--min-free-mib", "8"],
    );
    wait_ready(&srv, 200);
    let clerk = srv.token("clerk");
    let body = serde_json::json!({ "collection": common::CUSTOMERS, "data": {
        "given_name": "Ada", "family_name": "Quimby", "ssn": "123-45-6789" } });
    let put = srv.call("POST", "/v1/records", Some(&clerk), Some(&body));
    assert_eq!(put.status, 201, "{put:?}");
    let id = put.json()["record_id"].as_str().expect("id").to_owned();
    eprintln!(
        "small volume: {} MiB free with the vault open",
        free_bytes(mnt) >> 20
    );

    // Fill the volume to 4 MiB free: under the 8 MiB guard.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 20];
        while free_bytes(mnt) > 4 << 20 {
            f.write_all(&chunk).expect("fill");
            f.sync_all().expect("sync");
        }
    }
    wait_ready(&srv, 503);
    let ready = srv.call("GET", "/readyz", None, None);
    assert_eq!(ready.json()["code"], "disk_low", "{ready:?}");
    let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.json()["code"], "disk_low", "{a:?}");
    assert!(!a.retry_after.is_empty(), "Retry-After: {a:?}");

    // Space freed: the server serves again.
    std::fs::remove_file(&filler).expect("remove filler");
    wait_ready(&srv, 200);
    let a = srv.call("GET", &format!("/v1/records/{id}"), Some(&clerk), None);
    assert_eq!(a.status, 200, "{a:?}");
    let (status, _, _tmp) = srv.stop();
    assert!(status.success(), "graceful stop: {status:?}");
}

/// A stream of made-up bearer tokens: each refused token is one
/// `auth.token` event (never two), and past `--bad-tokens-per-minute`
/// (burst half of it) the source's token-carrying requests get 429 without
/// a look-up, counted in the aggregated `http.refused` events; so the
/// stream cannot fill the disk either.
#[test]
fn a_stream_of_made_up_tokens_is_throttled() {
    let srv = server::start_plain(&[
        "--no-access-log",
        "--bad-tokens-per-minute",
        "60",
        "--refusals-per-minute",
        "0",
    ]);
    let addr = srv.addr();
    let started = Instant::now();
    let seen = flood_with(
        &addr,
        2000,
        1,
        "Authorization: Bearer pvt_made_up_078051120\r\n",
    );
    let secs = started.elapsed().as_secs_f64();
    let (status, vault_dir, _tmp) = srv.stop();
    assert!(status.success());
    let refused = seen.get(&401).copied().unwrap_or(0);
    let limited = seen.get(&429).copied().unwrap_or(0);
    eprintln!("made-up tokens: 2000 requests in {secs:.1} s: {seen:?}");
    assert_eq!(
        refused + limited + seen.get(&404).copied().unwrap_or(0),
        2000,
        "{seen:?}"
    );
    // Burst 30, then one a second.
    assert!(
        refused >= 30 && (refused as f64) <= 31.0 + secs,
        "{refused} tokens looked up in {secs:.1} s"
    );

    let vault = Vault::open(
        &vault_dir,
        &SecretString::from(PASSPHRASE),
        OpenOptions::default(),
    )
    .expect("reopen");
    let auditor = common::login(&vault, "auditor");
    let evs = vault
        .audit_events(&auditor, &EventFilter::default())
        .expect("audit events");
    let token_events = evs.iter().filter(|e| e.action == "auth.token").count() as u64;
    assert_eq!(
        token_events, refused,
        "one auth.token event per refused token"
    );
    assert!(
        !evs.iter().any(|e| e.action == "http.request"),
        "no second event for a refused token"
    );
    let counted: u64 = evs
        .iter()
        .filter(|e| e.action == "http.refused")
        .filter_map(|e| {
            e.targets
                .iter()
                .find_map(|t| t.strip_prefix("429="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    assert_eq!(counted, limited, "the 429s are counted");
    vault.close().expect("close");
}

/// A TCP connection to `addr` from the local address `from`: another
/// loopback address stands for another client.
fn connect_from(from: &str, addr: &str) -> std::io::Result<TcpStream> {
    let to: std::net::SocketAddr = addr.parse().expect("server address");
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("client address");
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&local.into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// What a flooding client saw.
#[derive(Debug, Default)]
struct FloodSeen {
    /// Answers by status.
    answers: std::collections::BTreeMap<u16, u64>,
    /// Connections closed before their first answer (at accept).
    closed_before_answer: u64,
    /// The shortest time such a connection was held open by the server.
    shortest_hold: Option<Duration>,
    /// Connections that got at least one answer (admitted at accept).
    admitted: u64,
    /// 429 answers after which the server kept the connection open.
    kept_open_after_429: u64,
    /// Answers after which the server kept the connection open.
    kept_open: u64,
}

/// Floods `addr` from `from` for `secs` with token-less requests, one at a
/// time on a keep-alive connection, reconnecting whenever the server closes.
fn flood_from(from: &str, addr: &str, secs: f64) -> FloodSeen {
    let mut seen = FloodSeen::default();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let Ok(s) = connect_from(from, addr) else {
            continue;
        };
        let connected = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut answered = false;
        loop {
            let sent = w
                .write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .is_ok();
            match read_response(&mut r).filter(|_| sent) {
                Some((status, headers)) => {
                    if !answered {
                        seen.admitted += 1;
                    }
                    answered = true;
                    *seen.answers.entry(status).or_insert(0) += 1;
                    let close = headers
                        .iter()
                        .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
                    if !close {
                        seen.kept_open += 1;
                        if status == 429 {
                            seen.kept_open_after_429 += 1;
                        }
                    }
                    if close || Instant::now() >= until {
                        break;
                    }
                }
                None => {
                    if !answered {
                        seen.closed_before_answer += 1;
                        let held = connected.elapsed();
                        seen.shortest_hold = Some(seen.shortest_hold.map_or(held, |h| h.min(held)));
                    }
                    break;
                }
            }
        }
    }
    seen
}

/// A source flooding the server with token-less requests (8 connections
/// at a time) uses up its `--refusals-per-minute` and is shut out: its
/// requests are answered 429 with the connection closed, and its new
/// connections are held at accept without being read (a tarpit, about a
/// second here) and closed, before any request is read. Meanwhile a clerk on another
/// address keeps reading, and the aggregated `http.refused` events count
/// both the answered refusals and the connections closed at accept.
#[test]
fn a_flooding_source_is_shut_out_at_accept_while_others_keep_reading() {
    let secs = 3.0;
    // 120 a minute: a burst of 60, then 2 a second.
    let srv = server::start_plain(&["--no-access-log", "--refusals-per-minute", "120"]);
    let addr = srv.addr();
    let clerk = srv.token("clerk");
    let (flood, reads) = std::thread::scope(|s| {
        let flooders: Vec<_> = (0..8)
            .map(|_| s.spawn(|| flood_from("127.0.0.2", &addr, secs)))
            .collect();
        let mut reads = std::collections::BTreeMap::new();
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            let a = srv.raw("GET", "/v1/whoami", Some(&clerk), None);
            *reads.entry(a.status).or_insert(0u64) += 1;
        }
        let mut all = FloodSeen::default();
        for f in flooders {
            let one = f.join().expect("flood");
            for (k, v) in one.answers {
                *all.answers.entry(k).or_insert(0) += v;
            }
            all.closed_before_answer += one.closed_before_answer;
            all.admitted += one.admitted;
            all.kept_open_after_429 += one.kept_open_after_429;
            all.kept_open += one.kept_open;
            all.shortest_hold = match (all.shortest_hold, one.shortest_hold) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        (all, reads)
    });
    eprintln!("flood from 127.0.0.2: {flood:?}; clerk's reads from 127.0.0.1: {reads:?}");
    assert_eq!(
        reads.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{reads:?}"
    );
    assert!(reads[&200] >= 20, "the clerk kept reading: {reads:?}");
    let answered: u64 = flood.answers.values().sum();
    // The budget: the burst (60) and the refill (2 a second), with a
    // second of slack. A refusal that took a token and left some keeps its
    // connection open; the one that took the last, or found none, closes
    // it. Several connections admitted on the last token each get that one
    // closing answer (the budget is charged when a request is refused, not
    // reserved when it starts), so the answers are bounded by the budget
    // plus one per admitted connection.
    let bound = 60 + (2.0 * (secs + 1.0)) as u64;
    assert!(
        flood.kept_open <= bound,
        "{} answers kept a shut-out source's connection open, past its budget of {bound}: {flood:?}",
        flood.kept_open
    );
    assert!(
        answered <= bound + flood.admitted,
        "a shut-out source got {answered} answers (at most {bound} and one per admitted connection): {flood:?}"
    );
    assert_eq!(
        flood.kept_open_after_429, 0,
        "a 429 closes its connection: {flood:?}"
    );
    assert!(
        flood.closed_before_answer >= 8,
        "the flood's connections were closed at accept: {flood:?}"
    );
    // Held (tarpitted) until the budget could refill, not closed at once:
    // the flood's generator waits instead of reconnecting in a loop.
    assert!(
        flood
            .shortest_hold
            .is_some_and(|h| h >= Duration::from_millis(900)),
        "a shut-out connection is held about a second before it is closed: {flood:?}"
    );

    let (status, vault_dir, _tmp) = srv.stop();
    assert!(status.success(), "graceful stop: {status:?}");
    let (vault, _auditor, evs) = reopen_with_events(&vault_dir, "http.refused");
    let sum = |k: &str| -> u64 {
        evs.iter()
            .filter(|e| e.source.as_deref() == Some("127.0.0.2"))
            .flat_map(|e| e.targets.iter())
            .filter_map(|t| t.strip_prefix(&format!("{k}=")))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("count"), answered, "answered refusals audited: {evs:?}");
    assert_eq!(
        sum("closed_at_accept"),
        flood.closed_before_answer,
        "connections closed at accept audited: {evs:?}"
    );
    assert!(
        evs.iter().all(|e| e.source.as_deref() != Some("127.0.0.1")),
        "the clerk's address was never refused: {evs:?}"
    );
    vault.close().expect("close");
}

/// Whether the server closes `s` (end of file or reset) before its read
/// timeout; a timeout means the connection was kept open.
fn closed_within(s: &mut impl Read) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Past `--max-connections-per-source`, a source's new connections are
/// closed at accept, while other sources still connect; on the local
/// socket the cap counts per OS user, and slow clients there are cut off
/// by the header timeout as on TCP.
#[test]
fn connections_are_capped_per_source_on_tcp_and_on_the_socket() {
    let srv = server::start_plain(&[
        "--no-access-log",
        "--max-connections-per-source",
        "4",
        "--header-timeout-secs",
        "2",
    ]);
    let addr = srv.addr();
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.3", &addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fifth = connect_from("127.0.0.3", &addr).expect("connect");
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_within(&mut &fifth),
        "the fifth connection from one source is closed at accept"
    );
    assert!(
        held.iter().all(|s| !closed_by_server(s)),
        "the four within the cap stay open"
    );
    let other = srv.raw("GET", "/healthz", None, None);
    assert_eq!(other.status, 200, "another source still connects");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let again = connect_from("127.0.0.3", &addr).expect("connect");
    let mut w = again.try_clone().unwrap();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let answer = read_response(&mut BufReader::new(again)).map(|(s, _)| s);
    assert_eq!(answer, Some(200), "a freed slot is usable again");

    // The local socket: the same cap, per OS user.
    let sock = srv
        .vault_dir
        .parent()
        .expect("run dir")
        .join("pivault.sock");
    let local: Vec<std::os::unix::net::UnixStream> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("socket"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fifth = std::os::unix::net::UnixStream::connect(&sock).expect("socket");
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        closed_within(&mut &fifth),
        "the fifth socket connection of one OS user is closed at accept"
    );
    drop(local);
    // A slow client on the socket: one header byte, then silence.
    std::thread::sleep(Duration::from_millis(300));
    let mut slow = std::os::unix::net::UnixStream::connect(&sock).expect("socket");
    slow.write_all(b"G").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(6),
        "a slow socket client is cut off by the 2 s header timeout (waited {waited:?})"
    );
}

/// Streams one import body of about `bytes` bytes (the row repeated) to
/// the import route with `query`, as `token`; the answer's status.
fn upload_rows(addr: &str, token: &str, query: &str, bytes: u64, row: &[u8]) -> Option<u16> {
    let rows = (bytes / row.len() as u64).max(1);
    let chunk: Vec<u8> = row.repeat(((64 << 10) / row.len()).max(1));
    post_import(addr, Some(token), query, rows * row.len() as u64, &chunk)
}

/// Imports are streamed through an encrypted spool on the vault's disk,
/// never held whole: concurrent check-only imports by a clerk are all
/// answered 200 while the server's peak RSS stays below the sum of their
/// bodies (before, each body was read into memory within the 256 MiB
/// budget). A server killed in the middle of an upload leaves only
/// ciphertext (no SSN, with or without dashes, in any file of the vault),
/// and the next open of the vault removes the spool.
#[test]
fn imports_are_streamed_through_an_encrypted_spool() {
    let imports = knob("PIVAULT_HOSTILE_IMPORTS", 6);
    let mb = knob("PIVAULT_HOSTILE_IMPORT_MB", 32);
    let srv = server::start_plain(&["--no-access-log"]);
    let addr = srv.addr();
    let pid = srv.pid();
    let clerk = srv.token("clerk");
    let row = b"{\"subject\":\"c-1\",\"given_name\":\"Ann\",\"family_name\":\"Quimby\",\"ssn\":\"123-45-6789\"}\n";
    let started = Instant::now();
    let answers: Vec<Option<u16>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..imports)
            .map(|_| s.spawn(|| upload_rows(&addr, &clerk, "?check=true", mb << 20, row)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("import")).collect()
    });
    let peak_mib = vm_hwm_kib(pid) / 1024;
    eprintln!(
        "streamed imports: {imports} x {mb} MB checked: answers {answers:?}, server peak RSS \
         {peak_mib} MiB, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(answers.iter().all(|a| *a == Some(200)), "{answers:?}");
    assert!(
        peak_mib < imports * mb / 2,
        "peak RSS {peak_mib} MiB for {imports} x {mb} MB of imports: not streamed"
    );
    let spool = srv.vault_dir.join("spool");
    assert_eq!(
        std::fs::read_dir(&spool).map_or(0, |d| d.count()),
        0,
        "no spool is left after the imports"
    );

    // Killed in the middle of an upload: the spool on disk is ciphertext.
    let (addr2, clerk2) = (addr.clone(), clerk.clone());
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr2).expect("connect");
        let total = 8u64 << 20;
        let head = format!(
            "POST /v1/collections/customers/import HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {clerk2}\r\nContent-Length: {total}\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes());
        let chunk = row.repeat((1 << 20) / row.len());
        // Half the body, then hold the connection open.
        for _ in 0..4 {
            let _ = s.write_all(&chunk);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let spooled = loop {
        let big = std::fs::read_dir(&spool).ok().and_then(|d| {
            d.flatten()
                .find(|e| e.metadata().is_ok_and(|m| m.len() >= 2 << 20))
                .map(|e| e.path())
        });
        if let Some(p) = big {
            break p;
        }
        assert!(Instant::now() < deadline, "the upload reached the spool");
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(spooled.exists(), "the killed server's spool is on disk");
    for needle in [&b"123-45-6789"[..], b"123456789", b"Quimby"] {
        let found = common::files_containing(&srv.vault_dir, needle);
        assert!(
            found.is_empty(),
            "{} in {found:?}",
            String::from_utf8_lossy(needle)
        );
    }
    let vault = Vault::open(
        &srv.vault_dir,
        &SecretString::from(PASSPHRASE),
        OpenOptions::default(),
    )
    .expect("reopen after the kill");
    assert!(!spooled.exists(), "the next open removes the spool");
    vault.close().expect("close");
    drop(slow);
}
