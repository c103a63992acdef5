//! ztunnel's memory and descriptors from /proc, sampled through the soak, and what the bench
//! expects of them.

use std::fmt::Write as _;
use std::time::Duration;

use ambit_tests::Pod;

use crate::checks::Check;

/// DESIGN §4: ≤ 8 KiB per idle connection.
const TARGET_KIB_PER_CONNECTION: f64 = 8.0;
/// "Back near idle": RSS within this much of idle (allocator caches, lazily built state).
const RSS_SLACK_KIB: u64 = 4 * 1024;
/// "Back to idle" for descriptors.
const FD_SLACK: u64 = 16;

/// One ztunnel's figures at one moment.
#[derive(Clone, Copy, Default, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// Established TCP sockets on port 15008 in the node's pods (ztunnel's HBONE connections);
    /// `None` when not counted (the per-second samples).
    pub hbone_sockets: Option<u64>,
}

pub fn usage(pid: u32) -> Result<Usage, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count() as u64;
    Ok(Usage {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        fds,
        threads: field("Threads:"),
        hbone_sockets: None,
    })
}

/// "soft/hard" of a process's RLIMIT_NOFILE.
pub fn nofile_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
            Some(values.join("/"))
        })
        .unwrap_or_else(|| "?".into())
}

/// Usage of every ztunnel (index = node), with the HBONE sockets counted in its pods.
pub fn sample(pids: &[u32], pods: &[Pod]) -> Result<Vec<Usage>, String> {
    let mut out = Vec::new();
    for (node, &pid) in pids.iter().enumerate() {
        let mut usage = usage(pid)?;
        let mut hbone = 0;
        for pod in pods.iter().filter(|p| p.node() == node) {
            let listing = pod
                .exec(
                    "ss",
                    [
                        "-Htn",
                        "state",
                        "established",
                        "( sport = :15008 or dport = :15008 )",
                    ],
                )
                .map_err(|e| format!("ss in {}: {e}", pod.name()))?;
            hbone += listing.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
        usage.hbone_sockets = Some(hbone);
        out.push(usage);
    }
    Ok(out)
}

/// One round's samples of both ztunnels (index = node).
pub struct RoundSamples {
    /// The highest of the 1-second samples under load, field by field.
    pub peak: Vec<Usage>,
    /// When every client reported all its connections open, and the sample then.
    pub all_open: Option<(Duration, Vec<Usage>)>,
    pub after5: Vec<Usage>,
    pub after30: Vec<Usage>,
}

pub struct Samples {
    pub idle: Vec<Usage>,
    pub rounds: Vec<RoundSamples>,
    /// `settle_seconds` after the last round's connections closed.
    pub settled: Vec<Usage>,
    pub settle_seconds: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn table(s: &Samples) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<42} {:>9} {:>9} {:>7} {:>8} {:>12}",
        "ztunnel", "RSS MiB", "anon MiB", "fds", "threads", "HBONE socks"
    );
    let several = s.rounds.len() > 1;
    for node in 0..s.idle.len() {
        let mut rows = vec![("idle".to_string(), s.idle[node])];
        for (index, round) in s.rounds.iter().enumerate() {
            let tag = if several {
                format!("round {} ", index + 1)
            } else {
                String::new()
            };
            if let Some((at, open)) = &round.all_open {
                let what = format!("{tag}all open ({:.0} s in)", at.as_secs_f64());
                rows.push((what, open[node]));
            }
            rows.push((format!("{tag}peak (1 s samples)"), round.peak[node]));
            rows.push((format!("{tag}5 s after all closed"), round.after5[node]));
            rows.push((format!("{tag}30 s after all closed"), round.after30[node]));
        }
        let settled = format!("{} s after all closed", s.settle_seconds);
        rows.push((settled, s.settled[node]));
        for (what, u) in rows {
            let _ = writeln!(
                out,
                "{:<42} {:>9.1} {:>9.1} {:>7} {:>8} {:>12}",
                format!("node {node} {what}"),
                mib(u.rss_kib),
                mib(u.anon_kib),
                u.fds,
                u.threads,
                u.hbone_sockets
                    .map_or_else(|| "-".to_string(), |n| n.to_string())
            );
        }
    }
    out
}

