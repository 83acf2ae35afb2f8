//! The audit trail in a business's log system (issue 12): one published,
//! versioned JSON form of an event (`schemas/audit-event.json`), its three
//! renderings — JSON lines, RFC 5424 syslog, ArcSight CEF — for
//! `audit export` and the server's syslog stream, the gap report a stream
//! sends when events were dropped, and the offline check of an exported
//! file (`audit verify --file`).
//!
//! Every rendering keeps each event's seq, the chain hash before it (`prev`)
//! and after it (`hash`), and every field the chain hashes, so the stored
//! JSON can be rebuilt and the chain recomputed from the file alone. Each
//! line is also re-rendered from what was parsed and must come out
//! byte-identical: a byte changed anywhere on a line is a failure, not
//! only a byte the hash covers (the syslog HOSTNAME is the one token taken
//! as found; it is transport, not event).
//!
//! # What a verified file proves
//!
//! An export begins with the signed checkpoint just before its first event
//! (none when it starts at seq 1), then the events, with every checkpoint
//! signed among them, and ends with a checkpoint of its last event. The
//! verifier, with the vault's audit public key only, checks that every
//! checkpoint's signature verifies, that consecutive checkpoints chain
//! (each signs its predecessor's hash), that the first event's `prev` is
//! the opening checkpoint's head, that each event's seq is the one before
//! plus one and its `prev` is the one before's `hash`, and that the chain
//! recomputed from the fields reaches the closing checkpoint's head. So the
//! span is unbroken between two signatures of the vault: no event in it was
//! changed, removed, inserted or reordered. It cannot say anything about
//! events before the span (a file cut at one of its checkpoints is a shorter
//! valid export: the report names the span, compare it with what was asked
//! for) nor after it.
//!
//! No field holds personal information: the trail stores IDs, codes and
//! addresses only ([`crate::audit`]); these renderings add the time, the
//! hashes and the syslog host name, nothing else.

use std::fmt::Write as _;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEvent, Channel, Outcome, SignedHead};
use crate::error::{Error, Result};
use crate::ids::UserId;

/// The `schema` of an event in every rendering (and the version of
/// `schemas/audit-event.json`): bump it when a field changes.
pub const EVENT_SCHEMA: &str = "pivault-audit-event/1";
/// The `schema` of a stream's gap report.
pub const GAP_SCHEMA: &str = "pivault-audit-gap/1";
/// The private enterprise number in syslog structured-data IDs. 32473 is
/// the one RFC 5612 reserves for documentation; a business that forwards
/// to a collector keyed on PENs can filter on `pivault@32473`.
pub const PEN: u32 = 32473;
/// RFC 5424 facility 13, "log audit".
const FACILITY: u8 = 13;

/// An export or stream format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON document per line (`schemas/audit-event.json`).
    Jsonl,
    /// RFC 5424 messages, one per line (the stream frames them per RFC 5425).
    Syslog,
    /// ArcSight Common Event Format, version 0.
    Cef,
}

impl Format {
    /// Parses `jsonl`, `syslog` or `cef`.
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "syslog" => Ok(Format::Syslog),
            "cef" => Ok(Format::Cef),
            _ => Err(Error::invalid("format must be jsonl, syslog or cef")),
        }
    }

    /// The name `parse` accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Syslog => "syslog",
            Format::Cef => "cef",
        }
    }
}

/// What `audit export` takes from the vault: the events of a span with the
/// chain hash before each, and the checkpoints that open and close it.
#[derive(Clone, Debug)]
pub struct ExportBundle {
    /// The checkpoint just before the first event (none when it is seq 1).
    pub opening: Option<SignedHead>,
    /// The events, in order, each with the chain hash before it.
    pub events: Vec<(AuditEvent, [u8; 32])>,
    /// Every checkpoint after the opening one up to the last event, the
    /// last of them covering the last event.
    pub checkpoints: Vec<SignedHead>,
}

impl ExportBundle {
    /// First exported seq (0 when empty).
    pub fn from_seq(&self) -> u64 {
        self.events.first().map_or(0, |(e, _)| e.seq)
    }

    /// Last exported seq (0 when empty).
    pub fn to_seq(&self) -> u64 {
        self.events.last().map_or(0, |(e, _)| e.seq)
    }

