//! A whole waypoint in the calling process: [`build`] loads the trust bundle and the cluster
//! view, obtains the waypoint's certificate, compiles the first route table, binds the HBONE
//! listener and the admin endpoints, and returns an [`App`] that serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use certs::api::{CaClient, NodeToken};
use certs::{CertificateManager, ManagerConfig, SharedTrustBundle, TrustBundle};
use discovery::Source;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::balance::Balancer;
use crate::config::Config;
use crate::metrics::RequestMetrics;
use crate::proxy::{Proxy, ProxySettings};
use crate::server::WaypointService;
use crate::state::{Compiled, SharedState};
use crate::traces::{self, Tracer};
use crate::upstream::Upstreams;
use crate::{admin, state};

/// Why the waypoint could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Root(#[from] certs::RootFileError),
    #[error("the waypoint's identity is not a valid SPIFFE ID: {0}; check --gateway, --service-account and --trust-domain")]
    Identity(certs::IdentityError),
    #[error("choose where the cluster view comes from: {0}")]
    SourceChoice(discovery::SourceError),
    #[error("cannot load the cluster view; fix the problems above and restart: {0}")]
    Source(discovery::SourceError),
    #[error("cannot configure the CA client: {0}")]
    CaClient(certs::tls::TlsConfigError),
    #[error("no certificate for {identity} yet: {source}; check --ca-address, --ca-token-file and that the CA's tokens file names this waypoint")]
    Certificate {
        identity: String,
        source: certs::manager::ManagerError,
    },
    #[error("cannot build the HBONE server's TLS configuration: {0}")]
    Tls(certs::tls::TlsConfigError),
    #[error("cannot listen for HBONE on {address}: {source}; is another process bound to it?")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    OtlpEndpoint(#[from] traces::EndpointError),
    #[error("--trace-sampling: {0}")]
    Sampling(String),
    #[error("cannot start the worker threads: {0}; lower --worker-threads or raise the process's thread limit")]
    Workers(std::io::Error),
}

