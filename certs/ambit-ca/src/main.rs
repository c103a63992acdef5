//! `ambit-ca`: create the mesh root, issue certificates offline, or serve the CSR API to node agents.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ambit_ca::authz::TokensFile;
use ambit_ca::server::{serve, CaService};
use ambit_ca::store;
use ambit_ca::workloads::ManifestWorkloads;
use anyhow::Context;
use certs::{KeyAndCsr, SpiffeId};
use clap::{Parser, Subcommand};

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
    Serve {
        #[arg(long, env = "AMBIT_CA_DIR")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "AMBIT_CA_LISTEN", default_value = "0.0.0.0:15012")]
        listen: std::net::SocketAddr,
        /// File of `<node-name> <token>` lines: which token proves which node (local mode).
        #[arg(long, env = "AMBIT_CA_TOKENS_FILE")]
        tokens_file: PathBuf,
        /// Kubernetes manifests (file or folder, repeatable) holding the Pods the CA authorises against.
        #[arg(
            long = "manifests",
            env = "AMBIT_MANIFESTS",
            value_delimiter = ',',
            required = true
        )]
        manifests: Vec<PathBuf>,
        /// Lifetime of issued certificates when the node does not ask for one.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        default_ttl: Duration,
        /// Longest lifetime a node may obtain.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        max_ttl: Duration,
        /// How often the manifests are checked for changes.
        #[arg(long, env = "MANIFESTS_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
        manifests_poll_interval: Duration,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
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
        Command::Serve {
            dir,
            listen,
            tokens_file,
            manifests,
            default_ttl,
            max_ttl,
            manifests_poll_interval,
        } => {
            let ca = store::load(&dir, &cli.trust_domain)?;
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async move {
                let workloads = ManifestWorkloads::start(manifests, manifests_poll_interval)
                    .context("cannot load the manifests the CA authorises against")?;
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                tracing::info!(address = %listen, trust_domain = %cli.trust_domain, "ambit-ca serving");
                let service = Arc::new(CaService {
                    ca,
                    authenticator: Box::new(TokensFile::new(&tokens_file)),
                    workloads: Arc::new(workloads),
                    default_ttl,
                    max_ttl,
                });
                tokio::select! {
                    result = serve(listener, service) => result.context("the CA server stopped"),
                    _ = tokio::signal::ctrl_c() => { tracing::info!("ambit-ca stopping"); Ok(()) }
                }
            })
        }
    }
}

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
