//! The status shapes of Gateway API v1.6.1, as the API server stores them (camelCase, conditions
//! as `metav1.Condition`), and the one wrapper [`ObjectStatus`] that says which object a status
//! belongs to.
//!
//! Everything here also deserializes, so that a controller can read the status an object has,
//! compare it with the computed one ([`Condition::same_state`], [`carry_transition_times`]) and
//! PATCH only what changed.

use serde::{Deserialize, Serialize};

/// API group and version of every kind whose status is computed here.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// One object's computed status: `{apiVersion, kind, metadata: {namespace, name}, status}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub status: Status,
}

/// Which object: GatewayClasses are cluster-scoped and have no namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// The `status` of one kind. Untagged: the kind next to it in [`ObjectStatus`] says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Status {
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    Route(RouteStatus),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayClassStatus {
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Empty until an address is bound; the field is then left out, as the API server does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatusAddress {
    /// `IPAddress` for a Service cluster IP.
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    /// Kept even when empty: an empty list says "no route kind is accepted here".
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteGroupKind {
    pub group: String,
    pub kind: String,
}

/// The status of an HTTPRoute or GRPCRoute: one entry per parentRef this controller answers for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub parents: Vec<RouteParentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// A route's parentRef echoed back, with the defaults the schema gives it filled in (group,
/// kind and namespace are always present, so the entry is matched to its spec entry the same
/// way whether or not the manifest spelled them out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// `metav1.Condition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// The object's `metadata.generation`; absent when the object carries none (hand-written
    /// manifests in local mode) or for objects the snapshot does not hold (our GatewayClasses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RFC 3339, seconds precision, UTC (`metav1.Time`).
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl Condition {
    /// Whether two conditions say the same thing. `lastTransitionTime` is left out: it changes
    /// only when the status does, so it is not part of what the controller compares.
    pub fn same_state(&self, other: &Condition) -> bool {
        (
            &self.type_,
            self.status,
            &self.reason,
            &self.message,
            self.observed_generation,
        ) == (
            &other.type_,
            other.status,
            &other.reason,
            &other.message,
            other.observed_generation,
        )
    }
}

/// Keeps, for each computed condition whose `status` did not change, the transition time the
/// object already shows (`metav1.Condition`: the time of the last change of `status`, not of
/// the last write). A controller calls it before deciding whether to PATCH.
pub fn carry_transition_times(computed: &mut [Condition], existing: &[Condition]) {
    for condition in computed {
        let earlier = existing
            .iter()
            .find(|old| old.type_ == condition.type_ && old.status == condition.status);
        if let Some(earlier) = earlier {
            condition
                .last_transition_time
                .clone_from(&earlier.last_transition_time);
        }
    }
}

/// Builds conditions that share one object's generation and one timestamp.
#[derive(Debug, Clone)]
pub(crate) struct Conditions {
    pub(crate) generation: Option<i64>,
    pub(crate) time: String,
}

impl Conditions {
    pub(crate) fn make(
        &self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time: self.time.clone(),
        }
    }

    /// `True` with `reason`, or `False` with the reason and message of `problem`.
    pub(crate) fn check(
        &self,
        type_: &str,
        ok: (&str, &str),
        problem: Option<(&str, String)>,
    ) -> Condition {
        match problem {
            None => self.make(type_, ConditionStatus::True, ok.0, ok.1),
            Some((reason, message)) => self.make(type_, ConditionStatus::False, reason, message),
        }
    }
}
