//! What the cluster should hold for the waypoint Gateways of a snapshot: the decide half of the
//! controller (DESIGN §2, "decide, then act"). Pure: snapshot, settings and trust bundle in,
//! manifests out, in a stable order; [`super::apply`] writes them.
//!
//! For each Gateway of class `ambit-waypoint` that can be served (it follows the schema and
//! has the HBONE listener, port 15008 — the ones [`crate::status`] accepts), in its namespace
//! and named like it (what ztunnel and the waypoint itself look for):
//! - a ServiceAccount: the waypoint's identity `spiffe://<td>/ns/<ns>/sa/<name>`;
//! - a Service, port 15008 named `mesh`, selecting the waypoint pods by
//!   `gateway.networking.k8s.io/gateway-name` (ztunnel dials the waypoint at its cluster IP);
//! - a Deployment running `waypoint --in-cluster --gateway NS/NAME …` with a projected
//!   service account token for the CA's audience (the CA's TokenReview then names the pod and
//!   its service account, and it issues that one identity) and the pod label
//!   `istio.io/dataplane-mode: none` (a waypoint's own traffic is never captured);
//! - a ConfigMap `<name>-ca-root` with the mesh trust bundle, copied from the CA's ConfigMap in
//!   its own namespace (a pod mounts ConfigMaps of its namespace only), once that is known.
//!
//! All of them carry an owner reference to the Gateway (its uid is filled in when applied), so
//! deleting the Gateway deletes them. One cluster-scoped ClusterRoleBinding binds every
//! waypoint's service account to the read-only ClusterRole the waypoints need (the waypoint
//! reads the cluster itself); it has no owner, its subject list is rewritten whole.

use std::collections::BTreeSet;

use discovery::gateway_api::{Gateway, ListenerProtocol};
use discovery::Snapshot;
use serde_json::{json, Value};

use crate::status::{HBONE_PROTOCOL, WAYPOINT_CLASS};
use crate::HBONE_PORT;

/// The label that ties a waypoint's pods and Service to its Gateway (Gateway API's own).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// On every object the controller writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", super::FIELD_MANAGER);
/// Where the projected CA token and the trust bundle are mounted in the waypoint container.
pub const TOKEN_DIR: &str = "/var/run/secrets/ambit";
pub const ROOT_DIR: &str = "/var/run/ambit-ca";

/// How the waypoints are run: the controller's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub image: String,
    pub ca_address: String,
    pub token_audience: String,
    pub trust_domain: String,
    /// The ClusterRole every waypoint's service account is bound to.
    pub waypoint_cluster_role: String,
    /// The ClusterRoleBinding that binds them (one for all waypoints).
    pub waypoint_binding: String,
    /// Passed to every waypoint as `--otlp-endpoint` (tracing is off without it).
    pub otlp_endpoint: Option<String>,
    /// Passed as `--trace-sampling` (percent), as given.
    pub trace_sampling: Option<String>,
}

/// The kinds the controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    ServiceAccount,
    Service,
    ConfigMap,
    Deployment,
    ClusterRoleBinding,
}

impl ObjectKind {
    /// `(group, version, kind, plural)`.
    pub fn gvk(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            ObjectKind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            ObjectKind::Service => ("", "v1", "Service", "services"),
            ObjectKind::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            ObjectKind::Deployment => ("apps", "v1", "Deployment", "deployments"),
            ObjectKind::ClusterRoleBinding => (
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
            ),
        }
    }

    pub fn api_version(self) -> String {
        match self.gvk() {
            ("", version, _, _) => version.to_owned(),
            (group, version, _, _) => format!("{group}/{version}"),
        }
    }
}

/// One object to server-side-apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub kind: ObjectKind,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
    /// The Gateway (in the same namespace) that owns the object; its owner reference is added
    /// when applied, once the Gateway's uid is known.
    pub owner: Option<String>,
    /// The full apply configuration (apiVersion, kind, metadata without ownerReferences, …).
    pub manifest: Value,
}

