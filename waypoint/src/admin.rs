//! The waypoint's HTTP endpoints, on runtime's bounded server: `/config_dump` (what this
//! waypoint serves and how: its Gateway, identity, the compiled routes per Service port),
//! Prometheus metrics and readiness.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use prometheus_client::registry::Registry;
use runtime::http_server::{self, HttpServerConfig, Reply};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({what}): {source}; is another waypoint (or anything else) bound to it?")]
pub struct AdminError {
    what: &'static str,
    address: SocketAddr,
    source: std::io::Error,
}

/// `/config_dump`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigDump<'a> {
    gateway: String,
    identity: String,
    snapshot_generation: u64,
    route_compile_ms: f64,
    routes: &'a crate::routes::RouteTable,
    /// The AuthorizationPolicies this waypoint enforces (targetRefs to its Gateway, its class
    /// or a Service bound to it); ztunnel never enforces those at L4.
    authorization: crate::authz::AuthzDump,
    /// Where request spans go; absent when tracing is off (`traceparent` passes through).
    #[serde(skip_serializing_if = "Option::is_none")]
    tracing: Option<TracingDump>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TracingDump {
    otlp_endpoint: String,
    /// Of the traces that start here; callers' sampling decisions are followed.
    sampling_percent: f64,
}

pub struct Endpoints {
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
}

pub fn start(
    proxy: &Arc<Proxy>,
    registry: Arc<Registry>,
    addresses: (SocketAddr, SocketAddr, SocketAddr),
    shutdown: CancellationToken,
) -> Result<Endpoints, AdminError> {
    let bind = |what, address| {
        http_server::bind_shared(address).map_err(|source| AdminError {
            what,
            address,
            source,
        })
    };
    let admin = bind("admin", addresses.0)?;
    let metrics = bind("metrics", addresses.1)?;
    let readiness = bind("readiness", addresses.2)?;
    let endpoints = Endpoints {
        admin: admin.local_addr().unwrap_or(addresses.0),
        metrics: metrics.local_addr().unwrap_or(addresses.1),
        readiness: readiness.local_addr().unwrap_or(addresses.2),
    };
    let bounds = HttpServerConfig::default();

    let (p, r) = (proxy.clone(), registry.clone());
    tokio::spawn(http_server::serve(
        "admin",
        admin,
        Arc::new(move |path: &str| match path {
            "/config_dump" => config_dump(&p),
            "/metrics" | "/stats/prometheus" => scrape(&r),
            _ => Reply::text(
                StatusCode::NOT_FOUND,
                "try /config_dump or /stats/prometheus\n",
            ),
        }),
        bounds,
        shutdown.clone(),
    ));
    tokio::spawn(http_server::serve(
        "metrics",
        metrics,
        Arc::new(move |path: &str| match path {
            "/metrics" | "/stats/prometheus" => scrape(&registry),
            _ => Reply::text(StatusCode::NOT_FOUND, "metrics are at /stats/prometheus\n"),
        }),
        bounds,
        shutdown.clone(),
    ));
    tokio::spawn(http_server::serve(
        "readiness",
        readiness,
        Arc::new(move |path: &str| match path {
            // Serving at all means the certificate was issued and the first table compiled:
            // the readiness server starts only after both.
            "/healthz/ready" => Reply::text(StatusCode::OK, "ready\n"),
            _ => Reply::text(StatusCode::NOT_FOUND, "readiness is at /healthz/ready\n"),
        }),
        bounds,
        shutdown,
    ));
    Ok(endpoints)
}

fn config_dump(proxy: &Proxy) -> Reply {
    let compiled = proxy.state.current();
    let dump = ConfigDump {
        gateway: proxy.gateway.to_string(),
        identity: proxy.identity.to_string(),
        snapshot_generation: compiled.snapshot.generation(),
        route_compile_ms: compiled.compile_time.as_secs_f64() * 1e3,
        routes: &compiled.routes,
        authorization: crate::authz::dump(
            &compiled.snapshot,
            (
                proxy.gateway.namespace.as_str(),
                proxy.gateway.name.as_str(),
            ),
        ),
        tracing: proxy.tracer.as_ref().map(|tracer| TracingDump {
            otlp_endpoint: tracer.endpoint.to_string(),
            sampling_percent: tracer.sampler.as_percent(),
        }),
    };
    match serde_json::to_string(&dump) {
        Ok(json) => Reply::json(json),
        Err(error) => Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the config dump: {error}\n"),
        ),
    }
}

fn scrape(registry: &Registry) -> Reply {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.push_str("# encoding failed\n");
    }
    Reply::text(StatusCode::OK, text)
}
