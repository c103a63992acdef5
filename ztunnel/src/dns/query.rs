//! One query from one pod, start to finish: parse, answer or forward, count, reply. Every
//! query that has a header gets a reply — a Service answer, the upstream's reply, or an
//! error code with a log line — never silence.

use std::sync::Arc;

use discovery::Snapshot;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use super::answer::{self, Lookup};
use super::forward::{ForwardError, Forwarder, Transport};
use super::metrics::{DnsMetrics, DnsRequestLabels, DnsUpstreamFailureLabels, DnsUpstreamLabels};
use super::names::SearchPath;

/// Reads the current cluster view (the agent's snapshot; a fixed one in tests).
pub(crate) type SnapshotFn = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// What one pod's DNS proxy needs to answer its queries.
pub(crate) struct PodResolver {
    pub pod_name: String,
    pub pod_namespace: String,
    pub search: SearchPath,
    pub snapshot: SnapshotFn,
    pub forwarder: Forwarder,
    pub metrics: DnsMetrics,
}

/// How a reply came about, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnsweredBy {
    Ztunnel,
    Upstream,
    Error,
}

impl AnsweredBy {
    fn label(self) -> &'static str {
        match self {
            AnsweredBy::Ztunnel => "ztunnel",
            AnsweredBy::Upstream => "upstream",
            AnsweredBy::Error => "error",
        }
    }
}

impl PodResolver {
    /// The reply to `request`, or `None` when it must be dropped: shorter than a header, or
    /// itself a response (replying to those could start a loop).
    pub async fn handle(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let message = match Message::from_vec(request) {
            Ok(message) => message,
            Err(error) => {
                let reply = answer::header_only_answer(request, ResponseCode::FormErr);
                tracing::debug!(pod = %self.pod(), %error, replied = reply.is_some(), "malformed DNS query");
                if reply.is_some() {
                    self.count(
                        transport,
                        "unknown",
                        AnsweredBy::Error,
                        ResponseCode::FormErr.low(),
                    );
                }
                return reply;
            }
        };
        if message.metadata.message_type != MessageType::Query {
            tracing::debug!(pod = %self.pod(), "dropping a DNS response sent to the proxy");
            return None;
        }
        let query_type = message
            .queries
            .first()
            .map_or_else(|| "unknown".to_owned(), |q| q.query_type.to_string());
        if message.metadata.op_code != OpCode::Query {
            tracing::debug!(pod = %self.pod(), op_code = ?message.metadata.op_code, "DNS opcode not implemented");
            self.count(
                transport,
                &query_type,
                AnsweredBy::Error,
                ResponseCode::NotImp.low(),
            );
            return answer::header_only_answer(request, ResponseCode::NotImp);
        }
        let [query] = message.queries.as_slice() else {
            tracing::debug!(pod = %self.pod(), questions = message.queries.len(), "a DNS query needs exactly one question");
            self.count(
                transport,
                &query_type,
                AnsweredBy::Error,
                ResponseCode::FormErr.low(),
            );
            return answer::header_only_answer(request, ResponseCode::FormErr);
        };

        let lookup = answer::lookup(&(self.snapshot)(), &self.search, query);
        let (reply, answered_by) = match lookup {
            Lookup::Service(addresses) => {
                tracing::debug!(pod = %self.pod(), name = %query.name, r#type = %query.query_type, ?addresses, "answered from the cluster view");
                match answer::service_answer(&message, &addresses, transport == Transport::Udp) {
                    Ok(reply) => (reply, AnsweredBy::Ztunnel),
                    Err(error) => {
                        tracing::warn!(pod = %self.pod(), name = %query.name, %error, "cannot encode a DNS answer; replying SERVFAIL");
                        (self.servfail(&message)?, AnsweredBy::Error)
                    }
                }
            }
            Lookup::Forward => match self.forward(request, &query_type, transport).await {
                Ok(reply) => (reply, AnsweredBy::Upstream),
                Err(error) => {
                    tracing::warn!(
                        pod = %self.pod(),
                        name = %query.name,
                        r#type = %query.query_type,
                        upstreams = ?self.forwarder.upstreams(),
                        %error,
                        "DNS query not answered upstream; replying SERVFAIL"
                    );
                    (self.servfail(&message)?, AnsweredBy::Error)
                }
            },
        };
        // The RCODE actually sent (an upstream's NXDOMAIN, ...), from the reply's header.
        let code = reply
            .get(3)
            .map_or(ResponseCode::ServFail.low(), |b| b & 0x0f);
        self.count(transport, &query_type, answered_by, code);
        Some(reply)
    }

    /// The reply to a query that arrived while the pod already has too many in flight: an
    /// immediate SERVFAIL (the client retries) rather than an unbounded queue.
    pub fn overloaded(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let reply = answer::header_only_answer(request, ResponseCode::ServFail)?;
        tracing::warn!(pod = %self.pod(), "too many DNS queries in flight for this pod; replying SERVFAIL");
        self.count(
            transport,
            "unknown",
            AnsweredBy::Error,
            ResponseCode::ServFail.low(),
        );
        Some(reply)
    }

    async fn forward(
        &self,
        request: &[u8],
        query_type: &str,
        transport: Transport,
    ) -> Result<Vec<u8>, ForwardError> {
        self.metrics
            .upstream_requests
            .get_or_create(&DnsUpstreamLabels {
                request_protocol: transport.label(),
                request_query_type: query_type.to_owned(),
            })
            .inc();
        let failed = |kind: &'static str| {
            self.metrics
                .upstream_failures
                .get_or_create(&DnsUpstreamFailureLabels {
                    request_protocol: transport.label(),
                    request_query_type: query_type.to_owned(),
                    error: kind,
                })
                .inc();
        };
        let result = self
            .forwarder
            .forward(request, transport, |error| {
                tracing::debug!(pod = %self.pod(), %error, "DNS upstream attempt failed");
                failed(error.kind());
            })
            .await;
        if let Err(ForwardError::NoUpstream) = &result {
            failed("no_upstream");
        }
        result
    }

    fn servfail(&self, request: &Message) -> Option<Vec<u8>> {
        match answer::error_answer(request, ResponseCode::ServFail) {
            Ok(reply) => Some(reply),
            Err(error) => {
                // Echoing a question we just parsed cannot fail in practice; fall back to a
                // bare header rather than leave the client waiting.
                tracing::warn!(pod = %self.pod(), %error, "cannot encode SERVFAIL; sending a bare header");
                let raw = request.to_vec().ok()?;
                answer::header_only_answer(&raw, ResponseCode::ServFail)
            }
        }
    }

    fn count(&self, transport: Transport, query_type: &str, answered_by: AnsweredBy, rcode: u8) {
        self.metrics
            .requests
            .get_or_create(&DnsRequestLabels {
                request_protocol: transport.label(),
                request_query_type: query_type.to_owned(),
                source_workload: self.pod_name.clone(),
                source_workload_namespace: self.pod_namespace.clone(),
                answered_by: answered_by.label(),
                response_code: rcode_name(rcode).to_owned(),
            })
            .inc();
    }

    fn pod(&self) -> String {
        format!("{}/{}", self.pod_namespace, self.pod_name)
    }
}

/// The RCODE mnemonic of RFC 1035 / 2136, as dig prints it.
fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "OTHER",
    }
}
