//! L4 mesh benchmark on the cluster-in-a-box (issue 3, item 7; targets in DESIGN §4).
//!
//! Two nodes. A raw pair (client pod on node 0, server pod on node 1, in a namespace that is not
//! ambient: plain pod-to-pod TCP across the bridges) and a mesh pair (same placement, ambient
//! namespace: client → ztunnel 15001 → HBONE/mTLS → ztunnel 15008 → server) are measured in the
//! same run, rounds alternating raw/mesh so machine noise hits both. Servers are `ambit-testapp
//! http --body-bytes 1024` (keep-alive); the load generators are the `throughput`, `latency`
//! and `connrate` modes of `ambit-testapp`, run inside the client pods; throughput also with 8
//! and 100 parallel connections. Last, the mesh pair holds 1 000 and then 10 000 idle tunnelled
//! connections (`soak-client`/`soak-server`: each connection exchanges one hello, then waits),
//! for ztunnel's memory per idle connection. ztunnel RSS is read from /proc. Only ratios against
//! the raw baseline mean anything: absolute figures depend on the machine.
//!
//! ```text
//! cargo bench -p ambit-tests --bench mesh_l4        # needs root (network namespaces)
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ambit_tests::{Labels, Mesh, MeshUnderTest, Pod, PodSpec, Process, TestApp};

const PORT: u16 = 8080;
const ROUNDS: usize = 3;
/// Seconds per measurement.
const THROUGHPUT_SECONDS: &str = "2";
const LATENCY_SECONDS: &str = "2";
const LATENCY_RATE: &str = "1000";
const CONNRATE_SECONDS: &str = "2";
const CONNRATE_CONCURRENCY: &str = "8";
/// Parallel downloads besides the one-stream figure: a few streams, then many connections
/// (each its own tunnel; the pool multiplexes them over one HBONE connection).
const PARALLEL_DOWNLOADS: [&str; 2] = ["8", "100"];
/// Idle tunnelled connections held at once, for memory per connection.
const IDLE_CONNECTIONS: [usize; 2] = [1_000, 10_000];
const IDLE_PORT: u16 = 9000;
const SETTLE: Duration = Duration::from_secs(5);
/// Idle period before the load, for RSS and the ztunnels' idle CPU.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);

// DESIGN §4.
const TARGET_THROUGHPUT_RATIO: f64 = 0.55;
const TARGET_ADDED_P50_MS: f64 = 0.12;
const TARGET_CONNRATE_RATIO: f64 = 0.47;
const TARGET_RSS_MB: f64 = 12.0;
const TARGET_KIB_PER_IDLE_CONNECTION: f64 = 8.0;
/// "Back to idle": within this much of the idle figure.
const RSS_SETTLE_SLACK_MB: f64 = 1.0;

fn main() {
    if !ambit_tests::bench::entered("mesh_l4") {
        return;
    }
    if let Err(error) = run() {
        eprintln!("mesh_l4 bench failed: {error}");
        std::process::exit(1);
    }
}

/// A client/server pair.
struct Pair {
    label: &'static str,
    client: Pod,
    server: Pod,
    _http: Process,
}

impl Pair {
    fn target(&self) -> SocketAddr {
        self.server.addr(PORT)
    }
}

fn ambient() -> Labels {
    Labels::from([("istio.io/dataplane-mode".to_string(), "ambient".to_string())])
}

fn app() -> TestApp {
    TestApp::at(env!("CARGO_BIN_EXE_ambit-testapp"))
}

type BenchResult<T> = Result<T, String>;
/// One load generator run: its `key=value` output.
type Fields = BTreeMap<String, f64>;
/// Every round of raw, every round of mesh.
type Rounds = (Vec<Fields>, Vec<Fields>);

