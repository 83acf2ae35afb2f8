//! The JSON shapes of the vault's answers, shared by `pivault --json` and
//! the HTTP API so that a script sees the same document from either front
//! end. IDs, counts, times and masked fields only: a view never carries a
//! secret, and personal information only where the caller was allowed to
//! read it (a record view, masked unless revealed).

use serde_json::{Value, json};

use crate::access::{UserInfo, UserState};
use crate::audit::{AuditEvent, UserActivity, VerifyReport};
use crate::certificate::Certificate;
use crate::clock::format_ms;
use crate::vault::{
    DisposalOutcome, DisposalSummary, Hold, ImportReport, MaintenanceReport, PendingRequest,
    RecordMeta, RecordState, RecordView, RetentionPolicy,
};

/// The `version` of every document this build writes. Adding a member
/// keeps it; renaming or removing one, or changing what a member means,
/// bumps it (README, "Output documents").
pub const DOCUMENT_VERSION: u32 = 1;

/// Every document name `pivault --json` and the HTTP API write, each
/// described by `schemas/<name>.json` (README, "Output documents"). A test
/// keeps this list, the schema files and the README in step.
pub const DOCUMENTS: &[&str] = &[
    "audit-anchor",
    "audit-export",
    "audit-export-file",
    "audit-file-verify",
    "audit-head",
    "audit-log",
    "audit-report",
    "audit-stream",
    "audit-timestamp",
    "audit-verify",
    "backup",
    "backup-list",
    "backup-restore",
    "certificate",
    "certificate-change",
    "certificate-html",
    "certificate-list",
    "certificate-payload",
    "certificate-pdf",
    "certificate-proof",
    "certificate-verification",
    "collection-change",
    "collection-list",
    "collection-reindex",
    "collection-schema",
    "contractor-assignment",
    "contractor-list",
    "contractor-revocation",
    "cosign-keypair",
    "disposal-list",
    "disposal-outcome",
    "disposal-retry",
    "doctor-report",
    "health",
    "hold-change",
    "hold-list",
    "import-report",
    "incident",
    "incident-list",
    "incident-notice",
    "incident-scope",
    "keys-export",
    "login",
    "logout",
    "maintenance-report",
    "passphrase-change",
    "password-change",
    "profile-change",
    "profile-list",
    "public-keys",
    "record",
    "record-export",
    "record-find",
    "record-history",
    "record-list",
    "record-stored",
    "record-version",
    "request-decision",
    "request-list",
    "retention-list",
    "retention-policy",
    "retention-schedule",
    "review",
    "service-list",
    "service-revocation",
    "service-token",
    "session",
    "session-end",
    "subject",
    "two-factor-confirmed",
    "two-factor-enrolment",
    "two-factor-policy",
    "user",
    "user-added",
    "user-change",
    "user-list",
    "vault-created",
    "vault-delete-plan",
    "vault-delete-resumed",
    "vault-deleted",
    "vault-list",
    "wisp-pack",
];

/// Names a top-level answer: the one place where `pivault --json` and the
/// HTTP API give a document its `document` name and `version`, so that a
/// script can check what it reads against `schemas/<name>.json`. An array
/// becomes `{"document", "version", "items": [...]}` (a list, as
/// kubectl's); an object gains the two members. An object that already
/// names itself (a server's answer relayed by `pivault --server`, or a
/// record view) is kept as it is.
pub fn document(name: &str, body: Value) -> Value {
    match body {
        Value::Object(mut m) => {
            if !m.contains_key("document") {
                debug_assert!(
                    !m.contains_key("version"),
                    "document {name}: a member named `version` would be overwritten"
                );
                m.insert("document".into(), json!(name));
                m.insert("version".into(), json!(DOCUMENT_VERSION));
            }
            Value::Object(m)
        }
        Value::Array(items) => {
            json!({ "document": name, "version": DOCUMENT_VERSION, "items": items })
        }
        other => json!({ "document": name, "version": DOCUMENT_VERSION, "value": other }),
    }
}

/// The items of a list document (or of a bare array).
pub fn items(doc: &Value) -> &[Value] {
    match doc {
        Value::Array(a) => a,
        Value::Object(m) => m
            .get("items")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
        _ => &[],
    }
}

/// `live` or `disposed`.
pub fn state_str(s: &RecordState) -> &'static str {
    match s {
        RecordState::Live => "live",
        RecordState::Disposed { .. } => "disposed",
    }
}

