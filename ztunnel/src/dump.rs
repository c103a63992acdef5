//! `/config_dump`: what this node agent believes, for an operator debugging a connection —
//! the workloads and services it knows, the policies (and those that could not be understood,
//! with why), the pods it proxies, and each certificate with its expiry.
//!
//! [`ConfigDump`] is the document itself, shared by ztunnel (which serialises it) and the
//! end-to-end tests (which parse it back). Its JSON field names are a contract with operators
//! and their scripts: camelCase, unchanged since the dump was first served; the unit tests
//! below pin them.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use certs::CertificateStatus;
use discovery::{AuthorizationPolicy, Labels, Service, Snapshot, Workload};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::enrolled::EnrolledPod;

/// The whole `/config_dump` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    /// The node this agent serves (`--node`).
    pub node: String,
    pub trust_domain: String,
    /// Generation of the cluster snapshot the rest of the dump was read from.
    pub snapshot_generation: u64,
    /// Why the cluster view may be stale or incomplete (a rejected manifest, a failing watch);
    /// `null` when the source is healthy. The last good snapshot stays in force meanwhile.
    pub manifest_error: Option<String>,
    /// The pods of this node whose traffic this agent proxies, by namespace then name.
    pub enrolled_pods: Vec<EnrolledPodEntry>,
    /// Every workload certificate this node holds, by identity.
    pub certificates: Vec<CertificateEntry>,
    pub live_inbound_connections: usize,
    pub workloads: Vec<WorkloadEntry>,
    pub services: Vec<ServiceEntry>,
    pub policies: Vec<PolicyEntry>,
    /// Policies enforced fail-closed until fixed (DESIGN §7), listed on their own so they
    /// stand out; each is in `policies` too.
    pub invalid_policies: Vec<InvalidPolicyEntry>,
}

/// A pod this node agent proxies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrolledPodEntry {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub identity: String,
    /// The inode of the pod's network namespace (what `/proc/PID/fd` links show as
    /// `net:[INODE]`), to tell which namespace the agent holds.
    pub netns_inode: u64,
}

/// A workload certificate and its renewal state; times are Unix seconds, `null` before the
/// first certificate arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateEntry {
    pub identity: String,
    pub not_before: Option<u64>,
    pub not_after: Option<u64>,
    /// Seconds until `notAfter`; 0 once expired.
    pub expires_in_seconds: Option<u64>,
    pub next_refresh: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// A pod as the cluster snapshot knows it, on any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
    /// Its SPIFFE identity in this trust domain; `null` when namespace or ServiceAccount make
    /// no valid one.
    pub identity: Option<String>,
    pub ips: Vec<IpAddr>,
    pub ambient: bool,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    pub name: String,
    pub namespace: String,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePortEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortEntry {
    pub name: String,
    pub port: u16,
    /// As the dump has always written it: `Number(8080)` or `Named("http")`.
    pub target_port: String,
    /// The addresses traffic to this port goes to.
    pub endpoints: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    pub name: String,
    pub namespace: String,
    pub action: PolicyAction,
    /// `spec.selector.matchLabels`; `null` selects every workload in scope.
    pub selector: Option<Labels>,
    /// How many rules it has.
    pub rules: usize,
    /// Set for a policy that could not be understood: why, and what it does meanwhile.
    pub invalid: Option<String>,
}

/// An AuthorizationPolicy's action, written `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAction {
    Allow,
    Deny,
}

/// A policy that could not be understood: the field at fault, what is wrong with it, and what
/// the fail-closed form enforces until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidPolicyEntry {
    pub name: String,
    pub namespace: String,
    pub field: String,
    pub problem: String,
    pub enforced_as: String,
}

/// The dump of `agent` as it is now.
pub fn config_dump(agent: &Agent) -> ConfigDump {
    let snapshot = agent.snapshot();
    let now = SystemTime::now();
    let mut dump = ConfigDump::of_snapshot(&snapshot, &agent.config.trust_domain);
    dump.node = agent.config.node.clone();
    dump.manifest_error = agent.source.last_error();
    dump.enrolled_pods = agent
        .enrolled()
        .iter()
        .map(|p| EnrolledPodEntry::of(p))
        .collect();
    dump.certificates = agent
        .certificates
        .status()
        .iter()
        .map(|c| CertificateEntry::of(c, now))
        .collect();
    dump.live_inbound_connections = agent.proxy.connections.len();
    dump
}

