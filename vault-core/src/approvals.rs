//! The two-person rule (issue 10): granting the officer role, granting a
//! clerk the reveal of sensitive fields, and resetting an officer's password
//! wait as pending requests until an active officer other than the
//! requester approves them.
//!
//! A request is a row in the `meta` column family under `pending/<id>`:
//! user IDs, the username, role names and times, and for a new user or a
//! password reset only the new password's Argon2id PHC hash, never the
//! password. It is audited when created, approved or rejected, and expires
//! after [`APPROVAL_TTL_MS`] (an expired request can only be rejected).
//!
//! Bootstrap: while the vault has no active officer, an admin designates
//! the first one without approval (`set_role`, `add_user`); otherwise a new
//! vault could never get one.

use serde::{Deserialize, Serialize};

use super::{Session, Vault};
use crate::access::{Permission, Role, UserRow};
use crate::crypto;
use crate::error::{Error, Result};
use crate::ids::{UserId, Username};
use crate::store;

/// How long a pending request may be approved: 24 h.
pub const APPROVAL_TTL_MS: i64 = 24 * 60 * 60 * 1000;

const PREFIX: &[u8] = store::META_PENDING_PREFIX;

/// What a pending request changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Give an existing user a role (the officer role).
    Role,
    /// Create a user (an officer, or a clerk with the reveal grant).
    CreateUser,
    /// Reset an officer's password.
    PasswordReset,
    /// Give an existing clerk the reveal grant.
    RevealGrant,
}

impl RequestKind {
    /// Stable name, as stored and shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            RequestKind::Role => "role",
            RequestKind::CreateUser => "create_user",
            RequestKind::PasswordReset => "password_reset",
            RequestKind::RevealGrant => "reveal_grant",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "role" => Ok(RequestKind::Role),
            "create_user" => Ok(RequestKind::CreateUser),
            "password_reset" => Ok(RequestKind::PasswordReset),
            "reveal_grant" => Ok(RequestKind::RevealGrant),
            _ => Err(Error::Integrity("pending request")),
        }
    }
}

/// What callers see of a pending request (no password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// Request ID (`req_` and 32 hex digits).
    pub id: String,
    /// What it changes.
    pub kind: RequestKind,
    /// The user it concerns (to be created, for [`RequestKind::CreateUser`]).
    pub username: Username,
    /// The full name the new user gets (create), so the approver sees whom
    /// certificates will name.
    pub full_name: Option<String>,
    /// Existing user's ID (none for a user still to be created).
    pub user: Option<UserId>,
    /// The role granted or created.
    pub role: Role,
    /// Whether it grants reveal.
    pub reveal: bool,
    /// Who asked.
    pub requester: UserId,
    /// When, unix ms.
    pub created_ms: i64,
    /// Approvals are refused from this time on, unix ms.
    pub expires_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PendingRow {
    id: String,
    kind: String,
    username: String,
    user: Option<String>,
    role: String,
    reveal: bool,
    /// Argon2id PHC of the new password (create, reset); never the password.
    password_phc: Option<String>,
    /// The new user's full name (create), given by the admin who asked.
    #[serde(default)]
    full_name: Option<String>,
    requester: String,
    created_ms: i64,
    expires_ms: i64,
}

fn new_id() -> String {
    let mut raw = [0u8; 16];
    crypto::fill_random(&mut raw);
    format!("req_{}", hex::encode(raw))
}

impl PendingRow {
    fn base(kind: RequestKind, username: &str, role: Role, requester: UserId, now: i64) -> Self {
        PendingRow {
            id: new_id(),
            kind: kind.as_str().to_owned(),
            username: username.to_owned(),
            user: None,
            role: role.as_str().to_owned(),
            reveal: false,
            password_phc: None,
            full_name: None,
            requester: requester.to_string(),
            created_ms: now,
            expires_ms: now + APPROVAL_TTL_MS,
        }
    }

    pub(crate) fn role(row: &UserRow, role: Role, requester: UserId, now: i64) -> Self {
        PendingRow {
            user: Some(row.id.clone()),
            reveal: row.reveal,
            ..Self::base(RequestKind::Role, &row.username, role, requester, now)
        }
    }

    pub(crate) fn create(
        name: &Username,
        role: Role,
        reveal: bool,
        phc: String,
        full_name: Option<&str>,
        requester: UserId,
        now: i64,
    ) -> Self {
        PendingRow {
            reveal,
            password_phc: Some(phc),
            full_name: full_name.map(str::to_owned),
            ..Self::base(RequestKind::CreateUser, name.as_str(), role, requester, now)
        }
    }

