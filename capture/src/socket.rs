//! Sockets created inside a pod's network namespace.
//!
//! ztunnel's in-pod listeners (15001, 15006, 15008, 15053) and the sockets it
//! dials out with must live in the pod's namespace so that traffic keeps the
//! pod's IP (DESIGN §3). They carry `SO_MARK` [`ZTUNNEL_MARK`] so the redirect
//! rules of [`crate::rules`] let them through instead of looping them back.
//!
//! Every socket is returned non-blocking, ready for tokio's `from_std`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::netns::{NetNs, NetNsError, NetNsId};

/// The mark on ztunnel's own sockets; the redirect rules skip it.
pub const ZTUNNEL_MARK: u32 = 0x539;

/// Why a socket could not be created in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("cannot {op} for {addr} in network namespace {netns}: {source}{hint}", hint = hint(source))]
    Io {
        op: &'static str,
        addr: SocketAddr,
        netns: NetNsId,
        source: io::Error,
    },
}

fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(nix::libc::EPERM) | Some(nix::libc::EACCES) => {
            "; SO_MARK and IP_TRANSPARENT need CAP_NET_ADMIN (run as root)"
        }
        Some(nix::libc::EADDRINUSE) => {
            "; another socket holds this address: stop it, or set reuse_port on every listener"
        }
        Some(nix::libc::EADDRNOTAVAIL) => {
            "; the address is not configured in this namespace (transparent binds need IP_TRANSPARENT)"
        }
        _ => "",
    }
}

/// How to create a listener in a namespace.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub addr: SocketAddr,
    /// `SO_MARK`; default [`ZTUNNEL_MARK`].
    pub mark: Option<u32>,
    /// `SO_REUSEPORT`, so a restarted ztunnel can bind before the old one
    /// lets go, or several workers can share a port. Default off.
    pub reuse_port: bool,
    /// `IP_TRANSPARENT`: accept connections for non-local addresses (TPROXY).
    /// Not needed with the REDIRECT rules of this crate. Default off.
    pub transparent: bool,
    /// listen(2) backlog; default 1024.
    pub backlog: i32,
}

impl ListenOptions {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            mark: Some(ZTUNNEL_MARK),
            reuse_port: false,
            transparent: false,
            backlog: 1024,
        }
    }

    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    pub fn transparent(mut self, on: bool) -> Self {
        self.transparent = on;
        self
    }

    pub fn mark(mut self, mark: Option<u32>) -> Self {
        self.mark = mark;
        self
    }
}

/// How to create a socket for dialling out of a namespace.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// `SO_MARK`; default [`ZTUNNEL_MARK`] so the capture rules let it pass.
    pub mark: Option<u32>,
    /// Local address to bind before connecting (port 0 = any port).
    pub bind: Option<SocketAddr>,
    /// `IP_TRANSPARENT`, needed to bind a source address that is not local
    /// (source spoofing). Default off.
    pub transparent: bool,
}

impl Default for DialOptions {
    fn default() -> Self {
        Self {
            mark: Some(ZTUNNEL_MARK),
            bind: None,
            transparent: false,
        }
    }
}

/// Creates a TCP listener inside `netns`: bound, listening, non-blocking.
/// Convert with `tokio::net::TcpListener::from_std`.
pub fn listen_in(netns: &NetNs, opts: &ListenOptions) -> Result<TcpListener, SocketError> {
    let addr = opts.addr;
    let netns_id = netns.id();
    let err = |op: &'static str| {
        move |source: io::Error| SocketError::Io {
            op,
            addr,
            netns: netns_id,
            source,
        }
    };
    netns.run_in(|| {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(err("create a TCP socket"))?;
        // Restarted listeners must not wait out TIME_WAIT of old connections.
        socket
            .set_reuse_address(true)
            .map_err(err("set SO_REUSEADDR"))?;
        if opts.reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(err("set SO_REUSEPORT"))?;
        }
        set_common(&socket, addr, opts.mark, opts.transparent).map_err(|(op, e)| err(op)(e))?;
        socket.bind(&SockAddr::from(addr)).map_err(err("bind"))?;
        socket.listen(opts.backlog).map_err(err("listen"))?;
        socket
            .set_nonblocking(true)
            .map_err(err("set non-blocking"))?;
        Ok(TcpListener::from(socket))
    })?
}

/// Has the kernel move the connections queued at a closing listener (handshakes under way and
/// connections not accepted yet) to another listener of its `SO_REUSEPORT` group, instead of
/// resetting them: `net.ipv4.tcp_migrate_req=1` in `netns` (Linux 5.14+). With it, a ztunnel
/// that hands a pod over to its successor closes its listeners without losing a connection.
pub fn migrate_queued_connections_on_close(netns: &NetNs) -> io::Result<()> {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    netns
        .run_in(|| {
            // /proc/sys/net shows the network namespace of the thread that opens it.
            std::fs::write(SYSCTL, b"1").map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot set {SYSCTL} in network namespace {}: {e} (Linux 5.14 or later has it)", netns.id()),
                )
            })
        })
        .map_err(io::Error::other)?
}

