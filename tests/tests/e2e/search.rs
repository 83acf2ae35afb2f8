//! Finding a customer without decrypting the vault (issue 12): blind
//! indexes ("beacons") on searchable fields. Lookups by each searchable
//! type find exactly the fixture's records whatever their formatting; the
//! vault's files hold no SSN, no SSN without dashes and no unkeyed hash of
//! one; a disposal leaves none of the subject's beacon rows in any file and
//! its certificate says so; an update replaces a record's beacons; a clerk
//! cannot bulk-reveal through `find` and a contractor cannot find at all;
//! finds racing updates and disposals never see a certified record and
//! never lose an acknowledged write's beacons.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::Digest;
use vault_core::Error;
use vault_core::beacon::Match;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::schema::{FieldType, Schema};
use vault_core::secret::SecretString;
use vault_core::vault::{
    DisposalParties, DisposalRequest, DisposalScope, FindQuery, FindTarget, Session, Vault,
};

use crate::common::{Fixture, fast_vault, files_under};

/// A collection whose identifying fields are all searchable.
pub(crate) const COUNTER: &str = "counter";

pub(crate) fn counter_schema() -> Schema {
    Schema::from_json(
        r#"{
        "purpose": "customers served at the counter",
        "fields": [
            {"name": "given_name", "type": "given_name", "required": true, "searchable": true},
            {"name": "family_name", "type": "family_name", "required": true, "searchable": true},
            {"name": "ssn", "type": "ssn", "searchable": true},
            {"name": "licence", "type": "drivers_license", "searchable": true},
            {"name": "email", "type": "email", "searchable": true},
            {"name": "phone", "type": "phone", "searchable": true},
            {"name": "notes", "type": "text"}
        ]
    }"#,
    )
    .expect("counter schema")
}

/// A fixture vault with the [`COUNTER`] collection.
pub(crate) fn counter_vault(dir: &Path) -> Fixture {
    let f = fast_vault(dir);
    f.vault
        .create_collection(&f.admin, COUNTER, &counter_schema())
        .expect("create counter");
    f
}

pub(crate) fn find(
    vault: &Vault,
    s: &Session,
    target: FindTarget,
    value: &str,
    mode: Match,
) -> vault_core::Result<Vec<RecordId>> {
    let r = vault.find_records(
        s,
        &FindQuery {
            collection: COUNTER.into(),
            target,
            value: SecretString::from(value),
            mode,
        },
    )?;
    assert_eq!(
        r.records.len(),
        r.records
            .iter()
            .map(|v| v.meta.id)
            .collect::<BTreeSet<_>>()
            .len()
    );
    let mut ids: Vec<RecordId> = r.records.iter().map(|v| v.meta.id).collect();
    ids.sort();
    Ok(ids)
}

fn ty(t: FieldType) -> FindTarget {
    FindTarget::Type(t)
}

fn sorted(mut v: Vec<RecordId>) -> Vec<RecordId> {
    v.sort();
    v
}

/// The fixture people, stored with deliberately varied formatting.
struct People {
    ann: RecordId,
    ann_twin: RecordId,
    jose: RecordId,
    marie: RecordId,
    jose_subject: SubjectId,
}

fn put_people(f: &Fixture) -> People {
    let put = |body: Value, subject: SubjectId| {
        f.vault
            .put_record(&f.clerk, COUNTER, subject, &body)
            .expect("put")
    };
    let jose_subject = SubjectId::new();
    let ann = put(
        json!({"given_name": "Ann", "family_name": "Smith", "ssn": "123-45-6789",
               "licence": "MA S12345678", "email": "Ann.Smith@Example.com", "phone": "(617) 555-0100"}),
        SubjectId::new(),
    );
    // Another record with Ann's SSN, stored without dashes (a second account).
    let ann_twin = put(
        json!({"given_name": "A.", "family_name": "Smythe", "ssn": "123456789"}),
        SubjectId::new(),
    );
    let jose = put(
        json!({"given_name": "José", "family_name": "García", "ssn": "234 56 7890",
               "licence": {"state": "ny", "number": "d123-456"}, "email": "jose@example.org",
               "phone": "+1 617 555 0101"}),
        jose_subject,
    );
    let marie = put(
        json!({"given_name": "Ann-Marie", "family_name": "O'Brien", "ssn": "345678901",
               "phone": "617.555.0102", "email": "amob@example.net"}),
        SubjectId::new(),
    );
    // Noise: 60 more people, none sharing a value with the fixture.
    for i in 0..60u32 {
        put(
            json!({"given_name": format!("Noel{}", char::from(b'a' + (i % 26) as u8)),
                   "family_name": "Quill", "ssn": format!("4{:02}{:02}{:04}", 10 + i % 80, 11 + i % 80, 1000 + i),
                   "phone": format!("50855{:05}", 10000 + i), "email": format!("n{i}@example.com")}),
            SubjectId::new(),
        );
    }
    People {
        ann,
        ann_twin,
        jose,
        marie,
        jose_subject,
    }
}

