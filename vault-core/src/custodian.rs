//! What only the custodian does, by holding the vault passphrase: change
//! it, and unlock an account without an admin (break-glass).
//!
//! **Passphrase change** (DESIGN §4.3). The unlock key wraps two things:
//! the root key in the header slot and the signing file. A change re-wraps
//! both under the new unlock key and then ratchets, in this order:
//!
//! 0. a synced *rekey mark* in the records database: from here any open
//!    finishes step 6, whichever passphrase opened it;
//! 1. `signing.new`: the signing keys under the new unlock key (fsynced,
//!    directory fsynced), beside the old file;
//! 2. **commit**: the *current* root key, under the new unlock key, written
//!    as epoch e+1 into the header slot not holding e (fsync). From here the
//!    old passphrase opens nothing: the newest slot is not its;
//! 3. every bucket key re-wrapped from (e, root) to (e+1, root);
//! 4. `signing.new` renamed over `signing` (directory fsynced);
//! 5. the old slot overwritten with zeros (fsync);
//! 6. every bucket given a fresh key (its data keys re-wrapped), a full
//!    epoch ratchet to a new root, the keystore purged; the mark removed.
//!
//! A crash before step 2 leaves the old passphrase in force (open removes a
//! stray `signing.new`); a crash after it leaves the new one, and the open
//! finishes steps 3–6 (the header reports the older slot as unreadable by
//! this key, `header::OpenedHeader::rekey_from`, and the root is the same by
//! construction). Step 6 is why a copy of the old header with the old
//! passphrase opens nothing written after the change: the root it yields
//! wraps no live bucket key, and the bucket keys it could reach in an old
//! copy of the keystore wrap no data key written since.
//!
//! This is a child module of `vault`.

use std::sync::atomic::Ordering;

use super::{Context, Vault};
use crate::access;
use crate::audit::Channel;
use crate::crypto;
use crate::error::{Error, Result};
use crate::header;
use crate::ids::{UserId, Username};
use crate::secret::{SecretKey, SecretString};
use crate::store;

/// Meta key of the rekey mark (value: the epoch the change started from).
const META_REKEY: &[u8] = b"passphrase-rekey-pending";
/// Buckets rotated per write batch in step 6 (each batch holds their locks).
const ROTATION_CHUNK: usize = 64;

/// What a passphrase change (or the finishing of an interrupted one) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassphraseChange {
    /// Epoch before the change and after its final ratchet.
    pub epochs: (u64, u64),
    /// Buckets given a fresh key (all of them).
    pub buckets_rotated: u64,
    /// Data keys re-wrapped under the fresh bucket keys.
    pub keys_rewrapped: u64,
    /// Whether the keystore purge checks passed afterwards.
    pub verified: bool,
}

/// The context of a custodian's command: the command line, with the OS
/// user who ran it as its source (`uid:N`), since no vault user logs in.
pub fn custodian_context(os_uid: Option<u32>) -> Context {
    Context {
        channel: Channel::Cli,
        source: Some(match os_uid {
            Some(u) => format!("uid:{u}"),
            None => "uid:unknown".into(),
        }),
        request_id: None,
    }
}

