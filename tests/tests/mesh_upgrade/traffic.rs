//! The surge's traffic: in one direction (a client pod to an echo server in another pod), a
//! long-lived stream whose every byte is checked, a held connection doing an echo round trip
//! every 100 ms, and a fresh connection every 100 ms; each loop runs until told to stop and
//! reports what failed, when (seconds since the scenario's start, to set beside the ztunnels'
//! logs).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ambit_tests::scenario::{connect_from, echo_once};
use ambit_tests::Pod;

/// The loops end by themselves after this even if the scenario never tells them to.
const LOOP_LIMIT: Duration = Duration::from_secs(120);
/// The verified stream's pace in each direction (bounded: two cores run the whole mesh).
pub const STREAM_BYTES_PER_SECOND: u64 = 1024 * 1024;
const STREAM_CHUNK: usize = 16 * 1024;
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
const NEW_CONNECTION_EVERY: Duration = Duration::from_millis(100);
/// What each new connection echoes (unique per connection, padded to this size).
pub const NEW_CONNECTION_BYTES: usize = 64;

/// One direction of the surge's traffic: `client` connects to the echo server on `server`.
pub struct Way<'p> {
    pub name: &'static str,
    pub client: &'p Pod,
    pub server: &'p Pod,
}

impl Way<'_> {
    pub fn target(&self) -> SocketAddr {
        self.server.addr(8080)
    }
}

/// Sets the flag when dropped: the loops stop even if the scenario panics.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn stopped(stop: &AtomicBool, t0: Instant) -> bool {
    stop.load(Ordering::SeqCst) || t0.elapsed() >= LOOP_LIMIT
}

/// `+12.3s`: when something happened, to set beside the ztunnels' logs.
fn at(t0: Instant) -> String {
    format!("+{:.1}s", t0.elapsed().as_secs_f64())
}

fn sleep_until(when: Instant) {
    thread::sleep(when.saturating_duration_since(Instant::now()));
}

/// The three loops of one direction, running.
pub struct Running<'scope> {
    stream: thread::ScopedJoinHandle<'scope, StreamReport>,
    keepalive: thread::ScopedJoinHandle<'scope, KeepAliveReport>,
    new: thread::ScopedJoinHandle<'scope, NewConnectionReport>,
}

/// Starts `way`'s three loops in `scope`; they run until `stop` (or [`LOOP_LIMIT`] after `t0`).
pub fn start<'scope, 'env>(
    scope: &'scope thread::Scope<'scope, 'env>,
    way: &'env Way<'env>,
    stop: &'env AtomicBool,
    t0: Instant,
) -> Running<'scope> {
    Running {
        stream: scope.spawn(move || stream_loop(way, stop, t0)),
        keepalive: scope.spawn(move || keepalive_loop(way, stop, t0)),
        new: scope.spawn(move || new_connection_loop(way, stop, t0)),
    }
}

impl Running<'_> {
    /// Waits for the loops (after `stop` was set) and returns what they saw.
    pub fn join(self) -> WayReport {
        WayReport {
            stream: self.stream.join().expect("the stream loop panicked"),
            keepalive: self.keepalive.join().expect("the keep-alive loop panicked"),
            new: self.new.join().expect("the new-connection loop panicked"),
        }
    }
}

/// What one direction's three loops saw.
pub struct WayReport {
    pub stream: StreamReport,
    pub keepalive: KeepAliveReport,
    pub new: NewConnectionReport,
}

impl WayReport {
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.stream
            .problems
            .iter()
            .map(|p| format!("stream: {p}"))
            .chain(
                self.keepalive
                    .problems
                    .iter()
                    .map(|p| format!("keep-alive: {p}")),
            )
            .chain(
                self.new
                    .failures
                    .iter()
                    .map(|p| format!("new connection: {p}")),
            )
    }

    pub fn summary(&self) -> String {
        format!(
            "stream sent={} verified={}; keep-alive round_trips={}; new connections served={} failed={}",
            self.stream.sent,
            self.stream.verified,
            self.keepalive.round_trips,
            self.new.served.len(),
            self.new.failures.len()
        )
    }
}

