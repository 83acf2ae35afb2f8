//! Service accounts (issue 11): a script's own credential, so the nightly
//! retention job needs neither an officer's password nor an officer's power.
//!
//! A service account is a user row marked `service`, with a role only
//! services hold ([`Role::RetentionRunner`]), no password and no login. It
//! authenticates with a long-lived token (`pvs_` and 64 hex digits) shown
//! once and stored, like every token, only as its SHA-256. The token has
//! no expiry or idle timeout; it dies when rotated or when the account is
//! revoked (disabled: the generation bump ends it at the next call). It is
//! not subject to the password lock-out (there is no password to guess)
//! but to a per-token rate limit ([`OpenOptions::service_calls_per_minute`]).
//!
//! Who may mint one: only a user whose role already holds every permission
//! of the service's role ([`Role::may_delegate`]), so a token never gives
//! its creator a power they lack; an admin may not, an officer may. Anyone
//! who may manage users or mint it may revoke it: cutting off is always safe.

use super::*;

/// The prefix of a service token (a login token starts `pvt_`).
const TOKEN_PREFIX: &str = "pvs_";

/// What callers see of a service account (no token, no hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Immutable, never-reused ID.
    pub id: UserId,
    /// Its name.
    pub username: Username,
    /// Its (service) role.
    pub role: Role,
    /// Active or revoked.
    pub state: UserState,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// The last call made with its token (to the minute), unix ms.
    pub last_used_ms: Option<i64>,
    /// Whether it has a token that can still be used.
    pub has_token: bool,
    /// Who was shown its current token (creation or last rotation).
    pub token_issued_to: Option<UserId>,
    /// That person is disabled now (left the business): rotate the token.
    pub issuer_disabled: bool,
}

/// The token bucket of one service token.
#[derive(Clone, Copy, Debug)]
pub(super) struct CallBucket {
    tokens: f64,
    at_ms: i64,
    /// Set once a refusal is audited, cleared by the next allowed call: a
    /// script hammering the limit writes one audit event, not one per call.
    refusing: bool,
}

