//! CORS origin matching and the preflight/actual split (HTTPRouteCORS is replayed in full in
//! `conformance.rs`).

use http::Method;

use super::*;

#[test]
fn origins_match_by_scheme_host_and_port() {
    let cors = Cors::compile(&cors_spec(
        &[
            "https://www.foo.com",
            "https://*.bar.com",
            "http://local.test:8080",
        ],
        false,
        &["GET"],
        &[],
    ));
    let table = [
        ("exact", "https://www.foo.com", true),
        (
            "exact with its default port",
            "https://www.foo.com:443",
            true,
        ),
        ("another port", "https://www.foo.com:8443", false),
        ("another scheme", "http://www.foo.com", false),
        ("host case does not matter", "https://WWW.FOO.COM", true),
        ("one label under the wildcard", "https://www.bar.com", true),
        ("several labels", "https://xpto.www.bar.com", true),
        ("the wildcard needs a label", "https://bar.com", false),
        (
            "suffix must be a label boundary",
            "https://foobar.com",
            false,
        ),
        (
            "explicit port in the pattern",
            "http://local.test:8080",
            true,
        ),
        ("default port is not 8080", "http://local.test", false),
        ("garbage", "not an origin", false),
    ];
    for (case, origin, allowed) in table {
        let mut response = HeaderMap::new();
        cors.decorate(&headers(&[("origin", origin)]), &mut response);
        let got = joined(&response, "access-control-allow-origin");
        assert_eq!(got.is_some(), allowed, "{case}: {got:?}");
        if allowed {
            assert_eq!(got.as_deref(), Some(origin), "{case}: the origin is echoed");
            assert_eq!(
                joined(&response, "vary").as_deref(),
                Some("Origin"),
                "{case}"
            );
        }
    }
}

#[test]
fn only_options_with_origin_and_requested_method_is_a_preflight() {
    let cors = Cors::compile(&cors_spec(&["*"], false, &["PUT"], &[]));
    let preflight = [
        ("origin", "https://a.test"),
        ("access-control-request-method", "PUT"),
    ];
    let cases = [
        ("a preflight", Method::OPTIONS, &preflight[..], true),
        (
            "OPTIONS without a requested method",
            Method::OPTIONS,
            &preflight[..1],
            false,
        ),
        (
            "OPTIONS without origin",
            Method::OPTIONS,
            &preflight[1..],
            false,
        ),
        ("GET is never one", Method::GET, &preflight[..], false),
    ];
    for (case, method, request, answered) in cases {
        let response = cors.preflight(&headers(request), &method);
        assert_eq!(response.is_some(), answered, "{case}");
    }
}

#[test]
fn a_preflight_from_a_foreign_origin_gets_no_cors_headers() {
    let cors = Cors::compile(&cors_spec(
        &["https://www.foo.com"],
        true,
        &["GET"],
        &["x-a"],
    ));
    let request = headers(&[
        ("origin", "https://evil.test"),
        ("access-control-request-method", "GET"),
    ]);
    let response = cors.preflight(&request, &Method::OPTIONS).unwrap();
    assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
    assert!(response.headers().is_empty(), "{:?}", response.headers());
}

#[test]
fn wildcards_are_echoed_and_credentials_never_get_a_star() {
    let request = headers(&[
        ("origin", "https://other.foo.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-header-1, x-header-2"),
    ]);
    for credentials in [true, false] {
        let cors = Cors::compile(&cors_spec(&["*"], credentials, &["*"], &["*"]));
        let response = cors.preflight(&request, &Method::OPTIONS).unwrap();
        let h = response.headers();
        let origin = if credentials {
            "https://other.foo.com"
        } else {
            "*"
        };
        assert_eq!(
            joined(h, "access-control-allow-origin").as_deref(),
            Some(origin)
        );
        assert_eq!(
            joined(h, "access-control-allow-methods").as_deref(),
            Some("PUT")
        );
        assert_eq!(
            joined(h, "access-control-allow-headers").as_deref(),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            joined(h, "access-control-allow-credentials").is_some(),
            credentials
        );
        assert_eq!(joined(h, "access-control-max-age").as_deref(), Some("5"));
    }
}
