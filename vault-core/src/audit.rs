//! The audit trail: hash-chained events and signed checkpoints (REQ-MON-01,
//! REQ-MON-02, REQ-WISP-06, REQ-WISP-10).
//!
//! This module owns the `<vault>/audit/` directory: appending events (fail
//! closed), resuming after a crash, signing checkpoints with the vault's
//! Ed25519 audit key, reading events back for `audit log` and reports, and
//! verifying a whole directory offline with only the public key. Events carry
//! IDs, codes and addresses, never personal information, so the trail survives
//! disposal intact; keeping PI out is the caller's duty, and [`check_reason`]
//! guards the one free-text field.
//!
//! # On-disk format (version 1)
//!
//! The format is stable and simple enough for a third party to verify:
//!
//! * **Segments.** Events live in `seg-00000001.log`, `seg-00000002.log`, …
//!   (`seg-{:08}.log`, numbered from 1, read in numeric order). A new segment
//!   starts when the next line would push the current one past
//!   [`SEGMENT_MAX_BYTES`] (8 MiB). Directories are created 0700, files 0600.
//! * **Event lines.** One event per line: compact JSON with its fields in this
//!   fixed order — `seq`, `time_ms`, `actor` (user UUID or null), `channel`
//!   (`cli`/`http`/`system`), `source`, `action`, `targets` (array of IDs),
//!   `outcome` (`success`/`denied`/`failed`), `code`, `reason`, `request_id` —
//!   then one space, then the event's chain hash as 64 lowercase hex digits,
//!   then `\n`. Nothing else appears on a line.
//! * **Hash chain.** `hash_n = SHA-256("pivault-audit-v1" || hash_{n-1} || json_n)`
//!   where `json_n` is the exact JSON bytes of line `n` (everything before the
//!   last space) and `hash_0` is 32 zero bytes. The previous hash is not stored
//!   on the line: a verifier recomputes the chain, so an edit anywhere breaks
//!   every later link. Sequence numbers start at 1 and increase by exactly 1
//!   across segments.
//! * **Checkpoints.** `checkpoints.log` holds one line per checkpoint, compact
//!   JSON `{"seq":…,"head":"<64 hex>","time_ms":…,"sig":"<128 hex>"}`, where
//!   `sig` is an Ed25519 signature over
//!   `"pivault-audit-checkpoint-v1" || seq (u64 big-endian) || head (32 bytes) || time_ms (i64 big-endian)`.
//!   That is version 1, still read. This build writes version 2,
//!   `{"v":2,"seq":…,"head":"<64 hex>","prev":"<64 hex>","time_ms":…,"sig":"<128 hex>"}`,
//!   signed over `"pivault-audit-checkpoint-v2" || seq || head || time_ms || prev`,
//!   where `prev` is the hash of the previous checkpoint line (32 zero bytes
//!   for the first) and a line's hash is
//!   `SHA-256("pivault-audit-checkpoint-hash-v1" || line without its newline)`:
//!   the checkpoints form a chain of their own, so none can be removed or
//!   replaced unseen. A version 2 line may follow version 1 lines, never the
//!   reverse. A checkpoint is written every [`CHECKPOINT_EVERY`] events and on
//!   demand ([`AuditLog::checkpoint`], e.g. at clean close and at open after an
//!   unclean stop); checkpoint seqs strictly increase, and at most
//!   [`MAX_UNCHECKPOINTED`] events may go without one. All hex is lowercase
//!   and every line is in the canonical form above, so any changed byte is
//!   detected.
//!
//! # What verification proves
//!
//! [`verify`] names the first bad sequence number for an edited, inserted,
//! deleted or reordered event and for a log truncated before its last signed
//! checkpoint. The chain is unkeyed, so someone who rewrites an event *and
//! recomputes every later hash* is caught only by the next signed checkpoint,
//! and the report can then only say "after the last checkpoint that still
//! matches"; events after the last checkpoint can be cut off without trace.
//! That is why checkpoints are frequent and one is written at clean close.
//!
//! The files alone cannot show that `checkpoints.log` was deleted along with
//! a truncation or a re-chained edit. [`verify_anchored`] therefore also
//! cross-checks copies kept elsewhere ([`Anchors`]: the latest checkpoint in
//! the records database, the heads named by certificates and by time-stamped
//! exports); ARCHITECTURE.md, "Audit trail", lists what each detects.
//!
//! # Crash behaviour
//!
//! Each append is a single `write` of a whole line, so a process kill leaves
//! either the whole line or a torn tail; with `sync` each append is also
//! fsynced, which survives a power loss. On open a torn last line (no trailing
//! newline) is cut off: it was never acknowledged. Before a checkpoint is
//! written the segment is always fsynced (and a segment is fsynced before the
//! next one starts), so a surviving checkpoint never vouches for events that a
//! power loss took away.
//!
//! The automatic checkpoint every [`CHECKPOINT_EVERY`] events is signed at
//! once but written by a short-lived background thread, because its two
//! fsyncs (several milliseconds on ordinary disks) would otherwise stall the
//! one audited call that happens to be number 256. At most one is in flight,
//! and the event that brings the next one due waits for it before it is
//! written; the next append picks up its outcome, and a failed one is retried
//! on the next append, which then fails closed. Clean close, [`AuditLog::checkpoint`]
//! and dropping the log wait for it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::{UserId, VaultId};
use crate::keystore::postgres::PgConfig;

mod cluster;
pub(crate) mod group;

/// A signed checkpoint is written automatically after every this many events.
pub const CHECKPOINT_EVERY: u64 = 256;

/// A segment is closed and the next one started before it would exceed this
/// size, so no single file grows without bound and old segments can be
/// archived whole.
pub const SEGMENT_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Prefix of the target by which the first event after a change of the
/// sealed configuration rows names the state digest's new generation.
pub const STATE_TARGET: &str = "state:";

/// The action of the event by which a vault, opening a trail whose last
/// events no checkpoint of its own covers (an unclean stop, a takeover, or
/// lines someone else appended), says it does not vouch for them, before it
/// signs a checkpoint over them. Its one target names the events,
/// `events:<first>-<last>`.
pub const UNVOUCHED_ACTION: &str = "audit.unvouched";

/// Events `from..=to` as the target of an [`UNVOUCHED_ACTION`] event.
pub fn unvouched_target(from: u64, to: u64) -> String {
    format!("events:{from}-{to}")
}

/// The events an [`UNVOUCHED_ACTION`] event names, when it is one (the
/// vault's, with no actor) and names a range before itself.
pub(crate) fn unvouched_range(ev: &AuditEvent) -> Option<Unvouched> {
    if ev.action != UNVOUCHED_ACTION || ev.actor.is_some() || ev.channel != Channel::System {
        return None;
    }
    let (from, to) = ev
        .targets
        .first()?
        .strip_prefix("events:")?
        .split_once('-')?;
    let (from, to) = (from.parse().ok()?, to.parse().ok()?);
    (1 <= from && from <= to && to < ev.seq).then_some(Unvouched {
        from,
        to,
        named_by: ev.seq,
    })
}

/// Drops a disowning that is itself among the events a later one disowns
/// (the open's checkpoint failed, or someone else wrote it): it says
/// nothing more.
pub(crate) fn drop_superseded(unvouched: &mut Vec<Unvouched>) {
    let ranges = unvouched.clone();
    unvouched.retain(|u| {
        !ranges
            .iter()
            .any(|o| o.named_by > u.named_by && o.from <= u.named_by && u.named_by <= o.to)
    });
}

/// Events of the trail its vault does not vouch for: found after the last
/// checkpoint when the vault opened, and named by its event `named_by`.
/// The chain and the checkpoints cover them like any others; the vault
/// cannot tell its own events written before an unclean stop from lines
/// appended by someone holding the files or the database role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unvouched {
    /// The first event not vouched for.
    pub from: u64,
    /// The last.
    pub to: u64,
    /// The event that names them.
    pub named_by: u64,
}

/// Maximum length of an event's `reason`, in characters.
pub const REASON_MAX_CHARS: usize = 200;

/// Domain separation for the event hash chain.
const CHAIN_DOMAIN: &[u8] = b"pivault-audit-v1";
/// Domain separation for checkpoint signatures, so an audit signature can
/// never be replayed as a certificate signature or vice versa.
const CHECKPOINT_DOMAIN: &[u8] = b"pivault-audit-checkpoint-v1";
/// Domain separation for chained (version 2) checkpoint signatures, which
/// also sign the previous checkpoint's hash.
const CHECKPOINT_DOMAIN_V2: &[u8] = b"pivault-audit-checkpoint-v2";
/// Domain separation for the hash of a checkpoint line (what the next
/// checkpoint chains to and what the records database keeps).
const CHECKPOINT_HASH_DOMAIN: &[u8] = b"pivault-audit-checkpoint-hash-v1";
/// File name of the checkpoint log inside the audit directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";

/// At most this many events may follow a checkpoint (or the start of the
/// trail) before the next one: the automatic interval plus one more for the
/// background write (a checkpoint in flight when the process dies), not
/// counting the disowning events of opens after an unclean stop. More
/// events without a checkpoint mean one was removed.
pub const MAX_UNCHECKPOINTED: u64 = 2 * CHECKPOINT_EVERY;
/// Length of " " + 64 hex digits at the end of an event line.
const HASH_SUFFIX_LEN: usize = 65;

/// Where an action came from. The CLI and the HTTP server are the two front
/// ends; `System` covers the engine's own actions (maintenance ratchet,
/// scheduled retention runs) that no user initiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The `pivault` command line.
    Cli,
    /// The `pivault-server` HTTP API over TCP (TLS, or plain on loopback).
    Http,
    /// The `pivault-server` API over its local Unix-domain socket: the
    /// source is the peer's kernel-reported OS user and process.
    Local,
    /// The engine itself (no front end).
    System,
}

impl Channel {
    /// The stable name stored in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Cli => "cli",
            Channel::Http => "http",
            Channel::Local => "local",
            Channel::System => "system",
        }
    }

    /// The inverse of [`Channel::as_str`].
    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "cli" => Some(Channel::Cli),
            "http" => Some(Channel::Http),
            "local" => Some(Channel::Local),
            "system" => Some(Channel::System),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited action ended. `Denied` (refused by access control,
/// lock-out or a disabled account) is kept apart from `Failed` (allowed but
/// did not succeed) because the activity report counts denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action was performed.
    Success,
    /// The action was refused by policy (permission, lock-out, disabled account).
    Denied,
    /// The action was attempted and failed (bad password, not found, error).
    Failed,
}

impl Outcome {
    /// The stable name stored in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// The inverse of [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "success" => Some(Outcome::Success),
            "denied" => Some(Outcome::Denied),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append. The log assigns the sequence number and hash.
///
/// Every field is metadata: IDs, codes, a client address. Personal
/// information must never be put here (REQ-MON-02); `reason` is checked with
/// [`check_reason`], and the other strings are limited to short printable
/// ASCII without spaces so a name or address cannot slip in as a "target".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// When the action happened, unix milliseconds (UTC).
    pub time_ms: i64,
    /// The authenticated user, or `None` (unknown user at login, system actions).
    pub actor: Option<UserId>,
    /// The front end the action came through.
    pub channel: Channel,
    /// The client address (HTTP peer), if any.
    pub source: Option<String>,
    /// What was done, e.g. `record.read`, `auth.login`, `auth.lockout`, `user.disable`, `key.epoch`.
    pub action: String,
    /// IDs of the things acted on (record, subject, user, certificate IDs, epoch numbers). IDs only.
    pub targets: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The stable error code ([`Error::code`]) when the outcome is not success.
    pub code: Option<String>,
    /// The stated reason (reveals, plaintext exports, disposals). No personal information.
    pub reason: Option<String>,
    /// The front end's request ID, to correlate with access logs.
    pub request_id: Option<String>,
}

impl NewEvent {
    /// An event with no source, targets, code, reason or request ID; set the
    /// public fields for the rest.
    pub fn new(
        time_ms: i64,
        actor: Option<UserId>,
        channel: Channel,
        action: impl Into<String>,
        outcome: Outcome,
    ) -> NewEvent {
        NewEvent {
            time_ms,
            actor,
            channel,
            source: None,
            action: action.into(),
            targets: Vec::new(),
            outcome,
            code: None,
            reason: None,
            request_id: None,
        }
    }
}

/// An event as stored: the appended fields plus its sequence number and chain hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the trail, from 1, without gaps.
    pub seq: u64,
    /// When the action happened, unix milliseconds (UTC).
    pub time_ms: i64,
    /// The authenticated user, if any.
    pub actor: Option<UserId>,
    /// The front end the action came through.
    pub channel: Channel,
    /// The client address, if any.
    pub source: Option<String>,
    /// What was done.
    pub action: String,
    /// IDs of the things acted on.
    pub targets: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code on failure or denial.
    pub code: Option<String>,
    /// The stated reason, if any.
    pub reason: Option<String>,
    /// The front end's request ID, if any.
    pub request_id: Option<String>,
    /// The chain hash after this event (`hash_seq`).
    pub hash: [u8; 32],
}

/// Which events [`AuditLog::events`] returns. Every set field must match;
/// the default returns everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events by this user.
    pub actor: Option<UserId>,
    /// Only events at or after this time (unix ms, inclusive).
    pub from_ms: Option<i64>,
    /// Only events before this time (unix ms, exclusive), so consecutive
    /// windows `[from, to)` never count an event twice.
    pub to_ms: Option<i64>,
    /// Only events whose action starts with this, e.g. `record.` or `auth.login`.
    pub action_prefix: Option<String>,
    /// Only events with seq at or after this (inclusive), for paging.
    pub from_seq: Option<u64>,
    /// Only events with seq at or before this (inclusive).
    pub to_seq: Option<u64>,
    /// At most this many events: the first ones in sequence order.
    pub limit: Option<usize>,
}

impl EventFilter {
    fn matches(&self, ev: &AuditEvent) -> bool {
        self.actor.is_none_or(|a| ev.actor == Some(a))
            && self.from_ms.is_none_or(|t| ev.time_ms >= t)
            && self.to_ms.is_none_or(|t| ev.time_ms < t)
            && self
                .action_prefix
                .as_deref()
                .is_none_or(|p| ev.action.starts_with(p))
            && self.from_seq.is_none_or(|s| ev.seq >= s)
            && self.to_seq.is_none_or(|s| ev.seq <= s)
    }
}

/// The result of [`verify`]. `events`, `checkpoints` and
/// `last_checkpoint_seq` count what was verified good before the first problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events whose sequence and chain hash verified.
    pub events: u64,
    /// Checkpoints whose signature verified and whose head matched the chain.
    pub checkpoints: u64,
    /// Seq of the last checkpoint that verified (0 if none).
    pub last_checkpoint_seq: u64,
    /// The first sequence number that is bad, missing or unvouched for, when known.
    pub first_bad_seq: Option<u64>,
    /// What is wrong, for a human; `None` when the trail verified. Several
    /// problems are joined with "; ", the earliest first.
    pub problem: Option<String>,
    /// Seq of the checkpoint held in the records database that the files
    /// confirmed (0 if none was held).
    pub anchored_seq: u64,
    /// Heads named outside the audit directory (certificates, time-stamped
    /// heads) that the chain confirmed.
    pub heads_confirmed: u64,
    /// The events the vault said it does not vouch for, among those that
    /// verified: not a failure of the trail, but not evidence of who did
    /// what either.
    pub unvouched: Vec<Unvouched>,
}

/// A signed checkpoint as exported and as kept in the records database: the
/// exact checkpoint line, so anyone can re-check its signature and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The event seq the checkpoint covers.
    pub seq: u64,
    /// The chain hash at `seq`.
    pub head: [u8; 32],
    /// The hash of the checkpoint line (what the next checkpoint chains to).
    pub checkpoint_hash: [u8; 32],
    /// When it was signed, unix ms.
    pub time_ms: i64,
    /// The Ed25519 signature.
    pub sig: [u8; 64],
    /// The checkpoint line, without its newline.
    pub line: String,
}

