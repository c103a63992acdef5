//! Gateway API objects → the [`model`](super::model), validated against the v1.6.1 schema.
//!
//! Every kind goes the same way: the metadata must be readable (an object without a name cannot
//! be reported on, so that is an error like for any other kind); then the spec is decoded and
//! checked, collecting every problem with its field path. An object with problems is still
//! returned, marked rejected with all of them — Gateway API semantics: the controller reports it
//! as `Accepted=False` and no proxy serves it. A spec that does not even decode is rejected the
//! same way, with the parentRefs still read where possible so its status can name its parents.

mod check;
mod common;
mod filters;
mod gateway;
mod grpc;
mod http;
mod stream;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use self::check::{Field, Problems, DNS_SUBDOMAIN};
use super::model::{
    FieldProblem, Gateway, GrpcRoute, HttpRoute, ParentRef, ReferenceGrant, Rejection,
    RouteNamespaces, TcpRoute, TlsRoute,
};
use super::resource::{
    GatewaySpec, GrpcRouteSpec, HttpRouteSpec, ReferenceGrantSpec, Resource, RouteHead,
    StreamRouteSpec,
};
use crate::convert::{name, namespace_of, ConvertError};
use crate::raw::Raw;

/// What the source knows about one object beyond its content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    /// `apiVersion kind`, for decode errors.
    pub schema: &'a str,
    /// The object's version (`v1`, `v1alpha2`, …): some rules differ between versions.
    pub version: &'a str,
    /// Set when the object is of a version Ambit does not read: it is rejected with this.
    pub unsupported: Option<&'a ConvertError>,
}

/// Name, namespace and generation: what every object needs before anything else.
struct Meta {
    namespace: String,
    name: String,
    generation: Option<i64>,
    labels: crate::model::Labels,
}

#[derive(Deserialize)]
struct MetaOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

fn meta(raw: &Raw, source: &Source<'_>) -> Result<Meta, ConvertError> {
    let MetaOnly { metadata } = raw.decode(source.schema)?;
    Ok(Meta {
        name: name(&metadata)?.to_owned(),
        namespace: namespace_of(&metadata),
        generation: metadata.generation,
        labels: metadata.labels.clone().unwrap_or_default(),
    })
}

/// Decodes and converts one object with `build`; a problem anywhere makes it rejected.
fn convert<S: DeserializeOwned + Default, T>(
    raw: &Raw,
    source: &Source<'_>,
    build: impl FnOnce(&mut Problems, &Meta, &S) -> T,
    reject: impl FnOnce(T, Rejection) -> T,
) -> Result<T, ConvertError> {
    let meta = meta(raw, source)?;
    let mut problems = Problems::default();
    let spec: S = if let Some(unsupported) = source.unsupported {
        problems.add(
            &Field::root(&unsupported.field),
            unsupported.problem.clone(),
        );
        lenient_spec(raw)
    } else {
        match raw.decode::<Resource<S>>(source.schema) {
            Ok(Resource {
                spec: Some(spec), ..
            }) => spec,
            Ok(Resource { spec: None, .. }) => {
                problems.add(&Field::root("spec"), "missing; this field is required");
                S::default()
            }
            Err(error) => {
                problems.add(&Field::root(&error.field), error.problem);
                lenient_spec(raw)
            }
        }
    };
    let object = build(&mut problems, &meta, &spec);
    let problems = problems.into_vec();
    Ok(if problems.is_empty() {
        object
    } else {
        reject(object, Rejection { problems })
    })
}

/// What can be read of a spec that does not decode as a whole: its parentRefs, so the
/// controller can still report the route as not accepted on each of its parents.
fn lenient_spec<S: DeserializeOwned + Default>(raw: &Raw) -> S {
    let parent_refs = raw
        .decode::<RouteHead>("")
        .ok()
        .and_then(|head| head.spec)
        .and_then(|spec| spec.parent_refs);
    let Some(parent_refs) = parent_refs else {
        return S::default();
    };
    // Re-decoded as the kind's own spec so that routes of every kind get them.
    let value = serde_json::json!({ "parentRefs": serde_json::to_value(
        parent_refs.iter().map(|p| serde_json::json!({
            "group": p.group, "kind": p.kind, "namespace": p.namespace, "name": p.name,
            "sectionName": p.section_name, "port": p.port,
        })).collect::<Vec<_>>()
    ).unwrap_or_default() });
    Raw::Json(value).decode::<S>("").unwrap_or_default()
}

