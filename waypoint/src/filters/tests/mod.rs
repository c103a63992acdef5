//! Filter tests: the API's own tables as unit tables, then the conformance suite's filter cases
//! replayed through route lookup and the filters in the proxy's phase order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod compile;
mod conformance;
mod cors;
mod headers;
mod path;
mod redirect;
mod rewrite;

use discovery::gateway_api::{BackendRef, Cors as CorsSpec, HeaderModifier, HeaderValue as Hv};
use http::HeaderMap;

use super::*;
use crate::routes::{BackendProblem, ServiceKey};

/// A resolver for filters that never reach a snapshot: every reference resolves as written.
fn resolve_as_written(reference: &BackendRef) -> BackendTarget {
    match reference.port {
        Some(port) => BackendTarget::Service {
            key: ServiceKey::new(&reference.namespace, &reference.name),
            port,
        },
        None => BackendTarget::Invalid(BackendProblem::MissingPort {
            service: ServiceKey::new(&reference.namespace, &reference.name),
        }),
    }
}

fn modifier(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderModifier {
    let values = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(name, value)| Hv {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect()
    };
    HeaderModifier {
        set: values(set),
        add: values(add),
        remove: remove.iter().map(|n| (*n).into()).collect(),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// Values of `name`, joined with `,` the way the conformance harness reads them.
fn joined(map: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = map
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn cors_spec(origins: &[&str], credentials: bool, methods: &[&str], allow: &[&str]) -> CorsSpec {
    let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    CorsSpec {
        allow_origins: list(origins),
        allow_credentials: credentials,
        allow_methods: list(methods),
        allow_headers: list(allow),
        expose_headers: Vec::new(),
        max_age_seconds: 5,
    }
}
