//! The workload of the cluster-in-a-box: a TCP echo server, an HTTP/1.1 server with sized
//! bodies, and clients for both, so tests drive real sockets inside pod namespaces.
//!
//! ```text
//! ambit-testapp echo   [--listen ADDR] [--quiet]
//! ambit-testapp http   [--listen ADDR] [--body-bytes N] [--quiet]
//! ambit-testapp client --connect ADDR [--bytes N] [--text STR] [--timeout-ms MS]
//! ambit-testapp http-get --connect ADDR [--path PATH] [--timeout-ms MS] [--body]
//! ambit-testapp dns-query --server ADDR --name NAME [--type A|AAAA] [--tcp] [--timeout-ms MS]
//! ambit-testapp dns-server --listen ADDR [--answer NAME=IP]...
//! ambit-testapp throughput --connect ADDR [--connections C] [--seconds S] [--warmup-ms MS]
//! ambit-testapp latency --connect ADDR [--rate R] [--seconds S] [--warmup N]
//! ambit-testapp connrate --connect ADDR [--count N] [--seconds S] [--concurrency C]
//! ambit-testapp soak-server --listen ADDR [--report FILE] [--expect N]
//! ambit-testapp soak-client --connect ADDR... --connections N [--seconds S] [--message-bytes B] …
//! ambit-testapp mesh-echo|mesh-client …   (Istio echo app stand-ins for mesh conformance, testapp/mesh.rs)
//! ambit-testapp otlp-collector --listen ADDR   (prints the spans OTLP/HTTP exports carry, testapp/otlp.rs)
//! ```
//! Servers print `listening on ADDR` once bound and `accepted from PEER` per connection (the
//! source address the server saw: mesh tests check it is the client pod's IP). `client` sends
//! N bytes (a deterministic pseudo-random stream, or STR repeated), reads the echo until EOF and
//! prints `sent=N received=M sent_sha256=… received_sha256=… peer=ADDR`.
//!
//! The last three are load generators against an `http` server, for benchmarks; each prints
//! one line of `key=value`:
//! - `throughput`: C connections (default 1) each download an endless body (`?bytes=…`); after
//!   a warm-up it counts the bytes all received in the same S seconds → `bytes=… connections=…
//!   elapsed_us=… mb_per_s=…` (MB = 10^6).
//! - `latency`: one keep-alive connection, requests sent open-loop on a fixed schedule (R per
//!   second, pipelined if a response is late); each latency is measured from the request's
//!   *scheduled* send time to the end of its response, so a stall counts against every request
//!   it delays (no coordinated omission) → `count=… p50_us=… p90_us=… p99_us=… max_us=…`.
//! - `connrate`: C threads open connections until N were made or S seconds passed, each doing
//!   one `connection: close` request and reading the whole response → `connections=… errors=…
//!   elapsed_us=… per_second=…`.
//!
//! `soak-client`/`soak-server` (testapp/soak.rs) hold thousands of long-lived connections in one
//! process, exchanging numbered, checksummed messages both ends verify byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

#[path = "testapp/mesh.rs"]
mod mesh;
#[path = "testapp/otlp.rs"]
mod otlp;
#[path = "testapp/soak.rs"]
mod soak;

type AppResult<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo") => serve(&args[1..], Mode::Echo),
        Some("http") => serve(&args[1..], Mode::Http),
        Some("client") => client(&args[1..]),
        Some("http-get") => http_get(&args[1..]),
        Some("dns-query") => dns_query(&args[1..]),
        Some("dns-server") => dns_server(&args[1..]),
        Some("throughput") => throughput(&args[1..]),
        Some("latency") => latency(&args[1..]),
        Some("connrate") => connrate(&args[1..]),
        Some("soak-client") => soak::soak_client(&args[1..]),
        Some("soak-server") => soak::soak_server(&args[1..]),
        Some("mesh-echo") => mesh::mesh_echo(&args[1..]),
        Some("mesh-client") => mesh::mesh_client(&args[1..]),
        Some("otlp-collector") => otlp::otlp_collector(&args[1..]),
        _ => Err(
            "usage: ambit-testapp echo|http|client|http-get|dns-query|dns-server|throughput|latency|connrate|soak-client|soak-server|mesh-echo|mesh-client|otlp-collector [options] (see source)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ambit-testapp: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` options; flags without values are looked up with `has_flag`.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn has_flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> AppResult<T> {
    match option(args, name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| format!("{name}: cannot parse {text:?}")),
    }
}

