//! Writing status: for each computed [`ObjectStatus`], read the live object, decide with
//! [`super::status_plan`], and PATCH the `status` subresource only when it changed.
//!
//! The PATCH is a JSON merge patch carrying the `resourceVersion` that was read, so a write
//! that raced another controller's fails with 409 and is redone on the next pass from a fresh
//! read, instead of overwriting that controller's route entries.

use kube::api::{Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::api::{api, ControllerError, GatewayKind};
use super::status_plan::{class_status, gateway_status, route_status};
use super::FIELD_MANAGER;
use crate::status::{ObjectStatus, Status, WAYPOINT_CLASS, WAYPOINT_CONTROLLER};

/// What a pass did, for the log and the tests' eyes.
#[derive(Debug, Default)]
pub struct StatusOutcome {
    pub written: Vec<String>,
    pub failures: Vec<ControllerError>,
}

/// Writes every status that changed. The ingress class `ambit` is left alone: its controller
/// is not this one.
pub async fn write_all(client: &Client, statuses: Vec<ObjectStatus>) -> StatusOutcome {
    let mut outcome = StatusOutcome::default();
    for status in statuses {
        if status.kind == "GatewayClass" && status.metadata.name != WAYPOINT_CLASS {
            continue;
        }
        let described = describe(&status);
        match write_one(client, status).await {
            Ok(true) => {
                tracing::info!(object = %described, "status written");
                outcome.written.push(described);
            }
            Ok(false) => tracing::debug!(object = %described, "status unchanged"),
            Err(error) => outcome.failures.push(error),
        }
    }
    outcome
}

fn describe(status: &ObjectStatus) -> String {
    match &status.metadata.namespace {
        Some(namespace) => format!("{} {namespace}/{}", status.kind, status.metadata.name),
        None => format!("{} {}", status.kind, status.metadata.name),
    }
}

/// Whether a PATCH was sent.
async fn write_one(client: &Client, status: ObjectStatus) -> Result<bool, ControllerError> {
    let described = describe(&status);
    let Some(kind) = GatewayKind::of(status.kind) else {
        return Ok(false);
    };
    let resource = kind.resource();
    let handle = api(client, &resource, status.metadata.namespace.as_deref());
    let name = &status.metadata.name;
    let rbac = format!("get on {}", kind.plural());
    let live = handle
        .get_opt(name)
        .await
        .map_err(|error| ControllerError::api("read", described.clone(), &rbac, error))?;
    // Gone since the snapshot (or a class the CA has not created yet): nothing to write.
    let Some(live) = live else {
        return Ok(false);
    };
    let live_status = live.data.get("status").cloned().unwrap_or(Value::Null);
    let patch = match status.status {
        Status::GatewayClass(computed) => {
            let controller = live.data["spec"]["controllerName"].as_str();
            if controller != Some(WAYPOINT_CONTROLLER) {
                tracing::warn!(gatewayclass = %name, ?controller, expected = WAYPOINT_CONTROLLER,
                    "GatewayClass has another controllerName: its status is not ours to write");
                return Ok(false);
            }
            class_status(computed, &live_status, live.metadata.generation)
        }
        Status::Gateway(computed) => gateway_status(computed, &live_status),
        Status::Route(computed) => route_status(computed, &live_status),
    };
    let Some(patch) = patch else {
        return Ok(false);
    };
    let body = json!({
        "metadata": { "resourceVersion": live.metadata.resource_version },
        "status": patch,
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let rbac = format!("patch on {}/status", kind.plural());
    handle
        .patch_status(name, &params, &Patch::Merge(&body))
        .await
        .map_err(|error| ControllerError::api("write the status of", described, &rbac, error))?;
    Ok(true)
}
