//! `soak-client` and `soak-server`: many long-lived connections in one process (tokio on one
//! thread: 10 000 OS threads would be too many), each exchanging numbered, checksummed messages
//! that both ends verify byte for byte.
//!
//! ```text
//! ambit-testapp soak-server --listen ADDR [--report FILE] [--expect N] [--idle-timeout-ms MS]
//! ambit-testapp soak-client --connect ADDR [--connect ADDR]... --connections N [--seconds S]
//!               [--ramp-seconds R] [--interval-ms I] [--message-bytes B] [--id-base K]
//!               [--report FILE] [--timeout-ms MS]
//! ```
//!
//! A frame is a 36-byte header (big-endian) and a payload:
//! `"SOAK" | direction u32 (1 client→server, 2 server→client) | connection id u64 | sequence u64 |
//! payload length u32 | FNV-1a 64 of (direction, id, sequence, length, payload)`; the payload is
//! a xorshift stream seeded by (direction, id, sequence), so the receiver regenerates it and
//! compares every byte (the checksum alone could be recomputed by a corrupter; the content
//! cannot). The client opens connection `j` (0-based, id `K + j`) at `R·j/N` seconds towards
//! target `j mod T`, sends a hello (sequence 0, `pad` bytes of payload) that the server answers
//! with a hello of the same length, then every I ms a message of B bytes (sequence 1, 2, …) that
//! the server answers with its own message of the same sequence and length. At S seconds every
//! connection half-closes; the server checks the end falls on a frame boundary and half-closes
//! too; the client then expects EOF (anything more is a mismatch).
//!
//! `pad` is `(j div T) mod (36 + B)`: within one (client, target) pair of at most 36 + B
//! connections every connection then moves a distinct number of bytes each way, so a proxy's
//! per-connection byte counts can be matched to exactly one connection.
//!
//! Both print one `key=value` line; `--report` writes one line per connection (`id=… local=…
//! peer=… sent=… received=… frames_sent=… frames_received=… checked=… mismatches=… ok=…`,
//! then `error="…"` if it failed). The server writes its lines as connections end; with
//! `--expect N` it prints its summary and exits once N connections have ended. The client
//! prints `all N connections open after MS ms` on stderr when every connection is up at once.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout, Instant};

use super::{option, parsed, resolve, AppResult};

