//! Deciding who answers a query, and building the messages ztunnel answers itself.

use std::net::IpAddr;

use discovery::Snapshot;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::names::{lower_labels, SearchPath};

/// TTL of the records ztunnel answers: short, so a Service's new VIP is picked up quickly,
/// as Istio does.
pub(crate) const ANSWER_TTL: u32 = 30;
/// The largest UDP payload ztunnel advertises and sends (the DNS flag day 2020 value, safe
/// from IP fragmentation).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// What a UDP client without EDNS can take (RFC 1035).
const CLASSIC_UDP_PAYLOAD: usize = 512;

/// Who answers a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The name is a Service with a VIP: these are its addresses of the asked family (empty:
    /// the Service exists but has no VIP of that family, answered NOERROR without records).
    Service(Vec<IpAddr>),
    /// Not ours: another record type, another class, an unknown or headless name.
    Forward,
}

/// Looks a question up in the cluster view. Only A and AAAA of Services with a VIP are
/// answered here; everything else (SRV, TXT, headless Services whose per-pod records only
/// the cluster DNS knows, external names) goes to the upstream resolvers.
pub(crate) fn lookup(
    snapshot: &Snapshot,
    search: &SearchPath,
    query: &hickory_proto::op::Query,
) -> Lookup {
    let family_v4 = match query.query_type {
        RecordType::A => true,
        RecordType::AAAA => false,
        _ => return Lookup::Forward,
    };
    if query.query_class != DNSClass::IN {
        return Lookup::Forward;
    }
    for candidate in search.candidates(&lower_labels(&query.name)) {
        let Some(service) = snapshot.service(&candidate.namespace, &candidate.name) else {
            continue;
        };
        if service.vips.is_empty() {
            // Headless: the cluster DNS knows its endpoints and per-pod names.
            return Lookup::Forward;
        }
        let addresses = service
            .vips
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == family_v4)
            .collect();
        return Lookup::Service(addresses);
    }
    Lookup::Forward
}

/// The reply to `request` (one question, already validated) with `addresses` as records
/// owned by the name exactly as asked (resolvers may check the case they randomised).
/// `udp` limits the size to what the client accepts; too large sets TC so it retries on TCP.
pub(crate) fn service_answer(
    request: &Message,
    addresses: &[IpAddr],
    udp: bool,
) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    let mut response = response_to(request, ResponseCode::NoError);
    // Authoritative: the cluster view is the source of truth for Service names.
    response.metadata.authoritative = true;
    if let Some(query) = request.queries.first() {
        for ip in addresses {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            response.add_answer(Record::from_rdata(query.name.clone(), ANSWER_TTL, data));
        }
    }
    let bytes = response.to_vec()?;
    if udp && bytes.len() > udp_limit(request) {
        let mut truncated = response_to(request, ResponseCode::NoError);
        truncated.metadata.authoritative = true;
        truncated.metadata.truncation = true;
        return truncated.to_vec();
    }
    Ok(bytes)
}

/// An error reply that echoes the question (SERVFAIL, REFUSED, ...).
pub(crate) fn error_answer(
    request: &Message,
    code: ResponseCode,
) -> Result<Vec<u8>, hickory_proto::ProtoError> {
    response_to(request, code).to_vec()
}

/// A 12-byte reply carrying only the header of `request` with `code`, for requests that
/// cannot be parsed (FORMERR) or not served (NOTIMP). `None` when there is no header to
/// answer, or the datagram is itself a response (answering it could start a loop).
pub(crate) fn header_only_answer(request: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let mut reply = vec![0u8; 12];
    reply[..2].copy_from_slice(&request[..2]);
    // QR=1, opcode and RD copied from the request.
    reply[2] = 0x80 | (request[2] & 0x79);
    // RA=1 (we recurse through the upstreams), RCODE.
    reply[3] = 0x80 | (code.low() & 0x0f);
    Some(reply)
}

/// The response skeleton for `request`: same id, opcode, RD, CD, the question echoed, an OPT
/// record when the client sent one.
fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

