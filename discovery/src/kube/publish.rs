//! Builds and publishes snapshots from the store, debounced.

use std::sync::Arc;

use crate::snapshot::{Conflict, Snapshot};

use super::Shared;

/// Publishes a snapshot after each burst of changes, forever; abort the task to stop.
///
/// A change wakes the loop, which then waits [`Shared::debounce`] so that the rest of the burst
/// lands in the same snapshot; changes during the wait or the build leave a wake-up behind
/// (`Notify` keeps one permit), so none is missed and at most one build follows per interval.
/// Nothing is published until every watched kind has been listed once: a snapshot with Pods
/// but not yet their Namespaces would unenroll every pod of a labelled namespace.
pub(super) async fn run(shared: Arc<Shared>) {
    let mut generation = 0u64;
    let mut conflicts: Vec<Conflict> = Vec::new();
    loop {
        shared.wake.notified().await;
        tokio::time::sleep(shared.debounce).await;
        let objects = {
            let mut store = shared.store();
            if !shared.kinds.iter().all(|kind| store.synced(*kind)) {
                continue;
            }
            // The first snapshot is due even for an empty cluster.
            if !store.take_changed() && generation > 0 {
                continue;
            }
            store.objects()
        };
        // Built inline: even for thousands of pods this is milliseconds, and the next burst is
        // being coalesced meanwhile anyway.
        let (snapshot, found) = Snapshot::build(objects, &shared.options);
        for conflict in found.iter().filter(|c| !conflicts.contains(c)) {
            // The API server allows what the manifest loader refuses (two ready pods with one
            // IP during a CNI mishap, two Services given one VIP by hand): keep the first.
            tracing::warn!(?conflict, "address claimed twice in the cluster; the first object (by namespace/name) is used");
        }
        conflicts = found;
        generation += 1;
        let snapshot = snapshot.with_generation(generation);
        if generation == 1 {
            tracing::info!(
                namespaces = snapshot.namespaces().count(),
                workloads = snapshot.workloads().count(),
                services = snapshot.services().count(),
                policies = snapshot.policies().count(),
                "Kubernetes API synced"
            );
        } else {
            tracing::debug!(
                generation,
                workloads = snapshot.workloads().count(),
                "snapshot rebuilt"
            );
        }
        shared.sender.send_replace(Arc::new(snapshot));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::super::store::Key;
    use super::super::{Kind, KubeSourceConfig};
    use super::*;
    use crate::kinds::Object;
    use crate::model::Namespace;

    fn shared(kinds: Vec<Kind>) -> Arc<Shared> {
        Arc::new(Shared::new(&KubeSourceConfig {
            kinds,
            ..KubeSourceConfig::default()
        }))
    }

    fn ns(name: &str, label: &str) -> (Key, Result<Option<Object>, crate::convert::ConvertError>) {
        let labels = [("team".to_owned(), label.to_owned())].into();
        let namespace = Namespace {
            name: name.to_owned(),
            labels,
            use_waypoint: None,
        };
        let object = Object::Namespace(namespace);
        ((String::new(), name.to_owned()), Ok(Some(object)))
    }

    /// Applies a namespace update the way a watch task does.
    fn apply(shared: &Shared, name: &str, label: &str) {
        let (key, converted) = ns(name, label);
        let mut store = shared.store();
        let outcome = store.kind_mut(Kind::Namespace).apply(key, converted);
        if store.note(outcome) {
            shared.wake.notify_one();
        }
    }

    /// A full (re)list, as after start-up or a 410 Gone.
    fn list(shared: &Shared, names: &[&str], label: &str) {
        let mut store = shared.store();
        store.kind_mut(Kind::Namespace).init();
        for name in names {
            let (key, converted) = ns(name, label);
            store.kind_mut(Kind::Namespace).init_apply(key, converted);
        }
        let outcome = store.kind_mut(Kind::Namespace).init_done();
        store.note(outcome);
        shared.wake.notify_one();
    }

    /// Lets the publisher run until it is idle again (time is paused: sleeps complete at once).
    async fn settle() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_published_before_every_kind_is_listed() {
        let shared = shared(vec![Kind::Namespace, Kind::Pod]);
        let task = tokio::spawn(run(Arc::clone(&shared)));
        list(&shared, &["a"], "a");
        settle().await;
        assert_eq!(shared.sender.borrow().generation(), 0);

        {
            let mut store = shared.store();
            let outcome = store.kind_mut(Kind::Pod).set_absent();
            store.note(outcome);
        }
        shared.wake.notify_one();
        settle().await;
        let snapshot = shared.sender.borrow().clone();
        assert_eq!(snapshot.generation(), 1);
        assert!(snapshot.namespace("a").is_some());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_cluster_still_gets_a_first_snapshot() {
        let shared = shared(vec![Kind::Namespace]);
        let task = tokio::spawn(run(Arc::clone(&shared)));
        list(&shared, &[], "a");
        settle().await;
        assert_eq!(shared.sender.borrow().generation(), 1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_are_coalesced_and_unchanged_objects_publish_nothing() {
        let shared = shared(vec![Kind::Namespace]);
        let task = tokio::spawn(run(Arc::clone(&shared)));
        let mut snapshots = shared.sender.subscribe();
        list(&shared, &["a"], "a");
        settle().await;
        assert_eq!(snapshots.borrow_and_update().generation(), 1);

        // A burst of 200 updates within one debounce interval: one snapshot with the last state.
        for i in 0..200 {
            apply(&shared, "a", &format!("v{i}"));
            tokio::task::yield_now().await;
        }
        settle().await;
        let snapshot = snapshots.borrow_and_update().clone();
        assert_eq!(snapshot.generation(), 2, "one rebuild for the whole burst");
        assert_eq!(snapshot.namespace("a").unwrap().labels["team"], "v199");

        // Re-applying what is in force (a status-only update, say) and a relist of the same
        // objects (after a 410 Gone) change nothing, so nothing is published.
        apply(&shared, "a", "v199");
        list(&shared, &["a"], "v199");
        settle().await;
        assert!(!snapshots.has_changed().unwrap(), "no change, no snapshot");

        // A relist without "a" (deleted while the watch was down) removes it.
        list(&shared, &["b"], "x");
        settle().await;
        let snapshot = snapshots.borrow_and_update().clone();
        assert_eq!(snapshot.generation(), 3);
        assert!(snapshot.namespace("a").is_none());
        assert!(snapshot.namespace("b").is_some());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn rebuilds_are_spaced_by_the_debounce_interval() {
        let shared = shared(vec![Kind::Namespace]);
        let task = tokio::spawn(run(Arc::clone(&shared)));
        list(&shared, &["a"], "a");
        settle().await;
        let start = tokio::time::Instant::now();
        // A change every 10 ms for one second: at most one rebuild per 100 ms (+1 for the tail).
        for i in 0..100 {
            apply(&shared, "a", &format!("v{i}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        settle().await;
        let generation = shared.sender.borrow().generation();
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(1));
        assert!(
            (2..=12).contains(&generation),
            "{generation} snapshots for 100 changes in 1 s"
        );
        assert_eq!(
            shared.sender.borrow().namespace("a").unwrap().labels["team"],
            "v99"
        );
        task.abort();
    }
}
