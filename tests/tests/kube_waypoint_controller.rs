//! `waypoint controller` against a real kube-apiserver 1.20.2, as its own ServiceAccount with
//! only the manifests' RBAC: a Gateway of class `ambit-waypoint` gets its ServiceAccount,
//! Service, Deployment (owned by the Gateway) and status; the GatewayClass and a Service-
//! parented HTTPRoute get theirs; nothing is rewritten when nothing changed; deleting the
//! Gateway takes its objects with it (the garbage collector follows the owner references).
//! No kubelet runs here, so the waypoint never becomes ready: `Programmed=False`.
//! Needs the cached API server (`scripts/kube-build.sh`); fails, not skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ambit_tests::kube::KubeApiServer;
use ambit_tests::kube_mesh::manifests_root;
use ambit_tests::{mesh_binaries, Process, ProcessSpec};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const CONTROLLER: &str = "ambit.dev/waypoint-controller";
const IMAGE: &str = "registry.test/ambit/waypoint:test";
const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n";

/// What the CA creates at start-up, and the CA's published trust bundle.
const CA_OBJECTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ambit-waypoint}
spec: {controllerName: ambit.dev/waypoint-controller}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ambit-ca-root-cert, namespace: ambit-system}
data:
  ca.crt: "-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n"
"#;

const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: ambit-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
"#;

