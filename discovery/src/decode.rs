//! Manifest text → typed Kubernetes objects → model, with errors that point into the file.
//!
//! Each YAML document is first read as a generic value (so its `kind` picks the type, and a
//! syntax error is reported as such), then decoded into the k8s-openapi type (or our
//! AuthorizationPolicy type) with `serde_path_to_error` so a type error names its field path,
//! then converted by the kind's entry in [`crate::kinds`], the same code the Kubernetes API
//! source uses.
//!
//! An AuthorizationPolicy that cannot be understood does not fail the load: it is kept in its
//! fail-closed form ([`crate::convert::fail_closed`]) and reported as a non-blocking
//! [`ManifestError::Policy`], so a typo in one policy neither opens the workloads it guards nor
//! freezes every other edit. Likewise a Gateway API object that breaks the schema is kept,
//! marked rejected, and reported as a non-blocking [`ManifestError::Rejected`] (Gateway API
//! semantics: it is not accepted, and the rest of the configuration stays in force).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

use crate::convert::ConvertError;
use crate::error::{Location, ManifestError, ManifestErrors};
use crate::kinds::{Input, Kept, Kind, Object, Origin, Problem};
use crate::model::DEFAULT_NAMESPACE;
use crate::raw::Raw;
use crate::snapshot::{Conflict, Objects, Snapshot, SnapshotOptions};

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
        let info = known.info();
        let api_versions = info.api_versions();
        let mut unsupported_version = None;
        if !api_versions.contains(&api_version) {
            // Other projects' CRDs share kind names (Knative's Service, say): only objects of
            // our kinds' own API groups are ours to judge; a wrong version in them is an error
            // (or, for policies and Gateway API objects, an object not understood).
            let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
            if group != info.group {
                tracing::debug!(file = %location.file.display(), document = location.document, %kind, %api_version, "kind of another API group; skipped");
                return;
            }
            let message = format!(
                "{api_version:?} is not supported for {kind}; use {}",
                api_versions.join(" or ")
            );
            unsupported_version = Some(ConvertError::new("apiVersion", message));
        }

        let unnamed = unnamed(location);
        let raw = Raw::Yaml(value);
        let input = Input {
            raw: &raw,
            info,
            api_version: &api_version,
            unsupported_version,
            origin: Origin::Manifests,
            root_namespace: &self.root_namespace,
            unnamed: &unnamed,
        };
        match (info.convert)(&input) {
            Ok(Some(converted)) => {
                if let Some(kept) = converted.kept() {
                    self.errors
                        .push(kept_problem(kept, location, &object, prefix));
                }
                self.insert(converted, location, object);
            }
            Ok(None) => {}
            Err(Problem::Invalid(ConvertError { field, problem })) => {
                self.errors.push(field_error(&field, problem));
            }
            Err(Problem::LeftOut(error)) => {
                self.errors.push(ManifestError::Policy {
                    location: location.clone(),
                    object,
                    field: format!("{prefix}{}", error.field),
                    message: error.problem,
                    enforced_as: "is left out".to_owned(),
                });
            }
        }
    }

    /// Adds a converted object unless another document already defined it.
    fn insert(&mut self, converted: Object, location: &Location, object: String) {
        let (ns, name) = converted.key();
        let key = (converted.kind(), ns.to_owned(), name.to_owned());
        if let Some(first) = self.origins.get(&key) {
            self.errors.push(ManifestError::Duplicate {
                location: location.clone(),
                object,
                first: first.clone(),
            });
            return;
        }
        self.origins.insert(key, location.clone());
        converted.add_to(&mut self.objects);
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

/// A non-blocking problem of an object kept in force, as the operator reads it.
fn kept_problem(kept: Kept<'_>, location: &Location, object: &str, prefix: &str) -> ManifestError {
    match kept {
        Kept::FailClosed(invalid) => ManifestError::Policy {
            location: location.clone(),
            object: object.to_owned(),
            field: format!("{prefix}{}", invalid.field),
            message: invalid.problem.clone(),
            enforced_as: invalid.enforced_as.clone(),
        },
        Kept::Rejected(rejection) => ManifestError::Rejected {
            location: location.clone(),
            object: object.to_owned(),
            field: rejection
                .problems
                .first()
                .map(|problem| format!("{prefix}{}", problem.field))
                .unwrap_or_default(),
            message: rejection.to_string(),
        },
    }
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
