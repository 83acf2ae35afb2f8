//! Anchors of the audit trail outside the audit directory (issue 10,
//! "Insiders"): the latest signed checkpoint copied into the records
//! database, the heads named by certificates of destruction, and heads
//! exported for an outside witness with their RFC 3161 time-stamp responses.
//! Someone who can rewrite `<vault>/audit` alone (truncate a segment, edit
//! and re-chain events, delete `checkpoints.log`) no longer goes unseen.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Session, Vault};
use crate::access::Permission;
use crate::audit::{self, Anchors, AuditLog, NamedHead, SignedHead, VerifyReport};
use crate::certificate::Certificate;
use crate::error::{Error, Result};
use crate::store;
use crate::timestamp::{self, TimestampInfo};

/// Records-database key of the latest checkpoint line (CF `meta`).
const META_AUDIT_CHECKPOINT: &[u8] = b"audit-checkpoint";
/// Prefix of exported heads (`audit-anchor/<seq, 20 digits>` -> head JSON).
const META_ANCHOR_PREFIX: &[u8] = b"audit-anchor/";
/// Prefix of stored time-stamp responses (`audit-tsr/<seq, 20 digits>`).
const META_TSR_PREFIX: &[u8] = b"audit-tsr/";
/// `format` of an exported head.
const ANCHOR_FORMAT: &str = "pivault-audit-anchor-v1";

/// Whether the records database's checkpoint may advance.
#[derive(Debug, Default)]
pub(crate) struct AnchorState {
    /// The database's checkpoint is not in `checkpoints.log` (found at
    /// open): the audit directory was rewritten, so the database copy is kept
    /// as evidence and never overwritten by this process.
    frozen: bool,
    /// Seq of the checkpoint the database holds (0 if none).
    stored_seq: u64,
}

impl AnchorState {
    /// Reads the database's checkpoint and checks it is still in the trail
    /// (its files, or its rows on the records cluster).
    /// An unreadable value freezes it too (and `audit verify` names it): the
    /// vault still opens, so that the problem can be looked at.
    pub(crate) fn load(store: &store::Store, log: &audit::AuditLog) -> Result<AnchorState> {
        Ok(match stored_checkpoint(store) {
            Ok(None) => AnchorState::default(),
            Ok(Some(st)) => AnchorState {
                frozen: !log.has_checkpoint(st.seq, &st.checkpoint_hash),
                stored_seq: st.seq,
            },
            Err(Error::Integrity(_)) => AnchorState {
                frozen: true,
                stored_seq: u64::MAX,
            },
            Err(e) => return Err(e),
        })
    }
}

/// The checkpoint line the records database holds, if any.
fn stored_checkpoint(store: &store::Store) -> Result<Option<SignedHead>> {
    match store.get(store::CF_META, META_AUDIT_CHECKPOINT)? {
        None => Ok(None),
        Some(line) => SignedHead::from_line(&line)
            .map(Some)
            .ok_or(Error::Integrity("audit checkpoint in the records database")),
    }
}

fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{seq:020}").as_bytes());
    k
}

/// A head exported by `audit anchor`: the JSON to give to an outside
/// witness and the time-stamp request over its SHA-256.
#[derive(Debug, Clone)]
pub struct AnchorExport {
    /// The signed head, as JSON text (the exact bytes the request stamps).
    pub head_json: String,
    /// The RFC 3161 `TimeStampReq`, DER.
    pub request: Vec<u8>,
    /// The seq of the head.
    pub seq: u64,
}

/// A stored time-stamp response.
#[derive(Debug, Clone)]
pub struct StoredTimestamp {
    /// The seq of the head it stamps.
    pub seq: u64,
    /// What the response says.
    pub info: TimestampInfo,
}

