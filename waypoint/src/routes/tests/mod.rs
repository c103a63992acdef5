//! Route engine tests over snapshots built from real manifests (YAML through discovery's
//! `--manifests` loader), as scenario tables: request in, rule (or 404 / no route) out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attach;
mod backends;
pub(crate) mod conformance;
mod precedence;
mod scale;

use std::sync::Arc;

use discovery::{LocalSource, LocalSourceConfig, Snapshot};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;

/// Namespaces `shop` (the producer) and `client` (a consumer), Services `shop/cart` (ports 80
/// `http`, 8080 `http-alt`), `shop/cart-v1`, `shop/cart-v2` (port 80) and `other/billing`.
pub(crate) const BASE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.200.0.10
  ports: [{name: http, port: 80, targetPort: 8080}, {name: http-alt, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: cart-v1, namespace: shop}
spec:
  clusterIP: 10.200.0.11
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: cart-v2, namespace: shop}
spec:
  clusterIP: 10.200.0.12
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: billing, namespace: other}
spec:
  clusterIP: 10.200.0.20
  ports: [{name: http, port: 80}]
"#;

/// Loads manifests the way `--manifests` does; rejected Gateway API objects are kept.
pub(crate) fn load(yaml: &str) -> Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let source = LocalSource::load(LocalSourceConfig::new([file]))
        .unwrap_or_else(|errors| panic!("manifests do not load: {errors}"));
    source.current()
}

/// [`load`], and every Gateway API object must be valid.
pub(crate) fn snapshot(yaml: &str) -> Arc<Snapshot> {
    let snapshot = load(yaml);
    let rejected = snapshot.gateway_api().rejected();
    assert!(
        rejected.is_empty(),
        "test manifests must be valid: {}",
        rejected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    snapshot
}

/// [`BASE`] plus `routes`, compiled.
pub(crate) fn table(routes: &str) -> RouteTable {
    compile(&snapshot(&format!("{BASE}\n---\n{routes}")))
}

pub(crate) fn key(service: &str) -> ServiceKey {
    let (namespace, name) = service.split_once('/').unwrap();
    ServiceKey::new(namespace, name)
}

/// A request to look up: `target` is `METHOD /path?query`.
pub(crate) struct Request {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    grpc: bool,
}

pub(crate) fn request(target: &str, headers: &[(&str, &str)]) -> Request {
    let (method, uri) = target.split_once(' ').unwrap();
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (uri.to_owned(), None),
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Request {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        query,
        headers: map,
        grpc: false,
    }
}

/// A gRPC call of `service/method`.
pub(crate) fn grpc(method: &str, headers: &[(&str, &str)]) -> Request {
    let mut r = request(&format!("POST /{method}"), headers);
    r.grpc = true;
    r
}

impl Request {
    pub(crate) fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            grpc: self.grpc,
        }
    }
}

/// What a lookup found, in one word for tables: `no route` (forward to the Service), `404`,
/// or the rule as `route#index` (or the rule's name when it has one).
pub(crate) fn outcome(
    table: &RouteTable,
    service: &str,
    port: u16,
    client: Option<&str>,
    request: &Request,
) -> String {
    let Some(routes) = table.service_routes(&key(service), port, client) else {
        return "no route".into();
    };
    match routes.find(&request.facts()) {
        None => "404".into(),
        Some(found) => rule_label(found.rule),
    }
}

pub(crate) fn rule_label(rule: &Rule) -> String {
    rule.rule_name
        .clone()
        .unwrap_or_else(|| format!("{}#{}", rule.route.name, rule.rule_index))
}

/// The Service name of the first backend of the rule a request takes (`404`, `no route`).
pub(crate) fn backend_of(
    table: &RouteTable,
    service: &str,
    port: u16,
    client: Option<&str>,
    request: &Request,
) -> String {
    let Some(routes) = table.service_routes(&key(service), port, client) else {
        return "no route".into();
    };
    match routes.find(&request.facts()) {
        None => "404".into(),
        Some(found) => match found.rule.backends.first().map(|b| &b.target) {
            Some(BackendTarget::Service { key, .. }) => key.name.clone(),
            Some(BackendTarget::Invalid(problem)) => format!("invalid: {problem}"),
            None => "no backends".into(),
        },
    }
}
