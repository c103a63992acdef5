//! What every Ambit binary shares, so that each server is bounded the same way (DESIGN §7):
//! connection limits (total and per source) and an accept loop that sheds load instead of
//! failing, and the small HTTP/1.1 server behind admin, metrics and readiness endpoints, with
//! header deadlines and a connection cap.

pub mod accept;
pub mod fd_limit;
pub mod http_server;
pub mod limits;
pub mod logging;

pub use accept::{accept_loop, AcceptedConnection};
pub use http_server::{bind_shared, HttpServerConfig, Reply, Routes};
pub use limits::{ConnectionLimiter, ConnectionPermit, Limits, Shed};
