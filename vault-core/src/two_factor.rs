//! Two-factor sign-in (REQ-AUTH-07): the per-role policy, enrolment with
//! recovery codes, the check at login, and an admin's reset. A child
//! module of `vault`; the code arithmetic is in [`crate::totp`].
//!
//! Where the secrets live: a user's TOTP secret is sealed (AES-256-GCM)
//! under a key derived from the passphrase-sealed subject key and bound to
//! the user's ID, inside the user row, which carries a row MAC. A copy of
//! the records database therefore yields no secret and no way to plant
//! one. Recovery codes are kept as keyed MACs and removed when used.

use serde::{Deserialize, Serialize};

use super::*;
use crate::access::{TotpRow, TwoFactorPolicy, TwoFactorState};
use crate::totp;

/// The meta key of the policy: under the sealed prefix, so a row written
/// without the vault's key is refused, and a deleted row falls back to the
/// default (required for admin, officer and contractor), never to none.
const POLICY_KEY: &[u8] = b"sealed/two_factor_policy";

/// How long a session that may only enrol lives: long enough to scan a QR
/// code and type one code.
pub const ENROL_ONLY_TTL_MS: i64 = 10 * 60 * 1000;

/// What a started enrolment shows the user, once: the secret for their
/// authenticator app.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The secret in base32, for typing into an app by hand.
    pub secret_base32: SecretString,
    /// The `otpauth://` URI, for a QR code or an app that imports it.
    pub uri: SecretString,
}

/// A confirmed enrolment: a full session and the recovery codes, shown once.
#[derive(Debug)]
pub struct TotpConfirmed {
    /// A session with everything the user's role grants (the enrol-only
    /// session that confirmed stays enrol-only).
    pub session: Session,
    /// One-time recovery codes, for a lost phone.
    pub recovery_codes: Vec<SecretString>,
}

/// The outcome of a submitted second factor at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// A fresh TOTP code.
    Code,
    /// An unused recovery code, now spent; `left` remain.
    Recovery { left: usize },
    /// A TOTP code already used.
    Replayed,
    /// Not a valid code.
    Wrong,
}

