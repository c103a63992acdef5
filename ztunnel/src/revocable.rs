//! A stream that fails its next read or write once a cancellation token fires. Wrapping a
//! proxied connection's upstream in it lets a policy change end that connection wherever the
//! copy loop happens to be waiting.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct Revocable<S> {
    inner: S,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Revocable<S> {
    pub fn new(inner: S, token: CancellationToken) -> Self {
        Revocable {
            inner,
            revoked: Box::pin(token.cancelled_owned()),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.revoked.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection revoked by policy",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

/// In a copy it reads into and writes from the copy's buffer, so every read and write passes
/// the revocation check.
impl<S: AsyncRead + Unpin> hbone::CopyRead for Revocable<S> {}
impl<S: AsyncWrite + Unpin> hbone::CopyWrite for Revocable<S> {}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_pending_read_fails_when_the_token_fires() {
        let (a, mut b) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut revocable = Revocable::new(a, token.clone());
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        revocable.read_exact(&mut buf).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            revocable.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        token.cancel();
        let error = reader.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }
}
