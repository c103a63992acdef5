//! Soak benchmark on the cluster-in-a-box (issue 8; DESIGN §4 "10 000 concurrent tunnels").
//!
//! Two nodes, namespace `soak` ambient. AMBIT_SOAK_PODS client pods on node 0 talk to as many
//! server pods on node 1 (the forward direction), and a few client pods on node 1 to server pods
//! on node 0 (the reverse direction, AMBIT_SOAK_REVERSE_PERCENT of the connections), so each
//! ztunnel carries outbound and inbound tunnels at once. Clients are `ambit-testapp
//! soak-client` (one process per pod, every connection a task of one tokio thread), servers
//! `soak-server`: every connection sends numbered, checksummed messages (one per
//! AMBIT_SOAK_INTERVAL_MS, AMBIT_SOAK_MESSAGE_BYTES each) that the other end verifies byte for
//! byte and answers with its own, for AMBIT_SOAK_SECONDS; the connections open over the first
//! AMBIT_SOAK_RAMP_SECONDS and stay open together until the end.
//!
//! Checked and printed (the bench exits 1 if any check fails):
//! - data: every byte either end sent was verified by the other (sequence, checksum, content),
//!   mismatches 0, no connection failed; client and server counts agree per connection (by id);
//! - access log: exactly one outbound line per connection on the client's node, keyed by the
//!   client's address, and one inbound line per connection on the server's node (matched on
//!   source pod, destination and both byte counts, which the hello's padding makes distinct per
//!   connection), bytes equal to what the apps counted, mTLS identities of both sides, no error;
//! - ztunnel RSS and open fds from /proc, sampled idle, every second under load (peak), when
//!   every connection is open, and 5 s / 30 s / AMBIT_SOAK_SETTLE_SECONDS after all closed: fds
//!   bounded by the connections held and back to idle (plus the HBONE connections the pool
//!   still holds), RSS back near idle once the pool has closed its idle HBONE connections (each
//!   is a live TLS session with its h2 buffers, kept on purpose for 60 s), KiB and MiB per
//!   connection against DESIGN's 8 KiB per idle connection. "Idle" is sampled after a warm-up
//!   (one short connection from every client pod to each of its servers, then the pool's idle
//!   HBONE connections left to close): what a ztunnel keeps by design for every pod pair that
//!   has talked (its Istio metric series, until a pod goes) is then in the baseline, so "back
//!   near idle" judges what the 10 000 connections left behind, not that the pods met. The cold
//!   figure (before the warm-up) is printed too.
//! - with AMBIT_SOAK_ROUNDS > 1 the whole load runs again on the same ztunnels (new client and
//!   server processes): a leak grows round after round, memory a ztunnel merely keeps for reuse
//!   (allocator caches) stops growing after the second round.
//!
//! ```text
//! cargo bench -p ambit-tests --bench mesh_soak        # root; ~5 min at the defaults
//! AMBIT_SOAK_CONNECTIONS=2000 AMBIT_SOAK_SECONDS=40 cargo bench -p ambit-tests --bench mesh_soak
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "soak/checks.rs"]
mod checks;
#[path = "soak/usage.rs"]
mod usage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ambit_tests::bench::env;
use ambit_tests::{Mesh, MeshUnderTest, Pod, PodSpec, Process, ProcessSpec, TestApp};
use checks::{Check, ConnRecord};
use usage::{RoundSamples, Samples, Usage};

const PORT: u16 = 9000;
const NAMESPACE: &str = "soak";
/// How long a client may stall (connect, a reply, the final EOF) before it counts as failed.
const CLIENT_TIMEOUT_MS: u64 = 20_000;

struct Config {
    connections: usize,
    seconds: u64,
    ramp_seconds: u64,
    interval_ms: u64,
    message_bytes: u32,
    pods: usize,
    reverse_percent: usize,
    settle_seconds: u64,
    rounds: usize,
}

