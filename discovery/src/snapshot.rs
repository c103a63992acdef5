//! One immutable, indexed view of the cluster.
//!
//! A source converts objects into [`Objects`] and builds a [`Snapshot`] once per change; every
//! index (IP → workload, VIP:port → service, service port → endpoints, namespace → policies) is
//! computed then, so the lookups ztunnel makes for each connection are single hash probes and
//! borrow from the snapshot instead of allocating.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::gateway_api::{
    Gateway, GatewayApiObjects, GatewayApiView, GrpcRoute, HttpRoute, ReferenceGrant, TcpRoute,
    TlsRoute,
};
use crate::model::{
    ambient_enrolled, labels_match, EndpointSlice, Namespace, Protocol, Secret, Service,
    ServicePort, WaypointBinding, Workload,
};
use crate::policy::AuthorizationPolicy;

/// Istio's root namespace equivalent: policies here apply mesh-wide.
pub const DEFAULT_ROOT_NAMESPACE: &str = "ambit-system";

/// Everything a source collected, already converted; the input of [`Snapshot::build`].
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub namespaces: Vec<Namespace>,
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub policies: Vec<AuthorizationPolicy>,
    pub secrets: Vec<Secret>,
    pub gateways: Vec<Gateway>,
    pub http_routes: Vec<HttpRoute>,
    pub grpc_routes: Vec<GrpcRoute>,
    pub tls_routes: Vec<TlsRoute>,
    pub tcp_routes: Vec<TcpRoute>,
    pub reference_grants: Vec<ReferenceGrant>,
}

/// How snapshots are built; the same for every snapshot of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Namespace whose AuthorizationPolicies apply to workloads in every namespace.
    pub root_namespace: String,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_owned(),
        }
    }
}

/// A waypoint as a binding names it, resolved to a namespace: its Gateway (and Service) is
/// `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WaypointRef {
    pub namespace: String,
    pub name: String,
}

impl WaypointRef {
    /// `binding` on an object in `bound_namespace`: the waypoint lives there unless the binding
    /// names another namespace (`istio.io/use-waypoint-namespace`).
    pub fn of(binding: &WaypointBinding, bound_namespace: &str) -> WaypointRef {
        WaypointRef {
            namespace: binding
                .namespace
                .clone()
                .unwrap_or_else(|| bound_namespace.to_owned()),
            name: binding.name.clone(),
        }
    }
}

impl std::fmt::Display for WaypointRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A backend of a service port: where to connect, and the pod behind it when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `None` for EndpointSlice addresses that are not pods the snapshot knows (e.g. a VM).
    pub workload: Option<Arc<Workload>>,
}

/// Two objects claim the same address. The snapshot keeps the first (in namespace/name order);
/// the local source refuses such manifests, the API source only logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// Two ready, non-host-network pods with the same IP: `(namespace, name)` of each.
    WorkloadIp {
        ip: IpAddr,
        kept: (String, String),
        dropped: (String, String),
    },
    /// Two services with the same VIP and TCP port.
    ServiceVip {
        ip: IpAddr,
        port: u16,
        kept: (String, String),
        dropped: (String, String),
    },
}

/// Name-keyed index with `&str` lookups that need no allocation: namespace → name → value.
type ByName<T> = HashMap<String, HashMap<String, T>>;

#[derive(Debug)]
struct ServiceEntry {
    service: Service,
    /// Parallel to `service.ports`.
    endpoints: Vec<Vec<Endpoint>>,
}

/// The cluster as the mesh sees it at one point in time.
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: u64,
    root_namespace: String,
    namespaces: HashMap<String, Namespace>,
    /// Sorted by namespace, then name.
    workloads: Vec<Arc<Workload>>,
    workload_by_ip: HashMap<IpAddr, usize>,
    workload_by_name: ByName<usize>,
    workloads_by_node: HashMap<String, Vec<usize>>,
    services: Vec<ServiceEntry>,
    service_by_name: ByName<usize>,
    /// TCP ports only: the mesh proxies TCP.
    service_by_vip: HashMap<(IpAddr, u16), (usize, usize)>,
    policies: Vec<AuthorizationPolicy>,
    policies_by_namespace: HashMap<String, Vec<usize>>,
    secrets: ByName<Secret>,
    gateway_api: GatewayApiView,
}

