//! Gateway spec → [`Gateway`] parts: listeners (with the schema's cross-listener rules),
//! addresses, infrastructure, TLS validation and allowed listeners.

use super::check::{Field, Problems, ADDRESS_TYPE, DNS_SUBDOMAIN, HOSTNAME, LISTENER_PROTOCOL};
use super::common::{group, kind, label_selector, local_ref, object_ref};
use crate::gateway_api::model::{
    AddressType, AllowedRoutes, FrontendTls, FrontendValidation, FrontendValidationMode,
    GatewayAddress, GatewayTls, GroupKind, Infrastructure, Listener, ListenerProtocol, ListenerTls,
    PerPortValidation, RouteNamespaces, TlsMode, GATEWAY_API_GROUP,
};
use crate::gateway_api::resource::{
    AllowedRoutesSpec, FrontendTlsSpec, FrontendValidationSpec, GatewayAddressSpec, GatewayTlsSpec,
    InfrastructureSpec, ListenerSpec, ListenerTlsSpec, RouteNamespacesSpec,
};

pub(crate) fn listeners(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<ListenerSpec>>,
    own: &str,
) -> Vec<Listener> {
    if specs.as_ref().is_none_or(Vec::is_empty) {
        problems.add(field, "missing; a Gateway needs at least one listener");
    }
    let specs = problems.list(field, specs, 64);
    let listeners: Vec<Listener> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| listener(problems, &field.index(i), s, own))
        .collect();
    problems.unique(
        field,
        listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.name.as_str())),
        "listener name",
    );
    for (i, listener) in listeners.iter().enumerate() {
        let first = listeners[..i].iter().position(|other| {
            (other.port, &other.protocol, &other.hostname)
                == (listener.port, &listener.protocol, &listener.hostname)
        });
        if let Some(first) = first {
            problems.add(&field.index(i), format!("has the same port, protocol and hostname as listeners[{first}]; each listener needs its own combination"));
        }
    }
    listeners
}

fn listener(problems: &mut Problems, field: &Field, spec: &ListenerSpec, own: &str) -> Listener {
    let name = problems
        .required(&field.at("name"), spec.name.as_ref())
        .cloned()
        .unwrap_or_default();
    if !name.is_empty() {
        problems.pattern(&field.at("name"), &name, &DNS_SUBDOMAIN);
    }
    let port = problems
        .required(&field.at("port"), spec.port.as_ref())
        .and_then(|&p| problems.port(&field.at("port"), p))
        .unwrap_or(0);
    let protocol_name = problems
        .required(&field.at("protocol"), spec.protocol.as_ref())
        .cloned()
        .unwrap_or_default();
    if !protocol_name.is_empty() {
        problems.pattern(&field.at("protocol"), &protocol_name, &LISTENER_PROTOCOL);
    }
    let protocol = ListenerProtocol::parse(&protocol_name);
    let hostname = spec.hostname.clone();
    if let Some(hostname) = &hostname {
        problems.pattern(&field.at("hostname"), hostname, &HOSTNAME);
        if matches!(protocol, ListenerProtocol::Tcp | ListenerProtocol::Udp) {
            problems.add(
                &field.at("hostname"),
                format!("set on a {protocol_name} listener, which has no hostnames; remove it"),
            );
        }
    }
    let tls = spec
        .tls
        .as_ref()
        .map(|t| listener_tls(problems, &field.at("tls"), t, own));
    match (&protocol, &tls) {
        (ListenerProtocol::Http | ListenerProtocol::Tcp | ListenerProtocol::Udp, Some(_)) => {
            problems.add(
                &field.at("tls"),
                format!("set on a {protocol_name} listener; only HTTPS and TLS listeners take tls"),
            );
        }
        (ListenerProtocol::Https, Some(tls)) if tls.mode != TlsMode::Terminate => {
            problems.add(&field.at("tls").at("mode"), "HTTPS listeners terminate TLS; use mode Terminate (or protocol TLS for Passthrough)");
        }
        (ListenerProtocol::Tls, None) => {
            problems.add(
                &field.at("tls"),
                "missing; a TLS listener needs tls.mode (Passthrough or Terminate)",
            );
        }
        _ => {}
    }
    Listener {
        name,
        hostname,
        port,
        protocol,
        tls,
        allowed_routes: allowed_routes(
            problems,
            &field.at("allowedRoutes"),
            spec.allowed_routes.as_ref(),
        ),
    }
}

