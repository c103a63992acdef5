//! The cluster as the mesh sees it.
//!
//! Data flows one way (DESIGN §2): a **source** turns Kubernetes objects into the compact
//! [`model`] (through [`convert`], shared by all sources), builds an indexed, immutable
//! [`Snapshot`], and publishes it as `Arc<Snapshot>` on a `tokio::sync::watch` channel; proxies
//! only read snapshots.
//!
//! Sources:
//! - [`LocalSource`]: `--manifests` files and folders (multi-document YAML or JSON), reloaded
//!   live when their content changes; a bad edit is reported with file, document (1-based) and
//!   field, and the last good snapshot stays in force — except for an AuthorizationPolicy that
//!   cannot be understood, which is reported and enforced in its fail-closed form while the
//!   rest loads ([`policy`]).
//! - [`KubeSource`]: the Kubernetes API (`--kubeconfig`, `--in-cluster`), one watcher per kind
//!   feeding the same `convert` functions into [`Snapshot::build`], debounced.
//!
//! [`Source`] and [`SourceArgs`] let a binary pick one by flags.
//!
//! ```no_run
//! # async fn example() -> Result<(), discovery::ManifestErrors> {
//! use discovery::{LocalSource, LocalSourceConfig};
//! let source = LocalSource::load(LocalSourceConfig::new(["/etc/ambit/manifests"]))?;
//! let _poller = source.spawn();
//! let mut snapshots = source.subscribe();
//! while snapshots.changed().await.is_ok() {
//!     let snapshot = snapshots.borrow_and_update().clone();
//!     tracing::info!(generation = snapshot.generation(), "new snapshot");
//! }
//! # Ok(())
//! # }
//! ```

pub mod convert;
mod decode;
pub mod error;
pub mod fuzzing;
pub mod gateway_api;
mod kinds;
pub mod kube;
pub mod local;
pub mod model;
pub mod policy;
mod raw;
pub mod snapshot;
pub mod source;

pub use error::{Location, ManifestError, ManifestErrors};
pub use gateway_api::{GatewayApiDump, GatewayApiView, RejectedObject};
pub use kube::{
    Kind, KindInfo, KubeConnection, KubeSource, KubeSourceConfig, KubeSourceError, SecretScope,
    WatchFailure,
};
pub use local::{LocalSource, LocalSourceConfig, PollOutcome, DEFAULT_POLL_INTERVAL};
pub use model::{
    ambient_enrolled, EndpointSlice, Labels, NamedPort, Namespace, Protocol, Secret, Service,
    ServicePort, TargetPort, WaypointBinding, Workload,
};
pub use policy::{
    authorize, Action, AuthorizationPolicy, ConnectionAttrs, Decision, Invalid, PolicyRef,
};
pub use snapshot::{
    Conflict, Endpoint, Objects, Snapshot, SnapshotOptions, WaypointRef, DEFAULT_ROOT_NAMESPACE,
};
pub use source::{RunningLocal, Source, SourceArgs, SourceConfig, SourceError};
