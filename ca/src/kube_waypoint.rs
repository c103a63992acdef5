//! Kubernetes mode, waypoints: a token of a service account other than ztunnel's, bound to a
//! waypoint pod, proves that service account (see the module docs of [`super`]).

use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::Pod;

use super::{bound_pod, pod_extras, verified_username, Ztunnels};
use crate::authz::{Caller, Refusal};

/// The label the waypoint controller gives every waypoint pod (Gateway API's own).
pub const WAYPOINT_POD_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Who holds a reviewed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHolder {
    /// A ztunnel pod: the caller is the node it runs on ([`pod_node`]).
    Ztunnel { pod: String, uid: String },
    /// A pod of another service account, which must be a waypoint ([`waypoint_caller`]).
    Waypoint(WaypointHolder),
}

/// The service account and the pod a non-ztunnel token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointHolder {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub uid: String,
}

/// From a TokenReview's answer to who holds the token: the ztunnel's path is [`bound_pod`]
/// unchanged; any other service account's token must be bound to a pod of that account.
pub fn token_holder(
    status: &TokenReviewStatus,
    audience: &str,
    ztunnels: &Ztunnels,
) -> Result<TokenHolder, Refusal> {
    let username = verified_username(status, audience)?;
    if username == ztunnels.username() {
        let (pod, uid) = bound_pod(status, audience, ztunnels)?;
        return Ok(TokenHolder::Ztunnel { pod, uid });
    }
    let Ok(Caller::ServiceAccount { namespace, name }) = Caller::of(&username) else {
        return Err(Refusal::NotZtunnel(format!(
            "the token belongs to {username:?}, neither the ztunnel service account {:?} nor a waypoint's service account",
            ztunnels.username()
        )));
    };
    match pod_extras(status) {
        Some((pod, uid)) => Ok(TokenHolder::Waypoint(WaypointHolder {
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
            pod,
            uid,
        })),
        None => Err(Refusal::NotZtunnel(format!(
            "the token of {username} is not bound to a pod; a waypoint must present the projected serviceAccountToken (audience {audience:?}) its Deployment mounts"
        ))),
    }
}

/// The caller a waypoint pod's token proves: its service account, if `pod` (the live pod the
/// token names) is still that pod, runs as that account and is a waypoint pod.
pub fn waypoint_caller(pod: Option<&Pod>, holder: &WaypointHolder) -> Result<String, Refusal> {
    let qualified = format!("{}/{}", holder.namespace, holder.pod);
    let pod = pod.ok_or_else(|| {
        Refusal::NotZtunnel(format!(
            "pod {qualified} that holds the token no longer exists"
        ))
    })?;
    if pod.metadata.uid.as_deref() != Some(holder.uid.as_str()) {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} was replaced since the token was issued (uid {} is gone)",
            holder.uid
        )));
    }
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    if service_account != holder.service_account {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} runs as service account {service_account:?}, not {:?} whose token it presents",
            holder.service_account
        )));
    }
    let labels = pod.metadata.labels.as_ref();
    if !labels.is_some_and(|labels| labels.contains_key(WAYPOINT_POD_LABEL)) {
        return Err(Refusal::NotZtunnel(format!(
            "pod {qualified} is not a waypoint pod (no label {WAYPOINT_POD_LABEL}; the waypoint controller's Deployments set it); only ztunnels and waypoints call the CA"
        )));
    }
    Ok(format!(
        "system:serviceaccount:{}:{}",
        holder.namespace, holder.service_account
    ))
}
