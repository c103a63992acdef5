//! Conversions every Gateway API kind shares: references, hostnames, header matches and
//! modifiers, mirrors, label selectors.

use std::collections::BTreeSet;

use super::check::{
    Field, Problems, DNS_SUBDOMAIN, GROUP, HEADER_NAME, HEADER_VALUE, HOSTNAME, KIND, NAMESPACE,
};
use crate::gateway_api::model::{
    BackendRef, HeaderMatch, HeaderModifier, HeaderValue, LabelExpression, LabelSelector,
    LocalObjectRef, Mirror, MirrorFraction, ObjectRef, ParentRef, QueryMatch, SelectorOperator,
    StringMatch, GATEWAY_API_GROUP,
};
use crate::gateway_api::resource::{
    BackendRefSpec, HeaderModifierSpec, LabelSelectorSpec, LocalObjectRefSpec, MirrorSpec,
    NameValueMatchSpec, ObjectRefSpec, ParentRefSpec,
};

/// Most parents one route may name (the CRDs' maxItems).
const MAX_PARENT_REFS: usize = 32;
/// Most matches over all the rules of an HTTPRoute or GRPCRoute (the CRDs' rule).
const MAX_MATCHES_PER_ROUTE: usize = 128;

/// What the HTTPRoute and GRPCRoute schemas require of a rule list as a whole, given each
/// rule's name and number of matches: at most 128 matches in all, and unique rule names.
pub(crate) fn check_rule_list<'a>(
    problems: &mut Problems,
    field: &Field,
    rules: impl Iterator<Item = (Option<&'a str>, usize)>,
) {
    let mut total = 0;
    let mut names = Vec::new();
    for (index, (name, matches)) in rules.enumerate() {
        total += matches;
        names.extend(name.map(|name| (index, name)));
    }
    if total > MAX_MATCHES_PER_ROUTE {
        problems.add(field, format!("{total} matches in all; a route may have at most {MAX_MATCHES_PER_ROUTE} (split it into several routes)"));
    }
    problems.unique(field, names, "rule name");
}

pub(crate) fn group(
    problems: &mut Problems,
    field: &Field,
    value: Option<&str>,
    default: &str,
) -> String {
    let value = value.unwrap_or(default);
    // The empty group is the core group; the pattern itself needs at least one character.
    if !value.is_empty() {
        problems.pattern(field, value, &GROUP);
    }
    value.to_owned()
}

pub(crate) fn kind(
    problems: &mut Problems,
    field: &Field,
    value: Option<&str>,
    default: Option<&str>,
) -> String {
    match value.or(default) {
        Some(value) => {
            problems.pattern(field, value, &KIND);
            value.to_owned()
        }
        None => {
            problems.add(field, "missing; this field is required");
            String::new()
        }
    }
}

/// A required object name (1–253 characters; the schema does not restrict its characters).
pub(crate) fn object_name(problems: &mut Problems, field: &Field, value: Option<&str>) -> String {
    match value {
        Some(name) if !name.is_empty() && name.len() <= 253 => name.to_owned(),
        Some(name) => {
            problems.add(
                field,
                format!("{name:?} is not a valid name (1 to 253 characters)"),
            );
            name.to_owned()
        }
        None => {
            problems.add(field, "missing; this field is required");
            String::new()
        }
    }
}

/// An optional namespace; the referrer's own when absent.
pub(crate) fn namespace(
    problems: &mut Problems,
    field: &Field,
    value: Option<&str>,
    own: &str,
) -> String {
    match value {
        Some(namespace) => {
            problems.pattern(field, namespace, &NAMESPACE);
            namespace.to_owned()
        }
        None => own.to_owned(),
    }
}

