//! ztunnel's own DNS proxy (`ztunnel::fuzzing::DnsProxy`, the resolver each enrolled pod's
//! 15053 listeners use) on every message a pod could send, over a fixed cluster view with one
//! Service and no upstreams. Contract: never a panic; a message shorter than a header or that is
//! itself a response is dropped; every other one gets a reply with its id and QR set, within
//! the UDP size limit (1232 bytes, EDNS's ceiling) over UDP; a reply to a parsed single-question
//! query echoes that question.
#![no_main]

use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Message, MessageType, OpCode};
use libfuzzer_sys::fuzz_target;
use ztunnel::fuzzing::{DnsProxy, Transport};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  ports: [{name: http, port: 80}]
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    proxy: DnsProxy,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (snapshot, _) = discovery::fuzzing::load_manifest_text(CLUSTER)
            .unwrap_or_else(|e| panic!("the target's cluster does not load: {e}"));
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap_or_else(|e| panic!("no runtime: {e}")),
            proxy: DnsProxy::new(Arc::new(snapshot)),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, request)) = data.split_first() else {
        return;
    };
    let transport = if selector & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let harness = harness();
    let reply = harness
        .runtime
        .block_on(harness.proxy.reply(request, transport));
    let is_response = request.get(2).is_some_and(|flags| flags & 0x80 != 0);
    if request.len() < 12 || is_response {
        assert!(reply.is_none(), "replied to a message that must be dropped");
        return;
    }
    let reply = reply.unwrap_or_else(|| panic!("no reply to a query ({} bytes)", request.len()));
    assert!(reply.len() >= 12, "reply shorter than a header");
    assert_eq!(
        reply[..2],
        request[..2],
        "reply id differs from the query's"
    );
    assert!(reply[2] & 0x80 != 0, "reply without QR set");
    if transport == Transport::Udp {
        assert!(reply.len() <= 1232, "UDP reply of {} bytes", reply.len());
    }
    let Ok(query) = Message::from_vec(request) else {
        return;
    };
    if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
        return;
    }
    let parsed =
        Message::from_vec(&reply).unwrap_or_else(|e| panic!("our reply does not parse: {e}"));
    assert_eq!(parsed.metadata.message_type, MessageType::Response);
    if !parsed.metadata.truncation || !parsed.queries.is_empty() {
        assert_eq!(parsed.queries, query.queries, "the question is not echoed");
    }
});
