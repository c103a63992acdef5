//! What the bench configures: the waypoint's manifests (Gateway, the backend Service and pod,
//! one HTTPRoute of 20 rules), the same 20 rules as Envoy routes (plain HTTP, and HBONE in the
//! shape of Istio's Envoy waypoint), and the 10 000-route snapshot of the rebuild measurement.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

pub const NAMESPACE: &str = "bench-l7";
pub const GATEWAY: &str = "waypoint";
pub const TRUST_DOMAIN: &str = "cluster.local";
/// The Service the client "dials": only ever a CONNECT authority, never a socket address.
pub const SERVICE_VIP: &str = "10.96.0.10";
pub const SERVICE_PORT: u16 = 80;
/// The backend pod's address on the bench namespace's loopback, and its application port.
pub const BACKEND_IP: &str = "127.0.0.2";
pub const BACKEND_PORT: u16 = 8080;
/// The backend pod's HBONE port (its "ztunnel": the bench's `hbone-backend` role).
pub const BACKEND_HBONE: &str = "127.0.0.2:15008";
pub const CA_ADDRESS: &str = "127.0.0.1:15012";
pub const WAYPOINT_HBONE: &str = "127.0.0.1:15008";
pub const ENVOY_PLAIN: &str = "127.0.0.1:10080";
pub const ENVOY_HBONE: &str = "127.0.0.1:10008";

pub const RULES: usize = 20;
/// The rule every measured request takes: the 15th, after 14 that fail on path or header.
pub const HIT_RULE: usize = 14;
/// Services and routes of the rebuild measurement (as waypoint/src/routes/tests/scale.rs).
pub const SWAP_SERVICES: usize = 500;
pub const SWAP_ROUTES: usize = 10_000;

pub fn spiffe(service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{service_account}")
}

/// Rule `i`: `PathPrefix /api/v{i%4}/orders` and `x-tenant: tenant-{i}`. Every rule has one
/// prefix of the same length and one header, so Gateway API precedence keeps them in listed
/// order (ties go to rule order) and Envoy's first-match order is the same list. A request
/// for rule 14 fails 10 rules on the path and 4 (2, 6, 10) on the header first… in Envoy;
/// the waypoint may skip some by its own indexing, which is the point of comparing.
fn rule_path(i: usize) -> String {
    format!("/api/v{}/orders", i % 4)
}

fn rule_tenant(i: usize) -> String {
    format!("tenant-{i}")
}

/// The measured request: path and header of [`HIT_RULE`].
pub fn hit_path() -> String {
    format!("{}/42", rule_path(HIT_RULE))
}

pub fn hit_header() -> (String, String) {
    ("x-tenant".into(), rule_tenant(HIT_RULE))
}

/// Namespace, Gateway, backend pod, Service (bound to the waypoint) and its EndpointSlice.
pub fn base_manifests() -> Vec<Value> {
    let conditions: Vec<Value> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
        .iter()
        .map(|t| json!({"type": t, "status": "True"}))
        .collect();
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE,
            "labels": {"istio.io/dataplane-mode": "ambient"}}}),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": NAMESPACE, "name": GATEWAY},
            "spec": {"gatewayClassName": "ambit-waypoint",
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
        }),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": NAMESPACE, "name": "backend-0", "uid": "bench-l7-backend-0",
                         "labels": {"app": "backend"}},
            "spec": {"nodeName": "node-0", "serviceAccountName": "backend",
                     "containers": [{"name": "app", "image": "ambit-testapp",
                                     "ports": [{"containerPort": BACKEND_PORT, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "hostIP": "127.0.0.1", "podIP": BACKEND_IP,
                       "podIPs": [{"ip": BACKEND_IP}],
                       "conditions": conditions},
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": NAMESPACE, "name": "backend",
                         "labels": {"istio.io/use-waypoint": GATEWAY}},
            "spec": {"type": "ClusterIP", "clusterIP": SERVICE_VIP, "clusterIPs": [SERVICE_VIP],
                     "selector": {"app": "backend"},
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": BACKEND_PORT, "protocol": "TCP"}]},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": NAMESPACE, "name": "backend-ambit",
                         "labels": {"kubernetes.io/service-name": "backend",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [BACKEND_IP],
                           "conditions": {"ready": true, "serving": true, "terminating": false},
                           "nodeName": "node-0",
                           "targetRef": {"kind": "Pod", "name": "backend-0", "namespace": NAMESPACE, "uid": "bench-l7-backend-0"}}],
            "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
        }),
    ]
}

