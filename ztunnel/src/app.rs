//! A whole node agent in the calling process: [`build`] does what `ztunnel` does at start
//! (trust bundle, cluster view, certificates, admin endpoints, probes, the reconciler, the
//! enrollment socket) and returns an [`App`] that runs until told to stop, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use capture::enroll::{EnrollListener, EnrollRequest, PendingEnrollListener, Reply};
use certs::api::{CaClient, NodeToken};
use certs::{CertificateManager, ManagerConfig, SharedTrustBundle, TrustBundle};
use discovery::Source;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

use crate::agent::Agent;
use crate::config::Config;
use crate::{admin, pod, probes, reconcile};

/// Why the node agent could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Root(#[from] certs::RootFileError),
    #[error("choose where the cluster view comes from: {0}")]
    SourceChoice(discovery::SourceError),
    #[error("cannot load the cluster view; fix the problems above and restart: {0}")]
    Source(discovery::SourceError),
    #[error("cannot configure the CA client: {0}")]
    CaClient(certs::tls::TlsConfigError),
    #[error(transparent)]
    Listen(#[from] admin::AdminError),
    #[error("cannot listen on the enrollment socket {path}: {source}")]
    EnrollSocket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long a stopping ztunnel waits, after its connections drained, for HBONE connections to
/// close cleanly.
const HBONE_CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A running node agent.
pub struct App {
    agent: Arc<Agent>,
    admin: admin::Addresses,
    /// Serves the enrollment socket; ends when a successor takes it over.
    enrollment: JoinHandle<()>,
    /// Started on shutdown; waits for every connection's record (see `ProxyContext::record`).
    drain: runtime::DrainTrigger,
}

/// Starts a node agent for `config`. Returns once every listener is bound and the enrollment
/// socket accepts pods; pods that were captured before a restart are re-enrolled in the
/// background.
pub async fn build(config: Config) -> Result<App, AppError> {
    // Two descriptors per proxied connection, up to the node-wide caps of `agent::NodeLimits`.
    runtime::fd_limit::raise_to_hard_limit("ztunnel", 2 * 65_536);
    let bundle = TrustBundle::from_root_file(&config.trust_domain, &config.ca_root)?;

    let snapshot_options = discovery::SnapshotOptions {
        root_namespace: config.root_namespace.clone(),
    };
    let source_config = config
        .source
        .config_with(snapshot_options, discovery::KubeSourceConfig::default())
        .map_err(AppError::SourceChoice)?;
    let source = Arc::new(
        Source::start(source_config)
            .await
            .map_err(AppError::Source)?,
    );

    // One handle for every TLS config on the node; the certificate manager updates it from the
    // CA's answers, so a root rotation needs no restart. `bundle` (--ca-root) stays pinned in
    // the CA client only, so a bad answer can never lock the node out of its CA.
    let trust = SharedTrustBundle::new(bundle.clone());
    let ca = CaClient::with_rotating_trust(
        config.ca_address.clone(),
        &bundle,
        &trust,
        NodeToken::File(config.ca_token_file.clone()),
    )
    .map_err(AppError::CaClient)?
    .with_validity(config.cert_ttl);
    let certificates = CertificateManager::with_trust_bundle(
        Arc::new(ca),
        ManagerConfig::default(),
        trust.clone(),
    );
    let rules = match capture::rules::detect_backend() {
        Ok(detected) => {
            tracing::info!(backend = ?detected.backend, reason = %detected.reason, "redirect rules backend chosen");
            Some(detected.backend)
        }
        Err(error) => {
            tracing::error!(%error, "no redirect rules backend works here; running pods cannot be captured without the CNI plugin");
            None
        }
    };
    let mut registry = Registry::default();
    // Watchers come from the agent's source as connections open; the first one is not needed.
    let (drain, _) = runtime::drain::channel();
    let agent = Arc::new(Agent::new(
        config.clone(),
        source,
        trust,
        certificates,
        rules,
        drain.source(),
        &mut registry,
    ));

    let admin = admin::start(&agent, Arc::new(registry))?;
    tokio::spawn(revoke_on_policy_change(agent.clone()));
    // Probes first: running pods keep passing them while the reconcile below re-enrolls.
    tokio::spawn(probes::run(agent.clone()));

    // Pods captured before a restart (or labelled while ztunnel was down) get their listeners
    // back in the background, a few at a time, retried until the CA answers; their redirect
    // rules stayed in place meanwhile, so their connections failed closed, never in clear.
    // New pods are accepted at once: ADD, DEL and the reconciler serialise per pod.
    // Beside a running ztunnel (a surge upgrade), this one captures every running pod first
    // and only then takes the enrollment socket over: the old one stops accepting once it sees
    // that, so no connection finds nobody listening.
    let listener = match claim_enroll_socket(&config)? {
        Claim::Free(listener) => {
            tokio::spawn(reconcile::run(agent.clone(), None));
            listener
        }
        Claim::BesideRunning(pending) => take_over(&agent, pending).await?,
    };
    agent
        .serves_enrollment
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(
        node = %config.node,
        enroll_socket = %config.enroll_socket.display(),
        ca = %config.ca_address,
        "ztunnel ready for pods"
    );
    let enroll_agent = agent.clone();
    let enrollment = tokio::spawn(capture::enroll::serve(listener, move |request| {
        let agent = enroll_agent.clone();
        async move { handle_enrollment(&agent, request).await }
    }));
    Ok(App {
        agent,
        admin,
        enrollment,
        drain,
    })
}

impl App {
    /// Where `/config_dump` is served (useful with port 0).
    pub fn admin_address(&self) -> SocketAddr {
        self.admin.admin
    }

    pub fn metrics_address(&self) -> SocketAddr {
        self.admin.metrics
    }

    pub fn readiness_address(&self) -> SocketAddr {
        self.admin.readiness
    }

    /// Runs until `stop` completes or a successor takes the node over, then stops as
    /// [`App::shutdown`] does. Asked to stop while a successor is taking over (Kubernetes
    /// deletes the old pod as soon as the new one looks ready), it serves until the successor
    /// has taken over, up to `--drain-timeout`, so that the node's pods are never left
    /// without a proxy. Handed over under Kubernetes, it then waits for `stop`: exiting by
    /// itself would have the kubelet restart this old version, which would take the node back.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let enroll_socket = self.agent.config.enroll_socket.clone();
        let mut asked_to_stop = false;
        let handed_over = tokio::select! {
            () = &mut stop => {
                asked_to_stop = true;
                if capture::enroll::successor_pending(&enroll_socket) {
                    tracing::info!(drain = ?self.agent.config.drain_timeout, "asked to stop while a successor is taking over: serving until it has");
                    tokio::time::timeout(self.agent.config.drain_timeout, &mut self.enrollment)
                        .await
                        .is_ok()
                } else {
                    false
                }
            }
            _ = &mut self.enrollment => true,
        };
        if handed_over {
            tracing::info!(
                pods = self.agent.pods().len(),
                "handing the node over to the successor: its listeners take every new connection, this process finishes the established ones"
            );
        }
        let kubernetes = self.agent.config.source.kubernetes();
        self.stop_and_drain().await;
        if handed_over && kubernetes && !asked_to_stop {
            tracing::info!("handed over; waiting for the kubelet to stop this pod");
            stop.await;
        }
    }

    /// Stops accepting pods and connections and lets established connections finish, up to
    /// `--drain-timeout`: a successor (already started, or starting now) serves new ones, and
    /// the enrollment socket file is left for it.
    pub async fn shutdown(self) {
        self.stop_and_drain().await;
    }

    async fn stop_and_drain(self) {
        let drain = self.agent.config.drain_timeout;
        tracing::info!(drain = ?drain, "ztunnel stopping: no new connections, draining existing ones");
        self.enrollment.abort();
        self.agent.shutdown.cancel();
        match self.drain.start_drain_and_wait(drain).await {
            runtime::DrainOutcome::Drained => {
                tracing::info!("ztunnel stopped: every connection finished")
            }
            runtime::DrainOutcome::DeadlineReached { still_held } => tracing::warn!(
                connections = still_held,
                "drain timeout reached; closing the remaining connections"
            ),
        }
        // A finished tunnel's last frames (END_STREAM, then GOAWAY and TLS close_notify) may
        // still sit in its HBONE connection's buffers: let the pods' servers close their
        // connections, and the pools theirs (dropping the pods drops the pools), before the
        // process exits, or the peers see a reset instead of a clean end.
        self.agent.pods().clear();
        self.agent.hbone_tasks.close();
        if tokio::time::timeout(HBONE_CLOSE_GRACE, self.agent.hbone_tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!(
                left = self.agent.hbone_tasks.len(),
                "HBONE connections still open after the drain; closing them"
            );
        }
    }
}

