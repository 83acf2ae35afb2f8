//! Users and sessions: accounts, passwords and lock-out, logins and
//! tokens, roles and the reveal grant, and the rules insiders meet there
//! (no self role change, the last admin and officer kept, two-person
//! approvals). A child module of `vault`, split from the facade by concept.

use std::sync::atomic::Ordering;

use super::*;

impl Vault {
    pub(super) fn user_row(&self, id: UserId) -> Result<Option<UserRow>> {
        self.store
            .get(store::CF_USERS, id.as_bytes())?
            .map(|b| serde_json::from_slice(&b).map_err(|_| Error::Integrity("user row")))
            .transpose()
    }

    pub(super) fn put_user_row(&self, row: &UserRow) -> Result<()> {
        let id: UserId = row.id.parse()?;
        self.store.put(
            store::CF_USERS,
            id.as_bytes(),
            &serde_json::to_vec(row).expect("serialisable"),
        )
    }

    pub(super) fn user_by_name(&self, name: &Username) -> Result<Option<UserRow>> {
        match self
            .store
            .get(store::CF_USERNAMES, name.as_str().as_bytes())?
        {
            Some(id) => self.user_row(UserId::from_slice(&id)?),
            None => Ok(None),
        }
    }

    pub(super) fn recount_officers(&self) -> Result<()> {
        let n = self
            .all_user_rows()?
            .iter()
            .filter(|u| !u.disabled && u.role == Role::Officer.as_str())
            .count();
        self.active_officers.store(n, Ordering::SeqCst);
        Ok(())
    }