#[test]
fn find_by_each_searchable_type_finds_exactly_the_fixture_records() {
    let tmp = tempfile::tempdir().unwrap();
    let f = counter_vault(&tmp.path().join("v"));
    let p = put_people(&f);
    let (v, c) = (&f.vault, &f.clerk);
    let e = Match::Exact;
    // SSN: with dashes, without, with spaces: both records holding it.
    for q in ["123-45-6789", "123456789", "123 45 6789"] {
        assert_eq!(
            find(v, c, ty(FieldType::Ssn), q, e).unwrap(),
            sorted(vec![p.ann, p.ann_twin]),
            "{q}"
        );
    }
    assert_eq!(
        find(v, c, ty(FieldType::Ssn), "234567890", e).unwrap(),
        vec![p.jose]
    );
    assert_eq!(
        find(v, c, ty(FieldType::Ssn), "345-67-8901", e).unwrap(),
        vec![p.marie]
    );
    assert!(
        find(v, c, ty(FieldType::Ssn), "567-89-0123", e)
            .unwrap()
            .is_empty()
    );
    // Licence: state and number in any case and with separators.
    assert_eq!(
        find(v, c, ty(FieldType::DriversLicense), "ma s12345678", e).unwrap(),
        vec![p.ann]
    );
    assert_eq!(
        find(v, c, ty(FieldType::DriversLicense), "NY:D123456", e).unwrap(),
        vec![p.jose]
    );
    assert!(
        find(v, c, ty(FieldType::DriversLicense), "NY S12345678", e)
            .unwrap()
            .is_empty()
    );
    // Email: case-insensitive.
    assert_eq!(
        find(v, c, ty(FieldType::Email), "ann.smith@example.COM", e).unwrap(),
        vec![p.ann]
    );
    assert_eq!(
        find(
            v,
            c,
            FindTarget::Field("email".into()),
            "JOSE@example.org",
            e
        )
        .unwrap(),
        vec![p.jose]
    );
    // Phone: any punctuation, with or without the country code.
    assert_eq!(
        find(v, c, ty(FieldType::Phone), "617.555.0100", e).unwrap(),
        vec![p.ann]
    );
    assert_eq!(
        find(v, c, ty(FieldType::Phone), "(617) 555-0101", e).unwrap(),
        vec![p.jose]
    );
    assert_eq!(
        find(v, c, ty(FieldType::Phone), "+1-617-555-0102", e).unwrap(),
        vec![p.marie]
    );
    // Names: case and accents folded, given or family, whole words or prefixes.
    let name = ty(FieldType::GivenName);
    assert_eq!(find(v, c, name.clone(), "jose", e).unwrap(), vec![p.jose]);
    assert_eq!(find(v, c, name.clone(), "GARCIA", e).unwrap(), vec![p.jose]);
    assert_eq!(find(v, c, name.clone(), "garcía", e).unwrap(), vec![p.jose]);
    assert_eq!(
        find(v, c, name.clone(), "obrien", e).unwrap(),
        vec![p.marie]
    );
    assert_eq!(
        find(v, c, name.clone(), "ann", e).unwrap(),
        sorted(vec![p.ann, p.marie])
    );
    assert_eq!(
        find(v, c, name.clone(), "Ann Smith", e).unwrap(),
        vec![p.ann]
    );
    assert_eq!(
        find(v, c, name.clone(), "smi", Match::Prefix).unwrap(),
        vec![p.ann]
    );
    assert_eq!(find(v, c, name.clone(), "Sm", e).unwrap(), vec![]);
    assert_eq!(
        find(v, c, name.clone(), "Gar", Match::Prefix).unwrap(),
        vec![p.jose]
    );
    assert_eq!(
        find(v, c, name.clone(), "o'bri", Match::Prefix).unwrap(),
        vec![p.marie]
    );
    // A record's update replaces its beacons: the old SSN no longer finds it.
    f.vault
        .patch_record(
            c,
            p.jose,
            &json!({"ssn": "456-78-9012", "family_name": "Garza"}),
        )
        .unwrap();
    assert!(
        find(v, c, ty(FieldType::Ssn), "234567890", e)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        find(v, c, ty(FieldType::Ssn), "456789012", e).unwrap(),
        vec![p.jose]
    );
    assert!(find(v, c, name.clone(), "garcia", e).unwrap().is_empty());
    assert_eq!(find(v, c, name.clone(), "garza", e).unwrap(), vec![p.jose]);
    // Officers find too; the answer is masked for them as well.
    let r = f
        .vault
        .find_records(
            &f.officer,
            &FindQuery {
                collection: COUNTER.into(),
                target: ty(FieldType::Ssn),
                value: SecretString::from("123-45-6789"),
                mode: e,
            },
        )
        .unwrap();
    assert_eq!(r.records.len(), 2);
    for rec in &r.records {
        assert_eq!(rec.fields["ssn"], json!("***-**-6789"));
        assert!(rec.revealed.is_empty());
    }
    // Every find is audited with the fields and the number of hits, never the value.
    let events = f
        .vault
        .audit_events(&f.officer, &vault_core::audit::EventFilter::default())
        .unwrap();
    let finds: Vec<_> = events
        .iter()
        .filter(|e| e.action == "record.find")
        .collect();
    assert!(finds.len() >= 25, "{} find events", finds.len());
    let last = finds.last().unwrap();
    assert!(
        last.targets.contains(&"field:ssn".to_string()),
        "{:?}",
        last.targets
    );
    assert!(
        last.targets.contains(&"hits:2".to_string()),
        "{:?}",
        last.targets
    );
    let trail =
        serde_json::to_string(&finds.iter().map(|e| &e.targets).collect::<Vec<_>>()).unwrap();
    for v in ["6789", "garcia", "Garc", "617", "example"] {
        assert!(
            !trail.to_lowercase().contains(&v.to_lowercase()),
            "{v} in the trail"
        );
    }
    let _ = p.jose_subject;
}

