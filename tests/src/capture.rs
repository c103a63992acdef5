//! Packet capture with tcpdump, so a test can check what really crossed a link: plaintext
//! between pods without the mesh, only TLS once the mesh encrypts.
//!
//! tcpdump writes a pcap file (`-w`, flushed per packet with `-U`); [`Capture::stop`] ends it
//! with SIGINT (tcpdump's clean exit) and parses the file here, so no output format of tcpdump's
//! text mode is relied upon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::error::{HarnessError, Result};
use crate::netns::Netns;
use crate::process::{Process, ProcessSpec};

const SETTLE: Duration = Duration::from_millis(100);

/// A running capture. Dropping it stops tcpdump and discards the result.
#[derive(Debug)]
pub struct Capture {
    process: Process,
    file: PathBuf,
}

impl Capture {
    /// Capture on `interface` in `netns` with a pcap `filter` (e.g. `tcp port 8080`; empty
    /// for everything). Returns once tcpdump is listening, so packets sent afterwards are seen.
    pub fn start(netns: &Netns, interface: &str, filter: &str) -> Result<Capture> {
        let file = netns.log_dir().join(format!(
            "{}-{interface}-{}.pcap",
            netns.name(),
            rand::random::<u32>()
        ));
        // --immediate-mode: hand each packet to tcpdump at once; otherwise packets wait in a
        // kernel ring block that SIGINT abandons ("N received by filter, 0 captured").
        // -Z root: Debian's tcpdump otherwise drops to user `tcpdump`, which cannot write into
        // the cluster's root-only temp dir. -s 0: whole packets, the payload is what we check.
        let mut spec = ProcessSpec::new("tcpdump")
            .name(format!("tcpdump-{interface}"))
            .args([
                "-i",
                interface,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "0",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file);
        if !filter.trim().is_empty() {
            spec = spec.args(filter.split_whitespace());
        }
        let mut process = netns.spawn(spec)?;
        process.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Capture { process, file })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stop tcpdump and return what it captured.
    pub fn stop(mut self) -> Result<Packets> {
        // Let tcpdump drain packets that arrived just before the stop.
        std::thread::sleep(SETTLE);
        self.process.stop_with(Signal::SIGINT)?;
        let bytes =
            std::fs::read(&self.file).map_err(|e| HarnessError::file("reading", &self.file, e))?;
        parse_pcap(&bytes)
    }
}

/// Captured frames, link-layer headers included.
#[derive(Debug, Clone, Default)]
pub struct Packets {
    pub frames: Vec<Vec<u8>>,
}

impl Packets {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether any single frame contains `needle` (keep markers shorter than one segment).
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && self
                .frames
                .iter()
                .any(|frame| frame.windows(needle.len()).any(|w| w == needle))
    }

    /// Whether any IPv4 TCP segment has `port` as its source or destination port.
    pub fn has_tcp_port(&self, port: u16) -> bool {
        self.frames
            .iter()
            .any(|frame| tcp_ports(frame).is_some_and(|(s, d)| s == port || d == port))
    }

    /// Total captured bytes, a rough "did traffic flow here at all" check.
    pub fn total_bytes(&self) -> usize {
        self.frames.iter().map(Vec::len).sum()
    }
}

/// (source, destination) ports of an Ethernet + IPv4 + TCP frame.
fn tcp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    const ETHERNET: usize = 14;
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETHERNET..)?;
    if ethertype != 0x0800 || ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let tcp = ip.get(header_len..header_len + 4)?;
    Some((
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    ))
}

/// Minimal pcap reader (classic format, either byte order, micro- or nanosecond stamps).
pub fn parse_pcap(bytes: &[u8]) -> Result<Packets> {
    let bad = |what: &str| HarnessError::Invalid(format!("pcap: {what}"));
    let magic = bytes
        .get(..4)
        .ok_or_else(|| bad("file shorter than its header"))?;
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(bad("unknown magic (pcapng is not supported)")),
    };
    let read_u32 = |at: usize| -> Option<u32> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        })
    };
    let mut frames = Vec::new();
    let mut at = 24;
    // A capture stopped mid-write may end with a partial record: keep what is complete.
    while let Some(captured) = read_u32(at + 8) {
        let start = at + 16;
        let end = start + captured as usize;
        let Some(frame) = bytes.get(start..end) else {
            break;
        };
        frames.push(frame.to_vec());
        at = end;
    }
    Ok(Packets { frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut rec = Vec::new();
        rec.extend(1u32.to_le_bytes());
        rec.extend(0u32.to_le_bytes());
        rec.extend((payload.len() as u32).to_le_bytes());
        rec.extend((payload.len() as u32).to_le_bytes());
        rec.extend(payload);
        rec
    }

    #[test]
    fn parses_records_and_ignores_a_torn_tail() -> Result<()> {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1];
        file.extend([0u8; 20]);
        file.extend(record(b"hello MARKER world"));
        file.extend(record(b"second"));
        file.extend(&record(b"torn")[..18]);
        let packets = parse_pcap(&file)?;
        assert_eq!(packets.len(), 2);
        assert!(packets.contains(b"MARKER"));
        assert!(!packets.contains(b"absent"));
        assert!(parse_pcap(b"nope").is_err());
        Ok(())
    }
}
