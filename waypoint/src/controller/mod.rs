//! `waypoint controller`: the Kubernetes-mode waypoint controller (DESIGN §2, §6).
//!
//! It watches the cluster through [`discovery`] and, on every new snapshot (and every
//! `--resync`, which also repairs objects someone else changed or deleted), decides then acts:
//! - [`desired::desired`] (pure) lists, for each Gateway of class `ambit-waypoint`, the
//!   ServiceAccount, Service, Deployment and trust-bundle ConfigMap that run its waypoint, plus
//!   the one ClusterRoleBinding that lets the waypoints read the cluster; [`apply`]
//!   server-side-applies them (field manager [`FIELD_MANAGER`]) with owner references to their
//!   Gateway, so deleting the Gateway deletes them (Kubernetes' garbage collector);
//! - [`crate::status::compute`] (pure) gives the status of the `ambit-waypoint` GatewayClass,
//!   of those Gateways and of every route with a Service parent; [`status_write`] PATCHes the
//!   `status` subresource of those whose status changed ([`status_plan`]).
//!
//! A failed call is logged with its cause and what to check, and the pass is retried after
//! [`RETRY_AFTER_FAILURE`]; the GatewayClasses themselves are created by the CA
//! (ca/src/gateway_classes.rs), which the controller does not replace.

pub mod api;
pub mod apply;
pub mod desired;
pub mod status_plan;
pub mod status_write;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use discovery::{Kind, KubeSourceConfig, Snapshot, SnapshotOptions, Source};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::Client;

use self::apply::{gateway_uids, Applier};
use self::desired::{desired, Settings};

/// The first argument that selects this command (`waypoint controller …`).
pub const SUBCOMMAND: &str = "controller";
/// The field manager of every apply and status write.
pub const FIELD_MANAGER: &str = "ambit-waypoint-controller";
/// The pause before a pass that had failures is redone.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The kinds the controller reads: what the status and the waypoints' objects depend on, and
/// exactly what its ClusterRole lets it watch.
const WATCHED: [Kind; 8] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::ReferenceGrant,
];

#[derive(Parser, Debug, Clone)]
#[command(
    name = "waypoint controller",
    version,
    about = "Runs the waypoints of Gateways of class ambit-waypoint (ServiceAccount, Service, Deployment) and writes Gateway API status (the ambit-waypoint GatewayClass, its Gateways, routes with Service parents) to the Kubernetes API"
)]
pub struct ControllerArgs {
    /// `--kubeconfig PATH` or `--in-cluster` (`--manifests` is refused: in local mode use
    /// `waypoint status --manifests DIR`).
    #[command(flatten)]
    pub source: discovery::SourceArgs,

    /// The waypoint image the Deployments run.
    #[arg(
        long,
        env = "WAYPOINT_IMAGE",
        default_value = "ghcr.io/ambit-mesh/waypoint:0.1.0"
    )]
    pub image: String,

    /// The mesh CA the waypoints obtain their certificates from, `host:port`.
    #[arg(
        long,
        env = "CA_ADDRESS",
        default_value = "ambit-ca.ambit-system.svc:15012"
    )]
    pub ca_address: String,

    /// Audience of the waypoints' projected token: the CA's `--token-audience`.
    #[arg(long, env = "CA_TOKEN_AUDIENCE", default_value = "ambit-ca")]
    pub token_audience: String,

    /// The ConfigMap (NAMESPACE/NAME) where the CA publishes the trust bundle (`ca.crt`); each
    /// waypoint gets a copy in its namespace.
    #[arg(long, env = "ROOT_CONFIGMAP", default_value = "ambit-system/ambit-ca-root-cert", value_parser = parse_namespaced)]
    pub root_configmap: (String, String),

    #[arg(long, env = "TRUST_DOMAIN", default_value = certs::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// The read-only ClusterRole every waypoint's service account is bound to.
    #[arg(long, env = "WAYPOINT_CLUSTER_ROLE", default_value = "ambit-waypoint")]
    pub waypoint_cluster_role: String,

    /// The ClusterRoleBinding (one, managed whole) that binds the waypoints to it.
    #[arg(
        long,
        env = "WAYPOINT_CLUSTER_ROLE_BINDING",
        default_value = "ambit-waypoints"
    )]
    pub waypoint_binding: String,

    /// The OpenTelemetry collector (OTLP/HTTP, e.g. `http://otel-collector.observability:4318`)
    /// every waypoint exports its request spans to; unset, the waypoints keep no spans.
    #[arg(long, env = "WAYPOINT_OTLP_ENDPOINT")]
    pub waypoint_otlp_endpoint: Option<String>,

    /// The waypoints' `--trace-sampling` (percent of the traces that start at a waypoint).
    #[arg(long, env = "WAYPOINT_TRACE_SAMPLING", value_parser = parse_percent)]
    pub waypoint_trace_sampling: Option<String>,

    /// How often everything is applied and checked again without a change in the cluster.
    #[arg(long, env = "RESYNC", default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
}

