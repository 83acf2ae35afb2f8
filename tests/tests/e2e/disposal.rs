//! Acceptance tests of certified disposal (DESIGN §4.2–§4.3, §6):
//!
//! 1. REQ-CE-03 forensic: an old copy of the vault directory (all but the
//!    header) cannot reach a disposed record's key with the live header; the
//!    same copy with the old header can (control); the live keystore holds no
//!    pre-disposal wrapped DEK bytes; negative controls (skipped flush, a
//!    held snapshot, WAL recycling) make the byte scan find residue.
//! 2. REQ-MON-02: after `dispose subject` through the CLI no PI of the
//!    subject is in any vault file, `audit verify` passes, others still read.
//! 3. REQ-DISP-01: a disposed record answers "disposed" with the certificate ID
//!    (CLI exit 7, library `Error::Disposed`).
//! 4. Invariant 4: a crash (abort) at every step of a batch resumes on open.
//! 5. REQ-DISP-05/-03, REQ-CE-06: certificates verify offline, any changed
//!    byte fails, wrong key fails, validation needs a different officer,
//!    counts and the Merkle commitment are right.
//! 6. REQ-DISP-02: the contractor role.
//! 7. REQ-DISP-06: retention and legal holds.
//!
//! Library tests use [`KdfParams::INSECURE_FAST`] and 16 key buckets; CLI
//! tests use `--insecure-fast-kdf`. Build the binaries first:
//! `cargo build --workspace --bins`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{
    BottommostLevelCompaction, ColumnFamilyDescriptor, CompactOptions, DB, FlushOptions,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use vault_core::Error;
use vault_core::audit::EventFilter;
use vault_core::certificate::{self, Certificate, InclusionProof};
use vault_core::clock::ManualClock;
use vault_core::crypto::KdfParams;
use vault_core::ed25519_dalek as ed25519_dalek_key;
use vault_core::ids::{CertificateId, RecordId, SubjectId, Username};
use vault_core::keystore::postgres::PgConfig;
use vault_core::keystore::{self, scan_dir};
use vault_core::secret::SecretString;
use vault_core::vault::{
    Context, DisposalOutcome, DisposalParties, DisposalRequest, DisposalScope, InitOptions,
    OpenOptions, RecordState, RetentionPolicy, Vault,
};

use crate::cli::{self, CUSTOMERS, CliVault, EXIT_DENIED, EXIT_INVALID_INPUT, Run};
use crate::common::{self, Fixture};

// ----- constants --------------------------------------------------------------

/// Exit code of a disposed record (vault-cli/src/exit.rs).
const EXIT_DISPOSED: i32 = 7;
/// Exit code of an integrity failure (a certificate that does not verify).
const EXIT_INTEGRITY: i32 = 8;
/// Key buckets of the library test vaults (small, so buckets are shared).
const SMALL_BUCKETS: u32 = 16;
/// One day in ms.
const DAY_MS: i64 = 86_400_000;
/// Every step of a disposal batch, in order (vault-core/src/disposal.rs),
/// and `rows_tombstoned`, a crash point within steps 5 and 6: the rows and
/// their search beacons gone, the keys' purge not yet recorded.
const STEPS: [&str; 9] = [
    "intent",
    "keys_deleted",
    "buckets_rotated",
    "epoch_ratcheted",
    "rows_tombstoned",
    "keystore_purged",
    "ciphertexts_deleted",
    "verified",
    "complete",
];
/// Password of the second officer (the validator) of the CLI tests.
const OFFICER2_PASSWORD: &str = "Pq6^harbor-Marmot-cli-0006";
/// Password of the contractor user of the CLI tests.
const CONTRACTOR_PASSWORD: &str = "Vx3!lagoon-Tapir-cli-0007";

// ----- synthetic data -----------------------------------------------------------

const GIVEN: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus",
];
const FAMILY: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Wirth",
];

/// `partial` followed by its Luhn check digit.
fn luhn_complete(partial: &str) -> String {
    let mut sum = 0u32;
    for (i, c) in partial.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    format!("{partial}{}", (10 - sum % 10) % 10)
}

/// A synthetic SSN (valid area, group and serial), different for each `n < 9000`.
fn ssn(n: u64) -> String {
    format!("{:03}-{:02}-{:04}", 120 + n % 400, 11 + n % 80, 1000 + n)
}

/// A Luhn-valid 16-digit card number, different for each `n`.
fn card(n: u64) -> String {
    luhn_complete(&format!("45329{:010}", 7_000_000_000 + n))
}

/// A body of the `customers` schema of [`common::customers_schema`].
fn body(n: u64) -> Value {
    json!({
        "given_name": GIVEN[(n % 8) as usize],
        "family_name": FAMILY[(n / 8 % 8) as usize],
        "ssn": ssn(n),
        "card_number": card(n),
    })
}

/// A stored record of the library tests.
#[derive(Clone, Copy, Debug)]
struct Stored {
    id: RecordId,
    subject: SubjectId,
    n: u64,
}

/// Stores `subjects * per_subject` records as the clerk, subject by subject.
fn store_records(fx: &Fixture, subjects: usize, per_subject: usize) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut n = 0;
    for _ in 0..subjects {
        let subject = SubjectId::new();
        for _ in 0..per_subject {
            let id = fx
                .vault
                .put_record(&fx.clerk, CUSTOMERS, subject, &body(n))
                .unwrap_or_else(|e| panic!("put record {n}: {e}"));
            out.push(Stored { id, subject, n });
            n += 1;
        }
    }
    out
}

/// Reads a record as the clerk and checks its family name is that of its body.
#[track_caller]
fn assert_readable(vault: &Vault, s: &vault_core::vault::Session, r: &Stored) {
    let view = vault
        .get_record(s, r.id, &[], None)
        .unwrap_or_else(|e| panic!("record {} (n={}) should still be readable: {e}", r.id, r.n));
    assert_eq!(
        view.fields["family_name"],
        body(r.n)["family_name"],
        "record {} reads back wrong",
        r.id
    );
    assert_eq!(view.meta.state, RecordState::Live);
}

/// A disposal request with a data owner named.
fn request(scope: DisposalScope) -> DisposalRequest {
    DisposalRequest {
        scope,
        parties: DisposalParties {
            data_owner: "Example Retail LLC".into(),
            ..DisposalParties::default()
        },
        dry_run: false,
    }
}

// ----- library vaults -------------------------------------------------------------

/// Like [`common::fast_vault`] but with [`SMALL_BUCKETS`] key buckets, so
/// that several subjects share a bucket and bucket rotation has survivors
/// to re-wrap.
fn small_vault(dir: &Path) -> Fixture {
    small_vault_on(
        dir,
        common::conformance_keystore(),
        common::conformance_records(),
    )
}

/// [`small_vault`] with its keystore and records each on a cluster
/// (`Some`) or embedded.
fn small_vault_on(dir: &Path, keystore: Option<PgConfig>, records: Option<PgConfig>) -> Fixture {
    let clock = Arc::new(ManualClock::new(common::T0));
    let (admin_name, _, admin_pw) = common::USERS[0];
    let init = InitOptions {
        kdf: KdfParams::INSECURE_FAST,
        buckets: SMALL_BUCKETS,
        admin: Username::parse(admin_name).expect("admin name"),
        admin_password: SecretString::from(admin_pw),
        two_factor: vault_core::access::TwoFactorPolicy::none(),
    };
    let vault = Vault::create_on_clusters(
        dir,
        &SecretString::from(common::PASSPHRASE),
        init,
        common::open_options(&clock),
        keystore,
        records,
    )
    .expect("create vault");
    let admin = common::login(&vault, admin_name);
    for (name, role, pw) in &common::USERS[1..] {
        vault
            .add_user(&admin, name, &SecretString::from(*pw), *role, false)
            .expect("add fixture user");
    }
    vault
        .create_collection(&admin, CUSTOMERS, &common::customers_schema())
        .expect("create collection");
    let officer = common::login(&vault, "officer");
    let clerk = common::login(&vault, "clerk");
    let auditor = common::login(&vault, "auditor");
    let contractor = common::login(&vault, "contractor");
    Fixture {
        vault,
        dir: dir.to_path_buf(),
        clock,
        admin,
        officer,
        clerk,
        auditor,
        contractor,
    }
}

fn temp() -> TempDir {
    tempfile::Builder::new()
        .prefix("pivault-disposal-")
        .tempdir()
        .unwrap()
}

/// Closes a fixture's vault (signs a final checkpoint, releases the locks).
fn close(fx: Fixture) {
    fx.vault.close().expect("close vault");
}

/// Copies one file (plain copy, mode kept).
fn copy_file(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

/// Copies a vault directory's files into `to` (0700), plain file copies,
/// leaving out the header when `with_header` is false.
fn copy_vault(from: &Path, to: &Path, with_header: bool) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "header" && !with_header {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            cli::copy_tree(&e.path(), &to.join(&name));
        } else {
            copy_file(&e.path(), &to.join(&name));
        }
    }
}

/// Opens the vault in `dir` with the test passphrase, logs the officer in
/// and reads `id`. Errors say at which stage they happened.
fn read_as_officer(dir: &Path, id: RecordId) -> Result<Value, (&'static str, Error)> {
    let clock = Arc::new(ManualClock::new(common::T0 + DAY_MS));
    let vault = Vault::open(
        dir,
        &SecretString::from(common::PASSPHRASE),
        common::open_options(&clock),
    )
    .map_err(|e| ("open", e))?;
    let officer = vault
        .login("officer", &common::password_of("officer"), Context::cli())
        .map_err(|e| ("login", e))?;
    let r = vault
        .get_record(&officer, id, &["ssn"], Some("forensic test of an old copy"))
        .map(|v| Value::Object(v.fields))
        .map_err(|e| ("get_record", e));
    vault.close().map_err(|e| ("close", e))?;
    r
}

