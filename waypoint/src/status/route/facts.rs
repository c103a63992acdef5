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
    let facts_of = |filter: &'a HttpFilter| -> FilterFacts<'a> {
        let mirror = match filter {
            HttpFilter::RequestMirror(m) => Some(&m.backend),
            _ => None,
        };
        (mirror, unsupported(Filter::from_http(filter, &mut resolve)))
    };
    let rules = route.rules.iter().map(|rule| RuleShape {
        filters: &rule.filters,
        backends: rule
            .backends
            .iter()
            .map(|b| (&b.backend, b.filters.as_slice()))
            .collect(),
    });
    let mut facts = RouteFacts::new(kind, route, route.generation, route.rejected.as_ref());
    facts.parents = parents;
    facts.add_rules(rules, facts_of);
    facts
}

pub(super) fn grpc_facts<'a>(snapshot: &Snapshot, route: &'a GrpcRoute) -> RouteFacts<'a> {
    let kind = RouteKind::Grpc;
    let (ns, parents) = (route.namespace.as_str(), route.parent_refs.as_slice());
    let mut resolve = |b: &BackendRef| resolve_route_backend(snapshot, kind, ns, parents, b);
    let facts_of = |filter: &'a GrpcFilter| -> FilterFacts<'a> {
        let mirror = match filter {
            GrpcFilter::RequestMirror(m) => Some(&m.backend),
            _ => None,
        };
        (mirror, unsupported(Filter::from_grpc(filter, &mut resolve)))
    };
    let rules = route.rules.iter().map(|rule| RuleShape {
        filters: &rule.filters,
        backends: rule
            .backends
            .iter()
            .map(|b| (&b.backend, b.filters.as_slice()))
            .collect(),
    });
    let mut facts = RouteFacts::new(kind, route, route.generation, route.rejected.as_ref());
    facts.parents = parents;
    facts.add_rules(rules, facts_of);
    facts
}

/// What status reads of one rule, for either route kind: its filters, and its backends with
/// theirs.
struct RuleShape<'a, F> {
    filters: &'a [F],
    backends: Vec<(&'a BackendRef, &'a [F])>,
}

impl<'a> RouteFacts<'a> {
    /// Records every rule's filters and backend references under their field paths.
    fn add_rules<F: 'a>(
        &mut self,
        rules: impl ExactSizeIterator<Item = RuleShape<'a, F>>,
        mut facts_of: impl FnMut(&'a F) -> FilterFacts<'a>,
    ) {
        self.rules = rules.len();
        for (r, rule) in rules.enumerate() {
            let filters: Vec<_> = rule.filters.iter().map(&mut facts_of).collect();
            self.add_filters(&format!("spec.rules[{r}]"), filters, Some(r));
            for (b, (backend, backend_filters)) in rule.backends.into_iter().enumerate() {
                let at = format!("spec.rules[{r}].backendRefs[{b}]");
                self.references.push((at.clone(), backend));
                let filters: Vec<_> = backend_filters.iter().map(&mut facts_of).collect();
                self.add_filters(&at, filters, None);
            }
        }
    }
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
