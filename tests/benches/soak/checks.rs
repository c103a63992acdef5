//! What the soak bench verifies: the apps' per-connection records against each other and
//! against ztunnel's access lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use ambit_tests::{AccessLine, Process};

/// The `key=value` fields of the last summary line (`connections=…`) in a log.
pub fn summary(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .rev()
        .find(|l| l.starts_with("connections="))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// One line of a soak-client or soak-server `--report`.
#[derive(Clone, Debug, Default)]
pub struct ConnRecord {
    pub id: u64,
    pub local: String,
    pub peer: String,
    pub sent: u64,
    pub received: u64,
    pub checked: u64,
    pub mismatches: u64,
    pub ok: bool,
    pub error: Option<String>,
}

pub fn read_records(path: &Path) -> Result<Vec<ConnRecord>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A client that died writes no report: its connections count as missing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Ok(text
        .lines()
        .map(|line| {
            let fields = AccessLine::parse(line);
            ConnRecord {
                id: fields.bytes("id"),
                local: fields.get("local").unwrap_or("-").to_string(),
                peer: fields.get("peer").unwrap_or("-").to_string(),
                sent: fields.bytes("sent"),
                received: fields.bytes("received"),
                checked: fields.bytes("checked"),
                mismatches: fields.bytes("mismatches"),
                ok: fields.get("ok") == Some("true"),
                error: fields.get("error").map(str::to_string),
            }
        })
        .collect())
}

/// The verdicts, in order.
#[derive(Default)]
pub struct Check {
    rows: Vec<(String, bool, String)>,
    /// Put before the names recorded from now on (e.g. `round 2: `).
    prefix: String,
}

impl Check {
    pub fn section(&mut self, prefix: String) {
        self.prefix = prefix;
    }

    pub fn record(&mut self, name: &str, pass: bool, detail: impl Into<String>) {
        self.rows
            .push((format!("{}{name}", self.prefix), pass, detail.into()));
    }

    pub fn passed(&self) -> bool {
        self.rows.iter().all(|(_, pass, _)| *pass)
    }