/// One user (`user list`, `whoami`).
pub fn user(u: &UserInfo) -> Value {
    json!({
        "user_id": u.id.to_string(), "username": u.username.as_str(), "role": u.role.as_str(),
        "state": match u.state { UserState::Active => "active", UserState::Disabled => "disabled" },
        "reveal": u.reveal_grant, "created": format_ms(u.created_ms),
        "last_login": u.last_login_ms.map(format_ms), "locked_until": u.locked_until_ms.map(format_ms),
        "kind": if u.service { "service" } else { "person" },
        "two_factor": u.two_factor.as_str(),
        "full_name": u.full_name,
    })
}

/// The two-factor policy: which roles must sign in with a second factor.
pub fn two_factor_policy(p: &crate::access::TwoFactorPolicy) -> Value {
    json!({ "required": p.roles() })
}

/// One service account (`service list`): never its token.
pub fn service_account(a: &crate::vault::ServiceAccount) -> Value {
    json!({
        "user_id": a.id.to_string(), "username": a.username.as_str(), "role": a.role.as_str(),
        "state": match a.state { UserState::Active => "active", UserState::Disabled => "revoked" },
        "created": format_ms(a.created_ms), "last_used": a.last_used_ms.map(format_ms),
        "has_token": a.has_token,
        "token_issued_to": a.token_issued_to.map(|u| u.to_string()),
        "issuer_disabled": a.issuer_disabled,
    })
}

/// A service account's new token (`service add`, `service rotate`): shown this once.
pub fn service_token(id: crate::ids::UserId, name: &str, role: &str, token: &str) -> Value {
    json!({ "user_id": id.to_string(), "username": name, "role": role, "token": token })
}

/// One pending two-person request (`user requests`): IDs, names, times.
pub fn pending(r: &PendingRequest) -> Value {
    json!({
        "request": r.id, "kind": r.kind.as_str(), "username": r.username.as_str(), "full_name": r.full_name,
        "user_id": r.user.map(|u| u.to_string()), "role": r.role.as_str(), "reveal": r.reveal,
        "requester": r.requester.to_string(), "created": format_ms(r.created_ms),
        "expires": format_ms(r.expires_ms),
    })
}

/// Record metadata (`record list`).
pub fn meta(m: &RecordMeta) -> Value {
    serde_json::to_value(MetaDoc::from(m)).expect("a record's metadata serialises")
}

/// A record, masked except for the revealed fields (`record get`).
pub fn record(v: &RecordView) -> Value {
    serde_json::to_value(RecordDoc::from(v)).expect("a record view serialises")
}

/// [`record`]'s document, borrowed from the view and serialised directly:
/// the server's hot read path skips building (and cloning the fields into)
/// a `Value` tree. Keys are declared in sorted order, the order of the
/// `Value` maps, so both give the same bytes.
#[derive(serde::Serialize)]
pub struct RecordDoc<'a> {
    classification: ClassificationDoc,
    document: &'static str,
    fields: &'a serde_json::Map<String, Value>,
    record: MetaDoc<'a>,
    revealed: &'a [String],
    version: u32,
}

/// Field values stay out of Debug output, masked or not.
impl std::fmt::Debug for RecordDoc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordDoc")
            .field("record_id", &self.record.record_id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct ClassificationDoc {
    ma_personal_information: bool,
    sensitive_elements: Vec<&'static str>,
}

#[derive(serde::Serialize)]
struct MetaDoc<'a> {
    certificate: Option<&'a str>,
    collection: &'a str,
    created: String,
    record_id: String,
    state: &'static str,
    subject: String,
    updated: String,
    version: u32,
}

impl<'a> From<&'a RecordMeta> for MetaDoc<'a> {
    fn from(m: &'a RecordMeta) -> Self {
        let certificate = match &m.state {
            RecordState::Disposed { certificate } => certificate.as_deref(),
            RecordState::Live => None,
        };
        MetaDoc {
            certificate,
            collection: m.collection.as_str(),
            created: format_ms(m.created_ms),
            record_id: m.id.to_string(),
            state: state_str(&m.state),
            subject: m.subject.to_string(),
            updated: format_ms(m.updated_ms),
            version: m.version,
        }
    }
}

