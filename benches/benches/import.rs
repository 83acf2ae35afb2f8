//! Streaming import benchmark (plain `main`, not criterion: one long run).
//!
//! Generates a JSON Lines file of N synthetic records of about 1 KiB each
//! (N = `PIVAULT_BENCH_IMPORT_N`, default 100,000), imports it into a fresh
//! vault through `Vault::import_records` reading a `BufReader<File>`, and
//! prints records/s, seconds, the input size and the peak resident set
//! (`VmHWM`) before and after the import, so one can see that the import
//! streams: its peak is RocksDB's working memory, not the file.
//!
//! The raw RocksDB baseline (the same number of 1 KiB values, default
//! options, no sync) runs in a child process (this executable, re-run with
//! `PIVAULT_BENCH_IMPORT_PHASE=raw`) so that its peak RSS is measured clean
//! and memory the vault freed but the allocator kept does not blur either
//! number.
//!
//! Run: `cargo bench -p vault-bench --bench import`
//! (or `PIVAULT_BENCH_IMPORT_N=400000 cargo bench -p vault-bench --bench import`).

#[allow(dead_code)]
mod common;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rocksdb::DB;
use serde_json::json;
use vault_core::ids::RecordId;
use vault_core::vault::ImportFormat;

const LINE_TARGET: usize = 1024;
const PHASE_ENV: &str = "PIVAULT_BENCH_IMPORT_PHASE";

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn show_kib(v: Option<u64>) -> String {
    v.map_or_else(
        || "n/a".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that does not match skips the run.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filter.is_empty() && !filter.iter().any(|f| "import".contains(f.as_str())) {
        return;
    }
    let n: u64 = std::env::var("PIVAULT_BENCH_IMPORT_N")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    if std::env::var(PHASE_ENV).as_deref() == Ok("raw") {
        raw_baseline(n);
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("records.jsonl");
    let t = Instant::now();
    write_input(&input, n);
    let file_bytes = std::fs::metadata(&input).expect("stat").len();
    println!(
        "input: {n} records, {} bytes ({:.1} MiB, {:.0} bytes/line), generated in {:.1} s",
        file_bytes,
        mib(file_bytes),
        file_bytes as f64 / n as f64,
        t.elapsed().as_secs_f64()
    );

    let fx = common::fixture(&tmp.path().join("vault"));
    let (hwm_before, rss_before) = common::mem_kib();
    // The peak so far includes vault creation (Argon2id password hashes of
    // 19 MiB each); reset it so that the peak after is the import's own.
    let reset = common::reset_peak_rss();
    let reader = BufReader::with_capacity(64 * 1024, File::open(&input).expect("open input"));
    let t = Instant::now();
    let report = fx
        .vault
        .import_records(
            &fx.clerk,
            common::COLLECTION,
            reader,
            ImportFormat::JsonLines,
            "subject",
            false,
            &mut |_| {},
        )
        .expect("import");
    let secs = t.elapsed().as_secs_f64();
    let (hwm_after, rss_after) = common::mem_kib();
    assert_eq!(report.imported, n, "every row imported");
    assert_eq!(
        report.rejected_count,
        0,
        "no row rejected: {:?}",
        report.rejected.first()
    );
    let vault_rate = n as f64 / secs;
    println!(
        "vault import_records: {n} records in {secs:.2} s = {vault_rate:.0} records/s ({:.1} MiB/s of input)",
        mib(file_bytes) / secs
    );
    println!(
        "vault memory: VmHWM before import {} (VmRSS {}){}; VmHWM after import {} (VmRSS {}); input file {:.1} MiB",
        show_kib(hwm_before),
        show_kib(rss_before),
        if reset {
            ", peak reset before the import"
        } else {
            ", peak NOT reset (includes set-up)"
        },
        show_kib(hwm_after),
        show_kib(rss_after),
        mib(file_bytes)
    );
    drop(report);
    drop(fx);
    drop(tmp);

    // The raw baseline, in a fresh process.
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .env(PHASE_ENV, "raw")
        .env("PIVAULT_BENCH_IMPORT_N", n.to_string())
        .output()
        .expect("run the raw baseline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "raw baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw_rate: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("raw_records_per_s="))
        .and_then(|v| v.trim().parse().ok())
        .expect("raw rate");
    println!(
        "ratio vault/raw (records/s): {:.3} (raw is {:.1}x faster)",
        vault_rate / raw_rate,
        raw_rate / vault_rate
    );
}

/// Writes `n` JSON Lines rows of about `LINE_TARGET` bytes, streaming.
fn write_input(path: &Path, n: u64) {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut w = BufWriter::new(File::create(path).expect("create input"));
    // The subject reference and the dashes of the SSN add ~30 bytes to the stored body.
    let template = common::body_of_size(0, LINE_TARGET - 1 - 29);
    let pad = template["notes"].as_str().expect("notes").len();
    for i in 0..n {
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            rng.random_range(1..=665u32),
            rng.random_range(1..=99u32),
            rng.random_range(1..=9999u32)
        );
        let mut m = common::body_with_padding(i, pad);
        m.insert("ssn".into(), json!(ssn));
        m.insert("subject".into(), json!(format!("cust-{i:010}")));
        serde_json::to_writer(&mut w, &m).expect("write");
        w.write_all(b"\n").expect("write");
    }
    w.flush().expect("flush");
}

/// Child process: `n` raw RocksDB puts of 1 KiB values into a fresh DB.
fn raw_baseline(n: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = DB::open_default(tmp.path().join("raw")).expect("open raw RocksDB");
    let value = vec![0x5au8; LINE_TARGET];
    let (hwm_before, rss_before) = common::mem_kib();
    let t = Instant::now();
    for _ in 0..n {
        db.put(RecordId::new().as_bytes(), &value).expect("put");
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = n as f64 / secs;
    let (hwm_after, _) = common::mem_kib();
    println!(
        "rocksdb raw put (separate process): {n} x {LINE_TARGET} B in {secs:.2} s = {rate:.0} records/s"
    );
    println!(
        "raw memory: VmHWM before {} (VmRSS {}); VmHWM after {}",
        show_kib(hwm_before),
        show_kib(rss_before),
        show_kib(hwm_after)
    );
    println!("raw_records_per_s={rate}");
}
