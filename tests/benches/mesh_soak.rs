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
//!   bounded by the connections held and back to idle, RSS back near idle, KiB and MiB per
//!   connection against DESIGN's 8 KiB per idle connection.
//!
//! ```text
//! cargo bench -p ambit-tests --bench mesh_soak        # root; ~4 min at the defaults
//! AMBIT_SOAK_CONNECTIONS=2000 AMBIT_SOAK_SECONDS=40 cargo bench -p ambit-tests --bench mesh_soak
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "soak/checks.rs"]
mod checks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ambit_tests::{Mesh, Pod, PodSpec, Process, ProcessSpec, TestApp, NEEDS_ROOT};
use checks::{Check, ConnRecord, Usage};

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
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}: cannot parse {text:?}")),
    }
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
            // The HBONE pool closes a connection idle for 60 s; the last sample comes after.
            settle_seconds: env("AMBIT_SOAK_SETTLE_SECONDS", 70)?,
        };
        if config.pods == 0 || config.reverse_percent > 100 || config.ramp_seconds > seconds {
            return Err("AMBIT_SOAK_PODS ≥ 1, AMBIT_SOAK_REVERSE_PERCENT ≤ 100, AMBIT_SOAK_RAMP_SECONDS ≤ AMBIT_SOAK_SECONDS".into());
        }
        Ok(config)
    }
}

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("mesh_soak: a benchmark; run it with `cargo bench -p ambit-tests --bench mesh_soak` (as root)");
        return;
    }
    if ambit_tests::require_root().is_err() {
        eprintln!(
            "mesh_soak bench: {NEEDS_ROOT} (sudo -E cargo bench -p ambit-tests --bench mesh_soak)"
        );
        std::process::exit(1);
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

/// Lifts RLIMIT_NOFILE (soft and, as root, hard) before anything is spawned: ztunnel, the
/// clients and the servers inherit it. Returns the limit now in force.
fn raise_nofile(want: u64) -> Result<(u64, u64), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())?;
    let target = want.max(soft).max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| e.to_string())?;
    }
    getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| e.to_string())
}

/// One soak-client: its pod, how many connections, towards which servers.
struct ClientPlan {
    pod: Pod,
    connections: usize,
    targets: Vec<SocketAddr>,
    id_base: u64,
    report: PathBuf,
}

struct Server {
    pod: Pod,
    expect: usize,
    report: PathBuf,
    process: Option<Process>,
}

fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

fn run(config: &Config) -> Result<bool, String> {
    let limit = raise_nofile(1 << 20)?;
    let setup_started = Instant::now();
    let mut mesh = Mesh::start(2).map_err(|e| format!("starting the mesh: {e}"))?;
    let result = soak(config, &mut mesh, limit, setup_started);
    if !matches!(result, Ok(true)) {
        // Keep the logs and reports of a failed run (the cluster deletes its dir otherwise).
        std::env::set_var(ambit_tests::cluster::KEEP_ENV, "1");
    }
    result
}

