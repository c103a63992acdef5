//! Pod start cost of the mesh: CNI ADD latency with and without enrollment (issue 12, item 3).
//!
//! One node with its ztunnel. Pods are started and deleted the way the harness's kubelet does
//! (sandbox, the node's CNI chain: bridge + host-local + ambit-cni), one at a time, in three
//! interleaved series so machine noise hits all of them:
//! - `plain`: a namespace that is not ambient — the chain's own cost (ambit-cni answers "not
//!   ambient" after one enrollment round trip); the baseline;
//! - `ambient, shared SA`: ambient pods of one service account — the certificate is cached after
//!   the first pod, as for a Deployment scaling up;
//! - `ambient, new SA`: each pod its own service account — a CA round trip per pod.
//!
//! It prints p50/p90/p99/max of the whole ADD for each series, the added cost over `plain`, and
//! where ztunnel's part went (from its `pod enrolled` log line: waiting for the pod to reach the
//! cluster view, the certificate, listeners and TLS set-up). DESIGN/issue target: ADD → pod
//! enrolled ≤ 20 ms p99; the bench reports, it does not assert.
//!
//! Then the hand-over: with `AMBIT_CNI_BENCH_RUNNING` (default 20) ambient pods running, a
//! successor ztunnel is started beside the running one (a surge upgrade), a few times; it prints
//! how long the successor took from its start to the take-over (every running pod captured by
//! it, the enrollment socket renamed), and how long until the predecessor had exited.
//!
//! ```text
//! cargo bench -p ambit-tests --bench cni_add            # root; AMBIT_CNI_BENCH_PODS (default 100) per series
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ambit_tests::bench::env;
use ambit_tests::{AccessLine, Labels, Mesh, MeshUnderTest, PodSpec};

const TARGET_P99_MS: f64 = 20.0;

fn main() {
    if !ambit_tests::bench::entered("cni_add") {
        return;
    }
    if let Err(error) = run() {
        eprintln!("cni_add bench failed: {error}");
        std::process::exit(1);
    }
}

/// One way of starting pods, and what each start cost.
struct Series {
    label: &'static str,
    namespace: &'static str,
    /// A new service account per pod (a certificate to issue each time).
    fresh_service_account: bool,
    /// The whole chain's ADD.
    add: Vec<Duration>,
    /// ambit-cni's own ADD: enrollment (certificate, listeners) and the redirect rules.
    ambit: Vec<Duration>,
}

fn ambient() -> Labels {
    Labels::from([("istio.io/dataplane-mode".to_string(), "ambient".to_string())])
}

/// A count ≥ 1 from the environment.
fn count_from_env(name: &str, default: usize) -> Result<usize, String> {
    match env(name, default)? {
        0 => Err(format!("{name}=0: give a count ≥ 1")),
        count => Ok(count),
    }
}

fn run() -> Result<(), String> {
    let per_series = count_from_env("AMBIT_CNI_BENCH_PODS", 100)?;
    let mut mesh = Mesh::start(1).map_err(|e| format!("starting the mesh: {e}"))?;
    for namespace in ["cni-shared", "cni-fresh"] {
        mesh.cluster
            .set_namespace_labels(namespace, ambient())
            .map_err(|e| e.to_string())?;
    }
    let mut series = [
        Series {
            label: "plain (not ambient)",
            namespace: "cni-plain",
            fresh_service_account: false,
            add: Vec::new(),
            ambit: Vec::new(),
        },
        Series {
            label: "ambient, shared SA",
            namespace: "cni-shared",
            fresh_service_account: false,
            add: Vec::new(),
            ambit: Vec::new(),
        },
        Series {
            label: "ambient, new SA",
            namespace: "cni-fresh",
            fresh_service_account: true,
            add: Vec::new(),
            ambit: Vec::new(),
        },
    ];
    // One warm-up start per series (first certificate, first nft table, page cache).
    let started = Instant::now();
    for round in 0..=per_series {
        for s in series.iter_mut() {
            let service_account = if s.fresh_service_account {
                format!("sa-{round}")
            } else {
                "app".to_string()
            };
            let pod = mesh
                .start_pod(
                    PodSpec::new(s.namespace, &format!("pod-{round}"))
                        .service_account(&service_account),
                )
                .map_err(|e| format!("{} pod {round}: {e}", s.label))?;
            if round > 0 {
                s.add.push(pod.cni_add_duration());
                s.ambit.push(
                    pod.cni_plugin_duration("ambit-cni")
                        .ok_or("the chain has no ambit-cni")?,
                );
            }
            mesh.delete_pod(&pod)
                .map_err(|e| format!("{} pod {round}: delete: {e}", s.label))?;
        }
    }
    let log = mesh.ztunnel(0).log().map_err(|e| e.to_string())?;
    print_report(&series, &log, per_series, started.elapsed());
    measure_takeover(&mut mesh)
}

