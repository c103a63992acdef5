//! Copying bytes both ways between two connections, for as long as either direction flows.
//!
//! Each direction owns one bounded buffer (see [`CopyBuffers`]) and reads again only after the
//! previous read was fully written, so a slow side stalls the fast one instead of growing
//! memory. End of input on one side becomes a write shutdown on the other (TCP FIN or HTTP/2
//! END_STREAM) while the opposite direction keeps going: half-close works both ways. Byte
//! counts survive errors, because the access log needs them most then.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::config::CopyBuffers;

/// The reading end of a copy. A socket reads into the copy's buffer (the provided methods); an
/// end that already holds what it received in chunks of its own, like an HTTP/2 stream's DATA
/// frames, hands those over instead, so the bytes are written on without being copied.
pub trait CopyRead: AsyncRead + Unpin {
    /// Whether [`CopyRead::poll_read_chunk`] is used instead of `poll_read`.
    const HOLDS_CHUNKS: bool = false;

    /// The next chunk this end received (possibly empty), `None` at end of input. Called only
    /// when `HOLDS_CHUNKS`.
    fn poll_read_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let _ = cx;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this end reads into the copy's buffer, not in chunks",
        )))
    }

    /// `n` bytes of its chunks were written on: an HTTP/2 stream gives that much receive window
    /// back only now, so a slow writer holds the sender back.
    fn consumed(&mut self, n: usize) -> io::Result<()> {
        let _ = n;
        Ok(())
    }
}

/// Bytes waiting to be written, that a [`CopyWrite`] may take by value instead of copying.
pub trait Unsent: Buf {
    /// Removes the first `n` bytes and returns them without copying.
    fn take_front(&mut self, n: usize) -> Bytes;
}

impl Unsent for BytesMut {
    fn take_front(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }
}

impl Unsent for Bytes {
    fn take_front(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

/// The writing end of a copy. A socket copies from `data` into the kernel (the provided method);
/// an HTTP/2 stream takes the bytes by value and hands them to its connection as they are.
pub trait CopyWrite: AsyncWrite + Unpin {
    /// Writes from the front of `data` and removes what it wrote; returns how much that was.
    fn poll_write_unsent<B: Unsent>(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut B,
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self).poll_write(cx, data.chunk()))?;
        data.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// Sockets and in-memory pipes read into the copy's buffer and write from it.
macro_rules! copies_through_buffer {
    ($($end:ty),* $(,)?) => {
        $(
            impl CopyRead for $end {}
            impl CopyWrite for $end {}
        )*
    };
}

copies_through_buffer!(
    tokio::net::TcpStream,
    tokio::net::UnixStream,
    tokio::io::DuplexStream
);

/// Which way bytes were moving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    DownstreamToUpstream,
    UpstreamToDownstream,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::DownstreamToUpstream => "downstream to upstream",
            Direction::UpstreamToDownstream => "upstream to downstream",
        })
    }
}

/// What failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.direction, .operation, .source))]
pub struct CopyError {
    pub direction: Direction,
    pub operation: Operation,
    #[source]
    pub source: io::Error,
}

fn describe(direction: &Direction, operation: &Operation, source: &io::Error) -> String {
    let (from, to) = match direction {
        Direction::DownstreamToUpstream => ("downstream", "upstream"),
        Direction::UpstreamToDownstream => ("upstream", "downstream"),
    };
    match operation {
        Operation::Read => format!("reading from {from} failed: {source}"),
        Operation::Write => format!("writing to {to} failed: {source}"),
        Operation::Shutdown => format!("half-closing {to} failed: {source}"),
    }
}

/// How a copy ended.
#[derive(Debug)]
pub struct CopyReport {
    /// Bytes read from downstream and written to upstream.
    pub downstream_to_upstream: u64,
    /// Bytes read from upstream and written to downstream.
    pub upstream_to_downstream: u64,
    /// `Ok` when both directions reached end of input and were shut down.
    pub result: Result<(), CopyError>,
}

