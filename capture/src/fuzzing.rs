//! Entry points for the cargo-fuzz targets in `fuzz/` (not a stable API).
//!
//! The enrollment decoder is reached two ways: directly, with fds the caller made, and through
//! a real SOCK_SEQPACKET pair, so that SCM_RIGHTS delivery (up to the kernel's 253 fds per
//! message) and the adoption of the received fds run exactly as on ztunnel's socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Socket, Type};

use crate::enroll::proto::MAX_MESSAGE_BYTES;
use crate::enroll::EnrollRequest;

/// Decodes one datagram as ztunnel does, taking ownership of `fds`.
pub fn decode_request(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<EnrollRequest, String> {
    crate::enroll::proto::decode_request(bytes, fds)
}

/// Sends `bytes` with `fds` attached over a fresh SEQPACKET pair and decodes what arrives as
/// ztunnel's connection does. `Ok(None)`: the datagram reads as the peer closing (empty, no fds).
pub fn send_and_decode(
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<Option<Result<EnrollRequest, String>>> {
    let (client, server) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
    crate::enroll::wire::send_datagram(client.as_fd(), bytes, fds)?;
    drop(client);
    let datagram = crate::enroll::wire::recv_datagram(server.as_fd(), MAX_MESSAGE_BYTES)?;
    Ok(datagram.map(crate::enroll::server::decode_datagram))
}