fn resolve(text: &str) -> AppResult<SocketAddr> {
    text.to_socket_addrs()
        .map_err(|e| format!("address {text:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {text:?} resolves to nothing"))
}

#[derive(Clone, Copy)]
enum Mode {
    Echo,
    Http,
}

fn serve(args: &[String], mode: Mode) -> AppResult<()> {
    let listen = resolve(option(args, "--listen").unwrap_or("0.0.0.0:8080"))?;
    let body_bytes: usize = parsed(args, "--body-bytes", 1024)?;
    let quiet = has_flag(args, "--quiet");
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {local}");
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        if !quiet {
            if let Ok(peer) = stream.peer_addr() {
                println!("accepted from {peer}");
            }
        }
        thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let outcome = match mode {
                Mode::Echo => echo_connection(stream),
                Mode::Http => http_connection(stream, body_bytes),
            };
            if let Err(e) = outcome {
                eprintln!("connection: {e}");
            }
        });
    }
    Ok(())
}

/// Copy everything back; on the client's half-close, half-close too.
fn echo_connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buf[..n])?;
    }
}

/// Keep-alive HTTP/1.1: any request gets 200 with a body of `body_bytes` (or `?bytes=N`).
fn http_connection(stream: TcpStream, body_bytes: usize) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let filler = vec![b'a'; 64 * 1024];
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_string();
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.parse().unwrap_or(0),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        let size = target
            .split_once("bytes=")
            .and_then(|(_, n)| n.split('&').next()?.parse().ok())
            .unwrap_or(body_bytes);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\ncontent-type: application/octet-stream\r\nx-client-addr: {peer}\r\n{}\r\n",
            if close { "connection: close\r\n" } else { "" }
        );
        writer.write_all(head.as_bytes())?;
        let mut left = size;
        while left > 0 {
            let n = left.min(filler.len());
            writer.write_all(&filler[..n])?;
            left -= n;
        }
        if close {
            return writer.shutdown(Shutdown::Write);
        }
    }
}

fn connect(args: &[String]) -> AppResult<(TcpStream, Duration)> {
    let target = resolve(option(args, "--connect").ok_or("--connect ADDR is required")?)?;
    let timeout = Duration::from_millis(parsed(args, "--timeout-ms", 10_000)?);
    let stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("connect {target}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok((stream, timeout))
}

/// The payload: STR repeated to N bytes, or a xorshift stream (incompressible, and any
/// corruption changes the checksum).
fn payload_chunk(text: Option<&str>, offset: u64, len: usize, state: &mut u64) -> Vec<u8> {
    match text {
        Some(text) if !text.is_empty() => text
            .bytes()
            .cycle()
            .skip((offset % text.len() as u64) as usize)
            .take(len)
            .collect(),
        _ => (0..len)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 24) as u8
            })
            .collect(),
    }
}

