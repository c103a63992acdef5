//! Every ztunnel setting, parsed in one place: CLI flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ztunnel",
    version,
    about = "Ambit node agent: captures enrolled pods' traffic in their own network namespace and tunnels it over HBONE (mTLS)"
)]
pub struct Config {
    /// Kubernetes manifests (YAML file or folder; repeatable or comma-separated) describing the
    /// cluster: the embedded, API-server-less mode. Edits are picked up live.
    #[arg(
        long = "manifests",
        env = "AMBIT_MANIFESTS",
        value_delimiter = ',',
        required = true
    )]
    pub manifests: Vec<PathBuf>,

    /// Name of the node this agent runs on (the Pods' spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node: String,

    /// Address of ambit-ca's certificate API.
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: SocketAddr,

    /// PEM file with the root(s) of the mesh: verifies the CA and every peer.
    #[arg(long, env = "CA_ROOT")]
    pub ca_root: PathBuf,

    /// File holding this node's token for the CA (re-read on every request).
    #[arg(long, env = "CA_TOKEN_FILE")]
    pub ca_token_file: PathBuf,

    /// Unix socket where the CNI plugin enrolls pods.
    #[arg(
        long,
        env = "ENROLL_SOCKET",
        default_value = "/var/run/ambit/enroll.sock"
    )]
    pub enroll_socket: PathBuf,

    /// Trust domain of the mesh's SPIFFE identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = certs::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// Namespace whose AuthorizationPolicies apply to every workload (Istio's root namespace).
    #[arg(long, env = "ROOT_NAMESPACE", default_value = discovery::DEFAULT_ROOT_NAMESPACE)]
    pub root_namespace: String,

    /// Lifetime to request for workload certificates (the CA's default when unset).
    #[arg(long, env = "CERT_TTL", value_parser = humantime::parse_duration)]
    pub cert_ttl: Option<Duration>,

    /// Admin endpoint (/config_dump); keep it on localhost.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,

    /// Prometheus metrics endpoint.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:15020")]
    pub metrics_address: SocketAddr,

    /// Readiness endpoint (/healthz/ready) for the kubelet.
    #[arg(long, env = "READINESS_ADDRESS", default_value = "0.0.0.0:15021")]
    pub readiness_address: SocketAddr,

    /// How long connections may drain when a pod is removed or ztunnel stops.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How often the manifests are checked for changes.
    #[arg(long, env = "MANIFESTS_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub manifests_poll_interval: Duration,
}