/// Scans `dir` with [`scan_dir`] until it reports nothing or `patience`
/// runs out (RocksDB deletes obsolete files on a background thread).
fn scan_settled(dir: &Path, needles: &[Vec<u8>], patience: Duration) -> Vec<String> {
    let deadline = Instant::now() + patience;
    loop {
        let hits = scan_dir(dir, needles).expect("scan");
        if hits.is_empty() || Instant::now() >= deadline {
            return hits;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// =====================================================================================
// 1. REQ-CE-03: old copies of the vault cannot reach a disposed record's key
// =====================================================================================

#[test]
fn forensic_old_copy_with_live_header_cannot_read_disposed_record() {
    let tmp = temp();
    let live = tmp.path().join("vault");
    // Embedded on purpose: the attack is a copy of the vault directory,
    // where the embedded keystore lives (a cluster keystore's copies are
    // on its members: cluster.rs scans them).
    let fx = small_vault_on(&live, None, None);
    let recs = store_records(&fx, 10, 5);
    assert_eq!(recs.len(), 50);
    let target = recs[17];
    let wrapped = fx
        .vault
        .keystore()
        .wrapped_dek(target.subject, target.id, 1)
        .unwrap()
        .expect("the record's wrapped DEK exists before disposal");
    assert!(
        wrapped.len() >= 32,
        "a wrapped 256-bit key is at least 32 bytes, got {}",
        wrapped.len()
    );
    let needles = vec![wrapped.clone()];

    // The "backup": every file of the vault directory but the header, plain copies.
    let backup = tmp.path().join("backup");
    copy_vault(&live, &backup, false);
    assert!(!backup.join("header").exists());
    let old_header = tmp.path().join("old-header");
    copy_file(&live.join("header"), &old_header);
    // The scan sees the wrapped DEK in the old keystore copy: a clean scan
    // of the live keystore below therefore means something.
    let in_backup = scan_dir(&backup.join("keystore"), &needles).unwrap();
    assert!(
        !in_backup.is_empty(),
        "the scan does not find the wrapped DEK even in the pre-disposal copy"
    );

    let epoch_before = fx.vault.epoch();
    let out = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(target.id)))
        .expect("dispose R");
    let cert_id = out.certificate_id.expect("a certificate is issued");
    assert_eq!(out.records, vec![target.id]);
    assert_eq!(out.subjects, 1);
    let (e0, e1) = out.epochs.expect("epochs reported");
    assert_eq!(e0, epoch_before);
    assert!(e1 > e0, "the epoch was not ratcheted: {e0} -> {e1}");
    assert_eq!(fx.vault.epoch(), e1);

    // No file of the live keystore (nor of the whole live vault) holds R's wrapped DEK.
    let hits = scan_dir(&live.join("keystore"), &needles).unwrap();
    assert!(
        hits.is_empty(),
        "pre-disposal wrapped DEK bytes of R are still in live keystore files {hits:?}"
    );
    let hits = scan_dir(&live, &needles).unwrap();
    assert!(
        hits.is_empty(),
        "pre-disposal wrapped DEK bytes of R are in live vault files {hits:?}"
    );
    assert!(
        fx.vault
            .keystore()
            .wrapped_dek(target.subject, target.id, 1)
            .unwrap()
            .is_none()
    );
    // Survivors (the same subject's other records: same bucket, re-wrapped) read.
    for r in recs
        .iter()
        .filter(|r| r.id != target.id && (r.subject == target.subject || r.n % 7 == 0))
    {
        assert_readable(&fx.vault, &fx.clerk, r);
    }
    match fx.vault.get_record(&fx.officer, target.id, &[], None) {
        Err(Error::Disposed {
            certificate: Some(c),
        }) => assert_eq!(c, cert_id.to_string()),
        other => panic!("R must read as disposed, got {other:?}"),
    }
    close(fx);
    let live_header = fs::read(live.join("header")).unwrap();
    assert_ne!(
        live_header,
        fs::read(&old_header).unwrap(),
        "the header did not change"
    );

    // Attacker: the live header and the passphrase with the old copies.
    let attack = tmp.path().join("attacker");
    copy_vault(&backup, &attack, false);
    copy_file(&live.join("header"), &attack.join("header"));
    match read_as_officer(&attack, target.id) {
        Ok(fields) => panic!(
            "the old copy with the live header still decrypts the disposed record (fields {:?})",
            fields.as_object().map(|m| m.keys().collect::<Vec<_>>())
        ),
        Err((stage, e @ (Error::Integrity(_) | Error::Disposed { .. }))) => {
            eprintln!("attacker copy refused at {stage}: {e}");
        }
        Err((stage, e)) => {
            panic!("the attacker copy failed for an unrelated reason at {stage}: {e:?}")
        }
    }

    // Control: the same old copies with the OLD header read R, so the test
    // can see what it rules out.
    let control = tmp.path().join("control");
    copy_vault(&backup, &control, false);
    copy_file(&old_header, &control.join("header"));
    let fields = read_as_officer(&control, target.id).unwrap_or_else(|(stage, e)| {
        panic!("control: the old copy with the old header cannot read R ({stage}: {e})")
    });
    assert_eq!(fields["family_name"], body(target.n)["family_name"]);
    assert_eq!(
        fields["ssn"],
        json!(ssn(target.n)),
        "control read returned the wrong SSN"
    );
}

/// Negative control (a), at the vault level: with the keystore flush of the
/// purge skipped, the batch must either fail its verification (no
/// certificate) or leave residue the scan finds.
#[test]
fn negative_control_skipped_flush_is_caught() {
    let tmp = temp();
    let fx = small_vault(&tmp.path().join("vault"));
    let recs = store_records(&fx, 4, 3);
    let target = recs[4];
    let wrapped = fx
        .vault
        .keystore()
        .wrapped_dek(target.subject, target.id, 1)
        .unwrap()
        .unwrap();
    fx.vault.set_purge_skip_flush(true);
    let r = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(target.id)));
    let hits = scan_dir(&fx.dir.join("keystore"), std::slice::from_ref(&wrapped)).unwrap();
    match r {
        Err(Error::DisposalFailed(msg)) => {
            eprintln!("skipped flush caught by verification: {msg}; residue in {hits:?}");
            assert!(
                !hits.is_empty() || msg.contains("purge"),
                "the batch failed, but neither the scan nor the purge evidence shows why: {msg}"
            );
            let batches = fx.vault.disposals(&fx.officer).unwrap();
            assert_eq!(batches.len(), 1);
            let b = &batches[0];
            assert!(
                b.failed.is_some(),
                "the failed batch must show as failed: {b:?}"
            );
            assert_ne!(b.step, "complete");
            match fx.vault.certificate(&fx.officer, b.certificate_id) {
                Err(Error::NotFound(_)) => {}
                other => panic!("no certificate may exist for a failed batch, got {other:?}"),
            }
            // Retried with the flush on, the batch completes.
            fx.vault.set_purge_skip_flush(false);
            let cert = fx
                .vault
                .retry_disposal(&fx.officer, b.id)
                .expect("retry with the flush");
            assert_eq!(cert, b.certificate_id);
            let after = scan_settled(
                &fx.dir.join("keystore"),
                std::slice::from_ref(&wrapped),
                Duration::from_secs(2),
            );
            assert!(
                after.is_empty(),
                "after the retry the residue must be gone: {after:?}"
            );
            let c = fx.vault.certificate(&fx.officer, cert).unwrap();
            let rep = certificate::verify(&c, &fx.vault.certificate_public_key());
            assert!(
                rep.ok(),
                "the retried batch's certificate does not verify: {rep:?}"
            );
            let batches = fx.vault.disposals(&fx.officer).unwrap();
            assert!(
                batches[0].failed.is_none() && batches[0].step == "complete",
                "{batches:?}"
            );
        }
        Err(e) => panic!("expected DisposalFailed, got {e:?}"),
        Ok(o) => {
            assert!(
                !hits.is_empty(),
                "set_purge_skip_flush(true) is no negative control: the batch issued certificate {:?} \
                 and the scan finds no residue, so skipping the flush changed nothing observable",
                o.certificate_id
            );
            panic!(
                "residue of the disposed key is in {hits:?}, yet the batch verified and issued certificate {:?}",
                o.certificate_id
            );
        }
    }
}

// ----- negative controls (b), (c) and (a') with RocksDB directly -----------------------
//
// The vault's Keystore does not expose its RocksDB handle (no snapshot can be
// held on it from outside, and its options are fixed), so these controls
// open a raw RocksDB with the keystore's own column families and options
// (`keystore::keystore_options()`), run the same purge procedure as
// `Keystore::purge` (flush every column family, forced bottommost compaction
// of the touched range and of the bucket keys), and show that the byte scan
// (`keystore::scan_dir`) finds the deleted value exactly in the configurations
// that defeat the purge.

/// A small deterministic generator for random-looking values (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The keystore's DEK key layout: bucket (4) | record (16) | version (4).
fn raw_dek_key(bucket: u32, n: u64) -> Vec<u8> {
    let mut k = bucket.to_be_bytes().to_vec();
    k.extend_from_slice(&u128::from(n).to_be_bytes());
    k.extend_from_slice(&1u32.to_be_bytes());
    k
}

fn raw_open(path: &Path, recycle: usize) -> DB {
    let mut opts = keystore::keystore_options();
    opts.set_recycle_log_file_num(recycle);
    let cfs =
        ["buckets", "deks"].map(|n| ColumnFamilyDescriptor::new(n, keystore::keystore_options()));
    DB::open_cf_descriptors(&opts, path, cfs).unwrap()
}

fn raw_flush_all(db: &DB) {
    let cfs = ["default", "buckets", "deks"].map(|n| db.cf_handle(n).unwrap());
    let mut fo = FlushOptions::default();
    fo.set_wait(true);
    db.flush_cfs_opt(&cfs, &fo).unwrap();
}

/// The compaction half of `Keystore::purge`.
fn raw_compact(db: &DB, bucket: u32) {
    let mut co = CompactOptions::default();
    co.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    co.set_exclusive_manual_compaction(true);
    let end = (bucket + 1).to_be_bytes();
    db.compact_range_cf_opt(
        db.cf_handle("deks").unwrap(),
        Some(bucket.to_be_bytes()),
        Some(end),
        &co,
    );
    db.compact_range_cf_opt(
        db.cf_handle("buckets").unwrap(),
        None::<&[u8]>,
        None::<&[u8]>,
        &co,
    );
}

