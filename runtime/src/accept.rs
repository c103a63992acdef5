//! The accept loop every TCP server uses: admits each connection against a
//! [`ConnectionLimiter`] (a connection over the limit is closed at once), hands the admitted
//! ones to a handler on their own task, and backs off instead of spinning when accepting fails
//! (typically: out of file descriptors).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::limits::{ConnectionLimiter, ConnectionPermit};

/// An admitted connection; the permit must live as long as the connection.
pub struct AcceptedConnection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub permit: ConnectionPermit,
}

/// Back-off after a failed accept. EMFILE is not cleared by retrying at once; waiting lets
/// connections close, and keeps the loop from burning a core and flooding the log.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `shutdown` fires, running `handle` on a task of its own for
/// every admitted connection. `name` identifies the server in logs.
pub async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limiter: ConnectionLimiter,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(AcceptedConnection) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let mut last_error_log: Option<Instant> = None;
    let mut errors_since_log = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Over the limit the connection is dropped right here: the client sees a
                // close, nothing of ours is held for it.
                let Ok(permit) = limiter.try_acquire(peer.ip()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle(AcceptedConnection {
                    stream,
                    peer,
                    permit,
                }));
            }
            Err(error) => {
                errors_since_log += 1;
                if last_error_log.is_none_or(|last| last.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(server = name, listener = ?local, %error, failures = errors_since_log, "accept failed; backing off (out of file descriptors? check `ulimit -n` and what holds connections)");
                    last_error_log = Some(Instant::now());
                    errors_since_log = 0;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::limits::Limits;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_the_rest_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limiter = ConnectionLimiter::new(
            "test",
            Limits {
                max_connections: 2,
                max_connections_per_source: 2,
            },
        );
        let shutdown = CancellationToken::new();
        let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(accept_loop(
            "test",
            listener,
            limiter.clone(),
            shutdown.clone(),
            move |connection| {
                let held = held_tx.clone();
                async move {
                    // Hold the connection (and its permit) until the test is done.
                    let _ = held.send(connection);
                }
            },
        ));
        let _first = TcpStream::connect(address).await.unwrap();
        let _second = TcpStream::connect(address).await.unwrap();
        let mut held = vec![held_rx.recv().await.unwrap(), held_rx.recv().await.unwrap()];
        // The third is accepted by the kernel, then closed by the loop: it reads EOF.
        let mut third = TcpStream::connect(address).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(limiter.active(), 2);
        // Once one closes, a new client is served again.
        held.pop();
        let _fourth = TcpStream::connect(address).await.unwrap();
        let fourth = tokio::time::timeout(Duration::from_secs(5), held_rx.recv())
            .await
            .unwrap();
        assert!(fourth.is_some());
        shutdown.cancel();
        task.await.unwrap();
    }
}