    /// The file: the opening checkpoint, then the events with each
    /// checkpoint after the event it covers, one line each.
    pub fn render(&self, format: Format, hostname: &str) -> String {
        let mut out = String::new();
        let mut cps = self.checkpoints.iter().peekable();
        if let Some(o) = &self.opening {
            out.push_str(&checkpoint_line(format, o, hostname));
            out.push('\n');
        }
        for (ev, prev) in &self.events {
            out.push_str(&event_line(format, ev, prev, hostname));
            out.push('\n');
            while let Some(cp) = cps.next_if(|c| c.seq <= ev.seq) {
                out.push_str(&checkpoint_line(format, cp, hostname));
                out.push('\n');
            }
        }
        out
    }
}

/// The JSON form of an event (`schemas/audit-event.json`). Field order is
/// the canonical order: a parsed event must re-encode to the same bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventDoc {
    schema: String,
    seq: u64,
    time: String,
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
    prev: String,
    hash: String,
}

/// The JSON form of a gap report (in `schemas/audit-event.json` too).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GapDoc {
    schema: String,
    first_missing_seq: u64,
    last_missing_seq: u64,
    missing: u64,
    time: String,
    time_ms: i64,
    reason: String,
}

/// RFC 3339 UTC with milliseconds, always three digits (canonical).
pub fn rfc3339_ms(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// The event as one line of JSON (the published schema).
pub fn event_json(ev: &AuditEvent, prev: &[u8; 32]) -> String {
    let doc = EventDoc {
        schema: EVENT_SCHEMA.to_owned(),
        seq: ev.seq,
        time: rfc3339_ms(ev.time_ms),
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
        prev: hex::encode(prev),
        hash: hex::encode(ev.hash),
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

/// The gap report's JSON: events `first..=last` were dropped (the stream's
/// queue overflowed while the collector was away) and will not be sent;
/// `audit export --since` recovers them from the vault.
pub fn gap_json(first: u64, last: u64, time_ms: i64) -> String {
    serde_json::to_string(&GapDoc {
        schema: GAP_SCHEMA.to_owned(),
        first_missing_seq: first,
        last_missing_seq: last,
        missing: last + 1 - first,
        time: rfc3339_ms(time_ms),
        time_ms,
        reason: "stream queue overflowed while the collector was unreachable".to_owned(),
    })
    .unwrap_or_default()
}

fn parse_event_json(s: &str) -> std::result::Result<(AuditEvent, [u8; 32]), String> {
    let d: EventDoc =
        serde_json::from_str(s).map_err(|_| "not an audit event in the published schema")?;
    if d.schema != EVENT_SCHEMA {
        return Err(format!(
            "unknown event schema (this build reads {EVENT_SCHEMA})"
        ));
    }
    let hex32 = |h: &str| -> std::result::Result<[u8; 32], String> {
        let v = hex::decode(h).map_err(|_| "a hash is not hex")?;
        v.try_into()
            .map_err(|_| "a hash is not 32 bytes".to_owned())
    };
    let ev = AuditEvent {
        seq: d.seq,
        time_ms: d.time_ms,
        actor: match &d.actor {
            Some(a) => Some(
                a.parse::<UserId>()
                    .map_err(|_| "the actor is not a user ID")?,
            ),
            None => None,
        },
        channel: Channel::parse(&d.channel).ok_or("unknown channel")?,
        source: d.source,
        action: d.action,
        targets: d.targets,
        outcome: Outcome::parse(&d.outcome).ok_or("unknown outcome")?,
        code: d.code,
        reason: d.reason,
        request_id: d.request_id,
        hash: hex32(&d.hash)?,
    };
    let prev = hex32(&d.prev)?;
    if event_json(&ev, &prev) != s {
        return Err("the line is not in canonical form (a byte was changed)".into());
    }
    Ok((ev, prev))
}

fn severity_syslog(o: Outcome) -> u8 {
    match o {
        Outcome::Success => 6,
        Outcome::Denied => 4,
        Outcome::Failed => 3,
    }
}

fn severity_cef(o: Outcome) -> u8 {
    match o {
        Outcome::Success => 3,
        Outcome::Denied => 6,
        Outcome::Failed => 7,
    }
}

/// An RFC 5424 host name: printable ASCII without spaces, at most 255, or `-`.
pub fn syslog_hostname(h: &str) -> String {
    let h: String = h
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if h.is_empty() { "-".to_owned() } else { h }
}

/// The machine's host name for the syslog HOSTNAME field, or `-`.
pub fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| syslog_hostname(h.trim()))
        .unwrap_or_else(|_| "-".to_owned())
}

/// RFC 5424 MSGID: at most 32 printable characters.
fn msgid(action: &str) -> &str {
    &action[..action.len().min(32)]
}

/// One RFC 5424 message: `<PRI>1 TIME HOST pivault - MSGID [SD] BOM JSON`.
fn syslog_message(sev: u8, time_ms: i64, host: &str, id: &str, sd: &str, msg: &str) -> String {
    format!(
        "<{}>1 {} {} pivault - {} {sd} \u{feff}{msg}",
        u16::from(FACILITY) * 8 + u16::from(sev),
        rfc3339_ms(time_ms),
        syslog_hostname(host),
        msgid(id)
    )
}

/// CEF extension value escaping (`\`, `=`, newlines).
fn cef_escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '=' => o.push_str("\\="),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o
}

