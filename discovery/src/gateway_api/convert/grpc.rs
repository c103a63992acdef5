//! GRPCRoute spec → [`GrpcRule`]s.

use std::sync::LazyLock;

use regex::Regex;

use super::check::{Field, Problems};
use super::common::{backend_ref, check_rule_list, header_matches};
use super::filters::{filters, GRPC_FILTER_TYPES};
use crate::gateway_api::model::{
    GrpcBackend, GrpcFilter, GrpcMatch, GrpcMethodMatch, GrpcRule, HttpFilter,
};
use crate::gateway_api::resource::{GrpcMatchSpec, GrpcRuleSpec, HttpFilterSpec};

const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;

// The CRD's patterns for Exact service and method names.
#[allow(clippy::expect_used)]
static SERVICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$").expect("a valid pattern")
});
#[allow(clippy::expect_used)]
static METHOD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z_0-9]*$").expect("a valid pattern"));

pub(crate) fn rules(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<GrpcRuleSpec>>,
    own: &str,
) -> Vec<GrpcRule> {
    let specs = problems.list(field, specs, MAX_RULES);
    check_rule_list(
        problems,
        field,
        specs
            .iter()
            .map(|r| (r.name.as_deref(), r.matches.as_ref().map_or(0, Vec::len))),
    );
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| rule(problems, &field.index(i), spec, own))
        .collect()
}

fn rule(problems: &mut Problems, field: &Field, spec: &GrpcRuleSpec, own: &str) -> GrpcRule {
    let matches_field = field.at("matches");
    let matches = problems
        .list(&matches_field, &spec.matches, MAX_MATCHES)
        .iter()
        .enumerate()
        .map(|(i, m)| grpc_match(problems, &matches_field.index(i), m))
        .collect();
    let backends_field = field.at("backendRefs");
    let backends = problems
        .list(&backends_field, &spec.backend_refs, 16)
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let field = backends_field.index(i);
            GrpcBackend {
                backend: backend_ref(problems, &field, &b.backend(), own),
                filters: grpc_filters(problems, &field.at("filters"), &b.filters, own),
            }
        })
        .collect();
    GrpcRule {
        name: super::rule_name(problems, &field.at("name"), &spec.name),
        matches,
        filters: grpc_filters(problems, &field.at("filters"), &spec.filters, own),
        backends,
    }
}

fn grpc_filters(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<HttpFilterSpec>>,
    own: &str,
) -> Vec<GrpcFilter> {
    filters(problems, field, specs, GRPC_FILTER_TYPES, own)
        .into_iter()
        .filter_map(|filter| match filter {
            HttpFilter::RequestHeaderModifier(m) => Some(GrpcFilter::RequestHeaderModifier(m)),
            HttpFilter::ResponseHeaderModifier(m) => Some(GrpcFilter::ResponseHeaderModifier(m)),
            HttpFilter::RequestMirror(m) => Some(GrpcFilter::RequestMirror(m)),
            HttpFilter::ExtensionRef(r) => Some(GrpcFilter::ExtensionRef(r)),
            // `filters` refused every other type against GRPC_FILTER_TYPES.
            _ => None,
        })
        .collect()
}

fn grpc_match(problems: &mut Problems, field: &Field, spec: &GrpcMatchSpec) -> GrpcMatch {
    let method = spec.method.as_ref().and_then(|m| {
        let field = field.at("method");
        if m.service.is_none() && m.method.is_none() {
            problems.add(
                &field,
                "names neither service nor method; give one or both (or drop the method match)",
            );
        }
        for (name, value) in [("service", &m.service), ("method", &m.method)] {
            if value.as_ref().is_some_and(|v| v.len() > 1024) {
                problems.add(&field.at(name), "is longer than 1024 characters");
            }
        }
        match problems.one_of(
            &field.at("type"),
            m.type_.as_deref().unwrap_or("Exact"),
            &["Exact", "RegularExpression"],
        )? {
            "Exact" => {
                for (name, value, pattern) in [
                    ("service", &m.service, &*SERVICE),
                    ("method", &m.method, &*METHOD),
                ] {
                    if let Some(value) = value.as_deref().filter(|v| !pattern.is_match(v)) {
                        problems.add(
                            &field.at(name),
                            format!("{value:?} is not a valid gRPC {name} name"),
                        );
                    }
                }
                Some(GrpcMethodMatch::Exact {
                    service: m.service.clone(),
                    method: m.method.clone(),
                })
            }
            _ => {
                for (name, value) in [("service", &m.service), ("method", &m.method)] {
                    if let Some(value) = value {
                        problems.regex(&field.at(name), value);
                    }
                }
                Some(GrpcMethodMatch::RegularExpression {
                    service: m.service.clone(),
                    method: m.method.clone(),
                })
            }
        }
    });
    GrpcMatch {
        method,
        headers: header_matches(problems, &field.at("headers"), &spec.headers, None),
    }
}
