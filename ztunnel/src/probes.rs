//! Keeps the node's kubelet-probe SNAT rules (`capture::rules::probes`) equal to what the
//! cluster says: every ambient pod of this node, with each port its probes declare. Pods
//! exempt only the SNAT address, so a host-network client on any other port is captured and
//! authorised like any client outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use capture::NetNs;
use discovery::Snapshot;

use crate::agent::Agent;

/// Retry interval after the rules could not be installed.
const RETRY: Duration = Duration::from_secs(10);

/// The probe targets of `node`: ambient, non-host-network pods with an IP, × probe ports.
pub fn targets(snapshot: &Snapshot, node: &str) -> Vec<SocketAddr> {
    let mut targets: Vec<SocketAddr> = snapshot
        .workloads_on_node(node)
        .filter(|w| w.ambient && !w.host_network)
        .flat_map(|w| {
            w.ips
                .iter()
                .flat_map(|ip| w.probe_ports.iter().map(|port| SocketAddr::new(*ip, *port)))
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// Runs forever: installs the rules now, then again whenever the targets change.
pub async fn run(agent: Arc<Agent>) {
    let Some(rules) = agent.rules.clone() else {
        tracing::error!("no redirect rules backend works on this node: kubelet probes of ambient pods are not SNAT-ed and will fail; install nftables or iptables");
        return;
    };
    let node_netns = match NetNs::current() {
        Ok(netns) => Arc::new(netns),
        Err(error) => {
            tracing::error!(%error, "cannot open the node's network namespace; kubelet probes of ambient pods will fail");
            return;
        }
    };
    let mut snapshots = agent.source.subscribe();
    let mut installed: Option<Vec<SocketAddr>> = None;
    loop {
        let wanted = targets(&agent.snapshot(), &agent.config.node);
        let stale = installed.as_ref() != Some(&wanted);
        if stale {
            let (rules, netns, list) = (rules.clone(), node_netns.clone(), wanted.clone());
            let applied =
                tokio::task::spawn_blocking(move || rules.apply_probe_snat(&netns, &list)).await;
            match applied {
                Ok(Ok(())) => {
                    tracing::info!(
                        targets = wanted.len(),
                        "kubelet probe SNAT rules installed on the node"
                    );
                    installed = Some(wanted.clone());
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, retry_in = ?RETRY, "cannot install the kubelet probe SNAT rules; probes of new ambient pods will fail until this works")
                }
                Err(error) => tracing::error!(%error, "probe SNAT task failed"),
            }
        }
        let retry = installed.as_ref() != Some(&wanted);
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use discovery::{LocalSource, LocalSourceConfig};

    const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop}
spec:
  nodeName: node-a
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {port: http}}
    livenessProbe: {tcpSocket: {port: 9090}}
status: {podIP: 10.1.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other-node-0, namespace: shop}
spec:
  nodeName: node-b
  containers: [{name: c, readinessProbe: {tcpSocket: {port: 8080}}}]
status: {podIP: 10.1.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out-0, namespace: shop, labels: {istio.io/dataplane-mode: none}}
spec:
  nodeName: node-a
  containers: [{name: c, readinessProbe: {tcpSocket: {port: 8080}}}]
status: {podIP: 10.1.1.3}
"#;

    #[test]
    fn only_this_nodes_ambient_pods_and_their_probe_ports() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, CLUSTER).unwrap();
        let snapshot = LocalSource::load(LocalSourceConfig::new([file]))
            .unwrap()
            .current();
        let expected: Vec<SocketAddr> = vec![
            "10.1.1.2:8080".parse().unwrap(),
            "10.1.1.2:9090".parse().unwrap(),
        ];
        assert_eq!(targets(&snapshot, "node-a"), expected);
        assert!(targets(&snapshot, "node-c").is_empty());
    }
}
