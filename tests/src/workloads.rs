//! The API server's and kubelet's part for pods and Services in the cluster-in-a-box: the
//! [`Cluster`] methods that create a pod sandbox and attach it with the node's CNI chain, remove
//! it again, and write Service manifests. (Apart from `pod`, so that a [`Pod`] knows nothing
//! of the cluster that holds it.)

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::cni::{self, CniRunner};
use crate::error::{HarnessError, Result};
use crate::manifests::{Labels, NamespaceObject, PodObject, ServiceObject};
use crate::netns::{self, Netns};
use crate::pod::{runtime_conf, Pod, PodSpec, ServiceSpec, POD_IFNAME};

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
        let added = runner
            .add_timed(&network, &rt)
            .and_then(|(result, cni_add_times)| {
                let (ip, _) = cni::result_ipv4(&result, POD_IFNAME).ok_or_else(|| {
                    HarnessError::Invalid(format!(
                        "CNI result for pod {} has no IPv4 for {POD_IFNAME}: {result}",
                        spec.name
                    ))
                })?;
                Ok((result, ip, cni_add_times))
            });
        let (cni_result, ip, cni_add_times) = match added {
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
            cni_add_times,
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
        let pod = self.take_pod(pod)?;
        let del = pod.cni_del(&self.cni_path);
        self.tear_down_sandbox(&pod)?;
        del
    }

    /// Takes `pod` out of the cluster's list of pods; an error names a pod it never had.
    pub(crate) fn take_pod(&mut self, pod: &Pod) -> Result<Pod> {
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
        Ok(self.pods.remove(position))
    }

    /// What follows a pod's CNI DEL (or its loss): what runs in it is killed, its network
    /// namespace deleted and its Pod object removed from the manifests.
    pub(crate) fn tear_down_sandbox(&mut self, pod: &Pod) -> Result<()> {
        netns::kill_all_in(pod.netns.name());
        netns::delete(pod.netns.name())?;
        self.created.retain(|n| n != pod.netns.name());
        self.objects
            .pods
            .remove(&(pod.namespace.clone(), pod.name.clone()));
        self.sync_manifests()
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