/// How this process found the enrollment socket.
enum Claim {
    /// Nobody served it: this process does now.
    Free(EnrollListener),
    /// Another ztunnel serves it: this one is bound beside it, ready to take over.
    BesideRunning(PendingEnrollListener),
}

fn claim_enroll_socket(config: &Config) -> Result<Claim, AppError> {
    let error = |source| AppError::EnrollSocket {
        path: config.enroll_socket.clone(),
        source,
    };
    if let Some(parent) = config.enroll_socket.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    match EnrollListener::bind(&config.enroll_socket) {
        Ok(listener) => Ok(Claim::Free(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            EnrollListener::bind_successor(&config.enroll_socket)
                .map(Claim::BesideRunning)
                .map_err(error)
        }
        Err(e) => Err(error(e)),
    }
}

/// Captures every running pod beside the running ztunnel (own certificates, own listeners in
/// each pod, SO_REUSEPORT), then renames the pending socket over the enrollment socket.
async fn take_over(
    agent: &Arc<Agent>,
    pending: PendingEnrollListener,
) -> Result<EnrollListener, AppError> {
    let config = &agent.config;
    tracing::info!(
        enroll_socket = %config.enroll_socket.display(),
        timeout = ?config.takeover_timeout,
        "another ztunnel serves this node: taking over once every running pod is captured here too"
    );
    let started = std::time::Instant::now();
    let (all_captured, captured) = tokio::sync::oneshot::channel();
    tokio::spawn(reconcile::run(agent.clone(), Some(all_captured)));
    if tokio::time::timeout(config.takeover_timeout, captured)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?config.takeover_timeout,
            "not every running pod could be captured in time; taking over anyway (the reconciler keeps retrying; until it succeeds, those pods' new connections are refused once the previous ztunnel stops)"
        );
    }
    let listener = pending
        .take_over()
        .map_err(|source| AppError::EnrollSocket {
            path: config.enroll_socket.clone(),
            source,
        })?;
    tracing::info!(
        pods = agent.pods().len(),
        took_ms = started.elapsed().as_millis() as u64,
        "took over from the previous ztunnel: new pods enroll here; it stops accepting and drains"
    );
    Ok(listener)
}

async fn handle_enrollment(agent: &Arc<Agent>, request: EnrollRequest) -> Reply {
    match request {
        EnrollRequest::Add { pod, netns } => pod::enroll(agent, pod, netns).await,
        EnrollRequest::Delete { uid } => {
            pod::unenroll_serialised(agent, &uid, "the CNI plugin deleted the pod").await;
            Reply::Done
        }
        EnrollRequest::SnapshotDone => Reply::Done,
    }
}

/// On every new snapshot: drops the metric series of pods gone from the cluster and closes the
/// live connections the new policies deny.
async fn revoke_on_policy_change(agent: Arc<Agent>) {
    let mut snapshots = agent.source.subscribe();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let pruned = agent
            .proxy
            .metrics
            .prune(|namespace, name| snapshot.workload(namespace, name).is_some());
        if pruned > 0 {
            tracing::debug!(
                pruned,
                "removed metric series of pods gone from the cluster"
            );
        }
        let revoked = agent.proxy.connections.revalidate(&snapshot);
        if revoked > 0 {
            tracing::info!(
                revoked,
                generation = snapshot.generation(),
                "closed connections that the new policies deny"
            );
        }
    }
}
