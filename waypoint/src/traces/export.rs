//! Sends finished spans to an OTLP/HTTP collector in batches, off the request path: a request
//! only puts its span in a bounded queue (a full queue drops the span and counts it, it never
//! slows a request down); one task posts a batch when it is full or a second has passed.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::otlp::{export_request, Emitter};
use super::span::FinishedSpan;

/// Where and how spans are sent.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// The collector's traces URL (`http://collector:4318/v1/traces`).
    pub endpoint: Uri,
    /// Spans waiting for export; beyond this they are dropped.
    pub queue: usize,
    /// A batch is sent when it holds this many spans…
    pub batch: usize,
    /// …or this long after its first span arrived.
    pub interval: Duration,
    /// The longest one export may take (connect, send, answer).
    pub timeout: Duration,
}

impl ExportConfig {
    pub fn new(endpoint: Uri) -> ExportConfig {
        ExportConfig {
            endpoint,
            queue: 4096,
            batch: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why `--otlp-endpoint` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("--otlp-endpoint {0:?} is not a URL; give the collector's OTLP/HTTP address, e.g. http://otel-collector.observability:4318")]
    NotAUrl(String),
    #[error("--otlp-endpoint {0:?}: only plain http:// is supported; run the collector (or an agent of it) where plain HTTP stays on a trusted network, e.g. on the node")]
    Scheme(String),
}

/// The traces URL of `--otlp-endpoint`: a bare `http://host:port` gets OTLP/HTTP's
/// `/v1/traces` (as `OTEL_EXPORTER_OTLP_ENDPOINT` does); a URL with a path is used as it is.
pub fn traces_url(endpoint: &str) -> Result<Uri, EndpointError> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| EndpointError::NotAUrl(endpoint.to_owned()))?;
    if uri.authority().is_none() {
        return Err(EndpointError::NotAUrl(endpoint.to_owned()));
    }
    if uri.scheme_str() != Some("http") {
        return Err(EndpointError::Scheme(endpoint.to_owned()));
    }
    if uri.path() == "/" {
        return format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            .parse()
            .map_err(|_| EndpointError::NotAUrl(endpoint.to_owned()));
    }
    Ok(uri)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DropReason {
    reason: &'static str,
}

#[derive(Clone)]
struct ExportMetrics {
    exported: Counter,
    dropped: Family<DropReason, Counter>,
}

impl ExportMetrics {
    fn register(registry: &mut Registry) -> ExportMetrics {
        let metrics = ExportMetrics {
            exported: Counter::default(),
            dropped: Family::default(),
        };
        registry.register(
            "waypoint_spans_exported",
            "Spans the OTLP collector accepted",
            metrics.exported.clone(),
        );
        registry.register(
            "waypoint_spans_dropped",
            "Spans not exported: the queue was full (queue_full) or the collector failed (export_failed)",
            metrics.dropped.clone(),
        );
        metrics
    }

    fn drop_spans(&self, reason: &'static str, count: usize) {
        self.dropped
            .get_or_create(&DropReason { reason })
            .inc_by(count as u64);
    }
}

/// The request path's end of the queue.
#[derive(Clone)]
pub struct SpanExporter {
    queue: mpsc::Sender<FinishedSpan>,
    metrics: ExportMetrics,
}

impl SpanExporter {
    /// Starts the export task; it sends what is queued and stops once `shutdown` fires.
    pub fn start(
        config: ExportConfig,
        emitter: Emitter,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> (SpanExporter, tokio::task::JoinHandle<()>) {
        let (queue, spans) = mpsc::channel(config.queue.max(1));
        let metrics = ExportMetrics::register(registry);
        let task = BatchTask {
            client: Client::builder(TokioExecutor::new()).build(connector(config.timeout)),
            config,
            emitter,
            metrics: metrics.clone(),
            failing: false,
        };
        let handle = tokio::spawn(task.run(spans, shutdown));
        (SpanExporter { queue, metrics }, handle)
    }

    /// Queues `span`; never waits.
    pub fn export(&self, span: FinishedSpan) {
        if self.queue.try_send(span).is_err() {
            self.metrics.drop_spans("queue_full", 1);
        }
    }
}

fn connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    connector
}

