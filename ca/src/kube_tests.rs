#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

fn ztunnels() -> Ztunnels {
    Ztunnels {
        namespace: "ambit-system".into(),
        service_account: "ztunnel".into(),
        label: ("app".into(), "ztunnel".into()),
    }
}

fn reviewed(username: &str, audiences: &[&str], pod: Option<(&str, &str)>) -> TokenReviewStatus {
    let mut extra = BTreeMap::new();
    if let Some((name, uid)) = pod {
        extra.insert(POD_NAME_EXTRA.to_owned(), vec![name.to_owned()]);
        extra.insert(POD_UID_EXTRA.to_owned(), vec![uid.to_owned()]);
    }
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        user: Some(UserInfo {
            username: Some(username.to_owned()),
            extra: Some(extra),
            ..UserInfo::default()
        }),
        error: None,
    }
}

const ZTUNNEL: &str = "system:serviceaccount:ambit-system:ztunnel";

#[test]
fn a_bound_ztunnel_token_names_its_pod() {
    let status = reviewed(ZTUNNEL, &["ambit-ca"], Some(("ztunnel-abc", "uid-1")));
    assert_eq!(
        bound_pod(&status, "ambit-ca", &ztunnels()).unwrap(),
        ("ztunnel-abc".to_owned(), "uid-1".to_owned())
    );
}

#[test]
fn tokens_are_refused_with_the_reason() {
    let rejected = TokenReviewStatus {
        authenticated: Some(false),
        error: Some(
            "invalid bearer token, square/go-jose: error in cryptographic primitive".into(),
        ),
        ..TokenReviewStatus::default()
    };
    let cases: Vec<(&str, TokenReviewStatus, &str)> = vec![
        ("forged", rejected, "cryptographic primitive"),
        (
            "no verdict",
            TokenReviewStatus::default(),
            "not authenticated",
        ),
        (
            "audience not confirmed",
            reviewed(
                ZTUNNEL,
                &["https://kubernetes.default.svc"],
                Some(("z", "u")),
            ),
            "did not confirm audience",
        ),
        (
            "another service account",
            reviewed(
                "system:serviceaccount:shop:web",
                &["ambit-ca"],
                Some(("web-0", "u")),
            ),
            "not to the ztunnel service account",
        ),
        (
            "a user, not a service account",
            reviewed("alice", &["ambit-ca"], None),
            "\"alice\"",
        ),
        (
            "not bound to a pod",
            reviewed(ZTUNNEL, &["ambit-ca"], None),
            "projected serviceAccountToken",
        ),
    ];
    for (case, status, reason) in cases {
        let refusal = bound_pod(&status, "ambit-ca", &ztunnels()).unwrap_err();
        assert!(refusal.to_string().contains(reason), "{case}: {refusal}");
    }
    let forged = bound_pod(&TokenReviewStatus::default(), "ambit-ca", &ztunnels()).unwrap_err();
    assert!(matches!(forged, Refusal::TokenRejected { .. }));
}

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

const ZTUNNEL_POD: &str =
    "metadata: {name: ztunnel-abc, namespace: ambit-system, uid: uid-1, labels: {app: ztunnel}}
spec: {nodeName: node-a, serviceAccountName: ztunnel, containers: []}";

#[test]
fn the_node_is_that_of_the_ztunnel_pod() {
    let ztunnel = pod(ZTUNNEL_POD);
    assert_eq!(
        pod_node(Some(&ztunnel), "ztunnel-abc", "uid-1", &ztunnels()).unwrap(),
        "node-a"
    );
    let cases = [
        ("uid: uid-1", "uid: uid-2", "was replaced"),
        ("app: ztunnel", "app: web", "not a ztunnel pod"),
        (
            "serviceAccountName: ztunnel",
            "serviceAccountName: web",
            "runs as service account",
        ),
        ("nodeName: node-a, ", "", "not scheduled"),
    ];
    for (from, to, reason) in cases {
        let changed = pod(&ZTUNNEL_POD.replace(from, to));
        let refusal = pod_node(Some(&changed), "ztunnel-abc", "uid-1", &ztunnels()).unwrap_err();
        assert!(refusal.to_string().contains(reason), "{to}: {refusal}");
    }
    let gone = pod_node(None, "ztunnel-abc", "uid-1", &ztunnels()).unwrap_err();
    assert!(gone.to_string().contains("no longer exists"), "{gone}");
}

