//! The incident register (201 CMR 17.03(2)(j), REQ-WISP-10, REQ-WISP-11):
//! scoping a suspected breach from the audit trail, keeping the incident
//! record with its responsive actions and its post-incident review, and the
//! figures of the notice to the Attorney General and OCABR (M.G.L. c. 93H
//! §3, §3A). A child module of `vault`.
//!
//! The scope reads the trail up to a fixed sequence number (the head when
//! it starts), so writes and disposals racing it never change which events
//! it counts; each record it names is then classified from its current
//! body, or, once disposed, from its collection's schema (the body is gone:
//! its residence is the schema's, its elements every sensitive type the
//! schema declares). Only IDs, counts and element types leave this module:
//! never a field value.
//!
//! Incident rows live in the `incidents` column family, each sealed with a
//! row MAC (`store.rs`), so a row written or rewritten without the vault's
//! key fails to read. Changes only append (an action; the review, once),
//! and each is audited (`incident.open`, `incident.action`,
//! `incident.review`) or undone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::*;
use crate::ids::IncidentId;

/// Longest free text of an incident (nature, an action, the review).
pub const INCIDENT_TEXT_MAX: usize = 2000;

/// How long an incident may stay without its post-incident review before
/// `doctor` and the WISP pack ask for it.
pub const REVIEW_DUE_MS: i64 = 30 * 86_400_000;

/// The FTC Safeguards Rule (16 CFR 314.4(j)) asks for a notice to the FTC
/// when unencrypted customer information of this many consumers is involved.
pub const FTC_NOTICE_THRESHOLD: usize = 500;

/// Whom an incident is about, as given by the security officer: exactly
/// one of a user (name or ID), a service account's token (the account's
/// name or ID: the trail records the account a token signs in as) or a
/// client address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectorInput {
    /// A user's name or ID.
    pub actor: Option<String>,
    /// A service account's name or ID (its token's events).
    pub token: Option<String>,
    /// A client address as the trail records it (`source`).
    pub source: Option<String>,
}

/// A resolved selector, as stored: `kind` is `actor`, `token` or `source`;
/// `value` a user ID or an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// `actor`, `token` or `source`.
    pub kind: String,
    /// User ID (actor, token) or client address (source).
    pub value: String,
}

impl Selector {
    fn matches(&self, ev: &AuditEvent) -> bool {
        match self.kind.as_str() {
            "source" => ev.source.as_deref() == Some(self.value.as_str()),
            _ => ev.actor.is_some_and(|a| a.to_string() == self.value),
        }
    }
}

/// One record the scope found, with how it was touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TouchedRecord {
    /// The record.
    pub record: RecordId,
    /// Its data subject.
    pub subject: SubjectId,
    /// Its collection.
    pub collection: String,
    /// How: `read`, `reveal`, `export`, `write`, `disposal` (sorted).
    pub how: Vec<String>,
    /// Events of the window that touched it.
    pub events: u64,
    /// Sensitive element types the record holds (see `basis`).
    pub elements: Vec<String>,
    /// Element types of the fields revealed in full.
    pub revealed: Vec<String>,
    /// Whether the subject is taken to reside in Massachusetts.
    pub ma_resident: bool,
    /// Whether the record is Massachusetts personal information (93H §1).
    pub ma_personal_information: bool,
    /// `record` (classified from its body) or `schema` (disposed or
    /// unreadable: residence and elements from the collection's schema).
    pub basis: &'static str,
}

/// The answer of `incident scope`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentScope {
    /// Whom it is about.
    pub selector: Selector,
    /// Window start, unix ms (inclusive).
    pub since_ms: i64,
    /// Window end, unix ms (exclusive).
    pub until_ms: i64,
    /// The trail was read up to this seq.
    pub through_seq: u64,
    /// Events of the selector in the window (any action, any outcome).
    pub events: u64,
    /// Of them, refused (outcome `denied`).
    pub denied: u64,
    /// Successful record events by kind: `read`, `reveal`, `export`,
    /// `write`, `disposal`, and `search` (`record find`/`record list`,
    /// which show metadata and masked matches of records they do not name).
    pub by_kind: BTreeMap<String, u64>,
    /// The records touched, by record ID.
    pub records: Vec<TouchedRecord>,
    /// Distinct data subjects touched, sorted.
    pub subjects: Vec<SubjectId>,
    /// Of them, those taken to reside in Massachusetts, sorted.
    pub ma_resident_subjects: Vec<SubjectId>,
    /// Massachusetts residents with a touched record that is personal
    /// information under 93H §1 (a name and a sensitive element).
    pub ma_personal_information_subjects: usize,
    /// Every sensitive element type of the records touched, sorted.
    pub element_types: Vec<String>,
    /// Element types revealed in full, sorted.
    pub revealed_types: Vec<String>,
}

