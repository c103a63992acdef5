//! Backend references: resolution (and why not), weighted choice, mirrors.

use discovery::gateway_api::BackendRef;

use super::*;
use crate::filters::Filter;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-may-bill, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: billing}]
"#;

/// The Service and port a reference resolves to, or the reason it does not.
type Want = Result<(&'static str, u16), &'static str>;

fn backend(group: &str, kind: &str, namespace: &str, name: &str, port: Option<u16>) -> BackendRef {
    BackendRef {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        port,
        weight: 1,
    }
}

#[test]
fn backend_refs_resolve_or_say_why_not() {
    let snapshot = snapshot(&format!("{BASE}\n---\n{GRANT}"));
    let http = RouteKind::Http;
    let cases: [(&str, RouteKind, BackendRef, Want); 8] = [
        (
            "same namespace",
            http,
            backend("", "Service", "shop", "cart", Some(80)),
            Ok(("shop/cart", 80)),
        ),
        (
            "second port",
            http,
            backend("", "Service", "shop", "cart", Some(8080)),
            Ok(("shop/cart", 8080)),
        ),
        (
            "no such port",
            http,
            backend("", "Service", "shop", "cart", Some(81)),
            Err("BackendNotFound"),
        ),
        (
            "no such Service",
            http,
            backend("", "Service", "shop", "gone", Some(80)),
            Err("BackendNotFound"),
        ),
        (
            "not a Service",
            http,
            backend("example.com", "Bucket", "shop", "b", Some(80)),
            Err("InvalidKind"),
        ),
        (
            "granted",
            http,
            backend("", "Service", "other", "billing", Some(80)),
            Ok(("other/billing", 80)),
        ),
        (
            "the grant is for HTTPRoutes only",
            RouteKind::Grpc,
            backend("", "Service", "other", "billing", Some(80)),
            Err("RefNotPermitted"),
        ),
        (
            "no port",
            http,
            backend("", "Service", "shop", "cart", None),
            Err("BackendNotFound"),
        ),
    ];
    for (case, kind, reference, want) in cases {
        let got = resolve_backend(&snapshot, kind, "shop", &reference);
        match (want, &got) {
            (Ok((service, port)), BackendTarget::Service { key, port: p }) => {
                assert_eq!((key.to_string().as_str(), *p), (service, port), "{case}");
            }
            (Err(reason), BackendTarget::Invalid(problem)) => {
                assert_eq!(problem.reason(), reason, "{case}: {problem}");
            }
            _ => panic!("{case}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_route_may_send_to_its_own_parent_service_across_namespaces() {
    let snapshot = snapshot(BASE);
    let parent: discovery::gateway_api::ParentRef = discovery::gateway_api::ParentRef {
        group: String::new(),
        kind: "Service".into(),
        namespace: "other".into(),
        name: "billing".into(),
        section_name: None,
        port: None,
    };
    let billing = backend("", "Service", "other", "billing", Some(80));
    let cart = backend("", "Service", "shop", "cart", Some(80));
    let resolve = |b: &BackendRef| {
        resolve_route_backend(
            &snapshot,
            RouteKind::Http,
            "client",
            std::slice::from_ref(&parent),
            b,
        )
    };
    assert!(
        resolve(&billing).is_valid(),
        "the parent itself needs no grant"
    );
    assert!(
        matches!(resolve(&cart), BackendTarget::Invalid(p) if p.reason() == "RefNotPermitted"),
        "any other Service still does"
    );
    let plain = resolve_backend(&snapshot, RouteKind::Http, "client", &billing);
    assert!(!plain.is_valid(), "resolve_backend knows no parents");
}

#[test]
fn problems_name_the_cause_and_the_fix() {
    let snapshot = snapshot(BASE);
    let message = |reference: BackendRef| match resolve_backend(
        &snapshot,
        RouteKind::Http,
        "shop",
        &reference,
    ) {
        BackendTarget::Invalid(problem) => problem.to_string(),
        other => panic!("{other:?} resolved"),
    };
    let cases = [
        (backend("", "Service", "shop", "cart", Some(81)), "backend shop/cart port 81: the Service has no such port; create it or fix the backendRef"),
        (backend("", "Service", "shop", "gone", Some(80)), "backend shop/gone port 80: no such Service; create it or fix the backendRef"),
        (backend("example.com", "Bucket", "shop", "b", Some(80)), "backend b: kind example.com/Bucket is not supported (only core Services are); point the backendRef at a Service"),
        (backend("", "Service", "other", "billing", Some(80)), "backend other/billing: a HTTPRoute in namespace shop may not refer to a Service in namespace other; add a ReferenceGrant there that allows it"),
        (backend("", "Service", "shop", "cart", None), "backend shop/cart: a Service reference needs a port; set backendRef.port"),
    ];
    for (reference, want) in cases {
        assert_eq!(message(reference), want);
    }
}

const WEIGHTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: cart-v1, port: 80, weight: 1}
    - {name: cart, port: 80, weight: 0}
    - {name: cart-v2, port: 80, weight: 3}
  - matches: [{path: {type: PathPrefix, value: /zero}}]
    backendRefs: [{name: cart-v1, port: 80, weight: 0}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: cart-v2, port: 80}, percent: 25}
    - type: RequestMirror
      requestMirror: {backendRef: {name: gone, port: 80}}
"#;

fn rule_for<'t>(table: &'t RouteTable, path: &str) -> &'t Rule {
    let routes = table.service_routes(&key("shop/cart"), 80, None).unwrap();
    let request = request(&format!("GET {path}"), &[]);
    routes.find(&request.facts()).unwrap().rule
}

