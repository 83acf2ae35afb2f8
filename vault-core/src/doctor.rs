//! `doctor`: the live security configuration checked against the written
//! security program (REQ-WISP-01, REQ-WISP-09). Each check names itself, so
//! a failing run says exactly what is unsafe.

use std::path::Path;

use crate::access::Role;
use crate::error::Result;
use crate::vault::Vault;

/// Severity of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Worth attention, not unsafe.
    Warn,
    /// Unsafe: `doctor` exits non-zero.
    Fail,
}

impl Level {
    /// Lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One named check and what it found.
#[derive(Clone, Debug)]
pub struct Check {
    /// Stable check name, e.g. `header-permissions`.
    pub name: &'static str,
    /// Result.
    pub level: Level,
    /// What was found (no secrets, no personal information).
    pub detail: String,
}

fn check(name: &'static str, level: Level, detail: impl Into<String>) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
    }
}

/// A year and a day, the review interval of 201 CMR 17.03(2)(i).
pub const REVIEW_INTERVAL_MS: i64 = 366 * 86_400_000;

/// The state file of the server's syslog stream of the audit trail, in the
/// vault directory (written by `pivault-server --syslog`).
pub const STREAM_STATE_FILE: &str = "audit-stream.json";

/// The server's audit stream, from its state file, when it has one: a
/// stream that could not reach its collector fails (events are not reaching
/// the log system), one that had to report a gap warns.
pub fn stream_check(dir: &Path) -> Option<Check> {
    const NAME: &str = "audit-stream";
    let bytes = std::fs::read(dir.join(STREAM_STATE_FILE)).ok()?;
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Some(check(
            NAME,
            Level::Fail,
            format!("{STREAM_STATE_FILE} is unreadable"),
        ));
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let gaps = match (n("gaps_reported"), v.get("last_gap")) {
        (0, _) => String::new(),
        (g, Some(last)) => format!(
            "; {g} gap(s) reported, the last seq {} to {} (recover them with `audit export --since`)",
            last.get("first_missing_seq")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            last.get("last_missing_seq")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        ),
        (g, None) => format!("; {g} gap(s) reported"),
    };
    Some(if s("state") == "up" {
        let level = if n("gaps_reported") > 0 {
            Level::Warn
        } else {
            Level::Ok
        };
        check(
            NAME,
            level,
            format!(
                "streaming to {}, last seq sent {}{gaps}",
                s("target"),
                n("last_sent_seq")
            ),
        )
    } else {
        check(
            NAME,
            Level::Fail,
            format!(
                "the audit stream to {} is failing since {} ({}); last seq sent {}, {} queued, {} dropped{gaps}",
                s("target"),
                s("down_since"),
                s("last_error"),
                n("last_sent_seq"),
                n("queued"),
                n("dropped")
            ),
        )
    })
}

/// `seq 12-15 (named by 16), ...`, the last few when there are many.
pub fn unvouched_list(u: &[crate::audit::Unvouched]) -> String {
    const SHOWN: usize = 5;
    let mut parts: Vec<String> = u
        .iter()
        .rev()
        .take(SHOWN)
        .rev()
        .map(|u| format!("seq {}-{} (named by {})", u.from, u.to, u.named_by))
        .collect();
    if u.len() > SHOWN {
        parts.insert(0, format!("{} earlier", u.len() - SHOWN));
    }
    parts.join(", ")
}

/// Checks that need no passphrase: file and directory permissions.
pub fn file_checks(dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, path) in [
        ("vault-dir-permissions", dir.to_path_buf()),
        ("header-permissions", dir.join("header")),
    ] {
        out.push(match crate::fsutil::check_private(&path) {
            Ok(()) => check(name, Level::Ok, format!("{} is private", path.display())),
            Err(e) => check(name, Level::Fail, e.to_string()),
        });
    }
    out
}

/// The custodian's passphrase (or key) file must be readable by its owner
/// alone: anyone else who can read it holds every key of the vault. A
/// passphrase typed at a prompt leaves no file to check.
pub fn passphrase_file_check(file: Option<&Path>) -> Check {
    const NAME: &str = "passphrase-file";
    match file {
        None => check(NAME, Level::Ok, "no passphrase file (typed at a prompt)"),
        Some(f) => match crate::secret::check_private_file(f) {
            Ok(()) => check(
                NAME,
                Level::Ok,
                format!("{} is readable by its owner only", f.display()),
            ),
            Err(e) => check(NAME, Level::Fail, format!("{}: {e}", f.display())),
        },
    }
}

