//! The configuration a request runs on: one discovery snapshot and the route table compiled
//! from it, swapped whole when the cluster view changes (DESIGN §6). A request loads the
//! current pair once and keeps it to the end, so a config change drains nothing and no
//! request ever sees routes from one snapshot and endpoints from another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use discovery::Snapshot;

use crate::routes::RouteTable;

/// A snapshot and its routes.
pub struct Compiled {
    pub snapshot: Arc<Snapshot>,
    pub routes: RouteTable,
    /// How long compiling took, for `/config_dump` and the log.
    pub compile_time: Duration,
}

impl Compiled {
    pub fn compile(snapshot: Arc<Snapshot>) -> Compiled {
        let started = Instant::now();
        let routes = RouteTable::compile(&snapshot);
        Compiled {
            snapshot,
            routes,
            compile_time: started.elapsed(),
        }
    }
}

/// The current [`Compiled`], readable without locks.
#[derive(Clone)]
pub struct SharedState(Arc<ArcSwap<Compiled>>);

impl SharedState {
    pub fn new(first: Compiled) -> SharedState {
        SharedState(Arc::new(ArcSwap::from_pointee(first)))
    }

    pub fn current(&self) -> Arc<Compiled> {
        self.0.load_full()
    }

    fn store(&self, compiled: Compiled) {
        self.0.store(Arc::new(compiled));
    }
}

/// Compiles every new snapshot of `source` and swaps it in, until the source ends. Compiling
/// runs on a blocking thread: a big table must not stall the requests on this worker.
pub async fn follow(source: Arc<discovery::Source>, state: SharedState) {
    let mut snapshots = source.subscribe();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let generation = snapshot.generation();
        match tokio::task::spawn_blocking(move || Compiled::compile(snapshot)).await {
            Ok(compiled) => {
                tracing::info!(
                    generation,
                    routes = compiled.routes.route_count(),
                    compile_ms = compiled.compile_time.as_secs_f64() * 1e3,
                    "route table updated"
                );
                state.store(compiled);
            }
            Err(error) => {
                tracing::error!(%error, generation, "compiling the route table failed; keeping the previous one")
            }
        }
    }
}
