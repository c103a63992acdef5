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
//! ```
//! Servers print `listening on ADDR` once bound and `accepted from PEER` per connection (the
//! source address the server saw: mesh tests check it is the client pod's IP). `client` sends
//! N bytes (a deterministic pseudo-random stream, or STR repeated), reads the echo until EOF and
//! prints `sent=N received=M sent_sha256=… received_sha256=… peer=ADDR`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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
        _ => Err("usage: ambit-testapp echo|http|client|http-get|dns-query|dns-server [options] (see source)".into()),
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