fn listener_tls(
    problems: &mut Problems,
    field: &Field,
    spec: &ListenerTlsSpec,
    own: &str,
) -> ListenerTls {
    let mode = match spec
        .mode
        .as_deref()
        .map(|m| problems.one_of(&field.at("mode"), m, &["Terminate", "Passthrough"]))
    {
        None | Some(Some("Terminate")) | Some(None) => TlsMode::Terminate,
        Some(Some(_)) => TlsMode::Passthrough,
    };
    let refs_field = field.at("certificateRefs");
    let certificate_refs: Vec<_> = problems
        .list(&refs_field, &spec.certificate_refs, 64)
        .iter()
        .enumerate()
        .map(|(i, r)| object_ref(problems, &refs_field.index(i), r, own, Some("Secret")))
        .collect();
    let options = spec.options.clone().unwrap_or_default();
    if mode == TlsMode::Terminate && certificate_refs.is_empty() && options.is_empty() {
        problems.add(
            &refs_field,
            "missing; terminating TLS needs a certificate (a Secret of type kubernetes.io/tls)",
        );
    }
    ListenerTls {
        mode,
        certificate_refs,
        options,
    }
}

fn allowed_routes(
    problems: &mut Problems,
    field: &Field,
    spec: Option<&AllowedRoutesSpec>,
) -> AllowedRoutes {
    let Some(spec) = spec else {
        return AllowedRoutes {
            namespaces: RouteNamespaces::Same,
            kinds: Vec::new(),
        };
    };
    let kinds_field = field.at("kinds");
    let kinds = problems
        .list(&kinds_field, &spec.kinds, 8)
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let field = kinds_field.index(i);
            GroupKind {
                group: group(
                    problems,
                    &field.at("group"),
                    k.group.as_deref(),
                    GATEWAY_API_GROUP,
                ),
                kind: kind(problems, &field.at("kind"), k.kind.as_deref(), None),
            }
        })
        .collect();
    let namespaces = route_namespaces(
        problems,
        &field.at("namespaces"),
        spec.namespaces.as_ref(),
        "Same",
        &["All", "Selector", "Same"],
    );
    AllowedRoutes { namespaces, kinds }
}

/// `namespaces.from` (+ `selector`) of allowedRoutes and allowedListeners.
pub(crate) fn route_namespaces(
    problems: &mut Problems,
    field: &Field,
    spec: Option<&RouteNamespacesSpec>,
    default: &str,
    allowed: &[&str],
) -> RouteNamespaces {
    let from = spec.and_then(|s| s.from.as_deref()).unwrap_or(default);
    match problems.one_of(&field.at("from"), from, allowed) {
        Some("All") => RouteNamespaces::All,
        Some("Same") => RouteNamespaces::Same,
        Some("Selector") => match spec.and_then(|s| s.selector.as_ref()) {
            Some(selector) => {
                RouteNamespaces::Selector(label_selector(problems, &field.at("selector"), selector))
            }
            None => {
                problems.add(
                    &field.at("selector"),
                    "missing; from: Selector needs a selector",
                );
                RouteNamespaces::None
            }
        },
        _ => RouteNamespaces::None,
    }
}

pub(crate) fn addresses(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<GatewayAddressSpec>>,
) -> Vec<GatewayAddress> {
    let specs = problems.list(field, specs, 16);
    let mut out: Vec<GatewayAddress> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let field = field.index(i);
        let type_name = spec.type_.as_deref().unwrap_or("IPAddress");
        problems.pattern(&field.at("type"), type_name, &ADDRESS_TYPE);
        let address_type = match type_name {
            "IPAddress" => AddressType::IpAddress,
            "Hostname" => AddressType::Hostname,
            "NamedAddress" => AddressType::NamedAddress,
            other => AddressType::Other(other.to_owned()),
        };
        if let Some(value) = &spec.value {
            if value.len() > 253 {
                problems.add(&field.at("value"), "is longer than 253 characters");
            }
            if address_type == AddressType::Hostname && !value.is_empty() {
                problems.pattern(&field.at("value"), value, &HOSTNAME);
            }
        }
        let address = GatewayAddress {
            address_type,
            value: spec.value.clone(),
        };
        let unique_type = matches!(
            address.address_type,
            AddressType::IpAddress | AddressType::Hostname
        );
        if unique_type && address.value.is_some() && out.contains(&address) {
            problems.add(
                &field.at("value"),
                "is listed twice; list each address once",
            );
        }
        out.push(address);
    }
    out
}

