//! Exports of records out of the vault: a data subject's records (an access
//! request) or a collection's (REQ-WISP-05).
//!
//! An export is encrypted by default, with the `age` format (X25519
//! recipients `age1…`, or a passphrase: scrypt), so that whoever receives
//! it needs only the `age` tool and their key. A plaintext export needs the
//! `ExportPlaintext` permission. Every export needs `ExportRecords` and a
//! reason, and is audited twice: `records.export` before any record is
//! decrypted (scope, planned count, encryption, reason; an export whose
//! first event cannot be written exports nothing) and `records.exported`
//! at the end, success or failure, with the count actually written. No
//! value is ever audited.
//!
//! # Copies outside the vault
//!
//! Before it decrypts anything an export writes, synced, its row in the
//! exports column family (the records it plans to export, who, when, how
//! it is encrypted) and one index row per record. A disposal's certificate
//! lists every export that holds a record of its batch as a copy outside
//! the vault (`target.copies_outside_vault`). Each record is read under its
//! bucket's shared lock, which a disposal's first step takes exclusively,
//! so an export that read a record before the disposal started is in the
//! ledger before the certificate is written; one that reaches a record
//! after the disposal started finds it pending or disposed and fails,
//! having exported only the records it names in its row.
//!
//! This is a child module of `vault` so it can reach the facade's fields.

use std::collections::BTreeSet;
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Context, Session, Vault};
use crate::access::Permission;
use crate::agefile;
use crate::clock::format_ms;
use crate::error::{Error, Result};
use crate::ids::{CollectionName, RecordId, SubjectId, UserId};
use crate::secret::SecretString;
use crate::store::{self, RecordState};

/// The `format` member of an export's first line.
pub const EXPORT_FORMAT: &str = "pivault-export/1";

/// What an export covers.
#[derive(Clone, Debug)]
pub enum ExportScope {
    /// Every live record of one data subject (an access request).
    Subject(SubjectId),
    /// Every live record of one collection.
    Collection(CollectionName),
    /// Every live record of the data subjects an incident touched, scoped
    /// again now: the affected-subject list a business needs to notify
    /// people (93H §3), only ever encrypted or audited like any export.
    /// Needs `Incidents` too.
    Incident(crate::ids::IncidentId),
}

/// Who can read an export.
#[derive(Debug)]
pub enum ExportRecipient {
    /// age X25519 recipients (`age1…`, from `age-keygen`).
    Keys(Vec<String>),
    /// A passphrase (age scrypt recipient); the receiver types it into `age -d`.
    Passphrase(SecretString),
    /// No encryption (`ExportPlaintext`).
    Plaintext,
}

impl ExportRecipient {
    /// The name of the encryption, for the audit trail and certificates.
    pub fn encryption(&self) -> &'static str {
        match self {
            ExportRecipient::Keys(_) => "age-x25519",
            ExportRecipient::Passphrase(_) => "age-scrypt",
            ExportRecipient::Plaintext => "plaintext",
        }
    }
}

/// An export request.
#[derive(Debug)]
pub struct ExportRequest {
    /// Scope.
    pub scope: ExportScope,
    /// Encryption.
    pub recipient: ExportRecipient,
    /// Why (audited; no personal information).
    pub reason: String,
    /// age's ASCII armor (PEM-like text) rather than binary, for a front
    /// end that carries text (the HTTP API); `age -d` reads either.
    pub armor: bool,
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportOutcome {
    /// The export's ID (in the audit trail and on later certificates).
    pub export_id: String,
    /// Records written.
    pub records: u64,
    /// Distinct subjects among them.
    pub subjects: u64,
    /// [`ExportRecipient::encryption`].
    pub encryption: &'static str,
}

/// An export's row in the exports column family.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExportRow {
    pub export_id: String,
    pub user: String,
    pub created_ms: i64,
    pub encryption: String,
    /// "started", "complete", "failed", or "interrupted" (still "started"
    /// when the vault next opened: its process stopped before it ended).
    pub state: String,
    /// Records it set out to export (the plan).
    pub planned: Vec<String>,
    /// Records written (set when it ends).
    pub exported: Vec<String>,
}