/// Rules per HTTPRoute: Gateway API allows at most 16, so the 20 rules are two routes of 10.
const RULES_PER_ROUTE: usize = 10;

/// The HTTPRoute holding rule `i`, and the rule's index in it.
pub fn route_of(i: usize) -> (String, usize) {
    (
        format!("orders-{}", i / RULES_PER_ROUTE),
        i % RULES_PER_ROUTE,
    )
}

/// Two HTTPRoutes (`orders-0`: rules 0–9, `orders-1`: 10–19), parent the backend Service,
/// every rule to that Service. Equal match specificity and no creation time: precedence falls
/// to the routes' names, then rule order, which keeps the 20 rules in listed order.
pub fn route_manifests() -> Vec<Value> {
    (0..RULES / RULES_PER_ROUTE)
        .map(|r| {
            let rules: Vec<Value> = (r * RULES_PER_ROUTE..(r + 1) * RULES_PER_ROUTE)
                .map(|i| {
                    json!({
                        "name": format!("rule-{i}"),
                        "matches": [{
                            "path": {"type": "PathPrefix", "value": rule_path(i)},
                            "headers": [{"type": "Exact", "name": "x-tenant", "value": rule_tenant(i)}],
                        }],
                        "backendRefs": [{"name": "backend", "port": SERVICE_PORT}],
                    })
                })
                .collect();
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"namespace": NAMESPACE, "name": format!("orders-{r}")},
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": "backend", "port": SERVICE_PORT}],
                    "rules": rules,
                },
            })
        })
        .collect()
}

/// 500 Services (namespaces `swap-0`…`swap-19`) and 10 000 HTTPRoutes over them, each one
/// rule with a path prefix, a header and a method (the shape of the waypoint's own scale test),
/// as multi-document YAML. Written by hand: serde_yaml on 10 000 objects is slow for no reason.
pub fn swap_yaml() -> String {
    let mut yaml = String::with_capacity(SWAP_ROUTES * 600);
    for i in 0..SWAP_SERVICES {
        let _ = write!(
            yaml,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: swap-{ns}}}\n\
             spec: {{clusterIP: 10.{a}.{b}.1, ports: [{{name: http, port: 80}}]}}\n",
            ns = i % 20,
            a = 100 + i / 250,
            b = i % 250
        );
    }
    for i in 0..SWAP_ROUTES {
        let service = i % SWAP_SERVICES;
        let ns = service % 20;
        let _ = write!(
            yaml,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: route-{i}, namespace: swap-{ns}}}\n\
             spec:\n  parentRefs: [{{group: \"\", kind: Service, name: svc-{service}, port: 80}}]\n\
             \x20 rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /api/v{v}/items}}\n\
             \x20     headers: [{{type: Exact, name: x-tenant, value: tenant-{i}}}]\n\
             \x20     method: GET\n    backendRefs: [{{name: svc-{service}, port: 80}}]\n",
            v = i % 7
        );
    }
    yaml
}

/// Envoy's route list for the 20 rules: `path_separated_prefix` is Gateway API's PathPrefix
/// (segment-wise), first match wins, in the same order.
fn envoy_routes(cluster: &str) -> Vec<Value> {
    (0..RULES)
        .map(|i| {
            json!({
                "name": format!("orders-{i}"),
                "match": {
                    "path_separated_prefix": rule_path(i),
                    "headers": [{"name": "x-tenant", "string_match": {"exact": rule_tenant(i)}}],
                },
                "route": {"cluster": cluster},
            })
        })
        .collect()
}

fn router() -> Value {
    json!([{"name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}])
}

/// One access line per request to a file, as the waypoint writes one per request to its log.
fn access_log(log: &Path) -> Value {
    json!([{"name": "envoy.access_loggers.file",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                             "path": log.display().to_string()}}])
}

fn http_manager(stat_prefix: &str, routes: Vec<Value>, log: &Path) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "access_log": access_log(log),
            "route_config": {"name": "orders", "virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": routes}]},
            "http_filters": router(),
        }
    })
}

