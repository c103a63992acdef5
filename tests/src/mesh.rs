//! The whole mesh in the box: `ambit-ca` on the fabric (the control plane), one `ztunnel` per
//! node (host networking, as the DaemonSet runs), and `ambit-cni` chained after bridge +
//! host-local on every node. Tests then add namespaces, pods and policies as manifests and
//! drive real traffic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::mesh_under_test::MeshUnderTest;
use crate::pod::{Pod, PodSpec};
use crate::process::{Process, ProcessSpec};

/// The CA's API port (as istiod's).
pub const CA_PORT: u16 = 15012;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Paths of the mesh binaries, built once per test process.
#[derive(Debug, Clone)]
pub struct MeshBinaries {
    pub ztunnel: PathBuf,
    pub ambit_ca: PathBuf,
    /// The L7 proxy, run as a waypoint pod (see the `waypoint` module).
    pub waypoint: PathBuf,
    /// Directory holding `ambit-cni`, for CNI_PATH.
    pub cni_dir: PathBuf,
}

/// A directory that already holds `ztunnel`, `ambit-ca`, `ambit-cni` and `waypoint`, from the build the
/// caller just ran (`scripts/demo.sh` sets it to `target/release`): the harness then builds
/// nothing. Its own build selects other packages than the caller's, so cargo would unify other
/// dependency features and compile most of the mesh a second time, silently.
pub const PREBUILT_DIR_ENV: &str = "AMBIT_MESH_BIN_DIR";

/// Builds `ztunnel`, `ambit-ca` and `ambit-cni` with the same profile as the running test (a
/// no-op when `cargo test --workspace` already did) and returns where they are; with
/// [`PREBUILT_DIR_ENV`] set, takes them from that directory instead.
pub fn mesh_binaries() -> Result<MeshBinaries> {
    static BUILT: OnceLock<std::result::Result<MeshBinaries, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binaries().map_err(|e| e.to_string()))
        .clone()
        .map_err(HarnessError::Invalid)
}

/// Variables cargo sets for a running target (not for cargo itself).
const CARGO_TARGET_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

fn build_binaries() -> Result<MeshBinaries> {
    match std::env::var_os(PREBUILT_DIR_ENV) {
        Some(dir) => locate_binaries(
            Path::new(&dir),
            &format!(
                "{PREBUILT_DIR_ENV} names this directory: build ztunnel, ambit-ca, ambit-cni and waypoint into it, or unset {PREBUILT_DIR_ENV} to let the harness build them"
            ),
        ),
        None => locate_binaries(&cargo_build_mesh()?, "cargo build did not produce it"),
    }
}

