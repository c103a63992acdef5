//! What ADD, DEL, CHECK and STATUS do (DESIGN §3 "In-pod capture").
//!
//! Who decides that a pod is ambient: ztunnel, not the plugin. The plugin
//! only knows the pod's namespace/name/uid (CNI_ARGS), while ztunnel holds
//! the cluster view (labels of the pod and its namespace). So ADD sends
//! `AddPod` for *every* Kubernetes pod and ztunnel answers ENROLLED (it runs
//! the pod's listeners) or NOT_AMBIENT (leave the pod alone).
//!
//! Order on ADD: enroll first, then install the rules. Either order fails
//! closed, because the pod's containers start only after ADD succeeded, so
//! no traffic can flow between the two steps; what decides is the failure
//! handling. Enrolling first means (a) a non-ambient pod is never touched —
//! not even briefly — and (b) ztunnel's answer says how to capture (DNS or
//! not). If the rules then fail, the plugin withdraws the enrollment and
//! fails the ADD; if that withdrawal is lost too, the runtime's DEL after the
//! failed ADD repeats it. If ztunnel is unreachable or refuses, ADD fails
//! (code 11 / 100) and kubelet retries: an ambient pod never runs uncaptured.
//! The price: while ztunnel is down, no pod on the node can start, because
//! nobody can say whether it is ambient.
//!
//! DEL never fails on account of ztunnel or the rules (a DEL that fails
//! forever blocks pod deletion): it tells ztunnel if it can, removes the
//! rules if the netns still exists, logs what it could not do, and succeeds.

use std::path::Path;

use capture::enroll::{AddOutcome, EnrollClient, EnrollError, PodRef};
use capture::rules::{self, Backend, CheckError, Iptables, Nftables, RuleOptions, RulesBackend};
use capture::NetNs;

use crate::cni::{self, code, CniError, NetConf, PodCall, Request};

/// Runs one request; `Ok(Some(json))` is printed on stdout.
pub fn run(request: Request) -> Result<Option<String>, CniError> {
    match request {
        Request::Version => Ok(Some(cni::version_json())),
        Request::Add(call) => add(&call).map(Some),
        Request::Del(call) => {
            del(&call);
            Ok(None)
        }
        Request::Check(call) => check(&call).map(|()| None),
        Request::Status(config) => status(&config).map(|()| None),
        // Nothing to collect: the rules live and die with the pod's netns,
        // and ztunnel forgets pods on DEL or when their netns goes away.
        Request::Gc(_) => Ok(None),
    }
}

fn add(call: &PodCall) -> Result<String, CniError> {
    let result = cni::pass_through(&call.config);
    let Some(pod) = &call.pod else {
        tracing::info!(container = %call.container_id, "not a Kubernetes pod (no K8S_POD_* in CNI_ARGS); passing through");
        return Ok(result);
    };
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    let netns = open_netns(call)?;
    let client = connect(&call.config, &pod_name)?;
    let pod_ref = PodRef {
        uid: pod.uid.clone(),
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
    };
    match client
        .add_pod(&pod_ref, &netns)
        .map_err(|e| enroll_error(e, &pod_name))?
    {
        AddOutcome::NotAmbient => {
            tracing::info!(pod = %pod_name, "pod is not ambient; passing through");
        }
        AddOutcome::Enrolled { capture_dns } => {
            let opts = RuleOptions {
                probe_sources: cni::probe_sources(&call.config),
                capture_dns,
            };
            let applied = backend(&call.config).and_then(|b| b.apply(&netns, &opts));
            if let Err(error) = applied {
                if let Err(undo) = client.delete_pod(&pod.uid) {
                    tracing::warn!(pod = %pod_name, error = %undo, "cannot withdraw the enrollment; the runtime's DEL will retry");
                }
                return Err(CniError::new(
                    code::RULES_FAILED,
                    format!("cannot install the capture rules for pod {pod_name}: {error}"),
                    "the pod was not started; check that nftables (nft list ruleset) or \
                     iptables (iptables-save -t nat) works on the node",
                ));
            }
            // ztunnel sets this too, but its container may see /proc/sys read-only; the plugin
            // runs on the node as root. Without it only a ztunnel hand-over resets connections
            // queued at that moment, so it is no reason to fail the pod.
            if let Err(error) = capture::socket::migrate_queued_connections_on_close(&netns) {
                tracing::warn!(pod = %pod_name, %error, "queued connections of this pod will be reset, not handed over, when ztunnel is replaced");
            }
            tracing::info!(pod = %pod_name, netns = %netns.id(), ?opts, "pod enrolled and captured");
        }
    }
    Ok(result)
}

