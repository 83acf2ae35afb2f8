//! Record operations: create, read, update, list and import.
//!
//! Each one holds its subject's bucket lock shared (see `isolation.rs`), so
//! it is isolated from a disposal batch's rotation of that bucket, and each
//! write is journaled: the row and a journal entry go in one atomic batch,
//! the audit event follows, and the entry is removed. A crash between the
//! row and its event leaves the entry, which the next open reconciles with
//! the audit trail (`maintenance.rs`): the change stays if its event is in
//! the trail, and is rolled back if not, unless it is an update whose old
//! key is gone (destroyed only once its event was appended: the event was
//! acknowledged, then lost with a lazy commit): that one stays and its
//! event is written again. No record stands without its event.
//!
//! This is a child module of `vault`.

use std::io::BufRead;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{
    ImportFormat, ImportRejection, ImportReport, RecordFilter, RecordMeta, RecordView, Session,
    Vault, record_aad,
};
use crate::access::{Permission, Role};
use crate::audit;
use crate::crypto;
use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId, SubjectId};
use crate::secret::SecretKey;
use crate::store::{self, RecordRow, RecordState};

/// Journal entry kinds.
const JOURNAL_CREATE: u8 = 1;
const JOURNAL_UPDATE: u8 = 2;

/// A row written whose audit event is not yet known to be in the trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JournalEntry {
    /// [`JOURNAL_CREATE`] or [`JOURNAL_UPDATE`].
    pub kind: u8,
    /// When the row was written (the event is at or after it).
    pub time_ms: i64,
    /// The version written.
    pub version: u32,
    /// The row before an update (ciphertext and metadata, as stored), to put back.
    pub old_row: Vec<u8>,
}

impl JournalEntry {
    /// `kind | time_ms | version | old row`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(13 + self.old_row.len());
        b.push(self.kind);
        b.extend_from_slice(&self.time_ms.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.old_row);
        b
    }

    pub fn decode(b: &[u8]) -> Result<JournalEntry> {
        let bad = || Error::Integrity("write journal");
        if b.len() < 13 || !(b[0] == JOURNAL_CREATE || b[0] == JOURNAL_UPDATE) {
            return Err(bad());
        }
        Ok(JournalEntry {
            kind: b[0],
            time_ms: i64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?),
            version: u32::from_be_bytes(b[9..13].try_into().map_err(|_| bad())?),
            old_row: b[13..].to_vec(),
        })
    }

    pub fn is_update(&self) -> bool {
        self.kind == JOURNAL_UPDATE
    }
}

/// Counts bytes read, for progress bars on streaming imports.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: BufRead> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.count += amt as u64;
        self.inner.consume(amt);
    }
}

