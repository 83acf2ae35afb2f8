//! Engine benchmarks: every vault operation is measured next to a raw
//! baseline in the same run, so the ratio (vault throughput / raw
//! throughput) is what the full path costs on this machine at this moment.
//!
//! * `put/1KiB`, `put/16KiB`: raw RocksDB `put` of a value of the body's size
//!   vs `Vault::put_record` (ACL, schema validation, DEK in the keystore,
//!   AES-256-GCM envelope, record row and indexes, audit event).
//! * `get/1KiB`, `get/16KiB`: raw RocksDB `get` vs `Vault::get_record` (masked).
//! * `envelope/{1,16,64}KiB`: AES-256-GCM with a pre-built cipher vs
//!   `crypto::seal` / `crypto::open`.
//! * `audit/append`: `write(2)` of a line of the same length to an append-only
//!   file vs `AuditLog::append` of a `record.read` event (encode, validate,
//!   hash-chain, write): the floor under every audited read.
//! * `unlock`: Argon2id at `KdfParams::VAULT_DEFAULT`.
//! * `login`: `Vault::login` (OWASP Argon2id password hash, user row, audit).
//! * `sealed/hold_add_lift`: a legal hold placed and lifted (two writes of a
//!   sealed configuration row, each with the state digest, and two events);
//!   `sealed/open_2000_holds`: `Vault::open` of a vault holding 2,000 holds
//!   (the open checks every sealed row against the digest);
//!   `sealed/dispose_one_record`: a record stored and disposed of (the
//!   batch's row, sealed since `rows_sealed_v3`, written at every step).
//!   They are read as an A/B of two builds run alternately
//!   (benches/README.md, runs 25 and 29);
//!   `PIVAULT_BENCH_SEALED_CLUSTER=1` puts the vault's keys and records on
//!   the cluster of `scripts/cluster.sh start` (its env file sourced).
//!
//! * `export/200_records`: 200 bodies of ~1 KiB read raw from RocksDB and
//!   written as lines into memory vs `Vault::export_records` of a
//!   collection of 200 such records, plaintext, into memory (the ledger's
//!   rows, two audit events, each record read under its bucket's lock,
//!   decrypted and written as a JSON line).
//!
//! Run: `cargo bench --workspace --bench engine`.

#[allow(dead_code)]
mod common;

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rocksdb::DB;
use vault_core::crypto::{self, Aad, KdfParams};
use vault_core::ids::{RecordId, SubjectId};
use vault_core::secret::{SecretKey, SecretString};
use vault_core::vault::Context;

use common::{CLERK, COLLECTION};

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (16 * 1024, "16KiB")];
/// Records pre-stored for the read benchmarks.
const GET_SET: u64 = 1000;

fn raw_db(dir: &std::path::Path) -> DB {
    DB::open_default(dir).expect("open raw RocksDB")
}

fn bench_put(c: &mut Criterion) {
    for (size, label) in SIZES {
        let body = serde_json::Value::Object(common::body_of_size(1, size));
        let bytes = serde_json::to_vec(&body).expect("json");
        assert!(
            bytes.len().abs_diff(size) <= 16,
            "body is {} bytes, wanted {size}",
            bytes.len()
        );
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(raw_dir.path());
        let vault_dir = tempfile::tempdir().expect("tempdir");
        let fx = common::fixture(&vault_dir.path().join("vault"));

        let mut g = c.benchmark_group(format!("put/{label}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("rocksdb_raw", |b| {
            b.iter(|| {
                // A fresh 16-byte time-ordered key per put, as the vault uses.
                let key = RecordId::new();
                db.put(key.as_bytes(), black_box(&bytes)).expect("put");
            })
        });
        g.bench_function("vault_put_record", |b| {
            b.iter(|| {
                fx.vault
                    .put_record(&fx.clerk, COLLECTION, SubjectId::new(), black_box(&body))
                    .expect("put_record")
            })
        });
        g.finish();
    }
}

fn bench_get(c: &mut Criterion) {
    for (size, label) in SIZES {
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let db = raw_db(raw_dir.path());
        let vault_dir = tempfile::tempdir().expect("tempdir");
        let fx = common::fixture(&vault_dir.path().join("vault"));
        let mut raw_keys = Vec::new();
        let mut ids = Vec::new();
        let mut body_len = 0;
        for i in 0..GET_SET {
            let body = serde_json::Value::Object(common::body_of_size(i, size));
            let bytes = serde_json::to_vec(&body).expect("json");
            body_len = bytes.len();
            let key = RecordId::new();
            db.put(key.as_bytes(), &bytes).expect("put");
            raw_keys.push(key);
            ids.push(
                fx.vault
                    .put_record(&fx.clerk, COLLECTION, SubjectId::new(), &body)
                    .expect("put_record"),
            );
        }

        let mut g = c.benchmark_group(format!("get/{label}"));
        g.throughput(Throughput::Bytes(body_len as u64));
        g.sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let mut i = 0usize;
        g.bench_function("rocksdb_raw", |b| {
            b.iter(|| {
                i = (i + 1) % raw_keys.len();
                db.get(raw_keys[i].as_bytes())
                    .expect("get")
                    .expect("present")
            })
        });
        let mut i = 0usize;
        g.bench_function("vault_get_record_masked", |b| {
            b.iter(|| {
                i = (i + 1) % ids.len();
                fx.vault
                    .get_record(&fx.clerk, ids[i], &[], None)
                    .expect("get_record")
            })
        });
        g.finish();
    }
}