/// CEF header field escaping (`\`, `|`).
fn cef_header(v: &str) -> String {
    v.replace('\\', "\\\\").replace('|', "\\|")
}

/// One event in `format`, without a newline.
pub fn event_line(format: Format, ev: &AuditEvent, prev: &[u8; 32], host: &str) -> String {
    match format {
        Format::Jsonl => event_json(ev, prev),
        Format::Syslog => {
            let sd = format!(
                "[pivault@{PEN} seq=\"{}\" hash=\"{}\" prev=\"{}\"]",
                ev.seq,
                hex::encode(ev.hash),
                hex::encode(prev)
            );
            syslog_message(
                severity_syslog(ev.outcome),
                ev.time_ms,
                host,
                &ev.action,
                &sd,
                &event_json(ev, prev),
            )
        }
        Format::Cef => {
            let mut ext = format!(
                "rt={} act={} outcome={} cn1Label=seq cn1={} cs1Label=hash cs1={} cs2Label=prev cs2={} \
                 cs3Label=channel cs3={}",
                ev.time_ms,
                cef_escape(&ev.action),
                ev.outcome.as_str(),
                ev.seq,
                hex::encode(ev.hash),
                hex::encode(prev),
                ev.channel.as_str()
            );
            let targets = serde_json::to_string(&ev.targets).unwrap_or_default();
            let _ = write!(ext, " cs4Label=targets cs4={}", cef_escape(&targets));
            if let Some(a) = ev.actor {
                let _ = write!(ext, " suid={a}");
            }
            if let Some(s) = &ev.source {
                let _ = write!(ext, " cs5Label=source cs5={}", cef_escape(s));
            }
            if let Some(c) = &ev.code {
                let _ = write!(ext, " cs6Label=code cs6={}", cef_escape(c));
            }
            if let Some(r) = &ev.request_id {
                let _ = write!(ext, " externalId={}", cef_escape(r));
            }
            if let Some(r) = &ev.reason {
                let _ = write!(ext, " reason={}", cef_escape(r));
            }
            format!(
                "CEF:0|pivault|pivault|1|{}|{}|{}|{ext}",
                cef_header(&ev.action),
                cef_header(&ev.action),
                severity_cef(ev.outcome)
            )
        }
    }
}

/// A signed checkpoint in `format`, without a newline: the checkpoint line
/// itself is carried whole, so its signature can be re-checked.
pub fn checkpoint_line(format: Format, cp: &SignedHead, host: &str) -> String {
    match format {
        Format::Jsonl => serde_json::json!({ "checkpoint": cp.line }).to_string(),
        Format::Syslog => syslog_message(
            5,
            cp.time_ms,
            host,
            "audit.checkpoint",
            &format!(
                "[pivault-checkpoint@{PEN} seq=\"{}\" head=\"{}\"]",
                cp.seq,
                hex::encode(cp.head)
            ),
            &cp.line,
        ),
        Format::Cef => format!(
            "CEF:0|pivault|pivault|1|audit.checkpoint|audit.checkpoint|1|rt={} cn1Label=seq cn1={} \
             cs1Label=head cs1={} msg={}",
            cp.time_ms,
            cp.seq,
            hex::encode(cp.head),
            cef_escape(&cp.line)
        ),
    }
}

