//! Cluster DNS, emulated. Istio's echo client resolves `echo` or `echo-v1.gateway-conformance-mesh`
//! with the pod's resolver (cluster DNS) and dials the Service's ClusterIP. The cluster-in-a-box
//! has no cluster DNS for these names, so the harness resolves them from the Services it created
//! — the short name in the client's namespace, `name.namespace`, `name.namespace.svc` and
//! `name.namespace.svc.cluster.local` — and tells `mesh-client` the VIP to dial and the Host to
//! send (the URL's host as written, as Go sends it). What reaches the mesh is identical: a
//! connection from the client pod to VIP:port carrying that Host header.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use crate::manifests::Labels;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// What `mesh-client` dials.
    pub connect: SocketAddr,
    /// The URL authority (`echo`, `echo-v1:8080`, `10.1.2.3:8080`): the Host header unless the
    /// case sets Host itself.
    pub authority: String,
}

/// The names and addresses the harness created.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// (namespace, name) → ClusterIP.
    services: BTreeMap<(String, String), Ipv4Addr>,
    /// (namespace, labels, IP) of every echo pod.
    pods: Vec<(String, Labels, Ipv4Addr)>,
}

impl Resolver {
    pub fn add_service(&mut self, namespace: &str, name: &str, vip: Ipv4Addr) {
        self.services.insert((namespace.into(), name.into()), vip);
    }

    pub fn add_pod(&mut self, namespace: &str, labels: &Labels, ip: Ipv4Addr) {
        self.pods.push((namespace.into(), labels.clone(), ip));
    }

    /// Resolves a case's URL host (`name[:port]`, an IP, or the data set's
    /// `<IP of an echo-v2 pod (app=echo,version=v2)>:8080` placeholder) as seen from a pod in
    /// `client_namespace`; `default_port` applies when the host has none.
    pub fn resolve(
        &self,
        host: &str,
        client_namespace: &str,
        default_port: u16,
    ) -> Result<Destination, String> {
        if host.starts_with('<') {
            return self.resolve_pod_placeholder(host, client_namespace, default_port);
        }
        let (name, port) = split_port(host, default_port)?;
        let ip = match name.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => self.service_ip(name, client_namespace)?,
        };
        Ok(Destination {
            connect: SocketAddr::from((ip, port)),
            authority: host.to_string(),
        })
    }

    fn service_ip(&self, name: &str, client_namespace: &str) -> Result<Ipv4Addr, String> {
        let parts: Vec<&str> = name.trim_end_matches('.').split('.').collect();
        let key = match parts.as_slice() {
            [service] => (client_namespace, *service),
            [service, namespace] | [service, namespace, "svc"] => (*namespace, *service),
            [service, namespace, "svc", "cluster", "local"] => (*namespace, *service),
            _ => {
                return Err(format!(
                    "{name}: not a cluster Service name (emulated DNS knows only Services)"
                ))
            }
        };
        self.services
            .get(&(key.0.to_string(), key.1.to_string()))
            .copied()
            .ok_or_else(|| format!("{name}: no Service {}/{} (NXDOMAIN)", key.0, key.1))
    }

    /// `<IP of an echo-v2 pod (app=echo,version=v2)>:8080`: the IP of the first pod in the
    /// client's namespace matching the selector in parentheses (what the Go test looks up).
    fn resolve_pod_placeholder(
        &self,
        host: &str,
        client_namespace: &str,
        default_port: u16,
    ) -> Result<Destination, String> {
        let (inner, rest) = host[1..]
            .split_once('>')
            .ok_or_else(|| format!("{host}: unterminated <…> placeholder"))?;
        let selector_text = inner
            .split_once('(')
            .and_then(|(_, s)| s.strip_suffix(')'))
            .ok_or_else(|| format!("{host}: placeholder without a (label selector)"))?;
        let selector =
            crate::conformance::case::parse_selector(selector_text).map_err(|e| e.to_string())?;
        let port = match rest.strip_prefix(':') {
            Some(port) => port
                .parse()
                .map_err(|_| format!("{host}: bad port {port:?}"))?,
            None if rest.is_empty() => default_port,
            None => return Err(format!("{host}: unexpected {rest:?} after the placeholder")),
        };
        let ip = self
            .pods
            .iter()
            .find(|(namespace, labels, _)| {
                namespace == client_namespace
                    && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|(_, _, ip)| *ip)
            .ok_or_else(|| {
                format!("{host}: no pod in {client_namespace} matches {selector_text}")
            })?;
        let authority = if rest.is_empty() {
            ip.to_string()
        } else {
            format!("{ip}:{port}")
        };
        Ok(Destination {
            connect: SocketAddr::from((ip, port)),
            authority,
        })
    }
}

/// `echo-v1:8080` → ("echo-v1", 8080); `echo` → ("echo", default).
fn split_port(host: &str, default_port: u16) -> Result<(&str, u16), String> {
    match host.rsplit_once(':') {
        Some((name, port)) => port
            .parse()
            .map(|port| (name, port))
            .map_err(|_| format!("{host}: bad port {port:?}")),
        None => Ok((host, default_port)),
    }
}

/// The port a URL scheme implies.
pub fn default_port(scheme: &str) -> u16 {
    match scheme {
        "https" => 443,
        _ => 80,
    }
}
