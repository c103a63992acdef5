//! A scenario's verdict: the findings it collects (every broken promise, reported together)
//! and the capture on the node link with the markers sent while it ran — tried, retried and
//! judged as one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{exchange, plaintext_between, poll_until, readiness, Exchange};
use crate::capture::Capture;
use crate::cluster::Cluster;
use crate::error::Result;
use crate::node_admin::{as_json, node_config_dump};
use crate::pod::Pod;

/// How often [`Wire::recover_ways`] and [`check_ready_within`] retry.
const RETRY: Duration = Duration::from_millis(250);

/// Broken promises of a scenario, by kind: how often each was seen and its first occurrence
/// in full. A scenario checks everything, then [`Findings::finish`] fails once listing them
/// all, so one run shows every promise a fault breaks.
#[derive(Debug, Default)]
pub struct Findings {
    problems: BTreeMap<String, (usize, String)>,
}

impl Findings {
    /// Records `detail` under `kind` unless `ok` (printing it as it happens); returns `ok`.
    pub fn check(&mut self, ok: bool, kind: &str, detail: impl FnOnce() -> String) -> bool {
        if !ok {
            let detail = detail();
            eprintln!("FINDING [{kind}]: {detail}");
            self.problems
                .entry(kind.to_string())
                .or_insert((0, detail))
                .0 += 1;
        }
        ok
    }

    /// Panics with every finding unless there are none.
    pub fn finish(self, scenario: &str) {
        let report: Vec<String> = self
            .problems
            .iter()
            .map(|(kind, (times, first))| format!("- {kind} ({times}×); first: {first}"))
            .collect();
        assert!(
            report.is_empty(),
            "{scenario}: {} promise(s) broken:\n{}",
            report.len(),
            report.join("\n")
        );
    }
}

/// A capture on the node link (every TCP segment on the fabric bridge) and the markers sent
/// while it ran; [`Wire::finish`] judges it.
pub struct Wire {
    capture: Capture,
    tag: &'static str,
    meshed: Vec<Ipv4Addr>,
    markers: Vec<String>,
}

impl Wire {
    /// Starts capturing; `meshed` are the pod IPs whose traffic between each other must be
    /// HBONE only. `tag` starts every marker.
    pub fn start(cluster: &Cluster, tag: &'static str, meshed: &[Ipv4Addr]) -> Result<Wire> {
        Ok(Wire {
            capture: cluster.capture("tcp")?,
            tag,
            meshed: meshed.to_vec(),
            markers: Vec::new(),
        })
    }

    /// One more meshed pod (added during the scenario).
    pub fn add_meshed(&mut self, ip: Ipv4Addr) {
        self.meshed.push(ip);
    }

    /// A payload sent some other way (e.g. on a connection the test holds open) that must not
    /// be on the wire either.
    pub fn note_marker(&mut self, marker: &str) {
        self.markers.push(marker.to_string());
    }

    /// One [`exchange`] from `from` to `to` with a fresh marker.
    pub fn exchange(&mut self, from: &Pod, to: SocketAddr) -> Exchange {
        let marker = format!(
            "{}-{}-TO-{}-{:03}-MARKER",
            self.tag,
            from.name(),
            to.ip(),
            self.markers.len()
        );
        self.markers.push(marker.clone());
        exchange(from, to, &marker)
    }

    /// Retries exchanges every `every` until one is served or `timeout` passes; returns how
    /// long it took (`None`, and the last outcome printed, if never).
    pub fn served_within(
        &mut self,
        from: &Pod,
        to: SocketAddr,
        timeout: Duration,
        every: Duration,
    ) -> Option<Duration> {
        let mut last = None;
        let served = poll_until(timeout, every, || {
            let outcome = self.exchange(from, to);
            let served = outcome.served();
            last = Some(outcome);
            served.then_some(())
        });
        if served.is_none() {
            eprintln!(
                "{} → {to}: not served within {timeout:?}; last: {last:?}",
                from.name()
            );
        }
        served.map(|(_, took)| took)
    }