/// A rule's optional name (a DNS subdomain).
fn rule_name(problems: &mut Problems, field: &Field, name: &Option<String>) -> Option<String> {
    let name = name.as_ref()?;
    problems.pattern(field, name, &DNS_SUBDOMAIN);
    Some(name.clone())
}

fn parent_refs(
    problems: &mut Problems,
    refs: &Option<Vec<super::resource::ParentRefSpec>>,
    own: &str,
) -> Vec<ParentRef> {
    common::parent_refs(problems, &Field::root("spec").at("parentRefs"), refs, own)
}

pub(crate) fn gateway(raw: &Raw, source: &Source<'_>) -> Result<Gateway, ConvertError> {
    let spec_field = Field::root("spec");
    convert(
        raw,
        source,
        |problems, meta, spec: &GatewaySpec| {
            let class_name = problems
                .required(
                    &spec_field.at("gatewayClassName"),
                    spec.gateway_class_name.as_ref(),
                )
                .cloned()
                .unwrap_or_default();
            if spec.gateway_class_name.is_some()
                && (class_name.is_empty() || class_name.len() > 253)
            {
                problems.add(
                    &spec_field.at("gatewayClassName"),
                    "must be 1 to 253 characters",
                );
            }
            let own = &meta.namespace;
            Gateway {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                generation: meta.generation,
                labels: meta.labels.clone(),
                class_name,
                listeners: gateway::listeners(
                    problems,
                    &spec_field.at("listeners"),
                    &spec.listeners,
                    own,
                ),
                addresses: gateway::addresses(
                    problems,
                    &spec_field.at("addresses"),
                    &spec.addresses,
                ),
                infrastructure: spec.infrastructure.as_ref().map(|i| {
                    gateway::infrastructure(problems, &spec_field.at("infrastructure"), i)
                }),
                tls: spec
                    .tls
                    .as_ref()
                    .map(|t| gateway::tls(problems, &spec_field.at("tls"), t, own)),
                allowed_listeners: match spec.allowed_listeners.as_ref() {
                    Some(allowed) => gateway::route_namespaces(
                        problems,
                        &spec_field.at("allowedListeners").at("namespaces"),
                        allowed.namespaces.as_ref(),
                        "None",
                        &["All", "Selector", "Same", "None"],
                    ),
                    None => RouteNamespaces::None,
                },
                rejected: None,
            }
        },
        |mut gateway, rejection| {
            gateway.rejected = Some(rejection);
            gateway
        },
    )
}

pub(crate) fn http_route(raw: &Raw, source: &Source<'_>) -> Result<HttpRoute, ConvertError> {
    let spec_field = Field::root("spec");
    convert(
        raw,
        source,
        |problems, meta, spec: &HttpRouteSpec| HttpRoute {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            generation: meta.generation,
            parent_refs: parent_refs(problems, &spec.parent_refs, &meta.namespace),
            hostnames: common::hostnames(
                problems,
                &spec_field.at("hostnames"),
                &spec.hostnames,
                16,
            ),
            rules: http::rules(
                problems,
                &spec_field.at("rules"),
                &spec.rules,
                &meta.namespace,
            ),
            rejected: None,
        },
        |mut route, rejection| {
            route.rules.clear();
            route.rejected = Some(rejection);
            route
        },
    )
}

pub(crate) fn grpc_route(raw: &Raw, source: &Source<'_>) -> Result<GrpcRoute, ConvertError> {
    let spec_field = Field::root("spec");
    convert(
        raw,
        source,
        |problems, meta, spec: &GrpcRouteSpec| GrpcRoute {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            generation: meta.generation,
            parent_refs: parent_refs(problems, &spec.parent_refs, &meta.namespace),
            hostnames: common::hostnames(
                problems,
                &spec_field.at("hostnames"),
                &spec.hostnames,
                16,
            ),
            rules: grpc::rules(
                problems,
                &spec_field.at("rules"),
                &spec.rules,
                &meta.namespace,
            ),
            rejected: None,
        },
        |mut route, rejection| {
            route.rules.clear();
            route.rejected = Some(rejection);
            route
        },
    )
}