const MAGIC: &[u8; 4] = b"SOAK";
const HEADER: usize = 36;
const CLIENT: u32 = 1;
const SERVER: u32 = 2;
/// Larger payloads are not ours: the stream is out of step.
const MAX_PAYLOAD: u32 = 1 << 20;

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn payload(direction: u32, id: u64, seq: u64, len: u32) -> Vec<u8> {
    let mut state = fnv(
        fnv(fnv(FNV_OFFSET, &direction.to_be_bytes()), &id.to_be_bytes()),
        &seq.to_be_bytes(),
    ) | 1;
    let mut out = Vec::with_capacity(len as usize + 8);
    while out.len() < len as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

fn checksum(direction: u32, id: u64, seq: u64, body: &[u8]) -> u64 {
    let mut h = fnv(FNV_OFFSET, &direction.to_be_bytes());
    h = fnv(h, &id.to_be_bytes());
    h = fnv(h, &seq.to_be_bytes());
    h = fnv(h, &(body.len() as u32).to_be_bytes());
    fnv(h, body)
}

fn frame(direction: u32, id: u64, seq: u64, len: u32) -> Vec<u8> {
    let body = payload(direction, id, seq, len);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&direction.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&checksum(direction, id, seq, &body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// One connection's counts; what `--report` writes.
#[derive(Default)]
struct Record {
    id: u64,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    sent: u64,
    received: u64,
    frames_sent: u64,
    frames_received: u64,
    /// Bytes of frames that verified completely (header, checksum, every payload byte).
    checked: u64,
    mismatches: u64,
    error: Option<String>,
}

impl Record {
    fn line(&self) -> String {
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
        let mut line = format!(
            "id={} local={} peer={} sent={} received={} frames_sent={} frames_received={} checked={} mismatches={} ok={}",
            self.id,
            addr(self.local),
            addr(self.peer),
            self.sent,
            self.received,
            self.frames_sent,
            self.frames_received,
            self.checked,
            self.mismatches,
            self.error.is_none()
        );
        if let Some(error) = &self.error {
            line.push_str(&format!(" error={:?}", error.replace('"', "'")));
        }
        line
    }

    async fn send(&mut self, stream: &mut TcpStream, bytes: &[u8]) -> AppResult<()> {
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("send: {e}"))?;
        self.sent += bytes.len() as u64;
        self.frames_sent += 1;
        Ok(())
    }

    fn mismatch(&mut self, what: String) -> String {
        self.mismatches += 1;
        what
    }

    /// Reads until `buf` is full or EOF; returns how many bytes arrived.
    async fn read_full(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> AppResult<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = stream
                .read(&mut buf[filled..])
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                break;
            }
            filled += n;
            self.received += n as u64;
        }
        Ok(filled)
    }

    /// Reads and verifies one frame from `direction`. `Ok(None)`: EOF on a frame boundary.
    /// `want_id` is the connection's id (`None` on the server's first frame: the hello names
    /// it); `want_len` the payload length expected, if known.
    async fn receive(
        &mut self,
        stream: &mut TcpStream,
        direction: u32,
        want_id: Option<u64>,
        want_seq: u64,
        want_len: Option<u32>,
    ) -> AppResult<Option<(u64, u32)>> {
        let mut header = [0u8; HEADER];
        match self.read_full(stream, &mut header).await? {
            0 => return Ok(None),
            HEADER => {}
            n => return Err(format!("EOF inside a frame header ({n} of {HEADER} bytes)")),
        }
        let word = |range: std::ops::Range<usize>| {
            header[range]
                .iter()
                .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };
        let (dir, id, seq, len, sum) = (
            word(4..8) as u32,
            word(8..16),
            word(16..24),
            word(24..28) as u32,
            word(28..36),
        );
        if &header[..4] != MAGIC || dir != direction {
            return Err(self.mismatch(format!(
                "frame {want_seq}: bad magic/direction {:?}",
                &header[..8]
            )));
        }
        if want_id.is_some_and(|want| want != id) || seq != want_seq {
            return Err(self.mismatch(format!(
                "frame out of step: got id {id} seq {seq}, expected id {want_id:?} seq {want_seq}"
            )));
        }
        if len > MAX_PAYLOAD || want_len.is_some_and(|want| want != len) {
            return Err(self.mismatch(format!(
                "frame {seq}: payload length {len}, expected {want_len:?}"
            )));
        }
        let mut body = vec![0u8; len as usize];
        let got = self.read_full(stream, &mut body).await?;
        if got < body.len() {
            return Err(format!("EOF inside frame {seq} ({got} of {len} bytes)"));
        }
        if checksum(dir, id, seq, &body) != sum {
            return Err(self.mismatch(format!("frame {seq}: checksum mismatch")));
        }
        if body != payload(dir, id, seq, len) {
            return Err(self.mismatch(format!("frame {seq}: payload content differs")));
        }
        self.frames_received += 1;
        self.checked += (HEADER + body.len()) as u64;
        Ok(Some((id, len)))
    }
}

fn runtime() -> AppResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Many sockets per process: the soft descriptor limit up to the hard one.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

struct Totals {
    records: Vec<Record>,
}

impl Totals {
    fn sum(&self, field: impl Fn(&Record) -> u64) -> u64 {
        self.records.iter().map(field).sum()
    }

    /// The `key=value` fields every summary shares.
    fn fields(&self) -> String {
        format!(
            "completed={} failed={} frames_sent={} frames_received={} bytes_sent={} bytes_received={} bytes_checked={} mismatches={}",
            self.records.iter().filter(|r| r.error.is_none()).count(),
            self.records.iter().filter(|r| r.error.is_some()).count(),
            self.sum(|r| r.frames_sent),
            self.sum(|r| r.frames_received),
            self.sum(|r| r.sent),
            self.sum(|r| r.received),
            self.sum(|r| r.checked),
            self.sum(|r| r.mismatches),
        )
    }

    fn first_error(&self) -> Option<String> {
        self.records.iter().find_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("connection {}: {e}", r.id))
        })
    }
}

