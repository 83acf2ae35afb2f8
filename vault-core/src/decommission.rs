//! Deleting a whole vault (`pivault vault delete`, issue 16): a business
//! leaves its service provider, or closes. The vault's keystore on the
//! cluster (the header's root-key slots, the sealed signing keys, every
//! bucket, data and backup key) is dropped in one transaction and purged
//! from every member as a disposal batch's keys are; every member's files
//! are then searched for the wrapped bytes the vault held; the records go
//! the same way on a records cluster, or with the vault directory. The
//! certificate is signed by the vault's certificate key in memory, as its
//! last act, and handed to the caller to keep outside the vault it
//! destroys, with the whole audit trail up to a checkpoint covering the
//! deletion (the trail holds no personal information).
//!
//! Three people: the custodian opens the vault (the passphrase), an officer
//! deletes (`Dispose`: an admin may not) and a second user validates
//! (`ValidateCertificate`), signed in at the same time. A legal hold
//! anywhere in the vault refuses the deletion, as it refuses a disposal.
//! Nothing is destroyed until every check passed: the keystore cluster's
//! members all reachable and streaming, and the drop takes its locks
//! within 5 s or is rolled back whole.

use super::*;
use crate::certificate::{self, Certificate};
use crate::clock::format_ms;
use crate::keystore::{ByteScan, KeyCounts, PurgeEvidence};
use crate::siem::ExportBundle;
use serde_json::json;

#[path = "decommission/journal.rs"]
mod journal;
pub use journal::{Resumed, resume_deletion};

/// Bucket keys and data keys (each drawn at random) whose wrapped bytes
/// are searched for after a whole vault's deletion, beside every root-key
/// slot, sealed signing key and backup key: the scan's cost is its needles
/// times the bytes it reads (benches/README.md, "Deleting a whole vault").
pub const KEY_SAMPLE: usize = 256;

/// Record ciphertexts searched for on a records cluster after the drop.
const CIPHERTEXT_SAMPLE: usize = 64;

/// Who the certificate of a whole vault's deletion names.
#[derive(Clone, Debug, Default)]
pub struct DeletionParties {
    /// The business whose vault it is.
    pub data_owner: String,
    pub data_owner_address: Option<String>,
    /// Why the vault is deleted (free text, no personal information).
    pub reason: Option<String>,
}

/// What a deletion would destroy, and what stops it (`--dry-run`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionPlan {
    pub vault_id: String,
    /// Live records, and the distinct subjects among them.
    pub records: u64,
    pub subjects: u64,
    /// Records already disposed of (tombstones).
    pub disposed: u64,
    pub collections: Vec<String>,
    /// Legal holds (any refuses the deletion).
    pub holds: u64,
    /// Backups of the vault made by pivault: crypto-erased with it.
    pub backups: u64,
    pub keystore_engine: &'static str,
    pub records_engine: &'static str,
    /// Why it cannot run now (empty: it can).
    pub problems: Vec<String>,
}

/// A deleted vault: what the caller keeps, outside the vault directory.
pub struct VaultDeleted {
    /// Signed; status "validated" (the validator signed in with it).
    pub certificate: Certificate,
    /// The whole audit trail, from seq 1 to the checkpoint the certificate
    /// names, as JSON lines (`pivault audit verify --file` with
    /// [`Self::audit_key`]).
    pub audit_trail: String,
    /// The last event's seq in [`Self::audit_trail`].
    pub audit_to_seq: u64,
    pub audit_key: ed25519_dalek::VerifyingKey,
    pub certificate_key: ed25519_dalek::VerifyingKey,
    /// The vault directory, now closed: removed by
    /// [`VaultDeleted::remove_directory`] once the certificate is kept.
    pub dir: PathBuf,
    /// The `DELETED` marker, locked: while this is held no resume can
    /// sign a second certificate for the deletion. Dropped without the
    /// directory removed (the certificate could not be kept), it lets a
    /// resume issue the certificate again, with the same ID.
    _journal: std::fs::File,
}