impl Vault {
    /// Copies the latest durable checkpoint into the records database when
    /// it is newer than the one held there and signed by this vault's key.
    /// Called with the audit log locked, after anything that may have written
    /// a checkpoint. A failed write is left for the next call: the database
    /// may lag the files, never lead them.
    pub(crate) fn sync_anchor(&self, log: &AuditLog) {
        let Ok(mut st) = self.anchor.lock() else {
            return;
        };
        if st.frozen {
            return;
        }
        let Some(head) = log.last_signed() else {
            return;
        };
        if head.seq <= st.stored_seq || !head.signature_ok(&self.audit_public_key()) {
            return;
        }
        if self
            .store
            .put(store::CF_META, META_AUDIT_CHECKPOINT, head.line.as_bytes())
            .is_ok()
        {
            st.stored_seq = head.seq;
            // The trail up to this durable checkpoint names no later
            // state generation than the digest's: the next open reads on
            // from here (a failure leaves it reading from further back).
            let _ = self.store.note_trail_checked(head.seq, head.head);
        }
    }

    /// Signs a checkpoint of the head now if events were appended since the
    /// last one, and copies it into the records database: the server's
    /// time-based checkpoint, so a quiet vault's latest events are covered.
    pub fn checkpoint_now(&self) -> Result<()> {
        self.store.check_lease()?;
        self.name_state()?;
        let mut log = self
            .audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
        let r = log.checkpoint(self.now());
        self.sync_anchor(&log);
        r
    }

    /// Everything outside the audit directory the trail must agree with.
    fn anchors(&self) -> Result<Anchors> {
        let mut anchors = Anchors::default();
        match stored_checkpoint(&self.store) {
            Ok(stored) => anchors.stored = stored,
            Err(Error::Integrity(_)) => anchors
                .problems
                .push("the audit checkpoint the records database holds cannot be read".into()),
            Err(e) => return Err(e),
        }
        self.store.for_each(store::CF_CERTIFICATES, |key, value| {
            let id = String::from_utf8_lossy(key).into_owned();
            let head = std::str::from_utf8(value)
                .ok()
                .and_then(|t| Certificate::parse(t).ok())
                .and_then(|c| {
                    let a = c.body.get("audit")?;
                    let seq = a.get("checkpoint_seq")?.as_u64()?;
                    let head = hex::decode(a.get("head_hash")?.as_str()?).ok()?;
                    Some((seq, <[u8; 32]>::try_from(head).ok()?))
                });
            match head {
                Some((seq, head)) => anchors.heads.push(NamedHead {
                    what: format!("certificate {id}"),
                    seq,
                    head,
                }),
                None => anchors
                    .problems
                    .push(format!("certificate {id}: its audit head cannot be read")),
            }
            Ok(())
        })?;
        for (_, value) in self.store.scan_prefix(store::CF_META, META_TSR_PREFIX)? {
            let entry: Option<(String, Vec<u8>)> =
                serde_json::from_slice::<Value>(&value).ok().and_then(|v| {
                    Some((
                        v.get("head")?.as_str()?.to_owned(),
                        hex::decode(v.get("tsr")?.as_str()?).ok()?,
                    ))
                });
            let Some((head_json, tsr)) = entry else {
                anchors
                    .problems
                    .push("a stored time-stamp response cannot be read".into());
                continue;
            };
            let Some((seq, head)) = parse_anchor(&head_json) else {
                anchors
                    .problems
                    .push("a time-stamped head cannot be read".into());
                continue;
            };
            if let Err(why) = timestamp::check_response(head_json.as_bytes(), &tsr) {
                anchors.problems.push(format!(
                    "the time-stamp response for the head at seq {seq}: {why}"
                ));
            }
            anchors.heads.push(NamedHead {
                what: "a time-stamped head".into(),
                seq,
                head,
            });
        }
        Ok(anchors)
    }

    /// Verifies the trail and its anchors, unaudited: `audit verify` and
    /// `doctor` both use it.
    pub(crate) fn verify_trail(&self) -> Result<VerifyReport> {
        let reader = {
            let mut log = self
                .audit
                .lock()
                .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
            log.wait_for_checkpoint();
            self.sync_anchor(&log);
            log.reader()
        };
        let anchors = self.anchors()?;
        reader.verify_anchored(&self.audit_public_key(), &anchors)
    }

