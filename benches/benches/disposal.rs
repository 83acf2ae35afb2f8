//! Disposal benchmarks (plain `main`, like `import.rs`: long set-ups, few
//! repetitions). For each vault size N (records; `PIVAULT_BENCH_DISPOSAL_SIZES`,
//! comma-separated, default `10000,100000`; the full series is
//! `10000,100000,1000000`):
//!
//! * one record: `Vault::dispose` of one record, end to end — intent, key
//!   deletion, bucket rotation, epoch ratchet, keystore purge, ciphertext
//!   deletion, verification (incl. the byte scan), ledger, audit, signed
//!   certificate — median and max of `PIVAULT_BENCH_DISPOSAL_REPS` (default 5);
//! * one subject (5 records of one subject), same;
//! * a batch of 10,000 records (one `dispose query` over a collection holding
//!   them), once.
//!
//! Then the retention run: `PIVAULT_BENCH_RETENTION_N` (default 100,000)
//! records past retention (a manual clock moved past the period), disposed by
//! one `retention run` (`DisposalScope::PastRetention`), in records/s.
//!
//! Records are ~200-byte bodies written through `Vault::put_record` (the full
//! path); 1,024 key buckets; `KdfParams::INSECURE_FAST` for the vault
//! passphrase (its cost is paid once per open, not per disposal).
//!
//! Run: `cargo bench --workspace --bench disposal`, or the binary the dev
//! build leaves in `target/debug/deps/disposal-*` with `--bench`.

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_core::access::Role;
use vault_core::clock::ManualClock;
use vault_core::crypto::KdfParams;
use vault_core::ids::SubjectId;
use vault_core::ids::{CollectionName, Username};
use vault_core::secret::SecretString;
use vault_core::vault::{
    Context, DEFAULT_BUCKETS, DisposalParties, DisposalRequest, DisposalScope, InitOptions,
    OpenOptions, RetentionPolicy, Session, Vault,
};

const BATCH: u64 = 10_000;
const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01

struct Bench {
    vault: Vault,
    clock: Arc<ManualClock>,
    clerk: Session,
    officer: Session,
    admin: Session,
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|v| v.trim().replace('_', "").parse().ok())
        .collect()
}

fn setup(dir: &std::path::Path) -> Bench {
    let clock = Arc::new(ManualClock::new(T0));
    let init = InitOptions {
        kdf: KdfParams::INSECURE_FAST,
        buckets: DEFAULT_BUCKETS,
        admin: Username::parse(common::ADMIN.0).unwrap(),
        admin_password: SecretString::from(common::ADMIN.1),
        two_factor: vault_core::access::TwoFactorPolicy::none(),
    };
    let opts = OpenOptions {
        clock: clock.clone(),
        ..OpenOptions::default()
    };
    let vault = Vault::create(dir, &SecretString::from(common::PASSPHRASE), init, opts).unwrap();
    let login = |u: (&str, &str)| {
        vault
            .login(u.0, &SecretString::from(u.1), Context::cli())
            .unwrap()
    };
    let admin = login(common::ADMIN);
    for (u, role) in [
        (common::OFFICER, Role::Officer),
        (common::CLERK, Role::Clerk),
    ] {
        vault
            .add_user(&admin, u.0, &SecretString::from(u.1), role, false)
            .unwrap();
    }
    for c in [common::COLLECTION, "batch"] {
        vault
            .create_collection(&admin, c, &common::schema())
            .unwrap();
    }
    let officer = login(common::OFFICER);
    let clerk = login(common::CLERK);
    Bench {
        vault,
        clock,
        clerk,
        officer,
        admin,
    }
}

fn body(i: u64) -> Value {
    json!({
        "given_name": "Bench",
        "family_name": format!(
            "Person{}{}",
            char::from(b'a' + (i / 26 % 26) as u8),
            char::from(b'a' + (i % 26) as u8)
        ),
        "ssn": common::synthetic_ssn(i),
        "notes": common::filler(100, i),
    })
}