impl Snapshot {
    /// Builds the snapshot and its indexes. Generation 0; the publisher numbers snapshots.
    pub fn build(objects: Objects, options: &SnapshotOptions) -> (Snapshot, Vec<Conflict>) {
        let Objects {
            namespaces,
            mut workloads,
            mut services,
            endpoint_slices,
            mut policies,
            secrets,
            gateways,
            http_routes,
            grpc_routes,
            tls_routes,
            tcp_routes,
            reference_grants,
        } = objects;
        let mut conflicts = Vec::new();
        let namespaces: HashMap<String, Namespace> = namespaces
            .into_iter()
            .map(|ns| (ns.name.clone(), ns))
            .collect();

        workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let workloads: Vec<Arc<Workload>> = workloads
            .into_iter()
            .map(|mut w| {
                let ns_labels = namespaces.get(&w.namespace).map(|ns| &ns.labels);
                // A host-network pod shares the node's network namespace: it cannot be captured.
                w.ambient = !w.host_network && ambient_enrolled(&w.labels, ns_labels);
                Arc::new(w)
            })
            .collect();
        let mut workload_by_ip: HashMap<IpAddr, usize> = HashMap::new();
        let mut workload_by_name: ByName<usize> = HashMap::new();
        let mut workloads_by_node: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, w) in workloads.iter().enumerate() {
            insert_by_name(&mut workload_by_name, &w.namespace, &w.name, index);
            workloads_by_node
                .entry(w.node.clone())
                .or_default()
                .push(index);
            if w.host_network {
                continue;
            }
            for ip in &w.ips {
                match workload_by_ip.get(ip).map(|&i| &workloads[i]) {
                    None => {
                        workload_by_ip.insert(*ip, index);
                    }
                    // A finished pod's IP may be reused by a running one: the ready pod owns it.
                    Some(existing) if !existing.ready && w.ready => {
                        workload_by_ip.insert(*ip, index);
                    }
                    Some(existing) if existing.ready && w.ready => {
                        conflicts.push(Conflict::WorkloadIp {
                            ip: *ip,
                            kept: key(&existing.namespace, &existing.name),
                            dropped: key(&w.namespace, &w.name),
                        });
                    }
                    Some(_) => {}
                }
            }
        }