/// The ledger state of an export that was still `started` when the vault
/// next opened: no export runs across an open, so its process stopped.
const INTERRUPTED: &str = "interrupted";

fn row_key(export_id: &uuid::Uuid) -> Vec<u8> {
    let mut k = b"x".to_vec();
    k.extend_from_slice(export_id.as_bytes());
    k
}

fn index_key(record: RecordId, export_id: &uuid::Uuid) -> Vec<u8> {
    let mut k = b"r".to_vec();
    k.extend_from_slice(record.as_bytes());
    k.extend_from_slice(export_id.as_bytes());
    k
}

/// The age recipients of `keys`, each checked.
fn parse_recipients(keys: &[String]) -> Result<Vec<agefile::Recipient>> {
    if keys.is_empty() {
        return Err(Error::invalid("an encrypted export needs a recipient"));
    }
    keys.iter().map(|k| agefile::Recipient::parse(k)).collect()
}

fn io_err(e: std::io::Error) -> Error {
    Error::invalid(format!("cannot write the export: {e}"))
}

impl Vault {
    /// Exports the live records of a subject or a collection to `out`,
    /// encrypted to the request's recipient (or, with `ExportPlaintext`,
    /// in clear): JSON Lines, a header line then one record a line, every
    /// field in full. Officers only (`ExportRecords`); a reason is
    /// mandatory. See the module documentation for the audit events and
    /// the ledger that later certificates read.
    pub fn export_records(
        &self,
        s: &Session,
        req: &ExportRequest,
        out: &mut dyn Write,
    ) -> Result<ExportOutcome> {
        let encryption = req.recipient.encryption();
        let scope_target = match &req.scope {
            ExportScope::Subject(sid) => sid.to_string(),
            ExportScope::Collection(c) => format!("collection:{c}"),
            ExportScope::Incident(i) => format!("incident:{i}"),
        };
        let reason = req.reason.trim();
        let refuse = |e: Error| -> Result<ExportOutcome> {
            self.audit(
                Some(s.user),
                &s.ctx,
                "records.export",
                vec![scope_target.clone(), format!("encryption:{encryption}")],
                Err(&e),
                None,
            )?;
            Err(e)
        };
        self.authorize(s, Some(Permission::ExportRecords))?;
        if matches!(req.recipient, ExportRecipient::Plaintext) {
            self.authorize(s, Some(Permission::ExportPlaintext))?;
        }
        if reason.is_empty() {
            return refuse(Error::invalid("an export needs a reason (--reason)"));
        }
        if let Err(e) = crate::audit::check_reason(reason) {
            return refuse(e);
        }
        let recipients = match &req.recipient {
            ExportRecipient::Keys(k) => match parse_recipients(k) {
                Ok(r) => r,
                Err(e) => return refuse(e),
            },
            ExportRecipient::Passphrase(p) if p.expose().is_empty() => {
                return refuse(Error::invalid("the export passphrase is empty"));
            }
            _ => Vec::new(),
        };
        // The plan: the live records in scope now.
        let ids = match &req.scope {
            ExportScope::Subject(sid) => self.store.records_of_subject(*sid)?,
            ExportScope::Collection(c) => {
                if self.schema(c).is_err() {
                    return refuse(Error::NotFound("collection"));
                }
                self.store.records_of_collection(c)?
            }
            ExportScope::Incident(i) => {
                self.authorize(s, Some(Permission::Incidents))?;
                match self.incident_subjects(*i) {
                    Ok(subjects) => {
                        let mut ids = Vec::new();
                        for subject in subjects {
                            ids.extend(self.store.records_of_subject(subject)?);
                        }
                        ids
                    }
                    Err(e) => return refuse(e),
                }
            }
        };
        let mut planned = Vec::new();
        for id in ids {
            if let Some(row) = self.store.record(id)?
                && row.state == RecordState::Live
            {
                planned.push(id);
            }
        }
        if planned.is_empty() {
            return refuse(Error::NotFound("live records in this scope"));
        }
        let export_id = uuid::Uuid::now_v7();
        let mut row = ExportRow {
            export_id: export_id.to_string(),
            user: s.user.to_string(),
            created_ms: self.now(),
            encryption: encryption.to_owned(),
            state: "started".into(),
            planned: planned.iter().map(|r| r.to_string()).collect(),
            exported: Vec::new(),
        };
        // The ledger first (synced), then the first event: no record is
        // decrypted before both stand.
        let mut ops: Vec<store::WriteOp<'_>> = planned
            .iter()
            .map(|r| {
                (
                    store::CF_EXPORTS,
                    index_key(*r, &export_id),
                    Some(Vec::new()),
                )
            })
            .collect();
        ops.push((
            store::CF_EXPORTS,
            row_key(&export_id),
            Some(serde_json::to_vec(&row).expect("serialisable")),
        ));
        self.store.write_ops(&ops)?;
        let targets = |n: usize| {
            vec![
                row.export_id.clone(),
                scope_target.clone(),
                format!("count:{n}"),
                format!("encryption:{encryption}"),
            ]
        };
        if let Err(e) = self.audit(
            Some(s.user),
            &s.ctx,
            "records.export",
            targets(planned.len()),
            Ok(()),
            Some(reason),
        ) {
            // Nothing was read: the ledger says it failed with nothing
            // written, not "in progress" for ever on every certificate.
            row.state = "failed".into();
            let _ = self.put_export_row(&row_key(&export_id), &row);
            return Err(e);
        }
        let mut exported: Vec<RecordId> = Vec::new();
        let mut subjects: BTreeSet<SubjectId> = BTreeSet::new();
        let r = self.write_export(
            req,
            &recipients,
            &row,
            &planned,
            out,
            &mut exported,
            &mut subjects,
        );
        row.state = if r.is_ok() { "complete" } else { "failed" }.into();
        row.exported = exported.iter().map(|r| r.to_string()).collect();
        let ledger = self.put_export_row(&row_key(&export_id), &row);
        let r = r.and(ledger);
        self.audit(
            Some(s.user),
            &s.ctx,
            "records.exported",
            targets(exported.len()),
            r.as_ref().map(|_| ()),
            Some(reason),
        )?;
        r.map(|()| ExportOutcome {
            export_id: row.export_id.clone(),
            records: exported.len() as u64,
            subjects: subjects.len() as u64,
            encryption,
        })
    }

