//! The Kubernetes view of a cluster-in-a-box, written as ordinary YAML objects into a folder the
//! binaries read with `--manifests`: Namespaces, Nodes, Pods (with status.podIP, Running and
//! Ready), Services (ClusterIP VIPs) with the EndpointSlices the endpoint controller would
//! write, plus any extra objects a test adds (AuthorizationPolicy, Gateway, …).
//!
//! One object per file, named so a plain sort applies Namespaces before the objects in them.
//! Files are replaced atomically (write a temp file, rename) and only when their content
//! changed, so a watcher sees each edit once and never half a file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{HarnessError, Result};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceObject {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeObject {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    pub pod_cidr: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodObject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub node_name: String,
    pub host_ip: Ipv4Addr,
    pub service_account: String,
    pub ports: Vec<ContainerPort>,
    /// Ports the kubelet probes (one tcpSocket readiness probe each).
    pub probe_ports: Vec<u16>,
    /// `None` while the sandbox is being created (phase Pending, no podIP yet).
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceObject {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub selector: Labels,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
}

impl NamespaceObject {
    pub fn render(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.name, "labels": self.labels},
        })
    }
}

impl NodeObject {
    pub fn render(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}},
            "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": self.internal_ip.to_string()},
                {"type": "Hostname", "address": self.name},
            ]},
        })
    }
}

impl PodObject {
    pub fn render(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"containerPort": p.port, "protocol": "TCP"});
                if let Some(name) = &p.name {
                    port["name"] = json!(name);
                }
                port
            })
            .collect();
        let mut container = json!({"name": "app", "image": "ambit-testapp", "ports": ports});
        // Kubernetes allows one readiness probe per container; more ports become liveness and
        // startup probes, which is enough for the mesh (it only needs the ports).
        for (kind, port) in ["readinessProbe", "livenessProbe", "startupProbe"]
            .iter()
            .zip(&self.probe_ports)
        {
            container[*kind] = json!({"tcpSocket": {"port": port}});
        }
        let condition = |kind: &str| json!({"type": kind, "status": "True"});
        let status = match self.ip {
            None => json!({
                "phase": "Pending",
                "hostIP": self.host_ip.to_string(),
                "conditions": [condition("PodScheduled")],
            }),
            Some(ip) => json!({
                "phase": "Running",
                "hostIP": self.host_ip.to_string(),
                "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}],
                "conditions": [
                    condition("PodScheduled"), condition("Initialized"),
                    condition("ContainersReady"), condition("Ready"),
                ],
            }),
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "labels": self.labels,
            },
            "spec": {
                "nodeName": self.node_name,
                "serviceAccountName": self.service_account,
                "containers": [container],
            },
            "status": status,
        })
    }

    fn matches(&self, namespace: &str, selector: &Labels) -> bool {
        self.namespace == namespace
            && !selector.is_empty()
            && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

impl ServiceObject {
    pub fn render(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": "TCP"}))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": self.vip.to_string(),
                "clusterIPs": [self.vip.to_string()],
                "selector": self.selector,
                "ports": ports,
            },
        })
    }

    /// The EndpointSlice the endpoint-slice controller would keep for this Service.
    pub fn render_endpoints<'a>(&self, pods: impl Iterator<Item = &'a PodObject>) -> Value {
        let endpoints: Vec<Value> = pods
            .filter(|pod| pod.matches(&self.namespace, &self.selector))
            .filter_map(|pod| Some((pod, pod.ip?)))
            .map(|(pod, ip)| {
                json!({
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": pod.node_name,
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                })
            })
            .collect();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|p| json!({"name": p.name, "port": p.target_port, "protocol": "TCP"}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-ambit", self.name),
                "namespace": self.namespace,
                "labels": {
                    "kubernetes.io/service-name": self.name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    }
}

/// Everything the cluster knows, rendered to one file per object.
#[derive(Debug, Default, Clone)]
pub struct ClusterObjects {
    pub namespaces: BTreeMap<String, NamespaceObject>,
    pub nodes: Vec<NodeObject>,
    /// Keyed by (namespace, name).
    pub pods: BTreeMap<(String, String), PodObject>,
    pub services: BTreeMap<(String, String), ServiceObject>,
    /// Files a test writes itself (policies, gateways): file name → documents.
    pub extra: BTreeMap<String, Vec<Value>>,
}

impl ClusterObjects {
    /// File name → documents. Namespace names cannot contain dots, so `kind.ns.name` is
    /// unambiguous.
    pub fn files(&self) -> BTreeMap<String, Vec<Value>> {
        let mut files = BTreeMap::new();
        for ns in self.namespaces.values() {
            files.insert(format!("00-namespace.{}.yaml", ns.name), vec![ns.render()]);
        }
        for node in &self.nodes {
            files.insert(format!("10-node.{}.yaml", node.name), vec![node.render()]);
        }
        for pod in self.pods.values() {
            let file = format!("20-pod.{}.{}.yaml", pod.namespace, pod.name);
            files.insert(file, vec![pod.render()]);
        }
        for svc in self.services.values() {
            let file = format!("30-service.{}.{}.yaml", svc.namespace, svc.name);
            files.insert(file, vec![svc.render()]);
            let file = format!("31-endpointslice.{}.{}.yaml", svc.namespace, svc.name);
            files.insert(file, vec![svc.render_endpoints(self.pods.values())]);
        }
        for (name, docs) in &self.extra {
            files.insert(name.clone(), docs.clone());
        }
        files
    }
}

/// The folder binaries get as `--manifests`, remembering what it last wrote.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    written: BTreeMap<String, String>,
}

