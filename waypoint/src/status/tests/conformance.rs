//! The Gateway API conformance data (v1.6.1, `conformance/gateway-api`) as status checks.
//!
//! No status-only test of v1.6.1 concerns mesh routes (every one needs a Gateway; the guard
//! below fails when the data set gains one, so that it gets replayed here). The mesh traffic
//! tests carry no status assertions either (`status_checks: []`), but their routes must be
//! accepted with every reference resolved, or no request of theirs could pass: that is
//! replayed for each of them.

use serde_yaml::Value;

use super::*;
use crate::routes::tests::conformance::{read, suite};

#[test]
fn no_status_only_test_concerns_mesh_routes() {
    let index: Value = serde_yaml::from_str(&read(&suite().join("INDEX.yaml"))).unwrap();
    let mesh_status_only: Vec<&str> = index["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|t| t["category"].as_str() == Some("status-only"))
        .filter(|t| {
            let features = t["features"].as_sequence().into_iter().flatten();
            features.filter_map(Value::as_str).any(|f| f == "Mesh")
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        mesh_status_only.is_empty(),
        "status-only mesh tests appeared in the conformance data: {mesh_status_only:?}; \
         replay their status_checks in this module"
    );
}

/// Routes whose references upstream's own manifests leave unresolved: `(route, reason)`.
/// MeshGRPCRouteWeight sends weight 0 to `echo-v3`, which mesh-base.yaml does not define; the
/// right status is `ResolvedRefs=False`, and traffic is unaffected (weight 0 is never picked).
const UNRESOLVED_UPSTREAM: &[(&str, &str)] = &[(
    "gateway-conformance-mesh/mesh-grpc-weighted-backends",
    "BackendNotFound",
)];

/// `(kind, namespace/name)` of the routes a case's own manifests define.
fn case_routes(case: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in case["manifests"]["files"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let content = file["content"].as_str().unwrap();
        for document in serde_yaml::Deserializer::from_str(content) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            let kind = object["kind"].as_str().unwrap_or_default();
            if kind == "HTTPRoute" || kind == "GRPCRoute" {
                let meta = &object["metadata"];
                let namespace = meta["namespace"].as_str().unwrap_or("default");
                let name = meta["name"].as_str().unwrap();
                out.push((kind.to_owned(), format!("{namespace}/{name}")));
            }
        }
    }
    out
}

#[test]
fn mesh_case_routes_are_accepted_with_every_reference_resolved() {
    let root = suite();
    let mut files: Vec<_> = std::fs::read_dir(root.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mesh-"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "mesh cases missing under {}",
        root.display()
    );
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in &files {
        let case: Value = serde_yaml::from_str(&read(path)).unwrap();
        let mut text = read(&root.join(case["manifests"]["base"].as_str().unwrap()));
        for file in case["manifests"]["files"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            text.push_str("\n---\n");
            text.push_str(file["content"].as_str().unwrap());
        }
        let list = compute(&load(&text), now());
        for (kind, route) in case_routes(&case) {
            let Some(Status::Route(status)) = find(&list, &kind, &route).map(|o| &o.status) else {
                failures.push(format!("{}: {kind} {route} has no status", path.display()));
                continue;
            };
            for parent in &status.parents {
                for type_ in ["Accepted", "ResolvedRefs"] {
                    checked += 1;
                    let got = state(&parent.conditions, type_);
                    let unresolved = UNRESOLVED_UPSTREAM.iter().find(|(r, _)| *r == route);
                    let want = match (type_, unresolved) {
                        ("ResolvedRefs", Some((_, reason))) => (F, Some(*reason)),
                        _ => (T, None),
                    };
                    let matches = got.as_ref().is_some_and(|(status, reason)| {
                        *status == want.0 && want.1.is_none_or(|w| w == reason)
                    });
                    if !matches {
                        failures.push(format!(
                            "{}: {kind} {route} parent {}: {type_} {got:?}: {}",
                            path.display(),
                            parent.parent_ref.name,
                            message(&parent.conditions, type_)
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 40, "only {checked} conditions checked");
}
