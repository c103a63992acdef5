//! One watch task per kind: API objects → `convert` → the store.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt;
use ::kube::{Client, Resource};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::store::{problem_of, qualified, Converted, Kept, Key, KindStore, Outcome, Store};
use super::{Kind, KubeSourceConfig, Shared};
use crate::convert::{self, AuthorizationPolicyResource, ConvertError, FailClosedScope};
use crate::model::Workload;
use crate::policy::AuthorizationPolicy;

/// Pods that are not scheduled yet (no IP, no node's ztunnel cares) and finished Pods (Jobs
/// leave many behind; their IPs are free for reuse and their identities should no longer be
/// issued) are filtered by the API server, so they cost neither memory nor events here.
const POD_FIELD_SELECTOR: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

/// Starts a task per watched kind.
pub(super) fn spawn(
    client: &Client,
    config: &KubeSourceConfig,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for kind in config.watched() {
        let shared = Arc::clone(shared);
        let client = client.clone();
        let task = match kind {
            Kind::Namespace => tokio::spawn(run(
                shared,
                kind,
                Api::<core::Namespace>::all(client),
                watcher::Config::default(),
                |ns: &core::Namespace| convert::namespace(ns).map(Some),
                |store: &mut Store| &mut store.namespaces,
            )),
            Kind::Pod => tokio::spawn(run(
                shared,
                kind,
                Api::<core::Pod>::all(client),
                watcher::Config::default().fields(POD_FIELD_SELECTOR),
                pod,
                |store: &mut Store| &mut store.workloads,
            )),
            Kind::Service => tokio::spawn(run(
                shared,
                kind,
                Api::<core::Service>::all(client),
                watcher::Config::default(),
                |svc: &core::Service| convert::service(svc).map(Some),
                |store: &mut Store| &mut store.services,
            )),
            Kind::EndpointSlice => tokio::spawn(run_dynamic(
                shared,
                client,
                kind,
                config.recheck_absent,
                ("discovery.k8s.io", &["v1", "v1beta1"]),
                |object: &DynamicObject, resource: &ApiResource| {
                    // The v1 type checks its apiVersion; v1beta1's shape decodes into it.
                    let as_v1 =
                        Some(<discovery::EndpointSlice as k8s_openapi::Resource>::API_VERSION);
                    let slice: discovery::EndpointSlice = decode(object, resource, as_v1)?;
                    convert::endpoint_slice(&slice)
                },
                |store: &mut Store| &mut store.endpoint_slices,
            )),
            Kind::AuthorizationPolicy => {
                let root_namespace = config.snapshot.root_namespace.clone();
                tokio::spawn(run_dynamic(
                    shared,
                    client,
                    kind,
                    config.recheck_absent,
                    ("security.istio.io", &["v1", "v1beta1"]),
                    move |object: &DynamicObject, resource: &ApiResource| {
                        authorization_policy(object, resource, &root_namespace)
                    },
                    |store: &mut Store| &mut store.policies,
                ))
            }
            Kind::Secret => {
                let scope = config.secrets.clone().unwrap_or_default();
                let api = match &scope.namespace {
                    Some(namespace) => Api::<core::Secret>::namespaced(client, namespace),
                    None => Api::<core::Secret>::all(client),
                };
                let mut watch_config = watcher::Config::default();
                if let Some(selector) = &scope.label_selector {
                    watch_config = watch_config.labels(selector);
                }
                tokio::spawn(run(
                    shared,
                    kind,
                    api,
                    watch_config,
                    |secret: &core::Secret| convert::secret(secret).map(Some),
                    |store: &mut Store| &mut store.secrets,
                ))
            }
        };
        tasks.push(task);
    }
    tasks
}

/// A Pod as the mesh sees it; `None` while it is not on a node or after it finished (the
/// field selector filters these already; this covers an update racing the selector).
fn pod(pod: &core::Pod) -> Converted<Workload> {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .is_some_and(|node| !node.is_empty());
    let finished = pod
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
    if !scheduled || finished {
        return Ok(None);
    }
    convert::workload(pod).map(Some)
}

