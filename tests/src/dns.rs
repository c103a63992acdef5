//! DNS for the cluster-in-a-box: the client behind `ambit-testapp dns-query` and the fake
//! upstream resolver behind `ambit-testapp dns-server`, so tests resolve names from inside
//! pods without ever touching the machine's own resolvers.
//!
//! ```text
//! ambit-testapp dns-query --server ADDR --name NAME [--type A|AAAA] [--tcp] [--timeout-ms MS]
//!   → rcode=NOERROR answers=10.1.200.10,10.1.200.11 elapsed_ms=3
//! ambit-testapp dns-server --listen ADDR [--answer NAME=IP]...
//!   → listening on ADDR, then one `query NAME TYPE via udp|tcp from PEER` line per query
//! ```
//! The server answers the names it was given (A or AAAA by the IP's family; NOERROR without
//! records for the other family) and NXDOMAIN for everything else, over UDP and TCP.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// What `dns-query` prints, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// RCODE mnemonic: NOERROR, NXDOMAIN, SERVFAIL, ...
    pub rcode: String,
    /// A/AAAA records of the answer section, in order.
    pub answers: Vec<IpAddr>,
    pub elapsed_ms: u64,
}

impl DnsAnswer {
    pub fn line(&self) -> String {
        let answers: Vec<String> = self.answers.iter().map(IpAddr::to_string).collect();
        format!(
            "rcode={} answers={} elapsed_ms={}",
            self.rcode,
            answers.join(","),
            self.elapsed_ms
        )
    }

    pub fn parse(line: &str) -> Option<DnsAnswer> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        let answers = field("answers")?;
        Some(DnsAnswer {
            rcode: field("rcode")?.to_string(),
            answers: answers
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
            elapsed_ms: field("elapsed_ms")?.parse().ok()?,
        })
    }
}

/// RCODE mnemonics as dig prints them.
pub fn rcode_name(code: ResponseCode) -> String {
    match code.low() {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

fn record_type(kind: &str) -> Result<RecordType, String> {
    match kind.to_ascii_uppercase().as_str() {
        "A" => Ok(RecordType::A),
        "AAAA" => Ok(RecordType::AAAA),
        "TXT" => Ok(RecordType::TXT),
        "SRV" => Ok(RecordType::SRV),
        other => Err(format!(
            "unsupported record type {other:?} (A, AAAA, TXT, SRV)"
        )),
    }
}

/// Asks `server` one question over UDP or TCP; an error when no reply came within `timeout`.
pub fn query(
    server: SocketAddr,
    name: &str,
    kind: &str,
    tcp: bool,
    timeout: Duration,
) -> Result<DnsAnswer, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
    let id: u16 = rand::random();
    let mut request = Message::new(id, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(name, record_type(kind)?));
    let bytes = request.to_vec().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let reply = if tcp {
        exchange_tcp(server, &bytes, timeout)?
    } else {
        exchange_udp(server, &bytes, id, timeout)?
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let reply = Message::from_vec(&reply).map_err(|e| format!("malformed reply: {e}"))?;
    if reply.metadata.id != id {
        return Err(format!("reply id {} for query id {id}", reply.metadata.id));
    }
    let answers = reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    Ok(DnsAnswer {
        rcode: rcode_name(reply.metadata.response_code),
        answers,
        elapsed_ms,
    })
}

fn exchange_udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(bind).map_err(|e| format!("bind: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("connect {server}: {e}"))?;
    socket
        .send(request)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; 65535];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no reply from {server} within {timeout:?}"));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match socket.recv(&mut buffer) {
            Ok(n) if n >= 2 && buffer[..2] == id.to_be_bytes() => return Ok(buffer[..n].to_vec()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no reply from {server} within {timeout:?}"))
            }
            Err(e) => return Err(format!("receive from {server}: {e}")),
        }
    }
}

