//! `ambit-ca`: create the mesh root, issue certificates offline, or serve the CSR API to node agents.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_ca::authz::{NodeAuthenticator, TokensFile};
use ambit_ca::gateway_classes;
use ambit_ca::kube::{self, KubeArgs};
use ambit_ca::limits::LimitArgs;
use ambit_ca::root_configmap;
use ambit_ca::server::{serve, CaService};
use ambit_ca::store;
use ambit_ca::token_cache::CachingAuthenticator;
use anyhow::Context;
use certs::{KeyAndCsr, SpiffeId};
use clap::{Parser, Subcommand};
use discovery::{Source, SourceConfig};

#[derive(Parser)]
#[command(
    name = "ambit-ca",
    version,
    about = "The Ambit mesh certificate authority"
)]
struct Cli {
    /// Trust domain of every identity this CA issues.
    #[arg(long, global = true, env = "AMBIT_TRUST_DOMAIN", default_value = certs::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new root CA in DIR (tls.crt, tls.key, ca.crt). Never overwrites.
    Init {
        #[arg(long, env = "AMBIT_CA_DIR")]
        dir: PathBuf,
        /// Lifetime of the root certificate, e.g. "10y", "8760h".
        #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Issue a workload certificate offline (bootstrap, tests): writes tls.crt, tls.key, ca.crt to OUT_DIR.
    Issue {
        #[arg(long, env = "AMBIT_CA_DIR")]
        dir: PathBuf,
        /// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
        #[arg(long)]
        identity: String,
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Serve the certificate-signing API over HTTPS (HTTP/2) to node agents.
    ///
    /// Local mode: --dir, --tokens-file and --manifests. Kubernetes mode (--kubeconfig or
    /// --in-cluster): nodes authenticate with projected service account tokens (TokenReview),
    /// Pods come from the API server, and the root from --root-secret (or --dir).
    Serve(Box<ServeArgs>),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory holding the root (tls.crt, tls.key, ca.crt), as `init` creates it.
    #[arg(
        long,
        env = "AMBIT_CA_DIR",
        required_unless_present = "root_secret",
        conflicts_with = "root_secret"
    )]
    dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "AMBIT_CA_LISTEN", default_value = "0.0.0.0:15012")]
    listen: std::net::SocketAddr,
    /// File of `<node-name> <token>` lines: which token proves which node (local mode).
    #[arg(long, env = "AMBIT_CA_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Where the Pods the CA authorises against come from.
    #[command(flatten)]
    source: discovery::SourceArgs,
    #[command(flatten)]
    kube: KubeArgs,
    /// Connection caps and phase deadlines.
    #[command(flatten)]
    limits: LimitArgs,
    /// Lifetime of issued certificates when the node does not ask for one.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    default_ttl: Duration,
    /// Longest lifetime a node may obtain.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    max_ttl: Duration,
}

/// jemalloc, tuned to give memory back after a load (`runtime::allocator` says why).
#[global_allocator]
static ALLOCATOR: runtime::allocator::Jemalloc = runtime::allocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::logging::init();
    runtime::allocator::tune();
    match cli.command {
        Command::Init { dir, lifetime } => {
            store::init(&dir, &cli.trust_domain, lifetime)?;
            println!(
                "created the root of trust domain {} in {} (tls.key is 0600; keep it secret)",
                cli.trust_domain,
                dir.display()
            );
            Ok(())
        }
        Command::Issue {
            dir,
            identity,
            out_dir,
            ttl,
        } => issue_offline(&cli.trust_domain, dir, &identity, out_dir, ttl),
        Command::Serve(options) => {
            let runtime = runtime::allocator::multi_thread_runtime()
                .context("cannot start the async runtime")?;
            let served = runtime.block_on(serve_ca(cli.trust_domain, *options));
            // Drained (or failed): what still runs — the cluster watchers, a blocking file
            // read — is not waited for.
            runtime.shutdown_background();
            served
        }
    }
}

