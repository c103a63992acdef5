//! Server side of enrollment, for ztunnel (tokio).
//!
//! `tokio::net::UnixListener` only does SOCK_STREAM, so the SEQPACKET
//! sockets are driven through `AsyncFd`: readiness from tokio, the syscalls
//! (accept, recvmsg/sendmsg with SCM_RIGHTS) done directly.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::client::EnrollClient;
use super::proto::{self, decode_request, Ack};
use super::wire;
use super::{EnrollRequest, Reply};
use crate::netns::register_async;

/// How often a serving listener checks whether a successor renamed its socket over the path.
const SUPERSEDED_POLL: Duration = Duration::from_millis(200);

/// A listening enrollment socket.
#[derive(Debug)]
pub struct EnrollListener {
    socket: AsyncFd<Socket>,
    path: PathBuf,
    /// The socket file's inode: the path names this listener while it has this inode.
    inode: u64,
}

impl EnrollListener {
    /// Binds `path` (mode 0600: only root may enroll pods). A socket file
    /// left by a previous ztunnel is replaced; one that still accepts
    /// connections is an error ([`io::ErrorKind::AddrInUse`]): a successor
    /// takes over a live one with [`EnrollListener::bind_successor`] instead.
    /// Must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        if remove_stale(&path)? == Found::Live {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by another process (a second ztunnel?)",
                    path.display()
                ),
            ));
        }
        let (socket, inode) = bind_socket(&path)?;
        Ok(Self {
            socket: register_async(socket)?,
            path,
            inode,
        })
    }

    /// Binds the socket a successor serves once it takes over `path` from the running
    /// listener: at [`successor_path`] (a live one there is an error: another successor is
    /// taking over already). Until [`PendingEnrollListener::take_over`], the CNI plugin still
    /// reaches the running process, and that process can tell that a successor is on its way
    /// ([`successor_pending`]).
    pub fn bind_successor(path: impl AsRef<Path>) -> io::Result<PendingEnrollListener> {
        let path = path.as_ref().to_owned();
        let pending = successor_path(&path);
        if remove_stale(&pending)? == Found::Live {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by another process: a second successor is already taking over {}",
                    pending.display(),
                    path.display()
                ),
            ));
        }
        let (socket, inode) = bind_socket(&pending)?;
        Ok(PendingEnrollListener {
            socket,
            pending,
            path,
            inode,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether another socket has been put at this listener's path (a successor took over).
    /// A path that is gone is not a successor: nobody else serves the node then.
    pub fn is_superseded(&self) -> bool {
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.file_type().is_socket() && meta.ino() != self.inode)
    }

    /// Resolves once [`is_superseded`](Self::is_superseded) holds (checked a few times a second).
    pub async fn superseded(&self) {
        while !self.is_superseded() {
            tokio::time::sleep(SUPERSEDED_POLL).await;
        }
    }

    /// A connection already queued, without waiting; `None` when the queue is empty.
    fn accept_queued(&self) -> io::Result<Option<EnrollConnection>> {
        match self.socket.get_ref().accept() {
            Ok((conn, _)) => EnrollConnection::new(conn).map(Some),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> io::Result<EnrollConnection> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| socket.get_ref().accept()) {
                Ok(Ok((conn, _))) => return EnrollConnection::new(conn),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// An enrollment socket bound beside the served path, waiting to take it over.
#[derive(Debug)]
pub struct PendingEnrollListener {
    socket: Socket,
    pending: PathBuf,
    path: PathBuf,
    inode: u64,
}

impl PendingEnrollListener {
    /// Renames the pending socket over the served path, atomically: every CNI call from now on
    /// reaches this listener; calls already queued at the old one are still answered by the old
    /// process, which sees its path taken ([`EnrollListener::superseded`]).
    pub fn take_over(self) -> io::Result<EnrollListener> {
        std::fs::rename(&self.pending, &self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot rename {} over {}: {e}",
                    self.pending.display(),
                    self.path.display()
                ),
            )
        })?;
        Ok(EnrollListener {
            socket: register_async(self.socket)?,
            path: self.path,
            inode: self.inode,
        })
    }
}

/// Where a successor binds before it takes over `path`: `<path>.next`.
pub fn successor_path(path: &Path) -> PathBuf {
    let mut pending = path.as_os_str().to_owned();
    pending.push(".next");
    PathBuf::from(pending)
}

/// Whether a successor is bound beside `path`, about to take it over (its socket accepts).
pub fn successor_pending(path: &Path) -> bool {
    accepts_connections(&successor_path(path))
}

fn accepts_connections(path: &Path) -> bool {
    let Ok(address) = SockAddr::unix(path) else {
        return false;
    };
    Socket::new(Domain::UNIX, Type::SEQPACKET, None)
        .and_then(|probe| probe.connect(&address))
        .is_ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing at the path (any more): a stale socket file was removed.
    Free,
    /// A process accepts connections there.
    Live,
}