        let mut slices_by_service: ByName<Vec<&EndpointSlice>> = HashMap::new();
        for slice in &endpoint_slices {
            slices_by_service
                .entry(slice.namespace.clone())
                .or_default()
                .entry(slice.service.clone())
                .or_default()
                .push(slice);
        }

        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut service_by_name: ByName<usize> = HashMap::new();
        let mut service_by_vip: HashMap<(IpAddr, u16), (usize, usize)> = HashMap::new();
        let mut entries = Vec::with_capacity(services.len());
        for (index, service) in services.into_iter().enumerate() {
            insert_by_name(
                &mut service_by_name,
                &service.namespace,
                &service.name,
                index,
            );
            for (port_index, port) in service.ports.iter().enumerate() {
                if port.protocol != Protocol::Tcp {
                    continue;
                }
                for vip in &service.vips {
                    if let Some(&(other, _)) = service_by_vip.get(&(*vip, port.port)) {
                        // The same service listing a port twice is not a conflict between two.
                        let Some(other) = entries.get(other) else {
                            continue;
                        };
                        let other: &ServiceEntry = other;
                        conflicts.push(Conflict::ServiceVip {
                            ip: *vip,
                            port: port.port,
                            kept: key(&other.service.namespace, &other.service.name),
                            dropped: key(&service.namespace, &service.name),
                        });
                    } else {
                        service_by_vip.insert((*vip, port.port), (index, port_index));
                    }
                }
            }
            let slices = slices_by_service
                .get(&service.namespace)
                .and_then(|by_name| by_name.get(&service.name));
            let endpoints = service
                .ports
                .iter()
                .map(|port| match slices {
                    // EndpointSlices, when a Service has any, are the truth (they also cover
                    // Services without selectors); otherwise derive from the selector.
                    Some(slices) => slice_endpoints(
                        slices,
                        port,
                        &workloads,
                        &workload_by_ip,
                        &workload_by_name,
                    ),
                    None => selector_endpoints(&service, port, &workloads, &workload_by_name),
                })
                .collect();
            entries.push(ServiceEntry { service, endpoints });
        }

        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut policies_by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, policy) in policies.iter().enumerate() {
            policies_by_namespace
                .entry(policy.namespace.clone())
                .or_default()
                .push(index);
        }

        let mut secrets_by_name: ByName<Secret> = HashMap::new();
        for secret in secrets {
            let (ns, name) = (secret.namespace.clone(), secret.name.clone());
            insert_by_name(&mut secrets_by_name, &ns, &name, secret);
        }

        let snapshot = Snapshot {
            generation: 0,
            root_namespace: options.root_namespace.clone(),
            namespaces,
            workloads,
            workload_by_ip,
            workload_by_name,
            workloads_by_node,
            services: entries,
            service_by_name,
            service_by_vip,
            policies,
            policies_by_namespace,
            secrets: secrets_by_name,
            gateway_api: GatewayApiView::build(GatewayApiObjects {
                gateways,
                http_routes,
                grpc_routes,
                tls_routes,
                tcp_routes,
                reference_grants,
            }),
        };
        (snapshot, conflicts)
    }

    /// Numbers the snapshot; publishers count up from 1 so 0 means "never published".
    pub fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// The pod with this IP; host-network pods are never returned (they share the node's IP).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Arc<Workload>> {
        self.workload_by_ip.get(&ip).map(|&i| &self.workloads[i])
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        lookup(&self.workload_by_name, namespace, name).map(|&i| &self.workloads[i])
    }

    /// All workloads, sorted by namespace then name.
    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.iter()
    }

    /// Pods scheduled on `node` (what the node's ztunnel serves), sorted by namespace and name.
    pub fn workloads_on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Arc<Workload>> {
        self.workloads_by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|&i| &self.workloads[i])
    }

    /// `(namespace, service account)` of every pod on `node`: the identities that node's
    /// ztunnel may request certificates for.
    pub fn service_accounts_on_node(&self, node: &str) -> BTreeSet<(&str, &str)> {
        self.workloads_on_node(node)
            .map(|w| (w.namespace.as_str(), w.service_account.as_str()))
            .collect()
    }

    /// Whether some pod on `node` runs as `namespace/service_account` (CA authorisation).
    pub fn node_runs_service_account(&self, node: &str, namespace: &str, sa: &str) -> bool {
        self.workloads_on_node(node)
            .any(|w| w.namespace == namespace && w.service_account == sa)
    }

    /// Whether the pod is in the mesh (pod label over namespace label; never host-network).
    pub fn is_ambient(&self, workload: &Workload) -> bool {
        workload.ambient
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        lookup(&self.service_by_name, namespace, name).map(|&i| &self.services[i].service)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().map(|entry| &entry.service)
    }

    /// The service and port behind a VIP and TCP port.
    pub fn service_by_vip(&self, ip: IpAddr, port: u16) -> Option<(&Service, &ServicePort)> {
        let &(s, p) = self.service_by_vip.get(&(ip, port))?;
        let service = &self.services[s].service;
        Some((service, &service.ports[p]))
    }

    /// Ready endpoints of a service port, with target ports resolved per endpoint. Empty when
    /// the service or port is unknown to this snapshot.
    pub fn endpoints_for(&self, service: &Service, port: &ServicePort) -> &[Endpoint] {
        let Some(&index) = lookup(&self.service_by_name, &service.namespace, &service.name) else {
            return &[];
        };
        let entry = &self.services[index];
        entry
            .service
            .ports
            .iter()
            .position(|p| p.port == port.port && p.protocol == port.protocol)
            .map_or(&[], |p| entry.endpoints[p].as_slice())
    }

    /// The waypoint that handles traffic sent to `service` (`istio.io/use-waypoint`): the
    /// Service's own label, else its namespace's — unless the Service opts out with `none`.
    /// ztunnel sends such traffic to the waypoint; the waypoint serves only what is bound to it.
    pub fn service_waypoint(&self, service: &Service) -> Option<WaypointRef> {
        let binding = match &service.use_waypoint {
            Some(binding) => binding,
            None if service.opts_out_of_waypoint() => return None,
            None => self.namespace(&service.namespace)?.use_waypoint.as_ref()?,
        };
        Some(WaypointRef::of(binding, &service.namespace))
    }

    /// The waypoints that carry every path to `workload`, in order of preference; empty when
    /// some path reaches it directly. A pod is guarded by its own `istio.io/use-waypoint`, or
    /// — when every Service selecting it (at least one) is bound to a waypoint — by those
    /// waypoints: then no legitimate client reaches the pod except through one of them, so
    /// ztunnel refuses anything else at the destination, and sends traffic addressed to the
    /// pod itself through the first.
    pub fn workload_waypoints(&self, workload: &Workload) -> Vec<WaypointRef> {
        if let Some(binding) = &workload.use_waypoint {
            return vec![WaypointRef::of(binding, &workload.namespace)];
        }
        let mut waypoints = Vec::new();
        for service in self
            .services()
            .filter(|s| s.namespace == workload.namespace && s.selects(&workload.labels))
        {
            match self.service_waypoint(service) {
                Some(waypoint) if !waypoints.contains(&waypoint) => waypoints.push(waypoint),
                Some(_) => {}
                None => return Vec::new(),
            }
        }
        waypoints
    }

    /// Policies that apply to a workload, for ztunnel's inbound L4 check: those of its own
    /// namespace and of the root namespace whose selector is absent or matches its labels.
    /// Policies bound to a waypoint by `targetRefs` are not ztunnel's to enforce.
    pub fn policies_for<'a>(
        &'a self,
        workload: &'a Workload,
    ) -> impl Iterator<Item = &'a AuthorizationPolicy> + 'a {
        let own = self.policies_by_namespace.get(&workload.namespace);
        let root = (workload.namespace != self.root_namespace)
            .then(|| self.policies_by_namespace.get(&self.root_namespace))
            .flatten();
        own.into_iter()
            .chain(root)
            .flatten()
            .map(|&i| &self.policies[i])
            .filter(|p| p.target_refs.is_empty())
            .filter(|p| {
                p.selector
                    .as_ref()
                    .is_none_or(|selector| labels_match(selector, &workload.labels))
            })
    }

    /// Policies the waypoint `gateway` (namespace, name) enforces on a request it serves for
    /// `service` (namespace, name; `None` for a pod addressed directly). Istio's attachment
    /// rules: a policy in the Gateway's namespace whose targetRefs name that Gateway; one in
    /// the root namespace naming the Gateway's GatewayClass; one in the Service's namespace
    /// naming that Service. A policy without targetRefs is ztunnel's ([`Self::policies_for`]),
    /// never the waypoint's. Fail-closed forms are included (their `invalid` is set).
    pub fn waypoint_policies<'a>(
        &'a self,
        gateway: (&'a str, &'a str),
        service: Option<(&'a str, &'a str)>,
    ) -> impl Iterator<Item = &'a AuthorizationPolicy> + 'a {
        let (gateway_ns, gateway_name) = gateway;
        let class = self
            .gateway_api
            .gateway(gateway_ns, gateway_name)
            .map(|g| g.class_name.as_str());
        let root = self.root_namespace.as_str();
        let service_ns = service.map(|(ns, _)| ns);
        // Each namespace once, so each policy is yielded once.
        let namespaces = [
            Some(gateway_ns),
            Some(root).filter(|ns| *ns != gateway_ns),
            service_ns.filter(|ns| *ns != gateway_ns && *ns != root),
        ];
        namespaces
            .into_iter()
            .flatten()
            .filter_map(|ns| self.policies_by_namespace.get(ns))
            .flatten()
            .map(|&i| &self.policies[i])
            .filter(move |p| {
                p.target_refs.iter().any(|target| {
                    (p.namespace == gateway_ns && target.is_gateway(gateway_name))
                        || (p.namespace == root
                            && class.is_some_and(|class| target.is_gateway_class(class)))
                        || service
                            .is_some_and(|(ns, name)| p.namespace == ns && target.is_service(name))
                })
            })
    }

    pub fn policies(&self) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.policies.iter()
    }

    /// Policies that could not be understood and are enforced in their fail-closed form, each
    /// with [`AuthorizationPolicy::invalid`] saying why: for `/config_dump`.
    pub fn invalid_policies(&self) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.policies.iter().filter(|p| p.invalid.is_some())
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        lookup(&self.secrets, namespace, name)
    }

    /// The Gateway API objects (Gateways, routes, ReferenceGrants), rejected ones included:
    /// what the waypoint's route engine compiles and the controller writes status for. Its
    /// [`GatewayApiView::dump`] is the `/config_dump` form, rejected objects listed with why.
    pub fn gateway_api(&self) -> &GatewayApiView {
        &self.gateway_api
    }
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
}