/// Fills a raw keystore with 16 bucket keys and 800 wrapped-DEK-like values,
/// pushed to the bottom level.
fn raw_fill(db: &DB, rng: &mut Rng) {
    let deks = db.cf_handle("deks").unwrap();
    let buckets = db.cf_handle("buckets").unwrap();
    for b in 0..SMALL_BUCKETS {
        db.put_cf(buckets, b.to_be_bytes(), rng.bytes(60)).unwrap();
        for i in 0..50 {
            db.put_cf(deks, raw_dek_key(b, u64::from(b) * 1000 + i), rng.bytes(60))
                .unwrap();
        }
    }
    raw_flush_all(db);
    for b in 0..SMALL_BUCKETS {
        raw_compact(db, b);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defeat {
    /// Nothing: the keystore's own settings and the full purge procedure.
    None,
    /// A snapshot held across the purge (b).
    Snapshot,
    /// `recycle_log_file_num = 4` (c).
    RecycleWal,
    /// The purge skips the flush of the column family that shares the WAL (a').
    SkipFlush,
}

/// Stores a canary wrapped DEK, deletes it and purges as the keystore does,
/// under one `defeat`; returns the keystore files that still hold it.
fn raw_scenario(dir: &Path, defeat: Defeat) -> Vec<String> {
    let mut rng = Rng(0x5EED ^ dir.as_os_str().len() as u64);
    let db = raw_open(dir, if defeat == Defeat::RecycleWal { 4 } else { 0 });
    raw_fill(&db, &mut rng);
    let deks = db.cf_handle("deks").unwrap();
    let default = db.cf_handle("default").unwrap();
    let bucket = 5;
    let key = raw_dek_key(bucket, 999_999);
    let canary = rng.bytes(60);
    if defeat == Defeat::RecycleWal {
        // The canary deep inside a large WAL, so that a recycled reuse of the
        // file, which rewrites it from the start, leaves it in place.
        for i in 0..3000u64 {
            db.put_cf(deks, raw_dek_key(9, 500_000 + i), rng.bytes(200))
                .unwrap();
        }
    }
    db.put_cf(deks, &key, &canary).unwrap();
    match defeat {
        Defeat::RecycleWal => {
            for i in 0..100u64 {
                db.put_cf(deks, raw_dek_key(10, 600_000 + i), rng.bytes(200))
                    .unwrap();
            }
        }
        Defeat::SkipFlush => {
            // Another column family's unflushed data shares the canary's WAL.
            db.put_cf(default, b"other", rng.bytes(40)).unwrap();
        }
        Defeat::Snapshot | Defeat::None => {
            // The canary in an SST file as well as in the WAL.
            db.flush_cf(deks).unwrap();
        }
    }
    let snapshot = (defeat == Defeat::Snapshot).then(|| db.snapshot());
    db.delete_cf(deks, &key).unwrap();
    if defeat == Defeat::SkipFlush {
        // Flush only what the compaction itself flushes (the touched CFs).
        db.flush_cf(deks).unwrap();
        db.flush_cf(db.cf_handle("buckets").unwrap()).unwrap();
    } else {
        raw_flush_all(&db);
    }
    raw_compact(&db, bucket);
    if defeat == Defeat::RecycleWal {
        // Later small writes reuse the recycled WAL file in place.
        for i in 0..10u64 {
            db.put_cf(deks, raw_dek_key(11, 700_000 + i), rng.bytes(20))
                .unwrap();
        }
        raw_flush_all(&db);
        for i in 0..10u64 {
            db.put_cf(deks, raw_dek_key(12, 800_000 + i), rng.bytes(20))
                .unwrap();
        }
    }
    assert!(
        db.get_cf(deks, &key).unwrap().is_none(),
        "the canary is deleted"
    );
    let hits = scan_settled(dir, std::slice::from_ref(&canary), Duration::from_secs(2));
    if let Some(s) = snapshot {
        // Releasing the snapshot and purging again removes the residue:
        // the snapshot was what pinned it.
        assert!(
            !hits.is_empty(),
            "the snapshot should pin the deleted value"
        );
        drop(s);
        raw_flush_all(&db);
        raw_compact(&db, bucket);
        let after = scan_settled(dir, &[canary], Duration::from_secs(3));
        assert!(
            after.is_empty(),
            "after the snapshot is released the purge must clean up, found {after:?}"
        );
    }
    hits
}

#[test]
fn negative_controls_raw_keystore_residue_is_seen_by_the_scan() {
    let tmp = temp();
    // Baseline: the keystore's settings and procedure leave nothing.
    let clean = raw_scenario(&tmp.path().join("baseline"), Defeat::None);
    assert!(
        clean.is_empty(),
        "baseline purge left the deleted value in {clean:?}"
    );
    // (b) a held snapshot pins the deleted version through the compaction.
    let snap = raw_scenario(&tmp.path().join("snapshot"), Defeat::Snapshot);
    assert!(
        !snap.is_empty(),
        "a held snapshot must make the scan find residue"
    );
    // (c) WAL recycling keeps the old bytes in a reused (live) WAL file.
    let recycled = raw_scenario(&tmp.path().join("recycle"), Defeat::RecycleWal);
    assert!(
        recycled.iter().any(|f| f.ends_with(".log")),
        "recycle_log_file_num = 4 must leave the value in a WAL file, found {recycled:?}"
    );
    // (a') a skipped flush of a column family sharing the WAL keeps that WAL.
    let skipped = raw_scenario(&tmp.path().join("skipflush"), Defeat::SkipFlush);
    assert!(
        skipped.iter().any(|f| f.ends_with(".log")),
        "skipping the flush of every column family must leave the WAL holding the value, found {skipped:?}"
    );
    eprintln!("residue: snapshot {snap:?}, recycled WAL {recycled:?}, skipped flush {skipped:?}");
}

// =====================================================================================
// 2 + 3. CLI: dispose a subject; no PI left; others read; disposed answers 7
// =====================================================================================

/// A `pivault` run with no vault environment at all (offline commands).
fn offline(args: &[&str]) -> Run {
    let mut c = Command::new(cli::pivault_bin());
    for var in [
        "PIVAULT_DIR",
        "PIVAULT_USER",
        "PIVAULT_PASSPHRASE_FILE",
        "PIVAULT_PASSWORD_FILE",
        "PIVAULT_NEW_PASSWORD_FILE",
        "PIVAULT_SYNC",
        "PIVAULT_DATA_OWNER",
        "PIVAULT_DATA_OWNER_ADDRESS",
    ] {
        c.env_remove(var);
    }
    let out = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run pivault");
    Run::from_output(args.join(" "), &out)
}

/// `record list --json` as `user`, filtered: the record IDs.
fn list_ids(v: &CliVault, user: &str, filter: &[&str]) -> Vec<String> {
    let mut args = vec!["--json", "record", "list"];
    args.extend_from_slice(filter);
    let r = v.run(Some(user), &args);
    r.ok();
    r.json()["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {}", r.stdout))
        .iter()
        .map(|m| m["record_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Adds a user whose password file is written first.
fn add_cli_user(v: &CliVault, name: &str, role: &str, password: &str) {
    cli::write_private(&v.password_file(name), format!("{password}\n").as_bytes());
    v.add_user(name, role);
}

/// Imports JSON Lines into a collection as the clerk; returns how many.
fn import_lines(v: &CliVault, collection: &str, file: &str, lines: &[Value]) -> u64 {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let f = v.input_file(file, &text);
    let r = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "import",
            collection,
            f.to_str().unwrap(),
        ],
    );
    r.ok();
    r.json()["imported"].as_u64().unwrap()
}

/// Creates a collection with given name, family name and SSN (admin).
fn create_small_collection(v: &CliVault, name: &str) {
    let schema = v.input_file(
        &format!("{name}.schema.json"),
        r#"{"purpose": "test collection", "residence": "MA", "fields": [
            {"name": "given_name", "type": "given_name", "required": true, "purpose": "identify"},
            {"name": "family_name", "type": "family_name", "required": true, "purpose": "identify"},
            {"name": "ssn", "type": "ssn", "required": false, "purpose": "tax reporting"}]}"#,
    );
    v.run(
        Some("admin"),
        &[
            "--json",
            "collection",
            "create",
            name,
            "--schema",
            schema.to_str().unwrap(),
        ],
    )
    .ok();
}

#[test]
fn cli_subject_disposal_leaves_no_pi_and_disposed_reads_answer_with_certificate() {
    let v = CliVault::standard();
    v.import(&cli::examples().join("customers.jsonl")).ok();
    // More records: two more for C-1002 (the subject to dispose of), with
    // SSNs and card numbers, and one for C-1004.
    let victim_ssns = [ssn(501), ssn(502)];
    let victim_cards = [card(501), card(502)];
    let extra = [
        json!({"subject": "C-1002", "given_name": "Grace", "family_name": "Hopper", "ssn": victim_ssns[0], "card": victim_cards[0]}),
        json!({"subject": "C-1002", "given_name": "Grace", "family_name": "Hopper", "ssn": victim_ssns[1], "card": victim_cards[1], "license": {"state": "MA", "number": "S87654321"}}),
        json!({"subject": "C-1004", "given_name": "Frances", "family_name": "Allen", "ssn": ssn(503), "card": card(503)}),
    ];
    assert_eq!(import_lines(&v, CUSTOMERS, "extra.jsonl", &extra), 3);

    // The PI of C-1002 in every form it might be stored or shown in.
    let mut needles: Vec<String> = Vec::new();
    for s in &victim_ssns {
        needles.push(s.clone());
        needles.push(s.replace('-', ""));
    }
    for c in &victim_cards {
        needles.push(c.clone());
        needles.push(format!(
            "{} {} {} {}",
            &c[..4],
            &c[4..8],
            &c[8..12],
            &c[12..]
        ));
    }
    needles.extend([
        "S12345678".to_owned(),
        "S87654321".to_owned(),
        "6175550100".to_owned(),
    ]);
    let needle_bytes: Vec<&[u8]> = needles.iter().map(|s| s.as_bytes()).collect();
    // Control: the scan finds the formatted values in the input files.
    let mut input = fs::read(v.input.join("extra.jsonl")).unwrap();
    input.extend(fs::read(cli::examples().join("customers.jsonl")).unwrap());
    let seen = cli::find_any(&input, &needle_bytes);
    assert!(
        seen.len() >= 5,
        "control: the scan should find the SSNs, licences in the input: {seen:?}"
    );

    let victim_ids = list_ids(&v, "clerk", &["--subject", "C-1002"]);
    assert_eq!(victim_ids.len(), 3, "C-1002 has three records");
    let ada = list_ids(&v, "clerk", &["--subject", "C-1001"]);
    let frances = list_ids(&v, "clerk", &["--subject", "C-1004"]);
    assert_eq!((ada.len(), frances.len()), (1, 1));

    // Dispose of the subject.
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "subject",
            "C-1002",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
        ],
    );
    r.ok();
    let out = r.json();
    assert_eq!(out["records"], 3, "{out}");
    assert_eq!(out["subjects"], 1, "{out}");
    assert_eq!(out["dry_run"], false, "{out}");
    let mut disposed: Vec<String> = out["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    disposed.sort();
    let mut expected = victim_ids.clone();
    expected.sort();
    assert_eq!(disposed, expected);
    let cert = out["certificate_id"]
        .as_str()
        .expect("certificate_id")
        .to_owned();
    cert.parse::<CertificateId>().expect("a certificate ID");

    // REQ-MON-02: no PI of the subject in any file of the vault directory.
    let mut found = Vec::new();
    for f in cli::files_under(&v.dir) {
        let bytes = fs::read(&f).unwrap_or_default();
        for k in cli::find_any(&bytes, &needle_bytes) {
            found.push(format!("{} in {}", k, f.display()));
        }
    }
    assert!(
        found.is_empty(),
        "PI of the disposed subject (needle index) found in vault files: {found:?}"
    );
    // The audit trail survives the disposal intact.
    v.assert_audit_ok();

    // Other subjects read correctly.
    let r = v.run(Some("clerk"), &["--json", "record", "get", &ada[0]]);
    r.ok();
    let view = r.json();
    assert_eq!(view["fields"]["family_name"], "Lovelace", "{view}");
    assert_eq!(view["fields"]["ssn"], "***-**-1120", "{view}");
    let r = v.run(Some("clerk"), &["--json", "record", "get", &frances[0]]);
    r.ok();
    let view = r.json();
    assert_eq!(view["fields"]["family_name"], "Allen", "{view}");
    assert_eq!(
        view["fields"]["ssn"],
        json!(format!("***-**-{}", &ssn(503)[7..])),
        "{view}"
    );

    // REQ-DISP-01: each disposed record answers "disposed" (exit 7) naming the certificate.
    for id in &victim_ids {
        for user in ["officer", "clerk"] {
            let r = v.run(Some(user), &["--json", "record", "get", id]);
            r.code(EXIT_DISPOSED);
            assert_eq!(r.error_code(), "disposed", "{}", r.stderr);
            let e: Value = serde_json::from_str(r.stderr.trim()).unwrap();
            let msg = e["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains(&cert),
                "the disposed message must name certificate {cert}: {msg}"
            );
            assert!(
                r.stdout.trim().is_empty(),
                "no record output for a disposed record: {}",
                r.stdout
            );
        }
    }
    let r = v.run(Some("clerk"), &["record", "get", &victim_ids[0]]);
    r.code(EXIT_DISPOSED);
    assert!(
        r.stderr.contains(&cert),
        "human error names the certificate: {}",
        r.stderr
    );
    // The listing shows the tombstone with its certificate, no contents.
    let r = v.run(
        Some("clerk"),
        &["--json", "record", "list", "--subject", "C-1002"],
    );
    r.ok();
    for m in r.json()["items"].as_array().unwrap() {
        assert_eq!(m["state"], "disposed", "{m}");
        assert_eq!(m["certificate"], cert.as_str(), "{m}");
    }
    // A second disposal of the same subject finds nothing left to dispose of.
    let r = v.run(
        Some("officer"),
        &["--json", "dispose", "subject", "C-1002", "--yes"],
    );
    r.ok();
    assert_eq!(r.json()["records"], 0, "{}", r.stdout);
    assert!(r.json()["certificate_id"].is_null(), "{}", r.stdout);
}

