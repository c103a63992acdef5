//! Keeps the pods of this node captured exactly when the cluster says they are ambient, also
//! when no CNI call tells us: a namespace or pod labelled after the pod started, a label
//! removed, and ztunnel's own restart (which re-syncs every running ambient pod).
//!
//! The CNI plugin remains the path for new pods; this loop only acts on pods that already run
//! (they have an IP), so the two do not race over a pod being created.

use std::collections::HashMap;
use std::sync::Arc;

use capture::locate;
use capture::rules::{RuleOptions, RulesBackend};
use discovery::Workload;

use crate::agent::Agent;
use crate::pod;

/// Runs forever: once now, then on every snapshot change.
pub async fn run(agent: Arc<Agent>) {
    let mut snapshots = agent.source.subscribe();
    loop {
        reconcile(&agent).await;
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// One pass over the node's pods.
pub async fn reconcile(agent: &Arc<Agent>) {
    let snapshot = agent.snapshot();
    // One look at the enrolled pods per pass, not one per workload.
    let enrolled: HashMap<(String, String), Arc<pod::EnrolledPod>> = agent
        .enrolled()
        .into_iter()
        .map(|p| ((p.namespace.clone(), p.name.clone()), p))
        .collect();
    for workload in snapshot.workloads_on_node(&agent.config.node) {
        let key = (workload.namespace.clone(), workload.name.clone());
        let running = !workload.ips.is_empty() && !workload.host_network;
        match (workload.ambient && running, enrolled.get(&key)) {
            (true, None) => enroll_running(agent, workload).await,
            // An enrolled pod that is still ambient but has no IP yet is mid-ADD: leave it.
            (false, Some(enrolled)) if !workload.ambient => {
                release(
                    agent,
                    enrolled,
                    "the pod is no longer ambient (label removed)",
                );
            }
            _ => {}
        }
    }
}

/// Enrolls a pod that is already running: find its namespace, start its proxy, then install
/// the redirect rules (the same order as the CNI plugin, so a failure never leaves rules that
/// point at nothing).
async fn enroll_running(agent: &Arc<Agent>, workload: &Workload) {
    let name = format!("{}/{}", workload.namespace, workload.name);
    let Some(rules) = agent.rules.clone() else {
        tracing::error!(pod = %name, "cannot capture a running pod: neither nftables nor iptables works on this node");
        return;
    };
    let ips = workload.ips.clone();
    let found = tokio::task::spawn_blocking(move || {
        ips.iter().find_map(|ip| locate::find_netns_by_ip(*ip))
    })
    .await
    .ok()
    .flatten();
    let Some(netns) = found else {
        tracing::debug!(pod = %name, ips = ?workload.ips, "no network namespace on this node holds the pod's IP yet");
        return;
    };
    let Ok(for_rules) = netns.try_clone() else {
        return;
    };
    let pod_ref = capture::enroll::PodRef {
        uid: workload.uid.clone(),
        name: workload.name.clone(),
        namespace: workload.namespace.clone(),
    };
    match pod::enroll(agent, pod_ref, netns).await {
        capture::enroll::Reply::Enrolled { capture_dns } => {
            let options = RuleOptions {
                probe_sources: capture::rules::probes::probe_sources(),
                capture_dns,
            };
            let applied =
                tokio::task::spawn_blocking(move || rules.apply(&for_rules, &options)).await;
            match applied {
                Ok(Ok(())) => {
                    tracing::info!(pod = %name, "running pod captured: it joined the mesh without a restart")
                }
                Ok(Err(error)) => {
                    tracing::error!(pod = %name, %error, "cannot install the redirect rules; the pod stays out of the mesh");
                    pod::unenroll(
                        agent,
                        &workload.uid,
                        "its redirect rules could not be installed",
                    );
                }
                Err(error) => {
                    tracing::error!(pod = %name, %error, "rule installation task failed");
                    pod::unenroll(
                        agent,
                        &workload.uid,
                        "its redirect rules could not be installed",
                    );
                }
            }
        }
        capture::enroll::Reply::Error(error) => {
            tracing::warn!(pod = %name, %error, "cannot enroll the running pod; will retry on the next change");
        }
        _ => {}
    }
}

/// Takes a pod out of the mesh: rules first (its traffic flows directly again), then the proxy.
fn release(agent: &Arc<Agent>, enrolled: &pod::EnrolledPod, why: &str) {
    if let Some(rules) = &agent.rules {
        if let Err(error) = rules.remove(&enrolled.netns) {
            tracing::warn!(pod = %format_args!("{}/{}", enrolled.namespace, enrolled.name), %error, "cannot remove the redirect rules");
        }
    }
    pod::unenroll(agent, &enrolled.uid, why);
}
