//! `waypoint status --manifests DIR`, run as the built binary: the YAML it prints, its exit
//! codes, and that serving (no subcommand) still parses its own flags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_yaml::Value;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec:
  clusterIP: 10.96.0.5
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  ports: [{name: mesh, port: 15008}]
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-a, serviceAccountName: waypoint, containers: [{name: waypoint}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: shop, generation: 4}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules: [{backendRefs: [{name: cart, port: 80}, {name: ghost, port: 80}]}]
"#;

fn waypoint(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("the waypoint binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `(kind, namespace/name)` → its `status`, from the printed list.
fn status_of<'a>(list: &'a Value, kind: &str, name: &str) -> &'a Value {
    list.as_sequence()
        .unwrap()
        .iter()
        .find(|o| {
            let meta = &o["metadata"];
            let full = match meta["namespace"].as_str() {
                Some(ns) => format!("{ns}/{}", meta["name"].as_str().unwrap()),
                None => meta["name"].as_str().unwrap().to_owned(),
            };
            o["kind"].as_str() == Some(kind) && full == name
        })
        .map(|o| &o["status"])
        .unwrap_or_else(|| panic!("no {kind} {name} in {list:?}"))
}

/// `(status, reason)` of the condition `type_`.
fn condition(conditions: &Value, type_: &str) -> (String, String) {
    let found = conditions
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["type"].as_str() == Some(type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"));
    (
        found["status"].as_str().unwrap().to_owned(),
        found["reason"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn prints_the_status_of_a_folder_of_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(dir.path().join("manifests/mesh.yaml"), MANIFESTS).unwrap();
    let output = waypoint(&["status", "--manifests", "manifests"], dir.path());
    assert!(
        output.status.success(),
        "exit {:?}; stderr: {}",
        output.status,
        text(&output.stderr)
    );
    let list: Value = serde_yaml::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not YAML ({e}): {}", text(&output.stdout)));
    let objects = list.as_sequence().unwrap();
    for object in objects {
        assert_eq!(object["apiVersion"], "gateway.networking.k8s.io/v1");
        for key in ["kind", "metadata", "status"] {
            assert!(!object[key].is_null(), "{key} missing in {object:?}");
        }
    }
    let class = status_of(&list, "GatewayClass", "ambit-waypoint");
    assert_eq!(
        condition(&class["conditions"], "Accepted"),
        ("True".into(), "Accepted".into())
    );

    let gateway = status_of(&list, "Gateway", "shop/waypoint");
    assert_eq!(
        condition(&gateway["conditions"], "Programmed"),
        ("True".into(), "Programmed".into())
    );
    assert_eq!(gateway["addresses"][0]["type"], "IPAddress");
    assert_eq!(gateway["addresses"][0]["value"], "10.96.0.5");
    assert_eq!(gateway["listeners"][0]["name"], "mesh");
    assert_eq!(gateway["listeners"][0]["attachedRoutes"], 0);

    let route = status_of(&list, "HTTPRoute", "shop/cart");
    let parent = &route["parents"][0];
    assert_eq!(parent["parentRef"]["kind"], "Service");
    assert_eq!(parent["parentRef"]["name"], "cart");
    assert_eq!(parent["controllerName"], "ambit.dev/waypoint-controller");
    assert_eq!(
        condition(&parent["conditions"], "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
    assert_eq!(parent["conditions"][0]["observedGeneration"], 4);
    let time = parent["conditions"][0]["lastTransitionTime"]
        .as_str()
        .unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z'),
        "RFC 3339 seconds: {time}"
    );
}

#[test]
fn manifests_that_do_not_load_exit_2_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n",
    )
    .unwrap();
    let output = waypoint(&["status", "--manifests", "bad.yaml"], dir.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "nothing printed on stdout");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot load the manifests") && stderr.contains("bad.yaml"),
        "{stderr}"
    );

    let output = waypoint(&["status", "--manifests", "no-such-dir"], dir.path());
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("no-such-dir"));

    let output = waypoint(&["status"], dir.path());
    assert_eq!(output.status.code(), Some(2), "--manifests is required");
    assert!(text(&output.stderr).contains("--manifests"));
}

#[test]
fn serving_keeps_its_flags_without_a_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let output = waypoint(&["--help"], dir.path());
    assert!(output.status.success());
    let help = text(&output.stdout);
    assert!(
        help.contains("--gateway") && help.contains("--manifests"),
        "{help}"
    );
    let output = waypoint(&["status", "--help"], dir.path());
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("--manifests"));
}
