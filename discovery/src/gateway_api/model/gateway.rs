//! A Gateway: its class, listeners, addresses and TLS settings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{GroupKind, LabelSelector, LocalObjectRef, ObjectRef, Rejection};
use crate::model::Labels;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`, for status' `observedGeneration` (absent in hand-written files).
    pub generation: Option<i64>,
    /// e.g. `istio.io/waypoint-for`.
    pub labels: Labels,
    pub class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    pub infrastructure: Option<Infrastructure>,
    pub tls: Option<GatewayTls>,
    /// Which namespaces' ListenerSets may attach (`allowedListeners`); default none.
    pub allowed_listeners: RouteNamespaces,
    /// Set when the Gateway does not follow the schema: it is not to be programmed.
    pub rejected: Option<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    /// Only requests (or SNI) for this host, `*.example.com` for a wildcard; all when `None`.
    pub hostname: Option<String>,
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub tls: Option<ListenerTls>,
    pub allowed_routes: AllowedRoutes,
}

/// A listener's protocol; others are kept as written so the controller can report them as
/// `UnsupportedProtocol` on that listener rather than refusing the whole Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ListenerProtocol {
    Http,
    Https,
    Tls,
    Tcp,
    Udp,
    Other(String),
}

impl ListenerProtocol {
    pub fn parse(value: &str) -> Self {
        match value {
            "HTTP" => ListenerProtocol::Http,
            "HTTPS" => ListenerProtocol::Https,
            "TLS" => ListenerProtocol::Tls,
            "TCP" => ListenerProtocol::Tcp,
            "UDP" => ListenerProtocol::Udp,
            other => ListenerProtocol::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// Default `Terminate`.
    pub mode: TlsMode,
    /// Secrets by default (`group: ""`, `kind: Secret`); others are kept for the controller to
    /// report as `InvalidCertificateRef`.
    pub certificate_refs: Vec<ObjectRef>,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsMode {
    Terminate,
    Passthrough,
}

/// Which routes may attach to a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// Default `Same`.
    pub namespaces: RouteNamespaces,
    /// Empty: the kinds that fit the listener's protocol.
    pub kinds: Vec<GroupKind>,
}

/// `from` of `allowedRoutes.namespaces` (and of `allowedListeners.namespaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RouteNamespaces {
    All,
    Same,
    /// Namespaces whose labels the selector matches.
    Selector(LabelSelector),
    /// Only for `allowedListeners`: no ListenerSet may attach.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// Default `IPAddress`.
    pub address_type: AddressType,
    /// May be absent: the implementation then picks one.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AddressType {
    IpAddress,
    Hostname,
    NamedAddress,
    /// A domain-prefixed, implementation-specific type, kept for `UnsupportedAddress` status.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Infrastructure {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub parameters_ref: Option<LocalObjectRef>,
}

/// `spec.tls`: client certificate validation on the frontend, the client certificate towards
/// backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTls {
    pub frontend: Option<FrontendTls>,
    pub backend_client_certificate: Option<ObjectRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendTls {
    pub default: Option<FrontendValidation>,
    pub per_port: Vec<PerPortValidation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PerPortValidation {
    pub port: u16,
    pub validation: Option<FrontendValidation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendValidation {
    /// CA certificates (ConfigMaps or Secrets) that client certificates must chain to.
    pub ca_certificate_refs: Vec<ObjectRef>,
    /// Default `AllowValidOnly`.
    pub mode: FrontendValidationMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FrontendValidationMode {
    AllowValidOnly,
    AllowInsecureFallback,
}
