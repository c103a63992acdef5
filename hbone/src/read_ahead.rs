//! Large socket reads under TLS, for bulk transfers only.
//!
//! rustls asks its transport for at most 4 KiB per read (its deframer grows by that much), so a
//! bulk tunnel would cost four `recv`s per 16 KiB record, and each drained receive queue can
//! make the kernel send another ACK. [`ReadAhead`] reads up to [`READ_AHEAD`] bytes at once and
//! hands them out in the small pieces rustls asks for: one extra copy of the ciphertext (cheap,
//! cache-hot) against many times fewer system calls.
//!
//! Only while the connection is moving bulk data, though. A read that fills what rustls asked
//! for says more is probably waiting, and only then does the next read go through the large
//! buffer; a read that drains the socket (a short read, or nothing to read) goes back to reading
//! straight into rustls's buffer, and the large one is given back. Chatty connections (a few
//! hundred bytes per message, the common case on a pooled HBONE connection carrying many quiet
//! tunnels) therefore never allocate it, and an idle connection holds none. Writes go straight
//! through. (`tokio::io::BufReader` would do the reading, but keeps its buffer for the
//! connection's life: 64 KiB on each of hundreds of mostly idle pooled connections.)

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Bytes read from the socket at once while the connection moves bulk data.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed out.
    buf: BytesMut,
    /// The last read filled its buffer: the socket likely has more, read ahead.
    bulk: bool,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: BytesMut::new(),
            bulk: false,
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
        if !this.bulk || out.remaining() >= READ_AHEAD {
            // Straight into the caller's buffer; a caller this large gains nothing from the
            // detour either.
            let wanted = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            let read = out.filled().len() - before;
            this.bulk = wanted > 0 && read == wanted;
            return Poll::Ready(Ok(()));
        }
        // Empty: reuses the allocation (everything in it was handed out).
        this.buf.reserve(READ_AHEAD);
        match poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
            Poll::Ready(Ok(read)) => {
                // More than the caller asked for: reading ahead saved system calls, go on.
                // Less: the socket is drained, and the next read goes straight through.
                this.bulk = read > out.remaining();
                // 0 bytes is end of input: `out` stays unfilled, which says so.
                this.hand_out(out);
                if !this.bulk && this.buf.is_empty() {
                    this.buf = BytesMut::new();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Drained: a quiet connection holds no buffer.
                this.buf = BytesMut::new();
                this.bulk = false;
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
        let mut served_from_read_ahead = 0;
        loop {
            let n = reader.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
            if !reader.buf.is_empty() {
                served_from_read_ahead += 1;
            }
            assert!(
                reader.buf.len() < READ_AHEAD,
                "never more than one read ahead"
            );
        }
        assert_eq!(got, data);
        assert!(
            served_from_read_ahead > 20,
            "a bulk stream is read ahead after its first full read, \
             {served_from_read_ahead} of 40 reads were"
        );
    }

    #[tokio::test]
    async fn a_chatty_connection_never_allocates_the_read_ahead() {
        let (mut peer, ours) = tokio::io::duplex(64 * 1024);
        let mut reader = ReadAhead::new(ours);
        let mut piece = [0u8; 4096];
        for message in 0..50u8 {
            peer.write_all(&[message; 300]).await.unwrap();
            let n = reader.read(&mut piece).await.unwrap();
            assert_eq!(&piece[..n], &[message; 300][..]);
            assert_eq!(reader.buf.capacity(), 0, "message {message} was read ahead");
        }
    }

    #[tokio::test]
    async fn a_bulk_burst_then_a_pause_gives_the_buffer_back() {
        let (mut peer, ours) = tokio::io::duplex(256 * 1024);
        let mut reader = ReadAhead::new(ours);
        peer.write_all(&[7u8; 100_000]).await.unwrap();
        let mut piece = [0u8; 4096];
        let mut got = 0;
        while got < 100_000 {
            got += reader.read(&mut piece).await.unwrap();
        }
        assert_eq!(got, 100_000);
        // The reader reads on until the socket has nothing (h2 does).
        let mut out = ReadBuf::new(&mut piece);
        let poll = Pin::new(&mut reader)
            .poll_read(&mut Context::from_waker(std::task::Waker::noop()), &mut out);
        assert!(poll.is_pending());
        assert_eq!(reader.buf.capacity(), 0, "a drained socket keeps no buffer");
        peer.write_all(&[8u8; 300]).await.unwrap();
        let n = reader.read(&mut piece).await.unwrap();
        assert_eq!(&piece[..n], &[8u8; 300][..]);
        assert_eq!(
            reader.buf.capacity(),
            0,
            "after the pause, reads go straight through"
        );
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