impl VaultDeleted {
    /// Removes the vault directory, once the certificate is kept (the
    /// journal's lock held until it is gone).
    pub fn remove_directory(&self) -> Result<()> {
        remove_directory(&self.dir)
    }
}

impl std::fmt::Debug for VaultDeleted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultDeleted")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What the gathering pass found in the records.
struct Scope {
    ids: Vec<[u8; 16]>,
    subjects: Vec<[u8; 16]>,
    disposed: u64,
    collections: std::collections::BTreeSet<String>,
    ciphertexts: Vec<Vec<u8>>,
}

impl Vault {
    /// What deleting this vault would destroy, and what stops it now
    /// (an officer; nothing is changed, the look is audited).
    pub fn plan_deletion(&self, s: &Session) -> Result<DeletionPlan> {
        self.authorize(s, Some(Permission::Dispose))?;
        let r = self.plan_inner().map(|(plan, _)| plan);
        self.audit(
            Some(s.user),
            &s.ctx,
            "vault.delete.plan",
            vec![self.info.vault_id.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// Where the root-key slots and sealed signing keys of this vault are.
    fn key_files_place<'a>(&'a self, l: &Layout) -> header::Place<'a> {
        header::Place::of(&l.header, &l.signing, &self.info, &self.keystore)
    }

    fn plan_inner(&self) -> Result<(DeletionPlan, Scope)> {
        let scope = self.deletion_scope()?;
        let holds = self.store.scan_prefix(store::CF_HOLDS, &[])?.len() as u64;
        let backups = self.store.scan_prefix(store::CF_BACKUPS, &[])?.len() as u64;
        let mut problems = Vec::new();
        if holds > 0 {
            problems.push(format!(
                "{holds} legal hold(s) in the vault: lift them (pivault hold remove) before deleting it"
            ));
        }
        match self.keystore.destroy_precheck() {
            Ok(p) => problems.extend(p.into_iter().map(|m| format!("keystore cluster: {m}"))),
            Err(e) => problems.push(e.to_string()),
        }
        problems.extend(
            self.store
                .destroy_precheck()?
                .into_iter()
                .map(|m| format!("records cluster: {m}")),
        );
        Ok((
            DeletionPlan {
                vault_id: self.info.vault_id.to_string(),
                records: scope.ids.len() as u64,
                subjects: scope.subjects.len() as u64,
                disposed: scope.disposed,
                collections: scope.collections.iter().cloned().collect(),
                holds,
                backups,
                keystore_engine: self.keystore.engine_kind(),
                records_engine: self.store.engine_kind(),
                problems,
            },
            scope,
        ))
    }

    /// Every live record's ID and subject, the collections, and a sample
    /// of ciphertexts for the records cluster's scan.
    fn deletion_scope(&self) -> Result<Scope> {
        let mut scope = Scope {
            ids: Vec::new(),
            subjects: Vec::new(),
            disposed: 0,
            collections: std::collections::BTreeSet::new(),
            ciphertexts: Vec::new(),
        };
        let mut subjects = std::collections::BTreeSet::new();
        self.store.for_each(store::CF_RECORDS, |k, v| {
            let row = store::RecordRow::decode(v)?;
            if row.state != store::RecordState::Live {
                scope.disposed += 1;
                return Ok(());
            }
            let id: [u8; 16] = k.try_into().map_err(|_| Error::Integrity("record key"))?;
            scope.ids.push(id);
            subjects.insert(*row.subject.as_bytes());
            scope.collections.insert(row.collection.as_str().to_owned());
            if scope.ciphertexts.len() < CIPHERTEXT_SAMPLE && row.envelope.len() >= 32 {
                scope.ciphertexts.push(row.envelope.clone());
            }
            Ok(())
        })?;
        for (k, _) in self.store.scan_prefix(store::CF_COLLECTIONS, &[])? {
            scope
                .collections
                .insert(String::from_utf8_lossy(&k).into_owned());
        }
        scope.subjects = subjects.into_iter().collect();
        Ok(scope)
    }

    /// Deletes the whole vault: `s` an officer who carries it out,
    /// `validator` a different user who may validate certificates, both
    /// signed in now; `confirm` the vault's ID, typed by the operator.
    /// Refused, with nothing destroyed, under a legal hold or while a
    /// cluster member is down or lagging. Once the keystore's drop has
    /// committed there is no way back: a failed verification after it is
    /// an error naming what was found, and no certificate is issued.
    pub fn delete_vault(
        self,
        s: &Session,
        validator: &Session,
        confirm: VaultId,
        parties: &DeletionParties,
    ) -> Result<VaultDeleted> {
        let me = self.authorize(s, Some(Permission::Dispose))?;
        let val = self.authorize(validator, Some(Permission::ValidateCertificate))?;
        let vault_id = self.info.vault_id.to_string();
        let fail = |v: &Vault, e: Error| -> Error {
            // The failure is in the trail when the trail can take it.
            let _ = v.audit(
                Some(s.user),
                &s.ctx,
                "vault.delete",
                vec![vault_id.clone()],
                Err(&e),
                None,
            );
            e
        };
        if validator.user == s.user {
            return Err(fail(
                &self,
                Error::invalid(
                    "the validator must be a different user from the officer deleting the vault (NIST SP 800-88 App. G)",
                ),
            ));
        }
        if confirm != self.info.vault_id {
            return Err(fail(
                &self,
                Error::invalid("the confirmation names another vault: give this vault's ID"),
            ));
        }
        for t in [
            Some(&parties.data_owner),
            parties.data_owner_address.as_ref(),
            parties.reason.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            audit::check_text("party", t, 200).map_err(|e| fail(&self, e))?;
        }
        // No disposal batch, restore, backup or maintenance meanwhile.
        let guard = self.disposal_lock.lock().expect("disposal lock");
        let (plan, scope) = self.plan_inner().map_err(|e| fail(&self, e))?;
        if plan.holds > 0 {
            return Err(fail(&self, Error::LegalHold));
        }
        if !plan.problems.is_empty() {
            return Err(fail(
                &self,
                Error::DisposalFailed(format!("nothing was deleted: {}", plan.problems.join("; "))),
            ));
        }
        let (needles, counts) = self
            .keystore
            .destruction_needles(KEY_SAMPLE)
            .map_err(|e| fail(&self, e))?;
        let embedded = self.keystore.engine_kind() == "rocksdb";
        let layout = Layout::of(&self.dir);
        let mut needles = needles;
        let mut counts = counts;
        if embedded {
            // The root-key slots and the sealed signing keys are files
            // beside the keystore, not rows of it.
            let place = self.key_files_place(&layout);
            let mut top = header::file_slots(&place).map_err(|e| fail(&self, e))?;
            for pending in [false, true] {
                top.extend(header::read_signing(&place, pending).map_err(|e| fail(&self, e))?);
            }
            counts.header_rows += top.len() as u64;
            needles.extend(top);
        }
        // Searched for by their first bytes: the journal keeps no more of a
        // wrapped key than a scan needs.
        let needles = journal::prefixes(&needles);
        let targets = self.keystore.drop_targets().map_err(|e| fail(&self, e))?;
        let started = self.now();
        self.audit(
            Some(s.user),
            &s.ctx,
            "vault.delete",
            vec![
                vault_id.clone(),
                format!("count:{}", plan.records),
                format!("validator:{}", validator.user),
            ],
            Ok(()),
            parties.reason.as_deref(),
        )?;
        self.checkpoint_now()?;
        let (first_seq, first_head) = {
            let log = self.audit.lock().expect("audit lock");
            (log.head_seq(), log.head_hash())
        };
        // The body is made first: it reads the schemas and the exports
        // ledger, which go with the records.
        let (body, searched) =
            self.deletion_body(&plan, &scope, &counts, &me, &val, parties, started)?;

        // From here the directory opens nothing (an opener waiting for the
        // lock included), and the journal in the marker lets another
        // process finish what a killed one began (`resume_deletion`); the
        // marker goes again if the drop fails.
        let journal = journal::Journal {
            vault_id: vault_id.clone(),
            body: body.clone(),
            searched: searched.clone(),
            certificate_key: hex::encode(
                zeroize::Zeroizing::new(self.signing.certificate.to_bytes()).as_slice(),
            ),
            audit_key: hex::encode(self.signing.audit.verifying_key().as_bytes()),
            trail_to_seq: first_seq,
            checkpoint: (first_seq, hex::encode(first_head)),
            needles: needles.iter().map(hex::encode).collect(),
            ciphertexts: journal::prefixes(&scope.ciphertexts)
                .iter()
                .map(hex::encode)
                .collect(),
            keystore: targets.clone(),
            engine: self.keystore.engine_kind().to_owned(),
        };
        let marker = self.dir.join(DELETED_MARKER);
        let marker_file = {
            let key = journal::key(
                &self.unlock.read().expect("unlock lock"),
                self.info.vault_id,
            );
            journal::write(&marker, &journal, &key).map_err(|e| fail(&self, e))?
        };
        drop(journal);
        // From here the vault is being deleted: dropped on any path, it
        // signs nothing more (a resumed deletion reads the trail as the
        // journal left it).
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        self.at_step("deletion_journaled");
        // The point of no return: one transaction drops every key (on a
        // cluster); the root-key slots overwritten, then every key row
        // (embedded).
        let destroyed = if embedded {
            destroy_key_files(&self.key_files_place(&layout))
                .and_then(|()| self.keystore.destroy(&targets))
                .map_err(|e| match e {
                    Error::DisposalFailed(m) => Error::DisposalFailed(m),
                    e => Error::DisposalFailed(format!(
                        "the vault's keys were being destroyed when this failed ({e}): finish it with pivault vault delete --resume"
                    )),
                })
        } else {
            self.keystore.destroy(&targets)
        };
        let purge = match destroyed {
            Ok(p) => p,
            Err(e) => {
                if !matches!(e, Error::DisposalFailed(_)) {
                    // The drop was rolled back whole: the vault is as it was.
                    let _ = std::fs::remove_file(&marker);
                }
                return Err(fail(&self, e));
            }
        };
        self.at_step("keystore_dropped");
        let scan = if embedded {
            crate::keystore::scan_dir_counted(&self.dir, &needles)
        } else {
            self.keystore
                .scan_everything(&needles, purge.wal_floor.as_deref())
        };
        let problems = keystore_problems(&purge, scan.as_ref());
        if !problems.is_empty() {
            return Err(fail(
                &self,
                Error::DisposalFailed(format!(
                    "the vault's keys were dropped but their removal is not verified, so no certificate was issued: {}; once what is named here is fixed (a cluster member back), finish it with pivault vault delete --resume",
                    problems.join("; ")
                )),
            ));
        }
        let scan = scan.unwrap_or_default();
        self.audit(
            Some(s.user),
            &s.ctx,
            "vault.delete.verified",
            vec![vault_id.clone(), format!("files:{}", scan.scanned)],
            Ok(()),
            None,
        )?;
        let (cp_seq, head) = {
            let mut log = self.audit.lock().expect("audit lock");
            log.checkpoint(self.now())?;
            self.sync_anchor(&log);
            (log.head_seq(), log.head_hash())
        };
        let audit_trail = self.audit_backlog(0, cp_seq)?;

        // The records: ciphertexts under keys that no longer exist. On a
        // cluster their tables go the same way, and the members are
        // searched for a sample; embedded, with the directory.
        let ciphertexts = journal::prefixes(&scope.ciphertexts);
        let records_purge = self.store.destroy();
        let records_scan = match &records_purge {
            Ok(Some(p)) => self
                .store
                .scan_everything(&ciphertexts, p.wal_floor.as_deref()),
            _ => Ok(None),
        };
        let records = records_json(&records_purge, &records_scan, ciphertexts.len());
        let mut body = finish_body(
            body,
            self.now(),
            embedded,
            &searched,
            &purge,
            &scan,
            records,
            (cp_seq, &head),
            "the whole trail, from seq 1 to this checkpoint, is handed over with this certificate (pivault audit verify --file)",
        );
        // The validator, signed in throughout, validates the result.
        body["validator"]["time"] = body["issued_at"].clone();
        let certificate = Certificate::sign(body, &self.signing.certificate)?;
        let out = VaultDeleted {
            certificate,
            audit_trail: render_trail(&audit_trail),
            audit_to_seq: audit_trail.to_seq(),
            audit_key: self.signing.audit.verifying_key(),
            certificate_key: self.signing.certificate.verifying_key(),
            dir: self.dir.clone(),
            _journal: marker_file,
        };
        drop(guard);
        drop(self);
        Ok(out)
    }

    /// The certificate's body, but for what the drop's evidence fills in
    /// ([`finish_body`]), and the byte scan's opening words.
    #[allow(clippy::too_many_arguments)]
    fn deletion_body(
        &self,
        plan: &DeletionPlan,
        scope: &Scope,
        counts: &KeyCounts,
        me: &UserRow,
        val: &UserRow,
        parties: &DeletionParties,
        started: i64,
    ) -> Result<(Value, String)> {
        let mut elements = std::collections::BTreeSet::new();
        let mut any_pi = false;
        for c in &scope.collections {
            if let Ok(schema) = self.schema(&CollectionName::parse(c)?) {
                for f in schema.fields.iter().filter(|f| f.ty.is_sensitive()) {
                    elements.insert(f.ty.as_str());
                    any_pi = true;
                }
            }
        }
        let ids: Vec<RecordId> = scope.ids.iter().map(|b| RecordId::from_bytes(*b)).collect();
        let copies = self.exports_holding(&ids)?;
        let embedded = self.keystore.engine_kind() == "rocksdb";
        let mut not_covered = if embedded {
            vec![
                "storage media that retain overwritten or freed blocks (SSDs, copy-on-write file systems, journaling file systems) on the machine holding the vault directory: the key files were overwritten and removed through the file system, which may keep older copies of their blocks".to_owned(),
                "copies of the vault directory made outside pivault (file copies, file-system backups, disk or volume snapshots): they hold the vault's keys, wrapped under its passphrase, and are not destroyed by this deletion".to_owned(),
                "the memory of the machine (the operating system's page cache, swap)".to_owned(),
                "exports and import source files handed out or kept outside the vault".to_owned(),
            ]
        } else {
            vec![
                "storage media that retain overwritten or freed blocks (SSDs, copy-on-write file systems), on the machine holding the vault directory and on every cluster member".to_owned(),
                "copies of the keystore or records clusters made outside pivault: base backups (pg_basebackup), disk or volume snapshots, WAL archives".to_owned(),
                "the memory of each cluster member (shared buffers, the operating system's page cache, swap)".to_owned(),
                "exports and import source files handed out or kept outside the vault".to_owned(),
                "copies of the vault directory made outside pivault: they hold no key that decrypts a record (the header's key slots were on the keystore cluster); one made while the deletion ran holds its journal, with the certificate signing key sealed under the vault's passphrase".to_owned(),
            ]
        };
        if !copies.is_empty() {
            not_covered.push(format!(
                "{} export(s) made before this deletion hold copies of records outside the vault (target.copies_outside_vault)",
                copies.len()
            ));
        }
        let now = format_ms(self.now());
        let epoch = self.epoch.read().expect("epoch lock").number;
        let certificate_id = crate::ids::CertificateId::new().to_string();
        let searched = format!(
            "{} wrapped key(s) searched, by their first {} bytes ({} of {} bucket keys, {} of {} data keys)",
            needles_count(counts),
            journal::NEEDLE_PREFIX,
            counts.bucket_rows_searched,
            counts.bucket_rows,
            counts.data_keys_searched,
            counts.data_keys
        );
        let body = json!({
            "certificate_id": certificate_id,
            "schema_version": certificate::SCHEMA_VERSION,
            "issued_at": now,
            "status": "validated",
            "vault": {
                "id": plan.vault_id,
                "key_fingerprint": crate::crypto::fingerprint(self.signing.certificate.verifying_key().as_bytes()),
                "deleted": true,
            },
            "tool": { "name": "pivault", "version": env!("CARGO_PKG_VERSION") },
            "parties": {
                "data_owner": { "name": if parties.data_owner.is_empty() { "(not stated)" } else { &parties.data_owner }, "address": parties.data_owner_address },
                "contractor": Value::Null,
            },
            "operator": {
                "name": me.display_name(), "title": me.role, "user_id": me.id.to_string(),
                "time": format_ms(started), "attestation": certificate::ATTESTATION,
            },
            "validator": {
                "name": val.display_name(), "title": val.role, "user_id": val.id.to_string(),
                "time": now, "attestation": certificate::ATTESTATION,
            },
            "target": {
                "description": "the whole vault: every record, the key hierarchy (root-key slots, bucket, data and backup keys), the signing keys, users, configuration and the search index",
                "scope": "vault",
                "reason": parties.reason,
                "collections": scope.collections.iter().collect::<Vec<_>>(),
                "record_count": plan.records,
                "subject_count": plan.subjects,
                "disposed_before": plan.disposed,
                "commitment": {
                    "algorithm": certificate::MERKLE_ALGORITHM,
                    "record_root": hex::encode(certificate::merkle_root(&scope.ids)),
                    "subject_root": hex::encode(certificate::merkle_root(&scope.subjects)),
                },
                "classification": {
                    "before": if any_pi { "MA personal information (M.G.L. c. 93H §1)" } else { "confidential" },
                    "elements": elements.iter().collect::<Vec<_>>(),
                    "after": "no personal information recoverable",
                },
                "backups": {
                    "exist": counts.backup_keys > 0,
                    "copies": [],
                    "crypto_erased": counts.backup_keys,
                    "note": "every backup pivault made of this vault is sealed under a backup key held only in the vault's keystore: each of those keys was destroyed with it, so no backup can be restored or read",
                },
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
                    "keys_destroyed": [
                        { "key": "root-key header slots and sealed signing keys", "count": counts.header_rows },
                        { "key": "bucket keys and the search secret", "count": counts.bucket_rows },
                        { "key": "record data keys", "count": counts.data_keys },
                        { "key": "backup keys", "count": counts.backup_keys },
                    ],
                    "epoch_before": epoch,
                    "epoch_after": epoch + 1,
                    "epoch_note": if embedded { "no epoch follows: the root key's every slot was overwritten" } else { "no epoch follows: the root key's every slot was dropped with the keystore" },
                    "keystore_purge": Value::Null,
                    "records": Value::Null,
                },
                "verification": {
                    "method": if embedded { "every file of the vault directory (the records and keystore databases, their logs, the audit trail, the header) searched for the wrapped bytes the vault held before its deletion (every root-key slot, sealed signing key and backup key, and random samples of its bucket and data keys); the keystore database checked for no row, snapshot, older version or obsolete file left" } else { "every member of the keystore cluster: every file of its data directory that can hold a byte of the vault (all but other databases' and other vaults' relation files, and the WAL, whose segments at or before the drop are checked gone by name) searched for the wrapped bytes the vault held before its deletion (every root-key slot, sealed signing key and backup key, and random samples of its bucket and data keys); every dropped relation's file checked gone on every member" },
                    "byte_scan": Value::Null,
                    "result": "PASS",
                },
                "standards": {
                    "method": certificate::METHOD_STANDARD,
                    "technique_vocabulary": certificate::TECHNIQUE_VOCABULARY,
                    "record": certificate::RECORD_STANDARD,
                    "scope_statement": certificate::SCOPE_STATEMENT,
                },
                "key_zeroization": if embedded { "the header file's root-key slots overwritten (so no key below them can be unwrapped with the passphrase), the sealed signing keys overwritten and removed, every keystore row deleted and compacted away; the unwrapped keys held by this process zeroized when it let the vault go" } else { "the vault's keystore schema dropped on the keystore cluster (every root-key slot, so no key below it can be unwrapped with the passphrase), its WAL from before the drop removed on every member; the unwrapped keys held by this process zeroized when it let the vault go" },
                "record": {
                    "media_type": if embedded { "a whole vault: logical records (AES-256-GCM ciphertexts) and their key hierarchy in embedded databases in the vault directory" } else { "a whole vault: logical records (AES-256-GCM ciphertexts) and their key hierarchy on a PostgreSQL keystore cluster" },
                    "media_source": format!("pivault vault {}", plan.vault_id),
                    "manufacturer_model_serial": "not applicable: logical sanitization, no device sanitized",
                    "pre_sanitization_categorization": if any_pi { "MA personal information (M.G.L. c. 93H §1)" } else { "confidential" },
                    "method": "Purge",
                    "technique": "Cryptographic Erase",
                    "tool": format!("pivault {}", env!("CARGO_PKG_VERSION")),
                    "verification": "full verification of the key hierarchy's top (see verification)",
                    "post_sanitization_categorization": "no personal information recoverable",
                    "post_sanitization_destination": if embedded { "the vault no longer exists: its directory removed" } else { "the vault no longer exists: its directory removed, its database role dropped by the provider" },
                    "performed_by": "see operator",
                    "validated_by": "see validator (a different person)",
                },
                "not_covered": not_covered,
                "exclusions": [],
            },
            "outcome_statement": certificate::OUTCOME_STATEMENT,
            "outcome": { "state": "complete", "residual_copies": [] },
            "audit": {
                "public_key": hex::encode(self.signing.audit.verifying_key().as_bytes()),
            },
        });
        Ok((body, searched))
    }
}

