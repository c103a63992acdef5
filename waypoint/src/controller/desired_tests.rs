//! `desired()` over snapshots built from manifests: which Gateways get a waypoint, and the
//! fields every object must have (the contract with ztunnel, the CA and the waypoint).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::controller::apply::with_owner;
use crate::routes::tests::load;

fn settings() -> Settings {
    Settings {
        image: "registry.test/waypoint:dev".into(),
        ca_address: "ambit-ca.ambit-system.svc:15012".into(),
        token_audience: "ambit-ca".into(),
        trust_domain: "cluster.local".into(),
        waypoint_cluster_role: "ambit-waypoint".into(),
        waypoint_binding: "ambit-waypoints".into(),
        otlp_endpoint: None,
        trace_sampling: None,
    }
}

fn gateway(namespace: &str, name: &str, class: &str, listener: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  gatewayClassName: {class}
  listeners: [{listener}]
---
"
    )
}

const HBONE: &str = "{name: mesh, port: 15008, protocol: HBONE}";

fn names(objects: &[Desired]) -> Vec<String> {
    objects.iter().map(Desired::describe).collect()
}

#[test]
fn each_served_waypoint_gets_its_objects_and_one_binding_names_them_all() {
    let yaml = [
        gateway("shop", "waypoint", "ambit-waypoint", HBONE),
        gateway("mall", "wp", "ambit-waypoint", HBONE),
        // Not ours, not a waypoint listener, ingress: none of them is run.
        gateway("shop", "istio", "istio-waypoint", HBONE),
        gateway(
            "shop",
            "http-only",
            "ambit-waypoint",
            "{name: http, port: 80, protocol: HTTP}",
        ),
        gateway(
            "shop",
            "ingress",
            "ambit",
            "{name: http, port: 80, protocol: HTTP}",
        ),
    ]
    .concat();
    let objects = desired(&load(&yaml), &settings(), Some("ROOT PEM"));
    assert_eq!(
        names(&objects),
        [
            "ServiceAccount mall/wp",
            "Service mall/wp",
            "ConfigMap mall/wp-ca-root",
            "Deployment mall/wp",
            "ServiceAccount shop/waypoint",
            "Service shop/waypoint",
            "ConfigMap shop/waypoint-ca-root",
            "Deployment shop/waypoint",
            "ClusterRoleBinding ambit-waypoints",
        ]
    );
    let binding = objects.last().unwrap();
    assert_eq!(binding.owner, None);
    assert_eq!(
        binding.manifest["subjects"],
        json!([
            {"kind": "ServiceAccount", "namespace": "mall", "name": "wp"},
            {"kind": "ServiceAccount", "namespace": "shop", "name": "waypoint"},
        ])
    );
    assert_eq!(binding.manifest["roleRef"]["name"], "ambit-waypoint");
    for object in &objects[..8] {
        assert!(object.owner.is_some(), "{}", object.describe());
        let labels = &object.manifest["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], FIELD_MANAGER_NAME);
    }
}

const FIELD_MANAGER_NAME: &str = crate::controller::FIELD_MANAGER;

fn one_waypoint(bundle: Option<&str>) -> HashMap<ObjectKind, Desired> {
    let yaml = gateway("shop", "waypoint", "ambit-waypoint", HBONE);
    desired(&load(&yaml), &settings(), bundle)
        .into_iter()
        .map(|object| (object.kind, object))
        .collect()
}

#[test]
fn the_service_selects_the_waypoint_pods_on_the_hbone_port() {
    let service = &one_waypoint(None)[&ObjectKind::Service].manifest;
    assert_eq!(service["apiVersion"], "v1");
    assert_eq!(service["metadata"]["namespace"], "shop");
    assert_eq!(service["metadata"]["name"], "waypoint");
    assert_eq!(
        service["spec"]["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"})
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP"}])
    );
}

