//! The Kubernetes API source: watches the API server and publishes the same [`Snapshot`]s on the
//! same kind of channel as [`crate::LocalSource`].
//!
//! One kube-runtime watcher per kind feeds a compact store ([`store`]): each object is converted
//! by [`crate::convert`] (the code the manifest loader uses) as its event arrives, so only the
//! mesh's model is kept. A publisher task rebuilds the snapshot when the converted objects
//! actually changed, at most once per [`KubeSourceConfig::debounce`], so a rollout that touches
//! hundreds of Pods produces a handful of snapshots, and Pod status churn that does not change
//! the model (restart counts, unrelated conditions) produces none.
//!
//! Watches recover by themselves: the watcher retries with exponential back-off (0.5 s to 4 s)
//! after connection errors and API-server restarts, resumes from the last resource version when
//! it can, and relists when the server answers 410 Gone; a relist replaces the kind's objects
//! only once it is complete ([`store`]), so nothing stale survives and nothing is lost meanwhile.
//!
//! Served versions are discovered, not assumed, for every kind whose table entry says so
//! ([`KindInfo::discovered`]): EndpointSlices are read as `discovery.k8s.io/v1` where served
//! and `v1beta1` otherwise (Kubernetes 1.20), AuthorizationPolicies as `security.istio.io/v1`
//! or `v1beta1`, the Gateway API kinds at the first of their versions served. A cluster
//! without a CRD simply has none of its objects: one log line says so, the kind is looked for
//! again every [`KubeSourceConfig::recheck_absent`], and the rest of the cluster is watched
//! meanwhile.

mod publish;
mod store;
mod watch;

/// The Kubernetes path's AuthorizationPolicy conversion, for the crate's property tests.
#[cfg(test)]
pub(crate) use watch::authorization_policy;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use ::kube::Client;
use tokio::sync::{watch as channel, Notify};
use tokio::task::JoinHandle;

use crate::snapshot::{Snapshot, SnapshotOptions};

/// Default for [`KubeSourceConfig::debounce`].
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// Default for [`KubeSourceConfig::sync_timeout`].
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`KubeSourceConfig::recheck_absent`].
pub const DEFAULT_RECHECK_ABSENT: Duration = Duration::from_secs(30);

/// The kinds are described in [`crate::kinds`], shared with the manifest loader.
pub use crate::kinds::{Kind, KindInfo};

/// Which Secrets to watch, when any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretScope {
    /// One namespace (least privilege: a Role there suffices), or all when `None`.
    pub namespace: Option<String>,
    /// e.g. `ambit.dev/gateway-tls=true`; all Secrets in scope when `None`.
    pub label_selector: Option<String>,
}

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct KubeSourceConfig {
    /// The kinds to watch; [`Kind::Secret`] here is ignored unless `secrets` is set.
    pub kinds: Vec<Kind>,
    pub secrets: Option<SecretScope>,
    /// The quiet time after a change before the snapshot is rebuilt, coalescing bursts.
    pub debounce: Duration,
    /// How long [`KubeSource::start`] waits for the first full list of every kind.
    pub sync_timeout: Duration,
    /// How often a kind the cluster does not serve (no Istio CRDs, say) is looked for again.
    pub recheck_absent: Duration,
    pub snapshot: SnapshotOptions,
}

impl Default for KubeSourceConfig {
    fn default() -> Self {
        KubeSourceConfig {
            kinds: Kind::MESH.to_vec(),
            secrets: None,
            debounce: DEFAULT_DEBOUNCE,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            recheck_absent: DEFAULT_RECHECK_ABSENT,
            snapshot: SnapshotOptions::default(),
        }
    }
}

impl KubeSourceConfig {
    /// Only Pods: what the CA needs to tell which service accounts run on which node (and all
    /// its RBAC has to allow besides TokenReviews and its root Secret).
    pub fn pods_only() -> Self {
        KubeSourceConfig {
            kinds: vec![Kind::Pod],
            ..KubeSourceConfig::default()
        }
    }

