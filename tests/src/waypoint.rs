//! Waypoints in the cluster-in-a-box: what the waypoint controller does in Kubernetes — a
//! Gateway of class `ambit-waypoint`, its Service (named like the Gateway, port 15008) and a
//! pod running `waypoint` under the Gateway's service account — done by the harness, with a
//! CA token for that service account (`system:serviceaccount:<ns>:<name>` in the tokens file).
//!
//! ```no_run
//! # fn scenario(mesh: &mut ambit_tests::Mesh) -> ambit_tests::Result<()> {
//! let waypoint = mesh.add_waypoint("shop", "waypoint", 0)?;
//! mesh.bind_namespace_to_waypoint("shop", "waypoint")?;
//! # Ok(()) }
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::error::{HarnessError, Result};
use crate::manifests::Labels;
use crate::mesh::{Mesh, CA_PORT};
use crate::mesh_under_test::MeshUnderTest;
use crate::pod::{Pod, PodSpec, ServiceSpec};
use crate::process::{Process, ProcessSpec};

/// The label the waypoint controller puts on a Gateway's pods (Gateway API's convention).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running waypoint: its pod and its process.
pub struct Waypoint {
    // The process first: it stops before its pod's namespace goes away.
    pub process: Process,
    pub pod: Pod,
}

impl Mesh {
    /// Starts the waypoint `namespace/name` on node `node` and waits until it serves: writes
    /// the Gateway and its Service, creates the pod (never captured: a waypoint speaks HBONE
    /// itself), gives its service account a CA token and runs `waypoint` in the pod.
    pub fn add_waypoint(&mut self, namespace: &str, name: &str, node: usize) -> Result<Waypoint> {
        self.add_waypoint_with_args(namespace, name, node, &[])
    }

    /// [`Mesh::add_waypoint`] with more `waypoint` flags (e.g. `--otlp-endpoint URL`).
    pub fn add_waypoint_with_args(
        &mut self,
        namespace: &str,
        name: &str,
        node: usize,
        extra_args: &[&str],
    ) -> Result<Waypoint> {
        self.cluster.put_manifest(
            &format!("waypoint-{namespace}-{name}.yaml"),
            vec![json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": {"namespace": namespace, "name": name},
                "spec": {
                    "gatewayClassName": "ambit-waypoint",
                    "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
                },
            })],
        )?;
        self.cluster.add_service(
            ServiceSpec::new(namespace, name)
                .selector(GATEWAY_NAME_LABEL, name)
                .port("mesh", 15008, 15008),
        )?;
        let pod = self.add_pod(
            PodSpec::new(namespace, &format!("{name}-0"))
                .on_node(node)
                .label(GATEWAY_NAME_LABEL, name)
                .label("istio.io/dataplane-mode", "none")
                .service_account(name),
        )?;

        let principal = format!("system:serviceaccount:{namespace}:{name}");
        let token = format!("token-waypoint-{namespace}-{name}");
        let tokens = self.cluster.root_dir().join("node-tokens");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&tokens)
            .map_err(|e| HarnessError::file("appending to", &tokens, e))?;
        writeln!(file, "{principal} {token}")
            .map_err(|e| HarnessError::file("appending to", &tokens, e))?;
        let token_file = self
            .cluster
            .root_dir()
            .join(format!("waypoint-{namespace}-{name}.token"));
        std::fs::write(&token_file, &token)
            .map_err(|e| HarnessError::file("writing", &token_file, e))?;

        let mut process = pod.spawn(
            ProcessSpec::new(&self.binaries.waypoint)
                .name(format!("waypoint-{namespace}-{name}"))
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info")
                .arg("--manifests")
                .arg(self.cluster.manifests_dir())
                .args(["--manifests-poll-interval", "100ms"])
                .args(["--gateway", &format!("{namespace}/{name}")])
                .args([
                    "--ca-address",
                    &format!("{}:{CA_PORT}", self.cluster.control_plane_ip()),
                ])
                .arg("--ca-root")
                .arg(self.ca_dir().join("ca.crt"))
                .arg("--ca-token-file")
                .arg(&token_file)
                .args(["--listen-address", &pod.ip().to_string()])
                .args(["--drain-timeout", "5s"])
                .args(extra_args),
        )?;
        process.wait_for_log("waypoint ready", READY_TIMEOUT)?;
        Ok(Waypoint { process, pod })
    }

    /// Labels `namespace` (ambient) so that its Services' traffic goes through the waypoint
    /// `waypoint` of that namespace (`istio.io/use-waypoint`); the namespace's other labels
    /// stay.
    pub fn bind_namespace_to_waypoint(&mut self, namespace: &str, waypoint: &str) -> Result<()> {
        let mut labels: Labels = self.cluster.namespace_labels(namespace);
        labels.insert("istio.io/dataplane-mode".to_owned(), "ambient".to_owned());
        labels.insert("istio.io/use-waypoint".to_owned(), waypoint.to_owned());
        self.cluster.set_namespace_labels(namespace, labels)
    }

    /// Waits until every node's ztunnel knows each Service `(namespace, name)` with endpoints
    /// on all its ports: before that, traffic to its VIP passes through unmeshed.
    pub fn wait_for_services(&self, services: &[(&str, &str)]) -> Result<()> {
        for node in 0..self.ztunnels.len() {
            self.wait_for_dump(
                node,
                "ztunnel knows the Services and their endpoints",
                |dump| {
                    services.iter().all(|(namespace, name)| {
                        dump.services.iter().any(|s| {
                            s.namespace == *namespace
                                && s.name == *name
                                && s.ports.iter().all(|p| !p.endpoints.is_empty())
                        })
                    })
                },
            )?;
        }
        Ok(())
    }
}