/// A stream's gap report as an RFC 5424 message (severity warning).
pub fn gap_syslog(first: u64, last: u64, time_ms: i64, host: &str) -> String {
    syslog_message(
        4,
        time_ms,
        host,
        "audit.gap",
        &format!(
            "[pivault-gap@{PEN} first=\"{first}\" last=\"{last}\" missing=\"{}\"]",
            last + 1 - first
        ),
        &gap_json(first, last, time_ms),
    )
}

/// One parsed line of an exported file.
enum Item {
    Event(AuditEvent, [u8; 32]),
    Checkpoint(SignedHead),
}

/// Parses one line in any of the three formats, and checks that it is in
/// canonical form (re-rendered, it is the same bytes).
fn parse_line(line: &str) -> std::result::Result<Item, String> {
    if line.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(cp) = v.get("checkpoint").and_then(|c| c.as_str())
        {
            let head = SignedHead::from_line(cp.as_bytes()).ok_or("not a valid checkpoint")?;
            if checkpoint_line(Format::Jsonl, &head, "-") != line {
                return Err("the checkpoint line is not in canonical form".into());
            }
            return Ok(Item::Checkpoint(head));
        }
        let (ev, prev) = parse_event_json(line)?;
        return Ok(Item::Event(ev, prev));
    }
    if line.starts_with('<') {
        // <PRI>1 TIME HOST APP PROCID MSGID SD BOM MSG; only HOST is free.
        let mut parts = line.splitn(4, ' ');
        let (_, _, host) = (parts.next(), parts.next(), parts.next());
        let host = host.ok_or("not an RFC 5424 message")?;
        let msg = line
            .split_once('\u{feff}')
            .map(|(_, m)| m)
            .ok_or("no message after the structured data")?;
        let item = if line.contains(&format!(" audit.checkpoint [pivault-checkpoint@{PEN} ")) {
            Item::Checkpoint(SignedHead::from_line(msg.as_bytes()).ok_or("not a valid checkpoint")?)
        } else {
            let (ev, prev) = parse_event_json(msg)?;
            Item::Event(ev, prev)
        };
        let again = match &item {
            Item::Event(ev, prev) => event_line(Format::Syslog, ev, prev, host),
            Item::Checkpoint(cp) => checkpoint_line(Format::Syslog, cp, host),
        };
        if again != line {
            return Err("the syslog line is not in canonical form (a byte was changed)".into());
        }
        return Ok(item);
    }
    if let Some(rest) = line.strip_prefix("CEF:0|") {
        let ext = rest.splitn(7, '|').nth(6).ok_or("not a CEF line")?;
        let fields = cef_extension(ext);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let item = if rest.starts_with("pivault|pivault|1|audit.checkpoint|")
            && get("msg").is_some()
        {
            let msg = get("msg").unwrap_or_default();
            Item::Checkpoint(SignedHead::from_line(msg.as_bytes()).ok_or("not a valid checkpoint")?)
        } else {
            let need = |k: &str| get(k).ok_or_else(|| format!("the CEF extension lacks {k}"));
            let hex32 = |h: String| -> std::result::Result<[u8; 32], String> {
                let v = hex::decode(h).map_err(|_| "a hash is not hex")?;
                v.try_into()
                    .map_err(|_| "a hash is not 32 bytes".to_owned())
            };
            let ev = AuditEvent {
                seq: need("cn1")?.parse().map_err(|_| "seq is not a number")?,
                time_ms: need("rt")?.parse().map_err(|_| "rt is not a number")?,
                actor: match get("suid") {
                    Some(a) => Some(a.parse::<UserId>().map_err(|_| "suid is not a user ID")?),
                    None => None,
                },
                channel: Channel::parse(&need("cs3")?).ok_or("unknown channel")?,
                source: get("cs5"),
                action: need("act")?,
                targets: serde_json::from_str(&need("cs4")?)
                    .map_err(|_| "targets are not a JSON array")?,
                outcome: Outcome::parse(&need("outcome")?).ok_or("unknown outcome")?,
                code: get("cs6"),
                reason: get("reason"),
                request_id: get("externalId"),
                hash: hex32(need("cs1")?)?,
            };
            let prev = hex32(need("cs2")?)?;
            Item::Event(ev, prev)
        };
        let again = match &item {
            Item::Event(ev, prev) => event_line(Format::Cef, ev, prev, "-"),
            Item::Checkpoint(cp) => checkpoint_line(Format::Cef, cp, "-"),
        };
        if again != line {
            return Err("the CEF line is not in canonical form (a byte was changed)".into());
        }
        return Ok(item);
    }
    Err("not a line of an audit export (jsonl, syslog or cef)".into())
}

