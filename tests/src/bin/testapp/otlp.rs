//! `ambit-testapp otlp-collector --listen ADDR`: a stand-in OpenTelemetry collector. It takes
//! OTLP/HTTP protobuf exports (`POST /v1/traces`), answers 200, and prints each span as one
//! line `otlp-span {json}` (ids in hex, attributes as a map), so scenarios can check what a
//! waypoint exported. Prints `listening on ADDR` once bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use serde_json::{json, Value};

use crate::AppResult;

pub fn otlp_collector(args: &[String]) -> AppResult<()> {
    let listen: SocketAddr = crate::option(args, "--listen")
        .ok_or("--listen ADDR is required")?
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("bind {listen}: {e}"))?;
        println!("listening on {listen}");
        loop {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|e| format!("accept: {e}"))?;
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper::service::service_fn(receive),
            ));
        }
    })
}

async fn receive(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let status = match (path.as_str(), ExportTraceServiceRequest::decode(body)) {
        ("/v1/traces", Ok(export)) => {
            print_spans(&export);
            StatusCode::OK
        }
        ("/v1/traces", Err(error)) => {
            println!("otlp-error not an ExportTraceServiceRequest: {error}");
            StatusCode::BAD_REQUEST
        }
        (other, _) => {
            println!("otlp-error POST to {other}, not /v1/traces");
            StatusCode::NOT_FOUND
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

fn print_spans(export: &ExportTraceServiceRequest) {
    for resource_spans in &export.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                let status = span.status.as_ref();
                let line = json!({
                    "resource": resource,
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "name": span.name,
                    "kind": span.kind,
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "status_code": status.map_or(0, |s| s.code),
                    "status_message": status.map_or("", |s| s.message.as_str()),
                    "attributes": attributes(&span.attributes),
                });
                println!("otlp-span {line}");
            }
        }
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|pair| {
            let value = match pair.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => json!(s),
                Some(any_value::Value::IntValue(i)) => json!(i),
                Some(any_value::Value::BoolValue(b)) => json!(b),
                Some(any_value::Value::DoubleValue(d)) => json!(d),
                other => json!(format!("{other:?}")),
            };
            (pair.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