/// `waypoint controller` as the `ambit-waypoint-controller` ServiceAccount, stopped on drop.
fn start_controller(server: &KubeApiServer) -> Process {
    let kubeconfig = server
        .kubeconfig_as("ambit-system", "ambit-waypoint-controller")
        .unwrap();
    server
        .spawn_component(
            ProcessSpec::new(mesh_binaries().unwrap().waypoint)
                .name("waypoint-controller")
                .args(["controller", "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["--image", IMAGE, "--resync", "1s"]),
        )
        .unwrap()
}

/// The object as JSON, or `None` while it does not exist.
fn get(server: &KubeApiServer, what: &str, namespace: Option<&str>) -> Option<Value> {
    let mut args = vec!["get"];
    args.extend(what.split_whitespace());
    if let Some(namespace) = namespace {
        args.extend(["-n", namespace]);
    }
    args.extend(["-o", "json", "--ignore-not-found"]);
    let out = server.kubectl(&args).unwrap();
    (!out.trim().is_empty()).then(|| serde_json::from_str(&out).unwrap())
}

/// Polls `check` until it returns `Some`, or fails with `what` and the controller's log.
fn wait_for<T>(what: &str, controller: &Process, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {WAIT:?}; controller log:\n{}",
            controller.log().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The condition of `type_` in a `conditions` list, as `(status, reason)`.
fn condition(conditions: &Value, type_: &str) -> Option<(String, String)> {
    let found = conditions.as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((
        found["status"].as_str()?.to_owned(),
        found["reason"].as_str()?.to_owned(),
    ))
}

fn is(status: &str, reason: &str) -> Option<(String, String)> {
    Some((status.to_owned(), reason.to_owned()))
}

/// `kubectl apply` until the API server serves the kinds (a CRD just created takes a moment).
fn apply_when_served(server: &KubeApiServer, manifest: &str) {
    let deadline = Instant::now() + WAIT;
    while let Err(error) = server.kubectl_apply(manifest) {
        assert!(Instant::now() < deadline, "cannot apply: {error}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_waypoint_gateway_is_run_and_reported_and_deleting_it_takes_its_objects_along() {
    let server = KubeApiServer::builder()
        .garbage_collector()
        .start()
        .unwrap_or_else(|e| {
            panic!("cannot start the test API server: {e} (scripts/kube-build.sh)")
        });
    server
        .kubectl(&["apply", "-k", manifests_root().to_str().unwrap()])
        .unwrap();
    apply_when_served(&server, CA_OBJECTS);
    apply_when_served(&server, SHOP);
    let gateway_uid = get(&server, "gateway waypoint", Some("shop")).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let controller = start_controller(&server);

    // The waypoint's objects, each owned by the Gateway and applied by the controller.
    let expected_owner = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": "waypoint",
        "uid": gateway_uid, "controller": true,
    }]);
    let mut objects = Vec::new();
    for what in [
        "serviceaccount waypoint",
        "service waypoint",
        "deployment waypoint",
        "configmap waypoint-ca-root",
    ] {
        let object = wait_for(what, &controller, || get(&server, what, Some("shop")));
        let metadata = &object["metadata"];
        assert_eq!(metadata["ownerReferences"], expected_owner, "{what}");
        let managers: Vec<&Value> = metadata["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["manager"])
            .collect();
        assert!(
            managers.contains(&&json!("ambit-waypoint-controller")),
            "{what}: {managers:?}"
        );
        objects.push(object);
    }
    let [_, service, deployment, root] = &objects[..] else {
        unreachable!()
    };
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        (&port["name"], &port["port"]),
        (&json!("mesh"), &json!(15008))
    );
    assert_eq!(
        service["spec"]["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"})
    );
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for arg in [
        "--in-cluster",
        "--gateway=shop/waypoint",
        "--ca-address=ambit-ca.ambit-system.svc:15012",
        "--ca-root=/var/run/ambit-ca/ca.crt",
        "--ca-token-file=/var/run/secrets/ambit/token",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    let token = &pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "ambit-ca", "the CA's audience");
    assert_eq!(root["data"]["ca.crt"], BUNDLE);
    let binding = wait_for("ClusterRoleBinding ambit-waypoints", &controller, || {
        get(&server, "clusterrolebinding ambit-waypoints", None)
    });
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "namespace": "shop", "name": "waypoint"}])
    );

    // Status: the Gateway is accepted, at its Service's cluster IP, and not programmed (no pod
    // runs here); the class is accepted; the route's Service parent is answered for.
    let gateway = wait_for(
        "Gateway shop/waypoint Programmed=False Pending",
        &controller,
        || {
            let gateway = get(&server, "gateway waypoint", Some("shop"))?;
            let conditions = &gateway["status"]["conditions"];
            (condition(conditions, "Programmed") == is("False", "Pending")).then_some(gateway)
        },
    );
    let status = &gateway["status"];
    assert_eq!(
        condition(&status["conditions"], "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        status["addresses"],
        json!([{"type": "IPAddress", "value": cluster_ip}])
    );
    assert_eq!(status["listeners"][0]["name"], "mesh");
    let class = wait_for("GatewayClass ambit-waypoint Accepted", &controller, || {
        let class = get(&server, "gatewayclass ambit-waypoint", None)?;
        let accepted = condition(&class["status"]["conditions"], "Accepted");
        (accepted == is("True", "Accepted")).then_some(class)
    });
    assert_eq!(class["status"]["conditions"][0]["observedGeneration"], 1);
    let route = wait_for("HTTPRoute shop/reviews parents[]", &controller, || {
        let route = get(&server, "httproute reviews", Some("shop"))?;
        (route["status"]["parents"].as_array()?.len() == 1).then_some(route)
    });
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["controllerName"], CONTROLLER);
    assert_eq!(
        parent["parentRef"],
        json!({"group": "", "kind": "Service", "namespace": "shop", "name": "reviews", "port": 9080})
    );
    assert_eq!(
        condition(&parent["conditions"], "Accepted"),
        is("True", "Accepted")
    );
    assert_eq!(
        condition(&parent["conditions"], "ResolvedRefs"),
        is("True", "ResolvedRefs")
    );

    // Several 1 s resyncs later nothing was rewritten: the status is written only on change.
    let versions = || {
        [
            "gateway waypoint",
            "httproute reviews",
            "deployment waypoint",
        ]
        .map(|what| {
            get(&server, what, Some("shop")).unwrap()["metadata"]["resourceVersion"].clone()
        })
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        versions(),
        before,
        "{}",
        controller.log().unwrap_or_default()
    );

    // A deleted Deployment is put back at the next resync.
    server
        .kubectl(&["delete", "deployment", "waypoint", "-n", "shop"])
        .unwrap();
    wait_for("the Deployment re-created", &controller, || {
        get(&server, "deployment waypoint", Some("shop"))
    });

    // Deleting the Gateway: its objects go (garbage collector), the binding forgets it, and
    // the route's Service is no longer bound to a waypoint that exists.
    server
        .kubectl(&["delete", "gateway", "waypoint", "-n", "shop"])
        .unwrap();
    for what in [
        "serviceaccount waypoint",
        "service waypoint",
        "deployment waypoint",
        "configmap waypoint-ca-root",
    ] {
        wait_for(&format!("{what} deleted"), &controller, || {
            get(&server, what, Some("shop")).is_none().then_some(())
        });
    }
    wait_for("the binding emptied", &controller, || {
        let binding = get(&server, "clusterrolebinding ambit-waypoints", None)?;
        let subjects = binding["subjects"].as_array().map_or(0, Vec::len);
        (subjects == 0).then_some(())
    });
    wait_for(
        "the route no longer WaypointBound=True",
        &controller,
        || {
            let route = get(&server, "httproute reviews", Some("shop"))?;
            let conditions = &route["status"]["parents"][0]["conditions"];
            let bound = condition(conditions, "ambit.dev/WaypointBound")?;
            (bound.0 != "True").then_some(())
        },
    );
}

