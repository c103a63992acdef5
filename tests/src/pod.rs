//! Pods and Services of the cluster-in-a-box: adding a pod runs the node's CNI chain exactly as
//! kubelet would and publishes the Pod object (Pending before the sandbox exists, Running with
//! its IP after) to the manifests folder; Services get a VIP and an EndpointSlice.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::cmd::Output;
use crate::cni::{self, CniRunner, NetworkList, RuntimeConf};
use crate::error::{HarnessError, Result};
use crate::manifests::{
    ContainerPort, Labels, NamespaceObject, PodObject, ServiceObject, ServicePort,
};
use crate::netns::{self, Netns};
use crate::process::{Process, ProcessSpec};

/// The interface name kubelet asks for.
pub const POD_IFNAME: &str = "eth0";

/// What a test wants: `PodSpec::new("shop", "web-0").on_node(1).label("app", "web")`.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: usize,
    pub labels: Labels,
    pub service_account: String,
    pub ports: Vec<ContainerPort>,
    /// Ports the kubelet probes (see [`PodSpec::probe`]).
    pub probe_ports: Vec<u16>,
    /// `metadata.uid` of a Pod object that exists elsewhere (a real API server assigns it);
    /// a random one when `None`. CNI calls carry it and ztunnel matches it.
    pub uid: Option<String>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            node: 0,
            labels: Labels::new(),
            service_account: "default".to_string(),
            ports: Vec::new(),
            probe_ports: Vec::new(),
            uid: None,
        }
    }

    pub fn on_node(mut self, index: usize) -> Self {
        self.node = index;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn service_account(mut self, name: &str) -> Self {
        self.service_account = name.to_string();
        self
    }

    /// Use this `metadata.uid` (that of the Pod object in an API server) instead of a random one.
    pub fn uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_string());
        self
    }

    /// A port the kubelet probes (a tcpSocket probe in the Pod object). The node's ztunnel
    /// SNATs connections from the node to it to the probe address that ambient pods exempt;
    /// test "kubelet probes" are connections from the node's namespace to this port.
    pub fn probe(mut self, port: u16) -> Self {
        self.probe_ports.push(port);
        self
    }

    /// A container port (shown in the Pod object; named ports can be Service targets).
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(ContainerPort { name: None, port });
        self
    }
}

/// A pod sandbox: its namespace, IP, and what CNI returned. Cheap to clone; the cluster owns
/// the sandbox and removes it on teardown or [`Cluster::remove_pod`].
#[derive(Debug, Clone)]
pub struct Pod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) container_id: String,
    pub(crate) node: usize,
    pub(crate) netns: Netns,
    /// The node's namespace, where CNI plugins run.
    pub(crate) node_netns: Netns,
    pub(crate) ip: Ipv4Addr,
    pub(crate) network: NetworkList,
    pub(crate) cni_result: Value,
}

impl Pod {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// Index of the node the pod runs on.
    pub fn node(&self) -> usize {
        self.node
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `ip:port` of this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The final result of the CNI ADD chain (what kubelet caches).
    pub fn cni_result(&self) -> &Value {
        &self.cni_result
    }

    /// Run a long-lived process inside the pod (a server, a load generator).
    pub fn spawn(&self, spec: ProcessSpec) -> Result<Process> {
        self.netns.spawn(spec)
    }

    /// Run a command to completion inside the pod; returns stdout, errors on failure.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.netns.exec(program, args)
    }

    /// Run a command inside the pod with a timeout; the caller judges the exit status.
    pub fn exec_output<I, S>(
        &self,
        program: impl AsRef<OsStr>,
        args: I,
        timeout: Duration,
    ) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.netns.exec_output(program, args, None, timeout)
    }

    fn runtime_conf(&self) -> RuntimeConf {
        runtime_conf(
            &self.namespace,
            &self.name,
            &self.uid,
            &self.container_id,
            &self.netns,
        )
    }

    /// DEL the chain this pod was added with, in the node's namespace.
    pub(crate) fn cni_del(&self, cni_path: &[PathBuf]) -> Result<()> {
        let runner = CniRunner {
            cni_path: cni_path.to_vec(),
            exec_in: self.node_netns.clone(),
            timeout: cni::PLUGIN_TIMEOUT,
        };
        runner.del(&self.network, &self.runtime_conf(), Some(&self.cni_result))
    }
}