impl ConfigDump {
    /// What `snapshot` alone tells (workloads, services, policies), with the node's own
    /// state (node, enrolled pods, certificates, connections) left empty.
    fn of_snapshot(snapshot: &Snapshot, trust_domain: &str) -> ConfigDump {
        ConfigDump {
            node: String::new(),
            trust_domain: trust_domain.to_owned(),
            snapshot_generation: snapshot.generation(),
            manifest_error: None,
            enrolled_pods: Vec::new(),
            certificates: Vec::new(),
            live_inbound_connections: 0,
            workloads: snapshot
                .workloads()
                .map(|w| WorkloadEntry::of(w, trust_domain))
                .collect(),
            services: snapshot
                .services()
                .map(|s| ServiceEntry::of(s, snapshot))
                .collect(),
            policies: snapshot.policies().map(PolicyEntry::of).collect(),
            invalid_policies: snapshot
                .invalid_policies()
                .filter_map(InvalidPolicyEntry::of)
                .collect(),
        }
    }

    /// Names of the enrolled pods, in the dump's order (namespace, then name).
    pub fn enrolled_names(&self) -> Vec<&str> {
        self.enrolled_pods.iter().map(|p| p.name.as_str()).collect()
    }

    /// The workload `ip` belongs to, if the snapshot knows one.
    pub fn workload_with_ip(&self, ip: IpAddr) -> Option<&WorkloadEntry> {
        self.workloads.iter().find(|w| w.ips.contains(&ip))
    }

    /// The workload called `name` (in any namespace), if the snapshot knows one.
    pub fn workload_named(&self, name: &str) -> Option<&WorkloadEntry> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// Whether a policy called `name` (in any namespace) is loaded.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policies.iter().any(|p| p.name == name)
    }
}

impl EnrolledPodEntry {
    fn of(pod: &EnrolledPod) -> Self {
        EnrolledPodEntry {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            uid: pod.uid.clone(),
            identity: pod.identity.to_string(),
            netns_inode: pod.netns.inode(),
        }
    }
}

impl CertificateEntry {
    fn of(status: &CertificateStatus, now: SystemTime) -> Self {
        CertificateEntry {
            identity: status.identity.to_string(),
            not_before: status.not_before.and_then(unix_seconds),
            not_after: status.not_after.and_then(unix_seconds),
            expires_in_seconds: status.not_after.map(|t| seconds_from(now, t)),
            next_refresh: status.next_refresh.and_then(unix_seconds),
            consecutive_failures: status.consecutive_failures,
            last_error: status.last_error.clone(),
        }
    }
}

impl WorkloadEntry {
    fn of(workload: &Workload, trust_domain: &str) -> Self {
        WorkloadEntry {
            name: workload.name.clone(),
            namespace: workload.namespace.clone(),
            uid: workload.uid.clone(),
            node: workload.node.clone(),
            service_account: workload.service_account.clone(),
            identity: workload
                .identity(trust_domain)
                .ok()
                .map(|id| id.to_string()),
            ips: workload.ips.clone(),
            ambient: workload.ambient,
            ready: workload.ready,
        }
    }
}

impl ServiceEntry {
    fn of(service: &Service, snapshot: &Snapshot) -> Self {
        let ports = service
            .ports
            .iter()
            .map(|port| ServicePortEntry {
                name: port.name.clone(),
                port: port.port,
                target_port: format!("{:?}", port.target_port),
                endpoints: snapshot
                    .endpoints_for(service, port)
                    .iter()
                    .map(|e| e.addr)
                    .collect(),
            })
            .collect();
        ServiceEntry {
            name: service.name.clone(),
            namespace: service.namespace.clone(),
            vips: service.vips.clone(),
            ports,
        }
    }
}