    /// Signs a checkpoint of the current head and exports it for an outside
    /// witness, with an RFC 3161 time-stamp request over the SHA-256 of the
    /// export (officer, auditor). The export is remembered so that the
    /// response can be stored with [`Vault::audit_timestamp`].
    pub fn audit_anchor(&self, s: &Session) -> Result<AnchorExport> {
        self.authorize(s, Some(Permission::ReadAudit))?;
        self.store.check_lease()?;
        let head = {
            let mut log = self
                .audit
                .lock()
                .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?;
            log.checkpoint(self.now())?;
            self.sync_anchor(&log);
            log.last_signed()
                .cloned()
                .ok_or_else(|| Error::invalid("the audit trail is empty"))?
        };
        let doc = json!({
            "format": ANCHOR_FORMAT,
            "vault_id": self.id().to_string(),
            "seq": head.seq,
            "head_hash": hex::encode(head.head),
            "checkpoint_hash": hex::encode(head.checkpoint_hash),
            "time": crate::clock::format_ms(head.time_ms),
            "time_ms": head.time_ms,
            "signature": hex::encode(head.sig),
            "checkpoint": head.line,
            "audit_public_key": hex::encode(self.audit_public_key().as_bytes()),
        });
        let mut head_json = serde_json::to_string_pretty(&doc).expect("JSON value");
        head_json.push('\n');
        self.store.put(
            store::CF_META,
            &seq_key(META_ANCHOR_PREFIX, head.seq),
            head_json.as_bytes(),
        )?;
        let mut nonce = [0u8; 8];
        crate::crypto::fill_random(&mut nonce);
        let digest: [u8; 32] = Sha256::digest(head_json.as_bytes()).into();
        let request = timestamp::request(&digest, u64::from_be_bytes(nonce) >> 1);
        self.audit(
            Some(s.user),
            &s.ctx,
            "audit.anchor",
            vec![format!("seq:{}", head.seq)],
            Ok(()),
            None,
        )?;
        Ok(AnchorExport {
            head_json,
            request,
            seq: head.seq,
        })
    }

    /// Stores an RFC 3161 time-stamp response for a head exported by
    /// [`Vault::audit_anchor`] (officer, auditor). Refused unless its imprint
    /// is the SHA-256 of one of those exports and its status is granted;
    /// `audit verify` re-checks it, and that the head is on the chain.
    pub fn audit_timestamp(&self, s: &Session, tsr: &[u8]) -> Result<StoredTimestamp> {
        self.authorize(s, Some(Permission::ReadAudit))?;
        let refuse = |why: String| Error::InvalidInput(format!("time-stamp response: {why}"));
        let imprint = timestamp::response_imprint(tsr).map_err(refuse)?;
        let head_json = self
            .store
            .scan_prefix(store::CF_META, META_ANCHOR_PREFIX)?
            .into_iter()
            .map(|(_, v)| v)
            .find(|v| <[u8; 32]>::from(Sha256::digest(v)) == imprint)
            .ok_or_else(|| {
                refuse(
                    "it stamps no head exported by `audit anchor` from this vault (made for a different head?)"
                        .into(),
                )
            })?;
        let info = timestamp::check_response(&head_json, tsr).map_err(refuse)?;
        let head_json =
            String::from_utf8(head_json).map_err(|_| Error::Integrity("exported audit head"))?;
        let (seq, _) = parse_anchor(&head_json).ok_or(Error::Integrity("exported audit head"))?;
        let value = json!({ "head": head_json, "tsr": hex::encode(tsr) });
        self.write_audited(
            s,
            store::CF_META,
            &seq_key(META_TSR_PREFIX, seq),
            Some(value.to_string().as_bytes()),
            ("audit.timestamp", vec![format!("seq:{seq}")], None),
        )?;
        Ok(StoredTimestamp { seq, info })
    }
}

/// The seq and head hash of an exported head.
fn parse_anchor(text: &str) -> Option<(u64, [u8; 32])> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("format")?.as_str()? != ANCHOR_FORMAT {
        return None;
    }
    let seq = v.get("seq")?.as_u64()?;
    let head = hex::decode(v.get("head_hash")?.as_str()?).ok()?;
    Some((seq, head.try_into().ok()?))
}