fn secret(entries: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[test]
fn the_root_secret_is_read_like_cert_manager_writes_it() {
    let root =
        CertificateAuthority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    let full = secret(&[
        ("tls.crt", &root.cert_pem),
        ("tls.key", &root.key_pem),
        ("ca.crt", &root.cert_pem),
    ]);
    let ca = ca_from_secret("ambit-system/root", &full, "cluster.local").unwrap();
    assert_eq!(ca.trust_domain(), "cluster.local");
    // ca.crt is optional, as for a self-signed cert-manager issuer.
    let no_roots = secret(&[("tls.crt", &root.cert_pem), ("tls.key", &root.key_pem)]);
    assert!(ca_from_secret("s", &no_roots, "cluster.local").is_ok());

    let no_key = secret(&[("tls.crt", &root.cert_pem)]);
    let error = ca_from_secret("ambit-system/root", &no_key, "cluster.local").unwrap_err();
    assert!(error.to_string().contains("has no tls.key"), "{error}");
    let garbage = secret(&[("tls.crt", "not pem"), ("tls.key", &root.key_pem)]);
    assert!(matches!(
        ca_from_secret("s", &garbage, "cluster.local").unwrap_err(),
        RootSecretError::Invalid { .. }
    ));
}

#[test]
fn labels_parse() {
    assert_eq!(
        parse_label("app=ztunnel").unwrap(),
        ("app".into(), "ztunnel".into())
    );
    assert_eq!(parse_label("k=").unwrap(), ("k".into(), String::new()));
    assert!(parse_label("app").unwrap_err().contains("KEY=VALUE"));
    assert!(parse_label("=x").is_err());
}

#[test]
fn only_jwt_shaped_tokens_are_worth_a_review() {
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl_-";
    assert!(screen_token(jwt, "ambit-ca").is_ok());
    let long = format!("{jwt}{}", "A".repeat(MAX_TOKEN_BYTES));
    for token in [
        "not-a-token",
        "a.b",
        "a..c",
        "a.b.c.d",
        "a.b.c d",
        "a.b.ç",
        &long,
    ] {
        match screen_token(token, "ambit-ca") {
            Err(Refusal::TokenRejected { audience, .. }) => assert_eq!(audience, "ambit-ca"),
            other => panic!("{token:?}: {other:?}"),
        }
    }
}

const WAYPOINT: &str = "system:serviceaccount:shop:waypoint";

fn waypoint_holder() -> WaypointHolder {
    WaypointHolder {
        namespace: "shop".into(),
        service_account: "waypoint".into(),
        pod: "waypoint-7d9f-abcde".into(),
        uid: "uid-w".into(),
    }
}

#[test]
fn a_ztunnel_token_still_takes_the_ztunnel_path() {
    let status = reviewed(ZTUNNEL, &["ambit-ca"], Some(("ztunnel-abc", "uid-1")));
    assert_eq!(
        token_holder(&status, "ambit-ca", &ztunnels()).unwrap(),
        TokenHolder::Ztunnel {
            pod: "ztunnel-abc".into(),
            uid: "uid-1".into()
        }
    );
    // An unbound ztunnel token is refused with the ztunnel's advice, as before.
    let unbound = reviewed(ZTUNNEL, &["ambit-ca"], None);
    let refusal = token_holder(&unbound, "ambit-ca", &ztunnels()).unwrap_err();
    assert!(
        refusal.to_string().contains("in the ztunnel DaemonSet"),
        "{refusal}"
    );
}

#[test]
fn a_pod_bound_token_of_another_service_account_names_a_waypoint_holder() {
    let status = reviewed(
        WAYPOINT,
        &["ambit-ca"],
        Some(("waypoint-7d9f-abcde", "uid-w")),
    );
    assert_eq!(
        token_holder(&status, "ambit-ca", &ztunnels()).unwrap(),
        TokenHolder::Waypoint(waypoint_holder())
    );
    let cases: Vec<(&str, TokenReviewStatus, &str)> = vec![
        (
            "not bound to a pod (a legacy or TokenRequest token)",
            reviewed(WAYPOINT, &["ambit-ca"], None),
            "not bound to a pod",
        ),
        (
            "audience not confirmed",
            reviewed(
                WAYPOINT,
                &["https://kubernetes.default.svc"],
                Some(("w", "u")),
            ),
            "did not confirm audience",
        ),
        (
            "a user, not a service account",
            reviewed("alice", &["ambit-ca"], Some(("w", "u"))),
            "neither the ztunnel service account",
        ),
        (
            "a malformed service account name",
            reviewed(
                "system:serviceaccount:shop",
                &["ambit-ca"],
                Some(("w", "u")),
            ),
            "neither the ztunnel service account",
        ),
        (
            "no verdict",
            TokenReviewStatus::default(),
            "not authenticated",
        ),
    ];
    for (case, status, reason) in cases {
        let refusal = token_holder(&status, "ambit-ca", &ztunnels()).unwrap_err();
        assert!(refusal.to_string().contains(reason), "{case}: {refusal}");
    }
}

const WAYPOINT_POD: &str = "metadata:
  name: waypoint-7d9f-abcde
  namespace: shop
  uid: uid-w
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec: {nodeName: node-a, serviceAccountName: waypoint, containers: []}";

#[test]
fn the_waypoint_pod_proves_its_service_account_and_nothing_else() {
    let waypoint = pod(WAYPOINT_POD);
    assert_eq!(
        waypoint_caller(Some(&waypoint), &waypoint_holder()).unwrap(),
        WAYPOINT
    );
    // The caller it becomes may obtain its own identity only (authz.rs enforces it).
    assert_eq!(
        crate::authz::Caller::of(WAYPOINT).unwrap(),
        crate::authz::Caller::ServiceAccount {
            namespace: "shop",
            name: "waypoint"
        }
    );
    let cases = [
        ("uid: uid-w", "uid: uid-2", "was replaced"),
        (
            "serviceAccountName: waypoint",
            "serviceAccountName: cart",
            "runs as service account \"cart\"",
        ),
        (
            "gateway.networking.k8s.io/gateway-name: waypoint",
            "app: cart",
            "not a waypoint pod",
        ),
    ];
    for (from, to, reason) in cases {
        let changed = pod(&WAYPOINT_POD.replace(from, to));
        let refusal = waypoint_caller(Some(&changed), &waypoint_holder()).unwrap_err();
        assert!(refusal.to_string().contains(reason), "{to}: {refusal}");
        // A verdict about the token: cached like the ztunnel's refusals.
        assert!(matches!(refusal, Refusal::NotZtunnel(_)));
    }
    let gone = waypoint_caller(None, &waypoint_holder()).unwrap_err();
    assert!(gone.to_string().contains("no longer exists"), "{gone}");
}
