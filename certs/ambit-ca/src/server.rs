//! The CSR API over HTTPS/HTTP/2 (see `certs::api` for the wire format). Every issuance and
//! every refusal is logged with the caller's node and the identity asked for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use certs::api::{
    ca_identity, read_body, CreateCertificateRequest, CreateCertificateResponse, CONTENT_TYPE,
    CREATE_CERTIFICATE_PATH, MAX_MESSAGE_BYTES,
};
use certs::{CaError, CertificateAuthority, CurrentCertificate, SpiffeId, WorkloadCertificate};
use http::{Request, Response, StatusCode};
use prost::Message;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::authz::{authorise, NodeAuthenticator, NodeWorkloads, Refusal};

/// How long the CA's own serving certificate lives; it is re-issued at half of that.
const SERVING_CERT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct CaService {
    pub ca: CertificateAuthority,
    pub authenticator: Box<dyn NodeAuthenticator>,
    pub workloads: Arc<dyn NodeWorkloads>,
    /// Lifetime of issued certificates when the caller does not ask for one.
    pub default_ttl: Duration,
    /// Longest lifetime a caller may obtain.
    pub max_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot issue the CA's own serving certificate: {0}")]
    ServingCertificate(#[from] CaError),
    #[error("cannot build the CA's TLS configuration: {0}")]
    Tls(#[from] certs::tls::TlsConfigError),
}

fn serving_certificate(ca: &CertificateAuthority) -> Result<WorkloadCertificate, CaError> {
    let identity = ca_identity(ca.trust_domain()).map_err(certs::MaterialError::from)?;
    let (issued, key) = ca.issue_for_new_key(&identity, SERVING_CERT_TTL)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    Ok(WorkloadCertificate::from_pem(&issued.chain_pem, key)?)
}

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, service: Arc<CaService>) -> Result<(), ServeError> {
    let current = CurrentCertificate::new(serving_certificate(&service.ca)?);
    let config = certs::tls::server_config_without_client_auth(current.clone())?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let renewer = tokio::spawn(renew_serving_certificate(service.clone(), current));
    let _stop_renewer = AbortOnDrop(renewer);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            if let Err(error) = serve_connection(acceptor, tcp, peer, service).await {
                tracing::debug!(%peer, %error, "CA connection ended with an error");
            }
        });
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
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    service: Arc<CaService>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out")??;
    let mut connection = h2::server::Builder::new()
        .max_concurrent_streams(64)
        .handshake::<_, Bytes>(tls)
        .await?;
    while let Some(request) = connection.accept().await {
        let (request, respond) = request?;
        let service = service.clone();
        tokio::spawn(async move {
            let (status, body) = handle(&service, request, peer).await;
            if let Err(error) = send(respond, status, body) {
                tracing::debug!(%peer, %error, "cannot send the CA response");
            }
        });
    }
    Ok(())
}

fn send(
    mut respond: h2::server::SendResponse<Bytes>,
    status: StatusCode,
    body: Bytes,
) -> Result<(), h2::Error> {
    let content_type = if status == StatusCode::OK {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    let mut stream = respond.send_response(response, false)?;
    stream.send_data(body, true)
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> (StatusCode, Bytes) {
    let mut reason = reason.into();
    reason.push('\n');
    (status, Bytes::from(reason))
}

async fn handle(
    service: &CaService,
    request: Request<h2::RecvStream>,
    peer: SocketAddr,
) -> (StatusCode, Bytes) {
    if request.uri().path() != CREATE_CERTIFICATE_PATH {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("unknown method; the CA serves POST {CREATE_CERTIFICATE_PATH}"),
        );
    }
    if request.method() != http::Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let body = match read_body(request.into_body(), MAX_MESSAGE_BYTES).await {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%peer, %error, "certificate request refused: unreadable body");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed request body: {error}"),
            );
        }
    };
    let message = match CreateCertificateRequest::decode(body.as_slice()) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%peer, %error, "certificate request refused: malformed request body");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "malformed request body: not a CreateCertificateRequest protobuf ({error})"
                ),
            );
        }
    };
    let identity: SpiffeId = match message.identity.parse() {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(%peer, %error, "certificate request refused: bad identity");
            return refuse(StatusCode::BAD_REQUEST, format!("bad identity: {error}"));
        }
    };
    let node = match authorise(
        service.authenticator.as_ref(),
        service.workloads.as_ref(),
        service.ca.trust_domain(),
        token.as_deref(),
        &identity,
    )
    .await
    {
        Ok(node) => node,
        Err((node, refusal)) => {
            tracing::warn!(
                %peer,
                node = node.as_deref().unwrap_or("<unauthenticated>"),
                identity = %identity,
                reason = %refusal,
                "certificate request refused"
            );
            let status = match refusal {
                Refusal::MissingToken | Refusal::UnknownToken | Refusal::TokenRejected { .. } => {
                    StatusCode::UNAUTHORIZED
                }
                Refusal::NotReady
                | Refusal::TokensUnavailable(_)
                | Refusal::ReviewUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::NoPodOnNode { .. }
                | Refusal::ForeignTrustDomain { .. }
                | Refusal::NotZtunnel(_) => StatusCode::FORBIDDEN,
            };
            return refuse(status, refusal.to_string());
        }
    };
    let ttl = match u64::try_from(message.validity_seconds) {
        Ok(0) | Err(_) => service.default_ttl,
        Ok(seconds) => Duration::from_secs(seconds).min(service.max_ttl),
    };
    match service.ca.issue(&message.csr, &identity, Some(ttl)) {
        Ok(issued) => {
            tracing::info!(
                %peer,
                node = %node,
                identity = %identity,
                serial = %issued.serial_hex,
                ttl_seconds = ttl.as_secs(),
                "certificate issued"
            );
            let response = CreateCertificateResponse {
                cert_chain: split_pem_chain(&issued.chain_pem),
                trust_bundle: split_pem_chain(&service.ca.trust_bundle().to_pem()),
            };
            (StatusCode::OK, Bytes::from(response.encode_to_vec()))
        }
        Err(error) => {
            tracing::warn!(%peer, node = %node, identity = %identity, reason = %error, "certificate request refused");
            let status = match error {
                CaError::MalformedCsr(_)
                | CaError::BadCsrSignature
                | CaError::UnsupportedKeyType(_)
                | CaError::CsrIdentityMismatch { .. }
                | CaError::WrongTrustDomain { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, error.to_string())
        }
    }
}

/// Splits concatenated PEM blocks into one string per certificate.
fn split_pem_chain(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    pem.split_inclusive(END)
        .map(str::trim)
        .filter(|block| block.ends_with(END))
        .map(|block| format!("{block}\n"))
        .collect()
}