/// The deletion's certificate body made whole with the drop's evidence:
/// the same for the process that dropped and for one that finished a
/// killed one's deletion ([`resume_deletion`]).
#[allow(clippy::too_many_arguments)]
fn finish_body(
    mut body: Value,
    now: i64,
    embedded: bool,
    searched: &str,
    purge: &PurgeEvidence,
    scan: &ByteScan,
    records: Value,
    (cp_seq, head): (u64, &[u8; 32]),
    trail: &str,
) -> Value {
    let now = format_ms(now);
    body["issued_at"] = json!(now);
    let members: Vec<Value> = purge
        .members
        .iter()
        .map(|m| json!({ "member": m.name, "role": m.role, "verified": m.verified, "detail": m.detail }))
        .collect();
    let details = &mut body["sanitization"]["details"];
    details["keystore_purge"] = json!({
        "engine": purge.engine,
        "steps": if embedded {
            "the header file's root-key slots overwritten in place with zeros and synced; the sealed signing keys' file overwritten with random bytes, synced and removed; every row of the keystore database deleted in one synced batch, every column family flushed and compacted whole to its last level, and no snapshot, older version or obsolete file left"
        } else {
            "every member reachable and every standby streaming, checked first; the vault's keystore schema dropped in one transaction; pg_switch_wal + CHECKPOINT on the primary and CHECKPOINT on each standby after replay, until no WAL segment from before the drop remains on any member; each dropped relation's file checked gone on every member"
        },
        "snapshots": purge.snapshots,
        "residue_files": purge.residue_files,
        "members": members,
        "duration_ms": purge.duration_ms,
    });
    details["records"] = records;
    body["sanitization"]["verification"]["byte_scan"] = json!(format!(
        "{searched} in {} file(s) of {} ({} skipped): {} file(s) hold them",
        if embedded {
            "the vault directory"
        } else {
            "the members"
        },
        scan.scanned,
        scan.skipped,
        scan.hits.len()
    ));
    body["audit"]["checkpoint_seq"] = json!(cp_seq);
    body["audit"]["head_hash"] = json!(hex::encode(head));
    body["audit"]["trail"] = json!(trail);
    body
}

