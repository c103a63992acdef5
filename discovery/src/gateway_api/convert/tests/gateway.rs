use super::{assert_rejections, convert, fields};
use crate::gateway_api::convert::gateway;
use crate::gateway_api::model::*;

fn gateway_of(spec: &str) -> Gateway {
    convert(
        gateway,
        "Gateway",
        &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra, labels: {{istio.io/waypoint-for: service}}}}\nspec:\n{spec}"),
    )
}

#[test]
fn listeners_addresses_and_tls_convert_with_defaults() {
    let gateway = gateway_of(
        "  gatewayClassName: ambit
  addresses: [{value: 10.0.0.9}, {type: example.com/pool, value: blue}, {type: Hostname}]
  infrastructure: {labels: {a: b}, parametersRef: {group: example.com, kind: Params, name: p}}
  allowedListeners: {namespaces: {from: All}}
  tls:
    frontend:
      default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}
      perPort: [{port: 443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca2}]}}}]
    backend: {clientCertificateRef: {name: client}}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: '*.example.com'
    tls: {certificateRefs: [{name: cert}, {name: other, namespace: certs}]}
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}, matchExpressions: [{key: env, operator: In, values: [prod]}]}}, kinds: [{kind: HTTPRoute}]}
  - {name: tls, port: 8443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: custom, port: 9000, protocol: INVALID}
",
    );
    assert_eq!(gateway.rejected, None, "{:?}", gateway.rejected);
    assert_eq!(gateway.class_name, "ambit");
    assert_eq!(gateway.labels["istio.io/waypoint-for"], "service");
    let [http, https, tls, custom] = &gateway.listeners[..] else {
        panic!("{:?}", gateway.listeners)
    };
    assert_eq!(
        (http.port, &http.protocol, &http.allowed_routes.namespaces),
        (80, &ListenerProtocol::Http, &RouteNamespaces::Same)
    );
    let https_tls = https.tls.as_ref().unwrap();
    assert_eq!(https_tls.mode, TlsMode::Terminate, "the default mode");
    assert_eq!(
        https_tls.certificate_refs[0],
        ObjectRef {
            group: String::new(),
            kind: "Secret".into(),
            namespace: "infra".into(),
            name: "cert".into()
        }
    );
    assert_eq!(https_tls.certificate_refs[1].namespace, "certs");
    assert_eq!(
        https.allowed_routes.kinds,
        [GroupKind {
            group: GATEWAY_API_GROUP.into(),
            kind: "HTTPRoute".into()
        }]
    );
    match &https.allowed_routes.namespaces {
        RouteNamespaces::Selector(selector) => {
            let labels = [
                ("team".to_owned(), "a".to_owned()),
                ("env".to_owned(), "prod".to_owned()),
            ]
            .into();
            assert!(selector.matches(&labels));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tls.tls.as_ref().unwrap().mode, TlsMode::Passthrough);
    assert_eq!(
        custom.protocol,
        ListenerProtocol::Other("INVALID".into()),
        "kept for UnsupportedProtocol status"
    );
    assert_eq!(gateway.addresses[0].address_type, AddressType::IpAddress);
    assert_eq!(
        gateway.addresses[1].address_type,
        AddressType::Other("example.com/pool".into())
    );
    assert_eq!(gateway.addresses[2].value, None);
    assert_eq!(
        gateway
            .infrastructure
            .as_ref()
            .unwrap()
            .parameters_ref
            .as_ref()
            .unwrap()
            .kind,
        "Params"
    );
    assert_eq!(gateway.allowed_listeners, RouteNamespaces::All);
    let tls = gateway.tls.as_ref().unwrap();
    let frontend = tls.frontend.as_ref().unwrap();
    assert_eq!(
        frontend.default.as_ref().unwrap().mode,
        FrontendValidationMode::AllowValidOnly
    );
    assert_eq!(
        frontend.per_port[0].validation.as_ref().unwrap().mode,
        FrontendValidationMode::AllowInsecureFallback
    );
    assert_eq!(
        tls.backend_client_certificate.as_ref().unwrap().kind,
        "Secret"
    );

    let minimal =
        gateway_of("  gatewayClassName: ambit\n  listeners: [{name: l, port: 1, protocol: TCP}]\n");
    assert_eq!(
        minimal.allowed_listeners,
        RouteNamespaces::None,
        "no ListenerSets by default"
    );
}