/// Splits a CEF extension into (key, unescaped value): every unescaped `=`
/// ends a key, which is the word before it.
fn cef_extension(ext: &str) -> Vec<(String, String)> {
    let b = ext.as_bytes();
    // Positions of unescaped '='.
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'=' => {
                eqs.push(i);
                i += 1
            }
            _ => i += 1,
        }
    }
    let key_start = |eq: usize| ext[..eq].rfind(' ').map_or(0, |s| s + 1);
    let mut out = Vec::new();
    for (n, &eq) in eqs.iter().enumerate() {
        let k = &ext[key_start(eq)..eq];
        let end = match eqs.get(n + 1) {
            Some(&next) => key_start(next).saturating_sub(1),
            None => ext.len(),
        };
        let raw = &ext[(eq + 1).min(end)..end];
        let mut v = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some(o) => v.push(o),
                    None => {}
                }
            } else {
                v.push(c);
            }
        }
        out.push((k.to_owned(), v));
    }
    out
}

/// The result of [`verify_file`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    /// Events whose seq, link and hash verified, before any problem.
    pub events: u64,
    /// First event seq in the file (0 if none).
    pub from_seq: u64,
    /// Last event seq that verified.
    pub to_seq: u64,
    /// Checkpoints whose signature and head verified.
    pub checkpoints: u64,
    /// The seq of the last checkpoint that verified (0 if none).
    pub last_checkpoint_seq: u64,
    /// The first seq that is bad, missing or not vouched for, when known.
    pub first_bad_seq: Option<u64>,
    /// What is wrong; `None` when the file verified.
    pub problem: Option<String>,
    /// The events the vault said it does not vouch for (`audit.unvouched`),
    /// among those that verified.
    pub unvouched: Vec<audit::Unvouched>,
}

impl FileReport {
    /// True when the file verified end to end.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }

    /// What the verification proves (and what it cannot), for people.
    pub fn proves(&self) -> String {
        if !self.ok() {
            return "nothing: the file failed verification".to_owned();
        }
        let mut proves = format!(
            "events {}..{} are unbroken and unaltered from the signed checkpoint before seq {} to the signed \
             checkpoint at seq {}; nothing is proven about events before seq {} or after seq {}",
            self.from_seq,
            self.to_seq,
            self.from_seq,
            self.last_checkpoint_seq,
            self.from_seq,
            self.to_seq
        );
        for u in &self.unvouched {
            proves.push_str(&format!(
                "; the vault does not vouch for events {}..{} (its event {}: found after its last checkpoint \
                 when it opened, written before an unclean stop or appended by someone else)",
                u.from, u.to, u.named_by
            ));
        }
        proves
    }

    fn fail(&mut self, seq: Option<u64>, problem: String) {
        self.first_bad_seq = seq;
        self.problem = Some(problem);
    }
}

