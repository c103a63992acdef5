//! One error type for every way a proxied connection can fail, so that the access log's
//! `error=`, the `response_flags` metric label and the HBONE status of a refused CONNECT all
//! come from one place and never disagree.

use std::net::SocketAddr;
use std::time::Duration;

use crate::plan::Refusal;
use crate::response::ResponseFlag;

/// Why a connection failed. Each message names the cause and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The plan refused it before anything was dialled.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A live connection that a policy change now denies.
    #[error("{0}")]
    Revoked(String),
    #[error("HBONE to {hbone_addr} failed: {source}")]
    Tunnel {
        hbone_addr: SocketAddr,
        source: hbone::TunnelError,
    },
    #[error("HBONE to {hbone_addr}: no answer within {after:?}; is the destination node's ztunnel running?")]
    TunnelTimeout {
        hbone_addr: SocketAddr,
        after: Duration,
    },
    #[error("cannot connect to {target} ({}): {source}{}", what(*passthrough), hint(*passthrough))]
    UpstreamConnect {
        target: SocketAddr,
        /// A destination outside the mesh rather than the pod ztunnel serves.
        passthrough: bool,
        source: std::io::Error,
    },
    #[error("cannot connect to {target} ({}): no answer within {after:?}; is the destination reachable from the pod?", what(*passthrough))]
    UpstreamTimeout {
        target: SocketAddr,
        passthrough: bool,
        after: Duration,
    },
    /// The copy ended with an error after the connection was established.
    #[error(transparent)]
    Stream(hbone::CopyError),
}

fn what(passthrough: bool) -> &'static str {
    if passthrough {
        "passthrough, destination not in the mesh"
    } else {
        "the workload"
    }
}

fn hint(passthrough: bool) -> &'static str {
    if passthrough {
        ""
    } else {
        "; is the app listening on that port?"
    }
}

impl ProxyError {
    /// The Istio/Envoy response flag of the access log and the metrics.
    pub fn flag(&self) -> ResponseFlag {
        match self {
            ProxyError::Refused(refusal) => refusal.flag(),
            ProxyError::Revoked(_) => ResponseFlag::Denied,
            ProxyError::Tunnel { .. } | ProxyError::UpstreamConnect { .. } => {
                ResponseFlag::UpstreamFailure
            }
            ProxyError::TunnelTimeout { .. } | ProxyError::UpstreamTimeout { .. } => {
                ResponseFlag::UpstreamTimeout
            }
            ProxyError::Stream(_) => ResponseFlag::StreamError,
        }
    }

    /// The answer to a refused HBONE CONNECT (DESIGN §3: 400 malformed, 401 denied, 503
    /// upstream unreachable).
    pub fn status(&self) -> hbone::RefusalStatus {
        match self {
            ProxyError::Refused(refusal) => refusal.hbone_status(),
            ProxyError::Revoked(_) => hbone::RefusalStatus::Unauthorized,
            ProxyError::Tunnel { .. }
            | ProxyError::TunnelTimeout { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::Stream(_) => hbone::RefusalStatus::Unavailable,
        }
    }

    /// Whether another attempt, perhaps at another endpoint, could succeed: the upstream was
    /// unreachable. A policy decision or a refused target stays refused however often it is
    /// tried, and bytes already moved cannot be replayed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProxyError::Tunnel { .. }
            | ProxyError::TunnelTimeout { .. }
            | ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. } => true,
            ProxyError::Refused(refusal) => refusal.is_retryable(),
            ProxyError::Revoked(_) | ProxyError::Stream(_) => false,
        }
    }

    /// This error as the HBONE server's refusal of a CONNECT.
    pub fn to_hbone_refusal(&self) -> hbone::Refusal {
        hbone::Refusal {
            status: self.status(),
            reason: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn addr(text: &str) -> SocketAddr {
        text.parse()
            .unwrap_or_else(|_| unreachable!("test address {text}"))
    }

    #[test]
    fn each_failure_maps_to_one_flag_status_and_retry_decision() {
        use hbone::RefusalStatus::*;
        use ResponseFlag::*;
        let cases: Vec<(ProxyError, ResponseFlag, hbone::RefusalStatus, bool)> = vec![
            (
                Refusal::SelfCall {
                    target: addr("127.0.0.1:15001"),
                    whose: "loopback",
                }
                .into(),
                NoRoute,
                BadRequest,
                false,
            ),
            (
                Refusal::Denied("denied by AuthorizationPolicy shop/deny".into()).into(),
                Denied,
                Unauthorized,
                false,
            ),
            (
                ProxyError::Revoked("connection revoked: policy change".into()),
                Denied,
                Unauthorized,
                false,
            ),
            (
                ProxyError::UpstreamConnect {
                    target: addr("10.0.0.2:8080"),
                    passthrough: false,
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                },
                UpstreamFailure,
                Unavailable,
                true,
            ),
            (
                ProxyError::TunnelTimeout {
                    hbone_addr: addr("10.0.0.2:15008"),
                    after: Duration::from_secs(15),
                },
                UpstreamTimeout,
                Unavailable,
                true,
            ),
            (
                ProxyError::Stream(hbone::CopyError {
                    direction: hbone::Direction::UpstreamToDownstream,
                    operation: hbone::Operation::Read,
                    source: io::Error::from(io::ErrorKind::ConnectionReset),
                }),
                StreamError,
                Unavailable,
                false,
            ),
        ];
        for (error, flag, status, retryable) in cases {
            assert_eq!(error.flag(), flag, "{error}");
            assert_eq!(error.status(), status, "{error}");
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }

    #[test]
    fn messages_name_the_cause_and_what_to_check() {
        let app = ProxyError::UpstreamConnect {
            target: addr("10.0.0.2:8080"),
            passthrough: false,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        }
        .to_string();
        assert!(
            app.starts_with("cannot connect to 10.0.0.2:8080 (the workload): "),
            "{app}"
        );
        assert!(app.ends_with("is the app listening on that port?"), "{app}");
        let outside = ProxyError::UpstreamTimeout {
            target: addr("10.9.0.1:443"),
            passthrough: true,
            after: Duration::from_secs(10),
        }
        .to_string();
        assert_eq!(outside, "cannot connect to 10.9.0.1:443 (passthrough, destination not in the mesh): no answer within 10s; is the destination reachable from the pod?");
    }
}
