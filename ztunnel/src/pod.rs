//! Enrollment: a pod handed over by the CNI plugin gets its certificate and its three listeners
//! *inside its own network namespace* — 15001 (outbound capture), 15006 (inbound plaintext
//! capture) and 15008 (HBONE) — so its traffic keeps the pod's IP on the wire.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use capture::enroll::{PodRef, Reply};
use capture::socket::{listen_in, ListenOptions};
use capture::NetNs;
use certs::{CurrentCertificate, SpiffeId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::enrolled::{EnrolledPod, InPodSockets, SocketFactory};
use crate::ports;
use crate::proxy::ProxyContext;

/// How long an ADD waits for the pod to show up in the cluster view (the manifests or the API
/// server may lag the kubelet by a moment).
const POD_APPEAR_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pod could not be enrolled: the CNI plugin fails the ADD with this text, and the
/// kubelet retries.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("pod {pod} is not in ztunnel's view of the cluster (uid {uid}); check that its manifest is in --manifests and has spec.nodeName={node}")]
    NotInView {
        pod: String,
        uid: String,
        node: String,
    },
    #[error("pod {pod} has no valid identity in trust domain {trust_domain}")]
    NoIdentity { pod: String, trust_domain: String },
    #[error("pod {pod}: {source}")]
    Certificate {
        pod: String,
        source: certs::manager::ManagerError,
    },
    #[error("cannot start the proxy inside pod {pod}: {problem}")]
    Start { pod: String, problem: StartError },
}

