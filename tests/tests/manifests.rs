//! The manifests folder tracks the cluster: Pods with their IPs, Services with VIPs and
//! EndpointSlices, label changes and a test's own objects. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use ambit_tests::{Cluster, Labels, PodSpec, Result, ServiceSpec};
use serde_json::{json, Value};

fn read(dir: &Path, file: &str) -> Value {
    let text =
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    serde_yaml::from_str(&text).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn manifests_follow_pods_services_and_labels() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(2).build()?;
    let dir = cluster.manifests_dir().to_path_buf();
    let web0 = cluster.add_pod(
        PodSpec::new("shop", "web-0")
            .on_node(0)
            .label("app", "web")
            .service_account("web")
            .port(8080),
    )?;
    let web1 = cluster.add_pod(PodSpec::new("shop", "web-1").on_node(1).label("app", "web"))?;
    let _db = cluster.add_pod(PodSpec::new("shop", "db-0").on_node(1).label("app", "db"))?;
    let svc = cluster.add_service(
        ServiceSpec::new("shop", "web")
            .selector("app", "web")
            .port("http", 80, 8080),
    )?;
    assert_eq!(svc.vip.octets()[..3], [10, cluster.octet(), 200]);

    let node = read(&dir, "10-node.node-1.yaml");
    assert_eq!(
        node["status"]["addresses"][0]["address"],
        cluster.node(1).ip().to_string()
    );
    let pod = read(&dir, "20-pod.shop.web-0.yaml");
    assert_eq!(pod["metadata"]["uid"], web0.uid());
    assert_eq!(pod["spec"]["serviceAccountName"], "web");
    assert_eq!(pod["status"]["podIP"], web0.ip().to_string());
    assert_eq!(pod["status"]["hostIP"], cluster.node(0).ip().to_string());
    let service = read(&dir, "30-service.shop.web.yaml");
    assert_eq!(service["spec"]["clusterIP"], svc.vip.to_string());
    let slice = read(&dir, "31-endpointslice.shop.web.yaml");
    let mut addresses: Vec<String> = slice["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap().to_string())
        .collect();
    addresses.sort();
    let mut expected = vec![web0.ip().to_string(), web1.ip().to_string()];
    expected.sort();
    assert_eq!(addresses, expected);

    // Enrol the namespace, opt one pod out: files are rewritten in place.
    cluster.set_namespace_labels("shop", labels(&[("istio.io/dataplane-mode", "ambient")]))?;
    let ns = read(&dir, "00-namespace.shop.yaml");
    assert_eq!(
        ns["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    cluster.set_pod_labels(
        &web1,
        labels(&[("app", "web"), ("istio.io/dataplane-mode", "none")]),
    )?;
    let pod = read(&dir, "20-pod.shop.web-1.yaml");
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");

    // A test's own objects.
    let policy = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "shop"},
        "spec": {},
    });
    cluster.put_manifest("50-policy.yaml", vec![policy.clone()])?;
    assert_eq!(read(&dir, "50-policy.yaml"), policy);
    cluster.remove_manifest("50-policy.yaml")?;
    assert!(!dir.join("50-policy.yaml").exists());

    // Removing a pod removes its object and its endpoint.
    cluster.remove_pod(&web0)?;
    assert!(!dir.join("20-pod.shop.web-0.yaml").exists());
    let slice = read(&dir, "31-endpointslice.shop.web.yaml");
    assert_eq!(slice["endpoints"].as_array().unwrap().len(), 1);
    // Only complete YAML files are ever visible (temp files are renamed into place).
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".yaml"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    Ok(())
}
