#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::*;

const VALID: &str = "valid.node.token";

/// Stands in for the TokenReview authenticator: counts reviews and how many run at once, and
/// holds every review until the gate opens.
struct CountingReviewer {
    reviews: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    gate: watch::Receiver<bool>,
}

impl CountingReviewer {
    fn new() -> (Self, watch::Sender<bool>) {
        let (open, gate) = watch::channel(true);
        let reviewer = CountingReviewer {
            reviews: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            gate,
        };
        (reviewer, open)
    }

    async fn review(&self, token: &str) -> Result<String, Refusal> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if token == VALID {
            Ok("node-a".to_owned())
        } else if token.starts_with("unavailable") {
            Err(Refusal::ReviewUnavailable("API server down".to_owned()))
        } else {
            Err(Refusal::TokenRejected {
                audience: "ambit-ca".to_owned(),
                reason: "forged".to_owned(),
            })
        }
    }
}

impl NodeAuthenticator for CountingReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a> {
        Box::pin(self.review(token))
    }

    fn screen(&self, token: &str) -> Result<(), Refusal> {
        if token.starts_with("garbage") {
            return Err(Refusal::TokenRejected {
                audience: "ambit-ca".to_owned(),
                reason: "not a JSON Web Token".to_owned(),
            });
        }
        Ok(())
    }
}

