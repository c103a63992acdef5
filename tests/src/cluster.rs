//! The cluster-in-a-box: nodes as network namespaces joined by a "fabric" bridge, pods attached
//! to per-node bridges by the real CNI plugins, torn down completely when dropped (also during a
//! panic's unwinding).
//!
//! Address plan for a cluster leased `10.X.0.0/16` (see [`crate::lease`]):
//!
//! | what | address |
//! |---|---|
//! | fabric bridge (control plane: run ambit-ca here) | 10.X.0.1/24 |
//! | node i underlay | 10.X.0.(10+i)/24 |
//! | node i pod CIDR (bridge gateway .1) | 10.X.(i+1).0/24 |
//! | Service VIPs (not routed: only the mesh makes them work) | 10.X.200.0/24 |
//!
//! Nothing connects to the root namespace: veth pairs are created directly between the fabric
//! and node namespaces, so no traffic can leave towards the machine's uplink and deleting the
//! namespaces deletes every link the cluster made.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::capture::Capture;
use crate::cni::{self, NetworkList, CNI_VERSION};
use crate::error::{HarnessError, Result};
use crate::lease::Lease;
use crate::manifests::{ClusterObjects, ManifestDir, NodeObject};
use crate::netns::{self, Netns};
use crate::pod::Pod;
use crate::process::{Process, ProcessSpec};

/// Most nodes a plan holds: pod CIDRs 10.X.1–100.0/24 stay clear of the VIP range.
pub const MAX_NODES: usize = 100;
/// Name of the pod network in every node's conflist.
pub const NETWORK_NAME: &str = "ambit";
/// File name of each node's conflist (the first in sort order wins, as with containerd).
pub const CONFLIST_NAME: &str = "10-ambit.conflist";
/// Set to keep the cluster's temp dir (logs, pcaps, manifests) even when the test passes.
pub const KEEP_ENV: &str = "AMBIT_KEEP_ARTIFACTS";

/// Builds a config for a chained plugin for one node (e.g. the node's ztunnel socket path).
pub type PluginConfigFn = Arc<dyn Fn(&Node) -> Value + Send + Sync>;

/// How to build a cluster: number of nodes, extra CNI plugins chained after bridge (with
/// host-local IPAM), and where plugins are found.
#[derive(Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    chained: Vec<PluginConfigFn>,
    cni_path: Vec<PathBuf>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            nodes: 2,
            chained: Vec::new(),
            cni_path: cni::default_cni_path(),
        }
    }
}

impl ClusterBuilder {
    pub fn nodes(mut self, count: usize) -> Self {
        self.nodes = count;
        self
    }

    /// Chain a plugin after bridge: `config` is its conflist entry (must have `type`; `name`,
    /// `cniVersion` and `prevResult` are injected on each call, as libcni does).
    pub fn chain_plugin(self, config: Value) -> Self {
        self.chain_plugin_per_node(move |_| config.clone())
    }

    /// Chain a plugin whose config depends on the node (paths under [`Node::dir`], its name).
    pub fn chain_plugin_per_node(
        mut self,
        config: impl Fn(&Node) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.chained.push(Arc::new(config));
        self
    }

    /// Look for plugins in `dir` first (e.g. the cargo target dir holding `ambit-cni`).
    pub fn cni_path_prepend(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cni_path.insert(0, dir.into());
        self
    }

    pub fn build(self) -> Result<Cluster> {
        Cluster::build(self)
    }
}

/// One node: a namespace with an underlay veth on the fabric, forwarding on, and routes to the
/// other nodes' pod CIDRs. Long-running node agents (ztunnel) run here as host-network pods.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) netns: Netns,
    pub(crate) ip: Ipv4Addr,
    pub(crate) pod_cidr_base: Ipv4Addr,
    pub(crate) bridge: String,
    pub(crate) dir: PathBuf,
}

impl Node {
    pub fn index(&self) -> usize {
        self.index
    }

    /// Kubernetes node name (`node-0`, …), as in Pod `spec.nodeName`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Underlay address (Node InternalIP; what HBONE dials between nodes).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `10.X.(i+1).0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("{}/24", self.pod_cidr_base)
    }

    /// The pod bridge the CNI bridge plugin creates in this node.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// A private folder for this node (sockets, IPAM state, CNI config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's CNI config dir, like /etc/cni/net.d: a CNI installer may rewrite the
    /// conflist here, and the next pod ADD on this node uses the new chain.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// Run a long-lived binary in the node's namespace (like a hostNetwork DaemonSet pod).
    pub fn spawn(&self, spec: ProcessSpec) -> Result<Process> {
        self.netns.spawn(spec)
    }

    /// Run a command to completion in the node's namespace; returns stdout.
    pub fn exec<I, S>(&self, program: impl AsRef<std::ffi::OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.netns.exec(program, args)
    }

    /// The conflist pods on this node are attached with (first `*.conflist` in sort order).
    pub fn network_list(&self) -> Result<NetworkList> {
        let dir = self.cni_conf_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| HarnessError::file("listing", &dir, e))?;
        let mut lists: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "conflist"))
            .collect();
        lists.sort();
        let first = lists
            .first()
            .ok_or_else(|| HarnessError::Invalid(format!("no *.conflist in {}", dir.display())))?;
        NetworkList::load(first)
    }
}

