//! The audit trail on the records cluster (issue 16): a vault whose
//! records are on the cluster keeps its trail there, in rows only the
//! database's `pivault_audit` functions write (see
//! `vault-core/src/audit/cluster.rs`). Needs the cluster of
//! `scripts/cluster.sh` and runs one at a time with it. The vault's own
//! role attacking its trail is in `cluster_hosting.rs`, with the other
//! hosted vault's role.

use std::path::Path;
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use vault_core::audit::{Anchors, AuditLog, Channel, EventFilter, NewEvent, Outcome};
use vault_core::ids::VaultId;
use vault_core::keystore::postgres::PgConfig;
use vault_core::keystore::provider;

use crate::cluster::{cluster, psql_in, serial};
use crate::common;

/// Makes `vault`'s records schema as the fixtures' role, as a vault's
/// first open does: a trail belongs to the role that owns it.
fn records_schema(cfg: &PgConfig, vault: VaultId) {
    let mut c = provider::connect_primary(cfg).unwrap();
    c.batch_execute(&format!(
        "CREATE SCHEMA pr_{}",
        hex::encode(vault.as_bytes())
    ))
    .unwrap();
}

/// A vault ID whose records schema the fixtures' role owns, its audit
/// signing key, and a directory for its (absent) trail in files.
fn new_trail() -> (PgConfig, VaultId, SigningKey, tempfile::TempDir) {
    let cfg = common::cluster_records();
    let vault = VaultId::new();
    records_schema(&cfg, vault);
    (cfg, vault, signing_key(), tempfile::tempdir().unwrap())
}