fn del(call: &PodCall) {
    let Some(pod) = &call.pod else {
        return;
    };
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    match EnrollClient::connect(&call.config.enroll_socket, call.config.enroll_timeout)
        .and_then(|client| client.delete_pod(&pod.uid))
    {
        Ok(()) => tracing::info!(pod = %pod_name, "pod removed from ztunnel"),
        Err(error) => {
            tracing::warn!(pod = %pod_name, %error, "ztunnel did not confirm the removal; it drops the pod when its netns goes away")
        }
    }
    let Some(path) = &call.netns else {
        return;
    };
    match NetNs::open(path) {
        Ok(netns) => match backend(&call.config).and_then(|b| b.remove(&netns)) {
            Ok(()) => tracing::debug!(pod = %pod_name, "capture rules removed"),
            Err(error) => {
                tracing::warn!(pod = %pod_name, %error, "cannot remove the capture rules; they go away with the netns")
            }
        },
        Err(error) => {
            tracing::debug!(pod = %pod_name, %error, "netns already gone; no rules to remove")
        }
    }
}

/// A captured pod (Ambit's table present) must have complete rules and a
/// reachable ztunnel. A pod without the table was not ambient at ADD; CHECK
/// does not ask ztunnel again, since CHECK must not change anything.
fn check(call: &PodCall) -> Result<(), CniError> {
    let Some(pod) = &call.pod else {
        return Ok(());
    };
    let netns = open_netns(call)?;
    let checked = backend(&call.config)
        .map_err(CheckError::from)
        .and_then(|b| b.check(&netns));
    match checked {
        Ok(()) => {}
        Err(CheckError::Missing(missing)) if missing.table_missing => return Ok(()),
        Err(CheckError::Missing(missing)) => {
            return Err(CniError::new(
                code::RULES_MISSING,
                format!("pod {}/{}: {missing}", pod.namespace, pod.name),
                "",
            ))
        }
        Err(CheckError::Rules(error)) => {
            return Err(CniError::new(code::RULES_FAILED, error.to_string(), ""));
        }
    }
    connect(&call.config, &format!("{}/{}", pod.namespace, pod.name)).map(drop)
}

/// CNI 1.1 STATUS: ready when ztunnel accepts enrollments.
fn status(config: &NetConf) -> Result<(), CniError> {
    EnrollClient::connect(&config.enroll_socket, config.enroll_timeout)
        .map(drop)
        .map_err(|e| {
            CniError::new(
                code::NOT_AVAILABLE,
                e.to_string(),
                "pods cannot start on this node until ztunnel runs",
            )
        })
}

/// The rules backend the config asks for (`rulesBackend`, default auto),
/// with the choice and its reason logged at info: on a node without
/// nftables this line is how an operator learns that iptables is in use.
fn backend(config: &NetConf) -> Result<Backend, rules::RulesError> {
    let nft = match &config.nft_path {
        Some(path) => Nftables::new(path),
        None => Nftables::default(),
    };
    let detected = rules::choose_backend(config.rules_backend, nft, Iptables::default())?;
    tracing::info!(
        backend = detected.backend.name(),
        reason = %detected.reason,
        "capture rules backend"
    );
    Ok(detected.backend)
}

fn open_netns(call: &PodCall) -> Result<NetNs, CniError> {
    let Some(path) = call.netns.as_deref() else {
        return Err(CniError::new(code::INVALID_ENV, "CNI_NETNS is not set", ""));
    };
    NetNs::open(path).map_err(|error| {
        let gone = !Path::new(path).exists();
        CniError::new(
            if gone {
                code::UNKNOWN_CONTAINER
            } else {
                code::IO_FAILURE
            },
            format!("cannot open the pod's network namespace: {error}"),
            "",
        )
    })
}

fn connect(config: &NetConf, pod: &str) -> Result<EnrollClient, CniError> {
    EnrollClient::connect(&config.enroll_socket, config.enroll_timeout)
        .map_err(|e| enroll_error(e, pod))
}

fn enroll_error(error: EnrollError, pod: &str) -> CniError {
    if error.is_unreachable() {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("ztunnel is not ready to enroll pod {pod}: {error}"),
            "kubelet retries; the pod starts once ztunnel runs on this node",
        )
    } else {
        CniError::new(
            code::ENROLL_REFUSED,
            format!("ztunnel did not enroll pod {pod}: {error}"),
            "see ztunnel's log on this node",
        )
    }
}
