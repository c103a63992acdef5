//! `security.istio.io` AuthorizationPolicy: the resource as written, and its conversion to the
//! compact L4 form in [`crate::policy`].
//!
//! The spec types reject unknown fields: a misspelt field in a security policy that was silently
//! ignored could widen access, so the operator hears about it instead. L7 fields are parsed and
//! validated for the waypoint ([`super::policy_l7`]) and recorded on the rule for ztunnel; see
//! `crate::policy` for their L4 meaning.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::policy_l7 as l7;
use super::{name, namespace_of, ConvertError};
use crate::policy::{Action, AuthorizationPolicy, Operation, Rule, Source, StringMatch};

/// An AuthorizationPolicy object (`security.istio.io/v1` or `v1beta1`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicyResource {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    pub selector: Option<SelectorSpec>,
    pub target_ref: Option<TargetRefSpec>,
    pub target_refs: Option<Vec<TargetRefSpec>>,
    /// `ALLOW` (the default) or `DENY`; `AUDIT` and `CUSTOM` are rejected.
    pub action: Option<String>,
    /// Only meaningful with `CUSTOM`, which is rejected; accepted so the error says why.
    pub provider: Option<IgnoredAny>,
    pub rules: Option<Vec<RuleSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorSpec {
    pub match_labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRefSpec {
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    pub from: Option<Vec<FromSpec>>,
    pub to: Option<Vec<ToSpec>>,
    /// Conditions: L7 for ztunnel whatever their key; see `policy_l7::conditions`.
    pub when: Option<Vec<ConditionSpec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FromSpec {
    pub source: Option<SourceSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    pub principals: Option<Vec<String>>,
    pub not_principals: Option<Vec<String>>,
    /// `<namespace>/<service account>`: shorthand for a principal in any trust domain.
    pub service_accounts: Option<Vec<String>>,
    pub not_service_accounts: Option<Vec<String>>,
    pub namespaces: Option<Vec<String>>,
    pub not_namespaces: Option<Vec<String>>,
    pub ip_blocks: Option<Vec<String>>,
    pub not_ip_blocks: Option<Vec<String>>,
    // L7: JWT principals and client addresses from X-Forwarded-For.
    pub request_principals: Option<Vec<String>>,
    pub not_request_principals: Option<Vec<String>>,
    pub remote_ip_blocks: Option<Vec<String>>,
    pub not_remote_ip_blocks: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToSpec {
    pub operation: Option<OperationSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    pub ports: Option<Vec<PortSpec>>,
    pub not_ports: Option<Vec<PortSpec>>,
    // L7.
    pub hosts: Option<Vec<String>>,
    pub not_hosts: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub not_methods: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub not_paths: Option<Vec<String>>,
}

/// Istio's API types ports as strings ("8080"), but YAML authors often write bare numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConditionSpec {
    pub key: String,
    pub values: Option<Vec<String>>,
    pub not_values: Option<Vec<String>>,
}

/// Converts an AuthorizationPolicy to the compact form.
pub fn authorization_policy(
    resource: &AuthorizationPolicyResource,
) -> Result<AuthorizationPolicy, ConvertError> {
    let spec = &resource.spec;
    let action = match spec.action.as_deref() {
        None | Some("ALLOW") => Action::Allow,
        Some("DENY") => Action::Deny,
        Some("AUDIT") => {
            return Err(ConvertError::new(
                "spec.action",
                "AUDIT is not supported; an AUDIT policy only marks requests for audit logging and never changes access, so Ambit leaves it out (Ambit enforces ALLOW and DENY)",
            ))
        }
        Some("CUSTOM") => {
            return Err(ConvertError::new(
                "spec.action",
                "CUSTOM (external authorization) is not supported; Ambit enforces ALLOW and DENY, so express the policy as those",
            ))
        }
        Some(other) => {
            return Err(ConvertError::new(
                "spec.action",
                format!("{other:?} is not an action; use ALLOW or DENY"),
            ))
        }
    };
    let namespace = namespace_of(&resource.metadata);
    let target_refs = l7::target_refs(spec, &namespace)?;
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .filter(|labels| !labels.is_empty());
    if selector.is_some() && !target_refs.is_empty() {
        return Err(ConvertError::new(
            "spec.selector",
            "set either selector (workloads) or targetRef(s) (a waypoint or gateway), not both",
        ));
    }
    let rules = spec
        .rules
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, rule)| convert_rule(&format!("spec.rules[{i}]"), rule))
        .collect::<Result<_, _>>()?;
    Ok(AuthorizationPolicy {
        name: name(&resource.metadata)?.to_owned(),
        namespace,
        action,
        selector,
        target_refs,
        rules,
        invalid: None,
    })
}

/// What converting a rule's entries notes about the rule as a whole.
#[derive(Default)]
struct RuleNotes {
    /// Fields only an L7 proxy checks ([`Rule::l7_fields`], for ztunnel).
    l7_fields: Vec<String>,
    /// Fields no Ambit proxy checks ([`Rule::unsupported`]).
    unsupported: Vec<String>,
}