    pub fn report(&self) -> String {
        let mut out = String::new();
        for (name, pass, detail) in &self.rows {
            let mark = if *pass { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{mark}  {name}: {detail}");
        }
        out
    }
}

fn field_sum(summaries: &[BTreeMap<String, String>], key: &str) -> u64 {
    summaries
        .iter()
        .filter_map(|s| s.get(key)?.parse::<u64>().ok())
        .sum()
}

/// Every byte checked, both ends agree per connection.
pub fn data(
    check: &mut Check,
    connections: usize,
    clients: &[(usize, ConnRecord)],
    servers: &[(usize, ConnRecord)],
    client_summaries: &[BTreeMap<String, String>],
    server_summaries: &[BTreeMap<String, String>],
) {
    let sum = |records: &[(usize, ConnRecord)], f: fn(&ConnRecord) -> u64| -> u64 {
        records.iter().map(|(_, r)| f(r)).sum()
    };
    let sent = sum(clients, |r| r.sent) + sum(servers, |r| r.sent);
    let checked = sum(clients, |r| r.checked) + sum(servers, |r| r.checked);
    let mismatches = sum(clients, |r| r.mismatches) + sum(servers, |r| r.mismatches);
    let failed: Vec<String> = clients
        .iter()
        .chain(servers)
        .filter(|(_, r)| !r.ok)
        .map(|(_, r)| format!("{}: {}", r.id, r.error.as_deref().unwrap_or("?")))
        .collect();
    let frames =
        field_sum(client_summaries, "frames_sent") + field_sum(server_summaries, "frames_sent");
    check.record(
        "every connection completed on both ends",
        clients.len() == connections && servers.len() == connections && failed.is_empty(),
        format!(
            "client records {}, server records {}, expected {connections}; failed {}{}",
            clients.len(),
            servers.len(),
            failed.len(),
            failed
                .first()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ),
    );
    check.record(
        "every byte checked, no mismatch",
        checked == sent && mismatches == 0 && sent > 0,
        format!(
            "{sent} bytes sent ({frames} frames), {checked} verified by the receiver ({:.1} MB), mismatches {mismatches}",
            checked as f64 / 1e6
        ),
    );
    let by_id: HashMap<u64, &ConnRecord> = servers.iter().map(|(_, r)| (r.id, r)).collect();
    let disagree = clients
        .iter()
        .filter(|(_, c)| {
            by_id
                .get(&c.id)
                .is_none_or(|s| s.received != c.sent || s.sent != c.received)
        })
        .count();
    check.record(
        "client and server byte counts agree per connection (joined by id)",
        disagree == 0 && by_id.len() == servers.len(),
        format!(
            "{disagree} of {} disagree or are missing on the server; {} distinct server ids",
            clients.len(),
            by_id.len()
        ),
    );
}

/// `connection complete` lines a ztunnel logged after `offset`.
pub fn access_lines(ztunnel: &Process, offset: u64) -> Result<Vec<AccessLine>, String> {
    Ok(AccessLine::all_in(&log_after(ztunnel, offset)?))
}

fn log_after(ztunnel: &Process, offset: u64) -> Result<String, String> {
    let bytes = std::fs::read(ztunnel.log_path())
        .map_err(|e| format!("{}: {e}", ztunnel.log_path().display()))?;
    let from = (offset as usize).min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

/// WARN/ERROR lines other than access lines (a failed connection's line is judged by the
/// access check), summarised: count and the first few.
pub fn log_problems(ztunnel: &Process, offset: u64) -> Result<String, String> {
    let log = log_after(ztunnel, offset)?;
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("access:"))
        .collect();
    if problems.is_empty() {
        return Ok(String::new());
    }
    let first: Vec<&str> = problems.iter().take(3).copied().collect();
    Ok(format!(
        "{}: {} warning/error lines, first: {}",
        ztunnel.name(),
        problems.len(),
        first.join(" | ")
    ))
}

/// (node, source pod IP, destination ip:port, bytes_sent, bytes_recv) of an access line, or
/// what an app counted for one connection, in the line's terms.
type Key = (usize, String, String, u64, u64);

struct Matching {
    unmatched_lines: usize,
    unmatched_connections: usize,
    distinct: usize,
}

impl Matching {
    fn passed(&self, lines: usize, connections: usize) -> bool {
        lines == connections && self.unmatched_lines == 0 && self.unmatched_connections == 0
    }

