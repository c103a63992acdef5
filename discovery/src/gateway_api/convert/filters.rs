//! HTTPRoute and GRPCRoute filters: the type-specific field must be the one that is set, some
//! types may appear once per list, and a redirect excludes a rewrite.

use super::check::{Field, Problems, CORS_ORIGIN, HEADER_NAME, PRECISE_HOSTNAME};
use super::common::{header_modifier, local_ref, mirror};
use crate::gateway_api::model::{Cors, HttpFilter, PathModifier, Redirect, UrlRewrite};
use crate::gateway_api::resource::{
    CorsSpec, HttpFilterSpec, PathModifierSpec, RedirectSpec, UrlRewriteSpec,
};

/// Filter types of HTTPRoute, in the schema's order.
pub(crate) const HTTP_FILTER_TYPES: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
];
/// Filter types of GRPCRoute.
pub(crate) const GRPC_FILTER_TYPES: &[&str] = &[
    "ResponseHeaderModifier",
    "RequestHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];
/// Types that may appear at most once in one filter list.
const AT_MOST_ONCE: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
];
const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Converts a filter list whose types must be among `allowed`.
pub(crate) fn filters(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<HttpFilterSpec>>,
    allowed: &[&str],
    own: &str,
) -> Vec<HttpFilter> {
    let list = problems.list(field, specs, 16);
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        let field = field.index(i);
        let Some(filter_type) = problems.required(&field.at("type"), spec.type_.as_ref()) else {
            continue;
        };
        let Some(filter_type) = problems.one_of(&field.at("type"), filter_type, allowed) else {
            continue;
        };
        if AT_MOST_ONCE.contains(&filter_type) && seen.contains(&filter_type) {
            problems.add(
                &field.at("type"),
                format!("a second {filter_type} filter; merge them into one"),
            );
        }
        seen.push(filter_type);
        if let Some(filter) = filter(problems, &field, filter_type, spec, own) {
            out.push(filter);
        }
    }
    if seen.contains(&"RequestRedirect") && seen.contains(&"URLRewrite") {
        problems.add(field, "RequestRedirect and URLRewrite exclude each other; a redirect answers the request, there is nothing to rewrite");
    }
    out
}

/// The field each type is configured in (`None`: the type has no configuration of its own).
fn config_field(filter_type: &str) -> &'static str {
    match filter_type {
        "RequestHeaderModifier" => "requestHeaderModifier",
        "ResponseHeaderModifier" => "responseHeaderModifier",
        "RequestMirror" => "requestMirror",
        "RequestRedirect" => "requestRedirect",
        "URLRewrite" => "urlRewrite",
        "ExtensionRef" => "extensionRef",
        "CORS" => "cors",
        _ => "externalAuth",
    }
}

fn filter(
    problems: &mut Problems,
    field: &Field,
    filter_type: &str,
    spec: &HttpFilterSpec,
    own: &str,
) -> Option<HttpFilter> {
    let present = [
        (
            "requestHeaderModifier",
            spec.request_header_modifier.is_some(),
        ),
        (
            "responseHeaderModifier",
            spec.response_header_modifier.is_some(),
        ),
        ("requestMirror", spec.request_mirror.is_some()),
        ("requestRedirect", spec.request_redirect.is_some()),
        ("urlRewrite", spec.url_rewrite.is_some()),
        ("extensionRef", spec.extension_ref.is_some()),
        ("cors", spec.cors.is_some()),
        ("externalAuth", spec.external_auth.is_some()),
    ];
    let wanted = config_field(filter_type);
    for (name, set) in present {
        if set && name != wanted {
            problems.add(
                &field.at(name),
                format!("set on a filter of type {filter_type}; only {wanted} belongs to it"),
            );
        }
    }
    let at = field.at(wanted);
    let missing = |problems: &mut Problems| {
        problems.add(&at, format!("missing; a {filter_type} filter needs it"));
        None
    };
    Some(match filter_type {
        "RequestHeaderModifier" => match &spec.request_header_modifier {
            Some(m) => HttpFilter::RequestHeaderModifier(header_modifier(problems, &at, m)),
            None => return missing(problems),
        },
        "ResponseHeaderModifier" => match &spec.response_header_modifier {
            Some(m) => HttpFilter::ResponseHeaderModifier(header_modifier(problems, &at, m)),
            None => return missing(problems),
        },
        "RequestMirror" => match &spec.request_mirror {
            Some(m) => HttpFilter::RequestMirror(mirror(problems, &at, m, own)),
            None => return missing(problems),
        },
        "RequestRedirect" => match &spec.request_redirect {
            Some(r) => HttpFilter::RequestRedirect(redirect(problems, &at, r)),
            None => return missing(problems),
        },
        "URLRewrite" => match &spec.url_rewrite {
            Some(r) => HttpFilter::UrlRewrite(url_rewrite(problems, &at, r)),
            None => return missing(problems),
        },
        "ExtensionRef" => match &spec.extension_ref {
            Some(r) => HttpFilter::ExtensionRef(local_ref(problems, &at, r)),
            None => return missing(problems),
        },
        "CORS" => match &spec.cors {
            Some(c) => HttpFilter::Cors(cors(problems, &at, c)),
            None => return missing(problems),
        },
        other => {
            if spec.external_auth.is_none() {
                return missing(problems);
            }
            HttpFilter::Unsupported {
                filter_type: other.to_owned(),
            }
        }
    })
}