impl Vault {
    /// Changes the vault passphrase (custodian): `current` must be the
    /// passphrase this vault was opened with, `new` must pass the
    /// passphrase policy. Re-wraps the header slot and the signing keys,
    /// then gives every bucket a fresh key and ratchets the epoch (module
    /// doc). Audited as `vault.passphrase.change` with the epochs, never a
    /// secret. The vault stays open under the new passphrase.
    pub fn change_passphrase(
        &self,
        current: &SecretString,
        new: &SecretString,
        ctx: &Context,
    ) -> Result<PassphraseChange> {
        let checked = (|| {
            self.isolation.check_fence()?;
            let uk = crypto::derive_unlock_key(current, &self.info.salt, self.info.kdf)?;
            // Constant-time comparison (SecretKey's Eq).
            if uk != *self.unlock.read().expect("unlock lock") {
                return Err(Error::WrongPassphrase);
            }
            access::check_passphrase_policy(new)?;
            if new == current {
                return Err(Error::WeakPassword(
                    "the new vault passphrase must differ from the current one",
                ));
            }
            crypto::derive_unlock_key(new, &self.info.salt, self.info.kdf)
        })();
        let new_uk = match checked {
            Ok(k) => k,
            Err(e) => {
                self.audit(None, ctx, "vault.passphrase.change", vec![], Err(&e), None)?;
                return Err(e);
            }
        };
        let before = self.epoch();
        let r = self
            .rewrap_unlock(new_uk)
            .and_then(|()| self.finish_rekey());
        let targets = match &r {
            Ok(c) => vec![
                format!("epoch:{}->{}", before, c.epochs.1),
                format!("buckets:{}", c.buckets_rotated),
                format!("verified:{}", c.verified),
            ],
            Err(_) => vec![format!("epoch:{before}")],
        };
        self.audit(
            None,
            ctx,
            "vault.passphrase.change",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r.map(|c| PassphraseChange {
            epochs: (before, c.epochs.1),
            ..c
        })
    }

    /// Steps 0–5: the signing keys and the current root under `new_uk`.
    fn rewrap_unlock(&self, new_uk: SecretKey) -> Result<()> {
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        let mut epoch = self.epoch.write().expect("epoch lock");
        let e = epoch.number;
        // 0. The mark: an open after a crash from here on finishes step 6.
        self.store
            .put_synced(store::CF_META, META_REKEY, &e.to_be_bytes(), true)?;
        // 1. The signing keys under the new key, beside the old ones.
        let place = self.header_place();
        header::write_signing(
            &place,
            true,
            &self.signing.seal(&new_uk, self.info.vault_id),
        )?;
        self.at_step("passphrase.signing-written");
        // 2. Commit: the current root under the new key, as epoch e+1.
        header::write_slot(&place, self.info.vault_id, &new_uk, e + 1, &epoch.root)?;
        self.at_step("passphrase.slot-written");
        let r = (|| {
            // 3. Bucket keys to epoch e+1 (same root).
            self.keystore
                .rewrap_buckets((e, &epoch.root), (e + 1, &epoch.root))?;
            self.at_step("passphrase.buckets-rewrapped");
            // 4. The new signing keys replace the old ones.
            header::commit_signing(&place)?;
            self.at_step("passphrase.signing-renamed");
            // 5. The old slot goes.
            header::erase_other_slots(&place, e + 1)
        })();
        if r.is_err() {
            // Committed but not finished: the keys in RAM no longer match
            // the files. Refuse every change; the next open (with the new
            // passphrase) finishes the steps.
            self.isolation.fence();
            return r;
        }
        epoch.number = e + 1;
        *self.unlock.write().expect("unlock lock") = new_uk;
        self.at_step("passphrase.slot-erased");
        Ok(())
    }

    /// Step 6, also run by `open` while the rekey mark is set: a fresh key
    /// for every bucket, an epoch ratchet to a new root, a keystore purge,
    /// then the mark removed.
    pub(crate) fn finish_rekey(&self) -> Result<PassphraseChange> {
        let _batch = self.disposal_lock.lock().expect("disposal lock");
        let before = self.epoch();
        let all: Vec<u32> = (0..self.info.buckets).collect();
        let mut rewrapped = 0;
        for chunk in all.chunks(ROTATION_CHUNK) {
            let _guards = self.isolation.exclusive(chunk);
            let epoch = self.epoch.read().expect("epoch lock");
            let rotation =
                self.keystore
                    .plan_rotation(&epoch.root, epoch.number, chunk, |_, _| false)?;
            drop(epoch);
            rewrapped += rotation.rewrapped;
            self.keystore.commit_rotation(rotation)?;
        }
        // Every bucket has a fresh key: no update's old key lingers under a
        // live one any more.
        self.clear_dirty(&all)?;
        self.at_step("passphrase.rotated");
        let after = self.ratchet()?;
        self.at_step("passphrase.ratcheted");
        let ev = self
            .keystore
            .purge(&all, self.purge_skip_flush.load(Ordering::SeqCst))?;
        self.store
            .write_ops(&[(store::CF_META, META_REKEY.to_vec(), None)])?;
        Ok(PassphraseChange {
            epochs: (before, after),
            buckets_rotated: all.len() as u64,
            keys_rewrapped: rewrapped,
            verified: ev.clean(),
        })
    }

    /// On open: finishes a passphrase change interrupted after its mark.
    pub(crate) fn resume_rekey(&self) -> Result<()> {
        if self.store.get(store::CF_META, META_REKEY)?.is_none() {
            return Ok(());
        }
        let before = self.epoch();
        let r = self.finish_rekey();
        let targets = match &r {
            Ok(c) => vec![
                format!("epoch:{}->{}", before, c.epochs.1),
                format!("buckets:{}", c.buckets_rotated),
                format!("verified:{}", c.verified),
            ],
            Err(_) => vec![format!("epoch:{before}")],
        };
        self.audit(
            None,
            &super::maintenance::system_ctx(),
            "vault.passphrase.resume",
            targets,
            r.as_ref().map(|_| ()),
            None,
        )?;
        r.map(|_| ())
    }

    /// Whether a passphrase change is waiting to be finished (for tests and `doctor`).
    pub fn rekey_pending(&self) -> Result<bool> {
        Ok(self.store.get(store::CF_META, META_REKEY)?.is_some())
    }

    /// Break-glass unlock (custodian): lifts a lock-out with the vault
    /// passphrase alone, for the day no admin can log in (every admin
    /// locked out, say). Whoever holds an open `Vault` has proved the
    /// passphrase, so no vault user is asked for. Resets the lock, the
    /// failure count and the doubling, like an admin's unlock. Audited as
    /// `user.unlock.break_glass` with no vault actor and the OS user who ran
    /// it (`ctx`, see [`custodian_context`]).
    pub fn break_glass_unlock(&self, username: &str, ctx: &Context) -> Result<UserId> {
        let r = (|| {
            self.isolation.check_fence()?;
            let name = Username::parse(username)?;
            let _g = self.users_lock.lock().expect("users lock");
            let mut row = self.user_by_name(&name)?.ok_or(Error::NotFound("user"))?;
            let before = row.clone();
            row.failures = 0;
            row.failure_sources.clear();
            row.lockouts = 0;
            row.locked_until_ms = None;
            let id: UserId = row.id.parse()?;
            self.put_user_row(&row)?;
            Ok((id, before))
        })();
        match r {
            Ok((id, before)) => {
                let targets = vec![
                    id.to_string(),
                    format!("os-user:{}", ctx.source.as_deref().unwrap_or("unknown")),
                ];
                if let Err(e) =
                    self.audit(None, ctx, "user.unlock.break_glass", targets, Ok(()), None)
                {
                    // Fail closed: no unaudited unlock.
                    let _g = self.users_lock.lock().expect("users lock");
                    if self
                        .undo_hook()
                        .and_then(|()| self.put_user_row(&before))
                        .is_err()
                    {
                        self.isolation.fence();
                    }
                    return Err(e);
                }
                Ok(id)
            }
            Err(e) => {
                self.audit(None, ctx, "user.unlock.break_glass", vec![], Err(&e), None)?;
                Err(e)
            }
        }
    }
}