pub(crate) fn infrastructure(
    problems: &mut Problems,
    field: &Field,
    spec: &InfrastructureSpec,
) -> Infrastructure {
    Infrastructure {
        labels: spec.labels.clone().unwrap_or_default(),
        annotations: spec.annotations.clone().unwrap_or_default(),
        parameters_ref: spec
            .parameters_ref
            .as_ref()
            .map(|r| local_ref(problems, &field.at("parametersRef"), r)),
    }
}

pub(crate) fn tls(
    problems: &mut Problems,
    field: &Field,
    spec: &GatewayTlsSpec,
    own: &str,
) -> GatewayTls {
    GatewayTls {
        frontend: spec
            .frontend
            .as_ref()
            .map(|f| frontend(problems, &field.at("frontend"), f, own)),
        backend_client_certificate: spec
            .backend
            .as_ref()
            .and_then(|b| b.client_certificate_ref.as_ref())
            .map(|r| {
                object_ref(
                    problems,
                    &field.at("backend").at("clientCertificateRef"),
                    r,
                    own,
                    Some("Secret"),
                )
            }),
    }
}

fn frontend(
    problems: &mut Problems,
    field: &Field,
    spec: &FrontendTlsSpec,
    own: &str,
) -> FrontendTls {
    let default = match problems.required(&field.at("default"), spec.default.as_ref()) {
        Some(default) => default
            .validation
            .as_ref()
            .map(|v| validation(problems, &field.at("default").at("validation"), v, own)),
        None => None,
    };
    let per_port_field = field.at("perPort");
    let mut per_port: Vec<PerPortValidation> = Vec::new();
    for (i, entry) in problems
        .list(&per_port_field, &spec.per_port, 64)
        .iter()
        .enumerate()
    {
        let field = per_port_field.index(i);
        let port = problems
            .required(&field.at("port"), entry.port.as_ref())
            .and_then(|&p| problems.port(&field.at("port"), p))
            .unwrap_or(0);
        if per_port.iter().any(|other| other.port == port) {
            problems.add(
                &field.at("port"),
                format!("port {port} already has a TLS configuration; give each port one"),
            );
        }
        let validation = match problems.required(&field.at("tls"), entry.tls.as_ref()) {
            Some(tls) => tls
                .validation
                .as_ref()
                .map(|v| validation(problems, &field.at("tls").at("validation"), v, own)),
            None => None,
        };
        per_port.push(PerPortValidation { port, validation });
    }
    FrontendTls { default, per_port }
}

fn validation(
    problems: &mut Problems,
    field: &Field,
    spec: &FrontendValidationSpec,
    own: &str,
) -> FrontendValidation {
    let refs_field = field.at("caCertificateRefs");
    if spec.ca_certificate_refs.as_ref().is_none_or(Vec::is_empty) {
        problems.add(
            &refs_field,
            "missing; client certificate validation needs at least one CA certificate",
        );
    }
    let ca_certificate_refs = problems
        .list(&refs_field, &spec.ca_certificate_refs, 16)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let field = refs_field.index(i);
            if r.group.is_none() {
                problems.add(
                    &field.at("group"),
                    "missing; this field is required (\"\" for the core group)",
                );
            }
            object_ref(problems, &field, r, own, None)
        })
        .collect();
    let mode = match spec.mode.as_deref().map(|m| {
        problems.one_of(
            &field.at("mode"),
            m,
            &["AllowValidOnly", "AllowInsecureFallback"],
        )
    }) {
        Some(Some("AllowInsecureFallback")) => FrontendValidationMode::AllowInsecureFallback,
        _ => FrontendValidationMode::AllowValidOnly,
    };
    FrontendValidation {
        ca_certificate_refs,
        mode,
    }
}
