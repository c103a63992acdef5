//! The pool: multiplexing, stream caps, single dials under bursts, idle eviction.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hbone::{
    ClientConfig, ConnectError, ConnectRequest, H2Settings, Pool, PoolKey, ServerConfig,
    TunnelError,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_streams_share_one_connection() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let key = mesh.key(server.address);
    const STREAMS: usize = 150;
    let start = Arc::new(Barrier::new(STREAMS));
    let all_open = Arc::new(Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (pool, key, cert) = (pool.clone(), key.clone(), mesh.client_cert.clone());
        let (start, all_open) = (start.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut stream = pool
                .connect(&key, &cert, &ConnectRequest::new(echo))
                .await
                .unwrap();
            // Every stream is open at the same time before any finishes.
            all_open.wait().await;
            let payload = pattern(1024 + i, i as u64);
            assert_eq!(round_trip(&mut stream, &payload).await, payload);
            stream.shutdown().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.accepts(), 1, "streams must be multiplexed");
    assert_eq!(pool.open_connections(&key), 1);
}

#[tokio::test]
async fn a_full_connection_makes_the_pool_open_another() {
    let mesh = Mesh::new();
    // The server allows 4 concurrent streams per connection (in production: 200).
    let config = ServerConfig {
        h2: H2Settings {
            max_concurrent_streams: 4,
            ..H2Settings::default()
        },
        ..server_config()
    };
    let server = TestServer::start(&mesh, config, false).await;
    let echo = echo_server().await;
    let pool = mesh.pool(client_config());
    let key = mesh.key(server.address);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = pool
            .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
            .await
            .unwrap();
        round_trip(&mut s, b"x").await;
        held.push(s);
    }
    assert_eq!(server.accepts(), 1);
    let mut fifth = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    assert_eq!(round_trip(&mut fifth, b"fifth").await, b"fifth");
    assert_eq!(
        server.accepts(),
        2,
        "the 5th stream needs a second connection"
    );

    // Freed slots are reused before anything new is dialled.
    drop(held.pop());
    let mut again = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    round_trip(&mut again, b"y").await;
    assert_eq!(server.accepts(), 2);
}

/// A burst larger than one connection's cap dials only as many connections as needed, one at
/// a time: no connection storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_dials_only_the_connections_it_needs() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let config = ClientConfig {
        max_streams_per_connection: 10,
        ..client_config()
    };
    let pool = mesh.pool(config);
    let key = mesh.key(server.address);
    const STREAMS: usize = 35;
    let start = Arc::new(Barrier::new(STREAMS));
    let all_open = Arc::new(Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (pool, key, cert) = (pool.clone(), key.clone(), mesh.client_cert.clone());
        let (start, all_open) = (start.clone(), all_open.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut s = pool
                .connect(&key, &cert, &ConnectRequest::new(echo))
                .await
                .unwrap();
            all_open.wait().await;
            round_trip(&mut s, b"z").await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(server.accepts(), 4, "35 streams at 10 per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_is_shared_by_everyone_waiting_for_it() {
    let mesh = Mesh::new();
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = dials.clone();
    let dialer = move |_key: &PoolKey| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err::<TcpStream, _>(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "nobody home",
            ))
        }
    };
    let pool = Pool::new(client_config(), mesh.pki.bundle().clone(), Arc::new(dialer));
    let key = mesh.key("127.0.0.1:15008".parse().unwrap());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (pool, key, cert) = (pool.clone(), key.clone(), mesh.client_cert.clone());
        tasks.push(tokio::spawn(async move {
            pool.connect(
                &key,
                &cert,
                &ConnectRequest::new("10.0.0.1:80".parse().unwrap()),
            )
            .await
        }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, TunnelError::Connect(ConnectError::Dial { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("nobody home"), "{err}");
    }
    assert_eq!(dials.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_dialer_gets_the_key_and_extra_separates_connections() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let dialer = move |key: &PoolKey| {
        record.lock().unwrap().push(key.extra);
        TcpStream::connect(key.address)
    };
    let pool = Pool::new(client_config(), mesh.pki.bundle().clone(), Arc::new(dialer));
    let mut streams = Vec::new();
    for pod in ["10.0.0.1", "10.0.0.2", "10.0.0.1"] {
        let mut key = mesh.key(server.address);
        key.extra = Some(pod.parse().unwrap());
        let mut s = pool
            .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
            .await
            .unwrap();
        round_trip(&mut s, b"k").await;
        streams.push(s);
    }
    assert_eq!(server.accepts(), 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap())
        ]
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mesh = Mesh::new();
    let server = TestServer::start(&mesh, server_config(), false).await;
    let echo = echo_server().await;
    let config = ClientConfig {
        idle_timeout: Duration::from_millis(100),
        ..client_config()
    };
    let pool = mesh.pool(config);
    let key = mesh.key(server.address);
    let mut s = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    round_trip(&mut s, b"1").await;
    // A connection with an open stream is not idle, however long it is quiet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.open_connections(&key), 1);
    drop(s);
    eventually(
        "the idle connection is closed",
        Duration::from_secs(3),
        || pool.open_connections(&key) == 0 && server.ended.lock().unwrap().len() == 1,
    )
    .await;
    let mut s = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    round_trip(&mut s, b"2").await;
    assert_eq!(server.accepts(), 2);
}

#[tokio::test]
async fn after_a_burst_one_idle_connection_stays_warm_and_the_rest_close_soon() {
    let mesh = Mesh::new();
    let server_config = ServerConfig {
        h2: H2Settings {
            max_concurrent_streams: 2,
            ..H2Settings::default()
        },
        ..server_config()
    };
    let server = TestServer::start(&mesh, server_config, false).await;
    let echo = echo_server().await;
    let config = ClientConfig {
        idle_timeout: Duration::from_secs(60),
        surplus_idle_timeout: Duration::from_millis(200),
        ..client_config()
    };
    let pool = mesh.pool(config);
    let key = mesh.key(server.address);
    // A burst of 6 tunnels needs 3 connections.
    let mut burst = Vec::new();
    for i in 0..6u8 {
        let mut s = pool
            .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
            .await
            .unwrap();
        round_trip(&mut s, &[i]).await;
        burst.push(s);
    }
    assert_eq!(pool.open_connections(&key), 3);
    drop(burst);
    eventually(
        "the burst's surplus connections are closed",
        Duration::from_secs(3),
        || pool.open_connections(&key) == 1 && server.ended.lock().unwrap().len() == 2,
    )
    .await;
    // The one kept is used: no new dial.
    let mut s = pool
        .connect(&key, &mesh.client_cert, &ConnectRequest::new(echo))
        .await
        .unwrap();
    round_trip(&mut s, b"again").await;
    assert_eq!(server.accepts(), 3);
}
