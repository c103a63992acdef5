#![allow(clippy::unwrap_used)]

use super::*;

impl Kept for u32 {}

fn key(name: &str) -> Key {
    ("ns".to_owned(), name.to_owned())
}

fn problem(field: &str) -> ConvertError {
    ConvertError::new(field, "bad")
}

#[test]
fn apply_reports_change_only_when_the_model_changes() {
    let mut store = KindStore::<u32>::default();
    assert!(store.apply(key("a"), Ok(Some(1))).changed);
    assert!(!store.apply(key("a"), Ok(Some(1))).changed, "same model");
    assert!(store.apply(key("a"), Ok(Some(2))).changed);
    assert!(
        store.apply(key("a"), Ok(None)).changed,
        "no longer for the mesh"
    );
    assert!(!store.apply(key("a"), Ok(None)).changed);
    assert!(!store.delete(&key("a")).changed, "already gone");
    assert_eq!(store.len(), 0);
}

#[test]
fn a_broken_object_is_dropped_and_reported_once() {
    let mut store = KindStore::<u32>::default();
    store.apply(key("a"), Ok(Some(1)));
    let outcome = store.apply(key("a"), Err(problem("spec.x")));
    assert!(outcome.changed && outcome.new_problem);
    assert_eq!(store.len(), 0);
    let again = store.apply(key("a"), Err(problem("spec.x")));
    assert!(
        !again.changed && !again.new_problem,
        "same problem, logged once"
    );
    assert!(store.apply(key("a"), Err(problem("spec.y"))).new_problem);
    store.apply(key("a"), Ok(Some(1)));
    assert!(store.problems.is_empty(), "fixed");
    store.apply(key("b"), Err(problem("spec.x")));
    store.delete(&key("b"));
    assert!(store.problems.is_empty(), "deleted");
}

#[test]
fn a_relist_replaces_the_objects_only_when_complete() {
    let mut store = KindStore::<u32>::default();
    assert!(!store.synced());
    store.init();
    store.init_apply(key("a"), Ok(Some(1)));
    store.init_apply(key("b"), Ok(Some(2)));
    assert_eq!(store.len(), 0, "nothing in force before InitDone");
    assert!(store.init_done().changed);
    assert!(store.synced());
    assert_eq!(store.len(), 2);

    // After a 410 Gone: b was deleted and c created while the watch was down.
    store.init();
    store.init_apply(key("a"), Ok(Some(1)));
    assert_eq!(
        store.len(),
        2,
        "the old objects stay in force during the relist"
    );
    store.init_apply(key("c"), Ok(Some(3)));
    assert!(store.init_done().changed);
    let mut keys: Vec<_> = store.objects.keys().map(|k| k.1.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["a", "c"], "no stale object, no lost one");

    // The same list again changes nothing.
    store.init();
    store.init_apply(key("a"), Ok(Some(1)));
    store.init_apply(key("c"), Ok(Some(3)));
    assert!(!store.init_done().changed);

    // An interrupted list is discarded by the next Init.
    store.init();
    store.init_apply(key("x"), Ok(Some(9)));
    store.init();
    store.init_apply(key("a"), Ok(Some(1)));
    store.init_apply(key("c"), Ok(Some(3)));
    assert!(!store.init_done().changed);
    assert!(!store.objects.contains_key(&key("x")));
}

#[test]
fn relist_problems_replace_the_old_ones_and_known_ones_are_not_new() {
    let mut store = KindStore::<u32>::default();
    store.apply(key("a"), Err(problem("f")));
    store.apply(key("b"), Err(problem("f")));
    store.init();
    assert!(!store.init_apply(key("a"), Err(problem("f"))).new_problem);
    assert!(store.init_apply(key("c"), Err(problem("f"))).new_problem);
    store.init_done();
    let keys: Vec<_> = store.problems.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(keys, ["a", "c"], "b was deleted meanwhile");
}

#[test]
fn absent_kinds_count_as_listed_and_empty() {
    let mut store = KindStore::<u32>::default();
    assert!(store.set_absent().changed, "first sync");
    assert!(store.synced());
    assert!(!store.set_absent().changed);
}

#[test]
fn the_store_lists_problems_and_tracks_changes() {
    let mut store = Store::default();
    let outcome = store
        .kind_mut(Kind::Pod)
        .apply(key("web"), Err(problem("status.podIP")));
    assert!(!store.note(outcome), "nothing was in force");
    assert!(!store.take_changed());
    let outcome = store.kind_mut(Kind::Namespace).set_absent();
    assert!(store.note(outcome));
    assert!(store.take_changed());
    assert!(!store.take_changed(), "taken");
    assert_eq!(
        store.problems(),
        vec!["Pod ns/web: field status.podIP: bad".to_owned()]
    );
    assert!(store.synced(Kind::Namespace));
    assert!(!store.synced(Kind::Pod));
    assert_eq!(qualified("", "shop"), "shop");
}
