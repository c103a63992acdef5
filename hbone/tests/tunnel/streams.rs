//! Bytes through a tunnel: integrity of large transfers, back-pressure, half-close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hbone::ConnectRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::*;

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn large_transfer_both_ways_with_a_slow_reader() {
    let mesh = Mesh::new();
    let mut server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let stream = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(echo),
        )
        .await
        .unwrap();
    let data = Arc::new(pattern(32 * MIB, 7));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let sent = data.clone();
    let write = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
    });
    let mut received = Vec::with_capacity(32 * MIB);
    let mut buf = vec![0; 64 * 1024];
    let mut paused_at = 0;
    loop {
        let n = reader.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        // Read slowly now and then, so every hop has to hold back its sender.
        if received.len() - paused_at >= 8 * MIB {
            paused_at = received.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    write.await.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == *data, "payload corrupted in transit");

    let (_, report) = server.finished.recv().await.unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    assert_eq!(report.downstream_to_upstream, 32 * MIB as u64);
    assert_eq!(report.upstream_to_downstream, 32 * MIB as u64);
}

/// A workload that accepts one connection, reads nothing until told to, then reads to the end.
async fn stalled_sink() -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    oneshot::Receiver<u64>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (start_tx, start_rx) = oneshot::channel();
    let (total_tx, total_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        start_rx.await.unwrap();
        let mut total = 0u64;
        let mut buf = vec![0; 256 * 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let _ = total_tx.send(total);
    });
    (address, start_tx, total_rx)
}

#[tokio::test]
async fn writer_blocks_while_the_reader_does_not_read() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let (sink, start_reading, total) = stalled_sink().await;
    let pool = mesh.pool(client_config());
    let mut stream = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(sink),
        )
        .await
        .unwrap();

    const TOTAL: usize = 64 * MIB;
    let written = Arc::new(AtomicU64::new(0));
    let progress = written.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a; 64 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            stream.write_all(&chunk).await.unwrap();
            sent += chunk.len();
            progress.store(sent as u64, Ordering::SeqCst);
        }
        stream.shutdown().await.unwrap();
        // Keep the stream until the sink has everything.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
    });

    // Wait until the writer stops making progress.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
        assert!(now < TOTAL as u64, "the writer never blocked");
    }
    // What got out is bounded by the stream window, the server's copy buffer and what the
    // kernel buffers between the server and the workload (send buffer up to tcp_wmem's max,
    // plus the workload's small untuned receive buffer) — never the whole 64 MiB.
    let bound = hbone::config::STREAM_WINDOW as u64
        + hbone::CopyBuffers::default().max as u64
        + max_tcp_send_buffer()
        + 2 * MIB as u64;
    assert!(
        last < bound,
        "{last} bytes accepted by a tunnel whose reader reads nothing (bound {bound})"
    );
    assert!(!writer.is_finished());

    start_reading.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total.await.unwrap(), TOTAL as u64);
}

#[tokio::test]
async fn client_half_close_still_receives_the_reply() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    // A workload that answers only after the request ended.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let workload = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        tcp.read_to_end(&mut request).await.unwrap();
        let reply = format!("got {} bytes", request.len());
        tcp.write_all(reply.as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
    });
    let pool = mesh.pool(client_config());
    let mut stream = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(workload),
        )
        .await
        .unwrap();
    stream.write_all(&[1u8; 1000]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 1000 bytes");
}

#[tokio::test]
async fn server_half_close_still_receives_from_the_client() {
    let mesh = Mesh::new();
    let mut server = TestServer::start(&mesh, server_config(), false).await;
    // A workload that speaks first, closes its sending side, then listens to the end.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let workload = listener.local_addr().unwrap();
    let (heard_tx, heard) = oneshot::channel();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        tcp.write_all(b"banner").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.unwrap();
        heard_tx.send(rest).unwrap();
    });
    let pool = mesh.pool(client_config());
    let mut stream = pool
        .connect(
            &mesh.key(server.address),
            &mesh.client_cert,
            &ConnectRequest::new(workload),
        )
        .await
        .unwrap();
    let mut banner = Vec::new();
    // EOF here is the workload's FIN carried as END_STREAM.
    stream.read_to_end(&mut banner).await.unwrap();
    assert_eq!(banner, b"banner");
    // Our direction is still open.
    stream.write_all(b"after your FIN").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(heard.await.unwrap(), b"after your FIN");
    let (_, report) = server.finished.recv().await.unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    assert_eq!(report.upstream_to_downstream, 6);
    assert_eq!(report.downstream_to_upstream, 14);
}

/// The kernel's ceiling for an autotuned TCP send buffer (third field of tcp_wmem).
fn max_tcp_send_buffer() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * MIB as u64)
}