impl Config {
    fn from_env() -> Result<Config, String> {
        let seconds = env("AMBIT_SOAK_SECONDS", 150)?;
        let config = Config {
            connections: env("AMBIT_SOAK_CONNECTIONS", 10_000)?,
            seconds,
            ramp_seconds: env("AMBIT_SOAK_RAMP_SECONDS", (seconds / 4).min(20))?,
            interval_ms: env("AMBIT_SOAK_INTERVAL_MS", 1000)?,
            message_bytes: env("AMBIT_SOAK_MESSAGE_BYTES", 256)?,
            pods: env("AMBIT_SOAK_PODS", 20)?,
            reverse_percent: env("AMBIT_SOAK_REVERSE_PERCENT", 10)?,
            // The HBONE pool closes a connection idle for 60 s, checking every 30 s: the last
            // sample comes after that.
            settle_seconds: env("AMBIT_SOAK_SETTLE_SECONDS", 100)?,
            rounds: env("AMBIT_SOAK_ROUNDS", 1)?,
        };
        if config.rounds == 0
            || config.pods == 0
            || config.reverse_percent > 100
            || config.ramp_seconds > seconds
        {
            return Err("AMBIT_SOAK_ROUNDS ≥ 1, AMBIT_SOAK_PODS ≥ 1, AMBIT_SOAK_REVERSE_PERCENT ≤ 100, AMBIT_SOAK_RAMP_SECONDS ≤ AMBIT_SOAK_SECONDS".into());
        }
        Ok(config)
    }
}

fn main() {
    if !ambit_tests::bench::entered("mesh_soak") {
        return;
    }
    match Config::from_env().and_then(|config| run(&config)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("mesh_soak: some checks FAILED (see above)");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("mesh_soak bench failed: {error}");
            std::process::exit(1);
        }
    }
}

fn app() -> TestApp {
    TestApp::at(env!("CARGO_BIN_EXE_ambit-testapp"))
}

/// One soak-client: its pod, how many connections, towards which servers.
struct ClientPlan {
    pod: Pod,
    connections: usize,
    targets: Vec<SocketAddr>,
}

struct ServerPlan {
    pod: Pod,
    expect: usize,
}

/// What one round asks of the clients and servers.
struct Load {
    /// Names the round's directory and processes; distinct per round.
    name: String,
    /// Makes connection ids unique across rounds.
    id_round: usize,
    seconds: u64,
    ramp_seconds: u64,
    /// All connections of the round.
    connections: usize,
    /// Connections per client (index as `Topology::clients`).
    per_client: Vec<usize>,
    /// Connections per server (index as `Topology::servers`).
    per_server: Vec<usize>,
}

impl Load {
    /// Round `index` of the soak proper.
    fn full(config: &Config, topology: &Topology, index: usize) -> Load {
        Load {
            name: format!("soak-round-{}", index + 1),
            id_round: index,
            seconds: config.seconds,
            ramp_seconds: config.ramp_seconds,
            connections: config.connections,
            per_client: topology.clients.iter().map(|c| c.connections).collect(),
            per_server: topology.servers.iter().map(|s| s.expect).collect(),
        }
    }

    /// One short connection from every client to each of its servers (ids after the rounds').
    fn warm_up(config: &Config, topology: &Topology) -> Load {
        let mut per_server = vec![0; topology.servers.len()];
        for client in &topology.clients {
            for target in &client.targets {
                if let Some(server) = topology
                    .servers
                    .iter()
                    .position(|s| s.pod.addr(PORT) == *target)
                {
                    per_server[server] += 1;
                }
            }
        }
        let per_client: Vec<usize> = topology.clients.iter().map(|c| c.targets.len()).collect();
        Load {
            name: "soak-warm-up".into(),
            id_round: config.rounds,
            seconds: 3,
            ramp_seconds: 1,
            connections: per_client.iter().sum(),
            per_client,
            per_server,
        }
    }
}

/// The pods of both directions and who connects where.
struct Topology {
    clients: Vec<ClientPlan>,
    servers: Vec<ServerPlan>,
    forward: usize,
    reverse: usize,
    reverse_pods: usize,
    /// HBONE connections the pools need at most: one per (client pod, server pod) and 200
    /// streams. Each node holds one socket for each (client or server end).
    hbone_connections: usize,
}

