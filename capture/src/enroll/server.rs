//! Server side of enrollment, for ztunnel (tokio).
//!
//! `tokio::net::UnixListener` only does SOCK_STREAM, so the SEQPACKET
//! sockets are driven through `AsyncFd`: readiness from tokio, the syscalls
//! (accept, recvmsg/sendmsg with SCM_RIGHTS) done directly.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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

/// A listening enrollment socket.
#[derive(Debug)]
pub struct EnrollListener {
    socket: AsyncFd<Socket>,
    path: PathBuf,
}

impl EnrollListener {
    /// Binds `path` (mode 0600: only root may enroll pods). A socket file
    /// left by a previous ztunnel is replaced; one that still accepts
    /// connections is an error, so two ztunnels never fight over pods.
    /// Must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket; remove it", path.display()),
                ));
            }
            let probe = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
            if probe.connect(&SockAddr::unix(&path)?).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by another process (a second ztunnel?)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(&path).map_err(with_path)?;
        }
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        socket.bind(&SockAddr::unix(&path)?).map_err(with_path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(with_path)?;
        socket.listen(128)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket: register_async(socket)?,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

/// Serves enrollment forever: every connection on its own task, each request
/// answered with `handler`'s reply, in order. Accept errors (e.g. out of
/// fds) are logged and retried after a short pause rather than ending the
/// server, since without it no pod on the node can start.
pub async fn serve<H, F>(listener: EnrollListener, handler: H)
where
    H: Fn(EnrollRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send,
{
    loop {
        let conn = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::error!(%error, path = %listener.path.display(), "enrollment accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
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
}
