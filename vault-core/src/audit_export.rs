//! `audit export` on the [`Vault`] facade, and the hook the server's
//! syslog stream hangs on the trail (`crate::siem` renders both).

use super::*;
use crate::audit::{AuditSink, SignedHead, TrailReader};
use crate::siem::ExportBundle;

/// Where an export starts: the first event at or after a time, or a seq
/// (the default: the whole trail).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStart {
    /// The first event at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// The first event at or after this seq.
    pub from_seq: Option<u64>,
}

impl Vault {
    /// Exports a span of the audit trail for a log system (officer,
    /// auditor, an `audit-exporter` service: `ExportAudit`): from the last signed
    /// checkpoint before the requested start (so the file opens with a
    /// signature and may hold a few earlier events) up to a checkpoint
    /// signed now, which covers this export's own `audit.export` event.
    /// The export is audited before anything is read (fail closed).
    pub fn audit_export(&self, s: &Session, start: ExportStart) -> Result<ExportBundle> {
        self.authorize(s, Some(Permission::ExportAudit))?;
        let mut targets = Vec::new();
        if let Some(t) = start.since_ms {
            targets.push(format!("since:{t}"));
        }
        if let Some(q) = start.from_seq {
            targets.push(format!("from-seq:{q}"));
        }
        self.audit(Some(s.user), &s.ctx, "audit.export", targets, Ok(()), None)?;
        self.checkpoint_now()?;
        let mut log = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
        log.wait_for_checkpoint();
        let heads = log.signed_heads()?;
        let end = heads.last().map_or(0, |h| h.seq);
        let mut wanted = start.from_seq.unwrap_or(1).max(1);
        if let Some(t) = start.since_ms {
            let first = log.events(&EventFilter {
                from_ms: Some(t),
                from_seq: Some(wanted),
                limit: Some(1),
                ..EventFilter::default()
            })?;
            wanted = first.first().map_or(end + 1, |e| e.seq).max(wanted);
        }
        wanted = wanted.min(end.max(1));
        let opening: Option<SignedHead> = heads.iter().rev().find(|h| h.seq < wanted).cloned();
        let from = opening.as_ref().map_or(1, |h| h.seq + 1);
        let events = log.events(&EventFilter {
            from_seq: Some(from),
            to_seq: Some(end),
            ..EventFilter::default()
        })?;
        drop(log);
        let events = chained(opening.as_ref().map_or([0u8; 32], |h| h.head), events);
        let checkpoints = heads
            .into_iter()
            .filter(|h| h.seq >= from && h.seq <= end)
            .collect();
        Ok(ExportBundle {
            opening,
            events,
            checkpoints,
        })
    }

    /// Whether `s` may see the state of the audit stream (whoever may
    /// export the audit trail).
    pub fn audit_stream_allowed(&self, s: &Session) -> Result<()> {
        self.authorize(s, Some(Permission::ExportAudit)).map(|_| ())
    }

    /// Tells `sink` of every audit event appended from now on (the server's
    /// syslog stream); returns the seq of the last event already appended,
    /// where the stream starts.
    pub fn set_audit_sink(&self, sink: Option<std::sync::Arc<dyn AuditSink>>) -> u64 {
        let mut log = self.audit.lock().expect("audit lock");
        log.set_sink(sink);
        log.head_seq()
    }
}

impl Vault {
    /// What the server's stream sends first at start: the last signed
    /// checkpoint at or before `after` (the last seq a previous run sent,
    /// or the head), every event after it up to `upto` with the chain hash
    /// before each, and the checkpoints among them — so that what a
    /// collector keeps opens with a signature, like an export. The
    /// system's own forwarding of its trail, not a person reading it, so
    /// not audited as `audit.read`.
    pub fn audit_backlog(&self, after: u64, upto: u64) -> Result<ExportBundle> {
        let log = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
        backlog(&log.reader(), after, upto)
    }
}

/// [`Vault::audit_backlog`], read through `trail`: also what a deletion's
/// resume hands over, read where the trail is kept once the vault's keys
/// are gone.
pub(crate) fn backlog(trail: &TrailReader, after: u64, upto: u64) -> Result<ExportBundle> {
    let heads = trail.signed_heads()?;
    let opening = heads.iter().rev().find(|h| h.seq <= after).cloned();
    let from = opening.as_ref().map_or(0, |h| h.seq);
    let events = if upto > from {
        trail.events(from + 1, upto)?
    } else {
        Vec::new()
    };
    let events = chained(opening.as_ref().map_or([0u8; 32], |h| h.head), events);
    let checkpoints = heads
        .into_iter()
        .filter(|h| h.seq > from && h.seq <= upto)
        .collect();
    Ok(ExportBundle {
        opening,
        events,
        checkpoints,
    })
}

/// Each event with the chain hash before it, starting from `prev` (the
/// opening checkpoint's head, or zeros from seq 1).
fn chained(mut prev: [u8; 32], events: Vec<AuditEvent>) -> Vec<(AuditEvent, [u8; 32])> {
    events
        .into_iter()
        .map(|e| {
            let p = prev;
            prev = e.hash;
            (e, p)
        })
        .collect()
}