#[test]
fn library_disposed_record_reports_its_certificate_after_reopen() {
    let tmp = temp();
    let fx = small_vault(&tmp.path().join("vault"));
    let recs = store_records(&fx, 3, 2);
    let target = recs[3];
    let out = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(target.id)))
        .unwrap();
    let cert = out.certificate_id.unwrap();
    let check = |fx: &Fixture| {
        for s in [&fx.officer, &fx.clerk] {
            match fx.vault.get_record(s, target.id, &[], None) {
                Err(Error::Disposed {
                    certificate: Some(c),
                }) => assert_eq!(c, cert.to_string()),
                other => panic!("expected Disposed with certificate {cert}, got {other:?}"),
            }
        }
        // An update of a disposed record is refused the same way.
        match fx.vault.update_record(&fx.clerk, target.id, &body(99)) {
            Err(Error::Disposed {
                certificate: Some(c),
            }) => assert_eq!(c, cert.to_string()),
            other => panic!("update of a disposed record: {other:?}"),
        }
        // Disposing it again is refused as disposed too.
        match fx
            .vault
            .dispose(&fx.officer, &request(DisposalScope::Record(target.id)))
        {
            Err(Error::Disposed { .. }) => {}
            other => panic!("second disposal of a disposed record: {other:?}"),
        }
        for r in recs.iter().filter(|r| r.id != target.id) {
            assert_readable(&fx.vault, &fx.clerk, r);
        }
        // The stored certificate verifies with the vault's key.
        let c = fx.vault.certificate(&fx.auditor, cert).unwrap();
        let rep = certificate::verify(&c, &fx.vault.certificate_public_key());
        assert!(rep.ok(), "the certificate does not verify: {rep:?}");
    };
    check(&fx);
    let fx = fx.reopen();
    check(&fx);
    close(fx);
}

// =====================================================================================
// 4. Crash at every step of a batch: the batch resumes on open
// =====================================================================================