/// Every check on an open vault, at time `now_ms`.
pub fn checks(vault: &Vault, now_ms: i64) -> Result<Vec<Check>> {
    let st = vault.security_status()?;
    let mut out = file_checks(vault.dir());
    // A keystore on a cluster: the settings its purge depends on, and
    // whether every member can be verified now.
    for (name, level, detail) in vault.keystore().engine_checks()? {
        out.push(check(name, level, detail));
    }
    for (name, level, detail) in vault.records_engine_checks()? {
        out.push(check(name, level, detail));
    }
    out.push(check(
        "records-engine",
        Level::Ok,
        match vault.records_engine() {
            "rocksdb" => "records, users and certificates in the vault directory (embedded RocksDB)",
            _ => "records, users and certificates on the PostgreSQL records cluster (records.json); the audit trail and the header stay in the vault directory",
        },
    ));
    out.push(check(
        "encryption",
        Level::Ok,
        format!(
            "AES-256-GCM envelopes, one 256-bit key per record version, {} key buckets, key epoch {}",
            st.buckets, st.epoch
        ),
    ));
    out.push(if st.kdf.meets_floor() {
        check("unlock-kdf", Level::Ok, format!("Argon2id m={} KiB t={} p={}", st.kdf.m_kib, st.kdf.t, st.kdf.p))
    } else {
        check(
            "unlock-kdf",
            Level::Fail,
            format!(
                "Argon2id m={} KiB t={} below the floor m=19456 KiB t=2 (vault created with --insecure-fast-kdf?)",
                st.kdf.m_kib, st.kdf.t
            ),
        )
    });
    out.push(if (1..=10).contains(&st.lockout.max_failures) {
        check(
            "lockout",
            Level::Ok,
            format!(
                "{} failures lock for {} min, doubling",
                st.lockout.max_failures,
                st.lockout.base_lock_ms / 60_000
            ),
        )
    } else {
        check(
            "lockout",
            Level::Fail,
            format!(
                "lock-out after {} failures is disabled or too lax",
                st.lockout.max_failures
            ),
        )
    });
    let count = |r: Role| {
        st.active_by_role
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, n)| *n)
    };
    out.push(if count(Role::Officer) > 0 {
        check(
            "security-officer",
            Level::Ok,
            format!("{} active officer(s)", count(Role::Officer)),
        )
    } else {
        check(
            "security-officer",
            Level::Fail,
            "no active security officer: personal-information writes are refused",
        )
    });
    out.extend(two_factor_checks(vault)?);
    out.push(service_check(vault)?);
    out.extend(wisp_checks(vault, now_ms)?);
    out.push(check(
        "roles",
        Level::Ok,
        st.active_by_role
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let report = vault.verify_trail()?;
    out.push(if report.ok() && !report.unvouched.is_empty() {
        let named: u64 = report.unvouched.iter().map(|u| u.to - u.from + 1).sum();
        check(
            "audit-trail",
            Level::Warn,
            format!(
                "{} events, chain and checkpoints verified; {named} of them the vault does not vouch for \
                 (found after its last checkpoint when it opened: {}): an unclean stop, or lines someone \
                 with the files or the database role appended",
                report.events,
                unvouched_list(&report.unvouched)
            ),
        )
    } else if report.ok() {
        check(
            "audit-trail",
            Level::Ok,
            format!(
                "{} events, chain and checkpoints verified, records-database checkpoint at seq {}, {} outside heads confirmed",
                report.events, report.anchored_seq, report.heads_confirmed
            ),
        )
    } else {
        check(
            "audit-trail",
            Level::Fail,
            format!(
                "verification failed at seq {}: {}",
                report.first_bad_seq.unwrap_or(0),
                report.problem.unwrap_or_default()
            ),
        )
    });
    out.push(match vault.check_sealed_state() {
        Ok((d, Some(why))) => check(
            "sealed-rows",
            Level::Fail,
            format!(
                "{} sealed configuration rows add up to the state digest (generation {}), but the trail cannot show that they are not an older copy: {why}",
                d.rows, d.generation
            ),
        ),
        Ok((d, None)) => check(
            "sealed-rows",
            Level::Ok,
            format!(
                "{} sealed configuration rows add up to the state digest (generation {}), none older than the trail names",
                d.rows, d.generation
            ),
        ),
        Err(e) => check("sealed-rows", Level::Fail, e.to_string()),
    });
    out.push(match vault.backup_check() {
        Ok((_, keyless, _)) if !keyless.is_empty() => check(
            "backups",
            Level::Fail,
            format!(
                "{} active backup(s) without their key in the keystore (deleted without the vault: not restorable): {}",
                keyless.len(),
                keyless.join(", ")
            ),
        ),
        Ok((active, _, unverified)) if !unverified.is_empty() => check(
            "backups",
            Level::Warn,
            format!(
                "{active} active; {} whose erasure is not yet verified (residual copies, tried again at every expiry run): {}",
                unverified.len(),
                unverified.join(", ")
            ),
        ),
        Ok((active, _, _)) => check(
            "backups",
            Level::Ok,
            format!("{active} active, each with its key; none awaiting erasure"),
        ),
        Err(e) => check("backups", Level::Fail, e.to_string()),
    });
    out.push(match st.last_review_ms {
        Some(t) if now_ms - t <= REVIEW_INTERVAL_MS => check(
            "security-review",
            Level::Ok,
            format!("last review {}", crate::clock::format_ms(t)),
        ),
        Some(t) => check(
            "security-review",
            Level::Warn,
            format!(
                "last review {} is over a year old (201 CMR 17.03(2)(i))",
                crate::clock::format_ms(t)
            ),
        ),
        None => check(
            "security-review",
            Level::Warn,
            "no security review recorded yet (`pivault review`)",
        ),
    });
    let m = vault.maintenance_status()?;
    out.push(if m.within_bound(now_ms) {
        check(
            "key-residue",
            Level::Ok,
            format!(
                "{} bucket(s) hold old keys of updated records, rotated within {} h (oldest mark {}); no orphaned key",
                m.dirty_buckets,
                m.bound_hours,
                m.oldest_dirty_ms
                    .map(crate::clock::format_ms)
                    .unwrap_or_else(|| "none".into())
            ),
        )
    } else {
        check(
            "key-residue",
            Level::Fail,
            format!(
                "{} orphaned key(s); {} bucket(s) marked by updates, oldest {} (bound {} h): run `pivault maintenance run`",
                m.orphan_keys,
                m.dirty_buckets,
                m.oldest_dirty_ms
                    .map(crate::clock::format_ms)
                    .unwrap_or_else(|| "none".into()),
                m.bound_hours
            ),
        )
    });
    out.push(if m.journal_entries == 0 {
        check("write-journal", Level::Ok, "every stored change has its audit event")
    } else {
        check(
            "write-journal",
            Level::Warn,
            format!(
                "{} change(s) await their audit confirmation (in flight, or reconciled at the next open)",
                m.journal_entries
            ),
        )
    });
    out.push(check(
        "durability",
        Level::Ok,
        if st.sync {
            "every write fsynced (survives power loss)"
        } else {
            "writes survive a process kill; use --sync to survive power loss"
        },
    ));
    out.push(check("tls", Level::Ok, "no network listener in the CLI"));
    out.extend(stream_check(vault.dir()));
    Ok(out)
}

/// An active service account unused this long is a credential no script
/// needs any more: `doctor` warns so that it is revoked (17.04 (1)).
pub const SERVICE_IDLE_WARN_MS: i64 = 90 * 86_400_000;

/// The service accounts and their last use; a warning for an active one
/// idle past [`SERVICE_IDLE_WARN_MS`].
/// The two-factor policy against the default (REQ-AUTH-07), and the
/// people it covers who have not enrolled: they can sign in only to enrol,
/// so until they do, the vault has staff who cannot work and, if the policy
/// was only just raised, sessions that were opened without a code.
fn two_factor_checks(vault: &Vault) -> Result<Vec<Check>> {
    let policy = vault.two_factor_policy()?;
    let default = crate::access::TwoFactorPolicy::default();
    let uncovered: Vec<&str> = default
        .required
        .iter()
        .filter(|r| !policy.requires(**r))
        .map(|r| r.as_str())
        .collect();
    let required = if policy.required.is_empty() {
        "no role".to_owned()
    } else {
        policy.roles().join(", ")
    };
    let mut out = vec![if uncovered.is_empty() {
        check(
            "two-factor-policy",
            Level::Ok,
            format!(
                "required for {required}; service accounts sign in by token without one (see service-accounts)"
            ),
        )
    } else {
        check(
            "two-factor-policy",
            Level::Warn,
            format!(
                "required for {required}, not for {}: set `pivault policy two-factor --require admin,officer,contractor` (201 CMR 17.04(1), FTC Safeguards Rule)",
                uncovered.join(", ")
            ),
        )
    }];
    let lacking = vault.users_lacking_two_factor()?;
    out.push(if lacking.is_empty() {
        check(
            "two-factor-enrolment",
            Level::Ok,
            "every active user whose role requires a second factor has one",
        )
    } else {
        check(
            "two-factor-enrolment",
            Level::Warn,
            format!(
                "{} user(s) must enrol at their next sign-in (`pivault two-factor enrol`): {}",
                lacking.len(),
                lacking
                    .iter()
                    .map(|(u, r)| format!("{u} ({r})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    });
    Ok(out)
}

fn service_check(vault: &Vault) -> Result<Check> {
    let now = vault.now_ms();
    let accounts = vault.service_accounts()?;
    let active: Vec<_> = accounts
        .iter()
        .filter(|a| a.state == crate::access::UserState::Active)
        .collect();
    if active.is_empty() {
        return Ok(check(
            "service-accounts",
            Level::Ok,
            format!("none active ({} revoked)", accounts.len()),
        ));
    }
    let mut idle = 0;
    let orphaned: Vec<&str> = active
        .iter()
        .filter(|a| a.issuer_disabled)
        .map(|a| a.username.as_str())
        .collect();
    let list: Vec<String> = active
        .iter()
        .map(|a| {
            let since = a.last_used_ms.unwrap_or(a.created_ms);
            if now - since > SERVICE_IDLE_WARN_MS {
                idle += 1;
            }
            format!(
                "{} ({}, last used {})",
                a.username.as_str(),
                a.role,
                a.last_used_ms
                    .map_or_else(|| "never".to_owned(), crate::clock::format_ms)
            )
        })
        .collect();
    let detail = format!("{} active: {}", active.len(), list.join(", "));
    Ok(if !orphaned.is_empty() {
        // 17.03(2)(e): a terminated employee's access ends; a token they
        // were shown is access they may still hold.
        check(
            "service-accounts",
            Level::Fail,
            format!(
                "{detail}; the token of {} was issued to a user now disabled: rotate it (pivault service rotate NAME)",
                orphaned.join(", ")
            ),
        )
    } else if idle > 0 {
        check(
            "service-accounts",
            Level::Warn,
            format!("{detail}; {idle} unused for 90 days: revoke what no script needs"),
        )
    } else {
        check("service-accounts", Level::Ok, detail)
    })
}

/// The checks behind the WISP pack's lines on terminated employees,
/// service providers and incidents (201 CMR 17.03(2)(e), (f), (j)).
fn wisp_checks(vault: &Vault, now_ms: i64) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let live = vault.disabled_users_with_sessions()?;
    out.push(if live.is_empty() {
        check(
            "terminated-sessions",
            Level::Ok,
            "no session row is bound to a disabled user's current generation",
        )
    } else {
        check(
            "terminated-sessions",
            Level::Warn,
            format!(
                "{} disabled user(s) hold a session row still bound to the account: {} (refused by the \
                 disabled flag alone; the disable did not retire their sessions)",
                live.len(),
                live.join(", ")
            ),
        )
    });
    let contractors = vault.contractor_evidence()?;
    let keyless: Vec<&str> = contractors
        .iter()
        .filter(|c| c.key_fingerprint.is_none())
        .map(|c| c.username.as_str())
        .collect();
    out.push(if keyless.is_empty() {
        check(
            "contractor-keys",
            Level::Ok,
            format!("{} active contractor(s), each with a registered key", contractors.len()),
        )
    } else {
        check(
            "contractor-keys",
            Level::Warn,
            format!(
                "contractor(s) without a registered key, who cannot co-sign what they dispose of: {} \
                 (pivault contractor assign NAME --public-key FILE)",
                keyless.join(", ")
            ),
        )
    });
    let missing = vault.incidents_missing()?;
    let incidents = vault.incident_rows()?;
    let overdue = incidents
        .iter()
        .filter(|i| i.review.is_none() && now_ms - i.opened_ms > crate::vault::REVIEW_DUE_MS)
        .count();
    out.push(if !missing.is_empty() {
        check(
            "incident-register",
            Level::Fail,
            format!(
                "{} incident(s) opened in the audit trail are missing from the register: {}",
                missing.len(),
                missing.join(", ")
            ),
        )
    } else if overdue > 0 {
        check(
            "incident-register",
            Level::Warn,
            format!(
                "{overdue} incident(s) open over 30 days without the post-incident review (201 CMR 17.03(2)(j))"
            ),
        )
    } else {
        check(
            "incident-register",
            Level::Ok,
            format!(
                "{} incident(s), {} reviewed",
                incidents.len(),
                incidents.iter().filter(|i| i.review.is_some()).count()
            ),
        )
    });
    Ok(out)
}
