//! The server's bounds (DESIGN §7): connections per source, time to the first stream, and
//! the header-list size. Each case is an abuse that used to hold resources, next to a client
//! that behaves and must still be served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hbone::{CancellationToken, ConnectRequest, ServerConfig};
use runtime::{ConnectionLimiter, Limits};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::common::*;

/// A server behind `Server::serve` (its own accept loop, with the limiter) on 127.0.0.1.
async fn serve(mesh: &Mesh, config: ServerConfig) -> (SocketAddr, CancellationToken) {
    // Nobody reads what finished; the handler ignores a closed channel.
    let (tx, _) = tokio::sync::mpsc::unbounded_channel();
    let handler = TestHandler {
        deny: false,
        finished: tx,
    };
    let server = hbone::Server::forwarding(config, mesh.server_tls(), handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move { server.serve(listener, stop).await });
    (address, shutdown)
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

async fn tunnel_works(mesh: &Mesh, tcp: TcpStream, echo: SocketAddr) -> Result<(), String> {
    let connection =
        hbone::Connection::handshake(tcp, Arc::new(mesh.client_tls()), &client_config(), 1)
            .await
            .map_err(|e| e.to_string())?;
    let mut stream = connection
        .open(&ConnectRequest::new(echo))
        .await
        .map_err(|e| e.to_string())?;
    if round_trip(&mut stream, b"ping").await == b"ping" {
        Ok(())
    } else {
        Err("echo mismatch".into())
    }
}

/// Reads until the server closes; `true` if it did within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn one_source_cannot_hold_every_connection() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let config = ServerConfig {
        limiter: ConnectionLimiter::new(
            "hbone-test",
            Limits {
                max_connections: 100,
                max_connections_per_source: 3,
            },
        ),
        ..server_config()
    };
    let (server, _shutdown) = serve(&mesh, config).await;
    // 127.0.0.2 opens connections and never handshakes: it keeps three, the rest are closed.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect_from("127.0.0.2", server).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect_from("127.0.0.2", server).await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5)).await,
        "a connection over the per-source cap is closed at once"
    );
    // Another source is served meanwhile.
    let other = connect_from("127.0.0.3", server).await;
    tunnel_works(&mesh, other, echo).await.unwrap();
}

#[tokio::test]
async fn a_connection_that_opens_no_stream_is_closed() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let config = ServerConfig {
        first_stream_timeout: Duration::from_millis(300),
        ..server_config()
    };
    let (server, _shutdown) = serve(&mesh, config).await;
    let tcp = TcpStream::connect(server).await.unwrap();
    let silent =
        hbone::Connection::handshake(tcp, Arc::new(mesh.client_tls()), &client_config(), 1)
            .await
            .unwrap();
    eventually(
        "the silent connection is closed",
        Duration::from_secs(5),
        || !silent.is_open(),
    )
    .await;
    // A connection that uses itself promptly is unaffected, also after its first stream ends.
    let tcp = TcpStream::connect(server).await.unwrap();
    let busy = hbone::Connection::handshake(tcp, Arc::new(mesh.client_tls()), &client_config(), 2)
        .await
        .unwrap();
    let mut stream = busy.open(&ConnectRequest::new(echo)).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(busy.is_open(), "an idle pooled connection may stay");
    let mut again = busy.open(&ConnectRequest::new(echo)).await.unwrap();
    assert_eq!(round_trip(&mut again, b"pong").await, b"pong");
}

#[tokio::test]
async fn a_header_block_over_64_kib_is_refused() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let (server, _shutdown) = serve(&mesh, server_config()).await;
    let tcp = TcpStream::connect(server).await.unwrap();
    let connection =
        hbone::Connection::handshake(tcp, Arc::new(mesh.client_tls()), &client_config(), 1)
            .await
            .unwrap();
    let mut huge = ConnectRequest::new(echo);
    huge.baggage = Some("k=".to_owned() + &"v".repeat(100 * 1024));
    assert!(
        connection.open(&huge).await.is_err(),
        "100 KiB of headers must not be accepted"
    );
    // The server is fine; a normal CONNECT on a fresh connection works.
    let tcp = TcpStream::connect(server).await.unwrap();
    tunnel_works(&mesh, tcp, echo).await.unwrap();
}

/// A pooled connection carries no new tunnels once a certificate it was made with expired:
/// TLS checked validity only at the handshake.
#[tokio::test]
async fn no_new_tunnels_on_a_connection_whose_certificate_expired() {
    let mesh = Mesh::new();
    let echo = echo_server().await;
    let (server, _shutdown) = serve(&mesh, server_config()).await;
    let now = std::time::SystemTime::now();
    let short_lived = mesh
        .pki
        .certificate_valid(
            &mesh.client_id,
            now - Duration::from_secs(60),
            now + Duration::from_secs(2),
        )
        .unwrap();

    // The server's side: it sends GOAWAY when the client's certificate expires.
    let tcp = TcpStream::connect(server).await.unwrap();
    let client_tls = certs::tls::client_config(
        short_lived.clone(),
        mesh.pki.bundle(),
        vec![mesh.server_id.clone()],
    )
    .unwrap();
    let direct = hbone::Connection::handshake(tcp, Arc::new(client_tls), &client_config(), 1)
        .await
        .unwrap();
    let mut stream = direct.open(&ConnectRequest::new(echo)).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"ping").await, b"ping");

    // The pool's side: it stops handing out the connection.
    let pool = mesh.pool(client_config());
    let key = mesh.key(server);
    let mut first = pool
        .connect(&key, &short_lived, &ConnectRequest::new(echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut first, b"ping").await, b"ping");

    tokio::time::sleep(Duration::from_millis(3200)).await;
    eventually(
        "the server closed the expired client's connection to new streams",
        Duration::from_secs(5),
        || !direct.is_open(),
    )
    .await;
    let again = pool
        .connect(&key, &short_lived, &ConnectRequest::new(echo))
        .await;
    assert!(
        again.is_err(),
        "a tunnel was opened with an expired certificate over a pooled connection"
    );
}