fn soak(
    config: &Config,
    mesh: &mut Mesh,
    limit: (u64, u64),
    setup_started: Instant,
) -> Result<bool, String> {
    let err = |e: ambit_tests::HarnessError| e.to_string();
    mesh.cluster
        .set_namespace_labels(NAMESPACE, ambit_tests::scenario::ambient())
        .map_err(err)?;
    let reverse_pods = if config.reverse_percent == 0 {
        0
    } else {
        config.pods.div_ceil(10)
    };
    let reverse = config.connections * config.reverse_percent / 100;
    let forward = config.connections - reverse;
    let dir = mesh.cluster.root_dir().join("soak");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    // Pods: (direction, client node, pods per side).
    let mut servers: Vec<Server> = Vec::new();
    let mut clients: Vec<ClientPlan> = Vec::new();
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
                .map_err(err)?;
            targets.push(pod.addr(PORT));
            let report = dir.join(format!("{}.server", pod.name()));
            servers.push(Server {
                pod,
                expect: 0,
                report,
                process: None,
            });
        }
        for (i, connections) in spread(total, pods).into_iter().enumerate() {
            let pod = mesh
                .add_pod(
                    PodSpec::new(NAMESPACE, &format!("{direction}-client-{i}"))
                        .on_node(client_node)
                        .service_account("soak-client"),
                )
                .map_err(err)?;
            // Connection j goes to targets[j % T] (the testapp's rule).
            for j in 0..connections {
                servers[first_server + j % targets.len()].expect += 1;
            }
            let report = dir.join(format!("{}.client", pod.name()));
            clients.push(ClientPlan {
                pod,
                connections,
                targets: targets.clone(),
                id_base: clients.len() as u64 * 1_000_000,
                report,
            });
        }
    }
    for server in &mut servers {
        let mut process = server
            .pod
            .spawn(
                ProcessSpec::new(app().path())
                    .name(format!("{}-soak-server", server.pod.name()))
                    .args(["soak-server", "--listen", &format!("0.0.0.0:{PORT}")])
                    .arg("--report")
                    .arg(&server.report)
                    .args(["--expect", &server.expect.to_string()]),
            )
            .map_err(err)?;
        process
            .wait_for_log("listening on", Duration::from_secs(10))
            .map_err(err)?;
        server.process = Some(process);
    }
    let pids: Vec<u32> = mesh.ztunnels.iter().map(Process::pid).collect();
    for &pid in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "ztunnel" {
            return Err(format!("pid {pid} is {comm:?}, not ztunnel"));
        }
    }
    let zt_limits: Vec<String> = pids.iter().map(|&p| checks::nofile_limit(p)).collect();
    let setup = setup_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let idle = checks::sample(&pids, &servers_and_clients(&servers, &clients))?;
    let log_offsets: Vec<u64> = mesh
        .ztunnels
        .iter()
        .map(|z| z.log_len())
        .collect::<ambit_tests::Result<_>>()
        .map_err(err)?;

    // The load.
    let load_started = Instant::now();
    let mut running: Vec<Process> = Vec::new();
    for client in &clients {
        let mut spec = ProcessSpec::new(app().path())
            .name(format!("{}-soak-client", client.pod.name()))
            .arg("soak-client");
        for target in &client.targets {
            spec = spec.args(["--connect", &target.to_string()]);
        }
        spec = spec
            .args(["--connections", &client.connections.to_string()])
            .args(["--seconds", &config.seconds.to_string()])
            .args(["--ramp-seconds", &config.ramp_seconds.to_string()])
            .args(["--interval-ms", &config.interval_ms.to_string()])
            .args(["--message-bytes", &config.message_bytes.to_string()])
            .args(["--id-base", &client.id_base.to_string()])
            .args(["--timeout-ms", &CLIENT_TIMEOUT_MS.to_string()])
            .arg("--report")
            .arg(&client.report);
        running.push(client.pod.spawn(spec).map_err(err)?);
    }
    let deadline = load_started
        + Duration::from_secs(config.seconds + 60)
        + Duration::from_millis(3 * CLIENT_TIMEOUT_MS);
    let mut peak = vec![Usage::default(); pids.len()];
    let mut all_open: Option<(Duration, Vec<Usage>)> = None;
    let mut ztunnel_died = None;
    loop {
        let now: Vec<Usage> = pids
            .iter()
            .map(|&p| checks::usage(p))
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
            && running
                .iter()
                .all(|p| p.log().is_ok_and(|l| l.contains("connections open after")))
        {
            all_open = Some((load_started.elapsed(), now.clone()));
        }
        let mut finished = true;
        for client in &mut running {
            finished &= client.try_exit_status().map_err(err)?.is_some();
        }
        if finished || ztunnel_died.is_some() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if let Some(died) = &ztunnel_died {
        println!("{died}");
    }
    // Servers end once each saw its connections end; those that do not are stopped.
    let server_deadline = Instant::now() + Duration::from_secs(30);
    for server in &mut servers {
        if let Some(process) = &mut server.process {
            let left = server_deadline.saturating_duration_since(Instant::now());
            if process.wait_exit(left).map_err(err)?.is_none() {
                println!(
                    "server {} did not see all its {} connections end",
                    server.pod.name(),
                    server.expect
                );
            }
        }
    }
    for client in &mut running {
        client.stop().map_err(err)?;
    }
    let closed_at = Instant::now();
    let load = load_started.elapsed();
    let pods = servers_and_clients(&servers, &clients);
    let at = |seconds: u64| {
        let when = closed_at + Duration::from_secs(seconds);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
    };
    at(5);
    let after5 = checks::sample(&pids, &pods)?;
    at(30);
    let after30 = checks::sample(&pids, &pods)?;
    at(config.settle_seconds.max(30));
    let settled = checks::sample(&pids, &pods)?;

    // What the apps counted.
    let mut check = Check::default();
    let client_summaries: Vec<BTreeMap<String, String>> = running
        .iter()
        .map(|p| checks::summary(&p.log().unwrap_or_default()))
        .collect();
    let server_summaries: Vec<BTreeMap<String, String>> = servers
        .iter()
        .map(|s| {
            s.process
                .as_ref()
                .map(|p| checks::summary(&p.log().unwrap_or_default()))
                .unwrap_or_default()
        })
        .collect();
    let mut client_records: Vec<(usize, ConnRecord)> = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        for record in checks::read_records(&client.report)? {
            client_records.push((index, record));
        }
    }
    let mut server_records: Vec<(usize, ConnRecord)> = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        for record in checks::read_records(&server.report)? {
            server_records.push((index, record));
        }
    }
    let clients_info: Vec<(usize, std::net::Ipv4Addr)> =
        clients.iter().map(|c| (c.pod.node(), c.pod.ip())).collect();
    let servers_info: Vec<(usize, SocketAddr)> = servers
        .iter()
        .map(|s| (s.pod.node(), s.pod.addr(PORT)))
        .collect();
    checks::data(
        &mut check,
        config.connections,
        &client_records,
        &server_records,
        &client_summaries,
        &server_summaries,
    );
    let logs: Vec<Vec<ambit_tests::AccessLine>> = mesh
        .ztunnels
        .iter()
        .zip(&log_offsets)
        .map(|(z, &offset)| checks::access_lines(z, offset))
        .collect::<Result<_, _>>()?;
    checks::access(
        &mut check,
        &logs,
        &clients_info,
        &servers_info,
        &client_records,
        &server_records,
    );
    let log_problems: Vec<String> = mesh
        .ztunnels
        .iter()
        .zip(&log_offsets)
        .map(|(z, &offset)| checks::log_problems(z, offset))
        .collect::<Result<_, _>>()?;
    check.record(
        "no ztunnel crashed, hit EMFILE or shed a connection",
        ztunnel_died.is_none() && log_problems.iter().all(String::is_empty),
        format!(
            "{}{}",
            ztunnel_died.clone().unwrap_or_default(),
            log_problems.join("; ")
        ),
    );
    let samples = checks::Samples {
        idle,
        peak,
        all_open,
        after5,
        after30,
        settled,
        settle_seconds: config.settle_seconds.max(30),
    };
    checks::resources(&mut check, &samples, config.connections);

    println!();
    println!(
        "== ambit soak benchmark: {} concurrent tunnels (DESIGN §4) ==",
        config.connections
    );
    println!(
        "topology: 2 nodes; {} client pods on node 0 → {} server pods on node 1 ({forward} connections), {reverse_pods} → {reverse_pods} the other way ({reverse}); namespace ambient (HBONE, mTLS)",
        config.pods, config.pods
    );
    println!(
        "load: {} s per client process, connections opened over {} s, one {}-byte message each way per connection every {} ms, each verified (sequence, FNV-1a checksum, every payload byte regenerated)",
        config.seconds, config.ramp_seconds, config.message_bytes, config.interval_ms
    );
    println!(
        "RLIMIT_NOFILE of the bench (inherited): {}/{}; ztunnels: {}; setup {:.1} s, load {:.1} s",
        limit.0,
        limit.1,
        zt_limits.join(", "),
        setup.as_secs_f64(),
        load.as_secs_f64()
    );
    println!();
    print!("{}", checks::usage_table(&samples));
    println!();
    print!("{}", check.report());
    Ok(check.passed())
}

/// Every pod with its node, for counting ztunnel's HBONE sockets per node.
fn servers_and_clients(servers: &[Server], clients: &[ClientPlan]) -> Vec<Pod> {
    servers
        .iter()
        .map(|s| s.pod.clone())
        .chain(clients.iter().map(|c| c.pod.clone()))
        .collect()
}