/// `key=value` fields of a load generator's output line.
fn fields(output: &str) -> BTreeMap<String, f64> {
    output
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn run_load(pair: &Pair, mode: &str, extra: &[&str]) -> BenchResult<BTreeMap<String, f64>> {
    let target = pair.target().to_string();
    let mut args = vec![mode, "--connect", &target];
    args.extend_from_slice(extra);
    let out = pair
        .client
        .exec(app().path(), &args)
        .map_err(|e| format!("{} {mode}: {e}", pair.label))?;
    let parsed = fields(&out);
    if parsed.is_empty() {
        return Err(format!("{} {mode}: unexpected output {out:?}", pair.label));
    }
    Ok(parsed)
}

/// A process's memory in MB (10^6 bytes): VmRSS, VmHWM (peak RSS), RssAnon (heap, stacks:
/// the part that is not the binary's and libraries' mapped pages), and its thread count.
#[derive(Clone, Copy)]
struct Memory {
    rss: f64,
    hwm: f64,
    anon: f64,
    threads: f64,
}

fn memory_mb(pid: u32) -> BenchResult<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kb = |key: &str| -> BenchResult<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kb| kb * 1024.0 / 1e6)
            .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
    };
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Memory {
        rss: kb("VmRSS:")?,
        hwm: kb("VmHWM:")?,
        anon: kb("RssAnon:")?,
        threads,
    })
}

/// User + system CPU seconds a process has used (all threads).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> BenchResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime is field 14, stime 15 (1-based): indexes 11 and 12 after the state field.
    Ok((ticks(11) + ticks(12)) / ticks_per_second)
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Busy CPU seconds of the whole machine so far (all CPUs, every process: other work running
/// on the machine counts too), from /proc/stat.
fn machine_busy_seconds(ticks_per_second: f64) -> BenchResult<f64> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat.lines().next().unwrap_or_default();
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: f64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    Ok((total - idle) / ticks_per_second)
}

/// Runs `measure` ROUNDS times on each pair, alternating which goes first (raw, mesh, mesh,
/// raw, …), and returns every round's result per pair, each with the CPU it cost added:
/// `ztunnel_cpu_s` (both ztunnels) and `machine_cpu_s` (all CPUs busy).
fn alternate(
    pairs: &[&Pair; 2],
    ztunnel_pids: &[u32],
    ticks: f64,
    mut measure: impl FnMut(&Pair) -> BenchResult<Fields>,
) -> BenchResult<Rounds> {
    let (mut raw, mut mesh) = (Vec::new(), Vec::new());
    let cpu = || -> BenchResult<(f64, f64)> {
        let ztunnels = ztunnel_pids
            .iter()
            .map(|&p| cpu_seconds(p, ticks))
            .sum::<BenchResult<f64>>()?;
        Ok((ztunnels, machine_busy_seconds(ticks)?))
    };
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            let before = cpu()?;
            let mut result = measure(pairs[index])?;
            let after = cpu()?;
            result.insert("ztunnel_cpu_s".into(), after.0 - before.0);
            result.insert("machine_cpu_s".into(), after.1 - before.1);
            if index == 0 {
                raw.push(result);
            } else {
                mesh.push(result);
            }
        }
    }
    Ok((raw, mesh))
}

/// ztunnel memory around `connections` idle tunnelled connections held at once.
struct Held {
    connections: usize,
    /// Per node: just before, with all open (2 s after the last opened), 5 s after all closed.
    before: Vec<Memory>,
    held: Vec<Memory>,
    after: Vec<Memory>,
    fds_after: Vec<u64>,
    /// (held − before) RSS per connection, per node.
    kib_per_connection: Vec<f64>,
}