impl SignedHead {
    /// Parses a checkpoint line (canonical form, version 1 or 2).
    pub fn from_line(line: &[u8]) -> Option<SignedHead> {
        let cp = parse_checkpoint_line(line)?;
        Some(SignedHead {
            seq: cp.seq,
            head: cp.head,
            checkpoint_hash: cp.hash,
            time_ms: cp.time_ms,
            sig: cp.sig,
            line: String::from_utf8(line.to_vec()).ok()?,
        })
    }

    /// True when the line's signature verifies with `key`.
    pub fn signature_ok(&self, key: &VerifyingKey) -> bool {
        parse_checkpoint_line(self.line.as_bytes()).is_some_and(|cp| cp.signature_ok(key))
    }
}

/// What is kept outside the audit directory and must agree with it
/// (see ARCHITECTURE.md, "Audit trail").
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    /// The latest checkpoint written to the records database.
    pub stored: Option<SignedHead>,
    /// Heads named elsewhere: certificates of destruction, time-stamped heads.
    pub heads: Vec<NamedHead>,
    /// Problems found with the anchors themselves (an unreadable certificate,
    /// a time-stamp response that does not match its head).
    pub problems: Vec<String>,
}

/// A head (seq, chain hash) that something outside the trail vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedHead {
    /// What names it, for the report, e.g. `certificate <id>` (no personal information).
    pub what: String,
    /// The seq.
    pub seq: u64,
    /// The chain hash claimed at that seq.
    pub head: [u8; 32],
}

impl VerifyReport {
    /// True when the whole trail and every checkpoint verified.
    pub fn ok(&self) -> bool {
        self.first_bad_seq.is_none() && self.problem.is_none()
    }
}

/// Per-user activity counts over a period (REQ-WISP-06).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserActivity {
    /// The user the counts are for.
    pub user: UserId,
    /// Successful `record.read` events.
    pub reads: u64,
    /// Successful `record.reveal` events (sensitive fields shown unmasked).
    pub reveals: u64,
    /// Successful `record.export` events.
    pub exports: u64,
    /// Successful `record.create` and `record.update` events. An import
    /// writes one `record.create` per record plus a `record.import` summary,
    /// which is not counted again.
    pub writes: u64,
    /// Events of any action with outcome `Denied`.
    pub denials: u64,
    /// Successful `auth.login` events.
    pub logins: u64,
    /// `auth.login` events with outcome `Failed`.
    pub failed_logins: u64,
    /// `auth.lockout` events (whatever their outcome).
    pub lockouts: u64,
    /// This user's events in the period that the vault does not vouch for
    /// (in a range an `audit.unvouched` event names): counted above like the
    /// rest, but unproven, as an insider could have appended them
    /// ([`mark_unvouched`]).
    pub unvouched: u64,
}

impl UserActivity {
    fn empty(user: UserId) -> UserActivity {
        UserActivity {
            user,
            reads: 0,
            reveals: 0,
            exports: 0,
            writes: 0,
            denials: 0,
            logins: 0,
            failed_logins: 0,
            lockouts: 0,
            unvouched: 0,
        }
    }
}

/// Checks a stated reason before any work is done, so that an operation whose
/// audit event would be refused is refused up front. At most
/// [`REASON_MAX_CHARS`] characters, and no run of 4 or more digits: such a run
/// could be a fragment of an SSN, card or account number, and the audit trail
/// must hold no personal information (REQ-MON-02).
pub fn check_reason(reason: &str) -> Result<()> {
    check_text("reason", reason, REASON_MAX_CHARS)?;
    if reason.chars().count() > REASON_MAX_CHARS {
        return Err(Error::InvalidInput(format!(
            "reason must be at most {REASON_MAX_CHARS} characters"
        )));
    }
    let mut run = 0usize;
    for c in reason.chars() {
        if c.is_numeric() {
            run += 1;
            if run >= 4 {
                return Err(Error::InvalidInput(
                    "reason must not contain numbers of 4 or more digits (no personal information in the audit trail)"
                        .into(),
                ));
            }
        } else {
            run = 0;
        }
    }
    Ok(())
}

/// Whether `c` is a control character or a bidirectional formatting
/// character: either can make a signed certificate or an audit line read
/// differently from what it holds (a right-to-left override, a hidden line
/// break).
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// Checks free text that goes into the audit trail or a signed certificate
/// kept for years (reasons, titles, party names, contract references): at
/// most `max` characters, no control and no bidirectional formatting
/// characters. The error names the field, never the value.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<()> {
    if text.chars().count() > max {
        return Err(Error::InvalidInput(format!(
            "{field} must be at most {max} characters"
        )));
    }
    if text.chars().any(is_deceptive) {
        return Err(Error::InvalidInput(format!(
            "{field} must not contain control or bidirectional formatting characters"
        )));
    }
    Ok(())
}

/// Per-user counts of the events given (REQ-WISP-06). Filter the period with
/// [`EventFilter`] (`from_ms`, `to_ms` give `[from, to)`) before calling.
/// Events without an actor are skipped. Sorted by user ID.
pub fn activity_report(events: &[AuditEvent]) -> Vec<UserActivity> {
    let mut by_user: BTreeMap<UserId, UserActivity> = BTreeMap::new();
    for ev in events {
        let Some(user) = ev.actor else { continue };
        let a = by_user
            .entry(user)
            .or_insert_with(|| UserActivity::empty(user));
        let ok = ev.outcome == Outcome::Success;
        if ev.outcome == Outcome::Denied {
            a.denials += 1;
        }
        match ev.action.as_str() {
            "auth.login" if ok => a.logins += 1,
            "auth.login" if ev.outcome == Outcome::Failed => a.failed_logins += 1,
            "auth.lockout" => a.lockouts += 1,
            "record.read" if ok => a.reads += 1,
            "record.reveal" if ok => a.reveals += 1,
            "record.export" if ok => a.exports += 1,
            "record.create" | "record.update" if ok => a.writes += 1,
            _ => {}
        }
    }
    by_user.into_values().collect()
}

/// The ranges of events the trail's `audit.unvouched` events name (`disowning`:
/// those events, in order), a range named inside a later one left out.
pub fn unvouched_ranges(disowning: &[AuditEvent]) -> Vec<Unvouched> {
    let mut ranges: Vec<Unvouched> = disowning.iter().filter_map(unvouched_range).collect();
    drop_superseded(&mut ranges);
    ranges
}

/// Counts in `report` (from [`activity_report`] over `events`) each user's
/// events that lie in one of `ranges`: what the vault does not vouch for,
/// such as a reveal an insider appended to frame an employee.
pub fn mark_unvouched(report: &mut [UserActivity], events: &[AuditEvent], ranges: &[Unvouched]) {
    for ev in events {
        let Some(user) = ev.actor else { continue };
        if ranges.iter().any(|u| u.from <= ev.seq && ev.seq <= u.to)
            && let Some(a) = report.iter_mut().find(|a| a.user == user)
        {
            a.unvouched += 1;
        }
    }
}

/// Incident scoping from the trail (REQ-WISP-10): every target of a successful
/// `record.*` event, with how many such events named it. The caller filters by
/// actor and window first, then classifies the IDs (records, subjects, field
/// types) against the vault.
pub fn targets_touched(events: &[AuditEvent]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ev in events {
        if ev.outcome == Outcome::Success && ev.action.starts_with("record.") {
            for t in &ev.targets {
                *out.entry(t.clone()).or_insert(0) += 1;
            }
        }
    }
    out
}

thread_local! {
    /// Events appended by the current thread: a front end that runs one
    /// request on one thread can tell whether the operation it called wrote
    /// its own event (see [`appended_on_this_thread`]).
    static APPENDED_HERE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What a panic unwinds with, caught and raised again (`group.rs`).
pub(crate) type Panic = Box<dyn std::any::Any + Send + 'static>;

/// An event of a group (`AuditLog::append_all`) chained on the one before
/// it: its place among the group's outcomes, its line (hash included), and
/// whether it removes a write-journal entry.
struct Chained {
    at: usize,
    ev: NewEvent,
    hash: [u8; 32],
    line: Vec<u8>,
    forgetting: bool,
}

/// How many events this thread has appended so far (a monotonic counter).
pub fn appended_on_this_thread() -> u64 {
    APPENDED_HERE.with(|n| n.get())
}

/// Counts one event appended for this thread (by it, or by the thread
/// that wrote its group).
pub(crate) fn note_appended_here() {
    APPENDED_HERE.with(|n| n.set(n.get() + 1));
}

/// Receives each event just after it is appended (the server's syslog
/// stream). Called with the audit lock held, so events arrive in sequence
/// order; an implementation must return at once (queue the event, never do
/// I/O) because every audited operation waits for it.
pub trait AuditSink: Send + Sync {
    /// `event` was appended; `prev` is the chain hash before it.
    fn appended(&self, event: AuditEvent, prev: [u8; 32]);

    /// A signed checkpoint became durable. It covers events already passed
    /// to [`AuditSink::appended`] (a background one may arrive after later
    /// events).
    fn checkpointed(&self, _head: &SignedHead) {}
}

/// The open, append-only audit trail of one vault.
pub struct AuditLog {
    signer: SigningKey,
    sync: bool,
    /// Where the lines are kept.
    place: Place,
    head_seq: u64,
    head_hash: [u8; 32],
    last_checkpoint_seq: u64,
    /// The last checkpoint known to be durable in `checkpoints.log` (read at
    /// open, then each one written); the next checkpoint chains to its hash.
    last_signed: Option<SignedHead>,
    /// An automatic checkpoint that failed; retried before the next append.
    checkpoint_pending: Option<i64>,
    /// A failed write could not be undone: refuse everything until reopened
    /// (the reopen cuts off the torn tail).
    poisoned: bool,
    /// The events found after the last checkpoint at open, until an event
    /// of this process disowns them ([`AuditLog::disown_tail`]): no
    /// checkpoint is signed over them before.
    undisowned: Option<(u64, u64)>,
    /// Every event up to the head is the vault's to sign over: its last
    /// checkpoint's, disowned, or this process's own. Only then may the
    /// last word (a checkpoint when the segment changed under it) be
    /// signed: until the disowning event is written, events before the
    /// head may be an insider's lines.
    head_own: bool,
    /// Reused for encoding each line (event metadata only, no secrets).
    line_buf: Vec<u8>,
    /// Told of every event appended (the server's syslog stream).
    sink: Option<Arc<dyn AuditSink>>,
}

/// Where a trail's lines are kept: the same lines either way.
enum Place {
    /// Segment files and `checkpoints.log` in `<vault>/audit`.
    Files(Box<Files>),
    /// Rows of the records cluster (a vault whose records are there).
    Cluster(std::sync::Arc<cluster::ClusterTrail>),
}

/// A trail in files.
struct Files {
    dir: PathBuf,
    /// The current (last) segment, opened for append.
    segment: File,
    /// Its path, and the file it named when opened ([`identity`]): a file
    /// renamed over it is someone else's.
    segment_path: PathBuf,
    segment_identity: (u64, u64),
    /// The segment changed under the vault (a line it did not write, or
    /// another file at its path): the vault's own head is signed once
    /// before it refuses, so that the next open finds any of its events
    /// that the change took away.
    changed: bool,
    segment_no: u64,
    /// Bytes in the current segment that hold complete, acknowledged lines.
    segment_len: u64,
    segment_limit: u64,
    /// The checkpoint log, shared with a background checkpoint in flight.
    checkpoints: Arc<Mutex<CheckpointWriter>>,
    /// The automatic checkpoint being written in the background, if any.
    background: Option<BackgroundCheckpoint>,
}

/// A trail to read and verify without holding the log (which every
/// audited call waits for).
#[derive(Clone)]
pub struct TrailReader(Reader);

impl fmt::Debug for TrailReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Reader::Dir(d) => write!(f, "TrailReader(files in {})", d.display()),
            Reader::Cluster(_) => f.write_str("TrailReader(the records cluster)"),
        }
    }
}

#[derive(Clone)]
enum Reader {
    Dir(PathBuf),
    Cluster(std::sync::Arc<cluster::ClusterTrail>),
}

impl Reader {
    /// Each event from seq `from` (files: from the first) up to `to`, in
    /// order, parsed (the chain not verified), until `visit` says stop.
    fn each_event(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(AuditEvent) -> Result<bool>,
    ) -> Result<()> {
        self.each_event_raw(from, to, |_, ev| visit(ev))
    }