/// The long-lived connection of a loop, or the problem (when it happened) to report.
fn connect(way: &Way, t0: Instant) -> Result<TcpStream, String> {
    connect_from(way.client, way.target()).map_err(|error| format!("{}: connect: {error}", at(t0)))
}

/// The byte at `offset` of the verified stream: a hash of the position, so a lost, repeated or
/// reordered chunk shows at its first byte.
fn pattern_byte(offset: u64) -> u8 {
    let mut x = (offset >> 3).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> ((offset & 7) * 8)) as u8
}

#[derive(Debug, Default)]
pub struct StreamReport {
    pub local: Option<SocketAddr>,
    /// Bytes written.
    pub sent: u64,
    /// Bytes echoed back and found equal to what was sent at their position.
    pub verified: u64,
    pub problems: Vec<String>,
}

/// One connection for the whole scenario: a writer sends the pattern at a fixed pace until told
/// to stop, then half-closes; the reader checks every echoed byte and reads to the echo's end.
fn stream_loop(way: &Way, stop: &AtomicBool, t0: Instant) -> StreamReport {
    let mut report = StreamReport::default();
    let stream = match connect(way, t0) {
        Ok(stream) => stream,
        Err(problem) => {
            report.problems.push(problem);
            return report;
        }
    };
    report.local = stream.local_addr().ok();
    let writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(error) => {
            report.problems.push(format!("clone: {error}"));
            return report;
        }
    };
    let _ = writer.set_write_timeout(Some(Duration::from_secs(5)));
    thread::scope(|scope| {
        let written = scope.spawn(|| write_pattern(writer, stop, t0));
        let read = verify_pattern(&stream, t0);
        if read.1.is_some() {
            // Unblock the writer: its peer stopped reading.
            let _ = stream.shutdown(Shutdown::Both);
        }
        let (sent, write_problem) = written
            .join()
            .unwrap_or((0, Some("writer panicked".into())));
        report.sent = sent;
        report.verified = read.0;
        report.problems.extend(read.1);
        report.problems.extend(write_problem);
    });
    if report.problems.is_empty() && report.verified != report.sent {
        report.problems.push(format!(
            "the echo ended after {} of {} bytes",
            report.verified, report.sent
        ));
    }
    report
}

/// Writes the pattern at [`STREAM_BYTES_PER_SECOND`] until `stop`, then half-closes; returns
/// the bytes written and the error that ended it early, if one did.
fn write_pattern(mut writer: TcpStream, stop: &AtomicBool, t0: Instant) -> (u64, Option<String>) {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut chunk = vec![0u8; STREAM_CHUNK];
    while !stopped(stop, t0) {
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = pattern_byte(sent + i as u64);
        }
        if let Err(error) = writer.write_all(&chunk) {
            return (
                sent,
                Some(format!("{}: write after {sent} bytes: {error}", at(t0))),
            );
        }
        sent += chunk.len() as u64;
        sleep_until(start + Duration::from_secs_f64(sent as f64 / STREAM_BYTES_PER_SECOND as f64));
    }
    match writer.shutdown(Shutdown::Write) {
        Ok(()) => (sent, None),
        Err(error) => (sent, Some(format!("{}: half-close: {error}", at(t0)))),
    }
}

/// Reads the echo to its end, checking each byte; returns the bytes verified and what ended it
/// early (a read error, a changed byte).
fn verify_pattern(mut reader: &TcpStream, t0: Instant) -> (u64, Option<String>) {
    let mut verified = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return (verified, None),
            Ok(n) => n,
            Err(error) => {
                return (
                    verified,
                    Some(format!("{}: read after {verified} bytes: {error}", at(t0))),
                )
            }
        };
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern_byte(verified + i as u64)) {
            return (
                verified + i as u64,
                Some(format!(
                    "{}: byte {} of the echo is {:#04x}, {:#04x} was sent",
                    at(t0),
                    verified + i as u64,
                    buf[i],
                    pattern_byte(verified + i as u64)
                )),
            );
        }
        verified += n as u64;
    }
}

