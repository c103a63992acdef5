//! Who may obtain which certificate. A caller proves who it is with a bearer token:
//! - a node agent proves which node it runs on, and may only obtain identities of service
//!   accounts that have a pod scheduled on that node — so a compromised node cannot mint
//!   identities of workloads elsewhere;
//! - a workload that holds its own certificate (a waypoint) proves its service account, named
//!   as Kubernetes names it (`system:serviceaccount:<namespace>:<name>`), and may only obtain
//!   that one identity.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use certs::SpiffeId;

/// Why a caller was refused. The text goes back to the caller and into the CA's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no bearer token; send `authorization: Bearer <node token>` (ztunnel --ca-token-file)"
    )]
    MissingToken,
    #[error(
        "unknown token; the token is not in the CA's tokens file, check the node's --ca-token-file"
    )]
    UnknownToken,
    #[error("the tokens file cannot be read: {0}")]
    TokensUnavailable(String),
    #[error("node {node:?} has no pod running as {identity}; a node may only obtain identities of pods scheduled on it")]
    NoPodOnNode { node: String, identity: String },
    #[error("{caller} may only obtain its own identity, not {identity}")]
    NotOwnIdentity { caller: String, identity: String },
    #[error("identity {identity} is not in this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        identity: String,
        trust_domain: String,
    },
    #[error("the CA has no view of the cluster yet (manifests not loaded); retry shortly")]
    NotReady,
    /// Kubernetes mode: the API server does not accept the token for the CA's audience.
    #[error("token rejected by the Kubernetes API server ({reason}); mount a projected service account token with audience {audience:?} (forged, expired and other-audience tokens are refused)")]
    TokenRejected { audience: String, reason: String },
    /// Kubernetes mode: a valid token, but not one a ztunnel pod holds.
    #[error("not a ztunnel: {0}")]
    NotZtunnel(String),
    /// Kubernetes mode: the TokenReview or the pod lookup could not be made.
    #[error("cannot verify the token with the Kubernetes API server: {0}; retry shortly")]
    ReviewUnavailable(String),
}

/// What [`NodeAuthenticator::authenticate`] returns: a node name, or why not.
pub type Authentication<'a> = Pin<Box<dyn Future<Output = Result<String, Refusal>> + Send + 'a>>;

/// What [`NodeWorkloads::refresh`] returns: done once the view is as fresh as it gets.
pub type Refreshing<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Maps a presented token to the node it belongs to. Asynchronous because in Kubernetes mode
/// this asks the API server (TokenReview).
pub trait NodeAuthenticator: Send + Sync {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a>;

    /// A cheap local check, without I/O, that refuses tokens that cannot possibly be valid
    /// before any costly verification (or a place in the queue for one) is spent on them.
    fn screen(&self, _token: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Tells whether a node currently runs a pod with a given service account.
pub trait NodeWorkloads: Send + Sync {
    fn runs_service_account(
        &self,
        node: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<bool, Refusal>;

    /// Brings the view up to date, for an answer of `false` that may only be the view lagging
    /// behind a pod that is starting right now. Default: the view is always current.
    fn refresh(&self) -> Refreshing<'_> {
        Box::pin(std::future::ready(()))
    }
}

/// Who an authenticated principal is: Kubernetes usernames of service accounts
/// (`system:serviceaccount:<namespace>:<name>`) are workloads; any other name is a node (node
/// names never contain `:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    Node(&'a str),
    ServiceAccount { namespace: &'a str, name: &'a str },
}

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

impl<'a> Caller<'a> {
    /// Reads a principal; `Err` says why a `system:serviceaccount:` name is malformed.
    pub fn of(principal: &'a str) -> Result<Caller<'a>, String> {
        let Some(rest) = principal.strip_prefix(SERVICE_ACCOUNT_PREFIX) else {
            return Ok(Caller::Node(principal));
        };
        match rest.split_once(':') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains(':') =>
            {
                Ok(Caller::ServiceAccount { namespace, name })
            }
            _ => Err(format!(
                "{principal:?} is not system:serviceaccount:<namespace>:<name>"
            )),
        }
    }
}

/// Local mode: a file of `<principal> <token>` lines (`#` starts a comment), where a principal
/// is a node name or `system:serviceaccount:<namespace>:<name>` (a waypoint). Re-read on every
/// request so that adding a node or rotating a token needs no CA restart.
pub struct TokensFile {
    path: PathBuf,
}

impl TokensFile {
    pub fn new(path: &Path) -> Self {
        TokensFile {
            path: path.to_owned(),
        }
    }

    pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(principal), Some(token), None) => {
                    Caller::of(principal).map_err(|e| format!("line {}: {e}", index + 1))?;
                    if tokens.insert(token.to_owned(), principal.to_owned()).is_some() {
                        return Err(format!(
                            "line {}: the same token is given to two callers",
                            index + 1
                        ));
                    }
                }
                _ => {
                    return Err(format!(
                        "line {}: expected `<node-name> <token>` or `system:serviceaccount:<namespace>:<name> <token>`, found {line:?}",
                        index + 1
                    ))
                }
            }
        }
        Ok(tokens)
    }
}

impl NodeAuthenticator for TokensFile {
    fn authenticate<'a>(&'a self, token: &'a str) -> Authentication<'a> {
        // A small local file: reading it inline is cheaper than a trip to the blocking pool.
        Box::pin(std::future::ready(self.lookup(token)))
    }
}

impl TokensFile {
    fn lookup(&self, token: &str) -> Result<String, Refusal> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Refusal::TokensUnavailable(format!("{}: {e}", self.path.display())))?;
        let tokens = Self::parse(&text)
            .map_err(|e| Refusal::TokensUnavailable(format!("{}: {e}", self.path.display())))?;
        // Compare every entry in constant time so response timing does not leak token prefixes.
        let mut found = None;
        for (known, node) in &tokens {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(node.clone());
            }
        }
        found.ok_or(Refusal::UnknownToken)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decision for one request: the node the caller proved, and the identity it may hold.