fn bench_envelope(c: &mut Criterion) {
    // Raw: a fixed key, key schedule built once. Vault: a SecretKey (its bytes
    // are not exposed outside vault-core; the key's value does not affect speed).
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).expect("key");
    let key = SecretKey::generate();
    // Associated data shaped like a record's (vault, collection, id, version, subject).
    let aad = Aad::new("record")
        .part(SubjectId::new().as_bytes())
        .part(COLLECTION.as_bytes())
        .part(RecordId::new().as_bytes())
        .part(&1u32.to_be_bytes())
        .part(SubjectId::new().as_bytes());
    for (size, label) in [
        (1024usize, "1KiB"),
        (16 * 1024, "16KiB"),
        (64 * 1024, "64KiB"),
    ] {
        let plain = vec![0x5au8; size];
        let mut g = c.benchmark_group(format!("envelope/{label}"));
        g.throughput(Throughput::Bytes(size as u64));
        g.sample_size(50)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        g.bench_function("raw_aes256gcm_encrypt", |b| {
            b.iter(|| {
                let mut nonce = [0u8; 12];
                rand::fill(&mut nonce);
                cipher
                    .encrypt(&Nonce::from(nonce), black_box(plain.as_slice()))
                    .expect("encrypt")
            })
        });
        g.bench_function("vault_seal", |b| {
            b.iter(|| crypto::seal(&key, &aad, black_box(&plain)))
        });
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let raw_ct = cipher
            .encrypt(&Nonce::from(nonce), plain.as_slice())
            .expect("encrypt");
        let env = crypto::seal(&key, &aad, &plain);
        g.bench_function("raw_aes256gcm_decrypt", |b| {
            b.iter(|| {
                cipher
                    .decrypt(&Nonce::from(nonce), black_box(raw_ct.as_slice()))
                    .expect("decrypt")
            })
        });
        g.bench_function("vault_open", |b| {
            b.iter(|| crypto::open(&key, &aad, black_box(&env), "bench").expect("open"))
        });
        g.finish();
    }
}