/// Runs one crash round: a fresh vault, the child aborting at `step`, then
/// the checks after reopening (panics on the first failure).
fn crash_round(step: &str) {
    let tmp = temp();
    let dir = tmp.path().join("vault");
    let fx = small_vault(&dir);
    let recs = store_records(&fx, 3, 2);
    // The disposed record has search beacons (family name and SSN), so the
    // certificate's count of them is checked across the crash too: the
    // keystore's purge and the ciphertexts' deletion run at once, and a
    // batch resumed after `keystore_purged`, or stopped once the rows went
    // but before the keys' purge was recorded (`rows_tombstoned`), must
    // still count the beacon rows its first run deleted.
    let mut searched = common::customers_schema();
    searched
        .set_searchable(vec!["family_name".into(), "ssn".into()])
        .unwrap();
    fx.vault
        .create_collection(&fx.admin, "searched", &searched)
        .unwrap();
    let target = Stored {
        id: fx
            .vault
            .put_record(&fx.clerk, "searched", recs[2].subject, &body(99))
            .unwrap(),
        subject: recs[2].subject,
        n: 99,
    };
    let wrapped = fx
        .vault
        .keystore()
        .wrapped_dek(target.subject, target.id, 1)
        .unwrap()
        .unwrap();
    let epoch_before = fx.vault.epoch();
    close(fx);

    crash_at(tmp.path(), &dir, &target.id.to_string(), step);

    // Reopen: the batch resumes and completes before the vault serves.
    let vault = Vault::open(
        &dir,
        &SecretString::from(common::PASSPHRASE),
        OpenOptions::default(),
    )
    .unwrap_or_else(|e| panic!("step {step}: the vault does not reopen: {e}"));
    let officer = common::login(&vault, "officer");
    let clerk = common::login(&vault, "clerk");
    let cert = match vault.get_record(&officer, target.id, &[], None) {
        Err(Error::Disposed {
            certificate: Some(c),
        }) => c,
        other => panic!(
            "step {step}: the record must read as disposed with a certificate, got {other:?}"
        ),
    };
    let batches = vault.disposals(&officer).unwrap();
    assert_eq!(batches.len(), 1, "step {step}: {batches:?}");
    let b = &batches[0];
    // A resume stopped by an error the batch does not record leaves its
    // code in the trail: shown when the batch is not complete.
    let stopped = |vault: &Vault| {
        vault
            .audit_events(
                &officer,
                &EventFilter {
                    action_prefix: Some("disposal.resume".into()),
                    ..EventFilter::default()
                },
            )
            .map(|es| {
                es.iter()
                    .map(|e| format!("{:?} {:?} {:?}", e.targets, e.outcome, e.code))
                    .collect::<Vec<_>>()
            })
    };
    assert_eq!(
        b.step,
        "complete",
        "step {step}: batch {b:?}, resumes {:?}",
        stopped(&vault)
    );
    assert!(
        b.failed.is_none(),
        "step {step}: batch failed: {:?}",
        b.failed
    );
    assert_eq!(b.records, 1);
    assert_eq!(b.certificate_id.to_string(), cert, "step {step}");
    let c = vault.certificate(&officer, b.certificate_id).unwrap();
    let rep = certificate::verify(&c, &vault.certificate_public_key());
    assert!(
        rep.ok(),
        "step {step}: the certificate does not verify: {rep:?}"
    );
    assert_eq!(c.body["target"]["record_count"], 1, "step {step}");
    let destroyed = &c.body["sanitization"]["details"]["keys_destroyed"];
    assert!(
        destroyed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["record_id"] == target.id.to_string().as_str()),
        "step {step}: keys_destroyed does not name the record: {destroyed}"
    );
    assert!(
        vault.epoch() > epoch_before,
        "step {step}: no epoch ratchet"
    );
    let si = &c.body["sanitization"]["details"]["search_index"];
    assert_eq!(si["records_with_beacons"], 1, "step {step}: {si}");
    assert!(
        si["beacons_deleted"].as_u64() >= Some(2),
        "step {step}: the family name's and the SSN's beacons are counted: {si}"
    );
    for r in &recs {
        assert_readable(&vault, &clerk, r);
    }
    let hits = scan_settled(&dir.join("keystore"), &[wrapped], Duration::from_secs(1));
    assert!(
        hits.is_empty(),
        "step {step}: pre-disposal wrapped DEK still in keystore files {hits:?}"
    );
    let rep = vault.audit_verify(&officer).unwrap();
    assert!(
        rep.ok(),
        "step {step}: audit trail fails at {:?}: {:?}",
        rep.first_bad_seq,
        rep.problem
    );
    vault.close().unwrap();
    // And it stays done: a second open resumes nothing.
    let vault = Vault::open(
        &dir,
        &SecretString::from(common::PASSPHRASE),
        OpenOptions::default(),
    )
    .unwrap();
    let officer = common::login(&vault, "officer");
    let again = vault.disposals(&officer).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].step, "complete");
    let resumes = vault
        .audit_events(
            &officer,
            &EventFilter {
                action_prefix: Some("disposal.resume".into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    let expect_resume = step != "complete";
    assert_eq!(
        !resumes.is_empty(),
        expect_resume,
        "step {step}: resume events {resumes:?}"
    );
    vault.close().unwrap();
}

/// Runs `disposal-crash` on the closed vault in `dir` (its secrets in files
/// under `tmp`): the officer disposes of `target` (a record ID), and the
/// child aborts when the batch reaches `step`; or, with a `backup_` step,
/// writes a backup to `target` (a path) and aborts at that step of it.
pub(crate) fn crash_at(tmp: &Path, dir: &Path, target: &str, step: &str) {
    let secrets = tmp.join("secrets");
    fs::create_dir(&secrets).unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
    let pass = secrets.join("passphrase");
    cli::write_private(&pass, common::PASSPHRASE.as_bytes());
    let pw = secrets.join("officer");
    cli::write_private(&pw, common::USERS[1].2.as_bytes());
    assert_eq!(common::USERS[1].0, "officer");

    let out = Command::new(env!("CARGO_BIN_EXE_disposal-crash"))
        .args([
            dir.as_os_str(),
            pass.as_os_str(),
            "officer".as_ref(),
            pw.as_os_str(),
        ])
        .arg(target)
        .arg(step)
        .stdin(Stdio::null())
        .output()
        .expect("run disposal-crash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(3),
        "step {step}: the child did not crash at the step (status {:?}): {stderr}",
        out.status
    );
    assert_eq!(
        out.status.signal(),
        Some(6),
        "step {step}: expected SIGABRT from the hook, got {:?}: {stderr}",
        out.status
    );
}

#[test]
fn crash_at_every_disposal_step_resumes_on_open() {
    // Two threads over the nine crash points: each round is independent.
    let (mut a, mut b): (Vec<&'static str>, Vec<&'static str>) = (Vec::new(), Vec::new());
    for (i, s) in STEPS.into_iter().enumerate() {
        if i % 2 == 0 { a.push(s) } else { b.push(s) }
    }
    let run = |steps: Vec<&'static str>| {
        std::thread::spawn(move || {
            for s in steps {
                crash_round(s);
            }
        })
    };
    let (ta, tb) = (run(a), run(b));
    let (ra, rb) = (ta.join(), tb.join());
    for r in [ra, rb] {
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }
}

/// Runs `edit` on the RocksDB database `path` of a closed vault (its
/// `keystore` or `records`), opened directly, as someone with the files would.
fn edit_rocks<T>(path: &Path, edit: impl FnOnce(&DB) -> T) -> T {
    let cfs = DB::list_cf(&rocksdb::Options::default(), path).expect("column families");
    let db = DB::open_cf(&rocksdb::Options::default(), path, cfs).expect("open the database");
    let out = edit(&db);
    db.flush().expect("flush");
    out
}

/// An insider who stops the vault once a batch's bucket rotation went, and
/// before its ratchet, and puts back the bucket-key row from before the
/// disposal, would have the resumed ratchet carry the replaced key forward:
/// the destroyed record's wrapped key, copied out before, would open under
/// the live vault again while the certificate says its bucket's key was
/// replaced. The resumed batch finds the key it replaced live and fails,
/// naming the bucket. Before, it certified.
#[test]
fn a_bucket_key_put_back_after_a_stop_before_the_ratchet_fails_the_resumed_batch() {
    let tmp = temp();
    let dir = tmp.path().join("vault");
    let fx = small_vault_on(&dir, None, None);
    let recs = store_records(&fx, 3, 2);
    let target = &recs[0];
    let bucket = fx.vault.keystore().bucket_of(target.subject).to_be_bytes();
    close(fx);
    let old_row = edit_rocks(&dir.join("keystore"), |db| {
        db.get_cf(&db.cf_handle("buckets").unwrap(), bucket)
            .unwrap()
            .expect("the bucket's key row")
    });
    crash_at(tmp.path(), &dir, &target.id.to_string(), "buckets_rotated");
    edit_rocks(&dir.join("keystore"), |db| {
        let cf = db.cf_handle("buckets").unwrap();
        assert_ne!(
            db.get_cf(&cf, bucket).unwrap().as_deref(),
            Some(&old_row[..]),
            "the rotation replaced the bucket's key"
        );
        db.put_cf(&cf, bucket, &old_row).unwrap();
    });

    let vault = Vault::open(
        &dir,
        &SecretString::from(common::PASSPHRASE),
        OpenOptions::default(),
    )
    .expect("the vault opens; the batch waits");
    let officer = common::login(&vault, "officer");
    let batches = vault.disposals(&officer).unwrap();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_ne!(batches[0].step, "complete", "{batches:?}");
    let why = batches[0].failed.clone().unwrap_or_default();
    assert!(
        why.contains("rotation replaced") && why.contains("put back"),
        "{why}"
    );
    assert!(
        vault
            .certificate(&officer, batches[0].certificate_id)
            .is_err(),
        "a certificate was issued"
    );
    vault.close().unwrap();
}

/// A batch stopped once verified, before its certificate, reads again what
/// the certificate states of each record when it resumes: a record's live
/// row put back while the vault was stopped fails it (no certificate says
/// the record is a tombstone while its row is live) and keeps the record
/// from other batches, and a retry tombstones the row again and certifies.
/// Before, the resume signed at once.
#[test]
fn a_live_row_put_back_after_a_stop_once_verified_fails_the_resumed_batch() {
    let tmp = temp();
    let dir = tmp.path().join("vault");
    let fx = small_vault_on(&dir, None, None);
    let recs = store_records(&fx, 2, 1);
    let target = &recs[0];
    close(fx);
    let records = dir.join("records");
    let live_row = edit_rocks(&records, |db| {
        db.get_cf(&db.cf_handle("records").unwrap(), target.id.as_bytes())
            .unwrap()
    })
    .expect("the record's row");
    crash_at(tmp.path(), &dir, &target.id.to_string(), "verified");
    edit_rocks(&records, |db| {
        db.put_cf(
            &db.cf_handle("records").unwrap(),
            target.id.as_bytes(),
            &live_row,
        )
        .unwrap()
    });

    let vault = Vault::open(
        &dir,
        &SecretString::from(common::PASSPHRASE),
        OpenOptions::default(),
    )
    .expect("the vault opens; the batch waits");
    let officer = common::login(&vault, "officer");
    let batch = vault.disposals(&officer).unwrap()[0].clone();
    assert_ne!(batch.step, "complete", "{batch:?}");
    let why = batch.failed.clone().unwrap_or_default();
    assert!(
        why.contains("does not read as disposed") && why.contains("since the batch's verification"),
        "{why}"
    );
    // Until the batch certifies it, no other batch takes the record (with
    // the batch's needles gone, only its certificate may name it).
    match vault.dispose(&officer, &request(DisposalScope::Record(target.id))) {
        Err(Error::DisposalInProgress) => {}
        other => panic!("another batch took the failed batch's record: {other:?}"),
    }
    let wide = vault
        .dispose(&officer, &request(DisposalScope::Subject(target.subject)))
        .unwrap();
    assert!(wide.records.is_empty(), "{wide:?}");
    assert_eq!(
        wide.excluded,
        vec![(target.id, vault_core::vault::IN_UNFINISHED_BATCH.to_owned())]
    );
    let cert = vault.retry_disposal(&officer, batch.id).unwrap();
    match vault.get_record(&officer, target.id, &[], None) {
        Err(Error::Disposed {
            certificate: Some(c),
        }) => assert_eq!(c, cert.to_string()),
        other => panic!("the retry left the record {other:?}"),
    }
    assert!(vault.audit_verify(&officer).unwrap().ok());
    vault.close().unwrap();
}

// =====================================================================================
// 5. Certificates: offline verification, tampering, wrong key, validation, commitment
// =====================================================================================

fn unhex32(s: &str) -> [u8; 32] {
    assert_eq!(s.len(), 64, "not 32 bytes of hex: {s}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn verifies(text: &str, key: &ed25519_dalek_key::VerifyingKey) -> bool {
    match Certificate::parse(text) {
        Ok(c) => certificate::verify(&c, key).ok(),
        Err(_) => false,
    }
}

/// Replaces the first occurrence of `from` after `anchor` in `text`.
fn mutate_after(text: &str, anchor: &str, from: &str, to: &str) -> String {
    let a = text
        .find(anchor)
        .unwrap_or_else(|| panic!("{anchor} not in the certificate"));
    let i = a + text[a..]
        .find(from)
        .unwrap_or_else(|| panic!("{from} not after {anchor}"));
    format!("{}{}{}", &text[..i], to, &text[i + from.len()..])
}

#[test]
fn certificates_verify_offline_and_any_change_fails() {
    let v = CliVault::standard();
    add_cli_user(&v, "officer2", "officer", OFFICER2_PASSWORD);
    v.import(&cli::examples().join("customers.jsonl")).ok();
    create_small_collection(&v, "leads");
    let leads: Vec<Value> = [("L-1", 0), ("L-1", 1), ("L-2", 2), ("L-2", 3), ("L-3", 4)]
        .iter()
        .map(|(s, n)| json!({"subject": s, "given_name": GIVEN[*n], "family_name": FAMILY[*n], "ssn": ssn(600 + *n as u64)}))
        .collect();
    assert_eq!(import_lines(&v, "leads", "leads.jsonl", &leads), 5);
    let lead_ids = list_ids(&v, "clerk", &["--collection", "leads"]);
    let customer_ids = list_ids(&v, "clerk", &["--collection", CUSTOMERS]);
    assert_eq!((lead_ids.len(), customer_ids.len()), (5, 3));

    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "query",
            "--collection",
            "leads",
            "--before",
            "2999-01-01",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--title",
            "Records Manager",
        ],
    );
    r.ok();
    let out = r.json();
    assert_eq!(out["records"], 5, "{out}");
    assert_eq!(out["subjects"], 3, "{out}");
    let cert_id = out["certificate_id"].as_str().unwrap().to_owned();

    // Export the certificate and the public keys.
    let work = v.input.clone();
    let cert_file = work.join("cert.json");
    v.run(
        Some("officer"),
        &[
            "certificate",
            "export",
            &cert_id,
            "--out",
            cert_file.to_str().unwrap(),
        ],
    )
    .ok();
    let keys = work.join("keys");
    v.run(
        Some("officer"),
        &["--json", "keys", "export", "--out", keys.to_str().unwrap()],
    )
    .ok();
    let pem_path = keys.join("certificate.pem");
    let pem = fs::read_to_string(&pem_path).unwrap();
    let key = certificate::parse_public_key(&pem).unwrap();

    // Offline verification with no vault environment.
    let verify = |file: &Path, key: &Path| {
        offline(&[
            "--json",
            "certificate",
            "verify",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let r = verify(&cert_file, &pem_path);
    r.ok();
    let rep = r.json();
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(rep["status"], "draft", "{rep}");
    assert_eq!(rep["vault_signature_ok"], true, "{rep}");
    assert_eq!(rep["certificate_id"], cert_id.as_str(), "{rep}");
    let r = offline(&[
        "certificate",
        "verify",
        cert_file.to_str().unwrap(),
        "--key",
        pem_path.to_str().unwrap(),
    ]);
    r.ok();
    assert!(r.stdout.contains("VALID"), "{}", r.stdout);

    let text = fs::read_to_string(&cert_file).unwrap();
    let cert = Certificate::parse(&text).unwrap();
    let missing = certificate::check_fields(&cert.body);
    assert!(
        missing.is_empty(),
        "mandatory fields missing or invalid: {missing:?}"
    );
    assert!(certificate::verify(&cert, &key).ok());
    let body = &cert.body;
    assert_eq!(body["certificate_id"], cert_id.as_str());
    assert_eq!(body["status"], "draft");
    assert!(body["validator"].is_null());
    assert_eq!(body["target"]["record_count"], 5);
    assert_eq!(body["target"]["subject_count"], 3);
    assert_eq!(body["target"]["collections"], json!(["leads"]));
    assert_eq!(body["sanitization"]["method"], "Purge");
    assert_eq!(body["sanitization"]["verification"]["result"], "PASS");
    assert!(
        body["outcome_statement"]
            .as_str()
            .unwrap()
            .contains(certificate::OUTCOME_PHRASE)
    );
    let destroyed: Vec<&str> = body["sanitization"]["details"]["keys_destroyed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["record_id"].as_str().unwrap())
        .collect();
    let mut sorted_destroyed = destroyed.clone();
    sorted_destroyed.sort_unstable();
    let mut sorted_leads: Vec<&str> = lead_ids.iter().map(String::as_str).collect();
    sorted_leads.sort_unstable();
    assert_eq!(sorted_destroyed, sorted_leads);
    // No PI in the certificate.
    for l in &leads {
        for f in ["family_name", "ssn"] {
            let s = l[f].as_str().unwrap();
            assert!(!text.contains(s), "the certificate contains PI ({f})");
        }
    }

    // REQ-DISP-03: the record commitment proves inclusion of each disposed ID
    // and of no other.
    let ids: Vec<[u8; 16]> = lead_ids
        .iter()
        .map(|s| *s.parse::<RecordId>().unwrap().as_bytes())
        .collect();
    let root = unhex32(
        body["target"]["commitment"]["record_root"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        root,
        certificate::merkle_root(&ids),
        "record_root is not the Merkle root of the disposed IDs"
    );
    for id in &ids {
        let proof = certificate::merkle_proof(&ids, id).expect("a proof for a disposed ID");
        let proof = InclusionProof::from_json(&proof.to_json()).unwrap();
        assert!(certificate::verify_inclusion(&root, id, &proof));
    }
    let any_proof = certificate::merkle_proof(&ids, &ids[0]).unwrap();
    for other in &customer_ids {
        let other = *other.parse::<RecordId>().unwrap().as_bytes();
        assert!(
            certificate::merkle_proof(&ids, &other).is_none(),
            "a non-disposed ID has no proof"
        );
        assert!(!certificate::verify_inclusion(&root, &other, &any_proof));
    }
    let subjects: Vec<[u8; 16]> = ["L-1", "L-2", "L-3"]
        .iter()
        .map(|s| {
            let r = v.run(None, &["--json", "subject", "id", s]);
            r.ok();
            *r.json()["subject"]
                .as_str()
                .unwrap()
                .parse::<SubjectId>()
                .unwrap()
                .as_bytes()
        })
        .collect();
    let subject_root = unhex32(
        body["target"]["commitment"]["subject_root"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        subject_root,
        certificate::merkle_root(&subjects),
        "subject_root mismatch"
    );

    // Any changed byte fails: every non-whitespace byte, two ways, in-process.
    let bytes = text.as_bytes();
    let mut accepted = Vec::new();
    let mut tried = 0;
    for i in 0..bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            continue;
        }
        for flip in [0x01u8, 0x20] {
            let mut m = bytes.to_vec();
            m[i] ^= flip;
            tried += 1;
            if let Ok(t) = std::str::from_utf8(&m)
                && verifies(t, &key)
            {
                accepted.push(format!("byte {i} ({:?} ^ {flip:#04x})", bytes[i] as char));
            }
        }
    }
    assert!(tried > 1000);
    assert!(
        accepted.is_empty(),
        "changed certificates still verify: {accepted:?}"
    );

    // And through the CLI, targeted changes inside the body.
    let rc = body["target"]["record_count"].to_string();
    let some_id = destroyed[2];
    let mut swapped = some_id.to_owned();
    let last = swapped.pop().unwrap();
    swapped.push(if last == '0' { '1' } else { '0' });
    let sig = cert.signatures[0].signature.clone();
    let mut bad_sig = sig.clone();
    let first = bad_sig.remove(0);
    bad_sig.insert(0, if first == 'a' { 'b' } else { 'a' });
    let mutants = [
        (
            "record_count",
            mutate_after(
                &text,
                "\"record_count\"",
                &rc,
                &(rc.parse::<u64>().unwrap() + 1).to_string(),
            ),
        ),
        (
            "record id",
            mutate_after(&text, "\"keys_destroyed\"", some_id, &swapped),
        ),
        (
            "outcome statement",
            mutate_after(&text, "\"outcome_statement\"", "erased", "Erased"),
        ),
        (
            "status",
            mutate_after(&text, "\"status\"", "draft", "validated"),
        ),
        (
            "subject_count",
            mutate_after(&text, "\"subject_count\"", "3", "2"),
        ),
        (
            "epoch_after",
            mutate_after(&text, "\"epoch_after\"", ": ", ": 1"),
        ),
        ("signature", text.replacen(&sig, &bad_sig, 1)),
        (
            "data owner",
            mutate_after(&text, "\"data_owner\"", "Example", "Exampl3"),
        ),
    ];
    for (what, m) in &mutants {
        assert_ne!(m, &text, "{what}: mutation did nothing");
        let f = work.join("mutant.json");
        fs::write(&f, m).unwrap();
        let r = verify(&f, &pem_path);
        assert!(
            r.code == EXIT_INTEGRITY || r.code == EXIT_INVALID_INPUT,
            "changing the {what} must fail verification (8) or parsing (3), got {}:\n{}{}",
            r.code,
            r.stdout,
            r.stderr
        );
    }

    // A wrong key (another vault's certificate key) fails.
    let other = CliVault::empty();
    other.init();
    let other_keys = other.input.join("keys");
    other
        .run(
            Some("admin"),
            &[
                "--json",
                "keys",
                "export",
                "--out",
                other_keys.to_str().unwrap(),
            ],
        )
        .ok();
    let r = verify(&cert_file, &other_keys.join("certificate.pem"));
    assert_eq!(
        r.code, EXIT_INTEGRITY,
        "wrong key must fail: {}{}",
        r.stdout, r.stderr
    );
    assert_eq!(r.json()["ok"], false);
    let other_key = certificate::parse_public_key(
        &fs::read_to_string(other_keys.join("certificate.pem")).unwrap(),
    )
    .unwrap();
    assert!(!certificate::verify(&cert, &other_key).ok());

    // REQ-CE-06: the operator cannot validate their own certificate.
    let r = v.run(
        Some("officer"),
        &["--json", "certificate", "validate", &cert_id],
    );
    assert_ne!(
        r.code, 0,
        "the operator validated their own certificate: {}",
        r.stdout
    );
    assert!(r.stderr.contains("different user"), "{}", r.stderr);
    // A different officer validates it.
    let r = v.run(
        Some("officer2"),
        &[
            "--json",
            "certificate",
            "validate",
            &cert_id,
            "--title",
            "Chief Privacy Officer",
        ],
    );
    r.ok();
    assert_eq!(r.json()["status"], "validated");
    let validated = work.join("validated.json");
    v.run(
        Some("auditor"),
        &[
            "certificate",
            "export",
            &cert_id,
            "--out",
            validated.to_str().unwrap(),
        ],
    )
    .ok();
    let r = verify(&validated, &pem_path);
    r.ok();
    assert_eq!(r.json()["status"], "validated", "{}", r.stdout);
    let vcert = Certificate::parse(&fs::read_to_string(&validated).unwrap()).unwrap();
    assert!(
        certificate::check_fields(&vcert.body).is_empty(),
        "{:?}",
        certificate::check_fields(&vcert.body)
    );
    assert_ne!(
        vcert.body["validator"]["user_id"],
        vcert.body["operator"]["user_id"]
    );
    assert_eq!(vcert.body["validator"]["name"], "officer2");
    // The old draft file still verifies as the draft it is; validating twice is refused.
    verify(&cert_file, &pem_path).ok();
    let r = v.run(
        Some("officer2"),
        &["--json", "certificate", "validate", &cert_id],
    );
    assert_ne!(r.code, 0, "validated twice: {}", r.stdout);
}

/// Certificates name people by the full name an admin gave them (the
/// operator and the validator), with their user IDs; only an admin names
/// people (an officer naming themselves could sign in a colleague's name),
/// a deceptive name is refused and changes nothing, and no name reaches
/// the audit trail.
#[test]
fn certificates_name_people_by_the_full_name_an_admin_gave_them() {
    let v = CliVault::standard();
    add_cli_user(&v, "officer2", "officer", OFFICER2_PASSWORD);
    // Named when added: a new officer keeps the name through the second
    // officer's approval.
    cli::write_private(
        &v.password_file("officer3"),
        b"Ledger-Willow-Cascade-0008\n",
    );
    v.add_user_with("officer3", "officer", &["--full-name", " Ines Duarte "]);
    let name = |who: &str, user: &str, full: &str| {
        v.run(Some(who), &["--json", "user", "name", user, full])
    };
    // The hostile insider: an officer names themselves, a clerk renames the officer.
    for (who, user) in [
        ("officer", "officer"),
        ("clerk", "officer"),
        ("officer", "officer2"),
    ] {
        let r = name(who, user, "Grace Hopper");
        assert_eq!(
            r.code, EXIT_DENIED,
            "{who} named {user}: {}{}",
            r.stdout, r.stderr
        );
    }
    name("admin", "officer", "Maria Santos").ok();
    let r = name("admin", "officer2", "  Dev Patel ");
    r.ok();
    assert_eq!(r.json()["full_name"], "Dev Patel", "{}", r.stdout);
    // A name that would print reversed on the certificate is refused; the
    // one given before stays.
    let r = name("admin", "officer2", "Dev \u{202e}letaP");
    assert_eq!(r.code, EXIT_INVALID_INPUT, "{}{}", r.stdout, r.stderr);
    let r = v.run(Some("admin"), &["--json", "user", "list"]);
    r.ok();
    let users = r.json();
    let full = |u: &str| -> Value {
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["username"] == u)
            .map(|i| i["full_name"].clone())
            .unwrap_or_else(|| panic!("{u} not listed: {users}"))
    };
    assert_eq!(full("officer"), "Maria Santos");
    assert_eq!(full("officer2"), "Dev Patel");
    assert_eq!(full("officer3"), "Ines Duarte");
    assert_eq!(full("clerk"), Value::Null);
    let id_of = |u: &str| {
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["username"] == u)
            .map(|i| i["user_id"].clone())
            .unwrap()
    };

    create_small_collection(&v, "leads");
    let leads = [
        json!({"subject": "L-1", "given_name": GIVEN[0], "family_name": FAMILY[0], "ssn": ssn(650)}),
    ];
    assert_eq!(import_lines(&v, "leads", "leads.jsonl", &leads), 1);
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "query",
            "--collection",
            "leads",
            "--before",
            "2999-01-01",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
        ],
    );
    r.ok();
    let cert_id = r.json()["certificate_id"].as_str().unwrap().to_owned();
    v.run(
        Some("officer2"),
        &["--json", "certificate", "validate", &cert_id],
    )
    .ok();
    let file = v.input.join("named.json");
    v.run(
        Some("auditor"),
        &[
            "certificate",
            "export",
            &cert_id,
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .ok();
    let cert = Certificate::parse(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        cert.body["operator"]["name"], "Maria Santos",
        "{}",
        cert.body
    );
    assert_eq!(cert.body["operator"]["user_id"], id_of("officer"));
    assert_eq!(cert.body["validator"]["name"], "Dev Patel", "{}", cert.body);
    assert_eq!(cert.body["validator"]["user_id"], id_of("officer2"));
    assert!(certificate::check_fields(&cert.body).is_empty());
    // The printable certificate names them too.
    let r = v.run(Some("auditor"), &["certificate", "render", &cert_id]);
    r.ok();
    assert!(r.stdout.contains("Maria Santos") && r.stdout.contains("Dev Patel"));

    // Cleared: the username again; the issued certificate keeps its names.
    v.run(
        Some("admin"),
        &["--json", "user", "name", "officer", "--clear"],
    )
    .ok();
    let r = v.run(Some("officer"), &["--json", "whoami"]);
    r.ok();
    assert_eq!(r.json()["full_name"], Value::Null, "{}", r.stdout);
    let r = v.run(
        Some("auditor"),
        &["--json", "certificate", "show", &cert_id],
    );
    r.ok();
    assert!(r.stdout.contains("Maria Santos"), "{}", r.stdout);

    // The trail: each naming audited with the user's ID, never the name.
    let r = v.run(
        Some("auditor"),
        &["--json", "audit", "log", "--action", "user.name"],
    );
    r.ok();
    let log = r.json();
    let events = log["items"].as_array().unwrap();
    let outcomes: Vec<&str> = events
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "success").count(),
        3,
        "{log}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o != "success").count(),
        1,
        "{log}"
    );
    let r = v.run(Some("auditor"), &["--json", "audit", "log"]);
    r.ok();
    for n in ["Maria", "Santos", "Patel", "Grace Hopper"] {
        assert!(!r.stdout.contains(n), "the trail holds {n:?}");
    }
}

