//! A whole node agent in the calling process: [`build`] does what `ztunnel` does at start
//! (trust bundle, cluster view, certificates, admin endpoints, probes, the reconciler, the
//! enrollment socket) and returns an [`App`] that runs until told to stop, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use capture::enroll::{EnrollListener, EnrollRequest, Reply};
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

/// A running node agent.
pub struct App {
    agent: Arc<Agent>,
    admin: admin::Addresses,
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

    let listener = bind_enroll_socket(&config)?;
    // Pods captured before a restart (or labelled while ztunnel was down) get their listeners
    // back in the background, a few at a time, retried until the CA answers; their redirect
    // rules stayed in place meanwhile, so their connections failed closed, never in clear.
    // New pods are accepted at once: ADD, DEL and the reconciler serialise per pod.
    tokio::spawn(reconcile::run(agent.clone()));
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

    /// Runs until `stop` completes, then stops as [`App::shutdown`] does.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        stop.await;
        self.shutdown().await;
    }

    /// Stops accepting pods and connections and lets established connections finish, up to
    /// `--drain-timeout`: a successor (already started, or starting now) serves new ones, and
    /// the enrollment socket file is left for it.
    pub async fn shutdown(self) {
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
    }
}

fn bind_enroll_socket(config: &Config) -> Result<EnrollListener, AppError> {
    let error = |source| AppError::EnrollSocket {
        path: config.enroll_socket.clone(),
        source,
    };
    if let Some(parent) = config.enroll_socket.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    EnrollListener::bind(&config.enroll_socket).map_err(error)
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