/// Creates a UDP socket bound to `addr` inside `netns` (for the DNS proxy),
/// non-blocking, with `SO_MARK` `mark`.
pub fn udp_bind_in(
    netns: &NetNs,
    addr: SocketAddr,
    mark: Option<u32>,
) -> Result<UdpSocket, SocketError> {
    udp_listen_in(netns, &ListenOptions::new(addr).mark(mark))
}

/// Like [`udp_bind_in`], with [`ListenOptions`]: `reuse_port` lets a restarted
/// ztunnel bind the pod's DNS port while the old process still holds it
/// (`transparent` and `backlog` are ignored).
pub fn udp_listen_in(netns: &NetNs, opts: &ListenOptions) -> Result<UdpSocket, SocketError> {
    let (addr, mark) = (opts.addr, opts.mark);
    let netns_id = netns.id();
    let err = |op: &'static str| {
        move |source: io::Error| SocketError::Io {
            op,
            addr,
            netns: netns_id,
            source,
        }
    };
    netns.run_in(|| {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(err("create a UDP socket"))?;
        if opts.reuse_port {
            socket
                .set_reuse_port(true)
                .map_err(err("set SO_REUSEPORT"))?;
        }
        set_common(&socket, addr, mark, false).map_err(|(op, e)| err(op)(e))?;
        socket.bind(&SockAddr::from(addr)).map_err(err("bind"))?;
        socket
            .set_nonblocking(true)
            .map_err(err("set non-blocking"))?;
        Ok(UdpSocket::from(socket))
    })?
}

/// Creates an unconnected TCP socket inside `netns` for dialling `dst`
/// (the address family is taken from `dst`). Connect it with
/// [`UnconnectedTcp::connect`] (async) or [`UnconnectedTcp::connect_timeout`].
pub fn dial_socket_in(
    netns: &NetNs,
    dst: SocketAddr,
    opts: &DialOptions,
) -> Result<UnconnectedTcp, SocketError> {
    let netns_id = netns.id();
    let err = |op: &'static str| {
        move |source: io::Error| SocketError::Io {
            op,
            addr: dst,
            netns: netns_id,
            source,
        }
    };
    netns.run_here(|| {
        let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))
            .map_err(err("create a TCP socket"))?;
        set_common(&socket, dst, opts.mark, opts.transparent).map_err(|(op, e)| err(op)(e))?;
        if let Some(bind) = opts.bind {
            if opts.transparent {
                // Binding a foreign address with a fixed port collides with
                // other connections otherwise.
                socket
                    .set_reuse_address(true)
                    .map_err(err("set SO_REUSEADDR"))?;
            }
            socket
                .bind(&SockAddr::from(bind))
                .map_err(err("bind the source address"))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(err("set non-blocking"))?;
        Ok(UnconnectedTcp(TcpStream::from(socket)))
    })?
}

fn set_common(
    socket: &Socket,
    addr: SocketAddr,
    mark: Option<u32>,
    transparent: bool,
) -> Result<(), (&'static str, io::Error)> {
    socket
        .set_cloexec(true)
        .map_err(|e| ("set FD_CLOEXEC", e))?;
    if let Some(mark) = mark {
        socket.set_mark(mark).map_err(|e| ("set SO_MARK", e))?;
    }
    if transparent {
        match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true),
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true),
        }
        .map_err(|e| ("set IP_TRANSPARENT", e))?;
    }
    Ok(())
}

/// A TCP socket created in a pod's namespace, not yet connected.
///
/// It wraps a `std::net::TcpStream` because that is what
/// `tokio::net::TcpSocket::from_std_stream` accepts; until connected it is
/// not a stream, hence the wrapper.
#[derive(Debug)]
pub struct UnconnectedTcp(TcpStream);

impl UnconnectedTcp {
    /// Connects asynchronously on the current tokio runtime.
    pub async fn connect(self, dst: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpSocket::from_std_stream(self.0)
            .connect(dst)
            .await
    }

    /// Connects, blocking up to `timeout`; returns a blocking stream.
    pub fn connect_timeout(self, dst: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let socket = SockRef::from(&self.0);
        socket.connect_timeout(&SockAddr::from(dst), timeout)?;
        socket.set_nonblocking(false)?;
        Ok(self.0)
    }

    /// The raw socket (non-blocking, unconnected).
    pub fn into_std(self) -> TcpStream {
        self.0
    }
}

/// The destination a connection had before a REDIRECT rule rewrote it
/// (`SO_ORIGINAL_DST`), for a socket accepted on 15001 or 15006.
pub fn original_dst(stream: &impl AsFd) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let v4 = match socket.local_addr()?.as_socket() {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(v6)) => v6.ip().to_ipv4_mapped().is_some(),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SO_ORIGINAL_DST needs an IP socket",
            ))
        }
    };
    let addr = if v4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned a non-IP address",
        )
    })
}