impl Desired {
    /// `Kind namespace/name`, for logs and errors.
    pub fn describe(&self) -> String {
        let (_, _, kind, _) = self.kind.gvk();
        match &self.namespace {
            Some(namespace) => format!("{kind} {namespace}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

/// Whether the controller runs a waypoint for `gateway`: of our class, following the schema,
/// with the HBONE listener. Others get only a status saying why (see [`crate::status`]).
pub fn is_served(gateway: &Gateway) -> bool {
    gateway.class_name == WAYPOINT_CLASS
        && gateway.rejected.is_none()
        && gateway.listeners.iter().any(|listener| {
            listener.port == HBONE_PORT
                && matches!(&listener.protocol, ListenerProtocol::Other(p) if p == HBONE_PROTOCOL)
        })
}

/// The ConfigMap holding a waypoint's copy of the trust bundle.
pub fn root_configmap_name(gateway: &str) -> String {
    format!("{gateway}-ca-root")
}

/// Everything the cluster should hold; `trust_bundle` is the CA's published `ca.crt`, `None`
/// while it cannot be read (the ConfigMaps are then left as they are).
pub fn desired(
    snapshot: &Snapshot,
    settings: &Settings,
    trust_bundle: Option<&str>,
) -> Vec<Desired> {
    let mut gateways: Vec<&Gateway> = snapshot
        .gateway_api()
        .gateways()
        .iter()
        .filter(|gateway| is_served(gateway))
        .collect();
    gateways.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out = Vec::new();
    for gateway in &gateways {
        out.push(service_account(gateway));
        out.push(service(gateway));
        if let Some(bundle) = trust_bundle {
            out.push(root_configmap(gateway, bundle));
        }
        out.push(deployment(gateway, settings));
    }
    let subjects: BTreeSet<(&str, &str)> = gateways
        .iter()
        .map(|g| (g.namespace.as_str(), g.name.as_str()))
        .collect();
    out.push(cluster_role_binding(settings, &subjects));
    out
}

fn metadata(gateway: &Gateway, name: &str) -> Value {
    json!({
        "name": name,
        "namespace": gateway.namespace,
        "labels": {
            GATEWAY_NAME_LABEL: gateway.name,
            MANAGED_BY.0: MANAGED_BY.1,
        },
    })
}

fn owned(gateway: &Gateway, kind: ObjectKind, name: &str, body: Value) -> Desired {
    let mut manifest = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.gvk().2,
        "metadata": metadata(gateway, name),
    });
    if let (Some(object), Value::Object(fields)) = (manifest.as_object_mut(), body) {
        object.extend(fields);
    }
    Desired {
        kind,
        namespace: Some(gateway.namespace.clone()),
        name: name.to_owned(),
        owner: Some(gateway.name.clone()),
        manifest,
    }
}

fn service_account(gateway: &Gateway) -> Desired {
    owned(
        gateway,
        ObjectKind::ServiceAccount,
        &gateway.name,
        json!({}),
    )
}

fn service(gateway: &Gateway) -> Desired {
    let spec = json!({
        "spec": {
            "type": "ClusterIP",
            "selector": { GATEWAY_NAME_LABEL: gateway.name },
            "ports": [{
                "name": "mesh",
                "port": HBONE_PORT,
                "targetPort": HBONE_PORT,
                "protocol": "TCP",
            }],
        },
    });
    owned(gateway, ObjectKind::Service, &gateway.name, spec)
}

fn root_configmap(gateway: &Gateway, bundle: &str) -> Desired {
    let data = json!({ "data": { "ca.crt": bundle } });
    owned(
        gateway,
        ObjectKind::ConfigMap,
        &root_configmap_name(&gateway.name),
        data,
    )
}

fn deployment(gateway: &Gateway, settings: &Settings) -> Desired {
    let name = &gateway.name;
    let pod_labels = json!({
        GATEWAY_NAME_LABEL: name,
        "istio.io/dataplane-mode": "none",
    });
    let mut args = vec![
        "--in-cluster".to_owned(),
        format!("--gateway={}/{name}", gateway.namespace),
        format!("--ca-address={}", settings.ca_address),
        format!("--ca-root={ROOT_DIR}/ca.crt"),
        format!("--ca-token-file={TOKEN_DIR}/token"),
        format!("--trust-domain={}", settings.trust_domain),
    ];
    if let Some(endpoint) = &settings.otlp_endpoint {
        args.push(format!("--otlp-endpoint={endpoint}"));
    }
    if let Some(percent) = &settings.trace_sampling {
        args.push(format!("--trace-sampling={percent}"));
    }
    let spec = json!({
        "spec": {
            // No `replicas`: left to the user (or an autoscaler); the API server defaults to 1.
            "selector": { "matchLabels": { GATEWAY_NAME_LABEL: name } },
            "template": {
                "metadata": { "labels": pod_labels },
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "seccompProfile": { "type": "RuntimeDefault" },
                    },
                    "containers": [{
                        "name": "waypoint",
                        "image": settings.image,
                        "args": args,
                        // The pod names its spans (`service.instance.id`).
                        "env": [{
                            "name": "POD_NAME",
                            "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
                        }],
                        "ports": [
                            { "name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP" },
                            { "name": "metrics", "containerPort": 15020, "protocol": "TCP" },
                            { "name": "readiness", "containerPort": 15021, "protocol": "TCP" },
                        ],
                        "readinessProbe": {
                            "httpGet": { "path": "/healthz/ready", "port": 15021 },
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"] },
                        },
                        "volumeMounts": [
                            { "name": "ca-token", "mountPath": TOKEN_DIR, "readOnly": true },
                            { "name": "ca-root", "mountPath": ROOT_DIR, "readOnly": true },
                        ],
                    }],
                    "volumes": [
                        {
                            "name": "ca-token",
                            "projected": { "sources": [{ "serviceAccountToken": {
                                "path": "token",
                                "audience": settings.token_audience,
                                "expirationSeconds": 3600,
                            }}]},
                        },
                        {
                            "name": "ca-root",
                            "configMap": { "name": root_configmap_name(name) },
                        },
                    ],
                },
            },
        },
    });
    let mut desired = owned(gateway, ObjectKind::Deployment, name, spec);
    desired.manifest["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("none");
    desired
}

fn cluster_role_binding(settings: &Settings, subjects: &BTreeSet<(&str, &str)>) -> Desired {
    let kind = ObjectKind::ClusterRoleBinding;
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(namespace, name)| {
            json!({ "kind": "ServiceAccount", "namespace": namespace, "name": name })
        })
        .collect();
    Desired {
        kind,
        namespace: None,
        name: settings.waypoint_binding.clone(),
        owner: None,
        manifest: json!({
            "apiVersion": kind.api_version(),
            "kind": kind.gvk().2,
            "metadata": {
                "name": settings.waypoint_binding,
                "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": settings.waypoint_cluster_role,
            },
            "subjects": subjects,
        }),
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