impl<'a> From<&'a RecordView> for RecordDoc<'a> {
    fn from(v: &'a RecordView) -> Self {
        RecordDoc {
            classification: ClassificationDoc {
                ma_personal_information: v.classification.ma_personal_information,
                sensitive_elements: v
                    .classification
                    .sensitive_elements
                    .iter()
                    .map(|t| t.as_str())
                    .collect(),
            },
            document: "record",
            fields: &v.fields,
            record: MetaDoc::from(&v.meta),
            revealed: &v.revealed,
            version: DOCUMENT_VERSION,
        }
    }
}

/// A find's answer (`record find`): the fields searched, the match mode and
/// the matching records, each masked as `record get` shows it.
pub fn record_find(collection: &str, r: &crate::vault::FindResult) -> Value {
    json!({
        "collection": collection,
        "fields": r.fields,
        "match": r.mode.as_str(),
        "count": r.records.len(),
        "records": r.records.iter().map(record).collect::<Vec<_>>(),
    })
}

/// A collection's blind indexes rebuilt (`collection reindex`).
pub fn collection_reindex(collection: &str, indexed: u64) -> Value {
    json!({ "collection": collection, "indexed": indexed })
}

/// A record's versions (`record history`): names of changed fields only.
pub fn record_history(id: crate::ids::RecordId, versions: &[crate::vault::RecordVersion]) -> Value {
    json!({
        "record_id": id.to_string(),
        "versions": versions.iter().map(|v| json!({
            "version": v.version, "time": format_ms(v.time_ms),
            "actor": v.actor.map(|a| a.to_string()), "username": v.actor_name,
            "fields_changed": v.fields,
        })).collect::<Vec<_>>(),
    })
}

/// Certificates (`certificate list`).
pub fn certificates(list: &[crate::vault::CertificateSummary]) -> Value {
    Value::Array(
        list.iter()
            .map(|c| {
                json!({
                    "certificate_id": c.id, "status": c.status, "issued_at": c.issued_at,
                    "operator": c.operator, "operator_user_id": c.operator_user_id,
                    "record_count": c.record_count, "cosigned_by": c.cosigned_by,
                })
            })
            .collect(),
    )
}

/// Contractors (`contractor list`).
pub fn contractors(list: &[crate::vault::ContractorInfo]) -> Value {
    Value::Array(
        list.iter()
            .map(|c| {
                json!({
                    "user_id": c.user_id.to_string(), "username": c.username,
                    "state": if c.disabled { "disabled" } else { "active" },
                    "key_fingerprint": c.key_fingerprint, "collections": c.collections,
                    "records": c.records,
                })
            })
            .collect(),
    )
}

/// One audit event (`audit log`).
pub fn event(e: &AuditEvent) -> Value {
    json!({
        "seq": e.seq, "time": format_ms(e.time_ms), "actor": e.actor.map(|a| a.to_string()),
        "channel": e.channel.as_str(), "source": e.source, "action": e.action, "targets": e.targets,
        "outcome": e.outcome.as_str(), "code": e.code, "reason": e.reason, "request_id": e.request_id,
    })
}

/// The result of `audit verify`.
pub fn verify(r: &VerifyReport) -> Value {
    json!({
        "ok": r.ok(), "events": r.events, "checkpoints": r.checkpoints,
        "last_checkpoint_seq": r.last_checkpoint_seq, "first_bad_seq": r.first_bad_seq, "problem": r.problem,
        "anchored_seq": r.anchored_seq, "heads_confirmed": r.heads_confirmed,
        "unvouched": r.unvouched.iter().map(|u| json!({
            "from_seq": u.from, "to_seq": u.to, "named_by_seq": u.named_by,
        })).collect::<Vec<_>>(),
    })
}

/// One user's line of `audit report`.
pub fn activity(a: &UserActivity, name: &str) -> Value {
    json!({
        "user_id": a.user.to_string(), "username": name, "reads": a.reads, "reveals": a.reveals,
        "exports": a.exports, "writes": a.writes, "denials": a.denials, "logins": a.logins,
        "failed_logins": a.failed_logins, "lockouts": a.lockouts, "unvouched": a.unvouched,
    })
}

/// An import refused by its check pass: nothing stored; the rejected rows'
/// line numbers and reasons, never their values.
pub fn import_refused(check: &ImportReport) -> Value {
    json!({
        "imported": 0, "valid": check.valid, "rejected": check.rejected_count,
        "errors": check.rejected.iter().map(|x| json!({ "line": x.line, "error": x.error })).collect::<Vec<_>>(),
    })
}

