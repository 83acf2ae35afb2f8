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

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    closed: bool,
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
}

/// A fixed pool of worker threads fed by one FIFO queue.
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }))?;
        rx.await.map_err(|_| Lost)
    }

    fn submit(&self, job: Job) -> Result<(), Lost> {
        let mut q = self.shared.lock();
        if q.closed {
            return Err(Lost);
        }
        q.jobs.push_back(job);
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

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
                if let Some(j) = q.jobs.pop_front() {
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

    #[tokio::test]
    async fn a_shut_down_pool_refuses_new_jobs() {
        let pool = WorkerPool::new(1, "test-pool").unwrap();
        pool.shutdown();
        assert_eq!(pool.run(|| 1).await, Err(Lost));
    }
}
