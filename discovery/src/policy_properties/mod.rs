//! Property tests (DESIGN §4 and §7).
//!
//! Policies are generated as specs ([`PolicySpec`]), written as the objects a user would write,
//! read by both sources' conversions (the manifest loader, and the Kubernetes source's path for
//! a watched object), and evaluated the way ztunnel does (`Snapshot::policies_for`, then
//! [`authorize`]) for every connection of a small universe: destination workloads × peers ×
//! source IPs × ports. The reference model evaluates the specs directly, by Istio's L4 rules as
//! written in `crate::policy`'s docs, sharing no code with the implementation.
//!
//! (a) For valid policies, the implementation allows exactly what the reference allows.
//! (b) A policy corrupted so that it fails to convert never allows more than its intended
//!     form would, nor more than if it were absent, and allows exactly what its fail-closed form
//!     (allow-nothing or deny-all for the scope it could have had) allows.
//!
//! `PROPTEST_CASES` raises the case count for a longer run by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corrupt;
mod reference;
mod specs;

use std::path::Path;
use std::sync::OnceLock;

use ::kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::decode::Collector;
use crate::model::Workload;
use crate::snapshot::{Snapshot, SnapshotOptions};
use corrupt::corruption;
use reference::{reference_set, universe, Conn};
use specs::*;

fn options() -> SnapshotOptions {
    SnapshotOptions::default()
}

fn workloads() -> &'static [Workload] {
    static WORKLOADS_CONVERTED: OnceLock<Vec<Workload>> = OnceLock::new();
    WORKLOADS_CONVERTED.get_or_init(|| {
        let mut collector = Collector::new(&options());
        for (i, (ns, name, app)) in WORKLOADS.iter().enumerate() {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
                 spec: {{nodeName: node-a, containers: [{{name: c}}]}}\nstatus: {{podIP: 10.9.0.{}}}",
                i + 1
            );
            collector.add_file(Path::new("pods.yaml"), &pod);
        }
        collector.into_objects().unwrap().workloads
    })
}

fn ids() -> &'static [Option<SpiffeId>] {
    static IDS: OnceLock<Vec<Option<SpiffeId>>> = OnceLock::new();
    IDS.get_or_init(|| {
        PEERS
            .iter()
            .map(|peer| peer.map(|(td, ns, sa)| SpiffeId::new(td, ns, sa).unwrap()))
            .collect()
    })
}

fn snapshot_of(policies: Vec<AuthorizationPolicy>) -> Snapshot {
    let objects = crate::snapshot::Objects {
        workloads: workloads().to_vec(),
        policies,
        ..Default::default()
    };
    Snapshot::build(objects, &options()).0
}

/// The manifest loader: each policy in its own file.
fn local_policies(objects: &[Value]) -> Vec<AuthorizationPolicy> {
    let mut collector = Collector::new(&options());
    for (i, object) in objects.iter().enumerate() {
        let text = serde_yaml::to_string(object).unwrap();
        collector.add_file(Path::new(&format!("/m/{i}.yaml")), &text);
    }
    let mut policies = collector.into_objects().unwrap().policies;
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    policies
}

