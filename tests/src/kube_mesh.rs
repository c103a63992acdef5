//! The mesh in the box driven by a real Kubernetes API server: `manifests/` applied to a test
//! kube-apiserver 1.20.2, `ambit-ca` and one `ztunnel` per node in Kubernetes mode with the
//! tokens of their ServiceAccounts (so only the manifests' RBAC lets them work), and the harness
//! playing kubelet: it creates Pod objects, attaches the pods' network namespaces with the CNI
//! chain, and reports their IPs in `status`.
//!
//! ```no_run
//! use ambit_tests::kube_mesh::KubeMesh;
//! use ambit_tests::{MeshUnderTest, PodSpec};
//! # fn main() -> ambit_tests::Result<()> {
//! let mut mesh = KubeMesh::start(2)?;
//! mesh.kubectl(&["create", "namespace", "shop"])?;
//! let web = mesh.add_pod(PodSpec::new("shop", "web-0").on_node(1).service_account("web"))?;
//! mesh.kubectl(&["label", "namespace", "shop", "istio.io/dataplane-mode=ambient"])?;
//! mesh.delete_pod(&web)?;
//! # Ok(()) }
//! ```
//!
//! The API server listens on the host's 127.0.0.1, which the cluster's namespaces cannot reach
//! (no link to the root namespace, no NAT): a [`TcpRelay`] listening inside the fabric on
//! `10.X.0.1:6443` carries the connections of the CA and the ztunnels to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::error::{HarnessError, Result};
use crate::kube::{KubeApiServer, ISSUER};
use crate::mesh::{mesh_binaries, MeshBinaries, CA_PORT};
use crate::mesh_under_test::MeshUnderTest;
use crate::pod::{Pod, PodSpec};
use crate::process::{Process, ProcessSpec};

mod relay;
pub use relay::TcpRelay;

/// Where the relay listens on the fabric, as a kube-apiserver does.
pub const API_PORT: u16 = 6443;
/// A name the test API server's certificate holds: clients verify it against this name, since
/// the relay's address is not in the certificate.
pub const API_SERVER_NAME: &str = "kubernetes.default.svc";
/// Namespace, ServiceAccounts and objects of `manifests/`.
pub const SYSTEM_NAMESPACE: &str = "ambit-system";
pub const ROOT_SECRET: &str = "ambit-system/ambit-ca-root";
pub const ROOT_CONFIGMAP: &str = "ambit-system/ambit-ca-root-cert";
/// The audience the CA reviews node agents' tokens for (as in the DaemonSet's projected token).
pub const CA_AUDIENCE: &str = "ambit-ca";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository's `manifests/` (the kustomize base users apply).
pub fn manifests_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("manifests")
}

/// A running mesh whose cluster state lives in a real API server. Dropping it stops the
/// processes, the relay, the cluster's namespaces and then the API server, in that order.
pub struct KubeMesh {
    // Field order is drop order: processes before the relay they talk through, the relay
    // before the namespace it listens in, the API server last.
    pub ztunnels: Vec<Process>,
    pub ca: Process,
    relay: TcpRelay,
    pub cluster: Cluster,
    pub api: KubeApiServer,
    pub binaries: MeshBinaries,
    ca_root: PathBuf,
}

