//! Disposal batches: crypto-shredding with proof (DESIGN §4.2).
//!
//! A batch destroys the key of every record in scope and every copy of it
//! the vault's files could still reach: DEK deletion, bucket rotation, epoch
//! ratchet of the root key, physical purge of the keystore; then it deletes
//! the ciphertexts, verifies, appends the ledger and the audit trail, and
//! issues a signed certificate. A synced intent is written first and each
//! step is recorded, so a crash at any step resumes the batch on next open.
//!
//! This is a child module of `vault` so it can reach the facade's fields.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Context, Session, Vault};
use crate::access::{Permission, Role};
use crate::audit::Channel;
use crate::certificate::{self, Certificate};
use crate::clock::format_ms;
use crate::error::{Error, Result};
use crate::ids::{CertificateId, CollectionName, DisposalId, RecordId, SubjectId, UserId};
use crate::keystore::{FoundCopy, PurgeEvidence};
use crate::secret::SecretKey;
use crate::store::{self, RecordRow, RecordState};

/// What a disposal covers.
#[derive(Clone, Debug)]
pub enum DisposalScope {
    /// One record.
    Record(RecordId),
    /// Every record of one data subject.
    Subject(SubjectId),
    /// Records of a collection (or all) created, or last updated, before a time.
    Query {
        /// Only this collection.
        collection: Option<CollectionName>,
        /// Cut-off, unix ms (exclusive).
        before_ms: i64,
        /// Compare the last update rather than the creation time.
        by_updated: bool,
    },
    /// Everything past its collection's retention period.
    PastRetention,
    /// A list of records, in one batch with one certificate (`dispose from
    /// FILE`, a server's list). An unknown ID refuses the whole batch;
    /// records already disposed are skipped, so a list can be run again.
    Records(Vec<RecordId>),
}

/// Who a disposal is for and who does it, for the certificate.
#[derive(Clone, Debug, Default)]
pub struct DisposalParties {
    /// The data owner (the business), name.
    pub data_owner: String,
    /// The data owner's address.
    pub data_owner_address: Option<String>,
    /// Operator's title (for the attestation).
    pub operator_title: Option<String>,
    /// Operator's organisation.
    pub operator_organisation: Option<String>,
    /// The disposal contractor's organisation, when one acts.
    pub contractor_organisation: Option<String>,
    /// The contract reference, when a contractor acts.
    pub contract_reference: Option<String>,
    /// The contractor's certification, when one is given: scheme and
    /// certificate number, e.g. "NAID AAA certificate 12345, endorsement
    /// for electronic media" (REQUIREMENTS §C; anchors 2026-12 §4.1).
    pub contractor_certification: Option<String>,
}

/// The fingerprint of the records a disposal destroys (SHA-256 over the
/// sorted record IDs, hex): what a preview showed, for
/// [`Vault::dispose_as_previewed`]. Not a secret: a check that the
/// confirmation destroys what was previewed.
pub fn plan_fingerprint(records: &mut dyn Iterator<Item = RecordId>) -> String {
    use sha2::Digest;
    let mut ids: Vec<[u8; 16]> = records.map(|r| *r.as_bytes()).collect();
    ids.sort_unstable();
    let mut h = sha2::Sha256::new();
    h.update(b"pivault-disposal-plan/1");
    for id in &ids {
        h.update(id);
    }
    hex::encode(h.finalize())
}

/// A disposal request.
#[derive(Clone, Debug)]
pub struct DisposalRequest {
    /// Scope.
    pub scope: DisposalScope,
    /// Parties named on the certificate.
    pub parties: DisposalParties,
    /// Plan only: list what would be disposed and excluded; change nothing.
    pub dry_run: bool,
}

/// The result of a disposal (or of its dry run).
#[derive(Clone, Debug)]
pub struct DisposalOutcome {
    /// The batch, `None` on a dry run or when nothing was in scope.
    pub disposal_id: Option<DisposalId>,
    /// The certificate issued.
    pub certificate_id: Option<CertificateId>,
    /// Records disposed (or that would be).
    pub records: Vec<RecordId>,
    /// Distinct subjects among them.
    pub subjects: u64,
    /// Distinct subjects among them who are Massachusetts residents, read
    /// from the records themselves (see `Vault::residence`). A dry run
    /// over more than [`PREVIEW_RESIDENCE_MAX`] records leaves it `None`
    /// (the disposal counts them all for its certificate).
    pub ma_residents: Option<u64>,
    /// Records in scope but excluded, with the reason (legal hold).
    pub excluded: Vec<(RecordId, String)>,
    /// Epochs before and after.
    pub epochs: Option<(u64, u64)>,
    /// Time the batch took, ms.
    pub duration_ms: u64,
}

/// The most records a dry run reads to count Massachusetts residents: each
/// is decrypted, so a preview of a whole large collection would be slow
/// (the page budget is 200 ms at 10^5 records). The disposal counts them
/// all, whatever their number, for its certificate.
pub const PREVIEW_RESIDENCE_MAX: usize = 2_000;

/// Steps of a batch, in order; stored with the intent so a crash resumes
/// (and shown by a progress page: [`DisposalSummary::step`] is one of them).
pub const STEPS: [&str; 8] = [
    "intent",
    "keys_deleted",
    "buckets_rotated",
    "epoch_ratcheted",
    "keystore_purged",
    "ciphertexts_deleted",
    "verified",
    "complete",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BatchRecord {
    id: String,
    subject: String,
    /// The live version when the batch started.
    version: u32,
    collection: String,
    /// Every key version destroyed (all of the record's keys, found by
    /// prefix under the bucket lock); empty in batches of older builds,
    /// which destroyed `version` only.
    #[serde(default)]
    versions: Vec<u32>,
    /// Whether the record's subject lived in Massachusetts, read from the
    /// record while it could still be decrypted; `None` in batches of
    /// older builds (their certificates carry no resident count).
    #[serde(default)]
    ma_resident: Option<bool>,
    /// The record could not be read, so `ma_resident` is its collection's
    /// default; the certificate says how many.
    #[serde(default)]
    residence_by_default: bool,
}

/// A record's residence as [`Vault::residence`] found it, for the version
/// it read.
#[derive(Clone, Copy, Debug)]
struct Residence {
    version: u32,
    /// The subject its row names (verified when `read`).
    subject: SubjectId,
    ma: bool,
    /// Read from the record (`false`: the collection's default).
    read: bool,
}

impl BatchRow {
    /// Adds the names of the bucket keys a rotation replaces; whether any
    /// was new.
    fn keep_replaced(&mut self, replaced: &[(u32, [u8; 32])]) -> bool {
        let mut added = false;
        for (bucket, name) in replaced {
            let named = (*bucket, hex::encode(name));
            if !self.replaced_keys.contains(&named) {
                self.replaced_keys.push(named);
                added = true;
            }
        }
        added
    }

    /// Records whose residence is their collection's default because they
    /// could not be read when the batch started.
    fn residence_by_default(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r.residence_by_default)
            .count()
    }

    /// Distinct subjects of the batch who are Massachusetts residents;
    /// `None` when a record of an older build carries no residence.
    fn ma_resident_count(&self) -> Option<u64> {
        let mut ma = BTreeSet::new();
        for r in &self.records {
            if r.ma_resident? {
                ma.insert(r.subject.as_str());
            }
        }
        Some(ma.len() as u64)
    }
}

impl BatchRecord {
    /// The key versions this batch destroys.
    fn destroyed_versions(&self) -> Vec<u32> {
        if self.versions.is_empty() {
            vec![self.version]
        } else {
            self.versions.clone()
        }
    }
}

/// A batch's byte-scan needles, kept in this process's memory only
/// (written anywhere, they would be a copy) from the deletion of its keys
/// until it is verified: the wrapped data keys of every version and the
/// old root-key slots. A batch resumed without them (its keys deleted by a
/// process that ended) cannot scan again; but a verification that found
/// the keys' bytes somewhere must not be answered by a retry that no longer
/// looks, or an insider's copy found once would pass the retry unseen (a
/// certificate that says `not repeated` over a copy it saw).
pub(crate) struct Needles {
    wrapped: zeroize::Zeroizing<Vec<Vec<u8>>>,
    old_slots: zeroize::Zeroizing<Vec<Vec<u8>>>,
    /// The deleted beacon rows' tags and key ranges (the beacon scan's
    /// needles and where it reads): a retry deletes no beacon row, so
    /// without them it could not look again for a copy found once.
    beacon_tags: zeroize::Zeroizing<Vec<Vec<u8>>>,
    beacon_ranges: Vec<Vec<u8>>,
    /// Whether the tags include the first deletion's (made by a run in
    /// this process): only then can a scan with them clear a copy a scan
    /// once found (a retry after a restart deletes only rows planted
    /// since, and scans for their tags alone).
    beacons_whole: bool,
}

/// Folds a scan with needles into the copies a batch keeps: a scan with
/// the `whole` needles (those the copies were found with) that read every
/// place it answers (each hit a copy it read, no member unreached, no file
/// unread) replaces them, since it would have read an earlier copy still
/// where it was; any other scan adds to them, as it may have missed one.
/// Whether the kept copies changed.
fn keep_copies(kept: &mut Vec<FoundCopy>, scan: &crate::keystore::ByteScan, whole: bool) -> bool {
    let before = kept.clone();
    if whole && scan.hits.len() == scan.copies.len() {
        kept.clone_from(&scan.copies);
    } else {
        kept.extend(scan.copies.iter().cloned());
    }
    kept.sort();
    kept.dedup();
    *kept != before
}

/// What a verification that cannot scan (its needles went with the
/// process that deleted the keys or the beacon rows) can still say of the
/// `copies` the batch's latest scan read them in: one still there, or one
/// that cannot be checked, is a problem (the batch waits: a retry must not
/// certify over a copy it was shown); all gone, the scan's line says so,
/// and that a copy elsewhere could not be looked for. Empty: nothing seen.
fn earlier_copies(
    what: &str,
    copies: &[FoundCopy],
    present: impl FnOnce() -> Result<Vec<FoundCopy>>,
    problems: &mut Vec<String>,
) -> String {
    if copies.is_empty() {
        return String::new();
    }
    let list = |c: &[FoundCopy]| {
        c.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match present() {
        // The count only: the names are an insider's to choose, and the
        // certificate is signed text handed to others.
        Ok(there) if there.is_empty() => format!(
            "; an earlier verification of this batch found the {what} in {} file(s), each gone since; a copy elsewhere could not be looked for",
            copies.len()
        ),
        Ok(there) => {
            problems.push(format!(
                "an earlier verification of this batch found the {what} in files still there: {}; this process cannot look for them again (they were held only in the memory of the process that deleted them), so the batch waits until those files are gone",
                list(&there)
            ));
            String::new()
        }
        Err(e) => {
            problems.push(format!(
                "an earlier verification of this batch found the {what} in {} file(s) ({}), and they could not be checked gone: {e}",
                copies.len(),
                list(copies)
            ));
            String::new()
        }
    }
}

/// A batch's deleted beacon tags, their key ranges, and whether they
/// include the first deletion's ([`Needles`]).
type TagsAndRanges = (Vec<Vec<u8>>, Vec<Vec<u8>>, bool);

/// How far two wall-clock times of the vault may disagree (a clock stepped
/// back, a standby's machine): a backup taken up to this long before a
/// record's creation time may still hold it.
const CLOCK_SLACK_MS: i64 = 3_600_000;

/// Why a wider scope leaves out a record of an unfinished batch (the
/// reason in [`DisposalOutcome::excluded`]).
pub const IN_UNFINISHED_BATCH: &str =
    "in an unfinished disposal batch, which disposes of it (see disposal list)";

/// Why a record is left out whose row does not read and whose keys are in
/// another bucket than its row's subject's (the reason in
/// [`DisposalOutcome::excluded`]; one record asked for by name is refused).
pub const ROW_SUBJECT_CHANGED: &str = "its row does not read and its keys are under another subject's bucket: the row was changed without the vault's key";

/// Why a record whose row does not read is left out when a held subject
/// shares its key bucket (no hold's reason: the hold may be another
/// subject's).
const UNREAD_HELD_BUCKET: &str = "legal hold on a subject that may be its own (its row does not read, so the subject it names is unverified, and a held subject shares its key bucket)";
/// Why one is left out whose keys are gone or do not unwrap while any
/// subject is held.
const UNREAD_HELD_ANYWHERE: &str = "legal hold on a subject that may be its own (its row does not read and its keys are gone or do not unwrap, so nothing shows whose it is)";
/// Why a contractor's batch leaves out a record whose row does not read
/// and that their scope does not name by ID: its collection is unverified.
pub const UNREAD_OUTSIDE_NAMED_SCOPE: &str = "its row does not read, so the collection it names (and your scope over it) is unverified; only a record your scope names by ID is disposed of so";

/// What stands against disposing of, or repairing, a record whose row does
/// not read ([`Vault::unread_rows_check`]).
pub(crate) enum UnreadRow {
    /// Nothing.
    Clear,
    /// A hold that may apply to it.
    Held(String),
    /// Its keys are in another bucket than its row's subject's.
    Moved,
}

/// Step 6's plan: each record's tombstone row and the beacon writes that
/// go with it.
type Tombstones = Vec<(RecordId, RecordRow, super::search::IndexChange)>;

/// Step 1's work, handed to step 2 without releasing the bucket locks.
struct Prepared<'a> {
    guards: Vec<std::sync::RwLockWriteGuard<'a, ()>>,
    rotation: crate::keystore::Rotation,
    wrapped_before: Vec<Vec<u8>>,
}

/// The persisted state of a batch (IDs only; no key material, no personal information).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BatchRow {
    id: String,
    certificate_id: String,
    step: String,
    failed: Option<String>,
    operator: String,
    contractor: Option<String>,
    created_ms: i64,
    records: Vec<BatchRecord>,
    excluded: Vec<(String, String)>,
    buckets: Vec<u32>,
    epoch_before: u64,
    epoch_after: Option<u64>,
    rewrapped: u64,
    purge: Option<PurgeRow>,
    scan_files: Option<u64>,
    byte_scan: Option<String>,
    parties: PartiesRow,
    channel: String,
    /// Backups holding copies when the batch started (residual copies).
    #[serde(default)]
    backups: Vec<ResidualBackup>,
    /// The fingerprint of the batch contractor's registered key when the
    /// batch started: the certificate declares it, and only that key may
    /// co-sign as the contractor.
    #[serde(default)]
    contractor_key_fingerprint: Option<String>,
    /// The purge of the batch's search beacons (issue 12); `None` in
    /// batches of older builds.
    #[serde(default)]
    beacons: Option<BeaconRow>,
    /// The beacon rows and the records with beacons that the first
    /// deletion of the rows planned, kept before any went: a run stopped
    /// once they went, before `beacons` was written, leaves the count here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beacons_planned: Option<(u64, u64)>,
    /// The one-way names (hex) of the touched buckets' keys that the
    /// batch's rotation replaced: its verification fails if a bucket's live
    /// key is one of them (an older bucket-key row put back while the vault
    /// was stopped before the ratchet would carry it past the disposal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replaced_keys: Vec<(u32, String)>,
    /// The keystore files the latest byte scan of the batch read a
    /// pre-disposal wrapped key in (paths, never bytes): a retry whose
    /// needles went with an ended process cannot scan again, but finds
    /// here what it must see gone before it may certify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    key_copies: Vec<FoundCopy>,
    /// The same for the records store's files and the deleted beacons' tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    beacon_copies: Vec<FoundCopy>,
}

/// What step 6 deleted from the blind indexes and what their purge found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct BeaconRow {
    /// Forward beacon rows deleted.
    deleted: u64,
    /// Records whose reverse row (their list of beacons) was deleted.
    records: u64,
    whole_family: bool,
    ranges: u64,
    snapshots: u64,
    tombstones: u64,
    residue: Vec<String>,
    wal_files: u64,
    duration_ms: u64,
    byte_scan: Option<String>,
    /// The records cluster's members as the purge left them (none for the
    /// embedded engine, or a batch of an older build).
    #[serde(default)]
    members: Vec<crate::keystore::MemberEvidence>,
    /// The records cluster's search-index partitions the purge split
    /// instead of rewriting (none in a batch of an older build).
    #[serde(default)]
    split: Vec<String>,
}

