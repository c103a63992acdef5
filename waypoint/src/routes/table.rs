//! Attaching routes to Service ports (GAMMA, GEP-1426 and GEP-1294) and the table a request is
//! looked up in.
//!
//! - A parentRef of group `""` and kind `Service` attaches to that Service; `port` restricts it
//!   to that Service port, `sectionName` to the port of that name; neither means every port.
//!   A parent Service the snapshot does not know attaches nothing. Gateway parents are not the
//!   waypoint's (the ingress gateway will read them).
//! - A producer route (in the Service's namespace) applies to every client. A consumer route (in
//!   another namespace) applies only to clients in the route's namespace, and for them replaces
//!   the producer routes. The replacement is per Service port: a consumer route for port 80 does
//!   not hide the producer's routes for port 8080 (GEP-1294 speaks of the Service; per port is
//!   the reading that never leaves a port without the routes its owner gave it).
//! - Rejected routes (no rules) attach nothing.

use std::collections::{BTreeMap, HashMap};

use discovery::gateway_api::ParentRef;
use discovery::{Protocol, Snapshot};

use super::id::ServiceKey;
use super::matching::{GrpcMatcher, HttpMatcher};
use super::port_routes::{Entry, GrpcEntry, HttpEntry, Origin, PortRoutes};
use super::rule::{grpc_rules, http_rules, Compiled};

/// Every route of one snapshot, by Service port. Immutable: a new snapshot compiles a new table.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub(crate) services: HashMap<ServiceKey, Vec<PortEntry>>,
    rules: usize,
}

/// The routes of one Service port. `producer`: for every client (absent when only consumer
/// routes attach); `consumers`: by client namespace, sorted by it.
#[derive(Debug)]
pub(crate) struct PortEntry {
    pub(crate) port: u16,
    pub(crate) producer: Option<PortRoutes>,
    pub(crate) consumers: Vec<(String, PortRoutes)>,
}

impl RouteTable {
    /// Compiles the snapshot's GAMMA routes (the same as [`compile`]).
    pub fn compile(snapshot: &Snapshot) -> RouteTable {
        compile(snapshot)
    }

    /// The routes for traffic to `service:port` from a client in `client_namespace` (`None`
    /// when unknown: producer routes only). `None`: no route attaches, so the proxy forwards to
    /// the Service itself.
    pub fn service_routes(
        &self,
        service: &ServiceKey,
        port: u16,
        client_namespace: Option<&str>,
    ) -> Option<&PortRoutes> {
        let ports = self.services.get(service)?;
        let entry = ports
            .binary_search_by_key(&port, |p| p.port)
            .ok()
            .and_then(|i| ports.get(i))?;
        let consumer = client_namespace.and_then(|ns| {
            entry
                .consumers
                .binary_search_by(|(n, _)| n.as_str().cmp(ns))
                .ok()
                .and_then(|i| entry.consumers.get(i))
                .map(|(_, routes)| routes)
        });
        consumer.or(entry.producer.as_ref())
    }

    /// Compiled rules (each rule once, however many ports it attaches to).
    pub fn route_count(&self) -> usize {
        self.rules
    }
}

/// Entries collected for one Service port before sorting.
#[derive(Default)]
struct PortBuilder {
    producer: Lists,
    consumers: BTreeMap<String, Lists>,
}

#[derive(Default)]
struct Lists {
    http: Vec<HttpEntry>,
    grpc: Vec<GrpcEntry>,
    any: bool,
}

type Builder = HashMap<ServiceKey, BTreeMap<u16, PortBuilder>>;