impl Topology {
    /// Every pod, for counting ztunnel's HBONE sockets per node.
    fn pods(&self) -> Vec<Pod> {
        let servers = self.servers.iter().map(|s| s.pod.clone());
        servers
            .chain(self.clients.iter().map(|c| c.pod.clone()))
            .collect()
    }
}

fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

fn harness(e: ambit_tests::HarnessError) -> String {
    e.to_string()
}

fn run(config: &Config) -> Result<bool, String> {
    let limit = ambit_tests::bench::raise_nofile(1 << 20)?;
    // Built (or found up to date) before the clock starts: the setup figure is the mesh's own.
    ambit_tests::mesh_binaries().map_err(harness)?;
    let setup_started = Instant::now();
    let mut mesh = Mesh::start(2).map_err(|e| format!("starting the mesh: {e}"))?;
    let result = soak(config, &mut mesh, limit, setup_started);
    if !matches!(result, Ok(true)) {
        // Keep the logs and reports of a failed run (the cluster deletes its dir otherwise).
        std::env::set_var(ambit_tests::cluster::KEEP_ENV, "1");
    }
    result
}

fn topology(config: &Config, mesh: &mut Mesh) -> Result<Topology, String> {
    mesh.cluster
        .set_namespace_labels(NAMESPACE, ambit_tests::scenario::ambient())
        .map_err(harness)?;
    let reverse_pods = if config.reverse_percent == 0 {
        0
    } else {
        config.pods.div_ceil(10)
    };
    let reverse = config.connections * config.reverse_percent / 100;
    let forward = config.connections - reverse;
    let mut servers: Vec<ServerPlan> = Vec::new();
    let mut clients: Vec<ClientPlan> = Vec::new();
    let mut hbone_connections = 0;
    for (direction, client_node, pods, total) in [
        ("fwd", 0, config.pods, forward),
        ("rev", 1, reverse_pods, reverse),
    ] {
        let mut targets = Vec::new();
        let first_server = servers.len();
        for i in 0..pods {
            let pod = mesh
                .add_pod(
                    PodSpec::new(NAMESPACE, &format!("{direction}-server-{i}"))
                        .on_node(1 - client_node)
                        .service_account("soak-server")
                        .label("app", "soak-server")
                        .port(PORT),
                )
                .map_err(harness)?;
            targets.push(pod.addr(PORT));
            servers.push(ServerPlan { pod, expect: 0 });
        }
        for (i, connections) in spread(total, pods).into_iter().enumerate() {
            let pod = mesh
                .add_pod(
                    PodSpec::new(NAMESPACE, &format!("{direction}-client-{i}"))
                        .on_node(client_node)
                        .service_account("soak-client"),
                )
                .map_err(harness)?;
            // Connection j goes to targets[j % T] (the testapp's rule).
            let mut per_server = vec![0usize; targets.len()];
            for j in 0..connections {
                per_server[j % targets.len()] += 1;
            }
            for (t, count) in per_server.into_iter().enumerate() {
                servers[first_server + t].expect += count;
                hbone_connections += count.div_ceil(hbone::config::MAX_CONCURRENT_STREAMS as usize);
            }
            clients.push(ClientPlan {
                pod,
                connections,
                targets: targets.clone(),
            });
        }
    }
    Ok(Topology {
        clients,
        servers,
        forward,
        reverse,
        reverse_pods,
        hbone_connections,
    })
}