fn insert_by_name<T>(map: &mut ByName<T>, namespace: &str, name: &str, value: T) {
    map.entry(namespace.to_owned())
        .or_default()
        .insert(name.to_owned(), value);
}

fn lookup<'a, T>(map: &'a ByName<T>, namespace: &str, name: &str) -> Option<&'a T> {
    map.get(namespace)?.get(name)
}

fn slice_endpoints(
    slices: &[&EndpointSlice],
    port: &ServicePort,
    workloads: &[Arc<Workload>],
    by_ip: &HashMap<IpAddr, usize>,
    by_name: &ByName<usize>,
) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for slice in slices {
        // Slice ports carry the Service port's name and the already-resolved target port.
        let Some(slice_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
            let by_ref = endpoint
                .pod
                .as_ref()
                .and_then(|(ns, name)| lookup(by_name, ns, name));
            for address in &endpoint.addresses {
                let workload = by_ref
                    .or_else(|| by_ip.get(address))
                    .map(|&i| Arc::clone(&workloads[i]));
                let addr = SocketAddr::new(*address, slice_port.port);
                // During rollouts two slices may list the same address; keep one.
                if !endpoints.iter().any(|e| e.addr == addr) {
                    endpoints.push(Endpoint { addr, workload });
                }
            }
        }
    }
    endpoints
}