    /// The kinds actually watched, in a fixed order.
    fn watched(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self
            .kinds
            .iter()
            .copied()
            .filter(|k| *k != Kind::Secret || self.secrets.is_some())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeConnection {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    InCluster,
    /// A kubeconfig file, with its current context unless one is named.
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
}

impl KubeConnection {
    /// A client for this connection. Nothing is sent to the API server yet.
    pub async fn client(&self) -> Result<Client, KubeSourceError> {
        let config = match self {
            KubeConnection::InCluster => {
                ::kube::Config::incluster().map_err(KubeSourceError::InCluster)?
            }
            KubeConnection::Kubeconfig { path, context } => {
                let kubeconfig = ::kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    KubeSourceError::Kubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                let options = ::kube::config::KubeConfigOptions {
                    context: context.clone(),
                    ..Default::default()
                };
                ::kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| KubeSourceError::Kubeconfig {
                        path: path.clone(),
                        source,
                    })?
            }
        };
        Client::try_from(config).map_err(KubeSourceError::Client)
    }
}

/// Why the Kubernetes source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot use the kubeconfig {}: {source}; check the --kubeconfig path, that it is a kubeconfig file, and its current context", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: ::kube::config::KubeconfigError,
    },
    #[error("no in-cluster Kubernetes configuration ({0}); --in-cluster only works in a pod with a service account token, use --kubeconfig elsewhere")]
    InCluster(#[source] ::kube::config::InClusterError),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
    #[error("the API server did not deliver a full list of {pending} within {timeout:?}{last_errors}; check that it is reachable and that this service account may list and watch these kinds (RBAC)")]
    NotSynced {
        pending: String,
        timeout: Duration,
        /// `; last error: ...` lines, or empty.
        last_errors: String,
    },
}

/// A watch that failed; the watcher retries by itself, this is for logs and admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchFailure {
    pub kind: Kind,
    pub message: String,
    pub at: SystemTime,
}

impl fmt::Display for WatchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "watching {}s: {}", self.kind, self.message)
    }
}

/// State shared by the watch tasks, the publisher and the handle.
struct Shared {
    store: Mutex<store::Store>,
    /// Woken by every update that changed the store.
    wake: Notify,
    sender: channel::Sender<Arc<Snapshot>>,
    /// The latest unresolved failure of each kind; cleared by the next event of that kind.
    failures: Mutex<BTreeMap<Kind, WatchFailure>>,
    kinds: Vec<Kind>,
    debounce: Duration,
    options: SnapshotOptions,
}

impl Shared {
    fn new(config: &KubeSourceConfig) -> Self {
        let (sender, _) = channel::channel(Arc::new(Snapshot::default()));
        Shared {
            store: Mutex::default(),
            wake: Notify::new(),
            sender,
            failures: Mutex::default(),
            kinds: config.watched(),
            debounce: config.debounce,
            options: config.snapshot.clone(),
        }
    }

    fn store(&self) -> MutexGuard<'_, store::Store> {
        // Updates are single steps on plain maps: a panic elsewhere leaves them consistent.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failures(&self) -> MutexGuard<'_, BTreeMap<Kind, WatchFailure>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_failure(&self, kind: Kind, message: String) {
        self.failures().insert(
            kind,
            WatchFailure {
                kind,
                message,
                at: SystemTime::now(),
            },
        );
    }

    fn clear_failure(&self, kind: Kind) {
        self.failures().remove(&kind);
    }
}

/// The Kubernetes API as a source of snapshots. Dropping the last handle stops its tasks.
pub struct KubeSource {
    shared: Arc<Shared>,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("kinds", &self.shared.kinds)
            .field("generation", &self.current().generation())
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Starts watching and waits until every kind has been listed once, so the first snapshot
    /// (generation 1) is the whole cluster, never a partial view. Must be called within a tokio
    /// runtime. Errors say which kinds did not arrive and the API server's last answer.
    pub async fn start(
        client: Client,
        config: KubeSourceConfig,
    ) -> Result<Arc<Self>, KubeSourceError> {
        let shared = Arc::new(Shared::new(&config));
        let mut tasks = watch::spawn(&client, &config, &shared);
        tasks.push(tokio::spawn(publish::run(Arc::clone(&shared))));
        // With no kinds to watch nothing would ever wake the publisher for the first snapshot.
        shared.wake.notify_one();
        let source = Arc::new(KubeSource {
            shared,
            client,
            tasks,
        });
        let mut snapshots = source.subscribe();
        let synced = tokio::time::timeout(
            config.sync_timeout,
            snapshots.wait_for(|snapshot| snapshot.generation() > 0),
        )
        .await;
        if let Ok(Ok(_)) = synced {
            return Ok(source);
        }
        let pending: Vec<&str> = {
            let store = source.shared.store();
            source
                .shared
                .kinds
                .iter()
                .filter(|kind| !store.synced(**kind))
                .map(|kind| kind.name())
                .collect()
        };
        let last_errors: String = source
            .failures()
            .iter()
            .map(|failure| format!("; last error {failure}"))
            .collect();
        Err(KubeSourceError::NotSynced {
            pending: if pending.is_empty() {
                "the cluster".to_owned()
            } else {
                pending.join(", ")
            },
            timeout: config.sync_timeout,
            last_errors,
        })
    }

