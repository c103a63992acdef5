//! Pod → [`Workload`].

use std::net::IpAddr;

use identity::{SpiffeId, DEFAULT_TRUST_DOMAIN};
use k8s_openapi::api::core::v1::Pod;

use super::{labels, name, namespace_of, port_number, protocol, ConvertError};
use crate::model::{NamedPort, WaypointBinding, Workload, DEFAULT_SERVICE_ACCOUNT};

/// Converts a Pod. `ambient` is left `false`: it depends on the namespace and is set when the
/// snapshot is built.
pub fn workload(pod: &Pod) -> Result<Workload, ConvertError> {
    let name = name(&pod.metadata)?.to_owned();
    let namespace = namespace_of(&pod.metadata);
    let spec = pod.spec.as_ref().ok_or_else(|| {
        ConvertError::new(
            "spec",
            "missing; a Pod needs a spec with nodeName and containers",
        )
    })?;
    let node = match spec.node_name.as_deref() {
        Some(node) if !node.is_empty() => node.to_owned(),
        _ => {
            return Err(ConvertError::new(
                "spec.nodeName",
                "missing; without a scheduler every Pod must name the node it runs on",
            ))
        }
    };
    let service_account = spec
        .service_account_name
        .as_deref()
        .or(spec.service_account.as_deref())
        .filter(|sa| !sa.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_owned();
    // The identity is derived from these names; reject ones that cannot form a SPIFFE ID now,
    // at load time, rather than on the first connection.
    if let Err(err) = SpiffeId::new(DEFAULT_TRUST_DOMAIN, &namespace, &service_account) {
        // Blame the namespace only if it is the invalid part.
        let namespace_bad =
            SpiffeId::new(DEFAULT_TRUST_DOMAIN, &namespace, DEFAULT_SERVICE_ACCOUNT).is_err();
        let field = if namespace_bad {
            "metadata.namespace"
        } else {
            "spec.serviceAccountName"
        };
        return Err(ConvertError::new(field, err.to_string()));
    }

    let mut named_ports = Vec::new();
    for (c, container) in spec.containers.iter().enumerate() {
        for (p, port) in container.ports.iter().flatten().enumerate() {
            let field = format!("spec.containers[{c}].ports[{p}]");
            let number = port_number(format!("{field}.containerPort"), port.container_port)?;
            let protocol = protocol(format!("{field}.protocol"), port.protocol.as_deref())?;
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                named_ports.push(NamedPort {
                    name: port_name.to_owned(),
                    port: number,
                    protocol,
                });
            }
        }
    }

    let probe_ports = probe_ports(spec);

    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()) {
        ips.push(parse_ip("status.podIP", ip)?);
    }
    for (i, pod_ip) in status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ip = parse_ip(format!("status.podIPs[{i}].ip"), &pod_ip.ip)?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }

    let labels = labels(&pod.metadata);
    Ok(Workload {
        uid: pod
            .metadata
            .uid
            .clone()
            .filter(|uid| !uid.is_empty())
            .unwrap_or_else(|| format!("{namespace}/{name}")),
        use_waypoint: WaypointBinding::from_labels(&labels),
        ready: is_ready(pod),
        host_network: spec.host_network.unwrap_or(false),
        name,
        namespace,
        node,
        service_account,
        ips,
        labels,
        named_ports,
        probe_ports,
        ambient: false,
    })
}