/// Removes a socket file nobody serves (left by a process that died); refuses to touch
/// anything that is not a socket.
fn remove_stale(path: &Path) -> io::Result<Found> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(Found::Free);
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; remove it", path.display()),
        ));
    }
    if accepts_connections(path) {
        return Ok(Found::Live);
    }
    std::fs::remove_file(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(Found::Free)
}

/// A listening SEQPACKET socket at `path` (mode 0600), non-blocking, and the file's inode.
fn bind_socket(path: &Path) -> io::Result<(Socket, u64)> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
    socket.bind(&SockAddr::unix(path)?).map_err(with_path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(with_path)?;
    let inode = std::fs::symlink_metadata(path).map_err(with_path)?.ino();
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok((socket, inode))
}

/// One client connection (one CNI invocation, usually).
#[derive(Debug)]
pub struct EnrollConnection {
    socket: AsyncFd<Socket>,
}

impl EnrollConnection {
    pub(crate) fn new(socket: Socket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket: register_async(socket)?,
        })
    }

    /// The next well-formed request; `Ok(None)` when the client hung up.
    ///
    /// A malformed datagram never reaches the caller: it is answered here
    /// with an error Ack naming the problem (and its fds are closed), and
    /// the next datagram is read. Answer every returned request with
    /// [`reply`](Self::reply) before asking for the next.
    pub async fn next_request(&self) -> io::Result<Option<EnrollRequest>> {
        loop {
            let datagram = {
                let mut guard = self.socket.readable().await?;
                match guard
                    .try_io(|s| wire::recv_datagram(s.get_ref().as_fd(), proto::MAX_MESSAGE_BYTES))
                {
                    Ok(result) => result?,
                    Err(_would_block) => continue,
                }
            };
            let Some(datagram) = datagram else {
                return Ok(None);
            };
            match decode_datagram(datagram) {
                Ok(request) => return Ok(Some(request)),
                Err(problem) => {
                    tracing::warn!(%problem, "malformed enrollment request");
                    self.reply(&Reply::Error(problem)).await?;
                }
            }
        }
    }

    /// Sends the Ack for the last request.
    pub async fn reply(&self, reply: &Reply) -> io::Result<()> {
        let bytes = Ack::from_reply(reply).encode_to_vec();
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|s| wire::send_datagram(s.get_ref().as_fd(), &bytes, &[])) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// A received datagram as a request, or what is wrong with it. Every fd it carried is either in
/// the request or closed when this returns.
pub(crate) fn decode_datagram(datagram: wire::Datagram) -> Result<EnrollRequest, String> {
    if datagram.truncated {
        Err(format!(
            "enrollment request longer than {} bytes",
            proto::MAX_MESSAGE_BYTES
        ))
    } else {
        decode_request(&datagram.bytes, datagram.fds)
    }
}

/// A connected client/server pair without a socket file (tests, in-process
/// use). Must be called inside a tokio runtime.
pub fn connected_pair(timeout: Duration) -> io::Result<(EnrollClient, EnrollConnection)> {
    let (client, server) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
    Ok((
        EnrollClient::from_socket(client, timeout)?,
        EnrollConnection::new(server)?,
    ))
}

/// Serves enrollment until a successor takes the socket's path over: every connection on its
/// own task, each request answered with `handler`'s reply, in order. Accept errors (e.g. out of
/// fds) are logged and retried after a short pause rather than ending the server, since
/// without it no pod on the node can start. Once superseded, the connections already queued are
/// still served (their CNI calls were made to this process), then it returns.
pub async fn serve<H, F>(listener: EnrollListener, handler: H)
where
    H: Fn(EnrollRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let superseded = listener.superseded();
    tokio::pin!(superseded);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut superseded => break,
        };
        match accepted {
            Ok(conn) => spawn_connection(conn, handler.clone()),
            Err(error) => {
                tracing::error!(%error, path = %listener.path.display(), "enrollment accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut queued = 0;
    while let Ok(Some(conn)) = listener.accept_queued() {
        spawn_connection(conn, handler.clone());
        queued += 1;
    }
    tracing::info!(
        path = %listener.path.display(),
        queued,
        "a successor took over the enrollment socket: no more enrollments here"
    );
}

fn spawn_connection<H, F>(conn: EnrollConnection, handler: H)
where
    H: Fn(EnrollRequest) -> F + Send + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match conn.next_request().await {
                Ok(Some(request)) => {
                    let reply = handler(request).await;
                    if let Err(error) = conn.reply(&reply).await {
                        tracing::warn!(%error, "cannot answer enrollment client");
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "enrollment connection failed");
                    return;
                }
            }
        }
    });
}
