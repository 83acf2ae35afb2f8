//! The records store on the PostgreSQL cluster (issue 16): records, users,
//! sessions, disposal batches and certificates in the `pivault_records`
//! database with the audit trail (`audit_cluster.rs`), the keystore in
//! `pivault_keys`, the vault directory left with the header, the signing
//! file and the two cluster files.
//! The blind indexes, derived from personal information, are purged from
//! every member after a disposal and scanned for. Needs the cluster of
//! `scripts/cluster.sh` (as `cluster.rs`), and runs one at a time with it.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_core::Error;
use vault_core::beacon::Match;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::keystore::PurgeControl;
use vault_core::vault::DisposalScope;
use vault_core::vault::FindTarget;

use crate::cluster::{cluster, primary_member, psql_in, request, serial};
use crate::common::{self, Fixture, events};
use crate::search::{COUNTER, counter_schema, find};

/// A fixture vault with its keystore and its records on the cluster, and
/// the all-searchable [`COUNTER`] collection.
fn vault_on_clusters(dir: &Path) -> Fixture {
    let f = common::fast_vault_with(
        dir,
        Some(common::cluster_keystore()),
        Some(common::cluster_records()),
    );
    f.vault
        .create_collection(&f.admin, COUNTER, &counter_schema())
        .expect("create counter");
    f
}

fn ssn(n: u32) -> String {
    format!("212-{:02}-{:04}", 10 + n % 80, 1000 + n)
}

/// A family name per number (names take letters only).
fn family(n: u32) -> String {
    let letter = |i: u32| char::from(b'a' + (i % 26) as u8);
    format!(
        "Recordholm-{}{}{}",
        letter(n / 676),
        letter(n / 26),
        letter(n)
    )
}

fn person(n: u32) -> serde_json::Value {
    json!({"given_name": "Clusterina", "family_name": family(n), "ssn": ssn(n)})
}

/// One record per number, each of a new subject.
fn put_people(fx: &Fixture, numbers: std::ops::Range<u32>) -> Vec<RecordId> {
    numbers
        .map(|n| {
            fx.vault
                .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
                .unwrap()
        })
        .collect()
}

/// The member that is the primary now.
/// Every row of the vault's records schema as the superuser sees it on
/// member `m`: the count of rows and of beacon rows.
fn row_counts(m: &str, vault: &vault_core::vault::Vault) -> (u64, u64) {
    let s = records_schema(vault);
    let n = |t: &str| {
        psql_in(
            m,
            "pivault_records",
            &format!("SELECT count(*) FROM {s}.{t}"),
        )
        .expect("member up")
        .parse()
        .unwrap()
    };
    (n("rows"), n("beacons"))
}

/// The superuser makes `schema.table` refuse `what` (`INSERT`, `INSERT OR
/// DELETE`) with a trigger, as a failing store would.
fn refuse(m: &str, db: &str, schema: &str, table: &str, what: &str) {
    psql_in(
        m,
        db,
        &format!(
            "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN RAISE EXCEPTION 'not today'; END$$; \
             CREATE TRIGGER refuse BEFORE {what} ON {schema}.{table} \
             FOR EACH ROW EXECUTE FUNCTION {schema}.refuse()"
        ),
    )
    .expect("the superuser's trigger");
}

/// Drops [`refuse`]'s trigger.
fn allow(m: &str, db: &str, schema: &str, table: &str) {
    psql_in(
        m,
        db,
        &format!("DROP TRIGGER refuse ON {schema}.{table}; DROP FUNCTION {schema}.refuse()"),
    )
    .expect("the trigger dropped");
}

/// The blind-index tag of a record (the first bytes of its reverse row),
/// read from the primary by the superuser.
fn beacon_tag(m: &str, vault: &vault_core::vault::Vault, id: RecordId) -> Vec<u8> {
    let s = records_schema(vault);
    let hex = psql_in(
        m,
        "pivault_records",
        &format!(
            "SELECT encode(substr(v, 1, 16), 'hex') FROM {s}.beacons WHERE k = '\\x72{}'::bytea",
            hex::encode(id.as_bytes())
        ),
    )
    .expect("member up");
    hex::decode(hex.trim()).unwrap_or_else(|_| panic!("no reverse beacon row: {hex:?}"))
}

#[test]
fn records_on_the_cluster_outlive_the_vault_machine_and_one_process_holds_the_vault() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = vault_on_clusters(&dir);
    assert_eq!(fx.vault.records_engine(), "postgresql");
    let ids: Vec<(RecordId, u32)> = put_people(&fx, 0..20).into_iter().zip(0..).collect();
    // The rows are on the primary and on both standbys (synchronous
    // commit; a standby replays shortly after).
    let primary = primary_member(&c);
    let (rows, beacons) = row_counts(&primary, &fx.vault);
    assert!(rows >= 20 + 5, "records and users on the cluster: {rows}");
    assert!(beacons >= 20, "the blind indexes on the cluster: {beacons}");
    // The vault directory holds no record: no table file at all under
    // records/, and no SSN in any file of the directory.
    let local: Vec<PathBuf> = common::files_under(&dir.join("records"));
    assert_eq!(local, Vec::<PathBuf>::new(), "records/ must stay empty");
    // Nor the audit trail: it is on the cluster with the records.
    assert!(
        !dir.join("audit").exists(),
        "no audit directory on the vault machine"
    );
    // Nor a wrapped root key or the sealed signing keys: the header file
    // keeps its static part (100 bytes), its slots are zeros, and the
    // keystore cluster holds the rest, so the directory gives a thief
    // nothing to try a passphrase against.
    let header = std::fs::read(dir.join("header")).unwrap();
    assert!(header[100..].iter().all(|&b| b == 0), "no slot in the file");
    assert!(!dir.join("signing").exists(), "no signing file");
    let trail_before = fx.vault.audit_verify(&fx.officer).unwrap();
    assert!(trail_before.ok(), "{trail_before:?}");
    // One process holds the vault: a second opener is refused at once,
    // whatever directory it opens the vault from.
    let copy = tmp.path().join("other-machine");
    std::fs::create_dir(&copy).unwrap();
    for f in ["header", "keystore.json", "records.json"] {
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    std::fs::create_dir(copy.join("records")).unwrap();
    std::fs::create_dir(copy.join("keystore")).unwrap();
    for d in [&copy, &copy.join("records"), &copy.join("keystore")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let busy = vault_core::vault::Vault::open(
        &copy,
        &vault_core::secret::SecretString::from(common::PASSPHRASE),
        common::open_options(&fx.clock),
    );
    assert!(matches!(busy, Err(Error::VaultBusy)), "{:?}", busy.err());
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    // The machine is lost: its directory gone. On another machine, the
    // header's static part and the two cluster files open the vault
    // with every record, its indexes and its whole audit trail.
    std::fs::remove_dir_all(&dir).unwrap();
    let v = common::open_vault(&copy, &clock);
    let clerk = common::login(&v, "clerk");
    let officer = common::login(&v, "officer");
    let trail = v.audit_verify(&officer).unwrap();
    assert!(trail.ok(), "{trail:?}");
    assert!(
        trail.events > trail_before.events && trail.checkpoints > trail_before.checkpoints,
        "the trail went on from where it was: before {trail_before:?}, after {trail:?}"
    );
    let created = v
        .audit_events(
            &officer,
            &vault_core::audit::EventFilter {
                action_prefix: Some("record.create".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        created.len(),
        20,
        "every record.create event survived the machine"
    );
    for (id, n) in &ids {
        let r = v.get_record(&clerk, *id, &[], None).unwrap();
        assert_eq!(r.fields["family_name"], family(*n));
    }
    let hits = find(
        &v,
        &clerk,
        FindTarget::Field("ssn".into()),
        &ssn(7),
        Match::Exact,
    )
    .unwrap();
    assert_eq!(hits, vec![ids[7].0]);
    // No member keeps an SSN in clear.
    let plain: Vec<Vec<u8>> = (0..20).map(|n| ssn(n).into_bytes()).collect();
    assert_eq!(c.files_holding(&plain), Vec::<PathBuf>::new());
    // doctor holds the records cluster to the purge's settings, and says so
    // for every member.
    let checks = vault_core::doctor::checks(&v, common::T0).unwrap();
    for name in [
        "records-cluster-settings",
        "records-cluster-members",
        "records-cluster-tls",
        "records-engine",
        "records-index-partitions",
    ] {
        let ch = checks
            .iter()
            .find(|ch| ch.name == name)
            .unwrap_or_else(|| panic!("no {name} check"));
        assert_eq!(ch.level, vault_core::doctor::Level::Ok, "{ch:?}");
    }
    v.close().unwrap();
    an_insider_cannot_unhook_the_clusters(&copy, &clock, &ids);
}

/// An insider with the vault directory but not the clusters deletes
/// `records.json` (the vault would open an empty embedded store in the
/// cluster's place: no users, no certificates, no anchor of the audit
/// trail) or `keystore.json`: refused at open, naming the file. Clearing
/// the header's placement flag as well (its checksum recomputed) fails the
/// root key's AAD. Each file put back, the vault opens with every record.
fn an_insider_cannot_unhook_the_clusters(
    dir: &Path,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    ids: &[(RecordId, u32)],
) {
    use sha2::{Digest, Sha256};
    let open = || {
        vault_core::vault::Vault::open(
            dir,
            &vault_core::secret::SecretString::from(common::PASSPHRASE),
            common::open_options(clock),
        )
    };
    for file in ["records.json", "keystore.json"] {
        let saved = std::fs::read(dir.join(file)).unwrap();
        std::fs::remove_file(dir.join(file)).unwrap();
        match open() {
            Err(Error::Integrity(what)) => assert!(what.contains(file), "{file}: {what}"),
            other => panic!("{file} deleted: {:?}", other.map(|_| "opened")),
        }
        if file == "records.json" {
            assert_eq!(
                common::files_under(&dir.join("records")),
                Vec::<PathBuf>::new(),
                "records.json deleted: nothing opened in the cluster's place"
            );
        }
        // The header edited to match: bit 1 records, bit 0 keystore.
        let header = std::fs::read(dir.join("header")).unwrap();
        let mut edited = header.clone();
        edited[11] &= if file == "records.json" { !2 } else { !1 };
        let sum = Sha256::digest(&edited[..68]);
        edited[68..100].copy_from_slice(&sum);
        std::fs::write(dir.join("header"), &edited).unwrap();
        let refused = open();
        assert!(
            refused.is_err(),
            "{file} deleted and the header edited: opened"
        );
        std::fs::write(dir.join("header"), &header).unwrap();
        std::fs::write(dir.join(file), &saved).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let v = common::open_vault(dir, clock);
    let clerk = common::login(&v, "clerk");
    for (id, n) in ids {
        let r = v.get_record(&clerk, *id, &[], None).unwrap();
        assert_eq!(r.fields["family_name"], family(*n));
    }
    v.close().unwrap();
}

/// A disposal deletes the record's blind-index rows and purges them from
/// every member (`VACUUM FULL` of `beacons`, WAL rounds): the certificate
/// holds only once no member's file keeps a deleted row's tag. The
/// negative control, a plain `VACUUM` of the records cluster (the
/// keystore's purge left whole), leaves the tag on the members, and the
/// batch fails and waits; lifted, the same batch certifies.
/// The keystore schema of a vault, as the superuser names it.
fn keys_schema(vault: &vault_core::vault::Vault) -> String {
    format!("pv_{}", hex::encode(vault.id().as_bytes()))
}

/// The vault's schema in the records database.
fn records_schema(vault: &vault_core::vault::Vault) -> String {
    format!("pr_{}", hex::encode(vault.id().as_bytes()))
}

/// The records whose field `field` is `value` exactly.
fn found(fx: &Fixture, field: &str, value: &str) -> vault_core::Result<Vec<RecordId>> {
    find(
        &fx.vault,
        &fx.clerk,
        FindTarget::Field(field.into()),
        value,
        Match::Exact,
    )
}

/// Each record `(id, n)` is the one record found by [`ssn`]`(n)`.
fn each_found(fx: &Fixture, records: impl IntoIterator<Item = (RecordId, u32)>) {
    for (id, n) in records {
        assert_eq!(found(fx, "ssn", &ssn(n)).unwrap(), vec![id], "record {n}");
    }
}

/// `records` with their numbers, as [`put_people`] made them from 0.
fn numbered(records: &[RecordId]) -> impl Iterator<Item = (RecordId, u32)> + '_ {
    records.iter().enumerate().map(|(n, id)| (*id, n as u32))
}

/// Polls `f` every 20 ms for at most `secs` seconds.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// With the records on a cluster a put writes the record's key and its
/// row at once (one commit's wait instead of two). A reader running
/// meanwhile must never meet the row without its key: the superuser holds
/// the keystore's data-key table locked, so the row is in and the key is
/// not, and searches, lists and reads of the subject see only what was
/// there before, without an error. Once the key is in the put returns and
/// the record is found.
#[test]
fn a_record_whose_key_is_not_yet_written_is_found_by_no_reader_until_its_put_returns() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let subject = SubjectId::new();
    let first = fx
        .vault
        .put_record(&fx.clerk, COUNTER, subject, &person(1))
        .unwrap();
    let primary = primary_member(&c);
    let rows_before = row_counts(&primary, &fx.vault).0;
    let deks = format!("{}.deks", keys_schema(&fx.vault));
    let locker = {
        let (m, deks) = (primary.clone(), deks.clone());
        std::thread::spawn(move || {
            psql_in(
                &m,
                "pivault_keys",
                &format!("BEGIN; LOCK TABLE {deks} IN SHARE MODE; SELECT pg_sleep(3); COMMIT"),
            )
        })
    };
    assert!(
        eventually(5, || psql_in(
            &primary,
            "pivault_keys",
            &format!(
                "SELECT count(*) FROM pg_locks WHERE relation = '{deks}'::regclass \
                 AND mode = 'ShareLock' AND granted"
            ),
        )
        .as_deref()
            == Some("1")),
        "the superuser holds the data-key table"
    );
    // The same family name as the first record, another SSN.
    let body = json!({"given_name": "Clusterina", "family_name": family(1), "ssn": ssn(2)});
    let putter = std::thread::scope(|sc| {
        let putter = sc.spawn(|| fx.vault.put_record(&fx.clerk, COUNTER, subject, &body));
        // The row (with its journal entry and index rows) is committed
        // while its key waits for the lock.
        assert!(
            eventually(3, || row_counts(&primary, &fx.vault).0 >= rows_before + 4),
            "the row is written beside its key, not after it"
        );
        let by_ssn = found(&fx, "ssn", &ssn(2)).expect("a search while the key is held up");
        assert_eq!(by_ssn, Vec::<RecordId>::new());
        let by_name =
            found(&fx, "family_name", &family(1)).expect("a search while the key is held up");
        assert_eq!(by_name, vec![first]);
        let listed = fx
            .vault
            .list_records(
                &fx.clerk,
                &vault_core::vault::RecordFilter {
                    subject: Some(subject),
                    collection: None,
                },
            )
            .expect("a list while the key is held up");
        assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![first]);
        assert!(!putter.is_finished(), "the put waits for its key");
        putter.join().expect("putter")
    });
    assert!(locker.join().unwrap().is_some(), "the superuser's lock");
    let second = putter.expect("the put, once its key is in");
    let mut hits = found(&fx, "family_name", &family(1)).unwrap();
    hits.sort();
    let mut both = vec![first, second];
    both.sort();
    assert_eq!(hits, both);
    let r = fx.vault.get_record(&fx.clerk, second, &[], None).unwrap();
    assert_eq!(r.fields["family_name"], family(1));
}

/// A vault on the clusters ([`vault_on_clusters`]) with two people's
/// records, the primary member, and the vault's row counts there.
fn two_people_on_clusters(
    dir: &Path,
    c: &crate::cluster::Cluster,
) -> (Fixture, String, (u64, u64)) {
    let fx = vault_on_clusters(dir);
    put_people(&fx, 0..2);
    let primary = primary_member(c);
    let before = row_counts(&primary, &fx.vault);
    (fx, primary, before)
}

/// Person `n`'s record put (`why` the put must succeed) and found by its
/// SSN, alone.
fn put_and_find(fx: &Fixture, n: u32, why: &str) {
    let id = fx
        .vault
        .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
        .expect(why);
    assert_eq!(found(fx, "ssn", &ssn(n)).unwrap(), vec![id]);
}

/// The record's key refused by the keystore cluster (a trigger of the
/// superuser's) while its row went in: the put fails, the row, its index
/// rows and its journal entry go again, nothing is found, and the vault
/// takes the next put once the keystore accepts keys again.
#[test]
fn a_put_whose_key_is_refused_leaves_no_row_behind() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, before) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let schema = keys_schema(&fx.vault);
    refuse(&primary, "pivault_keys", &schema, "deks", "INSERT");
    let refused = fx
        .vault
        .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(5));
    assert!(refused.is_err(), "a put without its key: {refused:?}");
    assert_eq!(
        row_counts(&primary, &fx.vault),
        before,
        "the row, its index rows and its journal entry went again"
    );
    let hits = found(&fx, "ssn", &ssn(5)).unwrap();
    assert_eq!(hits, Vec::<RecordId>::new());
    allow(&primary, "pivault_keys", &schema, "deks");
    put_and_find(&fx, 5, "the vault takes puts again");
}