/// Checked here so that a typo fails the controller, not every waypoint it starts.
fn parse_percent(text: &str) -> Result<String, String> {
    match text.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

fn parse_namespaced(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not NAMESPACE/NAME, e.g. ambit-system/ambit-ca-root-cert"
        )),
    }
}

impl ControllerArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            image: self.image.clone(),
            ca_address: self.ca_address.clone(),
            token_audience: self.token_audience.clone(),
            trust_domain: self.trust_domain.clone(),
            waypoint_cluster_role: self.waypoint_cluster_role.clone(),
            waypoint_binding: self.waypoint_binding.clone(),
            otlp_endpoint: self.waypoint_otlp_endpoint.clone(),
            trace_sampling: self.waypoint_trace_sampling.clone(),
        }
    }
}

/// Whether `args` (program name first) ask for this command.
pub fn is_requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|first| first == SUBCOMMAND)
}

/// Runs the command with the process arguments (`waypoint controller …`); exits 2 on usage
/// errors, 1 when the cluster cannot be reached at start-up.
pub fn main(args: Vec<OsString>) -> ExitCode {
    // `waypoint controller` is the program name clap shows in usage and errors.
    let args =
        std::iter::once(OsString::from("waypoint controller")).chain(args.into_iter().skip(2));
    let args = match ControllerArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    if !args.source.manifests.is_empty() {
        anyhow::bail!("waypoint controller writes to the Kubernetes API: pass --kubeconfig PATH or --in-cluster (for manifests, `waypoint status --manifests DIR` prints the status it would write)");
    }
    let kube = KubeSourceConfig {
        kinds: WATCHED.to_vec(),
        ..KubeSourceConfig::default()
    };
    let config = args.source.config_with(SnapshotOptions::default(), kube)?;
    let source = Source::start(config).await?;
    let Some(client) = source.kube_client().cloned() else {
        anyhow::bail!(
            "the source is not the Kubernetes API; pass --kubeconfig PATH or --in-cluster"
        );
    };
    tracing::info!(field_manager = FIELD_MANAGER, "waypoint controller started");
    let controller = Controller {
        client,
        settings: args.settings(),
        root_configmap: args.root_configmap.clone(),
        applier: Applier::default(),
    };
    tokio::select! {
        () = controller.run(source, args.resync) => Ok(()),
        signal = runtime::signal::termination_requested() => {
            tracing::info!(signal, "termination requested");
            Ok(())
        }
    }
}

struct Controller {
    client: Client,
    settings: Settings,
    root_configmap: (String, String),
    applier: Applier,
}

impl Controller {
    async fn run(mut self, source: Source, resync: Duration) {
        let mut snapshots = source.subscribe();
        let mut full = true;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            let ok = self.reconcile(&snapshot, full).await;
            let wait = if ok { resync } else { RETRY_AFTER_FAILURE };
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        tracing::warn!("the cluster source stopped; the controller stops");
                        return;
                    }
                    full = false;
                }
                () = tokio::time::sleep(wait) => full = true,
            }
        }
    }

    /// One pass; `false` when something failed (each failure is logged).
    async fn reconcile(&mut self, snapshot: &Arc<Snapshot>, full: bool) -> bool {
        let bundle = self.trust_bundle().await;
        let objects = desired(snapshot, &self.settings, bundle.as_deref());
        let owners: Vec<(String, String)> = objects
            .iter()
            .filter_map(|o| Some((o.namespace.clone()?, o.owner.clone()?)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut ok = true;
        match gateway_uids(&self.client, owners).await {
            Ok(uids) => {
                for error in self
                    .applier
                    .apply_all(&self.client, &objects, &uids, full)
                    .await
                {
                    tracing::warn!(%error, "not applied");
                    ok = false;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "waypoint objects not applied");
                ok = false;
            }
        }
        let statuses = crate::status::compute_for_controller(snapshot, SystemTime::now());
        let outcome = status_write::write_all(&self.client, statuses).await;
        for error in outcome.failures {
            tracing::warn!(%error, "status not written");
            ok = false;
        }
        ok
    }

    /// The CA's published `ca.crt`, or `None` (logged) while it cannot be read.
    async fn trust_bundle(&self) -> Option<String> {
        let (namespace, name) = &self.root_configmap;
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(map)) => {
                let bundle = map.data.and_then(|mut data| data.remove("ca.crt"));
                if bundle.is_none() {
                    tracing::warn!(configmap = %format!("{namespace}/{name}"),
                        "the trust bundle ConfigMap has no ca.crt yet; the waypoints' copies wait for it");
                }
                bundle
            }
            Ok(None) => {
                tracing::warn!(configmap = %format!("{namespace}/{name}"),
                    "the trust bundle ConfigMap does not exist yet (ambit-ca --root-configmap publishes it); the waypoints' copies wait for it");
                None
            }
            Err(error) => {
                tracing::warn!(configmap = %format!("{namespace}/{name}"), %error,
                    "cannot read the trust bundle; the controller's service account needs get on that ConfigMap");
                None
            }
        }
    }
}