/// What failed while the pod's listeners were set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on port {port} in the pod's network namespace: {source}")]
    Listen {
        port: u16,
        source: capture::socket::SocketError,
    },
    #[error("cannot register the listener on port {port} with the runtime: {source}")]
    Register { port: u16, source: std::io::Error },
    #[error("cannot build the pod's TLS configuration: {0}")]
    Tls(#[from] certs::tls::TlsConfigError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// Whether `workload` (from the cluster view) is the pod the CNI plugin named. A manifest
/// without metadata.uid gets `<ns>/<name>` from discovery, and a CNI call may carry no uid;
/// otherwise the uids must match, or this is an older incarnation of a pod with the same name.
fn is_same_pod(workload: &discovery::Workload, pod: &PodRef) -> bool {
    let uid_unknown = workload.uid == format!("{}/{}", pod.namespace, pod.name);
    workload.uid == pod.uid || pod.uid.is_empty() || uid_unknown
}

/// Handles an ADD from the CNI plugin. Replies `Enrolled` only when the pod is fully captured
/// and served; on any failure it replies with an error so that the plugin fails the ADD and the
/// kubelet retries (fail closed: a pod never runs ambient without its listeners).
pub async fn enroll(agent: &Arc<Agent>, pod: PodRef, netns: NetNs) -> Reply {
    let _serialised = agent.pod_locks.lock(&pod.uid).await;
    enroll_locked(agent, pod, netns).await
}

/// [`enroll`] for a caller that holds the pod's lock already.
pub(crate) async fn enroll_locked(agent: &Arc<Agent>, pod: PodRef, netns: NetNs) -> Reply {
    match try_enroll(agent, &pod, netns).await {
        Ok(reply) => reply,
        Err(error) => Reply::Error(error.to_string()),
    }
}

async fn try_enroll(agent: &Arc<Agent>, pod: &PodRef, netns: NetNs) -> Result<Reply, EnrollError> {
    let name = format!("{}/{}", pod.namespace, pod.name);
    if let Some(existing) = agent.pods().get(&pod.uid).cloned() {
        if existing.netns.inode() == netns.inode() {
            // The kubelet retried an ADD we already completed.
            return Ok(enrolled_reply(agent));
        }
        unenroll(
            agent,
            &pod.uid,
            "the pod was enrolled again with a new network namespace",
        );
    }
    // Where an ADD's time goes (logged with the enrollment): waiting for the pod to reach the
    // cluster view, its certificate, then listeners and TLS set-up.
    let started = std::time::Instant::now();
    let Some(workload) = wait_for_workload(agent, pod).await else {
        return Err(EnrollError::NotInView {
            pod: name,
            uid: pod.uid.clone(),
            node: agent.config.node.clone(),
        });
    };
    if !workload.ambient {
        tracing::info!(pod = %name, "pod is not ambient; not enrolled");
        return Ok(Reply::NotAmbient);
    }
    let Some(identity) = agent.identity_of(&workload) else {
        return Err(EnrollError::NoIdentity {
            pod: name,
            trust_domain: agent.config.trust_domain.clone(),
        });
    };
    let found = std::time::Instant::now();
    agent.certificates.track(&identity);
    let certificate = match agent.certificates.certificate(&identity).await {
        Ok(certificate) => certificate,
        Err(source) => {
            agent.certificates.untrack(&identity);
            return Err(EnrollError::Certificate { pod: name, source });
        }
    };
    let certified = std::time::Instant::now();
    match start(agent, pod, identity.clone(), certificate, netns) {
        Ok(enrolled) => {
            let millis = |from: std::time::Instant, to: std::time::Instant| {
                to.duration_since(from).as_secs_f64() * 1e3
            };
            tracing::info!(
                pod = %name,
                uid = %pod.uid,
                identity = %identity,
                netns = enrolled.netns.inode(),
                view_wait_ms = millis(started, found),
                certificate_ms = millis(found, certified),
                listeners_ms = millis(certified, std::time::Instant::now()),
                "pod enrolled: listening on 15001, 15006 and 15008 in its network namespace"
            );
            crate::pod_state::record(&agent.state_dir(), &pod.uid, enrolled.netns.inode());
            agent.pods().insert(pod.uid.clone(), enrolled);
            agent.metrics.enrolled_pods.set(agent.pods().len() as i64);
            Ok(enrolled_reply(agent))
        }
        Err(problem) => {
            agent.certificates.untrack(&identity);
            Err(EnrollError::Start { pod: name, problem })
        }
    }
}

/// What the CNI plugin is told after a successful enrollment: whether to capture DNS too.
pub fn enrolled_reply(agent: &Agent) -> Reply {
    Reply::Enrolled {
        capture_dns: agent.capture_dns(),
    }
}

async fn wait_for_workload(agent: &Agent, pod: &PodRef) -> Option<Arc<discovery::Workload>> {
    let deadline = tokio::time::Instant::now() + POD_APPEAR_TIMEOUT;
    let mut snapshots = agent.source.subscribe();
    let mut refreshed = false;
    loop {
        if let Some(workload) = agent.snapshot().workload(&pod.namespace, &pod.name) {
            if is_same_pod(workload, pod) {
                return Some(workload.clone());
            }
        }
        if !refreshed {
            // The pod is starting now, so the view may only lag behind it: look once at once
            // instead of waiting for the next poll.
            refreshed = true;
            agent.source.refresh().await;
            continue;
        }
        if tokio::time::timeout_at(deadline, snapshots.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}

fn listen(netns: &NetNs, port: u16) -> Result<TcpListener, StartError> {
    let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = listen_in(netns, &ListenOptions::new(address).reuse_port(true))
        .map_err(|source| StartError::Listen { port, source })?;
    TcpListener::from_std(listener).map_err(|source| StartError::Register { port, source })
}

fn start(
    agent: &Arc<Agent>,
    pod: &PodRef,
    identity: SpiffeId,
    certificate: CurrentCertificate,
    netns: NetNs,
) -> Result<Arc<EnrolledPod>, StartError> {
    let netns = Arc::new(netns);
    if let Err(error) = capture::socket::migrate_queued_connections_on_close(&netns) {
        // Not fatal: only a hand-over to a successor ztunnel may then reset queued connections.
        tracing::warn!(pod = %format_args!("{}/{}", pod.namespace, pod.name), %error, "connections queued at this pod's listeners will be reset, not handed over, when ztunnel is replaced");
    }
    let outbound = listen(&netns, ports::OUTBOUND)?;
    let inbound_plaintext = listen(&netns, ports::INBOUND_PLAINTEXT)?;
    let inbound_hbone = listen(&netns, ports::HBONE)?;
    let tls = certs::tls::server_config(certificate.clone(), &agent.bundle)?;

    let sockets: Arc<dyn SocketFactory> = Arc::new(InPodSockets(netns.clone()));
    let pool_sockets = sockets.clone();
    let dialer = move |key: &hbone::PoolKey| pool_sockets.connect(key.address);
    let pool = hbone::Pool::new(
        hbone::ClientConfig {
            tasks: agent.hbone_tasks.clone(),
            ..hbone::ClientConfig::default()
        },
        agent.bundle.clone(),
        Arc::new(dialer),
    );
    let enrolled = Arc::new(EnrolledPod {
        uid: pod.uid.clone(),
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        identity,
        netns,
        sockets,
        certificate,
        pool,
        stop: agent.shutdown.child_token(),
        connections: CancellationToken::new(),
    });
    if agent.capture_dns() {
        // Before anything is spawned: a failure here leaves nothing running.
        crate::dns::start(&agent.dns, &enrolled)?;
    }

    let server = hbone::Server::forwarding(
        hbone::ServerConfig {
            drain_timeout: agent.config.drain_timeout,
            limiter: agent.limits.hbone.clone(),
            ..hbone::ServerConfig::default()
        },
        tls,
        crate::inbound::HboneInbound {
            context: agent.proxy.clone(),
            pod: enrolled.clone(),
        },
    );
    let stop = enrolled.stop.clone();
    agent
        .hbone_tasks
        .spawn(async move { server.serve(inbound_hbone, stop).await });
    tokio::spawn(accept_loop(
        "outbound",
        agent.proxy.clone(),
        enrolled.clone(),
        outbound,
        agent.limits.outbound.clone(),
        crate::outbound::handle,
    ));
    tokio::spawn(accept_loop(
        "inbound-plaintext",
        agent.proxy.clone(),
        enrolled.clone(),
        inbound_plaintext,
        agent.limits.inbound_plaintext.clone(),
        crate::inbound::handle_plaintext,
    ));
    Ok(enrolled)
}

/// Runs `handle` for every connection accepted on one of the pod's capture listeners, within
/// the node-wide `limiter`.
async fn accept_loop<F, Fut>(
    name: &'static str,
    context: Arc<ProxyContext>,
    pod: Arc<EnrolledPod>,
    listener: TcpListener,
    limiter: runtime::ConnectionLimiter,
    handle: F,
) where
    F: Fn(Arc<ProxyContext>, Arc<EnrolledPod>, TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stop = pod.stop.clone();
    runtime::accept_loop(name, listener, limiter, stop, move |accepted| {
        let connection = handle(context.clone(), pod.clone(), accepted.stream, accepted.peer);
        runtime::holding(connection, accepted.permit)
    })
    .await
}

/// [`unenroll`] once the pod's lock is held: a DEL racing an ADD of the same pod waits for it.
pub async fn unenroll_serialised(agent: &Agent, uid: &str, why: &str) -> bool {
    let _serialised = agent.pod_locks.lock(uid).await;
    unenroll(agent, uid, why)
}

/// Stops proxying for a pod: its listeners close, its connections end, its certificate is
/// released when no other pod on the node shares the identity. The caller holds the pod's lock
/// (or is the enrollment itself).
pub fn unenroll(agent: &Agent, uid: &str, why: &str) -> bool {
    crate::pod_state::forget(&agent.state_dir(), uid);
    let removed = agent.pods().remove(uid);
    match removed {
        Some(pod) => {
            pod.stop.cancel();
            pod.connections.cancel();
            agent.certificates.untrack(&pod.identity);
            agent.metrics.enrolled_pods.set(agent.pods().len() as i64);
            tracing::info!(pod = %format_args!("{}/{}", pod.namespace, pod.name), uid, reason = why, "pod unenrolled");
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(uid: &str) -> discovery::Workload {
        discovery::Workload {
            uid: uid.into(),
            name: "cart-0".into(),
            namespace: "shop".into(),
            node: "node-a".into(),
            service_account: "cart".into(),
            ips: vec![],
            labels: Default::default(),
            host_network: false,
            ready: true,
            named_ports: vec![],
            probe_ports: vec![],
            use_waypoint: None,
            ambient: true,
        }
    }

    fn cni(uid: &str) -> PodRef {
        PodRef {
            uid: uid.into(),
            name: "cart-0".into(),
            namespace: "shop".into(),
        }
    }

    #[test]
    fn the_cni_call_and_the_cluster_view_must_name_the_same_incarnation() {
        let cases = [
            ("uids match", workload("u-1"), cni("u-1"), true),
            (
                "an older pod of the same name",
                workload("u-1"),
                cni("u-2"),
                false,
            ),
            (
                "the CNI call carries no uid",
                workload("u-1"),
                cni(""),
                true,
            ),
            (
                "a manifest without metadata.uid",
                workload("shop/cart-0"),
                cni("u-2"),
                true,
            ),
        ];
        for (case, workload, pod, expected) in cases {
            assert_eq!(is_same_pod(&workload, &pod), expected, "{case}");
        }
    }

    #[test]
    fn enrollment_errors_tell_the_operator_what_to_check() {
        let error = EnrollError::NotInView {
            pod: "shop/cart-0".into(),
            uid: "u-1".into(),
            node: "node-a".into(),
        };
        assert_eq!(
            error.to_string(),
            "pod shop/cart-0 is not in ztunnel's view of the cluster (uid u-1); check that its manifest is in --manifests and has spec.nodeName=node-a"
        );
        let error = EnrollError::Start {
            pod: "shop/cart-0".into(),
            problem: StartError::Register {
                port: 15001,
                source: std::io::Error::other("no reactor"),
            },
        };
        assert_eq!(
            error.to_string(),
            "cannot start the proxy inside pod shop/cart-0: cannot register the listener on port 15001 with the runtime: no reactor"
        );
    }
}