fn exchange_tcp(server: SocketAddr, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect_timeout(&server, timeout)
        .map_err(|e| format!("connect {server}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write_frame(&mut stream, request).map_err(|e| format!("send to {server}: {e}"))?;
    read_frame(&mut stream)
        .map_err(|e| format!("no reply from {server} over TCP within {timeout:?}: {e}"))
}

fn write_frame(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).map_err(std::io::Error::other)?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(message)
}

/// `NAME=IP` pairs for [`serve`]; names compare case-insensitively, trailing dot optional.
pub fn parse_answers(specs: &[&str]) -> Result<Vec<(String, IpAddr)>, String> {
    specs
        .iter()
        .map(|spec| {
            let (name, ip) = spec
                .split_once('=')
                .ok_or_else(|| format!("--answer {spec:?}: expected NAME=IP"))?;
            let ip = ip
                .parse()
                .map_err(|e| format!("--answer {spec:?}: bad IP: {e}"))?;
            Ok((normalise(name), ip))
        })
        .collect()
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Serves the fake resolver on `listen` (UDP and TCP) until the process is killed.
pub fn serve(listen: SocketAddr, answers: Vec<(String, IpAddr)>) -> Result<(), String> {
    let udp = UdpSocket::bind(listen).map_err(|e| format!("bind UDP {listen}: {e}"))?;
    let tcp = TcpListener::bind(listen).map_err(|e| format!("bind TCP {listen}: {e}"))?;
    println!("listening on {listen}");
    serve_on(udp, tcp, answers)
}

/// [`serve`] on sockets already bound.
pub fn serve_on(
    udp: UdpSocket,
    tcp: TcpListener,
    answers: Vec<(String, IpAddr)>,
) -> Result<(), String> {
    let answers = Arc::new(answers);
    let tcp_answers = answers.clone();
    thread::spawn(move || {
        for stream in tcp.incoming().flatten() {
            let answers = tcp_answers.clone();
            thread::spawn(move || serve_tcp_connection(stream, &answers));
        }
    });
    let mut buffer = vec![0u8; 65535];
    loop {
        let (n, peer) = match udp.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e) => {
                eprintln!("receive: {e}");
                continue;
            }
        };
        if let Some(reply) = reply_to(&buffer[..n], &answers, "udp", peer) {
            if let Err(e) = udp.send_to(&reply, peer) {
                eprintln!("send to {peer}: {e}");
            }
        }
    }
}

fn serve_tcp_connection(mut stream: TcpStream, answers: &[(String, IpAddr)]) {
    let Ok(peer) = stream.peer_addr() else { return };
    while let Ok(request) = read_frame(&mut stream) {
        let Some(reply) = reply_to(&request, answers, "tcp", peer) else {
            return;
        };
        if write_frame(&mut stream, &reply).is_err() {
            return;
        }
    }
}

fn reply_to(
    request: &[u8],
    answers: &[(String, IpAddr)],
    transport: &str,
    peer: SocketAddr,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    let question = request.queries.first()?;
    println!(
        "query {} {} via {transport} from {peer}",
        question.name, question.query_type
    );
    let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let asked = normalise(&question.name.to_ascii());
    let mut known = false;
    for (_, ip) in answers.iter().filter(|(name, _)| *name == asked) {
        known = true;
        let data = match (ip, question.query_type) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(question.name.clone(), 60, data));
    }
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_round_trip() {
        let answer = DnsAnswer {
            rcode: "NOERROR".into(),
            answers: vec!["10.1.200.10".parse().unwrap(), "fd00::1".parse().unwrap()],
            elapsed_ms: 3,
        };
        assert_eq!(
            answer.line(),
            "rcode=NOERROR answers=10.1.200.10,fd00::1 elapsed_ms=3"
        );
        assert_eq!(DnsAnswer::parse(&answer.line()), Some(answer));
        let empty = DnsAnswer::parse("rcode=SERVFAIL answers= elapsed_ms=0").unwrap();
        assert!(empty.answers.is_empty());
        assert_eq!(DnsAnswer::parse("rcode=NOERROR"), None);
    }

    /// The kernel picks a free UDP port, but the same TCP port may belong to a connection of
    /// a test running alongside (seen in CI: EADDRINUSE); try again with another port then.
    fn udp_and_tcp_on_one_loopback_port() -> (UdpSocket, TcpListener) {
        for _ in 0..100 {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                return (udp, tcp);
            }
        }
        panic!("no loopback port free for both UDP and TCP in 100 tries");
    }

    #[test]
    fn the_fake_resolver_answers_its_names_over_udp_and_tcp() {
        let (udp, tcp) = udp_and_tcp_on_one_loopback_port();
        let listen = udp.local_addr().unwrap();
        let answers =
            parse_answers(&["External.Example.=192.0.2.10", "v6.example=2001:db8::1"]).unwrap();
        thread::spawn(move || serve_on(udp, tcp, answers));
        let timeout = Duration::from_secs(2);
        let first = query(listen, "external.example.", "A", false, timeout).unwrap();
        assert_eq!(first.rcode, "NOERROR");
        assert_eq!(first.answers, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
        let tcp = query(listen, "EXTERNAL.example", "A", true, timeout).unwrap();
        assert_eq!(tcp.answers, first.answers);
        let other_family = query(listen, "external.example", "AAAA", false, timeout).unwrap();
        assert_eq!(
            (other_family.rcode.as_str(), other_family.answers.len()),
            ("NOERROR", 0)
        );
        let v6 = query(listen, "v6.example", "AAAA", true, timeout).unwrap();
        assert_eq!(v6.answers, vec!["2001:db8::1".parse::<IpAddr>().unwrap()]);
        let unknown = query(listen, "nope.example", "A", false, timeout).unwrap();
        assert_eq!(unknown.rcode, "NXDOMAIN");
        assert!(parse_answers(&["no-equals"]).is_err());
    }
}