/// Clerks putting at once on the clusters: each put's write-journal entry
/// goes in the statement that appends its audit event (one round trip
/// less), and that statement removes the put's own entry only: an update's
/// entry kept for the next open (the keystore refused its old key's
/// removal) stays through every put, and the reopen finishes it.
#[test]
fn each_put_removes_only_its_own_journal_entry_with_its_audit_event() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, _) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let entries = |fx: &Fixture| fx.vault.maintenance_status().unwrap().journal_entries;
    assert_eq!(entries(&fx), 0, "the first two puts left no entry");
    let updated = put_people(&fx, 2..3)[0];
    let keys = keys_schema(&fx.vault);
    refuse(&primary, "pivault_keys", &keys, "deks", "DELETE");
    let version = fx.vault.update_record(&fx.clerk, updated, &person(3));
    allow(&primary, "pivault_keys", &keys, "deks");
    assert_eq!(version.unwrap(), 2, "the update stands, audited");
    assert_eq!(entries(&fx), 1, "its entry is kept for the next open");

    let ids: Vec<RecordId> = std::thread::scope(|sc| {
        let clerks: Vec<_> = (0..4u32)
            .map(|t| {
                let fx = &fx;
                sc.spawn(move || put_people(fx, 100 + 10 * t..110 + 10 * t))
            })
            .collect();
        clerks
            .into_iter()
            .flat_map(|h| h.join().expect("a clerk's puts"))
            .collect()
    });
    assert_eq!(ids.len(), 40);
    assert_eq!(
        entries(&fx),
        1,
        "every put's entry went with its event, the update's stayed"
    );
    common::each_created_once(&fx, ids.iter().copied());

    let fx = fx.reopen();
    let st = fx.vault.maintenance_status().unwrap();
    assert_eq!((st.journal_entries, st.orphan_keys), (0, 0), "{st:?}");
    let r = fx.vault.get_record(&fx.clerk, updated, &[], None).unwrap();
    assert_eq!(
        (r.meta.version, r.fields["family_name"].clone()),
        (2, json!(family(3)))
    );
    assert_eq!(
        fx.vault
            .keystore()
            .record_keys(r.meta.subject, updated)
            .unwrap()
            .len(),
        1,
        "the old version's key went at the reopen"
    );
}

