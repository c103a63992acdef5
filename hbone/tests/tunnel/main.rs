//! HBONE over real loopback sockets with a throw-away PKI: protocol answers, byte streams,
//! the pool and connection lifecycle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod lifecycle;
mod limits;
mod pool;
mod protocol;
mod streams;
