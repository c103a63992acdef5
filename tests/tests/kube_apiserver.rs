//! The real Kubernetes API server the Kubernetes-mode tests run against: it starts from the
//! cache `scripts/kube-build.sh` fills, keeps objects across an API-server restart, and enforces
//! RBAC for tokens that are not the admin's. Fails (does not skip) when the build is missing.

use std::time::Instant;

use ambit_tests::kube::{require_kube, KubeApiServer, ISSUER};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  containers:
  - name: web
    image: example.invalid/web:1
    ports:
    - containerPort: 8080
"#;

/// Zero values ("", false, 0) in a custom resource: what kube-build.sh's kubernetes#99804 patch
/// fixes (unpatched, Go >= 1.16 rejects them as null).
const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.ambit.dev
spec:
  group: example.ambit.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              enabled: {type: boolean}
              name: {type: string}
              count: {type: integer}
"#;
const WIDGET: &str = r#"
apiVersion: example.ambit.dev/v1
kind: Widget
metadata: {name: zero, namespace: shop}
spec: {enabled: false, name: "", count: 0}
"#;

#[test]
fn api_server_serves_objects_survives_restart_and_enforces_rbac() {
    require_kube().unwrap();
    let started = Instant::now();
    let mut server = KubeApiServer::builder()
        .user("alice", &["developers"])
        .start()
        .unwrap();
    eprintln!(
        "kube-apiserver ready at {} after {:?}",
        server.url(),
        started.elapsed()
    );

    let namespaces = server
        .kubectl(&["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(namespaces.contains("namespace/default"), "{namespaces}");
    assert!(namespaces.contains("namespace/kube-system"), "{namespaces}");

    server.kubectl(&["create", "namespace", "shop"]).unwrap();
    server.kubectl_apply(POD).unwrap();
    let read = |server: &KubeApiServer| {
        server
            .kubectl(&[
                "get",
                "pod",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.metadata.labels.app}",
            ])
            .unwrap()
    };
    assert_eq!(read(&server), "web");
    let uid_before = server
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();

    server.kubectl_apply(CRD).unwrap();
    server
        .kubectl(&[
            "wait",
            "--for=condition=established",
            "crd/widgets.example.ambit.dev",
            "--timeout=60s",
        ])
        .unwrap();
    server.kubectl_apply(WIDGET).unwrap();

    let restarted = Instant::now();
    server.restart().unwrap();
    eprintln!("kube-apiserver restarted in {:?}", restarted.elapsed());
    assert_eq!(
        read(&server),
        "web",
        "the pod must survive an API-server restart (etcd keeps it)"
    );
    let uid_after = server
        .kubectl(&[
            "get",
            "pod",
            "web",
            "-n",
            "shop",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap();
    assert_eq!(uid_before, uid_after);

    // RBAC: alice has a valid token but no role; the admin may do anything.
    let alice = server.token("alice").unwrap().to_string();
    assert!(!server
        .can_i(&alice, "get", "secrets", Some("shop"))
        .unwrap());
    assert!(!server
        .can_i(&alice, "create", "pods", Some("shop"))
        .unwrap());
    let admin = server.admin_token().to_string();
    assert!(server
        .can_i(&admin, "get", "secrets", Some("shop"))
        .unwrap());
    let denied = server
        .kubectl_output(Some(&alice), &["get", "secrets", "-n", "shop"], None)
        .unwrap();
    assert!(
        !denied.success && denied.stderr.contains("forbidden"),
        "{denied:?}"
    );

    // A forged token is not authenticated at all.
    let anonymous = server
        .kubectl_output(Some("not-a-token"), &["get", "pods", "-n", "shop"], None)
        .unwrap();
    assert!(
        !anonymous.success && anonymous.stderr.contains("Unauthorized"),
        "{anonymous:?}"
    );
}

#[test]
fn controller_manager_creates_service_accounts_and_tokens_are_issued() {
    let started = Instant::now();
    let server = KubeApiServer::with_controller_manager().unwrap();
    eprintln!(
        "kube-apiserver + kube-controller-manager ready after {:?}",
        started.elapsed()
    );
    server.kubectl(&["create", "namespace", "mesh"]).unwrap();
    // The serviceaccount controller makes `default` in every new namespace.
    let mut found = false;
    for _ in 0..100 {
        let out = server
            .kubectl_output(
                None,
                &["get", "serviceaccount", "default", "-n", "mesh"],
                None,
            )
            .unwrap();
        if out.success {
            found = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        found,
        "the serviceaccount controller did not create mesh/default"
    );

    server
        .kubectl(&["create", "serviceaccount", "ztunnel", "-n", "mesh"])
        .unwrap();
    let token = server
        .service_account_token("mesh", "ztunnel", &[ISSUER], None)
        .unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // The token authenticates as the service account (it has no permissions yet).
    let denied = server
        .kubectl_output(Some(&token), &["get", "pods", "-n", "mesh"], None)
        .unwrap();
    assert!(
        denied.stderr.contains("system:serviceaccount:mesh:ztunnel"),
        "{denied:?}"
    );
    // A token for another audience (the CA's) is not accepted by the API server itself.
    let for_ca = server
        .service_account_token("mesh", "ztunnel", &["ambit-ca"], None)
        .unwrap();
    let rejected = server
        .kubectl_output(Some(&for_ca), &["get", "pods", "-n", "mesh"], None)
        .unwrap();
    assert!(rejected.stderr.contains("Unauthorized"), "{rejected:?}");
}