#[test]
fn the_deployment_runs_the_waypoint_with_a_ca_token_and_is_never_captured() {
    let objects = one_waypoint(Some("PEM"));
    let deployment = &objects[&ObjectKind::Deployment].manifest;
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert!(deployment["spec"].get("replicas").is_none());
    let selector = json!({"gateway.networking.k8s.io/gateway-name": "waypoint"});
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], selector);
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["gateway.networking.k8s.io/gateway-name"], "waypoint");
    assert_eq!(labels["istio.io/dataplane-mode"], "none");
    let pod = &template["spec"];
    assert_eq!(pod["serviceAccountName"], "waypoint");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.test/waypoint:dev");
    assert_eq!(
        container["args"],
        json!([
            "--in-cluster",
            "--gateway=shop/waypoint",
            "--ca-address=ambit-ca.ambit-system.svc:15012",
            "--ca-root=/var/run/ambit-ca/ca.crt",
            "--ca-token-file=/var/run/secrets/ambit/token",
            "--trust-domain=cluster.local",
        ])
    );
    // The token the CA reviews: projected, for the CA's audience, mounted where --ca-token-file
    // points; the root from the ConfigMap copy in the Gateway's namespace.
    let token = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "ambit-ca");
    assert_eq!(token["path"], "token");
    assert_eq!(pod["volumes"][1]["configMap"]["name"], "waypoint-ca-root");
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "ca-token", "mountPath": "/var/run/secrets/ambit", "readOnly": true},
            {"name": "ca-root", "mountPath": "/var/run/ambit-ca", "readOnly": true},
        ])
    );
    let root = &objects[&ObjectKind::ConfigMap].manifest;
    assert_eq!(root["metadata"]["name"], "waypoint-ca-root");
    assert_eq!(root["data"], json!({"ca.crt": "PEM"}));
    // Until the CA has published the bundle, no copy is written (an empty one would be worse).
    assert!(!one_waypoint(None).contains_key(&ObjectKind::ConfigMap));
}

#[test]
fn tracing_settings_reach_every_waypoint_and_pods_name_their_spans() {
    let yaml = gateway("shop", "waypoint", "ambit-waypoint", HBONE);
    let traced = Settings {
        otlp_endpoint: Some("http://otel-collector.observability:4318".into()),
        trace_sampling: Some("5".into()),
        ..settings()
    };
    let objects = desired(&load(&yaml), &traced, Some("PEM"));
    let deployment = objects
        .iter()
        .find(|o| o.kind == ObjectKind::Deployment)
        .unwrap();
    let container = &deployment.manifest["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--otlp-endpoint=http://otel-collector.observability:4318"));
    assert!(args.contains(&"--trace-sampling=5"));
    assert_eq!(
        container["env"],
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );
    // Without them no tracing flag is passed (the waypoint's default: off).
    let plain = &one_waypoint(Some("PEM"))[&ObjectKind::Deployment].manifest;
    let plain_args = plain["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(!plain_args.contains("otlp"), "{plain_args}");
}

#[test]
fn owner_references_name_the_gateway_by_uid_once_it_is_known() {
    let objects = one_waypoint(None);
    let service = &objects[&ObjectKind::Service];
    assert_eq!(with_owner(service, &HashMap::new()), None);
    let uids = HashMap::from([(("shop".into(), "waypoint".into()), "uid-1".to_owned())]);
    let manifest = with_owner(service, &uids).unwrap();
    assert_eq!(
        manifest["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": "waypoint",
            "uid": "uid-1",
            "controller": true,
        }])
    );
    // Cluster-scoped: no owner to look up, applied as is.
    let binding = &objects[&ObjectKind::ClusterRoleBinding];
    assert_eq!(
        with_owner(binding, &HashMap::new()).unwrap(),
        binding.manifest
    );
}

#[test]
fn without_waypoints_the_binding_is_emptied_not_left_behind() {
    let objects = desired(&load(""), &settings(), Some("PEM"));
    assert_eq!(names(&objects), ["ClusterRoleBinding ambit-waypoints"]);
    assert_eq!(objects[0].manifest["subjects"], json!([]));
}

#[test]
fn a_gateway_that_does_not_follow_the_schema_is_not_run() {
    // Two listeners with one name: discovery rejects the Gateway (its status says why).
    let listeners = format!("{HBONE}, {{name: mesh, port: 15009, protocol: HBONE}}");
    let yaml = gateway("shop", "waypoint", "ambit-waypoint", &listeners);
    let snapshot = load(&yaml);
    assert!(!snapshot.gateway_api().rejected().is_empty());
    assert_eq!(
        names(&desired(&snapshot, &settings(), None)),
        ["ClusterRoleBinding ambit-waypoints"]
    );
}