/// `kubectl auth can-i QUESTION` as the holder of `token`.
fn can_i(server: &KubeApiServer, token: &str, question: &str) -> bool {
    let mut args = vec!["auth", "can-i"];
    args.extend(question.split_whitespace());
    let out = server.kubectl_output(Some(token), &args, None).unwrap();
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {question}: {other:?} {}", out.stderr),
    }
}

#[test]
fn the_controller_gets_what_it_needs_and_no_more() {
    let server = KubeApiServer::start().unwrap_or_else(|e| {
        panic!("cannot start the test API server: {e} (scripts/kube-build.sh)")
    });
    server
        .kubectl(&["apply", "-k", manifests_root().to_str().unwrap()])
        .unwrap();
    let token = server
        .service_account_token("ambit-system", "ambit-waypoint-controller", &[], None)
        .unwrap();
    let gw = "gateway.networking.k8s.io";
    let rules: Vec<(String, bool)> = [
        // Reads what status depends on, cluster-wide.
        ("watch pods --all-namespaces".to_owned(), true),
        (
            "list endpointslices.discovery.k8s.io --all-namespaces".to_owned(),
            true,
        ),
        (format!("watch httproutes.{gw} --all-namespaces"), true),
        (format!("get gatewayclasses.{gw}"), true),
        // Writes status only through the subresource, and only by PATCH.
        (
            format!("patch gateways.{gw} --subresource=status --all-namespaces"),
            true,
        ),
        (
            format!("patch httproutes.{gw} --subresource=status --all-namespaces"),
            true,
        ),
        (
            format!("patch grpcroutes.{gw} --subresource=status --all-namespaces"),
            true,
        ),
        (
            format!("patch gatewayclasses.{gw} --subresource=status"),
            true,
        ),
        (format!("patch gateways.{gw} --all-namespaces"), false),
        (format!("delete gateways.{gw} --all-namespaces"), false),
        (format!("create gatewayclasses.{gw}"), false),
        // Runs waypoints, deletes nothing (owner references do), touches no Pod or Secret.
        ("create deployments.apps --namespace shop".to_owned(), true),
        ("patch deployments.apps --namespace shop".to_owned(), true),
        ("patch services --namespace shop".to_owned(), true),
        ("patch serviceaccounts --namespace shop".to_owned(), true),
        ("patch configmaps --namespace shop".to_owned(), true),
        ("delete deployments.apps --namespace shop".to_owned(), false),
        ("create pods --namespace shop".to_owned(), false),
        ("get secrets --all-namespaces".to_owned(), false),
        (
            "create serviceaccounts --subresource=token --namespace shop".to_owned(),
            false,
        ),
        // The trust bundle it copies, and no other ConfigMap it could read.
        (
            "get configmaps/ambit-ca-root-cert --namespace ambit-system".to_owned(),
            true,
        ),
        ("get configmaps --namespace shop".to_owned(), false),
        // One binding to one role: it cannot grant anything else.
        ("patch clusterrolebindings/ambit-waypoints".to_owned(), true),
        ("patch clusterrolebindings/cluster-admin".to_owned(), false),
        ("bind clusterroles/ambit-waypoint".to_owned(), true),
        ("bind clusterroles/cluster-admin".to_owned(), false),
        ("escalate clusterroles".to_owned(), false),
    ]
    .into();
    let wrong: Vec<String> = rules
        .iter()
        .filter(|(question, expected)| can_i(&server, &token, question) != *expected)
        .map(|(question, expected)| {
            let should = if *expected { "may" } else { "must not" };
            format!("the controller {should}: {question}")
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