/// The mesh binaries in `profile_dir`, or the error naming the first one missing and `hint`.
fn locate_binaries(profile_dir: &Path, hint: &str) -> Result<MeshBinaries> {
    let binaries = MeshBinaries {
        // AMBIT_TEST_ZTUNNEL runs the scenarios against another build (say, the previous
        // release, to show that a regression test fails without its fix).
        ztunnel: std::env::var_os("AMBIT_TEST_ZTUNNEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.join("ztunnel")),
        ambit_ca: profile_dir.join("ambit-ca"),
        waypoint: profile_dir.join("waypoint"),
        // Likewise AMBIT_TEST_CNI_DIR: a directory holding another build's `ambit-cni`.
        cni_dir: std::env::var_os("AMBIT_TEST_CNI_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| profile_dir.to_path_buf()),
    };
    for path in [
        &binaries.ztunnel,
        &binaries.ambit_ca,
        &binaries.waypoint,
        &binaries.cni_dir.join("ambit-cni"),
    ] {
        if !path.is_file() {
            return Err(HarnessError::Invalid(format!(
                "{} is missing ({hint})",
                path.display()
            )));
        }
    }
    Ok(binaries)
}

/// Runs `cargo build` for the mesh binaries in the running test's profile and returns that
/// profile's output directory.
fn cargo_build_mesh() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| HarnessError::file("locating", "current_exe", e))?;
    // target/<profile>/deps/<test> (tests, benches) or target/<profile>/<bin> (the demo).
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| {
            HarnessError::Invalid(format!("unexpected binary location {}", exe.display()))
        })?
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir.pop();
    }
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // cargo gives the running test or bench the package's own variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*, …). Passed on, they reach build scripts that watch them (ring's
    // `rerun-if-env-changed`), so every nested build would rebuild ring and all that depends on
    // it, and the next outer build would rebuild them back.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if CARGO_TARGET_ENV.contains(&&*key_text)
            || key_text.starts_with("CARGO_PKG_")
            || key_text.starts_with("CARGO_BIN_EXE_")
        {
            build.env_remove(&key);
        }
    }
    build.current_dir(&workspace).args([
        "build",
        "--quiet",
        "-p",
        "ztunnel",
        "-p",
        "ambit-ca",
        "-p",
        "ambit-cni",
        "-p",
        "waypoint",
    ]);
    if release {
        build.arg("--release");
    }
    let output = build.output().map_err(|e| HarnessError::Spawn {
        command: "cargo build (mesh binaries)".into(),
        source: e,
    })?;
    if !output.status.success() {
        return Err(HarnessError::Invalid(format!(
            "building the mesh binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(profile_dir)
}

/// What a test may change about the mesh it starts; the default is what [`Mesh::start`] runs.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Extra arguments for every ztunnel, after the harness's own (e.g. `--cert-ttl 60s`). They
    /// stay in force when a test restarts a ztunnel ([`MeshUnderTest::replace_ztunnel`]).
    pub ztunnel_args: Vec<String>,
    /// `--drain-timeout` of every ztunnel: how long a stopping or handing-over one lets its
    /// established connections finish. [`DEFAULT_DRAIN_TIMEOUT`] when unset, so tests that stop
    /// a ztunnel do not wait long; clap takes the flag once, so `ztunnel_args` cannot override it.
    pub drain_timeout: Option<Duration>,
}

/// The harness's `--drain-timeout` unless [`MeshOptions::drain_timeout`] says otherwise.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl MeshOptions {
    /// Sets every ztunnel's `--drain-timeout` (e.g. longer than a test's long-lived connections).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// Adds arguments for every ztunnel of the mesh.
    pub fn ztunnel_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ztunnel_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running mesh on a cluster-in-a-box.
pub struct Mesh {
    // Processes first: they are stopped before the cluster's namespaces go away.
    pub ztunnels: Vec<Process>,
    pub ca: Process,
    pub cluster: Cluster,
    pub binaries: MeshBinaries,
    ca_dir: PathBuf,
    options: MeshOptions,
}

impl Mesh {
    /// Builds a cluster of `nodes` nodes and starts the control plane and one ztunnel per node.
    pub fn start(nodes: usize) -> Result<Mesh> {
        Mesh::start_with(nodes, MeshOptions::default())
    }

    /// Like [`Mesh::start`], with `options` (extra ztunnel flags, …).
    pub fn start_with(nodes: usize, options: MeshOptions) -> Result<Mesh> {
        crate::require_root()?;
        let binaries = mesh_binaries()?;
        let cluster = Cluster::builder()
            .nodes(nodes)
            .cni_path_prepend(&binaries.cni_dir)
            .chain_plugin_per_node(|node| {
                json!({
                    "type": "ambit-cni",
                    "enrollSocket": node.dir().join("enroll.sock"),
                    "logFile": node.dir().join("ambit-cni.log"),
                    "logLevel": "debug",
                })
            })
            .build()?;
        let root = cluster.root_dir().to_path_buf();
        let ca_dir = root.join("ca");
        run_checked(
            Command::new(&binaries.ambit_ca)
                .args(["init", "--dir"])
                .arg(&ca_dir),
        )?;
        let tokens: String = cluster
            .nodes()
            .iter()
            .map(|node| format!("{} token-{}\n", node.name(), node.name()))
            .collect();
        write(&root.join("node-tokens"), &tokens)?;

        let ca = spawn_ca(&cluster, &binaries, &ca_dir)?;

        let mut mesh = Mesh {
            ztunnels: Vec::new(),
            ca,
            cluster,
            binaries,
            ca_dir,
            options,
        };
        for index in 0..nodes {
            let ztunnel = mesh.spawn_ztunnel(index)?;
            mesh.ztunnels.push(ztunnel);
        }
        Ok(mesh)
    }

    /// Like [`MeshUnderTest::spawn_ztunnel`], adding `extra_args` after the mesh's own ztunnel flags
    /// (those of [`MeshOptions::ztunnel_args`] included).
    pub fn spawn_ztunnel_with(&self, index: usize, extra_args: &[&str]) -> Result<Process> {
        let node = self.cluster.node(index);
        let token = node.dir().join("ca-token");
        write(&token, &format!("token-{}\n", node.name()))?;
        let mut process = node.spawn(
            ProcessSpec::new(&self.binaries.ztunnel)
                .name(format!("ztunnel-{index}"))
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info,hbone=debug")
                .arg("--manifests")
                .arg(self.cluster.manifests_dir())
                .args(["--node", node.name()])
                .args([
                    "--ca-address",
                    &format!("{}:{CA_PORT}", self.cluster.control_plane_ip()),
                ])
                .arg("--ca-root")
                .arg(self.ca_dir.join("ca.crt"))
                .arg("--ca-token-file")
                .arg(&token)
                .arg("--enroll-socket")
                .arg(node.dir().join("enroll.sock"))
                // Never the machine's resolvers: the fake one of `start_dns_upstream`.
                .args(["--dns-upstream", &self.dns_upstream().to_string()])
                .args(["--manifests-poll-interval", "100ms"])
                .arg("--drain-timeout")
                .arg(format!(
                    "{}ms",
                    self.options
                        .drain_timeout
                        .unwrap_or(DEFAULT_DRAIN_TIMEOUT)
                        .as_millis()
                ))
                .args(&self.options.ztunnel_args)
                .args(extra_args),
        )?;
        process.wait_for_log("ztunnel ready for pods", START_TIMEOUT)?;
        Ok(process)
    }

    /// The CA directory (`ca.crt` is the mesh root).
    pub fn ca_dir(&self) -> &Path {
        &self.ca_dir
    }

    /// Starts the CA again (after `mesh.ca.stop()`) with the same root, tokens and flags, and
    /// waits until it serves: `mesh.ca = mesh.spawn_ca()?`.
    pub fn spawn_ca(&self) -> Result<Process> {
        spawn_ca(&self.cluster, &self.binaries, &self.ca_dir)
    }
}

/// `ambit-ca serve` on the fabric, with the root in `ca_dir` and the node tokens of the cluster.
fn spawn_ca(cluster: &Cluster, binaries: &MeshBinaries, ca_dir: &Path) -> Result<Process> {
    let ca_address = format!("{}:{CA_PORT}", cluster.control_plane_ip());
    let mut ca = cluster.fabric().spawn(
        ProcessSpec::new(&binaries.ambit_ca)
            .name("ambit-ca")
            .env("NO_COLOR", "1")
            .args(["serve", "--listen", &ca_address, "--dir"])
            .arg(ca_dir)
            .arg("--tokens-file")
            .arg(cluster.root_dir().join("node-tokens"))
            .arg("--manifests")
            .arg(cluster.manifests_dir())
            .args(["--manifests-poll-interval", "100ms"]),
    )?;
    ca.wait_for_log("ambit-ca serving", START_TIMEOUT)?;
    Ok(ca)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| HarnessError::file("writing", path, e))
}

fn run_checked(command: &mut Command) -> Result<String> {
    let output = command.output().map_err(|e| HarnessError::Spawn {
        command: format!("{command:?}"),
        source: e,
    })?;
    if !output.status.success() {
        return Err(HarnessError::Invalid(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl MeshUnderTest for Mesh {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn ztunnels(&self) -> &[Process] {
        &self.ztunnels
    }

    fn ztunnels_mut(&mut self) -> &mut [Process] {
        &mut self.ztunnels
    }

    /// Starts (or restarts) the ztunnel of node `node` with the mesh's flags (those of
    /// [`MeshOptions::ztunnel_args`] included) and waits until it accepts pods.
    fn spawn_ztunnel(&self, node: usize) -> Result<Process> {
        self.spawn_ztunnel_with(node, &[])
    }

    /// [`Cluster::add_pod`]: the sandbox, the CNI chain, and the pod in the manifests.
    fn start_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        self.cluster.add_pod(spec)
    }

    /// [`Cluster::remove_pod`]: CNI DEL, the sandbox and the pod's manifest gone.
    fn delete_pod(&mut self, pod: &Pod) -> Result<()> {
        self.cluster.remove_pod(pod)
    }
}

impl Mesh {
    /// The upstream resolver every ztunnel forwards to: port 53 on the fabric (the control
    /// plane's address), where [`Mesh::start_dns_upstream`] runs the fake resolver.
    pub fn dns_upstream(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.cluster.control_plane_ip(), 53))
    }

    /// Runs the fake upstream resolver at [`Mesh::dns_upstream`], answering `answers` and
    /// NXDOMAIN for everything else. Without it, forwarded queries get SERVFAIL.
    pub fn start_dns_upstream(&self, answers: &[(&str, std::net::IpAddr)]) -> Result<Process> {
        crate::testapp::TestApp::locate()?.dns_server(
            self.cluster.fabric(),
            self.dns_upstream(),
            answers,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(binaries: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in binaries {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        dir
    }

    #[test]
    fn a_prebuilt_directory_holding_every_mesh_binary_is_used_as_it_is() {
        let dir = dir_with(&["ztunnel", "ambit-ca", "ambit-cni", "waypoint"]);
        let binaries = locate_binaries(dir.path(), "unused").unwrap();
        assert_eq!(binaries.ambit_ca, dir.path().join("ambit-ca"));
    }

    #[test]
    fn a_missing_binary_is_named_with_the_way_out() {
        let dir = dir_with(&["ztunnel", "ambit-cni"]);
        let error = locate_binaries(dir.path(), "unset AMBIT_MESH_BIN_DIR")
            .unwrap_err()
            .to_string();
        let missing = dir.path().join("ambit-ca").display().to_string();
        assert!(error.contains(&missing), "{error}");
        assert!(error.contains("unset AMBIT_MESH_BIN_DIR"), "{error}");
    }
}