impl KubeMesh {
    /// Starts the API server, applies `manifests/` (`kubectl apply -k`), builds a cluster of
    /// `nodes` nodes and starts the CA and one ztunnel per node against the API server.
    pub fn start(nodes: usize) -> Result<KubeMesh> {
        crate::require_root()?;
        let binaries = mesh_binaries()?;
        let api = KubeApiServer::start()?;
        let manifests = manifests_root();
        api.kubectl(&["apply", "-k", &manifests.to_string_lossy()])?;
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
        let api_port = api
            .url()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u16>().ok())
            .ok_or_else(|| HarnessError::Invalid(format!("no port in {}", api.url())))?;
        let relay = TcpRelay::start(
            cluster.fabric(),
            SocketAddr::from((cluster.control_plane_ip(), API_PORT)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, api_port)),
        )?;

        let ca = start_ca(&api, &cluster, &binaries, relay.address())?;
        let ca_root = cluster.root_dir().join("ca-root.crt");
        let bundle = api.kubectl(&[
            "get",
            "configmap",
            "--namespace",
            SYSTEM_NAMESPACE,
            configmap_name(),
            "-o",
            r"jsonpath={.data.ca\.crt}",
        ])?;
        if !bundle.contains("BEGIN CERTIFICATE") {
            return Err(HarnessError::Invalid(format!(
                "ConfigMap {ROOT_CONFIGMAP} holds no ca.crt after the CA started: {bundle:?}"
            )));
        }
        write(&ca_root, &bundle)?;

        let mut mesh = KubeMesh {
            ztunnels: Vec::new(),
            ca,
            relay,
            cluster,
            api,
            binaries,
            ca_root,
        };
        for index in 0..nodes {
            let ztunnel = mesh.spawn_ztunnel(index)?;
            mesh.ztunnels.push(ztunnel);
        }
        Ok(mesh)
    }

    /// `kubectl ARGS…` as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.api.kubectl(args)
    }

    /// The relay the cluster's processes reach the API server through.
    pub fn relay(&self) -> &TcpRelay {
        &self.relay
    }

    /// The trust bundle the CA published (what the DaemonSet mounts as `--ca-root`).
    pub fn ca_root(&self) -> &Path {
        &self.ca_root
    }

    /// The stand-in for the DaemonSet's pod on `node` (the test API server runs no
    /// controllers): only what the CA checks matters — namespace, ServiceAccount, label
    /// `app=ztunnel`, node, uid. Created once; returns its uid.
    fn ztunnel_pod(&self, name: &str, node: &str) -> Result<String> {
        let existing = self.api.kubectl_output(
            None,
            &[
                "get",
                "pod",
                "--namespace",
                SYSTEM_NAMESPACE,
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ],
            None,
        )?;
        if existing.success && !existing.stdout.trim().is_empty() {
            return Ok(existing.stdout.trim().to_string());
        }
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": {"app": "ztunnel"}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "ztunnel",
                "hostNetwork": true,
                "automountServiceAccountToken": false,
                "containers": [{"name": "ztunnel", "image": "ghcr.io/ambit-mesh/ztunnel:test"}],
            },
        });
        self.create(&pod)
    }

    /// `ambit-ca`'s address on the fabric.
    pub fn ca_address(&self) -> SocketAddr {
        SocketAddr::from((self.cluster.control_plane_ip(), CA_PORT))
    }

    /// `PUT …/pods/NAME/status`: kubectl 1.20 cannot patch a subresource, but it can replace
    /// one with `--raw`.
    fn report_running(&self, pod: &Pod) -> Result<()> {
        let namespace = format!("--namespace={}", pod.namespace());
        let current = self
            .api
            .kubectl(&["get", "pod", pod.name(), &namespace, "-o", "json"])?;
        let mut object: Value = serde_json::from_str(&current).map_err(|e| {
            HarnessError::Invalid(format!("Pod {} is not JSON ({e}): {current}", pod.name()))
        })?;
        let node_ip = self.cluster.node(pod.node()).ip().to_string();
        let now = "1970-01-01T00:00:01Z";
        let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        let conditions = ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map(condition);
        object["status"] = json!({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": node_ip,
            "podIP": pod.ip().to_string(),
            "podIPs": [{"ip": pod.ip().to_string()}],
            "startTime": now,
        });
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            pod.namespace(),
            pod.name()
        );
        self.kubectl_stdin(&["replace", "--raw", &path, "-f", "-"], &object)
            .map(|_| ())
    }

    /// `kubectl create` of `object`; returns the uid the API server gave it.
    fn create(&self, object: &Value) -> Result<String> {
        let uid = self.kubectl_stdin(
            &["create", "-f", "-", "-o", "jsonpath={.metadata.uid}"],
            object,
        )?;
        Ok(uid.trim().to_string())
    }

    fn force_delete(&self, namespace: &str, name: &str) -> Result<String> {
        let namespace = format!("--namespace={namespace}");
        self.kubectl(&[
            "delete",
            "pod",
            name,
            &namespace,
            "--grace-period=0",
            "--force",
        ])
    }

    fn kubectl_stdin(&self, args: &[&str], object: &Value) -> Result<String> {
        let out = self
            .api
            .kubectl_output(None, args, Some(object.to_string().as_bytes()))?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(HarnessError::Command {
                command: format!("kubectl {}", args.join(" ")),
                status: out.status.clone(),
                stderr: crate::cmd::failure_text(&out),
            })
        }
    }
}

/// Kubelet and DaemonSet played against the API server; the rest is [`MeshUnderTest`]'s.
impl MeshUnderTest for KubeMesh {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn ztunnels(&self) -> &[Process] {
        &self.ztunnels
    }

    fn ztunnels_mut(&mut self) -> &mut [Process] {
        &mut self.ztunnels
    }