/// Name beacons are 16 bits: among 2,000 stored records (each name in its
/// given and family name), 400 absent names meet about 24 colliding index
/// rows (2 × 2,000 × 400 / 65,536), each decrypted and dropped; 400 absent
/// SSNs (20-bit beacons) about one. Nothing absent may be reported found.
#[test]
fn colliding_beacons_are_filtered_after_decryption() {
    let tmp = tempfile::tempdir().unwrap();
    let f = counter_vault(&tmp.path().join("v"));
    let ssn = |n: u32| {
        format!(
            "{:03}{:02}{:04}",
            100 + n / 9000,
            11 + (n / 100) % 80,
            1 + n % 9000
        )
    };
    // A name of letters only, distinct per n.
    let name = |mut n: u32| {
        let mut s = String::from("Q");
        for _ in 0..4 {
            s.push(char::from(b'a' + (n % 26) as u8));
            n /= 26;
        }
        s
    };
    let mut ids = HashMap::new();
    for n in 0..2000u32 {
        let id = f
            .vault
            .put_record(
                &f.clerk,
                COUNTER,
                SubjectId::new(),
                &json!({"given_name": name(n), "family_name": name(n), "ssn": ssn(n)}),
            )
            .unwrap();
        ids.insert(n, id);
    }
    for n in 2000..2400u32 {
        let hits = find(
            &f.vault,
            &f.clerk,
            ty(FieldType::FamilyName),
            &name(n),
            Match::Exact,
        )
        .unwrap();
        assert!(hits.is_empty(), "absent name #{n} reported found: {hits:?}");
    }
    for n in (0..2000u32).step_by(97) {
        assert_eq!(
            find(
                &f.vault,
                &f.clerk,
                ty(FieldType::GivenName),
                &name(n),
                Match::Exact
            )
            .unwrap(),
            vec![ids[&n]]
        );
    }
    for n in 2000..2400u32 {
        let hits = find(
            &f.vault,
            &f.clerk,
            ty(FieldType::Ssn),
            &ssn(n),
            Match::Exact,
        )
        .unwrap();
        assert!(hits.is_empty(), "absent SSN #{n} reported found: {hits:?}");
    }
    for n in (0..2000u32).step_by(97) {
        assert_eq!(
            find(
                &f.vault,
                &f.clerk,
                ty(FieldType::Ssn),
                &ssn(n),
                Match::Exact
            )
            .unwrap(),
            vec![ids[&n]]
        );
    }
}

/// The beacon rows of the records database, read with RocksDB directly
/// (the vault closed): record ID -> the tags of its rows (the reverse row's
/// and each forward row's), the markers a copy of a row always carries.
pub(crate) fn beacon_tags(vault_dir: &Path) -> BTreeMap<RecordId, Vec<Vec<u8>>> {
    let path = vault_dir.join("records");
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, &path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &path, &cfs, false).unwrap();
    let cf = db.cf_handle("beacons").expect("beacons column family");
    let mut out: BTreeMap<RecordId, Vec<Vec<u8>>> = BTreeMap::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        match k[0] {
            b'r' => {
                let id = record_id(&k[1..17]);
                out.entry(id).or_default().push(v[..16].to_vec());
            }
            b'f' => {
                let id = record_id(&v[..16]);
                out.entry(id).or_default().push(v[16..32].to_vec());
            }
            other => panic!("unexpected beacon row kind {other}"),
        }
    }
    out
}