struct BatchTask {
    client: Client<HttpConnector, Full<Bytes>>,
    config: ExportConfig,
    emitter: Emitter,
    metrics: ExportMetrics,
    /// Whether the last export failed: the log says so once per outage, not once per batch.
    failing: bool,
}

impl BatchTask {
    async fn run(mut self, mut spans: mpsc::Receiver<FinishedSpan>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.config.batch);
        loop {
            // Wait for the first span of a batch, then fill it until it is full or due.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                first = spans.recv() => match first {
                    Some(span) => batch.push(span),
                    None => break,
                },
            }
            let due = tokio::time::sleep(self.config.interval);
            tokio::pin!(due);
            while batch.len() < self.config.batch {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = &mut due => break,
                    next = spans.recv() => match next {
                        Some(span) => batch.push(span),
                        None => break,
                    },
                }
            }
            self.send(std::mem::take(&mut batch)).await;
        }
        // Stopping: what is already queued still goes out, in one last round of batches.
        spans.close();
        while let Some(span) = spans.recv().await {
            batch.push(span);
            if batch.len() == self.config.batch {
                self.send(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.send(batch).await;
        }
    }

    async fn send(&mut self, spans: Vec<FinishedSpan>) {
        let count = spans.len();
        let body = Bytes::from(export_request(&self.emitter, spans).encode_to_vec());
        // OTLP/HTTP: retry once after a pause on the answers the spec calls retryable.
        let mut outcome = self.post(body.clone()).await;
        if matches!(&outcome, Err(failure) if failure.retryable) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            outcome = self.post(body).await;
        }
        match outcome {
            Ok(()) => {
                self.metrics.exported.inc_by(count as u64);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(endpoint = %self.config.endpoint, "OTLP collector accepts spans again");
                }
            }
            Err(failure) => {
                self.metrics.drop_spans("export_failed", count);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(
                        endpoint = %self.config.endpoint,
                        dropped = count,
                        cause = %failure.cause,
                        "cannot export spans; check --otlp-endpoint and that the collector accepts OTLP/HTTP protobuf (waypoint_spans_dropped_total counts what is lost)"
                    );
                }
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), ExportFailure> {
        let request = Request::post(self.config.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| ExportFailure::permanent(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                ExportFailure::retryable(format!("cannot reach the collector: {e}"))
            })?;
            let status = response.status();
            // Read the answer whole so the connection can be reused.
            let answer = response.into_body().collect().await.map(|b| b.to_bytes());
            if status.is_success() {
                return Ok(());
            }
            let detail = answer
                .ok()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            let cause = format!("the collector answered {status} {detail}");
            Err(if retryable(status) {
                ExportFailure::retryable(cause)
            } else {
                ExportFailure::permanent(cause)
            })
        };
        tokio::time::timeout(self.config.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ExportFailure::retryable(format!(
                    "no answer within {:?}",
                    self.config.timeout
                )))
            })
    }
}

/// OTLP/HTTP's retryable answers.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

struct ExportFailure {
    cause: String,
    retryable: bool,
}

impl ExportFailure {
    fn retryable(cause: String) -> ExportFailure {
        ExportFailure {
            cause,
            retryable: true,
        }
    }

