//! Group commit of a vault's audit events (issue 16).
//!
//! Why: on the records cluster an event is a round trip to the primary,
//! made under the trail's lock, so one vault's operations were audited one
//! round trip at a time, however many clients were waiting. Now each
//! operation queues its event and waits; whichever waiting thread finds no
//! group being written takes every event queued so far and writes them in
//! one statement ([`AuditLog::append_all`]), while new events queue for the
//! next group. An operation still returns only after its own event is
//! written (fail closed, as before); what is shared is the round trip.
//! In files the group is written line by line, as before.
//!
//! A panic while a group is written leaves the outcomes of the events
//! written before it standing and fails the rest, and nothing more is
//! written until the vault is reopened (the trail's state is then in
//! doubt). The writing thread unwinds only if its own event was written;
//! otherwise its operation fails and is undone like any other.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{AuditLog, NewEvent};
use crate::error::{Error, Result};

/// Events written at most in one round trip (about 350 bytes each).
const GROUP_MAX: usize = 256;

/// Events waiting to be written, and the outcomes of those written.
#[derive(Default)]
struct Queue {
    /// The next event's ticket: never reused (a seq is, after a failed write).
    next_ticket: u64,
    waiting: Vec<(u64, NewEvent, Option<Vec<u8>>)>,
    /// A thread is writing a group now.
    writing: bool,
    done: HashMap<u64, Result<(u64, bool)>>,
    /// A write panicked before its outcome was known: whether the trail
    /// holds the group is unknown, so nothing more is written (fail closed)
    /// until the vault is opened again and reads its head back.
    broken: bool,
}

/// The queue in front of one vault's trail.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    written: Condvar,
}

fn broken() -> Error {
    Error::AuditUnavailable("an audit write failed unexpectedly; reopen the vault".into())
}

impl GroupCommit {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Nothing under this lock can leave the queue half-changed.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `ev` (with `forget`, a new record's ID whose write-journal
    /// entry goes with it where the trail can) to `log`, in a group with
    /// the events queued beside it; answers its seq and whether the entry
    /// went, once it is written. `after` runs under the trail's lock after
    /// each group.
    pub(crate) fn append(
        &self,
        log: &Mutex<AuditLog>,
        ev: NewEvent,
        forget: Option<&[u8]>,
        after: impl Fn(&AuditLog),
    ) -> Result<(u64, bool)> {
        let mut q = self.queue();
        if q.broken {
            return Err(broken());
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, ev, forget.map(<[u8]>::to_vec)));
        loop {
            if let Some(outcome) = q.done.remove(&ticket) {
                return outcome;
            }
            if q.broken {
                q.waiting.retain(|(t, ..)| *t != ticket);
                return Err(broken());
            }
            if q.writing {
                q = self.written.wait(q).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // This thread writes the next group (its own event is in it,
            // or in one after it when more than GROUP_MAX wait).
            q.writing = true;
            let n = q.waiting.len().min(GROUP_MAX);
            let (tickets, events): (Vec<u64>, Vec<_>) = q
                .waiting
                .drain(..n)
                .map(|(t, ev, forget)| (t, (ev, forget)))
                .unzip();
            drop(q);
            let written = catch_unwind(AssertUnwindSafe(|| match log.lock() {
                Ok(mut log) => {
                    let (outcomes, mut panicked) = log.append_all(events);
                    if panicked.is_none() {
                        panicked = catch_unwind(AssertUnwindSafe(|| after(&log))).err();
                    }
                    (outcomes, panicked)
                }
                Err(_) => {
                    let outcomes = tickets
                        .iter()
                        .map(|_| Err(Error::AuditUnavailable("audit lock poisoned".into())))
                        .collect();
                    (outcomes, None)
                }
            }));
            q = self.queue();
            q.writing = false;
            self.written.notify_all();
            let panicked = match written {
                Ok((outcomes, panicked)) => {
                    // The outcomes stand, even when a panic followed them.
                    q.done.extend(tickets.into_iter().zip(outcomes));
                    panicked
                }
                Err(panic) => {
                    let others = tickets.into_iter().filter(|t| *t != ticket);
                    q.done.extend(others.map(|t| (t, Err(broken()))));
                    Some(panic)
                }
            };
            if let Some(panic) = panicked {
                // Whatever the trail holds now, nothing more is written
                // until the vault is reopened and reads its head back.
                q.broken = true;
                q.waiting.retain(|(t, ..)| *t != ticket);
                let own = q.done.remove(&ticket);
                drop(q);
                match own {
                    // This thread's own event is written: it unwinds, as it
                    // would have had it panicked writing the event alone.
                    Some(Ok(_)) => resume_unwind(panic),
                    // It is not: the operation fails and is undone, as any
                    // operation whose event failed.
                    Some(Err(e)) => return Err(e),
                    None => return Err(broken()),
                }
            }
        }
    }
}