fn socket(addr: &str) -> Value {
    let (ip, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    json!({"socket_address": {"address": ip, "port_value": port.parse::<u16>().unwrap_or(0)}})
}

fn static_cluster(name: &str, address: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    })
}

fn admin(port: u16) -> Value {
    json!({"address": socket(&format!("127.0.0.1:{port}"))})
}

/// Envoy as a plain HTTP/1.1 reverse proxy: the 20 routes, the backend pod over plain TCP.
pub fn envoy_plain(log: &Path) -> Value {
    json!({
        "admin": admin(9901),
        "static_resources": {
            "listeners": [{
                "name": "plain",
                "address": socket(ENVOY_PLAIN),
                "filter_chains": [{"filters": [http_manager("plain", envoy_routes("backend"), log)]}],
            }],
            "clusters": [static_cluster("backend", socket(&format!("{BACKEND_IP}:{BACKEND_PORT}")))],
        },
    })
}

/// TLS 1.3 only, as HBONE requires (Envoy's upstream default stops at 1.2).
fn tls_files(cert_dir: &Path) -> Value {
    json!({
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{
            "certificate_chain": {"filename": cert_dir.join("tls.crt").display().to_string()},
            "private_key": {"filename": cert_dir.join("tls.key").display().to_string()},
        }],
    })
}

/// Envoy as an HBONE waypoint, the way Istio's Envoy waypoint is built: a listener terminating
/// HTTP/2 CONNECT over mutual TLS into an internal listener that runs the same 20 routes, whose
/// upstream is an internal listener originating HBONE (a CONNECT per upstream connection, over
/// pooled HTTP/2 + mTLS) to the backend pod's port 15008, verifying the backend's identity.
pub fn envoy_hbone(log: &Path, cert_dir: &Path) -> Value {
    let mut downstream_tls = tls_files(cert_dir);
    downstream_tls["alpn_protocols"] = json!(["h2"]);
    downstream_tls["validation_context"] =
        json!({"trusted_ca": {"filename": cert_dir.join("ca.crt").display().to_string()}});
    let mut upstream_tls = tls_files(cert_dir);
    upstream_tls["alpn_protocols"] = json!(["h2"]);
    upstream_tls["validation_context"] = json!({
        "trusted_ca": {"filename": cert_dir.join("ca.crt").display().to_string()},
        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": spiffe("backend")}}],
    });
    let internal =
        |listener: &str| json!({"envoy_internal_address": {"server_listener_name": listener}});
    let mut hbone_origin = static_cluster("backend-hbone", socket(BACKEND_HBONE));
    hbone_origin["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    });
    hbone_origin["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                         "common_tls_context": upstream_tls},
    });
    json!({
        "admin": admin(9902),
        "bootstrap_extensions": [{
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"},
        }],
        "static_resources": {
            "listeners": [
                {
                    "name": "hbone",
                    "address": socket(ENVOY_HBONE),
                    "filter_chains": [{
                        "transport_socket": {
                            "name": "envoy.transport_sockets.tls",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                                "require_client_certificate": true,
                                "common_tls_context": downstream_tls,
                            },
                        },
                        "filters": [{
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": "hbone",
                                "codec_type": "HTTP2",
                                "http2_protocol_options": {"allow_connect": true},
                                "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                                "route_config": {"name": "tunnel", "virtual_hosts": [{
                                    "name": "tunnel", "domains": ["*"],
                                    "routes": [{"match": {"connect_matcher": {}},
                                                "route": {"cluster": "inner",
                                                          "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}}],
                                }]},
                                "http_filters": router(),
                            },
                        }],
                    }],
                },
                {
                    "name": "inner",
                    "internal_listener": {},
                    "filter_chains": [{"filters": [http_manager("inner", envoy_routes("backend-tunnel"), log)]}],
                },
                {
                    "name": "tunnel-out",
                    "internal_listener": {},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                            "stat_prefix": "tunnel_out",
                            "cluster": "backend-hbone",
                            "tunneling_config": {"hostname": format!("{BACKEND_IP}:{BACKEND_PORT}")},
                        },
                    }]}],
                },
            ],
            "clusters": [
                static_cluster("inner", internal("inner")),
                static_cluster("backend-tunnel", internal("tunnel-out")),
                hbone_origin,
            ],
        },
    })
}
