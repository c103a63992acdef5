//! Verdicts. [`judge`] is the upstream mesh judge (`compareRequest` in the suite's
//! conformance/utils/echo/pod.go): status, request headers present/absent at the backend,
//! response headers absent/present, and the pod name starting with the expected Service. It
//! does not check path, method, namespace or a redirect's Location (`enforced_by_upstream_mesh_harness:
//! false` in the data). [`strict_checks`] checks those too, reported beside the verdict and
//! never changing it. [`judge_distribution`] is the weighted-backend rule of the sampling block.

use std::collections::BTreeMap;

use crate::conformance::case::{Case, Redirect};
use crate::conformance::output::{EchoResponse, Summary};

/// The upstream verdict on one answer: `Ok`, or the first reason it fails.
pub fn judge(case: &Case, response: &EchoResponse) -> Result<(), String> {
    let codes = case.expect.status_codes();
    let got: u16 = response
        .status
        .parse()
        .map_err(|_| format!("invalid status code {:?}", response.status))?;
    if !codes.contains(&got) {
        return Err(format!(
            "wanted status code to be one of {codes:?}, got {got}"
        ));
    }
    if let Some(headers) = &case.expect.request_headers_at_backend {
        for (name, want) in &headers.present {
            match response.request_header(name) {
                None => {
                    return Err(format!(
                        "expected request header {name} at the backend, it has none"
                    ))
                }
                Some(got) if got != *want => {
                    return Err(format!(
                        "expected request header {name}={want} at the backend, got {got}"
                    ))
                }
                Some(_) => {}
            }
        }
        for name in &headers.absent {
            if let Some(got) = response.request_header(name) {
                return Err(format!(
                    "expected no request header {name} at the backend, got {got}"
                ));
            }
        }
    }
    if let Some(headers) = &case.expect.response_headers {
        for name in &headers.absent {
            if let Some(got) = response.response_header(name) {
                return Err(format!("expected no response header {name}, got {got}"));
            }
        }
        for (name, want) in &headers.present {
            let got = response.response_header(name).unwrap_or("");
            if got != want {
                return Err(format!(
                    "expected response header {name}={want}, got {got:?}"
                ));
            }
        }
    }
    let prefix = backend_prefix(case.expect.backend.as_deref());
    if !response.hostname.starts_with(prefix) {
        return Err(format!(
            "expected pod name to start with {prefix}, got {:?}",
            response.hostname
        ));
    }
    Ok(())
}

/// The Service part of `<ns>/<Service>`; `""` (anything) for null and for `<ns>/*`.
pub fn backend_prefix(backend: Option<&str>) -> &str {
    match backend.map(|b| b.rsplit_once('/').map_or(b, |(_, name)| name)) {
        None | Some("*") => "",
        Some(name) => name,
    }
}

/// What the upstream mesh judge leaves out, checked anyway: the path the backend saw, a
/// redirect's Location (README "How the Go harness judges", rule 3), and that `<ns>/*` was
/// answered by some pod. Each failure is one line; none changes the verdict.
pub fn strict_checks(case: &Case, response: &EchoResponse) -> Vec<String> {
    let mut failures = Vec::new();
    let ok = matches!(response.status.as_str(), "200" | "204");
    if let (true, Some(want)) = (
        ok,
        case.expect
            .request_at_backend
            .as_ref()
            .and_then(|r| r.path.as_deref()),
    ) {
        let got = response.url.as_deref().unwrap_or("");
        if got != want {
            failures.push(format!("path at backend: expected {want}, got {got:?}"));
        }
    }
    if let (true, Some(redirect)) = (response.status.starts_with('3'), &case.expect.redirect) {
        match response.response_header("location") {
            None => failures.push("redirect: no Location header".into()),
            Some(location) => failures.extend(check_location(location, redirect, case)),
        }
    }
    if case
        .expect
        .backend
        .as_deref()
        .is_some_and(|b| b.ends_with("/*"))
        && response.hostname.is_empty()
    {
        failures.push("backend: expected an echo pod to answer, no Hostname".into());
    }
    failures
}

