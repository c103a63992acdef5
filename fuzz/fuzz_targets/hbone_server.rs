//! Raw HTTP/2 into the HBONE server (hbone/src/server.rs): whatever an authenticated peer sends
//! after the mTLS handshake, byte for byte, through the server's real HTTP/2 settings, stream
//! handling and CONNECT validation (`hbone::fuzzing::serve_h2`, the post-TLS half of
//! `Server::serve_connection`, over an in-memory duplex).
//!
//! Input: the first byte picks the options — bit 0 prepends the HTTP/2 client preface (so
//! mutations are not wasted on it), bits 1-7 the size of the duplex buffer (1-127 bytes, or 64
//! KiB for 0), which splits frames across reads; the rest is the client's bytes, after which the
//! client half-closes. Time is paused: the server's timers (handshake, keep-alive) fire as soon
//! as everything else waits, so a run is deterministic.
//!
//! Contract: never panics (a panic in a stream task aborts the process too); every request the
//! service sees passed validation — a CONNECT to the dialled IP with a non-zero port, with the
//! connection's identity and addresses; and the connection ends once the client has gone (no
//! hang: bounded by a virtual minute).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use certs::testing::TestPki;
use certs::SpiffeId;
use hbone::{CancellationToken, InboundRequest, Refusal, Responder, Server, ServerConfig, Service};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const LOCAL: &str = "10.0.0.5:15008";
const PEER: &str = "10.0.0.9:40000";

struct Fixture {
    server: Server<CheckingService>,
    identity: SpiffeId,
}

/// Checks what it is handed, then refuses or accepts by the authority's port.
struct CheckingService {
    identity: SpiffeId,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Service for CheckingService {
    async fn serve(&self, request: InboundRequest, responder: Responder) {
        assert_eq!(request.peer_identity, self.identity);
        assert_eq!(request.local_addr, self.local);
        assert_eq!(request.peer_addr, self.peer);
        assert_eq!(
            request.authority.ip(),
            self.local.ip(),
            "authority IP check bypassed"
        );
        assert_ne!(request.authority.port(), 0);
        assert_ne!(request.stream_id, 0);
        assert_eq!(request.stream_id % 2, 1, "client streams are odd");
        let _ = request.forwarded_for();
        match request.authority.port() % 4 {
            0 => responder.refuse(&Refusal::denied("fuzz: denied")),
            1 => responder.refuse(&Refusal::unavailable("fuzz: unavailable")),
            2 => drop(responder), // unanswered: the Responder answers 503 itself
            _ => {
                let Ok(mut tunnel) = responder.accept() else {
                    return;
                };
                // Echo what arrives until the client ends its side, then end ours.
                let mut buffer = [0u8; 512];
                while let Ok(n) = tunnel.read(&mut buffer).await {
                    if n == 0 || tunnel.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = tunnel.shutdown().await;
            }
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = TestPki::new("cluster.local").expect("test PKI");
        let server_id = pki.id("shop", "web");
        let identity = pki.id("shop", "client");
        let certificate = pki.certificate(&server_id).expect("server certificate");
        let tls = certs::tls::server_config(certificate, pki.bundle()).expect("TLS config");
        let service = CheckingService {
            identity: identity.clone(),
            local: LOCAL.parse().expect("address"),
            peer: PEER.parse().expect("address"),
        };
        Fixture {
            server: Server::new(ServerConfig::default(), tls, service),
            identity,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, bytes)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let buffer = match usize::from(options >> 1) {
        0 => 64 * 1024,
        n => n,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (client, server_io) = tokio::io::duplex(buffer);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut sent = Vec::with_capacity(PREFACE.len() + bytes.len());
        if options & 1 == 1 {
            sent.extend_from_slice(PREFACE);
        }
        sent.extend_from_slice(bytes);
        let writer = tokio::spawn(async move {
            let _ = client_write.write_all(&sent).await;
            let _ = client_write.shutdown().await;
            // Keep the write half alive: dropping it would close the duplex for reading too.
            client_write
        });
        let reader = tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while let Ok(n) = client_read.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let served = hbone::fuzzing::serve_h2(
            &fixture.server,
            server_io,
            fixture.identity.clone(),
            LOCAL.parse().expect("address"),
            PEER.parse().expect("address"),
            CancellationToken::new(),
        );
        match tokio::time::timeout(Duration::from_secs(60), served).await {
            Ok(_result) => {}
            Err(_) => panic!("the HBONE server still serves a minute after the client closed"),
        }
        let _ = writer.await;
        let _ = reader.await;
    });
});
