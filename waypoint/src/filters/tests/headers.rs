//! Header edits: set replaces every value, add appends a line, remove deletes; remove → set → add.

use super::*;

#[test]
fn header_edits_as_scenarios() {
    // (case, request headers, set, add, remove, header read back, expected joined value)
    type Row<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a str,
        Option<&'a str>,
    );
    let table: &[Row] = &[
        (
            "set adds a missing header",
            &[],
            &[("X-Header-Set", "v")],
            &[],
            &[],
            "x-header-set",
            Some("v"),
        ),
        (
            "set replaces every value",
            &[("x-a", "1"), ("x-a", "2")],
            &[("X-A", "v")],
            &[],
            &[],
            "x-a",
            Some("v"),
        ),
        (
            "add appends as old,new",
            &[("x-a", "old")],
            &[],
            &[("X-A", "new")],
            &[],
            "x-a",
            Some("old,new"),
        ),
        (
            "add to nothing",
            &[],
            &[],
            &[("x-a", "new")],
            &[],
            "x-a",
            Some("new"),
        ),
        (
            "remove is case-insensitive",
            &[("X-Remove", "v")],
            &[],
            &[],
            &["x-REMOVE"],
            "x-remove",
            None,
        ),
        (
            "remove then set: set wins",
            &[("x-a", "old")],
            &[("x-a", "v")],
            &[],
            &["x-a"],
            "x-a",
            Some("v"),
        ),
        (
            "set then add: both",
            &[],
            &[("x-a", "a")],
            &[("x-a", "b")],
            &[],
            "x-a",
            Some("a,b"),
        ),
        (
            "others untouched",
            &[("x-other", "o")],
            &[("x-a", "v")],
            &[("x-b", "w")],
            &["x-c"],
            "x-other",
            Some("o"),
        ),
    ];
    for (case, before, set, add, remove, read, want) in table {
        let edits =
            HeaderEdits::compile("RequestHeaderModifier", &modifier(set, add, remove)).unwrap();
        let mut map = headers(before);
        edits.apply(&mut map);
        assert_eq!(joined(&map, read).as_deref(), *want, "{case}");
    }
}

#[test]
fn unparsable_names_and_values_are_reported_not_skipped() {
    let cases = [
        (
            modifier(&[("bad name", "v")], &[], &[]),
            "header name \"bad name\" is not a valid HTTP header name",
        ),
        (
            modifier(&[], &[("x-a", "line\nbreak")], &[]),
            "the value of header x-a is not a valid HTTP header value",
        ),
        (modifier(&[], &[], &["(bad)"]), "header name \"(bad)\""),
    ];
    for (spec, want) in cases {
        let filter = Filter::from_http(
            &discovery::gateway_api::HttpFilter::RequestHeaderModifier(spec),
            &mut resolve_as_written,
        );
        match filter {
            Filter::Unsupported(why) => assert!(why.contains(want), "{why}"),
            other => panic!("compiled: {other:?}"),
        }
    }
}
