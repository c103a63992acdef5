//! Forwarding queries ztunnel does not answer to the node's upstream resolvers.
//!
//! Queries are forwarded from ztunnel's own network namespace (the node's), not from the
//! pod's: the upstreams are *the node's* resolvers (`--dns-upstream`, else the nameservers of
//! the node's /etc/resolv.conf), and only the node is sure to reach them — a node-local stub
//! such as systemd-resolved's 127.0.0.53 does not even exist inside a pod. The cost is that
//! the upstream sees the node's address rather than the pod's.
//!
//! The query is relayed byte for byte (EDNS options, DO bit and all) except for its id, which
//! is replaced by a random one per attempt and restored in the reply; each attempt uses a
//! fresh socket (random source port), so a blind spoofer has to guess both.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// Where forwarded queries go and how long they may take.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
    /// Total time one query may spend on the upstreams, all attempts together; kept below the
    /// usual client timeout (glibc: 5 s) so the pod gets SERVFAIL rather than silence.
    timeout: Duration,
}

/// The transport of a query; replies use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Why one upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    #[error("upstream {upstream} did not answer within {timeout:?}; check that it is reachable from the node and serves DNS")]
    Timeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    #[error("upstream {upstream} failed over {transport}: {source}; check the address (--dns-upstream) and that a resolver listens there")]
    Io {
        upstream: SocketAddr,
        transport: &'static str,
        source: io::Error,
    },
    #[error("upstream {upstream} sent a malformed {transport} reply ({reason})")]
    BadReply {
        upstream: SocketAddr,
        transport: &'static str,
        reason: &'static str,
    },
}

impl AttemptError {
    /// Short label for the failure metric.
    pub fn kind(&self) -> &'static str {
        match self {
            AttemptError::Timeout { .. } => "timeout",
            AttemptError::Io { .. } => "io",
            AttemptError::BadReply { .. } => "bad_reply",
        }
    }
}

/// Why a query could not be forwarded at all: the pod gets SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream DNS resolver is configured: pass --dns-upstream (DNS_UPSTREAM) or give the node a nameserver in /etc/resolv.conf")]
    NoUpstream,
    #[error("{}", join(.0))]
    Failed(Vec<AttemptError>),
}

fn join(errors: &[AttemptError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Sends `query` to the upstreams in order until one answers; returns its reply with the
    /// client's id. Each upstream gets an equal share of what is left of the time budget, so
    /// a dead first upstream does not starve the others and the total stays bounded.
    pub async fn forward(
        &self,
        query: &[u8],
        transport: Transport,
        on_attempt_failed: impl Fn(&AttemptError),
    ) -> Result<Vec<u8>, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        if query.len() < 12 {
            // Callers parse the query first; this only keeps the id handling total.
            return Err(ForwardError::Failed(Vec::new()));
        }
        let deadline = Instant::now() + self.timeout;
        let mut failures = Vec::new();
        for (index, &upstream) in self.upstreams.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(self.upstreams.len() - index).unwrap_or(1);
            let id: u16 = rand::random();
            let mut relayed = query.to_vec();
            relayed[..2].copy_from_slice(&id.to_be_bytes());
            let attempt = async {
                match transport {
                    Transport::Udp => exchange_udp(upstream, &relayed, id).await,
                    Transport::Tcp => exchange_tcp(upstream, &relayed, id).await,
                }
            };
            let result = match tokio::time::timeout(share, attempt).await {
                Ok(result) => result,
                Err(_) => Err(AttemptError::Timeout {
                    upstream,
                    timeout: share,
                }),
            };
            match result {
                Ok(mut reply) => {
                    reply[..2].copy_from_slice(&query[..2]);
                    return Ok(reply);
                }
                Err(error) => {
                    on_attempt_failed(&error);
                    failures.push(error);
                }
            }
        }
        Err(ForwardError::Failed(failures))
    }
}

fn unspecified(upstream: SocketAddr) -> SocketAddr {
    match upstream.ip() {
        IpAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        IpAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Whether `reply` is the response to the query we sent with `id`.
fn is_reply_to(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12 && reply[..2] == id.to_be_bytes() && reply[2] & 0x80 != 0
}

async fn exchange_udp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Vec<u8>, AttemptError> {
    let io = |source| AttemptError::Io {
        upstream,
        transport: "udp",
        source,
    };
    let socket = UdpSocket::bind(unspecified(upstream)).await.map_err(io)?;
    // Connected: the kernel drops datagrams from anyone else, and reports ICMP errors (port
    // unreachable → ECONNREFUSED) at once instead of letting the attempt time out.
    socket.connect(upstream).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let read = socket.recv(&mut buffer).await.map_err(io)?;
        if is_reply_to(&buffer[..read], id) {
            buffer.truncate(read);
            return Ok(buffer);
        }
        // A late reply to an earlier query, or garbage: keep waiting for ours.
        tracing::debug!(%upstream, bytes = read, "ignoring a datagram that is not the reply to our query");
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Vec<u8>, AttemptError> {
    let io = |source| AttemptError::Io {
        upstream,
        transport: "tcp",
        source,
    };
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let _ = stream.set_nodelay(true);
    let length = u16::try_from(query.len()).map_err(|_| AttemptError::BadReply {
        upstream,
        transport: "tcp",
        reason: "query longer than 65535 bytes",
    })?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io)?;
    let length = stream.read_u16().await.map_err(io)?;
    let mut reply = vec![0u8; usize::from(length)];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if !is_reply_to(&reply, id) {
        return Err(AttemptError::BadReply {
            upstream,
            transport: "tcp",
            reason: "not a response to the query",
        });
    }
    Ok(reply)
}

/// The node's resolvers: `nameserver` lines of a resolv.conf, port 53. Link-local IPv6
/// addresses with a zone (`fe80::1%eth0`) are skipped: a SocketAddr cannot carry the zone.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// `configured` when given, else the nameservers of `resolv_conf`.
pub(crate) fn upstreams_or_system(
    configured: &[SocketAddr],
    resolv_conf: &Path,
) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    match std::fs::read_to_string(resolv_conf) {
        Ok(text) => parse_resolv_conf(&text),
        Err(error) => {
            tracing::warn!(%error, path = %resolv_conf.display(), "cannot read the node's resolvers; pass --dns-upstream");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text =
            "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver  2001:db8::1 \n\
                    nameserver fe80::1%eth0\n; nameserver 1.1.1.1\noptions ndots:5\nnameserver\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap(),
            ]
        );
        let configured = ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()];
        assert_eq!(
            upstreams_or_system(&configured, Path::new("/nonexistent")),
            configured
        );
        assert!(upstreams_or_system(&[], Path::new("/nonexistent/resolv.conf")).is_empty());
    }

    #[test]
    fn replies_are_matched_by_id_and_qr() {
        let mut reply = vec![0u8; 12];
        reply[..2].copy_from_slice(&7u16.to_be_bytes());
        assert!(!is_reply_to(&reply, 7), "a query, not a reply");
        reply[2] = 0x80;
        assert!(is_reply_to(&reply, 7));
        assert!(!is_reply_to(&reply, 8));
        assert!(!is_reply_to(&reply[..11], 7));
    }
}
