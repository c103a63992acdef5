//! The act half for the waypoints' objects: server-side apply of every [`Desired`], under the
//! field manager `ambit-waypoint-controller` with `force` (the controller owns these fields;
//! a user's edit of them is put back), with the owner reference to its Gateway.
//!
//! An object whose apply configuration has not changed since it was last applied successfully
//! is skipped, except on a full pass ([`Applier::apply_all`] with `full`), which repairs what
//! someone else changed or deleted.

use std::collections::HashMap;

use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::api::{api, object_resource, ControllerError, GatewayKind};
use super::desired::Desired;
use super::FIELD_MANAGER;

/// The uid of a Gateway, by `(namespace, name)`; absent when the Gateway is gone.
pub type GatewayUids = HashMap<(String, String), String>;

/// Remembers what was applied, so an unchanged object costs no request.
#[derive(Debug, Default)]
pub struct Applier {
    applied: HashMap<String, Value>,
}

impl Applier {
    /// Applies what changed (everything when `full`); returns the failures, one per object.
    pub async fn apply_all(
        &mut self,
        client: &Client,
        desired: &[Desired],
        uids: &GatewayUids,
        full: bool,
    ) -> Vec<ControllerError> {
        let mut failures = Vec::new();
        for object in desired {
            let Some(manifest) = with_owner(object, uids) else {
                // The Gateway went away since the snapshot: nothing to own it, so nothing to
                // create (the next snapshot drops it).
                tracing::debug!(object = %object.describe(), "owner Gateway gone; not applied");
                continue;
            };
            let key = object.describe();
            if !full && self.applied.get(&key) == Some(&manifest) {
                continue;
            }
            match apply(client, object, &manifest).await {
                Ok(()) => {
                    if self.applied.insert(key.clone(), manifest).is_none() {
                        tracing::info!(object = %key, "applied");
                    } else {
                        tracing::debug!(object = %key, "applied");
                    }
                }
                Err(error) => {
                    self.applied.remove(&key);
                    failures.push(error);
                }
            }
        }
        failures
    }
}

/// The manifest with `metadata.ownerReferences` naming its Gateway, or `None` when that
/// Gateway has no known uid.
pub fn with_owner(object: &Desired, uids: &GatewayUids) -> Option<Value> {
    let mut manifest = object.manifest.clone();
    let (Some(namespace), Some(owner)) = (&object.namespace, &object.owner) else {
        return Some(manifest);
    };
    let uid = uids.get(&(namespace.clone(), owner.clone()))?;
    manifest["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": owner,
        "uid": uid,
        "controller": true,
    }]);
    Some(manifest)
}

async fn apply(client: &Client, object: &Desired, manifest: &Value) -> Result<(), ControllerError> {
    let resource = object_resource(object.kind);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api(client, &resource, object.namespace.as_deref())
        .patch(&object.name, &params, &Patch::Apply(manifest))
        .await
        .map(|_| ())
        .map_err(|error| {
            let rbac = format!("create and patch on {}", resource.plural);
            ControllerError::api("apply", object.describe(), &rbac, error)
        })
}

/// Reads the uid of each named Gateway (a Gateway that is gone is left out).
pub async fn gateway_uids(
    client: &Client,
    gateways: impl IntoIterator<Item = (String, String)>,
) -> Result<GatewayUids, ControllerError> {
    let resource = GatewayKind::Gateway.resource();
    let mut uids = GatewayUids::new();
    for (namespace, name) in gateways {
        let found = api(client, &resource, Some(&namespace))
            .get_opt(&name)
            .await
            .map_err(|error| {
                let object = format!("Gateway {namespace}/{name}");
                ControllerError::api("read", object, "get on gateways", error)
            })?;
        if let Some(uid) = found.and_then(|gateway| gateway.metadata.uid) {
            uids.insert((namespace, name), uid);
        }
    }
    Ok(uids)
}
