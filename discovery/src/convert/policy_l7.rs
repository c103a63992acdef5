//! The L7 parts of an AuthorizationPolicy — targets, hosts, methods, paths, `when` conditions —
//! parsed and checked for the waypoint.
//!
//! Anything that cannot be understood is an error naming the field, so the policy is kept in
//! its fail-closed form (`super::fail_closed`) instead of being enforced in a reading that
//! could allow more than the author meant. Where Istio accepts a value that can never match
//! (a lower-case method, a path without its leading `/`, a `*` inside a pattern, a host with a
//! port) we refuse it too: in a DENY policy such a value silently denies nothing.

use super::policy::{ip_blocks, principals, AuthorizationPolicySpec, ConditionSpec, TargetRefSpec};
use super::ConvertError;
use crate::policy::{Condition, StringMatch, TargetRef, Values, GATEWAY_GROUP};

/// `spec.targetRef` and `spec.targetRefs`, checked against the kinds Istio attaches policies to.
pub(super) fn target_refs(
    spec: &AuthorizationPolicySpec,
    namespace: &str,
) -> Result<Vec<TargetRef>, ConvertError> {
    if spec.target_ref.is_some() && spec.target_refs.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(ConvertError::new(
            "spec.targetRef",
            "set targetRefs or the older targetRef, not both",
        ));
    }
    let one = spec
        .target_ref
        .iter()
        .map(|r| ("spec.targetRef".to_owned(), r));
    let many = spec
        .target_refs
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r));
    one.chain(many)
        .map(|(field, r)| target_ref(&field, r, namespace))
        .collect()
}

fn target_ref(field: &str, r: &TargetRefSpec, namespace: &str) -> Result<TargetRef, ConvertError> {
    if r.name.is_empty() {
        return Err(ConvertError::new(
            format!("{field}.name"),
            "must name the Gateway or Service the policy is for",
        ));
    }
    if let Some(ns) = r
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty() && *ns != namespace)
    {
        return Err(ConvertError::new(
            format!("{field}.namespace"),
            format!("a policy can only target objects in its own namespace ({namespace}), as in Istio; create the policy in namespace {ns} instead"),
        ));
    }
    let group = r.group.as_deref().unwrap_or("");
    let group = match r.kind.as_str() {
        "Gateway" | "GatewayClass" if group == GATEWAY_GROUP => GATEWAY_GROUP,
        "Gateway" | "GatewayClass" => {
            return Err(ConvertError::new(
                format!("{field}.group"),
                format!("{group:?} is not the group of a Gateway API {}; write group: {GATEWAY_GROUP}", r.kind),
            ))
        }
        // Istio accepts both spellings of the core group.
        "Service" if group.is_empty() || group == "core" => "",
        "Service" => {
            return Err(ConvertError::new(
                format!("{field}.group"),
                format!("{group:?} is not the group of a Service; leave group empty (or write core)"),
            ))
        }
        "ServiceEntry" => {
            return Err(ConvertError::new(
                format!("{field}.kind"),
                "ServiceEntry targets are not supported (Ambit has no ServiceEntry); target the Service or the waypoint's Gateway",
            ))
        }
        other => {
            return Err(ConvertError::new(
                format!("{field}.kind"),
                format!("{other:?} is not a kind a policy can target; use Gateway, GatewayClass or Service"),
            ))
        }
    };
    Ok(TargetRef {
        group: group.to_owned(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

/// Reads one pattern of a list; `Err` is the problem, without the field.
pub(super) type PatternParser = fn(&str) -> Result<StringMatch, String>;

/// A list of `hosts`, `methods` or `paths` patterns; `field` names the list.
pub(super) fn patterns(
    field: &str,
    list: Option<&[String]>,
    parse: PatternParser,
) -> Result<Vec<StringMatch>, ConvertError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(k, value)| {
            // The field's own checks first: they explain more (a path template's `{*}`).
            parse(value)
                .and_then(|pattern| wildcard_at_an_end(value).map(|()| pattern))
                .map_err(|problem| ConvertError::new(format!("{field}[{k}]"), problem))
        })
        .collect()
}

/// Istio's patterns are exact, `prefix*`, `*suffix` or `*`; a `*` anywhere else is compared
/// literally, which is never what its author meant.
fn wildcard_at_an_end(value: &str) -> Result<(), String> {
    let inner = value.strip_prefix('*').unwrap_or(value);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    if value.len() > 1 && value.starts_with('*') && value.ends_with('*') {
        return Err(format!(
            "{value:?} has a * at both ends; a pattern is exact, prefix*, *suffix or *"
        ));
    }
    if inner.contains('*') {
        return Err(format!("{value:?} has a * inside; a pattern is exact, prefix*, *suffix or * (the * is only a wildcard at either end)"));
    }
    Ok(())
}

/// A `hosts` pattern, lower-cased: hosts match case-insensitively.
pub(super) fn host(value: &str) -> Result<StringMatch, String> {
    if value.is_empty() {
        return Err(
            "empty; write a host name such as reviews.shop.svc.cluster.local, or *.example.com"
                .to_owned(),
        );
    }
    // `[::1]` and `::1` are addresses, `example.com:8080` a host with a port.
    let has_port = value.rsplit_once(':').is_some_and(|(host, port)| {
        !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (host.ends_with(']') || !host.contains(':'))
    });
    if has_port {
        return Err(format!("{value:?} has a port; hosts are matched without the port, so write the host alone (and use ports for the port)"));
    }
    Ok(StringMatch::parse(&value.to_ascii_lowercase()))
}

/// A `methods` pattern. Methods are case-sensitive, as in Istio.
pub(super) fn method(value: &str) -> Result<StringMatch, String> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let token = value.trim_matches('*');
    if value.is_empty() || !token.bytes().all(is_token_byte) {
        return Err(format!(
            "{value:?} is not an HTTP method; write one such as GET or POST"
        ));
    }
    let upper = value.to_ascii_uppercase();
    if upper != value && STANDARD.contains(&upper.as_str()) {
        return Err(format!(
            "{value:?} would never match: methods are case-sensitive; write {upper}"
        ));
    }
    Ok(StringMatch::parse(value))
}

