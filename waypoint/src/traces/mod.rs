//! Request traces: W3C `traceparent` propagation with the waypoint as a span of its own, and
//! those spans exported over OTLP/HTTP when `--otlp-endpoint` is set (off by default; without
//! it `traceparent` passes through untouched).
//!
//! - [`context`]: parsing `traceparent` and deciding each request's span (pure).
//! - [`span`]: a finished request's span, from its access line (pure).
//! - [`otlp`]: spans as OTLP protobuf (pure).
//! - [`export`]: the bounded queue and the batch task that posts to the collector.

pub mod context;
pub mod export;
pub mod otlp;
pub mod span;

use std::time::SystemTime;

use http::header::{HeaderMap, HeaderValue};

use crate::access_log::RequestLog;
use crate::metrics::Parties;
use context::{Draw, Sampler, SpanId, TraceId, TRACEPARENT, TRACESTATE};
pub use export::{traces_url, EndpointError, ExportConfig, SpanExporter};
pub use otlp::Emitter;
pub use span::{FinishedSpan, SpanStart};

/// Decides each request's span and hands finished, sampled spans to the exporter.
#[derive(Clone)]
pub struct Tracer {
    pub sampler: Sampler,
    pub exporter: SpanExporter,
    /// Where the spans go (for `/config_dump`).
    pub endpoint: http::Uri,
}

impl Tracer {
    /// Starts the span of a request with `headers` and rewrites its `traceparent` for the
    /// upstream (the same trace, this span as the parent). A malformed `traceparent` starts a
    /// new trace, and the `tracestate` that came with it is dropped (W3C §3.3.1).
    pub fn start(&self, headers: &mut HeaderMap) -> SpanStart {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let incoming = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(
                value
                    .to_str()
                    .map_err(|_| context::TraceParentError::NotHex)
                    .and_then(context::parse_traceparent),
            ),
            (Some(_), Some(_)) => Some(Err(context::TraceParentError::Repeated)),
        };
        let (span, problem) = context::decide(incoming, self.sampler, fresh_draw());
        if let Some(problem) = problem {
            tracing::debug!(%problem, "ignoring the request's traceparent; starting a new trace");
            headers.remove(TRACESTATE);
        }
        let trace_state = headers
            .get_all(TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(value) = HeaderValue::from_str(&span.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        SpanStart {
            context: span,
            trace_state,
            at: SystemTime::now(),
        }
    }

    /// Ends the span of a finished request (its access line `log`) and queues it for export
    /// if its trace is sampled.
    pub fn end(&self, start: SpanStart, log: &RequestLog, parties: &Parties) {
        if start.context.sampled {
            let span = FinishedSpan::of_request(start, log, parties, SystemTime::now());
            self.exporter.export(span);
        }
    }
}

/// Random non-zero ids and a sampling coin.
fn fresh_draw() -> Draw {
    let mut trace_id: [u8; 16] = rand::random();
    let mut span_id: [u8; 8] = rand::random();
    // All-zero ids are invalid; the chance is negligible, but the rule is absolute.
    trace_id[15] |= (trace_id == [0; 16]) as u8;
    span_id[7] |= (span_id == [0; 8]) as u8;
    Draw {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        coin: rand::random(),
    }
}
