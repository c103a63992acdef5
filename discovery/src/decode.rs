//! Manifest text → typed Kubernetes objects → model, with errors that point into the file.
//!
//! Each YAML document is first read as a generic value (so its `kind` picks the type, and a
//! syntax error is reported as such), then decoded into the k8s-openapi type (or our
//! AuthorizationPolicy type) with `serde_path_to_error` so a type error names its field path,
//! then converted by [`crate::convert`], the same code the Kubernetes API source will use.
//!
//! An AuthorizationPolicy that cannot be understood does not fail the load: it is kept in its
//! fail-closed form ([`crate::convert::fail_closed`]) and reported as a non-blocking
//! [`ManifestError::Policy`], so a typo in one policy neither opens the workloads it guards nor
//! freezes every other edit.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_yaml::Value;

use crate::convert::{self, AuthorizationPolicyResource, ConvertError, FailClosedScope};
use crate::error::{Location, ManifestError, ManifestErrors};
use crate::model::{self, Namespace, Secret, Service, Workload, DEFAULT_NAMESPACE};
use crate::policy::AuthorizationPolicy;
use crate::snapshot::{Conflict, Objects, Snapshot, SnapshotOptions};

/// The kinds the mesh keeps; everything else is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    Secret,
    AuthorizationPolicy,
}

impl Kind {
    fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Namespace" => Kind::Namespace,
            "Pod" => Kind::Pod,
            "Service" => Kind::Service,
            "EndpointSlice" => Kind::EndpointSlice,
            "Secret" => Kind::Secret,
            "AuthorizationPolicy" => Kind::AuthorizationPolicy,
            _ => return None,
        })
    }

    /// The API group (empty for the core group) whose objects of this kind we read.
    fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::Secret => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::AuthorizationPolicy => "security.istio.io",
        }
    }

    fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace | Kind::Pod | Kind::Service | Kind::Secret => &["v1"],
            Kind::EndpointSlice => &["discovery.k8s.io/v1"],
            Kind::AuthorizationPolicy => &["security.istio.io/v1", "security.istio.io/v1beta1"],
        }
    }
}

/// A converted object, ready to be added to [`Objects`].
enum Converted {
    Namespace(Namespace),
    Workload(Workload),
    Service(Service),
    EndpointSlice(model::EndpointSlice),
    Secret(Secret),
    Policy(AuthorizationPolicy),
}

impl Converted {
    fn key(&self) -> (Kind, &str, &str) {
        match self {
            Converted::Namespace(o) => (Kind::Namespace, "", &o.name),
            Converted::Workload(o) => (Kind::Pod, &o.namespace, &o.name),
            Converted::Service(o) => (Kind::Service, &o.namespace, &o.name),
            Converted::EndpointSlice(o) => (Kind::EndpointSlice, &o.namespace, &o.name),
            Converted::Secret(o) => (Kind::Secret, &o.namespace, &o.name),
            Converted::Policy(o) => (Kind::AuthorizationPolicy, &o.namespace, &o.name),
        }
    }
}

/// Gathers objects from many files, remembering where each came from, and every problem.
pub(crate) struct Collector {
    objects: Objects,
    origins: HashMap<(Kind, String, String), Location>,
    errors: Vec<ManifestError>,
    /// Where a policy whose namespace cannot be read is placed (the widest scope).
    root_namespace: String,
}

/// What a load gave when nothing blocked it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) snapshot: Snapshot,
    /// Problems that did not stop the load: AuthorizationPolicies enforced fail-closed or left
    /// out, each a [`ManifestError::Policy`].
    pub(crate) problems: Vec<ManifestError>,
}

impl Collector {
    pub(crate) fn new(options: &SnapshotOptions) -> Self {
        Collector {
            objects: Objects::default(),
            origins: HashMap::new(),
            errors: Vec::new(),
            root_namespace: options.root_namespace.clone(),
        }
    }

    pub(crate) fn read_error(&mut self, path: &Path, source: io::Error) {
        self.errors.push(ManifestError::Read {
            path: path.to_owned(),
            source,
        });
    }

