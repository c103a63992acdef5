//! Building blocks for the fault scenarios (`tests/mesh_faults.rs`): one marked exchange from
//! inside a pod and how it ended, findings collected across a scenario, the capture on the node
//! link and its verdict (no marker, no plaintext between meshed pods), the readiness answer of
//! a node's ztunnel, a pod whose CNI DEL never reached ztunnel, and the file descriptors (and
//! namespaces) a process holds.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::capture::Packets;
use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::netns::Netns;
use crate::pod::Pod;
use crate::scenario::{connect_from, echo_once};

mod verdict;
pub use verdict::{
    check_ready_within, describe_pods_and_certificates, describe_readiness, log_lines_containing,
    unready, Findings, Wire,
};

/// How one marked exchange from a pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// The echo came back intact.
    Served,
    /// The connection was refused, reset or closed before the echo (fail closed); why.
    Refused(String),
    /// An answer came back, but not the bytes sent: never acceptable.
    Garbled(Vec<u8>),
}

impl Exchange {
    pub fn served(&self) -> bool {
        matches!(self, Exchange::Served)
    }

    pub fn refused(&self) -> bool {
        matches!(self, Exchange::Refused(_))
    }
}

/// Opens a connection from inside `from` to `to` (so the pod's redirect rules apply), sends
/// `marker` and waits (up to 5 s) for the same bytes back. Keep markers shorter than one
/// segment, so a capture can look for them frame by frame.
pub fn exchange(from: &Pod, to: SocketAddr, marker: &str) -> Exchange {
    let mut stream = match connect_from(from, to) {
        Ok(stream) => stream,
        Err(error) => return Exchange::Refused(format!("connect: {error}")),
    };
    match echo_once(&mut stream, marker.as_bytes()) {
        Ok(echo) if echo == marker.as_bytes() => Exchange::Served,
        Ok(echo) => Exchange::Garbled(echo),
        Err(error) => Exchange::Refused(format!("echo: {error}")),
    }
}

/// The answer of a ztunnel's readiness endpoint (`/healthz/ready` on 15021).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub status: u16,
    pub body: String,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == 200
    }
}

/// GETs `/healthz/ready` from port 15021 on node `node`'s loopback, as the kubelet's probe does,
/// keeping the status code (the harness's `node_http_get` returns only the body). An error
/// means nothing answered (no ztunnel).
pub fn readiness(cluster: &Cluster, node: usize) -> Result<Readiness> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, 15021));
    let what = format!("readiness of {}", cluster.node(node).name());
    let fail = |e: String| HarnessError::Invalid(format!("{what}: {e}"));
    let netns = ::capture::NetNs::open(cluster.node(node).netns().path())
        .map_err(|e| fail(e.to_string()))?;
    let options = ::capture::socket::DialOptions {
        mark: None,
        bind: None,
        transparent: false,
    };
    let socket = ::capture::socket::dial_socket_in(&netns, target, &options)
        .map_err(|e| fail(e.to_string()))?;
    let mut stream = socket
        .connect_timeout(target, Duration::from_secs(5))
        .map_err(|e| fail(format!("connect {target}: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    stream
        .write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .map_err(|e| fail(format!("send: {e}")))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| fail(format!("receive: {e}")))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(format!("no header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| fail(format!("no status in {head:?}")))?;
    Ok(Readiness {
        status,
        body: body.trim().to_string(),
    })
}

/// TCP segments of the capture that carry payload between two of `meshed` (pod IPs of the
/// mesh) on any port but HBONE's 15008: each is plaintext that should have been tunnelled.
/// Returned as `src:port → dst:port (N bytes)`, empty when everything between them was mTLS.
pub fn plaintext_between(packets: &Packets, meshed: &[Ipv4Addr]) -> Vec<String> {
    let meshed: HashSet<Ipv4Addr> = meshed.iter().copied().collect();
    packets
        .frames
        .iter()
        .filter_map(|frame| tcp_segment(frame))
        .filter(|s| s.payload > 0 && meshed.contains(&s.src) && meshed.contains(&s.dst))
        .filter(|s| s.src_port != 15008 && s.dst_port != 15008)
        .map(|s| {
            format!(
                "{}:{} → {}:{} ({} bytes)",
                s.src, s.src_port, s.dst, s.dst_port, s.payload
            )
        })
        .collect()
}

struct Segment {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: usize,
}

/// An Ethernet + IPv4 + TCP frame's addresses, ports and payload length.
fn tcp_segment(frame: &[u8]) -> Option<Segment> {
    const ETHERNET: usize = 14;
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETHERNET..)?;
    if ethertype != 0x0800 || ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ip_header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let address = |at: usize| -> Option<Ipv4Addr> {
        let octets: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(octets))
    };
    let tcp = ip.get(ip_header..)?;
    let tcp_header = usize::from(tcp.get(12)? >> 4) * 4;
    Some(Segment {
        src: address(12)?,
        dst: address(16)?,
        src_port: u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]),
        dst_port: u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]),
        payload: total.saturating_sub(ip_header + tcp_header),
    })
}