/// A running waypoint.
pub struct App {
    /// Renews the waypoint's certificate for as long as the app runs.
    _certificates: CertificateManager,
    proxy: Arc<Proxy>,
    hbone_address: SocketAddr,
    admin: admin::Endpoints,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    /// Serve the HBONE connections; stopped once the server has drained.
    workers: Arc<runtime::Workers>,
    /// Sends the last spans once requests have drained.
    span_export: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

pub async fn build(config: Config) -> Result<App, AppError> {
    let identity = config.identity().map_err(AppError::Identity)?;
    // Settings are checked before anything starts.
    let sampler =
        traces::context::Sampler::percent(config.trace_sampling).map_err(AppError::Sampling)?;
    let otlp_endpoint = config
        .otlp_endpoint
        .as_deref()
        .map(traces::traces_url)
        .transpose()?;
    let bundle = TrustBundle::from_root_file(&config.trust_domain, &config.ca_root)?;
    // In Kubernetes mode the waypoint watches the Gateway API kinds too (the default set is
    // ztunnel's); the `ambit-waypoint` ClusterRole lets it read them.
    let kube = discovery::KubeSourceConfig {
        kinds: discovery::Kind::MESH
            .iter()
            .chain(discovery::Kind::GATEWAY_API.iter())
            .copied()
            .collect(),
        ..discovery::KubeSourceConfig::default()
    };
    let source_config = config
        .source
        .config_with(discovery::SnapshotOptions::default(), kube)
        .map_err(AppError::SourceChoice)?;
    let source = Arc::new(
        Source::start(source_config)
            .await
            .map_err(AppError::Source)?,
    );

    // As on a node: one trust handle, updated from the CA's answers (root rotation without a
    // restart); --ca-root stays pinned in the CA client.
    let trust = SharedTrustBundle::new(bundle.clone());
    let ca = CaClient::with_rotating_trust(
        config.ca_address.clone(),
        &bundle,
        &trust,
        NodeToken::File(config.ca_token_file.clone()),
    )
    .map_err(AppError::CaClient)?;
    let certificates = CertificateManager::with_trust_bundle(
        Arc::new(ca),
        ManagerConfig::default(),
        trust.clone(),
    );
    certificates.track(&identity);
    let certificate = certificates
        .certificate(&identity)
        .await
        .map_err(|source| AppError::Certificate {
            identity: identity.to_string(),
            source,
        })?;

    let state = SharedState::new(Compiled::compile(source.current()));
    tokio::spawn(state::follow(source.clone(), state.clone()));

    let workers = Arc::new(
        match config.worker_threads {
            Some(count) => runtime::Workers::start("waypoint-worker", count),
            None => runtime::Workers::per_core("waypoint-worker"),
        }
        .map_err(AppError::Workers)?,
    );
    let new_pool = || {
        hbone::Pool::new(
            hbone::ClientConfig::default(),
            trust.clone(),
            Arc::new(hbone::TcpDialer),
        )
    };
    let mut registry = Registry::default();
    let (tracer, span_export) = match otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            tracing::info!(%endpoint, sampling_percent = config.trace_sampling, "exporting request spans over OTLP/HTTP");
            let stop = CancellationToken::new();
            let emitter = traces::Emitter {
                service_name: format!("{}.{}", config.gateway.name, config.gateway.namespace),
                namespace: config.gateway.namespace.clone(),
                instance: config.pod_name.clone(),
            };
            let (exporter, task) = traces::SpanExporter::start(
                traces::ExportConfig::new(endpoint.clone()),
                emitter,
                &mut registry,
                stop.clone(),
            );
            let tracer = Tracer {
                sampler,
                exporter,
                endpoint,
            };
            (Some(tracer), Some((stop, task)))
        }
    };
    let proxy = Arc::new(Proxy {
        gateway: config.gateway.clone(),
        identity: identity.clone(),
        state,
        upstreams: Upstreams::new(
            workers.count(),
            new_pool,
            identity.clone(),
            certificate.clone(),
        ),
        balancer: Balancer::default(),
        metrics: RequestMetrics::register(&mut registry),
        settings: ProxySettings {
            trust_domain: config.trust_domain.clone(),
            default_request_timeout: config.default_request_timeout,
            retry_body_limit: config.retry_body_limit,
        },
        tracer,
    });

    tokio::spawn(forget_departed(source.clone(), proxy.clone()));

    let tls = certs::tls::server_config(certificate, trust).map_err(AppError::Tls)?;
    let server_config = hbone::ServerConfig {
        // The authority is a Service VIP (or a pod), never the waypoint's own address.
        check_authority_ip: false,
        drain_timeout: config.drain_timeout,
        ..hbone::ServerConfig::default()
    };
    let address = SocketAddr::new(config.listen_address, config.hbone_port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Listen { address, source })?;
    let hbone_address = listener.local_addr().unwrap_or(address);
    let shutdown = CancellationToken::new();
    let server = hbone::Server::new(
        server_config,
        tls,
        WaypointService {
            proxy: proxy.clone(),
        },
    );
    let token = shutdown.clone();
    let serving_workers = workers.clone();
    let server =
        tokio::spawn(async move { server.serve_on(listener, token, &serving_workers).await });
    let admin = admin::start(
        &proxy,
        Arc::new(registry),
        (
            config.admin_address,
            config.metrics_address,
            config.readiness_address,
        ),
        shutdown.clone(),
    )?;
    tracing::info!(
        gateway = %config.gateway,
        identity = %identity,
        hbone = %hbone_address,
        workers = workers.count(),
        admin = %admin.admin,
        "waypoint ready"
    );
    Ok(App {
        _certificates: certificates,
        proxy,
        hbone_address,
        admin,
        shutdown,
        server,
        workers,
        span_export,
    })
}

/// On every new snapshot: drops the metric series, pooled connections and health records of
/// pods gone from the cluster.
async fn forget_departed(source: Arc<Source>, proxy: Arc<Proxy>) {
    let mut snapshots = source.subscribe();
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let pruned = proxy
            .metrics
            .prune(|namespace, name| snapshot.workload(namespace, name).is_some());
        let known = |addr: &SocketAddr| snapshot.workload_by_ip(addr.ip()).is_some();
        proxy.upstreams.retain(known);
        proxy.balancer.retain(known);
        if pruned > 0 {
            tracing::debug!(
                pruned,
                "removed metric series of pods gone from the cluster"
            );
        }
    }
}

impl App {
    pub fn hbone_address(&self) -> SocketAddr {
        self.hbone_address
    }

    pub fn admin_address(&self) -> SocketAddr {
        self.admin.admin
    }

    pub fn metrics_address(&self) -> SocketAddr {
        self.admin.metrics
    }

    pub fn readiness_address(&self) -> SocketAddr {
        self.admin.readiness
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Serves until `stop` completes, then stops accepting and lets in-flight requests finish
    /// (hbone's drain: GOAWAY, then up to --drain-timeout).
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        stop.await;
        tracing::info!("waypoint stopping: no new connections, draining in-flight requests");
        self.shutdown.cancel();
        if let Err(error) = self.server.await {
            tracing::warn!(%error, "HBONE server task ended abnormally");
        }
        // Every connection has ended: what is left on the workers (idle upstream connections,
        // the pools' reapers) goes with them.
        drop(self.workers);
        if let Some((stop, task)) = self.span_export {
            stop.cancel();
            if let Err(error) = task.await {
                tracing::warn!(%error, "span export task ended abnormally");
            }
        }
        tracing::info!("waypoint stopped");
    }
}
