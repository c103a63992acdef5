//! The harness invokes chained CNI plugins exactly as kubelet/libcni would: checked with a
//! recording plugin (src/bin/ambit-cni-recorder.rs) in place of ambit-cni. Needs root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ambit_tests::cni::NetworkList;
use ambit_tests::{Cluster, HarnessError, PodSpec, Result};
use serde_json::{json, Value};

const RECORDER: &str = "ambit-cni-recorder";
const RECORD_FILE: &str = "cni-calls.jsonl";

fn recorder_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_ambit-cni-recorder"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn calls(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn chained_plugin_gets_kubelet_environment_and_prev_result() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(2)
        .cni_path_prepend(recorder_dir())
        .chain_plugin_per_node(|node| {
            json!({
                "type": RECORDER,
                "recordFile": node.dir().join(RECORD_FILE),
                "nodeName": node.name(),
            })
        })
        .build()?;
    let pod = cluster.add_pod(PodSpec::new("shop", "web-0").on_node(1))?;
    let record = cluster.node(1).dir().join(RECORD_FILE);

    let add = calls(&record);
    assert_eq!(add.len(), 1, "{add:?}");
    let (env, config) = (&add[0]["env"], &add[0]["config"]);
    assert_eq!(add[0]["command"], "ADD");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(env["CNI_CONTAINERID"], pod.container_id());
    assert_eq!(
        env["CNI_NETNS"],
        pod.netns().path().to_string_lossy().as_ref()
    );
    let cni_args = env["CNI_ARGS"].as_str().unwrap();
    for expected in [
        "K8S_POD_NAMESPACE=shop".to_string(),
        "K8S_POD_NAME=web-0".to_string(),
        format!("K8S_POD_UID={}", pod.uid()),
        format!("K8S_POD_INFRA_CONTAINER_ID={}", pod.container_id()),
    ] {
        assert!(cni_args.split(';').any(|kv| kv == expected), "{cni_args}");
    }
    assert!(env["CNI_PATH"]
        .as_str()
        .unwrap()
        .starts_with(recorder_dir().to_str().unwrap()));
    // libcni injects the list's name and version and the bridge plugin's result.
    assert_eq!(config["name"], "ambit");
    assert_eq!(config["cniVersion"], "1.0.0");
    assert_eq!(config["nodeName"], "node-1");
    let prev_ip = config["prevResult"]["ips"][0]["address"].as_str().unwrap();
    assert_eq!(prev_ip, format!("{}/24", pod.ip()));
    // The recorder passes prevResult through, so it is the chain's final result.
    assert_eq!(pod.cni_result(), &config["prevResult"]);

    cluster.remove_pod(&pod)?;
    let all = calls(&record);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["command"], "DEL");
    // DEL gets the cached final ADD result as prevResult.
    assert_eq!(&all[1]["config"]["prevResult"], pod.cni_result());
    assert!(!pod.netns().path().exists());
    assert!(!cluster
        .manifests_dir()
        .join("20-pod.shop.web-0.yaml")
        .exists());
    Ok(())
}

#[test]
fn failed_add_is_reported_and_rolled_back() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(1)
        .cni_path_prepend(recorder_dir())
        .chain_plugin_per_node(|node| {
            json!({"type": RECORDER, "recordFile": node.dir().join(RECORD_FILE), "failAdd": true})
        })
        .build()?;
    let error = cluster
        .add_pod(PodSpec::new("shop", "doomed"))
        .expect_err("ADD must fail");
    let message = error.to_string();
    assert!(matches!(error, HarnessError::Cni { .. }), "{message}");
    assert!(
        message.contains(RECORDER) && message.contains("refusing ADD"),
        "{message}"
    );
    // Like kubelet, the harness DELs after a failed ADD and removes the sandbox.
    let record = calls(&cluster.node(0).dir().join(RECORD_FILE));
    let commands: Vec<&str> = record
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["ADD", "DEL"]);
    let namespaces: Vec<String> = ambit_tests::netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(cluster.prefix()))
        .collect();
    assert_eq!(namespaces.len(), 2, "{namespaces:?}"); // fabric + node
    assert!(cluster.pods().is_empty());
    assert!(!cluster
        .manifests_dir()
        .join("20-pod.shop.doomed.yaml")
        .exists());
    Ok(())
}

#[test]
fn pods_use_the_conflist_an_installer_rewrote() -> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(1)
        .cni_path_prepend(recorder_dir())
        .build()?;
    let before = cluster.add_pod(PodSpec::new("default", "before"))?;
    // What the ambit-cni installer does on a node: append itself to the existing chain.
    let node = cluster.node(0).clone();
    let mut list = node.network_list()?;
    assert_eq!(list.plugins.len(), 1);
    list.plugins
        .push(json!({"type": RECORDER, "recordFile": node.dir().join(RECORD_FILE)}));
    list.store(&node.cni_conf_dir().join("10-ambit.conflist"))?;
    assert_eq!(
        NetworkList::load(&node.cni_conf_dir().join("10-ambit.conflist"))?,
        list
    );

    let after = cluster.add_pod(PodSpec::new("default", "after"))?;
    let record = calls(&node.dir().join(RECORD_FILE));
    assert_eq!(record.len(), 1);
    assert!(record[0]["env"]["CNI_ARGS"]
        .as_str()
        .unwrap()
        .contains("K8S_POD_NAME=after"));
    // A pod is deleted with the chain it was added with (no recorder DEL for `before`).
    cluster.remove_pod(&before)?;
    assert_eq!(calls(&node.dir().join(RECORD_FILE)).len(), 1);
    cluster.remove_pod(&after)?;
    assert_eq!(calls(&node.dir().join(RECORD_FILE)).len(), 2);
    Ok(())
}
