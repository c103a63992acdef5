//! The CA's view of which pods run where, from `--manifests` through `discovery`'s local source
//! (live: a pod scheduled after start-up can obtain its certificate without a CA restart).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use discovery::{LocalSource, LocalSourceConfig, ManifestErrors};

use crate::authz::{NodeWorkloads, Refusal};

pub struct ManifestWorkloads {
    source: Arc<LocalSource>,
    _poller: tokio::task::JoinHandle<()>,
}

impl ManifestWorkloads {
    /// Loads the manifests (refusing to start on errors) and follows their changes.
    /// Must be called within a tokio runtime.
    pub fn start(paths: Vec<PathBuf>, poll_interval: Duration) -> Result<Self, ManifestErrors> {
        let mut config = LocalSourceConfig::new(paths);
        config.poll_interval = poll_interval;
        let source = LocalSource::load(config)?;
        let poller = source.spawn();
        Ok(ManifestWorkloads {
            source,
            _poller: poller,
        })
    }
}

impl Drop for ManifestWorkloads {
    fn drop(&mut self) {
        self._poller.abort();
    }
}

impl NodeWorkloads for ManifestWorkloads {
    fn runs_service_account(
        &self,
        node: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<bool, Refusal> {
        Ok(self
            .source
            .current()
            .node_runs_service_account(node, namespace, service_account))
    }
}
