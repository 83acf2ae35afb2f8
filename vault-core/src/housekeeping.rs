//! The server's own upkeep (issue 10): expire due backups, remove expired
//! sessions and tokens, and run due retention on the schedule an officer
//! sets in the vault (off by default). Each job is a system action
//! in the audit trail; `pivault-server` runs them on its timers.
//!
//! This is a child module of `vault` so it can reach the facade's fields.

use serde::{Deserialize, Serialize};

use super::maintenance::system_ctx;
use super::{Session, Vault};
use crate::access::{Permission, Role, SessionRow};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::store;

use super::disposal::{DisposalOutcome, DisposalParties, DisposalRequest, DisposalScope};

/// The retention schedule in `meta` (set by a person, read by the server).
const SCHEDULE_KEY: &[u8] = crate::store::META_RETENTION_SCHEDULE;
/// When the schedule last ran, apart from the setting so that a run never
/// writes back over a schedule changed (or turned off) meanwhile.
const LAST_RUN_KEY: &[u8] = b"setting:retention-schedule:last-run";

/// Longest interval a schedule may name (a year), so `every_hours` in
/// milliseconds never overflows and a typo is refused.
pub const MAX_SCHEDULE_HOURS: u32 = 24 * 366;

/// The title the certificate of a scheduled run gives its operator.
const SCHEDULED_OPERATOR_TITLE: &str = "retention schedule owner (the disposal was run by pivault-server on the schedule this user set)";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ScheduleRow {
    every_hours: u32,
    set_by: String,
    set_ms: i64,
}

/// The retention schedule as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSchedule {
    /// Hours between runs.
    pub every_hours: u32,
    /// Who set it: the batches it runs name this user as operator.
    pub set_by: UserId,
    /// When it was set, unix ms.
    pub set_ms: i64,
    /// When it last ran, unix ms (`None`: not yet; it runs at the server's next check).
    pub last_run_ms: Option<i64>,
}

impl Vault {
    fn schedule_row(&self) -> Result<Option<ScheduleRow>> {
        self.store
            .get(store::CF_META, SCHEDULE_KEY)?
            .map(|b| serde_json::from_slice(&b).map_err(|_| Error::Integrity("retention schedule")))
            .transpose()
    }