/// A script's dry run, then its disposal with the dry run's `plan`: the
/// disposal destroys exactly what the dry run listed, or nothing. A record
/// imported in between (the scope "before 2999" grows) makes it refuse
/// with exit 13 `preview_stale`, every record still there; a new dry run's
/// plan disposes of all three.
#[test]
fn a_dry_runs_plan_makes_the_disposal_destroy_exactly_what_it_listed() {
    const EXIT_POLICY: i32 = 13;
    let v = CliVault::standard();
    create_small_collection(&v, "leads");
    let lead = |n: usize| json!({"subject": format!("L-{n}"), "given_name": GIVEN[n], "family_name": FAMILY[n], "ssn": ssn(660 + n as u64)});
    assert_eq!(import_lines(&v, "leads", "a.jsonl", &[lead(0), lead(1)]), 2);
    let scope = [
        "--json",
        "dispose",
        "query",
        "--collection",
        "leads",
        "--before",
        "2999-01-01",
    ];
    let dry = |v: &CliVault| {
        let mut args = scope.to_vec();
        args.push("--dry-run");
        let r = v.run(Some("officer"), &args);
        r.ok();
        let out = r.json();
        (
            out["records"].as_u64().unwrap(),
            out["plan"].as_str().unwrap().to_owned(),
        )
    };
    let dispose = |v: &CliVault, plan: &str| {
        let mut args = scope.to_vec();
        args.extend([
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--plan",
            plan,
        ]);
        v.run(Some("officer"), &args)
    };
    let (n, plan) = dry(&v);
    assert_eq!(n, 2);
    assert_eq!(import_lines(&v, "leads", "b.jsonl", &[lead(2)]), 1);
    let r = dispose(&v, &plan);
    assert_eq!(r.code, EXIT_POLICY, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("preview_stale") || r.stderr.contains("changed since the preview"),
        "{}",
        r.stderr
    );
    // A made-up plan is stale too.
    assert_eq!(dispose(&v, &"0".repeat(64)).code, EXIT_POLICY);
    let (n, fresh) = dry(&v);
    assert_eq!(n, 3, "destroyed from a stale plan");
    assert_ne!(fresh, plan);
    let r = dispose(&v, &fresh);
    r.ok();
    let out = r.json();
    assert_eq!(out["records"], 3, "{out}");
    assert_eq!(
        out["plan"],
        fresh.as_str(),
        "it destroyed what the dry run listed"
    );
    assert_eq!(dry(&v).0, 0, "no live lead left");
}

// =====================================================================================
// 6. REQ-DISP-02: the contractor
// =====================================================================================

