//! Gateway as written.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{LabelSelectorSpec, LocalObjectRefSpec, ObjectRefSpec};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewaySpec {
    pub gateway_class_name: Option<String>,
    pub listeners: Option<Vec<ListenerSpec>>,
    pub addresses: Option<Vec<GatewayAddressSpec>>,
    pub infrastructure: Option<InfrastructureSpec>,
    pub tls: Option<GatewayTlsSpec>,
    pub allowed_listeners: Option<AllowedListenersSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenerSpec {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
    pub tls: Option<ListenerTlsSpec>,
    pub allowed_routes: Option<AllowedRoutesSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListenerTlsSpec {
    pub mode: Option<String>,
    pub certificate_refs: Option<Vec<ObjectRefSpec>>,
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AllowedRoutesSpec {
    pub namespaces: Option<RouteNamespacesSpec>,
    pub kinds: Option<Vec<RouteGroupKindSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteNamespacesSpec {
    pub from: Option<String>,
    pub selector: Option<LabelSelectorSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RouteGroupKindSpec {
    pub group: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AllowedListenersSpec {
    pub namespaces: Option<RouteNamespacesSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayAddressSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InfrastructureSpec {
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub parameters_ref: Option<LocalObjectRefSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GatewayTlsSpec {
    pub frontend: Option<FrontendTlsSpec>,
    pub backend: Option<BackendTlsSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FrontendTlsSpec {
    pub default: Option<FrontendTlsConfigSpec>,
    pub per_port: Option<Vec<PerPortTlsSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FrontendTlsConfigSpec {
    pub validation: Option<FrontendValidationSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PerPortTlsSpec {
    pub port: Option<i32>,
    pub tls: Option<FrontendTlsConfigSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FrontendValidationSpec {
    pub ca_certificate_refs: Option<Vec<ObjectRefSpec>>,
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackendTlsSpec {
    pub client_certificate_ref: Option<ObjectRefSpec>,
}