/// A check pass that found every row valid (`record import --check`).
pub fn import_checked(r: &ImportReport) -> Value {
    json!({ "checked": true, "imported": 0, "valid": r.valid, "rejected": 0 })
}

/// A completed import.
pub fn import_done(r: &ImportReport) -> Value {
    json!({ "imported": r.imported, "valid": r.valid, "rejected": 0 })
}

/// The outcome of a disposal (or of its dry run, or `retention due`).
pub fn outcome(o: &DisposalOutcome, dry_run: bool) -> Value {
    json!({
        "dry_run": dry_run,
        "disposal_id": o.disposal_id.map(|d| d.to_string()),
        "certificate_id": o.certificate_id.map(|c| c.to_string()),
        "records": o.records.len(),
        "record_ids": o.records.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "subjects": o.subjects,
        "ma_residents": o.ma_residents,
        "plan": crate::vault::plan_fingerprint(&mut o.records.iter().copied()),
        "excluded": o.excluded.iter().map(|(id, why)| json!({ "record_id": id.to_string(), "reason": why })).collect::<Vec<_>>(),
        "epoch_before": o.epochs.map(|e| e.0),
        "epoch_after": o.epochs.map(|e| e.1),
        "duration_ms": o.duration_ms,
    })
}

/// One disposal batch (`disposal list`).
pub fn disposal(d: &DisposalSummary) -> Value {
    json!({ "disposal_id": d.id.to_string(), "certificate_id": d.certificate_id.to_string(), "step": d.step,
            "failed": d.failed, "records": d.records, "created": format_ms(d.created_ms) })
}

/// A maintenance ratchet (`maintenance run`).
pub fn maintenance(r: &MaintenanceReport) -> Value {
    json!({
        "buckets_rotated": r.buckets_rotated,
        "keys_rewrapped": r.keys_rewrapped,
        "orphan_keys_destroyed": r.orphan_keys_destroyed,
        "epoch_before": r.epochs.map(|e| e.0),
        "epoch_after": r.epochs.map(|e| e.1),
        "verified": r.verified,
        "search_partitions_split": r.search_partitions_split,
    })
}

/// One legal hold (`hold list`).
pub fn hold(h: &Hold) -> Value {
    json!({ "kind": h.kind, "target": h.target, "reason": h.reason, "by": h.by.to_string(), "created": format_ms(h.created_ms) })
}

/// One collection's retention policy (`retention show`).
pub fn retention(collection: &str, p: &RetentionPolicy) -> Value {
    json!({ "collection": collection, "days": p.days, "from_updated": p.from_updated })
}

/// The retention schedule (`retention schedule`, `/v1/retention-schedule`):
/// `every_hours` null when off.
pub fn retention_schedule(r: Option<&crate::vault::RetentionSchedule>) -> Value {
    match r {
        Some(r) => json!({
            "enabled": true, "every_hours": r.every_hours, "set_by": r.set_by.to_string(),
            "set_at": crate::clock::format_ms(r.set_ms),
            "last_run_at": r.last_run_ms.map(crate::clock::format_ms),
        }),
        None => json!({ "enabled": false, "every_hours": null }),
    }
}

/// A certificate as shown (`certificate show`): the signed body and who signed it.
pub fn certificate(c: &Certificate) -> Value {
    json!({ "certificate": c.body, "signatures": c.signatures.iter().map(|g| json!({"role": g.role, "key_fingerprint": g.key_fingerprint})).collect::<Vec<_>>() })
}

// ----- incidents and the WISP pack (incident.rs, wisp.rs) ---------------------

fn selector(sel: &crate::vault::Selector) -> Value {
    json!({ "kind": sel.kind, "value": sel.value })
}

/// `incident scope`: the records and subjects touched, how, the element
/// types and the Massachusetts residents (IDs and counts only).
pub fn incident_scope(sc: &crate::vault::IncidentScope) -> Value {
    json!({
        "selector": selector(&sc.selector),
        "since": format_ms(sc.since_ms),
        "until": format_ms(sc.until_ms),
        "through_seq": sc.through_seq,
        "events": sc.events,
        "denied": sc.denied,
        "by_kind": sc.by_kind,
        "record_count": sc.records.len(),
        "subject_count": sc.subjects.len(),
        "ma_resident_count": sc.ma_resident_subjects.len(),
        "ma_personal_information_count": sc.ma_personal_information_subjects,
        "element_types": sc.element_types,
        "revealed_types": sc.revealed_types,
        "subjects": sc.subjects.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ma_resident_subjects": sc.ma_resident_subjects.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "records": sc.records.iter().map(|r| json!({
            "record_id": r.record.to_string(),
            "subject": r.subject.to_string(),
            "collection": r.collection,
            "how": r.how,
            "events": r.events,
            "elements": r.elements,
            "revealed": r.revealed,
            "ma_resident": r.ma_resident,
            "ma_personal_information": r.ma_personal_information,
            "basis": r.basis,
        })).collect::<Vec<_>>(),
    })
}