fn soak(
    config: &Config,
    mesh: &mut Mesh,
    limit: (u64, u64),
    setup_started: Instant,
) -> Result<bool, String> {
    let topology = topology(config, mesh)?;
    let pids: Vec<u32> = mesh.ztunnels.iter().map(Process::pid).collect();
    for &pid in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "ztunnel" {
            return Err(format!("pid {pid} is {comm:?}, not ztunnel"));
        }
    }
    let zt_limits: Vec<String> = pids.iter().map(|&p| usage::nofile_limit(p)).collect();
    let setup = setup_started.elapsed();
    let pods = topology.pods();
    std::thread::sleep(Duration::from_secs(2));
    let cold = usage::sample(&pids, &pods)?;
    let heap_cold = heap(mesh);

    let mut check = Check::default();
    // Every round (the warm-up too) ends 30 s after its last connection closed; the pool's idle
    // HBONE connections need until `settle_seconds`.
    let settle_seconds = config.settle_seconds.max(30);
    let settle_rest = Duration::from_secs(settle_seconds).saturating_sub(Duration::from_secs(30));
    check.section("warm-up: ".into());
    round(
        config,
        mesh,
        &topology,
        &Load::warm_up(config, &topology),
        &pids,
        &mut check,
    )?;
    std::thread::sleep(settle_rest);
    let idle = usage::sample(&pids, &pods)?;
    let heap_idle = heap(mesh);

    let mut rounds = Vec::new();
    let mut loads = Vec::new();
    for index in 0..config.rounds {
        check.section(if config.rounds > 1 {
            format!("round {}: ", index + 1)
        } else {
            String::new()
        });
        let load = Load::full(config, &topology, index);
        let (samples, took) = round(config, mesh, &topology, &load, &pids, &mut check)?;
        rounds.push(samples);
        loads.push(took);
    }
    check.section(String::new());
    std::thread::sleep(settle_rest);
    let settled = usage::sample(&pids, &pods)?;
    let heap_settled = heap(mesh);
    let samples = Samples {
        idle,
        rounds,
        settled,
        settle_seconds,
    };
    usage::resources(
        &mut check,
        &samples,
        config.connections,
        topology.hbone_connections,
    );

    println!();
    println!(
        "== ambit soak benchmark: {} concurrent tunnels (DESIGN §4) ==",
        config.connections
    );
    println!(
        "topology: 2 nodes; {p} client pods on node 0 → {p} server pods on node 1 ({} connections), {r} → {r} the other way ({}); namespace ambient (HBONE, mTLS)",
        topology.forward,
        topology.reverse,
        p = config.pods,
        r = topology.reverse_pods,
    );
    println!(
        "load: {} round(s) of {} s per client process, connections opened over {} s, one {}-byte message each way per connection every {} ms, each verified (sequence, FNV-1a checksum, every payload byte regenerated)",
        config.rounds, config.seconds, config.ramp_seconds, config.message_bytes, config.interval_ms
    );
    let loads: Vec<String> = loads
        .iter()
        .map(|l| format!("{:.1}", l.as_secs_f64()))
        .collect();
    println!(
        "RLIMIT_NOFILE of the bench (inherited): {}/{}; ztunnels: {}; setup {:.1} s, load {} s",
        limit.0,
        limit.1,
        zt_limits.join(", "),
        setup.as_secs_f64(),
        loads.join(" + ")
    );
    println!();
    print!("{}", usage::table(&samples));
    for (node, cold) in cold.iter().enumerate() {
        println!(
            "node {node} RSS before the warm-up {:.1} MiB (idle above is after it)",
            cold.rss_kib as f64 / 1024.0
        );
    }
    for (node, ((cold, idle), settled)) in heap_cold
        .iter()
        .zip(&heap_idle)
        .zip(&heap_settled)
        .enumerate()
    {
        println!(
            "node {node} heap (allocated / resident MiB): before the warm-up {cold}, idle {idle}, {settle_seconds} s after all closed {settled}"
        );
    }
    println!();
    print!("{}", check.report());
    Ok(check.passed())
}

/// Each ztunnel's heap as its metrics report it (`ambit_heap_*_bytes`), as "allocated / resident".
fn heap(mesh: &Mesh) -> Vec<String> {
    (0..mesh.ztunnels.len())
        .map(|node| {
            let metrics = mesh
                .http_get_on_node(node, 15020, "/metrics")
                .unwrap_or_default();
            let mib = |name: &str| {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .map_or("?".to_string(), |bytes| format!("{:.1}", bytes / 1048576.0))
            };
            format!(
                "{} / {}",
                mib("ambit_heap_allocated_bytes "),
                mib("ambit_heap_resident_bytes ")
            )
        })
        .collect()
}

