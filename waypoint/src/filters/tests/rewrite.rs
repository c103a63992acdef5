//! URLRewrite on request heads: Host and authority together, the query kept.

use discovery::gateway_api::{PathModifier, UrlRewrite};

use super::*;

fn parts(uri: &str, host: &str) -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .uri(uri)
        .header(http::header::HOST, host)
        .body(())
        .unwrap()
        .into_parts();
    parts
}

#[test]
fn rewrites_as_scenarios() {
    let prefix = |p: &str| Some(PathModifier::ReplacePrefixMatch(p.into()));
    let full = |p: &str| Some(PathModifier::ReplaceFullPath(p.into()));
    // (case, hostname, path edit, request URI, matched prefix, URI after, Host after)
    let rows = [
        (
            "host only",
            Some("one.example.org"),
            None,
            "/one?x=1",
            None,
            "/one?x=1",
            "one.example.org",
        ),
        (
            "prefix, query kept",
            None,
            prefix("/one"),
            "/prefix/one/two?a=b",
            Some("/prefix/one"),
            "/one/two?a=b",
            "echo",
        ),
        (
            "full path",
            None,
            full("/one"),
            "/full/one/two",
            Some("/full/one"),
            "/one",
            "echo",
        ),
        (
            "an HTTP/2 authority follows the host",
            Some("test.example.org"),
            full("/test"),
            "http://echo:8080/full/x?q",
            Some("/full"),
            "http://test.example.org/test?q",
            "test.example.org",
        ),
    ];
    for (case, hostname, path, uri, matched_prefix, want_uri, want_host) in rows {
        let rewrite = Rewrite::compile(&UrlRewrite {
            hostname: hostname.map(Into::into),
            path,
        })
        .unwrap();
        let mut head = parts(uri, "echo");
        rewrite.rewrite(&mut head, matched_prefix);
        assert_eq!(head.uri.to_string(), want_uri, "{case}");
        assert_eq!(head.headers[http::header::HOST], want_host, "{case}");
    }
}
