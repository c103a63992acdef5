#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;

fn load_all(files: &[(&str, &str)]) -> Result<Loaded, ManifestErrors> {
    let mut collector = Collector::new(&SnapshotOptions::default());
    for (name, text) in files {
        collector.add_file(Path::new(name), text);
    }
    collector.finish(&SnapshotOptions::default())
}

/// Loads manifests that must have no problem at all.
fn load(files: &[(&str, &str)]) -> Result<Snapshot, ManifestErrors> {
    load_all(files).map(|loaded| {
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.snapshot
    })
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
spec: {{gatewayClassName: ambit, listeners: [{{name: http, port: 80, protocol: HTTP}}]}}
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
    assert_eq!(
        snapshot.gateway_api().gateways().len(),
        1,
        "Gateways are read now"
    );
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
            "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}".into(),
            &["use discovery.k8s.io/v1"],
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

const WEB_AND_DB: &str = "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 10.0.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {podIP: 10.0.1.6}";

/// Lets `shop/sa/web` from 10.0.0.5 reach the db on 5432, and nothing else reach the db.
const ALLOW_DB: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web], ipBlocks: [10.0.0.0/8]}}]
    to: [{operation: {ports: ['5432']}}]";

/// Whether `shop/sa/web` from 10.0.0.5 may reach the pod `shop/<name>` on 5432.
fn web_reaches(snapshot: &Snapshot, name: &str) -> crate::policy::Decision {
    let web = identity::SpiffeId::new("cluster.local", "shop", "web").unwrap();
    let workload = snapshot.workload("shop", name).unwrap();
    let attrs = crate::policy::ConnectionAttrs {
        src_ip: "10.0.0.5".parse().unwrap(),
        src_identity: Some(&web),
        dst_port: 5432,
    };
    crate::policy::authorize(snapshot.policies_for(workload), &attrs)
}

#[test]
fn broken_policies_load_fail_closed_with_everything_else() {
    use crate::policy::Decision;
    let valid = load(&[("/m/pods.yaml", WEB_AND_DB), ("/m/p.yaml", ALLOW_DB)]).unwrap();
    assert_eq!(
        web_reaches(&valid, "db"),
        Decision::Allow,
        "the intended form"
    );
    assert_eq!(web_reaches(&valid, "web"), Decision::Allow);

    // (case, edit of ALLOW_DB, field, whether web still reaches db, and the web pod itself)
    let cidr = ("10.0.0.0/8", "10.0.0.0/33");
    let deny = ("spec:\n", "spec:\n  action: DENY\n");
    let ip_field = "spec.rules[0].from[0].source.ipBlocks[0]";
    type Edits<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Edits, &str, bool)] = &[
        (
            "typo field",
            &[("principals", "principal")],
            "spec.rules[0].from[0].source.principal",
            true,
        ),
        (
            "unknown field",
            &[("  rules:", "  rulez:")],
            "spec.rulez",
            true,
        ),
        ("bad cidr", &[cidr], ip_field, true),
        (
            "bad action",
            &[("spec:\n", "spec:\n  action: allow\n")],
            "spec.action",
            true,
        ),
        (
            "bad selector",
            &[("matchLabels", "matchLabel")],
            "spec.selector.matchLabel",
            false,
        ),
        ("deny with bad cidr", &[deny, cidr], ip_field, true),
        (
            "deny with bad selector",
            &[deny, ("{app: db}", "[app]")],
            "spec.selector.matchLabels",
            false,
        ),
        (
            "unknown version",
            &[("security.istio.io/v1", "security.istio.io/v1alpha1")],
            "apiVersion",
            true,
        ),
    ];
    for (case, edits, field, web_pod_open) in cases {
        let mut policy = ALLOW_DB.to_owned();
        for (from, to) in edits.iter() {
            assert!(policy.contains(from), "{case}: edit does not apply");
            policy = policy.replacen(from, to, 1);
        }
        let loaded = load_all(&[("/m/pods.yaml", WEB_AND_DB), ("/m/p.yaml", &policy)])
            .unwrap_or_else(|e| panic!("{case}: the rest must load: {e}"));
        let snapshot = &loaded.snapshot;
        assert_eq!(snapshot.workloads().count(), 2, "{case}");
        // Reported as an error, though it did not block the load.
        let [problem] = loaded.problems.as_slice() else {
            panic!("{case}: {:?}", loaded.problems)
        };
        assert!(!problem.blocks_load());
        assert_eq!(problem.field(), Some(*field), "{case}: {problem}");
        let message = problem.to_string();
        for part in [
            "/m/p.yaml, document 1",
            "AuthorizationPolicy shop/db",
            "until it is fixed the policy",
        ] {
            assert!(
                message.contains(part),
                "{case}: {part:?} missing from {message}"
            );
        }
        let broken: Vec<_> = snapshot.invalid_policies().collect();
        assert_eq!(broken.len(), 1, "{case}");
        // What the intended policy allowed is refused, by the broken policy, which says so.
        match web_reaches(snapshot, "db") {
            Decision::DeniedBy(by) => {
                assert_eq!(by.invalid.as_ref(), broken[0].invalid.as_ref(), "{case}");
                assert!(
                    by.to_string().contains("could not be understood"),
                    "{case}: {by}"
                );
            }
            other => panic!("{case}: {other:?}"),
        }
        // Only a selector that cannot be read widens the scope to the web pod.
        let web = web_reaches(snapshot, "web");
        assert_eq!(web == Decision::Allow, *web_pod_open, "{case}: {web:?}");
    }
}

#[test]
fn a_broken_policy_is_listed_with_problems_that_block() {
    let broken = ALLOW_DB.replacen("10.0.0.0/8", "10.0.0.0/33", 1);
    let errors = load_all(&[
        ("/m/a.yaml", &broken),
        ("/m/b.yaml", &POD.replace("10.0.1.5", "bad")),
    ])
    .unwrap_err();
    let fields: Vec<_> = errors.errors().iter().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            Some("spec.rules[0].from[0].source.ipBlocks[0]"),
            Some("status.podIP")
        ]
    );

    // An AUDIT policy never changes access: left out, reported, nothing blocked.
    let audit = ALLOW_DB.replacen("spec:\n", "spec:\n  action: AUDIT\n", 1);
    let loaded = load_all(&[("/m/pods.yaml", WEB_AND_DB), ("/m/a.yaml", &audit)]).unwrap();
    assert_eq!(loaded.snapshot.policies().count(), 0);
    let message = loaded.problems[0].to_string();
    assert!(message.contains("the policy is left out"), "{message}");
}
