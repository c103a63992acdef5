//! Keeps the pods of this node captured exactly when the cluster says they are ambient, also
//! when no CNI call tells us: a namespace or pod labelled after the pod started, a label
//! removed, ztunnel's own restart (which re-syncs every running ambient pod), and a CNI DEL
//! that never arrived (the pod is gone from the cluster, its enrollment is released).
//!
//! The CNI plugin remains the path for new pods; this loop only acts on pods that already run
//! (they have an IP). Both take the pod's lock, so they never act on one pod at once. A pass
//! that could not enroll a pod (the CA down, the namespace not found yet) is retried with
//! back-off, without waiting for an unrelated change in the cluster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::rules::{RuleOptions, RulesBackend};
use capture::{locate, NetNs};
use discovery::Workload;
use tokio::task::JoinSet;

use crate::agent::Agent;
use crate::pod;

/// First retry after a pass with failures; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Passes happen at least this often, to notice pods whose DEL was lost.
const IDLE_PASS: Duration = Duration::from_secs(10);
/// How long an enrolled pod may be missing from the cluster view before it is released (the
/// view may lag a moment, e.g. during an API relist).
const GONE_GRACE: Duration = Duration::from_secs(10);
/// Running pods enrolled at once (each may wait for its certificate).
const PARALLEL_ENROLLMENTS: usize = 8;

/// Runs until ztunnel shuts down: a pass now, then on every snapshot change, on retry, and
/// periodically. `all_captured` is told, once, the number of pods served after the first pass
/// that captured every running pod (a successor waits for it before it takes over).
pub async fn run(agent: Arc<Agent>, mut all_captured: Option<tokio::sync::oneshot::Sender<usize>>) {
    let mut snapshots = agent.source.subscribe();
    let mut missing = MissingPods::default();
    let mut retry = FIRST_RETRY;
    while !agent.shutdown.is_cancelled() {
        let failures = reconcile(&agent, &mut missing).await;
        if failures == 0 {
            if let Some(tell) = all_captured.take() {
                let _ = tell.send(agent.pods().len());
            }
        }
        let wait = if failures > 0 {
            tracing::info!(
                failures,
                retry_in = ?retry,
                "some running pods could not be captured; retrying"
            );
            let wait = retry;
            retry = (retry * 2).min(MAX_RETRY);
            wait
        } else {
            retry = FIRST_RETRY;
            IDLE_PASS
        };
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            // A process that stops (or handed the node to a successor) captures nothing more.
            () = agent.shutdown.cancelled() => return,
        }
    }
}

/// Since when each enrolled pod (by uid) has been missing from the cluster view.
#[derive(Default)]
pub struct MissingPods(HashMap<String, Instant>);

/// What one pass does with a pod of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Running, ambient, not enrolled: capture it.
    Enroll,
    /// Enrolled but no longer ambient.
    Release(&'static str),
    /// Enrolled, but the cluster no longer has this pod here: wait out the grace, then release.
    Gone,
    Nothing,
}

/// Decides what to do with a pod: `workload` as the cluster sees it (`None`: not there),
/// `enrolled_uid` the uid ztunnel serves under that name.
pub fn decide(workload: Option<&Workload>, enrolled_uid: Option<&str>, node: &str) -> Action {
    match (workload, enrolled_uid) {
        (None, Some(_)) => Action::Gone,
        (None, None) => Action::Nothing,
        (Some(w), Some(uid)) => {
            let uid_unknown = w.uid == format!("{}/{}", w.namespace, w.name);
            if w.node != node || (w.uid != uid && !uid_unknown) {
                // Moved, or another incarnation of a pod with the same name.
                Action::Gone
            } else if !w.ambient {
                Action::Release("the pod is no longer ambient (label removed)")
            } else {
                Action::Nothing
            }
        }
        (Some(w), None) => {
            let running = !w.ips.is_empty() && !w.host_network;
            if w.ambient && running && w.node == node {
                Action::Enroll
            } else {
                Action::Nothing
            }
        }
    }
}