fn reviews(cache: &CachingAuthenticator<CountingReviewer>) -> usize {
    cache.inner().reviews.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_forged_token_sent_again_and_again_costs_one_review() {
    let (reviewer, _open) = CountingReviewer::new();
    let cache = CachingAuthenticator::new(reviewer, 4);
    for _ in 0..1000 {
        let refusal = cache.authenticate("forged.jwt.token").await.unwrap_err();
        assert!(
            matches!(refusal, Refusal::TokenRejected { .. }),
            "{refusal}"
        );
    }
    assert_eq!(reviews(&cache), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_forged_token_sent_concurrently_costs_one_review() {
    let (reviewer, open) = CountingReviewer::new();
    let cache = Arc::new(CachingAuthenticator::new(reviewer, 4));
    open.send_replace(false);
    let mut callers = JoinSet::new();
    for _ in 0..500 {
        let cache = cache.clone();
        callers.spawn(async move { cache.authenticate("forged.jwt.token").await });
    }
    // Let the callers reach the cache, then let the one review finish.
    while cache.inner().in_flight.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    open.send_replace(true);
    while let Some(result) = callers.join_next().await {
        // Refused as forged, or told to retry because the queue was full: never issued.
        match result.unwrap() {
            Err(Refusal::TokenRejected { .. } | Refusal::ReviewUnavailable(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reviews(&cache), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_reviewer_was_cut_off_asks_again() {
    let (reviewer, open) = CountingReviewer::new();
    let cache = Arc::new(CachingAuthenticator::new(reviewer, 4));
    open.send_replace(false);
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.authenticate("forged.jwt.token").await })
    };
    while reviews(&cache) == 0 {
        tokio::task::yield_now().await;
    }
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.authenticate("forged.jwt.token").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The leader's request hits its deadline: its review is dropped unanswered.
    leader.abort();
    let _ = leader.await;
    open.send_replace(true);
    let verdict = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower waits forever for a leader that is gone")
        .unwrap();
    assert!(
        matches!(verdict, Err(Refusal::TokenRejected { .. })),
        "{verdict:?}"
    );
    assert_eq!(reviews(&cache), 2);
    assert!(cache.tables().reviewing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_tokens_gets_bounded_reviews_and_a_remembered_node_is_not_starved() {
    let (reviewer, open) = CountingReviewer::new();
    let max_reviews = 4;
    let cache = Arc::new(CachingAuthenticator::new(reviewer, max_reviews));
    // The node's token is reviewed once, before the flood.
    assert_eq!(cache.authenticate(VALID).await.unwrap(), "node-a");
    open.send_replace(false);
    let flood = 2000;
    let mut callers = JoinSet::new();
    for n in 0..flood {
        let cache = cache.clone();
        callers.spawn(async move { cache.authenticate(&format!("random.{n}.token")).await });
    }
    // Beyond the review slots and the queue, callers are told to retry at once.
    let max_pending = max_reviews * (QUEUE_PER_REVIEW + 1);
    let mut turned_away = 0;
    while turned_away < flood - max_pending {
        match tokio::time::timeout(Duration::from_secs(30), callers.join_next()).await {
            Ok(Some(Ok(Err(Refusal::ReviewUnavailable(reason))))) => {
                assert!(reason.contains("already reviewing"), "{reason}");
                turned_away += 1;
            }
            other => panic!("expected callers beyond the queue to be turned away, got {other:?}"),
        }
    }
    // The API server sees only the review slots' worth at once…
    assert_eq!(
        cache.inner().in_flight.load(Ordering::SeqCst),
        max_reviews,
        "reviews in flight"
    );
    // …and the remembered node is answered without waiting for any of them.
    let node = tokio::time::timeout(Duration::from_secs(30), cache.authenticate(VALID))
        .await
        .expect("a remembered node waited behind the flood");
    assert_eq!(node.unwrap(), "node-a");
    open.send_replace(true);
    while let Some(result) = callers.join_next().await {
        assert!(matches!(
            result.unwrap(),
            Err(Refusal::TokenRejected { .. })
        ));
    }
    let peak = cache.inner().peak_in_flight.load(Ordering::SeqCst);
    assert!(peak <= max_reviews, "{peak} reviews ran at once");
    // One for the node, one per queued token; none for the turned-away.
    assert_eq!(reviews(&cache), 1 + max_pending);
}

#[tokio::test]
async fn tokens_the_screen_refuses_never_cost_a_review_or_a_table_entry() {
    let (reviewer, _open) = CountingReviewer::new();
    let cache = CachingAuthenticator::new(reviewer, 4);
    for n in 0..1000 {
        let refusal = cache.authenticate(&format!("garbage-{n}")).await;
        assert!(matches!(refusal, Err(Refusal::TokenRejected { .. })));
    }
    assert_eq!(reviews(&cache), 0);
    assert_eq!(cache.tables().refused.len(), 0);
}

#[tokio::test]
async fn a_passing_failure_is_retried_and_a_valid_token_is_remembered() {
    let (reviewer, _open) = CountingReviewer::new();
    let cache = CachingAuthenticator::new(reviewer, 4);
    for _ in 0..2 {
        let refusal = cache.authenticate("unavailable.api.server").await;
        assert!(matches!(refusal, Err(Refusal::ReviewUnavailable(_))));
    }
    assert_eq!(reviews(&cache), 2, "an API server outage is not a verdict");
    for _ in 0..3 {
        assert_eq!(cache.authenticate(VALID).await.unwrap(), "node-a");
    }
    assert_eq!(reviews(&cache), 3);
}

#[test]
fn tables_forget_after_their_ttl_and_hold_at_most_their_capacity() {
    let start = Instant::now();
    let mut table = TtlTable::new(Duration::from_secs(30), 100);
    table.insert(digest("a"), 1, start);
    assert_eq!(
        table.get(&digest("a"), start + Duration::from_secs(29)),
        Some(&1)
    );
    assert_eq!(
        table.get(&digest("a"), start + Duration::from_secs(30)),
        None
    );
    for n in 0..1000 {
        table.insert(digest(&n.to_string()), n, start);
    }
    assert_eq!(table.len(), 100);
    assert_eq!(
        table.get(&digest("999"), start),
        Some(&999),
        "the newest stay"
    );
    assert_eq!(table.get(&digest("0"), start), None, "the oldest go");
    // Re-inserting one key over and over does not grow the bookkeeping without bound.
    for n in 0..10_000u64 {
        table.insert(digest("again"), 0, start + Duration::from_millis(n));
    }
    assert!(table.order.len() <= 2 * 100 + 1, "{}", table.order.len());
    assert!(table.len() <= 100);
}

#[test]
fn only_verdicts_on_the_token_are_remembered() {
    let rejected = Refusal::TokenRejected {
        audience: "a".into(),
        reason: "r".into(),
    };
    assert!(is_verdict(&rejected));
    assert!(is_verdict(&Refusal::NotZtunnel("x".into())));
    assert!(!is_verdict(&Refusal::ReviewUnavailable("x".into())));
    assert!(!is_verdict(&Refusal::NotReady));
}