    /// Writes the export's lines through the encryption; stops at the
    /// first record that cannot be read (disposed, or being disposed).
    #[allow(clippy::too_many_arguments)] // one caller; the export's parts
    fn write_export(
        &self,
        req: &ExportRequest,
        recipients: &[agefile::Recipient],
        row: &ExportRow,
        planned: &[RecordId],
        out: &mut dyn Write,
        exported: &mut Vec<RecordId>,
        subjects: &mut BTreeSet<SubjectId>,
    ) -> Result<()> {
        let scope = match &req.scope {
            ExportScope::Subject(sid) => json!({ "kind": "subject", "subject": sid.to_string() }),
            ExportScope::Collection(c) => json!({ "kind": "collection", "collection": c.as_str() }),
            ExportScope::Incident(i) => json!({ "kind": "incident", "incident": i.to_string() }),
        };
        let header = json!({
            "format": EXPORT_FORMAT, "export_id": row.export_id, "created_at": format_ms(row.created_ms),
            "scope": scope, "records": planned.len(), "encryption": row.encryption,
        });
        let mut lines = |sink: &mut dyn Write| -> Result<()> {
            writeln!(sink, "{header}").map_err(io_err)?;
            for id in planned {
                let (rec, body) = self.read_live(*id)?;
                let line = json!({
                    "record_id": id.to_string(), "collection": rec.collection.as_str(),
                    "subject": rec.subject.to_string(), "version": rec.version,
                    "created_at": format_ms(rec.created_ms), "updated_at": format_ms(rec.updated_ms),
                    "fields": Value::Object(body),
                });
                let mut bytes =
                    zeroize::Zeroizing::new(serde_json::to_vec(&line).expect("serialisable"));
                bytes.push(b'\n');
                // Counted before its first byte goes out: a write cut
                // midway may already have put its fields in the output.
                exported.push(*id);
                subjects.insert(rec.subject);
                sink.write_all(&bytes).map_err(io_err)?;
            }
            Ok(())
        };
        let to = match &req.recipient {
            ExportRecipient::Plaintext => {
                lines(out)?;
                return out.flush().map_err(io_err);
            }
            ExportRecipient::Keys(_) => agefile::To::Keys(recipients),
            ExportRecipient::Passphrase(p) => agefile::To::Passphrase(p.expose().as_bytes()),
        };
        let mut w = agefile::AgeWriter::new(out, to, req.armor)?;
        lines(&mut w)?;
        // The age stream's last chunk: without it the file does not decrypt.
        w.finish().map_err(io_err)?;
        Ok(())
    }

