//! What every Ambit binary shares, so that each server is bounded and stopped the same way
//! (DESIGN §7): connection limits (total, per source, a per-source rate, making room when full)
//! and an accept loop that sheds load instead of failing; the drain signal that stops a server
//! gracefully; the small HTTP/1.1 server behind admin, metrics and readiness endpoints, with
//! header deadlines and a connection cap; logging set-up; the open-file limit; the allocator
//! every binary installs, tuned to return memory after a load; worker threads for a thread-per-core
//! data plane.

pub mod accept;
pub mod allocator;
pub mod drain;
pub mod fd_limit;
pub mod holding;
pub mod http_server;
pub mod limits;
pub mod logging;
pub mod signal;
pub mod workers;

pub use accept::{accept_loop, accept_until_drained, AcceptedConnection};
pub use drain::{DrainOutcome, DrainTrigger, DrainWatcher, WatcherSource};
pub use holding::{holding, Holding};
pub use http_server::{bind_shared, HttpServerConfig, Reply, Routes};
pub use limits::{
    ConnectionLimiter, ConnectionPermit, Limits, Policy, Shed, SourceGrouping, SourceKey, WhenFull,
};
pub use workers::{current_worker, Placement, Workers};
