//! Service and EndpointSlice → model.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{labels, name, namespace_of, port_number, protocol, ConvertError};
use crate::model::{
    self, SliceEndpoint, SlicePort, TargetPort, WaypointBinding, SERVICE_NAME_LABEL,
};

/// Converts a Service: VIPs, ports with their target ports, selector.
pub fn service(svc: &core::Service) -> Result<model::Service, ConvertError> {
    let name = name(&svc.metadata)?.to_owned();
    let namespace = namespace_of(&svc.metadata);
    let spec = svc.spec.as_ref();

    let mut vips = Vec::new();
    let single = spec.and_then(|s| s.cluster_ip.as_deref());
    let listed = spec
        .and_then(|s| s.cluster_ips.as_deref())
        .unwrap_or_default();
    let candidates = single
        .map(|ip| ("spec.clusterIP".to_owned(), ip))
        .into_iter()
        .chain(
            listed
                .iter()
                .enumerate()
                .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip.as_str())),
        );
    for (field, value) in candidates {
        // "None" marks a headless Service: no VIP, clients resolve pod IPs directly.
        if value.is_empty() || value == "None" {
            continue;
        }
        let ip: IpAddr = value.trim().parse().map_err(|_| {
            ConvertError::new(
                field,
                format!(
                    "{value:?} is not an IP address; use an IP, or \"None\" for a headless Service"
                ),
            )
        })?;
        if !vips.contains(&ip) {
            vips.push(ip);
        }
    }

    let mut ports = Vec::new();
    for (i, port) in spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("spec.ports[{i}]");
        let number = port_number(format!("{field}.port"), port.port)?;
        let target_port = match &port.target_port {
            None => TargetPort::Number(number),
            Some(IntOrString::Int(target)) => {
                TargetPort::Number(port_number(format!("{field}.targetPort"), *target)?)
            }
            // A quoted number ("8080") is a number to the API server too.
            Some(IntOrString::String(target)) => match target.parse::<i32>() {
                Ok(target) => {
                    TargetPort::Number(port_number(format!("{field}.targetPort"), target)?)
                }
                Err(_) if target.is_empty() => {
                    return Err(ConvertError::new(
                        format!("{field}.targetPort"),
                        "empty; use a port number or the name of a container port",
                    ))
                }
                Err(_) => TargetPort::Named(target.clone()),
            },
        };
        ports.push(model::ServicePort {
            name: port.name.clone().unwrap_or_default(),
            port: number,
            target_port,
            protocol: protocol(format!("{field}.protocol"), port.protocol.as_deref())?,
            app_protocol: port.app_protocol.clone().filter(|p| !p.is_empty()),
        });
    }

    let labels = labels(&svc.metadata);
    Ok(model::Service {
        name,
        namespace,
        vips,
        ports,
        selector: spec
            .and_then(|s| s.selector.clone())
            .filter(|selector| !selector.is_empty()),
        use_waypoint: WaypointBinding::from_labels(&labels),
        labels,
    })
}

