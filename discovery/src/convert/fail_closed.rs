//! The fail-closed form of an AuthorizationPolicy that cannot be understood (DESIGN §7).
//!
//! Dropping such a policy would widen access: the only ALLOW policy of a workload gone makes it
//! allow-all, a DENY gone lifts its denial. Instead the object is read again leniently, as a
//! plain YAML value, for what can safely be known — its name and namespace, its action, its
//! selector, its targetRefs — and kept in a form that can only narrow access:
//!
//! | what could be read | kept as |
//! |---|---|
//! | action ALLOW (or none) | ALLOW without rules (allows nothing) for its selector |
//! | action DENY | DENY with one empty rule (denies everything) for its selector |
//! | any other action, or none readable | the DENY form: an unreadable action may have been meant as DENY, and deny-all allows no more than either reading would |
//! | action AUDIT | left out: an AUDIT policy never changes access, so ignoring it is exact |
//! | selector unreadable | every workload in its namespace (every namespace from the root namespace) |
//! | namespace unreadable | the root namespace: the widest scope it could have had |
//! | targetRefs readable and no selector | still bound to them, so ztunnel leaves it to the waypoint (a Gateway, GatewayClass or Service target gets its canonical group, so a wrong group does not unbind it) |
//!
//! The broken policy carries [`Invalid`] with the field, the problem and what the policy does
//! until it is fixed, so logs, `/config_dump` and the access log can say so.

use serde_yaml::{Mapping, Value};

use super::policy::{authorization_policy, AuthorizationPolicyResource};
use super::ConvertError;
use crate::model::{Labels, DEFAULT_NAMESPACE};
use crate::policy::{Action, AuthorizationPolicy, Invalid, Rule, TargetRef, GATEWAY_GROUP};

/// What the fail-closed form needs beyond the object itself.
#[derive(Debug, Clone, Copy)]
pub struct FailClosedScope<'a> {
    /// Where policies apply mesh-wide (`SnapshotOptions::root_namespace`): a policy whose
    /// namespace cannot be read is placed there, the widest scope it could have had.
    pub root_namespace: &'a str,
    /// The name of a policy whose `metadata.name` cannot be read (only possible in manifests;
    /// the loader names it after its file and document).
    pub unnamed: &'a str,
}

/// Converts a decoded AuthorizationPolicy; if decoding (`decoded`) or conversion failed, builds
/// the fail-closed form from the object as a plain value (`raw`, only evaluated then).
///
/// `Ok` is the policy to enforce: the converted one, or the fail-closed one with
/// [`AuthorizationPolicy::invalid`] set (report it). `Err` only for a broken policy that has no
/// effect on access (AUDIT): leave it out and report the error.
pub fn authorization_policy_or_fail_closed(
    decoded: Result<AuthorizationPolicyResource, ConvertError>,
    raw: impl FnOnce() -> Value,
    scope: &FailClosedScope<'_>,
) -> Result<AuthorizationPolicy, ConvertError> {
    let converted = decoded
        .and_then(|resource| authorization_policy(&resource))
        .and_then(|policy| gateway_classes_from_root(policy, scope));
    match converted {
        Ok(policy) => Ok(policy),
        Err(error) => fail_closed(&raw(), error, scope),
    }
}

/// Istio attaches a GatewayClass policy from the root namespace only: from any other, one
/// namespace's policy would govern every Gateway of the class.
fn gateway_classes_from_root(
    policy: AuthorizationPolicy,
    scope: &FailClosedScope<'_>,
) -> Result<AuthorizationPolicy, ConvertError> {
    if policy.namespace == scope.root_namespace {
        return Ok(policy);
    }
    match policy.target_refs.iter().find(|r| r.kind == "GatewayClass") {
        None => Ok(policy),
        Some(class) => Err(ConvertError::new(
            "spec.targetRefs",
            format!(
                "targets GatewayClass {}, which only a policy in the root namespace {} may do; target this namespace's Gateway instead, or move the policy there",
                class.name, scope.root_namespace
            ),
        )),
    }
}

