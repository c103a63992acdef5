//! A compiled route rule: what the proxy does with a request once it matched — filters, then
//! one weighted backend — and the matches it is reached by.

use std::sync::Arc;

use discovery::gateway_api::{GrpcRoute, GrpcRule, HttpRoute, HttpRule, Retry, Timeouts};
use discovery::Snapshot;
use serde::Serialize;

use super::backend::{resolve_route_backend, BackendTarget};
use super::id::{RouteId, RouteKind};
use super::matching::{GrpcMatcher, HttpMatcher, MatchProblem};
use crate::filters::{compile_grpc, compile_http, Filter};

/// One rule of an HTTPRoute or GRPCRoute, shared by every Service port its route attaches to.
#[derive(Debug, Serialize)]
pub struct Rule {
    pub route: RouteId,
    /// Position of the rule in the route (`spec.rules[i]`).
    pub rule_index: usize,
    pub rule_name: Option<String>,
    /// The route's hostnames: not used for Service parents (GAMMA matches the Service by its
    /// address), kept for Gateway parents' hostname intersection.
    #[serde(
        skip_serializing_if = "<[String]>::is_empty",
        serialize_with = "strings"
    )]
    pub hostnames: Arc<[String]>,
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    /// HTTPRoute only; a GRPCRoute rule has none.
    pub timeouts: Timeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Matches of this rule that could not be compiled and so match nothing.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "display_all")]
    pub problems: Vec<MatchProblem>,
    #[serde(skip)]
    total_weight: u64,
}

/// One backendRef of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub target: BackendTarget,
    /// 0 means never picked.
    pub weight: u32,
    /// Applied only to requests sent to this backend, after the rule's filters.
    pub filters: Vec<Filter>,
}

impl Rule {
    /// A backend for one request, chosen by weight: `random` (uniform over `u32`, drawn by the
    /// caller) picks a point in the sum of the weights. `None` when no backend has weight: the
    /// proxy then answers 500, as the API requires.
    pub fn pick_backend(&self, random: u32) -> Option<&Backend> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = u64::from(random) % self.total_weight;
        for backend in &self.backends {
            let weight = u64::from(backend.weight);
            if point < weight {
                return Some(backend);
            }
            point -= weight;
        }
        None
    }

    /// Why the rule cannot serve a request at all, if one of its filters cannot be applied.
    pub fn unsupported_filter(&self) -> Option<&str> {
        self.filters.iter().find_map(|f| match f {
            Filter::Unsupported(why) => Some(why.as_str()),
            _ => None,
        })
    }

    fn new(
        route: RouteId,
        rule_index: usize,
        rule_name: Option<String>,
        hostnames: Arc<[String]>,
        filters: Vec<Filter>,
        backends: Vec<Backend>,
    ) -> Self {
        let total_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
        Rule {
            route,
            rule_index,
            rule_name,
            hostnames,
            filters,
            backends,
            timeouts: Timeouts::default(),
            retry: None,
            problems: Vec::new(),
            total_weight,
        }
    }
}

fn strings<S: serde::Serializer>(list: &Arc<[String]>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter())
}

fn display_all<S: serde::Serializer>(list: &[MatchProblem], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(ToString::to_string))
}

/// A compiled rule with the matches that lead to it (in the rule's order).
pub(crate) struct Compiled<M> {
    pub(crate) rule: Arc<Rule>,
    pub(crate) matches: Vec<Arc<M>>,
}

/// Compiles the rules of an HTTPRoute.
pub(crate) fn http_rules(snapshot: &Snapshot, route: &HttpRoute) -> Vec<Compiled<HttpMatcher>> {
    let id = RouteId {
        kind: RouteKind::Http,
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    };
    let hostnames: Arc<[String]> = route.hostnames.clone().into();
    let mut resolve = |backend: &_| {
        let (kind, ns, parents) = (RouteKind::Http, &route.namespace, &route.parent_refs);
        resolve_route_backend(snapshot, kind, ns, parents, backend)
    };
    route
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule): (usize, &HttpRule)| {
            let backends = rule
                .backends
                .iter()
                .map(|b| Backend {
                    target: resolve(&b.backend),
                    weight: b.backend.weight,
                    filters: compile_http(&b.filters, &mut resolve),
                })
                .collect();
            let filters = compile_http(&rule.filters, &mut resolve);
            let mut compiled = Rule::new(
                id.clone(),
                index,
                rule.name.clone(),
                Arc::clone(&hostnames),
                filters,
                backends,
            );
            compiled.timeouts = rule.timeouts.clone();
            compiled.retry = rule.retry.clone();
            let mut matches = Vec::with_capacity(rule.matches.len());
            for m in &rule.matches {
                match HttpMatcher::compile(m) {
                    Ok(m) => matches.push(Arc::new(m)),
                    Err(problem) => compiled.problems.push(problem),
                }
            }
            Compiled {
                rule: Arc::new(compiled),
                matches,
            }
        })
        .collect()
}

/// Compiles the rules of a GRPCRoute; a rule without matches gets one that matches everything.
pub(crate) fn grpc_rules(snapshot: &Snapshot, route: &GrpcRoute) -> Vec<Compiled<GrpcMatcher>> {
    let id = RouteId {
        kind: RouteKind::Grpc,
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    };
    let hostnames: Arc<[String]> = route.hostnames.clone().into();
    let mut resolve = |backend: &_| {
        let (kind, ns, parents) = (RouteKind::Grpc, &route.namespace, &route.parent_refs);
        resolve_route_backend(snapshot, kind, ns, parents, backend)
    };
    route
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule): (usize, &GrpcRule)| {
            let backends = rule
                .backends
                .iter()
                .map(|b| Backend {
                    target: resolve(&b.backend),
                    weight: b.backend.weight,
                    filters: compile_grpc(&b.filters, &mut resolve),
                })
                .collect();
            let filters = compile_grpc(&rule.filters, &mut resolve);
            let mut compiled = Rule::new(
                id.clone(),
                index,
                rule.name.clone(),
                Arc::clone(&hostnames),
                filters,
                backends,
            );
            let sources: Vec<Option<_>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches.iter().map(Some).collect()
            };
            let mut matches = Vec::with_capacity(sources.len());
            for m in sources {
                match GrpcMatcher::compile(m) {
                    Ok(m) => matches.push(Arc::new(m)),
                    Err(problem) => compiled.problems.push(problem),
                }
            }
            Compiled {
                rule: Arc::new(compiled),
                matches,
            }
        })
        .collect()
}