fn redirect(problems: &mut Problems, field: &Field, spec: &RedirectSpec) -> Redirect {
    let scheme = spec
        .scheme
        .as_deref()
        .and_then(|s| problems.one_of(&field.at("scheme"), s, &["http", "https"]))
        .map(str::to_owned);
    let status_code = match spec.status_code {
        Some(code) if [301, 302, 303, 307, 308].contains(&code) => code as u16,
        Some(code) => {
            problems.add(
                &field.at("statusCode"),
                format!("{code} is not one of 301, 302, 303, 307, 308"),
            );
            302
        }
        None => 302,
    };
    Redirect {
        scheme,
        hostname: precise_hostname(problems, &field.at("hostname"), &spec.hostname),
        path: spec
            .path
            .as_ref()
            .and_then(|p| path_modifier(problems, &field.at("path"), p)),
        port: spec.port.and_then(|p| problems.port(&field.at("port"), p)),
        status_code,
    }
}

fn url_rewrite(problems: &mut Problems, field: &Field, spec: &UrlRewriteSpec) -> UrlRewrite {
    UrlRewrite {
        hostname: precise_hostname(problems, &field.at("hostname"), &spec.hostname),
        path: spec
            .path
            .as_ref()
            .and_then(|p| path_modifier(problems, &field.at("path"), p)),
    }
}

fn precise_hostname(
    problems: &mut Problems,
    field: &Field,
    value: &Option<String>,
) -> Option<String> {
    let value = value.as_ref()?;
    problems.pattern(field, value, &PRECISE_HOSTNAME);
    Some(value.clone())
}

fn path_modifier(
    problems: &mut Problems,
    field: &Field,
    spec: &PathModifierSpec,
) -> Option<PathModifier> {
    let kind = problems.required(&field.at("type"), spec.type_.as_ref())?;
    let kind = problems.one_of(
        &field.at("type"),
        kind,
        &["ReplaceFullPath", "ReplacePrefixMatch"],
    )?;
    let (value, other, other_name, wanted) = match kind {
        "ReplaceFullPath" => (
            &spec.replace_full_path,
            &spec.replace_prefix_match,
            "replacePrefixMatch",
            "replaceFullPath",
        ),
        _ => (
            &spec.replace_prefix_match,
            &spec.replace_full_path,
            "replaceFullPath",
            "replacePrefixMatch",
        ),
    };
    if other.is_some() {
        problems.add(
            &field.at(other_name),
            format!("set with type {kind}; use {wanted}"),
        );
    }
    let value = problems.required(&field.at(wanted), value.as_ref())?;
    if value.len() > 1024 {
        problems.add(&field.at(wanted), "is longer than 1024 characters");
    }
    Some(match kind {
        "ReplaceFullPath" => PathModifier::ReplaceFullPath(value.clone()),
        _ => PathModifier::ReplacePrefixMatch(value.clone()),
    })
}

fn cors(problems: &mut Problems, field: &Field, spec: &CorsSpec) -> Cors {
    let mut strings = |name: &str,
                       list: &Option<Vec<String>>,
                       max: usize,
                       check: &dyn Fn(&mut Problems, &Field, &str)|
     -> Vec<String> {
        let field = field.at(name);
        let values = problems.list(&field, list, max).to_vec();
        for (i, value) in values.iter().enumerate() {
            check(problems, &field.index(i), value);
        }
        if values.len() > 1 && values.iter().any(|v| v == "*") {
            problems.add(
                &field,
                "`*` stands for everything and cannot be listed with other values",
            );
        }
        values
    };
    let allow_origins = strings("allowOrigins", &spec.allow_origins, 64, &|p, f, v| {
        p.pattern(f, v, &CORS_ORIGIN)
    });
    let allow_methods = strings("allowMethods", &spec.allow_methods, 9, &|p, f, v| {
        if v != "*" {
            p.one_of(f, v, HTTP_METHODS);
        }
    });
    let allow_headers = strings("allowHeaders", &spec.allow_headers, 64, &|p, f, v| {
        p.pattern(f, v, &HEADER_NAME)
    });
    let expose_headers = strings("exposeHeaders", &spec.expose_headers, 64, &|p, f, v| {
        p.pattern(f, v, &HEADER_NAME)
    });
    let max_age_seconds = match spec.max_age {
        Some(age) => problems
            .within(&field.at("maxAge"), age, 1, i32::MAX)
            .unwrap_or(5),
        None => 5,
    };
    Cors {
        allow_origins,
        allow_credentials: spec.allow_credentials.unwrap_or(false),
        allow_methods,
        allow_headers,
        expose_headers,
        max_age_seconds,
    }
}

/// `method` of an HTTPRoute match.
pub(crate) fn http_method(
    problems: &mut Problems,
    field: &Field,
    method: &Option<String>,
) -> Option<String> {
    let method = method.as_deref()?;
    problems
        .one_of(field, method, HTTP_METHODS)
        .map(str::to_owned)
}
