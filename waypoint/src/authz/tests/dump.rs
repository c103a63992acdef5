//! The `/config_dump` summary: what this waypoint enforces, broken policies with why.

use super::*;

const MESH: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: wp}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: wp, namespace: shop}
spec: {gatewayClassName: ambit-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: elsewhere, namespace: shop, labels: {istio.io/use-waypoint: other}}
spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 9080}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: everyone, namespace: ambit-system}
spec:
  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: ambit-waypoint}]
  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: shop}
spec:
  action: DENY
  targetRefs: [{kind: Service, name: reviews}]
  rules: [{to: [{operation: {methods: [delete]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: elsewhere}]
";

#[test]
fn config_dump_lists_what_the_waypoint_enforces() {
    let snapshot = load(MESH);
    let dump = serde_json::to_value(dump(&snapshot, ("shop", "wp"))).unwrap();
    let want = serde_json::json!({
        "gateway": [{
            "policy": "ambit-system/everyone",
            "action": "ALLOW",
            "targets": ["GatewayClass/ambit-waypoint"],
            "rules": 1,
            "unsupported": ["spec.rules[0].from[0].source.requestPrincipals"],
        }],
        "services": [{
            "service": "shop/reviews",
            "policies": [{
                "policy": "shop/reviews",
                "action": "DENY",
                "targets": ["Service/reviews"],
                "rules": 1,
                "invalid": "field spec.rules[0].to[0].operation.methods[0]: \"delete\" would never match: methods are case-sensitive; write DELETE; \
                            until it is fixed the policy denies every connection to its targets Service/reviews (ztunnel leaves a targetRefs policy to the waypoint)",
            }],
        }],
    });
    assert_eq!(dump, want, "{dump:#}");
}