/// An AuthorizationPolicy as ztunnel enforces it: converted, or — when it cannot be
/// understood — in its fail-closed form with `invalid` set, which the store keeps in force and
/// reports ([`Kept`]). Dropping it instead would open what it guards. `Err` only for a broken
/// policy that cannot change access (AUDIT).
pub(crate) fn authorization_policy(
    object: &DynamicObject,
    resource: &ApiResource,
    root_namespace: &str,
) -> Converted<AuthorizationPolicy> {
    let decoded = decode::<AuthorizationPolicyResource>(object, resource, None);
    let (namespace, name) = key(object);
    let raw = || {
        serde_json::to_value(object)
            .ok()
            .and_then(|json| serde_yaml::to_value(json).ok())
            // Not expected (the object came as JSON); if it happens, the name and namespace
            // are still known and a spec that cannot be read fails closed as deny-all.
            .unwrap_or_else(|| {
                let mut meta = serde_yaml::Mapping::new();
                meta.insert("name".into(), name.as_str().into());
                meta.insert("namespace".into(), namespace.as_str().into());
                let mut raw = serde_yaml::Mapping::new();
                raw.insert("metadata".into(), meta.into());
                raw.insert("spec".into(), "(could not be read)".into());
                raw.into()
            })
    };
    let scope = FailClosedScope {
        root_namespace,
        unnamed: &name,
    };
    convert::authorization_policy_or_fail_closed(decoded, raw, &scope).map(Some)
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
async fn run<K, T>(
    shared: Arc<Shared>,
    kind: Kind,
    api: Api<K>,
    config: watcher::Config,
    convert: impl Fn(&K) -> Converted<T>,
    select: impl Fn(&mut Store) -> &mut KindStore<T>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: PartialEq + Kept,
{
    let events = watcher::watcher(api, config).backoff(watch_backoff());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                shared.clear_failure(kind);
                let changed = {
                    let mut store = shared.store();
                    let outcome = apply_event(kind, select(&mut store), event, &convert);
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

/// Watches a kind whose served version is discovered: the first of `versions` the API server
/// serves. If none is served, the kind counts as listed and empty (a cluster without the Istio
/// CRDs has no AuthorizationPolicies) and is looked for again every `recheck`.
async fn run_dynamic<T: PartialEq + Kept>(
    shared: Arc<Shared>,
    client: Client,
    kind: Kind,
    recheck: Duration,
    (group, versions): (&'static str, &'static [&'static str]),
    convert: impl Fn(&DynamicObject, &ApiResource) -> Converted<T>,
    select: impl Fn(&mut Store) -> &mut KindStore<T>,
) {
    let mut retry = Duration::from_millis(800);
    let mut reported_absent = false;
    loop {
        match resolve(&client, group, versions, kind.name()).await {
            Ok(Some(resource)) => {
                shared.clear_failure(kind);
                tracing::info!(%kind, api_version = %resource.api_version, "watching");
                let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
                let convert = |object: &DynamicObject| convert(object, &resource);
                run(
                    Arc::clone(&shared),
                    kind,
                    api,
                    watcher::Config::default(),
                    convert,
                    &select,
                )
                .await;
                return;
            }
            Ok(None) => {
                shared.clear_failure(kind);
                retry = Duration::from_millis(800);
                if !reported_absent {
                    reported_absent = true;
                    tracing::info!(%kind, %group, ?versions, "not served by this cluster; treated as none (install the CRD to use it)");
                    let changed = {
                        let mut store = shared.store();
                        let outcome = select(&mut store).set_absent();
                        store.note(outcome)
                    };
                    if changed {
                        shared.wake.notify_one();
                    }
                }
                tokio::time::sleep(recheck).await;
            }
            Err(error) => {
                let message =
                    format!("cannot discover the served versions of {group}: {error}; retrying");
                tracing::warn!(%kind, error = %message, "API discovery failed");
                shared.record_failure(kind, message);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The first of `versions` of `group` that serves `kind`, or `None` if none does.
async fn resolve(
    client: &Client,
    group: &str,
    versions: &[&str],
    kind: &str,
) -> Result<Option<ApiResource>, ::kube::Error> {
    for version in versions {
        let list = match client
            .list_api_group_resources(&format!("{group}/{version}"))
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
            .find(|r| r.kind == kind && !r.name.contains('/'));
        if let Some(found) = found {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            return Ok(Some(ApiResource::from_gvk_with_plural(&gvk, &found.name)));
        }
    }
    Ok(None)
}

/// A dynamic object as a typed one, with errors naming the field. The k8s-openapi types ignore
/// fields they do not know, so `discovery.k8s.io/v1beta1` EndpointSlices (`topology` instead of
/// `nodeName`/`zone`) decode into the v1 type once `as_api_version` relabels them.
pub(super) fn decode<T: DeserializeOwned>(
    object: &DynamicObject,
    resource: &ApiResource,
    as_api_version: Option<&str>,
) -> Result<T, ConvertError> {
    let mut value = serde_json::to_value(object)
        .map_err(|error| ConvertError::new("(object)", error.to_string()))?;
    // Watch events normally carry apiVersion and kind; typed decoding needs them.
    if let Some(map) = value.as_object_mut() {
        let api_version = as_api_version.unwrap_or(&resource.api_version);
        if as_api_version.is_some() || !map.contains_key("apiVersion") {
            map.insert("apiVersion".into(), api_version.into());
        }
        map.entry("kind")
            .or_insert_with(|| resource.kind.clone().into());
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        ConvertError::new(
            field,
            format!(
                "{}; fix the value to match the {} {} schema",
                error.into_inner(),
                resource.api_version,
                resource.kind
            ),
        )
    })
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