/// Verifies an exported file (any of the three formats) with the vault's
/// audit public key alone. Names the first bad seq; never panics on
/// arbitrary input. See the module documentation for what it proves.
pub fn verify_file(text: &str, key: &VerifyingKey) -> FileReport {
    let mut r = FileReport::default();
    // The chain state: (seq, hash) of the last event or opening checkpoint.
    let mut at: Option<(u64, [u8; 32])> = None;
    let mut last_cp: Option<SignedHead> = None;
    let mut saw_event = false;
    // The chain hash after each event seen, for a checkpoint that arrives
    // after later events (a stream sends one when it becomes durable).
    let mut seen: std::collections::BTreeMap<u64, [u8; 32]> = std::collections::BTreeMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        r.fail(
            None,
            "the file does not end with a complete line (cut short)".into(),
        );
        return r;
    }
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let expected = at.map_or(0, |(s, _)| s) + 1;
        let item = match parse_line(line) {
            Ok(item) => item,
            Err(why) => {
                let seq = at.map(|_| expected);
                r.fail(
                    seq,
                    format!("line {line_no} (seq {expected} expected): {why}"),
                );
                return r;
            }
        };
        match item {
            Item::Checkpoint(cp) => {
                if !cp.signature_ok(key) {
                    r.fail(
                        Some(cp.seq),
                        format!("line {line_no}: the checkpoint at seq {}: the signature does not verify with this key", cp.seq),
                    );
                    return r;
                }
                if let Some(p) = &last_cp
                    && let Some(prev) = checkpoint_prev(&cp)
                    && prev != p.checkpoint_hash
                {
                    r.fail(
                        Some(cp.seq),
                        format!(
                            "line {line_no}: the checkpoint at seq {} does not chain to the one before it (seq {}): \
                             a checkpoint line was removed, inserted or replaced",
                            cp.seq, p.seq
                        ),
                    );
                    return r;
                }
                match at {
                    None if !saw_event => at = Some((cp.seq, cp.head)),
                    Some((s, h)) if s == cp.seq && h == cp.head => {}
                    Some((s, _)) if cp.seq < s && seen.get(&cp.seq) == Some(&cp.head) => {}
                    Some((s, _)) if s == cp.seq || seen.contains_key(&cp.seq) => {
                        r.fail(
                            Some(cp.seq),
                            format!(
                                "line {line_no}: the checkpoint signed at seq {} does not match the chain: an event \
                                 up to seq {} was altered",
                                cp.seq, cp.seq
                            ),
                        );
                        return r;
                    }
                    _ => {
                        r.fail(
                            Some(expected),
                            format!(
                                "line {line_no}: a checkpoint at seq {} where the file is at seq {}: an event was \
                                 removed or the lines reordered",
                                cp.seq,
                                expected - 1
                            ),
                        );
                        return r;
                    }
                }
                if saw_event {
                    r.checkpoints += 1;
                    r.last_checkpoint_seq = r.last_checkpoint_seq.max(cp.seq);
                }
                last_cp = Some(cp);
            }
            Item::Event(ev, prev) => {
                if !saw_event && at.is_none() {
                    if ev.seq != 1 || prev != [0u8; 32] {
                        r.fail(
                            Some(ev.seq),
                            format!(
                                "line {line_no}: the file starts at seq {} without the signed checkpoint before it \
                                 (its first line was removed?)",
                                ev.seq
                            ),
                        );
                        return r;
                    }
                    at = Some((0, [0u8; 32]));
                }
                let (s, h) = at.unwrap_or((0, [0u8; 32]));
                if ev.seq != s + 1 {
                    let what = if ev.seq <= s {
                        "an event was inserted or the lines reordered"
                    } else {
                        "an event was removed or the lines reordered"
                    };
                    r.fail(
                        Some(s + 1),
                        format!(
                            "line {line_no}: found seq {} where {} was expected: {what}",
                            ev.seq,
                            s + 1
                        ),
                    );
                    return r;
                }
                if prev != h {
                    r.fail(
                        Some(ev.seq),
                        format!(
                            "line {line_no}: event {} does not link to the one before it (its prev hash differs)",
                            ev.seq
                        ),
                    );
                    return r;
                }
                let body = match audit::event_body(&ev) {
                    Ok(b) => b,
                    Err(_) => {
                        r.fail(
                            Some(ev.seq),
                            format!("line {line_no}: event {} cannot be encoded", ev.seq),
                        );
                        return r;
                    }
                };
                if audit::chain_link(&prev, &body) != ev.hash {
                    r.fail(
                        Some(ev.seq),
                        format!(
                            "line {line_no}: event {}: the chain hash does not match: the event or its hash was altered",
                            ev.seq
                        ),
                    );
                    return r;
                }
                if !saw_event {
                    r.from_seq = ev.seq;
                }
                saw_event = true;
                r.events += 1;
                r.to_seq = ev.seq;
                at = Some((ev.seq, ev.hash));
                seen.insert(ev.seq, ev.hash);
                let last = last_cp.as_ref().map_or(0, |c| c.seq);
                r.unvouched
                    .extend(audit::unvouched_range(&ev).filter(|u| u.from == last + 1));
            }
        }
    }
    audit::drop_superseded(&mut r.unvouched);
    if !saw_event {
        r.fail(None, "the file holds no event".into());
    } else if r.last_checkpoint_seq != r.to_seq {
        r.fail(
            Some(r.last_checkpoint_seq.max(r.from_seq - 1) + 1),
            format!(
                "no signed checkpoint covers seq {} to {}: the file was cut short, or its last checkpoint removed",
                r.last_checkpoint_seq.max(r.from_seq - 1) + 1,
                r.to_seq
            ),
        );
    }
    r
}