pub(crate) fn parent_refs(
    problems: &mut Problems,
    field: &Field,
    refs: &Option<Vec<ParentRefSpec>>,
    own: &str,
) -> Vec<ParentRef> {
    let specs = problems.list(field, refs, MAX_PARENT_REFS);
    let converted: Vec<ParentRef> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| parent_ref(problems, &field.index(i), spec, own))
        .collect();
    // Two references to one parent must each pick a listener (sectionName) or port, and not
    // the same one: otherwise the route's status on that parent would be ambiguous.
    for (i, parent) in converted.iter().enumerate() {
        for (j, other) in converted.iter().enumerate().take(i) {
            let same_parent = (&parent.group, &parent.kind, &parent.namespace, &parent.name)
                == (&other.group, &other.kind, &other.namespace, &other.name);
            if !same_parent {
                continue;
            }
            let unscoped = |p: &ParentRef| p.section_name.is_none() && p.port.is_none();
            if unscoped(parent) || unscoped(other) {
                problems.add(&field.index(i), format!("refers to the same parent as parentRefs[{j}]; give each a sectionName or port"));
            } else if (&parent.section_name, parent.port) == (&other.section_name, other.port) {
                problems.add(
                    &field.index(i),
                    format!(
                        "repeats parentRefs[{j}] (same parent, sectionName and port); remove one"
                    ),
                );
            }
        }
    }
    converted
}

pub(crate) fn parent_ref(
    problems: &mut Problems,
    field: &Field,
    spec: &ParentRefSpec,
    own: &str,
) -> ParentRef {
    let section_name = spec.section_name.as_deref().map(|section| {
        problems.pattern(&field.at("sectionName"), section, &DNS_SUBDOMAIN);
        section.to_owned()
    });
    ParentRef {
        group: group(
            problems,
            &field.at("group"),
            spec.group.as_deref(),
            GATEWAY_API_GROUP,
        ),
        kind: kind(
            problems,
            &field.at("kind"),
            spec.kind.as_deref(),
            Some("Gateway"),
        ),
        namespace: namespace(
            problems,
            &field.at("namespace"),
            spec.namespace.as_deref(),
            own,
        ),
        name: object_name(problems, &field.at("name"), spec.name.as_deref()),
        section_name,
        port: spec
            .port
            .and_then(|port| problems.port(&field.at("port"), port)),
    }
}

/// A backendRef; a Service needs a port. Weight 0–1 000 000, default 1.
pub(crate) fn backend_ref(
    problems: &mut Problems,
    field: &Field,
    spec: &BackendRefSpec,
    own: &str,
) -> BackendRef {
    let group = group(problems, &field.at("group"), spec.group.as_deref(), "");
    let kind = kind(
        problems,
        &field.at("kind"),
        spec.kind.as_deref(),
        Some("Service"),
    );
    let port = spec
        .port
        .and_then(|port| problems.port(&field.at("port"), port));
    if group.is_empty() && kind == "Service" && spec.port.is_none() {
        problems.add(
            &field.at("port"),
            "missing; a Service backend needs the port to send to",
        );
    }
    let weight = match spec.weight {
        Some(weight) => problems
            .within(&field.at("weight"), weight, 0, 1_000_000)
            .unwrap_or(0),
        None => 1,
    };
    BackendRef {
        group,
        kind,
        namespace: namespace(
            problems,
            &field.at("namespace"),
            spec.namespace.as_deref(),
            own,
        ),
        name: object_name(problems, &field.at("name"), spec.name.as_deref()),
        port,
        weight,
    }
}

/// A reference to another object (a Secret by default).
pub(crate) fn object_ref(
    problems: &mut Problems,
    field: &Field,
    spec: &ObjectRefSpec,
    own: &str,
    default_kind: Option<&str>,
) -> ObjectRef {
    ObjectRef {
        group: group(problems, &field.at("group"), spec.group.as_deref(), ""),
        kind: kind(
            problems,
            &field.at("kind"),
            spec.kind.as_deref(),
            default_kind,
        ),
        namespace: namespace(
            problems,
            &field.at("namespace"),
            spec.namespace.as_deref(),
            own,
        ),
        name: object_name(problems, &field.at("name"), spec.name.as_deref()),
    }
}

/// extensionRef, parametersRef: group, kind and name all required.
pub(crate) fn local_ref(
    problems: &mut Problems,
    field: &Field,
    spec: &LocalObjectRefSpec,
) -> LocalObjectRef {
    if spec.group.is_none() {
        problems.add(
            &field.at("group"),
            "missing; this field is required (\"\" for the core group)",
        );
    }
    LocalObjectRef {
        group: group(problems, &field.at("group"), spec.group.as_deref(), ""),
        kind: kind(problems, &field.at("kind"), spec.kind.as_deref(), None),
        name: object_name(problems, &field.at("name"), spec.name.as_deref()),
    }
}

