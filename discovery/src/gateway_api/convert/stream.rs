//! TLSRoute and TCPRoute rules, and ReferenceGrants.

use super::check::{Field, Problems};
use super::common::{backend_ref, group, kind};
use crate::gateway_api::model::{GrantFrom, GrantTo, StreamRule};
use crate::gateway_api::resource::{ReferenceGrantSpec, StreamRuleSpec};

/// `spec.rules` of a TLS or TCP route: required, at most `max_rules` (1 from v1 on, 16 in
/// v1alpha2), each with 1–16 backends.
pub(crate) fn rules(
    problems: &mut Problems,
    field: &Field,
    specs: &Option<Vec<StreamRuleSpec>>,
    max_rules: usize,
    own: &str,
) -> Vec<StreamRule> {
    if specs.as_ref().is_none_or(Vec::is_empty) {
        problems.add(
            field,
            "missing; a stream route needs a rule with backendRefs",
        );
    }
    let specs = problems.list(field, specs, max_rules);
    problems.unique(
        field,
        specs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.name.as_deref()?))),
        "rule name",
    );
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let field = field.index(i);
            let backends_field = field.at("backendRefs");
            if spec.backend_refs.as_ref().is_none_or(Vec::is_empty) {
                problems.add(&backends_field, "missing; give at least one backend");
            }
            StreamRule {
                name: super::rule_name(problems, &field.at("name"), &spec.name),
                backends: problems
                    .list(&backends_field, &spec.backend_refs, 16)
                    .iter()
                    .enumerate()
                    .map(|(j, b)| backend_ref(problems, &backends_field.index(j), b, own))
                    .collect(),
            }
        })
        .collect()
}

/// `spec.from` and `spec.to` of a ReferenceGrant: 1–16 entries each, group and kind required.
pub(crate) fn grant(
    problems: &mut Problems,
    field: &Field,
    spec: &ReferenceGrantSpec,
) -> (Vec<GrantFrom>, Vec<GrantTo>) {
    for (name, empty) in [
        ("from", spec.from.as_ref().is_none_or(Vec::is_empty)),
        ("to", spec.to.as_ref().is_none_or(Vec::is_empty)),
    ] {
        if empty {
            problems.add(
                &field.at(name),
                "missing; a ReferenceGrant needs at least one entry here",
            );
        }
    }
    let from_field = field.at("from");
    let from = problems
        .list(&from_field, &spec.from, 16)
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = from_field.index(i);
            let namespace = problems
                .required(&field.at("namespace"), f.namespace.as_ref())
                .cloned()
                .unwrap_or_default();
            if !namespace.is_empty() {
                problems.pattern(&field.at("namespace"), &namespace, &super::check::NAMESPACE);
            }
            GrantFrom {
                group: required_group(problems, &field, &f.group),
                kind: kind(problems, &field.at("kind"), f.kind.as_deref(), None),
                namespace,
            }
        })
        .collect();
    let to_field = field.at("to");
    let to = problems
        .list(&to_field, &spec.to, 16)
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = to_field.index(i);
            if let Some(name) = t.name.as_deref().filter(|n| n.is_empty() || n.len() > 253) {
                problems.add(
                    &field.at("name"),
                    format!("{name:?} is not a valid name (1 to 253 characters)"),
                );
            }
            GrantTo {
                group: required_group(problems, &field, &t.group),
                kind: kind(problems, &field.at("kind"), t.kind.as_deref(), None),
                name: t.name.clone(),
            }
        })
        .collect();
    (from, to)
}

fn required_group(problems: &mut Problems, field: &Field, value: &Option<String>) -> String {
    if value.is_none() {
        problems.add(
            &field.at("group"),
            "missing; this field is required (\"\" for the core group)",
        );
    }
    group(problems, &field.at("group"), value.as_deref(), "")
}
