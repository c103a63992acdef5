//! What route status needs to know of an HTTPRoute or a GRPCRoute, gathered in one walk: every
//! backend reference with its field path, and the filters the engine cannot apply (decided by
//! the engine's own filter compiler, so status names exactly what the proxy answers 500 for).

use std::collections::BTreeSet;

use discovery::gateway_api::{
    BackendRef, GrpcFilter, GrpcRoute, HttpFilter, HttpRoute, ParentRef, Rejection,
};
use discovery::Snapshot;

use crate::filters::Filter;
use crate::routes::{resolve_route_backend, RouteKind};

/// What status needs of a route of either kind.
pub(super) struct RouteFacts<'a> {
    pub(super) kind: RouteKind,
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
    pub(super) generation: Option<i64>,
    pub(super) parents: &'a [ParentRef],
    pub(super) rejected: Option<&'a Rejection>,
    /// Every backend reference (backendRefs and mirrors) with its field path.
    pub(super) references: Vec<(String, &'a BackendRef)>,
    pub(super) rules: usize,
    /// Rules with a filter that cannot be applied, so that they serve no request.
    pub(super) unusable_rules: BTreeSet<usize>,
    /// Filters that cannot be applied: `(field path, why)`.
    pub(super) unsupported: Vec<(String, String)>,
}

/// One filter as status sees it: the backend it mirrors to, and why it cannot be applied.
type FilterFacts<'a> = (Option<&'a BackendRef>, Option<String>);

pub(super) fn http_facts<'a>(snapshot: &Snapshot, route: &'a HttpRoute) -> RouteFacts<'a> {
    let kind = RouteKind::Http;
    let (ns, parents) = (route.namespace.as_str(), route.parent_refs.as_slice());
    let mut resolve = |b: &BackendRef| resolve_route_backend(snapshot, kind, ns, parents, b);
    // The engine's own filter compiler decides what cannot be applied, so status names
    // exactly the filters the proxy answers 500 for.
    let mut facts_of = |filter: &'a HttpFilter| -> FilterFacts<'a> {
        let mirror = match filter {
            HttpFilter::RequestMirror(m) => Some(&m.backend),
            _ => None,
        };
        (mirror, unsupported(Filter::from_http(filter, &mut resolve)))
    };
    let mut facts = RouteFacts::new(kind, route, route.generation, route.rejected.as_ref());
    facts.parents = parents;
    facts.rules = route.rules.len();
    for (r, rule) in route.rules.iter().enumerate() {
        let filters: Vec<_> = rule.filters.iter().map(&mut facts_of).collect();
        facts.add_filters(&format!("spec.rules[{r}]"), filters, Some(r));
        for (b, backend) in rule.backends.iter().enumerate() {
            let at = format!("spec.rules[{r}].backendRefs[{b}]");
            facts.references.push((at.clone(), &backend.backend));
            let filters: Vec<_> = backend.filters.iter().map(&mut facts_of).collect();
            facts.add_filters(&at, filters, None);
        }
    }
    facts
}

pub(super) fn grpc_facts<'a>(snapshot: &Snapshot, route: &'a GrpcRoute) -> RouteFacts<'a> {
    let kind = RouteKind::Grpc;
    let (ns, parents) = (route.namespace.as_str(), route.parent_refs.as_slice());
    let mut resolve = |b: &BackendRef| resolve_route_backend(snapshot, kind, ns, parents, b);
    let mut facts_of = |filter: &'a GrpcFilter| -> FilterFacts<'a> {
        let mirror = match filter {
            GrpcFilter::RequestMirror(m) => Some(&m.backend),
            _ => None,
        };
        (mirror, unsupported(Filter::from_grpc(filter, &mut resolve)))
    };
    let mut facts = RouteFacts::new(kind, route, route.generation, route.rejected.as_ref());
    facts.parents = parents;
    facts.rules = route.rules.len();
    for (r, rule) in route.rules.iter().enumerate() {
        let filters: Vec<_> = rule.filters.iter().map(&mut facts_of).collect();
        facts.add_filters(&format!("spec.rules[{r}]"), filters, Some(r));
        for (b, backend) in rule.backends.iter().enumerate() {
            let at = format!("spec.rules[{r}].backendRefs[{b}]");
            facts.references.push((at.clone(), &backend.backend));
            let filters: Vec<_> = backend.filters.iter().map(&mut facts_of).collect();
            facts.add_filters(&at, filters, None);
        }
    }
    facts
}

fn unsupported(filter: Filter) -> Option<String> {
    match filter {
        Filter::Unsupported(why) => Some(why),
        _ => None,
    }
}

/// A route's name, for [`RouteFacts::new`].
trait Named {
    fn names(&self) -> (&str, &str);
}

impl Named for HttpRoute {
    fn names(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl Named for GrpcRoute {
    fn names(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

impl<'a> RouteFacts<'a> {
    fn new(
        kind: RouteKind,
        route: &'a impl Named,
        generation: Option<i64>,
        rejected: Option<&'a Rejection>,
    ) -> Self {
        let (namespace, name) = route.names();
        RouteFacts {
            kind,
            namespace,
            name,
            generation,
            parents: &[],
            rejected,
            references: Vec::new(),
            rules: 0,
            unusable_rules: BTreeSet::new(),
            unsupported: Vec::new(),
        }
    }

    /// Records the filters at `at` (a rule's when `rule` is given, else a backendRef's).
    fn add_filters(&mut self, at: &str, filters: Vec<FilterFacts<'a>>, rule: Option<usize>) {
        for (f, (mirror, why)) in filters.into_iter().enumerate() {
            let field = format!("{at}.filters[{f}]");
            if let Some(mirror) = mirror {
                self.references.push((field.clone(), mirror));
            }
            if let Some(why) = why {
                self.unsupported.push((field, why));
                self.unusable_rules.extend(rule);
            }
        }
    }
}
