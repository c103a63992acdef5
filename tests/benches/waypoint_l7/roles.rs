//! The bench binary's other roles, run as their own processes inside the bench namespace
//! (`waypoint_l7 __role NAME …`), so the proxy's CPU is never mixed with theirs:
//!
//! - `loadgen`: an open-loop HTTP/1.1 load generator over N keep-alive connections, either
//!   plain TCP or each connection a CONNECT tunnel inside one HBONE (HTTP/2 + mTLS) connection,
//!   as ztunnel carries a pod's connections to a waypoint. Requests are due on a fixed schedule
//!   (a timer thread, 1 µs timer slack); a due request waits for a free connection if none is
//!   idle, and every latency runs from the *scheduled* time to the response's last byte, so a
//!   stall counts against every request it delays (no coordinated omission). It reads the
//!   watched proxy's CPU (/proc/PID/stat) at the window's edges and samples its RSS during it.
//!   Prints one `key=value` line.
//! - `hbone-backend`: the backend pod's inbound HBONE (what its ztunnel does): terminates
//!   HBONE on 15008 with the backend's certificate and joins each tunnel to the authority.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certs::{CurrentCertificate, SpiffeId, TrustBundle, WorkloadCertificate};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

type RoleResult<T> = Result<T, String>;
type Sender = SendRequest<Empty<Bytes>>;

/// Entry point of `__role NAME ARGS…`.
pub fn main(args: &[String]) -> std::process::ExitCode {
    let result = match args.first().map(String::as_str) {
        Some("loadgen") => loadgen(&args[1..]),
        Some("hbone-backend") => hbone_backend(&args[1..]),
        other => Err(format!("unknown role {other:?}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("waypoint_l7 role: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn required<'a>(args: &'a [String], name: &str) -> RoleResult<&'a str> {
    option(args, name).ok_or_else(|| format!("{name} is required"))
}

fn parsed<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> RoleResult<T> {
    option(args, name).map_or(Ok(default), |v| {
        v.parse().map_err(|_| format!("{name} {v:?} is not valid"))
    })
}

fn read(dir: &Path, file: &str) -> RoleResult<Vec<u8>> {
    std::fs::read(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))
}

/// tls.crt, tls.key and ca.crt as `ambit-ca issue` writes them.
fn credentials(dir: &Path, trust_domain: &str) -> RoleResult<(CurrentCertificate, TrustBundle)> {
    let chain = String::from_utf8(read(dir, "tls.crt")?).map_err(|e| e.to_string())?;
    let key = certs::material::private_key_from_pem(&read(dir, "tls.key")?, "tls.key")
        .map_err(|e| e.to_string())?;
    let certificate = WorkloadCertificate::from_pem(&chain, key).map_err(|e| e.to_string())?;
    let bundle = TrustBundle::from_pem(trust_domain, &read(dir, "ca.crt")?, "ca.crt")
        .map_err(|e| e.to_string())?;
    Ok((CurrentCertificate::new(certificate), bundle))
}

fn runtime() -> RoleResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

// ---- hbone-backend -------------------------------------------------------------------------

struct ToBackend;

impl hbone::Handler for ToBackend {
    type Upstream = TcpStream;
    type Context = ();

    async fn connect(
        &self,
        request: &hbone::InboundRequest,
    ) -> Result<(TcpStream, ()), hbone::Refusal> {
        let tcp = TcpStream::connect(request.authority)
            .await
            .map_err(|e| hbone::Refusal::unavailable(format!("{}: {e}", request.authority)))?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, ()))
    }

    fn finished(&self, _: hbone::InboundRequest, _: (), _: hbone::CopyReport) {}
}

fn hbone_backend(args: &[String]) -> RoleResult<()> {
    let listen: SocketAddr = required(args, "--listen")?
        .parse()
        .map_err(|_| "--listen is not ip:port")?;
    let cert_dir = PathBuf::from(required(args, "--cert-dir")?);
    let (certificate, bundle) = credentials(&cert_dir, required(args, "--trust-domain")?)?;
    let tls = certs::tls::server_config(certificate, &bundle).map_err(|e| e.to_string())?;
    // Like the backend's ztunnel: all cores (a multi-thread runtime).
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        let config = hbone::ServerConfig {
            check_authority_ip: false,
            ..hbone::ServerConfig::default()
        };
        let server = hbone::Server::forwarding(config, tls, ToBackend);
        println!("hbone-backend listening on {listen}");
        server
            .serve(listener, hbone::CancellationToken::new())
            .await;
        Ok(())
    })
}

