//! Keeps the first TLS error a connection hit. h2 flattens transport errors into strings, which
//! would lose what [`certs::HandshakeFailure`] needs to explain a refused certificate.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared slot for the first `rustls::Error` seen on a connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsErrorSlot(Arc<Mutex<Option<rustls::Error>>>);

impl TlsErrorSlot {
    pub(crate) fn get(&self) -> Option<rustls::Error> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result {
            if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| tls.clone());
            }
        }
        result
    }
}

/// An I/O stream that records TLS errors into a [`TlsErrorSlot`] on their way up.
pub(crate) struct Tapped<S> {
    inner: S,
    slot: TlsErrorSlot,
}

impl<S> Tapped<S> {
    pub(crate) fn new(inner: S, slot: TlsErrorSlot) -> Self {
        Tapped { inner, slot }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.slot.record(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.slot.record(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.slot.record(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.slot.record(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.slot.record(result)
    }
}
