//! The CA's certificate-signing API: protobuf messages over HTTPS (HTTP/2), and the client a
//! node agent uses. One unary call:
//!
//! `POST /ambit.ca.v1.CertificateService/CreateCertificate`, `content-type: application/x-protobuf`,
//! `authorization: Bearer <node token>`, body [`CreateCertificateRequest`]. Success is 200 with a
//! [`CreateCertificateResponse`]; refusals are 4xx with a plain-text reason.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::failure::HandshakeFailure;
use crate::identity::SpiffeId;
use crate::manager::{CertificateSource, SignedChain};
use crate::material::TrustBundle;
use crate::trust::SharedTrustBundle;

pub const CREATE_CERTIFICATE_PATH: &str = "/ambit.ca.v1.CertificateService/CreateCertificate";
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Requests and responses are a CSR or a short chain; anything bigger is not ours.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

#[derive(Clone, PartialEq, Message)]
pub struct CreateCertificateRequest {
    /// PKCS#10 request, PEM.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// The identity asked for, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    #[prost(string, tag = "2")]
    pub identity: String,
    /// Requested lifetime; 0 means the CA's default. The CA may shorten it.
    #[prost(int64, tag = "3")]
    pub validity_seconds: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct CreateCertificateResponse {
    /// PEM certificates, leaf first.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
    /// PEM roots the CA's certificates chain to.
    #[prost(string, repeated, tag = "2")]
    pub trust_bundle: Vec<String>,
}

/// The SPIFFE identity the CA serves its API with.
pub fn ca_identity(trust_domain: &str) -> Result<SpiffeId, crate::IdentityError> {
    SpiffeId::new(trust_domain, "ambit-system", "ambit-ca")
}

#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("cannot connect to the CA at {address}: {source}; check --ca-address and that ambit-ca is running")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS with the CA at {address} failed: {failure}")]
    Handshake {
        address: String,
        failure: HandshakeFailure,
    },
    #[error("HTTP/2 with the CA failed: {0}")]
    Http(#[from] h2::Error),
    #[error("cannot read the node token from {path}: {source}; check --ca-token-file")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA refused the request ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("the CA sent an invalid response: {0}")]
    BadResponse(String),
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid request: {0}")]
    Request(String),
}

/// Where the node's bearer token comes from. A file is re-read on each request so that rotated
/// (projected) tokens are picked up.
#[derive(Debug, Clone)]
pub enum NodeToken {
    File(PathBuf),
    Value(String),
}

impl NodeToken {
    fn read(&self) -> Result<String, CaClientError> {
        match self {
            NodeToken::Value(token) => Ok(token.clone()),
            NodeToken::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|source| CaClientError::Token {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// Talks to `ambit-ca`. Each call opens its own connection: calls are rare (once per identity
/// per half-lifetime) and a fresh connection never trips over a CA that restarted.
pub struct CaClient {
    /// `host:port` or `ip:port`; names are resolved on every call so a moved CA is found.
    address: String,
    connector: TlsConnector,
    token: NodeToken,
    timeout: Duration,
    validity: Option<Duration>,
}

impl CaClient {
    /// `bundle` is the root(s) the CA's serving certificate chains to (`--ca-root`), fixed for
    /// the client's life. A node that follows root rotations uses [`Self::with_rotating_trust`].
    pub fn new(
        address: impl Into<String>,
        bundle: &TrustBundle,
        token: NodeToken,
    ) -> Result<Self, crate::tls::TlsConfigError> {
        let expected = expected_ca(bundle.trust_domain())?;
        let config = crate::tls::client_config_without_certificate(bundle, vec![expected])?;
        Ok(Self::from_config(address.into(), config, token))
    }

    /// Accepts the CA if its serving certificate chains to the node's current roots (`shared`,
    /// which the certificate manager updates from CA answers) or to `configured` (`--ca-root`):
    /// the CA stays reachable across a rotation, and a bad answer can never lock the node out
    /// of its CA. See [`crate::tls::ca_client_config`] for the trade-off.
    pub fn with_rotating_trust(
        address: impl Into<String>,
        configured: &TrustBundle,
        shared: &SharedTrustBundle,
        token: NodeToken,
    ) -> Result<Self, crate::tls::TlsConfigError> {
        let expected = expected_ca(configured.trust_domain())?;
        let config = crate::tls::ca_client_config(configured, shared, vec![expected])?;
        Ok(Self::from_config(address.into(), config, token))
    }

    fn from_config(address: String, config: rustls::ClientConfig, token: NodeToken) -> Self {
        CaClient {
            address,
            connector: TlsConnector::from(Arc::new(config)),
            token,
            timeout: Duration::from_secs(10),
            validity: None,
        }
    }

    /// Asks for certificates of this lifetime instead of the CA's default.
    pub fn with_validity(mut self, validity: Option<Duration>) -> Self {
        self.validity = validity;
        self
    }

    pub async fn create_certificate(
        &self,
        request: CreateCertificateRequest,
    ) -> Result<CreateCertificateResponse, CaClientError> {
        tokio::time::timeout(self.timeout, self.call(request))
            .await
            .map_err(|_| CaClientError::Timeout(self.timeout))?
    }

    async fn call(
        &self,
        request: CreateCertificateRequest,
    ) -> Result<CreateCertificateResponse, CaClientError> {
        let token = self.token.read()?;
        let connect_error = |source| CaClientError::Connect {
            address: self.address.clone(),
            source,
        };
        let tcp = TcpStream::connect(self.address.as_str())
            .await
            .map_err(connect_error)?;
        let peer = tcp.peer_addr().map_err(connect_error)?;
        // A request is a few small writes (HEADERS, DATA); with Nagle the second one waits for
        // the CA's delayed ACK, ~40 ms on every pod start that needs a certificate.
        let _ = tcp.set_nodelay(true);
        // The CA is verified by its SPIFFE identity, not by name: the server name only has to
        // be syntactically valid, and an IP is never sent as SNI.
        let tls = self
            .connector
            .connect(ServerName::from(peer.ip()), tcp)
            .await
            .map_err(|e| CaClientError::Handshake {
                address: self.address.clone(),
                failure: HandshakeFailure::classify_io(&e),
            })?;
        let (sender, connection) = h2::client::handshake(tls).await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "CA connection closed");
            }
        });
        let result = send_unary(sender, &token, request).await;
        driver.abort();
        result
    }
}

async fn send_unary(
    sender: h2::client::SendRequest<Bytes>,
    token: &str,
    request: CreateCertificateRequest,
) -> Result<CreateCertificateResponse, CaClientError> {
    let mut sender = sender.ready().await?;
    let http_request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("https://ambit-ca{CREATE_CERTIFICATE_PATH}"))
        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .map_err(|e| CaClientError::Request(e.to_string()))?;
    let (response, mut body) = sender.send_request(http_request, false)?;
    body.send_data(Bytes::from(request.encode_to_vec()), true)?;
    let response = response.await?;
    let status = response.status();
    let payload = read_body(response.into_body(), MAX_MESSAGE_BYTES).await?;
    if status != http::StatusCode::OK {
        return Err(CaClientError::Refused {
            status: status.as_u16(),
            reason: String::from_utf8_lossy(&payload).trim().to_owned(),
        });
    }
    CreateCertificateResponse::decode(payload.as_slice())
        .map_err(|e| CaClientError::BadResponse(e.to_string()))
}