    fn describe(&self, lines: usize, connections: usize) -> String {
        format!(
            "{lines} lines for {connections} connections; {} lines match no connection, {} connections have no line (matched on source pod, destination and both byte counts: {} distinct keys, {})",
            self.unmatched_lines,
            self.unmatched_connections,
            self.distinct,
            if self.distinct == connections {
                "so each line is one connection's"
            } else {
                "some connections share a key, matched as a multiset"
            }
        )
    }
}

/// Matches the `direction` lines of every node against the expected keys, one line each.
fn match_lines(logs: &[Vec<AccessLine>], direction: &str, expected: &[Key]) -> (usize, Matching) {
    let mut want: HashMap<&Key, usize> = HashMap::new();
    for key in expected {
        *want.entry(key).or_default() += 1;
    }
    let distinct = want.len();
    let (mut lines, mut unmatched_lines) = (0, 0);
    for (node, node_lines) in logs.iter().enumerate() {
        for line in node_lines
            .iter()
            .filter(|l| l.get("direction") == Some(direction))
        {
            lines += 1;
            let source = line
                .get("src.addr")
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
            let key: Key = (
                node,
                source,
                // The target inside the tunnel (Istio's meaning; dst.addr is <pod>:15008).
                line.get("dst.hbone_addr").unwrap_or("-").to_string(),
                line.bytes("bytes_sent"),
                line.bytes("bytes_recv"),
            );
            match want.get_mut(&key) {
                Some(count) if *count > 0 => *count -= 1,
                _ => unmatched_lines += 1,
            }
        }
    }
    let matching = Matching {
        unmatched_lines,
        unmatched_connections: want.values().sum(),
        distinct,
    };
    (lines, matching)
}

/// Where each client (node, pod IP) and server (node, address) is, by report index.
pub struct Peers {
    pub clients: Vec<(usize, Ipv4Addr)>,
    pub servers: Vec<(usize, SocketAddr)>,
}

/// One access line per connection on each side, with the apps' byte counts.
pub fn access(
    check: &mut Check,
    logs: &[Vec<AccessLine>],
    peers: &Peers,
    clients: &[(usize, ConnRecord)],
    servers: &[(usize, ConnRecord)],
) {
    let (clients_info, servers_info) = (&peers.clients, &peers.servers);
    // Outbound, on each client's node: what the client counted.
    let outbound: Vec<Key> = clients
        .iter()
        .map(|(c, r)| {
            let (node, ip) = clients_info[*c];
            (node, ip.to_string(), r.peer.clone(), r.received, r.sent)
        })
        .collect();
    let (lines, result) = match_lines(logs, "outbound", &outbound);
    // The client's own (address, target) pairs: a line with another source port is one whose
    // port the capture's NAT (REDIRECT) rewrote, because the client's kernel had given the
    // same local port to two connections with different destinations.
    let own: HashSet<(String, String)> = clients
        .iter()
        .map(|(_, r)| (r.local.clone(), r.peer.clone()))
        .collect();
    let rewritten = logs
        .iter()
        .flatten()
        .filter(|l| l.get("direction") == Some("outbound"))
        .filter(|l| {
            let key = (
                l.get("src.addr").unwrap_or("-").to_string(),
                l.get("dst.hbone_addr").unwrap_or("-").to_string(),
            );
            !own.contains(&key)
        })
        .count();
    check.record(
        "one outbound access line per connection (client node), bytes = client's",
        result.passed(lines, clients.len()),
        format!(
            "{}; {rewritten} lines show a source port other than the client's (NAT of a reused local port)",
            result.describe(lines, clients.len())
        ),
    );
    // Inbound, on each server's node: what the server counted; the source is the client pod
    // (the HBONE connection's peer, from inside the client pod), found by the connection id.
    let client_of: HashMap<u64, usize> = clients.iter().map(|(c, r)| (r.id, *c)).collect();
    let inbound: Vec<Key> = servers
        .iter()
        .map(|(s, r)| {
            let (node, addr) = servers_info[*s];
            let source = client_of
                .get(&r.id)
                .map_or_else(|| "?".to_string(), |&c| clients_info[c].1.to_string());
            (node, source, addr.to_string(), r.sent, r.received)
        })
        .collect();
    let (lines, result) = match_lines(logs, "inbound", &inbound);
    check.record(
        "one inbound access line per connection (server node), bytes = server's",
        result.passed(lines, servers.len()),
        result.describe(lines, servers.len()),
    );

    let all: Vec<&AccessLine> = logs.iter().flatten().collect();
    let failed = all.iter().filter(|l| l.get("error").is_some()).count();
    let identities = all
        .iter()
        .filter(|l| {
            l.get("src.identity")
                .is_some_and(|i| i.ends_with("/ns/soak/sa/soak-client"))
                && l.get("dst.identity")
                    .is_some_and(|i| i.ends_with("/ns/soak/sa/soak-server"))
                && l.get("dst.addr").is_some_and(|a| a.ends_with(":15008"))
        })
        .count();
    check.record(
        "every access line tunnelled (HBONE, both identities), none failed",
        identities == all.len() && failed == 0,
        format!("{} lines, {identities} with both SPIFFE identities and an HBONE address, {failed} with error=", all.len()),
    );
}
