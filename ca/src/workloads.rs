//! The CA's view of which pods run where, from `discovery`: `--manifests` or the Kubernetes API
//! (live: a pod scheduled after start-up can obtain its certificate without a CA restart).

use discovery::Source;

use crate::authz::{NodeWorkloads, Refreshing, Refusal};

/// Either source (`--manifests` or the Kubernetes API): the snapshot in force answers.
impl NodeWorkloads for Source {
    fn runs_service_account(
        &self,
        node: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<bool, Refusal> {
        let snapshot = self.current();
        // Generation 0 is the empty placeholder before the first list: say "not ready" rather
        // than refusing as if the node ran nothing.
        if snapshot.generation() == 0 {
            return Err(Refusal::NotReady);
        }
        Ok(snapshot.node_runs_service_account(node, namespace, service_account))
    }

    fn refresh(&self) -> Refreshing<'_> {
        Box::pin(Source::refresh(self))
    }
}
