//! HTTP/1.1 upgrades (WebSocket and others): the request goes to the endpoint with its
//! `Connection: upgrade` and `Upgrade` headers; when the endpoint switches protocols, the
//! client's and the endpoint's connections are joined byte for byte until either side ends.
//! Never retried: the upgraded stream is not replayable.

use std::sync::Arc;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers;
use super::{Downstream, Proxy};
use crate::destination::UpstreamProtocol;
use crate::error::ProxyError;
use crate::upstream::{Body, BoxError, Endpoint, UpstreamError};

pub(super) async fn forward(
    proxy: &Arc<Proxy>,
    downstream: &Downstream,
    endpoint: &Endpoint,
    mut parts: Parts,
    body: Incoming,
) -> Result<Response<Body>, ProxyError> {
    let authority = headers::authority(&parts.uri, &parts.headers)
        .unwrap_or_else(|| downstream.destination.authority.to_string());
    // The client's side of the upgrade resolves once our 101 has been written to it; hyper
    // keeps it in the request's extensions.
    let Some(client_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ProxyError::BadRequest(
            "an upgrade request on a connection that cannot be upgraded".into(),
        ));
    };
    headers::strip_hop_by_hop(&mut parts.headers, true);
    let mut request = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    // Upgrades exist only in HTTP/1.1, whatever the port says.
    let endpoint = Endpoint {
        protocol: UpstreamProtocol::Http1,
        ..endpoint.clone()
    };
    headers::for_upstream(&mut request, endpoint.protocol, &authority);
    let mut response = proxy
        .upstreams
        .send(&endpoint, downstream.peer_addr, request)
        .await
        .map_err(|error| match error {
            UpstreamError::Connect(reason) => ProxyError::UpstreamConnect {
                endpoint: endpoint.addr.to_string(),
                reason,
            },
            UpstreamError::Request(reason) => ProxyError::UpstreamReset {
                endpoint: endpoint.addr.to_string(),
                reason,
            },
        })?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(response);
    }
    let server_upgrade = hyper::upgrade::on(&mut response);
    let target = endpoint.addr;
    tokio::spawn(async move {
        let (client, server) = match tokio::try_join!(client_upgrade, server_upgrade) {
            Ok(both) => both,
            Err(error) => {
                tracing::debug!(%error, upstream = %target, "upgrade not completed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        match tokio::io::copy_bidirectional(&mut client, &mut server).await {
            Ok((sent, received)) => {
                tracing::debug!(sent, received, upstream = %target, "upgraded stream ended")
            }
            Err(error) => tracing::debug!(%error, upstream = %target, "upgraded stream failed"),
        }
    });
    Ok(response)
}
