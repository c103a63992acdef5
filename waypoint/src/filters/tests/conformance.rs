//! The conformance suite's filter cases (redirects, rewrites, header modifiers, CORS) replayed
//! through route lookup and the filters, applied in the proxy's phase order: CORS preflight and
//! redirect answer at once; otherwise request filters in rule order, then an emulated echo
//! backend (which honours `X-Echo-Set-Header`), then response filters and CORS decoration. The
//! harness's rules for judging a response (conformance/gateway-api/README.md) are applied as
//! written, including what it leaves unchecked.

use http::header::{HOST, LOCATION};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_yaml::Value;

use super::*;
use crate::routes::tests::conformance::{case_table, read, suite, target};
use crate::routes::tests::key;
use crate::routes::RequestFacts;

/// What the proxy sent back, and what reached the backend if anything did.
struct Outcome {
    status: StatusCode,
    response: HeaderMap,
    at_backend: Option<http::request::Parts>,
}

fn run(table: &crate::routes::RouteTable, case: &Value) -> Result<Outcome, String> {
    let r = &case["request"];
    let (service, port, client) = target(case);
    let method = Method::from_bytes(r["method"].as_str().unwrap_or("GET").as_bytes()).unwrap();
    let path = r["path"].as_str().unwrap();
    let scheme = r["scheme"].as_str().unwrap_or("http");
    // The Go client sends the gateway address when the case names no host: IP for 80/443.
    let listener = case["target"]["port"].as_u64();
    let host = match (r["host"].as_str(), listener) {
        (Some(host), _) => host.to_owned(),
        (None, Some(p)) if p != 80 && p != 443 => format!("192.0.2.1:{p}"),
        (None, _) => "192.0.2.1".to_owned(),
    };
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, &host);
    for (name, value) in r["headers"].as_mapping().into_iter().flatten() {
        builder = builder.header(name.as_str().unwrap(), value.as_str().unwrap());
    }
    // What the backend is asked to answer with, as the Go test asks the echo server.
    let backend_sets: Vec<String> = r["backend_set_response_headers"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{}:{}", k.as_str().unwrap(), v.as_str().unwrap()))
        .collect();
    builder = builder.header("x-echo-set-header", backend_sets.join(","));
    let (mut parts, ()) = builder.body(()).unwrap().into_parts();
    let Some(routes) = table.service_routes(&key(&service), port, client.as_deref()) else {
        return Ok(echo(parts, &[]));
    };
    let request_headers = parts.headers.clone();
    let found = routes.find(&RequestFacts {
        method: &parts.method,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        grpc: false,
    });
    let Some(found) = found else {
        let response = HeaderMap::new();
        return Ok(Outcome {
            status: StatusCode::NOT_FOUND,
            response,
            at_backend: None,
        });
    };
    let (rule, matched_prefix) = (found.rule, found.matched_prefix);
    for filter in &rule.filters {
        match filter {
            Filter::Cors(cors) => {
                if let Some(response) = cors.preflight(&parts.headers, &parts.method) {
                    let (head, ()) = response.into_parts();
                    return Ok(Outcome {
                        status: head.status,
                        response: head.headers,
                        at_backend: None,
                    });
                }
            }
            Filter::Redirect(redirect) => {
                let (host, port) = match host.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse().ok()),
                    None => (host.as_str(), None),
                };
                let input = RedirectInput {
                    scheme,
                    host,
                    port,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                };
                let (status, location) = redirect.redirect(&input, matched_prefix);
                let mut response = HeaderMap::new();
                response.insert(LOCATION, location);
                return Ok(Outcome {
                    status,
                    response,
                    at_backend: None,
                });
            }
            Filter::RequestHeaders(edits) => edits.apply(&mut parts.headers),
            Filter::Rewrite(rewrite) => rewrite.rewrite(&mut parts, matched_prefix),
            Filter::ResponseHeaders(_) | Filter::Mirror(_) => {}
            Filter::Unsupported(why) => return Err(format!("500: {why}")),
        }
    }
    let mut outcome = echo(parts, &rule.filters);
    for filter in &rule.filters {
        if let Filter::Cors(cors) = filter {
            cors.decorate(&request_headers, &mut outcome.response);
        }
    }
    Ok(outcome)
}