#[test]
fn each_invalid_gateway_field_is_named() {
    let listener = "{name: l, port: 80, protocol: HTTP}";
    let table: &[(&str, &str, &str)] = &[
        ("no class", &format!("  listeners: [{listener}]"), "spec.gatewayClassName"),
        ("no listeners", "  gatewayClassName: c", "spec.listeners"),
        ("listener port", "  gatewayClassName: c\n  listeners: [{name: l, port: 70000, protocol: HTTP}]", "spec.listeners[0].port"),
        ("listener name", "  gatewayClassName: c\n  listeners: [{name: L_1, port: 80, protocol: HTTP}]", "spec.listeners[0].name"),
        ("listener protocol syntax", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: 'h t'}]", "spec.listeners[0].protocol"),
        ("duplicate listener name", &format!("  gatewayClassName: c\n  listeners: [{listener}, {{name: l, port: 81, protocol: HTTP}}]"), "spec.listeners[1]"),
        ("same port protocol hostname", &format!("  gatewayClassName: c\n  listeners: [{listener}, {{name: m, port: 80, protocol: HTTP}}]"), "spec.listeners[1]"),
        ("tls on http", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: s}]}}]", "spec.listeners[0].tls"),
        ("passthrough https", "  gatewayClassName: c\n  listeners: [{name: l, port: 443, protocol: HTTPS, tls: {mode: Passthrough}}]", "spec.listeners[0].tls.mode"),
        ("tls without mode", "  gatewayClassName: c\n  listeners: [{name: l, port: 443, protocol: TLS}]", "spec.listeners[0].tls"),
        ("terminate without certificate", "  gatewayClassName: c\n  listeners: [{name: l, port: 443, protocol: HTTPS, tls: {}}]", "spec.listeners[0].tls.certificateRefs"),
        ("hostname on tcp", "  gatewayClassName: c\n  listeners: [{name: l, port: 9, protocol: TCP, hostname: a.com}]", "spec.listeners[0].hostname"),
        ("listener hostname", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, hostname: 'a_b.com'}]", "spec.listeners[0].hostname"),
        ("from", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Nowhere}}}]", "spec.listeners[0].allowedRoutes.namespaces.from"),
        ("selector missing", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}]", "spec.listeners[0].allowedRoutes.namespaces.selector"),
        ("selector operator", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: a, operator: Near}]}}}}]", "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator"),
        ("route kind", "  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: '1Route'}]}}]", "spec.listeners[0].allowedRoutes.kinds[0].kind"),
        ("certificate namespace", "  gatewayClassName: c\n  listeners: [{name: l, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: s, namespace: A}]}}]", "spec.listeners[0].tls.certificateRefs[0].namespace"),
        ("address type", &format!("  gatewayClassName: c\n  listeners: [{listener}]\n  addresses: [{{type: 'no such', value: x}}]"), "spec.addresses[0].type"),
        ("address twice", &format!("  gatewayClassName: c\n  listeners: [{listener}]\n  addresses: [{{value: 1.2.3.4}}, {{value: 1.2.3.4}}]"), "spec.addresses[1].value"),
        ("ca without group", &format!("  gatewayClassName: c\n  listeners: [{listener}]\n  tls: {{frontend: {{default: {{validation: {{caCertificateRefs: [{{kind: ConfigMap, name: ca}}]}}}}}}}}"), "spec.tls.frontend.default.validation.caCertificateRefs[0].group"),
        ("frontend without default", &format!("  gatewayClassName: c\n  listeners: [{listener}]\n  tls: {{frontend: {{perPort: []}}}}"), "spec.tls.frontend.default"),
        ("per port twice", &format!("  gatewayClassName: c\n  listeners: [{listener}]\n  tls: {{frontend: {{default: {{}}, perPort: [{{port: 443, tls: {{}}}}, {{port: 443, tls: {{}}}}]}}}}"), "spec.tls.frontend.perPort[1].port"),
    ];
    assert_rejections(table, |spec| gateway_of(&format!("{spec}\n")).rejected);
}

#[test]
fn a_rejected_gateway_keeps_its_listeners_for_status() {
    let gateway = gateway_of("  gatewayClassName: c\n  listeners: [{name: l, port: 80, protocol: HTTP}, {name: m, port: 0, protocol: HTTP}]\n");
    assert_eq!(fields(&gateway.rejected), ["spec.listeners[1].port"]);
    assert_eq!(gateway.listeners.len(), 2);
}