    /// [`Self::each_event`], with each event's line as written (what its
    /// chain hash covers).
    fn each_event_raw(
        &self,
        from: u64,
        to: u64,
        mut visit: impl FnMut(&[u8], AuditEvent) -> Result<bool>,
    ) -> Result<()> {
        let mut visit = |line: &[u8]| -> Result<bool> {
            let (body, hash) = split_line(line).ok_or(Error::Integrity("audit trail"))?;
            let ev = decode_event(body, hash).map_err(|_| Error::Integrity("audit trail"))?;
            if ev.seq > to {
                return Ok(true);
            }
            visit(body, ev)
        };
        match self {
            Reader::Dir(dir) => {
                let segments = list_segments(dir)?;
                // Segments wholly before `from` are not read: the first one
                // read is the last whose first event is at or before it.
                let mut start = 0;
                if from > 1 {
                    for (i, (_, path)) in segments.iter().enumerate().rev() {
                        if first_seq(path)?.is_some_and(|s| s <= from) {
                            start = i;
                            break;
                        }
                    }
                }
                for (_, path) in &segments[start..] {
                    let bytes = fs::read(path)?;
                    for (line, complete) in Lines::new(&bytes) {
                        if !complete {
                            return Err(Error::Integrity("audit trail (incomplete line)"));
                        }
                        if visit(line)? {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
            Reader::Cluster(c) => c.each_event(from, to, |_, line| visit(line)),
        }
    }
}

impl TrailReader {
    /// The highest state-digest generation (`store/state.rs`) an event
    /// after seq `after` and up to `upto` names in a `state:<n>` target (0
    /// when none does), and what keeps it from being the whole answer, if
    /// anything: the chain is checked from `after_hash` (the chain hash at
    /// `after`, which the digest keeps sealed) event by event through
    /// `signed` (the last checkpoint, its signature checked by the caller),
    /// so an event edited, removed or planted there, or the trail cut
    /// before that checkpoint, is named. Every event there is still read,
    /// so a generation named past a break still counts.
    pub fn highest_state_since(
        &self,
        after: u64,
        after_hash: [u8; 32],
        upto: u64,
        signed: Option<&SignedHead>,
    ) -> Result<(u64, Option<&'static str>)> {
        const ALTERED: &str =
            "an event after the state digest's checkpoint was altered, removed or planted";
        let through = signed.map_or(0, |h| h.seq);
        let mut problem = (through < after)
            .then_some("the trail's last checkpoint is older than the state digest's");
        let (mut high, mut prev, mut next) = (0, Some(after_hash), after.saturating_add(1));
        let last = upto.max(through);
        self.0.each_event_raw(next, last, |body, ev| {
            if ev.seq < next {
                return Ok(false);
            }
            let linked = ev.seq == next
                && prev.is_some_and(|p| chain_hash(&p, body) == ev.hash)
                && !signed.is_some_and(|h| h.seq == ev.seq && h.head != ev.hash);
            if !linked && prev.is_some() {
                problem = problem.or(Some(ALTERED));
            }
            high = ev
                .targets
                .iter()
                .filter_map(|t| t.strip_prefix(STATE_TARGET)?.parse::<u64>().ok())
                .fold(high, u64::max);
            (prev, next) = (linked.then_some(ev.hash), ev.seq.max(next) + 1);
            // Not past the head read: a line being written is not one yet.
            Ok(ev.seq >= last)
        })?;
        if next <= through {
            problem = problem.or(Some(ALTERED));
        }
        Ok((high, problem))
    }

    /// The trail of vault `vault` where it is kept, read without the vault
    /// (no key is needed, nothing is verified): the files in `dir`, or its
    /// trail on the records cluster of `records`. What a deletion's resume
    /// reads once the vault's keys are gone.
    pub(crate) fn at(dir: &Path, records: Option<(PgConfig, VaultId)>) -> Result<TrailReader> {
        Ok(TrailReader(match records {
            Some((cfg, vault)) => Reader::Cluster(std::sync::Arc::new(
                cluster::ClusterTrail::open(cfg, vault, false)?,
            )),
            None => Reader::Dir(dir.to_path_buf()),
        }))
    }

    /// The events from seq `from` to `to`, in order (parsed, the chain not
    /// verified).
    pub(crate) fn events(&self, from: u64, to: u64) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        self.0.each_event(from, to, |ev| {
            if ev.seq >= from {
                out.push(ev);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// Every checkpoint, in order (signatures not checked here: an export
    /// carries them and its verifier checks them).
    pub fn signed_heads(&self) -> Result<Vec<SignedHead>> {
        let lines = match &self.0 {
            Reader::Cluster(c) => c.checkpoints()?,
            Reader::Dir(dir) => {
                let bytes = match fs::read(dir.join(CHECKPOINTS_FILE)) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                Lines::new(&bytes)
                    .filter(|(_, complete)| *complete)
                    .map(|(line, _)| line.to_vec())
                    .collect()
            }
        };
        lines
            .iter()
            .map(|line| SignedHead::from_line(line).ok_or(Error::Integrity("audit checkpoints")))
            .collect()
    }

    /// [`verify_anchored`] over this trail: in place for files; a trail on
    /// the cluster is first written out in the files' format to a private
    /// temporary directory, so one verifier checks both.
    pub fn verify_anchored(&self, key: &VerifyingKey, anchors: &Anchors) -> Result<VerifyReport> {
        match &self.0 {
            Reader::Dir(dir) => verify_anchored(dir, key, anchors),
            Reader::Cluster(c) => {
                let tmp = tempfile::tempdir()?;
                let dir = tmp.path().join("audit");
                c.write_files(&dir)?;
                verify_anchored(&dir, key, anchors)
            }
        }
    }
}

/// `checkpoints.log` opened for append, and its length in complete lines.
struct CheckpointWriter {
    file: File,
    len: u64,
}

impl CheckpointWriter {
    /// Fsyncs the segment holding the events covered, then appends and
    /// fsyncs one checkpoint line. Returns whether a failed write could not
    /// be undone (the log must then refuse further writes).
    fn write(&mut self, segment: &File, line: &[u8]) -> (Result<()>, bool) {
        if let Err(e) = segment.sync_data() {
            return (
                Err(Error::AuditUnavailable(format!(
                    "cannot sync the audit segment: {e}"
                ))),
                false,
            );
        }
        match self
            .file
            .write_all(line)
            .and_then(|()| self.file.sync_data())
        {
            Ok(()) => {
                self.len += line.len() as u64;
                (Ok(()), false)
            }
            Err(e) => (
                Err(Error::AuditUnavailable(format!(
                    "cannot write an audit checkpoint: {e}"
                ))),
                self.file.set_len(self.len).is_err(),
            ),
        }
    }
}

/// An automatic checkpoint being written by a background thread.
struct BackgroundCheckpoint {
    signed: SignedHead,
    time_ms: i64,
    handle: JoinHandle<(Result<()>, bool)>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match &self.place {
            Place::Files(f) => format!("files in {}", f.dir.display()),
            Place::Cluster(_) => "the records cluster".to_owned(),
        };
        f.debug_struct("AuditLog")
            .field("place", &place)
            .field("sync", &self.sync)
            .field("head_seq", &self.head_seq)
            .field("last_checkpoint_seq", &self.last_checkpoint_seq)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating if absent, dirs 0700 files 0600 on unix) the directory
    /// `dir` (= `<vault>/audit`). Resumes seq and head hash from the last
    /// segment, cutting off a torn last line (a crash mid-write: never
    /// acknowledged). Refuses to open a trail that ends before its last
    /// signed checkpoint, since appending would hide the truncation.
    /// `sync`: fsync after every append (else write-only: survives a process
    /// kill, not a power loss).
    pub fn open(dir: &Path, signer: SigningKey, sync: bool) -> Result<AuditLog> {
        let unavailable =
            |what: &str, e: std::io::Error| Error::AuditUnavailable(format!("{what}: {e}"));
        create_private_dir(dir).map_err(|e| unavailable("cannot create the audit directory", e))?;

        let mut segments = list_segments(dir)?;
        let mut created = false;
        if segments.is_empty() {
            let path = segment_path(dir, 1);
            create_private_file(&path)
                .map_err(|e| unavailable("cannot create an audit segment", e))?;
            segments.push((1, path));
            created = true;
        }
        let Some((segment_no, path)) = segments.last().cloned() else {
            return Err(Error::AuditUnavailable("no audit segment".into()));
        };
        let segment = open_append(&path, false)
            .map_err(|e| unavailable("cannot open the audit segment", e))?;
        // Taken from the path, as each line's check reads it.
        let segment_identity = fs::metadata(&path)
            .map(|m| identity(&m))
            .map_err(|e| unavailable("cannot read the audit segment", e))?;
        let mut bytes =
            fs::read(&path).map_err(|e| unavailable("cannot read the audit segment", e))?;
        let keep = complete_len(&bytes);
        if keep < bytes.len() {
            segment
                .set_len(keep as u64)
                .and_then(|()| segment.sync_data())
                .map_err(|e| unavailable("cannot repair a torn audit line", e))?;
            bytes.truncate(keep);
        }
        let segment_len = bytes.len() as u64;

        let (head_seq, head_hash) = match last_line(&bytes) {
            Some(line) => parse_head(line)?,
            None => head_of_earlier(&segments[..segments.len() - 1])?,
        };

        let cp_path = dir.join(CHECKPOINTS_FILE);
        let cp_existed = cp_path.exists();
        let checkpoint_file = open_append(&cp_path, true)
            .map_err(|e| unavailable("cannot open the checkpoint log", e))?;
        let mut cp_bytes =
            fs::read(&cp_path).map_err(|e| unavailable("cannot read the checkpoint log", e))?;
        let keep = complete_len(&cp_bytes);
        if keep < cp_bytes.len() {
            checkpoint_file
                .set_len(keep as u64)
                .and_then(|()| checkpoint_file.sync_data())
                .map_err(|e| unavailable("cannot repair a torn checkpoint line", e))?;
            cp_bytes.truncate(keep);
        }
        let last_signed = match last_line(&cp_bytes) {
            Some(line) => {
                let cp = own_checkpoint(line, &signer)?;
                if cp.seq > head_seq {
                    return Err(Error::Integrity(
                        "audit trail (truncated before last checkpoint)",
                    ));
                }
                if cp.seq == head_seq && cp.head != head_hash {
                    return Err(Error::Integrity(
                        "audit trail (last event does not match the last checkpoint)",
                    ));
                }
                // Lines after it: the event it signed must still be there,
                // linked to the one before it. Someone who put a copy
                // without the vault's last events in place of the segment,
                // a line of their own at the signed seq and more after it,
                // would otherwise have the open disown only those after.
                if cp.seq < head_seq && !signed_event_on_chain(&segments, &bytes, &cp)? {
                    return Err(Error::Integrity(
                        "audit trail (the event its last checkpoint signed is not on it: events were taken away)",
                    ));
                }
                Some(cp)
            }
            None => None,
        };
        let last_checkpoint_seq = last_signed.as_ref().map_or(0, |c| c.seq);
        if created || !cp_existed {
            sync_dir(dir).map_err(|e| unavailable("cannot sync the audit directory", e))?;
        }

        Ok(AuditLog {
            signer,
            sync,
            place: Place::Files(Box::new(Files {
                dir: dir.to_path_buf(),
                segment,
                segment_path: path,
                segment_identity,
                changed: false,
                segment_no,
                segment_len,
                segment_limit: SEGMENT_MAX_BYTES,
                checkpoints: Arc::new(Mutex::new(CheckpointWriter {
                    file: checkpoint_file,
                    len: cp_bytes.len() as u64,
                })),
                background: None,
            })),
            head_seq,
            head_hash,
            last_checkpoint_seq,
            last_signed,
            checkpoint_pending: None,
            poisoned: false,
            undisowned: (head_seq > last_checkpoint_seq)
                .then_some((last_checkpoint_seq + 1, head_seq)),
            head_own: head_seq == last_checkpoint_seq,
            line_buf: Vec::with_capacity(512),
            sink: None,
        })
    }

    /// Appends and checkpoints on the cluster from now on only while
    /// `fence`'s lock (the records store's, in the same database) is held
    /// by this process; a no-op for a trail in files.
    pub(crate) fn fence_with(
        &self,
        fence: Option<std::sync::Arc<dyn crate::store::postgres::Fence>>,
    ) {
        if let (Place::Cluster(c), Some(f)) = (&self.place, fence) {
            c.fence_with(f);
        }
    }

    /// Opens the trail of vault `vault` on the records cluster of `cfg`
    /// (see `audit/cluster.rs`). A trail still in files at `dir` (a vault
    /// from an earlier build) is moved onto the cluster first, whole and
    /// in one transaction, and the directory renamed `audit.moved` as
    /// evidence; a cluster trail that already has events is never mixed
    /// with files.
    pub fn open_on_cluster(
        cfg: PgConfig,
        vault: VaultId,
        dir: &Path,
        signer: SigningKey,
        sync: bool,
    ) -> Result<AuditLog> {
        let trail = std::sync::Arc::new(cluster::ClusterTrail::open(cfg, vault, sync)?);
        let mut last = trail.last_event()?;
        if dir.exists() {
            if last.is_none() && !list_segments(dir)?.is_empty() {
                move_to_cluster(dir, &trail)?;
                last = trail.last_event()?;
            }
            let moved = dir.with_file_name("audit.moved");
            if !moved.exists() {
                fs::rename(dir, &moved)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
        }
        // The head and the last checkpoint are read one after the other: a
        // writer appending meanwhile (a process whose lease is lapsing, or
        // the racing writers of the tests) may put a checkpoint past the
        // head just read. Read again; a checkpoint past the trail that
        // stays is the integrity failure.
        let mut tries = 0;
        let (head_seq, head_hash, last_signed) = loop {
            let (head_seq, head_hash) = match &last {
                Some((seq, line)) => {
                    let head = parse_head(line)?;
                    if head.0 != *seq {
                        return Err(Error::Integrity("audit trail (a line under another seq)"));
                    }
                    head
                }
                None => (0, [0u8; 32]),
            };
            let last_signed = match trail.checkpoints()?.last() {
                Some(line) => {
                    let cp = own_checkpoint(line, &signer)?;
                    if cp.seq > head_seq && tries < 5 {
                        tries += 1;
                        last = trail.last_event()?;
                        continue;
                    }
                    if cp.seq > head_seq || (cp.seq == head_seq && cp.head != head_hash) {
                        return Err(Error::Integrity(
                            "audit trail (last event does not match the last checkpoint)",
                        ));
                    }
                    Some(cp)
                }
                None => None,
            };
            break (head_seq, head_hash, last_signed);
        };
        let last_checkpoint_seq = last_signed.as_ref().map_or(0, |c| c.seq);
        Ok(AuditLog {
            signer,
            sync,
            place: Place::Cluster(trail),
            head_seq,
            head_hash,
            last_checkpoint_seq,
            last_signed,
            checkpoint_pending: None,
            poisoned: false,
            undisowned: (head_seq > last_checkpoint_seq)
                .then_some((last_checkpoint_seq + 1, head_seq)),
            head_own: head_seq == last_checkpoint_seq,
            line_buf: Vec::with_capacity(512),
            sink: None,
        })
    }

    /// A handle to read and verify the trail without holding the log.
    pub fn reader(&self) -> TrailReader {
        TrailReader(match &self.place {
            Place::Files(f) => Reader::Dir(f.dir.clone()),
            Place::Cluster(c) => Reader::Cluster(std::sync::Arc::clone(c)),
        })
    }

    /// True when the trail holds the checkpoint at `seq` whose line hash is
    /// `hash`: whether the copy the records database keeps is still part
    /// of the trail (see [`has_checkpoint`]).
    pub fn has_checkpoint(&self, seq: u64, hash: &[u8; 32]) -> bool {
        match &self.place {
            Place::Files(f) => has_checkpoint(&f.dir, seq, hash),
            Place::Cluster(_) => self.signed_heads().is_ok_and(|hs| {
                hs.iter()
                    .any(|h| h.seq == seq && h.checkpoint_hash == *hash)
            }),
        }
    }

    /// Appends one event; returns its seq (starting at 1).
    ///
    /// Fail closed: any write error returns `Err(AuditUnavailable)`, the
    /// partial line is removed, and the in-memory head does not advance, so
    /// the caller must not perform (or must roll back) the audited operation.
    /// Every [`CHECKPOINT_EVERY`] events a signed checkpoint follows; if only
    /// that checkpoint fails, the event itself is recorded and acknowledged,
    /// and the checkpoint is retried first thing on the next append, which
    /// fails closed if it still cannot be written.
    pub fn append(&mut self, ev: NewEvent) -> Result<u64> {
        self.append_forgetting(ev, None).map(|(seq, _)| seq)
    }

    /// [`Self::append`], and with `forget` (a new record's ID) on a trail
    /// on the records cluster, that record's write-journal entry removed in
    /// the same statement (`cluster::ClusterTrail::append`). Answers the
    /// event's number and whether the entry went; if not, the caller
    /// removes it.
    pub fn append_forgetting(
        &mut self,
        ev: NewEvent,
        forget: Option<&[u8]>,
    ) -> Result<(u64, bool)> {
        let appended = self.append_one(ev, forget)?;
        note_appended_here();
        Ok(appended)
    }

    /// Appends `events` in order and answers each one's outcome (the
    /// caller counts them on the threads they came from). On the records
    /// cluster they go in one statement and one transaction per stretch up
    /// to the next checkpoint's event, so that events queued while an
    /// append was on its way share the next round trip (group commit,
    /// `group.rs`), and every checkpoint still follows event 256k exactly,
    /// as after a lone append. A stretch is written whole or not at all; an
    /// event that is itself invalid is refused alone, and once a stretch
    /// fails the events after it fail too. In files, one line after the
    /// other, as [`Self::append_forgetting`].
    ///
    /// A panic is handed back beside the outcomes: those of the events
    /// written before it stand (one in the sink or a checkpoint comes after
    /// its stretch was written), the event it hit is failed with the ones
    /// after it, and the caller writes nothing more until the vault is
    /// reopened (`group.rs`).
    pub(crate) fn append_all(
        &mut self,
        events: Vec<(NewEvent, Option<Vec<u8>>)>,
    ) -> (Vec<Result<(u64, bool)>>, Option<Panic>) {
        let mut outcomes: Vec<Option<Result<(u64, bool)>>> =
            (0..events.len()).map(|_| None).collect();
        let mut failed = None;
        let mut panicked = None;
        let mut events = events.into_iter().enumerate().peekable();
        if !matches!(self.place, Place::Cluster(_)) {
            // A panic within a line's append: the lines before it stand,
            // the ones after it are not written, and its own stands if the
            // head had moved past it (the panic came after the write, in
            // the sink or the checkpoint).
            while failed.is_none()
                && let Some((at, (ev, forget))) = events.next()
            {
                let head = self.head_seq;
                match catch_unwind(AssertUnwindSafe(|| self.append_one(ev, forget.as_deref()))) {
                    Ok(outcome) => outcomes[at] = Some(outcome),
                    Err(panic) => {
                        panicked = Some(panic);
                        let e = Error::AuditUnavailable(
                            "an audit write failed unexpectedly; reopen the vault".into(),
                        );
                        outcomes[at] = Some(if self.head_seq > head {
                            Ok((self.head_seq, false))
                        } else {
                            Err(e.again())
                        });
                        failed = Some(e);
                    }
                }
            }
        }
        while events.peek().is_some() {
            // A checkpoint that could not be written goes first, and until
            // it is, nothing more is written (fail closed).
            if failed.is_none()
                && let Some(time_ms) = self.checkpoint_pending
            {
                failed = self.write_checkpoint(time_ms).err();
            }
            if let Some(e) = &failed {
                for (at, (ev, _)) in events.by_ref() {
                    outcomes[at] = Some(validate(&ev).and(Err(e.again())));
                }
                break;
            }
            // The stretch: each event encoded and chained on the one
            // before it, up to the next checkpoint's.
            let room = CHECKPOINT_EVERY - self.head_seq % CHECKPOINT_EVERY;
            let mut written: Vec<Chained> = Vec::new();
            let mut forgets: Vec<Vec<u8>> = Vec::new();
            let mut hash = self.head_hash;
            while (written.len() as u64) < room
                && let Some((at, (ev, forget))) = events.next()
            {
                let seq = self.head_seq + written.len() as u64 + 1;
                let mut line = Vec::with_capacity(512);
                match validate(&ev).and_then(|()| chained_line(seq, &ev, &hash, &mut line)) {
                    Ok(h) => hash = h,
                    Err(e) => {
                        outcomes[at] = Some(Err(e));
                        continue;
                    }
                }
                let forgetting = forget.is_some();
                forgets.extend(forget);
                written.push(Chained {
                    at,
                    ev,
                    hash,
                    line,
                    forgetting,
                });
            }
            if written.is_empty() {
                continue;
            }
            let Place::Cluster(c) = &self.place else {
                unreachable!("the files' path took every event above")
            };
            let lines: Vec<&[u8]> = written.iter().map(|w| &w.line[..]).collect();
            let forgets: Vec<&[u8]> = forgets.iter().map(|f| &f[..]).collect();
            match c.append(self.head_seq + 1, &lines, &forgets) {
                Ok(forgotten) => {
                    let (mut appended, mut last_time) = (Vec::new(), 0);
                    for w in written {
                        let (prev, seq) = (self.head_hash, self.head_seq + 1);
                        self.head_seq = seq;
                        self.head_hash = w.hash;
                        outcomes[w.at] = Some(Ok((seq, forgotten && w.forgetting)));
                        last_time = w.ev.time_ms;
                        if self.sink.is_some() {
                            appended.push((appended_event(seq, w.ev, w.hash), prev));
                        }
                    }
                    // Written: nothing from here on takes that back.
                    let followed = catch_unwind(AssertUnwindSafe(|| {
                        if let Some(sink) = &self.sink {
                            for (ev, prev) in appended {
                                sink.appended(ev, prev);
                            }
                        }
                        if self.head_seq.is_multiple_of(CHECKPOINT_EVERY) {
                            self.start_checkpoint(last_time);
                        }
                    }));
                    if let Err(panic) = followed {
                        panicked = Some(panic);
                        failed = Some(Error::AuditUnavailable(
                            "an audit write failed unexpectedly; reopen the vault".into(),
                        ));
                    }
                }
                Err(e) => {
                    for w in written {
                        outcomes[w.at] = Some(Err(e.again()));
                    }
                    failed = Some(e);
                }
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.expect("every event has its outcome"))
            .collect();
        (outcomes, panicked)
    }

    /// [`Self::append_forgetting`] without counting the event on this
    /// thread.
    fn append_one(&mut self, ev: NewEvent, forget: Option<&[u8]>) -> Result<(u64, bool)> {
        validate(&ev)?;
        // The event that brings the next checkpoint due waits for the one
        // in flight before it is written: a kill while that one's fsyncs
        // run then leaves at most 2 × CHECKPOINT_EVERY - 1 events after the
        // last durable checkpoint, and the next open's disowning event
        // still fits within MAX_UNCHECKPOINTED.
        let due_next = (self.head_seq + 1).is_multiple_of(CHECKPOINT_EVERY);
        if let Place::Files(f) = &self.place
            && f.background
                .as_ref()
                .is_some_and(|b| due_next || b.handle.is_finished())
        {
            self.settle();
        }
        if self.poisoned {
            return Err(Error::AuditUnavailable(
                "an earlier audit write could not be undone; reopen the vault".into(),
            ));
        }
        if let Some(time_ms) = self.checkpoint_pending {
            self.write_checkpoint(time_ms)?;
        }
        let seq = self.head_seq + 1;
        // One reused buffer: the line is encoded, hashed and written in place.
        let mut line = std::mem::take(&mut self.line_buf);
        let hash = chained_line(seq, &ev, &self.head_hash, &mut line)?;
        line.push(b'\n');

        let written = match &mut self.place {
            Place::Files(f) => {
                let r = if f.segment_len > 0 && f.segment_len + line.len() as u64 > f.segment_limit
                {
                    f.rotate().and_then(|()| f.write_line(&line, self.sync))
                } else {
                    f.write_line(&line, self.sync)
                };
                r.map(|()| false)
                    .map_err(|(e, poisoned)| (e, poisoned, f.changed))
            }
            // A synchronous commit with `sync`, as a file line's fsync.
            Place::Cluster(c) => c
                .append(seq, &[&line[..line.len() - 1]], forget.as_slice())
                .map_err(|e| (e, false, false)),
        };
        self.line_buf = line;
        let forgotten = match written {
            Ok(f) => f,
            Err((e, poisoned, changed)) => {
                if changed && self.head_own {
                    // The vault's last word before it refuses: its own
                    // head, signed. Had the change taken any of its
                    // events away (a copy renamed over the segment, lines
                    // cut), the next open finds this checkpoint past the
                    // trail or the event it signed gone, and refuses;
                    // otherwise it disowns what follows.
                    let _ = self.write_checkpoint(ev.time_ms);
                }
                self.poisoned |= poisoned;
                return Err(e);
            }
        };
        let prev = self.head_hash;
        self.head_seq = seq;
        self.head_hash = hash;
        let time_ms = ev.time_ms;
        if let Some(sink) = &self.sink {
            sink.appended(appended_event(seq, ev, hash), prev);
        }

        if seq.is_multiple_of(CHECKPOINT_EVERY) {
            self.start_checkpoint(time_ms);
        }
        Ok((seq, forgotten))
    }

    /// Signs a checkpoint of the current head now and writes it on a
    /// background thread; on any failure to start, falls back to writing it
    /// here. Never fails the append: a checkpoint that cannot be written is
    /// retried on the next append, which fails closed.
    fn start_checkpoint(&mut self, time_ms: i64) {
        self.settle();
        if self.poisoned {
            return;
        }
        let (signed, line) = match self.checkpoint_line(time_ms) {
            Ok(l) => l,
            Err(_) => {
                self.checkpoint_pending = Some(time_ms);
                return;
            }
        };
        let Place::Files(files) = &mut self.place else {
            // On the cluster: one more statement, written here.
            if self.write_checkpoint(time_ms).is_err() {
                self.checkpoint_pending = Some(time_ms);
            }
            return;
        };
        let started = files.segment.try_clone().and_then(|segment| {
            let writer = Arc::clone(&files.checkpoints);
            std::thread::Builder::new()
                .name("pivault-audit-checkpoint".into())
                .spawn(move || match writer.lock() {
                    Ok(mut w) => w.write(&segment, &line),
                    Err(_) => (
                        Err(Error::AuditUnavailable(
                            "audit checkpoint lock poisoned".into(),
                        )),
                        true,
                    ),
                })
        });
        match started {
            Ok(handle) => {
                files.background = Some(BackgroundCheckpoint {
                    signed,
                    time_ms,
                    handle,
                })
            }
            Err(_) => {
                if self.write_checkpoint(time_ms).is_err() {
                    self.checkpoint_pending = Some(time_ms);
                }
            }
        }
    }

    /// Waits for a background checkpoint, if one is in flight, and takes
    /// over its outcome.
    fn settle(&mut self) {
        let Place::Files(files) = &mut self.place else {
            return;
        };
        let Some(bg) = files.background.take() else {
            return;
        };
        match bg.handle.join() {
            Ok((Ok(()), _)) => {
                self.last_checkpoint_seq = self.last_checkpoint_seq.max(bg.signed.seq);
                if let Some(sink) = &self.sink {
                    sink.checkpointed(&bg.signed);
                }
                self.last_signed = Some(bg.signed);
                if self.last_checkpoint_seq == self.head_seq {
                    self.checkpoint_pending = None;
                }
            }
            Ok((Err(_), poisoned)) => {
                self.poisoned |= poisoned;
                self.checkpoint_pending = Some(bg.time_ms);
            }
            Err(_) => self.poisoned = true,
        }
    }

    /// Waits until no checkpoint is being written in the background, so that
    /// the files can be read (verified) whole.
    pub fn wait_for_checkpoint(&mut self) {
        self.settle();
    }

    /// The signed checkpoint of the current head, chained to the last
    /// durable checkpoint (the caller has settled any in flight), and its
    /// line with the newline.
    fn checkpoint_line(&self, time_ms: i64) -> Result<(SignedHead, Vec<u8>)> {
        if let Some((from, to)) = self.undisowned {
            return Err(Error::AuditUnavailable(format!(
                "events {from} to {to} were found after the last checkpoint and are not yet disowned"
            )));
        }
        let prev = self
            .last_signed
            .as_ref()
            .map_or([0u8; 32], |c| c.checkpoint_hash);
        let sig = self.signer.sign(&checkpoint_message_v2(
            self.head_seq,
            &self.head_hash,
            time_ms,
            &prev,
        ));
        let mut line = encode_checkpoint(&Checkpoint {
            seq: self.head_seq,
            head: self.head_hash,
            time_ms,
            sig: sig.to_bytes(),
            prev: Some(prev),
            hash: [0; 32],
        })?;
        let signed = SignedHead::from_line(&line)
            .ok_or_else(|| Error::AuditUnavailable("cannot encode a checkpoint".into()))?;
        line.push(b'\n');
        Ok((signed, line))
    }

    /// The last checkpoint known to be durable (from the files at open, then
    /// each one written), without waiting for one in flight: what the vault
    /// copies into the records database.
    pub fn last_signed(&self) -> Option<&SignedHead> {
        self.last_signed.as_ref()
    }

    /// Signs a checkpoint (seq, head hash, time) now, e.g. at clean close, so
    /// that a truncation of the most recent events is detectable. Does
    /// nothing when no event was appended since the last checkpoint.
    pub fn checkpoint(&mut self, time_ms: i64) -> Result<()> {
        if self.poisoned {
            return Err(Error::AuditUnavailable(
                "an earlier audit write could not be undone; reopen the vault".into(),
            ));
        }
        // One that fails is retried first thing by the next append, which
        // fails closed if it still cannot be written (as an automatic one).
        self.write_checkpoint(time_ms)
            .inspect_err(|_| self.checkpoint_pending = Some(time_ms))
    }

    /// The events found after the last checkpoint when the trail was
    /// opened, while no event of this process has disowned them.
    pub fn undisowned(&self) -> Option<(u64, u64)> {
        self.undisowned
    }

    /// Disowns the events found after the last checkpoint at open, if any:
    /// appends an [`UNVOUCHED_ACTION`] event naming them, after which
    /// checkpoints may be signed over them. This process cannot tell its
    /// own events written before an unclean stop from well-formed lines
    /// appended by someone holding the files or the database role, and a
    /// checkpoint must not vouch for the latter.
    pub fn disown_tail(&mut self, time_ms: i64) -> Result<()> {
        let Some((from, to)) = self.undisowned else {
            return Ok(());
        };
        let mut ev = NewEvent::new(
            time_ms,
            None,
            Channel::System,
            UNVOUCHED_ACTION,
            Outcome::Success,
        );
        ev.targets = vec![unvouched_target(from, to)];
        // A checkpoint refused meanwhile is retried after the event, not
        // before it; one the event itself brings due covers it.
        let pending = self.checkpoint_pending.take();
        self.undisowned = None;
        let r = self.append(ev);
        if r.is_ok() {
            self.head_own = true;
        }
        if r.is_err() {
            self.undisowned = Some((from, to));
            self.checkpoint_pending = self.checkpoint_pending.or(pending);
        } else {
            // Due still, and now after this event.
            self.checkpoint_pending = self.checkpoint_pending.or(pending.map(|_| time_ms));
        }
        r.map(|_| ())
    }

    /// The chain hash of the newest event (what a checkpoint signs).
    pub fn head_hash(&self) -> [u8; 32] {
        self.head_hash
    }

    /// The seq of the last event appended (0 for an empty trail).
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// The seq covered by the last signed checkpoint (0 if none), so a caller
    /// can also checkpoint on a timer when events are sparse. Waits for a
    /// background checkpoint in flight.
    pub fn last_checkpoint_seq(&mut self) -> u64 {
        self.settle();
        self.last_checkpoint_seq
    }

    /// Reads events (all segments) matching `filter`, in sequence order, for
    /// `audit log` and reports. This parses but does not verify the chain;
    /// use [`verify`] for that.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<AuditEvent>> {
        let mut out = Vec::new();
        if filter.limit == Some(0) {
            return Ok(out);
        }
        // Takes one event; true once no later one can match.
        let take = |ev: AuditEvent| -> Result<bool> {
            if filter.matches(&ev) {
                out.push(ev);
                if filter.limit.is_some_and(|n| out.len() >= n) {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        self.reader().0.each_event(
            filter.from_seq.unwrap_or(1),
            filter.to_seq.unwrap_or(u64::MAX >> 1),
            take,
        )?;
        Ok(out)
    }

    /// The seq and chain hash of the head, and the last checkpoint (its
    /// signature not checked), for a read of the trail without the log.
    pub fn head_and_last_signed(&self) -> (u64, Option<SignedHead>) {
        (self.head_seq(), self.last_signed.clone())
    }

    /// Tells `sink` of every event appended from now on (replacing any
    /// earlier one).
    pub fn set_sink(&mut self, sink: Option<Arc<dyn AuditSink>>) {
        self.sink = sink;
    }

    /// The chain hash after event `seq` (zeros for 0), read from the files.
    pub fn hash_at(&self, seq: u64) -> Result<[u8; 32]> {
        if seq == 0 {
            return Ok([0u8; 32]);
        }
        let ev = self.events(&EventFilter {
            from_seq: Some(seq),
            to_seq: Some(seq),
            ..EventFilter::default()
        })?;
        ev.first()
            .map(|e| e.hash)
            .ok_or(Error::NotFound("audit event"))
    }

    /// Every checkpoint in `checkpoints.log` (or on the cluster), in order
    /// (signatures not checked here: an export carries them and its
    /// verifier checks them).
    pub fn signed_heads(&self) -> Result<Vec<SignedHead>> {
        self.reader().signed_heads()
    }

    /// The public half of the audit signing key, for [`verify`].
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signer.verifying_key()
    }

    #[cfg(test)]
    fn set_segment_limit(&mut self, bytes: u64) {
        if let Place::Files(f) = &mut self.place {
            f.segment_limit = bytes;
        }
    }

    #[cfg(test)]
    fn files(&mut self) -> &mut Files {
        match &mut self.place {
            Place::Files(f) => f,
            Place::Cluster(_) => panic!("a trail in files"),
        }
    }

    /// Fsyncs the segment, then appends and fsyncs a signed checkpoint of the
    /// current head. The segment goes first so that a checkpoint never
    /// survives a power loss that the events it covers did not.
    fn write_checkpoint(&mut self, time_ms: i64) -> Result<()> {
        self.settle();
        if self.poisoned {
            return Err(Error::AuditUnavailable(
                "an earlier audit write could not be undone; reopen the vault".into(),
            ));
        }
        if self.head_seq == 0 || self.head_seq == self.last_checkpoint_seq {
            self.checkpoint_pending = None;
            return Ok(());
        }
        let (signed, line) = self.checkpoint_line(time_ms)?;
        let (res, poisoned) = match &self.place {
            Place::Files(f) => match f.checkpoints.lock() {
                Ok(mut w) => w.write(&f.segment, &line),
                Err(_) => (
                    Err(Error::AuditUnavailable(
                        "audit checkpoint lock poisoned".into(),
                    )),
                    true,
                ),
            },
            Place::Cluster(c) => (c.add_checkpoint(signed.seq, &line[..line.len() - 1]), false),
        };
        self.poisoned |= poisoned;
        res?;
        self.last_checkpoint_seq = self.head_seq;
        if let Some(sink) = &self.sink {
            sink.checkpointed(&signed);
        }
        self.last_signed = Some(signed);
        self.checkpoint_pending = None;
        Ok(())
    }
}

impl Files {
    /// Writes one complete line to the current segment, undoing a partial
    /// write so the next line starts on a line boundary. On failure, also
    /// whether the log must refuse further writes (the undo failed, or a
    /// failed fsync left the page cache untrustworthy).
    fn write_line(&mut self, line: &[u8], sync: bool) -> std::result::Result<(), (Error, bool)> {
        self.check_segment()?;
        let res = self.segment.write_all(line).and_then(|()| {
            if sync {
                self.segment.sync_data()
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => {
                self.segment_len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                let poisoned = self.segment.set_len(self.segment_len).is_err() || sync;
                Err((
                    Error::AuditUnavailable(format!(
                        "cannot write the audit segment: {}",
                        Error::io_at(&segment_path(&self.dir, self.segment_no), e)
                    )),
                    poisoned,
                ))
            }
        }
    }

    /// Whether the segment's path still names the file this process
    /// writes, and that file ends where its last line did. Otherwise
    /// someone else wrote to it (a line after theirs would fork the chain
    /// there), put another file in its place (the vault's lines would go
    /// to a file no one reads) or removed it: refused until the vault is
    /// opened again, which disowns what it did not write. One `stat` of
    /// the path.
    fn check_segment(&mut self) -> std::result::Result<(), (Error, bool)> {
        let what = match fs::metadata(&self.segment_path) {
            Ok(m) if identity(&m) == self.segment_identity && m.len() == self.segment_len => {
                return Ok(());
            }
            Ok(m) if identity(&m) == self.segment_identity => {
                "the audit segment changed under the vault (a line it did not write)".to_owned()
            }
            Ok(_) => {
                "another file was put in place of the audit segment under the vault".to_owned()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "the audit segment was removed under the vault (or the vault's directory moved)"
                    .to_owned()
            }
            // Unreadable (its directory's permissions changed): the vault
            // cannot tell what is there, so it takes it as changed.
            Err(e) => format!("cannot read the audit segment's length: {e}"),
        };
        self.changed = true;
        Err((
            Error::AuditUnavailable(format!("{what}; open the vault again")),
            true,
        ))
    }

    /// Starts the next segment file, once the full one is checked as the
    /// vault's own (a copy renamed over it after its last line would
    /// otherwise go unseen).
    fn rotate(&mut self) -> std::result::Result<(), (Error, bool)> {
        self.check_segment()?;
        let next = self.segment_no + 1;
        let path = segment_path(&self.dir, next);
        // The full segment is made durable first, so that a checkpoint
        // written from the next one never covers events lost with this one.
        let file = self
            .segment
            .sync_data()
            .and_then(|()| create_private_file(&path))
            .and_then(|_| sync_dir(&self.dir))
            .and_then(|()| open_append(&path, false))
            .map_err(|e| {
                let e = Error::AuditUnavailable(format!(
                    "cannot start a new audit segment: {}",
                    Error::io_at(&path, e)
                ));
                (e, false)
            })?;
        self.segment_identity = fs::metadata(&path).map(|m| identity(&m)).map_err(|e| {
            let e = Error::AuditUnavailable(format!(
                "cannot start a new audit segment: {}",
                Error::io_at(&path, e)
            ));
            (e, false)
        })?;
        self.segment = file;
        self.segment_path = path;
        self.segment_no = next;
        self.segment_len = 0;
        Ok(())
    }
}

/// Which file `m` describes (device and inode): a file renamed over a
/// path has another.
#[cfg(unix)]
fn identity(m: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Moves a trail kept in files at `dir` onto the cluster: every complete
/// event line and every checkpoint, in one transaction (a torn last line
/// was never acknowledged). The lines are the same bytes, so the chain,
/// its checkpoints and every anchor naming a head still verify.
fn move_to_cluster(dir: &Path, trail: &cluster::ClusterTrail) -> Result<()> {
    let mut events = Vec::new();
    for (_, path) in list_segments(dir)? {
        let bytes = fs::read(&path)?;
        events.extend(
            Lines::new(&bytes)
                .filter(|(_, complete)| *complete)
                .map(|(line, _)| line.to_vec()),
        );
    }
    let checkpoints = match fs::read(dir.join(CHECKPOINTS_FILE)) {
        Ok(bytes) => Lines::new(&bytes)
            .filter(|(_, complete)| *complete)
            .map(|(line, _)| line.to_vec())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut seqs = Vec::with_capacity(checkpoints.len());
    for line in &checkpoints {
        seqs.push(
            parse_checkpoint_line(line)
                .ok_or(Error::Integrity("audit checkpoints"))?
                .seq,
        );
    }
    trail.import(&events, &seqs, &checkpoints)
}

impl Drop for AuditLog {
    /// A checkpoint still being written finishes before the files are let go,
    /// so a reopen never races with it.
    fn drop(&mut self) {
        self.settle();
    }
}

/// Verifies a whole audit directory with only the public key (no vault
/// needed): every event's sequence and chain hash, every checkpoint's
/// signature, head and link to the one before, that no more than
/// [`MAX_UNCHECKPOINTED`] events go without a checkpoint, and that the trail
/// reaches the last checkpoint. Reports the first bad sequence number; never
/// panics on arbitrary bytes. `Err` only when the directory or a file cannot
/// be read at all. [`verify_anchored`] also checks what is kept outside.
pub fn verify(dir: &Path, key: &VerifyingKey) -> Result<VerifyReport> {
    verify_anchored(dir, key, &Anchors::default())
}

/// [`verify`], and cross-checks the anchors kept outside the audit
/// directory: the checkpoint the records database holds must be in
/// `checkpoints.log` with the same hash and the chain must have its head,
/// and every named head (certificates, time-stamped heads) must be the
/// chain's hash at its seq. Someone who truncates a segment, or edits and
/// re-chains events, and deletes `checkpoints.log` is caught here.
pub fn verify_anchored(dir: &Path, key: &VerifyingKey, anchors: &Anchors) -> Result<VerifyReport> {
    if !dir.is_dir() {
        return Err(Error::NotFound("audit directory"));
    }
    let segments = list_segments(dir)?;
    let cp_bytes = match fs::read(dir.join(CHECKPOINTS_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let (checkpoints, cp_finding) = read_checkpoints(&cp_bytes, key);

    // The chain hashes the anchors ask about, filled in by the walk.
    let mut wanted: BTreeMap<u64, Option<[u8; 32]>> = BTreeMap::new();
    if let Some(st) = &anchors.stored {
        wanted.insert(st.seq, None);
    }
    for h in &anchors.heads {
        wanted.insert(h.seq, None);
    }

    let mut report = VerifyReport::default();
    let mut findings: Vec<Finding> = Vec::new();
    let mut prev = [0u8; 32];
    let mut next_cp = 0usize;
    // Seqs of the checkpoints that verified, in order, with their line hashes.
    let mut verified_cps: Vec<(u64, [u8; 32])> = Vec::new();
    let mut walk_complete = true;
    'walk: for (_, path) in &segments {
        let bytes = fs::read(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (line, complete) in Lines::new(&bytes) {
            let expected = report.events + 1;
            if !complete {
                findings.push(Finding::at(
                    expected,
                    format!("{name}: the last line is incomplete (a write was cut short or the file was altered)"),
                ));
                walk_complete = false;
                break 'walk;
            }
            match check_line(line, expected, &prev) {
                Ok(ev) => {
                    prev = ev.hash;
                    // As the vault writes it at open: from the last
                    // checkpoint on, so it names no event one covers.
                    report.unvouched.extend(
                        unvouched_range(&ev).filter(|u| u.from == report.last_checkpoint_seq + 1),
                    );
                }
                Err(why) => {
                    findings.push(Finding::at(
                        expected,
                        format!("event {expected} ({name}): {why}"),
                    ));
                    walk_complete = false;
                    break 'walk;
                }
            }
            report.events = expected;
            if let Some(slot) = wanted.get_mut(&expected) {
                *slot = Some(prev);
            }
            if let Some(cp) = checkpoints.get(next_cp)
                && cp.seq == expected
            {
                next_cp += 1;
                if cp.head == prev {
                    report.checkpoints += 1;
                    report.last_checkpoint_seq = cp.seq;
                    verified_cps.push((cp.seq, cp.hash));
                } else {
                    let good = report.last_checkpoint_seq;
                    findings.push(Finding::at(
                        good + 1,
                        format!(
                            "the checkpoint signed at seq {} does not match the chain: an event after seq {good} \
                             was altered, inserted or removed and the later hashes recomputed",
                            cp.seq
                        ),
                    ));
                    walk_complete = false;
                    break 'walk;
                }
            }
        }
    }
    if findings.is_empty()
        && let Some(cp) = checkpoints.get(next_cp)
    {
        findings.push(Finding::at(
            report.events + 1,
            format!(
                "truncated: the trail ends at seq {} but a signed checkpoint covers seq {}",
                report.events, cp.seq
            ),
        ));
    }
    findings.extend(cp_finding);

    // Mandatory checkpoints: no long run of events without one. A vault
    // opening after an unclean stop writes its disowning event before its
    // checkpoint, and a kill between the two leaves one more event: each
    // disowning event that names every event before it since the last
    // checkpoint is not counted (it says the vault vouches for none of them).
    let disowning: Vec<u64> = report
        .unvouched
        .iter()
        .filter(|u| u.to + 1 == u.named_by)
        .map(|u| u.named_by)
        .collect();
    let mut from = 0u64;
    for to in verified_cps
        .iter()
        .map(|(s, _)| *s)
        .chain(std::iter::once(report.events))
    {
        let disowned = disowning.iter().filter(|&&s| from < s && s <= to).count() as u64;
        if to - from - disowned > MAX_UNCHECKPOINTED {
            findings.push(Finding::at(
                from + MAX_UNCHECKPOINTED + 1,
                format!(
                    "no signed checkpoint covers seq {} to {to} ({} events; at most {MAX_UNCHECKPOINTED} may go \
                     without one): {CHECKPOINTS_FILE} was deleted or truncated, or checkpoints were removed",
                    from + 1,
                    to - from
                ),
            ));
            break;
        }
        from = to;
    }

    let end = report.events;
    if let Some(st) = &anchors.stored {
        if !st.signature_ok(key) {
            findings.push(Finding::none(format!(
                "the checkpoint the records database holds at seq {} does not verify with the audit key",
                st.seq
            )));
        } else if walk_complete && end < st.seq {
            findings.push(Finding::at(
                end + 1,
                format!(
                    "segment truncated: the trail ends at seq {end} but the records database holds a checkpoint at seq {}",
                    st.seq
                ),
            ));
        } else if let Some(Some(h)) = wanted.get(&st.seq) {
            let mut ok = true;
            if *h != st.head {
                ok = false;
                findings.push(Finding::none(format!(
                    "events altered and the hashes recomputed: the chain's hash at seq {} differs from the checkpoint \
                     the records database holds",
                    st.seq
                )));
            }
            match checkpoints.iter().find(|c| c.seq == st.seq) {
                Some(c) if c.hash == st.checkpoint_hash => {}
                Some(_) => {
                    ok = false;
                    findings.push(Finding::none(format!(
                        "{CHECKPOINTS_FILE} deleted or rewritten: its checkpoint at seq {} differs from the one the \
                         records database holds",
                        st.seq
                    )));
                }
                None => {
                    ok = false;
                    findings.push(Finding::none(format!(
                        "{CHECKPOINTS_FILE} deleted or truncated: the records database holds a checkpoint at seq {}",
                        st.seq
                    )));
                }
            }
            if ok && verified_cps.iter().any(|(s, _)| *s == st.seq) {
                report.anchored_seq = st.seq;
            }
        }
    }
    for h in &anchors.heads {
        match wanted.get(&h.seq) {
            Some(Some(hash)) if *hash == h.head => report.heads_confirmed += 1,
            Some(Some(_)) => findings.push(Finding::none(format!(
                "{} names a head at seq {} that the chain does not have: events up to seq {} were altered",
                h.what, h.seq, h.seq
            ))),
            _ if walk_complete => findings.push(Finding::at(
                end + 1,
                format!(
                    "segment truncated: the trail ends at seq {end} but {} names the head at seq {}",
                    h.what, h.seq
                ),
            )),
            _ => {}
        }
    }
    findings.extend(anchors.problems.iter().cloned().map(Finding::none));
    drop_superseded(&mut report.unvouched);

    // The earliest problem first; on a tie the chain's own finding (pushed first).
    findings.sort_by_key(|f| f.seq.unwrap_or(u64::MAX));
    report.first_bad_seq = findings.iter().find_map(|f| f.seq);
    if !findings.is_empty() {
        report.problem = Some(
            findings
                .into_iter()
                .map(|f| f.problem)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Ok(report)
}

/// One problem found by [`verify`].
struct Finding {
    seq: Option<u64>,
    problem: String,
}

impl Finding {
    fn at(seq: u64, problem: String) -> Finding {
        Finding {
            seq: Some(seq),
            problem,
        }
    }

    /// A problem with no one sequence number to blame.
    fn none(problem: String) -> Finding {
        Finding { seq: None, problem }
    }
}

/// The stored form of an event. Field order is the on-disk order; do not
/// reorder (the hash covers the exact bytes).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    seq: u64,
    time_ms: i64,
    actor: Option<String>,
    channel: String,
    source: Option<String>,
    action: String,
    targets: Vec<String>,
    outcome: String,
    code: Option<String>,
    reason: Option<String>,
    request_id: Option<String>,
}

/// The stored form of a version 1 checkpoint (still read).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    seq: u64,
    head: String,
    time_ms: i64,
    sig: String,
}

/// The stored form of a version 2 checkpoint: also the hash of the previous
/// checkpoint line (zeros for the first), under the signature, so no
/// checkpoint can be removed or replaced without breaking the next one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLineV2 {
    v: u8,
    seq: u64,
    head: String,
    prev: String,
    time_ms: i64,
    sig: String,
}

/// A parsed checkpoint.
struct Checkpoint {
    seq: u64,
    head: [u8; 32],
    time_ms: i64,
    sig: [u8; 64],
    /// The previous checkpoint's hash (version 2); `None` for version 1.
    prev: Option<[u8; 32]>,
    /// The hash of this line.
    hash: [u8; 32],
}

impl Checkpoint {
    fn signature_ok(&self, key: &VerifyingKey) -> bool {
        let msg = match &self.prev {
            Some(prev) => checkpoint_message_v2(self.seq, &self.head, self.time_ms, prev),
            None => checkpoint_message(self.seq, &self.head, self.time_ms),
        };
        key.verify_strict(&msg, &Signature::from_bytes(&self.sig))
            .is_ok()
    }
}

/// [`EventLine`] borrowing from a [`NewEvent`], so encoding copies nothing
/// but the output. Same fields in the same order: the bytes are identical.
#[derive(Serialize)]
struct EventLineRef<'a> {
    seq: u64,
    time_ms: i64,
    actor: Option<&'a str>,
    channel: &'a str,
    source: Option<&'a str>,
    action: &'a str,
    targets: &'a [String],
    outcome: &'a str,
    code: Option<&'a str>,
    reason: Option<&'a str>,
    request_id: Option<&'a str>,
}

/// Encodes an event into `out` (cleared first): its JSON line body.
fn encode_event_into(seq: u64, ev: &NewEvent, out: &mut Vec<u8>) -> Result<()> {
    let mut actor_buf = uuid::Uuid::encode_buffer();
    let actor = ev.actor.map(|a| {
        &*uuid::Uuid::from_bytes(*a.as_bytes())
            .hyphenated()
            .encode_lower(&mut actor_buf)
    });
    let line = EventLineRef {
        seq,
        time_ms: ev.time_ms,
        actor,
        channel: ev.channel.as_str(),
        source: ev.source.as_deref(),
        action: &ev.action,
        targets: &ev.targets,
        outcome: ev.outcome.as_str(),
        code: ev.code.as_deref(),
        reason: ev.reason.as_deref(),
        request_id: ev.request_id.as_deref(),
    };
    out.clear();
    serde_json::to_writer(&mut *out, &line)
        .map_err(|e| Error::AuditUnavailable(format!("cannot encode an audit event: {e}")))
}

/// The stored event as a subscriber sees it.
fn appended_event(seq: u64, ev: NewEvent, hash: [u8; 32]) -> AuditEvent {
    AuditEvent {
        seq,
        time_ms: ev.time_ms,
        actor: ev.actor,
        channel: ev.channel,
        source: ev.source,
        action: ev.action,
        targets: ev.targets,
        outcome: ev.outcome,
        code: ev.code,
        reason: ev.reason,
        request_id: ev.request_id,
        hash,
    }
}

/// The exact JSON bytes the chain hashes for `ev` (its line without the
/// hash): what an exported event's fields must re-encode to.
pub fn event_body(ev: &AuditEvent) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    encode_event_into(
        ev.seq,
        &NewEvent {
            time_ms: ev.time_ms,
            actor: ev.actor,
            channel: ev.channel,
            source: ev.source.clone(),
            action: ev.action.clone(),
            targets: ev.targets.clone(),
            outcome: ev.outcome,
            code: ev.code.clone(),
            reason: ev.reason.clone(),
            request_id: ev.request_id.clone(),
        },
        &mut out,
    )?;
    Ok(out)
}

/// `SHA-256("pivault-audit-v1" || prev || body)`: the chain hash of an
/// event whose stored JSON is `body`, for verifiers outside this module.
pub fn chain_link(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    chain_hash(prev, body)
}

fn decode_event(body: &[u8], hash: [u8; 32]) -> std::result::Result<AuditEvent, &'static str> {
    let l: EventLine = serde_json::from_slice(body).map_err(|_| "not a valid event (JSON)")?;
    let actor = match l.actor {
        Some(a) => Some(
            a.parse::<UserId>()
                .map_err(|_| "the actor is not a user ID")?,
        ),
        None => None,
    };
    Ok(AuditEvent {
        seq: l.seq,
        time_ms: l.time_ms,
        actor,
        channel: Channel::parse(&l.channel).ok_or("unknown channel")?,
        source: l.source,
        action: l.action,
        targets: l.targets,
        outcome: Outcome::parse(&l.outcome).ok_or("unknown outcome")?,
        code: l.code,
        reason: l.reason,
        request_id: l.request_id,
        hash,
    })
}

/// `hash_n = SHA-256("pivault-audit-v1" || hash_{n-1} || json_n)`.
/// Event `seq`'s line into `line` (cleared first): its JSON, a space and
/// its chain hash on `prev` in hex, without the newline. Answers the hash.
fn chained_line(seq: u64, ev: &NewEvent, prev: &[u8; 32], line: &mut Vec<u8>) -> Result<[u8; 32]> {
    encode_event_into(seq, ev, line)?;
    let hash = chain_hash(prev, line);
    let mut hex_hash = [0u8; 64];
    hex::encode_to_slice(hash, &mut hex_hash).expect("64 hex digits");
    line.push(b' ');
    line.extend_from_slice(&hex_hash);
    Ok(hash)
}

fn chain_hash(prev: &[u8; 32], json: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev);
    h.update(json);
    h.finalize().into()
}

/// The signed bytes of a checkpoint: fixed-width, domain-separated, so the
/// encoding is unambiguous and easy to reproduce outside this crate.
fn checkpoint_message(seq: u64, head: &[u8; 32], time_ms: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + 8 + 32 + 8);
    m.extend_from_slice(CHECKPOINT_DOMAIN);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m
}

/// The signed bytes of a version 2 checkpoint: version 1's fields, then the
/// previous checkpoint's hash.
fn checkpoint_message_v2(seq: u64, head: &[u8; 32], time_ms: i64, prev: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_DOMAIN_V2.len() + 8 + 32 + 8 + 32);
    m.extend_from_slice(CHECKPOINT_DOMAIN_V2);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(prev);
    m
}

/// `SHA-256("pivault-audit-checkpoint-hash-v1" || line)`, the line without its newline.
fn checkpoint_hash(line: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CHECKPOINT_HASH_DOMAIN);
    h.update(line);
    h.finalize().into()
}

/// Encodes a checkpoint: version 2 when it has a previous hash, else version 1.
fn encode_checkpoint(cp: &Checkpoint) -> Result<Vec<u8>> {
    let r = match &cp.prev {
        Some(prev) => serde_json::to_vec(&CheckpointLineV2 {
            v: 2,
            seq: cp.seq,
            head: hex::encode(cp.head),
            prev: hex::encode(prev),
            time_ms: cp.time_ms,
            sig: hex::encode(cp.sig),
        }),
        None => serde_json::to_vec(&CheckpointLine {
            seq: cp.seq,
            head: hex::encode(cp.head),
            time_ms: cp.time_ms,
            sig: hex::encode(cp.sig),
        }),
    };
    r.map_err(|e| Error::AuditUnavailable(format!("cannot encode a checkpoint: {e}")))
}

/// Parses one checkpoint line (without its newline), version 1 or 2. Only
/// the canonical encoding is accepted, so no byte can change without
/// changing a value.
fn parse_checkpoint_line(line: &[u8]) -> Option<Checkpoint> {
    let cp = if line.starts_with(b"{\"v\":") {
        let l: CheckpointLineV2 = serde_json::from_slice(line).ok()?;
        if l.v != 2 || serde_json::to_vec(&l).ok()?.as_slice() != line {
            return None;
        }
        Checkpoint {
            seq: l.seq,
            head: decode_hex_lower::<32>(l.head.as_bytes())?,
            time_ms: l.time_ms,
            sig: decode_hex_lower::<64>(l.sig.as_bytes())?,
            prev: Some(decode_hex_lower::<32>(l.prev.as_bytes())?),
            hash: checkpoint_hash(line),
        }
    } else {
        let l: CheckpointLine = serde_json::from_slice(line).ok()?;
        if serde_json::to_vec(&l).ok()?.as_slice() != line {
            return None;
        }
        Checkpoint {
            seq: l.seq,
            head: decode_hex_lower::<32>(l.head.as_bytes())?,
            time_ms: l.time_ms,
            sig: decode_hex_lower::<64>(l.sig.as_bytes())?,
            prev: None,
            hash: checkpoint_hash(line),
        }
    };
    (cp.seq != 0).then_some(cp)
}

/// True when `checkpoints.log` in `dir` has a line at `seq` whose hash is
/// `hash` (signatures not checked): whether the checkpoint the records
/// database holds is still part of the files, so the database copy may
/// advance. An unreadable file counts as not found.
pub fn has_checkpoint(dir: &Path, seq: u64, hash: &[u8; 32]) -> bool {
    let Ok(bytes) = fs::read(dir.join(CHECKPOINTS_FILE)) else {
        return false;
    };
    Lines::new(&bytes).any(|(line, complete)| {
        complete && parse_checkpoint_line(line).is_some_and(|cp| cp.seq == seq && cp.hash == *hash)
    })
}

/// Parses and checks every checkpoint, stopping at the first bad one.
fn read_checkpoints(bytes: &[u8], key: &VerifyingKey) -> (Vec<Checkpoint>, Option<Finding>) {
    let mut out: Vec<Checkpoint> = Vec::new();
    for (i, (line, complete)) in Lines::new(bytes).enumerate() {
        let line_no = i + 1;
        if !complete {
            let problem = format!("{CHECKPOINTS_FILE} line {line_no} is incomplete");
            return (out, Some(Finding { seq: None, problem }));
        }
        let Some(cp) = parse_checkpoint_line(line) else {
            let problem = format!("{CHECKPOINTS_FILE} line {line_no} is not a valid checkpoint");
            return (out, Some(Finding { seq: None, problem }));
        };
        if !cp.signature_ok(key) {
            let problem = format!(
                "the checkpoint at seq {} ({CHECKPOINTS_FILE} line {line_no}): the signature does not verify with this key",
                cp.seq
            );
            return (out, Some(Finding::at(cp.seq, problem)));
        }
        if out.last().is_some_and(|p| cp.seq <= p.seq) {
            let problem = format!(
                "the checkpoint at seq {} ({CHECKPOINTS_FILE} line {line_no}) is out of order",
                cp.seq
            );
            return (out, Some(Finding::at(cp.seq, problem)));
        }
        // Chained checkpoints: each signs its predecessor's hash, and once
        // the chain has begun no unchained (version 1) line may follow.
        let prev_hash = out.last().map_or([0u8; 32], |p| p.hash);
        let chained = out.last().is_some_and(|p| p.prev.is_some());
        let broken = match &cp.prev {
            Some(p) => *p != prev_hash,
            None => chained,
        };
        if broken {
            let problem = format!(
                "the checkpoint at seq {} ({CHECKPOINTS_FILE} line {line_no}) does not chain to the one before it: \
                 a checkpoint was removed, inserted or replaced",
                cp.seq
            );
            return (out, Some(Finding::at(cp.seq, problem)));
        }
        out.push(cp);
    }
    (out, None)
}

/// Checks one event line against the expected seq and the previous hash;
/// returns its hash.
fn check_line(
    line: &[u8],
    expected: u64,
    prev: &[u8; 32],
) -> std::result::Result<AuditEvent, String> {
    let (body, stored) = split_line(line).ok_or("the line is not an event followed by its hash")?;
    let ev = decode_event(body, stored)?;
    if ev.seq != expected {
        let what = if ev.seq < expected {
            "an event was inserted or reordered"
        } else {
            "an event was deleted or reordered"
        };
        return Err(format!(
            "found seq {} where {expected} was expected: {what}",
            ev.seq
        ));
    }
    let hash = chain_hash(prev, body);
    if hash != stored {
        return Err("the chain hash does not match: the event or its hash was altered".into());
    }
    Ok(ev)
}

/// Splits an event line into its JSON and its stored hash.
fn split_line(line: &[u8]) -> Option<(&[u8], [u8; 32])> {
    let split = line.len().checked_sub(HASH_SUFFIX_LEN)?;
    let (body, tail) = line.split_at(split);
    let (sep, hex) = tail.split_first()?;
    if *sep != b' ' || body.is_empty() {
        return None;
    }
    Some((body, decode_hex_lower::<32>(hex)?))
}

/// Decodes exactly `2N` lowercase hex digits. Uppercase is refused so that a
/// case flip is a detectable change.
fn decode_hex_lower<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The seq and hash of an event line, as needed to resume appending.
fn parse_head(line: &[u8]) -> Result<(u64, [u8; 32])> {
    const BAD: Error = Error::Integrity("audit trail (last event unreadable)");
    let (body, hash) = split_line(line).ok_or(BAD)?;
    let ev = decode_event(body, hash).map_err(|_| BAD)?;
    // The cluster keeps numbers as `bigint`; none past it is the vault's.
    if ev.seq == 0 || ev.seq >= i64::MAX as u64 {
        return Err(BAD);
    }
    Ok((ev.seq, hash))
}

/// Whether the event at `cp`'s seq is on the trail with the chain hash `cp`
/// signed, linked to the event before it (`segments`, the last one's
/// complete bytes `last`). Read from the end: the last checkpoint is at
/// most a few hundred events back.
fn signed_event_on_chain(
    segments: &[(u64, PathBuf)],
    last: &[u8],
    cp: &SignedHead,
) -> Result<bool> {
    const BAD: Error = Error::Integrity("audit trail (an event line unreadable)");
    // The signed event's body and hash, once found, waiting for the line
    // before it (maybe the last line of an earlier segment).
    let mut found: Option<(Vec<u8>, [u8; 32])> = None;
    for (i, (_, path)) in segments.iter().enumerate().rev() {
        let read;
        let bytes = if i + 1 == segments.len() {
            last
        } else {
            read = fs::read(path)?;
            &read[..complete_len(&read)]
        };
        for line in bytes.split(|b| *b == b'\n').rev().filter(|l| !l.is_empty()) {
            let (body, hash) = split_line(line).ok_or(BAD)?;
            let seq = decode_event(body, hash).map_err(|_| BAD)?.seq;
            if let Some((signed, signed_hash)) = &found {
                return Ok(seq + 1 == cp.seq && chain_hash(&hash, signed) == *signed_hash);
            }
            if seq == cp.seq {
                if hash != cp.head {
                    return Ok(false);
                }
                found = Some((body.to_vec(), hash));
            } else if seq < cp.seq {
                return Ok(false);
            }
        }
    }
    // The first event links to the zero hash.
    Ok(found.is_some_and(|(signed, hash)| cp.seq == 1 && chain_hash(&[0u8; 32], &signed) == hash))
}

/// The trail's last checkpoint line, read at open: it must verify with the
/// vault's own audit key. Anyone who can append to the trail can also add a
/// well-formed checkpoint line (the cluster's `add_checkpoint` holds no key
/// and checks none); taken at its word, it would hide the events before it
/// from the disowning at open, and the vault's next checkpoint would chain
/// to it.
fn own_checkpoint(line: &[u8], signer: &SigningKey) -> Result<SignedHead> {
    let cp = SignedHead::from_line(line).ok_or(Error::Integrity("audit checkpoints"))?;
    if !cp.signature_ok(&signer.verifying_key()) {
        return Err(Error::Integrity(
            "audit trail (its last checkpoint is not signed with the vault's audit key: someone without the key added it)",
        ));
    }
    Ok(cp)
}

/// Finds the head in earlier segments when the last one is empty (a crash
/// just after a rotation).
fn head_of_earlier(segments: &[(u64, PathBuf)]) -> Result<(u64, [u8; 32])> {
    for (_, path) in segments.iter().rev() {
        let bytes = fs::read(path)?;
        if bytes.is_empty() {
            continue;
        }
        if complete_len(&bytes) != bytes.len() {
            return Err(Error::Integrity("audit trail (incomplete segment)"));
        }
        if let Some(line) = last_line(&bytes) {
            return parse_head(line);
        }
    }
    Ok((0, [0u8; 32]))
}

/// Iterates over `\n`-terminated lines; the flag is false for a final
/// fragment without its newline.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lines { rest: bytes }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a [u8], bool);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (line, rest) = self.rest.split_at(i);
                self.rest = &rest[1..];
                Some((line, true))
            }
            None => {
                let line = self.rest;
                self.rest = &[];
                Some((line, false))
            }
        }
    }
}

/// Length of the prefix made of complete (newline-terminated) lines.
fn complete_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The last line of complete lines (without its newline), if any.
fn last_line(bytes: &[u8]) -> Option<&[u8]> {
    let body = bytes.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Some(&body[start..])
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:08}.log"))
}

/// The segment files in `dir`, in numeric order. Only names in the exact
/// canonical form count, so two spellings of one number cannot both be read.
/// The seq of a segment's first event, read from its first line alone
/// (`None` when it has no complete, readable first line).
fn first_seq(path: &Path) -> Result<Option<u64>> {
    use std::io::{BufRead as _, Read as _};
    let mut line = Vec::new();
    std::io::BufReader::new(File::open(path)?)
        .take(1 << 20)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(split_line(&line)
        .and_then(|(body, hash)| decode_event(body, hash).ok())
        .map(|ev| ev.seq))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".log"))
        else {
            continue;
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(n) = digits.parse::<u64>() else {
            continue;
        };
        if format!("seg-{n:08}.log") == name {
            out.push((n, entry.path()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// Rejects event fields that could carry personal information or break the
/// line format: the trail must stay PI-free (REQ-MON-02).
fn validate(ev: &NewEvent) -> Result<()> {
    let action_ok = (1..=64).contains(&ev.action.len())
        && ev.action.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !action_ok {
        return Err(Error::invalid(
            "audit action must be 1-64 characters of a-z, 0-9, '.', '_' or '-'",
        ));
    }
    let token_ok = |s: &str, max: usize| {
        (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !ev.targets.iter().all(|t| token_ok(t, 128)) {
        return Err(Error::invalid(
            "audit targets must be IDs: 1-128 printable ASCII characters without spaces",
        ));
    }
    if ev.source.as_deref().is_some_and(|s| !token_ok(s, 128)) {
        return Err(Error::invalid(
            "audit source must be an address: 1-128 printable ASCII characters without spaces",
        ));
    }
    if ev.request_id.as_deref().is_some_and(|s| !token_ok(s, 128)) {
        return Err(Error::invalid(
            "request ID must be 1-128 printable ASCII characters without spaces",
        ));
    }
    let code_ok = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            })
    };
    if ev.code.as_deref().is_some_and(|c| !code_ok(c)) {
        return Err(Error::invalid(
            "audit code must be 1-64 characters of a-z, 0-9, '_', '.' or '-'",
        ));
    }
    if let Some(r) = &ev.reason {
        check_reason(r)?;
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

fn create_private_file(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Opens a file for appending (creating it 0600 if asked).
fn open_append(path: &Path, create: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Fsyncs a directory so a newly created file's entry survives a power loss.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_refuses_control_and_bidi_characters_and_names_no_value() {
        for bad in [
            "a\u{202E}b",
            "a\nb",
            "a\u{2066}b",
            "a\u{200F}b",
            "a\u{0007}b",
        ] {
            let e = check_text("title", bad, 200).unwrap_err().to_string();
            assert!(e.contains("title") && !e.contains(bad), "{e}");
        }
        assert!(check_text("title", "Records Manager, Ünïcode ok", 200).is_ok());
        assert!(check_text("title", &"x".repeat(201), 200).is_err());
        assert!(check_reason("annual review \u{202E}").is_err());
    }
    use std::str::FromStr;

    #[test]
    fn borrowed_encoding_is_byte_identical_to_the_stored_form() {
        let mut ev = NewEvent::new(
            1_700_000_000_123,
            Some(user(3)),
            Channel::Http,
            "record.reveal",
            Outcome::Denied,
        );
        ev.source = Some("198.51.100.7".into());
        ev.targets = vec!["a".into(), "field:ssn".into()];
        ev.code = Some("permission_denied".into());
        ev.reason = Some("customer \"called\" back".into());
        ev.request_id = Some("req-1".into());
        for ev in [
            ev,
            NewEvent::new(5, None, Channel::Cli, "vault.init", Outcome::Success),
        ] {
            let owned = EventLine {
                seq: 42,
                time_ms: ev.time_ms,
                actor: ev.actor.map(|a| a.to_string()),
                channel: ev.channel.as_str().to_owned(),
                source: ev.source.clone(),
                action: ev.action.clone(),
                targets: ev.targets.clone(),
                outcome: ev.outcome.as_str().to_owned(),
                code: ev.code.clone(),
                reason: ev.reason.clone(),
                request_id: ev.request_id.clone(),
            };
            let mut out = vec![1, 2, 3];
            encode_event_into(42, &ev, &mut out).unwrap();
            assert_eq!(out, serde_json::to_vec(&owned).unwrap());
        }
    }

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn user(n: u8) -> UserId {
        UserId::from_bytes([n; 16])
    }

    fn read_event(i: u64) -> NewEvent {
        let mut ev = NewEvent::new(
            1_700_000_000_000 + i as i64,
            Some(user(1)),
            Channel::Http,
            "record.read",
            Outcome::Success,
        );
        ev.source = Some("127.0.0.1:5000".into());
        ev.targets = vec![format!("0190a6b2-0000-7000-8000-{i:012x}")];
        ev.request_id = Some(format!("req-{i}"));
        ev
    }

    fn fill(log: &mut AuditLog, n: u64) {
        for _ in 0..n {
            let next = log.head_seq() + 1;
            assert_eq!(log.append(read_event(next)).unwrap(), next);
        }
    }

    /// A fresh log with `n` events and a checkpoint at the end.
    fn fixture(n: u64) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, n);
        log.checkpoint(1_800_000_000_000).unwrap();
        (tmp, dir)
    }

    fn seg1(dir: &Path) -> PathBuf {
        segment_path(dir, 1)
    }

    fn lines_of(path: &Path) -> Vec<Vec<u8>> {
        let bytes = fs::read(path).unwrap();
        Lines::new(&bytes).map(|(l, _)| l.to_vec()).collect()
    }

    fn write_lines(path: &Path, lines: &[Vec<u8>]) {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        fs::write(path, out).unwrap();
    }

    /// Renumbers and re-hashes every line, as an attacker who knows the
    /// (public) chain algorithm would.
    fn rechain(lines: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut prev = [0u8; 32];
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let (body, _) = split_line(l).unwrap();
            let mut ev: EventLine = serde_json::from_slice(body).unwrap();
            ev.seq = i as u64 + 1;
            let json = serde_json::to_vec(&ev).unwrap();
            prev = chain_hash(&prev, &json);
            let mut line = json;
            line.push(b' ');
            line.extend_from_slice(hex::encode(prev).as_bytes());
            out.push(line);
        }
        out
    }

    fn check(dir: &Path) -> VerifyReport {
        verify(dir, &signer().verifying_key()).unwrap()
    }

    #[test]
    fn version_1_checkpoints_still_verify_and_version_2_chains_after_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 10);
        let (head, t) = (log.head_hash(), 1_700_000_000_000);
        drop(log);
        // A checkpoint line as an older build wrote it.
        let sig = signer().sign(&checkpoint_message(10, &head, t)).to_bytes();
        let v1 = encode_checkpoint(&Checkpoint {
            seq: 10,
            head,
            time_ms: t,
            sig,
            prev: None,
            hash: [0; 32],
        })
        .unwrap();
        write_lines(&dir.join(CHECKPOINTS_FILE), std::slice::from_ref(&v1));
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 5);
        log.checkpoint(t + 1).unwrap();
        let signed = log.last_signed().unwrap().clone();
        drop(log);
        let cps = lines_of(&dir.join(CHECKPOINTS_FILE));
        assert_eq!(cps.len(), 2);
        assert!(cps[1].starts_with(br#"{"v":2,"#));
        let expected_prev = format!("\"prev\":\"{}\"", hex::encode(checkpoint_hash(&v1)));
        assert!(String::from_utf8_lossy(&cps[1]).contains(&expected_prev));
        assert_eq!(SignedHead::from_line(&cps[1]).unwrap(), signed);
        assert!(signed.signature_ok(&signer().verifying_key()));
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.checkpoints, 2);

        // An unchained line after a chained one is a downgrade.
        let mut l = cps.clone();
        let sig = signer()
            .sign(&checkpoint_message(15, &signed.head, t))
            .to_bytes();
        l[1] = encode_checkpoint(&Checkpoint {
            seq: 15,
            head: signed.head,
            time_ms: t,
            sig,
            prev: None,
            hash: [0; 32],
        })
        .unwrap();
        l.push(cps[1].clone());
        write_lines(&dir.join(CHECKPOINTS_FILE), &l);
        let r = check(&dir);
        assert!(r.problem.unwrap().contains("out of order"));
        write_lines(&dir.join(CHECKPOINTS_FILE), &[cps[1].clone()]);
        let r = check(&dir);
        assert!(
            r.problem.unwrap().contains("does not chain"),
            "v2 line without its predecessor"
        );
    }

    #[test]
    fn more_than_512_events_without_a_checkpoint_is_a_finding() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 600);
        drop(log);
        assert!(check(&dir).ok());
        let cp = dir.join(CHECKPOINTS_FILE);
        let cps = lines_of(&cp);
        assert_eq!(cps.len(), 2); // 256, 512
        fs::remove_file(&cp).unwrap();
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(513), "{r:?}");
        assert!(
            r.problem
                .unwrap()
                .contains("no signed checkpoint covers seq 1 to 600")
        );
        // Only the first: 512 events then a checkpoint is allowed; 88 after it too.
        write_lines(&cp, &cps[1..]);
        let r = check(&dir);
        assert!(
            r.problem.as_deref().unwrap().contains("does not chain"),
            "{r:?}"
        );
    }

    /// The checkpoint lines after the first `keep`, removed: what a kill
    /// leaves while a checkpoint's fsyncs are still running.
    fn keep_checkpoints(dir: &Path, keep: usize) {
        let cp = dir.join(CHECKPOINTS_FILE);
        let cps = lines_of(&cp);
        write_lines(&cp, &cps[..keep]);
    }

    #[test]
    fn the_event_that_brings_a_checkpoint_due_waits_for_the_one_in_flight() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        let Place::Files(f) = &log.place else {
            unreachable!()
        };
        let writer = Arc::clone(&f.checkpoints);
        let lines = || {
            fs::read(segment_path(&dir, 1))
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        // The checkpoint at 256 cannot finish while its writer is held:
        // its fsyncs are still running.
        let held = writer.lock().unwrap();
        fill(&mut log, 2 * CHECKPOINT_EVERY - 1);
        std::thread::scope(|s| {
            let due = s.spawn(|| fill(&mut log, 1));
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(
                lines(),
                2 * CHECKPOINT_EVERY as usize - 1,
                "event 512 was written while the checkpoint at 256 was not yet durable"
            );
            drop(held);
            due.join().unwrap();
        });
        assert_eq!(lines(), 2 * CHECKPOINT_EVERY as usize);
        drop(log);
        assert_eq!(lines_of(&dir.join(CHECKPOINTS_FILE)).len(), 2);
    }

    #[test]
    fn disowning_events_after_kills_at_open_do_not_count_as_a_removed_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 2 * CHECKPOINT_EVERY - 1 + CHECKPOINT_EVERY);
        drop(log);
        // Killed with the checkpoint at 512 in flight: 511 events after
        // the one at 256.
        keep_checkpoints(&dir, 1);
        // An open disowns them (event 768) and is killed while the
        // checkpoint that event brought due is in flight.
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        log.disown_tail(1).unwrap();
        assert_eq!(log.head_seq(), 3 * CHECKPOINT_EVERY);
        drop(log);
        keep_checkpoints(&dir, 1);
        // The next open disowns them all again (769) and signs.
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        log.disown_tail(1).unwrap();
        log.checkpoint(1).unwrap();
        drop(log);
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.events, r.last_checkpoint_seq), (769, 769));
        // Two more ordinary events in the gap (513 with the 511) are one
        // too many, disowned or not.
        keep_checkpoints(&dir, 1);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 2);
        drop(log);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        log.disown_tail(1).unwrap();
        log.checkpoint(1).unwrap();
        drop(log);
        let r = check(&dir);
        assert!(
            r.problem
                .as_deref()
                .is_some_and(|p| p.contains("no signed checkpoint covers seq 257 to 772")),
            "{r:?}"
        );
    }

    #[test]
    fn the_records_database_checkpoint_names_a_truncation_or_a_deleted_checkpoint_log() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 20);
        log.checkpoint(5).unwrap();
        let stored = log.last_signed().cloned();
        drop(log);
        let anchors = Anchors {
            stored: stored.clone(),
            heads: vec![NamedHead {
                what: "certificate c1".into(),
                seq: 12,
                head: {
                    let evs = AuditLog::open(&dir, signer(), false)
                        .unwrap()
                        .events(&EventFilter::default())
                        .unwrap();
                    evs[11].hash
                },
            }],
            problems: vec![],
        };
        let key = signer().verifying_key();
        let r = verify_anchored(&dir, &key, &anchors).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.anchored_seq, r.heads_confirmed), (20, 1));

        let cp = dir.join(CHECKPOINTS_FILE);
        let cps = fs::read(&cp).unwrap();
        fs::remove_file(&cp).unwrap();
        let r = verify_anchored(&dir, &key, &anchors).unwrap();
        assert!(
            r.problem.unwrap().contains(
                "checkpoints.log deleted or truncated: the records database holds a checkpoint at seq 20"
            )
        );
        let path = seg1(&dir);
        let l = lines_of(&path);
        write_lines(&path, &l[..10]);
        let r = verify_anchored(&dir, &key, &anchors).unwrap();
        assert_eq!(r.first_bad_seq, Some(11));
        let p = r.problem.unwrap();
        assert!(p.contains("segment truncated: the trail ends at seq 10 but the records database holds a checkpoint at seq 20"), "{p}");
        assert!(p.contains("certificate c1 names the head at seq 12"), "{p}");
        write_lines(&path, &l);
        fs::write(&cp, cps).unwrap();
        assert!(verify_anchored(&dir, &key, &anchors).unwrap().ok());
    }

    #[test]
    fn a_segment_replaced_before_the_tail_is_disowned_gets_no_last_word() {
        let (_tmp, dir) = fixture(3);
        {
            let mut log = AuditLog::open(&dir, signer(), false).unwrap();
            fill(&mut log, 2);
        }
        let replace = || {
            let seg = segment_path(&dir, 1);
            fs::copy(&seg, seg.with_extension("new")).unwrap();
            fs::rename(seg.with_extension("new"), &seg).unwrap();
        };
        // Caught by the disowning event itself, or by an event appended
        // before it: either way events 4-5 (maybe an insider's) are not
        // signed over.
        for own_first in [false, true] {
            let mut log = AuditLog::open(&dir, signer(), false).unwrap();
            assert_eq!(log.undisowned(), Some((4, 5)));
            if own_first {
                fill(&mut log, 1);
            }
            replace();
            let r = if own_first {
                log.append(read_event(7)).map(|_| ())
            } else {
                log.disown_tail(1)
            };
            assert!(matches!(r, Err(Error::AuditUnavailable(_))), "{r:?}");
            drop(log);
            let log = AuditLog::open(&dir, signer(), false).unwrap();
            assert_eq!(
                log.undisowned().map(|(from, _)| from),
                Some(4),
                "the last word signed over events not disowned (own event first: {own_first})"
            );
        }
    }

    #[test]
    fn append_and_reopen_resume_seq_and_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        {
            let mut log = AuditLog::open(&dir, signer(), true).unwrap();
            assert_eq!(log.head_seq(), 0);
            fill(&mut log, 10);
        }
        let mut log = AuditLog::open(&dir, signer(), true).unwrap();
        assert_eq!(log.head_seq(), 10);
        assert_eq!(log.append(read_event(11)).unwrap(), 11);
        // No checkpoint over events found after the last one until they
        // are disowned.
        assert_eq!(log.undisowned(), Some((1, 10)));
        assert!(log.checkpoint(1).is_err(), "signed over undisowned events");
        log.disown_tail(1).unwrap();
        log.checkpoint(1).unwrap();
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!(
            (r.events, r.checkpoints, r.last_checkpoint_seq),
            (12, 1, 12)
        );
        assert_eq!(
            r.unvouched,
            vec![Unvouched {
                from: 1,
                to: 10,
                named_by: 12
            }]
        );
        let evs = log.events(&EventFilter::default()).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=12).collect::<Vec<_>>()
        );
        assert_eq!(evs[10].action, "record.read");
        assert_eq!(evs[10].actor, Some(user(1)));
        assert_eq!(evs[10].channel, Channel::Http);
        assert_eq!(evs[10].targets, read_event(11).targets);
        assert_eq!(evs[10].request_id.as_deref(), Some("req-11"));
        assert_eq!(evs[11].targets, vec!["events:1-10".to_owned()]);
        // The stored hash is the recomputed chain head.
        assert_eq!(evs[11].hash, log.head_hash);
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, dir) = fixture(1);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(seg1(&dir)).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let cp = dir.join(CHECKPOINTS_FILE);
        assert_eq!(
            fs::metadata(cp).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn clean_log_of_600_events_across_segments_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        log.set_segment_limit(16 * 1024);
        fill(&mut log, 600);
        assert_eq!(log.last_checkpoint_seq(), 512);
        log.checkpoint(2).unwrap();
        log.checkpoint(3).unwrap(); // nothing new: no duplicate checkpoint
        let segs = list_segments(&dir).unwrap();
        assert!(
            segs.len() > 3,
            "expected several segments, got {}",
            segs.len()
        );
        for (_, p) in &segs {
            assert!(fs::metadata(p).unwrap().len() <= 16 * 1024);
        }
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!(
            (r.events, r.checkpoints, r.last_checkpoint_seq),
            (600, 3, 600)
        );

        // Reading across segments, with filters.
        let all = log.events(&EventFilter::default()).unwrap();
        assert_eq!(all.len(), 600);
        let page = log
            .events(&EventFilter {
                from_seq: Some(250),
                to_seq: Some(400),
                limit: Some(10),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (250..260).collect::<Vec<_>>()
        );
        let window = log
            .events(&EventFilter {
                from_ms: Some(1_700_000_000_000 + 100),
                to_ms: Some(1_700_000_000_000 + 200),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(window.len(), 100);
        assert_eq!(window[0].seq, 100);

        // Reopen continues in the last segment and the chain still verifies.
        drop(log);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        assert_eq!(log.head_seq(), 600);
        fill(&mut log, 5);
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.events, 605);
    }

    #[test]
    fn every_single_byte_change_is_detected_at_its_line() {
        let (_tmp, dir) = fixture(3);
        let path = seg1(&dir);
        let orig = fs::read(&path).unwrap();
        assert!(check(&dir).ok());
        for pos in 0..orig.len() {
            let line_seq = orig[..pos].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            let b = orig[pos];
            for new in [b ^ 0x01, b ^ 0x20, b ^ 0x80, b'\n', b' ', b'0', b'a', b'"'] {
                if new == b {
                    continue;
                }
                let mut bytes = orig.clone();
                bytes[pos] = new;
                fs::write(&path, &bytes).unwrap();
                let r = check(&dir);
                assert!(!r.ok(), "byte {pos} {b:#x}->{new:#x} undetected");
                assert_eq!(
                    r.first_bad_seq,
                    Some(line_seq),
                    "byte {pos} {b:#x}->{new:#x}: {r:?}"
                );
            }
        }
        fs::write(&path, &orig).unwrap();

        // The checkpoint log is just as sensitive.
        let cp_path = dir.join(CHECKPOINTS_FILE);
        let cp_orig = fs::read(&cp_path).unwrap();
        for pos in 0..cp_orig.len() {
            let b = cp_orig[pos];
            for new in [b ^ 0x01, b ^ 0x20, b ^ 0x80, b'\n', b' '] {
                if new == b {
                    continue;
                }
                let mut bytes = cp_orig.clone();
                bytes[pos] = new;
                fs::write(&cp_path, &bytes).unwrap();
                assert!(
                    !check(&dir).ok(),
                    "checkpoint byte {pos} {b:#x}->{new:#x} undetected"
                );
            }
        }
        fs::write(&cp_path, &cp_orig).unwrap();
        assert!(check(&dir).ok());
    }

    #[test]
    fn deletion_insertion_swap_and_truncation_name_the_first_bad_seq() {
        let (_tmp, dir) = fixture(20);
        let path = seg1(&dir);
        let orig = lines_of(&path);
        assert_eq!(orig.len(), 20);

        // Deleted event 7.
        let mut l = orig.clone();
        l.remove(6);
        write_lines(&path, &l);
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(7), "{r:?}");
        assert_eq!(r.events, 6);

        // Events 7 and 8 swapped.
        let mut l = orig.clone();
        l.swap(6, 7);
        write_lines(&path, &l);
        assert_eq!(check(&dir).first_bad_seq, Some(7));

        // A copy of event 3 inserted after event 9.
        let mut l = orig.clone();
        l.insert(9, orig[2].clone());
        write_lines(&path, &l);
        assert_eq!(check(&dir).first_bad_seq, Some(10));

        // A forged event 10 inserted after event 9 (later events untouched).
        let mut forged = orig[9].clone();
        let (body, _) = split_line(&forged).unwrap();
        let body = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("record.read", "record.export");
        forged = format!("{body} {}", hex::encode([0u8; 32])).into_bytes();
        let mut l = orig.clone();
        l.insert(9, forged);
        write_lines(&path, &l);
        assert_eq!(check(&dir).first_bad_seq, Some(10));

        // Tail cut before the last checkpoint (seq 20).
        write_lines(&path, &orig[..15]);
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(16), "{r:?}");
        assert!(r.problem.as_deref().unwrap().contains("truncated"), "{r:?}");
        assert_eq!(r.events, 15);
        // …and the vault refuses to append to it.
        let e = AuditLog::open(&dir, signer(), false).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Integrity("audit trail (truncated before last checkpoint)")
            ),
            "{e}"
        );

        // Whole segment file removed.
        fs::remove_file(&path).unwrap();
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(1), "{r:?}");

        write_lines(&path, &orig);
        assert!(check(&dir).ok());
    }

    #[test]
    fn rechained_forgery_is_caught_by_the_signed_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 8);
        log.checkpoint(1).unwrap();
        fill(&mut log, 12);
        log.checkpoint(2).unwrap();
        drop(log);
        let path = seg1(&dir);
        let orig = lines_of(&path);

        // Insert a plausible event 10 and recompute every later hash.
        let mut l = orig.clone();
        l.insert(9, orig[9].clone());
        let l = rechain(&l);
        write_lines(&path, &l);
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(9), "{r:?}");
        assert_eq!(r.last_checkpoint_seq, 8);
        assert!(r.problem.unwrap().contains("checkpoint signed at seq 20"));

        // Delete an event and rechain: the log also ends before the checkpoint.
        let mut l = orig.clone();
        l.remove(3);
        write_lines(&path, &rechain(&l));
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(1), "{r:?}");
    }

    #[test]
    fn tail_after_last_checkpoint_is_not_vouched_for() {
        // Documented limit: events after the last checkpoint can be cut off.
        let (_tmp, dir) = fixture(20);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 5);
        drop(log);
        let path = seg1(&dir);
        let l = lines_of(&path);
        write_lines(&path, &l[..22]);
        let r = check(&dir);
        assert!(r.ok());
        assert_eq!(r.events, 22);
    }

    #[test]
    fn torn_last_line_is_repaired_on_open() {
        let (_tmp, dir) = fixture(5);
        let path = seg1(&dir);
        let good = fs::read(&path).unwrap();
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"seq":6,"time_ms":17"#);
        fs::write(&path, &torn).unwrap();
        let r = check(&dir);
        assert_eq!(r.first_bad_seq, Some(6), "{r:?}");
        assert!(r.problem.unwrap().contains("incomplete"));

        // A torn checkpoint line too.
        let cp_path = dir.join(CHECKPOINTS_FILE);
        let cp_good = fs::read(&cp_path).unwrap();
        let mut cp_torn = cp_good.clone();
        cp_torn.extend_from_slice(br#"{"seq":6,"he"#);
        fs::write(&cp_path, &cp_torn).unwrap();

        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        assert_eq!(log.head_seq(), 5);
        assert_eq!(fs::read(&path).unwrap(), good);
        assert_eq!(fs::read(&cp_path).unwrap(), cp_good);
        assert_eq!(log.append(read_event(6)).unwrap(), 6);
        log.checkpoint(9).unwrap();
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!((r.events, r.checkpoints), (6, 2));
    }

    #[test]
    fn empty_last_segment_after_rotation_resumes_from_the_previous_one() {
        let (_tmp, dir) = fixture(4);
        fs::write(segment_path(&dir, 2), b"{\"seq\":5").unwrap(); // torn: the whole segment goes
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        assert_eq!(log.head_seq(), 4);
        assert_eq!(fs::metadata(segment_path(&dir, 2)).unwrap().len(), 0);
        assert_eq!(log.append(read_event(5)).unwrap(), 5);
        drop(log);
        assert!(fs::metadata(segment_path(&dir, 2)).unwrap().len() > 0);
        let r = check(&dir);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.events, 5);
    }

    #[test]
    fn wrong_verifying_key_fails() {
        let (_tmp, dir) = fixture(3);
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        let r = verify(&dir, &other).unwrap();
        assert!(!r.ok());
        assert_eq!(r.first_bad_seq, Some(3));
        assert!(r.problem.unwrap().contains("signature"));
        assert_eq!(
            AuditLog::open(&dir, signer(), false)
                .unwrap()
                .verifying_key(),
            signer().verifying_key()
        );
    }

    #[test]
    fn checkpoint_written_every_256_events() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 255);
        assert_eq!(log.last_checkpoint_seq(), 0);
        fill(&mut log, 1);
        assert_eq!(log.last_checkpoint_seq(), 256);
        assert_eq!(lines_of(&dir.join(CHECKPOINTS_FILE)).len(), 1);
    }

    #[test]
    fn failed_write_fails_closed_and_does_not_advance() {
        let (_tmp, dir) = fixture(3);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        let before = fs::read(seg1(&dir)).unwrap();
        // A read-only handle: every write fails.
        log.files().segment = File::open(seg1(&dir)).unwrap();
        let e = log.append(read_event(4)).unwrap_err();
        assert!(matches!(e, Error::AuditUnavailable(_)), "{e}");
        assert_eq!(log.head_seq(), 3);
        // The undo could not be done on that handle either: stay closed.
        assert!(matches!(
            log.append(read_event(4)),
            Err(Error::AuditUnavailable(_))
        ));
        assert!(matches!(log.checkpoint(5), Err(Error::AuditUnavailable(_))));
        drop(log);
        assert_eq!(fs::read(seg1(&dir)).unwrap(), before);
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        assert_eq!(log.append(read_event(4)).unwrap(), 4);
        assert!(check(&dir).ok());
    }

    #[test]
    fn invalid_fields_are_rejected_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        let mut ev = read_event(1);
        ev.reason = Some("customer called, SSN 123-45-6789".into());
        assert!(matches!(log.append(ev), Err(Error::InvalidInput(_))));
        let mut ev = read_event(1);
        ev.targets = vec!["John Smith".into()];
        assert!(matches!(log.append(ev), Err(Error::InvalidInput(_))));
        let mut ev = read_event(1);
        ev.action = "Record Read".into();
        assert!(matches!(log.append(ev), Err(Error::InvalidInput(_))));
        assert_eq!(log.head_seq(), 0);
        let mut ev = read_event(1);
        ev.reason = Some("ticket #42, verified by phone".into());
        ev.code = Some("permission_denied".into());
        assert_eq!(log.append(ev).unwrap(), 1);
    }

    #[test]
    fn check_reason_rules() {
        assert!(check_reason("").is_ok());
        assert!(check_reason("customer asked for a correction, ticket 123").is_ok());
        assert!(check_reason("12a34 1-2-3").is_ok());
        assert!(check_reason(&"x".repeat(200)).is_ok());
        assert!(check_reason(&"é".repeat(200)).is_ok());
        assert!(matches!(
            check_reason(&"x".repeat(201)),
            Err(Error::InvalidInput(_))
        ));
        for bad in [
            "card 4111",
            "1234",
            "acct 0000123",
            "ssn 123-45-6789",
            "x１２３４",
        ] {
            match check_reason(bad) {
                Err(Error::InvalidInput(m)) => assert_eq!(
                    m,
                    "reason must not contain numbers of 4 or more digits (no personal information in the audit trail)"
                ),
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn activity_report_counts_the_fixture() {
        let (a, b) = (user(1), user(2));
        let ev = |actor: Option<UserId>, action: &str, outcome: Outcome| AuditEvent {
            seq: 0,
            time_ms: 0,
            actor,
            channel: Channel::Cli,
            source: None,
            action: action.into(),
            targets: vec![],
            outcome,
            code: None,
            reason: None,
            request_id: None,
            hash: [0; 32],
        };
        use Outcome::*;
        let mut events = vec![
            ev(Some(a), "auth.login", Success),
            ev(Some(a), "auth.login", Success),
            ev(Some(a), "auth.login", Failed),
            ev(Some(a), "record.read", Success),
            ev(Some(a), "record.read", Success),
            ev(Some(a), "record.read", Denied),
            ev(Some(a), "record.read", Failed),
            ev(Some(a), "record.reveal", Success),
            ev(Some(a), "record.export", Success),
            ev(Some(a), "record.export", Denied),
            ev(Some(a), "record.create", Success),
            ev(Some(a), "record.update", Success),
            // The summary of an import whose records each have their own
            // `record.create`: not a write of its own.
            ev(Some(a), "record.import", Success),
            ev(Some(a), "user.disable", Success),
            ev(None, "auth.login", Failed),
            ev(None, "key.epoch", Success),
        ];
        for _ in 0..5 {
            events.push(ev(Some(b), "auth.login", Failed));
        }
        events.push(ev(Some(b), "auth.lockout", Success));
        events.push(ev(Some(b), "auth.login", Denied));
        let report = activity_report(&events);
        assert_eq!(
            report,
            vec![
                UserActivity {
                    user: a,
                    reads: 2,
                    reveals: 1,
                    exports: 1,
                    writes: 2,
                    denials: 2,
                    logins: 2,
                    failed_logins: 1,
                    lockouts: 0,
                    unvouched: 0
                },
                UserActivity {
                    user: b,
                    reads: 0,
                    reveals: 0,
                    exports: 0,
                    writes: 0,
                    denials: 1,
                    logins: 0,
                    failed_logins: 5,
                    lockouts: 1,
                    unvouched: 0
                },
            ]
        );
        let mut touched_ev = ev(Some(a), "record.read", Success);
        touched_ev.targets = vec!["r1".into(), "s1".into()];
        let mut denied_ev = ev(Some(a), "record.read", Denied);
        denied_ev.targets = vec!["r2".into()];
        let t = targets_touched(&[touched_ev.clone(), touched_ev, denied_ev]);
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            vec![("r1".to_string(), 2), ("s1".to_string(), 2)]
        );
    }

    #[test]
    fn events_filter_by_actor_and_action() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut log = AuditLog::open(&dir, signer(), false).unwrap();
        fill(&mut log, 3);
        let mut ev = NewEvent::new(
            5,
            Some(user(2)),
            Channel::Cli,
            "auth.login",
            Outcome::Failed,
        );
        ev.code = Some("auth_failed".into());
        log.append(ev).unwrap();
        log.append(NewEvent::new(
            6,
            None,
            Channel::System,
            "key.epoch",
            Outcome::Success,
        ))
        .unwrap();
        let by_b = log
            .events(&EventFilter {
                actor: Some(user(2)),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_b.len(), 1);
        assert_eq!(by_b[0].seq, 4);
        assert_eq!(by_b[0].outcome, Outcome::Failed);
        assert_eq!(by_b[0].code.as_deref(), Some("auth_failed"));
        let auth = log
            .events(&EventFilter {
                action_prefix: Some("auth.".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(auth.len(), 1);
        let sys = log
            .events(&EventFilter {
                action_prefix: Some("key.".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((sys[0].actor, sys[0].channel), (None, Channel::System));
        assert_eq!(
            log.events(&EventFilter {
                limit: Some(2),
                ..Default::default()
            })
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn verify_never_panics_on_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        fs::create_dir(&dir).unwrap();
        let key = signer().verifying_key();
        assert!(verify(&dir, &key).unwrap().ok()); // empty trail
        assert!(verify(&tmp.path().join("missing"), &key).is_err());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"{}\":,0123456789abcdef \n-seqtime_msactor[]nul\xff\x00";
        for round in 0..300 {
            let len = (rnd() % 400) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize])
                .collect();
            let target = if round % 2 == 0 {
                segment_path(&dir, 1)
            } else {
                dir.join(CHECKPOINTS_FILE)
            };
            fs::write(&target, &bytes).unwrap();
            let _ = verify(&dir, &key).unwrap();
            let _ =
                AuditLog::open(&dir, signer(), false).map(|l| l.events(&EventFilter::default()));
        }
    }

    #[test]
    fn channel_and_outcome_names_round_trip() {
        for c in [Channel::Cli, Channel::Http, Channel::Local, Channel::System] {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        for o in [Outcome::Success, Outcome::Denied, Outcome::Failed] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(UserId::from_str(&user(3).to_string()).unwrap(), user(3));
    }
}
