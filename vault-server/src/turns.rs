//! Turns between the vaults of one process (`pivault-server --hosting`).
//!
//! The worker lanes ([`crate::pool::Lane`]) order the vault threads' jobs,
//! but most of a short request's cost is TLS and HTTP on the async threads,
//! which serve connections, not vaults: one business's clients flooding
//! their vault with 64 connections left a quiet vault beside it 0.22–0.27×
//! of its rate, lanes or not (benches/README.md, "Many vaults in one server
//! process"). So in a hosting process a request takes a turn before its
//! work: a few requests are carried out at once over all vaults, and the
//! waiting ones are let in one vault at a time, in turn. A flooded vault's
//! extra requests wait parked (their connections send nothing more
//! meanwhile), and a quiet vault's next request waits for one turn, not for
//! the flood.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Requests carried out at once over every vault of the process, the rest
/// let in by vault in turn.
#[derive(Debug)]
pub struct Turns {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Who waits, per vault.
    waiting: HashMap<u64, VecDeque<oneshot::Sender<()>>>,
    /// The vaults with someone waiting, in the order they are let in.
    order: VecDeque<u64>,
}

/// A request's turn: the next waiting request (of the next vault) is let
/// in when it is dropped.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.pass_on();
    }
}

/// A request still waiting: dropped (its client gone, its timeout past)
/// after it was let in, it passes the turn on rather than lose it.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    turns: Arc<Turns>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.turns.pass_on();
            }
        }
    }
}

impl Turns {
    /// `at_once` requests carried out at once (at least one).
    pub fn new(at_once: usize) -> Arc<Turns> {
        Arc::new(Turns {
            state: Mutex::new(State {
                free: at_once.max(1),
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a turn for a request of vault `vault`.
    pub async fn take(self: &Arc<Self>, vault: u64) -> Turn {
        let rx = {
            let mut s = self.lock();
            if s.free > 0 && s.order.is_empty() {
                s.free -= 1;
                return Turn {
                    turns: self.clone(),
                };
            }
            let (tx, rx) = oneshot::channel();
            let queue = s.waiting.entry(vault).or_default();
            if queue.is_empty() {
                s.order.push_back(vault);
            }
            s.waiting.get_mut(&vault).expect("just made").push_back(tx);
            rx
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            turns: self.clone(),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // A sender is dropped unsent only once its receiver is gone:
            // while this one waits, it ends with the turn.
            let _ = rx.await;
        }
        waiting.rx = None;
        Turn {
            turns: self.clone(),
        }
    }

    /// A turn ends: the oldest waiting request of the next vault in order
    /// is let in (a vault with more waiting goes to the back), or the turn
    /// is free.
    fn pass_on(&self) {
        let mut s = self.lock();
        while let Some(vault) = s.order.pop_front() {
            let Some(queue) = s.waiting.get_mut(&vault) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                s.waiting.remove(&vault);
            } else {
                s.order.push_back(vault);
            }
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                return;
            }
        }
        s.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every request of a flooded vault is queued before a quiet vault's
    /// one; the quiet one is let in at the next turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_vault_waits_one_turn_not_the_flood() {
        let turns = Turns::new(1);
        let held = turns.take(1).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let (t, o) = (turns.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = t.take(1).await;
                o.lock().unwrap().push(i);
            }));
        }
        while turns.lock().waiting.get(&1).map_or(0, VecDeque::len) < 50 {
            tokio::task::yield_now().await;
        }
        let (t, o) = (turns.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _turn = t.take(2).await;
            o.lock().unwrap().push(1000);
        }));
        while !turns.lock().waiting.contains_key(&2) {
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 51);
        let at = order.iter().position(|&j| j == 1000).unwrap();
        assert!(at <= 1, "the quiet vault was let in after {at} of the flood's: {order:?}");
    }

    /// A request that gives up (its client gone, its timeout past) loses
    /// no turn: neither while it waits, nor once let in before it ran, nor
    /// while it runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_gives_up_passes_its_turn_on() {
        let turns = Turns::new(1);
        let held = turns.take(1).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), turns.take(1)).await;
        assert!(gave_up.is_err(), "no turn while one is held");
        // Queued, then let in, then dropped before it is polled again.
        let mut let_in = Box::pin(turns.take(2));
        tokio::select! {
            biased;
            _ = &mut let_in => panic!("a turn while one is held"),
            () = tokio::task::yield_now() => {}
        }
        assert!(turns.lock().waiting.contains_key(&2), "queued");
        drop(held);
        drop(let_in);
        // Let in and running, then aborted.
        let t = turns.clone();
        let running = tokio::spawn(async move {
            let _turn = t.take(3).await;
            std::future::pending::<()>().await;
        });
        while turns.lock().free > 0 {
            tokio::task::yield_now().await;
        }
        running.abort();
        let _ = running.await;
        let again = tokio::time::timeout(Duration::from_secs(5), turns.take(4)).await;
        assert!(again.is_ok(), "the turn was passed on, not lost");
    }
}