    fn permanent(cause: String) -> ExportFailure {
        ExportFailure {
            cause,
            retryable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::context::{SpanContext, SpanId, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::SystemTime;

    fn span(n: u8) -> FinishedSpan {
        FinishedSpan {
            context: SpanContext {
                trace_id: TraceId([n; 16]),
                span_id: SpanId([n; 8]),
                parent_id: None,
                sampled: true,
            },
            trace_state: String::new(),
            name: format!("GET {n}"),
            start: SystemTime::now(),
            end: SystemTime::now(),
            attributes: Vec::new(),
            error: None,
        }
    }

    fn emitter() -> Emitter {
        Emitter {
            service_name: "waypoint.shop".into(),
            namespace: "shop".into(),
            instance: None,
        }
    }

    fn counters(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter(|l| l.starts_with("waypoint_spans"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A collector on loopback that answers the first `failures` posts with 503, then 200,
    /// and hands every body it accepted to the test.
    async fn collector(
        failures: usize,
    ) -> (Uri, mpsc::UnboundedReceiver<ExportTraceServiceRequest>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let (accepted, bodies) = mpsc::unbounded_channel();
        let posts = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (accepted, posts) = (accepted.clone(), posts.clone());
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let (accepted, posts) = (accepted.clone(), posts.clone());
                        async move {
                            let kind = request.headers()[header::CONTENT_TYPE].clone();
                            let body = request.into_body().collect().await?.to_bytes();
                            let status = if posts.fetch_add(1, Ordering::SeqCst) < failures {
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                assert_eq!(kind, "application/x-protobuf");
                                let _ =
                                    accepted.send(ExportTraceServiceRequest::decode(body).unwrap());
                                StatusCode::OK
                            };
                            let mut response = http::Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = status;
                            Ok::<_, hyper::Error>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (url.parse().unwrap(), bodies)
    }

    #[tokio::test]
    async fn spans_reach_the_collector_in_one_batch_after_one_retry_of_a_503() {
        let (url, mut bodies) = collector(1).await;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let config = ExportConfig {
            interval: Duration::from_millis(50),
            ..ExportConfig::new(url)
        };
        let (exporter, task) = SpanExporter::start(config, emitter(), &mut registry, stop.clone());
        for n in 1..=3 {
            exporter.export(span(n));
        }
        let body = tokio::time::timeout(Duration::from_secs(10), bodies.recv())
            .await
            .expect("the collector got the batch")
            .unwrap();
        let names: Vec<String> = body.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["GET 1", "GET 2", "GET 3"]);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(counters(&registry), "waypoint_spans_exported_total 3");
    }

    #[tokio::test]
    async fn what_is_queued_when_the_waypoint_stops_is_still_sent() {
        let (url, mut bodies) = collector(0).await;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let config = ExportConfig {
            interval: Duration::from_secs(3600),
            ..ExportConfig::new(url)
        };
        let (exporter, task) = SpanExporter::start(config, emitter(), &mut registry, stop.clone());
        exporter.export(span(1));
        exporter.export(span(2));
        stop.cancel();
        task.await.unwrap();
        let mut sent = 0;
        while let Ok(body) = bodies.try_recv() {
            sent += body.resource_spans[0].scope_spans[0].spans.len();
        }
        assert_eq!(sent, 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_spans_and_counts_them_instead_of_waiting() {
        // Nothing listens on port 9 of loopback: every export fails fast.
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let config = ExportConfig {
            queue: 1,
            timeout: Duration::from_millis(200),
            ..ExportConfig::new("http://127.0.0.1:9/v1/traces".parse().unwrap())
        };
        let (exporter, task) = SpanExporter::start(config, emitter(), &mut registry, stop.clone());
        // On this single-threaded runtime the export task has not run yet: the queue holds one.
        for n in 1..=3 {
            exporter.export(span(n));
        }
        stop.cancel();
        task.await.unwrap();
        let counters = counters(&registry);
        assert!(
            counters.contains(r#"waypoint_spans_dropped_total{reason="queue_full"} 2"#),
            "{counters}"
        );
        assert!(
            counters.contains(r#"waypoint_spans_dropped_total{reason="export_failed"} 1"#),
            "{counters}"
        );
    }

    #[test]
    fn endpoints_become_traces_urls() {
        let url = |s: &str| traces_url(s).map(|u| u.to_string());
        assert_eq!(
            url("http://collector:4318"),
            Ok("http://collector:4318/v1/traces".into())
        );
        assert_eq!(
            url("http://collector:4318/"),
            Ok("http://collector:4318/v1/traces".into())
        );
        assert_eq!(
            url("http://10.0.0.1:4318/custom/traces"),
            Ok("http://10.0.0.1:4318/custom/traces".into())
        );
        assert!(matches!(
            traces_url("https://collector:4318"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(matches!(
            traces_url("collector:4318"),
            Err(EndpointError::Scheme(_) | EndpointError::NotAUrl(_))
        ));
        assert!(matches!(
            traces_url("not a url"),
            Err(EndpointError::NotAUrl(_))
        ));
    }

    #[test]
    fn only_overload_and_gateway_failures_are_retried() {
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_FOUND));
    }
}