impl Vault {
    /// Stores one validated body as a new record, with its journal entry;
    /// no authorisation or audit here. The caller holds the subject's
    /// bucket lock shared.
    fn store_new_record(
        &self,
        s: &Session,
        collection: &CollectionName,
        subject: SubjectId,
        body: &Map<String, Value>,
    ) -> Result<RecordId> {
        self.isolation.check_fence()?;
        // Key and nonces from one draw of the OS CSPRNG.
        let rnd = crypto::RecordRandomness::draw();
        let id = RecordId::new();
        let plain = Zeroizing::new(serde_json::to_vec(body).expect("serialisable"));
        let epoch = self.epoch.read().expect("epoch lock");
        let dek = rnd.dek;
        let now = self.now();
        let mut row = RecordRow {
            format: store::ROW_V2,
            collection: collection.clone(),
            subject,
            version: 1,
            created_ms: now,
            updated_ms: now,
            created_by: s.user,
            state: RecordState::Live,
            envelope: Vec::new(),
        };
        row.envelope = crypto::seal_with_nonce(
            &dek,
            &record_aad(self.info.vault_id, id, &row),
            &plain,
            rnd.body_nonce,
        );
        let journal = JournalEntry {
            kind: JOURNAL_CREATE,
            time_ms: now,
            version: 1,
            old_row: Vec::new(),
        };
        // Beacons of the searchable fields in the same batch as the row: a
        // record is never stored without them, nor they without it.
        let schema = self.schema(collection)?;
        let mut extra = vec![(
            store::CF_JOURNAL,
            id.as_bytes().to_vec(),
            Some(journal.encode()),
        )];
        extra.extend(self.index_new(id, collection, &schema, body)?.ops);
        let store_key = || {
            self.keystore.store_dek(
                &epoch.root,
                epoch.number,
                subject,
                id,
                1,
                &dek,
                rnd.wrap_nonce,
            )
        };
        if !self.store.on_a_cluster() {
            // The DEK is written before the record, so a record never
            // exists without its key (a DEK without a row is an orphan,
            // destroyed by the next maintenance ratchet).
            store_key()?;
            if let Err(e) = self.store.put_record_with(id, &row, true, &extra) {
                let _ = self.keystore.delete_dek(subject, id, 1, false);
                return Err(e);
            }
            return Ok(id);
        }
        // Records on a cluster: the key and the row are written at once,
        // each a synchronous commit on its own cluster, so a put waits for
        // one commit's round trip instead of two. Until both are in, the
        // record is "being created": no reader finds it (`live_row`), so
        // none meets a row whose key is not there yet; a crash in between
        // leaves a row whose unaudited journal entry removes it on open.
        let creating = self.isolation.creating(id);
        let (key, stored) = std::thread::scope(|sc| {
            let key = sc.spawn(store_key);
            let stored = self.store.put_record_with(id, &row, true, &extra);
            (key.join().expect("record key writer"), stored)
        });
        let remove_row = || {
            self.index_change(id, collection, None, None)
                .and_then(|index| self.store.delete_new_record(id, &row, &index.ops))
        };
        match (key, stored) {
            (Ok(()), Ok(())) => Ok(id),
            (Ok(()), Err(e)) => {
                let _ = self.keystore.delete_dek(subject, id, 1, false);
                Err(e)
            }
            (Err(e), Ok(())) => {
                // The row without its key must not stay: removed now, or
                // (if that fails too) fenced until the next open's journal
                // reconciliation removes it.
                if remove_row().is_err() {
                    self.isolation.fence();
                }
                Err(e)
            }
            (Err(e), Err(_)) => {
                // Both failed, most likely with nothing written; but a row
                // whose commit was not acknowledged may be in. Removed if it
                // can be; else the record stays "being created" (no reader
                // finds it) until the next open's journal reconciliation
                // rolls it back: no fence for what is most likely an outage.
                if remove_row().is_err() {
                    creating.keep();
                }
                Err(e)
            }
        }
    }