/// The echo backend's answer (200, `X-Echo-Set-Header` honoured), then the response filters.
fn echo(parts: http::request::Parts, filters: &[Filter]) -> Outcome {
    let mut response = HeaderMap::new();
    let set = parts
        .headers
        .get("x-echo-set-header")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for pair in set.split(',').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once(':').unwrap();
        response.append(
            http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            http::HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    for filter in filters {
        if let Filter::ResponseHeaders(edits) = filter {
            edits.apply(&mut response);
        }
    }
    Outcome {
        status: StatusCode::OK,
        response,
        at_backend: Some(parts),
    }
}

fn check(case: &Value, outcome: &Outcome) -> Result<(), String> {
    let expect = &case["expect"];
    let statuses: Vec<u64> = match &expect["status"] {
        Value::Sequence(list) => list.iter().filter_map(Value::as_u64).collect(),
        Value::Number(n) => n.as_u64().into_iter().collect(),
        _ => vec![200],
    };
    let status = u64::from(outcome.status.as_u16());
    if !statuses.contains(&status) {
        return Err(format!("status {status}, want {statuses:?}"));
    }
    if let Some(redirect) = expect["redirect"].as_mapping() {
        check_redirect(case, redirect, &outcome.response)?;
    }
    if let Some(parts) = &outcome.at_backend {
        let at = &expect["request_at_backend"];
        if let Some(path) = at["path"].as_str() {
            let got = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            if got != path {
                return Err(format!("backend saw path {got}, want {path}"));
            }
        }
        if let Some(host) = at["host"].as_str() {
            let got = parts.headers.get(HOST).map(|h| h.to_str().unwrap());
            if got != Some(host) {
                return Err(format!("backend saw host {got:?}, want {host}"));
            }
        }
        compare_headers(
            "request",
            &parts.headers,
            &expect["request_headers_at_backend"],
        )?;
    }
    compare_headers("response", &outcome.response, &expect["response_headers"])
}

fn check_redirect(
    case: &Value,
    want: &serde_yaml::Mapping,
    response: &HeaderMap,
) -> Result<(), String> {
    let location = response
        .get(LOCATION)
        .ok_or("no Location")?
        .to_str()
        .unwrap();
    let uri: http::Uri = location
        .parse()
        .map_err(|e| format!("Location {location}: {e}"))?;
    let request_scheme = case["request"]["scheme"].as_str().unwrap_or("http");
    let request_path = case["request"]["path"]
        .as_str()
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let get = |k: &str| want.get(k).and_then(Value::as_str);
    let scheme = get("scheme").unwrap_or(request_scheme);
    let mut problems = Vec::new();
    if uri.scheme_str() != Some(scheme) {
        problems.push(format!("scheme {:?}, want {scheme}", uri.scheme_str()));
    }
    if let Some(host) = get("host") {
        if uri.host() != Some(host) {
            problems.push(format!("host {:?}, want {host}", uri.host()));
        }
    }
    let port = uri.port_u16();
    match want.get("port").and_then(|p| {
        p.as_str()
            .map(str::to_owned)
            .or_else(|| p.as_u64().map(|n| n.to_string()))
    }) {
        Some(expected) => {
            if port.map(|p| p.to_string()) != Some(expected.clone()) {
                problems.push(format!("port {port:?}, want {expected}"));
            }
        }
        None => {
            let default = if scheme == "https" { 443 } else { 80 };
            if port.is_some_and(|p| p != default) {
                problems.push(format!("port {port:?}, want none or {default}"));
            }
        }
    }
    let path = get("path").unwrap_or(request_path);
    if uri.path() != path {
        problems.push(format!("path {}, want {path}", uri.path()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("Location {location}: {}", problems.join(", ")))
    }
}

/// `present` (values joined with `,`), `absent`, `one_of`, with `ignore_whitespace`.
fn compare_headers(which: &str, headers: &HeaderMap, want: &Value) -> Result<(), String> {
    let squash = |s: &str| {
        if want["ignore_whitespace"].as_bool() == Some(true) {
            s.replace(' ', "")
        } else {
            s.to_owned()
        }
    };
    let got = |name: &str| joined(headers, name).map(|v| squash(&v));
    for (name, value) in want["present"].as_mapping().into_iter().flatten() {
        let (name, value) = (name.as_str().unwrap(), value.as_str().unwrap());
        if got(name) != Some(squash(value)) {
            return Err(format!(
                "{which} header {name}: {:?}, want {value:?}",
                got(name)
            ));
        }
    }
    for (name, values) in want["one_of"].as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap();
        let values: Vec<String> = values
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| squash(v.as_str().unwrap()))
            .collect();
        if !got(name).is_some_and(|g| values.contains(&g)) {
            return Err(format!(
                "{which} header {name}: {:?}, want one of {values:?}",
                got(name)
            ));
        }
    }
    for name in want["absent"].as_sequence().into_iter().flatten() {
        let name = name.as_str().unwrap();
        if headers.contains_key(name) {
            return Err(format!(
                "{which} header {name} must be absent, is {:?}",
                got(name)
            ));
        }
    }
    Ok(())
}

#[test]
fn conformance_filter_cases_pass() {
    let files = [
        "HTTPRoute303Redirect.yaml",
        "HTTPRoute307Redirect.yaml",
        "HTTPRoute308Redirect.yaml",
        "HTTPRouteRedirectHostAndStatus.yaml",
        "HTTPRouteRedirectPath.yaml",
        "HTTPRouteRedirectPort.yaml",
        "HTTPRouteRedirectPortAndScheme.yaml",
        "HTTPRouteRedirectScheme.yaml",
        "HTTPRouteRewriteHost.yaml",
        "HTTPRouteRewritePath.yaml",
        "HTTPRouteRequestHeaderModifier.yaml",
        "HTTPRouteResponseHeaderModifier.yaml",
        "HTTPRouteCORS.yaml",
        "mesh-MeshHTTPRoute303Redirect.yaml",
        "mesh-MeshHTTPRoute307Redirect.yaml",
        "mesh-MeshHTTPRoute308Redirect.yaml",
        "mesh-MeshHTTPRouteRedirectHostAndStatus.yaml",
        "mesh-MeshHTTPRouteRedirectPath.yaml",
        "mesh-MeshHTTPRouteRedirectPort.yaml",
        "mesh-MeshHTTPRouteSchemeRedirect.yaml",
        "mesh-MeshHTTPRouteRewritePath.yaml",
        "mesh-MeshHTTPRouteRequestHeaderModifier.yaml",
    ];
    let mut total = 0;
    let mut failures = Vec::new();
    for file in files {
        let cases: Value = serde_yaml::from_str(&read(&suite().join("cases").join(file))).unwrap();
        let table = case_table(&cases);
        for case in cases["cases"].as_sequence().unwrap() {
            total += 1;
            let result = run(&table, case).and_then(|outcome| check(case, &outcome));
            if let Err(problem) = result {
                let r = &case["request"];
                failures.push(format!(
                    "{file}: {} {}: {problem}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} conformance filter cases replayed");
}