fn convert_rule(field: &str, rule: &RuleSpec) -> Result<Rule, ConvertError> {
    let mut notes = RuleNotes::default();
    if rule.when.is_some() {
        notes.l7_fields.push("when".to_owned());
    }
    // An empty `from` or `to` list constrains nothing, as in Istio (it builds the rule from the
    // entries present): reading it as "matches nothing" would make a DENY rule deny nothing.
    let from = match rule.from.as_ref().filter(|entries| !entries.is_empty()) {
        None => None,
        Some(entries) => Some(
            entries
                .iter()
                .enumerate()
                .map(|(j, entry)| {
                    let source = entry.source.clone().unwrap_or_default();
                    convert_source(&format!("{field}.from[{j}].source"), &source, &mut notes)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let to = match rule.to.as_ref().filter(|entries| !entries.is_empty()) {
        None => None,
        Some(entries) => Some(
            entries
                .iter()
                .enumerate()
                .map(|(j, entry)| {
                    let op = entry.operation.clone().unwrap_or_default();
                    convert_operation(&format!("{field}.to[{j}].operation"), &op, &mut notes)
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let when = l7::conditions(field, rule.when.as_deref(), &mut notes.unsupported)?;
    let RuleNotes {
        mut l7_fields,
        unsupported,
    } = notes;
    l7_fields.dedup();
    Ok(Rule {
        from,
        to,
        has_l7_fields: !l7_fields.is_empty(),
        l7_fields,
        when,
        unsupported,
    })
}

fn convert_source(
    field: &str,
    source: &SourceSpec,
    notes: &mut RuleNotes,
) -> Result<Source, ConvertError> {
    // JWT principals need RequestAuthentication, and remote IPs a trusted X-Forwarded-For:
    // Ambit has neither, so these are recognised and never matched (see `Rule::unsupported`).
    for (name, list) in [
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ] {
        if let Some(list) = list {
            notes.l7_fields.push(name.to_owned());
            // An empty list is an unset field in Istio: it constrains nothing.
            if !list.is_empty() {
                notes.unsupported.push(format!("{field}.{name}"));
            }
        }
    }
    if source.principals.is_some() && source.service_accounts.is_some() {
        return Err(ConvertError::new(
            format!("{field}.serviceAccounts"),
            "cannot be combined with principals in one source; use separate from entries",
        ));
    }
    let service_accounts = |name: &str, list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(k, sa)| match sa.split_once('/') {
                // Any trust domain, this namespace and account: a suffix of the principal.
                Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
                    Ok(StringMatch::Suffix(format!("/ns/{ns}/sa/{sa}")))
                }
                _ => Err(ConvertError::new(
                    format!("{field}.{name}[{k}]"),
                    format!("{sa:?} is not <namespace>/<service account>"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut principal_matches = principals(source.principals.as_deref());
    principal_matches.extend(service_accounts(
        "serviceAccounts",
        &source.service_accounts,
    )?);
    let mut not_principal_matches = principals(source.not_principals.as_deref());
    not_principal_matches.extend(service_accounts(
        "notServiceAccounts",
        &source.not_service_accounts,
    )?);
    let patterns = |list: &Option<Vec<String>>| -> Vec<StringMatch> {
        list.iter()
            .flatten()
            .map(|p| StringMatch::parse(p))
            .collect()
    };
    Ok(Source {
        principals: principal_matches,
        not_principals: not_principal_matches,
        namespaces: patterns(&source.namespaces),
        not_namespaces: patterns(&source.not_namespaces),
        ip_blocks: ip_blocks(&format!("{field}.ipBlocks"), source.ip_blocks.as_deref())?,
        not_ip_blocks: ip_blocks(
            &format!("{field}.notIpBlocks"),
            source.not_ip_blocks.as_deref(),
        )?,
    })
}

/// Principal patterns. Istio principals omit the scheme; accept it anyway since it is a common
/// slip.
pub(super) fn principals(list: Option<&[String]>) -> Vec<StringMatch> {
    list.into_iter()
        .flatten()
        .map(|p| StringMatch::parse(p.strip_prefix("spiffe://").unwrap_or(p)))
        .collect()
}

fn convert_operation(
    field: &str,
    op: &OperationSpec,
    notes: &mut RuleNotes,
) -> Result<Operation, ConvertError> {
    for (name, present) in [
        ("hosts", op.hosts.is_some()),
        ("notHosts", op.not_hosts.is_some()),
        ("methods", op.methods.is_some()),
        ("notMethods", op.not_methods.is_some()),
        ("paths", op.paths.is_some()),
        ("notPaths", op.not_paths.is_some()),
    ] {
        if present {
            notes.l7_fields.push(name.to_owned());
        }
    }
    let list = |name: &str, list: &Option<Vec<String>>, parse: l7::PatternParser| {
        l7::patterns(&format!("{field}.{name}"), list.as_deref(), parse)
    };
    Ok(Operation {
        ports: ports(&format!("{field}.ports"), op.ports.as_deref())?,
        not_ports: ports(&format!("{field}.notPorts"), op.not_ports.as_deref())?,
        hosts: list("hosts", &op.hosts, l7::host)?,
        not_hosts: list("notHosts", &op.not_hosts, l7::host)?,
        methods: list("methods", &op.methods, l7::method)?,
        not_methods: list("notMethods", &op.not_methods, l7::method)?,
        paths: list("paths", &op.paths, l7::path)?,
        not_paths: list("notPaths", &op.not_paths, l7::path)?,
    })
}

fn ports(field: &str, list: Option<&[PortSpec]>) -> Result<Vec<u16>, ConvertError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(k, port)| {
            let parsed = match port {
                PortSpec::Number(n) => u16::try_from(*n).ok(),
                PortSpec::Text(text) => text.trim().parse::<u16>().ok(),
            };
            parsed.filter(|p| *p != 0).ok_or_else(|| {
                ConvertError::new(
                    format!("{field}[{k}]"),
                    format!("{port:?} is not a port number from 1 to 65535"),
                )
            })
        })
        .collect()
}

pub(super) fn ip_blocks(field: &str, list: Option<&[String]>) -> Result<Vec<IpNet>, ConvertError> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(k, block)| {
            let block = block.trim();
            block
                .parse::<IpNet>()
                .or_else(|_| block.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConvertError::new(
                        format!("{field}[{k}]"),
                        format!("{block:?} is not an IP address or CIDR block such as 10.0.0.0/16"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
