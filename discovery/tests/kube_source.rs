//! The Kubernetes source against a real kube-apiserver 1.20.2 (the cache `scripts/kube-build.sh`
//! fills; these tests fail, not skip, when it is missing). The test plays kubelet: it creates
//! Pods with `spec.nodeName` and patches their `status.podIP`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ambit_tests::kube::KubeApiServer;
use discovery::{
    authorize, ConnectionAttrs, Decision, Kind, KubeConnection, KubeSource, KubeSourceConfig,
    SecretScope, Snapshot,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(30);

fn start_server() -> KubeApiServer {
    start_server_with(KubeApiServer::builder())
}

fn start_server_with(builder: ambit_tests::kube::KubeApiServerBuilder) -> KubeApiServer {
    // The source's logs (watch failures, relists) go with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "discovery=debug".into()),
        )
        .with_test_writer()
        .try_init();
    builder.start().unwrap_or_else(|error| {
        panic!(
            "cannot start the test API server: {error}\n(build it once with scripts/kube-build.sh)"
        )
    })
}

async fn client(server: &KubeApiServer) -> kube::Client {
    KubeConnection::Kubeconfig {
        path: server.kubeconfig_path(),
        context: None,
    }
    .client()
    .await
    .unwrap()
}

async fn start_source(server: &KubeApiServer) -> Arc<KubeSource> {
    let config = KubeSourceConfig {
        // Short, so the test sees the Istio CRD soon after it is installed.
        recheck_absent: Duration::from_secs(1),
        ..KubeSourceConfig::default()
    };
    KubeSource::start(client(server).await, config)
        .await
        .unwrap()
}

/// Waits until a snapshot satisfies `check`; panics with `what` and a summary otherwise.
async fn wait_for(
    source: &KubeSource,
    what: &str,
    check: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let mut snapshots = source.subscribe();
    let found = tokio::time::timeout(WAIT, snapshots.wait_for(|s| check(s))).await;
    match found {
        Ok(Ok(snapshot)) => Arc::clone(&snapshot),
        _ => panic!(
            "timed out waiting for {what}; workloads {:?}, last error {:?}, problems {:?}",
            workload_names(&source.current()),
            source.last_error(),
            source.problems()
        ),
    }
}

fn workload_names(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .workloads()
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect()
}

fn pod_manifest(name: &str, node: Option<&str>, labels: &str) -> String {
    let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: shop
  labels: {{{labels}}}
spec:
{node}  serviceAccountName: web
  containers:
  - name: web
    image: example.invalid/web:1
    ports: [{{name: http, containerPort: 8080}}]
"
    )
}

/// What the kubelet would do once the pod runs.
async fn set_pod_ip(client: &kube::Client, name: &str, ip: &str) {
    let status = serde_json::json!({
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    });
    Api::<Pod>::namespaced(client.clone(), "shop")
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
";

/// Kubernetes 1.20 serves EndpointSlices only as v1beta1.
const SLICE: &str = "apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata:
  name: web-manual
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: true}
  topology: {kubernetes.io/hostname: node-a}
";

/// A minimal stand-in for Istio's CRD: the source decodes the spec itself.
const POLICY_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: authorizationpolicies.security.istio.io}
spec:
  group: security.istio.io
  scope: Namespaced
  names: {plural: authorizationpolicies, singular: authorizationpolicy, kind: AuthorizationPolicy}
  versions:
  - name: v1beta1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

const POLICIES: &str = "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: deny-other, namespace: shop}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [other]}}]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: shop}
spec:
  action: AUDIT
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-clients, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]
";

/// `web-clients` as it was meant: 10.0.0.0/8 may reach the web pods.
const WEB_CLIENTS_FIXED: &str = "apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-clients, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]
";

/// How a plaintext client at 10.1.0.9 fares connecting to `shop/web-0` on 8080.
fn client_to_web0(snapshot: &Snapshot) -> Decision {
    let web0 = snapshot.workload("shop", "web-0").unwrap();
    let attrs = ConnectionAttrs {
        src_ip: "10.1.0.9".parse().unwrap(),
        src_identity: None,
        dst_port: 8080,
    };
    authorize(snapshot.policies_for(web0), &attrs)
}

