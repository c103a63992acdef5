//! One CSR API request, from its headers to the answer (see `certs::api` for the wire format).
//! Every issuance and every refusal is logged with the caller's node and the identity asked for.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use certs::api::{
    CreateCertificateRequest, CreateCertificateResponse, CONTENT_TYPE, CREATE_CERTIFICATE_PATH,
    MAX_MESSAGE_BYTES,
};
use certs::{CaError, SpiffeId};
use http::{Request, Response, StatusCode};
use prost::Message;

use crate::authz::{authorise, Refusal};
use crate::service::CaService;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body larger than {MAX_MESSAGE_BYTES} bytes; a CreateCertificateRequest is a CSR of about a KiB")]
    TooLarge,
    #[error("the request body stream failed: {0}")]
    Stream(#[from] h2::Error),
}

/// Reads a whole request body, stopping at the first byte beyond [`MAX_MESSAGE_BYTES`].
async fn read_body(mut body: h2::RecvStream) -> Result<Vec<u8>, BodyError> {
    let mut payload = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        if payload.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(BodyError::TooLarge);
        }
        let _ = body.flow_control().release_capacity(chunk.len());
        payload.extend_from_slice(&chunk);
    }
    Ok(payload)
}

/// A declared length beyond the limit is refused before a byte of the body is read.
fn declared_too_large(request: &Request<h2::RecvStream>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_MESSAGE_BYTES as u64)
}

pub fn send(
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

pub fn refuse(status: StatusCode, reason: impl Into<String>) -> (StatusCode, Bytes) {
    let mut reason = reason.into();
    reason.push('\n');
    (status, Bytes::from(reason))
}

pub async fn handle(
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
    if declared_too_large(&request) {
        tracing::warn!(%peer, "certificate request refused: declared body too large");
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TooLarge.to_string(),
        );
    }
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| token.trim().to_owned());
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%peer, %error, "certificate request refused: unreadable body");
            let status = match error {
                BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Stream(_) => StatusCode::BAD_REQUEST,
            };
            return refuse(status, format!("malformed request body: {error}"));
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
                | Refusal::NotOwnIdentity { .. }
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