impl Vault {
    /// Creates a service account of a service role and returns its ID and
    /// its token, which is shown this once and never stored.
    pub fn add_service_account(
        &self,
        s: &Session,
        username: &str,
        role: Role,
    ) -> Result<(UserId, SecretString)> {
        let me = self.authorize(s, None)?;
        let r = (|| {
            let name = Username::parse(username)?;
            if !role.is_service() {
                return Err(Error::invalid(
                    "a service account's role must be retention-runner or audit-exporter",
                ));
            }
            self.check_delegation(&me, role)?;
            let _g = self.users_lock.lock().expect("users lock");
            if self.user_by_name(&name)?.is_some() {
                return Err(Error::AlreadyExists("username"));
            }
            let id = UserId::new();
            // No password hash: nothing verifies against an empty PHC.
            let row = UserRow {
                service: true,
                token_issued_to: Some(s.user.to_string()),
                ..UserRow::new(id, name.as_str(), role.as_str(), String::new(), self.now())
            };
            self.put_user_row(&row)?;
            self.store
                .put(store::CF_USERNAMES, name.as_str().as_bytes(), id.as_bytes())?;
            let (token, key) = self.store_service_token(id, row.generation)?;
            Ok((id, name, token, key))
        })();
        match r {
            Ok((id, name, token, key)) => {
                let targets = vec![id.to_string(), format!("role:{role}")];
                self.audit_or_undo(s, "service.create", targets, || {
                    let _g = self.users_lock.lock().expect("users lock");
                    self.store.delete(store::CF_SESSIONS, &key)?;
                    self.store
                        .delete(store::CF_USERNAMES, name.as_str().as_bytes())?;
                    self.store.delete(store::CF_USERS, id.as_bytes())
                })?;
                Ok((id, token))
            }
            Err(e) => {
                let targets = vec![format!("role:{role}")];
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "service.create",
                    targets,
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Replaces a service account's token: the old one fails its next
    /// call, the new one is returned (shown once). A revoked account is not
    /// brought back this way.
    pub fn rotate_service_token(&self, s: &Session, username: &str) -> Result<SecretString> {
        let me = self.authorize(s, None)?;
        let r = (|| {
            let name = Username::parse(username)?;
            let _g = self.users_lock.lock().expect("users lock");
            let mut row = self
                .user_by_name(&name)?
                .filter(|r| r.service)
                .ok_or(Error::NotFound("service account"))?;
            self.check_delegation(&me, Role::parse(&row.role)?)?;
            if row.disabled {
                return Err(Error::invalid(
                    "the service account is revoked: add a new one",
                ));
            }
            let before = row.clone();
            let old = self.service_token_keys(&row.id)?;
            row.generation += 1;
            row.token_issued_to = Some(s.user.to_string());
            self.put_user_row(&row)?;
            let (token, key) = self.store_service_token(row.id.parse()?, row.generation)?;
            Ok((before, old, token, key))
        })();
        match r {
            Ok((before, old, token, key)) => {
                self.audit_or_undo(s, "service.rotate", vec![before.id.clone()], || {
                    self.store.delete(store::CF_SESSIONS, &key)?;
                    self.put_user_row(&before)
                })?;
                // Dead already (older generation); removed so they do not pile up.
                self.forget_service_tokens(&old)?;
                Ok(token)
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "service.rotate",
                    vec![],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Revokes a service account: its token fails the next call, and the
    /// account stays listed (revoked) for the record. Admins (who manage
    /// users) and those who may mint it.
    pub fn revoke_service_account(&self, s: &Session, username: &str) -> Result<UserId> {
        let me = self.authorize(s, None)?;
        let mut old = Vec::new();
        let id = self.change_user_as(s, username, "service.revoke", |row| {
            if !row.service {
                return Err(Error::NotFound("service account"));
            }
            if !Role::parse(&me.role)?.permits(Permission::ManageUsers) {
                self.check_delegation(&me, Role::parse(&row.role)?)?;
            }
            old = self.service_token_keys(&row.id)?;
            row.disabled = true;
            row.generation += 1;
            Ok(())
        })?;
        self.forget_service_tokens(&old)?;
        Ok(id)
    }

    /// Every service account, active and revoked, with its last use
    /// (admins, officers, auditors).
    pub fn list_service_accounts(&self, s: &Session) -> Result<Vec<ServiceAccount>> {
        self.authorize_any(
            s,
            &[
                Permission::ManageUsers,
                Permission::ReadAudit,
                Permission::RecordReview,
            ],
        )?;
        let out = self.service_accounts()?;
        self.audit(Some(s.user), &s.ctx, "service.list", vec![], Ok(()), None)?;
        Ok(out)
    }

    /// Every service account, for `doctor` (the custodian; no session).
    pub fn service_accounts(&self) -> Result<Vec<ServiceAccount>> {
        let now = self.now();
        let sessions: Vec<SessionRow> = self
            .store
            .scan_prefix(store::CF_SESSIONS, &[])?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let users = self.all_user_rows()?;
        let disabled = |id: &str| users.iter().any(|u| u.id == id && u.disabled);
        let mut out = Vec::new();
        for row in users.iter().filter(|r| r.service) {
            let mine = || {
                sessions
                    .iter()
                    .filter(|t| t.service && t.user == row.id)
                    .collect::<Vec<_>>()
            };
            let info = row.info(now)?;
            out.push(ServiceAccount {
                id: info.id,
                username: info.username,
                role: info.role,
                state: info.state,
                created_ms: row.created_ms,
                last_used_ms: mine()
                    .iter()
                    .map(|t| t.last_seen_ms)
                    .filter(|&t| t > 0)
                    .max(),
                has_token: !row.disabled && mine().iter().any(|t| t.generation == row.generation),
                token_issued_to: row.token_issued_to.as_deref().map(str::parse).transpose()?,
                issuer_disabled: row.token_issued_to.as_deref().is_some_and(disabled),
            });
        }
        out.sort_by(|a, b| a.username.as_str().cmp(b.username.as_str()));
        Ok(out)
    }

    /// Counts one call of a service token against its rate
    /// ([`OpenOptions::service_calls_per_minute`]); refuses it with
    /// [`Error::RateLimited`] when the bucket is empty. The first refusal of
    /// a run is audited, the rest are not (a flood writes one event).
    pub(super) fn take_service_call(
        &self,
        key: &[u8; 32],
        user: UserId,
        ctx: &Context,
        now: i64,
    ) -> Result<()> {
        let cap = f64::from(self.opts.service_calls_per_minute.max(1));
        let (wait_ms, first) = {
            let mut calls = self.service_calls.lock().expect("service calls");
            let b = calls.entry(*key).or_insert(CallBucket {
                tokens: cap,
                at_ms: now,
                refusing: false,
            });
            let elapsed = (now - b.at_ms).max(0) as f64;
            b.tokens = (b.tokens + elapsed * cap / 60_000.0).min(cap);
            b.at_ms = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                b.refusing = false;
                return Ok(());
            }
            let first = !b.refusing;
            b.refusing = true;
            (((1.0 - b.tokens) * 60_000.0 / cap).ceil() as i64, first)
        };
        let e = Error::RateLimited {
            retry_at_ms: now + wait_ms.max(1),
        };
        if first {
            self.audit(
                Some(user),
                ctx,
                "auth.token",
                vec![user.to_string(), "rate_limited".into()],
                Err(&e),
                None,
            )?;
        }
        Err(e)
    }

    /// Refuses a caller whose role does not hold every permission of the
    /// service role (audited by the caller).
    /// A service account never mints or rotates another: a leaked token
    /// must not be able to make itself a successor the officer cannot see
    /// coming.
    fn check_delegation(&self, me: &UserRow, role: Role) -> Result<()> {
        if !me.service && Role::parse(&me.role)?.may_delegate(role) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "manage a service account whose role holds permissions yours lacks",
            ))
        }
    }

    /// Stores a new service token for `user` at `generation`; returns the
    /// token and its row key.
    fn store_service_token(
        &self,
        user: UserId,
        generation: u32,
    ) -> Result<(SecretString, [u8; 32])> {
        let row = SessionRow {
            user: user.to_string(),
            generation,
            created_ms: self.now(),
            expires_ms: i64::MAX,
            // Never used yet; the first call writes it (to the minute).
            last_seen_ms: 0,
            service: true,
            enrol_only: false,
        };
        self.store_token(TOKEN_PREFIX, &row)
    }

    /// The row keys of a service account's stored tokens.
    fn service_token_keys(&self, user_id: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .store
            .scan_prefix(store::CF_SESSIONS, &[])?
            .into_iter()
            .filter(|(_, v)| {
                serde_json::from_slice::<SessionRow>(v)
                    .is_ok_and(|t| t.service && t.user == user_id)
            })
            .map(|(k, _)| k)
            .collect())
    }

    /// Deletes token rows and their rate-limit buckets.
    fn forget_service_tokens(&self, keys: &[Vec<u8>]) -> Result<()> {
        for k in keys {
            self.store.delete(store::CF_SESSIONS, k)?;
            if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
                self.service_calls.lock().expect("service calls").remove(&k);
            }
        }
        Ok(())
    }
}