/// A keep-alive round trip's message: fixed length, numbered.
fn keepalive_message(seq: u64) -> Vec<u8> {
    format!("KEEPALIVE-MARKER {seq:010}\n").into_bytes()
}

#[derive(Debug, Default)]
pub struct KeepAliveReport {
    pub local: Option<SocketAddr>,
    pub round_trips: u64,
    /// Bytes each way.
    pub bytes: u64,
    pub problems: Vec<String>,
}

/// One held connection, an echo round trip every [`KEEPALIVE_EVERY`] until `stop`, then a clean
/// close (half-close, the echo's end).
fn keepalive_loop(way: &Way, stop: &AtomicBool, t0: Instant) -> KeepAliveReport {
    let mut report = KeepAliveReport::default();
    let mut stream = match connect(way, t0) {
        Ok(stream) => stream,
        Err(problem) => {
            report.problems.push(problem);
            return report;
        }
    };
    report.local = stream.local_addr().ok();
    let start = Instant::now();
    while !stopped(stop, t0) {
        let message = keepalive_message(report.round_trips);
        match echo_once(&mut stream, &message) {
            Ok(echo) if echo == message => {}
            Ok(echo) => {
                report.problems.push(format!(
                    "{}: round trip {} echoed {:?}",
                    at(t0),
                    report.round_trips,
                    String::from_utf8_lossy(&echo)
                ));
                return report;
            }
            Err(error) => {
                report.problems.push(format!(
                    "{}: round trip {}: {error}",
                    at(t0),
                    report.round_trips
                ));
                return report;
            }
        }
        report.round_trips += 1;
        report.bytes += message.len() as u64;
        sleep_until(start + KEEPALIVE_EVERY * report.round_trips as u32);
    }
    if let Err(problem) = close_cleanly(&mut stream) {
        report.problems.push(format!("{}: {problem}", at(t0)));
    }
    report
}

/// Half-closes and reads the peer's end: nothing more may come.
pub fn close_cleanly(stream: &mut TcpStream) -> Result<(), String> {
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .map_err(|e| format!("reading the end: {e}"))?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("{} unexpected bytes before the end", rest.len()))
    }
}

#[derive(Debug, Default)]
pub struct NewConnectionReport {
    /// The client address of every connection served (what the outbound access line logs).
    pub served: Vec<SocketAddr>,
    pub failures: Vec<String>,
}

/// A fresh connection every [`NEW_CONNECTION_EVERY`] (the next one right away if one took
/// longer), each echoing one numbered message and closing cleanly, until `stop`.
fn new_connection_loop(way: &Way, stop: &AtomicBool, t0: Instant) -> NewConnectionReport {
    let mut report = NewConnectionReport::default();
    let start = Instant::now();
    let mut seq = 0u32;
    while !stopped(stop, t0) {
        let mut message = format!("NEWCONN-MARKER {} {seq:08} ", way.client.name()).into_bytes();
        message.resize(NEW_CONNECTION_BYTES, b'.');
        let begun = Instant::now();
        match one_connection(way, &message) {
            Ok(local) => report.served.push(local),
            Err(error) => report.failures.push(format!(
                "{}: connection {seq} failed after {:?}: {error}",
                at(t0),
                begun.elapsed()
            )),
        }
        seq += 1;
        sleep_until(start + NEW_CONNECTION_EVERY * seq);
    }
    report
}

fn one_connection(way: &Way, message: &[u8]) -> Result<SocketAddr, String> {
    let mut stream = connect_from(way.client, way.target()).map_err(|e| format!("connect: {e}"))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    match echo_once(&mut stream, message) {
        Ok(echo) if echo == message => {}
        Ok(echo) => return Err(format!("echoed {:?}", String::from_utf8_lossy(&echo))),
        Err(error) => return Err(format!("echo (from {local}): {error}")),
    }
    close_cleanly(&mut stream).map_err(|e| format!("{e} (from {local})"))?;
    Ok(local)
}