fn bench_audit_append(c: &mut Criterion) {
    use std::io::Write;
    use vault_core::audit::{AuditLog, Channel, NewEvent, Outcome};
    use vault_core::ids::UserId;

    let dir = tempfile::tempdir().expect("tempdir");
    let signer = vault_core::ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let mut log = AuditLog::open(&dir.path().join("audit"), signer, false).expect("audit log");
    let actor = UserId::new();
    // One record ID's text, as the vault formats it per event; generating a
    // fresh UUID (a getrandom call) per iteration would be bench overhead.
    let target = RecordId::new().to_string();
    let event = || {
        let mut ev = NewEvent::new(
            1_764_000_000_000,
            Some(actor),
            Channel::Cli,
            "record.read",
            Outcome::Success,
        );
        ev.targets = vec![target.clone()];
        ev
    };
    // A stored line of that event: JSON + space + 64 hex digits + newline.
    let line_len = {
        let before = std::fs::metadata(dir.path().join("audit/seg-00000001.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        log.append(event()).expect("append");
        std::fs::metadata(dir.path().join("audit/seg-00000001.log"))
            .expect("segment")
            .len()
            - before
    };
    let mut raw = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw.log"))
        .expect("raw file");
    let line = vec![b'x'; line_len as usize];

    let mut g = c.benchmark_group("audit/append");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("raw_file_write", |b| {
        b.iter(|| raw.write_all(black_box(&line)).expect("write"))
    });
    g.bench_function("vault_audit_append", |b| {
        b.iter(|| log.append(black_box(event())).expect("append"))
    });
    g.finish();
}

fn bench_unlock(c: &mut Criterion) {
    let pass = SecretString::from(common::PASSPHRASE);
    let salt = [9u8; 16];
    let mut g = c.benchmark_group("unlock");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("argon2id_vault_default", |b| {
        b.iter(|| {
            crypto::derive_unlock_key(&pass, &salt, KdfParams::VAULT_DEFAULT).expect("derive")
        })
    });
    g.finish();
}

fn bench_login(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = common::fixture(&dir.path().join("vault"));
    let pw = SecretString::from(CLERK.1);
    let mut g = c.benchmark_group("login");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.bench_function("vault_login", |b| {
        b.iter(|| fx.vault.login(CLERK.0, &pw, Context::cli()).expect("login"))
    });
    g.finish();
}

/// Stores the `n`th record (1 KiB) in `collection` and disposes of it: the
/// whole batch, to its certificate.
fn dispose_one(
    fx: &common::Fixture,
    officer: &vault_core::vault::Session,
    collection: &str,
    n: &mut u64,
) -> vault_core::vault::DisposalOutcome {
    *n += 1;
    let body = serde_json::Value::Object(common::body_of_size(*n, 1024));
    let id = fx
        .vault
        .put_record(&fx.clerk, collection, SubjectId::new(), &body)
        .expect("put");
    let req = vault_core::vault::DisposalRequest {
        scope: vault_core::vault::DisposalScope::Record(id),
        parties: vault_core::vault::DisposalParties {
            data_owner: "Benchmark Co".into(),
            ..Default::default()
        },
        dry_run: false,
    };
    fx.vault.dispose(officer, &req).expect("disposal")
}

fn bench_sealed(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vault");
    // `PIVAULT_BENCH_SEALED_CLUSTER=1`: the keys and the records on the
    // cluster of `scripts/cluster.sh start` (its env file sourced).
    let fx = if std::env::var("PIVAULT_BENCH_SEALED_CLUSTER").as_deref() == Ok("1") {
        let keys = common::cluster_config();
        let records = vault_core::keystore::postgres::PgConfig {
            database: "pivault_records".into(),
            ..keys.clone()
        };
        common::fixture_on_clusters(&path, Some(keys), Some(records))
    } else {
        common::fixture(&path)
    };
    let officer = common::officer(&fx.vault);
    for _ in 0..2000 {
        fx.vault
            .add_hold(&officer, None, Some(SubjectId::new()), "litigation")
            .expect("hold");
    }
    let mut g = c.benchmark_group("sealed");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("hold_add_lift", |b| {
        b.iter(|| {
            let s = SubjectId::new();
            fx.vault
                .add_hold(&officer, None, Some(s), "litigation")
                .expect("hold");
            fx.vault.remove_hold(&officer, None, Some(s)).expect("lift");
        })
    });
    let mut n = 0u64;
    g.bench_function("dispose_one_record", |b| {
        b.iter(|| dispose_one(&fx, &officer, COLLECTION, &mut n))
    });
    // The same with search beacons to delete (the family name and the SSN):
    // the batch also plans, counts and purges them.
    let mut searched = common::schema();
    searched
        .set_searchable(vec!["family_name".into(), "ssn".into()])
        .expect("searchable fields");
    let admin = fx
        .vault
        .login(
            common::ADMIN.0,
            &SecretString::from(common::ADMIN.1),
            Context::cli(),
        )
        .expect("admin login");
    fx.vault
        .create_collection(&admin, "searched", &searched)
        .expect("searchable collection");
    g.bench_function("dispose_one_searchable_record", |b| {
        b.iter(|| dispose_one(&fx, &officer, "searched", &mut n))
    });
    fx.vault.close().expect("close");
    let pass = SecretString::from(common::PASSPHRASE);
    g.bench_function("open_2000_holds", |b| {
        b.iter(|| {
            vault_core::vault::Vault::open(&path, &pass, Default::default())
                .expect("open")
                .close()
                .expect("close")
        })
    });
    g.finish();
}

fn bench_export(c: &mut Criterion) {
    const N: u64 = 200;
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(raw_dir.path());
    let vault_dir = tempfile::tempdir().expect("tempdir");
    let fx = common::fixture(&vault_dir.path().join("vault"));
    let officer = common::officer(&fx.vault);
    let mut raw_keys = Vec::new();
    for i in 0..N {
        let body = serde_json::Value::Object(common::body_of_size(i, 1024));
        let key = RecordId::new();
        db.put(key.as_bytes(), serde_json::to_vec(&body).expect("json"))
            .expect("put");
        raw_keys.push(key);
        fx.vault
            .put_record(&fx.clerk, COLLECTION, SubjectId::new(), &body)
            .expect("put_record");
    }
    let req = vault_core::vault::ExportRequest {
        scope: vault_core::vault::ExportScope::Collection(
            vault_core::ids::CollectionName::parse(COLLECTION).expect("name"),
        ),
        recipient: vault_core::vault::ExportRecipient::Plaintext,
        reason: "benchmark copy".into(),
        armor: false,
    };
    let mut g = c.benchmark_group("export/200_records");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("rocksdb_raw_lines", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            for k in &raw_keys {
                let v = db.get(k.as_bytes()).expect("get").expect("present");
                out.extend_from_slice(&v);
                out.push(b'\n');
            }
            black_box(out)
        })
    });
    g.bench_function("vault_export_plaintext", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            fx.vault
                .export_records(&officer, &req, &mut out)
                .expect("export");
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_export,
    bench_put,
    bench_get,
    bench_envelope,
    bench_audit_append,
    bench_unlock,
    bench_login,
    bench_sealed
);
criterion_main!(benches);