/// `spec.hostnames` of HTTP and gRPC routes (at most 16) and TLS routes (at most 1024).
pub(crate) fn hostnames(
    problems: &mut Problems,
    field: &Field,
    hostnames: &Option<Vec<String>>,
    max: usize,
) -> Vec<String> {
    let list = problems.list(field, hostnames, max);
    for (i, hostname) in list.iter().enumerate() {
        problems.pattern(&field.index(i), hostname, &HOSTNAME);
    }
    list.to_vec()
}

/// `Exact` (default) or `RegularExpression` matches of headers (`case_insensitive`) or query
/// parameters; later entries with an equivalent name are dropped, as the API requires.
pub(crate) fn name_value_matches(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<NameValueMatchSpec>>,
    case_insensitive: bool,
    value_rule: Option<&super::check::Rule>,
    max_value_len: usize,
) -> Vec<(String, StringMatch)> {
    let mut seen = BTreeSet::new();
    let mut matches = Vec::new();
    for (i, spec) in problems.list(field, specs, 16).iter().enumerate() {
        let field = field.index(i);
        let name = match problems.required(&field.at("name"), spec.name.as_ref()) {
            Some(name) => {
                problems.pattern(&field.at("name"), name, &HEADER_NAME);
                name.clone()
            }
            None => continue,
        };
        let Some(value) = problems.required(&field.at("value"), spec.value.as_ref()) else {
            continue;
        };
        let value_field = field.at("value");
        let kind = spec.type_.as_deref().unwrap_or("Exact");
        let matched =
            match problems.one_of(&field.at("type"), kind, &["Exact", "RegularExpression"]) {
                Some("Exact") => {
                    match value_rule {
                        Some(rule) => problems.pattern(&value_field, value, rule),
                        None if value.is_empty() || value.len() > max_value_len => problems.add(
                            &value_field,
                            format!("must be 1 to {max_value_len} characters"),
                        ),
                        None => {}
                    }
                    StringMatch::Exact(value.clone())
                }
                Some(_) => {
                    problems.regex(&value_field, value);
                    StringMatch::RegularExpression(value.clone())
                }
                None => continue,
            };
        let key = if case_insensitive {
            name.to_ascii_lowercase()
        } else {
            name.clone()
        };
        if seen.insert(key) {
            matches.push((name, matched));
        }
    }
    matches
}

pub(crate) fn header_matches(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<NameValueMatchSpec>>,
    value_rule: Option<&super::check::Rule>,
) -> Vec<HeaderMatch> {
    name_value_matches(problems, field, specs, true, value_rule, 4096)
        .into_iter()
        .map(|(name, value)| HeaderMatch { name, value })
        .collect()
}

pub(crate) fn query_matches(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<NameValueMatchSpec>>,
) -> Vec<QueryMatch> {
    name_value_matches(problems, field, specs, false, None, 1024)
        .into_iter()
        .map(|(name, value)| QueryMatch { name, value })
        .collect()
}

/// Request or response header modifier: set, add (at most 16 each, names unique) and remove.
pub(crate) fn header_modifier(
    problems: &mut Problems,
    field: &Field,
    spec: &HeaderModifierSpec,
) -> HeaderModifier {
    let mut values = |name: &str, list: &Option<Vec<NameValueMatchSpec>>| -> Vec<HeaderValue> {
        let field = field.at(name);
        let mut out: Vec<HeaderValue> = Vec::new();
        for (i, entry) in problems.list(&field, list, 16).iter().enumerate() {
            let field = field.index(i);
            let name = problems
                .required(&field.at("name"), entry.name.as_ref())
                .cloned()
                .unwrap_or_default();
            let value = problems
                .required(&field.at("value"), entry.value.as_ref())
                .cloned()
                .unwrap_or_default();
            if !name.is_empty() {
                problems.pattern(&field.at("name"), &name, &HEADER_NAME);
            }
            if entry.value.is_some() {
                problems.pattern(&field.at("value"), &value, &HEADER_VALUE);
            }
            if out.iter().any(|other| other.name == name) {
                problems.add(
                    &field.at("name"),
                    format!("header {name:?} is listed twice; list each header once"),
                );
            }
            out.push(HeaderValue { name, value });
        }
        out
    };
    let set = values("set", &spec.set);
    let add = values("add", &spec.add);
    let remove_field = field.at("remove");
    let remove = problems.list(&remove_field, &spec.remove, 16).to_vec();
    for (i, name) in remove.iter().enumerate() {
        if remove[..i].contains(name) {
            problems.add(
                &remove_field.index(i),
                format!("header {name:?} is listed twice; list each header once"),
            );
        }
    }
    HeaderModifier { set, add, remove }
}

