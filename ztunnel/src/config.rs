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
    /// Where the cluster view comes from: `--manifests PATH` (the embedded mode: YAML files or
    /// folders, edits picked up live), `--kubeconfig PATH` or `--in-cluster` (the Kubernetes API).
    #[command(flatten)]
    pub source: discovery::SourceArgs,

    /// Name of the node this agent runs on (the Pods' spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node: String,

    /// Address of ambit-ca's certificate API: `host:port` (e.g. ambit-ca.ambit-system.svc:15012)
    /// or `ip:port`.
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: String,

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

    /// When another ztunnel already serves the node (a surge upgrade), how long this one may
    /// spend capturing the running pods before it takes the enrollment socket over anyway.
    #[arg(long, env = "TAKEOVER_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub takeover_timeout: Duration,

    /// Serve DNS for enrolled pods on 15053 in their network namespace and have their port-53
    /// traffic redirected there (`--dns-capture=false` leaves pods' DNS alone).
    #[arg(long, env = "DNS_CAPTURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub dns_capture: bool,

    /// The cluster's DNS domain: `<svc>.<ns>.svc.<domain>` is answered from the cluster view.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Resolvers for every name that is not a Service (`ip` or `ip:port`, port 53 by default;
    /// repeatable or comma-separated, tried in order). Default: the nameservers of the node's
    /// /etc/resolv.conf.
    #[arg(long = "dns-upstream", env = "DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_dns_upstream)]
    pub dns_upstreams: Vec<SocketAddr>,

    /// Longest a forwarded query may wait for the upstreams, all of them together, before the
    /// pod gets SERVFAIL; keep it under the pods' resolver timeout (5 s by default).
    #[arg(long, env = "DNS_UPSTREAM_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub dns_upstream_timeout: Duration,
}

/// `10.0.0.10`, `10.0.0.10:53`, `2001:db8::a` or `[2001:db8::a]:53`.
fn parse_dns_upstream(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!("{text:?} is not an IP address or ip:port (use [v6]:port for IPv6 with a port)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_upstream_spellings() {
        let ok = |text: &str, expected: &str| {
            assert_eq!(
                parse_dns_upstream(text),
                Ok(expected.parse().unwrap()),
                "{text}"
            )
        };
        ok("10.0.0.10", "10.0.0.10:53");
        ok("10.0.0.10:5353", "10.0.0.10:5353");
        ok("2001:db8::a", "[2001:db8::a]:53");
        ok("[2001:db8::a]:5353", "[2001:db8::a]:5353");
        assert!(parse_dns_upstream("dns.example:53").is_err());
    }

    #[test]
    fn dns_defaults() {
        let config = Config::try_parse_from([
            "ztunnel",
            "--manifests",
            "m",
            "--node",
            "n",
            "--ca-address",
            "127.0.0.1:1",
            "--ca-root",
            "r",
            "--ca-token-file",
            "t",
        ])
        .unwrap();
        assert!(config.dns_capture);
        assert_eq!(config.cluster_domain, "cluster.local");
        assert!(config.dns_upstreams.is_empty());
        assert_eq!(config.dns_upstream_timeout, Duration::from_secs(2));
        let config = Config::try_parse_from([
            "ztunnel",
            "--manifests",
            "m",
            "--node",
            "n",
            "--ca-address",
            "127.0.0.1:1",
            "--ca-root",
            "r",
            "--ca-token-file",
            "t",
            "--dns-capture=false",
            "--dns-upstream",
            "10.1.0.1,10.1.0.2:5353",
            "--dns-upstream",
            "[::1]:53",
        ])
        .unwrap();
        assert!(!config.dns_capture);
        assert_eq!(config.dns_upstreams.len(), 3);
    }
}
