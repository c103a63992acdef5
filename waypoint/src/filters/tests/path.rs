//! `ReplacePrefixMatch` and `ReplaceFullPath`, row by row from the API's HTTPPathModifier table.

use discovery::gateway_api::PathModifier;

use super::*;

#[test]
fn replace_prefix_match_follows_the_api_table() {
    // (request path, matched prefix, replacement, result)
    let table = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        // Conformance (HTTPRouteRewritePath, HTTPRouteRedirectPath).
        ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "/", "/"),
        (
            "/original-prefix/lemon",
            "/original-prefix",
            "/replacement-prefix",
            "/replacement-prefix/lemon",
        ),
        (
            "/path-and-host",
            "/path-and-host",
            "/replacement-prefix",
            "/replacement-prefix",
        ),
        // A `/` prefix (a rule without matches) keeps the whole path behind the replacement.
        ("/a/b", "/", "/v2", "/v2/a/b"),
    ];
    for (path, prefix, replacement, want) in table {
        let edit = PathEdit::compile(
            "URLRewrite",
            &PathModifier::ReplacePrefixMatch(replacement.into()),
        )
        .unwrap();
        assert_eq!(
            edit.apply(path, Some(prefix)),
            want,
            "{path} with prefix {prefix} replaced by {replacement:?}"
        );
    }
}

#[test]
fn replace_full_path_ignores_the_request_path() {
    let edit =
        PathEdit::compile("URLRewrite", &PathModifier::ReplaceFullPath("/one".into())).unwrap();
    assert_eq!(edit.apply("/full/one/two", Some("/full/one")), "/one");
}

#[test]
fn replacements_that_are_no_url_path_do_not_compile() {
    for bad in ["no-slash", "/with space", "/q?x=1", "/frag#x"] {
        let full = PathEdit::compile("URLRewrite", &PathModifier::ReplaceFullPath(bad.into()));
        assert!(full.is_err(), "{bad}");
    }
}