    /// Starts node `index`'s ztunnel as the DaemonSet would: a stand-in ztunnel Pod object on
    /// that node provides the identity, a token of the `ztunnel` ServiceAccount reads the API,
    /// and a projected-style token (audience `ambit-ca`, bound to that pod) proves the node to
    /// the CA. Waits until it accepts pods.
    fn spawn_ztunnel(&self, index: usize) -> Result<Process> {
        let node = self.cluster.node(index);
        let pod_name = format!("ztunnel-{}", node.name());
        let uid = self.ztunnel_pod(&pod_name, node.name())?;
        let bound = Some((pod_name.as_str(), uid.as_str()));
        let api_token =
            self.api
                .service_account_token(SYSTEM_NAMESPACE, "ztunnel", &[ISSUER], bound)?;
        let ca_token =
            self.api
                .service_account_token(SYSTEM_NAMESPACE, "ztunnel", &[CA_AUDIENCE], bound)?;
        let kubeconfig = node.dir().join("ztunnel.kubeconfig");
        write_kubeconfig(&kubeconfig, self.relay.address(), &self.api, &api_token)?;
        let token_file = node.dir().join("ca-token");
        write(&token_file, &ca_token)?;
        let mut process = node.spawn(
            without_proxy(ProcessSpec::new(&self.binaries.ztunnel))
                .name(format!("ztunnel-{index}"))
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info,hbone=debug")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--node", node.name()])
                .args(["--ca-address", &self.ca_address().to_string()])
                .arg("--ca-root")
                .arg(&self.ca_root)
                .arg("--ca-token-file")
                .arg(&token_file)
                .arg("--enroll-socket")
                .arg(node.dir().join("enroll.sock"))
                // Never the machine's resolvers (nothing answers there in this mesh).
                .args([
                    "--dns-upstream",
                    &format!("{}:53", self.cluster.control_plane_ip()),
                ])
                .args(["--drain-timeout", "5s"]),
        )?;
        process.wait_for_log("ztunnel ready for pods", START_TIMEOUT)?;
        Ok(process)
    }

    /// Plays kubelet for a new pod: creates the Pod object (scheduled to `spec.node`, Pending),
    /// runs the node's CNI chain with the object's uid, then reports the pod Running and Ready
    /// with its IP in `status`.
    fn start_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        let node = self.cluster.node(spec.node).name().to_string();
        let ports: Vec<Value> = spec
            .ports
            .iter()
            .map(|p| json!({"containerPort": p.port}))
            .collect();
        let object = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": spec.labels},
            "spec": {
                "nodeName": node,
                "serviceAccountName": spec.service_account,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "ambit-testapp:test", "ports": ports}],
            },
        });
        let uid = self.create(&object)?;
        let (namespace, name) = (spec.namespace.clone(), spec.name.clone());
        let pod = match self.cluster.add_pod(spec.uid(&uid)) {
            Ok(pod) => pod,
            Err(error) => {
                // Leave no object claiming a sandbox that does not exist.
                let _ = self.force_delete(&namespace, &name);
                return Err(error);
            }
        };
        self.report_running(&pod)?;
        Ok(pod)
    }

    /// Plays kubelet for a deleted pod: a graceful `kubectl delete` (the object stays, marked
    /// for deletion), then CNI DEL and the sandbox removed, then the final deletion kubelet
    /// makes once the containers are gone.
    fn delete_pod(&mut self, pod: &Pod) -> Result<()> {
        let namespace = format!("--namespace={}", pod.namespace());
        self.kubectl(&["delete", "pod", pod.name(), &namespace, "--wait=false"])?;
        self.cluster.remove_pod(pod)?;
        self.force_delete(pod.namespace(), pod.name()).map(|_| ())
    }
}

/// `ambit-ca serve` in Kubernetes mode on the fabric, as the `ambit-ca` ServiceAccount, with
/// its root in a Secret and the trust bundle published in a ConfigMap (the Deployment's flags).
fn start_ca(
    api: &KubeApiServer,
    cluster: &Cluster,
    binaries: &MeshBinaries,
    api_address: SocketAddr,
) -> Result<Process> {
    let token = api.service_account_token(SYSTEM_NAMESPACE, "ambit-ca", &[ISSUER], None)?;
    let kubeconfig = cluster.root_dir().join("ambit-ca.kubeconfig");
    write_kubeconfig(&kubeconfig, api_address, api, &token)?;
    let listen = SocketAddr::from((cluster.control_plane_ip(), CA_PORT));
    let mut ca = cluster.fabric().spawn(
        without_proxy(ProcessSpec::new(&binaries.ambit_ca))
            .name("ambit-ca")
            .env("NO_COLOR", "1")
            .args(["serve", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--listen", &listen.to_string()])
            .args(["--root-secret", ROOT_SECRET])
            .args(["--root-configmap", ROOT_CONFIGMAP])
            .args(["--token-audience", CA_AUDIENCE]),
    )?;
    ca.wait_for_log("ambit-ca serving", START_TIMEOUT)?;
    Ok(ca)
}

fn configmap_name() -> &'static str {
    ROOT_CONFIGMAP
        .split_once('/')
        .map_or(ROOT_CONFIGMAP, |(_, name)| name)
}

/// kube-rs takes `HTTPS_PROXY` from the environment; the relay is never behind a proxy.
fn without_proxy(spec: ProcessSpec) -> ProcessSpec {
    spec.env("HTTPS_PROXY", "").env("https_proxy", "")
}

/// A kubeconfig for `token` that reaches the API server through the relay at `server`,
/// verifying its certificate for [`API_SERVER_NAME`].
fn write_kubeconfig(
    path: &Path,
    server: SocketAddr,
    api: &KubeApiServer,
    token: &str,
) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ambit-box\n  cluster:\n    \
         server: https://{server}\n    certificate-authority: {}\n    \
         tls-server-name: {API_SERVER_NAME}\nusers:\n- name: user\n  user:\n    \
         token: {token}\ncontexts:\n- name: ambit-box\n  context:\n    cluster: ambit-box\n    \
         user: user\ncurrent-context: ambit-box\n",
        api.ca_cert_path().display()
    );
    write(path, &text)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| HarnessError::file("writing", path, e))
}
