//! The data set, mesh-base and name resolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn all_22_mesh_files_parse_with_the_81_cases_the_index_counts() {
    let files = all_files();
    assert_eq!(files.len(), 22);
    assert_eq!(files.iter().map(|f| f.cases.len()).sum::<usize>(), 81);
    let index: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(data_dir().join("INDEX.yaml")).unwrap())
            .unwrap();
    for file in &files {
        let entry = index["tests"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|t| t["name"] == file.name.as_str())
            .unwrap();
        assert_eq!(
            entry["cases"].as_u64(),
            Some(file.cases.len() as u64),
            "{}",
            file.name
        );
        assert!(file.features.contains(&"Mesh".to_string()), "{}", file.name);
        assert_eq!(file.manifests.base.as_deref(), Some("mesh-base.yaml"));
        for case in &file.cases {
            assert!(
                case.target.mesh_client.is_some(),
                "{} / {}",
                file.name,
                case.label()
            );
        }
    }
}

#[test]
fn every_test_manifest_is_routes_only_and_applies_verbatim() {
    for file in all_files() {
        for manifest in &file.manifests.files {
            let docs = route_documents(manifest).unwrap();
            assert!(!docs.is_empty(), "{}", manifest.path);
            for doc in docs {
                let kind = doc["kind"].as_str().unwrap();
                assert!(
                    ["HTTPRoute", "GRPCRoute"].contains(&kind),
                    "{}: {kind}",
                    manifest.path
                );
                assert_eq!(doc["spec"]["parentRefs"][0]["kind"], "Service");
            }
        }
    }
}

#[test]
fn mesh_base_deployments_become_pods_named_like_a_replicaset_would_name_them() {
    let base = base();
    assert_eq!(base.namespaces.len(), 2);
    assert_eq!(base.services.len(), 3);
    let echo = base.services.iter().find(|s| s.name == "echo").unwrap();
    let ports: Vec<(&str, u16, u16)> = echo
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.target_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("http", 80, 8080),
            ("http-alt", 8080, 8080),
            ("https", 443, 8443),
            ("tcp", 9090, 9090),
            ("grpc", 7070, 7070)
        ]
    );
    assert_eq!(echo.ports[4].app_protocol.as_deref(), Some("grpc"));

    let pods = expand_deployments(&base.deployments, 2).unwrap();
    assert_eq!(pods.len(), 3, "one replica each: {pods:?}");
    for pod in &pods {
        let parts: Vec<&str> = pod.name.rsplitn(3, '-').collect();
        assert_eq!((parts[0].len(), parts[1].len()), (5, 10), "{}", pod.name);
        assert_eq!(backend_of_pod(&pod.name), pod.deployment);
        assert_eq!(pod.labels["app"], "echo");
        assert_eq!(pod.labels["pod-template-hash"], parts[1]);
    }
    assert_eq!(
        pods.iter().map(|p| p.node).collect::<Vec<_>>(),
        [0, 1, 0],
        "spread over the nodes"
    );
    // The same input names the same pods: a rerun is comparable.
    assert_eq!(expand_deployments(&base.deployments, 2).unwrap(), pods);

    // mesh-base's args: 8443 is TLS (not served); the consumer echo has no args (Istio defaults).
    let mesh_echo = &pods[0].echo;
    assert_eq!(
        mesh_echo,
        &EchoPorts {
            http: vec![8080],
            grpc: vec![7070],
            tcp: vec![9090],
            tls: vec![8443]
        }
    );
    assert_eq!(pods[2].namespace, "gateway-conformance-mesh-consumer");
    assert_eq!(pods[2].echo.served(), [7070, 8080, 9090]);
    let args = mesh_echo.testapp_args(&pods[0].name, "gateway-conformance-mesh", "v1");
    assert_eq!(args[..2], ["mesh-echo", "--pod"]);
    assert!(args.windows(2).any(|w| w == ["--grpc", "7070"]), "{args:?}");
}

#[test]
fn names_resolve_as_cluster_dns_would_from_the_client_namespace() {
    let resolver = resolver();
    let mesh = "gateway-conformance-mesh";
    let echo = resolver.resolve("echo", mesh, 80).unwrap();
    assert_eq!(
        echo.connect,
        "10.9.200.12:80".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(echo.authority, "echo");
    let v1 = resolver.resolve("echo-v1:8080", mesh, 80).unwrap();
    assert_eq!(
        (v1.connect.port(), v1.authority.as_str()),
        (8080, "echo-v1:8080")
    );
    // From the consumer namespace, only qualified names reach the mesh namespace's Services.
    let consumer = "gateway-conformance-mesh-consumer";
    assert!(resolver
        .resolve("echo-v1", consumer, 80)
        .unwrap_err()
        .contains("NXDOMAIN"));
    for name in [
        "echo-v1.gateway-conformance-mesh",
        "echo-v1.gateway-conformance-mesh.svc.cluster.local",
    ] {
        assert_eq!(
            resolver.resolve(name, consumer, 80).unwrap().connect,
            v1.connect
                .ip()
                .to_string()
                .parse::<Ipv4Addr>()
                .map(|ip| SocketAddr::from((ip, 80)))
                .unwrap()
        );
    }
    // The data set's pod-IP placeholder, and plain IPs, are dialled as they are.
    let pod = resolver
        .resolve(
            "<IP of an echo-v2 pod (app=echo,version=v2)>:8080",
            mesh,
            80,
        )
        .unwrap();
    assert_eq!(pod.connect, "10.9.1.3:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(pod.authority, "10.9.1.3:8080");
    assert_eq!(
        resolver.resolve("10.1.2.3", mesh, 80).unwrap().authority,
        "10.1.2.3"
    );
    assert!(resolver.resolve("example.org", mesh, 80).is_err());
    assert_eq!(default_port("https"), 443);
}

#[test]
fn every_case_becomes_a_client_command_line() {
    let resolver = resolver();
    for file in all_files() {
        for case in &file.cases {
            let namespace = &case.target.mesh_client.as_ref().unwrap().namespace;
            let destination = resolver
                .resolve(case.request.host(), namespace, 80)
                .unwrap();
            let args = build_client_args(case, &destination, Duration::from_secs(10)).unwrap();
            assert_eq!(args[0], "mesh-client", "{}", file.name);
        }
    }
    // A Host header in the case overrides the URL's host (MeshFrontendHostname).
    let hostname = file("MeshFrontendHostname");
    let case = &hostname.cases[0];
    let destination = resolver
        .resolve(case.request.host(), "gateway-conformance-mesh", 80)
        .unwrap();
    let args = build_client_args(case, &destination, Duration::from_secs(10)).unwrap();
    let host = args.iter().position(|a| a == "--host").unwrap();
    assert_eq!(args[host + 1], "echo-v1");
    assert!(
        destination.connect.ip()
            == resolver
                .resolve("echo-v2", "gateway-conformance-mesh", 80)
                .unwrap()
                .connect
                .ip()
    );
    assert!(!args.iter().any(|a| a.starts_with("Host:")));
    // gRPC cases call the echo service over h2c.
    let grpc = file("MeshGRPCRouteWeight");
    let destination = resolver
        .resolve(grpc.cases[0].request.host(), "gateway-conformance-mesh", 80)
        .unwrap();
    let args = build_client_args(&grpc.cases[0], &destination, Duration::from_secs(10)).unwrap();
    assert!(
        args.contains(&"--grpc".to_string()) && destination.connect.port() == 7070,
        "{args:?}"
    );
}