/// Stores `n` records, one subject each, in `collection`.
fn fill(b: &Bench, collection: &str, n: u64, offset: u64) {
    let t = Instant::now();
    for i in 0..n {
        b.vault
            .put_record(&b.clerk, collection, SubjectId::new(), &body(offset + i))
            .unwrap();
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "  stored {} / {n} in {collection} ({:.0} records/s)",
                i + 1,
                (i + 1) as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
}

fn request(scope: DisposalScope) -> DisposalRequest {
    DisposalRequest {
        scope,
        parties: DisposalParties {
            data_owner: "Benchmark Co".into(),
            ..DisposalParties::default()
        },
        dry_run: false,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filter.is_empty() && !filter.iter().any(|f| "disposal".contains(f.as_str())) {
        return;
    }
    let sizes = env_list("PIVAULT_BENCH_DISPOSAL_SIZES", "10000,100000");
    let reps = env_list("PIVAULT_BENCH_DISPOSAL_REPS", "5")[0].max(1) as usize;
    let retention_n = env_list("PIVAULT_BENCH_RETENTION_N", "100000")[0];
    // 1 (default): compact the keystore after the fill, before timing; 0: time
    // the first disposals right after the bulk load (with its compaction debt).
    let settle = env_list("PIVAULT_BENCH_SETTLE", "1")[0] != 0;
    println!(
        "disposal benchmark: sizes {sizes:?}, {reps} repetitions, retention {retention_n}, settle {settle}"
    );
    println!(
        "| vault records | one record median (max) | one subject (5 records) median (max) | batch of 10,000 | batch records/s |"
    );
    println!("|---|---|---|---|---|");
    for &n in &sizes {
        let tmp = tempfile::tempdir().unwrap();
        let b = setup(&tmp.path().join("vault"));
        let t = Instant::now();
        let batch = BATCH.min(n);
        fill(&b, "batch", batch, 0);
        fill(&b, common::COLLECTION, n - batch, batch);
        // Subjects with 5 records each, and single records, to dispose.
        let mut singles = Vec::new();
        let mut subjects = Vec::new();
        for r in 0..reps as u64 {
            singles.push(
                b.vault
                    .put_record(&b.clerk, common::COLLECTION, SubjectId::new(), &body(n + r))
                    .unwrap(),
            );
            let s = SubjectId::new();
            for k in 0..5 {
                b.vault
                    .put_record(&b.clerk, common::COLLECTION, s, &body(n + 100 + r * 5 + k))
                    .unwrap();
            }
            subjects.push(s);
        }
        eprintln!(
            "  vault of {n} records filled in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        if settle {
            // Steady state: let RocksDB finish the bulk load's compactions
            // (untimed) so that the first disposals do not wait for them.
            let t = Instant::now();
            let all: Vec<u32> = (0..DEFAULT_BUCKETS).collect();
            b.vault.keystore().purge(&all, false).unwrap();
            eprintln!("  settled in {:.1} s", t.elapsed().as_secs_f64());
        }
        let mut one = Vec::new();
        let mut purge = Vec::new();
        for id in &singles {
            let t = Instant::now();
            let o = b
                .vault
                .dispose(&b.officer, &request(DisposalScope::Record(*id)))
                .unwrap();
            one.push(ms(t.elapsed()));
            let c = b
                .vault
                .certificate(&b.officer, o.certificate_id.unwrap())
                .unwrap();
            let d = &c.body["sanitization"]["details"]["keystore_purge"];
            purge.push(d["duration_ms"].as_f64().unwrap_or(0.0));
        }
        eprintln!(
            "  one record, N={n}: keystore purge (flush, compaction, checks) median {:.0} ms of the total",
            median(purge)
        );
        let mut subj = Vec::new();
        for s in &subjects {
            let t = Instant::now();
            let o = b
                .vault
                .dispose(&b.officer, &request(DisposalScope::Subject(*s)))
                .unwrap();
            assert_eq!(o.records.len(), 5);
            subj.push(ms(t.elapsed()));
        }
        let t = Instant::now();
        let o = b
            .vault
            .dispose(
                &b.officer,
                &request(DisposalScope::Query {
                    collection: Some(CollectionName::parse("batch").unwrap()),
                    before_ms: i64::MAX,
                    by_updated: false,
                }),
            )
            .unwrap();
        let batch_ms = ms(t.elapsed());
        assert_eq!(o.records.len() as u64, batch);
        println!(
            "| {n} | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {:.0} ms ({batch} records) | {:.0} |",
            median(one.clone()),
            one.iter().cloned().fold(0.0, f64::max),
            median(subj.clone()),
            subj.iter().cloned().fold(0.0, f64::max),
            batch_ms,
            batch as f64 / (batch_ms / 1000.0)
        );
        b.vault.close().unwrap();
    }

    if retention_n > 0 {
        let tmp = tempfile::tempdir().unwrap();
        let b = setup(&tmp.path().join("vault"));
        fill(&b, "batch", retention_n, 0);
        b.vault
            .set_retention(
                &b.admin,
                "batch",
                RetentionPolicy {
                    days: 30,
                    from_updated: false,
                },
            )
            .unwrap();
        // Some records not yet due, so the run has to pick.
        b.clock.advance(10 * DAY_MS);
        fill(&b, "batch", 1000, retention_n);
        b.clock.advance(25 * DAY_MS);
        let t = Instant::now();
        let o = b
            .vault
            .dispose(&b.officer, &request(DisposalScope::PastRetention))
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(o.records.len() as u64, retention_n);
        println!(
            "retention run: {} due records disposed in {:.2} s = {:.0} records/s (1,000 not yet due kept)",
            o.records.len(),
            secs,
            o.records.len() as f64 / secs
        );
        b.vault.close().unwrap();
    }
}