/// The previous-checkpoint hash a version 2 checkpoint signs.
fn checkpoint_prev(cp: &SignedHead) -> Option<[u8; 32]> {
    let v: serde_json::Value = serde_json::from_str(&cp.line).ok()?;
    let h = hex::decode(v.get("prev")?.as_str()?).ok()?;
    h.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, NewEvent};
    use ed25519_dalek::SigningKey;

    fn bundle(n: usize) -> (tempfile::TempDir, ExportBundle, VerifyingKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let mut log = AuditLog::open(dir.path(), key.clone(), false).unwrap();
        for i in 0..n {
            let mut ev = NewEvent::new(
                1_700_000_000_000 + i as i64,
                Some(UserId::new()),
                Channel::Http,
                "record.read",
                Outcome::Success,
            );
            ev.targets = vec!["rec_1=2\\x|y".into(), "b".into()];
            ev.source = Some("127.0.0.1".into());
            ev.reason = Some("audit = review \\ weekly".into());
            ev.code = (i % 2 == 0).then(|| "permission_denied".into());
            ev.request_id = Some("req-1".into());
            log.append(ev).unwrap();
            if i == 2 {
                log.checkpoint(1).unwrap();
            }
        }
        log.checkpoint(2).unwrap();
        let heads = log.signed_heads().unwrap();
        let evs = log.events(&Default::default()).unwrap();
        // From seq 4: opened by the checkpoint at 3.
        let opening = heads.iter().find(|h| h.seq == 3).cloned();
        let events = evs[3..]
            .iter()
            .map(|e| (e.clone(), log.hash_at(e.seq - 1).unwrap()))
            .collect();
        let checkpoints = heads.into_iter().filter(|h| h.seq > 3).collect();
        (
            dir,
            ExportBundle {
                opening,
                events,
                checkpoints,
            },
            key.verifying_key(),
        )
    }

    #[test]
    fn every_format_round_trips_and_verifies() {
        let (_d, b, key) = bundle(6);
        for f in [Format::Jsonl, Format::Syslog, Format::Cef] {
            let text = b.render(f, "host-1");
            let r = verify_file(&text, &key);
            assert!(r.ok(), "{f:?}: {r:?}\n{text}");
            assert_eq!((r.from_seq, r.to_seq, r.events), (4, 6, 3), "{f:?}");
        }
    }

    #[test]
    fn any_changed_byte_or_line_fails() {
        let (_d, b, key) = bundle(6);
        for f in [Format::Jsonl, Format::Syslog, Format::Cef] {
            let text = b.render(f, "h");
            let bytes = text.as_bytes();
            // The syslog host name of each line is transport, taken as found.
            let mut hosts = Vec::new();
            let mut start = 0;
            for line in text.split_inclusive('\n') {
                if f == Format::Syslog {
                    let at = line.match_indices(' ').nth(1).map(|(i, _)| i + 1).unwrap();
                    hosts.push(start + at);
                }
                start += line.len();
            }
            for i in 0..bytes.len() {
                if hosts.contains(&i) {
                    continue;
                }
                let mut t = bytes.to_vec();
                t[i] ^= 0x01;
                let Ok(t) = String::from_utf8(t) else {
                    continue;
                };
                assert!(
                    !verify_file(&t, &key).ok(),
                    "{f:?}: byte {i} changed and still verified"
                );
            }
            let lines: Vec<&str> = text.lines().collect();
            for skip in 0..lines.len() {
                let t: String = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect();
                assert!(
                    !verify_file(&t, &key).ok(),
                    "{f:?}: line {skip} removed and still verified"
                );
            }
            let mut swapped = lines.clone();
            swapped.swap(1, 2);
            let t: String = swapped.iter().map(|l| format!("{l}\n")).collect();
            let r = verify_file(&t, &key);
            assert_eq!(r.first_bad_seq, Some(4), "{f:?}: {r:?}");
        }
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
        assert!(!verify_file(&b.render(Format::Jsonl, "-"), &other).ok());
    }

    #[test]
    fn time_is_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