#[test]
fn contractor_disposes_in_scope_only_and_cosigns() {
    let v = CliVault::standard();
    add_cli_user(&v, "contractor", "contractor", CONTRACTOR_PASSWORD);
    v.import(&cli::examples().join("customers.jsonl")).ok();
    create_small_collection(&v, "staff");
    let staff = [
        json!({"subject": "E-1", "given_name": "Barbara", "family_name": "Liskov", "ssn": ssn(700)}),
        json!({"subject": "E-2", "given_name": "Donald", "family_name": "Knuth", "ssn": ssn(701)}),
    ];
    assert_eq!(import_lines(&v, "staff", "staff.jsonl", &staff), 2);
    let customer_ids = list_ids(&v, "clerk", &["--collection", CUSTOMERS]);
    let staff_ids = list_ids(&v, "clerk", &["--collection", "staff"]);

    // Keys: the contractor generates a pair (no vault needed); admin assigns the scope.
    let key_file = v.secrets.join("contractor.key");
    let r = v.run(
        None,
        &[
            "--json",
            "contractor",
            "keygen",
            "--out",
            key_file.to_str().unwrap(),
        ],
    );
    r.ok();
    let pub_file = PathBuf::from(r.json()["public_key"].as_str().unwrap());
    assert!(pub_file.is_file());
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o077,
        0,
        "private key must be 0600"
    );
    let r = v.run(
        Some("admin"),
        &[
            "--json",
            "contractor",
            "assign",
            "contractor",
            "--collection",
            CUSTOMERS,
            "--public-key",
            pub_file.to_str().unwrap(),
        ],
    );
    r.ok();

    // Reading a record: denied, and audited as denied.
    let r = v.run(
        Some("contractor"),
        &["--json", "record", "get", &customer_ids[0]],
    );
    r.code(EXIT_DENIED);
    assert_eq!(r.error_code(), "permission_denied");
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "audit",
            "log",
            "--actor",
            "contractor",
            "--action",
            "access.denied",
        ],
    );
    r.ok();
    let denied = r.json();
    assert!(
        denied["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "denied"),
        "no denied event for the contractor's read: {denied}"
    );
    // Listing: only the records in scope.
    let mut listed = list_ids(&v, "contractor", &[]);
    listed.sort();
    let mut expected = customer_ids.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the contractor must see exactly the customers records"
    );

    // In scope: disposed.
    let r = v.run(
        Some("contractor"),
        &[
            "--json",
            "dispose",
            "record",
            &customer_ids[1],
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--contractor-org",
            "Shred and Sons",
            "--contract-ref",
            "PO-77-A",
        ],
    );
    r.ok();
    let out = r.json();
    assert_eq!(out["records"], 1, "{out}");
    let cert_id = out["certificate_id"].as_str().unwrap().to_owned();
    // Out of scope: refused, audited, nothing disposed.
    let r = v.run(
        Some("contractor"),
        &["--json", "dispose", "record", &staff_ids[0], "--yes"],
    );
    r.code(EXIT_DENIED);
    assert_eq!(r.error_code(), "permission_denied");
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "audit",
            "log",
            "--actor",
            "contractor",
            "--action",
            "disposal.refused",
        ],
    );
    r.ok();
    let refused = r.json();
    assert!(
        refused["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == staff_ids[0].as_str())
                && e["outcome"] != "success"),
        "the refused out-of-scope disposal is not audited: {refused}"
    );
    let r = v.run(Some("clerk"), &["--json", "record", "get", &staff_ids[0]]);
    r.ok();
    assert_eq!(r.json()["fields"]["family_name"], "Liskov");
    // Custody events of the job are recorded.
    let r = v.run(
        Some("officer"),
        &["--json", "audit", "log", "--action", "custody."],
    );
    r.ok();
    let custody: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for a in ["custody.collected", "custody.disposed", "custody.verified"] {
        assert!(custody.iter().any(|c| c == a), "missing {a} in {custody:?}");
    }

    // A co-signature that is not the contractor's registered key is refused (checked against the registered key).
    let stranger = v.secrets.join("stranger.key");
    v.run(
        None,
        &["contractor", "keygen", "--out", stranger.to_str().unwrap()],
    )
    .ok();
    let r = v.run(
        Some("contractor"),
        &[
            "--json",
            "certificate",
            "cosign",
            &cert_id,
            "--key-file",
            stranger.to_str().unwrap(),
        ],
    );
    assert_ne!(
        r.code, 0,
        "a co-signature with an unregistered key was accepted: {}",
        r.stdout
    );
    // The contractor co-signs; the offline verification shows the co-signature OK.
    let r = v.run(
        Some("contractor"),
        &[
            "--json",
            "certificate",
            "cosign",
            &cert_id,
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["cosigned"], true);
    let f = v.input.join("cert.json");
    v.run(
        Some("officer"),
        &[
            "certificate",
            "export",
            &cert_id,
            "--out",
            f.to_str().unwrap(),
        ],
    )
    .ok();
    let keys = v.input.join("keys");
    v.run(
        Some("officer"),
        &["keys", "export", "--out", keys.to_str().unwrap()],
    )
    .ok();
    let pem = keys.join("certificate.pem");
    let r = offline(&[
        "--json",
        "certificate",
        "verify",
        f.to_str().unwrap(),
        "--key",
        pem.to_str().unwrap(),
    ]);
    r.ok();
    let rep = r.json();
    assert_eq!(rep["ok"], true, "{rep}");
    let cos = rep["cosignatures"].as_array().unwrap();
    assert_eq!(cos.len(), 1, "{rep}");
    assert_eq!(cos[0]["role"], "contractor");
    assert_eq!(cos[0]["ok"], true);
    let r = offline(&[
        "certificate",
        "verify",
        f.to_str().unwrap(),
        "--key",
        pem.to_str().unwrap(),
    ]);
    r.ok();
    assert!(
        r.stdout.contains("contractor co-signature") && r.stdout.contains("OK"),
        "{}",
        r.stdout
    );
    let cert = Certificate::parse(&fs::read_to_string(&f).unwrap()).unwrap();
    assert!(
        certificate::check_fields(&cert.body).is_empty(),
        "{:?}",
        certificate::check_fields(&cert.body)
    );
    let contractor = &cert.body["parties"]["contractor"];
    assert_eq!(contractor["name"], "contractor", "{contractor}");
    assert_eq!(contractor["contract_reference"], "PO-77-A", "{contractor}");
}

// =====================================================================================
// 7. REQ-DISP-06: retention and legal holds
// =====================================================================================

fn ids_of(o: &DisposalOutcome) -> Vec<RecordId> {
    let mut v = o.records.clone();
    v.sort();
    v
}

#[test]
fn retention_due_and_legal_hold_exclusions() {
    let tmp = temp();
    let fx = small_vault(&tmp.path().join("vault"));
    let recs = store_records(&fx, 4, 2);
    let mut all: Vec<RecordId> = recs.iter().map(|r| r.id).collect();
    all.sort();
    fx.vault
        .set_retention(
            &fx.officer,
            CUSTOMERS,
            RetentionPolicy {
                days: 30,
                from_updated: false,
            },
        )
        .unwrap();
    assert_eq!(fx.vault.retention(&fx.auditor).unwrap()[CUSTOMERS].days, 30);

    // Not yet due.
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert!(due.records.is_empty(), "nothing is due at t0: {due:?}");
    fx.clock.advance(29 * DAY_MS);
    assert!(
        fx.vault
            .retention_due(&fx.officer)
            .unwrap()
            .records
            .is_empty(),
        "nothing is due at t0+29d"
    );
    // t0 + 31 days: all due; a dry run changes nothing.
    fx.clock.advance(2 * DAY_MS);
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert_eq!(ids_of(&due), all);
    assert!(due.excluded.is_empty());
    assert_eq!(due.subjects, 4);
    assert!(due.certificate_id.is_none() && due.disposal_id.is_none());

    // A hold on one subject: its records are excluded, with the reason.
    let held_subject = recs[2].subject;
    let held: Vec<RecordId> = recs
        .iter()
        .filter(|r| r.subject == held_subject)
        .map(|r| r.id)
        .collect();
    let reason = "pending litigation, matter M-17";
    fx.vault
        .add_hold(&fx.officer, None, Some(held_subject), reason)
        .unwrap();
    assert_eq!(fx.vault.holds(&fx.auditor).unwrap().len(), 1);
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert_eq!(due.records.len(), 6, "{due:?}");
    let mut excluded: Vec<RecordId> = due.excluded.iter().map(|(id, _)| *id).collect();
    excluded.sort();
    let mut held_sorted = held.clone();
    held_sorted.sort();
    assert_eq!(excluded, held_sorted);
    for (_, why) in &due.excluded {
        assert!(
            why.contains("legal hold") && why.contains(reason),
            "exclusion reason: {why}"
        );
    }
    // Disposing a held record on its own is refused as a legal hold.
    match fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(held[0])))
    {
        Err(Error::LegalHold) => {}
        other => panic!("disposing a held record must be refused with LegalHold, got {other:?}"),
    }
    let refused = fx
        .vault
        .audit_events(
            &fx.auditor,
            &EventFilter {
                action_prefix: Some("disposal.refused".into()),
                ..EventFilter::default()
            },
        )
        .unwrap();
    assert!(
        refused
            .iter()
            .any(|e| e.targets.contains(&held[0].to_string())),
        "refusal not audited: {refused:?}"
    );

    // The retention run disposes of the rest; the certificate lists the exclusions.
    let run = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::PastRetention))
        .unwrap();
    assert_eq!(run.records.len(), 6);
    assert_eq!(run.excluded.len(), 2);
    let cert_id = run.certificate_id.unwrap();
    let cert = fx.vault.certificate(&fx.officer, cert_id).unwrap();
    assert!(certificate::verify(&cert, &fx.vault.certificate_public_key()).ok());
    assert_eq!(cert.body["target"]["record_count"], 6);
    assert_eq!(cert.body["target"]["subject_count"], 3);
    let exclusions = cert.body["sanitization"]["exclusions"].as_array().unwrap();
    assert_eq!(exclusions.len(), 2, "{exclusions:?}");
    for h in &held {
        let e = exclusions
            .iter()
            .find(|e| e["record_id"] == h.to_string().as_str())
            .unwrap_or_else(|| panic!("held record {h} not in exclusions {exclusions:?}"));
        assert!(e["reason"].as_str().unwrap().contains("legal hold"), "{e}");
    }
    for r in &recs {
        let got = fx.vault.get_record(&fx.clerk, r.id, &[], None);
        if held.contains(&r.id) {
            assert_readable(&fx.vault, &fx.clerk, r);
        } else {
            assert!(
                matches!(
                    got,
                    Err(Error::Disposed {
                        certificate: Some(_)
                    })
                ),
                "{} should be disposed: {got:?}",
                r.id
            );
        }
    }
    // Only the held records stay due.
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert!(due.records.is_empty(), "{due:?}");
    assert_eq!(due.excluded.len(), 2);

    // Lift the hold: the next run disposes of them.
    fx.vault
        .remove_hold(&fx.officer, None, Some(held_subject))
        .unwrap();
    assert!(fx.vault.holds(&fx.auditor).unwrap().is_empty());
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert_eq!(ids_of(&due), held_sorted);
    assert!(due.excluded.is_empty());
    let run = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::PastRetention))
        .unwrap();
    assert_eq!(ids_of(&run), held_sorted);
    let cert = fx
        .vault
        .certificate(&fx.officer, run.certificate_id.unwrap())
        .unwrap();
    assert!(
        cert.body["sanitization"]["exclusions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for r in &recs {
        assert!(matches!(
            fx.vault.get_record(&fx.clerk, r.id, &[], None),
            Err(Error::Disposed { .. })
        ));
    }
    let due = fx.vault.retention_due(&fx.officer).unwrap();
    assert!(due.records.is_empty() && due.excluded.is_empty(), "{due:?}");
    let batches = fx.vault.disposals(&fx.officer).unwrap();
    assert_eq!(batches.len(), 2);
    assert!(
        batches
            .iter()
            .all(|b| b.step == "complete" && b.failed.is_none())
    );
    assert!(fx.vault.audit_verify(&fx.auditor).unwrap().ok());
    // Role checks: a clerk may not place holds or dispose.
    assert!(matches!(
        fx.vault
            .add_hold(&fx.clerk, Some(recs[0].id), None, "curious"),
        Err(Error::PermissionDenied(_))
    ));
    close(fx);
}