impl Checked {
    /// The audit target naming a refusal (never the code).
    pub(super) fn target(self) -> &'static str {
        match self {
            Checked::Replayed => "factor:replayed",
            _ => "factor:wrong",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PolicyRow {
    required: Vec<String>,
}

impl Vault {
    /// The roles that must sign in with a second factor.
    pub(crate) fn two_factor_policy(&self) -> Result<TwoFactorPolicy> {
        match self.store.get(store::CF_META, POLICY_KEY)? {
            None => Ok(TwoFactorPolicy::default()),
            Some(b) => {
                let row: PolicyRow = serde_json::from_slice(&b)
                    .map_err(|_| Error::Integrity("two-factor policy"))?;
                let mut p = TwoFactorPolicy::none();
                for r in row.required {
                    p.required.insert(Role::parse(&r)?);
                }
                Ok(p)
            }
        }
    }

    /// The two-factor policy, for anyone signed in (it is no secret which
    /// roles need a code).
    pub fn get_two_factor_policy(&self, s: &Session) -> Result<TwoFactorPolicy> {
        self.authorize(s, None)?;
        self.two_factor_policy()
    }

    /// Writes the policy without a session: at vault creation.
    pub(super) fn store_two_factor_policy(&self, p: &TwoFactorPolicy) -> Result<()> {
        let row = PolicyRow {
            required: p.roles().into_iter().map(str::to_owned).collect(),
        };
        self.store.put_synced(
            store::CF_META,
            POLICY_KEY,
            &serde_json::to_vec(&row).expect("serialisable"),
            true,
        )
    }

    /// Sets which roles must sign in with a second factor (admin). Users
    /// of a newly covered role who have not enrolled get enrol-only
    /// sessions from their next login; `doctor` lists them meanwhile.
    pub fn set_two_factor_policy(&self, s: &Session, p: &TwoFactorPolicy) -> Result<()> {
        self.authorize(s, Some(Permission::ManageUsers))?;
        let before = self.store.get(store::CF_META, POLICY_KEY)?;
        self.store_two_factor_policy(p)?;
        let mut targets: Vec<String> = p.roles().iter().map(|r| format!("role:{r}")).collect();
        if targets.is_empty() {
            targets.push("role:none".into());
        }
        self.audit_or_undo(s, "policy.two_factor", targets, || match &before {
            Some(b) => self.store.put(store::CF_META, POLICY_KEY, b),
            None => self.store.delete(store::CF_META, POLICY_KEY),
        })
    }

    /// The key that seals TOTP secrets and keys recovery-code MACs:
    /// derived from the subject key, which only the passphrase opens.
    fn two_factor_key(&self) -> SecretKey {
        SecretKey::from_bytes(crypto::mac(
            &self.signing.subject,
            "pivault-two-factor-key-v1",
            self.info.vault_id.as_bytes(),
        ))
    }

    fn totp_aad(user: &str) -> Aad {
        Aad::new("totp-secret").part(user.as_bytes())
    }

    fn recovery_mac(&self, user: &str, flat: &str) -> String {
        let data = Aad::new("recovery-code")
            .part(user.as_bytes())
            .part(flat.as_bytes());
        hex::encode(crypto::mac(
            &self.two_factor_key(),
            "pivault-recovery-code-v1",
            data.as_bytes(),
        ))
    }

    fn totp_secret(&self, user: &str, t: &TotpRow) -> Result<Zeroizing<Vec<u8>>> {
        let env = hex::decode(&t.sealed).map_err(|_| Error::Integrity("two-factor secret"))?;
        crypto::open(
            &self.two_factor_key(),
            &Self::totp_aad(user),
            &env,
            "two-factor secret",
        )
    }

    /// Checks a submitted second factor against `row` and, when accepted,
    /// records it there (the step used, the recovery code spent); the
    /// caller writes the row. Called with the users lock held.
    pub(super) fn check_second_factor(
        &self,
        row: &mut UserRow,
        code: &SecretString,
        now: i64,
    ) -> Result<Checked> {
        let user = row.id.clone();
        let Some(t) = row.totp.as_mut().filter(|t| t.confirmed) else {
            return Ok(Checked::Wrong);
        };
        if let Some(flat) = totp::normalise_recovery_code(code.expose()) {
            let mac = self.recovery_mac(&user, &flat);
            use subtle::ConstantTimeEq;
            let hit = t
                .recovery
                .iter()
                .position(|m| bool::from(m.as_bytes().ct_eq(mac.as_bytes())));
            return Ok(match hit {
                Some(i) => {
                    t.recovery.remove(i);
                    Checked::Recovery {
                        left: t.recovery.len(),
                    }
                }
                None => Checked::Wrong,
            });
        }
        let secret = {
            let t = row.totp.as_ref().expect("checked above");
            self.totp_secret(&user, t)?
        };
        let t = row.totp.as_mut().expect("checked above");
        Ok(
            match totp::verify(&secret, code.expose(), now, t.last_step) {
                totp::Verdict::Accepted(step) => {
                    t.last_step = Some(step);
                    Checked::Code
                }
                totp::Verdict::Replayed => Checked::Replayed,
                totp::Verdict::Wrong => Checked::Wrong,
            },
        )
    }

    /// Starts (or restarts) the session user's enrolment: a new secret,
    /// shown once, that signs no one in until a code from it is confirmed.
    /// A user already enrolled must have an admin reset the factor first,
    /// so that a stolen session cannot swap the owner's phone for its own.
    pub fn begin_two_factor_enrolment(&self, s: &Session) -> Result<TotpEnrolment> {
        let me = self.authorize_own(s)?;
        if me.service {
            return Err(Error::invalid(
                "service accounts sign in with tokens and have no second factor",
            ));
        }
        let user = s.user.to_string();
        let mut secret = Zeroizing::new([0u8; totp::SECRET_LEN]);
        crypto::fill_random(secret.as_mut());
        let sealed = hex::encode(crypto::seal(
            &self.two_factor_key(),
            &Self::totp_aad(&user),
            secret.as_ref(),
        ));
        let now = self.now();
        let r = {
            let _g = self.users_lock.lock().expect("users lock");
            (|| {
                let mut row = self
                    .user_row(s.user)?
                    .filter(|r| !r.disabled && r.generation == s.generation)
                    .ok_or(Error::SessionInvalid)?;
                if row.two_factor() == TwoFactorState::Enrolled {
                    return Err(Error::AlreadyExists(
                        "second factor (an admin resets it with `pivault user reset-two-factor`)",
                    ));
                }
                let before = row.clone();
                row.totp = Some(TotpRow {
                    sealed,
                    confirmed: false,
                    started_ms: now,
                    confirmed_ms: None,
                    last_step: None,
                    recovery: Vec::new(),
                });
                self.put_user_row(&row)?;
                Ok((row.username.clone(), before))
            })()
        };
        let (username, before) = match r {
            Ok(v) => v,
            Err(e) => {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "auth.two_factor.enrol",
                    vec![user],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        self.audit_or_undo(s, "auth.two_factor.enrol", vec![user], || {
            self.put_user_row(&before)
        })?;
        let issuer = format!("pivault {}", &self.info.vault_id.to_string()[..8]);
        Ok(TotpEnrolment {
            secret_base32: SecretString::new(totp::base32(secret.as_ref())),
            uri: SecretString::new(totp::otpauth_uri(&issuer, &username, secret.as_ref())),
        })
    }

    /// Confirms the session user's pending enrolment with a code from the
    /// app, which proves the app holds the secret. Returns a full session
    /// and the recovery codes (shown once). A wrong code counts toward the
    /// lock-out, as at login.
    pub fn confirm_two_factor_enrolment(
        &self,
        s: &Session,
        code: &SecretString,
    ) -> Result<TotpConfirmed> {
        self.authorize_own(s)?;
        let user = s.user.to_string();
        let now = self.now();
        let tag = access::source_tag(s.ctx.channel.as_str(), s.ctx.source.as_deref());
        let codes: Vec<Zeroizing<String>> = (0..totp::RECOVERY_CODES)
            .map(|_| totp::new_recovery_code())
            .collect();
        let _g = self.users_lock.lock().expect("users lock");
        // Re-read under the lock: a disable or a reset that won the race
        // leaves nothing to confirm (a disabled user keeps no factor).
        let mut row = self
            .user_row(s.user)?
            .filter(|r| !r.disabled && r.generation == s.generation)
            .ok_or(Error::SessionInvalid)?;
        let before = row.clone();
        let verdict = match &row.totp {
            Some(t) if !t.confirmed => {
                let secret = self.totp_secret(&user, t)?;
                totp::verify(&secret, code.expose(), now, None)
            }
            _ => {
                let e = Error::NotFound("pending two-factor enrolment (start one first)");
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "auth.two_factor.confirm",
                    vec![user],
                    Err(&e),
                    None,
                )?;
                return Err(e);
            }
        };
        let totp::Verdict::Accepted(step) = verdict else {
            self.note_source_failure(&tag, now)?;
            let locked = self.count_account_failure(&mut row, &tag, now);
            self.put_user_row(&row)?;
            let e = Error::SecondFactorFailed;
            self.audit(
                Some(s.user),
                &s.ctx,
                "auth.two_factor.confirm",
                vec![user.clone(), "factor:wrong".into()],
                Err(&e),
                None,
            )?;
            if locked.is_some() {
                self.audit(
                    Some(s.user),
                    &s.ctx,
                    "auth.lockout",
                    vec![user],
                    Ok(()),
                    None,
                )?;
            }
            return Err(e);
        };
        let recovery = codes
            .iter()
            .map(|c| {
                let flat = totp::normalise_recovery_code(c).expect("well-formed");
                self.recovery_mac(&user, &flat)
            })
            .collect();
        let t = row.totp.as_mut().expect("pending");
        t.confirmed = true;
        t.confirmed_ms = Some(now);
        t.last_step = Some(step);
        t.recovery = recovery;
        self.put_user_row(&row)?;
        self.audit_or_undo(s, "auth.two_factor.confirm", vec![user], || {
            self.put_user_row(&before)
        })?;
        Ok(TotpConfirmed {
            session: Session {
                user: s.user,
                generation: row.generation,
                ctx: s.ctx.clone(),
                enrol_only: false,
            },
            recovery_codes: codes
                .iter()
                .map(|c| SecretString::new(c.to_string()))
                .collect(),
        })
    }

    /// Removes a user's second factor (admin): a lost phone. Their sessions
    /// end; if their role requires a factor, their next login may only
    /// enrol. Nobody resets their own: that would let a stolen session
    /// drop the factor that protects the account.
    pub fn reset_two_factor(&self, s: &Session, username: &str) -> Result<UserId> {
        let me = s.user.to_string();
        self.change_user(s, username, "user.two_factor.reset", |row| {
            if row.id == me {
                return Err(Error::PermissionDenied(
                    "reset your own second factor (another admin does)",
                ));
            }
            if row.totp.is_none() {
                return Err(Error::NotFound("second factor of this user"));
            }
            row.totp = None;
            row.generation += 1;
            Ok(())
        })
    }

    /// Users who must sign in with a second factor and have none
    /// confirmed (active people only), for `doctor`: (username, role).
    pub(crate) fn users_lacking_two_factor(&self) -> Result<Vec<(String, String)>> {
        let policy = self.two_factor_policy()?;
        Ok(self
            .all_user_rows()?
            .into_iter()
            .filter(|u| !u.disabled && !u.service)
            .filter(|u| Role::parse(&u.role).is_ok_and(|r| policy.requires(r)))
            .filter(|u| u.two_factor() != TwoFactorState::Enrolled)
            .map(|u| (u.username, u.role))
            .collect())
    }
}