#[test]
fn backends_are_picked_by_weight_and_weight_zero_never() {
    let table = table(WEIGHTS);
    let split = rule_for(&table, "/split");
    let picked = |random: u32| match &split.pick_backend(random).unwrap().target {
        BackendTarget::Service { key, .. } => key.name.clone(),
        other => panic!("{other:?}"),
    };
    // Total weight 4: one point of four for v1, three for v2, none for the weight-0 backend.
    let cases = [
        (0, "cart-v1"),
        (1, "cart-v2"),
        (3, "cart-v2"),
        (4, "cart-v1"),
        (u32::MAX, "cart-v2"),
    ];
    for (random, want) in cases {
        assert_eq!(picked(random), want, "random {random}");
    }
    let mut counts = std::collections::BTreeMap::new();
    for random in 0..4000 {
        *counts.entry(picked(random)).or_insert(0) += 1;
    }
    assert_eq!(counts.get("cart-v1"), Some(&1000));
    assert_eq!(counts.get("cart-v2"), Some(&3000));
    assert_eq!(counts.get("cart"), None);

    assert!(
        rule_for(&table, "/zero").pick_backend(7).is_none(),
        "all weights 0"
    );
    assert!(
        rule_for(&table, "/none").pick_backend(7).is_none(),
        "no backends"
    );
}

#[test]
fn mirrors_resolve_their_backend_and_sample_by_fraction() {
    let table = table(WEIGHTS);
    let mirrors: Vec<_> = rule_for(&table, "/none")
        .filters
        .iter()
        .map(|f| match f {
            Filter::Mirror(m) => m,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        mirrors[0].target,
        BackendTarget::Service {
            key: key("shop/cart-v2"),
            port: 80
        }
    );
    assert_eq!((mirrors[0].numerator, mirrors[0].denominator), (25, 100));
    let sampled = (0..1000).filter(|r| mirrors[0].should_mirror(*r)).count();
    assert_eq!(sampled, 250);
    assert!(
        matches!(&mirrors[1].target, BackendTarget::Invalid(p) if p.reason() == "BackendNotFound")
    );
    assert!(
        (0..100).all(|r| mirrors[1].should_mirror(r)),
        "no fraction: every request"
    );
}
