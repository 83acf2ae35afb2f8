//! The WISP evidence pack (201 CMR 17.03, 17.04): each element of the
//! written information security program mapped to the vault's live
//! evidence, and marked `met`, `missing` or `attention` from the `doctor`
//! checks behind it. A child module of `vault`.
//!
//! The pack is built from the same checks `pivault doctor` runs (one run,
//! at one time), so the two never disagree; a line names the checks it
//! rests on. A check that fails makes its line `missing`; a warning makes
//! it `missing` where the element is not met without it (no officer, a
//! review over a year old, a terminated employee's live session row, a
//! contractor without a key) and `attention` elsewhere. Elements the vault
//! cannot see (locked premises, firewalls and patches, training) are
//! always `attention`: the written program must cover them.
//!
//! The evidence holds usernames of staff, IDs, counts and times; never a
//! record's contents.

use serde_json::json;

use super::*;
use crate::doctor::{self, Check, Level};

/// How an element stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WispStatus {
    /// The evidence shows the element in place.
    Met,
    /// The element is not met (a failed check, or a warning it cannot do without).
    Missing,
    /// In place but with a warning, or outside what the vault can see.
    Attention,
}

impl WispStatus {
    /// `met`, `missing` or `attention`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WispStatus::Met => "met",
            WispStatus::Missing => "missing",
            WispStatus::Attention => "attention",
        }
    }
}

/// One element of the program and its evidence.
#[derive(Clone, Debug)]
pub struct WispLine {
    /// The rule, e.g. `17.03(2)(a)`.
    pub element: &'static str,
    /// What the rule asks, in short.
    pub title: &'static str,
    /// How it stands.
    pub status: WispStatus,
    /// The `doctor` checks behind the status.
    pub checks: Vec<&'static str>,
    /// What was found, for a person.
    pub finding: String,
    /// The live evidence (JSON: usernames, IDs, counts, times).
    pub evidence: Value,
}

/// The evidence pack of one period.
#[derive(Clone, Debug)]
pub struct WispPack {
    /// When it was built, unix ms.
    pub generated_ms: i64,
    /// Period start (inclusive), unix ms.
    pub from_ms: i64,
    /// Period end (exclusive), unix ms.
    pub to_ms: i64,
    /// The vault.
    pub vault_id: VaultId,
    /// One line per element, in the rule's order.
    pub lines: Vec<WispLine>,
}

impl WispPack {
    /// Lines with the given status.
    pub fn count(&self, status: WispStatus) -> usize {
        self.lines.iter().filter(|l| l.status == status).count()
    }

    /// The line of an element.
    pub fn line(&self, element: &str) -> Option<&WispLine> {
        self.lines.iter().find(|l| l.element == element)
    }
}