/// Copies until both directions have ended, or until the first error. On return both streams
/// are still owned by the caller; an error usually means dropping them (which resets an
/// [`crate::H2Stream`]).
pub async fn copy_bidirectional<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    buffers: &CopyBuffers,
) -> CopyReport
where
    D: CopyRead + CopyWrite,
    U: CopyRead + CopyWrite,
{
    let mut down_up = Transfer::new(buffers);
    let mut up_down = Transfer::new(buffers);
    let result =
        poll_fn(|cx| {
            let a = down_up.poll(cx, &mut *downstream, &mut *upstream).map_err(
                |(operation, source)| CopyError {
                    direction: Direction::DownstreamToUpstream,
                    operation,
                    source,
                },
            )?;
            let b = up_down.poll(cx, &mut *upstream, &mut *downstream).map_err(
                |(operation, source)| CopyError {
                    direction: Direction::UpstreamToDownstream,
                    operation,
                    source,
                },
            )?;
            match (a, b) {
                (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok(())),
                _ => Poll::Pending,
            }
        })
        .await;
    CopyReport {
        downstream_to_upstream: down_up.bytes,
        upstream_to_downstream: up_down.bytes,
        result,
    }
}

/// One direction of the copy.
///
/// The buffer exists only while bytes are in flight. A read that finds nothing waiting gives the
/// buffer back (unless the direction is moving bulk data, see [`Transfer::poll_fill`]), so a
/// connection that sits idle between messages holds no copy memory at all: with thousands of
/// mostly quiet tunnels per node, that is most of a connection's cost. Buffers are not zeroed
/// (`BytesMut` spare capacity), so taking one again is a plain allocation. A reader that holds
/// chunks ([`CopyRead::HOLDS_CHUNKS`]) needs no buffer: its chunks are written on as they are.
struct Transfer {
    /// Read but not yet written (from a reader without chunks). Written bytes leave its front;
    /// once it is empty its allocation is reused for the next read, unless a writer took the
    /// bytes by value and still holds them.
    buf: BytesMut,
    /// The reader's chunk not yet written.
    chunk: Bytes,
    /// Bytes of the next read: `initial`, doubled while reads keep filling it, up to `max`.
    read_size: usize,
    initial: usize,
    max: usize,
    read_eof: bool,
    needs_flush: bool,
    done: bool,
    /// Consecutive reads that filled the whole buffer; a few in a row grow it.
    full_reads: u8,
    /// Bytes of the last read, to tell a bulk stream (keep the large buffer) from a pause.
    last_read: usize,
    bytes: u64,
}

/// Reads that must fill the buffer in a row before it doubles.
const FULL_READS_TO_GROW: u8 = 4;

/// The least spare room of the current allocation that a read goes into rather than a new one.
const TAIL_WORTH_READING: usize = 4096;

type Failure = (Operation, io::Error);

impl Transfer {
    fn new(buffers: &CopyBuffers) -> Self {
        let initial = buffers.initial.max(1);
        Transfer {
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            read_size: initial,
            initial,
            max: buffers.max.max(initial),
            read_eof: false,
            needs_flush: false,
            done: false,
            full_reads: 0,
            last_read: 0,
            bytes: 0,
        }
    }

