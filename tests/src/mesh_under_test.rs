//! What a scenario does with a running mesh, whichever harness runs it: the netns mesh with
//! manifest files (`Mesh`) or the mesh under a real API server (`kube_mesh::KubeMesh`). Each harness says how it starts a ztunnel and plays
//! kubelet; reading the node agents (config dump, access log, HTTP ports), waiting on them
//! and rolling them are the same for both and live here once.
//!
//! ```no_run
//! use ambit_tests::{MeshUnderTest, PodSpec};
//! # fn scenario(mesh: &mut impl MeshUnderTest) -> ambit_tests::Result<()> {
//! let web = mesh.add_pod(PodSpec::new("shop", "web-0").on_node(1))?;
//! mesh.wait_until_enrolled(1, &["web-0"])?;
//! let _old = mesh.replace_ztunnel(1)?; // a rolling restart; the old one drains
//! # Ok(()) }
//! ```

use std::net::IpAddr;
use std::time::Duration;

use ztunnel::dump::ConfigDump;

use crate::access_log::AccessLine;
use crate::cluster::Cluster;
use crate::error::Result;
use crate::node_admin::{node_config_dump, node_http_get, wait_for_node_dump};
use crate::pod::{Pod, PodSpec};
use crate::process::Process;

/// How long [`MeshUnderTest::wait_for_dump`] waits for a node agent to see a change.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running mesh: one ztunnel per node of [`MeshUnderTest::cluster`], by node index.
pub trait MeshUnderTest {
    /// The nodes, pods and fabric the mesh runs on.
    fn cluster(&self) -> &Cluster;

    /// The node agents, by node index.
    fn ztunnels(&self) -> &[Process];

    fn ztunnels_mut(&mut self) -> &mut [Process];

    /// Starts a ztunnel on node `node` as this harness runs them (its flags, its tokens) and
    /// waits until it accepts pods. The running one stays in place: see
    /// [`MeshUnderTest::replace_ztunnel`].
    fn spawn_ztunnel(&self, node: usize) -> Result<Process>;

    /// Creates a pod as this harness's kubelet does — sandbox, CNI ADD and whatever makes it
    /// part of the cluster view — without waiting for the node agents to see it.
    fn start_pod(&mut self, spec: PodSpec) -> Result<Pod>;

    /// Deletes a pod as the kubelet does: CNI DEL, sandbox removed, object gone.
    fn delete_pod(&mut self, pod: &Pod) -> Result<()>;

    /// Node `node`'s ztunnel.
    fn ztunnel(&mut self, node: usize) -> &mut Process {
        &mut self.ztunnels_mut()[node]
    }

    /// Starts a successor for node `node`'s ztunnel and puts it in place; returns the one it
    /// replaced, untouched: stopped or dead already, or still draining (a rolling restart).
    fn replace_ztunnel(&mut self, node: usize) -> Result<Process> {
        let successor = self.spawn_ztunnel(node)?;
        Ok(std::mem::replace(&mut self.ztunnels_mut()[node], successor))
    }

    /// Adds a pod ([`MeshUnderTest::start_pod`]), then waits until every ztunnel knows its IP,
    /// so that traffic sent right after is resolved to it (in a real cluster the API server's
    /// watch has the same lag).
    fn add_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        let pod = self.start_pod(spec)?;
        let ip = IpAddr::V4(pod.ip());
        for node in 0..self.ztunnels().len() {
            let what = format!("{} knows {ip}", self.cluster().node(node).name());
            self.wait_for_dump(node, &what, |dump| dump.workload_with_ip(ip).is_some())?;
        }
        Ok(pod)
    }

    /// `/config_dump` of node `node`'s ztunnel.
    fn config_dump(&self, node: usize) -> Result<ConfigDump> {
        node_config_dump(self.cluster(), node)
    }

    /// Polls node `node`'s `/config_dump` until `ready` holds for it (up to [`DUMP_TIMEOUT`]).
    fn wait_for_dump(
        &self,
        node: usize,
        what: &str,
        ready: impl Fn(&ConfigDump) -> bool,
    ) -> Result<ConfigDump> {
        wait_for_node_dump(self.cluster(), node, what, DUMP_TIMEOUT, ready)
    }

    /// Waits until node `node`'s ztunnel proxies exactly the pods `expected` (by name, in the
    /// dump's order: namespace, then name).
    fn wait_until_enrolled(&self, node: usize, expected: &[&str]) -> Result<ConfigDump> {
        let what = format!("node {node} proxies exactly {expected:?}");
        self.wait_for_dump(node, &what, |dump| dump.enrolled_names() == expected)
    }

    /// The `connection complete` lines node `node`'s ztunnel has logged so far.
    fn access_log(&self, node: usize) -> Result<Vec<AccessLine>> {
        Ok(AccessLine::all_in(&self.ztunnels()[node].log()?))
    }

    /// Waits until node `node`'s ztunnel logged an access line matching `matches`.
    fn wait_for_access(
        &mut self,
        node: usize,
        timeout: Duration,
        matches: impl Fn(&AccessLine) -> bool,
    ) -> Result<AccessLine> {
        let line = self
            .ztunnel(node)
            .wait_for_line("access log line", timeout, |line| {
                line.contains("connection complete") && matches(&AccessLine::parse(line))
            })?;
        Ok(AccessLine::parse(&line))
    }

    /// GETs `path` from a ztunnel HTTP port on node `node`'s loopback; returns the body.
    fn http_get_on_node(&self, node: usize, port: u16, path: &str) -> Result<String> {
        node_http_get(self.cluster(), node, port, path)
    }
}
