//! The accept loop every TCP server uses: admits each connection against a
//! [`ConnectionLimiter`] (a connection over the limit is closed at once), hands the admitted
//! ones to a handler on their own task, and backs off instead of spinning when accepting fails
//! (typically: out of file descriptors). It stops on a `CancellationToken` ([`accept_loop`])
//! or when a drain starts ([`accept_until_drained`], which also makes every connection a
//! holder of the drain).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::drain::DrainWatcher;
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
    accept_until(
        name,
        listener,
        limiter,
        shutdown.cancelled(),
        |connection| {
            tokio::spawn(handle(connection));
        },
    )
    .await
}

/// Accepts on `listener` until the drain starts, running `handle` on a task of its own for
/// every admitted connection with a [`DrainWatcher`] of its own: the connection sees the
/// drain start through it (time to finish the request in flight and close, or send GOAWAY),
/// and the drain waits until every connection's task has dropped it. The loop's own watcher
/// is dropped when it returns, so a listener that stopped accepting no longer holds the
/// drain. `name` identifies the server in logs.
///
/// ```
/// use std::time::Duration;
/// use runtime::{accept_until_drained, drain, ConnectionLimiter, Limits};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let address = listener.local_addr()?;
/// let limits = Limits { max_connections: 64, max_connections_per_source: 8 };
/// let (trigger, watcher) = drain::channel();
/// tokio::spawn(accept_until_drained(
///     "greeter",
///     listener,
///     ConnectionLimiter::new("greeter", limits),
///     watcher,
///     |mut connection, drain| async move {
///         tokio::select! {
///             _ = connection.stream.write_all(b"hello\n") => {}
///             // A connection stuck on a slow peer gives up once the drain starts.
///             () = drain.drain_started() => {}
///         }
///     },
/// ));
/// let mut greeting = String::new();
/// tokio::net::TcpStream::connect(address).await?.read_to_string(&mut greeting).await?;
/// assert_eq!(greeting, "hello\n");
/// // On SIGTERM: stop accepting, give connections 5 s to finish.
/// let outcome = trigger.start_drain_and_wait(Duration::from_secs(5)).await;
/// assert_eq!(outcome, drain::DrainOutcome::Drained);
/// # Ok(())
/// # }
/// ```
pub async fn accept_until_drained<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    limiter: ConnectionLimiter,
    drain: DrainWatcher,
    handle: F,
) where
    F: Fn(AcceptedConnection, DrainWatcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept_until(
        name,
        listener,
        limiter,
        drain.drain_started(),
        |connection| {
            tokio::spawn(handle(connection, drain.clone()));
        },
    )
    .await
}

/// The loop itself: accepts until `stop` resolves, hands each admitted connection to `spawn`.
async fn accept_until(
    name: &'static str,
    listener: TcpListener,
    limiter: ConnectionLimiter,
    stop: impl Future<Output = ()>,
    mut spawn: impl FnMut(AcceptedConnection),
) {
    let mut stop = std::pin::pin!(stop);
    let local = listener.local_addr().ok();
    let mut last_error_log: Option<Instant> = None;
    let mut errors_since_log = 0u64;
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Decided before any work for the connection. Over the limit the connection
                // is dropped right here: the client sees a close, nothing of ours is held for
                // it, and the limiter reports it (in bulk).
                let Ok(permit) = limiter.admit(peer.ip()).await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                spawn(AcceptedConnection {
                    stream,
                    peer,
                    permit,
                });
            }
            Err(error) => {
                errors_since_log += 1;
                if last_error_log.is_none_or(|last| last.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(server = name, listener = ?local, %error, failures = errors_since_log, "accept failed; backing off (out of file descriptors? check `ulimit -n` against the server's connection limits, and what holds connections)");
                    last_error_log = Some(Instant::now());
                    errors_since_log = 0;
                }
                tokio::select! {
                    () = &mut stop => return,
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