/// A `paths` pattern, compared with the path without its query string.
pub(super) fn path(value: &str) -> Result<StringMatch, String> {
    if value.contains(['{', '}']) {
        return Err(format!("{value:?} is a path template ({{*}}, {{**}}), which Ambit does not support; use prefix* or *suffix"));
    }
    if value.contains(['?', '#']) {
        return Err(format!("{value:?} has a query or fragment; paths are matched without the query string, so write the path alone"));
    }
    if !value.starts_with('/') && !value.starts_with('*') {
        return Err(format!(
            "{value:?} does not start with /; a request path always does (write /{value})"
        ));
    }
    Ok(StringMatch::parse(value))
}

/// RFC 9110 `tchar`: what a method or header name may contain.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Keys Istio knows that no Ambit proxy can check: JWT claims need RequestAuthentication, the
/// others information the waypoint does not have in the form Istio means.
const UNSUPPORTED_KEYS: [&str; 6] = [
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "remote.ip",
    "destination.ip",
    "connection.sni",
];

/// `rules[].when` of the rule at `rule`. Conditions on keys no Ambit proxy can check are left
/// out and listed in `unsupported` (see `Rule::unsupported`); unknown keys are errors.
pub(super) fn conditions(
    rule: &str,
    when: Option<&[ConditionSpec]>,
    unsupported: &mut Vec<String>,
) -> Result<Vec<Condition>, ConvertError> {
    let mut out = Vec::new();
    for (k, spec) in when.into_iter().flatten().enumerate() {
        let field = format!("{rule}.when[{k}]");
        if spec.values.as_ref().is_none_or(Vec::is_empty)
            && spec.not_values.as_ref().is_none_or(Vec::is_empty)
        {
            return Err(ConvertError::new(
                format!("{field}.values"),
                format!(
                    "condition {:?} has neither values nor notValues; set at least one",
                    spec.key
                ),
            ));
        }
        match condition(&field, spec)? {
            Some(condition) => out.push(condition),
            None => unsupported.push(format!("{field} ({})", spec.key)),
        }
    }
    Ok(out)
}

/// `None` for a key Istio knows and Ambit cannot check.
fn condition(field: &str, spec: &ConditionSpec) -> Result<Option<Condition>, ConvertError> {
    let values = spec.values.as_deref();
    let not_values = spec.not_values.as_deref();
    let strings = |parse: fn(&str) -> StringMatch| Values {
        values: values.into_iter().flatten().map(|v| parse(v)).collect(),
        not_values: not_values.into_iter().flatten().map(|v| parse(v)).collect(),
    };
    let key = spec.key.as_str();
    if let Some(name) = key.strip_prefix("request.headers[") {
        let Some(name) = name.strip_suffix(']').filter(|n| !n.is_empty()) else {
            return Err(ConvertError::new(
                format!("{field}.key"),
                format!(
                    "{key:?} is not request.headers[<name>]; write e.g. request.headers[x-user]"
                ),
            ));
        };
        // Pseudo-headers (`:path`, `:authority`…) are not headers in the waypoint's request.
        if name.starts_with(':') {
            return Ok(None);
        }
        if !name.bytes().all(is_token_byte) {
            return Err(ConvertError::new(
                format!("{field}.key"),
                format!("{name:?} is not a header name"),
            ));
        }
        return Ok(Some(Condition::RequestHeader {
            name: name.to_ascii_lowercase(),
            values: strings(StringMatch::parse),
        }));
    }
    let condition = match key {
        "source.ip" => Condition::SourceIp(Values {
            values: ip_blocks(&format!("{field}.values"), values)?,
            not_values: ip_blocks(&format!("{field}.notValues"), not_values)?,
        }),
        "source.namespace" => Condition::SourceNamespace(strings(StringMatch::parse)),
        "source.principal" => Condition::SourcePrincipal(Values {
            values: principals(values),
            not_values: principals(not_values),
        }),
        "destination.port" => Condition::DestinationPort(Values {
            values: condition_ports(&format!("{field}.values"), values)?,
            not_values: condition_ports(&format!("{field}.notValues"), not_values)?,
        }),
        _ if UNSUPPORTED_KEYS.contains(&key)
            || key.starts_with("request.auth.claims[")
            || key.starts_with("experimental.envoy.filters.") =>
        {
            return Ok(None)
        }
        _ => {
            return Err(ConvertError::new(
                format!("{field}.key"),
                format!("{key:?} is not a condition key; use request.headers[<name>], source.ip, source.namespace, source.principal or destination.port"),
            ))
        }
    };
    Ok(Some(condition))
}

fn condition_ports(field: &str, list: Option<&[String]>) -> Result<Vec<u16>, ConvertError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(k, port)| {
            port.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    ConvertError::new(
                        format!("{field}[{k}]"),
                        format!("{port:?} is not a port number from 1 to 65535"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
#[path = "policy_l7_tests.rs"]
mod tests;
