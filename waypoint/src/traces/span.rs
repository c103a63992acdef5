//! The span of one finished request, from what its access line says: OpenTelemetry's HTTP
//! server conventions (`http.request.method`, `url.path`, `http.response.status_code`, …) plus
//! the mesh's own facts under `ambit.*` (both identities, route, upstream, response flag).

use std::time::SystemTime;

use super::context::SpanContext;
use crate::access_log::RequestLog;
use crate::metrics::Parties;

/// An attribute value; OTLP has more kinds, a request needs these two.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
}

/// A span ready for export.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedSpan {
    pub context: SpanContext,
    /// The caller's `tracestate`, passed on as it came.
    pub trace_state: String,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` marks the span failed: a 5xx (for a server span a 4xx is the client's
    /// error, not ours; its cause is in `ambit.error`).
    pub error: Option<String>,
}

/// Where a request's span began.
#[derive(Clone, Debug)]
pub struct SpanStart {
    pub context: SpanContext,
    pub trace_state: String,
    pub at: SystemTime,
}

impl FinishedSpan {
    /// The span of a request whose access line is `log`, ended at `end`.
    pub fn of_request(
        start: SpanStart,
        log: &RequestLog,
        parties: &Parties,
        end: SystemTime,
    ) -> FinishedSpan {
        let text = |s: &str| Value::Text(s.to_owned());
        let (path, query) = log.path.split_once('?').unwrap_or((&log.path, ""));
        let authority = log.authority.parse::<http::uri::Authority>().ok();
        let host = authority
            .as_ref()
            .map_or(log.authority.as_str(), |a| a.host());
        let port = authority.as_ref().and_then(http::uri::Authority::port_u16);
        let mut attributes = vec![
            ("http.request.method", text(&log.method)),
            ("url.path", text(path)),
            ("server.address", text(host)),
            ("network.protocol.name", text("http")),
            (
                "network.protocol.version",
                text(log.protocol.trim_start_matches("HTTP/")),
            ),
            ("http.response.status_code", Value::Int(log.status.into())),
            (
                "http.request.body.size",
                Value::Int(saturating(log.request_bytes)),
            ),
            (
                "http.response.body.size",
                Value::Int(saturating(log.response_bytes)),
            ),
            ("ambit.source.principal", text(&log.src_identity)),
        ];
        if !query.is_empty() {
            attributes.push(("url.query", text(query)));
        }
        if let Some(port) = port {
            attributes.push(("server.port", Value::Int(port.into())));
        }
        if let Some(client) = log.src_addr {
            attributes.push(("client.address", text(&client.ip().to_string())));
            attributes.push(("client.port", Value::Int(client.port().into())));
        }
        if !parties.source_workload.is_empty() {
            attributes.push((
                "ambit.source.workload",
                Value::Text(format!(
                    "{}/{}",
                    parties.source_namespace, parties.source_workload
                )),
            ));
        }
        if !parties.destination_principal.is_empty() {
            attributes.push((
                "ambit.destination.principal",
                text(&parties.destination_principal),
            ));
        }
        if !parties.destination_workload.is_empty() {
            attributes.push((
                "ambit.destination.workload",
                Value::Text(format!(
                    "{}/{}",
                    parties.destination_namespace, parties.destination_workload
                )),
            ));
        }
        let optional = [
            ("ambit.route", log.route.as_deref()),
            ("ambit.rule", log.rule.as_deref()),
            ("ambit.upstream_service", log.upstream_service.as_deref()),
            ("rpc.grpc.status_code", log.grpc_status.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push((key, text(value)));
            }
        }
        if let Some(upstream) = log.upstream {
            attributes.push(("ambit.upstream.address", text(&upstream.to_string())));
        }
        if log.attempts > 1 {
            attributes.push(("ambit.attempts", Value::Int(log.attempts.into())));
        }
        if let Some(flag) = log.flag {
            attributes.push(("ambit.response_flags", text(flag.as_str())));
            attributes.push(("error.type", text(flag.as_str())));
        } else if log.status >= 500 {
            attributes.push(("error.type", text(&log.status.to_string())));
        }
        if let Some(message) = &log.error {
            attributes.push(("ambit.error", text(message)));
        }
        let error = (log.status >= 500).then(|| {
            log.error
                .clone()
                .unwrap_or_else(|| format!("upstream answered {}", log.status))
        });
        // Low-cardinality names (OpenTelemetry's advice): the method and where it went.
        let name = match &log.upstream_service {
            Some(service) => format!("{} {service}", log.method),
            None => log.method.clone(),
        };
        FinishedSpan {
            context: start.context,
            trace_state: start.trace_state,
            name,
            start: start.at,
            end,
            attributes,
            error,
        }
    }
}

fn saturating(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ResponseFlag;
    use crate::traces::context::{SpanId, TraceId};
    use std::time::Duration;

    fn start() -> SpanStart {
        SpanStart {
            context: SpanContext {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([2; 8]),
                parent_id: Some(SpanId([3; 8])),
                sampled: true,
            },
            trace_state: "vendor=x".into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
        }
    }

    fn get<'a>(span: &'a FinishedSpan, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    #[test]
    fn a_routed_request_becomes_a_span_with_http_and_mesh_attributes() {
        let log = RequestLog {
            method: "GET".into(),
            authority: "echo.shop:8080".into(),
            path: "/cart?item=1".into(),
            protocol: "HTTP/1.1",
            src_addr: Some("10.1.0.5:40000".parse().unwrap()),
            src_identity: "spiffe://cluster.local/ns/shop/sa/client".into(),
            upstream_service: Some("shop/echo".into()),
            upstream: Some("10.2.0.7:8080".parse().unwrap()),
            route: Some("HTTPRoute shop/echo".into()),
            status: 200,
            attempts: 1,
            response_bytes: 42,
            ..RequestLog::default()
        };
        let parties = Parties {
            destination_principal: "spiffe://cluster.local/ns/shop/sa/echo".into(),
            destination_workload: "echo-v1".into(),
            destination_namespace: "shop".into(),
            ..Parties::default()
        };
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(11);
        let span = FinishedSpan::of_request(start(), &log, &parties, end);
        assert_eq!(span.name, "GET shop/echo");
        assert_eq!(span.error, None);
        assert_eq!(span.trace_state, "vendor=x");
        assert_eq!((span.start, span.end), (start().at, end));
        assert_eq!(get(&span, "url.path"), Some(&text("/cart")));
        assert_eq!(get(&span, "url.query"), Some(&text("item=1")));
        assert_eq!(get(&span, "server.address"), Some(&text("echo.shop")));
        assert_eq!(get(&span, "server.port"), Some(&Value::Int(8080)));
        assert_eq!(get(&span, "network.protocol.version"), Some(&text("1.1")));
        assert_eq!(
            get(&span, "http.response.status_code"),
            Some(&Value::Int(200))
        );
        assert_eq!(get(&span, "http.response.body.size"), Some(&Value::Int(42)));
        assert_eq!(get(&span, "client.address"), Some(&text("10.1.0.5")));
        assert_eq!(
            get(&span, "ambit.destination.principal"),
            Some(&text("spiffe://cluster.local/ns/shop/sa/echo"))
        );
        assert_eq!(
            get(&span, "ambit.destination.workload"),
            Some(&text("shop/echo-v1"))
        );
        assert_eq!(
            get(&span, "ambit.route"),
            Some(&text("HTTPRoute shop/echo"))
        );
        assert_eq!(get(&span, "error.type"), None);
    }

    #[test]
    fn a_5xx_marks_the_span_failed_and_a_4xx_only_says_why() {
        let denied = RequestLog {
            method: "DELETE".into(),
            status: 403,
            flag: Some(ResponseFlag::Denied),
            error: Some("denied by shop/no-delete".into()),
            ..RequestLog::default()
        };
        let span =
            FinishedSpan::of_request(start(), &denied, &Parties::default(), SystemTime::now());
        assert_eq!(span.error, None);
        assert_eq!(get(&span, "error.type"), Some(&text("RBAC")));
        assert_eq!(
            get(&span, "ambit.error"),
            Some(&text("denied by shop/no-delete"))
        );
        assert_eq!(span.name, "DELETE");

        let timed_out = RequestLog {
            status: 504,
            flag: Some(ResponseFlag::UpstreamRequestTimeout),
            error: Some("no answer within 300ms".into()),
            ..RequestLog::default()
        };
        let span =
            FinishedSpan::of_request(start(), &timed_out, &Parties::default(), SystemTime::now());
        assert_eq!(span.error.as_deref(), Some("no answer within 300ms"));
        assert_eq!(get(&span, "error.type"), Some(&text("UT")));

        let unavailable = RequestLog {
            status: 503,
            ..RequestLog::default()
        };
        let span = FinishedSpan::of_request(
            start(),
            &unavailable,
            &Parties::default(),
            SystemTime::now(),
        );
        assert_eq!(span.error.as_deref(), Some("upstream answered 503"));
        assert_eq!(get(&span, "error.type"), Some(&text("503")));

        let not_found = RequestLog {
            status: 404,
            ..RequestLog::default()
        };
        let span =
            FinishedSpan::of_request(start(), &not_found, &Parties::default(), SystemTime::now());
        assert_eq!(span.error, None);
    }
}
