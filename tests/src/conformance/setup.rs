//! mesh-base.yaml built in the cluster-in-a-box, once per run: both namespaces ambient, the
//! Services with VIPs from the cluster's Service range, every Deployment's pods spread over the
//! nodes, each running `ambit-testapp mesh-echo` on its container's ports, and the waypoint of
//! gateway-conformance-mesh bound to that namespace.

use std::time::Duration;

use crate::conformance::case::data_dir;
use crate::conformance::objects::{expand_deployments, parse_base, PodPlan};
use crate::conformance::resolve::Resolver;
use crate::error::{HarnessError, Result};
use crate::mesh::Mesh;
use crate::mesh_under_test::MeshUnderTest;
use crate::pod::{Pod, PodSpec, ServiceSpec};
use crate::process::{Process, ProcessSpec};
use crate::scenario::DATAPLANE_MODE;
use crate::testapp::TestApp;
use crate::waypoint::Waypoint;

/// The namespace of the mesh echo apps; its Services are the routes' parents.
pub const MESH_NAMESPACE: &str = "gateway-conformance-mesh";
/// The waypoint's name (a Gateway of class ambit-waypoint in [`MESH_NAMESPACE`]).
pub const WAYPOINT: &str = "waypoint";

/// How a run behaves; the defaults are the Go suite's.
#[derive(Debug, Clone)]
pub struct Options {
    /// `MaxTimeToConsistency`: how long a case may take to pass (30 s).
    pub max_time_to_consistency: Duration,
    /// `RequiredConsecutiveSuccesses` (3).
    pub consecutive_successes: u32,
    /// Per-request timeout (10 s).
    pub request_timeout: Duration,
    /// Pause between attempts of a case.
    pub retry_interval: Duration,
    /// Pause after a test's manifests are removed, so its routes are gone from the proxies
    /// before the next test's cases run (the manifest folder is polled every 100 ms).
    pub settle: Duration,
    /// Node of the waypoint pod.
    pub waypoint_node: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_time_to_consistency: Duration::from_secs(30),
            consecutive_successes: 3,
            request_timeout: Duration::from_secs(10),
            retry_interval: Duration::from_millis(500),
            settle: Duration::from_secs(1),
            waypoint_node: 0,
        }
    }
}

impl Options {
    /// The defaults, with `AMBIT_MESH_CONFORMANCE_TIMEOUT_S` overriding the 30 s bound (a
    /// failing run then finishes sooner, or a slow machine gets more time).
    pub fn from_env() -> Options {
        let mut options = Options::default();
        if let Some(seconds) = std::env::var("AMBIT_MESH_CONFORMANCE_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            options.max_time_to_consistency = Duration::from_secs(seconds);
        }
        options
    }
}

/// mesh-base, running.
pub struct MeshConformance {
    pub(crate) app: TestApp,
    pub(crate) resolver: Resolver,
    /// Every echo pod with its plan: the clients are chosen among them.
    pub(crate) pods: Vec<(PodPlan, Pod)>,
    pub(crate) options: Options,
    // Kept for their lifetime: dropping them stops the echo servers and the waypoint.
    _echo_servers: Vec<Process>,
    _waypoint: Waypoint,
}

impl MeshConformance {
    /// Builds mesh-base.yaml (from this checkout's conformance data) on `mesh`.
    pub fn setup(mesh: &mut Mesh, options: Options) -> Result<MeshConformance> {
        let path = data_dir().join("mesh-base.yaml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| HarnessError::file("reading", &path, e))?;
        let base = parse_base(&text)?;
        let app = TestApp::locate()?;
        let mut resolver = Resolver::default();
        for namespace in &base.namespaces {
            let mut labels = namespace.labels.clone();
            labels.insert(DATAPLANE_MODE.into(), "ambient".into());
            mesh.cluster.set_namespace_labels(&namespace.name, labels)?;
        }
        for service in &base.services {
            let mut spec = ServiceSpec::new(&service.namespace, &service.name);
            spec.labels = service.labels.clone();
            spec.selector = service.selector.clone();
            for port in &service.ports {
                spec = spec.port(&port.name, port.port, port.target_port);
            }
            let created = mesh.cluster.add_service(spec)?;
            resolver.add_service(&service.namespace, &service.name, created.vip);
        }
        let mut pods = Vec::new();
        let mut echo_servers = Vec::new();
        for plan in expand_deployments(&base.deployments, mesh.cluster.nodes().len())? {
            let mut spec = PodSpec::new(&plan.namespace, &plan.name).on_node(plan.node);
            spec.labels = plan.labels.clone();
            for port in plan.echo.served() {
                spec = spec.port(port);
            }
            let pod = mesh.add_pod(spec)?;
            resolver.add_pod(&plan.namespace, &plan.labels, pod.ip());
            let version = plan.labels.get("version").map_or("", String::as_str);
            let mut server = pod.spawn(
                ProcessSpec::new(app.path())
                    .name(format!("mesh-echo-{}", plan.name))
                    .args(plan.echo.testapp_args(&plan.name, &plan.namespace, version)),
            )?;
            server.wait_for_log("mesh-echo ready", Duration::from_secs(10))?;
            echo_servers.push(server);
            pods.push((plan, pod));
        }
        let waypoint = start_waypoint(mesh, options.waypoint_node)?;
        Ok(MeshConformance {
            app,
            resolver,
            pods,
            options,
            _echo_servers: echo_servers,
            _waypoint: waypoint,
        })
    }
}

/// The waypoint of [`MESH_NAMESPACE`], and the namespace bound to it: the one place that needs
/// the waypoint harness (`Mesh::add_waypoint` / `Mesh::bind_namespace_to_waypoint` in
/// tests/src/waypoint.rs, issue 10). The consumer namespace gets no waypoint of its own: it has
/// no Services, and a consumer route is applied by the waypoint of its parent Service.
fn start_waypoint(mesh: &mut Mesh, node: usize) -> Result<Waypoint> {
    let waypoint = mesh.add_waypoint(MESH_NAMESPACE, WAYPOINT, node)?;
    mesh.bind_namespace_to_waypoint(MESH_NAMESPACE, WAYPOINT)?;
    Ok(waypoint)
}
