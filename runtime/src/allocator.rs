//! The binaries' memory allocator: jemalloc, tuned to give freed memory back to the kernel soon
//! after a load ends.
//!
//! A node agent's (or proxy's) memory is judged by its RSS, and its load comes in waves (a burst of
//! connections, then quiet). glibc's malloc kept most of a wave's pages: 100 s after 2 000
//! tunnelled connections had closed, RSS was still 40 MiB against 17 MiB idle, because freed
//! chunks in the middle of a thread's arena are not returned until a `malloc_trim`. jemalloc
//! purges unused dirty pages on a decay curve from a background thread (the `background_threads`
//! feature turns it on at start), so the memory goes back while the process is idle, without a
//! timer of ours and without `unsafe` FFI.
//!
//! Freed memory also waits in each thread's cache (tcache) until that thread allocates again:
//! after a load, idle tokio workers held about 3 MiB there, out of reach of the background
//! thread. [`multi_thread_runtime`] flushes a worker's cache when it goes idle (at most once a
//! second, so a busy worker that parks often pays nothing measurable).
//!
//! Each binary's `main` installs [`Jemalloc`] as its global allocator, calls [`tune`], and runs
//! on [`multi_thread_runtime`]:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: runtime::allocator::Jemalloc = runtime::allocator::Jemalloc;
//! ```

pub use tikv_jemallocator::Jemalloc;

use std::cell::Cell;
use std::time::{Duration, Instant};

use tikv_jemalloc_ctl::{background_thread, Access, AsName};

/// How long a freed dirty page may stay resident before the background thread purges it.
/// jemalloc's default is 10 s; DESIGN wants RSS back within 1 MB of idle 5 s after a load, and a
/// shorter decay costs only a few `madvise` calls per second while the load lasts (pages that are
/// reused within the window never leave).
pub const DIRTY_DECAY_MS: isize = 1_000;

/// Shortens the decay of the arenas jemalloc creates from now on and of those that exist (the
/// main thread's), and makes sure the background thread runs. Call once, before the runtime
/// starts its worker threads. A failure is logged and leaves jemalloc's defaults, which are
/// still correct, only slower to give memory back.
pub fn tune() {
    if let Err(error) = configure() {
        tracing::warn!(
            %error,
            "cannot tune the allocator; freed memory will be returned on jemalloc's default schedule"
        );
    }
}

fn configure() -> Result<(), tikv_jemalloc_ctl::Error> {
    background_thread::write(true)?;
    b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    let arenas: u32 = tikv_jemalloc_ctl::arenas::narenas::read()?;
    for arena in 0..arenas {
        let key = format!("arena.{arena}.dirty_decay_ms\0");
        // Arenas are created lazily: one not in use yet answers EFAULT, and gets the new
        // default from `arenas.dirty_decay_ms` when it is created.
        let _ = key.as_bytes().name().write(DIRTY_DECAY_MS);
    }
    Ok(())
}

/// What the heap holds, in bytes: `allocated` in live allocations; `resident` in physical pages
/// the allocator maps (live data, its own metadata, and freed pages not yet returned). Their
/// gap after a load is memory the allocator still has to give back; `allocated` above its idle
/// figure is memory the program itself still uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    pub allocated: usize,
    pub resident: usize,
}

/// The allocator's current [`HeapStats`] (jemalloc refreshes them on request).
pub fn heap_stats() -> Result<HeapStats, tikv_jemalloc_ctl::Error> {
    tikv_jemalloc_ctl::epoch::advance()?;
    Ok(HeapStats {
        allocated: tikv_jemalloc_ctl::stats::allocated::read()?,
        resident: tikv_jemalloc_ctl::stats::resident::read()?,
    })
}

/// A worker flushes its thread cache when it parks, at most this often.
const THREAD_CACHE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// tokio's multi-threaded runtime (all drivers on) whose workers hand their thread caches back
/// to the shared arenas when they go idle, so the background thread can return those pages too.
pub fn multi_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(flush_thread_cache_if_due)
        .build()
}

thread_local! {
    static LAST_FLUSH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs on a worker about to park. The first park of a thread only starts the clock.
pub(crate) fn flush_thread_cache_if_due() {
    let now = Instant::now();
    let due = LAST_FLUSH.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < THREAD_CACHE_FLUSH_INTERVAL => false,
        previous => {
            last.set(Some(now));
            previous.is_some()
        }
    });
    if due {
        flush_thread_cache();
    }
}

/// Empties the calling thread's cache into the arenas. jemalloc flushes a thread's cache when it
/// is disabled (`thread.tcache.enabled`), and the safe controls have no `thread.tcache.flush`,
/// so this turns it off and on again. A failure only leaves the cache as it was.
fn flush_thread_cache() {
    let enabled = b"thread.tcache.enabled\0".name();
    if enabled.write(false).is_ok() {
        let _ = enabled.write(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_sets_the_decay_for_new_arenas_and_keeps_the_background_thread() {
        configure().expect("jemalloc's controls answer");
        let decay: isize = b"arenas.dirty_decay_ms\0".name().read().expect("readable");
        assert_eq!(decay, DIRTY_DECAY_MS);
        assert!(background_thread::read().expect("readable"));
    }

    // This test binary allocates as the real binaries do, so the heap figures are its own.
    #[global_allocator]
    static TEST_ALLOCATOR: Jemalloc = Jemalloc;

    #[test]
    fn heap_stats_count_live_allocations() {
        const BLOCK: usize = 8 << 20;
        let before = heap_stats().expect("jemalloc's statistics answer");
        let block = vec![1u8; BLOCK];
        let holding = heap_stats().expect("jemalloc's statistics answer");
        // Other tests allocate in parallel: the block's size is a lower bound, not an equality.
        assert!(
            holding.allocated >= before.allocated + BLOCK - (1 << 20),
            "{before:?} → {holding:?} while holding {} bytes",
            block.len()
        );
        assert!(holding.resident >= holding.allocated, "{holding:?}");
    }

    #[test]
    fn flushing_leaves_the_thread_cache_enabled() {
        flush_thread_cache();
        let enabled: bool = b"thread.tcache.enabled\0".name().read().expect("readable");
        assert!(enabled);
    }

    #[test]
    fn a_worker_flushes_at_most_once_per_interval() {
        std::thread::spawn(|| {
            flush_thread_cache_if_due();
            let started = LAST_FLUSH
                .with(Cell::get)
                .expect("the first park starts the clock");
            flush_thread_cache_if_due();
            assert_eq!(
                LAST_FLUSH.with(Cell::get),
                Some(started),
                "too soon to flush again"
            );
            LAST_FLUSH.with(|last| last.set(Some(started - THREAD_CACHE_FLUSH_INTERVAL)));
            flush_thread_cache_if_due();
            assert!(
                LAST_FLUSH.with(Cell::get).expect("set") > started - THREAD_CACHE_FLUSH_INTERVAL
            );
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn the_runtime_runs_tasks() {
        let runtime = multi_thread_runtime().expect("a runtime");
        assert_eq!(
            runtime
                .block_on(async { tokio::spawn(async { 7 }).await })
                .ok(),
            Some(7)
        );
    }
}