fn write_report(path: &str, records: &[Record]) -> AppResult<()> {
    let mut text = String::new();
    for record in records {
        text.push_str(&record.line());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
}

struct ClientPlan {
    targets: Vec<SocketAddr>,
    connections: usize,
    ramp: Duration,
    run: Duration,
    interval: Duration,
    message_bytes: u32,
    id_base: u64,
    timeout: Duration,
}

pub(crate) fn soak_client(args: &[String]) -> AppResult<()> {
    let targets = args
        .windows(2)
        .filter(|pair| pair[0] == "--connect")
        .map(|pair| resolve(&pair[1]))
        .collect::<AppResult<Vec<_>>>()?;
    if targets.is_empty() {
        return Err("soak-client needs --connect ADDR (repeatable)".into());
    }
    let run = super::seconds(args, 150.0)?;
    let ramp_seconds: f64 = parsed(args, "--ramp-seconds", 20.0)?;
    let plan = Arc::new(ClientPlan {
        targets,
        connections: parsed(args, "--connections", 100)?,
        ramp: Duration::try_from_secs_f64(ramp_seconds)
            .map_err(|e| format!("--ramp-seconds: {e}"))?
            .min(run),
        run,
        interval: Duration::from_millis(parsed(args, "--interval-ms", 1000)?.max(1)),
        message_bytes: parsed(args, "--message-bytes", 256)?,
        id_base: parsed(args, "--id-base", 0)?,
        timeout: Duration::from_millis(parsed(args, "--timeout-ms", 15_000)?),
    });
    if plan.message_bytes > MAX_PAYLOAD {
        return Err(format!("--message-bytes is at most {MAX_PAYLOAD}"));
    }
    raise_nofile();
    let started = std::time::Instant::now();
    let records = runtime()?.block_on(run_clients(plan.clone()));
    let elapsed = started.elapsed();
    let peak = records.1;
    let totals = Totals { records: records.0 };
    if let Some(path) = option(args, "--report") {
        write_report(path, &totals.records)?;
    }
    if let Some(error) = totals.first_error() {
        eprintln!("first error: {error}");
    }
    println!(
        "connections={} opened={} {} peak_open={peak} elapsed_ms={}",
        plan.connections,
        totals.records.iter().filter(|r| r.local.is_some()).count(),
        totals.fields(),
        elapsed.as_millis()
    );
    Ok(())
}

/// Every connection's record, and the most connections open at once.
async fn run_clients(plan: Arc<ClientPlan>) -> (Vec<Record>, usize) {
    let start = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|j| {
            let (plan, open, peak) = (plan.clone(), open.clone(), peak.clone());
            tokio::spawn(async move {
                let mut record = Record {
                    id: plan.id_base + j as u64,
                    ..Record::default()
                };
                let result = client_connection(&plan, j, start, &mut record, &open, &peak).await;
                if let Err(error) = result {
                    record.error = Some(error);
                }
                record
            })
        })
        .collect();
    let mut records = Vec::with_capacity(tasks.len());
    for (j, task) in tasks.into_iter().enumerate() {
        records.push(task.await.unwrap_or_else(|e| Record {
            id: plan.id_base + j as u64,
            error: Some(format!("task failed: {e}")),
            ..Record::default()
        }));
    }
    let peak = peak.load(Ordering::Relaxed);
    (records, peak)
}

/// Decrements the open count when the connection ends, whichever way.
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn client_connection(
    plan: &ClientPlan,
    j: usize,
    start: Instant,
    record: &mut Record,
    open: &AtomicUsize,
    peak: &AtomicUsize,
) -> AppResult<()> {
    let n = plan.connections.max(1);
    let target = plan.targets[j % plan.targets.len()];
    let frame_len = HEADER as u32 + plan.message_bytes;
    let pad = ((j / plan.targets.len()) as u32) % frame_len;
    let opens_at = start + plan.ramp.mul_f64(j as f64 / n as f64);
    let ends_at = start + plan.run;
    sleep_until(opens_at).await;
    let mut stream = timeout(plan.timeout, TcpStream::connect(target))
        .await
        .map_err(|_| format!("connect {target}: timed out after {:?}", plan.timeout))?
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    record.local = stream.local_addr().ok();
    record.peer = Some(target);
    let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = OpenGuard(open);
    if peak.fetch_max(now_open, Ordering::Relaxed) < now_open && now_open == plan.connections {
        eprintln!(
            "all {now_open} connections open after {} ms",
            start.elapsed().as_millis()
        );
    }
    exchange(plan, record, &mut stream, 0, pad).await?;
    // Messages spread over the interval: connection j's phase follows its opening time.
    let mut next = opens_at + plan.interval;
    let mut seq = 1;
    while next < ends_at {
        sleep_until(next).await;
        exchange(plan, record, &mut stream, seq, plan.message_bytes).await?;
        seq += 1;
        next = (next + plan.interval).max(Instant::now());
    }
    // Idle until the end: the half-close comes at S seconds, not after the last message.
    sleep_until(ends_at).await;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("half-close: {e}"))?;
    let mut rest = [0u8; 512];
    let tail = timeout(plan.timeout, record.read_full(&mut stream, &mut rest))
        .await
        .map_err(|_| format!("no EOF from the server within {:?}", plan.timeout))??;
    if tail > 0 {
        record.mismatches += 1;
        return Err(format!("{tail} unexpected bytes after the last reply"));
    }
    Ok(())
}