/// Rules per stream route: one from v1 (and v1alpha3) on, sixteen in v1alpha2.
fn max_stream_rules(version: &str) -> usize {
    if version == "v1alpha2" {
        16
    } else {
        1
    }
}

pub(crate) fn tls_route(raw: &Raw, source: &Source<'_>) -> Result<TlsRoute, ConvertError> {
    let spec_field = Field::root("spec");
    let version = source.version;
    convert(
        raw,
        source,
        |problems, meta, spec: &StreamRouteSpec| {
            let hostnames_field = spec_field.at("hostnames");
            // v1 and v1alpha3 require SNI names, and never IP addresses.
            if version != "v1alpha2" && spec.hostnames.as_ref().is_none_or(Vec::is_empty) {
                problems.add(
                    &hostnames_field,
                    "missing; a TLSRoute selects connections by SNI, give at least one hostname",
                );
            }
            let hostnames = common::hostnames(problems, &hostnames_field, &spec.hostnames, 1024);
            for (i, hostname) in hostnames.iter().enumerate() {
                if hostname.parse::<std::net::IpAddr>().is_ok() {
                    problems.add(
                        &hostnames_field.index(i),
                        format!("{hostname:?} is an IP address; SNI names are hostnames"),
                    );
                }
            }
            TlsRoute {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                generation: meta.generation,
                parent_refs: parent_refs(problems, &spec.parent_refs, &meta.namespace),
                hostnames,
                rules: stream::rules(
                    problems,
                    &spec_field.at("rules"),
                    &spec.rules,
                    max_stream_rules(version),
                    &meta.namespace,
                ),
                rejected: None,
            }
        },
        |mut route, rejection| {
            route.rules.clear();
            route.rejected = Some(rejection);
            route
        },
    )
}

pub(crate) fn tcp_route(raw: &Raw, source: &Source<'_>) -> Result<TcpRoute, ConvertError> {
    let spec_field = Field::root("spec");
    let version = source.version;
    convert(
        raw,
        source,
        |problems, meta, spec: &StreamRouteSpec| {
            if spec.hostnames.is_some() {
                problems.add(&spec_field.at("hostnames"), "TCPRoutes have no hostnames (TCP carries none); use a TLSRoute to route by SNI");
            }
            TcpRoute {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                generation: meta.generation,
                parent_refs: parent_refs(problems, &spec.parent_refs, &meta.namespace),
                rules: stream::rules(
                    problems,
                    &spec_field.at("rules"),
                    &spec.rules,
                    max_stream_rules(version),
                    &meta.namespace,
                ),
                rejected: None,
            }
        },
        |mut route, rejection| {
            route.rules.clear();
            route.rejected = Some(rejection);
            route
        },
    )
}

pub(crate) fn reference_grant(
    raw: &Raw,
    source: &Source<'_>,
) -> Result<ReferenceGrant, ConvertError> {
    convert(
        raw,
        source,
        |problems, meta, spec: &ReferenceGrantSpec| {
            let (from, to) = stream::grant(problems, &Field::root("spec"), spec);
            ReferenceGrant {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                from,
                to,
                rejected: None,
            }
        },
        |mut grant, rejection| {
            grant.from.clear();
            grant.to.clear();
            grant.rejected = Some(rejection);
            grant
        },
    )
}

/// The problems of a rejection as one [`ConvertError`] (the first field; every problem, the
/// others with their fields), for the sources' problem lists.
pub(crate) fn rejection_error(rejection: &Rejection) -> ConvertError {
    let mut problems = rejection.problems.iter();
    let (field, mut text) = match problems.next() {
        Some(first) => (first.field.clone(), first.problem.clone()),
        None => (String::new(), "rejected".to_owned()),
    };
    for FieldProblem { field, problem } in problems {
        text.push_str(&format!("; {field}: {problem}"));
    }
    text.push_str("; the object is kept as rejected (not accepted) until fixed");
    ConvertError::new(field, text)
}

#[cfg(test)]
#[path = "tests/mod.rs"]
mod tests;