/// An insider keeps a copy of one of a record's beacon rows (its tag, the
/// marker every copy of the row carries) in a file under the records
/// database's directory. The disposal's beacon scan finds it and the batch
/// fails. A retry in the same process deletes no beacon row, so it used to
/// have no tags to scan for and certified "not repeated" over the copy it
/// had been shown; the tags are now kept with the batch's needles until it
/// is verified, and the retry finds the copy moved to another file. After
/// a restart they are gone, and the retry waits while the file its latest
/// scan read a tag in is there, then certifies saying so.
#[test]
fn a_beacon_copy_the_scan_found_is_looked_for_again_and_waited_out_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = counter_vault(&dir);
    let p = put_people(&f);
    f.vault.close().unwrap();
    let tags = beacon_tags(&dir)[&p.jose].clone();
    // In a directory of its own: the scan used to read only the
    // database's directory itself.
    let aside = dir.join("records").join("aside");
    std::fs::create_dir(&aside).unwrap();
    let copy = aside.join("beacons-aside.bak");
    std::fs::write(&copy, [&b"aside"[..], &tags[0], b"kept"].concat()).unwrap();
    let f = Fixture {
        vault: crate::common::open_vault(&dir, &f.clock),
        ..f
    };
    let req = DisposalRequest {
        scope: DisposalScope::Subject(p.jose_subject),
        parties: DisposalParties::default(),
        dry_run: false,
    };
    let names_the_copy =
        |r: Result<vault_core::ids::CertificateId, Error>, what: &str, why: &str| match r {
            Err(Error::DisposalFailed(msg)) => assert!(
                msg.contains("beacons-aside.bak") && msg.contains(why),
                "{what}: {msg}"
            ),
            other => panic!("{what}: a copy of a beacon row must block the certificate: {other:?}"),
        };
    names_the_copy(
        f.vault
            .dispose(&f.officer, &req)
            .map(|o| o.certificate_id.expect("a certificate")),
        "the disposal",
        "deleted search beacons found",
    );
    let batch = f.vault.disposals(&f.officer).unwrap()[0].id;
    // Moved to another file: only a retry that scans again finds it (one
    // that only asks whether the first file is there would certify).
    let moved = aside.join("beacons-moved.bak");
    std::fs::rename(&copy, &moved).unwrap();
    match f.vault.retry_disposal(&f.officer, batch) {
        Err(Error::DisposalFailed(msg)) => assert!(
            msg.contains("beacons-moved.bak") && msg.contains("deleted search beacons found"),
            "a retry in the same process: {msg}"
        ),
        other => panic!("a retry in the same process certified over a moved copy: {other:?}"),
    }
    std::fs::rename(&moved, &copy).unwrap();
    names_the_copy(
        f.vault.retry_disposal(&f.officer, batch),
        "another retry in the same process",
        "deleted search beacons found",
    );
    let f = f.reopen();
    names_the_copy(
        f.vault.retry_disposal(&f.officer, batch),
        "a retry after a restart",
        "still there",
    );
    std::fs::remove_file(&copy).unwrap();
    let cert = f.vault.retry_disposal(&f.officer, batch).unwrap();
    let cert = f.vault.certificate(&f.officer, cert).unwrap();
    let scan = cert.body["sanitization"]["details"]["search_index"]["byte_scan"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        scan.starts_with("not repeated")
            && scan
                .contains("found the deleted search beacons' tags in 1 file(s), each gone since")
            && !scan.contains("beacons-aside.bak"),
        "{scan}"
    );
    f.vault.close().unwrap();
}

/// A record ID from its 16 stored bytes.
fn record_id(b: &[u8]) -> RecordId {
    uuid::Uuid::from_slice(b)
        .unwrap()
        .to_string()
        .parse()
        .unwrap()
}

/// Every file under `dir` holding any of `needles`, with the needle's index.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<(String, usize)> {
    let mut hits = Vec::new();
    for p in files_under(dir) {
        let bytes = std::fs::read(&p).unwrap_or_default();
        for (i, n) in needles.iter().enumerate() {
            if bytes.windows(n.len()).any(|w| w == &n[..]) {
                hits.push((p.display().to_string(), i));
            }
        }
    }
    hits
}

