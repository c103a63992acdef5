//! Istio's semantics, one rule at a time: each case is a set of policies (on `shop/reviews`),
//! a request, and the decision.

use super::*;

/// Policies as (name, spec), converted as discovery does.
type Specs<'a> = &'a [(&'a str, &'a str)];

/// Each case's policies, decided for its request.
fn check(cases: &[(&str, Specs<'_>, Req, Want)]) {
    for (case, specs, req, want) in cases {
        let docs: Vec<String> = specs
            .iter()
            .map(|(name, spec)| policy(name, spec))
            .collect();
        let policies = policies(&docs.join("\n---\n"));
        assert_decision(case, authorize(&policies, &req.l7()), *want);
    }
}

/// The policy `p` with this spec.
fn p(spec: &str) -> [(&'static str, &str); 1] {
    [("p", spec)]
}

const ALLOW_NOTHING: (&str, &str) = ("allow-nothing", "");
const ALLOW_ALL: (&str, &str) = ("allow-all", "  rules: [{}]\n");
const DENY_NOTHING: (&str, &str) = ("deny-nothing", "  action: DENY\n");
const DENY_ALL: (&str, &str) = ("deny-all", "  action: DENY\n  rules: [{}]\n");
const DENY_DELETE: (&str, &str) = (
    "deny-delete",
    "  action: DENY\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]\n",
);

#[test]
fn actions_and_empty_rules() {
    let get = || req("GET", "/");
    check(&[
        ("no policy: allowed", &[], get(), Want::Allowed),
        (
            "ALLOW without rules allows nothing",
            &[ALLOW_NOTHING],
            get(),
            Want::NotAllowed,
        ),
        (
            "ALLOW with rules: [{}] allows all",
            &[ALLOW_ALL],
            get().plaintext(),
            Want::AllowedBy("shop/allow-all"),
        ),
        (
            "an ALLOW without rules only narrows",
            &[ALLOW_NOTHING, ALLOW_ALL],
            get(),
            Want::AllowedBy("shop/allow-all"),
        ),
        (
            "DENY without rules denies nothing",
            &[DENY_NOTHING],
            get(),
            Want::Allowed,
        ),
        (
            "DENY with rules: [{}] denies all",
            &[DENY_ALL, ALLOW_ALL],
            get(),
            Want::DeniedBy("shop/deny-all"),
        ),
        (
            "DENY goes first whatever the order",
            &[ALLOW_ALL, DENY_DELETE],
            req("DELETE", "/"),
            Want::DeniedBy("shop/deny-delete"),
        ),
        (
            "a DENY that does not match leaves ALLOW to decide",
            &[DENY_DELETE, ALLOW_NOTHING],
            get(),
            Want::NotAllowed,
        ),
        (
            "one matching ALLOW is enough",
            &[
                (
                    "get-only",
                    "  rules: [{to: [{operation: {methods: [GET]}}]}]\n",
                ),
                (
                    "post-only",
                    "  rules: [{to: [{operation: {methods: [POST]}}]}]\n",
                ),
            ],
            req("POST", "/"),
            Want::AllowedBy("shop/post-only"),
        ),
        (
            "AUDIT changes nothing (left out)",
            &[("audit", "  action: AUDIT\n  rules: [{}]\n")],
            get(),
            Want::Allowed,
        ),
    ]);
}

#[test]
fn operations() {
    let op = |fields: &str| format!("  rules: [{{to: [{{operation: {{{fields}}}}}]}}]\n");
    let methods = op("methods: [GET, 'PO*'], notMethods: [POLL]");
    let paths = op("paths: ['/api/*', '*.png', /exact], notPaths: ['/api/private*']");
    let hosts = op("hosts: ['*.example.com', 'reviews'], notHosts: ['admin.*']");
    let ports = op("ports: ['9080', 9090], notPorts: ['9090']");
    let any_path = op("paths: ['*']");
    let (methods, paths, hosts, ports, any_path) =
        (p(&methods), p(&paths), p(&hosts), p(&ports), p(&any_path));
    let by_p = Want::AllowedBy("shop/p");
    check(&[
        ("GET is listed", &methods, req("GET", "/"), by_p),
        ("POST by prefix PO*", &methods, req("POST", "/"), by_p),
        (
            "POLL is excluded",
            &methods,
            req("POLL", "/"),
            Want::NotAllowed,
        ),
        (
            "methods are case-sensitive",
            &methods,
            req("get", "/"),
            Want::NotAllowed,
        ),
        ("path prefix", &paths, req("GET", "/api/v1"), by_p),
        ("path suffix", &paths, req("GET", "/img/logo.png"), by_p),
        ("exact path", &paths, req("GET", "/exact"), by_p),
        (
            "exact path is not a prefix",
            &paths,
            req("GET", "/exact/more"),
            Want::NotAllowed,
        ),
        (
            "notPaths wins within the entry",
            &paths,
            req("GET", "/api/private/x"),
            Want::NotAllowed,
        ),
        (
            "the path is matched without its query (the caller strips it)",
            &paths,
            req("GET", "/exact"),
            by_p,
        ),
        (
            "dot segments resolve before matching",
            &paths,
            req("GET", "/api/../exact"),
            by_p,
        ),
        (
            "... and cannot reach past notPaths",
            &paths,
            req("GET", "/api/x/../private/y"),
            Want::NotAllowed,
        ),
        (
            "* matches any path",
            &any_path,
            req("GET", "/anything"),
            by_p,
        ),
        (
            "host suffix",
            &hosts,
            req("GET", "/").host("www.example.com"),
            by_p,
        ),
        (
            "hosts are case-insensitive",
            &hosts,
            req("GET", "/").host("WWW.Example.COM"),
            by_p,
        ),
        ("exact host", &hosts, req("GET", "/").host("reviews"), by_p),
        (
            "notHosts",
            &hosts,
            req("GET", "/").host("admin.example.com"),
            Want::NotAllowed,
        ),
        (
            "other host",
            &hosts,
            req("GET", "/").host("reviews.shop"),
            Want::NotAllowed,
        ),
        ("port listed", &ports, req("GET", "/"), by_p),
        (
            "port listed and excluded",
            &ports,
            req("GET", "/").port(9090),
            Want::NotAllowed,
        ),
        (
            "port not listed",
            &ports,
            req("GET", "/").port(80),
            Want::NotAllowed,
        ),
    ]);
}

#[test]
fn sources() {
    let from = |fields: &str| format!("  rules: [{{from: [{{source: {{{fields}}}}}]}}]\n");
    let by_p = Want::AllowedBy("shop/p");
    check(&[
        (
            "principal",
            &p(&from("principals: [cluster.local/ns/shop/sa/productpage]")),
            req("GET", "/"),
            by_p,
        ),
        (
            "principal with the scheme",
            &p(&from(
                "principals: ['spiffe://cluster.local/ns/shop/sa/productpage']",
            )),
            req("GET", "/"),
            by_p,
        ),
        (
            "principal prefix",
            &p(&from("principals: ['cluster.local/ns/shop/*']")),
            req("GET", "/").from("shop/x"),
            by_p,
        ),
        (
            "serviceAccounts",
            &p(&from("serviceAccounts: [shop/productpage]")),
            req("GET", "/"),
            by_p,
        ),
        (
            "notPrincipals",
            &p(&from("notPrincipals: ['*/sa/productpage']")),
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "no identity matches no principal",
            &p(&from("principals: ['*']")),
            req("GET", "/").plaintext(),
            Want::NotAllowed,
        ),
        (
            "no identity passes notPrincipals",
            &p(&from(
                "notPrincipals: [cluster.local/ns/shop/sa/productpage]",
            )),
            req("GET", "/").plaintext(),
            by_p,
        ),
        (
            "namespace",
            &p(&from("namespaces: [shop]")),
            req("GET", "/"),
            by_p,
        ),
        (
            "notNamespaces",
            &p(&from("notNamespaces: ['sh*']")),
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "ipBlocks",
            &p(&from("ipBlocks: [10.0.0.0/24], notIpBlocks: [10.0.0.9]")),
            req("GET", "/"),
            by_p,
        ),
        (
            "notIpBlocks",
            &p(&from("ipBlocks: [10.0.0.0/24], notIpBlocks: [10.0.0.9]")),
            req("GET", "/").ip("10.0.0.9"),
            Want::NotAllowed,
        ),
        (
            "every field of a source must hold",
            &p(&from("namespaces: [shop], ipBlocks: [192.168.0.0/16]")),
            req("GET", "/"),
            Want::NotAllowed,
        ),
    ]);
}

#[test]
fn conditions() {
    let when = |condition: &str| format!("  rules: [{{when: [{condition}]}}]\n");
    let user =
        when("{key: 'request.headers[X-User]', values: [alice, 'bob*'], notValues: ['*-test']}");
    let present = when("{key: 'request.headers[x-user]', values: ['*']}");
    let absent = when("{key: 'request.headers[x-user]', notValues: ['*']}");
    let (user, present, absent) = (p(&user), p(&present), p(&absent));
    let by_p = Want::AllowedBy("shop/p");
    check(&[
        (
            "header value",
            &user,
            req("GET", "/").header("x-user", b"alice"),
            by_p,
        ),
        (
            "header prefix",
            &user,
            req("GET", "/").header("x-user", b"bobby"),
            by_p,
        ),
        (
            "header notValues",
            &user,
            req("GET", "/").header("x-user", b"bob-test"),
            Want::NotAllowed,
        ),
        (
            "header values are case-sensitive",
            &user,
            req("GET", "/").header("x-user", b"Alice"),
            Want::NotAllowed,
        ),
        (
            "absent header matches no value",
            &user,
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "a second header joins the first, as in Envoy",
            &user,
            req("GET", "/")
                .header("x-user", b"alice")
                .header("x-user", b"eve"),
            Want::NotAllowed,
        ),
        (
            "a value that is not UTF-8 is compared as bytes",
            &user,
            req("GET", "/").header("x-user", b"bob\xff"),
            by_p,
        ),
        (
            "* is present, even empty",
            &present,
            req("GET", "/").header("x-user", b""),
            by_p,
        ),
        (
            "* on an absent header",
            &present,
            req("GET", "/"),
            Want::NotAllowed,
        ),
        ("notValues * means absent", &absent, req("GET", "/"), by_p),
        (
            "source.ip",
            &p(&when("{key: source.ip, values: [10.0.0.0/8]}")),
            req("GET", "/"),
            by_p,
        ),
        (
            "source.ip notValues",
            &p(&when("{key: source.ip, notValues: [10.0.0.5]}")),
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "source.namespace",
            &p(&when("{key: source.namespace, values: [shop]}")),
            req("GET", "/"),
            by_p,
        ),
        (
            "source.principal",
            &p(&when(
                "{key: source.principal, values: ['*/sa/productpage']}",
            )),
            req("GET", "/"),
            by_p,
        ),
        (
            "source.principal without identity",
            &p(&when("{key: source.principal, values: ['*']}")),
            req("GET", "/").plaintext(),
            Want::NotAllowed,
        ),
        (
            "destination.port",
            &p(&when("{key: destination.port, values: ['9080']}")),
            req("GET", "/"),
            by_p,
        ),
        (
            "destination.port notValues",
            &p(&when("{key: destination.port, notValues: ['9080']}")),
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "conditions are AND-ed",
            &p(&when(
                "{key: source.namespace, values: [shop]}, {key: destination.port, values: ['1']}",
            )),
            req("GET", "/"),
            Want::NotAllowed,
        ),
    ]);
}

#[test]
fn fields_no_proxy_can_check_never_widen_access() {
    // Ambit has no JWT authentication and trusts no X-Forwarded-For: Istio's rule for fields a
    // proxy cannot check is that an ALLOW rule using one matches nothing, and a DENY rule is
    // evaluated without it.
    let jwt_allow = (
        "jwt",
        "  rules: [{from: [{source: {requestPrincipals: ['*']}}]}]\n",
    );
    let claims_allow = (
        "claims",
        "  rules: [{when: [{key: 'request.auth.claims[group]', values: [admin]}]}]\n",
    );
    let jwt_deny = ("jwt-admin", "  action: DENY\n  rules: [{from: [{source: {notRequestPrincipals: ['*']}}], to: [{operation: {paths: [/admin]}}]}]\n");
    let remote_deny = (
        "remote",
        "  action: DENY\n  rules: [{from: [{source: {remoteIpBlocks: [1.2.3.4]}}]}]\n",
    );
    check(&[
        (
            "an ALLOW on requestPrincipals allows nothing",
            &[jwt_allow],
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "an ALLOW on a JWT claim allows nothing",
            &[claims_allow],
            req("GET", "/"),
            Want::NotAllowed,
        ),
        (
            "a DENY without JWT on /admin denies /admin to everyone",
            &[jwt_deny],
            req("GET", "/admin"),
            Want::DeniedBy("shop/jwt-admin"),
        ),
        (
            "... and nothing else",
            &[jwt_deny],
            req("GET", "/public"),
            Want::Allowed,
        ),
        (
            "a DENY on remote IPs denies everyone",
            &[remote_deny],
            req("GET", "/"),
            Want::DeniedBy("shop/remote"),
        ),
    ]);
}

#[test]
fn policies_that_cannot_be_understood_fail_closed() {
    let broken_allow = (
        "broken-allow",
        "  rules: [{to: [{operation: {methods: [get]}}]}]\n",
    );
    let broken_deny = (
        "broken-deny",
        "  action: DENY\n  rules: [{to: [{operation: {paths: [admin]}}]}]\n",
    );
    let custom = (
        "ext-authz",
        "  action: CUSTOM\n  provider: {name: opa}\n  rules: [{}]\n",
    );
    check(&[
        (
            "a broken ALLOW alone allows nothing, and is named",
            &[broken_allow],
            req("GET", "/"),
            Want::DeniedBy("shop/broken-allow"),
        ),
        (
            "a broken ALLOW only narrows other ALLOWs",
            &[broken_allow, ALLOW_ALL],
            req("GET", "/"),
            Want::AllowedBy("shop/allow-all"),
        ),
        (
            "a broken DENY denies everything",
            &[ALLOW_ALL, broken_deny],
            req("GET", "/public"),
            Want::DeniedBy("shop/broken-deny"),
        ),
        (
            "CUSTOM has no authorizer to ask: denied",
            &[custom, ALLOW_ALL],
            req("GET", "/"),
            Want::DeniedBy("shop/ext-authz"),
        ),
    ]);
}

#[test]
fn tcp_connections_ignore_http_fields_the_safe_way() {
    let specs = policies(
        &[
            policy("get-only", "  rules: [{to: [{operation: {methods: [GET]}}]}]\n"),
            policy("port", "  rules: [{to: [{operation: {ports: ['9080']}}], when: [{key: source.namespace, values: [shop]}]}]\n"),
            policy("deny-delete", "  action: DENY\n  rules: [{from: [{source: {namespaces: [ops]}}], to: [{operation: {methods: [DELETE]}}]}]\n"),
        ]
        .join("\n---\n"),
    );
    let cases = [
        (
            "an ALLOW with methods cannot match a connection; the port rule does",
            req("GET", "/"),
            Want::AllowedBy("shop/port"),
        ),
        (
            "a DENY with methods denies the connection without them",
            req("GET", "/").from("ops/admin"),
            Want::DeniedBy("shop/deny-delete"),
        ),
        (
            "another port matches no ALLOW",
            req("GET", "/").port(9091),
            Want::NotAllowed,
        ),
    ];
    for (case, req, want) in cases {
        assert_decision(case, authorize_tcp(&specs, &req.tcp()), want);
    }
    let http_only = &specs[..1];
    assert_decision(
        "HTTP-only ALLOW",
        authorize_tcp(http_only, &req("GET", "/").tcp()),
        Want::NotAllowed,
    );
    assert_decision(
        "the same over HTTP",
        authorize(http_only, &req("GET", "/").l7()),
        Want::AllowedBy("shop/get-only"),
    );
}
