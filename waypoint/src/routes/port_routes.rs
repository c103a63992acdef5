//! The routes of one Service port for one audience, sorted by precedence once at compile time so
//! that a request takes the first entry that matches.
//!
//! HTTPRoute precedence (the API's order, continuing on ties): Exact path, then the longest
//! PathPrefix (by characters), then RegularExpression paths (whose order the API leaves to
//! implementations: below every prefix); then a method match, more header matches, more query
//! matches; then the older route — the model keeps no creation timestamp, so this falls back to
//! the next criterion — then the route's `namespace/name` alphabetically, the rule's position,
//! the match's position. GRPCRoute: see [`super::matching`]'s `GrpcRank`.
//!
//! Exact paths are indexed by path, so the common case is one hash probe plus the prefix list.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::matching::{GrpcMatcher, GrpcRank, HttpMatcher, HttpRank, MatchDump};
use super::rule::Rule;
use super::RequestFacts;

/// A rule that matched, and how.
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'a> {
    pub rule: &'a Rule,
    /// The `PathPrefix` value that matched (as configured), for `ReplacePrefixMatch`.
    pub matched_prefix: Option<&'a str>,
}

/// Where an entry comes from, for tie-breaking: route order (`namespace/name`), rule, match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Origin {
    pub(crate) route: usize,
    pub(crate) rule: usize,
    pub(crate) matched: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry<M, R> {
    pub(crate) rule: Arc<Rule>,
    pub(crate) matcher: Arc<M>,
    pub(crate) rank: R,
    pub(crate) origin: Origin,
}

impl<M, R: Ord + Copy> Entry<M, R> {
    /// Preferred entries first: highest rank, then earliest origin.
    fn precedence(&self) -> (std::cmp::Reverse<R>, Origin) {
        (std::cmp::Reverse(self.rank), self.origin)
    }
}

pub(crate) type HttpEntry = Entry<HttpMatcher, HttpRank>;
pub(crate) type GrpcEntry = Entry<GrpcMatcher, GrpcRank>;

/// The routes of one Service port, for one audience (every client, or one consumer namespace).
#[derive(Debug, Default)]
pub struct PortRoutes {
    /// Exact-path entries by path, each list in precedence order. Every Exact entry outranks
    /// every other, so a hit here that matches is final.
    http_exact: HashMap<String, Vec<HttpEntry>>,
    /// PathPrefix and RegularExpression entries, in precedence order.
    http_other: Vec<HttpEntry>,
    grpc: Vec<GrpcEntry>,
}

impl PortRoutes {
    pub(crate) fn build(mut http: Vec<HttpEntry>, mut grpc: Vec<GrpcEntry>) -> Self {
        http.sort_by_key(Entry::precedence);
        grpc.sort_by_key(Entry::precedence);
        let mut http_exact: HashMap<String, Vec<HttpEntry>> = HashMap::new();
        let mut http_other = Vec::new();
        for entry in http {
            match entry.matcher.exact_path() {
                Some(path) => http_exact.entry(path.to_owned()).or_default().push(entry),
                None => http_other.push(entry),
            }
        }
        PortRoutes {
            http_exact,
            http_other,
            grpc,
        }
    }

    /// The rule for this request. A gRPC request tries the GRPCRoutes first, then the
    /// HTTPRoutes; any other request only the HTTPRoutes. `None`: routes exist but none
    /// matches (the API's 404).
    pub fn find(&self, request: &RequestFacts<'_>) -> Option<RouteMatch<'_>> {
        if request.grpc {
            if let Some(entry) = self.grpc.iter().find(|e| e.matcher.matches(request)) {
                return Some(RouteMatch {
                    rule: &entry.rule,
                    matched_prefix: None,
                });
            }
        }
        let exact = self.http_exact.get(request.path).into_iter().flatten();
        exact
            .chain(&self.http_other)
            .find(|e| e.matcher.matches(request))
            .map(|entry| RouteMatch {
                rule: &entry.rule,
                matched_prefix: entry.matcher.matched_prefix(),
            })
    }

    /// Whether no route attaches (never true for a table entry; for callers' defaults).
    pub fn is_empty(&self) -> bool {
        self.http_exact.is_empty() && self.http_other.is_empty() && self.grpc.is_empty()
    }

    /// Every entry in precedence order, gRPC first (as a gRPC request tries them), for dumps.
    pub(crate) fn dump(&self) -> Vec<EntryDump<'_>> {
        let mut exact: Vec<&HttpEntry> = self.http_exact.values().flatten().collect();
        exact.sort_by_key(|e| e.precedence());
        let grpc = self.grpc.iter().map(|e| EntryDump {
            rule: &e.rule,
            matches: MatchDump::Grpc(e.matcher.source.as_ref()),
        });
        let http = exact
            .into_iter()
            .chain(&self.http_other)
            .map(|e| EntryDump {
                rule: &e.rule,
                matches: MatchDump::Http(&e.matcher.source),
            });
        grpc.chain(http).collect()
    }
}

/// One entry of `/config_dump`: the match and the rule it leads to.
#[derive(Debug, Serialize)]
pub(crate) struct EntryDump<'a> {
    #[serde(rename = "match")]
    pub(crate) matches: MatchDump<'a>,
    pub(crate) rule: &'a Rule,
}
