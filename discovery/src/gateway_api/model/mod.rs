//! The Gateway API objects as the mesh keeps them: typed, defaults applied (DESIGN §6: the API
//! server's CRD defaulting is not assumed), references resolved to a namespace, and every object
//! either valid or marked [`Rejection`] with why.
//!
//! A rejected object stays in the snapshot so that the controller can write `Accepted=False` with
//! the reason; what could be read for its status (names, parentRefs, listeners) is kept, but a
//! rejected route keeps no rules and a rejected ReferenceGrant grants nothing, so no proxy can
//! serve from either.

mod gateway;
mod grpc;
mod http;
mod reference_grant;
mod stream;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

pub use gateway::{
    AddressType, AllowedRoutes, FrontendTls, FrontendValidation, FrontendValidationMode, Gateway,
    GatewayAddress, GatewayTls, Infrastructure, Listener, ListenerProtocol, ListenerTls,
    PerPortValidation, RouteNamespaces, TlsMode,
};
pub use grpc::{GrpcBackend, GrpcFilter, GrpcMatch, GrpcMethodMatch, GrpcRoute, GrpcRule};
pub use http::{
    Cors, HeaderModifier, HeaderValue, HttpBackend, HttpFilter, HttpMatch, HttpRoute, HttpRule,
    Mirror, MirrorFraction, PathMatch, PathModifier, Redirect, Retry, Timeout, Timeouts,
    UrlRewrite,
};
pub use reference_grant::{GrantFrom, GrantTo, ReferenceGrant};
pub use stream::{StreamRule, TcpRoute, TlsRoute};

use crate::model::Labels;

/// The Gateway API's own group: the default group of parentRefs and of allowed route kinds.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// Why an object cannot be used; never empty. Each problem names its field path from the object's
/// root, e.g. `spec.rules[0].matches[1].path.value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub problems: Vec<FieldProblem>,
}

/// One field of an object that does not follow the Gateway API schema, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", problem.field, problem.problem)?;
        }
        Ok(())
    }
}

/// A route's `parentRefs[]` entry: the Gateway (or, for GAMMA, the Service) it attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Default `gateway.networking.k8s.io`; `""` is the core group (a Service parent).
    pub group: String,
    /// Default `Gateway`.
    pub kind: String,
    /// The route's own namespace when the manifest names none.
    pub namespace: String,
    pub name: String,
    /// A listener name of the parent (or a port name of a Service).
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

/// A reference to a backend: a Service port unless `group`/`kind` say otherwise (kept as written so
/// the controller can report an unsupported kind as `ResolvedRefs=False`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Default `""` (the core group).
    pub group: String,
    /// Default `Service`.
    pub kind: String,
    /// The route's own namespace when the manifest names none (crossing namespaces needs a
    /// ReferenceGrant).
    pub namespace: String,
    pub name: String,
    /// Required for Services (the schema refuses a Service reference without one).
    pub port: Option<u16>,
    /// Share of traffic relative to the rule's other backends; default 1, 0 means none.
    pub weight: u32,
}

/// A reference to an object in another place, e.g. a listener's certificate Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub group: String,
    pub kind: String,
    /// The referring object's namespace when the manifest names none.
    pub namespace: String,
    pub name: String,
}

/// A reference to an object in the referrer's own namespace (extensionRef, parametersRef).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// A route kind a listener accepts (`allowedRoutes.kinds[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupKind {
    /// Default `gateway.networking.k8s.io`.
    pub group: String,
    pub kind: String,
}

/// How a header, query parameter or gRPC name is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    /// Checked to compile with the `regex` crate, the engine's syntax.
    RegularExpression(String),
}

/// A header (or gRPC metadata) match; names compare case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// A query parameter match; names compare exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all of which must hold).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<LabelExpression>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelExpression {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement; an empty selector selects everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let by_label = self
            .match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
        by_label
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// Durations print as Gateway API writes them (`500ms`, `1h30m`), not as `{secs, nanos}`.
pub(crate) fn serialize_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// [`serialize_duration`] for optional durations.
pub(crate) fn serialize_optional_duration<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serialize_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_need_every_requirement() {
        let labels: Labels = [("team".to_owned(), "a".to_owned())].into();
        let expression = |operator, values: &[&str]| LabelSelector {
            match_labels: Labels::new(),
            match_expressions: vec![LabelExpression {
                key: "team".into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        };
        assert!(LabelSelector::default().matches(&labels));
        assert!(expression(SelectorOperator::In, &["a", "b"]).matches(&labels));
        assert!(!expression(SelectorOperator::NotIn, &["a"]).matches(&labels));
        assert!(expression(SelectorOperator::Exists, &[]).matches(&labels));
        assert!(!expression(SelectorOperator::DoesNotExist, &[]).matches(&labels));
        let mut both = expression(SelectorOperator::Exists, &[]);
        both.match_labels.insert("team".into(), "b".into());
        assert!(!both.matches(&labels), "matchLabels must hold too");
    }

    #[test]
    fn a_rejection_lists_every_field() {
        let rejection = Rejection {
            problems: vec![
                FieldProblem {
                    field: "spec.hostnames[0]".into(),
                    problem: "bad".into(),
                },
                FieldProblem {
                    field: "spec.rules[1].name".into(),
                    problem: "worse".into(),
                },
            ],
        };
        assert_eq!(
            rejection.to_string(),
            "spec.hostnames[0]: bad; spec.rules[1].name: worse"
        );
    }
}