#[test]
fn the_vault_holds_no_ssn_nor_an_unkeyed_hash_and_a_disposal_leaves_no_beacon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = counter_vault(&dir);
    let p = put_people(&f);
    let f = f.reopen();
    // No SSN in any form, nor its SHA-256 (raw, hex, or its first 8 bytes).
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for s in [
        "123-45-6789",
        "123456789",
        "234-56-7890",
        "234567890",
        "345678901",
    ] {
        needles.push(s.as_bytes().to_vec());
        let h = sha2::Sha256::digest(s.as_bytes());
        needles.push(h.to_vec());
        needles.push(h[..8].to_vec());
        needles.push(hex::encode(h).into_bytes());
    }
    let hits = files_holding(&dir, &needles);
    assert!(
        hits.is_empty(),
        "plaintext or unkeyed hashes on disk: {hits:?}"
    );
    // The control: the scan sees a tag that is on disk.
    f.vault.close().unwrap();
    let before = beacon_tags(&dir);
    let jose_tags = before[&p.jose].clone();
    assert!(
        jose_tags.len() > 5,
        "José's record has its beacon rows: {}",
        jose_tags.len()
    );
    assert!(
        !files_holding(&dir.join("records"), &jose_tags).is_empty(),
        "the byte scan must see beacon tags before the disposal"
    );
    let f = Fixture {
        vault: crate::common::open_vault(&dir, &f.clock),
        ..f
    };
    let out = f
        .vault
        .dispose(
            &f.officer,
            &DisposalRequest {
                scope: DisposalScope::Subject(p.jose_subject),
                parties: DisposalParties {
                    data_owner: "Example Retail LLC".into(),
                    ..DisposalParties::default()
                },
                dry_run: false,
            },
        )
        .unwrap();
    let cert = f
        .vault
        .certificate(&f.officer, out.certificate_id.unwrap())
        .unwrap();
    let report = vault_core::certificate::verify(&cert, &f.vault.certificate_public_key());
    // Found no more, by any of its values.
    let e = Match::Exact;
    assert!(
        find(&f.vault, &f.clerk, ty(FieldType::Ssn), "234-56-7890", e)
            .unwrap()
            .is_empty()
    );
    assert!(
        find(&f.vault, &f.clerk, ty(FieldType::GivenName), "jose", e)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        find(&f.vault, &f.clerk, ty(FieldType::Ssn), "123456789", e)
            .unwrap()
            .len(),
        2
    );
    f.vault.close().unwrap();
    // Not a tag of the disposed record's rows in any file of the vault.
    let hits = files_holding(&dir, &jose_tags);
    assert!(
        hits.is_empty(),
        "beacon rows of a disposed record remain: {hits:?}"
    );
    let after = beacon_tags(&dir);
    assert!(!after.contains_key(&p.jose));
    assert_eq!(after.len(), before.len() - 1);
    // The certificate's account of it (checked after the independent scan).
    let si = &cert.body["sanitization"]["details"]["search_index"];
    assert_eq!(si["beacons_deleted"], json!(jose_tags.len() - 1), "{si}");
    assert_eq!(si["residue_files"], json!([]), "{si}");
    let scan = si["byte_scan"].as_str().unwrap();
    assert!(scan.ends_with(": 0 file(s) hold them"), "{scan}");
    assert!(report.vault_signature_ok && report.fields_ok, "{report:?}");
}

#[test]
fn a_clerk_cannot_bulk_reveal_and_a_contractor_cannot_find() {
    let tmp = tempfile::tempdir().unwrap();
    let f = counter_vault(&tmp.path().join("v"));
    for i in 0..25u32 {
        f.vault
            .put_record(
                &f.clerk,
                COUNTER,
                SubjectId::new(),
                &json!({"given_name": "Kim", "family_name": format!("Smith{}", char::from(b'a' + (i % 26) as u8)),
                        "ssn": format!("5{:02}{:02}{:04}", 10 + i, 11 + i, 2000 + i)}),
            )
            .unwrap();
    }
    let (v, c) = (&f.vault, &f.clerk);
    // One letter: refused before any lookup.
    let e = find(v, c, ty(FieldType::FamilyName), "s", Match::Prefix).unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    // A prefix matching 25 records: refused whole, nothing returned.
    let e = find(v, c, ty(FieldType::FamilyName), "smi", Match::Prefix).unwrap_err();
    assert!(e.to_string().contains("too many records"), "{e}");
    let e = find(v, c, ty(FieldType::GivenName), "kim", Match::Exact).unwrap_err();
    assert!(e.to_string().contains("too many records"), "{e}");
    // A full SSN from a clerk is fine, and the SSN comes back masked.
    let r = v
        .find_records(
            c,
            &FindQuery {
                collection: COUNTER.into(),
                target: ty(FieldType::Ssn),
                value: SecretString::from("510-11-2000"),
                mode: Match::Exact,
            },
        )
        .unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].fields["ssn"], json!("***-**-2000"));
    // A prefix search is for names only.
    assert!(find(v, c, ty(FieldType::Ssn), "510", Match::Prefix).is_err());
    // Roles without the find permission.
    for s in [&f.contractor, &f.admin, &f.auditor] {
        let e = find(v, s, ty(FieldType::Ssn), "510-11-2000", Match::Exact).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    }
    // The refusals are audited with their counts, as denied.
    let events = v
        .audit_events(&f.officer, &vault_core::audit::EventFilter::default())
        .unwrap();
    let broad = events
        .iter()
        .filter(|e| e.action == "record.find" && e.targets.contains(&"hits:25".to_string()))
        .count();
    assert_eq!(broad, 2);
    // A clerk may not rebuild the indexes; an officer may.
    assert!(matches!(
        v.reindex_collection(c, COUNTER).unwrap_err(),
        Error::PermissionDenied(_)
    ));
    assert_eq!(v.reindex_collection(&f.officer, COUNTER).unwrap(), 25);
}

