//! `ztunnel`: the Ambit node agent.

mod access_log;
mod agent;
mod config;
mod connections;
mod dns;
mod dump;
mod inbound;
mod keyed_lock;
mod metrics;
mod outbound;
mod plan;
mod pod;
mod pod_state;
mod ports;
mod probes;
mod reconcile;
mod response;
mod revocable;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use capture::enroll::{EnrollListener, EnrollRequest, Reply};
use certs::api::{CaClient, NodeToken};
use certs::{CertificateManager, ManagerConfig, SharedTrustBundle, TrustBundle};
use clap::Parser;
use discovery::Source;
use http::StatusCode;

use crate::agent::Agent;
use crate::config::Config;
use runtime::http_server::{self, HttpServerConfig, Reply as HttpReply};

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    runtime::logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Two descriptors per proxied connection, up to the node-wide caps of `agent::NodeLimits`.
    runtime::fd_limit::raise_to_hard_limit("ztunnel", 2 * 65_536);
    let root_pem = std::fs::read(&config.ca_root).with_context(|| {
        format!(
            "cannot read the mesh root from --ca-root {}",
            config.ca_root.display()
        )
    })?;
    let bundle = TrustBundle::from_pem(
        &config.trust_domain,
        &root_pem,
        &config.ca_root.display().to_string(),
    )
    .context("the --ca-root file is not a usable trust bundle")?;

    let snapshot_options = discovery::SnapshotOptions {
        root_namespace: config.root_namespace.clone(),
    };
    let source_config = config
        .source
        .config_with(snapshot_options, discovery::KubeSourceConfig::default())
        .context("choose where the cluster view comes from")?;
    let source = Arc::new(
        Source::start(source_config)
            .await
            .context("cannot load the cluster view; fix the problems above and restart")?,
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
    .context("cannot configure the CA client")?
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
    let agent = Arc::new(Agent::new(
        config.clone(),
        source,
        trust,
        certificates,
        rules,
    ));

    start_http(&agent)?;
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

    shutdown_signal().await;
    tracing::info!(drain = ?config.drain_timeout, "ztunnel stopping: no new connections, draining existing ones");
    enrollment.abort();
    agent.shutdown.cancel();
    // Established connections finish on this process while a successor (already started, or
    // starting now) serves new ones; the enroll socket file is left for that successor.
    let deadline = tokio::time::Instant::now() + config.drain_timeout;
    while agent.metrics.active_connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = agent.metrics.active_connections.get();
    if left > 0 {
        tracing::warn!(
            connections = left,
            "drain timeout reached; closing the remaining connections"
        );
    }
    Ok(())
}

fn bind_enroll_socket(config: &Config) -> anyhow::Result<EnrollListener> {
    if let Some(parent) = config.enroll_socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    EnrollListener::bind(&config.enroll_socket).with_context(|| {
        format!(
            "cannot listen on the enrollment socket {}",
            config.enroll_socket.display()
        )
    })
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

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM; only Ctrl-C stops ztunnel");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn revoke_on_policy_change(agent: Arc<Agent>) {
    let mut snapshots = agent.source.subscribe();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let pruned = agent
            .metrics
            .prune(|namespace, name| snapshot.workload(namespace, name).is_some());
        if pruned > 0 {
            tracing::debug!(
                pruned,
                "removed metric series of pods gone from the cluster"
            );
        }
        let revoked = agent.connections.revalidate(&snapshot);
        if revoked > 0 {
            tracing::info!(
                revoked,
                generation = snapshot.generation(),
                "closed connections that the new policies deny"
            );
        }
    }
}

/// Sets the certificate-expiry gauges from the manager's current state; called on every
/// scrape so the figures are never stale.
fn refresh_certificate_expiry(agent: &Agent) {
    agent.metrics.certificate_expiry_seconds.clear();
    for status in agent.certificates.status() {
        if let Some(not_after) = status.not_after {
            let left = not_after
                .duration_since(SystemTime::now())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            agent
                .metrics
                .certificate_expiry_seconds
                .get_or_create(&metrics::IdentityLabels {
                    identity: status.identity.to_string(),
                })
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
}

fn scrape(agent: &Agent) -> HttpReply {
    refresh_certificate_expiry(agent);
    HttpReply::text(StatusCode::OK, agent.metrics.encode())
}

fn start_http(agent: &Arc<Agent>) -> anyhow::Result<()> {
    let bind = |address| {
        http_server::bind_shared(address).with_context(|| format!("cannot listen on {address}"))
    };
    let bounds = HttpServerConfig::default();
    let admin = bind(agent.config.admin_address)?;
    let metrics = bind(agent.config.metrics_address)?;
    let readiness = bind(agent.config.readiness_address)?;

    let a = agent.clone();
    tokio::spawn(http_server::serve(
        "admin",
        admin,
        Arc::new(move |path: &str| match path {
            "/config_dump" => HttpReply::json(dump::config_dump(&a).to_string()),
            "/metrics" | "/stats/prometheus" => scrape(&a),
            _ => HttpReply::text(
                StatusCode::NOT_FOUND,
                "try /config_dump or /stats/prometheus\n",
            ),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    let a = agent.clone();
    tokio::spawn(http_server::serve(
        "metrics",
        metrics,
        Arc::new(move |path: &str| match path {
            "/metrics" | "/stats/prometheus" => scrape(&a),
            _ => HttpReply::text(StatusCode::NOT_FOUND, "metrics are at /stats/prometheus\n"),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    let a = agent.clone();
    tokio::spawn(http_server::serve(
        "readiness",
        readiness,
        Arc::new(move |path: &str| match (path, a.ready()) {
            ("/healthz/ready", Ok(())) => HttpReply::text(StatusCode::OK, "ready\n"),
            ("/healthz/ready", Err(why)) => HttpReply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
            _ => HttpReply::text(StatusCode::NOT_FOUND, "readiness is at /healthz/ready\n"),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    Ok(())
}
