//! The compact in-memory state of the Kubernetes source.
//!
//! Objects are converted to the [`crate::model`] as their watch events arrive and only the
//! converted form is kept: a Pod's managed fields, annotations, container specs and most of its
//! status never outlive the event that carried them, so memory grows with what the mesh uses,
//! not with how verbose the cluster's objects are.
//!
//! Each kind follows the watcher's protocol: `Init` starts a fresh list (after start-up, a 410
//! Gone, or a restart that lost the resource version), `InitApply` fills it, and `InitDone`
//! swaps it in whole, so objects deleted while the watch was down disappear instead of lingering.
//! Until the swap the previous objects stay in force, so a relist never shows a half-empty
//! cluster.

use std::collections::{BTreeMap, HashMap};

use crate::convert::ConvertError;
use crate::kinds::Object;
use crate::snapshot::Objects;

use super::Kind;

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub(crate) type Key = (String, String);

/// What converting one object gave: the model, nothing (not for the mesh: an unscheduled Pod,
/// an EndpointSlice of no Service), or a problem to report.
pub(crate) type Converted<T> = Result<Option<T>, ConvertError>;

/// A model object that can be in force and still have a problem to report.
pub(crate) trait Kept {
    /// The problem of an object kept anyway: an AuthorizationPolicy that could not be
    /// understood is enforced in its fail-closed form, and the operator still has to hear why.
    fn kept_problem(&self) -> Option<ConvertError> {
        None
    }
}

/// AuthorizationPolicies enforced fail-closed and rejected Gateway API objects are kept.
impl Kept for Object {
    fn kept_problem(&self) -> Option<ConvertError> {
        self.kept().map(|kept| kept.error())
    }
}

/// The problem a conversion reports, and whether the object stays in force regardless.
pub(crate) fn problem_of<T: Kept>(converted: &Converted<T>) -> Option<(ConvertError, bool)> {
    match converted {
        Err(problem) => Some((problem.clone(), false)),
        Ok(Some(object)) => object.kept_problem().map(|problem| (problem, true)),
        Ok(None) => None,
    }
}

/// The objects of one kind, by key.
#[derive(Debug)]
pub(crate) struct KindStore<T> {
    objects: HashMap<Key, T>,
    /// Objects that could not be converted, with why; they are absent from `objects` unless
    /// kept anyway (see [`Kept`]).
    problems: BTreeMap<Key, ConvertError>,
    /// The list being received between `Init` and `InitDone`.
    relist: Option<(HashMap<Key, T>, BTreeMap<Key, ConvertError>)>,
    /// Whether one full list has been received: until then the kind's view is not trusted.
    synced: bool,
}

