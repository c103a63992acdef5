//! Connection lifecycle: graceful GOAWAY, server drain, keep-alive against a vanished peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hbone::{
    CancellationToken, ClientConfig, ConnectError, ConnectRequest, KeepAlive, TunnelError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

#[tokio::test]
async fn goaway_lets_inflight_streams_finish_and_moves_new_ones() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let key = mesh.key(server.address);
    let mut inflight = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut inflight, b"before").await, b"before");

    server.shut_down_connection(0);
    eventually("the client saw GOAWAY", Duration::from_secs(3), || {
        pool.open_connections(&key) == 0
    })
    .await;

    // New streams go to a new connection.
    let mut fresh = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut fresh, b"new").await, b"new");
    assert_eq!(server.accepts(), 2);

    // The in-flight stream still works and ends cleanly.
    assert_eq!(round_trip(&mut inflight, b"after").await, b"after");
    inflight.shutdown().await.unwrap();
    let mut rest = Vec::new();
    inflight.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(inflight);
    eventually(
        "the drained connection closed",
        Duration::from_secs(3),
        || server.ended.lock().unwrap().len() == 1,
    )
    .await;
    assert_eq!(server.ended.lock().unwrap()[0], Ok(()));
}

#[tokio::test]
async fn serve_stops_accepting_on_shutdown_and_drains() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let (tx, _finished) = tokio::sync::mpsc::unbounded_channel();
    let handler = TestHandler {
        deny: false,
        finished: tx,
    };
    let server = hbone::Server::forwarding(server_config(), mesh.server_tls(), handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { server.serve(listener, shutdown).await }
    });
    let pool = mesh.pool(client_config());
    let key = mesh.key(address);
    let mut inflight = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    round_trip(&mut inflight, b"a").await;

    shutdown.cancel();
    eventually("the client saw GOAWAY", Duration::from_secs(3), || {
        pool.open_connections(&key) == 0
    })
    .await;
    // The listener is gone: a new tunnel cannot be established.
    let err = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TunnelError::Connect(ConnectError::Dial { .. })),
        "{err}"
    );
    // The in-flight stream keeps working, and serve waits for it.
    assert_eq!(
        round_trip(&mut inflight, b"still here").await,
        b"still here"
    );
    assert!(!serving.is_finished());
    inflight.shutdown().await.unwrap();
    let mut rest = Vec::new();
    inflight.read_to_end(&mut rest).await.unwrap();
    drop(inflight);
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("serve returns once drained")
        .unwrap();
}

#[tokio::test]
async fn drain_deadline_closes_streams_that_do_not_finish() {
    let mesh = Mesh::new();
    let config = hbone::ServerConfig {
        drain_timeout: Duration::from_millis(200),
        ..server_config()
    };
    let server = TestServer::start(&mesh, config, false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let mut stuck = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(echo),
        )
        .await
        .unwrap();
    round_trip(&mut stuck, b"a").await;
    server.shut_down_connection(0);
    // The stream never ends by itself; the deadline ends the connection under it.
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(3), stuck.read(&mut buf))
        .await
        .expect("the drain deadline ends the stream");
    assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
}

/// Forwards TCP between a client and `target` until told to black-hole: then it stops
/// forwarding without closing anything, like a crashed node or a cut cable.
async fn blackhole_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let dead = Arc::new(AtomicBool::new(false));
    let flag = dead.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let server = TcpStream::connect(target).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, flag.clone()));
            tokio::spawn(pump(sr, cw, flag.clone()));
        }
    });
    (address, dead)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dead: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        if dead.load(Ordering::SeqCst) {
            // Swallow everything and keep both sockets open.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn keepalive_detects_a_dead_peer() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let (proxy, dead) = blackhole_proxy(server.address).await;
    let config = ClientConfig {
        keepalive: Some(KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
        }),
        ..client_config()
    };
    let pool = mesh.pool(config);
    let key = mesh.key(proxy);
    let mut stream = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut stream, b"alive").await, b"alive");
    // Several PING rounds pass while the peer answers.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(pool.open_connections(&key), 1);

    dead.store(true, Ordering::SeqCst);
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("keep-alive must fail the stream of a dead connection");
    assert!(read.is_err(), "{read:?}");
    assert_eq!(pool.open_connections(&key), 0);
}

/// A [`TestHandler`] that notes which worker thread each tunnel was served on.
struct WorkerNotingHandler {
    forward: TestHandler,
    workers_seen: Arc<std::sync::Mutex<Vec<Option<usize>>>>,
}

impl hbone::Handler for WorkerNotingHandler {
    type Upstream = TcpStream;
    type Context = ();

    async fn connect(
        &self,
        request: &hbone::InboundRequest,
    ) -> Result<(TcpStream, ()), hbone::Refusal> {
        self.workers_seen
            .lock()
            .unwrap()
            .push(runtime::current_worker());
        self.forward.connect(request).await
    }

    fn finished(&self, request: hbone::InboundRequest, context: (), report: hbone::CopyReport) {
        self.forward.finished(request, context, report)
    }
}

#[tokio::test]
async fn connections_served_on_workers_each_stay_on_one_and_drain_on_shutdown() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let workers_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (finished, _reports) = tokio::sync::mpsc::unbounded_channel();
    let handler = WorkerNotingHandler {
        forward: TestHandler {
            deny: false,
            finished,
        },
        workers_seen: workers_seen.clone(),
    };
    let server = hbone::Server::forwarding(server_config(), mesh.server_tls(), handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let workers = Arc::new(runtime::Workers::start("hbone-test", 2).unwrap());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn({
        let (shutdown, workers) = (shutdown.clone(), workers.clone());
        async move { server.serve_on(listener, shutdown, &workers).await }
    });

    // Two clients (two pools, so two HBONE connections), two tunnels each.
    let (first, second) = (mesh.pool(client_config()), mesh.pool(client_config()));
    let key = mesh.key(address);
    let mut tunnels = Vec::new();
    for pool in [&first, &second, &first, &second] {
        let mut tunnel = pool
            .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
            .await
            .unwrap();
        assert_eq!(round_trip(&mut tunnel, b"ping").await, b"ping");
        tunnels.push(tunnel);
    }
    let seen = workers_seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [Some(0), Some(1), Some(0), Some(1)],
        "each connection on the least loaded worker, its tunnels with it"
    );

    shutdown.cancel();
    eventually("the clients saw GOAWAY", Duration::from_secs(3), || {
        first.open_connections(&key) + second.open_connections(&key) == 0
    })
    .await;
    // In-flight tunnels still work during the drain, and serve waits for them.
    assert_eq!(round_trip(&mut tunnels[0], b"draining").await, b"draining");
    assert!(!serving.is_finished());
    drop(tunnels);
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("serve returns once drained")
        .unwrap();
}
