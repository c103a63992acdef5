//! HBONE, the mesh's tunnel protocol (DESIGN §3): HTTP/2 `CONNECT` over mutual TLS, wire
//! compatible with Istio's ztunnel.
//!
//! - [`Server`] accepts HBONE connections and hands each valid CONNECT to a [`Service`]; most
//!   users give it a [`Handler`] via [`Server::forwarding`], which connects the upstream,
//!   answers 200, copies bytes and reports how the tunnel ended.
//! - [`Pool`] opens tunnels: it keeps connections per [`PoolKey`], dials through a pluggable
//!   [`Dialer`], and never dials twice at once for a key.
//! - [`H2Stream`] is one tunnel as `AsyncRead + AsyncWrite`; [`copy_bidirectional`] joins two
//!   byte streams with bounded buffers and half-close in both directions. Through a tunnel it
//!   copies no bytes itself ([`CopyRead`], [`CopyWrite`]): DATA frames are written on as they
//!   arrived, and what a socket read is handed to h2 by value.
//!
//! ```text
//! // inbound (ztunnel, port 15008 in the pod's netns)
//! let tls = certs::tls::server_config(certificate, &bundle)?;
//! let server = hbone::Server::forwarding(ServerConfig::default(), tls, my_handler);
//! server.serve(listener, shutdown_token).await;        // or serve_connection(tcp, token)
//!
//! // outbound
//! let pool = hbone::Pool::new(ClientConfig::default(), bundle, Arc::new(my_dialer));
//! let mut tunnel = pool.connect(&key, &source_certificate, &ConnectRequest::new(dst)).await?;
//! let report = hbone::copy_bidirectional(&mut app_tcp, &mut tunnel, &CopyBuffers::default()).await;
//! ```
#![forbid(unsafe_code)]

mod client;
pub mod config;
mod copy;
mod error;
mod expiry;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod keepalive;
mod pool;
mod read_ahead;
mod request;
mod server;
mod stream;
mod tap;

pub use client::Connection;
pub use config::{ClientConfig, CopyBuffers, H2Settings, KeepAlive, ServerConfig};
pub use copy::{
    copy_bidirectional, CopyError, CopyRead, CopyReport, CopyWrite, Direction, Operation, Unsent,
};
pub use error::{status_meaning, ConnectError, ServeError, TunnelError};
pub use forward::{Forward, Handler};
pub use pool::{Dialer, Pool, PoolKey, TcpDialer};
pub use request::{BadRequest, ConnectRequest, InboundRequest};
pub use server::{Refusal, RefusalStatus, Responder, Server, Service};
pub use stream::H2Stream;
pub use tokio_util::sync::CancellationToken;
