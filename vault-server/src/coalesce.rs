//! Disposal requests arriving together share one batch (DESIGN §4.2).
//!
//! A script that disposes of records one request at a time would otherwise
//! pay a whole batch (intent, key deletion, bucket rotation, epoch ratchet,
//! purge, verification, certificate) per record. Here a one-record disposal
//! first passes the checks a one-record batch would make, for itself alone
//! (a dry run: unknown, disposed, held or out-of-scope records are refused
//! with their own answer), then waits at least the window for other
//! one-record disposals by the same user with the same certificate parties,
//! and longer while an earlier group's batch is still running (group
//! commit); the group is disposed of as one batch, under one certificate,
//! and every request is answered with that batch's outcome. Only requests
//! of one user are grouped, so a batch never carries anyone else's
//! authority or records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;
use vault_core::ids::{RecordId, UserId};
use vault_core::secret::SecretString;
use vault_core::vault::{DisposalParties, DisposalRequest, DisposalScope};
use vault_core::views;

use crate::{ApiError, App, Bearer, RequestContext};

type Answer = Result<Value, ApiError>;

/// A group: one user, one set of certificate parties.
type GroupKey = (UserId, String);
/// A waiting request: its record and where its answer goes.
type Member = (RecordId, oneshot::Sender<Answer>);

/// Requests waiting for their group's batch.
#[derive(Default)]
pub(crate) struct OpenGroups {
    open: Mutex<HashMap<GroupKey, Vec<Member>>>,
    /// Held by the group whose batch is running: the next group closes only
    /// when it gets its turn.
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OpenGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenGroups")
    }
}

enum Joined {
    /// Another request leads the group and will answer.
    Member(oneshot::Receiver<Answer>),
    /// This request opened the group: it runs the batch when the window closes.
    Leader(oneshot::Receiver<Answer>),
    /// The group is full: run alone.
    Alone,
}

impl App {
    /// Disposes of one record, in a batch shared with the other one-record
    /// disposals of the same user that arrive within the window.
    pub(crate) async fn dispose_record_grouped(
        self: &Arc<App>,
        rc: &RequestContext,
        token: Bearer,
        record: RecordId,
        parties: DisposalParties,
    ) -> Answer {
        let batch_token = SecretString::new(token.0.expose().to_owned());
        // The checks of a one-record batch, for this record alone.
        let p = parties.clone();
        let user = self
            .as_user(rc, token, move |v, s| {
                v.dispose(
                    s,
                    &DisposalRequest {
                        scope: DisposalScope::Record(record),
                        parties: p,
                        dry_run: true,
                    },
                )?;
                Ok(s.user())
            })
            .await?;
        // The plan's event is not this request's outcome: the request is
        // audited again with its final status (by the batch, or by the
        // framing middleware for a member of someone else's batch).
        rc.audited.store(false, std::sync::atomic::Ordering::SeqCst);

        let key = (user, format!("{parties:?}"));
        let joined = {
            let mut open = self.groups.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get_mut(&key) {
                Some(members) if members.len() < self.limits.disposal_batch_max => {
                    let (tx, rx) = oneshot::channel();
                    members.push((record, tx));
                    Joined::Member(rx)
                }
                Some(_) => Joined::Alone,
                None => {
                    let (tx, rx) = oneshot::channel();
                    open.insert(key.clone(), vec![(record, tx)]);
                    Joined::Leader(rx)
                }
            }
        };
        match joined {
            Joined::Member(rx) => rx.await.map_err(|_| ApiError::internal())?,
            Joined::Alone => {
                let o = self
                    .run_batch(rc, Bearer(batch_token), vec![record], parties)
                    .await?;
                Ok(views::outcome(&o, false))
            }
            Joined::Leader(rx) => {
                // The batch runs in its own task: a leader whose client goes
                // away must not strand the members waiting on it.
                let app = self.clone();
                let rc = rc.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(app.limits.disposal_window).await;
                    // Group commit: while an earlier batch still runs, the
                    // group stays open and keeps gathering requests.
                    let _turn = app.groups.turn.lock().await;
                    let members = app
                        .groups
                        .open
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key)
                        .unwrap_or_default();
                    let ids: Vec<RecordId> = members.iter().map(|(id, _)| *id).collect();
                    let r = app.run_batch(&rc, Bearer(batch_token), ids, parties).await;
                    for (id, tx) in members {
                        let _ = tx.send(answer_for(id, &r));
                    }
                });
                rx.await.map_err(|_| ApiError::internal())?
            }
        }
    }

    async fn run_batch(
        &self,
        rc: &RequestContext,
        token: Bearer,
        mut ids: Vec<RecordId>,
        parties: DisposalParties,
    ) -> Result<vault_core::vault::DisposalOutcome, ApiError> {
        ids.sort();
        ids.dedup();
        let scope = match ids.as_slice() {
            [one] => DisposalScope::Record(*one),
            _ => DisposalScope::Records(ids),
        };
        self.as_user_long(rc, token, move |v, s| {
            v.dispose(
                s,
                &DisposalRequest {
                    scope,
                    parties,
                    dry_run: false,
                },
            )
        })
        .await
    }
}

/// One member's answer from its group's batch: the batch's outcome if its
/// record was disposed of in it; a record held, in another batch or
/// disposed of elsewhere since its checks gets the error a one-record batch
/// would have given.
fn answer_for(id: RecordId, r: &Result<vault_core::vault::DisposalOutcome, ApiError>) -> Answer {
    match r {
        Ok(o) if o.records.contains(&id) => Ok(views::outcome(o, false)),
        Ok(o) => Err(ApiError::from(
            match o.excluded.iter().find(|(x, _)| *x == id) {
                Some((_, why)) if why == vault_core::vault::IN_UNFINISHED_BATCH => {
                    vault_core::Error::DisposalInProgress
                }
                Some(_) => vault_core::Error::LegalHold,
                None => vault_core::Error::Disposed { certificate: None },
            },
        )),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_core::vault::{DisposalOutcome, IN_UNFINISHED_BATCH};

    fn left_out(id: RecordId, why: &str) -> Result<DisposalOutcome, ApiError> {
        Ok(DisposalOutcome {
            disposal_id: None,
            certificate_id: None,
            records: Vec::new(),
            subjects: 0,
            ma_residents: None,
            excluded: vec![(id, why.to_owned())],
            epochs: None,
            duration_ms: 0,
        })
    }

    /// A member left out of its group's batch gets the answer a one-record
    /// batch would have given: in progress while another batch has its
    /// record (running, or stopped), a legal hold only when one is placed.
    #[test]
    fn a_member_left_out_of_the_groups_batch_is_told_why() {
        let id = RecordId::new();
        let code = |why: &str| answer_for(id, &left_out(id, why)).unwrap_err().code;
        assert_eq!(code(IN_UNFINISHED_BATCH), "disposal_in_progress");
        assert_eq!(code("legal hold on record: litigation"), "legal_hold");
    }
}
