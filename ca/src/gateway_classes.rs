//! The mesh's two GatewayClasses, `ambit` (ingress) and `ambit-waypoint`, created by the CA at
//! start-up as istiod creates its own classes.
//!
//! This is the gateway controller's job, and moves to it: the controller that serves these
//! classes (accepts Gateways of them, writes their status) will live in `waypoint/` (DESIGN §2),
//! which does not exist yet. Until then the CA creates them, because it is the one mesh
//! component that already runs with its own RBAC against the API server in Kubernetes mode;
//! only `main` starts it, as a background task that issuance never waits for.
//!
//! They are not in `manifests/`: kubectl maps the kind of every object before it applies any,
//! so a GatewayClass in the same `kubectl apply -k` as the GatewayClass CRD fails with "no
//! matches for kind" on a fresh cluster. So the CA creates whichever class is missing. It never
//! changes an existing class: `spec.controllerName` is immutable, and an operator may have
//! edited the rest.

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;

/// A class the mesh serves (DESIGN.md §3 "GatewayClasses").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub name: &'static str,
    pub controller_name: &'static str,
    /// At most 64 characters: the CRD's schema limit.
    pub description: &'static str,
}

pub const CLASSES: [Class; 2] = [
    Class {
        name: "ambit",
        controller_name: "ambit.dev/gateway-controller",
        description: "Ambit ingress gateway (HTTP, TLS, TCP)",
    },
    Class {
        name: "ambit-waypoint",
        controller_name: "ambit.dev/waypoint-controller",
        description: "Ambit waypoint proxy (L7 policy for the mesh)",
    },
];

/// Label on the classes the CA created, so an operator can tell who made them.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ambit-ca");
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum GatewayClassError {
    #[error("the Gateway API CRDs are not installed (gatewayclasses.gateway.networking.k8s.io/v1 is not served); apply manifests/ and the CA creates the GatewayClasses once they are")]
    CrdMissing,
    #[error("cannot {action} GatewayClass {name}: {source}; the CA's service account needs get on gatewayclasses {name} and create on gatewayclasses (manifests/core/rbac.yaml)")]
    Api {
        action: &'static str,
        name: &'static str,
        source: Box<kube::Error>,
    },
}

fn resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass");
    ApiResource::from_gvk_with_plural(&gvk, "gatewayclasses")
}

/// Creates every class of [`CLASSES`] that does not exist; returns the names it created.
pub async fn ensure(client: Client) -> Result<Vec<&'static str>, GatewayClassError> {
    let api = Api::<DynamicObject>::all_with(client, &resource());
    let mut created = Vec::new();
    for class in CLASSES {
        let failed = |action| move |error| classify(action, class.name, error);
        match api.get_opt(class.name).await.map_err(failed("get"))? {
            Some(existing) => warn_if_foreign(&existing, class),
            None => {
                let mut object =
                    DynamicObject::new(class.name, &resource()).data(serde_json::json!({
                        "spec": {
                            "controllerName": class.controller_name,
                            "description": class.description,
                        },
                    }));
                object.metadata.labels = Some(
                    [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]
                        .into_iter()
                        .collect(),
                );
                match api.create(&PostParams::default(), &object).await {
                    Ok(_) => created.push(class.name),
                    // Another CA replica was faster: the class exists, which is all we want.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(failed("create")(error)),
                }
            }
        }
    }
    Ok(created)
}

/// A 404 that reached here is about the kind, not the object (`get_opt` turns an object's
/// "NotFound" into `None`): without the CRD the server answers "404 page not found".
fn classify(action: &'static str, name: &'static str, error: kube::Error) -> GatewayClassError {
    match error {
        kube::Error::Api(status) if status.code == 404 => GatewayClassError::CrdMissing,
        error => GatewayClassError::Api {
            action,
            name,
            source: Box::new(error),
        },
    }
}

fn warn_if_foreign(existing: &DynamicObject, class: Class) {
    let controller = existing.data["spec"]["controllerName"].as_str();
    if controller != Some(class.controller_name) {
        tracing::warn!(
            gatewayclass = class.name,
            controller = ?controller,
            expected = class.controller_name,
            "GatewayClass exists with another controllerName, so Ambit does not serve its Gateways; delete it and restart ambit-ca to have it recreated"
        );
    }
}

/// Runs [`ensure`] until it succeeds, backing off up to a minute between attempts: the CRDs
/// may become established after the CA starts, or RBAC may be fixed later. Certificate
/// issuance never waits for this, so the CA runs it as a background task.
pub async fn ensure_until_done(client: Client) {
    let mut delay = RETRY_FIRST;
    let mut reported = false;
    loop {
        match ensure(client.clone()).await {
            Ok(created) => {
                tracing::info!(?created, "GatewayClasses ambit and ambit-waypoint exist");
                return;
            }
            Err(error) => {
                // Once at warn, then at debug: a cluster without the Gateway API is legitimate.
                if reported {
                    tracing::debug!(%error, "GatewayClasses not created yet");
                } else {
                    tracing::warn!(%error, retry_in = ?delay, "GatewayClasses not created yet");
                    reported = true;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_fit_the_crd_schema_and_the_design() {
        for class in CLASSES {
            assert!(class.description.len() <= 64, "{}", class.name);
        }
        assert_eq!(CLASSES[0].name, "ambit");
        assert_eq!(CLASSES[0].controller_name, "ambit.dev/gateway-controller");
        assert_eq!(CLASSES[1].name, "ambit-waypoint");
        assert_eq!(CLASSES[1].controller_name, "ambit.dev/waypoint-controller");
    }
}