    /// Decodes every document of one file.
    pub(crate) fn add_file(&mut self, path: &Path, text: &str) {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let location = Location {
                file: path.to_owned(),
                document: index + 1,
            };
            let parsed = Value::deserialize(document).and_then(|mut value| {
                // YAML merge keys (`<<: *defaults`) are plain keys until applied.
                value.apply_merge().map(|()| value)
            });
            match parsed {
                Ok(value) => self.add_value(value, &location, ""),
                Err(err) => {
                    self.errors.push(ManifestError::Yaml {
                        location,
                        message: err.to_string(),
                    });
                    // The parser cannot resynchronise after a syntax error; later documents
                    // of this file are not read.
                    break;
                }
            }
        }
    }

    /// Decodes one object; `prefix` is the field path of a `List` item (`items[2].`).
    fn add_value(&mut self, value: Value, location: &Location, prefix: &str) {
        if value.is_null() {
            return; // an empty document, e.g. a trailing `---`
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let object = describe(&kind, &value);
        let field_error = |field: &str, message: String| ManifestError::Field {
            location: location.clone(),
            object: object.clone(),
            field: format!("{prefix}{field}"),
            message,
        };
        if kind.is_empty() {
            let message = "missing; every manifest needs apiVersion and kind".to_owned();
            self.errors.push(field_error("kind", message));
            return;
        }
        // `kubectl get -o yaml` writes a List of objects.
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            if let Some(Value::Sequence(items)) = value.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.add_value(item.clone(), location, &format!("{prefix}items[{i}]."));
                }
            }
            return;
        }
        let Some(known) = Kind::parse(&kind) else {
            tracing::debug!(file = %location.file.display(), document = location.document, %kind, "kind not used by the mesh; skipped");
            return;
        };
        if !known.api_versions().contains(&api_version.as_str()) {
            // Other projects' CRDs share kind names (Knative's Service, say): only objects of
            // our kinds' own API groups are ours to judge; a wrong version in them is an error.
            let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
            if group != known.group() {
                tracing::debug!(file = %location.file.display(), document = location.document, %kind, %api_version, "kind of another API group; skipped");
                return;
            }
            let message = format!(
                "{api_version:?} is not supported for {kind}; use {}",
                known.api_versions().join(" or ")
            );
            if known == Kind::AuthorizationPolicy {
                // Still a policy someone meant to enforce: kept fail-closed like any other.
                let error = ConvertError::new("apiVersion", message);
                let unnamed = unnamed(location);
                let scope = FailClosedScope {
                    root_namespace: &self.root_namespace,
                    unnamed: &unnamed,
                };
                let kept = convert::fail_closed(&value, error, &scope);
                if let Some(policy) = self.policy_problem(kept, location, &object, prefix) {
                    self.insert(Converted::Policy(policy), location, object);
                }
            } else {
                self.errors.push(field_error("apiVersion", message));
            }
            return;
        }

        let schema = format!("{api_version} {kind}");
        let unnamed = unnamed(location);
        let scope = FailClosedScope {
            root_namespace: &self.root_namespace,
            unnamed: &unnamed,
        };
        let converted = match convert_value(known, value, &schema, &scope) {
            Ok(Some(Converted::Policy(policy))) => {
                match self.policy_problem(Ok(policy), location, &object, prefix) {
                    Some(policy) => Converted::Policy(policy),
                    None => return,
                }
            }
            Ok(Some(converted)) => converted,
            Ok(None) => return,
            Err(Problem::Decode { field, message }) => {
                let message = format!("{message}; fix the value to match the {schema} schema");
                self.errors.push(field_error(&field, message));
                return;
            }
            Err(Problem::Convert(ConvertError { field, problem })) => {
                self.errors.push(field_error(&field, problem));
                return;
            }
            Err(Problem::PolicyLeftOut(error)) => {
                self.policy_problem(Err(error), location, &object, prefix);
                return;
            }
        };
        self.insert(converted, location, object);
    }

    /// Records the problem of a policy that could not be understood, if any, as a
    /// non-blocking error; returns the policy to keep (`None`: left out).
    fn policy_problem(
        &mut self,
        result: Result<AuthorizationPolicy, ConvertError>,
        location: &Location,
        object: &str,
        prefix: &str,
    ) -> Option<AuthorizationPolicy> {
        let (field, message, enforced_as, kept) = match result {
            Ok(policy) => match &policy.invalid {
                None => return Some(policy),
                Some(invalid) => (
                    invalid.field.clone(),
                    invalid.problem.clone(),
                    invalid.enforced_as.clone(),
                    Some(policy),
                ),
            },
            Err(error) => (error.field, error.problem, "is left out".to_owned(), None),
        };
        self.errors.push(ManifestError::Policy {
            location: location.clone(),
            object: object.to_owned(),
            field: format!("{prefix}{field}"),
            message,
            enforced_as,
        });
        kept
    }

    /// Adds a converted object unless another document already defined it.
    fn insert(&mut self, converted: Converted, location: &Location, object: String) {
        let (k, ns, name) = converted.key();
        let key = (k, ns.to_owned(), name.to_owned());
        if let Some(first) = self.origins.get(&key) {
            self.errors.push(ManifestError::Duplicate {
                location: location.clone(),
                object,
                first: first.clone(),
            });
            return;
        }
        self.origins.insert(key, location.clone());
        let objects = &mut self.objects;
        match converted {
            Converted::Namespace(o) => objects.namespaces.push(o),
            Converted::Workload(o) => objects.workloads.push(o),
            Converted::Service(o) => objects.services.push(o),
            Converted::EndpointSlice(o) => objects.endpoint_slices.push(o),
            Converted::Secret(o) => objects.secrets.push(o),
            Converted::Policy(o) => objects.policies.push(o),
        }
    }

    /// The objects collected, without the address-conflict check of [`Collector::finish`];
    /// like it, refused only for problems that block a load.
    #[cfg(test)]
    pub(crate) fn into_objects(self) -> Result<Objects, ManifestErrors> {
        ManifestErrors::check(self.errors).map(|_| self.objects)
    }

    /// Builds the snapshot unless a problem blocks it (any but a policy that could not be
    /// understood) or two objects claim one address; a refusal lists every problem found.
    pub(crate) fn finish(mut self, options: &SnapshotOptions) -> Result<Loaded, ManifestErrors> {
        let mut problems = ManifestErrors::check(std::mem::take(&mut self.errors))?;
        let (snapshot, conflicts) = Snapshot::build(self.objects, options);
        let conflicts = conflicts.into_iter().map(|conflict| {
            let (kind, what, kept, dropped) = match conflict {
                Conflict::WorkloadIp { ip, kept, dropped } => {
                    (Kind::Pod, format!("pod IP {ip}"), kept, dropped)
                }
                Conflict::ServiceVip {
                    ip,
                    port,
                    kept,
                    dropped,
                } => (
                    Kind::Service,
                    format!("cluster IP and port {ip}:{port}"),
                    kept,
                    dropped,
                ),
            };
            let origin = |(ns, name): &(String, String)| {
                self.origins
                    .get(&(kind, ns.clone(), name.clone()))
                    .cloned()
                    .unwrap_or_else(|| Location {
                        file: "<unknown>".into(),
                        document: 0,
                    })
            };
            ManifestError::Conflict {
                location: origin(&dropped),
                object: format!("{kind:?} {}/{}", dropped.0, dropped.1),
                what,
                other_object: format!("{kind:?} {}/{}", kept.0, kept.1),
                other_location: origin(&kept),
            }
        });
        problems.extend(conflicts);
        let problems = ManifestErrors::check(problems)?;
        Ok(Loaded { snapshot, problems })
    }
}

