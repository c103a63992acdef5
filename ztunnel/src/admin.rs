//! The node's HTTP endpoints: admin (`/config_dump`, on localhost), Prometheus metrics and
//! readiness — on runtime's bounded server (header-read timeout, connection cap).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;
use prometheus_client::registry::Registry;
use runtime::http_server::{self, HttpServerConfig, Reply};

use crate::agent::{Agent, IdentityLabels};
use crate::{dump, metrics};

/// A server that could not bind its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({what}): {source}; is another ztunnel (or anything else) bound to it?")]
pub struct AdminError {
    what: &'static str,
    address: SocketAddr,
    source: std::io::Error,
}

/// Where the three servers listen (the bound addresses, so port 0 works).
pub struct Addresses {
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
}

/// Binds the three servers (an error stops the start) and serves them until shutdown.
pub fn start(agent: &Arc<Agent>, registry: Arc<Registry>) -> Result<Addresses, AdminError> {
    let bind = |what, address| {
        http_server::bind_shared(address).map_err(|source| AdminError {
            what,
            address,
            source,
        })
    };
    let bounds = HttpServerConfig::default();
    let admin = bind("admin", agent.config.admin_address)?;
    let metrics = bind("metrics", agent.config.metrics_address)?;
    let readiness = bind("readiness", agent.config.readiness_address)?;
    let local = |listener: &tokio::net::TcpListener, configured| {
        listener.local_addr().unwrap_or(configured)
    };
    let addresses = Addresses {
        admin: local(&admin, agent.config.admin_address),
        metrics: local(&metrics, agent.config.metrics_address),
        readiness: local(&readiness, agent.config.readiness_address),
    };

    let (a, r) = (agent.clone(), registry.clone());
    tokio::spawn(http_server::serve(
        "admin",
        admin,
        Arc::new(move |path: &str| match path {
            "/config_dump" => match serde_json::to_string(&dump::config_dump(&a)) {
                Ok(json) => Reply::json(json),
                Err(error) => Reply::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the config dump: {error}\n"),
                ),
            },
            "/metrics" | "/stats/prometheus" => scrape(&a, &r),
            _ => Reply::text(
                StatusCode::NOT_FOUND,
                "try /config_dump or /stats/prometheus\n",
            ),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    let (a, r) = (agent.clone(), registry);
    tokio::spawn(http_server::serve(
        "metrics",
        metrics,
        Arc::new(move |path: &str| match path {
            "/metrics" | "/stats/prometheus" => scrape(&a, &r),
            _ => Reply::text(StatusCode::NOT_FOUND, "metrics are at /stats/prometheus\n"),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    let a = agent.clone();
    tokio::spawn(http_server::serve(
        "readiness",
        readiness,
        Arc::new(move |path: &str| match (path, a.ready()) {
            ("/healthz/ready", Ok(())) => Reply::text(StatusCode::OK, "ready\n"),
            ("/healthz/ready", Err(why)) => Reply::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
            _ => Reply::text(StatusCode::NOT_FOUND, "readiness is at /healthz/ready\n"),
        }),
        bounds,
        agent.shutdown.clone(),
    ));
    Ok(addresses)
}

fn scrape(agent: &Agent, registry: &Registry) -> Reply {
    refresh_certificate_expiry(agent);
    if let Ok(heap) = runtime::allocator::heap_stats() {
        let gauge = |bytes: usize| i64::try_from(bytes).unwrap_or(i64::MAX);
        agent
            .metrics
            .heap_allocated_bytes
            .set(gauge(heap.allocated));
        agent.metrics.heap_resident_bytes.set(gauge(heap.resident));
    }
    Reply::text(StatusCode::OK, metrics::encode(registry))
}

/// Sets the certificate-expiry gauges from the manager's current state; called on every
/// scrape so the figures are never stale.
fn refresh_certificate_expiry(agent: &Agent) {
    let gauges = &agent.metrics.certificate_expiry_seconds;
    gauges.clear();
    for status in agent.certificates.status() {
        if let Some(not_after) = status.not_after {
            let left = not_after
                .duration_since(SystemTime::now())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            gauges
                .get_or_create(&IdentityLabels {
                    identity: status.identity.to_string(),
                })
                .set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }
}
