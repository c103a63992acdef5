//! The matching cases of the Gateway API conformance suite (v1.6.1, `conformance/gateway-api`),
//! replayed against the route engine: which backend each request reaches, or 404.
//!
//! Mesh cases run as written (their routes have Service parents). Gateway cases run with each
//! Gateway parent replaced by a Service of `gateway-conformance-infra` (see [`gateway_service`]):
//! the matching rules are the same for both parents, and hostnames are not used for Services
//! (the cases whose expectation depends on the Host header are listed in `HOST_DEPENDENT`).
//! The filter tests replay their cases through the same loader.

use std::path::PathBuf;

use serde_yaml::Value;

use super::*;

pub(crate) fn suite() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance/gateway-api")
}

pub(crate) fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| {
        panic!(
            "cannot read {} ({error}): the conformance data lives in conformance/gateway-api",
            path.display()
        )
    })
}

/// The namespace of the Services that stand in for Gateways.
const GATEWAY_NAMESPACE: &str = "gateway-conformance-infra";

/// The Service (port 8080) that stands in for a Gateway: one per Gateway a test uses, so routes
/// of different listeners stay apart (HTTPRouteRedirectPortAndScheme has three).
fn gateway_service(gateway: &str) -> &'static str {
    match gateway {
        "same-namespace-with-http-listener-on-8080" => "infra-backend-v2",
        "same-namespace-with-https-listener" => "infra-backend-v3",
        _ => "infra-backend-v1",
    }
}

/// `(file, request path)` whose expectation holds only with the route's hostnames applied.
const HOST_DEPENDENT: &[(&str, &str)] = &[("HTTPRouteMatchingAcrossRoutes.yaml", "/v2")];

/// Loads a case's base and manifests; Gateway parents become [`gateway_service`]s.
pub(crate) fn case_table(case: &Value) -> RouteTable {
    let root = suite();
    let base = case["manifests"]["base"].as_str().unwrap();
    let mut text = read(&root.join(base))
        .replace("{GATEWAY_CLASS_NAME}", "ambit")
        .replace("{GATEWAY_CONTROLLER_NAME}", "ambit.dev/gateway-controller");
    for file in case["manifests"]["files"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let content = file["content"].as_str().unwrap();
        for document in serde_yaml::Deserializer::from_str(content) {
            let mut object = Value::deserialize(document).unwrap();
            if object.is_null() {
                continue;
            }
            let parents = object["spec"]["parentRefs"].as_sequence_mut();
            for parent in parents.into_iter().flatten() {
                let kind = parent["kind"].as_str().unwrap_or("Gateway");
                if kind == "Gateway" {
                    let name = gateway_service(parent["name"].as_str().unwrap());
                    *parent = serde_yaml::from_str(&format!(
                        "{{group: \"\", kind: Service, name: {name}, port: 8080}}"
                    ))
                    .unwrap();
                }
            }
            text.push_str("\n---\n");
            text.push_str(&serde_yaml::to_string(&object).unwrap());
        }
    }
    compile(&load(&text))
}

use serde::Deserialize as _;

/// `(service, port, client namespace)` a case's request goes to.
pub(crate) fn target(case: &Value) -> (String, u16, Option<String>) {
    let Some(client) = case["target"]["mesh_client"]["namespace"].as_str() else {
        let gateway = case["target"]["gateway"].as_str().unwrap_or_default();
        let name = gateway_service(gateway.rsplit('/').next().unwrap_or_default());
        return (format!("{GATEWAY_NAMESPACE}/{name}"), 8080, None);
    };
    // Mesh: `echo`, `echo-v1:8080`, `echo-v1.gateway-conformance-mesh`.
    let host = case["request"]["host"].as_str().unwrap_or("echo");
    let (host, port) = match host.split_once(':') {
        Some((h, p)) => (h, p.parse().unwrap()),
        None => (host, 80),
    };
    let (name, namespace) = host.split_once('.').unwrap_or((host, client));
    let namespace = namespace.split('.').next().unwrap();
    (format!("{namespace}/{name}"), port, Some(client.to_owned()))
}