/// One pass over the node's pods; returns how many running pods could not be enrolled.
pub async fn reconcile(agent: &Arc<Agent>, missing: &mut MissingPods) -> usize {
    let snapshot = agent.snapshot();
    let node = agent.config.node.clone();
    let mut to_enroll = Vec::new();
    let enrolled = agent.enrolled();
    for pod in &enrolled {
        let workload = snapshot.workload(&pod.namespace, &pod.name);
        match decide(workload.map(|w| w.as_ref()), Some(&pod.uid), &node) {
            Action::Release(why) => {
                missing.0.remove(&pod.uid);
                release(agent, pod, why).await;
            }
            Action::Gone => {
                let since = *missing
                    .0
                    .entry(pod.uid.clone())
                    .or_insert_with(Instant::now);
                if since.elapsed() >= GONE_GRACE {
                    missing.0.remove(&pod.uid);
                    release(
                        agent,
                        pod,
                        "the pod is gone from the cluster (its CNI DEL never reached ztunnel)",
                    )
                    .await;
                }
            }
            _ => {
                missing.0.remove(&pod.uid);
            }
        }
    }
    missing
        .0
        .retain(|uid, _| enrolled.iter().any(|p| &p.uid == uid));
    let enrolled_names: std::collections::HashSet<(&str, &str)> = enrolled
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    for workload in snapshot.workloads_on_node(&node) {
        if enrolled_names.contains(&(workload.namespace.as_str(), workload.name.as_str())) {
            continue;
        }
        if decide(Some(workload), None, &node) == Action::Enroll {
            to_enroll.push(workload.clone());
        }
    }
    enroll_all(agent, to_enroll).await
}

/// Enrolls running pods, a few at a time; returns how many failed.
async fn enroll_all(agent: &Arc<Agent>, pods: Vec<Arc<Workload>>) -> usize {
    let mut failures = 0;
    let mut tasks = JoinSet::new();
    for workload in pods {
        while tasks.len() >= PARALLEL_ENROLLMENTS {
            if let Some(result) = tasks.join_next().await {
                failures += usize::from(!result.unwrap_or(false));
            }
        }
        let agent = agent.clone();
        tasks.spawn(async move { enroll_running(&agent, &workload).await });
    }
    while let Some(result) = tasks.join_next().await {
        failures += usize::from(!result.unwrap_or(false));
    }
    failures
}

/// Which of the namespaces holding a pod's IP is the pod's.
#[derive(Debug, PartialEq, Eq)]
pub enum NetnsChoice {
    Use(usize),
    NotFound,
    /// Several namespaces hold the IP and nothing says which is the pod's.
    Ambiguous,
    /// The CNI plugin handed over another namespace for this pod than any holding its IP now.
    NotTheRecorded {
        recorded: u64,
    },
}

/// Chooses among the inodes of the namespaces holding the pod's IP. A namespace recorded at
/// CNI ADD must be among them; without a record, exactly one may hold the IP.
pub fn choose_netns(found: &[u64], recorded: Option<u64>) -> NetnsChoice {
    match (recorded, found.len()) {
        (_, 0) => NetnsChoice::NotFound,
        (Some(recorded), _) => found
            .iter()
            .position(|inode| *inode == recorded)
            .map_or(NetnsChoice::NotTheRecorded { recorded }, NetnsChoice::Use),
        (None, 1) => NetnsChoice::Use(0),
        (None, _) => NetnsChoice::Ambiguous,
    }
}

