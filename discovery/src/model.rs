//! The compact model the mesh works with.
//!
//! Kubernetes objects carry far more than a proxy needs; converting them (see `convert`) into
//! these types keeps only what ztunnel, the CA and the waypoint read, so that a snapshot of a
//! large cluster stays small and lookups touch little memory. Every source (manifest files today,
//! the Kubernetes API later) produces these same types.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use identity::{IdentityError, SpiffeId};

/// Labels as Kubernetes stores them; sorted so that snapshots compare and print deterministically.
pub type Labels = BTreeMap<String, String>;

/// Namespace or Pod label that enrolls workloads in the mesh (Istio-compatible, DESIGN §3).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Value of [`DATAPLANE_MODE_LABEL`] that enrolls.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// Value of [`DATAPLANE_MODE_LABEL`] on a Pod that opts it out of an enrolled namespace.
pub const DATAPLANE_MODE_NONE: &str = "none";
/// Label binding a Namespace, Service or Pod to a waypoint by Gateway name.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Label naming the waypoint's namespace when it is not the object's own.
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Service account a Pod runs as when its spec names none, as in Kubernetes.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Namespace of namespaced objects whose manifest names none, as with `kubectl apply`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A Namespace: only its name and labels matter to the mesh (enrolment, waypoint binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    pub use_waypoint: Option<WaypointBinding>,
}

/// `istio.io/use-waypoint` (+ `-namespace`): which Gateway handles traffic for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointBinding {
    pub name: String,
    /// `None` means the waypoint lives in the bound object's own namespace.
    pub namespace: Option<String>,
}

impl WaypointBinding {
    /// Reads the binding labels; `None` when the object names no waypoint.
    pub fn from_labels(labels: &Labels) -> Option<Self> {
        let name = labels.get(USE_WAYPOINT_LABEL)?;
        // "none" is Istio's explicit opt-out of a namespace-level waypoint; it binds nothing.
        if name.is_empty() || name == "none" {
            return None;
        }
        Some(WaypointBinding {
            name: name.clone(),
            namespace: labels.get(USE_WAYPOINT_NAMESPACE_LABEL).cloned(),
        })
    }
}

/// A Pod as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `metadata.uid`, or `<namespace>/<name>` when the manifest has none (hand-written files
    /// rarely do); unique within a snapshot either way.
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `spec.nodeName`; always set (local mode has no scheduler, so the file must say).
    pub node: String,
    /// `spec.serviceAccountName`, defaulting to [`DEFAULT_SERVICE_ACCOUNT`].
    pub service_account: String,
    /// `status.podIP` first, then the other `status.podIPs`, without duplicates.
    pub ips: Vec<IpAddr>,
    pub labels: Labels,
    /// Host-network pods share the node's IP and network namespace: they can never be captured
    /// and are left out of the IP index, as in Istio.
    pub host_network: bool,
    /// Ready to receive traffic: not finished, not being deleted, and not reported unready.
    pub ready: bool,
    /// Named container ports only: they are what a Service `targetPort` by name resolves against.
    pub named_ports: Vec<NamedPort>,
    /// TCP ports the kubelet probes: the only traffic from the node itself that may reach an
    /// ambient pod without the mesh (it is SNAT-ed to a link-local address the pod exempts).
    pub probe_ports: Vec<u16>,
    pub use_waypoint: Option<WaypointBinding>,
    /// Whether the pod is in the mesh: computed when the snapshot is built, because it depends
    /// on the namespace's labels too (see [`ambient_enrolled`]).
    pub ambient: bool,
}

/// A named container port (`spec.containers[].ports[]` with a `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

impl Workload {
    /// The workload's SPIFFE identity: `spiffe://<trust_domain>/ns/<namespace>/sa/<sa>`.
    ///
    /// Namespace and service-account names were validated when the workload was converted, so
    /// this fails only for an invalid trust domain.
    pub fn identity(&self, trust_domain: &str) -> Result<SpiffeId, IdentityError> {
        SpiffeId::new(trust_domain, &self.namespace, &self.service_account)
    }

    /// Resolves a Service target port against this pod; `None` when a named port is missing
    /// (Kubernetes then leaves the pod out of the Service's endpoints, and so do we).
    pub fn resolve_target_port(&self, target: &TargetPort, protocol: Protocol) -> Option<u16> {
        match target {
            TargetPort::Number(port) => Some(*port),
            TargetPort::Named(name) => self
                .named_ports
                .iter()
                .find(|p| p.name == *name && p.protocol == protocol)
                .map(|p| p.port),
        }
    }
}