/// The TCP ports the kubelet probes (liveness, readiness, startup: httpGet, tcpSocket, grpc),
/// named ports resolved against their container's ports. A probe naming a port the container
/// does not declare is left out: it fails in Kubernetes too.
fn probe_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut ports = Vec::new();
    for container in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let resolve = |port: &IntOrString| match port {
            IntOrString::Int(number) => u16::try_from(*number).ok().filter(|p| *p != 0),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        };
        let probes = [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ];
        for probe in probes.into_iter().flatten() {
            let port = probe
                .http_get
                .as_ref()
                .and_then(|get| resolve(&get.port))
                .or_else(|| probe.tcp_socket.as_ref().and_then(|tcp| resolve(&tcp.port)))
                .or_else(|| {
                    probe
                        .grpc
                        .as_ref()
                        .and_then(|grpc| u16::try_from(grpc.port).ok())
                });
            if let Some(port) = port.filter(|p| !ports.contains(p)) {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// Ready unless finished, being deleted, or reported unready. Hand-written manifests rarely
/// carry conditions, so their absence means ready.
fn is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = pod.status.as_ref() else {
        return true;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .is_none_or(|c| c.status == "True")
}

fn parse_ip(field: impl Into<String>, value: &str) -> Result<IpAddr, ConvertError> {
    value.trim().parse().map_err(|_| {
        ConvertError::new(
            field,
            format!(
                "{value:?} is not an IP address; write an IPv4 or IPv6 address such as 10.0.1.5"
            ),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::from_yaml;
    use super::*;

    const BASE: &str = "metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  serviceAccountName: web
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080}, {containerPort: 9090}, {name: dns, containerPort: 53, protocol: UDP}]
status:
  podIP: 10.0.1.5
  podIPs: [{ip: 10.0.1.5}, {ip: 'fd00::5'}]
";

    #[test]
    fn converts_a_full_pod() {
        let w = workload(&from_yaml(BASE)).unwrap();
        assert_eq!(w.uid, "shop/web-0");
        assert_eq!((w.name.as_str(), w.namespace.as_str()), ("web-0", "shop"));
        assert_eq!(w.node, "node-a");
        assert_eq!(w.service_account, "web");
        assert_eq!(
            w.ips,
            vec![
                "10.0.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(w.named_ports.len(), 2);
        assert!(w.ready);
        assert!(!w.host_network);
        assert_eq!(
            w.identity("cluster.local").unwrap().to_string(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
    }

    #[test]
    fn probe_ports_are_collected_from_every_probe_kind() {
        let pod = BASE.replace(
            "    ports: [{name: http, containerPort: 8080}",
            "    readinessProbe: {httpGet: {path: /ready, port: http}}
    livenessProbe: {tcpSocket: {port: 9090}}
    startupProbe: {grpc: {port: 7070}}
    ports: [{name: http, containerPort: 8080}",
        );
        let with_init = pod.replace(
            "  containers:\n",
            "  initContainers: [{name: i, readinessProbe: {tcpSocket: {port: missing}}}]\n  containers:\n",
        );
        let w = workload(&from_yaml(&with_init)).unwrap();
        // The named port resolves, the unknown name is left out, duplicates collapse.
        assert_eq!(w.probe_ports, vec![7070, 8080, 9090]);
        assert!(workload(&from_yaml(BASE)).unwrap().probe_ports.is_empty());
    }

    #[test]
    fn conversion_table() {
        // (case, yaml edit as (from, to), expected error field or None, check on success)
        type Check = fn(&Workload) -> bool;
        let cases: &[(&str, &str, &str, Option<&str>, Check)] = &[
            ("default sa", "  serviceAccountName: web\n", "", None, |w| {
                w.service_account == "default"
            }),
            ("default namespace", "namespace: shop, ", "", None, |w| {
                w.namespace == "default"
            }),
            ("uid kept", "labels:", "uid: u-1, labels:", None, |w| {
                w.uid == "u-1"
            }),
            (
                "no ip is fine",
                "  podIP: 10.0.1.5\n  podIPs: [{ip: 10.0.1.5}, {ip: 'fd00::5'}]\n",
                "  phase: Running\n",
                None,
                |w| w.ips.is_empty(),
            ),
            (
                "finished pod unready",
                "status:\n",
                "status:\n  phase: Succeeded\n",
                None,
                |w| !w.ready,
            ),
            (
                "unready condition",
                "status:\n",
                "status:\n  conditions: [{type: Ready, status: 'False'}]\n",
                None,
                |w| !w.ready,
            ),
            (
                "host network",
                "  nodeName: node-a\n",
                "  nodeName: node-a\n  hostNetwork: true\n",
                None,
                |w| w.host_network,
            ),
            (
                "missing node",
                "  nodeName: node-a\n",
                "",
                Some("spec.nodeName"),
                |_| true,
            ),
            (
                "bad pod ip",
                "podIP: 10.0.1.5",
                "podIP: 10.0.1.500",
                Some("status.podIP"),
                |_| true,
            ),
            (
                "bad pod ips",
                "{ip: 'fd00::5'}",
                "{ip: nope}",
                Some("status.podIPs[1].ip"),
                |_| true,
            ),
            (
                "bad container port",
                "containerPort: 9090",
                "containerPort: 70000",
                Some("spec.containers[0].ports[1].containerPort"),
                |_| true,
            ),
            (
                "bad sa name",
                "serviceAccountName: web",
                "serviceAccountName: Web_1",
                Some("spec.serviceAccountName"),
                |_| true,
            ),
        ];
        for (case, from, to, want_err, check) in cases {
            assert!(BASE.contains(from), "{case}: edit does not apply");
            let pod: Pod = from_yaml(&BASE.replacen(from, to, 1));
            match (workload(&pod), want_err) {
                (Ok(w), None) => assert!(check(&w), "{case}: {w:?}"),
                (Err(err), Some(field)) => assert_eq!(err.field, *field, "{case}: {err}"),
                (got, want) => panic!("{case}: got {got:?}, want error at {want:?}"),
            }
        }
    }
}