impl<T> Default for KindStore<T> {
    fn default() -> Self {
        KindStore {
            objects: HashMap::new(),
            problems: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// What an update did to a kind's store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The objects in force changed (so a new snapshot is due).
    pub changed: bool,
    /// The object failed to convert and did not fail the same way before (so log it once, not
    /// on every status update of a broken object).
    pub new_problem: bool,
}

impl<T: PartialEq + Kept> KindStore<T> {
    /// An object was added or modified.
    pub(crate) fn apply(&mut self, key: Key, converted: Converted<T>) -> Outcome {
        let new_problem = record_problem(&mut self.problems, &key, problem_of(&converted));
        let changed = match converted {
            Ok(Some(object)) => {
                if self.objects.get(&key) == Some(&object) {
                    false
                } else {
                    self.objects.insert(key, object);
                    true
                }
            }
            // A broken object is dropped rather than kept in its last good form: the API server
            // accepted the new version, so the old one no longer describes the cluster.
            Ok(None) | Err(_) => self.objects.remove(&key).is_some(),
        };
        Outcome {
            changed,
            new_problem,
        }
    }

    /// An object was deleted.
    pub(crate) fn delete(&mut self, key: &Key) -> Outcome {
        self.problems.remove(key);
        Outcome {
            changed: self.objects.remove(key).is_some(),
            new_problem: false,
        }
    }

    /// A (re)list starts. A list that was interrupted is thrown away.
    pub(crate) fn init(&mut self) {
        self.relist = Some((HashMap::new(), BTreeMap::new()));
    }

    /// An object of the list in progress.
    pub(crate) fn init_apply(&mut self, key: Key, converted: Converted<T>) -> Outcome {
        let (objects, problems) = self
            .relist
            .get_or_insert_with(|| (HashMap::new(), BTreeMap::new()));
        // "New" against what is in force, so a relist does not re-log known problems.
        let problem = problem_of(&converted);
        let new_problem = problem
            .as_ref()
            .is_some_and(|(problem, _)| self.problems.get(&key) != Some(problem));
        record_problem(problems, &key, problem);
        if let Ok(Some(object)) = converted {
            objects.insert(key, object);
        }
        Outcome {
            changed: false,
            new_problem,
        }
    }

    /// The list is complete: it replaces what was in force.
    pub(crate) fn init_done(&mut self) -> Outcome {
        let first = !self.synced;
        self.synced = true;
        let Some((objects, problems)) = self.relist.take() else {
            return Outcome {
                changed: first,
                new_problem: false,
            };
        };
        let changed = first || objects != self.objects;
        self.objects = objects;
        self.problems = problems;
        Outcome {
            changed,
            new_problem: false,
        }
    }

    /// Marks the kind as listed and empty: for optional kinds the cluster does not serve.
    pub(crate) fn set_absent(&mut self) -> Outcome {
        self.init();
        self.init_done()
    }

    pub(crate) fn synced(&self) -> bool {
        self.synced
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }
}

#[cfg(test)]
impl<T: Clone> KindStore<T> {
    pub(crate) fn values(&self) -> Vec<T> {
        self.objects.values().cloned().collect()
    }
}

/// Records or clears the conversion problem of `key`; true if it is a new problem.
fn record_problem(
    problems: &mut BTreeMap<Key, ConvertError>,
    key: &Key,
    problem: Option<(ConvertError, bool)>,
) -> bool {
    match problem {
        Some((problem, _)) => {
            problems.insert(key.clone(), problem.clone()).as_ref() != Some(&problem)
        }
        None => {
            problems.remove(key);
            false
        }
    }
}

/// Every kind's store.
#[derive(Debug, Default)]
pub(crate) struct Store {
    kinds: BTreeMap<Kind, KindStore<Object>>,
    /// Set by any update that changed the objects in force, cleared when a snapshot is built.
    changed: bool,
}

impl Store {
    /// Notes an update's outcome; true if a new snapshot is due.
    pub(crate) fn note(&mut self, outcome: Outcome) -> bool {
        self.changed |= outcome.changed;
        outcome.changed
    }

    /// Whether a snapshot is due, clearing the flag.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The objects of one kind.
    pub(crate) fn kind_mut(&mut self, kind: Kind) -> &mut KindStore<Object> {
        self.kinds.entry(kind).or_default()
    }

    pub(crate) fn synced(&self, kind: Kind) -> bool {
        self.kinds.get(&kind).is_some_and(KindStore::synced)
    }

    /// A copy of the objects in force, for [`crate::Snapshot::build`].
    pub(crate) fn objects(&self) -> Objects {
        let mut objects = Objects::default();
        for store in self.kinds.values() {
            for object in store.objects.values() {
                object.clone().add_to(&mut objects);
            }
        }
        objects
    }

    /// Objects the API server holds but the mesh cannot use (left out, AuthorizationPolicies
    /// enforced fail-closed, rejected Gateway API objects), as `Kind namespace/name: problem`.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, store) in &self.kinds {
            for ((namespace, name), problem) in &store.problems {
                out.push(format!("{kind} {}: {problem}", qualified(namespace, name)));
            }
        }
        out
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
pub(crate) fn qualified(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