/// Whether a pod is enrolled in the ambient mesh, from its own and its namespace's labels.
///
/// The pod label wins: `ambient` enrolls a pod even in an unlabelled namespace, `none` (or any
/// other value) keeps it out of an enrolled one. Without a pod label the namespace decides.
pub fn ambient_enrolled(pod_labels: &Labels, namespace_labels: Option<&Labels>) -> bool {
    match pod_labels.get(DATAPLANE_MODE_LABEL) {
        Some(mode) => mode == DATAPLANE_MODE_AMBIENT,
        None => namespace_labels
            .and_then(|labels| labels.get(DATAPLANE_MODE_LABEL))
            .is_some_and(|mode| mode == DATAPLANE_MODE_AMBIENT),
    }
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); absent means TCP.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// A Service as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `spec.clusterIP` and `spec.clusterIPs`, without `None` (headless) and duplicates.
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    /// `None` when the Service has no (or an empty) selector: its endpoints then come only from
    /// EndpointSlices, as in Kubernetes.
    pub selector: Option<Labels>,
    pub labels: Labels,
    pub use_waypoint: Option<WaypointBinding>,
}

impl Service {
    /// Whether `labels` (a pod's) are selected by this Service.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|selector| labels_match(selector, labels))
    }

    /// Whether the Service opts out of its namespace's waypoint (`istio.io/use-waypoint:
    /// none`): [`WaypointBinding::from_labels`] reads that value as "no binding", which alone
    /// would let the namespace's binding apply.
    pub fn opts_out_of_waypoint(&self) -> bool {
        self.labels
            .get(USE_WAYPOINT_LABEL)
            .is_some_and(|value| value == "none")
    }
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty when unnamed; EndpointSlice ports are matched to Service ports by this name.
    pub name: String,
    pub port: u16,
    /// Defaults to `port`, as in Kubernetes.
    pub target_port: TargetPort,
    pub protocol: Protocol,
    /// `appProtocol` as written (`http`, `grpc`, `kubernetes.io/h2c`, …): how the waypoint
    /// speaks to the port; `None` leaves it to the port's name.
    pub app_protocol: Option<String>,
}

/// `targetPort`: a number, or the name of a container port resolved per pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

/// An EndpointSlice, reduced to the addresses and ports of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub name: String,
    pub namespace: String,
    /// From the `kubernetes.io/service-name` label.
    pub service: String,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// A port of an EndpointSlice; `name` matches the Service port's name (both empty if unnamed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; Kubernetes says an absent value means ready.
    pub ready: bool,
    /// `targetRef` when it names a Pod: `(namespace, name)`.
    pub pod: Option<(String, String)>,
}

/// A Secret: kept for the gateway's TLS certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub name: String,
    pub namespace: String,
    /// `type`, defaulting to `Opaque`.
    pub type_: String,
    /// `data` merged with `stringData` (which wins, as in Kubernetes).
    pub data: BTreeMap<String, Vec<u8>>,
}

// Secret values must never reach a log line, so Debug prints only the keys.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("type_", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `matchLabels` semantics: every selector entry is present with the same value.
pub fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ambient_enrolment_pod_label_overrides_namespace() {
        let ns_ambient = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        let ns_plain = labels(&[("team", "a")]);
        let pod_none = labels(&[(DATAPLANE_MODE_LABEL, "none")]);
        let pod_ambient = labels(&[(DATAPLANE_MODE_LABEL, "ambient")]);
        let pod_plain = labels(&[("app", "web")]);
        let cases: &[(&str, &Labels, Option<&Labels>, bool)] = &[
            ("namespace enrolls", &pod_plain, Some(&ns_ambient), true),
            ("pod none opts out", &pod_none, Some(&ns_ambient), false),
            (
                "pod ambient enrolls alone",
                &pod_ambient,
                Some(&ns_plain),
                true,
            ),
            ("pod ambient without namespace", &pod_ambient, None, true),
            ("nothing labelled", &pod_plain, Some(&ns_plain), false),
            ("namespace unknown", &pod_plain, None, false),
        ];
        for (name, pod, ns, want) in cases {
            assert_eq!(ambient_enrolled(pod, *ns), *want, "{name}");
        }
    }

    #[test]
    fn waypoint_binding_reads_labels() {
        assert_eq!(WaypointBinding::from_labels(&labels(&[])), None);
        assert_eq!(
            WaypointBinding::from_labels(&labels(&[(USE_WAYPOINT_LABEL, "none")])),
            None
        );
        assert_eq!(
            WaypointBinding::from_labels(&labels(&[
                (USE_WAYPOINT_LABEL, "wp"),
                (USE_WAYPOINT_NAMESPACE_LABEL, "infra")
            ])),
            Some(WaypointBinding {
                name: "wp".into(),
                namespace: Some("infra".into())
            })
        );
    }

    #[test]
    fn secret_debug_hides_values() {
        let secret = Secret {
            name: "tls".into(),
            namespace: "shop".into(),
            type_: "kubernetes.io/tls".into(),
            data: [("tls.key".to_string(), b"PRIVATE".to_vec())].into(),
        };
        let printed = format!("{secret:?}");
        assert!(printed.contains("tls.key"));
        assert!(!printed.contains("PRIVATE"));
    }
}
