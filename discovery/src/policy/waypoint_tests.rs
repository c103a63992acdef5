//! `Snapshot::waypoint_policies`: which policies a waypoint enforces for a request, by Istio's
//! attachment rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::decode::Collector;
use crate::snapshot::{Snapshot, SnapshotOptions};

fn policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

fn gateway(namespace: &str, name: &str, class: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{gatewayClassName: {class}, listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]}}"
    )
}

const WP: &str =
    "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\n  rules: [{}]\n";

fn snapshot() -> Snapshot {
    let root = "ambit-system";
    let documents = [
        gateway("shop", "wp", "ambit-waypoint"),
        gateway("shop", "other-wp", "ambit-waypoint"),
        gateway("edge", "wp", "ambit"),
        policy("shop", "gateway", WP),
        policy("shop", "other-gateway", &WP.replace("name: wp", "name: other-wp")),
        // Istio: a Gateway target is in the policy's namespace, so this names ambit-system/wp.
        policy(root, "root-names-gateway", WP),
        policy(root, "class", &WP.replace("kind: Gateway,", "kind: GatewayClass,").replace("name: wp", "name: ambit-waypoint")),
        policy(root, "other-class", &WP.replace("kind: Gateway,", "kind: GatewayClass,").replace("name: wp", "name: ambit")),
        policy("shop", "reviews", "  targetRefs: [{kind: Service, name: reviews}]\n  rules: [{}]\n"),
        policy("shop", "ratings-and-gateway", "  targetRefs: [{kind: Service, group: core, name: ratings}, {kind: Gateway, group: gateway.networking.k8s.io, name: wp}]\n  rules: [{}]\n"),
        policy("books", "reviews", "  action: DENY\n  targetRefs: [{kind: Service, name: reviews}]\n  rules: [{}]\n"),
        policy("shop", "workloads", "  selector: {matchLabels: {app: reviews}}\n  rules: [{}]\n"),
        policy("shop", "everything", "  rules: [{}]\n"),
        policy("shop", "broken", &WP.replace("rules: [{}]", "rules: [{to: [{operation: {methods: [get]}}]}]")),
    ];
    let options = SnapshotOptions::default();
    let mut collector = Collector::new(&options);
    collector.add_file(Path::new("policies.yaml"), &documents.join("\n---\n"));
    Snapshot::build(collector.into_objects().expect("fixture loads"), &options).0
}

fn names<'a>(
    policies: impl Iterator<Item = &'a crate::policy::AuthorizationPolicy>,
) -> Vec<String> {
    policies
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

#[test]
fn a_waypoint_enforces_what_targets_it_its_class_or_the_service() {
    let s = snapshot();
    type Name<'a> = (&'a str, &'a str);
    let cases: &[(&str, Name, Option<Name>, &[&str])] = &[
        (
            "a Service of its own namespace",
            ("shop", "wp"),
            Some(("shop", "reviews")),
            &[
                "shop/broken",
                "shop/gateway",
                "shop/ratings-and-gateway",
                "shop/reviews",
                "ambit-system/class",
            ],
        ),
        (
            "a Service of another namespace: that namespace's Service policies",
            ("shop", "wp"),
            Some(("books", "reviews")),
            &[
                "shop/broken",
                "shop/gateway",
                "shop/ratings-and-gateway",
                "ambit-system/class",
                "books/reviews",
            ],
        ),
        (
            "a policy naming the Gateway and a Service counts once",
            ("shop", "wp"),
            Some(("shop", "ratings")),
            &[
                "shop/broken",
                "shop/gateway",
                "shop/ratings-and-gateway",
                "ambit-system/class",
            ],
        ),
        (
            "a pod addressed directly: Gateway policies only",
            ("shop", "wp"),
            None,
            &[
                "shop/broken",
                "shop/gateway",
                "shop/ratings-and-gateway",
                "ambit-system/class",
            ],
        ),
        (
            "another waypoint of the class",
            ("shop", "other-wp"),
            Some(("shop", "details")),
            &["shop/other-gateway", "ambit-system/class"],
        ),
        (
            "a Gateway of another class, same name",
            ("edge", "wp"),
            None,
            &["ambit-system/other-class"],
        ),
        (
            "an unknown Gateway: no class to match",
            ("nowhere", "wp"),
            Some(("nowhere", "reviews")),
            &[],
        ),
    ];
    for (case, gateway, service, want) in cases {
        assert_eq!(
            names(s.waypoint_policies(*gateway, *service)),
            *want,
            "{case}"
        );
    }
    let broken = s.waypoint_policies(("shop", "wp"), None).next().unwrap();
    assert!(
        broken.invalid.is_some(),
        "fail-closed forms are the waypoint's too"
    );
}

#[test]
fn ztunnel_still_leaves_targeted_policies_to_the_waypoint() {
    let s = snapshot();
    let options = SnapshotOptions::default();
    let mut collector = Collector::new(&options);
    collector.add_file(
        Path::new("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: reviews-1, namespace: shop, labels: {app: reviews}}\n\
         spec: {nodeName: n, containers: [{name: c}]}\nstatus: {podIP: 10.0.0.7}",
    );
    let pod = collector.into_objects().unwrap().workloads.remove(0);
    assert_eq!(
        names(s.policies_for(&pod)),
        ["shop/everything", "shop/workloads"]
    );
}