    /// A receiver that always holds the newest snapshot and wakes on each new one.
    pub fn subscribe(&self) -> channel::Receiver<Arc<Snapshot>> {
        self.shared.sender.subscribe()
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.shared.sender.borrow())
    }

    /// The most recent watch failure not yet followed by a successful event, if any.
    pub fn last_error(&self) -> Option<WatchFailure> {
        self.failures().into_iter().max_by_key(|failure| failure.at)
    }

    /// Every kind's unresolved watch failure.
    pub fn failures(&self) -> Vec<WatchFailure> {
        self.shared.failures().values().cloned().collect()
    }

    /// Objects the API server holds that the mesh cannot use (left out of the snapshot), as
    /// `Kind namespace/name: field ...: problem`.
    pub fn problems(&self) -> Vec<String> {
        self.shared.store().problems()
    }

    /// The kinds being watched.
    pub fn kinds(&self) -> &[Kind] {
        &self.shared.kinds
    }

    /// The client, for callers that need the API server for something else (the CA's
    /// TokenReviews) without a second connection pool.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A kubeconfig for port 1 on loopback: nothing listens there, connections are refused.
    fn write_kubeconfig(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
",
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_reported_with_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_kubeconfig(&dir);
        let connection = KubeConnection::Kubeconfig {
            path: path.clone(),
            context: None,
        };
        let client = connection.client().await.unwrap();
        let config = KubeSourceConfig {
            kinds: vec![Kind::Namespace, Kind::Pod],
            sync_timeout: Duration::from_secs(2),
            ..KubeSourceConfig::default()
        };
        let error = KubeSource::start(client, config)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("full list of Namespace, Pod"), "{error}");
        assert!(error.contains("unreachable"), "{error}");
        assert!(error.contains("RBAC"), "{error}");

        let missing = KubeConnection::Kubeconfig {
            path: dir.path().join("absent"),
            context: None,
        };
        let error = missing.client().await.err().unwrap().to_string();
        assert!(error.contains("check the --kubeconfig path"), "{error}");
        let wrong_context = KubeConnection::Kubeconfig {
            path,
            context: Some("nope".into()),
        };
        assert!(wrong_context.client().await.is_err());
    }

    #[test]
    fn secrets_are_watched_only_with_a_scope() {
        let mut config = KubeSourceConfig {
            kinds: vec![Kind::Secret, Kind::Pod, Kind::Pod],
            ..KubeSourceConfig::default()
        };
        assert_eq!(config.watched(), vec![Kind::Pod]);
        config.secrets = Some(SecretScope::default());
        assert_eq!(config.watched(), vec![Kind::Pod, Kind::Secret]);
        assert_eq!(KubeSourceConfig::pods_only().watched(), vec![Kind::Pod]);
        assert_eq!(KubeSourceConfig::default().watched(), Kind::MESH.to_vec());
    }

    #[tokio::test]
    async fn a_source_of_no_kinds_still_publishes_its_empty_snapshot() {
        // The client is never used: no kind, no request.
        let client = KubeConnection::Kubeconfig {
            path: write_kubeconfig(&tempfile::tempdir().unwrap()),
            context: None,
        }
        .client()
        .await
        .unwrap();
        let config = KubeSourceConfig {
            kinds: vec![],
            sync_timeout: Duration::from_secs(5),
            ..KubeSourceConfig::default()
        };
        let source = KubeSource::start(client, config).await.unwrap();
        assert_eq!(source.current().generation(), 1);
    }
}