fn client(args: &[String]) -> AppResult<()> {
    let text = option(args, "--text").map(str::to_string);
    let default_bytes = text.as_ref().map_or(1024, |t| t.len() as u64);
    let total: u64 = parsed(args, "--bytes", default_bytes)?;
    let (stream, _) = connect(args)?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    // Write and read concurrently: an echo of a large payload would otherwise deadlock on
    // full socket buffers.
    let sender = thread::spawn(move || -> AppResult<String> {
        let mut hash = Sha256::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut sent = 0u64;
        while sent < total {
            let len = (total - sent).min(64 * 1024) as usize;
            let chunk = payload_chunk(text.as_deref(), sent, len, &mut state);
            writer.write_all(&chunk).map_err(|e| format!("send: {e}"))?;
            hash.update(&chunk);
            sent += len as u64;
        }
        writer
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        Ok(hex(&hash.finalize()))
    });
    let mut reader = stream;
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n as u64;
    }
    let sent_sha = sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())??;
    println!(
        "sent={total} received={received} sent_sha256={sent_sha} received_sha256={} peer={peer} elapsed_ms={}",
        hex(&hash.finalize()),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn http_get(args: &[String]) -> AppResult<()> {
    let path = option(args, "--path").unwrap_or("/");
    let (mut stream, _) = connect(args)?;
    let host = option(args, "--connect").unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("response has no header end")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if has_flag(args, "--body") {
        // The body itself, e.g. a JSON admin page a test parses.
        print!("{}", String::from_utf8_lossy(&response[head_end + 4..]));
        return Ok(());
    }
    println!(
        "status={status} body_bytes={}",
        response.len() - head_end - 4
    );
    for line in head.lines().skip(1) {
        println!("header {line}");
    }
    Ok(())
}

/// Reads one HTTP/1.1 response head and returns its content-length (0 when absent).
fn read_response_head(reader: &mut impl BufRead) -> AppResult<usize> {
    let mut line = String::new();
    if reader
        .read_line(&mut line)
        .map_err(|e| format!("receive: {e}"))?
        == 0
    {
        return Err("connection closed before a response".into());
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected status line {line:?}"));
    }
    let mut content_length = 0;
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .map_err(|e| format!("receive: {e}"))?
            == 0
        {
            return Err("connection closed inside a response head".into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(content_length);
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
            }
        }
    }
}

fn seconds(args: &[String], default: f64) -> AppResult<Duration> {
    let seconds: f64 = parsed(args, "--seconds", default)?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("--seconds: {e}"))
}

/// C connections (default 1), each an endless download: bytes per second over one common
/// window after a warm-up (slow start, the tunnel's buffers growing), summed over connections.
fn throughput(args: &[String]) -> AppResult<()> {
    let duration = seconds(args, 2.0)?;
    let warmup = Duration::from_millis(parsed(args, "--warmup-ms", 300)?);
    let connections: usize = parsed(args, "--connections", 1)?;
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        streams.push(connect(args)?.0);
    }
    // Every connection counts the bytes it reads in [from, until): the same window for all.
    let from = Instant::now() + warmup;
    let until = from + duration;
    let downloads: Vec<thread::JoinHandle<AppResult<u64>>> = streams
        .into_iter()
        .map(|stream| thread::spawn(move || download(stream, from, until)))
        .collect();
    let mut counted = 0u64;
    for download in downloads {
        counted += download
            .join()
            .map_err(|_| "a download thread panicked")??;
    }
    let elapsed = until.saturating_duration_since(from);
    println!(
        "bytes={counted} connections={connections} elapsed_us={} mb_per_s={:.1}",
        elapsed.as_micros(),
        counted as f64 / elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}

/// Downloads an endless body on `stream`, counting what arrives between `from` and `until`.
fn download(stream: TcpStream, from: Instant, until: Instant) -> AppResult<u64> {
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    writer
        .write_all(b"GET /?bytes=1000000000000000 HTTP/1.1\r\nhost: bench\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    read_response_head(&mut reader)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut counted = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err("the server ended the download early".into());
        }
        let now = Instant::now();
        if now >= until {
            // Closing with unread data resets the connection: the download stops.
            return Ok(counted);
        }
        if now >= from {
            counted += n as u64;
        }
    }
}