/// Surge hand-overs with running pods: the successor's start → take-over, and → predecessor gone.
fn measure_takeover(mesh: &mut Mesh) -> Result<(), String> {
    let running = count_from_env("AMBIT_CNI_BENCH_RUNNING", 20)?;
    const ROUNDS: usize = 5;
    let mut pods = Vec::new();
    for i in 0..running {
        pods.push(
            mesh.start_pod(
                PodSpec::new("cni-shared", &format!("running-{i}"))
                    .service_account(&format!("sa-running-{}", i % 4)),
            )
            .map_err(|e| format!("running pod {i}: {e}"))?,
        );
    }
    let mut ready = Vec::new();
    let mut took = Vec::new();
    let mut gone = Vec::new();
    for round in 0..ROUNDS {
        let start = Instant::now();
        let mut predecessor = mesh
            .replace_ztunnel(0)
            .map_err(|e| format!("successor {round}: {e}"))?;
        ready.push(start.elapsed());
        let log = mesh.ztunnel(0).log().map_err(|e| e.to_string())?;
        let reported = log
            .lines()
            .find(|line| line.contains("took over from the previous ztunnel"))
            .and_then(|line| field(line, "took_ms"))
            .ok_or_else(|| format!("successor {round} logged no take-over:\n{log}"))?;
        took.push(Duration::from_secs_f64(reported / 1e3));
        predecessor
            .wait_exit(Duration::from_secs(30))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("predecessor of round {round} did not exit within 30 s"))?;
        gone.push(start.elapsed());
    }
    println!(
        "\n== hand-over to a successor ztunnel, {running} ambient pods running, {ROUNDS} rounds =="
    );
    for (label, values) in [
        ("take-over (its log)", &took),
        ("start → ready", &ready),
        ("start → old exited", &gone),
    ] {
        let ms = sorted_ms(values);
        println!(
            "  {label:<20} p50 {:>8.1} ms   max {:>8.1} ms",
            percentile(&ms, 50.0),
            ms.last().copied().unwrap_or(0.0)
        );
    }
    for pod in &pods {
        mesh.delete_pod(pod).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The number `name=` carries in a log line.
fn field(line: &str, name: &str) -> Option<f64> {
    AccessLine::parse(line).get(name)?.parse().ok()
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

fn sorted_ms(durations: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The `*_ms` fields of ztunnel's `pod enrolled` lines, by field name.
fn enrollment_phases(log: &str) -> Vec<(&'static str, Vec<f64>)> {
    let fields = ["view_wait_ms", "certificate_ms", "listeners_ms"];
    fields
        .iter()
        .map(|field| {
            let mut values: Vec<f64> = log
                .lines()
                .filter(|line| line.contains("pod enrolled"))
                .filter_map(|line| self::field(line, field))
                .collect();
            values.sort_by(f64::total_cmp);
            (*field, values)
        })
        .collect()
}

fn print_report(series: &[Series], log: &str, per_series: usize, took: Duration) {
    println!("\n== ambit CNI ADD benchmark: {per_series} pod starts per series, interleaved, one node ==");
    println!("(each start: sandbox + CNI ADD of bridge, host-local and ambit-cni; then CNI DEL; {:.0} s in all)\n", took.as_secs_f64());
    for (title, take) in [
        (
            "whole chain (ms)",
            (|s: &Series| &s.add) as fn(&Series) -> &Vec<Duration>,
        ),
        ("ambit-cni alone (ms)", |s: &Series| &s.ambit),
    ] {
        println!(
            "{title:<22} {:>8} {:>8} {:>8} {:>8}   added p50 / p99 over plain",
            "p50", "p90", "p99", "max"
        );
        let plain = sorted_ms(take(&series[0]));
        for s in series {
            let ms = sorted_ms(take(s));
            let added = if std::ptr::eq(s, &series[0]) {
                "(baseline)".to_string()
            } else {
                format!(
                    "+{:.1} / +{:.1} ms",
                    percentile(&ms, 50.0) - percentile(&plain, 50.0),
                    percentile(&ms, 99.0) - percentile(&plain, 99.0)
                )
            };
            println!(
                "  {:<20} {:>8.1} {:>8.1} {:>8.1} {:>8.1}   {added}",
                s.label,
                percentile(&ms, 50.0),
                percentile(&ms, 90.0),
                percentile(&ms, 99.0),
                ms.last().copied().unwrap_or(0.0)
            );
        }
        println!();
    }
    println!("\nztunnel's part of an enrollment (its `pod enrolled` lines, both ambient series):");
    for (field, values) in enrollment_phases(log) {
        if values.is_empty() {
            println!("  {field:<16} no values logged");
            continue;
        }
        println!(
            "  {field:<16} p50 {:>7.2} ms   p99 {:>7.2} ms   ({} enrollments)",
            percentile(&values, 50.0),
            percentile(&values, 99.0),
            values.len()
        );
    }
    let troubles: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    println!("\nztunnel warnings and errors: {}", troubles.len());
    for line in troubles.iter().take(5) {
        println!("  {line}");
    }
    let worst_ambient_p99 = series[1..]
        .iter()
        .map(|s| percentile(&sorted_ms(&s.ambit), 99.0))
        .fold(0.0, f64::max);
    println!(
        "\ntarget: ambit-cni's ADD (→ pod enrolled and captured) ≤ {TARGET_P99_MS} ms p99 (issue 12): {} (worst ambient p99 {worst_ambient_p99:.1} ms)",
        if worst_ambient_p99 <= TARGET_P99_MS { "MET" } else { "NOT MET" }
    );
}
