//! HTTP/2 PING keep-alive, shared by both ends of a connection.

use std::time::Duration;

use h2::{Ping, PingPong};

use crate::config::KeepAlive;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeepAliveFailure {
    #[error("no PONG within {0:?}")]
    Timeout(Duration),
    #[error("PING failed: {0}")]
    Ping(h2::Error),
}

/// PINGs every `interval` and returns only when a PONG did not come back in time (or the PING
/// could not be sent). Run it alongside the connection future: the PONG is read by whoever
/// polls the connection.
pub(crate) async fn keep_alive(mut ping_pong: PingPong, settings: KeepAlive) -> KeepAliveFailure {
    loop {
        tokio::time::sleep(settings.interval).await;
        match tokio::time::timeout(settings.timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return KeepAliveFailure::Ping(e),
            Err(_) => return KeepAliveFailure::Timeout(settings.timeout),
        }
    }
}