/// What step 6 deleted: the account for the certificate, and the deleted
/// beacons' tags and key ranges for the byte scan.
struct Deleted {
    beacons: BeaconRow,
    tags: Vec<Vec<u8>>,
    ranges: Vec<Vec<u8>>,
    /// The purge's [`crate::store::BeaconPurge::wal_floor`], for the scan.
    wal_floor: Option<String>,
}

/// A backup that existed when a batch started: a residual copy the
/// certificate names, with its expiry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResidualBackup {
    pub(crate) id: String,
    pub(crate) created_ms: i64,
    pub(crate) expires_ms: i64,
    pub(crate) location: String,
    /// Whether the backup may hold a record of the batch (it was taken at
    /// or after the earliest creation among them). `None` in batches of
    /// older builds: counted as holding them.
    #[serde(default)]
    pub(crate) holds_records: Option<bool>,
}

impl ResidualBackup {
    fn holds(&self) -> bool {
        self.holds_records != Some(false)
    }
}

/// The certificate's account of the batch's search beacons (issue 12).
fn search_index_json(b: Option<&BeaconRow>, records_engine: &str) -> Value {
    let Some(b) = b else {
        return json!({ "beacons_deleted": 0, "note": "batch of a build without search indexes" });
    };
    if b.deleted == 0 && !b.whole_family && b.ranges == 0 {
        return json!({
            "beacons_deleted": 0,
            "records_with_beacons": b.records,
            "purge": "none needed: the records had no beacon rows",
            "byte_scan": b.byte_scan,
        });
    }
    if records_engine == "postgresql" {
        return json!({
            "beacons_deleted": b.deleted,
            "records_with_beacons": b.records,
            "engine": "postgresql",
            "members": b.members.iter().map(|m| json!({ "member": m.name, "role": m.role, "verified": m.verified, "detail": m.detail })).collect::<Vec<_>>(),
            "purge": "the search index's partitions that held the deleted rows rewritten on the records cluster's primary (VACUUM FULL; one past 16 MiB split instead: its live rows copied into smaller partitions and it dropped); pg_switch_wal + CHECKPOINT on the primary and CHECKPOINT on each standby after replay until no WAL segment from before the purge remains; old files and segments checked on every member",
            "partitions_split": b.split,
            "snapshots": b.snapshots,
            "residue_files": b.residue,
            "duration_ms": b.duration_ms,
            "byte_scan": b.byte_scan,
        });
    }
    json!({
        "beacons_deleted": b.deleted,
        "records_with_beacons": b.records,
        "flushed": "all column families of the records database",
        "compaction": if b.whole_family {
            "bottommost forced over the whole beacon column family".to_owned()
        } else {
            format!("bottommost forced over the {} key range(s) of the deleted beacons", b.ranges)
        },
        "snapshots": b.snapshots,
        "tombstones": b.tombstones,
        "residue_files": b.residue,
        "wal_files": b.wal_files,
        "duration_ms": b.duration_ms,
        "byte_scan": b.byte_scan,
    })
}

/// The backups still holding the batch's records, and when the last of them
/// is crypto-erased: the certificate's outcome is pending until then.
fn pending_until(backups: &[ResidualBackup]) -> Option<i64> {
    backups
        .iter()
        .filter(|b| b.holds())
        .map(|b| b.expires_ms)
        .max()
}

/// `outcome_statement`: c. 93I's phrase for what the vault destroyed, and,
/// while backups hold the records, that the disposal is pending their
/// expiry, naming each.
fn outcome_statement(backups: &[ResidualBackup]) -> String {
    let Some(until) = pending_until(backups) else {
        return certificate::OUTCOME_STATEMENT.to_owned();
    };
    let copies: Vec<String> = backups
        .iter()
        .filter(|b| b.holds())
        .map(|b| format!("backup {} (expires {})", b.id, format_ms(b.expires_ms)))
        .collect();
    format!(
        "The personal information in the records covered by this certificate was erased from the vault \
         by cryptographic erase so that it cannot practicably be read or reconstructed from the vault \
         (M.G.L. c. 93I, section 2(b)). Disposal is {}: {} still hold the records' ciphertexts and keys \
         under their own backup keys until those keys are destroyed at expiry; the last expires {}.",
        certificate::PENDING_PHRASE,
        copies.join(", "),
        format_ms(until)
    )
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PartiesRow {
    data_owner: String,
    data_owner_address: Option<String>,
    operator_title: Option<String>,
    operator_organisation: Option<String>,
    contractor_organisation: Option<String>,
    contract_reference: Option<String>,
    /// Absent in batches of older builds.
    #[serde(default)]
    contractor_certification: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PurgeRow {
    snapshots: u64,
    live_versions: u64,
    tombstones: u64,
    residue: Vec<String>,
    live_sst_files: u64,
    wal_files: u64,
    compacted_buckets: u64,
    duration_ms: u64,
    /// The keystore engine purged; absent in batches of older builds (RocksDB).
    #[serde(default)]
    engine: Option<String>,
    /// Each member of a cluster keystore, as the purge left it.
    #[serde(default)]
    members: Vec<crate::keystore::MemberEvidence>,
}

impl From<&PurgeEvidence> for PurgeRow {
    fn from(e: &PurgeEvidence) -> Self {
        PurgeRow {
            snapshots: e.snapshots,
            live_versions: e.live_versions_deks,
            tombstones: e.tombstones_in_touched_ranges,
            residue: e.residue_files.clone(),
            live_sst_files: e.live_sst_files,
            wal_files: e.wal_files,
            compacted_buckets: e.compacted_buckets,
            duration_ms: e.duration_ms,
            engine: Some(e.engine.to_owned()),
            members: e.members.clone(),
        }
    }
}

/// The certificate's account of the keystore purge, in the words of the
/// engine that did it.
fn keystore_purge_json(p: &PurgeRow) -> Value {
    match p.engine.as_deref() {
        Some("postgresql") => json!({
            "engine": "postgresql",
            "steps": "old snapshots, standby feedback, replication slots and prepared transactions checked on the primary; VACUUM FULL of the touched data-key partitions and of the bucket and backup key tables; pg_switch_wal + CHECKPOINT on the primary and CHECKPOINT on each standby after replay, until no WAL segment from before the purge remains on any member",
            "snapshots": p.snapshots, "residue_files": p.residue,
            "members": p.members.iter().map(|m| json!({ "member": m.name, "role": m.role, "verified": m.verified, "detail": m.detail })).collect::<Vec<_>>(),
            "duration_ms": p.duration_ms,
        }),
        _ => json!({
            "flushed": "all column families", "compaction": "bottommost forced over touched ranges and bucket keys",
            "snapshots": p.snapshots, "live_versions": p.live_versions, "tombstones": p.tombstones,
            "residue_files": p.residue, "live_sst_files": p.live_sst_files, "wal_files": p.wal_files,
            "duration_ms": p.duration_ms,
        }),
    }
}

/// A hold on a record or a subject (REQ-DISP-06).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HoldRow {
    reason: String,
    by: String,
    created_ms: i64,
}

/// A legal hold as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// `record` or `subject`.
    pub kind: &'static str,
    /// The held record or subject ID.
    pub target: String,
    /// Why (no personal information).
    pub reason: String,
    /// Who placed it.
    pub by: UserId,
    /// When, unix ms.
    pub created_ms: i64,
}

/// A retention policy of a collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep records this many days.
    pub days: u32,
    /// Count from the last update instead of creation.
    pub from_updated: bool,
}

/// A contractor's assigned scope (REQ-DISP-02).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractorScope {
    /// Collections the contractor may see and dispose in.
    pub collections: Vec<String>,
    /// Individual records, in addition.
    pub records: Vec<String>,
    /// The contractor's Ed25519 public key (hex), for co-signing certificates.
    pub public_key: Option<String>,
}

/// A certificate as listed by `certificate list`.
#[derive(Clone, Debug)]
pub struct CertificateSummary {
    /// Certificate ID.
    pub id: String,
    /// `draft` or `validated`.
    pub status: String,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
    /// The operator's name, as on the certificate.
    pub operator: Option<String>,
    /// The operator's user ID (a validator must be someone else).
    pub operator_user_id: Option<String>,
    /// Records destroyed.
    pub record_count: u64,
    /// Roles that co-signed (besides the vault).
    pub cosigned_by: Vec<String>,
}

/// A contractor as listed by `contractor list`.
#[derive(Clone, Debug)]
pub struct ContractorInfo {
    /// Their user ID.
    pub user_id: UserId,
    /// Their username.
    pub username: String,
    /// Whether their account is disabled.
    pub disabled: bool,
    /// The fingerprint of their registered key, if any.
    pub key_fingerprint: Option<String>,
    /// Collections in scope.
    pub collections: Vec<String>,
    /// Individual records in scope (a count: IDs only on request).
    pub records: usize,
}

/// A batch as listed by `disposal list`.
#[derive(Clone, Debug)]
pub struct DisposalSummary {
    /// Batch ID.
    pub id: DisposalId,
    /// Certificate (issued once complete).
    pub certificate_id: CertificateId,
    /// Last step reached.
    pub step: String,
    /// Failure, if the batch failed.
    pub failed: Option<String>,
    /// Records in the batch.
    pub records: u64,
    /// Start time, unix ms.
    pub created_ms: i64,
    /// Who ran it (a progress page finds its own batch by it).
    pub operator: UserId,
}

/// `target.backups` of a certificate: the vault's backups that existed at
/// disposal time, as residual copies with their expiry.
fn backups_json(backups: &[ResidualBackup]) -> Value {
    if backups.is_empty() {
        return json!({
            "exist": false,
            "copies": [],
            "note": "no backup of this vault existed at disposal time; backups never contain the header",
        });
    }
    json!({
        "exist": true,
        "copies": backups.iter().map(|b| json!({
            "backup_id": b.id,
            "created": format_ms(b.created_ms),
            "expiry": format_ms(b.expires_ms),
            "location": b.location,
            "holds_records": b.holds(),
        })).collect::<Vec<_>>(),
        "where": backups.iter().map(|b| b.location.clone()).collect::<Vec<_>>(),
        "expiry": backups.iter().map(|b| b.expires_ms).max().map(format_ms),
        "covered_by": "each backup is sealed under its own backup key, held only in this vault's keystore under the live root key; the backup key is destroyed (the copy crypto-erased) at the expiry shown; a restore replays the disposal ledger and never brings a disposed record or its key back",
        "note": "backups hold record ciphertexts and wrapped keys, never the header",
    })
}

/// `sanitization.not_covered`: the data areas this disposal does not reach.
fn not_covered(backups: &[ResidualBackup]) -> Vec<String> {
    let mut v = vec![
        "copies of the vault header made before this disposal (the header must never be backed up)"
            .to_owned(),
        "storage media that retain overwritten blocks (SSDs, copy-on-write file systems)"
            .to_owned(),
        "exports and import source files handed out or kept outside the vault".to_owned(),
    ];
    for b in backups.iter().filter(|b| b.holds()) {
        v.push(format!(
            "vault backup {} (residual copy until its backup key is destroyed at {})",
            b.id,
            format_ms(b.expires_ms)
        ));
    }
    v
}

/// Longest party name, title, address or contract reference on a certificate.
const PARTY_MAX_CHARS: usize = 200;

/// The parties named on a certificate are free text signed and kept for
/// years: bounded, with no control or bidirectional formatting characters.
fn check_parties(p: &DisposalParties) -> Result<()> {
    let fields = [
        ("data owner", Some(&p.data_owner)),
        ("data owner address", p.data_owner_address.as_ref()),
        ("operator title", p.operator_title.as_ref()),
        ("operator organisation", p.operator_organisation.as_ref()),
        (
            "contractor organisation",
            p.contractor_organisation.as_ref(),
        ),
        ("contract reference", p.contract_reference.as_ref()),
        (
            "contractor certification",
            p.contractor_certification.as_ref(),
        ),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            crate::audit::check_text(name, v, PARTY_MAX_CHARS)?;
        }
    }
    Ok(())
}

/// The refusal of a contractor's disposal that reaches outside their scope
/// (one answer for every such record: it tells nothing of the record).
fn outside_scope() -> Error {
    Error::PermissionDenied("dispose of records outside your assigned scope")
}

/// Whether `user` carried out the disposal certificate `cert` certifies, as
/// its contractor.
fn carried_out_by(cert: &Certificate, user: UserId) -> bool {
    cert.body["parties"]["contractor"]["user_id"].as_str() == Some(user.to_string().as_str())
}

fn hold_key(kind: u8, id: &[u8; 16]) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = kind;
    k[1..].copy_from_slice(id);
    k
}

fn step_index(step: &str) -> usize {
    STEPS.iter().position(|s| *s == step).unwrap_or(0)
}

impl Vault {
    /// Test hook: called with each step name of a disposal batch as it is
    /// reached, so crash tests can kill the process at every step.
    #[doc(hidden)]
    pub fn set_crash_hook(&self, hook: Option<super::CrashHook>) {
        *self.crash_hook.lock().expect("hook lock") = hook;
    }

    pub(super) fn at_step(&self, step: &str) {
        if let Some(h) = self.crash_hook.lock().expect("hook lock").as_ref() {
            h(step);
        }
    }

    fn contractor_scope(&self, user: UserId) -> Result<ContractorScope> {
        Ok(self
            .store
            .get(store::CF_CONTRACTORS, user.as_bytes())?
            .map(|b| serde_json::from_slice(&b).map_err(|_| Error::Integrity("contractor scope")))
            .transpose()?
            .unwrap_or_default())
    }

    /// The fingerprint of a contractor's registered public key, if any.
    fn contractor_key_fingerprint(&self, user: UserId) -> Result<Option<String>> {
        match self.contractor_scope(user)?.public_key {
            Some(k) => {
                let key = certificate::parse_public_key(&k)?;
                Ok(Some(crate::crypto::fingerprint(key.as_bytes())))
            }
            None => Ok(None),
        }
    }

    /// Active contractors, for the WISP pack and `doctor` (no permission
    /// check, no audit event: the caller has both).
    pub(crate) fn contractor_evidence(&self) -> Result<Vec<ContractorInfo>> {
        let mut rows = self.all_user_rows()?;
        rows.sort_by(|a, b| a.username.cmp(&b.username));
        let mut out = Vec::new();
        for u in rows
            .iter()
            .filter(|u| !u.disabled && u.role == Role::Contractor.as_str())
        {
            let id: UserId = u.id.parse()?;
            let scope = self.contractor_scope(id)?;
            out.push(ContractorInfo {
                user_id: id,
                username: u.username.clone(),
                disabled: u.disabled,
                key_fingerprint: self.contractor_key_fingerprint(id)?,
                collections: scope.collections,
                records: scope.records.len(),
            });
        }
        Ok(out)
    }

    /// Every retention policy, for the WISP pack (no permission check).
    pub(crate) fn retention_evidence(&self) -> Result<BTreeMap<String, RetentionPolicy>> {
        self.retention_policies()
    }

    /// Whether a contractor's scope covers a record.
    pub(crate) fn in_contractor_scope(
        scope: &ContractorScope,
        id: RecordId,
        row: &RecordRow,
    ) -> bool {
        scope
            .collections
            .iter()
            .any(|c| c == row.collection.as_str())
            || scope.records.iter().any(|r| *r == id.to_string())
    }

    /// Records hidden from a contractor outside their scope (used by listing).
    pub(crate) fn contractor_filter(&self, s: &Session) -> Result<Option<ContractorScope>> {
        let row = self.user_row(s.user)?.ok_or(Error::SessionInvalid)?;
        Ok(if Role::parse(&row.role)? == Role::Contractor {
            Some(self.contractor_scope(s.user)?)
        } else {
            None
        })
    }