    pub(super) fn all_user_rows(&self) -> Result<Vec<UserRow>> {
        self.store
            .scan_prefix(store::CF_USERS, &[])?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| Error::Integrity("user row")))
            .collect()
    }

    pub(super) fn insert_user(
        &self,
        name: &Username,
        password: &SecretString,
        role: Role,
        reveal: bool,
        full_name: Option<&str>,
    ) -> Result<UserId> {
        access::check_password_policy(password, name)?;
        let _g = self.users_lock.lock().expect("users lock");
        if self.user_by_name(name)?.is_some() {
            return Err(Error::AlreadyExists("username"));
        }
        let id = UserId::new();
        let row = UserRow {
            reveal,
            full_name: full_name.map(str::to_owned),
            ..UserRow::new(
                id,
                name.as_str(),
                role.as_str(),
                access::hash_password(password)?,
                self.now(),
            )
        };
        self.put_user_row(&row)?;
        self.store
            .put(store::CF_USERNAMES, name.as_str().as_bytes(), id.as_bytes())?;
        self.recount_officers()?;
        Ok(id)
    }

    /// Authenticates a user (REQ-AUTH-05). Unknown users and wrong passwords
    /// cost the same and give the same error. Failures are throttled per
    /// source first (see [`LockoutPolicy`]): a throttled source is refused
    /// with [`Error::LoginThrottled`] before its password is checked, and its
    /// attempt counts against no account; failures that pass count once per
    /// source toward the account's lock-out.
    pub fn login(&self, username: &str, password: &SecretString, ctx: Context) -> Result<Session> {
        self.login_with_code(username, password, None, ctx)
    }

    /// [`Vault::login`] with the second factor (REQ-AUTH-07): a 6-digit
    /// TOTP code or a recovery code. An account with a confirmed factor
    /// needs one ([`Error::SecondFactorRequired`] without it); a wrong or
    /// replayed code counts toward the lock-out like a wrong password. A
    /// user whose role requires a factor they have not enrolled gets a
    /// session that may only enrol ([`Session::enrol_only`]).
    ///
    /// The code is checked and its time step recorded under the users
    /// lock, so of two logins racing with one code exactly one succeeds.
    pub fn login_with_code(
        &self,
        username: &str,
        password: &SecretString,
        code: Option<&SecretString>,
        ctx: Context,
    ) -> Result<Session> {
        let now = self.now();
        let name = Username::parse(username).ok();
        // A service account has no password: to a login it is an unknown user.
        let row = match &name {
            Some(n) => self.user_by_name(n)?.filter(|r| !r.service),
            None => None,
        };
        let tag = access::source_tag(ctx.channel.as_str(), ctx.source.as_deref());
        // 1. The source's throttle, before the password and whatever the
        // username: the answer is the same for every account, known or not.
        if let Some(until) = self
            .source_row(&tag)?
            .throttled_until(&self.opts.lockout, now)
        {
            let e = Error::LoginThrottled { retry_at_ms: until };
            let targets = row.iter().map(|r| r.id.clone()).collect();
            self.audit(None, &ctx, "auth.login", targets, Err(&e), None)?;
            return Err(e);
        }
        let Some(mut row) = row else {
            // Equal cost for unknown users: verify against a real hash.
            let _ = access::verify_password(password, &self.dummy_phc);
            {
                let _g = self.users_lock.lock().expect("users lock");
                self.note_source_failure(&tag, now)?;
            }
            self.audit(
                None,
                &ctx,
                "auth.login",
                vec![],
                Err(&Error::AuthFailed),
                None,
            )?;
            return Err(Error::AuthFailed);
        };
        let id: UserId = row.id.parse()?;
        // The password is checked first, at the same cost, locked or not:
        // only the right password learns that the account is locked, so a
        // wrong guess cannot tell a locked account from an unknown user.
        let ok = access::verify_password(password, &row.password_phc);
        if let Some(until) = row.locked_until_ms.filter(|&t| t > now) {
            if !ok {
                let _g = self.users_lock.lock().expect("users lock");
                self.note_source_failure(&tag, now)?;
            }
            let e = Error::AccountLocked { until_ms: until };
            self.audit(
                Some(id),
                &ctx,
                "auth.login",
                vec![id.to_string()],
                Err(&e),
                None,
            )?;
            return Err(if ok { e } else { Error::AuthFailed });
        }
        let _g = self.users_lock.lock().expect("users lock");
        row = self.user_row(id)?.ok_or(Error::AuthFailed)?;
        if !ok {
            self.note_source_failure(&tag, now)?;
            let locked = self.count_account_failure(&mut row, &tag, now);
            self.put_user_row(&row)?;
            self.audit(
                Some(id),
                &ctx,
                "auth.login",
                vec![id.to_string()],
                Err(&Error::AuthFailed),
                None,
            )?;
            if locked.is_some() {
                // The failure that locks the account answers like any other
                // wrong password (uniform 401).
                self.audit(
                    Some(id),
                    &ctx,
                    "auth.lockout",
                    vec![id.to_string()],
                    Ok(()),
                    None,
                )?;
            }
            return Err(Error::AuthFailed);
        }
        if row.disabled {
            let e = Error::AccountDisabled;
            self.audit(
                Some(id),
                &ctx,
                "auth.login",
                vec![id.to_string()],
                Err(&e),
                None,
            )?;
            return Err(e);
        }
        let before = row.clone();
        // The second factor, after the password and the account's state:
        // only someone who knows the password learns that a code is due.
        let mut targets = vec![id.to_string()];
        let mut enrol_only = false;
        if row.totp.as_ref().is_some_and(|t| t.confirmed) {
            let Some(code) = code else {
                let e = Error::SecondFactorRequired;
                self.audit(Some(id), &ctx, "auth.login", targets, Err(&e), None)?;
                return Err(e);
            };
            match self.check_second_factor(&mut row, code, now)? {
                two_factor::Checked::Code => targets.push("factor:totp".into()),
                two_factor::Checked::Recovery { left } => {
                    targets.push("factor:recovery".into());
                    targets.push(format!("recovery_codes_left:{left}"));
                }
                refused => {
                    let mut row = before;
                    self.note_source_failure(&tag, now)?;
                    let locked = self.count_account_failure(&mut row, &tag, now);
                    self.put_user_row(&row)?;
                    let e = Error::SecondFactorFailed;
                    targets.push(refused.target().into());
                    self.audit(Some(id), &ctx, "auth.login", targets, Err(&e), None)?;
                    if locked.is_some() {
                        self.audit(
                            Some(id),
                            &ctx,
                            "auth.lockout",
                            vec![id.to_string()],
                            Ok(()),
                            None,
                        )?;
                    }
                    return Err(e);
                }
            }
        } else if self.two_factor_policy()?.requires(Role::parse(&row.role)?) {
            enrol_only = true;
            targets.push("two_factor:enrolment_required".into());
        }
        // A success ends the run of consecutive failures, but not the
        // doubling of repeated lock-outs: otherwise an attacker who times
        // guesses around the owner's logins would always face the shortest
        // lock. Only an admin's unlock resets that (REQ-AUTH-05).
        row.failures = 0;
        row.failure_sources.clear();
        row.locked_until_ms = None;
        row.last_login_ms = Some(now);
        self.put_user_row(&row)?;
        if let Err(e) = self.audit(Some(id), &ctx, "auth.login", targets, Ok(()), None) {
            // Fail closed: no unaudited login, and no unaudited row change.
            if self
                .undo_hook()
                .and_then(|()| self.put_user_row(&before))
                .is_err()
            {
                self.isolation.fence();
            }
            return Err(e);
        }
        Ok(Session {
            user: id,
            generation: row.generation,
            ctx,
            enrol_only,
        })
    }

    /// The throttle state of a login source (`tag` from [`access::source_tag`]).
    pub(super) fn source_row(&self, tag: &[u8; 16]) -> Result<access::SourceRow> {
        Ok(self
            .store
            .get(store::CF_META, &source_key(tag))?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// Records one failed login from a source (caller holds `users_lock`).
    pub(super) fn note_source_failure(&self, tag: &[u8; 16], now: i64) -> Result<()> {
        let next = self.source_row(tag)?.fail(&self.opts.lockout, now);
        self.store.put(
            store::CF_META,
            &source_key(tag),
            &serde_json::to_vec(&next).expect("serialisable"),
        )
    }

    /// Counts a failure that passed the source throttle against an
    /// account: once per source since the last successful login, so only
    /// failures from `max_failures` distinct sources lock it. Returns the
    /// end of the lock when this failure locks the account.
    pub(super) fn count_account_failure(
        &self,
        row: &mut UserRow,
        tag: &[u8; 16],
        now: i64,
    ) -> Option<i64> {
        let short = hex::encode(&tag[..8]);
        if row.failure_sources.contains(&short) {
            return None;
        }
        row.failure_sources.push(short);
        row.failures += 1;
        if row.failures < self.opts.lockout.max_failures {
            return None;
        }
        let until = now + access::lock_duration(&self.opts.lockout, row.lockouts);
        row.lockouts += 1;
        row.failures = 0;
        row.failure_sources.clear();
        row.locked_until_ms = Some(until);
        Some(until)
    }

    /// Issues an API token for a session: 256 random bits, shown once,
    /// stored only as its SHA-256.
    pub fn issue_token(&self, s: &Session, ttl_ms: i64) -> Result<SecretString> {
        self.authorize_own(s)?;
        let now = self.now();
        // A session that may only enrol lives long enough to enrol.
        let ttl_ms = if s.enrol_only {
            ttl_ms.min(two_factor::ENROL_ONLY_TTL_MS)
        } else {
            ttl_ms
        };
        let row = SessionRow {
            user: s.user.to_string(),
            generation: s.generation,
            created_ms: now,
            expires_ms: now + ttl_ms,
            last_seen_ms: now,
            service: false,
            enrol_only: s.enrol_only,
        };
        let (token, key) = self.store_token("pvt_", &row)?;
        self.audit_or_undo(s, "auth.token.issue", vec![s.user.to_string()], || {
            self.store.delete(store::CF_SESSIONS, &key)
        })?;
        Ok(token)
    }

    /// Mints a token (`prefix` and 256 random bits, shown once) and stores
    /// `row` under its SHA-256, the only form in which a token is kept.
    /// Returns the token and its row key.
    pub(super) fn store_token(
        &self,
        prefix: &str,
        row: &SessionRow,
    ) -> Result<(SecretString, [u8; 32])> {
        let mut raw = Zeroizing::new([0u8; 32]);
        crypto::fill_random(raw.as_mut());
        let token = SecretString::new(format!("{prefix}{}", hex::encode(raw.as_ref())));
        let key = token_hash(token.expose());
        self.store.put(
            store::CF_SESSIONS,
            &key,
            &serde_json::to_vec(row).expect("serialisable"),
        )?;
        Ok((token, key))
    }

    /// Resumes a session from a token; expired, idle, revoked or disabled → `SessionInvalid`.
    pub fn session_from_token(&self, token: &SecretString, ctx: Context) -> Result<Session> {
        let key = token_hash(token.expose());
        let now = self.now();
        let deny = |vault: &Vault, user: Option<UserId>| -> Result<Session> {
            vault.audit(
                user,
                &ctx,
                "auth.token",
                vec![],
                Err(&Error::SessionInvalid),
                None,
            )?;
            Err(Error::SessionInvalid)
        };
        let Some(bytes) = self.store.get(store::CF_SESSIONS, &key)? else {
            return deny(self, None);
        };
        let mut row: SessionRow =
            serde_json::from_slice(&bytes).map_err(|_| Error::Integrity("session row"))?;
        let user: UserId = row.user.parse()?;
        let alive = row.alive(now, SESSION_IDLE_MS);
        // The cached row (no password hash): every user write invalidates it.
        let current = self
            .session_user(user)?
            .is_some_and(|u| !u.disabled && u.generation == row.generation);
        if !alive || !current {
            self.store.delete(store::CF_SESSIONS, &key)?;
            return deny(self, Some(user));
        }
        if row.service {
            self.take_service_call(&key, user, &ctx, now)?;
        }
        // The idle clock needs minute precision, not a write per request.
        if now - row.last_seen_ms >= SESSION_TOUCH_MS {
            row.last_seen_ms = now;
            self.store.put(
                store::CF_SESSIONS,
                &key,
                &serde_json::to_vec(&row).expect("serialisable"),
            )?;
        }
        Ok(Session {
            user,
            generation: row.generation,
            ctx,
            enrol_only: row.enrol_only,
        })
    }

    /// Ends a token's session.
    pub fn revoke_token(&self, token: &SecretString) -> Result<()> {
        self.store
            .delete(store::CF_SESSIONS, &token_hash(token.expose()))
    }

    /// The user row for `authorize`: from the cache while no user row has
    /// been written since it was read, else from the store. The cached copy
    /// carries no password hash.
    pub(super) fn session_user(&self, id: UserId) -> Result<Option<Arc<UserRow>>> {
        let generation = self.store.users_generation();
        if let Some(row) = GenCache::get(&self.user_cache, generation, &id) {
            return Ok(Some(row));
        }
        let Some(mut row) = self.user_row(id)? else {
            return Ok(None);
        };
        row.password_phc = String::new();
        let row = Arc::new(row);
        GenCache::insert(&self.user_cache, generation, id, row.clone());
        Ok(Some(row))
    }

    /// Checks that the session's user is still active and, if `perm` is
    /// given, that their role grants it. Denials are audited.
    ///
    /// The user row comes from an in-memory cache that any write to a user
    /// row invalidates (see [`GenCache`]), so disabling a user or changing
    /// their role or password still stops their sessions at the next call.
    pub(super) fn authorize(&self, s: &Session, perm: Option<Permission>) -> Result<Arc<UserRow>> {
        let row = self.authorize_own(s)?;
        if s.enrol_only {
            let e = Error::EnrolmentRequired;
            self.audit(
                Some(s.user),
                &s.ctx,
                "access.denied",
                vec![format!(
                    "permission:{}",
                    perm.map_or("Any".into(), |p| format!("{p:?}"))
                )],
                Err(&e),
                None,
            )?;
            return Err(e);
        }
        if let Some(p) = perm {
            let role = Role::parse(&row.role)?;
            if !role.permits(p) {
                let e = Error::PermissionDenied(p.verb());
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "access.denied",
                    vec![format!("permission:{p:?}")],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        }
        Ok(row)
    }

    /// Checks that the session's user is still active and the session
    /// current, and nothing else: what a session that may only enrol a
    /// second factor needs (its own identity, its token, the enrolment).
    pub(super) fn authorize_own(&self, s: &Session) -> Result<Arc<UserRow>> {
        let row = self.session_user(s.user)?.ok_or(Error::SessionInvalid)?;
        if row.disabled || row.generation != s.generation {
            self.audit(
                Some(s.user),
                &s.ctx,
                "auth.session",
                vec![s.user.to_string()],
                Err(&Error::SessionInvalid),
                None,
            )?;
            return Err(Error::SessionInvalid);
        }
        Ok(row)
    }

    /// The session's own user (also for a session that may only enrol).
    pub fn whoami(&self, s: &Session) -> Result<UserInfo> {
        self.authorize_own(s)?.info(self.now())
    }

    /// Adds a user (admin). `reveal` grants a clerk the reveal of sensitive fields.
    pub fn add_user(
        &self,
        s: &Session,
        username: &str,
        password: &SecretString,
        role: Role,
        reveal: bool,
    ) -> Result<UserId> {
        self.add_person(s, username, password, role, reveal, None)
    }

    /// [`Vault::add_user`] with the person's full name, which certificates
    /// print (see [`Vault::set_full_name`]). The name is checked first, so a
    /// refused name adds no one; a new officer waiting for approval keeps it
    /// in the pending request and gets it when approved.
    pub fn add_person(
        &self,
        s: &Session,
        username: &str,
        password: &SecretString,
        role: Role,
        reveal: bool,
        full_name: Option<&str>,
    ) -> Result<UserId> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        let full_name = full_name.map(str::trim).filter(|n| !n.is_empty());
        if let Err(e) = full_name.map_or(Ok(()), access::check_full_name) {
            self.audit(Some(s.user), &s.ctx, "user.create", vec![], Err(&e), None)?;
            return Err(e);
        }
        let name = Username::parse(username)?;
        if role.is_service() {
            let e = Error::invalid(
                "retention-runner and audit-exporter are service accounts' roles: use `pivault service add`",
            );
            self.audit(Some(s.user), &s.ctx, "user.create", vec![], Err(&e), None)?;
            return Err(e);
        }
        let officer_grant =
            role == Role::Officer && self.active_officers.load(Ordering::SeqCst) > 0;
        if officer_grant || reveal {
            // Two-person rule: the new officer or reveal grant waits for a
            // second officer; only the Argon2id hash of the password is kept.
            let r = access::check_password_policy(password, &name).and_then(|()| {
                if self.user_by_name(&name)?.is_some() {
                    return Err(Error::AlreadyExists("username"));
                }
                access::hash_password(password)
            });
            match r {
                Ok(phc) => {
                    let req = approvals::PendingRow::create(
                        &name,
                        role,
                        reveal,
                        phc,
                        full_name,
                        s.user,
                        self.now(),
                    );
                    return Err(self.create_request(s, req));
                }
                Err(e) => {
                    self.audit(
                        Some(s.user),
                        &s.ctx,
                        "user.create",
                        vec![format!("role:{role}")],
                        Err(&e),
                        None,
                    )?;
                    return Err(e);
                }
            }
        }
        match self.insert_user(&name, password, role, reveal, full_name) {
            Ok(id) => {
                let targets = vec![id.to_string(), format!("role:{role}")];
                self.audit_or_undo(s, "user.create", targets, || {
                    let _g = self.users_lock.lock().expect("users lock");
                    self.store
                        .delete(store::CF_USERNAMES, name.as_str().as_bytes())?;
                    self.store.delete(store::CF_USERS, id.as_bytes())?;
                    self.recount_officers()
                })?;
                Ok(id)
            }
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "user.create",
                    vec![format!("role:{role}")],
                    Err(&e),
                    None,
                )?;
                Err(e)
            }
        }
    }

    /// Lists users (admin, officer, auditor).
    pub fn list_users(&self, s: &Session) -> Result<Vec<UserInfo>> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::ReadAudit])?;
        let now = self.now();
        let mut users = self
            .all_user_rows()?
            .iter()
            .map(|r| r.info(now))
            .collect::<Result<Vec<_>>>()?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        self.audit(Some(s.user), &s.ctx, "user.list", vec![], Ok(()), None)?;
        Ok(users)
    }

    /// Sets or clears a person's full name (admin): certificates name their
    /// operator, validator and contractor by it instead of by their login.
    /// Only an admin names people, as only an admin makes accounts: a
    /// person who could name themselves could sign a certificate in a
    /// colleague's name. Audited as `user.name` with the user's ID; the
    /// name itself stays out of the trail, like everything a person types.
    pub fn set_full_name(
        &self,
        s: &Session,
        username: &str,
        full_name: Option<&str>,
    ) -> Result<UserId> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        let name = full_name.map(str::trim);
        if let Err(e) = name.map_or(Ok(()), access::check_full_name) {
            self.audit(Some(s.user), &s.ctx, "user.name", vec![], Err(&e), None)?;
            return Err(e);
        }
        self.change_user_as(s, username, "user.name", |r| {
            if r.service {
                return Err(Error::invalid(
                    "a service account is not a person and has no full name",
                ));
            }
            r.full_name = name.map(str::to_owned);
            Ok(())
        })
    }

    /// Gives a clerk the reveal grant or takes it away (admin or officer).
    /// Taking it away is immediate: the clerk's next reveal is refused.
    /// Giving it waits for an active officer other than the requester
    /// ([`Error::ApprovalRequired`], the two-person rule of issue 10).
    /// Officers reveal by their role and have no grant to change.
    pub fn set_reveal_grant(&self, s: &Session, username: &str, grant: bool) -> Result<UserId> {
        self.authorize_any(s, &[Permission::ManageUsers, Permission::RecordReview])?;
        let action = if grant {
            "user.reveal.grant"
        } else {
            "user.reveal.revoke"
        };
        let name = Username::parse(username)?;
        let checked = (|| {
            let row = self.user_by_name(&name)?.ok_or(Error::NotFound("user"))?;
            if row.role != Role::Clerk.as_str() {
                return Err(Error::invalid(
                    "only a clerk has a reveal grant (officers reveal by their role)",
                ));
            }
            if row.reveal == grant {
                return Err(Error::invalid(if grant {
                    "the clerk already has the reveal grant"
                } else {
                    "the clerk has no reveal grant"
                }));
            }
            Ok(row)
        })();
        let row = match checked {
            Ok(row) => row,
            Err(e) => {
                self.audit(Some(s.user), &s.ctx, action, vec![], Err(&e), None)?;
                return Err(e);
            }
        };
        if grant {
            let req = approvals::PendingRow::reveal_grant(&row, s.user, self.now());
            return Err(self.create_request(s, req));
        }
        // Revoking: the session check reads the row (and its generation)
        // on every operation, so it takes effect at the next request.
        self.change_user_as(s, username, action, |r| {
            r.reveal = false;
            r.generation += 1;
            Ok(())
        })
    }

    pub(super) fn change_user(
        &self,
        s: &Session,
        username: &str,
        action: &str,
        f: impl FnOnce(&mut UserRow) -> Result<()>,
    ) -> Result<UserId> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        self.change_user_as(s, username, action, f)
    }

    /// [`Vault::change_user`] for a caller already authorised.
    pub(super) fn change_user_as(
        &self,
        s: &Session,
        username: &str,
        action: &str,
        f: impl FnOnce(&mut UserRow) -> Result<()>,
    ) -> Result<UserId> {
        let name = Username::parse(username)?;
        let _g = self.users_lock.lock().expect("users lock");
        let r = (|| {
            let mut row = self.user_by_name(&name)?.ok_or(Error::NotFound("user"))?;
            let before = row.clone();
            f(&mut row)?;
            let id = row.id.parse::<UserId>()?;
            self.put_user_row(&row)?;
            Ok((id, before))
        })();
        let r = match r {
            Ok((id, before)) => self
                .audit_or_undo(s, action, vec![id.to_string()], || {
                    self.put_user_row(&before)
                })
                .map(|()| id),
            Err(e) => {
                self.audit(Some(s.user), &s.ctx, action, vec![], Err(&e), None)?;
                Err(e)
            }
        };
        self.recount_officers()?;
        r
    }

    /// Refuses a change that would leave the vault without an active admin
    /// or an active officer (`row` is the target before the change;
    /// `disable` or the new role says what happens to it).
    pub(super) fn check_last_of_role(
        &self,
        row: &UserRow,
        disable: bool,
        new_role: Option<Role>,
    ) -> Result<()> {
        if row.disabled {
            return Ok(());
        }
        for (role, what) in [
            (Role::Admin, "disable or demote the last active admin"),
            (
                Role::Officer,
                "disable or demote the last active security officer",
            ),
        ] {
            let leaves =
                row.role == role.as_str() && (disable || new_role.is_some_and(|r| r != role));
            if !leaves {
                continue;
            }
            let others = self
                .all_user_rows()?
                .iter()
                .filter(|u| !u.disabled && u.role == role.as_str() && u.id != row.id)
                .count();
            if others == 0 {
                return Err(Error::PermissionDenied(what));
            }
        }
        Ok(())
    }

    /// Disables a user (REQ-WISP-07): every session and token of theirs dies
    /// at once. The last active admin and the last active officer cannot be
    /// disabled.
    pub fn disable_user(&self, s: &Session, username: &str) -> Result<UserId> {
        let me = s.user.to_string();
        self.change_user(s, username, "user.disable", |row| {
            if row.id == me {
                return Err(Error::invalid("you cannot disable your own account"));
            }
            self.check_last_of_role(row, true, None)?;
            row.disabled = true;
            if !self.disable_keeps_generation.load(Ordering::SeqCst) {
                row.generation += 1;
            }
            // Their second factor goes with them (REQ-AUTH-07): enabled
            // again, they enrol afresh, and a phone that left with them
            // signs no one in.
            row.totp = None;
            Ok(())
        })
    }

    /// Disabled users (terminated employees) with a session row within its
    /// lifetime that is still bound to the account's current generation,
    /// by username. Such a row is refused at use by the disabled flag
    /// alone: `user disable` also moves the generation on, so that a row of
    /// the old one is dead whatever the flag says; one bound to the current
    /// generation means that second barrier is missing (17.03(2)(e)).
    /// (The rows themselves stay until the sweep, so that a terminated
    /// employee's later attempt with a token is audited under their name.)
    pub fn disabled_users_with_sessions(&self) -> Result<Vec<String>> {
        let now = self.now();
        let disabled: HashMap<String, (String, u32)> = self
            .all_user_rows()?
            .into_iter()
            .filter(|u| u.disabled)
            .map(|u| (u.id, (u.username, u.generation)))
            .collect();
        let mut out = std::collections::BTreeSet::new();
        for (_, value) in self.store.scan_prefix(store::CF_SESSIONS, &[])? {
            let row: SessionRow =
                serde_json::from_slice(&value).map_err(|_| Error::Integrity("session row"))?;
            if row.alive(now, SESSION_IDLE_MS)
                && let Some((name, generation)) = disabled.get(&row.user)
                && row.generation == *generation
            {
                out.insert(name.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Re-enables a disabled user.
    pub fn enable_user(&self, s: &Session, username: &str) -> Result<UserId> {
        self.change_user(s, username, "user.enable", |row| {
            row.disabled = false;
            Ok(())
        })
    }

    /// Lifts a lock-out (admin).
    pub fn unlock_user(&self, s: &Session, username: &str) -> Result<UserId> {
        self.change_user(s, username, "user.unlock", |row| {
            // An admin's unlock is a fresh start: the lock, the failure count
            // and the doubling of repeated lock-outs all reset (REQ-AUTH-05).
            row.failures = 0;
            row.failure_sources.clear();
            row.lockouts = 0;
            row.locked_until_ms = None;
            Ok(())
        })
    }

    /// Changes a user's role (admin). No one changes their own role; the
    /// last active admin and officer cannot be demoted. Granting the officer
    /// role needs a second officer's approval ([`Error::ApprovalRequired`])
    /// unless the vault has no active officer yet (bootstrap).
    pub fn set_role(&self, s: &Session, username: &str, role: Role) -> Result<UserId> {
        let me = s.user.to_string();
        if role == Role::Officer && self.active_officers.load(Ordering::SeqCst) > 0 {
            self.authorize(s, Some(Permission::ManageUsers))?;
            let name = Username::parse(username)?;
            if let Some(row) = self.user_by_name(&name)?
                && row.id != me
                && !row.service
                && row.role != Role::Officer.as_str()
                && self.check_last_of_role(&row, false, Some(role)).is_ok()
            {
                let req = approvals::PendingRow::role(&row, role, s.user, self.now());
                return Err(self.create_request(s, req));
            }
        }
        self.change_user(s, username, &format!("user.role.{role}"), |row| {
            if row.id == me {
                return Err(Error::PermissionDenied("change your own role"));
            }
            if row.service || role.is_service() {
                return Err(Error::invalid(
                    "service accounts and people do not trade roles: \
                     add a service account with `pivault service add`",
                ));
            }
            self.check_last_of_role(row, false, Some(role))?;
            row.role = role.as_str().to_owned();
            row.generation += 1;
            Ok(())
        })
    }

    /// Sets another user's password (admin reset). Existing sessions of
    /// that user end. Resetting an officer's password needs a second
    /// officer's approval ([`Error::ApprovalRequired`]). Your own password
    /// changes only with [`Vault::change_own_password`], which checks the
    /// current one.
    pub fn set_password(&self, s: &Session, username: &str, new: &SecretString) -> Result<()> {
        let me = self.authorize(s, None)?;
        let name = Username::parse(username)?;
        if me.username == name.as_str() {
            let e = Error::invalid(
                "changing your own password needs your current one (pivault user passwd, or current_password over HTTP)",
            );
            self.audit(Some(s.user), &s.ctx, "user.password", vec![], Err(&e), None)?;
            return Err(e);
        }
        self.authorize(s, Some(Permission::ManageUsers))?;
        if let Err(e) = access::check_password_policy(new, &name) {
            self.audit(Some(s.user), &s.ctx, "user.password", vec![], Err(&e), None)?;
            return Err(e);
        }
        if let Some(row) = self.user_by_name(&name)?
            && row.role == Role::Officer.as_str()
        {
            let phc = access::hash_password(new)?;
            let req = approvals::PendingRow::password(&row, phc, s.user, self.now());
            return Err(self.create_request(s, req));
        }
        self.write_password(s, &name, new)
    }

    /// Changes your own password: the current one is verified first (a
    /// wrong one counts as a failed login toward the lock-out). Your other
    /// sessions end; this one ends too (log in again).
    pub fn change_own_password(
        &self,
        s: &Session,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<()> {
        let me = self.authorize(s, None)?;
        if me.service {
            let e = Error::invalid(NO_SERVICE_PASSWORD);
            self.audit(Some(s.user), &s.ctx, "user.password", vec![], Err(&e), None)?;
            return Err(e);
        }
        let name = Username::parse(&me.username)?;
        let row = self.user_row(s.user)?.ok_or(Error::SessionInvalid)?;
        if !access::verify_password(current, &row.password_phc) {
            // Like a failed login: it counts for the source, and once per
            // source toward the account's lock-out.
            let _g = self.users_lock.lock().expect("users lock");
            let now = self.now();
            let tag = access::source_tag(s.ctx.channel.as_str(), s.ctx.source.as_deref());
            self.note_source_failure(&tag, now)?;
            if let Some(mut row) = self.user_row(s.user)? {
                self.count_account_failure(&mut row, &tag, now);
                self.put_user_row(&row)?;
            }
            self.audit(
                Some(s.user),
                &s.ctx,
                "user.password",
                vec![s.user.to_string()],
                Err(&Error::AuthFailed),
                None,
            )?;
            return Err(Error::AuthFailed);
        }
        if let Err(e) = access::check_password_policy(new, &name) {
            self.audit(Some(s.user), &s.ctx, "user.password", vec![], Err(&e), None)?;
            return Err(e);
        }
        self.write_password(s, &name, new)
    }

    pub(super) fn write_password(
        &self,
        s: &Session,
        name: &Username,
        new: &SecretString,
    ) -> Result<()> {
        let _g = self.users_lock.lock().expect("users lock");
        let r = (|| {
            let mut row = self.user_by_name(name)?.ok_or(Error::NotFound("user"))?;
            if row.service {
                return Err(Error::invalid(NO_SERVICE_PASSWORD));
            }
            let before = row.clone();
            row.password_phc = access::hash_password(new)?;
            row.generation += 1;
            let id = row.id.parse::<UserId>()?;
            self.put_user_row(&row)?;
            Ok((id, before))
        })();
        match r {
            Ok((id, before)) => {
                self.audit_or_undo(s, "user.password", vec![id.to_string()], || {
                    self.put_user_row(&before)
                })
            }
            Err(e) => {
                self.audit(Some(s.user), &s.ctx, "user.password", vec![], Err(&e), None)?;
                Err(e)
            }
        }
    }
}

/// The answer to a password change for a service account.
const NO_SERVICE_PASSWORD: &str =
    "a service account has no password: rotate its token with `pivault service rotate`";