/// The Kubernetes source's conversion of watched objects.
fn kube_policies(objects: &[Value]) -> Vec<AuthorizationPolicy> {
    let gvk = GroupVersionKind::gvk("security.istio.io", "v1", "AuthorizationPolicy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "authorizationpolicies");
    let mut policies: Vec<AuthorizationPolicy> = objects
        .iter()
        .filter_map(|object| {
            let object: DynamicObject = serde_json::from_value(object.clone()).unwrap();
            crate::kube::authorization_policy(&object, &resource, ROOT).unwrap()
        })
        .collect();
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    policies
}

/// The policies as enforced: a broken one's field and problem text may differ between the
/// sources (serde_json and serde_yaml word some decode errors differently), not its effect.
fn enforced(mut policies: Vec<AuthorizationPolicy>) -> Vec<AuthorizationPolicy> {
    for policy in &mut policies {
        if let Some(invalid) = &mut policy.invalid {
            invalid.field.clear();
            invalid.problem.clear();
        }
    }
    policies
}

fn allowed_set(snapshot: &Snapshot) -> Vec<bool> {
    universe()
        .iter()
        .map(|c| {
            let (ns, name, _) = WORKLOADS[c.workload];
            let workload = snapshot.workload(ns, name).unwrap();
            let attrs = ConnectionAttrs {
                src_ip: c.ip,
                src_identity: ids()[c.peer].as_ref(),
                dst_port: c.port,
            };
            authorize(snapshot.policies_for(workload), &attrs) == Decision::Allow
        })
        .collect()
}

/// The first connection `got` allows that `limit` does not, if any.
fn allowed_beyond(got: &[bool], limit: &[bool]) -> Option<Conn> {
    universe()
        .iter()
        .zip(got.iter().zip(limit))
        .find(|(_, (got, limit))| **got && !**limit)
        .map(|(c, _)| *c)
}

fn first_difference(got: &[bool], want: &[bool]) -> Option<(Conn, bool)> {
    universe()
        .iter()
        .zip(got.iter().zip(want))
        .find(|(_, (got, want))| got != want)
        .map(|(c, (got, _))| (*c, *got))
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Nothing written into the source tree on failure; the shrunk case is printed.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn authorize_agrees_with_the_reference_model(specs in policies()) {
        let objects: Vec<Value> = specs.iter().map(to_json).collect();
        let want = reference_set(&specs);
        let local = local_policies(&objects);
        prop_assert!(local.iter().all(|p| p.invalid.is_none()), "{local:?}");
        let kube = kube_policies(&objects);
        prop_assert_eq!(&local, &kube, "both sources convert alike");
        let got = allowed_set(&snapshot_of(local));
        let diff = first_difference(&got, &want);
        prop_assert!(diff.is_none(), "connection {:?}: implementation allows={}, reference the opposite", diff.map(|d| d.0), diff.is_some_and(|d| d.1));
    }

    #[test]
    fn a_policy_that_fails_to_convert_never_allows_more(
        others in policies(),
        intended in policy(),
        corruption in corruption(),
    ) {
        let intended = PolicySpec { name: "broken".into(), ..intended };
        let mut broken = to_json(&intended);
        corruption.apply(&mut broken);
        let mut objects: Vec<Value> = others.iter().map(to_json).collect();
        objects.push(broken);

        let with_intended = reference_set(&[others.clone(), vec![intended.clone()]].concat());
        let without = reference_set(&others);
        let fail_closed = reference_set(&[others.clone(), vec![corruption.fail_closed_form(&intended)]].concat());

        let local = local_policies(&objects);
        let invalid: Vec<&AuthorizationPolicy> = local.iter().filter(|p| p.invalid.is_some()).collect();
        prop_assert_eq!(invalid.len(), 1, "exactly the corrupted policy is marked: {:?}", invalid);
        let mut paths = vec![("manifests", local.clone())];
        if corruption.reaches_kubernetes() {
            let kube = kube_policies(&objects);
            prop_assert_eq!(enforced(local.clone()), enforced(kube.clone()), "both sources convert alike");
            paths.push(("kubernetes", kube));
        }
        for (path, policies) in paths {
            let got = allowed_set(&snapshot_of(policies));
            let beyond = allowed_beyond(&got, &with_intended);
            prop_assert!(beyond.is_none(), "{path}: allows {beyond:?}, which the intended policy does not");
            let beyond = allowed_beyond(&got, &without);
            prop_assert!(beyond.is_none(), "{path}: allows {beyond:?}, which leaving the policy out does not");
            let diff = first_difference(&got, &fail_closed);
            prop_assert!(diff.is_none(), "{path}: differs from the fail-closed form at {diff:?}");
        }
    }
}