/// Enrolls a pod that is already running: find its namespace, start its proxy, then install
/// the redirect rules (the same order as the CNI plugin, so a failure never leaves rules that
/// point at nothing). `true` when the pod is captured (or needs nothing).
async fn enroll_running(agent: &Arc<Agent>, workload: &Workload) -> bool {
    let name = format!("{}/{}", workload.namespace, workload.name);
    let Some(rules) = agent.rules.clone() else {
        tracing::error!(pod = %name, "cannot capture a running pod: neither nftables nor iptables works on this node");
        return false;
    };
    let _serialised = agent.pod_locks.lock(&workload.uid).await;
    if agent.pods().contains_key(&workload.uid) {
        return true; // the CNI plugin was quicker
    }
    let ips = workload.ips.clone();
    let found = tokio::task::spawn_blocking(move || {
        ips.iter()
            .flat_map(|ip| locate::netns_holding_ip(*ip))
            .collect::<Vec<NetNs>>()
    })
    .await
    .unwrap_or_default();
    let inodes: Vec<u64> = found.iter().map(NetNs::inode).collect();
    let recorded = crate::pod_state::recorded(&agent.state_dir(), &workload.uid);
    let netns = match choose_netns(&inodes, recorded) {
        NetnsChoice::Use(index) => found.into_iter().nth(index),
        NetnsChoice::NotFound => {
            tracing::debug!(pod = %name, ips = ?workload.ips, "no network namespace on this node holds the pod's IP yet");
            None
        }
        NetnsChoice::Ambiguous => {
            tracing::error!(pod = %name, ips = ?workload.ips, namespaces = ?inodes, "several network namespaces hold the pod's IP (a pod with NET_ADMIN claiming another's address?); not capturing it by IP — recreate the pod so the CNI plugin hands its namespace over");
            None
        }
        NetnsChoice::NotTheRecorded { recorded } => {
            tracing::error!(pod = %name, ips = ?workload.ips, namespaces = ?inodes, recorded, "the namespace holding the pod's IP is not the one the CNI plugin enrolled it with; not capturing it — recreate the pod if its sandbox changed");
            None
        }
    };
    let Some(netns) = netns else {
        return false;
    };
    let Ok(for_rules) = netns.try_clone() else {
        return false;
    };
    let pod_ref = capture::enroll::PodRef {
        uid: workload.uid.clone(),
        name: workload.name.clone(),
        namespace: workload.namespace.clone(),
    };
    match pod::enroll_locked(agent, pod_ref, netns).await {
        capture::enroll::Reply::Enrolled { capture_dns } => {
            let options = RuleOptions {
                probe_sources: capture::rules::probes::probe_sources(),
                capture_dns,
            };
            let applied =
                tokio::task::spawn_blocking(move || rules.apply(&for_rules, &options)).await;
            match applied {
                Ok(Ok(())) => {
                    tracing::info!(pod = %name, "running pod captured: it joined the mesh without a restart");
                    true
                }
                Ok(Err(error)) => {
                    tracing::error!(pod = %name, %error, "cannot install the redirect rules; the pod stays out of the mesh");
                    pod::unenroll(
                        agent,
                        &workload.uid,
                        "its redirect rules could not be installed",
                    );
                    false
                }
                Err(error) => {
                    tracing::error!(pod = %name, %error, "rule installation task failed");
                    pod::unenroll(
                        agent,
                        &workload.uid,
                        "its redirect rules could not be installed",
                    );
                    false
                }
            }
        }
        capture::enroll::Reply::Error(error) => {
            tracing::warn!(pod = %name, %error, "cannot enroll the running pod; retrying with back-off");
            false
        }
        _ => true,
    }
}

/// Takes a pod out of the mesh: rules first (its traffic flows directly again), then the proxy.
async fn release(agent: &Arc<Agent>, enrolled: &crate::enrolled::EnrolledPod, why: &str) {
    let _serialised = agent.pod_locks.lock(&enrolled.uid).await;
    if let Some(rules) = &agent.rules {
        if let Err(error) = rules.remove(&enrolled.netns) {
            tracing::warn!(pod = %format_args!("{}/{}", enrolled.namespace, enrolled.name), %error, "cannot remove the redirect rules");
        }
    }
    pod::unenroll(agent, &enrolled.uid, why);
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