    /// Stops the capture and judges it: no marker on the wire, no payload between meshed pods
    /// outside HBONE, and HBONE seen at all (the capture did see the traffic it judges).
    pub fn finish(self, findings: &mut Findings) -> Result<()> {
        let packets = self.capture.stop()?;
        for marker in &self.markers {
            findings.check(
                !packets.contains(marker.as_bytes()),
                "plaintext: a marker crossed the node link in clear",
                || marker.clone(),
            );
        }
        let clear = plaintext_between(&packets, &self.meshed);
        findings.check(
            clear.is_empty(),
            "plaintext: payload between meshed pods outside HBONE",
            || {
                format!(
                    "{} segments, first {:?}",
                    clear.len(),
                    &clear[..clear.len().min(5)]
                )
            },
        );
        findings.check(
            packets.has_tcp_port(15008),
            "the capture saw no HBONE at all",
            || format!("{} frames captured", packets.len()),
        );
        Ok(())
    }
}

impl Wire {
    /// Before a fault: each way (`from` → `to`) is served, or the scenario proves nothing.
    pub fn assert_served(&mut self, ways: &[(&Pod, SocketAddr)]) {
        for (from, to) in ways {
            let outcome = self.exchange(from, *to);
            assert!(
                outcome.served(),
                "before the fault, {} → {to}: {outcome:?}",
                from.name()
            );
        }
    }

    /// One exchange per way; each whose outcome is not `expected` is a finding of `kind`,
    /// detailed with `when`.
    pub fn try_ways(
        &mut self,
        findings: &mut Findings,
        ways: &[(&Pod, SocketAddr)],
        expected: fn(&Exchange) -> bool,
        kind: &str,
        when: &str,
    ) {
        for (from, to) in ways {
            let outcome = self.exchange(from, *to);
            findings.check(expected(&outcome), kind, || {
                format!("{when}, {} → {to}: {outcome:?}", from.name())
            });
        }
    }

    /// After a fault cleared: each way is retried until served, all `within` from now; one that
    /// never is, is a finding of `kind` with `evidence`. Prints how long each took.
    pub fn recover_ways(
        &mut self,
        findings: &mut Findings,
        ways: &[(&Pod, SocketAddr)],
        within: Duration,
        kind: &str,
        evidence: impl Fn() -> String,
    ) {
        let cleared = Instant::now();
        for (from, to) in ways {
            let left = within.saturating_sub(cleared.elapsed());
            let took = self.served_within(from, *to, left, RETRY);
            eprintln!(
                "{} → {to} served {took:?} after the fault cleared",
                from.name()
            );
            findings.check(took.is_some(), kind, || {
                format!("{} → {to} within {within:?}; {}", from.name(), evidence())
            });
        }
    }
}

/// Node `node` answers its readiness probe with 200 within `timeout`, else a finding of `kind`.
pub fn check_ready_within(
    findings: &mut Findings,
    cluster: &Cluster,
    node: usize,
    timeout: Duration,
    kind: &str,
) {
    let ready = poll_until(timeout, RETRY, || {
        readiness(cluster, node).ok().filter(|r| r.is_ready())
    });
    findings.check(ready.is_some(), kind, || {
        format!("node {node}: {}", describe_readiness(cluster, node))
    });
}

/// Node `node`'s readiness answer as text (`503 "not ready: …"`), for findings.
pub fn describe_readiness(cluster: &Cluster, node: usize) -> String {
    match readiness(cluster, node) {
        Ok(answer) => format!("{} {:?}", answer.status, answer.body),
        Err(error) => format!("no answer: {error}"),
    }
}

/// Whether node `node`'s ztunnel answers its readiness probe with 503.
pub fn unready(cluster: &Cluster, node: usize) -> bool {
    readiness(cluster, node).is_ok_and(|answer| answer.status == 503)
}

/// What node `node`'s `/config_dump` says about enrolled pods and certificates, for findings.
pub fn describe_pods_and_certificates(cluster: &Cluster, node: usize) -> String {
    match node_config_dump(cluster, node) {
        Ok(dump) => format!(
            "enrolledPods={} certificates={}",
            as_json(&dump.enrolled_pods),
            as_json(&dump.certificates)
        ),
        Err(error) => format!("no config_dump: {error}"),
    }
}

/// The last `last` lines of `log` that contain `needle` (evidence for findings).
pub fn log_lines_containing(log: &str, needle: &str, last: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    lines[lines.len().saturating_sub(last)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
