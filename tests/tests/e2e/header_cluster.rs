//! The root-key header on the keystore cluster (issue 16, `header.rs`
//! `Place::Keystore`): a vault whose keystore is on a cluster keeps its
//! key slots and its sealed signing keys as rows of its keystore's
//! `header` table; the header file keeps the static part. Needs the
//! cluster of `scripts/cluster.sh` and runs one at a time with it.

use std::path::Path;

use vault_core::Error;
use vault_core::ids::SubjectId;
use vault_core::secret::SecretString;
use vault_core::vault::{DisposalScope, Vault, custodian_context};

use crate::cluster::{cluster, primary_member, psql_in, request, serial};
use crate::common::{self, Fixture};

/// Bytes of the header file before its slots.
const STATIC: usize = 100;
const NEW_PASSPHRASE: &str = "Custodian-Rotated-Heliotrope-48!";

fn body(n: u32) -> serde_json::Value {
    serde_json::json!({ "given_name": "Header", "family_name": "Cluster", "ssn": format!("123-45-{:04}", 2000 + n) })
}

/// The vault's keystore schema.
fn schema(fx: &Fixture) -> String {
    format!("pv_{}", hex::encode(fx.vault.id().as_bytes()))
}

/// The header rows of `schema` (name, bytes), as the cluster's superuser
/// reads them.
fn rows(schema: &str) -> Vec<(String, Vec<u8>)> {
    let out = psql_in(
        &primary_member(&cluster()),
        "pivault_keys",
        &format!(
            "SELECT convert_from(k, 'UTF8') || ':' || encode(v, 'hex') FROM {schema}.header ORDER BY k"
        ),
    )
    .expect("the header rows");
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_owned(), hex::decode(v).unwrap())
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a Vec<u8>> {
    rows.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn open(
    dir: &Path,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    pass: &str,
) -> vault_core::Result<Vault> {
    Vault::open(dir, &SecretString::from(pass), common::open_options(clock))
}

/// A disposal's ratchet deletes the old root-key slot's row, and its purge
/// takes the row's bytes off every member: before, the slot is in the
/// members' files (the scan can see it); after, it is on none, and the
/// vault directory never held it. A passphrase change on the cluster
/// replaces the slot and the signing keys there, and the old passphrase
/// then opens nothing.
#[test]
fn the_old_root_key_slot_leaves_every_member_with_the_disposal_that_ratchets() {
    let _one = serial();
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = common::fast_vault_on(&dir, Some(common::cluster_keystore()));
    let s = schema(&fx);
    let before = rows(&s);
    let names: Vec<&str> = before.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["signing", "slot0", "static"], "{names:?}");
    let header = std::fs::read(dir.join("header")).unwrap();
    assert_eq!(row(&before, "static").unwrap()[..], header[..STATIC]);
    assert!(
        header[STATIC..].iter().all(|&b| b == 0),
        "no slot in the file"
    );
    assert!(!dir.join("signing").exists());
    let old_slot = row(&before, "slot0").unwrap().clone();
    let sealed = row(&before, "signing").unwrap().clone();
    // Positive control: the members' files hold the slot now.
    psql_in(&primary_member(&cluster()), "postgres", "CHECKPOINT").unwrap();
    assert!(
        !c.files_holding(std::slice::from_ref(&old_slot)).is_empty(),
        "the scan must see the live slot on the members"
    );

    let subject = SubjectId::new();
    let id = fx
        .vault
        .put_record(&fx.clerk, common::CUSTOMERS, subject, &body(1))
        .unwrap();
    let e0 = fx.vault.epoch();
    let cert = fx
        .vault
        .dispose(&fx.officer, &request(DisposalScope::Record(id)))
        .unwrap()
        .certificate_id
        .expect("a certificate");
    assert!(fx.vault.epoch() > e0);
    // The certificate's byte scan looked for the old slot too.
    let doc = fx.vault.certificate(&fx.auditor, cert).unwrap();
    let scan = doc.body.to_string();
    assert!(
        scan.contains("2 pre-disposal wrapped key(s) (every version of every record, and the root-key slot the ratchet deleted)"),
        "{scan}"
    );
    let after = rows(&s);
    assert!(row(&after, "slot0").is_none(), "the old slot's row is gone");
    assert!(row(&after, "slot1").is_some(), "the new epoch's slot");
    assert_eq!(
        c.files_holding(std::slice::from_ref(&old_slot)),
        Vec::<std::path::PathBuf>::new(),
        "the old root-key slot on a member after the disposal's purge"
    );
    assert_eq!(
        common::files_under(&dir)
            .into_iter()
            .filter(|f| std::fs::read(f)
                .is_ok_and(|b| b.windows(old_slot.len()).any(|w| w == old_slot)))
            .count(),
        0,
        "the vault directory never held the slot"
    );

    // A passphrase change: new slot and signing keys on the cluster.
    let ctx = custodian_context(Some(4242));
    fx.vault
        .change_passphrase(
            &SecretString::from(common::PASSPHRASE),
            &SecretString::from(NEW_PASSPHRASE),
            &ctx,
        )
        .unwrap();
    let changed = rows(&s);
    assert_ne!(row(&changed, "signing"), Some(&sealed), "resealed");
    assert!(row(&changed, "signing.new").is_none(), "committed");
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    assert!(matches!(
        open(&dir, &clock, common::PASSPHRASE),
        Err(Error::WrongPassphrase)
    ));
    let v = open(&dir, &clock, NEW_PASSPHRASE).unwrap();
    assert!(!dir.join("signing").exists());
    v.close().unwrap();
}

