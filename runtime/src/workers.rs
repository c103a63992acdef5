//! A thread-per-core data plane: worker threads that each run a single-threaded tokio runtime.
//! A connection placed on a worker is served there to its end, with every task it spawns (on
//! a current-thread runtime `tokio::spawn` stays on that thread) and, through
//! [`current_worker`], the upstream connections it opens from its own per-worker pool.
//!
//! Why not one multi-threaded runtime: a proxied request hops between four tasks (the
//! downstream connection, the request, the upstream client connection, the upstream HBONE
//! connection) and back. On a work-stealing runtime those hops land on whichever worker is
//! awake, so at moderate load (workers parked between requests) most of them cost a futex
//! wake-up, a context switch and a steal: the waypoint spent more CPU per request in the
//! kernel's scheduler than in TLS, HTTP and routing together. Envoy and pingora's no-steal
//! runtime pin a connection to a worker for the same reason. What it costs: a worker serves
//! its connections alone, so one very busy HBONE connection uses at most one core.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is, `None` outside [`Workers`]. Lets a shared
/// structure keep per-worker state (a connection pool) without locking across workers.
pub fn current_worker() -> Option<usize> {
    WORKER_INDEX.with(Cell::get)
}

/// Worker threads, each a current-thread runtime with every driver enabled. Dropping it stops
/// them: tasks still running on a worker are cancelled, so stop serving (drain) first.
pub struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

struct Worker {
    handle: Handle,
    /// Connections placed on this worker and not yet finished.
    load: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// A connection's place on a worker; the worker counts it until this is dropped.
#[derive(Debug)]
pub struct Placement {
    pub handle: Handle,
    pub worker: usize,
    load: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// `count` workers (at least one) named `<name>-<index>`.
    pub fn start(name: &str, count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::allocator::flush_thread_cache_if_due)
                .build()?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|slot| slot.set(Some(index)));
                    runtime.block_on(stopped.cancelled());
                })?;
            workers.push(Worker {
                handle,
                load: Arc::new(AtomicUsize::new(0)),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers, stop })
    }

    /// One worker per available core: what tokio's multi-threaded runtime would start.
    pub fn per_core(name: &str) -> std::io::Result<Workers> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Workers::start(name, cores)
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// The worker with the fewest connections (the lowest index on a tie), counting the new
    /// one until the returned [`Placement`] is dropped. Connections live long and carry very
    /// different loads, so this beats round-robin only by a little, but never does worse.
    pub fn place(&self) -> Placement {
        // `start` makes at least one worker, so index 0 always exists.
        let index = (0..self.workers.len())
            .min_by_key(|&index| self.workers[index].load.load(Ordering::Relaxed))
            .unwrap_or(0);
        let worker = &self.workers[index];
        worker.load.fetch_add(1, Ordering::Relaxed);
        Placement {
            handle: worker.handle.clone(),
            worker: index,
            load: worker.load.clone(),
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                // A worker that panicked has nothing left to stop.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_placed_on_a_worker_and_everything_it_spawns_runs_on_that_worker() {
        let workers = Workers::start("test-worker", 2).unwrap();
        let placement = workers.place();
        let (tx, rx) = std::sync::mpsc::channel();
        placement.handle.spawn(async move {
            let outer = (current_worker(), std::thread::current().id());
            let inner = tokio::spawn(async { (current_worker(), std::thread::current().id()) })
                .await
                .unwrap();
            tx.send((outer, inner)).unwrap();
        });
        let (outer, inner) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(outer.0, Some(placement.worker));
        assert_eq!(outer, inner, "a spawned task stays on its worker's thread");
        assert_eq!(current_worker(), None, "the test's own thread is no worker");
    }

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_leave_it_when_done() {
        let workers = Workers::start("test-worker", 3).unwrap();
        let first = workers.place();
        let second = workers.place();
        let third = workers.place();
        let mut used = [first.worker, second.worker, third.worker];
        used.sort_unstable();
        assert_eq!(used, [0, 1, 2], "one connection on each worker");
        let freed = second.worker;
        drop(second);
        assert_eq!(
            workers.place().worker,
            freed,
            "the worker that finished one is next"
        );
    }

    #[test]
    fn dropping_the_workers_stops_their_threads_and_cancels_what_runs_there() {
        let workers = Workers::start("test-worker", 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        workers.place().handle.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the pending task was dropped with its worker's runtime"
        );
    }
}
