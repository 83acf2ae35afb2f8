//! The connections one process holds to a cluster's primary, shared out
//! between the vaults it has open (issue 16: a provider's server hosts
//! hundreds of vaults, and PostgreSQL refuses a connection past
//! `max_connections`, 100 by default).
//!
//! Each vault keeps its own pool, on its own role and credential: nothing
//! is shared between vaults but the count. A vault that needs a connection
//! when the process's budget for that cluster is spent closes another
//! vault's connection that sits idle (the one idle longest) and opens its
//! own in its place; when none is idle it waits for one. A pooled
//! connection carries its [`Slot`], so a connection that breaks, is
//! dropped with a failed pool or leaves the pool (the records store's lock,
//! a held snapshot) gives its place back whatever path it leaves by.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Pooled;
use crate::error::{Error, Result};

/// Connections to one cluster's primary a process opens at most for its
/// vaults' reads and writes, unless [`set_cluster_connections`] says
/// otherwise: room under the default `max_connections` (100) for a second
/// server process, the records stores' locks and a purge's connection to
/// every member.
pub const DEFAULT_CLUSTER_CONNECTIONS: usize = 40;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_CLUSTER_CONNECTIONS);

/// How long a vault waits for a connection when every one of the budget
/// is in use (not idle) before its operation fails.
const BUDGET_PATIENCE: Duration = Duration::from_secs(30);

/// Sets how many connections to each cluster's primary this process's
/// vaults may hold at once, idle or working (at least 1). Takes effect for
/// the next connection opened; connections already open above a lowered
/// limit close as they are given back or taken over.
pub fn set_cluster_connections(n: usize) {
    LIMIT.store(n.max(1), Ordering::SeqCst);
}

/// The limit now in force.
pub fn cluster_connections() -> usize {
    LIMIT.load(Ordering::SeqCst)
}

type Pool = Mutex<Vec<Pooled>>;

/// One cluster's budget in this process (clusters are told apart by their
/// member list: `max_connections` is each server's).
pub(crate) struct Budget {
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    /// Connections open now, each held by one [`Slot`].
    open: usize,
    /// The idle pools of every vault open on this cluster.
    pools: Vec<Weak<Pool>>,
}

static BUDGETS: LazyLock<Mutex<HashMap<String, Arc<Budget>>>> = LazyLock::new(Default::default);

/// A place in a budget, given back on drop.
pub(crate) struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.open -= 1;
        drop(st);
        self.0.freed.notify_all();
    }
}

impl Budget {
    /// The budget of the cluster with these members, with `pool` counted
    /// among the pools it may take idle connections from.
    pub(crate) fn join(members: &[String], pool: &Arc<Pool>) -> Arc<Budget> {
        let mut sorted = members.to_vec();
        sorted.sort();
        let budget = BUDGETS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sorted.join(","))
            .or_insert_with(|| {
                Arc::new(Budget {
                    state: Mutex::new(State {
                        open: 0,
                        pools: Vec::new(),
                    }),
                    freed: Condvar::new(),
                })
            })
            .clone();
        let mut st = budget.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pools.retain(|p| p.strong_count() > 0);
        st.pools.push(Arc::downgrade(pool));
        drop(st);
        budget
    }

    /// A place for one more connection: a free one, else the place of the
    /// connection idle longest in any vault's pool (closed here), else the
    /// first given back within [`BUDGET_PATIENCE`].
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Slot> {
        let deadline = Instant::now() + BUDGET_PATIENCE;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let limit = cluster_connections();
            if st.open < limit {
                st.open += 1;
                return Ok(Slot(self.clone()));
            }
            if let Some(mut victim) = oldest_idle(&mut st) {
                drop(st);
                let slot = victim.slot.take();
                // Closed outside the budget's lock; its place is ours.
                drop(victim);
                match slot {
                    Some(s) => return Ok(s),
                    None => {
                        st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Storage(format!(
                    "cluster: all {limit} of this process's connections to the primary stayed \
                     in use for {}s (raise pivault-server --cluster-connections, within the \
                     members' max_connections)",
                    BUDGET_PATIENCE.as_secs()
                )));
            }
            st = self
                .freed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Tells waiters that a connection went idle (one they may take over).
    pub(crate) fn idled(&self) {
        self.freed.notify_all();
    }
}

/// Takes the connection idle longest out of whichever pool holds it. Pools
/// are only tried, never waited for: a pool's owner may be dropping a
/// connection (which takes the budget's lock) while holding its pool.
fn oldest_idle(st: &mut State) -> Option<Pooled> {
    st.pools.retain(|p| p.strong_count() > 0);
    let mut oldest: Option<(Instant, usize)> = None;
    for (i, p) in st.pools.iter().enumerate() {
        let Some(pool) = p.upgrade() else { continue };
        let Ok(idle) = pool.try_lock() else { continue };
        if let Some(first) = idle.first()
            && oldest.is_none_or(|(t, _)| first.idle_since < t)
        {
            oldest = Some((first.idle_since, i));
        }
    }
    let (_, i) = oldest?;
    let pool = st.pools[i].upgrade()?;
    let mut idle = pool.try_lock().ok()?;
    (!idle.is_empty()).then(|| idle.remove(0))
}
