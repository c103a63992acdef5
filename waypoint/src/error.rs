//! One error type for the request path (DESIGN §6): each failure knows the status the client
//! gets, the response flag the access log and metrics carry, and whether another attempt could
//! succeed — so the phases never decide these separately.

use http::StatusCode;

/// Envoy's response flags (Istio's dashboards and `response_flags` label use these spellings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFlag {
    /// `NR`: no route matched, or the route's backend cannot be used.
    NoRoute,
    /// `UH`: no healthy upstream endpoint.
    NoHealthyUpstream,
    /// `UF`: the upstream connection failed.
    UpstreamConnectionFailure,
    /// `URX`: retries exhausted.
    UpstreamRetryLimitExceeded,
    /// `UT`: the upstream did not answer in time.
    UpstreamRequestTimeout,
    /// `UC`: the upstream closed the connection mid-request.
    UpstreamConnectionTermination,
    /// `RBAC`: denied by an AuthorizationPolicy.
    Denied,
    /// `DPE`: the downstream request could not be processed.
    DownstreamProtocolError,
    /// `DC`: the downstream went away.
    DownstreamConnectionTermination,
}

impl ResponseFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectionFailure => "UF",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamRequestTimeout => "UT",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::Denied => "RBAC",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::DownstreamConnectionTermination => "DC",
        }
    }
}

/// Why a request was not (fully) proxied. The message goes to the access log and names the
/// cause and what to check; the client sees only the status (and a short body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no rule of the routes attached to {service} matches {method} {path}")]
    NoMatchingRoute {
        service: String,
        method: String,
        path: String,
    },
    #[error("{route}: the rule has no backendRefs (or all weights are 0); add a backend")]
    NoBackends { route: String },
    #[error("{route}: {problem}")]
    InvalidBackend { route: String, problem: String },
    #[error(
        "{route}: {filter}; requests that reach it are answered 500 rather than served unfiltered"
    )]
    UnsupportedFilter { route: String, filter: String },
    #[error("service {service} port {port} has no ready endpoints; check that its selector matches running, ready pods")]
    NoHealthyEndpoints { service: String, port: u16 },
    #[error("cannot open a tunnel to {endpoint}: {reason}")]
    UpstreamConnect { endpoint: String, reason: String },
    #[error("{endpoint} failed the request: {reason}")]
    UpstreamReset { endpoint: String, reason: String },
    #[error("no answer within {timeout} ({which})")]
    Timeout {
        timeout: String,
        which: &'static str,
    },
    /// `reason` names the deciding AuthorizationPolicy (or why none allowed the request).
    #[error("{reason}")]
    Denied { reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoMatchingRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::NoBackends { .. }
            | ProxyError::InvalidBackend { .. }
            | ProxyError::UnsupportedFilter { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoHealthyEndpoints { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamReset { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn flag(&self) -> ResponseFlag {
        match self {
            ProxyError::NoMatchingRoute { .. }
            | ProxyError::NoBackends { .. }
            | ProxyError::InvalidBackend { .. }
            | ProxyError::UnsupportedFilter { .. } => ResponseFlag::NoRoute,
            ProxyError::NoHealthyEndpoints { .. } => ResponseFlag::NoHealthyUpstream,
            ProxyError::UpstreamConnect { .. } => ResponseFlag::UpstreamConnectionFailure,
            ProxyError::UpstreamReset { .. } => ResponseFlag::UpstreamConnectionTermination,
            ProxyError::Timeout { .. } => ResponseFlag::UpstreamRequestTimeout,
            ProxyError::Denied { .. } => ResponseFlag::Denied,
            ProxyError::BadRequest(_) => ResponseFlag::DownstreamProtocolError,
        }
    }

    /// Whether another attempt (at another endpoint) could succeed: connection failures and
    /// resets are; a route or policy decision is not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamReset { .. }
        )
    }

    /// The body the client reads: Envoy's wording where clients know it.
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::Denied { .. } => "RBAC: access denied",
            ProxyError::NoMatchingRoute { .. } => "no route matched",
            ProxyError::Timeout { .. } => "upstream request timeout",
            ProxyError::NoHealthyEndpoints { .. } => "no healthy upstream",
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamReset { .. } => {
                "upstream connect error or disconnect/reset before headers"
            }
            ProxyError::BadRequest(_) => "bad request",
            ProxyError::NoBackends { .. }
            | ProxyError::InvalidBackend { .. }
            | ProxyError::UnsupportedFilter { .. } => "route misconfigured",
        }
    }

    /// The gRPC status a gRPC client gets for this error (the HTTP→gRPC mapping of
    /// grpc/doc/http-grpc-status-mapping.md, with Envoy's choices for proxy errors).
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::NoMatchingRoute { .. } => 12, // UNIMPLEMENTED
            ProxyError::Denied { .. } => 7,           // PERMISSION_DENIED
            ProxyError::Timeout { .. } => 4,          // DEADLINE_EXCEEDED
            ProxyError::BadRequest(_) => 13,          // INTERNAL
            ProxyError::NoBackends { .. }
            | ProxyError::InvalidBackend { .. }
            | ProxyError::UnsupportedFilter { .. } => 13, // INTERNAL
            ProxyError::NoHealthyEndpoints { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamReset { .. } => 14, // UNAVAILABLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_flag_and_retry_verdict() {
        let connect = ProxyError::UpstreamConnect {
            endpoint: "10.1.2.2:8080".into(),
            reason: "refused".into(),
        };
        assert_eq!(connect.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(connect.flag().as_str(), "UF");
        assert!(connect.is_retryable());
        let denied = ProxyError::Denied {
            reason: "denied by AuthorizationPolicy shop/deny-delete".into(),
        };
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(denied.body(), "RBAC: access denied");
        assert_eq!(denied.grpc_status(), 7);
        assert!(!denied.is_retryable());
        let no_route = ProxyError::NoMatchingRoute {
            service: "shop/cart".into(),
            method: "GET".into(),
            path: "/x".into(),
        };
        assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
        assert_eq!(no_route.flag(), ResponseFlag::NoRoute);
    }
}
