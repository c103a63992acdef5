//! Large socket reads under TLS.
//!
//! rustls asks its transport for at most about one TLS record (≤ 16.7 KiB) per read, so a bulk
//! tunnel would cost one `recv` per record, and each drained receive queue can make the kernel
//! send another ACK. [`ReadAhead`] reads up to [`READ_AHEAD`] bytes at once and hands them out
//! in the small pieces rustls asks for: one extra copy of the ciphertext (cheap, cache-hot)
//! against a few times fewer system calls. The buffer is given back whenever the socket has
//! nothing more to read, so an idle HBONE connection holds none. Writes go straight through.
//! (`tokio::io::BufReader` would do the reading, but keeps its buffer for the connection's
//! life: 64 KiB on each of hundreds of mostly idle pooled connections.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Bytes read from the socket at once.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed out.
    buf: BytesMut,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
        }
    }

    /// Moves what fits of the read-ahead into `out`.
    fn hand_out(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() {
            this.hand_out(out);
            return Poll::Ready(Ok(()));
        }
        if out.remaining() >= READ_AHEAD {
            // A reader this large gains nothing from the detour.
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        // Empty: reuses the allocation (everything in it was handed out).
        this.buf.reserve(READ_AHEAD);
        match poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
            Poll::Ready(Ok(_)) => {
                // 0 bytes is end of input: `out` stays unfilled, which says so.
                this.hand_out(out);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Drained: a quiet connection holds no buffer.
                this.buf = BytesMut::new();
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_socket_read_in_order() {
        let (mut peer, ours) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut reader = ReadAhead::new(ours);
        let mut got = Vec::new();
        let mut piece = [0u8; 5000];
        loop {
            let n = reader.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
            assert!(
                reader.buf.len() < READ_AHEAD,
                "never more than one read ahead"
            );
        }
        assert_eq!(got, data);
    }

    #[test]
    fn a_drained_socket_leaves_no_buffer_behind() {
        let (_peer, ours) = tokio::io::duplex(1024);
        let mut reader = ReadAhead::new(ours);
        let mut piece = [0u8; 100];
        let mut out = ReadBuf::new(&mut piece);
        let poll = Pin::new(&mut reader)
            .poll_read(&mut Context::from_waker(std::task::Waker::noop()), &mut out);
        assert!(poll.is_pending());
        assert_eq!(reader.buf.capacity(), 0);
    }
}
