//! Graceful shutdown: stop taking new work, let the work in flight finish, and know when it has
//! (or when waiting longer is pointless).
//!
//! A [`channel`] gives one [`DrainTrigger`] and a [`DrainWatcher`]. The trigger belongs to
//! whoever decides that the process stops (`main`, on SIGTERM); watchers are cloned into
//! everything that must finish first: an accept loop, each connection, a background task.
//!
//! - A watcher learns that the drain started with [`DrainWatcher::drain_started`] (or
//!   [`DrainWatcher::is_draining`]); a watcher cloned after that sees it at once.
//! - Holding a watcher *is* being in flight: [`DrainTrigger::start_drain_and_wait`] returns when
//!   the last watcher is dropped, or when its deadline passes, and says which
//!   ([`DrainOutcome`]).
//!
//! So an accept loop stops accepting when the drain starts and drops its watcher; each
//! connection it spawned holds a clone until it is done (finishing its request, answering with
//! `connection: close` or GOAWAY, …). The accept module's `accept_until_drained` is that loop.
//! - Work that starts later, in a place that must not itself hold the drain open (a table of
//!   pods, a shared proxy context), takes its watchers from a [`WatcherSource`].
//!
//! ```
//! use std::time::Duration;
//! use runtime::drain::{self, DrainOutcome, DrainWatcher};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tokio::net::{TcpListener, TcpStream};
//!
//! /// Echoes one line per connection; a connection finishes its line even while draining.
//! async fn serve(listener: TcpListener, drain: DrainWatcher) {
//!     loop {
//!         let (mut stream, _) = tokio::select! {
//!             // Stop accepting: returning drops this loop's watcher.
//!             () = drain.drain_started() => return,
//!             accepted = listener.accept() => match accepted {
//!                 Ok(accepted) => accepted,
//!                 Err(_) => continue,
//!             },
//!         };
//!         // The connection's own watcher: the drain waits until this task ends.
//!         let in_flight = drain.clone();
//!         tokio::spawn(async move {
//!             let mut line = [0u8; 6];
//!             if stream.read_exact(&mut line).await.is_ok() {
//!                 let _ = stream.write_all(&line).await;
//!             }
//!             drop(in_flight);
//!         });
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let address = listener.local_addr()?;
//! let (trigger, watcher) = drain::channel();
//! tokio::spawn(serve(listener, watcher));
//!
//! let mut client = TcpStream::connect(address).await?;
//! client.write_all(b"hello\n").await?;
//! // SIGTERM arrives: no new connections, but the one in flight gets its answer.
//! let draining = tokio::spawn(trigger.start_drain_and_wait(Duration::from_secs(5)));
//! let mut echoed = [0u8; 6];
//! client.read_exact(&mut echoed).await?;
//! assert_eq!(&echoed, b"hello\n");
//! assert_eq!(draining.await?, DrainOutcome::Drained);
//! # Ok(())
//! # }
//! ```
//!
//! Built on one `tokio::sync::watch` channel: the value says whether the drain started, and the
//! receivers are the holders (the sender knows how many are left and when the last is gone).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A new drain: the trigger, and the first watcher (clone it for each piece of work).
pub fn channel() -> (DrainTrigger, DrainWatcher) {
    let (started, watching) = watch::channel(false);
    let started = Arc::new(started);
    (DrainTrigger { started }, DrainWatcher { started: watching })
}

/// Starts the drain. Dropping it without starting one counts as a drain that started (nobody
/// could ever start it any more, so the work should wind down), with nobody waiting for it.
pub struct DrainTrigger {
    started: Arc<watch::Sender<bool>>,
}

/// Hands out watchers without being one: a watcher kept only to clone from would hold the
/// drain open forever. Cheap to clone.
#[derive(Clone)]
pub struct WatcherSource {
    started: Arc<watch::Sender<bool>>,
}

impl WatcherSource {
    /// A watcher for work starting now; it sees a drain that already started at once.
    pub fn watcher(&self) -> DrainWatcher {
        DrainWatcher {
            started: self.started.subscribe(),
        }
    }
}

/// Sees the drain start; held (or a clone of it held) by everything the drain waits for.
/// Cloning is cheap; drop it as soon as the work it stands for is done.
#[derive(Clone)]
pub struct DrainWatcher {
    started: watch::Receiver<bool>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every watcher was dropped before the deadline: all work finished.
    Drained,
    /// The deadline passed while `still_held` watchers were alive: that work is cut off when
    /// the process exits.
    DeadlineReached { still_held: usize },
}

