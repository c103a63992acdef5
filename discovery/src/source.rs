//! Choosing a source by flags: `--manifests` (local mode) or the Kubernetes API
//! (`--kubeconfig`, `--in-cluster`). Binaries flatten [`SourceArgs`] into their CLI and hold a
//! [`Source`], which offers what both sources offer.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     source: discovery::SourceArgs,
//! }
//! let cli = <Cli as clap::Parser>::parse();
//! let source = discovery::Source::start(cli.source.config()?).await?;
//! let mut snapshots = source.subscribe();
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::ManifestErrors;
use crate::kube::{KubeConnection, KubeSource, KubeSourceConfig, KubeSourceError};
use crate::local::{LocalSource, LocalSourceConfig, DEFAULT_POLL_INTERVAL};
use crate::snapshot::{Snapshot, SnapshotOptions};

/// The flags that pick a source; exactly one of `--manifests`, `--kubeconfig`, `--in-cluster`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// Kubernetes manifests (YAML file or folder; repeatable or comma-separated) describing the
    /// cluster: the embedded, API-server-less mode. Edits are picked up live.
    #[arg(long = "manifests", env = "AMBIT_MANIFESTS", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,

    /// Read the cluster from the Kubernetes API, with this kubeconfig (its current context
    /// unless --kube-context is given).
    #[arg(long, env = "AMBIT_KUBECONFIG", conflicts_with_all = ["manifests", "in_cluster"])]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use instead of the current one.
    #[arg(long, env = "AMBIT_KUBE_CONTEXT")]
    pub kube_context: Option<String>,

    /// Read the cluster from the Kubernetes API with this pod's service account.
    #[arg(long, env = "AMBIT_IN_CLUSTER", conflicts_with = "manifests")]
    pub in_cluster: bool,

    /// How often the manifests are checked for changes (local mode).
    #[arg(long, env = "MANIFESTS_POLL_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub manifests_poll_interval: Duration,
}

impl SourceArgs {
    /// Whether the cluster view comes from a Kubernetes API server (`--kubeconfig`,
    /// `--in-cluster`) rather than manifests.
    pub fn kubernetes(&self) -> bool {
        self.kubeconfig.is_some() || self.in_cluster
    }

    /// Which source the flags ask for, with default options.
    pub fn config(&self) -> Result<SourceConfig, SourceError> {
        self.config_with(SnapshotOptions::default(), KubeSourceConfig::default())
    }

    /// Which source the flags ask for, with the given snapshot options and (for the API
    /// source) kinds and timing; `kube.snapshot` is replaced by `snapshot`.
    pub fn config_with(
        &self,
        snapshot: SnapshotOptions,
        mut kube: KubeSourceConfig,
    ) -> Result<SourceConfig, SourceError> {
        // Checked here, not by clap: clap drops `requires` when the required flag conflicts with
        // one that is present.
        if self.kube_context.is_some() && self.kubeconfig.is_none() {
            return Err(SourceError::ContextWithoutKubeconfig);
        }
        let connection = match (&self.kubeconfig, self.in_cluster) {
            (Some(path), false) => Some(KubeConnection::Kubeconfig {
                path: path.clone(),
                context: self.kube_context.clone(),
            }),
            (None, true) => Some(KubeConnection::InCluster),
            (None, false) => None,
            (Some(_), true) => return Err(SourceError::Ambiguous),
        };
        match (connection, self.manifests.is_empty()) {
            (Some(connection), true) => {
                kube.snapshot = snapshot;
                Ok(SourceConfig::Kubernetes {
                    connection,
                    config: kube,
                })
            }
            (None, false) => {
                let mut local = LocalSourceConfig::new(self.manifests.clone());
                local.poll_interval = self.manifests_poll_interval;
                local.snapshot = snapshot;
                Ok(SourceConfig::Manifests(local))
            }
            (Some(_), false) => Err(SourceError::Ambiguous),
            (None, true) => Err(SourceError::Missing),
        }
    }
}

/// A source, configured.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Manifests(LocalSourceConfig),
    Kubernetes {
        connection: KubeConnection,
        config: KubeSourceConfig,
    },
}

impl SourceConfig {
    /// Local mode with default options: for tests and the embedded demo.
    pub fn manifests(paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        let mut config = LocalSourceConfig::new(paths);
        config.poll_interval = DEFAULT_POLL_INTERVAL;
        SourceConfig::Manifests(config)
    }
}