/// Endpoints the way the EndpointSlice controller would compute them: ready pods with an IP in
/// the Service's namespace matched by its selector, named target ports resolved per pod.
fn selector_endpoints(
    service: &Service,
    port: &ServicePort,
    workloads: &[Arc<Workload>],
    by_name: &ByName<usize>,
) -> Vec<Endpoint> {
    let Some(in_namespace) = by_name.get(&service.namespace) else {
        return Vec::new();
    };
    let mut indexes: Vec<usize> = in_namespace.values().copied().collect();
    indexes.sort_unstable();
    let mut endpoints = Vec::new();
    for w in indexes.into_iter().map(|i| &workloads[i]) {
        if !w.ready || !service.selects(&w.labels) {
            continue;
        }
        let Some(target) = w.resolve_target_port(&port.target_port, port.protocol) else {
            continue;
        };
        for ip in &w.ips {
            // A dual-stack pod behind a single-stack Service is reached on that family only.
            let family_served = service.vips.is_empty()
                || service.vips.iter().any(|vip| vip.is_ipv4() == ip.is_ipv4());
            if family_served {
                endpoints.push(Endpoint {
                    addr: SocketAddr::new(*ip, target),
                    workload: Some(Arc::clone(w)),
                });
            }
        }
    }
    endpoints
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