    pub(crate) fn reveal_grant(row: &UserRow, requester: UserId, now: i64) -> Self {
        let role = Role::parse(&row.role).unwrap_or(Role::Clerk);
        PendingRow {
            user: Some(row.id.clone()),
            reveal: true,
            ..Self::base(
                RequestKind::RevealGrant,
                &row.username,
                role,
                requester,
                now,
            )
        }
    }

    pub(crate) fn password(row: &UserRow, phc: String, requester: UserId, now: i64) -> Self {
        let role = Role::parse(&row.role).unwrap_or(Role::Officer);
        PendingRow {
            user: Some(row.id.clone()),
            reveal: row.reveal,
            password_phc: Some(phc),
            ..Self::base(
                RequestKind::PasswordReset,
                &row.username,
                role,
                requester,
                now,
            )
        }
    }

    fn key(&self) -> Vec<u8> {
        [PREFIX, self.id.as_bytes()].concat()
    }

    fn targets(&self) -> Vec<String> {
        let mut t = vec![format!("request:{}", self.id)];
        if let Some(u) = &self.user {
            t.push(u.clone());
        }
        t.push(format!("kind:{}", self.kind));
        t.push(format!("role:{}", self.role));
        if self.reveal {
            t.push("reveal".to_owned());
        }
        t
    }

    fn public(&self) -> Result<PendingRequest> {
        Ok(PendingRequest {
            id: self.id.clone(),
            kind: RequestKind::parse(&self.kind)?,
            username: Username::parse(&self.username)?,
            full_name: self.full_name.clone(),
            user: self.user.as_deref().map(str::parse).transpose()?,
            role: Role::parse(&self.role)?,
            reveal: self.reveal,
            requester: self.requester.parse()?,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        })
    }
}

impl Vault {
    /// Stores a pending request and audits it; returns the error that
    /// tells the caller it waits for approval (or the failure).
    pub(super) fn create_request(&self, s: &Session, req: PendingRow) -> Error {
        let r = (|| {
            let key = req.key();
            self.store.put(
                store::CF_META,
                &key,
                &serde_json::to_vec(&req).expect("serialisable"),
            )?;
            self.audit_or_undo(s, "approval.request", req.targets(), || {
                self.store.delete(store::CF_META, &key)
            })
        })();
        match r {
            Ok(()) => Error::ApprovalRequired {
                request: req.id.clone(),
            },
            Err(e) => e,
        }
    }

    fn pending_rows(&self) -> Result<Vec<PendingRow>> {
        self.store
            .scan_prefix(store::CF_META, PREFIX)?
            .into_iter()
            .map(|(_, v)| {
                serde_json::from_slice(&v).map_err(|_| Error::Integrity("pending request"))
            })
            .collect()
    }