/// Polls `probe` every `every` until it returns `Some` or `timeout` has passed; returns the
/// value and how long it took.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some((value, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// File descriptors process `pid` holds open.
pub fn open_fds(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .map(|entries| entries.count())
        .map_err(|e| HarnessError::file("listing", dir, e))
}

/// How many of process `pid`'s file descriptors refer to the network namespace `inode` (a
/// namespace that was deleted stays alive, with its sockets, while someone holds one). Judged
/// by what each descriptor is (nsfs device and inode), not by its link text: a namespace file
/// received over SCM_RIGHTS from another mount namespace reads as `/`, not `net:[INODE]`.
pub fn fds_on_netns(pid: u32, inode: u64) -> Result<usize> {
    let nsfs = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| HarnessError::file("reading", "/proc/self/ns/net", e))?
        .dev();
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| HarnessError::file("listing", &dir, e))?;
    Ok(entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .filter(|meta| meta.dev() == nsfs && meta.ino() == inode)
        .count())
}

/// The listening sockets (`ss -Hltnu`) of the network namespace `inode` that process `pid`
/// holds a descriptor of, reached through that descriptor (the namespace may have no name
/// left): evidence of what a leaked namespace still serves. `None` when `pid` holds none.
pub fn listeners_in_held_netns(pid: u32, inode: u64) -> Result<Option<String>> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(|e| HarnessError::file("listing", &dir, e))?;
    let held = entries.filter_map(|entry| entry.ok()).find(|entry| {
        std::fs::metadata(entry.path()).is_ok_and(|meta| {
            meta.ino() == inode
                && std::fs::read_link(entry.path()).is_ok_and(|l| !l.starts_with("socket:"))
        })
    });
    let Some(held) = held else {
        return Ok(None);
    };
    let mut command = std::process::Command::new("nsenter");
    command
        .arg(format!("--net={}", held.path().display()))
        .args(["ss", "-Hltnu"]);
    crate::cmd::run(&mut command).map(Some)
}

/// The inode of a named network namespace (what `/proc/PID/fd` links show as `net:[INODE]`,
/// and ztunnel's `/config_dump` as `netnsInode`).
pub fn netns_inode(netns: &Netns) -> Result<u64> {
    let path = netns.path();
    std::fs::metadata(&path)
        .map(|meta| meta.ino())
        .map_err(|e| HarnessError::file("reading", path, e))
}

impl Cluster {
    /// A pod that vanishes without its CNI DEL reaching anyone (the runtime crashed mid-delete,
    /// the DEL was lost): what runs in it is killed, its network namespace deleted and its Pod
    /// object removed — but no plugin runs, so ztunnel is never told.
    pub fn remove_pod_without_cni_del(&mut self, pod: &Pod) -> Result<()> {
        let pod = self.take_pod(pod)?;
        self.tear_down_sandbox(&pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 (20 bytes) + TCP (20 bytes) + payload.
    fn frame(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = (40 + payload.len()) as u16;
        f.extend([0x45, 0]);
        f.extend(total.to_be_bytes());
        f.extend([0, 0, 0, 0, 64, 6, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend(ports.0.to_be_bytes());
        f.extend(ports.1.to_be_bytes());
        f.extend([0u8; 8]);
        f.extend([0x50, 0x18, 0, 0, 0, 0, 0, 0]);
        f.extend(payload);
        f
    }

    #[test]
    fn plaintext_between_meshed_pods_is_found_and_hbone_is_not() {
        let (a, b, outsider) = ([10, 9, 1, 2], [10, 9, 2, 2], [10, 9, 1, 3]);
        let packets = Packets {
            frames: vec![
                frame(a, b, (40000, 15008), b"tls"),
                frame(b, a, (15008, 40000), b"tls"),
                frame(a, b, (40001, 8080), b""),
                frame(outsider, b, (40002, 8080), b"clear"),
                frame(a, b, (40003, 8080), b"MARKER"),
            ],
        };
        let meshed = [Ipv4Addr::from(a), Ipv4Addr::from(b)];
        assert_eq!(
            plaintext_between(&packets, &meshed),
            ["10.9.1.2:40003 → 10.9.2.2:8080 (6 bytes)"]
        );
    }
}