/// Open-loop request/response latency over one keep-alive connection.
fn latency(args: &[String]) -> AppResult<()> {
    let rate: f64 = parsed(args, "--rate", 1000.0)?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let duration = seconds(args, 2.0)?;
    let warmup: usize = parsed(args, "--warmup", 50)?;
    let path = option(args, "--path").unwrap_or("/");
    let (stream, _) = connect(args)?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let mut body = Vec::new();
    let mut read_response = |reader: &mut BufReader<TcpStream>| -> AppResult<()> {
        let length = read_response_head(reader)?;
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("receive body: {e}"))
    };
    // Closed-loop warm-up: connection set up, buffers and caches warm on both ends.
    for _ in 0..warmup {
        writer
            .write_all(&request)
            .map_err(|e| format!("send: {e}"))?;
        read_response(&mut reader)?;
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate).round().max(1.0) as u32;
    let start = Instant::now() + Duration::from_millis(1);
    let scheduled = move |i: u32| start + interval * i;
    let sender = thread::spawn(move || -> AppResult<()> {
        // Wake up on time: the default 50 µs timer slack would delay every send.
        let _ = nix::sys::prctl::set_timerslack(1_000);
        for i in 0..count {
            let at = scheduled(i);
            let now = Instant::now();
            if at > now {
                thread::sleep(at - now);
            }
            writer
                .write_all(&request)
                .map_err(|e| format!("send: {e}"))?;
        }
        Ok(())
    });
    let mut latencies = Vec::with_capacity(count as usize);
    for i in 0..count {
        read_response(&mut reader)?;
        latencies.push(Instant::now().saturating_duration_since(scheduled(i)));
    }
    let elapsed = start.elapsed();
    sender
        .join()
        .map_err(|_| "sender thread panicked".to_string())??;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_micros()
    };
    println!(
        "count={count} achieved_per_s={:.0} p50_us={} p90_us={} p99_us={} max_us={}",
        f64::from(count) / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// New connections per second: each connection does one request and closes.
fn connrate(args: &[String]) -> AppResult<()> {
    let target = resolve(option(args, "--connect").ok_or("--connect ADDR is required")?)?;
    let max_count: u64 = parsed(args, "--count", u64::MAX)?;
    let duration = seconds(args, 2.0)?;
    let concurrency: usize = parsed(args, "--concurrency", 8)?;
    let timeout = Duration::from_millis(parsed(args, "--timeout-ms", 10_000)?);
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let deadline = start + duration;
    let one = move || -> AppResult<()> {
        let mut stream = TcpStream::connect_timeout(&target, timeout)
            .map_err(|e| format!("connect {target}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut reader = BufReader::with_capacity(8 * 1024, stream);
        let length = read_response_head(&mut reader)?;
        let mut rest = Vec::with_capacity(length);
        reader
            .read_to_end(&mut rest)
            .map_err(|e| format!("receive: {e}"))?;
        if rest.len() != length {
            return Err(format!("body of {} bytes, expected {length}", rest.len()));
        }
        Ok(())
    };
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (claimed, done, errors, first_error) = (
                claimed.clone(),
                done.clone(),
                errors.clone(),
                first_error.clone(),
            );
            thread::spawn(move || {
                while Instant::now() < deadline
                    && claimed.fetch_add(1, Ordering::Relaxed) < max_count
                {
                    match one() {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            errors.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "worker thread panicked".to_string())?;
    }
    let elapsed = start.elapsed();
    let (done, errors) = (done.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    if let Some(error) = first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        eprintln!("first error: {error}");
    }
    println!(
        "connections={done} errors={errors} elapsed_us={} per_second={:.0}",
        elapsed.as_micros(),
        done as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `dns-query`: one question to a resolver, from this namespace (see `ambit_tests::dns`).
fn dns_query(args: &[String]) -> AppResult<()> {
    let server = resolve(option(args, "--server").ok_or("dns-query needs --server ADDR")?)?;
    let name = option(args, "--name").ok_or("dns-query needs --name NAME")?;
    let kind = option(args, "--type").unwrap_or("A");
    let timeout = Duration::from_millis(parsed(args, "--timeout-ms", 5000)?);
    let answer = ambit_tests::dns::query(server, name, kind, has_flag(args, "--tcp"), timeout)?;
    println!("{}", answer.line());
    Ok(())
}

/// `dns-server`: the fake upstream resolver (see `ambit_tests::dns`).
fn dns_server(args: &[String]) -> AppResult<()> {
    let listen = resolve(option(args, "--listen").unwrap_or("0.0.0.0:53"))?;
    let specs: Vec<&str> = args
        .windows(2)
        .filter(|pair| pair[0] == "--answer")
        .map(|pair| pair[1].as_str())
        .collect();
    ambit_tests::dns::serve(listen, ambit_tests::dns::parse_answers(&specs)?)
}