fn expected_ca(trust_domain: &str) -> Result<SpiffeId, crate::tls::TlsConfigError> {
    ca_identity(trust_domain).map_err(|e| crate::tls::TlsConfigError::Verifier(e.to_string()))
}

/// Reads a whole HTTP/2 body, refusing more than `limit` bytes.
pub async fn read_body(mut body: h2::RecvStream, limit: usize) -> Result<Vec<u8>, CaClientError> {
    let mut payload = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if payload.len() + chunk.len() > limit {
            return Err(CaClientError::BadResponse(format!(
                "message larger than {limit} bytes"
            )));
        }
        payload.extend_from_slice(&chunk);
    }
    Ok(payload)
}

impl CertificateSource for CaClient {
    fn sign<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            let signed = self.sign_with_bundle(identity, csr_pem).await?;
            Ok(signed.chain_pem)
        })
    }

    fn sign_with_bundle<'a>(
        &'a self,
        identity: &'a SpiffeId,
        csr_pem: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<SignedChain, String>> + Send + 'a>> {
        Box::pin(async move {
            let request = CreateCertificateRequest {
                csr: csr_pem.to_owned(),
                identity: identity.to_string(),
                validity_seconds: self
                    .validity
                    .map(|v| i64::try_from(v.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
            };
            let response = self
                .create_certificate(request)
                .await
                .map_err(|e| e.to_string())?;
            if response.cert_chain.is_empty() {
                return Err("the CA answered with an empty certificate chain".to_owned());
            }
            Ok(SignedChain {
                chain_pem: response.cert_chain.concat(),
                // Passed on even when empty: the manager reports an empty bundle rather than
                // silently keeping the old roots.
                trust_bundle: Some(response.trust_bundle),
            })
        })
    }
}
