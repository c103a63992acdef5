//! One watch task per kind: API objects → the kind's conversion ([`crate::kinds`]) → the store.
//!
//! Every kind is watched the same way, from its table entry: as dynamic objects of the resource
//! the entry names (discovered first where the served version varies, as for CRDs), converted
//! by the code the manifest loader uses. Only two kinds have more to say: Pods are filtered by
//! the API server, and Secrets are watched in the configured scope.

use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Client, Resource};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::store::{problem_of, qualified, Converted, Kept, Key, KindStore, Outcome};
use super::{Kind, KubeSourceConfig, Shared};
use crate::convert::ConvertError;
use crate::kinds::{Input, KindInfo, Object, Origin};
use crate::raw::Raw;

/// Pods that are not scheduled yet (no IP, no node's ztunnel cares) and finished Pods (Jobs
/// leave many behind; their IPs are free for reuse and their identities should no longer be
/// issued) are filtered by the API server, so they cost neither memory nor events here.
const POD_FIELD_SELECTOR: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// How one kind is watched.
#[derive(Debug, Clone)]
struct Watch {
    info: &'static KindInfo,
    /// A namespace to watch instead of all (Secrets, when configured so).
    namespace: Option<String>,
    config: watcher::Config,
    root_namespace: String,
    recheck_absent: Duration,
}

impl Watch {
    fn new(kind: Kind, config: &KubeSourceConfig) -> Self {
        let mut watch = Watch {
            info: kind.info(),
            namespace: None,
            config: watcher::Config::default(),
            root_namespace: config.snapshot.root_namespace.clone(),
            recheck_absent: config.recheck_absent,
        };
        match kind {
            Kind::Pod => watch.config = watch.config.fields(POD_FIELD_SELECTOR),
            Kind::Secret => {
                let scope = config.secrets.clone().unwrap_or_default();
                watch.namespace = scope.namespace;
                if let Some(selector) = &scope.label_selector {
                    watch.config = watch.config.labels(selector);
                }
            }
            _ => {}
        }
        watch
    }

    fn api(&self, client: Client, resource: &ApiResource) -> Api<DynamicObject> {
        match &self.namespace {
            Some(namespace) => Api::namespaced_with(client, namespace, resource),
            None => Api::all_with(client, resource),
        }
    }
}

/// Starts a task per watched kind.
pub(super) fn spawn(
    client: &Client,
    config: &KubeSourceConfig,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    config
        .watched()
        .into_iter()
        .map(|kind| {
            let watch = Watch::new(kind, config);
            tokio::spawn(run_kind(Arc::clone(shared), client.clone(), watch))
        })
        .collect()
}

/// Converts one object of `resource` as the kind's table entry says.
pub(crate) fn convert_object(
    info: &'static KindInfo,
    object: &DynamicObject,
    resource: &ApiResource,
    root_namespace: &str,
) -> Converted<Object> {
    let raw = match to_json(object, resource) {
        Ok(value) => Raw::Json(value),
        Err(error) => return Err(error),
    };
    let (_, name) = key(object);
    let input = Input {
        raw: &raw,
        info,
        api_version: &resource.api_version,
        unsupported_version: None,
        origin: Origin::Kubernetes,
        root_namespace,
        unnamed: &name,
    };
    // Left out either way: an AUDIT policy that cannot be read changes no access.
    (info.convert)(&input).map_err(|problem| problem.error().clone())
}

/// An AuthorizationPolicy as ztunnel enforces it (see [`convert_object`]): converted, or in its
/// fail-closed form with `invalid` set; `Err` only for a broken AUDIT policy.
#[cfg(test)]
pub(crate) fn authorization_policy(
    object: &DynamicObject,
    resource: &ApiResource,
    root_namespace: &str,
) -> Converted<crate::policy::AuthorizationPolicy> {
    let info = Kind::AuthorizationPolicy.info();
    convert_object(info, object, resource, root_namespace).map(|converted| match converted {
        Some(Object::Policy(policy)) => Some(policy),
        _ => None,
    })
}

