//! Cluster-in-a-box: Kubernetes nodes and pods as Linux network namespaces, attached by the real
//! CNI plugins, running the real Ambit binaries, for end-to-end tests on one machine.
//!
//! ```no_run
//! use ambit_tests::{Cluster, PodSpec, TestApp};
//! # fn main() -> ambit_tests::Result<()> {
//! let mut cluster = Cluster::builder().nodes(2).build()?;
//! let client = cluster.add_pod(PodSpec::new("shop", "client").on_node(0))?;
//! let server = cluster.add_pod(PodSpec::new("shop", "web").on_node(1).label("app", "web"))?;
//! let app = TestApp::locate()?;
//! let _echo = app.echo_server(server.netns(), 8080)?;
//! let report = app.echo_client(client.netns(), server.addr(8080), 1 << 20, None)?;
//! assert!(report.intact());
//! # Ok(()) }
//! ```
//! See `tests/README.md` for the topology and the rest of the API.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod bench;
pub mod capture;
pub mod cluster;
pub mod cmd;
pub mod cni;
pub mod conformance;
pub mod dns;
pub mod error;
pub mod faults;
pub mod kube;
pub mod kube_mesh;
pub mod lease;
pub mod manifests;
pub mod mesh;
pub mod mesh_under_test;
pub mod netns;
pub mod node_admin;
pub mod pod;
pub mod process;
pub mod scenario;
pub mod sweep;
pub mod testapp;
pub mod waypoint;
pub mod workloads;

pub use access_log::AccessLine;
pub use capture::{Capture, Packets};
pub use cluster::{Cluster, ClusterBuilder, Node};
pub use dns::DnsAnswer;
pub use error::{HarnessError, Result, NEEDS_ROOT};
pub use manifests::Labels;
pub use mesh::{mesh_binaries, Mesh, MeshBinaries, MeshOptions};
pub use mesh_under_test::MeshUnderTest;
pub use netns::Netns;
pub use pod::{Pod, PodSpec, ServiceSpec};
pub use process::{Process, ProcessSpec};
pub use sweep::{sweep_stale, SweepReport};
pub use testapp::{EchoReport, TestApp};

/// Fails with [`NEEDS_ROOT`] unless running as root. Tests that need namespaces call this (or
/// just build a cluster, which calls it) so a non-root run fails loudly instead of skipping.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(HarnessError::NotRoot)
    }
}
