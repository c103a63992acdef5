//! The Gateway API kinds from `--manifests`: all six loaded into the snapshot with the CRD
//! defaults applied, a route that breaks the schema kept as rejected without stopping the rest,
//! and the dump an operator reads listing it with why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use discovery::gateway_api::{PathMatch, RouteNamespaces, TlsMode, GATEWAY_API_GROUP};
use discovery::{LocalSource, LocalSourceConfig, ManifestError, PollOutcome};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/gateway-api/all-kinds.yaml")
}

#[test]
fn a_file_with_all_six_kinds_loads_and_the_broken_route_is_rejected_with_why() {
    let source = LocalSource::load(LocalSourceConfig::new([testdata()])).unwrap();
    let snapshot = source.current();
    let view = snapshot.gateway_api();

    let gateway = view.gateway("infra", "ingress").unwrap();
    assert_eq!(gateway.rejected, None);
    assert_eq!(gateway.listeners.len(), 4);
    assert!(matches!(
        gateway.listeners[0].allowed_routes.namespaces,
        RouteNamespaces::Selector(_)
    ));
    let https = gateway.listeners[1].tls.as_ref().unwrap();
    assert_eq!(https.mode, TlsMode::Terminate);
    let certificate = &https.certificate_refs[0];
    assert!(
        snapshot
            .secret(&certificate.namespace, &certificate.name)
            .is_some(),
        "the certificate Secret is in the snapshot too"
    );

    let routes: Vec<&str> = view.http_routes().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        routes,
        ["broken", "cart"],
        "sorted by namespace and name, the rejected one kept"
    );
    let cart = &view.http_routes()[1];
    assert_eq!(cart.rejected, None);
    assert_eq!(
        cart.rules[0].backends[0].backend.weight, 1,
        "weight defaults to 1"
    );
    assert_eq!(cart.rules[0].backends[1].backend.weight, 0);
    assert_eq!(
        cart.rules[1].matches[0].path,
        PathMatch::PathPrefix("/".into()),
        "no matches: PathPrefix /"
    );
    assert_eq!(
        view.grpc_routes()[0].rules[0].backends[0].backend.port,
        Some(9000)
    );
    assert_eq!(view.tls_routes()[0].hostnames, ["secure.example.com"]);
    assert_eq!(view.tcp_routes()[0].parent_refs[0].port, Some(5432));
    // The cross-namespace backend of cart is granted; another Service there is not.
    let from = (GATEWAY_API_GROUP, "HTTPRoute", "shop");
    assert!(view.reference_permitted(from, "infra", ("", "Service", "web")));
    assert!(!view.reference_permitted(from, "infra", ("", "Service", "admin")));
    assert!(
        view.reference_permitted(from, "shop", ("", "Service", "cart")),
        "same namespace"
    );

    // Rejected, not dropped: the reason names the object and the field; it has no rules to serve.
    let rejected = view.rejected();
    assert_eq!(rejected.len(), 1);
    let line = rejected[0].to_string();
    assert!(
        line.starts_with("HTTPRoute shop/broken: spec.rules[0].matches[0].path.value: \"cart\" must be an absolute path"),
        "{line}"
    );
    let broken = &view.http_routes()[0];
    assert!(broken.rules.is_empty());
    assert_eq!(
        broken.parent_refs[0].name, "ingress",
        "its parents are known for status"
    );

    // The operator sees it among the problems of the manifests in force…
    let problems = source.problems().unwrap();
    let [ManifestError::Rejected { field, message, .. }] = problems.errors() else {
        panic!("{problems}")
    };
    assert_eq!(field, "spec.rules[0].matches[0].path.value");
    assert!(message.contains("must be an absolute path"), "{message}");
    assert!(
        problems.to_string().contains("(HTTPRoute shop/broken)"),
        "{problems}"
    );

    // …and in the dump, with every kind.
    let dump = serde_json::to_value(view.dump()).unwrap();
    for key in [
        "gateways",
        "httpRoutes",
        "grpcRoutes",
        "tlsRoutes",
        "tcpRoutes",
        "referenceGrants",
    ] {
        assert!(
            dump[key].as_array().is_some_and(|list| !list.is_empty()),
            "{key} missing from {dump}"
        );
    }
    assert_eq!(dump["rejected"][0]["kind"], "HTTPRoute");
    assert_eq!(
        dump["rejected"][0]["rejection"]["problems"][0]["field"],
        "spec.rules[0].matches[0].path.value"
    );
    assert_eq!(
        dump["httpRoutes"][1]["rules"][0]["matches"][0]["path"]["PathPrefix"],
        "/cart"
    );
}

#[test]
fn fixing_the_rejected_route_accepts_it_on_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway-api.yaml");
    let text = std::fs::read_to_string(testdata()).unwrap();
    std::fs::write(&path, &text).unwrap();
    let source = LocalSource::load(LocalSourceConfig::new([&path])).unwrap();
    assert_eq!(source.current().gateway_api().rejected().len(), 1);

    std::fs::write(&path, text.replace("value: cart}", "value: /cart}")).unwrap();
    assert_eq!(source.poll(), PollOutcome::Published(2));
    let snapshot = source.current();
    assert!(snapshot.gateway_api().rejected().is_empty());
    let fixed = snapshot
        .gateway_api()
        .http_routes()
        .iter()
        .find(|r| r.name == "broken")
        .unwrap();
    assert_eq!(
        fixed.rules[0].matches[0].path,
        PathMatch::PathPrefix("/cart".into())
    );
    assert!(source.problems().is_none());
}
