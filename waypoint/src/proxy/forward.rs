//! Forwarding: endpoints of the chosen backend, the request body kept for replay when it is
//! small, mirrors, then attempts bounded by the route's timeouts and retry policy. Connect
//! failures (nothing reached the application) are always tried again at another endpoint;
//! statuses only when the route's `retry.codes` lists them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use discovery::gateway_api::Timeout;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};

use super::headers;
use super::upgrade;
use super::{Downstream, Proxy};
use crate::access_log::RequestLog;
use crate::endpoints::{endpoints, ForwardTarget};
use crate::error::ProxyError;
use crate::filters::MirrorTarget;
use crate::routes::{BackendTarget, Rule};
use crate::state::Compiled;
use crate::upstream::{Body, BoxError, Endpoint, UpstreamError};

/// Connect-failure retries when the route sets no retry policy: nothing reached the
/// application, so trying another endpoint is always safe.
const DEFAULT_CONNECT_RETRIES: u32 = 2;
/// Between attempts when the route sets no `retry.backoff` (Envoy's base interval).
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);
/// How long a mirrored request may take; its answer is ignored.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// The head of the request, kept to build each attempt.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// The request body: in memory when small enough to replay, else streamed once.
enum RequestBody {
    Replayable(Bytes),
    Streamed(Option<Incoming>),
}

impl RequestBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            RequestBody::Replayable(bytes) => Some(
                Full::new(bytes.clone())
                    .map_err(|never| match never {})
                    .boxed(),
            ),
            RequestBody::Streamed(body) => {
                body.take().map(|body| body.map_err(BoxError::from).boxed())
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    proxy: &Arc<Proxy>,
    compiled: &Arc<Compiled>,
    downstream: &Arc<Downstream>,
    target: ForwardTarget,
    mut parts: Parts,
    body: Incoming,
    rule: Option<&Rule>,
    mirrors: &[&MirrorTarget],
    log: &mut RequestLog,
) -> Result<Response<Body>, ProxyError> {
    let endpoints = endpoints(compiled, &target, &proxy.settings.trust_domain)?;
    let upgrade = headers::is_upgrade(&parts.headers) && parts.version == Version::HTTP_11;
    if upgrade {
        let endpoint = pick(proxy, &endpoints, &[])?;
        log.set_upstream(endpoint.addr);
        return upgrade::forward(proxy, downstream, endpoint, parts, body).await;
    }
    let authority = headers::authority(&parts.uri, &parts.headers)
        .unwrap_or_else(|| downstream.destination.authority.to_string());
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let head = Head {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    };
    let mut body = read_body(body, proxy.settings.retry_body_limit).await?;
    if let RequestBody::Replayable(bytes) = &body {
        for mirror in mirrors {
            mirror_request(
                proxy,
                compiled,
                downstream,
                mirror,
                &head,
                &authority,
                bytes.clone(),
            );
        }
    } else if !mirrors.is_empty() {
        tracing::debug!("request body too large to mirror; mirrors skipped");
    }

    let policy = AttemptPolicy::of(rule, proxy.settings.default_request_timeout);
    let work = attempts(
        proxy, downstream, &endpoints, &head, &authority, &mut body, &policy, log,
    );
    match policy.request_timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(ProxyError::Timeout {
                timeout: humantime::format_duration(limit).to_string(),
                which: "the route's timeouts.request",
            })
        }),
        None => work.await,
    }
}

/// The route's timeouts and retries, with our defaults.
struct AttemptPolicy {
    request_timeout: Option<Duration>,
    backend_timeout: Option<Duration>,
    /// Attempts after the first.
    retries: u32,
    retry_codes: Vec<u16>,
    backoff: Duration,
}