/// A running cluster. Everything it created goes away when it is dropped.
pub struct Cluster {
    pub(crate) lease: Option<Lease>,
    pub(crate) octet: u8,
    pub(crate) prefix: String,
    pub(crate) temp: Option<tempfile::TempDir>,
    pub(crate) root: PathBuf,
    pub(crate) log_dir: Arc<PathBuf>,
    pub(crate) cni_path: Vec<PathBuf>,
    pub(crate) fabric: Netns,
    pub(crate) nodes: Vec<Node>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) objects: ClusterObjects,
    pub(crate) manifests: ManifestDir,
    /// Namespaces actually created, in creation order (teardown deletes them in reverse).
    pub(crate) created: Vec<String>,
    pub(crate) next_pod: usize,
    pub(crate) next_vip: u8,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    fn build(builder: ClusterBuilder) -> Result<Cluster> {
        crate::require_root()?;
        if builder.nodes == 0 || builder.nodes > MAX_NODES {
            return Err(HarnessError::Invalid(format!(
                "a cluster has 1..={MAX_NODES} nodes, not {}",
                builder.nodes
            )));
        }
        crate::sweep::sweep_once();
        let lease = Lease::acquire()?;
        let temp = tempfile::Builder::new()
            .prefix(&format!("ambit-{}-", lease.prefix))
            .tempdir()
            .map_err(|e| HarnessError::file("creating", std::env::temp_dir(), e))?;
        let root = temp.path().to_path_buf();
        let log_dir = Arc::new(root.join("logs"));
        std::fs::create_dir_all(log_dir.as_path())
            .map_err(|e| HarnessError::file("creating", log_dir.as_path(), e))?;
        let manifests = ManifestDir::create(root.join("manifests"))?;
        let prefix = lease.prefix.clone();
        let mut cluster = Cluster {
            octet: lease.octet,
            lease: Some(lease),
            fabric: Netns::named(&format!("{prefix}-fab"), log_dir.clone()),
            prefix,
            temp: Some(temp),
            root,
            log_dir,
            cni_path: builder.cni_path.clone(),
            nodes: Vec::new(),
            pods: Vec::new(),
            objects: ClusterObjects::default(),
            manifests,
            created: Vec::new(),
            next_pod: 0,
            next_vip: 10,
        };
        // From here on, an error drops `cluster`, which tears down whatever was made.
        cluster.create_fabric()?;
        for index in 0..builder.nodes {
            cluster.create_node(index, &builder)?;
        }
        cluster.route_between_nodes()?;
        cluster.sync_manifests()?;
        Ok(cluster)
    }

    fn create_netns(&mut self, name: &str) -> Result<Netns> {
        let netns = Netns::create(name, self.log_dir.clone())?;
        self.created.push(name.to_string());
        Ok(netns)
    }

    fn create_fabric(&mut self) -> Result<()> {
        let name = self.fabric.name().to_string();
        self.fabric = self.create_netns(&name)?;
        let bridge = self.fabric_bridge();
        let address = format!("{}/24", self.control_plane_ip());
        self.fabric
            .ip(&["link", "add", &bridge, "type", "bridge"])?;
        self.fabric.ip(&["addr", "add", &address, "dev", &bridge])?;
        self.fabric.ip(&["link", "set", &bridge, "up"]).map(|_| ())
    }

    fn create_node(&mut self, index: usize, builder: &ClusterBuilder) -> Result<()> {
        let x = self.octet;
        let netns = self.create_netns(&format!("{}-n{index}", self.prefix))?;
        let underlay = format!("{}u{index}", self.prefix);
        let fabric_end = format!("{}f{index}", self.prefix);
        let ip = Ipv4Addr::new(10, x, 0, 10 + index as u8);
        // Both veth ends are born inside namespaces: nothing ever appears in the root one.
        let fabric_ns = self.fabric.name().to_string();
        netns.ip(&[
            "link",
            "add",
            &underlay,
            "type",
            "veth",
            "peer",
            "name",
            &fabric_end,
            "netns",
            &fabric_ns,
        ])?;
        self.fabric
            .ip(&["link", "set", &fabric_end, "master", &self.fabric_bridge()])?;
        self.fabric.ip(&["link", "set", &fabric_end, "up"])?;
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", &underlay])?;
        netns.ip(&["link", "set", &underlay, "up"])?;
        // A node routes between its pods and the other nodes, like a kubelet host.
        netns.sysctl(&[("net.ipv4.ip_forward", "1")])?;
        let dir = self.root.join("nodes").join(format!("node-{index}"));
        std::fs::create_dir_all(dir.join("net.d"))
            .map_err(|e| HarnessError::file("creating", &dir, e))?;
        let node = Node {
            index,
            name: format!("node-{index}"),
            netns,
            ip,
            pod_cidr_base: Ipv4Addr::new(10, x, index as u8 + 1, 0),
            bridge: format!("{}br{index}", self.prefix),
            dir,
        };
        let list = base_network_list(&node, &builder.chained);
        list.store(&node.cni_conf_dir().join(CONFLIST_NAME))?;
        self.objects.nodes.push(NodeObject {
            name: node.name.clone(),
            internal_ip: node.ip,
            pod_cidr: node.pod_cidr(),
        });
        self.nodes.push(node);
        Ok(())
    }

    /// Static routes for every pod CIDR via its node, on the other nodes and the fabric (so
    /// a control-plane process can reach pods too). No default route anywhere: 10.X is all
    /// there is.
    fn route_between_nodes(&self) -> Result<()> {
        for target in &self.nodes {
            let (cidr, via) = (target.pod_cidr(), target.ip.to_string());
            for node in self.nodes.iter().filter(|n| n.index != target.index) {
                node.netns.ip(&["route", "add", &cidr, "via", &via])?;
            }
            self.fabric.ip(&["route", "add", &cidr, "via", &via])?;
        }
        Ok(())
    }

    /// Unique name prefix of this cluster's namespaces and links (`ab` + 5 hex digits).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `10.X.0.0/16`.
    pub fn subnet(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    /// X of this cluster's 10.X.0.0/16.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// The cluster's temp dir (logs/, manifests/, nodes/…); kept after a panic.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Pass this as `--manifests` to binaries that need cluster state.
    pub fn manifests_dir(&self) -> &Path {
        self.manifests.path()
    }

    /// The namespace holding the bridge between the nodes (the "wire").
    pub fn fabric(&self) -> &Netns {
        &self.fabric
    }

    pub fn fabric_bridge(&self) -> String {
        format!("{}fab", self.prefix)
    }

    /// Address of the fabric bridge: processes spawned in [`Cluster::fabric`] (e.g. ambit-ca)
    /// are reachable here from every node and pod.
    pub fn control_plane_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, 1)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index`; panics on a bad index like slice indexing (a bug in the test).
    pub fn node(&self, index: usize) -> &Node {
        match self.nodes.get(index) {
            Some(node) => node,
            None => panic!("cluster has {} nodes, no node {index}", self.nodes.len()),
        }
    }

    /// Start tcpdump on the fabric bridge (sees all traffic between nodes).
    pub fn capture(&self, filter: &str) -> Result<Capture> {
        Capture::start(&self.fabric, &self.fabric_bridge(), filter)
    }

    /// Write the manifests folder to match the cluster's objects.
    pub(crate) fn sync_manifests(&mut self) -> Result<()> {
        let files = self.objects.files();
        self.manifests.sync(&files)
    }

    /// Tear down now and report problems (dropping does the same, silently).
    pub fn teardown(mut self) -> Result<()> {
        self.teardown_inner()
    }

    fn teardown_inner(&mut self) -> Result<()> {
        let mut first_error: Option<HarnessError> = None;
        // Pods first, while node agents are still up, as kubelet would.
        while let Some(pod) = self.pods.pop() {
            if let Err(error) = pod.cni_del(&self.cni_path) {
                first_error.get_or_insert(error);
            }
        }
        // Processes pin sockets and mounts: kill them before deleting their namespaces.
        for name in &self.created {
            netns::kill_all_in(name);
        }
        let mut failed = false;
        for name in self.created.drain(..).rev() {
            if let Err(error) = netns::delete(&name) {
                failed = true;
                first_error.get_or_insert(error);
            }
        }
        if let Some(lease) = self.lease.take() {
            // A lease left behind marks the leftovers for the next sweep.
            if !failed {
                lease.release();
            }
        }
        if let Some(temp) = self.temp.take() {
            if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
                let kept = temp.keep();
                eprintln!("ambit-tests: kept cluster artifacts in {}", kept.display());
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.teardown_inner() {
            eprintln!(
                "ambit-tests: teardown of cluster {} incomplete: {error}",
                self.prefix
            );
        }
    }
}

/// bridge + host-local for this node's pod CIDR, then the chained plugins.
fn base_network_list(node: &Node, chained: &[PluginConfigFn]) -> NetworkList {
    let gateway = Ipv4Addr::from(u32::from(node.pod_cidr_base) + 1);
    let bridge = json!({
        "type": "bridge",
        "bridge": node.bridge,
        "isGateway": true,
        "isDefaultGateway": true,
        // Never NAT: pod IPs must reach the mesh unchanged, and nothing may leave 10.X.
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": node.pod_cidr(), "gateway": gateway.to_string()}]],
            "dataDir": node.dir.join("ipam").to_string_lossy(),
        },
    });
    let mut plugins = vec![bridge];
    plugins.extend(chained.iter().map(|config| config(node)));
    NetworkList {
        name: NETWORK_NAME.to_string(),
        cni_version: CNI_VERSION.to_string(),
        plugins,
    }
}
