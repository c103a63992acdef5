//! Finished spans as an OTLP `ExportTraceServiceRequest` (the protobuf body of OTLP/HTTP's
//! `POST /v1/traces`), using the OpenTelemetry project's generated messages.

use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

use super::span::{FinishedSpan, Value};

/// Who emits the spans: one waypoint (OpenTelemetry resource attributes).
#[derive(Clone, Debug)]
pub struct Emitter {
    /// `service.name`: `<gateway>.<namespace>`, as Istio names its waypoints' traces.
    pub service_name: String,
    pub namespace: String,
    /// The pod, when known (`service.instance.id`).
    pub instance: Option<String>,
}

impl Emitter {
    fn resource(&self) -> Resource {
        let mut attributes = vec![
            attribute("service.name", Value::Text(self.service_name.clone())),
            attribute("service.namespace", Value::Text(self.namespace.clone())),
            attribute("k8s.namespace.name", Value::Text(self.namespace.clone())),
        ];
        if let Some(instance) = &self.instance {
            attributes.push(attribute(
                "service.instance.id",
                Value::Text(instance.clone()),
            ));
        }
        Resource {
            attributes,
            ..Resource::default()
        }
    }
}

/// One request body for `spans`.
pub fn export_request(emitter: &Emitter, spans: Vec<FinishedSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(emitter.resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "ambit-waypoint".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.into_iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn to_proto(finished: FinishedSpan) -> Span {
    let context = finished.context;
    let status = match finished.error {
        Some(message) => Status {
            code: status::StatusCode::Error.into(),
            message,
        },
        None => Status::default(),
    };
    Span {
        trace_id: context.trace_id.0.to_vec(),
        span_id: context.span_id.0.to_vec(),
        parent_span_id: context.parent_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        trace_state: finished.trace_state,
        // W3C trace flags in the low byte: the span is exported, so it was sampled.
        flags: 0x01,
        name: finished.name,
        kind: span::SpanKind::Server.into(),
        start_time_unix_nano: unix_nanos(finished.start),
        end_time_unix_nano: unix_nanos(finished.end),
        attributes: finished
            .attributes
            .into_iter()
            .map(|(key, value)| attribute(key, value))
            .collect(),
        status: Some(status),
        ..Span::default()
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    let value = match value {
        Value::Text(text) => any_value::Value::StringValue(text),
        Value::Int(number) => any_value::Value::IntValue(number),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::context::{SpanContext, SpanId, TraceId};
    use prost::Message;
    use std::time::Duration;

    #[test]
    fn spans_encode_as_an_otlp_export_that_decodes_back() {
        let emitter = Emitter {
            service_name: "waypoint.shop".into(),
            namespace: "shop".into(),
            instance: Some("waypoint-0".into()),
        };
        let span = FinishedSpan {
            context: SpanContext {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([8; 8]),
                parent_id: Some(SpanId([9; 8])),
                sampled: true,
            },
            trace_state: String::new(),
            name: "GET shop/echo".into(),
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            end: SystemTime::UNIX_EPOCH + Duration::from_millis(1_502),
            attributes: vec![("http.response.status_code", Value::Int(503))],
            error: Some("upstream answered 503".into()),
        };
        let bytes = export_request(&emitter, vec![span]).encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let resource = &decoded.resource_spans[0];
        let names: Vec<&str> = resource
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|a| a.key.as_str())
            .collect();
        assert!(names.contains(&"service.name"), "{names:?}");
        let span = &resource.scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![7; 16]);
        assert_eq!(span.parent_span_id, vec![9; 8]);
        assert_eq!(span.kind, i32::from(span::SpanKind::Server));
        assert_eq!(span.start_time_unix_nano, 1_500_000_000);
        assert_eq!(span.end_time_unix_nano, 1_502_000_000);
        let status = span.status.as_ref().unwrap();
        assert_eq!(status.code, i32::from(status::StatusCode::Error));
        assert_eq!(status.message, "upstream answered 503");
        assert_eq!(
            span.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(503))
        );
    }
}