impl PolicyEntry {
    fn of(policy: &AuthorizationPolicy) -> Self {
        PolicyEntry {
            name: policy.name.clone(),
            namespace: policy.namespace.clone(),
            action: match policy.action {
                discovery::Action::Allow => PolicyAction::Allow,
                discovery::Action::Deny => PolicyAction::Deny,
            },
            selector: policy.selector.clone(),
            rules: policy.rules.len(),
            invalid: policy.invalid.as_ref().map(ToString::to_string),
        }
    }
}

impl InvalidPolicyEntry {
    fn of(policy: &AuthorizationPolicy) -> Option<Self> {
        let invalid = policy.invalid.as_ref()?;
        Some(InvalidPolicyEntry {
            name: policy.name.clone(),
            namespace: policy.namespace.clone(),
            field: invalid.field.clone(),
            problem: invalid.problem.clone(),
            enforced_as: invalid.enforced_as.clone(),
        })
    }
}

fn unix_seconds(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whole seconds from `now` until `then`; 0 when `then` has passed.
fn seconds_from(now: SystemTime, then: SystemTime) -> u64 {
    then.duration_since(now).map_or(0, |left| left.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::time::Duration;

    use certs::SpiffeId;
    use discovery::{LocalSource, LocalSourceConfig};
    use serde_json::{json, Value};

    use super::*;

    /// One ambient pod behind a Service, a valid ALLOW for it and one that cannot be understood.
    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, uid: uid-cart-0, labels: {app: cart}}
spec: {nodeName: node-b, serviceAccountName: cart, containers: [{name: c}]}
status: {podIP: 10.1.2.2}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.200.0.10
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-broken, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]
"#;

    /// Unix second `seconds`, as a `SystemTime`.
    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// The dump of node-b with cart-0 enrolled and its certificate in hand.
    fn dump() -> ConfigDump {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, CLUSTER).unwrap();
        let snapshot = LocalSource::load(LocalSourceConfig::new([file]))
            .unwrap()
            .current();
        let mut dump = ConfigDump::of_snapshot(&snapshot, "cluster.local");
        dump.node = "node-b".into();
        dump.enrolled_pods.push(EnrolledPodEntry {
            name: "cart-0".into(),
            namespace: "shop".into(),
            uid: "uid-cart-0".into(),
            identity: "spiffe://cluster.local/ns/shop/sa/cart".into(),
            netns_inode: 4026532000,
        });
        let status = CertificateStatus {
            identity: SpiffeId::new("cluster.local", "shop", "cart").unwrap(),
            not_before: Some(at(1_000_000_000)),
            not_after: Some(at(1_000_086_400)),
            next_refresh: Some(at(1_000_043_200)),
            consecutive_failures: 0,
            last_error: None,
        };
        dump.certificates
            .push(CertificateEntry::of(&status, at(1_000_000_400)));
        dump.live_inbound_connections = 3;
        dump
    }

    fn keys(object: &Value) -> BTreeSet<&str> {
        object
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {object}"))
            .keys()
            .map(String::as_str)
            .collect()
    }

    fn names<const N: usize>(names: [&'static str; N]) -> BTreeSet<&'static str> {
        names.into()
    }

    #[test]
    fn the_dump_keeps_the_field_names_operators_rely_on() {
        let json = serde_json::to_value(dump()).unwrap();
        assert_eq!(
            keys(&json),
            names([
                "node",
                "trustDomain",
                "snapshotGeneration",
                "manifestError",
                "enrolledPods",
                "certificates",
                "liveInboundConnections",
                "workloads",
                "services",
                "policies",
                "invalidPolicies",
            ])
        );
        let enrolled = &json["enrolledPods"][0];
        assert_eq!(
            keys(enrolled),
            names(["name", "namespace", "uid", "identity", "netnsInode"])
        );
        let certificate = &json["certificates"][0];
        assert_eq!(
            keys(certificate),
            names([
                "identity",
                "notBefore",
                "notAfter",
                "expiresInSeconds",
                "nextRefresh",
                "consecutiveFailures",
                "lastError",
            ])
        );
        let workload = &json["workloads"][0];
        assert_eq!(
            keys(workload),
            names([
                "name",
                "namespace",
                "uid",
                "node",
                "serviceAccount",
                "identity",
                "ips",
                "ambient",
                "ready",
            ])
        );
        let service = &json["services"][0];
        assert_eq!(keys(service), names(["name", "namespace", "vips", "ports"]));
        let port = &service["ports"][0];
        assert_eq!(
            keys(port),
            names(["name", "port", "targetPort", "endpoints"])
        );
        for policy in json["policies"].as_array().unwrap() {
            assert_eq!(
                keys(policy),
                names([
                    "name",
                    "namespace",
                    "action",
                    "selector",
                    "rules",
                    "invalid"
                ])
            );
        }
        assert_eq!(
            keys(&json["invalidPolicies"][0]),
            names(["name", "namespace", "field", "problem", "enforcedAs"])
        );

        // The values' spelling is the contract too: addresses as text, null for "none".
        assert_eq!(json["manifestError"], Value::Null);
        assert_eq!(json["liveInboundConnections"], 3);
        assert_eq!(workload["ips"], json!(["10.1.2.2"]));
        assert_eq!(
            workload["identity"],
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        assert_eq!(service["vips"], json!(["10.200.0.10"]));
        assert_eq!(port["targetPort"], "Number(8080)");
        assert_eq!(port["endpoints"], json!(["10.1.2.2:8080"]));
        assert_eq!(certificate["notAfter"], 1_000_086_400);
        assert_eq!(certificate["lastError"], Value::Null);
        let policy = |name: &str| {
            json["policies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no policy {name}"))
        };
        let allow = policy("cart-allow");
        assert_eq!(allow["action"], "Allow");
        assert_eq!(allow["selector"], json!({"app": "cart"}));
        assert_eq!(allow["rules"], 1);
        assert_eq!(allow["invalid"], Value::Null);
        let broken = policy("cart-broken");
        assert_eq!(broken["action"], "Deny");
        assert!(broken["invalid"].as_str().unwrap().contains("ipBlocks"));
        let invalid = &json["invalidPolicies"][0];
        assert_eq!(invalid["name"], "cart-broken");
        assert!(invalid["field"].as_str().unwrap().contains("ipBlocks"));
    }

    #[test]
    fn a_served_dump_parses_back_into_the_same_config_dump() {
        let dump = dump();
        let served = serde_json::to_string(&dump).unwrap();
        let parsed: ConfigDump = serde_json::from_str(&served).unwrap();
        assert_eq!(parsed, dump);
        assert_eq!(parsed.enrolled_names(), ["cart-0"]);
        let ip: IpAddr = "10.1.2.2".parse().unwrap();
        assert_eq!(
            parsed.workload_with_ip(ip).map(|w| w.name.as_str()),
            Some("cart-0")
        );
        assert!(parsed.workload_named("cart-0").is_some_and(|w| w.ambient));
        assert!(parsed.has_policy("cart-allow") && !parsed.has_policy("cart-deny"));
    }

    #[test]
    fn certificate_times_are_unix_seconds_and_an_expired_one_has_none_left() {
        let status = CertificateStatus {
            identity: SpiffeId::new("cluster.local", "shop", "cart").unwrap(),
            not_before: Some(at(100)),
            not_after: Some(at(160)),
            next_refresh: None,
            consecutive_failures: 4,
            last_error: Some("the CA is unreachable".into()),
        };
        let valid = CertificateEntry::of(&status, at(130));
        assert_eq!(
            (valid.not_before, valid.not_after, valid.expires_in_seconds),
            (Some(100), Some(160), Some(30))
        );
        assert_eq!(valid.next_refresh, None);
        assert_eq!(
            CertificateEntry::of(&status, at(161)).expires_in_seconds,
            Some(0)
        );
        let waiting = CertificateStatus {
            not_before: None,
            not_after: None,
            ..status
        };
        let entry = CertificateEntry::of(&waiting, at(130));
        assert_eq!((entry.not_after, entry.expires_in_seconds), (None, None));
        assert_eq!(entry.consecutive_failures, 4);
    }
}
