//! Kubernetes objects → the compact model.
//!
//! Every source funnels through these functions: the manifest loader after decoding YAML, and
//! (later) the Kubernetes API source for each object its reflectors deliver. They check what the
//! mesh relies on and report problems by field path, so that a source can add where the object
//! came from (file and document, or API object) and the operator knows what to fix.

mod fail_closed;
mod policy;
mod policy_l7;
mod service;
mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{self, Labels, WaypointBinding, DEFAULT_NAMESPACE};

pub use fail_closed::{authorization_policy_or_fail_closed, fail_closed, FailClosedScope};
pub use policy::{
    authorization_policy, AuthorizationPolicyResource, AuthorizationPolicySpec, RuleSpec,
    SelectorSpec, TargetRefSpec,
};
pub use service::{endpoint_slice, service};
pub use workload::workload;

/// A field of an object the mesh cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {problem}")]
pub struct ConvertError {
    /// Path from the object's root, e.g. `spec.ports[1].targetPort`.
    pub field: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

impl ConvertError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConvertError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Converts a Namespace.
pub fn namespace(ns: &core::Namespace) -> Result<model::Namespace, ConvertError> {
    let labels = labels(&ns.metadata);
    Ok(model::Namespace {
        name: name(&ns.metadata)?.to_owned(),
        use_waypoint: WaypointBinding::from_labels(&labels),
        labels,
    })
}

/// Converts a Secret, merging `stringData` over `data` as the API server does.
pub fn secret(secret: &core::Secret) -> Result<model::Secret, ConvertError> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        data.insert(key.clone(), value.clone().into_bytes());
    }
    Ok(model::Secret {
        name: name(&secret.metadata)?.to_owned(),
        namespace: namespace_of(&secret.metadata),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".to_owned()),
        data,
    })
}

/// `metadata.name`, which every object the mesh keeps must have.
pub(crate) fn name(meta: &ObjectMeta) -> Result<&str, ConvertError> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(ConvertError::new(
            "metadata.name",
            "missing; every object needs a name (generateName is not supported in manifests)",
        )),
    }
}

/// `metadata.namespace`, defaulting like `kubectl apply` does.
pub(crate) fn namespace_of(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns.to_owned(),
        _ => DEFAULT_NAMESPACE.to_owned(),
    }
}

pub(crate) fn labels(meta: &ObjectMeta) -> Labels {
    meta.labels.clone().unwrap_or_default()
}

/// A port number from an `i32` API field, which must be 1..=65535.
pub(crate) fn port_number(field: impl Into<String>, value: i32) -> Result<u16, ConvertError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ConvertError::new(
            field,
            format!("port {value} is out of range; use a number from 1 to 65535"),
        )),
    }
}

pub(crate) fn protocol(
    field: impl Into<String>,
    value: Option<&str>,
) -> Result<model::Protocol, ConvertError> {
    model::Protocol::parse(value).ok_or_else(|| {
        ConvertError::new(
            field,
            format!(
                "protocol {:?} is not one of TCP, UDP, SCTP",
                value.unwrap_or_default()
            ),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support {
    //! Builds k8s-openapi objects from YAML so conversion tests read like manifests.

    pub fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        serde_yaml::from_str(yaml).unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_support::from_yaml;
    use super::*;

    #[test]
    fn namespace_keeps_labels_and_waypoint() {
        let ns: core::Namespace = from_yaml(
            "metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp}}",
        );
        let ns = namespace(&ns).unwrap();
        assert_eq!(ns.name, "shop");
        assert_eq!(ns.labels.len(), 2);
        assert_eq!(ns.use_waypoint.unwrap().name, "wp");
    }

    #[test]
    fn secret_merges_string_data() {
        let s: core::Secret = from_yaml(
            "metadata: {name: tls, namespace: shop}\ntype: kubernetes.io/tls\ndata: {a: aGVsbG8=, b: eA==}\nstringData: {b: override}",
        );
        let s = secret(&s).unwrap();
        assert_eq!(s.type_, "kubernetes.io/tls");
        assert_eq!(s.data["a"], b"hello");
        assert_eq!(s.data["b"], b"override");

        let s: core::Secret = from_yaml("metadata: {name: plain}");
        let s = secret(&s).unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.type_.as_str()),
            ("default", "Opaque")
        );
    }

    #[test]
    fn missing_name_is_reported() {
        let ns: core::Namespace = from_yaml("metadata: {labels: {a: b}}");
        assert_eq!(namespace(&ns).unwrap_err().field, "metadata.name");
    }

    #[test]
    fn port_numbers_are_range_checked() {
        assert_eq!(port_number("p", 80).unwrap(), 80);
        for bad in [0, -1, 65536] {
            let err = port_number("spec.ports[0].port", bad).unwrap_err();
            assert!(err.problem.contains("1 to 65535"), "{err}");
        }
    }
}
