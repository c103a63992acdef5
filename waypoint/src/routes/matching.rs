//! Compiled match conditions and how one request is tested against them.
//!
//! Semantics the API leaves to implementations, chosen as Envoy (and so Istio) does:
//! - Regular expressions must match the whole value (path, header, query value, gRPC name):
//!   they are anchored at compile time.
//! - A header sent several times matches when any of its values does.
//! - A query parameter sent several times is judged by its first value; names and values are
//!   compared after percent-decoding (`%41` is `A`; `+` is kept, it is not a space in a URL).
//!
//! Nothing here allocates per request except percent-decoding a query that has escapes.

use std::borrow::Cow;

use discovery::gateway_api::{GrpcMatch, GrpcMethodMatch, HttpMatch, PathMatch, StringMatch};
use http::header::HeaderName;
use http::{HeaderMap, Method};
use regex::Regex;
use serde::Serialize;

use super::RequestFacts;

/// A match condition that could not be compiled: the match then matches nothing (fail closed),
/// and the problem is shown in `/config_dump`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} cannot be compiled ({why}); this match matches nothing")]
pub struct MatchProblem {
    pub what: &'static str,
    pub value: String,
    pub why: String,
}

#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    Exact(String),
    Regex(Regex),
}

impl StringMatcher {
    fn compile(what: &'static str, value: &StringMatch) -> Result<Self, MatchProblem> {
        match value {
            StringMatch::Exact(v) => Ok(StringMatcher::Exact(v.clone())),
            StringMatch::RegularExpression(re) => anchored(what, re).map(StringMatcher::Regex),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Exact(v) => v == value,
            StringMatcher::Regex(re) => re.is_match(value),
        }
    }

    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            StringMatcher::Exact(v) => v.as_bytes() == value,
            StringMatcher::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }

    /// Characters of the configured value: GRPCRoute precedence counts them.
    fn chars(&self) -> usize {
        match self {
            StringMatcher::Exact(v) => v.chars().count(),
            StringMatcher::Regex(re) => re.as_str().chars().count().saturating_sub(ANCHOR_CHARS),
        }
    }

    fn is_exact(&self) -> bool {
        matches!(self, StringMatcher::Exact(_))
    }
}

/// Length of the `^(?:` … `)$` that [`anchored`] adds.
const ANCHOR_CHARS: usize = 6;

fn anchored(what: &'static str, re: &str) -> Result<Regex, MatchProblem> {
    Regex::new(&format!("^(?:{re})$")).map_err(|error| MatchProblem {
        what,
        value: re.to_owned(),
        why: error.to_string(),
    })
}

#[derive(Debug, Clone)]
pub(crate) enum PathMatcher {
    Exact(String),
    /// `value` as configured (what `ReplacePrefixMatch` replaces); `trimmed` without the
    /// trailing `/`, which the element-wise comparison ignores.
    Prefix {
        value: String,
        trimmed: String,
    },
    Regex(Regex),
}

impl PathMatcher {
    fn compile(path: &PathMatch) -> Result<Self, MatchProblem> {
        Ok(match path {
            PathMatch::Exact(v) => PathMatcher::Exact(v.clone()),
            PathMatch::PathPrefix(v) => PathMatcher::Prefix {
                value: v.clone(),
                trimmed: v.trim_end_matches('/').to_owned(),
            },
            PathMatch::RegularExpression(re) => PathMatcher::Regex(anchored("path regex", re)?),
        })
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(v) => v == path,
            // `/foo` matches `/foo`, `/foo/` and `/foo/bar`, never `/foobar`.
            PathMatcher::Prefix { trimmed, .. } => path
                .strip_prefix(trimmed.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || trimmed.is_empty()),
            PathMatcher::Regex(re) => re.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    name: HeaderName,
    value: StringMatcher,
}

impl HeaderMatcher {
    fn compile(name: &str, value: &StringMatch) -> Result<Self, MatchProblem> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|error| MatchProblem {
            what: "header name",
            value: name.to_owned(),
            why: error.to_string(),
        })?;
        Ok(HeaderMatcher {
            name,
            value: StringMatcher::compile("header regex", value)?,
        })
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value.matches_bytes(v.as_bytes()))
    }
}

fn headers_compile(
    list: &[discovery::gateway_api::HeaderMatch],
) -> Result<Vec<HeaderMatcher>, MatchProblem> {
    list.iter()
        .map(|h| HeaderMatcher::compile(&h.name, &h.value))
        .collect()
}

/// One compiled HTTPRoute match: every condition must hold.
#[derive(Debug, Clone)]
pub(crate) struct HttpMatcher {
    pub(crate) path: PathMatcher,
    method: Option<Method>,
    headers: Vec<HeaderMatcher>,
    query: Vec<(String, StringMatcher)>,
    /// The match as configured, for `/config_dump`.
    pub(crate) source: HttpMatch,
}

/// HTTPRoute precedence of one match: larger is preferred (derive order = field order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HttpRank {
    /// 2 Exact, 1 PathPrefix, 0 RegularExpression.
    path_kind: u8,
    /// Characters of the PathPrefix value (0 otherwise).
    prefix_chars: usize,
    method: bool,
    headers: usize,
    query: usize,
}