impl ManifestDir {
    pub fn create(dir: PathBuf) -> Result<ManifestDir> {
        std::fs::create_dir_all(&dir).map_err(|e| HarnessError::file("creating", &dir, e))?;
        Ok(ManifestDir {
            dir,
            written: BTreeMap::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Make the folder hold exactly `files`: rewrite changed files, remove vanished ones.
    pub fn sync(&mut self, files: &BTreeMap<String, Vec<Value>>) -> Result<()> {
        for (name, docs) in files {
            validate_file_name(name)?;
            let text = to_yaml_documents(docs)?;
            if self.written.get(name) != Some(&text) {
                write_atomic(&self.dir.join(name), text.as_bytes())?;
                self.written.insert(name.clone(), text);
            }
        }
        let vanished: Vec<String> = self
            .written
            .keys()
            .filter(|name| !files.contains_key(*name))
            .cloned()
            .collect();
        for name in vanished {
            let path = self.dir.join(&name);
            std::fs::remove_file(&path).map_err(|e| HarnessError::file("removing", &path, e))?;
            self.written.remove(&name);
        }
        Ok(())
    }
}

/// A plain file name ending in .yaml/.yml: no path separators, nothing hidden.
fn validate_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"));
    if ok {
        Ok(())
    } else {
        Err(HarnessError::Invalid(format!(
            "manifest file name {name:?} must be a plain name ending in .yaml"
        )))
    }
}

/// Multi-document YAML.
pub fn to_yaml_documents(docs: &[Value]) -> Result<String> {
    let mut text = String::new();
    for doc in docs {
        let yaml = serde_yaml::to_string(doc).map_err(|e| HarnessError::Encode {
            what: "manifest YAML".into(),
            message: e.to_string(),
        })?;
        text.push_str("---\n");
        text.push_str(&yaml);
    }
    Ok(text)
}

/// Write next to the target under a hidden name, then rename over it: readers see the old or
/// the new file, never a partial one. The temp name does not end in .yaml, so folder readers
/// skip it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, bytes).map_err(|e| HarnessError::file("writing", &temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| HarnessError::file("renaming into place", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str) -> PodObject {
        PodObject {
            namespace: "shop".into(),
            name: name.into(),
            uid: "u-1".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            node_name: "node-0".into(),
            host_ip: Ipv4Addr::new(10, 20, 0, 10),
            service_account: "default".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                port: 8080,
            }],
            probe_ports: Vec::new(),
            ip: Some(Ipv4Addr::new(10, 20, 1, 2)),
        }
    }

    #[test]
    fn pod_has_the_fields_discovery_reads() {
        let v = pod("web-0", "web").render();
        assert_eq!(v["spec"]["nodeName"], "node-0");
        assert_eq!(v["spec"]["serviceAccountName"], "default");
        assert_eq!(v["status"]["podIP"], "10.20.1.2");
        assert_eq!(v["status"]["podIPs"][0]["ip"], "10.20.1.2");
        assert_eq!(v["status"]["phase"], "Running");
        assert_eq!(
            v["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
        let pending = PodObject {
            ip: None,
            ..pod("web-1", "web")
        }
        .render();
        assert_eq!(pending["status"]["phase"], "Pending");
        assert!(pending["status"].get("podIP").is_none());
    }

    #[test]
    fn endpoint_slice_selects_matching_pods_only() {
        let svc = ServiceObject {
            namespace: "shop".into(),
            name: "web".into(),
            labels: Labels::new(),
            selector: [("app".to_string(), "web".to_string())].into(),
            vip: Ipv4Addr::new(10, 20, 200, 1),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: 8080,
            }],
        };
        let pending = PodObject {
            ip: None,
            ..pod("web-1", "web")
        };
        let pods = [pod("web-0", "web"), pod("db-0", "db"), pending];
        let slice = svc.render_endpoints(pods.iter());
        let endpoints = slice["endpoints"].as_array().cloned().unwrap_or_default();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0]["targetRef"]["name"], "web-0");
        assert_eq!(slice["ports"][0]["port"], 8080);
    }

    #[test]
    fn sync_writes_changes_and_removes_vanished_files() -> Result<()> {
        let temp = tempfile::tempdir().map_err(|e| HarnessError::file("creating", "tempdir", e))?;
        let mut dir = ManifestDir::create(temp.path().join("m"))?;
        let mut objects = ClusterObjects::default();
        objects
            .pods
            .insert(("shop".into(), "web-0".into()), pod("web-0", "web"));
        dir.sync(&objects.files())?;
        let file = dir.path().join("20-pod.shop.web-0.yaml");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(text.contains("podIP: 10.20.1.2"), "{text}");
        objects.pods.clear();
        dir.sync(&objects.files())?;
        assert!(!file.exists());
        assert!(dir
            .sync(&[("../x.yaml".to_string(), vec![])].into())
            .is_err());
        Ok(())
    }
}