/// An update whose event was acknowledged and then lost after its old key
/// was destroyed (a lazy commit lost with a failed-over primary and its
/// process while the key's delete was on another WAL stream, the keys on a
/// cluster of their own; or a trail line lost with the machine): the
/// journal entry, no event, no old key. The superuser makes that state on
/// the one test cluster (the event removed from the trail's head, the
/// journal entry, kept by a trigger when the update removed it, put back). The reopen keeps the update and writes its event again,
/// instead of putting back a row whose key is gone; a creation left the
/// same way, with no such proof, is still rolled back.
#[test]
fn an_update_whose_event_was_lost_after_its_old_key_went_is_kept_not_lost() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, _) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let updated = put_people(&fx, 2..3)[0];
    let s = records_schema(&fx.vault);
    let vault = fx.vault.id().to_string();
    let sql = |q: &str| psql_in(&primary, "pivault_records", q).expect("the superuser's SQL");
    // Every journal row the vault removes from now on is kept aside (the
    // journal is table 15 of `rows`, its place in the store's tables; the
    // count put back below says if that moved).
    sql(&format!(
        "DROP TABLE IF EXISTS public.kept_journal; \
         DROP FUNCTION IF EXISTS public.keep_journal() CASCADE; \
         CREATE TABLE public.kept_journal AS SELECT * FROM {s}.rows WITH NO DATA; \
         CREATE FUNCTION public.keep_journal() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS \
         $$BEGIN INSERT INTO public.kept_journal SELECT OLD.*; RETURN OLD; END$$; \
         CREATE TRIGGER keep_journal BEFORE DELETE ON {s}.rows FOR EACH ROW \
         WHEN (OLD.t = 15) EXECUTE FUNCTION public.keep_journal()"
    ));
    let subject = fx
        .vault
        .get_record(&fx.clerk, updated, &[], None)
        .unwrap()
        .meta
        .subject;
    let version = fx
        .vault
        .update_record(&fx.clerk, updated, &person(3))
        .unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        fx.vault
            .keystore()
            .record_keys(subject, updated)
            .unwrap()
            .len(),
        1,
        "the old version's key went after the event"
    );
    // A creation whose event is lost the same way (its journal entry went
    // with its event in one statement, kept aside too).
    let created = put_people(&fx, 4..5)[0];
    let head = |what: &str| {
        sql(&format!(
            "SELECT convert_from(line, 'UTF8') ~ '{what}' FROM pivault_audit.events \
              WHERE vault = '{vault}' AND seq = (SELECT head FROM pivault_audit.trails WHERE vault = '{vault}')"
        ))
    };
    let fx = fx.reopen_after_crash(|| {
        sql(&format!(
            "DROP TRIGGER keep_journal ON {s}.rows; DROP FUNCTION public.keep_journal()"
        ));
        // The creation's event then the update's: the two lazy commits the
        // failover lost, last first (nothing after them survived either).
        for (what, id) in [("record.create", created), ("record.update", updated)] {
            assert_eq!(
                head(&format!("{what}.*{id}")),
                "t",
                "the trail's head is {what}: {}",
                sql(&format!(
                    "SELECT convert_from(line, 'UTF8') FROM pivault_audit.events \
                      WHERE vault = '{vault}' ORDER BY seq DESC LIMIT 3"
                ))
            );
            sql(&format!(
                "SET session_replication_role = replica; \
                 DELETE FROM pivault_audit.events WHERE vault = '{vault}' \
                   AND seq = (SELECT head FROM pivault_audit.trails WHERE vault = '{vault}'); \
                 UPDATE pivault_audit.trails SET head = head - 1 WHERE vault = '{vault}'"
            ));
        }
        assert_eq!(
            sql(&format!(
                "SELECT count(*) FROM pivault_audit.checkpoints WHERE vault = '{vault}' \
                   AND seq > (SELECT head FROM pivault_audit.trails WHERE vault = '{vault}')"
            )),
            "0",
            "no checkpoint covers the lost events"
        );
        assert_eq!(
            sql(&format!(
                "INSERT INTO {s}.rows SELECT * FROM public.kept_journal; \
                 SELECT count(*) FROM public.kept_journal; "
            ))
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
            "2",
            "both journal entries put back"
        );
        sql("DROP TABLE public.kept_journal");
    });
    let r = fx.vault.get_record(&fx.clerk, updated, &[], None).unwrap();
    assert_eq!(
        (r.meta.version, r.fields["family_name"].clone()),
        (2, json!(family(3))),
        "the acknowledged update stands"
    );
    assert!(
        matches!(
            fx.vault.get_record(&fx.clerk, created, &[], None),
            Err(Error::NotFound(_))
        ),
        "the creation, with no proof its event was written, is rolled back"
    );
    let st = fx.vault.maintenance_status().unwrap();
    assert_eq!((st.journal_entries, st.orphan_keys), (0, 0), "{st:?}");
    let recovered: Vec<_> = events(&fx, "record.update")
        .into_iter()
        .filter(|e| e.targets.first() == Some(&updated.to_string()))
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(
        (recovered[0].actor, recovered[0].targets[1..].to_vec()),
        (
            None,
            vec!["version:2".to_string(), "recovered:journal".into()]
        )
    );
    let reconciled = events(&fx, "journal.reconcile");
    assert_eq!(
        reconciled.last().map(|e| e.targets.clone()),
        Some(vec![
            "kept:0".to_string(),
            "rolled_back:1".into(),
            "rolled_forward:1".into()
        ])
    );
    assert!(fx.vault.audit_verify(&fx.auditor).unwrap().ok());
    // Reopened again: nothing left to reconcile, the update still stands.
    let fx = fx.reopen();
    assert_eq!(events(&fx, "journal.reconcile").len(), reconciled.len());
    let r = fx.vault.get_record(&fx.clerk, updated, &[], None).unwrap();
    assert_eq!(r.meta.version, 2);
}

/// A put whose key and row are both refused (most likely an outage of both
/// clusters), and whose row's removal is refused too, fails and leaves
/// nothing behind; and since that is most likely an outage, the vault is
/// not fenced: once the stores answer again, the next put succeeds (a
/// fence, as for a row left without its key, would refuse it until the
/// vault is reopened).
#[test]
fn a_put_whose_key_and_row_are_both_refused_leaves_nothing_and_the_vault_writable() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, before) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let keys = keys_schema(&fx.vault);
    let records = records_schema(&fx.vault);
    refuse(&primary, "pivault_keys", &keys, "deks", "INSERT");
    refuse(
        &primary,
        "pivault_records",
        &records,
        "rows",
        "INSERT OR DELETE",
    );
    let refused = fx
        .vault
        .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(5));
    assert!(refused.is_err(), "a put with neither write: {refused:?}");
    allow(&primary, "pivault_keys", &keys, "deks");
    allow(&primary, "pivault_records", &records, "rows");
    assert_eq!(
        row_counts(&primary, &fx.vault),
        before,
        "nothing of the refused put is in the records database"
    );
    assert_eq!(found(&fx, "ssn", &ssn(5)).unwrap(), Vec::<RecordId>::new());
    put_and_find(&fx, 6, "not fenced: the vault takes puts again at once");
}

#[test]
fn a_disposal_purges_the_blind_indexes_from_every_member_and_a_plain_vacuum_is_caught() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let keep = put_people(&fx, 0..6);
    // The doomed record shares its partition of the search index with a
    // kept one: a partition left empty by the disposal would be truncated
    // by a plain VACUUM too, and the control would show nothing.
    let partition = |id: RecordId| id.as_bytes()[15] % 16;
    let (doomed, doomed_n) = (40..200)
        .map(|n| (put_people(&fx, n..n + 1)[0], n))
        .find(|(id, _)| keep.iter().any(|k| partition(*k) == partition(*id)))
        .expect("a record in a kept record's partition");
    let primary = primary_member(&c);
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    assert!(
        !c.files_holding(std::slice::from_ref(&tag)).is_empty(),
        "the tag is on the members before the disposal"
    );
    fx.vault
        .set_records_purge_control(PurgeControl::PlainVacuum);
    match fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(doomed)))
    {
        Err(Error::DisposalFailed(msg)) => {
            assert!(
                msg.contains(".beacons_") && msg.contains(": not rewritten"),
                "{msg}"
            );
            // The byte scan, narrowed to the partitions that held the
            // deleted rows, reads the one left unrewritten and finds the
            // tag in its table file (not only in the WAL).
            let found = msg
                .split("deleted search beacons found in records-database files")
                .nth(1)
                .unwrap_or_else(|| panic!("the scan found no tag: {msg}"));
            assert!(found.contains(": base/"), "{msg}");
        }
        other => panic!("a plain VACUUM must not certify: {other:?}"),
    }
    assert!(
        !c.files_holding(std::slice::from_ref(&tag)).is_empty(),
        "the control leaves the deleted tag on a member's disk"
    );
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].id;
    fx.vault.set_records_purge_control(PurgeControl::Full);
    let cert = fx.vault.retry_disposal(&fx.officer, batch).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    // The certificate speaks of the engine that did the purge, and says
    // what copies of the records cluster it cannot cover.
    let index = &doc.body["sanitization"]["details"]["search_index"];
    assert_eq!(index["engine"], "postgresql", "{index}");
    // It names every member of the records cluster, each verified.
    let members = index["members"].as_array().expect("members");
    assert_eq!(members.len(), c.members.len(), "{index}");
    assert!(members.iter().all(|m| m["verified"] == true), "{index}");
    assert_eq!(index["residue_files"], json!([]), "{index}");
    assert!(
        doc.body["sanitization"]["record"]["media_type"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL records cluster"),
        "{}",
        doc.body["sanitization"]["record"]
    );
    assert!(
        doc.body["sanitization"]["not_covered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n
                .as_str()
                .unwrap()
                .starts_with("copies of the records cluster")),
        "{}",
        doc.body["sanitization"]["not_covered"]
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new(),
        "no member keeps the deleted tag"
    );
    // The others are still found by their indexes; the doomed one is not.
    for (n, id) in keep.iter().enumerate() {
        let hits = find(
            &fx.vault,
            &fx.clerk,
            FindTarget::Field("ssn".into()),
            &ssn(n as u32),
            Match::Exact,
        )
        .unwrap();
        assert_eq!(hits, vec![*id]);
    }
    let gone = find(
        &fx.vault,
        &fx.clerk,
        FindTarget::Field("ssn".into()),
        &ssn(doomed_n),
        Match::Exact,
    )
    .unwrap();
    assert!(gone.is_empty());
    // A batch that runs through in one go scans every member's files for
    // the tags it deleted, and says where it looked.
    let next = put_people(&fx, 200..201)[0];
    let tag = beacon_tag(&primary, &fx.vault, next);
    let files_before = beacon_files(&primary, &fx.vault);
    let o = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(next)))
        .unwrap();
    let doc = fx
        .vault
        .certificate(&fx.auditor, o.certificate_id.unwrap())
        .unwrap();
    let scan = doc.body["sanitization"]["details"]["search_index"]["byte_scan"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        scan.contains("records cluster's members") && scan.ends_with(": 0 file(s) hold them"),
        "{scan}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new()
    );
    // Only the record's own partition of the search index was rewritten:
    // the other fifteen kept their files.
    let files_after = beacon_files(&primary, &fx.vault);
    assert_eq!(files_before.len(), 16, "{files_before:?}");
    let rewritten: Vec<&String> = files_before
        .iter()
        .filter(|(rel, file)| files_after.get(*rel) != Some(file))
        .map(|(rel, _)| rel)
        .collect();
    assert_eq!(
        rewritten,
        vec![&format!("beacons_{}", next.as_bytes()[15] % 16)],
        "{files_before:?} -> {files_after:?}"
    );
    fx.vault.close().unwrap();
}

/// A disposal's search-index scan is narrowed by table: it reads the
/// partition that held the record's beacon rows and skips the audit
/// trails' table, which grows with every operation of every vault and
/// never holds a tag (its lines are the vault's events: IDs, no values).
/// The whole scan (no tables named) skips it as well (see
/// [`a_vaults_role_cannot_test_guesses_against_another_vaults_audit_trail`]).
#[test]
fn the_search_index_scan_reads_the_vaults_partition_and_not_the_audit_trail() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let id = put_people(&fx, 0..3)[1];
    let primary = primary_member(&c);
    let tag = beacon_tag(&primary, &fx.vault, id);
    let s = records_schema(&fx.vault);
    let partition = format!("beacons_{}", id.as_bytes()[15] % 16);
    let sql = |q: &str| psql_in(&primary, "pivault_records", q).expect("primary up");
    // On disk, not only in the WAL and shared buffers.
    sql("CHECKPOINT");
    let file = |rel: &str| sql(&format!("SELECT pg_relation_filepath('{rel}')"));
    let (trail, beacons) = (
        file("pivault_audit.events"),
        file(&format!("{s}.{partition}")),
    );
    let scan = |tables: &str| -> std::collections::BTreeMap<String, String> {
        sql(&format!(
            "SELECT string_agg(path || '=' || coalesce(hit::text, 'unread'), ',')
               FROM pivault_verify.scan_vault(ARRAY['\\x{}'::bytea], '{s}', {tables})",
            hex::encode(&tag)
        ))
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(p, h)| (p.to_owned(), h.to_owned()))
        .collect()
    };
    let narrowed = scan(&format!("ARRAY['{partition}']"));
    assert_eq!(
        narrowed.get(&beacons).map(String::as_str),
        Some("true"),
        "the partition's file is read and holds the live tag: {narrowed:?}"
    );
    assert_eq!(
        narrowed.get(&trail).map(String::as_str),
        Some("unread"),
        "{trail}: {narrowed:?}"
    );
    let whole = scan("NULL");
    assert_eq!(whole.get(&beacons).map(String::as_str), Some("true"));
    assert_eq!(
        whole.get(&trail).map(String::as_str),
        Some("unread"),
        "{trail}: {whole:?}"
    );
    fx.vault.close().unwrap();
}