/// A watch event's object as JSON with apiVersion and kind: watch events normally carry both,
/// typed decoding needs them.
fn to_json(
    object: &DynamicObject,
    resource: &ApiResource,
) -> Result<serde_json::Value, ConvertError> {
    let mut value = serde_json::to_value(object)
        .map_err(|error| ConvertError::new("(object)", error.to_string()))?;
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| resource.api_version.clone().into());
        map.entry("kind")
            .or_insert_with(|| resource.kind.clone().into());
    }
    Ok(value)
}

/// Watches one kind: at the version its entry fixes, or at the first served one. A kind whose
/// CRD is not installed counts as listed and empty and is looked for again every
/// `recheck_absent`; the rest of the cluster is watched meanwhile.
async fn run_kind(shared: Arc<Shared>, client: Client, watch: Watch) {
    let info = watch.info;
    let kind = info.kind;
    let mut retry = Duration::from_millis(800);
    let mut reported_absent = false;
    loop {
        let resolved = if info.discovered {
            resolve(&client, info).await
        } else {
            let gvk = GroupVersionKind::gvk(info.group, info.versions[0], info.name);
            Ok(Some(ApiResource::from_gvk_with_plural(&gvk, info.plural)))
        };
        match resolved {
            Ok(Some(resource)) => {
                shared.clear_failure(kind);
                if reported_absent {
                    tracing::info!(%kind, api_version = %resource.api_version, "now served by this cluster; watching");
                } else {
                    tracing::info!(%kind, api_version = %resource.api_version, "watching");
                }
                let api = watch.api(client.clone(), &resource);
                let root_namespace = watch.root_namespace.clone();
                let convert = |object: &DynamicObject| {
                    convert_object(info, object, &resource, &root_namespace)
                };
                run(
                    Arc::clone(&shared),
                    kind,
                    api,
                    watch.config.clone(),
                    convert,
                )
                .await;
                return;
            }
            Ok(None) => {
                shared.clear_failure(kind);
                retry = Duration::from_millis(800);
                if !reported_absent {
                    reported_absent = true;
                    let versions: Vec<&str> = info.served_versions().collect();
                    tracing::info!(%kind, group = info.group, ?versions, "not served by this cluster; treated as none until its CRD is installed (looked for again periodically)");
                    let changed = {
                        let mut store = shared.store();
                        let outcome = store.kind_mut(kind).set_absent();
                        store.note(outcome)
                    };
                    if changed {
                        shared.wake.notify_one();
                    }
                }
                tokio::time::sleep(watch.recheck_absent).await;
            }
            Err(error) => {
                let message = format!(
                    "cannot discover the served versions of {}: {error}; retrying",
                    info.group
                );
                tracing::warn!(%kind, error = %message, "API discovery failed");
                shared.record_failure(kind, message);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// How a failed watch is retried: from 0.5 s, doubling to 4 s, with jitter (so at most ~8 s).
/// kube-runtime's default grows to 30 s plus up to 100 % jitter: after an API-server outage a
/// node could take a minute to see changes, while its snapshot was stale. A node agent's one
/// watch per kind is cheap to retry; the reset after 2 min of health restores the short steps.
fn watch_backoff() -> impl kube::runtime::utils::Backoff {
    let schedule = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(4))
        .with_factor(2.0)
        .without_max_times()
        .with_jitter();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(schedule),
        std::time::Duration::from_secs(120),
    )
}

/// Watches one kind forever. The watcher's stream never ends: with `watch_backoff` it retries
/// every failure (connection refused while the API server restarts, 403 until RBAC is fixed,
/// 410 Gone, which makes it relist).
async fn run(
    shared: Arc<Shared>,
    kind: Kind,
    api: Api<DynamicObject>,
    config: watcher::Config,
    convert: impl Fn(&DynamicObject) -> Converted<Object>,
) {
    let events = watcher::watcher(api, config).backoff(watch_backoff());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                shared.clear_failure(kind);
                let changed = {
                    let mut store = shared.store();
                    let outcome = apply_event(kind, store.kind_mut(kind), event, &convert);
                    store.note(outcome)
                };
                if changed {
                    shared.wake.notify_one();
                }
            }
            Err(error) => {
                let message = describe(kind, &error);
                if is_gone(&error) {
                    tracing::info!(%kind, "watch resource version expired (410 Gone); relisting");
                } else {
                    tracing::warn!(%kind, error = %message, "watch failed; retrying with back-off, the last snapshot stays in force");
                }
                shared.record_failure(kind, message);
            }
        }
    }
}