/// A responsive action taken (17.03(2)(j)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentAction {
    /// When it was recorded, unix ms.
    pub time_ms: i64,
    /// Who recorded it (user ID).
    pub by: String,
    /// What was done or is planned (no personal information).
    pub text: String,
}

/// The mandatory post-incident review (17.03(2)(j)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentReview {
    /// When, unix ms.
    pub time_ms: i64,
    /// Who (user ID).
    pub by: String,
    /// The review of events and actions taken.
    pub notes: String,
    /// Changes to business practices or the WISP ("none" must be said).
    pub wisp_changes: String,
}

/// The figures of the scope kept with the incident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSummary {
    /// When the scope ran, unix ms.
    pub at_ms: i64,
    /// Trail read up to this seq.
    pub through_seq: u64,
    /// Records touched.
    pub records: usize,
    /// Distinct subjects.
    pub subjects: usize,
    /// Massachusetts residents among them.
    pub ma_residents: usize,
    /// Element types.
    pub element_types: Vec<String>,
}

/// An incident record as stored (IDs, times and the officer's own words;
/// free text is checked to hold no long digit runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Incident ID.
    pub id: String,
    /// Opened, unix ms.
    pub opened_ms: i64,
    /// Opened by (user ID).
    pub opened_by: String,
    /// The nature of the breach (for the notice).
    pub nature: String,
    /// Whom it is about.
    pub selector: Selector,
    /// Window start, unix ms.
    pub since_ms: i64,
    /// Window end, unix ms.
    pub until_ms: i64,
    /// Whether free credit monitoring is offered (93H §3A).
    pub credit_monitoring: bool,
    /// The scope's figures when it was opened.
    pub scope: Option<ScopeSummary>,
    /// Responsive actions, oldest first.
    pub actions: Vec<IncidentAction>,
    /// The post-incident review, once done.
    pub review: Option<IncidentReview>,
}

impl Incident {
    /// `open` until the post-incident review is recorded, then `reviewed`.
    pub fn status(&self) -> &'static str {
        if self.review.is_some() {
            "reviewed"
        } else {
            "open"
        }
    }
}

/// Checks an incident's free text: present, at most
/// [`INCIDENT_TEXT_MAX`] characters, no control characters, and no run of
/// four or more digits (a fragment of an SSN, card or account number:
/// the register and the audit trail hold no personal information).
pub fn check_incident_text(field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::InvalidInput(format!("{field} must not be empty")));
    }
    audit::check_text(field, text, INCIDENT_TEXT_MAX)?;
    let mut run = 0usize;
    for c in text.chars() {
        run = if c.is_numeric() { run + 1 } else { 0 };
        if run >= 4 {
            return Err(Error::InvalidInput(format!(
                "{field} must not contain numbers of 4 or more digits (no personal information in the incident register)"
            )));
        }
    }
    Ok(())
}

/// The kind of touch of a successful event, if it touches records.
fn kind_of(action: &str) -> Option<&'static str> {
    match action {
        "record.read" => Some("read"),
        "record.reveal" => Some("reveal"),
        "record.create" | "record.update" | "record.import" => Some("write"),
        "record.find" | "record.list" => Some("search"),
        "disposal.complete" => Some("disposal"),
        // One event per export, written before any record is read; the
        // records are in the export ledger (`export.rs`).
        "records.export" => Some("export"),
        _ => None,
    }
}

#[derive(Default)]
struct Touch {
    how: BTreeSet<String>,
    events: u64,
    revealed_fields: BTreeSet<String>,
}