impl DrainTrigger {
    /// Tells every watcher that the drain started, then waits until every watcher is dropped
    /// or `deadline` has passed, whichever comes first.
    pub async fn start_drain_and_wait(self, deadline: Duration) -> DrainOutcome {
        // send_replace stores the value even when no watcher is left (send would not).
        self.started.send_replace(true);
        match tokio::time::timeout(deadline, self.started.closed()).await {
            Ok(()) => DrainOutcome::Drained,
            Err(_) => DrainOutcome::DeadlineReached {
                still_held: self.started.receiver_count(),
            },
        }
    }

    /// A new watcher, for work started after the first watcher was handed out.
    pub fn watcher(&self) -> DrainWatcher {
        self.source().watcher()
    }

    /// Where work started later gets its watchers (see [`WatcherSource`]).
    pub fn source(&self) -> WatcherSource {
        WatcherSource {
            started: self.started.clone(),
        }
    }

    /// Watchers alive now: the work a drain would wait for.
    pub fn holders(&self) -> usize {
        self.started.receiver_count()
    }
}

impl DrainWatcher {
    /// Resolves once the drain has started (at once if it already had), or once the trigger
    /// was dropped. The watcher stays a holder: keep it until the work is done.
    pub async fn drain_started(&self) {
        // A clone, so that waiting needs no `&mut self`; `wait_for` looks at the current value
        // first, which is what makes late clones see a drain that already started.
        let mut started = self.started.clone();
        // Err: the trigger is gone, and with it any chance of a drain that is not "now".
        let _ = started.wait_for(|started| *started).await;
    }

    /// Whether the drain has started (or the trigger and every [`WatcherSource`] were dropped).
    pub fn is_draining(&self) -> bool {
        *self.started.borrow() || self.started.has_changed().is_err()
    }
}

impl std::fmt::Debug for DrainTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainTrigger")
            .field("started", &*self.started.borrow())
            .field("holders", &self.holders())
            .finish()
    }
}

impl std::fmt::Debug for DrainWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainWatcher")
            .field("draining", &self.is_draining())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::time::Instant;

    /// Whether `future` is ready without time moving on.
    async fn ready_now(future: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(Duration::ZERO, future).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_source_is_no_holder_but_its_watchers_are() {
        let (trigger, first) = channel();
        drop(first);
        let source = trigger.source();
        let late = source.watcher();
        assert_eq!(trigger.holders(), 1, "only the watcher, not the source");
        let finishing = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(late);
        });
        let outcome = trigger.start_drain_and_wait(Duration::from_secs(30)).await;
        assert_eq!(outcome, DrainOutcome::Drained);
        finishing.await.unwrap();
        assert!(
            source.watcher().is_draining(),
            "work started after the drain sees it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_holders_the_drain_ends_at_once() {
        let (trigger, watcher) = channel();
        drop(watcher);
        let start = Instant::now();
        let outcome = trigger.start_drain_and_wait(Duration::from_secs(30)).await;
        assert_eq!(outcome, DrainOutcome::Drained);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_when_the_last_holder_finishes_not_at_the_deadline() {
        let (trigger, watcher) = channel();
        for work in [1, 3] {
            let held = watcher.clone();
            tokio::spawn(async move {
                held.drain_started().await;
                // Finishing what is in flight takes a while.
                tokio::time::sleep(Duration::from_secs(work)).await;
                drop(held);
            });
        }
        drop(watcher);
        let start = Instant::now();
        let outcome = trigger.start_drain_and_wait(Duration::from_secs(30)).await;
        assert_eq!(outcome, DrainOutcome::Drained);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_never_finishes_is_reported_at_the_deadline() {
        let (trigger, watcher) = channel();
        let finishes = watcher.clone();
        tokio::spawn(async move {
            finishes.drain_started().await;
            drop(finishes);
        });
        // `watcher` itself stands for work stuck for good.
        let start = Instant::now();
        let outcome = trigger.start_drain_and_wait(Duration::from_secs(10)).await;
        assert_eq!(outcome, DrainOutcome::DeadlineReached { still_held: 1 });
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(watcher.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn watchers_cloned_after_the_drain_started_see_it_at_once() {
        let (trigger, watcher) = channel();
        assert!(!watcher.is_draining());
        assert!(!ready_now(watcher.drain_started()).await);
        let draining = tokio::spawn(trigger.start_drain_and_wait(Duration::from_secs(10)));
        // Let the trigger's task run up to its wait.
        while !watcher.is_draining() {
            tokio::task::yield_now().await;
        }
        let late = watcher.clone();
        assert!(late.is_draining());
        assert!(ready_now(late.drain_started()).await);
        drop((watcher, late));
        assert_eq!(draining.await.unwrap(), DrainOutcome::Drained);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_trigger_counts_as_a_drain() {
        let (trigger, watcher) = channel();
        let from_trigger = trigger.watcher();
        assert_eq!(trigger.holders(), 2);
        drop(trigger);
        assert!(watcher.is_draining() && from_trigger.is_draining());
        assert!(ready_now(watcher.drain_started()).await);
    }
}