/// What keeps a keystore drop from being certified: residue, a member
/// not verified, a scan that failed or found a key.
fn keystore_problems(
    purge: &PurgeEvidence,
    scan: std::result::Result<&ByteScan, &Error>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !purge.clean() {
        let shown: Vec<&String> = purge.residue_files.iter().take(10).collect();
        problems.push(format!(
            "keystore purge incomplete: {} residue(s), the first {shown:?}; members not verified={:?}",
            purge.residue_files.len(),
            purge
                .members
                .iter()
                .filter(|m| !m.verified)
                .map(|m| &m.name)
                .collect::<Vec<_>>()
        ));
    }
    match scan {
        Err(e) => problems.push(format!("the byte scan of the keystore cluster failed: {e}")),
        Ok(s) if !s.hits.is_empty() => problems.push(format!(
            "the vault's wrapped key bytes found after its deletion in {:?}",
            s.hits
        )),
        Ok(_) => {}
    }
    problems
}

/// An embedded keystore's top: the header file's root-key slots
/// overwritten (after which the passphrase unwraps nothing: the point of no
/// return), then the sealed signing keys' file.
fn destroy_key_files(place: &header::Place<'_>) -> Result<()> {
    header::erase_all_slots(place)?;
    header::wipe_signing(place)
}

