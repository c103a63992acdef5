//! `manifests/` against a real kube-apiserver 1.20.2 (the cache `scripts/kube-build.sh` fills;
//! these tests fail, not skip, when it is missing): every file passes server-side validation,
//! `kubectl apply -k manifests/` installs Ambit in one invocation on a fresh server, the CA
//! then creates the GatewayClasses, the overlays build, and the ServiceAccounts get exactly
//! the access they need.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ambit_tests::kube::{require_kube, KubeApiServer};
use ambit_tests::kube_mesh::manifests_root;
use ambit_tests::{mesh_binaries, Process, ProcessSpec};
use serde::Deserialize as _;
use serde_yaml::Value;

fn parse_documents(text: &[u8]) -> Vec<Value> {
    serde_yaml::Deserializer::from_slice(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The YAML documents of a file (a `---` stream), empty ones skipped.
fn documents(path: &Path) -> Vec<Value> {
    parse_documents(&std::fs::read(path).unwrap())
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// Every `*.yaml` under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The manifest files the kustomizations under `manifests/` list as resources. Fails when a
/// YAML file is neither a kustomization, nor a resource, nor a patch: it would go unvalidated.
fn resource_files() -> Vec<PathBuf> {
    let root = manifests_root().canonicalize().unwrap();
    let all = yaml_files(&root);
    let (mut resources, mut patches) = (BTreeSet::new(), BTreeSet::new());
    for kustomization in all.iter().filter(|p| p.ends_with("kustomization.yaml")) {
        let dir = kustomization.parent().unwrap();
        let doc = &documents(kustomization)[0];
        let listed = |key: &str| -> Vec<PathBuf> {
            doc[key]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|entry| dir.join(entry.as_str().unwrap()).canonicalize().unwrap())
                .collect()
        };
        resources.extend(listed("resources").into_iter().filter(|p| p.is_file()));
        patches.extend(listed("patchesStrategicMerge"));
    }
    let orphans: Vec<&PathBuf> = all
        .iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .filter(|p| !resources.contains(*p) && !patches.contains(*p))
        .collect();
    assert!(
        orphans.is_empty(),
        "YAML no kustomization uses: {orphans:?}"
    );
    resources.into_iter().collect()
}

fn start_server() -> KubeApiServer {
    KubeApiServer::start().unwrap_or_else(|error| {
        panic!(
            "cannot start the test API server: {error}\n(build it once with scripts/kube-build.sh)"
        )
    })
}

/// `kubectl apply --dry-run=server -f F…` in one call: every document must be accepted.
fn dry_run(server: &KubeApiServer, files: &[&PathBuf]) {
    let mut args = vec!["apply", "--dry-run=server"];
    for file in files {
        args.extend(["-f", file.to_str().unwrap()]);
    }
    let out = server.kubectl(&args).unwrap();
    let expected: usize = files.iter().map(|f| documents(f).len()).sum();
    let accepted = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(accepted, expected, "{files:?}:\n{out}");
}

/// `kubectl kustomize manifests/DIR` (kubectl 1.20's built-in kustomize v2.0.3).
fn kustomize(dir: &str) -> Vec<Value> {
    let path = manifests_root().join(dir);
    let out = Command::new(require_kube().unwrap().kubectl)
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl kustomize {dir}: {stderr}");
    parse_documents(&out.stdout)
}

#[test]
fn every_manifest_file_passes_server_side_validation_and_the_overlays_build() {
    let server = start_server();
    let files = resource_files();
    assert!(files.len() > 20, "found only {files:?}");

    // First what depends on nothing: CRDs (both channels) and the namespace.
    let standalone = |f: &&PathBuf| {
        documents(f)
            .iter()
            .all(|d| matches!(kind(d), "CustomResourceDefinition" | "Namespace"))
    };
    let (first, rest): (Vec<&PathBuf>, Vec<&PathBuf>) = files.iter().partition(standalone);
    dry_run(&server, &first);

    // The rest lives in ambit-system and may use the CRDs' kinds: create those for real.
    let root = manifests_root();
    for dir in ["crds/gateway-api/standard", "crds/istio"] {
        server
            .kubectl(&["apply", "-k", root.join(dir).to_str().unwrap()])
            .unwrap();
    }
    server
        .kubectl(&[
            "apply",
            "-f",
            root.join("core/namespace.yaml").to_str().unwrap(),
        ])
        .unwrap();
    dry_run(&server, &rest);

    // The base: no GatewayClass objects, which kubectl cannot apply together with their CRD
    // (the CA creates them).
    let base = kustomize(".");
    assert!(base.iter().all(|d| kind(d) != "GatewayClass"));
    assert!(base.iter().any(|d| kind(d) == "DaemonSet"));

    // The experimental channel builds and the server accepts all of it.
    let experimental = kustomize("overlays/experimental-gateway-api");
    assert!(experimental
        .iter()
        .any(|d| d["metadata"]["name"] == "xmeshes.gateway.networking.x-k8s.io"));
    let overlay = root.join("overlays/experimental-gateway-api");
    let out = server
        .kubectl(&["apply", "-k", overlay.to_str().unwrap(), "--dry-run=server"])
        .unwrap();
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        experimental.len(),
        "{out}"
    );

    // The surge overlay only builds here: 1.20 has no DaemonSet maxSurge to validate it with.
    let surge = kustomize("overlays/surge-upgrade");
    let daemonset = surge.iter().find(|d| kind(d) == "DaemonSet").unwrap();
    let rolling = &daemonset["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(rolling["maxSurge"], Value::from(1));
    assert_eq!(rolling["maxUnavailable"], Value::from(0));
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let installer = containers
        .iter()
        .find(|c| c["name"] == "install-cni")
        .unwrap();
    let args: Vec<&str> = installer["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--watch") && !args.contains(&"--uninstall-on-exit"),
        "while two agents run, the old installer must leave ambit-cni in the chain: {args:?}"
    );
    assert_eq!(
        containers.len(),
        2,
        "the patch merges into the base's containers"
    );
}

/// `ambit-ca serve` on the host as the `ambit-ca` ServiceAccount, stopped on drop.
fn start_ca(server: &KubeApiServer) -> Process {
    let kubeconfig = server.kubeconfig_as("ambit-system", "ambit-ca").unwrap();
    server
        .spawn_component(
            ProcessSpec::new(mesh_binaries().unwrap().ambit_ca)
                .name("ambit-ca")
                .args(["serve", "--kubeconfig"])
                .arg(&kubeconfig)
                .args(["--listen", "127.0.0.1:0"])
                .args(["--root-secret", "ambit-system/ambit-ca-root"])
                .args(["--root-configmap", "ambit-system/ambit-ca-root-cert"]),
        )
        .unwrap()
}

/// `name=controllerName` of every GatewayClass.
fn gateway_classes(server: &KubeApiServer) -> BTreeSet<String> {
    let template =
        r#"jsonpath={range .items[*]}{.metadata.name}={.spec.controllerName}{"\n"}{end}"#;
    let out = server
        .kubectl(&["get", "gatewayclasses", "-o", template])
        .unwrap();
    out.lines().map(str::to_string).collect()
}

#[test]
fn kubectl_apply_k_installs_ambit_in_one_invocation_and_the_ca_adds_the_gateway_classes() {
    let server = start_server();
    let root = manifests_root();
    let root = root.to_str().unwrap();

    // One command on a fresh server, exit status 0 (kubectl does not retry a kind it could not
    // map, so this fails if anything in the base needs a CRD applied in the same call).
    let out = server.kubectl(&["apply", "-k", root]).unwrap();
    for created in [
        "namespace/ambit-system created",
        "customresourcedefinition.apiextensions.k8s.io/gatewayclasses.gateway.networking.k8s.io created",
        "customresourcedefinition.apiextensions.k8s.io/authorizationpolicies.security.istio.io created",
        "clusterrole.rbac.authorization.k8s.io/ambit-ztunnel created",
        "deployment.apps/ambit-ca created",
        "service/ambit-ca created",
        "daemonset.apps/ztunnel created",
    ] {
        assert!(out.contains(created), "missing {created:?} in:\n{out}");
    }
    // Re-applying (an upgrade, or a second try) is a no-op that succeeds too.
    server.kubectl(&["apply", "-k", root]).unwrap();
    assert!(gateway_classes(&server).is_empty());

    // The CA, with only the manifests' RBAC, creates both classes when it starts.
    let ca = start_ca(&server);
    let expected: BTreeSet<String> = [
        "ambit=ambit.dev/gateway-controller",
        "ambit-waypoint=ambit.dev/waypoint-controller",
    ]
    .map(str::to_string)
    .into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gateway_classes(&server) != expected {
        assert!(
            Instant::now() < deadline,
            "GatewayClasses {:?} after 60 s; CA log:\n{}",
            gateway_classes(&server),
            ca.log().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let trust_bundle = server
        .kubectl(&[
            "get",
            "configmap",
            "-n",
            "ambit-system",
            "ambit-ca-root-cert",
            "-o",
            r"jsonpath={.data.ca\.crt}",
        ])
        .unwrap();
    assert!(
        trust_bundle.contains("BEGIN CERTIFICATE"),
        "{}",
        ca.log().unwrap_or_default()
    );
}

/// `kubectl auth can-i ARGS…` as the holder of `token`.
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

/// Every question whose answer is not the expected one, as readable lines.
fn wrong_answers(
    server: &KubeApiServer,
    who: &str,
    token: &str,
    rules: &[(&str, bool)],
) -> Vec<String> {
    rules
        .iter()
        .filter(|(question, expected)| can_i(server, token, question) != *expected)
        .map(|(question, expected)| {
            let should = if *expected { "may" } else { "must not" };
            format!("{who} {should}: {question}")
        })
        .collect()
}

#[test]
fn the_manifests_service_accounts_get_least_privilege() {
    let server = start_server();
    server
        .kubectl(&["apply", "-k", manifests_root().to_str().unwrap()])
        .unwrap();
    let ztunnel = server
        .service_account_token("ambit-system", "ztunnel", &[], None)
        .unwrap();
    let ca = server
        .service_account_token("ambit-system", "ambit-ca", &[], None)
        .unwrap();

    let mut wrong = wrong_answers(
        &server,
        "ztunnel",
        &ztunnel,
        &[
            // Reads what it resolves and authorises connections with, cluster-wide...
            ("list pods --all-namespaces", true),
            ("watch pods --all-namespaces", true),
            ("list services --all-namespaces", true),
            ("watch services --all-namespaces", true),
            ("list namespaces", true),
            ("watch namespaces", true),
            (
                "list endpointslices.discovery.k8s.io --all-namespaces",
                true,
            ),
            (
                "watch endpointslices.discovery.k8s.io --all-namespaces",
                true,
            ),
            (
                "list authorizationpolicies.security.istio.io --all-namespaces",
                true,
            ),
            (
                "watch authorizationpolicies.security.istio.io --all-namespaces",
                true,
            ),
            // ...never a Secret, anywhere...
            ("get secrets --all-namespaces", false),
            ("list secrets --all-namespaces", false),
            ("watch secrets --all-namespaces", false),
            ("get secrets --namespace ambit-system", false),
            ("list secrets --namespace ambit-system", false),
            ("get secrets/ambit-ca-root --namespace ambit-system", false),
            // ...and writes no Pod (nor their status), nor anything else.
            ("create pods --all-namespaces", false),
            ("update pods --all-namespaces", false),
            ("patch pods --all-namespaces", false),
            ("delete pods --all-namespaces", false),
            ("update pods/status --all-namespaces", false),
            ("patch pods/status --all-namespaces", false),
            ("update namespaces", false),
            ("create tokenreviews", false),
        ],
    );
    wrong.extend(wrong_answers(
        &server,
        "ambit-ca",
        &ca,
        &[
            ("create tokenreviews", true),
            ("list pods --all-namespaces", true),
            ("watch pods --all-namespaces", true),
            // Its own root Secret and trust-bundle ConfigMap, in its namespace, and no other.
            ("get secrets/ambit-ca-root --namespace ambit-system", true),
            (
                "update secrets/ambit-ca-root --namespace ambit-system",
                true,
            ),
            ("create secrets --namespace ambit-system", true),
            ("get secrets/another --namespace ambit-system", false),
            ("list secrets --namespace ambit-system", false),
            ("get secrets --all-namespaces", false),
            ("create secrets --namespace shop", false),
            (
                "get configmaps/ambit-ca-root-cert --namespace ambit-system",
                true,
            ),
            (
                "update configmaps/ambit-ca-root-cert --namespace ambit-system",
                true,
            ),
            ("update configmaps/another --namespace ambit-system", false),
            // The mesh's GatewayClasses: create missing ones, read its own, change none.
            ("create gatewayclasses.gateway.networking.k8s.io", true),
            ("get gatewayclasses.gateway.networking.k8s.io/ambit", true),
            (
                "get gatewayclasses.gateway.networking.k8s.io/ambit-waypoint",
                true,
            ),
            (
                "update gatewayclasses.gateway.networking.k8s.io/ambit",
                false,
            ),
            (
                "delete gatewayclasses.gateway.networking.k8s.io/ambit",
                false,
            ),
            // No Pod writes.
            ("create pods --all-namespaces", false),
            ("update pods --all-namespaces", false),
            ("patch pods --all-namespaces", false),
            ("delete pods --all-namespaces", false),
        ],
    ));
    assert!(
        wrong.is_empty(),
        "RBAC of manifests/core/rbac.yaml:\n{}",
        wrong.join("\n")
    );
}
