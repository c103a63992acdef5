//! A ztunnel that hands a pod over to its successor closes its listeners in the pod while the
//! successor's stay open on the same ports (SO_REUSEPORT). The kernel spreads new connections
//! over both queues; those still queued at the closing listener must reach the successor's,
//! not be reset: that is what `migrate_queued_connections_on_close` turns on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use capture::socket::{
    dial_socket_in, listen_in, migrate_queued_connections_on_close, DialOptions, ListenOptions,
};
use capture::testing::TestNetns;

const CLIENTS: usize = 64;
const PORT: u16 = 15001;

#[test]
fn connections_queued_at_a_closed_listener_are_accepted_by_its_successor() {
    let pod = TestNetns::new("mig");
    migrate_queued_connections_on_close(pod.netns()).unwrap();
    let accepted = hand_over_with_clients_queued(&pod);
    assert_eq!(
        accepted, CLIENTS,
        "every queued connection reaches the successor's listener"
    );
}

/// The reason for the setting: without it the kernel resets what was queued at the old
/// listener (with 64 connections spread by hash, some always are).
#[test]
fn without_migration_the_connections_queued_at_the_closed_listener_are_reset() {
    let pod = TestNetns::new("nomig");
    let accepted = hand_over_with_clients_queued(&pod);
    assert!(
        accepted < CLIENTS,
        "all {accepted} connections survived without tcp_migrate_req: the test proves nothing"
    );
}

/// Two listeners on one port, `CLIENTS` connections queued at them and none accepted; the first
/// listener closes; returns how many connections the second one then serves end to end.
fn hand_over_with_clients_queued(pod: &TestNetns) -> usize {
    let address = SocketAddr::from(([127, 0, 0, 1], PORT));
    let options = ListenOptions::new(address).reuse_port(true).mark(None);
    let old = listen_in(pod.netns(), &options).unwrap();
    let new = listen_in(pod.netns(), &options).unwrap();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let options = DialOptions {
                mark: None,
                ..DialOptions::default()
            };
            dial_socket_in(pod.netns(), address, &options)
                .unwrap()
                .connect_timeout(address, Duration::from_secs(2))
                .unwrap()
        })
        .collect();
    drop(old);
    for (index, client) in clients.iter_mut().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // Written now, read back by the successor below; a reset connection fails here or there.
        let _ = client.write_all(&[index as u8]);
    }
    for server in accept_all(&new) {
        echo_one_byte(&server);
    }
    clients
        .iter_mut()
        .enumerate()
        .filter_map(|(index, client)| {
            let mut byte = [0u8; 1];
            (client.read_exact(&mut byte).is_ok() && byte[0] == index as u8).then_some(())
        })
        .count()
}

/// Accepts until the queue has been empty for a moment.
fn accept_all(listener: &TcpListener) -> Vec<TcpStream> {
    let mut accepted = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted.push(stream);
                quiet_since = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    accepted
}

/// Reads the client's byte and sends it back (a reset connection just fails).
fn echo_one_byte(mut server: &TcpStream) {
    server.set_nonblocking(false).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut byte = [0u8; 1];
    if server.read_exact(&mut byte).is_ok() {
        let _ = server.write_all(&byte);
    }
}