    /// Deletes every request past its approval window: none can be approved
    /// any more, and a new user's request holds their password's hash and
    /// full name. Audited (system, `approval.expire`) when it removed any;
    /// the server runs it with its session sweep. Returns how many.
    pub fn sweep_expired_requests(&self) -> Result<u64> {
        let now = self.now();
        let mut removed = 0u64;
        for r in self.pending_rows()? {
            if r.expires_ms <= now {
                self.store
                    .delete(store::CF_META, &[PREFIX, r.id.as_bytes()].concat())?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.audit(
                None,
                &super::maintenance::system_ctx(),
                "approval.expire",
                vec![format!("removed:{removed}")],
                Ok(()),
                None,
            )?;
        }
        Ok(removed)
    }

    /// Pending requests that can still be approved, oldest first (admins,
    /// officers, auditors).
    pub fn pending_requests(&self, s: &Session) -> Result<Vec<PendingRequest>> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::ReadAudit])?;
        let now = self.now();
        let mut out = self
            .pending_rows()?
            .iter()
            .filter(|r| r.expires_ms > now)
            .map(PendingRow::public)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|r| r.created_ms);
        self.audit(Some(s.user), &s.ctx, "approval.list", vec![], Ok(()), None)?;
        Ok(out)
    }

    fn pending_row(&self, id: &str) -> Result<PendingRow> {
        let bytes = self
            .store
            .get(store::CF_META, &[PREFIX, id.as_bytes()].concat())?
            .ok_or(Error::NotFound("pending request"))?;
        serde_json::from_slice(&bytes).map_err(|_| Error::Integrity("pending request"))
    }

    /// Approves a pending request and applies it. The approver must be an
    /// active officer other than the requester; an expired request is refused.
    pub fn approve_request(&self, s: &Session, id: &str) -> Result<()> {
        let me = self.authorize(s, None)?;
        let r = (|| {
            if me.role != Role::Officer.as_str() {
                return Err(Error::PermissionDenied("approve requests (officers only)"));
            }
            let req = self.pending_row(id)?;
            if req.requester == s.user.to_string() {
                return Err(Error::PermissionDenied(
                    "approve a request you made (a second officer must)",
                ));
            }
            if req.expires_ms <= self.now() {
                return Err(Error::invalid(
                    "the request expired (24 h); reject it and ask again",
                ));
            }
            Ok(req)
        })();
        let req = match r {
            Ok(req) => req,
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "approval.approve",
                    vec![format!("request:{id}")],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        let key = req.key();
        let _g = self.users_lock.lock().expect("users lock");
        let applied = (|| -> Result<Box<dyn FnOnce() -> Result<()> + '_>> {
            match RequestKind::parse(&req.kind)? {
                kind @ (RequestKind::Role
                | RequestKind::PasswordReset
                | RequestKind::RevealGrant) => {
                    let uid: UserId = req.user.as_deref().unwrap_or_default().parse()?;
                    let mut row = self.user_row(uid)?.ok_or(Error::NotFound("user"))?;
                    let before = row.clone();
                    match kind {
                        RequestKind::Role => {
                            // The last active admin does not leave its role this way either.
                            self.check_last_of_role(&row, false, Some(Role::parse(&req.role)?))?;
                            row.role = req.role.clone();
                        }
                        RequestKind::RevealGrant => {
                            // Granted to the clerk it was asked for, still a clerk.
                            if row.role != Role::Clerk.as_str() {
                                return Err(Error::invalid(
                                    "the user is no longer a clerk; ask again",
                                ));
                            }
                            row.reveal = true;
                        }
                        _ => row.password_phc = req.password_phc.clone().unwrap_or_default(),
                    }
                    row.generation += 1;
                    self.put_user_row(&row)?;
                    Ok(Box::new(move || self.put_user_row(&before)))
                }
                RequestKind::CreateUser => {
                    let name = Username::parse(&req.username)?;
                    if self.user_by_name(&name)?.is_some() {
                        return Err(Error::AlreadyExists("username"));
                    }
                    let uid = UserId::new();
                    let row = UserRow {
                        reveal: req.reveal,
                        full_name: req.full_name.clone(),
                        ..UserRow::new(
                            uid,
                            &req.username,
                            &req.role,
                            req.password_phc.clone().unwrap_or_default(),
                            self.now(),
                        )
                    };
                    self.put_user_row(&row)?;
                    self.store.put(
                        store::CF_USERNAMES,
                        name.as_str().as_bytes(),
                        uid.as_bytes(),
                    )?;
                    Ok(Box::new(move || {
                        self.store
                            .delete(store::CF_USERNAMES, name.as_str().as_bytes())?;
                        self.store.delete(store::CF_USERS, uid.as_bytes())
                    }))
                }
            }
        })();
        let r = match applied {
            Ok(undo) => {
                let r = self.audit_or_undo(s, "approval.approve", req.targets(), undo);
                if r.is_ok() {
                    self.store.delete(store::CF_META, &key)?;
                }
                r
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "approval.approve",
                    req.targets(),
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        };
        self.recount_officers()?;
        r
    }

    /// Rejects (withdraws) a pending request: any active officer, or its requester.
    pub fn reject_request(&self, s: &Session, id: &str) -> Result<()> {
        let me = self.authorize(s, None)?;
        let r = (|| {
            let req = self.pending_row(id)?;
            if me.role != Role::Officer.as_str() && req.requester != s.user.to_string() {
                return Err(Error::PermissionDenied(
                    "reject requests (officers, or the requester)",
                ));
            }
            Ok(req)
        })();
        match r {
            Ok(req) => {
                let key = req.key();
                let before = serde_json::to_vec(&req).expect("serialisable");
                self.store.delete(store::CF_META, &key)?;
                self.audit_or_undo(s, "approval.reject", req.targets(), || {
                    self.store.put(store::CF_META, &key, &before)
                })
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "approval.reject",
                    vec![format!("request:{id}")],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }
}
