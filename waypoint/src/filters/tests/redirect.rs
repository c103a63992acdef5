//! Redirect `Location`s: scheme, host, port and path rules, as scenario rows. The conformance
//! cases (replayed in `conformance.rs`) check the same through real routes; these rows pin the
//! exact text, including what the harness does not look at (query, IPv6, default ports).

use discovery::gateway_api::{PathModifier, Redirect as RedirectSpec};

use super::*;

fn spec(
    scheme: Option<&str>,
    hostname: Option<&str>,
    port: Option<u16>,
    path: Option<PathModifier>,
    status: u16,
) -> RedirectSpec {
    RedirectSpec {
        scheme: scheme.map(Into::into),
        hostname: hostname.map(Into::into),
        path,
        port,
        status_code: status,
    }
}

fn input<'a>(
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
    path: &'a str,
    query: Option<&'a str>,
) -> RedirectInput<'a> {
    RedirectInput {
        scheme,
        host,
        port,
        path,
        query,
    }
}

/// `(case, filter, request, matched prefix, status, Location)`.
type Row<'a> = (
    &'a str,
    RedirectSpec,
    RedirectInput<'a>,
    Option<&'a str>,
    u16,
    &'a str,
);

#[test]
fn locations_as_scenarios() {
    let prefix = |p: &str| Some(PathModifier::ReplacePrefixMatch(p.into()));
    let full = |p: &str| Some(PathModifier::ReplaceFullPath(p.into()));
    let rows: Vec<Row<'_>> = vec![
        (
            "status only keeps everything",
            spec(None, None, None, None, 303),
            input("http", "echo", None, "/see-other", None),
            None,
            303,
            "http://echo/see-other",
        ),
        (
            "the query is kept",
            spec(None, Some("example.org"), None, None, 302),
            input("http", "echo", None, "/a", Some("x=1&y=2")),
            None,
            302,
            "http://example.org/a?x=1&y=2",
        ),
        (
            "listener port kept without scheme",
            spec(None, Some("example.org"), None, None, 302),
            input("http", "192.0.2.1", Some(8080), "/p", None),
            None,
            302,
            "http://example.org:8080/p",
        ),
        (
            "port 80 is left out for http",
            spec(None, Some("example.org"), Some(80), None, 302),
            input("http", "192.0.2.1", Some(8080), "/p", None),
            None,
            302,
            "http://example.org/p",
        ),
        (
            "configured port",
            spec(None, None, Some(8083), None, 301),
            input("http", "echo", None, "/port", None),
            None,
            301,
            "http://echo:8083/port",
        ),
        (
            "a scheme brings its default port",
            spec(Some("https"), None, None, None, 302),
            input("http", "192.0.2.1", Some(8080), "/s", None),
            None,
            302,
            "https://192.0.2.1/s",
        ),
        (
            "even the request's own scheme",
            spec(Some("http"), None, None, None, 302),
            input("http", "192.0.2.1", Some(8080), "/s", None),
            None,
            302,
            "http://192.0.2.1/s",
        ),
        (
            "https with 8443",
            spec(Some("https"), Some("example.org"), Some(8443), None, 302),
            input("http", "x", None, "/s", None),
            None,
            302,
            "https://example.org:8443/s",
        ),
        (
            "https to http on 443",
            spec(Some("http"), Some("example.org"), None, None, 302),
            input("https", "example.org", None, "/s", None),
            None,
            302,
            "http://example.org/s",
        ),
        (
            "https with port 443 left out",
            spec(None, None, Some(443), None, 302),
            input("https", "example.org", None, "/s", None),
            None,
            302,
            "https://example.org/s",
        ),
        (
            "prefix replaced, rest kept",
            spec(None, None, None, prefix("/replacement-prefix"), 302),
            input("http", "echo", None, "/original-prefix/lemon", None),
            Some("/original-prefix"),
            302,
            "http://echo/replacement-prefix/lemon",
        ),
        (
            "full path replaced, query kept",
            spec(None, None, None, full("/full-path-replacement"), 302),
            input("http", "echo", None, "/full/path/original", Some("a=b")),
            Some("/full"),
            302,
            "http://echo/full-path-replacement?a=b",
        ),
        (
            "an IPv6 host gets its brackets",
            spec(None, None, Some(8080), None, 302),
            input("http", "fd00::1", None, "/", None),
            None,
            302,
            "http://[fd00::1]:8080/",
        ),
    ];
    for (case, spec, input, matched_prefix, status, location) in rows {
        let redirect = Redirect::compile(&spec).unwrap();
        let (got_status, got_location) = redirect.redirect(&input, matched_prefix);
        assert_eq!(got_status.as_u16(), status, "{case}");
        assert_eq!(got_location.to_str().unwrap(), location, "{case}");
    }
}

#[test]
fn request_bytes_a_header_cannot_carry_are_escaped() {
    let redirect = Redirect::compile(&spec(None, None, None, None, 302)).unwrap();
    let (_, location) =
        redirect.redirect(&input("http", "echo", None, "/a b", Some("q=\u{e9}")), None);
    assert_eq!(location.to_str().unwrap(), "http://echo/a%20b?q=%C3%A9");
}

#[test]
fn only_redirect_statuses_compile() {
    for status in [200, 304, 404, 500] {
        let filter = Filter::from_http(
            &discovery::gateway_api::HttpFilter::RequestRedirect(spec(
                None, None, None, None, status,
            )),
            &mut resolve_as_written,
        );
        assert!(
            matches!(filter, Filter::Unsupported(why) if why.contains("not a redirect status")),
            "{status}"
        );
    }
}
