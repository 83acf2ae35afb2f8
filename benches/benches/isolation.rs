//! Reads and writes beside a disposal batch (issue 9, DESIGN §9 invariant 6).
//!
//! A vault of `PIVAULT_BENCH_ISO_N` records (default 30,000, ~200-byte bodies,
//! 1,024 key buckets) is read by `PIVAULT_BENCH_ISO_READERS` threads (default
//! 2) and written by one thread, each operation timed, in two phases of the
//! same run:
//!
//! * **quiet**: no disposal, for `PIVAULT_BENCH_ISO_SECS` seconds (default 5);
//! * **during**: while one disposal batch of `PIVAULT_BENCH_ISO_BATCH`
//!   records (default 10,000: a `Records` list spread over every bucket, so
//!   the batch locks and rotates every bucket) runs end to end.
//!
//! Reads target records outside the batch. It prints, per phase, operations
//! per second and latency p50 / p99 / p99.9 / max for `get_record` (masked)
//! and `put_record`, and the ratios during/quiet: the bucket locks make a
//! read or write of a touched bucket wait for that bucket's rotation, never
//! for the ratchet, purge, verification or certificate.
//!
//! Run: `cargo bench --profile dev -p vault-bench --bench isolation` (or the
//! binary the dev build leaves in `target/debug/deps/isolation-*`).

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vault_core::ids::{RecordId, SubjectId};
use vault_core::secret::SecretString;
use vault_core::vault::{Context, DisposalParties, DisposalRequest, DisposalScope, Session, Vault};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Latencies of one kind of operation in one phase.
#[derive(Default)]
struct Lat(Vec<Duration>);

impl Lat {
    fn q(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1e3
    }
}

struct Phase {
    secs: f64,
    reads: Lat,
    writes: Lat,
}

fn report(name: &str, p: &Phase) {
    for (what, l) in [("get", &p.reads), ("put", &p.writes)] {
        println!(
            "{name:<7} {what}: {:>8.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms  (n={})",
            l.0.len() as f64 / p.secs,
            l.q(0.5),
            l.q(0.99),
            l.q(0.999),
            l.q(1.0),
            l.0.len()
        );
    }
}

/// Runs readers and a writer until `stop` is set; returns their latencies.
fn load(
    vault: &Arc<Vault>,
    clerk: &Session,
    readable: &Arc<Vec<RecordId>>,
    readers: usize,
    stop: &Arc<AtomicBool>,
) -> (Lat, Lat) {
    let mut handles = Vec::new();
    for r in 0..readers {
        let (vault, clerk, readable, stop) =
            (vault.clone(), clerk.clone(), readable.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut i = r * 7919;
            while !stop.load(Ordering::Relaxed) {
                let id = readable[i % readable.len()];
                i += 1;
                let t = Instant::now();
                vault.get_record(&clerk, id, &[], None).expect("read");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let writer = {
        let (vault, clerk, stop) = (vault.clone(), clerk.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut i = 10_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = serde_json::Value::Object(common::body_with_padding(i, 60));
                let t = Instant::now();
                vault
                    .put_record(&clerk, common::COLLECTION, SubjectId::new(), &body)
                    .expect("write");
                lat.push(t.elapsed());
            }
            lat
        })
    };
    let mut reads = Lat::default();
    for h in handles {
        reads.0.extend(h.join().expect("reader"));
    }
    let writes = Lat(writer.join().expect("writer"));
    (reads, writes)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("PIVAULT_BENCH_ISO_N", 30_000);
    let batch = env_or("PIVAULT_BENCH_ISO_BATCH", 10_000).min(n / 2);
    let readers = env_or("PIVAULT_BENCH_ISO_READERS", 2) as usize;
    let secs = env_or("PIVAULT_BENCH_ISO_SECS", 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = common::fixture(&dir.path().join("vault"));
    let vault = Arc::new(fx.vault);
    let clerk = fx.clerk;
    let officer = vault
        .login(
            common::OFFICER.0,
            &SecretString::from(common::OFFICER.1),
            Context::cli(),
        )
        .expect("officer login");
    let t = Instant::now();
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let body = serde_json::Value::Object(common::body_with_padding(i, 60));
        ids.push(
            vault
                .put_record(&clerk, common::COLLECTION, SubjectId::new(), &body)
                .expect("put"),
        );
    }
    println!(
        "isolation: {n} records stored in {:.1} s; batch of {batch}; {readers} reader(s) + 1 writer",
        t.elapsed().as_secs_f64()
    );
    // Every other record goes into the batch: it touches every bucket.
    let doomed: Vec<RecordId> = ids
        .iter()
        .step_by(2)
        .take(batch as usize)
        .copied()
        .collect();
    let readable: Arc<Vec<RecordId>> = Arc::new(
        ids.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1 || *i / 2 >= batch as usize)
            .map(|(_, id)| *id)
            .collect(),
    );

    // Phase 1: quiet.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let s2 = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        s2.store(true, Ordering::Relaxed);
    });
    let (reads, writes) = load(&vault, &clerk, &readable, readers, &stop);
    timer.join().expect("timer");
    let quiet = Phase {
        secs: started.elapsed().as_secs_f64(),
        reads,
        writes,
    };

    // Phase 2: during one batch.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let disposer = {
        let (vault, officer, stop) = (vault.clone(), officer.clone(), stop.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let out = vault
                .dispose(
                    &officer,
                    &DisposalRequest {
                        scope: DisposalScope::Records(doomed),
                        parties: DisposalParties::default(),
                        dry_run: false,
                    },
                )
                .expect("dispose");
            stop.store(true, Ordering::Relaxed);
            (out.records.len(), t.elapsed())
        })
    };
    let (reads, writes) = load(&vault, &clerk, &readable, readers, &stop);
    let (disposed, took) = disposer.join().expect("disposer");
    let during = Phase {
        secs: started.elapsed().as_secs_f64(),
        reads,
        writes,
    };
    println!(
        "batch: {disposed} records disposed in {:.2} s (one certificate)",
        took.as_secs_f64()
    );
    report("quiet", &quiet);
    report("during", &during);
    for (what, q, d) in [
        ("get", &quiet.reads, &during.reads),
        ("put", &quiet.writes, &during.writes),
    ] {
        println!(
            "ratio during/quiet {what}: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            (d.0.len() as f64 / during.secs) / (q.0.len() as f64 / quiet.secs),
            d.q(0.5) / q.q(0.5),
            d.q(0.99) / q.q(0.99)
        );
    }
}
