//! URLRewrite: the request is forwarded with another host and/or path.
//!
//! The hostname replaces the `Host` header and, when the URI carries an authority (HTTP/2's
//! `:authority`, or an absolute-form HTTP/1.1 target), the authority too, so whichever the
//! upstream reads says the same. The path edit keeps the query string.

use discovery::gateway_api::UrlRewrite;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Uri};
use http::HeaderValue;

use super::path::PathEdit;
use super::FilterError;

/// A compiled URLRewrite.
#[derive(Debug, Clone)]
pub struct Rewrite {
    /// Parsed twice up front so a request never fails on it.
    pub hostname: Option<(HeaderValue, Authority)>,
    pub path: Option<PathEdit>,
}

impl Rewrite {
    pub fn compile(spec: &UrlRewrite) -> Result<Self, FilterError> {
        let hostname = match &spec.hostname {
            Some(hostname) => {
                let invalid = || FilterError::Url {
                    filter: "URLRewrite",
                    what: "hostname",
                    value: hostname.clone(),
                };
                let header = HeaderValue::from_str(hostname).map_err(|_| invalid())?;
                let authority = Authority::try_from(hostname.as_str()).map_err(|_| invalid())?;
                Some((header, authority))
            }
            None => None,
        };
        let path = spec
            .path
            .as_ref()
            .map(|p| PathEdit::compile("URLRewrite", p))
            .transpose()?;
        Ok(Rewrite { hostname, path })
    }

    /// Rewrites the request head in place. `matched_prefix` is the `PathPrefix` value the rule
    /// matched with (for `ReplacePrefixMatch`).
    pub fn rewrite(&self, parts: &mut http::request::Parts, matched_prefix: Option<&str>) {
        if let Some((header, authority)) = &self.hostname {
            parts.headers.insert(HOST, header.clone());
            if parts.uri.authority().is_some() {
                replace(&mut parts.uri, "hostname", |uri| {
                    uri.authority = Some(authority.clone());
                    Ok(())
                });
            }
        }
        if let Some(edit) = &self.path {
            let path = edit.apply(parts.uri.path(), matched_prefix);
            let path_and_query = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            replace(&mut parts.uri, "path", |uri| {
                uri.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
                Ok(())
            });
        }
    }
}

/// Swaps one piece of `uri`. The pieces are valid on their own (taken from the request, or
/// compiled from the route), so this is not expected to fail; if it does, the URI is kept as it
/// was and the failure logged, rather than forwarding a guess.
fn replace(
    uri: &mut Uri,
    what: &'static str,
    edit: impl FnOnce(&mut http::uri::Parts) -> Result<(), http::uri::InvalidUri>,
) {
    let mut parts = uri.clone().into_parts();
    let rebuilt = edit(&mut parts)
        .map_err(|error| error.to_string())
        .and_then(|()| Uri::from_parts(parts).map_err(|error| error.to_string()));
    match rebuilt {
        Ok(rebuilt) => *uri = rebuilt,
        Err(error) => {
            tracing::warn!(%error, what, "URLRewrite produced an invalid URI; kept the original")
        }
    }
}
