//! Publishes the mesh's trust bundle (public roots only) in a ConfigMap, the way istiod
//! publishes `istio-ca-root-cert`: node agents mount it as their `--ca-root`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::store::ROOTS_FILE;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("--root-configmap {0:?} is not NAMESPACE/NAME, e.g. ambit-system/ambit-ca-root-cert")]
    BadName(String),
    #[error("cannot publish the trust bundle in ConfigMap {configmap}: {source}; the CA's service account needs get, create and update on that ConfigMap")]
    Write {
        configmap: String,
        source: Box<kube::Error>,
    },
}

/// Creates or updates `namespace/name` with `ca.crt` = `bundle_pem`; leaves it alone when it
/// already says exactly that.
pub async fn publish(
    client: Client,
    configmap: &str,
    bundle_pem: &str,
) -> Result<(), PublishError> {
    let (namespace, name) = configmap
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| PublishError::BadName(configmap.to_owned()))?;
    let write_error = |source| PublishError::Write {
        configmap: configmap.to_owned(),
        source: Box::new(source),
    };
    let api = Api::<ConfigMap>::namespaced(client, namespace);
    let data = BTreeMap::from([(ROOTS_FILE.to_owned(), bundle_pem.to_owned())]);
    match api.get_opt(name).await.map_err(write_error)? {
        Some(existing) if existing.data.as_ref() == Some(&data) => Ok(()),
        Some(mut existing) => {
            existing.data = Some(data);
            api.replace(name, &PostParams::default(), &existing)
                .await
                .map_err(write_error)?;
            tracing::info!(%configmap, "trust bundle updated");
            Ok(())
        }
        None => {
            let object = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some(namespace.to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &object)
                .await
                .map_err(write_error)?;
            tracing::info!(%configmap, "trust bundle published");
            Ok(())
        }
    }
}
