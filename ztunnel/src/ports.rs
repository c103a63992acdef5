//! ztunnel's own ports (DESIGN §3). One list, so that the listeners and the self-call guard can
//! never disagree about what belongs to ztunnel; the in-pod ones come from the capture rules,
//! which redirect to them.

/// Admin (`/config_dump`), on the node's localhost.
pub const ADMIN: u16 = 15000;
/// Outbound capture, inside each enrolled pod.
pub const OUTBOUND: u16 = capture::rules::ports::OUTBOUND;
/// Inbound plaintext capture, inside each enrolled pod.
pub const INBOUND_PLAINTEXT: u16 = capture::rules::ports::INBOUND;
/// HBONE, inside each enrolled pod.
pub const HBONE: u16 = hbone::config::HBONE_PORT;
/// Prometheus metrics, on the node.
pub const METRICS: u16 = 15020;
/// Readiness, on the node.
pub const READINESS: u16 = 15021;
/// DNS proxy, inside each enrolled pod.
pub const DNS: u16 = capture::rules::ports::DNS;

/// Every port ztunnel serves. A connection whose target is one of them on a pod's own address
/// or on loopback would reach ztunnel itself, which then connects to itself again: a self-call
/// loop that exhausts file descriptors for the whole node. Such targets are refused.
pub const ZTUNNEL_PORTS: [u16; 7] = [
    ADMIN,
    OUTBOUND,
    INBOUND_PLAINTEXT,
    HBONE,
    METRICS,
    READINESS,
    DNS,
];

/// Whether `port` is one of ztunnel's.
pub fn is_ztunnel_port(port: u16) -> bool {
    ZTUNNEL_PORTS.contains(&port)
}