impl Vault {
    fn resolve_selector(&self, sel: &SelectorInput) -> Result<Selector> {
        let given = [&sel.actor, &sel.token, &sel.source]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            return Err(Error::invalid(
                "give exactly one of --actor USER, --token SERVICE-ACCOUNT or --source ADDRESS",
            ));
        }
        let user = |text: &str| -> Result<UserRow> {
            let row = match text.trim().parse::<UserId>() {
                Ok(id) => self.user_row(id)?,
                Err(_) => self.user_by_name(&Username::parse(text)?)?,
            };
            row.ok_or(Error::NotFound("user"))
        };
        if let Some(a) = &sel.actor {
            return Ok(Selector {
                kind: "actor".into(),
                value: user(a)?.id,
            });
        }
        if let Some(t) = &sel.token {
            let row = user(t)?;
            if !row.service {
                return Err(Error::invalid(
                    "--token names a service account (its tokens' events are recorded under the account); \
                     for a person's sessions use --actor",
                ));
            }
            return Ok(Selector {
                kind: "token".into(),
                value: row.id,
            });
        }
        let s = sel.source.as_deref().unwrap_or_default().trim();
        audit::check_text("source", s, 100)?;
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(Error::invalid("--source must be one client address"));
        }
        Ok(Selector {
            kind: "source".into(),
            value: s.to_owned(),
        })
    }

    /// The records of a disposal batch, from the disposal ledger.
    fn ledger_records(&self, disposal: &str) -> Result<Vec<RecordId>> {
        let mut out = Vec::new();
        for (_, v) in self.store.scan_prefix(store::CF_LEDGER, &[])? {
            let row: Value =
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal ledger"))?;
            if row["disposal_id"].as_str() == Some(disposal) {
                for r in row["records"].as_array().into_iter().flatten() {
                    if let Some(id) = r.as_str().and_then(|s| s.parse().ok()) {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The scope itself, no permission check and no audit event.
    fn compute_scope(&self, sel: &Selector, since_ms: i64, until_ms: i64) -> Result<IncidentScope> {
        if until_ms <= since_ms {
            return Err(Error::invalid("--until must be after --since"));
        }
        // A fixed end: events appended while the scope runs are not read.
        let (through_seq, events) = {
            let log = self.audit.lock().expect("audit lock");
            let head = log.head_seq();
            let evs = log.events(&EventFilter {
                from_ms: Some(since_ms),
                to_ms: Some(until_ms),
                to_seq: Some(head),
                ..EventFilter::default()
            })?;
            (head, evs)
        };
        let mut n_events = 0u64;
        let mut denied = 0u64;
        let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut touched: BTreeMap<RecordId, Touch> = BTreeMap::new();
        for ev in events.iter().filter(|e| sel.matches(e)) {
            n_events += 1;
            if ev.outcome == Outcome::Denied {
                denied += 1;
            }
            if ev.outcome != Outcome::Success {
                continue;
            }
            let Some(kind) = kind_of(&ev.action) else {
                continue;
            };
            *by_kind.entry(kind.to_owned()).or_insert(0) += 1;
            let mut ids: Vec<RecordId> = Vec::new();
            match kind {
                "search" => {}
                "disposal" => {
                    if let Some(b) = ev.targets.first() {
                        ids.extend(self.ledger_records(b)?);
                    }
                }
                "export" => {
                    // What it wrote; an export that never ended counts
                    // everything it set out to read (it may have).
                    if let Some(row) = ev
                        .targets
                        .first()
                        .map(|id| self.export_row(id))
                        .transpose()?
                        .flatten()
                    {
                        let list = if row.state == "started" {
                            &row.planned
                        } else {
                            &row.exported
                        };
                        ids.extend(list.iter().filter_map(|t| t.parse::<RecordId>().ok()));
                    }
                }
                _ => {
                    if let Some(id) = ev.targets.first().and_then(|t| t.parse().ok()) {
                        ids.push(id);
                    }
                }
            }
            for id in ids {
                let t = touched.entry(id).or_default();
                t.how.insert(kind.to_owned());
                t.events += 1;
                if kind == "reveal" {
                    for f in &ev.targets[1..] {
                        if let Some(name) = f.strip_prefix("field:") {
                            t.revealed_fields.insert(name.to_owned());
                        }
                    }
                }
            }
        }
        let mut records = Vec::new();
        for (id, t) in touched {
            // A row that no longer exists at all (never in this vault):
            // nothing to classify, nothing to name.
            let Some(row) = self.store.record(id)? else {
                continue;
            };
            let schema = self.schema(&row.collection).ok();
            let field_type = |f: &str| {
                schema
                    .as_ref()
                    .and_then(|s| s.field(f))
                    .map(|spec| spec.ty.as_str().to_owned())
                    .unwrap_or_else(|| "unknown".to_owned())
            };
            let revealed: BTreeSet<String> =
                t.revealed_fields.iter().map(|f| field_type(f)).collect();
            let from_body = match row.state {
                RecordState::Live => self.read_live(id).ok().and_then(|(row, body)| {
                    let s = self.schema(&row.collection).ok()?;
                    Some(s.classify(&body))
                }),
                RecordState::Disposed { .. } => None,
            };
            let (elements, ma_resident, ma_pi, basis) = match from_body {
                Some(c) => (
                    c.sensitive_elements
                        .iter()
                        .map(|e| e.as_str().to_owned())
                        .collect::<Vec<_>>(),
                    c.ma_resident,
                    c.ma_personal_information,
                    "record",
                ),
                None => {
                    let (elements, ma) = match &schema {
                        Some(s) => {
                            let els: BTreeSet<String> = s
                                .fields
                                .iter()
                                .filter(|f| f.ty.is_sensitive())
                                .map(|f| f.ty.as_str().to_owned())
                                .collect();
                            let res = s
                                .default_residence
                                .clone()
                                .unwrap_or_else(|| crate::schema::DEFAULT_RESIDENCE.to_owned());
                            (els.into_iter().collect::<Vec<_>>(), res == "MA")
                        }
                        None => (Vec::new(), true),
                    };
                    let pi = ma && !elements.is_empty();
                    (elements, ma, pi, "schema")
                }
            };
            records.push(TouchedRecord {
                record: id,
                subject: row.subject,
                collection: row.collection.as_str().to_owned(),
                how: t.how.into_iter().collect(),
                events: t.events,
                elements,
                revealed: revealed.into_iter().collect(),
                ma_resident,
                ma_personal_information: ma_pi,
                basis,
            });
        }
        let subjects: BTreeSet<SubjectId> = records.iter().map(|r| r.subject).collect();
        let ma: BTreeSet<SubjectId> = records
            .iter()
            .filter(|r| r.ma_resident)
            .map(|r| r.subject)
            .collect();
        let ma_pi: BTreeSet<SubjectId> = records
            .iter()
            .filter(|r| r.ma_resident && r.ma_personal_information)
            .map(|r| r.subject)
            .collect();
        let element_types: BTreeSet<String> = records
            .iter()
            .flat_map(|r| r.elements.iter().cloned())
            .collect();
        let revealed_types: BTreeSet<String> = records
            .iter()
            .flat_map(|r| r.revealed.iter().cloned())
            .collect();
        Ok(IncidentScope {
            selector: sel.clone(),
            since_ms,
            until_ms,
            through_seq,
            events: n_events,
            denied,
            by_kind,
            records,
            subjects: subjects.into_iter().collect(),
            ma_resident_subjects: ma.into_iter().collect(),
            ma_personal_information_subjects: ma_pi.len(),
            element_types: element_types.into_iter().collect(),
            revealed_types: revealed_types.into_iter().collect(),
        })
    }

    /// Incident scoping (REQ-WISP-10, REQ-BR-01; officer): for one user,
    /// service account or client address and the window `[since, until)`,
    /// the records and distinct subjects touched, how, the sensitive element
    /// types and the Massachusetts residents among the subjects. Audited as
    /// `incident.scope` with its counts.
    pub fn incident_scope(
        &self,
        s: &Session,
        sel: &SelectorInput,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<IncidentScope> {
        self.authorize(s, Some(Permission::Incidents))?;
        let r = self
            .resolve_selector(sel)
            .and_then(|sel| self.compute_scope(&sel, since_ms, until_ms));
        let targets = match &r {
            Ok(sc) => vec![
                format!("{}:{}", sc.selector.kind, sc.selector.value),
                format!("records:{}", sc.records.len()),
                format!("subjects:{}", sc.subjects.len()),
            ],
            Err(_) => vec![],
        };
        self.audit(
            Some(s.user),
            &s.ctx,
            "incident.scope",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// The data subjects an incident's scope touches, scoped again now
    /// (for the encrypted export of the affected-subject list).
    pub(crate) fn incident_subjects(&self, id: IncidentId) -> Result<Vec<SubjectId>> {
        let inc = self.incident_row(id)?;
        Ok(self
            .compute_scope(&inc.selector, inc.since_ms, inc.until_ms)?
            .subjects)
    }

    fn incident_row(&self, id: IncidentId) -> Result<Incident> {
        let bytes = self
            .store
            .get(store::CF_INCIDENTS, id.as_bytes())?
            .ok_or(Error::NotFound("incident"))?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Integrity("incident row"))
    }

    /// Every stored incident, oldest first (no permission check).
    pub(crate) fn incident_rows(&self) -> Result<Vec<Incident>> {
        let mut out: Vec<Incident> = self
            .store
            .scan_prefix(store::CF_INCIDENTS, &[])?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| Error::Integrity("incident row")))
            .collect::<Result<_>>()?;
        out.sort_by_key(|i| i.opened_ms);
        Ok(out)
    }

    /// Writes an incident row and audits the change (undone if the audit
    /// fails). `targets` follow the incident ID.
    fn put_incident(
        &self,
        s: &Session,
        inc: &Incident,
        action: &str,
        extra: Vec<String>,
    ) -> Result<()> {
        let id: IncidentId = inc.id.parse()?;
        let mut targets = vec![inc.id.clone()];
        targets.extend(extra);
        self.write_audited(
            s,
            store::CF_INCIDENTS,
            id.as_bytes(),
            Some(&serde_json::to_vec(inc).expect("serialisable")),
            (action, targets, None),
        )
    }

    /// Audits a refused or failed incident change (no row written).
    fn incident_failed<T>(&self, s: &Session, action: &str, e: Error) -> Result<T> {
        self.audit(Some(s.user), &s.ctx, action, vec![], Err(&e), None)?;
        Err(e)
    }

    /// Opens an incident (officer): its selector and window, the nature of
    /// the breach, whether credit monitoring is offered; the scope runs and
    /// its figures are kept with it. Audited as `incident.open`.
    pub fn open_incident(
        &self,
        s: &Session,
        sel: &SelectorInput,
        since_ms: i64,
        until_ms: i64,
        nature: &str,
        credit_monitoring: bool,
    ) -> Result<Incident> {
        self.authorize(s, Some(Permission::Incidents))?;
        let _g = self.incident_lock.lock().expect("incident lock");
        let r = (|| {
            check_incident_text("nature", nature)?;
            let sel = self.resolve_selector(sel)?;
            let sc = self.compute_scope(&sel, since_ms, until_ms)?;
            let now = self.now();
            Ok(Incident {
                id: IncidentId::new().to_string(),
                opened_ms: now,
                opened_by: s.user.to_string(),
                nature: nature.trim().to_owned(),
                selector: sel,
                since_ms,
                until_ms,
                credit_monitoring,
                scope: Some(ScopeSummary {
                    at_ms: now,
                    through_seq: sc.through_seq,
                    records: sc.records.len(),
                    subjects: sc.subjects.len(),
                    ma_residents: sc.ma_resident_subjects.len(),
                    element_types: sc.element_types.clone(),
                }),
                actions: Vec::new(),
                review: None,
            })
        })();
        match r {
            Ok(inc) => {
                let extra = match &inc.scope {
                    Some(sc) => vec![
                        format!("records:{}", sc.records),
                        format!("subjects:{}", sc.subjects),
                    ],
                    None => vec![],
                };
                self.put_incident(s, &inc, "incident.open", extra)?;
                Ok(inc)
            }
            Err(e) => self.incident_failed(s, "incident.open", e),
        }
    }

    /// Records a responsive action (officer); `credit_monitoring` marks
    /// that free credit monitoring is now offered. Audited as
    /// `incident.action`. Actions are only ever appended.
    pub fn incident_action(
        &self,
        s: &Session,
        id: IncidentId,
        text: &str,
        credit_monitoring: bool,
    ) -> Result<Incident> {
        self.authorize(s, Some(Permission::Incidents))?;
        let _g = self.incident_lock.lock().expect("incident lock");
        let r = check_incident_text("action", text).and_then(|()| self.incident_row(id));
        match r {
            Ok(mut inc) => {
                inc.actions.push(IncidentAction {
                    time_ms: self.now(),
                    by: s.user.to_string(),
                    text: text.trim().to_owned(),
                });
                let mut extra = vec![format!("actions:{}", inc.actions.len())];
                if credit_monitoring && !inc.credit_monitoring {
                    inc.credit_monitoring = true;
                    extra.push("credit_monitoring:offered".into());
                }
                self.put_incident(s, &inc, "incident.action", extra)?;
                Ok(inc)
            }
            Err(e) => self.incident_failed(s, "incident.action", e),
        }
    }

    /// Records the mandatory post-incident review (officer): the review of
    /// events and actions and the changes to business practices (`none`
    /// must be said). Once only: a review is never rewritten. Audited as
    /// `incident.review`.
    pub fn review_incident(
        &self,
        s: &Session,
        id: IncidentId,
        notes: &str,
        wisp_changes: &str,
    ) -> Result<Incident> {
        self.authorize(s, Some(Permission::Incidents))?;
        let _g = self.incident_lock.lock().expect("incident lock");
        let r = check_incident_text("review notes", notes)
            .and_then(|()| check_incident_text("WISP changes", wisp_changes))
            .and_then(|()| self.incident_row(id))
            .and_then(|inc| {
                if inc.review.is_some() {
                    Err(Error::AlreadyExists("post-incident review"))
                } else {
                    Ok(inc)
                }
            });
        match r {
            Ok(mut inc) => {
                inc.review = Some(IncidentReview {
                    time_ms: self.now(),
                    by: s.user.to_string(),
                    notes: notes.trim().to_owned(),
                    wisp_changes: wisp_changes.trim().to_owned(),
                });
                self.put_incident(s, &inc, "incident.review", vec![])?;
                Ok(inc)
            }
            Err(e) => self.incident_failed(s, "incident.review", e),
        }
    }

    /// Every incident (officer, auditor), oldest first. Audited as `incident.list`.
    pub fn incidents(&self, s: &Session) -> Result<Vec<Incident>> {
        self.authorize_any(s, &[Permission::Incidents, Permission::Reports])?;
        let r = self.incident_rows();
        self.audit(
            Some(s.user),
            &s.ctx,
            "incident.list",
            vec![],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// One incident (officer, auditor). Audited as `incident.read`.
    pub fn incident(&self, s: &Session, id: IncidentId) -> Result<Incident> {
        self.authorize_any(s, &[Permission::Incidents, Permission::Reports])?;
        let r = self.incident_row(id);
        self.audit(
            Some(s.user),
            &s.ctx,
            "incident.read",
            vec![id.to_string()],
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// The figures of the breach notice (officer): the incident and its
    /// scope run again now ("affected at the time of notification", 93H
    /// §3(b)). Audited as `incident.notice`.
    pub fn incident_notice(
        &self,
        s: &Session,
        id: IncidentId,
    ) -> Result<(Incident, IncidentScope)> {
        self.authorize(s, Some(Permission::Incidents))?;
        let r = self.incident_row(id).and_then(|inc| {
            let sc = self.compute_scope(&inc.selector, inc.since_ms, inc.until_ms)?;
            Ok((inc, sc))
        });
        let targets = match &r {
            Ok((_, sc)) => vec![
                id.to_string(),
                format!("ma_residents:{}", sc.ma_resident_subjects.len()),
            ],
            Err(_) => vec![id.to_string()],
        };
        self.audit(
            Some(s.user),
            &s.ctx,
            "incident.notice",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// Incident IDs the trail says were opened (`incident.open` events
    /// that succeeded) whose rows are gone: a register edited outside the
    /// vault. For `doctor` and the WISP pack.
    pub(crate) fn incidents_missing(&self) -> Result<Vec<String>> {
        let opened = self
            .audit
            .lock()
            .expect("audit lock")
            .events(&EventFilter {
                action_prefix: Some("incident.open".into()),
                ..EventFilter::default()
            })?;
        let mut missing = Vec::new();
        for ev in opened {
            if ev.outcome != Outcome::Success || ev.action != "incident.open" {
                continue;
            }
            let Some(id) = ev.targets.first() else {
                continue;
            };
            let Ok(iid) = id.parse::<IncidentId>() else {
                continue;
            };
            if self
                .store
                .get(store::CF_INCIDENTS, iid.as_bytes())?
                .is_none()
            {
                missing.push(id.clone());
            }
        }
        Ok(missing)
    }
}