/// Why no source could be started.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no cluster source: pass --manifests PATH (local mode), --kubeconfig PATH or --in-cluster (Kubernetes API)")]
    Missing,
    #[error("--manifests, --kubeconfig and --in-cluster exclude each other; pass exactly one")]
    Ambiguous,
    #[error("--kube-context selects a context of --kubeconfig; pass --kubeconfig too")]
    ContextWithoutKubeconfig,
    #[error("cannot load --manifests; fix these and restart:\n{0}")]
    Manifests(#[from] ManifestErrors),
    #[error(transparent)]
    Kubernetes(#[from] KubeSourceError),
}

/// A running source of either kind. Cloning shares it; the last clone dropped stops it.
#[derive(Debug, Clone)]
pub enum Source {
    Local(Arc<RunningLocal>),
    Kubernetes(Arc<KubeSource>),
}

/// A [`LocalSource`] with its poller, stopped when dropped.
#[derive(Debug)]
pub struct RunningLocal {
    pub source: Arc<LocalSource>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for RunningLocal {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Source {
    /// Loads the manifests or connects and lists the cluster; returns once the first snapshot
    /// is in force. Must be called within a tokio runtime.
    pub async fn start(config: SourceConfig) -> Result<Source, SourceError> {
        match config {
            SourceConfig::Manifests(config) => {
                let source = LocalSource::load(config)?;
                let poller = source.spawn();
                Ok(Source::Local(Arc::new(RunningLocal { source, poller })))
            }
            SourceConfig::Kubernetes { connection, config } => {
                let client = connection.client().await?;
                Ok(Source::Kubernetes(KubeSource::start(client, config).await?))
            }
        }
    }

    /// A receiver that always holds the newest snapshot and wakes on each new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        match self {
            Source::Local(local) => local.source.subscribe(),
            Source::Kubernetes(kube) => kube.subscribe(),
        }
    }

    /// Brings the view up to date now rather than at the next poll, for a caller that was just
    /// told about an object it cannot find yet (a pod's CNI ADD, its certificate request).
    /// Local mode reads the manifests again; the Kubernetes watch is live already.
    pub async fn refresh(&self) {
        if let Source::Local(local) = self {
            let source = local.source.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || source.poll()).await {
                tracing::warn!(%error, "manifest refresh did not complete");
            }
        }
    }

    /// The snapshot in force.
    pub fn current(&self) -> Arc<Snapshot> {
        match self {
            Source::Local(local) => local.source.current(),
            Source::Kubernetes(kube) => kube.current(),
        }
    }

    /// Why the view may be stale or incomplete, for admin endpoints: rejected manifests, or a
    /// failing watch and objects the mesh cannot use; and in both modes AuthorizationPolicies
    /// that could not be understood (enforced fail-closed).
    pub fn last_error(&self) -> Option<String> {
        match self {
            Source::Local(local) => {
                let lines: Vec<String> = [local.source.last_error(), local.source.problems()]
                    .into_iter()
                    .flatten()
                    .map(|errors| errors.to_string())
                    .collect();
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            Source::Kubernetes(kube) => {
                let mut lines: Vec<String> =
                    kube.failures().iter().map(ToString::to_string).collect();
                lines.extend(kube.problems());
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
        }
    }

    /// The Kubernetes client, when the source is the API.
    pub fn kube_client(&self) -> Option<&::kube::Client> {
        match self {
            Source::Local(_) => None,
            Source::Kubernetes(kube) => Some(kube.client()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        source: SourceArgs,
    }

    fn parse(args: &[&str]) -> Result<SourceConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("bin").chain(args.iter().copied()))
            .map_err(|e| e.kind().to_string())?;
        cli.source.config().map_err(|e| e.to_string())
    }

    #[test]
    fn flags_choose_the_source() {
        match parse(&["--manifests", "a.yaml,b", "--manifests-poll-interval", "2s"]).unwrap() {
            SourceConfig::Manifests(config) => {
                assert_eq!(
                    config.paths,
                    vec![PathBuf::from("a.yaml"), PathBuf::from("b")]
                );
                assert_eq!(config.poll_interval, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["--kubeconfig", "/k", "--kube-context", "dev"]).unwrap() {
            SourceConfig::Kubernetes { connection, config } => {
                assert_eq!(
                    connection,
                    KubeConnection::Kubeconfig {
                        path: "/k".into(),
                        context: Some("dev".into())
                    }
                );
                assert_eq!(config.kinds, crate::kube::Kind::MESH.to_vec());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["--in-cluster"]).unwrap(),
            SourceConfig::Kubernetes {
                connection: KubeConnection::InCluster,
                ..
            }
        ));
    }

    #[test]
    fn exactly_one_source_is_required() {
        assert!(parse(&[]).unwrap_err().contains("--manifests PATH"));
        assert!(parse(&["--manifests", "a", "--kubeconfig", "k"])
            .unwrap_err()
            .contains("cannot be used"));
        assert!(parse(&["--in-cluster", "--kubeconfig", "k"])
            .unwrap_err()
            .contains("cannot be used"));
        assert!(parse(&["--kube-context", "x", "--in-cluster"])
            .unwrap_err()
            .contains("pass --kubeconfig too"));
    }
}