impl HttpMatcher {
    pub(crate) fn compile(source: &HttpMatch) -> Result<Self, MatchProblem> {
        let method = match &source.method {
            Some(m) => Some(Method::from_bytes(m.as_bytes()).map_err(|e| MatchProblem {
                what: "method",
                value: m.clone(),
                why: e.to_string(),
            })?),
            None => None,
        };
        let query = source
            .query_params
            .iter()
            .map(|q| {
                Ok((
                    q.name.clone(),
                    StringMatcher::compile("query regex", &q.value)?,
                ))
            })
            .collect::<Result<_, MatchProblem>>()?;
        Ok(HttpMatcher {
            path: PathMatcher::compile(&source.path)?,
            method,
            headers: headers_compile(&source.headers)?,
            query,
            source: source.clone(),
        })
    }

    pub(crate) fn rank(&self) -> HttpRank {
        let (path_kind, prefix_chars) = match &self.path {
            PathMatcher::Exact(_) => (2, 0),
            PathMatcher::Prefix { value, .. } => (1, value.chars().count()),
            PathMatcher::Regex(_) => (0, 0),
        };
        HttpRank {
            path_kind,
            prefix_chars,
            method: self.method.is_some(),
            headers: self.headers.len(),
            query: self.query.len(),
        }
    }

    /// The exact path this match requires, if it is an `Exact` match (for the index).
    pub(crate) fn exact_path(&self) -> Option<&str> {
        match &self.path {
            PathMatcher::Exact(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn matched_prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatcher::Prefix { value, .. } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn matches(&self, request: &RequestFacts<'_>) -> bool {
        self.path.matches(request.path)
            && self.method.as_ref().is_none_or(|m| m == request.method)
            && self.headers.iter().all(|h| h.matches(request.headers))
            && self.query.iter().all(|(name, value)| {
                request
                    .query
                    .and_then(|q| query_value(q, name))
                    .is_some_and(|v| value.matches(&v))
            })
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| percent_decode(key) == name)
        .map(|(_, value)| percent_decode(value))
}

/// `%XX` escapes decoded; text without any is borrowed. Invalid escapes are kept as written.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// One compiled GRPCRoute match (`None` parts match anything).
#[derive(Debug, Clone)]
pub(crate) struct GrpcMatcher {
    service: Option<StringMatcher>,
    method: Option<StringMatcher>,
    headers: Vec<HeaderMatcher>,
    pub(crate) source: Option<GrpcMatch>,
}

/// GRPCRoute precedence of one match: characters of service, then of method, then header
/// matches (the API's order); then, where the API is silent, Exact before RegularExpression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct GrpcRank {
    service_chars: usize,
    method_chars: usize,
    headers: usize,
    exact: bool,
}

impl GrpcMatcher {
    /// `None`: a rule without matches, which matches every gRPC request.
    pub(crate) fn compile(source: Option<&GrpcMatch>) -> Result<Self, MatchProblem> {
        let Some(source) = source else {
            return Ok(GrpcMatcher {
                service: None,
                method: None,
                headers: Vec::new(),
                source: None,
            });
        };
        let part = |value: &Option<String>, exact: bool, what| {
            value
                .as_ref()
                .map(|v| {
                    if exact {
                        Ok(StringMatcher::Exact(v.clone()))
                    } else {
                        anchored(what, v).map(StringMatcher::Regex)
                    }
                })
                .transpose()
        };
        let (service, method) = match &source.method {
            None => (None, None),
            Some(GrpcMethodMatch::Exact { service, method }) => (
                part(service, true, "gRPC service")?,
                part(method, true, "gRPC method")?,
            ),
            Some(GrpcMethodMatch::RegularExpression { service, method }) => (
                part(service, false, "gRPC service regex")?,
                part(method, false, "gRPC method regex")?,
            ),
        };
        Ok(GrpcMatcher {
            service,
            method,
            headers: headers_compile(&source.headers)?,
            source: Some(source.clone()),
        })
    }

    pub(crate) fn rank(&self) -> GrpcRank {
        GrpcRank {
            service_chars: self.service.as_ref().map_or(0, StringMatcher::chars),
            method_chars: self.method.as_ref().map_or(0, StringMatcher::chars),
            headers: self.headers.len(),
            exact: self
                .service
                .iter()
                .chain(&self.method)
                .all(StringMatcher::is_exact),
        }
    }

    pub(crate) fn matches(&self, request: &RequestFacts<'_>) -> bool {
        if self.service.is_some() || self.method.is_some() {
            let Some((service, method)) = grpc_method(request.path) else {
                return false;
            };
            let holds = |part: &Option<StringMatcher>, value| {
                part.as_ref()
                    .is_none_or(|m: &StringMatcher| m.matches(value))
            };
            if !holds(&self.service, service) || !holds(&self.method, method) {
                return false;
            }
        }
        self.headers.iter().all(|h| h.matches(request.headers))
    }
}

/// `/<service>/<method>` of a gRPC request path.
fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// What `/config_dump` prints for one match.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum MatchDump<'a> {
    Http(&'a HttpMatch),
    Grpc(Option<&'a GrpcMatch>),
}