/// The verification scan answers yes or no for needles its caller chooses,
/// so whatever it reads is an oracle for every vault's role. It reads no
/// audit trail: vault B's role, scanning with a line of vault A's trail
/// (which the superuser's whole scan finds in the trails' table file),
/// finds it in no table file, and it may not run the whole scan. (The WAL,
/// which holds every vault's recent writes, is still read: not checked
/// here, see ARCHITECTURE.md, "What a vault's role can learn".)
#[test]
fn a_vaults_role_cannot_test_guesses_against_another_vaults_audit_trail() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let a = vault_on_clusters(&tmp.path().join("a"));
    let b = vault_on_clusters(&tmp.path().join("b"));
    put_people(&a, 0..2);
    let primary = primary_member(&c);
    let sql = |q: &str| psql_in(&primary, "pivault_records", q).expect("primary up");
    let line = sql(&format!(
        "SELECT encode(line, 'hex') FROM pivault_audit.events WHERE vault = '{}' \
          ORDER BY seq DESC LIMIT 1",
        a.vault.id()
    ));
    assert!(line.len() > 200, "a line of A's trail: {line}");
    // Planner statistics, which would copy sampled lines into
    // `pg_statistic` (a catalog, read by every scan): none are kept.
    sql("ANALYZE pivault_audit.events");
    assert_eq!(
        sql("SELECT count(*) FROM pg_statistic WHERE starelid = 'pivault_audit.events'::regclass"),
        "0"
    );
    // On disk on every member, not only in the WAL and shared buffers.
    for m in &c.members {
        psql_in(m, "pivault_records", "CHECKPOINT").expect("member up");
    }
    let in_tables = |scan: &str| {
        format!(
            "SELECT count(*) FROM {scan} WHERE hit AND path LIKE 'base/%' \
               AND path NOT LIKE 'base/pgsql_tmp%'"
        )
    };
    // Its two halves: a WAL record crossing one of the WAL's 8 KiB pages
    // has the page's header in the middle (one run in about twenty with a
    // line of some 400 bytes), and then only one half is whole in the WAL.
    // In a table file a row is never split, so both are found there.
    let mid = line.len() / 4 * 2;
    let needle = format!(
        "ARRAY['\\x{}'::bytea, '\\x{}'::bytea]",
        &line[..mid],
        &line[mid..]
    );
    let whole = in_tables(&format!("pivault_verify.scan({needle})"));
    assert_ne!(
        sql(&whole),
        "0",
        "the superuser's whole scan finds A's line"
    );
    // The WAL holds the line too (every vault's recent writes are there):
    // one half at least.
    assert_ne!(
        sql(&format!(
            "SELECT count(*) FROM pivault_verify.scan({needle}) WHERE hit AND path LIKE 'pg_wal/%'"
        )),
        "0",
        "the superuser's whole scan finds A's line in the WAL"
    );
    let mut role_b = crate::cluster::whole_scan_refused(&common::cluster_records(), &whole);
    // B's scan, naming any WAL segment or none: no file at all, the WAL's
    // included.
    let current = sql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    for wal_after in ["NULL::text".to_owned(), format!("'{current}'")] {
        let b_scan = format!(
            "SELECT count(*) FROM pivault_verify.scan_vault({needle}, '{}', NULL::text[], {wal_after}) WHERE hit",
            records_schema(&b.vault)
        );
        let found: i64 = role_b.query_one(&b_scan, &[]).expect("B's scan").get(0);
        assert_eq!(found, 0, "B's scan ({wal_after}) answers for A's trail");
    }
    a.vault.close().unwrap();
    b.vault.close().unwrap();
}

/// A vault made before the search index was partitioned (one `beacons`
/// table) is moved into the partitions when it next opens, and its records
/// are still found; a disposal then rewrites one partition only.
#[test]
fn a_search_index_from_before_the_partitions_is_moved_into_them_at_open() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = vault_on_clusters(&dir);
    let people = put_people(&fx, 0..6);
    let primary = primary_member(&c);
    let s = records_schema(&fx.vault);
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    // The old layout, rows and all, as the superuser would find it.
    psql_in(
        &primary,
        "pivault_records",
        &format!(
            "BEGIN;
             CREATE TABLE {s}.beacons_old (k bytea PRIMARY KEY, v bytea NOT NULL);
             INSERT INTO {s}.beacons_old SELECT k, v FROM {s}.beacons;
             DROP TABLE {s}.beacons;
             ALTER TABLE {s}.beacons_old RENAME TO beacons;
             ALTER TABLE {s}.beacons OWNER TO pivault;
             COMMIT;"
        ),
    )
    .expect("member up");
    let v = common::open_vault(&dir, &clock);
    assert_eq!(beacon_files(&primary, &v).len(), 16);
    let clerk = common::login(&v, "clerk");
    for (n, id) in people.iter().enumerate() {
        let hits = find(
            &v,
            &clerk,
            FindTarget::Field("ssn".into()),
            &ssn(n as u32),
            Match::Exact,
        )
        .unwrap();
        assert_eq!(hits, vec![*id], "record {n} found after the move");
    }
    let kind = psql_in(
        &primary,
        "pivault_records",
        &format!("SELECT relkind FROM pg_class WHERE oid = '{s}.beacons'::regclass"),
    )
    .expect("member up");
    assert_eq!(kind, "p", "the search index is partitioned now");
    v.close().unwrap();
}

/// The partitions of the vault's search index on member `m`, by name.
fn beacon_layout(m: &str, vault: &vault_core::vault::Vault) -> Vec<String> {
    let s = records_schema(vault);
    let mut names: Vec<String> = psql_in(
        m,
        "pivault_records",
        &format!(
            "SELECT string_agg(c.relname, ',') FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = '{s}.beacons'::regclass"
        ),
    )
    .expect("member up")
    .split(',')
    .map(String::from)
    .collect();
    names.sort();
    names
}

/// A purge that would rewrite a search-index partition past the split size
/// splits it instead: children take its live rows, it is dropped with its
/// file, and the certificate says so. Two clerks put and search all along
/// (their puts and searches wait for the split's lock): every record a
/// put acknowledged is found by its SSN, at once and afterwards, and the
/// disposed record's tag is on no member. A child at the last modulus is
/// rewritten, not split again, and the vault opens again as it was split.
#[test]
fn a_big_search_index_partition_is_split_by_its_purge_while_clerks_put_and_search() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = vault_on_clusters(&dir);
    let people = put_people(&fx, 0..24);
    let doomed = people[0];
    let class = doomed.as_bytes()[15] % 16;
    let primary = primary_member(&c);
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    // Any partition is past one byte: the touched one splits as far as it
    // can, into the 16 of modulus 256 that hold its bytes.
    fx.vault.set_records_beacon_split_at(1);
    let stop = AtomicBool::new(false);
    let (outcome, acked) = std::thread::scope(|sc| {
        let clerks: Vec<_> = (0..2u32)
            .map(|w| {
                let (fx, stop) = (&fx, &stop);
                sc.spawn(move || {
                    let mut acked = Vec::new();
                    let mut n = 1000 + w * 1000;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let id = fx
                            .vault
                            .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
                            .expect("a put racing the split");
                        assert_eq!(found(fx, "ssn", &ssn(n)).unwrap(), vec![id], "record {n}");
                        acked.push((id, n));
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let outcome = fx
            .vault
            .dispose(&fx.officer, &request(DisposalScope::Record(doomed)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let acked: Vec<(RecordId, u32)> = clerks
            .into_iter()
            .flat_map(|h| h.join().expect("a clerk"))
            .collect();
        (outcome, acked)
    });
    assert!(acked.len() >= 4, "the clerks ran: {}", acked.len());
    let doc = fx
        .vault
        .certificate(&fx.auditor, outcome.unwrap().certificate_id.unwrap())
        .unwrap();
    let index = &doc.body["sanitization"]["details"]["search_index"];
    assert_eq!(
        index["partitions_split"],
        json!([format!("beacons_{class} into 16 partitions")]),
        "{index}"
    );
    assert!(
        index["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["verified"] == true)
    );
    let children: Vec<String> = (0..16u16)
        .map(|i| format!("beacons_256_{}", u16::from(class) + 16 * i))
        .collect();
    let layout = beacon_layout(&primary, &fx.vault);
    assert_eq!(layout.len(), 31, "{layout:?}");
    assert!(!layout.contains(&format!("beacons_{class}")), "{layout:?}");
    assert!(children.iter().all(|ch| layout.contains(ch)), "{layout:?}");
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new(),
        "no member keeps the deleted tag"
    );
    each_found(&fx, numbered(&people).skip(1).chain(acked.iter().copied()));
    assert!(found(&fx, "ssn", &ssn(0)).unwrap().is_empty());
    // A record in one of the children: its purge rewrites that child.
    let (next, next_n) = (5000..5200)
        .map(|n| (put_people(&fx, n..n + 1)[0], n))
        .find(|(id, _)| id.as_bytes()[15] % 16 == class)
        .expect("a record of the split partition's bytes");
    let next_tag = beacon_tag(&primary, &fx.vault, next);
    let o = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(next)))
        .unwrap();
    let doc = fx
        .vault
        .certificate(&fx.auditor, o.certificate_id.unwrap())
        .unwrap();
    assert_eq!(
        doc.body["sanitization"]["details"]["search_index"]["partitions_split"],
        json!([])
    );
    assert_eq!(beacon_layout(&primary, &fx.vault), layout);
    assert_eq!(
        c.files_holding(std::slice::from_ref(&next_tag)),
        Vec::<PathBuf>::new()
    );
    assert!(found(&fx, "ssn", &ssn(next_n)).unwrap().is_empty());
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    let v = common::open_vault(&dir, &clock);
    assert_eq!(beacon_layout(&primary, &v), layout, "reopened as split");
    let clerk = common::login(&v, "clerk");
    let (id, n) = acked[0];
    let hits = find(
        &v,
        &clerk,
        FindTarget::Field("ssn".into()),
        &ssn(n),
        Match::Exact,
    )
    .unwrap();
    assert_eq!(hits, vec![id]);
    v.close().unwrap();
}

/// Maintenance splits every search-index partition past the split size
/// ahead of any disposal (audited as `index.split`), while a clerk puts
/// and finds records; the next disposal then rewrites a small child and
/// splits nothing, and every acknowledged record is found.
#[test]
fn maintenance_splits_big_partitions_ahead_of_the_disposals_while_a_clerk_writes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let people = put_people(&fx, 0..16);
    let primary = primary_member(&c);
    fx.vault.set_records_beacon_split_at(1);
    // doctor says what the next disposal would have to split.
    let partitions_check = |v: &vault_core::vault::Vault| {
        vault_core::doctor::checks(v, common::T0)
            .unwrap()
            .into_iter()
            .find(|ch| ch.name == "records-index-partitions")
            .expect("the partitions' check")
    };
    let before = partitions_check(&fx.vault);
    assert_eq!(before.level, vault_core::doctor::Level::Warn, "{before:?}");
    assert!(before.detail.starts_with("16 of 16 "), "{before:?}");
    let stop = AtomicBool::new(false);
    let (report, acked) = std::thread::scope(|sc| {
        let clerk = sc.spawn(|| {
            let mut acked = Vec::new();
            let mut n = 3000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let id = fx
                    .vault
                    .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
                    .expect("a put racing the splits");
                assert_eq!(found(&fx, "ssn", &ssn(n)).unwrap(), vec![id], "record {n}");
                acked.push((id, n));
            }
            acked
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let report = fx.vault.run_maintenance(&fx.officer);
        stop.store(true, Ordering::SeqCst);
        (report, clerk.join().expect("the clerk"))
    });
    assert_eq!(report.unwrap().search_partitions_split, 16);
    assert_eq!(beacon_layout(&primary, &fx.vault).len(), 256);
    let after = partitions_check(&fx.vault);
    assert_eq!(after.level, vault_core::doctor::Level::Ok, "{after:?}");
    let split = fx
        .vault
        .audit_events(&fx.auditor, &vault_core::audit::EventFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "index.split")
        .count();
    assert_eq!(split, 1);
    each_found(&fx, numbered(&people).chain(acked.iter().copied()));
    let tag = beacon_tag(&primary, &fx.vault, people[3]);
    let o = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(people[3])))
        .unwrap();
    let doc = fx
        .vault
        .certificate(&fx.auditor, o.certificate_id.unwrap())
        .unwrap();
    assert_eq!(
        doc.body["sanitization"]["details"]["search_index"]["partitions_split"],
        json!([])
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new()
    );
    // Nothing left to split.
    assert_eq!(
        fx.vault
            .run_maintenance(&fx.officer)
            .unwrap()
            .search_partitions_split,
        0
    );
    fx.vault.close().unwrap();
}

/// An insider holding a lock on the partition a purge would split (a
/// session of the superuser, or of the vault's role, in an open
/// transaction): the split waits, gives up after its tries, and rolls
/// back; the batch fails without a certificate, the layout and every kept
/// record are as they were, and the retry, once the lock is gone, splits.
#[test]
fn a_split_kept_waiting_by_an_insiders_lock_fails_cleanly_and_its_retry_splits() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let people = put_people(&fx, 0..8);
    let doomed = people[0];
    let class = doomed.as_bytes()[15] % 16;
    let primary = primary_member(&c);
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    let s = records_schema(&fx.vault);
    let layout = beacon_layout(&primary, &fx.vault);
    fx.vault.set_records_beacon_split_at(1);
    let mut insider = partition_held(&primary, &s, class);
    let failed = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(doomed)));
    let _ = insider.kill();
    let _ = insider.wait();
    match failed {
        Err(Error::DisposalFailed(msg)) => {
            assert!(
                msg.contains(&format!("beacons_{class}: not replaced")),
                "{msg}"
            )
        }
        other => panic!("a split that could not lock must not certify: {other:?}"),
    }
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].clone();
    assert!(batch.failed.is_some());
    assert!(matches!(
        fx.vault.certificate(&fx.auditor, batch.certificate_id),
        Err(Error::NotFound(_))
    ));
    assert_eq!(beacon_layout(&primary, &fx.vault), layout, "rolled back");
    each_found(&fx, numbered(&people).skip(1));
    // The retry no longer knows which rows it deleted: every partition is
    // purged, and each past the split size is split.
    let cert = fx.vault.retry_disposal(&fx.officer, batch.id).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let split = doc.body["sanitization"]["details"]["search_index"]["partitions_split"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(split.len(), 16, "{split:?}");
    assert!(split.contains(&json!(format!("beacons_{class} into 16 partitions"))));
    assert_eq!(beacon_layout(&primary, &fx.vault).len(), 256);
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new()
    );
    each_found(&fx, numbered(&people).skip(1));
    fx.vault.close().unwrap();
}