/// A trail as the JSON lines `pivault audit verify --file` reads.
fn render_trail(trail: &ExportBundle) -> String {
    trail.render(crate::siem::Format::Jsonl, &crate::siem::default_hostname())
}

fn needles_count(c: &KeyCounts) -> u64 {
    c.header_rows + c.bucket_rows_searched + c.backup_keys + c.data_keys_searched
}

/// The records part of the certificate: a cluster's drop and scan, or the
/// directory's removal.
fn records_json(
    purge: &Result<Option<PurgeEvidence>>,
    scan: &Result<Option<ByteScan>>,
    sampled: usize,
) -> Value {
    match (purge, scan) {
        (Ok(None), _) => json!({
            "engine": "rocksdb",
            "removal": "the vault directory (its records database and audit files) removed once this certificate was kept; its ciphertexts' keys were destroyed first",
        }),
        (Ok(Some(p)), scan) => json!({
            "engine": "postgresql",
            "removal": "the vault's records schema (records, search index, configuration) dropped in one transaction, its WAL rounds run on every member; its audit trail stays on the cluster, where no vault role may change it",
            "clean": p.clean(),
            "residue_files": p.residue_files,
            "members": p.members.iter().map(|m| json!({ "member": m.name, "role": m.role, "verified": m.verified })).collect::<Vec<_>>(),
            "ciphertexts_searched": sampled,
            "files_holding_them": match scan {
                Ok(Some(s)) => json!(s.hits.len()),
                Ok(None) => Value::Null,
                Err(e) => json!(format!("scan failed: {e}")),
            },
        }),
        (Err(e), _) => json!({
            "engine": "postgresql",
            "removal": format!("the records schema's drop failed ({e}): its ciphertexts stay on the records cluster, unreadable without the destroyed keys; drop it with the vault's role"),
            "clean": false,
        }),
    }
}

/// Written into the vault directory (synced) before the keystore is
/// dropped: from then on the directory opens nothing, and no opener that
/// was waiting for the vault's lock makes its schemas again. Removed if
/// the drop fails (nothing was destroyed).
pub(crate) const DELETED_MARKER: &str = "DELETED";

/// Refuses a vault directory whose vault was deleted (or is being
/// deleted): its marker is there, or its header file is gone (the
/// directory removed, or being removed, under an opener that read it
/// before).
pub(crate) fn refuse_if_deleted(dir: &Path) -> Result<()> {
    if dir.join(DELETED_MARKER).exists() {
        return Err(Error::NotAVault(format!(
            "{}: the vault was deleted (pivault vault delete); its certificate is where the deletion wrote it",
            dir.display()
        )));
    }
    if !Layout::of(dir).header.exists() {
        return Err(Error::NotAVault(format!(
            "{}: no vault header (not a vault directory, or a deleted vault's)",
            dir.display()
        )));
    }
    Ok(())
}

/// Removes a deleted vault's directory (after its certificate is kept).
fn remove_directory(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