    pub(crate) fn hold_on(&self, id: RecordId, subject: SubjectId) -> Result<Option<String>> {
        self.hold_in(id, subject, |key| self.store.get(store::CF_HOLDS, key))
    }

    /// What stands against disposing of, or repairing, each of `rows`,
    /// records whose row does not read (their envelope, which binds the
    /// subject, did not open): the subject such a row names is unverified.
    /// An insider with the files who changed it would sidestep a hold on the
    /// true subject, and send the disposal's key deletion to the wrong
    /// bucket, the true one's keys surviving a certificate that says they
    /// went. So their keys are looked for in every bucket: found outside the
    /// row subject's, [`UnreadRow::Moved`]; found there and unwrapping under
    /// its key, a hold on any subject of that bucket counts as a hold on the
    /// record; none found, or one that does not unwrap (moved there from
    /// its true bucket, or deleted), no bucket shows whose it is, and a hold
    /// on any subject counts. `root`/`epoch`: the live root.
    pub(crate) fn unread_rows_check(
        &self,
        root: &SecretKey,
        epoch: u64,
        rows: &[(RecordId, &RecordRow)],
    ) -> Result<HashMap<RecordId, UnreadRow>> {
        let mut out = HashMap::new();
        if rows.is_empty() {
            return Ok(out);
        }
        let ids: BTreeSet<RecordId> = rows.iter().map(|(id, _)| *id).collect();
        let keys = self.keystore.keys_anywhere(root, epoch, &ids)?;
        // The buckets of held subjects. Never their reasons: a hold on
        // another subject may be behind the exclusion, and its reason must
        // not reach this record's outcome, certificate or contractor.
        let mut held_buckets: BTreeSet<u32> = BTreeSet::new();
        for (k, _) in self.store.scan_prefix(store::CF_HOLDS, b"s")? {
            let held = SubjectId::from_slice(k.get(1..).ok_or(Error::Integrity("hold"))?)?;
            held_buckets.insert(self.keystore.bucket_of(held));
        }
        for (id, row) in rows {
            let own = self.keystore.bucket_of(row.subject);
            let found = keys.get(id).map(Vec::as_slice).unwrap_or_default();
            let verdict = if let Some(why) = self.hold_on(*id, row.subject)? {
                UnreadRow::Held(why)
            } else if found.iter().any(|(b, _)| *b != own) {
                UnreadRow::Moved
            } else if !found.is_empty() && found.iter().all(|(_, unwraps)| *unwraps) {
                if held_buckets.contains(&own) {
                    UnreadRow::Held(UNREAD_HELD_BUCKET.to_owned())
                } else {
                    UnreadRow::Clear
                }
            } else if held_buckets.is_empty() {
                UnreadRow::Clear
            } else {
                UnreadRow::Held(UNREAD_HELD_ANYWHERE.to_owned())
            };
            out.insert(*id, verdict);
        }
        Ok(out)
    }

    /// The hold on a record or its subject, looked up with `get`: point reads
    /// of the store, or a map of every hold read once ([`Self::all_holds`]).
    fn hold_in(
        &self,
        id: RecordId,
        subject: SubjectId,
        get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>>,
    ) -> Result<Option<String>> {
        for key in [
            hold_key(b'r', id.as_bytes()),
            hold_key(b's', subject.as_bytes()),
        ] {
            if let Some(b) = get(&key)? {
                let h: HoldRow =
                    serde_json::from_slice(&b).map_err(|_| Error::Integrity("hold"))?;
                let what = if key[0] == b'r' { "record" } else { "subject" };
                return Ok(Some(format!("legal hold on {what}: {}", h.reason)));
            }
        }
        Ok(None)
    }

    /// Whether a live record is in a batch that stopped before its
    /// tombstones (failed, or left at a step by an error): that batch
    /// destroyed its keys, or will, and only it scans for their copies, so
    /// no other batch may certify the record. One record asked for by name
    /// is refused; a wider scope excludes it, saying why.
    fn in_unfinished_batch(
        &self,
        id: RecordId,
        scope: &DisposalScope,
        excluded: &mut Vec<(RecordId, String)>,
    ) -> Result<bool> {
        if self.isolation.check_not_pending(id).is_ok() {
            return Ok(false);
        }
        if matches!(scope, DisposalScope::Record(_)) {
            return Err(Error::DisposalInProgress);
        }
        excluded.push((id, IN_UNFINISHED_BATCH.to_owned()));
        Ok(true)
    }

    /// Every hold, read in one scan: a plan over many records checks them
    /// in memory instead of two point reads per record (holds are few; the
    /// batch checks every record's holds again under its locks).
    fn all_holds(&self) -> Result<std::collections::HashMap<Vec<u8>, Vec<u8>>> {
        Ok(self
            .store
            .scan_prefix(store::CF_HOLDS, &[])?
            .into_iter()
            .collect())
    }