/// An insider with the superuser's (or the vault role's) hand remakes a
/// partition of the search index under a name this build does not use
/// (`beacons_3` detached and attached again as `beacons_hand`): a disposal
/// of a record whose byte that partition holds purges and scans every
/// partition, the hand-made one with them, and certifies with the tag on
/// no member; the kept records are found.
#[test]
fn a_partition_an_insider_renamed_is_purged_and_scanned_with_the_touched_ones() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let primary = primary_member(&c);
    let s = records_schema(&fx.vault);
    let (doomed, doomed_n) = (0..200)
        .map(|n| (put_people(&fx, n..n + 1)[0], n))
        .find(|(id, _)| id.as_bytes()[15] % 16 == 3)
        .expect("a record of partition 3's bytes");
    let kept = put_people(&fx, 300..306);
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    let values: Vec<String> = (0..16).map(|i| (3 + 16 * i).to_string()).collect();
    psql_in(
        &primary,
        "pivault_records",
        &format!(
            "BEGIN;
             ALTER TABLE {s}.beacons DETACH PARTITION {s}.beacons_3;
             ALTER TABLE {s}.beacons_3 RENAME TO beacons_hand;
             ALTER TABLE {s}.beacons ATTACH PARTITION {s}.beacons_hand FOR VALUES IN ({});
             COMMIT;",
            values.join(", ")
        ),
    )
    .expect("the insider's partition");
    let before = beacon_layout(&primary, &fx.vault);
    assert!(before.contains(&"beacons_hand".to_owned()), "{before:?}");
    let filenodes = |m: &str| -> std::collections::BTreeMap<String, String> {
        psql_in(
            m,
            "pivault_records",
            &format!(
                "SELECT string_agg(c.relname || '=' || c.relfilenode, ',') FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{s}.beacons'::regclass"
            ),
        )
        .expect("member up")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(r, f)| (r.to_owned(), f.to_owned()))
        .collect()
    };
    let nodes = filenodes(&primary);
    let o = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(doomed)))
        .unwrap();
    let doc = fx
        .vault
        .certificate(&fx.auditor, o.certificate_id.unwrap())
        .unwrap();
    let index = &doc.body["sanitization"]["details"]["search_index"];
    assert!(
        index["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["verified"] == true),
        "{index}"
    );
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new(),
        "no member keeps the deleted tag"
    );
    assert!(found(&fx, "ssn", &ssn(doomed_n)).unwrap().is_empty());
    for (i, id) in kept.iter().enumerate() {
        assert_eq!(found(&fx, "ssn", &ssn(300 + i as u32)).unwrap(), vec![*id]);
    }
    // The record's byte is in no partition this build names: every
    // partition was rewritten, none kept its file.
    let after = filenodes(&primary);
    assert_eq!(after.len(), 16, "{after:?}");
    for (rel, node) in &nodes {
        assert_ne!(after.get(rel), Some(node), "{rel} kept its file");
    }
    assert_eq!(beacon_layout(&primary, &fx.vault), before);
    fx.vault.close().unwrap();
}

/// A vault from before partitions could split (each first partition held
/// one value: `p` was the placement byte modulo 16) is widened when it
/// next opens: every row's `p` is its whole placement byte and each
/// partition holds its 16 bytes. Records are found, an update rewrites a
/// record's rows without doubling any, and a purge can split.
#[test]
fn a_search_index_whose_partitions_held_one_value_each_is_widened_at_open() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = vault_on_clusters(&dir);
    let people = put_people(&fx, 0..12);
    let primary = primary_member(&c);
    let s = records_schema(&fx.vault);
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    let sql = |q: &str| psql_in(&primary, "pivault_records", q).expect("member up");
    let narrowed: String = (0..16)
        .map(|p| {
            format!(
                "ALTER TABLE {s}.beacons DETACH PARTITION {s}.beacons_{p};
                 UPDATE {s}.beacons_{p} SET p = p % 16;
                 ALTER TABLE {s}.beacons ATTACH PARTITION {s}.beacons_{p} FOR VALUES IN ({p});"
            )
        })
        .collect();
    sql(&format!("BEGIN; {narrowed} COMMIT;"));
    assert_eq!(
        sql(&format!("SELECT count(*) FROM {s}.beacons WHERE p >= 16")),
        "0"
    );
    let single = format!(
        "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = '{s}.beacons'::regclass AND pg_get_expr(c.relpartbound, c.oid) NOT LIKE '%,%'"
    );
    assert_eq!(sql(&single), "16", "the old layout");
    let v = common::open_vault(&dir, &clock);
    assert_eq!(sql(&single), "0", "every partition widened");
    let placement =
        "(CASE WHEN get_byte(k, 0) = 114 THEN get_byte(k, 16) ELSE get_byte(v, 15) END)";
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM {s}.beacons WHERE p <> {placement}"
        )),
        "0"
    );
    assert_ne!(
        sql(&format!("SELECT count(*) FROM {s}.beacons WHERE p >= 16")),
        "0"
    );
    let clerk = common::login(&v, "clerk");
    let officer = common::login(&v, "officer");
    let by_ssn = |n: u32| {
        find(
            &v,
            &clerk,
            FindTarget::Field("ssn".into()),
            &ssn(n),
            Match::Exact,
        )
        .unwrap()
    };
    for (n, id) in people.iter().enumerate() {
        assert_eq!(by_ssn(n as u32), vec![*id], "record {n}");
    }
    let rows = sql(&format!("SELECT count(*) FROM {s}.beacons"));
    v.update_record(&clerk, people[1], &person(1)).unwrap();
    assert_eq!(sql(&format!("SELECT count(*) FROM {s}.beacons")), rows);
    assert_eq!(
        sql(&format!(
            "SELECT count(*) FROM (SELECT k FROM {s}.beacons GROUP BY k HAVING count(*) > 1) d"
        )),
        "0"
    );
    v.set_records_beacon_split_at(1);
    let o = v
        .dispose(&officer, &request(DisposalScope::Record(people[2])))
        .unwrap();
    assert!(o.certificate_id.is_some());
    assert_eq!(beacon_layout(&primary, &v).len(), 31);
    assert!(by_ssn(2).is_empty());
    for n in [0u32, 1, 3, 11] {
        assert_eq!(by_ssn(n), vec![people[n as usize]], "record {n}");
    }
    v.close().unwrap();
}

/// The file of each partition of a vault's search index on member `m`.
fn beacon_files(
    m: &str,
    vault: &vault_core::vault::Vault,
) -> std::collections::BTreeMap<String, String> {
    let s = records_schema(vault);
    psql_in(
        m,
        "pivault_records",
        &format!(
            "SELECT string_agg(relname || '=' || relfilenode, ',') FROM pg_class
              WHERE relnamespace = '{s}'::regnamespace AND relname ~ '^beacons_[0-9]+$'"
        ),
    )
    .expect("member up")
    .split(',')
    .filter_map(|p| p.split_once('='))
    .map(|(r, f)| (r.to_owned(), f.to_owned()))
    .collect()
}

