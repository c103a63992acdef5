//! The last phase: once the response body has been sent (or the client went away), the access
//! line and the metrics are written with the real byte counts and duration.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::body::{Frame, SizeHint};

use super::Proxy;
use crate::access_log::RequestLog;
use crate::metrics::Parties;
use crate::state::Compiled;
use crate::traces::SpanStart;
use crate::upstream::{Body, BoxError};

pub(super) fn on_completion(
    proxy: Arc<Proxy>,
    compiled: Arc<Compiled>,
    mut log: RequestLog,
    span: Option<SpanStart>,
    started: Instant,
    response: Response<Body>,
) -> Response<Body> {
    log.status = response.status().as_u16();
    log.grpc_status = grpc_status(response.headers());
    response.map(|inner| {
        Counted {
            inner,
            report: Some(Report {
                proxy,
                compiled,
                log,
                span,
                started,
            }),
        }
        .boxed()
    })
}

struct Report {
    proxy: Arc<Proxy>,
    compiled: Arc<Compiled>,
    log: RequestLog,
    span: Option<SpanStart>,
    started: Instant,
}

impl Report {
    fn write(mut self) {
        self.log.duration = self.started.elapsed();
        let snapshot = &self.compiled.snapshot;
        let mut parties = Parties::default();
        if let Some(source) = self
            .log
            .src_addr
            .and_then(|addr| snapshot.workload_by_ip(addr.ip()))
        {
            parties.source_workload = source.name.clone();
            parties.source_namespace = source.namespace.clone();
        }
        if let Some(destination) = self
            .log
            .upstream
            .and_then(|addr| snapshot.workload_by_ip(addr.ip()))
        {
            parties.destination_workload = destination.name.clone();
            parties.destination_namespace = destination.namespace.clone();
            if let Ok(identity) = destination.identity(&self.proxy.settings.trust_domain) {
                parties.destination_principal = identity.to_string();
            }
        }
        self.proxy.metrics.record(&self.log, &parties);
        let workload = (!parties.destination_workload.is_empty()).then_some((
            parties.destination_namespace.as_str(),
            parties.destination_workload.as_str(),
        ));
        let identity = (!parties.destination_principal.is_empty())
            .then_some(parties.destination_principal.as_str());
        self.log.emit(identity, workload);
        if let (Some(tracer), Some(span)) = (&self.proxy.tracer, self.span) {
            tracer.end(span, &self.log, &parties);
        }
    }
}

/// Counts the response body and writes the report when it ends or is dropped.
struct Counted {
    inner: Body,
    report: Option<Report>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(report) = self.report.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        report.log.response_bytes += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        if let Some(status) = grpc_status(trailers) {
                            report.log.grpc_status = Some(status);
                        }
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(report) = self.report.as_mut() {
                    report.log.error = Some(format!("response body failed: {error}"));
                }
            }
            Poll::Ready(None) => {
                if let Some(report) = self.report.take() {
                    report.write();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(mut report) = self.report.take() {
            if !self.inner.is_end_stream() && report.log.error.is_none() {
                report.log.flag = Some(crate::error::ResponseFlag::DownstreamConnectionTermination);
            }
            report.write();
        }
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
