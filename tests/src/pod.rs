//! Pods and Services of the cluster-in-a-box: adding a pod runs the node's CNI chain exactly as
//! kubelet would and publishes the Pod object (Pending before the sandbox exists, Running with
//! its IP after) to the manifests folder; Services get a VIP and an EndpointSlice.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::Output;
use crate::cni::{self, CniRunner, NetworkList, RuntimeConf};
use crate::error::Result;
use crate::manifests::{ContainerPort, Labels, ServicePort};
use crate::netns::Netns;
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
/// the sandbox and removes it on teardown or `Cluster::remove_pod`.
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
    /// How long each plugin of the CNI ADD chain took, by type, in chain order.
    pub(crate) cni_add_times: Vec<(String, std::time::Duration)>,
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

    /// How long the pod's CNI ADD chain took, as the runtime waited for it.
    pub fn cni_add_duration(&self) -> std::time::Duration {
        self.cni_add_times.iter().map(|(_, took)| *took).sum()
    }

    /// How long the plugin of type `plugin` took in the pod's CNI ADD (e.g. `ambit-cni`).
    pub fn cni_plugin_duration(&self, plugin: &str) -> Option<std::time::Duration> {
        self.cni_add_times
            .iter()
            .find(|(name, _)| name == plugin)
            .map(|(_, took)| *took)
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

pub(crate) fn runtime_conf(
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