fn signing_key() -> SigningKey {
    let mut seed = [0u8; 32];
    vault_core::crypto::fill_random(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// An event naming its writer and number (IDs only, like every event).
fn event(writer: usize, n: usize) -> NewEvent {
    let mut ev = NewEvent::new(
        common::T0 + n as i64,
        None,
        Channel::System,
        "test.append",
        Outcome::Success,
    );
    ev.targets = vec![format!("w{writer}-{n}")];
    ev
}

fn open(cfg: &PgConfig, vault: VaultId, dir: &Path, key: &SigningKey) -> AuditLog {
    AuditLog::open_on_cluster(cfg.clone(), vault, dir, key.clone(), true).unwrap()
}

/// Four writers on one trail, each with a log of its own as four
/// processes on four machines would have (the vault's lock keeps a second
/// process out; this is what holds if one got in, and what several
/// servers in front of one vault will rely on). The database hands out
/// each sequence number once: a writer whose view is stale is refused and
/// reopens, so the chain never forks, and every acknowledged event is in
/// the trail at the number it was acknowledged with. The automatic
/// checkpoints, written by whichever writer reaches them, chain too: the
/// database refuses one whose `prev` or head is stale.
#[test]
fn writers_racing_on_one_trail_on_the_cluster_cannot_fork_it_and_lose_no_acknowledged_event() {
    let _one = serial();
    let (cfg, vault, key, tmp) = new_trail();
    let dir = tmp.path().join("audit");
    const WRITERS: usize = 4;
    const EACH: usize = 100;
    let acked: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let refused = Mutex::new(0u32);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (cfg, key, dir, acked, refused) = (&cfg, &key, &dir, &acked, &refused);
            s.spawn(move || {
                let mut log = open(cfg, vault, dir, key);
                let mut n = 0;
                while n < EACH {
                    match log.append(event(w, n)) {
                        Ok(seq) => {
                            acked.lock().unwrap().push((seq, format!("w{w}-{n}")));
                            n += 1;
                        }
                        Err(vault_core::Error::AuditUnavailable(_)) => {
                            *refused.lock().unwrap() += 1;
                            log = open(cfg, vault, dir, key);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let mut log = open(&cfg, vault, &dir, &key);
    let events = log.events(&EventFilter::default()).unwrap();
    assert_eq!(
        events.len(),
        WRITERS * EACH,
        "one event per acknowledgement"
    );
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1);
    }
    let mut acked = acked.into_inner().unwrap();
    acked.sort();
    for (seq, target) in &acked {
        assert_eq!(
            &events[*seq as usize - 1].targets,
            &vec![target.clone()],
            "event {seq} is the one acknowledged with that number"
        );
    }
    let refused = refused.into_inner().unwrap();
    assert!(
        refused > 0,
        "the writers never raced: no stale append refused"
    );
    log.checkpoint(common::T0 + 10_000).unwrap();
    let report = log
        .reader()
        .verify_anchored(&key.verifying_key(), &Anchors::default())
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, (WRITERS * EACH) as u64);
    assert!(report.checkpoints >= 2, "{report:?}");
    eprintln!("{refused} stale appends refused; {report:?}");
}

/// A vault whose records went to the cluster with an earlier build kept
/// its trail in files: at open the trail moves onto the cluster whole (the
/// same bytes, so the chain and its checkpoints still verify), the
/// directory is kept as `audit.moved`, and appending goes on from its
/// head. A second open moves nothing again.
#[test]
fn a_trail_in_files_moves_onto_the_cluster_whole_at_open() {
    let _one = serial();
    let (cfg, vault, key, tmp) = new_trail();
    let dir = tmp.path().join("audit");
    let before = {
        let mut files = AuditLog::open(&dir, key.clone(), true).unwrap();
        for n in 0..300 {
            files.append(event(0, n)).unwrap();
        }
        files.checkpoint(common::T0 + 1_000).unwrap();
        files.append(event(0, 300)).unwrap();
        files.events(&EventFilter::default()).unwrap()
    };
    let mut log = open(&cfg, vault, &dir, &key);
    assert!(!dir.exists(), "the files are no longer the trail");
    assert!(tmp.path().join("audit.moved").exists(), "kept as evidence");
    assert_eq!(log.head_seq(), 301);
    assert_eq!(log.events(&EventFilter::default()).unwrap(), before);
    assert_eq!(log.append(event(1, 0)).unwrap(), 302);
    log.checkpoint(common::T0 + 2_000).unwrap();
    drop(log);
    let log = open(&cfg, vault, &dir, &key);
    assert_eq!(log.head_seq(), 302, "moved once");
    let report = log
        .reader()
        .verify_anchored(&key.verifying_key(), &Anchors::default())
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.events, report.checkpoints), (302, 3), "{report:?}");
}

/// A records database set up by a build before the trails were there (no
/// `pivault_audit`): the vault's trail cannot be opened, and the refusal
/// names the script that adds them, not a bare SQL error.
#[test]
fn a_records_database_without_the_audit_trails_is_refused_naming_the_script() {
    let _one = serial();
    let c = cluster();
    let primary = c
        .members
        .iter()
        .find(|m| psql_in(m, "postgres", "SELECT pg_is_in_recovery()").as_deref() == Some("f"))
        .expect("a primary")
        .clone();
    /// Puts the schema back whatever happens to the test.
    struct Back(String);
    impl Drop for Back {
        fn drop(&mut self) {
            psql_in(
                &self.0,
                "pivault_records",
                "ALTER SCHEMA pivault_audit_away RENAME TO pivault_audit",
            )
            .expect("the audit schema put back");
        }
    }
    let (cfg, vault, key, tmp) = new_trail();
    psql_in(
        &primary,
        "pivault_records",
        "ALTER SCHEMA pivault_audit RENAME TO pivault_audit_away",
    )
    .expect("the audit schema moved away");
    let _back = Back(primary);
    let r = AuditLog::open_on_cluster(cfg, vault, &tmp.path().join("audit"), key, true);
    match r {
        Err(vault_core::Error::AuditUnavailable(m)) => {
            assert!(m.contains("scripts/records-audit.sql"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