/// Records written before a field became searchable are found after an
/// officer's reindex, and only then.
#[test]
fn a_field_made_searchable_is_found_after_a_reindex() {
    let tmp = tempfile::tempdir().unwrap();
    let f = counter_vault(&tmp.path().join("v"));
    let id = f
        .vault
        .put_record(
            &f.clerk,
            COUNTER,
            SubjectId::new(),
            &json!({"given_name": "Lee", "family_name": "Park", "notes": "x"}),
        )
        .unwrap();
    // `customers` has no searchable field: a find there is refused.
    let e = f
        .vault
        .find_records(
            &f.clerk,
            &FindQuery {
                collection: crate::common::CUSTOMERS.into(),
                target: ty(FieldType::Ssn),
                value: SecretString::from("123-45-6789"),
                mode: Match::Exact,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("no searchable"), "{e}");
    let mut schema = crate::common::customers_schema();
    let c = f
        .vault
        .put_record(
            &f.clerk,
            crate::common::CUSTOMERS,
            SubjectId::new(),
            &json!({"given_name": "Ida", "family_name": "Wells", "ssn": "678-90-1234"}),
        )
        .unwrap();
    schema.set_searchable(vec!["ssn".into()]).unwrap();
    f.vault
        .update_collection(&f.admin, crate::common::CUSTOMERS, &schema)
        .unwrap();
    let q = || FindQuery {
        collection: crate::common::CUSTOMERS.into(),
        target: ty(FieldType::Ssn),
        value: SecretString::from("678901234"),
        mode: Match::Exact,
    };
    assert!(
        f.vault
            .find_records(&f.clerk, &q())
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(
        f.vault
            .reindex_collection(&f.officer, crate::common::CUSTOMERS)
            .unwrap(),
        1
    );
    let r = f.vault.find_records(&f.clerk, &q()).unwrap();
    assert_eq!(
        r.records.iter().map(|v| v.meta.id).collect::<Vec<_>>(),
        vec![c]
    );
    let _ = id;
}

/// Per record: every SSN number it may have had, and the last acknowledged one.
type History = HashMap<RecordId, (Vec<u64>, u64)>;

/// Finds racing updates and disposals: a find never returns a record whose
/// certificate was issued before the find started, and after the run every
/// live record is found by its last acknowledged SSN and by no earlier one,
/// and no certified record has a beacon row left.
#[test]
fn finds_racing_updates_and_disposals_see_no_certified_record_and_lose_no_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let f = counter_vault(&dir);
    let next = Arc::new(AtomicU64::new(1));
    let ssn = |n: u64| {
        format!(
            "{:03}{:02}{:04}",
            100 + n / 9000,
            11 + (n / 100) % 80,
            1 + n % 9000
        )
    };
    const N: usize = 24;
    let mut recs = Vec::new();
    for _ in 0..N {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let subject = SubjectId::new();
        let id = f
            .vault
            .put_record(
                &f.clerk,
                COUNTER,
                subject,
                &json!({"given_name": "Rae", "family_name": "Cho", "ssn": ssn(n)}),
            )
            .unwrap();
        recs.push((id, subject, n));
    }
    // Per record: every SSN it ever had, the last acknowledged one.
    let history: Arc<Mutex<History>> = Arc::new(Mutex::new(
        recs.iter()
            .map(|(id, _, n)| (*id, (vec![*n], *n)))
            .collect(),
    ));
    let certified: Arc<Mutex<BTreeSet<RecordId>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let unfinished: Mutex<BTreeSet<RecordId>> = Mutex::new(BTreeSet::new());
    let stop = Arc::new(AtomicBool::new(false));
    let vault = &f.vault;
    /// Stops the other threads however the disposer ends (a panic too).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|sc| {
        let _stop = StopOnDrop(stop.clone());
        // Two updaters, each with its own half of the records (so that the
        // order of acknowledgements is the order of updates): new unique SSNs.
        for t in 0..2u64 {
            let (history, next, recs, stop) = (history.clone(), next.clone(), &recs, stop.clone());
            let s = crate::common::login(vault, "clerk");
            sc.spawn(move || {
                let mut rng = crate::common::Rng(0x9e37_79b9 + t);
                while !stop.load(Ordering::SeqCst) {
                    let (id, _, _) = recs[(rng.below(N as u64 / 2) * 2 + t) as usize];
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    // The SSN is listed before the update can be seen, so
                    // the final check knows every value it may have had.
                    history.lock().unwrap().get_mut(&id).unwrap().0.push(n);
                    match vault.patch_record(&s, id, &json!({ "ssn": ssn(n) })) {
                        Ok(_) => history.lock().unwrap().get_mut(&id).unwrap().1 = n,
                        Err(Error::Disposed { .. } | Error::DisposalInProgress) => {}
                        Err(e) => panic!("update: {e}"),
                    }
                }
            });
        }
        // Two finders: a record certified before the find began is never returned.
        for t in 0..2u64 {
            let (history, certified, recs, stop) =
                (history.clone(), certified.clone(), &recs, stop.clone());
            let s = crate::common::login(vault, "clerk");
            sc.spawn(move || {
                let mut rng = crate::common::Rng(0x51ed + t);
                while !stop.load(Ordering::SeqCst) {
                    let (id, _, _) = recs[rng.below(N as u64) as usize];
                    let n = history.lock().unwrap()[&id].1;
                    let gone: BTreeSet<RecordId> = certified.lock().unwrap().clone();
                    let hits = find(vault, &s, ty(FieldType::Ssn), &ssn(n), Match::Exact).unwrap();
                    for h in &hits {
                        assert!(!gone.contains(h), "find returned certified record {h}");
                    }
                }
            });
        }
        // The disposer: half the subjects, one batch each, while the rest runs.
        let s = crate::common::login(vault, "officer");
        for (id, subject, _) in recs.iter().take(N / 2) {
            let out = match vault.dispose(
                &s,
                &DisposalRequest {
                    scope: DisposalScope::Subject(*subject),
                    parties: DisposalParties {
                        data_owner: "Example Retail LLC".into(),
                        ..DisposalParties::default()
                    },
                    dry_run: false,
                },
            ) {
                Ok(out) => out,
                // A batch that fails its verification (a loaded machine:
                // obsolete files not yet deleted after the purge's wait)
                // issues no certificate and stays pending: safe, and not
                // what this test is about.
                Err(Error::DisposalFailed(why)) => {
                    eprintln!("disposal of {subject} failed verification (no certificate): {why}");
                    unfinished.lock().unwrap().insert(*id);
                    continue;
                }
                Err(e) => panic!("disposal of {subject}: {e}"),
            };
            assert!(out.certificate_id.is_some());
            certified.lock().unwrap().insert(*id);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let history = history.lock().unwrap().clone();
    let certified = certified.lock().unwrap().clone();
    let unfinished = unfinished.lock().unwrap().clone();
    assert!(
        unfinished.len() <= 2,
        "{} of {} disposals failed",
        unfinished.len(),
        N / 2
    );
    for (id, (all, last)) in history.iter().filter(|(id, _)| !unfinished.contains(id)) {
        for n in all {
            let hits = find(vault, &f.clerk, ty(FieldType::Ssn), &ssn(*n), Match::Exact).unwrap();
            if certified.contains(id) || n != last {
                assert!(
                    !hits.contains(id),
                    "record {id} found by SSN #{n} (last #{last})"
                );
            } else {
                assert_eq!(
                    hits,
                    vec![*id],
                    "record {id} not found by its last SSN #{n}"
                );
            }
        }
    }
    f.vault.close().unwrap();
    let rows = beacon_tags(&dir);
    for id in &certified {
        assert!(
            !rows.contains_key(id),
            "certified record {id} keeps beacon rows"
        );
    }
    for (id, _) in history
        .iter()
        .filter(|(id, _)| !certified.contains(id) && !unfinished.contains(id))
    {
        // Exactly the rows of the last version: "Rae" and "Cho" (a word
        // and its 3-letter prefix each), the SSN, and the reverse row. An
        // update that left its old SSN's row behind would show here (a
        // find would not: the old value no longer decrypts to a match).
        assert_eq!(rows[id].len(), 6, "{id}: {} rows", rows[id].len());
    }
}

fn run_with_stdin(
    v: &crate::cli::CliVault,
    user: &str,
    args: &[&str],
    stdin: &str,
) -> crate::cli::Run {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut c = v.user_command(Some(user), args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn pivault");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    crate::cli::Run::from_output(args.join(" "), &out)
}

/// `pivault record find --ssn -`: the value from stdin, never a flag; the
/// answer is the `record-find` document, masked; `collection reindex` is an
/// officer's.
#[test]
fn the_cli_finds_by_a_value_on_stdin_and_refuses_one_given_as_a_flag() {
    let v = crate::cli::CliVault::standard();
    let schema = v.input_file("counter.json", &counter_schema().to_json());
    v.run(
        Some("admin"),
        &[
            "--json",
            "collection",
            "create",
            COUNTER,
            "--schema",
            schema.to_str().unwrap(),
        ],
    )
    .ok();
    let shown = v.run(Some("clerk"), &["--json", "collection", "show", COUNTER]);
    shown.ok();
    assert_eq!(shown.json()["fields"][2]["searchable"], json!(true));
    let rec = v.input_file(
        "rec.json",
        &json!({"given_name": "Zoë", "family_name": "Ng", "ssn": "219-09-9998", "phone": "617 555 0142"})
            .to_string(),
    );
    let put = v.run(
        Some("clerk"),
        &[
            "--json",
            "record",
            "put",
            COUNTER,
            "--data",
            rec.to_str().unwrap(),
        ],
    );
    put.ok();
    let id = put.json()["record_id"].as_str().unwrap().to_owned();
    let r = run_with_stdin(
        &v,
        "clerk",
        &["--json", "record", "find", COUNTER, "--ssn", "-"],
        "219099998\n",
    );
    r.ok();
    let doc = r.json();
    assert_eq!(doc["document"], "record-find");
    assert_eq!(doc["count"], 1, "{doc}");
    assert_eq!(doc["records"][0]["record"]["record_id"], json!(id));
    assert_eq!(doc["records"][0]["fields"]["ssn"], json!("***-**-9998"));
    let r = run_with_stdin(
        &v,
        "clerk",
        &[
            "--json", "record", "find", COUNTER, "--name", "-", "--prefix",
        ],
        "zoe\n",
    );
    r.ok();
    assert_eq!(r.json()["count"], 1);
    let r = run_with_stdin(
        &v,
        "clerk",
        &["--json", "record", "find", COUNTER, "--phone", "-"],
        "6175550142\n",
    );
    r.ok();
    assert_eq!(r.json()["count"], 1);
    // A value as a flag is refused before anything is looked up.
    let r = v.run(
        Some("clerk"),
        &["--json", "record", "find", COUNTER, "--ssn", "219099998"],
    );
    assert_eq!(r.error_code(), "invalid_input");
    assert!(!r.all_output().contains("219099998"), "{}", r.all_output());
    // An auditor has no find (nor a contractor: the library and HTTP tests).
    let r = run_with_stdin(
        &v,
        "auditor",
        &["--json", "record", "find", COUNTER, "--ssn", "-"],
        "219099998\n",
    );
    assert_eq!(r.error_code(), "permission_denied");
    // Reindex: officers only.
    let r = v.run(Some("clerk"), &["--json", "collection", "reindex", COUNTER]);
    assert_eq!(r.error_code(), "permission_denied");
    let r = v.run(
        Some("officer"),
        &["--json", "collection", "reindex", COUNTER],
    );
    r.ok();
    assert_eq!(r.json()["indexed"], 1);
    // Nothing the clerk typed reached the transcript or the vault's files.
    assert!(!String::from_utf8_lossy(&v.transcript()).contains("219099998"));
    for p in files_under(&v.dir) {
        let b = std::fs::read(&p).unwrap_or_default();
        for needle in [&b"219099998"[..], b"219-09-9998"] {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle),
                "{}",
                p.display()
            );
        }
    }
}

/// The same over HTTP: POST with the value in the body (never the URL),
/// the `record-find` document, 403 for a contractor, 422 for a one-letter
/// prefix.
#[test]
fn the_server_finds_by_a_value_in_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let f = counter_vault(&vault_dir);
    let p = put_people(&f);
    f.vault.close().unwrap();
    let srv = crate::server::start_on(dir, vault_dir, crate::common::PASSPHRASE, &[]);
    let clerk = srv.token("clerk");
    let a = srv.call(
        "POST",
        "/v1/collections/counter/find",
        Some(&clerk),
        Some(&json!({"type": "ssn", "value": "123 45 6789"})),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let doc = a.json();
    assert_eq!(doc["document"], "record-find");
    let mut got: Vec<String> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["record_id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want = vec![p.ann.to_string(), p.ann_twin.to_string()];
    want.sort();
    assert_eq!(got, want);
    assert!(!a.text.contains("6789\"") || a.text.contains("***-**-6789"));
    let a = srv.call(
        "POST",
        "/v1/collections/counter/find",
        Some(&clerk),
        Some(&json!({"type": "family_name", "value": "gar", "match": "prefix"})),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["count"], 1);
    let a = srv.call(
        "POST",
        "/v1/collections/counter/find",
        Some(&clerk),
        Some(&json!({"type": "family_name", "value": "g", "match": "prefix"})),
    );
    assert_eq!(a.status, 422, "{}", a.text);
    let contractor = srv.token("contractor");
    let a = srv.call(
        "POST",
        "/v1/collections/counter/find",
        Some(&contractor),
        Some(&json!({"type": "ssn", "value": "123456789"})),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let officer = srv.token("officer");
    let a = srv.call(
        "POST",
        "/v1/collections/counter/reindex",
        Some(&officer),
        Some(&json!({})),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["indexed"], 64);
    let (_, vault_dir, _tmp) = srv.stop();
    // No value typed into a find reached a file (the server's log included).
    for p in files_under(vault_dir.parent().unwrap()) {
        let b = std::fs::read(&p).unwrap_or_default();
        for needle in [&b"123 45 6789"[..], b"123456789", b"123-45-6789"] {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle),
                "{}",
                p.display()
            );
        }
    }
}
