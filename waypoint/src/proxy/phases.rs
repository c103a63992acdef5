//! The phases before and after forwarding: match, request filters (a redirect or a CORS
//! preflight answers here), backend choice, response filters. Each reads the request and the
//! configuration it started with; only `forward` does I/O.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::forward;
use super::headers;
use super::{Downstream, Proxy};
use crate::access_log::RequestLog;
use crate::authz;
use crate::destination::Target;
use crate::endpoints::ForwardTarget;
use crate::error::ProxyError;
use crate::filters::{Cors, Filter, HeaderEdits, MirrorTarget, RedirectInput};
use crate::routes::{BackendTarget, RequestFacts, RouteId, RouteMatch};
use crate::state::Compiled;
use crate::upstream::Body;

/// What the request filters leave for later phases.
#[derive(Default)]
struct Deferred<'a> {
    response_edits: Vec<&'a HeaderEdits>,
    cors: Option<&'a Cors>,
    mirrors: Vec<&'a MirrorTarget>,
}

pub(super) async fn serve(
    proxy: &Arc<Proxy>,
    compiled: &Arc<Compiled>,
    downstream: &Arc<Downstream>,
    request: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let grpc = headers::is_grpc(&parts.headers);

    // Authorize first: a denial wins over a 404, and no filter can change what was checked.
    authorize(proxy, compiled, downstream, &parts)?;

    // Match.
    let matched = match_route(compiled, downstream, &parts, grpc)?;
    if let Some(matched) = &matched {
        log.set_route(
            matched.rule.route.to_string(),
            matched.rule.rule_name.as_deref(),
        );
    }

    // Request filters / redirect.
    let mut deferred = Deferred::default();
    if let Some(matched) = &matched {
        let rule = matched.rule;
        if let Some(answer) = apply_request_filters(
            &rule.filters,
            matched.matched_prefix,
            &mut parts,
            &mut deferred,
            &rule.route,
        )? {
            return Ok(answer);
        }
    }

    // Pick a backend (weights), then its own filters.
    let target = match &matched {
        None => ForwardTarget::addressed(&downstream.destination),
        Some(matched) => {
            let rule = matched.rule;
            let backend =
                rule.pick_backend(rand::random())
                    .ok_or_else(|| ProxyError::NoBackends {
                        route: rule.route.to_string(),
                    })?;
            let target = match &backend.target {
                BackendTarget::Service { key, port } => ForwardTarget::Service {
                    key: key.clone(),
                    port: *port,
                },
                BackendTarget::Invalid(problem) => {
                    return Err(ProxyError::InvalidBackend {
                        route: rule.route.to_string(),
                        problem: problem.to_string(),
                    })
                }
            };
            if let Some(answer) = apply_request_filters(
                &backend.filters,
                matched.matched_prefix,
                &mut parts,
                &mut deferred,
                &rule.route,
            )? {
                return Ok(answer);
            }
            target
        }
    };
    log.set_upstream_service(super::forward_target_name(&target));

    // Forward.
    let cors_request_headers = deferred.cors.map(|_| parts.headers.clone());
    let rule = matched.as_ref().map(|m| m.rule);
    let mut response = forward::forward(
        proxy,
        compiled,
        downstream,
        target,
        parts,
        body,
        rule,
        &deferred.mirrors,
        log,
    )
    .await?;

    // Response filters.
    for edits in deferred.response_edits {
        edits.apply(response.headers_mut());
    }
    if let (Some(cors), Some(request_headers)) = (deferred.cors, cors_request_headers) {
        cors.decorate(&request_headers, response.headers_mut());
    }
    Ok(response)
}