/// Bounded under load, back near idle after, no growth from round to round.
/// `hbone` is how many HBONE connections the pools need at most (one socket each per node).
pub fn resources(check: &mut Check, s: &Samples, connections: usize, hbone: usize) {
    let n = connections.max(1) as f64;
    let several = s.rounds.len() > 1;
    for node in 0..s.idle.len() {
        let idle = s.idle[node];
        for (index, round) in s.rounds.iter().enumerate() {
            let tag = if several {
                format!("round {}: ", index + 1)
            } else {
                String::new()
            };
            let peak = round.peak[node];
            // Every connection crosses the two nodes: each ztunnel holds all of them.
            let per_kib = peak.rss_kib.saturating_sub(idle.rss_kib) as f64 / n;
            let open_text = round.all_open.as_ref().map_or_else(
                || "never all open at once".to_string(),
                |(_, u)| {
                    format!(
                        "{:.2} KiB per connection in the sample with all open",
                        u[node].rss_kib.saturating_sub(idle.rss_kib) as f64 / n
                    )
                },
            );
            check.record(
                &format!("{tag}node {node} ztunnel memory per connection ≤ {TARGET_KIB_PER_CONNECTION} KiB (DESIGN §4)"),
                per_kib <= TARGET_KIB_PER_CONNECTION,
                format!(
                    "peak RSS {:.1} MiB over idle {:.1} MiB for {connections} connections: {per_kib:.2} KiB ({:.4} MiB) per connection; {open_text}",
                    mib(peak.rss_kib),
                    mib(idle.rss_kib),
                    per_kib / 1024.0
                ),
            );
            let fd_bound = idle.fds + (connections + hbone) as u64 + FD_SLACK;
            check.record(
                &format!("{tag}node {node} ztunnel fds bounded by the connections it holds"),
                peak.fds <= fd_bound && peak.fds >= idle.fds + connections as u64,
                format!(
                    "peak {} fds, idle {}: {:.3} per connection (bound {fd_bound}: idle + one per connection + {hbone} HBONE + {FD_SLACK}; at least one per connection)",
                    peak.fds,
                    idle.fds,
                    peak.fds.saturating_sub(idle.fds) as f64 / n
                ),
            );
            if index > 0 {
                let first = &s.rounds[0];
                let grew = |now: u64, then: u64| now.saturating_sub(then);
                let growth_peak = grew(peak.rss_kib, first.peak[node].rss_kib);
                let growth_after = grew(round.after30[node].rss_kib, first.after30[node].rss_kib);
                check.record(
                    &format!("{tag}node {node} ztunnel memory no higher than in round 1 (a leak or fragmentation grows it)"),
                    growth_peak <= RSS_SLACK_KIB && growth_after <= RSS_SLACK_KIB,
                    format!(
                        "peak {:.1} MiB (round 1: {:.1}), 30 s after {:.1} MiB (round 1: {:.1}), slack {} MiB",
                        mib(peak.rss_kib),
                        mib(first.peak[node].rss_kib),
                        mib(round.after30[node].rss_kib),
                        mib(first.after30[node].rss_kib),
                        RSS_SLACK_KIB / 1024
                    ),
                );
            }
        }
        let Some(last) = s.rounds.last() else {
            continue;
        };
        let peak = last.peak[node];
        for (label, u, settled) in [
            ("30 s".to_string(), last.after30[node], false),
            (format!("{} s", s.settle_seconds), s.settled[node], true),
        ] {
            let pooled = u.hbone_sockets.unwrap_or(0);
            // Before the pool's idle timeout, idle HBONE connections may still be open: each is
            // a live TLS session with its h2 buffers, held on purpose for the next tunnel, so
            // RSS is judged only once the pool has let them go, which it must have by the
            // settled sample (it is taken after the pool's idle timeout).
            let fd_ok = u.fds <= idle.fds + FD_SLACK + pooled;
            let rss_judged = settled || pooled == 0;
            let rss_ok = !rss_judged || (pooled == 0 && u.rss_kib <= idle.rss_kib + RSS_SLACK_KIB);
            let what = if !rss_judged {
                "descriptors back to idle plus the pooled HBONE connections"
            } else {
                "back near idle"
            };
            check.record(
                &format!("node {node} ztunnel {what} {label} after all closed"),
                fd_ok && rss_ok,
                format!(
                    "fds {} (idle {}, {pooled} HBONE sockets still pooled, slack {FD_SLACK}); RSS {:.1} MiB (idle {:.1}, slack {} MiB when nothing is pooled; {:+.1} MiB retained of {:+.1} at peak)",
                    u.fds,
                    idle.fds,
                    mib(u.rss_kib),
                    mib(idle.rss_kib),
                    RSS_SLACK_KIB / 1024,
                    mib(u.rss_kib) - mib(idle.rss_kib),
                    mib(peak.rss_kib) - mib(idle.rss_kib)
                ),
            );
        }
    }
}
