//! What the server answers (DESIGN §3): 400 malformed or IP mismatch, 401 denied, 503
//! unreachable, 200 only after the upstream connected; and what the client makes of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use hbone::{ConnectError, ConnectRequest, ServerConfig, TunnelError};
use http::{Method, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::common::*;

/// A plain h2 client over the mesh's mTLS, to send requests hbone's own client never would.
async fn raw_client(mesh: &Mesh, address: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(address).await.unwrap();
    let tls = TlsConnector::from(Arc::new(mesh.client_tls()))
        .connect(ServerName::from(address.ip()), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    send
}

async fn status_of(send: &SendRequest<Bytes>, method: Method, uri: Uri) -> StatusCode {
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let mut send = send.clone().ready().await.unwrap();
    let (response, _body) = send.send_request(request, false).unwrap();
    response.await.unwrap().status()
}

#[tokio::test]
async fn malformed_connects_and_ip_mismatch_get_400() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let send = raw_client(&mesh, server.address).await;

    let mut cases: Vec<(Method, String, StatusCode)> = vec![
        (Method::CONNECT, echo.to_string(), StatusCode::OK),
        (
            Method::GET,
            format!("http://{echo}/"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("https://{echo}/x"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::CONNECT,
            "127.0.0.1:0".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::CONNECT,
            "127.0.0.1:70000".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::CONNECT,
            "localhost:80".into(),
            StatusCode::BAD_REQUEST,
        ),
        // IP mismatch: the client dialled 127.0.0.1 but asks for another pod's IP.
        (
            Method::CONNECT,
            format!("127.0.0.2:{}", echo.port()),
            StatusCode::BAD_REQUEST,
        ),
    ];
    // Non-numeric ports only reach the server if the http crate lets them through.
    if "127.0.0.1:http".parse::<Uri>().is_ok() {
        cases.push((
            Method::CONNECT,
            "127.0.0.1:http".into(),
            StatusCode::BAD_REQUEST,
        ));
    }
    for (method, uri, expected) in cases {
        let got = status_of(&send, method.clone(), uri.parse().unwrap()).await;
        assert_eq!(got, expected, "{method} {uri}");
    }
}

/// h2 clients cannot send a CONNECT without `:authority`, so this one writes the frames.
#[tokio::test]
async fn connect_without_authority_gets_400() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let tcp = TcpStream::connect(server.address).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(mesh.client_tls()))
        .connect(ServerName::from(server.address.ip()), tcp)
        .await
        .unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&frame(0x4, 0, 0, &[])); // empty SETTINGS
                                                   // HPACK: literal without indexing, name = static index 2 (:method), value "CONNECT".
    let mut block = vec![0x02, 7];
    block.extend_from_slice(b"CONNECT");
    out.extend_from_slice(&frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS, stream 1
    tls.write_all(&out).await.unwrap();

    let status_block = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut header = [0u8; 9];
            tls.read_exact(&mut header).await.unwrap();
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let kind = header[3];
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            tls.read_exact(&mut payload).await.unwrap();
            assert_ne!(kind, 0x3, "stream reset instead of answered");
            if kind == 0x1 && stream == 1 {
                return payload;
            }
        }
    })
    .await
    .unwrap();
    // h2 encodes ":status: 400" as static table entry 12.
    assert_eq!(status_block.first(), Some(&0x8c), "expected :status 400");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn client_gets_typed_errors_for_400_401_503() {
    let mesh = Mesh::new();
    let open = TestServer::start(&mesh, server_config(), false).await;
    let denying = TestServer::start(&mesh, server_config(), true).await;
    let echo = echo_server().await;
    // A port nobody listens on: bind, note, close.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let pool = mesh.pool(client_config());

    let cases = [
        (&open, closed, 503, "could not reach the workload"),
        (
            &denying,
            echo,
            401,
            "denied by the destination's authorization policy",
        ),
        (
            &open,
            SocketAddr::new("127.0.0.3".parse().unwrap(), echo.port()),
            400,
            "malformed",
        ),
    ];
    for (server, authority, status, meaning) in cases {
        let result = pool
            .connect(
                &mesh.key(server.address),
                &mesh.client_cert,
                &ConnectRequest::new(authority),
            )
            .await;
        let err = result.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
        assert!(matches!(err, TunnelError::Refused { .. }));
        let text = err.to_string();
        assert!(text.contains(meaning), "{text}");
        assert!(text.contains(&authority.to_string()), "{text}");
    }
    // Refusals end the stream, not the connection: one connection per server.
    assert_eq!(open.accepts(), 1);
    assert_eq!(denying.accepts(), 1);
}

#[tokio::test]
async fn handler_sees_identity_addresses_and_headers() {
    let mesh = Mesh::new();
    let mut server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let request = ConnectRequest {
        authority: echo,
        forwarded_for: Some("10.1.2.3:4567".parse().unwrap()),
        baggage: Some("k8s.namespace.name=shop".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    };
    let mut stream = pool
        .connect(&mesh.key(server.address), &mesh.client_cert, &request)
        .await
        .unwrap();
    assert_eq!(round_trip(&mut stream, b"hello").await, b"hello");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();

    let (seen, report) = server.finished.recv().await.unwrap();
    assert_eq!(seen.peer_identity, mesh.client_id);
    assert_eq!(seen.authority, echo);
    assert_eq!(seen.local_addr, server.address);
    assert_eq!(seen.peer_addr.ip(), server.address.ip());
    assert_eq!(seen.forwarded_for(), request.forwarded_for);
    assert_eq!(seen.baggage, request.baggage);
    assert_eq!(seen.traceparent, request.traceparent);
    assert!(report.result.is_ok(), "{:?}", report.result);
    assert_eq!(report.downstream_to_upstream, 5);
    assert_eq!(report.upstream_to_downstream, 5);
}

/// A waypoint receives service VIPs as authority, so it turns the IP check off.
#[tokio::test]
async fn authority_ip_check_can_be_disabled() {
    let mesh = Mesh::new();
    let config = ServerConfig {
        check_authority_ip: false,
        ..server_config()
    };
    let server = TestServer::start(&mesh, config, false).await;
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let elsewhere = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"vip").await.unwrap();
    });
    let pool = mesh.pool(client_config());
    let mut stream = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(elsewhere),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"vip");
}

#[tokio::test]
async fn wrong_server_identity_is_a_handshake_error() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let mut key = mesh.key(server.address);
    key.destination = mesh.pki.id("shop", "payments");
    let err = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TunnelError::Connect(ConnectError::Handshake { .. })),
        "{text}"
    );
    assert!(text.contains("wrong peer identity"), "{text}");
}

/// TLS 1.3 servers judge the client certificate after the client thinks the handshake is done,
/// so the refusal arrives inside HTTP/2; it must still read as a handshake failure.
#[tokio::test]
async fn client_certificate_refused_by_the_server_is_a_handshake_error() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    // A client whose certificate comes from a CA the server does not trust.
    let stranger_pki = certs::testing::TestPki::new("cluster.local").unwrap();
    let stranger = stranger_pki.id("shop", "frontend");
    let stranger_cert = stranger_pki.certificate(&stranger).unwrap();
    let pool = mesh.pool(client_config());
    let mut key = mesh.key(server.address);
    key.source = stranger;
    let err = pool
        .connect(&key, &stranger_cert, &ConnectRequest::new(echo))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, TunnelError::Connect(ConnectError::Handshake { .. })),
        "{text}"
    );
    assert!(text.contains("rejected our certificate"), "{text}");
}