/// A Service: `ServiceSpec::new("shop", "web").selector("app", "web").port("http", 80, 8080)`.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
}

impl ServiceSpec {
    pub fn new(namespace: &str, name: &str) -> ServiceSpec {
        ServiceSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            labels: Labels::new(),
            selector: Labels::new(),
            ports: Vec::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.selector.insert(key.to_string(), value.to_string());
        self
    }

    pub fn port(mut self, name: &str, port: u16, target_port: u16) -> Self {
        self.ports.push(ServicePort {
            name: name.to_string(),
            port,
            target_port,
        });
        self
    }
}

fn runtime_conf(
    namespace: &str,
    name: &str,
    uid: &str,
    container_id: &str,
    netns: &Netns,
) -> RuntimeConf {
    RuntimeConf {
        container_id: container_id.to_string(),
        netns_path: netns.path(),
        ifname: POD_IFNAME.to_string(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id.into()),
            ("K8S_POD_UID".into(), uid.into()),
        ],
    }
}

fn random_uid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Cluster {
    /// Create a pod sandbox on `spec.node` and attach it with the node's CNI chain. On a
    /// failed ADD the chain is DELeted and the sandbox removed (as kubelet does), and the error
    /// names the plugin and what it said.
    pub fn add_pod(&mut self, spec: PodSpec) -> Result<Pod> {
        let node = self.nodes.get(spec.node).cloned().ok_or_else(|| {
            HarnessError::Invalid(format!(
                "pod {}: no node {} in this cluster",
                spec.name, spec.node
            ))
        })?;
        let key = (spec.namespace.clone(), spec.name.clone());
        if self.objects.pods.contains_key(&key) {
            return Err(HarnessError::Invalid(format!(
                "pod {}/{} already exists",
                key.0, key.1
            )));
        }
        let uid = spec.uid.clone().unwrap_or_else(random_uid);
        let container_id = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        // Published first without an IP, like a scheduled pod whose sandbox is being created:
        // ambit-cni / ztunnel may look the pod up by name during ADD.
        let mut object = PodObject {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: uid.clone(),
            labels: spec.labels.clone(),
            node_name: node.name.clone(),
            host_ip: node.ip,
            service_account: spec.service_account.clone(),
            ports: spec.ports.clone(),
            probe_ports: spec.probe_ports.clone(),
            ip: None,
        };
        self.objects
            .namespaces
            .entry(spec.namespace.clone())
            .or_insert_with(|| NamespaceObject {
                name: spec.namespace.clone(),
                labels: Labels::new(),
            });
        self.objects.pods.insert(key.clone(), object.clone());
        self.sync_manifests()?;

        self.next_pod += 1;
        let netns_name = format!("{}-n{}-p{}", self.prefix, node.index, self.next_pod);
        let attached = self.attach(&netns_name, &node, &spec, &uid, &container_id);
        let pod = match attached {
            Ok(pod) => pod,
            Err(error) => {
                self.objects.pods.remove(&key);
                let _ = self.sync_manifests();
                return Err(error);
            }
        };
        object.ip = Some(pod.ip);
        self.objects.pods.insert(key, object);
        self.pods.push(pod.clone());
        self.sync_manifests()?;
        Ok(pod)
    }

    fn attach(
        &mut self,
        netns_name: &str,
        node: &crate::cluster::Node,
        spec: &PodSpec,
        uid: &str,
        container_id: &str,
    ) -> Result<Pod> {
        let netns = Netns::create(netns_name, self.log_dir.clone())?;
        self.created.push(netns_name.to_string());
        let network = node.network_list()?;
        let rt = runtime_conf(&spec.namespace, &spec.name, uid, container_id, &netns);
        let runner = CniRunner {
            cni_path: self.cni_path.clone(),
            exec_in: node.netns.clone(),
            timeout: cni::PLUGIN_TIMEOUT,
        };
        let added = runner.add(&network, &rt).and_then(|result| {
            let (ip, _) = cni::result_ipv4(&result, POD_IFNAME).ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "CNI result for pod {} has no IPv4 for {POD_IFNAME}: {result}",
                    spec.name
                ))
            })?;
            Ok((result, ip))
        });
        let (cni_result, ip) = match added {
            Ok(added) => added,
            Err(error) => {
                let _ = runner.del(&network, &rt, None);
                self.forget_netns(netns_name);
                return Err(error);
            }
        };
        Ok(Pod {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            uid: uid.to_string(),
            container_id: container_id.to_string(),
            node: node.index,
            netns,
            node_netns: node.netns.clone(),
            ip,
            network,
            cni_result,
        })
    }

    fn forget_netns(&mut self, name: &str) {
        netns::kill_all_in(name);
        if netns::delete(name).is_ok() {
            self.created.retain(|n| n != name);
        }
    }

    /// Delete a pod: CNI DEL (reverse chain), kill what runs in it, remove its namespace and
    /// its Pod object.
    pub fn remove_pod(&mut self, pod: &Pod) -> Result<()> {
        let position = self
            .pods
            .iter()
            .position(|p| p.netns.name() == pod.netns.name())
            .ok_or_else(|| {
                HarnessError::Invalid(format!(
                    "pod {}/{} is not in this cluster",
                    pod.namespace, pod.name
                ))
            })?;
        let pod = self.pods.remove(position);
        let del = pod.cni_del(&self.cni_path);
        netns::kill_all_in(pod.netns.name());
        netns::delete(pod.netns.name())?;
        self.created.retain(|n| n != pod.netns.name());
        self.objects
            .pods
            .remove(&(pod.namespace.clone(), pod.name.clone()));
        self.sync_manifests()?;
        del
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Replace a pod's labels (e.g. `istio.io/dataplane-mode`) and rewrite its manifest.
    pub fn set_pod_labels(&mut self, pod: &Pod, labels: Labels) -> Result<()> {
        let key = (pod.namespace.clone(), pod.name.clone());
        let object = self.objects.pods.get_mut(&key).ok_or_else(|| {
            HarnessError::Invalid(format!("pod {}/{} is not in this cluster", key.0, key.1))
        })?;
        object.labels = labels;
        self.sync_manifests()
    }

    /// A Namespace's labels as the harness last wrote them (empty when it has none).
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        self.objects
            .namespaces
            .get(namespace)
            .map(|n| n.labels.clone())
            .unwrap_or_default()
    }

    /// Create or relabel a Namespace (e.g. `istio.io/dataplane-mode=ambient`).
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: Labels) -> Result<()> {
        self.objects.namespaces.insert(
            namespace.to_string(),
            NamespaceObject {
                name: namespace.to_string(),
                labels,
            },
        );
        self.sync_manifests()
    }

    /// Add a ClusterIP Service with the next free VIP from 10.X.200.0/24, plus its
    /// EndpointSlice (kept in step with pods as they come and go).
    pub fn add_service(&mut self, spec: ServiceSpec) -> Result<ServiceObject> {
        if self.next_vip == u8::MAX {
            return Err(HarnessError::Invalid(
                "Service VIP range 10.X.200.0/24 is full".into(),
            ));
        }
        let key = (spec.namespace.clone(), spec.name.clone());
        if self.objects.services.contains_key(&key) {
            return Err(HarnessError::Invalid(format!(
                "service {}/{} already exists",
                key.0, key.1
            )));
        }
        let service = ServiceObject {
            namespace: spec.namespace.clone(),
            name: spec.name,
            labels: spec.labels,
            selector: spec.selector,
            vip: Ipv4Addr::new(10, self.octet, 200, self.next_vip),
            ports: spec.ports,
        };
        self.next_vip += 1;
        self.objects
            .namespaces
            .entry(spec.namespace.clone())
            .or_insert_with(|| NamespaceObject {
                name: spec.namespace,
                labels: Labels::new(),
            });
        self.objects.services.insert(key, service.clone());
        self.sync_manifests()?;
        Ok(service)
    }

    /// Write (or replace) a manifest file of the test's own: AuthorizationPolicy, Gateway, …
    pub fn put_manifest(&mut self, file_name: &str, docs: Vec<Value>) -> Result<()> {
        self.objects.extra.insert(file_name.to_string(), docs);
        self.sync_manifests()
    }

    /// Remove a manifest file written with [`Cluster::put_manifest`].
    pub fn remove_manifest(&mut self, file_name: &str) -> Result<()> {
        self.objects.extra.remove(file_name);
        self.sync_manifests()
    }
}