// ---- loadgen -------------------------------------------------------------------------------

enum Transport {
    Plain(SocketAddr),
    Hbone {
        connection: hbone::Connection,
        authority: SocketAddr,
    },
}

impl Transport {
    async fn open(&self) -> RoleResult<Sender> {
        match self {
            Transport::Plain(addr) => {
                let tcp = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                handshake(tcp).await
            }
            Transport::Hbone {
                connection,
                authority,
            } => {
                let tunnel = connection
                    .open(&hbone::ConnectRequest::new(*authority))
                    .await
                    .map_err(|e| format!("CONNECT {authority}: {e}"))?;
                handshake(tunnel).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> RoleResult<Sender>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

struct RequestShape {
    path: String,
    host: String,
    header: Option<(String, String)>,
}

async fn request(sender: &mut Sender, shape: &RequestShape) -> RoleResult<()> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let mut builder =
        http::Request::get(shape.path.as_str()).header(http::header::HOST, &shape.host);
    if let Some((name, value)) = &shape.header {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

enum Event {
    Done {
        index: usize,
        result: RoleResult<()>,
        finished: Instant,
        /// The connection, unless the request broke it.
        sender: Option<Sender>,
    },
    /// A replacement for a broken connection.
    Reopened(Sender),
}

fn ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime, stime: fields 14 and 15 (1-based), i.e. 11 and 12 after the state field.
    field(11) + field(12)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn loadgen(args: &[String]) -> RoleResult<()> {
    let connect: SocketAddr = required(args, "--connect")?
        .parse()
        .map_err(|_| "--connect is not ip:port")?;
    let rate: f64 = parsed(args, "--rate", 2000.0)?;
    let seconds: f64 = parsed(args, "--seconds", 3.0)?;
    let connections: usize = parsed(args, "--connections", 16)?;
    let warmup: usize = parsed(args, "--warmup", 100)?;
    let watch: u32 = parsed(args, "--watch", 0)?;
    let ticks_per_second: f64 = parsed(args, "--clk-tck", 100.0)?;
    let header = option(args, "--header")
        .and_then(|h| h.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.to_string()));
    let shape = Arc::new(RequestShape {
        path: option(args, "--path").unwrap_or("/").to_string(),
        host: option(args, "--host").unwrap_or("backend").to_string(),
        header,
    });
    let count = (rate * seconds).round().max(1.0) as usize;
    let hbone = match required(args, "--transport")? {
        "plain" => None,
        "hbone" => Some((
            required(args, "--authority")?
                .parse::<SocketAddr>()
                .map_err(|_| "--authority is not ip:port")?,
            PathBuf::from(required(args, "--cert-dir")?),
            required(args, "--server-identity")?
                .parse::<SpiffeId>()
                .map_err(|e| format!("--server-identity: {e}"))?,
        )),
        other => return Err(format!("--transport {other:?}: plain or hbone")),
    };

    runtime()?.block_on(async move {
        let transport = Arc::new(match hbone {
            None => Transport::Plain(connect),
            Some((authority, cert_dir, server_identity)) => {
                let (certificate, bundle) = credentials(&cert_dir, server_identity.trust_domain())?;
                let tls = certs::tls::client_config(certificate, &bundle, vec![server_identity])
                    .map_err(|e| e.to_string())?;
                let tcp = TcpStream::connect(connect)
                    .await
                    .map_err(|e| format!("connect {connect}: {e}"))?;
                let connection = hbone::Connection::handshake(
                    tcp,
                    Arc::new(tls),
                    &hbone::ClientConfig::default(),
                    0,
                )
                .await
                .map_err(|e| format!("HBONE handshake with {connect}: {e}"))?;
                Transport::Hbone {
                    connection,
                    authority,
                }
            }
        });
        let mut idle = Vec::with_capacity(connections);
        for _ in 0..connections {
            idle.push(transport.open().await?);
        }
        // Closed-loop warm-up on every connection: handshakes, pools and caches warm everywhere.
        let warm = idle.drain(..).map(|mut sender| {
            let shape = shape.clone();
            tokio::spawn(async move {
                for _ in 0..warmup.div_ceil(connections) {
                    request(&mut sender, &shape).await?;
                }
                Ok::<_, String>(sender)
            })
        });
        for task in warm.collect::<Vec<_>>() {
            idle.push(task.await.map_err(|e| e.to_string())??);
        }

        let cpu_before = ticks(watch);
        let sampling = Arc::new(AtomicBool::new(true));
        let peak_rss = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (sampling, peak_rss) = (sampling.clone(), peak_rss.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    peak_rss.fetch_max(status_kb(watch, "VmRSS:"), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now() + Duration::from_millis(2);
        let scheduled = move |i: usize| start + interval.mul_f64(i as f64);
        let (tick_tx, mut tick_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let ticker = std::thread::spawn(move || {
            // Wake up on time: the default 50 µs timer slack would delay every send.
            let _ = nix::sys::prctl::set_timerslack(1);
            for i in 0..count {
                let now = Instant::now();
                let at = scheduled(i);
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tick_tx.send(i).is_err() {
                    return;
                }
            }
        });
        let (event_tx, mut event_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let mut pending = VecDeque::new();
        let mut latencies = Vec::with_capacity(count);
        let (mut failed, mut first_error) = (0usize, None::<String>);
        let mut ticks_open = true;
        let deadline = start + Duration::from_secs_f64(seconds) + Duration::from_secs(30);
        while latencies.len() < count {
            tokio::select! {
                tick = tick_rx.recv(), if ticks_open => match tick {
                    Some(i) => pending.push_back(i),
                    None => ticks_open = false,
                },
                Some(event) = event_rx.recv() => match event {
                    Event::Done { index, result, finished, sender } => {
                        latencies.push(finished.saturating_duration_since(scheduled(index)));
                        if let Err(error) = result {
                            failed += 1;
                            first_error.get_or_insert(error);
                        }
                        match sender {
                            Some(sender) => idle.push(sender),
                            None => {
                                let (transport, events) = (transport.clone(), event_tx.clone());
                                tokio::spawn(async move {
                                    while Instant::now() < deadline {
                                        if let Ok(sender) = transport.open().await {
                                            let _ = events.send(Event::Reopened(sender));
                                            return;
                                        }
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                });
                            }
                        }
                    }
                    Event::Reopened(sender) => idle.push(sender),
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(format!("{} of {count} requests unanswered 30 s after the window", count - latencies.len()));
                }
            }
            while !pending.is_empty() && !idle.is_empty() {
                let (Some(index), Some(mut sender)) = (pending.pop_front(), idle.pop()) else {
                    break;
                };
                let (shape, events) = (shape.clone(), event_tx.clone());
                tokio::spawn(async move {
                    let result = request(&mut sender, &shape).await;
                    let finished = Instant::now();
                    let usable = !sender.is_closed();
                    let _ = events.send(Event::Done {
                        index,
                        result,
                        finished,
                        sender: usable.then_some(sender),
                    });
                });
            }
        }
        let elapsed = start.elapsed();
        let cpu_after = ticks(watch);
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.join();
        let _ = ticker.join();

        latencies.sort_unstable();
        let pct = |p: f64| {
            let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[index].as_secs_f64() * 1e6
        };
        let cpu_us = (cpu_after.saturating_sub(cpu_before)) as f64 / ticks_per_second * 1e6;
        println!(
            "requests={count} failed={failed} achieved_per_s={:.0} p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0} proxy_cpu_us={cpu_us:.0} proxy_rss_peak_kb={} proxy_hwm_kb={}",
            count as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(0.999),
            pct(1.0),
            peak_rss.load(Ordering::Relaxed),
            status_kb(watch, "VmHWM:"),
        );
        if let Some(error) = first_error {
            println!("first_error: {error}");
        }
        Ok(())
    })
}
