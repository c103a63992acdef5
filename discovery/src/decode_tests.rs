#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

fn load(files: &[(&str, &str)]) -> Result<Snapshot, ManifestErrors> {
    let mut collector = Collector::default();
    for (name, text) in files {
        collector.add_file(Path::new(name), text);
    }
    collector.finish(&SnapshotOptions::default())
}

fn load_err(files: &[(&str, &str)]) -> ManifestErrors {
    match load(files) {
        Ok(_) => panic!("expected the manifests to be rejected"),
        Err(errors) => errors,
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  nodeName: node-a
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.0.1.5}";

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}";

#[test]
fn loads_documents_and_skips_unknown_kinds() {
    let text = format!(
        "{NS}\n---\n# only a comment\n---\n{POD}\n---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec: {{gatewayClassName: ambit}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: c}}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {{name: knative}}
spec: {{template: {{}}}}
---
apiVersion: other.example.com/v1
kind: AuthorizationPolicy
metadata: {{name: not-istio}}
spec: {{anything: goes}}
---
"
    );
    let snapshot = load(&[("/m/all.yaml", &text)]).unwrap();
    assert!(snapshot.namespace("shop").is_some());
    assert_eq!(snapshot.workloads().count(), 1);
    assert_eq!(snapshot.policies().count(), 0);
    assert_eq!(snapshot.services().count(), 0);
}

#[test]
fn reads_json_and_lists() {
    let json = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}"#;
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n- {{apiVersion: v1, kind: Secret, metadata: {{name: s, namespace: shop}}, stringData: {{k: v}}}}",
        POD.replace('\n', "\n  ")
    );
    let snapshot = load(&[("/m/ns.json", json), ("/m/list.yaml", &list)]).unwrap();
    assert!(snapshot.namespace("shop").is_some());
    assert!(snapshot.workload("shop", "web").is_some());
    assert_eq!(snapshot.secret("shop", "s").unwrap().data["k"], b"v");
}

#[test]
fn wrong_field_type_names_file_document_and_field() {
    let bad = POD.replace("containerPort: 8080", "containerPort: eighty");
    let errors = load_err(&[("/m/app.yaml", &format!("{NS}\n---\n{bad}"))]);
    assert_eq!(errors.errors().len(), 1);
    let error = &errors.errors()[0];
    assert_eq!(
        error.field(),
        Some("spec.containers[0].ports[0].containerPort")
    );
    let message = errors.to_string();
    for part in [
        "/m/app.yaml",
        "document 2",
        "Pod shop/web",
        "spec.containers[0].ports[0].containerPort",
        "eighty",
        "schema",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn error_table() {
    // (case, manifest text, text the message must contain, field when it is a field error)
    let cases: Vec<(&str, String, &[&str], Option<&str>)> = vec![
        (
            "malformed yaml",
            format!("{NS}\n---\nkind: Pod\nmetadata: {{name: [x\n"),
            &["/m/a.yaml, document 2", "not valid YAML", "line"],
            None,
        ),
        (
            "missing kind",
            "apiVersion: v1\nmetadata: {name: x}".into(),
            &["document 1", "kind: missing"],
            Some("kind"),
        ),
        (
            "wrong apiVersion",
            POD.replace("apiVersion: v1", "apiVersion: v2"),
            &["\"v2\" is not supported for Pod; use v1"],
            Some("apiVersion"),
        ),
        (
            "old version of a known group",
            "apiVersion: security.istio.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p}".into(),
            &["use security.istio.io/v1 or security.istio.io/v1beta1"],
            Some("apiVersion"),
        ),
        (
            "pod without node",
            POD.replace("  nodeName: node-a\n", ""),
            &["Pod shop/web", "spec.nodeName", "name the node"],
            Some("spec.nodeName"),
        ),
        (
            "unparseable pod ip",
            POD.replace("10.0.1.5", "10.0.1.x"),
            &["status.podIP", "not an IP address"],
            Some("status.podIP"),
        ),
        (
            "target port out of range",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: 65536}]}".into(),
            &["Service default/s", "65536", "1 to 65535"],
            Some("spec.ports[0].targetPort"),
        ),
        (
            "wrong type of a section",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: [nodeName]".into(),
            &["Pod default/p", "invalid type: sequence"],
            Some("spec"),
        ),
        (
            "policy typo",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {rules: [{from: [{source: {principal: [x]}}]}]}".into(),
            &["principal", "AuthorizationPolicy default/p"],
            Some("spec.rules[0].from[0].source.principal"),
        ),
        (
            "error inside a list",
            format!("apiVersion: v1\nkind: List\nitems:\n- {}\n- {}", NS.replace('\n', "\n  "), POD.replace("  nodeName: node-a\n", "").replace('\n', "\n  ")),
            &["document 1", "items[1].spec.nodeName"],
            Some("items[1].spec.nodeName"),
        ),
        (
            "not a mapping",
            "- a\n- b".into(),
            &["kind: missing"],
            Some("kind"),
        ),
    ];
    for (case, text, parts, field) in cases {
        let Err(errors) = load(&[("/m/a.yaml", &text)]) else {
            panic!("{case}: expected the manifests to be rejected")
        };
        let message = errors.to_string();
        for part in parts {
            assert!(
                message.contains(part),
                "{case}: {part:?} missing from: {message}"
            );
        }
        assert_eq!(errors.errors()[0].field(), field, "{case}: {message}");
    }
}

#[test]
fn duplicates_name_both_files() {
    let errors = load_err(&[
        ("/m/a.yaml", POD),
        ("/m/b.yaml", &format!("{NS}\n---\n{POD}")),
    ]);
    let message = errors.to_string();
    assert!(
        message.contains(
            "/m/b.yaml, document 2: Pod shop/web is defined twice, first in /m/a.yaml, document 1"
        ),
        "{message}"
    );
    // Same name, different kind or namespace: not duplicates.
    let other_ns = POD
        .replace("namespace: shop", "namespace: other")
        .replace("10.0.1.5", "10.0.1.6");
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}";
    assert!(load(&[
        ("/m/a.yaml", POD),
        ("/m/b.yaml", &other_ns),
        ("/m/c.yaml", service)
    ])
    .is_ok());
}

#[test]
fn address_conflicts_name_both_files() {
    let twin = POD.replace("name: web", "name: twin");
    let errors = load_err(&[("/m/a.yaml", POD), ("/m/b.yaml", &twin)]);
    let message = errors.to_string();
    for part in ["/m/a.yaml", "/m/b.yaml", "pod IP 10.0.1.5", "Pod shop/twin"] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let errors = load_err(&[
        ("/m/a.yaml", &POD.replace("10.0.1.5", "bad")),
        ("/m/b.yaml", "kind: [unclosed"),
    ]);
    assert_eq!(errors.errors().len(), 2);
    let message = errors.to_string();
    assert!(
        message.starts_with("2 problems in the manifests:\n  1. /m/a.yaml"),
        "{message}"
    );
    assert!(
        message.contains("\n  2. /m/b.yaml, document 1"),
        "{message}"
    );
}