/// A request mirror: `percent` or `fraction` (not both), every request when neither.
pub(crate) fn mirror(
    problems: &mut Problems,
    field: &Field,
    spec: &MirrorSpec,
    own: &str,
) -> Mirror {
    let backend = match problems.required(&field.at("backendRef"), spec.backend_ref.as_ref()) {
        Some(backend) => backend_ref(problems, &field.at("backendRef"), backend, own),
        None => backend_ref(
            problems,
            &field.at("backendRef"),
            &BackendRefSpec::default(),
            own,
        ),
    };
    let fraction = match (spec.percent, &spec.fraction) {
        (Some(_), Some(_)) => {
            problems.add(
                &field.at("percent"),
                "percent and fraction exclude each other; give one",
            );
            MirrorFraction {
                numerator: 0,
                denominator: 100,
            }
        }
        (Some(percent), None) => MirrorFraction {
            numerator: problems
                .within(&field.at("percent"), percent, 0, 100)
                .unwrap_or(0),
            denominator: 100,
        },
        (None, Some(fraction)) => {
            let field = field.at("fraction");
            let denominator = match fraction.denominator {
                Some(d) => problems
                    .within(&field.at("denominator"), d, 1, i32::MAX)
                    .unwrap_or(1),
                None => 100,
            };
            let numerator =
                match problems.required(&field.at("numerator"), fraction.numerator.as_ref()) {
                    Some(&n) => problems
                        .within(&field.at("numerator"), n, 0, i32::MAX)
                        .unwrap_or(0),
                    None => 0,
                };
            if numerator > denominator {
                problems.add(
                    &field.at("numerator"),
                    format!("{numerator} is larger than the denominator {denominator}"),
                );
            }
            MirrorFraction {
                numerator,
                denominator,
            }
        }
        (None, None) => MirrorFraction {
            numerator: 1,
            denominator: 1,
        },
    };
    Mirror { backend, fraction }
}

pub(crate) fn label_selector(
    problems: &mut Problems,
    field: &Field,
    spec: &LabelSelectorSpec,
) -> LabelSelector {
    let mut match_expressions = Vec::new();
    for (i, expression) in spec.match_expressions.iter().flatten().enumerate() {
        let field = field.at("matchExpressions").index(i);
        let key = problems
            .required(&field.at("key"), expression.key.as_ref())
            .cloned()
            .unwrap_or_default();
        let values = expression.values.clone().unwrap_or_default();
        let operator = match problems
            .required(&field.at("operator"), expression.operator.as_ref())
            .map(String::as_str)
        {
            Some("In") => SelectorOperator::In,
            Some("NotIn") => SelectorOperator::NotIn,
            Some("Exists") => SelectorOperator::Exists,
            Some("DoesNotExist") => SelectorOperator::DoesNotExist,
            Some(other) => {
                problems.add(
                    &field.at("operator"),
                    format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                );
                continue;
            }
            None => continue,
        };
        let needs_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values == values.is_empty() {
            let problem = if needs_values {
                "In and NotIn need at least one value"
            } else {
                "Exists and DoesNotExist take no values"
            };
            problems.add(&field.at("values"), problem);
        }
        match_expressions.push(LabelExpression {
            key,
            operator,
            values,
        });
    }
    LabelSelector {
        match_labels: spec.match_labels.clone().unwrap_or_default(),
        match_expressions,
    }
}