/// The waypoint's L7 AuthorizationPolicies (`targetRefs` to its Gateway, its class, or the
/// Service) for this request.
fn authorize(
    proxy: &Proxy,
    compiled: &Compiled,
    downstream: &Downstream,
    parts: &Parts,
) -> Result<(), ProxyError> {
    let authority = headers::authority(&parts.uri, &parts.headers).unwrap_or_default();
    let (host, _) = headers::split_host_port(&authority);
    let (policies, destination_port) = proxy.policies_for(compiled, &downstream.destination);
    let decision = authz::authorize(
        policies,
        &authz::L7Request {
            source_identity: Some(&downstream.peer_identity),
            source_ip: downstream.peer_addr.ip(),
            method: &parts.method,
            path: parts.uri.path(),
            host,
            destination_port,
            headers: &parts.headers,
        },
    );
    if decision.is_allowed() {
        return Ok(());
    }
    Err(ProxyError::Denied {
        reason: decision.to_string(),
    })
}

/// The rule for this request; `None` when no route attaches to the destination (it is then
/// served as addressed). Routes attach to Services only: a pod dialled by address has none.
fn match_route<'a>(
    compiled: &'a Compiled,
    downstream: &Downstream,
    parts: &Parts,
    grpc: bool,
) -> Result<Option<RouteMatch<'a>>, ProxyError> {
    let Target::Service { key, port } = &downstream.destination.target else {
        return Ok(None);
    };
    let client_namespace = Some(downstream.peer_identity.namespace());
    let Some(routes) = compiled.routes.service_routes(key, *port, client_namespace) else {
        return Ok(None);
    };
    let facts = RequestFacts {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        grpc,
    };
    routes
        .find(&facts)
        .map(Some)
        .ok_or_else(|| ProxyError::NoMatchingRoute {
            service: key.to_string(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
        })
}

/// Applies `filters` in order. Returns the answer when one of them answers the request itself
/// (a redirect, a CORS preflight).
fn apply_request_filters<'a>(
    filters: &'a [Filter],
    matched_prefix: Option<&str>,
    parts: &mut Parts,
    deferred: &mut Deferred<'a>,
    route: &RouteId,
) -> Result<Option<Response<Body>>, ProxyError> {
    for filter in filters {
        match filter {
            Filter::RequestHeaders(edits) => edits.apply(&mut parts.headers),
            Filter::ResponseHeaders(edits) => deferred.response_edits.push(edits),
            Filter::Rewrite(rewrite) => rewrite.rewrite(parts, matched_prefix),
            Filter::Mirror(mirror) => {
                if mirror.should_mirror(rand::random()) {
                    deferred.mirrors.push(mirror);
                }
            }
            Filter::Cors(cors) => {
                if let Some(preflight) = cors.preflight(&parts.headers, &parts.method) {
                    return Ok(Some(preflight.map(|()| empty())));
                }
                deferred.cors = Some(cors);
            }
            Filter::Redirect(redirect) => {
                let authority = headers::authority(&parts.uri, &parts.headers).unwrap_or_default();
                let (host, port) = headers::split_host_port(&authority);
                let input = RedirectInput {
                    // Inside the mesh the waypoint receives plaintext HTTP in the tunnel.
                    scheme: "http",
                    host,
                    port,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                };
                let (status, location) = redirect.redirect(&input, matched_prefix);
                let mut response = Response::new(empty());
                *response.status_mut() = status;
                response.headers_mut().insert(header::LOCATION, location);
                return Ok(Some(response));
            }
            Filter::Unsupported(why) => {
                return Err(ProxyError::UnsupportedFilter {
                    route: route.to_string(),
                    filter: why.clone(),
                })
            }
        }
    }
    Ok(None)
}

pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// The client's answer for a failed request: the status and Envoy's short body, or for gRPC
/// clients a trailers-only response with the mapped `grpc-status`.
pub fn respond_with_error(error: &ProxyError, grpc: bool) -> Response<Body> {
    if grpc {
        let mut response = Response::new(empty());
        let headers: &mut HeaderMap = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(error.grpc_status())),
        );
        if let Ok(message) = HeaderValue::from_str(error.body()) {
            headers.insert("grpc-message", message);
        }
        return response;
    }
    let mut response = Response::new(full(error.body()));
    *response.status_mut() = error.status();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