/// Sends frame `seq` and waits for the server's answer to it.
async fn exchange(
    plan: &ClientPlan,
    record: &mut Record,
    stream: &mut TcpStream,
    seq: u64,
    len: u32,
) -> AppResult<()> {
    let id = record.id;
    record.send(stream, &frame(CLIENT, id, seq, len)).await?;
    let reply = record.receive(stream, SERVER, Some(id), seq, Some(len));
    match timeout(plan.timeout, reply).await {
        Err(_) => Err(format!("no reply to frame {seq} within {:?}", plan.timeout)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(None)) => Err(format!("server closed before answering frame {seq}")),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

pub(crate) fn soak_server(args: &[String]) -> AppResult<()> {
    let listen = resolve(option(args, "--listen").unwrap_or("0.0.0.0:8080"))?;
    let expect: Option<usize> = option(args, "--expect")
        .map(|n| {
            n.parse()
                .map_err(|_| format!("--expect: cannot parse {n:?}"))
        })
        .transpose()?;
    let idle = Duration::from_millis(parsed(args, "--idle-timeout-ms", 60_000)?);
    let report = option(args, "--report").map(str::to_string);
    raise_nofile();
    runtime()?.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {local}");
        let mut report = match &report {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| format!("creating {path}: {e}"))?,
            )),
            None => None,
        };
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
        let mut ended = Totals {
            records: Vec::new(),
        };
        loop {
            if expect.is_some_and(|n| ended.records.len() >= n) {
                break;
            }
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let done = done_tx.clone();
                        tokio::spawn(async move {
                            let _ = done.send(server_connection(stream, peer, idle).await);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: say so, and keep the connections we have.
                        eprintln!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(record) = done_rx.recv() => {
                    if let Some(report) = &mut report {
                        writeln!(report, "{}", record.line())
                            .and_then(|()| report.flush())
                            .map_err(|e| format!("writing the report: {e}"))?;
                    }
                    ended.records.push(record);
                }
            }
        }
        if let Some(error) = ended.first_error() {
            eprintln!("first error: {error}");
        }
        println!("connections={} {}", ended.records.len(), ended.fields());
        Ok(())
    })
}

async fn server_connection(mut stream: TcpStream, peer: SocketAddr, idle: Duration) -> Record {
    let _ = stream.set_nodelay(true);
    let mut record = Record {
        local: stream.local_addr().ok(),
        peer: Some(peer),
        ..Record::default()
    };
    if let Err(error) = serve_frames(&mut stream, &mut record, idle).await {
        record.error = Some(error);
    }
    record
}

async fn serve_frames(
    stream: &mut TcpStream,
    record: &mut Record,
    idle: Duration,
) -> AppResult<()> {
    let mut id = None;
    let mut seq = 0;
    loop {
        let next = record.receive(stream, CLIENT, id, seq, None);
        let received = timeout(idle, next)
            .await
            .map_err(|_| format!("no frame {seq} within {idle:?}"))??;
        let Some((frame_id, len)) = received else {
            if seq == 0 {
                return Err("closed before the hello".into());
            }
            return stream
                .shutdown()
                .await
                .map_err(|e| format!("half-close: {e}"));
        };
        if id.is_none() {
            id = Some(frame_id);
            record.id = frame_id;
        }
        let reply = frame(SERVER, frame_id, seq, len);
        record.send(stream, &reply).await?;
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_and_differ_by_direction_and_sequence() {
        let a = frame(CLIENT, 7, 1, 100);
        assert_eq!(a.len(), HEADER + 100);
        assert_ne!(a[HEADER..], frame(SERVER, 7, 1, 100)[HEADER..]);
        assert_ne!(a[HEADER..], frame(CLIENT, 7, 2, 100)[HEADER..]);
        assert_eq!(a, frame(CLIENT, 7, 1, 100));
    }
}