/// What `spec.action` turned out to be.
enum ReadAction {
    Allow,
    Deny,
    Audit,
    /// Not ALLOW, DENY or AUDIT; the reason goes into the policy's `enforced_as`.
    Unreadable(&'static str),
}

/// The fail-closed form of the policy `raw`, which failed with `error`.
pub fn fail_closed(
    raw: &Value,
    error: ConvertError,
    scope: &FailClosedScope<'_>,
) -> Result<AuthorizationPolicy, ConvertError> {
    let mut notes: Vec<&str> = Vec::new();
    let meta = raw.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .unwrap_or(scope.unnamed)
        .to_owned();
    let namespace = read_namespace(meta).unwrap_or_else(|| {
        notes.push("its metadata.namespace could not be read, so it is placed in the root namespace, the widest scope it could have had");
        scope.root_namespace.to_owned()
    });
    let empty = Mapping::new();
    let spec = match raw.get("spec") {
        None | Some(Value::Null) => Some(&empty),
        Some(Value::Mapping(spec)) => Some(spec),
        Some(_) => None,
    };

    let action = match spec {
        None => ReadAction::Unreadable("its spec is not a mapping, so its action cannot be read; denying is the only reading that cannot allow more than it was meant to"),
        Some(spec) => read_action(spec.get("action")),
    };
    let action = match action {
        ReadAction::Audit => {
            let mut error = error;
            if error.field != "spec.action" {
                error.problem.push_str(
                    "; as an AUDIT policy it never changes access, so it is left out meanwhile",
                );
            }
            return Err(error);
        }
        ReadAction::Allow => Action::Allow,
        ReadAction::Deny => Action::Deny,
        ReadAction::Unreadable(why) => {
            notes.push(why);
            Action::Deny
        }
    };

    let selector = match spec.map(read_selector) {
        Some(Ok(selector)) => selector,
        Some(Err(())) => {
            notes.push("its selector could not be read, so it applies to every workload it could have selected");
            None
        }
        None => None,
    };
    let selector_present = spec
        .and_then(|spec| spec.get("selector"))
        .is_some_and(|s| !s.is_null());
    let target_refs = match spec.map(read_target_refs) {
        Some(Some(refs)) if refs.is_empty() => refs,
        Some(Some(refs)) if !selector_present => refs,
        Some(_) => {
            notes.push("its targetRefs could not be read or come with a selector, so it applies to the workloads as well");
            Vec::new()
        }
        None => Vec::new(),
    };

    let rules = match action {
        Action::Allow => Vec::new(),
        // One rule without from/to matches every connection.
        Action::Deny => vec![Rule::default()],
    };
    let enforced_as = describe(
        action,
        &namespace,
        selector.as_ref(),
        &target_refs,
        &notes,
        scope,
    );
    Ok(AuthorizationPolicy {
        name,
        namespace,
        action,
        selector,
        target_refs,
        rules,
        invalid: Some(Invalid {
            field: error.field,
            problem: error.problem,
            enforced_as,
        }),
    })
}

/// `metadata.namespace`, defaulting like `kubectl apply`; `None` when it cannot be read.
fn read_namespace(meta: Option<&Value>) -> Option<String> {
    match meta {
        None | Some(Value::Null) => Some(DEFAULT_NAMESPACE.to_owned()),
        Some(Value::Mapping(meta)) => match meta.get("namespace") {
            None | Some(Value::Null) => Some(DEFAULT_NAMESPACE.to_owned()),
            Some(Value::String(ns)) if ns.is_empty() => Some(DEFAULT_NAMESPACE.to_owned()),
            Some(Value::String(ns)) => Some(ns.clone()),
            Some(_) => None,
        },
        Some(_) => None,
    }
}

fn read_action(action: Option<&Value>) -> ReadAction {
    const UNKNOWN: &str = "its action is not ALLOW or DENY; it may have been meant as DENY, and denying is the only reading that cannot allow more than either would";
    match action {
        None | Some(Value::Null) => ReadAction::Allow,
        Some(Value::String(action)) => match action.as_str() {
            "ALLOW" => ReadAction::Allow,
            "DENY" => ReadAction::Deny,
            "AUDIT" => ReadAction::Audit,
            "CUSTOM" => ReadAction::Unreadable("Ambit has no external authorizer to ask, so it denies everything the CUSTOM policy could have denied"),
            _ => ReadAction::Unreadable(UNKNOWN),
        },
        Some(_) => ReadAction::Unreadable(UNKNOWN),
    }
}

/// `spec.selector.matchLabels`, as strictly as the resource type reads it; `Err` if unreadable.
fn read_selector(spec: &Mapping) -> Result<Option<Labels>, ()> {
    let selector = match spec.get("selector") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Mapping(selector)) => selector,
        Some(_) => return Err(()),
    };
    if selector
        .keys()
        .any(|key| key.as_str() != Some("matchLabels"))
    {
        return Err(());
    }
    let labels = match selector.get("matchLabels") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Mapping(labels)) => labels,
        Some(_) => return Err(()),
    };
    let mut out = Labels::new();
    for (key, value) in labels {
        match (key.as_str(), value.as_str()) {
            (Some(key), Some(value)) => {
                out.insert(key.to_owned(), value.to_owned());
            }
            _ => return Err(()),
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `spec.targetRef` and `spec.targetRefs`; `None` if any is unreadable.
fn read_target_refs(spec: &Mapping) -> Option<Vec<TargetRef>> {
    let mut refs = Vec::new();
    match spec.get("targetRef") {
        None | Some(Value::Null) => {}
        Some(one) => refs.push(read_target_ref(one)?),
    }
    match spec.get("targetRefs") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(list)) => {
            for one in list {
                refs.push(read_target_ref(one)?);
            }
        }
        Some(_) => return None,
    }
    Some(refs)
}