pub async fn authorise(
    authenticator: &dyn NodeAuthenticator,
    workloads: &dyn NodeWorkloads,
    trust_domain: &str,
    token: Option<&str>,
    identity: &SpiffeId,
) -> Result<String, (Option<String>, Refusal)> {
    let token = token.ok_or((None, Refusal::MissingToken))?;
    let node = authenticator
        .authenticate(token)
        .await
        .map_err(|r| (None, r))?;
    if identity.trust_domain() != trust_domain {
        return Err((
            Some(node),
            Refusal::ForeignTrustDomain {
                identity: identity.to_string(),
                trust_domain: trust_domain.to_owned(),
            },
        ));
    }
    let service_account = match Caller::of(&node) {
        Ok(Caller::Node(_)) => None,
        Ok(Caller::ServiceAccount { namespace, name }) => Some((namespace, name)),
        Err(_) => {
            return Err((
                Some(node.clone()),
                Refusal::NotOwnIdentity {
                    caller: node,
                    identity: identity.to_string(),
                },
            ))
        }
    };
    if let Some((namespace, name)) = service_account {
        if identity.namespace() == namespace && identity.service_account() == name {
            return Ok(node);
        }
        return Err((
            Some(node.clone()),
            Refusal::NotOwnIdentity {
                caller: node,
                identity: identity.to_string(),
            },
        ));
    }
    let mut runs =
        workloads.runs_service_account(&node, identity.namespace(), identity.service_account());
    if matches!(runs, Ok(false)) {
        // The node asks because a pod is starting: the view may not have it yet.
        workloads.refresh().await;
        runs =
            workloads.runs_service_account(&node, identity.namespace(), identity.service_account());
    }
    match runs {
        Ok(true) => Ok(node),
        Ok(false) => Err((
            Some(node.clone()),
            Refusal::NoPodOnNode {
                node,
                identity: identity.to_string(),
            },
        )),
        Err(refusal) => Err((Some(node), refusal)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_parses_nodes_and_rejects_garbage() {
        let tokens =
            TokensFile::parse("# nodes\nnode-a secret-a\n\n node-b  secret-b # trailing\n")
                .unwrap();
        assert_eq!(tokens.get("secret-a").map(String::as_str), Some("node-a"));
        assert_eq!(tokens.get("secret-b").map(String::as_str), Some("node-b"));
        assert!(TokensFile::parse("node-a").unwrap_err().contains("line 1"));
        assert!(TokensFile::parse("a b c").unwrap_err().contains("expected"));
        assert!(TokensFile::parse("a t\nb t")
            .unwrap_err()
            .contains("two callers"));
        let waypoint = TokensFile::parse("system:serviceaccount:shop:waypoint wp-token").unwrap();
        assert_eq!(
            waypoint.get("wp-token").map(String::as_str),
            Some("system:serviceaccount:shop:waypoint")
        );
        assert!(TokensFile::parse("system:serviceaccount:shop t")
            .unwrap_err()
            .contains("line 1"));
    }

    /// The node runs `shop/cart` only.
    struct OneWorkload;

    impl NodeWorkloads for OneWorkload {
        fn runs_service_account(&self, node: &str, ns: &str, sa: &str) -> Result<bool, Refusal> {
            Ok(node == "node-a" && ns == "shop" && sa == "cart")
        }
    }

    struct Principal(&'static str);

    impl NodeAuthenticator for Principal {
        fn authenticate<'a>(&'a self, _token: &'a str) -> Authentication<'a> {
            Box::pin(std::future::ready(Ok(self.0.to_owned())))
        }
    }

    #[tokio::test]
    async fn a_node_gets_its_pods_identities_and_a_waypoint_only_its_own() {
        let id = |ns: &str, sa: &str| SpiffeId::new("cluster.local", ns, sa).unwrap();
        let ask = |principal, identity: SpiffeId| async move {
            authorise(
                &Principal(principal),
                &OneWorkload,
                "cluster.local",
                Some("t"),
                &identity,
            )
            .await
            .map_err(|(_, refusal)| refusal)
        };
        assert!(ask("node-a", id("shop", "cart")).await.is_ok());
        assert!(matches!(
            ask("node-a", id("shop", "waypoint")).await,
            Err(Refusal::NoPodOnNode { .. })
        ));
        let waypoint = "system:serviceaccount:shop:waypoint";
        assert!(ask(waypoint, id("shop", "waypoint")).await.is_ok());
        for other in [id("shop", "cart"), id("mall", "waypoint")] {
            let refusal = ask(waypoint, other).await.unwrap_err();
            assert!(
                refusal
                    .to_string()
                    .contains("may only obtain its own identity"),
                "{refusal}"
            );
        }
    }

    /// A view that learns of `shop/cart` on node-a only when refreshed (a pod that just
    /// started, the manifests not polled yet).
    #[derive(Default)]
    struct LaggingView {
        refreshed: std::sync::atomic::AtomicBool,
    }

    impl NodeWorkloads for LaggingView {
        fn runs_service_account(&self, node: &str, ns: &str, sa: &str) -> Result<bool, Refusal> {
            let fresh = self.refreshed.load(std::sync::atomic::Ordering::SeqCst);
            Ok(fresh && node == "node-a" && ns == "shop" && sa == "cart")
        }

        fn refresh(&self) -> Refreshing<'_> {
            self.refreshed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(std::future::ready(()))
        }
    }

    async fn node_a_asks(view: &LaggingView, service_account: &str) -> Result<String, Refusal> {
        let identity = SpiffeId::new("cluster.local", "shop", service_account).unwrap();
        authorise(
            &Principal("node-a"),
            view,
            "cluster.local",
            Some("t"),
            &identity,
        )
        .await
        .map_err(|(_, refusal)| refusal)
    }

    #[tokio::test]
    async fn a_lagging_view_is_refreshed_before_a_node_is_refused() {
        let view = LaggingView::default();
        assert!(
            node_a_asks(&view, "cart").await.is_ok(),
            "the pod is in the fresh view"
        );
        let other = LaggingView::default();
        assert!(matches!(
            node_a_asks(&other, "waypoint").await,
            Err(Refusal::NoPodOnNode { .. })
        ));
        assert!(
            other.refreshed.load(std::sync::atomic::Ordering::SeqCst),
            "refused only after looking again"
        );
    }

    #[test]
    fn constant_time_comparison_matches_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