/// The primary killed in the middle of a disposal batch, with a clerk
/// writing all along: a standby is promoted, the batch waits for the dead
/// member and then certifies with every member verified, and every record
/// whose write was acknowledged (before, during and after the failover)
/// reads back, from the records cluster, on the new primary.
#[test]
fn the_primary_killed_mid_disposal_with_records_on_the_cluster_loses_no_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let before = put_people(&fx, 0..8);
    let doomed = before[0];
    let failover = crate::cluster::Failover::at_ratchet(&c, &fx);
    let stop = AtomicBool::new(false);
    let (outcome, acked) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut acked = Vec::new();
            let mut n = 100;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                // A write refused while no primary answers is not
                // acknowledged; one that returns Ok must survive.
                if let Ok(id) =
                    fx.vault
                        .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
                {
                    acked.push((id, n));
                }
            }
            acked
        });
        let outcome = fx
            .vault
            .dispose(&fx.officer, &request(DisposalScope::Record(doomed)));
        stop.store(true, Ordering::SeqCst);
        (outcome, writer.join().unwrap())
    });
    failover.finish(&c, &fx, outcome);
    assert!(
        !acked.is_empty(),
        "the clerk's writes went on around the failover"
    );
    for id in &before[1..] {
        fx.vault.get_record(&fx.clerk, *id, &[], None).unwrap();
    }
    for (id, n) in &acked {
        let r = fx.vault.get_record(&fx.clerk, *id, &[], None).unwrap();
        assert_eq!(r.fields["family_name"], family(*n));
    }
    assert!(matches!(
        fx.vault.get_record(&fx.clerk, doomed, &[], None),
        Err(Error::Disposed { .. })
    ));
    eprintln!("acknowledged writes around the failover: {}", acked.len());
    // The vault's lock died with the old primary's connections; the next
    // write took it again on the new one, so a second opener is refused.
    let second = vault_core::vault::Vault::open(
        &fx.dir,
        &vault_core::secret::SecretString::from(common::PASSPHRASE),
        common::open_options(&fx.clock),
    );
    assert!(
        matches!(second, Err(Error::VaultBusy)),
        "{:?}",
        second.err()
    );
    fx.vault.close().unwrap();
}

/// An insider's session on `member` (the superuser's `psql`, left open)
/// holding `ACCESS SHARE` on the search-index partition `class` of records
/// schema `s`: a split of it waits at its swap. Killing the child lets go.
fn partition_held(member: &str, s: &str, class: u8) -> std::process::Child {
    insider_holding(
        member,
        &format!("BEGIN; LOCK TABLE {s}.beacons_{class} IN ACCESS SHARE MODE;"),
        &format!(
            "SELECT count(*) FROM pg_locks WHERE granted AND relation = '{s}.beacons_{class}'::regclass"
        ),
    )
}

/// The superuser's `psql` on `member` (records database), left open in the
/// transaction `begin` starts, once `held` (a count) answers 1. Killing the
/// child lets go.
fn insider_holding(member: &str, begin: &str, held: &str) -> std::process::Child {
    use std::io::Write;
    let (host, port) = member.rsplit_once(':').unwrap();
    let pw = std::fs::read_to_string(
        std::env::var("PIVAULT_PG_SUPERUSER_PASSWORD_FILE").expect("superuser password file"),
    )
    .unwrap();
    let mut insider = std::process::Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "pivault_records",
            "-q",
        ])
        .env("PGPASSWORD", pw.trim())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let stdin = insider.stdin.as_mut().unwrap();
    writeln!(stdin, "{begin}").unwrap();
    stdin.flush().unwrap();
    assert!(
        eventually(10, || psql_in(member, "pivault_records", held).as_deref()
            == Some("1")),
        "the insider's lock"
    );
    insider
}

/// The primary lost in the middle of a search-index partition's split:
/// its children made and filled, its swap waiting for an insider's lock,
/// while a clerk puts and finds records throughout. The split's
/// transaction dies with the primary: the new one holds no half-split
/// index (the old partitions, no child), the batch waits for the member
/// and its retry splits and certifies with all three verified, and every
/// acknowledged put is found by its SSN.
#[test]
fn the_primary_lost_in_the_middle_of_a_split_leaves_no_half_split_and_loses_no_acknowledged_put() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let people = put_people(&fx, 0..8);
    let doomed = people[0];
    let class = doomed.as_bytes()[15] % 16;
    let primary = primary_member(&c);
    let old = crate::cluster::primary_index(&c);
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    let s = records_schema(&fx.vault);
    let layout = beacon_layout(&primary, &fx.vault);
    fx.vault.set_records_beacon_split_at(1);
    let mut insider = partition_held(&primary, &s, class);

    let stop = AtomicBool::new(false);
    let (outcome, acked, reached) = std::thread::scope(|sc| {
        let clerk = sc.spawn(|| {
            let mut acked = Vec::new();
            let mut n = 5000;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                // A put refused in the failover is not acknowledged.
                if let Ok(id) =
                    fx.vault
                        .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(n))
                {
                    acked.push((id, n));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            acked
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        let disposal = sc.spawn(|| {
            fx.vault
                .dispose(&fx.officer, &request(DisposalScope::Record(doomed)))
        });
        // The split has made and filled its children and waits for the
        // swap's lock.
        // (The split's text is longer than pg_stat_activity keeps: its
        // waiting lock on the partition tells where it is.)
        let at_swap = format!(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'
                AND relation = '{s}.beacons_{class}'::regclass"
        );
        let reached = eventually(20, || {
            psql_in(&primary, "pivault_records", &at_swap).as_deref() == Some("1")
        });
        crate::cluster::cluster_script(&["member-stop", &old.to_string()]);
        let outcome = disposal.join().expect("the disposal");
        std::thread::sleep(std::time::Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        (outcome, clerk.join().expect("the clerk"), reached)
    });
    let _ = insider.kill();
    let _ = insider.wait();
    crate::cluster::cluster_script(&["member-start", &old.to_string()]);
    assert!(
        reached,
        "the split reached its swap before the primary was stopped"
    );
    let now = primary_member(&c);
    assert_ne!(now, primary, "a standby was promoted");
    // Either the purge's checks found the dead member (the batch failed,
    // naming it, and waits for a retry), or the failover broke one of the
    // purge's connections first (the batch stays at its step, unfailed,
    // for the next open or a retry): never a certificate.
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].clone();
    let msg = match outcome {
        Err(Error::DisposalFailed(msg)) => {
            assert!(msg.contains(&primary), "the member is named: {msg}");
            assert!(batch.failed.is_some());
            msg
        }
        Err(Error::Storage(msg)) => {
            assert!(batch.failed.is_none(), "{batch:?}");
            assert_ne!(batch.step, "complete", "{batch:?}");
            msg
        }
        other => panic!("the batch must stop and wait, not certify: {other:?}"),
    };
    // No half-split index on the new primary: the partitions as before.
    assert_eq!(beacon_layout(&now, &fx.vault), layout, "{msg}");
    crate::cluster::wait_healthy(&c);
    let cert = fx.vault.retry_disposal(&fx.officer, batch.id).unwrap();
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let members = doc.body["sanitization"]["details"]["keystore_purge"]["members"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["verified"] == true), "{members:?}");
    let split = doc.body["sanitization"]["details"]["search_index"]["partitions_split"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        split.contains(&json!(format!("beacons_{class} into 16 partitions"))),
        "{split:?}"
    );
    assert!(acked.len() >= 3, "the clerk ran: {}", acked.len());
    each_found(&fx, acked.iter().copied().chain(numbered(&people).skip(1)));
    assert!(found(&fx, "ssn", &ssn(0)).unwrap().is_empty(), "disposed");
    assert_eq!(
        c.files_holding(std::slice::from_ref(&tag)),
        Vec::<PathBuf>::new()
    );
}

/// Someone with the vault's own role (what the vault host holds) keeps
/// copies of the data keys and of the search index in relations of their
/// own in the vault's schemas, as an operator might "to be safe" before
/// maintenance: a table and a materialized view of the keys, a table of
/// the search index under a name pivault gives its partitions, and an
/// index (named as pivault names a primary key) whose every entry carries
/// a copied tag. A disposal's narrowed scans read every relation the
/// catalog does not show as pivault's own, so each copy's file blocks the
/// certificate (the batch waits, naming them); once they are dropped, the
/// retry certifies and no member keeps the deleted key or tag.
#[test]
fn copies_the_vaults_role_keeps_in_the_vaults_own_schemas_are_read_and_block_the_certificate() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let primary = primary_member(&c);
    let doomed = put_people(&fx, 0..1)[0];
    let kept = put_people(&fx, 1..4);
    let subject = fx
        .vault
        .get_record(&fx.clerk, doomed, &[], None)
        .unwrap()
        .meta
        .subject;
    let wrapped = fx
        .vault
        .keystore()
        .wrapped_dek(subject, doomed, 1)
        .unwrap()
        .expect("the record's key");
    let tag = beacon_tag(&primary, &fx.vault, doomed);
    let (ks, rs) = (keys_schema(&fx.vault), records_schema(&fx.vault));
    /// Drops the copies whatever happens to the test (the fixtures' vaults
    /// share one role, whose later scans would read them).
    struct Copies(String, String, String);
    impl Drop for Copies {
        fn drop(&mut self) {
            let (m, ks, rs) = (&self.0, &self.1, &self.2);
            let _ = psql_in(
                m,
                "pivault_keys",
                &format!(
                    "DROP TABLE IF EXISTS {ks}.saved; DROP MATERIALIZED VIEW IF EXISTS {ks}.keys_view"
                ),
            );
            let _ = psql_in(
                m,
                "pivault_records",
                &format!("DROP TABLE IF EXISTS {rs}.beacons_64_3; DROP TABLE IF EXISTS {rs}.notes"),
            );
        }
    }
    let _copies = Copies(primary.clone(), ks.clone(), rs.clone());
    let as_role = |cfg: &vault_core::keystore::postgres::PgConfig, sql: &str| {
        vault_core::keystore::provider::connect_primary(cfg)
            .unwrap()
            .batch_execute(sql)
            .unwrap();
    };
    as_role(
        &common::cluster_keystore(),
        &format!(
            "CREATE TABLE {ks}.saved AS SELECT * FROM {ks}.deks;
             CREATE MATERIALIZED VIEW {ks}.keys_view AS SELECT bucket, k, v FROM {ks}.deks"
        ),
    );
    as_role(
        &common::cluster_records(),
        &format!(
            "CREATE TABLE {rs}.beacons_64_3 AS SELECT * FROM {rs}.beacons;
             CREATE TABLE {rs}.notes (n int);
             INSERT INTO {rs}.notes SELECT generate_series(1, 10);
             CREATE INDEX holder_pkey ON {rs}.notes ((n::text::bytea || '\\x{}'::bytea))",
            hex::encode(&tag)
        ),
    );
    let file = |db: &str, rel: &str| {
        psql_in(
            &primary,
            db,
            &format!("SELECT pg_relation_filepath('{rel}')"),
        )
        .expect("member up")
    };
    let files = [
        file("pivault_keys", &format!("{ks}.saved")),
        file("pivault_keys", &format!("{ks}.keys_view")),
        file("pivault_records", &format!("{rs}.beacons_64_3")),
        file("pivault_records", &format!("{rs}.holder_pkey")),
    ];
    for m in &c.members {
        psql_in(m, "postgres", "CHECKPOINT");
    }
    let refused = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(doomed)));
    let msg = match refused {
        Err(Error::DisposalFailed(msg)) => msg,
        other => panic!("copies left in the vault's schemas must block the certificate: {other:?}"),
    };
    assert!(
        msg.contains("pre-disposal wrapped key bytes found in keystore files"),
        "{msg}"
    );
    assert!(msg.contains("deleted search beacons found"), "{msg}");
    for f in &files {
        assert!(msg.contains(&format!(": {f}")), "{f} is named: {msg}");
    }
    let batch = fx.vault.disposals(&fx.officer).unwrap()[0].clone();
    assert!(batch.failed.is_some(), "{batch:?}");
    as_role(
        &common::cluster_keystore(),
        &format!("DROP TABLE {ks}.saved; DROP MATERIALIZED VIEW {ks}.keys_view"),
    );
    as_role(
        &common::cluster_records(),
        &format!("DROP TABLE {rs}.beacons_64_3; DROP TABLE {rs}.notes"),
    );
    let cert = fx.vault.retry_disposal(&fx.officer, batch.id).unwrap();
    fx.vault.certificate(&fx.auditor, cert).unwrap();
    assert_eq!(
        c.files_holding(&[wrapped.clone(), tag.clone()]),
        Vec::<PathBuf>::new(),
        "no member keeps the deleted key or tag"
    );
    assert!(found(&fx, "ssn", &ssn(0)).unwrap().is_empty());
    each_found(&fx, numbered(&kept).map(|(id, n)| (id, n + 1)));
    fx.vault.close().unwrap();
}

