//! The CSR API over HTTPS/HTTP/2: the accept loop and the phases of a connection. Anyone who can
//! reach the port can connect, so before a connection has sent a request it holds only what the
//! limits allow (`Limits::connection_limiter`: runtime's limiter, with a per-source rate and
//! room made by closing idle connections), and each phase has a deadline:
//!
//! TLS handshake → HTTP/2 preface and SETTINGS (`--handshake-timeout` each) → headers of the
//! first request (`--header-timeout`) → each request whole: body, authentication, issuance
//! (`--request-timeout`, answered 408) → idle between requests (`--idle-timeout`).
//!
//! On a drain (SIGTERM) the listener closes, connections still handshaking close, and those
//! with HTTP/2 up get a GOAWAY and finish the requests they have in flight.
//!
//! What a request gets is decided in `handler`.
//!
//! Why not tonic (issue 9): it would not be smaller, and limits would be lost. tonic's server
//! owns its connections and has no deadline for the HTTP/2 preface, the first request's headers
//! or an idle connection, nor a way to close an idle one to admit another: keeping them takes an
//! IO wrapper and a busy/idle layer, more code than `serve_connection`. gRPC framing (length
//! prefix, `grpc-status` trailers, refusals as 200) would also break rolling upgrades against
//! nodes on this contract, for tonic, tonic-prost, tower and hyper's h2 server on one unary call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use certs::api::ca_identity;
use certs::{CaError, CertificateAuthority, CurrentCertificate, WorkloadCertificate};
use http::{Request, StatusCode};
use runtime::{AcceptedConnection, ConnectionPermit, DrainWatcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::handler::{handle, refuse, send};
use crate::limits::{http2, LogThrottle};
pub use crate::service::CaService;

/// How long the CA's own serving certificate lives; it is re-issued at half of that.
const SERVING_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot issue the CA's own serving certificate: {0}")]
    ServingCertificate(#[from] CaError),
    #[error("cannot build the CA's TLS configuration: {0}")]
    Tls(#[from] certs::tls::TlsConfigError),
}

/// Why a connection ended before its peer closed it.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{phase} not complete within {limit:?}")]
    Deadline {
        phase: &'static str,
        limit: Duration,
    },
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
}

fn serving_certificate(ca: &CertificateAuthority) -> Result<WorkloadCertificate, CaError> {
    let identity = ca_identity(ca.trust_domain()).map_err(certs::MaterialError::from)?;
    let (issued, key) = ca.issue_for_new_key(&identity, SERVING_CERT_TTL)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok(WorkloadCertificate::from_pem(&issued.chain_pem, key)?)
}

/// What every connection of one server shares.
struct Shared {
    service: Arc<CaService>,
    acceptor: TlsAcceptor,
    /// Requests cut off at their deadline, reported once per interval.
    timeouts: Mutex<LogThrottle>,
}

/// Serves the API on `listener` until the drain starts; connections each hold the drain until
/// they are done (see the module doc).
pub async fn serve(
    listener: TcpListener,
    service: Arc<CaService>,
    drain: DrainWatcher,
) -> Result<(), ServeError> {
    let current = CurrentCertificate::new(serving_certificate(&service.ca)?);
    let config = certs::tls::server_config_without_client_auth(current.clone())?;
    let renewer = tokio::spawn(renew_serving_certificate(service.clone(), current));
    let _stop_renewer = AbortOnDrop(renewer);
    let limiter = service.limits.connection_limiter();
    let shared = Arc::new(Shared {
        service,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        timeouts: Mutex::new(LogThrottle::default()),
    });
    runtime::accept_until_drained(
        "ambit-ca",
        listener,
        limiter,
        drain,
        move |connection, drain| serve_admitted(shared.clone(), connection, drain),
    )
    .await;
    Ok(())
}

/// One admitted connection, until it ends, is displaced to make room, or the drain cuts its
/// handshake short.
async fn serve_admitted(
    shared: Arc<Shared>,
    AcceptedConnection {
        stream,
        peer,
        permit,
    }: AcceptedConnection,
    drain: DrainWatcher,
) {
    let result = tokio::select! {
        result = serve_connection(&shared, stream, peer, &permit, &drain) => result,
        () = permit.displaced() => {
            tracing::debug!(%peer, "closed an idle CA connection to make room for a new one");
            Ok(())
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "CA connection ended with an error");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn renew_serving_certificate(service: Arc<CaService>, current: CurrentCertificate) {
    loop {
        tokio::time::sleep(SERVING_CERT_TTL / 2).await;
        match serving_certificate(&service.ca) {
            Ok(certificate) => current.replace(certificate),
            Err(error) => tracing::error!(%error, "cannot renew the CA's serving certificate"),
        }
    }
}

async fn serve_connection(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: &ConnectionPermit,
    drain: &DrainWatcher,
) -> Result<(), ConnectionError> {
    let limits = &shared.service.limits;
    let deadline = |phase, limit| ConnectionError::Deadline { phase, limit };
    // Before HTTP/2 is up there is no request to finish: a drain simply closes.
    let handshakes = async {
        let tls = tokio::time::timeout(limits.handshake_timeout, shared.acceptor.accept(tcp))
            .await
            .map_err(|_| deadline("TLS handshake", limits.handshake_timeout))?
            .map_err(ConnectionError::Tls)?;
        tokio::time::timeout(
            limits.handshake_timeout,
            http2::server_builder().handshake::<_, Bytes>(tls),
        )
        .await
        .map_err(|_| deadline("HTTP/2 preface and SETTINGS", limits.handshake_timeout))?
        .map_err(ConnectionError::Http2)
    };
    let mut http = tokio::select! {
        http = handshakes => http?,
        () = drain.drain_started() => return Ok(()),
    };
    // Requests in flight; dropped (aborted) with the connection.
    let mut requests = JoinSet::new();
    let (mut phase, mut limit) = ("request headers", limits.header_timeout);
    let mut until = tokio::time::Instant::now() + limit;
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = http.accept() => {
                // After a GOAWAY: None once the requests in flight are answered.
                let Some(accepted) = accepted else { return Ok(()) };
                let (request, respond) = accepted?;
                // A connection told to close while its headers arrived has lost the race.
                if requests.is_empty() && !permit.mark_busy() {
                    return Ok(());
                }
                requests.spawn(answer(shared.clone(), request, respond, peer));
            }
            () = drain.drain_started(), if !draining => {
                // GOAWAY: no new requests; h2 keeps serving those already sent.
                http.graceful_shutdown();
                draining = true;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                if requests.is_empty() {
                    permit.mark_idle();
                    (phase, limit) = ("next request on an idle connection", limits.idle_timeout);
                    until = tokio::time::Instant::now() + limit;
                }
            }
            () = tokio::time::sleep_until(until), if requests.is_empty() => {
                return Err(deadline(phase, limit));
            }
        }
    }
}

/// Answers one request, cut off at the request deadline.
async fn answer(
    shared: Arc<Shared>,
    request: Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    peer: SocketAddr,
) {
    let service = &shared.service;
    let limit = service.limits.request_timeout;
    let (status, body) = match tokio::time::timeout(limit, handle(service, request, peer)).await {
        Ok(answer) => answer,
        Err(_) => {
            let held = shared
                .timeouts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hit(Instant::now());
            if let Some(count) = held {
                tracing::warn!(%peer, timed_out = count, limit = ?limit, "certificate requests cut off at the request deadline (count since the last report): their body, authentication or issuance took too long; if these are node agents, check the network to the CA and the API server's latency, or raise --request-timeout");
            }
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request was not complete within {limit:?} (body, authentication and issuance); retry, and check the network between the node and the CA"),
            )
        }
    };
    if let Err(error) = send(respond, status, body) {
        tracing::debug!(%peer, %error, "cannot send the CA response");
    }
}