/// The name of a policy without a readable `metadata.name`: where it was found.
fn unnamed(location: &Location) -> String {
    format!("(unnamed, {location})")
}

enum Problem {
    Decode {
        field: String,
        message: String,
    },
    Convert(ConvertError),
    /// A policy that could not be understood and cannot change access anyway (AUDIT).
    PolicyLeftOut(ConvertError),
}

impl From<ConvertError> for Problem {
    fn from(err: ConvertError) -> Self {
        Problem::Convert(err)
    }
}

/// Decodes and converts one object; `schema` (`apiVersion kind`) goes into decode errors.
fn convert_value(
    kind: Kind,
    value: Value,
    schema: &str,
    scope: &FailClosedScope<'_>,
) -> Result<Option<Converted>, Problem> {
    Ok(Some(match kind {
        Kind::Namespace => {
            Converted::Namespace(convert::namespace(&decode::<core::Namespace>(value)?)?)
        }
        Kind::Pod => Converted::Workload(convert::workload(&decode::<core::Pod>(value)?)?),
        Kind::Service => Converted::Service(convert::service(&decode::<core::Service>(value)?)?),
        Kind::EndpointSlice => {
            let slice = decode::<discovery::EndpointSlice>(value)?;
            match convert::endpoint_slice(&slice)? {
                Some(slice) => Converted::EndpointSlice(slice),
                None => return Ok(None),
            }
        }
        Kind::Secret => Converted::Secret(convert::secret(&decode::<core::Secret>(value)?)?),
        Kind::AuthorizationPolicy => {
            let decoded = match decode::<AuthorizationPolicyResource>(value.clone()) {
                Ok(resource) => Ok(resource),
                Err(Problem::Decode { field, message }) => Err(ConvertError::new(
                    field,
                    format!("{message}; fix the value to match the {schema} schema"),
                )),
                Err(Problem::Convert(error) | Problem::PolicyLeftOut(error)) => Err(error),
            };
            // Broken policies come back fail-closed with `invalid` set (see `policy_problem`).
            convert::authorization_policy_or_fail_closed(decoded, || value, scope)
                .map(Converted::Policy)
                .map_err(Problem::PolicyLeftOut)?
        }
    }))
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let field = match err.path().to_string() {
            path if path == "." || path.is_empty() => "(document root)".to_owned(),
            path => path,
        };
        Problem::Decode {
            field,
            message: err.into_inner().to_string(),
        }
    })
}

/// `Pod shop/web-0`, from whatever the document says before it is decoded.
fn describe(kind: &str, value: &Value) -> String {
    let kind = if kind.is_empty() { "object" } else { kind };
    let meta = value.get("metadata");
    let field = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str);
    match (field("name"), kind) {
        (None, _) => format!("{kind} without a name"),
        (Some(name), "Namespace") => format!("Namespace {name}"),
        (Some(name), _) => format!(
            "{kind} {}/{name}",
            field("namespace").unwrap_or(DEFAULT_NAMESPACE)
        ),
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
