//! Blocking enrollment client, for the short-lived CNI plugin process.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use socket2::{Domain, SockAddr, Socket, Type};

use super::proto::{self, request, AckStatus};
use super::wire;
use super::{AddOutcome, EnrollError, PodRef};
use crate::netns::NetNs;

/// A connection to ztunnel's enrollment socket. One request at a time.
#[derive(Debug)]
pub struct EnrollClient {
    socket: Socket,
    path: PathBuf,
    timeout: Duration,
}

impl EnrollClient {
    /// Connects to `path`, waiting at most `timeout` to connect and, later,
    /// for each answer.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, EnrollError> {
        let path = path.as_ref().to_owned();
        let connect_err = |source| EnrollError::Connect {
            path: path.clone(),
            source,
        };
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None).map_err(connect_err)?;
        socket
            .set_read_timeout(Some(timeout))
            .map_err(connect_err)?;
        // A unix connect() to a full backlog waits up to SO_SNDTIMEO.
        socket
            .set_write_timeout(Some(timeout))
            .map_err(connect_err)?;
        let addr = SockAddr::unix(&path).map_err(connect_err)?;
        socket.connect(&addr).map_err(connect_err)?;
        Ok(Self {
            socket,
            path,
            timeout,
        })
    }

    /// Wraps an already connected SEQPACKET socket (tests, socketpairs).
    pub(crate) fn from_socket(socket: Socket, timeout: Duration) -> io::Result<Self> {
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        Ok(Self {
            socket,
            path: PathBuf::from("(socketpair)"),
            timeout,
        })
    }

    /// Asks ztunnel to enroll `pod`, handing it `netns`. Returns whether the
    /// pod is ambient; a refusal is [`EnrollError::Refused`] with ztunnel's
    /// reason.
    pub fn add_pod(&self, pod: &PodRef, netns: &NetNs) -> Result<AddOutcome, EnrollError> {
        let bytes = proto::encode_request(request::Kind::AddPod(proto::AddPod {
            uid: pod.uid.clone(),
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
        }));
        let ack = self.exchange(&bytes, &[netns.as_fd()], "enrolling a pod")?;
        match AckStatus::try_from(ack.status) {
            Ok(AckStatus::Enrolled) => Ok(AddOutcome::Enrolled {
                capture_dns: ack.capture_dns,
            }),
            Ok(AckStatus::NotAmbient) => Ok(AddOutcome::NotAmbient),
            _ => Err(EnrollError::BadReply {
                reason: format!("AddPod answered ok with status {}", ack.status),
            }),
        }
    }

    /// Tells ztunnel the pod with `uid` is gone.
    pub fn delete_pod(&self, uid: &str) -> Result<(), EnrollError> {
        let bytes = proto::encode_request(request::Kind::DeletePod(proto::DeletePod {
            uid: uid.to_owned(),
        }));
        self.exchange(&bytes, &[], "removing a pod").map(drop)
    }

    /// Tells ztunnel every known pod has been sent since connecting.
    pub fn snapshot_done(&self) -> Result<(), EnrollError> {
        let bytes = proto::encode_request(request::Kind::SnapshotDone(proto::SnapshotDone {}));
        self.exchange(&bytes, &[], "ending the snapshot").map(drop)
    }

    /// Sends one request and reads its Ack; `Err` unless the Ack is ok.
    fn exchange(
        &self,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
        op: &'static str,
    ) -> Result<proto::Ack, EnrollError> {
        wire::send_datagram(self.socket.as_fd(), bytes, fds).map_err(|e| self.io_err(op, e))?;
        let datagram = wire::recv_datagram(self.socket.as_fd(), proto::MAX_MESSAGE_BYTES)
            .map_err(|e| self.io_err(op, e))?
            .ok_or_else(|| EnrollError::Closed {
                path: self.path.clone(),
            })?;
        // Any fds the server attached are closed with `datagram`.
        if datagram.truncated {
            return Err(EnrollError::BadReply {
                reason: format!("answer longer than {} bytes", proto::MAX_MESSAGE_BYTES),
            });
        }
        let ack =
            proto::Ack::decode(datagram.bytes.as_slice()).map_err(|e| EnrollError::BadReply {
                reason: format!("cannot decode the Ack: {e}"),
            })?;
        if ack.version != proto::PROTOCOL_VERSION {
            return Err(EnrollError::BadReply {
                reason: format!(
                    "protocol version {} (expected {})",
                    ack.version,
                    proto::PROTOCOL_VERSION
                ),
            });
        }
        if !ack.ok {
            let message = if ack.error.is_empty() {
                "no reason given".to_owned()
            } else {
                ack.error
            };
            return Err(EnrollError::Refused { message });
        }
        Ok(ack)
    }

    fn io_err(&self, op: &'static str, source: io::Error) -> EnrollError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => EnrollError::Timeout {
                path: self.path.clone(),
                op,
                after: self.timeout,
            },
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => EnrollError::Closed {
                path: self.path.clone(),
            },
            _ => EnrollError::Io {
                path: self.path.clone(),
                op,
                source,
            },
        }
    }
}
