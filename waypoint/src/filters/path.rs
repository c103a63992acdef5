//! The path modifier redirects and rewrites share: `ReplaceFullPath` and `ReplacePrefixMatch`.
//!
//! `ReplacePrefixMatch` works on whole path elements, like the `PathPrefix` match it replaces,
//! and ignores a trailing `/` on both the matched prefix and the replacement. The API's table
//! (HTTPPathModifier), each row a unit test:
//!
//! | request  | prefix | replacement | result   |
//! |----------|--------|-------------|----------|
//! | /foo/bar | /foo   | /xyz        | /xyz/bar |
//! | /foo/bar | /foo/  | /xyz/       | /xyz/bar |
//! | /foo     | /foo   | /xyz        | /xyz     |
//! | /foo/    | /foo   | /xyz        | /xyz/    |
//! | /foo/bar | /foo   | (empty)     | /bar     |
//! | /foo     | /foo   | /           | /        |

use discovery::gateway_api::PathModifier;
use http::uri::PathAndQuery;

use super::FilterError;

/// A compiled path modifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEdit {
    /// The whole path becomes this.
    FullPath(String),
    /// The matched `PathPrefix` becomes this (kept without its trailing `/`).
    PrefixMatch(String),
}

impl PathEdit {
    /// Checks the replacement can stand in a URL path (no query, fragment or spaces).
    pub fn compile(filter: &'static str, modifier: &PathModifier) -> Result<Self, FilterError> {
        let (value, edit) = match modifier {
            PathModifier::ReplaceFullPath(p) => (p, PathEdit::FullPath(p.clone())),
            PathModifier::ReplacePrefixMatch(p) => {
                (p, PathEdit::PrefixMatch(p.trim_end_matches('/').to_owned()))
            }
        };
        let usable = value.is_empty()
            || (value.starts_with('/')
                && !value.contains(['?', '#'])
                && PathAndQuery::try_from(value.as_str()).is_ok());
        if usable {
            Ok(edit)
        } else {
            Err(FilterError::Url {
                filter,
                what: "path",
                value: value.clone(),
            })
        }
    }

    /// The new path for `path` (without query). `matched_prefix` is the `PathPrefix` value that
    /// matched; without one (a rule whose match is not a prefix, which the schema forbids) the
    /// prefix is taken as `/`.
    pub fn apply(&self, path: &str, matched_prefix: Option<&str>) -> String {
        match self {
            PathEdit::FullPath(p) => p.clone(),
            PathEdit::PrefixMatch(replacement) => {
                let prefix = matched_prefix.unwrap_or("/").trim_end_matches('/');
                // The match guarantees `path` starts with the prefix at an element boundary; if
                // a caller passes a prefix that does not match, keep the whole path as the rest.
                let rest = path.strip_prefix(prefix).unwrap_or(path);
                let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
                out.push_str(replacement);
                if !rest.is_empty() && !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}