/// One round: servers and clients started afresh, the load, samples until 30 s after the last
/// connection closed, and the checks of what was sent and logged.
fn round(
    config: &Config,
    mesh: &mut Mesh,
    topology: &Topology,
    load: &Load,
    pids: &[u32],
    check: &mut Check,
) -> Result<(RoundSamples, Duration), String> {
    let dir = mesh.cluster.root_dir().join(&load.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let server_reports: Vec<PathBuf> = topology
        .servers
        .iter()
        .map(|s| dir.join(format!("{}.server", s.pod.name())))
        .collect();
    let client_reports: Vec<PathBuf> = topology
        .clients
        .iter()
        .map(|c| dir.join(format!("{}.client", c.pod.name())))
        .collect();
    let mut servers = Vec::new();
    for ((server, report), expect) in topology
        .servers
        .iter()
        .zip(&server_reports)
        .zip(&load.per_server)
    {
        let mut process = server
            .pod
            .spawn(
                ProcessSpec::new(app().path())
                    .name(format!("{}-{}-server", server.pod.name(), load.name))
                    .args(["soak-server", "--listen", &format!("0.0.0.0:{PORT}")])
                    .arg("--report")
                    .arg(report)
                    .args(["--expect", &expect.to_string()]),
            )
            .map_err(harness)?;
        process
            .wait_for_log("listening on", Duration::from_secs(10))
            .map_err(harness)?;
        servers.push(process);
    }
    let log_offsets: Vec<u64> = mesh
        .ztunnels
        .iter()
        .map(|z| z.log_len())
        .collect::<ambit_tests::Result<_>>()
        .map_err(harness)?;

    let load_started = Instant::now();
    let mut clients: Vec<Process> = Vec::new();
    for (number, ((client, report), connections)) in topology
        .clients
        .iter()
        .zip(&client_reports)
        .zip(&load.per_client)
        .enumerate()
    {
        let mut spec = ProcessSpec::new(app().path())
            .name(format!("{}-{}-client", client.pod.name(), load.name))
            .arg("soak-client");
        for target in &client.targets {
            spec = spec.args(["--connect", &target.to_string()]);
        }
        // Ids unique across clients and rounds.
        let id_base = ((load.id_round * topology.clients.len() + number) as u64) * 1_000_000;
        spec = spec
            .args(["--connections", &connections.to_string()])
            .args(["--seconds", &load.seconds.to_string()])
            .args(["--ramp-seconds", &load.ramp_seconds.to_string()])
            .args(["--interval-ms", &config.interval_ms.to_string()])
            .args(["--message-bytes", &config.message_bytes.to_string()])
            .args(["--id-base", &id_base.to_string()])
            .args(["--timeout-ms", &CLIENT_TIMEOUT_MS.to_string()])
            .arg("--report")
            .arg(report);
        clients.push(client.pod.spawn(spec).map_err(harness)?);
    }
    let deadline = load_started
        + Duration::from_secs(load.seconds + 60)
        + Duration::from_millis(3 * CLIENT_TIMEOUT_MS);
    let mut peak = vec![Usage::default(); pids.len()];
    let mut all_open: Option<(Duration, Vec<Usage>)> = None;
    let mut ztunnel_died = None;
    loop {
        let now: Vec<Usage> = pids
            .iter()
            .map(|&p| usage::usage(p))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        for (peak, now) in peak.iter_mut().zip(&now) {
            peak.rss_kib = peak.rss_kib.max(now.rss_kib);
            peak.anon_kib = peak.anon_kib.max(now.anon_kib);
            peak.fds = peak.fds.max(now.fds);
            peak.threads = peak.threads.max(now.threads);
        }
        for (node, ztunnel) in mesh.ztunnels.iter_mut().enumerate() {
            if let Ok(Some(status)) = ztunnel.try_exit_status() {
                ztunnel_died.get_or_insert(format!("ztunnel on node {node} exited: {status}"));
            }
        }
        if all_open.is_none()
            && clients
                .iter()
                .all(|p| p.log().is_ok_and(|l| l.contains("connections open after")))
        {
            all_open = Some((load_started.elapsed(), now.clone()));
            for (node, heap) in heap(mesh).iter().enumerate() {
                println!("node {node} heap with all open (allocated / resident MiB): {heap}");
            }
        }
        let mut finished = true;
        for client in &mut clients {
            finished &= client.try_exit_status().map_err(harness)?.is_some();
        }
        if finished || ztunnel_died.is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Servers end once each saw its connections end; those that do not are reported.
    let server_deadline = Instant::now() + Duration::from_secs(30);
    let mut servers_left = Vec::new();
    for (server, process) in topology.servers.iter().zip(&mut servers) {
        let left = server_deadline.saturating_duration_since(Instant::now());
        if process.wait_exit(left).map_err(harness)?.is_none() {
            servers_left.push(server.pod.name().to_string());
        }
    }
    let took = load_started.elapsed();
    let closed_at = Instant::now();
    let pods = topology.pods();
    let at = |seconds: u64| {
        let when = closed_at + Duration::from_secs(seconds);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    at(5);
    let after5 = usage::sample(pids, &pods)?;
    at(30);
    let after30 = usage::sample(pids, &pods)?;
    // ztunnel's own count of the connections it proxies (a ConnectionRecord not dropped would
    // stay in it).
    let active: Vec<String> = (0..mesh.ztunnels.len())
        .map(|node| {
            let metrics = mesh.http_get_on_node(node, 15020, "/metrics");
            metrics.map_or_else(
                |e| format!("? ({e})"),
                |text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("ambit_active_connections "))
                        .unwrap_or("?")
                        .trim()
                        .to_string()
                },
            )
        })
        .collect();
    check.record(
        "ztunnels report no active connection 30 s after all closed (ambit_active_connections)",
        active.iter().all(|a| a == "0"),
        format!(
            "node 0: {}, node 1: {}",
            active[0],
            active.get(1).map_or("?", |a| a)
        ),
    );
    for process in clients.iter_mut().chain(&mut servers) {
        process.stop().map_err(harness)?;
    }

    // What the apps counted, against each other and against the access lines.
    let summaries = |processes: &[Process]| -> Vec<BTreeMap<String, String>> {
        processes
            .iter()
            .map(|p| checks::summary(&p.log().unwrap_or_default()))
            .collect()
    };
    let records = |reports: &[PathBuf]| -> Result<Vec<(usize, ConnRecord)>, String> {
        let mut out = Vec::new();
        for (index, report) in reports.iter().enumerate() {
            out.extend(
                checks::read_records(report)?
                    .into_iter()
                    .map(|r| (index, r)),
            );
        }
        Ok(out)
    };
    let (client_records, server_records) = (records(&client_reports)?, records(&server_reports)?);
    let peers = checks::Peers {
        clients: topology
            .clients
            .iter()
            .map(|c| (c.pod.node(), c.pod.ip()))
            .collect(),
        servers: topology
            .servers
            .iter()
            .map(|s| (s.pod.node(), s.pod.addr(PORT)))
            .collect(),
    };
    checks::data(
        check,
        load.connections,
        &client_records,
        &server_records,
        &summaries(&clients),
        &summaries(&servers),
    );
    let logs: Vec<Vec<ambit_tests::AccessLine>> = mesh
        .ztunnels
        .iter()
        .zip(&log_offsets)
        .map(|(z, &offset)| checks::access_lines(z, offset))
        .collect::<Result<_, _>>()?;
    checks::access(check, &logs, &peers, &client_records, &server_records);
    let mut problems: Vec<String> = mesh
        .ztunnels
        .iter()
        .zip(&log_offsets)
        .map(|(z, &offset)| checks::log_problems(z, offset))
        .collect::<Result<Vec<_>, _>>()?;
    problems.extend(ztunnel_died);
    if !servers_left.is_empty() {
        problems.push(format!(
            "servers that did not see all their connections end: {}",
            servers_left.join(", ")
        ));
    }
    problems.retain(|p| !p.is_empty());
    check.record(
        "no ztunnel crashed, logged a warning or error (EMFILE, shed connections, …); every server saw its connections end",
        problems.is_empty(),
        if problems.is_empty() {
            "none".to_string()
        } else {
            problems.join("; ")
        },
    );
    Ok((
        RoundSamples {
            peak,
            all_open,
            after5,
            after30,
        },
        took,
    ))
}