/// Compiles the snapshot's GAMMA routes.
pub fn compile(snapshot: &Snapshot) -> RouteTable {
    let view = snapshot.gateway_api();
    let mut builder: Builder = HashMap::new();
    let mut rules = 0;
    // The view keeps routes sorted by namespace/name: the index is the tie-breaking order.
    for (order, route) in view.http_routes().iter().enumerate() {
        if route.rejected.is_some() {
            continue;
        }
        let parents = service_ports(snapshot, &route.parent_refs);
        if parents.is_empty() {
            continue;
        }
        let compiled = http_rules(snapshot, route);
        rules += compiled.len();
        attach(
            &mut builder,
            &parents,
            &route.namespace,
            order,
            &compiled,
            |l| &mut l.http,
        );
    }
    for (order, route) in view.grpc_routes().iter().enumerate() {
        if route.rejected.is_some() {
            continue;
        }
        let parents = service_ports(snapshot, &route.parent_refs);
        if parents.is_empty() {
            continue;
        }
        let compiled = grpc_rules(snapshot, route);
        rules += compiled.len();
        attach(
            &mut builder,
            &parents,
            &route.namespace,
            order,
            &compiled,
            |l| &mut l.grpc,
        );
    }
    let services = builder
        .into_iter()
        .map(|(service, ports)| {
            let ports = ports
                .into_iter()
                .map(|(port, built)| PortEntry {
                    port,
                    producer: built
                        .producer
                        .any
                        .then(|| PortRoutes::build(built.producer.http, built.producer.grpc)),
                    consumers: built
                        .consumers
                        .into_iter()
                        .map(|(ns, l)| (ns, PortRoutes::build(l.http, l.grpc)))
                        .collect(),
                })
                .collect();
            (service, ports)
        })
        .collect();
    RouteTable { services, rules }
}

/// The Service ports a route's parentRefs attach to, each once.
fn service_ports(snapshot: &Snapshot, parents: &[ParentRef]) -> Vec<(ServiceKey, u16)> {
    let mut out = Vec::new();
    for parent in parents {
        if !parent.group.is_empty() || parent.kind != "Service" {
            continue;
        }
        let Some(service) = snapshot.service(&parent.namespace, &parent.name) else {
            continue;
        };
        for port in &service.ports {
            let wanted = port.protocol == Protocol::Tcp
                && parent.port.is_none_or(|p| p == port.port)
                && parent
                    .section_name
                    .as_deref()
                    .is_none_or(|s| s == port.name);
            if wanted {
                out.push((ServiceKey::new(&parent.namespace, &parent.name), port.port));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Adds every match of every rule of one route to each of its Service ports.
fn attach<M, R: Copy>(
    builder: &mut Builder,
    parents: &[(ServiceKey, u16)],
    route_namespace: &str,
    order: usize,
    compiled: &[Compiled<M>],
    list: impl Fn(&mut Lists) -> &mut Vec<Entry<M, R>>,
) where
    M: Ranked<Rank = R>,
{
    for (service, port) in parents {
        let ports = builder.entry(service.clone()).or_default();
        let built = ports.entry(*port).or_default();
        let lists = if service.namespace == route_namespace {
            &mut built.producer
        } else {
            built
                .consumers
                .entry(route_namespace.to_owned())
                .or_default()
        };
        lists.any = true;
        for (rule_index, rule) in compiled.iter().enumerate() {
            for (match_index, matcher) in rule.matches.iter().enumerate() {
                list(lists).push(Entry {
                    rule: std::sync::Arc::clone(&rule.rule),
                    matcher: std::sync::Arc::clone(matcher),
                    rank: matcher.rank(),
                    origin: Origin {
                        route: order,
                        rule: rule_index,
                        matched: match_index,
                    },
                });
            }
        }
    }
}

/// A compiled match with a precedence rank.
pub(crate) trait Ranked {
    type Rank;
    fn rank(&self) -> Self::Rank;
}

impl Ranked for HttpMatcher {
    type Rank = super::matching::HttpRank;
    fn rank(&self) -> Self::Rank {
        HttpMatcher::rank(self)
    }
}

impl Ranked for GrpcMatcher {
    type Rank = super::matching::GrpcRank;
    fn rank(&self) -> Self::Rank {
        GrpcMatcher::rank(self)
    }
}