impl AttemptPolicy {
    fn of(rule: Option<&Rule>, default_request_timeout: Duration) -> AttemptPolicy {
        let timeouts = rule.map(|r| &r.timeouts);
        let limit = |timeout: Option<Timeout>| match timeout {
            Some(Timeout::Disabled) => None,
            Some(Timeout::After(duration)) => Some(duration),
            None => Some(default_request_timeout),
        };
        let request_timeout = limit(timeouts.and_then(|t| t.request));
        let backend_timeout = match timeouts.and_then(|t| t.backend_request) {
            Some(Timeout::After(duration)) => Some(duration),
            _ => None,
        };
        let retry = rule.and_then(|r| r.retry.as_ref());
        AttemptPolicy {
            request_timeout,
            backend_timeout,
            retries: retry
                .map(|r| r.attempts.unwrap_or(1))
                .unwrap_or(DEFAULT_CONNECT_RETRIES),
            retry_codes: retry.map(|r| r.codes.clone()).unwrap_or_default(),
            backoff: retry.and_then(|r| r.backoff).unwrap_or(DEFAULT_BACKOFF),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempts(
    proxy: &Arc<Proxy>,
    downstream: &Downstream,
    endpoints: &[Endpoint],
    head: &Head,
    authority: &str,
    body: &mut RequestBody,
    policy: &AttemptPolicy,
    log: &mut RequestLog,
) -> Result<Response<Body>, ProxyError> {
    let mut failed: Vec<SocketAddr> = Vec::new();
    let mut attempt = 0;
    loop {
        let endpoint = pick(proxy, endpoints, &failed)?;
        log.set_upstream(endpoint.addr);
        let Some(request_body) = body.take() else {
            return Err(ProxyError::UpstreamReset {
                endpoint: endpoint.addr.to_string(),
                reason: "the request body was already sent once and is too large to replay".into(),
            });
        };
        let mut request = Request::new(request_body);
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = head.uri.clone();
        *request.headers_mut() = head.headers.clone();
        headers::for_upstream(&mut request, endpoint.protocol, authority);

        let active = proxy.balancer.start(endpoint.addr);
        let sent = proxy
            .upstreams
            .send(endpoint, downstream.peer_addr, request);
        let outcome = match policy.backend_timeout {
            Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| limit),
            None => Ok(sent.await),
        };
        drop(active);
        let can_retry = attempt < policy.retries && matches!(body, RequestBody::Replayable(_));
        let error = match outcome {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                proxy
                    .balancer
                    .record(endpoint.addr, status >= 500, Instant::now());
                if can_retry && policy.retry_codes.contains(&status) {
                    tracing::debug!(status, endpoint = %endpoint.addr, attempt, "retrying: status listed in retry.codes");
                    attempt += 1;
                    tokio::time::sleep(policy.backoff).await;
                    continue;
                }
                log.set_attempts(attempt + 1);
                return Ok(response);
            }
            Ok(Err(error)) => {
                proxy.balancer.record(endpoint.addr, true, Instant::now());
                error
            }
            Err(limit) => {
                log.set_attempts(attempt + 1);
                return Err(ProxyError::Timeout {
                    timeout: humantime::format_duration(limit).to_string(),
                    which: "the route's timeouts.backendRequest",
                });
            }
        };
        // A connect failure never reached the application; a reset mid-request did, so it is
        // retried only when the route asks for retries.
        let retry_this = can_retry && (error.is_connect() || !policy.retry_codes.is_empty());
        if !retry_this {
            log.set_attempts(attempt + 1);
            return Err(upstream_error(endpoint, error));
        }
        tracing::debug!(endpoint = %endpoint.addr, %error, attempt, "retrying at another endpoint");
        failed.push(endpoint.addr);
        attempt += 1;
        tokio::time::sleep(policy.backoff).await;
    }
}

fn upstream_error(endpoint: &Endpoint, error: UpstreamError) -> ProxyError {
    match error {
        UpstreamError::Connect(reason) => ProxyError::UpstreamConnect {
            endpoint: endpoint.addr.to_string(),
            reason,
        },
        UpstreamError::Request(reason) => ProxyError::UpstreamReset {
            endpoint: endpoint.addr.to_string(),
            reason,
        },
    }
}

/// One endpoint, avoiding those that already failed this request when others are left.
/// `endpoints` is never empty (`endpoints()` refuses an empty set with the Service's name).
fn pick<'a>(
    proxy: &Proxy,
    endpoints: &'a [Endpoint],
    failed: &[SocketAddr],
) -> Result<&'a Endpoint, ProxyError> {
    crate::endpoints::pick(&proxy.balancer, endpoints, failed).ok_or_else(|| {
        ProxyError::UpstreamConnect {
            endpoint: "the backend".into(),
            reason: "no endpoint left to try".into(),
        }
    })
}

/// Reads the body into memory when it is known to be small (a length within `limit`, or
/// already ended); otherwise leaves it streaming.
async fn read_body(body: Incoming, limit: usize) -> Result<RequestBody, ProxyError> {
    let small = body.is_end_stream()
        || body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= limit as u64);
    if !small {
        return Ok(RequestBody::Streamed(Some(body)));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(RequestBody::Replayable(collected.to_bytes())),
        Err(error) => Err(ProxyError::BadRequest(format!(
            "reading the request body: {error}"
        ))),
    }
}

/// Sends a copy of the request to a mirror backend in the background; its answer is dropped.
fn mirror_request(
    proxy: &Arc<Proxy>,
    compiled: &Compiled,
    downstream: &Downstream,
    mirror: &MirrorTarget,
    head: &Head,
    authority: &str,
    body: Bytes,
) {
    let BackendTarget::Service { key, port } = &mirror.target else {
        return;
    };
    let target = ForwardTarget::Service {
        key: key.clone(),
        port: *port,
    };
    let Ok(endpoints) = endpoints(compiled, &target, &proxy.settings.trust_domain) else {
        tracing::debug!(mirror = %key, "mirror backend has no ready endpoints");
        return;
    };
    let Ok(endpoint) = pick(proxy, &endpoints, &[]).cloned() else {
        return;
    };
    let mut request = Request::new(Full::new(body).map_err(|never| match never {}).boxed());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.headers_mut() = head.headers.clone();
    headers::for_upstream(&mut request, endpoint.protocol, authority);
    let upstreams = proxy.upstreams.clone();
    let client = downstream.peer_addr;
    tokio::spawn(async move {
        let sent = upstreams.send(&endpoint, client, request);
        match tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
            Ok(Ok(response)) => {
                // Read the answer so the connection can be reused.
                let _ = response.into_body().collect().await;
            }
            Ok(Err(error)) => {
                tracing::debug!(mirror = %endpoint.addr, %error, "mirrored request failed")
            }
            Err(_) => tracing::debug!(mirror = %endpoint.addr, "mirrored request timed out"),
        }
    });
}