// =====================================================================================
// 5c. Massachusetts residents counted from the records; the interactive prompt
// =====================================================================================

/// `members`: names, an SSN and the residence state of each record.
fn members_schema_json() -> &'static str {
    r#"{"purpose": "loyalty members", "fields": [
        {"name": "given_name", "type": "given_name", "required": true, "purpose": "identify"},
        {"name": "family_name", "type": "family_name", "required": true, "purpose": "identify"},
        {"name": "ssn", "type": "ssn", "required": false, "purpose": "tax reporting"},
        {"name": "state", "type": "residence_state", "required": false, "purpose": "notices"}]}"#
}

/// The certificate counts the Massachusetts residents among the subjects it
/// destroyed, read from each record (not from the schema's default) under
/// the batch's locks, so a correction racing the disposal is counted as
/// the version that was destroyed: the count is that of the last correction
/// that succeeded.
#[test]
fn certificates_count_the_massachusetts_residents_of_the_records_they_destroyed() {
    let tmp = temp();
    let fx = small_vault(&tmp.path().join("v"));
    let v = &fx.vault;
    let schema = vault_core::schema::Schema::from_json(members_schema_json()).expect("schema");
    v.create_collection(&fx.admin, "members", &schema)
        .expect("collection");
    let member = |n: usize, state: Option<&str>| {
        let mut b =
            json!({"given_name": GIVEN[n], "family_name": FAMILY[n], "ssn": ssn(700 + n as u64)});
        if let Some(s) = state {
            b["state"] = json!(s);
        }
        b
    };
    let subj = |n: usize| v.resolve_subject(&format!("M-{n}")).expect("subject");
    // 0: MA (lower case), 1: NH, 2: no state (the default: MA), 3: NY with
    // two records, 4: the one whose state a clerk keeps changing.
    let mut ids = vec![
        v.put_record(&fx.clerk, "members", subj(0), &member(0, Some("ma")))
            .unwrap(),
        v.put_record(&fx.clerk, "members", subj(1), &member(1, Some("NH")))
            .unwrap(),
        v.put_record(&fx.clerk, "members", subj(2), &member(2, None))
            .unwrap(),
        v.put_record(&fx.clerk, "members", subj(3), &member(3, Some("NY")))
            .unwrap(),
        v.put_record(&fx.clerk, "members", subj(3), &member(3, Some("NY")))
            .unwrap(),
    ];
    // 5: two records that disagree (NH and MA): a resident, as the
    // incident report counts a subject any of whose records says MA.
    for state in ["NH", "MA"] {
        ids.push(
            v.put_record(&fx.clerk, "members", subj(5), &member(5, Some(state)))
                .unwrap(),
        );
    }
    let flipper = v
        .put_record(&fx.clerk, "members", subj(4), &member(4, Some("NH")))
        .unwrap();
    ids.push(flipper);
    let scope = || DisposalScope::Records(ids.clone());
    let dry = v
        .dispose(
            &fx.officer,
            &DisposalRequest {
                dry_run: true,
                ..request(scope())
            },
        )
        .expect("dry run");
    assert_eq!(
        (dry.records.len(), dry.subjects, dry.ma_residents),
        (8, 6, Some(3))
    );

    // A clerk flips subject 4 between MA and NH while the disposal runs.
    let last_ok = std::sync::Mutex::new(Some("NH"));
    let outcome = std::thread::scope(|t| {
        let flips = t.spawn(|| {
            for i in 0.. {
                let state = if i % 2 == 0 { "MA" } else { "NH" };
                match v.update_record(&fx.clerk, flipper, &member(4, Some(state))) {
                    Ok(_) => *last_ok.lock().unwrap() = Some(state),
                    Err(e) if e.code() == "disposed" => break,
                    Err(e) if e.code() == "disposal_in_progress" => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("correction: {e}"),
                }
                if i > 100_000 {
                    panic!("the disposal never ran");
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        let o = v.dispose(&fx.officer, &request(scope())).expect("dispose");
        flips.join().expect("flipper");
        o
    });
    let flipped_ma = *last_ok.lock().unwrap() == Some("MA");
    let expected = 3 + u64::from(flipped_ma);
    assert_eq!(
        outcome.ma_residents,
        Some(expected),
        "the count is the destroyed version's residence (last correction {:?})",
        last_ok.lock().unwrap()
    );
    let cert = v
        .certificate(&fx.officer, outcome.certificate_id.expect("certificate"))
        .expect("certificate");
    assert_eq!(cert.body["target"]["ma_resident_count"], json!(expected));
    assert_eq!(cert.body["target"]["subject_count"], json!(6));
    assert!(
        cert.body["target"]["ma_resident_basis"]
            .as_str()
            .is_some_and(|b| b.starts_with("read from each record (")),
        "{}",
        cert.body["target"]
    );
    let html = certificate::render_html(&cert, certificate::Check::Carried);
    assert!(
        html.contains("Massachusetts residents") && html.contains(&format!(">{expected}<")),
        "the one-page summary shows the count"
    );
    // A preview of more records than a page can decrypt in time leaves the
    // count to the disposal; one at the limit counts them all.
    let limit = vault_core::vault::PREVIEW_RESIDENCE_MAX;
    let many: Vec<RecordId> = (0..=limit)
        .map(|n| {
            let mut b = member(n % 8, Some("MA"));
            b.as_object_mut().unwrap().remove("ssn");
            v.put_record(&fx.clerk, "members", subj(100 + n), &b)
                .unwrap()
        })
        .collect();
    let preview = |ids: &[RecordId]| {
        v.dispose(
            &fx.officer,
            &DisposalRequest {
                dry_run: true,
                ..request(DisposalScope::Records(ids.to_vec()))
            },
        )
        .expect("dry run")
        .ma_residents
    };
    assert_eq!(preview(&many), None);
    assert_eq!(preview(&many[..limit]), Some(limit as u64));
}

/// A command run on a pseudo-terminal (util-linux `script`, essential on
/// Debian), so the CLI asks its questions as it does a person at a desk.
struct OnTerminal {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(c: &Command) -> OnTerminal {
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let line: Vec<String> = std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(quote)
            .collect();
        let mut t = Command::new("script");
        t.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in c.get_envs() {
            match v {
                Some(v) => t.env(k, v),
                None => t.env_remove(k),
            };
        }
        let mut child = t.spawn().expect("script (util-linux) runs");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal { child, stdin, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace("\r\n", "\n")
    }

    /// Waits for the question; returns the terminal's text so far.
    fn question(&self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let t = self.text();
            if t.contains("Type 'yes'") {
                return t;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no question on the terminal:\n{}", self.text());
    }

    /// Types `answer` and waits for the command to end: (exit code, text).
    fn answer(mut self, answer: &str) -> (i32, String) {
        std::io::Write::write_all(&mut self.stdin, format!("{answer}\n").as_bytes()).expect("type");
        let status = self.child.wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
        (status.code().unwrap_or(-1), self.text())
    }
}

/// A person at a terminal is asked before a disposal with what it would
/// destroy (records, subjects, Massachusetts residents, held records), and
/// what they said yes to is what is destroyed: a record a clerk adds on the
/// server while the question waits makes the disposal refuse (exit 13)
/// rather than destroy a record nobody was shown.
#[test]
fn the_disposal_question_shows_its_counts_and_destroys_only_what_it_showed() {
    const EXIT_POLICY: i32 = 13;
    let v = CliVault::standard();
    let schema = v.input_file("members.schema.json", members_schema_json());
    v.run(
        Some("admin"),
        &[
            "--json",
            "collection",
            "create",
            "members",
            "--schema",
            schema.to_str().unwrap(),
        ],
    )
    .ok();
    let member = |n: usize, state: Option<&str>| {
        let mut b = json!({"subject": format!("M-{n}"), "given_name": GIVEN[n], "family_name": FAMILY[n], "ssn": ssn(720 + n as u64)});
        if let Some(s) = state {
            b["state"] = json!(s);
        }
        b
    };
    assert_eq!(
        import_lines(
            &v,
            "members",
            "a.jsonl",
            &[
                member(0, Some("MA")),
                member(1, Some("NH")),
                member(2, None)
            ]
        ),
        3
    );
    let scope = [
        "dispose",
        "query",
        "--collection",
        "members",
        "--before",
        "2999-01-01",
        "--data-owner",
        "Example Retail LLC",
    ];

    // Locally: the question names the counts; "no" destroys nothing.
    let mut c = v.user_command(Some("officer"), &scope);
    c.stdin(Stdio::inherit());
    let t = OnTerminal::start(&c);
    let q = t.question();
    assert!(
        q.contains("3 record(s) of 3 subject(s), 2 of them Massachusetts resident(s); 0 record(s) left out (held, or in an unfinished batch)"),
        "{q}"
    );
    let (code, text) = t.answer("no");
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("not confirmed"), "{text}");
    let mut dry = scope.to_vec();
    dry.extend(["--json", "--dry-run"]);
    assert_eq!(
        v.run(Some("officer"), &dry).json()["records"],
        3,
        "nothing destroyed"
    );

    // Through the server: a record added while the question waits.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("vault");
    cli::copy_tree(&v.dir, &copy);
    let srv = crate::server::start_on(dir, copy, cli::PASSPHRASE, &[]);
    let home = tempfile::tempdir().expect("home");
    let remote = |user: &str, args: &[&str]| {
        let mut c = v.user_command(Some(user), args);
        c.env_remove("PIVAULT_DIR")
            .env_remove("PIVAULT_PASSPHRASE_FILE")
            .env("PIVAULT_SERVER", &srv.base)
            .env("PIVAULT_CA_CERT", &srv.cert)
            .env("HOME", home.path());
        c
    };
    for u in ["officer", "clerk"] {
        v.exec(remote(u, &["--json", "login"]), "login").ok();
    }
    let mut on_terminal = scope.to_vec();
    on_terminal.insert(0, "--json");
    let mut c = remote("officer", &on_terminal);
    c.stdin(Stdio::inherit());
    let t = OnTerminal::start(&c);
    let q = t.question();
    assert!(q.contains("3 record(s) of 3 subject(s), 2 of them"), "{q}");
    let f = v.input_file("b.jsonl", &format!("{}\n", member(3, Some("MA"))));
    let added = v.exec(
        remote(
            "clerk",
            &["--json", "record", "import", "members", f.to_str().unwrap()],
        ),
        "import",
    );
    added.ok();
    let (code, text) = t.answer("yes");
    assert_eq!(code, EXIT_POLICY, "{text}");
    assert!(text.contains("preview_stale"), "{text}");
    let mut dry_remote = on_terminal.clone();
    dry_remote.push("--dry-run");
    let d = v.exec(remote("officer", &dry_remote), "dry run");
    assert_eq!(
        d.json()["records"],
        4,
        "nothing destroyed after the refusal"
    );

    // Asked again, the question shows the fourth record; yes destroys all four.
    let t = OnTerminal::start(&c);
    let q = t.question();
    assert!(
        q.contains("4 record(s) of 4 subject(s), 3 of them Massachusetts resident(s)"),
        "{q}"
    );
    let (code, text) = t.answer("yes");
    assert_eq!(code, 0, "{text}");
    let json_start = text.find("{\"").expect("the outcome");
    let outcome: Value = serde_json::Deserializer::from_str(&text[json_start..])
        .into_iter()
        .next()
        .expect("one document")
        .expect("JSON");
    assert_eq!(
        (&outcome["records"], &outcome["ma_residents"]),
        (&json!(4), &json!(3)),
        "{outcome}"
    );
    assert_eq!(
        v.exec(remote("officer", &dry_remote), "dry run").json()["records"],
        0
    );
}