/// The largest UDP reply the client of `request` accepts, capped at ours.
fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        Some(edns) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
        None => CLASSIC_UDP_PAYLOAD,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use discovery::{Objects, Service, SnapshotOptions};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn service(namespace: &str, name: &str, vips: &[IpAddr]) -> Service {
        Service {
            name: name.into(),
            namespace: namespace.into(),
            vips: vips.to_vec(),
            ports: Vec::new(),
            selector: None,
            labels: Default::default(),
            use_waypoint: None,
        }
    }

    pub(crate) fn snapshot() -> Snapshot {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 7));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7));
        let objects = Objects {
            services: vec![
                service("shop", "cart", &[v4]),
                service("shop", "dual", &[v4, v6]),
                service("shop", "headless", &[]),
                service("other", "cart", &[IpAddr::V4(Ipv4Addr::new(10, 96, 0, 8))]),
            ],
            ..Objects::default()
        };
        Snapshot::build(objects, &SnapshotOptions::default()).0
    }

    fn question(name: &str, kind: RecordType) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), kind)
    }

    #[test]
    fn lookups_by_name_and_type() {
        let snapshot = snapshot();
        let path = SearchPath::new("shop", "cluster.local");
        let v4 = |d| IpAddr::V4(Ipv4Addr::new(10, 96, 0, d));
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7));
        let table = [
            (
                "cart.shop.svc.cluster.local.",
                RecordType::A,
                Lookup::Service(vec![v4(7)]),
            ),
            ("cart.", RecordType::A, Lookup::Service(vec![v4(7)])),
            ("cart.other.", RecordType::A, Lookup::Service(vec![v4(8)])),
            (
                "cart.other.shop.svc.cluster.local.",
                RecordType::A,
                Lookup::Service(vec![v4(8)]),
            ),
            // Exists, no IPv6 VIP: NOERROR without records (not NXDOMAIN, not forwarded).
            (
                "cart.shop.svc.cluster.local.",
                RecordType::AAAA,
                Lookup::Service(vec![]),
            ),
            (
                "dual.shop.svc.cluster.local.",
                RecordType::AAAA,
                Lookup::Service(vec![v6]),
            ),
            (
                "dual.shop.svc.cluster.local.",
                RecordType::A,
                Lookup::Service(vec![v4(7)]),
            ),
            // Not ours.
            (
                "headless.shop.svc.cluster.local.",
                RecordType::A,
                Lookup::Forward,
            ),
            (
                "cart.shop.svc.cluster.local.",
                RecordType::SRV,
                Lookup::Forward,
            ),
            (
                "cart.shop.svc.cluster.local.",
                RecordType::TXT,
                Lookup::Forward,
            ),
            (
                "missing.shop.svc.cluster.local.",
                RecordType::A,
                Lookup::Forward,
            ),
            ("www.example.com.", RecordType::A, Lookup::Forward),
        ];
        for (name, kind, expected) in table {
            assert_eq!(
                lookup(&snapshot, &path, &question(name, kind)),
                expected,
                "{name} {kind}"
            );
        }
        let mut chaos = question("cart.", RecordType::A);
        chaos.set_query_class(DNSClass::CH);
        assert_eq!(lookup(&snapshot, &path, &chaos), Lookup::Forward);
    }

    fn request(name: &str, kind: RecordType, edns: bool) -> Message {
        let mut message = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(question(name, kind));
        if edns {
            message.set_edns(Edns::new());
        }
        message
    }

    #[test]
    fn answers_echo_the_question_as_asked() {
        let request = request("Cart.Shop.svc.cluster.local.", RecordType::A, true);
        let ip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 7));
        let bytes = service_answer(&request, &[ip], true).unwrap();
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.metadata.id, 0xbeef);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
        assert!(!reply.metadata.truncation);
        assert_eq!(reply.queries, request.queries);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].name.to_ascii(),
            "Cart.Shop.svc.cluster.local."
        );
        assert_eq!(reply.answers[0].ttl, ANSWER_TTL);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A(Ipv4Addr::new(10, 96, 0, 7)))
        );
        assert!(
            reply.edns.is_some(),
            "an EDNS query gets an OPT record back"
        );

        let empty = service_answer(&request, &[], true).unwrap();
        let reply = Message::from_vec(&empty).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
    }

    #[test]
    fn oversized_udp_answers_are_truncated_for_tcp_retry() {
        let request = request("cart.", RecordType::AAAA, false);
        let many: Vec<IpAddr> = (0..40u16)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)))
            .collect();
        let udp = Message::from_vec(&service_answer(&request, &many, true).unwrap()).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp = Message::from_vec(&service_answer(&request, &many, false).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 40);
    }

    #[test]
    fn error_replies() {
        let request = request("www.example.com.", RecordType::A, false);
        let bytes = error_answer(&request, ResponseCode::ServFail).unwrap();
        let reply = Message::from_vec(&bytes).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries, request.queries);
        assert!(reply.edns.is_none());

        let raw = request.to_vec().unwrap();
        let header = header_only_answer(&raw, ResponseCode::FormErr).unwrap();
        let reply = Message::from_vec(&header).unwrap();
        assert_eq!(reply.metadata.id, 0xbeef);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert!(reply.metadata.recursion_desired);
        assert!(reply.queries.is_empty());
        // Too short to have a header, or a response: no reply at all.
        assert_eq!(header_only_answer(&raw[..11], ResponseCode::FormErr), None);
        let response = error_answer(&request, ResponseCode::NoError).unwrap();
        assert_eq!(header_only_answer(&response, ResponseCode::FormErr), None);
    }
}
