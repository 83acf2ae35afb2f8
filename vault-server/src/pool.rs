//! The vault's worker threads: where short RocksDB and AES work runs, off
//! the async threads.
//!
//! Why not `tokio::task::spawn_blocking`: its pool starts a thread for every
//! task that finds no idle one (up to 512), so 16 concurrent record reads ran
//! on 16+ threads on a 2-core machine, and about a third of the server's CPU
//! went to waking and switching them (measured with `perf`, see
//! `benches/README.md`). Here a fixed set of threads (one per core by
//! default) takes jobs from one queue: under load a worker finishes a job and
//! takes the next without sleeping, and a submitter wakes a worker only when
//! one is idle. Long jobs (Argon2, disposal batches, imports, audit scans)
//! stay on `spawn_blocking` so that they cannot hold these threads.
//!
//! A process serving many vaults (`pivault-server --hosting`) shares one
//! pool between them, each vault on a [`Lane`] of its own: the workers take
//! the lanes' jobs in turn, so a vault with a thousand requests queued
//! delays another vault's next request by at most one job per lane ahead
//! of it, not by the whole queue.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// The jobs waiting, one FIFO per lane, and the lanes with jobs in the
/// order they are served.
#[derive(Default)]
struct Queue {
    lanes: HashMap<u64, VecDeque<Job>>,
    turn: VecDeque<u64>,
    next_lane: u64,
    idle: usize,
    closed: bool,
}

impl Queue {
    fn push(&mut self, lane: u64, job: Job) {
        let jobs = self.lanes.entry(lane).or_default();
        if jobs.is_empty() {
            self.turn.push_back(lane);
        }
        jobs.push_back(job);
    }

    /// The next lane's oldest job; the lane goes to the back of the turn
    /// while it has more.
    fn pop(&mut self) -> Option<Job> {
        let lane = self.turn.pop_front()?;
        let jobs = self.lanes.get_mut(&lane)?;
        let job = jobs.pop_front();
        if jobs.is_empty() {
            self.lanes.remove(&lane);
        } else {
            self.turn.push_back(lane);
        }
        job
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A job never runs under this lock, so it cannot be poisoned by one;
        // recover the guard anyway rather than take the server down.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(&self, lane: u64, job: Job) -> Result<(), Lost> {
        let mut q = self.lock();
        if q.closed {
            return Err(Lost);
        }
        q.push(lane, job);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }
}

/// A fixed pool of worker threads fed by FIFO lanes taken in turn
/// ([`WorkerPool::run`] uses lane 0).
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.lock().map(|t| t.len()).ok())
            .finish_non_exhaustive()
    }
}

/// The job's thread went away without an answer (the job panicked, or the
/// pool was shut down before it ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

impl WorkerPool {
    /// Starts `threads` workers (at least one) named `name`.
    pub fn new(threads: usize, name: &str) -> std::io::Result<WorkerPool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let s = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || work(&s))?,
            );
        }
        Ok(WorkerPool {
            shared,
            threads: Mutex::new(handles),
        })
    }

    /// Runs `f` on a worker and waits (asynchronously) for its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Lost>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_on(&self.shared, 0, f).await
    }

    /// A new lane of this pool, for one vault's jobs; the pool lives as
    /// long as its last lane.
    pub fn lane(self: &Arc<Self>) -> Lane {
        let id = {
            let mut q = self.shared.lock();
            q.next_lane += 1;
            q.next_lane
        };
        Lane {
            pool: self.clone(),
            id,
        }
    }
}

/// One vault's queue in a shared [`WorkerPool`].
#[derive(Debug)]
pub struct Lane {
    pool: Arc<WorkerPool>,
    id: u64,
}

impl Lane {
    /// Runs `f` on a worker, in this lane's turn, and waits
    /// (asynchronously) for its result.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Lost>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        run_on(&self.pool.shared, self.id, f).await
    }
}

async fn run_on<T, F>(shared: &Shared, lane: u64, f: F) -> Result<T, Lost>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.submit(
        lane,
        Box::new(move || {
            let _ = tx.send(f());
        }),
    )?;
    rx.await.map_err(|_| Lost)
}

impl WorkerPool {
    /// Runs every queued job, then stops and joins the workers.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.lock();
            loop {
                if let Some(j) = q.pop() {
                    break j;
                }
                if q.closed {
                    return;
                }
                q.idle += 1;
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                q.idle -= 1;
            }
        };
        // A panicking job drops its answer channel (the caller sees `Lost`);
        // the worker lives on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_jobs_on_its_own_threads_and_survives_a_panic() {
        let pool = Arc::new(WorkerPool::new(2, "test-pool").unwrap());
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("test-pool-")));
        assert_eq!(
            pool.run(|| -> u32 { panic!("job panics") }).await,
            Err(Lost)
        );
        // Many concurrent jobs, more than threads: all answered, in any order.
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let p = pool.clone();
            tasks.push(tokio::spawn(async move { p.run(move || i * 2).await }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await.unwrap().unwrap();
        }
        assert_eq!(sum, (0..200u64).map(|i| i * 2).sum::<u64>());
    }

    /// Yields until `n` jobs wait in `pool`'s lanes.
    async fn until_queued(pool: &WorkerPool, n: usize) {
        while pool
            .shared
            .lock()
            .lanes
            .values()
            .map(VecDeque::len)
            .sum::<usize>()
            < n
        {
            tokio::task::yield_now().await;
        }
    }

    /// A vault with many jobs queued delays another vault's job by one
    /// turn, not by its whole queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_are_served_in_turn() {
        let pool = Arc::new(WorkerPool::new(1, "test-pool").unwrap());
        let (busy, flooding) = (pool.lane(), Arc::new(pool.lane()));
        let quiet = pool.lane();
        // The one worker is held until every job below is queued.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let hold = tokio::spawn(async move {
            busy.run(move || {
                let _ = started.send(());
                held.recv().ok()
            })
            .await
        });
        running.await.expect("the holding job runs");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut flood = Vec::new();
        for i in 0..100u32 {
            let (l, o) = (flooding.clone(), order.clone());
            flood.push(tokio::spawn(async move {
                l.run(move || o.lock().unwrap().push(i)).await
            }));
        }
        until_queued(&pool, 100).await;
        let o = order.clone();
        let quiet_job =
            tokio::spawn(async move { quiet.run(move || o.lock().unwrap().push(1000)).await });
        until_queued(&pool, 101).await;
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        quiet_job.await.unwrap().unwrap();
        for f in flood {
            f.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 101);
        let at = order.iter().position(|&j| j == 1000).unwrap();
        assert!(
            at <= 1,
            "the quiet vault's job ran after {at} of the flood's: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_shut_down_pool_refuses_new_jobs() {
        let pool = WorkerPool::new(1, "test-pool").unwrap();
        pool.shutdown();
        assert_eq!(pool.run(|| 1).await, Err(Lost));
    }
}