/// The vault's row of `pivault_audit.trails` held locked by the superuser
/// on `member` (an open transaction): the audit write under way waits on
/// it in the database, holding the vault's trail, and every event of the
/// operations running meanwhile queues for the group after it.
fn trail_held(member: &str, vault: &vault_core::vault::Vault) -> std::process::Child {
    let v = hex::encode(vault.id().as_bytes());
    insider_holding(
        member,
        &format!(
            "BEGIN; SELECT 'trail held' FROM pivault_audit.trails WHERE vault = '{v}'::uuid FOR UPDATE;"
        ),
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '%trail held%'",
    )
}

/// Eight clerks' puts started while the vault's trail is held (see
/// [`trail_held`]), and what each returned once it was let go.
fn puts_behind_a_held_trail(
    fx: &Fixture,
    primary: &str,
    meanwhile: impl FnOnce(),
) -> Vec<vault_core::Result<RecordId>> {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let mut insider = trail_held(primary, &fx.vault);
    let returned = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        let clerks: Vec<_> = (0..8u32)
            .map(|t| {
                let returned = &returned;
                sc.spawn(move || {
                    let put =
                        fx.vault
                            .put_record(&fx.clerk, COUNTER, SubjectId::new(), &person(300 + t));
                    returned.fetch_add(1, SeqCst);
                    put
                })
            })
            .collect();
        // Ample time for every put's key and row, which the hold does not
        // touch: then each waits for its event.
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert_eq!(
            returned.load(SeqCst),
            0,
            "a put returned before its audit event was written"
        );
        meanwhile();
        insider.kill().unwrap();
        insider.wait().unwrap();
        clerks.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Group commit of audit events (`audit/group.rs`): while the write under
/// way waits on the trail, the events of seven more puts queue, and then
/// go in one statement and one transaction (two, cut at the checkpoint's
/// event they straddle, which gets its checkpoint as after lone appends),
/// each removing its own put's journal entry. Each put returns only once
/// its own event is written, and the chain verifies. (One append at a
/// time, as before the groups, wrote the eight events in eight
/// transactions.)
#[test]
fn events_of_puts_waiting_at_once_are_written_together_each_with_its_own_journal_entry() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, _) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let v = hex::encode(fx.vault.id().as_bytes());
    let head = || -> u64 {
        psql_in(
            &primary,
            "pivault_records",
            &format!("SELECT max(seq) FROM pivault_audit.events WHERE vault = '{v}'::uuid"),
        )
        .expect("the trail's head")
        .parse()
        .unwrap()
    };
    // Reads (an event each) until the head is four events short of a
    // checkpoint's: the groups then straddle it.
    let every = vault_core::audit::CHECKPOINT_EVERY;
    let listed = fx
        .vault
        .list_records(&fx.clerk, &vault_core::vault::RecordFilter::default())
        .unwrap();
    for _ in 0..(every - 4 + every - head() % every) % every {
        fx.vault
            .get_record(&fx.clerk, listed[0].id, &[], None)
            .unwrap();
    }
    let head = head();
    assert_eq!(head % every, every - 4);
    let ids: Vec<RecordId> = puts_behind_a_held_trail(&fx, &primary, || ())
        .into_iter()
        .map(|put| put.expect("each put stands, audited"))
        .collect();
    let written = psql_in(
        &primary,
        "pivault_records",
        &format!(
            "SELECT count(*) || ' ' || count(DISTINCT xmin::text) FROM pivault_audit.events \
             WHERE vault = '{v}'::uuid AND seq > {head}"
        ),
    )
    .expect("the events since");
    let (count, transactions) = written.split_once(' ').unwrap();
    assert_eq!(count, "8", "one event a put");
    assert!(
        transactions.parse::<u32>().unwrap() <= 3,
        "the eight events in {transactions} transactions, not the group held and the rest in one more, \
         cut at the checkpoint's event"
    );
    let checkpoints = psql_in(
        &primary,
        "pivault_records",
        &format!(
            "SELECT string_agg(seq::text, ',') FROM pivault_audit.checkpoints \
             WHERE vault = '{v}'::uuid AND seq > {head}"
        ),
    )
    .expect("the checkpoints since");
    assert_eq!(
        checkpoints,
        (head + 4).to_string(),
        "one checkpoint, at the 256th event as after lone appends, not at a group's last"
    );
    common::each_created_once(&fx, ids.iter().copied());
    let st = fx.vault.maintenance_status().unwrap();
    assert_eq!((st.journal_entries, st.orphan_keys), (0, 0), "{st:?}");
    let report = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
}

/// A group of events the cluster refuses (the superuser's trigger on this
/// vault's events, made while the group waited) fails every put in it,
/// not only the one whose thread wrote it: each is reported failed and
/// undone (no row, index row, key or journal entry; its bucket marked for
/// the next ratchet, as any removed key's). Once the trail takes events
/// again the vault takes puts, and its chain verifies: the refused group
/// took no sequence numbers.
#[test]
fn a_group_of_events_the_cluster_refuses_fails_every_put_in_it_and_keeps_none_of_them() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, before) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let v = hex::encode(fx.vault.id().as_bytes());
    let refuse = format!(
        "CREATE FUNCTION pivault_audit.refuse_{v}() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'not today'; END$$; \
         CREATE TRIGGER refuse_{v} BEFORE INSERT ON pivault_audit.events FOR EACH ROW \
         WHEN (NEW.vault = '{v}'::uuid) EXECUTE FUNCTION pivault_audit.refuse_{v}()"
    );
    let puts = puts_behind_a_held_trail(&fx, &primary, || {
        psql_in(&primary, "pivault_records", &refuse).expect("the superuser's trigger");
    });
    psql_in(
        &primary,
        "pivault_records",
        &format!(
            "DROP TRIGGER refuse_{v} ON pivault_audit.events; DROP FUNCTION pivault_audit.refuse_{v}()"
        ),
    )
    .expect("the trigger dropped");
    for put in &puts {
        assert!(
            matches!(put, Err(Error::AuditUnavailable(_))),
            "every put of the refused group fails: {put:?}"
        );
    }
    // Rows: each undone put's bucket marked as holding its deleted key's
    // residue (for the next ratchet), and nothing else.
    // (Eight random subjects may share a bucket.)
    let st = fx.vault.maintenance_status().unwrap();
    assert_eq!((st.journal_entries, st.orphan_keys), (0, 0), "{st:?}");
    assert!((1..=8).contains(&st.dirty_buckets), "{st:?}");
    let (rows, beacons) = row_counts(&primary, &fx.vault);
    assert_eq!(
        (rows, beacons),
        (before.0 + st.dirty_buckets, before.1),
        "no record kept"
    );
    let listed = fx
        .vault
        .list_records(&fx.clerk, &vault_core::vault::RecordFilter::default())
        .unwrap();
    assert_eq!(listed.len(), 2, "the first two records only");
    assert_eq!(
        events(&fx, "record.create").len(),
        2,
        "the first two puts' events only"
    );
    put_and_find(&fx, 400, "the trail takes events again");
    let report = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
}

/// A checkpoint the cluster refuses (the server's timer, or the one at
/// open after an unclean stop) is retried first thing by the next append,
/// as an automatic one is, and that append fails closed while it still
/// cannot be written: events are never left uncovered for the next 256.
/// (Before, such a failure was forgotten: the next checkpoint came only
/// at the next 256th event.)
#[test]
fn a_checkpoint_the_cluster_refused_is_written_by_the_next_append_or_that_append_fails() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (fx, primary, _) = two_people_on_clusters(&tmp.path().join("vault"), &c);
    let v = hex::encode(fx.vault.id().as_bytes());
    let sql = |q: &str| psql_in(&primary, "pivault_records", q).expect("the superuser's psql");
    let listed = fx
        .vault
        .list_records(&fx.clerk, &vault_core::vault::RecordFilter::default())
        .unwrap();
    let head = sql(&format!(
        "SELECT max(seq) FROM pivault_audit.events WHERE vault = '{v}'::uuid"
    ));
    let at_head = format!(
        "SELECT count(*) FROM pivault_audit.checkpoints WHERE vault = '{v}'::uuid AND seq = {head}"
    );
    assert_eq!(sql(&at_head), "0", "no checkpoint at the head yet");
    sql(&format!(
        "CREATE FUNCTION pivault_audit.refuse_{v}() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'not today'; END$$; \
         CREATE TRIGGER refuse_{v} BEFORE INSERT ON pivault_audit.checkpoints FOR EACH ROW \
         WHEN (NEW.vault = '{v}'::uuid) EXECUTE FUNCTION pivault_audit.refuse_{v}()"
    ));
    let timer = fx.vault.checkpoint_now();
    let refused_read = fx.vault.get_record(&fx.clerk, listed[0].id, &[], None);
    sql(&format!(
        "DROP TRIGGER refuse_{v} ON pivault_audit.checkpoints; DROP FUNCTION pivault_audit.refuse_{v}()"
    ));
    assert!(
        matches!(timer, Err(Error::AuditUnavailable(_))),
        "{timer:?}"
    );
    assert!(
        matches!(refused_read, Err(Error::AuditUnavailable(_))),
        "a read while the checkpoint is still refused fails closed: {refused_read:?}"
    );
    fx.vault
        .get_record(&fx.clerk, listed[0].id, &[], None)
        .expect("the checkpoint written, then the read's event");
    assert_eq!(
        sql(&at_head),
        "1",
        "the refused checkpoint, at the head it was signed for"
    );
    let report = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
}