/// Converts an EndpointSlice. `None` for slices the mesh cannot use: no
/// `kubernetes.io/service-name` label (they belong to no Service) or FQDN addresses.
pub fn endpoint_slice(
    slice: &discovery::EndpointSlice,
) -> Result<Option<model::EndpointSlice>, ConvertError> {
    let name = name(&slice.metadata)?.to_owned();
    let namespace = namespace_of(&slice.metadata);
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
    else {
        tracing::debug!(%namespace, %name, "EndpointSlice has no kubernetes.io/service-name label; ignored");
        return Ok(None);
    };
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => {}
        "FQDN" => {
            tracing::debug!(%namespace, %name, "FQDN EndpointSlice ignored; the mesh routes to IPs");
            return Ok(None);
        }
        other => {
            return Err(ConvertError::new(
                "addressType",
                format!("{other:?} is not one of IPv4, IPv6, FQDN"),
            ))
        }
    }

    let mut ports = Vec::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        // A port without a number means "all ports" in the API; Services never produce it.
        let Some(number) = port.port else { continue };
        ports.push(SlicePort {
            name: port.name.clone().unwrap_or_default(),
            port: port_number(format!("ports[{i}].port"), number)?,
            protocol: protocol(format!("ports[{i}].protocol"), port.protocol.as_deref())?,
        });
    }

    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let mut addresses = Vec::with_capacity(endpoint.addresses.len());
        for (j, address) in endpoint.addresses.iter().enumerate() {
            addresses.push(address.trim().parse::<IpAddr>().map_err(|_| {
                ConvertError::new(
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("{address:?} is not an IP address"),
                )
            })?);
        }
        let pod = endpoint
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| {
                let pod_name = r.name.clone()?;
                let pod_ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                Some((pod_ns, pod_name))
            });
        endpoints.push(SliceEndpoint {
            addresses,
            ready: endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true),
            pod,
        });
    }

    Ok(Some(model::EndpointSlice {
        name,
        namespace,
        service,
        ports,
        endpoints,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::from_yaml;
    use super::*;
    use crate::model::Protocol;

    const SVC: &str = "metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, 'fd00:96::10']
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000, targetPort: 9001}
  - {name: plain, port: 8080}
  - {name: dns, port: 53, protocol: UDP, targetPort: '5353'}
";

    #[test]
    fn converts_a_service() {
        let svc = service(&from_yaml(SVC)).unwrap();
        assert_eq!(svc.vips.len(), 2);
        let targets: Vec<_> = svc.ports.iter().map(|p| p.target_port.clone()).collect();
        assert_eq!(
            targets,
            vec![
                TargetPort::Named("http".into()),
                TargetPort::Number(9001),
                TargetPort::Number(8080),
                TargetPort::Number(5353)
            ]
        );
        assert_eq!(svc.ports[3].protocol, Protocol::Udp);
        assert!(svc.selects(&[("app".to_string(), "web".to_string())].into()));
    }

    #[test]
    fn service_errors_and_edge_cases() {
        type Check = fn(&model::Service) -> bool;
        let cases: &[(&str, &str, &str, Result<Check, &str>)] = &[
            (
                "headless",
                "clusterIP: 10.96.0.10\n  clusterIPs: [10.96.0.10, 'fd00:96::10']",
                "clusterIP: None",
                Ok(|s| s.vips.is_empty()),
            ),
            (
                "empty selector",
                "selector: {app: web}",
                "selector: {}",
                Ok(|s| s.selector.is_none()),
            ),
            (
                "bad vip",
                "clusterIP: 10.96.0.10",
                "clusterIP: 10.96.0",
                Err("spec.clusterIP"),
            ),
            ("bad vips", "'fd00:96::10'", "x", Err("spec.clusterIPs[1]")),
            (
                "target out of range",
                "targetPort: 9001",
                "targetPort: 70000",
                Err("spec.ports[1].targetPort"),
            ),
            (
                "target zero",
                "targetPort: 9001",
                "targetPort: 0",
                Err("spec.ports[1].targetPort"),
            ),
            (
                "quoted target out of range",
                "'5353'",
                "'65536'",
                Err("spec.ports[3].targetPort"),
            ),
            (
                "empty target name",
                "targetPort: http",
                "targetPort: ''",
                Err("spec.ports[0].targetPort"),
            ),
            (
                "port out of range",
                "port: 9000",
                "port: 90000",
                Err("spec.ports[1].port"),
            ),
            (
                "bad protocol",
                "protocol: UDP",
                "protocol: QUIC",
                Err("spec.ports[3].protocol"),
            ),
        ];
        for (case, from, to, want) in cases {
            assert!(SVC.contains(from), "{case}: edit does not apply");
            let got = service(&from_yaml(&SVC.replacen(from, to, 1)));
            match (got, want) {
                (Ok(svc), Ok(check)) => assert!(check(&svc), "{case}: {svc:?}"),
                (Err(err), Err(field)) => assert_eq!(err.field, *field, "{case}: {err}"),
                (got, _) => panic!("{case}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn converts_endpoint_slices() {
        let yaml =
            "metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.0.1.5]
  targetRef: {kind: Pod, name: web-0}
- addresses: [10.0.1.6]
  conditions: {ready: false}
";
        let slice = endpoint_slice(&from_yaml(yaml)).unwrap().unwrap();
        assert_eq!(slice.service, "web");
        assert_eq!(slice.ports[0].port, 8080);
        assert_eq!(
            slice.endpoints[0].pod,
            Some(("shop".into(), "web-0".into()))
        );
        assert!(slice.endpoints[0].ready);
        assert!(!slice.endpoints[1].ready);

        let unlabelled = yaml.replace("labels: {kubernetes.io/service-name: web}", "labels: {}");
        assert_eq!(endpoint_slice(&from_yaml(&unlabelled)).unwrap(), None);
        let fqdn = yaml.replace("IPv4", "FQDN");
        assert_eq!(endpoint_slice(&from_yaml(&fqdn)).unwrap(), None);
        let bad = yaml.replace("[10.0.1.6]", "[10.0.1.6, nope]");
        assert_eq!(
            endpoint_slice(&from_yaml(&bad)).unwrap_err().field,
            "endpoints[1].addresses[1]"
        );
    }
}