fn read_target_ref(value: &Value) -> Option<TargetRef> {
    let map = value.as_mapping()?;
    for (key, value) in map {
        let known = matches!(key.as_str()?, "group" | "kind" | "name" | "namespace");
        if !known || value.as_str().is_none() {
            return None;
        }
    }
    let field = |name: &str| {
        map.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let kind = field("kind")?;
    // A missing or misspelt group must not unbind the policy from the object its author
    // named: the waypoint looks targets up by canonical group, so the kinds it serves get
    // theirs. Other kinds keep what was written and bind to nothing.
    let group = match kind {
        "Gateway" | "GatewayClass" => GATEWAY_GROUP,
        "Service" => "",
        _ => field("group").unwrap_or(""),
    };
    Some(TargetRef {
        group: group.to_owned(),
        kind: kind.to_owned(),
        name: field("name")?.to_owned(),
    })
}

/// What the fail-closed form does, for [`Invalid::enforced_as`].
fn describe(
    action: Action,
    namespace: &str,
    selector: Option<&Labels>,
    target_refs: &[TargetRef],
    notes: &[&str],
    scope: &FailClosedScope<'_>,
) -> String {
    let effect = match action {
        Action::Allow => "allows nothing to",
        Action::Deny => "denies every connection to",
    };
    let mut text = if target_refs.is_empty() {
        let workloads = match selector {
            Some(labels) => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("the workloads labelled {}", labels.join(","))
            }
            None => "every workload".to_owned(),
        };
        let place = if namespace == scope.root_namespace {
            format!("in every namespace (it is in the root namespace {namespace})")
        } else {
            format!("in namespace {namespace}")
        };
        format!("{effect} {workloads} {place}")
    } else {
        format!(
            "{effect} its targets {} (ztunnel leaves a targetRefs policy to the waypoint)",
            target_refs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if action == Action::Allow {
        text.push_str(", while other ALLOW policies still apply");
    }
    for note in notes {
        text.push_str("; ");
        text.push_str(note);
    }
    text
}

#[cfg(test)]
#[path = "fail_closed_tests.rs"]
mod tests;