/// The cluster's superuser, an insider with the database but not the
/// vault's key, rewrites sealed configuration rows under a running vault
/// (which holds its lock, so nothing stops them):
/// - puts back the clerk's enabled row and the state digest's row from
///   before the clerk was disabled (a consistent older state): the clerk
///   does not sign in (the row is not the one the vault last wrote),
///   `doctor` fails, the next change of a sealed row is refused rather than
///   written forward over it, and the vault, closed, does not open again
///   (as a standby taking it over would not);
/// - with the rows put right, deletes a legal hold's row: the holds are
///   not read without it (a disposal would go ahead), `doctor` fails (the
///   rows no longer add up) and the vault does not open again.
#[test]
fn sealed_rows_the_clusters_superuser_deletes_or_puts_back_under_a_running_vault_are_caught() {
    use vault_core::doctor::Level;
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let primary = primary_member(&c);
    let s = records_schema(&fx.vault);
    // A row of the vault's table: the condition that names it.
    let row =
        |table: usize, key: &[u8]| format!("t = {table} AND k = '\\x{}'::bytea", hex::encode(key));
    // Table numbers: the records store's column families in order.
    let (users, meta, holds) = (4, 7, 11);
    let digest = row(meta, b"sealed/state-digest");
    let clerk = row(users, fx.clerk.user().as_bytes());
    let value = |r: &str| {
        psql_in(
            &primary,
            "pivault_records",
            &format!("SELECT encode(v, 'hex') FROM {s}.rows WHERE {r}"),
        )
        .filter(|v| !v.is_empty())
        .expect("the row")
    };
    let put_back = |r: &str, v: &str| {
        assert_eq!(
            psql_in(
                &primary,
                "pivault_records",
                &format!("UPDATE {s}.rows SET v = decode('{v}', 'hex') WHERE {r}")
            )
            .as_deref(),
            Some("UPDATE 1"),
            "the superuser's update"
        );
    };
    fx.vault
        .add_hold(&fx.officer, None, Some(SubjectId::new()), "litigation")
        .expect("hold");
    assert_eq!(
        common::sealed_rows(&fx).0,
        Level::Ok,
        "{}",
        common::sealed_rows(&fx).1
    );

    let (clerk_before, digest_before) = (value(&clerk), value(&digest));
    fx.vault
        .disable_user(&fx.admin, "clerk")
        .expect("the clerk leaves");
    let (clerk_after, digest_after) = (value(&clerk), value(&digest));
    put_back(&clerk, &clerk_before);
    put_back(&digest, &digest_before);
    let (level, detail) = common::sealed_rows(&fx);
    assert_eq!(
        level,
        Level::Fail,
        "the rows put back pass doctor: {detail}"
    );
    assert!(detail.contains("put back"), "{detail}");
    let back_in = fx.vault.login(
        "clerk",
        &common::password_of("clerk"),
        common::fresh_source(),
    );
    assert!(
        matches!(&back_in, Err(Error::Integrity(_))),
        "the clerk whose enabled row was put back signs in: {:?}",
        back_in.as_ref().map(|s| s.user())
    );
    let over = fx
        .vault
        .add_hold(&fx.officer, None, Some(SubjectId::new()), "litigation");
    assert!(
        matches!(&over, Err(Error::Integrity(m)) if m.contains("put back")),
        "a change written forward over the rows put back: {over:?}"
    );
    // The vault closed and opened again (a restart, or a standby taking
    // over) in the state put back: refused, the trail names the disable.
    let (dir, clock) = (fx.dir.clone(), fx.clock.clone());
    let open = || {
        vault_core::vault::Vault::open(
            &dir,
            &vault_core::secret::SecretString::from(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    fx.vault.close().expect("close");
    let again = open();
    assert!(
        matches!(&again, Err(Error::Integrity(m)) if m.contains("put back to an older state")),
        "the vault opens in the state put back: {:?}",
        again.as_ref().err()
    );
    put_back(&clerk, &clerk_after);
    put_back(&digest, &digest_after);
    let vault = open().expect("opens with the rows as the vault left them");
    let fx = Fixture {
        officer: common::login(&vault, "officer"),
        admin: common::login(&vault, "admin"),
        clerk: fx.clerk,
        auditor: common::login(&vault, "auditor"),
        contractor: fx.contractor,
        vault,
        dir: fx.dir,
        clock: fx.clock,
    };
    assert_eq!(
        common::sealed_rows(&fx).0,
        Level::Ok,
        "{}",
        common::sealed_rows(&fx).1
    );

    assert_eq!(
        psql_in(
            &primary,
            "pivault_records",
            &format!("DELETE FROM {s}.rows WHERE t = {holds}")
        )
        .as_deref(),
        Some("DELETE 1"),
        "the superuser deletes the hold's row"
    );
    let holds = fx.vault.holds(&fx.officer);
    assert!(
        matches!(&holds, Err(Error::Integrity(_))),
        "the holds read without the deleted one: {holds:?}"
    );
    let (level, detail) = common::sealed_rows(&fx);
    assert_eq!(level, Level::Fail, "a deleted hold passes doctor: {detail}");
    assert!(
        detail.contains("no longer adds up") || detail.contains("under the running vault"),
        "{detail}"
    );
    fx.vault.close().expect("close");
    let again = open();
    assert!(
        matches!(&again, Err(Error::Integrity(m)) if m.contains("no longer adds up")),
        "the vault opens without its hold: {:?}",
        again.as_ref().err()
    );
}

/// Someone holding the vault's database role (the credentials its host
/// keeps), not its key, appends a well-formed event to the trail on the
/// cluster while four clerks put records: a clerk revealing an SSN she
/// never saw. The function takes it (it chains to the head), so the
/// vault's next append meets a head it did not write and fails closed:
/// no put is acknowledged after it. The process stops (a killed one, as
/// a fenced one is restarted); the next open disowns the events after the
/// last checkpoint, the forged one with them, before it signs over them
/// (no checkpoint between), and every acknowledged put is there once with
/// its event, before the forged one. A checkpoint line the role adds after
/// a forged event (no key of the vault's signs it) makes the open refuse.
#[test]
fn an_event_the_vaults_role_appends_under_running_clerks_is_disowned_and_no_acknowledged_put_is_lost()
 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let _one = serial();
    let _c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let fx = vault_on_clusters(&tmp.path().join("vault"));
    let v = hex::encode(fx.vault.id().as_bytes());
    let first = put_people(&fx, 0..1)[0];
    let acknowledged: Mutex<Vec<RecordId>> = Mutex::new(Vec::new());
    let refused = AtomicBool::new(false);
    let mut forged = 0;
    std::thread::scope(|sc| {
        for t in 0..4u32 {
            let (fx, acknowledged, refused) = (&fx, &acknowledged, &refused);
            sc.spawn(move || {
                // Until the trail refuses (bounded, so that a vault that
                // never does fails the test instead of hanging it).
                for n in 1..=5_000 {
                    let put = fx.vault.put_record(
                        &fx.clerk,
                        COUNTER,
                        SubjectId::new(),
                        &person(1000 * t + n % 1000),
                    );
                    match put {
                        Ok(id) => acknowledged.lock().unwrap().push(id),
                        Err(Error::AuditUnavailable(_)) => {
                            refused.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => panic!("a put failed for another reason: {e}"),
                    }
                }
            });
        }
        assert!(
            eventually(60, || acknowledged.lock().unwrap().len() >= 20),
            "the clerks put nothing"
        );
        let mut c =
            vault_core::keystore::provider::connect_primary(&common::cluster_records()).unwrap();
        forged = loop {
            let last = c
                .query_one(
                    "SELECT line FROM pivault_audit.last_event($1::text::uuid)",
                    &[&v],
                )
                .unwrap();
            let (line, seq) =
                common::forged_reveal(&last.get::<_, Vec<u8>>(0), fx.clerk.user(), first);
            match c.query_one(
                "SELECT pivault_audit.append($1::text::uuid, $2, $3)",
                &[&v, &(seq as i64), &vec![line]],
            ) {
                Ok(_) => break seq,
                // A clerk's event took the number first.
                Err(e)
                    if e.code() == Some(&postgres::error::SqlState::T_R_SERIALIZATION_FAILURE) => {}
                Err(e) => panic!("the role's append: {e}"),
            }
        };
    });
    assert!(
        refused.load(Ordering::SeqCst),
        "the clerks' puts went on after a line the vault did not write"
    );
    let acknowledged = acknowledged.into_inner().unwrap();
    let fx = fx.reopen_after_crash(|| {});
    let disowned = common::disowned(&fx, forged);
    assert!(
        disowned.is_some(),
        "the forged event {forged} is not disowned"
    );
    // No put acknowledged after the forged event: each one's event is
    // before it.
    let created: std::collections::HashMap<String, u64> = events(&fx, "record.create")
        .into_iter()
        .filter_map(|e| Some((e.targets.first()?.clone(), e.seq)))
        .collect();
    for id in &acknowledged {
        assert!(
            created[&id.to_string()] < forged,
            "a put acknowledged after the forged event {forged}"
        );
    }
    // No checkpoint between the forged event and its disowning.
    let named_by = events(&fx, vault_core::audit::UNVOUCHED_ACTION)
        .into_iter()
        .find(|e| Some(&e.targets) == disowned.as_ref())
        .expect("the disowning event")
        .seq;
    let mut c =
        vault_core::keystore::provider::connect_primary(&common::cluster_records()).unwrap();
    let signed: Vec<i64> = c
        .query(
            "SELECT seq FROM pivault_audit.checkpoints($1::text::uuid)",
            &[&v],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !signed
            .iter()
            .any(|s| (forged as i64..named_by as i64).contains(s)),
        "a checkpoint between the forged event {forged} and its disowning {named_by}: {signed:?}"
    );
    let report = fx.vault.audit_verify(&fx.auditor).expect("verify");
    assert!(report.ok(), "{report:?}");
    assert!(
        report
            .unvouched
            .iter()
            .any(|u| u.from <= forged && forged <= u.to),
        "{report:?}"
    );
    common::each_created_once(&fx, acknowledged.iter().copied());
    for id in &acknowledged {
        fx.vault
            .get_record(&fx.clerk, *id, &[], None)
            .expect("an acknowledged record");
    }
    // The vault writes again, past the forged event.
    let after = put_people(&fx, 2000..2001)[0];
    common::each_created_once(&fx, [after]);

    // The role adds a forged event and a checkpoint line after it (the
    // database checks the chain, not the signature: it holds no key), so
    // that nothing would be after the last checkpoint: the open refuses.
    fx.vault.checkpoint_now().expect("checkpoint");
    let last = c
        .query_one(
            "SELECT line FROM pivault_audit.last_event($1::text::uuid)",
            &[&v],
        )
        .unwrap();
    let (line, seq) = common::forged_reveal(&last.get::<_, Vec<u8>>(0), fx.clerk.user(), first);
    let last_cp: Vec<u8> = c
        .query(
            "SELECT line FROM pivault_audit.checkpoints($1::text::uuid)",
            &[&v],
        )
        .unwrap()
        .last()
        .expect("a checkpoint")
        .get(0);
    c.query_one(
        "SELECT pivault_audit.append($1::text::uuid, $2, $3)",
        &[&v, &(seq as i64), &vec![line.clone()]],
    )
    .expect("the role's append");
    c.query_one(
        "SELECT pivault_audit.add_checkpoint($1::text::uuid, $2, $3)",
        &[
            &v,
            &(seq as i64),
            &common::forged_checkpoint(&last_cp, &line),
        ],
    )
    .expect("the role's checkpoint");
    let dir = fx.dir.clone();
    drop(fx);
    let clock = std::sync::Arc::new(vault_core::clock::ManualClock::new(common::T0));
    match vault_core::vault::Vault::open(
        &dir,
        &vault_core::secret::SecretString::from(common::PASSPHRASE),
        common::open_options(&clock),
    ) {
        Err(Error::Integrity(m)) => assert!(m.contains("not signed"), "{m}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the vault opened on a checkpoint it did not sign"),
    }
}