/// Applies one watcher event to a kind's store, logging objects the mesh cannot use.
pub(super) fn apply_event<K: Resource, T: PartialEq + Kept>(
    kind: Kind,
    store: &mut KindStore<T>,
    event: Event<K>,
    convert: &impl Fn(&K) -> Converted<T>,
) -> Outcome {
    match event {
        Event::Apply(object) => {
            let key = key(&object);
            let converted = convert(&object);
            let problem = problem_of(&converted);
            let outcome = store.apply(key.clone(), converted);
            log_problem(kind, &key, problem, outcome);
            outcome
        }
        Event::Delete(object) => store.delete(&key(&object)),
        Event::Init => {
            store.init();
            Outcome::default()
        }
        Event::InitApply(object) => {
            let key = key(&object);
            let converted = convert(&object);
            let problem = problem_of(&converted);
            let outcome = store.init_apply(key.clone(), converted);
            log_problem(kind, &key, problem, outcome);
            outcome
        }
        Event::InitDone => {
            let outcome = store.init_done();
            tracing::debug!(%kind, objects = store.len(), "listed");
            outcome
        }
    }
}

/// Logs a conversion problem the first time it is seen (`outcome.new_problem`), not on every
/// update or relist of the same broken object.
fn log_problem(kind: Kind, key: &Key, problem: Option<(ConvertError, bool)>, outcome: Outcome) {
    let Some((problem, kept)) = problem.filter(|_| outcome.new_problem) else {
        return;
    };
    let object = qualified(&key.0, &key.1);
    if kept {
        tracing::warn!(
            %kind,
            %object,
            field = %problem.field,
            problem = %problem.problem,
            "object could not be understood; it is enforced in its fail-closed form until fixed with kubectl edit"
        );
    } else {
        tracing::warn!(
            %kind,
            %object,
            field = %problem.field,
            problem = %problem.problem,
            "object left out of the mesh's view; fix it with kubectl edit"
        );
    }
}

fn key<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The first version of the kind the API server serves, or `None` if it serves none.
async fn resolve(client: &Client, info: &KindInfo) -> Result<Option<ApiResource>, ::kube::Error> {
    for version in info.served_versions() {
        let list = match client
            .list_api_group_resources(&info.api_version(version))
            .await
        {
            Ok(list) => list,
            Err(::kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        };
        // Subresources (`endpointslices/status`) share the kind; the plural has no slash.
        let found = list
            .resources
            .iter()
            .find(|r| r.kind == info.name && !r.name.contains('/'));
        if let Some(found) = found {
            let gvk = GroupVersionKind::gvk(info.group, version, info.name);
            return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, &found.name)));
        }
    }
    Ok(None)
}

fn is_gone(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// A watch failure with what to check.
fn describe(kind: Kind, error: &watcher::Error) -> String {
    let status = match error {
        watcher::Error::WatchError(status) => Some(status.as_ref()),
        watcher::Error::InitialListFailed(::kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(::kube::Error::Api(status))
        | watcher::Error::WatchFailed(::kube::Error::Api(status)) => Some(status.as_ref()),
        _ => None,
    };
    match status {
        Some(status) if status.code == 403 => format!(
            "{error}; grant this service account list and watch on {} (ClusterRole)",
            kind.plural()
        ),
        Some(status) if status.code == 401 => {
            format!("{error}; the credentials were refused: check the kubeconfig or the mounted service account token")
        }
        Some(_) => error.to_string(),
        None => format!("{error}; the API server may be restarting or unreachable"),
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
