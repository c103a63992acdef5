//! One datagram (bytes + file descriptors) in or out of a SOCK_SEQPACKET
//! unix socket. Works on blocking and non-blocking sockets alike: a
//! non-blocking socket reports `WouldBlock` as an `io::Error`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::netns::adopt_scm_rights;

/// A received datagram.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub bytes: Vec<u8>,
    /// Every fd that arrived, owned: dropped (closed) unless taken.
    pub fds: Vec<OwnedFd>,
    /// The datagram was longer than the buffer (rest discarded).
    pub truncated: bool,
}

/// The kernel's limit of fds per SCM_RIGHTS message (SCM_MAX_FD). Room for
/// all of them means control data is never truncated, so no fd the kernel
/// installs for us can go unseen (and leak).
const SCM_MAX_FD: usize = 253;

/// Receives one datagram of at most `max` bytes. `Ok(None)` means the peer
/// closed the connection (a zero-length read without fds).
pub(crate) fn recv_datagram(fd: BorrowedFd<'_>, max: usize) -> io::Result<Option<Datagram>> {
    let mut buf = vec![0u8; max];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let (bytes, truncated, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        // Control data is never truncated with a buffer for SCM_MAX_FD fds;
        // should it be anyway, nix refuses to parse it (ENOBUFS).
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                fds.extend(adopt_scm_rights(raw));
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), fds)
    };
    if bytes == 0 && fds.is_empty() && !truncated {
        return Ok(None);
    }
    buf.truncate(bytes);
    Ok(Some(Datagram {
        bytes: buf,
        fds,
        truncated,
    }))
}

/// Sends one datagram with `fds` attached (SCM_RIGHTS). Never raises
/// SIGPIPE: a closed peer is an `EPIPE` error.
pub(crate) fn send_datagram(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    let sent = sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes of a datagram", bytes.len()),
        ));
    }
    Ok(())
}