    /// Writes an export's ledger row at `key` (synced: certificates read it).
    fn put_export_row(&self, key: &[u8], row: &ExportRow) -> Result<()> {
        self.store.put_synced(
            store::CF_EXPORTS,
            key,
            &serde_json::to_vec(row).expect("serialisable"),
            true,
        )
    }

    /// At open: every export still `started` was cut short by its process's
    /// end (none runs across an open), so its row says `interrupted` and the
    /// trail says so. Left `started`, every later certificate listed it as a
    /// copy "in progress".
    pub(crate) fn mark_interrupted_exports(&self, ctx: &Context) -> Result<u64> {
        let mut n = 0;
        for (k, v) in self.store.scan_prefix(store::CF_EXPORTS, b"x")? {
            let mut row: ExportRow =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("export ledger"))?;
            if row.state != "started" {
                continue;
            }
            row.state = INTERRUPTED.into();
            self.put_export_row(&k, &row)?;
            self.audit(
                None,
                ctx,
                "records.exported",
                vec![row.export_id.clone(), format!("state:{INTERRUPTED}")],
                Err(&Error::Io(
                    "the export's process stopped before it ended".into(),
                )),
                None,
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// One export's ledger row, by its ID as the audit trail names it.
    pub(crate) fn export_row(&self, export_id: &str) -> Result<Option<ExportRow>> {
        let Ok(id) = export_id.parse::<uuid::Uuid>() else {
            return Ok(None);
        };
        self.store
            .get(store::CF_EXPORTS, &row_key(&id))?
            .map(|b| serde_json::from_slice(&b).map_err(|_| Error::Integrity("export ledger row")))
            .transpose()
    }

    /// The exports holding any of `records` (their rows), for a disposal's
    /// certificate: a started export counts with its plan, an ended one
    /// with what it wrote.
    pub(crate) fn exports_holding(&self, records: &[RecordId]) -> Result<Vec<Value>> {
        let batch: BTreeSet<String> = records.iter().map(|r| r.to_string()).collect();
        let mut ids = BTreeSet::new();
        for r in records {
            let mut prefix = b"r".to_vec();
            prefix.extend_from_slice(r.as_bytes());
            for (k, _) in self.store.scan_prefix(store::CF_EXPORTS, &prefix)? {
                ids.insert(
                    k.get(17..33)
                        .ok_or(Error::Integrity("export ledger"))?
                        .to_vec(),
                );
            }
        }
        let mut out = Vec::new();
        for e in ids {
            let mut key = b"x".to_vec();
            key.extend_from_slice(&e);
            // An index row without its export's row: the ledger was changed
            // without the vault (the state digest should have said so).
            let Some(v) = self.store.get(store::CF_EXPORTS, &key)? else {
                return Err(Error::Integrity(
                    "export ledger (an index row without its export)",
                ));
            };
            let row: ExportRow =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("export ledger"))?;
            let held = if row.state == "started" || row.state == INTERRUPTED {
                &row.planned
            } else {
                &row.exported
            };
            let n = held.iter().filter(|r| batch.contains(*r)).count();
            if n == 0 {
                continue;
            }
            let user: UserId = row.user.parse()?;
            out.push(json!({
                "export_id": row.export_id,
                "exported_at": format_ms(row.created_ms),
                "exported_by": user.to_string(),
                "encryption": row.encryption,
                "state": match row.state.as_str() {
                    "complete" => "delivered",
                    "failed" => "failed midway (the records written before the failure may be held)",
                    INTERRUPTED => "interrupted: its process stopped before it ended (counted with every planned record; part of them may be held)",
                    _ => "in progress when this certificate was issued (counted with every planned record)",
                },
                "records_of_this_batch": n,
            }));
        }
        Ok(out)
    }
}
