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

use crate::cluster::{cluster, primary_member, psql_in, serial};
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

/// [`open`], then the events after the last checkpoint disowned, as a
/// vault's open does before it may sign a checkpoint over them; opened
/// again while another writer takes the number first.
fn open_disowning(cfg: &PgConfig, vault: VaultId, dir: &Path, key: &SigningKey) -> AuditLog {
    loop {
        let mut log = open(cfg, vault, dir, key);
        match log.disown_tail(common::T0) {
            Ok(()) => return log,
            Err(vault_core::Error::AuditUnavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Four writers on one trail, each with a log of its own as four
/// processes on four machines would have (the vault's lock keeps a second
/// process out; this is what holds if one got in, and what several
/// servers in front of one vault will rely on). The database hands out
/// each sequence number once: a writer whose view is stale is refused and
/// reopens, so the chain never forks, and every acknowledged event is in
/// the trail at the number it was acknowledged with. The automatic
/// checkpoints, written by whichever writer reaches them, chain too: the
/// database refuses one whose `prev` or head is stale. Each writer, as a
/// vault does, disowns the other writers' events it finds after the last
/// checkpoint before it may sign one.
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
                let mut log = open_disowning(cfg, vault, dir, key);
                let mut n = 0;
                while n < EACH {
                    match log.append(event(w, n)) {
                        Ok(seq) => {
                            acked.lock().unwrap().push((seq, format!("w{w}-{n}")));
                            n += 1;
                        }
                        Err(vault_core::Error::AuditUnavailable(_)) => {
                            *refused.lock().unwrap() += 1;
                            log = open_disowning(cfg, vault, dir, key);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let mut log = open_disowning(&cfg, vault, &dir, &key);
    let events = log.events(&EventFilter::default()).unwrap();
    let disowning = events
        .iter()
        .filter(|e| e.action == vault_core::audit::UNVOUCHED_ACTION)
        .count();
    assert_eq!(
        events.len() - disowning,
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
    assert_eq!(report.events, (WRITERS * EACH + disowning) as u64);
    assert!(report.checkpoints >= 2, "{report:?}");
    eprintln!("{refused} stale appends refused; {report:?}");
}

/// Without `sync` a vault's events commit lazily, but only a record's may:
/// a record write whose event a failover lost is in the write journal
/// (the next holder reconciles it) and a read changed nothing, while a
/// user disabled, a hold placed or a role changed has no journal, and its
/// event lost with the primary and the writer would leave the change
/// standing unaudited. The append itself makes such an event's commit
/// synchronous: each line, sent again as a retry in a transaction that
/// asked for a lazy commit, leaves the commit `on` for `user.disable` and
/// `off` for `record.read`.
#[test]
fn only_a_records_events_are_committed_lazily() {
    let _one = serial();
    let _c = cluster();
    let (cfg, vault, key, tmp) = new_trail();
    let mut log =
        AuditLog::open_on_cluster(cfg.clone(), vault, &tmp.path().join("audit"), key, false)
            .unwrap();
    let v = hex::encode(vault.as_bytes());
    let mut c = provider::connect_primary(&cfg).unwrap();
    for (action, commit) in [
        ("user.disable", "on"),
        ("record.read", "off"),
        ("legal_hold.add", "on"),
        ("record.update", "off"),
    ] {
        let mut ev = NewEvent::new(common::T0, None, Channel::System, action, Outcome::Success);
        ev.targets = vec!["t".into()];
        let seq = log.append(ev).unwrap();
        let line: Vec<u8> = c
            .query_one(
                "SELECT line FROM pivault_audit.events($1::text::uuid, $2, $2)",
                &[&v, &(seq as i64)],
            )
            .unwrap()
            .get(0);
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .unwrap();
        tx.query_one(
            "SELECT pivault_audit.append($1::text::uuid, $2, $3)",
            &[&v, &(seq as i64), &vec![line]],
        )
        .unwrap();
        let set: String = tx
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .unwrap()
            .get(0);
        tx.rollback().unwrap();
        assert_eq!(set, commit, "{action}");
    }
}

/// A trail belongs to its role, not to the role's name: a vault's role
/// dropped (a deleted vault's) and made again under the same name (the
/// provider's operator makes `pvr_` roles, and can give one a password it
/// knows) with the vault's records schema again, neither reads the old
/// trail nor takes its next number, nor opens it.
#[test]
fn a_role_made_again_under_a_trails_owners_name_is_not_its_owner() {
    let _one = serial();
    let c = cluster();
    let primary = primary_member(&c);
    let su = |q: &str| psql_in(&primary, "pivault_records", q).expect("the superuser's SQL");
    let vault = VaultId::new();
    let v = hex::encode(vault.as_bytes());
    let mut suffix = [0u8; 10];
    vault_core::crypto::fill_random(&mut suffix);
    let role = format!("pvr_{}", hex::encode(suffix));
    let tmp = tempfile::tempdir().unwrap();
    // The role, with a password of the test's, and the vault's schema.
    let make = |pw: &str| {
        su(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{pw}' IN ROLE pivault_vaults; \
             CREATE SCHEMA pr_{v} AUTHORIZATION {role}"
        ));
        let file = tmp.path().join(format!("{pw}.pw"));
        crate::cli::write_private(&file, pw.as_bytes());
        PgConfig {
            user: role.clone(),
            password_file: file,
            ..common::cluster_records()
        }
    };
    let drop_role = || {
        su(&format!(
            "DROP SCHEMA IF EXISTS pr_{v} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
    };
    let first = make("first-Role-pw-81");
    let key = signing_key();
    let dir = tmp.path().join("audit");
    {
        let mut log = open(&first, vault, &dir, &key);
        log.append(event(0, 0)).unwrap();
        log.append(event(0, 1)).unwrap();
    }
    drop_role();
    let again = make("again-Role-pw-82");
    let mut c = provider::connect_primary(&again).unwrap();
    for sql in [
        format!("SELECT * FROM pivault_audit.events('{v}', 1, 10)"),
        format!("SELECT * FROM pivault_audit.last_event('{v}')"),
        format!("SELECT pivault_audit.append('{v}', 3, ARRAY['\\x00'::bytea])"),
    ] {
        let e = c.simple_query(&sql).expect_err(&sql);
        assert_eq!(
            e.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {e}"
        );
    }
    assert!(
        AuditLog::open_on_cluster(again.clone(), vault, &tmp.path().join("again"), key, true)
            .is_err(),
        "the trail opened for the role made again"
    );
    drop(c);
    drop_role();
    // The trail is as it was: two events.
    assert_eq!(
        su(&format!(
            "SELECT count(*) FROM pivault_audit.events WHERE vault = '{v}'"
        )),
        "2"
    );
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
    assert_eq!(
        log.undisowned(),
        Some((301, 301)),
        "the event after the files' last checkpoint"
    );
    log.disown_tail(common::T0 + 1_500).unwrap();
    assert_eq!(log.append(event(1, 0)).unwrap(), 303);
    log.checkpoint(common::T0 + 2_000).unwrap();
    drop(log);
    let log = open(&cfg, vault, &dir, &key);
    assert_eq!(log.head_seq(), 303, "moved once");
    let report = log
        .reader()
        .verify_anchored(&key.verifying_key(), &Anchors::default())
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.events, report.checkpoints), (303, 3), "{report:?}");
}

/// What a new primary holds after the old one died with lazily committed
/// events not yet on a standby: the trail of `vault` cut back to event
/// `keep`. Done as the superuser, the only role that can.
fn lose_events_after(vault: VaultId, keep: u64) {
    let v = hex::encode(vault.as_bytes());
    psql_in(
        &primary_member(&cluster()),
        "pivault_records",
        &format!(
            "DELETE FROM pivault_audit.events WHERE vault = '{v}' AND seq > {keep};
             UPDATE pivault_audit.trails SET head = {keep} WHERE vault = '{v}'"
        ),
    )
    .expect("the trail cut back");
}

/// A vault without `sync` commits its events lazily; a failover can lose
/// the last of them (CI saw it: `audit event 33 would leave a gap after
/// 31` in the middle of a disposal). The process still holds them, and
/// sends them again, the same bytes, before its next event or checkpoint:
/// nothing it acknowledged is missing, the chain and its checkpoints
/// verify, and the audited operation is not refused. A second writer that
/// took the lost numbers in the meantime wins them, and the first is
/// refused, not forked.
#[test]
fn events_a_failover_lost_are_sent_again_by_the_process_that_acknowledged_them() {
    let _one = serial();
    let (cfg, vault, key, tmp) = new_trail();
    let dir = tmp.path().join("audit");
    let lazy = |cfg: &PgConfig| {
        AuditLog::open_on_cluster(cfg.clone(), vault, &dir, key.clone(), false).unwrap()
    };
    let mut log = lazy(&cfg);
    for n in 0..10 {
        log.append(event(0, n)).unwrap();
    }
    let acked = log.events(&EventFilter::default()).unwrap();
    lose_events_after(vault, 6);
    assert_eq!(log.append(event(0, 10)).unwrap(), 11, "the next event");
    let after = log.events(&EventFilter::default()).unwrap();
    assert_eq!(after.len(), 11);
    assert_eq!(&after[..10], &acked[..], "the lost events, sent again");

    // Lost just before a checkpoint: the checkpoint sends them too.
    lose_events_after(vault, 9);
    log.checkpoint(common::T0 + 1_000).unwrap();
    assert_eq!(log.events(&EventFilter::default()).unwrap(), after);

    // After a checkpoint nothing is unsure; lost again later, the events
    // since it come back.
    for n in 11..20 {
        log.append(event(0, n)).unwrap();
    }
    lose_events_after(vault, 11);
    log.append(event(0, 20)).unwrap();
    let report = log
        .reader()
        .verify_anchored(&key.verifying_key(), &Anchors::default())
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.events, report.checkpoints), (21, 1), "{report:?}");

    // A second writer took number 21 after the loss: the first cannot
    // send its own 21 again over it, and is refused.
    lose_events_after(vault, 20);
    let mut other = lazy(&cfg);
    assert_eq!(other.append(event(1, 0)).unwrap(), 21);
    assert!(matches!(
        log.append(event(0, 21)),
        Err(vault_core::Error::AuditUnavailable(_))
    ));
    let report = other
        .reader()
        .verify_anchored(&key.verifying_key(), &Anchors::default())
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 21, "{report:?}");
}

/// Something of the records database moved away by the superuser (`away`
/// run on the primary) and put back (`back`) whatever happens to the test.
struct Away(String, &'static str);

impl Away {
    fn moved(away: &str, back: &'static str) -> Away {
        let primary = primary_member(&cluster());
        psql_in(&primary, "pivault_records", away).expect("moved away");
        Away(primary, back)
    }
}

impl Drop for Away {
    fn drop(&mut self) {
        psql_in(&self.0, "pivault_records", self.1).expect("put back");
    }
}

/// A records database set up by a build before the trails were there (no
/// `pivault_audit`): the vault's trail cannot be opened, and the refusal
/// names the script that adds them, not a bare SQL error.
#[test]
fn a_records_database_without_the_audit_trails_is_refused_naming_the_script() {
    let _one = serial();
    let (cfg, vault, key, tmp) = new_trail();
    let _back = Away::moved(
        "ALTER SCHEMA pivault_audit RENAME TO pivault_audit_away",
        "ALTER SCHEMA pivault_audit_away RENAME TO pivault_audit",
    );
    let r = AuditLog::open_on_cluster(cfg, vault, &tmp.path().join("audit"), key, true);
    match r {
        Err(vault_core::Error::AuditUnavailable(m)) => {
            assert!(m.contains("scripts/records-audit.sql"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// The trails there but not their `append` (one of the two scripts run
/// without the other): the trail is refused at open naming the script that
/// adds it, not left to fail at the first event with a bare SQL error.
#[test]
fn a_records_database_without_the_append_function_is_refused_naming_its_script() {
    let _one = serial();
    let (cfg, vault, key, tmp) = new_trail();
    let back = Away::moved(
        "ALTER FUNCTION pivault_audit.append(uuid, bigint, bytea[]) RENAME TO append_away",
        "ALTER FUNCTION pivault_audit.append_away(uuid, bigint, bytea[]) RENAME TO append",
    );
    let r = AuditLog::open_on_cluster(
        cfg.clone(),
        vault,
        &tmp.path().join("audit"),
        key.clone(),
        true,
    );
    match r {
        Err(vault_core::Error::AuditUnavailable(m)) => {
            assert!(m.contains("scripts/records-audit-append.sql"), "{m}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    drop(back);
    let mut log = open(&cfg, vault, &tmp.path().join("audit"), &key);
    assert_eq!(
        log.append(event(0, 0)).unwrap(),
        1,
        "with it back, the trail opens"
    );
}