/// One incident of the register.
pub fn incident(i: &crate::vault::Incident) -> Value {
    json!({
        "incident_id": i.id,
        "status": i.status(),
        "opened_at": format_ms(i.opened_ms),
        "opened_by": i.opened_by,
        "nature": i.nature,
        "selector": selector(&i.selector),
        "since": format_ms(i.since_ms),
        "until": format_ms(i.until_ms),
        "credit_monitoring": i.credit_monitoring,
        "scope": i.scope.as_ref().map(|s| json!({
            "at": format_ms(s.at_ms),
            "through_seq": s.through_seq,
            "record_count": s.records,
            "subject_count": s.subjects,
            "ma_resident_count": s.ma_residents,
            "element_types": s.element_types,
        })),
        "actions": i.actions.iter().map(|a| json!({
            "at": format_ms(a.time_ms), "by": a.by, "text": a.text,
        })).collect::<Vec<_>>(),
        "review": i.review.as_ref().map(|r| json!({
            "at": format_ms(r.time_ms), "by": r.by, "notes": r.notes, "wisp_changes": r.wisp_changes,
        })),
    })
}

/// A sensitive element type as the notice names it.
fn element_label(t: &str) -> &'static str {
    match t {
        "ssn" => "Social Security number",
        "drivers_license" => "driver's license number",
        "state_id" => "state-issued identification card number",
        "account_number" => "financial account number",
        "card_number" => "credit or debit card number",
        "biometric" => "biometric indicator",
        _ => "other data",
    }
}

/// The notice to the Attorney General and OCABR (M.G.L. c. 93H §3(b)),
/// drafted from the incident and its scope run at `now_ms`. Counts,
/// element types, dates and the officer's own words: no personal
/// information, and no subject list (see `affected_subjects`).
pub fn incident_notice(
    i: &crate::vault::Incident,
    sc: &crate::vault::IncidentScope,
    now_ms: i64,
) -> Value {
    let ssn = sc.element_types.iter().any(|t| t == "ssn");
    let consumers = sc.subjects.len();
    let ftc = consumers >= crate::vault::FTC_NOTICE_THRESHOLD;
    let mut types: Vec<&str> = sc.element_types.iter().map(|t| element_label(t)).collect();
    types.dedup();
    json!({
        "incident_id": i.id,
        "prepared_at": format_ms(now_ms),
        "law": "M.G.L. c. 93H \u{a7}3(b); 201 CMR 17.03(2)(j)",
        "addressees": [
            "Office of the Attorney General of Massachusetts",
            "Office of Consumer Affairs and Business Regulation",
        ],
        "nature": i.nature,
        "period": { "since": format_ms(i.since_ms), "until": format_ms(i.until_ms) },
        "ma_residents_affected": sc.ma_resident_subjects.len(),
        "ma_residents_with_personal_information": sc.ma_personal_information_subjects,
        "subjects_affected": consumers,
        "records_affected": sc.records.len(),
        "personal_information_types": types,
        "element_types": sc.element_types,
        "access": sc.by_kind,
        "steps_taken": i.actions.iter().map(|a| json!({
            "at": format_ms(a.time_ms), "text": a.text,
        })).collect::<Vec<_>>(),
        "post_incident_review": i.review.as_ref().map(|r| json!({
            "at": format_ms(r.time_ms), "wisp_changes": r.wisp_changes,
        })),
        "maintains_wisp": true,
        "credit_monitoring": {
            "required": ssn,
            "offered": i.credit_monitoring,
            "minimum_months": 18,
            "basis": "M.G.L. c. 93H \u{a7}3A: a breach including a Social Security number",
            "attention": ssn && !i.credit_monitoring,
        },
        "ftc_safeguards_notice": {
            "required": ftc,
            "consumers": consumers,
            "threshold": crate::vault::FTC_NOTICE_THRESHOLD,
            "basis": "16 CFR 314.4(j): notice to the FTC within 30 days of discovery when 500 or more consumers are involved",
        },
        "affected_subjects": "not included: the notice carries counts only. The subject IDs are in `pivault incident scope --json`; \
            the residents' own notices need their contact details, which leave the vault only as an encrypted export",
        "to_complete": [
            "name and address of the business that experienced the breach",
            "name and title of the person reporting, and their relationship to the business",
            "type of business reporting",
            "the person responsible for the breach, if known",
        ],
        "through_seq": sc.through_seq,
    })
}