/// The status of a line from its checks: `(name, a warning means missing)`.
fn status_of(
    found: &[Check],
    rules: &[(&'static str, bool)],
) -> (WispStatus, Vec<&'static str>, String) {
    let mut status = WispStatus::Met;
    let mut names = Vec::new();
    let mut details = Vec::new();
    for (name, warn_missing) in rules {
        let Some(c) = found.iter().find(|c| c.name == *name) else {
            continue;
        };
        names.push(*name);
        details.push(format!("{}: {}", c.name, c.detail));
        let s = match c.level {
            Level::Ok => WispStatus::Met,
            Level::Fail => WispStatus::Missing,
            Level::Warn if *warn_missing => WispStatus::Missing,
            Level::Warn => WispStatus::Attention,
        };
        status = match (status, s) {
            (WispStatus::Missing, _) | (_, WispStatus::Missing) => WispStatus::Missing,
            (WispStatus::Attention, _) | (_, WispStatus::Attention) => WispStatus::Attention,
            _ => WispStatus::Met,
        };
    }
    (status, names, details.join("; "))
}

/// `doctor`'s checks as a signed-in user sees them (the status page):
/// the same run of [`doctor::checks`] the custodian's `pivault doctor`
/// makes, with the time of the last security review beside it.
#[derive(Clone, Debug)]
pub struct SecurityChecks {
    /// When the checks ran, unix ms.
    pub at_ms: i64,
    /// Every check, in `doctor`'s order.
    pub checks: Vec<Check>,
    /// The last recorded security review (REQ-WISP-09), unix ms.
    pub last_review_ms: Option<i64>,
}

impl SecurityChecks {
    /// Checks at this level.
    pub fn count(&self, level: Level) -> usize {
        self.checks.iter().filter(|c| c.level == level).count()
    }

    /// Whether the annual review is due: never recorded, or older than
    /// [`doctor::REVIEW_INTERVAL_MS`] (201 CMR 17.03(2)(i)).
    pub fn review_overdue(&self) -> bool {
        self.last_review_ms
            .is_none_or(|t| self.at_ms - t > doctor::REVIEW_INTERVAL_MS)
    }
}

impl Vault {
    /// `doctor`'s checks for a signed-in user: those who may build the
    /// WISP pack (`Reports`: officers, auditors), which rests on the same
    /// checks. Names, levels and findings only: usernames of staff, counts
    /// and times, never a record's contents. Audited as `doctor.run` with
    /// the counts.
    pub fn security_checks(&self, s: &Session) -> Result<SecurityChecks> {
        self.authorize(s, Some(Permission::Reports))?;
        let r = (|| {
            let at_ms = self.now();
            Ok(SecurityChecks {
                at_ms,
                checks: doctor::checks(self, at_ms)?,
                last_review_ms: self.security_status()?.last_review_ms,
            })
        })();
        let targets = match &r {
            Ok(c) => vec![
                format!("ok:{}", c.count(Level::Ok)),
                format!("warn:{}", c.count(Level::Warn)),
                format!("fail:{}", c.count(Level::Fail)),
            ],
            Err(_) => vec![],
        };
        self.audit(
            Some(s.user),
            &s.ctx,
            "doctor.run",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    /// The WISP evidence pack for `[from_ms, to_ms)` (officer, auditor).
    /// Audited as `wisp.pack` with its counts.
    pub fn wisp_pack(&self, s: &Session, from_ms: i64, to_ms: i64) -> Result<WispPack> {
        self.authorize(s, Some(Permission::Reports))?;
        let r = if to_ms <= from_ms {
            Err(Error::invalid("--until must be after --since"))
        } else {
            self.build_wisp(from_ms, to_ms)
        };
        let targets = match &r {
            Ok(p) => vec![
                format!("met:{}", p.count(WispStatus::Met)),
                format!("missing:{}", p.count(WispStatus::Missing)),
                format!("attention:{}", p.count(WispStatus::Attention)),
            ],
            Err(_) => vec![],
        };
        self.audit(
            Some(s.user),
            &s.ctx,
            "wisp.pack",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r
    }

    fn build_wisp(&self, from_ms: i64, to_ms: i64) -> Result<WispPack> {
        let now = self.now();
        let found = doctor::checks(self, now)?;
        let st = self.security_status()?;
        let users = self.all_user_rows()?;
        let name_of = |id: &str| {
            users
                .iter()
                .find(|u| u.id == id)
                .map_or_else(|| id.to_owned(), |u| u.username.clone())
        };
        let holders = |role: Role| -> Vec<String> {
            let mut v: Vec<String> = users
                .iter()
                .filter(|u| !u.disabled && u.role == role.as_str())
                .map(|u| u.username.clone())
                .collect();
            v.sort();
            v
        };
        let (period, disables) = {
            let log = self.audit.lock().expect("audit lock");
            let period = log.events(&EventFilter {
                from_ms: Some(from_ms),
                to_ms: Some(to_ms),
                ..EventFilter::default()
            })?;
            let disables = log.events(&EventFilter {
                action_prefix: Some("user.disable".into()),
                ..EventFilter::default()
            })?;
            (period, disables)
        };
        let mut lines = Vec::new();
        let mut line = |element: &'static str,
                        title: &'static str,
                        rules: &[(&'static str, bool)],
                        extra: Option<(WispStatus, String)>,
                        evidence: Value| {
            let (mut status, checks, mut finding) = status_of(&found, rules);
            if let Some((s, why)) = extra {
                if s == WispStatus::Missing
                    || (s == WispStatus::Attention && status == WispStatus::Met)
                {
                    status = s;
                }
                finding = if finding.is_empty() {
                    why
                } else {
                    format!("{why}; {finding}")
                };
            }
            lines.push(WispLine {
                element,
                title,
                status,
                checks,
                finding,
                evidence,
            });
        };

        // (a) Designated employees.
        line(
            "17.03(2)(a)",
            "Designated employee(s) maintain the information security program",
            &[("security-officer", true)],
            None,
            json!({ "officers": holders(Role::Officer) }),
        );
        // (b) Risks identified and assessed: the whole doctor run.
        let all: Vec<(&'static str, bool)> = found.iter().map(|c| (c.name, false)).collect();
        line(
            "17.03(2)(b)",
            "Reasonably foreseeable risks identified and safeguards assessed",
            &all,
            None,
            json!({ "checks": found.iter().map(|c| json!({
                "check": c.name, "level": c.level.as_str(),
            })).collect::<Vec<_>>() }),
        );
        // (c) Storage, access and transport: retention, disposal, exports.
        let retention = self.retention_evidence()?;
        let collections: Vec<String> = self
            .store
            .scan_prefix(store::CF_COLLECTIONS, &[])?
            .into_iter()
            .filter_map(|(k, _)| String::from_utf8(k).ok())
            .collect();
        let without: Vec<&String> = collections
            .iter()
            .filter(|c| !retention.contains_key(*c))
            .collect();
        let mut batches = 0u64;
        let mut disposed = 0u64;
        for (k, v) in self.store.scan_prefix(store::CF_LEDGER, &[])? {
            let t = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(i64::MIN, i64::from_be_bytes);
            if t >= from_ms && t < to_ms {
                batches += 1;
                let row: Value =
                    serde_json::from_slice(&v).map_err(|_| Error::Integrity("disposal ledger"))?;
                disposed += row["records"].as_array().map_or(0, |a| a.len() as u64);
            }
        }
        line(
            "17.03(2)(c)",
            "Policies for storing, accessing and transporting records: retention and disposal",
            &[("encryption", false), ("key-residue", false)],
            (!without.is_empty()).then(|| {
                (
                    WispStatus::Attention,
                    format!("{} collection(s) without a retention policy", without.len()),
                )
            }),
            json!({
                "retention": retention.iter().map(|(c, p)| json!({
                    "collection": c, "days": p.days, "from_updated": p.from_updated,
                })).collect::<Vec<_>>(),
                "collections_without_retention": without,
                "disposal_batches_in_period": batches,
                "records_disposed_in_period": disposed,
                "exports": "encrypted by default; a plaintext export needs a permission and a reason and is audited",
            }),
        );
        // (d) Disciplinary measures: the evidence of violations.
        let activity = audit::activity_report(&period);
        line(
            "17.03(2)(d)",
            "Disciplinary measures: evidence of violations per employee",
            &[("audit-trail", false)],
            None,
            json!({ "users_with_denials": activity.iter().filter(|a| a.denials > 0 || a.lockouts > 0)
                .map(|a| json!({
                    "username": name_of(&a.user.to_string()), "denials": a.denials, "lockouts": a.lockouts,
                })).collect::<Vec<_>>() }),
        );
        // (e) Terminated employees.
        let disabled: Vec<Value> = users
            .iter()
            .filter(|u| u.disabled)
            .map(|u| {
                let when = disables
                    .iter()
                    .rev()
                    .find(|e| {
                        e.outcome == Outcome::Success
                            && e.action == "user.disable"
                            && e.targets.first() == Some(&u.id)
                    })
                    .map(|e| crate::clock::format_ms(e.time_ms));
                json!({ "username": u.username, "service": u.service, "disabled_at": when })
            })
            .collect();
        line(
            "17.03(2)(e)",
            "Terminated employees cannot access records",
            &[("terminated-sessions", true)],
            None,
            json!({
                "disabled_users": disabled,
                "with_live_session_rows": self.disabled_users_with_sessions()?,
            }),
        );
        // (f) Service providers.
        let contractors: Vec<Value> = self
            .contractor_evidence()?
            .into_iter()
            .map(|c| {
                json!({
                    "username": c.username, "collections": c.collections,
                    "records": c.records, "key_fingerprint": c.key_fingerprint,
                })
            })
            .collect();
        let services: Vec<Value> = self
            .service_accounts()?
            .iter()
            .filter(|a| a.state == UserState::Active)
            .map(|a| json!({ "username": a.username.as_str(), "role": a.role.as_str() }))
            .collect();
        line(
            "17.03(2)(f)",
            "Service providers overseen: contractors' scopes and keys, service accounts",
            &[("contractor-keys", true), ("service-accounts", false)],
            None,
            json!({ "contractors": contractors, "service_accounts": services }),
        );
        // (g) Physical access.
        line(
            "17.03(2)(g)",
            "Physical access restricted; records stored in locked facilities",
            &[("vault-dir-permissions", true), ("header-permissions", true)],
            Some((
                WispStatus::Attention,
                "the vault's files are private to its owner; locked premises and media are the business's \
                 duty, outside what the vault can see"
                    .to_owned(),
            )),
            json!({ "vault_dir": self.dir().display().to_string() }),
        );
        // (h) Monitoring.
        let report = self.verify_trail()?;
        let external = report.heads_confirmed;
        line(
            "17.03(2)(h)",
            "Regular monitoring that the program works: audit trail verified and anchored",
            &[("audit-trail", true), ("audit-stream", false)],
            (external == 0).then(|| {
                (
                    WispStatus::Attention,
                    "no head of the audit trail is anchored outside the vault yet (pivault audit anchor, \
                     or a certificate)"
                        .to_owned(),
                )
            }),
            json!({
                "events": report.events,
                "checkpoints": report.checkpoints,
                "last_checkpoint_seq": report.last_checkpoint_seq,
                "records_database_checkpoint_seq": report.anchored_seq,
                "external_heads_confirmed": external,
                "verified": report.ok(),
            }),
        );
        // (i) Annual review.
        line(
            "17.03(2)(i)",
            "Scope of the security measures reviewed at least annually",
            &[("security-review", true)],
            None,
            json!({ "last_review": st.last_review_ms.map(crate::clock::format_ms) }),
        );
        // (j) Incidents.
        let incidents = self.incident_rows()?;
        line(
            "17.03(2)(j)",
            "Responsive actions documented; mandatory post-incident review",
            &[("incident-register", false)],
            None,
            json!({ "incidents": incidents.iter().map(|i| json!({
                "incident_id": i.id,
                "opened_at": crate::clock::format_ms(i.opened_ms),
                "status": i.status(),
                "actions": i.actions.len(),
                "reviewed_at": i.review.as_ref().map(|r| crate::clock::format_ms(r.time_ms)),
            })).collect::<Vec<_>>() }),
        );
        // 17.04(1) Authentication.
        line(
            "17.04(1)",
            "Secure user authentication: unique IDs, passwords, blocking after failed attempts",
            &[("lockout", true)],
            None,
            json!({
                "lockout": {
                    "max_failures": st.lockout.max_failures,
                    "base_lock_minutes": st.lockout.base_lock_ms / 60_000,
                },
                "password_policy": {
                    "min_chars": access::MIN_PASSWORD_CHARS,
                    "breached_list": true,
                    "hash": "argon2id",
                },
            }),
        );
        // 17.04(2) Access control.
        line(
            "17.04(2)",
            "Access restricted by role to those who need it",
            &[("roles", false)],
            None,
            json!({ "roles": Role::ALL.iter().map(|r| json!({
                "role": r.as_str(),
                "holders": holders(*r),
                "permissions": Permission::ALL.iter().filter(|p| r.permits(**p))
                    .map(|p| p.verb()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>() }),
        );
        line(
            "17.04(3)",
            "Encryption of personal information sent over public networks",
            &[("tls", true)],
            None,
            json!({ "server": "TLS only (rustls, 1.2+); a non-loopback bind needs a certificate" }),
        );
        line(
            "17.04(4)",
            "Reasonable monitoring for unauthorized use or access",
            &[("audit-trail", true), ("audit-stream", false)],
            None,
            json!({
                "events_in_period": period.len(),
                "denials_in_period": period.iter().filter(|e| e.outcome == Outcome::Denied).count(),
                "lockouts_in_period": period.iter().filter(|e| e.action == "auth.lockout").count(),
            }),
        );
        line(
            "17.04(5)",
            "Encryption of stored personal information",
            &[("encryption", true), ("unlock-kdf", true)],
            None,
            json!({
                "aead": "AES-256-GCM",
                "key_bits": 256,
                "epoch": st.epoch,
                "kdf": { "m_kib": st.kdf.m_kib, "t": st.kdf.t, "p": st.kdf.p },
            }),
        );
        line(
            "17.04(6)-(7)",
            "Firewall, security patches, malware protection",
            &[],
            Some((
                WispStatus::Attention,
                "host duties outside the vault: record them in the written program".to_owned(),
            )),
            json!({}),
        );
        line(
            "17.04(8)",
            "Education and training of employees",
            &[],
            Some((
                WispStatus::Attention,
                "the vault keeps no training record: record it in the written program".to_owned(),
            )),
            json!({}),
        );
        Ok(WispPack {
            generated_ms: now,
            from_ms,
            to_ms,
            vault_id: self.info.vault_id,
            lines,
        })
    }
}