/// A vault made by an earlier build keeps its slots in the header file
/// and its signing keys in `signing` beside a cluster keystore: at open
/// they move onto the cluster in one commit (the same bytes) and the
/// directory keeps neither. Once the cluster holds the header it alone
/// counts: slots written back into the file (an insider's, or the old
/// layout restored from a copy) are erased unread, and a header file
/// whose static part the cluster does not hold is refused.
#[test]
fn a_header_in_files_moves_onto_the_keystore_cluster_and_the_file_no_longer_counts() {
    let _one = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let fx = common::fast_vault_on(&dir, Some(common::cluster_keystore()));
    let id = fx
        .vault
        .put_record(&fx.clerk, common::CUSTOMERS, SubjectId::new(), &body(2))
        .unwrap();
    let s = schema(&fx);
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    // The earlier layout: the rows written back into the files, gone
    // from the cluster.
    let moved = rows(&s);
    let mut old = std::fs::read(dir.join("header")).unwrap();
    old[STATIC..STATIC + 101].copy_from_slice(row(&moved, "slot0").unwrap());
    std::fs::write(dir.join("header"), &old).unwrap();
    let signing = dir.join("signing");
    std::fs::write(&signing, row(&moved, "signing").unwrap()).unwrap();
    for f in [&dir.join("header"), &signing] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    psql_in(
        &primary_member(&cluster()),
        "pivault_keys",
        &format!("DELETE FROM {s}.header"),
    )
    .unwrap();

    let v = open(&dir, &clock, common::PASSPHRASE).expect("opens, moving the header");
    assert_eq!(rows(&s), moved, "the same rows, the same bytes");
    let header = std::fs::read(dir.join("header")).unwrap();
    assert!(
        header[STATIC..].iter().all(|&b| b == 0),
        "the file's slots zeroed"
    );
    assert!(!signing.exists(), "the signing file removed");
    let clerk = common::login(&v, "clerk");
    v.get_record(&clerk, id, &[], None).unwrap();
    let trail = v.audit_verify(&common::login(&v, "officer")).unwrap();
    assert!(trail.ok(), "the same signing keys: {trail:?}");
    v.close().unwrap();

    // Slots planted in the file: erased, never read.
    std::fs::write(dir.join("header"), &old).unwrap();
    let v = open(&dir, &clock, common::PASSPHRASE).unwrap();
    v.close().unwrap();
    let header = std::fs::read(dir.join("header")).unwrap();
    assert!(
        header[STATIC..].iter().all(|&b| b == 0),
        "planted slots erased"
    );
    assert_eq!(rows(&s), moved, "the cluster's rows untouched");

    // A static part the cluster does not hold (KDF cost edited, checksum
    // fixed): refused before any key derivation can matter.
    let mut edited = header.clone();
    edited[32..36].copy_from_slice(&2u32.to_be_bytes());
    let sum = vault_core::crypto::sha256(&edited[..68]);
    edited[68..STATIC].copy_from_slice(&sum);
    std::fs::write(dir.join("header"), &edited).unwrap();
    match open(&dir, &clock, common::PASSPHRASE) {
        Err(Error::Integrity(m)) => assert!(m.contains("another header"), "{m}"),
        other => panic!("{:?}", other.map(|_| "opened")),
    }
    std::fs::write(dir.join("header"), &header).unwrap();

    // The rows lost and no slot in the file: refused, nothing written.
    psql_in(
        &primary_member(&cluster()),
        "pivault_keys",
        &format!("DELETE FROM {s}.header"),
    )
    .unwrap();
    match open(&dir, &clock, common::PASSPHRASE) {
        Err(Error::Integrity(m)) => assert!(m.contains("not on the keystore cluster"), "{m}"),
        other => panic!("{:?}", other.map(|_| "opened")),
    }
    assert!(rows(&s).is_empty(), "nothing written to the cluster");
}