/// The WISP evidence pack.
pub fn wisp_pack(p: &crate::vault::WispPack) -> Value {
    use crate::vault::WispStatus;
    json!({
        "vault_id": p.vault_id.to_string(),
        "generated_at": format_ms(p.generated_ms),
        "period": { "since": format_ms(p.from_ms), "until": format_ms(p.to_ms) },
        "summary": {
            "met": p.count(WispStatus::Met),
            "missing": p.count(WispStatus::Missing),
            "attention": p.count(WispStatus::Attention),
        },
        "elements": p.lines.iter().map(|l| json!({
            "element": l.element,
            "title": l.title,
            "status": l.status.as_str(),
            "checks": l.checks,
            "finding": l.finding,
            "evidence": l.evidence,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CollectionName, RecordId, SubjectId};
    use crate::schema::{Classification, FieldType};

    /// A list becomes `{"document","version","items"}`; an object gains the
    /// two members; an object already named (a relayed answer) is kept.
    #[test]
    fn documents_are_named_once() {
        let list = document("user-list", json!([{ "username": "alice" }]));
        assert_eq!(
            list,
            json!({ "document": "user-list", "version": DOCUMENT_VERSION, "items": [{ "username": "alice" }] })
        );
        assert_eq!(items(&list).len(), 1);
        let one = document("review", json!({ "reviewed": true }));
        assert_eq!(
            one,
            json!({ "document": "review", "version": DOCUMENT_VERSION, "reviewed": true })
        );
        assert_eq!(document("other-name", one.clone()), one);
        for name in DOCUMENTS {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "document name {name}"
            );
        }
    }

    /// The server's direct serialisation gives the same bytes as the
    /// `Value` document (keys sorted), for a live and for a disposed record.
    #[test]
    fn record_doc_matches_the_value_document() {
        let mut fields = serde_json::Map::new();
        fields.insert("ssn".into(), json!("***-**-6789"));
        fields.insert("given_name".into(), json!("A***"));
        for state in [
            RecordState::Live,
            RecordState::Disposed {
                certificate: Some("cert-1".into()),
            },
            RecordState::Disposed { certificate: None },
        ] {
            let v = RecordView {
                meta: RecordMeta {
                    id: RecordId::new(),
                    collection: CollectionName::parse("customers").unwrap(),
                    subject: SubjectId::new(),
                    version: 3,
                    created_ms: 1_700_000_000_000,
                    updated_ms: 1_700_000_100_000,
                    state,
                },
                fields: fields.clone(),
                revealed: vec!["ssn".into()],
                classification: Classification {
                    ma_personal_information: true,
                    sensitive_elements: vec![FieldType::Ssn, FieldType::CardNumber],
                    ..Classification::default()
                },
            };
            // The document as it was built before `RecordDoc`, key by key.
            let m = &v.meta;
            let certificate = match &m.state {
                RecordState::Disposed { certificate } => certificate.clone(),
                RecordState::Live => None,
            };
            let expected = json!({
                "record": {
                    "record_id": m.id.to_string(), "collection": m.collection.as_str(),
                    "subject": m.subject.to_string(), "version": m.version,
                    "created": format_ms(m.created_ms), "updated": format_ms(m.updated_ms),
                    "state": state_str(&m.state), "certificate": certificate,
                },
                "fields": Value::Object(v.fields.clone()),
                "revealed": v.revealed,
                "classification": {
                    "ma_personal_information": true,
                    "sensitive_elements": ["ssn", "card_number"],
                },
                "document": "record",
                "version": DOCUMENT_VERSION,
            });
            let direct = serde_json::to_string(&RecordDoc::from(&v)).unwrap();
            assert_eq!(direct, serde_json::to_string(&expected).unwrap());
            assert_eq!(record(&v), expected);
            assert_eq!(meta(&v.meta), expected["record"]);
        }
    }
}