    fn schedule_last_run(&self) -> Result<Option<i64>> {
        Ok(self
            .store
            .get(store::CF_META, LAST_RUN_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(i64::from_be_bytes))
    }

    /// Sets (or, with `None`, turns off) the schedule on which the server
    /// disposes of everything past retention: officers (who hold
    /// `RunRetention`), since the batches run under their name; an admin,
    /// who may not dispose, may not schedule disposals either. Off by
    /// default. Audited.
    pub fn set_retention_schedule(&self, s: &Session, every_hours: Option<u32>) -> Result<()> {
        self.authorize(s, Some(Permission::RunRetention))?;
        if let Some(h) = every_hours
            && !(1..=MAX_SCHEDULE_HOURS).contains(&h)
        {
            return Err(Error::invalid(
                "the retention schedule must be between 1 hour and 366 days",
            ));
        }
        let row = every_hours.map(|h| {
            serde_json::to_vec(&ScheduleRow {
                every_hours: h,
                set_by: s.user.to_string(),
                set_ms: self.now(),
            })
            .expect("serialisable")
        });
        let target = every_hours.map_or_else(|| "off".to_owned(), |h| format!("every_hours:{h}"));
        self.write_audited(
            s,
            store::CF_META,
            SCHEDULE_KEY,
            row.as_deref(),
            ("retention.schedule", vec![target], None),
        )
    }

    /// The retention schedule, `None` when off.
    pub fn retention_schedule(&self, s: &Session) -> Result<Option<RetentionSchedule>> {
        self.authorize(s, None)?;
        let Some(row) = self.schedule_row()? else {
            return Ok(None);
        };
        Ok(Some(RetentionSchedule {
            every_hours: row.every_hours,
            set_by: row.set_by.parse()?,
            set_ms: row.set_ms,
            last_run_ms: self.schedule_last_run()?,
        }))
    }

    /// Disposes of everything past retention when the schedule is on and a
    /// run is due (none yet, or `every_hours` since the last). The batch runs
    /// under the user who set the schedule, who must still be active and
    /// still hold the authority to set it (a disabled admin's schedule stops,
    /// audited as a failure); its certificate names them as operator, on the
    /// system channel. The run itself is audited as `retention.scheduled_run`
    /// (system actor). `Ok(None)`: off, or not due.
    pub fn run_scheduled_retention(&self) -> Result<Option<DisposalOutcome>> {
        let Some(row) = self.schedule_row()? else {
            return Ok(None);
        };
        let now = self.now();
        let every_ms = i64::from(row.every_hours) * 3_600_000;
        if self
            .schedule_last_run()?
            .is_some_and(|t| now - t < every_ms && now >= t)
        {
            return Ok(None);
        }
        // Recorded first: a run that fails is tried again a period later,
        // not on every tick.
        self.store
            .put(store::CF_META, LAST_RUN_KEY, &now.to_be_bytes())?;
        let ctx = system_ctx();
        let r = (|| {
            let user: UserId = row.set_by.parse()?;
            let urow = self.user_row(user)?.ok_or(Error::SessionInvalid)?;
            let s = Session {
                user,
                generation: urow.generation,
                ctx: ctx.clone(),
                enrol_only: false,
            };
            self.authorize(&s, None)?;
            let role = Role::parse(&urow.role)?;
            if !role.permits(Permission::RunRetention) {
                return Err(Error::PermissionDenied("run a retention schedule"));
            }
            self.dispose_authorized(
                &s,
                &DisposalRequest {
                    scope: DisposalScope::PastRetention,
                    parties: DisposalParties {
                        operator_title: Some(SCHEDULED_OPERATOR_TITLE.to_owned()),
                        ..DisposalParties::default()
                    },
                    dry_run: false,
                },
                None,
            )
        })();
        let targets = match &r {
            Ok(o) => vec![
                format!("records:{}", o.records.len()),
                o.certificate_id.map(|c| c.to_string()).unwrap_or_default(),
            ],
            Err(_) => vec![],
        };
        self.audit(
            None,
            &ctx,
            "retention.scheduled_run",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r.map(Some)
    }

    /// Deletes every stored session (API token) that can no longer be used:
    /// past its expiry or idle timeout, of a disabled user, or of an older
    /// password generation. `session_from_token` refuses those already; the
    /// sweep keeps their rows from piling up. Audited (system) when it
    /// removed any. Returns how many it removed.
    pub fn sweep_sessions(&self) -> Result<u64> {
        let now = self.now();
        let mut removed = 0u64;
        for (key, value) in self.store.scan_prefix(store::CF_SESSIONS, &[])? {
            let usable = serde_json::from_slice::<SessionRow>(&value)
                .ok()
                .is_some_and(|row| {
                    let alive = row.alive(now, super::SESSION_IDLE_MS);
                    alive
                        && row
                            .user
                            .parse::<UserId>()
                            .ok()
                            .and_then(|u| self.session_user(u).ok().flatten())
                            .is_some_and(|u| !u.disabled && u.generation == row.generation)
                });
            if !usable {
                self.store.delete(store::CF_SESSIONS, &key)?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.audit(
                None,
                &system_ctx(),
                "session.expire",
                vec![format!("removed:{removed}")],
                Ok(()),
                None,
            )?;
        }
        Ok(removed)
    }

    /// Stored sessions (API tokens), usable or not: for `doctor` and for
    /// checking that the sweep removes them. No session needed (custodian).
    pub fn stored_sessions(&self) -> Result<u64> {
        Ok(self.store.scan_prefix(store::CF_SESSIONS, &[])?.len() as u64)
    }

    /// Destroys the key of every backup past its expiry (each audited as
    /// `backup.expire`, system actor). Returns how many.
    pub fn run_backup_expiry(&self) -> Result<u64> {
        self.expire_due_backups(&system_ctx())
    }
}
