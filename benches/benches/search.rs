//! Finding a customer by a searchable field (issue 12).
//!
//! A vault of `PIVAULT_BENCH_SEARCH_N` records (default 100,000; set it to
//! 1000000 for the issue's 10^6 figure) in a collection whose given name,
//! family name and SSN are searchable (20-bit SSN beacons). In the same run:
//!
//! * `search/find_ssn`: `Vault::find_records` by a stored SSN (index seek
//!   under the SSN's beacon, every candidate decrypted and compared, the
//!   hit masked, one `record.find` audit event), next to
//! * `search/get_by_id`: `Vault::get_record` of a record by its ID (the
//!   baseline: one row, one key, one decryption, one audit event);
//! * `search/put_plain` and `search/put_searchable`: `Vault::put_record` of
//!   the same body into a collection without and with searchable fields
//!   (the extra cost of the beacon rows in the record's write batch).
//!
//! Besides criterion's estimates it prints p50/p99 of its own timed loops
//! and the ratios find/get and put_searchable/put_plain.
//!
//! Run: `cargo bench -p vault-bench --bench search` (or the binary the dev
//! build leaves in `target/debug/deps/search-*` with `--bench`).

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::json;
use vault_core::beacon::Match;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::schema::{FieldType, Schema};
use vault_core::secret::SecretString;
use vault_core::vault::{Context, FindQuery, FindTarget};

const SEARCHABLE: &str = "counter";

/// A valid SSN unique to `n` (n < 4,000,000).
fn ssn(n: u64) -> String {
    format!(
        "{:03}{:02}{:04}",
        100 + n / 9000,
        11 + (n / 100) % 80,
        1 + n % 9000
    )
}

const GIVEN: [&str; 8] = [
    "Ada", "Bram", "Chloe", "Dev", "Elena", "Farid", "Greta", "Hiro",
];

/// A family name of letters only, one of 5,000 (`n` in base 26, after "Fam").
fn letters(mut n: u64) -> String {
    let mut s = String::from("Fam");
    for _ in 0..3 {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
    }
    s
}

fn body(n: u64) -> serde_json::Value {
    json!({
        "given_name": GIVEN[(n % 8) as usize],
        "family_name": letters(n % 5000),
        "ssn": ssn(n),
        "notes": common::filler(120, n),
    })
}

fn quantiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort_unstable();
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    (q(0.5), q(0.99))
}

fn main() {
    let n: u64 = std::env::var("PIVAULT_BENCH_SEARCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let fx = common::fixture(&tmp.path().join("vault"));
    let vault = &fx.vault;
    let admin = vault
        .login(
            common::ADMIN.0,
            &SecretString::from(common::ADMIN.1),
            Context::cli(),
        )
        .expect("admin login");
    let schema = Schema::from_json(
        r#"{"purpose": "benchmark counter (synthetic data)", "fields": [
            {"name": "given_name", "type": "given_name", "required": true, "searchable": true},
            {"name": "family_name", "type": "family_name", "required": true, "searchable": true},
            {"name": "ssn", "type": "ssn", "required": true, "searchable": true},
            {"name": "notes", "type": "text"}]}"#,
    )
    .expect("schema");
    vault
        .create_collection(&admin, SEARCHABLE, &schema)
        .expect("collection");
    // The plain collection: the same fields, nothing searchable.
    let plain = Schema::from_json(
        r#"{"purpose": "benchmark plain (synthetic data)", "fields": [
            {"name": "given_name", "type": "given_name", "required": true},
            {"name": "family_name", "type": "family_name", "required": true},
            {"name": "ssn", "type": "ssn", "required": true},
            {"name": "notes", "type": "text"}]}"#,
    )
    .expect("schema");
    vault
        .create_collection(&admin, "plain", &plain)
        .expect("collection");
    let _ = FieldType::Ssn;
    let clerk = &fx.clerk;
    let t = Instant::now();
    let mut ids: Vec<RecordId> = Vec::with_capacity(n as usize);
    for i in 0..n {
        ids.push(
            vault
                .put_record(clerk, SEARCHABLE, SubjectId::new(), &body(i))
                .expect("put"),
        );
        if i > 0 && i % 100_000 == 0 {
            eprintln!("  {i} records stored ({:.0} s)", t.elapsed().as_secs_f64());
        }
    }
    eprintln!("{n} records stored in {:.1} s", t.elapsed().as_secs_f64());
    let find = |i: u64| {
        let r = vault
            .find_records(
                clerk,
                &FindQuery {
                    collection: SEARCHABLE.into(),
                    target: FindTarget::Type(FieldType::Ssn),
                    value: SecretString::from(ssn(i).as_str()),
                    mode: Match::Exact,
                },
            )
            .expect("find");
        assert_eq!(r.records.len(), 1);
    };
    let get = |i: u64| {
        vault
            .get_record(clerk, ids[i as usize], &[], None)
            .expect("get");
    };
    // Own timed loops first (interleaved, so both see the same machine).
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let (mut tf, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..5_000 {
        let i = next();
        let t = Instant::now();
        find(i);
        tf.push(t.elapsed());
        let t = Instant::now();
        get(i);
        tg.push(t.elapsed());
    }
    let (mut tp, mut ts) = (Vec::new(), Vec::new());
    for k in 0..3_000u64 {
        let b = body(2_000_000 + k);
        let t = Instant::now();
        vault
            .put_record(clerk, "plain", SubjectId::new(), &b)
            .expect("put");
        tp.push(t.elapsed());
        let b = body(2_500_000 + k);
        let t = Instant::now();
        vault
            .put_record(clerk, SEARCHABLE, SubjectId::new(), &b)
            .expect("put");
        ts.push(t.elapsed());
    }
    let ((f50, f99), (g50, g99)) = (quantiles(tf), quantiles(tg));
    let ((p50, p99), (s50, s99)) = (quantiles(tp), quantiles(ts));
    println!(
        "search at N = {n} records (20-bit SSN beacons; ~{:.1} false candidates per SSN lookup)",
        n as f64 / 1_048_576.0
    );
    println!("  find_ssn       p50 {f50:>8.1} us  p99 {f99:>8.1} us");
    println!(
        "  get_by_id      p50 {g50:>8.1} us  p99 {g99:>8.1} us   find/get p50 ratio {:.2}",
        f50 / g50
    );
    println!("  put_plain      p50 {p50:>8.1} us  p99 {p99:>8.1} us");
    println!(
        "  put_searchable p50 {s50:>8.1} us  p99 {s99:>8.1} us   searchable/plain p50 ratio {:.2}",
        s50 / p50
    );

    let mut c = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut g = c.benchmark_group("search");
    g.bench_function("find_ssn", |b| b.iter(|| find(next())));
    g.bench_function("get_by_id", |b| b.iter(|| get(next())));
    let mut k = 3_000_000u64;
    g.bench_function("put_plain", |b| {
        b.iter(|| {
            k += 1;
            vault
                .put_record(clerk, "plain", SubjectId::new(), &body(k))
                .expect("put")
        })
    });
    g.bench_function("put_searchable", |b| {
        b.iter(|| {
            k += 1;
            vault
                .put_record(clerk, SEARCHABLE, SubjectId::new(), &body(k))
                .expect("put")
        })
    });
    g.finish();
    c.final_summary();
}
