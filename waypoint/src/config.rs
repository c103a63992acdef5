//! Every waypoint setting, parsed in one place: CLI flags with environment fallbacks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "waypoint",
    version,
    about = "Ambit waypoint: applies Gateway API routes (HTTPRoute, GRPCRoute with a Service parent) and L7 authorization to the traffic ztunnel sends it over HBONE"
)]
pub struct Config {
    /// Where the cluster view comes from: `--manifests PATH` (the embedded mode), `--kubeconfig
    /// PATH` or `--in-cluster`.
    #[command(flatten)]
    pub source: discovery::SourceArgs,

    /// The Gateway (class `ambit-waypoint`) this process serves, as `namespace/name`. Its
    /// identity is the service account of the same name in that namespace unless
    /// --service-account says otherwise.
    #[arg(long, env = "GATEWAY", value_parser = parse_gateway)]
    pub gateway: GatewayName,

    /// The waypoint's service account (default: the Gateway's name, as the controller creates it).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// Address of the mesh CA (`ambit-ca serve`), `host:port`.
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: String,

    /// The mesh root certificate (PEM): the CA's serving certificate and every peer chain to it.
    #[arg(long, env = "CA_ROOT")]
    pub ca_root: PathBuf,

    /// File holding the bearer token the CA authenticates this waypoint by (local mode: a line
    /// `system:serviceaccount:<ns>:<sa> <token>` of the CA's tokens file; Kubernetes mode: the
    /// pod's projected service account token). Re-read on every request.
    #[arg(long, env = "CA_TOKEN_FILE")]
    pub ca_token_file: PathBuf,

    #[arg(long, env = "TRUST_DOMAIN", default_value = certs::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// Where the HBONE listener (port 15008) binds: the pod's address, or all addresses.
    #[arg(long, env = "LISTEN_ADDRESS", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub listen_address: IpAddr,

    /// The HBONE port (15008, DESIGN §3); 0 picks a free one (tests).
    #[arg(long, env = "HBONE_PORT", default_value_t = crate::HBONE_PORT)]
    pub hbone_port: u16,

    /// `/config_dump` and `/stats/prometheus`; keep it on localhost.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "127.0.0.1:15000")]
    pub admin_address: SocketAddr,

    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:15020")]
    pub metrics_address: SocketAddr,

    #[arg(long, env = "READINESS_ADDRESS", default_value = "0.0.0.0:15021")]
    pub readiness_address: SocketAddr,

    /// How long in-flight requests may finish when the waypoint stops.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// The longest a request may take when its route sets no `timeouts.request`.
    #[arg(long, env = "DEFAULT_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub default_request_timeout: Duration,

    /// The largest request body kept for replay by retries and mirrors; a longer body is
    /// streamed and its request is not retried.
    #[arg(long, env = "RETRY_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub retry_body_limit: usize,

    /// The OpenTelemetry collector that gets the waypoint's request spans, over OTLP/HTTP
    /// protobuf: `http://host:4318` (`/v1/traces` is added) or a full traces URL. Unset, no
    /// spans are kept and `traceparent` passes through untouched.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The percentage of traces that start at the waypoint (requests without a valid
    /// `traceparent`) that are recorded; a caller's own sampling decision is always followed.
    #[arg(long, env = "TRACE_SAMPLING", default_value_t = 1.0)]
    pub trace_sampling: f64,

    /// This waypoint's pod (`service.instance.id` of its spans).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Threads that serve connections, each one a connection's whole life (default: one per
    /// core). Discovery, certificates and the admin endpoints run beside them.
    #[arg(long, env = "WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub worker_threads: Option<usize>,
}

/// `namespace/name` of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for GatewayName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn parse_gateway(value: &str) -> Result<GatewayName, String> {
    match value.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(GatewayName {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!(
            "{value:?} is not `namespace/name`; name the waypoint's Gateway, e.g. `shop/waypoint`"
        )),
    }
}

impl Config {
    /// The identity this waypoint holds and ztunnels expect of it.
    pub fn identity(&self) -> Result<certs::SpiffeId, certs::IdentityError> {
        let service_account = self
            .service_account
            .as_deref()
            .unwrap_or(&self.gateway.name);
        certs::SpiffeId::new(&self.trust_domain, &self.gateway.namespace, service_account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_names_are_namespace_slash_name() {
        assert_eq!(
            parse_gateway("shop/waypoint"),
            Ok(GatewayName {
                namespace: "shop".into(),
                name: "waypoint".into()
            })
        );
        for bad in ["waypoint", "/w", "shop/", "a/b/c"] {
            let error = parse_gateway(bad).unwrap_err();
            assert!(error.contains("namespace/name"), "{bad}: {error}");
        }
    }
}
