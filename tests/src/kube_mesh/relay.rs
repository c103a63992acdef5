//! A TCP relay from an address inside a cluster-in-a-box namespace to an address of the test
//! process's own namespace (the test API server on 127.0.0.1).
//!
//! The cluster has no link to the root namespace and no NAT by design, so a process on the
//! fabric or a node cannot reach the host's loopback. Instead of routing, the test process
//! opens a listener *inside* the fabric namespace (a socket keeps the namespace it was created
//! in) and copies bytes between each accepted connection and a fresh connection it makes from
//! its own namespace. TLS passes through untouched: clients still verify the API server's
//! certificate end to end.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::netns::Netns;

const ACCEPT_POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections being relayed, by id: both ends, so that stopping can shut them down.
type Open = Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>;

/// A running relay. Dropping it stops accepting, shuts every relayed connection down and joins
/// every thread it started (also while a test panics).
pub struct TcpRelay {
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Open,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens on `listen` inside `netns` and relays every connection to `target`, which is
    /// dialled from the test process's own namespace.
    pub fn start(netns: &Netns, listen: SocketAddr, target: SocketAddr) -> Result<TcpRelay> {
        let namespace = capture::NetNs::open(netns.path()).map_err(|e| {
            HarnessError::Invalid(format!(
                "relay: cannot open network namespace {}: {e}",
                netns.path().display()
            ))
        })?;
        // No SO_MARK: this is not ztunnel traffic, no capture rule should treat it specially.
        let options = capture::socket::ListenOptions::new(listen).mark(None);
        let listener = capture::socket::listen_in(&namespace, &options).map_err(|e| {
            HarnessError::Invalid(format!(
                "relay: cannot listen on {listen} in {}: {e}",
                netns.name()
            ))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let open: Open = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let acceptor = {
            let (stop, open, threads) = (stop.clone(), open.clone(), threads.clone());
            std::thread::Builder::new()
                .name(format!("relay-{listen}"))
                .spawn(move || accept_loop(&listener, target, &stop, &open, &threads))
                .map_err(|e| HarnessError::Spawn {
                    command: format!("relay thread for {listen}"),
                    source: e,
                })?
        };
        Ok(TcpRelay {
            listen,
            stop,
            open,
            threads,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients inside the namespace connect.
    pub fn address(&self) -> SocketAddr {
        self.listen
    }

    /// Connections currently relayed.
    pub fn open_connections(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Shutting a socket down wakes the copier blocked reading it.
        for ends in lock(&self.open).values() {
            for end in ends {
                let _ = end.shutdown(Shutdown::Both);
            }
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    stop: &AtomicBool,
    open: &Open,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    // The listener is non-blocking (listen_in makes it so): polling lets Drop stop this loop
    // without having to connect to it from inside the namespace.
    while !stop.load(Ordering::SeqCst) {
        let inbound = match listener.accept() {
            Ok((inbound, _)) => inbound,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(error) => {
                eprintln!("ambit-tests: relay to {target}: accept failed: {error}");
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        // A refused upstream (API server restarting) closes the client's connection, which is
        // what the client would see talking to the server directly.
        let Ok(outbound) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            continue;
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = relay(id, inbound, outbound, open, threads) {
            eprintln!("ambit-tests: relay to {target}: {error}");
        }
        lock(threads).retain(|thread| !thread.is_finished());
    }
}

/// Two copier threads, one per direction; the second to finish forgets the connection.
fn relay(
    id: u64,
    inbound: TcpStream,
    outbound: TcpStream,
    open: &Open,
    threads: &Mutex<Vec<JoinHandle<()>>>,
) -> std::io::Result<()> {
    inbound.set_nonblocking(false)?;
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    lock(open).insert(id, [inbound.try_clone()?, outbound.try_clone()?]);
    let finished = Arc::new(AtomicU64::new(0));
    for (from, to) in [
        (inbound.try_clone()?, outbound.try_clone()?),
        (outbound, inbound),
    ] {
        let (open, finished) = (open.clone(), finished.clone());
        let thread = std::thread::Builder::new()
            .name(format!("relay-copy-{id}"))
            .spawn(move || {
                copy_then_half_close(from, to);
                if finished.fetch_add(1, Ordering::SeqCst) == 1 {
                    lock(&open).remove(&id);
                }
            })?;
        lock(threads).push(thread);
    }
    Ok(())
}

/// Copies until EOF or an error, then passes the end on: a half-close stays a half-close.
fn copy_then_half_close(mut from: TcpStream, mut to: TcpStream) {
    match std::io::copy(&mut from, &mut to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        }
    }
}
