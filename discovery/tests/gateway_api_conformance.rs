//! The Gateway API conformance suite's manifests (v1.6.1, transcribed; the repository's copy is
//! in `conformance/gateway-api`) loaded as `--manifests` files, each test's manifests over its
//! base.
//!
//! The suite applies every one of these objects to a real API server, which accepts them, so
//! none may be rejected here: a rejection would be Ambit refusing what the schema allows (the
//! deliberately broken ones — unknown protocols, route kinds, certificate refs — are broken in
//! ways the schema accepts and status reports).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn suite() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance/gateway-api")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}): the conformance data lives in conformance/gateway-api (see conformance/README.md)",
            path.display()
        )
    })
}

#[test]
fn every_conformance_manifest_loads_and_none_is_rejected() {
    let root = suite();
    let mut problems = Vec::new();
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cases = 0;
    for dir in ["cases", "status_only"] {
        let listed = root.join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&listed)
            .unwrap_or_else(|error| {
                panic!(
                    "cannot list {} ({error}): see conformance/README.md",
                    listed.display()
                )
            })
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let case: serde_yaml::Value = serde_yaml::from_str(&read(&file)).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let mut text = match case["manifests"]["base"].as_str() {
                Some(base) => read(&root.join(base)),
                None => String::new(),
            };
            for manifest in case["manifests"]["files"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                text.push_str("\n---\n");
                text.push_str(manifest["content"].as_str().unwrap_or_default());
            }
            let text = text
                .replace("{GATEWAY_CLASS_NAME}", "ambit")
                .replace("{GATEWAY_CONTROLLER_NAME}", "ambit.dev/gateway-controller");
            cases += 1;
            match discovery::fuzzing::load_manifest_text(&text) {
                Ok((snapshot, _)) => {
                    let view = snapshot.gateway_api();
                    for rejected in view.rejected() {
                        problems.push(format!("{name}: {rejected}"));
                    }
                    for (kind, count) in [
                        ("Gateway", view.gateways().len()),
                        ("HTTPRoute", view.http_routes().len()),
                        ("GRPCRoute", view.grpc_routes().len()),
                        ("TLSRoute", view.tls_routes().len()),
                        ("TCPRoute", view.tcp_routes().len()),
                        ("ReferenceGrant", view.reference_grants().len()),
                    ] {
                        *totals.entry(kind).or_default() += count;
                    }
                }
                Err(errors) => problems.push(format!("{name}: not loaded: {errors}")),
            }
        }
    }
    assert!(cases > 100, "only {cases} conformance tests found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for (kind, total) in &totals {
        assert!(
            *total > 0,
            "no {kind} in the whole suite was read: {totals:?}"
        );
    }
}
