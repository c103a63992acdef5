//! Each kind's entry in the table: decode the object as the kind's type and convert it with the
//! functions of [`crate::convert`] and [`crate::gateway_api`], which both sources share.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;

use super::input::{Input, Origin, Problem};
use super::object::Object;
use crate::convert::{self as shared, AuthorizationPolicyResource, ConvertError, FailClosedScope};
use crate::gateway_api::convert::{self as gateway_api, Source};

/// Decodes a typed object; a version Ambit does not read is an error for these kinds.
fn typed<T: DeserializeOwned>(input: &Input<'_>) -> Result<T, Problem> {
    if let Some(error) = &input.unsupported_version {
        return Err(Problem::Invalid(error.clone()));
    }
    input.raw.decode(&input.schema()).map_err(Problem::Invalid)
}

pub(super) fn namespace(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let namespace: core::Namespace = typed(input)?;
    let namespace = shared::namespace(&namespace).map_err(Problem::Invalid)?;
    Ok(Some(Object::Namespace(namespace)))
}

pub(super) fn pod(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let pod: core::Pod = typed(input)?;
    if input.origin == Origin::Kubernetes && !on_a_node_and_running(&pod) {
        return Ok(None);
    }
    let workload = shared::workload(&pod).map_err(Problem::Invalid)?;
    Ok(Some(Object::Workload(workload)))
}

/// From the API server, Pods that are not scheduled yet (no IP, no node's ztunnel cares) and
/// finished Pods (their IPs are free for reuse) are not the mesh's; the watch's field selector
/// filters them already, this covers an update racing the selector. A manifest has no scheduler,
/// so there a Pod without a node is an error (`convert::workload` says so).
fn on_a_node_and_running(pod: &core::Pod) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|node| !node.is_empty());
    let finished = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    scheduled && !finished
}

pub(super) fn service(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let service: core::Service = typed(input)?;
    let service = shared::service(&service).map_err(Problem::Invalid)?;
    Ok(Some(Object::Service(service)))
}

pub(super) fn endpoint_slice(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    // The v1 type checks its apiVersion; the v1beta1 shape (`topology` instead of
    // `nodeName`/`zone`, both unread) decodes into it once relabelled.
    let v1 = <discovery::EndpointSlice as k8s_openapi::Resource>::API_VERSION;
    let slice: discovery::EndpointSlice = if input.api_version == v1 {
        typed(input)?
    } else {
        let relabelled = input.raw.with_api_version(v1);
        typed(&Input {
            raw: &relabelled,
            unsupported_version: input.unsupported_version.clone(),
            ..*input
        })?
    };
    let slice = shared::endpoint_slice(&slice).map_err(Problem::Invalid)?;
    Ok(slice.map(Object::EndpointSlice))
}

pub(super) fn secret(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let secret: core::Secret = typed(input)?;
    let secret = shared::secret(&secret).map_err(Problem::Invalid)?;
    Ok(Some(Object::Secret(secret)))
}

/// An AuthorizationPolicy that cannot be understood — wrong version, undecodable, or invalid —
/// is kept in its fail-closed form, or left out when it cannot change access (AUDIT): dropping
/// it would open what it guards.
pub(super) fn authorization_policy(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let decoded: Result<AuthorizationPolicyResource, ConvertError> =
        match &input.unsupported_version {
            Some(error) => Err(error.clone()),
            None => input.raw.decode(&input.schema()),
        };
    let scope = FailClosedScope {
        root_namespace: input.root_namespace,
        unnamed: input.unnamed,
    };
    shared::authorization_policy_or_fail_closed(decoded, || input.raw.to_yaml(), &scope)
        .map(|policy| Some(Object::Policy(policy)))
        .map_err(Problem::LeftOut)
}

/// What the Gateway API conversions need to know of the source.
fn source<'a>(input: &'a Input<'_>, schema: &'a str) -> Source<'a> {
    Source {
        schema,
        version: input.version(),
        unsupported: input.unsupported_version.as_ref(),
    }
}

pub(super) fn gateway(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let gateway =
        gateway_api::gateway(input.raw, &source(input, &schema)).map_err(Problem::Invalid)?;
    Ok(Some(Object::Gateway(Box::new(gateway))))
}

pub(super) fn http_route(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let route =
        gateway_api::http_route(input.raw, &source(input, &schema)).map_err(Problem::Invalid)?;
    Ok(Some(Object::HttpRoute(route)))
}

pub(super) fn grpc_route(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let route =
        gateway_api::grpc_route(input.raw, &source(input, &schema)).map_err(Problem::Invalid)?;
    Ok(Some(Object::GrpcRoute(route)))
}

pub(super) fn tls_route(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let route =
        gateway_api::tls_route(input.raw, &source(input, &schema)).map_err(Problem::Invalid)?;
    Ok(Some(Object::TlsRoute(route)))
}

pub(super) fn tcp_route(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let route =
        gateway_api::tcp_route(input.raw, &source(input, &schema)).map_err(Problem::Invalid)?;
    Ok(Some(Object::TcpRoute(route)))
}

pub(super) fn reference_grant(input: &Input<'_>) -> Result<Option<Object>, Problem> {
    let schema = input.schema();
    let grant = gateway_api::reference_grant(input.raw, &source(input, &schema))
        .map_err(Problem::Invalid)?;
    Ok(Some(Object::ReferenceGrant(grant)))
}
