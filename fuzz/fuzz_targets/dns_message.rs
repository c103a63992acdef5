//! DNS messages from pods, parsed the way ztunnel's DNS proxy parses them (ztunnel/src/dns/
//! query.rs, answer.rs): with hickory-proto, the same version and features ztunnel pins.
//!
//! ztunnel is a binary-only crate, so its own `PodResolver::handle` cannot be reached from here;
//! this target covers the part it delegates — hickory's parser on every datagram a pod sends —
//! and the promises ztunnel's answers rely on: never a panic on hostile bytes, and for any query
//! it parsed, a response echoing the question (what ztunnel's SERVFAIL and Service answers are
//! built from, "cannot fail in practice" says query.rs) encodes, with an A/AAAA record owned by
//! the name as asked, and parses back with the same id and question.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Message::from_vec(data) else {
        return;
    };
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
    {
        return;
    }
    let [query] = request.queries.as_slice() else {
        return;
    };
    let _ = query.query_type.to_string();
    let _ = query.name.to_string();
    for _label in query.name.iter() {}

    // ztunnel's response skeleton: same id, RD and CD, the question echoed, EDNS if asked.
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = ResponseCode::NoError;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        response.set_edns(edns);
    }
    let data = match query.query_type {
        RecordType::AAAA => RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        _ => RData::A(A(Ipv4Addr::new(10, 96, 0, 10))),
    };
    response.add_answer(Record::from_rdata(query.name.clone(), 30, data));
    let bytes = response
        .to_vec()
        .unwrap_or_else(|e| panic!("a response to a parsed query does not encode: {e}"));
    let parsed = Message::from_vec(&bytes).expect("our own response does not parse");
    assert_eq!(parsed.metadata.id, request.metadata.id);
    assert_eq!(
        parsed.queries, request.queries,
        "the question is not echoed as asked"
    );
    assert_eq!(parsed.answers.len(), 1);
});