fn endpoints(snapshot: &Snapshot) -> BTreeSet<SocketAddr> {
    let Some(service) = snapshot.service("shop", "web") else {
        return BTreeSet::new();
    };
    let Some(port) = service.ports.first() else {
        return BTreeSet::new();
    };
    snapshot
        .endpoints_for(service, port)
        .iter()
        .map(|e| e.addr)
        .collect()
}

fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_follows_namespaces_pods_services_labels_slices_and_policies() {
    let server = start_server_with(KubeApiServer::builder().user("nobody", &[]));

    // Without RBAC the source does not start, and says what to grant.
    let token = server.token("nobody").unwrap();
    let kubeconfig = server.kubeconfig_for_token("nobody", token).unwrap();
    let denied = KubeConnection::Kubeconfig {
        path: kubeconfig,
        context: None,
    }
    .client()
    .await
    .unwrap();
    let config = KubeSourceConfig {
        sync_timeout: Duration::from_secs(3),
        ..KubeSourceConfig::default()
    };
    let error = KubeSource::start(denied, config)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("list and watch on pods"), "{error}");

    server.kubectl(&["create", "namespace", "shop"]).unwrap();
    server
        .kubectl_apply(&pod_manifest("web-0", Some("node-a"), "app: web"))
        .unwrap();
    server
        .kubectl_apply(&pod_manifest("web-1", Some("node-b"), "app: web"))
        .unwrap();
    // Unscheduled: not in the view until it has a node.
    server
        .kubectl_apply(&pod_manifest("pending", None, "app: web"))
        .unwrap();
    server.kubectl_apply(SERVICE).unwrap();
    let client = client(&server).await;
    set_pod_ip(&client, "web-0", "10.1.0.5").await;
    set_pod_ip(&client, "web-1", "10.1.0.6").await;

    let source = start_source(&server).await;
    let first = source.current();
    assert!(
        first.generation() >= 1,
        "start returns after the first full list"
    );
    let snapshot = wait_for(&source, "both pods with their IPs", |s| {
        ["web-0", "web-1"]
            .iter()
            .all(|n| s.workload("shop", n).is_some_and(|w| !w.ips.is_empty()))
    })
    .await;
    assert_eq!(workload_names(&snapshot), ["shop/web-0", "shop/web-1"]);
    let web0 = snapshot.workload("shop", "web-0").unwrap();
    assert_eq!(web0.node, "node-a");
    assert_eq!(web0.service_account, "web");
    assert!(!web0.ambient, "namespace not labelled yet");
    assert!(snapshot.node_runs_service_account("node-b", "shop", "web"));
    assert!(!snapshot.node_runs_service_account("node-c", "shop", "web"));
    let service = snapshot.service("shop", "web").unwrap();
    assert_eq!(
        service.vips.len(),
        1,
        "the API server allocated a cluster IP"
    );
    assert!(snapshot.service_by_vip(service.vips[0], 80).is_some());
    assert_eq!(
        endpoints(&snapshot),
        addrs(&["10.1.0.5:8080", "10.1.0.6:8080"]),
        "no slices (no controller manager): endpoints from the selector"
    );
    assert_eq!(snapshot.policies().count(), 0, "no Istio CRD: no policies");

    // Label flip: the namespace enrolls, a pod opts out.
    server
        .kubectl(&[
            "label",
            "namespace",
            "shop",
            "istio.io/dataplane-mode=ambient",
        ])
        .unwrap();
    server
        .kubectl(&[
            "label",
            "pod",
            "-n",
            "shop",
            "web-1",
            "istio.io/dataplane-mode=none",
        ])
        .unwrap();
    let snapshot = wait_for(&source, "namespace enrolled, web-1 opted out", |s| {
        s.workload("shop", "web-0").is_some_and(|w| w.ambient)
            && s.workload("shop", "web-1").is_some_and(|w| !w.ambient)
    })
    .await;
    assert_eq!(
        snapshot.namespace("shop").unwrap().labels["istio.io/dataplane-mode"],
        "ambient"
    );

    // A v1beta1 EndpointSlice becomes the truth for the Service.
    server.kubectl_apply(SLICE).unwrap();
    wait_for(&source, "endpoints from the slice", |s| {
        endpoints(s) == addrs(&["10.1.0.5:8080"])
    })
    .await;

    // Scheduling the pending pod brings it in.
    server
        .kubectl(&["delete", "pod", "-n", "shop", "pending", "--wait=false"])
        .unwrap();
    server
        .kubectl_apply(&pod_manifest("pending", Some("node-a"), "app: web"))
        .unwrap();
    wait_for(&source, "the scheduled pod", |s| {
        s.workload("shop", "pending").is_some()
    })
    .await;

    // The Istio CRD appears later: the source finds it and reads policies; one it cannot
    // enforce (AUDIT, which never changes access) is left out and reported; one it cannot
    // understand (a /33 block) is reported and enforced fail-closed: the web pods it selects
    // allow nothing until it is fixed, instead of everything.
    server.kubectl_apply(POLICY_CRD).unwrap();
    server
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/authorizationpolicies.security.istio.io",
        ])
        .unwrap();
    server.kubectl_apply(POLICIES).unwrap();
    let snapshot = wait_for(&source, "the DENY policy and the broken one", |s| {
        s.policies().count() == 2
    })
    .await;
    let names: Vec<&str> = snapshot.policies().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["deny-other", "web-clients"]);
    let broken: Vec<&str> = snapshot
        .invalid_policies()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(broken, ["web-clients"]);
    match client_to_web0(&snapshot) {
        Decision::DeniedBy(by) => {
            let invalid = by
                .invalid
                .expect("denied by the policy that is not understood");
            assert_eq!(invalid.field, "spec.rules[0].from[0].source.ipBlocks[0]");
            assert!(invalid.enforced_as.contains("allows nothing"), "{invalid}");
        }
        other => panic!("a broken ALLOW must not leave web-0 open: {other:?}"),
    }
    let problems = source.problems();
    for expected in [
        "AuthorizationPolicy shop/audit: field spec.action",
        "AuthorizationPolicy shop/web-clients: field spec.rules[0].from[0].source.ipBlocks[0]",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not in {problems:?}"
        );
    }
    // Fixed with kubectl apply: the intended policy, the problem gone.
    server.kubectl_apply(WEB_CLIENTS_FIXED).unwrap();
    let snapshot = wait_for(&source, "the fixed policy", |s| {
        s.invalid_policies().count() == 0 && s.policies().count() == 2
    })
    .await;
    assert_eq!(client_to_web0(&snapshot), Decision::Allow);
    assert!(
        !source
            .problems()
            .iter()
            .any(|p| p.contains("shop/web-clients")),
        "{:?}",
        source.problems()
    );

    // Secrets only when asked for, and only those in scope.
    server
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "-n",
            "shop",
            "tls",
            "--from-literal=tls.key=k",
        ])
        .unwrap();
    server
        .kubectl(&[
            "label",
            "secret",
            "-n",
            "shop",
            "tls",
            "ambit.dev/gateway-tls=true",
        ])
        .unwrap();
    server
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "-n",
            "shop",
            "other",
            "--from-literal=a=b",
        ])
        .unwrap();
    assert!(
        source.current().secret("shop", "tls").is_none(),
        "not watched by default"
    );
    let secrets = KubeSource::start(
        client.clone(),
        KubeSourceConfig {
            kinds: vec![Kind::Secret],
            secrets: Some(SecretScope {
                namespace: Some("shop".into()),
                label_selector: Some("ambit.dev/gateway-tls=true".into()),
            }),
            ..KubeSourceConfig::default()
        },
    )
    .await
    .unwrap();
    let snapshot = secrets.current();
    assert_eq!(
        snapshot.secret("shop", "tls").unwrap().data["tls.key"],
        b"k"
    );
    assert!(snapshot.secret("shop", "other").is_none());
    drop(secrets);

    // Deletion.
    server
        .kubectl(&[
            "delete",
            "pod",
            "-n",
            "shop",
            "web-0",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    let snapshot = wait_for(&source, "web-0 gone", |s| {
        s.workload("shop", "web-0").is_none()
    })
    .await;
    assert_eq!(workload_names(&snapshot), ["shop/pending", "shop/web-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recover_after_api_server_restarts_without_stale_or_lost_objects() {
    let mut server = start_server();
    server.kubectl(&["create", "namespace", "shop"]).unwrap();
    for (name, node) in [("a", "node-a"), ("b", "node-b")] {
        server
            .kubectl_apply(&pod_manifest(name, Some(node), "app: web"))
            .unwrap();
    }
    let source = start_source(&server).await;
    wait_for(&source, "pods a and b", |s| {
        workload_names(s) == ["shop/a", "shop/b"]
    })
    .await;

    // Down: the last snapshot stays in force and the failure is visible.
    tokio::task::block_in_place(|| server.stop_apiserver());
    let deadline = tokio::time::Instant::now() + WAIT;
    while source.last_error().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch failure recorded while the API server is down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(workload_names(&source.current()), ["shop/a", "shop/b"]);

    // Back: changes made right after the restart, likely before the watches reconnect.
    tokio::task::block_in_place(|| server.start_apiserver()).unwrap();
    server
        .kubectl(&[
            "delete",
            "pod",
            "-n",
            "shop",
            "a",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    server
        .kubectl_apply(&pod_manifest("c", Some("node-a"), "app: web"))
        .unwrap();
    server
        .kubectl(&[
            "label",
            "namespace",
            "shop",
            "istio.io/dataplane-mode=ambient",
        ])
        .unwrap();
    let snapshot = wait_for(&source, "b and c, namespace labelled", |s| {
        workload_names(s) == ["shop/b", "shop/c"]
            && s.workload("shop", "c").is_some_and(|w| w.ambient)
    })
    .await;
    assert_eq!(
        snapshot.workloads().count(),
        2,
        "no duplicate, no stale pod"
    );

    // A second restart (the watches now resume from newer resource versions).
    tokio::task::block_in_place(|| server.restart()).unwrap();
    server
        .kubectl_apply(&pod_manifest("d", Some("node-b"), "app: web"))
        .unwrap();
    server
        .kubectl(&[
            "delete",
            "pod",
            "-n",
            "shop",
            "b",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    wait_for(&source, "c and d", |s| {
        workload_names(s) == ["shop/c", "shop/d"]
    })
    .await;
    // Nothing left over once events flowed again.
    assert!(source.problems().is_empty(), "{:?}", source.problems());
}

/// Minimal stand-ins for two Gateway API CRDs, as served at v1 (the source checks the schema
/// itself: an API server older than 1.25 does not evaluate the CRDs' CEL rules anyway).
fn gateway_api_crd(kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.gateway.networking.k8s.io
  # Required for *.k8s.io groups; the real CRDs carry the same.
  annotations: {{api-approved.kubernetes.io: 'https://github.com/kubernetes-sigs/gateway-api/pull/4530'}}
spec:
  group: gateway.networking.k8s.io
  scope: Namespaced
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
",
        singular = kind.to_lowercase()
    )
}

const GATEWAY_API_OBJECTS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: ambit
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{name: ingress}]
  rules: [{backendRefs: [{name: cart, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{name: ingress}]
  rules: [{matches: [{path: {value: cart}}], backendRefs: [{name: cart, port: 8080}]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_kinds_appear_once_their_crds_are_installed_and_broken_ones_are_rejected() {
    let server = start_server();
    let mut kinds = Kind::MESH.to_vec();
    kinds.extend(Kind::GATEWAY_API);
    let config = KubeSourceConfig {
        kinds,
        recheck_absent: Duration::from_secs(1),
        ..KubeSourceConfig::default()
    };
    // No Gateway API CRDs yet: the source starts, with none of those objects.
    let source = KubeSource::start(client(&server).await, config)
        .await
        .unwrap();
    assert!(source.current().gateway_api().gateways().is_empty());

    for (kind, plural) in [("Gateway", "gateways"), ("HTTPRoute", "httproutes")] {
        server
            .kubectl_apply(&gateway_api_crd(kind, plural))
            .unwrap();
        server
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{plural}.gateway.networking.k8s.io"),
            ])
            .unwrap();
    }
    server.kubectl_apply(GATEWAY_API_OBJECTS).unwrap();
    let snapshot = wait_for(&source, "the Gateway and both HTTPRoutes", |s| {
        s.gateway_api().gateways().len() == 1 && s.gateway_api().http_routes().len() == 2
    })
    .await;
    let view = snapshot.gateway_api();
    assert_eq!(view.http_routes()[1].name, "cart");
    assert_eq!(view.http_routes()[1].rules[0].backends[0].backend.weight, 1);
    let rejected: Vec<String> = view.rejected().iter().map(ToString::to_string).collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].starts_with("HTTPRoute shop/broken: spec.rules[0].matches[0].path.value: "),
        "{rejected:?}"
    );
    let problems = source.problems();
    assert!(
        problems
            .iter()
            .any(|p| p
                .starts_with("HTTPRoute shop/broken: field spec.rules[0].matches[0].path.value: ")),
        "{problems:?}"
    );
}