/// Location parts, compared with the README's defaults: scheme = the request's, path = the
/// request path without its query, port = empty or the scheme's default, host unchecked if null.
fn check_location(location: &str, want: &Redirect, case: &Case) -> Vec<String> {
    let parsed = LocationParts::parse(location);
    let mut failures = Vec::new();
    let mut compare = |what: &str, expected: &str, got: &str| {
        if expected != got {
            failures.push(format!(
                "redirect {what}: expected {expected:?}, got {got:?} (Location {location})"
            ));
        }
    };
    let scheme = want.scheme.as_deref().unwrap_or(case.request.scheme());
    compare(
        "scheme",
        scheme,
        parsed.scheme.unwrap_or(case.request.scheme()),
    );
    if let Some(host) = want.host.as_deref() {
        compare("host", host, parsed.host);
    }
    let request_path = case.request.path().split('?').next().unwrap_or("/");
    compare(
        "path",
        want.path.as_deref().unwrap_or(request_path),
        parsed.path,
    );
    let got_port = parsed.port.unwrap_or("");
    match want.port.as_deref() {
        Some(port) => compare("port", port, got_port),
        None => {
            let default = match parsed.scheme.unwrap_or(scheme) {
                "https" => "443",
                _ => "80",
            };
            if !got_port.is_empty() && got_port != default {
                failures.push(format!("redirect port: expected none or {default}, got {got_port} (Location {location})"));
            }
        }
    }
    failures
}

/// `scheme://host:port/path?query` or a relative `/path`.
struct LocationParts<'a> {
    scheme: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
}

impl<'a> LocationParts<'a> {
    fn parse(location: &'a str) -> Self {
        let (scheme, rest) = match location.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, location),
        };
        let (authority, path_and_query) = match (scheme, rest.find('/')) {
            (None, _) => ("", rest),
            (Some(_), Some(slash)) => (&rest[..slash], &rest[slash..]),
            (Some(_), None) => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                (host, Some(port))
            }
            _ => (authority, None),
        };
        let path = path_and_query.split('?').next().unwrap_or("/");
        LocationParts {
            scheme,
            host,
            port,
            path,
        }
    }
}

/// The backend a pod answered for: its name minus the last two `-` segments (Deployment pod
/// naming, as the suite's weight test reads it).
pub fn backend_of_pod(pod: &str) -> &str {
    let mut cut = pod;
    for _ in 0..2 {
        cut = cut.rsplit_once('-').map_or("", |(head, _)| head);
    }
    cut
}

/// The sampling rule: every request answered 200; every backend with weight > 0 seen, no other
/// backend seen; each observed fraction within `tolerance` of its weight.
pub fn judge_distribution(
    expected: &BTreeMap<String, f64>,
    tolerance: f64,
    summary: &Summary,
) -> Result<(), String> {
    if summary.errors > 0 {
        return Err(format!(
            "{} of {} requests failed (first: {})",
            summary.errors,
            summary.requests,
            summary.first_error.as_deref().unwrap_or("?")
        ));
    }
    if let Some((status, count)) = summary.statuses.iter().find(|(status, _)| *status != "200") {
        return Err(format!(
            "{count} of {} requests answered {status}",
            summary.requests
        ));
    }
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for (pod, count) in &summary.hostnames {
        *seen.entry(backend_of_pod(pod)).or_default() += count;
    }
    let answered: u32 = summary.hostnames.values().sum();
    if answered < summary.requests {
        return Err(format!(
            "{} of {} answers named no pod",
            summary.requests - answered,
            summary.requests
        ));
    }
    let wanted: BTreeMap<&str, f64> = expected
        .iter()
        .map(|(backend, weight)| (backend_prefix(Some(backend)), *weight))
        .collect();
    if let Some(other) = seen
        .keys()
        .find(|backend| !wanted.get(*backend).is_some_and(|w| *w > 0.0))
    {
        return Err(format!(
            "backend {other} answered but has no weight; seen {seen:?}"
        ));
    }
    if let Some((backend, weight)) = wanted
        .iter()
        .find(|(backend, weight)| **weight > 0.0 && seen.get(*backend).copied().unwrap_or(0) == 0)
    {
        return Err(format!(
            "backend {backend} (weight {weight}) never answered; seen {seen:?}"
        ));
    }
    for (backend, weight) in &wanted {
        let count = seen.get(backend).copied().unwrap_or(0);
        let fraction = f64::from(count) / f64::from(answered.max(1));
        if (fraction - weight).abs() > tolerance {
            return Err(format!(
                "backend {backend}: {fraction:.3} of answers, expected {weight} ± {tolerance}; seen {seen:?}"
            ));
        }
    }
    Ok(())
}
