//! One access-log line per request (target `access`), written when the response has been
//! sent in full: method, authority, path, status, route, upstream, duration, both identities,
//! and on failure the response flag and the cause.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{ProxyError, ResponseFlag};

/// What is known about a request, filled in by the phases as they run.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    pub method: String,
    pub authority: String,
    pub path: String,
    pub protocol: &'static str,
    pub grpc: bool,
    pub src_addr: Option<SocketAddr>,
    pub src_identity: String,
    /// `namespace/name` of the Service (or pod) the request was routed to.
    pub upstream_service: Option<String>,
    /// The endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// `HTTPRoute ns/name` (and `rule=...`).
    pub route: Option<String>,
    pub rule: Option<String>,
    pub attempts: u32,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub flag: Option<ResponseFlag>,
    pub error: Option<String>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration: Duration,
    /// The trace the request belongs to, when tracing is on.
    pub trace_id: Option<String>,
}

impl RequestLog {
    /// A log for a request from `src_addr` (`src_identity`) about to be served.
    pub fn start(
        src_addr: SocketAddr,
        src_identity: String,
        authority: String,
        request: &http::request::Parts,
        grpc: bool,
    ) -> RequestLog {
        RequestLog {
            method: request.method.to_string(),
            authority,
            path: request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            protocol: match request.version {
                http::Version::HTTP_2 => "HTTP/2",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            grpc,
            src_addr: Some(src_addr),
            src_identity,
            ..RequestLog::default()
        }
    }

    pub fn set_route(&mut self, route: String, rule: Option<&str>) {
        self.route = Some(route);
        self.rule = rule.map(str::to_owned);
    }

    /// `namespace/name` of the Service (or pod) the request was routed to.
    pub fn set_upstream_service(&mut self, name: String) {
        self.upstream_service = Some(name);
    }

    pub fn set_upstream(&mut self, endpoint: SocketAddr) {
        self.upstream = Some(endpoint);
    }

    pub fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    pub fn fail(&mut self, error: &ProxyError) {
        self.flag = Some(error.flag());
        self.error = Some(error.to_string());
    }

    /// Writes the line; `dst_identity` is the identity the upstream endpoint proved.
    /// `dst_workload` is the answering pod's `(namespace, name)`.
    pub fn emit(&self, dst_identity: Option<&str>, dst_workload: Option<(&str, &str)>) {
        let flag = self.flag.map_or("-", ResponseFlag::as_str);
        let dash = || "-".to_owned();
        let src_addr = self.src_addr.map_or_else(dash, |a| a.to_string());
        let upstream = self.upstream.map_or_else(dash, |u| u.to_string());
        let (dst_namespace, dst_name) = dst_workload.unwrap_or(("-", "-"));
        tracing::event!(
            target: "access",
            tracing::Level::INFO,
            src.addr = %src_addr,
            src.identity = self.src_identity.as_str(),
            method = %self.method,
            authority = %self.authority,
            path = %self.path,
            protocol = self.protocol,
            status = self.status,
            grpc_status = self.grpc_status.as_deref(),
            route = self.route.as_deref().unwrap_or("-"),
            rule = self.rule.as_deref(),
            upstream_service = self.upstream_service.as_deref().unwrap_or("-"),
            upstream = %upstream,
            dst.workload = %dst_name,
            dst.namespace = %dst_namespace,
            dst.identity = dst_identity.unwrap_or("-"),
            attempts = self.attempts,
            request_bytes = self.request_bytes,
            response_bytes = self.response_bytes,
            duration = %format_args!("{:.3}ms", self.duration.as_secs_f64() * 1e3),
            response_flags = flag,
            error = self.error.as_deref(),
            trace_id = self.trace_id.as_deref(),
            "request complete"
        );
    }
}
