//! The proxy end to end on loopback: real UDP and TCP sockets, a fake upstream resolver.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::metrics::DnsMetrics;
use super::names::SearchPath;
use super::query::PodResolver;
use super::server::{self, Limits};

const EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Answers `external.example.` A with [`EXTERNAL`], NXDOMAIN otherwise, over UDP and TCP on
/// the same loopback port.
async fn fake_upstream() -> SocketAddr {
    // UDP and TCP on the same port, as in a pod; an ephemeral UDP port may already be taken
    // for TCP by another test, so try again with another one.
    let (udp, tcp, addr) = {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp, addr),
                Err(_) if attempts < 20 => attempts += 1,
                Err(error) => panic!("no port free for both UDP and TCP: {error}"),
            }
        }
    };
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65535];
        loop {
            let (n, peer) = udp.recv_from(&mut buffer).await.unwrap();
            let reply = upstream_reply(&buffer[..n]);
            udp.send_to(&reply, peer).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            tokio::spawn(async move {
                while let Ok(length) = stream.read_u16().await {
                    let mut query = vec![0u8; usize::from(length)];
                    stream.read_exact(&mut query).await.unwrap();
                    let reply = upstream_reply(&query);
                    stream.write_u16(reply.len() as u16).await.unwrap();
                    stream.write_all(&reply).await.unwrap();
                }
            });
        }
    });
    addr
}

fn upstream_reply(query: &[u8]) -> Vec<u8> {
    let request = Message::from_vec(query).unwrap();
    let mut reply = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    reply.add_queries(request.queries.clone());
    let question = &request.queries[0];
    if question
        .name
        .to_ascii()
        .eq_ignore_ascii_case("external.example.")
    {
        reply.add_answer(Record::from_rdata(
            question.name.clone(),
            60,
            RData::A(A(EXTERNAL)),
        ));
    } else {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().unwrap()
}

/// A proxy for a pod in `shop` on loopback; returns its UDP and TCP address.
async fn proxy(upstreams: Vec<SocketAddr>, metrics: DnsMetrics) -> (SocketAddr, CancellationToken) {
    let snapshot = Arc::new(super::answer::tests::snapshot());
    let resolver = Arc::new(PodResolver {
        pod_name: "frontend-0".into(),
        pod_namespace: "shop".into(),
        search: SearchPath::new("shop", "cluster.local"),
        snapshot: Arc::new(move || snapshot.clone()),
        forwarder: Forwarder::new(upstreams, Duration::from_millis(600)),
        metrics,
    });
    // UDP and TCP on the same port, as in a pod; an ephemeral UDP port may already be taken
    // for TCP by another test, so try again with another one.
    let (udp, tcp, addr) = {
        let mut attempts = 0;
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp, addr),
                Err(_) if attempts < 20 => attempts += 1,
                Err(error) => panic!("no port free for both UDP and TCP: {error}"),
            }
        }
    };
    let limits = Arc::new(Limits::new(Arc::default()));
    let stop = CancellationToken::new();
    tokio::spawn(server::serve_udp(
        udp,
        resolver.clone(),
        limits.clone(),
        stop.clone(),
    ));
    tokio::spawn(server::serve_tcp(tcp, resolver, limits, stop.clone()));
    (addr, stop)
}

fn query_bytes(id: u16, name: &str, kind: RecordType) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    message.to_vec().unwrap()
}

async fn ask_udp(server: SocketAddr, request: &[u8]) -> Message {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(request, server).await.unwrap();
    let mut buffer = vec![0u8; 65535];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer))
        .await
        .expect("the proxy replies")
        .unwrap();
    assert_eq!(from, server);
    Message::from_vec(&buffer[..n]).unwrap()
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn services_are_answered_and_the_rest_forwarded_over_udp() {
    let upstream = fake_upstream().await;
    let metrics = DnsMetrics::default();
    let (server, _stop) = proxy(vec![upstream], metrics.clone()).await;

    let reply = ask_udp(
        server,
        &query_bytes(1, "cart.shop.svc.cluster.local.", RecordType::A),
    )
    .await;
    assert_eq!(reply.metadata.id, 1);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&reply), vec![IpAddr::from([10, 96, 0, 7])]);

    let reply = ask_udp(server, &query_bytes(2, "cart.", RecordType::A)).await;
    assert_eq!(addresses(&reply), vec![IpAddr::from([10, 96, 0, 7])]);

    let reply = ask_udp(server, &query_bytes(3, "external.example.", RecordType::A)).await;
    assert_eq!(reply.metadata.id, 3, "the client's id is restored");
    assert_eq!(addresses(&reply), vec![IpAddr::V4(EXTERNAL)]);

    let reply = ask_udp(
        server,
        &query_bytes(4, "missing.shop.svc.cluster.local.", RecordType::A),
    )
    .await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "unknown names are the upstream's to deny"
    );

    let text = encode(&metrics);
    assert!(text.contains("answered_by=\"ztunnel\""), "{text}");
    assert!(
        text.contains("answered_by=\"upstream\",response_code=\"NXDOMAIN\"} 1"),
        "{text}"
    );
    assert!(text.contains("istio_dns_upstream_requests_total{request_protocol=\"udp\",request_query_type=\"A\"} 2"), "{text}");
}