/// What the case expects: a backend Service name, or `404`.
fn expected(case: &Value) -> String {
    let expect = &case["expect"];
    let failed = expect["status"].as_u64() == Some(404)
        || expect["grpc_code"].as_str().is_some_and(|c| c != "OK");
    if failed {
        return "404".into();
    }
    let backend = expect["backend"].as_str().unwrap();
    backend.rsplit('/').next().unwrap().to_owned()
}

fn replay(file: &str) -> (usize, Vec<String>) {
    let case_file: Value = serde_yaml::from_str(&read(&suite().join("cases").join(file))).unwrap();
    let table = case_table(&case_file);
    let mut failures = Vec::new();
    let mut replayed = 0;
    for case in case_file["cases"].as_sequence().unwrap() {
        let r = &case["request"];
        let path = r["path"].as_str().unwrap();
        if HOST_DEPENDENT.contains(&(file, path)) && r["host"].as_str() == Some("example.net") {
            continue;
        }
        // HTTP cases send `headers`, gRPC cases `metadata`.
        let headers: Vec<(String, String)> = r["headers"]
            .as_mapping()
            .or(r["metadata"].as_mapping())
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    v.as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = if case["request"]["scheme"].as_str() == Some("grpc") {
            grpc(path.trim_start_matches('/'), &headers)
        } else {
            let method = r["method"].as_str().unwrap_or("GET");
            request(&format!("{method} {path}"), &headers)
        };
        let (service, port, client) = target(case);
        let mut got = backend_of(&table, &service, port, client.as_deref(), &req);
        if got == "no route" {
            // The proxy forwards to the Service itself.
            got = key(&service).name;
        }
        let want = expected(case);
        replayed += 1;
        let label = format!(
            "{file}: {} {path} {headers:?} from {client:?}",
            r["method"].as_str().unwrap_or("")
        );
        if got != want {
            failures.push(format!("{label}: got {got}, want {want}"));
        }
        let rule = table
            .service_routes(&key(&service), port, client.as_deref())
            .and_then(|routes| routes.find(&req.facts()))
            .map(|found| found.rule);
        if let Some(problem) = response_headers(rule, &case["expect"]["response_headers"]) {
            failures.push(format!("{label}: {problem}"));
        }
    }
    (replayed, failures)
}

/// Checks the headers a rule's ResponseHeaderModifier leaves on an empty response against the
/// case's `response_headers` (`present` values joined with `,`, as the harness reads them).
fn response_headers(rule: Option<&Rule>, expect: &Value) -> Option<String> {
    let mut headers = http::HeaderMap::new();
    for filter in rule.into_iter().flat_map(|r| &r.filters) {
        if let crate::filters::Filter::ResponseHeaders(edits) = filter {
            edits.apply(&mut headers);
        }
    }
    for (name, value) in expect["present"].as_mapping().into_iter().flatten() {
        let (name, value) = (name.as_str().unwrap(), value.as_str().unwrap());
        let joined: Vec<&str> = headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        if joined.join(",") != value {
            return Some(format!(
                "response header {name}: got {joined:?}, want {value:?}"
            ));
        }
    }
    for name in expect["absent"].as_sequence().into_iter().flatten() {
        let name = name.as_str().unwrap();
        if headers.contains_key(name) {
            return Some(format!("response header {name} must be absent"));
        }
    }
    None
}

#[test]
fn conformance_matching_cases_reach_the_expected_backend() {
    let files = [
        "HTTPRouteMatching.yaml",
        "HTTPRouteExactPathMatching.yaml",
        "HTTPRoutePathMatchOrder.yaml",
        "HTTPRouteMatchingAcrossRoutes.yaml",
        "HTTPRouteHeaderMatching.yaml",
        "HTTPRouteQueryParamMatching.yaml",
        "HTTPRouteMethodMatching.yaml",
        "GRPCExactMethodMatching.yaml",
        "GRPCRouteHeaderMatching.yaml",
        "mesh-MeshHTTPRouteMatching.yaml",
        "mesh-MeshHTTPRouteQueryParamMatching.yaml",
        "mesh-MeshPorts.yaml",
        "mesh-MeshFrontendHostname.yaml",
        "mesh-MeshConsumerRoute.yaml",
    ];
    let mut total = 0;
    let mut failures = Vec::new();
    for file in files {
        let (replayed, failed) = replay(file);
        assert!(replayed > 0, "{file}: no case replayed");
        total += replayed;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} conformance matching cases replayed");
}