    fn unwritten(&self) -> bool {
        !self.buf.is_empty() || !self.chunk.is_empty()
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<Result<(), Failure>>
    where
        R: CopyRead + ?Sized,
        W: CopyWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.unwritten() && !self.read_eof {
                match self.poll_fill(cx, reader) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        // Nothing more to read now: push out what buffered writers hold
                        // before sleeping, or the peer may wait for it forever.
                        if self.needs_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))
                                .map_err(|e| (Operation::Write, e))?;
                            self.needs_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.unwritten() {
                let from_chunk = !self.chunk.is_empty();
                let written = if from_chunk {
                    writer.poll_write_unsent(cx, &mut self.chunk)
                } else {
                    writer.poll_write_unsent(cx, &mut self.buf)
                };
                let n = ready!(written).map_err(|e| (Operation::Write, e))?;
                if n == 0 {
                    return Poll::Ready(Err((
                        Operation::Write,
                        io::Error::new(io::ErrorKind::WriteZero, "peer accepted no more bytes"),
                    )));
                }
                if from_chunk {
                    reader.consumed(n).map_err(|e| (Operation::Read, e))?;
                    if self.chunk.is_empty() {
                        // A `Bytes` advanced to its end still holds the allocation it was cut
                        // from: h2's read buffer, shared with other streams' frames. Held
                        // until the next chunk, a quiet tunnel would pin one such buffer each.
                        self.chunk = Bytes::new();
                    }
                }
                self.bytes += n as u64;
                self.needs_flush = true;
            }
            if self.read_eof {
                if self.needs_flush {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))
                        .map_err(|e| (Operation::Write, e))?;
                    self.needs_flush = false;
                }
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))
                    .map_err(|e| (Operation::Shutdown, e))?;
                self.done = true;
                self.buf = BytesMut::new();
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads the next bytes, everything before having been written.
    fn poll_fill<R>(&mut self, cx: &mut Context<'_>, reader: &mut R) -> Poll<Result<(), Failure>>
    where
        R: CopyRead + ?Sized,
    {
        if R::HOLDS_CHUNKS {
            return match ready!(reader.poll_read_chunk(cx)) {
                Ok(Some(chunk)) => {
                    self.chunk = chunk;
                    Poll::Ready(Ok(()))
                }
                Ok(None) => {
                    self.read_eof = true;
                    Poll::Ready(Ok(()))
                }
                Err(e) => Poll::Ready(Err((Operation::Read, e))),
            };
        }
        if self.full_reads >= FULL_READS_TO_GROW && self.read_size < self.max {
            self.read_size = (self.read_size * 2).min(self.max);
            self.full_reads = 0;
            // A larger allocation, not a copy: the buffer holds nothing unwritten.
            self.buf = BytesMut::new();
        }
        // Empty, so this reuses the allocation (none of it is unwritten) when no writer still
        // holds part of it. When a taking writer holds the front (an h2 stream sending the last
        // read), the rest of that allocation takes the next read if a message fits: otherwise
        // every small message would cost a second allocation, for the read that finds nothing.
        if self.buf.capacity() < self.read_size.min(TAIL_WORTH_READING) {
            self.buf.reserve(self.read_size);
        }
        let capacity = self.buf.capacity();
        let read = match poll_read_buf(Pin::new(&mut *reader), cx, &mut self.buf) {
            Poll::Ready(read) => read.map_err(|e| (Operation::Read, e))?,
            Poll::Pending => {
                self.release_when_paused();
                return Poll::Pending;
            }
        };
        if read == 0 {
            self.read_eof = true;
        } else if read == capacity {
            self.full_reads = self.full_reads.saturating_add(1);
        } else {
            self.full_reads = 0;
        }
        self.last_read = read;
        Poll::Ready(Ok(()))
    }

    /// Nothing to read: keep the buffer only for a bulk stream that is merely ahead of its
    /// producer (it grew and the last read was large), so bulk transfers do not allocate per
    /// read. Anything else is a pause, and a paused connection holds no buffer; a large buffer
    /// is given back as soon as reads get small, and the next one starts small again.
    fn release_when_paused(&mut self) {
        let bulk = self.read_size > self.initial && self.last_read >= self.read_size / 4;
        if !bulk {
            self.buf = BytesMut::new();
            if self.read_size > self.initial {
                self.read_size = self.initial;
                self.full_reads = 0;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

    #[tokio::test]
    async fn half_close_propagates_each_way_and_counts_bytes() {
        let (mut app, mut down) = tokio::io::duplex(1024);
        let (mut up, mut server) = tokio::io::duplex(1024);
        let copy = tokio::spawn(async move {
            copy_bidirectional(&mut down, &mut up, &CopyBuffers::default()).await
        });
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The server answers after the client's half-close.
        server.write_all(b"response!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response!");
        let report = copy.await.unwrap();
        assert!(report.result.is_ok());
        assert_eq!(report.downstream_to_upstream, 7);
        assert_eq!(report.upstream_to_downstream, 9);
    }

    #[tokio::test]
    async fn buffer_grows_but_stays_bounded() {
        let buffers = CopyBuffers {
            initial: 4,
            max: 64,
        };
        let mut t = Transfer::new(&buffers);
        let mut reader = RecordingReader {
            left: 10_000,
            largest_read: 0,
        };
        let mut sink: Vec<u8> = Vec::new();
        poll_fn(|cx| t.poll(cx, &mut reader, &mut sink))
            .await
            .unwrap();
        assert_eq!(sink.len(), 10_000);
        assert_eq!(t.bytes, 10_000);
        assert_eq!(reader.largest_read, 64, "grew to the cap and no further");
    }

    #[test]
    fn a_paused_direction_gives_its_buffer_back() {
        let mut t = Transfer::new(&CopyBuffers::default());
        let mut reader = ScriptedReader::new([Step::Bytes(300), Step::Pause]);
        let mut sink: Vec<u8> = Vec::new();
        assert!(poll_once(&mut t, &mut reader, &mut sink).is_pending());
        assert_eq!(sink.len(), 300, "the message went through");
        assert_eq!(
            t.buf.capacity(),
            0,
            "an idle connection holds no copy buffer"
        );
    }

    #[test]
    fn a_bulk_direction_keeps_its_grown_buffer_while_its_producer_catches_up() {
        let buffers = CopyBuffers {
            initial: 1024,
            max: 8192,
        };
        let mut t = Transfer::new(&buffers);
        // Full reads grow the buffer 1 → 2 → 4 → 8 KiB; a pause after a full read keeps it.
        let mut script: Vec<Step> = std::iter::repeat_n(Step::Bytes(usize::MAX), 16).collect();
        script.push(Step::Pause);
        let mut reader = ScriptedReader::new(script);
        let mut sink: Vec<u8> = Vec::new();
        assert!(poll_once(&mut t, &mut reader, &mut sink).is_pending());
        assert_eq!(t.read_size, 8192);
        assert!(t.buf.capacity() >= 8192, "bulk data keeps its buffer");

        // Then the stream slows down to small messages: the large buffer goes, reads start small.
        let mut reader = ScriptedReader::new([Step::Bytes(100), Step::Pause]);
        assert!(poll_once(&mut t, &mut reader, &mut sink).is_pending());
        assert_eq!(t.buf.capacity(), 0);
        assert_eq!(t.read_size, 1024);
    }

    #[tokio::test]
    async fn errors_keep_byte_counts() {
        let (mut app, mut down) = tokio::io::duplex(64);
        let mut up = FailingWriter { accept: 3 };
        app.write_all(b"abcdef").await.unwrap();
        let report = copy_bidirectional(&mut down, &mut up, &CopyBuffers::default()).await;
        assert_eq!(report.downstream_to_upstream, 3);
        let err = report.result.unwrap_err();
        assert_eq!(err.direction, Direction::DownstreamToUpstream);
        assert_eq!(err.operation, Operation::Write);
        assert!(err.to_string().contains("writing to upstream failed"));
    }

    #[test]
    fn chunks_are_written_on_without_a_copy_and_their_window_given_back_as_written() {
        let chunks = [Bytes::from(vec![1u8; 70_000]), Bytes::from(vec![2u8; 5])];
        let addresses: Vec<*const u8> = chunks.iter().map(|c| c.as_ptr()).collect();
        let mut reader = ChunkReader {
            chunks: chunks.into_iter().collect(),
            consumed: 0,
            then_pause: false,
        };
        // Takes at most 30 000 bytes per write, as a tunnel short of send window does.
        let mut writer = TakingWriter {
            taken: Vec::new(),
            per_write: 30_000,
        };
        let mut t = Transfer::new(&CopyBuffers::default());
        let done = t.poll(
            &mut Context::from_waker(std::task::Waker::noop()),
            &mut reader,
            &mut writer,
        );
        assert!(matches!(done, Poll::Ready(Ok(()))));
        assert_eq!(t.bytes, 70_005);
        assert_eq!(
            reader.consumed, 70_005,
            "every written byte's window released"
        );
        let sizes: Vec<usize> = writer.taken.iter().map(Bytes::len).collect();
        assert_eq!(sizes, [30_000, 30_000, 10_000, 5]);
        // The pieces are the reader's own memory, in order: nothing was copied.
        assert_eq!(writer.taken[0].as_ptr(), addresses[0]);
        assert_eq!(writer.taken[1].as_ptr(), addresses[0].wrapping_add(30_000));
        assert_eq!(writer.taken[3].as_ptr(), addresses[1]);
        assert_eq!(t.buf.capacity(), 0, "a chunk reader needs no copy buffer");
    }

    #[test]
    fn a_quiet_tunnel_holds_no_reference_to_the_receive_buffer_its_last_chunk_came_from() {
        // h2 cuts DATA payloads out of one read buffer shared by every stream's frames.
        let receive_buffer = Bytes::from(vec![3u8; 16 * 1024]);
        let mut reader = ChunkReader {
            chunks: [receive_buffer.slice(100..400)].into_iter().collect(),
            consumed: 0,
            then_pause: true,
        };
        let mut socket = Vec::new();
        let mut t = Transfer::new(&CopyBuffers::default());
        let poll = t.poll(
            &mut Context::from_waker(std::task::Waker::noop()),
            &mut reader,
            &mut socket,
        );
        assert!(poll.is_pending(), "waiting for the next message");
        assert_eq!(socket.len(), 300);
        assert!(
            receive_buffer.is_unique(),
            "the paused copy still pins the receive buffer"
        );
    }

    #[test]
    fn a_socket_read_is_handed_to_a_taking_writer_by_value() {
        let mut reader = ScriptedReader::new([Step::Bytes(1000)]);
        let mut writer = TakingWriter {
            taken: Vec::new(),
            per_write: usize::MAX,
        };
        let mut t = Transfer::new(&CopyBuffers::default());
        assert!(t
            .poll(
                &mut Context::from_waker(std::task::Waker::noop()),
                &mut reader,
                &mut writer,
            )
            .is_pending());
        assert_eq!(writer.taken.len(), 1);
        assert_eq!(&writer.taken[0][..], &[1u8; 1000][..]);
    }

    #[test]
    fn small_messages_to_a_taking_writer_share_one_allocation() {
        let mut reader = ScriptedReader::new([Step::Bytes(300), Step::Bytes(300), Step::Pause]);
        let mut writer = TakingWriter {
            taken: Vec::new(),
            per_write: usize::MAX,
        };
        let mut t = Transfer::new(&CopyBuffers::default());
        assert!(t
            .poll(
                &mut Context::from_waker(std::task::Waker::noop()),
                &mut reader,
                &mut writer,
            )
            .is_pending());
        assert_eq!(writer.taken.len(), 2);
        assert_eq!(
            writer.taken[1].as_ptr(),
            writer.taken[0].as_ptr().wrapping_add(300),
            "the second message was read into the rest of the first one's allocation"
        );
        assert_eq!(t.buf.capacity(), 0, "and the paused copy let go of it");
    }

    /// Hands out its chunks, then ends (or, with `then_pause`, waits for more forever).
    struct ChunkReader {
        chunks: std::collections::VecDeque<Bytes>,
        consumed: usize,
        then_pause: bool,
    }

    impl AsyncRead for ChunkReader {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            panic!("a chunk reader is not read through a buffer")
        }
    }

    impl CopyRead for ChunkReader {
        const HOLDS_CHUNKS: bool = true;

        fn poll_read_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
            match self.chunks.pop_front() {
                None if self.then_pause => Poll::Pending,
                next => Poll::Ready(Ok(next)),
            }
        }

        fn consumed(&mut self, n: usize) -> io::Result<()> {
            self.consumed += n;
            Ok(())
        }
    }

    /// Takes up to `per_write` bytes by value per write and keeps them.
    struct TakingWriter {
        taken: Vec<Bytes>,
        per_write: usize,
    }

    impl AsyncWrite for TakingWriter {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            panic!("a taking writer is not written by copy")
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl CopyWrite for TakingWriter {
        fn poll_write_unsent<B: Unsent>(
            &mut self,
            _cx: &mut Context<'_>,
            data: &mut B,
        ) -> Poll<io::Result<usize>> {
            let n = data.remaining().min(self.per_write);
            self.taken.push(data.take_front(n));
            Poll::Ready(Ok(n))
        }
    }

    fn poll_once(
        t: &mut Transfer,
        reader: &mut ScriptedReader,
        sink: &mut Vec<u8>,
    ) -> Poll<Result<(), Failure>> {
        t.poll(
            &mut Context::from_waker(std::task::Waker::noop()),
            reader,
            sink,
        )
    }

    #[derive(Clone)]
    enum Step {
        /// Up to this many bytes (as many as the read offers room for).
        Bytes(usize),
        /// Nothing to read yet.
        Pause,
    }

    /// A reader that follows a script, then pauses forever.
    struct ScriptedReader(std::collections::VecDeque<Step>);

    impl CopyRead for ScriptedReader {}
    impl CopyRead for RecordingReader {}
    impl CopyWrite for Vec<u8> {}
    impl CopyRead for FailingWriter {}
    impl CopyWrite for FailingWriter {}

    impl ScriptedReader {
        fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            ScriptedReader(steps.into_iter().collect())
        }
    }

    impl AsyncRead for ScriptedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.pop_front() {
                Some(Step::Bytes(n)) => {
                    buf.put_slice(&vec![1u8; n.min(buf.remaining())]);
                    Poll::Ready(Ok(()))
                }
                Some(Step::Pause) | None => Poll::Pending,
            }
        }
    }

    /// Produces `left` bytes, remembering the largest read it was offered.
    struct RecordingReader {
        left: usize,
        largest_read: usize,
    }

    impl AsyncRead for RecordingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.largest_read = self.largest_read.max(buf.remaining());
            let n = self.left.min(buf.remaining());
            buf.put_slice(&vec![7u8; n]);
            self.left -= n;
            Poll::Ready(Ok(()))
        }
    }

    /// A stream whose reads never complete and whose writes fail after `accept` bytes.
    struct FailingWriter {
        accept: usize,
    }

    impl AsyncRead for FailingWriter {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for FailingWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.accept == 0 {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let n = self.accept.min(buf.len());
            self.accept -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}