#[tokio::test]
async fn tcp_serves_several_queries_per_connection() {
    let upstream = fake_upstream().await;
    let (server, _stop) = proxy(vec![upstream], DnsMetrics::default()).await;
    let mut stream = TcpStream::connect(server).await.unwrap();
    // Pipelined, as glibc does with A and AAAA.
    for (id, name) in [(7u16, "cart.other."), (8, "external.example.")] {
        let query = query_bytes(id, name, RecordType::A);
        stream.write_u16(query.len() as u16).await.unwrap();
        stream.write_all(&query).await.unwrap();
    }
    let mut replies = Vec::new();
    for _ in 0..2 {
        let length = stream.read_u16().await.unwrap();
        let mut reply = vec![0u8; usize::from(length)];
        stream.read_exact(&mut reply).await.unwrap();
        replies.push(Message::from_vec(&reply).unwrap());
    }
    assert_eq!(replies[0].metadata.id, 7);
    assert_eq!(addresses(&replies[0]), vec![IpAddr::from([10, 96, 0, 8])]);
    assert_eq!(replies[1].metadata.id, 8);
    assert_eq!(addresses(&replies[1]), vec![IpAddr::V4(EXTERNAL)]);
}

#[tokio::test]
async fn tcp_that_is_not_dns_is_closed_at_once() {
    let upstream = fake_upstream().await;
    let (server, _stop) = proxy(vec![upstream], DnsMetrics::default()).await;
    // An HTTP request read as DNS framing announces an 18 KiB message: not a query.
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "a non-DNS client must not hold the connection"
    );
    // A query whose body never comes is dropped after the message deadline, not the idle one.
    let mut trickle = TcpStream::connect(server).await.unwrap();
    trickle.write_u16(40).await.unwrap();
    trickle.write_all(&[0u8; 10]).await.unwrap();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle.read_to_end(&mut sink)).await;
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn dead_upstreams_give_servfail_within_the_budget() {
    // Nothing listens on these ports: one refuses (ICMP), both are tried, SERVFAIL follows.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let also_dead = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics = DnsMetrics::default();
    let (server, _stop) = proxy(vec![dead, also_dead], metrics.clone()).await;
    let started = Instant::now();
    let reply = ask_udp(server, &query_bytes(9, "external.example.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(reply.queries.len(), 1, "the question is echoed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // Service names still resolve without any upstream.
    let reply = ask_udp(server, &query_bytes(10, "cart.", RecordType::A)).await;
    assert_eq!(addresses(&reply), vec![IpAddr::from([10, 96, 0, 7])]);
    let text = encode(&metrics);
    assert!(text.contains("istio_dns_upstream_failures_total{request_protocol=\"udp\",request_query_type=\"A\",error=\"io\"} 2"), "{text}");
    assert!(
        text.contains("answered_by=\"error\",response_code=\"SERVFAIL\"} 1"),
        "{text}"
    );

    // No upstream at all.
    let (server, _stop) = proxy(Vec::new(), DnsMetrics::default()).await;
    let reply = ask_udp(server, &query_bytes(11, "external.example.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_silent_upstream_times_out_into_servfail() {
    // Bound but never read: the query is swallowed, as by a black-holed resolver.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (server, _stop) = proxy(vec![silent.local_addr().unwrap()], DnsMetrics::default()).await;
    let started = Instant::now();
    let reply = ask_udp(server, &query_bytes(12, "external.example.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}

#[tokio::test]
async fn malformed_queries_get_formerr_and_responses_are_dropped() {
    let (server, _stop) = proxy(Vec::new(), DnsMetrics::default()).await;
    // A header claiming one question, then garbage.
    let mut garbage = query_bytes(13, "cart.", RecordType::A);
    garbage.truncate(14);
    let reply = ask_udp(server, &garbage).await;
    assert_eq!(reply.metadata.id, 13);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // Two questions.
    let mut two = Message::new(14, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(
        Name::from_ascii("cart.").unwrap(),
        RecordType::A,
    ));
    two.add_query(Query::query(
        Name::from_ascii("cart.").unwrap(),
        RecordType::AAAA,
    ));
    let reply = ask_udp(server, &two.to_vec().unwrap()).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // A response sent to the proxy, and a runt: no reply; the proxy keeps serving.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = query_bytes(15, "cart.", RecordType::A);
    response[2] |= 0x80;
    client.send_to(&response, server).await.unwrap();
    client.send_to(&[1, 2, 3], server).await.unwrap();
    let mut buffer = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), client.recv_from(&mut buffer))
            .await
            .is_err()
    );
    let reply = ask_udp(server, &query_bytes(16, "cart.", RecordType::A)).await;
    assert_eq!(addresses(&reply), vec![IpAddr::from([10, 96, 0, 7])]);
}

#[tokio::test]
async fn stopping_closes_the_listeners() {
    let (server, stop) = proxy(Vec::new(), DnsMetrics::default()).await;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(server).await.is_err(),
        "TCP listener closed"
    );
}

fn encode(metrics: &DnsMetrics) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn the_node_wide_caps_hold_across_pods() {
    let node = Arc::new(server::NodeDnsLimits::with_caps(2, 1));
    let (pod_a, pod_b) = (Limits::new(node.clone()), Limits::new(node));
    let first = pod_a.query().expect("room on the node");
    let _second = pod_b.query().expect("room on the node");
    // Each pod is far below its own cap, but the node is full.
    assert!(pod_a.query().is_none());
    assert!(pod_b.query().is_none());
    drop(first);
    assert!(
        pod_b.query().is_some(),
        "a finished query frees the node's slot"
    );
    let connection = pod_a.tcp_connection().expect("room on the node");
    assert!(pod_b.tcp_connection().is_none());
    drop(connection);
    assert!(pod_b.tcp_connection().is_some());
}