async fn serve_ca(trust_domain: String, options: ServeArgs) -> anyhow::Result<()> {
    let limits = options.limits.limits();
    // Each admitted connection is one descriptor; the rest is the reserve.
    runtime::fd_limit::raise_to_hard_limit(
        "ambit-ca",
        u64::try_from(limits.max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(FD_RESERVE),
    );
    let source_config = options.source.config_with(
        discovery::SnapshotOptions::default(),
        discovery::KubeSourceConfig::pods_only(),
    )?;
    let kubernetes = matches!(source_config, SourceConfig::Kubernetes { .. });
    match (kubernetes, &options.tokens_file, &options.kube.root_secret) {
        (false, None, _) => anyhow::bail!(
            "local mode (--manifests) needs --tokens-file; for Kubernetes mode pass --kubeconfig or --in-cluster instead of --manifests"
        ),
        (false, _, Some(_)) => anyhow::bail!(
            "--root-secret needs the Kubernetes API (--kubeconfig or --in-cluster); in local mode keep the root in --dir"
        ),
        (true, Some(_), _) => anyhow::bail!(
            "--tokens-file is for local mode; in Kubernetes mode node agents authenticate with projected service account tokens (audience --token-audience)"
        ),
        _ => {}
    }
    let source = Source::start(source_config)
        .await
        .context("cannot start the CA's view of the cluster")?;
    let (ca, authenticator): (_, Box<dyn NodeAuthenticator>) = match source.kube_client() {
        Some(client) => {
            let ca = match (&options.kube.root_secret, &options.dir) {
                (Some(secret), _) => kube::root_from_secret(
                    client.clone(),
                    secret,
                    &trust_domain,
                    options.kube.root_lifetime,
                )
                .await
                .context("cannot obtain the mesh root from --root-secret")?,
                (None, Some(dir)) => store::load(dir, &trust_domain)?,
                (None, None) => anyhow::bail!("pass --root-secret or --dir"),
            };
            if let Some(configmap) = &options.kube.root_configmap {
                root_configmap::publish(client.clone(), configmap, &ca.trust_bundle().to_pem())
                    .await
                    .context("cannot publish the trust bundle (--root-configmap)")?;
            }
            // In the background: issuing certificates does not depend on the Gateway API.
            tokio::spawn(gateway_classes::ensure_until_done(client.clone()));
            // Every unknown token costs the API server a review: remembered verdicts and a
            // bounded number of reviews in flight keep a token flood off the API server.
            let authenticator = CachingAuthenticator::new(
                kube::TokenReviewAuthenticator::new(
                    client.clone(),
                    options.kube.token_audience.clone(),
                    kube::Ztunnels::from_args(&options.kube),
                ),
                limits.max_token_reviews,
            );
            tracing::info!(audience = %options.kube.token_audience, ztunnels = ?kube::Ztunnels::from_args(&options.kube), "Kubernetes mode: node agents authenticate with service account tokens");
            (ca, Box::new(authenticator))
        }
        None => {
            let (Some(dir), Some(tokens_file)) = (&options.dir, &options.tokens_file) else {
                anyhow::bail!("local mode needs --dir and --tokens-file");
            };
            let ca = store::load(dir, &trust_domain)?;
            (ca, Box::new(TokensFile::new(tokens_file)))
        }
    };
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    tracing::info!(address = %options.listen, trust_domain = %trust_domain, limits = ?limits, "ambit-ca serving");
    // A request in flight is over within --request-timeout; a little more lets its answer out.
    let deadline = limits.request_timeout + DRAIN_GRACE;
    let service = Arc::new(CaService {
        ca,
        authenticator,
        workloads: Arc::new(source),
        default_ttl: options.default_ttl,
        max_ttl: options.max_ttl,
        limits,
    });
    let (trigger, drain) = runtime::drain::channel();
    let mut server = tokio::spawn(serve(listener, service, drain));
    let signal = tokio::select! {
        result = &mut server => {
            return match result {
                Ok(result) => result.context("the CA server stopped"),
                Err(error) => Err(anyhow::anyhow!("the CA server task failed: {error}")),
            };
        }
        signal = runtime::signal::termination_requested() => signal,
    };
    tracing::info!(%signal, ?deadline, "ambit-ca stopping: no new connections; answering the requests in flight");
    match trigger.start_drain_and_wait(deadline).await {
        runtime::DrainOutcome::Drained => tracing::info!("ambit-ca stopped: every connection closed"),
        runtime::DrainOutcome::DeadlineReached { still_held } => tracing::warn!(
            connections = still_held,
            ?deadline,
            "ambit-ca stopping with connections still open at the drain deadline; their clients retry"
        ),
    }
    Ok(())
}

/// Beyond --request-timeout, for the last answers to be written.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Descriptors beyond the connections: listener, log, the API server's connections, runtime.
const FD_RESERVE: u64 = 256;

fn issue_offline(
    trust_domain: &str,
    dir: PathBuf,
    identity: &str,
    out_dir: PathBuf,
    ttl: Duration,
) -> anyhow::Result<()> {
    let ca = store::load(&dir, trust_domain)?;
    let identity: SpiffeId = identity.parse()?;
    let request = KeyAndCsr::generate(&identity)?;
    let issued = ca.issue(&request.csr_pem, &identity, Some(ttl))?;
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    store::write_new(&out_dir.join(store::KEY_FILE), &request.private_key_pem())?;
    store::write_new(&out_dir.join(store::CERT_FILE), &issued.chain_pem)?;
    store::write_new(
        &out_dir.join(store::ROOTS_FILE),
        &ca.trust_bundle().to_pem(),
    )?;
    println!(
        "issued {identity} (serial {}) into {}",
        issued.serial_hex,
        out_dir.display()
    );
    Ok(())
}
