//! Authorization tests as scenario tables: a request (who, what, where) in, the decision and
//! the deciding policy out. Policies are real manifests: through discovery's `--manifests`
//! loader and `Snapshot::waypoint_policies` (scenarios), or converted one by one (semantics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dump;
mod normalize;
mod scenarios;
mod semantics;

use std::net::IpAddr;
use std::sync::Arc;

use certs::SpiffeId;
use discovery::convert::{
    authorization_policy_or_fail_closed, AuthorizationPolicyResource, ConvertError, FailClosedScope,
};
use discovery::policy::AuthorizationPolicy;
use discovery::{LocalSource, LocalSourceConfig, Snapshot};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;

/// Loads manifests the way `--manifests` does.
fn load(yaml: &str) -> Arc<Snapshot> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let source = LocalSource::load(LocalSourceConfig::new([file]))
        .unwrap_or_else(|errors| panic!("manifests do not load: {errors}"));
    source.current()
}

/// Converts each YAML document as discovery does, fail-closed forms included; a document
/// discovery leaves out (AUDIT) is left out here too.
fn policies(yaml: &str) -> Vec<AuthorizationPolicy> {
    let scope = FailClosedScope {
        root_namespace: discovery::DEFAULT_ROOT_NAMESPACE,
        unnamed: "(unnamed)",
    };
    yaml.split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .filter_map(|doc| {
            let value: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            let decoded = serde_yaml::from_value::<AuthorizationPolicyResource>(value.clone())
                .map_err(|e| ConvertError {
                    field: "(decode)".into(),
                    problem: e.to_string(),
                });
            authorization_policy_or_fail_closed(decoded, || value, &scope).ok()
        })
        .collect()
}

/// One AuthorizationPolicy document in namespace `shop`, bound to the Service `reviews`.
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec:\n  targetRefs: [{{kind: Service, name: reviews}}]\n{spec}"
    )
}

/// A request; by default `GET` from `shop/productpage` (10.0.0.5) to `reviews` port 9080.
#[derive(Debug, Clone)]
struct Req {
    identity: Option<SpiffeId>,
    ip: IpAddr,
    method: Method,
    path: String,
    host: String,
    port: u16,
    headers: HeaderMap,
    /// The Service in namespace `shop` the request is for.
    service: &'static str,
}

fn req(method: &str, path: &str) -> Req {
    Req {
        identity: Some(SpiffeId::new("cluster.local", "shop", "productpage").unwrap()),
        ip: "10.0.0.5".parse().unwrap(),
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path: path.to_owned(),
        host: "reviews.shop.svc.cluster.local".to_owned(),
        port: 9080,
        headers: HeaderMap::new(),
        service: "reviews",
    }
}

impl Req {
    /// From the service account `ns/sa`.
    fn from(mut self, account: &str) -> Self {
        let (ns, sa) = account.split_once('/').unwrap();
        self.identity = Some(SpiffeId::new("cluster.local", ns, sa).unwrap());
        self
    }
    fn plaintext(mut self) -> Self {
        self.identity = None;
        self
    }
    fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }
    fn host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }
    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
    fn header(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
        self
    }
    fn to(mut self, service: &'static str) -> Self {
        self.service = service;
        self
    }

    fn l7(&self) -> L7Request<'_> {
        L7Request {
            source_identity: self.identity.as_ref(),
            source_ip: self.ip,
            method: &self.method,
            path: &self.path,
            host: &self.host,
            destination_port: self.port,
            headers: &self.headers,
        }
    }

    fn tcp(&self) -> TcpConnection<'_> {
        TcpConnection {
            source_identity: self.identity.as_ref(),
            source_ip: self.ip,
            destination_port: self.port,
        }
    }
}

/// The expected decision; policies by `namespace/name`.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// No ALLOW policy applies.
    Allowed,
    AllowedBy(&'static str),
    DeniedBy(&'static str),
    /// ALLOW policies apply, none matched.
    NotAllowed,
}

fn assert_decision(case: &str, got: Decision<'_>, want: Want) {
    let name = got.policy_name();
    let ok = match want {
        Want::Allowed => got == Decision::Allowed,
        Want::AllowedBy(p) => matches!(got, Decision::AllowedBy(_)) && name.as_deref() == Some(p),
        Want::DeniedBy(p) => matches!(got, Decision::DeniedBy(_)) && name.as_deref() == Some(p),
        Want::NotAllowed => matches!(got, Decision::NotAllowed { .. }),
    };
    assert!(ok, "{case}: got {got} ({name:?}), want {want:?}");
}
