//! HTTPRoute spec → [`HttpRoute`] rules, with the CRD defaults and rules applied.

use super::check::{Field, Problems, HEADER_VALUE, PATH};
use super::common::{backend_ref, check_rule_list, header_matches, query_matches};
use super::filters::{filters, http_method, HTTP_FILTER_TYPES};
use crate::gateway_api::model::{
    HttpBackend, HttpFilter, HttpMatch, HttpRule, PathMatch, PathModifier, Retry, Timeout, Timeouts,
};
use crate::gateway_api::resource::{HttpMatchSpec, HttpRuleSpec, RetrySpec, TimeoutsSpec};

/// The schema's limits: 16 rules, 64 matches per rule (128 in all: `check_rule_list`).
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 64;

/// `spec.rules`; absent means one rule matching every request (the CRD default).
pub(crate) fn rules(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<HttpRuleSpec>>,
    own: &str,
) -> Vec<HttpRule> {
    let default = [HttpRuleSpec::default()];
    let specs: &[HttpRuleSpec] = match specs {
        None => &default,
        Some(_) => problems.list(field, specs, MAX_RULES),
    };
    check_rule_list(
        problems,
        field,
        specs
            .iter()
            .map(|r| (r.name.as_deref(), r.matches.as_ref().map_or(0, Vec::len))),
    );
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| rule(problems, &field.index(i), spec, own))
        .collect()
}

fn rule(problems: &mut Problems, field: &Field, spec: &HttpRuleSpec, own: &str) -> HttpRule {
    let name = super::rule_name(problems, &field.at("name"), &spec.name);
    let match_specs = problems.list(&field.at("matches"), &spec.matches, MAX_MATCHES);
    let mut matches: Vec<HttpMatch> = match_specs
        .iter()
        .enumerate()
        .map(|(i, m)| http_match(problems, &field.at("matches").index(i), m))
        .collect();
    if matches.is_empty() {
        // "If no matches are specified, the default is a prefix path match on “/”".
        matches.push(http_match(problems, field, &HttpMatchSpec::default()));
    }
    let filters_field = field.at("filters");
    let rule_filters = filters(
        problems,
        &filters_field,
        &spec.filters,
        HTTP_FILTER_TYPES,
        own,
    );
    let backend_field = field.at("backendRefs");
    let backends: Vec<HttpBackend> = problems
        .list(&backend_field, &spec.backend_refs, 16)
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let field = backend_field.index(i);
            HttpBackend {
                backend: backend_ref(problems, &field, &b.backend(), own),
                filters: filters(
                    problems,
                    &field.at("filters"),
                    &b.filters,
                    HTTP_FILTER_TYPES,
                    own,
                ),
            }
        })
        .collect();
    if !backends.is_empty()
        && rule_filters
            .iter()
            .any(|f| matches!(f, HttpFilter::RequestRedirect(_)))
    {
        problems.add(
            &filters_field,
            "a RequestRedirect answers the request itself; remove it or the rule's backendRefs",
        );
    }
    let replaces_prefix = |filters: &[HttpFilter]| {
        filters.iter().any(|f| match f {
            HttpFilter::RequestRedirect(r) => {
                matches!(r.path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            HttpFilter::UrlRewrite(r) => {
                matches!(r.path, Some(PathModifier::ReplacePrefixMatch(_)))
            }
            _ => false,
        })
    };
    let uses_prefix =
        replaces_prefix(&rule_filters) || backends.iter().any(|b| replaces_prefix(&b.filters));
    let one_prefix = match_specs.len() == 1 && matches!(matches[0].path, PathMatch::PathPrefix(_));
    if uses_prefix && !one_prefix {
        problems.add(&field.at("matches"), "replacePrefixMatch needs exactly one match, of type PathPrefix: it replaces what that match matched");
    }
    HttpRule {
        name,
        matches,
        filters: rule_filters,
        backends,
        timeouts: spec
            .timeouts
            .as_ref()
            .map(|t| timeouts(problems, &field.at("timeouts"), t))
            .unwrap_or_default(),
        retry: spec
            .retry
            .as_ref()
            .map(|r| retry(problems, &field.at("retry"), r)),
    }
}

fn http_match(problems: &mut Problems, field: &Field, spec: &HttpMatchSpec) -> HttpMatch {
    let path_field = field.at("path");
    let path = spec.path.clone().unwrap_or_default();
    let value = path.value.unwrap_or_else(|| "/".to_owned());
    let path = match path.type_.as_deref().unwrap_or("PathPrefix") {
        "Exact" => PathMatch::Exact(checked_path(problems, &path_field.at("value"), value)),
        "PathPrefix" => {
            PathMatch::PathPrefix(checked_path(problems, &path_field.at("value"), value))
        }
        "RegularExpression" => {
            problems.regex(&path_field.at("value"), &value);
            PathMatch::RegularExpression(value)
        }
        other => {
            problems.add(
                &path_field.at("type"),
                format!("{other:?} is not one of Exact, PathPrefix, RegularExpression"),
            );
            PathMatch::PathPrefix(value)
        }
    };
    HttpMatch {
        path,
        headers: header_matches(
            problems,
            &field.at("headers"),
            &spec.headers,
            Some(&HEADER_VALUE),
        ),
        query_params: query_matches(problems, &field.at("queryParams"), &spec.query_params),
        method: http_method(problems, &field.at("method"), &spec.method),
    }
}

/// Exact and PathPrefix values: absolute, without dot segments, encoded slashes or fragments.
fn checked_path(problems: &mut Problems, field: &Field, value: String) -> String {
    if !value.starts_with('/') {
        problems.add(
            field,
            format!("{value:?} must be an absolute path, starting with '/'"),
        );
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(bad) {
            problems.add(field, format!("{value:?} must not contain {bad:?}"));
        }
    }
    for bad in ["/..", "/."] {
        if value.ends_with(bad) {
            problems.add(field, format!("{value:?} must not end with {bad:?}"));
        }
    }
    problems.pattern(field, &value, &PATH);
    value
}

fn timeouts(problems: &mut Problems, field: &Field, spec: &TimeoutsSpec) -> Timeouts {
    let mut timeout = |name: &str, value: &Option<String>| {
        let value = value.as_deref()?;
        let duration = problems.duration(&field.at(name), value)?;
        Some(if duration.is_zero() {
            Timeout::Disabled
        } else {
            Timeout::After(duration)
        })
    };
    let request = timeout("request", &spec.request);
    let backend_request = timeout("backendRequest", &spec.backend_request);
    if let (Some(Timeout::After(request)), Some(Timeout::After(backend))) =
        (request, backend_request)
    {
        if backend > request {
            problems.add(&field.at("backendRequest"), "is longer than the request timeout, which covers every attempt; shorten it or raise request");
        }
    }
    Timeouts {
        request,
        backend_request,
    }
}

fn retry(problems: &mut Problems, field: &Field, spec: &RetrySpec) -> Retry {
    let codes_field = field.at("codes");
    let mut codes: Vec<u16> = Vec::new();
    for (i, &code) in spec.codes.iter().flatten().enumerate() {
        if let Some(code) = problems.within(&codes_field.index(i), code, 400, 599) {
            let code = code as u16;
            if codes.contains(&code) {
                problems.add(&codes_field.index(i), format!("{code} is listed twice"));
            }
            codes.push(code);
        }
    }
    Retry {
        attempts: spec
            .attempts
            .and_then(|a| problems.within(&field.at("attempts"), a, 1, i32::MAX)),
        backoff: spec
            .backoff
            .as_deref()
            .and_then(|b| problems.duration(&field.at("backoff"), b)),
        codes,
    }
}