    /// Creates a record (clerk). The body must match the collection schema.
    pub fn put_record(
        &self,
        s: &Session,
        collection: &str,
        subject: SubjectId,
        body: &Value,
    ) -> Result<RecordId> {
        self.authorize(s, Some(Permission::CreateRecord))?;
        let r = (|| {
            self.require_officer()?;
            let collection = CollectionName::parse(collection)?;
            let schema = self.schema(&collection)?;
            let body = schema.validate(body)?;
            let guard = self.isolation.shared(self.keystore.bucket_of(subject));
            let id = self.store_new_record(s, &collection, subject, &body)?;
            Ok((id, guard))
        })();
        match r {
            Ok((id, _guard)) => {
                self.audit_record_create(s, id, subject)?;
                Ok(id)
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "record.create",
                    vec![subject.to_string()],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Audits a stored new record and clears its journal entry; if the
    /// audit fails, the record and its key are removed again (fail closed:
    /// an unaudited record must not remain), and if that removal fails too
    /// the vault is fenced until reopened (the journal then removes it).
    fn audit_record_create(&self, s: &Session, id: RecordId, subject: SubjectId) -> Result<()> {
        let event = self.new_event(
            Some(s.user),
            &s.ctx,
            "record.create",
            vec![id.to_string(), subject.to_string()],
            Ok(()),
            None,
        );
        let forgotten = match self.append_event_forgetting(event, Some(id.as_bytes())) {
            Ok((_, forgotten)) => forgotten,
            Err(e) => {
                let undone = (|| {
                    self.undo_hook()?;
                    if let Some(row) = self.store.record(id)? {
                        let index = self.index_change(id, &row.collection, None, None)?;
                        self.store.delete_new_record(id, &row, &index.ops)?;
                    }
                    self.keystore.delete_dek(subject, id, 1, false)?;
                    self.mark_dirty(self.keystore.bucket_of(subject))
                })();
                if undone.is_err() {
                    self.isolation.fence();
                }
                return Err(e);
            }
        };
        // The event is in the trail: the entry has done its job (on the
        // cluster it went with the event). A failed delete only leaves an
        // entry that the next open finds audited.
        if !forgotten {
            let _ = self.store.delete_lazily(store::CF_JOURNAL, id.as_bytes());
        }
        Ok(())
    }

    pub(crate) fn live_row(&self, id: RecordId) -> Result<RecordRow> {
        // A record whose key and row are still being written is not there
        // yet (its put has not returned).
        if self.isolation.is_creating(id) {
            return Err(Error::NotFound("record"));
        }
        let row = self.store.record(id)?.ok_or(Error::NotFound("record"))?;
        if let RecordState::Disposed { certificate } = &row.state {
            return Err(Error::Disposed {
                certificate: certificate.clone(),
            });
        }
        Ok(row)
    }

    /// Decrypts a row's body under the given epoch root (callers that hold
    /// the epoch lock already pass theirs).
    pub(crate) fn decrypt_with(
        &self,
        root: &SecretKey,
        epoch: u64,
        id: RecordId,
        row: &RecordRow,
    ) -> Result<Map<String, Value>> {
        let dek = self
            .keystore
            .dek(root, epoch, row.subject, id, row.version)?
            .ok_or(Error::Integrity("record key (missing)"))?;
        let plain = crypto::open(
            &dek,
            &record_aad(self.info.vault_id, id, row),
            &row.envelope,
            "record",
        )?;
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::Integrity("record body")),
        }
    }

    pub(crate) fn decrypt(&self, id: RecordId, row: &RecordRow) -> Result<Map<String, Value>> {
        let epoch = self.epoch.read().expect("epoch lock");
        self.decrypt_with(&epoch.root, epoch.number, id, row)
    }

    /// A live record's row and body, read under its bucket lock. An update
    /// running beside the read may replace the row and delete the key the
    /// read found; the read then sees a newer version and reads again.
    pub(crate) fn read_live(&self, id: RecordId) -> Result<(RecordRow, Map<String, Value>)> {
        let mut attempts = 0;
        loop {
            let row = self.live_row(id)?;
            let _g = self.isolation.shared(self.keystore.bucket_of(row.subject));
            self.isolation.check_not_pending(id)?;
            match self.decrypt(id, &row) {
                Err(e @ Error::Integrity(_)) if attempts < 3 => {
                    if self.live_row(id)?.version == row.version {
                        return Err(e);
                    }
                    attempts += 1;
                }
                r => return r.map(|body| (row, body)),
            }
        }
    }

    pub(crate) fn meta(id: RecordId, row: &RecordRow) -> RecordMeta {
        RecordMeta {
            id,
            collection: row.collection.clone(),
            subject: row.subject,
            version: row.version,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            state: row.state.clone(),
        }
    }

    /// Reads a record, masked; `reveal` names sensitive fields to show in
    /// full, which needs the reveal permission (officers, or clerks granted
    /// it) and a reason. One read event, plus one reveal event per field.
    pub fn get_record(
        &self,
        s: &Session,
        id: RecordId,
        reveal: &[&str],
        reason: Option<&str>,
    ) -> Result<RecordView> {
        let user = self.authorize(s, Some(Permission::ReadRecord))?;
        let r = (|| {
            if !reveal.is_empty() {
                let role = Role::parse(&user.role)?;
                if !(role.permits(Permission::RevealField) || (role == Role::Clerk && user.reveal))
                {
                    return Err(Error::PermissionDenied(Permission::RevealField.verb()));
                }
                let reason = reason.map(str::trim).filter(|r| !r.is_empty());
                let reason = reason
                    .ok_or_else(|| Error::invalid("revealing a field needs a reason (--reason)"))?;
                audit::check_reason(reason)?;
            }
            let (row, body) = self.read_live(id)?;
            let schema = self.schema(&row.collection)?;
            schema.check_reveal(reveal)?;
            let classification = schema.classify(&body);
            Ok(RecordView {
                meta: Self::meta(id, &row),
                fields: schema.mask_owned(body, reveal),
                revealed: reveal.iter().map(|f| f.to_string()).collect(),
                classification,
            })
        })();
        let targets = vec![id.to_string()];
        match &r {
            Ok(view) => {
                self.audit(Some(s.user), &s.ctx, "record.read", targets, Ok(()), None)?;
                for f in &view.revealed {
                    self.audit(
                        Some(s.user),
                        &s.ctx,
                        "record.reveal",
                        vec![id.to_string(), format!("field:{f}")],
                        Ok(()),
                        reason,
                    )?;
                }
            }
            Err(e) => {
                let action = if reveal.is_empty() {
                    "record.read"
                } else {
                    "record.reveal"
                };
                self.audit(Some(s.user), &s.ctx, action, targets, Err(e), None)?;
            }
        }
        r
    }

    /// Replaces a record's body (clerk): a new version under a new DEK; the
    /// old version's DEK is deleted once the update is audited. Returns the
    /// new version. Refused with [`Error::DisposalInProgress`] while a
    /// disposal batch names the record.
    pub fn update_record(&self, s: &Session, id: RecordId, body: &Value) -> Result<u32> {
        self.edit_record(s, id, Edit::Replace(body))
    }

    /// Changes some fields of a record (clerk): `patch` is a JSON merge
    /// patch (RFC 7396) over the current body — a field set to a value is
    /// replaced, a field set to `null` is removed, fields not named are
    /// kept — so a clerk who sees the record masked can correct a phone
    /// number without knowing (or erasing) the SSN. The patch is applied
    /// to the version current under the record lock, so two edits of
    /// different fields racing each other both survive. A new version under
    /// a new key, like [`Vault::update_record`].
    pub fn patch_record(&self, s: &Session, id: RecordId, patch: &Value) -> Result<u32> {
        if !patch.is_object() {
            return Err(Error::invalid(
                "a record patch is a JSON object of fields (null removes a field)",
            ));
        }
        self.edit_record(s, id, Edit::Patch(patch))
    }

    /// The versions of a record, oldest first: when, by whom and which
    /// fields each one changed (names only, from the audit trail's
    /// `record.create`/`record.update` events). Needs the read permission;
    /// audited as `record.history`.
    pub fn record_history(&self, s: &Session, id: RecordId) -> Result<Vec<RecordVersion>> {
        self.authorize(s, Some(Permission::ReadRecord))?;
        let r = (|| {
            let row = self.store.record(id)?.ok_or(Error::NotFound("record"))?;
            let events = self
                .audit
                .lock()
                .expect("audit lock")
                .events(&audit::EventFilter {
                    action_prefix: Some("record.".into()),
                    from_ms: Some(row.created_ms),
                    ..audit::EventFilter::default()
                })?;
            let target = id.to_string();
            let mut out: Vec<RecordVersion> = Vec::new();
            for ev in events.iter().filter(|e| {
                e.outcome == audit::Outcome::Success && e.targets.first() == Some(&target)
            }) {
                let version = match ev.action.as_str() {
                    "record.create" => 1,
                    "record.update" => match ev
                        .targets
                        .iter()
                        .find_map(|t| t.strip_prefix("version:")?.parse().ok())
                    {
                        Some(v) => v,
                        None => continue,
                    },
                    _ => continue,
                };
                let actor_name = match ev.actor {
                    Some(a) => self.user_row(a)?.map(|u| u.username),
                    None => None,
                };
                out.push(RecordVersion {
                    version,
                    time_ms: ev.time_ms,
                    actor: ev.actor,
                    actor_name,
                    fields: ev
                        .targets
                        .iter()
                        .filter_map(|t| t.strip_prefix("field:").map(str::to_owned))
                        .collect(),
                });
            }
            Ok(out)
        })();
        self.audit(
            Some(s.user),
            &s.ctx,
            "record.history",
            vec![id.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// [`Vault::update_record`] and [`Vault::patch_record`]: the new body is
    /// computed from the version read under the locks.
    fn edit_record(&self, s: &Session, id: RecordId, edit: Edit<'_>) -> Result<u32> {
        self.authorize(s, Some(Permission::UpdateRecord))?;
        let r = (|| {
            self.isolation.check_fence()?;
            self.require_officer()?;
            let subject = self.live_row(id)?.subject;
            let bucket = self.keystore.bucket_of(subject);
            let bucket_guard = self.isolation.shared(bucket);
            let record_guard = self.isolation.record(id);
            self.isolation.check_not_pending(id)?;
            // Read again under the locks: this is the version being replaced.
            let mut row = self.live_row(id)?;
            let before = row.clone();
            let schema = self.schema(&row.collection)?;
            let current = self.decrypt(id, &row)?;
            let body = match edit {
                Edit::Replace(body) => schema.validate(body)?,
                Edit::Patch(patch) => {
                    // A retired field goes at the record's next update.
                    let mut kept = current.clone();
                    kept.retain(|k, _| !schema.is_retired(k));
                    let mut merged = Value::Object(kept);
                    merge_patch(&mut merged, patch);
                    schema.validate(&merged)?
                }
            };
            let changed = changed_fields(&current, &body);
            drop(current);
            let plain = Zeroizing::new(serde_json::to_vec(&body).expect("serialisable"));
            let version = row
                .version
                .checked_add(1)
                .ok_or(Error::invalid("record version overflow"))?;
            let epoch = self.epoch.read().expect("epoch lock");
            let rnd = crypto::RecordRandomness::draw();
            let dek = rnd.dek;
            self.keystore.store_dek(
                &epoch.root,
                epoch.number,
                row.subject,
                id,
                version,
                &dek,
                rnd.wrap_nonce,
            )?;
            // The new version is sealed as a v2 row, its metadata bound.
            row.format = store::ROW_V2;
            row.version = version;
            row.updated_ms = self.now();
            row.envelope = crypto::seal_with_nonce(
                &dek,
                &record_aad(self.info.vault_id, id, &row),
                &plain,
                rnd.body_nonce,
            );
            let journal = JournalEntry {
                kind: JOURNAL_UPDATE,
                time_ms: row.updated_ms,
                version,
                old_row: before.encode(),
            };
            // The old key will linger as residue in the keystore files: the
            // bucket is marked for the next maintenance rotation in the same
            // batch as the row.
            let mut extra = vec![(
                store::CF_JOURNAL,
                id.as_bytes().to_vec(),
                Some(journal.encode()),
            )];
            extra.extend(self.dirty_mark_op(bucket));
            // The old version's beacons go and the new one's come in the
            // same batch (the record lock serialises this record's writes).
            extra.extend(
                self.index_change(id, &row.collection, Some(&*schema), Some(&body))?
                    .ops,
            );
            if let Err(e) = self.store.put_record_with(id, &row, false, &extra) {
                let _ = self.keystore.delete_dek(row.subject, id, version, false);
                return Err(e);
            }
            self.note_dirty(bucket);
            drop(epoch);
            Ok((version, before, changed, bucket_guard, record_guard))
        })();
        match r {
            Ok((version, before, changed, _bucket_guard, _record_guard)) => {
                // Fail closed: without its audit event the old version comes
                // back and the new key goes. The event names the changed
                // fields (names only) for the record's history.
                let mut targets = vec![id.to_string(), format!("version:{version}")];
                targets.extend(changed.iter().map(|f| format!("field:{f}")));
                if let Err(e) =
                    self.audit(Some(s.user), &s.ctx, "record.update", targets, Ok(()), None)
                {
                    let undone = (|| {
                        self.undo_hook()?;
                        // The old version's key is still stored: its beacons
                        // are computed again from its body.
                        let mut ops = vec![(store::CF_JOURNAL, id.as_bytes().to_vec(), None)];
                        ops.extend(self.restored_index(id, &before)?);
                        self.store.put_record_with(id, &before, false, &ops)?;
                        self.keystore.delete_dek(before.subject, id, version, false)
                    })();
                    if undone.is_err() {
                        self.isolation.fence();
                    }
                    return Err(e);
                }
                // Only now, with the update audited, does the old version's key
                // go; its wrapped bytes may linger in the keystore files until
                // the bucket is next rotated (DESIGN §4.1). Should the delete
                // fail, the journal entry stays and the next open finishes it.
                if self
                    .keystore
                    .delete_dek(before.subject, id, before.version, false)
                    .is_ok()
                {
                    let _ = self.store.delete_lazily(store::CF_JOURNAL, id.as_bytes());
                }
                Ok(version)
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "record.update",
                    vec![id.to_string()],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Lists record metadata (no contents).
    pub fn list_records(&self, s: &Session, filter: &RecordFilter) -> Result<Vec<RecordMeta>> {
        self.authorize(s, Some(Permission::ListRecords))?;
        let contractor = self.contractor_filter(s)?;
        let ids = match (&filter.subject, &filter.collection) {
            (Some(sub), _) => self.store.records_of_subject(*sub)?,
            (None, Some(c)) => self.store.records_of_collection(c)?,
            (None, None) => self.store.all_records()?,
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if self.isolation.is_creating(id) {
                continue;
            }
            if let Some(row) = self.store.record(id)? {
                let visible = contractor
                    .as_ref()
                    .is_none_or(|sc| Self::in_contractor_scope(sc, id, &row));
                if visible
                    && filter
                        .collection
                        .as_ref()
                        .is_none_or(|c| *c == row.collection)
                {
                    out.push(Self::meta(id, &row));
                }
            }
        }
        let mut targets = vec![format!("count:{}", out.len())];
        if let Some(c) = &filter.collection {
            targets.push(format!("collection:{c}"));
        }
        if let Some(sub) = &filter.subject {
            targets.push(sub.to_string());
        }
        self.audit(Some(s.user), &s.ctx, "record.list", targets, Ok(()), None)?;
        Ok(out)
    }

    /// Imports records from JSON Lines or CSV, streaming. Each row is a
    /// record body plus a subject column (`subject_column`). With `check_only`
    /// nothing is stored: the front end runs a check pass first so that an
    /// import with a bad row stores nothing. `progress` is called with the
    /// bytes consumed so far. Each record is stored and audited as a `put`
    /// is (its bucket lock, its journal entry); a storage or audit failure
    /// after some records were stored returns [`Error::ImportIncomplete`]
    /// naming how many and the last stored line, so a re-run can resume.
    #[allow(clippy::too_many_arguments)] // one call, all of them are the import's inputs
    pub fn import_records(
        &self,
        s: &Session,
        collection: &str,
        input: impl BufRead,
        format: ImportFormat,
        subject_column: &str,
        check_only: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ImportReport> {
        self.import_mapped(
            s,
            collection,
            input,
            format,
            subject_column,
            &ImportColumns::default(),
            check_only,
            progress,
        )
    }

    /// [`Vault::import_records`] with a spreadsheet's column headers mapped
    /// to fields ([`ImportColumns`]); a bad value is reported with its line
    /// and its column's header, never the value.
    #[allow(clippy::too_many_arguments)]
    pub fn import_mapped(
        &self,
        s: &Session,
        collection: &str,
        input: impl BufRead,
        format: ImportFormat,
        subject_column: &str,
        columns: &ImportColumns,
        check_only: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ImportReport> {
        self.authorize(s, Some(Permission::CreateRecord))?;
        let collection = CollectionName::parse(collection)?;
        let schema = self.schema(&collection)?;
        if !check_only {
            self.require_officer()?;
        }
        let mut report = ImportReport::default();
        let mut last_stored_line = 0u64;
        let column_names = std::cell::RefCell::new(Vec::new());
        let mut handle_row = |line: u64, row: Result<Map<String, Value>>| -> Result<()> {
            // An error with the field it is about (`None`: the row as a whole).
            let checked = row.map_err(|e| (None, e)).and_then(|mut m| {
                let in_subject = |e| (Some(subject_column.to_owned()), e);
                let subject = match m.remove(subject_column) {
                    Some(Value::String(t)) => self.resolve_subject(&t).map_err(in_subject)?,
                    Some(Value::Number(n)) => {
                        self.resolve_subject(&n.to_string()).map_err(in_subject)?
                    }
                    _ => {
                        return Err(in_subject(Error::invalid(format!(
                            "column {subject_column} (the subject) is missing or empty"
                        ))));
                    }
                };
                let body = Value::Object(m);
                match schema.validate(&body) {
                    Ok(b) => Ok((subject, b)),
                    // `field_errors` lists `validate`'s own error first.
                    Err(e) => Err((
                        schema
                            .field_errors(&body)
                            .into_iter()
                            .next()
                            .and_then(|f| f.field),
                        e,
                    )),
                }
            });
            match checked {
                Ok((subject, body)) => {
                    report.valid += 1;
                    if !check_only {
                        let _g = self.isolation.shared(self.keystore.bucket_of(subject));
                        let id = self.store_new_record(s, &collection, subject, &body)?;
                        self.audit_record_create(s, id, subject)?;
                        report.imported += 1;
                        report.records.push(id);
                        last_stored_line = line;
                    }
                }
                Err((field, e)) => {
                    report.rejected_count += 1;
                    if report.rejected.len() < 1000 {
                        report.rejected.push(ImportRejection {
                            line,
                            field,
                            error: name_column(&column_names.borrow(), e.to_string()),
                        });
                    }
                }
            }
            Ok(())
        };
        let counted = CountingReader {
            inner: input,
            count: 0,
        };
        let r: Result<()> = match format {
            ImportFormat::JsonLines => {
                let mut reader = counted;
                let mut line = 0u64;
                let mut buf = Zeroizing::new(String::new());
                loop {
                    buf.clear();
                    let n = reader.read_line(&mut buf).map_err(Error::from)?;
                    if n == 0 {
                        break Ok(());
                    }
                    line += 1;
                    if buf.trim().is_empty() {
                        continue;
                    }
                    let row = match serde_json::from_str::<Value>(&buf) {
                        Ok(Value::Object(m)) => Ok(m),
                        Ok(_) => Err(Error::invalid("line is not a JSON object")),
                        // serde_json's message quotes no input, only positions.
                        Err(e) => Err(Error::invalid(format!(
                            "malformed JSON at column {}",
                            e.column()
                        ))),
                    };
                    if let Err(e) = handle_row(line, row) {
                        break Err(e);
                    }
                    progress(reader.count);
                }
            }
            ImportFormat::Csv => {
                let mut rdr = csv::ReaderBuilder::new()
                    .flexible(false)
                    .from_reader(counted);
                let headers = rdr
                    .headers()
                    .map_err(|_| Error::invalid("CSV header row is unreadable"))?
                    .clone();
                let (plan, names) = columns.plan(&headers, &schema, subject_column)?;
                *column_names.borrow_mut() = names;
                let mut rec = csv::StringRecord::new();
                let mut line = 1u64;
                loop {
                    line += 1;
                    let r = match rdr.read_record(&mut rec) {
                        Ok(false) => break Ok(()),
                        Ok(true) => {
                            let mut m = Map::new();
                            for (target, v) in plan.iter().zip(rec.iter()) {
                                let v = v.trim();
                                if let (Some(field), false) = (target, v.is_empty()) {
                                    m.insert(field.clone(), Value::String(v.to_owned()));
                                }
                            }
                            handle_row(line, Ok(m))
                        }
                        Err(_) => handle_row(
                            line,
                            Err(Error::invalid(
                                "CSV row is malformed (wrong number of fields or bad quoting)",
                            )),
                        ),
                    };
                    if let Err(e) = r {
                        break Err(e);
                    }
                    progress(rdr.position().byte());
                }
            }
        };
        let targets = vec![
            format!("collection:{collection}"),
            format!("count:{}", report.imported),
        ];
        // The summary event is written whatever happened; its failure must
        // not hide the rows already stored (each has its own event).
        let summary = if check_only {
            Ok(0)
        } else {
            self.audit(
                Some(s.user),
                &s.ctx,
                "record.import",
                targets,
                r.as_ref().map(|_| ()),
                None,
            )
        };
        let failure = match (r, summary) {
            (Ok(()), Ok(_)) => return Ok(report),
            (Err(e), _) | (Ok(()), Err(e)) => e,
        };
        if report.imported > 0 {
            return Err(Error::ImportIncomplete {
                stored: report.imported,
                last_line: last_stored_line,
                cause_code: failure.code(),
                cause: failure.to_string(),
            });
        }
        Err(failure)
    }
}

/// How a spreadsheet's columns become fields: `Header=field` pairs (a
/// header matched case- and space-insensitively; `Header=` drops the
/// column). A header not mapped is taken as a field name after lowering
/// its case and turning spaces and hyphens into `_` (`Given Name` →
/// `given_name`). A byte-order mark before the first header is dropped.
#[derive(Clone, Debug, Default)]
pub struct ImportColumns {
    /// (normalised header, field or `None` to drop).
    map: Vec<(String, Option<String>)>,
}

/// What [`ImportColumns::plan`] makes of a header row: the field of each
/// column (`None`: dropped) and, for errors, the header of each field whose
/// column is named otherwise.
type ColumnPlan = (Vec<Option<String>>, Vec<(String, String)>);

impl ImportColumns {
    /// Parses `Header=field` pairs separated by commas or newlines (a
    /// mapping file: one per line, `#` starts a comment).
    pub fn parse(spec: &str) -> Result<ImportColumns> {
        let mut map = Vec::new();
        for item in spec.split(['\n', ',']) {
            let item = item.trim().trim_end_matches('\r');
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (h, f) = item.split_once('=').ok_or_else(|| {
                Error::invalid("a column mapping is Header=field (Header= drops the column)")
            })?;
            let f = f.trim();
            if !f.is_empty()
                && !f
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(Error::invalid(
                    "a mapped field name is lower-case letters, digits and _",
                ));
            }
            map.push((norm_header(h), (!f.is_empty()).then(|| f.to_owned())));
        }
        Ok(ImportColumns { map })
    }

    /// Adds the pairs of `other` (later ones win).
    pub fn extend(&mut self, other: ImportColumns) {
        self.map.extend(other.map);
    }

    /// The field of each column, in order, and the headers to name in errors.
    fn plan(
        &self,
        headers: &csv::StringRecord,
        schema: &crate::schema::Schema,
        subject_column: &str,
    ) -> Result<ColumnPlan> {
        let mut plan = Vec::new();
        let mut named = Vec::new();
        for (i, raw) in headers.iter().enumerate() {
            let raw = if i == 0 {
                raw.trim_start_matches('\u{feff}')
            } else {
                raw
            };
            let key = norm_header(raw);
            let target = match self.map.iter().rev().find(|(h, _)| *h == key) {
                Some((_, f)) => f.clone(),
                None if raw.trim() == subject_column || key == norm_header(subject_column) => {
                    Some(subject_column.to_owned())
                }
                None => Some(key.clone()),
            };
            if let Some(f) = &target
                && f != subject_column
                && schema.field(f).is_none()
            {
                return Err(Error::invalid(format!(
                    "column {} (header {}) is not a field of this collection: map it with \
                     --map 'HEADER=field' or drop it with --map 'HEADER='",
                    i + 1,
                    header_label(raw)
                )));
            }
            if let Some(f) = &target
                && raw.trim() != f
            {
                named.push((f.clone(), header_label(raw)));
            }
            plan.push(target);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = plan.iter().flatten().find(|f| !seen.insert(*f)) {
            return Err(Error::invalid(format!(
                "two columns map to the field {dup}"
            )));
        }
        Ok((plan, named))
    }
}

/// Rewrites `field X: …` as `column "Header" (field X): …` when the
/// column's header is not the field's name.
fn name_column(named: &[(String, String)], msg: String) -> String {
    for (field, header) in named {
        let pat = format!("field {field}:");
        if msg.contains(&pat) {
            return msg.replacen(&pat, &format!("column {header} (field {field}):"), 1);
        }
    }
    msg
}

/// A header as matched: trimmed, lower case, runs of spaces and hyphens as `_`.
fn norm_header(h: &str) -> String {
    let mut out = String::new();
    for w in h
        .trim()
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
    {
        if w.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(&w.to_lowercase());
    }
    out
}

/// A header quoted in a message: printable, at most 64 characters. A
/// "header" with four or more digits is not quoted: in a file without a
/// header row it is the first record's SSN, card, phone or licence number.
fn header_label(h: &str) -> String {
    if h.chars().filter(char::is_ascii_digit).count() >= 4 {
        return "(not shown: it looks like a value; does the file start with a header row?)".into();
    }
    let clean: String = h
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{clean:?}")
}

/// How [`Vault::edit_record`] makes the new body.
#[derive(Clone, Copy, Debug)]
enum Edit<'a> {
    /// The whole body, replaced.
    Replace(&'a Value),
    /// A JSON merge patch over the current body.
    Patch(&'a Value),
}

/// One version of a record, from [`Vault::record_history`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordVersion {
    /// The version number (1 = created).
    pub version: u32,
    /// When it was written (unix ms).
    pub time_ms: i64,
    /// Who wrote it.
    pub actor: Option<crate::ids::UserId>,
    /// Their username.
    pub actor_name: Option<String>,
    /// The fields it changed (names only; empty for version 1).
    pub fields: Vec<String>,
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes a
/// key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The names of the fields that differ between two bodies, sorted.
fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_headerless_files_first_numbers_are_not_quoted_as_a_header() {
        let schema = crate::schema::Schema::from_json(
            r#"{"purpose": "test", "fields": [{"name": "given_name", "type": "given_name", "required": true},
                           {"name": "ssn", "type": "ssn"}]}"#,
        )
        .unwrap();
        let plan = |line: &str| {
            let headers = csv::StringRecord::from(line.split(',').collect::<Vec<_>>());
            ImportColumns::default()
                .plan(&headers, &schema, "subject")
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        // A real header that is not a field is named, so it can be mapped.
        assert!(plan("subject,given_name,Social Security").contains("\"Social Security\""));
        // A first record's SSN or card number is not.
        for value in ["219-09-9999", "4111 1111 1111 1111", "(617) 555-0199"] {
            let m = plan(&format!("subject,given_name,{value}"));
            assert!(!m.contains(value), "{m}");
            assert!(m.contains("column 3") && m.contains("header row"), "{m}");
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396 appendix A that apply to objects.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (
                json!({"a":"foo"}),
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"c"}}),
            ),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn changed_fields_names_added_removed_and_changed() {
        let old = json!({"a":1,"b":2,"c":3});
        let new = json!({"a":1,"b":5,"d":4});
        assert_eq!(
            changed_fields(old.as_object().unwrap(), new.as_object().unwrap()),
            vec!["b", "c", "d"]
        );
    }
}