    fn retention_policies(&self) -> Result<BTreeMap<String, RetentionPolicy>> {
        self.store
            .scan_prefix(store::CF_RETENTION, &[])?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k).map_err(|_| Error::Integrity("retention"))?;
                let p = serde_json::from_slice(&v).map_err(|_| Error::Integrity("retention"))?;
                Ok((name, p))
            })
            .collect()
    }

    /// Resolves a scope to live records, in ID order.
    fn resolve_scope(&self, scope: &DisposalScope) -> Result<Vec<(RecordId, RecordRow)>> {
        let live = |ids: Vec<RecordId>| -> Result<Vec<(RecordId, RecordRow)>> {
            let rows = self.store.records(&ids)?;
            Ok(ids
                .into_iter()
                .zip(rows)
                .filter_map(|(id, row)| {
                    row.filter(|r| r.state == RecordState::Live)
                        .map(|r| (id, r))
                })
                .collect())
        };
        let mut rows = match scope {
            DisposalScope::Record(id) => {
                let row = self.live_row(*id)?;
                vec![(*id, row)]
            }
            DisposalScope::Subject(sub) => live(self.store.records_of_subject(*sub)?)?,
            DisposalScope::Query {
                collection,
                before_ms,
                by_updated,
            } => {
                let ids = match collection {
                    Some(c) => self.store.records_of_collection(c)?,
                    None => self.store.all_records()?,
                };
                live(ids)?
                    .into_iter()
                    .filter(|(_, r)| {
                        (if *by_updated {
                            r.updated_ms
                        } else {
                            r.created_ms
                        }) < *before_ms
                    })
                    .collect()
            }
            DisposalScope::Records(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let row = self.store.record(*id)?.ok_or(Error::NotFound("record"))?;
                    if row.state == RecordState::Live {
                        out.push((*id, row));
                    }
                }
                out
            }
            DisposalScope::PastRetention => {
                let now = self.now();
                let mut out = Vec::new();
                for (name, p) in self.retention_policies()? {
                    let c = CollectionName::parse(&name)?;
                    let cutoff = now - i64::from(p.days) * 86_400_000;
                    out.extend(
                        live(self.store.records_of_collection(&c)?)?
                            .into_iter()
                            .filter(|(_, r)| {
                                (if p.from_updated {
                                    r.updated_ms
                                } else {
                                    r.created_ms
                                }) < cutoff
                            }),
                    );
                }
                out
            }
        };
        rows.sort_by_key(|(id, _)| *id);
        // A list may name a record twice.
        rows.dedup_by_key(|(id, _)| *id);
        Ok(rows)
    }

    /// Records past retention now (REQ-DISP-06), with holds reported as exclusions.
    pub fn retention_due(&self, s: &Session) -> Result<DisposalOutcome> {
        self.dispose(
            s,
            &DisposalRequest {
                scope: DisposalScope::PastRetention,
                parties: DisposalParties::default(),
                dry_run: true,
            },
        )
    }

    /// Runs a disposal batch (REQ-DISP-01). Held records are excluded (and
    /// a single held record is refused); a contractor may dispose only in
    /// their assigned scope. Returns once the certificate is issued.
    /// What is past retention may also be disposed of with the narrower
    /// `RunRetention` (a retention-runner service account); any other
    /// scope needs `Dispose`.
    pub fn dispose(&self, s: &Session, req: &DisposalRequest) -> Result<DisposalOutcome> {
        self.authorize_disposal(s, req)?;
        self.dispose_authorized(s, req, None)
    }

    /// [`Vault::dispose`] of what a preview showed: refused with
    /// [`Error::PreviewStale`], before anything is deleted, unless the
    /// records it would destroy, as found under the batch lock, are exactly
    /// those whose [`plan_fingerprint`] is `previewed` (a dry run's
    /// records). A record added to the scope since the preview (a scope
    /// "up to now" grows), held or disposed of (by another tab confirming
    /// the same preview) makes the confirmation refuse instead of destroying
    /// what nobody previewed.
    pub fn dispose_as_previewed(
        &self,
        s: &Session,
        req: &DisposalRequest,
        previewed: &str,
    ) -> Result<DisposalOutcome> {
        if req.dry_run {
            return Err(Error::invalid(
                "a preview is confirmed by a disposal, not a dry run",
            ));
        }
        self.authorize_disposal(s, req)?;
        self.dispose_authorized(s, req, Some(previewed))
    }

    /// Who may run a disposal of this scope: officers and contractors (in
    /// their scope, checked by the plan), and a retention runner for what
    /// is past retention.
    fn authorize_disposal(&self, s: &Session, req: &DisposalRequest) -> Result<()> {
        if matches!(req.scope, DisposalScope::PastRetention) {
            self.authorize_any(s, &[Permission::Dispose, Permission::RunRetention])
        } else {
            self.authorize(s, Some(Permission::Dispose)).map(|_| ())
        }
    }

    /// [`Vault::dispose`] once the authority is established: by the
    /// `Dispose` permission, or (scheduled retention, maintenance.rs) by the
    /// retention schedule an officer set, under whose user ID the
    /// batch runs.
    pub(crate) fn dispose_authorized(
        &self,
        s: &Session,
        req: &DisposalRequest,
        previewed: Option<&str>,
    ) -> Result<DisposalOutcome> {
        let started = std::time::Instant::now();
        let scope_target = match &req.scope {
            DisposalScope::Record(id) => id.to_string(),
            DisposalScope::Subject(sid) => sid.to_string(),
            DisposalScope::Query { .. } => "scope:query".into(),
            DisposalScope::PastRetention => "scope:retention".into(),
            DisposalScope::Records(ids) => format!("scope:list:{}", ids.len()),
        };
        let refuse = |e: Error| -> Result<DisposalOutcome> {
            self.audit(
                Some(s.user),
                &s.ctx,
                "disposal.refused",
                vec![scope_target.clone()],
                Err(&e),
                None,
            )?;
            Err(e)
        };
        if let Err(e) = check_parties(&req.parties) {
            return refuse(e);
        }
        let (rows, excluded, by_contractor) = match self.plan_disposal(s, &req.scope) {
            Ok(p) => p,
            Err(e) => return refuse(e),
        };
        if req.parties.contractor_certification.is_some()
            && !by_contractor
            && req.parties.contractor_organisation.is_none()
        {
            return refuse(Error::invalid(
                "a contractor certification needs the contractor: --contractor-org, or the contractor runs the disposal",
            ));
        }
        let stale = |ids: &mut dyn Iterator<Item = RecordId>| {
            previewed.is_some_and(|p| p != plan_fingerprint(ids))
        };
        if stale(&mut rows.iter().map(|(id, _)| *id)) {
            return refuse(Error::PreviewStale);
        }
        if req.dry_run || rows.is_empty() {
            return self.disposal_without_batch(s, req, &scope_target, &rows, &excluded);
        }
        // Each record's residence, read before the locks (decrypting every
        // record under them would stall every clerk of every touched bucket);
        // under the locks, a record whose version changed since is read again.
        let residences: HashMap<RecordId, Residence> = rows
            .iter()
            .map(|(id, r)| (*id, self.residence(*id, r)))
            .collect();
        // Step 1 runs under the batch lock and the touched buckets' exclusive
        // locks: every record is read again (an update may have run since the
        // plan), holds are checked again, and the rotation is planned, so a
        // surviving key that cannot be unwrapped refuses the batch before
        // anything is deleted. Then the synced intent, and the records enter
        // the pending set: from here on no read, update or hold touches them.
        let _batch_guard = self.disposal_lock.lock().expect("disposal lock");
        self.at_step("planned");
        let buckets: Vec<u32> = rows
            .iter()
            .map(|(_, r)| self.keystore.bucket_of(r.subject))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let guards = self.isolation.exclusive(&buckets);
        let mut residences = residences;
        let locked = (|| {
            self.isolation.check_fence()?;
            // The user and, for a contractor, the scope as they are now: an
            // admin may have disabled the account, or revoked or narrowed
            // the scope, while this batch waited for the lock.
            self.authorize_own(s)?;
            let scope_now = if by_contractor {
                Some(self.contractor_filter(s)?.ok_or(outside_scope())?)
            } else {
                None
            };
            let mut kept = Vec::new();
            let mut unread = Vec::new();
            let mut excluded = excluded.clone();
            for (id, _) in &rows {
                let Some(row) = self.store.record(*id)? else {
                    continue;
                };
                if row.state != RecordState::Live
                    || self.in_unfinished_batch(*id, &req.scope, &mut excluded)?
                {
                    continue;
                }
                if let Some(sc) = &scope_now
                    && !Self::in_contractor_scope(sc, *id, &row)
                {
                    return Err(outside_scope());
                }
                if let Some(why) = self.hold_on(*id, row.subject)? {
                    excluded.push((*id, why));
                    continue;
                }
                let res = match residences.get(id) {
                    Some(p) if p.version == row.version && p.subject == row.subject && p.read => *p,
                    _ => {
                        let p = self.residence(*id, &row);
                        residences.insert(*id, p);
                        p
                    }
                };
                // Read from this very row (a residence may follow an update).
                if !(res.read && res.version == row.version && res.subject == row.subject) {
                    unread.push(*id);
                }
                kept.push((*id, row));
            }
            // A row that does not read names a subject nothing verified.
            let mut narrowed = Vec::new();
            if !unread.is_empty() {
                let rows: Vec<(RecordId, &RecordRow)> = kept
                    .iter()
                    .filter(|(id, _)| unread.contains(id))
                    .map(|(id, r)| (*id, r))
                    .collect();
                let epoch = self.epoch.read().expect("epoch lock");
                let mut checks = self.unread_rows_check(&epoch.root, epoch.number, &rows)?;
                drop(epoch);
                for id in &unread {
                    let why = match checks.remove(id) {
                        Some(UnreadRow::Clear)
                            if scope_now
                                .as_ref()
                                .is_some_and(|sc| !sc.records.contains(&id.to_string())) =>
                        {
                            if matches!(req.scope, DisposalScope::Record(_)) {
                                return Err(outside_scope());
                            }
                            UNREAD_OUTSIDE_NAMED_SCOPE.to_owned()
                        }
                        Some(UnreadRow::Clear) => continue,
                        Some(UnreadRow::Moved) if matches!(req.scope, DisposalScope::Record(_)) => {
                            return Err(Error::Integrity(
                                "record row (it does not read and its keys are under another subject's bucket: changed without the vault's key)",
                            ));
                        }
                        Some(UnreadRow::Moved) | None => ROW_SUBJECT_CHANGED.to_owned(),
                        Some(UnreadRow::Held(why)) => why,
                    };
                    excluded.push((*id, why));
                    narrowed.push(*id);
                }
                kept.retain(|(id, _)| !narrowed.contains(id));
            }
            if matches!(req.scope, DisposalScope::Record(_))
                && kept.is_empty()
                && !excluded.is_empty()
            {
                return Err(Error::LegalHold);
            }
            // The check of unreadable rows only narrows a preview, which
            // (without it) listed them: their exclusion, with its reason, is
            // no change to refuse.
            if stale(
                &mut kept
                    .iter()
                    .map(|(id, _)| *id)
                    .chain(narrowed.iter().copied()),
            ) {
                return Err(Error::PreviewStale);
            }
            let ids: HashSet<RecordId> = kept.iter().map(|(id, _)| *id).collect();
            let epoch = self.epoch.read().expect("epoch lock");
            let rotation =
                self.keystore
                    .plan_rotation(&epoch.root, epoch.number, &buckets, |r, _| ids.contains(&r))?;
            drop(epoch);
            Ok((kept, excluded, rotation))
        })();
        let (rows, excluded, rotation) = match locked {
            Ok(l) => l,
            Err(e) => {
                drop(guards);
                return refuse(e);
            }
        };
        if rows.is_empty() {
            drop(guards);
            if let DisposalScope::Record(id) = &req.scope
                && excluded.is_empty()
            {
                // Another batch disposed of it while this one waited.
                return refuse(
                    self.live_row(*id)
                        .err()
                        .unwrap_or(Error::NotFound("record")),
                );
            }
            return self.disposal_without_batch(s, req, &scope_target, &rows, &excluded);
        }
        // Every key version of every record, as found now under the locks.
        let mut versions: BTreeMap<RecordId, Vec<u32>> = BTreeMap::new();
        for (id, v) in &rotation.deleted {
            versions.entry(*id).or_default().push(*v);
        }
        let wrapped_before = rotation.deleted_wrapped.clone();
        let id = DisposalId::new();
        let p = &req.parties;
        let records: Vec<BatchRecord> = rows
            .iter()
            .map(|(id, r)| {
                let res = match residences.get(id) {
                    Some(p) if p.version == r.version && p.subject == r.subject => *p,
                    _ => self.residence(*id, r),
                };
                BatchRecord {
                    id: id.to_string(),
                    subject: r.subject.to_string(),
                    version: r.version,
                    collection: r.collection.as_str().to_owned(),
                    versions: versions.get(id).cloned().unwrap_or_default(),
                    ma_resident: Some(res.ma),
                    residence_by_default: !res.read,
                }
            })
            .collect();
        // When each record was created, as far as a backup's hold on it can
        // be judged: not from a row of the first format, whose creation time
        // is not bound to its ciphertext, nor from one that cannot be read
        // (its creation time unchecked: an insider may have moved it later).
        let created: Vec<i64> = rows
            .iter()
            .zip(&records)
            .map(|((_, r), b)| {
                if r.format == store::ROW_V1 || b.residence_by_default {
                    i64::MIN
                } else {
                    r.created_ms
                }
            })
            .collect();
        let mut batch = BatchRow {
            id: id.to_string(),
            certificate_id: CertificateId::new().to_string(),
            step: STEPS[0].into(),
            failed: None,
            operator: s.user.to_string(),
            contractor: by_contractor.then(|| s.user.to_string()),
            created_ms: self.now(),
            records,
            excluded: excluded
                .iter()
                .map(|(id, why)| (id.to_string(), why.clone()))
                .collect(),
            buckets,
            epoch_before: self.epoch(),
            epoch_after: None,
            rewrapped: 0,
            purge: None,
            scan_files: None,
            byte_scan: None,
            key_copies: Vec::new(),
            beacon_copies: Vec::new(),
            parties: PartiesRow {
                data_owner: p.data_owner.clone(),
                data_owner_address: p.data_owner_address.clone(),
                operator_title: p.operator_title.clone(),
                operator_organisation: p.operator_organisation.clone(),
                contractor_organisation: p.contractor_organisation.clone(),
                contract_reference: p.contract_reference.clone(),
                contractor_certification: p.contractor_certification.clone(),
            },
            channel: s.ctx.channel.as_str().to_owned(),
            backups: {
                // A backup taken before every record of the batch existed
                // holds none of them. Both times are the wall clock's, which
                // may step back (or differ on a standby's machine) by up to
                // `CLOCK_SLACK_MS`; a record whose creation time cannot be
                // trusted counts as held by every backup (`created`).
                let earliest = created.iter().copied().min();
                let mut b = self.residual_backups()?;
                for r in &mut b {
                    r.holds_records = Some(
                        earliest.is_none_or(|e| r.created_ms.saturating_add(CLOCK_SLACK_MS) >= e),
                    );
                }
                b
            },
            contractor_key_fingerprint: if by_contractor {
                self.contractor_key_fingerprint(s.user)?
            } else {
                None
            },
            beacons: None,
            beacons_planned: None,
            replaced_keys: Vec::new(),
        };
        batch.keep_replaced(&rotation.replaced);
        self.put_batch(&batch, true)?;
        self.isolation
            .add_pending(rows.iter().map(|(id, r)| (*id, r.subject)));
        self.audit(
            Some(s.user),
            &s.ctx,
            "custody.collected",
            vec![id.to_string(), format!("count:{}", rows.len())],
            Ok(()),
            None,
        )?;
        self.at_step("intent");
        let subjects: BTreeSet<SubjectId> = rows.iter().map(|(_, r)| r.subject).collect();
        let mut outcome = DisposalOutcome {
            disposal_id: None,
            certificate_id: None,
            records: rows.iter().map(|(id, _)| *id).collect(),
            subjects: subjects.len() as u64,
            ma_residents: batch.ma_resident_count(),
            excluded,
            epochs: None,
            duration_ms: 0,
        };
        let r = self.run_batch(
            &mut batch,
            Some(s.user),
            &s.ctx,
            Some(Prepared {
                guards,
                rotation,
                wrapped_before,
            }),
        );
        outcome.duration_ms = started.elapsed().as_millis() as u64;
        let cert = r?;
        outcome.disposal_id = Some(id);
        outcome.certificate_id = Some(cert);
        outcome.epochs = Some((
            batch.epoch_before,
            batch.epoch_after.unwrap_or(batch.epoch_before),
        ));
        Ok(outcome)
    }

    /// Plans a disposal without locks: the live records in scope, the held
    /// ones excluded, a contractor confined to their scope.
    #[allow(clippy::type_complexity)] // the plan's three parts, used once
    fn plan_disposal(
        &self,
        s: &Session,
        scope: &DisposalScope,
    ) -> Result<(Vec<(RecordId, RecordRow)>, Vec<(RecordId, String)>, bool)> {
        let contractor = self.contractor_filter(s)?;
        let mut rows = match (self.resolve_scope(scope), &contractor, scope) {
            (Ok(rows), _, _) => rows,
            // A contractor learns nothing of a record outside their scope by
            // asking for it: one that does not exist, one disposed of (with
            // its certificate's ID) and one of another collection answer
            // alike, unless their scope names it or it lies in their scope.
            (Err(Error::NotFound(_)), Some(sc), DisposalScope::Record(id))
                if !sc.records.contains(&id.to_string()) =>
            {
                return Err(outside_scope());
            }
            (Err(e @ Error::Disposed { .. }), Some(sc), DisposalScope::Record(id)) => {
                return Err(match self.store.record(*id)? {
                    Some(row) if Self::in_contractor_scope(sc, *id, &row) => e,
                    _ => outside_scope(),
                });
            }
            (Err(e), _, _) => return Err(e),
        };
        let mut excluded = Vec::new();
        if let Some(sc) = &contractor
            && rows
                .iter()
                .any(|(id, r)| !Self::in_contractor_scope(sc, *id, r))
        {
            return Err(outside_scope());
        }
        let mut kept = Vec::new();
        let holds = self.all_holds()?;
        for (id, row) in rows.drain(..) {
            if self.in_unfinished_batch(id, scope, &mut excluded)? {
                continue;
            }
            match self.hold_in(id, row.subject, |k| Ok(holds.get(k).cloned()))? {
                Some(why) => excluded.push((id, why)),
                None => kept.push((id, row)),
            }
        }
        if matches!(scope, DisposalScope::Record(_)) && kept.is_empty() && !excluded.is_empty() {
            return Err(Error::LegalHold);
        }
        Ok((kept, excluded, contractor.is_some()))
    }

    /// A dry run, or a scope with nothing left to dispose: audited, no batch.
    fn disposal_without_batch(
        &self,
        s: &Session,
        req: &DisposalRequest,
        scope_target: &str,
        rows: &[(RecordId, RecordRow)],
        excluded: &[(RecordId, String)],
    ) -> Result<DisposalOutcome> {
        let subjects: BTreeSet<SubjectId> = rows.iter().map(|(_, r)| r.subject).collect();
        self.audit(
            Some(s.user),
            &s.ctx,
            if req.dry_run {
                "disposal.plan"
            } else {
                "disposal.empty"
            },
            vec![
                scope_target.to_owned(),
                format!("count:{}", rows.len()),
                format!("excluded:{}", excluded.len()),
            ],
            Ok(()),
            None,
        )?;
        let ma_residents = (rows.len() <= PREVIEW_RESIDENCE_MAX).then(|| {
            rows.iter()
                .filter(|(id, r)| self.residence(*id, r).ma)
                .map(|(_, r)| r.subject)
                .collect::<BTreeSet<_>>()
                .len() as u64
        });
        Ok(DisposalOutcome {
            disposal_id: None,
            certificate_id: None,
            records: rows.iter().map(|(id, _)| *id).collect(),
            subjects: subjects.len() as u64,
            ma_residents,
            excluded: excluded.to_vec(),
            epochs: None,
            duration_ms: 0,
        })
    }

    fn put_batch(&self, b: &BatchRow, sync: bool) -> Result<()> {
        let id: DisposalId = b.id.parse()?;
        self.store.put_synced(
            store::CF_DISPOSALS,
            id.as_bytes(),
            &serde_json::to_vec(b).expect("serialisable"),
            sync,
        )
    }

    /// Keeps a copy of a batch's needles ([`Needles`]) from the moment its
    /// keys are deleted until it is verified, whatever ends the run in
    /// between (an error anywhere, a panic): its retry in this process
    /// scans with them.
    /// (Either part left empty keeps what was kept: a retry here that
    /// ratchets again knows the slots, not the keys.)
    fn keep_needles(&self, id: &str, wrapped: &[Vec<u8>], old_slots: &[Vec<u8>]) {
        let mut kept = self.kept_needles.lock().expect("needles lock");
        match kept.get_mut(id) {
            Some(k) => {
                if !wrapped.is_empty() {
                    k.wrapped = zeroize::Zeroizing::new(wrapped.to_vec());
                }
                if !old_slots.is_empty() {
                    k.old_slots = zeroize::Zeroizing::new(old_slots.to_vec());
                }
            }
            None if !wrapped.is_empty() => {
                kept.insert(
                    id.to_owned(),
                    Needles {
                        wrapped: zeroize::Zeroizing::new(wrapped.to_vec()),
                        old_slots: zeroize::Zeroizing::new(old_slots.to_vec()),
                        beacon_tags: Default::default(),
                        beacon_ranges: Vec::new(),
                        beacons_whole: false,
                    },
                );
            }
            None => {}
        }
    }

    /// Adds a run's deleted beacon tags and ranges to a batch's kept
    /// needles until it is verified (see [`Needles`]): added, not replaced,
    /// so a retry that deletes a row planted since still looks for the
    /// first run's.
    /// `first`: no earlier run recorded a deletion of the batch's rows.
    fn keep_beacons(&self, id: &str, tags: &[Vec<u8>], ranges: &[Vec<u8>], first: bool) {
        let mut kept = self.kept_needles.lock().expect("needles lock");
        let k = kept.entry(id.to_owned()).or_insert_with(|| Needles {
            wrapped: Default::default(),
            old_slots: Default::default(),
            beacon_tags: Default::default(),
            beacon_ranges: Vec::new(),
            beacons_whole: false,
        });
        k.beacons_whole |= first;
        for t in tags {
            if !k.beacon_tags.contains(t) {
                k.beacon_tags.push(t.clone());
            }
        }
        for r in ranges {
            if !k.beacon_ranges.contains(r) {
                k.beacon_ranges.push(r.clone());
            }
        }
    }

    /// The beacon tags and ranges a run in this process kept for a batch.
    fn kept_beacons(&self, id: &str) -> Option<TagsAndRanges> {
        let kept = self.kept_needles.lock().expect("needles lock");
        let k = kept.get(id)?;
        (!k.beacon_tags.is_empty()).then(|| {
            (
                k.beacon_tags.to_vec(),
                k.beacon_ranges.clone(),
                k.beacons_whole,
            )
        })
    }

    /// Keeps the records of unfinished batch `b` whose rows read live (its
    /// tombstones not yet written, or a row put back since) from reads,
    /// updates, holds and other batches: only `b` may certify them.
    fn keep_live_pending(&self, b: &BatchRow) -> Result<()> {
        let mut live = Vec::new();
        for r in &b.records {
            let (id, subject): (RecordId, SubjectId) = (r.id.parse()?, r.subject.parse()?);
            if matches!(self.store.record(id)?, Some(row) if row.state == RecordState::Live) {
                live.push((id, subject));
            }
        }
        self.isolation.add_pending(live);
        Ok(())
    }

    /// What a certificate states of each record of batch `b`, checked: its
    /// row a tombstone (naming no other certificate), no key of any version
    /// stored or reachable from the live header, and no touched bucket's
    /// live key one that the batch's rotation replaced. The problems found.
    fn records_destroyed(
        &self,
        b: &BatchRow,
        records: &[(RecordId, SubjectId)],
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let epoch = self.epoch.read().expect("epoch lock");
        for (r, (id, sub)) in b.records.iter().zip(records) {
            match self.store.record(*id)? {
                Some(RecordRow {
                    state: RecordState::Disposed { certificate },
                    ..
                }) if certificate.as_ref().is_none_or(|c| *c == b.certificate_id) => {}
                Some(RecordRow {
                    state: RecordState::Disposed { .. },
                    ..
                }) => problems.push(format!(
                    "record {id} reads as disposed of under another certificate"
                )),
                _ => problems.push(format!("record {id} does not read as disposed")),
            }
            // No key of any version: the whole `bucket | record` prefix is empty.
            let left = self.keystore.record_keys(*sub, *id)?;
            let reachable = r.destroyed_versions().iter().any(|v| {
                self.keystore
                    .dek(&epoch.root, epoch.number, *sub, *id, *v)
                    .ok()
                    .flatten()
                    .is_some()
            });
            if !left.is_empty() || reachable {
                problems.push(format!(
                    "a key of record {id} is still stored ({} version(s)) or reachable from the live header",
                    left.len()
                ));
            }
        }
        // No bucket key the rotation replaced is live again.
        if !b.replaced_keys.is_empty() {
            for &bucket in &b.buckets {
                match self
                    .keystore
                    .bucket_key_name(&epoch.root, epoch.number, bucket)
                {
                    Ok(name) if b.replaced_keys.contains(&(bucket, hex::encode(name))) => {
                        problems.push(format!(
                            "bucket {bucket}'s key is one this batch's rotation replaced: a bucket-key row from before the disposal was put back (the keystore was changed without the vault's key: restore the whole vault directory from a backup)"
                        ))
                    }
                    Ok(_) => {}
                    Err(_) => problems.push(format!("bucket {bucket}'s key cannot be read")),
                }
            }
        }
        Ok(problems)
    }

    /// Records a failed verification in the batch and the trail; the
    /// error to return.
    fn verification_failed(
        &self,
        b: &mut BatchRow,
        actor: Option<UserId>,
        ctx: &Context,
        msg: String,
    ) -> Result<Error> {
        b.failed = Some(msg.clone());
        self.put_batch(b, true)?;
        self.keep_live_pending(b)?;
        let e = Error::DisposalFailed(msg);
        self.audit(
            actor,
            ctx,
            "disposal.verify",
            vec![b.id.clone()],
            Err(&e),
            None,
        )?;
        Ok(e)
    }

    /// Drops a batch's kept needles once it is verified.
    fn forget_needles(&self, id: &str) {
        self.kept_needles.lock().expect("needles lock").remove(id);
    }

    fn advance(&self, b: &mut BatchRow, step: &str) -> Result<()> {
        b.step = step.to_owned();
        self.put_batch(b, true)?;
        self.at_step(step);
        Ok(())
    }

    /// Step 6's plan: each record's tombstone row naming `certificate`
    /// and the beacon writes that go with it, read before anything is
    /// deleted, so that the count of beacon rows can be made durable first.
    fn plan_ciphertexts(
        &self,
        records: &[(RecordId, SubjectId)],
        certificate: &str,
    ) -> Result<Tombstones> {
        let mut plan = Vec::with_capacity(records.len());
        for (id, _) in records {
            if let Some(mut row) = self.store.record(*id)? {
                let index = self.index_change(*id, &row.collection, None, None)?;
                row.state = RecordState::Disposed {
                    certificate: Some(certificate.to_owned()),
                };
                row.envelope.clear();
                plan.push((*id, row, index));
            }
        }
        Ok(plan)
    }

    /// The beacon rows a plan deletes and the records that have them.
    fn beacons_planned(plan: &Tombstones) -> BeaconRow {
        BeaconRow {
            deleted: plan.iter().map(|(_, _, i)| i.deleted).sum(),
            records: plan.iter().filter(|(_, _, i)| !i.ops.is_empty()).count() as u64,
            ..BeaconRow::default()
        }
    }

    /// Step 6's work: the plan's rows become tombstones and their beacons
    /// (`beacons`: the plan's count) go in the same batch; then the search index's copies in files and
    /// logs are purged (the deleted ranges, or the whole index when the
    /// batch `resumed` after its rows went and no longer knows them). No
    /// audit and no step recorded here.
    fn delete_ciphertexts(
        &self,
        plan: Tombstones,
        mut beacons: BeaconRow,
        resumed: bool,
    ) -> Result<Deleted> {
        let mut tags = Vec::new();
        let mut ranges = Vec::new();
        for (id, row, index) in plan {
            tags.extend(index.deleted_tags);
            ranges.extend(index.deleted_ranges);
            self.store.put_record_with(id, &row, false, &index.ops)?;
        }
        self.store.flush_records()?;
        // A batch that deleted no beacon row (no searchable field) has
        // nothing to purge.
        let ev = if resumed || !ranges.is_empty() {
            self.store
                .purge_beacons((!resumed).then_some(&ranges[..]))?
        } else {
            crate::store::BeaconPurge::default()
        };
        beacons.whole_family = ev.whole_family;
        beacons.ranges = ev.ranges;
        beacons.snapshots = ev.snapshots;
        beacons.tombstones = ev.tombstones;
        beacons.residue = ev.residue_files;
        beacons.wal_files = ev.wal_files;
        beacons.duration_ms = ev.duration_ms;
        beacons.members = ev.members;
        beacons.split = ev.split;
        Ok(Deleted {
            beacons,
            tags,
            ranges,
            wal_floor: ev.wal_floor,
        })
    }

    /// Runs (or resumes) a batch from its recorded step to the certificate.
    /// `actor` is the user the step events are audited under: the one who
    /// started or retried the batch, or the operator on resume at open.
    /// `prepared` carries step 1's locks and rotation plan from `dispose`;
    /// a resumed batch takes the locks and plans again.
    fn run_batch(
        &self,
        b: &mut BatchRow,
        actor: Option<UserId>,
        ctx: &Context,
        prepared: Option<Prepared<'_>>,
    ) -> Result<CertificateId> {
        let records: Vec<(RecordId, SubjectId)> = b
            .records
            .iter()
            .map(|r| Ok((r.id.parse()?, r.subject.parse()?)))
            .collect::<Result<_>>()?;
        let mut step = step_index(&b.step);
        // Verified by an earlier run, which stopped before the certificate.
        let verified_before = step == step_index("verified");
        let trace = std::env::var_os("PIVAULT_DISPOSAL_TRACE").is_some();
        let mut lap = std::time::Instant::now();
        let mut tr = |what: &str| {
            if trace {
                eprintln!("  step {what}: {:.1} ms", lap.elapsed().as_secs_f64() * 1e3);
            }
            lap = std::time::Instant::now();
        };
        // Negative control (tests only): a snapshot held across the purge.
        let _held_snapshot = self
            .purge_hold_snapshot
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| self.keystore.snapshot())
            .transpose()?;
        // The wrapped DEK bytes of every version that exist before the batch,
        // for the byte scan of step 7. Held in memory only: writing them
        // anywhere would make a copy (the process keeps them from the keys'
        // deletion until the batch is verified, for a retry here: `Needles`).
        let mut wrapped_before = Vec::new();
        // The root-key slots as rows on a keystore cluster before step 4.
        let mut old_slots: Vec<Vec<u8>> = Vec::new();
        if step < step_index("buckets_rotated") {
            // Steps 2 and 3 in one synced write, under the touched buckets'
            // exclusive locks: every key of every record in the batch (all
            // versions, by prefix) is deleted, and each touched bucket gets
            // a new key with its surviving keys re-wrapped under it.
            let p = match prepared {
                Some(p) => p,
                None => {
                    let guards = self.isolation.exclusive(&b.buckets);
                    let ids: HashSet<RecordId> = records.iter().map(|(id, _)| *id).collect();
                    let epoch = self.epoch.read().expect("epoch lock");
                    let planned = self.keystore.plan_rotation(
                        &epoch.root,
                        epoch.number,
                        &b.buckets,
                        |r, _| ids.contains(&r),
                    );
                    drop(epoch);
                    let rotation = match planned {
                        Ok(r) => r,
                        Err(e) => {
                            // Nothing was deleted: the batch stays failed at
                            // its step, visible and retryable.
                            b.failed = Some(e.to_string());
                            self.put_batch(b, true)?;
                            self.audit(
                                actor,
                                ctx,
                                "disposal.rotate",
                                vec![b.id.clone()],
                                Err(&e),
                                None,
                            )?;
                            return Err(e);
                        }
                    };
                    // A backup taken while the batch was stopped before its
                    // keys went holds them and the records: its certificate
                    // names it too. Kept before the keys go (backups take
                    // the batch lock, which this run holds).
                    let known: HashSet<&str> = b.backups.iter().map(|r| r.id.as_str()).collect();
                    let since: Vec<ResidualBackup> = self
                        .residual_backups()?
                        .into_iter()
                        .filter(|r| !known.contains(r.id.as_str()))
                        .map(|mut r| {
                            r.holds_records = Some(true);
                            r
                        })
                        .collect();
                    // The keys this plan replaces, beside those of the
                    // first plan (a rotation that went before a stop).
                    let named = b.keep_replaced(&rotation.replaced);
                    if !since.is_empty() || named {
                        b.backups.extend(since);
                        self.put_batch(b, true)?;
                    }
                    Prepared {
                        guards,
                        wrapped_before: rotation.deleted_wrapped.clone(),
                        rotation,
                    }
                }
            };
            wrapped_before = p.wrapped_before;
            let mut found: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
            for (id, v) in &p.rotation.deleted {
                found.entry(id.to_string()).or_default().insert(*v);
            }
            for r in &mut b.records {
                let mut all: BTreeSet<u32> = r.versions.iter().copied().collect();
                all.extend(found.get(&r.id).into_iter().flatten());
                if !all.is_empty() {
                    r.versions = all.into_iter().collect();
                }
            }
            b.rewrapped = p.rotation.rewrapped;
            self.keystore.commit_rotation(p.rotation)?;
            self.keep_needles(&b.id, &wrapped_before, &[]);
            // The rotation also destroyed every update's residue in these buckets.
            self.clear_dirty(&b.buckets)?;
            drop(p.guards);
            self.advance(b, "keys_deleted")?;
            self.advance(b, "buckets_rotated")?;
            step = step_index("buckets_rotated");
            tr("keys_deleted+buckets_rotated");
        }
        if step < step_index("epoch_ratcheted") {
            // Step 4: epoch ratchet; the old root key is overwritten in the
            // header (deleted from the cluster's rows, then purged: its
            // bytes join the byte scan's needles).
            old_slots = crate::header::slot_rows(&self.header_place())?;
            self.keep_needles(&b.id, &wrapped_before, &old_slots);
            let after = self.ratchet()?;
            b.epoch_after = Some(after);
            self.audit(
                actor,
                ctx,
                "key.epoch",
                vec![
                    format!("epoch:{}", b.epoch_before),
                    format!("epoch:{after}"),
                    b.id.clone(),
                ],
                Ok(()),
                None,
            )?;
            self.advance(b, "epoch_ratcheted")?;
            step = step_index("epoch_ratcheted");
            tr("epoch_ratcheted");
        }
        // The deleted beacons' tags (random markers written only in the
        // rows' values) and key ranges, for the purge and the byte scan.
        let mut beacon_tags: Vec<Vec<u8>> = Vec::new();
        let mut beacon_ranges: Vec<Vec<u8>> = Vec::new();
        // Each purge's last WAL segment on a cluster: its byte scan reads
        // none written after it (held in memory, as the needles are; a
        // resumed batch scans without them).
        let (mut keys_wal_floor, mut beacons_wal_floor) = (None, None);
        // Whether `beacon_tags` include the first deletion's (see `Needles`).
        let mut beacons_whole = false;
        if step < step_index("ciphertexts_deleted") {
            // Steps 5 and 6 at once: the keystore's physical purge on a
            // thread of its own while the ciphertexts go (a tombstone row
            // names the certificate) and the search index is purged. They
            // touch different stores (in production two clusters), and
            // each purge's time is mostly its WAL rounds, which a shared
            // cluster's checkpoints serve together. The steps are still
            // recorded in order: `keystore_purged` once the keys' purge is
            // done, `ciphertexts_deleted` once both are; a crash or failure
            // in between resumes both (each is idempotent).
            let skip_flush = self
                .purge_skip_flush
                .load(std::sync::atomic::Ordering::SeqCst);
            let purge_keys = step < step_index("keystore_purged");
            let resumed = wrapped_before.is_empty();
            // A batch whose keys a run in this process deleted scans with
            // the needles that run held.
            if resumed
                && let Some(kept) = self.kept_needles.lock().expect("needles lock").get(&b.id)
            {
                wrapped_before = kept.wrapped.to_vec();
                if old_slots.is_empty() {
                    old_slots = kept.old_slots.to_vec();
                }
            }
            let buckets = b.buckets.clone();
            let (purged, deleted) = std::thread::scope(|sc| {
                let keys =
                    purge_keys.then(|| sc.spawn(|| self.keystore.purge(&buckets, skip_flush)));
                // The beacon rows the deletion removes, counted and made
                // durable before any goes: a crash, or a keys' purge that
                // fails, after the rows went would leave the resumed batch
                // counting none. A run whose plan is the one kept deletes
                // what the first run planned: none of it went before (its
                // tags are whole, see `Needles`).
                let deleted = (|| -> Result<(Deleted, bool)> {
                    let plan = self.plan_ciphertexts(&records, &b.certificate_id)?;
                    let planned = Self::beacons_planned(&plan);
                    let counted = (planned.deleted, planned.records);
                    let first =
                        b.beacons.is_none() && b.beacons_planned.is_none_or(|kept| kept == counted);
                    if b.beacons.is_none() && b.beacons_planned.is_none() && counted != (0, 0) {
                        b.beacons_planned = Some(counted);
                        self.put_batch(b, true)?;
                    }
                    Ok((self.delete_ciphertexts(plan, planned, resumed)?, first))
                })();
                if deleted.is_ok() {
                    // A crash point within the steps (tests): the rows gone,
                    // the keys' purge not yet recorded.
                    self.at_step("rows_tombstoned");
                }
                (
                    keys.map(|h| h.join().expect("the keystore's purge thread")),
                    deleted,
                )
            });
            // The deleted beacons' tags, kept for a retry here before the
            // keys' purge can end the run.
            if let Ok((d, first_deletion)) = &deleted
                && !d.tags.is_empty()
            {
                self.keep_beacons(&b.id, &d.tags, &d.ranges, *first_deletion);
            }
            // What the ciphertexts' side did is kept with the keys' step,
            // so a batch resumed from there still counts the beacon rows
            // its first run deleted. A batch whose first deletion stopped
            // before it was counted counts the rows planned then: this run
            // finds only those that run did not reach.
            if let Ok((d, _)) = &deleted {
                let mut beacons = d.beacons.clone();
                if resumed && let Some(old) = &b.beacons {
                    // Counted by the run that deleted them.
                    beacons.deleted += old.deleted;
                    beacons.records += old.records;
                } else if let Some((rows, records)) = b.beacons_planned {
                    beacons.deleted = beacons.deleted.max(rows);
                    beacons.records = beacons.records.max(records);
                }
                b.beacons = Some(beacons);
            }
            if let Some(ev) = purged {
                let ev = ev?;
                keys_wal_floor = ev.wal_floor.clone();
                b.purge = Some(PurgeRow::from(&ev));
                self.advance(b, "keystore_purged")?;
                tr("keystore_purged");
            }
            let (deleted, _) = deleted?;
            beacon_tags = deleted.tags;
            beacon_ranges = deleted.ranges;
            beacons_wal_floor = deleted.wal_floor;
            // Every tag a run here deleted (this one's among them): a
            // retry deletes none, or only rows planted since.
            if let Some((tags, ranges, whole)) = self.kept_beacons(&b.id) {
                beacon_tags = tags;
                beacon_ranges = ranges;
                beacons_whole = whole;
            }
            // Tombstones now: a read or an update sees "disposed".
            self.isolation
                .remove_pending(records.iter().map(|(id, _)| *id));
            self.audit(
                actor,
                ctx,
                "custody.disposed",
                vec![b.id.clone(), format!("count:{}", records.len())],
                Ok(()),
                None,
            )?;
            self.advance(b, "ciphertexts_deleted")?;
            step = step_index("ciphertexts_deleted");
            tr("ciphertexts_deleted");
        }
        if step < step_index("verified") {
            // Step 7: verify before any certificate.
            let mut problems = Vec::new();
            if let Some(p) = &b.purge
                && !(p.snapshots == 0
                    && p.live_versions == 1
                    && p.tombstones == 0
                    && p.residue.is_empty()
                    && p.members.iter().all(|m| m.verified))
            {
                let unverified: Vec<&str> = p
                    .members
                    .iter()
                    .filter(|m| !m.verified)
                    .map(|m| m.name.as_str())
                    .collect();
                problems.push(format!(
                        "keystore purge incomplete: snapshots={} live_versions={} tombstones={} residue={:?} members_not_verified={unverified:?}",
                        p.snapshots, p.live_versions, p.tombstones, p.residue
                    ));
            }
            for (id, _) in &records {
                if self
                    .store
                    .get(store::CF_BEACONS, &crate::beacon::reverse_key(*id))?
                    .is_some()
                {
                    problems.push(format!("record {id} still has search beacons"));
                }
            }
            // The two byte scans read different stores (in production two
            // clusters): run at once, the search index's on its own thread.
            let (beacon_scan, key_scan) = std::thread::scope(|sc| {
                let beacons = (b.beacons.is_some() && !beacon_tags.is_empty()).then(|| {
                    sc.spawn(|| {
                        self.store.files_holding_beacons(
                            &beacon_ranges,
                            &beacon_tags,
                            beacons_wal_floor.as_deref(),
                        )
                    })
                });
                let keys = (!wrapped_before.is_empty()).then(|| {
                    let needles: Vec<Vec<u8>> =
                        wrapped_before.iter().chain(&old_slots).cloned().collect();
                    self.keystore.files_containing_for_buckets(
                        &b.buckets,
                        &needles,
                        keys_wal_floor.as_deref(),
                    )
                });
                (
                    beacons.map(|h| h.join().expect("the search index's scan thread")),
                    keys,
                )
            });
            // The copies each scan read, kept in the batch's row before
            // anything else can end the run (the other scan's error, a
            // check over the network): a retry without needles must find
            // them there.
            // A beacon scan without the first deletion's tags clears no
            // copy: what an earlier scan found is checked as a retry
            // without needles checks it (below).
            let beacon_copies_before = b.beacon_copies.clone();
            let mut found = false;
            if let Some(Ok(scan)) = &beacon_scan {
                found |= keep_copies(&mut b.beacon_copies, scan, beacons_whole);
            }
            if let Some(Ok(scan)) = &key_scan {
                // Key needles are whole whenever held: the keys are
                // deleted once, by the run whose needles these are.
                found |= keep_copies(&mut b.key_copies, scan, true);
            }
            if found {
                self.put_batch(b, true)?;
            }
            if let Some(bp) = &mut b.beacons {
                if !bp.residue.is_empty() {
                    problems.push(format!(
                        "search index purge incomplete: residue={:?}",
                        bp.residue
                    ));
                }
                if beacon_tags.is_empty() {
                    let earlier = earlier_copies(
                        "deleted search beacons' tags",
                        &b.beacon_copies,
                        || self.store.copies_present(&b.beacon_copies),
                        &mut problems,
                    );
                    bp.byte_scan = Some(if bp.deleted == 0 && !bp.whole_family {
                        "no beacon rows: nothing to scan for".into()
                    } else {
                        format!(
                            "not repeated: the batch resumed after its beacon rows were deleted and purged{earlier}"
                        )
                    });
                } else {
                    let crate::keystore::ByteScan {
                        hits,
                        scanned,
                        skipped,
                        copies: _,
                    } = beacon_scan.expect("scanned above with tags")?;
                    let places = if self.store.engine_kind() == "rocksdb" {
                        "records-database file(s) that can hold them (every WAL, manifest and other non-table file, every table file outside the live set, every live beacon table file meeting a deleted range)".to_owned()
                    } else {
                        format!(
                            "file(s) of the records cluster's members (every file of each member's data directory{})",
                            skipped_files(
                                skipped,
                                "of other vaults' relations, of this vault's tables other than its search index's touched partitions (as the embedded engine skips other column families' live files), and the WAL (every vault's recent writes: its segments at or before the purge's last write are checked gone from every member by name, and a later one no purged byte can reach)"
                            )
                        )
                    };
                    // Tags without the first deletion's (a retry after a
                    // restart that deleted rows planted since): the copies
                    // an earlier scan found are checked as without tags.
                    let earlier = if beacons_whole {
                        String::new()
                    } else {
                        earlier_copies(
                            "deleted search beacons' tags",
                            &beacon_copies_before,
                            || self.store.copies_present(&beacon_copies_before),
                            &mut problems,
                        )
                    };
                    bp.byte_scan = Some(format!(
                        "{} beacon row tag(s) searched in {scanned} {places}: {} file(s) hold them{earlier}",
                        beacon_tags.len(),
                        hits.len()
                    ));
                    if !hits.is_empty() {
                        problems.push(format!(
                            "deleted search beacons found in records-database files {hits:?}"
                        ));
                    }
                }
            }
            if wrapped_before.is_empty() {
                let earlier = earlier_copies(
                    "pre-disposal wrapped keys",
                    &b.key_copies,
                    || self.keystore.copies_present(&b.key_copies),
                    &mut problems,
                );
                b.byte_scan = Some(format!(
                    "not repeated: the batch resumed after its keys were deleted; key-path and purge checks apply{earlier}"
                ));
            } else {
                let crate::keystore::ByteScan {
                    hits,
                    scanned,
                    skipped,
                    copies: _,
                } = key_scan.expect("scanned above with keys")?;
                tr(&format!(
                    "verify: key paths + byte scan of {scanned} files ({skipped} skipped)"
                ));
                b.scan_files = Some(scanned);
                let places = if self.keystore.engine_kind() == "postgresql" {
                    format!(
                        "every file of every keystore cluster member's data directory (tables, logs, control files){}, read by each member",
                        skipped_files(
                            skipped,
                            "of other vaults' relations, of this vault's relations the purge did not rewrite (the data keys of untouched buckets, as the embedded engine skips their table files), and the WAL (every vault's recent writes: its segments at or before the purge's last write are checked gone from every member by name, and a later one no purged byte can reach)"
                        )
                    )
                } else {
                    "every WAL, manifest and other non-table file, every table file outside the live set, every live data-key table file covering a touched bucket".to_owned()
                };
                let slots = if old_slots.is_empty() {
                    ""
                } else {
                    ", and the root-key slot the ratchet deleted"
                };
                b.byte_scan = Some(format!(
                    "{} pre-disposal wrapped key(s) (every version of every record{slots}) searched in {scanned} keystore file(s) that can hold them ({places}): {} file(s) hold them",
                    wrapped_before.len() + old_slots.len(),
                    hits.len()
                ));
                if !hits.is_empty() {
                    problems.push(format!(
                        "pre-disposal wrapped key bytes found in keystore files {hits:?}"
                    ));
                }
            }
            // What the certificate states of each record, read last: the
            // scans take long, and the rows and keys may change meanwhile.
            problems.extend(self.records_destroyed(b, &records)?);
            if !problems.is_empty() {
                return Err(self.verification_failed(b, actor, ctx, problems.join("; "))?);
            }
            self.audit(
                actor,
                ctx,
                "custody.verified",
                vec![b.id.clone()],
                Ok(()),
                None,
            )?;
            self.advance(b, "verified")?;
            self.forget_needles(&b.id);
            tr("verified");
        }
        // Step 8: ledger, audit, certificate.
        let cert_id: CertificateId = b.certificate_id.parse()?;
        if self
            .store
            .get(store::CF_CERTIFICATES, cert_id.as_bytes())?
            .is_none()
        {
            if verified_before {
                // The files may have changed while the batch was stopped:
                // what the certificate states of each record is read again.
                let problems = self.records_destroyed(b, &records)?;
                if !problems.is_empty() {
                    let msg = format!(
                        "{} (changed since the batch's verification)",
                        problems.join("; ")
                    );
                    return Err(self.verification_failed(b, actor, ctx, msg)?);
                }
            }
            self.store.put(
                store::CF_LEDGER,
                &{
                    let mut k = b.created_ms.to_be_bytes().to_vec();
                    k.extend_from_slice(b.id.as_bytes());
                    k
                },
                &serde_json::to_vec(&json!({
                    "disposal_id": b.id, "certificate_id": b.certificate_id,
                    "records": b.records.iter().map(|r| &r.id).collect::<Vec<_>>(),
                }))
                .expect("serialisable"),
            )?;
            let seq = self.audit(
                actor,
                ctx,
                "disposal.complete",
                vec![
                    b.id.clone(),
                    b.certificate_id.clone(),
                    format!("count:{}", b.records.len()),
                ],
                Ok(()),
                None,
            )?;
            self.store.check_lease()?;
            let (cp_seq, head) = {
                let mut log = self.audit.lock().expect("audit lock");
                log.checkpoint(self.now())?;
                self.sync_anchor(&log);
                (log.head_seq(), log.head_hash())
            };
            debug_assert!(cp_seq >= seq);
            let body = self.certificate_body(b, cp_seq, &head)?;
            let cert = Certificate::sign(body, &self.signing.certificate)?;
            self.store.put(
                store::CF_CERTIFICATES,
                cert_id.as_bytes(),
                cert.to_file_json().as_bytes(),
            )?;
        }
        self.advance(b, "complete")?;
        self.forget_needles(&b.id);
        tr("certificate");
        Ok(cert_id)
    }

    /// Whether a record's data subject lives in Massachusetts, read from the
    /// record itself while it can still be decrypted (its residence-state
    /// field or address, else the collection's default residence), so the
    /// certificate can count the residents: after the disposal nothing can.
    /// A correction that replaced the row meanwhile is followed to the new
    /// version (as `read_live` does); a record that still cannot be read
    /// (damaged, or its keys already gone) counts by its collection's
    /// default, and one without a collection as a resident (as the incident
    /// report counts them), and says so (`read: false`).
    fn residence(&self, id: RecordId, row: &RecordRow) -> Residence {
        let schema = self.schema(&row.collection).ok();
        let mut row = std::borrow::Cow::Borrowed(row);
        for _ in 0..3 {
            if let Some(s) = &schema
                && let Ok(body) = self.decrypt(id, &row)
            {
                return Residence {
                    version: row.version,
                    subject: row.subject,
                    ma: s.classify(&body).ma_resident,
                    read: true,
                };
            }
            match self.store.record(id) {
                Ok(Some(now)) if now.version != row.version && now.state == RecordState::Live => {
                    row = std::borrow::Cow::Owned(now);
                }
                _ => break,
            }
        }
        Residence {
            version: row.version,
            subject: row.subject,
            ma: schema.as_ref().is_none_or(|s| {
                s.default_residence
                    .as_deref()
                    .map_or(crate::schema::DEFAULT_RESIDENCE, str::trim)
                    .eq_ignore_ascii_case("MA")
            }),
            read: false,
        }
    }

    fn user_display(&self, id: &str) -> Result<(String, String)> {
        let uid: UserId = id.parse()?;
        let row = self.user_row(uid)?.ok_or(Error::NotFound("user"))?;
        Ok((row.display_name(), row.role))
    }

    fn certificate_body(
        &self,
        b: &BatchRow,
        checkpoint_seq: u64,
        head: &[u8; 32],
    ) -> Result<Value> {
        let ids: Vec<[u8; 16]> = b
            .records
            .iter()
            .map(|r| r.id.parse::<RecordId>().map(|i| *i.as_bytes()))
            .collect::<Result<_>>()?;
        let subject_set: BTreeSet<[u8; 16]> = b
            .records
            .iter()
            .map(|r| r.subject.parse::<SubjectId>().map(|i| *i.as_bytes()))
            .collect::<Result<_>>()?;
        let subjects: Vec<[u8; 16]> = subject_set.into_iter().collect();
        let collections: BTreeSet<&str> = b.records.iter().map(|r| r.collection.as_str()).collect();
        let mut elements = BTreeSet::new();
        let mut any_pi = false;
        for c in &collections {
            if let Ok(schema) = self.schema(&CollectionName::parse(c)?) {
                for f in &schema.fields {
                    if f.ty.is_sensitive() {
                        elements.insert(f.ty.as_str());
                    }
                }
                any_pi |= schema.fields.iter().any(|f| f.ty.is_sensitive());
            }
        }
        let (op_name, op_role) = self.user_display(&b.operator)?;
        let purge = b.purge.clone().unwrap_or(PurgeRow {
            snapshots: 0,
            live_versions: 0,
            tombstones: 0,
            residue: vec![],
            live_sst_files: 0,
            wal_files: 0,
            compacted_buckets: 0,
            duration_ms: 0,
            engine: None,
            members: Vec::new(),
        });
        let contractor = match &b.contractor {
            Some(c) => {
                let (name, _) = self.user_display(c)?;
                let mut v = json!({ "user_id": c, "name": name, "organisation": b.parties.contractor_organisation,
                        "contract_reference": b.parties.contract_reference.clone().unwrap_or_else(|| "(none stated)".into()) });
                if let Some(fp) = &b.contractor_key_fingerprint {
                    v["key_fingerprint"] = json!(fp);
                }
                v
            }
            None => match &b.parties.contractor_organisation {
                Some(org) => json!({ "name": org, "organisation": org,
                    "contract_reference": b.parties.contract_reference.clone().unwrap_or_else(|| "(none stated)".into()) }),
                None => Value::Null,
            },
        };
        let mut contractor = contractor;
        if let (Some(c), Some(cert)) = (
            contractor.as_object_mut(),
            &b.parties.contractor_certification,
        ) {
            c.insert("certification".into(), json!(cert));
        }
        let attestation = certificate::ATTESTATION;
        // Exports made before this batch that hold its records (export.rs).
        let record_ids: Vec<RecordId> = b
            .records
            .iter()
            .map(|r| r.id.parse())
            .collect::<Result<_>>()?;
        let copies = self.exports_holding(&record_ids)?;
        let mut not_covered = not_covered(&b.backups);
        let on_cluster = purge.engine.as_deref() == Some("postgresql");
        let records_engine = self.store.engine_kind();
        if records_engine == "postgresql" {
            not_covered.push(
                "copies of the records cluster made outside pivault (base backups, disk snapshots, WAL archives): they hold the disposed records' ciphertexts, unreadable without the destroyed keys, and their search-index rows (keyed hashes of identifiers, which the vault's search secret could match against a guess)".to_owned(),
            );
        }
        if on_cluster {
            not_covered.extend([
                "copies of the keystore cluster made outside pivault: base backups (pg_basebackup), disk or volume snapshots, WAL archives (doctor checks that no member archives WAL and that no logical slot or publication exists; copies made by other means cannot be seen)".to_owned(),
                "the memory of each keystore member (shared buffers, the operating system's page cache, swap)".to_owned(),
                "keystore members other than those listed in sanitization.details.keystore_purge.members (a member added after the purge, or one removed without its data directory being wiped)".to_owned(),
            ]);
        }
        // What a byte scan cannot see: bytes moved or changed on purpose.
        let deliberate = |what: &str, schema: &str| {
            format!(
                "copies of the vault's {what} made before this disposal by whoever holds the vault's cluster role: taken out of the cluster, written in another encoding, or written into rows of the vault's own tables that the purge does not rewrite (the byte scan also reads every relation of the vault's {schema} schema that the catalog does not show as pivault's own, for the stored bytes)"
            )
        };
        if on_cluster {
            not_covered.push(deliberate("keys", "keystore"));
        }
        if records_engine == "postgresql" {
            not_covered.push(deliberate("search-index rows", "records"));
        }
        if !copies.is_empty() {
            not_covered.push(format!(
                "{} export(s) made before this disposal hold copies of records of this batch outside the vault (target.copies_outside_vault)",
                copies.len()
            ));
        }
        Ok(json!({
            "certificate_id": b.certificate_id,
            "schema_version": certificate::SCHEMA_VERSION,
            "issued_at": format_ms(self.now()),
            "status": "draft",
            "vault": {
                "id": self.info.vault_id.to_string(),
                "key_fingerprint": crate::crypto::fingerprint(self.signing.certificate.verifying_key().as_bytes()),
            },
            "tool": { "name": "pivault", "version": env!("CARGO_PKG_VERSION") },
            "disposal_id": b.id,
            "parties": {
                "data_owner": { "name": if b.parties.data_owner.is_empty() { "(not stated)" } else { &b.parties.data_owner }, "address": b.parties.data_owner_address },
                "contractor": contractor,
            },
            "operator": {
                "name": op_name, "title": b.parties.operator_title.clone().unwrap_or_else(|| op_role.clone()),
                "organisation": b.parties.operator_organisation, "user_id": b.operator,
                "time": format_ms(b.created_ms), "attestation": attestation,
            },
            "validator": Value::Null,
            "target": {
                "description": "encrypted logical records in the vault datastore",
                "collections": collections.iter().collect::<Vec<_>>(),
                "record_count": b.records.len(),
                "subject_count": subjects.len(),
                "ma_resident_count": b.ma_resident_count(),
                "ma_resident_basis": match b.residence_by_default() {
                    _ if b.ma_resident_count().is_none() => Value::Null,
                    0 => json!("read from each record (residence-state field, else address, else the collection's default residence)"),
                    n => json!(format!("read from each record; {n} record(s) could not be read and were counted by their collection's default residence")),
                },
                "commitment": {
                    "algorithm": certificate::MERKLE_ALGORITHM,
                    "record_root": hex::encode(certificate::merkle_root(&ids)),
                    "subject_root": hex::encode(certificate::merkle_root(&subjects)),
                },
                "classification": {
                    "before": if any_pi { "MA personal information (M.G.L. c. 93H §1)" } else { "confidential" },
                    "elements": elements.iter().collect::<Vec<_>>(),
                    "after": match pending_until(&b.backups) {
                        Some(until) => format!("{} (until {}): no personal information recoverable from the vault", certificate::PENDING_PHRASE, format_ms(until)),
                        None => "no personal information recoverable".to_owned(),
                    },
                },
                "backups": backups_json(&b.backups),
                "copies_outside_vault": copies,
            },
            "sanitization": {
                "method": "Purge",
                "technique": "Cryptographic Erase",
                "details": {
                    "cipher": "AES-256-GCM",
                    "key_bits": 256,
                    "rng": "operating-system CSPRNG (getrandom)",
                    "key_hierarchy": "passphrase -Argon2id-> unlock key -> epoch root key -> bucket key -> per-record data key",
                    "keys_destroyed": b.records.iter().map(|r| json!({ "record_id": r.id, "key_version": r.version, "key_versions": r.destroyed_versions() })).collect::<Vec<_>>(),
                    "buckets_rotated": b.buckets.len(),
                    "surviving_keys_rewrapped": b.rewrapped,
                    "epoch_before": b.epoch_before,
                    "epoch_after": b.epoch_after,
                    "keystore_purge": keystore_purge_json(&purge),
                    "search_index": search_index_json(b.beacons.as_ref(), records_engine),
                },
                "verification": {
                    "method": "every record reads as disposed; no key path from the live header reaches its data key; keystore purge checks; byte scan of every keystore file for the pre-disposal wrapped keys",
                    "byte_scan": b.byte_scan,
                    "result": "PASS",
                },
                "standards": {
                    "method": certificate::METHOD_STANDARD,
                    "technique_vocabulary": certificate::TECHNIQUE_VOCABULARY,
                    "record": certificate::RECORD_STANDARD,
                    "superseded": "NIST SP 800-88 Rev. 1 (withdrawn 2025-09-26); its App. G field names are kept in this certificate for forms that copy them",
                    "scope_statement": certificate::SCOPE_STATEMENT,
                },
                "key_zeroization": if on_cluster {
                    "each record's data keys deleted from the keystore; every touched bucket key replaced and its surviving keys re-wrapped; the epoch root key overwritten in the vault header (ratchet); the keystore cluster's touched tables rewritten (VACUUM FULL) and its WAL from before the purge removed on every member; verified by key-path checks and a byte scan of every file of every member"
                } else {
                    "each record's data keys deleted from the keystore; every touched bucket key replaced and its surviving keys re-wrapped; the epoch root key overwritten in the vault header (ratchet); keystore flushed and compacted so no file keeps the old key bytes; verified by key-path checks and a byte scan"
                },
                "record": {
                    "media_type": match (records_engine == "postgresql", on_cluster) {
                        (true, true) => "logical records (AES-256-GCM ciphertexts in a PostgreSQL records cluster, their wrapped keys in a PostgreSQL keystore cluster)",
                        (true, false) => "logical records (AES-256-GCM ciphertexts in a PostgreSQL records cluster, their wrapped keys in the vault's RocksDB keystore)",
                        (false, true) => "logical records (AES-256-GCM ciphertexts in the vault's RocksDB datastore, their wrapped keys in a PostgreSQL keystore cluster)",
                        (false, false) => "logical records (AES-256-GCM ciphertexts and their wrapped keys) in the vault's RocksDB datastore",
                    },
                    "media_source": format!("pivault vault {}", self.info.vault_id),
                    "manufacturer_model_serial": "not applicable: logical sanitization, no device sanitized",
                    "pre_sanitization_categorization": if any_pi { "MA personal information (M.G.L. c. 93H §1)" } else { "confidential" },
                    "method": "Purge",
                    "technique": "Cryptographic Erase",
                    "tool": format!("pivault {}", env!("CARGO_PKG_VERSION")),
                    "verification": "full verification of every record in the batch (see verification)",
                    "post_sanitization_categorization": "no personal information recoverable from the vault",
                    "post_sanitization_destination": "retained in place: each record a tombstone row naming this certificate, without ciphertext or key",
                    "performed_by": "see operator",
                    "validated_by": "see validator (a different person)",
                    "contractor": "see parties.contractor",
                },
                "not_covered": not_covered,
                "exclusions": b.excluded.iter().map(|(id, why)| json!({ "record_id": id, "reason": why })).collect::<Vec<_>>(),
            },
            "outcome_statement": outcome_statement(&b.backups),
            "outcome": match pending_until(&b.backups) {
                Some(until) => json!({
                    "state": certificate::PENDING_PHRASE,
                    "complete_at": format_ms(until),
                    "residual_copies": b.backups.iter().filter(|r| r.holds()).map(|r| json!({ "backup_id": r.id, "expiry": format_ms(r.expires_ms) })).collect::<Vec<_>>(),
                }),
                None => json!({ "state": "complete", "residual_copies": [] }),
            },
            "audit": { "checkpoint_seq": checkpoint_seq, "head_hash": hex::encode(head) },
        }))
    }

    /// The disposal ledger as a replay set: every record any disposal batch
    /// named (complete, failed or in progress — its key is gone or going),
    /// with the batch's certificate ID.
    pub(crate) fn disposed_records(&self) -> Result<std::collections::HashMap<RecordId, String>> {
        let mut out = std::collections::HashMap::new();
        for (_, v) in self.store.scan_prefix(store::CF_DISPOSALS, &[])? {
            let b: BatchRow =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal batch"))?;
            for r in &b.records {
                out.insert(r.id.parse()?, b.certificate_id.clone());
            }
        }
        for (_, v) in self.store.scan_prefix(store::CF_LEDGER, &[])? {
            let e: Value =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal ledger"))?;
            let cert = e["certificate_id"].as_str().unwrap_or_default().to_owned();
            for r in e["records"].as_array().into_iter().flatten() {
                let id: RecordId = r
                    .as_str()
                    .ok_or(Error::Integrity("disposal ledger"))?
                    .parse()?;
                out.entry(id).or_insert_with(|| cert.clone());
            }
        }
        Ok(out)
    }

    /// Resumes every batch a crash interrupted (called on open).
    pub(crate) fn resume_disposals(&self) -> Result<()> {
        let mut batches = Vec::new();
        for (_, v) in self.store.scan_prefix(store::CF_DISPOSALS, &[])? {
            let b: BatchRow =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal batch"))?;
            if b.step == "complete" {
                continue;
            }
            // Until its tombstones are written, an unfinished batch (failed
            // ones included) keeps its records from reads, updates, holds
            // and other batches; after, those whose rows read live again.
            if step_index(&b.step) < step_index("ciphertexts_deleted") {
                let named = b
                    .records
                    .iter()
                    .map(|r| Ok((r.id.parse()?, r.subject.parse()?)))
                    .collect::<Result<Vec<(RecordId, SubjectId)>>>()?;
                self.isolation.add_pending(named);
            } else {
                self.keep_live_pending(&b)?;
            }
            batches.push(b);
        }
        for mut b in batches.into_iter().filter(|b| b.failed.is_none()) {
            let ctx = Context {
                channel: Channel::System,
                source: None,
                request_id: None,
            };
            let operator = b.operator.parse().ok();
            let resume = |b: &BatchRow, outcome| {
                self.audit(
                    operator,
                    &ctx,
                    "disposal.resume",
                    vec![b.id.clone(), format!("step:{}", b.step)],
                    outcome,
                    None,
                )
            };
            resume(&b, Ok(()))?;
            // A failure is recorded in the batch (or it stays at its step
            // and resumes again); opening goes on. An error the batch does
            // not record (a storage error) is the trail's, by its code, so
            // a batch left at its step says why; a trail that cannot take
            // it fails the open, as every audited step does.
            if let Err(e) = self.run_batch(&mut b, operator, &ctx, None)
                && b.failed.is_none()
            {
                resume(&b, Err(&e))?;
            }
        }
        Ok(())
    }

    /// Retries an unfinished batch: a failed one, or one a storage error
    /// stopped (officer, or the contractor whose scope covers every record
    /// of the batch). Audited under the retrying user; a complete batch is
    /// refused.
    pub fn retry_disposal(&self, s: &Session, id: DisposalId) -> Result<CertificateId> {
        self.authorize(s, Some(Permission::Dispose))?;
        let _g = self.disposal_lock.lock().expect("disposal lock");
        let r = (|| {
            self.isolation.check_fence()?;
            let bytes = self
                .store
                .get(store::CF_DISPOSALS, id.as_bytes())?
                .ok_or(Error::NotFound("disposal"))?;
            let b: BatchRow =
                serde_json::from_slice(&bytes).map_err(|_| Error::Integrity("disposal batch"))?;
            if b.step == "complete" {
                return Err(Error::AlreadyExists("certificate of this batch"));
            }
            if let Some(scope) = self.contractor_filter(s)? {
                let inside = b.records.iter().all(|r| {
                    scope.collections.contains(&r.collection) || scope.records.contains(&r.id)
                });
                if !inside {
                    return Err(Error::PermissionDenied(
                        "retry a disposal outside your assigned scope",
                    ));
                }
            }
            Ok(b)
        })();
        let mut b = match r {
            Ok(b) => b,
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "disposal.retry",
                    vec![id.to_string()],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        self.audit(
            Some(s.user),
            &s.ctx,
            "disposal.retry",
            vec![id.to_string(), format!("step:{}", b.step)],
            Ok(()),
            None,
        )?;
        b.failed = None;
        // Re-run the purge and the verification.
        if step_index(&b.step) >= step_index("keystore_purged") {
            b.step = "epoch_ratcheted".into();
        }
        self.run_batch(&mut b, Some(s.user), &s.ctx, None)
    }

    /// Lists disposal batches, newest last.
    pub fn disposals(&self, s: &Session) -> Result<Vec<DisposalSummary>> {
        self.authorize_any(
            s,
            &[
                Permission::Dispose,
                Permission::RunRetention,
                Permission::ReadAudit,
            ],
        )?;
        // A contractor sees only the batches they carried out.
        let contractor = self.contractor_filter(s)?.is_some();
        let mut out = Vec::new();
        for (_, v) in self.store.scan_prefix(store::CF_DISPOSALS, &[])? {
            let b: BatchRow =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal batch"))?;
            if contractor && b.contractor.as_deref() != Some(s.user.to_string().as_str()) {
                continue;
            }
            out.push(DisposalSummary {
                id: b.id.parse()?,
                certificate_id: b.certificate_id.parse()?,
                step: b.step,
                failed: b.failed,
                records: b.records.len() as u64,
                created_ms: b.created_ms,
                operator: b.operator.parse()?,
            });
        }
        out.sort_by_key(|d| d.created_ms);
        Ok(out)
    }

    // ----- certificates ---------------------------------------------------

    /// Whether `s` may read certificate `cert`: anyone signed in, but a
    /// contractor only the certificates of the batches they carried out (the
    /// others name records, collections and exclusions outside their
    /// scope; REQ-DISP-02).
    fn may_read_certificate(&self, s: &Session, cert: &Certificate) -> Result<bool> {
        Ok(self.contractor_filter(s)?.is_none() || carried_out_by(cert, s.user))
    }

    /// A stored certificate (officer, auditor, admin, and the contractor who
    /// carried out its batch).
    pub fn certificate(&self, s: &Session, id: CertificateId) -> Result<Certificate> {
        self.authorize(s, None)?;
        let bytes = self
            .store
            .get(store::CF_CERTIFICATES, id.as_bytes())?
            .ok_or(Error::NotFound("certificate"))?;
        let cert = Certificate::parse(
            std::str::from_utf8(&bytes).map_err(|_| Error::Integrity("certificate"))?,
        )?;
        if !self.may_read_certificate(s, &cert)? {
            return Err(Error::NotFound("certificate"));
        }
        self.audit(
            Some(s.user),
            &s.ctx,
            "certificate.read",
            vec![id.to_string()],
            Ok(()),
            None,
        )?;
        Ok(cert)
    }

    /// A stored certificate as a W3C Verifiable Credential with an
    /// eddsa-jcs-2022 proof by the vault's certificate key
    /// ([`certificate::verifiable_credential`]); the same readers as
    /// [`Vault::certificate`].
    pub fn certificate_credential(&self, s: &Session, id: CertificateId) -> Result<Value> {
        let cert = self.certificate(s, id)?;
        certificate::verifiable_credential(&cert, &self.signing.certificate, &format_ms(self.now()))
    }

    /// The proof that `record` is one of the records a certificate's batch
    /// disposed of (REQ-DISP-03): the Merkle path from the record's leaf to
    /// the certificate's `target.commitment.record_root`, checked offline by
    /// [`certificate::verify_record_proof`]. The same readers as
    /// [`Vault::certificate`]; a record the batch did not dispose of has no
    /// proof ([`Error::NotFound`]). Audited with the IDs only.
    pub fn certificate_proof(
        &self,
        s: &Session,
        id: CertificateId,
        record: RecordId,
    ) -> Result<certificate::RecordProof> {
        self.authorize(s, None)?;
        let r = (|| {
            let bytes = self
                .store
                .get(store::CF_CERTIFICATES, id.as_bytes())?
                .ok_or(Error::NotFound("certificate"))?;
            let cert = Certificate::parse(
                std::str::from_utf8(&bytes).map_err(|_| Error::Integrity("certificate"))?,
            )?;
            if !self.may_read_certificate(s, &cert)? {
                return Err(Error::NotFound("certificate"));
            }
            let cert_id = id.to_string();
            let mut batch = None;
            for (_, v) in self.store.scan_prefix(store::CF_DISPOSALS, &[])? {
                let b: BatchRow =
                    serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal batch"))?;
                if b.certificate_id == cert_id {
                    batch = Some(b);
                    break;
                }
            }
            let b = batch.ok_or(Error::Integrity("certificate without its disposal batch"))?;
            let ids: Vec<[u8; 16]> = b
                .records
                .iter()
                .map(|r| r.id.parse::<RecordId>().map(|i| *i.as_bytes()))
                .collect::<Result<_>>()?;
            let root = certificate::record_root(&cert.body)
                .ok_or(Error::Integrity("certificate record commitment"))?;
            if certificate::merkle_root(&ids) != root {
                return Err(Error::Integrity(
                    "disposal batch does not match its certificate's commitment",
                ));
            }
            let proof = certificate::merkle_proof(&ids, record.as_bytes())
                .ok_or(Error::NotFound("record in this certificate's batch"))?;
            Ok(certificate::RecordProof {
                certificate_id: cert_id,
                record_id: *record.as_bytes(),
                record_root: root,
                proof,
            })
        })();
        self.audit(
            Some(s.user),
            &s.ctx,
            "certificate.prove",
            vec![id.to_string(), record.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// Every stored certificate, newest last, optionally only the drafts
    /// still waiting for validation (officer, auditor, admin, contractor:
    /// the same readers as [`Vault::certificate`]). IDs, status, times,
    /// counts and names of the parties only.
    pub fn list_certificates(
        &self,
        s: &Session,
        drafts_only: bool,
    ) -> Result<Vec<CertificateSummary>> {
        self.authorize(s, None)?;
        let contractor = self.contractor_filter(s)?.is_some();
        let mut out = Vec::new();
        self.store.for_each(store::CF_CERTIFICATES, |_, value| {
            let cert = Certificate::parse(
                std::str::from_utf8(value).map_err(|_| Error::Integrity("certificate"))?,
            )?;
            if contractor && !carried_out_by(&cert, s.user) {
                return Ok(());
            }
            let b = &cert.body;
            let text = |v: &Value| v.as_str().map(str::to_owned);
            let status = cert.status().unwrap_or("unknown").to_owned();
            if drafts_only && status != "draft" {
                return Ok(());
            }
            out.push(CertificateSummary {
                id: cert.id().unwrap_or_default().to_owned(),
                status,
                issued_at: text(&b["issued_at"]).unwrap_or_default(),
                operator: text(&b["operator"]["name"]),
                operator_user_id: text(&b["operator"]["user_id"]),
                record_count: b["target"]["record_count"].as_u64().unwrap_or(0),
                cosigned_by: cert
                    .signatures
                    .iter()
                    .filter(|g| g.role != "vault")
                    .map(|g| g.role.clone())
                    .collect(),
            });
            Ok(())
        })?;
        out.sort_by(|a, b| a.issued_at.cmp(&b.issued_at));
        self.audit(
            Some(s.user),
            &s.ctx,
            "certificate.list",
            vec![if drafts_only {
                "status:draft".into()
            } else {
                "status:any".into()
            }],
            Ok(()),
            None,
        )?;
        Ok(out)
    }

    /// The drafts waiting for validation, for those who may validate
    /// (officers, auditors): [`Vault::list_certificates`] of drafts behind
    /// the `ValidateCertificate` permission, so that a validation page is
    /// refused by the core to a role that could not use it.
    pub fn certificates_to_validate(&self, s: &Session) -> Result<Vec<CertificateSummary>> {
        self.authorize(s, Some(Permission::ValidateCertificate))?;
        self.list_certificates(s, true)
    }

    /// Validates a draft certificate (REQ-CE-06): an officer other than the
    /// operator attests; the certificate is re-signed as validated.
    pub fn validate_certificate(
        &self,
        s: &Session,
        id: CertificateId,
        title: Option<&str>,
    ) -> Result<Certificate> {
        let me = self.authorize(s, Some(Permission::ValidateCertificate))?;
        let default_title = match Role::parse(&me.role)? {
            Role::Auditor => "auditor",
            _ => "security officer",
        };
        let r = (|| {
            if let Some(t) = title {
                crate::audit::check_text("title", t, PARTY_MAX_CHARS)?;
            }
            // Read, re-signed and written back under the certificates'
            // lock: a co-signature (or another validation) racing it would
            // otherwise be lost, or undo it.
            let _one = self.certificate_lock.lock().expect("certificate lock");
            let bytes = self
                .store
                .get(store::CF_CERTIFICATES, id.as_bytes())?
                .ok_or(Error::NotFound("certificate"))?;
            let cert = Certificate::parse(
                std::str::from_utf8(&bytes).map_err(|_| Error::Integrity("certificate"))?,
            )?;
            if cert.body["operator"]["user_id"].as_str() == Some(&s.user.to_string()) {
                return Err(Error::invalid(
                    "the validator must be a different user from the operator (NIST SP 800-88 App. G)",
                ));
            }
            // Co-signatures made on the draft are kept (they verify over
            // the draft form of the validated body; certificate.rs).
            let signed = cert.validated(
                json!({
                    "name": me.display_name(), "title": title.unwrap_or(default_title), "user_id": s.user.to_string(),
                    "time": format_ms(self.now()),
                    "attestation": certificate::ATTESTATION,
                }),
                &self.signing.certificate,
            )?;
            self.store.put(
                store::CF_CERTIFICATES,
                id.as_bytes(),
                signed.to_file_json().as_bytes(),
            )?;
            Ok(signed)
        })();
        self.audit(
            Some(s.user),
            &s.ctx,
            "certificate.validate",
            vec![id.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// Adds a contractor's co-signature, checked against their registered key.
    pub fn cosign_certificate(
        &self,
        s: &Session,
        id: CertificateId,
        signature: &[u8; 64],
    ) -> Result<Certificate> {
        self.authorize(s, Some(Permission::Dispose))?;
        let r = (|| {
            let scope = self.contractor_scope(s.user)?;
            let key_hex = scope.public_key.ok_or_else(|| {
                Error::invalid(
                    "no Ed25519 key is registered for you (pivault contractor register-key)",
                )
            })?;
            let key = certificate::parse_public_key(&key_hex)?;
            // As a validation: read, signed and written under the lock.
            let _one = self.certificate_lock.lock().expect("certificate lock");
            let bytes = self
                .store
                .get(store::CF_CERTIFICATES, id.as_bytes())?
                .ok_or(Error::NotFound("certificate"))?;
            let mut cert = Certificate::parse(
                std::str::from_utf8(&bytes).map_err(|_| Error::Integrity("certificate"))?,
            )?;
            // Only the contractor who carried out the batch co-signs its
            // certificate (another contractor's key proves nothing about it).
            if !carried_out_by(&cert, s.user) {
                return Err(Error::PermissionDenied(
                    "co-sign a certificate of a disposal another user carried out",
                ));
            }
            cert.add_detached("contractor", &key, signature)?;
            self.store.put(
                store::CF_CERTIFICATES,
                id.as_bytes(),
                cert.to_file_json().as_bytes(),
            )?;
            Ok(cert)
        })();
        self.audit(
            Some(s.user),
            &s.ctx,
            "certificate.cosign",
            vec![id.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    // ----- holds, retention, contractors ------------------------------------

    /// Places a legal hold on a record or a subject (admin or officer).
    pub fn add_hold(
        &self,
        s: &Session,
        record: Option<RecordId>,
        subject: Option<SubjectId>,
        reason: &str,
    ) -> Result<()> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::RecordReview])?;
        crate::audit::check_reason(reason)?;
        let (key, target) = match (record, subject) {
            (Some(r), None) => (hold_key(b'r', r.as_bytes()), r.to_string()),
            (None, Some(sub)) => (hold_key(b's', sub.as_bytes()), sub.to_string()),
            _ => {
                return Err(Error::invalid(
                    "a hold names exactly one record or one subject",
                ));
            }
        };
        let row = HoldRow {
            reason: reason.to_owned(),
            by: s.user.to_string(),
            created_ms: self.now(),
        };
        // Under the bucket's lock: a batch re-checks holds under the same
        // lock, exclusive, so a hold either lands before and excludes the
        // record, or finds the record in the batch and is refused.
        let subject_of_hold = match (record, subject) {
            (Some(r), _) => self.store.record(r)?.map(|row| row.subject),
            (_, sub) => sub,
        };
        let _g = subject_of_hold.map(|sub| self.isolation.shared(self.keystore.bucket_of(sub)));
        let pending = match (record, subject) {
            (Some(r), _) => self.isolation.check_not_pending(r).is_err(),
            (_, Some(sub)) => self.isolation.subject_pending(sub),
            _ => false,
        };
        if pending {
            let e = Error::DisposalInProgress;
            self.audit(
                Some(s.user),
                &s.ctx,
                "hold.add",
                vec![target],
                Err(&e),
                None,
            )?;
            return Err(e);
        }
        self.write_audited(
            s,
            store::CF_HOLDS,
            &key,
            Some(&serde_json::to_vec(&row).expect("serialisable")),
            ("hold.add", vec![target], Some(reason)),
        )
    }

    /// Lifts a legal hold.
    pub fn remove_hold(
        &self,
        s: &Session,
        record: Option<RecordId>,
        subject: Option<SubjectId>,
    ) -> Result<()> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::RecordReview])?;
        let (key, target) = match (record, subject) {
            (Some(r), None) => (hold_key(b'r', r.as_bytes()), r.to_string()),
            (None, Some(sub)) => (hold_key(b's', sub.as_bytes()), sub.to_string()),
            _ => {
                return Err(Error::invalid(
                    "a hold names exactly one record or one subject",
                ));
            }
        };
        if self.store.get(store::CF_HOLDS, &key)?.is_none() {
            return Err(Error::NotFound("hold"));
        }
        self.write_audited(
            s,
            store::CF_HOLDS,
            &key,
            None,
            ("hold.remove", vec![target], None),
        )
    }

    /// Lists legal holds.
    pub fn holds(&self, s: &Session) -> Result<Vec<Hold>> {
        self.authorize(s, None)?;
        self.store
            .scan_prefix(store::CF_HOLDS, &[])?
            .into_iter()
            .map(|(k, v)| {
                let h: HoldRow =
                    serde_json::from_slice(&v).map_err(|_| Error::Integrity("hold"))?;
                let id = uuid::Uuid::from_slice(&k[1..]).map_err(|_| Error::Integrity("hold"))?;
                Ok(Hold {
                    kind: if k[0] == b'r' { "record" } else { "subject" },
                    target: id.to_string(),
                    reason: h.reason,
                    by: h.by.parse()?,
                    created_ms: h.created_ms,
                })
            })
            .collect()
    }

    /// Sets a collection's retention policy. An officer may set any; an
    /// admin may only lengthen an existing one: a new or shorter policy
    /// makes records due for disposal (which the nightly retention runner
    /// then carries out), and an admin may not dispose (the insider rule
    /// of [`Role::may_delegate`]: no indirect route to a power one lacks).
    pub fn set_retention(
        &self,
        s: &Session,
        collection: &str,
        policy: RetentionPolicy,
    ) -> Result<()> {
        self.authorize_any(
            s,
            &[Permission::ManageCollections, Permission::RecordReview],
        )?;
        let c = CollectionName::parse(collection)?;
        self.schema(&c)?;
        if policy.days == 0 {
            return Err(Error::invalid("retention must be at least one day"));
        }
        let role = Role::parse(&self.authorize(s, None)?.role)?;
        let current = self.retention_policies()?.remove(c.as_str());
        let brings_due_sooner = current.is_none_or(|p| {
            policy.days < p.days || (policy.from_updated != p.from_updated && !policy.from_updated)
        });
        if brings_due_sooner && !role.permits(Permission::RunRetention) {
            let e = Error::PermissionDenied(
                "set a new or shorter retention policy (an officer must: it makes records due for disposal)",
            );
            self.audit(
                Some(s.user),
                &s.ctx,
                "retention.set",
                vec![format!("collection:{c}"), format!("days:{}", policy.days)],
                Err(&e),
                None,
            )?;
            return Err(e);
        }
        self.write_audited(
            s,
            store::CF_RETENTION,
            c.as_str().as_bytes(),
            Some(&serde_json::to_vec(&policy).expect("serialisable")),
            (
                "retention.set",
                vec![format!("collection:{c}"), format!("days:{}", policy.days)],
                None,
            ),
        )
    }

    /// Every retention policy.
    pub fn retention(&self, s: &Session) -> Result<BTreeMap<String, RetentionPolicy>> {
        self.authorize(s, None)?;
        self.retention_policies()
    }

    /// Assigns a contractor's scope and (optionally) registers their public key (admin).
    pub fn assign_contractor(
        &self,
        s: &Session,
        username: &str,
        scope: ContractorScope,
    ) -> Result<UserId> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        let r = (|| {
            let name = crate::ids::Username::parse(username)?;
            let row = self.user_by_name(&name)?.ok_or(Error::NotFound("user"))?;
            if Role::parse(&row.role)? != Role::Contractor {
                return Err(Error::invalid("the user is not a contractor"));
            }
            for c in &scope.collections {
                self.schema(&CollectionName::parse(c)?)?;
            }
            for r in &scope.records {
                r.parse::<RecordId>()?;
            }
            if let Some(k) = &scope.public_key {
                certificate::parse_public_key(k)?;
            }
            row.id.parse::<UserId>()
        })();
        let id = match r {
            Ok(id) => id,
            Err(e) => {
                // A refused assignment is audited with its reason code.
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "contractor.assign",
                    vec![],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        self.write_audited(
            s,
            store::CF_CONTRACTORS,
            id.as_bytes(),
            Some(&serde_json::to_vec(&scope).expect("serialisable")),
            ("contractor.assign", vec![id.to_string()], None),
        )?;
        Ok(id)
    }

    /// Every contractor with their scope and the fingerprint of their
    /// registered key (admin, officer or auditor: who may dispose of what
    /// is part of overseeing service providers, 201 CMR 17.03(2)(f)).
    pub fn list_contractors(&self, s: &Session) -> Result<Vec<ContractorInfo>> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::ReadAudit])?;
        let mut out = Vec::new();
        let mut rows = self.all_user_rows()?;
        rows.sort_by(|a, b| a.username.cmp(&b.username));
        for u in &rows {
            if u.role != Role::Contractor.as_str() {
                continue;
            }
            let id: UserId = u.id.parse()?;
            let scope = self.contractor_scope(id)?;
            out.push(ContractorInfo {
                user_id: id,
                username: u.username.clone(),
                disabled: u.disabled,
                key_fingerprint: self.contractor_key_fingerprint(id)?,
                collections: scope.collections,
                records: scope.records.len(),
            });
        }
        self.audit(
            Some(s.user),
            &s.ctx,
            "contractor.list",
            vec![],
            Ok(()),
            None,
        )?;
        Ok(out)
    }

    /// Takes a contractor's scope and registered key away (admin): from
    /// now on they may list and dispose of nothing, and their key can
    /// co-sign no new certificate. Certificates they co-signed stay valid
    /// (the key is named in each). Their account stays; `user disable`
    /// ends it.
    pub fn revoke_contractor(&self, s: &Session, username: &str) -> Result<UserId> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        let r = (|| {
            let name = crate::ids::Username::parse(username)?;
            let row = self.user_by_name(&name)?.ok_or(Error::NotFound("user"))?;
            if Role::parse(&row.role)? != Role::Contractor {
                return Err(Error::invalid("the user is not a contractor"));
            }
            row.id.parse::<UserId>()
        })();
        let id = match r {
            Ok(id) => id,
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "contractor.revoke",
                    vec![],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        self.write_audited(
            s,
            store::CF_CONTRACTORS,
            id.as_bytes(),
            None,
            ("contractor.revoke", vec![id.to_string()], None),
        )?;
        Ok(id)
    }

    /// Checks that the session's user holds at least one of `perms`;
    /// a refusal is audited (`access.denied`). Front ends call it before
    /// reading a large request body; the operation itself checks again.
    pub fn authorize_any(&self, s: &Session, perms: &[Permission]) -> Result<()> {
        let row = self.authorize(s, None)?;
        let role = Role::parse(&row.role)?;
        if perms.iter().any(|p| role.permits(*p)) {
            return Ok(());
        }
        let e = Error::PermissionDenied(perms[0].verb());
        self.audit(
            Some(s.user),
            &s.ctx,
            "access.denied",
            vec![format!("permission:{:?}", perms[0])],
            Err(&e),
            None,
        )?;
        Err(e)
    }
}

/// What a cluster's byte scan left unread, for a certificate: the
/// directories of other databases and the relation files `what` names,
/// which the needles cannot reach (`pivault_verify.scan_vault`; none on a
/// cluster set up before it, whose scan reads every file).
fn skipped_files(skipped: u64, what: &str) -> String {
    if skipped == 0 {
        return String::new();
    }
    format!(" but the {skipped} file(s) and directories of other databases and {what}, unread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::ByteScan;

    fn copy(member: &str, path: &str) -> FoundCopy {
        FoundCopy {
            member: Some(member.into()),
            path: path.into(),
        }
    }

    /// A scan that did not read everywhere (a member unreached) cannot
    /// clear a copy it did not read: it adds what it read; only a scan
    /// that read every place it answers replaces the kept copies.
    #[test]
    fn a_scan_that_missed_a_place_keeps_the_copies_and_a_whole_one_replaces_them() {
        let mut kept = vec![copy("m2", "base/1/2")];
        let unreached = ByteScan {
            hits: vec!["m2: unreachable, its files were not scanned".into()],
            scanned: 5,
            ..ByteScan::default()
        };
        assert!(!keep_copies(&mut kept, &unreached, true));
        assert_eq!(kept, vec![copy("m2", "base/1/2")]);
        let another = ByteScan {
            hits: vec![
                "m1: x".into(),
                "m2: unreachable, its files were not scanned".into(),
            ],
            copies: vec![copy("m1", "x")],
            scanned: 5,
            ..ByteScan::default()
        };
        assert!(keep_copies(&mut kept, &another, true));
        assert_eq!(kept, vec![copy("m1", "x"), copy("m2", "base/1/2")]);
        let clean = ByteScan {
            scanned: 9,
            ..ByteScan::default()
        };
        // Needles not those the copies were found with: nothing cleared.
        assert!(!keep_copies(&mut kept, &clean, false));
        assert_eq!(kept.len(), 2);
        assert!(keep_copies(&mut kept, &clean, true));
        assert!(kept.is_empty());
    }
}