/// Opens `connections` tunnelled connections from the mesh pair's client to a `soak-server` on
/// its server (each sends one hello the server answers, then waits), measures both ztunnels
/// with every connection open, closes them and measures again after SETTLE.
fn hold_idle(pair: &Pair, ztunnel_pids: &[u32], connections: usize) -> BenchResult<Held> {
    let measure =
        || -> BenchResult<Vec<Memory>> { ztunnel_pids.iter().map(|&p| memory_mb(p)).collect() };
    let ramp_seconds = (connections as u64 / 2_000).max(1);
    // Long enough to sample once all are open; no message after the hello (interval > seconds).
    let seconds = ramp_seconds + 8;
    let mut server = pair
        .server
        .spawn(
            ambit_tests::ProcessSpec::new(app().path())
                .name(format!("idle-server-{connections}"))
                .args(["soak-server", "--listen", &format!("0.0.0.0:{IDLE_PORT}")])
                .args(["--expect", &connections.to_string()]),
        )
        .map_err(|e| e.to_string())?;
    server
        .wait_for_log("listening on", Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let before = measure()?;
    let mut client = pair
        .client
        .spawn(
            ambit_tests::ProcessSpec::new(app().path())
                .name(format!("idle-client-{connections}"))
                .arg("soak-client")
                .args(["--connect", &pair.server.addr(IDLE_PORT).to_string()])
                .args(["--connections", &connections.to_string()])
                .args(["--seconds", &seconds.to_string()])
                .args(["--ramp-seconds", &ramp_seconds.to_string()])
                .args(["--interval-ms", &((seconds + 60) * 1000).to_string()]),
        )
        .map_err(|e| e.to_string())?;
    client
        .wait_for_log("connections open after", Duration::from_secs(seconds))
        .map_err(|e| format!("{connections} idle connections never were all open: {e}"))?;
    std::thread::sleep(Duration::from_secs(2));
    let held = measure()?;
    let finished = Duration::from_secs(seconds + 30);
    let status = client.wait_exit(finished).map_err(|e| e.to_string())?;
    if !status.is_some_and(|s| s.success()) {
        return Err(format!(
            "the idle-connection client ({connections}) failed: {status:?}\n{}",
            client.log().unwrap_or_default()
        ));
    }
    server
        .wait_exit(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    std::thread::sleep(SETTLE);
    let after = measure()?;
    let fds_after = ztunnel_pids
        .iter()
        .map(|&p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, |d| d.count() as u64))
        .collect();
    let kib_per_connection = held
        .iter()
        .zip(&before)
        .map(|(h, b)| (h.rss - b.rss) * 1e6 / 1024.0 / connections as f64)
        .collect();
    Ok(Held {
        connections,
        before,
        held,
        after,
        fds_after,
        kib_per_connection,
    })
}

fn median_of(rounds: &[BTreeMap<String, f64>], key: &str) -> f64 {
    let mut values: Vec<f64> = rounds.iter().filter_map(|r| r.get(key).copied()).collect();
    median(&mut values)
}

fn sum_of(rounds: &[BTreeMap<String, f64>], key: &str) -> f64 {
    rounds.iter().filter_map(|r| r.get(key)).sum()
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

struct Table(String);

impl Table {
    fn header() -> Table {
        let mut table = Table(String::new());
        table.row("metric", "raw", "mesh", "mesh vs raw", "target", "");
        table.0.push_str(&"-".repeat(112));
        table.0.push('\n');
        table
    }

    fn row(&mut self, metric: &str, raw: &str, mesh: &str, ratio: &str, target: &str, mark: &str) {
        let _ = writeln!(
            self.0,
            "{metric:<44} {raw:>9} {mesh:>12} {ratio:>17}  {target:<20} {mark}"
        );
    }
}

fn run() -> BenchResult<()> {
    // ztunnel and the clients inherit it: 10 000 idle connections need ~10 000 fds each.
    ambit_tests::bench::raise_nofile(1 << 17)?;
    let setup_started = Instant::now();
    let mut mesh = Mesh::start(2).map_err(|e| format!("starting the mesh: {e}"))?;
    mesh.cluster
        .set_namespace_labels("bench-mesh", ambient())
        .map_err(|e| e.to_string())?;
    let mut make_pair = |label: &'static str, namespace: &str| -> BenchResult<Pair> {
        let client = mesh
            .add_pod(
                PodSpec::new(namespace, "client")
                    .on_node(0)
                    .service_account("client"),
            )
            .map_err(|e| format!("{label} client pod: {e}"))?;
        let server = mesh
            .add_pod(
                PodSpec::new(namespace, "server")
                    .on_node(1)
                    .service_account("server")
                    .label("app", "server")
                    .port(PORT)
                    .port(IDLE_PORT),
            )
            .map_err(|e| format!("{label} server pod: {e}"))?;
        let http = server
            .spawn(
                ambit_tests::ProcessSpec::new(app().path())
                    .name(format!("{label}-http"))
                    .args(["http", "--listen", &format!("0.0.0.0:{PORT}")])
                    .args(["--body-bytes", "1024", "--quiet"]),
            )
            .map_err(|e| e.to_string())?;
        Ok(Pair {
            label,
            client,
            server,
            _http: http,
        })
    };
    let raw = make_pair("raw", "bench-raw")?;
    let meshed = make_pair("mesh", "bench-mesh")?;
    for pair in [&raw, &meshed] {
        // The server is up once it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let target = pair.target().to_string();
            match pair
                .client
                .exec(app().path(), ["http-get", "--connect", &target])
            {
                Ok(out) if out.contains("status=200") => break,
                result if Instant::now() > deadline => {
                    return Err(format!("{} server never answered: {result:?}", pair.label))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    let ztunnel_pids: Vec<u32> = mesh.ztunnels.iter().map(Process::pid).collect();
    for &pid in &ztunnel_pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "ztunnel" {
            return Err(format!(
                "pid {pid} is {comm:?}, not ztunnel: cannot read its memory"
            ));
        }
    }
    // The mesh pair really is tunnelled and the raw pair really is not.
    let tunnelled = mesh
        .access_log(0)
        .map_err(|e| e.to_string())?
        .iter()
        .any(|l| {
            l.get("dst.hbone_addr") == Some(&*meshed.target().to_string())
                && l.get("dst.addr").is_some_and(|a| a.ends_with(":15008"))
        });
    let raw_seen = mesh
        .access_log(0)
        .map_err(|e| e.to_string())?
        .iter()
        .chain(mesh.access_log(1).map_err(|e| e.to_string())?.iter())
        .any(|l| {
            let raw = raw.target().to_string();
            l.get("dst.addr") == Some(&*raw) || l.get("dst.hbone_addr") == Some(&*raw)
        });
    if !tunnelled || raw_seen {
        return Err(format!(
            "topology is not what the bench measures: mesh pair tunnelled={tunnelled}, raw pair seen by ztunnel={raw_seen}"
        ));
    }
    let setup = setup_started.elapsed();

    let ticks = ticks_per_second();
    let ztunnel_cpu =
        |pids: &[u32]| -> BenchResult<f64> { pids.iter().map(|&p| cpu_seconds(p, ticks)).sum() };
    let idle_cpu_before = ztunnel_cpu(&ztunnel_pids)?;
    std::thread::sleep(IDLE_SAMPLE);
    let idle_cpu = (ztunnel_cpu(&ztunnel_pids)? - idle_cpu_before) / IDLE_SAMPLE.as_secs_f64();
    let idle: Vec<Memory> = ztunnel_pids
        .iter()
        .map(|&p| memory_mb(p))
        .collect::<BenchResult<_>>()?;

    let pairs = [&raw, &meshed];
    let load_started = Instant::now();
    let (tp_raw, tp_mesh) = alternate(&pairs, &ztunnel_pids, ticks, |pair| {
        run_load(pair, "throughput", &["--seconds", THROUGHPUT_SECONDS])
    })?;
    let mut parallel = Vec::new();
    for connections in PARALLEL_DOWNLOADS {
        parallel.push(alternate(&pairs, &ztunnel_pids, ticks, |pair| {
            run_load(
                pair,
                "throughput",
                &[
                    "--seconds",
                    THROUGHPUT_SECONDS,
                    "--connections",
                    connections,
                ],
            )
        })?);
    }
    let (lat_raw, lat_mesh) = alternate(&pairs, &ztunnel_pids, ticks, |pair| {
        run_load(
            pair,
            "latency",
            &["--rate", LATENCY_RATE, "--seconds", LATENCY_SECONDS],
        )
    })?;
    let (cr_raw, cr_mesh) = alternate(&pairs, &ztunnel_pids, ticks, |pair| {
        run_load(
            pair,
            "connrate",
            &[
                "--seconds",
                CONNRATE_SECONDS,
                "--concurrency",
                CONNRATE_CONCURRENCY,
            ],
        )
    })?;
    let load = load_started.elapsed();
    let after_load: Vec<Memory> = ztunnel_pids
        .iter()
        .map(|&p| memory_mb(p))
        .collect::<BenchResult<_>>()?;
    std::thread::sleep(SETTLE);
    let settled: Vec<Memory> = ztunnel_pids
        .iter()
        .map(|&p| memory_mb(p))
        .collect::<BenchResult<_>>()?;
    let mut held = Vec::new();
    for connections in IDLE_CONNECTIONS {
        held.push(hold_idle(&meshed, &ztunnel_pids, connections)?);
    }

    // The table.
    let mut table = Table::header();
    // RSS rows: the "mesh vs raw" column shows RssAnon (MB) and the thread count.
    let tp = (
        median_of(&tp_raw, "mb_per_s"),
        median_of(&tp_mesh, "mb_per_s"),
    );
    let tp_ratio = tp.1 / tp.0;
    table.row(
        "one-stream throughput (MB/s)",
        &format!("{:.0}", tp.0),
        &format!("{:.0}", tp.1),
        &format!("{tp_ratio:.2}x"),
        &format!(">= {TARGET_THROUGHPUT_RATIO:.2}x"),
        verdict(tp_ratio >= TARGET_THROUGHPUT_RATIO),
    );
    for (connections, (raw_rounds, mesh_rounds)) in PARALLEL_DOWNLOADS.iter().zip(&parallel) {
        let (r, m) = (
            median_of(raw_rounds, "mb_per_s"),
            median_of(mesh_rounds, "mb_per_s"),
        );
        table.row(
            &format!("throughput, {connections} connections (MB/s)"),
            &format!("{r:.0}"),
            &format!("{m:.0}"),
            &format!("{:.2}x", m / r),
            "(no target)",
            "",
        );
    }
    for (key, name, target) in [
        ("p50_us", "p50", true),
        ("p90_us", "p90", false),
        ("p99_us", "p99", false),
        ("max_us", "max", false),
    ] {
        let (r, m) = (
            median_of(&lat_raw, key) / 1000.0,
            median_of(&lat_mesh, key) / 1000.0,
        );
        let added = m - r;
        table.row(
            &format!("{name} latency @{LATENCY_RATE} req/s, 1 KiB (ms)"),
            &format!("{r:.3}"),
            &format!("{m:.3}"),
            &format!("{added:+.3} ms"),
            &if target {
                format!("<= +{TARGET_ADDED_P50_MS:.2} ms")
            } else {
                "(no target)".into()
            },
            if target {
                verdict(added <= TARGET_ADDED_P50_MS)
            } else {
                ""
            },
        );
    }
    let cr = (
        median_of(&cr_raw, "per_second"),
        median_of(&cr_mesh, "per_second"),
    );
    let cr_ratio = cr.1 / cr.0;
    table.row(
        "new connections/s (1 KiB req, close)",
        &format!("{:.0}", cr.0),
        &format!("{:.0}", cr.1),
        &format!("{cr_ratio:.2}x"),
        &format!(">= {TARGET_CONNRATE_RATIO:.2}x"),
        verdict(cr_ratio >= TARGET_CONNRATE_RATIO),
    );
    for (node, ((idle, load), settled)) in idle.iter().zip(&after_load).zip(&settled).enumerate() {
        let role = if node == 0 {
            "client side"
        } else {
            "server side"
        };
        let threads = |m: &Memory| format!("anon {:.1}, {:.0} thr", m.anon, m.threads);
        table.row(
            &format!("ztunnel node {node} ({role}) RSS idle (MB)"),
            "-",
            &format!("{:.1}", idle.rss),
            &threads(idle),
            &format!("<= {TARGET_RSS_MB:.0} MB"),
            verdict(idle.rss <= TARGET_RSS_MB),
        );
        table.row(
            "  after load: now / peak (MB)",
            "-",
            &format!("{:.1}/{:.1}", load.rss, load.hwm),
            &threads(load),
            "(no target)",
            "",
        );
        let back = settled.rss <= idle.rss + RSS_SETTLE_SLACK_MB && settled.rss <= TARGET_RSS_MB;
        table.row(
            &format!("  {}s after load (MB)", SETTLE.as_secs()),
            "-",
            &format!("{:.1} ({:+.1})", settled.rss, settled.rss - idle.rss),
            &threads(settled),
            &format!("<= idle+{RSS_SETTLE_SLACK_MB:.0}, <= {TARGET_RSS_MB:.0}"),
            verdict(back),
        );
    }

    for hold in &held {
        for (node, per) in hold.kib_per_connection.iter().enumerate() {
            table.row(
                &format!(
                    "ztunnel node {node}, {} idle connections (KiB each)",
                    hold.connections
                ),
                "-",
                &format!("{per:.1}"),
                &format!("{:.1} MB held", hold.held[node].rss - hold.before[node].rss),
                &format!("<= {TARGET_KIB_PER_IDLE_CONNECTION:.0} KiB"),
                verdict(*per <= TARGET_KIB_PER_IDLE_CONNECTION),
            );
            let after = hold.after[node].rss - hold.before[node].rss;
            table.row(
                &format!("  {}s after they closed (MB over before)", SETTLE.as_secs()),
                "-",
                &format!("{after:+.1}"),
                &format!("{:.0} fds open", hold.fds_after[node]),
                &format!("<= +{RSS_SETTLE_SLACK_MB:.0} MB"),
                verdict(after <= RSS_SETTLE_SLACK_MB),
            );
        }
    }

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!();
    println!("== ambit L4 mesh benchmark (DESIGN §4) ==");
    println!(
        "machine: nproc={nproc}, {cpu_model}, kernel {}; load generators, servers and both ztunnels share these CPUs",
        kernel.trim()
    );
    println!(
        "topology: 2 nodes; client pod on node 0, server pod (ambit-testapp http, 1 KiB bodies) on node 1; raw pair in a non-ambient namespace, mesh pair in an ambient one (HBONE, mTLS)"
    );
    println!(
        "method: {ROUNDS} rounds per metric, raw and mesh alternating (raw,mesh / mesh,raw); medians shown; throughput {THROUGHPUT_SECONDS}s after 0.3s warm-up; latency open-loop {LATENCY_RATE} req/s for {LATENCY_SECONDS}s on one keep-alive connection, measured from scheduled send time; connrate {CONNRATE_SECONDS}s with {CONNRATE_CONCURRENCY} client threads; parallel throughput with {} connections; then {} idle tunnelled connections held (mesh only; one hello each, RSS 2 s after the last opened against just before)",
        PARALLEL_DOWNLOADS.join(" and "),
        IDLE_CONNECTIONS.map(|n| n.to_string()).join(" and then "),
    );
    println!();
    print!("{}", table.0);
    println!("(RSS rows: VmRSS, which counts the mapped pages of the binary and libraries; the third column is the anonymous part, RssAnon, and the thread count.)");
    println!();
    println!("CPU cost per unit of work (sums over all rounds; machine = every busy CPU, including anything else running):");
    // CPU seconds × factor / units = the figure in `unit`.
    let (tp8, tp100) = (&parallel[0], &parallel[1]);
    for (what, unit, factor, key, raw_rounds, mesh_rounds) in [
        ("throughput", "ms/MB", 1e9, "bytes", &tp_raw, &tp_mesh),
        ("tput x8", "ms/MB", 1e9, "bytes", &tp8.0, &tp8.1),
        ("tput x100", "ms/MB", 1e9, "bytes", &tp100.0, &tp100.1),
        ("latency", "us/request", 1e6, "count", &lat_raw, &lat_mesh),
        (
            "connrate",
            "us/connection",
            1e6,
            "connections",
            &cr_raw,
            &cr_mesh,
        ),
    ] {
        let per = |rounds: &[Fields], cpu: &str| sum_of(rounds, cpu) * factor / sum_of(rounds, key);
        println!(
            "  {what:<10} machine raw {:>7.1} / mesh {:>7.1} {unit} ({:.2}x); of which ztunnels {:.1} {unit}",
            per(raw_rounds, "machine_cpu_s"),
            per(mesh_rounds, "machine_cpu_s"),
            per(mesh_rounds, "machine_cpu_s") / per(raw_rounds, "machine_cpu_s"),
            per(mesh_rounds, "ztunnel_cpu_s"),
        );
    }
    println!(
        "ztunnel CPU at idle (both nodes, manifests polled every 100 ms): {:.1}% of one core",
        idle_cpu * 100.0
    );
    let errors = sum_of(&cr_raw, "errors") + sum_of(&cr_mesh, "errors");
    if errors > 0.0 {
        println!("connrate errors: {errors} (see the clients' stderr above)");
    }
    println!(
        "setup {:.1}s, load {:.1}s. Figures are same-run ratios against raw pod-to-pod TCP on this machine, not absolute claims.",
        setup.as_secs_f64(),
        load.as_secs_f64()
    );
    Ok(())
}
