//! One HBONE tunnel as a byte stream: an HTTP/2 CONNECT stream behind `AsyncRead + AsyncWrite`.
//!
//! Flow control is what keeps memory bounded. Reading releases receive window only for bytes
//! the caller actually consumed, so a slow reader stops the sender after one stream window.
//! Writing waits for send capacity (the peer's window, capped by the local send buffer) and
//! never queues more than it was granted. `poll_shutdown` sends END_STREAM, which is a TCP
//! half-close: the other direction keeps flowing. A reset from the peer surfaces as an
//! `io::Error`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::copy::{CopyRead, CopyWrite, Unsent};

/// Held by a stream for as long as it occupies a slot of a pooled connection; dropping it
/// frees the slot.
pub(crate) trait StreamSlot: Send + Sync {}

/// A tunnel stream. Dropping it before both directions ended resets the HTTP/2 stream
/// (RST_STREAM CANCEL), which the peer sees as an aborted connection.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received bytes not yet handed to the reader; their window is not released yet.
    pending: Bytes,
    read_eof: bool,
    write_closed: bool,
    _slot: Option<Box<dyn StreamSlot>>,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.stream_id())
            .field("read_eof", &self.read_eof)
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    /// Wraps the two halves of an established CONNECT stream (after the 200).
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            read_eof: false,
            write_closed: false,
            _slot: None,
        }
    }

    pub(crate) fn with_slot(mut self, slot: Box<dyn StreamSlot>) -> Self {
        self._slot = Some(slot);
        self
    }

    /// The HTTP/2 stream id, for logs.
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }

    /// Aborts the stream with RST_STREAM and the given reason (e.g. after the other side of a
    /// copy failed, so the peer does not mistake the end for a clean close).
    pub fn reset(&mut self, reason: Reason) {
        self.send.send_reset(reason);
    }

    fn write_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.send.poll_reset(cx) {
            Poll::Ready(Ok(reason)) => Poll::Ready(reset_error(reason)),
            Poll::Ready(Err(e)) => Poll::Ready(h2_to_io(e)),
            // Not reset, yet no longer sendable: we closed it ourselves.
            Poll::Pending => Poll::Ready(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the tunnel's send side was closed",
            )),
        }
    }

    /// The next DATA frame's payload (possibly empty), `None` once the peer finished sending.
    /// Its window is still held: the caller releases it as the bytes are consumed.
    fn poll_next_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if self.read_eof {
            return Poll::Ready(Ok(None));
        }
        match ready!(self.recv.poll_data(cx)) {
            Some(Ok(data)) => Poll::Ready(Ok(Some(data))),
            // END_STREAM: the peer half-closed.
            None => {
                self.read_eof = true;
                Poll::Ready(Ok(None))
            }
            Some(Err(e)) => match e.reason() {
                // A reset with NO_ERROR after the peer finished sending is a clean end.
                Some(Reason::NO_ERROR) if e.is_reset() => {
                    self.read_eof = true;
                    Poll::Ready(Ok(None))
                }
                _ => Poll::Ready(Err(h2_to_io(e))),
            },
        }
    }

    /// Sends up to `len` bytes, as many as h2 grants send capacity for (the peer's window,
    /// capped by our send buffer), waiting for at least one; `take(n)` gives the first `n`.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        take: impl FnOnce(usize) -> Bytes,
    ) -> Poll<io::Result<usize>> {
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(ready!(self.write_error(cx))));
        }
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                let n = capacity.min(len);
                return match self.send.send_data(take(n), false) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(_) => Poll::Ready(Err(ready!(self.write_error(cx)))),
                };
            }
            // Ask for room for this write; h2 grants it as the peer's window and our send
            // buffer allow, and wakes us then.
            self.send.reserve_capacity(len);
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Poll::Ready(Err(ready!(self.write_error(cx)))),
            }
        }
    }
}

/// In a copy the tunnel moves no bytes itself: a received DATA frame is written on as it is,
/// and what the other end read is handed to h2 by value (its connection task encrypts from it).
impl CopyRead for H2Stream {
    const HOLDS_CHUNKS: bool = true;

    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            // Left over from `poll_read`: its window is still held, like a chunk's.
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        self.poll_next_data(cx)
    }

    fn consumed(&mut self, n: usize) -> io::Result<()> {
        self.recv
            .flow_control()
            .release_capacity(n)
            .map_err(h2_to_io)
    }
}

impl CopyWrite for H2Stream {
    fn poll_write_unsent<B: Unsent>(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut B,
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, data.remaining(), |n| data.take_front(n))
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                // Give the window back only for what the reader consumed: back-pressure.
                this.consumed(n)?;
                return Poll::Ready(Ok(()));
            }
            if this.read_eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.poll_next_data(cx))? {
                Some(data) => this.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, buf.len(), |n| Bytes::copy_from_slice(&buf[..n]))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Data handed to h2 is written by the connection task; nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        match this.send.send_data(Bytes::new(), true) {
            Ok(()) => {
                this.write_closed = true;
                Poll::Ready(Ok(()))
            }
            Err(_) => match ready!(this.send.poll_reset(cx)) {
                Ok(Reason::NO_ERROR) => {
                    this.write_closed = true;
                    Poll::Ready(Ok(()))
                }
                Ok(reason) => Poll::Ready(Err(reset_error(reason))),
                Err(e) => Poll::Ready(Err(h2_to_io(e))),
            },
        }
    }
}

fn reset_error(reason: Reason) -> io::Error {
    let kind = match reason {
        Reason::CANCEL | Reason::NO_ERROR | Reason::STREAM_CLOSED => io::ErrorKind::ConnectionReset,
        Reason::REFUSED_STREAM => io::ErrorKind::ConnectionRefused,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("tunnel stream reset by peer ({reason})"))
}

/// Maps an h2 error to an `io::Error`, keeping transport errors as they were and giving resets
/// a kind a copy loop can act on.
pub(crate) fn h2_to_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return match error.into_io() {
            Some(io) => io,
            None => io::Error::other("HTTP/2 transport error"),
        };
    }
    let kind = match error.reason() {
        Some(Reason::CANCEL) | Some(Reason::STREAM_CLOSED) => io::ErrorKind::ConnectionReset,
        Some(Reason::REFUSED_STREAM) => io::ErrorKind::ConnectionRefused,
        _ if error.is_go_away() => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}
