//! Live inbound connections, so that a policy change can close those it now denies (Istio
//! semantics: authorization is not only checked at connect time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use certs::SpiffeId;
use discovery::{ConnectionAttrs, Decision, Snapshot};
use tokio_util::sync::CancellationToken;

/// What is needed to re-authorise a connection against a new snapshot.
#[derive(Debug, Clone)]
pub struct Authorised {
    pub dst_namespace: String,
    pub dst_workload: String,
    pub src_ip: IpAddr,
    pub src_identity: Option<SpiffeId>,
    pub dst_port: u16,
}

impl Authorised {
    /// Evaluates the snapshot's policies for this connection's destination.
    pub fn decide(&self, snapshot: &Snapshot) -> Decision {
        let Some(workload) = snapshot.workload(&self.dst_namespace, &self.dst_workload) else {
            // The destination pod is gone from the cluster's view; its own removal closes
            // connections, policy has nothing to say.
            return Decision::Allow;
        };
        let attrs = ConnectionAttrs {
            src_ip: self.src_ip,
            src_identity: self.src_identity.as_ref(),
            dst_port: self.dst_port,
        };
        discovery::authorize(snapshot.policies_for(workload), &attrs)
    }
}

struct Live {
    authorised: Authorised,
    cancel: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

/// The table of live connections. Cheap to clone.
#[derive(Clone, Default)]
pub struct ConnectionTable {
    inner: Arc<Mutex<HashMap<u64, Live>>>,
    next_id: Arc<AtomicU64>,
}

/// Held by a proxied connection: cancelled when policy revokes it, deregisters on drop.
pub struct Registration {
    table: ConnectionTable,
    id: u64,
    pub cancelled: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Registration {
    /// Why the connection was revoked, if it was.
    pub fn revocation(&self) -> Option<String> {
        self.reason.get().cloned()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.table.lock();
        live.remove(&self.id);
        // A wave of connections leaves the map's capacity behind (~2 MiB at 10 000); give it
        // back once the table is mostly empty. Halving at a quarter keeps this amortised O(1).
        if live.capacity() > SHRINK_ABOVE_CAPACITY && live.len() < live.capacity() / 4 {
            let keep = live.len() * 2;
            live.shrink_to(keep);
        }
    }
}

/// Below this capacity the table never shrinks: a node's usual load keeps its table.
const SHRINK_ABOVE_CAPACITY: usize = 1024;

impl ConnectionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Live>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, authorised: Authorised, parent: &CancellationToken) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = parent.child_token();
        let reason = Arc::new(OnceLock::new());
        self.lock().insert(
            id,
            Live {
                authorised,
                cancel: cancel.clone(),
                reason: reason.clone(),
            },
        );
        Registration {
            table: self.clone(),
            id,
            cancelled: cancel,
            reason,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Re-authorises every live connection; returns how many were revoked.
    pub fn revalidate(&self, snapshot: &Snapshot) -> usize {
        let mut revoked = 0;
        for live in self.lock().values() {
            let reason = match live.authorised.decide(snapshot) {
                Decision::Allow => continue,
                Decision::DeniedBy(policy) => {
                    format!("connection revoked: policy change, now denied by AuthorizationPolicy {policy}")
                }
                Decision::NotAllowed => "connection revoked: policy change, no ALLOW AuthorizationPolicy matches it any more".to_owned(),
            };
            let _ = live.reason.set(reason);
            live.cancel.cancel();
            revoked += 1;
        }
        revoked
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use discovery::{LocalSource, LocalSourceConfig};

    fn snapshot(policy: &str) -> Arc<Snapshot> {
        let yaml = format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: cart-0, namespace: shop, labels: {{app: cart}}}}
spec: {{nodeName: node-b, serviceAccountName: cart, containers: [{{name: c}}]}}
status: {{podIP: 10.1.2.2}}
{policy}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.yaml");
        std::fs::write(&file, yaml).unwrap();
        LocalSource::load(LocalSourceConfig::new([file]))
            .unwrap()
            .current()
    }

    const DENY_PORT_9090: &str = r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-port, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: DENY
  rules: [{to: [{operation: {ports: ["9090"]}}]}]
"#;

    fn to(workload: &str, port: u16) -> Authorised {
        Authorised {
            dst_namespace: "shop".into(),
            dst_workload: workload.into(),
            src_ip: "10.1.1.2".parse().unwrap(),
            src_identity: Some(SpiffeId::new("cluster.local", "shop", "frontend").unwrap()),
            dst_port: port,
        }
    }

    #[test]
    fn a_policy_change_revokes_exactly_the_connections_it_denies() {
        let table = ConnectionTable::default();
        let pod = CancellationToken::new();
        let app = table.register(to("cart-0", 8080), &pod);
        let admin = table.register(to("cart-0", 9090), &pod);
        let gone = table.register(to("cart-9", 9090), &pod);
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.revalidate(&snapshot("")),
            0,
            "no policy, nothing revoked"
        );

        assert_eq!(table.revalidate(&snapshot(DENY_PORT_9090)), 1);
        assert!(!app.cancelled.is_cancelled());
        assert!(admin.cancelled.is_cancelled());
        assert_eq!(
            admin.revocation().as_deref(),
            Some("connection revoked: policy change, now denied by AuthorizationPolicy shop/no-admin-port")
        );
        // A pod gone from the cluster view is closed by its unenrollment, not by policy.
        assert!(!gone.cancelled.is_cancelled());
        drop((app, admin, gone));
        assert!(
            table.is_empty(),
            "registrations leave the table when dropped"
        );
    }

    #[test]
    fn the_table_gives_a_wave_of_connections_memory_back_once_it_has_passed() {
        let table = ConnectionTable::default();
        let pod = CancellationToken::new();
        let wave: Vec<Registration> = (0..10_000)
            .map(|_| table.register(to("cart-0", 8080), &pod))
            .collect();
        let at_peak = table.lock().capacity();
        assert!(at_peak >= 10_000);
        let steady: Vec<Registration> = (0..10)
            .map(|_| table.register(to("cart-0", 8080), &pod))
            .collect();
        drop(wave);
        let after = table.lock().capacity();
        assert!(
            after <= SHRINK_ABOVE_CAPACITY,
            "capacity {after} after the wave (peak {at_peak})"
        );
        assert_eq!(table.len(), steady.len(), "the live connections stay");
    }

    #[test]
    fn unenrolling_the_pod_ends_its_connections() {
        let table = ConnectionTable::default();
        let pod = CancellationToken::new();
        let live = table.register(to("cart-0", 8080), &pod);
        pod.cancel();
        assert!(live.cancelled.is_cancelled());
        assert_eq!(live.revocation(), None, "not a policy revocation");
    }
}
